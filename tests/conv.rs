//! The reference evaluator's `conv` against direct loops written from PyTorch's definition
//! (`out[n, o, y, x] = sum over c of the group, i, j of in[n, c, y s - p + i d, ..] *
//! w[o, c, i, j]`, zero outside the input), on integer data whose sums are exact in any
//! order, over 1-D and 2-D, stride, padding, dilation, groups and depthwise; and the
//! language's accumulation order (taps outer, channels inner) on data where the order
//! changes the f32 result.

use isa::Dtype;
use tessera::reference::{evaluate, HostTensor};

/// One convolution case: input and weight shapes and the attributes.
struct Case {
    x: Vec<u64>,
    w: Vec<u64>,
    stride: Vec<u64>,
    padding: Vec<u64>,
    dilation: Vec<u64>,
    groups: u64,
}

/// Small integers from a seed (exact in every dtype and every sum here).
fn ints(n: u64, seed: u64) -> Vec<f32> {
    let mut s = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    (0..n)
        .map(|_| {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((s >> 33) % 7) as f32 - 3.0
        })
        .collect()
}

fn list(v: &[u64]) -> String {
    format!(
        "[{}]",
        v.iter().map(u64::to_string).collect::<Vec<_>>().join(", ")
    )
}

/// The direct loops, in f64; shapes as 2-D with height 1 for 1-D.
fn direct(c: &Case, x: &[f32], w: &[f32], out: &[u64]) -> Vec<f64> {
    let two = c.x.len() == 4;
    let g = |v: &[u64], i: usize| {
        if two {
            v[i]
        } else if i == 2 {
            1
        } else {
            v[i - 1]
        }
    };
    let a = |v: &[u64], i: usize, d: u64| {
        if two {
            v[i]
        } else if i == 0 {
            d
        } else {
            v[0]
        }
    };
    let (n, ci, h, wd) = (c.x[0], c.x[1], g(&c.x, 2), g(&c.x, 3));
    let (o, cg, kh, kw) = (c.w[0], c.w[1], g(&c.w, 2), g(&c.w, 3));
    let (oh, ow) = (g(out, 2), g(out, 3));
    let og = o / c.groups;
    let (sh, sw) = (a(&c.stride, 0, 1), a(&c.stride, 1, 1));
    let (ph, pw) = (a(&c.padding, 0, 0), a(&c.padding, 1, 0));
    let (dh, dw) = (a(&c.dilation, 0, 1), a(&c.dilation, 1, 1));
    let mut res = Vec::new();
    for b in 0..n {
        for oc in 0..o {
            let grp = oc / og;
            for y in 0..oh {
                for xx in 0..ow {
                    let mut acc = 0f64;
                    for cc in 0..cg {
                        let chan = grp * cg + cc;
                        for i in 0..kh {
                            for j in 0..kw {
                                let iy = (y * sh + i * dh) as i64 - ph as i64;
                                let ix = (xx * sw + j * dw) as i64 - pw as i64;
                                if iy < 0 || ix < 0 || iy >= h as i64 || ix >= wd as i64 {
                                    continue;
                                }
                                let xv = x
                                    [(((b * ci + chan) * h + iy as u64) * wd + ix as u64) as usize];
                                let wv = w[(((oc * cg + cc) * kh + i) * kw + j) as usize];
                                acc += xv as f64 * wv as f64;
                            }
                        }
                    }
                    res.push(acc);
                }
            }
        }
    }
    res
}

/// Evaluates `conv` on the reference for a case; returns its shape and values.
fn reference(c: &Case, dtype: &str, x: &[f32], w: &[f32]) -> HostTensor {
    let src = format!(
        "kernel k(x: {dtype}{}, w: {dtype}{}) -> f32[1] {{
            let y = conv(x, w, stride={}, padding={}, dilation={}, groups={});
            return reshape(sum(reshape(y, [1, -1]), axis=1), [1]);
        }}",
        list(&c.x),
        list(&c.w),
        list(&c.stride),
        list(&c.padding),
        list(&c.dilation),
        c.groups
    );
    // The result type of `y` is not known here, so the kernel returns a sum; the conv's
    // own value is read from the evaluator's environment through a second kernel that
    // returns it with the type the first one's IR gives.
    let kernels = tessera::frontend::check_file(&src, &[], None).expect("the case checks");
    let func = tessera::ir::lower(&kernels[0]);
    let conv_ty = func
        .layout
        .iter()
        .map(|&i| &func.insts[i])
        .find(|d| matches!(d.op, tessera::ir::TOp::Conv(_)))
        .map(|d| func.ty(d.result).clone())
        .expect("a conv instruction");
    let src2 = src.replace("-> f32[1]", &format!("-> {conv_ty}")).replace(
        "return reshape(sum(reshape(y, [1, -1]), axis=1), [1]);",
        "return y;",
    );
    let kernels = tessera::frontend::check_file(&src2, &[], None).expect("the case checks");
    let func = tessera::ir::lower(&kernels[0]);
    tessera::ir::verify(&func, "test").expect("verifies");
    let d = if dtype == "bf16" {
        Dtype::Bf16
    } else {
        Dtype::F32
    };
    let inputs = [
        HostTensor::from_f32(d, &c.x, x),
        HostTensor::from_f32(d, &c.w, w),
    ];
    evaluate(&func, &inputs).expect("evaluates").remove(0)
}

#[test]
fn reference_conv_matches_direct_loops() {
    let cases = [
        // 2-D, defaults.
        Case {
            x: vec![2, 3, 5, 6],
            w: vec![4, 3, 3, 3],
            stride: vec![1, 1],
            padding: vec![0, 0],
            dilation: vec![1, 1],
            groups: 1,
        },
        // 2-D, stride, padding and dilation differing per axis.
        Case {
            x: vec![1, 4, 9, 7],
            w: vec![5, 4, 3, 2],
            stride: vec![2, 3],
            padding: vec![1, 2],
            dilation: vec![2, 1],
            groups: 1,
        },
        // Padding wider than the window (PyTorch allows it for conv).
        Case {
            x: vec![1, 2, 3, 3],
            w: vec![2, 2, 2, 2],
            stride: vec![1, 1],
            padding: vec![3, 3],
            dilation: vec![1, 1],
            groups: 1,
        },
        // 1-D, stride and padding.
        Case {
            x: vec![2, 6, 11],
            w: vec![3, 6, 4],
            stride: vec![2],
            padding: vec![1],
            dilation: vec![1],
            groups: 1,
        },
        // 1-D, dilation, groups.
        Case {
            x: vec![1, 6, 12],
            w: vec![4, 3, 3],
            stride: vec![1],
            padding: vec![2],
            dilation: vec![2],
            groups: 2,
        },
        // 2-D grouped with several output channels per group.
        Case {
            x: vec![2, 6, 5, 5],
            w: vec![9, 2, 3, 3],
            stride: vec![1, 1],
            padding: vec![1, 1],
            dilation: vec![1, 1],
            groups: 3,
        },
        // Depthwise, strided.
        Case {
            x: vec![2, 5, 7, 6],
            w: vec![5, 1, 3, 3],
            stride: vec![2, 2],
            padding: vec![1, 1],
            dilation: vec![1, 1],
            groups: 5,
        },
        // 1x1.
        Case {
            x: vec![1, 8, 4, 4],
            w: vec![3, 8, 1, 1],
            stride: vec![1, 1],
            padding: vec![0, 0],
            dilation: vec![1, 1],
            groups: 1,
        },
    ];
    for (i, c) in cases.iter().enumerate() {
        let x = ints(c.x.iter().product(), 2 * i as u64);
        let w = ints(c.w.iter().product(), 2 * i as u64 + 1);
        for dtype in ["f32", "bf16"] {
            let got = reference(c, dtype, &x, &w);
            let want = direct(c, &x, &w, &got.shape);
            assert_eq!(got.data.len(), want.len(), "case {i}");
            for (k, (g, e)) in got.data.iter().zip(&want).enumerate() {
                assert_eq!(*g as f64, *e, "case {i} ({dtype}), element {k}");
            }
            assert!(want.iter().any(|v| *v != 0.0), "case {i} is not all zero");
        }
    }
}

#[test]
fn conv_accumulates_taps_outer_channels_inner() {
    // 1-D, 2 channels, 2 taps, one output position: the products in the language's order
    // (tap 0: c0, c1; tap 1: c0, c1) are 2^30, 1, -2^30, 1: ((2^30 + 1) - 2^30) + 1 = 1 in
    // f32 (2^30 + 1 rounds to 2^30). Channels outer would give (2^30 - 2^30) + 1 + 1 = 2.
    let c = Case {
        x: vec![1, 2, 2],
        w: vec![1, 2, 2],
        stride: vec![1],
        padding: vec![0],
        dilation: vec![1],
        groups: 1,
    };
    // x[c, t], w[c, t]: products x * w = [[2^30, -2^30], [1, 1]] by channel, tap.
    let x = [1.0, 1.0, 1.0, 1.0];
    let w = [1073741824.0, -1073741824.0, 1.0, 1.0];
    let got = reference(&c, "f32", &x, &w);
    assert_eq!(got.shape, vec![1, 1, 1]);
    assert_eq!(got.data, vec![1.0]);
}
