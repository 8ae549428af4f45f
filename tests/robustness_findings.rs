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
