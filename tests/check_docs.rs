//! The docs keep up with the code: the language reference (docs/language.md) documents
//! every error code of the frontend, and the README's first command, `cargo run --release
//! -- run ...`, runs the `tessera` CLI (with a second binary, the bench, cargo would not
//! know which to run without `default-run`).

#[test]
fn language_reference_lists_every_error_code() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let doc = std::fs::read_to_string(root.join("docs/language.md")).expect("docs/language.md");
    for (code, summary) in tessera::frontend::codes::ALL {
        assert!(
            doc.contains(&format!("| {code} |")),
            "docs/language.md does not document {code} ({summary})"
        );
    }
}

#[test]
fn every_error_code_has_a_filetest() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/snapshots");
    let mut all = String::new();
    for entry in std::fs::read_dir(&root).expect("tests/snapshots").flatten() {
        if entry
            .file_name()
            .to_string_lossy()
            .starts_with("check__errors__")
        {
            all.push_str(&std::fs::read_to_string(entry.path()).unwrap_or_default());
        }
    }
    for (code, summary) in tessera::frontend::codes::ALL {
        assert!(
            all.contains(&format!("error[{code}]")),
            "no check filetest shows {code} ({summary})"
        );
    }
}

#[test]
fn readme_cargo_run_runs_the_cli() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let readme = std::fs::read_to_string(root.join("README.md")).expect("README.md");
    let first = readme
        .lines()
        .find(|l| l.trim_start().starts_with("cargo run"))
        .expect("a `cargo run` command in README.md");
    assert!(
        first.contains("cargo run --release -- run "),
        "the README's first command changed; check it still runs the CLI: {first}"
    );
    let out = std::process::Command::new(env!("CARGO"))
        .args([
            "metadata",
            "--no-deps",
            "--format-version",
            "1",
            "--offline",
        ])
        .current_dir(root)
        .output()
        .expect("cargo metadata runs");
    assert!(out.status.success(), "cargo metadata failed: {out:?}");
    let meta: serde_json::Value = serde_json::from_slice(&out.stdout).expect("metadata JSON");
    let package = meta["packages"]
        .as_array()
        .and_then(|ps| ps.iter().find(|p| p["name"] == "tessera"))
        .expect("the tessera package");
    let bins = package["targets"]
        .as_array()
        .map(|ts| {
            ts.iter()
                .filter(|t| {
                    t["kind"]
                        .as_array()
                        .is_some_and(|k| k.iter().any(|k| k == "bin"))
                })
                .count()
        })
        .unwrap_or(0);
    assert!(
        bins == 1 || package["default_run"] == "tessera",
        "{bins} binaries and default_run = {}: `cargo run` would not know which to run",
        package["default_run"]
    );
}
