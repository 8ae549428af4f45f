//! `run --check` through a softmax whose scores carry a large error bound: the default
//! policy's bounds of the probabilities stay finite (the structural ranges of
//! `reference::bound::facts`: `x - max(x) <= 0`, its `exp` in `[0, 1]`, the row sum at least
//! 1, the quotient in `[0, 1]`), the compiled result passes, and a result moved by more than
//! an element's bound is caught. Before those ranges, every probability of these kernels had
//! an infinite bound (the `exp` of a score bound of several units overflows the sum's bound
//! past the sum), so `--check` compared nothing there. A check that still compares nothing
//! says so on stderr.

mod common;

use std::process::Command;
use tessera::driver;
use tessera::ir::{BinaryOp, TOp, UnaryFn};
use tessera::passes::{Compilation, PassOptions};
use tessera::reference::{bound, HostTensor};

/// Attention whose queries are a bf16 projection: each query element may differ by a step
/// of bf16 at its magnitude, so a score may differ by several units, and the probabilities
/// are returned as well as the attention output.
const PROJECTED: &str = "kernel proj<S = 192, D = 64>(x: bf16[S, D], wq: bf16[D, D], k: bf16[S, D], v: bf16[S, D]) -> (f32[S, S], bf16[S, D]) {
    let q = (x @ wq) as bf16;
    let s = q @ transpose(k);
    let e = exp(s - max(s, axis=-1, keepdims=true));
    let p = e / sum(e, axis=-1, keepdims=true);
    return (p, (p as bf16 @ v) as bf16);
}
";

/// The same structure on a non-last axis, with a rank-3 batch and bf16 exponentials.
const COLUMNS: &str =
    "kernel cols<B = 2, N = 160, M = 48>(x: bf16[B, N, M], w: bf16[M, M]) -> bf16[B, N, M] {
    let s = (x @ w) as bf16;
    let e = exp(s - max(s, axis=1, keepdims=true));
    return e / sum(e, axis=1, keepdims=true);
}
";

fn compile(text: &str, strict: bool) -> Compilation {
    let passes = PassOptions {
        strict_dtypes: strict,
        ..PassOptions::default()
    };
    common::compile_verified(text, passes)
}

/// The inputs of `--random 1`, scaled by 4, so that the scores' bounds are several units.
fn inputs(c: &Compilation) -> Vec<HostTensor> {
    common::scaled_random_inputs(c, 4.0)
}

/// The compiled kernel's outputs on `inputs`.
fn run(c: &Compilation, inputs: &[HostTensor]) -> Vec<HostTensor> {
    let params = driver::params_of(&c.tensor);
    let program = c.program.as_ref().expect("a program");
    let (got, _) =
        driver::execute_with(program, &params, inputs, &Default::default()).expect("runs");
    got
}

/// Every float output has finite bounds, the compiled outputs pass, and each output moved
/// at one element by twice that element's bound (or its value's step, where the bound is
/// 0) is caught there.
fn finite_and_catching(text: &str) {
    let c = compile(text, false);
    let inputs = inputs(&c);
    let got = run(&c, &inputs);
    let want = driver::expected(&c, &inputs).expect("the reference");
    for (i, cmp) in driver::check_outputs(&c, &inputs, &got)
        .expect("compares")
        .iter()
        .enumerate()
    {
        assert_eq!(cmp.unbounded, 0, "out{i}: {}", cmp.line(i));
        assert_eq!(cmp.bad, 0, "out{i}: {}", cmp.line(i));
    }
    for (i, (w, b)) in want.iter().enumerate() {
        assert!(
            b.iter().all(|x| x.is_finite()),
            "out{i} has infinite bounds"
        );
        // The element with the largest value (a probability near 1 or an output of the
        // largest magnitude) and the one with the smallest nonzero bound.
        let largest = (0..w.data.len())
            .max_by(|&a, &b| w.data[a].abs().total_cmp(&w.data[b].abs()))
            .unwrap();
        let tightest = (0..w.data.len())
            .filter(|&j| b[j] > 0.0)
            .min_by(|&a, &c| b[a].total_cmp(&b[c]))
            .unwrap_or(largest);
        for at in [largest, tightest] {
            // Moved from the reference's value, so that the error is the step whatever the
            // compiled value's own error was.
            let mut moved = got.clone();
            let r = w.data[at];
            let step = (b[at] * 2.0).max(r.abs() * 0.02).max(1e-6);
            moved[i].data[at] = runtime::numeric::round(w.dtype, r + step);
            let cmp = &driver::check_outputs(&c, &inputs, &moved).expect("compares")[i];
            assert!(
                cmp.bad >= 1 && cmp.first_bad.map(|f| f.0) == Some(at),
                "out{i}[{at}] moved by {step:e} (bound {:e}) is not caught: {}",
                b[at],
                cmp.line(i)
            );
        }
    }
    // Under strict the kernel still gives the reference's bits.
    let strict = compile(text, true);
    let got = run(&strict, &inputs);
    for (i, cmp) in driver::check_outputs(&strict, &inputs, &got)
        .expect("compares")
        .iter()
        .enumerate()
    {
        assert_eq!(cmp.bad, 0, "strict out{i}: {}", cmp.line(i));
    }
}

#[test]
fn a_projected_attention_has_finite_bounds_and_catches_a_moved_element() {
    finite_and_catching(PROJECTED);
}

#[test]
fn a_softmax_along_a_middle_axis_has_finite_bounds_and_catches_a_moved_element() {
    finite_and_catching(COLUMNS);
}

/// The probabilities' bounds are at most `max(p, 1 - p)`, and the scores' bounds are in
/// fact large here (so the finite bounds come from the ranges, not from small scores).
#[test]
fn the_probabilities_are_bounded_by_their_range() {
    let c = compile(PROJECTED, false);
    let want = driver::expected(&c, &inputs(&c)).expect("the reference");
    let (p, b) = &want[0];
    for (j, (&v, &e)) in p.data.iter().zip(b).enumerate() {
        assert!((0.0..=1.0).contains(&v), "p[{j}] = {v}");
        assert!(e <= v.max(1.0 - v), "p[{j}] = {v} has the bound {e}");
    }
    // Some probabilities are bounded by their range alone (the scores' bounds are large):
    // without the ranges those bounds were infinite.
    let loose = b.iter().filter(|&&e| e > 0.1).count();
    assert!(
        loose > 0,
        "no bound comes from the range: the test tests nothing"
    );
}

/// `facts` finds the ranges from the structure, for the values of a softmax only: `s -
/// max(s)` is at most 0, its `exp` within `[0, 1]`, the sum at least 1 (a divisor bound
/// for the quotient), the quotient within `[0, 1]`; a `log` of the sum, a difference with
/// another row's maximum and the scores themselves get none.
#[test]
fn facts_are_found_from_the_structure_only() {
    let text = "kernel f<N = 8, M = 16>(s: f32[N, M], t: f32[N, M]) -> (f32[N, M], f32[N, 1], f32[N, M], f32[N, M]) {
    let d = s - max(s, axis=-1, keepdims=true);
    let e = exp(d);
    let l = sum(e, axis=-1, keepdims=true);
    let other = exp(t - max(s, axis=-1, keepdims=true));
    let r = exp(s - max(s, axis=0, keepdims=true));
    return (e / l, log(l), other, r / sum(r, axis=-1, keepdims=true));
}
";
    let c = compile(text, false);
    let (func, relaxed) = c.reference();
    let mut seen = Vec::new();
    for &inst in &func.layout {
        let data = &func.insts[inst];
        let f = bound::facts(func, data.result, &relaxed);
        let arg_op = |i: usize| match func.values[data.args[i]].def {
            tessera::ir::ValueDef::Inst(a) => Some(func.insts[a].op.clone()),
            _ => None,
        };
        match &data.op {
            TOp::Binary(BinaryOp::Div) => {
                // `e / l` (its divisor sums `e` along the axis of its maximum) has both;
                // `r / sum(r)` sums along another axis than its maximum's: neither.
                let r = f.range.map(|r| (r.lo, r.hi));
                seen.push(format!("div {r:?} {:?}", f.divisor_lo));
            }
            TOp::Unary(UnaryFn::Exp) => {
                let r = f.range.map(|r| (r.lo, r.hi));
                seen.push(format!("exp {r:?}"));
            }
            TOp::Unary(UnaryFn::Log) => assert_eq!(f.range, None),
            TOp::Binary(BinaryOp::Sub) => {
                let r = f.range.map(|r| r.hi);
                seen.push(format!("sub {r:?}"));
            }
            TOp::Reduce { .. } if matches!(arg_op(0), Some(TOp::Unary(UnaryFn::Exp))) => {
                seen.push(format!("sum {:?}", f.range.map(|r| r.lo)));
            }
            _ => {}
        }
    }
    seen.sort();
    assert_eq!(
        seen,
        [
            "div None None",
            "div Some((0.0, 1.0)) Some(1.0)",
            "exp None",
            "exp Some((0.0, 1.0))",
            "exp Some((0.0, 1.0))",
            "sub None",
            "sub Some(0.0)",
            "sub Some(0.0)",
            "sum Some(0.0)",
            "sum Some(1.0)",
        ],
        "the facts found"
    );
}

/// An output with no finite bound is named on stderr with a warning, not passed silently;
/// the exit code stays 0 (the contract's 3 is for a value outside a finite bound).
#[test]
fn an_unchecked_output_is_named_on_stderr() {
    let dir = std::env::temp_dir().join(format!("tessera-softmax-bounds-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    // `s - s` is 0 in the reference, but its bound (the sum's reordering allowance) is far
    // above 1e-6, so `rsqrt` of it has no finite bound.
    let text = "kernel u(x: f32[4, 300], w: f32[300, 8]) -> (f32[4, 8], f32[4, 8]) {
    let s = x @ w;
    return (rsqrt((s - s) + 0.000001), s);
}
";
    std::fs::write(dir.join("u.tsr"), text).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_tessera"))
        .current_dir(&dir)
        .args(["run", "u.tsr", "--random", "1", "--check"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "stderr: {err}");
    assert!(
        err.contains("warning: out0: 32 elements have no finite error bound")
            && err.contains("--dtype-policy strict"),
        "stderr: {err}"
    );
    assert!(!err.contains("out1"), "out1 is checked: {err}");
    let _ = std::fs::remove_dir_all(&dir);
}
