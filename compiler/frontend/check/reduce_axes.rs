//! Reductions over a list of axes, `sum(x, axis=[1, 2], keepdims=true)`.
//!
//! The language accumulates the terms in row-major order of the reduced elements. The
//! checker expresses such a reduction with the one-axis operations the rest of the compiler
//! already knows, in an order that is exactly that one: the kept axes are moved in front of
//! the reduced ones (a `transpose` that keeps each group's order; none when they are
//! already there), the reduced axes are merged into one last axis (a row-major `reshape`,
//! which lists the reduced elements in row-major order), and the one-axis reduction runs
//! along that axis (`mean` divides by its length, the product of the reduced dims). With
//! `keepdims` a last `reshape` puts back a 1 for every reduced axis. No new IR operation is
//! needed, and the reference evaluator, fusion and tiling see reductions they handle.

use super::{Checker, ListItem};
use crate::diagnostic::Diagnostic;
use crate::frontend::codes;
use crate::frontend::typed::{ReduceFn, Span, TExpr, TExprKind, TensorType};

impl Checker<'_> {
    /// The axes of `axis=[...]` for `v`, normalised, in increasing order; an error (and
    /// `None`) for an item that is not an integer, an axis out of range, a repeated axis or
    /// an empty list.
    pub(super) fn axis_list(
        &mut self,
        name: &str,
        items: &[ListItem],
        v: &TExpr,
        list_span: Span,
    ) -> Option<Vec<usize>> {
        if items.is_empty() {
            self.error(
                Diagnostic::error(
                    codes::WRONG_ARGUMENT_KIND,
                    format!("`axis` of `{name}` is an empty list"),
                )
                .with_primary(list_span, "expected at least one axis, such as `[1, 2]`"),
            );
            return None;
        }
        let mut axes = Vec::new();
        for item in items {
            let (value, span) = match item {
                ListItem::Int {
                    negative,
                    lit,
                    span,
                } => (
                    lit.value.and_then(|x| i64::try_from(x).ok()).map(|x| {
                        if *negative {
                            -x
                        } else {
                            x
                        }
                    }),
                    *span,
                ),
                ListItem::Expr(e) => (Some(self.int_expr(e, "an axis")?), e.span),
                ListItem::Size(n) => {
                    self.error(
                        Diagnostic::error(
                            codes::WRONG_ARGUMENT_KIND,
                            format!(
                                "`axis` of `{name}` holds axes (integers), found the name `{}`",
                                n.name
                            ),
                        )
                        .with_primary(n.span, "expected an integer"),
                    );
                    return None;
                }
            };
            let Some(value) = value else {
                self.error(
                    Diagnostic::error(
                        codes::WRONG_ARGUMENT_KIND,
                        format!("`axis` of `{name}` holds an integer too large"),
                    )
                    .with_primary(span, "expected an axis"),
                );
                return None;
            };
            let axis = self.axis(value, v, span)?;
            if axes.contains(&axis) {
                self.error(
                    Diagnostic::error(
                        codes::AXIS_OUT_OF_RANGE,
                        format!("axis {axis} of `{}` is listed twice in `{name}`", v.ty),
                    )
                    .with_primary(span, "repeated axis")
                    .with_note("each axis may be reduced once"),
                );
                return None;
            }
            axes.push(axis);
        }
        axes.sort_unstable();
        Some(axes)
    }

    /// A reduction of `v` over `axes` (normalised, increasing, at least two), as a
    /// transpose, a reshape and a one-axis reduction (see the module documentation).
    pub(super) fn reduce_axes(
        &mut self,
        name: &str,
        f: ReduceFn,
        v: TExpr,
        axes: &[usize],
        keepdims: bool,
        span: Span,
    ) -> Option<TExpr> {
        let shape = v.ty.shape.clone();
        let dtype = v.ty.dtype;
        let kept: Vec<usize> = (0..shape.len()).filter(|a| !axes.contains(a)).collect();
        if kept.is_empty() && !keepdims {
            self.error(
                Diagnostic::error(
                    codes::OPERATION_RANK,
                    format!("`{name}` over every axis of `{}` would give a scalar", v.ty),
                )
                .with_primary(span, "this would have rank 0")
                .with_note("keep the axes with `keepdims=true`"),
            );
            return None;
        }
        let typed = |kind: TExprKind, shape: Vec<u64>| TExpr {
            kind,
            ty: TensorType { dtype, shape },
            span,
        };
        let perm: Vec<usize> = kept.iter().chain(axes).copied().collect();
        let mut x = v;
        if perm.iter().enumerate().any(|(i, &p)| i != p) {
            let s = perm.iter().map(|&p| shape[p]).collect();
            x = typed(TExprKind::Transpose(Box::new(x), perm), s);
        }
        let len: u64 = axes.iter().map(|&a| shape[a]).product();
        let mut merged: Vec<u64> = kept.iter().map(|&a| shape[a]).collect();
        merged.push(len);
        x = typed(TExprKind::Reshape(Box::new(x)), merged.clone());
        let axis = merged.len() - 1;
        let mut reduced = merged;
        let one_axis_keepdims = kept.is_empty();
        if one_axis_keepdims {
            reduced[axis] = 1;
        } else {
            reduced.pop();
        }
        x = typed(
            TExprKind::Reduce {
                func: f,
                arg: Box::new(x),
                axis,
                keepdims: one_axis_keepdims,
            },
            reduced,
        );
        if keepdims {
            let s = shape
                .iter()
                .enumerate()
                .map(|(i, &d)| if axes.contains(&i) { 1 } else { d })
                .collect();
            x = typed(TExprKind::Reshape(Box::new(x)), s);
        }
        Some(x)
    }
}
