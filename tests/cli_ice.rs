//! How an internal compiler error (the IR after a pass does not verify) reaches the user:
//! the pass, a few lines of the verifier's errors and the path of a file holding every
//! error and the whole IR, never pages of IR on the terminal. No input makes the shipped
//! pipeline fail its verifier, so the report is built from a hand-made error, through the
//! same function and conversion the driver uses.

use tessera::driver::{self, DriverError};
use tessera::ir::{InternalError, VerifierError};

/// An internal error after `pass` with `errors` two-line verifier errors and an IR of
/// 2000 lines.
fn internal_error(pass: &str, errors: usize) -> InternalError {
    InternalError {
        pass: pass.to_string(),
        errors: (0..errors)
            .map(|i| VerifierError {
                inst: None,
                message: format!("broken invariant {i}\ndetail of invariant {i}"),
            })
            .collect(),
        ir: (0..2000).map(|i| format!("    ir line {i}\n")).collect(),
    }
}

fn scratch(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("tessera-cli-ice-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("creating a scratch folder");
    dir
}

#[test]
fn the_report_is_short_and_names_the_file_with_the_ir() {
    let dir = scratch("short");
    let e = internal_error("sync", driver::ICE_SHOWN_ERRORS + 3);
    let report = driver::internal_error_report(&e, &dir);
    assert!(
        report.starts_with("internal compiler error: the IR after pass `sync` does not verify\n"),
        "{report}"
    );
    assert!(
        report.contains("  error: broken invariant 0 ...\n"),
        "{report}"
    );
    assert!(!report.contains("detail of invariant"), "{report}");
    assert!(
        !report.contains(&format!("broken invariant {}", driver::ICE_SHOWN_ERRORS)),
        "{report}"
    );
    assert!(report.contains("... and 3 more error(s)"), "{report}");
    assert!(!report.contains("ir line"), "{report}");
    assert!(
        report.lines().count() <= driver::ICE_SHOWN_ERRORS + 3,
        "{report}"
    );

    let path = dir.join(format!("tessera-ice-{}-sync.txt", std::process::id()));
    assert!(report.ends_with(&path.display().to_string()), "{report}");
    let file = std::fs::read_to_string(&path).expect("the IR file is written");
    assert!(file.contains("after pass `sync`"), "{file}");
    assert!(file.contains("broken invariant 7"));
    assert!(file.contains("    ir line 0\n") && file.contains("    ir line 1999\n"));

    // A second error of the same pass replaces the file (it does not write through it).
    let again = driver::internal_error_report(&internal_error("sync", 1), &dir);
    assert!(again.ends_with(&path.display().to_string()), "{again}");
    let file = std::fs::read_to_string(&path).expect("the IR file is rewritten");
    assert!(!file.contains("broken invariant 1"), "{file}");
}

#[test]
fn an_unwritable_folder_puts_the_ir_in_the_message() {
    let dir = scratch("unwritable");
    let not_a_folder = dir.join("file");
    std::fs::write(&not_a_folder, b"x").expect("writing a file");
    let report = driver::internal_error_report(&internal_error("tile", 1), &not_a_folder);
    assert!(report.contains("could not be written"), "{report}");
    assert!(report.contains("    ir line 1999\n"), "{report}");
}

#[test]
fn the_driver_error_is_a_bug_report_with_exit_1() {
    let pass = "ice_test_pass";
    let e = DriverError::from(internal_error(pass, 2));
    assert_eq!(e.exit_code(), 1);
    let text = e.to_string();
    assert!(text.contains("This is a bug in Tessera"), "{text}");
    assert!(!text.contains("ir line"), "{text}");
    let path = std::env::temp_dir().join(format!("tessera-ice-{}-{pass}.txt", std::process::id()));
    assert!(text.contains(&path.display().to_string()), "{text}");
    let _ = std::fs::remove_file(path);
}

#[test]
fn a_real_verifier_failure_is_reported_in_a_few_lines() {
    let src = driver::Source {
        name: "k.tsr".to_string(),
        text: "kernel k(x: f32[4, 8]) -> f32[4, 8] {\n    return exp(x) * 2.0;\n}\n".to_string(),
    };
    let c = driver::compile(&src, &driver::CompileOptions::default(), &mut String::new())
        .expect("the kernel compiles");
    // Break an invariant as a faulty pass would: the result no longer has its type.
    let mut func = c.tensor.clone();
    let result = func.results[0];
    func.values[result].ty.shape = vec![8, 4];
    let e = tessera::ir::verify(&func, "simplify").expect_err("the IR no longer verifies");
    let dir = scratch("real");
    let report = driver::internal_error_report(&e, &dir);
    assert!(report.contains("after pass `simplify`"), "{report}");
    assert!(report.contains("  error: "), "{report}");
    assert!(!report.contains("kernel k("), "{report}");
    let path = dir.join(format!("tessera-ice-{}-simplify.txt", std::process::id()));
    let file = std::fs::read_to_string(path).expect("the IR file is written");
    assert!(file.contains(&e.ir), "{file}");
    assert!(file.contains("kernel k("), "{file}");
}
