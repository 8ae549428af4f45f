//! `tessera run` with the flags of the pass pipeline (`--disable-pass`, `--dump-after`,
//! `--verify-ir`), so that a miscompile is bisected with the command that shows it, and
//! `run PROGRAM.tbin --check`, which finds the kernel through the origin the program
//! records (source path, SHA3-256 of the source, kernel, `-D` values, options) and refuses,
//! with the reason, when that source is missing or has changed.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// A fresh scratch folder for one test.
fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("tessera-run-flags-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("creating a scratch folder");
    dir
}

/// Runs the binary in `dir` with `args`.
fn tessera(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_tessera"))
        .current_dir(dir)
        .args(args)
        .output()
        .expect("running tessera")
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A kernel with a size, so that a check that forgot the program's `-D` value would meet a
/// kernel of another shape.
const SIZED: &str = "kernel scaled<N = 4>(x: f32[N, 8], y: bf16[N, 8]) -> f32[N, 8] {\n    \
                     return exp(x) * 2.0 + y;\n}\n";

#[test]
fn run_takes_the_pipeline_flags_of_compile() {
    let dir = scratch("pipeline");
    std::fs::write(dir.join("k.tsr"), SIZED).expect("writing the kernel");
    let out = tessera(
        &dir,
        &[
            "run",
            "k.tsr",
            "--random",
            "1",
            "--check",
            "--disable-pass",
            "fusion",
            "--disable-pass",
            "layout",
            "--verify-ir",
            "--dump-after",
            "fusion",
        ],
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(
        stdout(&out).starts_with("out0: max abs error"),
        "{}",
        stdout(&out)
    );
    assert_eq!(stderr(&out), "; after fusion\n(disabled)\n");

    let out = tessera(
        &dir,
        &["run", "k.tsr", "--random", "1", "--dump-after", "dce"],
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(
        stderr(&out).starts_with("; after dce\n"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn run_refuses_what_compile_refuses() {
    let dir = scratch("refuses");
    std::fs::write(dir.join("k.tsr"), SIZED).expect("writing the kernel");
    for (flag, pass, message) in [
        (
            "--disable-pass",
            "nope",
            "--disable-pass: no pass is called `nope`",
        ),
        (
            "--disable-pass",
            "tile",
            "--disable-pass: `tile` is needed for correctness",
        ),
        (
            "--dump-after",
            "nope",
            "--dump-after: no pass is called `nope`",
        ),
    ] {
        let out = tessera(&dir, &["run", "k.tsr", "--random", "1", flag, pass]);
        assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
        assert!(stderr(&out).contains(message), "{}", stderr(&out));
        assert!(!dir.join("out0.npy").exists(), "a refused run wrote output");
    }
}

#[test]
fn pipeline_flags_on_a_tbin_are_usage_errors() {
    let dir = scratch("tbin-usage");
    std::fs::write(dir.join("k.tsr"), SIZED).expect("writing the kernel");
    let out = tessera(&dir, &["compile", "k.tsr", "-o", "k.tbin"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    for flags in [
        &["--disable-pass", "fusion"][..],
        &["--dump-after", "all"],
        &["--verify-ir"],
        &["--dtype-policy", "wide"],
    ] {
        let mut args = vec!["run", "k.tbin", "--random", "1", "-o", "out"];
        args.extend_from_slice(flags);
        let out = tessera(&dir, &args);
        assert_eq!(out.status.code(), Some(2), "{flags:?}: {}", stderr(&out));
        assert!(
            stderr(&out).contains("a .tbin is already compiled"),
            "{flags:?}: {}",
            stderr(&out)
        );
        assert!(
            !dir.join("out/out0.npy").exists(),
            "a refused run wrote output"
        );
    }
}

#[test]
fn a_tbin_records_its_origin_and_checks_against_its_kernel() {
    let dir = scratch("origin");
    let src = dir.join("k.tsr");
    std::fs::write(&src, SIZED).expect("writing the kernel");
    // The options the origin must record, for the binary and the text form alike.
    let options = [
        "compile",
        "k.tsr",
        "-D",
        "N=16",
        "--dtype-policy",
        "strict",
        "--disable-pass",
        "fusion",
    ];
    let out = tessera(&dir, &[&options[..], &["-o", "k.tbin"]].concat());
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let bytes = std::fs::read(dir.join("k.tbin")).expect("reading the program");
    let program = isa::decode_program(&bytes).expect("decoding the program");
    let origin = program
        .origin
        .expect("a compiled program records its origin");
    assert_eq!(
        Path::new(&origin.path),
        std::fs::canonicalize(&src).expect("resolving the source")
    );
    assert_eq!(origin.source_sha3, tessera::driver::source_hash(SIZED));
    assert_eq!(origin.kernel, "scaled");
    assert_eq!(origin.defines, vec![("N".to_string(), 16)]);
    assert!(origin.strict_dtypes);
    assert_eq!(origin.disabled_passes, vec!["fusion".to_string()]);

    // The text form carries the origin too, and assembles to the same program.
    let out = tessera(
        &dir,
        &[&options[..], &["--emit", "asm", "-o", "k.s"]].concat(),
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let text = std::fs::read_to_string(dir.join("k.s")).expect("reading the assembly");
    assert!(
        text.contains(&format!(".origin {:?} kernel scaled\n", origin.path)),
        "{text}"
    );
    assert!(text.contains(".origin-define N 16\n"), "{text}");
    let out = tessera(&dir, &["asm", "k.s", "-o", "k2.tbin"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(std::fs::read(dir.join("k2.tbin")).ok(), Some(bytes));

    // From another folder, so the source is found by its recorded path, and with N=16
    // from the program, not the default 4 (which would not match the program's inputs).
    let elsewhere = scratch("origin-elsewhere");
    let tbin = dir.join("k.tbin").display().to_string();
    let out = tessera(&elsewhere, &["run", &tbin, "--random", "3", "--check"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(
        stdout(&out).starts_with("out0: max abs error"),
        "{}",
        stdout(&out)
    );
    assert!(elsewhere.join("out0.npy").exists());
    assert_eq!(
        stderr(&out),
        format!(
            "note: the reference is kernel `scaled` of {} with -D N=16, as the program records\n",
            origin.path
        )
    );

    let out = tessera(
        &elsewhere,
        &["run", &tbin, "--random", "3", "--reference", "-o", "ref"],
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(elsewhere.join("ref/out0.npy").exists());
}

#[test]
fn a_tbin_check_refuses_a_changed_or_missing_source() {
    let dir = scratch("changed");
    let src = dir.join("k.tsr");
    std::fs::write(&src, SIZED).expect("writing the kernel");
    let out = tessera(&dir, &["compile", "k.tsr", "-o", "k.tbin"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));

    // The same kernel with another body: same parameters, another result.
    std::fs::write(&src, SIZED.replace("exp(x)", "tanh(x)")).expect("editing the kernel");
    let out = tessera(
        &dir,
        &["run", "k.tbin", "--random", "1", "--check", "-o", "out"],
    );
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("has changed since it was compiled"),
        "{}",
        stderr(&out)
    );
    assert!(stdout(&out).is_empty(), "{}", stdout(&out));
    assert!(
        !dir.join("out/out0.npy").exists(),
        "a refused check wrote output"
    );

    std::fs::remove_file(&src).expect("removing the kernel");
    let out = tessera(
        &dir,
        &["run", "k.tbin", "--random", "1", "--check", "-o", "out"],
    );
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(err.contains("which cannot be read"), "{err}");
    assert!(
        err.contains(&src.display().to_string()) || err.contains("k.tsr"),
        "{err}"
    );

    // Without --check the program needs no source.
    let out = tessera(&dir, &["run", "k.tbin", "--random", "1", "-o", "out"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
}

#[test]
fn a_tbin_without_origin_cannot_be_checked_and_version_1_still_runs() {
    let dir = scratch("no-origin");
    std::fs::write(dir.join("k.tsr"), SIZED).expect("writing the kernel");
    let out = tessera(&dir, &["compile", "k.tsr", "-o", "k.tbin"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let mut program = isa::decode_program(&std::fs::read(dir.join("k.tbin")).expect("reading"))
        .expect("decoding");
    program.origin = None;
    // Format version 1: the same bytes without the origin flag at the end.
    let mut old = isa::encode_program(&program);
    assert_eq!(old.pop(), Some(0));
    old[8..10].copy_from_slice(&1u16.to_le_bytes());
    std::fs::write(dir.join("old.tbin"), &old).expect("writing the old program");

    let out = tessera(&dir, &["run", "old.tbin", "--random", "1", "-o", "out"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(dir.join("out/out0.npy").exists());

    let out = tessera(
        &dir,
        &["run", "old.tbin", "--random", "1", "--check", "-o", "out2"],
    );
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("records no kernel source"),
        "{}",
        stderr(&out)
    );
    assert!(!dir.join("out2/out0.npy").exists());
}
