//! The checker's rules for the integer and boolean dtypes of language version 2, and the
//! calls that come with them: comparisons, `where`, `logical_*`, `arange` and `take`.
//!
//! They live apart from the float rules of `check.rs` because they are one design: every
//! value is of one of three kinds (float, integer, boolean), kinds never mix without an
//! `as`, and each operation says which kinds it takes. A weak scalar's kind is its literal's
//! (`1` is an integer, `1.0`, `1e3` and `inf` are floats); an integer literal meets a float
//! tensor as a float, but a float literal meeting an `i32` is an error.

use super::{broadcast, describe, is_scalar, scalar_of, Binding, Checker, MAX_RANK};
use crate::diagnostic::Diagnostic;
use crate::frontend::ast::{self, ArgValue, ExprKind};
use crate::frontend::codes;
use crate::frontend::typed::{BinaryOp, Span, TExpr, TExprKind, TensorType, UnaryFn};
use isa::Dtype;

/// The three kinds of values; kinds never mix implicitly.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Kind {
    Float,
    Int,
    Bool,
}

/// The kind of a dtype.
pub(super) fn kind(d: Dtype) -> Kind {
    match d {
        Dtype::I32 => Kind::Int,
        Dtype::Bool => Kind::Bool,
        _ => Kind::Float,
    }
}

/// The word for a kind in messages.
fn kind_word(k: Kind) -> &'static str {
    match k {
        Kind::Float => "float",
        Kind::Int => "integer",
        Kind::Bool => "boolean",
    }
}

/// The language's name of a binary operation, for messages.
pub(super) fn binary_name(op: BinaryOp) -> &'static str {
    match op {
        BinaryOp::Add => "+",
        BinaryOp::Sub => "-",
        BinaryOp::Mul => "*",
        BinaryOp::Div => "/",
        BinaryOp::Maximum => "maximum",
        BinaryOp::Minimum => "minimum",
        BinaryOp::Pow => "pow",
        BinaryOp::Lt => "<",
        BinaryOp::Le => "<=",
        BinaryOp::Gt => ">",
        BinaryOp::Ge => ">=",
        BinaryOp::Eq => "==",
        BinaryOp::Ne => "!=",
        BinaryOp::And => "logical_and",
        BinaryOp::Or => "logical_or",
    }
}

/// True if `x` (a folded integer literal) fits in `i32`.
fn fits_i32(x: f64) -> bool {
    x >= f64::from(i32::MIN) && x <= f64::from(i32::MAX) && x.fract() == 0.0
}

/// The value of a scalar converted with `as` to `dtype`: the language's conversion rules.
pub(super) fn cast_scalar(x: f64, dtype: Dtype) -> f64 {
    match dtype {
        // Toward zero, saturating, NaN gives 0: Rust's `as` does exactly this.
        Dtype::I32 => f64::from(x as i32),
        Dtype::Bool => f64::from(u8::from(x != 0.0)),
        // An integer or a float literal to a float dtype: rounded to it from f64, once.
        d => f64::from(runtime::numeric::round_f64(d, x)),
    }
}

impl Checker<'_> {
    /// The dtype in which a binary operation computes, after checking that the kinds of
    /// its operands mix and that the operation takes them: the promoted dtype of two
    /// tensors, the tensor's dtype against a weak scalar, or the scalar kind's dtype for two
    /// scalars. `None` after reporting an error.
    pub(super) fn operand_dtype(
        &mut self,
        op: BinaryOp,
        a: &TExpr,
        b: &TExpr,
        op_span: Span,
    ) -> Option<Dtype> {
        self.operand_dtype_named(op, binary_name(op), a, b, op_span)
    }

    /// [`Checker::operand_dtype`] with the operation's name for messages.
    fn operand_dtype_named(
        &mut self,
        op: BinaryOp,
        name: &str,
        a: &TExpr,
        b: &TExpr,
        op_span: Span,
    ) -> Option<Dtype> {
        let (ka, kb) = (kind(a.ty.dtype), kind(b.ty.dtype));
        let (sa, sb) = (is_scalar(a), is_scalar(b));
        let dtype = match (ka, kb) {
            _ if ka == kb => match (sa, sb) {
                (true, true) => a.ty.dtype,
                (true, false) => b.ty.dtype,
                (false, true) => a.ty.dtype,
                (false, false) => super::promote(a.ty.dtype, b.ty.dtype),
            },
            // An integer literal meets a float tensor (or float literal) as a float.
            (Kind::Float, Kind::Int) if sb => a.ty.dtype,
            (Kind::Int, Kind::Float) if sa => b.ty.dtype,
            _ => {
                self.mixed_kinds(name, a, b, op_span);
                return None;
            }
        };
        // An integer literal meeting an `i32` tensor must fit in it.
        if dtype == Dtype::I32 && !(sa && sb) {
            for v in [a, b] {
                if let TExprKind::Scalar(x) = v.kind {
                    if !fits_i32(x) {
                        self.literal_range(x, v.span);
                        return None;
                    }
                }
            }
        }
        let k = kind(dtype);
        let allowed = match op {
            BinaryOp::And | BinaryOp::Or => k == Kind::Bool,
            BinaryOp::Eq | BinaryOp::Ne => true,
            // Two integer literals divide as numbers (`1 / 2` is 0.5, folded).
            BinaryOp::Div => k == Kind::Float || (sa && sb && k == Kind::Int),
            // `pow` is C's `powf`, a float function; two integer literals fold as numbers.
            BinaryOp::Pow => k == Kind::Float || (sa && sb && k == Kind::Int),
            _ => k != Kind::Bool,
        };
        if !allowed {
            let hint = match (op, k) {
                (BinaryOp::And | BinaryOp::Or, _) => {
                    "`logical_and` and `logical_or` take `bool` operands: compare first, e.g. `x > 0.0`"
                }
                (BinaryOp::Div, Kind::Int) => {
                    "`i32` has no `/`: convert with `as f32` first, e.g. `(i as f32) / 2.0`"
                }
                (BinaryOp::Pow, Kind::Int) => {
                    "`pow` is a float function (C's `powf`): convert first, e.g. `pow(i as f32, 2.0)`"
                }
                _ => "`bool` has no arithmetic and no ordering: convert with `as i32` or `as f32` first",
            };
            let shown = if is_scalar(a) { b } else { a };
            self.error(
                Diagnostic::error(
                    codes::DTYPE_NOT_SUPPORTED,
                    format!("`{name}` is not defined for {} values", kind_word(k)),
                )
                .with_primary(op_span, format!("`{name}` of {} operands", kind_word(k)))
                .with_secondary(shown.span, format!("this is {}", describe(shown)))
                .with_note(hint),
            );
            return None;
        }
        Some(dtype)
    }

    /// Reports operands of different kinds.
    fn mixed_kinds(&mut self, what: &str, a: &TExpr, b: &TExpr, op_span: Span) {
        let literal = |v: &TExpr| is_scalar(v) && kind(v.ty.dtype) == Kind::Float;
        let message = if literal(a) || literal(b) {
            let other = if literal(a) { b } else { a };
            format!(
                "a float literal meets {}: a literal with a fraction, an exponent or `inf` cannot be an integer or a boolean",
                describe(other)
            )
        } else {
            format!(
                "`{what}` mixes {} and {} values: {} and {}",
                kind_word(kind(a.ty.dtype)),
                kind_word(kind(b.ty.dtype)),
                describe(a),
                describe(b)
            )
        };
        self.error(
            Diagnostic::error(codes::MIXED_KINDS, message)
                .with_primary(op_span, "integers and booleans never mix with floats implicitly")
                .with_secondary(a.span, format!("this is {}", describe(a)))
                .with_secondary(b.span, format!("this is {}", describe(b)))
                .with_note(
                    "convert one side with `as`, e.g. `i as f32`, `x as i32` (toward zero) or `m as f32` (1 or 0)",
                ),
        );
    }

    /// `pad`'s `value` for a tensor `x`: a scalar of `x`'s kind, 0 (or `false`) when it is
    /// not given. A `bool` tensor pads with `true` or `false`; an `i32` tensor with an
    /// integer literal that fits in it (a fraction, an exponent or `inf` is an error, as
    /// wherever a float literal meets an `i32`); a float tensor with any number.
    pub(super) fn pad_value(&mut self, arg: Option<&ArgValue>, x: &TExpr) -> Option<f64> {
        let k = kind(x.ty.dtype);
        if let Some(&ArgValue::Bool(b, span)) = arg {
            if k == Kind::Bool {
                return Some(if b { 1.0 } else { 0.0 });
            }
            self.error(
                Diagnostic::error(
                    codes::MIXED_KINDS,
                    format!(
                        "`value` of `pad` is a boolean, but the padded tensor is {}",
                        describe(x)
                    ),
                )
                .with_primary(span, "a boolean value pads only a `bool` tensor")
                .with_secondary(x.span, format!("this is {}", describe(x)))
                .with_note("pad with a number of the tensor's kind, e.g. `value=0`"),
            );
            return None;
        }
        if k == Kind::Bool {
            if let Some(a) = arg {
                self.error(
                    Diagnostic::error(
                        codes::MIXED_KINDS,
                        format!(
                            "`value` of `pad` must be `true` or `false` for {}",
                            describe(x)
                        ),
                    )
                    .with_primary(a.span(), "expected `true` or `false`")
                    .with_secondary(x.span, format!("this is {}", describe(x)))
                    .with_note(
                        "booleans never mix with numbers: write `value=false` or `value=true`",
                    ),
                );
                return None;
            }
        }
        if k != Kind::Int {
            return self.scalar_keyword(arg, "`value` of `pad`", "`0` or `-inf`");
        }
        let Some(ArgValue::Expr(e)) = arg else {
            return self.scalar_keyword(arg, "`value` of `pad`", "`0` or `-1`");
        };
        let f = self.expr(e)?;
        let TExprKind::Scalar(value) = f.kind else {
            return self.scalar_keyword(arg, "`value` of `pad`", "`0` or `-1`");
        };
        if kind(f.ty.dtype) != Kind::Int {
            self.error(
                Diagnostic::error(
                    codes::MIXED_KINDS,
                    format!(
                        "`value` of `pad` is a float literal, but the padded tensor is {}: a literal with a fraction, an exponent or `inf` cannot be an integer",
                        describe(x)
                    ),
                )
                .with_primary(f.span, "expected an integer literal")
                .with_secondary(x.span, format!("this is {}", describe(x)))
                .with_note("pad an `i32` tensor with an integer, e.g. `value=0`"),
            );
            return None;
        }
        if !fits_i32(value) {
            self.literal_range(value, f.span);
            return None;
        }
        Some(value)
    }

    /// Reports an integer literal that does not fit in `i32`.
    fn literal_range(&mut self, x: f64, span: Span) {
        self.error(
            Diagnostic::error(
                codes::INTEGER_LITERAL_RANGE,
                format!("the integer {x} does not fit in `i32`"),
            )
            .with_primary(span, "this meets an `i32` tensor")
            .with_note("`i32` holds -2147483648 to 2147483647"),
        );
    }

    /// Checks that a unary function takes its operand's kind; `false` after reporting.
    pub(super) fn unary_takes(&mut self, f: UnaryFn, v: &TExpr, span: Span) -> bool {
        let k = kind(v.ty.dtype);
        let ok = match f {
            UnaryFn::Not => k == Kind::Bool,
            UnaryFn::Neg | UnaryFn::Abs => k != Kind::Bool,
            // An integer literal is a number to a float function (`sqrt(2)`).
            _ => k == Kind::Float || (k == Kind::Int && is_scalar(v)),
        };
        if ok {
            return true;
        }
        let name = super::unary_name(f);
        let (what, hint) = match (f, k) {
            (UnaryFn::Not, _) => (
                "`logical_not`".to_string(),
                "`logical_not` takes `bool`: compare first, e.g. `x == 0.0`".to_string(),
            ),
            (UnaryFn::Neg, _) => (
                "negation".to_string(),
                "`bool` has no arithmetic: negate it with `logical_not(m)`".to_string(),
            ),
            _ => (
                format!("`{name}`"),
                format!("`{name}` is a float function: convert first, e.g. `{name}(x as f32)`"),
            ),
        };
        self.error(
            Diagnostic::error(
                codes::DTYPE_NOT_SUPPORTED,
                format!("{what} is not defined for {} values", kind_word(k)),
            )
            .with_primary(span, format!("{what} of {}", describe(v)))
            .with_note(hint),
        );
        false
    }

    /// Checks that an operation that only takes floats (`@`, `mean`, `tril`) got one;
    /// `false` after reporting.
    pub(super) fn float_only(&mut self, what: &str, v: &TExpr, span: Span) -> bool {
        // A literal is left to the operation's own checks (which want a tensor).
        if kind(v.ty.dtype) == Kind::Float || (kind(v.ty.dtype) == Kind::Int && is_scalar(v)) {
            return true;
        }
        self.error(
            Diagnostic::error(
                codes::DTYPE_NOT_SUPPORTED,
                format!(
                    "{what} is not defined for {} values",
                    kind_word(kind(v.ty.dtype))
                ),
            )
            .with_primary(span, format!("{what} of {}", describe(v)))
            .with_secondary(v.span, format!("this is {}", describe(v)))
            .with_note("convert first with `as f32`"),
        );
        false
    }

    /// Reports a comparison whose left operand is itself an unparenthesised comparison.
    pub(super) fn chained_comparison(&mut self, lhs: &ast::Expr, op_span: Span) -> bool {
        if let ExprKind::Binary {
            op, op_span: first, ..
        } = &lhs.kind
        {
            if op.is_comparison() {
                self.error(
                    Diagnostic::error(
                        codes::CHAINED_COMPARISON,
                        format!(
                            "comparisons do not chain: `{}` follows `{}`",
                            ast_symbol(op_span, self.src),
                            op.symbol()
                        ),
                    )
                    .with_primary(op_span, "a second comparison")
                    .with_secondary(*first, "compares the result of this one")
                    .with_note(
                        "`a < b < c` is not `a < b and b < c`: write `logical_and(a < b, b < c)`",
                    ),
                );
                return true;
            }
        }
        false
    }

    /// `where(c, a, b)`.
    pub(super) fn where_call(
        &mut self,
        c: TExpr,
        a: TExpr,
        b: TExpr,
        func_span: Span,
        span: Span,
    ) -> Option<TExpr> {
        if kind(c.ty.dtype) != Kind::Bool {
            self.error(
                Diagnostic::error(
                    codes::WHERE_CONDITION,
                    format!(
                        "the condition of `where` must be `bool`, found {}",
                        describe(&c)
                    ),
                )
                .with_primary(c.span, format!("this is {}", describe(&c)))
                .with_note("compare to get a `bool`, e.g. `where(x > 0.0, x, 0.0)`, or convert with `as bool` (x != 0)"),
            );
            return None;
        }
        // The branches promote like `+`, and two `bool` branches give `bool`.
        let mut dtype = self.operand_dtype_named(BinaryOp::Eq, "where", &a, &b, func_span)?;
        if is_scalar(&a) && is_scalar(&b) && kind(dtype) == Kind::Float {
            dtype = Dtype::F32;
        }
        let mut shape: Vec<u64> = Vec::new();
        for v in [&c, &a, &b] {
            if is_scalar(v) {
                continue;
            }
            let Some(s) = broadcast(&shape, &v.ty.shape) else {
                self.error(
                    Diagnostic::error(
                        codes::SHAPES_DO_NOT_BROADCAST,
                        format!(
                            "the operands of `where` do not broadcast: {}, {} and {}",
                            describe(&c),
                            describe(&a),
                            describe(&b)
                        ),
                    )
                    .with_primary(
                        v.span,
                        format!("`{}` does not broadcast with the others", v.ty),
                    )
                    .with_note(
                        "aligned from the last axis, each triple of dims must be equal or 1",
                    ),
                );
                return None;
            };
            shape = s;
        }
        if shape.is_empty() {
            // Three scalars fold.
            let (TExprKind::Scalar(cv), TExprKind::Scalar(av), TExprKind::Scalar(bv)) =
                (&c.kind, &a.kind, &b.kind)
            else {
                return None;
            };
            let v = if *cv != 0.0 { *av } else { *bv };
            return Some(scalar_of(v, dtype, span));
        }
        let ty = TensorType { dtype, shape };
        if !self.check_elems(&ty.shape, || format!("the result `{ty}`"), span) {
            return None;
        }
        Some(TExpr {
            kind: TExprKind::Where(Box::new(c), Box::new(a), Box::new(b)),
            ty,
            span,
        })
    }

    /// `arange(n)`: `n` an integer literal or a size name.
    pub(super) fn arange_call(&mut self, arg: &ArgValue, span: Span) -> Option<TExpr> {
        let (value, text) = match arg {
            ArgValue::Expr(e) => match &e.kind {
                ExprKind::Int(lit) => (lit.value, lit.text.clone()),
                ExprKind::Name(n) => match self.names.get(&n.name).map(|e| &e.binding) {
                    Some(Binding::Size(v)) => ((*v)?.into(), n.name.clone()),
                    _ => (None, String::new()),
                },
                _ => (None, String::new()),
            },
            _ => (None, String::new()),
        };
        let Some(n) = value else {
            self.error(
                Diagnostic::error(
                    codes::WRONG_ARGUMENT_KIND,
                    "`arange` takes an integer: a literal or a size name",
                )
                .with_primary(arg.span(), "expected an integer such as `128` or `S`"),
            );
            return None;
        };
        let n = self.check_dim_value(Some(n), &text, arg.span(), "the length of `arange`", "")?;
        if n > 1 << 31 {
            self.error(
                Diagnostic::error(
                    codes::INTEGER_LITERAL_RANGE,
                    format!("`arange({n})` would count past the largest `i32`"),
                )
                .with_primary(arg.span(), "at most 2147483648")
                .with_note("`i32` holds -2147483648 to 2147483647"),
            );
            return None;
        }
        Some(TExpr {
            kind: TExprKind::Arange,
            ty: TensorType {
                dtype: Dtype::I32,
                shape: vec![n],
            },
            span,
        })
    }

    /// `take(x, idx, axis=..)`.
    pub(super) fn take_call(
        &mut self,
        x: TExpr,
        idx: TExpr,
        axis: i64,
        axis_span: Span,
        span: Span,
    ) -> Option<TExpr> {
        if !self.need_tensor("take", &x) {
            return None;
        }
        if is_scalar(&idx) || idx.ty.dtype != Dtype::I32 {
            self.error(
                Diagnostic::error(
                    codes::TAKE_INDICES,
                    format!(
                        "the indices of `take` must be an `i32` tensor, found {}",
                        describe(&idx)
                    ),
                )
                .with_primary(idx.span, format!("this is {}", describe(&idx)))
                .with_note("pass the positions as an `i32` parameter, or convert with `as i32`"),
            );
            return None;
        }
        let axis = self.axis(axis, &x, axis_span)?;
        let mut shape = x.ty.shape[..axis].to_vec();
        shape.extend_from_slice(&idx.ty.shape);
        shape.extend_from_slice(&x.ty.shape[axis + 1..]);
        if shape.len() > MAX_RANK {
            self.error(
                Diagnostic::error(
                    codes::OPERATION_RANK,
                    format!(
                        "`take` of `{}` with indices `{}` would have rank {}",
                        x.ty,
                        idx.ty,
                        shape.len()
                    ),
                )
                .with_primary(span, format!("ranks 1 to {MAX_RANK} are supported")),
            );
            return None;
        }
        let ty = TensorType {
            dtype: x.ty.dtype,
            shape,
        };
        if !self.check_elems(&ty.shape, || format!("the result `{ty}`"), span) {
            return None;
        }
        Some(TExpr {
            kind: TExprKind::Take {
                arg: Box::new(x),
                idx: Box::new(idx),
                axis,
            },
            ty,
            span,
        })
    }
}

/// The operator text at `span` of `src`.
fn ast_symbol(span: Span, src: &str) -> &str {
    src.get(span.start as usize..span.end as usize)
        .unwrap_or("?")
}
