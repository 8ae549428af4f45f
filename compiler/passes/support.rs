//! What of the tensor IR the machine backend compiles, checked before the passes run.
//!
//! Language version 2's `i32` and `bool` values, comparisons, `where`, `arange` and `take`
//! are checked, lowered and evaluated by the reference, but the tiling of this version has
//! no integer or boolean datapath yet. A kernel that uses them is refused here with an
//! error at its source line, rather than reaching a pass that would compute it through
//! f32 (which holds integers exactly only up to 2^24) or fail with an internal error.

use crate::ir::{BinaryOp, Function, Span, TOp, UnaryFn};

/// The first instruction (or parameter) the backend cannot compile: its span and what it
/// is. `None` when the whole kernel compiles.
pub fn unsupported(func: &Function) -> Option<(Span, String)> {
    for (i, (name, v)) in func.params.iter().enumerate() {
        let ty = func.ty(*v);
        if !ty.dtype.is_float() {
            let span = func.param_spans.get(i).copied().unwrap_or_default();
            return Some((span, format!("the parameter `{name}` of type `{ty}`")));
        }
    }
    for &inst in &func.layout {
        let data = &func.insts[inst];
        let ty = func.ty(data.result);
        let what = match data.op {
            TOp::Where => "`where`",
            TOp::Arange => "`arange`",
            TOp::Take { .. } => "`take`",
            TOp::Unary(UnaryFn::Not) => "`logical_not`",
            TOp::Binary(BinaryOp::And) => "`logical_and`",
            TOp::Binary(BinaryOp::Or) => "`logical_or`",
            TOp::Binary(b) if b.is_comparison() => "a comparison",
            _ if !ty.dtype.is_float() => "a value",
            _ => continue,
        };
        return Some((func.spans[inst], format!("{what} of type `{ty}`")));
    }
    None
}
