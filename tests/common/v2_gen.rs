//! A random generator of kernels in the language's version 2, for the differential test's
//! third mode: slices (steps, negative steps, integer indices), `concat`, `pad`,
//! `broadcast_to`, comparisons with `where` and `logical_and/or/not`, `arange` and `i32`
//! values with wrapping arithmetic, and `take` with `i32` parameter indices, with indices
//! the kernel computes and of `i32` tables, composed with each other and feeding matmuls,
//! reductions and elementwise work.
//!
//! It is separate from `kernel_gen` (its own function and seed stream) so that the chains'
//! seeds keep generating exactly what they did. Its numerics are tame on purpose: every
//! float value is `f32` (the version-2 operations move or select values, they do not round
//! them), inputs are those of `driver::random_tensor` in [-1, 1], and the only arithmetic
//! is a matmul over at most a few hundred terms, a reduction, `exp` or a scaling, so the
//! bounds `driver::expected` propagates cover the compiled code in both dtype policies.
//! `i32` values are compared bit for bit.
//!
//! A kernel is a pool of 2-D `f32` values, starting with the parameter `x`; each step
//! applies a version-2 producer to a value of the pool and adds the result; then one to
//! three values of the pool (always the last) go through a consumer (returned as they are,
//! a matmul on either side, a reduction, `exp`) into the results. Optionally an `i32`
//! result mixes an `i32` parameter, `arange` and wrapping `+ - *`, sometimes scanned by
//! `cumsum` or reduced by `argmax`/`argmin`.

use super::kernel_gen::Rng;
use std::collections::BTreeSet;
use std::fmt::Write as _;

/// A generated version-2 kernel.
#[derive(Clone, Debug)]
pub struct V2Kernel {
    pub source: String,
    /// The constructs and compositions it exercises (`slice:neg`, `matmul<-take`, ...).
    pub features: Vec<String>,
}

/// The largest dim a generated value may have.
const MAX_DIM: u64 = 300;

/// Dims of the parameters: small, odd, and around the 128 partitions.
const DIMS: [u64; 12] = [1, 2, 3, 5, 8, 17, 32, 64, 100, 127, 128, 129];

/// A 2-D `f32` value of the pool: its name and shape, and the producer that made it.
#[derive(Clone, Debug)]
struct Val {
    name: String,
    shape: [u64; 2],
    origin: &'static str,
}

/// The fresh names and the coverage features a generator has used so far (shared by the
/// version-2 and convolution generators).
#[derive(Default)]
pub struct Names {
    next: usize,
    pub features: BTreeSet<String>,
}

impl Names {
    /// A name not used before: `prefix` and a counter.
    pub fn fresh(&mut self, prefix: &str) -> String {
        self.next += 1;
        format!("{prefix}{}", self.next)
    }

    /// Records that the kernel being drawn exercises `f`.
    pub fn feature(&mut self, f: impl Into<String>) {
        self.features.insert(f.into());
    }
}

struct Gen {
    rng: Rng,
    params: Vec<String>,
    lets: Vec<String>,
    pool: Vec<Val>,
    results: Vec<(String, String)>,
    names: Names,
}

/// NumPy's length of `start:stop:step` over `n` elements, with the parts given.
fn slice_len(n: i64, start: Option<i64>, stop: Option<i64>, step: i64) -> i64 {
    let norm = |v: i64, lo: i64, hi: i64| {
        let v = if v < 0 { v + n } else { v };
        v.clamp(lo, hi)
    };
    if step > 0 {
        let a = start.map_or(0, |s| norm(s, 0, n));
        let b = stop.map_or(n, |s| norm(s, 0, n));
        if b > a {
            (b - a + step - 1) / step
        } else {
            0
        }
    } else {
        let a = start.map_or(n - 1, |s| norm(s, -1, n - 1));
        let b = stop.map_or(-1, |s| norm(s, -1, n - 1));
        if a > b {
            (a - b + (-step) - 1) / (-step)
        } else {
            0
        }
    }
}

/// Generates the version-2 kernel of `seed`.
pub fn generate_v2(seed: u64) -> V2Kernel {
    let mut g = Gen {
        rng: Rng::new(seed ^ 0x7632_5F67_656E),
        params: Vec::new(),
        lets: Vec::new(),
        pool: Vec::new(),
        results: Vec::new(),
        names: Names::default(),
    };
    let r = g.rng.pick(&DIMS[2..]);
    let c = g.rng.pick(&DIMS[2..]);
    g.params.push(format!("x: f32[{r}, {c}]"));
    g.pool.push(Val {
        name: "x".to_string(),
        shape: [r, c],
        origin: "param",
    });
    let steps = g.rng.range(1, 4);
    for _ in 0..steps {
        g.produce();
    }
    let last = g.pool.len() - 1;
    g.consume(last);
    for _ in 0..g.rng.below(3) {
        let i = g.rng.below(g.pool.len() as u64) as usize;
        g.consume(i);
    }
    if g.rng.chance(0.35) {
        g.int_result();
    }
    let src = kernel_text(
        &format!("Generated version-2 kernel, seed {seed} (TESSERA_V2_SEED)."),
        &g.params,
        &g.lets,
        &g.results,
    );
    V2Kernel {
        source: src,
        features: g.names.features.into_iter().collect(),
    }
}

/// The text of kernel `k`: a comment line, the parameters, one `let` a line, and the
/// results (each an expression and its type; two or more make a tuple).
pub fn kernel_text(
    comment: &str,
    params: &[String],
    lets: &[String],
    results: &[(String, String)],
) -> String {
    let mut src = String::new();
    let _ = writeln!(src, "// {comment}");
    let types: Vec<&str> = results.iter().map(|(_, t)| t.as_str()).collect();
    let ret = if types.len() == 1 {
        types[0].to_string()
    } else {
        format!("({})", types.join(", "))
    };
    let _ = writeln!(src, "kernel k({}) -> {ret} {{", params.join(", "));
    for l in lets {
        let _ = writeln!(src, "    {l}");
    }
    let exprs: Vec<&str> = results.iter().map(|(e, _)| e.as_str()).collect();
    if exprs.len() == 1 {
        let _ = writeln!(src, "    return {};", exprs[0]);
    } else {
        let _ = writeln!(src, "    return ({});", exprs.join(", "));
    }
    src.push_str("}\n");
    src
}

impl Gen {
    /// A random slice of an axis of `n` elements: its text and length (at least 1).
    fn slice(&mut self, n: u64) -> (String, u64) {
        let n = n as i64;
        loop {
            let step = self.rng.pick(&[1i64, 1, 2, 3, -1, -2, -3]);
            let start = if self.rng.chance(0.5) {
                let s = self.rng.below(n as u64) as i64;
                Some(if self.rng.chance(0.3) { s - n } else { s })
            } else {
                None
            };
            let stop = if self.rng.chance(0.5) {
                let s = self.rng.range(0, n as u64 + 2) as i64;
                Some(if self.rng.chance(0.3) { s - n } else { s })
            } else {
                None
            };
            let len = slice_len(n, start, stop, step);
            if len < 1 {
                continue;
            }
            let part = |v: Option<i64>| v.map_or(String::new(), |v| v.to_string());
            let text = if step == 1 && self.rng.chance(0.5) {
                format!("{}:{}", part(start), part(stop))
            } else {
                format!("{}:{}:{step}", part(start), part(stop))
            };
            if step < 0 {
                self.names.feature("slice:neg_step");
            } else if step > 1 {
                self.names.feature("slice:step");
            }
            if start.is_some_and(|s| s < 0) || stop.is_some_and(|s| s < 0) {
                self.names.feature("slice:neg_bound");
            }
            return (text, len as u64);
        }
    }

    /// Adds a `let` of a 2-D `f32` value to the pool.
    fn push(&mut self, expr: String, shape: [u64; 2], origin: &'static str) {
        let name = self.names.fresh("v");
        self.lets.push(format!("let {name} = {expr};"));
        self.names.feature(origin);
        self.pool.push(Val {
            name,
            shape,
            origin,
        });
    }

    /// Applies one version-2 producer to a value of the pool.
    fn produce(&mut self) {
        let base = self.pool[self.rng.below(self.pool.len() as u64) as usize].clone();
        let [r, c] = base.shape;
        let b = &base.name;
        match self.rng.weighted(&[4, 3, 3, 2, 2, 3, 2, 3, 2]) {
            0 => {
                let (s0, r2) = self.slice(r);
                let (s1, c2) = self.slice(c);
                self.push(format!("{b}[{s0}, {s1}]"), [r2, c2], "slice");
            }
            1 => {
                // An integer index drops an axis; a broadcast_to (or broadcasting against
                // the base) brings a 2-D value back.
                let i = self.rng.below(r) as i64;
                let i = if self.rng.chance(0.4) {
                    i - r as i64
                } else {
                    i
                };
                self.names.feature("index");
                let rows = self.rng.range(1, 130);
                if self.rng.chance(0.5) {
                    self.names.feature("broadcast_to");
                    self.push(
                        format!("broadcast_to({b}[{i}], [{rows}, {c}])"),
                        [rows, c],
                        "index",
                    );
                } else {
                    self.push(format!("{b} - {b}[{i}, :]"), [r, c], "index");
                }
            }
            2 => {
                // Two parts of the base joined along an axis.
                let axis = self.rng.below(2) as usize;
                let other = [r, c][1 - axis];
                let (s_a, n_a) = self.slice([r, c][axis]);
                let (s_b, n_b) = self.slice([r, c][axis]);
                if n_a + n_b > MAX_DIM {
                    return self.produce();
                }
                let part = |s: &str| {
                    if axis == 0 {
                        format!("{b}[{s}, :]")
                    } else {
                        format!("{b}[:, {s}]")
                    }
                };
                let second = if self.rng.chance(0.5) {
                    format!("exp({})", part(&s_b))
                } else {
                    format!("-{}", part(&s_b))
                };
                let ax = if self.rng.chance(0.3) {
                    format!("{}", axis as i64 - 2)
                } else {
                    axis.to_string()
                };
                let mut shape = [0; 2];
                shape[axis] = n_a + n_b;
                shape[1 - axis] = other;
                self.push(
                    format!("concat([{}, {second}], axis={ax})", part(&s_a)),
                    shape,
                    "concat",
                );
            }
            3 => {
                let p: Vec<u64> = (0..4).map(|_| self.rng.below(4)).collect();
                if r + p[0] + p[2] > MAX_DIM || c + p[1] + p[3] > MAX_DIM {
                    return self.produce();
                }
                let value = self.rng.pick(&["0", "-1.5", "0.25", "2"]);
                self.push(
                    format!(
                        "pad({b}, before=[{}, {}], after=[{}, {}], value={value})",
                        p[0], p[1], p[2], p[3]
                    ),
                    [r + p[0] + p[2], c + p[1] + p[3]],
                    "pad",
                );
            }
            4 => {
                // A broadcast along a new leading axis, reduced away again.
                let n = self.rng.range(2, 4);
                self.names.feature("broadcast_to");
                let red = self.rng.pick(&["sum", "max", "min"]);
                self.push(
                    format!("{red}(broadcast_to({b}, [{n}, {r}, {c}]), axis=0)"),
                    [r, c],
                    "broadcast_to",
                );
            }
            5 => {
                let cmp = self.rng.pick(&["<", "<=", ">", ">=", "==", "!="]);
                self.names.feature(format!("cmp:{cmp}"));
                let t = self.rng.pick(&["0.0", "0.25", "-0.5"]);
                let other = self.rng.pick(&["0.0", "-1.0", "0.5 * ", "exp("]);
                let other = match other {
                    "0.5 * " => format!("0.5 * {b}"),
                    "exp(" => format!("exp({b})"),
                    s => s.to_string(),
                };
                self.push(
                    format!("where({b} {cmp} {t}, {b}, {other})"),
                    [r, c],
                    "where",
                );
            }
            6 => {
                let (f, inner) = match self.rng.below(3) {
                    0 => ("logical_and", format!("logical_and({b} > -0.5, {b} < 0.5)")),
                    1 => (
                        "logical_or",
                        format!("logical_or({b} <= -0.75, {b} >= 0.75)"),
                    ),
                    _ => ("logical_not", format!("logical_not({b} != {b}[::-1, :])")),
                };
                self.names.feature(f);
                self.names.feature("where");
                self.push(format!("where({inner}, {b}, 0.0)"), [r, c], "logical");
            }
            7 => self.take(b, r, c),
            _ => {
                // Positions as floats: a ramp along the columns or the rows.
                if self.rng.chance(0.5) {
                    self.push(
                        format!("{b} + (arange({c}) as f32) * 0.015625"),
                        [r, c],
                        "arange",
                    );
                } else {
                    self.push(
                        format!("{b} * (reshape(arange({r}), [{r}, 1]) as f32)"),
                        [r, c],
                        "arange",
                    );
                }
            }
        }
    }

    /// Rows of `b` (`[r, c]`) gathered by an `i32` parameter or by indices the kernel
    /// computes (always inside `[-r, r)`: `argmax`/`argmin` positions, arithmetic on them,
    /// a `where` of two of them, an `arange` expression), or `b` plus rows of an `i32` table
    /// gathered (by a parameter or by computed positions) and converted.
    fn take(&mut self, b: &str, r: u64, c: u64) {
        let t = self.rng.pick(&DIMS);
        let t = if self.rng.chance(0.3) { t + 150 } else { t };
        // Positions in [0, n) of `t` rows of scores, from a new parameter.
        let positions = |g: &mut Gen, t: u64, n: u64| {
            let s = g.names.fresh("s");
            g.params.push(format!("{s}: f32[{t}, {n}]"));
            let f = g.rng.pick(&["argmax", "argmin"]);
            (s.clone(), format!("{f}({s}, axis=1)"))
        };
        match self.rng.weighted(&[2, 3, 2]) {
            0 => {
                // An index into a computed value works the same, the indices a parameter.
                let ids = self.names.fresh("ids");
                self.params.push(format!("{ids}: i32[{t}]"));
                self.push(format!("take({b}, {ids})"), [t, c], "take");
            }
            1 => {
                let (kind, idx, rows) = match self.rng.below(4) {
                    0 => {
                        let (_, p) = positions(self, t, r);
                        ("argmax", p, t)
                    }
                    1 => {
                        let (_, p) = positions(self, t, r);
                        let e = if self.rng.chance(0.5) {
                            format!("{} - {p}", r - 1)
                        } else {
                            // Negative: counted from the end.
                            format!("{p} - {r}")
                        };
                        ("arith", e, t)
                    }
                    2 => {
                        let (s, p) = positions(self, t, r);
                        let e = format!("where({s}[:, 0] > 0.0, {p}, {} - {p})", r - 1);
                        ("where", e, t)
                    }
                    _ => {
                        let m = t.min(r);
                        let e = if self.rng.chance(0.5) {
                            format!("{} - arange({m})", r - 1)
                        } else {
                            format!("arange({m}) - {r}")
                        };
                        ("arange", e, m)
                    }
                };
                self.names.feature(format!("take:{kind}"));
                self.push(format!("take({b}, {idx})"), [rows, c], "take_computed");
            }
            _ => {
                let tab = self.names.fresh("tab");
                self.params.push(format!("{tab}: i32[{t}, {c}]"));
                let idx = if self.rng.chance(0.5) {
                    let ids = self.names.fresh("ids");
                    self.params.push(format!("{ids}: i32[{r}]"));
                    ids
                } else {
                    self.names.feature("take:computed_i32");
                    positions(self, r, t).1
                };
                self.push(
                    format!("{b} + (take({tab}, {idx}) as f32) * 0.01"),
                    [r, c],
                    "take_i32",
                );
            }
        }
    }

    /// Turns a value of the pool into a result.
    fn consume(&mut self, i: usize) {
        let v = self.pool[i].clone();
        let [r, c] = v.shape;
        let (expr, ty, how) = match self.rng.weighted(&[2, 3, 2, 3, 1]) {
            0 => (v.name.clone(), format!("f32[{r}, {c}]"), "out"),
            1 => {
                let n = self.rng.pick(&DIMS[1..]);
                let w = self.names.fresh("w");
                self.params.push(format!("{w}: f32[{c}, {n}]"));
                (
                    format!("{} @ {w}", v.name),
                    format!("f32[{r}, {n}]"),
                    "matmul",
                )
            }
            2 => {
                let m = self.rng.pick(&DIMS[1..]);
                let w = self.names.fresh("w");
                self.params.push(format!("{w}: f32[{m}, {r}]"));
                (
                    format!("{w} @ {}", v.name),
                    format!("f32[{m}, {c}]"),
                    "matmul",
                )
            }
            3 => {
                let red = self.rng.pick(&["sum", "max", "min", "mean"]);
                let axis = self.rng.pick(&[0i64, 1, -1]);
                let n = if axis == 0 { c } else { r };
                (
                    format!("{red}({}, axis={axis})", v.name),
                    format!("f32[{n}]"),
                    "reduce",
                )
            }
            _ => (
                format!("exp({} * 0.5)", v.name),
                format!("f32[{r}, {c}]"),
                "out",
            ),
        };
        self.names.feature(format!("{how}<-{}", v.origin));
        self.results.push((expr, ty));
    }

    /// An `i32` result: wrapping arithmetic of an `i32` parameter, `arange` and literals
    /// near the ends of the range, with a comparison and `where`, or moved by a slice, a
    /// concat, a pad or a broadcast.
    fn int_result(&mut self) {
        let r = self.rng.pick(&DIMS[2..]);
        let c = self.rng.pick(&DIMS[2..]);
        let n = self.names.fresh("n");
        self.params.push(format!("{n}: i32[{r}, {c}]"));
        self.names.feature("i32");
        self.names.feature("arange");
        let k = self
            .rng
            .pick(&["2147483647", "1000003", "-2147483648", "65537"]);
        let body = match self.rng.below(6) {
            0 => format!("{n} * {k} + arange({c}) * 44000000"),
            1 => format!("where({n} > arange({c}), {n} - {k}, -{n} * 3)"),
            2 => format!("maximum({n}, reshape(arange({r}), [{r}, 1])) * {k} - 7"),
            // `i32` values moved by slices, joins, pads and broadcasts, which must move the
            // integers bit for bit on both sides.
            3 => {
                self.names.feature("i32:concat");
                format!("concat([{n}[:, :1], {n}[:, 1:] * {k}], axis=1)")
            }
            4 => {
                self.names.feature("i32:pad");
                format!("pad({n}[1:, ::-1], before=[1, 0], after=[0, 0], value={k})")
            }
            _ => {
                self.names.feature("i32:broadcast_to");
                format!("broadcast_to(sum({n}, axis=0, keepdims=true) * {k}, [{r}, {c}])")
            }
        };
        // Half the time the values (beyond 2^24, negative, with ties where `n` repeats)
        // feed a wrapping `cumsum` or an `argmax`/`argmin` along either axis, which must
        // stay exact on the integer datapath.
        let axis = self.rng.below(2);
        let (body, ty) = match self.rng.below(6) {
            0 => {
                self.names.feature("i32:cumsum");
                (
                    format!("cumsum({body}, axis={axis})"),
                    format!("i32[{r}, {c}]"),
                )
            }
            1 | 2 => {
                let call = if self.rng.chance(0.5) {
                    "argmax"
                } else {
                    "argmin"
                };
                self.names.feature(format!("i32:{call}"));
                let kept = if axis == 0 { c } else { r };
                (
                    format!("{call}({body}, axis={axis})"),
                    format!("i32[{kept}]"),
                )
            }
            _ => (body, format!("i32[{r}, {c}]")),
        };
        self.results.push((body, ty));
    }
}
