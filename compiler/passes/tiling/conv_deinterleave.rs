//! Convolutions with few input channels and a column stride above one (the 7x7/2 stem of
//! ResNet-50) by a compact window tile read from a deinterleaved copy of the input in HBM.
//!
//! The window tile in SBUF (`conv_im2col.rs`) copies whole input rows onto the window's
//! partitions, and the matmul reads every `sw`-th column: at stride 2 the DMA moves twice
//! the window's own bytes. A compact window cannot be cut out of the input by DMA directly
//! (each element read at stride 2 is a run of its own, charged 64 bytes), nor out of a copy
//! split by column parity (tap column `j` reads parity `j % 2` shifted by `j / 2`, an
//! address that is not affine in `j`). So, per image:
//!
//! - *Load*: the image's rows, every channel, onto `C x H / R` partitions (`R` rows each,
//!   `R` the smallest divisor of `H` that fits), each row padded with zero columns.
//! - *Deinterleave*: engine copies on all those partitions write, per input row and tap
//!   column `j`, the `OW` columns the tap reads (`j dw + ow sw`), contiguous.
//! - *Store* them to a scratch tensor in HBM, `S[n][c][row][j][ow]`, whose rows include
//!   the padding rows (zeros, stored from a zeroed tile), so that every window element is
//!   at an affine address.
//!
//! Then per band of output rows one window tile, the reduced index `k = (tap row, tap
//! column, channel)` on its partitions (dense, in the language's order), output positions
//! on the free axis: DMAs whose HBM side is the 5-dimension pattern `(i, j, c, r, ow)` of
//! `S`, runs of `OW` elements. Tap rows go `L` to a matmul; when `L` tap rows are a whole
//! number of output rows apart (`L dh` a multiple of `sh`), the later groups read the first
//! group's partitions shifted by that many window rows, so only `L` tap rows are loaded
//! (the stem: tap rows 4-6 are rows 0-2 two output rows down). `L` is chosen by the cost
//! estimate (fewer tap rows loaded, more matmuls).
//!
//! Exactness: within a matmul the products are added in partition order (tap row, tap
//! column, channel) and the groups follow in tap-row order: `k = tap x C + c`, the
//! language's order (docs/language.md), with no zero partitions in between. Every copy
//! (DMA, engine copy of equal dtypes) is exact, so the result has the reference's bits
//! under every policy.
//!
//! Costs (docs/machine.md), the reason for the choice ([`plan`]): the DMA moves the input
//! once, the deinterleaved copy (`KW x OW / W` times the input, about `KW / sw`) once out
//! and once per loaded tap row back in, the output once; Vector and GpSimd copy the
//! deinterleaved copy once; the Tensor engine does one matmul per group of `L` tap rows.

use super::block::Tile;
use super::pool::tile_ap;
use super::view::hbm_ap;
use super::Tiler;
use crate::ir::{ConvAttrs, Inst, Value};
use isa::{ActFunc, DmaAp, Dtype, Engine, Op, Role, ScalarArg};

/// Bytes per partition of one image's loaded rows and their deinterleaved copy.
const PREP_BUDGET: u64 = 24 * 1024;
/// Bytes per partition of every buffer of the lowering together, leaving SBUF's other
/// 64 KiB to the weights and the epilogue's tiles.
const SBUF_BUDGET: u64 = 128 * 1024;
/// Bytes per partition of a window tile (three in rotation).
const WINDOW_BUDGET: u64 = 16 * 1024;
const WINDOWS: usize = 3;
/// Images whose deinterleaved copy is made ahead of the one computing, and the buffers
/// of the making in rotation.
const AHEAD: u64 = 2;
const PREPS: u64 = AHEAD + 1;
/// Most positions of one PSUM tile (a bank of f32).
const BANK_COLS: u64 = 512;
/// The most DMAs one transfer is cut into, so that it spreads over the 16 queues.
const PIECES: u64 = 16;

/// A 2-D convolution's shape (`conv.rs`'s, built the same way).
type Shape = super::conv::Geom;

/// How a convolution is computed from a deinterleaved copy of its input (module comment).
#[derive(Clone, Debug)]
pub struct ScratchPlan {
    s: Shape,
    /// Input rows per partition in the deinterleave step.
    rows: u64,
    /// Tap rows per matmul.
    l: u64,
    /// Whether later groups of tap rows read the first group's partitions.
    reuse: bool,
    /// Output rows per band and per PSUM tile.
    band: u64,
    tile_rows: u64,
    /// The estimated cycles.
    pub cycles: f64,
}

impl ScratchPlan {
    fn kwc(&self) -> u64 {
        self.s.kw * self.s.c
    }
    fn groups(&self) -> u64 {
        self.s.kh.div_ceil(self.l)
    }
    /// Tap rows of group `g`.
    fn rows_of(&self, g: u64) -> u64 {
        self.l.min(self.s.kh - self.l * g)
    }
    /// Window rows group `g` is shifted by when it reads the first group's partitions.
    fn shift(&self, g: u64) -> u64 {
        if self.reuse {
            g * self.l * self.s.dh / self.s.sh
        } else {
            0
        }
    }
    /// Window tiles per band: one shared by every group, or one per group; tile `t`'s
    /// first tap row and its tap rows.
    fn window_tiles(&self) -> Vec<(u64, u64)> {
        if self.reuse {
            vec![(0, self.l)]
        } else {
            (0..self.groups())
                .map(|g| (g * self.l, self.rows_of(g)))
                .collect()
        }
    }
    /// Window rows of a band of `band` output rows.
    fn window_rows(&self, band: u64) -> u64 {
        band + self.shift(self.groups() - 1)
    }
    /// Elements of one scratch row (every tap column's `OW` columns).
    fn srow(&self) -> u64 {
        self.s.kw * self.s.ow
    }
    /// Scratch rows per channel: the padded rows, and any the last band's window reads
    /// beyond them (zeros, never used by a matmul).
    fn hs(&self) -> u64 {
        let s = &self.s;
        let hp = s.h + 2 * s.ph;
        let last = if self.reuse {
            (s.oh - 1 + self.shift(self.groups() - 1)) * s.sh + (self.l - 1) * s.dh + 1
        } else {
            hp
        };
        hp.max(last)
    }
    /// Partitions of the load and deinterleave steps.
    fn parts(&self) -> u64 {
        self.s.c * self.s.h / self.rows
    }
}

/// The deinterleaved-copy plan of a convolution with input `xs` `[N, C, H, W]` and weights
/// `ws` `[O, C, KH, KW]` of `dtype`, when it applies (2-D, one group, column stride above
/// one, `KW x C <= 128`, output rows within a PSUM bank, the buffers within their
/// budgets), with its estimated cycles: the best number of tap rows per matmul.
pub fn plan(xs: &[u64], ws: &[u64], a: &ConvAttrs, dtype: Dtype) -> Option<ScratchPlan> {
    if xs.len() != 4 || ws.len() != 4 || a.groups != 1 || !dtype.is_float() {
        return None;
    }
    let s = Shape::new(xs, ws, a)?;
    let (c, h, w, kh, kw, oh, ow) = (s.c, s.h, s.w, s.kh, s.kw, s.oh, s.ow);
    if s.sw < 2 || kw * c > 128 || ow > BANK_COLS || oh == 0 || ow == 0 || h == 0 {
        return None;
    }
    let es = dtype.size() as u64;
    let rows = (1..=h).find(|&r| h.is_multiple_of(r) && c * (h / r) <= 128)?;
    let wp = w + 2 * s.pw;
    if rows * (wp + kw * ow) * es > PREP_BUDGET {
        return None;
    }
    let tile_rows = (BANK_COLS / ow).min(oh);
    let mut best: Option<ScratchPlan> = None;
    for l in 1..=(128 / (kw * c)).min(kh) {
        let groups = kh.div_ceil(l);
        let mut p = ScratchPlan {
            s,
            rows,
            l,
            reuse: groups > 1 && (l * s.dh).is_multiple_of(s.sh),
            band: tile_rows,
            tile_rows,
            cycles: 0.0,
        };
        let fits = |p: &ScratchPlan| {
            p.window_tiles().len() as u64 * p.window_rows(p.band) * ow * es <= WINDOW_BUDGET
        };
        if !fits(&p) {
            continue;
        }
        // Bands of whole PSUM tiles, as large as the window budget allows, then evened
        // out so that the last is not a sliver.
        while p.band + tile_rows <= oh {
            let mut q = p.clone();
            q.band += tile_rows;
            if !fits(&q) {
                break;
            }
            p = q;
        }
        let bands = oh.div_ceil(p.band);
        p.band = oh.div_ceil(bands).div_ceil(tile_rows) * tile_rows;
        // Everything in SBUF at once: the buffers in rotation and the zero rows' tile.
        let zrows = s.ph.max(p.hs() - s.ph - h);
        let sbuf = PREPS * rows * (wp + kw * ow) * es
            + zrows * p.srow() * es
            + WINDOWS as u64 * p.window_tiles().len() as u64 * p.window_rows(p.band) * ow * es;
        if sbuf > SBUF_BUDGET {
            continue;
        }
        p.cycles = estimate(&p, es);
        if best.as_ref().is_none_or(|b| p.cycles < b.cycles) {
            best = Some(p);
        }
    }
    best
}

/// The estimated cycles of `p` by docs/machine.md's costs: the largest of the DMA's bytes
/// at 256 a cycle (each run at least 64), the Tensor engine's matmuls, the deinterleave
/// copies and one epilogue instruction a tile, plus the latencies before the first matmul
/// (the first image's load, store and window load) and after the last store.
fn estimate(p: &ScratchPlan, es: u64) -> f64 {
    let s = &p.s;
    let run = |len: u64| (len * es).max(64) as f64;
    let n = s.n as f64;
    let load = n * (s.c * s.h) as f64 * run(s.w);
    let store = n * (s.c * p.hs()) as f64 * (p.srow() * es) as f64;
    let mut window = 0.0;
    let mut oh0 = 0;
    while oh0 < s.oh {
        let band = p.band.min(s.oh - oh0);
        let parts: u64 = p.window_tiles().iter().map(|t| t.1 * p.kwc()).sum();
        window += n * (parts * p.window_rows(band)) as f64 * run(s.ow);
        oh0 += band;
    }
    let weights = (s.o * s.c * s.kh * s.kw * 64) as f64;
    let out = (s.n * s.o * s.oh * s.ow * 2) as f64;
    let dma = (load + store + window + weights + out) / 256.0;
    let tiles = (s.n * s.oh.div_ceil(p.tile_rows) * s.o.div_ceil(128)) as f64;
    let cols = (p.tile_rows * s.ow) as f64;
    let tensor = tiles * p.groups() as f64 * (cols / 2.0).max(32.0);
    let copies = n * (128.0 + 0.8 * (p.rows * p.srow()) as f64);
    let epilogue = tiles * (64.0 + cols);
    let start = 3.0 * 2000.0 + (p.rows * p.srow()) as f64;
    dma.max(tensor).max(copies).max(epilogue) + start + 2000.0
}

/// The buffers of the deinterleave step of one image: its loaded rows and their copy.
#[derive(Clone, Copy)]
struct Prep {
    stage: Tile,
    copy: Tile,
}

impl Tiler<'_> {
    /// Computes the convolution whose matmul is `matmul` (the root of group `grp`) from
    /// its input `x` and weights `w` by a deinterleaved copy in HBM and compact window
    /// tiles (see the module comment).
    pub(super) fn lower_deinterleaved(
        &mut self,
        grp: &crate::passes::fusion::Group,
        matmul: Inst,
        (x, w): (Value, Value),
        p: &ScratchPlan,
    ) -> Result<(), String> {
        let span = self.func.spans[matmul];
        let xv = self.home_of(x)?;
        let wv = self.home_of(w)?;
        let dt = xv.dtype;
        let s = p.s;
        let ws = wv.strides.clone();
        let kwc = p.kwc();
        self.epilogue_tail.clear();
        self.reuse_space = Some(grp.space.clone());
        // The stationary weights: per group of tap rows a tile `[K, O]`, partitions
        // `(i, j, c)`, in pieces of output channels (each element is a run of its own).
        let mut wt = Vec::new();
        for g in 0..p.groups() {
            let k = p.rows_of(g) * kwc;
            let tile = self.sbuf_tile(dt, k as u32, s.o as u32);
            let per = s.o.div_ceil(s.o.min(8));
            let mut o0 = 0;
            while o0 < s.o {
                let on = per.min(s.o - o0);
                let dst = DmaAp::Tile(tile_ap(dt, 0, k as u32, o0, &[(on, 1)], false));
                let off = wv.offset + (g * p.l) as i64 * ws[2] + o0 as i64 * ws[0];
                let src = DmaAp::Hbm(hbm_ap(
                    dt,
                    off,
                    &[
                        (p.rows_of(g), ws[2]),
                        (s.kw, ws[3]),
                        (s.c, ws[1]),
                        (on, ws[0]),
                    ],
                ));
                self.out.push(
                    Op::Dma { dst, src },
                    Engine::Dma(0),
                    &[tile.buf, wv.buf],
                    span,
                );
                o0 += on;
            }
            wt.push(tile);
        }
        // The deinterleaved copy of every image, and the buffers of its making: two of
        // each in rotation, the loaded rows' padding columns zeroed once.
        let hs = p.hs();
        let srow = p.srow();
        let scratch = self.out.hbm(
            &format!("deinterleaved{}", matmul.as_u32()),
            Role::Scratch,
            dt,
            &[s.n, s.c, hs, s.kw, s.ow],
        );
        let parts = p.parts() as u32;
        let wp = s.w + 2 * s.pw;
        let mut preps = Vec::new();
        for _ in 0..PREPS {
            let stage = self.sbuf_tile(dt, parts, (p.rows * wp) as u32);
            if s.pw > 0 {
                for left in [0, s.pw + s.w] {
                    let ap = tile_ap(dt, 0, parts, left, &[(p.rows, wp as i64), (s.pw, 1)], false);
                    self.push_memset(ap, stage, Engine::Vector, span);
                }
            }
            let copy = self.sbuf_tile(dt, parts, (p.rows * srow) as u32);
            preps.push(Prep { stage, copy });
        }
        // Zero rows of the scratch (above and below the image in every channel).
        let zrows = s.ph.max(hs - s.ph - s.h);
        let zero = (zrows > 0).then(|| {
            let z = self.sbuf_tile(dt, s.c as u32, (zrows * srow) as u32);
            let ap = tile_ap(dt, 0, s.c as u32, 0, &[(zrows * srow, 1)], false);
            self.push_memset(ap, z, Engine::Vector, span);
            z
        });
        let windows: Vec<Vec<Tile>> = (0..WINDOWS)
            .map(|_| {
                p.window_tiles()
                    .iter()
                    .map(|&(_, rows)| {
                        let cols = p.window_rows(p.band) * s.ow;
                        self.sbuf_tile(dt, (rows * kwc) as u32, cols as u32)
                    })
                    .collect()
            })
            .collect();
        let xs = xv.strides.clone();
        let load = |t: &mut Self, n: u64, prep: Prep| {
            let r = p.rows;
            for (r0, rn) in pieces(r, PIECES) {
                let dst = tile_ap(
                    dt,
                    0,
                    parts,
                    r0 * wp + s.pw,
                    &[(rn, wp as i64), (s.w, 1)],
                    false,
                );
                let src = hbm_ap(
                    dt,
                    xv.offset + n as i64 * xs[0] + r0 as i64 * xs[2],
                    &[
                        (s.c, xs[1]),
                        (s.h / r, r as i64 * xs[2]),
                        (rn, xs[2]),
                        (s.w, xs[3]),
                    ],
                );
                t.out.push(
                    Op::Dma {
                        dst: DmaAp::Tile(dst),
                        src: DmaAp::Hbm(src),
                    },
                    Engine::Dma(0),
                    &[prep.stage.buf, xv.buf],
                    span,
                );
            }
        };
        let convert = |t: &mut Self, prep: Prep| {
            // Tap columns split between Vector, Scalar (which has each tile's epilogue too)
            // and GpSimd (a quarter of Vector's pace).
            let on_gpsimd = s.kw / 5;
            let on_scalar = (s.kw - on_gpsimd) / 3;
            let on_vector = s.kw - on_gpsimd - on_scalar;
            let r = p.rows;
            for (j0, jn, engine) in [
                (0, on_vector, Engine::Vector),
                (on_vector, on_scalar, Engine::Scalar),
                (on_vector + on_scalar, on_gpsimd, Engine::GpSimd),
            ] {
                if jn == 0 {
                    continue;
                }
                let out = tile_ap(
                    dt,
                    0,
                    parts,
                    j0 * s.ow,
                    &[(r, srow as i64), (jn, s.ow as i64), (s.ow, 1)],
                    false,
                );
                let src = tile_ap(
                    dt,
                    0,
                    parts,
                    j0 * s.dw,
                    &[(r, wp as i64), (jn, s.dw as i64), (s.ow, s.sw as i64)],
                    false,
                );
                // The Scalar engine's copy is `x * 1 + -0`, exact for every `x` (signed
                // zeros included).
                let op = if engine == Engine::Scalar {
                    Op::Activate {
                        out,
                        src,
                        func: ActFunc::Identity,
                        scale: ScalarArg::imm(1.0),
                        bias: ScalarArg::imm(-0.0),
                        accum: None,
                    }
                } else {
                    Op::TensorCopy { out, src }
                };
                t.out
                    .push(op, engine, &[prep.copy.buf, prep.stage.buf], span);
            }
        };
        let store = |t: &mut Self, n: u64, prep: Prep| {
            let r = p.rows;
            let image = (n * s.c * hs * srow) as i64;
            if let Some(z) = zero {
                for (row0, nrows) in [(0, s.ph), (s.ph + s.h, hs - s.ph - s.h)] {
                    if nrows == 0 {
                        continue;
                    }
                    let dst = hbm_ap(
                        dt,
                        image + (row0 * srow) as i64,
                        &[(s.c, (hs * srow) as i64), (nrows * srow, 1)],
                    );
                    let src = tile_ap(dt, 0, s.c as u32, 0, &[(nrows * srow, 1)], false);
                    t.out.push(
                        Op::Dma {
                            dst: DmaAp::Hbm(dst),
                            src: DmaAp::Tile(src),
                        },
                        Engine::Dma(0),
                        &[scratch, z.buf],
                        span,
                    );
                }
            }
            // Pieces of each partition's rows, contiguous in the scratch too.
            for (f0, fn_) in pieces(r * srow, PIECES) {
                let dst = hbm_ap(
                    dt,
                    image + (s.ph * srow + f0) as i64,
                    &[
                        (s.c, (hs * srow) as i64),
                        (s.h / r, (r * srow) as i64),
                        (fn_, 1),
                    ],
                );
                let src = tile_ap(dt, 0, parts, f0, &[(fn_, 1)], false);
                t.out.push(
                    Op::Dma {
                        dst: DmaAp::Hbm(dst),
                        src: DmaAp::Tile(src),
                    },
                    Engine::Dma(0),
                    &[scratch, prep.copy.buf],
                    span,
                );
            }
        };
        let ochunks: Vec<(u64, u64)> = (0..s.o.div_ceil(128))
            .map(|b| (b * 128, 128.min(s.o - b * 128)))
            .collect();
        // Every band of every image, as (image, its band index, first output row, rows).
        let mut bands = Vec::new();
        for n in 0..s.n {
            let mut oh0 = 0;
            while oh0 < s.oh {
                let band = p.band.min(s.oh - oh0);
                bands.push((n, bands.len() as u64, oh0, band));
                oh0 += band;
            }
        }
        let per_image = s.oh.div_ceil(p.band);
        // The window of band `k`: per tile, DMAs of pieces of window rows from the scratch.
        let window = |t: &mut Self, k: usize| {
            let (n, _, oh0, band) = bands[k];
            let win = &windows[k % WINDOWS];
            let wrows = p.window_rows(band);
            let image = (n * s.c * hs * srow) as i64;
            for (tile, &(base, trows)) in win.iter().zip(p.window_tiles().iter()) {
                let k = (trows * kwc) as u32;
                for (r0, rn) in pieces(wrows, PIECES) {
                    let row = (oh0 + r0) * s.sh + base * s.dh;
                    let src = hbm_ap(
                        dt,
                        image + (row * srow) as i64,
                        &[
                            (trows, (s.dh * srow) as i64),
                            (s.kw, s.ow as i64),
                            (s.c, (hs * srow) as i64),
                            (rn, (s.sh * srow) as i64),
                            (s.ow, 1),
                        ],
                    );
                    let dst = tile_ap(dt, 0, k, r0 * s.ow, &[(rn * s.ow, 1)], false);
                    t.out.push(
                        Op::Dma {
                            dst: DmaAp::Tile(dst),
                            src: DmaAp::Hbm(src),
                        },
                        Engine::Dma(0),
                        &[tile.buf, scratch],
                        span,
                    );
                }
            }
        };
        // Image `m`'s deinterleaved copy is made `AHEAD` images early, each step a band
        // after the one before, so that no DMA queue holds a transfer whose data is not
        // ready yet for long (a queue issues in order): its load with the first band of
        // image `m - AHEAD`, its copies with that image's second band (the first when it
        // has one), its stores with the first band of image `m - AHEAD + 1`. The first
        // images' steps that would come before the first band are emitted first.
        let load_at = |m: u64| (m * per_image).checked_sub(AHEAD * per_image);
        let convert_at = |m: u64| load_at(m).map(|k| k + 1.min(per_image - 1));
        let store_at = |m: u64| (m * per_image).checked_sub((AHEAD - 1) * per_image);
        let prep_of = |m: u64| preps[(m % PREPS) as usize];
        for m in 0..s.n {
            if load_at(m).is_none() {
                load(self, m, prep_of(m));
            }
        }
        for m in 0..s.n {
            if convert_at(m).is_none() {
                convert(self, prep_of(m));
            }
            if store_at(m).is_none() {
                store(self, m, prep_of(m));
            }
        }
        window(self, 0);
        for (k, &(n, _, oh0, band)) in bands.iter().enumerate() {
            let win = windows[k % WINDOWS].clone();
            // The steps of later images' copies due now, then the next band's window
            // (after the stores it reads, before this band's own stores on the queues).
            for m in n + 1..s.n.min(n + AHEAD + 1) {
                let due = Some(k as u64);
                if load_at(m) == due {
                    load(self, m, prep_of(m));
                }
                if convert_at(m) == due {
                    convert(self, prep_of(m));
                }
                if store_at(m) == due {
                    store(self, m, prep_of(m));
                }
            }
            if k + 1 < bands.len() {
                window(self, k + 1);
            }
            // The matmuls and epilogue of each PSUM tile.
            let mut r = 0;
            while r < band {
                let tr = p.tile_rows.min(band - r);
                let cols = tr * s.ow;
                let mm: Vec<_> = (0..p.groups())
                    .map(|g| {
                        let k = (p.rows_of(g) * kwc) as u32;
                        let tile = if p.reuse { win[0] } else { win[g as usize] };
                        let moving = tile_ap(
                            dt,
                            0,
                            k,
                            (r + p.shift(g)) * s.ow,
                            &[(tr, s.ow as i64), (s.ow, 1)],
                            false,
                        );
                        (wt[g as usize], tile, k, moving)
                    })
                    .collect();
                let at = ((oh0 + r) * s.ow, cols);
                self.window_tiles(grp, matmul, (n, n + 1 == s.n), &ochunks, &mm, at)?;
                r += tr;
            }
        }
        self.last_stores = false;
        self.reuse_space = None;
        self.epilogue_tail.clear();
        Ok(())
    }
}

/// `len` cut into at most `most` nearly equal pieces, as (start, length).
fn pieces(len: u64, most: u64) -> Vec<(u64, u64)> {
    let count = len.min(most).max(1);
    let mut out = Vec::new();
    let mut start = 0;
    for i in 0..count {
        let n = (len - start) / (count - i);
        out.push((start, n));
        start += n;
    }
    out
}
