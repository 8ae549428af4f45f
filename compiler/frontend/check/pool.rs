//! Checking `max_pool(x, window=[..], stride=[..], padding=[..], dilation=[..],
//! ceil_mode=false)` and `avg_pool(x, window=[..], stride=[..], padding=[..],
//! ceil_mode=false, count_include_pad=true)`: PyTorch's pools over the spatial axes of
//! `[N, C, L]` or `[N, C, H, W]`, with the errors E1020 to E1025 (`codes.rs`). The geometry
//! itself (output lengths, windows, divisors) is `frontend/pool.rs`.

use super::{describe, Checker};
use crate::diagnostic::Diagnostic;
use crate::frontend::ast::ArgValue;
use crate::frontend::codes;
use crate::frontend::pool::{Pool, PoolKind};
use crate::frontend::typed::{Span, TExpr, TExprKind, TensorType};

/// Every keyword of either pool, in the order `Checker::pool` receives their values.
pub(super) const KEYWORDS: [&str; 6] = [
    "window",
    "stride",
    "padding",
    "dilation",
    "ceil_mode",
    "count_include_pad",
];

/// The keywords a pool takes, and whether each is required.
pub(super) fn keywords(kind: PoolKind) -> &'static [(&'static str, bool)] {
    match kind {
        PoolKind::Max => &[
            ("window", true),
            ("stride", false),
            ("padding", false),
            ("dilation", false),
            ("ceil_mode", false),
        ],
        PoolKind::Avg => &[
            ("window", true),
            ("stride", false),
            ("padding", false),
            ("ceil_mode", false),
            ("count_include_pad", false),
        ],
    }
}

/// How a pool is called, for notes.
pub(super) fn usage(kind: PoolKind) -> &'static str {
    match kind {
        PoolKind::Max => {
            "max_pool(x, window=[..], stride=[..], padding=[..], dilation=[..], ceil_mode=false)"
        }
        PoolKind::Avg => {
            "avg_pool(x, window=[..], stride=[..], padding=[..], ceil_mode=false, count_include_pad=true)"
        }
    }
}

impl Checker<'_> {
    /// A pool call; `args` holds the values of [`KEYWORDS`] (`None` where not given).
    pub(super) fn pool(
        &mut self,
        kind: PoolKind,
        v: TExpr,
        args: [Option<&ArgValue>; 6],
        span: Span,
    ) -> Option<TExpr> {
        let name = match kind {
            PoolKind::Max => "max_pool",
            PoolKind::Avg => "avg_pool",
        };
        if !self.need_tensor(name, &v) {
            return None;
        }
        let [window_arg, stride, padding_arg, dilation, ceil_mode, count_include_pad] = args;
        let rank = v.ty.shape.len();
        if !(3..=4).contains(&rank) {
            self.error(
                Diagnostic::error(
                    codes::POOL_RANK,
                    format!(
                        "`{name}` needs `[N, C, L]` or `[N, C, H, W]`, found `{}`",
                        v.ty
                    ),
                )
                .with_primary(v.span, format!("this has rank {rank}"))
                .with_note(
                    "the first two axes are the batch and the channels; the one or two after \
                     them are pooled (reshape to add a batch or channel axis of 1)",
                ),
            );
            return None;
        }
        if !v.ty.dtype.is_float() {
            self.error(
                Diagnostic::error(
                    codes::POOL_DTYPE,
                    format!("`{name}` takes floats, found `{}`", v.ty),
                )
                .with_primary(span, format!("`{name}` of {}", describe(&v)))
                .with_secondary(v.span, format!("this is `{}`", v.ty))
                .with_note(if v.ty.dtype == isa::Dtype::Bool {
                    "a pool of booleans is not defined; convert first with `as f32` (the \
                     maximum of 0 and 1 is then a logical or)"
                } else {
                    "integer pools are not supported; convert first with `as f32`, which is \
                     exact for integers up to 2^24"
                }),
            );
            return None;
        }
        let axes = rank - 2;
        let mut lists = Vec::with_capacity(4);
        for (kw, arg, default) in [
            ("window", window_arg, None),
            ("stride", stride, None),
            ("padding", padding_arg, Some(0)),
            ("dilation", dilation, Some(1)),
        ] {
            let list = match (arg, default) {
                (Some(a), _) => self.pool_list(name, kw, a, axes, &v)?,
                (None, Some(d)) => vec![d; axes],
                // `stride` defaults to the window.
                (None, None) => lists.first().cloned().unwrap_or_default(),
            };
            lists.push(list);
        }
        let flag = |this: &mut Self, kw: &str, arg: Option<&ArgValue>, default: bool| match arg {
            None => Some(default),
            Some(ArgValue::Bool(b, _)) => Some(*b),
            Some(other) => {
                this.error(
                    Diagnostic::error(
                        codes::WRONG_ARGUMENT_KIND,
                        format!("`{kw}` of `{name}` must be `true` or `false`"),
                    )
                    .with_primary(other.span(), "expected `true` or `false`"),
                );
                None
            }
        };
        let ceil_mode = flag(self, "ceil_mode", ceil_mode, false)?;
        let count_include_pad =
            flag(self, "count_include_pad", count_include_pad, true)? && kind == PoolKind::Avg;
        let dilation = lists.pop()?;
        let padding = lists.pop()?;
        let stride = lists.pop()?;
        let window = lists.pop()?;
        let pool = Pool {
            kind,
            window,
            stride,
            padding,
            dilation,
            ceil_mode,
            count_include_pad,
        };
        let mut ok = true;
        for a in 0..axes {
            let (k, p) = (pool.window[a], pool.padding[a]);
            if p > k / 2 {
                let at = padding_arg.map_or(span, ArgValue::span);
                self.error(
                    Diagnostic::error(
                        codes::POOL_PADDING,
                        format!(
                            "the padding {p} of spatial axis {a} of `{name}` is over half its window {k}"
                        ),
                    )
                    .with_primary(at, format!("at most {} for a window of {k}", k / 2))
                    .with_note("PyTorch requires padding <= window / 2, so every window holds an input element"),
                );
                ok = false;
                continue;
            }
            let n = v.ty.shape[2 + a];
            if pool.out_len(a, n).is_none() {
                let dilated = if pool.dilation[a] > 1 {
                    format!(" (dilated to {})", pool.extent(a))
                } else {
                    String::new()
                };
                let mut diag = Diagnostic::error(
                    codes::POOL_WINDOW_TOO_LARGE,
                    format!(
                        "the window {k}{dilated} of `{name}` is larger than spatial axis {a} of `{}` padded to {}",
                        v.ty,
                        n + 2 * p
                    ),
                )
                .with_primary(window_arg.map_or(span, ArgValue::span), "this window does not fit")
                .with_secondary(v.span, format!("this is `{}`", v.ty));
                diag = diag.with_note(format!(
                    "a window of {} positions needs an axis of at least that many after padding",
                    pool.extent(a)
                ));
                self.error(diag);
                ok = false;
            }
        }
        if !ok {
            return None;
        }
        let shape = pool.out_shape(&v.ty.shape).ok()?;
        Some(TExpr {
            ty: TensorType {
                dtype: v.ty.dtype,
                shape,
            },
            kind: TExprKind::Pool(Box::new(v), pool),
            span,
        })
    }

    /// One of a pool's integer lists: one entry per spatial axis, each at least 1 (padding
    /// at least 0).
    fn pool_list(
        &mut self,
        name: &str,
        kw: &str,
        arg: &ArgValue,
        axes: usize,
        v: &TExpr,
    ) -> Option<Vec<u64>> {
        let list = self.int_list(arg, &format!("`{kw}` of `{name}`"))?;
        if list.len() != axes {
            let example = match axes {
                1 => "[2]",
                _ => "[2, 2]",
            };
            self.error(
                Diagnostic::error(
                    codes::POOL_LIST_LENGTH,
                    format!(
                        "`{kw}` of `{name}` needs {axes} {}, one per spatial axis of `{}`, found {}",
                        if axes == 1 { "entry" } else { "entries" },
                        v.ty,
                        list.len()
                    ),
                )
                .with_primary(arg.span(), format!("{} given", list.len()))
                .with_secondary(v.span, format!("this is `{}`", v.ty))
                .with_note(format!(
                    "an operand of rank {} has {axes} spatial {}; e.g. `{kw}={example}`",
                    axes + 2,
                    if axes == 1 { "axis" } else { "axes" }
                )),
            );
            return None;
        }
        let least = if kw == "padding" { 0 } else { 1 };
        if let Some(&bad) = list.iter().find(|&&x| x < least) {
            self.error(
                Diagnostic::error(
                    codes::POOL_NOT_POSITIVE,
                    format!(
                        "`{kw}` of `{name}` must be at least {least} on every axis, found {bad}"
                    ),
                )
                .with_primary(arg.span(), format!("{bad} is below {least}"))
                .with_note(if least == 0 {
                    "padding is a count of positions added on each side"
                } else {
                    "windows, strides and dilations count positions and are at least 1"
                }),
            );
            return None;
        }
        Some(list.into_iter().map(|x| x as u64).collect())
    }
}
