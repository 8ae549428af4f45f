//! What of the tensor IR the machine backend compiles, checked before the passes run.
//!
//! Language version 2's `bool` values, comparisons, logical operations and `where` run on
//! the f32 datapath of the Vector engine, which holds the truth values 0 and 1 exactly;
//! its `i32` values and `arange` run on the integer datapath of Vector and GpSimd
//! (`isa/ISA.md`, "The integer datapath"), which computes in 32-bit two's complement and
//! never through f32. Every `take` runs on the indirect DMA (`tiling/gather.rs`), which
//! moves rows of bytes (any table dtype) and reads its indices, a parameter or values the
//! kernel computes, as raw integers: nothing about a take is refused. `cumsum`, `argmax`
//! and `argmin` (`tiling/scan.rs`) run for float and `i32` operands: `tensor_scan` and
//! `tensor_arg_reduce` read `i32` tiles as integers, and the partial winners of a spread
//! lane cross partitions as exact bit copies. The positions of `argmax` and `argmin` are
//! exact `i32` below 2^24. Arg-reductions over longer axes are checked, lowered and
//! evaluated by the reference, but not compiled yet: a kernel that uses them is refused
//! here with an error at its source line, rather than reaching a pass that would fail with
//! an internal error. So is a pool whose output row reads more input than an SBUF band
//! holds (`tiling/pool.rs`).

use crate::ir::{Function, Span, TOp};

/// Why a value is refused.
const NOT_YET: &str = " does not run on the machine in this version";

/// The first instruction the backend cannot compile: its span, and what it is and why it
/// does not run. `None` when the whole kernel compiles.
pub fn unsupported(func: &Function) -> Option<(Span, String)> {
    for &inst in &func.layout {
        let data = &func.insts[inst];
        let ty = func.ty(data.result);
        if let TOp::ArgReduce { axis, .. } = data.op {
            // The positions of `argmax` and `argmin` are computed exactly by
            // `tensor_arg_reduce`; their offsets pass through f32, exact below 2^24.
            if func.ty(data.args[0]).shape[axis] > crate::passes::tiling::scan::MAX_ARG_AXIS {
                let what = "an `argmax`/`argmin` over an axis longer than 2^24";
                return Some((func.spans[inst], format!("{what} of type `{ty}`{NOT_YET}")));
            }
        }
        if let TOp::Pool(ref p) = data.op {
            let x = func.ty(data.args[0]);
            let bytes = super::tiling::pool::row_band_bytes(p, &x.shape, &ty.shape, x.dtype);
            if bytes > super::tiling::pool::BAND_MAX {
                return Some((
                    func.spans[inst],
                    format!(
                        "`{}` of `{x}`{NOT_YET}: one output row reads {bytes} bytes per partition, and at most {} fit an SBUF band (pool an operand with shorter rows)",
                        p.name(),
                        super::tiling::pool::BAND_MAX
                    ),
                ));
            }
        }
    }
    None
}
