//! The checker: resolves names, builtins and sizes, infers the dtype and concrete shape
//! of every value and checks the kernel against its signature, producing the checked
//! kernel of `typed.rs`.
//!
//! The rules are those of the language (`docs/language.md`): NumPy broadcasting, weak
//! scalars, promotion of mixed dtypes to f32, `@` as NumPy `matmul` giving f32, exact
//! result types. Scalar-only subexpressions are folded in f64, so every `Scalar` the
//! checked kernel holds meets a tensor. A scalar `let` is inlined at its uses and is not
//! part of `CheckedKernel::lets`.
//!
//! Errors do not cascade: an expression that fails yields `None`, which its parents pass
//! on silently, and a `let` bound to a failed value poisons its name.

use crate::diagnostic::Diagnostic;
use crate::frontend::ast::{self, ArgValue, BinOp, ExprKind, ListItem, StmtKind};
use crate::frontend::codes;
use crate::frontend::pool::PoolKind;
use crate::frontend::typed::{
    BinaryOp, CheckedKernel, CheckedLet, CheckedParam, ReduceFn, Span, TExpr, TExprKind,
    TensorType, UnaryFn,
};
use indexmap::IndexMap;
use isa::Dtype;

mod conv;
mod index;
mod pool;
mod reduce_axes;
mod scan;
mod sizes;
mod v2;

/// The largest dim, size and element count of any value: 2^48.
pub const MAX_ELEMS: u64 = 1 << 48;

/// The highest rank of a value.
pub const MAX_RANK: usize = 6;

/// Checks the kernels of a parsed file: all of them, or the one named `kernel`.
///
/// Kernels that error recovery damaged are not checked (their syntax errors are already
/// reported); `had_syntax_errors` also silences errors that a lost kernel could explain,
/// such as a define that names no size.
pub fn check_kernels(
    file: &ast::File,
    src: &str,
    defines: &[(String, i64)],
    kernel: Option<&str>,
    had_syntax_errors: bool,
    diags: &mut Vec<Diagnostic>,
) -> Vec<CheckedKernel> {
    if file.kernels.is_empty() {
        if !had_syntax_errors {
            diags.push(
                Diagnostic::error(codes::NO_KERNEL, "no kernel in this file")
                    .with_primary(file.span, "expected at least one `kernel`")
                    .with_note("a kernel looks like `kernel f(x: f32[8]) -> f32[8] { return x; }`"),
            );
        }
        return Vec::new();
    }
    let mut first_by_name: IndexMap<&str, Span> = IndexMap::new();
    for k in &file.kernels {
        if let Some(first) = first_by_name.get(k.name.name.as_str()) {
            diags.push(
                Diagnostic::error(
                    codes::DUPLICATE_KERNEL,
                    format!("kernel `{}` is defined twice", k.name.name),
                )
                .with_primary(k.name.span, "second definition")
                .with_secondary(*first, "first defined here"),
            );
        } else {
            first_by_name.insert(&k.name.name, k.name.span);
        }
    }
    let selected: Vec<&ast::Kernel> = match kernel {
        None => file.kernels.iter().collect(),
        Some(name) => {
            let found: Vec<&ast::Kernel> = file
                .kernels
                .iter()
                .filter(|k| k.name.name == name)
                .take(1)
                .collect();
            if found.is_empty() {
                let names: Vec<String> = first_by_name.keys().map(|n| format!("`{n}`")).collect();
                diags.push(
                    Diagnostic::error(
                        codes::UNKNOWN_KERNEL,
                        format!("no kernel named `{name}` in this file"),
                    )
                    .with_note(format!("the kernels are: {}", names.join(", "))),
                );
            }
            found
        }
    };
    if !had_syntax_errors && !selected.is_empty() {
        for (name, value) in defines {
            let known = selected
                .iter()
                .any(|k| k.sizes.iter().any(|s| &s.name.name == name));
            if !known {
                let mut sizes: Vec<String> = Vec::new();
                for k in &selected {
                    for s in &k.sizes {
                        let text = format!("`{}`", s.name.name);
                        if !sizes.contains(&text) {
                            sizes.push(text);
                        }
                    }
                }
                let note = if sizes.is_empty() {
                    "the kernel has no sizes".to_string()
                } else {
                    format!("the sizes are: {}", sizes.join(", "))
                };
                diags.push(
                    Diagnostic::error(
                        codes::UNKNOWN_DEFINE,
                        format!("the define `{name}={value}` names no size of the kernel"),
                    )
                    .with_note(note),
                );
            }
        }
    }
    let mut out = Vec::new();
    for k in selected {
        if k.has_errors {
            continue;
        }
        let mut checker = Checker::new(defines, src);
        let checked = checker.kernel(k);
        let failed = checker.diags.iter().any(Diagnostic::is_error);
        diags.append(&mut checker.diags);
        if let (Some(checked), false) = (checked, failed) {
            out.push(checked);
        }
    }
    out
}

/// What a name of the kernel stands for.
#[derive(Clone, Debug)]
enum Binding {
    /// A size and its value (`None` if its value is in error).
    Size(Option<u64>),
    /// A parameter and its type (`None` if its type is in error).
    Param(usize, Option<TensorType>),
    /// A tensor `let`: its index in `lets`.
    Let(usize),
    /// A scalar `let` and its literal kind (as a dtype), inlined at its uses.
    ScalarLet(f64, Dtype),
    /// A `let` whose value is in error.
    Poisoned,
}

/// A name's binding and where it was defined.
#[derive(Clone, Debug)]
struct Entry {
    binding: Binding,
    span: Span,
}

/// The builtin functions.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Builtin {
    Unary(UnaryFn),
    Binary(BinaryOp),
    Reduce(ReduceFn),
    /// `argmax` (true) or `argmin` (false).
    ArgReduce(bool),
    Cumsum,
    Transpose,
    Reshape,
    Tril,
    /// `clip(x, lo, hi)`, checked as `minimum(maximum(x, lo), hi)`.
    Clip,
    Concat,
    Pad,
    BroadcastTo,
    Where,
    Arange,
    Take,
    Conv,
    /// `max_pool` and `avg_pool` (`check/pool.rs`).
    Pool(crate::frontend::pool::PoolKind),
}

/// Every builtin by name.
const BUILTINS: &[(&str, Builtin)] = &[
    ("exp", Builtin::Unary(UnaryFn::Exp)),
    ("log", Builtin::Unary(UnaryFn::Log)),
    ("sqrt", Builtin::Unary(UnaryFn::Sqrt)),
    ("rsqrt", Builtin::Unary(UnaryFn::Rsqrt)),
    ("reciprocal", Builtin::Unary(UnaryFn::Reciprocal)),
    ("abs", Builtin::Unary(UnaryFn::Abs)),
    ("square", Builtin::Unary(UnaryFn::Square)),
    ("tanh", Builtin::Unary(UnaryFn::Tanh)),
    ("sigmoid", Builtin::Unary(UnaryFn::Sigmoid)),
    ("relu", Builtin::Unary(UnaryFn::Relu)),
    ("silu", Builtin::Unary(UnaryFn::Silu)),
    ("gelu", Builtin::Unary(UnaryFn::Gelu)),
    ("gelu_tanh", Builtin::Unary(UnaryFn::GeluTanh)),
    ("sin", Builtin::Unary(UnaryFn::Sin)),
    ("cos", Builtin::Unary(UnaryFn::Cos)),
    ("erf", Builtin::Unary(UnaryFn::Erf)),
    ("floor", Builtin::Unary(UnaryFn::Floor)),
    ("ceil", Builtin::Unary(UnaryFn::Ceil)),
    ("round", Builtin::Unary(UnaryFn::Round)),
    ("sign", Builtin::Unary(UnaryFn::Sign)),
    ("softplus", Builtin::Unary(UnaryFn::Softplus)),
    ("maximum", Builtin::Binary(BinaryOp::Maximum)),
    ("minimum", Builtin::Binary(BinaryOp::Minimum)),
    ("pow", Builtin::Binary(BinaryOp::Pow)),
    ("clip", Builtin::Clip),
    ("sum", Builtin::Reduce(ReduceFn::Sum)),
    ("mean", Builtin::Reduce(ReduceFn::Mean)),
    ("max", Builtin::Reduce(ReduceFn::Max)),
    ("min", Builtin::Reduce(ReduceFn::Min)),
    ("argmax", Builtin::ArgReduce(true)),
    ("argmin", Builtin::ArgReduce(false)),
    ("cumsum", Builtin::Cumsum),
    ("transpose", Builtin::Transpose),
    ("reshape", Builtin::Reshape),
    ("tril", Builtin::Tril),
    ("concat", Builtin::Concat),
    ("pad", Builtin::Pad),
    ("broadcast_to", Builtin::BroadcastTo),
    ("logical_and", Builtin::Binary(BinaryOp::And)),
    ("logical_or", Builtin::Binary(BinaryOp::Or)),
    ("logical_not", Builtin::Unary(UnaryFn::Not)),
    ("where", Builtin::Where),
    ("arange", Builtin::Arange),
    ("take", Builtin::Take),
    ("conv", Builtin::Conv),
    ("max_pool", Builtin::Pool(PoolKind::Max)),
    ("avg_pool", Builtin::Pool(PoolKind::Avg)),
];

/// Finds a builtin by name.
fn builtin(name: &str) -> Option<Builtin> {
    BUILTINS.iter().find(|(n, _)| *n == name).map(|(_, b)| *b)
}

/// The names of every builtin.
pub fn builtin_names() -> impl Iterator<Item = &'static str> {
    BUILTINS.iter().map(|(n, _)| *n)
}

impl Builtin {
    /// Number of positional arguments.
    fn positional(self) -> usize {
        match self {
            Builtin::Binary(_)
            | Builtin::Reshape
            | Builtin::BroadcastTo
            | Builtin::Take
            | Builtin::Conv => 2,
            Builtin::Clip | Builtin::Where => 3,
            _ => 1,
        }
    }

    /// The keyword arguments: name and whether it is required.
    fn keywords(self) -> &'static [(&'static str, bool)] {
        match self {
            Builtin::Reduce(_) | Builtin::ArgReduce(_) => &[("axis", true), ("keepdims", false)],
            Builtin::Cumsum => &[("axis", true)],
            Builtin::Transpose => &[("perm", false)],
            Builtin::Tril => &[("k", false), ("fill", false)],
            Builtin::Concat => &[("axis", false)],
            Builtin::Pad => &[("before", false), ("after", false), ("value", false)],
            Builtin::Take => &[("axis", false)],
            Builtin::Conv => &[
                ("stride", false),
                ("padding", false),
                ("dilation", false),
                ("groups", false),
            ],
            Builtin::Pool(k) => pool::keywords(k),
            _ => &[],
        }
    }

    /// How the builtin is called, for notes.
    fn usage(self, name: &str) -> String {
        match self {
            Builtin::Unary(_) => format!("{name}(x)"),
            Builtin::Binary(_) => format!("{name}(a, b)"),
            Builtin::Reduce(_) => format!("{name}(x, axis=INT, keepdims=BOOL)"),
            Builtin::ArgReduce(_) => format!("{name}(x, axis=INT, keepdims=false)"),
            Builtin::Cumsum => "cumsum(x, axis=INT)".to_string(),
            Builtin::Transpose => "transpose(x) or transpose(x, perm=[...])".to_string(),
            Builtin::Reshape => "reshape(x, [d0, d1, ...])".to_string(),
            Builtin::Tril => "tril(x, k=0, fill=0.0)".to_string(),
            Builtin::Clip => "clip(x, lo, hi)".to_string(),
            Builtin::Concat => "concat([a, b, ...], axis=0)".to_string(),
            Builtin::Pad => "pad(x, before=[...], after=[...], value=0)".to_string(),
            Builtin::BroadcastTo => "broadcast_to(x, [d0, d1, ...])".to_string(),
            Builtin::Where => "where(c, a, b)".to_string(),
            Builtin::Arange => "arange(n)".to_string(),
            Builtin::Take => "take(x, idx, axis=0)".to_string(),
            Builtin::Conv => {
                "conv(x, w, stride=[..], padding=[..], dilation=[..], groups=1)".to_string()
            }
            Builtin::Pool(k) => pool::usage(k).to_string(),
        }
    }
}

/// The language's name of a unary function.
pub fn unary_name(f: UnaryFn) -> &'static str {
    match f {
        UnaryFn::Neg => "neg",
        UnaryFn::Exp => "exp",
        UnaryFn::Log => "log",
        UnaryFn::Sqrt => "sqrt",
        UnaryFn::Rsqrt => "rsqrt",
        UnaryFn::Reciprocal => "reciprocal",
        UnaryFn::Abs => "abs",
        UnaryFn::Square => "square",
        UnaryFn::Tanh => "tanh",
        UnaryFn::Sigmoid => "sigmoid",
        UnaryFn::Relu => "relu",
        UnaryFn::Silu => "silu",
        UnaryFn::Gelu => "gelu",
        UnaryFn::GeluTanh => "gelu_tanh",
        UnaryFn::Sin => "sin",
        UnaryFn::Cos => "cos",
        UnaryFn::Erf => "erf",
        UnaryFn::Floor => "floor",
        UnaryFn::Ceil => "ceil",
        UnaryFn::Round => "round",
        UnaryFn::Sign => "sign",
        UnaryFn::Softplus => "softplus",
        UnaryFn::Not => "logical_not",
    }
}

/// The language's name of a reduction.
pub fn reduce_name(f: ReduceFn) -> &'static str {
    match f {
        ReduceFn::Sum => "sum",
        ReduceFn::Mean => "mean",
        ReduceFn::Max => "max",
        ReduceFn::Min => "min",
    }
}

/// The error function, accurate to about 1e-13 (std has none): a Taylor series near
/// zero and a continued fraction for the tail.
pub fn erf(x: f64) -> f64 {
    if x.is_nan() {
        return x;
    }
    let a = x.abs();
    let value = if a < 3.0 {
        // erf(x) = 2/sqrt(pi) * sum_n (-1)^n x^(2n+1) / (n! (2n+1)).
        let mut term = a;
        let mut sum = a;
        let mut n = 0.0;
        while term.abs() > 1e-17 * sum.abs() && n < 200.0 {
            n += 1.0;
            term *= -a * a / n;
            sum += term / (2.0 * n + 1.0);
        }
        sum * std::f64::consts::FRAC_2_SQRT_PI
    } else if a < 30.0 {
        // erfc(x) = exp(-x^2)/sqrt(pi) / (x + (1/2)/(x + 1/(x + (3/2)/(x + ...)))).
        let mut frac = a;
        for k in (1..=80).rev() {
            frac = a + (k as f64 / 2.0) / frac;
        }
        1.0 - (-a * a).exp() / (std::f64::consts::PI.sqrt() * frac)
    } else {
        1.0
    };
    value.copysign(x)
}

/// Applies a unary function to a scalar, in f64.
pub fn fold_unary(f: UnaryFn, x: f64) -> f64 {
    let sigmoid = |x: f64| 1.0 / (1.0 + (-x).exp());
    match f {
        UnaryFn::Neg => -x,
        UnaryFn::Exp => x.exp(),
        UnaryFn::Log => x.ln(),
        UnaryFn::Sqrt => x.sqrt(),
        UnaryFn::Rsqrt => 1.0 / x.sqrt(),
        UnaryFn::Reciprocal => 1.0 / x,
        UnaryFn::Abs => x.abs(),
        UnaryFn::Square => x * x,
        UnaryFn::Tanh => x.tanh(),
        UnaryFn::Sigmoid => sigmoid(x),
        UnaryFn::Relu => {
            if x.is_nan() {
                x
            } else {
                x.max(0.0)
            }
        }
        UnaryFn::Silu => x * sigmoid(x),
        UnaryFn::Gelu => x * 0.5 * (1.0 + erf(x / std::f64::consts::SQRT_2)),
        UnaryFn::GeluTanh => {
            let c = (2.0 / std::f64::consts::PI).sqrt();
            0.5 * x * (1.0 + (c * (x + 0.044715 * x * x * x)).tanh())
        }
        UnaryFn::Sin => x.sin(),
        UnaryFn::Cos => x.cos(),
        UnaryFn::Erf => erf(x),
        UnaryFn::Floor => x.floor(),
        UnaryFn::Ceil => x.ceil(),
        UnaryFn::Round => x.round_ties_even(),
        UnaryFn::Sign if x.is_nan() => x,
        UnaryFn::Sign if x == 0.0 => 0.0,
        UnaryFn::Sign => x.signum(),
        UnaryFn::Softplus if x > 0.0 => x + (-x).exp().ln_1p(),
        UnaryFn::Softplus => x.exp().ln_1p(),
        UnaryFn::Not => f64::from(u8::from(x == 0.0)),
    }
}

/// Applies a binary operation to two scalars, in f64 (NaN propagates through
/// `maximum` and `minimum`, as in NumPy).
pub fn fold_binary(op: BinaryOp, a: f64, b: f64) -> f64 {
    match op {
        BinaryOp::Add => a + b,
        BinaryOp::Sub => a - b,
        BinaryOp::Mul => a * b,
        BinaryOp::Div => a / b,
        BinaryOp::Maximum | BinaryOp::Minimum if a.is_nan() || b.is_nan() => f64::NAN,
        BinaryOp::Maximum => a.max(b),
        BinaryOp::Minimum => a.min(b),
        BinaryOp::Pow => a.powf(b),
        // Comparisons give 1 or 0; with NaN all are false but `!=`, as IEEE says.
        BinaryOp::Lt => f64::from(u8::from(a < b)),
        BinaryOp::Le => f64::from(u8::from(a <= b)),
        BinaryOp::Gt => f64::from(u8::from(a > b)),
        BinaryOp::Ge => f64::from(u8::from(a >= b)),
        BinaryOp::Eq => f64::from(u8::from(a == b)),
        BinaryOp::Ne => f64::from(u8::from(a != b)),
        BinaryOp::And => f64::from(u8::from(a != 0.0 && b != 0.0)),
        BinaryOp::Or => f64::from(u8::from(a != 0.0 || b != 0.0)),
    }
}

/// The dtype of a binary operation on two tensors.
pub fn promote(a: Dtype, b: Dtype) -> Dtype {
    if a == b {
        a
    } else {
        Dtype::F32
    }
}

/// NumPy broadcasting of two shapes; `None` if they do not broadcast.
pub fn broadcast(a: &[u64], b: &[u64]) -> Option<Vec<u64>> {
    let rank = a.len().max(b.len());
    let mut out = vec![0; rank];
    for (i, slot) in out.iter_mut().enumerate() {
        let da = (i + a.len()).checked_sub(rank).map_or(1, |j| a[j]);
        let db = (i + b.len()).checked_sub(rank).map_or(1, |j| b[j]);
        *slot = if da == db || db == 1 {
            da
        } else if da == 1 {
            db
        } else {
            return None;
        };
    }
    Some(out)
}

/// Formats a shape as `[128, 64]`.
fn shape_text(shape: &[u64]) -> String {
    let dims: Vec<String> = shape.iter().map(u64::to_string).collect();
    format!("[{}]", dims.join(", "))
}

/// Describes the type of a value for messages: `f32[128, 64]`, or `a scalar`.
fn describe(e: &TExpr) -> String {
    if is_scalar(e) {
        "a scalar".to_string()
    } else {
        format!("`{}`", e.ty)
    }
}

/// True for a weak scalar.
fn is_scalar(e: &TExpr) -> bool {
    matches!(e.kind, TExprKind::Scalar(_))
}

/// A weak scalar expression of a float literal.
fn scalar(value: f64, span: Span) -> TExpr {
    scalar_of(value, Dtype::F32, span)
}

/// A weak scalar expression whose literal kind is that of `dtype` (`f32`, `i32` or `bool`).
fn scalar_of(value: f64, dtype: Dtype, span: Span) -> TExpr {
    TExpr {
        kind: TExprKind::Scalar(value),
        ty: TensorType {
            dtype,
            shape: Vec::new(),
        },
        span,
    }
}

/// The edit distance of two short strings, for "did you mean" notes.
fn edit_distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.iter().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            let cost = usize::from(ca != cb);
            cur[j + 1] = (prev[j] + cost).min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
}

/// The closest candidate to `name`, if it is close enough to be a likely typo.
fn suggest<'a>(name: &str, candidates: impl Iterator<Item = &'a str>) -> Option<&'a str> {
    let limit = if name.chars().count() <= 3 { 1 } else { 2 };
    candidates
        .filter(|c| *c != name)
        .map(|c| (edit_distance(name, c), c))
        .filter(|(d, _)| *d <= limit)
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

/// A constant integer argument written as an integer literal, possibly negated or in
/// parentheses.
enum IntArg {
    Value(i64),
    TooLarge,
    NotAnInteger,
}

fn int_arg(e: &ast::Expr) -> IntArg {
    match wide_int(e) {
        Some(Some(v)) => i64::try_from(v).map_or(IntArg::TooLarge, IntArg::Value),
        Some(None) => IntArg::TooLarge,
        None => IntArg::NotAnInteger,
    }
}

/// The value of an integer literal, possibly negated or in parentheses, computed wide so
/// that `-9223372036854775808` (i64::MIN, whose magnitude is no i64) is a value: `None`
/// when `e` is no such literal, `Some(None)` when the literal exceeds u64.
fn wide_int(e: &ast::Expr) -> Option<Option<i128>> {
    match &e.kind {
        ExprKind::Int(lit) => Some(lit.value.map(i128::from)),
        ExprKind::Paren(inner) => wide_int(inner),
        ExprKind::Neg(inner) => wide_int(inner).map(|v| v.map(|v| -v)),
        _ => None,
    }
}

/// Describes the kind of an argument for "found ..." messages.
fn arg_kind(v: &ArgValue) -> &'static str {
    match v {
        ArgValue::Bool(..) => "a boolean",
        ArgValue::List(..) => "a list",
        ArgValue::Expr(e) => match e.kind {
            ExprKind::Float(_) | ExprKind::Inf => "a float",
            ExprKind::Int(_) => "an integer",
            _ => "an expression",
        },
    }
}

/// The checker of one kernel.
struct Checker<'d> {
    defines: &'d [(String, i64)],
    /// The source text, for line numbers in notes.
    src: &'d str,
    names: IndexMap<String, Entry>,
    lets: Vec<CheckedLet>,
    diags: Vec<Diagnostic>,
}

impl<'d> Checker<'d> {
    fn new(defines: &'d [(String, i64)], src: &'d str) -> Checker<'d> {
        Checker {
            defines,
            src,
            names: IndexMap::new(),
            lets: Vec::new(),
            diags: Vec::new(),
        }
    }

    /// The 1-based line of the source where `span` starts.
    fn line_of(&self, span: Span) -> usize {
        let head = self.src.as_bytes();
        let end = (span.start as usize).min(head.len());
        head[..end].iter().filter(|&&b| b == b'\n').count() + 1
    }

    /// The reduction without `keepdims` that `e` is (directly or as a `let`): its span and
    /// the axis it dropped.
    fn dropped_axis(&self, e: &TExpr) -> Option<(Span, usize)> {
        let value = match &e.kind {
            TExprKind::Let(i) => &self.lets.get(*i)?.value,
            _ => e,
        };
        match &value.kind {
            TExprKind::Reduce {
                axis,
                keepdims: false,
                ..
            } => Some((value.span, *axis)),
            _ => None,
        }
    }

    /// The note for operands that do not broadcast because a reduction dropped the axis
    /// that would have lined them up (`x - max(x, axis=-1)`): which reduction, and that
    /// `keepdims=true` keeps the axis.
    fn keepdims_note(&self, a: &TExpr, b: &TExpr) -> Option<String> {
        [(a, b), (b, a)].into_iter().find_map(|(reduced, other)| {
            let (span, axis) = self.dropped_axis(reduced)?;
            let mut kept = reduced.ty.shape.clone();
            kept.insert(axis.min(kept.len()), 1);
            broadcast(&kept, &other.ty.shape)?;
            Some(format!(
                "the reduction on line {} dropped axis {axis}; write `keepdims=true` to keep it",
                self.line_of(span)
            ))
        })
    }

    fn error(&mut self, diag: Diagnostic) {
        self.diags.push(diag);
    }

    /// Binds a new name, reporting a duplicate (the new binding replaces the old).
    fn bind(&mut self, name: &ast::Ident, binding: Binding) {
        if let Some(first) = self.names.get(&name.name) {
            let what = match first.binding {
                Binding::Size(_) => "a size",
                Binding::Param(..) => "a parameter",
                _ => "a `let`",
            };
            let first_span = first.span;
            self.error(
                Diagnostic::error(
                    codes::DUPLICATE_NAME,
                    format!("the name `{}` is defined twice", name.name),
                )
                .with_primary(name.span, "defined again here")
                .with_secondary(first_span, format!("first defined here, as {what}"))
                .with_note("every size, parameter and `let` of a kernel needs its own name"),
            );
        }
        self.names.insert(
            name.name.clone(),
            Entry {
                binding,
                span: name.span,
            },
        );
    }

    /// Checks a dim or size value against the limits. `what` names it (`a dim`,
    /// `size \`N\``), `origin` says where a size's value comes from (may be empty).
    fn check_dim_value(
        &mut self,
        value: Option<u64>,
        text: &str,
        span: Span,
        what: &str,
        origin: &str,
    ) -> Option<u64> {
        match value {
            Some(0) => {
                self.error(
                    Diagnostic::error(
                        codes::ZERO_DIM,
                        format!("{what} must be at least 1, found 0{origin}"),
                    )
                    .with_primary(span, "every dim must be at least 1"),
                );
                None
            }
            Some(v) if v <= MAX_ELEMS => Some(v),
            _ => {
                self.error(
                    Diagnostic::error(
                        codes::DIM_OVERFLOW,
                        format!("{what} is too large: {text}{origin}"),
                    )
                    .with_primary(span, format!("dims are limited to 2^48 = {MAX_ELEMS}")),
                );
                None
            }
        }
    }

    /// Binds the sizes: a define overrides the default.
    fn sizes(&mut self, k: &ast::Kernel) -> Vec<(String, Option<u64>)> {
        let mut out = Vec::new();
        for s in &k.sizes {
            let define = self.defines.iter().rev().find(|(n, _)| *n == s.name.name);
            let what = format!("size `{}`", s.name.name);
            let value = match (define, &s.default) {
                (Some((_, v)), _) => {
                    let origin = format!(" (set by the define `{}={v}`)", s.name.name);
                    if *v <= 0 {
                        self.error(
                            Diagnostic::error(
                                codes::ZERO_DIM,
                                format!("{what} must be at least 1, found {v}{origin}"),
                            )
                            .with_primary(s.name.span, "every dim must be at least 1"),
                        );
                        None
                    } else {
                        let v = *v as u64;
                        self.check_dim_value(Some(v), &v.to_string(), s.name.span, &what, &origin)
                    }
                }
                (None, Some(lit)) => {
                    self.check_dim_value(lit.value, &lit.text, lit.span, &what, " (its default)")
                }
                (None, None) => {
                    self.error(
                        Diagnostic::error(
                            codes::MISSING_SIZE,
                            format!("size `{}` has no value", s.name.name),
                        )
                        .with_primary(s.name.span, "no default here and no define given")
                        .with_note(format!(
                            "give it a default (`{0} = 128`) or define it when compiling (`-D {0}=128`)",
                            s.name.name
                        )),
                    );
                    None
                }
            };
            self.bind(&s.name, Binding::Size(value));
            out.push((s.name.name.clone(), value));
        }
        out
    }

    /// Checks an element count against the limit.
    fn check_elems(&mut self, shape: &[u64], what: impl FnOnce() -> String, span: Span) -> bool {
        let count = shape.iter().try_fold(1u64, |acc, &d| acc.checked_mul(d));
        match count {
            Some(c) if c <= MAX_ELEMS => true,
            _ => {
                let count = match count {
                    Some(c) => c.to_string(),
                    None => "more than 2^64".to_string(),
                };
                self.error(
                    Diagnostic::error(
                        codes::DIM_OVERFLOW,
                        format!("{} has too many elements ({count})", what()),
                    )
                    .with_primary(
                        span,
                        format!("values are limited to 2^48 = {MAX_ELEMS} elements"),
                    ),
                );
                false
            }
        }
    }

    /// Resolves a written type.
    fn ty(&mut self, t: &ast::TypeExpr) -> Option<TensorType> {
        let rank = t.dims.len();
        let mut ok = true;
        if rank == 0 || rank > MAX_RANK {
            self.error(
                Diagnostic::error(
                    codes::TYPE_RANK,
                    format!("a type of rank {rank}: ranks 1 to {MAX_RANK} are supported"),
                )
                .with_primary(t.span, format!("this type has {rank} dims")),
            );
            ok = false;
        }
        let mut shape = Vec::with_capacity(rank);
        for dim in &t.dims {
            match dim {
                ast::Dim::Expr(e) => match self.int_expr(e, "a dim") {
                    Some(v) if v <= 0 => {
                        self.error(
                            Diagnostic::error(
                                codes::ZERO_DIM,
                                format!("a dim must be at least 1, found {v}"),
                            )
                            .with_primary(e.span, "every dim must be at least 1"),
                        );
                        ok = false;
                    }
                    Some(v) => shape.push(v as u64),
                    None => ok = false,
                },
                ast::Dim::Int(lit) => {
                    match self.check_dim_value(lit.value, &lit.text, lit.span, "a dim", "") {
                        Some(v) => shape.push(v),
                        None => ok = false,
                    }
                }
                ast::Dim::Size(name) => match self.names.get(&name.name).map(|e| e.binding.clone())
                {
                    Some(Binding::Size(Some(v))) => shape.push(v),
                    Some(Binding::Size(None)) => ok = false,
                    Some(_) => {
                        self.error(
                            Diagnostic::error(
                                codes::UNBOUND_SIZE,
                                format!("`{}` is not a size of this kernel", name.name),
                            )
                            .with_primary(name.span, "a dim must be an integer or a size")
                            .with_note("sizes are declared after the kernel's name: `kernel f<N = 128>(...)`"),
                        );
                        ok = false;
                    }
                    None => {
                        let sizes: Vec<&str> = self
                            .names
                            .iter()
                            .filter(|(_, e)| matches!(e.binding, Binding::Size(_)))
                            .map(|(n, _)| n.as_str())
                            .collect();
                        let mut diag = Diagnostic::error(
                            codes::UNBOUND_SIZE,
                            format!("unknown size `{}`", name.name),
                        )
                        .with_primary(name.span, "not a size of this kernel");
                        diag = match suggest(&name.name, sizes.iter().copied()) {
                            Some(s) => diag.with_note(format!("did you mean `{s}`?")),
                            None if sizes.is_empty() => diag.with_note(format!(
                                "declare it after the kernel's name: `kernel f<{} = 128>(...)`",
                                name.name
                            )),
                            None => diag.with_note(format!(
                                "the sizes of this kernel are: {}",
                                sizes
                                    .iter()
                                    .map(|s| format!("`{s}`"))
                                    .collect::<Vec<_>>()
                                    .join(", ")
                            )),
                        };
                        self.error(diag);
                        ok = false;
                    }
                },
            }
        }
        if !ok {
            return None;
        }
        let ty = TensorType {
            dtype: t.dtype,
            shape,
        };
        if !self.check_elems(&ty.shape, || format!("the type `{ty}`"), t.span) {
            return None;
        }
        Some(ty)
    }

    /// Checks a whole kernel.
    fn kernel(&mut self, k: &ast::Kernel) -> Option<CheckedKernel> {
        let sizes = self.sizes(k);
        let mut params = Vec::new();
        for (i, p) in k.params.iter().enumerate() {
            let ty = self.ty(&p.ty);
            self.bind(&p.name, Binding::Param(i, ty.clone()));
            params.push(ty.map(|ty| CheckedParam {
                name: p.name.name.clone(),
                ty,
                span: p.span,
            }));
        }
        let results: Vec<Option<TensorType>> = k.results.iter().map(|t| self.ty(t)).collect();

        let mut returned: Option<(&ast::Stmt, Vec<Option<TExpr>>)> = None;
        for stmt in &k.body {
            if let Some((ret, _)) = &returned {
                let ret_span = ret.span;
                let diag = if matches!(stmt.kind, StmtKind::Return { .. }) {
                    Diagnostic::error(codes::DUPLICATE_RETURN, "a kernel has exactly one `return`")
                        .with_primary(stmt.span, "second `return`")
                        .with_secondary(ret_span, "first `return`")
                } else {
                    Diagnostic::error(codes::MISPLACED_RETURN, "statement after `return`")
                        .with_primary(stmt.span, "this statement comes after the `return`")
                        .with_secondary(ret_span, "the `return` must be the last statement")
                };
                self.error(diag);
                if matches!(stmt.kind, StmtKind::Return { .. }) {
                    continue;
                }
            }
            match &stmt.kind {
                StmtKind::Let { name, ty, value } => self.let_stmt(stmt, name, ty.as_ref(), value),
                StmtKind::Return { values, .. } => {
                    let checked: Vec<Option<TExpr>> = values.iter().map(|v| self.expr(v)).collect();
                    returned = Some((stmt, checked));
                }
                StmtKind::Error => {}
            }
        }
        let Some((ret_stmt, values)) = returned else {
            self.error(
                Diagnostic::error(
                    codes::MISSING_RETURN,
                    format!("kernel `{}` has no `return`", k.name.name),
                )
                .with_primary(
                    k.close_span,
                    "expected a `return` before the end of the kernel",
                )
                .with_secondary(k.results_span, "the kernel declares its results here"),
            );
            return None;
        };
        if values.len() != results.len() {
            let plural = |n: usize| if n == 1 { "value" } else { "values" };
            self.error(
                Diagnostic::error(
                    codes::RESULT_COUNT,
                    format!(
                        "kernel `{}` returns {} {} but its signature declares {} {}",
                        k.name.name,
                        values.len(),
                        plural(values.len()),
                        results.len(),
                        plural(results.len())
                    ),
                )
                .with_primary(
                    ret_stmt.span,
                    format!("{} {} returned here", values.len(), plural(values.len())),
                )
                .with_secondary(
                    k.results_span,
                    format!("{} {} declared here", results.len(), plural(results.len())),
                ),
            );
            return None;
        }
        let mut returns = Vec::new();
        for (i, (value, (expected, written))) in values
            .into_iter()
            .zip(results.iter().zip(&k.results))
            .enumerate()
        {
            let (Some(value), Some(expected)) = (value, expected) else {
                continue;
            };
            if is_scalar(&value) || value.ty != *expected {
                let which = if results.len() == 1 {
                    "the returned value".to_string()
                } else {
                    format!("returned value {}", i + 1)
                };
                let mut diag = Diagnostic::error(
                    codes::RESULT_MISMATCH,
                    format!(
                        "{which} does not match the signature: expected `{expected}`, found {}",
                        describe(&value)
                    ),
                )
                .with_primary(value.span, format!("this is {}", describe(&value)))
                .with_secondary(written.span, format!("the signature declares `{expected}`"));
                if !is_scalar(&value) && value.ty.shape == expected.shape {
                    diag = diag.with_note(format!(
                        "results are never converted implicitly: write `... as {}`",
                        expected.dtype
                    ));
                }
                self.error(diag);
                continue;
            }
            returns.push(value);
        }
        if self.diags.iter().any(Diagnostic::is_error) {
            return None;
        }
        Some(CheckedKernel {
            name: k.name.name.clone(),
            span: k.span,
            sizes: sizes
                .into_iter()
                .map(|(n, v)| (n, v.unwrap_or(0)))
                .collect(),
            params: params.into_iter().flatten().collect(),
            results: results.into_iter().flatten().collect(),
            lets: std::mem::take(&mut self.lets),
            returns,
        })
    }

    /// Checks a `let`.
    fn let_stmt(
        &mut self,
        stmt: &ast::Stmt,
        name: &ast::Ident,
        annotation: Option<&ast::TypeExpr>,
        value: &ast::Expr,
    ) {
        let checked = self.expr(value);
        let annotated = annotation.map(|t| (self.ty(t), t.span));
        if let (Some(v), Some((Some(expected), ann_span))) = (&checked, &annotated) {
            if is_scalar(v) || v.ty != *expected {
                self.error(
                    Diagnostic::error(
                        codes::LET_ANNOTATION_MISMATCH,
                        format!(
                            "the value of `{}` does not match its annotation: expected `{expected}`, found {}",
                            name.name,
                            describe(v)
                        ),
                    )
                    .with_primary(v.span, format!("this is {}", describe(v)))
                    .with_secondary(*ann_span, "annotated here")
                    .with_note("an annotation is checked, never converted to; use `as` to convert"),
                );
            }
        }
        let binding = match checked {
            None => Binding::Poisoned,
            Some(TExpr {
                kind: TExprKind::Scalar(v),
                ty,
                ..
            }) => Binding::ScalarLet(v, ty.dtype),
            Some(value) => {
                self.lets.push(CheckedLet {
                    name: name.name.clone(),
                    value,
                    span: stmt.span,
                });
                Binding::Let(self.lets.len() - 1)
            }
        };
        self.bind(name, binding);
    }

    /// Checks an expression; `None` if it is in error (already reported).
    fn expr(&mut self, e: &ast::Expr) -> Option<TExpr> {
        match &e.kind {
            ExprKind::Int(lit) => Some(scalar_of(
                lit.text.parse::<f64>().unwrap_or(f64::INFINITY),
                Dtype::I32,
                e.span,
            )),
            ExprKind::Float(v) => Some(scalar(*v, e.span)),
            ExprKind::Inf => Some(scalar(f64::INFINITY, e.span)),
            ExprKind::TooDeep => None,
            ExprKind::Name(name) => self.name(name),
            ExprKind::Paren(inner) => self.expr(inner),
            ExprKind::Neg(inner) => {
                let v = self.expr(inner)?;
                self.unary(UnaryFn::Neg, v, e.span)
            }
            ExprKind::Cast { value, dtype, .. } => {
                let v = self.expr(value)?;
                Some(match v.kind {
                    TExprKind::Scalar(x) if dtype.is_float() => {
                        scalar(f64::from(runtime::numeric::round(*dtype, x as f32)), e.span)
                    }
                    TExprKind::Scalar(x) => scalar_of(v2::cast_scalar(x, *dtype), *dtype, e.span),
                    _ => TExpr {
                        ty: TensorType {
                            dtype: *dtype,
                            shape: v.ty.shape.clone(),
                        },
                        kind: TExprKind::Cast(Box::new(v)),
                        span: e.span,
                    },
                })
            }
            ExprKind::Binary {
                op,
                op_span,
                lhs,
                rhs,
            } => {
                let a = self.expr(lhs);
                let b = self.expr(rhs);
                if op.is_comparison() && self.chained_comparison(lhs, *op_span) {
                    return None;
                }
                let (a, b) = (a?, b?);
                match op {
                    BinOp::Add => self.elementwise(BinaryOp::Add, a, b, *op_span, e.span),
                    BinOp::Sub => self.elementwise(BinaryOp::Sub, a, b, *op_span, e.span),
                    BinOp::Mul => self.elementwise(BinaryOp::Mul, a, b, *op_span, e.span),
                    BinOp::Div => self.elementwise(BinaryOp::Div, a, b, *op_span, e.span),
                    BinOp::Matmul => self.matmul(a, b, *op_span, e.span),
                    BinOp::Lt => self.elementwise(BinaryOp::Lt, a, b, *op_span, e.span),
                    BinOp::Le => self.elementwise(BinaryOp::Le, a, b, *op_span, e.span),
                    BinOp::Gt => self.elementwise(BinaryOp::Gt, a, b, *op_span, e.span),
                    BinOp::Ge => self.elementwise(BinaryOp::Ge, a, b, *op_span, e.span),
                    BinOp::Eq => self.elementwise(BinaryOp::Eq, a, b, *op_span, e.span),
                    BinOp::Ne => self.elementwise(BinaryOp::Ne, a, b, *op_span, e.span),
                }
            }
            ExprKind::Call { func, args } => self.call(func, args, e.span),
            ExprKind::Index { base, items } => {
                let v = self.expr(base)?;
                self.index(v, items, e.span)
            }
        }
    }

    /// Resolves a name used as a value.
    fn name(&mut self, name: &ast::Ident) -> Option<TExpr> {
        let Some(entry) = self.names.get(&name.name) else {
            let mut diag =
                Diagnostic::error(codes::UNKNOWN_NAME, format!("unknown name `{}`", name.name))
                    .with_primary(name.span, "not a parameter or `let` of this kernel");
            if builtin(&name.name).is_some() {
                diag = diag.with_note(format!(
                    "`{0}` is a builtin function: call it, as in `{0}(x)`",
                    name.name
                ));
            } else if let Some(s) = suggest(
                &name.name,
                self.names
                    .iter()
                    .filter(|(_, e)| !matches!(e.binding, Binding::Size(_)))
                    .map(|(n, _)| n.as_str()),
            ) {
                diag = diag.with_note(format!("did you mean `{s}`?"));
            }
            self.error(diag);
            return None;
        };
        match &entry.binding {
            // A size used as a value is a weak scalar with the size's value, an integer
            // as a NumPy user's size is: it takes a float tensor's dtype (`x / N`), and
            // meeting an `i32` it is an `i32` (`arange(T) == T - 1`).
            Binding::Size(v) => v.map(|v| scalar_of(v as f64, Dtype::I32, name.span)),
            Binding::Param(i, ty) => ty.clone().map(|ty| TExpr {
                kind: TExprKind::Param(*i),
                ty,
                span: name.span,
            }),
            Binding::Let(i) => self.lets.get(*i).map(|l| TExpr {
                kind: TExprKind::Let(*i),
                ty: l.value.ty.clone(),
                span: name.span,
            }),
            Binding::ScalarLet(v, d) => Some(scalar_of(*v, *d, name.span)),
            Binding::Poisoned => None,
        }
    }

    /// A unary elementwise function; folded on a scalar.
    fn unary(&mut self, f: UnaryFn, v: TExpr, span: Span) -> Option<TExpr> {
        if !self.unary_takes(f, &v, span) {
            return None;
        }
        Some(match v.kind {
            // Negation and `abs` keep an integer literal an integer (it wraps only once it
            // meets an `i32`, where it must fit); `logical_not` keeps a truth value.
            TExprKind::Scalar(x) => match (f, v.ty.dtype) {
                (UnaryFn::Neg | UnaryFn::Abs | UnaryFn::Not, d) => {
                    scalar_of(fold_unary(f, x), d, span)
                }
                _ => scalar(fold_unary(f, x), span),
            },
            _ => TExpr {
                ty: v.ty.clone(),
                kind: TExprKind::Unary(f, Box::new(v)),
                span,
            },
        })
    }

    /// A binary elementwise operation with broadcasting and promotion.
    fn elementwise(
        &mut self,
        op: BinaryOp,
        a: TExpr,
        b: TExpr,
        op_span: Span,
        span: Span,
    ) -> Option<TExpr> {
        let operand = self.operand_dtype(op, &a, &b, op_span)?;
        // Comparisons and logical operations give `bool`; the rest their operands' dtype.
        let dtype = if op.is_comparison() || matches!(op, BinaryOp::And | BinaryOp::Or) {
            Dtype::Bool
        } else if op == BinaryOp::Div
            || matches!((op, &a.kind, &b.kind), (BinaryOp::Pow, TExprKind::Scalar(x), TExprKind::Scalar(y))
                if fold_binary(op, *x, *y).fract() != 0.0)
        {
            // Only literals reach here as integers; their quotient is a float, and so is a
            // power that is not an integer (`pow(2, -1)` is 0.5).
            if operand == Dtype::I32 {
                Dtype::F32
            } else {
                operand
            }
        } else {
            operand
        };
        let ty = match (&a.kind, &b.kind) {
            (TExprKind::Scalar(x), TExprKind::Scalar(y)) => {
                return Some(scalar_of(fold_binary(op, *x, *y), dtype, span))
            }
            (TExprKind::Scalar(_), _) => TensorType {
                dtype,
                shape: b.ty.shape.clone(),
            },
            (_, TExprKind::Scalar(_)) => TensorType {
                dtype,
                shape: a.ty.shape.clone(),
            },
            _ => {
                let Some(shape) = broadcast(&a.ty.shape, &b.ty.shape) else {
                    let what = match op {
                        BinaryOp::Maximum => "the operands of `maximum`".to_string(),
                        BinaryOp::Minimum => "the operands of `minimum`".to_string(),
                        BinaryOp::Pow => "the operands of `pow`".to_string(),
                        _ => "the operands".to_string(),
                    };
                    let mut diag = Diagnostic::error(
                        codes::SHAPES_DO_NOT_BROADCAST,
                        format!("shapes do not broadcast: `{}` and `{}`", a.ty, b.ty),
                    )
                    .with_primary(op_span, format!("{what} cannot be broadcast together"))
                    .with_secondary(a.span, format!("this is `{}`", a.ty))
                    .with_secondary(b.span, format!("this is `{}`", b.ty))
                    .with_note(
                        "aligned from the last axis, each pair of dims must be equal or one of them 1",
                    );
                    if let Some(note) = self.keepdims_note(&a, &b) {
                        diag = diag.with_note(note);
                    }
                    self.error(diag);
                    return None;
                };
                let ty = TensorType { dtype, shape };
                if !self.check_elems(&ty.shape, || format!("the result `{ty}`"), span) {
                    return None;
                }
                ty
            }
        };
        Some(TExpr {
            kind: TExprKind::Binary(op, Box::new(a), Box::new(b)),
            ty,
            span,
        })
    }

    /// `a @ b`: NumPy matmul of ranks 2 to 6 with broadcast batch axes; f32 result.
    fn matmul(&mut self, a: TExpr, b: TExpr, op_span: Span, span: Span) -> Option<TExpr> {
        if !self.float_only("`@`", &a, op_span) || !self.float_only("`@`", &b, op_span) {
            return None;
        }
        for (side, v) in [("left", &a), ("right", &b)] {
            if is_scalar(v) || v.ty.shape.len() < 2 {
                let found = if is_scalar(v) {
                    "a scalar".to_string()
                } else {
                    format!("`{}` of rank 1", v.ty)
                };
                self.error(
                    Diagnostic::error(
                        codes::MATMUL_RANK,
                        format!("the {side} operand of `@` must have rank 2 to {MAX_RANK}, found {found}"),
                    )
                    .with_primary(v.span, format!("this is {}", describe(v)))
                    .with_secondary(op_span, "in this matmul")
                    .with_note("reshape a vector to a matrix first, e.g. `reshape(v, [1, 64])`"),
                );
                return None;
            }
        }
        let (ra, rb) = (a.ty.shape.len(), b.ty.shape.len());
        let (m, ka) = (a.ty.shape[ra - 2], a.ty.shape[ra - 1]);
        let (kb, n) = (b.ty.shape[rb - 2], b.ty.shape[rb - 1]);
        if ka != kb {
            self.error(
                Diagnostic::error(
                    codes::MATMUL_INNER_MISMATCH,
                    format!(
                        "matmul inner dimensions differ: `{}` @ `{}` ({ka} vs {kb})",
                        a.ty, b.ty
                    ),
                )
                .with_primary(op_span, "inner dimensions must be equal")
                .with_secondary(a.span, format!("`{}` has {ka} columns", a.ty))
                .with_secondary(b.span, format!("`{}` has {kb} rows", b.ty)),
            );
            return None;
        }
        let Some(mut shape) = broadcast(&a.ty.shape[..ra - 2], &b.ty.shape[..rb - 2]) else {
            self.error(
                Diagnostic::error(
                    codes::SHAPES_DO_NOT_BROADCAST,
                    format!(
                        "the batch axes of a matmul do not broadcast: `{}` @ `{}` (batch shapes {} and {})",
                        a.ty,
                        b.ty,
                        shape_text(&a.ty.shape[..ra - 2]),
                        shape_text(&b.ty.shape[..rb - 2])
                    ),
                )
                .with_primary(op_span, "batch axes cannot be broadcast together")
                .with_secondary(a.span, format!("this is `{}`", a.ty))
                .with_secondary(b.span, format!("this is `{}`", b.ty)),
            );
            return None;
        };
        shape.push(m);
        shape.push(n);
        let ty = TensorType {
            dtype: Dtype::F32,
            shape,
        };
        if !self.check_elems(&ty.shape, || format!("the result `{ty}`"), span) {
            return None;
        }
        Some(TExpr {
            kind: TExprKind::Matmul(Box::new(a), Box::new(b)),
            ty,
            span,
        })
    }

    /// Reports an operand that must be a tensor but is a scalar.
    fn need_tensor(&mut self, func: &str, v: &TExpr) -> bool {
        if is_scalar(v) {
            self.error(
                Diagnostic::error(
                    codes::SCALAR_OPERAND,
                    format!("`{func}` needs a tensor, found a scalar"),
                )
                .with_primary(v.span, "this is a scalar"),
            );
            false
        } else {
            true
        }
    }

    /// Checks a builtin call.
    fn call(&mut self, func: &ast::Ident, args: &[ast::Arg], span: Span) -> Option<TExpr> {
        let Some(b) = builtin(&func.name) else {
            let mut diag = Diagnostic::error(
                codes::UNKNOWN_BUILTIN,
                format!("unknown builtin `{}`", func.name),
            )
            .with_primary(func.span, "not a builtin function");
            if let Some(s) = suggest(&func.name, builtin_names()) {
                diag = diag.with_note(format!("did you mean `{s}`?"));
            } else if self.names.contains_key(&func.name) {
                diag = diag.with_note(format!("`{}` is a value, not a function", func.name));
            } else {
                diag = diag.with_note(format!(
                    "the builtins are: {}",
                    builtin_names().collect::<Vec<_>>().join(", ")
                ));
            }
            // The arguments are still checked for their own errors.
            for a in args {
                if let ArgValue::Expr(e) = &a.value {
                    let _ = self.expr(e);
                }
            }
            self.error(diag);
            return None;
        };
        let name = func.name.as_str();
        let usage = b.usage(name);

        // Sort the arguments into positional and keyword ones.
        let mut positional: Vec<&ast::Arg> = Vec::new();
        let mut keywords: IndexMap<&str, &ast::Arg> = IndexMap::new();
        let mut ok = true;
        let mut first_keyword: Option<Span> = None;
        for a in args {
            match &a.name {
                None => {
                    if let Some(kw) = first_keyword {
                        self.error(
                            Diagnostic::error(
                                codes::POSITIONAL_AFTER_KEYWORD,
                                "positional argument after a keyword argument",
                            )
                            .with_primary(a.span, "positional argument")
                            .with_secondary(kw, "after this keyword argument")
                            .with_note(format!("usage: `{usage}`")),
                        );
                        ok = false;
                    }
                    positional.push(a);
                }
                Some(kw) => {
                    first_keyword.get_or_insert(a.span);
                    let allowed = b.keywords().iter().any(|(n, _)| *n == kw.name);
                    if !allowed {
                        let note = if b.keywords().is_empty() {
                            format!("`{name}` takes no keyword arguments; usage: `{usage}`")
                        } else {
                            let names: Vec<String> =
                                b.keywords().iter().map(|(n, _)| format!("`{n}`")).collect();
                            format!("`{name}` takes {}; usage: `{usage}`", names.join(", "))
                        };
                        let mut diag = Diagnostic::error(
                            codes::UNKNOWN_KEYWORD,
                            format!("`{name}` has no keyword argument `{}`", kw.name),
                        )
                        .with_primary(kw.span, "unknown keyword");
                        if let Some(s) = suggest(&kw.name, b.keywords().iter().map(|(n, _)| *n)) {
                            diag = diag.with_note(format!("did you mean `{s}`?"));
                        }
                        self.error(diag.with_note(note));
                        ok = false;
                    } else if let Some(first) = keywords.get(kw.name.as_str()) {
                        let first_span = first.span;
                        self.error(
                            Diagnostic::error(
                                codes::DUPLICATE_KEYWORD,
                                format!("keyword argument `{}` given twice", kw.name),
                            )
                            .with_primary(a.span, "given again here")
                            .with_secondary(first_span, "first given here"),
                        );
                        ok = false;
                    } else {
                        keywords.insert(&kw.name, a);
                    }
                }
            }
        }
        if positional.len() != b.positional() {
            let expected = b.positional();
            let plural = if expected == 1 {
                "argument"
            } else {
                "arguments"
            };
            let mut diag = Diagnostic::error(
                codes::WRONG_ARGUMENT_COUNT,
                format!(
                    "`{name}` takes {expected} positional {plural}, found {}",
                    positional.len()
                ),
            )
            .with_primary(span, format!("{} positional given", positional.len()))
            .with_note(format!("usage: `{usage}`"));
            if matches!(
                b,
                Builtin::Reduce(_) | Builtin::ArgReduce(_) | Builtin::Cumsum
            ) && positional.len() == 2
            {
                diag = diag.with_note(format!(
                    "the axis is a keyword argument: `{name}(x, axis=1)`"
                ));
                if let Builtin::Reduce(ReduceFn::Max | ReduceFn::Min) = b {
                    diag = diag.with_note(format!(
                        "the elementwise {name}imum of two tensors is `{name}imum(a, b)`"
                    ));
                }
            }
            self.error(diag);
            ok = false;
        }
        // A missing keyword is reported only when the positional arguments are right (a
        // misplaced axis is reported once, above).
        for (kw, required) in b.keywords() {
            if ok && *required && !keywords.contains_key(kw) {
                self.error(
                    Diagnostic::error(
                        codes::MISSING_KEYWORD,
                        format!("`{name}` needs the keyword argument `{kw}`"),
                    )
                    .with_primary(span, format!("`{kw}` is missing"))
                    .with_note(format!("usage: `{usage}`")),
                );
                ok = false;
            }
        }

        // The tensor operands (the list of `reshape` aside).
        let tensor_count = match b {
            Builtin::Reshape | Builtin::BroadcastTo => 1,
            Builtin::Concat | Builtin::Arange => 0,
            _ => b.positional(),
        };
        let mut operands = Vec::new();
        for a in positional.iter().take(tensor_count) {
            match &a.value {
                ArgValue::Expr(e) => match self.expr(e) {
                    Some(v) => operands.push(v),
                    None => ok = false,
                },
                other => {
                    self.error(
                        Diagnostic::error(
                            codes::WRONG_ARGUMENT_KIND,
                            format!("`{name}` expects a tensor here, found {}", arg_kind(other)),
                        )
                        .with_primary(other.span(), "expected a tensor expression"),
                    );
                    ok = false;
                }
            }
        }
        // Arguments past the expected count are still checked for their own errors.
        for a in positional.iter().skip(b.positional()) {
            if let ArgValue::Expr(e) = &a.value {
                let _ = self.expr(e);
            }
        }
        if !ok || operands.len() != tensor_count {
            return None;
        }
        let kw = |n: &str| keywords.get(n).map(|a| &a.value);
        match b {
            Builtin::Unary(f) => {
                let v = operands.pop()?;
                self.unary(f, v, span)
            }
            Builtin::Where => {
                let b = operands.pop()?;
                let a = operands.pop()?;
                let c = operands.pop()?;
                self.where_call(c, a, b, func.span, span)
            }
            Builtin::Arange => self.arange_call(&positional.first()?.value, span),
            Builtin::Take => {
                let idx = operands.pop()?;
                let x = operands.pop()?;
                let axis = match kw("axis") {
                    None => 0,
                    Some(a) => self.int_keyword(name, "axis", a)?,
                };
                self.take_call(x, idx, axis, kw("axis").map_or(span, ArgValue::span), span)
            }
            Builtin::Conv => {
                let w = operands.pop()?;
                let x = operands.pop()?;
                let lists = [kw("stride"), kw("padding"), kw("dilation")];
                self.conv_call(x, w, lists, kw("groups"), span)
            }
            Builtin::Binary(op) => {
                let rhs = operands.pop()?;
                let lhs = operands.pop()?;
                self.elementwise(op, lhs, rhs, func.span, span)
            }
            Builtin::Clip => {
                let hi = operands.pop()?;
                let lo = operands.pop()?;
                let x = operands.pop()?;
                // The three operands broadcast together; the error names `clip`, not the
                // `maximum` and `minimum` it is checked as.
                let tensors: Vec<&TExpr> = [&x, &lo, &hi]
                    .into_iter()
                    .filter(|v| !is_scalar(v))
                    .collect();
                let mut shape: Vec<u64> = Vec::new();
                for v in &tensors {
                    match broadcast(&shape, &v.ty.shape) {
                        Some(s) => shape = s,
                        None => {
                            let mut diag = Diagnostic::error(
                                codes::SHAPES_DO_NOT_BROADCAST,
                                format!(
                                    "shapes do not broadcast: {}",
                                    tensors
                                        .iter()
                                        .map(|t| format!("`{}`", t.ty))
                                        .collect::<Vec<_>>()
                                        .join(", ")
                                ),
                            )
                            .with_primary(
                                func.span,
                                "the operands of `clip` cannot be broadcast together",
                            );
                            for t in &tensors {
                                diag = diag.with_secondary(t.span, format!("this is `{}`", t.ty));
                            }
                            self.error(diag.with_note(
                                "aligned from the last axis, each pair of dims must be equal or one of them 1",
                            ));
                            return None;
                        }
                    }
                }
                let lower = self.elementwise(BinaryOp::Maximum, x, lo, func.span, span)?;
                self.elementwise(BinaryOp::Minimum, lower, hi, func.span, span)
            }
            Builtin::Reduce(f) => {
                let v = operands.pop()?;
                let axes = match kw("axis") {
                    Some(ArgValue::List(items, list_span)) => {
                        if !self.need_tensor(name, &v) {
                            return None;
                        }
                        Some(self.axis_list(name, items, &v, *list_span)?)
                    }
                    _ => None,
                };
                let axis = match &axes {
                    Some(list) => list[0] as i64,
                    None => kw("axis").and_then(|a| self.int_keyword(name, "axis", a))?,
                };
                let keepdims = match kw("keepdims") {
                    None => false,
                    Some(ArgValue::Bool(b, _)) => *b,
                    Some(other) => {
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
                        return None;
                    }
                };
                if let Some(list) = axes.filter(|l| l.len() > 1) {
                    if !self.reduce_takes(name, f, &v, span) {
                        return None;
                    }
                    return self.reduce_axes(name, f, v, &list, keepdims, span);
                }
                self.reduce(
                    name,
                    f,
                    v,
                    axis,
                    keepdims,
                    kw("axis").map_or(span, ArgValue::span),
                    span,
                )
            }
            Builtin::ArgReduce(max) => {
                let v = operands.pop()?;
                let axis_arg = kw("axis")?;
                let keepdims = match kw("keepdims") {
                    None => false,
                    Some(a) => self.bool_keyword(a)?,
                };
                self.arg_reduce(name, max, v, axis_arg, keepdims, span)
            }
            Builtin::Cumsum => {
                let v = operands.pop()?;
                self.cumsum(v, kw("axis")?, span)
            }
            Builtin::Transpose => {
                let v = operands.pop()?;
                self.transpose(v, kw("perm"), span)
            }
            Builtin::Reshape => {
                let v = operands.pop()?;
                let target = &positional.get(1)?.value;
                self.reshape(v, target, span)
            }
            Builtin::BroadcastTo => {
                let v = operands.pop()?;
                let target = &positional.get(1)?.value;
                self.broadcast_to(v, target, span)
            }
            Builtin::Concat => {
                let parts = &positional.first()?.value;
                self.concat(parts, kw("axis"), span)
            }
            Builtin::Pad => {
                let v = operands.pop()?;
                self.pad(v, kw("before"), kw("after"), kw("value"), span)
            }
            Builtin::Pool(k) => {
                let v = operands.pop()?;
                let args = pool::KEYWORDS.map(kw);
                self.pool(k, v, args, span)
            }
            Builtin::Tril => {
                let v = operands.pop()?;
                let k = match kw("k") {
                    None => 0,
                    Some(a) => self.int_keyword(name, "k", a)?,
                };
                let fill = self.scalar_keyword(kw("fill"), "`fill`", "`0.0` or `-inf`")?;
                if !self.need_tensor(name, &v) || !self.float_only("`tril`", &v, span) {
                    return None;
                }
                if v.ty.shape.len() < 2 {
                    self.error(
                        Diagnostic::error(
                            codes::OPERATION_RANK,
                            format!("`tril` needs rank 2 or more, found `{}`", v.ty),
                        )
                        .with_primary(v.span, "this has rank 1")
                        .with_note("`tril` masks the last two axes"),
                    );
                    return None;
                }
                Some(TExpr {
                    ty: v.ty.clone(),
                    kind: TExprKind::Tril {
                        arg: Box::new(v),
                        k,
                        fill,
                    },
                    span,
                })
            }
        }
    }

    /// The value of a keyword that takes a scalar constant (`tril`'s `fill`, `pad`'s
    /// `value`), 0 when it is not given; `what` names it in messages and `example` gives
    /// numbers it could be.
    pub(super) fn scalar_keyword(
        &mut self,
        arg: Option<&ArgValue>,
        what: &str,
        example: &str,
    ) -> Option<f64> {
        let hint = format!("expected a number such as {example}");
        match arg {
            None => Some(0.0),
            Some(ArgValue::Expr(e)) => {
                let f = self.expr(e)?;
                match f.kind {
                    TExprKind::Scalar(x) => Some(x),
                    _ => {
                        self.error(
                            Diagnostic::error(
                                codes::WRONG_ARGUMENT_KIND,
                                format!("{what} must be a scalar constant, found `{}`", f.ty),
                            )
                            .with_primary(f.span, hint),
                        );
                        None
                    }
                }
            }
            Some(other) => {
                self.error(
                    Diagnostic::error(
                        codes::WRONG_ARGUMENT_KIND,
                        format!(
                            "{what} must be a scalar constant, found {}",
                            arg_kind(other)
                        ),
                    )
                    .with_primary(other.span(), hint),
                );
                None
            }
        }
    }
    /// An integer keyword argument.
    fn int_keyword(&mut self, func: &str, kw: &str, value: &ArgValue) -> Option<i64> {
        let found = match value {
            ArgValue::Expr(e) => match int_arg(e) {
                IntArg::Value(v) => return Some(v),
                IntArg::TooLarge => "an integer too large".to_string(),
                // An integer expression of sizes (`k=S - 1`).
                IntArg::NotAnInteger => match self.int_eval(e) {
                    Ok(v) => return Some(v),
                    Err(sizes::IntError::Reported) => return None,
                    Err(sizes::IntError::NotInteger(..)) => arg_kind(value).to_string(),
                },
            },
            other => arg_kind(other).to_string(),
        };
        self.error(
            Diagnostic::error(
                codes::WRONG_ARGUMENT_KIND,
                format!("`{kw}` of `{func}` must be an integer, found {found}"),
            )
            .with_primary(value.span(), "expected an integer such as `1` or `-1`"),
        );
        None
    }

    /// The shape of a reduction of `v` over `axis` (`keepdims` keeps it as 1). A result of
    /// rank 0 is an error at `span` that suggests `keepdims`; `name` is the reduction's.
    pub(super) fn reduced_shape(
        &mut self,
        name: &str,
        v: &TExpr,
        axis: usize,
        keepdims: bool,
        span: Span,
    ) -> Option<Vec<u64>> {
        let mut shape = v.ty.shape.clone();
        if keepdims {
            shape[axis] = 1;
        } else {
            shape.remove(axis);
        }
        if shape.is_empty() {
            self.error(
                Diagnostic::error(
                    codes::OPERATION_RANK,
                    format!(
                        "`{name}` over the only axis of `{}` would give a scalar",
                        v.ty
                    ),
                )
                .with_primary(
                    span,
                    format!("this would have rank 0; ranks 1 to {MAX_RANK} are supported"),
                )
                .with_note(format!(
                    "keep the axis with `{name}(x, axis={axis}, keepdims=true)`"
                )),
            );
            return None;
        }
        Some(shape)
    }

    /// A reduction.
    /// Whether reduction `f` takes `v`'s dtype (for one axis and for a list alike);
    /// `false` after reporting. `sum`, `max` and `min` take integers (the sum wraps); `mean`
    /// takes floats only, and nothing reduces booleans.
    fn reduce_takes(&mut self, name: &str, f: ReduceFn, v: &TExpr, span: Span) -> bool {
        let takes = match v2::kind(v.ty.dtype) {
            v2::Kind::Float => true,
            v2::Kind::Int => f != ReduceFn::Mean,
            v2::Kind::Bool => false,
        };
        if !takes {
            let what = format!("`{name}`");
            self.float_only(&what, v, span);
        }
        takes
    }

    #[allow(clippy::too_many_arguments)]
    fn reduce(
        &mut self,
        name: &str,
        f: ReduceFn,
        v: TExpr,
        axis: i64,
        keepdims: bool,
        axis_span: Span,
        span: Span,
    ) -> Option<TExpr> {
        if !self.need_tensor(name, &v) || !self.reduce_takes(name, f, &v, span) {
            return None;
        }
        let axis = self.axis(axis, &v, axis_span)?;
        let shape = self.reduced_shape(name, &v, axis, keepdims, span)?;
        Some(TExpr {
            ty: TensorType {
                dtype: v.ty.dtype,
                shape,
            },
            kind: TExprKind::Reduce {
                func: f,
                arg: Box::new(v),
                axis,
                keepdims,
            },
            span,
        })
    }

    /// Normalises an axis of `v`, which may be negative.
    fn axis(&mut self, axis: i64, v: &TExpr, span: Span) -> Option<usize> {
        let rank = v.ty.shape.len() as i64;
        if axis < -rank || axis >= rank {
            self.error(
                Diagnostic::error(
                    codes::AXIS_OUT_OF_RANGE,
                    format!("axis {axis} is out of range for `{}` of rank {rank}", v.ty),
                )
                .with_primary(
                    span,
                    format!("expected an axis from {} to {}", -rank, rank - 1),
                )
                .with_secondary(v.span, format!("this is `{}`", v.ty)),
            );
            return None;
        }
        Some(if axis < 0 { axis + rank } else { axis } as usize)
    }

    /// `transpose(x)` or `transpose(x, perm=[...])`.
    fn transpose(&mut self, v: TExpr, perm: Option<&ArgValue>, span: Span) -> Option<TExpr> {
        if !self.need_tensor("transpose", &v) {
            return None;
        }
        let rank = v.ty.shape.len();
        let perm: Vec<usize> = match perm {
            None => {
                if rank < 2 {
                    self.error(
                        Diagnostic::error(
                            codes::OPERATION_RANK,
                            format!("`transpose` swaps the last two axes and needs rank 2 or more, found `{}`", v.ty),
                        )
                        .with_primary(v.span, "this has rank 1"),
                    );
                    return None;
                }
                let mut p: Vec<usize> = (0..rank).collect();
                p.swap(rank - 2, rank - 1);
                p
            }
            Some(ArgValue::List(items, list_span)) => {
                let mut p = Vec::new();
                let mut bad = false;
                for item in items {
                    match item {
                        ListItem::Int { negative, lit, .. } => {
                            let r = rank as i64;
                            let value = lit.value.and_then(|x| i64::try_from(x).ok()).map(|x| {
                                if *negative {
                                    -x
                                } else {
                                    x
                                }
                            });
                            match value {
                                Some(x) if x >= -r && x < r => {
                                    p.push(if x < 0 { x + r } else { x } as usize)
                                }
                                _ => bad = true,
                            }
                        }
                        ListItem::Expr(e) => {
                            let r = rank as i64;
                            match self.int_expr(e, "an axis of a permutation")? {
                                x if x >= -r && x < r => {
                                    p.push(if x < 0 { x + r } else { x } as usize)
                                }
                                _ => bad = true,
                            }
                        }
                        ListItem::Size(n) => {
                            self.error(
                                Diagnostic::error(
                                    codes::WRONG_ARGUMENT_KIND,
                                    format!(
                                        "a permutation holds axes (integers), found the name `{}`",
                                        n.name
                                    ),
                                )
                                .with_primary(n.span, "expected an integer"),
                            );
                            return None;
                        }
                    }
                }
                let mut seen = vec![false; rank];
                for &x in &p {
                    if std::mem::replace(&mut seen[x], true) {
                        bad = true;
                    }
                }
                if bad || items.len() != rank {
                    let written: Vec<String> = items
                        .iter()
                        .map(|i| match i {
                            ListItem::Int { negative, lit, .. } => {
                                format!("{}{}", if *negative { "-" } else { "" }, lit.text)
                            }
                            ListItem::Size(n) => n.name.clone(),
                            ListItem::Expr(e) => self
                                .src
                                .get(e.span.start as usize..e.span.end as usize)
                                .unwrap_or("?")
                                .to_string(),
                        })
                        .collect();
                    let detail = if items.len() != rank {
                        format!("it has {} entries for {rank} axes", items.len())
                    } else {
                        format!("each axis from 0 to {} must appear exactly once", rank - 1)
                    };
                    self.error(
                        Diagnostic::error(
                            codes::BAD_PERMUTATION,
                            format!(
                                "[{}] is not a permutation of the axes of `{}`",
                                written.join(", "),
                                v.ty
                            ),
                        )
                        .with_primary(*list_span, detail)
                        .with_secondary(v.span, format!("this is `{}`", v.ty)),
                    );
                    return None;
                }
                p
            }
            Some(other) => {
                self.error(
                    Diagnostic::error(
                        codes::WRONG_ARGUMENT_KIND,
                        format!("`perm` must be a list of axes, found {}", arg_kind(other)),
                    )
                    .with_primary(other.span(), "expected a list such as `[1, 0]`"),
                );
                return None;
            }
        };
        let shape = perm.iter().map(|&i| v.ty.shape[i]).collect();
        Some(TExpr {
            ty: TensorType {
                dtype: v.ty.dtype,
                shape,
            },
            kind: TExprKind::Transpose(Box::new(v), perm),
            span,
        })
    }

    /// `reshape(x, [d0, ...])`; a dim may be a size name, and one dim may be `-1`
    /// (inferred, as in NumPy).
    fn reshape(&mut self, v: TExpr, target: &ArgValue, span: Span) -> Option<TExpr> {
        let ArgValue::List(items, list_span) = target else {
            self.error(
                Diagnostic::error(
                    codes::WRONG_ARGUMENT_KIND,
                    format!(
                        "the shape of `reshape` must be a list of dims, found {}",
                        arg_kind(target)
                    ),
                )
                .with_primary(target.span(), "expected a list such as `[128, 64]`"),
            );
            return None;
        };
        if !self.need_tensor("reshape", &v) {
            return None;
        }
        if items.is_empty() || items.len() > MAX_RANK {
            self.error(
                Diagnostic::error(
                    codes::OPERATION_RANK,
                    format!(
                        "`reshape` to rank {}: ranks 1 to {MAX_RANK} are supported",
                        items.len()
                    ),
                )
                .with_primary(*list_span, format!("{} dims", items.len())),
            );
            return None;
        }
        let mut dims: Vec<Option<u64>> = Vec::new();
        let mut ok = true;
        for item in items {
            match item {
                ListItem::Int {
                    negative: true,
                    lit,
                    span,
                } => {
                    if lit.value == Some(1) && !dims.contains(&None) {
                        dims.push(None);
                    } else {
                        self.error(
                            Diagnostic::error(
                                codes::BAD_RESHAPE_DIM,
                                format!("bad reshape dim `-{}`", lit.text),
                            )
                            .with_primary(
                                *span,
                                "dims are at least 1; a single `-1` may stand for the inferred dim",
                            ),
                        );
                        ok = false;
                    }
                }
                ListItem::Int {
                    negative: false,
                    lit,
                    span,
                } => {
                    if lit.value == Some(0) {
                        self.error(
                            Diagnostic::error(codes::BAD_RESHAPE_DIM, "bad reshape dim `0`")
                                .with_primary(*span, "every dim must be at least 1"),
                        );
                        ok = false;
                    } else {
                        match self.check_dim_value(lit.value, &lit.text, *span, "a dim", "") {
                            Some(d) => dims.push(Some(d)),
                            None => ok = false,
                        }
                    }
                }
                ListItem::Expr(e) => match self.int_expr(e, "a reshape dim") {
                    Some(-1) if !dims.contains(&None) => dims.push(None),
                    Some(d) if d >= 1 => dims.push(Some(d as u64)),
                    Some(d) => {
                        self.error(
                            Diagnostic::error(
                                codes::BAD_RESHAPE_DIM,
                                format!("bad reshape dim `{d}`"),
                            )
                            .with_primary(
                                e.span,
                                "dims are at least 1; a single `-1` may stand for the inferred dim",
                            ),
                        );
                        ok = false;
                    }
                    None => ok = false,
                },
                ListItem::Size(n) => match self.names.get(&n.name).map(|e| e.binding.clone()) {
                    Some(Binding::Size(Some(d))) => dims.push(Some(d)),
                    Some(Binding::Size(None)) => ok = false,
                    _ => {
                        self.error(
                            Diagnostic::error(
                                codes::UNBOUND_SIZE,
                                format!("`{}` is not a size of this kernel", n.name),
                            )
                            .with_primary(n.span, "a reshape dim must be an integer or a size"),
                        );
                        ok = false;
                    }
                },
            }
        }
        if !ok {
            return None;
        }
        let from = v.ty.elems();
        let known = dims
            .iter()
            .flatten()
            .try_fold(1u64, |acc, &d| acc.checked_mul(d));
        let target_text = || {
            let parts: Vec<String> = dims
                .iter()
                .map(|d| d.map_or("-1".to_string(), |d| d.to_string()))
                .collect();
            format!("[{}]", parts.join(", "))
        };
        let shape: Option<Vec<u64>> = match known {
            Some(k) if dims.contains(&None) => {
                if from.checked_rem(k) == Some(0) {
                    Some(dims.iter().map(|d| d.unwrap_or(from / k)).collect())
                } else {
                    None
                }
            }
            Some(k) if k == from => Some(dims.iter().flatten().copied().collect()),
            _ => None,
        };
        let Some(shape) = shape else {
            let count = match known {
                Some(k) if !dims.contains(&None) => format!("{k} elements"),
                Some(k) => format!("a multiple of {k} elements"),
                None => "more than 2^64 elements".to_string(),
            };
            self.error(
                Diagnostic::error(
                    codes::RESHAPE_ELEMENT_COUNT,
                    format!(
                        "`reshape` cannot change the element count: `{}` has {from} elements, {} has {count}",
                        v.ty,
                        target_text()
                    ),
                )
                .with_primary(*list_span, count)
                .with_secondary(v.span, format!("`{}` has {from} elements", v.ty)),
            );
            return None;
        };
        Some(TExpr {
            ty: TensorType {
                dtype: v.ty.dtype,
                shape,
            },
            kind: TExprKind::Reshape(Box::new(v)),
            span,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn broadcasting_follows_numpy() {
        assert_eq!(broadcast(&[128, 64], &[64]), Some(vec![128, 64]));
        assert_eq!(broadcast(&[128, 1], &[1, 64]), Some(vec![128, 64]));
        assert_eq!(broadcast(&[2, 1, 3], &[4, 1]), Some(vec![2, 4, 3]));
        assert_eq!(broadcast(&[128, 64], &[32]), None);
    }

    #[test]
    fn erf_is_accurate() {
        for (x, want) in [
            (0.0, 0.0),
            (0.5, 0.520_499_877_813_046_5),
            (1.0, 0.842_700_792_949_714_9),
            (2.0, 0.995_322_265_018_952_7),
            (3.5, 0.999_999_256_901_627_7),
            (-1.0, -0.842_700_792_949_714_9),
        ] {
            assert!(
                (erf(x) - want).abs() < 1e-13,
                "erf({x}) = {} != {want}",
                erf(x)
            );
        }
    }

    #[test]
    fn suggestions() {
        assert_eq!(suggest("exq", builtin_names()), Some("exp"));
        assert_eq!(suggest("softmax", builtin_names()), None);
    }
}
