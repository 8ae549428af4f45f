//! A random generator of convolution and pooling kernels, for the differential test's
//! fourth mode: 1-D and 2-D `conv` (stride, padding, dilation, groups up to 16 and
//! depthwise, f32, bf16 and mixed operands, bias, relu and residual epilogues, a cast of
//! the result), `max_pool` (dilation, `ceil_mode`) and `avg_pool` (`ceil_mode`,
//! `count_include_pad`), fed by the input as it is or by an elementwise chain, chained one
//! into another (a pool after a convolution, a convolution after a pool or after another
//! convolution), and feeding matmuls on either side, reductions or an elementwise step.
//!
//! Channels are small (1 to 64) or around and above the 128 partitions (128 to 160), and
//! the spatial axes a few elements (some 1-D ones longer than a PSUM bank), so that both of
//! the machine's lowerings of a convolution of one group (implicit GEMM and the window
//! matrix) are drawn, and grouped and depthwise ones; the differential test records which
//! lowering each convolution got. The shapes the generator writes in the kernel's types
//! are computed here from the language's formulas, so a kernel that does not check is a
//! disagreement between this file and the checker (and the test reports it).
//!
//! It has its own function and seed stream, like `v2_gen` and `attention_gen`, so that the
//! other modes' seeds keep generating what they did. Its numerics are those of
//! `driver::random_tensor` inputs in [-1, 1] through at most a few thousand products a sum;
//! `driver::expected` propagates the bounds each output is compared within.

use super::kernel_gen::Rng;
use super::v2_gen::{kernel_text, Names};
use std::fmt::Write as _;

/// A generated convolution or pooling kernel.
#[derive(Clone, Debug)]
pub struct ConvKernel {
    pub source: String,
    /// The constructs and compositions it exercises (`conv:depthwise`, `matmul<-pool`,
    /// ...).
    pub features: Vec<String>,
}

/// A value of the kernel: its name, dtype, shape `[N, C, spatial..]` and what made it.
#[derive(Clone, Debug)]
struct Val {
    name: String,
    dtype: &'static str,
    shape: Vec<u64>,
    origin: &'static str,
}

struct Gen {
    rng: Rng,
    params: Vec<String>,
    lets: Vec<String>,
    names: Names,
}

/// The positions of a convolution along an axis of `n` elements.
fn conv_len(n: u64, k: u64, s: u64, p: u64, d: u64) -> Option<u64> {
    let span = d * (k - 1) + 1;
    (span <= n + 2 * p).then(|| (n + 2 * p - span) / s + 1)
}

/// The positions of a pool along an axis of `n` elements (PyTorch's rule: with
/// `ceil_mode` the ceiling, less one when the last window would start past the input and
/// its left padding).
fn pool_len(n: u64, k: u64, s: u64, p: u64, d: u64, ceil: bool) -> Option<u64> {
    let span = d * (k - 1) + 1;
    if span > n + 2 * p || 2 * p > k {
        return None;
    }
    let room = n + 2 * p - span;
    let mut out = if ceil { room.div_ceil(s) } else { room / s } + 1;
    if ceil && (out - 1) * s >= n + p {
        out -= 1;
    }
    Some(out)
}

/// A list attribute's text: `[a, b]`.
fn list(v: &[u64]) -> String {
    let items: Vec<String> = v.iter().map(|x| x.to_string()).collect();
    format!("[{}]", items.join(", "))
}

/// A type's text: `bf16[2, 8, 5, 5]`.
fn ty(dtype: &str, shape: &[u64]) -> String {
    let items: Vec<String> = shape.iter().map(|x| x.to_string()).collect();
    format!("{dtype}[{}]", items.join(", "))
}

/// Generates the convolution or pooling kernel of `seed`.
pub fn generate_conv(seed: u64) -> ConvKernel {
    let mut g = Gen {
        rng: Rng::new(seed ^ 0x0063_6F6E_7667_656E),
        params: Vec::new(),
        lets: Vec::new(),
        names: Names::default(),
    };
    let two_d = g.rng.chance(0.6);
    let n = g.rng.range(1, 3);
    let wide = g.rng.chance(0.25);
    let c = if wide {
        g.names.feature("channels>=128");
        g.rng.pick(&[128u64, 129, 130, 144, 160])
    } else {
        g.rng.pick(&[1u64, 2, 3, 4, 6, 8, 12, 16, 32, 64])
    };
    let spatial: Vec<u64> = if two_d {
        let top = if wide { 8 } else { 13 };
        vec![g.rng.range(3, top), g.rng.range(3, top)]
    } else if !wide && g.rng.chance(0.15) {
        // Longer than a PSUM bank of positions.
        g.names.feature("long_row");
        vec![g.rng.range(520, 640)]
    } else {
        vec![g.rng.range(4, if wide { 40 } else { 90 })]
    };
    let dtype = g.rng.pick(&["f32", "bf16"]);
    let mut shape = vec![n, c];
    shape.extend(&spatial);
    g.params.push(format!("x: {}", ty(dtype, &shape)));
    let mut v = Val {
        name: "x".to_string(),
        dtype,
        shape,
        origin: "param",
    };
    if g.rng.chance(0.5) {
        v = g.chain(&v);
    }
    let stages = if g.rng.chance(0.3) { 2 } else { 1 };
    for _ in 0..stages {
        v = match g.rng.weighted(&[5, 2, 2]) {
            0 => g.conv(&v),
            1 => g.pool(&v, true),
            _ => g.pool(&v, false),
        };
    }
    let (expr, ret) = g.consume(&v);
    let src = kernel_text(
        &format!("Generated convolution and pooling kernel, seed {seed} (TESSERA_CONV_SEED)."),
        &g.params,
        &g.lets,
        &[(expr, ret)],
    );
    ConvKernel {
        source: src,
        features: g.names.features.into_iter().collect(),
    }
}

impl Gen {
    /// Binds `expr` to a fresh `let` and returns the value.
    fn bind(
        &mut self,
        expr: String,
        dtype: &'static str,
        shape: Vec<u64>,
        origin: &'static str,
    ) -> Val {
        let name = self.names.fresh("v");
        self.lets.push(format!("let {name} = {expr};"));
        Val {
            name,
            dtype,
            shape,
            origin,
        }
    }

    /// An elementwise chain of one to three steps on `v`, ending in `v`'s dtype or f32.
    fn chain(&mut self, v: &Val) -> Val {
        let mut e = v.name.clone();
        let mut dtype = v.dtype;
        for _ in 0..self.rng.range(1, 4) {
            e = match self.rng.below(8) {
                0 => format!("tanh({e})"),
                1 => format!("({e}) * 0.5 + 0.25"),
                2 => format!("relu({e}) - 0.125"),
                3 => format!("exp(({e}) * 0.5)"),
                4 => format!("abs({e})"),
                5 => format!("sigmoid({e})"),
                6 => {
                    dtype = "f32";
                    format!("(({e}) as f32) * 0.75")
                }
                _ => {
                    dtype = "bf16";
                    format!("({e}) as bf16")
                }
            };
        }
        self.names.feature("chain");
        self.bind(e, dtype, v.shape.clone(), "chain")
    }

    /// A convolution of `v` with a random window, stride, padding, dilation and groups,
    /// and a random epilogue (bias, residual add, relu, cast to bf16).
    fn conv(&mut self, v: &Val) -> Val {
        let c = v.shape[1];
        let spatial = &v.shape[2..];
        let axes = spatial.len();
        // The window and its attributes, drawn until they fit every axis.
        let (k, s, p, d, out) = loop {
            let mut k = Vec::new();
            let mut s = Vec::new();
            let mut p = Vec::new();
            let mut d = Vec::new();
            let mut out = Vec::new();
            for &len in spatial {
                k.push(self.rng.pick(&[1u64, 1, 2, 3, 3, 3, 4, 5]));
                s.push(self.rng.pick(&[1u64, 1, 1, 2, 3]));
                p.push(self.rng.pick(&[0u64, 0, 1, 1, 2, 3]));
                d.push(self.rng.pick(&[1u64, 1, 1, 2, 3]));
                let i = k.len() - 1;
                match conv_len(len, k[i], s[i], p[i], d[i]) {
                    Some(o) => out.push(o),
                    None => break,
                }
            }
            if out.len() == axes {
                break (k, s, p, d, out);
            }
        };
        // Groups: one, a few (at most 16, which the machine lowers), or depthwise.
        let (groups, o) = match self.rng.weighted(&[6, 2, 2]) {
            1 => {
                let divisors: Vec<u64> = (2..=16.min(c)).filter(|g| c.is_multiple_of(*g)).collect();
                if divisors.is_empty() {
                    (1, self.out_channels(1))
                } else {
                    let g = self.rng.pick(&divisors);
                    self.names.feature("conv:groups");
                    (g, g * self.rng.range(1, 4))
                }
            }
            2 if c > 1 => {
                self.names.feature("conv:depthwise");
                (c, c)
            }
            _ => (1, self.out_channels(c)),
        };
        let w_dtype = if self.rng.chance(0.2) {
            self.names.feature("conv:mixed_dtypes");
            if v.dtype == "f32" {
                "bf16"
            } else {
                "f32"
            }
        } else {
            v.dtype
        };
        self.names.feature(format!("conv:{}", v.dtype));
        self.names.feature(format!("conv{axes}d"));
        let w = self.names.fresh("w");
        let mut ws = vec![o, c / groups];
        ws.extend(&k);
        self.params.push(format!("{w}: {}", ty(w_dtype, &ws)));
        let mut call = format!("conv({}, {w}", v.name);
        if s.iter().any(|&x| x != 1) || self.rng.chance(0.2) {
            self.names.feature("conv:stride");
            let _ = write!(call, ", stride={}", list(&s));
        }
        if p.iter().any(|&x| x != 0) || self.rng.chance(0.2) {
            self.names.feature("conv:padding");
            let _ = write!(call, ", padding={}", list(&p));
        }
        if d.iter().any(|&x| x != 1) || self.rng.chance(0.2) {
            self.names.feature("conv:dilation");
            let _ = write!(call, ", dilation={}", list(&d));
        }
        if groups != 1 || self.rng.chance(0.1) {
            let _ = write!(call, ", groups={groups}");
        }
        call.push(')');
        let mut shape = vec![v.shape[0], o];
        shape.extend(&out);
        let mut e = call;
        if self.rng.chance(0.6) {
            self.names.feature("conv:bias");
            let b = self.names.fresh("b");
            self.params.push(format!("{b}: f32[{o}]"));
            let ones = vec!["1"; axes].join(", ");
            e = format!("{e} + reshape({b}, [1, {o}, {ones}])");
        }
        if self.rng.chance(0.25) {
            self.names.feature("conv:residual");
            let r = self.names.fresh("r");
            let rd = self.rng.pick(&["f32", "bf16"]);
            self.params.push(format!("{r}: {}", ty(rd, &shape)));
            e = format!("{e} + {r}");
        }
        if self.rng.chance(0.5) {
            self.names.feature("conv:relu");
            e = format!("relu({e})");
        }
        let dtype = if self.rng.chance(0.5) {
            self.names.feature("conv:cast");
            e = format!("({e}) as bf16");
            "bf16"
        } else {
            "f32"
        };
        self.names.feature(format!("conv<-{}", v.origin));
        self.bind(e, dtype, shape, "conv")
    }

    /// Output channels of a convolution of one group over `c` input channels.
    fn out_channels(&mut self, c: u64) -> u64 {
        if c >= 128 || self.rng.chance(0.15) {
            self.rng.pick(&[64u64, 128, 130, 140])
        } else {
            self.rng.pick(&[1u64, 2, 5, 8, 16, 24, 32])
        }
    }

    /// The window, stride, padding and dilation of a pool over `spatial`, drawn until they
    /// fit, and its output positions.
    #[allow(clippy::type_complexity)]
    fn pool_window(
        &mut self,
        spatial: &[u64],
        dilated: bool,
        ceil: bool,
    ) -> (Vec<u64>, Vec<u64>, Vec<u64>, Vec<u64>, Vec<u64>) {
        loop {
            let (mut k, mut s, mut p, mut d, mut out) =
                (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
            for &len in spatial {
                let ki = self.rng.pick(&[1u64, 2, 2, 3, 3, 4, 5]);
                let si = self.rng.pick(&[1u64, 2, 2, 3]).min(ki.max(1) + 1);
                let pi = self.rng.below(ki / 2 + 1);
                let di = if dilated {
                    self.rng.pick(&[1u64, 2, 3])
                } else {
                    1
                };
                match pool_len(len, ki, si, pi, di, ceil) {
                    Some(o) => out.push(o),
                    None => break,
                }
                k.push(ki);
                s.push(si);
                p.push(pi);
                d.push(di);
            }
            if out.len() == spatial.len() {
                return (k, s, p, d, out);
            }
        }
    }

    /// A `max_pool` (with a dilation now and then) or an `avg_pool` (with
    /// `count_include_pad=false` now and then) of `v`, with `ceil_mode` now and then.
    fn pool(&mut self, v: &Val, max: bool) -> Val {
        let f = if max { "max_pool" } else { "avg_pool" };
        let axes = v.shape.len() - 2;
        let dilated = max && self.rng.chance(0.4);
        let ceil = self.rng.chance(0.35);
        let (k, s, p, d, out) = self.pool_window(&v.shape[2..], dilated, ceil);
        let mut call = format!("{f}({}, window={}", v.name, list(&k));
        if s != k || self.rng.chance(0.3) {
            let _ = write!(call, ", stride={}", list(&s));
        }
        if p.iter().any(|&x| x != 0) {
            self.names.feature("pool:padding");
            let _ = write!(call, ", padding={}", list(&p));
        }
        if d.iter().any(|&x| x != 1) {
            self.names.feature(format!("{f}:dilation"));
            let _ = write!(call, ", dilation={}", list(&d));
        }
        if ceil {
            self.names.feature(format!("{f}:ceil_mode"));
            call.push_str(", ceil_mode=true");
        }
        if !max && self.rng.chance(0.4) {
            self.names.feature("avg_pool:count_include_pad=false");
            call.push_str(", count_include_pad=false");
        }
        call.push(')');
        self.names.feature(format!("pool{axes}d"));
        self.names.feature(format!("{f}<-{}", v.origin));
        let mut shape = v.shape[..2].to_vec();
        shape.extend(&out);
        self.bind(call, v.dtype, shape, "pool")
    }

    /// The kernel's result from `v`: `v` itself, a matmul of its rows (`[N x C, positions]`)
    /// on either side, a reduction over an axis, or an elementwise step.
    fn consume(&mut self, v: &Val) -> (String, String) {
        let rows = v.shape[0] * v.shape[1];
        let cols: u64 = v.shape[2..].iter().product();
        let flat = format!("reshape({}, [{rows}, {cols}])", v.name);
        let (expr, ret, how) = match self.rng.weighted(&[3, 3, 2, 3, 1]) {
            0 => (v.name.clone(), ty(v.dtype, &v.shape), "out"),
            1 => {
                let m = self.rng.pick(&[1u64, 7, 32, 129]);
                let w = self.names.fresh("m");
                self.params
                    .push(format!("{w}: {}", ty(v.dtype, &[cols, m])));
                (format!("{flat} @ {w}"), ty("f32", &[rows, m]), "matmul")
            }
            2 => {
                let m = self.rng.pick(&[1u64, 5, 64, 130]);
                let w = self.names.fresh("m");
                self.params
                    .push(format!("{w}: {}", ty(v.dtype, &[m, rows])));
                (format!("{w} @ {flat}"), ty("f32", &[m, cols]), "matmul")
            }
            3 => {
                let red = self.rng.pick(&["sum", "max", "min", "mean"]);
                let axis = self.rng.below(v.shape.len() as u64) as usize;
                let mut shape = v.shape.clone();
                shape.remove(axis);
                (
                    format!("{red}({}, axis={axis})", v.name),
                    ty(v.dtype, &shape),
                    "reduce",
                )
            }
            _ => (
                format!("tanh({} * 0.25)", v.name),
                ty(v.dtype, &v.shape),
                "out",
            ),
        };
        self.names.feature(format!("{how}<-{}", v.origin));
        (expr, ret)
    }
}
