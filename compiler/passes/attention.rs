//! Recognises attention in tensor IR, so that fusion can give it to the flash-attention
//! lowering (`tiling/attention.rs`), where the S x S scores never leave the chip:
//!
//! ```text
//! s  = q @ kt                       q: [Sq, D], kt: [D, Sk] (rank 2)
//! s1 = s * c  (c > 0, optional)     s1 = tril(.., k, fill=-inf) (optional, either order)
//! m  = max(s1, axis=-1, keepdims=true)
//! e  = exp(s1 - m)
//! p  = e / sum(e, axis=-1, keepdims=true)
//! o  = (p [as dtype]) @ v           v: [Sk, Dv], Dv <= 512
//! ```
//!
//! Every intermediate must be used only inside the pattern (so nothing else needs the
//! scores), which is what makes computing them block by block, with a running max and
//! sum (online softmax), legal. The result differs from the reference only by rounding
//! (the maximum is found block by block and the sum is rescaled), within the tolerance:
//! probabilities cast below f32 are fused only when they are bf16 or f16 and the output is
//! then cast to a dtype no more precise (flash attention rounds the unnormalised
//! exponentials instead; FP8 probabilities are never fused), a mask below the diagonal
//! (`k < 0`, whole rows of -inf) is not fused, and under `--dtype-policy strict` nothing
//! is (`fusion::group`). docs/numerics.md gives the bound this keeps.

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
    /// The second matmul, whose result is the attention's output.
    pub out: Inst,
    /// Every instruction of the pattern, in program order.
    pub insts: Vec<Inst>,
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

/// Bits of precision (the significand with its implicit bit) of a dtype.
fn precision(dtype: Dtype) -> u32 {
    match dtype {
        Dtype::F32 => 24,
        Dtype::F16 => 11,
        Dtype::Bf16 => 8,
        Dtype::F8E4M3 => 4,
        Dtype::F8E5M2 => 3,
        // Attention never sees integers or booleans as scores; as "precision" they count
        // as the widest, so no rewrite relies on them being coarse.
        Dtype::I32 | Dtype::Bool => 32,
    }
}

/// Whether `o`'s only use is a cast to a dtype no more precise than `p`.
fn output_no_finer(func: &Function, uses: &HashMap<Value, usize>, o: Value, p: Dtype) -> bool {
    if uses.get(&o).copied() != Some(1) || func.results.contains(&o) {
        return false;
    }
    func.layout.iter().any(|&i| {
        let data = &func.insts[i];
        data.op == TOp::Cast
            && data.args[..] == [o]
            && precision(func.ty(data.result).dtype) <= precision(p)
    })
}

fn match_at(func: &Function, uses: &HashMap<Value, usize>, out: Inst) -> Option<Attention> {
    let used_once = |v: Value| uses.get(&v).copied() == Some(1);
    let data = &func.insts[out];
    if data.op != TOp::Matmul || func.ty(data.result).shape.len() != 2 {
        return None;
    }
    let (mut pin, v) = (data.args[0], data.args[1]);
    let mut insts = vec![out];
    let dv = func.ty(v).shape[1];
    if dv > 512 {
        return None;
    }
    // Optional cast of the probabilities.
    let i = def(func, pin)?;
    if func.insts[i].op == TOp::Cast {
        if !used_once(pin) {
            return None;
        }
        // Flash attention rounds the unnormalised exponentials to p's dtype and divides
        // at the end, where the kernel rounds the normalised probabilities: one rounding
        // per element either way, but of different values, which differ by about p's
        // rounding error in the output. An output rounded to a dtype no more precise than
        // p's hides that within its tolerance; an f32 output would not (a bf16 p made an
        // f32 output miss the reference by 2e-3), so then the kernel is not fused.
        //
        // FP8 probabilities are never fused: p is about 1/Sk, deep in FP8's subnormal range,
        // where rounding p and rounding the unnormalised exponentials (up to 1) are
        // different computations, not different roundings of one (docs/numerics.md).
        let narrow = func.ty(pin).dtype;
        if matches!(narrow, Dtype::F8E4M3 | Dtype::F8E5M2) {
            return None;
        }
        if narrow != Dtype::F32 && !output_no_finer(func, uses, data.result, narrow) {
            return None;
        }
        insts.push(i);
        pin = func.insts[i].args[0];
    }
    // p = e / l
    let div = def(func, pin)?;
    if func.insts[div].op != TOp::Binary(BinaryOp::Div) || !used_once(pin) {
        return None;
    }
    insts.push(div);
    let (e, l) = (func.insts[div].args[0], func.insts[div].args[1]);
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
    // e = exp(s1 - m), used by the sum and the division only.
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
                if func.ty(q).shape.len() != 2 || func.ty(kt).shape.len() != 2 {
                    return None;
                }
                return Some(Attention {
                    q,
                    kt,
                    v,
                    scale,
                    tril,
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
            TOp::Tril { k, fill } if tril.is_none() && *fill == f64::NEG_INFINITY && *k >= 0 => {
                tril = Some(*k);
                insts.push(i);
                cur = func.insts[i].args[0];
            }
            _ => return None,
        }
    }
}
