//! The data-movement operations of the reference evaluator: slices, `concat`, `pad` and
//! `broadcast_to`. Each result element is one argument element (or the pad value), so the
//! same functions move values and, in `bound.rs`, their error bounds.

use crate::ir::TOp;

/// Row-major strides (in elements) of a shape, signed.
fn strides(shape: &[u64]) -> Vec<i64> {
    let mut s = vec![1i64; shape.len()];
    for i in (0..shape.len().saturating_sub(1)).rev() {
        s[i] = s[i + 1] * shape[i + 1] as i64;
    }
    s
}

/// Calls `f(offset)` for every index of `shape` in row-major order, with the offset
/// `base + sum(index[i] * strides[i])`.
fn walk(shape: &[u64], strides: &[i64], base: i64, mut f: impl FnMut(i64)) {
    let total: u64 = shape.iter().product();
    let rank = shape.len();
    let mut idx = vec![0u64; rank];
    let mut off = base;
    for _ in 0..total {
        f(off);
        let mut d = rank;
        while d > 0 {
            d -= 1;
            idx[d] += 1;
            off += strides[d];
            if idx[d] < shape[d] {
                break;
            }
            off -= strides[d] * shape[d] as i64;
            idx[d] = 0;
        }
    }
}

/// The result of a data-movement operation `op` (see [`TOp::is_data_movement`], transpose
/// and reshape aside) over arguments `(shape, values)`, of result shape `shape`; `fill` is
/// what `pad` writes (its value, or 0 for bounds). `None` for any other operation.
pub fn move_elems<T: Copy>(
    op: &TOp,
    args: &[(&[u64], &[T])],
    shape: &[u64],
    fill: T,
) -> Option<Vec<T>> {
    let total = shape.iter().product::<u64>() as usize;
    let (arg_shape, data) = *args.first()?;
    Some(match op {
        TOp::Slice(axes) => {
            let own = strides(arg_shape);
            let base: i64 = axes.iter().zip(&own).map(|(a, s)| a.start as i64 * s).sum();
            let kept: Vec<i64> = axes
                .iter()
                .zip(&own)
                .filter(|(a, _)| a.keep)
                .map(|(a, s)| a.step * s)
                .collect();
            let mut out = Vec::with_capacity(total);
            walk(shape, &kept, base, |o| out.push(data[o as usize]));
            out
        }
        TOp::BroadcastTo => {
            let own = strides(arg_shape);
            let pad = shape.len() - arg_shape.len();
            let s: Vec<i64> = (0..shape.len())
                .map(|i| {
                    if i < pad || arg_shape[i - pad] == 1 {
                        0
                    } else {
                        own[i - pad]
                    }
                })
                .collect();
            let mut out = Vec::with_capacity(total);
            walk(shape, &s, 0, |o| out.push(data[o as usize]));
            out
        }
        TOp::Concat(axis) => {
            let outer: u64 = shape[..*axis].iter().product();
            let inner: u64 = shape[*axis + 1..].iter().product();
            let mut out = Vec::with_capacity(total);
            for o in 0..outer as usize {
                for (s, d) in args {
                    let run = (s[*axis] * inner) as usize;
                    out.extend_from_slice(&d[o * run..(o + 1) * run]);
                }
            }
            out
        }
        TOp::Pad { before, .. } => {
            let dest = strides(shape);
            let base: i64 = before.iter().zip(&dest).map(|(&b, s)| b as i64 * s).sum();
            let mut out = vec![fill; total];
            let mut next = data.iter();
            walk(arg_shape, &dest, base, |o| {
                if let Some(&x) = next.next() {
                    out[o as usize] = x;
                }
            });
            out
        }
        _ => return None,
    })
}
