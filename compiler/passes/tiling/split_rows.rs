//! Few long rows split over partitions: a row group with reductions whose rows are few
//! (fewer than 64) and long would use only as many partitions as it has rows, every
//! instruction walking a whole row. Here each row of `D` columns is cut into `P` column
//! chunks of `w = D / P` (`P` the largest divisor of `D` with `R * P <= 128`), one chunk a
//! partition, so the group's iteration space `[.., R, D]` becomes `[.., R, P, w]` and every
//! instruction uses `R * P` partitions (a view of the same HBM elements: each load and
//! store reads its view with the last axis's stride split in two).
//!
//! A reduction along the row becomes a per-partition *partial* (over its chunk) and a
//! *combining step* across the `P` partitions of each row (`BOp::Combine`): the partials go
//! across to one partition by a transpose on the PE array (which moves values exactly), a
//! reduction over each row's `P` neighbours there gives the row's result (a mean divided
//! once by `D`, the result rounded once to its dtype), and a second transpose of that row
//! of results, read with a stride of 0 over each row's `P` copies, brings the total back to
//! every partition of its row, where the elementwise work after the reduction reads it as
//! a per-partition scalar. A matmul by a 0/1 block matrix would do both steps at once, but
//! a partial that is an infinity or NaN would make `0 * inf` NaN in the other rows' sums.
//!
//! The group is then evaluated in phases (`longrow.rs`) over its `[.., R, P, w]` space,
//! so that long chunks are still walked in pieces whose loads, work and stores overlap,
//! and the input is read once while its chunks fit SBUF.
//!
//! Numerics: maxima and minima are exact in any order, so groups of them split under both
//! dtype policies. A sum becomes `P` partial sums added in order: a sum in another order,
//! which docs/numerics.md allows under the default policy only (the bound of a sum of `n`
//! terms in any order); under `--dtype-policy strict` a group with a sum or a mean is not
//! split, and keeps the reference's order.

use super::block::{BArg, BGraph, BNode, BOp, Block, Operand, Tile};
use super::{casts, Tiler};
use crate::ir::{BinaryOp, Function, ReduceFn, TOp};
use crate::passes::fusion::{self, Fit, Group, Root};
use crate::reference;
use isa::{Dim, Dtype, Engine, Mem, Op, ReduceOp, TileAp};

/// The fewest columns a partition's chunk may have: shorter chunks would cost more in
/// DMA runs (each at least 64 bytes) and in the combining step than they save.
const MIN_CHUNK: u64 = 32;
/// Cycles one combining step costs on the critical path (two transposes, a reduction and
/// a copy out of PSUM, measured on the decode RMS norm): a split must save more than this
/// per reduction.
const COMBINE_COST: u64 = 700;
/// Bytes per partition that values kept for a later phase may take in a split group: its
/// rows are one block, so SBUF holds no other block of the group to interleave with.
pub const SPLIT_KEEP_BUDGET: u64 = 96 * 1024;

/// Columns of a chunk in a split group's phases, so that the chunks of a row overlap one
/// another's loads, work and stores (the softmax of f32[32, 32000] in four blocks: 41,137
/// cycles with chunks of 1,000 columns, 41,912 with 2,000, 55,541 with 500).
const SPLIT_CHUNK: u64 = 1024;
/// The fewest bytes (of f32 rows) a block of a split group moves when the rows are cut
/// into several blocks. Measured on the softmax of f32[32, 32000] (release build,
/// `--random 1 --report`): 48,910 cycles in one block, 48,188 in two, 41,137 in four (1 MiB
/// each), 43,824 in eight.
const BLOCK_BYTES: u64 = 1 << 19;

/// The number of partitions each row of `g` is split over, when the group is one this
/// module lowers (module comment): a row group of fewer than 64 rows with at least one
/// reduction, of float values of the space's shape or its rows only (no column views,
/// masks or index values, whose values depend on the column's position), no sums under
/// `strict`, and a split that saves more Vector and Scalar cycles than its combining
/// steps cost.
pub fn plan(func: &Function, g: &Group, strict: bool) -> Option<u64> {
    if !matches!(g.root, Root::Rows) || g.needs_plain_rows || g.insts.len() < 2 {
        return None;
    }
    let (&cols, rows) = g.space.split_last()?;
    let rows: u64 = rows.iter().product();
    if rows == 0 || rows * 2 > 128 || cols < 2 * MIN_CHUNK {
        return None;
    }
    let mut reduces = 0u64;
    let mut full = 0u64;
    for &i in &g.insts {
        let data = &func.insts[i];
        let ty = func.ty(data.result);
        match fusion::fit(&ty.shape, &g.space)? {
            Fit::Full => full += 1,
            Fit::PerRow => {}
        }
        if !ty.dtype.is_float() {
            return None;
        }
        match &data.op {
            TOp::Reduce { func: rf, .. } => {
                reduces += 1;
                if strict && matches!(rf, ReduceFn::Sum | ReduceFn::Mean) {
                    return None;
                }
                if !func.ty(data.args[0]).dtype.is_float() {
                    return None;
                }
            }
            TOp::Unary(_) | TOp::Binary(_) | TOp::Where | TOp::Cast | TOp::Const(_) => {}
            _ => return None,
        }
    }
    if reduces == 0 {
        return None;
    }
    // Rows in several blocks when each block still moves at least `BLOCK_BYTES`: the next
    // block's loads then overlap this block's work and stores.
    let bytes = rows * cols * 4;
    let mut blocks = 1;
    while blocks * 2 <= rows && bytes / (blocks * 2) >= BLOCK_BYTES {
        blocks *= 2;
    }
    let max_parts = 128 / rows.div_ceil(blocks);
    let parts = (2..=max_parts)
        .rev()
        .find(|&p| cols % p == 0 && cols / p >= MIN_CHUNK)?;
    let width = cols / parts;
    // Each full-row instruction walks `width` columns instead of `cols`.
    let saved = full * (cols - width);
    (saved > COMBINE_COST * reduces).then_some(parts)
}

/// The space `[.., R, D]` as `[.., R, P, D / P]`.
pub fn split_space(space: &[u64], parts: u64) -> Vec<u64> {
    let mut s = space.to_vec();
    let cols = s.pop().unwrap_or(1);
    s.push(parts);
    s.push(cols / parts);
    s
}

/// Space strides of a view read over `[.., R, D]` as the strides over `[.., R, P, w]`:
/// the chunk axis steps `w` columns.
fn split_strides(strides: &[i64], width: u64) -> Vec<i64> {
    let mut s = strides.to_vec();
    let last = s.pop().unwrap_or(0);
    s.push(last * width as i64);
    s.push(last);
    s
}

/// The block graph of a group over `[.., R, D]` rewritten for `[.., R, P, w]`: every
/// load and store reads its view with split strides, and every reduction becomes its
/// partial over the chunk (a sum, in f32, for sums and means; the maximum or minimum in
/// f32, exact) followed by a `BOp::Combine` node with the reduction's dtype. `None` when
/// the graph holds something a split cannot take (a column view, an index value, a
/// stored per-row value).
pub fn split_graph(graph: BGraph, parts: u64, cols: u64) -> Option<BGraph> {
    let width = cols / parts;
    for node in &graph.nodes {
        let supported = matches!(
            node.op,
            BOp::Unary(_)
                | BOp::Binary(_)
                | BOp::Where
                | BOp::Cast
                | BOp::Reduce(_)
                | BOp::Copy
                | BOp::Folded
        );
        if !supported || node.width.is_some() || node.accum.is_some() {
            return None;
        }
        if node
            .args
            .iter()
            .any(|a| matches!(a, BArg::Affine(_) | BArg::Given(_)))
        {
            return None;
        }
    }
    if graph
        .stores
        .iter()
        .any(|s| graph.nodes[s.node].fit != Fit::Full)
    {
        return None;
    }
    let mut map = vec![0usize; graph.nodes.len()];
    let mut nodes: Vec<BNode> = Vec::with_capacity(graph.nodes.len() * 2);
    for (i, node) in graph.nodes.into_iter().enumerate() {
        let mut node = node;
        for a in node.args.iter_mut() {
            match a {
                BArg::Node(k) => *k = map[*k],
                BArg::Load(_, strides) => *strides = split_strides(strides, width),
                _ => {}
            }
        }
        if let BOp::Reduce(rf) = node.op {
            let partial = match rf {
                ReduceFn::Mean => ReduceFn::Sum,
                other => other,
            };
            nodes.push(BNode {
                op: BOp::Reduce(partial),
                dtype: Dtype::F32,
                ..node.clone()
            });
            node.op = BOp::Combine {
                func: rf,
                parts: parts as u32,
                cols,
            };
            node.args = vec![BArg::Node(nodes.len() - 1)];
        }
        map[i] = nodes.len();
        nodes.push(node);
    }
    let stores = graph
        .stores
        .into_iter()
        .map(|mut s| {
            s.node = map[s.node];
            s.strides = split_strides(&s.strides, width);
            s
        })
        .collect();
    let keep = graph.keep.into_iter().map(|k| map[k]).collect();
    Some(BGraph {
        nodes,
        stores,
        keep,
    })
}

/// Folds a per-row activation of a per-row `x + c`, `x - c` or `x * c` (`c` an
/// immediate) into one activation, `func(x * 1 + c)` or `func(x * c)`, as `block::fold`
/// does for full rows: the Scalar engine computes the affine step in f32, so this is
/// exact where the step's own result is f32 (`rsqrt(mean + eps)` of a norm); under the
/// default policy a narrower intermediate is not rounded, as in `block::fold`.
pub fn fold_rows(graph: &mut BGraph, strict: bool) {
    let n = graph.nodes.len();
    let uses = super::block::uses_of(graph);
    for i in 0..n {
        let node = &graph.nodes[i];
        let BOp::Unary(u) = node.op else {
            continue;
        };
        let Some(func) = reference::act_func(u) else {
            continue;
        };
        if node.fit != Fit::PerRow || node.accum.is_some() {
            continue;
        }
        let Some(BArg::Node(j)) = node.args.first() else {
            continue;
        };
        let j = *j;
        let inner = &graph.nodes[j];
        let BOp::Binary(b) = inner.op else {
            continue;
        };
        if uses[j] != 1 || inner.fit != Fit::PerRow || (strict && inner.dtype != Dtype::F32) {
            continue;
        }
        let value = |a: &BArg| matches!(a, BArg::Node(_) | BArg::Load(..));
        let (x, y) = (inner.args[0].clone(), inner.args[1].clone());
        let folded = match (b, &x, &y) {
            (BinaryOp::Add, _, BArg::Imm(_)) if value(&x) => {
                Some((vec![x, BArg::Imm(1.0), y], false))
            }
            (BinaryOp::Add, BArg::Imm(_), _) if value(&y) => {
                Some((vec![y, BArg::Imm(1.0), x], false))
            }
            (BinaryOp::Sub, _, BArg::Imm(_)) if value(&x) => {
                Some((vec![x, BArg::Imm(1.0), y], true))
            }
            (BinaryOp::Mul, _, BArg::Imm(_)) if value(&x) => Some((vec![x, y], false)),
            (BinaryOp::Mul, BArg::Imm(_), _) if value(&y) => Some((vec![y, x], false)),
            _ => None,
        };
        if let Some((args, negate_bias)) = folded {
            graph.nodes[j].op = BOp::Folded;
            graph.nodes[j].args.clear();
            graph.nodes[i].op = BOp::Activate { func, negate_bias };
            graph.nodes[i].args = args;
        }
    }
}

/// A tile AP of `parts` partitions from partition 0 with free `dims` (outermost first).
fn ap(mem: Mem, dtype: Dtype, parts: u32, dims: &[(u32, i32)]) -> TileAp {
    TileAp {
        mem,
        dtype,
        partition: 0,
        partitions: parts as u8,
        offset: 0,
        dims: dims
            .iter()
            .map(|&(size, stride)| Dim { size, stride })
            .collect(),
    }
}

impl Tiler<'_> {
    /// Lowers the row group `g` with each row split over `parts` partitions (module
    /// comment). Returns false, having emitted nothing, when its block graph holds
    /// something a split cannot take; the caller lowers it as before.
    pub(super) fn lower_split(&mut self, g: &Group, parts: u64) -> Result<bool, String> {
        if !self.group_sums(g).is_empty() {
            return Ok(false);
        }
        let cols = *g.space.last().unwrap_or(&1);
        // Folding and the cast rewrites run after the split, on the partial reductions.
        let fold = std::mem::replace(&mut self.fold, false);
        let graph = self.graph_of(g, None, false);
        self.fold = fold;
        let Some(mut graph) = split_graph(graph?, parts, cols) else {
            return Ok(false);
        };
        if self.fold {
            super::block::fold(&mut graph, self.strict);
            fold_rows(&mut graph, self.strict);
            casts::rewrite_phased(&mut graph, self.strict);
        }
        let split = Group {
            space: split_space(&g.space, parts),
            ..g.clone()
        };
        // Every full tile is a chunk of `cols / parts` columns.
        let peak = (super::peak_block_bytes(self.func, g) / parts).max(1);
        let first = self.out.insts.len();
        let width = cols / parts;
        let rows: u64 = g.space[..g.space.len() - 1].iter().product();
        let one_block = rows * parts <= 128;
        // One block walks its row in two chunks at least, so that the second half's
        // loads overlap the first's work and the first half's stores the second's
        // (mistral_rmsnorm_decode: 6,409 cycles in one chunk, 6,231 in two, 6,397 in three).
        let least = if one_block && width >= 2 * 128 { 2 } else { 1 };
        let pieces = width.div_ceil(SPLIT_CHUNK).max(least);
        // One block: nothing overlaps its first loads or its stores but its own chunks.
        self.wide_loads = one_block;
        self.last_stores = one_block && self.last_group;
        let lowered = self.lower_phased(&split, graph, peak, SPLIT_KEEP_BUDGET, pieces);
        self.wide_loads = false;
        self.last_stores = false;
        lowered?;
        self.mark_row_group(first);
        Ok(true)
    }

    /// The combining step of a split reduction (`BOp::Combine`) on `block`: the partials
    /// of `P` consecutive partitions (one row's chunks) reduced to the row's result, which
    /// every partition of the row gets, rounded once to the node's dtype.
    pub(super) fn eval_combine(
        &mut self,
        node: &BNode,
        func: ReduceFn,
        parts: u32,
        cols: u64,
        block: &Block,
        tiles: &[Option<Tile>],
    ) -> Tile {
        let q = block.parts();
        let rows = (q / parts).max(1);
        let span = node.span;
        let partial = match self.operand(&node.args[0], Fit::PerRow, block, tiles, span) {
            Operand::Tile(t) => t,
            Operand::Imm(v) => {
                let t = self.sbuf_tile(Dtype::F32, q, 1);
                // Not reached: a partial is always a reduction's tile.
                let value = isa::Imm::new(v);
                self.out.push(
                    Op::Memset { out: t.ap(), value },
                    Engine::Vector,
                    &[t.buf],
                    span,
                );
                t
            }
        };
        // The partials across to partition 0: `[1, q]` in PSUM, values exact.
        let across = self.out.psum(Dtype::F32, 1, q);
        self.out.push(
            Op::Transpose {
                out: ap(Mem::Psum, Dtype::F32, 1, &[(q, 1)]),
                src: partial.ap(),
            },
            Engine::Tensor,
            &[across, partial.buf],
            span,
        );
        // Each row's `parts` neighbours reduced, in order; a sum or extremum rounded once
        // to the node's dtype (a mean stays f32 until it is divided).
        let op = match func {
            ReduceFn::Sum | ReduceFn::Mean => ReduceOp::Add,
            ReduceFn::Max => ReduceOp::Max,
            ReduceFn::Min => ReduceOp::Min,
        };
        // A mean is divided by the row's length in the same instruction (in f32, then
        // rounded once, as the reference's mean is).
        let total = self.out.sbuf(node.dtype, 1, rows);
        let out = ap(Mem::Sbuf, node.dtype, 1, &[(rows, 1)]);
        let src = ap(
            Mem::Psum,
            Dtype::F32,
            1,
            &[(rows, parts as i32), (parts, 1)],
        );
        let reduce = if func == ReduceFn::Mean {
            Op::TensorReduceScalar {
                op,
                out,
                src,
                op0: isa::AluOp::Div,
                s0: isa::ScalarArg::imm(cols as f32),
                op1: isa::AluOp::Bypass,
                s1: isa::ScalarArg::imm(0.0),
            }
        } else {
            Op::TensorReduce { op, out, src }
        };
        self.out
            .push(reduce, Engine::Vector, &[total, across], span);
        // Back to every partition of its row: the row of totals, each read `parts` times.
        let back = self.out.psum(node.dtype, q, 1);
        self.out.push(
            Op::Transpose {
                out: ap(Mem::Psum, node.dtype, q, &[(1, 1)]),
                src: ap(Mem::Sbuf, node.dtype, 1, &[(rows, 1), (parts, 0)]),
            },
            Engine::Tensor,
            &[back, total],
            span,
        );
        // Read where it lies: the elementwise work after it takes PSUM operands.
        Tile::plain(back, Mem::Psum, node.dtype, q, 1, 0)
    }
}
