//! Prints tensor IR as text, with entity names (`v3`) and source spans (`@12..20`).
//!
//! The format, which `parse.rs` reads back:
//!
//! ```text
//! kernel softmax<N=256, D=1000>(v0 x: f32[256, 1000] @30..46) -> (f32[256, 1000]) {
//!     v1 = max v0 axis=1 keepdims=true : f32[256, 1] @100..130
//!     v2 = sub v0, v1 : f32[256, 1000] @150..155
//!     return v2
//! }
//! ```

use super::{BinaryOp, Function, Pool, PoolKind, ReduceFn, Span, TOp, UnaryFn};
use std::fmt::{self, Write};

impl fmt::Display for Function {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "kernel {}", self.name)?;
        if !self.sizes.is_empty() {
            f.write_char('<')?;
            for (i, (name, value)) in self.sizes.iter().enumerate() {
                if i > 0 {
                    f.write_str(", ")?;
                }
                write!(f, "{name}={value}")?;
            }
            f.write_char('>')?;
        }
        f.write_char('(')?;
        for (i, (name, v)) in self.params.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            write!(f, "{v} {name}: {}", self.ty(*v))?;
            let span = self.param_spans.get(i).copied().unwrap_or_default();
            write_span(f, span)?;
        }
        f.write_str(") -> (")?;
        for (i, v) in self.results.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            write!(f, "{}", self.ty(*v))?;
        }
        f.write_str(") {\n")?;
        for &inst in &self.layout {
            let data = &self.insts[inst];
            write!(f, "    {} = {}", data.result, op_name(&data.op))?;
            for (i, a) in data.args.iter().enumerate() {
                f.write_str(if i == 0 { " " } else { ", " })?;
                write!(f, "{a}")?;
            }
            write_attrs(f, &data.op)?;
            write!(f, " : {}", self.ty(data.result))?;
            write_span(f, self.spans[inst])?;
            f.write_char('\n')?;
        }
        f.write_str("    return")?;
        for (i, v) in self.results.iter().enumerate() {
            f.write_str(if i == 0 { " " } else { ", " })?;
            write!(f, "{v}")?;
        }
        f.write_str("\n}\n")
    }
}

fn write_span(f: &mut fmt::Formatter<'_>, span: Span) -> fmt::Result {
    write!(f, " @{}..{}", span.start, span.end)
}

fn write_attrs(f: &mut fmt::Formatter<'_>, op: &TOp) -> fmt::Result {
    match op {
        TOp::Const(c) => write!(f, " {}", fmt_f64(*c)),
        TOp::Reduce { axis, keepdims, .. } | TOp::ArgReduce { axis, keepdims, .. } => {
            write!(f, " axis={axis} keepdims={keepdims}")
        }
        TOp::Cumsum { axis } => write!(f, " axis={axis}"),
        TOp::Transpose(perm) => {
            f.write_str(" perm=[")?;
            for (i, p) in perm.iter().enumerate() {
                if i > 0 {
                    f.write_str(", ")?;
                }
                write!(f, "{p}")?;
            }
            f.write_char(']')
        }
        TOp::Tril { k, fill } => write!(f, " k={k} fill={}", fmt_f64(*fill)),
        TOp::Slice(axes) => {
            let list = |f: &mut fmt::Formatter<'_>, items: Vec<String>| {
                write!(f, "[{}]", items.join(", "))
            };
            f.write_str(" start=")?;
            list(f, axes.iter().map(|a| a.start.to_string()).collect())?;
            f.write_str(" step=")?;
            list(f, axes.iter().map(|a| a.step.to_string()).collect())?;
            f.write_str(" keep=")?;
            list(f, axes.iter().map(|a| a.keep.to_string()).collect())
        }
        TOp::Concat(axis) => write!(f, " axis={axis}"),
        TOp::Pad {
            before,
            after,
            value,
        } => write!(
            f,
            " before={before:?} after={after:?} value={}",
            fmt_f64(*value)
        ),
        TOp::Take { axis } => write!(f, " axis={axis}"),
        TOp::Conv(a) => write!(
            f,
            " stride={:?} padding={:?} dilation={:?} groups={}",
            a.stride, a.padding, a.dilation, a.groups
        ),
        TOp::Pool(p) => write!(f, " {}", pool_attrs(p, " ")),
        _ => Ok(()),
    }
}

/// A pool's attributes as the language writes them (`window=[3, 3] stride=[2, 2] ...`),
/// separated by `sep` (a space in tensor IR, `", "` in the source listing): every one,
/// defaults included, so the text says the whole operation.
pub fn pool_attrs(p: &Pool, sep: &str) -> String {
    let mut items = vec![
        format!("window={:?}", p.window),
        format!("stride={:?}", p.stride),
        format!("padding={:?}", p.padding),
    ];
    if p.kind == PoolKind::Max {
        items.push(format!("dilation={:?}", p.dilation));
    }
    items.push(format!("ceil_mode={}", p.ceil_mode));
    if p.kind == PoolKind::Avg {
        items.push(format!("count_include_pad={}", p.count_include_pad));
    }
    items.join(sep)
}

/// Formats a float so that parsing it gives the same bits (`inf`, `-inf`, `nan` spelled out).
pub fn fmt_f64(x: f64) -> String {
    if x.is_nan() {
        "nan".into()
    } else if x.is_infinite() {
        if x > 0.0 { "inf" } else { "-inf" }.into()
    } else {
        format!("{x:?}")
    }
}

/// The text name of an operation.
pub fn op_name(op: &TOp) -> &'static str {
    match op {
        TOp::Const(_) => "const",
        TOp::Unary(u) => unary_name(*u),
        TOp::Binary(b) => binary_name(*b),
        TOp::Matmul => "matmul",
        TOp::Reduce { func, .. } => reduce_name(*func),
        TOp::Transpose(_) => "transpose",
        TOp::Reshape => "reshape",
        TOp::Tril { .. } => "tril",
        TOp::Cast => "cast",
        TOp::Slice(_) => "slice",
        TOp::Concat(_) => "concat",
        TOp::Pad { .. } => "pad",
        TOp::BroadcastTo => "broadcast_to",
        TOp::Where => "where",
        TOp::Arange => "arange",
        TOp::Take { .. } => "take",
        TOp::ArgReduce { max: true, .. } => "argmax",
        TOp::ArgReduce { max: false, .. } => "argmin",
        TOp::Cumsum { .. } => "cumsum",
        TOp::Conv(_) => "conv",
        TOp::Pool(p) => p.name(),
    }
}

/// Every unary function with its text name (the language's builtin name; `neg` for `-`).
pub const UNARY_NAMES: [(UnaryFn, &str); 23] = [
    (UnaryFn::Neg, "neg"),
    (UnaryFn::Exp, "exp"),
    (UnaryFn::Log, "log"),
    (UnaryFn::Sqrt, "sqrt"),
    (UnaryFn::Rsqrt, "rsqrt"),
    (UnaryFn::Reciprocal, "reciprocal"),
    (UnaryFn::Abs, "abs"),
    (UnaryFn::Square, "square"),
    (UnaryFn::Tanh, "tanh"),
    (UnaryFn::Sigmoid, "sigmoid"),
    (UnaryFn::Relu, "relu"),
    (UnaryFn::Silu, "silu"),
    (UnaryFn::Gelu, "gelu"),
    (UnaryFn::GeluTanh, "gelu_tanh"),
    (UnaryFn::Sin, "sin"),
    (UnaryFn::Cos, "cos"),
    (UnaryFn::Erf, "erf"),
    (UnaryFn::Floor, "floor"),
    (UnaryFn::Ceil, "ceil"),
    (UnaryFn::Round, "round"),
    (UnaryFn::Sign, "sign"),
    (UnaryFn::Softplus, "softplus"),
    (UnaryFn::Not, "logical_not"),
];

/// Every binary operation with its text name.
pub const BINARY_NAMES: [(BinaryOp, &str); 15] = [
    (BinaryOp::Add, "add"),
    (BinaryOp::Sub, "sub"),
    (BinaryOp::Mul, "mul"),
    (BinaryOp::Div, "div"),
    (BinaryOp::Maximum, "maximum"),
    (BinaryOp::Minimum, "minimum"),
    (BinaryOp::Pow, "pow"),
    (BinaryOp::Lt, "lt"),
    (BinaryOp::Le, "le"),
    (BinaryOp::Gt, "gt"),
    (BinaryOp::Ge, "ge"),
    (BinaryOp::Eq, "eq"),
    (BinaryOp::Ne, "ne"),
    (BinaryOp::And, "logical_and"),
    (BinaryOp::Or, "logical_or"),
];

/// Every reduction with its text name.
pub const REDUCE_NAMES: [(ReduceFn, &str); 4] = [
    (ReduceFn::Sum, "sum"),
    (ReduceFn::Mean, "mean"),
    (ReduceFn::Max, "max"),
    (ReduceFn::Min, "min"),
];

fn unary_name(u: UnaryFn) -> &'static str {
    UNARY_NAMES
        .iter()
        .find(|(x, _)| *x == u)
        .map(|(_, n)| *n)
        .unwrap_or("?")
}

fn binary_name(b: BinaryOp) -> &'static str {
    BINARY_NAMES
        .iter()
        .find(|(x, _)| *x == b)
        .map(|(_, n)| *n)
        .unwrap_or("?")
}

fn reduce_name(r: ReduceFn) -> &'static str {
    REDUCE_NAMES
        .iter()
        .find(|(x, _)| *x == r)
        .map(|(_, n)| *n)
        .unwrap_or("?")
}
