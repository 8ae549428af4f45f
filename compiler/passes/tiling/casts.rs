//! Exact rewrites of the casts of a block graph, so that a row group spends no engine pass
//! on a conversion that an instruction around it can do for free.
//!
//! Every engine decodes its inputs to f32 and rounds its f32 result once to its output's
//! dtype (docs/machine.md, "Numerics"), so two kinds of cast need no instruction of their
//! own, under either dtype policy (both give the same bits as the cast):
//!
//! - *Widening to f32* (`x as f32` of a bf16, f16 or FP8 `x`): every value of `x` is an f32
//!   exactly, and whatever reads the f32 value reads the same number from `x`'s tile. The
//!   readers read `x` directly; the cast disappears (the RMS norms' and softmax's `x as
//!   f32`, a full Scalar or Vector pass per block before).
//! - *Narrowing an f32 result* (`(a * b) as bf16`, where nothing else reads `a * b`): the
//!   instruction that computes `a * b` rounds its f32 result to f32 and then to bf16 if it
//!   writes bf16, exactly as the two steps of the language do. The producer writes the
//!   cast's dtype; the cast disappears.
//!
//! And one more that saves SBUF rather than time: an activation whose only output anyone
//! reads is its `accum` row sum (the `square` of `mean(square(x))`) writes its elementwise
//! result in the narrowest float dtype, since the sum adds the f32 results before any
//! rounding to the output's dtype (`activate`'s numerics in isa/ISA.md). A block then
//! takes less of SBUF, and more blocks are in flight.

use super::block::{BArg, BGraph, BOp};
use crate::passes::fusion::Fit;
use isa::Dtype;

/// True for a dtype whose every value is an f32 exactly (and decodes to it).
fn widens_exactly(d: Dtype) -> bool {
    matches!(d, Dtype::Bf16 | Dtype::F16 | Dtype::F8E4M3 | Dtype::F8E5M2)
}

/// The dtype of an operand, when it is a tile of one.
fn arg_dtype(g: &BGraph, a: &BArg) -> Option<Dtype> {
    match a {
        BArg::Node(k) => Some(g.nodes[*k].dtype),
        BArg::Load(v, _) => Some(v.dtype),
        _ => None,
    }
}

/// True for an operand that is a full tile (not an immediate or a per-row column).
fn is_full(g: &BGraph, a: &BArg) -> bool {
    match a {
        BArg::Node(k) => g.nodes[*k].fit == Fit::Full,
        BArg::Load(_, strides) => strides.last() != Some(&0),
        BArg::Given(_) => true,
        BArg::Affine(f) => f.coefs.last() != Some(&0),
        BArg::Imm(_) => false,
    }
}

/// How many nodes read each node, and which nodes are stored (or kept).
fn readers(g: &BGraph) -> (Vec<usize>, Vec<bool>) {
    let mut uses = vec![0usize; g.nodes.len()];
    let mut stored = vec![false; g.nodes.len()];
    for node in &g.nodes {
        for a in &node.args {
            if let BArg::Node(k) = a {
                uses[*k] += 1;
            }
        }
    }
    for st in &g.stores {
        stored[st.node] = true;
    }
    // A kept node's tile is read outside the graph's nodes (a column sum attached to the
    // group, a later phase of a long row): it counts as stored, so no rewrite folds it
    // away or changes its dtype.
    for &k in &g.keep {
        stored[k] = true;
    }
    (uses, stored)
}

/// Rewrites the casts of `graph` (see the module comment); run after `block::fold`.
pub fn rewrite(graph: &mut BGraph) {
    widen(graph);
    narrow(graph, false);
    narrow_dead_activations(graph);
}

/// The rewrites that stay exact when the graph is evaluated in phases (`longrow.rs`),
/// where an activation's row sum may become a reduction of its output again: the
/// widening casts are read through, and a narrowing cast is folded into its producer
/// unless that producer also takes row sums (whose terms would then be the rounded
/// values). No output is narrowed to FP8 for its row sum alone. Under `strict` the
/// widening casts stay: a strict running sum is written into the chunk's first column,
/// which must then be an f32 tile.
pub fn rewrite_phased(graph: &mut BGraph, strict: bool) {
    if !strict {
        widen(graph);
    }
    narrow(graph, true);
}

/// Readers of an exact widening cast read its operand.
fn widen(g: &mut BGraph) {
    let (_, stored) = readers(g);
    for (i, &is_stored) in stored.iter().enumerate() {
        let node = &g.nodes[i];
        if !matches!(node.op, BOp::Cast)
            || node.dtype != Dtype::F32
            || node.fit != Fit::Full
            || node.width.is_some()
            || is_stored
        {
            continue;
        }
        let src = node.args[0].clone();
        if !arg_dtype(g, &src).is_some_and(widens_exactly) || !is_full(g, &src) {
            continue;
        }
        // Every reader must read the value as a whole tile of the block: elementwise work
        // and reductions, not views (slices, concats) or per-row scalars.
        let ok = g.nodes.iter().all(|r| {
            let reads = r.args.iter().any(|a| matches!(a, BArg::Node(k) if *k == i));
            !reads
                || (r.width.is_none()
                    && (r.fit == Fit::Full || matches!(r.op, BOp::Reduce(_)))
                    && matches!(
                        r.op,
                        BOp::Unary(_)
                            | BOp::Binary(_)
                            | BOp::Where
                            | BOp::Cast
                            | BOp::Reduce(_)
                            | BOp::Activate { .. }
                    )
                    // An activation's scale and bias are per-row columns.
                    && !(matches!(r.op, BOp::Activate { .. })
                        && r.args[1..].iter().any(|a| matches!(a, BArg::Node(k) if *k == i))))
        });
        if !ok {
            continue;
        }
        for r in g.nodes.iter_mut() {
            for a in r.args.iter_mut() {
                if matches!(a, BArg::Node(k) if *k == i) {
                    *a = src.clone();
                }
            }
        }
        g.nodes[i].op = BOp::Folded;
        g.nodes[i].args.clear();
    }
}

/// A cast to a narrower float dtype of an f32 result nothing else reads: the producer
/// writes that dtype (`phased`: not a producer that takes row sums).
fn narrow(g: &mut BGraph, phased: bool) {
    let n = g.nodes.len();
    let (uses, stored) = readers(g);
    for i in 0..n {
        let node = &g.nodes[i];
        let BOp::Cast = node.op else {
            continue;
        };
        let BArg::Node(j) = node.args[0] else {
            continue;
        };
        let (to, fit, width) = (node.dtype, node.fit, node.width);
        let p = &g.nodes[j];
        let computes = match p.op {
            BOp::Unary(_) | BOp::Activate { .. } => p.args.first().is_some_and(|a| is_full(g, a)),
            BOp::Binary(_) => p.args.iter().any(|a| is_full(g, a)),
            BOp::Where => true,
            _ => false,
        };
        if !computes
            || p.dtype != Dtype::F32
            || !matches!(to, Dtype::Bf16 | Dtype::F16 | Dtype::F8E4M3 | Dtype::F8E5M2)
            || p.fit != Fit::Full
            || fit != Fit::Full
            || p.width != width
            || uses[j] != 1
            || stored[j]
            || (phased && p.accum.is_some())
            || g.keep.contains(&i)
        {
            continue;
        }
        g.nodes[j].dtype = to;
        for r in g.nodes.iter_mut() {
            for a in r.args.iter_mut() {
                if matches!(a, BArg::Node(k) if *k == i) {
                    *a = BArg::Node(j);
                }
            }
        }
        for st in g.stores.iter_mut() {
            if st.node == i {
                st.node = j;
            }
        }
        g.nodes[i].op = BOp::Folded;
        g.nodes[i].args.clear();
    }
}

/// An activation read only through its `accum` writes FP8.
fn narrow_dead_activations(g: &mut BGraph) {
    let (uses, stored) = readers(g);
    for (i, node) in g.nodes.iter_mut().enumerate() {
        let act = matches!(node.op, BOp::Activate { .. } | BOp::Unary(_));
        if act
            && node.accum.is_some()
            && uses[i] == 0
            && !stored[i]
            && node.fit == Fit::Full
            && node.dtype.is_float()
        {
            node.dtype = Dtype::F8E4M3;
        }
    }
}
