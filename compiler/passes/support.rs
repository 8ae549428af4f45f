//! What of the tensor IR the machine backend compiles, checked before the passes run.
//!
//! Language version 2's `bool` values, comparisons, logical operations and `where` run on
//! the f32 datapath of the Vector engine, which holds the truth values 0 and 1 exactly
//! (the `is_*`, `and`, `or` ALU ops and the `select` instruction). Its `i32` values,
//! `arange` and `take` are checked, lowered and evaluated by the reference, but the tiling
//! of this version has no integer datapath yet. A kernel that uses them is refused here
//! with an error at its source line, rather than reaching a pass that would compute it
//! through f32 (which holds integers exactly only up to 2^24) or fail with an internal
//! error.

use crate::ir::{Function, Span, TOp};
use isa::Dtype;

/// Why integer values are refused.
const NO_INTEGERS: &str = " does not run on the machine in this version: its backend has no \
     integer instructions yet";

/// The first instruction (or parameter) the backend cannot compile: its span, and what it
/// is and why it does not run. `None` when the whole kernel compiles.
pub fn unsupported(func: &Function) -> Option<(Span, String)> {
    for (i, (name, v)) in func.params.iter().enumerate() {
        let ty = func.ty(*v);
        if ty.dtype == Dtype::I32 {
            let span = func.param_spans.get(i).copied().unwrap_or_default();
            return Some((
                span,
                format!("the parameter `{name}` of type `{ty}`{NO_INTEGERS}"),
            ));
        }
    }
    for &inst in &func.layout {
        let data = &func.insts[inst];
        let ty = func.ty(data.result);
        let what = match data.op {
            TOp::Arange => "`arange`",
            TOp::Take { .. } => "`take`",
            TOp::Pool(ref p) => {
                let x = func.ty(data.args[0]);
                let bytes = super::tiling::pool::row_band_bytes(p, &x.shape, &ty.shape, x.dtype);
                if bytes <= super::tiling::pool::BAND_MAX {
                    continue;
                }
                return Some((
                    func.spans[inst],
                    format!(
                        "`{}` of `{x}` does not run on the machine in this version: one output row reads {bytes} bytes per partition, and at most {} fit an SBUF band (pool an operand with shorter rows)",
                        p.name(),
                        super::tiling::pool::BAND_MAX
                    ),
                ));
            }
            _ if ty.dtype == Dtype::I32 => "a value",
            _ => continue,
        };
        return Some((
            func.spans[inst],
            format!("{what} of type `{ty}`{NO_INTEGERS}"),
        ));
    }
    None
}
