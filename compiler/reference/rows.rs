//! Row-block evaluation: a run of consecutive operations that each compute a row of their
//! result from the same row of their operands (elementwise operations, `where`, `tril`,
//! reductions along the last axis, matmuls by a matrix defined before the run) is
//! evaluated a block of rows at a time, so that the values the run defines and uses only
//! inside itself never exist whole. Attention's `[heads, S, S]` scores, exponentials and
//! probabilities (and their bounds) are such values: at S = 2048 each is half a gigabyte.
//!
//! A "row" is an index into every axis but the last. A run shares one frame, its results'
//! leading axes: every result has the frame's rank `R`, the same sizes on the first `R - 1`
//! axes, and any size on the last. A block is one index on the batch axes (all but the last
//! two) and a range of the `R - 2` axis. Operands from outside the run are read through
//! views of the block (a broadcast axis of size 1 is read whole); a matmul's right operand
//! must come from outside the run and is read whole per batch index.
//!
//! Every operation computes each element of a block from exactly the operand elements the
//! whole-tensor evaluation uses, by the same functions (`eval_op` and `bound::op_bound`;
//! `tril`'s diagonal is shifted by the block's first row), so values and bounds are the
//! same bits either way. The bound functions that decide something over a whole operand
//! decide it per row or per matrix instead (`bound::matmul_prop`), and operations whose
//! bound would not (integer arithmetic, whose bound is infinite everywhere once any operand
//! element is uncertain) are never put in a run.

use super::{bound_step, eval_op, EvalError, HostTensor};
use crate::ir::{BinaryOp, Function, TOp, UnaryFn, Value, ValueDef};
use cranelift_entity::SecondaryMap;
use isa::Dtype;
use std::borrow::Cow;

/// How large the row blocks are.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Blocks {
    /// The elements of the widest value of a block, aimed at.
    pub elems: usize,
    /// The fewest rows of a block where the frame has them, so that a matmul's right
    /// operand, packed again for every block, costs little beside the block's
    /// multiply-adds.
    pub min_rows: u64,
}

impl Blocks {
    /// What the evaluator uses: 4 MiB of f32 values per block value, at least 256 rows.
    pub const DEFAULT: Blocks = Blocks {
        elems: 1 << 20,
        min_rows: 256,
    };
}

/// A run of instructions `layout[start..end]` evaluated by row blocks.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Region {
    pub start: usize,
    pub end: usize,
    /// The results' sizes on every axis but the last (the rank is `frame.len() + 1`).
    pub frame: Vec<u64>,
    /// The largest last axis of a value the run defines.
    pub widest: u64,
}

/// Whether `v` is defined by an instruction of `layout[start..at]`.
fn defined_in(
    func: &Function,
    v: Value,
    start: usize,
    at: usize,
    pos: &SecondaryMap<crate::ir::Inst, usize>,
) -> bool {
    match func.values[v].def {
        ValueDef::Param(_) => false,
        ValueDef::Inst(i) => (start..at).contains(&pos[i]),
    }
}

/// Whether an operand of shape `shape` (rank at most the frame's) reads, aligned on the
/// right, only sizes of 1 or the frame's on the axes `0..upto`.
fn fits(shape: &[u64], frame: &[u64], upto: usize) -> bool {
    let rank = frame.len() + 1;
    if shape.len() > rank {
        return false;
    }
    let pad = rank - shape.len();
    (pad..upto).all(|d| shape[d - pad] == 1 || shape[d - pad] == frame[d])
}

/// Whether the instruction at `at` can join a run with `frame` that began at `start`.
fn admits(
    func: &Function,
    at: usize,
    start: usize,
    frame: &[u64],
    pos: &SecondaryMap<crate::ir::Inst, usize>,
) -> bool {
    let data = &func.insts[func.layout[at]];
    let ty = func.ty(data.result);
    let rank = frame.len() + 1;
    if rank < 2 || ty.shape.len() != rank || ty.shape[..rank - 1] != *frame {
        return false;
    }
    let ints = |v: &Value| func.ty(*v).dtype == Dtype::I32;
    if ty.dtype == Dtype::I32 || data.args.iter().any(ints) {
        return false;
    }
    let inner = |v: &Value| defined_in(func, *v, start, at, pos);
    let arg_shape = |i: usize| func.ty(data.args[i]).shape.as_slice();
    let elementwise = || (0..data.args.len()).all(|i| fits(arg_shape(i), frame, rank - 1));
    // With a bool operand or result, only the operations whose bound `bound::v2_bound`
    // computes element by element (others get an infinite bound everywhere once any
    // operand element is uncertain, a whole-tensor decision).
    let bools =
        ty.dtype == Dtype::Bool || data.args.iter().any(|v| func.ty(*v).dtype == Dtype::Bool);
    match &data.op {
        TOp::Cast | TOp::Where => elementwise(),
        TOp::Unary(u) => (!bools || *u == UnaryFn::Not) && elementwise(),
        TOp::Tril { .. } => !bools && elementwise(),
        TOp::Binary(b) => {
            (!bools || b.is_comparison() || matches!(b, BinaryOp::And | BinaryOp::Or))
                && elementwise()
        }
        TOp::Reduce { axis, .. } => !bools && *axis == rank - 1 && arg_shape(0).len() == rank,
        TOp::Matmul => {
            let (a, b) = (arg_shape(0), arg_shape(1));
            !bools
                && a.len() >= 2
                && b.len() >= 2
                && a[a.len() - 2] == frame[rank - 2]
                && fits(a, frame, rank - 2)
                && fits(b, frame, rank - 2)
                && !inner(&data.args[1])
        }
        _ => false,
    }
}

/// The runs of `func` worth evaluating by row blocks of about `blocks.elems` elements:
/// each defines a value used only inside it that is larger than a block.
pub fn plan(func: &Function, blocks: Blocks) -> Vec<Region> {
    let block_elems = blocks.elems;
    let mut pos: SecondaryMap<crate::ir::Inst, usize> = SecondaryMap::new();
    for (at, &inst) in func.layout.iter().enumerate() {
        pos[inst] = at;
    }
    let last_use = super::last_uses(func);
    let mut regions = Vec::new();
    let mut open: Option<Region> = None;
    let close = |r: Region, regions: &mut Vec<Region>| {
        // Worth it where a value that never leaves the run is larger than a block, and a
        // whole batch matrix is not so small that blocks would be many and tiny.
        let rank = r.frame.len() + 1;
        let rows = r.frame[rank - 2];
        let big = (r.start..r.end).any(|at| {
            let v = func.insts[func.layout[at]].result;
            last_use[v] < r.end && func.ty(v).elems() > block_elems as u64
        });
        if big && rows * r.widest >= (block_elems as u64 / 64).max(1) {
            regions.push(r);
        }
    };
    for at in 0..func.layout.len() {
        let data = &func.insts[func.layout[at]];
        if let Some(r) = open.as_mut() {
            // A constant (a scalar with no operands) is evaluated whole inside a run.
            if matches!(data.op, TOp::Const(_)) || admits(func, at, r.start, &r.frame, &pos) {
                r.end = at + 1;
                r.widest = r
                    .widest
                    .max(*func.ty(data.result).shape.last().unwrap_or(&1));
                continue;
            }
            close(open.take().expect("an open run"), &mut regions);
        }
        let shape = &func.ty(data.result).shape;
        if shape.len() >= 2 && !matches!(data.op, TOp::Const(_)) {
            let frame = shape[..shape.len() - 1].to_vec();
            if admits(func, at, at, &frame, &pos) {
                open = Some(Region {
                    start: at,
                    end: at + 1,
                    frame,
                    widest: shape[shape.len() - 1],
                });
            }
        }
    }
    if let Some(r) = open {
        close(r, &mut regions);
    }
    regions
}

/// One block: an index on the batch axes and a range of rows of the `R - 2` axis.
struct Block {
    batch: Vec<u64>,
    /// The batch index flattened (row-major over the frame's batch axes).
    flat: usize,
    rows: std::ops::Range<u64>,
}

/// The part of `t` (bound `b`, empty when all zero) that `block` reads: the batch matrix
/// the block's batch index broadcasts to, and of it the block's rows, or every row when
/// `all_rows` or the operand's row axis is broadcast. Borrowed when that is all of `t`.
fn view<'a>(
    t: &'a HostTensor,
    b: &'a [f32],
    frame: &[u64],
    block: &Block,
    all_rows: bool,
) -> (Cow<'a, HostTensor>, Cow<'a, [f32]>) {
    let rank = frame.len() + 1;
    let pad = rank - t.shape.len();
    let a: Vec<u64> = (0..rank)
        .map(|d| if d < pad { 1 } else { t.shape[d - pad] })
        .collect();
    let mut matrix = 0u64;
    for (&size, &at) in a[..rank - 2].iter().zip(&block.batch) {
        matrix = matrix * size + if size == 1 { 0 } else { at };
    }
    let (rows, cols) = (a[rank - 2], a[rank - 1]);
    let (lo, hi) = if all_rows || rows == 1 {
        (0, rows)
    } else {
        (block.rows.start, block.rows.end)
    };
    let start = ((matrix * rows + lo) * cols) as usize;
    let end = ((matrix * rows + hi) * cols) as usize;
    if start == 0 && end == t.data.len() {
        return (Cow::Borrowed(t), Cow::Borrowed(b));
    }
    let mut shape = vec![1u64; rank - 2];
    shape.extend([hi - lo, cols]);
    let part = HostTensor {
        dtype: t.dtype,
        shape,
        data: t.data[start..end].to_vec(),
        ints: Vec::new(),
    };
    let bound = match b.len() < t.data.len() {
        true => Cow::Borrowed(&[][..]),
        false => Cow::Owned(b[start..end].to_vec()),
    };
    (Cow::Owned(part), bound)
}

/// A value of the run: whole (defined outside it, or a constant) or one block of it.
type Held<'a> = (Cow<'a, HostTensor>, Cow<'a, [f32]>);

/// Evaluates the run `region` by row blocks and returns the values it defines that are
/// used after it (`last_use` at or beyond its end), whole, with their bounds when
/// `relaxed` is given. `outside(v)` is a value defined before the run, with its bound.
pub fn eval_region<'a>(
    func: &Function,
    region: &Region,
    blocks: Blocks,
    last_use: &SecondaryMap<Value, usize>,
    outside: &dyn Fn(Value) -> Result<(&'a HostTensor, &'a [f32]), EvalError>,
    relaxed: Option<&[Value]>,
) -> Result<Vec<(Value, HostTensor, Vec<f32>)>, EvalError> {
    let bounded = relaxed.is_some();
    let frame = &region.frame;
    let rank = frame.len() + 1;
    let rows = frame[rank - 2];
    let batches: u64 = frame[..rank - 2].iter().product();
    let step = (blocks.elems as u64 / region.widest.max(1))
        .max(blocks.min_rows)
        .clamp(1, rows.max(1));
    let insts: Vec<_> = func.layout[region.start..region.end].to_vec();
    // Constants are evaluated whole, once.
    let mut consts: SecondaryMap<Value, Option<(HostTensor, Vec<f32>)>> = SecondaryMap::new();
    for &inst in &insts {
        let data = &func.insts[inst];
        if let TOp::Const(_) = data.op {
            let ty = func.ty(data.result);
            let out = eval_op(&data.op, &[], ty.dtype, &ty.shape);
            let b = match bounded {
                true => vec![0.0; out.elems()],
                false => Vec::new(),
            };
            consts[data.result] = Some((out, b));
        }
    }
    // The values used after the run, assembled whole from the blocks.
    let mut kept: Vec<(Value, HostTensor, Vec<f32>)> = Vec::new();
    let mut slot: SecondaryMap<Value, Option<usize>> = SecondaryMap::new();
    for &inst in &insts {
        let v = func.insts[inst].result;
        if last_use[v] >= region.end {
            let ty = func.ty(v);
            if let Some((t, b)) = consts[v].clone() {
                kept.push((v, t, b));
                continue;
            }
            let n = ty.elems() as usize;
            slot[v] = Some(kept.len());
            let t = HostTensor {
                dtype: ty.dtype,
                shape: ty.shape.clone(),
                data: vec![0.0; n],
                ints: Vec::new(),
            };
            kept.push((v, t, if bounded { vec![0.0; n] } else { Vec::new() }));
        }
    }
    // Each block value's last use in the run, to drop it there.
    let mut last_here: SecondaryMap<Value, usize> = SecondaryMap::new();
    for (j, &inst) in insts.iter().enumerate() {
        for a in &func.insts[inst].args {
            last_here[*a] = j;
        }
    }
    let mut zeros = Vec::new();
    for flat in 0..batches as usize {
        let mut batch = vec![0u64; rank - 2];
        let mut rest = flat as u64;
        for d in (0..rank - 2).rev() {
            batch[d] = rest % frame[d];
            rest /= frame[d];
        }
        for r0 in (0..rows).step_by(step as usize) {
            let block = Block {
                batch: batch.clone(),
                flat,
                rows: r0..(r0 + step).min(rows),
            };
            let mut here: SecondaryMap<Value, Option<Held>> = SecondaryMap::new();
            for (j, &inst) in insts.iter().enumerate() {
                let data = &func.insts[inst];
                if let TOp::Const(_) = data.op {
                    continue;
                }
                let mut held: Vec<Held> = Vec::with_capacity(data.args.len());
                for (i, a) in data.args.iter().enumerate() {
                    let all_rows = i == 1 && matches!(data.op, TOp::Matmul);
                    let h = if let Some((t, b)) = here[*a].as_ref() {
                        (Cow::Borrowed(&**t), Cow::Borrowed(&**b))
                    } else if let Some((t, b)) = consts[*a].as_ref() {
                        (Cow::Borrowed(t), Cow::Borrowed(&b[..]))
                    } else {
                        let (t, b) = outside(*a)?;
                        view(t, b, frame, &block, all_rows)
                    };
                    held.push(h);
                }
                let ty = func.ty(data.result);
                let mut shape = vec![1u64; rank - 2];
                shape.extend([block.rows.end - block.rows.start, ty.shape[rank - 1]]);
                // `tril` keeps an element where `col <= row + k`: in a block, whose first row
                // is row `rows.start` of the whole, the diagonal moves by that much.
                let op = match &data.op {
                    TOp::Tril { k, fill } => TOp::Tril {
                        k: k.saturating_add(block.rows.start as i64),
                        fill: *fill,
                    },
                    op => op.clone(),
                };
                let args: Vec<&HostTensor> = held.iter().map(|(t, _)| &**t).collect();
                let out = eval_op(&op, &args, ty.dtype, &shape);
                let bound = if bounded {
                    let raw: Vec<&[f32]> = held.iter().map(|(_, b)| &**b).collect();
                    let relax = relaxed.is_some_and(|r| r.contains(&data.result));
                    let facts = super::bound::facts(func, data.result, relaxed.unwrap_or_default());
                    bound_step(&op, &args, &raw, &out, relax, facts, &mut zeros)
                } else {
                    Vec::new()
                };
                drop(held);
                if let Some(k) = slot[data.result] {
                    let (_, whole, whole_bound) = &mut kept[k];
                    let cols = ty.shape[rank - 1];
                    let at = ((block.flat as u64 * rows + block.rows.start) * cols) as usize;
                    whole.data[at..at + out.data.len()].copy_from_slice(&out.data);
                    if bounded {
                        whole_bound[at..at + bound.len()].copy_from_slice(&bound);
                    }
                }
                here[data.result] = Some((Cow::Owned(out), Cow::Owned(bound)));
                for a in &data.args {
                    if last_here[*a] == j {
                        here[*a] = None;
                    }
                }
            }
        }
    }
    Ok(kept)
}
