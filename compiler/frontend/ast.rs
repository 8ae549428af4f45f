//! The syntax tree of the kernel language, as the parser builds it: every node carries the
//! byte span of its source text, names are unresolved and nothing is typed yet.
//!
//! Expressions record their nesting depth. The parser never builds an expression deeper
//! than [`MAX_NESTING`]: a deeper one is replaced by an `ExprKind::TooDeep` placeholder
//! without children (and reported once). So every later recursive walk, including the
//! compiler-generated `Drop`, stays shallow whatever the input.

use crate::frontend::typed::Span;
use isa::Dtype;

/// The deepest expression the parser accepts.
pub const MAX_NESTING: u32 = 256;

/// A whole source file.
#[derive(Clone, Debug, PartialEq, Default)]
pub struct File {
    /// The kernels that parsed (kernels lost to error recovery are left out).
    pub kernels: Vec<Kernel>,
    pub span: Span,
}

/// A name with its span.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ident {
    pub name: String,
    pub span: Span,
}

/// An integer literal. `value` is `None` when the literal does not fit in a u64.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IntLit {
    pub text: String,
    pub value: Option<u64>,
    pub span: Span,
}

impl IntLit {
    /// Builds the literal from its digits.
    pub fn new(text: &str, span: Span) -> IntLit {
        IntLit {
            text: text.to_string(),
            value: text.parse::<u64>().ok(),
            span,
        }
    }
}

/// A `kernel` definition.
#[derive(Clone, Debug, PartialEq)]
pub struct Kernel {
    pub name: Ident,
    pub sizes: Vec<SizeDecl>,
    pub params: Vec<Param>,
    /// The declared result types; one for `-> T`, any number for `-> (T, ...)`.
    pub results: Vec<TypeExpr>,
    /// The span of the whole result part after `->`.
    pub results_span: Span,
    pub body: Vec<Stmt>,
    /// The closing brace of the body.
    pub close_span: Span,
    /// True if error recovery skipped part of this kernel.
    pub has_errors: bool,
    pub span: Span,
}

/// A size in `<...>`: `N` or `N = 128`.
#[derive(Clone, Debug, PartialEq)]
pub struct SizeDecl {
    pub name: Ident,
    pub default: Option<IntLit>,
    pub span: Span,
}

/// A parameter `x: f32[N, D]`.
#[derive(Clone, Debug, PartialEq)]
pub struct Param {
    pub name: Ident,
    pub ty: TypeExpr,
    pub span: Span,
}

/// A written tensor type `f32[N, 64]`.
#[derive(Clone, Debug, PartialEq)]
pub struct TypeExpr {
    pub dtype: Dtype,
    pub dims: Vec<Dim>,
    pub span: Span,
}

/// One dim of a written type: a literal, a size, or an integer expression of them.
#[derive(Clone, Debug, PartialEq)]
pub enum Dim {
    Int(IntLit),
    Size(Ident),
    Expr(Expr),
}

impl Dim {
    /// The dim's span.
    pub fn span(&self) -> Span {
        match self {
            Dim::Int(i) => i.span,
            Dim::Size(n) => n.span,
            Dim::Expr(e) => e.span,
        }
    }

    /// Classifies a parsed dim expression: a plain literal or name keeps its own variant.
    pub fn from_expr(e: Expr) -> Dim {
        match e.kind {
            ExprKind::Int(lit) => Dim::Int(lit),
            ExprKind::Name(n) => Dim::Size(n),
            kind => Dim::Expr(Expr { kind, ..e }),
        }
    }
}

/// A statement.
#[derive(Clone, Debug, PartialEq)]
pub struct Stmt {
    pub kind: StmtKind,
    pub span: Span,
}

/// The statement forms.
#[derive(Clone, Debug, PartialEq)]
pub enum StmtKind {
    /// `let name (: type)? = value;`
    Let {
        name: Ident,
        ty: Option<TypeExpr>,
        value: Expr,
    },
    /// `return e;` or `return (e, ...);` (`tuple` is true for the second form).
    Return { values: Vec<Expr>, tuple: bool },
    /// A statement the parser skipped after an error.
    Error,
}

/// Binary operators.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum BinOp {
    Add,
    Sub,
    Mul,
    Div,
    Matmul,
    Lt,
    Le,
    Gt,
    Ge,
    Eq,
    Ne,
}

impl BinOp {
    /// True for the six comparisons.
    pub fn is_comparison(self) -> bool {
        matches!(
            self,
            BinOp::Lt | BinOp::Le | BinOp::Gt | BinOp::Ge | BinOp::Eq | BinOp::Ne
        )
    }

    /// The operator as written.
    pub fn symbol(self) -> &'static str {
        match self {
            BinOp::Add => "+",
            BinOp::Sub => "-",
            BinOp::Mul => "*",
            BinOp::Div => "/",
            BinOp::Matmul => "@",
            BinOp::Lt => "<",
            BinOp::Le => "<=",
            BinOp::Gt => ">",
            BinOp::Ge => ">=",
            BinOp::Eq => "==",
            BinOp::Ne => "!=",
        }
    }
}

/// An expression.
#[derive(Clone, Debug, PartialEq)]
pub struct Expr {
    pub kind: ExprKind,
    pub span: Span,
    /// Nesting depth: 1 for a leaf, one more than the deepest child otherwise.
    pub depth: u32,
}

/// The expression forms.
#[derive(Clone, Debug, PartialEq)]
pub enum ExprKind {
    Int(IntLit),
    Float(f64),
    /// `inf`.
    Inf,
    Name(Ident),
    Call {
        func: Ident,
        args: Vec<Arg>,
    },
    Paren(Box<Expr>),
    Neg(Box<Expr>),
    Cast {
        value: Box<Expr>,
        dtype: Dtype,
        dtype_span: Span,
    },
    Binary {
        op: BinOp,
        op_span: Span,
        lhs: Box<Expr>,
        rhs: Box<Expr>,
    },
    /// `base[i0, i1, ...]`: integer indices, slices and `...`.
    Index {
        base: Box<Expr>,
        items: Vec<IndexItem>,
    },
    /// Stands in for an expression nested deeper than [`MAX_NESTING`] (already reported).
    TooDeep,
}

impl Expr {
    /// An expression node; its depth is computed from its children.
    pub fn new(kind: ExprKind, span: Span) -> Expr {
        let child = match &kind {
            ExprKind::Int(_)
            | ExprKind::Float(_)
            | ExprKind::Inf
            | ExprKind::Name(_)
            | ExprKind::TooDeep => 0,
            ExprKind::Call { args, .. } => args.iter().map(Arg::depth).max().unwrap_or(0),
            ExprKind::Paren(e) | ExprKind::Neg(e) | ExprKind::Cast { value: e, .. } => e.depth,
            ExprKind::Binary { lhs, rhs, .. } => lhs.depth.max(rhs.depth),
            ExprKind::Index { base, items } => items
                .iter()
                .map(IndexItem::depth)
                .max()
                .unwrap_or(0)
                .max(base.depth),
        };
        Expr {
            kind,
            span,
            depth: child.saturating_add(1),
        }
    }

    /// True if this expression or a child is a placeholder for a too-deep expression.
    pub fn contains_too_deep(&self) -> bool {
        match &self.kind {
            ExprKind::TooDeep => true,
            ExprKind::Call { args, .. } => args.iter().any(|a| match &a.value {
                ArgValue::Expr(e) => matches!(e.kind, ExprKind::TooDeep),
                _ => false,
            }),
            ExprKind::Paren(e) | ExprKind::Neg(e) | ExprKind::Cast { value: e, .. } => {
                matches!(e.kind, ExprKind::TooDeep)
            }
            ExprKind::Binary { lhs, rhs, .. } => {
                matches!(lhs.kind, ExprKind::TooDeep) || matches!(rhs.kind, ExprKind::TooDeep)
            }
            ExprKind::Index { base, items } => {
                matches!(base.kind, ExprKind::TooDeep)
                    || items.iter().any(|i| {
                        i.exprs()
                            .into_iter()
                            .any(|e| matches!(e.kind, ExprKind::TooDeep))
                    })
            }
            _ => false,
        }
    }
}

/// One item of an index `x[...]`.
#[derive(Clone, Debug, PartialEq)]
pub enum IndexItem {
    /// An integer expression: the axis is dropped.
    Index(Expr),
    /// `start:stop` or `start:stop:step`, each part optional.
    Slice {
        start: Option<Expr>,
        stop: Option<Expr>,
        step: Option<Expr>,
        span: Span,
    },
    /// `...`: as many `:` as the rank needs.
    Ellipsis(Span),
}

impl IndexItem {
    /// The item's span.
    pub fn span(&self) -> Span {
        match self {
            IndexItem::Index(e) => e.span,
            IndexItem::Slice { span, .. } | IndexItem::Ellipsis(span) => *span,
        }
    }

    /// The expressions the item holds.
    pub fn exprs(&self) -> Vec<&Expr> {
        match self {
            IndexItem::Index(e) => vec![e],
            IndexItem::Slice {
                start, stop, step, ..
            } => [start, stop, step].into_iter().flatten().collect(),
            IndexItem::Ellipsis(_) => Vec::new(),
        }
    }

    fn depth(&self) -> u32 {
        self.exprs().iter().map(|e| e.depth).max().unwrap_or(0)
    }
}

/// A call argument, positional (`name` is `None`) or keyword.
#[derive(Clone, Debug, PartialEq)]
pub struct Arg {
    pub name: Option<Ident>,
    pub value: ArgValue,
    pub span: Span,
}

impl Arg {
    fn depth(&self) -> u32 {
        match &self.value {
            ArgValue::Expr(e) => e.depth,
            _ => 1,
        }
    }
}

/// The value of an argument.
#[derive(Clone, Debug, PartialEq)]
pub enum ArgValue {
    Expr(Expr),
    Bool(bool, Span),
    /// `[1, 0]`, `[N, -1]`.
    List(Vec<ListItem>, Span),
}

impl ArgValue {
    /// The value's span.
    pub fn span(&self) -> Span {
        match self {
            ArgValue::Expr(e) => e.span,
            ArgValue::Bool(_, s) | ArgValue::List(_, s) => *s,
        }
    }
}

/// An element of a list argument: an integer (possibly negated), a size name, or another
/// integer expression of literals and sizes.
#[derive(Clone, Debug, PartialEq)]
pub enum ListItem {
    Int {
        negative: bool,
        lit: IntLit,
        span: Span,
    },
    Size(Ident),
    Expr(Expr),
}

impl ListItem {
    /// The element's span.
    pub fn span(&self) -> Span {
        match self {
            ListItem::Int { span, .. } => *span,
            ListItem::Size(n) => n.span,
            ListItem::Expr(e) => e.span,
        }
    }

    /// The item as an expression again (a list of tensors, as `concat` takes).
    pub fn to_expr(&self) -> Expr {
        match self {
            ListItem::Int {
                negative: false,
                lit,
                span,
            } => Expr::new(ExprKind::Int(lit.clone()), *span),
            ListItem::Int {
                negative: true,
                lit,
                span,
            } => Expr::new(
                ExprKind::Neg(Box::new(Expr::new(ExprKind::Int(lit.clone()), lit.span))),
                *span,
            ),
            ListItem::Size(n) => Expr::new(ExprKind::Name(n.clone()), n.span),
            ListItem::Expr(e) => e.clone(),
        }
    }

    /// Classifies a parsed list item: `3`, `-1` and `N` keep their own variants.
    pub fn from_expr(e: Expr) -> ListItem {
        let span = e.span;
        match e.kind {
            ExprKind::Int(lit) => ListItem::Int {
                negative: false,
                lit,
                span,
            },
            ExprKind::Neg(inner) => {
                if let ExprKind::Int(lit) = &inner.kind {
                    return ListItem::Int {
                        negative: true,
                        lit: lit.clone(),
                        span,
                    };
                }
                ListItem::Expr(Expr {
                    kind: ExprKind::Neg(inner),
                    ..e
                })
            }
            ExprKind::Name(n) => ListItem::Size(n),
            kind => ListItem::Expr(Expr { kind, ..e }),
        }
    }
}
