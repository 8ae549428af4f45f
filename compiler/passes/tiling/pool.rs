//! `max_pool` and `avg_pool` on the Vector and GpSimd engines, with the window as an
//! access pattern (`frontend/pool.rs` has the geometry, `reference/pool.rs` the semantics).
//!
//! The rows `N x C` go on partitions (a block of up to 128 partitions, each holding `G`
//! consecutive rows when the spatial extent is small, so one instruction covers many rows),
//! and each block is cut into bands of output rows so that the loads of one band overlap
//! the work of the one before. A band's input rows (with the window's halo) are loaded
//! once into an SBUF tile whose border (padding, and the ceil-mode overhang) is memset to
//! `-inf` for the maximum or `0` for the average. Then:
//! - `max_pool` is separable, since the maximum is exact in any order: one `tensor_reduce`
//!   over an access pattern `[G, rows, OW, kW]` (the innermost dimension walks a window's
//!   columns) gives each row's column maxima, and a second over `[G, OH, OW, kH]` (the
//!   innermost walks the window's rows) gives the result: `kW` and `kH` reads per output
//!   position at one element per cycle, instead of `kW kH` two-input operations.
//! - `avg_pool` adds the taps in the language's row-major window order: the first tap
//!   through the Scalar engine's identity activation `x * 1 + 0` (which turns `-0` into
//!   `+0`, so the sum starts at `+0.0` exactly as the reference's), each next tap with one
//!   `tensor_tensor` add over a strided pattern of the tile, into an f32 accumulator; the
//!   padding taps add `+0.0`, which changes no sum that starts at `+0.0`. The division is one
//!   `tensor_scalar` by the divisor when every position has the same one, else a
//!   `tensor_tensor` by a divisor tile built once with a memset per rectangle of equal
//!   divisors.
//! - A global pool (the window is the whole spatial extent, no padding) is one
//!   `tensor_reduce` (`tensor_reduce_scalar` `(sum + 0) / n` for the average) per block.
//!
//! Each band goes to Vector or GpSimd, whichever would finish it first by the machine's
//! costs (GpSimd is four times slower per element); the avg's first tap is on Scalar.

use super::view::{hbm_ap, HView};
use super::Tiler;
use crate::frontend::pool::{AxisWindow, Pool, PoolKind};
use crate::ir::{Inst, Span, TOp};
use crate::tile::Buf;
use isa::{ActFunc, AluOp, Dim, DmaAp, Dtype, Engine, Mem, Op, ReduceOp, Role, ScalarArg, TileAp};
use smallvec::SmallVec;

/// Bytes per partition of a band's input tile (so that several bands are in flight).
const BAND_BYTES: u64 = 24 * 1024;
/// The most bytes per partition of one output row's input band (or of a global pool's
/// row): beyond, the pool is refused before the passes run (`passes/support.rs`).
pub const BAND_MAX: u64 = 64 * 1024;
/// The fewest pieces (blocks times bands) a pool is cut into, for pipelining.
const MIN_PIECES: u64 = 8;

/// The bytes per partition of the input that one output row of `pool` reads (the whole
/// row for a global pool), for an input of `shape` and `dtype`.
pub fn row_band_bytes(pool: &Pool, shape: &[u64], out: &[u64], dtype: Dtype) -> u64 {
    let esize = dtype.size() as u64;
    if pool.is_global(shape) {
        return shape[2..].iter().product::<u64>() * esize;
    }
    let (h, w) = if pool.axes() == 2 {
        (
            Axis::new(pool, 0, shape[2], out[2]),
            Axis::new(pool, 1, shape[3], out[3]),
        )
    } else {
        (Axis::unit(), Axis::new(pool, 0, shape[2], out[2]))
    };
    h.extent() * w.padded() * esize
}

/// One spatial axis of the pool (a 1-D pool gets a unit axis in front).
struct Axis {
    n: u64,
    out: u64,
    k: u64,
    s: u64,
    d: u64,
    /// Padding before the input, and after it (the right padding and the ceil-mode
    /// overhang, as far as some window reaches).
    lo: u64,
    hi: u64,
    windows: Vec<AxisWindow>,
}

impl Axis {
    fn new(pool: &Pool, a: usize, n: u64, out: u64) -> Axis {
        let (k, s, p, d) = (
            pool.window[a],
            pool.stride[a],
            pool.padding[a],
            pool.dilation[a],
        );
        let last = (out - 1) * s + (k - 1) * d; // in padded coordinates
        Axis {
            n,
            out,
            k,
            s,
            d,
            lo: p,
            hi: (last + 1).saturating_sub(p + n),
            windows: (0..out).map(|o| pool.window_of(a, n, o)).collect(),
        }
    }

    fn unit() -> Axis {
        Axis {
            n: 1,
            out: 1,
            k: 1,
            s: 1,
            d: 1,
            lo: 0,
            hi: 0,
            windows: vec![AxisWindow {
                start: 0,
                first: 0,
                end: 1,
                divisor: 1,
            }],
        }
    }

    /// The padded length.
    fn padded(&self) -> u64 {
        self.lo + self.n + self.hi
    }

    /// The dilated window.
    fn extent(&self) -> u64 {
        (self.k - 1) * self.d + 1
    }
}

/// A tensor of `[N, C, H, W]` in HBM with its rows `N x C` merged: buffer, dtype, offset
/// and strides of a row, a spatial row and a spatial column.
struct Rows {
    buf: Buf,
    dtype: Dtype,
    offset: i64,
    row: i64,
    h: i64,
    w: i64,
}

/// The merged-row form of a pool operand or result view, if its `N` and `C` axes merge.
fn rows_of(view: &HView) -> Option<Rows> {
    let s = &view.strides;
    let sh = &view.shape;
    let row = if sh[1] == 1 {
        s[0]
    } else if sh[0] == 1 || s[0] == s[1] * sh[1] as i64 {
        s[1]
    } else {
        return None;
    };
    let rank = sh.len();
    Some(Rows {
        buf: view.buf,
        dtype: view.dtype,
        offset: view.offset,
        row,
        h: if rank == 4 { s[2] } else { 0 },
        w: s[rank - 1],
    })
}

/// A tile access pattern over `buf` from element `offset`, dims `(size, stride)`
/// outermost first; size-1 dims are dropped unless `keep_last` (a reduction's dimension).
pub(super) fn tile_ap(
    buf_dtype: Dtype,
    p0: u32,
    pn: u32,
    offset: u64,
    dims: &[(u64, i64)],
    keep_last: bool,
) -> TileAp {
    let mut out: SmallVec<[Dim; 4]> = SmallVec::new();
    let n = dims.len();
    for (i, &(size, stride)) in dims.iter().enumerate() {
        if size == 1 && !(keep_last && i + 1 == n) {
            continue;
        }
        out.push(Dim {
            size: size as u32,
            stride: stride as i32,
        });
    }
    if out.is_empty() {
        out.push(Dim { size: 1, stride: 1 });
    }
    TileAp {
        mem: Mem::Sbuf,
        dtype: buf_dtype,
        partition: p0 as u8,
        partitions: pn as u8,
        offset: (offset * buf_dtype.size() as u64) as u32,
        dims: out,
    }
}

/// A block of rows: the first row, the partitions, and the rows per partition.
#[derive(Clone, Copy)]
struct Chunk {
    base: u64,
    parts: u32,
    g: u64,
}

/// Cuts `rows` into blocks of up to 128 partitions of `g` rows each (the tail with fewer).
fn chunks(rows: u64, g: u64) -> Vec<Chunk> {
    let mut out = Vec::new();
    let mut base = 0;
    while base < rows {
        let rem = rows - base;
        let c = if rem >= 128 * g {
            Chunk {
                base,
                parts: 128,
                g,
            }
        } else if rem >= 128 {
            Chunk {
                base,
                parts: 128,
                g: rem / 128,
            }
        } else {
            Chunk {
                base,
                parts: rem as u32,
                g: 1,
            }
        };
        base += c.parts as u64 * c.g;
        out.push(c);
    }
    out
}

/// A transfer between a tile region and HBM: partitions `p0..p0 + pn` (HBM stride
/// `part_stride` between them), free dims `(size, tile stride, HBM stride)`.
pub(super) struct Xfer {
    pub tile: Buf,
    pub hbm: Buf,
    pub dtype: Dtype,
    pub p0: u32,
    pub pn: u32,
    pub tile_off: u64,
    pub hbm_off: i64,
    pub part_stride: i64,
    pub dims: Vec<(u64, i64, i64)>,
}

/// Elements `o0..o0 + on` of free dim `si` of a transfer's dims `(size, tile stride, HBM
/// stride)`: the piece's dims and its tile and HBM offsets (elements).
pub(super) fn piece(
    dims: &[(u64, i64, i64)],
    si: usize,
    o0: u64,
    on: u64,
    tile_off: u64,
    hbm_off: i64,
) -> (Vec<(u64, i64, i64)>, u64, i64) {
    let mut dims = dims.to_vec();
    match dims.get_mut(si) {
        Some(d) => {
            d.0 = on;
            let offs = (tile_off + o0 * d.1 as u64, hbm_off + o0 as i64 * d.2);
            (dims, offs.0, offs.1)
        }
        None => (dims, tile_off, hbm_off),
    }
}

/// The Vector and GpSimd time (cycles) planned so far, to give each band to the engine
/// that finishes it first.
#[derive(Default)]
pub(super) struct Loads {
    pub(super) vector: f64,
    pub(super) gpsimd: f64,
}

impl Loads {
    /// Picks an engine for work of `elems` element-passes in `insts` instructions (Vector's
    /// cycles; GpSimd's are four times the elements) and books it.
    pub(super) fn pick(&mut self, elems: f64, insts: f64) -> Engine {
        let v = self.vector + 64.0 * insts + elems;
        let g = self.gpsimd + 64.0 * insts + 4.0 * elems;
        if v <= g {
            self.vector = v;
            Engine::Vector
        } else {
            self.gpsimd = g;
            Engine::GpSimd
        }
    }
}

impl Tiler<'_> {
    /// Lowers a pool instruction (its own group).
    pub(super) fn lower_pool(&mut self, inst: Inst) -> Result<(), String> {
        let func = self.func;
        let data = &func.insts[inst];
        let TOp::Pool(pool) = &data.op else {
            return Err(format!("{inst} is not a pool"));
        };
        let span = func.spans[inst];
        let mut src = self.home_of(data.args[0])?;
        if rows_of(&src).is_none() {
            let ty = func.ty(data.args[0]);
            let buf = self.out.hbm(
                &format!("t{}", data.args[0].as_u32()),
                Role::Scratch,
                ty.dtype,
                &ty.shape,
            );
            let dense = HView::dense(buf, ty.dtype, &ty.shape);
            self.copy_view(&src, &dense, span);
            src = dense;
        }
        let dest = self.home_of(data.result)?;
        let res = func.ty(data.result);
        let (dest_rows, copy_to) = match rows_of(&dest) {
            Some(r) => (r, None),
            None => {
                let buf = self.out.hbm(
                    &format!("t{}", data.result.as_u32()),
                    Role::Scratch,
                    res.dtype,
                    &res.shape,
                );
                let dense = HView::dense(buf, res.dtype, &res.shape);
                (
                    rows_of(&dense).ok_or("a dense view has mergeable rows")?,
                    Some((dense, dest)),
                )
            }
        };
        let x = rows_of(&src).ok_or("the pool operand has mergeable rows")?;
        let shape = &src.shape;
        let rows = shape[0] * shape[1];
        let (h, w) = if pool.axes() == 2 {
            (
                Axis::new(pool, 0, shape[2], res.shape[2]),
                Axis::new(pool, 1, shape[3], res.shape[3]),
            )
        } else {
            (Axis::unit(), Axis::new(pool, 0, shape[2], res.shape[2]))
        };
        self.begin_group();
        if pool.is_global(shape) {
            self.global_pool(pool, &x, &dest_rows, rows, (h.n, w.n), span);
        } else {
            self.windowed_pool(pool, &x, &dest_rows, rows, &h, &w, span)?;
        }
        if let Some((from, to)) = copy_to {
            self.copy_view(&from, &to, span);
        }
        Ok(())
    }

    /// DMAs of a transfer, split into partition quarters and pieces of the outermost free
    /// dim (up to 16 pieces of at least 16 KiB) for the queues.
    pub(super) fn pool_transfer(&mut self, x: &Xfer, load: bool, span: Span) {
        let esize = x.dtype.size() as u64;
        let per_part: u64 = x.dims.iter().map(|d| d.0).product();
        let bytes = per_part * x.pn as u64 * esize;
        let want = (bytes / (16 * 1024)).clamp(1, 16);
        let quarters = if want >= 4 && x.pn > 32 {
            x.pn.div_ceil(32)
        } else {
            1
        };
        let qsize = if quarters > 1 { 32 } else { x.pn };
        // The outermost free dim longer than 1 is cut.
        let si = x.dims.iter().position(|d| d.0 > 1).unwrap_or(0);
        let outer = x.dims.get(si).map_or(1, |d| d.0);
        let splits = (want / quarters as u64).clamp(1, outer);
        for q in 0..quarters {
            let p0 = x.p0 + q * qsize;
            let pn = qsize.min(x.p0 + x.pn - p0);
            let per = outer.div_ceil(splits);
            let mut o0 = 0;
            while o0 < outer {
                let on = per.min(outer - o0);
                let (dims, tile_off, hbm_off) = piece(&x.dims, si, o0, on, x.tile_off, x.hbm_off);
                let tdims: Vec<(u64, i64)> = dims.iter().map(|d| (d.0, d.1)).collect();
                let tile = DmaAp::Tile(tile_ap(x.dtype, p0, pn, tile_off, &tdims, false));
                let mut hdims = vec![(pn as u64, x.part_stride)];
                hdims.extend(dims.iter().map(|d| (d.0, d.2)));
                let hbm_off = hbm_off + (p0 - x.p0) as i64 * x.part_stride;
                let hbm = DmaAp::Hbm(hbm_ap(x.dtype, hbm_off, &hdims));
                let (dst, src, bufs) = if load {
                    (tile, hbm, [x.tile, x.hbm])
                } else {
                    (hbm, tile, [x.hbm, x.tile])
                };
                self.out
                    .push(Op::Dma { dst, src }, Engine::Dma(0), &bufs, span);
                o0 += on;
            }
        }
    }

    /// A pool whose window is the whole spatial extent: a reduction per block of rows.
    fn global_pool(
        &mut self,
        pool: &Pool,
        x: &Rows,
        dest: &Rows,
        rows: u64,
        (hn, wn): (u64, u64),
        span: Span,
    ) {
        let elems = hn * wn;
        let esize = x.dtype.size() as u64;
        let fit = (BAND_BYTES / (elems * esize)).max(1);
        let g = (rows / (128 * MIN_PIECES)).clamp(1, fit);
        let mut loads = Loads::default();
        let (sh, sw) = (x.h, x.w);
        let blocks = chunks(rows, g);
        let mut marks = Vec::new();
        for c in blocks.iter().copied() {
            let load_at = self.out.layout.len();
            let tile = self.out.sbuf(x.dtype, c.parts, (c.g * elems) as u32);
            self.pool_transfer(
                &Xfer {
                    tile,
                    hbm: x.buf,
                    dtype: x.dtype,
                    p0: 0,
                    pn: c.parts,
                    tile_off: 0,
                    hbm_off: x.offset + c.base as i64 * x.row,
                    part_stride: c.g as i64 * x.row,
                    dims: vec![(c.g, elems as i64, x.row), (hn, wn as i64, sh), (wn, 1, sw)],
                },
                true,
                span,
            );
            let work_at = self.out.layout.len();
            let out = self.out.sbuf(dest.dtype, c.parts, c.g as u32);
            let src = tile_ap(
                x.dtype,
                0,
                c.parts,
                0,
                &[(c.g, elems as i64), (elems, 1)],
                true,
            );
            let out_ap = tile_ap(dest.dtype, 0, c.parts, 0, &[(c.g, 1)], false);
            let engine = loads.pick((c.g * elems) as f64, 1.0);
            let op = match pool.kind {
                PoolKind::Max => Op::TensorReduce {
                    op: ReduceOp::Max,
                    out: out_ap,
                    src,
                },
                PoolKind::Avg => Op::TensorReduceScalar {
                    op: ReduceOp::Add,
                    out: out_ap,
                    src,
                    op0: AluOp::Add,
                    s0: ScalarArg::imm(0.0),
                    op1: AluOp::Div,
                    s1: ScalarArg::imm(elems as f32),
                },
            };
            self.out.push(op, engine, &[out, tile], span);
            self.pool_transfer(
                &Xfer {
                    tile: out,
                    hbm: dest.buf,
                    dtype: dest.dtype,
                    p0: 0,
                    pn: c.parts,
                    tile_off: 0,
                    hbm_off: dest.offset + c.base as i64 * dest.row,
                    part_stride: c.g as i64 * dest.row,
                    dims: vec![(c.g, 1, dest.row)],
                },
                false,
                span,
            );
            marks.push((load_at, work_at));
        }
        // Every load first when the whole input fits SBUF at once (a store holds its DMA
        // queue until its data is ready, which would delay the loads queued behind it).
        let total = blocks.iter().map(|c| c.g * elems * esize).sum::<u64>();
        let ahead = if total <= 4 * BAND_BYTES {
            blocks.len()
        } else {
            2
        };
        self.pool_pipeline(&marks, ahead);
    }

    /// Reorders the instructions of a pool's pieces so that each piece's loads (from its
    /// first mark to its second) come `ahead` pieces before its work and stores (from its
    /// second mark to the next piece's first), keeping every piece's own order.
    pub(super) fn pool_pipeline(&mut self, marks: &[(usize, usize)], ahead: usize) {
        let Some(&(start, _)) = marks.first() else {
            return;
        };
        let end = self.out.layout.len();
        let tail: Vec<_> = self.out.layout[start..].to_vec();
        let at = |i: usize| i - start;
        let mut loads = Vec::new();
        let mut works = Vec::new();
        for (i, &(l, w)) in marks.iter().enumerate() {
            let next = marks.get(i + 1).map_or(end, |m| m.0);
            loads.push(tail[at(l)..at(w)].to_vec());
            works.push(tail[at(w)..at(next)].to_vec());
        }
        let mut order = Vec::with_capacity(tail.len());
        let n = marks.len();
        for i in 0..n + ahead {
            if i < n {
                order.extend_from_slice(&loads[i]);
            }
            if i >= ahead && i - ahead < n {
                order.extend_from_slice(&works[i - ahead]);
            }
        }
        self.out.layout.truncate(start);
        self.out.layout.extend(order);
    }

    /// A pool with windows smaller than the input: bands of output rows per block.
    #[allow(clippy::too_many_arguments)]
    fn windowed_pool(
        &mut self,
        pool: &Pool,
        x: &Rows,
        dest: &Rows,
        rows: u64,
        h: &Axis,
        w: &Axis,
        span: Span,
    ) -> Result<(), String> {
        let esize = x.dtype.size() as u64;
        let wp = w.padded();
        let row_bytes = h.padded() * wp * esize;
        // Rows per partition: several when a whole padded input is small.
        let g = if row_bytes * 2 <= BAND_BYTES {
            (rows / (128 * MIN_PIECES)).clamp(1, BAND_BYTES / row_bytes)
        } else {
            1
        };
        let blocks = chunks(rows, g);
        // Output rows per band: as many as fit the band budget, and enough bands for
        // `MIN_PIECES` pieces in all.
        let in_rows = |b: u64| (b - 1) * h.s + h.extent();
        let fit = (1..=h.out)
            .take_while(|&b| in_rows(b) * wp * esize * g <= BAND_BYTES.max(in_rows(1) * wp * esize))
            .last()
            .ok_or_else(|| {
                format!(
                    "one output row of the pool needs {} bytes per partition, over the {} a band may use",
                    in_rows(1) * wp * esize,
                    BAND_BYTES
                )
            })?;
        let want_bands = MIN_PIECES.div_ceil(blocks.len() as u64).max(1);
        let per_band = fit.min(h.out.div_ceil(want_bands)).max(1);
        let fill = match pool.kind {
            PoolKind::Max => f32::NEG_INFINITY,
            PoolKind::Avg => 0.0,
        };
        let mut loads = Loads::default();
        // The divisors, when they differ between positions: one tile for the kernel.
        let divisor = if pool.kind == PoolKind::Avg {
            let parts = blocks.iter().map(|c| c.parts).max().unwrap_or(1);
            self.pool_divisors(h, w, parts, &mut loads, span)
        } else {
            Divisor::Uniform(1)
        };
        let mut marks = Vec::new();
        for c in &blocks {
            let mut o0 = 0;
            while o0 < h.out {
                let load_at = self.out.layout.len();
                let o1 = (o0 + per_band).min(h.out);
                let ob = o1 - o0;
                let t0 = o0 * h.s; // first padded row of the band
                let hb = in_rows(ob);
                let band = c.g * hb * wp;
                let tile = self.out.sbuf(x.dtype, c.parts, band as u32);
                // The border: padding columns, and padding rows above and below the input.
                let mut sets: Vec<(u64, Vec<(u64, i64)>)> = Vec::new();
                if w.lo > 0 {
                    sets.push((0, vec![(c.g, (hb * wp) as i64), (hb, wp as i64), (w.lo, 1)]));
                }
                if w.hi > 0 {
                    sets.push((
                        w.lo + w.n,
                        vec![(c.g, (hb * wp) as i64), (hb, wp as i64), (w.hi, 1)],
                    ));
                }
                let top = h.lo.saturating_sub(t0).min(hb);
                if top > 0 {
                    sets.push((0, vec![(c.g, (hb * wp) as i64), (top * wp, 1)]));
                }
                let below = (h.lo + h.n).max(t0);
                if below < t0 + hb {
                    let first = below - t0;
                    sets.push((
                        first * wp,
                        vec![(c.g, (hb * wp) as i64), ((hb - first) * wp, 1)],
                    ));
                }
                let set_elems: u64 = sets
                    .iter()
                    .map(|(_, d)| d.iter().map(|x| x.0).product::<u64>())
                    .sum();
                // The band's work, for the engine choice.
                let outs = (c.g * ob * w.out) as f64;
                let (elems, insts) = match pool.kind {
                    PoolKind::Max => {
                        let mut e = 0.0;
                        let mut n = 0.0;
                        if w.k > 1 && h.k > 1 {
                            e += (c.g * hb * w.out * w.k) as f64 + outs * h.k as f64;
                            n += 2.0;
                        } else {
                            e += outs * (w.k * h.k) as f64;
                            n += 1.0;
                        }
                        (e, n)
                    }
                    PoolKind::Avg => {
                        let taps = (h.k * w.k) as f64;
                        (outs * 2.0 * (taps - 1.0) + outs, taps)
                    }
                };
                let engine = loads.pick(elems + set_elems as f64, insts + sets.len() as f64);
                for (off, dims) in &sets {
                    let ap = tile_ap(x.dtype, 0, c.parts, *off, dims, false);
                    self.out.push(
                        Op::Memset {
                            out: ap,
                            value: isa::Imm::new(fill),
                        },
                        engine,
                        &[tile],
                        span,
                    );
                }
                // The band's input rows inside the input.
                let r0 = t0.max(h.lo) - h.lo;
                let r1 = (t0 + hb).min(h.lo + h.n).saturating_sub(h.lo);
                if r1 > r0 {
                    self.pool_transfer(
                        &Xfer {
                            tile,
                            hbm: x.buf,
                            dtype: x.dtype,
                            p0: 0,
                            pn: c.parts,
                            tile_off: (r0 + h.lo - t0) * wp + w.lo,
                            hbm_off: x.offset + c.base as i64 * x.row + r0 as i64 * x.h,
                            part_stride: c.g as i64 * x.row,
                            dims: vec![
                                (c.g, (hb * wp) as i64, x.row),
                                (r1 - r0, wp as i64, x.h),
                                (w.n, 1, x.w),
                            ],
                        },
                        true,
                        span,
                    );
                }
                let work_at = self.out.layout.len();
                marks.push((load_at, work_at));
                let out = self
                    .out
                    .sbuf(dest.dtype, c.parts, (c.g * ob * w.out) as u32);
                let gs = (hb * wp) as i64;
                // With one row per partition, GpSimd takes a fifth of every band's output
                // rows (its cost per element is four times Vector's), so both engines work
                // on every band; otherwise the band's engine does all of it.
                let og = if c.g == 1 && ob >= 5 { ob / 5 } else { 0 };
                let split = if og > 0 {
                    vec![(0, ob - og, Engine::Vector), (ob - og, ob, Engine::GpSimd)]
                } else {
                    vec![(0, ob, engine)]
                };
                for (a, b, engine) in split {
                    let nb = b - a;
                    let hbs = in_rows(nb);
                    let tin = a * h.s * wp;
                    let out_ap = tile_ap(
                        dest.dtype,
                        0,
                        c.parts,
                        a * w.out,
                        &[(c.g * nb * w.out, 1)],
                        false,
                    );
                    match pool.kind {
                        PoolKind::Max => {
                            let (sh, sw) = ((h.s * wp) as i64, w.s as i64);
                            if w.k > 1 && h.k > 1 {
                                let tmp =
                                    self.out.sbuf(x.dtype, c.parts, (c.g * hbs * w.out) as u32);
                                let src = tile_ap(
                                    x.dtype,
                                    0,
                                    c.parts,
                                    tin,
                                    &[(c.g, gs), (hbs, wp as i64), (w.out, sw), (w.k, w.d as i64)],
                                    true,
                                );
                                let tmp_ap = tile_ap(
                                    x.dtype,
                                    0,
                                    c.parts,
                                    0,
                                    &[(c.g * hbs * w.out, 1)],
                                    false,
                                );
                                self.out.push(
                                    Op::TensorReduce {
                                        op: ReduceOp::Max,
                                        out: tmp_ap,
                                        src,
                                    },
                                    engine,
                                    &[tmp, tile],
                                    span,
                                );
                                let ow = w.out as i64;
                                let src = tile_ap(
                                    x.dtype,
                                    0,
                                    c.parts,
                                    0,
                                    &[
                                        (c.g, hbs as i64 * ow),
                                        (nb, h.s as i64 * ow),
                                        (w.out, 1),
                                        (h.k, h.d as i64 * ow),
                                    ],
                                    true,
                                );
                                self.out.push(
                                    Op::TensorReduce {
                                        op: ReduceOp::Max,
                                        out: out_ap,
                                        src,
                                    },
                                    engine,
                                    &[out, tmp],
                                    span,
                                );
                            } else if w.k > 1 || h.k > 1 {
                                // One reduction over the window's only long axis.
                                let (k, step) = if w.k > 1 {
                                    (w.k, w.d as i64)
                                } else {
                                    (h.k, (h.d * wp) as i64)
                                };
                                let src = tile_ap(
                                    x.dtype,
                                    0,
                                    c.parts,
                                    tin,
                                    &[(c.g, gs), (nb, sh), (w.out, sw), (k, step)],
                                    true,
                                );
                                self.out.push(
                                    Op::TensorReduce {
                                        op: ReduceOp::Max,
                                        out: out_ap,
                                        src,
                                    },
                                    engine,
                                    &[out, tile],
                                    span,
                                );
                            } else {
                                let src = tile_ap(
                                    x.dtype,
                                    0,
                                    c.parts,
                                    tin,
                                    &[(c.g, gs), (nb, sh), (w.out, sw)],
                                    false,
                                );
                                self.out.push(
                                    Op::TensorCopy { out: out_ap, src },
                                    engine,
                                    &[out, tile],
                                    span,
                                );
                            }
                        }
                        PoolKind::Avg => {
                            let acc = self
                                .out
                                .sbuf(Dtype::F32, c.parts, (c.g * nb * w.out) as u32);
                            let acc_ap =
                                tile_ap(Dtype::F32, 0, c.parts, 0, &[(c.g * nb * w.out, 1)], false);
                            let tap = |i: u64, j: u64| {
                                tile_ap(
                                    x.dtype,
                                    0,
                                    c.parts,
                                    tin + i * h.d * wp + j * w.d,
                                    &[(c.g, gs), (nb, (h.s * wp) as i64), (w.out, w.s as i64)],
                                    false,
                                )
                            };
                            self.out.push(
                                Op::Activate {
                                    out: acc_ap.clone(),
                                    src: tap(0, 0),
                                    func: ActFunc::Identity,
                                    scale: ScalarArg::imm(1.0),
                                    bias: ScalarArg::imm(0.0),
                                    accum: None,
                                },
                                Engine::Scalar,
                                &[acc, tile],
                                span,
                            );
                            for i in 0..h.k {
                                for j in 0..w.k {
                                    if i == 0 && j == 0 {
                                        continue;
                                    }
                                    self.out.push(
                                        Op::TensorTensor {
                                            op: AluOp::Add,
                                            out: acc_ap.clone(),
                                            a: acc_ap.clone(),
                                            b: tap(i, j),
                                        },
                                        engine,
                                        &[acc, acc, tile],
                                        span,
                                    );
                                }
                            }
                            match divisor {
                                Divisor::Uniform(n) => self.out.push(
                                    Op::TensorScalar {
                                        out: out_ap,
                                        src: acc_ap,
                                        op0: AluOp::Div,
                                        s0: ScalarArg::imm(n as f32),
                                        op1: AluOp::Bypass,
                                        s1: ScalarArg::imm(0.0),
                                    },
                                    engine,
                                    &[out, acc],
                                    span,
                                ),
                                Divisor::Tile(d) => {
                                    let d_ap = tile_ap(
                                        Dtype::F32,
                                        0,
                                        c.parts,
                                        (o0 + a) * w.out,
                                        &[(c.g, 0), (nb * w.out, 1)],
                                        false,
                                    );
                                    self.out.push(
                                        Op::TensorTensor {
                                            op: AluOp::Div,
                                            out: out_ap,
                                            a: acc_ap,
                                            b: d_ap,
                                        },
                                        engine,
                                        &[out, acc, d],
                                        span,
                                    )
                                }
                            };
                        }
                    }
                }
                self.pool_transfer(
                    &Xfer {
                        tile: out,
                        hbm: dest.buf,
                        dtype: dest.dtype,
                        p0: 0,
                        pn: c.parts,
                        tile_off: 0,
                        hbm_off: dest.offset + c.base as i64 * dest.row + o0 as i64 * dest.h,
                        part_stride: c.g as i64 * dest.row,
                        dims: vec![
                            (c.g, (ob * w.out) as i64, dest.row),
                            (ob, w.out as i64, dest.h),
                            (w.out, 1, dest.w),
                        ],
                    },
                    false,
                    span,
                );
                o0 = o1;
            }
        }
        self.pool_pipeline(&marks, 2);
        Ok(())
    }

    /// The average's divisors: one number when every output position has the same, else a
    /// `[parts, OH x OW]` f32 tile of them, memset rectangle by rectangle (runs of equal
    /// row divisors times runs of equal column divisors).
    fn pool_divisors(
        &mut self,
        h: &Axis,
        w: &Axis,
        parts: u32,
        loads: &mut Loads,
        span: Span,
    ) -> Divisor {
        let runs = |a: &Axis| {
            let mut r: Vec<(u64, u64, u64)> = Vec::new(); // (start, len, divisor)
            for (o, win) in a.windows.iter().enumerate() {
                match r.last_mut() {
                    Some(last) if last.2 == win.divisor => last.1 += 1,
                    _ => r.push((o as u64, 1, win.divisor)),
                }
            }
            r
        };
        let (rh, rw) = (runs(h), runs(w));
        if rh.len() == 1 && rw.len() == 1 {
            return Divisor::Uniform(rh[0].2 * rw[0].2);
        }
        let tile = self.out.sbuf(Dtype::F32, parts, (h.out * w.out) as u32);
        for &(h0, hn, hd) in &rh {
            for &(w0, wn, wd) in &rw {
                let engine = loads.pick((hn * wn) as f64, 1.0);
                let ap = tile_ap(
                    Dtype::F32,
                    0,
                    parts,
                    h0 * w.out + w0,
                    &[(hn, w.out as i64), (wn, 1)],
                    false,
                );
                self.out.push(
                    Op::Memset {
                        out: ap,
                        value: isa::Imm::new((hd * wd) as f32),
                    },
                    engine,
                    &[tile],
                    span,
                );
            }
        }
        Divisor::Tile(tile)
    }
}

/// How the average divides.
#[derive(Clone, Copy)]
enum Divisor {
    Uniform(u64),
    Tile(Buf),
}
