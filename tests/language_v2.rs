//! Version 2 of the language against NumPy: indexing, slicing, `concat`, `pad`,
//! `broadcast_to`, integer expressions of sizes and rank 6. Each case of
//! `tests/data/indexing_numpy.txt` (written by `tests/data/indexing_numpy.py`, which says how)
//! is a kernel with the outputs NumPy computes on inputs `arange(n) - n / 2`: the reference
//! evaluator must give exactly those values, and the compiled program must match the
//! reference within its bounds (every value here is exact, so in practice bit for bit).

mod common;

use common::{compare_outputs, DataCase};
use isa::Dtype;
use tessera::driver::{self, CompileOptions, Source};
use tessera::reference::{self, HostTensor};
use tessera::{frontend, ir};

fn cases() -> Vec<DataCase> {
    let out = common::data_cases(include_str!("data/indexing_numpy.txt"));
    assert!(out.len() >= 20, "the data file holds {} cases", out.len());
    out
}

/// The inputs of a case: `arange(n) - n / 2` for each parameter.
fn inputs(func: &ir::Function) -> Vec<HostTensor> {
    func.params
        .iter()
        .map(|(_, v)| {
            let ty = func.ty(*v);
            let n = ty.elems();
            let values: Vec<f32> = (0..n).map(|i| i as f32 - (n / 2) as f32).collect();
            HostTensor::from_f32(ty.dtype, &ty.shape, &values)
        })
        .collect()
}

#[test]
fn the_reference_gives_numpys_values() {
    for case in cases() {
        let checked = frontend::check_file(&case.src, &[], None)
            .unwrap_or_else(|d| panic!("{}: {:?}", case.name, d));
        let func = ir::lower(&checked[0]);
        ir::verify(&func, "lower").unwrap_or_else(|e| panic!("{}: {e}", case.name));
        let got = reference::evaluate(&func, &inputs(&func)).expect("evaluates");
        assert_eq!(got.len(), case.outs.len(), "{}", case.name);
        for (i, (g, (shape, values))) in got.iter().zip(&case.outs).enumerate() {
            assert_eq!(&g.shape, shape, "{} out{i}", case.name);
            assert_eq!(g.dtype, Dtype::F32);
            assert_eq!(&g.data, values, "{} out{i}", case.name);
        }
    }
}

#[test]
fn compiled_programs_match_the_reference() {
    for case in cases() {
        let checked = frontend::check_file(&case.src, &[], None).expect("checks");
        let func = ir::lower(&checked[0]);
        let inputs = inputs(&func);
        let want = reference::evaluate(&func, &inputs).expect("evaluates");
        let source = Source {
            name: format!("{}.tsr", case.name),
            text: case.src.clone(),
        };
        let options = CompileOptions {
            verify_ir: true,
            ..CompileOptions::default()
        };
        let compilation = driver::compile(&source, &options, &mut String::new())
            .unwrap_or_else(|e| panic!("{}: {e}", case.name));
        let program = driver::program_of(&compilation).expect("a program");
        let params = driver::params_of(&func);
        let (got, _) = driver::execute(program, &params, &inputs)
            .unwrap_or_else(|e| panic!("{}: {e}", case.name));
        let bounds: Vec<Vec<f32>> = driver::expected(&compilation, &inputs)
            .expect("bounds")
            .into_iter()
            .map(|(_, b)| b)
            .collect();
        let outcome = compare_outputs(&got, &want, &bounds);
        assert!(outcome.is_match(), "{}: {}", case.name, outcome.describe());
        for (g, w) in got.iter().zip(&want) {
            assert_eq!(g.data, w.data, "{}: not bit for bit", case.name);
        }
    }
}

/// NumPy's slice resolution, written again here (independently of the checker): the first
/// position and the count.
fn numpy_slice(n: i64, start: Option<i64>, stop: Option<i64>, step: i64) -> (i64, i64) {
    let fix = |v: i64, lo: i64, hi: i64| (if v < 0 { v + n } else { v }).clamp(lo, hi);
    let (first, last) = if step > 0 {
        (
            start.map_or(0, |s| fix(s, 0, n)),
            stop.map_or(n, |s| fix(s, 0, n)),
        )
    } else {
        (
            start.map_or(n - 1, |s| fix(s, -1, n - 1)),
            stop.map_or(-1, |s| fix(s, -1, n - 1)),
        )
    };
    let span = if step > 0 { last - first } else { first - last };
    let count = if span > 0 {
        (span + step.abs() - 1) / step.abs()
    } else {
        0
    };
    (first, count)
}

/// Random indexings (indices, slices with omitted, negative and clamped bounds and steps of
/// either sign, `...`) of random shapes, each feeding an elementwise group, a reduction and
/// a concat: the compiled program must match the reference (seeds 0..40, replayable).
#[test]
fn random_indexing_matches_the_reference() {
    let mut state: u64 = 0x5eed_0001;
    let mut next = |m: u64| {
        state = state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (state >> 33) % m
    };
    let mut done = 0;
    while done < 40 {
        let rank = 1 + next(4) as usize;
        let shape: Vec<i64> = (0..rank).map(|_| 1 + next(24) as i64).collect();
        let mut items = Vec::new();
        let mut out_shape = Vec::new();
        let mut ok = true;
        for &n in &shape {
            match next(4) {
                0 => {
                    let i = next(2 * n as u64) as i64 - n;
                    items.push(i.to_string());
                }
                1 => {
                    items.push(":".to_string());
                    out_shape.push(n);
                }
                _ => {
                    let opt = |v: u64, r: &mut dyn FnMut(u64) -> u64| {
                        (r(3) > 0).then(|| v as i64 - 2 * n)
                    };
                    let start = opt(next(4 * n as u64 + 1), &mut next);
                    let stop = opt(next(4 * n as u64 + 1), &mut next);
                    let step = [1, 2, 3, -1, -2, -3][next(6) as usize];
                    let (_, count) = numpy_slice(n, start, stop, step);
                    ok &= count > 0;
                    let text = |v: Option<i64>| v.map_or(String::new(), |v| v.to_string());
                    items.push(format!("{}:{}:{step}", text(start), text(stop)));
                    out_shape.push(count);
                }
            }
        }
        if !ok || out_shape.is_empty() {
            continue;
        }
        // Replace a run of leading `:` by `...` sometimes.
        if items.len() > 1 && items[0] == ":" && next(2) == 0 {
            items[0] = "...".to_string();
        }
        let dims = |s: &[i64]| {
            s.iter()
                .map(|d| d.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        };
        let mut doubled = out_shape.clone();
        doubled[0] *= 2;
        let mut reduced = out_shape.clone();
        *reduced.last_mut().expect("an axis") = 1;
        let src = format!(
            "kernel k(x: f32[{}]) -> (f32[{}], f32[{}], f32[{}]) {{\n    let s = x[{}];\n    \
             return (exp(s) * 2.0 + 1.0, sum(s, axis=-1, keepdims=true), concat([s, -s], axis=0));\n}}\n",
            dims(&shape),
            dims(&out_shape),
            dims(&reduced),
            dims(&doubled),
            items.join(", ")
        );
        let outcome = common::run_case(&src, &tessera::passes::PassOptions::default(), done as u64);
        assert!(
            outcome.is_match(),
            "case {done}:\n{src}\n{}",
            outcome.describe()
        );
        done += 1;
    }
}
