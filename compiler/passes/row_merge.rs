//! Merging row groups that feed each other: part of `fusion`.
//!
//! Fusion grows a group from an instruction's operands, so two chains that start from
//! different kernel inputs become two groups even when a later instruction combines them:
//! in `yf = y as f32; dyf = dy as f32; yf * dyf ...` the cast of `y` is a group of its own
//! whose f32 result goes through HBM scratch (written, then read back at twice the bytes of
//! `y`). Here a row group that reads a value of another row group of the same space is
//! merged with it, so the value stays in SBUF, whenever
//! - both hold only values of the space's shape or its rows (no column views or narrow
//!   values, no `tril`), and every value read across them broadcasts the way its tile is
//!   laid out (a full value only into a full result; a per-row one of the rows' rank only
//!   into a result of its own shape);
//! - the merged group has no cycle with the other groups (checked on the group graph);
//! - a merged group with a reduction that is too long for whole rows can be evaluated in
//!   phases (`tiling/longrow.rs`), so that merging never makes the tiler split it.
//!
//! Merging changes no arithmetic, so it runs under strict too.

use crate::ir::{Function, TOp, Value, ValueDef};
use crate::passes::fusion::{fit, Fit, Group, Grouping, Root};

/// Merges row groups of `g` that feed each other (module comment), repeatedly, and drops
/// the groups left empty. The caller orders the groups afterwards.
pub fn merge(func: &Function, g: &mut Grouping, strict: bool) {
    loop {
        let mut done = false;
        'search: for gi in 0..g.groups.len() {
            if !mergeable(func, &g.groups[gi]) {
                continue;
            }
            for gj in producers(func, g, gi) {
                if gj == gi || !mergeable(func, &g.groups[gj]) {
                    continue;
                }
                if g.groups[gj].space != g.groups[gi].space {
                    continue;
                }
                let mut insts = g.groups[gj].insts.clone();
                insts.extend(g.groups[gi].insts.iter().copied());
                let merged = Group {
                    root: Root::Rows,
                    space: g.groups[gi].space.clone(),
                    insts,
                    needs_plain_rows: false,
                };
                if !layout_ok(func, &merged)
                    || !crate::passes::tiling::longrow::fits_or_phases(func, &merged, strict)
                    || cycle_after(func, g, gi, gj)
                {
                    continue;
                }
                // The merged group takes gi's place; its instructions stay in program
                // order.
                let mut merged = merged;
                let pos = |i| func.layout.iter().position(|&x| x == i).unwrap_or(0);
                merged.insts.sort_by_key(|&i| pos(i));
                for &i in &merged.insts {
                    g.group_of[i] = Some(gi as u32);
                }
                g.groups[gi] = merged;
                g.groups[gj].insts.clear();
                done = true;
                break 'search;
            }
        }
        if !done {
            break;
        }
    }
    // Drop empty groups and renumber.
    let old = std::mem::take(&mut g.groups);
    let mut map = vec![None; old.len()];
    for (i, grp) in old.into_iter().enumerate() {
        if !grp.insts.is_empty() {
            map[i] = Some(g.groups.len() as u32);
            g.groups.push(grp);
        }
    }
    let insts: Vec<_> = func.layout.clone();
    for i in insts {
        if let Some(o) = g.group_of[i] {
            g.group_of[i] = map[o as usize];
        }
    }
}

/// A plain row group: whole rows of the space's shape, no `tril`, no column views.
fn mergeable(func: &Function, grp: &Group) -> bool {
    matches!(grp.root, Root::Rows)
        && !grp.needs_plain_rows
        && grp.insts.iter().all(|&i| {
            let data = &func.insts[i];
            fit(&func.ty(data.result).shape, &grp.space).is_some()
                && matches!(
                    data.op,
                    TOp::Unary(_) | TOp::Binary(_) | TOp::Where | TOp::Cast | TOp::Reduce { .. }
                )
        })
}

/// The groups whose values the instructions of group `gi` read.
fn producers(func: &Function, g: &Grouping, gi: usize) -> Vec<usize> {
    let mut out = Vec::new();
    for &inst in &g.groups[gi].insts {
        for &a in &func.insts[inst].args {
            if let Some(p) = producer(func, g, a) {
                if p != gi && !out.contains(&p) {
                    out.push(p);
                }
            }
        }
    }
    out
}

fn producer(func: &Function, g: &Grouping, v: Value) -> Option<usize> {
    match func.values[v].def {
        ValueDef::Inst(i) if !matches!(func.insts[i].op, TOp::Const(_)) => {
            g.group_of[i].map(|x| x as usize)
        }
        _ => None,
    }
}

/// Every value read inside the merged group broadcasts the way its tile is laid out (the
/// rule `fusion` applies when an instruction joins a group).
fn layout_ok(func: &Function, grp: &Group) -> bool {
    let defined =
        |v: Value| matches!(func.values[v].def, ValueDef::Inst(i) if grp.insts.contains(&i));
    grp.insts.iter().all(|&inst| {
        let data = &func.insts[inst];
        if matches!(data.op, TOp::Reduce { .. }) {
            return true;
        }
        let res = &func.ty(data.result).shape;
        data.args.iter().all(|&a| {
            if !defined(a) {
                return true;
            }
            let shape = &func.ty(a).shape;
            match fit(shape, &grp.space) {
                Some(Fit::Full) => res == &grp.space,
                Some(Fit::PerRow) if shape.len() == grp.space.len() => true,
                Some(Fit::PerRow) => res == shape,
                None => false,
            }
        })
    })
}

/// True when merging groups `gi` and `gj` would close a cycle: some third group depends on
/// one of them and the other depends on it (transitively).
fn cycle_after(func: &Function, g: &Grouping, gi: usize, gj: usize) -> bool {
    let n = g.groups.len();
    let deps: Vec<Vec<usize>> = (0..n).map(|k| producers(func, g, k)).collect();
    // Groups reachable from the pair by following "reads" edges, through a third group.
    let mut seen = vec![false; n];
    let mut stack: Vec<usize> = Vec::new();
    for &s in [gi, gj].iter() {
        for &d in &deps[s] {
            if d != gi && d != gj && !seen[d] {
                seen[d] = true;
                stack.push(d);
            }
        }
    }
    while let Some(k) = stack.pop() {
        for &d in &deps[k] {
            if d == gi || d == gj {
                return true;
            }
            if !seen[d] {
                seen[d] = true;
                stack.push(d);
            }
        }
    }
    false
}
