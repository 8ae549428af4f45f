//! Matmuls with K interleaved over partitions (`compiler/passes/tiling/matmul.rs`,
//! `interleaved_matmul`): a weight read as `transpose(w)` (K contiguous in HBM) is loaded
//! straight into K-on-partitions tiles, `run` consecutive K indices per partition, instead
//! of being transposed on the PE array. The sum over K then runs in another order, which
//! only the default dtype policy allows: these kernels must stay within the reference's
//! bound there, use no PE transpose, and stay bit-exact under `--dtype-policy strict`
//! (where the transposing schedule is kept). The shapes are not the benchmark's: M of 1,
//! 3, 8 and 130 (two M chunks), K not a multiple of 128 (a short last segment and single
//! indices after it), odd N, f32 as well as bf16, a left operand stored K-major, and two
//! interleaved projections with independent work between them (the second one's weight
//! loads move back among that work).

mod common;

use common::{both_policies, compile_verified as compile, run_seed1};
use isa::Op;

/// The PE-array transposes of a compiled program.
fn transposes(program: &isa::Program) -> usize {
    program
        .streams
        .iter()
        .flatten()
        .filter(|i| matches!(i.op, Op::Transpose { .. }))
        .count()
}

/// Runs `text` under both policies: strict must give the reference's bits, the default
/// must stay within its bound and, when `interleaved`, emit no PE transpose at all.
fn check(text: &str, interleaved: bool) {
    for passes in both_policies() {
        let strict = passes.strict_dtypes;
        let c = compile(text, passes);
        let (_, cmp) = run_seed1(&c);
        for (i, x) in cmp.iter().enumerate() {
            assert_eq!(
                x.bad, 0,
                "out{i} outside its bound, strict={strict}: {text}"
            );
            if strict {
                assert_eq!(x.max_abs, 0.0, "out{i} not exact under strict: {text}");
            }
        }
        let program = c.program.as_ref().expect("a program");
        if interleaved && !strict {
            assert_eq!(transposes(program), 0, "transposes left: {text}");
        } else {
            // The transposing schedule: the weight goes through the PE array.
            assert!(transposes(program) > 0, "strict={strict}: {text}");
        }
    }
}

/// `x[M, K] @ transpose(w[N, K])` in `dtype`, rounded to bf16.
fn linear(m: u64, k: u64, n: u64, dtype: &str) -> String {
    format!(
        "kernel k(x: {dtype}[{m}, {k}], w: {dtype}[{n}, {k}]) -> bf16[{m}, {n}] {{\n\
         \x20   return (x @ transpose(w)) as bf16;\n}}\n"
    )
}

#[test]
fn one_row_with_a_short_last_segment() {
    // K = 4100: one segment of 128 partitions x 32, then 4 single indices.
    check(&linear(1, 4100, 257, "bf16"), true);
}

#[test]
fn three_rows_with_a_partial_segment() {
    // K = 4096 + 70: a segment of 2 partitions x 32, then 6 single indices.
    check(&linear(3, 4166, 131, "bf16"), true);
}

#[test]
fn eight_rows_over_two_column_blocks() {
    check(&linear(8, 4096, 601, "bf16"), true);
}

#[test]
fn two_m_chunks() {
    check(&linear(130, 4097, 33, "bf16"), true);
}

#[test]
fn f32_runs_of_sixteen() {
    // f32 runs are 16 elements (64 bytes): K = 2048 is one full segment, 2053 one more
    // index on each of 5 partitions.
    check(&linear(5, 2053, 45, "f32"), true);
}

#[test]
fn left_operand_stored_k_major() {
    // A read through a transpose: its tiles go in (j, m) order, runs along M.
    check(
        "kernel k(xt: bf16[4100, 6], w: bf16[39, 4100]) -> f32[6, 39] {\n\
         \x20   return transpose(xt) @ transpose(w);\n}\n",
        true,
    );
}

#[test]
fn short_k_keeps_the_transposes() {
    // K below one full segment (128 x 32 in bf16): the transposing schedule stays.
    check(&linear(4, 1000, 70, "bf16"), false);
}

#[test]
fn two_projections_with_work_between() {
    check(
        "kernel k(x: f32[3, 2050], w1: f32[2100, 2050], w2: f32[37, 2100], z: f32[64, 300]) -> (f32[3, 37], f32[64, 300]) {\n\
         \x20   let h = silu(x @ transpose(w1));\n\
         \x20   let e = exp(z - max(z, axis=1, keepdims=true));\n\
         \x20   return (h @ transpose(w2), e / sum(e, axis=1, keepdims=true));\n}\n",
        true,
    );
}
