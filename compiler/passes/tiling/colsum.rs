//! Column sums on the PE array: `sum(x, axis=0)` (and `mean`) of a rank-2 `x[M, N]`.
//!
//! Reducing a non-last axis through a permuted view puts the reduced axis on the free
//! dimension but reads `x` one element a run (each run costs 64 bytes of DMA: 16 times
//! the data in f32), a partition at a time. Here `x` is loaded as it lies, 128 rows on
//! partitions, and each 128-column piece of a block is the stationary operand of a matmul
//! against a column of ones: `psum[m, 0] += sum_k x[k, m] * 1`, the column sums of the
//! piece with its columns on partitions, accumulated in PSUM over the row blocks. Each
//! output column is one PSUM accumulation group.
//!
//! Numerics: the products `x * 1` are exact and the Tensor engine adds them one at a time
//! in `k` order, rounding each sum to f32, and row block after row block: the reference's
//! sequential f32 sum over the rows, bit for bit, so this runs under strict too. The sum is
//! rounded once to the result's dtype (a mean divided once by `M` first).

use super::block::{AxisUse, Block};
use super::{row_blocks, Tiler, BLOCK_BUDGET};
use crate::ir::{Inst, ReduceFn, TOp};
use crate::passes::fusion::Fit;
use isa::{AluOp, Dtype, Engine, Imm, Op, ScalarArg};

/// The most output columns of PSUM one column sum uses (one bank of f32).
const MAX_PIECES: u64 = 512;

impl Tiler<'_> {
    /// True when `inst` is a column sum this file lowers.
    pub(super) fn is_column_sum(&self, inst: Inst) -> bool {
        let func = self.func;
        let data = &func.insts[inst];
        let TOp::Reduce { func: rf, axis, .. } = data.op else {
            return false;
        };
        let src = func.ty(data.args[0]);
        let float = |d: Dtype| matches!(d, Dtype::F32 | Dtype::Bf16 | Dtype::F16);
        axis == 0
            && src.shape.len() == 2
            && matches!(rf, ReduceFn::Sum | ReduceFn::Mean)
            && float(src.dtype)
            && float(func.ty(data.result).dtype)
            && src.shape[1].div_ceil(128) <= MAX_PIECES
            && src.shape[0] > 0
            && src.shape[1] > 0
            && self.home[data.result]
                .as_ref()
                .is_some_and(|h| h.is_dense())
    }

    /// Lowers the column sum `inst` (module comment).
    pub(super) fn lower_column_sum(&mut self, inst: Inst) -> Result<(), String> {
        let func = self.func;
        let data = &func.insts[inst];
        let span = func.spans[inst];
        let TOp::Reduce { func: rf, .. } = data.op else {
            return Err(format!("{inst} is not a reduction"));
        };
        let src = self.home_of(data.args[0])?;
        let dest = self.home_of(data.result)?;
        let res_dtype = func.ty(data.result).dtype;
        let (m, n) = (src.shape[0], src.shape[1]);
        let space = [m, n];
        let strides = super::space_strides(&src, &space, &space);
        let dt = src.dtype;
        // Column chunks of whole 128-column pieces, two blocks in flight.
        let per_piece = 128 * dt.size() as u64;
        let chunk = ((BLOCK_BUDGET / 2 / per_piece).max(1) * 128).min(n);
        let pieces = n.div_ceil(128);
        let psum = self.psum_tile(Dtype::F32, 128.min(n), pieces);
        let ones = self.sbuf_tile(dt, 128.min(m) as u32, 1);
        self.out.push(
            Op::Memset {
                out: ones.ap(),
                value: Imm::new(1.0),
            },
            Engine::Vector,
            &[ones.buf],
            span,
        );
        for b in &row_blocks(&space, false, chunk) {
            let (r0, k) = match b.axes[0] {
                AxisUse::Part { start, size } => (start, size as u32),
                _ => return Err("a column sum's block has no rows on partitions".into()),
            };
            let c0 = b.col_start();
            let x = self.load(b, &src, &strides, Fit::Full, span);
            let mut c = 0u32;
            while c < x.cols {
                let msz = 128.min(x.cols - c);
                let j = ((c0 + c as u64) / 128) as u32;
                self.out.push(
                    Op::Matmul {
                        out: psum.slice(0, msz, j, 1),
                        stationary: x.slice(0, k, c, msz),
                        moving: ones.slice(0, k, 0, 1),
                        accumulate: r0 > 0,
                    },
                    Engine::Tensor,
                    &[psum.buf, x.buf, ones.buf],
                    span,
                );
                c += msz;
            }
        }
        // Out of PSUM (a mean divided once) and to HBM: element `j * 128 + p` of the
        // result is partition `p` of column `j`.
        let full = (n / 128) as u32;
        let rem = (n % 128) as u32;
        let parts = [(0u32, 128u32.min(n as u32), full), (full, rem, 1)];
        for &(j0, p, cols) in &parts {
            if p == 0 || cols == 0 || (j0 == full && rem == 0) {
                continue;
            }
            let out = self.sbuf_tile(res_dtype, p, cols);
            let (op0, s0) = if rf == ReduceFn::Mean {
                (AluOp::Div, ScalarArg::imm(m as f32))
            } else {
                (AluOp::Bypass, ScalarArg::imm(0.0))
            };
            self.out.push(
                Op::TensorScalar {
                    out: out.ap(),
                    src: psum.slice(0, p, j0, cols),
                    op0,
                    s0,
                    op1: AluOp::Bypass,
                    s1: ScalarArg::imm(0.0),
                },
                Engine::Vector,
                &[out.buf, psum.buf],
                span,
            );
            let block = Block {
                axes: vec![
                    AxisUse::Part {
                        start: 0,
                        size: p as u64,
                    },
                    AxisUse::Col {
                        start: j0 as u64,
                        size: cols as u64,
                    },
                ],
            };
            self.store(&block, out, &dest, &[1, 128], Fit::Full, span);
        }
        Ok(())
    }
}
