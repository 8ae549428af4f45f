//! `take` on the indirect DMA: the rows a kernel's run-time indices select are gathered
//! from HBM into SBUF by `dma_gather`, one row per partition, and stored to the take's home.
//!
//! `take(x, idx, axis)` reads `x[o, idx[j], i]` for every outer index `o` (the axes before
//! `axis`, merged), index position `j` (the flattened `idx`) and inner index `i` (the axes
//! after `axis`, merged). `x` may have any dtype: a gather moves bytes, so an `i32` table
//! is rows of 4-byte elements like any other. The indices are read from their HBM home: a
//! parameter's, or the scratch tensor the group that computes them stores to (an `argmax`,
//! arithmetic, a `where`); a view of indices that is not dense (a strided slice, a
//! transpose, a broadcast) is first copied to a dense scratch tensor. They go into SBUF 128
//! at a time as raw `i32` (an exact DMA copy, never f32); each gather takes one such tile
//! and moves, for each of its indices, a piece of the outer-by-inner elements of its row,
//! at most `GATHER_PIECE_BYTES` a partition, so that the gathers and the stores of several
//! pieces are in flight on the DMA queues at once. The language's negative indices are normalised by the gather itself
//! (`wrap`), so an index out of range faults with the value the user gave, and nothing is
//! read or written for it.
//!
//! Not yet: computed indices handed over in SBUF. A row group's per-row result (an
//! `argmax` of 128 rows) is already one index per partition, the index tile's layout; it
//! goes to HBM and back instead, two DMA latencies before the first gather.

use super::view::{dense_strides, HView};
use super::Tiler;
use crate::ir::{Inst, TOp};
use isa::{DmaAp, Engine, HbmAp, HbmDim, Op, Role};
use smallvec::SmallVec;

/// The most bytes a partition receives from one gather. Rows longer than this are
/// gathered in column pieces (a row of 4,096 bf16 in four), so that one index tile's
/// stores start while its later pieces still arrive.
const GATHER_PIECE_BYTES: u64 = 2048;
/// How many gathers a take is cut into at least, when its bytes allow pieces of at least
/// `GATHER_MIN_BYTES`: a queue moves 16 B a cycle and all 16 together 256, so a take of
/// few large gathers would leave most queues idle (a lookup of 256 rows of 1 KiB in two
/// gathers took 22,896 cycles against a bound of 2,052).
const GATHER_MIN_PIECES: u64 = 32;
/// The fewest bytes of one gather when a take is cut into partition groups (a DMA costs
/// its 2,000-cycle latency whatever its size, and each queue pipelines those).
const GATHER_MIN_BYTES: u64 = 8 * 1024;
/// How many gathers a store is emitted after its own: one a queue. A store right after its
/// gather waits on a queue for the gather's data while the gathers queued behind it wait
/// too (the embedding lookup bf16[128256, 4096] x 2048 ran at 0.61 of its bound so).
const STORE_LAG: usize = isa::NUM_DMA_QUEUES;

/// The axes of `dims` (sizes and strides, outermost first) merged where they walk memory
/// contiguously, without size-1 axes: `None` when they do not merge into at most one.
fn merge_one(dims: &[(u64, i64)]) -> Option<(u64, i64)> {
    let mut out: Option<(u64, i64)> = None;
    for &(size, stride) in dims {
        if size == 1 {
            continue;
        }
        out = match out {
            None => Some((size, stride)),
            Some((s, t)) if t == stride * size as i64 => Some((s * size, stride)),
            Some(_) => return None,
        };
    }
    Some(out.unwrap_or((1, 1)))
}

impl<'a> Tiler<'a> {
    /// Lowers a `take` instruction (see the module comment).
    pub(super) fn lower_take(&mut self, inst: Inst) -> Result<(), String> {
        let func = self.func;
        let data = &func.insts[inst];
        let span = func.spans[inst];
        let TOp::Take { axis } = data.op else {
            return Err(format!("{inst} is not a take"));
        };
        let res = func.ty(data.result).clone();
        let mut x = self.home_of(data.args[0])?;
        let mut idx = self.home_of(data.args[1])?;
        if idx.dtype != isa::Dtype::I32 {
            return Err(format!("{inst}: the indices of a take must be i32"));
        }
        if !idx.is_dense() {
            // A view of indices (a slice, a transpose, a broadcast) is copied to a dense
            // scratch tensor first, so that each index tile is one contiguous run.
            let buf = self.out.hbm(
                &format!("t{}", data.args[1].as_u32()),
                Role::Scratch,
                idx.dtype,
                &idx.shape,
            );
            let dense = HView::dense(buf, idx.dtype, &idx.shape);
            self.copy_view(&idx, &dense, span);
            idx = dense;
        }
        let nidx: u64 = idx.shape.iter().product();
        let rank = x.shape.len();
        let pair = |v: &HView, r: std::ops::Range<usize>| -> Vec<(u64, i64)> {
            v.shape[r.clone()]
                .iter()
                .copied()
                .zip(v.strides[r].iter().copied())
                .collect()
        };
        // The outer and inner axes of `x` must each walk memory as one strided axis;
        // otherwise `x` is copied to a dense scratch tensor first.
        let merged = |v: &HView| {
            Some((
                merge_one(&pair(v, 0..axis))?,
                merge_one(&pair(v, axis + 1..rank))?,
            ))
        };
        let ((outer, so), (inner, si)) = match merged(&x) {
            Some(m) => m,
            None => {
                let buf = self.out.hbm(
                    &format!("t{}", data.args[0].as_u32()),
                    Role::Scratch,
                    x.dtype,
                    &x.shape,
                );
                let dense = HView::dense(buf, x.dtype, &x.shape);
                self.copy_view(&x, &dense, span);
                x = dense;
                merged(&x).ok_or("a dense view's axes merge")?
            }
        };
        let (rows, sa) = (x.shape[axis], x.strides[axis]);
        // The destination, seen as [outer, nidx, inner], dense.
        let home = match self.home[data.result].clone() {
            Some(h) if h.is_dense() => h,
            Some(_) | None => {
                let buf = self.out.hbm(
                    &format!("t{}", data.result.as_u32()),
                    Role::Scratch,
                    res.dtype,
                    &res.shape,
                );
                HView::dense(buf, res.dtype, &res.shape)
            }
        };
        let dest = home.reshape(&[outer, nidx, inner]);
        let ds = dense_strides(&dest.shape);
        let esize = x.dtype.size() as u64;
        // Pieces of the outer-by-inner elements of a row: whole inner runs, as many outer
        // ones as fit, or column pieces of a long inner run.
        let per_piece = (GATHER_PIECE_BYTES / esize).max(1);
        let (oc, ic) = if inner <= per_piece {
            ((per_piece / inner).clamp(1, outer), inner)
        } else {
            (1, inner.div_ceil(inner.div_ceil(per_piece)))
        };
        // Partition groups of each index tile: enough gathers to spread over the queues.
        let piece_row_bytes = oc * ic * esize;
        let total = nidx.saturating_mul(outer * inner * esize);
        let per_gather = (total / GATHER_MIN_PIECES).max(GATHER_MIN_BYTES);
        // A slice of the index tile of at most 32 partitions must start at a multiple of
        // 32, one of 33 to 64 at 0 or 64 (the machine's partition quadrants): groups of
        // 32, 64 or 128.
        let group = match per_gather / piece_row_bytes.max(1) {
            0..=63 => 32,
            64..=127 => 64,
            _ => 128,
        };
        self.begin_group();
        let mut stores = std::collections::VecDeque::new();
        let mut j0 = 0u64;
        while j0 < nidx {
            let k = (nidx - j0).min(isa::PARTITIONS as u64);
            // The indices j0..j0+k, one per partition, as raw i32.
            let itile = self.sbuf_tile(isa::Dtype::I32, k as u32, 1);
            let ihbm = super::view::hbm_ap(isa::Dtype::I32, idx.offset + j0 as i64, &[(k, 1)]);
            self.out.push(
                Op::Dma {
                    dst: DmaAp::Tile(itile.ap()),
                    src: DmaAp::Hbm(ihbm),
                },
                Engine::Dma(0),
                &[itile.buf, idx.buf],
                span,
            );
            let mut pieces = Vec::new();
            let mut o0 = 0u64;
            while o0 < outer {
                let on = oc.min(outer - o0);
                let mut i0 = 0u64;
                while i0 < inner {
                    let inn = ic.min(inner - i0);
                    let mut p0 = 0u64;
                    while p0 < k {
                        let pn = group.min(k - p0);
                        pieces.push((o0, on, i0, inn, p0, pn));
                        p0 += pn;
                    }
                    i0 += inn;
                }
                o0 += on;
            }
            for (o0, on, i0, inn, p0, pn) in pieces {
                let tile = self.sbuf_tile(x.dtype, pn as u32, (on * inn) as u32);
                let start = x.offset + o0 as i64 * so + i0 as i64 * si;
                let mut dims: SmallVec<[HbmDim; 5]> = SmallVec::new();
                dims.push(HbmDim {
                    size: rows,
                    stride: sa,
                });
                let row = super::view::hbm_ap(x.dtype, 0, &[(on, so), (inn, si)]);
                dims.extend(row.dims.iter().copied());
                let src = HbmAp {
                    dtype: x.dtype,
                    offset: start.max(0) as u64 * esize,
                    dims,
                };
                self.out.push(
                    Op::DmaGather {
                        dst: tile.ap(),
                        idx: itile.slice(p0 as u32, pn as u32, 0, 1),
                        src,
                        wrap: true,
                    },
                    Engine::Dma(0),
                    &[tile.buf, itile.buf, x.buf],
                    span,
                );
                let j = (j0 + p0) as i64;
                let at = dest.offset + o0 as i64 * ds[0] + j * ds[1] + i0 as i64;
                let dims = [(pn, ds[1]), (on, ds[0]), (inn, 1)];
                let hbm = super::view::hbm_ap(res.dtype, at, &dims);
                stores.push_back((
                    Op::Dma {
                        dst: DmaAp::Hbm(hbm),
                        src: DmaAp::Tile(tile.ap()),
                    },
                    [dest.buf, tile.buf],
                ));
                // Each store follows the gather `STORE_LAG` gathers later, by when its own
                // gather has long finished, so it never holds a queue waiting for data.
                if stores.len() > STORE_LAG {
                    if let Some((op, bufs)) = stores.pop_front() {
                        self.out.push(op, Engine::Dma(0), &bufs, span);
                    }
                }
            }
            j0 += k;
        }
        for (op, bufs) in stores {
            self.out.push(op, Engine::Dma(0), &bufs, span);
        }
        match self.home[data.result].clone() {
            Some(h) if h != home => self.copy_view(&home, &h, span),
            Some(_) => {}
            None => self.home[data.result] = Some(home),
        }
        Ok(())
    }
}
