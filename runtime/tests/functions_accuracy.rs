//! The accuracy of the language's one-operand functions (`numeric::act`, shared by the
//! interpreter and the reference evaluator) against correctly rounded values: every
//! function within 2 ulp of the exact value in f32, tails included, on a sample of about
//! 12,000 inputs (every special value, the negative tails where the textbook formulas of
//! `silu`, `gelu` and `gelu_tanh` cancel, and seeded random bit patterns). The expected
//! values are in `data/functions_f32.txt`, computed with 60 digits by `data/gen_functions.py`
//! (mpmath) and rounded once to f32.

use isa::ActFunc;
use runtime::numeric::{act, pow};

const TABLE: &str = include_str!("data/functions_f32.txt");

/// `powf` on pairs: every pair of special values and seeded samples (`data/gen_pow.py`).
const POW_TABLE: &str = include_str!("data/pow_f32.txt");

/// The functions of the table's columns, in order (the table's header must agree).
const FUNCS: [(ActFunc, &str); 14] = [
    (ActFunc::Exp, "exp"),
    (ActFunc::Log, "log"),
    (ActFunc::Sqrt, "sqrt"),
    (ActFunc::Rsqrt, "rsqrt"),
    (ActFunc::Reciprocal, "reciprocal"),
    (ActFunc::Tanh, "tanh"),
    (ActFunc::Sigmoid, "sigmoid"),
    (ActFunc::Silu, "silu"),
    (ActFunc::Gelu, "gelu"),
    (ActFunc::GeluTanh, "gelu_tanh"),
    (ActFunc::Sin, "sin"),
    (ActFunc::Cos, "cos"),
    (ActFunc::Erf, "erf"),
    (ActFunc::Softplus, "softplus"),
];

/// The distance in f32 steps between two non-NaN values (the zeros are one value).
fn ulps(a: f32, b: f32) -> u64 {
    let key = |x: f32| -> i64 {
        let bits = x.to_bits();
        if bits & 0x8000_0000 != 0 {
            -((bits & 0x7fff_ffff) as i64)
        } else {
            bits as i64
        }
    };
    (key(a) - key(b)).unsigned_abs()
}

#[test]
fn every_function_is_within_two_ulp_of_the_exact_value() {
    let header = TABLE
        .lines()
        .find_map(|l| l.strip_prefix("# functions: "))
        .expect("the table names its functions");
    let names: Vec<&str> = FUNCS.iter().map(|(_, n)| *n).collect();
    assert_eq!(header.split_whitespace().collect::<Vec<_>>(), names);
    let mut worst = [(0u64, 0f32); FUNCS.len()];
    let mut rows = 0;
    for line in TABLE.lines().filter(|l| !l.starts_with('#')) {
        let fields: Vec<u32> = line
            .split_whitespace()
            .map(|t| u32::from_str_radix(t, 16).expect("hex"))
            .collect();
        assert_eq!(fields.len(), FUNCS.len() + 1, "{line}");
        let x = f32::from_bits(fields[0]);
        rows += 1;
        for (i, (func, name)) in FUNCS.iter().enumerate() {
            // The table's zeros carry no sign (mpmath has none): 1/x and 1/sqrt(x) of a
            // negative zero are checked below instead.
            if x == 0.0
                && x.is_sign_negative()
                && matches!(func, ActFunc::Reciprocal | ActFunc::Rsqrt)
            {
                continue;
            }
            let want = f32::from_bits(fields[i + 1]);
            let got = act(*func, x);
            if want.is_nan() || got.is_nan() {
                assert!(
                    want.is_nan() && got.is_nan(),
                    "{name}({x:e}) = {got:e}, exact {want:e}"
                );
                continue;
            }
            if want.is_infinite() || got.is_infinite() {
                assert_eq!(got, want, "{name}({x:e})");
                continue;
            }
            let d = ulps(got, want);
            if d > worst[i].0 {
                worst[i] = (d, x);
            }
        }
    }
    assert!(rows > 10_000, "only {rows} rows");
    let report: Vec<String> = FUNCS
        .iter()
        .zip(&worst)
        .map(|((_, name), (d, x))| format!("{name}: {d} ulp (at {x:e})"))
        .collect();
    eprintln!("max error per function: {}", report.join(", "));
    for ((_, name), (d, x)) in FUNCS.iter().zip(&worst) {
        assert!(*d <= 2, "{name} is {d} ulp off at x = {x:e}");
    }
}

/// The limits at the infinities, and the tails that once cancelled to the wrong value.
#[test]
fn limits_and_tails() {
    let neg_zero = (-0.0f32).to_bits();
    for func in [ActFunc::Silu, ActFunc::Gelu, ActFunc::GeluTanh] {
        assert_eq!(
            act(func, f32::NEG_INFINITY).to_bits(),
            neg_zero,
            "{func:?}(-inf)"
        );
        assert_eq!(act(func, f32::INFINITY), f32::INFINITY, "{func:?}(inf)");
    }
    // gelu(-10) = -5 erfc(10 / sqrt 2) = -7.6198530e-23: a tiny negative number, not -0.
    let g = act(ActFunc::Gelu, -10.0);
    assert!((g / -7.619_853e-23 - 1.0).abs() < 1e-6, "{g:e}");
    // gelu_tanh(-8) = -8 / (1 + exp(2 * S * (8 + 0.044715 * 512))): about -1.2e-20.
    let t = act(ActFunc::GeluTanh, -8.0);
    assert!(t < 0.0 && t > -1e-19, "{t:e}");
    assert_eq!(act(ActFunc::Reciprocal, -0.0), f32::NEG_INFINITY);
    assert_eq!(act(ActFunc::Rsqrt, -0.0), f32::NEG_INFINITY);
}

/// `pow` on the sample of `data/pow_f32.txt`: within 2 ulp everywhere (the implementation
/// is within one), every special case of C99 Annex F exactly, the sign of a zero result
/// included.
#[test]
fn pow_is_within_two_ulp_and_follows_c99_annex_f() {
    let mut worst = (0u64, 0f32, 0f32);
    let mut rows = 0;
    for line in POW_TABLE.lines().filter(|l| !l.starts_with('#')) {
        let f: Vec<u32> = line
            .split_whitespace()
            .map(|t| u32::from_str_radix(t, 16).expect("hex"))
            .collect();
        assert_eq!(f.len(), 3, "{line}");
        let (a, b, want) = (
            f32::from_bits(f[0]),
            f32::from_bits(f[1]),
            f32::from_bits(f[2]),
        );
        let got = pow(a, b);
        rows += 1;
        if want.is_nan() || got.is_nan() || want.is_infinite() || got.is_infinite() || want == 0.0 {
            assert_eq!(
                got.to_bits(),
                if want.is_nan() {
                    0x7fc0_0000
                } else {
                    want.to_bits()
                },
                "pow({a:e}, {b:e}) = {got:e}, exact {want:e}"
            );
            continue;
        }
        let d = ulps(got, want);
        if d > worst.0 {
            worst = (d, a, b);
        }
    }
    assert!(rows > 10_000, "only {rows} rows");
    eprintln!("pow: max {} ulp (at {:e}, {:e})", worst.0, worst.1, worst.2);
    assert!(
        worst.0 <= 2,
        "pow is {} ulp off at ({:e}, {:e})",
        worst.0,
        worst.1,
        worst.2
    );
}

/// The exact functions against their definitions on every special value and a sweep:
/// `floor`, `ceil`, `round` (ties to even) and `sign` (NumPy's: `sign(-0) = +0`).
#[test]
fn exact_functions() {
    let mut xs: Vec<f32> = vec![
        0.0,
        -0.0,
        0.5,
        -0.5,
        1.5,
        -1.5,
        2.5,
        -2.5,
        0.49999997,
        -0.49999997,
        8_388_607.5,
        -8_388_607.5,
        8_388_609.0,
        16_777_217.0,
        1e-45,
        -1e-45,
        f32::MIN_POSITIVE,
        f32::MAX,
        -f32::MAX,
        f32::INFINITY,
        f32::NEG_INFINITY,
        f32::NAN,
    ];
    let mut s = 0x1234_5678_9abc_def1u64;
    for _ in 0..200_000 {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        xs.push(f32::from_bits(s as u32));
    }
    for x in xs {
        let check = |func: ActFunc, want: f32| {
            let got = act(func, x);
            let want = if want.is_nan() {
                f32::from_bits(0x7fc0_0000)
            } else {
                want
            };
            assert_eq!(
                got.to_bits(),
                want.to_bits(),
                "{func:?}({x:e}) = {got:e}, want {want:e}"
            );
        };
        check(ActFunc::Floor, x.floor());
        check(ActFunc::Ceil, x.ceil());
        check(ActFunc::Round, x.round_ties_even());
        let sign = if x.is_nan() {
            x
        } else if x == 0.0 {
            0.0
        } else {
            x.signum()
        };
        check(ActFunc::Sign, sign);
    }
    assert_eq!(act(ActFunc::Round, -0.5).to_bits(), 0x8000_0000);
    assert_eq!(act(ActFunc::Ceil, -0.5).to_bits(), 0x8000_0000);
    assert_eq!(act(ActFunc::Sign, -0.0).to_bits(), 0);
    // softplus never overflows: exp(100) is beyond f32, softplus(100) is 100.
    assert_eq!(act(ActFunc::Softplus, 100.0), 100.0);
    assert_eq!(act(ActFunc::Softplus, f32::MAX), f32::MAX);
    assert_eq!(act(ActFunc::Softplus, f32::INFINITY), f32::INFINITY);
    assert_eq!(act(ActFunc::Softplus, f32::NEG_INFINITY), 0.0);
    assert!(act(ActFunc::Sin, f32::INFINITY).is_nan());
    assert_eq!(act(ActFunc::Erf, f32::NEG_INFINITY), -1.0);
}
