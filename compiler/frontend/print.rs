//! A readable listing of checked kernels: the signature with bound sizes, then every `let`
//! and the returned values with their types and resolved expressions. Used by the `check`
//! filetests and handy when debugging lowering.
//!
//! Expressions print with every binary operation parenthesised, builtins by name, axes and
//! permutations normalised, and folded scalars as their f64 value, so the listing shows
//! exactly what the checker resolved.

use crate::frontend::check::{reduce_name, unary_name};
use crate::frontend::typed::{BinaryOp, CheckedKernel, TExpr, TExprKind, UnaryFn};
use std::fmt::{self, Write};

/// Formats a folded scalar: `0.5`, `-inf`, `1e-6`.
fn scalar_text(v: f64) -> String {
    format!("{v:?}")
}

impl CheckedKernel {
    /// Writes an expression of this kernel (names of parameters and lets resolved).
    pub fn write_expr(&self, out: &mut impl Write, e: &TExpr) -> fmt::Result {
        match &e.kind {
            TExprKind::Param(i) => match self.params.get(*i) {
                Some(p) => out.write_str(&p.name),
                None => write!(out, "param{i}"),
            },
            TExprKind::Let(i) => match self.lets.get(*i) {
                Some(l) => out.write_str(&l.name),
                None => write!(out, "let{i}"),
            },
            TExprKind::Scalar(v) => out.write_str(&scalar_text(*v)),
            TExprKind::Unary(UnaryFn::Neg, a) => {
                out.write_str("-")?;
                self.write_expr(out, a)
            }
            TExprKind::Unary(f, a) => {
                write!(out, "{}(", unary_name(*f))?;
                self.write_expr(out, a)?;
                out.write_str(")")
            }
            TExprKind::Binary(op, a, b) => {
                let (infix, name) = match op {
                    BinaryOp::Add => (true, "+"),
                    BinaryOp::Sub => (true, "-"),
                    BinaryOp::Mul => (true, "*"),
                    BinaryOp::Div => (true, "/"),
                    BinaryOp::Maximum => (false, "maximum"),
                    BinaryOp::Minimum => (false, "minimum"),
                    BinaryOp::Pow => (false, "pow"),
                    BinaryOp::Lt => (true, "<"),
                    BinaryOp::Le => (true, "<="),
                    BinaryOp::Gt => (true, ">"),
                    BinaryOp::Ge => (true, ">="),
                    BinaryOp::Eq => (true, "=="),
                    BinaryOp::Ne => (true, "!="),
                    BinaryOp::And => (false, "logical_and"),
                    BinaryOp::Or => (false, "logical_or"),
                };
                if infix {
                    out.write_str("(")?;
                    self.write_expr(out, a)?;
                    write!(out, " {name} ")?;
                    self.write_expr(out, b)?;
                    out.write_str(")")
                } else {
                    write!(out, "{name}(")?;
                    self.write_expr(out, a)?;
                    out.write_str(", ")?;
                    self.write_expr(out, b)?;
                    out.write_str(")")
                }
            }
            TExprKind::Matmul(a, b) => {
                out.write_str("(")?;
                self.write_expr(out, a)?;
                out.write_str(" @ ")?;
                self.write_expr(out, b)?;
                out.write_str(")")
            }
            TExprKind::Reduce {
                func,
                arg,
                axis,
                keepdims,
            } => {
                write!(out, "{}(", reduce_name(*func))?;
                self.write_expr(out, arg)?;
                write!(out, ", axis={axis}, keepdims={keepdims})")
            }
            TExprKind::ArgReduce {
                max,
                arg,
                axis,
                keepdims,
            } => {
                out.write_str(if *max { "argmax(" } else { "argmin(" })?;
                self.write_expr(out, arg)?;
                write!(out, ", axis={axis}, keepdims={keepdims})")
            }
            TExprKind::Cumsum { arg, axis } => {
                out.write_str("cumsum(")?;
                self.write_expr(out, arg)?;
                write!(out, ", axis={axis})")
            }
            TExprKind::Transpose(a, perm) => {
                out.write_str("transpose(")?;
                self.write_expr(out, a)?;
                write!(out, ", perm={perm:?})")
            }
            TExprKind::Reshape(a) => {
                out.write_str("reshape(")?;
                self.write_expr(out, a)?;
                write!(out, ", {:?})", e.ty.shape)
            }
            TExprKind::Tril { arg, k, fill } => {
                out.write_str("tril(")?;
                self.write_expr(out, arg)?;
                write!(out, ", k={k}, fill={})", scalar_text(*fill))
            }
            TExprKind::Cast(a) => {
                out.write_str("(")?;
                self.write_expr(out, a)?;
                write!(out, " as {})", e.ty.dtype)
            }
            TExprKind::Slice(a, axes) => {
                self.write_expr(out, a)?;
                // NumPy's spelling: `start:stop:step`, the stop omitted where a negative
                // step runs to the first element.
                let mut counts = e.ty.shape.iter();
                let items: Vec<String> = axes
                    .iter()
                    .map(|ax| {
                        if !ax.keep {
                            return ax.start.to_string();
                        }
                        let count = *counts.next().unwrap_or(&1) as i64;
                        let stop = ax.start as i64 + count * ax.step;
                        match (stop < 0, ax.step) {
                            (true, _) => format!("{}::{}", ax.start, ax.step),
                            (false, 1) => format!("{}:{stop}", ax.start),
                            (false, step) => format!("{}:{stop}:{step}", ax.start),
                        }
                    })
                    .collect();
                write!(out, "[{}]", items.join(", "))
            }
            TExprKind::Concat(parts, axis) => {
                out.write_str("concat([")?;
                for (i, p) in parts.iter().enumerate() {
                    if i > 0 {
                        out.write_str(", ")?;
                    }
                    self.write_expr(out, p)?;
                }
                write!(out, "], axis={axis})")
            }
            TExprKind::Pad {
                arg,
                before,
                after,
                value,
            } => {
                out.write_str("pad(")?;
                self.write_expr(out, arg)?;
                write!(
                    out,
                    ", before={before:?}, after={after:?}, value={})",
                    scalar_text(*value)
                )
            }
            TExprKind::BroadcastTo(a) => {
                out.write_str("broadcast_to(")?;
                self.write_expr(out, a)?;
                write!(out, ", {:?})", e.ty.shape)
            }
            TExprKind::Where(c, a, b) => {
                out.write_str("where(")?;
                self.write_expr(out, c)?;
                out.write_str(", ")?;
                self.write_expr(out, a)?;
                out.write_str(", ")?;
                self.write_expr(out, b)?;
                out.write_str(")")
            }
            TExprKind::Arange => write!(out, "arange({})", e.ty.shape[0]),
            TExprKind::Take { arg, idx, axis } => {
                out.write_str("take(")?;
                self.write_expr(out, arg)?;
                out.write_str(", ")?;
                self.write_expr(out, idx)?;
                write!(out, ", axis={axis})")
            }
            TExprKind::Conv { x, w, attrs } => {
                out.write_str("conv(")?;
                self.write_expr(out, x)?;
                out.write_str(", ")?;
                self.write_expr(out, w)?;
                write!(
                    out,
                    ", stride={:?}, padding={:?}, dilation={:?}, groups={})",
                    attrs.stride, attrs.padding, attrs.dilation, attrs.groups
                )
            }
            TExprKind::Pool(arg, pool) => {
                write!(out, "{}(", pool.name())?;
                self.write_expr(out, arg)?;
                write!(out, ", {})", crate::ir::pool_attrs(pool, ", "))
            }
        }
    }
}

impl fmt::Display for CheckedKernel {
    /// The listing: `kernel name<N = 256>(x: f32[256]) -> f32[256]`, one line per `let`
    /// (`let e: f32[256] = exp(x)`) and one per returned value.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "kernel {}", self.name)?;
        if !self.sizes.is_empty() {
            let sizes: Vec<String> = self
                .sizes
                .iter()
                .map(|(n, v)| format!("{n} = {v}"))
                .collect();
            write!(f, "<{}>", sizes.join(", "))?;
        }
        let params: Vec<String> = self
            .params
            .iter()
            .map(|p| format!("{}: {}", p.name, p.ty))
            .collect();
        write!(f, "({}) -> ", params.join(", "))?;
        if self.results.len() == 1 {
            writeln!(f, "{}", self.results[0])?;
        } else {
            let results: Vec<String> = self.results.iter().map(ToString::to_string).collect();
            writeln!(f, "({})", results.join(", "))?;
        }
        for l in &self.lets {
            write!(f, "    let {}: {} = ", l.name, l.value.ty)?;
            self.write_expr(f, &l.value)?;
            writeln!(f)?;
        }
        for r in &self.returns {
            write!(f, "    return {} = ", r.ty)?;
            self.write_expr(f, r)?;
            writeln!(f)?;
        }
        Ok(())
    }
}
