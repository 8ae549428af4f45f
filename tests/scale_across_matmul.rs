//! `canonicalize`'s scale across a matmul (docs/numerics.md, item 6) on forms other than
//! the FP8 benchmark's: a scale on the left operand's rows, on the right operand's
//! columns (bf16, f16 and FP8 weights, transposed or not, with a batch axis), with M = 1,
//! 8 and 130 and odd N. Each kernel must be rewritten (or left alone) as stated, pass the
//! reference's bounds under the default policy with every element bounded, and be
//! bit-exact under `--dtype-policy strict`, where nothing moves.

mod common;

use common::{both_policies, compile_verified, run_seed1};
use tessera::ir::{BinaryOp, Function, TOp, ValueDef};

/// Whether some matmul's result is read by a multiplication: the scale was moved.
fn scale_on_output(f: &Function) -> bool {
    f.layout.iter().any(|&i| {
        let data = &f.insts[i];
        data.op == TOp::Binary(BinaryOp::Mul)
            && data.args.iter().any(|&a| match f.values[a].def {
                ValueDef::Inst(d) => f.insts[d].op == TOp::Matmul,
                ValueDef::Param(_) => false,
            })
    })
}

/// Whether some matmul operand is an FP8 tensor (the exact cast before it was dropped).
fn fp8_operand(f: &Function) -> bool {
    f.layout.iter().any(|&i| {
        let data = &f.insts[i];
        data.op == TOp::Matmul && data.args.iter().any(|&a| f.ty(a).dtype.is_fp8())
    })
}

/// Compiles `text` under both policies and checks the outputs; `moved` says whether the
/// default policy must move the scale to the output.
fn check(name: &str, text: &str, moved: bool) {
    for passes in both_policies() {
        let strict = passes.strict_dtypes;
        let c = compile_verified(text, passes);
        let want = moved && !strict;
        assert_eq!(
            scale_on_output(&c.tensor),
            want,
            "{name} (strict: {strict}): scale on the output should be {want}\n{}",
            c.tensor
        );
        if want {
            assert!(
                c.original.is_some(),
                "{name}: a rewrite that changes rounding must keep the program as written"
            );
        }
        let (_, comparisons) = run_seed1(&c);
        for (i, cmp) in comparisons.iter().enumerate() {
            assert_eq!(
                cmp.bad, 0,
                "{name} (strict: {strict}) out{i}: {} outside the bound, first {:?}",
                cmp.bad, cmp.first_bad
            );
            assert_eq!(cmp.unbounded, 0, "{name} out{i}: unbounded elements");
            if strict {
                assert_eq!(cmp.max_abs, 0.0, "{name} out{i}: strict must be bit-exact");
            }
        }
    }
}

#[test]
fn right_operand_column_scales_move_for_every_m_and_odd_n() {
    for m in [1, 8, 130] {
        for n in [77, 129] {
            // The FP8 benchmark's form: nn.Linear's [N, K] weight, one scale per row of it.
            let text = format!(
                "kernel k(x: bf16[{m}, 256], w: f8e4m3[{n}, 256], s: f32[{n}, 1]) -> bf16[{m}, {n}] {{\n\
                 \x20   let wd = (w as f32 * s) as bf16;\n\
                 \x20   return (x @ transpose(wd)) as bf16;\n\
                 }}\n"
            );
            check(&format!("fp8 m={m} n={n}"), &text, true);
            let c = compile_verified(&text, Default::default());
            assert!(
                fp8_operand(&c.tensor),
                "fp8 m={m} n={n}: the matmul should read the FP8 weight\n{}",
                c.tensor
            );
            // A bf16 weight in [K, N] with a bf16 row vector of scales (no cast: the
            // product's rounding is implicit).
            let text = format!(
                "kernel k(x: bf16[{m}, 256], w: bf16[256, {n}], s: bf16[{n}]) -> f32[{m}, {n}] {{\n\
                 \x20   return x @ (w * s);\n\
                 }}\n"
            );
            check(&format!("bf16 m={m} n={n}"), &text, true);
        }
    }
}

#[test]
fn other_scaled_forms_move() {
    // A scale on the left operand's rows.
    check(
        "rows",
        "kernel k(x: bf16[130, 256], s: f32[130, 1], w: bf16[256, 77]) -> bf16[130, 77] {\n\
         \x20   return (((x as f32 * s) as bf16) @ w) as bf16;\n\
         }\n",
        true,
    );
    // An f16 weight widened to f32 (every rounding skipped is f32's).
    check(
        "f16 widened",
        "kernel k(x: f32[8, 256], s: f32[1, 77], w: f16[256, 77]) -> f32[8, 77] {\n\
         \x20   return x @ (w as f32 * s);\n\
         }\n",
        true,
    );
    // A constant scale, and a scale of the queries before the scores' matmul.
    check(
        "constant",
        "kernel k(x: bf16[8, 256], w: bf16[256, 77]) -> bf16[8, 77] {\n\
         \x20   return (x @ (w * 0.3)) as bf16;\n\
         }\n",
        true,
    );
    check(
        "queries",
        "kernel k(q: bf16[130, 64], k: bf16[130, 64]) -> f32[130, 130] {\n\
         \x20   return (q * 0.125) @ transpose(k);\n\
         }\n",
        true,
    );
    // Keys scaled by a constant inside a causal attention (the differential test's seed
    // 20240601): the constant is used as it is, not reshaped (a reshaped constant has
    // no home in HBM, an internal error of the `tile` pass before).
    check(
        "scaled keys",
        "kernel k(q: bf16[51, 64], k: bf16[194, 64], v32: f32[194, 64]) -> f16[51, 64] {\n\
         \x20   let s = tril((q @ transpose(((k * 2.0) as bf16))), k=0, fill=-inf);\n\
         \x20   let e = exp(s - max(s, axis=-1, keepdims=true));\n\
         \x20   let l = sum(e, axis=-1, keepdims=true);\n\
         \x20   return ((((e as f16) @ (silu(v32) as bf16)) / l) as f16);\n\
         }\n",
        true,
    );
    // A weight [N, B, K] read as [B, K, N]: the scale [N, B, 1] is transposed to
    // [B, 1, N] (its non-unit axes change order).
    check(
        "three axes",
        "kernel k(x: bf16[2, 8, 64], w: bf16[33, 2, 64], s: f32[33, 2, 1]) -> f32[2, 8, 33] {\n\
         \x20   return x @ transpose((w as f32 * s) as bf16, perm=[1, 2, 0]);\n\
         }\n",
        true,
    );
    // The widened weight has another reader: the matmul still reads the FP8 weight.
    let text = "kernel k(x: bf16[8, 256], w: f8e4m3[77, 256], s: f32[77, 1]) -> (bf16[8, 77], f32[77, 256]) {\n\
                \x20   let wf = w as f32;\n\
                \x20   return ((x @ transpose((wf * s) as bf16)) as bf16, wf + 1.0);\n\
                }\n";
    check("widened twice", text, true);
    let c = compile_verified(text, Default::default());
    assert!(fp8_operand(&c.tensor), "widened twice: {}", c.tensor);
    // A batch axis, an FP8 E5M2 weight scaled per batch and output column.
    check(
        "batched",
        "kernel k(x: bf16[3, 8, 256], s: f32[3, 33, 1], w: f8e5m2[3, 33, 256]) -> bf16[3, 8, 33] {\n\
         \x20   return (x @ transpose((w as f32 * s) as bf16, perm=[0, 2, 1])) as bf16;\n\
         }\n",
        true,
    );
}

#[test]
fn scales_the_bound_does_not_cover_stay_where_they_are() {
    // A scale along K is not a scale of the output.
    check(
        "along K",
        "kernel k(x: bf16[8, 256], s: f32[256, 1], w: bf16[256, 77]) -> bf16[8, 77] {\n\
         \x20   return (x @ ((w as f32 * s) as bf16)) as bf16;\n\
         }\n",
        false,
    );
    // An f16 product could overflow where the moved scale would not.
    check(
        "f16 product",
        "kernel k(x: f16[8, 256], s: f16[77], w: f16[256, 77]) -> f16[8, 77] {\n\
         \x20   return (x @ (w * s)) as f16;\n\
         }\n",
        false,
    );
    // A cast of the scaled weight to FP8 saturates.
    check(
        "fp8 cast",
        "kernel k(x: bf16[8, 256], s: f32[1, 77], w: bf16[256, 77]) -> f32[8, 77] {\n\
         \x20   return x @ ((w as f32 * s) as f8e4m3);\n\
         }\n",
        false,
    );
    // An f32 weight rounded to bf16 with its scale: the operand's dtype does not hold w.
    check(
        "f32 weight",
        "kernel k(x: bf16[8, 256], s: f32[1, 77], w: f32[256, 77]) -> f32[8, 77] {\n\
         \x20   return x @ ((w * s) as bf16);\n\
         }\n",
        false,
    );
    // The scaled weight is read twice: moving the scale would not save its pass.
    check(
        "read twice",
        "kernel k(x: bf16[8, 256], s: bf16[77], w: bf16[256, 77]) -> (f32[8, 77], bf16[256, 77]) {\n\
         \x20   let ws = w * s;\n\
         \x20   return (x @ ws, ws);\n\
         }\n",
        false,
    );
}
