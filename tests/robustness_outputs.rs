//! Output files are written atomically (a temporary file in the same folder, then a
//! rename): `.npy` outputs and `--random` inputs, `compile --emit ... -o`, `asm -o`,
//! `--trace` and `--report-json`. A failing command leaves no partial or temporary file and
//! never damages the file a previous run wrote; a successful one leaves no temporary file.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn scratch(name: &str) -> PathBuf {
    let dir =
        std::env::temp_dir().join(format!("tessera-robust-out-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("creating a scratch folder");
    dir
}

fn tessera(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_tessera"))
        .current_dir(dir)
        .args(args)
        .output()
        .expect("running tessera")
}

/// The sorted names of the files in `dir` (not below it).
fn names(dir: &Path) -> Vec<String> {
    let mut out: Vec<String> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().to_string())
        .collect();
    out.sort();
    out
}

const KERNEL: &str = "kernel double(x: f32[2, 3]) -> f32[2, 3] {\n    return x + x;\n}\n";
const HUGE: &str =
    "kernel big(x: f32[10000000, 1000000]) -> f32[10000000, 1000000] {\n    return x;\n}\n";

fn setup(dir: &Path) {
    std::fs::write(dir.join("k.tsr"), KERNEL).expect("writing");
    std::fs::write(dir.join("huge.tsr"), HUGE).expect("writing");
    let x = runtime::npy::write_npy(&[2, 3], &[1.0, 2.0, 3.0, 4.0, 5.0, 6.0]);
    std::fs::write(dir.join("x.npy"), x).expect("writing");
    std::fs::create_dir_all(dir.join("out")).expect("creating out");
}

#[test]
fn a_failing_run_writes_nothing() {
    let dir = scratch("failing-run");
    setup(&dir);
    let out = tessera(
        &dir,
        &[
            "run",
            "k.tsr",
            "-i",
            "x=x.npy",
            "--max-instructions",
            "2",
            "-o",
            "out",
            "--trace",
            "out/t.json",
            "--report-json",
            "out/r.json",
        ],
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(out.stdout.is_empty());
    assert_eq!(names(&dir.join("out")), Vec::<String>::new());
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_failing_run_keeps_the_previous_outputs_whole() {
    let dir = scratch("previous");
    setup(&dir);
    let ok = tessera(&dir, &["run", "k.tsr", "-i", "x=x.npy", "-o", "out"]);
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    let before = std::fs::read(dir.join("out/out0.npy")).expect("out0.npy");
    let failed = tessera(
        &dir,
        &[
            "run",
            "k.tsr",
            "-i",
            "x=x.npy",
            "--max-cycles",
            "10",
            "-o",
            "out",
        ],
    );
    assert_eq!(failed.status.code(), Some(1));
    assert_eq!(std::fs::read(dir.join("out/out0.npy")).ok(), Some(before));
    assert_eq!(names(&dir.join("out")), vec!["out0.npy".to_string()]);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_failing_compile_or_asm_writes_nothing() {
    let dir = scratch("failing-compile");
    setup(&dir);
    for args in [
        &["compile", "huge.tsr", "-o", "out/p.tbin"][..],
        &["compile", "huge.tsr", "--emit", "asm", "-o", "out/p.s"][..],
        &["compile", "no_such.tsr", "-o", "out/p.tbin"][..],
    ] {
        let out = tessera(&dir, args);
        assert_eq!(out.status.code(), Some(1), "{args:?}");
        assert!(out.stdout.is_empty(), "{args:?}");
    }
    std::fs::write(dir.join("bad.s"), "nonsense\n").expect("writing");
    let out = tessera(&dir, &["asm", "bad.s", "-o", "out/p.tbin"]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(names(&dir.join("out")), Vec::<String>::new());
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn successful_writes_leave_no_temporary_file() {
    let dir = scratch("success");
    setup(&dir);
    for args in [
        &["compile", "k.tsr", "-o", "out/k.tbin"][..],
        &["compile", "k.tsr", "--emit", "asm", "-o", "out/k.s"][..],
        &["asm", "out/k.s", "-o", "out/k2.tbin"][..],
        &[
            "run",
            "k.tsr",
            "--random",
            "3",
            "-o",
            "out",
            "--trace",
            "out/t.json",
            "--report-json",
            "out/r.json",
        ][..],
    ] {
        let out = tessera(&dir, args);
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    assert_eq!(
        names(&dir.join("out")),
        ["k.s", "k.tbin", "k2.tbin", "out0.npy", "r.json", "t.json", "x.npy"]
            .map(String::from)
            .to_vec()
    );
    assert_eq!(
        std::fs::read(dir.join("out/k.tbin")).ok(),
        std::fs::read(dir.join("out/k2.tbin")).ok()
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn an_unwritable_trace_is_an_error_without_a_temporary_file() {
    let dir = scratch("unwritable");
    setup(&dir);
    let out = tessera(
        &dir,
        &[
            "run",
            "k.tsr",
            "-i",
            "x=x.npy",
            "-o",
            "out",
            "--trace",
            "no/such/t.json",
        ],
    );
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("cannot write no/such/t.json"), "{stderr}");
    // The outputs were complete before the trace failed; nothing temporary remains.
    assert!(names(&dir.join("out")).iter().all(|n| !n.contains("tmp")));
    assert!(names(&dir).iter().all(|n| !n.contains("tmp")));
    let _ = std::fs::remove_dir_all(&dir);
}
