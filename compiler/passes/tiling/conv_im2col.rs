//! Convolutions with few input channels (the 7x7 stem of ResNet-50, C = 3) by a window
//! tile built in SBUF: the reduced index `k = (tap row, tap column, channel)` on
//! partitions, output positions on the free axis, the window never written to HBM.
//!
//! Implicit GEMM (`tiling/conv.rs`) puts channels on partitions, so with C = 3 a matmul
//! uses 3 of 128 PE rows and a 7x7 window costs 49 matmuls per PSUM tile. The window
//! matrix through HBM (the `conv` pass's rewrite) copies each tap's strided slice with one
//! DMA run per element. Here, per image and band of output rows:
//!
//! - The band's input rows (all channels, padded) are loaded into one SBUF partition
//!   (*staging*), whole rows, so every DMA run is a padded row; the padding is zeros
//!   written by memsets (the column borders once per staging buffer, rows outside the
//!   image when a band reaches them).
//! - Each tap row `i` has a quarter of 32 partitions of the window tile (docs/machine.md:
//!   a tile of up to 32 partitions starts at 0, 32, 64 or 96), holding `(j, c)` for every
//!   tap column `j` and channel `c` (so `KW x C <= 32`). One SBUF-to-SBUF DMA fills a
//!   quarter from the staging partition: partition `(j, c)`, window row `r`, element `t`
//!   is the padded input `x[c, (oh0 + r) sh + i dh, t + j dw]`, runs of whole row pieces
//!   of `(OW - 1) sw + 1` elements; the matmul reads every `sw`-th. The partitions of a
//!   quarter beyond `KW x C` are zeros (memset once per window buffer) and so are the
//!   weights there: they add `+0` products, which change no sum (a sum that starts at
//!   `+0` is never `-0`, and `s + 0 = s` for every other `s`, infinities and NaN included).
//! - Tap rows go four to a matmul (`K = 32 x (rows - 1) + KW x C`). When four tap rows
//!   are a whole number of output rows apart (`4 dh` a multiple of `sh`), the later groups
//!   read the first group's quarters shifted by that many window rows (the stem: tap
//!   rows 4-6 are rows 0-2 two output rows down), so only four quarters are loaded.
//! - Per PSUM tile (whole output rows, up to 512 positions) and block of up to 128
//!   output channels, one matmul per group of tap rows, accumulated in PSUM, then the
//!   matmul group's epilogue (bias, activation, cast) as every matmul has it.
//!
//! Exactness: within a matmul the products are added in partition order, tap row, tap
//! column, channel, the zeros between quarters adding nothing; the groups follow in tap
//! row order. That is `k = tap x C + c`, the language's order (docs/language.md), so the
//! result has the reference's bits under every policy.
//!
//! Costs (docs/machine.md), the reason for the choice ([`plan`]): the DMA moves each input
//! row once into staging (plus the rows bands share), the window `(quarters x (KW x C))`
//! partitions of row pieces about twice the window's own elements (each run holds the
//! `sw - 1` columns between those read), the weights one 64-byte run per element, and the
//! output once; the Tensor engine one matmul per group of four tap rows per tile.

use super::block::{AxisUse, Tile};
use super::conv_deinterleave::ScratchPlan;
use super::pool::{tile_ap, Xfer};
use super::Tiler;
use crate::ir::{ConvAttrs, Inst, Value};
use isa::{DmaAp, Dtype, Engine, Op};

/// Bytes per partition a staging buffer may take (one band's padded input rows); the
/// buffers in rotation take at most `2 x 56 + 3 x 12 = 148` KiB of SBUF's 192.
const STAGE_BUDGET: u64 = 56 * 1024;
/// Bytes per partition a window buffer may take.
const WINDOW_BUDGET: u64 = 12 * 1024;
/// Staging and window buffers in rotation, so that the loads of the next bands (each a
/// DMA latency and then its bytes) run while this one computes.
const STAGES: usize = 2;
const WINDOWS: usize = 3;
/// Pieces of window rows each quarter's DMA is cut into.
const PIECES: u64 = 4;
/// Most positions of one PSUM tile (a bank of f32).
const BANK_COLS: u64 = 512;

/// How a convolution with few input channels is computed: from window tiles built in SBUF
/// (this module) or read from a deinterleaved copy in HBM (`conv_deinterleave.rs`),
/// whichever the estimate favours.
#[derive(Clone, Debug)]
pub struct WindowPlan {
    /// The estimated cycles.
    pub cycles: f64,
    kind: Kind,
}

#[derive(Clone, Debug)]
enum Kind {
    Staged(StagedPlan),
    Deinterleaved(ScratchPlan),
}

/// The window tile in SBUF's plan of a convolution and its estimate, and that of the
/// deinterleaved copy in HBM: the cheaper of those that apply.
pub fn plan(xs: &[u64], ws: &[u64], a: &ConvAttrs, dtype: Dtype) -> Option<WindowPlan> {
    let staged = staged_plan(xs, ws, a, dtype).map(|p| WindowPlan {
        cycles: p.cycles,
        kind: Kind::Staged(p),
    });
    let scratch = super::conv_deinterleave::plan(xs, ws, a, dtype).map(|p| WindowPlan {
        cycles: p.cycles,
        kind: Kind::Deinterleaved(p),
    });
    // The staged estimate counts the DMA's bytes at the full bandwidth, but its runs wait
    // for each band's staging load: measured (release build, `--random 1 --report`,
    // 2026-12-08) they took 1.5 to 2.7 times their estimate (the stem 390,647 cycles
    // against 215,215; four other shapes of 1 to 4 channels, kernels 3 to 7, stride 2:
    // 81,931 / 32,460, 39,414 / 11,196, 54,519 / 14,992, 52,243 / 11,952), while the
    // deinterleaved copy took 1.05 to 1.5 times its own (186,212 / 177,442 for the stem).
    // So the staged plan's work (not its latencies, which small convolutions are made of)
    // counts twice in the comparison.
    match (staged, scratch) {
        (Some(a), Some(b)) => {
            let staged = match &a.kind {
                Kind::Staged(p) => 2.0 * p.work + (p.cycles - p.work),
                Kind::Deinterleaved(_) => a.cycles,
            };
            Some(if b.cycles < staged { b } else { a })
        }
        (a, b) => a.or(b),
    }
}

/// How a convolution is computed from a window tile in SBUF (see the module comment).
#[derive(Clone, Debug)]
struct StagedPlan {
    /// The shape, as `[N, C, H, W, O, KH, KW, OH, OW, SH, SW, PH, PW, DH, DW]` (input,
    /// weights, output positions, stride, padding, dilation; `WindowPlan::n` and the
    /// other accessors name them).
    dims: [u64; 15],
    /// Output rows per band and per PSUM tile.
    band: u64,
    tile_rows: u64,
    /// Whether later groups of tap rows read the first group's quarters, and the window
    /// rows each group is shifted by then.
    reuse: bool,
    /// The estimated cycles, and those of the work alone (no latencies).
    cycles: f64,
    work: f64,
}

impl StagedPlan {
    fn n(&self) -> u64 {
        self.dims[0]
    }
    fn c(&self) -> u64 {
        self.dims[1]
    }
    fn h(&self) -> u64 {
        self.dims[2]
    }
    fn w(&self) -> u64 {
        self.dims[3]
    }
    fn o(&self) -> u64 {
        self.dims[4]
    }
    fn kh(&self) -> u64 {
        self.dims[5]
    }
    fn kw(&self) -> u64 {
        self.dims[6]
    }
    fn oh(&self) -> u64 {
        self.dims[7]
    }
    fn ow(&self) -> u64 {
        self.dims[8]
    }
    fn sh(&self) -> u64 {
        self.dims[9]
    }
    fn sw(&self) -> u64 {
        self.dims[10]
    }
    fn ph(&self) -> u64 {
        self.dims[11]
    }
    fn pw(&self) -> u64 {
        self.dims[12]
    }
    fn dh(&self) -> u64 {
        self.dims[13]
    }
    fn dw(&self) -> u64 {
        self.dims[14]
    }
    fn wp(&self) -> u64 {
        self.w() + 2 * self.pw()
    }
    /// Elements of one window row of a partition: every column the tap reads, and those
    /// between.
    fn t(&self) -> u64 {
        (self.ow() - 1) * self.sw() + 1
    }
    fn groups(&self) -> u64 {
        self.kh().div_ceil(4)
    }
    /// Tap rows of group `g`.
    fn rows_of(&self, g: u64) -> u64 {
        4.min(self.kh() - 4 * g)
    }
    /// Partitions of group `g`'s matmuls.
    fn k_of(&self, g: u64) -> u64 {
        32 * (self.rows_of(g) - 1) + self.kw() * self.c()
    }
    /// Window rows group `g` is shifted by when it reads the first group's quarters.
    fn shift(&self, g: u64) -> u64 {
        if self.reuse {
            4 * g * self.dh() / self.sh()
        } else {
            0
        }
    }
    /// Window rows of a band's window tile (the band and the later groups' shifts).
    fn window_rows(&self) -> u64 {
        self.band + self.shift(self.groups() - 1)
    }
    /// Padded input rows a band's staging holds.
    fn stage_rows(&self) -> u64 {
        let last_tap = if self.reuse {
            3.min(self.kh() - 1)
        } else {
            self.kh() - 1
        };
        (self.window_rows() - 1) * self.sh() + last_tap * self.dh() + 1
    }
    /// Window tiles per band: one shared by every group, or one per group.
    fn window_tiles(&self) -> u64 {
        if self.reuse {
            1
        } else {
            self.groups()
        }
    }
}

/// The window-tile plan of a convolution with input `xs` `[N, C, H, W]` and weights `ws`
/// `[O, C, KH, KW]` of `dtype`, when it applies (2-D, one group, `KW x C <= 32`,
/// `C x KH x KW <= 512`, output rows within a PSUM bank, the buffers within their
/// budgets), with its estimated cycles.
fn staged_plan(xs: &[u64], ws: &[u64], a: &ConvAttrs, dtype: Dtype) -> Option<StagedPlan> {
    if xs.len() != 4 || a.groups != 1 || !dtype.is_float() {
        return None;
    }
    let (n, c, h, w, o, kh, kw) = (xs[0], xs[1], xs[2], xs[3], ws[0], ws[2], ws[3]);
    if kw * c > 32 || c * kh * kw > 512 {
        return None;
    }
    let oh = a.out_len(0, h, kh)?;
    let ow = a.out_len(1, w, kw)?;
    if ow > BANK_COLS || oh == 0 || ow == 0 {
        return None;
    }
    let (sh, sw, dh, dw) = (a.stride[0], a.stride[1], a.dilation[0], a.dilation[1]);
    let reuse = kh > 4 && (4 * dh) % sh == 0;
    let es = dtype.size() as u64;
    let tile_rows = (BANK_COLS / ow).min(oh);
    let (ph, pw) = (a.padding[0], a.padding[1]);
    let mut p = StagedPlan {
        dims: [n, c, h, w, o, kh, kw, oh, ow, sh, sw, ph, pw, dh, dw],
        band: tile_rows,
        tile_rows,
        reuse,
        cycles: 0.0,
        work: 0.0,
    };
    // The band: as many PSUM tiles of rows as the buffers allow.
    let fits = |p: &StagedPlan| {
        p.c() * p.stage_rows() * p.wp() * es <= STAGE_BUDGET
            && p.window_rows() * p.t() * es <= WINDOW_BUDGET
    };
    if !fits(&p) {
        return None;
    }
    while p.band + tile_rows <= oh {
        let mut q = p.clone();
        q.band += tile_rows;
        if !fits(&q) {
            break;
        }
        p = q;
    }
    p.work = estimate(&p, es);
    p.cycles = p.work + 4000.0;
    Some(p)
}

/// The estimated cycles of `p`'s work by docs/machine.md's costs: the larger of the DMA's
/// bytes at 256 a cycle (each run at least 64), the Tensor engine's matmuls and one
/// epilogue instruction a tile (a load's and a store's latency come on top).
fn estimate(p: &StagedPlan, es: u64) -> f64 {
    let bands = p.oh().div_ceil(p.band) as f64;
    let run = |len: u64| (len * es).max(64) as f64;
    let stage = p.n() as f64 * bands * (p.c() * p.stage_rows()) as f64 * run(p.w());
    let quarters: u64 = (0..p.window_tiles()).map(|g| p.rows_of(g)).sum();
    let window =
        p.n() as f64 * bands * (quarters * p.kw() * p.c() * p.window_rows()) as f64 * run(p.t());
    let weights = (p.o() * p.c() * p.kh() * p.kw() * 64) as f64;
    let out = (p.n() * p.o() * p.oh() * p.ow() * 2) as f64;
    let dma = (stage + window + weights + out) / 256.0;
    let tiles = (p.n() * p.oh().div_ceil(p.tile_rows) * p.o().div_ceil(128)) as f64;
    let cols = (p.tile_rows * p.ow()) as f64;
    let tensor = tiles * p.groups() as f64 * (cols / 2.0).max(32.0);
    let epilogue = tiles * (64.0 + cols);
    dma.max(tensor).max(epilogue)
}

impl Tiler<'_> {
    /// Computes the convolution whose matmul is `matmul` (the root of group `grp`) from
    /// its input `x` and weights `w` by window tiles in SBUF (see the module comment).
    pub(super) fn lower_window(
        &mut self,
        grp: &crate::passes::fusion::Group,
        matmul: Inst,
        xw: (Value, Value),
        p: &WindowPlan,
    ) -> Result<(), String> {
        match &p.kind {
            Kind::Staged(p) => self.lower_staged(grp, matmul, xw, p),
            Kind::Deinterleaved(p) => self.lower_deinterleaved(grp, matmul, xw, p),
        }
    }

    /// The window tile built in SBUF (see the module comment).
    fn lower_staged(
        &mut self,
        grp: &crate::passes::fusion::Group,
        matmul: Inst,
        (x, w): (Value, Value),
        p: &StagedPlan,
    ) -> Result<(), String> {
        let span = self.func.spans[matmul];
        let xv = self.home_of(x)?;
        let wv = self.home_of(w)?;
        let dt = xv.dtype;
        let (xs, ws) = (xv.strides.clone(), wv.strides.clone());
        let (wp, t) = (p.wp(), p.t());
        let kwc = (p.kw() * p.c()) as u32;
        self.epilogue_tail.clear();
        self.reuse_space = Some(grp.space.clone());
        // The stationary weights: per group of tap rows a tile `[K, O]`, zero where no tap
        // is (between quarters), each tap row's `(j, c)` partitions loaded by one DMA.
        let mut wt = Vec::new();
        for g in 0..p.groups() {
            let k = p.k_of(g) as u32;
            let tile = self.sbuf_tile(dt, k, p.o() as u32);
            if p.rows_of(g) > 1 && kwc < 32 {
                self.memset_zero(tile, k, p.o(), Engine::Vector, span);
            }
            for q in 0..p.rows_of(g) {
                let i = 4 * g + q;
                let dst = DmaAp::Tile(tile_ap(dt, 32 * q as u32, kwc, 0, &[(p.o(), 1)], false));
                let off = wv.offset + i as i64 * ws[2];
                let src = DmaAp::Hbm(super::view::hbm_ap(
                    dt,
                    off,
                    &[(p.kw(), ws[3]), (p.c(), ws[1]), (p.o(), ws[0])],
                ));
                self.out.push(
                    Op::Dma { dst, src },
                    Engine::Dma(0),
                    &[tile.buf, wv.buf],
                    span,
                );
            }
            wt.push(tile);
        }
        // Staging and window buffers in rotation; the zeros they need everywhere (the
        // staging's column borders, the window's partitions between quarters) are written
        // once.
        let srows = p.stage_rows();
        let mut stages = Vec::new();
        let mut windows = Vec::new();
        for _ in 0..STAGES {
            let st = self.sbuf_tile(dt, 1, (p.c() * srows * wp) as u32);
            if p.pw() > 0 {
                for left in [0, p.pw() + p.w()] {
                    let ap = tile_ap(
                        dt,
                        0,
                        1,
                        left,
                        &[(p.c() * srows, wp as i64), (p.pw(), 1)],
                        false,
                    );
                    self.push_memset(ap, st, Engine::Vector, span);
                }
            }
            stages.push(st);
        }
        for _ in 0..WINDOWS {
            let mut tiles = Vec::new();
            for g in 0..p.window_tiles() {
                let k = p.k_of(g) as u32;
                let cols = p.window_rows() * t;
                let tile = self.sbuf_tile(dt, k, cols as u32);
                if p.rows_of(g) > 1 && kwc < 32 {
                    self.memset_zero(tile, k, cols, Engine::Vector, span);
                }
                tiles.push(tile);
            }
            windows.push(tiles);
        }
        let mut band_index = 0;
        let ochunks: Vec<(u64, u64)> = (0..p.o().div_ceil(128))
            .map(|b| (b * 128, 128.min(p.o() - b * 128)))
            .collect();
        for n in 0..p.n() {
            let mut oh0 = 0;
            while oh0 < p.oh() {
                let band = p.band.min(p.oh() - oh0);
                let st = stages[band_index % STAGES];
                let win = windows[band_index % WINDOWS].clone();
                band_index += 1;
                // Staging: padded rows `r0 ..` of every channel; the image's rows by DMA,
                // the others zero.
                let r0 = oh0 * p.sh();
                let (a, b) = (r0.max(p.ph()), (r0 + srows).min(p.ph() + p.h()));
                let zero_rows = |from: u64, to: u64| (from < to).then_some((from, to));
                for (z0, z1) in [
                    zero_rows(r0, a.min(r0 + srows)),
                    zero_rows(b.max(r0), r0 + srows),
                ]
                .into_iter()
                .flatten()
                {
                    let ap = tile_ap(
                        dt,
                        0,
                        1,
                        (z0 - r0) * wp,
                        &[(p.c(), (srows * wp) as i64), ((z1 - z0) * wp, 1)],
                        false,
                    );
                    self.push_memset(ap, st, Engine::Vector, span);
                }
                if a < b {
                    self.pool_transfer(
                        &Xfer {
                            tile: st.buf,
                            hbm: xv.buf,
                            dtype: dt,
                            p0: 0,
                            pn: 1,
                            tile_off: (a - r0) * wp + p.pw(),
                            hbm_off: xv.offset + n as i64 * xs[0] + (a - p.ph()) as i64 * xs[2],
                            part_stride: 0,
                            dims: vec![
                                (p.c(), (srows * wp) as i64, xs[1]),
                                (b - a, wp as i64, xs[2]),
                                (p.w(), 1, xs[3]),
                            ],
                        },
                        true,
                        span,
                    );
                }
                // The window: per quarter from the staging partition, in pieces of window
                // rows so that the band's DMAs spread over the queues (one queue moves 16
                // bytes a cycle of the 256 all move together).
                let rows = (band + p.shift(p.groups() - 1)).min(p.window_rows());
                let pieces = rows.min(PIECES);
                for (g, tile) in win.iter().enumerate() {
                    for q in 0..p.rows_of(g as u64) {
                        let i = 4 * g as u64 + q;
                        let mut j0 = 0;
                        for piece in 0..pieces {
                            let jn = (rows - j0) / (pieces - piece);
                            let src = tile_ap(
                                dt,
                                0,
                                1,
                                (i * p.dh() + j0 * p.sh()) * wp,
                                &[
                                    (p.kw(), p.dw() as i64),
                                    (p.c(), (srows * wp) as i64),
                                    (jn, (p.sh() * wp) as i64),
                                    (t, 1),
                                ],
                                false,
                            );
                            let dims = [(jn, t as i64), (t, 1)];
                            let dst = tile_ap(dt, 32 * q as u32, kwc, j0 * t, &dims, false);
                            self.out.push(
                                Op::Dma {
                                    dst: DmaAp::Tile(dst),
                                    src: DmaAp::Tile(src),
                                },
                                Engine::Dma(0),
                                &[tile.buf, st.buf],
                                span,
                            );
                            j0 += jn;
                        }
                    }
                }
                // The matmuls and epilogue of each PSUM tile.
                let mut r = 0;
                while r < band {
                    let tr = p.tile_rows.min(band - r);
                    let cols = tr * p.ow();
                    let mm: Vec<_> = (0..p.groups())
                        .map(|g| {
                            let k = p.k_of(g) as u32;
                            let (tile, shift) = if p.reuse {
                                (win[0], p.shift(g))
                            } else {
                                (win[g as usize], 0)
                            };
                            let moving = tile_ap(
                                dt,
                                0,
                                k,
                                (r + shift) * t,
                                &[(tr, t as i64), (p.ow(), p.sw() as i64)],
                                false,
                            );
                            (wt[g as usize], tile, k, moving)
                        })
                        .collect();
                    let at = ((oh0 + r) * p.ow(), cols);
                    self.window_tiles(grp, matmul, (n, n + 1 == p.n()), &ochunks, &mm, at)?;
                    r += tr;
                }
                oh0 += band;
            }
        }
        self.last_stores = false;
        self.reuse_space = None;
        self.epilogue_tail.clear();
        Ok(())
    }

    /// The PSUM tiles of `cols` positions from `pos0` of image `n`, one per block of output
    /// channels: a matmul per group of tap rows (`(weights, window, K, moving pattern)`),
    /// accumulated in tap-row order, then the matmul group's epilogue (stores split finely
    /// when `last`).
    #[allow(clippy::too_many_arguments)]
    pub(super) fn window_tiles(
        &mut self,
        grp: &crate::passes::fusion::Group,
        matmul: Inst,
        (n, last): (u64, bool),
        ochunks: &[(u64, u64)],
        groups: &[(Tile, Tile, u32, isa::TileAp)],
        (pos0, cols): (u64, u64),
    ) -> Result<(), String> {
        for &(o0, osz) in ochunks {
            let psum = self.psum_tile(Dtype::F32, osz, cols);
            for (g, (weights, tile, k, moving)) in groups.iter().enumerate() {
                self.out.push(
                    Op::Matmul {
                        out: psum.ap(),
                        stationary: weights.slice(0, *k, o0 as u32, osz as u32),
                        moving: moving.clone(),
                        accumulate: g > 0,
                    },
                    Engine::Tensor,
                    &[psum.buf, weights.buf, tile.buf],
                    self.func.spans[matmul],
                );
            }
            self.last_stores = last;
            let at = self.out.layout.len();
            self.epilogue(
                grp,
                matmul,
                psum,
                &[AxisUse::Fixed(n)],
                (o0, osz),
                (pos0, cols),
                false,
            )?;
            self.fuse_tensor_scalars(at);
        }
        Ok(())
    }

    /// Memsets every element of the first `parts` partitions and `cols` columns of `tile`
    /// to zero.
    fn memset_zero(
        &mut self,
        tile: Tile,
        parts: u32,
        cols: u64,
        engine: Engine,
        span: crate::ir::Span,
    ) {
        let ap = tile_ap(tile.dtype, 0, parts, 0, &[(cols, 1)], false);
        self.push_memset(ap, tile, engine, span);
    }

    /// Zeroes the elements `ap` of `tile` on `engine`.
    pub(super) fn push_memset(
        &mut self,
        ap: isa::TileAp,
        tile: Tile,
        engine: Engine,
        span: crate::ir::Span,
    ) {
        self.out.push(
            Op::Memset {
                out: ap,
                value: isa::Imm::new(0.0),
            },
            engine,
            &[tile.buf],
            span,
        );
    }
}
