//! What of the tensor IR the machine backend compiles, checked before the passes run.
//!
//! Language version 2's `bool` values, comparisons, logical operations and `where` run on
//! the f32 datapath of the Vector engine, which holds the truth values 0 and 1 exactly;
//! its `i32` values and `arange` run on the integer datapath of Vector and GpSimd
//! (`isa/ISA.md`, "The integer datapath"), which computes in 32-bit two's complement and
//! never through f32. A `take` of a float or `bool` tensor whose indices are an `i32`
//! parameter runs on the indirect DMA (`tiling/gather.rs`), which reads the indices as raw
//! integers. The positions of `argmax` and `argmin` come exactly from `tensor_arg_reduce`
//! (`tiling/scan.rs`), whose offsets pass through f32, exact below 2^24. Other takes (an
//! `i32` table, computed indices) and arg-reductions over longer axes are checked, lowered
//! and evaluated by the reference, but not compiled yet: a kernel that uses them is
//! refused here with an error at its source line, rather than reaching a pass that would
//! fail with an internal error.

use crate::ir::{Function, Span, TOp};

/// The first instruction the backend cannot compile: its span and what it is. `None`
/// when the whole kernel compiles.
pub fn unsupported(func: &Function) -> Option<(Span, String)> {
    for &inst in &func.layout {
        let data = &func.insts[inst];
        let ty = func.ty(data.result);
        if let TOp::Take { .. } = data.op {
            let what = if ty.dtype == isa::Dtype::I32 {
                "`take`"
            } else if func.params.iter().any(|(_, p)| *p == data.args[1]) {
                // A take of floats or booleans whose indices are a parameter: the indirect DMA.
                continue;
            } else {
                "`take` with computed indices"
            };
            return Some((func.spans[inst], format!("{what} of type `{ty}`")));
        }
        if let TOp::ArgReduce { axis, .. } = data.op {
            // The positions of `argmax` and `argmin` are computed exactly by
            // `tensor_arg_reduce`; their offsets pass through f32, exact below 2^24.
            if func.ty(data.args[0]).shape[axis] > crate::passes::tiling::scan::MAX_ARG_AXIS {
                let what = "an `argmax`/`argmin` over an axis longer than 2^24";
                return Some((func.spans[inst], format!("{what} of type `{ty}`")));
            }
        }
    }
    None
}
