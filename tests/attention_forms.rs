//! The attention kernels of `bench/real/attention_*.tsr`, written as their sources write
//! them (normalised before or after P@V, f32 or bf16 results, head axes, grouped-query
//! K/V broadcast over a group axis, causal masks, one-query decode), at small sizes: each
//! must reach the flash lowering (a group rooted at the attention), pass the reference's
//! bounds under the default policy, be bit-exact under strict, and read every input byte
//! from HBM once (grouped-query K and V once per group, not once per query head).

mod common;

use common::run_case;
use tessera::driver::{self, CompileOptions, Source};
use tessera::passes::fusion::Root;
use tessera::passes::PassOptions;

/// The bench sizes, and the small ones the tests use (several 512-key blocks, partial
/// query tiles, more than one head and group).
const SMALL: &[(&str, &str)] = &[
    ("S = 4096", "S = 600"),
    ("S = 2048", "S = 300"),
    ("H = 8", "H = 3"),
    ("KVH = 8", "KVH = 2"),
    ("G = 4", "G = 3"),
    ("B = 8", "B = 2"),
    ("T = 2048", "T = 700"),
    ("D = 128", "D = 64"),
];

/// Every `attention_*.tsr` of bench/real, with its small variant.
fn kernels() -> Vec<(String, String)> {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/bench/real");
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).expect("bench/real") {
        let path = entry.expect("entry").path();
        let name = path.file_name().unwrap().to_string_lossy().to_string();
        if !name.starts_with("attention_") || !name.ends_with(".tsr") {
            continue;
        }
        let mut text = std::fs::read_to_string(&path).expect("read");
        for (big, small) in SMALL {
            text = text.replace(big, small);
        }
        out.push((name, text));
    }
    out.sort();
    assert!(
        out.len() >= 7,
        "bench/real holds {} attention kernels",
        out.len()
    );
    out
}

#[test]
fn every_attention_form_is_flash_lowered_and_matches_the_reference() {
    let mut failures = Vec::new();
    for (name, text) in kernels() {
        let source = Source {
            name: name.clone(),
            text: text.clone(),
        };
        let c = driver::compile(&source, &CompileOptions::default(), &mut String::new())
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        let flash = c.groups.as_ref().is_some_and(|g| {
            g.groups
                .iter()
                .any(|g| matches!(g.root, Root::Attention(_)))
        });
        if !flash {
            failures.push(format!("{name}: not flash-lowered"));
        }
        // Every input byte read once: K and V stay in SBUF for the query heads that share
        // them.
        let params = driver::params_of(&c.tensor);
        let inputs: Vec<_> = params
            .iter()
            .enumerate()
            .map(|(i, p)| driver::random_tensor(p, 1, i as u64))
            .collect();
        let program = driver::program_of(&c).expect("program");
        let (_, report) = driver::execute(program, &params, &inputs).expect("run");
        let compulsory: u64 = params
            .iter()
            .map(|p| p.shape.iter().product::<u64>() * p.dtype.size() as u64)
            .sum();
        if report.hbm_read_bytes != compulsory {
            failures.push(format!(
                "{name}: {} bytes read from HBM, the inputs hold {compulsory}",
                report.hbm_read_bytes
            ));
        }
        for strict in [false, true] {
            let options = PassOptions {
                strict_dtypes: strict,
                ..PassOptions::default()
            };
            for seed in [1, 2] {
                let outcome = run_case(&text, &options, seed);
                if !outcome.is_match() {
                    failures.push(format!(
                        "{name} (strict: {strict}, seed {seed}): {}",
                        outcome.describe()
                    ));
                }
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

/// Canonicalisation's rewrite keeps the program as written for the reference: the
/// canonical IR divides after the second matmul, the original before it, and the moved
/// cast is the one declared relaxed.
#[test]
fn the_reference_evaluates_the_program_as_written() {
    let text =
        "kernel a<S = 200, D = 32>(q: bf16[S, D], k: bf16[S, D], v: bf16[S, D]) -> f32[S, D] {\n\
                \x20   let s = q @ transpose(k);\n\
                \x20   let e = exp(s - max(s, axis=-1, keepdims=true));\n\
                \x20   return ((e / sum(e, axis=-1, keepdims=true)) as bf16) @ v;\n\
                }\n";
    let source = Source {
        name: "a.tsr".into(),
        text: text.into(),
    };
    let c = driver::compile(&source, &CompileOptions::default(), &mut String::new()).unwrap();
    let original = c
        .original
        .as_ref()
        .expect("canonicalize rewrote the kernel");
    let (func, relaxed) = c.reference();
    assert_eq!(func.to_string(), original.func.to_string());
    assert_ne!(func.to_string(), c.tensor.to_string());
    assert_eq!(relaxed.len(), 1, "{relaxed:?}");
    let cast = &func.insts[match func.values[relaxed[0]].def {
        tessera::ir::ValueDef::Inst(i) => i,
        _ => panic!("a parameter"),
    }];
    assert_eq!(cast.op, tessera::ir::TOp::Cast);
    // The canonical IR's last instruction divides; the original's multiplies.
    let last = |f: &tessera::ir::Function| f.insts[*f.layout.last().unwrap()].op.clone();
    assert_eq!(
        last(&c.tensor),
        tessera::ir::TOp::Binary(tessera::ir::BinaryOp::Div)
    );
    assert_eq!(last(func), tessera::ir::TOp::Matmul);
    // Under strict nothing is rewritten.
    let strict = CompileOptions {
        passes: PassOptions {
            strict_dtypes: true,
            ..PassOptions::default()
        },
        ..CompileOptions::default()
    };
    let c = driver::compile(&source, &strict, &mut String::new()).unwrap();
    assert!(c.original.is_none());
}
