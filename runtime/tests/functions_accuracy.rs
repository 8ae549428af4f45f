//! The accuracy of the language's one-operand functions (`numeric::act`, shared by the
//! interpreter and the reference evaluator) against correctly rounded values: every
//! function within 2 ulp of the exact value in f32, tails included, on a sample of about
//! 12,000 inputs (every special value, the negative tails where the textbook formulas of
//! `silu`, `gelu` and `gelu_tanh` cancel, and seeded random bit patterns). The expected
//! values are in `data/functions_f32.txt`, computed with 60 digits by `data/gen_functions.py`
//! (mpmath) and rounded once to f32.

use isa::ActFunc;
use runtime::numeric::act;

const TABLE: &str = include_str!("data/functions_f32.txt");

/// The functions of the table's columns, in order.
const FUNCS: [(ActFunc, &str); 10] = [
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
    let mut worst = [(0u64, 0f32); 10];
    let mut rows = 0;
    for line in TABLE.lines().filter(|l| !l.starts_with('#')) {
        let fields: Vec<u32> = line
            .split_whitespace()
            .map(|t| u32::from_str_radix(t, 16).expect("hex"))
            .collect();
        assert_eq!(fields.len(), 11, "{line}");
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
