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
    let kernels = check::check_kernels(&file, defines, kernel, !diags.is_empty(), &mut diags);
    if has_errors(&diags) {
        sort_by_position(&mut diags);
        Err(diags)
    } else {
        Ok(kernels)
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
