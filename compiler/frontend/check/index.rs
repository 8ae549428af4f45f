//! Indexing and joining at compile-time positions: `x[i, a:b:c, ...]` with NumPy's
//! semantics, `concat`, `pad` and `broadcast_to`. Every position is an integer expression of
//! sizes, so each result has a concrete shape; an integer index out of range is an error,
//! slice bounds clamp as NumPy's do.

use super::{describe, is_scalar, promote, Checker, MAX_RANK};
use crate::diagnostic::Diagnostic;
use crate::frontend::ast::{ArgValue, IndexItem};
use crate::frontend::codes;
use crate::frontend::typed::{SliceAxis, Span, TExpr, TExprKind, TensorType};

/// NumPy's resolution of one slice over an axis of `n` elements: the first position and
/// the number of elements (`PySlice_AdjustIndices`).
pub fn resolve_slice(n: i64, start: Option<i64>, stop: Option<i64>, step: i64) -> (i64, i64) {
    let adjust = |v: i64, lo: i64, hi: i64| {
        let v = if v < 0 { v + n } else { v };
        v.clamp(lo, hi)
    };
    if step > 0 {
        let start = start.map_or(0, |s| adjust(s, 0, n));
        let stop = stop.map_or(n, |s| adjust(s, 0, n));
        let count = if stop > start {
            (stop - start + step - 1) / step
        } else {
            0
        };
        (start, count)
    } else {
        let start = start.map_or(n - 1, |s| adjust(s, -1, n - 1));
        let stop = stop.map_or(-1, |s| adjust(s, -1, n - 1));
        let count = if start > stop {
            (start - stop + (-step) - 1) / (-step)
        } else {
            0
        };
        (start, count)
    }
}

impl Checker<'_> {
    /// `v[items]`.
    pub(super) fn index(&mut self, v: TExpr, items: &[IndexItem], span: Span) -> Option<TExpr> {
        if is_scalar(&v) {
            self.error(
                Diagnostic::error(codes::SCALAR_OPERAND, "a scalar cannot be indexed")
                    .with_primary(v.span, "this is a scalar"),
            );
            return None;
        }
        let rank = v.ty.shape.len();
        let mut ellipsis: Option<Span> = None;
        for item in items {
            if let IndexItem::Ellipsis(s) = item {
                if let Some(first) = ellipsis {
                    self.error(
                        Diagnostic::error(
                            codes::DUPLICATE_ELLIPSIS,
                            "an index may use `...` only once",
                        )
                        .with_primary(*s, "second `...`")
                        .with_secondary(first, "first `...`")
                        .with_note("`...` stands for as many `:` as the rank needs; one is enough"),
                    );
                    return None;
                }
                ellipsis = Some(*s);
            }
        }
        let explicit = items.len() - usize::from(ellipsis.is_some());
        if explicit > rank {
            self.error(
                Diagnostic::error(
                    codes::TOO_MANY_INDICES,
                    format!("too many indices: {explicit} for `{}` of rank {rank}", v.ty),
                )
                .with_primary(span, format!("{explicit} indices"))
                .with_secondary(v.span, format!("this is `{}`", v.ty))
                .with_note(format!(
                    "give at most {rank} indices (`...` and omitted trailing ones count as `:`)"
                )),
            );
            return None;
        }
        // One item per axis: `...` expands to as many `:` as needed, missing trailing
        // items are `:` (None).
        let mut per_axis: Vec<Option<&IndexItem>> = Vec::with_capacity(rank);
        for item in items {
            if matches!(item, IndexItem::Ellipsis(_)) {
                per_axis.extend(std::iter::repeat_n(None, rank - explicit));
            } else {
                per_axis.push(Some(item));
            }
        }
        per_axis.resize(rank, None);

        let mut axes = Vec::with_capacity(rank);
        let mut shape = Vec::new();
        let mut ok = true;
        for (axis, item) in per_axis.iter().enumerate() {
            let n = v.ty.shape[axis] as i64;
            match item {
                None | Some(IndexItem::Ellipsis(_)) => {
                    axes.push(SliceAxis {
                        start: 0,
                        step: 1,
                        keep: true,
                    });
                    shape.push(n as u64);
                }
                Some(IndexItem::Index(e)) => {
                    let Some(i) = self.int_expr(e, "an index") else {
                        ok = false;
                        continue;
                    };
                    if i < -n || i >= n {
                        self.error(
                            Diagnostic::error(
                                codes::INDEX_OUT_OF_RANGE,
                                format!(
                                    "index {i} is out of range for axis {axis} of `{}`, which has {n} elements",
                                    v.ty
                                ),
                            )
                            .with_primary(e.span, format!("expected an index from {} to {}", -n, n - 1))
                            .with_secondary(v.span, format!("this is `{}`", v.ty))
                            .with_note("an integer index must lie in [-n, n); a slice such as `a:b` clamps instead"),
                        );
                        ok = false;
                        continue;
                    }
                    axes.push(SliceAxis {
                        start: if i < 0 { i + n } else { i } as u64,
                        step: 1,
                        keep: false,
                    });
                }
                Some(IndexItem::Slice {
                    start,
                    stop,
                    step,
                    span: item_span,
                }) => {
                    let mut part = |e: &Option<crate::frontend::ast::Expr>, what: &str| match e {
                        None => Some(None),
                        Some(e) => self.int_expr(e, what).map(Some),
                    };
                    let (a, b, c) = (
                        part(start, "a slice start"),
                        part(stop, "a slice stop"),
                        part(step, "a slice step"),
                    );
                    let (Some(a), Some(b), Some(c)) = (a, b, c) else {
                        ok = false;
                        continue;
                    };
                    let c = c.unwrap_or(1);
                    if c == 0 {
                        let at = step.as_ref().map_or(*item_span, |e| e.span);
                        self.error(
                            Diagnostic::error(codes::ZERO_STEP, "a slice step cannot be zero")
                                .with_primary(at, "this step is 0")
                                .with_note("use a positive step, or a negative one to go backwards (`::-1`)"),
                        );
                        ok = false;
                        continue;
                    }
                    let (first, count) = resolve_slice(n, a, b, c);
                    if count == 0 {
                        self.error(
                            Diagnostic::error(
                                codes::ZERO_DIM,
                                format!(
                                    "the slice selects no element of axis {axis} of `{}`, which has {n} elements",
                                    v.ty
                                ),
                            )
                            .with_primary(*item_span, "this slice is empty")
                            .with_secondary(v.span, format!("this is `{}`", v.ty))
                            .with_note("every dim must be at least 1"),
                        );
                        ok = false;
                        continue;
                    }
                    axes.push(SliceAxis {
                        start: first as u64,
                        step: c,
                        keep: true,
                    });
                    shape.push(count as u64);
                }
            }
        }
        if !ok {
            return None;
        }
        if shape.is_empty() {
            self.error(
                Diagnostic::error(
                    codes::INDEX_DROPS_EVERY_AXIS,
                    format!("indexing every axis of `{}` away would give a scalar", v.ty),
                )
                .with_primary(span, "this would have rank 0")
                .with_note("keep an axis with a slice of one element, as in `x[3:4]`"),
            );
            return None;
        }
        let identity = axes
            .iter()
            .zip(&v.ty.shape)
            .all(|(a, _)| a.keep && a.start == 0 && a.step == 1)
            && shape == v.ty.shape;
        if identity {
            return Some(TExpr { span, ..v });
        }
        Some(TExpr {
            ty: TensorType {
                dtype: v.ty.dtype,
                shape,
            },
            kind: TExprKind::Slice(Box::new(v), axes),
            span,
        })
    }

    /// A list of integer expressions (`[0, D / 2]`).
    pub(super) fn int_list(&mut self, arg: &ArgValue, what: &str) -> Option<Vec<i64>> {
        let ArgValue::List(items, _) = arg else {
            self.error(
                Diagnostic::error(
                    codes::WRONG_ARGUMENT_KIND,
                    format!(
                        "{what} must be a list of integers, found {}",
                        super::arg_kind(arg)
                    ),
                )
                .with_primary(arg.span(), "expected a list such as `[0, 1]`"),
            );
            return None;
        };
        let mut out = Vec::with_capacity(items.len());
        let mut ok = true;
        for item in items {
            match self.int_expr(&item.to_expr(), what) {
                Some(v) => out.push(v),
                None => ok = false,
            }
        }
        ok.then_some(out)
    }

    /// `concat([a, b, ...], axis=INT)`.
    pub(super) fn concat(
        &mut self,
        parts: &ArgValue,
        axis: Option<&ArgValue>,
        span: Span,
    ) -> Option<TExpr> {
        let ArgValue::List(items, list_span) = parts else {
            self.error(
                Diagnostic::error(
                    codes::WRONG_ARGUMENT_KIND,
                    format!(
                        "`concat` takes a list of tensors, found {}",
                        super::arg_kind(parts)
                    ),
                )
                .with_primary(parts.span(), "expected a list such as `[a, b]`"),
            );
            return None;
        };
        let mut values = Vec::new();
        let mut ok = true;
        for item in items {
            match self.expr(&item.to_expr()) {
                Some(v) if is_scalar(&v) => {
                    self.error(
                        Diagnostic::error(
                            codes::SCALAR_OPERAND,
                            "`concat` needs tensors, found a scalar",
                        )
                        .with_primary(v.span, "this is a scalar"),
                    );
                    ok = false;
                }
                Some(v) => values.push(v),
                None => ok = false,
            }
        }
        let axis = match axis {
            None => 0,
            Some(a) => self.int_keyword("concat", "axis", a)?,
        };
        if !ok {
            return None;
        }
        let Some(first) = values.first() else {
            self.error(
                Diagnostic::error(
                    codes::WRONG_ARGUMENT_COUNT,
                    "`concat` needs at least one tensor",
                )
                .with_primary(*list_span, "an empty list"),
            );
            return None;
        };
        let first = first.clone();
        let axis = self.axis(axis, &first, span)?;
        let rank = first.ty.shape.len();
        let mut shape = first.ty.shape.clone();
        shape[axis] = 0;
        let mut dtype = first.ty.dtype;
        for v in &values {
            let same = v.ty.shape.len() == rank
                && (0..rank).all(|i| i == axis || v.ty.shape[i] == first.ty.shape[i]);
            if !same {
                let detail = if v.ty.shape.len() != rank {
                    format!("rank {} against rank {rank}", v.ty.shape.len())
                } else {
                    format!("the dims must be equal except along axis {axis}")
                };
                self.error(
                    Diagnostic::error(
                        codes::CONCAT_MISMATCH,
                        format!(
                            "`concat` along axis {axis} cannot join `{}` and `{}`: {detail}",
                            first.ty, v.ty
                        ),
                    )
                    .with_primary(v.span, format!("this is {}", describe(v)))
                    .with_secondary(first.span, format!("the first part is `{}`", first.ty))
                    .with_note("every part needs the first part's rank and its dims on every other axis; reshape or slice the parts to match"),
                );
                return None;
            }
            shape[axis] += v.ty.shape[axis];
            dtype = promote(dtype, v.ty.dtype);
        }
        if !self.check_elems(&shape, || "the result of `concat`".to_string(), span) {
            return None;
        }
        if values.len() == 1 {
            return values.pop();
        }
        // Parts of another dtype are converted first, so the operation moves data only.
        let values: Vec<TExpr> = values
            .into_iter()
            .map(|v| {
                if v.ty.dtype == dtype {
                    v
                } else {
                    TExpr {
                        ty: TensorType {
                            dtype,
                            shape: v.ty.shape.clone(),
                        },
                        span: v.span,
                        kind: TExprKind::Cast(Box::new(v)),
                    }
                }
            })
            .collect();
        Some(TExpr {
            ty: TensorType { dtype, shape },
            kind: TExprKind::Concat(values, axis),
            span,
        })
    }

    /// `pad(x, before=[...], after=[...], value=0)`.
    pub(super) fn pad(
        &mut self,
        v: TExpr,
        before: Option<&ArgValue>,
        after: Option<&ArgValue>,
        value: Option<&ArgValue>,
        span: Span,
    ) -> Option<TExpr> {
        if !self.need_tensor("pad", &v) {
            return None;
        }
        let rank = v.ty.shape.len();
        let mut widths = Vec::new();
        for (name, arg) in [("before", before), ("after", after)] {
            let list = match arg {
                None => vec![0; rank],
                Some(a) => self.int_list(a, &format!("`{name}` of `pad`"))?,
            };
            let bad = list.len() != rank || list.iter().any(|&w| w < 0);
            if bad {
                let detail = if list.len() != rank {
                    format!("{} widths for {rank} axes", list.len())
                } else {
                    "a width is negative".to_string()
                };
                self.error(
                    Diagnostic::error(
                        codes::BAD_PAD_WIDTHS,
                        format!(
                            "`{name}` of `pad` needs one non-negative width per axis of `{}`: {detail}",
                            v.ty
                        ),
                    )
                    .with_primary(arg.map_or(span, ArgValue::span), detail)
                    .with_secondary(v.span, format!("this is `{}`", v.ty))
                    .with_note(format!(
                        "write one width of at least 0 per axis, e.g. `{name}=[{}]`",
                        vec!["0"; rank].join(", ")
                    )),
                );
                return None;
            }
            widths.push(list.into_iter().map(|w| w as u64).collect::<Vec<u64>>());
        }
        let after = widths.pop()?;
        let before = widths.pop()?;
        let fill = self.pad_value(value, &v)?;
        let mut shape = Vec::with_capacity(rank);
        for i in 0..rank {
            let d = v.ty.shape[i]
                .checked_add(before[i])
                .and_then(|d| d.checked_add(after[i]));
            match d {
                Some(d) if d <= super::MAX_ELEMS => shape.push(d),
                _ => {
                    self.error(
                        Diagnostic::error(
                            codes::DIM_OVERFLOW,
                            format!("the padded axis {i} of `{}` is too large", v.ty),
                        )
                        .with_primary(
                            span,
                            format!("dims are limited to 2^48 = {}", super::MAX_ELEMS),
                        ),
                    );
                    return None;
                }
            }
        }
        if !self.check_elems(&shape, || "the result of `pad`".to_string(), span) {
            return None;
        }
        if shape == v.ty.shape {
            return Some(TExpr { span, ..v });
        }
        let value = fill;
        Some(TExpr {
            ty: TensorType {
                dtype: v.ty.dtype,
                shape,
            },
            kind: TExprKind::Pad {
                arg: Box::new(v),
                before,
                after,
                value,
            },
            span,
        })
    }

    /// `broadcast_to(x, [d0, ...])`.
    pub(super) fn broadcast_to(
        &mut self,
        v: TExpr,
        target: &ArgValue,
        span: Span,
    ) -> Option<TExpr> {
        let dims = self.int_list(target, "the shape of `broadcast_to`")?;
        if !self.need_tensor("broadcast_to", &v) {
            return None;
        }
        if dims.is_empty() || dims.len() > MAX_RANK || dims.iter().any(|&d| d < 1) {
            self.error(
                Diagnostic::error(
                    codes::BAD_BROADCAST_TARGET,
                    format!(
                        "`broadcast_to` needs 1 to {MAX_RANK} dims of at least 1, found {dims:?}"
                    ),
                )
                .with_primary(target.span(), "not a valid shape"),
            );
            return None;
        }
        let shape: Vec<u64> = dims.iter().map(|&d| d as u64).collect();
        if super::broadcast(&v.ty.shape, &shape).as_deref() != Some(shape.as_slice()) {
            self.error(
                Diagnostic::error(
                    codes::BAD_BROADCAST_TARGET,
                    format!(
                        "`{}` cannot be broadcast to {}",
                        v.ty,
                        super::shape_text(&shape)
                    ),
                )
                .with_primary(target.span(), "the target shape")
                .with_secondary(v.span, format!("this is `{}`", v.ty))
                .with_note("aligned from the last axis, each dim of the operand must equal the target's or be 1, and the target may not have fewer axes"),
            );
            return None;
        }
        if !self.check_elems(&shape, || "the result of `broadcast_to`".to_string(), span) {
            return None;
        }
        if shape == v.ty.shape {
            return Some(TExpr { span, ..v });
        }
        Some(TExpr {
            ty: TensorType {
                dtype: v.ty.dtype,
                shape,
            },
            kind: TExprKind::BroadcastTo(Box::new(v)),
            span,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::resolve_slice;

    /// Expected values from Python: `len(range(*slice(a, b, c).indices(n)))` and the first
    /// element of that range.
    #[test]
    fn slices_resolve_as_numpy() {
        for (n, a, b, c, want) in [
            (10, None, None, 1, (0, 10)),
            (10, Some(2), Some(8), 3, (2, 2)),
            (10, None, None, -1, (9, 10)),
            (10, Some(-3), None, 1, (7, 3)),
            (10, None, Some(-3), 1, (0, 7)),
            (10, Some(8), Some(2), -2, (8, 3)),
            (10, Some(100), None, -1, (9, 10)),
            (10, None, Some(1000), 1, (0, 10)),
            (10, Some(-100), Some(3), 1, (0, 3)),
            (10, Some(5), Some(5), 1, (5, 0)),
            (10, Some(-1), Some(-11), -1, (9, 10)),
            (64, None, Some(1000), 1, (0, 64)),
        ] {
            assert_eq!(resolve_slice(n, a, b, c), want, "{n} {a:?}:{b:?}:{c}");
        }
    }
}
