//! `max_pool` and `avg_pool` against PyTorch's semantics. Each case of
//! `tests/data/pooling_pytorch.txt` (written by `tests/data/pooling_pytorch.py`, which
//! computes PyTorch's `max_pool1d/2d` and `avg_pool1d/2d` by their own rules, and says how
//! the inputs are made) is a kernel with the values PyTorch gives: the reference evaluator
//! must give exactly those values (NaN where they are NaN), and the compiled program the
//! reference's bits.

mod common;

use common::{compare_outputs, DataCase};
use isa::Dtype;
use tessera::driver::{self, CompileOptions, Source};
use tessera::reference::{self, HostTensor};
use tessera::{frontend, ir};

fn cases() -> Vec<DataCase> {
    let out = common::data_cases(include_str!("data/pooling_pytorch.txt"));
    assert!(out.len() >= 15, "the data file holds {} cases", out.len());
    out
}

/// The inputs of a case, as the data file's header says.
fn inputs(name: &str, func: &ir::Function) -> Vec<HostTensor> {
    let special = name.ends_with("_special");
    func.params
        .iter()
        .map(|(_, v)| {
            let ty = func.ty(*v);
            let values: Vec<f32> = (0..ty.elems())
                .map(|i| {
                    if special && i % 37 == 5 {
                        f32::NAN
                    } else if special && i % 41 == 7 {
                        f32::NEG_INFINITY
                    } else {
                        ((i * 7919 % 257) as f32 - 128.0) / 16.0
                    }
                })
                .collect();
            HostTensor::from_f32(ty.dtype, &ty.shape, &values)
        })
        .collect()
}

/// Equal values, NaN equal to NaN.
fn same(a: f32, b: f32) -> bool {
    a.to_bits() == b.to_bits() || (a.is_nan() && b.is_nan())
}

#[test]
fn the_reference_gives_pytorchs_values() {
    for case in cases() {
        let checked = frontend::check_file(&case.src, &[], None)
            .unwrap_or_else(|d| panic!("{}: {:?}", case.name, d));
        let func = ir::lower(&checked[0]);
        ir::verify(&func, "lower").unwrap_or_else(|e| panic!("{}: {e}", case.name));
        let got = reference::evaluate(&func, &inputs(&case.name, &func)).expect("evaluates");
        assert_eq!(got.len(), case.outs.len(), "{}", case.name);
        for (g, (shape, values)) in got.iter().zip(&case.outs) {
            assert_eq!(&g.shape, shape, "{}", case.name);
            assert_eq!(g.dtype, Dtype::F32);
            assert_eq!(g.data.len(), values.len(), "{}", case.name);
            for (i, (a, b)) in g.data.iter().zip(values).enumerate() {
                assert!(same(*a, *b), "{} element {i}: {a} != {b}", case.name);
            }
        }
    }
}

#[test]
fn compiled_programs_give_the_references_bits() {
    for case in cases() {
        let checked = frontend::check_file(&case.src, &[], None).expect("checks");
        let func = ir::lower(&checked[0]);
        let inputs = inputs(&case.name, &func);
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
            for (i, (a, b)) in g.data.iter().zip(&w.data).enumerate() {
                assert!(same(*a, *b), "{} element {i}: {a} != {b}", case.name);
            }
        }
    }
}

/// The roofline counts the input positions some window covers: a stride longer than the
/// window skips the others, and a pool reading everything counts everything.
#[test]
fn the_roofline_counts_the_positions_windows_cover() {
    let bytes = |src: &str| {
        let checked = frontend::check_file(src, &[], None).expect("checks");
        let func = ir::lower(&checked[0]);
        tessera::roofline::bound(&func, &runtime::Timing::default()).hbm_read_bytes
    };
    // Windows of 2 every 3 positions: 4 windows read 8 of the 12 columns, 3 of 5 rows.
    let skip = "kernel k(x: f32[2, 3, 5, 12]) -> f32[2, 3, 3, 4] { return max_pool(x, window=[1, 2], stride=[2, 3]); }";
    assert_eq!(bytes(skip), 2 * 3 * 3 * 8 * 4);
    let all =
        "kernel k(x: f32[2, 3, 6, 6]) -> f32[2, 3, 3, 3] { return avg_pool(x, window=[2, 2]); }";
    assert_eq!(bytes(all), 2 * 3 * 36 * 4);
}

/// A pool whose one output row reads more than an SBUF band is refused with a located
/// error before the passes run (the reference still evaluates it).
#[test]
fn pools_of_rows_too_long_for_sbuf_are_refused_with_a_located_error() {
    let source = Source {
        name: "long.tsr".into(),
        text: "kernel k(x: f32[2, 3, 40000]) -> f32[2, 3, 20000] {\n    return avg_pool(x, window=[2]);\n}\n"
            .into(),
    };
    let Err(err) = driver::compile(&source, &CompileOptions::default(), &mut String::new()) else {
        panic!("a pool too long for SBUF compiled");
    };
    let err = err.to_string();
    assert!(err.contains("long.tsr:2:12"), "{err}");
    assert!(err.contains("does not run on the machine"), "{err}");
}
