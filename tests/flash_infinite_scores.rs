//! Flash attention on scores that overflow to -inf in a row's first key blocks while the
//! row's later keys give finite scores (`tiling/attention.rs`, `attention_softmax`). The
//! language's softmax is then finite: the -inf scores get probability 0. The flash
//! lowering keeps a running maximum per row, and a first block whose scores are all -inf
//! used to leave it at -inf, so the exponentials' bias was +inf and `exp(-inf + inf)` made
//! the whole row NaN, a wrong result from finite inputs. The running maximum now starts at
//! the most negative finite f32 in every flash kernel, as it already did under run-time
//! masks. The scores overflow here because q's and k's first components are 1e20 and
//! -1e20 (finite in bf16; their f32 product is not).

use tessera::driver::{self, CompileOptions, Source};
use tessera::passes::fusion::Root;
use tessera::passes::PassOptions;
use tessera::reference::HostTensor;

/// Compiles `text` (under strict when `strict`), checks that it is flash-lowered, runs it on `inputs`
/// and returns the compiled kernel's output and the reference's.
fn run(text: &str, strict: bool, inputs: &[HostTensor]) -> (HostTensor, HostTensor) {
    let source = Source {
        name: "k.tsr".to_string(),
        text: text.to_string(),
    };
    let options = CompileOptions {
        passes: PassOptions {
            strict_dtypes: strict,
            ..PassOptions::default()
        },
        ..CompileOptions::default()
    };
    let c =
        driver::compile(&source, &options, &mut String::new()).unwrap_or_else(|e| panic!("{e}"));
    let params = driver::params_of(&c.tensor);
    if !strict {
        let flash = c.groups.as_ref().is_some_and(|g| {
            g.groups
                .iter()
                .any(|g| matches!(g.root, Root::Attention(_)))
        });
        assert!(flash, "not flash-lowered:\n{text}");
    }
    let program = driver::program_of(&c).expect("program");
    let (mut outputs, _) = driver::execute(program, &params, inputs).expect("run");
    let mut want = tessera::reference::evaluate(&c.tensor, inputs).expect("reference");
    (outputs.remove(0), want.remove(0))
}

#[test]
fn a_first_block_of_minus_infinity_scores_does_not_make_the_row_nan() {
    let (sq, sk, d) = (130u64, 1100u64, 64u64);
    // Keys below `cut` (two whole key blocks and part of a third) score -inf for every
    // query; the rest score 0 plus small finite terms.
    let cut = 1030u64;
    let text = format!(
        "kernel attention(q: bf16[{sq}, {d}], k: bf16[{sk}, {d}], v: bf16[{sk}, {d}]) -> bf16[{sq}, {d}] {{\n\
         let s = (q @ transpose(k)) * 0.125;\n\
         let e = exp(s - max(s, axis=-1, keepdims=true));\n\
         return ((e / sum(e, axis=-1, keepdims=true)) as bf16 @ v) as bf16;\n\
         }}\n"
    );
    let small = |i: u64| ((i * 37 % 17) as f32 - 8.0) / 64.0;
    let q: Vec<f32> = (0..sq * d)
        .map(|i| if i % d == 0 { 1.0e20 } else { small(i) })
        .collect();
    let k: Vec<f32> = (0..sk * d)
        .map(|i| match (i / d < cut, i % d == 0) {
            (true, true) => -1.0e20,
            (false, true) => 0.0,
            _ => small(i + 5),
        })
        .collect();
    let v: Vec<f32> = (0..sk * d).map(|i| small(i + 11)).collect();
    let inputs = [
        HostTensor::from_f32(isa::Dtype::Bf16, &[sq, d], &q),
        HostTensor::from_f32(isa::Dtype::Bf16, &[sk, d], &k),
        HostTensor::from_f32(isa::Dtype::Bf16, &[sk, d], &v),
    ];
    for strict in [false, true] {
        let (got, want) = run(&text, strict, &inputs);
        assert!(
            want.data.iter().all(|x| x.is_finite()),
            "the reference's output should be finite"
        );
        let nan = got.data.iter().filter(|x| x.is_nan()).count();
        assert_eq!(nan, 0, "{nan} NaN outputs (strict: {strict})");
        if strict {
            assert!(
                got.data
                    .iter()
                    .zip(&want.data)
                    .all(|(g, w)| g.to_bits() == w.to_bits()),
                "strict must be bit-exact"
            );
        }
    }
}
