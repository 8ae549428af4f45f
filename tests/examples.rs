//! End-to-end test of the example kernels: every `examples/*.tsr` (found by listing the
//! folder, so a new example is tested as soon as it is added) is run through the built
//! CLI as `tessera run FILE --random 7 --check -o DIR`, which compiles it, executes it on
//! the interpreter and compares each output with the reference evaluator. The test asserts
//! exit code 0, one `outN: max abs error .., max rel error ..` line per result with finite
//! errors, and the output files. Each example runs again under `--dtype-policy strict`,
//! where `--check` allows no error at all: strict must give the reference's bits.

mod common;

use common::TempDir;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;
use std::time::Instant;

/// Size overrides (`-D NAME=INT`) that keep an example fast in the debug test profile.
/// The examples' defaults are already small; add an entry here if one grows.
const DEFINES: &[(&str, &[&str])] = &[];

/// The example kernels, sorted.
fn examples() -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("cannot list {}: {e}", dir.display()))
        .map(|e| e.expect("a folder entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "tsr"))
        .collect();
    files.sort();
    files
}

/// Runs one example in both dtype policies; returns what is wrong, if anything.
fn run_example(file: &Path) -> Result<(), String> {
    run_example_in(file, false)?;
    run_example_in(file, true)
}

/// Runs one example, under `--dtype-policy strict` when `strict`.
fn run_example_in(file: &Path, strict: bool) -> Result<(), String> {
    let name = file.file_stem().unwrap().to_string_lossy().to_string();
    let out = TempDir::new(&format!("example-{name}-{strict}"));
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_tessera"));
    cmd.arg("run")
        .arg(file)
        .args(["--random", "7", "--check", "-o"])
        .arg(out.path());
    if strict {
        cmd.args(["--dtype-policy", "strict"]);
    }
    for (example, defines) in DEFINES {
        if *example == name {
            for d in *defines {
                cmd.args(["-D", d]);
            }
        }
    }
    let start = Instant::now();
    let result = cmd
        .output()
        .map_err(|e| format!("cannot run tessera: {e}"))?;
    let elapsed = start.elapsed();
    let stdout = String::from_utf8_lossy(&result.stdout);
    let stderr = String::from_utf8_lossy(&result.stderr);
    let context = || format!("stdout:\n{stdout}\nstderr:\n{stderr}");
    if result.status.code() != Some(0) {
        return Err(format!(
            "exit code {:?}\n{}",
            result.status.code(),
            context()
        ));
    }
    // The number of results, from the checker.
    let text = std::fs::read_to_string(file).map_err(|e| e.to_string())?;
    let kernels = tessera::frontend::check_file(&text, &[], None)
        .map_err(|_| "the example does not check".to_string())?;
    let results = kernels[0].results.len();
    let lines: Vec<&str> = stdout.lines().collect();
    if lines.len() != results {
        return Err(format!(
            "expected {results} error lines, found {}\n{}",
            lines.len(),
            context()
        ));
    }
    for (i, line) in lines.iter().enumerate() {
        let (abs, rel) = parse_error_line(line, i)
            .ok_or_else(|| format!("unexpected error line `{line}`\n{}", context()))?;
        if !abs.is_finite() || !rel.is_finite() || line.contains("outside the allowed error") {
            return Err(format!("out{i} is not within its allowed error: `{line}`"));
        }
        if strict && !line.ends_with("every element exact") {
            return Err(format!("out{i} is not exact under strict: `{line}`"));
        }
        if !out.path().join(format!("out{i}.npy")).is_file() {
            return Err(format!("out{i}.npy was not written"));
        }
    }
    eprintln!(
        "{name}{}: {:.2} s; {}",
        if strict { " (strict)" } else { "" },
        elapsed.as_secs_f64(),
        lines.join("; ")
    );
    Ok(())
}

/// Parses `outI: max abs error A, max rel error R`.
fn parse_error_line(line: &str, i: usize) -> Option<(f64, f64)> {
    let rest = line.strip_prefix(&format!("out{i}: max abs error "))?;
    let (abs, rest) = rest.split_once(", max rel error ")?;
    let rel = rest.split_once(';').map_or(rest, |(rel, _)| rel);
    Some((abs.parse().ok()?, rel.parse().ok()?))
}

#[test]
fn every_example_runs_and_matches_the_reference() {
    let files = examples();
    assert!(!files.is_empty(), "no examples/*.tsr found");
    let failures = Mutex::new(Vec::new());
    let next = Mutex::new(files.iter());
    let start = Instant::now();
    std::thread::scope(|s| {
        for _ in 0..2 {
            s.spawn(|| loop {
                let Some(file) = next.lock().unwrap().next() else {
                    break;
                };
                if let Err(e) = run_example(file) {
                    failures
                        .lock()
                        .unwrap()
                        .push(format!("{}: {e}", file.display()));
                }
            });
        }
    });
    eprintln!(
        "{} examples in {:.1} s",
        files.len(),
        start.elapsed().as_secs_f64()
    );
    let failures = failures.into_inner().unwrap();
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

/// The examples also pass `tessera check`.
#[test]
fn every_example_checks() {
    for file in examples() {
        let result = Command::new(env!("CARGO_BIN_EXE_tessera"))
            .arg("check")
            .arg(&file)
            .output()
            .expect("tessera runs");
        assert_eq!(
            result.status.code(),
            Some(0),
            "{}: {}",
            file.display(),
            String::from_utf8_lossy(&result.stderr)
        );
    }
}
