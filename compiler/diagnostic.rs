//! Diagnostics: user-facing errors as plain data, and their rendering.
//!
//! Every stage that finds a mistake in the user's program (the lexer, the parser, the
//! checker, and later lowering or the backend) returns `Diagnostic` values rather than
//! printing: a severity, a short stable code per error class (`E0101`), a message, labelled
//! source spans and free-form notes. `render` turns them into the familiar
//! `file:line:col` report with the source line underlined, using codespan-reporting. The
//! library never prints; the command line decides where the text goes.

use crate::frontend::typed::Span;
use codespan_reporting::diagnostic as cs;
use codespan_reporting::files::SimpleFile;
use codespan_reporting::term;
use codespan_reporting::term::termcolor::{Ansi, NoColor};

/// How serious a diagnostic is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Severity {
    /// The program is wrong; compilation stops.
    Error,
    /// Probably a mistake, but the program compiles.
    Warning,
    /// Extra information.
    Note,
}

/// Whether a label marks the place of the error or gives context.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum LabelStyle {
    /// The span the diagnostic is about (underlined with `^`).
    Primary,
    /// A related span, e.g. a first definition (underlined with `-`).
    Secondary,
}

/// A labelled source span.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Label {
    pub span: Span,
    pub message: String,
    pub style: LabelStyle,
}

/// One error, warning or note about the user's program.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Diagnostic {
    pub severity: Severity,
    /// A short stable identifier of the error class, e.g. `E0101`; empty if none.
    pub code: &'static str,
    pub message: String,
    pub labels: Vec<Label>,
    pub notes: Vec<String>,
}

impl Diagnostic {
    /// A new diagnostic without labels or notes.
    pub fn new(severity: Severity, code: &'static str, message: impl Into<String>) -> Diagnostic {
        Diagnostic {
            severity,
            code,
            message: message.into(),
            labels: Vec::new(),
            notes: Vec::new(),
        }
    }

    /// A new error.
    pub fn error(code: &'static str, message: impl Into<String>) -> Diagnostic {
        Diagnostic::new(Severity::Error, code, message)
    }

    /// A new warning.
    pub fn warning(code: &'static str, message: impl Into<String>) -> Diagnostic {
        Diagnostic::new(Severity::Warning, code, message)
    }

    /// Adds a primary label.
    pub fn with_primary(mut self, span: Span, message: impl Into<String>) -> Diagnostic {
        self.labels.push(Label {
            span,
            message: message.into(),
            style: LabelStyle::Primary,
        });
        self
    }

    /// Adds a secondary label.
    pub fn with_secondary(mut self, span: Span, message: impl Into<String>) -> Diagnostic {
        self.labels.push(Label {
            span,
            message: message.into(),
            style: LabelStyle::Secondary,
        });
        self
    }

    /// Adds a note printed below the source excerpt.
    pub fn with_note(mut self, note: impl Into<String>) -> Diagnostic {
        self.notes.push(note.into());
        self
    }

    /// True for errors.
    pub fn is_error(&self) -> bool {
        self.severity == Severity::Error
    }

    /// The span of the first primary label, if any: where the diagnostic points.
    pub fn primary_span(&self) -> Option<Span> {
        self.labels
            .iter()
            .find(|l| l.style == LabelStyle::Primary)
            .map(|l| l.span)
    }
}

/// True if any of the diagnostics is an error.
pub fn has_errors(diags: &[Diagnostic]) -> bool {
    diags.iter().any(Diagnostic::is_error)
}

/// Orders diagnostics by source position (those without a span first), keeping the order
/// of diagnostics at the same position.
pub fn sort_by_position(diags: &mut [Diagnostic]) {
    diags.sort_by_key(|d| d.primary_span().map(|s| (s.start, s.end)));
}

/// Moves a byte offset back onto a character boundary inside `source`.
fn clamp_offset(source: &str, offset: usize) -> usize {
    let mut at = offset.min(source.len());
    while at > 0 && !source.is_char_boundary(at) {
        at -= 1;
    }
    at
}

/// Converts one diagnostic to codespan's form, clamping spans into the source.
fn to_codespan(diag: &Diagnostic, source: &str) -> cs::Diagnostic<()> {
    let severity = match diag.severity {
        Severity::Error => cs::Severity::Error,
        Severity::Warning => cs::Severity::Warning,
        Severity::Note => cs::Severity::Note,
    };
    let labels = diag
        .labels
        .iter()
        .map(|l| {
            let start = clamp_offset(source, l.span.start as usize);
            let end = clamp_offset(source, l.span.end as usize).max(start);
            let label = match l.style {
                LabelStyle::Primary => cs::Label::primary((), start..end),
                LabelStyle::Secondary => cs::Label::secondary((), start..end),
            };
            label.with_message(l.message.clone())
        })
        .collect();
    let mut out = cs::Diagnostic::new(severity)
        .with_message(diag.message.clone())
        .with_labels(labels)
        .with_notes(diag.notes.clone());
    if !diag.code.is_empty() {
        out = out.with_code(diag.code);
    }
    out
}

/// Renders diagnostics as text: for each, `error[E0101]: message`, then
/// `--> file:line:col`, the source lines with the spans underlined and labelled, and the
/// notes. With `color`, ANSI escapes are used; without, the text is plain.
pub fn render(diags: &[Diagnostic], file_name: &str, source: &str, color: bool) -> String {
    let file = SimpleFile::new(file_name, source);
    let config = term::Config::default();
    let mut out = String::new();
    for diag in diags {
        let converted = to_codespan(diag, source);
        let mut buffer = Vec::new();
        let result = if color {
            let mut writer = Ansi::new(&mut buffer);
            term::emit(&mut writer, &config, &file, &converted)
        } else {
            let mut writer = NoColor::new(&mut buffer);
            term::emit(&mut writer, &config, &file, &converted)
        };
        match result {
            Ok(()) => out.push_str(&String::from_utf8_lossy(&buffer)),
            // Rendering only fails on spans outside the file, which clamping rules out;
            // should it happen anyway, the message still gets through.
            Err(_) => {
                let kind = match diag.severity {
                    Severity::Error => "error",
                    Severity::Warning => "warning",
                    Severity::Note => "note",
                };
                out.push_str(&format!("{kind}[{}]: {}\n", diag.code, diag.message));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_file_line_column_and_underline() {
        let src = "kernel k() -> f32[1] {\n    return $;\n}\n";
        let diag = Diagnostic::error("E0101", "unknown character `$`")
            .with_primary(Span::new(34, 35), "not part of the language");
        let text = render(&[diag], "k.tsr", src, false);
        assert!(
            text.contains("error[E0101]: unknown character `$`"),
            "{text}"
        );
        assert!(text.contains("k.tsr:2:12"), "{text}");
        assert!(text.contains("^ not part of the language"), "{text}");
    }

    #[test]
    fn clamps_spans_outside_the_source() {
        let src = "é";
        let diag = Diagnostic::error("E0000", "x").with_primary(Span::new(1, 99), "here");
        let text = render(&[diag], "f.tsr", src, true);
        assert!(text.contains("E0000"), "{text}");
    }
}
