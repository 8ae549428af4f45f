//! Parsing: runs the lalrpop parser over the logos lexer and turns every lexical error,
//! recovered syntax error and too-deep expression into a diagnostic.
//!
//! Parsing never fails: it returns the tree of what could be parsed (kernels lost to error
//! recovery are left out) together with the diagnostics.

use crate::diagnostic::{sort_by_position, Diagnostic};
use crate::frontend::ast::{self, Expr, ExprKind, MAX_NESTING};
use crate::frontend::codes;
use crate::frontend::lexer::{LexError, Lexer, Token};
use crate::frontend::typed::Span;
use lalrpop_util::{ErrorRecovery, ParseError};

lalrpop_util::lalrpop_mod!(
    #[allow(clippy::all, clippy::pedantic, unused, missing_docs)]
    grammar,
    "/frontend/grammar.rs"
);

/// A syntax error the parser recovered from.
pub type Recovered<'input> = ErrorRecovery<usize, Token<'input>, LexError>;

/// State the grammar's actions share: the errors they recover from and the spans of
/// expressions nested too deeply.
#[derive(Default)]
pub struct ParseCtx<'input> {
    pub recovered: Vec<Recovered<'input>>,
    pub too_deep: Vec<Span>,
}

impl ParseCtx<'_> {
    /// Builds an expression node, replacing it by a childless placeholder when it is
    /// nested deeper than [`MAX_NESTING`]. The first placeholder of a chain is reported.
    pub fn expr(&mut self, kind: ExprKind, span: Span) -> Expr {
        let e = Expr::new(kind, span);
        if e.depth <= MAX_NESTING {
            return e;
        }
        if !e.contains_too_deep() {
            self.too_deep.push(span);
        }
        Expr {
            kind: ExprKind::TooDeep,
            span,
            depth: e.depth,
        }
    }

    /// Builds a binary expression node.
    pub fn binary(
        &mut self,
        op: ast::BinOp,
        op_span: Span,
        lhs: Expr,
        rhs: Expr,
        span: Span,
    ) -> Expr {
        self.expr(
            ExprKind::Binary {
                op,
                op_span,
                lhs: Box::new(lhs),
                rhs: Box::new(rhs),
            },
            span,
        )
    }
}

/// Describes the terminals the parser expected, in words, folding the usual groups.
fn describe_expected(expected: &[String]) -> String {
    let mut items: Vec<String> = Vec::new();
    let has = |t: &str| expected.iter().any(|e| e == t);
    let expression_starts = ["NAME", "INT", "FLOAT", "\"inf\"", "\"(\"", "\"-\""];
    let operators = ["\"+\"", "\"-\"", "\"*\"", "\"/\"", "\"@\""];
    let fold_expression = expression_starts.iter().all(|t| has(t));
    // The comparisons are operators too; after an expression the parser may expect them
    // without `+` (an LR state that has already reduced a sum), which still says "an
    // operator".
    let comparisons = ["\"<\"", "\">\"", "\"<=\"", "\">=\"", "\"==\"", "\"!=\""];
    let fold_comparisons = comparisons.iter().all(|t| has(t));
    let fold_operators = operators.iter().all(|t| has(t)) || fold_comparisons;
    if fold_expression {
        items.push("an expression".to_string());
    }
    if fold_operators {
        items.push("an operator".to_string());
    }
    for e in expected {
        if fold_expression && expression_starts.contains(&e.as_str()) {
            continue;
        }
        if fold_operators && (operators.contains(&e.as_str()) || comparisons.contains(&e.as_str()))
        {
            continue;
        }
        let text = match e.as_str() {
            "NAME" => "a name".to_string(),
            "INT" => "an integer".to_string(),
            "FLOAT" => "a number".to_string(),
            "DTYPE" => "a dtype".to_string(),
            quoted => format!("`{}`", quoted.trim_matches('"')),
        };
        if !items.contains(&text) {
            items.push(text);
        }
    }
    match items.len() {
        0 => "nothing more".to_string(),
        1 => items.remove(0),
        _ => {
            let last = items.pop().unwrap_or_default();
            format!("{} or {}", items.join(", "), last)
        }
    }
}

/// The note for a `!` that does not start `!=`.
fn not_note() -> String {
    "`!` is only part of `!=`: negate a `bool` tensor with `logical_not(x)`".to_string()
}

/// The note for a syntax error at byte `at` that follows a `//` comment written right after
/// an expression (`D // 2`): `//` starts a comment, which silently dropped the rest of that
/// line. Looks back from `at` over blank and comment-only lines to the last line with code.
pub fn floor_division_note(src: &str, at: usize) -> Option<String> {
    let head = src.get(..at)?;
    let mut line_no = head.matches('\n').count() + 1;
    for line in head.rsplit('\n') {
        let trimmed = line.trim();
        if trimmed.is_empty() || trimmed.starts_with("//") {
            line_no -= 1;
            continue;
        }
        let code = &line[..line.find("//")?];
        let ends_expression = code
            .trim_end()
            .ends_with(|c: char| c.is_ascii_alphanumeric() || c == '_' || c == ')' || c == ']');
        return ends_expression.then(|| {
            format!(
                "`//` on line {line_no} starts a comment, which dropped the rest of that line; \
                 to divide, write `/` (division of sizes is exact: `D / 2`)"
            )
        });
    }
    None
}

/// Turns one recovered syntax error into a diagnostic (`None` for an error token the
/// lexer already reported). `src` is the source text, for the notes on syntax the
/// language does not have.
fn syntax_diagnostic(
    error: &ParseError<usize, Token<'_>, LexError>,
    src: &str,
) -> Option<Diagnostic> {
    match error {
        ParseError::UnrecognizedToken {
            token: (_, Token::Error, _),
            ..
        } => None,
        ParseError::UnrecognizedToken {
            token: (l, token, r),
            expected,
        } => {
            let note = floor_division_note(src, *l);
            let described = describe_expected(expected);
            let mut diag = Diagnostic::error(
                codes::UNEXPECTED_TOKEN,
                format!("expected {described}, found {token}"),
            )
            .with_primary(Span::new(*l, *r), format!("unexpected {token}"));
            if let Some(note) = note {
                diag = diag.with_note(note);
            }
            Some(diag)
        }
        ParseError::UnrecognizedEof { location, expected } => {
            let expected = describe_expected(expected);
            let diag = Diagnostic::error(
                codes::UNEXPECTED_EOF,
                format!("unexpected end of file: expected {expected}"),
            )
            .with_primary(Span::new(*location, *location), "the file ends here");
            Some(match floor_division_note(src, *location) {
                Some(note) => diag.with_note(note),
                None => diag,
            })
        }
        ParseError::ExtraToken {
            token: (l, token, r),
        } => Some(
            Diagnostic::error(
                codes::UNEXPECTED_TOKEN,
                format!("expected the end of the file, found {token}"),
            )
            .with_primary(Span::new(*l, *r), format!("unexpected {token}")),
        ),
        ParseError::InvalidToken { location } => Some(
            Diagnostic::error(codes::UNKNOWN_CHARACTER, "invalid token")
                .with_primary(Span::new(*location, *location), "here"),
        ),
        ParseError::User { error } => Some(lex_diagnostic(error)),
    }
}

/// Turns a lexical error into a diagnostic.
fn lex_diagnostic(error: &LexError) -> Diagnostic {
    match error {
        LexError::UnknownCharacter { text, span } => {
            let diag = Diagnostic::error(codes::UNKNOWN_CHARACTER, error.to_string())
                .with_primary(*span, "not part of the kernel language");
            // `!=` is a token of its own, so a `!` here is a C-style negation.
            if text.starts_with('!') {
                diag.with_note(not_note())
            } else {
                diag
            }
        }
        LexError::MalformedNumber { span, .. } => {
            Diagnostic::error(codes::MALFORMED_NUMBER, error.to_string())
                .with_primary(*span, "not a valid number")
                .with_note("numbers are written `128`, `0.5`, `1e-6` or `2.5E+3`")
        }
    }
}

/// Parses a source file into its syntax tree and the diagnostics of every lexical and
/// syntax error found. Never fails and never panics.
pub fn parse(src: &str) -> (ast::File, Vec<Diagnostic>) {
    let mut lex_errors = Vec::new();
    let mut ctx = ParseCtx::default();
    let mut diags = Vec::new();
    let result = {
        let lexer = Lexer::new(src, &mut lex_errors);
        grammar::FileParser::new().parse(&mut ctx, lexer)
    };
    let file = match result {
        Ok(file) => file,
        Err(error) => {
            diags.extend(syntax_diagnostic(&error, src));
            ast::File {
                kernels: Vec::new(),
                span: Span::new(0, src.len()),
            }
        }
    };
    diags.extend(lex_errors.iter().map(lex_diagnostic));
    for recovered in &ctx.recovered {
        diags.extend(syntax_diagnostic(&recovered.error, src));
    }
    for span in &ctx.too_deep {
        diags.push(
            Diagnostic::error(
                codes::NESTED_TOO_DEEPLY,
                format!("expression nested too deeply (limit {MAX_NESTING})"),
            )
            .with_primary(
                Span::new(span.start as usize, span.start as usize + 1),
                format!("this expression is nested more than {MAX_NESTING} levels deep"),
            )
            .with_note("split it with `let` statements"),
        );
    }
    sort_by_position(&mut diags);
    (file, diags)
}
