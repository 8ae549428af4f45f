//! Row groups that use the whole machine: casts that cost no engine pass
//! (`passes/tiling/casts.rs`) and blocks interleaved across engines
//! (`passes/pipeline.rs`). Both are exact, so every case here must match the reference
//! bit for bit under both dtype policies; and each mechanism must actually take effect
//! (no widening copy left, fewer cycles with the pipeline than without).

mod common;

use common::{both_policies as policies, compile_verified as compile, run_case, run_seed1};
use isa::{ActFunc, Dtype, Op};
use tessera::passes::PassOptions;

/// Llama's RMS norm as its authors write it: the statistics on `x as f32`.
fn rmsnorm(s: u64, d: u64) -> String {
    format!(
        "kernel k(x: bf16[{s}, {d}], weight: bf16[{d}]) -> bf16[{s}, {d}] {{\n\
         \x20   let xf = x as f32;\n\
         \x20   let normed = (xf * rsqrt(mean(square(xf), axis=-1, keepdims=true) + 1e-5)) as bf16;\n\
         \x20   return normed * weight;\n\
         }}\n"
    )
}

/// Triton's fused softmax on bf16 rows, computed in f32.
fn softmax(n: u64, d: u64) -> String {
    format!(
        "kernel k(x: bf16[{n}, {d}]) -> bf16[{n}, {d}] {{\n\
         \x20   let xf = x as f32;\n\
         \x20   let num = exp(xf - max(xf, axis=-1, keepdims=true));\n\
         \x20   return (num / sum(num, axis=-1, keepdims=true)) as bf16;\n\
         }}\n"
    )
}

/// Triton's layernorm backward: per-row statistics, the input gradient, and the weight
/// and bias gradients as column sums of values the row group computes (`tiling/colsum.rs`:
/// matmuls against a column of ones inside the group's blocks).
fn layernorm_bwd(m: u64, n: u64) -> String {
    format!(
        "kernel k(x: f16[{m}, {n}], dy: f16[{m}, {n}], w: f16[{n}], mu: f32[{m}, 1], rstd: f32[{m}, 1]) -> (f16[{m}, {n}], f32[{n}], f32[{n}]) {{\n\
         \x20   let xhat = (x as f32 - mu) * rstd;\n\
         \x20   let dyf = dy as f32;\n\
         \x20   let wdy = w * dyf;\n\
         \x20   let c1 = mean(xhat * wdy, axis=1, keepdims=true);\n\
         \x20   let c2 = mean(wdy, axis=1, keepdims=true);\n\
         \x20   let dx = (wdy - (xhat * c1 + c2)) * rstd;\n\
         \x20   return (dx as f16, sum(dyf * xhat, axis=0), sum(dyf, axis=0));\n\
         }}\n"
    )
}

/// The cycles of `text` compiled with `options`, on seed-1 inputs.
fn cycles(text: &str, options: PassOptions) -> u64 {
    let c = compile(text, options);
    let (report, cmp) = run_seed1(&c);
    assert!(cmp.iter().all(|x| x.bad == 0 && x.max_abs == 0.0));
    report.total_cycles
}

#[test]
fn widening_casts_cost_no_instruction() {
    for options in policies() {
        for text in [rmsnorm(256, 512), softmax(256, 1024)] {
            let c = compile(&text, options.clone());
            let tile = c.tile.as_ref().expect("tile IR");
            let widening = tile.insts.values().any(|inst| match &inst.op {
                Op::TensorCopy { out, src } => out.dtype == Dtype::F32 && src.dtype == Dtype::Bf16,
                Op::Activate {
                    out,
                    src,
                    func: ActFunc::Identity,
                    ..
                } => out.dtype == Dtype::F32 && src.dtype == Dtype::Bf16,
                _ => false,
            });
            assert!(!widening, "{text}: a bf16 -> f32 copy is left");
        }
    }
}

#[test]
fn pipelined_blocks_are_faster() {
    let no_pipeline = PassOptions {
        disabled: vec!["pipeline".to_string()],
        ..PassOptions::default()
    };
    let text = softmax(1024, 2048);
    let with = cycles(&text, PassOptions::default());
    let without = cycles(&text, no_pipeline);
    // Eight blocks whose max -> exp -> divide chain crosses engines: interleaved, Vector's
    // next maximum runs while Scalar computes this block's exponentials.
    assert!(with * 10 < without * 9, "{with} vs {without} cycles");
}

#[test]
fn blocks_with_column_sums_are_interleaved() {
    let no_pipeline = PassOptions {
        disabled: vec!["pipeline".to_string()],
        ..PassOptions::default()
    };
    // Four blocks of whole rows; the column sums' matmuls sit in every block's chain, and
    // the pass moves the other blocks' Vector and Scalar work around them.
    for options in policies() {
        let text = layernorm_bwd(512, 1024);
        let with = cycles(&text, options.clone());
        let off = PassOptions {
            strict_dtypes: options.strict_dtypes,
            ..no_pipeline.clone()
        };
        let without = cycles(&text, off);
        assert!(with * 10 < without * 8, "{with} vs {without} cycles");
    }
}

#[test]
fn scalar_chains_are_one_instruction() {
    // `x * a + b` (per-row a, b) and a clamp: each two `tensor_scalar`s from the tiler,
    // one instruction after `engines`, under both policies (the intermediate is f32).
    let text = "kernel k(x: f32[256, 192], a: f32[256, 1], b: f32[256, 1], y: bf16[256, 192]) -> (f32[256, 192], bf16[256, 192]) {\n\
                \x20   return (x * a + b, minimum(maximum(y as f32, -0.5), 0.5) as bf16);\n\
                }\n";
    for options in policies() {
        let c = compile(text, options.clone());
        let tile = c.tile.as_ref().expect("tile IR");
        let ops: Vec<&Op> = tile.layout.iter().map(|&i| &tile.insts[i].op).collect();
        let affine = ops
            .iter()
            .filter(|op| match op {
                Op::Activate { scale, bias, .. } => {
                    matches!(scale, isa::ScalarArg::Ap(_)) && matches!(bias, isa::ScalarArg::Ap(_))
                }
                Op::TensorScalar {
                    op0: isa::AluOp::Mul,
                    op1: isa::AluOp::Add,
                    ..
                } => true,
                _ => false,
            })
            .count();
        let clamps = ops
            .iter()
            .filter(|op| {
                matches!(
                    op,
                    Op::TensorScalar {
                        op0: isa::AluOp::Max,
                        op1: isa::AluOp::Min,
                        ..
                    }
                )
            })
            .count();
        let singles = ops
            .iter()
            .filter(|op| {
                matches!(
                    op,
                    Op::TensorScalar {
                        op1: isa::AluOp::Bypass,
                        ..
                    }
                )
            })
            .count();
        assert!(
            affine >= 1 && clamps >= 1,
            "{affine} affine, {clamps} clamps"
        );
        assert_eq!(singles, 0, "a single-operation tensor_scalar is left");
        assert!(run_case(text, &options, 3).is_match());
    }
}

#[test]
fn rewritten_casts_match_the_reference_bit_for_bit() {
    let cases = [
        rmsnorm(300, 96),
        softmax(200, 160),
        // A widening cast of a value that is also stored keeps its copy; the residual sum
        // is read through it.
        "kernel k(x: bf16[130, 64], a: bf16[130, 64], w: bf16[64]) -> (bf16[130, 64], bf16[130, 64]) {\n\
         \x20   let h = x + a;\n\
         \x20   let hf = h as f32;\n\
         \x20   let n = (hf * rsqrt(mean(square(hf), axis=-1, keepdims=true) + 1e-5)) as bf16;\n\
         \x20   return (h, n * w);\n\
         }\n"
        .to_string(),
        // Narrowing to FP8 and f16 from f32 results used once, and one used twice (it keeps
        // its f32 tile); an f32 cast read by a reduction and by elementwise work.
        "kernel k(x: f16[140, 72], g: bf16[72]) -> (f8e4m3[140, 72], f16[140, 72], f32[140, 1]) {\n\
         \x20   let xf = x as f32;\n\
         \x20   let y = xf * (g as f32);\n\
         \x20   let s = max(abs(y), axis=-1, keepdims=true) / 448.0;\n\
         \x20   let z = exp(xf) - 1.0;\n\
         \x20   return ((y / s) as f8e4m3, (z * z + z) as f16, s);\n\
         }\n"
        .to_string(),
        // A cast to f32 that is a kernel result, and a widened value written over by a
        // narrower one.
        "kernel k(x: f8e4m3[64, 48]) -> (f32[64, 48], bf16[64, 48]) {\n\
         \x20   let xf = x as f32;\n\
         \x20   return (xf, (xf * 3.0 + sum(xf, axis=-1, keepdims=true)) as bf16);\n\
         }\n"
        .to_string(),
    ];
    for text in &cases {
        for options in policies() {
            let outcome = run_case(text, &options, 7);
            assert!(outcome.is_match(), "{text}\n{}", outcome.describe());
        }
    }
}
