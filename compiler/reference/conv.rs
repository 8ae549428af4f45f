//! The reference evaluator's convolution (`conv`), and the bound `run --check` allows it.
//!
//! The language defines a convolution's accumulation order (docs/language.md): each output
//! element starts at +0.0 and adds the products `x * w` of its group's channels over the
//! taps of the window in row-major order (`kh`, then `kw`), and within each tap over the
//! group's channels `c` in increasing order; each product and each sum rounded to f32.
//! That is the order of a matmul whose reduced index is `k = tap * C_g + c`, so the
//! evaluator builds, per batch index and group, the window matrix (`im2col`: row `k`,
//! column the output position; zero where the window reads padding) and the weight matrix
//! `[O_g, taps * C_g]`, and runs the reference matmul, which keeps that order exactly. The
//! compiler's lowering (`passes/conv.rs`) builds the same matmul, so the two agree bit for
//! bit.

use super::HostTensor;
use crate::ir::ConvAttrs;
use isa::Dtype;

/// The geometry of one convolution, with 1-D treated as 2-D of height 1.
struct Geometry {
    n: usize,
    c: usize,
    h: usize,
    w: usize,
    o: usize,
    kh: usize,
    kw: usize,
    oh: usize,
    ow: usize,
    groups: usize,
    /// (stride, padding, dilation) of the height and width axes.
    sh: usize,
    sw: usize,
    ph: usize,
    pw: usize,
    dh: usize,
    dw: usize,
}

impl Geometry {
    fn new(x: &[u64], w: &[u64], attrs: &ConvAttrs, out: &[u64]) -> Geometry {
        let two = x.len() == 4;
        let at = |v: &[u64], i2: usize, i1: usize| {
            if two {
                v[i2] as usize
            } else if i1 == usize::MAX {
                1
            } else {
                v[i1] as usize
            }
        };
        let attr = |l: &Vec<u64>, axis: usize, default: usize| {
            if two {
                l[axis] as usize
            } else if axis == 0 {
                default
            } else {
                l[0] as usize
            }
        };
        Geometry {
            n: x[0] as usize,
            c: x[1] as usize,
            h: at(x, 2, usize::MAX),
            w: at(x, 3, 2),
            o: w[0] as usize,
            kh: at(w, 2, usize::MAX),
            kw: at(w, 3, 2),
            oh: at(out, 2, usize::MAX),
            ow: at(out, 3, 2),
            groups: attrs.groups as usize,
            sh: attr(&attrs.stride, 0, 1),
            sw: attr(&attrs.stride, 1, 1),
            ph: attr(&attrs.padding, 0, 0),
            pw: attr(&attrs.padding, 1, 0),
            dh: attr(&attrs.dilation, 0, 1),
            dw: attr(&attrs.dilation, 1, 1),
        }
    }
}

/// `conv(x, w)` in the language's order (the module comment); `f(v)` maps each element of
/// both operands first (the identity, or `|v|` for the bound).
pub fn conv(
    x: &HostTensor,
    w: &HostTensor,
    attrs: &ConvAttrs,
    shape: &[u64],
    f: impl Fn(f32) -> f32,
) -> Vec<f32> {
    let g = Geometry::new(&x.shape, &w.shape, attrs, shape);
    let (cg, og) = (g.c / g.groups, g.o / g.groups);
    let taps = g.kh * g.kw;
    let k = taps * cg;
    let positions = g.oh * g.ow;
    let mut out = vec![0f32; g.n * g.o * positions];
    for grp in 0..g.groups {
        // The weights of the group as `[O_g, taps * C_g]`, `k = tap * C_g + c`.
        let mut wm = vec![0f32; og * k];
        for o in 0..og {
            for c in 0..cg {
                for t in 0..taps {
                    let src = ((grp * og + o) * cg + c) * taps + t;
                    wm[o * k + t * cg + c] = f(w.data[src]);
                }
            }
        }
        let wt = HostTensor {
            dtype: Dtype::F32,
            shape: vec![og as u64, k as u64],
            data: wm,
            ints: Vec::new(),
        };
        for n in 0..g.n {
            // The window matrix `[taps * C_g, positions]`.
            let mut xm = vec![0f32; k * positions];
            for (t, (i, j)) in (0..g.kh)
                .flat_map(|i| (0..g.kw).map(move |j| (i, j)))
                .enumerate()
            {
                for c in 0..cg {
                    let plane = (n * g.c + grp * cg + c) * g.h * g.w;
                    let row = &mut xm[(t * cg + c) * positions..][..positions];
                    for oy in 0..g.oh {
                        let iy = (oy * g.sh + i * g.dh) as isize - g.ph as isize;
                        if iy < 0 || iy >= g.h as isize {
                            continue;
                        }
                        for ox in 0..g.ow {
                            let ix = (ox * g.sw + j * g.dw) as isize - g.pw as isize;
                            if ix < 0 || ix >= g.w as isize {
                                continue;
                            }
                            row[oy * g.ow + ox] =
                                f(x.data[plane + iy as usize * g.w + ix as usize]);
                        }
                    }
                }
            }
            let xt = HostTensor {
                dtype: Dtype::F32,
                shape: vec![k as u64, positions as u64],
                data: xm,
                ints: Vec::new(),
            };
            let part = super::matmul(&wt, &xt, &[og as u64, positions as u64]);
            let base = (n * g.o + grp * og) * positions;
            out[base..base + og * positions].copy_from_slice(&part);
        }
    }
    out
}

/// The terms each output element sums (`C_g x kernel elements`), for the bound.
pub fn terms(w: &[u64]) -> u64 {
    w[1..].iter().product()
}
