//! Keeps `isa/ISA.md` identical to `isa::reference_doc()`, so the checked-in reference can
//! never drift from the instruction table. Run with `UPDATE_ISA_DOC=1` to rewrite it.

use std::path::Path;

#[test]
fn isa_md_is_up_to_date() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("ISA.md");
    let expected = isa::reference_doc();
    if std::env::var_os("UPDATE_ISA_DOC").is_some() {
        std::fs::write(&path, &expected).expect("write ISA.md");
        return;
    }
    let actual = std::fs::read_to_string(&path).unwrap_or_default();
    if actual != expected {
        let line = actual
            .lines()
            .zip(expected.lines())
            .position(|(a, e)| a != e)
            .unwrap_or_else(|| actual.lines().count().min(expected.lines().count()));
        panic!(
            "isa/ISA.md is out of date (first difference at line {}).\n\
             Regenerate it with: UPDATE_ISA_DOC=1 cargo test -p tessera-isa --test doc",
            line + 1
        );
    }
}
