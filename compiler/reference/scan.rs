//! The reference evaluator's `argmax`, `argmin` and `cumsum`, and their `--check` bounds.
//!
//! `argmax` walks each lane in index order and keeps the first largest element; the first
//! NaN wins outright (NumPy counts NaN as the largest value, and the first of equals wins),
//! and `-0.0` equals `0.0`, so the first of the two wins. `argmin` is the same with the
//! smallest. `cumsum` is the in-order scan the language defines: the accumulator starts as
//! the lane's first element (so a lone `-0.0` stays `-0.0`), each following element is
//! added in f32 (wrapping `i32` for `i32`), and each running value is rounded to the
//! operand's dtype as it is written; the accumulator itself stays f32.
//!
//! Bounds (docs/numerics.md): a position is exact when its lane's inputs are; otherwise
//! every element whose interval reaches the winner's could be the winner of a computation
//! within the inputs' bounds, and the position's bound is the largest distance to one of
//! them (a NaN input, or an infinite bound, makes it unbounded). A prefix sum's bound is a
//! sum's over the prefix, plus one step of the dtype's grid for the rounding.

use super::bound::{implicit, U32};
use super::HostTensor;
use crate::ir::TOp;
use isa::Dtype;
use runtime::numeric;

/// The lanes of a tensor of `shape` along `axis`: (number of lanes, length, stride), and
/// the first element of lane `l`.
struct Lanes {
    inner: usize,
    len: usize,
    count: usize,
}

impl Lanes {
    fn new(shape: &[u64], axis: usize) -> Lanes {
        let outer: u64 = shape[..axis].iter().product();
        let inner: u64 = shape[axis + 1..].iter().product();
        Lanes {
            inner: inner as usize,
            len: shape[axis] as usize,
            count: (outer * inner) as usize,
        }
    }

    /// The index of element `j` of lane `l`.
    fn at(&self, l: usize, j: usize) -> usize {
        let (o, i) = (l / self.inner, l % self.inner);
        (o * self.len + j) * self.inner + i
    }
}

/// The position of the first largest (`max`) or smallest element of `get(0..len)`, the
/// first NaN winning outright.
pub fn arg_best(max: bool, len: usize, get: impl Fn(usize) -> f64) -> usize {
    let mut best = 0;
    let mut bv = get(0);
    if bv.is_nan() {
        return 0;
    }
    for j in 1..len {
        let v = get(j);
        if v.is_nan() {
            return j;
        }
        if (max && v > bv) || (!max && v < bv) {
            best = j;
            bv = v;
        }
    }
    best
}

/// Evaluates `argmax`, `argmin` and `cumsum`; `None` for every other operation.
pub(super) fn eval(
    op: &TOp,
    args: &[&HostTensor],
    dtype: Dtype,
    shape: &[u64],
) -> Option<HostTensor> {
    let a = args.first()?;
    match op {
        TOp::ArgReduce { max, axis, .. } => {
            let lanes = Lanes::new(&a.shape, *axis);
            let ints = (0..lanes.count)
                .map(|l| {
                    if a.dtype == Dtype::I32 {
                        arg_best(*max, lanes.len, |j| f64::from(a.ints[lanes.at(l, j)])) as i32
                    } else {
                        arg_best(*max, lanes.len, |j| f64::from(a.data[lanes.at(l, j)])) as i32
                    }
                })
                .collect();
            Some(HostTensor::from_i32(shape, ints))
        }
        TOp::Cumsum { axis } => {
            let lanes = Lanes::new(&a.shape, *axis);
            let mut out = HostTensor {
                dtype,
                shape: shape.to_vec(),
                data: Vec::new(),
                ints: Vec::new(),
            };
            if dtype == Dtype::I32 {
                let mut ints = a.ints.clone();
                for l in 0..lanes.count {
                    let mut acc = ints[lanes.at(l, 0)];
                    for j in 1..lanes.len {
                        let k = lanes.at(l, j);
                        acc = acc.wrapping_add(ints[k]);
                        ints[k] = acc;
                    }
                }
                out.ints = ints;
            } else {
                let mut data = a.data.clone();
                for l in 0..lanes.count {
                    let k0 = lanes.at(l, 0);
                    let mut acc = data[k0];
                    data[k0] = numeric::round(dtype, acc);
                    for j in 1..lanes.len {
                        let k = lanes.at(l, j);
                        acc += data[k];
                        data[k] = numeric::round(dtype, acc);
                    }
                }
                out.data = data;
            }
            Some(out)
        }
        _ => None,
    }
}

/// The bounds of `argmax`, `argmin` and `cumsum` (module comment); `None` for every other
/// operation.
pub(super) fn bound(
    op: &TOp,
    args: &[&HostTensor],
    bounds: &[&[f32]],
    out: &HostTensor,
) -> Option<Vec<f32>> {
    let (a, b) = (args.first()?, bounds.first()?);
    match op {
        TOp::ArgReduce { max, axis, .. } => {
            let lanes = Lanes::new(&a.shape, *axis);
            let result = (0..lanes.count)
                .map(|l| {
                    let exact = (0..lanes.len).all(|j| b[lanes.at(l, j)] == 0.0);
                    if exact {
                        return 0.0;
                    }
                    let best = out.ints[l] as usize;
                    let value = |j: usize| a.get(lanes.at(l, j));
                    let slack = |j: usize| f64::from(b[lanes.at(l, j)]);
                    let (bv, be) = (value(best), slack(best));
                    let mut far = 0usize;
                    for j in 0..lanes.len {
                        let (v, e) = (value(j), slack(j));
                        if v.is_nan() || bv.is_nan() || !e.is_finite() || !be.is_finite() {
                            return f32::INFINITY;
                        }
                        // Element j could be the winner if its interval reaches the
                        // winner's.
                        let reaches = if *max {
                            v + e >= bv - be
                        } else {
                            v - e <= bv + be
                        };
                        if reaches {
                            far = far.max(j.abs_diff(best));
                        }
                    }
                    far as f32
                })
                .collect();
            Some(result)
        }
        TOp::Cumsum { axis } => {
            let lanes = Lanes::new(&a.shape, *axis);
            let mut result = vec![0f32; out.elems()];
            let exact = b.iter().all(|&e| e == 0.0);
            if out.dtype == Dtype::I32 {
                // Wrapping arithmetic on an uncertain integer is unbounded.
                if !exact {
                    result.fill(f32::INFINITY);
                }
                return Some(result);
            }
            for l in 0..lanes.count {
                let (mut terms, mut mag) = (0f64, 0f64);
                for j in 0..lanes.len {
                    let k = lanes.at(l, j);
                    terms += f64::from(b[k]);
                    mag += a.get(k).abs();
                    // Compiled code scans in the same order, so the allowance for another
                    // order is not needed; it is kept so that the bound stays a sum's.
                    let p = terms + 2.0 * (j + 1) as f64 * U32 * mag;
                    let v = f64::from(out.data[k]).abs();
                    let total = p + implicit(out.dtype, v + p);
                    result[k] = if total.is_nan() {
                        f32::INFINITY
                    } else {
                        let f = total as f32;
                        if f64::from(f) < total {
                            f.next_up()
                        } else {
                            f
                        }
                    };
                }
            }
            Some(result)
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f32s(shape: &[u64], data: Vec<f32>) -> HostTensor {
        HostTensor {
            dtype: Dtype::F32,
            shape: shape.to_vec(),
            data,
            ints: Vec::new(),
        }
    }

    fn arg(max: bool, data: Vec<f32>) -> i32 {
        let x = f32s(&[1, data.len() as u64], data);
        let op = TOp::ArgReduce {
            max,
            axis: 1,
            keepdims: false,
        };
        eval(&op, &[&x], Dtype::I32, &[1]).unwrap().ints[0]
    }

    #[test]
    fn positions_follow_numpy() {
        let nan = f32::NAN;
        // Ties: the first wins.
        assert_eq!(arg(true, vec![1.0, 3.0, 3.0, 2.0]), 1);
        assert_eq!(arg(false, vec![2.0, 1.0, 5.0, 1.0]), 1);
        // The first NaN wins for both, even after the largest value.
        assert_eq!(arg(true, vec![1.0, 9.0, nan, nan]), 2);
        assert_eq!(arg(false, vec![1.0, -9.0, 0.0, nan, nan]), 3);
        assert_eq!(arg(true, vec![nan, f32::INFINITY]), 0);
        // -0.0 equals 0.0: the first of them wins.
        assert_eq!(arg(true, vec![-0.0, 0.0]), 0);
        assert_eq!(arg(false, vec![0.0, -0.0]), 0);
        assert_eq!(arg(true, vec![f32::NEG_INFINITY, -1.0, f32::INFINITY]), 2);
        assert_eq!(arg(false, vec![f32::NEG_INFINITY, f32::NEG_INFINITY]), 0);
    }

    #[test]
    fn cumsum_is_the_in_order_scan() {
        let x = f32s(
            &[2, 3],
            vec![-0.0, -0.0, 0.0, f32::INFINITY, 1.0, f32::NEG_INFINITY],
        );
        let op = TOp::Cumsum { axis: 1 };
        let out = eval(&op, &[&x], Dtype::F32, &[2, 3]).unwrap().data;
        assert_eq!(out[0].to_bits(), (-0.0f32).to_bits());
        assert_eq!(out[1].to_bits(), (-0.0f32).to_bits());
        assert_eq!(out[2].to_bits(), 0.0f32.to_bits());
        assert_eq!(out[3], f32::INFINITY);
        assert_eq!(out[4], f32::INFINITY);
        assert!(out[5].is_nan());
        // Along axis 0, and the f32 accumulator kept between bf16 roundings: 256 + 1 + 1
        // gives 258 in f32, whereas rounding each running value to bf16 and adding again
        // would stay at 256.
        let y = HostTensor {
            dtype: Dtype::Bf16,
            shape: vec![3, 1],
            data: vec![256.0, 1.0, 1.0],
            ints: Vec::new(),
        };
        let op = TOp::Cumsum { axis: 0 };
        let out = eval(&op, &[&y], Dtype::Bf16, &[3, 1]).unwrap().data;
        assert_eq!(out, vec![256.0, 256.0, 258.0]);
        let i = HostTensor::from_i32(&[1, 2], vec![i32::MAX, 1]);
        let out = eval(&TOp::Cumsum { axis: 1 }, &[&i], Dtype::I32, &[1, 2])
            .unwrap()
            .ints;
        assert_eq!(out, vec![i32::MAX, i32::MIN]);
    }

    #[test]
    fn inexact_inputs_widen_the_position_bound() {
        let x = f32s(&[1, 4], vec![1.0, 5.0, 4.999, 0.0]);
        let op = TOp::ArgReduce {
            max: true,
            axis: 1,
            keepdims: false,
        };
        let out = eval(&op, &[&x], Dtype::I32, &[1]).unwrap();
        assert_eq!(bound(&op, &[&x], &[&[0.0; 4]], &out).unwrap(), vec![0.0]);
        let b = [0.01f32; 4];
        assert_eq!(bound(&op, &[&x], &[&b], &out).unwrap(), vec![1.0]);
    }
}
