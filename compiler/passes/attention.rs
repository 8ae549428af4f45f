//! Recognises attention in tensor IR, so that fusion can give it to the flash-attention
//! lowering (`tiling/attention.rs`), where the S x S scores never leave the chip. It
//! matches the canonical form that `canonicalize.rs` leaves (a normalisation written
//! before the second matmul has been moved after it, a multiplication by the reciprocal of
//! the row sum is a division, and a causal mask built from positions with `where` is a
//! `tril`):
//!
//! ```text
//! s  = q @ kt                       q: [.., Sq, D], kt: [.., D, Sk]
//! s1 = s * c  (c > 0, optional)     s1 = tril(.., k, fill=-inf) (optional, either order)
//!                                   or s1 = s * c + mask (a run-time f32 mask, instead)
//! m  = max(s1, axis=-1, keepdims=true)
//! e  = exp(s1 - m)
//! l  = sum(e, axis=-1, keepdims=true)
//! o  = ((e [as dtype]) @ v) / l     v: [.., Sk, Dv], Dv <= 512
//! ```
//!
//! Leading (batch and head) axes broadcast as `@` broadcasts them; the lowering loops over
//! the output's leading indices around the rank-2 kernel, and a K or V broadcast over a
//! head axis (grouped-query attention) is loaded once for the heads that share it.
//!
//! Every intermediate must be used only inside the pattern (so nothing else needs the
//! scores), which is what makes computing them block by block, with a running max and
//! sum (online softmax), legal. The result differs from the reference only by rounding
//! (the maximum is found block by block and the sum is rescaled, so the exponentials are
//! rounded at another scale), within docs/numerics.md's bound for every dtype of the
//! exponentials and of the output; a mask below the diagonal (`k < 0`, whole rows of
//! -inf) is not fused, and under `--dtype-policy strict` nothing is (`fusion::group`).
//!
//! A run-time additive mask (any f32 operand that broadcasts to the scores: per key, per
//! query and key, with or without batch and head axes) is added to each block of scaled
//! scores in the reference's order. It may mask whole rows and whole blocks with -inf: the
//! running maximum is then kept at -f32::MAX instead of -inf (so a first block that masks
//! a row entirely gives exponentials of 0, not exp(-inf + inf) = NaN), which changes no
//! exponential of a row that has a finite score; a row masked entirely ends with a sum
//! and an output of 0, and 0 / 0 is the NaN the reference has there.
//!
//! A run-time boolean mask, `where(cond, s1, fill)` or `where(cond, fill, s1)` with `cond`
//! a `bool` operand that broadcasts to the scores (a kernel input, or computed from
//! `arange` and run-time values by a group before the attention) and `fill` a constant
//! (-inf or a finite value such as -30000), either inside or outside the scaling, is a
//! `select` per block: not an addition of `where(cond, 0, -inf)`, which gives NaN where a
//! masked score is +inf or NaN and the reference gives the fill. The select keeps every
//! score's bits and puts exactly the reference's value at the masked ones (`SelectMask`),
//! so the rows see the values the reference's softmax sees; with -inf as the fill the
//! running maximum is kept finite as for an additive mask, and a row masked entirely
//! gives NaN as the reference does (with a finite fill it is an ordinary row).

use crate::ir::{BinaryOp, Function, Inst, ReduceFn, TOp, UnaryFn, Value, ValueDef};
use isa::Dtype;
use std::collections::HashMap;

/// One recognised attention.
#[derive(Clone, Debug, PartialEq)]
pub struct Attention {
    pub q: Value,
    pub kt: Value,
    pub v: Value,
    /// The positive factor the scores are multiplied by (1 when there is none).
    pub scale: f32,
    /// `tril`'s diagonal offset, when the scores are masked (fill is -inf).
    pub tril: Option<i64>,
    /// A run-time additive mask, `s * c + mask` (f32, broadcast to the scores' shape as
    /// `+` broadcasts it): added to each block of scaled scores.
    pub mask: Option<Value>,
    /// A run-time boolean mask, `where(cond, s, fill)` (or with the branches swapped):
    /// selected on each block of scores.
    pub select: Option<SelectMask>,
    /// The second matmul, `p @ v` of the unnormalised probabilities.
    pub pv: Inst,
    /// The division of the second matmul's result by the row sums: the attention's output.
    pub out: Inst,
    /// Every instruction of the pattern, in program order.
    pub insts: Vec<Inst>,
}

/// A `where` mask of the scores (`Attention::select`).
#[derive(Clone, Debug, PartialEq)]
pub struct SelectMask {
    /// The `bool` condition, of a shape that broadcasts to the scores'.
    pub cond: Value,
    /// True for `where(cond, s, fill)` (a true condition keeps the score), false for
    /// `where(cond, fill, s)`.
    pub keep_if: bool,
    /// The value the reference gives a masked score after the scaling: the constant when
    /// the `where` is inside the scaling, the constant times the scale rounded to f32 (as
    /// the reference's multiplication rounds it) when it is outside.
    pub fill: f32,
    /// A value `u` with `u * scale` rounding to exactly `fill` in f32, when there is one:
    /// the lowering may then select on the unscaled scores and let the exponentials'
    /// activation apply the scale, which rounds `u * scale` to `fill` before adding the
    /// bias, exactly as for a score of that value (-inf for -inf).
    pub unscaled_fill: Option<f32>,
}

impl Attention {
    /// True when the lowering scales the scores before the softmax (an additive mask is
    /// added to the scaled scores, and a finite fill with no unscaled equivalent is
    /// selected into them), so the exponentials take a scale of 1.
    pub fn prescaled(&self) -> bool {
        self.mask.is_some()
            || self
                .select
                .as_ref()
                .is_some_and(|s| s.unscaled_fill.is_none())
    }
}

/// A value `u` with `u * scale` rounding to exactly `fill` in f32 (`SelectMask::
/// unscaled_fill`): `fill / scale` or one of its nearest neighbours, checked.
fn unscaled_fill(fill: f32, scale: f32) -> Option<f32> {
    if scale == 1.0 || fill == f32::NEG_INFINITY {
        return Some(fill);
    }
    let q = fill / scale;
    if !q.is_finite() {
        return None;
    }
    let step = |x: f32, up: bool| {
        let b = x.to_bits() as i64;
        // Toward +inf for `up` (the bits of a negative value shrink).
        let d = if (x >= 0.0) == up { 1 } else { -1 };
        f32::from_bits((b + d) as u32)
    };
    let mut cands = vec![q];
    let (mut lo, mut hi) = (q, q);
    for _ in 0..2 {
        lo = step(lo, false);
        hi = step(hi, true);
        cands.push(lo);
        cands.push(hi);
    }
    cands
        .into_iter()
        .find(|&u| u.is_finite() && (u * scale).to_bits() == fill.to_bits())
}

/// Finds every attention pattern of `func`.
pub fn find(func: &Function) -> Vec<Attention> {
    let mut uses: HashMap<Value, usize> = HashMap::new();
    for &inst in &func.layout {
        for a in &func.insts[inst].args {
            *uses.entry(*a).or_default() += 1;
        }
    }
    for r in &func.results {
        *uses.entry(*r).or_default() += 1;
    }
    let pos: HashMap<Inst, usize> = func
        .layout
        .iter()
        .enumerate()
        .map(|(i, &x)| (x, i))
        .collect();
    func.layout
        .iter()
        .filter_map(|&inst| match_at(func, &uses, inst))
        .map(|mut a| {
            a.insts
                .sort_by_key(|i| pos.get(i).copied().unwrap_or(usize::MAX));
            a
        })
        .collect()
}

/// The instruction defining `v`, if any.
fn def(func: &Function, v: Value) -> Option<Inst> {
    match func.values[v].def {
        ValueDef::Inst(i) => Some(i),
        ValueDef::Param(_) => None,
    }
}

/// The constant value of `v`, if it is one.
fn constant(func: &Function, v: Value) -> Option<f64> {
    match func.insts[def(func, v)?].op {
        TOp::Const(c) => Some(c),
        _ => None,
    }
}

/// Whether an operand of shape `ms` broadcasts to `shape` (NumPy's rule, without growing
/// `shape`): its axes align with the last ones, each equal or 1.
fn broadcasts(ms: &[u64], shape: &[u64]) -> bool {
    ms.len() <= shape.len()
        && ms
            .iter()
            .rev()
            .zip(shape.iter().rev())
            .all(|(&m, &s)| m == s || m == 1)
}

fn match_at(func: &Function, uses: &HashMap<Value, usize>, out: Inst) -> Option<Attention> {
    let used_once = |v: Value| uses.get(&v).copied() == Some(1);
    // o = pv / l, the canonical form (`canonicalize.rs` moves a normalisation before the
    // second matmul to after it).
    let data = &func.insts[out];
    if data.op != TOp::Binary(BinaryOp::Div) {
        return None;
    }
    let (pv_val, l) = (data.args[0], data.args[1]);
    let pv = def(func, pv_val)?;
    if func.insts[pv].op != TOp::Matmul
        || !used_once(pv_val)
        || func.ty(data.result).shape != func.ty(pv_val).shape
    {
        return None;
    }
    let (mut pin, v) = (func.insts[pv].args[0], func.insts[pv].args[1]);
    let mut insts = vec![out, pv];
    let rank = |v: Value| func.ty(v).shape.len();
    let dv = func.ty(v).shape[rank(v) - 1];
    if dv > 512 {
        return None;
    }
    // Optional cast of the unnormalised exponentials. Flash attention rounds
    // exp(s - m_running) instead of exp(s - m): within one step of the cast's grid of the
    // language's rounding, for every dtype (the relaxation `Grouping::relaxed_casts`
    // declares; docs/numerics.md, item 3).
    let i = def(func, pin)?;
    if func.insts[i].op == TOp::Cast {
        if !used_once(pin) {
            return None;
        }
        insts.push(i);
        pin = func.insts[i].args[0];
    }
    let e = pin;
    // l = sum(e, -1, keepdims)
    let sum = def(func, l)?;
    let rank_last = |v: Value| func.ty(v).shape.len() - 1;
    match func.insts[sum].op {
        TOp::Reduce {
            func: ReduceFn::Sum,
            axis,
            keepdims: true,
        } if func.insts[sum].args[0] == e && axis == rank_last(e) && used_once(l) => {}
        _ => return None,
    }
    insts.push(sum);
    // e = exp(s1 - m), used by the sum and the second matmul (or its cast) only.
    if uses.get(&e).copied() != Some(2) {
        return None;
    }
    let exp = def(func, e)?;
    if func.insts[exp].op != TOp::Unary(UnaryFn::Exp) {
        return None;
    }
    insts.push(exp);
    let d = func.insts[exp].args[0];
    let sub = def(func, d)?;
    if func.insts[sub].op != TOp::Binary(BinaryOp::Sub) || !used_once(d) {
        return None;
    }
    insts.push(sub);
    let (s1, m) = (func.insts[sub].args[0], func.insts[sub].args[1]);
    let max = def(func, m)?;
    match func.insts[max].op {
        TOp::Reduce {
            func: ReduceFn::Max,
            axis,
            keepdims: true,
        } if func.insts[max].args[0] == s1 && axis == rank_last(s1) && used_once(m) => {}
        _ => return None,
    }
    insts.push(max);
    if uses.get(&s1).copied() != Some(2) {
        return None;
    }
    // s1: the scores, optionally scaled by a positive constant and masked, in any order.
    let mut cur = s1;
    let mut scale = 1.0f32;
    let mut tril = None;
    let mut mask = None;
    let mut select: Option<SelectMask> = None;
    let mut first = true;
    loop {
        let i = def(func, cur)?;
        if !first && !used_once(cur) {
            return None;
        }
        first = false;
        match &func.insts[i].op {
            TOp::Matmul => {
                insts.push(i);
                let (q, kt) = (func.insts[i].args[0], func.insts[i].args[1]);
                if rank(q) < 2 || rank(kt) < 2 || rank(v) < 2 {
                    return None;
                }
                return Some(Attention {
                    q,
                    kt,
                    v,
                    scale,
                    tril,
                    mask,
                    select: select.map(|sm| SelectMask {
                        unscaled_fill: unscaled_fill(sm.fill, scale),
                        ..sm
                    }),
                    pv,
                    out,
                    insts,
                });
            }
            TOp::Binary(BinaryOp::Mul) if scale == 1.0 => {
                let (a, b) = (func.insts[i].args[0], func.insts[i].args[1]);
                let (c, other) = match (constant(func, a), constant(func, b)) {
                    (_, Some(c)) => (c, a),
                    (Some(c), _) => (c, b),
                    _ => return None,
                };
                if c <= 0.0 || !c.is_finite() || func.ty(other).shape != func.ty(cur).shape {
                    return None;
                }
                scale = c as f32;
                insts.push(i);
                cur = other;
            }
            // A negative diagonal masks the first rows entirely: their softmax is NaN
            // (the reference's exp(-inf - -inf)), which the generic lowering reproduces
            // and the flash lowering, with no key to start from, does not.
            // An additive mask outside the scaling (`s * c + mask`, the order the lowering
            // rounds in), f32 like the scores, of a shape that broadcasts to theirs.
            TOp::Binary(BinaryOp::Add)
                if mask.is_none() && select.is_none() && tril.is_none() && scale == 1.0 =>
            {
                let (a, b) = (func.insts[i].args[0], func.insts[i].args[1]);
                let shape = &func.ty(cur).shape;
                let fits = |x: Value, m: Value| {
                    func.ty(x).shape == *shape
                        && func.ty(m).dtype == Dtype::F32
                        && func.ty(x).dtype == Dtype::F32
                        && constant(func, m).is_none()
                        && broadcasts(&func.ty(m).shape, shape)
                };
                let (x, m) = if fits(a, b) && def(func, a).is_some() {
                    (a, b)
                } else if fits(b, a) && def(func, b).is_some() {
                    (b, a)
                } else {
                    return None;
                };
                mask = Some(m);
                insts.push(i);
                cur = x;
            }
            TOp::Tril { k, fill }
                if tril.is_none()
                    && mask.is_none()
                    && select.is_none()
                    && *fill == f64::NEG_INFINITY
                    && *k >= 0 =>
            {
                tril = Some(*k);
                insts.push(i);
                cur = func.insts[i].args[0];
            }
            // A boolean mask, `where(cond, x, fill)` or `where(cond, fill, x)`, inside or
            // outside the scaling: a constant fill of -inf or a finite value, the scores'
            // branch f32 of the scores' shape, the condition `bool` of a shape that
            // broadcasts to it.
            TOp::Where if mask.is_none() && select.is_none() && tril.is_none() => {
                let [c, x, y] = [0, 1, 2].map(|k| func.insts[i].args[k]);
                let (x, fill, keep_if) = match (constant(func, x), constant(func, y)) {
                    (None, Some(f)) => (x, f, true),
                    (Some(f), None) => (y, f, false),
                    _ => return None,
                };
                let shape = &func.ty(cur).shape;
                let fits = func.ty(c).dtype == Dtype::Bool
                    && constant(func, c).is_none()
                    && func.ty(x).shape == *shape
                    && func.ty(x).dtype == Dtype::F32
                    && def(func, x).is_some()
                    && broadcasts(&func.ty(c).shape, shape);
                if !fits || !(fill.is_finite() || fill == f64::NEG_INFINITY) {
                    return None;
                }
                // Outside the scaling (seen after it), the reference multiplies the fill
                // by the scale too.
                let fill = fill as f32 * scale;
                select = Some(SelectMask {
                    cond: c,
                    keep_if,
                    fill,
                    unscaled_fill: None,
                });
                insts.push(i);
                cur = x;
            }
            _ => return None,
        }
    }
}
