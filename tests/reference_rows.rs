//! Row-block evaluation of the reference (`compiler/reference/rows.rs`) against the
//! whole-tensor evaluation: the same kernels evaluated both ways, at several block sizes,
//! must give every bit of every value and every error bound the same. The kernels are
//! the forms the row blocks exist for (causal attention with grouped heads, softmax, a
//! gated MLP, norms) and ones that stress their edges (a mask that leaves some rows of a
//! matmul operand exact, `where` on comparisons, broadcast operands of every rank).

mod common;

use tessera::driver;
use tessera::passes::PassOptions;
use tessera::reference::{evaluate, evaluate_bounded_blocks, rows, HostTensor};

/// Block sizes that cut the kernels below into many blocks (one row, a few rows, rows
/// that do not divide the frame) and the evaluator's own.
const SIZES: [rows::Blocks; 4] = [
    rows::Blocks {
        elems: 1,
        min_rows: 1,
    },
    rows::Blocks {
        elems: 150,
        min_rows: 1,
    },
    rows::Blocks {
        elems: 700,
        min_rows: 3,
    },
    rows::Blocks::DEFAULT,
];

/// Evaluates `text` on seed-`seed` random inputs whole and by row blocks of every size in
/// `SIZES`, under both dtype policies, and asserts the same bits. Returns how many runs
/// the planner found at the smallest block size, so a caller can assert that blocks were
/// used at all.
fn same_bits_both_ways(text: &str, seed: u64) -> usize {
    let mut runs = 0;
    for passes in common::both_policies() {
        let c = common::compile_verified(text, passes);
        let (func, relaxed) = c.reference();
        let inputs: Vec<HostTensor> = driver::params_of(func)
            .iter()
            .enumerate()
            .map(|(i, p)| driver::random_tensor(p, seed, i as u64))
            .collect();
        let whole = evaluate_bounded_blocks(func, &inputs, &relaxed, None).expect("evaluates");
        runs = rows::plan(func, SIZES[0]).len();
        for blocks in SIZES {
            let got = evaluate_bounded_blocks(func, &inputs, &relaxed, Some(blocks))
                .expect("evaluates by blocks");
            assert_eq!(got.len(), whole.len());
            for (o, ((gt, gb), (wt, wb))) in got.iter().zip(&whole).enumerate() {
                assert_eq!(gt.shape, wt.shape, "output {o}");
                assert_eq!(gt.ints, wt.ints, "output {o}");
                let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
                assert!(
                    bits(&gt.data) == bits(&wt.data),
                    "output {o} values, {blocks:?}"
                );
                assert!(bits(gb) == bits(wb), "output {o} bounds, {blocks:?}");
            }
        }
        // The unbounded entry point takes the row blocks too.
        let values = evaluate(func, &inputs).expect("evaluates");
        for (v, (w, _)) in values.iter().zip(&whole) {
            let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
            assert!(bits(&v.data) == bits(&w.data));
        }
    }
    runs
}

#[test]
fn causal_attention_with_grouped_heads() {
    // Two key heads shared by three query heads each, as Llama's repeat_kv; the scores,
    // mask, softmax and the probabilities' matmul form one run.
    let text = "kernel k(q: bf16[2, 3, 40, 16], k: bf16[2, 1, 40, 16], v: bf16[2, 1, 40, 16]) -> bf16[2, 3, 40, 16] {
        let s = tril((q @ transpose(k, perm=[0, 1, 3, 2])) * 0.25, fill=-inf);
        let m = max(s, axis=-1, keepdims=true);
        let e = exp(s - m);
        let p = e / sum(e, axis=-1, keepdims=true);
        return ((p as bf16) @ v) as bf16;
    }";
    assert!(same_bits_both_ways(text, 1) > 0);
    assert!(same_bits_both_ways(text, 7) > 0);
}

#[test]
fn causal_attention_with_an_offset_diagonal() {
    // The diagonal moved both ways: every block's rows see the whole's diagonal.
    for k in ["-5", "3"] {
        let text = format!(
            "kernel k(q: f32[37, 8], kt: f32[8, 37], v: f32[37, 8]) -> f32[37, 8] {{
                let s = tril(q @ kt, k={k}, fill=-inf);
                let e = exp(s - max(s, axis=-1, keepdims=true));
                return (e / sum(e, axis=-1, keepdims=true)) @ v;
            }}"
        );
        assert!(same_bits_both_ways(&text, 2) > 0);
    }
}

#[test]
fn softmax_and_norms() {
    let text = "kernel k(x: f32[3, 29, 50], g: bf16[50]) -> (f32[3, 29, 50], bf16[3, 29, 50]) {
        let e = exp(x - max(x, axis=-1, keepdims=true));
        let p = e / sum(e, axis=-1, keepdims=true);
        let n = (x * rsqrt(mean(square(x), axis=-1, keepdims=true) + 1e-5) * (g as f32)) as bf16;
        return (p, n);
    }";
    assert!(same_bits_both_ways(text, 3) > 0);
}

#[test]
fn gated_mlp_with_exact_and_inexact_operands() {
    // `x @ w1` has exact operands (inputs), `hidden @ w2` an inexact left operand.
    let text = "kernel k(x: bf16[33, 24], w1: bf16[24, 70], w3: bf16[24, 70], w2: bf16[70, 24]) -> bf16[33, 24] {
        let hidden = (silu(x @ w1) * (x @ w3)) as bf16;
        return ((x as f32) + hidden @ w2) as bf16;
    }";
    assert!(same_bits_both_ways(text, 4) > 0);
}

#[test]
fn matmul_of_partly_exact_rows() {
    // The rows where `r > 0` are `x` itself (exact, bound 0, not zero), the others
    // `exp(x)` (inexact): the matmul's bound is decided per row, so blocks of exact rows
    // and blocks of mixed rows give the whole evaluation's bits.
    let text =
        "kernel k(x: f32[20, 12], r: f32[20, 1], w: bf16[12, 9], y: f32[20, 9]) -> f32[20, 9] {
        let a = where(r > 0.0, x, exp(x));
        return (a @ w) + exp(y);
    }";
    assert!(same_bits_both_ways(text, 5) > 0);
}

#[test]
fn where_on_comparisons_and_broadcast_operands() {
    // A bool mask from comparisons, `where`, operands of rank 0, 1, 2 and 3 broadcast to
    // the frame, and a result used after the run (the mask's count).
    let text = "kernel k(x: f32[4, 10, 16], c: f32[10, 1], r: f32[16], w: f32[16, 16]) -> (f32[4, 10, 16], f32[4, 10, 1]) {
        let s = x @ w;
        let keep = logical_and(s > c, logical_not(s >= r * 3.0));
        let y = where(keep, exp(s), 0.5);
        return (y / sum(y, axis=-1, keepdims=true), sum(keep as f32, axis=-1, keepdims=true));
    }";
    assert!(same_bits_both_ways(text, 6) > 0);
}

#[test]
fn whole_tensor_evaluation_when_no_run_is_worth_it() {
    // Small values: the evaluator's own block size finds no run, and the results stand.
    let text = "kernel k(x: f32[8, 8]) -> f32[8, 8] {
        return exp(x) * 2.0;
    }";
    let c = common::compile_verified(text, PassOptions::default());
    assert!(rows::plan(c.reference().0, rows::Blocks::DEFAULT).is_empty());
    same_bits_both_ways(text, 8);
}

#[test]
fn generated_kernels_same_bits_by_blocks() {
    // The differential tests' random kernels (chains of elementwise operations, matmuls,
    // reductions, layout operations, casts of every dtype) and random attention forms
    // (grouped heads, masks, scales, FP8 probabilities): at one-row blocks every run the
    // planner finds is cut as finely as it can be.
    let cfg = common::kernel_gen::Config::default();
    let mut runs = 0;
    for seed in 0..6 {
        let k = common::kernel_gen::generate(seed, &cfg);
        runs += same_bits_both_ways(&k.source, seed);
        let a = common::attention_gen::generate_attention(seed);
        runs += same_bits_both_ways(&a.source, seed);
    }
    assert!(
        runs >= 6,
        "the planner found only {runs} runs in 12 kernels"
    );
}

/// The reference's estimate of its live tensors at their peak (`reference::estimate`,
/// which `run --check` uses to decide whether the reference may run beside the
/// interpreter), on kernels small enough to count by hand: it must follow the evaluator's
/// lifetimes (an input from its first use, a value until its last), the matmul's packed
/// copy of its right operand, and the row blocks.
#[test]
fn peak_estimate_follows_lifetimes_and_row_blocks() {
    use tessera::reference::estimate::peak_bytes;
    let strict = |text: &str, bounded: bool| {
        let c = common::compile_verified(text, common::both_policies()[1].clone());
        peak_bytes(c.reference().0, bounded)
    };
    // `exp(x)` holds x and a (16 KiB each), then x goes; `a * a` holds a and the result.
    let chain = "kernel k(x: f32[64, 64]) -> f32[64, 64] {
        let a = exp(x);
        return a * a;
    }";
    assert_eq!(strict(chain, false), 2 * 16384);
    assert_eq!(strict(chain, true), 2 * 2 * 16384);
    // x (8 KiB), w (2 KiB), the result (4 KiB) and w packed again (2 KiB).
    let matmul = "kernel k(x: f32[64, 32], w: f32[32, 16]) -> f32[64, 16] {
        return x @ w;
    }";
    assert_eq!(strict(matmul, false), 8192 + 2048 + 4096 + 2048);
    // `exp(x)` (8 MiB) is used only by the sum: one block of 1024 rows of it at a time
    // beside x (8 MiB) and the sum kept whole (8 KiB).
    let blocked = "kernel k(x: f32[2048, 1024]) -> f32[2048, 1] {
        return sum(exp(x), axis=-1, keepdims=true);
    }";
    assert_eq!(strict(blocked, false), 8 * 1048576 + 8192 + 4 * 1048576);
}
