//! The language's "More functions" and "Reductions and scans" (docs/language.md) as a user
//! meets them: one kernel calling every function and every reduction and scan the way the
//! language reference writes them, run through the command line on the machine with
//! `tessera run ... --check` on inputs chosen for the cases the definitions single out
//! (NaN, infinities, -0.0, ties at .5, huge and tiny magnitudes, every pair of `pow`'s
//! special values, ties and NaN in arg-reductions, `i32` sums that wrap). `--check` must
//! pass (the machine gives the reference's values), and each output must also be what the
//! definition says, computed here independently of the compiler: NumPy's `floor`, `ceil`,
//! `round` (ties to even) and `sign`, C's `powf` (Rust's `f32::powf`), `sin` and `cos`
//! within 2 ulp of the f64 value, `softplus` without overflow, `erf` odd, `gelu(-10)` a tiny
//! negative number, sums over a list of axes in row-major order of the reduced elements,
//! the first position on ties (the first NaN winning), in-order `cumsum` in f32 and
//! wrapping `i32`.

mod common;

use runtime::npy::{self, NpyData};
use std::path::Path;
use std::process::Command;

/// The kernel, written as docs/language.md writes the calls.
const KERNEL: &str = "\
kernel contract(x: f32[128, 64], a: f32[20, 20], b: f32[20, 20], r: f32[4, 6, 5, 3], t: f32[64, 300], i: i32[64, 300]) -> (f32[128, 64], f32[128, 64], f32[128, 64], f32[128, 64], f32[128, 64], f32[128, 64], f32[128, 64], f32[128, 64], f32[128, 64], f32[128, 64], f32[128, 64], f32[20, 20], f32[4, 1, 1, 3], f32[4, 3], f32[6, 5], f32[4], i32[64], i32[64, 1], i32[300], f32[64, 300], f32[64, 300], i32[64, 300], i32[64, 300], i32[64], i32[300]) {
    return (sin(x), cos(x), erf(x), erf(-x), floor(x), ceil(x), round(x), sign(x), softplus(x), clip(x, -1, 1), gelu(x), pow(a, b), sum(r, axis=[1, 2], keepdims=true), mean(r, axis=[1, 2]), max(r, axis=[0, 3]), min(r, axis=[1, 2, 3]), argmax(t, axis=1), argmin(t, axis=1, keepdims=true), argmax(t, axis=0), cumsum(t, axis=1), cumsum(t, axis=0), cumsum(i, axis=1), cumsum(i, axis=0), argmax(i, axis=1), argmin(i, axis=0));
}
";

/// The values the definitions single out, at the start of `x`.
const SPECIAL: [f32; 50] = [
    0.0,
    -0.0,
    f32::INFINITY,
    f32::NEG_INFINITY,
    f32::NAN,
    0.5,
    -0.5,
    1.5,
    -1.5,
    2.5,
    -2.5,
    3.5,
    1.0,
    -1.0,
    2.0,
    -2.0,
    3.0,
    0.25,
    -0.25,
    1e-45,
    -1e-45,
    1e-40,
    1e-38,
    1e30,
    -1e30,
    3.4e38,
    -3.4e38,
    100.0,
    88.0,
    89.0,
    -100.0,
    10.0,
    -10.0,
    -8.4,
    -6.3,
    -5.7,
    16777217.0,
    8388608.5,
    0.49999997,
    -0.49999997,
    4.0,
    0.1,
    -0.1,
    1e-8,
    -1e-8,
    1e5,
    -1e5,
    50.0,
    20.0,
    -20.0,
];

/// `pow`'s operands: every pair of these values (C99 Annex F's special cases and a few
/// ordinary ones).
const POW: [f32; 20] = [
    0.0,
    -0.0,
    1.0,
    -1.0,
    2.0,
    -2.0,
    0.5,
    -0.5,
    3.0,
    -3.0,
    f32::INFINITY,
    f32::NEG_INFINITY,
    f32::NAN,
    1.5,
    -1.5,
    1e-45,
    1e30,
    -1e30,
    0.99,
    1.01,
];

/// A small reproducible generator (an LCG's high bits).
struct Lcg(u64);

impl Lcg {
    fn next(&mut self) -> u32 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (self.0 >> 32) as u32
    }

    /// A value in [-1, 1).
    fn unit(&mut self) -> f32 {
        (self.next() >> 8) as f32 / (1u32 << 23) as f32 - 1.0
    }
}

/// A float's position in the ordered line of floats (-0.0 and 0.0 both at 0), so that the
/// distance of two finite floats is their distance in ulp.
fn ordered(x: f32) -> i64 {
    let bits = x.to_bits();
    if bits >> 31 == 1 {
        -i64::from(bits & 0x7fff_ffff)
    } else {
        i64::from(bits)
    }
}

/// Whether `got` is within `ulps` of `want`: NaN only against NaN, infinities and the sign
/// of a zero exactly.
fn close(got: f32, want: f32, ulps: i64) -> bool {
    if got.is_nan() || want.is_nan() {
        return got.is_nan() && want.is_nan();
    }
    if want.is_infinite() || got.is_infinite() || want == 0.0 {
        return got.to_bits() == want.to_bits();
    }
    (ordered(got) - ordered(want)).abs() <= ulps
}

/// The same bits (any NaN meeting any NaN).
fn same(got: f32, want: f32) -> bool {
    close(got, want, 0) && (got.is_nan() || got.to_bits() == want.to_bits())
}

fn write_f32(dir: &Path, name: &str, shape: &[u64], data: &[f32]) {
    npy::write_npy_file(dir.join(format!("{name}.npy")), shape, data).expect("writing an input");
}

fn read(dir: &Path, i: usize) -> NpyData {
    let bytes = std::fs::read(dir.join(format!("out{i}.npy"))).expect("reading an output");
    npy::read_npy(&bytes).expect("an output .npy").data
}

fn floats(d: NpyData) -> Vec<f32> {
    match d {
        NpyData::F32(v) => v,
        other => panic!("expected float32, found {other:?}"),
    }
}

fn ints(d: NpyData) -> Vec<i32> {
    match d {
        NpyData::Int { values, .. } => values.into_iter().map(|v| v as i32).collect(),
        other => panic!("expected integers, found {other:?}"),
    }
}

/// Asserts `got[k] ~ want(k)` for every element, naming the output and the input.
fn expect(
    name: &str,
    got: &[f32],
    input: &[f32],
    ok: impl Fn(f32, f32) -> bool,
    want: impl Fn(f32) -> f32,
) {
    for (k, (&g, &x)) in got.iter().zip(input).enumerate() {
        let w = want(x);
        assert!(
            ok(g, w),
            "{name}({x:e}) at element {k}: got {g:e} ({:#010x}), want {w:e} ({:#010x})",
            g.to_bits(),
            w.to_bits()
        );
    }
}

/// The first position of the largest (`max`) or smallest element, the first NaN winning.
fn arg_best(max: bool, lane: impl Iterator<Item = f64>) -> i32 {
    let mut best: Option<(usize, f64)> = None;
    for (j, v) in lane.enumerate() {
        match best {
            None => best = Some((j, v)),
            Some((_, b)) if b.is_nan() => return best.map_or(0, |p| p.0 as i32),
            Some(_) if v.is_nan() => return j as i32,
            Some((_, b)) if (max && v > b) || (!max && v < b) => best = Some((j, v)),
            _ => {}
        }
    }
    best.map_or(0, |p| p.0 as i32)
}

#[test]
fn the_contracts_examples_run_on_the_machine_as_written() {
    let dir = common::TempDir::new("contract");
    let dir = dir.path();
    std::fs::write(dir.join("k.tsr"), KERNEL).expect("writing the kernel");
    let mut rng = Lcg(0x5eed_c0de);
    // x: the special values, then ordinary ones of several magnitudes.
    let scales = [0.01f32, 1.0, 10.0, 100.0];
    let x: Vec<f32> = (0..128 * 64)
        .map(|k| match SPECIAL.get(k) {
            Some(&v) => v,
            None => rng.unit() * 3.0 * scales[k % 4],
        })
        .collect();
    let a: Vec<f32> = (0..400).map(|k| POW[k / 20]).collect();
    let b: Vec<f32> = (0..400).map(|k| POW[k % 20]).collect();
    let r: Vec<f32> = (0..360).map(|_| rng.unit() * 100.0).collect();
    // t: small integers (many ties), a row with two NaN, one starting with NaN, one of
    // zeros of both signs, one of infinities, one of negative infinities, one ending with NaN.
    let mut t: Vec<f32> = (0..64 * 300)
        .map(|_| (rng.next() % 7) as f32 - 3.0)
        .collect();
    t[3 * 300 + 17] = f32::NAN;
    t[3 * 300 + 200] = f32::NAN;
    t[5 * 300] = f32::NAN;
    for j in 0..300 {
        t[7 * 300 + j] = if j == 5 { 0.0 } else { -0.0 };
        t[8 * 300 + j] = f32::INFINITY;
        t[9 * 300 + j] = f32::NEG_INFINITY;
    }
    t[10 * 300 + 299] = f32::NAN;
    // i: the whole i32 range, so the sums wrap and values differ beyond f32's precision.
    let i: Vec<i32> = (0..64 * 300).map(|_| rng.next() as i32).collect();
    write_f32(dir, "x", &[128, 64], &x);
    write_f32(dir, "a", &[20, 20], &a);
    write_f32(dir, "b", &[20, 20], &b);
    write_f32(dir, "r", &[4, 6, 5, 3], &r);
    write_f32(dir, "t", &[64, 300], &t);
    npy::write_npy_i32_file(dir.join("i.npy"), &[64, 300], &i).expect("writing an input");

    let out = Command::new(env!("CARGO_BIN_EXE_tessera"))
        .current_dir(dir)
        .args(["run", "k.tsr", "--check", "-o", "out"])
        .args([
            "-i", "x=x.npy", "-i", "a=a.npy", "-i", "b=b.npy", "-i", "r=r.npy",
        ])
        .args(["-i", "t=t.npy", "-i", "i=i.npy"])
        .output()
        .expect("running tessera");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "tessera run --check failed ({}):\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        stdout.matches("every element exact").count(),
        25,
        "{stdout}"
    );
    let o = dir.join("out");

    // More functions.
    let ulp2 = |g: f32, w: f32| close(g, w, 2);
    expect("sin", &floats(read(&o, 0)), &x, ulp2, |v| {
        (v as f64).sin() as f32
    });
    expect("cos", &floats(read(&o, 1)), &x, ulp2, |v| {
        (v as f64).cos() as f32
    });
    let erf = floats(read(&o, 2));
    let erf_neg = floats(read(&o, 3));
    expect("erf is odd: -erf(-x) for erf", &erf, &erf_neg, same, |v| -v);
    for (k, want) in [(0, 0.0f32), (1, -0.0), (2, 1.0), (3, -1.0), (4, f32::NAN)] {
        assert!(same(erf[k], want), "erf({:e}) is {:e}", x[k], erf[k]);
    }
    assert!(erf
        .iter()
        .zip(&x)
        .all(|(e, v)| v.is_nan() || (-1.0..=1.0).contains(e)));
    expect("floor", &floats(read(&o, 4)), &x, same, f32::floor);
    expect("ceil", &floats(read(&o, 5)), &x, same, f32::ceil);
    expect(
        "round",
        &floats(read(&o, 6)),
        &x,
        same,
        f32::round_ties_even,
    );
    // NumPy's sign: 0 for both zeros, NaN for NaN.
    let sign = |v: f32| {
        if v.is_nan() || v == 0.0 {
            v * 0.0 + 0.0
        } else {
            v.signum()
        }
    };
    expect("sign", &floats(read(&o, 7)), &x, same, sign);
    let softplus = |v: f32| {
        let v = v as f64;
        (if v > 20.0 {
            v + (-v).exp().ln_1p()
        } else {
            v.exp().ln_1p()
        }) as f32
    };
    expect("softplus", &floats(read(&o, 8)), &x, ulp2, softplus);
    let clip = |v: f32| if v.is_nan() { v } else { v.clamp(-1.0, 1.0) };
    expect("clip", &floats(read(&o, 9)), &x, same, clip);
    let gelu = floats(read(&o, 10));
    let at = |v: f32| {
        SPECIAL
            .iter()
            .position(|s| s.to_bits() == v.to_bits())
            .expect("a special value")
    };
    let g10 = gelu[at(-10.0)];
    assert!(
        g10 < 0.0 && g10 > -1e-20,
        "gelu(-10) is {g10:e}, not a tiny negative number"
    );
    let ginf = gelu[at(f32::NEG_INFINITY)];
    assert!(same(ginf, -0.0), "gelu(-inf) is {ginf:e}");
    for (k, &g) in floats(read(&o, 11)).iter().enumerate() {
        let w = a[k].powf(b[k]);
        assert!(
            close(g, w, 2),
            "pow({:e}, {:e}) is {g:e}, powf gives {w:e}",
            a[k],
            b[k]
        );
    }

    // Reductions over lists of axes: f32 sums in row-major order of the reduced elements.
    let rv = |n: usize, c: usize, h: usize, w: usize| r[((n * 6 + c) * 5 + h) * 3 + w];
    let sum12: Vec<f32> = (0..12)
        .map(|k| {
            let (n, w) = (k / 3, k % 3);
            let mut acc = rv(n, 0, 0, w);
            for m in 1..30 {
                acc += rv(n, m / 5, m % 5, w);
            }
            acc
        })
        .collect();
    let got = floats(read(&o, 12));
    assert!(
        got.iter().zip(&sum12).all(|(g, w)| same(*g, *w)),
        "sum(r, axis=[1, 2], keepdims=true): {got:?}, want {sum12:?}"
    );
    let got = floats(read(&o, 13));
    assert!(
        got.iter().zip(&sum12).all(|(g, w)| same(*g, *w / 30.0)),
        "mean(r, axis=[1, 2]): {got:?}"
    );
    let got = floats(read(&o, 14));
    for (k, &g) in got.iter().enumerate() {
        let (c, h) = (k / 5, k % 5);
        let want = (0..12)
            .map(|m| rv(m / 3, c, h, m % 3))
            .fold(f32::NEG_INFINITY, f32::max);
        assert!(
            same(g, want),
            "max(r, axis=[0, 3])[{c}, {h}] is {g}, want {want}"
        );
    }
    let got = floats(read(&o, 15));
    for (n, &g) in got.iter().enumerate() {
        let want = r[n * 90..(n + 1) * 90]
            .iter()
            .copied()
            .fold(f32::INFINITY, f32::min);
        assert!(
            same(g, want),
            "min(r, axis=[1, 2, 3])[{n}] is {g}, want {want}"
        );
    }

    // Positions: the first on ties, the first NaN winning.
    let row = |v: &[f32], l: usize| {
        v[l * 300..(l + 1) * 300]
            .iter()
            .map(|&e| f64::from(e))
            .collect::<Vec<_>>()
    };
    let col = |l: usize| {
        (0..64)
            .map(|k| f64::from(t[k * 300 + l]))
            .collect::<Vec<_>>()
    };
    let want: Vec<i32> = (0..64)
        .map(|l| arg_best(true, row(&t, l).into_iter()))
        .collect();
    assert_eq!(ints(read(&o, 16)), want, "argmax(t, axis=1)");
    let want: Vec<i32> = (0..64)
        .map(|l| arg_best(false, row(&t, l).into_iter()))
        .collect();
    assert_eq!(ints(read(&o, 17)), want, "argmin(t, axis=1, keepdims=true)");
    assert_eq!(want[3], 17, "the first NaN wins argmin");
    assert_eq!(want[7], 0, "-0.0 equals 0.0: the first wins");
    let want: Vec<i32> = (0..300)
        .map(|l| arg_best(true, col(l).into_iter()))
        .collect();
    assert_eq!(ints(read(&o, 18)), want, "argmax(t, axis=0)");

    // Scans: in index order, f32 (NaN and infinities as the sequential sum gives them).
    let got = floats(read(&o, 19));
    for l in 0..64 {
        let mut acc = t[l * 300];
        for j in 0..300 {
            if j > 0 {
                acc += t[l * 300 + j];
            }
            assert!(same(got[l * 300 + j], acc), "cumsum(t, axis=1)[{l}, {j}]");
        }
    }
    let got = floats(read(&o, 20));
    for l in 0..300 {
        let mut acc = t[l];
        for k in 0..64 {
            if k > 0 {
                acc += t[k * 300 + l];
            }
            assert!(same(got[k * 300 + l], acc), "cumsum(t, axis=0)[{k}, {l}]");
        }
    }
    // `i32`: wrapping sums, and positions among values f32 could not tell apart.
    let mut wrapped = false;
    let got = ints(read(&o, 21));
    for l in 0..64 {
        let mut acc = 0i32;
        for j in 0..300 {
            let (next, over) = acc.overflowing_add(i[l * 300 + j]);
            wrapped |= over;
            acc = next;
            assert_eq!(got[l * 300 + j], acc, "cumsum(i, axis=1)[{l}, {j}]");
        }
    }
    assert!(wrapped, "the test's sums overflow");
    let got = ints(read(&o, 22));
    for l in 0..300 {
        let mut acc = 0i32;
        for k in 0..64 {
            acc = acc.wrapping_add(i[k * 300 + l]);
            assert_eq!(got[k * 300 + l], acc, "cumsum(i, axis=0)[{k}, {l}]");
        }
    }
    let irow = |l: usize| i[l * 300..(l + 1) * 300].iter().map(|&e| f64::from(e));
    let want: Vec<i32> = (0..64).map(|l| arg_best(true, irow(l))).collect();
    assert_eq!(ints(read(&o, 23)), want, "argmax(i, axis=1)");
    let iv = &i;
    let icol = |l: usize| (0..64).map(move |k| f64::from(iv[k * 300 + l]));
    let want: Vec<i32> = (0..300).map(|l| arg_best(false, icol(l))).collect();
    assert_eq!(ints(read(&o, 24)), want, "argmin(i, axis=0)");
}
