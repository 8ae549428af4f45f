//! The machine's number formats and the single definition of its arithmetic.
//!
//! Tessera's interpreter and the compiler's reference evaluator must agree bit for bit, on
//! every run and every host, so both call the functions of this module and nothing else for
//! conversions ([`encode`], [`decode`], [`round`], the bulk [`load`] and [`store`]), for the
//! binary operations of the Vector, Scalar and GpSimd engines ([`alu`]) and for the unary
//! functions of the Scalar engine and the language ([`act`]). This documentation is the
//! numerics that `isa/ISA.md`, `docs/machine.md` and `docs/language.md` refer to.
//!
//! # Formats
//!
//! | dtype | layout (sign.exponent.mantissa) | bias | largest finite | infinities | canonical NaN |
//! |---|---|---|---|---|---|
//! | `f32` | 1.8.23 | 127 | 3.4028235e38 | yes | `0x7fc00000` |
//! | `bf16` | 1.8.7 | 127 | 3.3895314e38 | yes | `0x7fc0` |
//! | `f16` | 1.5.10 | 15 | 65504 | yes | `0x7e00` |
//! | `f8e4m3` | 1.4.3 ("fn") | 7 | 448 | none; `S.1111.111` is NaN | `0x7f` |
//! | `f8e5m2` | 1.5.2 | 15 | 57344 | yes | `0x7e` |
//!
//! Every format has subnormals, and every value of every format is exact in f32.
//!
//! Language version 2 adds `i32` (two's complement, 4 bytes) and `bool` (one byte, 0 or 1).
//! Through these f32 functions, `bool` decodes to 0.0 or 1.0 (exact) and encodes as
//! `x != 0` (NaN gives 1); `i32` encodes as the language's `as` does (toward zero,
//! saturating, NaN gives 0) but decodes to the nearest f32, which is exact only up to 2^24 in
//! magnitude. Integer values must therefore never be computed through these functions: the
//! compiler keeps them off the f32 datapath, and the reference evaluator holds them as
//! `i32`.
//!
//! # Conversions
//!
//! - [`decode`] is exact. A NaN code decodes to an f32 NaN with the same sign whose top
//!   mantissa bits are the code's mantissa (the payload is widened, as hardware does).
//! - [`encode`] rounds to nearest, ties to even, once, including into and out of the
//!   subnormal range and with the carry into the next binade. Values beyond the finite range:
//!   `bf16` and `f16` give the infinity of that sign (IEEE); both FP8 formats give the largest
//!   finite value of that sign, for every non-NaN value, infinities included (saturation).
//! - NaN encodes to the format's canonical NaN in the table above, whatever the sign and
//!   payload of the input, for `f32` too. Rust does not specify the sign or payload of a NaN
//!   that arithmetic produces (x86 and Arm differ), so every NaN that reaches memory is made
//!   canonical; this is what keeps outputs bit-identical on every host.
//! - [`encode_f64`] rounds an f64 to a format directly (once), for inputs read from float64
//!   `.npy` files; `encode_f64(d, x as f64) == encode(d, x)` for every f32 `x`.
//!
//! # Binary operations ([`alu`])
//!
//! Operands and result are f32; `add`, `sub` (`a - b`), `rsub` (`b - a`), `mul`, `div`
//! (`a / b`) and `rdiv` (`b / a`) are the IEEE binary32 operations, correctly rounded to
//! nearest even, with subnormals (no flush to zero). `bypass` returns `a`. `max` and `min` are
//! IEEE 754-2019 `maximum` and `minimum`: NaN if either operand is NaN, and `-0.0 < +0.0`, so
//! `max(-0.0, +0.0) = +0.0` and `min(-0.0, +0.0) = -0.0`. Every NaN result is the canonical
//! f32 NaN `0x7fc00000`. The comparisons `is_lt`, `is_le`, `is_gt`, `is_ge`, `is_eq`,
//! `is_ne` give `1.0` or `0.0` (IEEE: false with a NaN operand, but `is_ne` true; `-0 ==
//! +0`), and `and`, `or` give `1.0` or `0.0` from `a != 0` and `b != 0` (a NaN is true):
//! exact on the `bool` values 0 and 1.
//!
//! # Unary functions ([`act`])
//!
//! The input `x` is widened to f64 (exactly), the formula below is evaluated in f64 from left
//! to right as written, using the `libm` crate for `exp`, `log`, `sqrt`, `tanh` and `erf`
//! (a pure-Rust implementation, so the result does not depend on the host's C library), and
//! the f64 result is rounded once to f32, to nearest even. A NaN result is the canonical NaN.
//!
//! | function | formula (in f64) | notable values |
//! |---|---|---|
//! | `identity` | `x` | |
//! | `exp` | `exp(x)` | `exp(-inf) = 0`, overflow gives `+inf` |
//! | `log` | `log(x)` | `log(0) = -inf`, `log(x < 0) = NaN` |
//! | `sqrt` | `sqrt(x)` | `sqrt(-0) = -0`, `sqrt(x < 0) = NaN` |
//! | `rsqrt` | `1 / sqrt(x)` | `rsqrt(+0) = +inf`, `rsqrt(-0) = -inf` |
//! | `reciprocal` | `1 / x` | `1 / ±0 = ±inf` |
//! | `abs` | `|x|` | clears the sign bit |
//! | `square` | `x * x` | exact in f64, so equal to the f32 product |
//! | `tanh` | `tanh(x)` | |
//! | `sigmoid` | `1 / (1 + exp(-x))` | `sigmoid(-inf) = 0`, `sigmoid(inf) = 1` |
//! | `relu` | `maximum(x, +0)` | `relu(-0) = +0`, `relu(NaN) = NaN` |
//! | `silu` | `x / (1 + exp(-x))` | `silu(-inf) = -0` (the limit) |
//! | `gelu` | `0.5 * x * erfc(-x / SQRT_2)` | `gelu(-inf) = -0`; `gelu(-10)` is `-7.6e-23` |
//! | `gelu_tanh` | `x / (1 + exp(-2 * S * (x + 0.044715 * (x * x * x))))` | `gelu_tanh(-inf) = -0` |
//! | `sin`, `cos` | `sin(x)`, `cos(x)` (libm reduces the argument exactly, for every f32) | `sin(-0) = -0`, `sin(±inf) = NaN` |
//! | `erf` | `erf(x)` | `erf(±inf) = ±1` |
//! | `floor`, `ceil` | in f32, exact | `floor(-0) = -0`, `ceil(-0.5) = -0` |
//! | `round` | nearest integer in f32, ties to even (`rint`), exact | `round(2.5) = 2`, `round(-0.5) = -0` |
//! | `sign` | `-1`, `+0` or `1` in f32 (NumPy's) | `sign(-0) = +0`, `sign(NaN) = NaN` |
//! | `softplus` | `x + log1p(exp(-x))` for `x > 0`, else `log1p(exp(x))` | `softplus(inf) = inf`, `softplus(-inf) = 0` |
//!
//! The ALU op `pow` (and `rpow`, its operands swapped) is C's `powf`, computed as
//! `libm::pow` on the operands widened to f64 and rounded once to f32 ([`pow`]). Its
//! special cases are C99 Annex F's: `pow(x, ±0) = 1` and `pow(1, y) = 1` for every `x`,
//! `y` (NaN included); `pow(-1, ±inf) = 1`; a finite negative base with a finite
//! non-integer exponent is NaN; `pow(±0, y)` is `±inf` for a negative odd integer `y`,
//! `+inf` for other negative `y`, `±0` for a positive odd integer and `+0` for other
//! positive `y`; the infinities of either operand follow the limits.
//!
//! `SQRT_2` is `std::f64::consts::SQRT_2` and `S` is the f64 nearest to `sqrt(2 / pi)`,
//! [`SQRT_2_OVER_PI`]. The three are the language's formulas rewritten so that nothing
//! cancels: `1 + erf(z)` and `1 + tanh(z)` lose every digit for negative `z` (the textbook
//! forms were 6e8 ulp off below `x = -6.2`), while `erfc(-z) = 1 + erf(z)` and
//! `x * (1 + tanh(z)) / 2 = x / (1 + exp(-2z))` hold exactly in real arithmetic and keep
//! their relative accuracy in f64 into the tails. At `-inf` they give the limit `-0.0`
//! (the formulas would give `-inf / inf`). `relu` uses the same `maximum` as `alu`, so
//! `relu(-0.0)` is `+0.0`.

use std::sync::OnceLock;

use isa::{ActFunc, AluOp, Dtype};

/// The canonical f32 NaN: positive, quiet, no payload.
pub const F32_NAN_BITS: u32 = 0x7fc0_0000;

/// The f64 nearest to `sqrt(2 / pi)`, the constant of `gelu_tanh`.
pub const SQRT_2_OVER_PI: f64 = 0.797_884_560_802_865_4;

/// Decodes one value of `dtype` from its encoding, exactly. Only the low `8 * size` bits
/// of `bits` are used.
pub fn decode(dtype: Dtype, bits: u32) -> f32 {
    match dtype {
        Dtype::F32 => f32::from_bits(bits),
        Dtype::Bf16 => f32::from_bits((bits & 0xffff) << 16),
        Dtype::F16 => decode_small(F16, bits),
        Dtype::F8E4M3 => decode_small(E4M3, bits),
        Dtype::F8E5M2 => decode_small(E5M2, bits),
        Dtype::I32 => bits as i32 as f32,
        Dtype::Bool => f32::from(u8::from(bits & 0xff != 0)),
    }
}

/// Encodes `x` in `dtype`: round to nearest even; `bf16`/`f16` overflow to infinity, FP8
/// saturates; NaN gives the canonical NaN (see the module documentation).
#[inline]
pub fn encode(dtype: Dtype, x: f32) -> u32 {
    match dtype {
        Dtype::F32 => encode_f32(x),
        Dtype::Bf16 => encode_bf16(x),
        Dtype::F16 => encode_small(F16, f64::from(x)),
        Dtype::F8E4M3 => encode_small(E4M3, f64::from(x)),
        Dtype::F8E5M2 => encode_small(E5M2, f64::from(x)),
        // `as` rounds toward zero, saturates and gives 0 for NaN: the language's rule.
        Dtype::I32 => x as i32 as u32,
        // `x != 0`; NaN is not equal to 0, so it gives 1.
        Dtype::Bool => u32::from(x != 0.0),
    }
}

/// Encodes an f64 in `dtype`, rounding once (no double rounding through f32), with the
/// overflow and NaN rules of [`encode`].
pub fn encode_f64(dtype: Dtype, x: f64) -> u32 {
    match dtype {
        // `as` rounds to nearest even and overflows to infinity.
        Dtype::F32 => encode_f32(x as f32),
        Dtype::Bf16 => encode_small(BF16, x),
        Dtype::F16 => encode_small(F16, x),
        Dtype::F8E4M3 => encode_small(E4M3, x),
        Dtype::F8E5M2 => encode_small(E5M2, x),
        Dtype::I32 => x as i32 as u32,
        Dtype::Bool => u32::from(x != 0.0),
    }
}

/// The value of `x` after a round trip through `dtype`: `decode(dtype, encode(dtype, x))`.
#[inline]
pub fn round(dtype: Dtype, x: f32) -> f32 {
    decode(dtype, encode(dtype, x))
}

/// The value of the f64 `x` rounded once to `dtype`, as an f32 (exact).
pub fn round_f64(dtype: Dtype, x: f64) -> f32 {
    decode(dtype, encode_f64(dtype, x))
}

/// The canonical NaN encoding of `dtype`.
pub fn canonical_nan(dtype: Dtype) -> u32 {
    match dtype {
        Dtype::F32 => F32_NAN_BITS,
        Dtype::Bf16 => BF16.nan,
        Dtype::F16 => F16.nan,
        Dtype::F8E4M3 => E4M3.nan,
        Dtype::F8E5M2 => E5M2.nan,
        // The integer formats have no NaN: this is what a NaN converts to.
        Dtype::I32 => 0,
        Dtype::Bool => 1,
    }
}

/// The largest finite value of `dtype`.
pub fn max_finite(dtype: Dtype) -> f32 {
    match dtype {
        Dtype::F32 => f32::MAX,
        Dtype::Bf16 => decode(dtype, BF16.max_code),
        Dtype::F16 => decode(dtype, F16.max_code),
        Dtype::F8E4M3 => decode(dtype, E4M3.max_code),
        Dtype::F8E5M2 => decode(dtype, E5M2.max_code),
        Dtype::I32 => i32::MAX as f32,
        Dtype::Bool => 1.0,
    }
}

/// Decodes little-endian values of `dtype` from `bytes` into `out`, with lookup tables for
/// the 8- and 16-bit formats. Converts `min(out.len(), bytes.len() / dtype.size())`
/// elements and returns that count; the caller is expected to pass matching lengths.
pub fn load(dtype: Dtype, bytes: &[u8], out: &mut [f32]) -> usize {
    match dtype {
        Dtype::F32 => {
            let mut n = 0;
            for (o, c) in out.iter_mut().zip(bytes.chunks_exact(4)) {
                *o = f32::from_le_bytes([c[0], c[1], c[2], c[3]]);
                n += 1;
            }
            n
        }
        Dtype::Bf16 => {
            let mut n = 0;
            for (o, c) in out.iter_mut().zip(bytes.chunks_exact(2)) {
                // bf16 is the top half of an f32: a shift is cheaper than a table.
                *o = f32::from_bits(u32::from(u16::from_le_bytes([c[0], c[1]])) << 16);
                n += 1;
            }
            n
        }
        Dtype::F16 => {
            let table = f16_table();
            let mut n = 0;
            for (o, c) in out.iter_mut().zip(bytes.chunks_exact(2)) {
                *o = table[usize::from(u16::from_le_bytes([c[0], c[1]]))];
                n += 1;
            }
            n
        }
        Dtype::F8E4M3 | Dtype::F8E5M2 => {
            let table = fp8_table(dtype);
            let mut n = 0;
            for (o, &b) in out.iter_mut().zip(bytes) {
                *o = table[usize::from(b)];
                n += 1;
            }
            n
        }
        Dtype::I32 | Dtype::Bool => {
            let size = dtype.size() as usize;
            let mut n = 0;
            for (o, c) in out.iter_mut().zip(bytes.chunks_exact(size)) {
                let mut word = [0u8; 4];
                word[..size].copy_from_slice(c);
                *o = decode(dtype, u32::from_le_bytes(word));
                n += 1;
            }
            n
        }
    }
}

/// Encodes `values` into `out` as little-endian values of `dtype`, with the rounding of
/// [`encode`]. Converts `min(values.len(), out.len() / dtype.size())` elements and returns
/// that count; the caller is expected to pass matching lengths.
pub fn store(dtype: Dtype, values: &[f32], out: &mut [u8]) -> usize {
    match dtype {
        Dtype::F32 => store_with::<4>(values, out, |x| encode_f32(x).to_le_bytes()),
        Dtype::Bf16 => store_with::<2>(values, out, |x| (encode_bf16(x) as u16).to_le_bytes()),
        Dtype::F16 => store_with::<2>(values, out, |x| {
            (encode_small(F16, f64::from(x)) as u16).to_le_bytes()
        }),
        Dtype::F8E4M3 => store_with::<1>(values, out, |x| [encode_small(E4M3, f64::from(x)) as u8]),
        Dtype::F8E5M2 => store_with::<1>(values, out, |x| [encode_small(E5M2, f64::from(x)) as u8]),
        Dtype::I32 => store_with::<4>(values, out, |x| encode(Dtype::I32, x).to_le_bytes()),
        Dtype::Bool => store_with::<1>(values, out, |x| [encode(Dtype::Bool, x) as u8]),
    }
}

/// One binary operation of the Vector, Scalar and GpSimd engines, in f32 (see the module
/// documentation). A NaN result is the canonical NaN.
#[inline]
pub fn alu(op: AluOp, a: f32, b: f32) -> f32 {
    let r = match op {
        AluOp::Bypass => a,
        AluOp::Add => a + b,
        AluOp::Sub => a - b,
        AluOp::RSub => b - a,
        AluOp::Mul => a * b,
        AluOp::Div => a / b,
        AluOp::RDiv => b / a,
        AluOp::Max => maximum(a, b),
        AluOp::Min => minimum(a, b),
        AluOp::IsLt => f32::from(u8::from(a < b)),
        AluOp::IsLe => f32::from(u8::from(a <= b)),
        AluOp::IsGt => f32::from(u8::from(a > b)),
        AluOp::IsGe => f32::from(u8::from(a >= b)),
        AluOp::IsEq => f32::from(u8::from(a == b)),
        AluOp::IsNe => f32::from(u8::from(a != b)),
        AluOp::And => f32::from(u8::from(a != 0.0 && b != 0.0)),
        AluOp::Or => f32::from(u8::from(a != 0.0 || b != 0.0)),
        AluOp::Pow => pow(a, b),
        AluOp::RPow => pow(b, a),
        // Integer-only operations: the verifier refuses them on the f32 datapath.
        AluOp::BitAnd | AluOp::BitOr | AluOp::BitXor => f32::NAN,
    };
    canonical(r)
}

/// Decodes one value of `dtype` as a 32-bit integer, for the integer datapath: `i32` as
/// is, `bool` as 0 or 1, a float converted as the language's `as i32` does (toward zero,
/// saturating at the `i32` range, NaN gives 0).
#[inline]
pub fn decode_i32(dtype: Dtype, bits: u32) -> i32 {
    match dtype {
        Dtype::I32 => bits as i32,
        Dtype::Bool => i32::from(bits & 0xff != 0),
        // `as` rounds toward zero, saturates and gives 0 for NaN.
        _ => decode(dtype, bits) as i32,
    }
}

/// Encodes the integer `x` in `dtype`, for the integer datapath: `i32` exactly, `bool` as
/// `x != 0`, a float rounded once to nearest even from the exact integer (never through
/// f32 first, so `i32` to `bf16` rounds once).
#[inline]
pub fn encode_i32(dtype: Dtype, x: i32) -> u32 {
    match dtype {
        Dtype::I32 => x as u32,
        Dtype::Bool => u32::from(x != 0),
        _ => encode_f64(dtype, f64::from(x)),
    }
}

/// The integer datapath's binary operations: `add`, `sub`, `rsub`, `mul` wrap around in
/// 32-bit two's complement; `max` and `min` are exact; the comparisons give 1 or 0; `and`
/// and `or` are logical (1 or 0 from `a != 0` and `b != 0`); `bit_and`, `bit_or` and
/// `bit_xor` are bitwise. `None` for the operations the integer datapath does not have
/// (`div`, `rdiv`, `pow`, `rpow`).
#[inline]
pub fn alu_i32(op: AluOp, a: i32, b: i32) -> Option<i32> {
    Some(match op {
        AluOp::Bypass => a,
        AluOp::Add => a.wrapping_add(b),
        AluOp::Sub => a.wrapping_sub(b),
        AluOp::RSub => b.wrapping_sub(a),
        AluOp::Mul => a.wrapping_mul(b),
        AluOp::Max => a.max(b),
        AluOp::Min => a.min(b),
        AluOp::IsLt => i32::from(a < b),
        AluOp::IsLe => i32::from(a <= b),
        AluOp::IsGt => i32::from(a > b),
        AluOp::IsGe => i32::from(a >= b),
        AluOp::IsEq => i32::from(a == b),
        AluOp::IsNe => i32::from(a != b),
        AluOp::And => i32::from(a != 0 && b != 0),
        AluOp::Or => i32::from(a != 0 || b != 0),
        AluOp::BitAnd => a & b,
        AluOp::BitOr => a | b,
        AluOp::BitXor => a ^ b,
        AluOp::Div | AluOp::RDiv | AluOp::Pow | AluOp::RPow => return None,
    })
}

/// One unary function of the Scalar engine and the language, computed in f64 with `libm`
/// and rounded once to f32 (formulas in the module documentation). A NaN result is the
/// canonical NaN.
pub fn act(func: ActFunc, x: f32) -> f32 {
    let d = f64::from(x);
    let r = match func {
        ActFunc::Identity => x,
        ActFunc::Abs => x.abs(),
        ActFunc::Relu => maximum(x, 0.0),
        ActFunc::Exp => libm::exp(d) as f32,
        ActFunc::Log => libm::log(d) as f32,
        ActFunc::Sqrt => libm::sqrt(d) as f32,
        ActFunc::Rsqrt => (1.0 / libm::sqrt(d)) as f32,
        ActFunc::Reciprocal => (1.0 / d) as f32,
        ActFunc::Square => (d * d) as f32,
        ActFunc::Tanh => libm::tanh(d) as f32,
        ActFunc::Sigmoid => sigmoid(d) as f32,
        ActFunc::Silu | ActFunc::Gelu | ActFunc::GeluTanh if d == f64::NEG_INFINITY => -0.0,
        ActFunc::Silu => (d / (1.0 + libm::exp(-d))) as f32,
        ActFunc::Gelu => (0.5 * d * libm::erfc(-d / std::f64::consts::SQRT_2)) as f32,
        ActFunc::GeluTanh => {
            let z = SQRT_2_OVER_PI * (d + 0.044715 * (d * d * d));
            (d / (1.0 + libm::exp(-2.0 * z))) as f32
        }
        ActFunc::Sin => libm::sin(d) as f32,
        ActFunc::Cos => libm::cos(d) as f32,
        ActFunc::Erf => libm::erf(d) as f32,
        ActFunc::Floor => libm::floorf(x),
        ActFunc::Ceil => libm::ceilf(x),
        ActFunc::Round => libm::rintf(x),
        ActFunc::Sign => sign(x),
        ActFunc::Softplus => softplus(d) as f32,
    };
    canonical(r)
}

/// IEEE 754-2019 `maximum`: NaN if either operand is NaN, and `+0.0` is above `-0.0`.
#[inline]
pub fn maximum(a: f32, b: f32) -> f32 {
    if a.is_nan() || b.is_nan() {
        f32::from_bits(F32_NAN_BITS)
    } else if a == b {
        // Equal values have equal bits except for zeros of opposite signs, where the
        // positive one (sign bit clear) wins.
        f32::from_bits(a.to_bits() & b.to_bits())
    } else if a > b {
        a
    } else {
        b
    }
}

/// IEEE 754-2019 `minimum`: NaN if either operand is NaN, and `-0.0` is below `+0.0`.
#[inline]
pub fn minimum(a: f32, b: f32) -> f32 {
    if a.is_nan() || b.is_nan() {
        f32::from_bits(F32_NAN_BITS)
    } else if a == b {
        // The negative zero (sign bit set) wins.
        f32::from_bits(a.to_bits() | b.to_bits())
    } else if a < b {
        a
    } else {
        b
    }
}

/// C's `powf(a, b)`: the f32 operands are widened to f64 exactly, `libm::pow` (musl's,
/// within 1 ulp of f64 and with every special case of C99 Annex F) computes the power, and
/// the result is rounded once to f32. An f32 power that overflows or underflows is far
/// inside f64's range, so the rounding to f32 gives the infinity, the subnormal or the zero
/// that `powf` gives; an integer f32 is an integer f64 of the same parity, so the special
/// cases that depend on "odd integer" agree too.
pub fn pow(a: f32, b: f32) -> f32 {
    canonical(libm::pow(f64::from(a), f64::from(b)) as f32)
}

/// NumPy's `sign`: `-1` or `1` by the sign, `+0` for both zeros, NaN for NaN.
fn sign(x: f32) -> f32 {
    if x > 0.0 {
        1.0
    } else if x < 0.0 {
        -1.0
    } else if x == 0.0 {
        0.0
    } else {
        f32::from_bits(F32_NAN_BITS)
    }
}

/// `log(1 + exp(x))` in f64 without overflow: `x + log1p(exp(-x))` for positive `x`
/// (where `exp(x)` would overflow), `log1p(exp(x))` otherwise; both forms are exact
/// rewrites and neither cancels.
fn softplus(x: f64) -> f64 {
    if x > 0.0 {
        x + libm::log1p(libm::exp(-x))
    } else {
        libm::log1p(libm::exp(x))
    }
}

/// `1 / (1 + exp(-x))` in f64.
fn sigmoid(x: f64) -> f64 {
    1.0 / (1.0 + libm::exp(-x))
}

/// Replaces any NaN by the canonical NaN.
#[inline(always)]
fn canonical(x: f32) -> f32 {
    if x.is_nan() {
        f32::from_bits(F32_NAN_BITS)
    } else {
        x
    }
}

#[inline(always)]
fn encode_f32(x: f32) -> u32 {
    if x.is_nan() {
        F32_NAN_BITS
    } else {
        x.to_bits()
    }
}

/// f32 to bf16 on the f32's bits: adding `0x7fff` plus the lowest kept bit rounds to
/// nearest even, and the carry runs into the exponent (up to infinity) by itself.
#[inline(always)]
fn encode_bf16(x: f32) -> u32 {
    let bits = x.to_bits();
    if bits & 0x7fff_ffff > 0x7f80_0000 {
        BF16.nan
    } else {
        (bits + 0x7fff + ((bits >> 16) & 1)) >> 16
    }
}

/// A small binary floating-point format: its field widths and special encodings.
#[derive(Clone, Copy)]
struct Format {
    exp_bits: u32,
    man_bits: u32,
    /// True when the all-ones exponent holds infinities and NaNs (IEEE style); false for
    /// E4M3 "fn", whose only special code is `S.1111.111` (NaN).
    ieee: bool,
    /// The magnitude code of the largest finite value.
    max_code: u32,
    /// The magnitude code given to finite values beyond `max_code` after rounding:
    /// infinity, or `max_code` itself for saturating formats.
    overflow_code: u32,
    /// The canonical NaN.
    nan: u32,
}

const BF16: Format = Format {
    exp_bits: 8,
    man_bits: 7,
    ieee: true,
    max_code: 0x7f7f,
    overflow_code: 0x7f80,
    nan: 0x7fc0,
};
const F16: Format = Format {
    exp_bits: 5,
    man_bits: 10,
    ieee: true,
    max_code: 0x7bff,
    overflow_code: 0x7c00,
    nan: 0x7e00,
};
const E4M3: Format = Format {
    exp_bits: 4,
    man_bits: 3,
    ieee: false,
    max_code: 0x7e,
    overflow_code: 0x7e,
    nan: 0x7f,
};
const E5M2: Format = Format {
    exp_bits: 5,
    man_bits: 2,
    ieee: true,
    max_code: 0x7b,
    overflow_code: 0x7b,
    nan: 0x7e,
};

const F64_SIGN: u64 = 1 << 63;
const F64_INF: u64 = 0x7ff0_0000_0000_0000;
const F64_FRAC: u64 = (1 << 52) - 1;

/// Rounds an f64 to a small format, to nearest even, working on the f64's bits.
#[inline(always)]
fn encode_small(f: Format, x: f64) -> u32 {
    let bits = x.to_bits();
    let abs = bits & !F64_SIGN;
    if abs > F64_INF {
        return f.nan;
    }
    let sign = ((bits >> 63) as u32) << (f.exp_bits + f.man_bits);
    let bias = (1u64 << (f.exp_bits - 1)) - 1;
    let exp = abs >> 52;
    let mag = if exp > 1023 - bias {
        // At or above the smallest normal of the target: re-bias the exponent in place and
        // round the mantissa away; a carry out of the mantissa increments the exponent,
        // which is exactly the next binade. Infinity lands far above `max_code`.
        let shift = 52 - u64::from(f.man_bits);
        let rebiased = abs - ((1023 - bias) << 52);
        let odd = (rebiased >> shift) & 1;
        (rebiased + (1 << (shift - 1)) - 1 + odd) >> shift
    } else {
        // Subnormal (or zero) in the target: the code is the value divided by the smallest
        // subnormal, 2^(1 - bias - man_bits), rounded to nearest even. Rounding up to
        // 2^man_bits gives the smallest normal's code, as it should.
        let (m, e) = if exp == 0 {
            (abs, 1)
        } else {
            ((abs & F64_FRAC) | (1 << 52), exp)
        };
        let s = 1023 + 52 + 1 - bias - u64::from(f.man_bits) - e;
        if s > 53 {
            // m < 2^53 <= half the quantum: rounds to zero.
            0
        } else {
            let q = m >> s;
            let r = m & ((1 << s) - 1);
            let half = 1 << (s - 1);
            q + u64::from(r > half || (r == half && q & 1 == 1))
        }
    };
    let code = if mag > u64::from(f.max_code) {
        f.overflow_code
    } else {
        mag as u32
    };
    sign | code
}

/// Decodes a small format exactly.
fn decode_small(f: Format, code: u32) -> f32 {
    let m = f.man_bits;
    let width = 1 + f.exp_bits + m;
    let code = code & ((1 << width) - 1);
    let sign = (code >> (width - 1)) << 31;
    let exp_max = (1 << f.exp_bits) - 1;
    let exp = (code >> m) & exp_max;
    let man = code & ((1 << m) - 1);
    let bias = (1 << (f.exp_bits - 1)) - 1;
    let special = if f.ieee {
        exp == exp_max
    } else {
        exp == exp_max && man == (1 << m) - 1
    };
    let mag = if exp == 0 {
        // man * 2^(1 - bias - m): exact, the power of two is a normal f32 for every format.
        let scale = f32::from_bits((127 + 1 - bias - m) << 23);
        (man as f32 * scale).to_bits()
    } else if special {
        // Infinity when the mantissa is zero, else NaN with the payload widened.
        0x7f80_0000 | (man << (23 - m))
    } else {
        ((exp + 127 - bias) << 23) | (man << (23 - m))
    };
    f32::from_bits(sign | mag)
}

/// The 65536-entry decoding table of f16, built once.
fn f16_table() -> &'static [f32; 65536] {
    static TABLE: OnceLock<Box<[f32; 65536]>> = OnceLock::new();
    TABLE.get_or_init(|| {
        let mut t = Box::new([0.0f32; 65536]);
        for (code, v) in (0u32..).zip(t.iter_mut()) {
            *v = decode_small(F16, code);
        }
        t
    })
}

/// The 256-entry decoding table of an FP8 format, built once.
fn fp8_table(dtype: Dtype) -> &'static [f32; 256] {
    static E4M3_TABLE: OnceLock<[f32; 256]> = OnceLock::new();
    static E5M2_TABLE: OnceLock<[f32; 256]> = OnceLock::new();
    let (cell, f) = if dtype == Dtype::F8E4M3 {
        (&E4M3_TABLE, E4M3)
    } else {
        (&E5M2_TABLE, E5M2)
    };
    cell.get_or_init(|| {
        let mut t = [0.0f32; 256];
        for (code, v) in (0u32..).zip(t.iter_mut()) {
            *v = decode_small(f, code);
        }
        t
    })
}

/// The bulk store loop, monomorphised per element size.
#[inline(always)]
fn store_with<const N: usize>(
    values: &[f32],
    out: &mut [u8],
    enc: impl Fn(f32) -> [u8; N],
) -> usize {
    let mut n = 0;
    for (chunk, &x) in out.chunks_exact_mut(N).zip(values) {
        chunk.copy_from_slice(&enc(x));
        n += 1;
    }
    n
}
