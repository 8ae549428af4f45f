//! The frontend: lexer, parser, AST and checker of the kernel language. It knows nothing of
//! tiles, memories or engines; its output is the checked kernel of `typed.rs`.
//!
//! The entry points are [`parse`] (source text to syntax tree plus diagnostics; it never
//! fails) and [`check_file`] (source text to checked kernels, or every diagnostic).

pub mod ast;
pub mod check;
pub mod codes;
pub mod lexer;
pub mod parse;
pub mod pool;
pub mod print;
pub mod typed;

use crate::diagnostic::{has_errors, sort_by_position, Diagnostic};
use typed::CheckedKernel;

pub use ast::MAX_NESTING;
pub use parse::parse;

/// Parses and checks a source file.
///
/// `defines` override size defaults (`-D N=128`; the last define of a name wins);
/// `kernel` selects one kernel by name, `None` checks all of them. Returns the checked
/// kernels in file order, or every diagnostic (sorted by position) if there is any error.
pub fn check_file(
    src: &str,
    defines: &[(String, i64)],
    kernel: Option<&str>,
) -> Result<Vec<CheckedKernel>, Vec<Diagnostic>> {
    let (file, mut diags) = parse(src);
    let kernels = check::check_kernels(&file, src, defines, kernel, !diags.is_empty(), &mut diags);
    if has_errors(&diags) {
        sort_by_position(&mut diags);
        Err(diags)
    } else {
        Ok(kernels)
    }
}

/// The body of the `check` fuzz target (fuzz/fuzz_targets/check.rs), here so that a plain
/// test can run it over the seed corpus on a stable toolchain: reads arbitrary bytes as
/// UTF-8 (lossily), parses, checks with and without a define, and renders the result.
/// It must never panic; it also asserts the invariants a caller relies on.
pub fn fuzz_check(data: &[u8]) {
    let src = String::from_utf8_lossy(data);
    let (file, parse_diags) = parse(&src);
    let _ = crate::diagnostic::render(&parse_diags, "fuzz.tsr", &src, false);
    for defines in [Vec::new(), vec![("N".to_string(), 3)]] {
        match check_file(&src, &defines, None) {
            Ok(kernels) => {
                // A success has no syntax error, one checked kernel per parsed kernel and
                // fully typed results.
                assert!(parse_diags.is_empty(), "checked despite syntax errors");
                assert_eq!(kernels.len(), file.kernels.len());
                for k in &kernels {
                    assert_eq!(k.returns.len(), k.results.len());
                    for (r, ty) in k.returns.iter().zip(&k.results) {
                        assert_eq!(&r.ty, ty);
                    }
                    let _ = k.to_string();
                }
            }
            Err(diags) => {
                assert!(has_errors(&diags), "failure without an error");
                let _ = crate::diagnostic::render(&diags, "fuzz.tsr", &src, true);
            }
        }
    }
    if let Some(k) = file.kernels.first() {
        let _ = check_file(&src, &[], Some(&k.name.name));
    }
}

/// The names of the kernels of a source file that parse, in file order.
pub fn kernel_names(src: &str) -> Vec<String> {
    parse(src)
        .0
        .kernels
        .into_iter()
        .map(|k| k.name.name)
        .collect()
}
