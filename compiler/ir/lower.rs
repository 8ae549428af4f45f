//! Lowering: the checked kernel to tensor IR. Each expression becomes one instruction
//! carrying its span; weak scalars become rank-0 constants of the dtype of the tensor they
//! meet, rounded to it (NumPy's weak-scalar rule); reductions, transposes and the rest map
//! one to one.

use super::{Function, TOp, TensorType, Value};
use crate::frontend::typed::{CheckedKernel, TExpr, TExprKind};
use runtime::numeric;

/// Lowers a checked kernel to tensor IR. The checker has established every type, so
/// lowering cannot fail; the verifier checks the result.
pub fn lower(kernel: &CheckedKernel) -> Function {
    let mut l = Lowering {
        func: Function::new(&kernel.name),
        lets: Vec::new(),
    };
    l.func.sizes = kernel.sizes.clone();
    for p in &kernel.params {
        l.func.add_param(&p.name, p.ty.clone(), p.span);
    }
    for binding in &kernel.lets {
        let v = l.expr(&binding.value);
        l.lets.push(v);
    }
    for r in &kernel.returns {
        let v = l.tensor(r);
        l.func.results.push(v);
    }
    l.func
}

struct Lowering {
    func: Function,
    /// The value of each `let` (a weak-scalar `let` is kept as its literal instead).
    lets: Vec<LetValue>,
}

#[derive(Clone, Copy)]
enum LetValue {
    Tensor(Value),
    Scalar(f64),
}

impl Lowering {
    /// Lowers an expression; a weak scalar stays a literal until it meets a tensor.
    fn expr(&mut self, e: &TExpr) -> LetValue {
        let arg = |l: &mut Lowering, a: &TExpr| l.tensor(a);
        let (op, args) = match &e.kind {
            TExprKind::Param(i) => return LetValue::Tensor(self.func.params[*i].1),
            TExprKind::Let(i) => return self.lets[*i],
            TExprKind::Scalar(x) => return LetValue::Scalar(*x),
            TExprKind::Unary(u, a) => (TOp::Unary(*u), vec![arg(self, a)]),
            TExprKind::Binary(b, x, y) => {
                let (vx, vy) = (self.expr(x), self.expr(y));
                let (vx, vy) = match (vx, vy) {
                    (LetValue::Tensor(a), LetValue::Tensor(b)) => (a, b),
                    (LetValue::Tensor(a), LetValue::Scalar(s)) => {
                        let d = self.func.ty(a).dtype;
                        (a, self.constant(s, d, y))
                    }
                    (LetValue::Scalar(s), LetValue::Tensor(b)) => {
                        let d = self.func.ty(b).dtype;
                        (self.constant(s, d, x), b)
                    }
                    // The checker folds scalar-only expressions; should one reach here, it
                    // is computed in f32 rather than failing.
                    (LetValue::Scalar(s), LetValue::Scalar(t)) => (
                        self.constant(s, isa::Dtype::F32, x),
                        self.constant(t, isa::Dtype::F32, y),
                    ),
                };
                (TOp::Binary(*b), vec![vx, vy])
            }
            TExprKind::Matmul(a, b) => (TOp::Matmul, vec![arg(self, a), arg(self, b)]),
            TExprKind::Reduce {
                func,
                arg: a,
                axis,
                keepdims,
            } => (
                TOp::Reduce {
                    func: *func,
                    axis: *axis,
                    keepdims: *keepdims,
                },
                vec![arg(self, a)],
            ),
            TExprKind::ArgReduce {
                max,
                arg: a,
                axis,
                keepdims,
            } => (
                TOp::ArgReduce {
                    max: *max,
                    axis: *axis,
                    keepdims: *keepdims,
                },
                vec![arg(self, a)],
            ),
            TExprKind::Cumsum { arg: a, axis } => (TOp::Cumsum { axis: *axis }, vec![arg(self, a)]),
            TExprKind::Transpose(a, perm) => (TOp::Transpose(perm.clone()), vec![arg(self, a)]),
            TExprKind::Reshape(a) => (TOp::Reshape, vec![arg(self, a)]),
            TExprKind::Tril { arg: a, k, fill } => {
                let v = arg(self, a);
                let d = self.func.ty(v).dtype;
                let fill = numeric::round_f64(d, *fill) as f64;
                (TOp::Tril { k: *k, fill }, vec![v])
            }
            TExprKind::Cast(a) => (TOp::Cast, vec![arg(self, a)]),
            TExprKind::Slice(a, axes) => (TOp::Slice(axes.clone()), vec![arg(self, a)]),
            TExprKind::Concat(parts, axis) => (
                TOp::Concat(*axis),
                parts.iter().map(|p| arg(self, p)).collect(),
            ),
            TExprKind::Pad {
                arg: a,
                before,
                after,
                value,
            } => {
                let v = arg(self, a);
                let d = self.func.ty(v).dtype;
                let value = numeric::round_f64(d, *value) as f64;
                (
                    TOp::Pad {
                        before: before.clone(),
                        after: after.clone(),
                        value,
                    },
                    vec![v],
                )
            }
            TExprKind::BroadcastTo(a) => (TOp::BroadcastTo, vec![arg(self, a)]),
            TExprKind::Where(c, a, b) => {
                // Scalar branches take the result's dtype; a scalar condition is `bool`.
                let mut args = Vec::new();
                for (x, d) in [(c, isa::Dtype::Bool), (a, e.ty.dtype), (b, e.ty.dtype)] {
                    let v = match self.expr(x) {
                        LetValue::Tensor(v) => v,
                        LetValue::Scalar(s) => self.constant(s, d, x),
                    };
                    args.push(v);
                }
                (TOp::Where, args)
            }
            TExprKind::Arange => (TOp::Arange, Vec::new()),
            TExprKind::Conv { x, w, attrs } => {
                (TOp::Conv(attrs.clone()), vec![arg(self, x), arg(self, w)])
            }
            TExprKind::Take { arg: a, idx, axis } => (
                TOp::Take { axis: *axis },
                vec![arg(self, a), arg(self, idx)],
            ),
            TExprKind::Pool(a, pool) => (TOp::Pool(pool.clone()), vec![arg(self, a)]),
        };
        LetValue::Tensor(self.func.push(op, &args, e.ty.clone(), e.span))
    }

    /// Lowers an expression that the checker typed as a tensor.
    fn tensor(&mut self, e: &TExpr) -> Value {
        match self.expr(e) {
            LetValue::Tensor(v) => v,
            LetValue::Scalar(x) => self.constant(x, isa::Dtype::F32, e),
        }
    }

    /// A rank-0 constant of dtype `d`, the value rounded to it.
    fn constant(&mut self, x: f64, d: isa::Dtype, e: &TExpr) -> Value {
        let rounded = match d {
            // Exact: the checker has made sure an integer literal meeting an `i32` fits.
            isa::Dtype::I32 => f64::from(x as i32),
            isa::Dtype::Bool => f64::from(u8::from(x != 0.0)),
            _ => numeric::round_f64(d, x) as f64,
        };
        let ty = TensorType {
            dtype: d,
            shape: Vec::new(),
        };
        self.func.push(TOp::Const(rounded), &[], ty, e.span)
    }
}
