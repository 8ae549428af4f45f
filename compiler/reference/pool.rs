//! `max_pool` and `avg_pool` on the host, with PyTorch's semantics (`frontend/pool.rs` has
//! the geometry), and their error bounds for `run --check`.
//!
//! - `max_pool`: the IEEE 754-2019 `maximum` of the window's elements inside the input, in
//!   row-major window order (padding is `-inf`, which never wins, since every window holds
//!   an input element). A NaN in the window gives NaN, as PyTorch's CPU and CUDA kernels
//!   do (`val > max || isnan(val)`). Where PyTorch keeps the first of equal values, the
//!   maximum prefers `+0.0` to `-0.0`: a window holding both zeros gives `+0.0` (the
//!   language's `max` and `maximum` do the same).
//! - `avg_pool`: an f32 sum that starts at `+0.0` and adds the window's elements inside the
//!   input in row-major window order, each addition rounded to f32, then one f32 division
//!   by the divisor (the window clipped to the padded input with `count_include_pad`,
//!   else to the input), rounded once to the dtype: PyTorch's CPU kernel.

use super::par;
use super::HostTensor;
use crate::ir::{Pool, PoolKind};
use isa::{AluOp, Dtype};
use runtime::numeric;

/// The unit roundoff of f32.
const U32: f64 = 1.0 / 16_777_216.0;

/// The input viewed as `[rows, h, w]` and the windows of every output position along both
/// spatial axes (a 1-D pool has `h = 1` and a window of one tap there).
struct Geometry {
    h: u64,
    w: u64,
    oh: u64,
    ow: u64,
    /// Per output row: the first input row of the window, the in-bounds taps and the
    /// divisor factor; likewise per output column.
    rows: Vec<crate::frontend::pool::AxisWindow>,
    cols: Vec<crate::frontend::pool::AxisWindow>,
    dh: i64,
    dw: i64,
}

fn geometry(pool: &Pool, input: &[u64], out: &[u64]) -> Geometry {
    let rank = input.len();
    let (h, w) = if pool.axes() == 2 {
        (input[rank - 2], input[rank - 1])
    } else {
        (1, input[rank - 1])
    };
    let (oh, ow) = if pool.axes() == 2 {
        (out[rank - 2], out[rank - 1])
    } else {
        (1, out[rank - 1])
    };
    let last = pool.axes() - 1;
    let rows = if pool.axes() == 2 {
        (0..oh).map(|o| pool.window_of(0, h, o)).collect()
    } else {
        vec![crate::frontend::pool::AxisWindow {
            start: 0,
            first: 0,
            end: 1,
            divisor: 1,
        }]
    };
    let cols = (0..ow).map(|o| pool.window_of(last, w, o)).collect();
    Geometry {
        h,
        w,
        oh,
        ow,
        rows,
        cols,
        dh: if pool.axes() == 2 {
            pool.dilation[0] as i64
        } else {
            1
        },
        dw: pool.dilation[last] as i64,
    }
}

impl Geometry {
    /// Calls `f` with the flat input index of every in-bounds tap of output `i` (flat over
    /// `[rows, oh, ow]`), in row-major window order; returns the divisor.
    fn taps(&self, i: usize, mut f: impl FnMut(usize)) -> u64 {
        let i = i as u64;
        let (r, o) = (i / (self.oh * self.ow), i % (self.oh * self.ow));
        let (rw, cw) = (
            &self.rows[(o / self.ow) as usize],
            &self.cols[(o % self.ow) as usize],
        );
        let base = r * self.h * self.w;
        for ti in rw.first..rw.end {
            let y = (rw.start + ti as i64 * self.dh) as u64;
            for tj in cw.first..cw.end {
                let x = (cw.start + tj as i64 * self.dw) as u64;
                f((base + y * self.w + x) as usize);
            }
        }
        rw.divisor * cw.divisor
    }
}

/// The pool of `x` (values already of `x`'s dtype) with result shape `shape`, rounded to
/// `dtype`.
pub fn eval(pool: &Pool, x: &HostTensor, dtype: Dtype, shape: &[u64]) -> Vec<f32> {
    let g = geometry(pool, &x.shape, shape);
    let n = shape.iter().product::<u64>() as usize;
    par::collect(n, |i| match pool.kind {
        PoolKind::Max => {
            let mut acc = f32::NEG_INFINITY;
            g.taps(i, |j| acc = numeric::maximum(acc, x.data[j]));
            numeric::round(dtype, acc)
        }
        PoolKind::Avg => {
            let mut sum = 0.0f32;
            let div = g.taps(i, |j| sum = numeric::alu(AluOp::Add, sum, x.data[j]));
            numeric::round(dtype, numeric::alu(AluOp::Div, sum, div as f32))
        }
    })
}

/// The propagated bound of each output (before the result's own rounding): the largest
/// bound in the window for the maximum (exact); for the average, the sum's bound (the
/// terms' bounds and `2 n u` times their magnitudes, any order of `n` f32 additions) over
/// the divisor.
pub fn prop(pool: &Pool, x: &HostTensor, bound: &[f32], shape: &[u64]) -> Vec<f64> {
    let g = geometry(pool, &x.shape, shape);
    let n = shape.iter().product::<u64>() as usize;
    par::collect(n, |i| match pool.kind {
        PoolKind::Max => {
            let mut b = 0f64;
            g.taps(i, |j| b = b.max(bound[j] as f64));
            b
        }
        PoolKind::Avg => {
            let (mut terms, mut mag, mut count) = (0f64, 0f64, 0u64);
            let div = g.taps(i, |j| {
                terms += bound[j] as f64;
                mag += (x.data[j] as f64).abs();
                count += 1;
            });
            (terms + 2.0 * count as f64 * U32 * mag) / div as f64
        }
    })
}
