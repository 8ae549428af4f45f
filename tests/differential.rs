//! Differential testing of the whole compiler against the reference evaluator: random
//! well-typed kernels from `common::kernel_gen` are compiled through the full pipeline
//! (`driver::compile`), run on the interpreter with `driver::random_tensor` inputs, and
//! compared with `reference::evaluate`, each element within the bound the reference
//! propagates (`driver::expected`, docs/numerics.md; NaN must meet NaN). Every kernel also
//! runs under `--dtype-policy strict`, where the bound is zero: strict gives the
//! reference's bits.
//!
//! By default 300 cases run (a CI-sized budget). `TESSERA_DIFF_CASES=10000` runs a long
//! campaign and `TESSERA_DIFF_SEED=S` starts from another seed; case `i` uses seed `S + i`,
//! so a failure is replayed with `TESSERA_DIFF_SEED=<its seed> TESSERA_DIFF_CASES=1`. A
//! mismatch fails the test with the kernel's source, the seed, the largest error, the
//! first element outside its bound and the pass bisection of `common::bisect`.
//!
//! Two more modes draw on their own generators and seed streams: attention compositions
//! (`common::attention_gen`, `TESSERA_ATTN_*`) and version-2 kernels (`common::v2_gen`,
//! `TESSERA_V2_*`: slices, `concat`, `pad`, `broadcast_to`, `where`, `take`, `i32`).
//! A fourth draws convolutions and pools (`common::conv_gen`, `TESSERA_CONV_*`).

mod common;

use common::attention_gen;
use common::bisect::{self, Verdict};
use common::conv_gen;
use common::kernel_gen::{self, Config};
use common::v2_gen;
use common::{run_case, Outcome};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Instant;
use tessera::passes::PassOptions;
use tessera::{driver, frontend, ir, reference};

/// The first seed when `TESSERA_DIFF_SEED` is not set.
const DEFAULT_SEED: u64 = 20_240_601;

/// The number of cases when `TESSERA_DIFF_CASES` is not set.
const DEFAULT_CASES: u64 = 300;

fn env_u64(name: &str, default: u64) -> u64 {
    match std::env::var(name) {
        Ok(v) => v
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("{name}={v} is not an unsigned integer")),
        Err(_) => default,
    }
}

/// The sizes of generated kernels. They do not depend on the number of cases, so that a
/// failing seed replays alone.
fn config() -> Config {
    Config::default()
}

/// Runs `f(i)` for `i` in `0..n` on a few threads.
fn parallel(n: u64, f: impl Fn(u64) + Sync) {
    let workers = std::thread::available_parallelism()
        .map_or(2, |p| p.get())
        .clamp(1, 4);
    let next = AtomicU64::new(0);
    std::thread::scope(|s| {
        for _ in 0..workers {
            s.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= n {
                    break;
                }
                f(i);
            });
        }
    });
}

/// The pass options a generated kernel runs with.
fn options_of(k: &kernel_gen::Kernel) -> PassOptions {
    PassOptions {
        strict_dtypes: k.strict,
        ..PassOptions::default()
    }
}

/// The report of one failing case.
fn report(seed: u64, k: &kernel_gen::Kernel, outcome: &Outcome) -> String {
    let max = match outcome {
        Outcome::Mismatch { max_abs, .. } => format!("{max_abs:.4e}"),
        _ => "n/a".to_string(),
    };
    let verdict = match outcome {
        Outcome::CheckError(_) | Outcome::ReferenceError(_) => {
            "not bisected (the kernel itself is at fault)".to_string()
        }
        _ => bisect::bisect(&k.source, &options_of(k), seed).to_string(),
    };
    format!(
        "seed {seed} (replay: TESSERA_DIFF_SEED={seed} TESSERA_DIFF_CASES=1), dtype policy {}\n\
         max abs error: {max}\n{}\nbisection: {verdict}\nkernel:\n{}",
        if k.strict { "strict" } else { "wide" },
        truncate(&outcome.describe(), 30),
        k.source
    )
}

/// The first `n` lines of a text (internal errors carry whole IR dumps).
fn truncate(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    if lines.len() <= n {
        return text.to_string();
    }
    format!(
        "{}\n... ({} more lines)",
        lines[..n].join("\n"),
        lines.len() - n
    )
}

/// A one-line summary of a failure, for the list of all of them.
fn summary(outcome: &Outcome) -> String {
    let text = outcome.describe();
    let mut lines = text.lines().filter(|l| !l.trim().is_empty());
    let first = lines.next().unwrap_or_default().to_string();
    match lines.next() {
        Some(second) => format!("{first} {}", second.trim()),
        None => first,
    }
}

#[test]
fn compiled_kernels_match_the_reference() {
    let cases = env_u64("TESSERA_DIFF_CASES", DEFAULT_CASES);
    let first = env_u64("TESSERA_DIFF_SEED", DEFAULT_SEED);
    let cfg = config();
    let start = Instant::now();
    let failures = Mutex::new(Vec::new());
    parallel(cases, |i| {
        let seed = first.wrapping_add(i);
        let k = kernel_gen::generate(seed, &cfg);
        // Every kernel runs in its own policy, and a wide one under strict too, where it
        // must give the reference's bits.
        let strict = kernel_gen::Kernel {
            strict: true,
            ..k.clone()
        };
        let runs = if k.strict {
            vec![&k]
        } else {
            vec![&k, &strict]
        };
        for k in runs {
            let outcome = run_case(&k.source, &options_of(k), seed);
            if !outcome.is_match() {
                let text = report(seed, k, &outcome);
                let line = format!("seed {seed}: {}", summary(&outcome));
                failures.lock().unwrap().push((seed, line, text));
            }
        }
    });
    let mut failures = failures.into_inner().unwrap();
    failures.sort_by_key(|(seed, _, _)| *seed);
    eprintln!(
        "differential: {cases} cases from seed {first} in {:.1} s, {} failing",
        start.elapsed().as_secs_f64(),
        failures.len()
    );
    if !failures.is_empty() {
        let lines: Vec<&str> = failures.iter().map(|(_, l, _)| l.as_str()).collect();
        let shown: Vec<&str> = failures
            .iter()
            .take(5)
            .map(|(_, _, t)| t.as_str())
            .collect();
        panic!(
            "{} of {cases} generated kernels differ from the reference:\n{}\n\nThe first {} in full:\n\n{}",
            failures.len(),
            lines.join("\n"),
            shown.len(),
            shown.join("\n----------------------------------------\n")
        );
    }
}

/// Whether the default pipeline gives `text`'s attention to the flash lowering.
fn flash_lowered(text: &str) -> bool {
    let source = driver::Source {
        name: "attn.tsr".to_string(),
        text: text.to_string(),
    };
    driver::compile(
        &source,
        &driver::CompileOptions::default(),
        &mut String::new(),
    )
    .ok()
    .and_then(|c| c.groups)
    .is_some_and(|g| {
        g.groups
            .iter()
            .any(|g| matches!(g.root, tessera::passes::fusion::Root::Attention(_)))
    })
}

/// Runs one mode of generated kernels: `TESSERA_{env}_CASES` kernels (default
/// `default_cases`) from seed `TESSERA_{env}_SEED` (default [`DEFAULT_SEED`]), each from
/// `generate(seed)` (its source and the features it exercises), under the default policy
/// and under strict; prints the coverage of each feature, fails on any run that differs
/// from the reference, and over the default cases requires every one of `needles`.
fn run_mode(
    label: &str,
    env: &str,
    default_cases: u64,
    needles: &[&str],
    generate: impl Fn(u64) -> (String, Vec<String>) + Sync,
) {
    let cases = env_u64(&format!("TESSERA_{env}_CASES"), default_cases);
    let first = env_u64(&format!("TESSERA_{env}_SEED"), DEFAULT_SEED);
    let start = Instant::now();
    let failures = Mutex::new(Vec::new());
    let coverage = Mutex::new(std::collections::BTreeMap::<String, u64>::new());
    parallel(cases, |i| {
        let seed = first.wrapping_add(i);
        let (source, features) = generate(seed);
        {
            let mut c = coverage.lock().unwrap();
            for f in features {
                *c.entry(f).or_default() += 1;
            }
        }
        for strict in [false, true] {
            let options = PassOptions {
                strict_dtypes: strict,
                ..PassOptions::default()
            };
            let outcome = run_case(&source, &options, seed);
            if !outcome.is_match() {
                let policy = if strict { "strict" } else { "wide" };
                failures.lock().unwrap().push(format!(
                    "seed {seed} (replay: TESSERA_{env}_SEED={seed} TESSERA_{env}_CASES=1), {policy}: {}\n{source}",
                    truncate(&outcome.describe(), 30),
                ));
            }
        }
    });
    let coverage = coverage.into_inner().unwrap();
    let failures = failures.into_inner().unwrap();
    eprintln!(
        "{label}: {cases} kernels from seed {first} in {:.1} s, {} failing runs\ncoverage: {}",
        start.elapsed().as_secs_f64(),
        failures.len(),
        coverage
            .iter()
            .map(|(f, n)| format!("{f} {n}"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    assert!(
        failures.is_empty(),
        "{} failing runs:\n{}",
        failures.len(),
        failures[..failures.len().min(5)].join("\n----------------------------------------\n")
    );
    if first == DEFAULT_SEED && cases >= default_cases {
        let missing: Vec<&str> = needles
            .iter()
            .filter(|n| !coverage.contains_key(**n))
            .copied()
            .collect();
        assert!(missing.is_empty(), "never generated: {missing:?}");
    }
}

/// The attention mode: kernels from `common::attention_gen` (producers of q, k and v,
/// transposed and reshaped operands, every dtype for the probabilities and the output,
/// head and batch axes, masks, results used twice), each under the default policy and
/// under strict. `TESSERA_ATTN_CASES` (default 300) and `TESSERA_ATTN_SEED` as for the
/// chains; the coverage of each composition is printed.
#[test]
fn attention_compositions_match_the_reference() {
    run_mode("attention", "ATTN", DEFAULT_CASES, &[], |seed| {
        let k = attention_gen::generate_attention(seed);
        let flash = format!("flash:{}", flash_lowered(&k.source));
        let mut features = k.features;
        features.push(flash);
        (k.source, features)
    });
}

/// The number of version-2 kernels when `TESSERA_V2_CASES` is not set: about 25 s in the
/// test profile on two cores.
const DEFAULT_V2_CASES: u64 = 600;

/// The version-2 mode: kernels from `common::v2_gen` (slices with steps, negative steps
/// and integer indices, `concat`, `pad`, `broadcast_to`, comparisons, `where`, the logical
/// calls, `arange`, wrapping `i32` arithmetic and `take` with `i32` parameter indices,
/// with indices the kernel computes and of `i32` tables, composed and feeding matmuls and
/// reductions), each under the default policy and under
/// strict. Its own seed stream (`TESSERA_V2_SEED`, `TESSERA_V2_CASES`), so the chains'
/// seeds generate what they did. Every construct must show up in the default cases.
#[test]
fn version_2_kernels_match_the_reference() {
    run_mode("version 2", "V2", DEFAULT_V2_CASES, V2_NEEDLES, |seed| {
        let k = v2_gen::generate_v2(seed);
        (k.source, k.features)
    });
}

/// The constructs and compositions the version-2 mode must draw.
const V2_NEEDLES: &[&str] = &[
    "slice",
    "slice:step",
    "slice:neg_step",
    "slice:neg_bound",
    "index",
    "concat",
    "pad",
    "broadcast_to",
    "where",
    "cmp:<",
    "cmp:<=",
    "cmp:>",
    "cmp:>=",
    "cmp:==",
    "cmp:!=",
    "logical_and",
    "logical_or",
    "logical_not",
    "arange",
    "i32",
    "i32:concat",
    "i32:pad",
    "i32:broadcast_to",
    "i32:cumsum",
    "i32:argmax",
    "i32:argmin",
    "take",
    "take_computed",
    "take_i32",
    "take:argmax",
    "take:arith",
    "take:where",
    "take:arange",
    "take:computed_i32",
    "matmul<-slice",
    "matmul<-concat",
    "matmul<-take",
    "matmul<-pad",
    "reduce<-slice",
    "reduce<-concat",
    "reduce<-take",
    "matmul<-take_computed",
    "reduce<-take_computed",
    "matmul<-take_i32",
    "reduce<-take_i32",
];

/// The number of convolution and pooling kernels when `TESSERA_CONV_CASES` is not set.
const DEFAULT_CONV_CASES: u64 = 160;

/// The lowering the default pipeline gives each convolution of one group in `text`:
/// `lower:implicit` (implicit GEMM) or `lower:window` (the window matrix's matmul), by the
/// tile pass's own choice (`tiling::conv::plan`); nothing when it does not compile.
fn conv_lowerings(text: &str) -> Vec<String> {
    let source = driver::Source {
        name: "conv.tsr".to_string(),
        text: text.to_string(),
    };
    let Ok(c) = driver::compile(
        &source,
        &driver::CompileOptions::default(),
        &mut String::new(),
    ) else {
        return Vec::new();
    };
    let (Some(groups), Some(layout)) = (c.groups.as_ref(), c.layout.as_ref()) else {
        return Vec::new();
    };
    c.convs
        .iter()
        .map(|rec| {
            let planned = tessera::passes::tiling::conv::plan(&c.tensor, groups, layout, rec);
            if planned.is_some() {
                "lower:implicit".to_string()
            } else {
                "lower:window".to_string()
            }
        })
        .collect()
}

/// The convolution and pooling mode: kernels from `common::conv_gen` (1-D and 2-D `conv`
/// with stride, padding, dilation, groups and depthwise, f32, bf16 and mixed operands and
/// bias, residual, relu and cast epilogues; `max_pool` with dilation and `ceil_mode`;
/// `avg_pool` with `ceil_mode` and `count_include_pad`; fed by elementwise chains and by
/// each other, feeding matmuls and reductions), each under the default policy and under
/// strict. Its own seed stream (`TESSERA_CONV_SEED`, `TESSERA_CONV_CASES`). Every
/// construct, and both lowerings of a convolution of one group, must show up in the
/// default cases.
#[test]
fn convolutions_and_pools_match_the_reference() {
    run_mode(
        "convolutions and pools",
        "CONV",
        DEFAULT_CONV_CASES,
        CONV_NEEDLES,
        |seed| {
            let k = conv_gen::generate_conv(seed);
            let mut features = k.features;
            features.extend(conv_lowerings(&k.source));
            (k.source, features)
        },
    );
}

/// The constructs, compositions and lowerings the convolution mode must draw.
const CONV_NEEDLES: &[&str] = &[
    "conv1d",
    "conv2d",
    "conv:f32",
    "conv:bf16",
    "conv:mixed_dtypes",
    "conv:stride",
    "conv:padding",
    "conv:dilation",
    "conv:groups",
    "conv:depthwise",
    "conv:bias",
    "conv:residual",
    "conv:relu",
    "conv:cast",
    "channels>=128",
    "long_row",
    "pool1d",
    "pool2d",
    "pool:padding",
    "max_pool:dilation",
    "max_pool:ceil_mode",
    "avg_pool:ceil_mode",
    "avg_pool:count_include_pad=false",
    "chain",
    "conv<-param",
    "conv<-chain",
    "conv<-pool",
    "conv<-conv",
    "max_pool<-chain",
    "max_pool<-conv",
    "avg_pool<-chain",
    "avg_pool<-conv",
    "matmul<-conv",
    "matmul<-pool",
    "reduce<-conv",
    "reduce<-pool",
    "lower:implicit",
    "lower:window",
];

/// The generator's side on its own: every kernel checks, lowers, verifies and evaluates on
/// the reference, and every result lies within the bounds the generator predicted (which
/// is what keeps the comparison meaningful), with no NaN.
#[test]
fn generated_kernels_are_well_typed_and_within_their_bounds() {
    let cases = env_u64("TESSERA_DIFF_CASES", DEFAULT_CASES);
    let first = env_u64("TESSERA_DIFF_SEED", DEFAULT_SEED);
    let cfg = config();
    let failures = Mutex::new(Vec::new());
    parallel(cases, |i| {
        let seed = first.wrapping_add(i);
        let k = kernel_gen::generate(seed, &cfg);
        if let Some(problem) = generator_problem(&k, seed) {
            failures
                .lock()
                .unwrap()
                .push(format!("seed {seed}: {problem}\n{}", k.source));
        }
    });
    let failures = failures.into_inner().unwrap();
    assert!(
        failures.is_empty(),
        "{} generated kernels are broken; the first:\n{}",
        failures.len(),
        failures[0]
    );
}

/// What is wrong with a generated kernel, if anything.
fn generator_problem(k: &kernel_gen::Kernel, seed: u64) -> Option<String> {
    let checked = match frontend::check_file(&k.source, &[], None) {
        Ok(c) => c,
        Err(diags) => {
            let text = tessera::diagnostic::render(&diags, "generated.tsr", &k.source, false);
            return Some(format!("it does not check:\n{text}"));
        }
    };
    if checked.len() != 1 || checked[0].results.len() != k.bounds.len() {
        return Some("it has the wrong number of kernels or results".to_string());
    }
    let func = ir::lower(&checked[0]);
    if let Err(e) = ir::verify(&func, "lower") {
        return Some(format!("its tensor IR does not verify: {e}"));
    }
    let params = driver::params_of(&func);
    let inputs: Vec<_> = params
        .iter()
        .enumerate()
        .map(|(i, p)| driver::random_tensor(p, seed, i as u64))
        .collect();
    let outputs = match reference::evaluate(&func, &inputs) {
        Ok(o) => o,
        Err(e) => return Some(format!("the reference fails: {e}")),
    };
    for (i, (out, &(lo, hi))) in outputs.iter().zip(&k.bounds).enumerate() {
        // Every element, `i32` positions included.
        if let Some(x) = (0..out.elems())
            .map(|j| out.get(j))
            .find(|x| x.is_nan() || *x < lo || *x > hi)
        {
            return Some(format!(
                "out{i} holds {x}, outside the predicted bounds [{lo}, {hi}]"
            ));
        }
    }
    None
}

/// The generator covers the language: over the default cases, every builtin, operator,
/// dtype and keyword shows up.
#[test]
fn generated_kernels_cover_the_language() {
    let cfg = config();
    let mut all = String::new();
    for i in 0..DEFAULT_CASES {
        all.push_str(&kernel_gen::generate(DEFAULT_SEED + i, &cfg).source);
    }
    let needles = [
        "exp(",
        "log(",
        "sqrt(",
        "rsqrt(",
        "reciprocal(",
        "abs(",
        "square(",
        "tanh(",
        "sigmoid(",
        "relu(",
        "silu(",
        "gelu(",
        "gelu_tanh(",
        "sin(",
        "cos(",
        "erf(",
        "softplus(",
        "floor(",
        "ceil(",
        "round(",
        "sign(",
        "clip(",
        "pow(",
        "(-",
        "maximum(",
        "minimum(",
        " + ",
        " - ",
        " * ",
        " / ",
        " @ ",
        "sum(",
        "mean(",
        "max(",
        "min(",
        "axis=-",
        "keepdims=true",
        "keepdims=false",
        "transpose(",
        "perm=[",
        "reshape(",
        "-1]",
        "tril(",
        "cumsum(",
        "argmax(",
        "argmin(",
        "k=",
        "fill=-inf",
        "fill=0.0",
        " as f32)",
        " as bf16)",
        " as f16)",
        " as f8e4m3)",
        " as f8e5m2)",
        ": f32[",
        ": bf16[",
        ": f16[",
        ": f8e4m3[",
        ": f8e5m2[",
        "-> (",
        "<N0 = ",
        "strict",
    ];
    let missing: Vec<&str> = needles
        .iter()
        .filter(|n| !all.contains(*n))
        .copied()
        .collect();
    assert!(missing.is_empty(), "never generated: {missing:?}");
}

/// The bisector's logic, on fake runners.
#[test]
fn bisection_names_the_pass_whose_absence_fixes_a_mismatch() {
    let names = bisect::optimising_names();
    assert!(!names.is_empty(), "the pipeline has optimising passes");
    assert_eq!(bisect::bisect_with(|_| true), Verdict::NoMismatch);
    assert_eq!(bisect::bisect_with(|_| false), Verdict::NoSinglePass);
    let guilty = names.last().unwrap().clone();
    let verdict = bisect::bisect_with(|disabled| disabled.contains(&guilty));
    assert_eq!(verdict, Verdict::PointsAt(vec![guilty.clone()]));
    assert_eq!(
        verdict.to_string(),
        format!("miscompile points at pass `{guilty}`")
    );
    assert!(Verdict::NoSinglePass
        .to_string()
        .starts_with("no single optimising pass"));
}

/// The bisector on a real kernel that compiles correctly: nothing to bisect.
#[test]
fn bisection_of_a_matching_kernel_reports_no_mismatch() {
    let src = "kernel k(x: f32[8, 40], w: f32[40, 24]) -> f32[8, 24] {\n    \
               return exp(x @ w * 0.125);\n}\n";
    let verdict = bisect::bisect(src, &PassOptions::default(), 1);
    assert_eq!(
        verdict,
        Verdict::NoMismatch,
        "{verdict}; the run: {}",
        run_case(src, &PassOptions::default(), 1).describe()
    );
}

/// The comparison the test relies on: an element outside its allowed error is reported
/// with its observed and expected values, and NaN matches NaN but not a number.
#[test]
fn comparison_flags_differences_and_matches_nans() {
    use isa::Dtype;
    let t = |data: Vec<f32>| reference::HostTensor {
        dtype: Dtype::Bf16,
        shape: vec![2, 2],
        data,
        ints: Vec::new(),
    };
    let want = [t(vec![1.0, f32::NAN, -2.0, 0.0])];
    let bounds = [vec![0.0078125, 0.0, 0.25, 0.0]];
    assert!(common::compare_outputs(&want, &want, &bounds).is_match());
    let close = [t(vec![1.0078125, f32::NAN, -2.0, 0.0])];
    assert!(common::compare_outputs(&close, &want, &bounds).is_match());
    let far = [t(vec![1.0, f32::NAN, -2.5, 0.0])];
    match common::compare_outputs(&far, &want, &bounds) {
        Outcome::Mismatch { details, max_abs } => {
            assert_eq!(max_abs, 0.5);
            assert!(
                details.contains(
                    "(index [1, 0]): observed -2.5e0, expected -2e0, allowed error 2.5e-1"
                ),
                "{details}"
            );
        }
        other => panic!("expected a mismatch, got {other:?}"),
    }
    let nan = [t(vec![1.0, 3.0, -2.0, 0.0])];
    assert!(!common::compare_outputs(&nan, &want, &bounds).is_match());
    // `i32` results are compared bit for bit, through their integers.
    let ints = |v: Vec<i32>| [reference::HostTensor::from_i32(&[2, 2], v)];
    let zero = [vec![0.0; 4]];
    let wrapped = ints(vec![1, -2147483648, 7, 0]);
    assert!(common::compare_outputs(&wrapped, &wrapped, &zero).is_match());
    match common::compare_outputs(&ints(vec![1, 2147483647, 7, 0]), &wrapped, &zero) {
        Outcome::Mismatch { details, .. } => assert!(
            details
                .contains("index [0, 1]): observed Some(2147483647), expected Some(-2147483648)"),
            "{details}"
        ),
        other => panic!("expected a mismatch, got {other:?}"),
    }
}
