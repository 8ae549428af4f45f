//! Dead-code elimination on tensor IR: drops instructions whose results no returned value
//! depends on (a `let` that is never used, for example). Values keep their numbers.

use crate::ir::Function;
use cranelift_entity::EntitySet;

/// Removes dead instructions; returns whether any was removed.
pub fn run(func: &mut Function) -> bool {
    let mut live = EntitySet::new();
    for r in &func.results {
        live.insert(*r);
    }
    // Walk backwards: an instruction is live when its result is.
    let mut keep = vec![false; func.layout.len()];
    for (i, &inst) in func.layout.iter().enumerate().rev() {
        let data = &func.insts[inst];
        if live.contains(data.result) {
            keep[i] = true;
            for a in &data.args {
                live.insert(*a);
            }
        }
    }
    let before = func.layout.len();
    let mut i = 0;
    func.layout.retain(|_| {
        i += 1;
        keep[i - 1]
    });
    func.layout.len() != before
}
