//! Error bounds carried alongside the reference's values, for `run --check`.
//!
//! Compiled code may differ from the reference in what docs/numerics.md allows: it may keep
//! an intermediate wider than the language rounds it, sum in another order, and round
//! where an online softmax rescales. For every value the reference computes, this module
//! computes a bound `b >= 0` per element such that any computation that differs only in
//! those ways gives a value within `b` of the reference's. `--check` then judges each
//! output element against its own bound, so a cancellation near zero (a sum of large terms
//! with a small result) gets the absolute slack its terms imply, and a real deviation is
//! caught wherever the bound is tight.
//!
//! The rules, per operation (docs/numerics.md repeats them): inputs and constants are
//! exact; `+ -` add the operands' bounds; `*` and `/` and every function propagate by their
//! own condition (`|a| bb + |b| ba + ba bb` for a product, the derivative's largest value
//! over the interval for the functions); a sum or a matmul adds its terms' bounds and
//! `2 n u` times the sum of the terms' absolute values (any order of `n` f32 additions on
//! either side, `u = 2^-24`); max, min, layout operations and masks move bounds with their
//! elements. Every operation whose result the language rounds adds one step of the result
//! dtype's grid at the magnitude reached (the reference rounds, compiled code may not, or
//! may round a slightly different value), and one step of f32's (compiled code may fuse
//! two f32 operations). A bound is computed in f64 and stored in f32 rounded up; where a
//! condition is unbounded (a division by an interval that holds zero, an FP8 value that
//! saturates) the bound is infinite.

use super::{broadcast_strides, for_each_index, for_each_index_in, par, HostTensor};
use crate::ir::{BinaryOp, Function, ReduceFn, TOp, UnaryFn, Value, ValueDef};
use isa::Dtype;
use runtime::numeric;

/// The unit roundoff of f32.
pub(super) const U32: f64 = 1.0 / 16_777_216.0;

/// Stores a bound in f32, never below the f64 value.
fn up(x: f64) -> f32 {
    if x.is_nan() {
        return f32::INFINITY;
    }
    let f = x as f32;
    if (f as f64) < x {
        f.next_up()
    } else {
        f
    }
}

/// (stored mantissa bits, smallest normal exponent, largest finite value) of a dtype.
fn format(d: Dtype) -> (i32, i32, f64) {
    match d {
        Dtype::F32 => (23, -126, f32::MAX as f64),
        Dtype::Bf16 => (7, -126, 3.389_531_389_251_535_5e38),
        Dtype::F16 => (10, -14, 65504.0),
        Dtype::F8E4M3 => (3, -6, 448.0),
        Dtype::F8E5M2 => (2, -14, 57344.0),
        // Integers and booleans are exact (their bounds are computed apart, in `v2_bound`);
        // as a "format" they have no fraction bits.
        Dtype::I32 => (0, 0, f64::from(i32::MAX)),
        Dtype::Bool => (0, 0, 1.0),
    }
}

/// The spacing of `d`'s values at magnitude `m` (subnormal spacing below the normal
/// range). Beyond the largest finite value an FP8 format saturates, so a value kept wider
/// by compiled code may be anywhere: infinite. The IEEE formats overflow to infinity,
/// which `--check` compares exactly, so their last spacing stands.
pub fn ulp(d: Dtype, m: f64) -> f64 {
    let (mant, emin, max) = format(d);
    if !m.is_finite() {
        return f64::INFINITY;
    }
    if m > max && matches!(d, Dtype::F8E4M3 | Dtype::F8E5M2) {
        return f64::INFINITY;
    }
    let m = m.min(max);
    let e = if m > 0.0 {
        (floor_log2(m) as i32).max(emin)
    } else {
        emin
    };
    pow2(e - mant)
}

/// `m.log2().floor()` for `m > 0`, the same value, from the exponent bits where that value
/// is certain: for `m` in `[2^e, 2^(e+1))`, `log2` (faithfully rounded, monotonic) returns
/// `e` or more and less than `e + 1` unless `m` lies within `2^-36` of `2^(e+1)`, relatively;
/// there, at exact powers of two, and outside the normal range, `log2` itself decides.
#[inline]
fn floor_log2(m: f64) -> f64 {
    let bits = m.to_bits();
    let biased = (bits >> 52) & 0x7FF;
    let frac = bits & ((1u64 << 52) - 1);
    if biased == 0 || biased == 0x7FF || frac == 0 || frac >= (1u64 << 52) - (1u64 << 16) {
        return m.log2().floor();
    }
    (biased as i64 - 1023) as f64
}

/// `2f64.powi(n)`, exact, from the bits when `2^n` is a normal f64.
#[inline]
fn pow2(n: i32) -> f64 {
    if (-1022..=1023).contains(&n) {
        f64::from_bits(((n + 1023) as u64) << 52)
    } else {
        2f64.powi(n)
    }
}

/// Whether every value of `from` is exact in `to`.
fn widens(from: Dtype, to: Dtype) -> bool {
    let (fm, fe, fmax) = format(from);
    let (tm, te, tmax) = format(to);
    fm <= tm && fe - fm >= te - tm && fmax <= tmax
}

/// The largest slope of a function on `[x - b, x + b]`, bounded simply: enough for the
/// smooth functions whose derivative is bounded everywhere.
fn lipschitz(u: UnaryFn) -> Option<f64> {
    Some(match u {
        UnaryFn::Neg | UnaryFn::Abs | UnaryFn::Relu | UnaryFn::Tanh => 1.0,
        // |sin'|, |cos'| <= 1, softplus' = sigmoid < 1, erf' peaks at 2 / sqrt(pi) = 1.1284.
        UnaryFn::Sin | UnaryFn::Cos | UnaryFn::Softplus => 1.0,
        UnaryFn::Erf => 1.13,
        UnaryFn::Sigmoid => 0.25,
        // silu' peaks at 1.0998, gelu' at 1.129 and gelu_tanh' at 1.13.
        UnaryFn::Silu => 1.1,
        UnaryFn::Gelu | UnaryFn::GeluTanh => 1.2,
        _ => return None,
    })
}

/// How far `u(y)` may be from `u(x)` for `|y - x| <= b` (before rounding).
fn unary_prop(u: UnaryFn, x: f64, b: f64) -> f64 {
    if b == 0.0 {
        return 0.0;
    }
    if let Some(l) = lipschitz(u) {
        return l * b;
    }
    match u {
        UnaryFn::Exp => x.exp() * b.exp_m1(),
        UnaryFn::Log if x - b > 0.0 => -(-b / x).ln_1p(),
        UnaryFn::Sqrt if x - b >= 0.0 => x.sqrt() - (x - b).sqrt(),
        UnaryFn::Sqrt => b.sqrt() + x.max(0.0).sqrt(),
        UnaryFn::Rsqrt if x - b > 0.0 => 1.0 / (x - b).sqrt() - 1.0 / x.sqrt(),
        UnaryFn::Reciprocal if x.abs() > b => b / (x.abs() * (x.abs() - b)),
        UnaryFn::Square => 2.0 * x.abs() * b + b * b,
        // The step functions jump where an integer (or zero) lies within the interval: the
        // largest change is between the values at the interval's ends.
        UnaryFn::Floor => (x + b).floor() - (x - b).floor(),
        UnaryFn::Ceil => (x + b).ceil() - (x - b).ceil(),
        UnaryFn::Round => (x + b).round_ties_even() - (x - b).round_ties_even(),
        UnaryFn::Sign if x.abs() > b => 0.0,
        UnaryFn::Sign => 2.0,
        _ => f64::INFINITY,
    }
}

/// The propagated bound that says an element is an infinity for every operand value within
/// the operands' bounds: an exact infinity (a `-inf` fill, an infinite input) that a finite
/// value cannot cancel. Compiled code computes the same infinity, so the result is exact
/// whatever its dtype's rounding; `op_bound` finishes it as 0. Without it, the rounding
/// term of an infinite result was infinite, and so was every bound it reached (a masked
/// score's `exp` gave every probability of its row, and every output after attention, an
/// infinite allowed error: `--check` would have passed any value there).
const EXACT_INFINITY: f64 = -1.0;

/// Whether `a op b` is the same infinity for all operands within `ba`, `bb`.
fn exact_infinity(op: BinaryOp, a: f64, b: f64, ba: f64, bb: f64) -> bool {
    let inf = |x: f64, bx: f64| x.is_infinite() && bx == 0.0;
    let finite = |x: f64, bx: f64| (x.abs() + bx).is_finite();
    let nonzero = |x: f64, bx: f64| finite(x, bx) && x.abs() > bx;
    match op {
        BinaryOp::Add => {
            (inf(a, ba) && (finite(b, bb) || (inf(b, bb) && a == b)))
                || (inf(b, bb) && finite(a, ba))
        }
        BinaryOp::Sub => {
            (inf(a, ba) && (finite(b, bb) || (inf(b, bb) && a == -b)))
                || (inf(b, bb) && finite(a, ba))
        }
        BinaryOp::Mul => (inf(a, ba) && nonzero(b, bb)) || (inf(b, bb) && nonzero(a, ba)),
        BinaryOp::Div => inf(a, ba) && nonzero(b, bb),
        BinaryOp::Maximum => (a == f64::INFINITY && ba == 0.0) || (b == f64::INFINITY && bb == 0.0),
        BinaryOp::Minimum => {
            (a == f64::NEG_INFINITY && ba == 0.0) || (b == f64::NEG_INFINITY && bb == 0.0)
        }
        _ => false,
    }
}

/// How far `a op b` may be from the reference's for operands within `ba`, `bb`.
fn binary_prop(op: BinaryOp, a: f64, b: f64, ba: f64, bb: f64) -> f64 {
    if ba == 0.0 && bb == 0.0 {
        return 0.0;
    }
    match op {
        BinaryOp::Add | BinaryOp::Sub => ba + bb,
        BinaryOp::Mul => a.abs() * bb + b.abs() * ba + ba * bb,
        BinaryOp::Div => {
            if b.abs() > bb {
                (ba * b.abs() + a.abs() * bb) / (b.abs() * (b.abs() - bb))
            } else {
                f64::INFINITY
            }
        }
        BinaryOp::Maximum | BinaryOp::Minimum => ba.max(bb),
        BinaryOp::Pow => pow_prop(a, b, ba, bb),
        // A truth value is uncertain (bound 1) where the operands' intervals touch.
        BinaryOp::Lt | BinaryOp::Le | BinaryOp::Gt | BinaryOp::Ge | BinaryOp::Eq | BinaryOp::Ne => {
            if (a - b).abs() <= ba + bb || a.is_nan() || b.is_nan() {
                1.0
            } else {
                0.0
            }
        }
        BinaryOp::And | BinaryOp::Or => ba.max(bb),
    }
}

/// How far `a' / b'` may be from `a / b` for operands within `ba`, `bb` when every allowed
/// `b'` (and `b`) is at least `lo > 0`: `abs(a' b - a b') / (abs(b) abs(b'))` with
/// `abs(b') >= max(abs(b) - bb, lo)`, never larger than [`binary_prop`]'s and finite
/// wherever the operands' bounds are.
fn divide_prop(a: f64, b: f64, ba: f64, bb: f64, lo: f64) -> f64 {
    if ba == 0.0 && bb == 0.0 {
        return 0.0;
    }
    if b.abs() < lo {
        // Not a value the facts allow: nothing is assumed.
        return binary_prop(BinaryOp::Div, a, b, ba, bb);
    }
    (ba * b.abs() + a.abs() * bb) / (b.abs() * (b.abs() - bb).max(lo))
}

/// How far `pow(a', b')` may be from `pow(a, b)` for `|a' - a| <= ba`, `|b' - b| <= bb`.
/// For a positive base `pow = exp(b ln a)` and `b ln a` is bilinear in `(ln a, b)`, so
/// over the box it takes its extremes at the corners, and so does the power: the bound is
/// the largest change to a corner. A base interval that reaches zero or below (where the
/// power jumps, or is NaN off the integers) gives an infinite bound.
fn pow_prop(a: f64, b: f64, ba: f64, bb: f64) -> f64 {
    if a - ba <= 0.0 {
        return f64::INFINITY;
    }
    let at = a.powf(b);
    let mut worst: f64 = 0.0;
    for x in [a - ba, a + ba] {
        for y in [b - bb, b + bb] {
            worst = worst.max((x.powf(y) - at).abs());
        }
    }
    // The f64 evaluation of the corners is itself rounded: a relative 1e-15 covers it.
    worst + 1e-15 * at.abs()
}

/// How the language rounds the result of an operation, for the bound.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Rounding {
    /// The result is exact (layout, masks, negation, max/min, widening casts, constants).
    Exact,
    /// An operation whose result dtype is implicit: computed in f32 and rounded to it.
    /// Compiled code may keep the value wider, or compute the f32 value another way (a
    /// fused scale and bias), so one step of f32's grid and one of the dtype's are allowed.
    Implicit,
    /// An explicit `as` to a narrower dtype. Compiled code performs it: if every value
    /// within the operand's bound rounds to the reference's result, the result is exact;
    /// else one step of the dtype's grid is allowed.
    Cast,
    /// An explicit `as` that the compilation declared it does not reproduce (flash
    /// attention rounds the unnormalised exponentials instead of the probabilities):
    /// one and a half steps of the dtype's grid, always (docs/numerics.md, items 3 and 4:
    /// half a step of the reference's own rounding, and less than one of the compiled
    /// rounding, which is half a step at a magnitude up to twice as large).
    RelaxedCast,
}

fn rounding_of(op: &TOp, from: Dtype, to: Dtype, relaxed: bool) -> Rounding {
    match op {
        TOp::Const(_) | TOp::Tril { .. } => Rounding::Exact,
        _ if op.is_data_movement() => Rounding::Exact,
        TOp::Unary(
            UnaryFn::Neg
            | UnaryFn::Abs
            | UnaryFn::Relu
            | UnaryFn::Floor
            | UnaryFn::Ceil
            | UnaryFn::Round
            | UnaryFn::Sign,
        ) => Rounding::Exact,
        TOp::Binary(BinaryOp::Maximum | BinaryOp::Minimum) => Rounding::Exact,
        TOp::Pool(p) if p.kind == crate::ir::PoolKind::Max => Rounding::Exact,
        TOp::Reduce {
            func: ReduceFn::Max | ReduceFn::Min,
            ..
        } => Rounding::Exact,
        TOp::Cast if widens(from, to) => Rounding::Exact,
        TOp::Cast if relaxed => Rounding::RelaxedCast,
        TOp::Cast => Rounding::Cast,
        _ => Rounding::Implicit,
    }
}

/// The allowance for an implicit rounding of a result of dtype `d` at magnitude `m`.
pub(super) fn implicit(d: Dtype, m: f64) -> f64 {
    ulp(d, m)
        + if d == Dtype::F32 {
            0.0
        } else {
            ulp(Dtype::F32, m)
        }
}

/// What every allowed computation of a value gives, known from the program's structure
/// ([`facts`]): an interval that holds the reference's value and every value compiled code
/// may compute in its place, whatever the operands' bounds.
///
/// A softmax is the case that needs it: with `d = s - max(s)` along an axis, every allowed
/// computation has `d <= 0` (it subtracts its own maximum of its own scores, and rounding
/// is monotone) with an exact 0 in each row, so `exp(d)` lies in `[0, 1]` with an exact 1
/// in each row, its sum along that axis is at least 1, and their quotient lies in
/// `[0, 1]`. Propagation alone cannot see this: where the scores' bound is large, the
/// bound of `exp(d)` overflows, the sum's bound exceeds the sum, and the division's bound
/// is infinite (docs/numerics.md, "Bounds through a softmax").
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Range {
    pub lo: f64,
    pub hi: f64,
    /// Each row along this axis holds an element that is exactly 0 in every allowed
    /// computation (the position may differ).
    pub zero_along: Option<usize>,
    /// Each row along this axis holds an element that is exactly 1.
    pub one_along: Option<usize>,
}

/// What the bound of one operation's result may use beside its operands' bounds.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Facts {
    /// The result's [`Range`]: its bound is at most `max(v - lo, hi - v)`.
    pub range: Option<Range>,
    /// For a division, a positive lower bound of the divisor in every allowed computation:
    /// `abs(b') >= max(abs(b) - bb, lo)`.
    pub divisor_lo: Option<f64>,
}

/// The [`Facts`] of the result `v` of an instruction of `func`; `relaxed` lists the casts
/// whose rounding the compilation does not reproduce (their results get no range: the
/// value they stand for may lie a step and a half outside it).
pub fn facts(func: &Function, v: Value, relaxed: &[Value]) -> Facts {
    let range = range_of(func, v, relaxed, 0);
    let divisor_lo = match func.values[v].def {
        ValueDef::Inst(i) if func.insts[i].op == TOp::Binary(BinaryOp::Div) => {
            range_of(func, func.insts[i].args[1], relaxed, 0)
                .map(|r| r.lo)
                .filter(|lo| *lo > 0.0)
        }
        _ => None,
    };
    Facts { range, divisor_lo }
}

/// The [`Range`] of `v`, from the instructions that define it (at most a few levels up).
fn range_of(func: &Function, v: Value, relaxed: &[Value], depth: usize) -> Option<Range> {
    let ValueDef::Inst(inst) = func.values[v].def else {
        return None;
    };
    let ty = func.ty(v);
    if depth > 16 || !ty.dtype.is_float() || relaxed.contains(&v) {
        return None;
    }
    let data = &func.insts[inst];
    let arg = |i: usize| range_of(func, data.args[i], relaxed, depth + 1);
    let plain = |lo: f64, hi: f64| Range {
        lo,
        hi,
        zero_along: None,
        one_along: None,
    };
    match &data.op {
        // `s - max(s, axis, keepdims=true)`: every allowed computation subtracts the largest
        // of its own `s` from each, so it is at most 0, and exactly 0 at that element.
        TOp::Binary(BinaryOp::Sub) => {
            let ValueDef::Inst(m) = func.values[data.args[1]].def else {
                return None;
            };
            let m = &func.insts[m];
            match m.op {
                TOp::Reduce {
                    func: ReduceFn::Max,
                    axis,
                    keepdims: true,
                } if m.args[0] == data.args[0] => Some(Range {
                    lo: f64::NEG_INFINITY,
                    hi: 0.0,
                    zero_along: Some(axis),
                    one_along: None,
                }),
                _ => None,
            }
        }
        // `exp` is increasing and `exp(0) = 1` exactly; rounding to any float dtype keeps
        // `[0, 1]` (both ends are values of every dtype).
        TOp::Unary(UnaryFn::Exp) => {
            let r = arg(0)?;
            (r.hi <= 0.0).then_some(Range {
                lo: 0.0,
                hi: 1.0,
                zero_along: None,
                one_along: r.zero_along,
            })
        }
        // Rounding is monotone: a cast keeps a range whose ends are values of the dtype
        // (and so an exact 0 or 1).
        TOp::Cast => {
            let r = arg(0)?;
            let keeps = |x: f64| !x.is_finite() || numeric::round_f64(ty.dtype, x) as f64 == x;
            (keeps(r.lo) && keeps(r.hi)).then_some(r)
        }
        // A sum of non-negative terms, one of them exactly 1 in each row, is at least 1:
        // every partial sum, rounded in any order, is at least the largest term added so far.
        TOp::Reduce {
            func: ReduceFn::Sum,
            axis,
            ..
        } => {
            let r = arg(0)?;
            if r.lo < 0.0 {
                return None;
            }
            let lo = if r.one_along == Some(*axis) { 1.0 } else { 0.0 };
            Some(plain(lo, f64::INFINITY))
        }
        // A non-negative value over one at least `lo > 0` lies in `[0, hi / lo]` (and the
        // rounded quotient too, when `hi / lo` is a value of the dtype).
        TOp::Binary(BinaryOp::Div) => {
            let (a, b) = (arg(0)?, arg(1)?);
            if a.lo < 0.0 || b.lo <= 0.0 || !a.hi.is_finite() {
                return None;
            }
            let hi = a.hi / b.lo;
            (numeric::round_f64(ty.dtype, hi) as f64 == hi).then_some(plain(0.0, hi))
        }
        _ => None,
    }
}

/// The bound of the result `out` of `op`, from its arguments and their bounds. `relaxed`:
/// the compilation does not reproduce this cast's rounding (see [`Rounding::RelaxedCast`]);
/// `facts`: what the program's structure says of the result ([`facts`]).
pub fn op_bound(
    op: &TOp,
    args: &[&HostTensor],
    bounds: &[&[f32]],
    out: &HostTensor,
    relaxed: bool,
    facts: Facts,
) -> Vec<f32> {
    if let Some(b) = super::scan::bound(op, args, bounds, out) {
        return b;
    }
    if let Some(b) = v2_bound(op, args, bounds, out) {
        return b;
    }
    let n = out.data.len();
    // Moving exact values gives exact values: no copies of the operand and its bound (a
    // transposed weight would otherwise cost five times its f32 size in transient memory).
    let moves = matches!(
        op,
        TOp::Transpose(_)
            | TOp::Reshape
            | TOp::Tril { .. }
            | TOp::Slice(_)
            | TOp::Concat(_)
            | TOp::Pad { .. }
            | TOp::BroadcastTo
    );
    if moves && bounds.iter().all(|b| b.iter().all(|&e| e == 0.0)) {
        return vec![0.0; n];
    }
    let shape = &out.shape;
    // What each element's propagated bound comes from; `fill` computes it for a range of
    // elements at a time, so that no f64 vector of the whole result is ever made.
    enum Source {
        Zero,
        /// Computed from the operands element by element (unary, cast, binary).
        Direct,
        /// A convolution's magnitudes `Q` and, with inexact operands, `P`.
        Products {
            k: f64,
            q: Vec<f32>,
            pm: Option<Vec<f32>>,
        },
        /// A matmul's magnitudes, chosen per output row by which operands are exact
        /// ([`MatmulMags`]).
        Matmul(MatmulMags),
        /// Moved operand bounds (layout operations, masks), exact in f32.
        Moved(Vec<f32>),
        /// Computed whole (reductions and pools, whose results are small or few).
        Whole(Vec<f64>),
    }
    let source = match op {
        TOp::Const(_) => Source::Zero,
        TOp::Unary(_) | TOp::Cast | TOp::Binary(_) => Source::Direct,
        TOp::Matmul => Source::Matmul(matmul_prop(args, bounds, shape)),
        TOp::Conv(attrs) => {
            let (k, q, pm) = conv_prop(attrs, args, bounds, shape);
            Source::Products { k, q, pm }
        }
        TOp::Reduce { func, axis, .. } => {
            let mut prop = vec![0f64; n];
            reduce_prop(*func, args[0], bounds[0], *axis, &mut prop);
            Source::Whole(prop)
        }
        TOp::Transpose(perm) => {
            Source::Moved(super::transpose(&as_tensor(args[0], bounds[0]), perm))
        }
        TOp::Reshape => Source::Moved(bounds[0].to_vec()),
        TOp::Tril { k, .. } => Source::Moved(super::tril(&as_tensor(args[0], bounds[0]), *k, 0.0)),
        // Data moves with its bound; the pad value is exact.
        TOp::Slice(_) | TOp::Concat(_) | TOp::Pad { .. } | TOp::BroadcastTo => {
            let moved: Vec<(&[u64], &[f32])> = args
                .iter()
                .zip(bounds)
                .map(|(a, b)| (a.shape.as_slice(), *b))
                .collect();
            Source::Moved(
                super::movement::move_elems(op, &moved, shape, 0.0).unwrap_or_else(|| vec![0.0; n]),
            )
        }
        TOp::Pool(p) => Source::Whole(super::pool::prop(p, args[0], bounds[0], shape)),
        TOp::Where
        | TOp::Arange
        | TOp::Take { .. }
        | TOp::ArgReduce { .. }
        | TOp::Cumsum { .. } => unreachable!("v2_bound and scan::bound handle {op:?}"),
    };
    let binary_strides = match op {
        TOp::Binary(_) => Some((
            broadcast_strides(&args[0].shape, shape),
            broadcast_strides(&args[1].shape, shape),
        )),
        _ => None,
    };
    // The propagated bounds of the elements `start..start + buf.len()`.
    let fill = |start: usize, buf: &mut [f64]| {
        let range = start..start + buf.len();
        match (&source, op) {
            (Source::Zero, _) => buf.fill(0.0),
            (Source::Direct, TOp::Unary(u)) => {
                for (p, i) in buf.iter_mut().zip(range) {
                    let (x, b) = (args[0].data[i] as f64, bounds[0][i] as f64);
                    // A function of an exact infinity is computed the same way everywhere.
                    *p = if x.is_infinite() && b == 0.0 && out.data[i].is_infinite() {
                        EXACT_INFINITY
                    } else {
                        unary_prop(*u, x, b)
                    };
                }
            }
            (Source::Direct, TOp::Cast) => {
                for (p, i) in buf.iter_mut().zip(range) {
                    *p = bounds[0][i] as f64;
                }
            }
            (Source::Direct, TOp::Binary(b)) => {
                let (sa, sb) = binary_strides
                    .as_ref()
                    .expect("strides of a binary operation");
                for_each_index_in(shape, [sa, sb], range, |i, [ia, ib]| {
                    let (x, y) = (args[0].data[ia] as f64, args[1].data[ib] as f64);
                    let (bx, by) = (bounds[0][ia] as f64, bounds[1][ib] as f64);
                    buf[i - start] = if exact_infinity(*b, x, y, bx, by) {
                        EXACT_INFINITY
                    } else if let (BinaryOp::Div, Some(lo)) = (b, facts.divisor_lo) {
                        divide_prop(x, y, bx, by, lo)
                    } else {
                        binary_prop(*b, x, y, bx, by)
                    };
                });
            }
            (Source::Direct, _) => unreachable!("only unary, cast and binary are direct"),
            (Source::Products { k, q, pm }, _) => match pm {
                None => {
                    for (p, q) in buf.iter_mut().zip(&q[range]) {
                        *p = 3.0 * k * U32 * *q as f64;
                    }
                }
                Some(pm) => {
                    for ((p, q), pm) in buf.iter_mut().zip(&q[range.clone()]).zip(&pm[range]) {
                        let (q, pm) = (*q as f64, *pm as f64);
                        *p = (pm - q).max(0.0) + 6.0 * k * U32 * pm;
                    }
                }
            },
            (Source::Matmul(m), _) => {
                for (p, i) in buf.iter_mut().zip(range) {
                    *p = m.prop(i);
                }
            }
            (Source::Moved(b), _) => {
                for (p, b) in buf.iter_mut().zip(&b[range]) {
                    *p = *b as f64;
                }
            }
            (Source::Whole(w), _) => buf.copy_from_slice(&w[range]),
        }
    };
    let from = args.first().map_or(out.dtype, |a| a.dtype);
    let d = out.dtype;
    let rounding = rounding_of(op, from, d, relaxed);
    // Each element's bound depends on that element alone: computed in parallel chunks, a
    // piece of the propagated bounds at a time.
    let finish = |i: usize, p: f64| -> f32 {
        if p == EXACT_INFINITY {
            return 0.0;
        }
        let v = out.data[i] as f64;
        let b = match rounding {
            Rounding::Exact => up(p),
            Rounding::Implicit => up(p + implicit(d, v.abs() + p)),
            Rounding::RelaxedCast => up(p + 1.5 * ulp(d, out.data[i].abs() as f64 + p)),
            Rounding::Cast => {
                let (v, x) = (out.data[i], args[0].data[i]);
                let (x, vv) = (x as f64, v as f64);
                let same = |y: f64| {
                    let r = numeric::round_f64(d, y) as f64;
                    r == vv || (r.is_nan() && vv.is_nan())
                };
                if p == 0.0 || (same(x - p) && same(x + p)) {
                    0.0
                } else {
                    up(p + ulp(d, v.abs() as f64 + p))
                }
            }
        };
        // Every allowed computation lies in the range, and so does the reference's value.
        match facts.range {
            Some(r) if r.lo.is_finite() && r.hi.is_finite() && (r.lo..=r.hi).contains(&v) => {
                b.min(up((v - r.lo).max(r.hi - v)))
            }
            _ => b,
        }
    };
    let mut result = vec![0f32; n];
    par::chunks(&mut result, |start, part| {
        let mut buf = [0f64; 1024];
        for (c, piece) in part.chunks_mut(buf.len()).enumerate() {
            let first = start + c * buf.len();
            let props = &mut buf[..piece.len()];
            fill(first, props);
            for (j, (r, &p)) in piece.iter_mut().zip(props.iter()).enumerate() {
                *r = finish(first + j, p);
            }
        }
    });
    result
}

/// A bound tensor in the shape of `like`, so layout operations can move it.
fn as_tensor(like: &HostTensor, bound: &[f32]) -> HostTensor {
    HostTensor {
        dtype: Dtype::F32,
        shape: like.shape.clone(),
        data: bound.to_vec(),
        ints: Vec::new(),
    }
}

/// The bounds of an operation with an `i32` or `bool` operand or result, and of `where`,
/// `arange` and `take`; `None` for the float operations above. No rounding is added: these
/// results are exact, and uncertain only through their operands. A truth value's bound is
/// 1 where compiled code could compute the other value (its operands' intervals touch), and
/// an integer's is the width of the interval its operand could truncate to. Integer
/// arithmetic on an uncertain value is unbounded (it wraps).
fn v2_bound(
    op: &TOp,
    args: &[&HostTensor],
    bounds: &[&[f32]],
    out: &HostTensor,
) -> Option<Vec<f32>> {
    let special = matches!(op, TOp::Where | TOp::Arange | TOp::Take { .. })
        || !out.dtype.is_float()
        || args.iter().any(|a| !a.dtype.is_float());
    if !special {
        return None;
    }
    let n = out.elems();
    let shape = &out.shape;
    let exact = bounds.iter().all(|b| b.iter().all(|&e| e == 0.0));
    if exact {
        return Some(vec![0.0; n]);
    }
    let mut prop = vec![0f64; n];
    match op {
        TOp::Binary(b) if b.is_comparison() || matches!(b, BinaryOp::And | BinaryOp::Or) => {
            let sa = broadcast_strides(&args[0].shape, shape);
            let sb = broadcast_strides(&args[1].shape, shape);
            for_each_index(shape, [&sa, &sb], |i, [ia, ib]| {
                prop[i] = binary_prop(
                    *b,
                    args[0].get(ia),
                    args[1].get(ib),
                    bounds[0][ia] as f64,
                    bounds[1][ib] as f64,
                );
            });
        }
        TOp::Unary(UnaryFn::Not) => {
            for (p, b) in prop.iter_mut().zip(bounds[0]) {
                *p = *b as f64;
            }
        }
        TOp::Cast => {
            for (i, p) in prop.iter_mut().enumerate() {
                let (x, b) = (args[0].get(i), bounds[0][i] as f64);
                *p = match out.dtype {
                    _ if b == 0.0 => 0.0,
                    Dtype::Bool => f64::from(u8::from(x - b <= 0.0 && x + b >= 0.0)),
                    Dtype::I32 => ((x + b).trunc() - (x - b).trunc()).abs(),
                    // From `i32` or `bool` to a float: the operand's bound and one step of
                    // the dtype's grid.
                    d => b + ulp(d, x.abs() + b),
                };
            }
        }
        TOp::Where => {
            let (c, a, bb) = (args[0], args[1], args[2]);
            let sc = broadcast_strides(&c.shape, shape);
            let sa = broadcast_strides(&a.shape, shape);
            let sb = broadcast_strides(&bb.shape, shape);
            for_each_index(shape, [&sc, &sa, &sb], |i, [ic, ia, ib]| {
                let (ea, eb) = (bounds[1][ia] as f64, bounds[2][ib] as f64);
                prop[i] = if bounds[0][ic] > 0.0 {
                    (a.get(ia) - bb.get(ib)).abs() + ea.max(eb)
                } else if c.get(ic) != 0.0 {
                    ea
                } else {
                    eb
                };
            });
        }
        TOp::Take { axis } => {
            if bounds[1].iter().any(|&e| e > 0.0) {
                prop.fill(f64::INFINITY);
            } else {
                let moved = super::v2::take(
                    &as_tensor(args[0], bounds[0]),
                    args[1],
                    *axis,
                    Dtype::F32,
                    shape,
                );
                if let Ok(t) = moved {
                    for (p, b) in prop.iter_mut().zip(t.data) {
                        *p = b as f64;
                    }
                }
            }
        }
        TOp::Transpose(perm) => {
            let moved = super::transpose(&as_tensor(args[0], bounds[0]), perm);
            for (p, b) in prop.iter_mut().zip(moved) {
                *p = b as f64;
            }
        }
        TOp::Reshape => {
            for (p, b) in prop.iter_mut().zip(bounds[0].iter()) {
                *p = *b as f64;
            }
        }
        TOp::Reduce {
            func: ReduceFn::Max | ReduceFn::Min,
            axis,
            ..
        } => reduce_prop(
            ReduceFn::Max,
            &as_tensor(args[0], bounds[0]),
            bounds[0],
            *axis,
            &mut prop,
        ),
        _ => prop.fill(f64::INFINITY),
    }
    Some(prop.iter().map(|&p| up(p)).collect())
}

/// A sum or max/min along `axis`: the terms' bounds added (or their largest), plus the
/// reordering allowance of a sum.
fn reduce_prop(func: ReduceFn, a: &HostTensor, bound: &[f32], axis: usize, prop: &mut [f64]) {
    let outer: u64 = a.shape[..axis].iter().product();
    let len = a.shape[axis] as usize;
    let inner: u64 = a.shape[axis + 1..].iter().product();
    let (outer, inner) = (outer as usize, inner as usize);
    for o in 0..outer {
        for i in 0..inner {
            let at = |j: usize| (o * len + j) * inner + i;
            let p = match func {
                ReduceFn::Max | ReduceFn::Min => {
                    (0..len).map(|j| bound[at(j)] as f64).fold(0.0, f64::max)
                }
                ReduceFn::Sum | ReduceFn::Mean => {
                    let terms: f64 = (0..len).map(|j| bound[at(j)] as f64).sum();
                    let mag: f64 = (0..len).map(|j| (a.data[at(j)] as f64).abs()).sum();
                    let p = terms + 2.0 * len as f64 * U32 * mag;
                    if func == ReduceFn::Mean {
                        p / len as f64
                    } else {
                        p
                    }
                }
            };
            prop[o * inner + i] = p;
        }
    }
}

/// Which operands of a matmul's output row are exact (have a zero bound): its row of `A`,
/// and the matrix of `B` its batch index reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Exact {
    Both,
    /// The matrix of `B` is exact, the row of `A` is not.
    Right,
    /// The row of `A` is exact, the matrix of `B` is not.
    Left,
    Neither,
}

/// A matmul's magnitude matmuls for its bound ([`matmul_prop`]), each computed only if
/// some output row needs it. On a row whose operands are both exact, `q`, `right` and
/// `left` hold the same bits (`|a| + s 0` is `|a|`), so whichever was computed serves.
struct MatmulMags {
    /// The contraction length `K`.
    k: f64,
    /// The length of an output row.
    n: usize,
    /// Each output row's [`Exact`]; empty when every row is [`Exact::Both`].
    rows: Vec<Exact>,
    /// `Q = |A| @ |B|`.
    q: Option<Vec<f32>>,
    /// `P = (|A| + Ba) @ (|B| + Bb)`, for rows with neither operand exact.
    p: Option<Vec<f32>>,
    /// `(|A| + s Ba) @ |B|`, for rows whose `B` is exact ([`one_sided_scale`]).
    right: Option<Vec<f32>>,
    /// `|A| @ (|B| + s Bb)`, for rows whose row of `A` is exact.
    left: Option<Vec<f32>>,
}

impl MatmulMags {
    /// The propagated bound of output element `i`.
    fn prop(&self, i: usize) -> f64 {
        let kind = self.rows.get(i / self.n).copied().unwrap_or(Exact::Both);
        let at = |v: &Option<Vec<f32>>| v.as_ref().map(|v| v[i] as f64);
        let need = "matmul_prop computes the magnitudes every kind of row present needs";
        let ku = self.k * U32;
        match kind {
            Exact::Both => {
                3.0 * ku
                    * at(&self.q)
                        .or(at(&self.right))
                        .or(at(&self.left))
                        .expect(need)
            }
            Exact::Right => one_sided(self.k, at(&self.right).expect(need)),
            Exact::Left => one_sided(self.k, at(&self.left).expect(need)),
            Exact::Neither => {
                let (q, p) = (at(&self.q).expect(need), at(&self.p).expect(need));
                (p - q).max(0.0) + 6.0 * ku * p
            }
        }
    }
}

/// The f32 `s >= max(1, 1 / (2 K u))` by which a one-sided bound scales the inexact
/// operand's bound ([`matmul_prop`]): `1 / (2 K u)` rounded up to f32 (after a relative
/// `2^-50` more, which covers the f64 division's rounding).
fn one_sided_scale(k: f64) -> f32 {
    let c = 2.0 * k * U32;
    if c <= 0.0 || c >= 1.0 {
        return 1.0;
    }
    up(1.0 / c * (1.0 + pow2(-50))).max(1.0)
}

/// The bound of an output element with one exact operand from its f32 magnitude matmul
/// `r` ([`matmul_prop`]): `2 K u (r + K 2^-150) / (1 - (K + 3) u)`.
fn one_sided(k: f64, r: f64) -> f64 {
    let steps = (k + 3.0) * U32;
    if steps >= 0.5 {
        return f64::INFINITY;
    }
    2.0 * k * U32 * (r + k * pow2(-150)) / (1.0 - steps)
}

/// A matmul's bound per output, `T = sum_k (|a| bb + ba |b| + ba bb) + 2 K u sum_k |a| |b|`
/// (`ba`, `bb` the operands' bounds), from f32 matmuls of magnitudes chosen per output row
/// by which of its operands are exact ([`Exact`]); each output row is decided from its own
/// row of `A` and matrix of `B` only, so a row block evaluation (`rows.rs`) gives the same
/// bits.
///
/// - Both exact: `T = 2 K u sum |a| |b|`, bounded by `3 K u Q` with `Q = |A| @ |B|` in f32
///   (whose error is below `K u Q`).
/// - Neither exact: `P - Q + 2 K u P` with `P = (|A| + Ba) @ (|B| + Bb)`; each of `P` and
///   `Q` is computed in f32 with an error below `K u P`, so `4 K u P` more keeps the
///   result an upper bound.
/// - `B` exact (`bb = 0`): `T = sum_k (ba + 2 K u |a|) |b|`, linear in the left operand:
///   with an f32 `s >= 1 / (2 K u)` ([`one_sided_scale`], within a relative `2^-23` of
///   it), `T <= 2 K u R` for the real `R = sum_k (|a| + s ba) |b|`, one matmul instead of
///   two. Its f32 value `r` rounds only sums and products of non-negative numbers: `s ba`
///   is rounded and moved a step up (`matmul::scaled_up`), so never below the real `s ba`;
///   the operand `|a| + s ba` and each product lose at most a factor `(1 - u)` (a product
///   below the normal range at most `2^-150` absolutely), and the `K` sums another factor
///   `(1 - u)` each, so `R <= (r + K 2^-150) / (1 - u)^(K + 2)` and
///   `T <= 2 K u (r + K 2^-150) / (1 - (K + 2) u)`; [`one_sided`] uses `K + 3`, which
///   covers the few f64 roundings of its own evaluation. An infinite or NaN `r` gives an
///   infinite bound, as before.
/// - The row of `A` exact: the mirror, `R = sum_k |a| (|b| + s bb)`.
///
/// The one-sided bound lies between `T` and the two-matmul bound: it drops the `4 K u P`
/// allowance for rounding `P - Q`, which it has no subtraction to need.
fn matmul_prop(args: &[&HostTensor], bounds: &[&[f32]], shape: &[u64]) -> MatmulMags {
    use super::matmul::Operand;
    let (a, b) = (args[0], args[1]);
    let k = a.shape[a.shape.len() - 1] as f64;
    let n = shape[shape.len() - 1] as usize;
    let rows = exactness(args, bounds, shape);
    let has = |e: Exact| rows.contains(&e);
    // The magnitudes are made as the kernel packs its operands, never stored whole. An
    // empty bound is all zero (an input's): `|x| + 0` is `|x|`.
    fn widened<'a>(x: &'a HostTensor, e: &'a [f32], s: f32) -> Operand<'a> {
        if e.len() < x.data.len() {
            Operand::Abs(&x.data)
        } else if s == 1.0 {
            Operand::AbsPlus(&x.data, e)
        } else {
            Operand::AbsPlusScaled(&x.data, e, s)
        }
    }
    let mags = |x: Operand, y: Operand| Some(super::matmul_of(&a.shape, x, &b.shape, y, shape));
    let s = one_sided_scale(k);
    let (abs_a, abs_b) = (Operand::Abs(&a.data), Operand::Abs(&b.data));
    let right = match has(Exact::Right) {
        true => mags(widened(a, bounds[0], s), abs_b),
        false => None,
    };
    let left = match has(Exact::Left) {
        true => mags(abs_a, widened(b, bounds[1], s)),
        false => None,
    };
    let neither = has(Exact::Neither);
    let q = match neither || (right.is_none() && left.is_none()) {
        true => mags(abs_a, abs_b),
        false => None,
    };
    let p = match neither {
        true => mags(widened(a, bounds[0], 1.0), widened(b, bounds[1], 1.0)),
        false => None,
    };
    MatmulMags {
        k,
        n,
        rows,
        q,
        p,
        right,
        left,
    }
}

/// Each output row's [`Exact`]: whether its row of `A` and the matrix of `B` its batch
/// index reads (with broadcasting) have zero bounds. Empty when both operands are exact
/// everywhere.
fn exactness(args: &[&HostTensor], bounds: &[&[f32]], shape: &[u64]) -> Vec<Exact> {
    let (a, b) = (args[0], args[1]);
    let rank = shape.len();
    let (m, n) = (shape[rank - 2] as usize, shape[rank - 1] as usize);
    let k = a.shape[a.shape.len() - 1] as usize;
    // An empty bound (an input's) is all zero.
    let all_zero =
        |e: &[f32], t: &HostTensor| e.len() < t.data.len() || e.iter().all(|&x| x == 0.0);
    let (a_exact, b_exact) = (all_zero(bounds[0], a), all_zero(bounds[1], b));
    if a_exact && b_exact {
        return Vec::new();
    }
    let zero = |e: &[f32], range: std::ops::Range<usize>| e[range].iter().all(|&x| x == 0.0);
    let batch = &shape[..rank - 2];
    let sa = broadcast_strides(&a.shape[..a.shape.len() - 2], batch);
    let sb = broadcast_strides(&b.shape[..b.shape.len() - 2], batch);
    let mut rows = vec![Exact::Neither; shape[..rank - 1].iter().product::<u64>() as usize];
    for_each_index(batch, [&sa, &sb], |bi, [ia, ib]| {
        let right = b_exact || zero(bounds[1], ib * k * n..(ib + 1) * k * n);
        for i in 0..m {
            let r = ia * m + i;
            let left = a_exact || zero(bounds[0], r * k..(r + 1) * k);
            rows[bi * m + i] = match (left, right) {
                (true, true) => Exact::Both,
                (false, true) => Exact::Right,
                (true, false) => Exact::Left,
                (false, false) => Exact::Neither,
            };
        }
    });
    rows
}

/// A convolution's bound: a matmul's (`matmul_prop`) over its `C_g x kernel elements`
/// terms, with the magnitudes summed by the reference convolution itself.
fn conv_prop(
    attrs: &crate::ir::ConvAttrs,
    args: &[&HostTensor],
    bounds: &[&[f32]],
    shape: &[u64],
) -> (f64, Vec<f32>, Option<Vec<f32>>) {
    let k = super::conv::terms(&args[1].shape) as f64;
    let q = super::conv::conv(args[0], args[1], attrs, shape, f32::abs);
    let exact = bounds.iter().all(|b| b.iter().all(|&e| e == 0.0));
    if exact {
        return (k, q, None);
    }
    let widened = |t: &HostTensor, b: &[f32]| HostTensor {
        dtype: Dtype::F32,
        shape: t.shape.clone(),
        data: t.data.iter().zip(b).map(|(x, e)| x.abs() + e).collect(),
        ints: Vec::new(),
    };
    let pm = super::conv::conv(
        &widened(args[0], bounds[0]),
        &widened(args[1], bounds[1]),
        attrs,
        shape,
        |v| v,
    );
    (k, q, Some(pm))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The exponent-bit shortcuts give the bits of `log2().floor()` and `powi`, at random
    /// magnitudes, next to powers of two on both sides, and at the ends of the range.
    #[test]
    fn floor_log2_and_pow2_match_libm() {
        let mut x = 0x9E37_79B9_7F4A_7C15u64;
        let mut values = vec![f64::MIN_POSITIVE, 5e-324, f64::MAX, 1.0, 3.0];
        for e in -1074..1024 {
            let p = 2f64.powi(e);
            values.extend([p, p.next_up(), p.next_down(), p * (1.0 - 1e-12), p * 1.5]);
        }
        for _ in 0..200_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            values.push(f64::from_bits(x >> 2));
        }
        for m in values.into_iter().filter(|m| *m > 0.0 && m.is_finite()) {
            assert_eq!(floor_log2(m).to_bits(), m.log2().floor().to_bits(), "{m:e}");
        }
        for n in -1100..1100 {
            assert_eq!(pow2(n).to_bits(), 2f64.powi(n).to_bits(), "{n}");
        }
    }

    /// A division whose divisor is known to be at least `lo` in every allowed computation
    /// (a softmax's row sum, `lo = 1`) is bounded by the largest change over the operands'
    /// intervals (sampled at their ends and inside, divisor clipped to `lo`), is never
    /// above the bound without the fact, and is finite where the divisor's interval reaches
    /// zero.
    #[test]
    fn a_divisor_lower_bound_keeps_division_bounds_true_and_finite() {
        let mut x = 0x2545_F491_4F6C_DD1Du64;
        let mut next = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 11) as f64 / (1u64 << 53) as f64
        };
        for case in 0..20_000 {
            let lo = [1.0, 0.5, 1e-3][case % 3];
            let a = (next() - 0.5) * 8.0;
            let b = lo + next() * 10.0;
            let ba = next() * 2.0;
            let bb = next() * [0.1, 3.0, 30.0][case % 3];
            let got = divide_prop(a, b, ba, bb, lo);
            assert!(
                got.is_finite(),
                "{a} / {b} (+-{ba}, +-{bb}, >= {lo}): {got}"
            );
            let without = binary_prop(BinaryOp::Div, a, b, ba, bb);
            assert!(got <= without, "{got} above {without}");
            for i in 0..=4 {
                for j in 0..=4 {
                    let a2 = a - ba + 2.0 * ba * i as f64 / 4.0;
                    let b2 = (b - bb + 2.0 * bb * j as f64 / 4.0).max(lo);
                    let change = (a2 / b2 - a / b).abs();
                    assert!(
                        change <= got * (1.0 + 1e-12),
                        "{a2} / {b2} moves {change} beyond {got}"
                    );
                }
            }
        }
        // Exact operands are exact, and a divisor below the fact assumes nothing.
        assert_eq!(divide_prop(3.0, 2.0, 0.0, 0.0, 1.0), 0.0);
        assert_eq!(
            divide_prop(1.0, 0.5, 0.1, 0.6, 1.0),
            binary_prop(BinaryOp::Div, 1.0, 0.5, 0.1, 0.6)
        );
    }

    /// A result with a range is bounded by its distance to the range's far end, and never
    /// more loosely than without it; a value outside the range (not one the facts allow)
    /// keeps its propagated bound.
    #[test]
    fn a_range_caps_a_bound_at_the_far_end() {
        let t = |data: Vec<f32>| HostTensor {
            dtype: Dtype::F32,
            shape: vec![1, data.len() as u64],
            data,
            ints: Vec::new(),
        };
        let (e, l) = (t(vec![0.0, 0.25, 1.0, 0.5]), t(vec![1.5]));
        let out = t(vec![0.0, 0.25 / 1.5, 1.0 / 1.5, 0.5 / 1.5]);
        let be = [1e-3, 0.5, 2.0, 1e-6];
        let bl = [40.0];
        let op = TOp::Binary(BinaryOp::Div);
        let plain = op_bound(&op, &[&e, &l], &[&be, &bl], &out, false, Facts::default());
        assert!(plain.iter().all(|b| b.is_infinite()), "{plain:?}");
        let facts = Facts {
            range: Some(Range {
                lo: 0.0,
                hi: 1.0,
                zero_along: None,
                one_along: None,
            }),
            divisor_lo: Some(1.0),
        };
        let with = op_bound(&op, &[&e, &l], &[&be, &bl], &out, false, facts);
        for (j, (&b, &v)) in with.iter().zip(&out.data).enumerate() {
            let far = (v as f64).max(1.0 - v as f64);
            assert!(
                b.is_finite() && b as f64 <= far * (1.0 + 1e-7),
                "{j}: {b} {v}"
            );
        }
        // Element 0 (a zero numerator) is tight: its own propagated bound, with the divisor
        // at least 1, is its numerator's bound, far below the range's far end.
        assert!(with[0] < 2e-3, "{with:?}");
        // Outside the range nothing is capped.
        let outside = t(vec![2.0]);
        let b = op_bound(
            &TOp::Unary(UnaryFn::Abs),
            &[&outside],
            &[&[5.0]],
            &outside,
            false,
            facts,
        );
        assert_eq!(b, vec![5.0]);
    }

    /// Mixed signs and magnitudes (down to the subnormal range, where products underflow),
    /// some zeros.
    fn values(len: usize, seed: u64, spread: i32) -> Vec<f32> {
        let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        (0..len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                if x.is_multiple_of(13) {
                    return 0.0;
                }
                let mant = 1.0 + (x >> 40) as f64 / (1u64 << 24) as f64;
                let e = ((x >> 8) % (2 * spread as u64 + 1)) as i32 - spread;
                let sign = if x & 1 == 0 { 1.0 } else { -1.0 };
                (sign * mant * 2f64.powi(e)) as f32
            })
            .collect()
    }

    /// The one-sided matmul bounds are never below the bound's real-number value
    /// `sum_k (|a| bb + ba |b| + ba bb) + 2 K u sum_k |a| |b|` (computed in f64, whose
    /// products of f32 values are exact, with its summation error allowed for), on batched
    /// operands whose output rows take every kind of [`Exact`], at several lengths `K` and
    /// magnitudes reaching below f32's normal range.
    #[test]
    fn matmul_bounds_are_never_below_their_real_value() {
        let mut kinds_seen = std::collections::HashSet::new();
        for (case, (m, k, n, spread)) in [
            (3, 1, 5, 4),
            (7, 7, 9, 30),
            (6, 300, 17, 20),
            (5, 1000, 33, 8),
            (4, 64, 8, 120),
        ]
        .into_iter()
        .enumerate()
        {
            let seed = case as u64 * 100;
            let tensor = |shape: Vec<u64>, data: Vec<f32>| HostTensor {
                dtype: Dtype::F32,
                shape,
                data,
                ints: Vec::new(),
            };
            let a = tensor(
                vec![2, m as u64, k as u64],
                values(2 * m * k, seed + 1, spread),
            );
            let b = tensor(
                vec![2, k as u64, n as u64],
                values(2 * k * n, seed + 2, spread),
            );
            // Bounds: relative ones of several sizes; A's row 1 of each batch exact, and
            // B's first batch matrix exact.
            let rel = |t: &HostTensor, s: u64, scale: f64| -> Vec<f32> {
                let r = values(t.data.len(), s, 6);
                t.data
                    .iter()
                    .zip(r)
                    .map(|(x, r)| up(x.abs() as f64 * r.abs() as f64 * scale))
                    .collect()
            };
            let mut ba = rel(&a, seed + 3, 1e-3);
            for bi in 0..2 {
                ba[(bi * m + 1) * k..(bi * m + 2) * k].fill(0.0);
            }
            let mut bb = rel(&b, seed + 4, 1e-2);
            bb[..k * n].fill(0.0);
            let shape = [2, m as u64, n as u64];
            let mags = matmul_prop(&[&a, &b], &[&ba, &bb], &shape);
            for (bi, row, j) in
                (0..2).flat_map(|bi| (0..m).flat_map(move |row| (0..n).map(move |j| (bi, row, j))))
            {
                let mut t = 0f64;
                let mut mag = 0f64;
                for kk in 0..k {
                    let (x, ex) = (
                        a.data[(bi * m + row) * k + kk] as f64,
                        ba[(bi * m + row) * k + kk] as f64,
                    );
                    let (y, ey) = (
                        b.data[(bi * k + kk) * n + j] as f64,
                        bb[(bi * k + kk) * n + j] as f64,
                    );
                    t += x.abs() * ey + ex * y.abs() + ex * ey;
                    mag += x.abs() * y.abs();
                }
                let real = (t + 2.0 * k as f64 * U32 * mag) * (1.0 + k as f64 * pow2(-52));
                let i = (bi * m + row) * n + j;
                // A NaN (an infinite magnitude times a zero) is stored as an infinite bound.
                let got = match mags.prop(i) {
                    p if p.is_nan() => f64::INFINITY,
                    p => p,
                };
                kinds_seen.insert(format!("{:?}", mags.rows[bi * m + row]));
                assert!(
                    got >= real,
                    "{m}x{k}x{n} element {i} ({:?}): bound {got:e} < real {real:e}",
                    mags.rows[bi * m + row]
                );
            }
        }
        assert_eq!(
            kinds_seen.len(),
            4,
            "every kind of row is tested: {kinds_seen:?}"
        );
    }
}
