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
//!
//! Past four M chunks, or with more A than its SBUF budget, the schedule is
//! `interleaved_tiles` (output tiles of up to eight chunks, A kept over the N blocks when it
//! fits, else streamed per N block): the shapes below give it M off a multiple of 128 above
//! 512, a second chunk group, K not a multiple of 128 (a partial segment spread over all
//! partitions with a shorter run, and one that is not), f32, a K-major left operand and the
//! SwiGLU FFN with its swapped projections.

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

#[test]
fn large_m_off_a_multiple_of_128() {
    // 600 x 4160 bf16 is 39 KB a partition, kept; K = 4096 + 64 ends in a segment of two
    // partitions x 32 (64 indices: not spread).
    check(&linear(600, 4160, 45, "bf16"), true);
}

#[test]
fn two_chunk_groups_over_column_blocks() {
    // Nine chunks: a group of eight (1024 x 4096 bf16, 64 KB: kept over two N blocks),
    // then one of six rows.
    check(&linear(1030, 4096, 530, "bf16"), true);
}

#[test]
fn long_k_streams_a_and_spreads_the_last_segment() {
    // K = 6144: one segment of 128 x 32, then 2,048 indices as 128 x 16; A (520 x 6144
    // bf16, 50 KB a partition) kept. 9,000 makes A 73 KB: streamed per N block.
    check(&linear(520, 6144, 33, "bf16"), true);
    check(&linear(520, 9000, 520, "bf16"), true);
}

#[test]
fn large_m_in_f32() {
    // f32 runs of 16: K = 2100 is a segment of 128 x 16, then 52 indices on 3 partitions
    // and 4 single ones.
    check(&linear(530, 2100, 40, "f32"), true);
}

#[test]
fn large_m_left_operand_stored_k_major() {
    check(
        "kernel k(xt: bf16[4100, 530], w: bf16[33, 4100]) -> f32[530, 33] {\n\
         \x20   return transpose(xt) @ transpose(w);\n}\n",
        true,
    );
}

#[test]
fn swiglu_ffn_with_swapped_projections() {
    // The layout pass swaps the two up projections (the weight is the stationary side,
    // M = F = 600) and stores their results transposed, so the down projection's left
    // operand is K-major. Those two are interleaved (M = 600: `interleaved_tiles`); the
    // down projection (K = 600, less than a segment) keeps its transposes.
    check(
        "kernel k(x: bf16[130, 4096], w1: bf16[600, 4096], w2: bf16[4096, 600], w3: bf16[600, 4096]) -> bf16[130, 4096] {\n\
         \x20   let gate = silu(x @ transpose(w1)) as bf16;\n\
         \x20   let up = (x @ transpose(w3)) as bf16;\n\
         \x20   return ((gate * up) @ transpose(w2)) as bf16;\n}\n",
        false,
    );
}
