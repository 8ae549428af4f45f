//! Refolding of few-row elementwise work over all 128 partitions (tensor IR, exact).
//!
//! The tiler puts a tensor's rows (every axis but the last) on partitions, so a rank-1
//! tensor, or one of a few long rows, uses one or a few of the 128 partitions and its
//! DMAs and engine instructions run a partition at a time: a vector add of 98,432 f32
//! elements reached 2% of the machine. An elementwise operation does not care how its
//! elements are arranged, as long as every operand is arranged the same way, so this pass
//! rewrites each *component* of such work (elementwise instructions connected by the
//! values they pass each other, all of one shape) to run on `[P, n / P]`, the same
//! elements in row-major order, with `P` the largest divisor of the element count `n` of
//! at most 128 partitions (and more than the rows it had). Reshapes of dense HBM tensors
//! are free views (`tiling/view.rs`), and the tiler stores a result that is a reshape of
//! a computed value straight into the output, so the rewrite adds no data movement.
//!
//! What is general: any chain of unary, binary and cast operations whose tensor operands
//! all have the result's shape (rank-0 constants may broadcast), of any rank, whatever its
//! functions. What it leaves alone, and why: a component that reads a value another group
//! computes, or whose values are read by anything but itself and the kernel's results (a
//! reduction, a matmul), would need that value in the other arrangement too and so a
//! round trip through HBM; broadcast operands (a row vector over a few rows) would need a
//! strided arrangement of their own. The result is bit-identical: each element goes
//! through the same operations, so it runs under `--dtype-policy strict` too.

use crate::ir::{Function, Inst, TOp, TensorType, Value, ValueDef};
use std::collections::HashMap;

/// The partitions of the machine.
const PARTITIONS: u64 = 128;

/// The rows (product of every axis but the last) of a shape; 1 for rank 0 and 1.
fn rows(shape: &[u64]) -> u64 {
    shape[..shape.len().saturating_sub(1)].iter().product()
}

/// The fewest elements worth refolding: 32 a partition. Below that the work is a few
/// instructions whatever its arrangement, and a tiny tensor keeps its shape.
const MIN_ELEMENTS: u64 = PARTITIONS * 32;

/// The partitions to spread `n` elements that now sit on `rows` rows over: the largest
/// divisor of `n` of at most 128 that is more than `rows`, if any (none for fewer than
/// `MIN_ELEMENTS` elements).
fn partitions(n: u64, rows: u64) -> Option<u64> {
    if n < MIN_ELEMENTS {
        return None;
    }
    (rows + 1..=PARTITIONS).rev().find(|p| n.is_multiple_of(*p))
}

/// True for an elementwise instruction whose tensor operands all have its result's shape.
fn elementwise(func: &Function, inst: Inst) -> bool {
    let data = &func.insts[inst];
    let shape = &func.ty(data.result).shape;
    matches!(data.op, TOp::Unary(_) | TOp::Binary(_) | TOp::Cast)
        && !shape.is_empty()
        && data.args.iter().all(|a| {
            let s = &func.ty(*a).shape;
            s.is_empty() || s == shape
        })
}

/// Finds the representative of `i` (path halving).
fn find(parent: &mut [usize], mut i: usize) -> usize {
    while parent[i] != i {
        parent[i] = parent[parent[i]];
        i = parent[i];
    }
    i
}

/// Rewrites every refoldable component of `func` in place; returns whether it changed.
pub fn run(func: &mut Function) -> bool {
    let layout = func.layout.clone();
    let pos: HashMap<Inst, usize> = layout.iter().enumerate().map(|(i, &n)| (n, i)).collect();
    // The candidates: few-row elementwise instructions whose elements fit more partitions.
    let candidate: Vec<bool> = layout
        .iter()
        .map(|&inst| {
            let shape = &func.ty(func.insts[inst].result).shape;
            let n: u64 = shape.iter().product();
            elementwise(func, inst) && partitions(n, rows(shape)).is_some()
        })
        .collect();
    // Components: candidates joined through the values they pass each other.
    let mut parent: Vec<usize> = (0..layout.len()).collect();
    for (i, &inst) in layout.iter().enumerate() {
        if !candidate[i] {
            continue;
        }
        for a in &func.insts[inst].args {
            if let ValueDef::Inst(d) = func.values[*a].def {
                let j = pos[&d];
                if candidate[j] {
                    let (ri, rj) = (find(&mut parent, i), find(&mut parent, j));
                    parent[ri] = rj;
                }
            }
        }
    }
    // A component is refolded only if it reads nothing another group computes (except
    // rank-0 constants) and its values are read only by itself and the kernel's results.
    let mut ok: HashMap<usize, bool> = HashMap::new();
    for (i, &inst) in layout.iter().enumerate() {
        if !candidate[i] {
            continue;
        }
        let root = find(&mut parent, i);
        let mut good = true;
        for a in &func.insts[inst].args {
            match func.values[*a].def {
                ValueDef::Param(_) => {}
                ValueDef::Inst(d) => {
                    let j = pos[&d];
                    let inside = candidate[j] && find(&mut parent, j) == root;
                    let constant = matches!(func.insts[d].op, TOp::Const(_));
                    good &= inside || constant;
                }
            }
        }
        ok.entry(root).and_modify(|g| *g &= good).or_insert(good);
    }
    for (j, &inst) in layout.iter().enumerate() {
        for a in &func.insts[inst].args {
            if let ValueDef::Inst(d) = func.values[*a].def {
                let i = pos[&d];
                if candidate[i] {
                    let root = find(&mut parent, i);
                    let inside = candidate[j] && find(&mut parent, j) == root;
                    if !inside {
                        ok.insert(root, false);
                    }
                }
            }
        }
    }
    if !ok.values().any(|&g| g) {
        return false;
    }
    // The rewrite, in layout order: reshapes of the component's inputs, the operations on
    // the refolded shape, and reshapes back for the kernel's results.
    let mut folded: HashMap<Value, Value> = HashMap::new();
    let mut back: HashMap<Value, Value> = HashMap::new();
    let mut new_layout: Vec<Inst> = Vec::with_capacity(layout.len());
    let results = func.results.clone();
    for (i, &inst) in layout.iter().enumerate() {
        let refold = candidate[i] && ok[&find(&mut parent, i)];
        if !refold {
            new_layout.push(inst);
            continue;
        }
        let data = func.insts[inst].clone();
        let span = func.spans[inst];
        let ty = func.ty(data.result).clone();
        let n: u64 = ty.shape.iter().product();
        let Some(p) = partitions(n, rows(&ty.shape)) else {
            new_layout.push(inst);
            continue;
        };
        let shape = vec![p, n / p];
        let mut args = Vec::with_capacity(data.args.len());
        for a in &data.args {
            let aty = func.ty(*a).clone();
            if aty.shape.is_empty() {
                args.push(*a);
                continue;
            }
            let v = match folded.get(a) {
                Some(&v) => v,
                None => {
                    let v = func.push(
                        TOp::Reshape,
                        &[*a],
                        TensorType {
                            dtype: aty.dtype,
                            shape: shape.clone(),
                        },
                        span,
                    );
                    new_layout.push(*func.layout.last().expect("just pushed"));
                    folded.insert(*a, v);
                    v
                }
            };
            args.push(v);
        }
        let v = func.push(
            data.op.clone(),
            &args,
            TensorType {
                dtype: ty.dtype,
                shape: shape.clone(),
            },
            span,
        );
        new_layout.push(*func.layout.last().expect("just pushed"));
        folded.insert(data.result, v);
        if results.contains(&data.result) {
            let r = func.push(TOp::Reshape, &[v], ty, span);
            new_layout.push(*func.layout.last().expect("just pushed"));
            back.insert(data.result, r);
        }
    }
    func.layout = new_layout;
    for r in func.results.iter_mut() {
        if let Some(v) = back.get(r) {
            *r = *v;
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::partitions;

    #[test]
    fn the_partitions_are_the_largest_divisor_up_to_128_above_the_rows() {
        assert_eq!(partitions(98_432, 1), Some(128));
        assert_eq!(partitions(16_000, 2), Some(128));
        assert_eq!(partitions(12_000, 4), Some(125));
        assert_eq!(partitions(8 * 4096, 8), Some(128));
        // A prime count has no divisor but itself and 1.
        assert_eq!(partitions(65_537, 1), None);
        // Already on at least as many rows as any divisor would give.
        assert_eq!(partitions(128 * 64, 128), None);
        // Too few elements to be worth it.
        assert_eq!(partitions(1000, 1), None);
        assert_eq!(partitions(32, 4), None);
    }
}
