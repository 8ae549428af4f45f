//! Runs the bodies of the fuzz targets `compile`, `tbin`, `npy` and `mutate` (shared with
//! `fuzz/fuzz_targets/` through `fuzz/bodies/`) over their seed corpora, and over truncated
//! and byte-flipped variants of each seed, so that CI exercises the targets on a stable
//! toolchain. Also replays every committed finding under `tests/data/fuzz/<target>/`.

#[path = "../fuzz/bodies/compile.rs"]
mod compile;
#[path = "../fuzz/bodies/limits.rs"]
mod limits;
#[path = "../fuzz/bodies/mutate.rs"]
mod mutate;
#[path = "../fuzz/bodies/npy.rs"]
mod npy;
#[path = "../fuzz/bodies/tbin.rs"]
mod tbin;

use std::path::{Path, PathBuf};

/// Every file directly in `dir`, sorted (none when it does not exist).
fn files(dir: &Path) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|entries| entries.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    out.retain(|p| p.is_file());
    out.sort();
    out
}

/// Runs `body` over the seed corpus of `target` (which must not be empty), a few variants
/// of each seed, and the committed findings of the target.
fn run_corpus(target: &str, variants: bool, body: fn(&[u8])) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let seeds = files(&root.join("fuzz/corpus").join(target));
    assert!(
        !seeds.is_empty(),
        "the seed corpus fuzz/corpus/{target} is empty"
    );
    for path in &seeds {
        let data = std::fs::read(path).expect("reading a corpus file");
        body(&data);
        if variants {
            for cut in [
                1,
                data.len() / 3,
                data.len() / 2,
                data.len().saturating_sub(1),
            ] {
                body(&data[..cut.min(data.len())]);
            }
            let mut flipped = data.clone();
            for i in (0..flipped.len()).step_by(13) {
                flipped[i] ^= 0x5a;
            }
            body(&flipped);
        }
    }
    for path in files(&root.join("tests/data/fuzz").join(target)) {
        let data = std::fs::read(&path).expect("reading a finding");
        body(&data);
    }
}

#[test]
fn compile_target_survives_its_seed_corpus() {
    // The pipeline is slow in debug builds: no variants (the `check` corpus test covers
    // the frontend on them).
    run_corpus("compile", false, compile::fuzz_compile);
}

#[test]
fn tbin_target_survives_its_seed_corpus() {
    run_corpus("tbin", true, tbin::fuzz_tbin);
}

#[test]
fn npy_target_survives_its_seed_corpus() {
    run_corpus("npy", true, npy::fuzz_npy);
}

#[test]
fn mutate_target_survives_its_seed_corpus() {
    run_corpus("mutate", true, mutate::fuzz_mutate);
}

#[test]
fn mutate_generator_makes_valid_programs_from_any_bytes() {
    // The generator's base program must verify and run cleanly whatever the choices.
    for seed in 0u64..64 {
        let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        let data: Vec<u8> = (0..64)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                state as u8
            })
            .collect();
        mutate::fuzz_mutate(&data);
    }
}
