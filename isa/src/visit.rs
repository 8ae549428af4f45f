//! Visiting the memory operands of an operation, in table field order: every tile access
//! pattern (SBUF or PSUM, including per-partition scalar and `accum` operands) and every HBM
//! pattern. The compiler uses it to relocate virtual buffers and find dependencies; the
//! runtime to find what an instruction touches. Generated from the table, so a new operand
//! of a new instruction is never missed.

use crate::{ActFunc, Affine, AluOp, CmpOp, DmaAp, HbmAp, Imm, Op, ReduceOp, ScalarArg, TileAp};

/// One memory operand of an operation.
#[derive(Debug)]
pub enum ApRef<'a> {
    Tile(&'a TileAp),
    Hbm(&'a HbmAp),
}

/// One memory operand of an operation, mutable.
#[derive(Debug)]
pub enum ApMut<'a> {
    Tile(&'a mut TileAp),
    Hbm(&'a mut HbmAp),
}

/// Whether an operand is read or written by its operation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Access {
    Read,
    Write,
}

/// Implemented by every field type of the table: visits the memory operands it holds.
pub trait VisitAps {
    /// Calls `f` on each memory operand of the field.
    fn visit<'a>(&'a self, access: Access, f: &mut dyn FnMut(ApRef<'a>, Access));
    /// Calls `f` on each memory operand of the field, mutably.
    fn visit_mut<'a>(&'a mut self, access: Access, f: &mut dyn FnMut(ApMut<'a>, Access));
}

macro_rules! no_aps {
    ($($t:ty),*) => {$(
        impl VisitAps for $t {
            fn visit<'a>(&'a self, _: Access, _: &mut dyn FnMut(ApRef<'a>, Access)) {}
            fn visit_mut<'a>(&'a mut self, _: Access, _: &mut dyn FnMut(ApMut<'a>, Access)) {}
        }
    )*};
}

no_aps!(bool, AluOp, ReduceOp, ActFunc, CmpOp, Imm, Affine);

impl VisitAps for TileAp {
    fn visit<'a>(&'a self, access: Access, f: &mut dyn FnMut(ApRef<'a>, Access)) {
        f(ApRef::Tile(self), access)
    }
    fn visit_mut<'a>(&'a mut self, access: Access, f: &mut dyn FnMut(ApMut<'a>, Access)) {
        f(ApMut::Tile(self), access)
    }
}

impl VisitAps for HbmAp {
    fn visit<'a>(&'a self, access: Access, f: &mut dyn FnMut(ApRef<'a>, Access)) {
        f(ApRef::Hbm(self), access)
    }
    fn visit_mut<'a>(&'a mut self, access: Access, f: &mut dyn FnMut(ApMut<'a>, Access)) {
        f(ApMut::Hbm(self), access)
    }
}

impl VisitAps for DmaAp {
    fn visit<'a>(&'a self, access: Access, f: &mut dyn FnMut(ApRef<'a>, Access)) {
        match self {
            DmaAp::Hbm(h) => f(ApRef::Hbm(h), access),
            DmaAp::Tile(t) => f(ApRef::Tile(t), access),
        }
    }
    fn visit_mut<'a>(&'a mut self, access: Access, f: &mut dyn FnMut(ApMut<'a>, Access)) {
        match self {
            DmaAp::Hbm(h) => f(ApMut::Hbm(h), access),
            DmaAp::Tile(t) => f(ApMut::Tile(t), access),
        }
    }
}

impl VisitAps for ScalarArg {
    fn visit<'a>(&'a self, _: Access, f: &mut dyn FnMut(ApRef<'a>, Access)) {
        if let ScalarArg::Ap(t) = self {
            f(ApRef::Tile(t), Access::Read)
        }
    }
    fn visit_mut<'a>(&'a mut self, _: Access, f: &mut dyn FnMut(ApMut<'a>, Access)) {
        if let ScalarArg::Ap(t) = self {
            f(ApMut::Tile(t), Access::Read)
        }
    }
}

impl VisitAps for Option<TileAp> {
    fn visit<'a>(&'a self, access: Access, f: &mut dyn FnMut(ApRef<'a>, Access)) {
        if let Some(t) = self {
            f(ApRef::Tile(t), access)
        }
    }
    fn visit_mut<'a>(&'a mut self, access: Access, f: &mut dyn FnMut(ApMut<'a>, Access)) {
        if let Some(t) = self {
            f(ApMut::Tile(t), access)
        }
    }
}

/// The access of a field by its name: `out`, `dst`, `accum` and `index` are written, the
/// rest read.
/// A matmul with `accumulate` also reads `out`; callers that care check that flag.
pub fn field_access(name: &str) -> Access {
    match name {
        "out" | "dst" | "accum" | "index" => Access::Write,
        _ => Access::Read,
    }
}

macro_rules! define_visit {
    ($(
        $(#[doc = $doc:literal])*
        $name:ident = $code:literal, $mnemonic:literal, $engines:expr, { $($field:ident : $ty:ty),* $(,)? };
    )*) => {
        impl Op {
            /// Calls `f` on every memory operand, in field order, with its access.
            pub fn visit_aps<'a>(&'a self, f: &mut dyn FnMut(ApRef<'a>, Access)) {
                match self {
                    $(Op::$name { $($field),* } => {
                        $(VisitAps::visit($field, field_access(stringify!($field)), f);)*
                    })*
                }
            }

            /// Calls `f` on every memory operand, mutably, in field order, with its access.
            pub fn visit_aps_mut<'a>(&'a mut self, f: &mut dyn FnMut(ApMut<'a>, Access)) {
                match self {
                    $(Op::$name { $($field),* } => {
                        $(VisitAps::visit_mut($field, field_access(stringify!($field)), f);)*
                    })*
                }
            }
        }
    };
}

crate::for_each_op!(define_visit);
