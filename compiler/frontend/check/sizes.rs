//! Integer expressions of sizes: wherever the language expects an integer (a dim of a type,
//! a `reshape` dim, an axis, `k`, the items of a keyword list, slice bounds and indices), an
//! expression of literals and sizes with `+ - * /` and parentheses may stand. `/` is exact
//! division, and every value (intermediate ones too) must stay within 2^48 in magnitude, so
//! that the i128 arithmetic here never overflows and no dim can wrap.

use super::{Binding, Checker, MAX_ELEMS};
use crate::diagnostic::Diagnostic;
use crate::frontend::ast::{self, BinOp, ExprKind};
use crate::frontend::codes;
use crate::frontend::typed::Span;

/// Why an expression has no integer value.
pub(super) enum IntError {
    /// It is no integer expression of sizes: the span and what was found there. Not yet
    /// reported, so that the caller can say what it expected.
    NotInteger(Span, String),
    /// An error inside it is already reported.
    Reported,
}

impl Checker<'_> {
    /// The value of an integer expression, reporting every error (`what` names the place in
    /// messages, e.g. "a dim", "`axis` of `sum`").
    pub(super) fn int_expr(&mut self, e: &ast::Expr, what: &str) -> Option<i64> {
        match self.int_eval(e) {
            Ok(v) => Some(v),
            Err(IntError::Reported) => None,
            Err(IntError::NotInteger(span, found)) => {
                self.report_not_integer(span, &found, what);
                None
            }
        }
    }

    /// Reports an expression that is not an integer expression of sizes.
    pub(super) fn report_not_integer(&mut self, span: Span, found: &str, what: &str) {
        self.error(
            Diagnostic::error(
                codes::NOT_AN_INTEGER,
                format!("{what} must be an integer expression of literals and sizes, found {found}"),
            )
            .with_primary(span, "expected an integer such as `64`, `D` or `D / 2`")
            .with_note("integer expressions combine literals and sizes with `+`, `-`, `*`, `/` and parentheses"),
        );
    }

    /// Evaluates an integer expression of literals and sizes.
    pub(super) fn int_eval(&mut self, e: &ast::Expr) -> Result<i64, IntError> {
        let value: i128 = match &e.kind {
            ExprKind::Int(lit) => match lit.value {
                Some(v) => i128::from(v),
                None => {
                    self.report_int_overflow(e.span, &lit.text);
                    return Err(IntError::Reported);
                }
            },
            ExprKind::Name(n) => match self.names.get(&n.name).map(|e| e.binding.clone()) {
                Some(Binding::Size(Some(v))) => i128::from(v),
                Some(Binding::Size(None)) | Some(Binding::Poisoned) => {
                    return Err(IntError::Reported)
                }
                Some(_) => {
                    return Err(IntError::NotInteger(
                        n.span,
                        format!("`{}`, a value, not a size", n.name),
                    ))
                }
                None => {
                    self.error(
                        Diagnostic::error(
                            codes::UNBOUND_SIZE,
                            format!("unknown size `{}`", n.name),
                        )
                        .with_primary(n.span, "not a size of this kernel")
                        .with_note(format!(
                            "declare it after the kernel's name: `kernel f<{} = 128>(...)`",
                            n.name
                        )),
                    );
                    return Err(IntError::Reported);
                }
            },
            ExprKind::Paren(inner) => i128::from(self.int_eval(inner)?),
            ExprKind::Neg(inner) => -i128::from(self.int_eval(inner)?),
            ExprKind::Binary {
                op,
                op_span,
                lhs,
                rhs,
            } => {
                if *op == BinOp::Matmul {
                    return Err(IntError::NotInteger(*op_span, "`@`".to_string()));
                }
                let a = self.int_eval(lhs);
                let b = self.int_eval(rhs);
                let (a, b) = (i128::from(a?), i128::from(b?));
                match op {
                    BinOp::Add => a + b,
                    BinOp::Sub => a - b,
                    BinOp::Mul => a * b,
                    _ => {
                        if b == 0 || a % b != 0 {
                            self.report_inexact(e, lhs, rhs, a, b);
                            return Err(IntError::Reported);
                        }
                        a / b
                    }
                }
            }
            ExprKind::Float(_) | ExprKind::Inf => {
                return Err(IntError::NotInteger(e.span, "a float".to_string()))
            }
            ExprKind::TooDeep => return Err(IntError::Reported),
            ExprKind::Call { .. } | ExprKind::Cast { .. } | ExprKind::Index { .. } => {
                return Err(IntError::NotInteger(
                    e.span,
                    "a tensor expression".to_string(),
                ))
            }
        };
        if value.unsigned_abs() > u128::from(MAX_ELEMS) {
            self.report_int_overflow(e.span, &value.to_string());
            return Err(IntError::Reported);
        }
        Ok(value as i64)
    }

    fn report_int_overflow(&mut self, span: Span, text: &str) {
        self.error(
            Diagnostic::error(
                codes::INTEGER_OVERFLOW,
                format!("integer expression too large: {text}"),
            )
            .with_primary(
                span,
                format!("integer expressions are limited to 2^48 = {MAX_ELEMS} in magnitude"),
            ),
        );
    }

    /// Reports `a / b` that leaves a remainder, naming the values of the sizes involved.
    fn report_inexact(
        &mut self,
        e: &ast::Expr,
        lhs: &ast::Expr,
        rhs: &ast::Expr,
        a: i128,
        b: i128,
    ) {
        let text = |x: &ast::Expr| {
            self.src
                .get(x.span.start as usize..x.span.end as usize)
                .unwrap_or("")
                .to_string()
        };
        let mut sizes: Vec<String> = Vec::new();
        collect_sizes(e, &mut |name| {
            if let Some(Binding::Size(Some(v))) = self.names.get(name).map(|e| &e.binding) {
                let item = format!("{name} = {v}");
                if !sizes.contains(&item) {
                    sizes.push(item);
                }
            }
        });
        let with = if sizes.is_empty() {
            String::new()
        } else {
            format!(" with {}", sizes.join(", "))
        };
        let (l, r) = (text(lhs), text(rhs));
        let detail = if b == 0 {
            format!("{a} / 0 divides by zero")
        } else {
            format!("{a} / {b} leaves the remainder {}", a % b)
        };
        self.error(
            Diagnostic::error(
                codes::INEXACT_DIVISION,
                format!("`{l} / {r}`{with} is not an exact division: {detail}"),
            )
            .with_primary(e.span, detail)
            .with_note(
                "`/` of sizes is exact division; choose sizes that divide, or write the value",
            ),
        );
    }
}

/// Calls `f` with every name in an integer expression.
fn collect_sizes(e: &ast::Expr, f: &mut impl FnMut(&str)) {
    match &e.kind {
        ExprKind::Name(n) => f(&n.name),
        ExprKind::Paren(i) | ExprKind::Neg(i) => collect_sizes(i, f),
        ExprKind::Binary { lhs, rhs, .. } => {
            collect_sizes(lhs, f);
            collect_sizes(rhs, f);
        }
        _ => {}
    }
}
