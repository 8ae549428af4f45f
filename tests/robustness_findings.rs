//! One test per fuzzing finding (docs/fuzzing.md, Findings), each reading the input the
//! fuzzer found from its committed file under `tests/data/fuzz/<target>/` and checking the
//! behaviour decided for it.

use std::path::{Path, PathBuf};

fn finding(target: &str, name: &str) -> Vec<u8> {
    let path: PathBuf = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data/fuzz")
        .join(target)
        .join(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

/// npy 1: a shape with a zero dimension whose other dimensions multiply past u64. The
/// reader accepts it as an empty array (NumPy itself refuses such a shape); the fuzz
/// target's element-count invariant overflowed on it. An empty array must report 0
/// elements, and `tessera run` must refuse it as an input of the wrong shape.
#[test]
fn npy_zero_dim_with_overflowing_dims_is_an_empty_array() {
    let bytes = finding("npy", "zero_dim_with_overflowing_dims.npy");
    let array = runtime::npy::read_npy(&bytes).expect("an empty array");
    assert!(array.shape.contains(&0));
    assert_eq!(array.len(), 0);
    assert!(array
        .shape
        .iter()
        .try_fold(1u64, |acc, &d| acc.checked_mul(d))
        .is_none());
    let dir = std::env::temp_dir().join(format!("tessera-findings-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("scratch");
    std::fs::write(dir.join("x.npy"), &bytes).expect("writing");
    std::fs::write(
        dir.join("k.tsr"),
        "kernel k(x: f32[4]) -> f32[4] {\n    return x;\n}\n",
    )
    .expect("writing");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_tessera"))
        .current_dir(&dir)
        .args(["run", "k.tsr", "-i", "x=x.npy", "-o", "out"])
        .output()
        .expect("running tessera");
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("has shape (5, 111"), "{stderr}");
    assert!(!dir.join("out/out0.npy").exists());
    let _ = std::fs::remove_dir_all(&dir);
}

/// compile 1: a 4-D attention (3 x 4 x 64 x 32, bf16) whose softmax reduces along axis 0
/// made the `compile` target time out: 12 s to compile in a debug build, nearly all of it
/// in the compiler's hazard tracker (`tile::verify::Hazards::access` and `visit`, used by
/// the `sync` pass and the verifier's race check), for a program of 2,218 instructions:
/// strided HBM patterns were split into overlapping boxes (fixed; see docs/fuzzing.md).
/// This test pins that it compiles to a program that verifies, and that the program runs
/// cleanly under every debug check.
#[test]
fn attention_reducing_along_axis_0_compiles_and_runs_cleanly() {
    use tessera::driver::{self, CompileOptions, RunOptions, Source};
    let text =
        String::from_utf8(finding("compile", "slow_hazards_axis0_reduction.tsr")).expect("UTF-8");
    let src = Source {
        name: "slow.tsr".into(),
        text,
    };
    let c = driver::compile(&src, &CompileOptions::default(), &mut String::new())
        .unwrap_or_else(|e| panic!("{e}"));
    let program = driver::program_of(&c).expect("a program");
    assert_eq!(isa::verify(program), Ok(()));
    let params = driver::params_of(&c.tensor);
    let inputs: Vec<_> = params
        .iter()
        .enumerate()
        .map(|(i, p)| driver::random_tensor(p, 1, i as u64))
        .collect();
    let options = RunOptions {
        debug_checks: true,
        ..RunOptions::default()
    };
    driver::execute_with(program, &params, &inputs, &options).unwrap_or_else(|e| panic!("{e}"));
}
