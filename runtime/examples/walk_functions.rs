//! The exhaustive accuracy walk of the language's float functions: every one of the 2^32
//! f32 inputs of each one-operand function (`runtime::numeric::act`), and a documented
//! sample of `pow` (`runtime::numeric::pow`) with every special case of C99 Annex F,
//! against a reference computed in f64 by an independent implementation (the host's C
//! library, glibc on Linux, through std and `extern "C"`).
//!
//! ```text
//! cargo run --release -p tessera-runtime --example walk_functions -- [FUNC...] [--threads N]
//! ```
//!
//! Without a FUNC every function is walked. For each it prints the largest error in f32
//! ulps (of the reference value), the input where it occurs, how many inputs are further
//! than half an ulp, the signed zeros and NaNs that disagree, and the seconds it took.
//!
//! Why an f64 reference is good enough (docs/numerics.md repeats the argument): glibc's f64
//! `exp log sin cos pow log1p erf` are within 1 f64 ulp and `tanh erfc` within 2
//! (glibc manual, "Known Maximum Errors in Math Functions"); each composed reference below
//! is a formula without cancellation, so it is within a few f64 ulps of the exact value.
//! One f64 ulp is 2^-29 f32 ulps, so the reported error is the true error of the f32
//! result to within about 1e-8 ulp: a function reported within 0.5 + 1e-7 ulp is correctly
//! rounded except, at most, at inputs whose exact value lies that close to a rounding tie,
//! and in any case far within the language's 2 ulp.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use isa::ActFunc;
use runtime::numeric::{act, pow};

extern "C" {
    /// glibc's `erf` (the Rust standard library has none).
    fn erf(x: f64) -> f64;
    /// glibc's `erfc`.
    fn erfc(x: f64) -> f64;
}

/// The f64 nearest to `sqrt(2 / pi)`.
const S: f64 = 0.797_884_560_802_865_4;

/// The reference value of a one-operand function at `x`, in f64.
fn reference(func: ActFunc, x: f64) -> f64 {
    let sigmoid = |x: f64| {
        if x >= 0.0 {
            1.0 / (1.0 + (-x).exp())
        } else {
            let e = x.exp();
            e / (1.0 + e)
        }
    };
    match func {
        ActFunc::Identity => x,
        ActFunc::Exp => x.exp(),
        ActFunc::Log => x.ln(),
        ActFunc::Sqrt => x.sqrt(),
        ActFunc::Rsqrt => 1.0 / x.sqrt(),
        ActFunc::Reciprocal => 1.0 / x,
        ActFunc::Abs => x.abs(),
        ActFunc::Square => x * x,
        ActFunc::Tanh => x.tanh(),
        ActFunc::Sigmoid => sigmoid(x),
        ActFunc::Relu => {
            if x.is_nan() {
                x
            } else {
                x.max(0.0)
            }
        }
        ActFunc::Silu if x == f64::NEG_INFINITY => -0.0,
        ActFunc::Silu => x * sigmoid(x),
        ActFunc::Gelu if x == f64::NEG_INFINITY => -0.0,
        // SAFETY: glibc's erfc is a pure function of an f64.
        ActFunc::Gelu => 0.5 * x * unsafe { erfc(-x / std::f64::consts::SQRT_2) },
        ActFunc::GeluTanh if x == f64::NEG_INFINITY => -0.0,
        ActFunc::GeluTanh => {
            let z = S * (x + 0.044715 * x * x * x);
            if z >= 0.0 {
                0.5 * x * (1.0 + z.tanh())
            } else {
                let e = (2.0 * z).exp();
                x * e / (1.0 + e)
            }
        }
        ActFunc::Sin => x.sin(),
        ActFunc::Cos => x.cos(),
        // SAFETY: glibc's erf is a pure function of an f64.
        ActFunc::Erf => unsafe { erf(x) },
        ActFunc::Floor => x.floor(),
        ActFunc::Ceil => x.ceil(),
        ActFunc::Round => x.round_ties_even(),
        ActFunc::Sign if x.is_nan() => x,
        ActFunc::Sign if x == 0.0 => 0.0,
        ActFunc::Sign => x.signum(),
        ActFunc::Softplus if x <= 20.0 => x.exp().ln_1p(),
        ActFunc::Softplus => x + (-x).exp().ln_1p(),
    }
}

/// The spacing of f32 values at the magnitude of `r` (the subnormal spacing below the
/// normal range, the last finite spacing above it).
fn ulp32(r: f64) -> f64 {
    let e = ((r.abs().to_bits() >> 52) & 0x7ff) as i32 - 1023;
    2f64.powi(e.clamp(-126, 127) - 23)
}

/// One input's error: ulps from the reference (infinite for a NaN or infinity that
/// disagrees), and whether a zero's sign disagrees.
fn error(got: f32, want: f64) -> (f64, bool) {
    if want.is_nan() || got.is_nan() {
        return (
            if want.is_nan() && got.is_nan() {
                0.0
            } else {
                f64::INFINITY
            },
            false,
        );
    }
    if want.is_infinite() {
        return (
            if f64::from(got) == want {
                0.0
            } else {
                f64::INFINITY
            },
            false,
        );
    }
    // An f32 infinity stands for 2^128, one step past the largest finite value, and so
    // does every reference value beyond it (they round to infinity in f32).
    let big = 2f64.powi(128);
    let g = if got.is_infinite() {
        big.copysign(f64::from(got))
    } else {
        f64::from(got)
    };
    let want = want.clamp(-big, big);
    let zero_sign = got == 0.0 && want == 0.0 && got.is_sign_negative() != want.is_sign_negative();
    ((g - want).abs() / ulp32(want), zero_sign)
}

/// The result of walking one function.
#[derive(Default, Clone, Copy)]
struct Worst {
    ulps: f64,
    at: f32,
    over_half: u64,
    zero_signs: u64,
    count: u64,
}

impl Worst {
    fn add(&mut self, x: f32, (e, zs): (f64, bool)) {
        self.count += 1;
        if e > 0.5 {
            self.over_half += 1;
        }
        if zs {
            self.zero_signs += 1;
        }
        if e > self.ulps || e.is_nan() {
            self.ulps = e;
            self.at = x;
        }
    }

    fn merge(&mut self, o: Worst) {
        self.count += o.count;
        self.over_half += o.over_half;
        self.zero_signs += o.zero_signs;
        if o.ulps > self.ulps {
            self.ulps = o.ulps;
            self.at = o.at;
        }
    }
}

/// Runs `work(lo, hi)` over `0..total` split among `threads` threads and merges.
fn parallel(total: u64, threads: u64, work: impl Fn(u64, u64) -> Worst + Sync) -> Worst {
    let next = AtomicU64::new(0);
    const CHUNK: u64 = 1 << 22;
    let results: Vec<Worst> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|_| {
                s.spawn(|| {
                    let mut w = Worst::default();
                    loop {
                        let lo = next.fetch_add(CHUNK, Ordering::Relaxed);
                        if lo >= total {
                            break;
                        }
                        w.merge(work(lo, (lo + CHUNK).min(total)));
                    }
                    w
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("worker"))
            .collect()
    });
    let mut w = Worst::default();
    for r in results {
        w.merge(r);
    }
    w
}

/// Every f32 input of one function whose bits are in `range`.
fn walk(func: ActFunc, threads: u64, range: (u64, u64)) -> Worst {
    parallel(range.1 - range.0, threads, |lo, hi| {
        let mut w = Worst::default();
        for bits in lo + range.0..hi + range.0 {
            let x = f32::from_bits(bits as u32);
            w.add(x, error(act(func, x), reference(func, f64::from(x))));
        }
        w
    })
}

/// A small xorshift generator, for the reproducible `pow` sample.
fn xorshift(state: &mut u64) -> u64 {
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    *state
}

/// The special values of C99 Annex F's `pow` cases, as bases and exponents.
fn pow_specials() -> Vec<f32> {
    let mut v = vec![
        0.0,
        -0.0,
        1.0,
        -1.0,
        0.5,
        -0.5,
        2.0,
        -2.0,
        3.0,
        -3.0,
        2.5,
        -2.5,
        f32::INFINITY,
        f32::NEG_INFINITY,
        f32::NAN,
        f32::MAX,
        -f32::MAX,
        f32::MIN_POSITIVE,
        f32::from_bits(1),
        -f32::from_bits(1),
        1.0 + f32::EPSILON,
        1.0 - f32::EPSILON / 2.0,
        16_777_216.0,
        16_777_215.0,
        -16_777_215.0,
        127.0,
        128.0,
        -149.0,
        -150.0,
        0.1,
    ];
    let neg: Vec<f32> = v.iter().map(|x| -x).collect();
    v.extend(neg);
    v
}

/// `pow` on every pair of special values, then a reproducible random sample: positive
/// bases over the whole range with exponents that keep the result finite, negative bases
/// with integer exponents, bases near 1 with huge exponents, and random bit patterns.
fn walk_pow(samples: u64, threads: u64) -> Worst {
    let reference = |a: f32, b: f32| f64::from(a).powf(f64::from(b));
    let specials = pow_specials();
    let mut w = Worst::default();
    for &a in &specials {
        for &b in &specials {
            w.add(a, error(pow(a, b), reference(a, b)));
        }
    }
    let sampled = parallel(samples, threads, |lo, hi| {
        let mut w = Worst::default();
        let mut s = 0x9E37_79B9_7F4A_7C15u64 ^ lo.wrapping_mul(0xD1B5_4A32_D192_ED03) | 1;
        for i in lo..hi {
            let r = xorshift(&mut s);
            let (a, b) = match i % 4 {
                0 => {
                    // A positive base anywhere, an exponent that keeps |b log2 a| < 160.
                    let a = f32::from_bits((r as u32) & 0x7f7f_ffff);
                    let l = f64::from(a).log2().abs().max(1e-3);
                    let u = ((r >> 32) as u32) as f64 / 4_294_967_296.0 * 2.0 - 1.0;
                    (a, (u * 160.0 / l) as f32)
                }
                1 => {
                    // A negative base and an integer exponent.
                    let a = -f32::from_bits(((r as u32) % 0x0100_0000) | 0x3c00_0000);
                    (a, ((r >> 40) % 200) as f32 - 100.0)
                }
                2 => {
                    // A base within 2^-12 of 1 and a large exponent.
                    let a = 1.0 + (((r as u32) % 8192) as f32 - 4096.0) * f32::EPSILON;
                    let b = ((r >> 32) as u32 as f32) / 65536.0 - 32768.0;
                    (a, b * 64.0)
                }
                _ => (f32::from_bits(r as u32), f32::from_bits((r >> 32) as u32)),
            };
            w.add(a, error(pow(a, b), reference(a, b)));
        }
        w
    });
    w.merge(sampled);
    w
}

const FUNCS: [ActFunc; 21] = [
    ActFunc::Exp,
    ActFunc::Log,
    ActFunc::Sqrt,
    ActFunc::Rsqrt,
    ActFunc::Reciprocal,
    ActFunc::Abs,
    ActFunc::Square,
    ActFunc::Tanh,
    ActFunc::Sigmoid,
    ActFunc::Relu,
    ActFunc::Silu,
    ActFunc::Gelu,
    ActFunc::GeluTanh,
    ActFunc::Sin,
    ActFunc::Cos,
    ActFunc::Erf,
    ActFunc::Floor,
    ActFunc::Ceil,
    ActFunc::Round,
    ActFunc::Sign,
    ActFunc::Softplus,
];

fn main() {
    let mut names = Vec::new();
    let mut threads = std::thread::available_parallelism().map_or(1, |n| n.get()) as u64;
    let mut pow_samples: u64 = 1 << 30;
    let mut range = (0u64, 1u64 << 32);
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--threads" => threads = args.next().and_then(|t| t.parse().ok()).unwrap_or(threads),
            // A part of the walk, by input bits (hexadecimal, end excluded), to look closer.
            "--bits" => {
                let part = |a: Option<String>| {
                    a.and_then(|t| u64::from_str_radix(t.trim_start_matches("0x"), 16).ok())
                };
                range = (
                    part(args.next()).unwrap_or(0),
                    part(args.next()).unwrap_or(1 << 32),
                );
            }
            "--pow-samples" => {
                pow_samples = args
                    .next()
                    .and_then(|t| t.parse().ok())
                    .unwrap_or(pow_samples)
            }
            _ => names.push(a),
        }
    }
    let all = names.is_empty();
    println!("| function | inputs | max error (ulp) | at x | inputs > 0.5 ulp | zero sign differs | seconds |");
    println!("|---|---|---|---|---|---|---|");
    for f in FUNCS {
        if !all && !names.iter().any(|n| n == f.name()) {
            continue;
        }
        let t = Instant::now();
        let w = walk(f, threads, range);
        print_row(f.name(), &w, t.elapsed().as_secs_f64());
    }
    if all || names.iter().any(|n| n == "pow") {
        let t = Instant::now();
        let w = walk_pow(pow_samples, threads);
        print_row("pow", &w, t.elapsed().as_secs_f64());
    }
}

fn print_row(name: &str, w: &Worst, secs: f64) {
    println!(
        "| `{name}` | {} | {:.9} | {:e} | {} | {} | {secs:.0} |",
        w.count, w.ulps, w.at, w.over_half, w.zero_signs
    );
}
