//! The checked kernel: what the checker hands to lowering. Every expression carries its
//! resolved type (dtype and concrete shape) and its source span; names, builtins, keyword
//! arguments and sizes are resolved, axes are normalised to non-negative, and scalar-only
//! subexpressions are folded to one literal.
//!
//! This is the boundary between the frontend and the tensor IR: lowering reads nothing else.

use isa::Dtype;

/// A byte range of the source file.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Span {
    pub start: u32,
    pub end: u32,
}

impl Span {
    /// A span from byte offsets.
    pub fn new(start: usize, end: usize) -> Span {
        Span {
            start: start as u32,
            end: end as u32,
        }
    }

    /// The smallest span covering both.
    pub fn to(self, other: Span) -> Span {
        Span {
            start: self.start.min(other.start),
            end: self.end.max(other.end),
        }
    }
}

/// A tensor type: dtype and concrete shape (rank 1 to 6; rank 0 only for weak scalars).
/// A weak scalar's dtype says what kind of literal it is: `f32` for a number with a
/// fraction, an exponent or `inf`, `i32` for an integer literal, `bool` for a converted
/// truth value.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct TensorType {
    pub dtype: Dtype,
    pub shape: Vec<u64>,
}

impl TensorType {
    /// Number of elements (saturating at `u64::MAX`: a type parsed from IR text may have
    /// any dims, and the verifier reports the ones too large).
    pub fn elems(&self) -> u64 {
        self.shape.iter().fold(1u64, |n, &d| n.saturating_mul(d))
    }
}

impl std::fmt::Display for TensorType {
    /// Prints `f32[128, 64]`, the form every message uses.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}[", self.dtype)?;
        for (i, d) in self.shape.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            write!(f, "{d}")?;
        }
        f.write_str("]")
    }
}

/// A checked kernel, sizes bound to their final values.
#[derive(Clone, Debug, PartialEq)]
pub struct CheckedKernel {
    pub name: String,
    pub span: Span,
    /// Every size with its bound value, in declaration order.
    pub sizes: Vec<(String, u64)>,
    pub params: Vec<CheckedParam>,
    pub results: Vec<TensorType>,
    /// The `let` statements in order; `TExprKind::Let(i)` refers to `lets[i]`.
    pub lets: Vec<CheckedLet>,
    /// The returned expressions, one per result, in order.
    pub returns: Vec<TExpr>,
}

/// A kernel parameter.
#[derive(Clone, Debug, PartialEq)]
pub struct CheckedParam {
    pub name: String,
    pub ty: TensorType,
    pub span: Span,
}

/// A `let` binding.
#[derive(Clone, Debug, PartialEq)]
pub struct CheckedLet {
    pub name: String,
    pub value: TExpr,
    pub span: Span,
}

/// A typed expression.
#[derive(Clone, Debug, PartialEq)]
pub struct TExpr {
    pub kind: TExprKind,
    /// For `Scalar`, the shape is empty and the dtype is its literal kind (`f32` for a
    /// float literal, `i32` for an integer one, `bool` for a truth value); a weak scalar
    /// takes the dtype of the tensor it meets.
    pub ty: TensorType,
    pub span: Span,
}

/// Unary elementwise functions (and negation).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum UnaryFn {
    Neg,
    Exp,
    Log,
    Sqrt,
    Rsqrt,
    Reciprocal,
    Abs,
    Square,
    Tanh,
    Sigmoid,
    Relu,
    Silu,
    Gelu,
    GeluTanh,
    Sin,
    Cos,
    Erf,
    Floor,
    Ceil,
    Round,
    Sign,
    Softplus,
    /// `logical_not`: `bool` to `bool`.
    Not,
}

/// Binary elementwise operations.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum BinaryOp {
    Add,
    Sub,
    Mul,
    Div,
    Maximum,
    Minimum,
    /// C's `powf(a, b)`.
    Pow,
    /// Comparisons: the operands promote like `+`, the result is `bool`.
    Lt,
    Le,
    Gt,
    Ge,
    Eq,
    Ne,
    /// `logical_and` and `logical_or`: `bool` operands, `bool` result.
    And,
    Or,
}

impl BinaryOp {
    /// True for the six comparisons, whose result is `bool`.
    pub fn is_comparison(self) -> bool {
        matches!(
            self,
            BinaryOp::Lt | BinaryOp::Le | BinaryOp::Gt | BinaryOp::Ge | BinaryOp::Eq | BinaryOp::Ne
        )
    }
}

/// Reductions.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ReduceFn {
    Sum,
    Mean,
    Max,
    Min,
}

/// The resolved forms of every expression of the language.
#[derive(Clone, Debug, PartialEq)]
pub enum TExprKind {
    /// The i-th kernel parameter.
    Param(usize),
    /// The value of the i-th `let`.
    Let(usize),
    /// A weak scalar: a literal, or a folded scalar-only subexpression (folded in f64).
    Scalar(f64),
    Unary(UnaryFn, Box<TExpr>),
    /// NumPy broadcasting; at most one side is a `Scalar`.
    Binary(BinaryOp, Box<TExpr>, Box<TExpr>),
    /// NumPy matmul, ranks 2 to 4, batch axes broadcast; the result is f32.
    Matmul(Box<TExpr>, Box<TExpr>),
    /// Reduction over `axis` (already non-negative).
    Reduce {
        func: ReduceFn,
        arg: Box<TExpr>,
        axis: usize,
        keepdims: bool,
    },
    /// `argmax` (`max`) or `argmin` over `axis` (non-negative): the `i32` position of the
    /// first largest (smallest) element, NaN counting as the largest (smallest).
    ArgReduce {
        max: bool,
        arg: Box<TExpr>,
        axis: usize,
        keepdims: bool,
    },
    /// `cumsum` along `axis` (non-negative): the inclusive prefix sum, accumulated in f32
    /// (wrapping `i32`) in index order, each element rounded to the operand's dtype.
    Cumsum {
        arg: Box<TExpr>,
        axis: usize,
    },
    /// `perm[i]` is the input axis that becomes output axis i (NumPy transpose).
    Transpose(Box<TExpr>, Vec<usize>),
    /// Row-major reshape to the expression's type's shape.
    Reshape(Box<TExpr>),
    /// Keeps element (.., i, j) where j <= i + k, else `fill`.
    Tril {
        arg: Box<TExpr>,
        k: i64,
        fill: f64,
    },
    /// Conversion to the expression's dtype.
    Cast(Box<TExpr>),
    /// Indexing and slicing, one entry per operand axis (positions already resolved).
    Slice(Box<TExpr>, Vec<SliceAxis>),
    /// Joins the parts along `axis`; every part already has the result's dtype.
    Concat(Vec<TExpr>, usize),
    /// Pads every axis with `before[i]` and `after[i]` elements of `value` (lowering rounds
    /// it to the dtype).
    Pad {
        arg: Box<TExpr>,
        before: Vec<u64>,
        after: Vec<u64>,
        value: f64,
    },
    /// NumPy `broadcast_to` the expression's type's shape.
    BroadcastTo(Box<TExpr>),
    /// `where(c, a, b)`: `c` is `bool`; at most one of `a` and `b` is a `Scalar` (two scalar
    /// branches are given as a tensor of `c`'s shape by the checker); all three broadcast.
    Where(Box<TExpr>, Box<TExpr>, Box<TExpr>),
    /// `arange(n)`: the `i32[n]` vector `0, 1, .., n - 1` (the length is the type's).
    Arange,
    /// `take(x, idx, axis)`: NumPy's take with an `i32` index tensor (axis non-negative).
    Take {
        arg: Box<TExpr>,
        idx: Box<TExpr>,
        axis: usize,
    },
    /// `conv(x, w, ...)`: PyTorch's convolution, f32 result (`ConvAttrs`).
    Conv {
        x: Box<TExpr>,
        w: Box<TExpr>,
        attrs: ConvAttrs,
    },
    /// `max_pool` or `avg_pool` of a float `[N, C, L]` or `[N, C, H, W]` (`pool.rs`).
    Pool(Box<TExpr>, super::pool::Pool),
}

/// What a slice does to one axis of its operand: it takes the elements
/// `start, start + step, ...` (as many as the result's dim says, one for a dropped axis);
/// `keep` is false for an integer index, which drops the axis.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct SliceAxis {
    pub start: u64,
    pub step: i64,
    pub keep: bool,
}

/// The attributes of a convolution, one list entry per spatial axis (1 or 2 of them):
/// PyTorch's `stride`, symmetric zero `padding`, `dilation` and `groups`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ConvAttrs {
    pub stride: Vec<u64>,
    pub padding: Vec<u64>,
    pub dilation: Vec<u64>,
    pub groups: u64,
}

impl ConvAttrs {
    /// The extent of spatial axis `i` of the result for an input extent `n` and a kernel
    /// extent `k`: `(n + 2 p - d (k - 1) - 1) / s + 1`; `None` when the dilated window
    /// is larger than the padded input (or an extent is zero).
    pub fn out_len(&self, i: usize, n: u64, k: u64) -> Option<u64> {
        let window = self.dilation[i]
            .checked_mul(k.checked_sub(1)?)?
            .checked_add(1)?;
        let padded = n.checked_add(self.padding[i].checked_mul(2)?)?;
        if window > padded || self.stride[i] == 0 {
            return None;
        }
        Some((padded - window) / self.stride[i] + 1)
    }

    /// The result shape `[N, O, out..]` of `x [N, C, in..]` and `w [O, C / groups, k..]`,
    /// or what is wrong.
    pub fn result_shape(&self, x: &[u64], w: &[u64]) -> Result<Vec<u64>, String> {
        let spatial = x.len().wrapping_sub(2);
        if !(3..=4).contains(&x.len()) || w.len() != x.len() {
            return Err(format!("conv of ranks {} and {}", x.len(), w.len()));
        }
        if self.stride.len() != spatial
            || self.padding.len() != spatial
            || self.dilation.len() != spatial
        {
            return Err("conv attribute lists of the wrong length".into());
        }
        let g = self.groups;
        if g == 0 || !x[1].is_multiple_of(g) || !w[0].is_multiple_of(g) || w[1] * g != x[1] {
            return Err(format!(
                "conv channels: x has {}, w is {:?}, groups {g}",
                x[1], w
            ));
        }
        if self.dilation.contains(&0) {
            return Err("conv dilation of 0".into());
        }
        let mut shape = vec![x[0], w[0]];
        for i in 0..spatial {
            shape.push(
                self.out_len(i, x[2 + i], w[2 + i])
                    .ok_or_else(|| format!("conv window larger than the padded axis {i}"))?,
            );
        }
        Ok(shape)
    }
}
