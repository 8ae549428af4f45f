//! The roofline bound of a kernel (`docs/machine.md`, "The roofline bound"): the time
//! the kernel cannot beat on the machine, computed from tensor IR alone — never from the
//! emitted instructions, so emitting more or other code cannot make it look better.
//!
//! Three limits, in cycles; the bound is the largest:
//! - `dma`: compulsory HBM traffic — every input read once, every output written once — at
//!   the DMA peak (`dma_total_rate`, 256 B/cycle by default);
//! - `tensor`: the multiply-accumulates of every matmul at the Tensor engine's peak for
//!   its operands (128 x 128 MACs per moving column; the faster operand dtype decides,
//!   since the compiler may choose which side moves);
//! - `scalar`: the elements of every transcendental function at the Scalar engine's peak
//!   of 128 elements per cycle (one element per partition per cycle).

use crate::ir::{Function, TOp, UnaryFn};
use runtime::Timing;

/// The bound and its parts, in cycles.
#[derive(Clone, Debug, PartialEq)]
pub struct Bound {
    pub dma_cycles: f64,
    pub tensor_cycles: f64,
    pub scalar_cycles: f64,
    /// Bytes of the inputs and of the outputs.
    pub hbm_read_bytes: u64,
    pub hbm_write_bytes: u64,
    /// Matmul floating-point operations (2 per multiply-accumulate).
    pub matmul_flops: u64,
    /// Transcendental elements.
    pub transcendentals: u64,
}

impl Bound {
    /// The bound: the largest of the three limits, rounded up to whole cycles.
    pub fn cycles(&self) -> u64 {
        self.dma_cycles
            .max(self.tensor_cycles)
            .max(self.scalar_cycles)
            .ceil() as u64
    }

    /// The engine whose limit is the bound: `"dma"`, `"tensor"` or `"scalar"`.
    pub fn engine(&self) -> &'static str {
        if self.tensor_cycles >= self.dma_cycles && self.tensor_cycles >= self.scalar_cycles {
            "tensor"
        } else if self.scalar_cycles > self.dma_cycles {
            "scalar"
        } else {
            "dma"
        }
    }
}

/// True for the functions the Scalar engine evaluates as transcendentals.
fn is_transcendental(u: UnaryFn) -> bool {
    matches!(
        u,
        UnaryFn::Exp
            | UnaryFn::Log
            | UnaryFn::Sqrt
            | UnaryFn::Rsqrt
            | UnaryFn::Reciprocal
            | UnaryFn::Tanh
            | UnaryFn::Sigmoid
            | UnaryFn::Silu
            | UnaryFn::Gelu
            | UnaryFn::GeluTanh
    )
}

/// The roofline bound of a kernel on a machine with timing `t`.
pub fn bound(func: &Function, t: &Timing) -> Bound {
    let bytes = |v| {
        let ty = func.ty(v);
        ty.elems() * ty.dtype.size() as u64
    };
    let hbm_read_bytes: u64 = func.params.iter().map(|(_, v)| bytes(*v)).sum();
    let hbm_write_bytes: u64 = func.results.iter().map(|v| bytes(*v)).sum();
    let mut tensor_cycles = 0.0;
    let mut matmul_flops = 0u64;
    let mut transcendentals = 0u64;
    for &inst in &func.layout {
        let data = &func.insts[inst];
        match data.op {
            TOp::Matmul => {
                let a = func.ty(data.args[0]);
                let b = func.ty(data.args[1]);
                let k = a.shape[a.shape.len() - 1];
                let out = func.ty(data.result).elems();
                let macs = out * k;
                matmul_flops += 2 * macs;
                let rate = |d| {
                    let r = t.pe_rate_of(d);
                    r.columns as f64 / r.cycles as f64
                };
                let columns_per_cycle = rate(a.dtype).max(rate(b.dtype));
                tensor_cycles += macs as f64 / (128.0 * 128.0 * columns_per_cycle);
            }
            TOp::Unary(u) if is_transcendental(u) => {
                transcendentals += func.ty(data.result).elems();
            }
            _ => {}
        }
    }
    Bound {
        dma_cycles: (hbm_read_bytes + hbm_write_bytes) as f64 / t.dma_total_rate as f64,
        tensor_cycles,
        scalar_cycles: transcendentals as f64 / 128.0,
        hbm_read_bytes,
        hbm_write_bytes,
        matmul_flops,
        transcendentals,
    }
}
