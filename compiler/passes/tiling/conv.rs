//! Convolutions by implicit GEMM on the PE array: a `conv` of one group (1-D or 2-D) that
//! the `conv` pass rewrote into `w2 @ cols` over its window matrix is computed here
//! straight from its input and weights, the window matrix never built.
//!
//! - Channels go on partitions, in chunks of up to 128. Each image's input is loaded once
//!   into one SBUF tile per channel chunk, `[C, Hp x Wp]`, with its padding as a border
//!   memset to zero around the DMA'd interior.
//! - The weights are loaded once, a block of up to 128 output channels at a time as
//!   contiguous rows `[O, C x taps]`, and transposed on the PE array (eight transposes a
//!   PSUM bank, one copy out) into one stationary tile `[C chunk, O]` per tap.
//! - For each image, each block of up to 128 output channels and each block of output
//!   positions (whole output rows, up to 512 positions, one PSUM bank of f32), one matmul
//!   per window tap and channel chunk accumulates in PSUM: the moving operand is a strided
//!   view of the resident input, `OH` rows of `OW` columns shifted by the tap. The rest of
//!   the matmul's group (bias, relu, residual add, cast) is its epilogue, evaluated on the
//!   PSUM tile as `matmul.rs` does (`Tiler::epilogue`).
//! - The next image's input is loaded while this one's matmuls run.
//!
//! Exactness: the matmuls run taps in row-major order outermost and channels inner, each
//! adding its products in channel order to the PSUM accumulator, which starts from the
//! first product's `0 + p` as a matmul's sum does. That is the order of the window
//! matrix's reduced index `k = tap x C + c`, the language's order (docs/language.md), so
//! the result has the reference's bits under every policy.
//!
//! Which lowering a convolution gets is a cost estimate ([`estimates`], [`plan`]): the
//! larger of the Tensor engine's and the DMA's cycles of each lowering, by
//! docs/machine.md's costs; the window matrix's costs three passes over `taps x` the input
//! in HBM (a copy per tap, its read as the matmul's operand), each run of a strided slice
//! charged 64 bytes, plus a DMA latency per round trip through HBM (the padded copy, the
//! window matrix). Implicit
//! GEMM costs one matmul per tap and channel chunk, which loses where few channels fill
//! few PE rows (the 7x7 stem, C = 3: 49 matmuls with K = 3 per block). It also needs the
//! image's padded input and all the weights to fit SBUF (`INPUT_BUDGET`,
//! `WEIGHT_BUDGET`); otherwise, and for grouped and depthwise convolutions, the window
//! matrix is used.

use super::block::{AxisUse, Tile};
use super::pool::{tile_ap, Xfer};
use super::Tiler;
use crate::ir::{ConvAttrs, Function, Inst, TOp, Value, ValueDef};
use crate::passes::conv::Implicit;
use crate::passes::fusion::{Grouping, Root};
use crate::passes::layout::Layout;
use isa::{Dtype, Engine, Op};

/// Bytes per partition one image's padded input may take (all its channel chunks), so
/// that the next image's loads fit beside it.
const INPUT_BUDGET: u64 = 48 * 1024;
/// Bytes per partition the transposed weights may take (all taps and output channels).
const WEIGHT_BUDGET: u64 = 72 * 1024;
/// A DMA's fixed latency in cycles (docs/machine.md).
const DMA_LATENCY: u64 = 2000;
/// Most positions of one PSUM tile (a bank of f32).
const BANK_COLS: u64 = 512;

/// The shape of one convolution, 1-D as 2-D of height 1.
#[derive(Clone, Copy, Debug)]
pub struct Geom {
    n: u64,
    c: u64,
    h: u64,
    w: u64,
    o: u64,
    kh: u64,
    kw: u64,
    oh: u64,
    ow: u64,
    sh: u64,
    sw: u64,
    ph: u64,
    pw: u64,
    dh: u64,
    dw: u64,
}

impl Geom {
    fn new(xs: &[u64], ws: &[u64], a: &ConvAttrs) -> Option<Geom> {
        let (n, c, o) = (xs[0], xs[1], ws[0]);
        match xs.len() {
            3 => Some(Geom {
                n,
                c,
                h: 1,
                w: xs[2],
                o,
                kh: 1,
                kw: ws[2],
                oh: 1,
                ow: a.out_len(0, xs[2], ws[2])?,
                sh: 1,
                sw: a.stride[0],
                ph: 0,
                pw: a.padding[0],
                dh: 1,
                dw: a.dilation[0],
            }),
            4 => Some(Geom {
                n,
                c,
                h: xs[2],
                w: xs[3],
                o,
                kh: ws[2],
                kw: ws[3],
                oh: a.out_len(0, xs[2], ws[2])?,
                ow: a.out_len(1, xs[3], ws[3])?,
                sh: a.stride[0],
                sw: a.stride[1],
                ph: a.padding[0],
                pw: a.padding[1],
                dh: a.dilation[0],
                dw: a.dilation[1],
            }),
            _ => None,
        }
    }

    fn hp(&self) -> u64 {
        self.h + 2 * self.ph
    }

    fn wp(&self) -> u64 {
        self.w + 2 * self.pw
    }

    fn taps(&self) -> u64 {
        self.kh * self.kw
    }

    /// The blocks of output positions of one PSUM tile: `(oh0, ohs, ow0, ows)`, whole
    /// output rows (as many as fit a bank, balanced) or pieces of one long row.
    fn blocks(&self) -> Vec<(u64, u64, u64, u64)> {
        let mut out = Vec::new();
        if self.ow <= BANK_COLS {
            let most = BANK_COLS / self.ow;
            let count = self.oh.div_ceil(most);
            let rows = self.oh.div_ceil(count);
            let mut r = 0;
            while r < self.oh {
                let n = rows.min(self.oh - r);
                out.push((r, n, 0, self.ow));
                r += n;
            }
        } else {
            for r in 0..self.oh {
                let mut c = 0;
                while c < self.ow {
                    let n = BANK_COLS.min(self.ow - c);
                    out.push((r, 1, c, n));
                    c += n;
                }
            }
        }
        out
    }
}

/// Chunks of up to 128 of `n`: `(start, size)`.
fn chunks128(n: u64) -> Vec<(u64, u64)> {
    (0..n.div_ceil(128))
        .map(|i| (i * 128, 128.min(n - i * 128)))
        .collect()
}

/// Moving columns per cycle of a matmul whose operands are `dtype`.
fn rate(dtype: Dtype) -> f64 {
    match dtype {
        Dtype::F32 => 0.5,
        d if d.is_fp8() => 4.0,
        _ => 2.0,
    }
}

/// A matmul's cycles for `cols` moving columns.
fn matmul_cycles(cols: u64, rate: f64) -> f64 {
    (cols as f64 / rate).max(32.0)
}

/// Bytes a DMA is charged for `runs` contiguous runs of `len` bytes each.
fn run_bytes(runs: u64, len: u64) -> f64 {
    (runs * len.max(64)) as f64
}

/// The estimated cycles (the larger of Tensor and DMA) of implicit GEMM and of the window
/// matrix, for a convolution of `g` with operands of `dtype`.
pub fn estimates(g: &Geom, dtype: Dtype) -> (f64, f64) {
    let es = dtype.size() as u64;
    let r = rate(dtype);
    let taps = g.taps();
    let (cch, och) = (g.c.div_ceil(128), g.o.div_ceil(128));
    let positions = g.oh * g.ow;
    let out_bytes = (g.n * g.o * positions * 2) as f64;
    let w_bytes = (g.o * g.c * taps * es) as f64;
    // Implicit GEMM: one matmul per tap and channel chunk for each PSUM tile; the input
    // once (a padded image is DMA'd row by row), the weights once.
    let per_image: f64 = g.blocks().iter().map(|b| matmul_cycles(b.1 * b.3, r)).sum();
    let tensor_i = (g.n * och) as f64 * (taps * cch) as f64 * per_image
        + (taps * cch * och) as f64 * matmul_cycles(128, r);
    let x_bytes = if g.ph == 0 && g.pw == 0 {
        run_bytes(g.n * g.c, g.h * g.w * es)
    } else {
        run_bytes(g.n * g.c * g.h, g.w * es)
    };
    let implicit = tensor_i.max((x_bytes + w_bytes + out_bytes) / 256.0);
    // The window matrix: K = taps x C in chunks of 128, N in blocks of 512 positions.
    let k = taps * g.c;
    let blocks = positions.div_ceil(BANK_COLS);
    let tensor_c = (g.n * och * k.div_ceil(128)) as f64
        * (0..blocks)
            .map(|b| matmul_cycles(BANK_COLS.min(positions - b * BANK_COLS), r))
            .sum::<f64>();
    let plain = taps == 1 && g.ph == 0 && g.pw == 0 && g.sh == 1 && g.sw == 1;
    let dma_c = if plain {
        // The input is the matmul's operand as it is; the weights are prepared per image.
        run_bytes(g.n * g.c, positions * es) + g.n as f64 * w_bytes + out_bytes
    } else {
        let matrix = (g.n * k * positions * es) as f64;
        // Each tap's slice: one run per output row, or per element when strided.
        let slice_runs = if g.sw == 1 {
            run_bytes(g.n * k * g.oh, g.ow * es)
        } else {
            run_bytes(g.n * k * positions, es)
        };
        let pad = if g.ph > 0 || g.pw > 0 {
            2.0 * (g.n * g.c * g.hp() * g.wp() * es) as f64
        } else {
            0.0
        };
        slice_runs + 2.0 * matrix + pad + w_bytes + out_bytes
    };
    // Each round trip through HBM before the matmul (the padded copy, the window matrix)
    // adds a DMA latency that nothing overlaps.
    let trips = if plain {
        0
    } else {
        1 + u64::from(g.ph > 0 || g.pw > 0)
    };
    let im2col = tensor_c.max(dma_c / 256.0) + (trips * DMA_LATENCY) as f64;
    (implicit, im2col)
}

/// How the tile pass computes one convolution's matmul by implicit GEMM.
#[derive(Clone, Debug)]
pub struct ConvPlan {
    /// The matmul the `conv` pass made.
    pub matmul: Inst,
    pub x: Value,
    pub w: Value,
    geom: Geom,
}

/// The implicit-GEMM plan of a recorded convolution, when it applies and the cost estimate
/// favours it; `None` leaves its matmul to the window matrix.
pub fn plan(
    func: &Function,
    grouping: &Grouping,
    layout: &Layout,
    rec: &Implicit,
) -> Option<ConvPlan> {
    let ValueDef::Inst(mm) = func.values[rec.matmul].def else {
        return None;
    };
    if func.insts[mm].op != TOp::Matmul || rec.attrs.groups != 1 {
        return None;
    }
    let gi = grouping.group_of[mm]?;
    if grouping.groups[gi as usize].root != Root::Matmul(mm) {
        return None;
    }
    if layout.matmul(mm).is_some_and(|p| p.swapped) || layout.transposed[rec.matmul] {
        return None;
    }
    let (xt, wt) = (func.ty(rec.x), func.ty(rec.w));
    let dtype = xt.dtype;
    if wt.dtype != dtype || !dtype.is_float() {
        return None;
    }
    let geom = Geom::new(&xt.shape, &wt.shape, &rec.attrs)?;
    let out = &func.ty(rec.matmul).shape;
    if out != &[geom.n, geom.o, geom.oh * geom.ow] {
        return None;
    }
    let es = dtype.size() as u64;
    let input = geom.c.div_ceil(128) * geom.hp() * geom.wp() * es;
    let weights = geom.c.div_ceil(128) * geom.taps() * geom.o * es;
    let rows = geom.c * geom.taps() * es;
    if input > INPUT_BUDGET || weights > WEIGHT_BUDGET || rows > INPUT_BUDGET {
        return None;
    }
    let (implicit, im2col) = estimates(&geom, dtype);
    (implicit <= im2col).then_some(ConvPlan {
        matmul: mm,
        x: rec.x,
        w: rec.w,
        geom,
    })
}

impl Tiler<'_> {
    /// Lowers the matmul group `grp` of a convolution by implicit GEMM (see the module
    /// comment).
    pub(super) fn lower_conv(
        &mut self,
        grp: &crate::passes::fusion::Group,
        p: &ConvPlan,
    ) -> Result<(), String> {
        let g = p.geom;
        let span = self.func.spans[p.matmul];
        let xv = self.home_of(p.x)?;
        let wv = self.home_of(p.w)?;
        let dt = xv.dtype;
        let es = dt.size() as u64;
        let taps = g.taps();
        let wp = g.wp();
        // The weights' rows `[O, C x taps]` must be contiguous in HBM.
        let ws = &wv.strides;
        let dense_rows = ws[ws.len() - 1] == 1
            && (1..ws.len() - 1).all(|a| ws[a] == ws[a + 1] * wv.shape[a + 1] as i64);
        if !dense_rows {
            return Err(format!(
                "{}: implicit GEMM needs contiguous weight rows",
                p.matmul
            ));
        }
        let cch = chunks128(g.c);
        let och = chunks128(g.o);
        let first = self.load_image(&p.geom, &xv, &cch, 0, span);
        // Transposed weights: per channel chunk one tile, the stationary operand of output
        // block `(o0, osz)` and tap `t` at column `o0 x taps + t x osz`.
        let wt: Vec<Tile> = cch
            .iter()
            .map(|&(_, csz)| self.sbuf_tile(dt, csz as u32, (taps * g.o) as u32))
            .collect();
        for &(o0, osz) in &och {
            let rows = self.sbuf_tile(dt, osz as u32, (g.c * taps) as u32);
            self.dma_2d(
                rows,
                &wv,
                wv.offset + o0 as i64 * ws[0],
                (osz, ws[0]),
                (g.c * taps, 1),
                span,
            );
            let per_bank = (2048 / (osz * es)).clamp(1, 8);
            for (ci, &(c0, csz)) in cch.iter().enumerate() {
                let mut t = 0;
                while t < taps {
                    let group = per_bank.min(taps - t);
                    let bank = self.psum_tile(dt, csz, group * osz);
                    for j in 0..group {
                        let src = tile_ap(
                            dt,
                            0,
                            osz as u32,
                            c0 * taps + t + j,
                            &[(csz, taps as i64)],
                            false,
                        );
                        let dst = bank.slice(0, csz as u32, (j * osz) as u32, osz as u32);
                        self.out.push(
                            Op::Transpose { out: dst, src },
                            Engine::Tensor,
                            &[bank.buf, rows.buf],
                            span,
                        );
                    }
                    let dst = wt[ci].slice(
                        0,
                        csz as u32,
                        (o0 * taps + t * osz) as u32,
                        (group * osz) as u32,
                    );
                    let src = bank.slice(0, csz as u32, 0, (group * osz) as u32);
                    self.copy_out(dst, src, &[wt[ci].buf, bank.buf], span);
                    t += group;
                }
            }
        }
        let blocks = g.blocks();
        // Epilogue operands broadcast over the images (a bias `[1, O, 1]`) are loaded once
        // per block of output channels and kept for the later images, instead of a load
        // (and its DMA latency) before every tile's epilogue.
        self.reuse_space = Some(grp.space.clone());
        let mut next = Some(first);
        for n in 0..g.n {
            let cur = next.take().ok_or("an image's input not loaded")?;
            if n + 1 < g.n {
                next = Some(self.load_image(&g, &xv, &cch, n + 1, span));
            }
            for &(o0, osz) in &och {
                for &(oh0, ohs, ow0, ows) in &blocks {
                    let cols = ohs * ows;
                    let psum = self.psum_tile(Dtype::F32, osz, cols);
                    let mut first = true;
                    for i in 0..g.kh {
                        for j in 0..g.kw {
                            let tap = i * g.kw + j;
                            for (ci, &(_, csz)) in cch.iter().enumerate() {
                                let stationary = wt[ci].slice(
                                    0,
                                    csz as u32,
                                    (o0 * taps + tap * osz) as u32,
                                    osz as u32,
                                );
                                let off = (oh0 * g.sh + i * g.dh) * wp + ow0 * g.sw + j * g.dw;
                                let moving = tile_ap(
                                    dt,
                                    0,
                                    csz as u32,
                                    off,
                                    &[(ohs, (g.sh * wp) as i64), (ows, g.sw as i64)],
                                    false,
                                );
                                self.out.push(
                                    Op::Matmul {
                                        out: psum.ap(),
                                        stationary,
                                        moving,
                                        accumulate: !first,
                                    },
                                    Engine::Tensor,
                                    &[psum.buf, wt[ci].buf, cur[ci].buf],
                                    span,
                                );
                                first = false;
                            }
                        }
                    }
                    // Stores split over all the queues, as a kernel's last ones are, for
                    // the last image (nothing is left to overlap them) and wherever an
                    // image has few tiles (one store on one queue would hold it for a
                    // whole tile at 16 B/cycle). Not for many tiles: 16 pieces each then
                    // crowd the queues ahead of the next image's loads (ResNet-50's 1x1
                    // 256 -> 1024, eight tiles an image: 0.611 of the bound with the
                    // last image's split, 0.608 with every tile's, and 0.50 against 0.30
                    // before the bias was kept across images; the 3x3 layers, two tiles
                    // an image, 0.72 and 0.63 against 0.74 and 0.68).
                    self.last_stores =
                        (self.last_group && n + 1 == g.n) || och.len() * blocks.len() <= 4;
                    self.epilogue(
                        grp,
                        p.matmul,
                        psum,
                        &[AxisUse::Fixed(n)],
                        (o0, osz),
                        (oh0 * g.ow + ow0, cols),
                        false,
                    )?;
                }
            }
        }
        self.last_stores = false;
        self.reuse_space = None;
        Ok(())
    }

    /// Image `n`'s padded input, one tile per channel chunk: the border memset to zero on
    /// GpSimd (idle otherwise here, so the load never waits behind Vector's epilogue
    /// work), the interior loaded by DMA.
    fn load_image(
        &mut self,
        g: &Geom,
        xv: &super::view::HView,
        cch: &[(u64, u64)],
        n: u64,
        span: crate::ir::Span,
    ) -> Vec<Tile> {
        let dt = xv.dtype;
        let xs = &xv.strides;
        let (s_n, s_c) = (xs[0], xs[1]);
        let (s_h, s_w) = if xs.len() == 4 {
            (xs[2], xs[3])
        } else {
            (0, xs[2])
        };
        let (hp, wp) = (g.hp(), g.wp());
        cch.iter()
            .map(|&(c0, csz)| {
                let tile = self.sbuf_tile(dt, csz as u32, (hp * wp) as u32);
                let mut sets: Vec<(u64, Vec<(u64, i64)>)> = Vec::new();
                if g.ph > 0 {
                    sets.push((0, vec![(g.ph * wp, 1)]));
                    sets.push(((g.ph + g.h) * wp, vec![(g.ph * wp, 1)]));
                }
                if g.pw > 0 {
                    let rows = vec![(g.h, wp as i64), (g.pw, 1)];
                    sets.push((g.ph * wp, rows.clone()));
                    sets.push((g.ph * wp + g.pw + g.w, rows));
                }
                for (off, dims) in sets {
                    let ap = tile_ap(dt, 0, csz as u32, off, &dims, false);
                    self.out.push(
                        Op::Memset {
                            out: ap,
                            value: isa::Imm::new(0.0),
                        },
                        Engine::GpSimd,
                        &[tile.buf],
                        span,
                    );
                }
                self.pool_transfer(
                    &Xfer {
                        tile: tile.buf,
                        hbm: xv.buf,
                        dtype: dt,
                        p0: 0,
                        pn: csz as u32,
                        tile_off: g.ph * wp + g.pw,
                        hbm_off: xv.offset + n as i64 * s_n + c0 as i64 * s_c,
                        part_stride: s_c,
                        dims: vec![(g.h, wp as i64, s_h), (g.w, 1, s_w)],
                    },
                    true,
                    span,
                );
                tile
            })
            .collect()
    }
}
