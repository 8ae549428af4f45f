//! What of the tensor IR the machine backend compiles, checked before the passes run.
//!
//! Language version 2's `bool` values, comparisons, logical operations and `where` run on
//! the f32 datapath of the Vector engine, which holds the truth values 0 and 1 exactly
//! (the `is_*`, `and`, `or` ALU ops and the `select` instruction). Its `i32` values,
//! `arange` and `take` are checked, lowered and evaluated by the reference, but the tiling
//! of this version has no integer datapath yet. A kernel that uses them is refused here
//! with an error at its source line, rather than reaching a pass that would compute it
//! through f32 (which holds integers exactly only up to 2^24) or fail with an internal
//! error. The exception is the positions of `argmax` and `argmin` over floats, which the
//! backend computes exactly (`tiling/scan.rs`); they may be returned, not yet computed on.

use crate::ir::{Function, Span, TOp};
use isa::Dtype;

/// The first instruction (or parameter) the backend cannot compile: its span and what it
/// is. `None` when the whole kernel compiles.
pub fn unsupported(func: &Function) -> Option<(Span, String)> {
    for (i, (name, v)) in func.params.iter().enumerate() {
        let ty = func.ty(*v);
        if ty.dtype == Dtype::I32 {
            let span = func.param_spans.get(i).copied().unwrap_or_default();
            return Some((span, format!("the parameter `{name}` of type `{ty}`")));
        }
    }
    for &inst in &func.layout {
        let data = &func.insts[inst];
        let ty = func.ty(data.result);
        let what = match data.op {
            TOp::Arange => "`arange`",
            TOp::Take { .. } => "`take`",
            // The positions of `argmax` and `argmin` are the one `i32` value the backend
            // computes (exactly, with `tensor_arg_reduce`); their offsets pass through
            // f32, exact below 2^24.
            TOp::ArgReduce { axis, .. }
                if func.ty(data.args[0]).shape[axis]
                    > crate::passes::tiling::scan::MAX_ARG_AXIS =>
            {
                "an `argmax`/`argmin` over an axis longer than 2^24"
            }
            TOp::ArgReduce { .. } if func.ty(data.args[0]).dtype.is_float() => continue,
            _ if ty.dtype == Dtype::I32 => "a value",
            _ if data.args.iter().any(|a| func.ty(*a).dtype == Dtype::I32) => {
                "an operation on an `i32` value"
            }
            _ => continue,
        };
        return Some((func.spans[inst], format!("{what} of type `{ty}`")));
    }
    None
}
