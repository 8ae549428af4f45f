//! `tessera compile --dump-after PASS|all`, `--disable-pass` and `--list-passes` through the
//! binary: the dumps come on stderr in pipeline order, one per pass, each the IR after it,
//! `(unchanged)` when the pass changed nothing and `(disabled)` when it was switched off;
//! stdout stays empty when the program goes to a file.

use std::process::{Command, Output};

fn tessera(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_tessera"))
        .args(args)
        .output()
        .expect("running tessera")
}

fn example(name: &str) -> String {
    format!("{}/examples/{name}", env!("CARGO_MANIFEST_DIR"))
}

fn out_path(name: &str) -> String {
    let dir = std::env::temp_dir().join(format!("tessera-cli-dump-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("a scratch folder");
    dir.join(name).display().to_string()
}

/// The pass names listed by `--list-passes`, in order.
fn listed_passes() -> Vec<String> {
    let out = tessera(&["compile", "--list-passes"]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().next().map(str::to_string))
        .collect()
}

#[test]
fn dump_after_all_shows_every_pass_in_order() {
    let passes = listed_passes();
    for name in [
        "simplify",
        "dce",
        "canonicalize",
        "fusion",
        "layout",
        "tile",
        "engines",
        "alloc",
        "sync",
        "emit",
    ] {
        assert!(
            passes.iter().any(|p| p == name),
            "--list-passes lacks {name}: {passes:?}"
        );
    }
    let out = tessera(&[
        "compile",
        &example("matmul_bf16.tsr"),
        "--dump-after",
        "all",
        "--disable-pass",
        "schedule",
        "-o",
        &out_path("all.tbin"),
    ]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert!(out.stdout.is_empty());
    let err = String::from_utf8_lossy(&out.stderr);
    let headers: Vec<&str> = err
        .lines()
        .filter_map(|l| l.strip_prefix("; after "))
        .collect();
    // `--list-passes` starts with lowering, which always runs.
    assert_eq!(passes[0], "lower");
    assert_eq!(headers, passes, "{err}");
    // What follows each header.
    let after = |pass: &str| {
        let start = err.find(&format!("; after {pass}\n")).expect("the header") + pass.len() + 9;
        let end = err[start..]
            .find("; after ")
            .map_or(err.len(), |e| start + e);
        err[start..end].to_string()
    };
    assert_eq!(after("simplify"), "(unchanged)\n");
    assert_eq!(after("schedule"), "(disabled)\n");
    assert!(after("layout")
        .contains("; layout inst0: stationary v0 (pe-transpose), moving v1 (direct)"));
    assert!(after("tile").starts_with("tile kernel matmul_bf16 {"));
    assert!(after("sync").starts_with("tile kernel matmul_bf16 synced {"));
    assert!(after("emit").contains(".stream tensor"));
}

#[test]
fn dump_after_one_pass_shows_only_it() {
    let out = tessera(&[
        "compile",
        &example("linear_gelu.tsr"),
        "--dump-after",
        "engines",
        "-o",
        &out_path("one.tbin"),
    ]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.matches("; after ").count(), 1, "{err}");
    assert!(err.starts_with("; after engines\ntile kernel"), "{err}");
}

#[test]
fn unknown_or_required_pass_names_are_usage_errors() {
    let file = example("matmul_bf16.tsr");
    let out = tessera(&["compile", &file, "--dump-after", "nosuch"]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("no pass is called `nosuch`") && err.contains("layout"),
        "{err}"
    );
    let out = tessera(&["compile", &file, "--disable-pass", "alloc"]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("needed for correctness"));
}

/// `--verify-ir` runs the verifier after every pass (release builds skip it otherwise;
/// this debug binary always runs it): accepted, and the program is the same byte for byte.
#[test]
fn verify_ir_is_accepted_and_changes_nothing() {
    let plain = out_path("plain.tbin");
    let verified = out_path("verified.tbin");
    let source = example("matmul_bf16.tsr");
    for (path, extra) in [(&plain, None), (&verified, Some("--verify-ir"))] {
        let mut args = vec!["compile", source.as_str()];
        args.extend(extra);
        args.extend(["-o", path.as_str()]);
        let out = tessera(&args);
        assert_eq!(out.status.code(), Some(0), "{out:?}");
    }
    let a = std::fs::read(&plain).expect("the plain program");
    let b = std::fs::read(&verified).expect("the verified program");
    assert!(!a.is_empty());
    assert_eq!(a, b);
}
