//! The language reference (docs/language.md) documents every error code of the frontend.

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
