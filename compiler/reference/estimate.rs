//! An estimate of the most memory the reference evaluator holds at once while it evaluates
//! a kernel with lazily made inputs (`evaluate_lazy`, `evaluate_bounded_lazy`), computed
//! from the kernel alone, before anything runs.
//!
//! `run --check` uses it to decide whether the reference may run at the same time as the
//! interpreter: the two then hold their memory together, and the run must stay within the
//! memory target (docs/architecture.md, "How a `run --check` holds memory"). The estimate
//! follows the evaluator's own rules: an input exists from its first use to its last, a
//! value from its definition to its last use, a run of row-independent operations
//! (`rows.rs`) holds the values it leaves behind whole and the others one row block at a
//! time, and a matmul packs a copy of its right operand. Every element is an f32 (four
//! bytes), twice that with error bounds. It is an estimate of the live tensors, not of the
//! allocator's pages: the caller leaves room for the rest.

use super::last_uses;
use super::rows::{self, Blocks};
use crate::ir::{Function, TOp, Value, ValueDef};
use cranelift_entity::SecondaryMap;

/// The estimated peak of the evaluator's live tensors, in bytes, for `func` evaluated with
/// lazy inputs, with error bounds when `bounded`.
pub fn peak_bytes(func: &Function, bounded: bool) -> u64 {
    let per_elem: u64 = if bounded { 8 } else { 4 };
    let bytes = |v: Value| func.ty(v).elems().saturating_mul(per_elem);
    let last_use = last_uses(func);
    // The values whose bytes are in `live`, each counted once.
    let mut held = Held {
        counted: SecondaryMap::new(),
        live: 0,
    };
    let mut peak: u64 = 0;
    // An input becomes live where it is first used (the lazy evaluator makes it there).
    let input_use = |v: Value, held: &mut Held| {
        if matches!(func.values[v].def, ValueDef::Param(_)) {
            held.hold(v, bytes(v));
        }
    };
    let mut regions = rows::plan(func, Blocks::DEFAULT).into_iter().peekable();
    let mut at = 0;
    while at < func.layout.len() {
        if let Some(region) = regions.next_if(|r| r.start == at) {
            let insts = &func.layout[region.start..region.end];
            let rank = region.frame.len() + 1;
            let rows = region.frame[rank - 2];
            let step = (Blocks::DEFAULT.elems as u64 / region.widest.max(1))
                .max(Blocks::DEFAULT.min_rows)
                .clamp(1, rows.max(1));
            let mut inside: u64 = 0;
            for &inst in insts {
                let data = &func.insts[inst];
                for &a in &data.args {
                    input_use(a, &mut held);
                }
                let v = data.result;
                let ty = func.ty(v);
                if last_use[v] >= region.end {
                    // Kept whole, from the start of the run.
                    held.hold(v, bytes(v));
                } else {
                    // One block of it at a time.
                    let cols = ty.shape.last().copied().unwrap_or(1);
                    inside = inside.saturating_add(step * cols * per_elem);
                }
                if matches!(data.op, TOp::Matmul) {
                    // The right operand, packed again for every block.
                    if let Some(&b) = data.args.get(1) {
                        inside = inside.saturating_add(func.ty(b).elems() * 4);
                    }
                }
            }
            peak = peak.max(held.live.saturating_add(inside));
            for &inst in insts {
                for &a in &func.insts[inst].args {
                    if (region.start..region.end).contains(&last_use[a]) {
                        held.release(a, bytes(a));
                    }
                }
            }
            at = region.end;
            continue;
        }
        let data = &func.insts[func.layout[at]];
        for &a in &data.args {
            input_use(a, &mut held);
        }
        held.hold(data.result, bytes(data.result));
        let packed = match data.op {
            TOp::Matmul => data.args.get(1).map_or(0, |&b| func.ty(b).elems() * 4),
            _ => 0,
        };
        peak = peak.max(held.live.saturating_add(packed));
        for &a in &data.args {
            if last_use[a] == at {
                held.release(a, bytes(a));
            }
        }
        at += 1;
    }
    peak
}

/// The live tensors' bytes, and which values they are.
struct Held {
    counted: SecondaryMap<Value, bool>,
    live: u64,
}

impl Held {
    /// Counts `v` as live (once).
    fn hold(&mut self, v: Value, bytes: u64) {
        if !self.counted[v] {
            self.counted[v] = true;
            self.live = self.live.saturating_add(bytes);
        }
    }

    /// Takes `v` off the live values, if it was counted.
    fn release(&mut self, v: Value, bytes: u64) {
        if self.counted[v] {
            self.counted[v] = false;
            self.live = self.live.saturating_sub(bytes);
        }
    }
}
