//! Runs the body of the `check` fuzz target over its seed corpus (fuzz/corpus/check) and
//! over every filetest, so the target's code is exercised on a stable toolchain and in CI.

use std::path::Path;

/// Every file directly in, or below, `dir`.
fn files(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            files(&path, out);
        } else {
            out.push(path);
        }
    }
}

#[test]
fn fuzz_target_survives_the_seed_corpus() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut inputs = Vec::new();
    files(&root.join("fuzz/corpus/check"), &mut inputs);
    let seeds = inputs.len();
    files(&root.join("tests/filetests"), &mut inputs);
    assert!(seeds > 0, "the seed corpus fuzz/corpus/check is empty");
    for path in &inputs {
        let data = std::fs::read(path).expect("reading a corpus file");
        tessera::frontend::fuzz_check(&data);
        // Truncations and byte flips of each seed, as a fuzzer would start.
        for cut in [
            1,
            data.len() / 3,
            data.len() / 2,
            data.len().saturating_sub(1),
        ] {
            tessera::frontend::fuzz_check(&data[..cut.min(data.len())]);
        }
        let mut flipped = data.clone();
        for i in (0..flipped.len()).step_by(17) {
            flipped[i] ^= 0x5a;
        }
        tessera::frontend::fuzz_check(&flipped);
    }
}

#[test]
fn fuzz_crate_is_its_own_workspace() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let manifest = std::fs::read_to_string(root.join("fuzz/Cargo.toml")).expect("fuzz/Cargo.toml");
    assert!(
        manifest.contains("[workspace]"),
        "fuzz/ must be its own workspace"
    );
    let target = std::fs::read_to_string(root.join("fuzz/fuzz_targets/check.rs"))
        .expect("fuzz/fuzz_targets/check.rs");
    assert!(target.contains("tessera::frontend::fuzz_check(data)"));
    let root_manifest = std::fs::read_to_string(root.join("Cargo.toml")).expect("Cargo.toml");
    assert!(
        !root_manifest.contains("\"fuzz\""),
        "the root workspace must not include fuzz/"
    );
}
