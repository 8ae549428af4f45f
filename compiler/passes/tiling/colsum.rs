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

use super::block::BGraph;
use super::block::{AxisUse, Block, Tile};
use super::{row_blocks, Tiler, BLOCK_BUDGET};
use crate::ir::{Inst, ReduceFn, TOp, Value, ValueDef};
use crate::passes::fusion::{Fit, Group, Grouping, Root};
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
            && self.home[data.result].as_ref().is_none_or(|h| h.is_dense())
    }

    /// The column sums whose operand a row group computes and whose blocks that group's
    /// lowering walks at multiples of 128 columns: that group sums the operand's tiles as
    /// it computes them, so the operand never goes to HBM (unless something else reads
    /// it there). Returns (column sum, operand) pairs.
    pub(super) fn attach_column_sums(&self, grouping: &Grouping) -> Vec<(Inst, Value)> {
        let func = self.func;
        let mut out = Vec::new();
        for &inst in &func.layout {
            if !self.is_column_sum(inst) {
                continue;
            }
            let a = func.insts[inst].args[0];
            let ValueDef::Inst(d) = func.values[a].def else {
                continue;
            };
            let Some(gi) = grouping.group_of[d] else {
                continue;
            };
            let g = &grouping.groups[gi as usize];
            let shape = &func.ty(a).shape;
            let reduces = g
                .insts
                .iter()
                .any(|&i| matches!(func.insts[i].op, TOp::Reduce { .. }));
            let ok = matches!(g.root, Root::Rows)
                && !g.needs_plain_rows
                && &g.space == shape
                && !(g.insts.len() == 1 && reduces)
                && super::pipeline_chunk(func, g) >= shape[1]
                && (super::peak_block_bytes(func, g) <= BLOCK_BUDGET
                    || !reduces
                    || super::longrow::phased_ok(func, g, self.strict));
            if ok {
                out.push((inst, a));
            }
        }
        out
    }

    /// The attached column sums (`attach_column_sums`) whose operand `g` computes.
    pub(super) fn group_sums(&self, g: &Group) -> Vec<(Inst, Value)> {
        let func = self.func;
        self.attached_sums
            .iter()
            .copied()
            .filter(
                |(_, a)| matches!(func.values[*a].def, ValueDef::Inst(d) if g.insts.contains(&d)),
            )
            .collect()
    }

    /// Starts the attached column sums `sums` of a group whose block graph is `graph`
    /// (their operands are its kept nodes, in order): (node, column sum) pairs.
    pub(super) fn begin_sums(
        &mut self,
        graph: &BGraph,
        sums: &[(Inst, Value)],
    ) -> Result<Vec<(usize, ColumnSum)>, String> {
        if graph.keep.len() != sums.len() {
            return Err("a summed value is not in its group's block graph".into());
        }
        let mut out = Vec::new();
        for (&(inst, a), &node) in sums.iter().zip(&graph.keep) {
            let dt = self.func.ty(a).dtype;
            let sum = self.column_sum_begin(inst, dt);
            out.push((node, sum));
        }
        Ok(out)
    }

    /// Lowers the column sum `inst` (module comment) on its own, loading its operand.
    pub(super) fn lower_column_sum(&mut self, inst: Inst) -> Result<(), String> {
        let func = self.func;
        let data = &func.insts[inst];
        let span = func.spans[inst];
        let src = self.home_of(data.args[0])?;
        let (m, n) = (src.shape[0], src.shape[1]);
        let space = [m, n];
        let strides = super::space_strides(&src, &space, &space);
        // Column chunks of whole 128-column pieces, two blocks in flight.
        let per_piece = 128 * src.dtype.size() as u64;
        let chunk = ((BLOCK_BUDGET / 2 / per_piece).max(1) * 128).min(n);
        let sum = self.column_sum_begin(inst, src.dtype);
        for b in &row_blocks(&space, false, chunk) {
            let x = self.load(b, &src, &strides, Fit::Full, span);
            self.column_sum_block(&sum, b, x)?;
        }
        self.column_sum_finish(&sum)
    }

    /// The PSUM tile and the column of ones of the column sum `inst`, whose operand's
    /// tiles have dtype `dt`.
    pub(super) fn column_sum_begin(&mut self, inst: Inst, dt: Dtype) -> ColumnSum {
        let func = self.func;
        let shape = &func.ty(func.insts[inst].args[0]).shape;
        let (m, n) = (shape[0], shape[1]);
        let span = func.spans[inst];
        let psum = self.psum_tile(Dtype::F32, 128.min(n), n.div_ceil(128));
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
        ColumnSum { inst, psum, ones }
    }

    /// The matmuls of one block of the operand (`x`, its tile for `b`): each 128-column
    /// piece against the ones, into its PSUM column; a block's columns start at a multiple
    /// of 128.
    pub(super) fn column_sum_block(
        &mut self,
        sum: &ColumnSum,
        b: &Block,
        x: Tile,
    ) -> Result<(), String> {
        let span = self.func.spans[sum.inst];
        let (r0, k) = match b.axes.first() {
            Some(AxisUse::Part { start, size }) => (*start, *size as u32),
            _ => return Err("a column sum's block has no rows on partitions".into()),
        };
        let c0 = b.col_start();
        if !c0.is_multiple_of(128) || x.dtype != sum.ones.dtype || x.mem != isa::Mem::Sbuf {
            return Err("a column sum's block is not aligned to 128 columns".into());
        }
        let mut c = 0u32;
        while c < x.cols {
            let msz = 128.min(x.cols - c);
            let j = ((c0 + c as u64) / 128) as u32;
            self.out.push(
                Op::Matmul {
                    out: sum.psum.slice(0, msz, j, 1),
                    stationary: x.slice(0, k, c, msz),
                    moving: sum.ones.slice(0, k, 0, 1),
                    accumulate: r0 > 0,
                },
                Engine::Tensor,
                &[sum.psum.buf, x.buf, sum.ones.buf],
                span,
            );
            c += msz;
        }
        Ok(())
    }

    /// The sums out of PSUM (a mean divided once) and to HBM: element `j * 128 + p` of
    /// the result is partition `p` of column `j`.
    pub(super) fn column_sum_finish(&mut self, sum: &ColumnSum) -> Result<(), String> {
        let func = self.func;
        let data = &func.insts[sum.inst];
        let span = func.spans[sum.inst];
        let TOp::Reduce { func: rf, .. } = data.op else {
            return Err(format!("{} is not a reduction", sum.inst));
        };
        let dest = self.home_of(data.result)?;
        let res_dtype = func.ty(data.result).dtype;
        let shape = &func.ty(data.args[0]).shape;
        let (m, n) = (shape[0], shape[1]);
        let psum = sum.psum;
        let full = (n / 128) as u32;
        let rem = (n % 128) as u32;
        let parts = [(0u32, 128u32.min(n as u32), full), (full, rem, 1)];
        for &(j0, p, cols) in &parts {
            if p == 0 || cols == 0 {
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
                pack: None,
            };
            self.store(&block, out, &dest, &[1, 128], Fit::Full, span);
        }
        Ok(())
    }
}

/// A column sum in progress: its instruction, PSUM tile (one column per 128 output
/// elements) and column of ones.
#[derive(Clone, Debug)]
pub struct ColumnSum {
    pub inst: Inst,
    pub psum: Tile,
    pub ones: Tile,
}
