//! `argmax`, `argmin` and `cumsum`: the reductions that yield positions and the scan.
//!
//! `argmax(x, axis=INT, keepdims=false)` and `argmin` give the `i32` position of the first
//! largest (smallest) element along one axis, NaN counting as the largest (smallest), as
//! NumPy does. `cumsum(x, axis=INT)` is the inclusive prefix sum along one axis, with the
//! operand's shape and dtype. All three take floats and `i32`, never `bool`, and one axis
//! only: a list of axes is an error of its own (`E0940`), since NumPy's positions and scans
//! are defined along one axis.

use super::{arg_kind, Checker};
use crate::diagnostic::Diagnostic;
use crate::frontend::ast::ArgValue;
use crate::frontend::codes;
use crate::frontend::typed::{Span, TExpr, TExprKind, TensorType};
use isa::Dtype;

impl Checker<'_> {
    /// The value of a `keepdims`-like keyword: `true` or `false`.
    pub(super) fn bool_keyword(&mut self, a: &ArgValue) -> Option<bool> {
        match a {
            ArgValue::Bool(b, _) => Some(*b),
            other => {
                self.error(
                    Diagnostic::error(
                        codes::WRONG_ARGUMENT_KIND,
                        format!(
                            "`keepdims` must be `true` or `false`, found {}",
                            arg_kind(other)
                        ),
                    )
                    .with_primary(other.span(), "expected `true` or `false`"),
                );
                None
            }
        }
    }

    /// The one axis of `argmax`, `argmin` or `cumsum` over `v`, normalised; an error for a
    /// list, a non-integer or an axis out of range.
    fn single_axis(&mut self, name: &str, v: &TExpr, a: &ArgValue) -> Option<usize> {
        if let ArgValue::List(_, list_span) = a {
            self.error(
                Diagnostic::error(
                    codes::SINGLE_AXIS_ONLY,
                    format!("`{name}` takes one axis, found a list"),
                )
                .with_primary(*list_span, "expected one integer axis")
                .with_note(format!(
                    "`{name}` works along a single axis; to treat several axes as one, \
                     `reshape` them together first"
                )),
            );
            return None;
        }
        let axis = self.int_keyword(name, "axis", a)?;
        self.axis(axis, v, a.span())
    }

    /// Checks the operand of the three calls: a tensor, not `bool`.
    fn scan_operand(&mut self, name: &str, v: &TExpr) -> bool {
        if !self.need_tensor(name, v) {
            return false;
        }
        if v.ty.dtype == Dtype::Bool {
            self.error(
                Diagnostic::error(
                    codes::BOOL_SCAN_OPERAND,
                    format!(
                        "`{name}` is not defined for `bool` values, found `{}`",
                        v.ty
                    ),
                )
                .with_primary(v.span, format!("this is `{}`", v.ty))
                .with_note(format!(
                    "convert first: `{name}(x as i32, axis=..)` treats `true` as 1"
                )),
            );
            return false;
        }
        true
    }

    /// `argmax(x, axis=.., keepdims=..)` (`max`) or `argmin`.
    pub(super) fn arg_reduce(
        &mut self,
        name: &str,
        max: bool,
        v: TExpr,
        axis_arg: &ArgValue,
        keepdims: bool,
        span: Span,
    ) -> Option<TExpr> {
        if !self.scan_operand(name, &v) {
            return None;
        }
        let axis = self.single_axis(name, &v, axis_arg)?;
        let shape = self.reduced_shape(name, &v, axis, keepdims, span)?;
        Some(TExpr {
            ty: TensorType {
                dtype: Dtype::I32,
                shape,
            },
            kind: TExprKind::ArgReduce {
                max,
                arg: Box::new(v),
                axis,
                keepdims,
            },
            span,
        })
    }

    /// `cumsum(x, axis=..)`.
    pub(super) fn cumsum(&mut self, v: TExpr, axis_arg: &ArgValue, span: Span) -> Option<TExpr> {
        if !self.scan_operand("cumsum", &v) {
            return None;
        }
        let axis = self.single_axis("cumsum", &v, axis_arg)?;
        Some(TExpr {
            ty: v.ty.clone(),
            kind: TExprKind::Cumsum {
                arg: Box::new(v),
                axis,
            },
            span,
        })
    }
}
