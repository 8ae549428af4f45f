//! Values that are affine functions of their indices, computed where they are used instead
//! of being loaded.
//!
//! `arange` and what a kernel derives from it by layout calls and integer arithmetic
//! (`reshape(arange(S), [S, 1]) * 2 + 1`, a `broadcast_to`, a `transpose`) have at every
//! index `base + sum(coef_d * index_d)`: GpSimd's `iota` writes such a tile in one
//! instruction, with no HBM traffic. A `bool` that compares two such values
//! (`rows >= cols`, the causal mask built from positions) is `(A - B) CMP 0`, and a
//! `where` of it with a constant branch is GpSimd's `affine_select` of the other branch:
//! one instruction instead of loading two index vectors, comparing and selecting.
//!
//! The forms are exact: every value on the way must lie inside the `i32` range over the
//! whole tensor (so the language's wrapping arithmetic never wraps), and the coefficients
//! and bases must fit the instructions' `i32` fields; anything else is left to the general
//! path.

use crate::ir::{BinaryOp, Function, TOp, UnaryFn, Value, ValueDef};
use isa::{CmpOp, Dtype};

/// `base + sum(coefs[d] * index_d)` over the axes of a shape.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Form {
    pub base: i64,
    pub coefs: Vec<i64>,
}

impl Form {
    /// The smallest and largest value over a shape.
    fn range(&self, shape: &[u64]) -> (i64, i64) {
        let (mut lo, mut hi) = (self.base, self.base);
        for (&c, &n) in self.coefs.iter().zip(shape) {
            let end = c.saturating_mul(n.saturating_sub(1) as i64);
            lo = lo.saturating_add(end.min(0));
            hi = hi.saturating_add(end.max(0));
        }
        (lo, hi)
    }

    /// True when every value over `shape`, and every coefficient, fits in `i32`.
    fn fits(&self, shape: &[u64]) -> bool {
        let (lo, hi) = self.range(shape);
        let small = |x: i64| i32::try_from(x).is_ok();
        small(lo) && small(hi) && self.coefs.iter().all(|&c| small(c))
    }

    /// The form broadcast (NumPy's rules) from `shape` to `to`: axes aligned on the right,
    /// an axis of size 1 contributes nothing (its index is always 0).
    pub fn broadcast(&self, shape: &[u64], to: &[u64]) -> Option<Form> {
        let lead = to.len().checked_sub(shape.len())?;
        let mut coefs = vec![0; to.len()];
        for (i, (&c, &n)) in self.coefs.iter().zip(shape).enumerate() {
            if n != 1 {
                coefs[lead + i] = c;
            }
        }
        Some(Form {
            base: self.base,
            coefs,
        })
    }

    fn combine(&self, other: &Form, sign: i64) -> Form {
        Form {
            base: self.base + sign * other.base,
            coefs: self
                .coefs
                .iter()
                .zip(&other.coefs)
                .map(|(a, b)| a + sign * b)
                .collect(),
        }
    }

    fn scale(&self, k: i64) -> Form {
        Form {
            base: self.base.saturating_mul(k),
            coefs: self.coefs.iter().map(|c| c.saturating_mul(k)).collect(),
        }
    }
}

/// The affine form of an `i32` value over its own shape, if it has one.
pub fn form_of(func: &Function, v: Value) -> Option<Form> {
    form_depth(func, v, 0)
}

fn form_depth(func: &Function, v: Value, depth: u32) -> Option<Form> {
    let ty = func.ty(v);
    if ty.dtype != Dtype::I32 || depth > 32 {
        return None;
    }
    let ValueDef::Inst(inst) = func.values[v].def else {
        return None;
    };
    let data = &func.insts[inst];
    let shape = &ty.shape;
    let arg = |i: usize| -> Option<Form> {
        let a = data.args[i];
        form_depth(func, a, depth + 1)?.broadcast(&func.ty(a).shape, shape)
    };
    let form = match &data.op {
        TOp::Arange => Form {
            base: 0,
            coefs: vec![1],
        },
        TOp::Const(c) => Form {
            base: *c as i64,
            coefs: vec![0; shape.len()],
        },
        TOp::Unary(UnaryFn::Neg) => arg(0)?.scale(-1),
        TOp::Binary(op @ (BinaryOp::Add | BinaryOp::Sub)) => {
            let sign = if *op == BinaryOp::Add { 1 } else { -1 };
            arg(0)?.combine(&arg(1)?, sign)
        }
        TOp::Binary(BinaryOp::Mul) => {
            let (a, b) = (arg(0)?, arg(1)?);
            // One side must be a constant (all coefficients 0).
            if a.coefs.iter().all(|&c| c == 0) {
                b.scale(a.base)
            } else if b.coefs.iter().all(|&c| c == 0) {
                a.scale(b.base)
            } else {
                return None;
            }
        }
        TOp::BroadcastTo => arg(0)?,
        TOp::Transpose(perm) => {
            let a = form_depth(func, data.args[0], depth + 1)?;
            Form {
                base: a.base,
                coefs: perm.iter().map(|&p| a.coefs[p]).collect(),
            }
        }
        TOp::Reshape => {
            // Only reshapes that insert or remove axes of size 1 keep the form.
            let src = func.ty(data.args[0]);
            let a = form_depth(func, data.args[0], depth + 1)?;
            let big = |s: &[u64]| -> Vec<usize> {
                (0..s.len()).filter(|&i| s[i] != 1).collect::<Vec<_>>()
            };
            let (from, to) = (big(&src.shape), big(shape));
            if from.len() != to.len()
                || from
                    .iter()
                    .zip(&to)
                    .any(|(&f, &t)| src.shape[f] != shape[t])
            {
                return None;
            }
            let mut coefs = vec![0; shape.len()];
            for (&f, &t) in from.iter().zip(&to) {
                coefs[t] = a.coefs[f];
            }
            Form {
                base: a.base,
                coefs,
            }
        }
        _ => return None,
    };
    (form.coefs.len() == shape.len() && form.fits(shape)).then_some(form)
}

/// A `bool` value that is `form CMP 0` over its own shape: a comparison of two `i32`
/// values with affine forms.
pub fn predicate_of(func: &Function, v: Value) -> Option<(Form, CmpOp)> {
    let ValueDef::Inst(inst) = func.values[v].def else {
        return None;
    };
    let data = &func.insts[inst];
    let TOp::Binary(op) = data.op else {
        return None;
    };
    let cmp = match op {
        BinaryOp::Lt => CmpOp::Lt,
        BinaryOp::Le => CmpOp::Le,
        BinaryOp::Gt => CmpOp::Gt,
        BinaryOp::Ge => CmpOp::Ge,
        BinaryOp::Eq => CmpOp::Eq,
        BinaryOp::Ne => CmpOp::Ne,
        _ => return None,
    };
    let shape = &func.ty(v).shape;
    let side = |a: Value| form_of(func, a)?.broadcast(&func.ty(a).shape, shape);
    let diff = side(data.args[0])?.combine(&side(data.args[1])?, -1);
    diff.fits(shape).then_some((diff, cmp))
}

/// The comparison that holds exactly where `cmp` does not.
pub fn negate(cmp: CmpOp) -> CmpOp {
    match cmp {
        CmpOp::Ge => CmpOp::Lt,
        CmpOp::Gt => CmpOp::Le,
        CmpOp::Le => CmpOp::Gt,
        CmpOp::Lt => CmpOp::Ge,
        CmpOp::Eq => CmpOp::Ne,
        CmpOp::Ne => CmpOp::Eq,
    }
}

/// A form over a value's logical shape (the shape it is read with in a row group) moved
/// onto the group's space: the same axes, or the space's rows (with or without a trailing
/// 1), whose last axis then contributes nothing.
pub fn onto_space(form: &Form, logical: &[u64], space: &[u64]) -> Option<Form> {
    let mut coefs = form.coefs.clone();
    if logical.len() + 1 == space.len() {
        coefs.push(0);
    } else if logical.len() != space.len() {
        return None;
    } else if logical.last() == Some(&1) {
        if let Some(l) = coefs.last_mut() {
            *l = 0;
        }
    }
    Some(Form {
        base: form.base,
        coefs,
    })
}
