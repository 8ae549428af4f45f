//! Edge cases of `runtime::numeric`: rounding ties, subnormals, signed zeros, overflow and
//! saturation, NaN canonicalisation, the bulk paths against the scalar functions for every
//! code, an independent nearest-value oracle for encoding, and `alu`/`act` on values
//! computed by hand.

use isa::{ActFunc, AluOp, Dtype};
use runtime::numeric::{
    act, alu, canonical_nan, decode, encode, encode_f64, load, max_finite, round, round_f64, store,
    F32_NAN_BITS, SQRT_2_OVER_PI,
};

const SMALL: [Dtype; 4] = [Dtype::Bf16, Dtype::F16, Dtype::F8E4M3, Dtype::F8E5M2];

/// 2^k as an f32 (k in the normal range).
fn p2(k: i32) -> f32 {
    f32::from_bits(((k + 127) as u32) << 23)
}

fn enc(d: Dtype, x: f32) -> u32 {
    encode(d, x)
}

fn bits(x: f32) -> u32 {
    x.to_bits()
}

#[test]
fn ties_round_to_even() {
    // bf16: 1 + 2^-8 is halfway between 0x3f80 (even) and 0x3f81.
    assert_eq!(enc(Dtype::Bf16, 1.0 + p2(-8)), 0x3f80);
    assert_eq!(enc(Dtype::Bf16, 1.0 + 3.0 * p2(-8)), 0x3f82);
    assert_eq!(enc(Dtype::Bf16, f32::from_bits(0x3f80_8001)), 0x3f81);
    assert_eq!(enc(Dtype::Bf16, -(1.0 + p2(-8))), 0xbf80);
    // f16: ulp of 1 is 2^-10.
    assert_eq!(enc(Dtype::F16, 1.0 + p2(-11)), 0x3c00);
    assert_eq!(enc(Dtype::F16, 1.0 + 3.0 * p2(-11)), 0x3c02);
    assert_eq!(enc(Dtype::F16, 1.0 + p2(-11) + p2(-20)), 0x3c01);
    // e4m3: ulp of 1 is 1/8.
    assert_eq!(enc(Dtype::F8E4M3, 1.0625), 0x38);
    assert_eq!(enc(Dtype::F8E4M3, 1.1875), 0x3a);
    assert_eq!(enc(Dtype::F8E4M3, 1.0626), 0x39);
    // e5m2: ulp of 1 is 1/4.
    assert_eq!(enc(Dtype::F8E5M2, 1.125), 0x3c);
    assert_eq!(enc(Dtype::F8E5M2, 1.375), 0x3e);
    assert_eq!(enc(Dtype::F8E5M2, -1.375), 0xbe);
}

#[test]
fn carry_into_the_next_binade() {
    // The largest value below 2 rounds up to 2 when the tie goes to the even neighbour.
    assert_eq!(enc(Dtype::Bf16, f32::from_bits(0x3fff_ffff)), 0x4000);
    assert_eq!(enc(Dtype::Bf16, f32::from_bits(0x3fff_8000)), 0x4000);
    assert_eq!(enc(Dtype::Bf16, f32::from_bits(0x3fff_7fff)), 0x3fff);
    assert_eq!(enc(Dtype::F16, 2.0 - p2(-11)), 0x4000);
    assert_eq!(enc(Dtype::F8E4M3, 2.0 - p2(-4)), 0x40);
    assert_eq!(enc(Dtype::F8E5M2, 2.0 - p2(-3)), 0x40);
    assert_eq!(enc(Dtype::F8E5M2, 2.0 - p2(-3) - p2(-10)), 0x3f);
}

#[test]
fn subnormals() {
    // f16: smallest subnormal 2^-24, largest 1023 * 2^-24, smallest normal 2^-14.
    assert_eq!(enc(Dtype::F16, p2(-24)), 0x0001);
    assert_eq!(enc(Dtype::F16, p2(-25)), 0x0000);
    assert_eq!(enc(Dtype::F16, p2(-25) * 1.000_001), 0x0001);
    assert_eq!(enc(Dtype::F16, 3.0 * p2(-25)), 0x0002);
    assert_eq!(enc(Dtype::F16, 5.0 * p2(-25)), 0x0002);
    assert_eq!(enc(Dtype::F16, 1023.0 * p2(-24)), 0x03ff);
    assert_eq!(enc(Dtype::F16, 1023.5 * p2(-24)), 0x0400);
    assert_eq!(enc(Dtype::F16, 1023.25 * p2(-24)), 0x03ff);
    assert_eq!(enc(Dtype::F16, -p2(-24)), 0x8001);
    assert_eq!(enc(Dtype::F16, -p2(-30)), 0x8000);
    assert_eq!(decode(Dtype::F16, 0x0001), p2(-24));
    assert_eq!(decode(Dtype::F16, 0x03ff), 1023.0 * p2(-24));
    assert_eq!(decode(Dtype::F16, 0x8200), -512.0 * p2(-24));
    // e4m3: smallest subnormal 2^-9, smallest normal 2^-6 (code 0x08).
    assert_eq!(enc(Dtype::F8E4M3, p2(-9)), 0x01);
    assert_eq!(enc(Dtype::F8E4M3, p2(-10)), 0x00);
    assert_eq!(enc(Dtype::F8E4M3, 1.5 * p2(-9)), 0x02);
    assert_eq!(enc(Dtype::F8E4M3, 7.5 * p2(-9)), 0x08);
    assert_eq!(enc(Dtype::F8E4M3, 6.5 * p2(-9)), 0x06);
    assert_eq!(decode(Dtype::F8E4M3, 0x07), 7.0 * p2(-9));
    // e5m2: smallest subnormal 2^-16, smallest normal 2^-14 (code 0x04).
    assert_eq!(enc(Dtype::F8E5M2, p2(-16)), 0x01);
    assert_eq!(enc(Dtype::F8E5M2, 3.5 * p2(-16)), 0x04);
    assert_eq!(enc(Dtype::F8E5M2, 2.5 * p2(-16)), 0x02);
    assert_eq!(decode(Dtype::F8E5M2, 0x83), -3.0 * p2(-16));
    // bf16 shares f32's exponent range: f32 subnormals round to bf16 subnormals.
    assert_eq!(enc(Dtype::Bf16, f32::from_bits(0x0000_8000)), 0x0000);
    assert_eq!(enc(Dtype::Bf16, f32::from_bits(0x0001_8000)), 0x0002);
    assert_eq!(enc(Dtype::Bf16, f32::from_bits(0x007f_ffff)), 0x0080);
    // Rounding from f64 reaches below f32's range and still rounds once.
    assert_eq!(
        encode_f64(Dtype::F16, 2f64.powi(-25) * (1.0 + 2f64.powi(-40))),
        0x0001
    );
    assert_eq!(encode_f64(Dtype::Bf16, 2f64.powi(-133)), 0x0001);
    assert_eq!(encode_f64(Dtype::Bf16, 2f64.powi(-134)), 0x0000);
    assert_eq!(encode_f64(Dtype::Bf16, -2f64.powi(-134) * 1.5), 0x8001);
    assert_eq!(encode_f64(Dtype::F8E4M3, 1e-300), 0x00);
    assert_eq!(encode_f64(Dtype::F8E4M3, f64::from_bits(1)), 0x00);
}

#[test]
fn signed_zeros() {
    for d in Dtype::FLOATS {
        let size_bits = 8 * d.size();
        assert_eq!(enc(d, 0.0), 0, "{d}");
        assert_eq!(enc(d, -0.0), 1 << (size_bits - 1), "{d}");
        assert_eq!(bits(decode(d, 1 << (size_bits - 1))), 0x8000_0000, "{d}");
        assert_eq!(bits(round(d, -0.0)), 0x8000_0000, "{d}");
    }
}

#[test]
fn overflow_to_infinity_and_saturation() {
    // bf16 and f16 overflow to infinity (IEEE).
    assert_eq!(enc(Dtype::Bf16, f32::MAX), 0x7f80);
    assert_eq!(enc(Dtype::Bf16, f32::from_bits(0x7f7f_7fff)), 0x7f7f);
    assert_eq!(enc(Dtype::Bf16, f32::NEG_INFINITY), 0xff80);
    assert_eq!(enc(Dtype::F16, 65504.0), 0x7bff);
    assert_eq!(enc(Dtype::F16, 65519.996), 0x7bff);
    assert_eq!(enc(Dtype::F16, 65520.0), 0x7c00);
    assert_eq!(enc(Dtype::F16, -1e10), 0xfc00);
    assert_eq!(enc(Dtype::F16, f32::INFINITY), 0x7c00);
    assert_eq!(encode_f64(Dtype::F32, 1e300), 0x7f80_0000);
    assert_eq!(encode_f64(Dtype::F32, -1e300), 0xff80_0000);
    assert_eq!(encode_f64(Dtype::Bf16, 1e300), 0x7f80);
    // FP8 saturates every non-NaN value beyond the range, infinities too.
    for (x, want) in [
        (448.0, 0x7e),
        (449.0, 0x7e),
        (464.0, 0x7e),
        (465.0, 0x7e),
        (480.0, 0x7e),
        (1e30, 0x7e),
        (f32::INFINITY, 0x7e),
        (-500.0, 0xfe),
        (f32::NEG_INFINITY, 0xfe),
    ] {
        assert_eq!(enc(Dtype::F8E4M3, x), want, "e4m3 {x}");
        assert_eq!(
            encode_f64(Dtype::F8E4M3, f64::from(x)),
            want,
            "e4m3 f64 {x}"
        );
    }
    for (x, want) in [
        (57344.0, 0x7b),
        (61439.0, 0x7b),
        (61440.0, 0x7b),
        (1e30, 0x7b),
        (f32::INFINITY, 0x7b),
        (f32::NEG_INFINITY, 0xfb),
    ] {
        assert_eq!(enc(Dtype::F8E5M2, x), want, "e5m2 {x}");
    }
    assert_eq!(encode_f64(Dtype::F8E5M2, f64::INFINITY), 0x7b);
    assert_eq!(max_finite(Dtype::F8E4M3), 448.0);
    assert_eq!(max_finite(Dtype::F8E5M2), 57344.0);
    assert_eq!(max_finite(Dtype::F16), 65504.0);
    assert_eq!(bits(max_finite(Dtype::Bf16)), 0x7f7f_0000);
    assert_eq!(max_finite(Dtype::F32), f32::MAX);
}

#[test]
fn infinities_and_nans_decode() {
    assert_eq!(decode(Dtype::F16, 0x7c00), f32::INFINITY);
    assert_eq!(decode(Dtype::F16, 0xfc00), f32::NEG_INFINITY);
    assert!(decode(Dtype::F16, 0x7c01).is_nan());
    assert!(decode(Dtype::F16, 0xfe00).is_nan());
    assert_eq!(decode(Dtype::Bf16, 0xff80), f32::NEG_INFINITY);
    assert!(decode(Dtype::Bf16, 0x7f81).is_nan());
    assert_eq!(decode(Dtype::F8E5M2, 0x7c), f32::INFINITY);
    assert!(decode(Dtype::F8E5M2, 0xfd).is_nan());
    // E4M3 "fn": the all-ones exponent is finite except for S.1111.111.
    assert_eq!(decode(Dtype::F8E4M3, 0x7e), 448.0);
    assert_eq!(decode(Dtype::F8E4M3, 0x78), 256.0);
    assert!(decode(Dtype::F8E4M3, 0x7f).is_nan());
    assert!(decode(Dtype::F8E4M3, 0xff).is_nan());
    // A NaN keeps its sign and its payload when widened.
    assert_eq!(bits(decode(Dtype::F16, 0xfc01)), 0xff80_2000);
    assert_eq!(bits(decode(Dtype::F8E4M3, 0xff)), 0xfff0_0000);
    // Only the format's low bits are used.
    assert_eq!(decode(Dtype::F8E4M3, 0x1_38), 1.0);
    assert_eq!(decode(Dtype::F16, 0xabcd_3c00), 1.0);
    assert_eq!(decode(Dtype::Bf16, 0xabcd_3f80), 1.0);
}

#[test]
fn nan_encodes_to_the_canonical_nan() {
    let nans = [
        f32::NAN,
        -f32::NAN,
        f32::from_bits(0x7f80_0001),
        f32::from_bits(0xff80_0001),
        f32::from_bits(0x7fff_ffff),
        f32::from_bits(0xffc0_1234),
    ];
    assert_eq!(canonical_nan(Dtype::F32), 0x7fc0_0000);
    assert_eq!(canonical_nan(Dtype::Bf16), 0x7fc0);
    assert_eq!(canonical_nan(Dtype::F16), 0x7e00);
    assert_eq!(canonical_nan(Dtype::F8E4M3), 0x7f);
    assert_eq!(canonical_nan(Dtype::F8E5M2), 0x7e);
    for d in Dtype::FLOATS {
        for x in nans {
            assert_eq!(enc(d, x), canonical_nan(d), "{d} {:08x}", bits(x));
            assert_eq!(encode_f64(d, f64::from(x)), canonical_nan(d), "{d}");
            assert!(round(d, x).is_nan());
        }
        assert_eq!(encode_f64(d, -f64::NAN), canonical_nan(d));
        assert!(round_f64(d, f64::NAN).is_nan());
    }
}

#[test]
fn every_code_round_trips() {
    for d in SMALL {
        let count = 1u32 << (8 * d.size());
        for code in 0..count {
            let x = decode(d, code);
            if x.is_nan() {
                assert_eq!(enc(d, x), canonical_nan(d), "{d} {code:x}");
            } else if x.is_infinite() && d.is_fp8() {
                // E5M2's infinities saturate when encoded again.
                assert_eq!(enc(d, x), code - 1, "{d} {code:x}");
            } else {
                assert_eq!(enc(d, x), code, "{d} {code:x}");
                assert_eq!(encode_f64(d, f64::from(x)), code, "{d} {code:x}");
            }
        }
    }
}

#[test]
fn bulk_load_matches_decode_for_every_code() {
    for d in SMALL {
        let size = d.size() as usize;
        let count = 1usize << (8 * size);
        let bytes: Vec<u8> = (0..count as u32)
            .flat_map(|c| c.to_le_bytes()[..size].to_vec())
            .collect();
        let mut out = vec![0.0f32; count];
        assert_eq!(load(d, &bytes, &mut out), count);
        for (code, v) in out.iter().enumerate() {
            assert_eq!(bits(*v), bits(decode(d, code as u32)), "{d} {code:x}");
        }
        // And storing the decoded values gives the codes back (NaNs canonical).
        let mut back = vec![0u8; bytes.len()];
        assert_eq!(store(d, &out, &mut back), count);
        for (code, chunk) in back.chunks_exact(size).enumerate() {
            let mut b = [0u8; 4];
            b[..size].copy_from_slice(chunk);
            let got = u32::from_le_bytes(b);
            assert_eq!(got, enc(d, out[code]), "{d} {code:x}");
        }
    }
}

#[test]
fn bulk_paths_on_f32_and_mismatched_lengths() {
    let values = [
        1.5f32,
        -0.0,
        f32::INFINITY,
        f32::from_bits(0xffc0_0001),
        1e-45,
    ];
    let mut bytes = [0u8; 20];
    assert_eq!(store(Dtype::F32, &values, &mut bytes), 5);
    let mut back = [0.0f32; 5];
    assert_eq!(load(Dtype::F32, &bytes, &mut back), 5);
    for (a, b) in values.iter().zip(&back) {
        assert_eq!(bits(*b), enc(Dtype::F32, *a));
    }
    assert_eq!(bits(back[3]), F32_NAN_BITS);
    // Lengths that do not match convert the common prefix and never panic.
    assert_eq!(load(Dtype::F16, &[0, 0x3c, 0], &mut back), 1);
    assert_eq!(back[0], 1.0);
    assert_eq!(load(Dtype::F32, &bytes, &mut back[..2]), 2);
    assert_eq!(store(Dtype::Bf16, &values, &mut bytes[..3]), 1);
    assert_eq!(store(Dtype::F8E4M3, &values[..2], &mut bytes), 2);
    assert_eq!(load(Dtype::F8E5M2, &[], &mut back), 0);
}

/// An encoder written differently from the library's: the nearest of the sorted finite
/// values of the format, ties to the even code, found by binary search. The value one ulp
/// above the largest finite stands for overflow.
struct Oracle {
    dtype: Dtype,
    /// Non-negative finite values and their codes, ascending, plus the overflow entry.
    table: Vec<(f64, u32)>,
}

impl Oracle {
    fn new(dtype: Dtype) -> Oracle {
        let count = 1u32 << (8 * dtype.size() - 1);
        let mut table: Vec<(f64, u32)> = (0..count)
            .map(|c| (f64::from(decode(dtype, c)), c))
            .filter(|(v, _)| v.is_finite())
            .collect();
        table.sort_by(|a, b| a.0.total_cmp(&b.0));
        let (max, code) = table[table.len() - 1];
        let (below, _) = table[table.len() - 2];
        table.push((max + (max - below), code + 1));
        Oracle { dtype, table }
    }

    fn encode(&self, x: f32) -> u32 {
        if x.is_nan() {
            return canonical_nan(self.dtype);
        }
        let sign = u32::from(x.is_sign_negative()) << (8 * self.dtype.size() - 1);
        let a = f64::from(x.abs());
        let i = self.table.partition_point(|e| e.0 <= a);
        let code = if i == self.table.len() {
            self.table[i - 1].1
        } else if i == 0 {
            0
        } else {
            let (lo, lo_code) = self.table[i - 1];
            let (hi, hi_code) = self.table[i];
            if a - lo < hi - a || (a - lo == hi - a && lo_code % 2 == 0) {
                lo_code
            } else {
                hi_code
            }
        };
        let top = self.table[self.table.len() - 1].1;
        let code = if code >= top {
            match self.dtype {
                Dtype::F8E4M3 | Dtype::F8E5M2 => top - 1,
                // The code after the largest finite is infinity.
                _ => top,
            }
        } else {
            code
        };
        sign | code
    }
}

#[test]
fn encode_agrees_with_a_nearest_value_oracle() {
    for d in SMALL {
        let oracle = Oracle::new(d);
        // A walk over the whole f32 bit space with an odd stride, plus the neighbourhood of
        // every code's value and of every midpoint between consecutive values.
        let mut inputs: Vec<f32> = (0..300_000u64)
            .map(|i| f32::from_bits((i * 14_317) as u32 ^ ((i as u32) << 31)))
            .collect();
        for w in oracle.table.windows(2) {
            let (lo, hi) = (w[0].0 as f32, w[1].0 as f32);
            let mid = ((f64::from(lo) + f64::from(hi)) / 2.0) as f32;
            for v in [lo, hi, mid] {
                for delta in [-1i32, 0, 1] {
                    let b = (bits(v) as i32).wrapping_add(delta) as u32;
                    inputs.push(f32::from_bits(b));
                    inputs.push(-f32::from_bits(b));
                }
            }
        }
        inputs.extend([f32::INFINITY, f32::NEG_INFINITY, f32::MAX, f32::MIN]);
        for x in inputs {
            assert_eq!(
                enc(d, x),
                oracle.encode(x),
                "{d} of {:08x} ({x:e})",
                bits(x)
            );
        }
    }
}

#[test]
fn alu_on_hand_computed_values() {
    let nan = f32::NAN;
    assert_eq!(alu(AluOp::Bypass, 7.0, nan), 7.0);
    assert_eq!(alu(AluOp::Add, 1.0, 2.0), 3.0);
    assert_eq!(alu(AluOp::Sub, 5.0, 3.0), 2.0);
    assert_eq!(alu(AluOp::RSub, 5.0, 3.0), -2.0);
    assert_eq!(alu(AluOp::Mul, 1.5, -4.0), -6.0);
    assert_eq!(alu(AluOp::Div, 1.0, 4.0), 0.25);
    assert_eq!(alu(AluOp::RDiv, 4.0, 1.0), 0.25);
    assert_eq!(alu(AluOp::Div, 1.0, 3.0), f32::from_bits(0x3eaa_aaab));
    assert_eq!(alu(AluOp::Div, 1.0, -0.0), f32::NEG_INFINITY);
    // Rounding is binary32, to nearest even: 1 + 2^-24 is a tie that goes back to 1.
    assert_eq!(alu(AluOp::Add, 1.0, p2(-24)), 1.0);
    assert_eq!(alu(AluOp::Add, 1.0, p2(-24) * 1.5), 1.0 + p2(-23));
    // Subnormals are kept, not flushed.
    assert_eq!(bits(alu(AluOp::Mul, p2(-126), 0.5)), 0x0040_0000);
    assert_eq!(
        bits(alu(AluOp::Sub, p2(-126), f32::from_bits(0x007f_ffff))),
        1
    );
    // max and min: NaN wins, then -0 < +0.
    assert_eq!(alu(AluOp::Max, -1.0, 2.0), 2.0);
    assert_eq!(alu(AluOp::Min, -1.0, 2.0), -1.0);
    assert_eq!(alu(AluOp::Min, f32::NEG_INFINITY, 3.0), f32::NEG_INFINITY);
    assert_eq!(bits(alu(AluOp::Max, -0.0, 0.0)), 0);
    assert_eq!(bits(alu(AluOp::Max, 0.0, -0.0)), 0);
    assert_eq!(bits(alu(AluOp::Min, 0.0, -0.0)), 0x8000_0000);
    assert_eq!(bits(alu(AluOp::Min, -0.0, 0.0)), 0x8000_0000);
    for op in [AluOp::Max, AluOp::Min] {
        assert_eq!(bits(alu(op, nan, 1.0)), F32_NAN_BITS);
        assert_eq!(bits(alu(op, 1.0, nan)), F32_NAN_BITS);
        assert_eq!(bits(alu(op, f32::INFINITY, -nan)), F32_NAN_BITS);
    }
    // Every NaN result is the canonical one, whatever the host's arithmetic makes.
    assert_eq!(bits(alu(AluOp::Mul, 0.0, f32::INFINITY)), F32_NAN_BITS);
    assert_eq!(
        bits(alu(AluOp::Sub, f32::INFINITY, f32::INFINITY)),
        F32_NAN_BITS
    );
    assert_eq!(bits(alu(AluOp::Div, 0.0, 0.0)), F32_NAN_BITS);
    assert_eq!(
        bits(alu(AluOp::Add, f32::from_bits(0xffc0_0001), 1.0)),
        F32_NAN_BITS
    );
    assert_eq!(
        bits(alu(AluOp::Bypass, f32::from_bits(0xff80_0001), 1.0)),
        F32_NAN_BITS
    );
}

#[test]
fn act_on_hand_computed_values() {
    use ActFunc::*;
    let f = |func, x: f32| act(func, x);
    let canon = |x: f32| bits(x) == F32_NAN_BITS;

    assert_eq!(f(Identity, -2.5), -2.5);
    assert!(canon(f(Identity, f32::from_bits(0xff80_0001))));
    // exp: e rounded to f32 is 0x402df854.
    assert_eq!(f(Exp, 0.0), 1.0);
    assert_eq!(bits(f(Exp, 1.0)), 0x402d_f854);
    assert_eq!(f(Exp, f32::NEG_INFINITY), 0.0);
    assert_eq!(f(Exp, 100.0), f32::INFINITY);
    // log(2) = 0.69314718055994530942 -> 0x3f317218.
    assert_eq!(f(Log, 1.0), 0.0);
    assert_eq!(bits(f(Log, 2.0)), 0x3f31_7218);
    assert_eq!(f(Log, 0.0), f32::NEG_INFINITY);
    assert_eq!(f(Log, -0.0), f32::NEG_INFINITY);
    assert!(canon(f(Log, -1.0)));
    // sqrt(2) = 1.41421356 -> 0x3fb504f3.
    assert_eq!(f(Sqrt, 4.0), 2.0);
    assert_eq!(bits(f(Sqrt, 2.0)), 0x3fb5_04f3);
    assert_eq!(bits(f(Sqrt, -0.0)), 0x8000_0000);
    assert!(canon(f(Sqrt, -4.0)));
    assert_eq!(f(Rsqrt, 4.0), 0.5);
    assert_eq!(f(Rsqrt, 0.0), f32::INFINITY);
    assert_eq!(f(Rsqrt, -0.0), f32::NEG_INFINITY);
    assert_eq!(f(Rsqrt, f32::INFINITY), 0.0);
    // 1/3 -> 0x3eaaaaab; 1/-0 = -inf.
    assert_eq!(f(Reciprocal, 4.0), 0.25);
    assert_eq!(bits(f(Reciprocal, 3.0)), 0x3eaa_aaab);
    assert_eq!(f(Reciprocal, -0.0), f32::NEG_INFINITY);
    assert_eq!(bits(f(Abs, -0.0)), 0);
    assert_eq!(f(Abs, -2.0), 2.0);
    assert!(canon(f(Abs, -f32::NAN)));
    assert_eq!(f(Square, -3.0), 9.0);
    assert_eq!(f(Square, f32::MAX), f32::INFINITY);
    assert_eq!(f(Square, 1e-30), 0.0);
    assert_eq!(
        f(Square, 1.0 + p2(-23)),
        alu(AluOp::Mul, 1.0 + p2(-23), 1.0 + p2(-23))
    );
    // tanh(0.5) = 0.46211715726 -> 0x3eec9a9f.
    assert_eq!(bits(f(Tanh, -0.0)), 0x8000_0000);
    assert_eq!(bits(f(Tanh, 0.5)), 0x3eec_9a9f);
    assert_eq!(f(Tanh, f32::INFINITY), 1.0);
    assert_eq!(f(Tanh, f32::NEG_INFINITY), -1.0);
    // sigmoid(2) = 0.88079707797788 -> 0x3f617beb; sigmoid(-100) = 3.72e-44, subnormal 0x1b.
    assert_eq!(f(Sigmoid, 0.0), 0.5);
    assert_eq!(bits(f(Sigmoid, 2.0)), 0x3f61_7beb);
    assert_eq!(bits(f(Sigmoid, -100.0)), 0x1b);
    assert_eq!(f(Sigmoid, f32::INFINITY), 1.0);
    assert_eq!(f(Sigmoid, f32::NEG_INFINITY), 0.0);
    // relu is maximum(x, +0): relu(-0) = +0 and NaN propagates.
    assert_eq!(f(Relu, 2.0), 2.0);
    assert_eq!(bits(f(Relu, -3.0)), 0);
    assert_eq!(bits(f(Relu, -0.0)), 0);
    assert_eq!(bits(f(Relu, f32::NEG_INFINITY)), 0);
    assert!(canon(f(Relu, f32::NAN)));
    // silu(1) = 1 / (1 + e^-1) = 0.73105857863 -> 0x3f3b26a8.
    assert_eq!(bits(f(Silu, 0.0)), 0);
    assert_eq!(bits(f(Silu, 1.0)), 0x3f3b_26a8);
    assert_eq!(f(Silu, f32::INFINITY), f32::INFINITY);
    // At -inf the limit, -0.0 (the textbook formula gives -inf * 0 = NaN).
    assert_eq!(bits(f(Silu, f32::NEG_INFINITY)), 0x8000_0000);
    // gelu(1) = Phi(1) = 0.84134474606854 -> 0x3f57625f; gelu(-2) = -2 * Phi(-2) = -0.0455002639 -> 0xbd3a5e7c.
    assert_eq!(bits(f(Gelu, 0.0)), 0);
    assert_eq!(bits(f(Gelu, 1.0)), 0x3f57_625f);
    assert_eq!(bits(f(Gelu, -2.0)), 0xbd3a_5e7c);
    assert_eq!(f(Gelu, f32::INFINITY), f32::INFINITY);
    // At -inf the limit, -0.0 (the textbook formula gives -inf * 0 = NaN).
    assert_eq!(bits(f(Gelu, f32::NEG_INFINITY)), 0x8000_0000);
    // gelu_tanh(1) = 0.5 * (1 + tanh(0.7978845608 * 1.044715)) = 0.84119199061 -> 0x3f57585c;
    // gelu_tanh(-3) = -0.00363739208 -> 0xbb6e6150.
    assert_eq!(bits(f(GeluTanh, 1.0)), 0x3f57_585c);
    assert_eq!(bits(f(GeluTanh, -3.0)), 0xbb6e_6150);
    // At -inf the limit, -0.0 (the textbook formula gives -inf * 0 = NaN).
    assert_eq!(bits(f(GeluTanh, f32::NEG_INFINITY)), 0x8000_0000);
    assert_eq!(SQRT_2_OVER_PI, libm::sqrt(2.0 / std::f64::consts::PI));
    // Every function maps NaN to the canonical NaN.
    for func in [
        Identity, Exp, Log, Sqrt, Rsqrt, Reciprocal, Abs, Square, Tanh, Sigmoid, Relu, Silu, Gelu,
        GeluTanh,
    ] {
        assert!(canon(f(func, f32::from_bits(0xffc0_0001))), "{func:?}");
        assert!(canon(f(func, f32::from_bits(0x7f80_0001))), "{func:?}");
    }
}

/// `i32` encodes as the language's `as` does (toward zero, saturating, NaN to 0) and
/// `bool` as `x != 0` (NaN is true); both decode exactly within f32's integers.
#[test]
fn integer_and_boolean_conversions() {
    let cases: [(f32, u32, u32); 9] = [
        (2.9, 2, 1),
        (-2.9, (-2i32) as u32, 1),
        (0.0, 0, 0),
        (-0.0, 0, 0),
        (f32::NAN, 0, 1),
        (3e9, i32::MAX as u32, 1),
        (-3e9, i32::MIN as u32, 1),
        (f32::INFINITY, i32::MAX as u32, 1),
        (1e-30, 0, 1),
    ];
    for (x, i, b) in cases {
        assert_eq!(enc(Dtype::I32, x), i, "i32 of {x}");
        assert_eq!(encode_f64(Dtype::I32, f64::from(x)), i, "i32 of {x} (f64)");
        assert_eq!(enc(Dtype::Bool, x), b, "bool of {x}");
    }
    assert_eq!(decode(Dtype::I32, (-5i32) as u32), -5.0);
    assert_eq!(decode(Dtype::Bool, 1), 1.0);
    assert_eq!(decode(Dtype::Bool, 0), 0.0);
    assert_eq!(Dtype::I32.size(), 4);
    assert_eq!(Dtype::Bool.size(), 1);
    let mut bytes = [0u8; 8];
    assert_eq!(store(Dtype::I32, &[-7.0, 1e10], &mut bytes), 2);
    assert_eq!(bytes[..4], (-7i32).to_le_bytes());
    assert_eq!(bytes[4..], i32::MAX.to_le_bytes());
    let mut back = [0f32; 2];
    assert_eq!(load(Dtype::I32, &bytes, &mut back), 2);
    assert_eq!(back[0], -7.0);
}
