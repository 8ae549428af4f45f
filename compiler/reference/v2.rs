//! The reference evaluator's operations on the `i32` and `bool` dtypes of language version
//! 2, and the operations that come with them (comparisons, `where`, `arange`, `take`).
//!
//! `i32` values are held as `i32` and computed in 32-bit two's complement (`+ - *` and
//! negation wrap), never through f32, which holds integers exactly only up to 2^24. `bool`
//! values are 0.0 and 1.0 in the f32 vector, which is exact. Conversions follow the
//! language: float to `i32` toward zero, saturating, NaN to 0; `i32` to a float rounded
//! once to nearest even; a number to `bool` is `x != 0` (NaN gives `true`).

use super::{broadcast_strides, for_each_index, strides, HostTensor};
use crate::ir::{BinaryOp, Function, ReduceFn, TOp, UnaryFn, Value, ValueDef};
use isa::Dtype;
use runtime::numeric;

/// Evaluates `op` if it involves `i32` or `bool` values or is one of the version 2
/// operations; `None` leaves it to the float evaluator.
pub(super) fn eval(
    op: &TOp,
    args: &[&HostTensor],
    dtype: Dtype,
    shape: &[u64],
) -> Option<HostTensor> {
    let int_in = args.iter().any(|a| a.dtype == Dtype::I32);
    let mut out = HostTensor {
        dtype,
        shape: shape.to_vec(),
        data: Vec::new(),
        ints: Vec::new(),
    };
    match op {
        TOp::Const(x) if dtype == Dtype::I32 => out.ints = vec![*x as i32],
        TOp::Const(x) if dtype == Dtype::Bool => out.data = vec![f32::from(u8::from(*x != 0.0))],
        TOp::Unary(u) if int_in => {
            out.ints = args[0]
                .ints
                .iter()
                .map(|&x| match u {
                    UnaryFn::Neg => x.wrapping_neg(),
                    _ => x.wrapping_abs(),
                })
                .collect();
        }
        TOp::Binary(b)
            if int_in || b.is_comparison() || matches!(b, BinaryOp::And | BinaryOp::Or) =>
        {
            binary(*b, args[0], args[1], &mut out)
        }
        TOp::Reduce { func, axis, .. } if int_in => {
            out.ints = reduce_i32(*func, args[0], *axis);
        }
        TOp::Transpose(perm) if int_in => {
            let out_shape: Vec<u64> = perm.iter().map(|&p| args[0].shape[p]).collect();
            let own = strides(&args[0].shape);
            let s: Vec<usize> = perm.iter().map(|&p| own[p]).collect();
            let mut ints = vec![0i32; args[0].ints.len()];
            for_each_index(&out_shape, [&s], |i, [ia]| ints[i] = args[0].ints[ia]);
            out.ints = ints;
        }
        TOp::Reshape if int_in => out.ints = args[0].ints.clone(),
        TOp::Slice(_) | TOp::Concat(_) | TOp::Pad { .. } | TOp::BroadcastTo
            if dtype == Dtype::I32 =>
        {
            // The elements move as integers, never through f32.
            let fill = match op {
                TOp::Pad { value, .. } => *value as i32,
                _ => 0,
            };
            let moved: Vec<(&[u64], &[i32])> = args
                .iter()
                .map(|a| (a.shape.as_slice(), a.ints.as_slice()))
                .collect();
            out.ints = super::movement::move_elems(op, &moved, shape, fill).unwrap_or_default();
        }
        TOp::Cast if int_in || dtype == Dtype::I32 => cast(args[0], &mut out),
        TOp::Where => {
            let (c, a, b) = (args[0], args[1], args[2]);
            let sc = broadcast_strides(&c.shape, shape);
            let sa = broadcast_strides(&a.shape, shape);
            let sb = broadcast_strides(&b.shape, shape);
            let n = shape.iter().product::<u64>() as usize;
            if dtype == Dtype::I32 {
                let mut ints = vec![0i32; n];
                for_each_index(shape, [&sc, &sa, &sb], |i, [ic, ia, ib]| {
                    ints[i] = if c.data[ic] != 0.0 {
                        a.ints[ia]
                    } else {
                        b.ints[ib]
                    };
                });
                out.ints = ints;
            } else {
                // Branches of two float dtypes give f32, which holds both exactly.
                let mut data = vec![0f32; n];
                for_each_index(shape, [&sc, &sa, &sb], |i, [ic, ia, ib]| {
                    data[i] = if c.data[ic] != 0.0 {
                        a.data[ia]
                    } else {
                        b.data[ib]
                    };
                });
                out.data = data;
            }
        }
        TOp::Arange => out.ints = (0..shape[0]).map(|i| i as i32).collect(),
        TOp::Take { axis } => {
            // Out-of-range indices are reported by `evaluate`; here they read row 0.
            return Some(
                take(args[0], args[1], *axis, dtype, shape).unwrap_or_else(|_| {
                    let zeros = HostTensor::from_i32(&args[1].shape, vec![0; args[1].ints.len()]);
                    take(args[0], &zeros, *axis, dtype, shape).unwrap_or(out)
                }),
            );
        }
        _ => return None,
    }
    Some(out)
}

/// A comparison of two integers or two floats (`!=` for any other operation, which the
/// checker never gives a `bool` result): false with NaN except `!=`, as IEEE says.
fn compare<T: PartialOrd>(op: BinaryOp, p: T, q: T) -> bool {
    match op {
        BinaryOp::Lt => p < q,
        BinaryOp::Le => p <= q,
        BinaryOp::Gt => p > q,
        BinaryOp::Ge => p >= q,
        BinaryOp::Eq => p == q,
        _ => p != q,
    }
}

/// A binary operation with an `i32` or `bool` operand or result.
fn binary(op: BinaryOp, a: &HostTensor, b: &HostTensor, out: &mut HostTensor) {
    let shape = out.shape.clone();
    let sa = broadcast_strides(&a.shape, &shape);
    let sb = broadcast_strides(&b.shape, &shape);
    let n = shape.iter().product::<u64>() as usize;
    let truth = |t: bool| f32::from(u8::from(t));
    if a.dtype == Dtype::I32 {
        let (x, y) = (&a.ints, &b.ints);
        if out.dtype == Dtype::Bool {
            let mut data = vec![0f32; n];
            for_each_index(&shape, [&sa, &sb], |i, [ia, ib]| {
                let (p, q) = (x[ia], y[ib]);
                data[i] = truth(compare(op, p, q));
            });
            out.data = data;
        } else {
            let mut ints = vec![0i32; n];
            for_each_index(&shape, [&sa, &sb], |i, [ia, ib]| {
                let (p, q) = (x[ia], y[ib]);
                ints[i] = match op {
                    BinaryOp::Add => p.wrapping_add(q),
                    BinaryOp::Sub => p.wrapping_sub(q),
                    BinaryOp::Mul => p.wrapping_mul(q),
                    BinaryOp::Maximum => p.max(q),
                    _ => p.min(q),
                };
            });
            out.ints = ints;
        }
        return;
    }
    // Float or `bool` operands (both exact in f32): compared in f32, where NaN compares
    // false except with `!=`.
    let (x, y) = (&a.data, &b.data);
    let mut data = vec![0f32; n];
    for_each_index(&shape, [&sa, &sb], |i, [ia, ib]| {
        let (p, q) = (x[ia], y[ib]);
        data[i] = truth(match op {
            BinaryOp::And => p != 0.0 && q != 0.0,
            BinaryOp::Or => p != 0.0 || q != 0.0,
            _ => compare(op, p, q),
        });
    });
    out.data = data;
}

/// A reduction of `i32` values along `axis`: the sum wraps; max and min are exact.
fn reduce_i32(func: ReduceFn, a: &HostTensor, axis: usize) -> Vec<i32> {
    let outer: u64 = a.shape[..axis].iter().product();
    let len = a.shape[axis] as usize;
    let inner: u64 = a.shape[axis + 1..].iter().product();
    let (outer, inner) = (outer as usize, inner as usize);
    let mut out = Vec::with_capacity(outer * inner);
    for o in 0..outer {
        for i in 0..inner {
            let at = |j: usize| a.ints[(o * len + j) * inner + i];
            let mut acc = at(0);
            for j in 1..len {
                acc = match func {
                    ReduceFn::Max => acc.max(at(j)),
                    ReduceFn::Min => acc.min(at(j)),
                    _ => acc.wrapping_add(at(j)),
                };
            }
            out.push(acc);
        }
    }
    out
}

/// A conversion from or to `i32`.
fn cast(a: &HostTensor, out: &mut HostTensor) {
    match (a.dtype, out.dtype) {
        (Dtype::I32, Dtype::I32) => out.ints = a.ints.clone(),
        (Dtype::I32, Dtype::Bool) => {
            out.data = a
                .ints
                .iter()
                .map(|&x| f32::from(u8::from(x != 0)))
                .collect()
        }
        // Exact in f64, then rounded once to the float dtype.
        (Dtype::I32, d) => {
            out.data = a
                .ints
                .iter()
                .map(|&x| numeric::round_f64(d, f64::from(x)))
                .collect()
        }
        // Toward zero, saturating, NaN to 0 (Rust's `as`); `bool` is 0 or 1.
        (_, _) => out.ints = a.data.iter().map(|&x| x as i32).collect(),
    }
}

/// NumPy `take` along `axis`. An index outside `[-n, n)` gives `Err((index, n))`.
pub(super) fn take(
    x: &HostTensor,
    idx: &HostTensor,
    axis: usize,
    dtype: Dtype,
    shape: &[u64],
) -> Result<HostTensor, (i64, u64)> {
    let outer: u64 = x.shape[..axis].iter().product();
    let n = x.shape[axis];
    let inner: u64 = x.shape[axis + 1..].iter().product();
    let (outer, inner) = (outer as usize, inner as usize);
    let rows: Vec<usize> = idx
        .ints
        .iter()
        .map(|&i| {
            let j = if i < 0 {
                i64::from(i) + n as i64
            } else {
                i64::from(i)
            };
            if j < 0 || j >= n as i64 {
                Err((i64::from(i), n))
            } else {
                Ok(j as usize)
            }
        })
        .collect::<Result<_, _>>()?;
    let mut out = HostTensor {
        dtype,
        shape: shape.to_vec(),
        data: Vec::new(),
        ints: Vec::new(),
    };
    let n = n as usize;
    let gather = |src_len: usize| {
        let mut order = Vec::with_capacity(outer * rows.len() * inner);
        for o in 0..outer {
            for &r in &rows {
                let base = (o * n + r) * inner;
                order.extend(base..base + inner);
            }
        }
        debug_assert!(order.iter().all(|&i| i < src_len));
        order
    };
    if dtype == Dtype::I32 {
        out.ints = gather(x.ints.len())
            .into_iter()
            .map(|i| x.ints[i])
            .collect();
    } else {
        out.data = gather(x.data.len())
            .into_iter()
            .map(|i| x.data[i])
            .collect();
    }
    Ok(out)
}

/// The name of the operand that holds `v`, for run-time errors: the parameter's name, or
/// for indices computed in the kernel the `take` they index with (the machine's message,
/// `driver::index_fault_message`, says the same words).
/// How a run-time error names indices computed in the kernel.
pub const COMPUTED_INDICES: &str = "the index operand of the `take` (computed in the kernel)";

pub(super) fn operand_name(func: &Function, v: Value) -> String {
    match func.values[v].def {
        ValueDef::Param(i) => format!("the operand `{}`", func.params[i].0),
        ValueDef::Inst(_) => COMPUTED_INDICES.to_string(),
    }
}
