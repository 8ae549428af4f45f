//! Depthwise convolutions (`groups = C = O`) on the Vector, GpSimd and Scalar engines,
//! straight from the input and the weights, with the group's epilogue fused.
//!
//! The `conv` pass rewrites a depthwise convolution into a multiply-add chain over the
//! window's taps whose last sum is reshaped to `[N, C, positions]` (`passes/conv.rs`,
//! `Depthwise`). Lowered as written, that chain is one elementwise row group over a
//! padded copy of the input and nine strided slices of it, a partition per output row:
//! MobileNetV2's layers ran at 0.012 to 0.07 of their bound. Here instead:
//!
//! - Rows `(n, c)` go on partitions in blocks that fill all 128 where the shape allows
//!   (`channel_chunks`: chunks of 128 channels, the rest cut into powers of two when
//!   that needs fewer blocks, each with as many images as fit), and small layers put
//!   several blocks' images side by side on the free axis (`dw_blocks`), so that one
//!   instruction pays its fixed cost for all of them. Larger layers are cut into bands of
//!   output rows (output columns in 1-D). A band's input rows with the window's halo are
//!   loaded once into SBUF (a padded tile: its border memset to zero; rows of under 64
//!   bytes loaded densely and copied in, since every DMA run costs at least 64 bytes), as
//!   `pool.rs` does for pools, and every tap reads it through an access pattern (stride
//!   and dilation are pattern strides).
//! - Each tap's products `x * w[c, tap]` are one instruction with a per-partition scalar
//!   (the weights loaded once per block shape as an f32 `[P, taps]` tile): `tensor_scalar`
//!   on Vector or GpSimd, or the Scalar engine's identity activation `x * w + 0`. Each
//!   tap's products are a range of their own in an f32 tile: the `sync` pass orders
//!   instructions by the bounding boxes of the bytes they touch, so taps interleaved in
//!   one range and written by different engines would wait for each other.
//! - One `tensor_reduce_scalar` per band (taps innermost through a strided pattern) sums
//!   each position's taps in tap order and adds `+0`. The language's order is `((0 + p_0) + p_1) + ..`, each sum rounded to f32; the
//!   reduction's `(p_0 + p_1) + ..` differs from it only while every partial sum is a zero
//!   (`0 + -0` is `+0`), and the final `+ 0` turns the only possible difference, a `-0`
//!   result, into the reference's `+0`. The activation's `+ 0` on a product (the same
//!   `-0` to `+0`) likewise changes no sum. So the result has the reference's bits under
//!   every dtype policy.
//! - The sums arrive as the given tile of the group's epilogue (bias, activation, cast;
//!   a column slice of a 1-D convolution, Mamba's causal `[..., :L]`, is computed directly:
//!   only the columns it keeps), evaluated by the block evaluator (`block.rs`) on each
//!   block of images.
//!
//! Each instruction goes to whichever engine would finish it first by docs/machine.md's
//! costs (`64 + N` on Vector and Scalar, `64 + 4N` on GpSimd; the reduction only on Vector
//! or GpSimd; the epilogue booked on the engines the block evaluator gives it), so the
//! products spread over all three engines. Work per output position and partition: `taps`
//! products and a `taps`-element reduction, about `2 taps` element passes, against the DMA
//! bound's 2 (bf16 in and out, stride 1): 3x3 layers are compute bound near
//! `2 / (20 / 2.25) = 0.225` of the bound; stride-2 layers (4 input elements per output)
//! near 0.56 (BENCHMARKS.md, "Depthwise and pointwise layers", argues why no lowering on
//! these engines passes 0.26 at stride 1).

use super::block::{AxisUse, Block, Tile};
use super::pool::{piece, tile_ap};
use super::view::hbm_ap;
use super::Tiler;
use crate::ir::{ConvAttrs, Function, Inst, Span, TOp, Value, ValueDef};
use crate::passes::conv::Depthwise;
use crate::passes::fusion::{self, Group, Grouping, Root};
use crate::tile::Buf;
use isa::{ActFunc, AluOp, DmaAp, Dtype, Engine, Mem, Op, ReduceOp, ScalarArg};

/// Bytes per partition of a band's product tile (f32, positions x taps).
const PROD_BYTES: u64 = 16 * 1024;
/// Bytes per partition of a band's input tile at most.
const BAND_BYTES: u64 = 32 * 1024;
/// The fewest bands a convolution is cut into, for pipelining.
const MIN_PIECES: u64 = 8;

/// The geometry of a depthwise convolution, 1-D as 2-D of height 1.
#[derive(Clone, Copy, Debug)]
pub struct Geom {
    n: u64,
    c: u64,
    h: u64,
    w: u64,
    kh: u64,
    kw: u64,
    sh: u64,
    sw: u64,
    ph: u64,
    pw: u64,
    dh: u64,
    dw: u64,
    oh: u64,
    ow: u64,
}

impl Geom {
    fn new(x: &[u64], attrs: &ConvAttrs, w: &[u64]) -> Option<Geom> {
        let at = |v: &[u64], i: usize, d: u64| v.get(i).copied().unwrap_or(d);
        let (h, wd, kh, kw, s, p, d) = match x.len() {
            3 => (
                1,
                x[2],
                1,
                w[2],
                (1, at(&attrs.stride, 0, 1)),
                (0, at(&attrs.padding, 0, 0)),
                (1, at(&attrs.dilation, 0, 1)),
            ),
            4 => (
                x[2],
                x[3],
                w[2],
                w[3],
                (at(&attrs.stride, 0, 1), at(&attrs.stride, 1, 1)),
                (at(&attrs.padding, 0, 0), at(&attrs.padding, 1, 0)),
                (at(&attrs.dilation, 0, 1), at(&attrs.dilation, 1, 1)),
            ),
            _ => return None,
        };
        let out = |n: u64, k: u64, s: u64, p: u64, d: u64| {
            (n + 2 * p).checked_sub(d * (k - 1) + 1).map(|e| e / s + 1)
        };
        Some(Geom {
            n: x[0],
            c: x[1],
            h,
            w: wd,
            kh,
            kw,
            sh: s.0,
            sw: s.1,
            ph: p.0,
            pw: p.1,
            dh: d.0,
            dw: d.1,
            oh: out(h, kh, s.0, p.0, d.0)?,
            ow: out(wd, kw, s.1, p.1, d.1)?,
        })
    }

    fn taps(&self) -> u64 {
        self.kh * self.kw
    }
}

/// A depthwise convolution the tile pass computes here: the row group `insts` reads its
/// result `out` (through `given`, the instruction whose value arrives as the computed
/// tile: `out`'s reshape, or a column slice of it), and nothing else does.
#[derive(Clone, Debug)]
pub struct DwPlan {
    pub x: Value,
    pub w: Value,
    pub out: Value,
    pub given: Inst,
    /// The group's instructions, which identify it.
    pub insts: Vec<Inst>,
    /// The group evaluated on each band: `given` first, then the group's instructions.
    pub sub: Group,
    geom: Geom,
    /// The convolution's output column that the space's column 0 is (a 1-D slice's start).
    col0: u64,
    /// Output columns of the space (per output row in 2-D: `ow`).
    cols: u64,
    /// Whether `given`'s value is read outside the group (or returned), so stored.
    store_given: bool,
}

/// The plan of a depthwise convolution, or `None` to compute its chain as written.
pub fn plan(func: &Function, grouping: &Grouping, rec: &Depthwise) -> Option<DwPlan> {
    let ValueDef::Inst(def) = func.values[rec.out].def else {
        return None;
    };
    if func.insts[def].op != TOp::Reshape || func.results.contains(&rec.out) {
        return None;
    }
    // The input and weights are kernel parameters (dense HBM tensors), of float dtypes.
    let is_param = |v: Value| matches!(func.values[v].def, ValueDef::Param(_));
    if !is_param(rec.x) || !is_param(rec.w) {
        return None;
    }
    let (xt, wt) = (func.ty(rec.x), func.ty(rec.w));
    if !xt.dtype.is_float() || !wt.dtype.is_float() {
        return None;
    }
    let geom = Geom::new(&xt.shape, &rec.attrs, &wt.shape)?;
    let users: Vec<Inst> = func
        .layout
        .iter()
        .copied()
        .filter(|&i| func.insts[i].args.contains(&rec.out))
        .collect();
    let gi = grouping.group_of[*users.first()?]?;
    if users.iter().any(|&u| grouping.group_of[u] != Some(gi)) {
        return None;
    }
    let g = &grouping.groups[gi as usize];
    if g.root != Root::Rows || g.space.len() != 3 {
        return None;
    }
    let (given, col0) = match users.as_slice() {
        &[u] if matches!(func.insts[u].op, TOp::Slice(_)) => {
            let (src, start) = fusion::column_slice(func, u)?;
            // Column slices only in 1-D, where a column is an output position.
            (src == rec.out && geom.oh == 1).then_some((u, start))?
        }
        _ if users
            .iter()
            .all(|&u| !matches!(func.insts[u].op, TOp::Slice(_) | TOp::Concat(_))) =>
        {
            (def, 0)
        }
        _ => return None,
    };
    let shape = &func.ty(func.insts[given].result).shape;
    if shape != &g.space || shape[0] != geom.n || shape[1] != geom.c {
        return None;
    }
    let cols = if geom.oh == 1 {
        shape[2]
    } else {
        if shape[2] != geom.oh * geom.ow {
            return None;
        }
        geom.ow
    };
    // Every other value of the group keeps the space's width (no concats, no narrow
    // values), so the epilogue evaluates on any band of columns.
    let plain = g.insts.iter().all(|&i| {
        i == given
            || (!matches!(
                func.insts[i].op,
                TOp::Slice(_) | TOp::Concat(_) | TOp::Reduce { .. }
            ) && fusion::fit(&func.ty(func.insts[i].result).shape, &g.space).is_some())
    });
    if !plain {
        return None;
    }
    // One output row (2-D) or one column (1-D) of one band must fit.
    let es = xt.dtype.size() as u64;
    let wp = (cols - 1) * geom.sw + (geom.kw - 1) * geom.dw + 1;
    let rows = (geom.kh - 1) * geom.dh + 1;
    if geom.oh > 1 && rows * wp * es > BAND_BYTES || geom.taps() * 4 > PROD_BYTES {
        return None;
    }
    let given_v = func.insts[given].result;
    let store_given = func.results.contains(&given_v)
        || func
            .layout
            .iter()
            .any(|&i| func.insts[i].args.contains(&given_v) && grouping.group_of[i] != Some(gi));
    let mut insts = vec![given];
    insts.extend(g.insts.iter().copied().filter(|&i| i != given));
    Some(DwPlan {
        x: rec.x,
        w: rec.w,
        out: rec.out,
        given,
        insts: g.insts.clone(),
        sub: Group {
            root: Root::Rows,
            space: g.space.clone(),
            insts,
            needs_plain_rows: g.needs_plain_rows,
        },
        geom,
        col0,
        cols,
        store_given,
    })
}

/// The Vector, GpSimd and Scalar time (cycles) planned so far.
#[derive(Default)]
struct Loads {
    vg: super::pool::Loads,
    scalar: f64,
}

impl Loads {
    /// Picks the engine that would finish `n` element passes first (Scalar only where
    /// `scalar`) and books it.
    fn pick(&mut self, n: f64, scalar: bool) -> Engine {
        let s = self.scalar + 64.0 + n;
        let vg = (self.vg.vector + 64.0 + n).min(self.vg.gpsimd + 64.0 + 4.0 * n);
        if scalar && s <= vg {
            self.scalar = s;
            Engine::Scalar
        } else {
            self.vg.pick(n, 1.0)
        }
    }
}

impl Tiler<'_> {
    /// Lowers the group of a depthwise convolution's epilogue, computing the convolution
    /// itself first (see the module comment).
    pub(super) fn lower_depthwise(&mut self, p: &DwPlan) -> Result<(), String> {
        let g = p.geom;
        let span = self.func.spans[p.given];
        let xv = self.home_of(p.x)?;
        let wv = self.home_of(p.w)?;
        let xdt = xv.dtype;
        let es = xdt.size() as u64;
        let taps = g.taps();
        let rank = xv.shape.len();
        let (sn, sc) = (xv.strides[0], xv.strides[1]);
        let (sy, sx) = if rank == 4 {
            (xv.strides[2], xv.strides[3])
        } else {
            (0, xv.strides[2])
        };
        let (wc, wy, wx) = if rank == 4 {
            (wv.strides[0], wv.strides[2], wv.strides[3])
        } else {
            (wv.strides[0], 0, wv.strides[2])
        };
        // Blocks: channel chunks (`channel_chunks`) of `m` images each on partitions, and
        // `reps` such groups of images side by side on the free axis.
        let npos_max = (PROD_BYTES / (taps * 4)).max(1);
        let img_pos = if g.oh > 1 { g.oh * g.ow } else { p.cols };
        let pad_in = |r: u64| {
            if g.oh > 1 {
                ((g.oh - 1) * g.sh + (g.kh - 1) * g.dh + 1) * p.wp(&g) * es * r
            } else {
                ((p.cols - 1) * g.sw + (g.kw - 1) * g.dw + 1) * es * r
            }
        };
        let blocks = dw_blocks(g.n, g.c, |reps| {
            reps * img_pos <= npos_max && pad_in(reps) <= BAND_BYTES
        });
        // The weights of each block shape, as f32 `[P, taps]` (repeated for each image
        // of the block), loaded first.
        let mut weights: Vec<((u64, u64, u64), Buf)> = Vec::new();
        for b in &blocks {
            let key = (b.m, b.c0, b.cn);
            if weights.iter().any(|(k, _)| *k == key) {
                continue;
            }
            let buf = self.out.sbuf(Dtype::F32, b.parts(), taps as u32);
            let dst = tile_ap(
                Dtype::F32,
                0,
                b.parts(),
                0,
                &[(g.kh, g.kw as i64), (g.kw, 1)],
                false,
            );
            let src = hbm_ap(
                wv.dtype,
                wv.offset + b.c0 as i64 * wc,
                &[(b.m, 0), (b.cn, wc), (g.kh, wy), (g.kw, wx)],
            );
            self.out.push(
                Op::Dma {
                    dst: DmaAp::Tile(dst),
                    src: DmaAp::Hbm(src),
                },
                Engine::Dma(0),
                &[buf, wv.buf],
                span,
            );
            weights.push((key, buf));
        }
        // Bands: whole images when a block's reps hold them, else output rows (2-D) or
        // output columns (1-D), enough for pipelining.
        let want = MIN_PIECES.div_ceil(blocks.len() as u64).max(1);
        let bands: Vec<(u64, u64, u64, u64)> = if blocks.iter().any(|b| b.reps > 1) {
            if g.oh > 1 {
                vec![(0, g.oh, 0, g.ow)]
            } else {
                vec![(0, 1, p.col0, p.cols)]
            }
        } else if g.oh > 1 {
            let rows_in = |r: u64| ((r - 1) * g.sh + (g.kh - 1) * g.dh + 1) * p.wp(&g) * es;
            let mut nr = (npos_max / g.ow).max(1).min(g.oh.div_ceil(want));
            while nr > 1 && rows_in(nr) > BAND_BYTES {
                nr -= 1;
            }
            (0..g.oh)
                .step_by(nr as usize)
                .map(|r0| (r0, nr.min(g.oh - r0), 0, g.ow))
                .collect()
        } else {
            let cols_in = |q: u64| ((q - 1) * g.sw + (g.kw - 1) * g.dw + 1) * es;
            let mut nq = npos_max.min(p.cols.div_ceil(want)).max(1);
            while nq > 1 && cols_in(nq) > BAND_BYTES {
                nq /= 2;
            }
            (0..p.cols)
                .step_by(nq as usize)
                .map(|q| (0, 1, p.col0 + q, nq.min(p.cols - q)))
                .collect()
        };
        // The computed sums are stored only if something outside the group reads them.
        if !p.store_given {
            self.home[self.func.insts[p.given].result] = None;
        }
        let mut loads = Loads::default();
        let mut marks = Vec::new();
        let mut pending: Option<Band> = None;
        for b in &blocks {
            let pn = b.parts();
            let reps = b.reps;
            let wbuf = weights
                .iter()
                .find(|(k, _)| *k == (b.m, b.c0, b.cn))
                .map(|(_, w)| *w)
                .ok_or("a depthwise block without weights")?;
            for &(r0, nr, q0, nq) in &bands {
                let load_at = self.out.layout.len();
                // The band's padded input: rows `pr0..pr0 + prn`, columns `pq0..pq0 + pqn`
                // of the padded input, for each rep (`rep` elements apart).
                let (pr0, prn) = (r0 * g.sh, (nr - 1) * g.sh + (g.kh - 1) * g.dh + 1);
                let (pq0, pqn) = (q0 * g.sw, (nq - 1) * g.sw + (g.kw - 1) * g.dw + 1);
                let rep = prn * pqn;
                let tile = self.out.sbuf(xdt, pn, (reps * rep) as u32);
                // Inside the input: tile rows `y0..y1` and columns `x0..x1`.
                let clip = |lo: u64, n: u64, pad: u64, len: u64| {
                    let a = pad.saturating_sub(lo).min(n);
                    let b = (pad + len).saturating_sub(lo).min(n);
                    (a, b.max(a))
                };
                let (y0, y1) = clip(pr0, prn, g.ph, g.h);
                let (x0, x1) = clip(pq0, pqn, g.pw, g.w);
                let mut sets: Vec<(u64, Vec<(u64, i64)>)> = Vec::new();
                let r = (reps, rep as i64);
                if y0 > 0 {
                    sets.push((0, vec![r, (y0 * pqn, 1)]));
                }
                if y1 < prn {
                    sets.push((y1 * pqn, vec![r, ((prn - y1) * pqn, 1)]));
                }
                if y1 > y0 && x0 > 0 {
                    sets.push((y0 * pqn, vec![r, (y1 - y0, pqn as i64), (x0, 1)]));
                }
                if y1 > y0 && x1 < pqn {
                    sets.push((y0 * pqn + x1, vec![r, (y1 - y0, pqn as i64), (pqn - x1, 1)]));
                }
                for (off, dims) in sets {
                    let n: u64 = dims.iter().map(|d| d.0).product();
                    let engine = loads.pick(n as f64, false);
                    let ap = tile_ap(xdt, 0, pn, off, &dims, false);
                    self.out.push(
                        Op::Memset {
                            out: ap,
                            value: isa::Imm::new(0.0),
                        },
                        engine,
                        &[tile],
                        span,
                    );
                }
                if y1 > y0 && x1 > x0 {
                    let (iy, ix) = (pr0 + y0 - g.ph, pq0 + x0 - g.pw);
                    let (ny, nx) = (y1 - y0, x1 - x0);
                    let hbm_off = xv.offset
                        + b.n0 as i64 * sn
                        + b.c0 as i64 * sc
                        + iy as i64 * sy
                        + ix as i64 * sx;
                    // Rows of under 64 bytes would each cost a DMA 64 (docs/machine.md):
                    // such a band is loaded densely and copied into the padded tile by
                    // one instruction instead.
                    let stage = nx * es < 64 && (ny > 1 || reps > 1);
                    let (dst, tile_off, pitch, rep_stride) = if stage {
                        let buf = self.out.sbuf(xdt, pn, (reps * ny * nx) as u32);
                        (buf, 0, nx, ny * nx)
                    } else {
                        (tile, y0 * pqn + x0, pqn, rep)
                    };
                    self.dw_load(
                        &DwLoad {
                            tile: dst,
                            hbm: xv.buf,
                            dtype: xdt,
                            pn,
                            tile_off,
                            hbm_off,
                            parts: [(b.m, sn), (b.cn, sc)],
                            dims: vec![
                                (reps, rep_stride as i64, b.m as i64 * sn),
                                (ny, pitch as i64, sy),
                                (nx, 1, sx),
                            ],
                        },
                        span,
                    );
                    if stage {
                        let engine = loads.pick((reps * ny * nx) as f64, false);
                        self.out.push(
                            Op::TensorCopy {
                                out: tile_ap(
                                    xdt,
                                    0,
                                    pn,
                                    y0 * pqn + x0,
                                    &[(reps, rep as i64), (ny, pqn as i64), (nx, 1)],
                                    false,
                                ),
                                src: tile_ap(
                                    xdt,
                                    0,
                                    pn,
                                    0,
                                    &[(reps, (ny * nx) as i64), (ny, nx as i64), (nx, 1)],
                                    false,
                                ),
                            },
                            engine,
                            &[tile, dst],
                            span,
                        );
                    }
                }
                let work_at = self.out.layout.len();
                marks.push((load_at, work_at));
                // The products, tap after tap (each tap's a range of its own, so that
                // engines writing different taps never wait for each other), every rep in
                // one instruction.
                let npos = nr * nq;
                let prod = self.out.sbuf(Dtype::F32, pn, (reps * npos * taps) as u32);
                for i in 0..g.kh {
                    for j in 0..g.kw {
                        let t = i * g.kw + j;
                        let out = tile_ap(
                            Dtype::F32,
                            0,
                            pn,
                            t * reps * npos,
                            &[(reps * npos, 1)],
                            false,
                        );
                        let src = tile_ap(
                            xdt,
                            0,
                            pn,
                            i * g.dh * pqn + j * g.dw,
                            &[
                                (reps, rep as i64),
                                (nr, (g.sh * pqn) as i64),
                                (nq, g.sw as i64),
                            ],
                            false,
                        );
                        let scale = ScalarArg::Ap(tile_ap(Dtype::F32, 0, pn, t, &[(1, 1)], false));
                        let engine = loads.pick((reps * npos) as f64, true);
                        let op = if engine == Engine::Scalar {
                            Op::Activate {
                                out,
                                src,
                                func: ActFunc::Identity,
                                scale,
                                bias: ScalarArg::imm(0.0),
                                accum: None,
                            }
                        } else {
                            Op::TensorScalar {
                                out,
                                src,
                                op0: AluOp::Mul,
                                s0: scale,
                                op1: AluOp::Bypass,
                                s1: ScalarArg::imm(0.0),
                            }
                        };
                        self.out.push(op, engine, &[prod, tile, wbuf], span);
                    }
                }
                // The sums and the epilogue of the band before: each engine's stream then
                // holds this band's products ahead of the work that waits for the last
                // band's, so no engine idles behind a reduction.
                let col = r0 * g.ow + q0 - p.col0;
                let band = Band {
                    prod,
                    pn,
                    npos,
                    reps,
                    block: *b,
                    col,
                };
                if let Some(prev) = pending.replace(band) {
                    self.dw_finish(p, prev, &mut loads)?;
                }
            }
        }
        if let Some(prev) = pending.take() {
            self.dw_finish(p, prev, &mut loads)?;
        }
        self.pool_pipeline(&marks, 4);
        Ok(())
    }

    /// A band's sums (from its products) and the group's epilogue on them.
    fn dw_finish(&mut self, p: &DwPlan, b: Band, loads: &mut Loads) -> Result<(), String> {
        let span = self.func.spans[p.given];
        let taps = p.geom.taps();
        let (prod, pn) = (b.prod, b.pn);
        let all = b.reps * b.npos;
        // Each position's taps summed in tap order, `+ 0`: positions split between
        // Vector and GpSimd so that both would finish together (GpSimd's pass costs
        // four of Vector's).
        let acc = self.out.sbuf(Dtype::F32, pn, all as u32);
        let nf = (all * taps) as f64;
        let f = ((loads.vg.vector - loads.vg.gpsimd + nf) / (5.0 * nf)).clamp(0.0, 1.0);
        let on_gpsimd = ((all as f64 * f) as u64).min(all);
        let parts = [
            (0, all - on_gpsimd, Engine::Vector),
            (all - on_gpsimd, on_gpsimd, Engine::GpSimd),
        ];
        for (k0, kn, engine) in parts {
            if kn == 0 {
                continue;
            }
            let n = (kn * taps) as f64;
            match engine {
                Engine::Vector => loads.vg.vector += 64.0 + n,
                _ => loads.vg.gpsimd += 64.0 + 4.0 * n,
            }
            self.out.push(
                Op::TensorReduceScalar {
                    op: ReduceOp::Add,
                    out: tile_ap(Dtype::F32, 0, pn, k0, &[(kn, 1)], false),
                    src: tile_ap(Dtype::F32, 0, pn, k0, &[(kn, 1), (taps, all as i64)], true),
                    op0: AluOp::Add,
                    s0: ScalarArg::imm(0.0),
                    op1: AluOp::Bypass,
                    s1: ScalarArg::imm(0.0),
                },
                engine,
                &[acc, prod],
                span,
            );
        }
        // The epilogue on each rep's sums (its images' rows), booked on the engines the
        // block evaluator gives its instructions, at docs/machine.md's costs.
        let cfg = runtime::MachineConfig::default();
        let blk = b.block;
        for r in 0..b.reps {
            let at = self.out.layout.len();
            let given = Tile::plain(
                acc,
                Mem::Sbuf,
                Dtype::F32,
                pn,
                b.npos as u32,
                (r * b.npos) as u32,
            );
            let graph = self.graph_of(&p.sub, Some((p.given, given)), false)?;
            self.eval_block(
                &graph,
                &Block {
                    axes: vec![
                        AxisUse::Part {
                            start: blk.n0 + r * blk.m,
                            size: blk.m,
                        },
                        AxisUse::Part {
                            start: blk.c0,
                            size: blk.cn,
                        },
                        AxisUse::Col {
                            start: b.col,
                            size: b.npos,
                        },
                    ],
                    pack: None,
                },
            );
            for &ti in &self.out.layout[at..] {
                let inst = &self.out.insts[ti];
                let cost = runtime::compute_cost(&inst.op, inst.engine, &cfg) as f64;
                match inst.engine {
                    Engine::Vector => loads.vg.vector += cost,
                    Engine::GpSimd => loads.vg.gpsimd += cost,
                    Engine::Scalar => loads.scalar += cost,
                    _ => {}
                }
            }
        }
        Ok(())
    }

    /// DMAs of a band's input load: partitions `(image, channel)` (`parts`: sizes and HBM
    /// strides, images outer), free dims `(size, tile stride, HBM stride)`. Pieces for up
    /// to 16 queues of at least 16 KiB each: quarters of 32 partitions where a quarter's
    /// rows are evenly spaced in HBM, then pieces of the outermost free dim longer than 1
    /// unless that would cut rows into runs of under 512 bytes (each run costs at least
    /// 64 bytes).
    fn dw_load(&mut self, x: &DwLoad, span: Span) {
        let esize = x.dtype.size() as u64;
        let per_part: u64 = x.dims.iter().map(|d| d.0).product();
        let want = (per_part * x.pn as u64 * esize / (16 * 1024)).clamp(1, 16);
        let [(m, sn), (cn, sc)] = x.parts;
        let quarters = want >= 4 && x.pn > 32 && (m == 1 || cn.is_multiple_of(32));
        let qsize = if quarters { 32 } else { x.pn };
        let si = x.dims.iter().position(|d| d.0 > 1).unwrap_or(0);
        let outer = x.dims.get(si).map_or(1, |d| d.0);
        let inner = x.dims.len().saturating_sub(1);
        let most = if si == inner {
            (outer * esize / 512).max(1)
        } else {
            outer
        };
        let splits = (want / x.pn.div_ceil(qsize) as u64).clamp(1, most.min(outer));
        let per = outer.div_ceil(splits);
        let mut p0 = 0;
        while p0 < x.pn {
            let pn = qsize.min(x.pn - p0);
            let (i, c) = (p0 as u64 / cn, p0 as u64 % cn);
            let parts = if quarters {
                vec![(pn as u64, sc)]
            } else {
                vec![(m, sn), (cn, sc)]
            };
            let base = x.hbm_off + i as i64 * sn + c as i64 * sc;
            let mut o0 = 0;
            while o0 < outer {
                let on = per.min(outer - o0);
                let (dims, tile_off, hbm_off) = piece(&x.dims, si, o0, on, x.tile_off, base);
                let tdims: Vec<(u64, i64)> = dims.iter().map(|d| (d.0, d.1)).collect();
                let tile = DmaAp::Tile(tile_ap(x.dtype, p0, pn, tile_off, &tdims, false));
                let mut hdims = parts.clone();
                hdims.extend(dims.iter().map(|d| (d.0, d.2)));
                let hbm = DmaAp::Hbm(hbm_ap(x.dtype, hbm_off, &hdims));
                self.out.push(
                    Op::Dma {
                        dst: tile,
                        src: hbm,
                    },
                    Engine::Dma(0),
                    &[x.tile, x.hbm],
                    span,
                );
                o0 += on;
            }
            p0 += pn;
        }
    }
}

/// A band's input load (`Tiler::dw_load`).
struct DwLoad {
    tile: Buf,
    hbm: Buf,
    dtype: Dtype,
    pn: u32,
    tile_off: u64,
    hbm_off: i64,
    parts: [(u64, i64); 2],
    dims: Vec<(u64, i64, i64)>,
}

/// A band whose products are computed and whose sums and epilogue are not yet emitted.
struct Band {
    prod: Buf,
    pn: u32,
    /// Positions per rep.
    npos: u64,
    reps: u64,
    block: DwBlock,
    /// The band's first column of the group's space.
    col: u64,
}

/// A block of the lowering: channels `c0..c0 + cn` of `m` images on partitions (image
/// major), and `reps` such groups side by side on the free axis: rep `r`'s partition
/// `(i, c)` holds image `n0 + r m + i`, channel `c0 + c`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct DwBlock {
    n0: u64,
    m: u64,
    c0: u64,
    cn: u64,
    reps: u64,
}

impl DwBlock {
    fn parts(&self) -> u32 {
        (self.m * self.cn) as u32
    }
}

/// Channel chunks `(c0, cn, m)` of `c` channels in `n` images, `m` images sharing a
/// chunk's partitions: chunks of 128 channels, and the rest either as one chunk or cut
/// into powers of two, whichever needs fewer blocks of partitions (96 channels of 8
/// images: 8 blocks of 96 partitions, or 64 + 32 channels with 2 and 4 images a block, 6
/// blocks of 128). The engines' work per block is the same whatever its partitions.
fn channel_chunks(c: u64, n: u64) -> Vec<(u64, u64, u64)> {
    let imgs = |cn: u64| n.min((128 / cn).max(1));
    let blocks = |cn: u64| n.div_ceil(imgs(cn));
    let mut out = Vec::new();
    let mut c0 = 0;
    while c - c0 >= 128 {
        out.push((c0, 128, imgs(128)));
        c0 += 128;
    }
    let rem = c - c0;
    if rem > 0 {
        let mut split = Vec::new();
        let mut r = rem;
        while r > 0 {
            let k = if r >= 8 {
                1 << (63 - r.leading_zeros())
            } else {
                r
            };
            split.push(k);
            r -= k;
        }
        let cost = |v: &[u64]| v.iter().map(|&k| blocks(k)).sum::<u64>();
        let pieces = if cost(&split) < blocks(rem) {
            split
        } else {
            vec![rem]
        };
        for k in pieces {
            out.push((c0, k, imgs(k)));
            c0 += k;
        }
    }
    out
}

/// The blocks of a depthwise convolution of `c` channels in `n` images: each chunk's
/// blocks of `m` images, consecutive full ones packed `reps` to a block, as many as
/// `fits(reps)` allows (whole images on the free axis, so one instruction pays its fixed
/// cost for all of them) while the convolution keeps `MIN_PIECES` pieces for pipelining.
fn dw_blocks(n: u64, c: u64, fits: impl Fn(u64) -> bool) -> Vec<DwBlock> {
    let chunks = channel_chunks(c, n);
    let full = |m: u64| n / m;
    let pieces = |reps: u64| -> u64 {
        chunks
            .iter()
            .map(|&(_, _, m)| full(m).div_ceil(reps) + u64::from(!n.is_multiple_of(m)))
            .sum()
    };
    let most = chunks.iter().map(|&(_, _, m)| full(m)).max().unwrap_or(1);
    let mut reps = 1;
    while reps < most && fits(reps + 1) && pieces(reps + 1) >= MIN_PIECES {
        reps += 1;
    }
    let mut out = Vec::new();
    for (c0, cn, m) in chunks {
        let f = full(m);
        // Equal groups: 8 blocks by at most 3 are 3 + 3 + 2, not 3 + 3 + 2 by luck.
        let groups = f.div_ceil(reps.max(1)).max(1);
        let mut done = 0;
        for gi in 0..groups {
            let k = (f - done).div_ceil(groups - gi);
            if k == 0 {
                continue;
            }
            out.push(DwBlock {
                n0: done * m,
                m,
                c0,
                cn,
                reps: k,
            });
            done += k;
        }
        if !n.is_multiple_of(m) {
            out.push(DwBlock {
                n0: f * m,
                m: n % m,
                c0,
                cn,
                reps: 1,
            });
        }
    }
    out
}

impl DwPlan {
    /// The padded input columns one band of whole output rows reads.
    fn wp(&self, g: &Geom) -> u64 {
        (g.ow - 1) * g.sw + (g.kw - 1) * g.dw + 1
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn channel_chunks_fill_the_partitions() {
        // 144 channels of 8 images: 128, then 16 channels with all 8 images.
        assert_eq!(channel_chunks(144, 8), vec![(0, 128, 1), (128, 16, 8)]);
        // 96 of 8: 64 + 32 (6 blocks of 128 partitions), not 96 alone (8 blocks of 96).
        assert_eq!(channel_chunks(96, 8), vec![(0, 64, 2), (64, 32, 4)]);
        // 7 channels of 3 images: one block of 21 partitions, not 4 + 2 + 1.
        assert_eq!(channel_chunks(7, 3), vec![(0, 7, 3)]);
        // 129 of 1: a chunk of 128 and one of a single channel.
        assert_eq!(channel_chunks(129, 1), vec![(0, 128, 1), (128, 1, 1)]);
        let c = channel_chunks(960, 8);
        assert_eq!(c.len(), 8);
        assert_eq!(c[7], (896, 64, 2));
    }

    #[test]
    fn blocks_cover_every_image_and_channel_once() {
        for (n, c, most) in [
            (8, 960, 9),
            (3, 960, 9),
            (8, 144, 2),
            (5, 40, 1),
            (1, 4096, 4),
        ] {
            let blocks = dw_blocks(n, c, |r| r <= most);
            let mut seen = vec![0u32; (n * c) as usize];
            for b in &blocks {
                assert!(b.parts() <= 128 && b.reps >= 1 && b.reps <= most.max(1));
                for r in 0..b.reps {
                    for i in 0..b.m {
                        for ch in 0..b.cn {
                            seen[((b.n0 + r * b.m + i) * c + b.c0 + ch) as usize] += 1;
                        }
                    }
                }
            }
            assert!(seen.iter().all(|&k| k == 1), "n={n} c={c}: {blocks:?}");
        }
        // The 7x7 layer: each chunk's 8 images in one block of 8 reps.
        let b = dw_blocks(8, 960, |r| r <= 9);
        assert_eq!(b.len(), 8);
        assert!(b[..7].iter().all(|b| b.reps == 8 && b.m == 1));
        assert_eq!((b[7].m, b[7].reps), (2, 4));
    }
}
