//! Convolutions as matmuls (`conv` pass): every `conv` of tensor IR is rewritten, exactly,
//! into operations the rest of the compiler already tiles.
//!
//! The language sums a convolution's products over the window's taps in row-major order
//! and, within a tap, over the group's channels (docs/language.md). That is the order of
//! a matmul whose reduced index is `k = tap * C_g + c`, so a convolution with groups = 1 is
//!
//! ```text
//! xp   = pad(x, spatial padding, 0)                    [N, C, Hp, Wp]
//! x_t  = xp[:, :, i*dh : .. : sh, j*dw : .. : sw]       [N, C, OH, OW]   one slice per tap
//! cols = reshape(concat([x_t..], axis=1))              [N, taps*C, OH*OW]  (im2col)
//! w2   = reshape(transpose(w, [0, 2, 3, 1]))           [O, taps*C]
//! out  = reshape(w2 @ cols)                            [N, O, OH, OW]
//! ```
//!
//! (1-D the same without the last reshape). The matmul accumulates in f32 in `k` order,
//! each product and sum rounded to f32 (docs/machine.md), which is the language's order
//! term for term, so the rewrite gives the reference's bits. Slices, concat and reshapes
//! are HBM views and copies (`tiling/view.rs`, `tiling/movement.rs`); the matmul is tiled
//! for the Tensor engine with its epilogue fused (`tiling/matmul.rs`), channels of the
//! window matrix on partitions.
//!
//! Groups: each group is such a matmul on its channel slices of `x` and `w`, joined along
//! the output channels, up to [`MAX_GEMM_GROUPS`] groups. A depthwise convolution (one
//! input and one output channel per group) is an elementwise multiply-add chain over the
//! taps instead, on Vector/GpSimd: `acc = 0 + x_0 w_0`, `acc = acc + x_t w_t`, in f32, the
//! same order and roundings. Other grouped convolutions are refused before the passes run
//! ([`unsupported`]), with the error at the call.
//!
//! The reference keeps evaluating the `conv` as written (`Compilation::original`), so
//! `run --check` compares the machine's result with the convolution, not with this rewrite.

use crate::ir::{ConvAttrs, Function, Inst, SliceAxis, Span, TOp, TensorType, Value};
use isa::Dtype;

/// The most groups a grouped (not depthwise) convolution is lowered with, one matmul each.
pub const MAX_GEMM_GROUPS: u64 = 16;

/// The first convolution the backend does not compile: its span and why.
pub fn unsupported(func: &Function) -> Option<(Span, String)> {
    for &inst in &func.layout {
        let data = &func.insts[inst];
        let TOp::Conv(a) = &data.op else { continue };
        let w = func.ty(data.args[1]);
        let depthwise = w.shape[0] == a.groups && w.shape[1] == 1;
        if a.groups > MAX_GEMM_GROUPS && !depthwise {
            return Some((
                func.spans[inst],
                format!(
                    "a grouped `conv` with {} groups (more than {MAX_GEMM_GROUPS}) that is not \
                     depthwise (one input and one output channel per group)",
                    a.groups
                ),
            ));
        }
    }
    None
}

/// A convolution with one group, rewritten into the matmul whose result is `matmul`: the
/// tile pass may compute that matmul by implicit GEMM straight from `x` and `w`
/// (`tiling/conv.rs`) instead of through the window matrix, whose instructions are then
/// never lowered.
#[derive(Clone, Debug, PartialEq)]
pub struct Implicit {
    /// The matmul's result, `[N, O, OH x OW]` (`[N, O, L]` in 1-D).
    pub matmul: Value,
    /// The convolution's input `[N, C, spatial..]` and weights `[O, C, window..]`.
    pub x: Value,
    pub w: Value,
    pub attrs: ConvAttrs,
}

/// A depthwise convolution rewritten into its multiply-add chain, whose result `out`
/// (`[N, C, OH x OW]`, `[N, C, L]` in 1-D) is a `reshape` of the chain's last sum: the tile
/// pass may compute `out` straight from `x` and `w` on Vector, GpSimd and Scalar
/// (`tiling/depthwise.rs`) instead, and the chain is then never lowered.
#[derive(Clone, Debug, PartialEq)]
pub struct Depthwise {
    pub out: Value,
    /// The convolution's input `[N, C, spatial..]` and weights `[C, 1, window..]`.
    pub x: Value,
    pub w: Value,
    pub attrs: ConvAttrs,
}

/// Rewrites every `conv`; returns whether there was one.
pub fn run(func: &mut Function) -> Result<bool, String> {
    run_recording(func, &mut Vec::new(), &mut Vec::new())
}

/// [`run`], also recording each convolution of one group and its matmul in `implicit`,
/// and each depthwise convolution in `depthwise`.
pub fn run_recording(
    func: &mut Function,
    implicit: &mut Vec<Implicit>,
    depthwise: &mut Vec<Depthwise>,
) -> Result<bool, String> {
    let old = std::mem::take(&mut func.layout);
    let mut changed = false;
    let mut reshapes = Vec::new();
    for inst in old {
        if let TOp::Conv(attrs) = func.insts[inst].op.clone() {
            match expand(func, inst, &attrs)? {
                Some(Expanded::Implicit(rec)) => implicit.push(rec),
                Some(Expanded::Depthwise(rec)) => depthwise.push(rec),
                None => {}
            }
            changed = true;
            if func.insts[inst].op == TOp::Reshape {
                reshapes.push(inst);
            }
        }
        func.layout.push(inst);
    }
    if !reshapes.is_empty() {
        sink_reshapes(func, &reshapes);
    }
    if changed {
        hoist_parameter_reshapes(func);
    }
    Ok(changed)
}

/// Moves every `reshape` of a kernel parameter (and reshapes of those) to the start of the
/// layout. A convolution's epilogue operand is usually written after the call
/// (`conv(x, w) + reshape(b, [1, O, 1, 1])`), so its reshapes come after the matmul the
/// convolution became, and `fusion` lets an instruction join a group only when its
/// operands are defined before the group's first instruction: the bias would keep the
/// epilogue out of the matmul's group, a second pass over an f32 intermediate in HBM.
/// Moving a reshape of a parameter earlier changes no value.
fn hoist_parameter_reshapes(func: &mut Function) {
    let mut hoisted: cranelift_entity::SecondaryMap<Value, bool> =
        cranelift_entity::SecondaryMap::new();
    for (_, v) in &func.params {
        hoisted[*v] = true;
    }
    let (mut front, mut rest) = (Vec::new(), Vec::new());
    for &inst in &func.layout {
        let data = &func.insts[inst];
        if data.op == TOp::Reshape && hoisted[data.args[0]] {
            hoisted[data.result] = true;
            front.push(inst);
        } else {
            rest.push(inst);
        }
    }
    front.extend(rest);
    func.layout = front;
}

/// Moves the last `reshape` of a 2-D convolution's expansion (`[N, O, OH * OW]` to
/// `[N, O, OH, OW]`) past the elementwise chain that reads it (bias, activation, residual
/// add, cast), so that the chain runs on the matmul's own shape and `fusion` makes it the
/// matmul's epilogue, computed on the PSUM tiles, instead of a second pass over an f32
/// intermediate in HBM. Exact: a row-major reshape of a dense tensor moves no value, and
/// an elementwise operation commutes with it. A chain member's other operand is a rank-0
/// constant, a tensor of the full 4-D shape (reshaped too, a free view) or one that
/// broadcasts along both spatial axes (`[.., O, 1, 1]`, reshaped to `[.., O, 1]`); the
/// chain stops at a value with more than one use, a result of the kernel, or anything
/// else, where the reshape is put back.
fn sink_reshapes(func: &mut Function, reshapes: &[Inst]) {
    let mut uses: cranelift_entity::SecondaryMap<Value, usize> =
        cranelift_entity::SecondaryMap::new();
    for &i in &func.layout {
        for &a in &func.insts[i].args {
            uses[a] += 1;
        }
    }
    for &r in &func.results {
        uses[r] += 2;
    }
    // Values whose 4-D form is not computed yet: value -> its 3-D form.
    let mut pending: cranelift_entity::SecondaryMap<Value, Option<Value>> =
        cranelift_entity::SecondaryMap::new();
    let old = std::mem::take(&mut func.layout);
    for inst in old {
        if reshapes.contains(&inst) {
            let data = &func.insts[inst];
            if uses[data.result] == 1 {
                pending[data.result] = Some(data.args[0]);
                continue;
            }
        }
        if let Some((a, m)) = sinkable(func, inst, &pending, &uses) {
            let span = func.spans[inst];
            let m_shape = func.ty(m).shape.clone();
            let full = func.ty(a).shape.clone();
            let args = func.insts[inst].args.clone();
            let mut new_args = Vec::new();
            for v in args {
                let nv = if v == a {
                    m
                } else {
                    let t = func.ty(v).clone();
                    let target = if t.shape.is_empty() {
                        None
                    } else if t.shape == full {
                        Some(m_shape.clone())
                    } else {
                        let mut s = t.shape[..t.shape.len() - 2].to_vec();
                        s.push(1);
                        Some(s)
                    };
                    match target {
                        None => v,
                        Some(shape) => {
                            let ty = TensorType {
                                dtype: t.dtype,
                                shape,
                            };
                            emit(func, TOp::Reshape, &[v], ty, span)
                        }
                    }
                };
                new_args.push(nv);
            }
            let old_result = func.insts[inst].result;
            let ty = TensorType {
                dtype: func.ty(old_result).dtype,
                shape: m_shape,
            };
            let new_result = func.values.push(crate::ir::ValueData {
                ty,
                def: crate::ir::ValueDef::Inst(inst),
            });
            let data = &mut func.insts[inst];
            data.args = new_args.into_iter().collect();
            data.result = new_result;
            func.layout.push(inst);
            pending[old_result] = Some(new_result);
            continue;
        }
        // Anything else puts back the 4-D form of the pending values it reads.
        let args = func.insts[inst].args.clone();
        for a in args {
            materialise(func, a, &mut pending, func.spans[inst]);
        }
        func.layout.push(inst);
    }
    let results = func.results.clone();
    for r in results {
        let span = func.spans.values().next().copied().unwrap_or_default();
        materialise(func, r, &mut pending, span);
    }
}

/// The pending operand of `inst` and its 3-D form, when `inst` is an elementwise operation
/// the reshape may move past.
fn sinkable(
    func: &Function,
    inst: Inst,
    pending: &cranelift_entity::SecondaryMap<Value, Option<Value>>,
    uses: &cranelift_entity::SecondaryMap<Value, usize>,
) -> Option<(Value, Value)> {
    let data = &func.insts[inst];
    if !matches!(data.op, TOp::Unary(_) | TOp::Binary(_) | TOp::Cast) {
        return None;
    }
    let (a, m) = data.args.iter().find_map(|&a| pending[a].map(|m| (a, m)))?;
    let full = &func.ty(a).shape;
    if uses[a] != 1 || &func.ty(data.result).shape != full || full.len() != 4 {
        return None;
    }
    let ok = data.args.iter().all(|&v| {
        let s = &func.ty(v).shape;
        v == a
            || s.is_empty()
            || s == full
            || (s.len() >= 2 && s[s.len() - 2..] == [1, 1] && pending[v].is_none())
    });
    (ok && data.args.iter().filter(|&&v| v == a).count() == 1).then_some((a, m))
}

/// Computes the 4-D form of `v` from its 3-D one, if it is pending: a `reshape` whose
/// result is `v` itself, so every use of `v` stays valid.
fn materialise(
    func: &mut Function,
    v: Value,
    pending: &mut cranelift_entity::SecondaryMap<Value, Option<Value>>,
    span: Span,
) {
    let Some(m) = pending[v].take() else { return };
    let inst = func.insts.push(crate::ir::InstData {
        op: TOp::Reshape,
        args: [m].into_iter().collect(),
        result: v,
    });
    func.values[v].def = crate::ir::ValueDef::Inst(inst);
    func.spans[inst] = span;
    func.layout.push(inst);
}

/// Appends a new instruction to the layout (as `Function::push`).
fn emit(func: &mut Function, op: TOp, args: &[Value], ty: TensorType, span: Span) -> Value {
    func.push(op, args, ty, span)
}

/// The shape and dtype of a new value.
fn ty(dtype: Dtype, shape: Vec<u64>) -> TensorType {
    TensorType { dtype, shape }
}

/// A slice keeping `axes` (start, step) with the result `shape`.
fn slice(func: &mut Function, v: Value, axes: &[(u64, i64)], shape: Vec<u64>, span: Span) -> Value {
    let d = func.ty(v).dtype;
    let axes = axes
        .iter()
        .map(|&(start, step)| SliceAxis {
            start,
            step,
            keep: true,
        })
        .collect();
    func.push(TOp::Slice(axes), &[v], ty(d, shape), span)
}

/// What `expand` records of a convolution.
enum Expanded {
    Implicit(Implicit),
    Depthwise(Depthwise),
}

/// Turns `inst` (a conv) into the last instruction of its expansion, the ones before it
/// appended to the layout; returns the matmul of a convolution of one group, or the
/// depthwise convolution's record.
fn expand(func: &mut Function, inst: Inst, a: &ConvAttrs) -> Result<Option<Expanded>, String> {
    let span = func.spans[inst];
    let (x, w) = (func.insts[inst].args[0], func.insts[inst].args[1]);
    let xs = func.ty(x).shape.clone();
    let ws = func.ty(w).shape.clone();
    let out = func.ty(func.insts[inst].result).shape.clone();
    let g = a.groups;
    let (c, o) = (xs[1], ws[0]);
    let (cg, og) = (c / g, o / g);
    if g > 1 && cg == 1 && og == 1 {
        let out = depthwise(func, inst, a, x, w, &out, span)?;
        return Ok(Some(Expanded::Depthwise(Depthwise {
            out,
            x,
            w,
            attrs: a.clone(),
        })));
    }
    if g > MAX_GEMM_GROUPS {
        return Err(format!(
            "{inst}: a conv of {g} groups reached the conv pass"
        ));
    }
    let spatial = xs.len() - 2;
    let positions: u64 = out[2..].iter().product();
    let xp = padded(func, x, a, span);
    let mut parts = Vec::new();
    for grp in 0..g {
        let (xg, wg) = if g == 1 {
            (xp, w)
        } else {
            let mut xaxes = vec![(0, 1), (grp * cg, 1)];
            xaxes.extend((0..spatial).map(|_| (0, 1)));
            let mut xshape = func.ty(xp).shape.clone();
            xshape[1] = cg;
            let xg = slice(func, xp, &xaxes, xshape, span);
            let mut waxes = vec![(grp * og, 1), (0, 1)];
            waxes.extend((0..spatial).map(|_| (0, 1)));
            let mut wshape = ws.clone();
            wshape[0] = og;
            (xg, slice(func, w, &waxes, wshape, span))
        };
        // One window slice per tap, in row-major order of the taps.
        let taps = windows(func, xg, a, &ws[2..], &out, span);
        let k = taps.len() as u64 * cg;
        let dx = func.ty(xg).dtype;
        let cat = if taps.len() == 1 {
            taps[0]
        } else {
            let mut shape = out.clone();
            shape[1] = k;
            func.push(TOp::Concat(1), &taps, ty(dx, shape), span)
        };
        let cols = if spatial == 1 {
            cat
        } else {
            let shape = vec![out[0], k, positions];
            func.push(TOp::Reshape, &[cat], ty(dx, shape), span)
        };
        // The weights as `[O_g, taps * C_g]`, `k = tap * C_g + c`.
        let dw = func.ty(wg).dtype;
        let kshape = &ws[2..];
        let w2 = if kshape.iter().all(|&e| e == 1) {
            func.push(TOp::Reshape, &[wg], ty(dw, vec![og, k]), span)
        } else {
            let mut perm = vec![0];
            perm.extend(2..2 + spatial);
            perm.push(1);
            let mut tshape = vec![og];
            tshape.extend_from_slice(kshape);
            tshape.push(cg);
            let t = func.push(TOp::Transpose(perm), &[wg], ty(dw, tshape), span);
            func.push(TOp::Reshape, &[t], ty(dw, vec![og, k]), span)
        };
        parts.push((w2, cols));
    }
    let mshape = vec![out[0], o, positions];
    let last_is_matmul = spatial == 1 && g == 1;
    let record = |matmul| Implicit {
        matmul,
        x,
        w,
        attrs: a.clone(),
    };
    if last_is_matmul {
        let (w2, cols) = parts[0];
        set(func, inst, TOp::Matmul, &[w2, cols]);
        return Ok(Some(Expanded::Implicit(record(func.insts[inst].result))));
    }
    let mut results = Vec::new();
    for (w2, cols) in parts {
        let shape = vec![out[0], og, positions];
        results.push(func.push(TOp::Matmul, &[w2, cols], ty(Dtype::F32, shape), span));
    }
    if spatial == 1 {
        set(func, inst, TOp::Concat(1), &results);
        return Ok(None);
    }
    let m = if results.len() == 1 {
        results[0]
    } else {
        func.push(TOp::Concat(1), &results, ty(Dtype::F32, mshape), span)
    };
    set(func, inst, TOp::Reshape, &[m]);
    Ok((g == 1).then(|| Expanded::Implicit(record(m))))
}

/// Replaces the operation and arguments of `inst`, keeping its result.
fn set(func: &mut Function, inst: Inst, op: TOp, args: &[Value]) {
    let data = &mut func.insts[inst];
    data.op = op;
    data.args = args.iter().copied().collect();
}

/// `x` with its spatial axes zero-padded (`x` itself without padding).
fn padded(func: &mut Function, x: Value, a: &ConvAttrs, span: Span) -> Value {
    if a.padding.iter().all(|&p| p == 0) {
        return x;
    }
    let xt = func.ty(x).clone();
    let mut widths = vec![0, 0];
    widths.extend_from_slice(&a.padding);
    let shape = xt
        .shape
        .iter()
        .zip(&widths)
        .map(|(d, p)| d + 2 * p)
        .collect();
    let op = TOp::Pad {
        before: widths.clone(),
        after: widths,
        value: 0.0,
    };
    func.push(op, &[x], ty(xt.dtype, shape), span)
}

/// The window slices of the padded input `xp` (`[N, C_g, padded..]`), one per tap in
/// row-major order, each `[N, C_g, out spatial..]`; the whole input where a slice would
/// take all of it.
fn windows(
    func: &mut Function,
    xp: Value,
    a: &ConvAttrs,
    kshape: &[u64],
    out: &[u64],
    span: Span,
) -> Vec<Value> {
    let xs = func.ty(xp).shape.clone();
    let spatial = kshape.len();
    let mut shape = xs.clone();
    shape[2..].copy_from_slice(&out[2..]);
    let taps: Vec<Vec<u64>> = match spatial {
        1 => (0..kshape[0]).map(|i| vec![i]).collect(),
        _ => (0..kshape[0])
            .flat_map(|i| (0..kshape[1]).map(move |j| vec![i, j]))
            .collect(),
    };
    let mut out_values = Vec::new();
    for tap in taps {
        let mut axes = vec![(0, 1), (0, 1)];
        for (s, &t) in tap.iter().enumerate() {
            axes.push((t * a.dilation[s], a.stride[s] as i64));
        }
        if shape == xs && axes.iter().all(|&(start, step)| start == 0 && step == 1) {
            out_values.push(xp);
        } else {
            out_values.push(slice(func, xp, &axes, shape.clone(), span));
        }
    }
    out_values
}

/// A depthwise convolution (`groups = C = O`) as a multiply-add chain over the taps in f32:
/// `acc = (x_0 w_0 + 0) + x_1 w_1 + ..`, where `x_t` is the tap's window slice and `w_t`
/// its weight per channel, broadcast over the batch and the positions. The last sum is
/// reshaped to `[N, C, positions]` (a free view) and the convolution's own instruction
/// reshapes that back, so that the elementwise chain after it runs on `[N, C, positions]`
/// once `sink_reshapes` has moved that reshape past it (in 1-D the conv's instruction is
/// the one reshape, to the same shape); returns the `[N, C, positions]` value.
fn depthwise(
    func: &mut Function,
    inst: Inst,
    a: &ConvAttrs,
    x: Value,
    w: Value,
    out: &[u64],
    span: Span,
) -> Result<Value, String> {
    let ws = func.ty(w).shape.clone();
    let spatial = ws.len() - 2;
    let c = ws[0];
    let xp = padded(func, x, a, span);
    let taps = windows(func, xp, a, &ws[2..], out, span);
    let dw = func.ty(w).dtype;
    let f32 = |shape: &[u64]| ty(Dtype::F32, shape.to_vec());
    // w as [C, taps] in f32, then one [1, C, 1..] column per tap.
    let ntaps = taps.len() as u64;
    let w2 = func.push(TOp::Reshape, &[w], ty(dw, vec![c, ntaps]), span);
    let w2 = if dw == Dtype::F32 {
        w2
    } else {
        func.push(TOp::Cast, &[w2], f32(&[c, ntaps]), span)
    };
    let mut wshape = vec![1, c];
    wshape.extend(std::iter::repeat_n(1, spatial));
    let mut acc = None;
    let zero = func.push(TOp::Const(0.0), &[], f32(&[]), span);
    for (t, xt) in taps.into_iter().enumerate() {
        let wt = slice(func, w2, &[(0, 1), (t as u64, 1)], vec![c, 1], span);
        let wt = func.push(TOp::Reshape, &[wt], f32(&wshape), span);
        let xt = if func.ty(xt).dtype == Dtype::F32 {
            xt
        } else {
            func.push(TOp::Cast, &[xt], f32(out), span)
        };
        let p = func.push(
            TOp::Binary(crate::ir::BinaryOp::Mul),
            &[xt, wt],
            f32(out),
            span,
        );
        let prev = acc.unwrap_or(zero);
        acc = Some(func.push(
            TOp::Binary(crate::ir::BinaryOp::Add),
            &[prev, p],
            f32(out),
            span,
        ));
    }
    let acc = acc.ok_or("a depthwise convolution without taps")?;
    if spatial == 1 || func.results.contains(&func.insts[inst].result) {
        // Already `[N, C, L]`: the conv's own instruction is that reshape. A result of the
        // kernel keeps its shape (no epilogue to run on `[N, C, positions]`), so the chain
        // writes the output directly.
        set(func, inst, TOp::Reshape, &[acc]);
        return Ok(func.insts[inst].result);
    }
    let positions: u64 = out[2..].iter().product();
    let flat = func.push(TOp::Reshape, &[acc], f32(&[out[0], c, positions]), span);
    // The conv's own instruction gives the result, so its uses stay.
    set(func, inst, TOp::Reshape, &[flat]);
    Ok(flat)
}
