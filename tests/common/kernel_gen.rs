//! A random generator of well-typed kernels, as source text, for the differential test.
//!
//! A kernel is a chain of 1 to `max_ops` operations that starts from a parameter and
//! draws on every part of the language: all unary builtins (the step functions `floor
//! ceil round sign` only on arguments both policies compute exactly), `maximum`/`minimum`, `+ - * /`
//! with NumPy broadcasting (size-1 and missing axes) and scalars, `@` with batch
//! broadcast, the four reductions with positive and negative axes and `keepdims`, both
//! forms of `transpose`, `reshape` (with `-1` and size names), `tril` with `k` and `fill`
//! (including `-inf`, always followed by an operation that removes the infinities), `as`
//! casts, every dtype, named sizes, `let` annotations, dead code and one or two results.
//!
//! The hard part is not typing but numerics. The compiler may legitimately differ from the
//! reference: in the default ("wide") dtype policy it may keep an intermediate unrounded,
//! and any difference before a rounding may flip that rounding by one ulp. A kernel whose
//! result is dominated by such differences (catastrophic cancellation in low precision,
//! an f8 value fed to `exp`, ...) would fail for no fault of the compiler. So the generator
//! tracks, for every value, an interval of its reference values and a bound on how far the
//! compiled value may be from the reference one under each dtype policy, as an absolute
//! plus a relative part (`Err`), propagated through each operation with its derivative
//! bounds. An operation is only kept when the bound still fits the tolerance of some output
//! dtype, and the kernel's outputs are cast to a dtype whose tolerance covers the bound
//! twice over. Kernels that only fit under `--dtype-policy strict` (where intermediates
//! are rounded exactly as the reference rounds them) are run in that policy.
//!
//! Input values are those of `driver::random_tensor`, uniform in [-1, 1]; functions with a
//! restricted domain get arguments such as `abs(x) + 0.5`, and every value stays within
//! [-64, 64] so that no dtype overflows.

use isa::Dtype;
use runtime::numeric;
use std::collections::BTreeMap;
use std::fmt::Write as _;

/// The largest magnitude any generated value may reach.
const LIMIT: f64 = 64.0;

/// Sizes of a generated kernel.
#[derive(Clone, Copy, Debug)]
pub struct Config {
    /// The most elements any one tensor may have.
    pub max_elems: u64,
    /// The most multiply-accumulates of one matmul.
    pub max_macs: u64,
    /// The most operations in the chain.
    pub max_ops: usize,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            max_elems: 40_000,
            max_macs: 2_000_000,
            max_ops: 8,
        }
    }
}

/// A generated kernel.
#[derive(Clone, Debug)]
pub struct Kernel {
    pub source: String,
    /// Run it with `--dtype-policy strict` (its numerics only fit that policy's bounds).
    pub strict: bool,
    /// Bounds of the reference values of each result (finite, as the generator's
    /// interval arithmetic predicts them).
    pub bounds: Vec<(f64, f64)>,
}

/// SplitMix64: small, seedable and good enough for test generation.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed ^ 0x5DEE_CE66_D1CE_4E5B)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (`n > 0`).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }

    /// Uniform in `lo..=hi`.
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.below(hi - lo + 1)
    }

    /// True with probability `p`.
    pub fn chance(&mut self, p: f64) -> bool {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64 <= p
    }

    pub fn pick<T: Copy>(&mut self, items: &[T]) -> T {
        items[self.below(items.len() as u64) as usize]
    }

    /// An index chosen with the given weights.
    pub fn weighted(&mut self, weights: &[u32]) -> usize {
        let total: u64 = weights.iter().map(|&w| u64::from(w)).sum();
        let mut x = self.below(total);
        for (i, &w) in weights.iter().enumerate() {
            if x < u64::from(w) {
                return i;
            }
            x -= u64::from(w);
        }
        weights.len() - 1
    }
}

/// The dtype policies a kernel may be run in.
const WIDE: usize = 0;
const STRICT: usize = 1;

/// A bound on `|compiled - reference|`: `ea + er * |reference|`.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
struct Err {
    ea: f64,
    er: f64,
}

impl Err {
    const EXACT: Err = Err { ea: 0.0, er: 0.0 };

    fn is_exact(self) -> bool {
        self.ea == 0.0 && self.er == 0.0
    }

    /// The bound as an absolute error for values up to `m` in magnitude.
    fn abs(self, m: f64) -> f64 {
        self.ea + self.er * m
    }

    fn absolute(ea: f64) -> Err {
        Err { ea, er: 0.0 }
    }

    fn plus(self, o: Err) -> Err {
        Err {
            ea: self.ea + o.ea,
            er: self.er + o.er,
        }
    }

    fn finite(self) -> bool {
        self.ea.is_finite() && self.er.is_finite()
    }
}

/// Precision (significand bits) and minimum normal exponent of a dtype.
fn format_of(d: Dtype) -> (i32, i32) {
    match d {
        Dtype::F32 => (24, -126),
        Dtype::Bf16 => (8, -126),
        Dtype::F16 => (11, -14),
        Dtype::F8E4M3 => (4, -6),
        Dtype::F8E5M2 => (3, -14),
        // The generator draws float dtypes only; integers are exact.
        Dtype::I32 | Dtype::Bool => (32, 0),
    }
}

/// The unit roundoff (half an ulp, relative) of a dtype.
fn unit(d: Dtype) -> f64 {
    2f64.powi(-format_of(d).0)
}

/// The spacing of a dtype's values at magnitude `x`.
fn ulp(d: Dtype, x: f64) -> f64 {
    let (p, emin) = format_of(d);
    let x = x.abs();
    if x < 2f64.powi(emin) {
        2f64.powi(emin - p + 1)
    } else {
        2f64.powi(x.log2().floor() as i32 - p + 1)
    }
}

/// The subnormal spacing of a dtype: the absolute rounding error near zero.
fn tiny(d: Dtype) -> f64 {
    ulp(d, 0.0)
}

/// Whether every value of `from` is exact in `to`.
fn widens(from: Dtype, to: Dtype) -> bool {
    use Dtype::*;
    from == to
        || to == F32
        || matches!(
            (from, to),
            (F8E4M3, Bf16) | (F8E4M3, F16) | (F8E5M2, Bf16) | (F8E5M2, F16)
        )
}

/// The per-dtype tolerance the generator keeps its chains within, `|error| <= atol + rtol *
/// |value|`. The differential test judges outputs by the reference's propagated bounds
/// (`driver::expected`), not by this table: it only keeps the random chains from drifting
/// into results dominated by rounding, which would test little.
fn tolerance(d: Dtype) -> (f64, f64) {
    match d {
        Dtype::F32 => (1e-5, 1e-4),
        Dtype::Bf16 => (1e-2, 1.6e-2),
        Dtype::F16 => (1e-3, 2e-3),
        Dtype::F8E4M3 => (1.6e-2, 1.25e-1),
        Dtype::F8E5M2 => (3.2e-2, 2.5e-1),
        Dtype::I32 | Dtype::Bool => (0.0, 0.0),
    }
}

/// Whether an output of dtype `d` whose values lie in `[-m, m]` and whose error before
/// its final rounding is bounded by `pre` stays within `tolerance(d)`, with the
/// bound doubled for safety. The final rounding adds at most one step of `d`'s grid when
/// the difference before it is below one step, else at most one step more.
fn output_fits(d: Dtype, pre: Err, m: f64) -> bool {
    if pre.is_exact() {
        return true;
    }
    if !pre.finite() {
        return false;
    }
    let (atol, rtol) = tolerance(d);
    let mut ws = vec![0.0, m];
    if m > 0.0 {
        let top = m.log2().floor() as i32;
        for e in (top - 60..=top).rev() {
            let w = 2f64.powi(e);
            ws.push(w);
            ws.push((2.0 * w * 0.999).min(m));
        }
    }
    ws.iter().all(|&w| {
        let pre_abs = 2.0 * pre.abs(w);
        let step = ulp(d, w + pre_abs);
        let diff = if pre_abs < step { step } else { pre_abs + step };
        diff <= atol + rtol * w
    })
}

/// The dtypes an output may be cast to, most precise first.
const OUTPUT_CASTS: [Dtype; 4] = [Dtype::F16, Dtype::Bf16, Dtype::F8E4M3, Dtype::F8E5M2];

/// A tensor value (or a scalar literal) under construction.
#[derive(Clone, Debug)]
struct Val {
    /// Source text: a name, a call, a literal, or a parenthesised expression.
    text: String,
    dtype: Dtype,
    /// Empty for a scalar literal.
    shape: Vec<u64>,
    /// Bounds of the reference values (finite ones, for a value that may hold -inf).
    lo: f64,
    hi: f64,
    /// Error bound before the value's own rounding, per policy.
    pre: [Err; 2],
    /// Error bound of the value as stored, per policy.
    post: [Err; 2],
}

impl Val {
    fn mag(&self) -> f64 {
        self.lo.abs().max(self.hi.abs())
    }

    fn is_scalar(&self) -> bool {
        self.shape.is_empty()
    }

    fn elems(&self) -> u64 {
        self.shape.iter().product()
    }

    fn is_name(&self) -> bool {
        self.text
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_')
    }
}

/// A scalar literal (weak: it takes the dtype of the tensor it meets).
fn scalar(x: f64) -> Val {
    let text = if x == x.trunc() && x.abs() < 1e6 {
        format!("{x:.1}")
    } else {
        format!("{x}")
    };
    Val {
        text,
        dtype: Dtype::F32,
        shape: Vec::new(),
        lo: x,
        hi: x,
        pre: [Err::EXACT; 2],
        post: [Err::EXACT; 2],
    }
}

/// Widens an interval for the rounding to `d`.
fn round_interval(d: Dtype, lo: f64, hi: f64) -> (f64, f64) {
    let u = 2.0 * unit(d);
    (lo - lo.abs() * u - tiny(d), hi + hi.abs() * u + tiny(d))
}

/// The post-rounding bound of an operation whose result has dtype `d`, from the bound
/// before rounding. `explicit_cast` marks `as`, which is always rounded as written.
fn rounded(d: Dtype, pre: Err, policy: usize, explicit_cast: bool) -> Err {
    let flip = Err {
        ea: tiny(d),
        er: 2.0 * unit(d),
    };
    let wide = Err {
        ea: tiny(d),
        er: unit(d),
    };
    if !pre.is_exact() {
        return pre.plus(flip);
    }
    // From an exact value: a cast rounds the same value on both sides; an operation may
    // be left unrounded in the wide policy (and in f32 under either, where the compiler
    // folds f32 intermediates into the Scalar engine's f64 evaluation).
    if explicit_cast || (policy == STRICT && d != Dtype::F32) {
        Err::EXACT
    } else {
        wide
    }
}

/// NumPy broadcasting of two shapes.
fn broadcast(a: &[u64], b: &[u64]) -> Option<Vec<u64>> {
    let rank = a.len().max(b.len());
    let mut out = vec![0; rank];
    for i in 0..rank {
        let x = if i + a.len() >= rank {
            a[i + a.len() - rank]
        } else {
            1
        };
        let y = if i + b.len() >= rank {
            b[i + b.len() - rank]
        } else {
            1
        };
        out[i] = if x == y || y == 1 {
            x
        } else if x == 1 {
            y
        } else {
            return None;
        };
    }
    Some(out)
}

/// The unary builtins (negation is written `-x`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Un {
    Neg,
    Exp,
    Log,
    Sqrt,
    Rsqrt,
    Reciprocal,
    Abs,
    Square,
    Tanh,
    Sigmoid,
    Relu,
    Silu,
    Gelu,
    GeluTanh,
    Sin,
    Cos,
    Erf,
    Softplus,
    Floor,
    Ceil,
    Round,
    Sign,
    /// `clip(x, -0.5, 0.75)`.
    Clip,
    /// `pow(x, 1.5)`, on positive arguments.
    Pow,
}

const UNARIES: [Un; 24] = [
    Un::Neg,
    Un::Exp,
    Un::Log,
    Un::Sqrt,
    Un::Rsqrt,
    Un::Reciprocal,
    Un::Abs,
    Un::Square,
    Un::Tanh,
    Un::Sigmoid,
    Un::Relu,
    Un::Silu,
    Un::Gelu,
    Un::GeluTanh,
    Un::Sin,
    Un::Cos,
    Un::Erf,
    Un::Softplus,
    Un::Floor,
    Un::Ceil,
    Un::Round,
    Un::Sign,
    Un::Clip,
    Un::Pow,
];

impl Un {
    fn name(self) -> &'static str {
        match self {
            Un::Neg => "-",
            Un::Exp => "exp",
            Un::Log => "log",
            Un::Sqrt => "sqrt",
            Un::Rsqrt => "rsqrt",
            Un::Reciprocal => "reciprocal",
            Un::Abs => "abs",
            Un::Square => "square",
            Un::Tanh => "tanh",
            Un::Sigmoid => "sigmoid",
            Un::Relu => "relu",
            Un::Silu => "silu",
            Un::Gelu => "gelu",
            Un::GeluTanh => "gelu_tanh",
            Un::Sin => "sin",
            Un::Cos => "cos",
            Un::Erf => "erf",
            Un::Softplus => "softplus",
            Un::Floor => "floor",
            Un::Ceil => "ceil",
            Un::Round => "round",
            Un::Sign => "sign",
            Un::Clip => "clip",
            Un::Pow => "pow",
        }
    }

    /// Functions defined (and tame) only on positive arguments.
    fn needs_positive(self) -> bool {
        matches!(
            self,
            Un::Log | Un::Sqrt | Un::Rsqrt | Un::Reciprocal | Un::Pow
        )
    }

    /// Functions whose result is exactly representable in the argument's dtype.
    fn exact(self) -> bool {
        matches!(
            self,
            Un::Neg | Un::Abs | Un::Relu | Un::Floor | Un::Ceil | Un::Round | Un::Sign | Un::Clip
        )
    }
}

/// The binary elementwise operations.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Bin {
    Add,
    Sub,
    Mul,
    Div,
    Max,
    Min,
}

/// The reductions.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Red {
    Sum,
    Mean,
    Max,
    Min,
}

impl Red {
    fn name(self) -> &'static str {
        match self {
            Red::Sum => "sum",
            Red::Mean => "mean",
            Red::Max => "max",
            Red::Min => "min",
        }
    }
}

const DTYPES: [Dtype; 5] = [
    Dtype::F32,
    Dtype::Bf16,
    Dtype::F16,
    Dtype::F8E4M3,
    Dtype::F8E5M2,
];

/// Interesting sizes: 1, small ones, powers of two and their neighbours (around the 128
/// partitions especially), and the 300 maximum.
const DIMS: [u64; 16] = [
    1, 2, 3, 5, 7, 8, 16, 31, 64, 100, 127, 128, 129, 200, 255, 300,
];

/// The state of one generation attempt.
struct Gen {
    rng: Rng,
    cfg: Config,
    /// Parameters: name, dtype, shape.
    params: Vec<(String, Dtype, Vec<u64>)>,
    /// The body's `let` lines.
    lines: Vec<String>,
    /// Values bound to names, usable as operands later.
    bound: Vec<Val>,
    /// Size names given to dims, by value.
    sizes: BTreeMap<u64, String>,
    next_let: usize,
}

/// Generates the kernel of `seed`. Every seed gives a kernel (attempts whose numerics do
/// not fit any output are retried from a derived seed).
pub fn generate(seed: u64, cfg: &Config) -> Kernel {
    for attempt in 0u64.. {
        let sub = seed.wrapping_add(attempt.wrapping_mul(0xA076_1D64_78BD_642F));
        if let Some(k) = Gen::new(sub, *cfg).kernel(seed, attempt) {
            return k;
        }
    }
    unreachable!("the loop returns")
}

impl Gen {
    fn new(seed: u64, cfg: Config) -> Gen {
        Gen {
            rng: Rng::new(seed),
            cfg,
            params: Vec::new(),
            lines: Vec::new(),
            bound: Vec::new(),
            sizes: BTreeMap::new(),
            next_let: 0,
        }
    }

    // ---- Text ----

    /// A dim as text: a size name (sometimes created on the spot) or the number.
    fn dim_text(&mut self, d: u64) -> String {
        if let Some(name) = self.sizes.get(&d) {
            if self.rng.chance(0.7) {
                return name.clone();
            }
        } else if d > 1 && self.rng.chance(0.1) {
            let name = format!("N{}", self.sizes.len());
            self.sizes.insert(d, name.clone());
            return name;
        }
        d.to_string()
    }

    fn type_text(&mut self, dtype: Dtype, shape: &[u64]) -> String {
        let dims: Vec<String> = shape.iter().map(|&d| self.dim_text(d)).collect();
        format!("{dtype}[{}]", dims.join(", "))
    }

    /// Binds a value to a new `let` (sometimes with a type annotation).
    fn bind(&mut self, v: Val) -> Val {
        let name = format!("t{}", self.next_let);
        self.next_let += 1;
        let annotation = if self.rng.chance(0.2) {
            format!(": {}", self.type_text(v.dtype, &v.shape))
        } else {
            String::new()
        };
        self.lines
            .push(format!("    let {name}{annotation} = {};", v.text));
        let named = Val { text: name, ..v };
        self.bound.push(named.clone());
        named
    }

    /// The value as a name, binding it first if it is an expression.
    fn named(&mut self, v: Val) -> Val {
        if v.is_name() {
            v
        } else {
            self.bind(v)
        }
    }

    // ---- Shapes ----

    fn random_dim(&mut self, budget: u64) -> u64 {
        let d = if self.rng.chance(0.6) {
            self.rng.pick(&DIMS)
        } else {
            self.rng.range(1, 300)
        };
        d.clamp(1, budget.max(1))
    }

    fn random_shape(&mut self) -> Vec<u64> {
        let rank = self.rng.range(1, 4) as usize;
        let mut shape = Vec::with_capacity(rank);
        let mut budget = self.cfg.max_elems;
        for _ in 0..rank {
            let d = self.random_dim(budget);
            budget /= d;
            shape.push(d);
        }
        // Put the large dims in random places, not always first.
        for i in (1..rank).rev() {
            let j = self.rng.below(i as u64 + 1) as usize;
            shape.swap(i, j);
        }
        shape
    }

    /// A shape that broadcasts with `s` (size-1 axes, missing or extra leading axes,
    /// stretched 1s), keeping the result within the element budget.
    fn partner_shape(&mut self, s: &[u64]) -> Vec<u64> {
        let r = s.len();
        let choice = self.rng.below(5);
        let cand: Vec<u64> = match choice {
            0 => s.to_vec(),
            1 => s
                .iter()
                .map(|&d| if self.rng.chance(0.4) { 1 } else { d })
                .collect(),
            2 if r > 1 => {
                let drop = self.rng.range(1, r as u64 - 1) as usize;
                s[drop..]
                    .iter()
                    .map(|&d| if self.rng.chance(0.25) { 1 } else { d })
                    .collect()
            }
            3 if s.contains(&1) => {
                let mut out = s.to_vec();
                let elems: u64 = s.iter().product();
                let mut budget = self.cfg.max_elems / elems.max(1);
                for d in out.iter_mut() {
                    if *d == 1 && budget >= 2 && self.rng.chance(0.7) {
                        *d = self.random_dim(budget).max(2).min(budget);
                        budget /= *d;
                    }
                }
                out
            }
            4 if r < 4 => {
                let elems: u64 = s.iter().product();
                let budget = self.cfg.max_elems / elems.max(1);
                let lead = self.random_dim(budget.min(8)).max(1);
                let mut out = vec![lead];
                out.extend(s.iter().map(|&d| if self.rng.chance(0.3) { 1 } else { d }));
                out
            }
            _ => s.to_vec(),
        };
        match broadcast(s, &cand) {
            Some(out) if out.iter().product::<u64>() <= self.cfg.max_elems => cand,
            _ => s.to_vec(),
        }
    }

    // ---- Values ----

    fn random_dtype(&mut self) -> Dtype {
        let i = self.rng.weighted(&[4, 4, 2, 2, 2]);
        DTYPES[i]
    }

    /// A new parameter.
    fn param(&mut self, dtype: Dtype, shape: Vec<u64>) -> Val {
        let name = format!("p{}", self.params.len());
        self.params.push((name.clone(), dtype, shape.clone()));
        Val {
            text: name,
            dtype,
            shape,
            lo: -1.0,
            hi: 1.0,
            pre: [Err::EXACT; 2],
            post: [Err::EXACT; 2],
        }
    }

    /// A value of shape `shape` to combine with `like`: usually a new parameter (of the
    /// same dtype, or another), sometimes an earlier value of that very shape.
    fn operand(&mut self, like: &Val, shape: Vec<u64>) -> Val {
        if self.rng.chance(0.3) {
            let same: Vec<Val> = self
                .bound
                .iter()
                .filter(|v| v.shape == shape && v.text != like.text)
                .cloned()
                .collect();
            if !same.is_empty() {
                return same[self.rng.below(same.len() as u64) as usize].clone();
            }
        }
        let dtype = if self.rng.chance(0.5) {
            like.dtype
        } else {
            self.random_dtype()
        };
        self.param(dtype, shape)
    }

    // ---- Operations (each checks its preconditions and propagates the bounds) ----

    fn unary(&self, f: Un, a: &Val) -> Option<Val> {
        let d = a.dtype;
        let (lo, hi, m) = (a.lo, a.hi, a.mag());
        if f.needs_positive() && lo < 0.25 {
            return None;
        }
        let (nlo, nhi) = match f {
            Un::Neg => (-hi, -lo),
            Un::Exp => (lo.exp(), hi.exp()),
            Un::Log => (lo.ln(), hi.ln()),
            Un::Sqrt => (lo.sqrt(), hi.sqrt()),
            Un::Rsqrt => (1.0 / hi.sqrt(), 1.0 / lo.sqrt()),
            Un::Reciprocal => (1.0 / hi, 1.0 / lo),
            Un::Abs | Un::Square => {
                let min = if lo <= 0.0 && hi >= 0.0 {
                    0.0
                } else {
                    lo.abs().min(hi.abs())
                };
                if f == Un::Abs {
                    (min, m)
                } else {
                    (min * min, m * m)
                }
            }
            Un::Tanh => (lo.tanh(), hi.tanh()),
            Un::Sigmoid => (1.0 / (1.0 + (-lo).exp()), 1.0 / (1.0 + (-hi).exp())),
            Un::Relu => (lo.max(0.0), hi.max(0.0)),
            // silu(x) <= x and gelu(x) <= x for x >= 0; their minimums are about -0.2785
            // and -0.1700.
            Un::Silu => (if lo >= 0.0 { 0.0 } else { -0.28 }, hi.max(0.0)),
            Un::Gelu | Un::GeluTanh => (if lo >= 0.0 { 0.0 } else { -0.171 }, hi.max(0.0)),
            Un::Sin | Un::Cos | Un::Erf => (-1.0, 1.0),
            Un::Softplus => {
                let sp = |x: f64| {
                    if x > 0.0 {
                        x + (-x).exp().ln_1p()
                    } else {
                        x.exp().ln_1p()
                    }
                };
                (sp(lo), sp(hi))
            }
            Un::Floor => (lo.floor(), hi.floor()),
            Un::Ceil => (lo.ceil(), hi.ceil()),
            Un::Round => (lo.round_ties_even(), hi.round_ties_even()),
            Un::Sign => {
                let sign = |x: f64| {
                    if x > 0.0 {
                        1.0
                    } else if x < 0.0 {
                        -1.0
                    } else {
                        0.0
                    }
                };
                (sign(lo), sign(hi))
            }
            Un::Clip => (lo.clamp(-0.5, 0.75), hi.clamp(-0.5, 0.75)),
            Un::Pow => (lo.powf(1.5), hi.powf(1.5)),
        };
        if nlo.abs().max(nhi.abs()) > LIMIT {
            return None;
        }
        // How an input error `e` propagates.
        let prop = |e: Err| -> Option<Err> {
            if e.is_exact() {
                return Some(Err::EXACT);
            }
            let abs = e.abs(m);
            let rel = e.ea / lo.max(1e-30) + e.er;
            let out = match f {
                Un::Neg | Un::Abs | Un::Relu => e,
                Un::Exp => {
                    if abs > 0.5 {
                        return None;
                    }
                    Err {
                        ea: 0.0,
                        er: abs.exp_m1(),
                    }
                }
                Un::Log | Un::Sqrt | Un::Rsqrt | Un::Reciprocal if rel >= 0.5 => return None,
                Un::Log => Err::absolute(-(1.0 - rel).ln()),
                Un::Sqrt => Err {
                    ea: 0.0,
                    er: 0.5 * rel / (1.0 - rel),
                },
                Un::Rsqrt => Err {
                    ea: 0.0,
                    er: 1.0 / (1.0 - rel).sqrt() - 1.0,
                },
                Un::Reciprocal => Err {
                    ea: 0.0,
                    er: rel / (1.0 - rel),
                },
                Un::Square => Err {
                    ea: 2.0 * m * e.ea + abs * abs,
                    er: 2.0 * e.er,
                },
                Un::Tanh => Err::absolute(abs),
                Un::Sigmoid => Err::absolute(0.25 * abs),
                Un::Silu => Err::absolute(1.1 * abs),
                Un::Gelu | Un::GeluTanh => Err::absolute(1.13 * abs),
                // |sin'|, |cos'| <= 1, softplus' < 1, erf' <= 2 / sqrt(pi).
                Un::Sin | Un::Cos | Un::Softplus => Err::absolute(abs),
                Un::Erf => Err::absolute(1.13 * abs),
                // A step function of an inexact argument may jump: not generated.
                Un::Floor | Un::Ceil | Un::Round | Un::Sign => return None,
                // Clamping moves no value further from another.
                Un::Clip => e,
                Un::Pow if rel >= 0.5 => return None,
                Un::Pow => Err {
                    ea: 0.0,
                    er: (1.0 + rel).powf(1.5) - 1.0,
                },
            };
            Some(out)
        };
        let text = if f == Un::Neg {
            format!("(-{})", a.text)
        } else if f == Un::Clip {
            format!("clip({}, -0.5, 0.75)", a.text)
        } else if f == Un::Pow {
            format!("pow({}, 1.5)", a.text)
        } else {
            format!("{}({})", f.name(), a.text)
        };
        let mut v = Val {
            text,
            dtype: d,
            shape: a.shape.clone(),
            lo: nlo,
            hi: nhi,
            pre: [Err::EXACT; 2],
            post: [Err::EXACT; 2],
        };
        for p in [WIDE, STRICT] {
            if f.exact() {
                v.pre[p] = prop(a.pre[p])?;
                v.post[p] = prop(a.post[p])?;
            } else {
                v.pre[p] = prop(a.post[p])?;
                v.post[p] = rounded(d, v.pre[p], p, false);
            }
        }
        if !f.exact() {
            (v.lo, v.hi) = round_interval(d, v.lo, v.hi);
        }
        Some(v)
    }

    fn binary(&self, op: Bin, a: &Val, b: &Val) -> Option<Val> {
        let d = match (a.is_scalar(), b.is_scalar()) {
            (true, true) => return None,
            (true, false) => b.dtype,
            (false, true) => a.dtype,
            (false, false) => {
                if a.dtype == b.dtype {
                    a.dtype
                } else {
                    Dtype::F32
                }
            }
        };
        let shape = broadcast(&a.shape, &b.shape)?;
        if shape.iter().product::<u64>() > self.cfg.max_elems {
            return None;
        }
        // A scalar takes the dtype of the tensor: its value is rounded to it.
        let rounded_scalar = |v: &Val| -> (f64, f64) {
            if v.is_scalar() {
                let x = f64::from(numeric::round(d, v.lo as f32));
                (x, x)
            } else {
                (v.lo, v.hi)
            }
        };
        let (alo, ahi) = rounded_scalar(a);
        let (blo, bhi) = rounded_scalar(b);
        let (ma, mb) = (alo.abs().max(ahi.abs()), blo.abs().max(bhi.abs()));
        let corners = |f: &dyn Fn(f64, f64) -> f64| {
            let c = [f(alo, blo), f(alo, bhi), f(ahi, blo), f(ahi, bhi)];
            (
                c.iter().cloned().fold(f64::INFINITY, f64::min),
                c.iter().cloned().fold(f64::NEG_INFINITY, f64::max),
            )
        };
        let (lo, hi) = match op {
            Bin::Add => (alo + blo, ahi + bhi),
            Bin::Sub => (alo - bhi, ahi - blo),
            Bin::Mul => corners(&|x, y| x * y),
            Bin::Div => {
                if blo <= 0.25 && bhi >= -0.25 {
                    return None;
                }
                corners(&|x, y| x / y)
            }
            Bin::Max => (alo.max(blo), ahi.max(bhi)),
            Bin::Min => (alo.min(blo), ahi.min(bhi)),
        };
        if lo.abs().max(hi.abs()) > LIMIT {
            return None;
        }
        let a_nonneg = alo >= 0.0;
        let b_nonneg = blo >= 0.0;
        let a_nonpos = ahi <= 0.0;
        let b_nonpos = bhi <= 0.0;
        let bmin = blo.abs().min(bhi.abs());
        let prop = |ea: Err, eb: Err| -> Option<Err> {
            let (aa, ab) = (ea.abs(ma), eb.abs(mb));
            Some(match op {
                Bin::Add | Bin::Sub => {
                    let same = if op == Bin::Add {
                        (a_nonneg && b_nonneg) || (a_nonpos && b_nonpos)
                    } else {
                        (a_nonneg && b_nonpos) || (a_nonpos && b_nonneg)
                    };
                    if same {
                        Err {
                            ea: ea.ea + eb.ea,
                            er: ea.er.max(eb.er),
                        }
                    } else {
                        Err::absolute(aa + ab)
                    }
                }
                Bin::Mul => Err {
                    ea: ma * eb.ea
                        + mb * ea.ea
                        + ea.ea * eb.ea
                        + ea.ea * eb.er * mb
                        + ea.er * ma * eb.ea,
                    er: ea.er + eb.er + ea.er * eb.er,
                },
                Bin::Div => {
                    let db = eb.ea / bmin + eb.er;
                    if db >= 0.5 {
                        return None;
                    }
                    Err {
                        ea: ea.ea / (bmin * (1.0 - db)),
                        er: (ea.er + db) / (1.0 - db),
                    }
                }
                Bin::Max if a_nonneg && b_nonneg => Err {
                    ea: ea.ea.max(eb.ea),
                    er: ea.er.max(eb.er),
                },
                Bin::Max | Bin::Min => Err::absolute(aa.max(ab)),
            })
        };
        let text = match op {
            Bin::Add => format!("({} + {})", a.text, b.text),
            Bin::Sub => format!("({} - {})", a.text, b.text),
            Bin::Mul => format!("({} * {})", a.text, b.text),
            Bin::Div => format!("({} / {})", a.text, b.text),
            Bin::Max => format!("maximum({}, {})", a.text, b.text),
            Bin::Min => format!("minimum({}, {})", a.text, b.text),
        };
        // maximum/minimum pick one operand: exact when both are already of the result's
        // dtype; so is a product with a power of two outside FP8 (no underflow to worry).
        let same_dtype = |v: &Val| v.is_scalar() || v.dtype == d;
        let pow2 = |v: &Val| v.is_scalar() && v.lo != 0.0 && v.lo.abs().log2().fract() == 0.0;
        let exact = match op {
            Bin::Max | Bin::Min => same_dtype(a) && same_dtype(b),
            Bin::Mul => {
                !matches!(d, Dtype::F8E4M3 | Dtype::F8E5M2)
                    && ((pow2(a) && same_dtype(b)) || (pow2(b) && same_dtype(a)))
            }
            _ => false,
        };
        let mut v = Val {
            text,
            dtype: d,
            shape,
            lo,
            hi,
            pre: [Err::EXACT; 2],
            post: [Err::EXACT; 2],
        };
        for p in [WIDE, STRICT] {
            if exact {
                v.pre[p] = prop(a.pre[p], b.pre[p])?;
                v.post[p] = prop(a.post[p], b.post[p])?;
            } else {
                v.pre[p] = prop(a.post[p], b.post[p])?;
                v.post[p] = rounded(d, v.pre[p], p, false);
            }
        }
        if !exact {
            (v.lo, v.hi) = round_interval(d, v.lo, v.hi);
        }
        Some(v)
    }

    /// `a @ b` (both texts already in the shape `@` wants); the result is f32.
    fn matmul(&self, a: &Val, b: &Val, b_text: String, b_shape: &[u64]) -> Option<Val> {
        let (ra, rb) = (a.shape.len(), b_shape.len());
        if ra < 2 || rb < 2 || a.shape[ra - 1] != b_shape[rb - 2] {
            return None;
        }
        let mut shape = broadcast(&a.shape[..ra - 2], &b_shape[..rb - 2])?;
        let (m, k, n) = (a.shape[ra - 2], a.shape[ra - 1], b_shape[rb - 1]);
        shape.push(m);
        shape.push(n);
        let elems: u64 = shape.iter().product();
        if elems > self.cfg.max_elems || elems * k > self.cfg.max_macs {
            return None;
        }
        let (ma, mb) = (a.mag(), b.mag());
        let kf = k as f64;
        let prods = [a.lo * b.lo, a.lo * b.hi, a.hi * b.lo, a.hi * b.hi];
        let slack = 1.0 + kf * 2.0 * unit(Dtype::F32);
        let lo = kf * slack * prods.iter().cloned().fold(f64::INFINITY, f64::min).min(0.0);
        let hi = kf
            * slack
            * prods
                .iter()
                .cloned()
                .fold(f64::NEG_INFINITY, f64::max)
                .max(0.0);
        let prop = |ea: Err, eb: Err| {
            let (aa, ab) = (ea.abs(ma), eb.abs(mb));
            Err::absolute(kf * (ma * ab + mb * aa + aa * ab))
        };
        let mut v = Val {
            text: format!("({} @ {})", a.text, b_text),
            dtype: Dtype::F32,
            shape,
            lo,
            hi,
            pre: [Err::EXACT; 2],
            post: [Err::EXACT; 2],
        };
        for p in [WIDE, STRICT] {
            v.pre[p] = prop(a.post[p], b.post[p]);
            v.post[p] = rounded(Dtype::F32, v.pre[p], p, false);
        }
        (v.lo, v.hi) = round_interval(Dtype::F32, v.lo, v.hi);
        // Bring a large product back into range with an exact power-of-two scale.
        if v.mag() > 16.0 {
            let s = 2f64.powi(-((v.mag() / 16.0).log2().ceil() as i32));
            return self.binary(Bin::Mul, &v, &scalar(s));
        }
        Some(v)
    }

    fn reduce(&mut self, f: Red, a: &Val, axis: i64, keepdims: bool) -> Option<Val> {
        let r = a.shape.len() as i64;
        let ax = if axis < 0 { axis + r } else { axis } as usize;
        let n = a.shape[ax];
        let mut shape = a.shape.clone();
        if keepdims {
            shape[ax] = 1;
        } else {
            shape.remove(ax);
        }
        if shape.is_empty() {
            return None;
        }
        let nf = n as f64;
        let m = a.mag();
        // Sums accumulate in f32: allow for one rounding per addition.
        let slack = 1.0 + nf * 2.0 * unit(Dtype::F32);
        let (lo, hi) = match f {
            Red::Sum => (nf * a.lo.min(0.0) * slack, nf * a.hi.max(0.0) * slack),
            Red::Mean => (
                a.lo.min(0.0) * slack + a.lo.max(0.0) / slack,
                a.hi.max(0.0) * slack + a.hi.min(0.0) / slack,
            ),
            _ => (a.lo, a.hi),
        };
        let same_sign = a.lo >= 0.0 || a.hi <= 0.0;
        let prop = |e: Err| match f {
            Red::Sum if same_sign => Err {
                ea: nf * e.ea,
                er: e.er,
            },
            Red::Sum => Err::absolute(nf * e.abs(m)),
            Red::Mean if same_sign => e,
            Red::Mean => Err::absolute(e.abs(m)),
            Red::Max if a.lo >= 0.0 => e,
            Red::Max | Red::Min => Err::absolute(e.abs(m)),
        };
        let kd = if keepdims { ", keepdims=true" } else { "" };
        let kd = if !keepdims && self.rng.chance(0.3) {
            ", keepdims=false"
        } else {
            kd
        };
        let d = a.dtype;
        let mut v = Val {
            text: format!("{}({}, axis={axis}{kd})", f.name(), a.text),
            dtype: d,
            shape,
            lo,
            hi,
            pre: [Err::EXACT; 2],
            post: [Err::EXACT; 2],
        };
        let exact = matches!(f, Red::Max | Red::Min);
        for p in [WIDE, STRICT] {
            if exact {
                v.pre[p] = prop(a.pre[p]);
                v.post[p] = prop(a.post[p]);
            } else {
                v.pre[p] = prop(a.post[p]);
                // `mean` divides in f32 (or multiplies by 1/n): one more f32 rounding.
                if f == Red::Mean {
                    v.pre[p] = v.pre[p].plus(Err {
                        ea: 0.0,
                        er: 2.0 * unit(Dtype::F32),
                    });
                }
                v.post[p] = rounded(d, v.pre[p], p, false);
            }
        }
        if !exact {
            (v.lo, v.hi) = round_interval(d, v.lo, v.hi);
        }
        if v.mag() > LIMIT {
            return None;
        }
        Some(v)
    }

    /// `x as d`.
    fn cast(&self, a: &Val, d: Dtype) -> Val {
        let mut v = Val {
            text: format!("({} as {d})", a.text),
            dtype: d,
            shape: a.shape.clone(),
            lo: a.lo,
            hi: a.hi,
            pre: a.post,
            post: a.post,
        };
        if !widens(a.dtype, d) {
            for p in [WIDE, STRICT] {
                v.post[p] = rounded(d, v.pre[p], p, true);
            }
            (v.lo, v.hi) = round_interval(d, v.lo, v.hi);
        }
        v
    }

    /// A layout operation: same values, new text and shape.
    fn relayout(&self, a: &Val, text: String, shape: Vec<u64>) -> Val {
        Val {
            text,
            shape,
            ..a.clone()
        }
    }

    // ---- Random operations on the current value ----

    /// A positive version of `a` (at least 0.25) for functions with a restricted domain.
    fn positive(&mut self, a: &Val) -> Option<Val> {
        if a.lo >= 0.5 && self.rng.chance(0.5) {
            return Some(a.clone());
        }
        match self.rng.below(4) {
            0 => {
                let x = self.unary(Un::Abs, a)?;
                self.binary(Bin::Add, &x, &scalar(0.5))
            }
            1 => {
                let x = self.unary(Un::Square, a)?;
                self.binary(Bin::Add, &x, &scalar(1.0))
            }
            2 if a.hi <= 4.0 && a.lo >= -1.0 => self.unary(Un::Exp, a),
            _ => {
                let x = self.unary(Un::Sigmoid, a)?;
                self.binary(Bin::Add, &x, &scalar(0.5))
            }
        }
    }

    fn random_unary(&mut self, a: &Val) -> Option<Val> {
        let f = self.rng.pick(&UNARIES);
        let arg = if f.needs_positive() {
            self.positive(a)?
        } else if f == Un::Exp && a.hi > 4.0 {
            if self.rng.chance(0.5) {
                self.unary(Un::Tanh, a)?
            } else {
                let x = self.unary(Un::Abs, a)?;
                self.unary(Un::Neg, &x)?
            }
        } else if f == Un::Square && a.mag() > 8.0 {
            self.binary(Bin::Mul, a, &scalar(0.125))?
        } else {
            a.clone()
        };
        self.unary(f, &arg)
    }

    fn random_scalar(&mut self) -> Val {
        scalar(
            self.rng
                .pick(&[0.5, 2.0, 1.5, -0.75, 3.0, 0.25, 0.001, 0.1, 4.0, -1.0]),
        )
    }

    fn random_binary(&mut self, a: &Val) -> Option<Val> {
        let op = self
            .rng
            .pick(&[Bin::Add, Bin::Sub, Bin::Mul, Bin::Div, Bin::Max, Bin::Min]);
        let b = if self.rng.chance(0.25) {
            self.random_scalar()
        } else {
            let shape = self.partner_shape(&a.shape);
            self.operand(a, shape)
        };
        let swap = self.rng.chance(0.3);
        let (x, y) = if swap { (b, a.clone()) } else { (a.clone(), b) };
        if op == Bin::Div {
            let y = if y.is_scalar() {
                if y.lo.abs() < 0.25 {
                    scalar(4.0)
                } else {
                    y
                }
            } else {
                self.positive(&y)?
            };
            return self.binary(op, &x, &y);
        }
        self.binary(op, &x, &y)
    }

    /// `x OP reduce(x, axis, keepdims=true)`: the shape of softmax and normalisation.
    fn row_op(&mut self, a: &Val) -> Option<Val> {
        let a = self.named(a.clone());
        let r = a.shape.len() as i64;
        let axis = if self.rng.chance(0.6) {
            -1
        } else {
            self.rng.range(0, 2 * r as u64 - 1) as i64 - r
        };
        let f = self.rng.pick(&[Red::Max, Red::Mean, Red::Sum, Red::Min]);
        match self.rng.below(3) {
            0 => {
                let red = self.reduce(f, &a, axis, true)?;
                self.binary(Bin::Sub, &a, &red)
            }
            1 => {
                let red = self.reduce(f, &a, axis, true)?;
                let op = self.rng.pick(&[Bin::Add, Bin::Mul, Bin::Max]);
                self.binary(op, &a, &red)
            }
            _ => {
                let absx = self.unary(Un::Abs, &a)?;
                let red = self.reduce(Red::Mean, &absx, axis, true)?;
                let den = self.binary(Bin::Add, &red, &scalar(0.5))?;
                self.binary(Bin::Div, &a, &den)
            }
        }
    }

    fn random_matmul(&mut self, a: &Val) -> Option<Val> {
        let r = a.shape.len();
        if r < 2 {
            // Make a matrix first.
            let rows = self.rng.pick(&[1, 2, 3, 7, 16]).min(a.elems());
            if a.elems() / rows * rows != a.elems() {
                return None;
            }
            let shape = vec![rows, a.elems() / rows];
            let text = format!("reshape({}, [{}, -1])", a.text, rows);
            let m = self.relayout(a, text, shape);
            return self.random_matmul(&m);
        }
        let (m, k) = (a.shape[r - 2], a.shape[r - 1]);
        let batch = a.shape[..r - 2].to_vec();
        let out_budget = self.cfg.max_elems / (batch.iter().product::<u64>() * m).max(1);
        let mac_budget = self.cfg.max_macs / (batch.iter().product::<u64>() * m * k).max(1);
        let n = self.random_dim(out_budget.min(mac_budget).max(1));
        let wbatch: Vec<u64> = match self.rng.below(4) {
            0 => Vec::new(),
            1 => batch.clone(),
            2 => batch
                .iter()
                .map(|&d| if self.rng.chance(0.5) { 1 } else { d })
                .collect(),
            _ if r < 4 => {
                let mut w = vec![self.rng.pick(&[1, 2, 3])];
                w.extend(
                    batch
                        .iter()
                        .map(|&d| if self.rng.chance(0.5) { 1 } else { d }),
                );
                w
            }
            _ => batch.clone(),
        };
        match self.rng.below(5) {
            0 => {
                // x @ transpose(x): attention scores.
                let a = self.named(a.clone());
                let t = format!("transpose({})", a.text);
                let mut shape = a.shape.clone();
                shape.swap(r - 2, r - 1);
                self.matmul(&a, &a, t, &shape)
            }
            1 => {
                // x @ transpose(w) with w of shape [.., n, k].
                let mut wshape = wbatch;
                wshape.extend([n, k]);
                let w = self.operand(a, wshape.clone());
                let mut tshape = wshape;
                let rw = tshape.len();
                tshape.swap(rw - 2, rw - 1);
                self.matmul(a, &w, format!("transpose({})", w.text), &tshape)
            }
            2 => {
                // w @ x with w of shape [.., n, m].
                let mut wshape = wbatch;
                wshape.extend([n, m]);
                let w = self.operand(a, wshape);
                self.matmul(&w, a, a.text.clone(), &a.shape)
            }
            _ => {
                let mut wshape = wbatch;
                wshape.extend([k, n]);
                let w = self.operand(a, wshape);
                self.matmul(a, &w, w.text.clone(), &w.shape.clone())
            }
        }
    }

    fn random_reduce(&mut self, a: &Val) -> Option<Val> {
        let r = a.shape.len() as i64;
        let axis = self.rng.range(0, 2 * r as u64 - 1) as i64 - r;
        let keepdims = r == 1 || self.rng.chance(0.4);
        let mut f = self.rng.pick(&[Red::Sum, Red::Mean, Red::Max, Red::Min]);
        let ax = if axis < 0 { axis + r } else { axis } as usize;
        let n = a.shape[ax] as f64;
        if f == Red::Sum && n * a.mag() > LIMIT {
            if matches!(a.dtype, Dtype::F8E4M3 | Dtype::F8E5M2) {
                f = Red::Mean;
            } else {
                // Scale first by an exact power of two.
                let s = 2f64.powi(-((n * a.mag() / 16.0).log2().ceil() as i32));
                let scaled = self.binary(Bin::Mul, a, &scalar(s))?;
                return self.reduce(f, &scaled, axis, keepdims);
            }
        }
        self.reduce(f, a, axis, keepdims)
    }

    fn random_transpose(&mut self, a: &Val) -> Option<Val> {
        let r = a.shape.len();
        if r < 2 {
            return None;
        }
        if self.rng.chance(0.5) {
            let mut shape = a.shape.clone();
            shape.swap(r - 2, r - 1);
            return Some(self.relayout(a, format!("transpose({})", a.text), shape));
        }
        let mut perm: Vec<usize> = (0..r).collect();
        for i in (1..r).rev() {
            let j = self.rng.below(i as u64 + 1) as usize;
            perm.swap(i, j);
        }
        let shape = perm.iter().map(|&p| a.shape[p]).collect();
        let list: Vec<String> = perm.iter().map(|p| p.to_string()).collect();
        let text = format!("transpose({}, perm=[{}])", a.text, list.join(", "));
        Some(self.relayout(a, text, shape))
    }

    fn random_reshape(&mut self, a: &Val) -> Option<Val> {
        let total = a.elems();
        let rank = self.rng.range(1, 4) as usize;
        let mut primes = Vec::new();
        let mut x = total;
        let mut p = 2;
        while x > 1 {
            while x / p * p == x {
                primes.push(p);
                x /= p;
            }
            p += 1;
        }
        for i in (1..primes.len()).rev() {
            let j = self.rng.below(i as u64 + 1) as usize;
            primes.swap(i, j);
        }
        let mut shape = vec![1u64; rank];
        for p in primes {
            let fits: Vec<usize> = (0..rank).filter(|&i| shape[i] * p <= 300).collect();
            let i = if fits.is_empty() {
                (0..rank).min_by_key(|&i| shape[i]).unwrap_or(0)
            } else {
                fits[self.rng.below(fits.len() as u64) as usize]
            };
            shape[i] *= p;
        }
        let infer = if self.rng.chance(0.3) {
            Some(self.rng.below(rank as u64) as usize)
        } else {
            None
        };
        let dims: Vec<String> = shape
            .iter()
            .enumerate()
            .map(|(i, &d)| {
                if Some(i) == infer {
                    "-1".to_string()
                } else {
                    self.dim_text(d)
                }
            })
            .collect();
        let text = format!("reshape({}, [{}])", a.text, dims.join(", "));
        Some(self.relayout(a, text, shape))
    }

    fn random_tril(&mut self, a: &Val) -> Option<Val> {
        let r = a.shape.len();
        if r < 2 {
            return None;
        }
        let (rows, cols) = (a.shape[r - 2] as i64, a.shape[r - 1] as i64);
        let fill_kind = self.rng.below(6);
        if fill_kind == 5 {
            return self.masked_with_inf(a);
        }
        let k = match self.rng.below(4) {
            0 => 0,
            1 => self.rng.range(0, 6) as i64 - 3,
            _ => self.rng.range(0, (rows + cols) as u64) as i64 - rows,
        };
        let (fill, fill_text) = match fill_kind {
            0 => (0.0, String::new()),
            1 => (0.0, ", fill=0.0".to_string()),
            2 => (1.0, ", fill=1".to_string()),
            3 => (-0.5, ", fill=-0.5".to_string()),
            _ => (2.5, ", fill=2.5".to_string()),
        };
        let k_text = if k == 0 && self.rng.chance(0.5) {
            String::new()
        } else {
            format!(", k={k}")
        };
        let fill = f64::from(numeric::round(a.dtype, fill as f32));
        Some(Val {
            text: format!("tril({}{k_text}{fill_text})", a.text),
            lo: a.lo.min(fill),
            hi: a.hi.max(fill),
            ..a.clone()
        })
    }

    /// `tril(x, k>=0, fill=-inf)` followed by an operation that turns the infinities into
    /// finite values: the softmax numerator, `exp`, `relu`, `sigmoid` or a row `max`.
    fn masked_with_inf(&mut self, a: &Val) -> Option<Val> {
        let k = self.rng.range(0, 2);
        let masked = Val {
            text: format!("tril({}, k={k}, fill=-inf)", a.text),
            ..a.clone()
        };
        // Bind it by hand: an infinite value must not be picked as an operand later.
        let name = format!("t{}", self.next_let);
        self.next_let += 1;
        self.lines
            .push(format!("    let {name} = {};", masked.text));
        let t = Val {
            text: name,
            ..masked
        };
        // The masked entries become exactly 0 under exp, sigmoid and relu.
        let with_zero = |v: Option<Val>| {
            v.map(|v| Val {
                lo: v.lo.min(0.0),
                ..v
            })
        };
        match self.rng.below(5) {
            0 => {
                let m = self.reduce(Red::Max, &t, -1, true)?;
                let shifted = self.binary(Bin::Sub, &t, &m)?;
                // The masked entries are exactly -inf on both sides, the others at most 0.
                let shifted = Val {
                    lo: shifted.lo,
                    hi: 0.0,
                    ..shifted
                };
                with_zero(self.unary(Un::Exp, &shifted))
            }
            1 if a.hi <= 4.0 => with_zero(self.unary(Un::Exp, &t)),
            2 => with_zero(self.unary(Un::Sigmoid, &t)),
            3 => {
                let keepdims = self.rng.chance(0.5);
                self.reduce(Red::Max, &t, -1, keepdims)
            }
            _ => with_zero(self.unary(Un::Relu, &t)),
        }
    }

    fn random_cast(&mut self, a: &Val) -> Option<Val> {
        let d = self.random_dtype();
        if d == a.dtype {
            return None;
        }
        Some(self.cast(a, d))
    }

    /// One random operation on the current value.
    fn random_op(&mut self, a: &Val) -> Option<Val> {
        match self.rng.weighted(&[25, 20, 6, 12, 12, 5, 5, 6, 8, 4]) {
            0 => self.random_unary(a),
            1 => self.random_binary(a),
            2 => self.row_op(a),
            3 => self.random_matmul(a),
            4 => self.random_reduce(a),
            5 => self.random_transpose(a),
            6 => self.random_reshape(a),
            7 => self.random_tril(a),
            9 => self.random_cumsum(a),
            _ => self.random_cast(a),
        }
    }

    /// `cumsum(a, axis=..)`: each element a sum of its prefix, so it is bounded and
    /// propagates error as a `sum` over the whole axis does (scaled first by a power of two
    /// when the sum could leave the value range).
    fn random_cumsum(&mut self, a: &Val) -> Option<Val> {
        if a.is_scalar() {
            return None;
        }
        let r = a.shape.len() as i64;
        let axis = self.rng.range(0, 2 * r as u64 - 1) as i64 - r;
        let ax = if axis < 0 { axis + r } else { axis } as usize;
        let n = a.shape[ax] as f64;
        if n * a.mag() > LIMIT {
            if matches!(a.dtype, Dtype::F8E4M3 | Dtype::F8E5M2) {
                return None;
            }
            let s = 2f64.powi(-((n * a.mag() / 16.0).log2().ceil() as i32));
            let scaled = self.binary(Bin::Mul, a, &scalar(s))?;
            return self.cumsum(&scaled, axis);
        }
        self.cumsum(a, axis)
    }

    fn cumsum(&mut self, a: &Val, axis: i64) -> Option<Val> {
        // The numerics of a `sum` over the axis, keeping the shape.
        let red = self.reduce(Red::Sum, a, axis, true)?;
        let lo = red.lo.min(a.lo);
        let hi = red.hi.max(a.hi);
        Some(Val {
            text: format!("cumsum({}, axis={axis})", a.text),
            shape: a.shape.clone(),
            lo,
            hi,
            ..red
        })
    }

    /// Whether some output dtype (and policy) can absorb the value's error bound.
    fn admissible(v: &Val) -> bool {
        [WIDE, STRICT]
            .iter()
            .any(|&p| Self::output_for(v, p).is_some())
    }

    /// The output form of a value under a policy: its own dtype when the bound fits, else
    /// a cast to the most precise dtype that fits. `Some(None)` means no cast.
    fn output_for(v: &Val, policy: usize) -> Option<Option<Dtype>> {
        if v.mag() > LIMIT || !v.lo.is_finite() || !v.hi.is_finite() {
            return None;
        }
        if output_fits(v.dtype, v.pre[policy], v.mag()) {
            return Some(None);
        }
        OUTPUT_CASTS
            .iter()
            .find(|&&d| d != v.dtype && output_fits(d, v.post[policy], v.mag()))
            .map(|&d| Some(d))
    }

    /// One attempt: `None` when the numerics did not fit (the caller retries).
    fn kernel(mut self, seed: u64, attempt: u64) -> Option<Kernel> {
        let shape = self.random_shape();
        let dtype = self.random_dtype();
        let mut cur = self.param(dtype, shape);
        let n_ops = self.rng.range(1, self.cfg.max_ops as u64);
        for _ in 0..n_ops {
            for _try in 0..10 {
                let (params, lines, bound, next) = (
                    self.params.len(),
                    self.lines.len(),
                    self.bound.len(),
                    self.next_let,
                );
                match self.random_op(&cur) {
                    Some(v) if Self::admissible(&v) && v.elems() <= self.cfg.max_elems => {
                        cur = if self.rng.chance(0.25) && !v.is_name() {
                            // Sometimes nest the expression in the next one instead.
                            v
                        } else {
                            self.bind(v)
                        };
                        break;
                    }
                    _ => {
                        self.params.truncate(params);
                        self.lines.truncate(lines);
                        self.bound.truncate(bound);
                        self.next_let = next;
                    }
                }
            }
        }
        // Dead code, for `dce`.
        if self.rng.chance(0.1) {
            let name = format!("t{}", self.next_let);
            self.next_let += 1;
            self.lines
                .push(format!("    let {name} = tanh({});", cur.text));
        }
        // The results: the final value, and sometimes an earlier one.
        let mut outs = vec![cur.clone()];
        if self.rng.chance(0.3) {
            let earlier: Vec<Val> = self
                .bound
                .iter()
                .filter(|v| v.text != cur.text)
                .cloned()
                .collect();
            if !earlier.is_empty() {
                outs.push(earlier[self.rng.below(earlier.len() as u64) as usize].clone());
            }
        }
        if self.rng.chance(0.5) && outs.len() == 2 {
            outs.swap(0, 1);
        }
        let fits = |p: usize| -> Option<Vec<Option<Dtype>>> {
            outs.iter().map(|v| Self::output_for(v, p)).collect()
        };
        let (strict, casts) = match fits(WIDE) {
            Some(c) if !self.rng.chance(0.2) || fits(STRICT).is_none() => (false, c),
            _ => (true, fits(STRICT)?),
        };
        let mut returns = Vec::new();
        let mut types = Vec::new();
        let mut bounds = Vec::new();
        for (v, cast) in outs.iter().zip(&casts) {
            let v = match cast {
                Some(d) => self.cast(v, *d),
                None => v.clone(),
            };
            let text = v.text.clone();
            bounds.push((v.lo, v.hi));
            types.push(self.type_text(v.dtype, &v.shape));
            returns.push(text);
        }
        // Sometimes also the position of the largest or smallest element of the final value
        // along an axis (`i32`, compared exactly when the value is exact).
        if !cur.is_scalar() && cur.dtype.is_float() && self.rng.chance(0.15) {
            let r = cur.shape.len() as i64;
            let axis = self.rng.range(0, 2 * r as u64 - 1) as i64 - r;
            let ax = if axis < 0 { axis + r } else { axis } as usize;
            let keepdims = r == 1 || self.rng.chance(0.3);
            let mut shape = cur.shape.clone();
            if keepdims {
                shape[ax] = 1;
            } else {
                shape.remove(ax);
            }
            let f = if self.rng.chance(0.5) {
                "argmax"
            } else {
                "argmin"
            };
            let kd = if keepdims { ", keepdims=true" } else { "" };
            returns.push(format!("{f}({}, axis={axis}{kd})", cur.text));
            types.push(self.type_text(Dtype::I32, &shape));
            bounds.push((0.0, (cur.shape[ax] - 1) as f64));
        }
        let mut params = Vec::new();
        for (name, dtype, shape) in self.params.clone() {
            params.push(format!("{name}: {}", self.type_text(dtype, &shape)));
        }
        let mut src = String::new();
        let _ = writeln!(
            src,
            "// Generated by tests/common/kernel_gen.rs from seed {seed} (attempt {attempt}); {}.",
            if strict {
                "run with --dtype-policy strict"
            } else {
                "default dtype policy"
            }
        );
        let sizes = if self.sizes.is_empty() {
            String::new()
        } else {
            let list: Vec<String> = self
                .sizes
                .iter()
                .map(|(v, n)| format!("{n} = {v}"))
                .collect();
            format!("<{}>", list.join(", "))
        };
        let result = if types.len() == 1 {
            types[0].clone()
        } else {
            format!("({})", types.join(", "))
        };
        let _ = writeln!(
            src,
            "kernel generated{sizes}({}) -> {result} {{",
            params.join(", ")
        );
        for line in &self.lines {
            src.push_str(line);
            src.push('\n');
        }
        if returns.len() == 1 {
            let _ = writeln!(src, "    return {};", returns[0]);
        } else {
            let _ = writeln!(src, "    return ({});", returns.join(", "));
        }
        src.push_str("}\n");
        Some(Kernel {
            source: src,
            strict,
            bounds,
        })
    }
}
