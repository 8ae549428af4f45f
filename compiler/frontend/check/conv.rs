//! `conv(x, w, stride=[..], padding=[..], dilation=[..], groups=1)`: PyTorch's 1-D and 2-D
//! convolution (`x` is `[N, C, L]` or `[N, C, H, W]`, `w` is `[O, C / groups, k..]`, the
//! result `f32[N, O, ..]`, accumulated in f32 like `@`).
//!
//! The checker resolves the keyword lists (integer size expressions allowed, as in any
//! list of integers), applies PyTorch's defaults (stride 1, padding 0, dilation 1, one
//! group) and reports each way a convolution can be malformed with its own code (E1000
//! through E1005), located at the operand or keyword at fault. As PyTorch does for
//! `conv`, any non-negative padding is allowed (the "at most half the window" rule is the
//! pools').

use super::Checker;
use crate::diagnostic::Diagnostic;
use crate::frontend::ast::ArgValue;
use crate::frontend::codes;
use crate::frontend::typed::{ConvAttrs, Span, TExpr, TExprKind, TensorType};
use isa::Dtype;

impl Checker<'_> {
    /// Checks a `conv` call; `lists` are the `stride`, `padding` and `dilation` keywords.
    pub(super) fn conv_call(
        &mut self,
        x: TExpr,
        w: TExpr,
        lists: [Option<&ArgValue>; 3],
        groups: Option<&ArgValue>,
        span: Span,
    ) -> Option<TExpr> {
        if !self.need_tensor("conv", &x) || !self.need_tensor("conv", &w) {
            return None;
        }
        if !self.float_only("`conv`", &x, span) || !self.float_only("`conv`", &w, span) {
            return None;
        }
        let rank = x.ty.shape.len();
        if !(3..=4).contains(&rank) {
            self.error(
                Diagnostic::error(
                    codes::CONV_RANK,
                    format!(
                        "the input of `conv` must be `[N, C, L]` or `[N, C, H, W]`, found `{}`",
                        x.ty
                    ),
                )
                .with_primary(x.span, format!("this has rank {rank}"))
                .with_note("a 1-D convolution takes rank 3, a 2-D one rank 4 (PyTorch's layouts)"),
            );
            return None;
        }
        let spatial = rank - 2;
        if w.ty.shape.len() != rank {
            self.error(
                Diagnostic::error(
                    codes::CONV_RANK,
                    format!(
                        "the weight of `conv` must have the input's rank {rank}, found `{}`",
                        w.ty
                    ),
                )
                .with_primary(w.span, format!("this has rank {}", w.ty.shape.len()))
                .with_secondary(x.span, format!("the input is `{}`", x.ty))
                .with_note(if spatial == 1 {
                    "a 1-D weight is `[O, C / groups, kL]`"
                } else {
                    "a 2-D weight is `[O, C / groups, kH, kW]`"
                }),
            );
            return None;
        }
        let groups_span = groups.map_or(span, ArgValue::span);
        let g = match groups {
            None => 1,
            Some(a) => self.int_keyword("conv", "groups", a)?,
        };
        let (c, o, wc) = (x.ty.shape[1], w.ty.shape[0], w.ty.shape[1]);
        if g < 1 {
            self.error(
                Diagnostic::error(
                    codes::CONV_GROUPS,
                    format!("`groups` of `conv` must be at least 1, found {g}"),
                )
                .with_primary(groups_span, "expected a positive integer")
                .with_note("`groups=1` is an ordinary convolution, `groups=C` a depthwise one"),
            );
            return None;
        }
        let g = g as u64;
        for (what, dim, operand) in [("input channels", c, &x), ("output channels", o, &w)] {
            if !dim.is_multiple_of(g) {
                self.error(
                    Diagnostic::error(
                        codes::CONV_GROUPS,
                        format!("the {what} of `conv` ({dim}) do not divide by `groups` ({g})"),
                    )
                    .with_primary(groups_span, format!("{g} groups"))
                    .with_secondary(operand.span, format!("this is `{}`", operand.ty))
                    .with_note("both C (axis 1 of x) and O (axis 0 of w) must divide by `groups`"),
                );
                return None;
            }
        }
        if wc * g != c {
            self.error(
                Diagnostic::error(
                    codes::CONV_WEIGHT_CHANNELS,
                    format!(
                        "the weight of `conv` must have C / groups = {} channels (axis 1), found `{}`",
                        c / g,
                        w.ty
                    ),
                )
                .with_primary(w.span, format!("axis 1 is {wc}"))
                .with_secondary(x.span, format!("the input `{}` has {c} channels", x.ty))
                .with_note(format!("with groups={g}, w is `[O, {}, k..]`", c / g)),
            );
            return None;
        }
        let mut resolved = Vec::new();
        for ((name, default, min), arg) in [("stride", 1, 1), ("padding", 0, 0), ("dilation", 1, 1)]
            .into_iter()
            .zip(lists)
        {
            let list = match arg {
                None => vec![default; spatial],
                Some(a) => self.int_list(a, &format!("`{name}` of `conv`"))?,
            };
            let arg_span = arg.map_or(span, ArgValue::span);
            if list.len() != spatial {
                self.error(
                    Diagnostic::error(
                        codes::CONV_LIST_LENGTH,
                        format!(
                            "`{name}` of `conv` needs one entry per spatial axis ({spatial}), found {}",
                            list.len()
                        ),
                    )
                    .with_primary(arg_span, plural(list.len(), "entry", "entries"))
                    .with_secondary(
                        x.span,
                        format!(
                            "the input `{}` has {}",
                            x.ty,
                            plural(spatial, "spatial axis", "spatial axes")
                        ),
                    )
                    .with_note(format!(
                        "e.g. `{name}=[{}]`",
                        vec![default.to_string(); spatial].join(", ")
                    )),
                );
                return None;
            }
            if let Some(bad) = list.iter().find(|&&v| v < min) {
                let expected = if min == 0 {
                    "non-negative"
                } else {
                    "at least 1"
                };
                self.error(
                    Diagnostic::error(
                        codes::CONV_BAD_PARAMETER,
                        format!("`{name}` of `conv` must be {expected}, found {bad}"),
                    )
                    .with_primary(arg_span, format!("{bad} is out of range"))
                    .with_note(format!("every entry of `{name}` must be {expected}")),
                );
                return None;
            }
            resolved.push(list.into_iter().map(|v| v as u64).collect::<Vec<u64>>());
        }
        let dilation = resolved.pop()?;
        let padding = resolved.pop()?;
        let stride = resolved.pop()?;
        let attrs = ConvAttrs {
            stride,
            padding,
            dilation,
            groups: g,
        };
        let mut shape = vec![x.ty.shape[0], o];
        for i in 0..spatial {
            let (n, k) = (x.ty.shape[2 + i], w.ty.shape[2 + i]);
            match attrs.out_len(i, n, k) {
                Some(len) => shape.push(len),
                None => {
                    let (p, d) = (attrs.padding[i], attrs.dilation[i]);
                    let window = d.saturating_mul(k.saturating_sub(1)).saturating_add(1);
                    self.error(
                        Diagnostic::error(
                            codes::CONV_WINDOW,
                            format!(
                                "the window of `conv` along spatial axis {i} ({window} elements) is larger than the padded input ({})",
                                n.saturating_add(p.saturating_mul(2))
                            ),
                        )
                        .with_primary(w.span, format!("kernel extent {k}, dilation {d}: {d} x ({k} - 1) + 1 = {window}"))
                        .with_secondary(x.span, format!("extent {n}, padding {p} on each side"))
                        .with_note("the dilated window must fit the input plus its padding: use more padding, a smaller kernel or less dilation"),
                    );
                    return None;
                }
            }
        }
        let ty = TensorType {
            dtype: Dtype::F32,
            shape,
        };
        if !self.check_elems(&ty.shape, || format!("the result `{ty}`"), span) {
            return None;
        }
        Some(TExpr {
            kind: TExprKind::Conv {
                x: Box::new(x),
                w: Box::new(w),
                attrs,
            },
            ty,
            span,
        })
    }
}

/// `1 entry`, `2 entries`.
fn plural(n: usize, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}
