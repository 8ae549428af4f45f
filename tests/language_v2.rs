//! Version 2 of the language against NumPy: indexing, slicing, `concat`, `pad`,
//! `broadcast_to`, integer expressions of sizes and rank 6. Each case of
//! `tests/data/indexing_numpy.txt` (written by `tests/data/indexing_numpy.py`, which says how)
//! is a kernel with the outputs NumPy computes on inputs `arange(n) - n / 2`: the reference
//! evaluator must give exactly those values, and the compiled program must match the
//! reference within its bounds (every value here is exact, so in practice bit for bit).

mod common;

use common::compare_outputs;
use isa::Dtype;
use tessera::driver::{self, CompileOptions, Source};
use tessera::reference::{self, HostTensor};
use tessera::{frontend, ir};

struct Case {
    name: String,
    src: String,
    outs: Vec<(Vec<u64>, Vec<f32>)>,
}

fn cases() -> Vec<Case> {
    let text = include_str!("data/indexing_numpy.txt");
    let mut out: Vec<Case> = Vec::new();
    for line in text.lines() {
        if let Some(name) = line.strip_prefix("case ") {
            out.push(Case {
                name: name.to_string(),
                src: String::new(),
                outs: Vec::new(),
            });
        } else if let Some(src) = line.strip_prefix("src ") {
            out.last_mut().expect("a case").src = src.to_string();
        } else if let Some(rest) = line.strip_prefix("out ") {
            let mut words = rest.split(' ');
            let shape = words
                .next()
                .expect("a shape")
                .split(',')
                .map(|d| d.parse().expect("a dim"))
                .collect();
            let values = words.map(|v| v.parse().expect("a value")).collect();
            out.last_mut().expect("a case").outs.push((shape, values));
        }
    }
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
