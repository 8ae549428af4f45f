//! Canonicalisation of tensor IR: rewrites that bring programs a user may write in several
//! equivalent ways to one form, so that the passes after it (the attention matcher of
//! `attention.rs` above all) recognise one form instead of every spelling.
//!
//! The rewrites made today:
//!
//! **A causal mask built from positions becomes `tril`.** `where(c, s, -inf)` (or
//! `where(c, -inf, s)`) whose condition `c` compares two affine functions of `arange`
//! (`tiling/affine.rs`'s forms) and holds exactly where `j <= i + k` over the last two axes
//! `(i, j)` of `s` (the same on every leading index) is `tril(s, k, fill=-inf)`: both keep
//! the same elements and put `-inf` in the same places, so the rewrite is exact. The
//! attention matcher then sees one mask form, whichever way the user built it
//! (`rows >= cols`, `cols <= rows + k`, `rows - cols > -1`, ...). A mask added to the
//! scores (`s + where(c, 0, -inf)`) is left alone: `+inf + -inf` is NaN where `tril` gives
//! `-inf`.
//!
//! **A multiplication by the reciprocal of a softmax's row sum becomes a division.** With
//! `l` the row sum of shifted exponentials (below), `x * reciprocal(l)` and `x * (1 / l)`
//! become `x / l` (f32 operands and result): one rounding instead of two, which the bound of
//! docs/numerics.md allows (the reciprocal's implicit f32 rounding is item 1's allowance).
//! It is applied only where `l >= 1` is certain, so `1 / l` lies in `(0, 1]` and nothing
//! overflows or underflows either way. Triton's `acc * (1 / l_i)` and a softmax written
//! `e * reciprocal(sum(e))` then reach the normalisation's rewrite and the flash lowering.
//!
//! **A softmax's normalisation moved across the matmul it feeds.** With `e = exp(x - m)`,
//! `m = max(x, axis=-1, keepdims=true)` and `l = sum(e, axis=-1, keepdims=true)`,
//!
//! ```text
//! ((e / l) [as d]) @ v    becomes    ((e [as d]) @ v) / l
//! ```
//!
//! for `d` f32, bf16 or f16. Both are the same real number; the rewritten form divides
//! `Sq x Dv` elements instead of `Sq x Sk`, and it is what flash attention computes (it
//! rounds the unnormalised exponentials and divides at the end), so the attention matcher
//! looks for this form only and the "normalised after P@V" spelling reaches the flash
//! lowering as the "normalised before" one does.
//!
//! The rewrite is not exact, so it runs only under the default dtype policy (never under
//! `--dtype-policy strict`), and the program `run --check` evaluates stays the one written
//! ([`Original`]): the rounding of `e / l` to `d` is declared not reproduced (one step of
//! `d`'s grid, `relaxed`), which bounds the difference (docs/numerics.md, "normalisation
//! moved across a matmul"). In f32 the quotients' rounding moves from `Sq x Sk` quotients
//! to `Sq x Dv` ones, within the bound's allowance for intermediates kept wider (item 1).
//! It is applied only where `l >= 1` and `e <= 1` are certain (the row maximum's term is
//! `exp(0) = 1`): with any divisor, `round(e) / l` could overflow, underflow or meet a zero
//! where `round(e / l)` does not. FP8 is left alone: there `e / l`, about `1/Sk`, is deep in
//! the subnormal range, and rounding it or rounding `e` are different computations.
//!
//! **A scale moved from a matmul operand to its output.** With `s` constant along the
//! operand's K axis (after the transposes between the product and the matmul),
//!
//! ```text
//! x @ transpose((w as f32 * s) as bf16)    becomes    (x @ transpose(w as f32)) * s'
//! ```
//!
//! with `s'` the scale reshaped and transposed to the operand's axis order, so that it
//! broadcasts over the output's rows (a left operand's scale) or columns (a right
//! operand's). The scale then multiplies `M x N` outputs on the PSUM read-out instead of
//! `K x N` weight elements on Vector. The rounding of `w * s` (and of its cast) is no
//! longer done: default policy only, with the cast declared `relaxed` and the bound of
//! docs/numerics.md, item 6, which also says where the rewrite is refused (a scale along
//! K, a skipped rounding to f16 or FP8, a `w` that the operand's dtype does not hold).
//!
//! **An exact widening cast on a matmul operand is dropped.** `x @ (w as bf16)` of an
//! FP8 `w` (possibly transposed) reads `w` itself: the PE array decodes both dtypes to
//! the same f32 values, so no bit changes, the operand's load moves half the bytes, and
//! no engine converts. After the scale's move this is what leaves an FP8 weight-only GEMM
//! streaming its FP8 weight straight into the matmul.

use super::dce;
use super::tiling::affine::{self, Form};
use crate::ir::rules::broadcast_shapes;
use crate::ir::{BinaryOp, Function, Inst, ReduceFn, TOp, UnaryFn, Value, ValueDef};
use cranelift_entity::SecondaryMap;
use isa::{CmpOp, Dtype};
use std::collections::HashMap;

/// The program as written, kept when canonicalisation changed rounding: `run --check`
/// evaluates it (`Compilation::reference`).
#[derive(Clone, Debug)]
pub struct Original {
    /// The tensor IR before canonicalisation.
    pub func: Function,
    /// For each value of the canonical IR, the value of `func` it equals exactly (`None`
    /// for the values a rewrite changed).
    pub to_original: SecondaryMap<Value, Option<Value>>,
    /// Casts of `func` whose rounding the canonical program does not reproduce.
    pub relaxed: Vec<Value>,
}

/// Canonicalises `func` in place; returns what it changed (none: nothing).
pub fn run(func: &mut Function) -> Option<Original> {
    let before = func.clone();
    // Exact rewrites first: the mask's form is what the normalisation's matcher reads.
    let mut masks = false;
    for inst in func.layout.clone() {
        if let Some((s, k)) = causal_where(func, inst) {
            func.insts[inst].op = TOp::Tril {
                k,
                fill: f64::NEG_INFINITY,
            };
            func.insts[inst].args = [s].into_iter().collect();
            masks = true;
        }
    }
    if masks {
        // The positions and the comparison are dead now.
        dce::run(func);
    }
    let mut relaxed = Vec::new();
    let mut rewritten: Vec<Value> = Vec::new();
    let uses = use_counts(func);
    for inst in func.layout.clone() {
        if let Some((x, l)) = reciprocal_product(func, &uses, inst) {
            func.insts[inst].op = TOp::Binary(BinaryOp::Div);
            func.insts[inst].args = [x, l].into_iter().collect();
            rewritten.push(func.insts[inst].result);
        }
    }
    if !rewritten.is_empty() {
        // The reciprocals are dead now.
        dce::run(func);
    }
    loop {
        let uses = use_counts(func);
        let Some(site) = func
            .layout
            .iter()
            .find_map(|&i| normalisation_site(func, &uses, i))
        else {
            break;
        };
        if let Some(cast) = site.cast {
            relaxed.push(func.insts[cast].result);
        }
        rewritten.extend(move_normalisation(func, &site));
    }
    // Scalings moved across the matmuls they feed, then the exact widening casts left
    // on matmul operands dropped (the PE array reads the narrower dtype as it is).
    let mut scales_moved = false;
    loop {
        let uses = use_counts(func);
        let Some(site) = func.layout.iter().find_map(|&i| scale_site(func, &uses, i)) else {
            break;
        };
        if let Some(cast) = site.cast {
            relaxed.push(func.insts[cast].result);
        }
        rewritten.extend(move_scale(func, &site));
        // The scaled operand is dead now, and would count as a reader of `w`.
        dce::run(func);
        scales_moved = true;
    }
    let mut casts_dropped = false;
    loop {
        let uses = use_counts(func);
        let Some((chain, source)) = func
            .layout
            .iter()
            .find_map(|&i| exact_operand_cast(func, &uses, i))
        else {
            break;
        };
        rewritten.extend(drop_operand_cast(func, &chain, source));
        casts_dropped = true;
    }
    if casts_dropped {
        // The casts are dead now.
        dce::run(func);
    }
    if !masks && !scales_moved && relaxed.is_empty() && rewritten.is_empty() {
        return None;
    }
    // The values of `before` keep their numbers until the compaction below, so the map
    // from the canonical IR back to `before` is the compaction's map, inverted, without the
    // values a rewrite changed.
    let map = func.compact_mapped()?;
    let mut to_original: SecondaryMap<Value, Option<Value>> = SecondaryMap::new();
    for (old, new) in map.iter() {
        if let Some(new) = new {
            if !rewritten.contains(&old) {
                to_original[*new] = Some(old);
            }
        }
    }
    Some(Original {
        func: before,
        to_original,
        relaxed,
    })
}

/// How often each value is read (results count as reads).
fn use_counts(func: &Function) -> HashMap<Value, usize> {
    let mut uses: HashMap<Value, usize> = HashMap::new();
    for &inst in &func.layout {
        for a in &func.insts[inst].args {
            *uses.entry(*a).or_default() += 1;
        }
    }
    for r in &func.results {
        *uses.entry(*r).or_default() += 1;
    }
    uses
}

/// The constant value of `v`, if it is one.
fn constant(func: &Function, v: Value) -> Option<f64> {
    match func.insts[def(func, v)?].op {
        TOp::Const(c) => Some(c),
        _ => None,
    }
}

/// When `inst` is a `where` that keeps its float operand `s` exactly where `j <= i + k`
/// over `s`'s last two axes and puts `-inf` elsewhere, `s` and `k`: the `tril` it equals.
fn causal_where(func: &Function, inst: Inst) -> Option<(Value, i64)> {
    let data = &func.insts[inst];
    if data.op != TOp::Where {
        return None;
    }
    let (c, a, b) = (data.args[0], data.args[1], data.args[2]);
    let neg_inf = |v: Value| constant(func, v) == Some(f64::NEG_INFINITY);
    // Which operand is kept, and whether it is kept where `c` holds.
    let (s, kept_where_true) = match (neg_inf(a), neg_inf(b)) {
        (false, true) => (a, true),
        (true, false) => (b, false),
        _ => return None,
    };
    let out = func.ty(data.result);
    let rank = out.shape.len();
    // `s` must not be broadcast by the `where`, nor converted.
    if rank < 2 || func.ty(s) != out || !out.dtype.is_float() {
        return None;
    }
    let (form, cmp) = affine::predicate_of(func, c)?;
    let form = form.broadcast(&func.ty(c).shape, &out.shape)?;
    let cmp = if kept_where_true {
        cmp
    } else {
        affine::negate(cmp)
    };
    // Kept where `form' >= 0`, with `form'` the form or its negation, shifted for a strict
    // comparison (integers: `x > 0` is `x - 1 >= 0`).
    let (sign, shift) = match cmp {
        CmpOp::Ge => (1, 0),
        CmpOp::Gt => (1, -1),
        CmpOp::Le => (-1, 0),
        CmpOp::Lt => (-1, -1),
        CmpOp::Eq | CmpOp::Ne => return None,
    };
    let Form { base, coefs } = form;
    let coefs: Vec<i64> = coefs.iter().map(|c| sign * c).collect();
    // `i - j + k >= 0` is `j <= i + k`.
    let lead_free = coefs[..rank - 2].iter().all(|&c| c == 0);
    if !lead_free || coefs[rank - 2] != 1 || coefs[rank - 1] != -1 {
        return None;
    }
    Some((s, sign * base + shift))
}

/// The instruction defining `v`, if any.
fn def(func: &Function, v: Value) -> Option<Inst> {
    match func.values[v].def {
        ValueDef::Inst(i) => Some(i),
        ValueDef::Param(_) => None,
    }
}

/// Whether `inst` is `op(x, axis=-1, keepdims=true)` of `x`.
fn is_row_reduce(func: &Function, inst: Inst, op: ReduceFn, x: Value) -> bool {
    let data = &func.insts[inst];
    matches!(data.op, TOp::Reduce { func: f, axis, keepdims: true }
        if f == op && data.args[0] == x && axis + 1 == func.ty(x).shape.len())
}

/// Whether `e` is `exp(x - max(x, axis=-1, keepdims=true))`: every value in `[0, 1]` (or
/// NaN), and every row holds a 1 unless it holds a NaN.
fn is_shifted_exp(func: &Function, e: Value) -> bool {
    let Some(exp) = def(func, e) else {
        return false;
    };
    if func.insts[exp].op != TOp::Unary(UnaryFn::Exp) {
        return false;
    }
    let Some(sub) = def(func, func.insts[exp].args[0]) else {
        return false;
    };
    if func.insts[sub].op != TOp::Binary(BinaryOp::Sub) {
        return false;
    }
    let (x, m) = (func.insts[sub].args[0], func.insts[sub].args[1]);
    def(func, m).is_some_and(|max| is_row_reduce(func, max, ReduceFn::Max, x))
        && func.ty(x).shape == func.ty(e).shape
}

/// When `inst` is `x * r` (either order) with `r`, read only there, `reciprocal(l)` or
/// `1 / l` and `l` a row sum of shifted exponentials, every value f32 and the product of
/// `x`'s type: `x` and `l`, the division it becomes.
fn reciprocal_product(
    func: &Function,
    uses: &HashMap<Value, usize>,
    inst: Inst,
) -> Option<(Value, Value)> {
    let data = &func.insts[inst];
    if data.op != TOp::Binary(BinaryOp::Mul) {
        return None;
    }
    let of_sum = |r: Value| -> Option<Value> {
        if uses.get(&r).copied() != Some(1) || func.ty(r).dtype != Dtype::F32 {
            return None;
        }
        let i = def(func, r)?;
        let d = &func.insts[i];
        let l = match d.op {
            TOp::Unary(UnaryFn::Reciprocal) => d.args[0],
            TOp::Binary(BinaryOp::Div) if constant(func, d.args[0]) == Some(1.0) => d.args[1],
            _ => return None,
        };
        let sum = def(func, l)?;
        let e = func.insts[sum].args.first().copied()?;
        (func.ty(l).dtype == Dtype::F32
            && func.ty(r).shape == func.ty(l).shape
            && is_row_reduce(func, sum, ReduceFn::Sum, e)
            && func.ty(e).dtype == Dtype::F32
            && is_shifted_exp(func, e))
        .then_some(l)
    };
    let (a, b) = (data.args[0], data.args[1]);
    let (x, l) = match (of_sum(b), of_sum(a)) {
        (Some(l), _) => (a, l),
        (None, Some(l)) => (b, l),
        _ => return None,
    };
    (func.ty(data.result) == func.ty(x) && func.ty(x).dtype == Dtype::F32).then_some((x, l))
}

/// One `((e / l) [as d]) @ v` to rewrite.
struct Site {
    div: Inst,
    cast: Option<Inst>,
    matmul: Inst,
    e: Value,
    l: Value,
    v: Value,
}

/// The site whose matmul is `inst`, if it is one.
fn normalisation_site(func: &Function, uses: &HashMap<Value, usize>, inst: Inst) -> Option<Site> {
    let data = &func.insts[inst];
    if data.op != TOp::Matmul {
        return None;
    }
    let once = |v: Value| uses.get(&v).copied() == Some(1);
    let (mut p, v) = (data.args[0], data.args[1]);
    let mut cast = None;
    let i = def(func, p)?;
    if func.insts[i].op == TOp::Cast {
        if !once(p) || !matches!(func.ty(p).dtype, Dtype::F32 | Dtype::Bf16 | Dtype::F16) {
            return None;
        }
        cast = Some(i);
        p = func.insts[i].args[0];
    }
    let div = def(func, p)?;
    if func.insts[div].op != TOp::Binary(BinaryOp::Div) || !once(p) {
        return None;
    }
    let (e, l) = (func.insts[div].args[0], func.insts[div].args[1]);
    // The quotient has e's shape (l only broadcasts along the rows) and f32 type.
    if func.ty(p).shape != func.ty(e).shape
        || func.ty(p).dtype != Dtype::F32
        || func.ty(e).dtype != Dtype::F32
    {
        return None;
    }
    if !def(func, l).is_some_and(|s| is_row_reduce(func, s, ReduceFn::Sum, e)) {
        return None;
    }
    if !is_shifted_exp(func, e) {
        return None;
    }
    // (e @ v) / l must have the matmul's shape: l's leading axes broadcast into it.
    let out = &func.ty(data.result).shape;
    if broadcast_shapes(&func.ty(l).shape, out).as_ref() != Some(out) {
        return None;
    }
    Some(Site {
        div,
        cast,
        matmul: inst,
        e,
        l,
        v,
    })
}

/// Rewrites one site in place, reusing its instructions and values (so that the values
/// nothing rewrote keep their numbers until the caller compacts); returns the values whose
/// meaning changed.
fn move_normalisation(func: &mut Function, s: &Site) -> Vec<Value> {
    // Each rewritten instruction takes the span of the source operation it now computes.
    let (div_span, mm_span) = (func.spans[s.div], func.spans[s.matmul]);
    let cast_span = s.cast.map(|c| func.spans[c]);
    let out_ty = func.ty(func.insts[s.matmul].result).clone();
    let out = func.insts[s.matmul].result;
    let t = func.insts[s.div].result;
    let mut new_order = Vec::new();
    let mut changed = vec![t, out];
    // The product's left operand: e, or e cast to d (the cast instruction computes it).
    let (pv_inst, lhs) = match s.cast {
        Some(cast) => {
            let d = func.ty(func.insts[cast].result).dtype;
            func.insts[s.div].op = TOp::Cast;
            func.insts[s.div].args = [s.e].into_iter().collect();
            func.values[t].ty.dtype = d;
            new_order.push(s.div);
            changed.push(func.insts[cast].result);
            (cast, t)
        }
        None => (s.div, s.e),
    };
    let pv = func.insts[pv_inst].result;
    func.insts[pv_inst].op = TOp::Matmul;
    func.insts[pv_inst].args = [lhs, s.v].into_iter().collect();
    func.values[pv].ty = out_ty;
    new_order.push(pv_inst);
    if let (Some(cast), Some(span)) = (s.cast, cast_span) {
        func.spans[s.div] = span;
        func.spans[cast] = mm_span;
    } else {
        func.spans[s.div] = mm_span;
    }
    func.spans[s.matmul] = div_span;
    func.insts[s.matmul].op = TOp::Binary(BinaryOp::Div);
    func.insts[s.matmul].args = [pv, s.l].into_iter().collect();
    // The new instructions go right before the old matmul's place, where v is defined.
    place_before(func, new_order, s.matmul);
    changed
}

/// Moves the instructions `new` (in this order) to right before `at` in the layout.
fn place_before(func: &mut Function, new: Vec<Inst>, at: Inst) {
    func.layout.retain(|i| !new.contains(i));
    let pos = func
        .layout
        .iter()
        .position(|&i| i == at)
        .unwrap_or(func.layout.len());
    func.layout.splice(pos..pos, new);
}

/// True when every value of `from` is a value of `to` (so converting is exact and the PE
/// array, which decodes both to f32, reads the same numbers from either).
fn embeds(from: Dtype, to: Dtype) -> bool {
    from == to
        || match to {
            Dtype::F32 => matches!(
                from,
                Dtype::Bf16 | Dtype::F16 | Dtype::F8E4M3 | Dtype::F8E5M2
            ),
            Dtype::Bf16 | Dtype::F16 => from.is_fp8(),
            _ => false,
        }
}

/// The operand `v` of a matmul followed back through transposes and casts that nothing
/// else reads: the instructions met (outermost first) and the value they start from.
fn operand_chain(func: &Function, uses: &HashMap<Value, usize>, v: Value) -> (Vec<Inst>, Value) {
    let mut chain = Vec::new();
    let mut cur = v;
    while uses.get(&cur).copied() == Some(1) {
        let Some(i) = def(func, cur) else {
            break;
        };
        let data = &func.insts[i];
        let float_cast = data.op == TOp::Cast
            && func.ty(cur).dtype.is_float()
            && func.ty(data.args[0]).dtype.is_float();
        if !matches!(data.op, TOp::Transpose(_)) && !float_cast {
            break;
        }
        chain.push(i);
        cur = data.args[0];
    }
    (chain, cur)
}

/// For each axis of the chain's end (the matmul operand), the axis of its start that the
/// transposes of `chain` (outermost first) move there.
fn source_axes(func: &Function, chain: &[Inst], rank: usize) -> Vec<usize> {
    let mut axes: Vec<usize> = (0..rank).collect();
    for &i in chain {
        if let TOp::Transpose(perm) = &func.insts[i].op {
            axes = axes.iter().map(|&a| perm[a]).collect();
        }
    }
    axes
}

/// One `x @ (w * s)` (either operand) whose scale `s` is constant along K, to rewrite as
/// `(x @ w) * s'`.
struct ScaleSite {
    matmul: Inst,
    /// Which matmul argument is scaled (0: the left, 1: the right).
    side: usize,
    /// The transposes and casts between the product and the matmul, outermost first.
    chain: Vec<Inst>,
    /// The one cast of the chain, if any (its rounding is not reproduced).
    cast: Option<Inst>,
    /// The product `w * s`.
    mul: Inst,
    w: Value,
    s: Value,
    /// `s` with the product's rank (leading unit axes) and the operand's axis order.
    s_shape: Vec<u64>,
    /// The transpose that takes the reshaped `s` to the operand's axis order, if any.
    s_perm: Option<Vec<usize>>,
}

/// The scale site whose matmul is `inst`, if it is one. A product `w * s` feeding a
/// matmul operand (through transposes and at most one cast, each read only there) where
/// `s` has a unit extent along the operand's K axis and `w` the product's whole shape:
/// then `x @ (w * s) = (x @ w) * s` as real numbers, `s` now scaling the output's rows or
/// columns. Taken only where docs/numerics.md's bound holds (item 6): every rounding the
/// rewrite skips is to f32 or bf16 (f32's exponent range, so the product and its
/// rounding overflow where the rewritten form does, f32 overflow aside), and `w`'s
/// values are the operand dtype's exactly (the operand reads `w` without rounding it).
fn scale_site(func: &Function, uses: &HashMap<Value, usize>, inst: Inst) -> Option<ScaleSite> {
    let data = &func.insts[inst];
    if data.op != TOp::Matmul {
        return None;
    }
    let out = func.ty(data.result).shape.clone();
    for side in 0..2 {
        let v = data.args[side];
        let (chain, product) = operand_chain(func, uses, v);
        let Some(mul) = def(func, product) else {
            continue;
        };
        if func.insts[mul].op != TOp::Binary(BinaryOp::Mul) || uses.get(&product) != Some(&1) {
            continue;
        }
        let casts: Vec<Inst> = chain
            .iter()
            .copied()
            .filter(|&i| func.insts[i].op == TOp::Cast)
            .collect();
        if casts.len() > 1 {
            continue;
        }
        let cast = casts.first().copied();
        // Every rounding skipped keeps f32's exponent range.
        let wide = |d: Dtype| matches!(d, Dtype::F32 | Dtype::Bf16);
        if !wide(func.ty(product).dtype)
            || cast.is_some_and(|c| !wide(func.ty(func.insts[c].result).dtype))
        {
            continue;
        }
        let op_ty = func.ty(v);
        let rank = op_ty.shape.len();
        let k_axis = if side == 0 { rank - 1 } else { rank - 2 };
        let axes = source_axes(func, &chain, rank);
        let pshape = &func.ty(product).shape;
        let (p, q) = (func.insts[mul].args[0], func.insts[mul].args[1]);
        for (w, s) in [(p, q), (q, p)] {
            if &func.ty(w).shape != pshape || !embeds(root_dtype(func, w), op_ty.dtype) {
                continue;
            }
            let sshape = &func.ty(s).shape;
            if sshape.len() > rank {
                continue;
            }
            // `s` right-aligned to the product's rank.
            let mut full = vec![1u64; rank - sshape.len()];
            full.extend_from_slice(sshape);
            if full[axes[k_axis]] != 1 {
                continue;
            }
            let s_shape: Vec<u64> = axes.iter().map(|&a| full[a]).collect();
            if broadcast_shapes(&s_shape, &out).as_ref() != Some(&out) {
                continue;
            }
            let identity = axes.iter().enumerate().all(|(i, &a)| i == a);
            return Some(ScaleSite {
                matmul: inst,
                side,
                chain: chain.clone(),
                cast,
                mul,
                w,
                s,
                s_shape,
                s_perm: (!identity).then(|| axes.clone()),
            });
        }
    }
    None
}

/// The dtype of the values of `w`: its own, or that of what an exact widening cast
/// converts.
fn root_dtype(func: &Function, w: Value) -> Dtype {
    let d = func.ty(w).dtype;
    match def(func, w) {
        Some(i) if func.insts[i].op == TOp::Cast => {
            let from = func.ty(func.insts[i].args[0]).dtype;
            if embeds(from, d) {
                from
            } else {
                d
            }
        }
        _ => d,
    }
}

/// Rewrites one scale site: the operand's transposes read `w`, the cast goes, the matmul
/// becomes a new instruction and the old one multiplies its result by `s` (reshaped and
/// transposed to the operand's axis order). Returns the values whose meaning changed or
/// that are new.
fn move_scale(func: &mut Function, site: &ScaleSite) -> Vec<Value> {
    let mm_span = func.spans[site.matmul];
    let mul_span = func.spans[site.mul];
    let out = func.insts[site.matmul].result;
    let out_ty = func.ty(out).clone();
    let mut changed = vec![out];
    // The operand: the chain's transposes (the cast left out) over `w`, or over what `w`
    // widens exactly (the matmul reads those values as they are, even when the widened
    // `w` has other readers).
    let base = match def(func, site.w) {
        Some(c)
            if func.insts[c].op == TOp::Cast
                && root_dtype(func, site.w) != func.ty(site.w).dtype =>
        {
            func.insts[c].args[0]
        }
        _ => site.w,
    };
    let dtype = func.ty(base).dtype;
    let mut operand = base;
    for &i in site.chain.iter().rev() {
        if func.insts[i].op == TOp::Cast {
            continue;
        }
        func.insts[i].args = [operand].into_iter().collect();
        let r = func.insts[i].result;
        func.values[r].ty.dtype = dtype;
        changed.push(r);
        operand = r;
    }
    // The scale in the operand's axis order: as it is when no axis moves or all its
    // extents are 1 (broadcasting aligns the ranks), a reshape when only unit axes move, else a transpose of it with
    // the product's rank.
    let s_ty = func.ty(site.s).clone();
    let mut s = site.s;
    let mut added = Vec::new();
    // A scale of unit extents (a constant) broadcasts as it is.
    let unit = s_ty.shape.iter().all(|&d| d == 1);
    if let Some(perm) = site.s_perm.as_ref().filter(|_| !unit) {
        let rank = site.s_shape.len();
        let mut full = vec![1u64; rank - s_ty.shape.len()];
        full.extend_from_slice(&s_ty.shape);
        let kept: Vec<usize> = perm.iter().copied().filter(|&a| full[a] != 1).collect();
        let in_order = kept.windows(2).all(|w| w[0] < w[1]);
        if !in_order && full != s_ty.shape {
            let ty = crate::ir::TensorType {
                dtype: s_ty.dtype,
                shape: full,
            };
            s = func.push(TOp::Reshape, &[s], ty, mul_span);
            added.push(s);
        }
        let ty = crate::ir::TensorType {
            dtype: s_ty.dtype,
            shape: site.s_shape.clone(),
        };
        let op = if in_order {
            TOp::Reshape
        } else {
            TOp::Transpose(perm.clone())
        };
        s = func.push(op, &[s], ty, mul_span);
        added.push(s);
    }
    let mut args = func.insts[site.matmul].args.clone();
    args[site.side] = operand;
    let pv = func.push(TOp::Matmul, &args, out_ty, mm_span);
    added.push(pv);
    func.insts[site.matmul].op = TOp::Binary(BinaryOp::Mul);
    func.insts[site.matmul].args = [pv, s].into_iter().collect();
    func.spans[site.matmul] = mul_span;
    // The new instructions go right before the old matmul's place.
    let new: Vec<Inst> = added.iter().filter_map(|&v| def(func, v)).collect();
    place_before(func, new, site.matmul);
    changed.extend(added);
    changed
}

/// A matmul operand that is an exact widening cast (`w as bf16` of an FP8 `w`), possibly
/// transposed, each step read only there: the chain (outermost first, ending with the
/// cast) and the cast's source. The PE array decodes every operand to f32 (and multiplies
/// operands of different dtypes as it multiplies equal ones), so reading `w` itself gives
/// the same products: the load moves the narrower bytes and no engine converts.
fn exact_operand_cast(
    func: &Function,
    uses: &HashMap<Value, usize>,
    inst: Inst,
) -> Option<(Vec<Inst>, Value)> {
    let data = &func.insts[inst];
    if data.op != TOp::Matmul {
        return None;
    }
    for &v in &data.args {
        let (chain, _) = operand_chain(func, uses, v);
        let Some(pos) = chain.iter().position(|&i| func.insts[i].op == TOp::Cast) else {
            continue;
        };
        let cast = chain[pos];
        let source = func.insts[cast].args[0];
        let (from, to) = (
            func.ty(source).dtype,
            func.ty(func.insts[cast].result).dtype,
        );
        if from != to && embeds(from, to) {
            return Some((chain[..=pos].to_vec(), source));
        }
    }
    None
}

/// Makes the chain's transposes read the cast's source (in its dtype) and the matmul
/// read the chain without the cast; returns the values whose type changed.
fn drop_operand_cast(func: &mut Function, chain: &[Inst], source: Value) -> Vec<Value> {
    let dtype = func.ty(source).dtype;
    let cast = chain[chain.len() - 1];
    let cast_result = func.insts[cast].result;
    let mut changed = Vec::new();
    let mut operand = source;
    for &i in chain[..chain.len() - 1].iter().rev() {
        func.insts[i].args = [operand].into_iter().collect();
        let r = func.insts[i].result;
        func.values[r].ty.dtype = dtype;
        changed.push(r);
        operand = r;
    }
    // With no transpose the matmul read the cast itself: it reads the source now.
    let readers: Vec<Inst> = func
        .layout
        .iter()
        .copied()
        .filter(|&i| func.insts[i].op == TOp::Matmul && func.insts[i].args.contains(&cast_result))
        .collect();
    if chain.len() == 1 {
        for i in readers {
            for a in func.insts[i].args.iter_mut() {
                if *a == cast_result {
                    *a = operand;
                }
            }
        }
    }
    changed
}
