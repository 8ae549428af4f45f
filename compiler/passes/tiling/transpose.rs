//! Transposing copies on the PE array.
//!
//! A copy between two HBM views whose contiguous axes differ (a standalone `transpose`
//! stored to its output, or a transposed view made dense) would otherwise be a DMA that
//! moves one element per contiguous run, and every run costs at least 64 bytes: a bf16
//! transpose moved 32 times its bytes. Instead, rows of the source are loaded along its
//! contiguous axis (full-width runs), transposed 128 x 128 on the Tensor engine side by
//! side into a PSUM bank (in the operand's own dtype: a transpose moves values exactly),
//! copied out of the bank by one instruction in two halves (the `engines` pass gives one
//! half to the Scalar engine), and stored along the destination's contiguous axis, again
//! in full-width runs. Each byte then crosses the DMA queues twice, as the roofline bound
//! counts it, and the Tensor engine's share (64 cycles per 128 x 128 bf16 block) and the
//! copies' (about 1,100 cycles per bank) stay below the DMA's time.

use super::block::Tile;
use super::view::{hbm_ap, HView};
use super::Tiler;
use crate::frontend::typed::Span;
use isa::{DmaAp, Engine, Op};

/// Smallest extent of either transposed axis for which the PE array is used: below it, the
/// latency of a load, a transpose, a copy and a store costs more than the direct DMA saves.
const MIN_SIDE: u64 = 64;
/// Smallest number of elements of a whole transposing copy taken to the PE array.
const MIN_ELEMS: u64 = 32 * 1024;

impl Tiler<'_> {
    /// Copies `src` into `dest` (views of one shape and dtype) through PE-array transposes
    /// when the destination's last axis is contiguous, the source's is not, and another
    /// source axis is contiguous; returns false, having emitted nothing, otherwise.
    pub(super) fn copy_transposed(&mut self, src: &HView, dest: &HView, span: Span) -> bool {
        let r = src.shape.len();
        // Float formats only: the timing model has no PE-array rate for `i32` or `bool`
        // tiles, which keep the direct DMA.
        if r < 2 || dest.shape != src.shape || dest.dtype != src.dtype || !src.dtype.is_float() {
            return false;
        }
        let y_axis = r - 1;
        if dest.strides[y_axis] != 1 || src.strides[y_axis] == 1 || src.strides[y_axis] == 0 {
            return false;
        }
        let Some(x_axis) = (0..y_axis).find(|&a| src.strides[a] == 1 && src.shape[a] > 1) else {
            return false;
        };
        let (x, y) = (src.shape[x_axis], src.shape[y_axis]);
        let elems: u64 = src.shape.iter().product();
        if x < MIN_SIDE || y < MIN_SIDE || elems < MIN_ELEMS {
            return false;
        }
        // Every other axis is a batch of 2-D transposes.
        let batch: Vec<usize> = (0..r).filter(|&a| a != x_axis && a != y_axis).collect();
        let count: u64 = batch.iter().map(|&a| src.shape[a]).product();
        for i in 0..count {
            let (mut so, mut d_o) = (src.offset, dest.offset);
            let mut rest = i;
            for &a in batch.iter().rev() {
                let idx = (rest % src.shape[a]) as i64;
                rest /= src.shape[a];
                so += idx * src.strides[a];
                d_o += idx * dest.strides[a];
            }
            let plane = Plane {
                x,
                y,
                src_offset: so,
                src_y_stride: src.strides[y_axis],
                dest_offset: d_o,
                dest_x_stride: dest.strides[x_axis],
            };
            self.transpose_plane(src, dest, &plane, span);
        }
        true
    }

    /// One 2-D transpose: `dest[x, y] = src[x, y]` where `src` is contiguous along x and
    /// `dest` along y. The source is loaded in bands of up to a bank's columns of y (128
    /// rows of y per tile, a bank's width of x along each), each 128-row block of x is
    /// transposed from those tiles into one bank, copied out and stored as one tile.
    fn transpose_plane(&mut self, src: &HView, dest: &HView, p: &Plane, span: Span) {
        let dtype = src.dtype;
        let per_bank = 2048 / dtype.size() as u64;
        let mut y0 = 0;
        while y0 < p.y {
            let ysz = per_bank.min(p.y - y0);
            let mut x0 = 0;
            while x0 < p.x {
                let xsz = per_bank.min(p.x - x0);
                // The source rows y0..y0+ysz, columns x0..x0+xsz, 128 rows a tile.
                let mut rows = Vec::new();
                let mut c = 0;
                while c < ysz {
                    let csz = 128.min(ysz - c);
                    let tile = self.sbuf_tile(dtype, csz as u32, xsz as u32);
                    let base = p.src_offset + (y0 + c) as i64 * p.src_y_stride + x0 as i64;
                    self.dma_2d(tile, src, base, (csz, p.src_y_stride), (xsz, 1), span);
                    rows.push(tile);
                    c += csz;
                }
                let mut b = 0;
                while b < xsz {
                    let bsz = 128.min(xsz - b);
                    let bank = self.psum_tile(dtype, bsz, ysz);
                    for (j, tile) in rows.iter().enumerate() {
                        let at = j as u32 * 128;
                        self.out.push(
                            Op::Transpose {
                                out: bank.slice(0, bsz as u32, at, tile.parts),
                                src: tile.slice(0, tile.parts, b as u32, bsz as u32),
                            },
                            Engine::Tensor,
                            &[bank.buf, tile.buf],
                            span,
                        );
                    }
                    let out = self.sbuf_tile(dtype, bsz as u32, ysz as u32);
                    // Two copies, so that Vector and Scalar share the bank.
                    let half = if ysz >= 256 {
                        (ysz / 2).next_multiple_of(128)
                    } else {
                        ysz
                    };
                    let mut c0 = 0;
                    while c0 < ysz {
                        let cn = if c0 == 0 { half } else { ysz - c0 };
                        self.copy_out(
                            out.slice(0, bsz as u32, c0 as u32, cn as u32),
                            bank.slice(0, bsz as u32, c0 as u32, cn as u32),
                            &[out.buf, bank.buf],
                            span,
                        );
                        c0 += cn;
                    }
                    let base = p.dest_offset + (x0 + b) as i64 * p.dest_x_stride + y0 as i64;
                    self.store_2d(out, dest, base, (bsz, p.dest_x_stride), ysz, span);
                    b += bsz;
                }
                x0 += xsz;
            }
            y0 += ysz;
        }
    }

    /// Stores `tile` (`rows` partitions of `cols` contiguous elements each) to `view` from
    /// element `base`, in quarters of 32 partitions so that the pieces go to several DMA
    /// queues.
    fn store_2d(
        &mut self,
        tile: Tile,
        view: &HView,
        base: i64,
        rows: (u64, i64),
        cols: u64,
        span: Span,
    ) {
        let pn = if rows.0 > 32 { 32 } else { rows.0 };
        let mut p0 = 0;
        while p0 < rows.0 {
            let n = pn.min(rows.0 - p0);
            let dst = hbm_ap(
                view.dtype,
                base + p0 as i64 * rows.1,
                &[(n, rows.1), (cols, 1)],
            );
            self.out.push(
                Op::Dma {
                    dst: DmaAp::Hbm(dst),
                    src: DmaAp::Tile(tile.slice(p0 as u32, n as u32, 0, cols as u32)),
                },
                Engine::Dma(0),
                &[view.buf, tile.buf],
                span,
            );
            p0 += n;
        }
    }
}

/// One 2-D plane of a transposing copy, in elements.
struct Plane {
    /// Extent of the source's contiguous axis (the destination's rows).
    x: u64,
    /// Extent of the destination's contiguous axis (the source's rows).
    y: u64,
    src_offset: i64,
    src_y_stride: i64,
    dest_offset: i64,
    dest_x_stride: i64,
}
