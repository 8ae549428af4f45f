//! Matmul tiling for the Tensor engine.
//!
//! `C[.., M, N] = A[.., M, K] @ B[.., K, N]` runs as `psum[M, N] += stationary[K, M]^T @
//! moving[K, N]` with K in chunks of 128 (accumulated in one PSUM bank), M in chunks of 128
//! (the stationary side, and the output's partitions) and N in chunks of 512 (one bank of
//! f32; 256 or 128 when K is so long that 512 columns of all of K would not fit the B
//! budget). Both operands are needed with K on partitions:
//! - an operand whose other axis is contiguous in HBM (B as usual, or A transposed) is
//!   loaded straight into that layout;
//! - an operand whose K axis is contiguous (A as usual, or B given transposed) is loaded
//!   with its other axis on partitions, in contiguous rows, and transposed on the Tensor
//!   engine (a matmul against the identity), which is far cheaper than a DMA that moves
//!   one element per descriptor.
//!
//! The B columns of an N block are loaded once and stay in SBUF while every M chunk
//! streams past them (when they fit; else they are loaded per tile). The rest of the group
//! is evaluated on each PSUM tile by the block evaluator.

use super::block::{AxisUse, BArg, BGraph, BNode, BOp, Block, Tile};
use super::view::{hbm_ap, HView};
use super::Tiler;
use crate::frontend::typed::Span;
use crate::ir::{BinaryOp, Function, Inst, TOp, Value, ValueDef};
use crate::passes::fusion::{Group, Grouping, Root};
use crate::passes::layout::{Layout, Load};
use crate::tile::{Buf, TInst};
use cranelift_entity::SecondaryMap;
use isa::{Dim, DmaAp, Dtype, Engine, Mem, Op, TileAp};
use smallvec::smallvec;
use std::rc::Rc;

/// Bytes per partition the transposed A of one M block may take.
const A_BUDGET: u64 = 64 * 1024;
/// The most M chunks that run together, K step by K step, while an N block's B tiles
/// arrive (see `first_group`).
const MAX_FIRST_GROUP: u64 = 4;
/// K steps by which a group's staged A (see `kmajor_step`) runs ahead of its matmuls.
const STAGE_AHEAD: u64 = 1;
/// M chunks that share each streamed B tile when K is too long for B to stay in SBUF:
/// one PSUM bank each, with room left for two steps' transposes.
const LONG_K_GROUP: u64 = 4;
/// Bytes per partition one streamed B tile (all of K, one N block's columns) may take.
const B_TILE_BUDGET: u64 = 40 * 1024;

/// A 2-D slice of an operand: `rows x cols` with element strides, in an HBM view.
#[derive(Clone, Debug)]
pub(super) struct Operand2d {
    pub view: HView,
    /// Element offset of (0, 0) for the current batch.
    pub offset: i64,
    /// Stride of the K axis.
    pub k_stride: i64,
    /// Stride of the other axis (M for A, N for B).
    pub x_stride: i64,
    /// False when the layout pass chose a direct load; then no transposes are made even
    /// when K is contiguous.
    pub pe: bool,
    /// The elementwise group that computes this operand on its way into SBUF, if any
    /// (then `view` is a home that nothing writes, used only for its strides).
    pub prologue: Option<Rc<Prologue>>,
}

/// One chunk of 128 rows in this many of a prologue operand is computed on GpSimd
/// (`Tiler::prologue_rows`).
const PROLOGUE_GPSIMD_EVERY: u64 = 4;

/// A prologue operand's row tiles for an N block, each with its first column in the block.
type Rows = Vec<(u64, Tile)>;

/// A prologue operand's work done ahead of its N blocks (`Tiler::b_tile`): the rows of
/// one block (each with its first column in the block), and the K-step tiles of another.
#[derive(Default)]
struct Ahead {
    rows: Option<((u64, u64), Rows)>,
    tiles: Option<((u64, u64), Vec<Tile>)>,
}

/// An elementwise row group (a cast, a dequantisation `(w as f32 * scale) as bf16`) whose
/// value only one matmul operand reads: instead of storing the value to HBM and loading it
/// back, the operand's loads evaluate the group on the block of rows and columns they need
/// (`Tiler::prologue_tile`), so only the group's inputs cross the DMA queues. The group's
/// space is the value's shape, rank 2 and row-major, so operand element `(x, k)` is the
/// space's row `x` and column `k` when K is contiguous, else row `k` and column `x`.
#[derive(Debug)]
pub(super) struct Prologue {
    /// The group's block graph; its one store is the value's (never emitted).
    pub graph: BGraph,
    /// The node of the value.
    pub node: usize,
}

impl Operand2d {
    /// An operand slice with the layout pass's `planned` load (none: follow the strides).
    pub fn new(
        view: HView,
        offset: i64,
        k_stride: i64,
        x_stride: i64,
        planned: Option<Load>,
    ) -> Self {
        Operand2d {
            view,
            offset,
            k_stride,
            x_stride,
            pe: planned != Some(Load::Direct),
            prologue: None,
        }
    }

    /// Whether a DMA loads this operand straight into K-on-partitions tiles: unless K is
    /// contiguous and the other axis is not (rows are then loaded and transposed, as a DMA
    /// that moved one element per descriptor would be far slower), and the plan allows it.
    fn direct(&self) -> bool {
        !self.pe || self.x_stride == 1 || self.k_stride != 1
    }
}

impl Tiler<'_> {
    pub(super) fn lower_matmul(&mut self, g: &Group, inst: Inst) -> Result<(), String> {
        let func = self.func;
        let data = &func.insts[inst];
        let span = func.spans[inst];
        // The layout pass's plan: swapped, compute C^T = B^T @ A^T (see `layout.rs`).
        let plan = self.layout.matmul(inst);
        let swapped = plan.is_some_and(|p| p.swapped);
        let mut out_shape = func.ty(data.result).shape.clone();
        let (a, b) = if swapped {
            let rank = out_shape.len();
            out_shape.swap(rank - 2, rank - 1);
            (
                swap_last(&self.home_of(data.args[1])?),
                swap_last(&self.home_of(data.args[0])?),
            )
        } else {
            (self.home_of(data.args[0])?, self.home_of(data.args[1])?)
        };
        let rank = out_shape.len();
        let (m, n) = (out_shape[rank - 2], out_shape[rank - 1]);
        let k = a.shape[a.shape.len() - 1];
        let batch = &out_shape[..rank - 2];
        let a_str = a.broadcast_strides(&[batch, &[m, k]].concat());
        let b_str = b.broadcast_strides(&[batch, &[k, n]].concat());
        let batches: u64 = batch.iter().product();
        let kt = k.div_ceil(128);
        let (asize, bsize) = (a.dtype.size() as u64, b.dtype.size() as u64);
        // M block: as many rows as keep their transposed A (all of K) within the budget,
        // so B streams past them once per block.
        let mb = ((A_BUDGET / (kt * asize).max(1)) / 128 * 128).clamp(128, m.div_ceil(128) * 128);
        // N blocks of 512 columns (one PSUM bank of f32), or narrower when K is so long
        // that all of K for 512 columns would not fit the B budget: a matmul costs its
        // moving columns either way, so 256 columns lose nothing while B still streams
        // once per M block (K = 8192 in bf16: 256 columns, 32 KB per partition).
        let nbw = [512u64, 256, 128]
            .into_iter()
            .find(|w| kt * w * bsize <= B_TILE_BUDGET);
        let b_tile_fits = nbw.is_some();
        let nbw = nbw.unwrap_or(512);
        let rate = match a.dtype {
            Dtype::F32 => 0.5,
            d if d.is_fp8() => 4.0,
            _ => 2.0,
        };
        let nblocks: Vec<(u64, u64)> = (0..n.div_ceil(nbw))
            .map(|j| (j * nbw, nbw.min(n - j * nbw)))
            .collect();
        // Engine costs behind GpSimd's share of A's transposes (see `gpsimd_share`): a
        // matmul against the first N block, a transpose on the PE array, one on GpSimd.
        let costs = ShareCosts {
            matmul: ((n.min(nbw) as f64 / rate).max(32.0)) as u64,
            pe: ((128.0 / rate).max(32.0)) as u64,
            gpsimd: 64 + 4 * 128,
        };
        for bi in 0..batches {
            // Batch index and the operands' offsets for it.
            let mut rem = bi;
            let mut idx = vec![0u64; batch.len()];
            for d in (0..batch.len()).rev() {
                idx[d] = rem % batch[d];
                rem /= batch[d];
            }
            let off = |strides: &[i64], base: i64| {
                base + idx
                    .iter()
                    .zip(strides)
                    .map(|(&i, &s)| i as i64 * s)
                    .sum::<i64>()
            };
            let ao = Operand2d::new(
                a.clone(),
                off(&a_str, a.offset),
                a_str[rank - 1],
                a_str[rank - 2],
                plan.map(|p| p.stationary),
            );
            let bo = Operand2d::new(
                b.clone(),
                off(&b_str, b.offset),
                b_str[rank - 2],
                b_str[rank - 1],
                plan.map(|p| p.moving),
            );
            let (mut ao, mut bo) = (ao, bo);
            let (a_arg, b_arg) = if swapped {
                (data.args[1], data.args[0])
            } else {
                (data.args[0], data.args[1])
            };
            ao.prologue = self.prologue_for(a_arg, &ao)?;
            bo.prologue = self.prologue_for(b_arg, &bo)?;
            ao.pe |= ao.prologue.is_some();
            bo.pe |= bo.prologue.is_some();
            let fixed: Vec<AxisUse> = idx.iter().map(|&i| AxisUse::Fixed(i)).collect();
            if let Some(segs) = self.interleave_segments(&ao, &bo, m, k) {
                let a_bytes = m * k * asize / 128;
                if m <= LONG_K_GROUP * 128 && a_bytes <= A_BUDGET {
                    self.interleaved_matmul(
                        g,
                        inst,
                        (&ao, &bo),
                        (m, k, n),
                        &segs,
                        &fixed,
                        swapped,
                    )?;
                } else {
                    let epilogue = (g, inst, fixed.as_slice(), swapped);
                    self.interleaved_tiles(epilogue, (&ao, &bo), (m, k, n), &segs)?;
                }
                continue;
            }
            if b_tile_fits {
                let mut mb0 = 0;
                while mb0 < m {
                    let mbs = mb.min(m - mb0);
                    // Transposed A for every M chunk of the block and every K chunk,
                    // prepared just before its first use, so the Tensor engine starts
                    // multiplying the first chunk while later chunks are still loading.
                    let mut chunks: Vec<(u64, u64)> = Vec::new();
                    let mut m0 = mb0;
                    while m0 < mb0 + mbs {
                        let msz = 128.min(mb0 + mbs - m0);
                        chunks.push((m0, msz));
                        m0 += msz;
                    }
                    // Transposed A is prepared half an M chunk ahead of its use: the
                    // Tensor engine transposes chunk i+1 in the middle of chunk i's
                    // multiplies, so the multiplies never wait for the copies out of PSUM.
                    // B tiles load right before their first matmul, so each DMA queue's
                    // order follows first use.
                    let mut at: Vec<Option<Vec<Tile>>> = vec![None; chunks.len()];
                    let group0 =
                        first_group(kt, nblocks[0].1, rate, asize, bsize).min(chunks.len());
                    let gpsimd =
                        gpsimd_share(kt, &costs, group0 as u64, (chunks.len() - group0) as u64);
                    // A prologue operand's rows for the next N block, computed ahead.
                    let mut ahead = Ahead::default();
                    for (si, &nb) in nblocks.iter().enumerate() {
                        // B tiles per K chunk, loaded at first use.
                        let mut bk: Vec<Option<Tile>> = vec![None; kt as usize];
                        // The first chunks run together, K step by K step: each B tile
                        // arrives once and feeds `first_group` matmuls in a row, so the
                        // Tensor engine is not starved while the block's B columns stream
                        // in (one chunk alone would need them twice as fast as DMA
                        // delivers). Later chunks find every B tile loaded and run alone.
                        let mut c0 = 0;
                        while c0 < chunks.len() {
                            let group = if c0 == 0 {
                                first_group(kt, nb.1, rate, asize, bsize).min(chunks.len())
                            } else {
                                1
                            };
                            let members: Vec<usize> = (c0..c0 + group).collect();
                            let next = c0 + group;
                            // The kernel's last two chunks: the last one's stores are the
                            // tail, and the one's before it are still moving then.
                            let last_block = self.last_group
                                && bi + 1 == batches
                                && mb0 + mbs >= m
                                && si + 1 == nblocks.len();
                            let last_chunk = last_block && next >= chunks.len();
                            let near_end = last_block && next + 1 >= chunks.len();
                            // A group's chunks whose A is still to be transposed load it K
                            // step by K step, each step's rows next to the step's B tiles:
                            // loaded whole, all of the group's A would sit in the DMA
                            // queues ahead of the first B tile.
                            let staged: Vec<usize> = if members.len() > 1 && !ao.direct() {
                                members
                                    .iter()
                                    .copied()
                                    .filter(|&ci| at[ci].is_none())
                                    .collect()
                            } else {
                                Vec::new()
                            };
                            let mut staged_tiles: Vec<Vec<Tile>> = vec![Vec::new(); staged.len()];
                            for &ci in &members {
                                if at[ci].is_none() && !staged.contains(&ci) {
                                    let (m0, msz) = chunks[ci];
                                    at[ci] =
                                        Some(self.prepare_kmajor(&ao, k, m0, msz, gpsimd, span));
                                }
                            }
                            // The next chunk's transposes go halfway through the first N
                            // block's matmuls: their copies out of PSUM finish while the
                            // rest runs, and its loads queue behind these chunks' first B
                            // tiles.
                            let xs: Vec<(u64, u64)> = staged.iter().map(|&ci| chunks[ci]).collect();
                            // The kernel's last output block goes in two column pieces:
                            // the first's stores overlap the second's matmuls, and after
                            // the last matmul only a narrow piece is copied and stored.
                            let pieces = if last_chunk && staged.is_empty() {
                                tail_pieces(nb, rate)
                            } else {
                                vec![nb]
                            };
                            for (pi, &piece) in pieces.iter().enumerate() {
                                let psums: Vec<Tile> = members
                                    .iter()
                                    .map(|&ci| self.psum_tile(Dtype::F32, chunks[ci].1, piece.1))
                                    .collect();
                                for t in 0..kt {
                                    // The next chunk's transposes go halfway through these
                                    // matmuls: their copies out of PSUM finish while the
                                    // second half runs, and its loads queue behind these
                                    // chunks' first B tiles.
                                    if t == kt / 2 && next < chunks.len() && at[next].is_none() {
                                        let (m1, msz1) = chunks[next];
                                        at[next] = Some(
                                            self.prepare_kmajor(&ao, k, m1, msz1, gpsimd, span),
                                        );
                                    }
                                    // Staged A: this step's (if not yet there), then the
                                    // step's B tile, then, after the first chunk's matmul,
                                    // STAGE_AHEAD steps ahead: the DMA queues carry this
                                    // step's data first, and the first matmul does not wait
                                    // for the next step's transposes. The very first step
                                    // loads the first chunk's slice before the B tile and
                                    // the others' after the first matmul, which needs only
                                    // that slice and B (bench, 1000 x 1500 x 700: 43,260
                                    // cycles with all slices first, 42,747 like this).
                                    let split_first = t == 0 && xs.len() > 1;
                                    let stage_now = if split_first { &xs[..1] } else { &xs[..] };
                                    self.stage_steps(
                                        &ao,
                                        k,
                                        stage_now,
                                        &mut staged_tiles,
                                        t + 1,
                                        span,
                                    );
                                    let b = self.b_tile(
                                        &bo,
                                        (&mut bk, &mut ahead),
                                        t,
                                        k,
                                        (&nblocks, si),
                                        span,
                                    );
                                    let mv = Tile {
                                        cols: piece.1 as u32,
                                        col_offset: b.col_offset + (piece.0 - nb.0) as u32,
                                        ..b
                                    };
                                    let upto = (t + 1 + STAGE_AHEAD).min(kt);
                                    for (i, (&ci, &psum)) in members.iter().zip(&psums).enumerate()
                                    {
                                        if i == 1 {
                                            if split_first {
                                                self.stage_steps(
                                                    &ao,
                                                    k,
                                                    &xs[1..],
                                                    &mut staged_tiles[1..],
                                                    1,
                                                    span,
                                                );
                                            }
                                            self.stage_steps(
                                                &ao,
                                                k,
                                                &xs,
                                                &mut staged_tiles,
                                                upto,
                                                span,
                                            );
                                        }
                                        let own = staged
                                            .iter()
                                            .position(|&s| s == ci)
                                            .map(|i| staged_tiles[i].get(t as usize));
                                        let st = match own.unwrap_or_else(|| {
                                            at[ci].as_ref().and_then(|v| v.get(t as usize))
                                        }) {
                                            Some(tile) => *tile,
                                            None => return Err("transposed A missing".into()),
                                        };
                                        self.matmul(psum, st, mv, t > 0, span);
                                    }
                                }
                                self.last_stores = near_end;
                                let start = self.out.layout.len();
                                // The kernel's very last piece is evaluated in two
                                // column halves, so its copies out of PSUM run side by
                                // side on two engines (the `engines` pass alternates
                                // adjacent copies of one bank) and its stores form one
                                // burst over all queues: 42,843 -> 42,715 cycles for
                                // 1000 x 1500 x 700. Not when a half's output rows would
                                // be shorter than the 64 bytes a DMA run costs anyway.
                                let halves = if pieces.len() > 1
                                    && pi + 1 == pieces.len()
                                    && piece.1 / 2 >= MIN_HALF_COLS
                                {
                                    let h = piece.1 / 2;
                                    vec![(piece.0, h), (piece.0 + h, piece.1 - h)]
                                } else {
                                    vec![piece]
                                };
                                for (&ci, &psum) in members.iter().zip(&psums) {
                                    for &part in &halves {
                                        let acc = Tile {
                                            cols: part.1 as u32,
                                            col_offset: psum.col_offset + (part.0 - piece.0) as u32,
                                            ..psum
                                        };
                                        self.epilogue(
                                            g, inst, acc, &fixed, chunks[ci], part, swapped,
                                        )?;
                                    }
                                }
                                // A group's stores go after all its epilogues' compute, as
                                // one burst: the `schedule` pass delays bursts, and four
                                // bursts ending at once would come back before the loads of
                                // the chunks after the group and hold them in the DMA
                                // queues.
                                let tail = self.out.layout.split_off(start);
                                let (stores, rest): (Vec<_>, Vec<_>) =
                                    tail.into_iter().partition(|&i| {
                                        crate::passes::schedule::is_store(&self.out.insts[i].op)
                                    });
                                self.out.layout.extend(rest);
                                self.out.layout.extend(stores);
                            }
                            for (&ci, tiles) in staged.iter().zip(staged_tiles) {
                                at[ci] = Some(tiles);
                            }
                            self.last_stores = false;
                            c0 = next;
                        }
                    }
                    mb0 += mbs;
                }
            } else {
                // K too long to keep B columns (or a block's A^T) in SBUF: both operands
                // stream K step by K step. Up to LONG_K_GROUP M chunks share each step's B
                // tile (each accumulating in a PSUM bank of its own) and each N block
                // shares a step's A^T, so B streams once per group of chunks instead of
                // once per chunk (bench shape M = 512, K = 32,768, N = 2,048: 2,639,952
                // cycles, 0.397, when every 128 x 512 output tile streamed both). A step's
                // loads and transposes are emitted before the previous step's matmuls, so
                // they arrive while those run.
                let mut g0 = 0;
                while g0 < m {
                    let chunks: Vec<(u64, u64)> = (0..LONG_K_GROUP)
                        .map(|i| g0 + i * 128)
                        .take_while(|&m0| m0 < m)
                        .map(|m0| (m0, 128.min(m - m0)))
                        .collect();
                    let mut n0 = 0;
                    while n0 < n {
                        let nsz = 512.min(n - n0);
                        let psums = self.psum_tiles(&chunks, nsz);
                        let gp = long_k_gpsimd(chunks.len() as u64, nsz, rate);
                        let step = |this: &mut Self, t: u64| {
                            let k0 = t * 128;
                            let ksz = 128.min(k - k0);
                            let mv = this.load_kmajor(&bo, k0, ksz, n0, nsz, span);
                            let st: Vec<Tile> = if ao.direct() {
                                chunks
                                    .iter()
                                    .map(|&(m0, msz)| this.load_kmajor(&ao, k0, ksz, m0, msz, span))
                                    .collect()
                            } else {
                                this.kmajor_step(&ao, k, t, &chunks, gp, span)
                            };
                            (st, mv)
                        };
                        let mut cur = (kt > 0).then(|| step(self, 0));
                        for t in 0..kt {
                            let next = (t + 1 < kt).then(|| step(self, t + 1));
                            let (st, mv) = cur.take().ok_or("a matmul step not loaded")?;
                            for (&psum, &s) in psums.iter().zip(&st) {
                                self.matmul(psum, s, mv, t > 0, span);
                            }
                            cur = next;
                        }
                        if kt == 0 {
                            return Err("a matmul with K = 0".into());
                        }
                        for (&chunk, &psum) in chunks.iter().zip(&psums) {
                            self.epilogue(g, inst, psum, &fixed, chunk, (n0, nsz), swapped)?;
                        }
                        n0 += nsz;
                    }
                    g0 += LONG_K_GROUP * 128;
                }
            }
        }
        Ok(())
    }

    /// One new f32 PSUM tile of `nsz` columns for each M chunk `(m0, msz)`.
    fn psum_tiles(&mut self, chunks: &[(u64, u64)], nsz: u64) -> Vec<Tile> {
        chunks
            .iter()
            .map(|&(_, msz)| self.psum_tile(Dtype::F32, msz, nsz))
            .collect()
    }

    /// A new PSUM tile of `parts` x `cols` elements of `dtype`.
    pub(super) fn psum_tile(&mut self, dtype: Dtype, parts: u64, cols: u64) -> Tile {
        let buf = self.out.psum(dtype, parts as u32, cols as u32);
        Tile::plain(buf, Mem::Psum, dtype, parts as u32, cols as u32, 0)
    }

    pub(super) fn matmul(
        &mut self,
        psum: Tile,
        stationary: Tile,
        moving: Tile,
        accumulate: bool,
        span: Span,
    ) {
        self.out.push(
            Op::Matmul {
                out: psum.ap(),
                stationary: stationary.ap(),
                moving: moving.ap(),
                accumulate,
            },
            Engine::Tensor,
            &[psum.buf, stationary.buf, moving.buf],
            span,
        );
    }

    /// The rest of the group on one PSUM tile (block: the batch index, `msz` rows from
    /// `m0` on partitions, `nsz` columns from `n0`; of C^T when `swapped`).
    #[allow(clippy::too_many_arguments)]
    pub(super) fn epilogue(
        &mut self,
        g: &Group,
        inst: Inst,
        acc: Tile,
        fixed: &[AxisUse],
        (m0, msz): (u64, u64),
        (n0, nsz): (u64, u64),
        swapped: bool,
    ) -> Result<(), String> {
        let graph = self.graph_of(g, Some((inst, acc)), swapped)?;
        let mut axes = fixed.to_vec();
        axes.push(AxisUse::Part {
            start: m0,
            size: msz,
        });
        axes.push(AxisUse::Col {
            start: n0,
            size: nsz,
        });
        self.eval_block(&graph, &Block { axes, pack: None });
        Ok(())
    }

    /// Loads a 2-D HBM pattern (`rows` on partitions, `cols` on the free axis, as (size,
    /// stride) pairs from element `base`) into `tile`, in pieces spread over DMA queues:
    /// quarters of 32 partitions, and column chunks of at least 512 bytes.
    pub(super) fn dma_2d(
        &mut self,
        tile: Tile,
        view: &HView,
        base: i64,
        rows: (u64, i64),
        cols: (u64, i64),
        span: Span,
    ) {
        let esize = view.dtype.size() as u64;
        let bytes = rows.0 * cols.0 * esize;
        // The kernel's first load (nothing emitted before it) is what every engine waits
        // for: it goes in pieces for all 16 queues, with runs down to 64 bytes (the least a
        // run costs).
        let first = self.out.layout.is_empty();
        let want = if first {
            64
        } else {
            (bytes / (8 * 1024)).clamp(1, 64)
        };
        let min_run = if first { 64 } else { 256 };
        // Quarters of 32 partitions (where a tile of at most 32 partitions may start).
        let psplit = if want >= 4 && rows.0 > 32 {
            rows.0.div_ceil(32)
        } else {
            1
        };
        let csplit = (want / psplit).min(cols.0 * esize / min_run).max(1);
        let pn = if psplit > 1 { 32 } else { rows.0 };
        let chunk = cols.0.div_ceil(csplit);
        // Column chunk outermost: the partition quarters of the first columns (what the
        // first transposes need) go to different queues and arrive first.
        self.dma_pieces(
            tile,
            view,
            base,
            (rows, cols, (1, 1)),
            (psplit, pn, chunk),
            span,
        );
    }

    /// Loads `op[0..k, x0..x0+xsz]` (`xsz` <= 128) as one SBUF tile per K chunk of 128,
    /// with K on partitions. When K is contiguous in HBM the rows are loaded once and
    /// transposed on the Tensor engine eight K chunks into one PSUM bank at a time, and
    /// each bank is copied out by one instruction, alternately on Vector and Scalar: one
    /// copy per transpose would cost the copying engine three times what the transpose
    /// costs the Tensor engine, and the Tensor engine would wait for PSUM banks.
    ///
    /// The last `on_gpsimd` K chunks are transposed by GpSimd's `partition_transpose`
    /// instead (SBUF to SBUF, no PSUM bank, no copy), taking them off the Tensor engine
    /// when it is the bottleneck; the last chunks, because the matmuls need them last.
    pub(super) fn prepare_kmajor(
        &mut self,
        op: &Operand2d,
        k: u64,
        x0: u64,
        xsz: u64,
        on_gpsimd: u64,
        span: Span,
    ) -> Vec<Tile> {
        let kt = k.div_ceil(128);
        if op.direct() || xsz > 128 {
            return (0..kt)
                .map(|t| {
                    let k0 = t * 128;
                    self.load_kmajor(op, k0, 128.min(k - k0), x0, xsz, span)
                })
                .collect();
        }
        let dtype = op.view.dtype;
        let rows = self.load_rows(op, (x0, xsz), (0, k), span);
        // One SBUF buffer holds every K chunk's transposed tile, side by side.
        let full = k / 128;
        let out = self.sbuf_tile(dtype, 128.min(k) as u32, (kt * xsz) as u32);
        let mut tiles = Vec::with_capacity(kt as usize);
        let per_bank = (2048 / (xsz * dtype.size() as u64)).clamp(1, 8);
        // The chunks from `on_pe` on go to GpSimd.
        let on_pe = kt - on_gpsimd.min(kt);
        let mut t = 0;
        while t < on_pe {
            let ksz = 128.min(k - t * 128);
            // Chunks of the same height share a bank (the last chunk may be shorter).
            let group = if t < full { per_bank.min(full - t) } else { 1 }.min(on_pe - t);
            let bank = self.psum_tile(dtype, ksz, group * xsz);
            for j in 0..group {
                let src = rows.slice(0, xsz as u32, ((t + j) * 128) as u32, ksz as u32);
                let dst = bank.slice(0, ksz as u32, (j * xsz) as u32, xsz as u32);
                self.out.push(
                    Op::Transpose { out: dst, src },
                    Engine::Tensor,
                    &[bank.buf, rows.buf],
                    span,
                );
            }
            let split = group / 2 * xsz;
            self.copy_bank(out, t * xsz, bank, ksz, group * xsz, split, span);
            for j in 0..group {
                tiles.push(Tile {
                    parts: ksz as u32,
                    cols: xsz as u32,
                    col_offset: ((t + j) * xsz) as u32,
                    ..out
                });
            }
            t += group;
        }
        while t < kt {
            let ksz = 128.min(k - t * 128);
            let src = rows.slice(0, xsz as u32, (t * 128) as u32, ksz as u32);
            let dst = out.slice(0, ksz as u32, (t * xsz) as u32, xsz as u32);
            self.out.push(
                Op::PartitionTranspose { out: dst, src },
                Engine::GpSimd,
                &[out.buf, rows.buf],
                span,
            );
            tiles.push(Tile {
                parts: ksz as u32,
                cols: xsz as u32,
                col_offset: (t * xsz) as u32,
                ..out
            });
            t += 1;
        }
        tiles
    }

    /// B's tile for K chunk `t` of N block `si` of `nblocks`, loaded at its first use.
    ///
    /// For a prologue operand (`Prologue`) whose K is contiguous, the prologue is
    /// evaluated on the block's rows over all of K (each instruction covers whole rows: its
    /// fixed cost once per 128 columns, not once per K step), and the rows are transposed
    /// K step by K step. The work runs ahead of the matmuls in a pipeline (`Ahead`): with
    /// block `j`'s tiles the first use also emits block `j + 2`'s prologue and block
    /// `j + 1`'s transposes and copies, so the engines that compute the prologue and copy
    /// PSUM out are not held behind block `j`'s epilogue (which waits for its last matmul)
    /// while the Tensor engine waits for them.
    fn b_tile(
        &mut self,
        bo: &Operand2d,
        (tiles, ahead): (&mut [Option<Tile>], &mut Ahead),
        t: u64,
        k: u64,
        (nblocks, si): (&[(u64, u64)], usize),
        span: Span,
    ) -> Tile {
        if let Some(tile) = tiles[t as usize] {
            return tile;
        }
        let (n0, nsz) = nblocks[si];
        if let (Some(p), false) = (&bo.prologue, bo.direct()) {
            let p = p.clone();
            let dtype = bo.view.dtype;
            let cur = match ahead.tiles.take() {
                Some((at, v)) if at == (n0, nsz) => v,
                _ => {
                    let rows = self.rows_ahead(&p, dtype, ahead, (n0, nsz), k, span);
                    self.transpose_rows(dtype, &rows, (n0, nsz), k, span)
                }
            };
            for (slot, tile) in tiles.iter_mut().zip(cur) {
                *slot = Some(tile);
            }
            // The next block's copies out of PSUM before the prologue of the one after it:
            // the copies run beside the next block's transposes, the prologue beside this
            // block's matmuls (which the epilogue, next on those engines, waits for).
            if let Some(&next) = nblocks.get(si + 1) {
                let rows = self.rows_ahead(&p, dtype, ahead, next, k, span);
                ahead.tiles = Some((next, self.transpose_rows(dtype, &rows, next, k, span)));
                if let Some(&after) = nblocks.get(si + 2) {
                    ahead.rows = Some((after, self.prologue_rows(&p, dtype, after, k, span)));
                }
            }
            if let Some(tile) = tiles[t as usize] {
                return tile;
            }
        }
        let k0 = t * 128;
        let tile = self.load_kmajor(bo, k0, 128.min(k - k0), n0, nsz, span);
        tiles[t as usize] = Some(tile);
        tile
    }

    /// Extends the staged tiles of row blocks `xs` (one list per block) by K steps until
    /// they hold `upto` steps.
    fn stage_steps(
        &mut self,
        op: &Operand2d,
        k: u64,
        xs: &[(u64, u64)],
        staged: &mut [Vec<Tile>],
        upto: u64,
        span: Span,
    ) {
        while let Some(done) = staged.first().map(|v| v.len() as u64) {
            if done >= upto {
                break;
            }
            // GpSimd, otherwise idle while the first group runs, transposes the last
            // block of some steps (`gp_step`).
            let gp = usize::from(gp_step(done) && xs.len() > 1);
            let step = self.kmajor_step(op, k, done, xs, gp, span);
            for (tiles, tile) in staged.iter_mut().zip(step) {
                tiles.push(tile);
            }
        }
    }

    /// One K chunk (`t`) of several row blocks `xs` (each `(x0, xsz)`, `xsz` <= 128) of
    /// an operand whose K axis is contiguous: each block's rows of the chunk are loaded
    /// and transposed on the Tensor engine side by side into one PSUM bank, copied out by
    /// one instruction. Returns one tile per block, K on partitions.
    ///
    /// The last `gp` blocks go to GpSimd's `partition_transpose` instead (SBUF to SBUF),
    /// each into a tile of its own.
    fn kmajor_step(
        &mut self,
        op: &Operand2d,
        k: u64,
        t: u64,
        xs: &[(u64, u64)],
        gp: usize,
        span: Span,
    ) -> Vec<Tile> {
        let dtype = op.view.dtype;
        let k0 = t * 128;
        let ksz = 128.min(k - k0);
        let per_bank = 2048 / dtype.size() as u64;
        let on_pe = xs.len() - gp.min(xs.len());
        let mut tiles = Vec::with_capacity(xs.len());
        let mut i = 0;
        while i < on_pe {
            // As many blocks as one bank holds.
            let mut cols = xs[i].1;
            let mut j = i + 1;
            while j < on_pe && cols + xs[j].1 <= per_bank {
                cols += xs[j].1;
                j += 1;
            }
            let bank = self.psum_tile(dtype, ksz, cols);
            let out = self.sbuf_tile(dtype, ksz as u32, cols as u32);
            let mut at = 0;
            for &(x0, xsz) in &xs[i..j] {
                let rows = self.load_rows(op, (x0, xsz), (k0, ksz), span);
                self.out.push(
                    Op::Transpose {
                        out: bank.slice(0, ksz as u32, at as u32, xsz as u32),
                        src: rows.ap(),
                    },
                    Engine::Tensor,
                    &[bank.buf, rows.buf],
                    span,
                );
                tiles.push(Tile {
                    parts: ksz as u32,
                    cols: xsz as u32,
                    col_offset: at as u32,
                    ..out
                });
                at += xsz;
            }
            let blocks = j - i;
            let split: u64 = xs[i..i + blocks / 2].iter().map(|x| x.1).sum();
            self.copy_bank(out, 0, bank, ksz, cols, split, span);
            i = j;
        }
        for &(x0, xsz) in &xs[on_pe..] {
            let rows = self.load_rows(op, (x0, xsz), (k0, ksz), span);
            let out = self.sbuf_tile(dtype, ksz as u32, xsz as u32);
            self.out.push(
                Op::PartitionTranspose {
                    out: out.ap(),
                    src: rows.ap(),
                },
                Engine::GpSimd,
                &[out.buf, rows.buf],
                span,
            );
            tiles.push(out);
        }
        tiles
    }

    /// Copies the first `cols` columns of PSUM `bank` (`parts` partitions) to `out` from
    /// its column `at`, in two copies split at column `split` when that is inside: the
    /// `engines` pass puts them on Vector and Scalar side by side, and the matmuls that
    /// read the first part wait for half the copy.
    #[allow(clippy::too_many_arguments)]
    fn copy_bank(
        &mut self,
        out: Tile,
        at: u64,
        bank: Tile,
        parts: u64,
        cols: u64,
        split: u64,
        span: Span,
    ) {
        let parts = parts as u32;
        let pieces = if split > 0 && split < cols {
            vec![(0, split), (split, cols - split)]
        } else {
            vec![(0, cols)]
        };
        for (c0, cn) in pieces {
            self.copy_out(
                out.slice(0, parts, (at + c0) as u32, cn as u32),
                bank.slice(0, parts, c0 as u32, cn as u32),
                &[out.buf, bank.buf],
                span,
            );
        }
    }

    /// Loads `op[k0..k0+ksz, x0..x0+xsz]` as it lies when K is contiguous: `xsz` rows of
    /// the other axis on partitions, `ksz` elements of K along each (to be transposed).
    fn load_rows(
        &mut self,
        op: &Operand2d,
        (x0, xsz): (u64, u64),
        (k0, ksz): (u64, u64),
        span: Span,
    ) -> Tile {
        if let Some(p) = &op.prologue {
            // K is contiguous: the space's rows are the operand's other axis.
            return self.prologue_tile(p, op.view.dtype, (x0, xsz), (k0, ksz), span);
        }
        let rows = self.sbuf_tile(op.view.dtype, xsz as u32, ksz as u32);
        let base = op.offset + x0 as i64 * op.x_stride + k0 as i64 * op.k_stride;
        self.dma_2d(
            rows,
            &op.view,
            base,
            (xsz, op.x_stride),
            (ksz, op.k_stride),
            span,
        );
        rows
    }

    /// Loads `op[k0..k0+ksz, x0..x0+xsz]` into a new SBUF tile with K on partitions.
    pub(super) fn load_kmajor(
        &mut self,
        op: &Operand2d,
        k0: u64,
        ksz: u64,
        x0: u64,
        xsz: u64,
        span: Span,
    ) -> Tile {
        let dtype = op.view.dtype;
        if let (Some(p), true) = (&op.prologue, op.direct()) {
            // The other axis is contiguous: the space's rows are K.
            return self.prologue_tile(p, dtype, (k0, ksz), (x0, xsz), span);
        }
        let out = self.sbuf_tile(dtype, ksz as u32, xsz as u32);
        let base = op.offset + k0 as i64 * op.k_stride + x0 as i64 * op.x_stride;
        if op.direct() || (ksz == 1 && op.prologue.is_none()) {
            self.dma_2d(
                out,
                &op.view,
                base,
                (ksz, op.k_stride),
                (xsz, op.x_stride),
                span,
            );
            return out;
        }
        // K is contiguous: load rows of the other axis and transpose them, 128 at a time,
        // side by side into PSUM banks (as many as a 2 KiB bank holds), and copy each bank
        // out with one instruction: a copy per transpose would cost the copying engine its
        // fixed overhead every 128 columns.
        let per_bank = (2048 / (128 * dtype.size() as u64)).max(1) * 128;
        let mut b0 = 0;
        while b0 < xsz {
            let bsz = per_bank.min(xsz - b0);
            let bank = self.psum_tile(dtype, ksz, bsz);
            let mut c = b0;
            while c < b0 + bsz {
                let xc = 128.min(b0 + bsz - c);
                let rows = self.load_rows(op, (x0 + c, xc), (k0, ksz), span);
                self.out.push(
                    Op::Transpose {
                        out: bank.slice(0, ksz as u32, (c - b0) as u32, xc as u32),
                        src: rows.ap(),
                    },
                    Engine::Tensor,
                    &[bank.buf, rows.buf],
                    span,
                );
                c += xc;
            }
            let dst = TileAp {
                mem: Mem::Sbuf,
                dtype,
                partition: 0,
                partitions: ksz as u8,
                offset: b0 as u32 * dtype.size(),
                dims: smallvec![Dim {
                    size: bsz as u32,
                    stride: 1
                }],
            };
            self.copy_out(dst, bank.ap(), &[out.buf, bank.buf], span);
            b0 += bsz;
        }
        out
    }
}

impl Tiler<'_> {
    /// The prologue of a matmul operand read from `arg` (`operand_prologues`), with its
    /// block graph, when the operand's view is the group's value as the prologue expects:
    /// rank 2, row-major, from its first element.
    fn prologue_for(&self, arg: Value, op: &Operand2d) -> Result<Option<Rc<Prologue>>, String> {
        let Some((_, g)) = self.prologues.iter().find(|(v, _)| *v == arg) else {
            return Ok(None);
        };
        let cols = g.space[1] as i64;
        let row_major =
            (op.k_stride == 1 && op.x_stride == cols) || (op.x_stride == 1 && op.k_stride == cols);
        if op.offset != 0 || !row_major {
            return Err(format!(
                "the matmul operand {arg}, computed on its way into SBUF, is not read row-major"
            ));
        }
        let mut graph = self.graph_of(g, None, false)?;
        graph.stores.retain(|st| st.dest.buf == op.view.buf);
        let [st] = graph.stores.as_slice() else {
            return Err(format!("the prologue of {arg} does not store one value"));
        };
        let node = st.node;
        fold_exact_casts(&mut graph);
        if matches!(graph.nodes[node].op, BOp::Folded | BOp::Accum(_)) {
            return Err(format!("the prologue of {arg} computes nothing"));
        }
        Ok(Some(Rc::new(Prologue { graph, node })))
    }

    /// A prologue's rows for N block `nb`: computed ahead, or now.
    fn rows_ahead(
        &mut self,
        p: &Prologue,
        dtype: Dtype,
        ahead: &mut Ahead,
        nb: (u64, u64),
        k: u64,
        span: Span,
    ) -> Vec<(u64, Tile)> {
        match ahead.rows.take() {
            Some((at, rows)) if at == nb => rows,
            _ => self.prologue_rows(p, dtype, nb, k, span),
        }
    }

    /// B's tiles of N block `(n0, nsz)`, one per K step, from its rows (each with its first
    /// column in the block, all of K along the free axis): the rows of a step transposed
    /// side by side into one PSUM bank and copied out in two halves.
    fn transpose_rows(
        &mut self,
        dtype: Dtype,
        rows: &[(u64, Tile)],
        (_, nsz): (u64, u64),
        k: u64,
        span: Span,
    ) -> Vec<Tile> {
        let mut out_tiles = Vec::new();
        let mut k0 = 0;
        while k0 < k {
            let ksz = 128.min(k - k0);
            let bank = self.psum_tile(dtype, ksz, nsz);
            for &(c, r) in rows {
                self.out.push(
                    Op::Transpose {
                        out: bank.slice(0, ksz as u32, c as u32, r.parts),
                        src: r.slice(0, r.parts, k0 as u32, ksz as u32),
                    },
                    Engine::Tensor,
                    &[bank.buf, r.buf],
                    span,
                );
            }
            let out = self.sbuf_tile(dtype, ksz as u32, nsz as u32);
            let split = if nsz >= 256 { nsz / 2 / 128 * 128 } else { 0 };
            self.copy_bank(out, 0, bank, ksz, nsz, split, span);
            out_tiles.push(out);
            k0 += ksz;
        }
        out_tiles
    }

    /// A prologue's rows `n0..n0 + nsz` over all of K, in tiles of 128 rows (each with its
    /// first row's offset in the block).
    fn prologue_rows(
        &mut self,
        p: &Prologue,
        dtype: Dtype,
        (n0, nsz): (u64, u64),
        k: u64,
        span: Span,
    ) -> Vec<(u64, Tile)> {
        let mut rows = Vec::new();
        let mut c = 0;
        while c < nsz {
            let csz = 128.min(nsz - c);
            let start = self.out.layout.len();
            rows.push((c, self.prologue_tile(p, dtype, (n0 + c, csz), (0, k), span)));
            // GpSimd, otherwise idle, computes one chunk in PROLOGUE_GPSIMD_EVERY: Vector
            // and Scalar also copy every transposed step out of PSUM, which costs them
            // about what the prologue does, so the three engines share the work
            // (FP8 dequantisation 8 x 4096 x 14336: 713,672 cycles without it).
            if (n0 + c) / 128 % PROLOGUE_GPSIMD_EVERY == PROLOGUE_GPSIMD_EVERY - 1 {
                self.move_to_gpsimd(start);
            }
            c += csz;
        }
        rows
    }

    /// Moves the Vector instructions from layout position `start` on that GpSimd can run
    /// (elementwise work and copies in SBUF) to GpSimd, which computes them alike.
    fn move_to_gpsimd(&mut self, start: usize) {
        for &i in &self.out.layout[start..] {
            let inst = &mut self.out.insts[i];
            let mut sbuf_only = true;
            inst.op.visit_aps(&mut |ap, _| match ap {
                isa::ApRef::Tile(t) => sbuf_only &= t.mem == Mem::Sbuf,
                isa::ApRef::Hbm(_) => sbuf_only = false,
            });
            let movable = inst
                .op
                .opcode()
                .engines()
                .contains(isa::EngineClass::GPSIMD);
            if inst.engine == Engine::Vector && movable && sbuf_only {
                inst.engine = Engine::GpSimd;
            }
        }
    }

    /// Evaluates a prologue's group on rows `r0..r0 + rn` (on partitions) and columns
    /// `c0..c0 + cn` of its space; returns the value's SBUF tile in `dtype`.
    fn prologue_tile(
        &mut self,
        p: &Prologue,
        dtype: Dtype,
        (r0, rn): (u64, u64),
        (c0, cn): (u64, u64),
        span: Span,
    ) -> Tile {
        let block = Block {
            axes: vec![
                AxisUse::Part {
                    start: r0,
                    size: rn,
                },
                AxisUse::Col {
                    start: c0,
                    size: cn,
                },
            ],
            pack: None,
        };
        self.begin_group();
        // `prologue_for` checked that the node computes a tile.
        let tile = self.eval_block_value(&p.graph, &block, p.node);
        match tile {
            Some(t) if t.mem == Mem::Sbuf && t.dtype == dtype => t,
            Some(t) => self.copy_to_sbuf(t, dtype, span),
            None => unreachable!("a prologue's value node computes a tile"),
        }
    }
}

/// Removes the casts of a prologue graph that an instruction does for free, exactly:
/// a cast of a float to f32 (exact) read by a computing node, which reads the narrower
/// tile itself (engines decode every input to f32); and a cast of a computing node's f32
/// result used nowhere else, which that node does by writing the cast's dtype (engines
/// compute in f32 and round once to their output's dtype, as the cast rounds the f32
/// value). `(w as f32 * scale) as bf16` becomes one multiply from the FP8 tile into bf16.
fn fold_exact_casts(graph: &mut BGraph) {
    let n = graph.nodes.len();
    let computes = |op: &BOp| matches!(op, BOp::Unary(_) | BOp::Binary(_) | BOp::Activate { .. });
    let float = |d: Dtype| d != Dtype::I32 && d.is_float();
    // `uses_of` also counts a kept node twice more, which only keeps it from being folded
    // away.
    let mut uses = super::block::uses_of(graph);
    // Widening casts read through.
    for i in 0..n {
        if !computes(&graph.nodes[i].op) {
            continue;
        }
        for ai in 0..graph.nodes[i].args.len() {
            let BArg::Node(j) = graph.nodes[i].args[ai] else {
                continue;
            };
            let cast = &graph.nodes[j];
            let BOp::Cast = cast.op else {
                continue;
            };
            let src_dtype = match &cast.args[0] {
                BArg::Load(v, _) => v.dtype,
                BArg::Node(k) => graph.nodes[*k].dtype,
                _ => continue,
            };
            if cast.dtype != Dtype::F32 || !float(src_dtype) || cast.fit != graph.nodes[i].fit {
                continue;
            }
            let src = cast.args[0].clone();
            if let BArg::Node(k) = src {
                uses[k] += 1;
            }
            graph.nodes[i].args[ai] = src;
            uses[j] -= 1;
            if uses[j] == 0 {
                graph.nodes[j].op = BOp::Folded;
                graph.nodes[j].args.clear();
            }
        }
    }
    // Narrowing casts written by their operand.
    for i in 0..n {
        let BOp::Cast = graph.nodes[i].op else {
            continue;
        };
        let Some(BArg::Node(j)) = graph.nodes[i].args.first().cloned() else {
            continue;
        };
        let inner = &graph.nodes[j];
        // One instruction each (a function the Scalar engine computes in several steps
        // would round its intermediate steps to the new dtype).
        let single = matches!(
            inner.op,
            BOp::Activate { .. }
                | BOp::Binary(
                    BinaryOp::Add
                        | BinaryOp::Sub
                        | BinaryOp::Mul
                        | BinaryOp::Maximum
                        | BinaryOp::Minimum
                )
        );
        if !single
            || uses[j] != 1
            || inner.dtype != Dtype::F32
            || !float(graph.nodes[i].dtype)
            || inner.fit != graph.nodes[i].fit
            || inner.accum.is_some()
            || inner.width != graph.nodes[i].width
        {
            continue;
        }
        let folded = BNode {
            op: BOp::Folded,
            args: Vec::new(),
            ..inner.clone()
        };
        let mut moved = std::mem::replace(&mut graph.nodes[j], folded);
        moved.dtype = graph.nodes[i].dtype;
        moved.span = graph.nodes[i].span;
        graph.nodes[i] = moved;
    }
}

/// The elementwise row groups computed as matmul operands on their way into SBUF
/// (`Prologue`), each with the matmul argument it feeds: a row group of unary, binary,
/// `where` and cast instructions over a rank-2 space, whose only value used outside it is
/// its last one, read only by one rank-2 matmul, directly or through a `transpose`, and
/// kept in HBM row-major (not as its transpose). Exact: the group computes the same values
/// in the same dtypes, only on other blocks. The tile pass does not lower these groups.
pub(super) fn operand_prologues(
    func: &Function,
    grouping: &Grouping,
    layout: &Layout,
) -> Vec<(Value, usize)> {
    let mut users: SecondaryMap<Value, u32> = SecondaryMap::new();
    for &inst in &func.layout {
        for &a in &func.insts[inst].args {
            users[a] += 1;
        }
    }
    for &r in &func.results {
        users[r] += 2;
    }
    let def = |v: Value| match func.values[v].def {
        ValueDef::Inst(i) => Some(i),
        ValueDef::Param(_) => None,
    };
    let mut out = Vec::new();
    for g in &grouping.groups {
        let Root::Matmul(m) = g.root else {
            continue;
        };
        let args = &func.insts[m].args;
        if func.ty(func.insts[m].result).shape.len() != 2 || args[0] == args[1] {
            continue;
        }
        for &arg in args.iter() {
            if users[arg] != 1 {
                continue;
            }
            let mut r = arg;
            if let Some(t) = def(arg) {
                if let TOp::Transpose(perm) = &func.insts[t].op {
                    if perm.as_slice() != [1, 0] {
                        continue;
                    }
                    r = func.insts[t].args[0];
                    if users[r] != 1 {
                        continue;
                    }
                }
            }
            let Some(p) = def(r) else {
                continue;
            };
            let Some(pg) = grouping.group_of[p] else {
                continue;
            };
            let pgroup = &grouping.groups[pg as usize];
            let shape = &func.ty(r).shape;
            let elementwise = pgroup.insts.iter().all(|&i| {
                matches!(
                    func.insts[i].op,
                    TOp::Unary(_) | TOp::Binary(_) | TOp::Where | TOp::Cast
                )
            });
            // Every other value of the group stays inside it.
            let private = pgroup.insts.iter().all(|&i| {
                let v = func.insts[i].result;
                v == r
                    || (!func.results.contains(&v)
                        && func.layout.iter().all(|&u| {
                            !func.insts[u].args.contains(&v) || pgroup.insts.contains(&u)
                        }))
            });
            if pgroup.root == Root::Rows
                && shape.len() == 2
                && pgroup.space == *shape
                && elementwise
                && private
                && !layout.transposed[r]
                // An axis of one element may carry any stride in the operand's view, so
                // `prologue_for` could not tell that it is read row-major (the differential
                // tests found `[1, 230]` and `[1, 4]` operands refused there, an internal
                // error); such operands are a few bytes and load as they are.
                && shape.iter().all(|&d| d > 1)
            {
                out.push((arg, pg as usize));
            }
        }
    }
    out
}

/// How many M chunks run together while an N block of `nsz` columns streams its `kt` B
/// tiles in: per K step the DMA brings one B tile (128 x `nsz`) and a 128 x 128 slice of
/// A per chunk, at 256 B/cycle; each chunk gives the Tensor engine `nsz / rate` cycles of
/// matmul and 64 of transpose. The group is the smallest (at most four) whose Tensor work
/// per step exceeds the DMA's time by a fifth, so the Tensor engine is not starved while
/// B arrives (bench, 1000 x 1500 x 700: 512 columns, two chunks 46,602 cycles, three
/// 44,489, four 43,822). With one or two K steps B is in after about one DMA latency
/// and a larger group only delays the first results: at most two (the 384 x 256 x 640
/// MLP of `tests/layout_engines.rs`: 21,603 cycles with two, 22,499 with four).
fn first_group(kt: u64, nsz: u64, rate: f64, asize: u64, bsize: u64) -> usize {
    let b_bytes = (128 * nsz * bsize) as f64;
    let a_bytes = (128 * 128 * asize) as f64;
    let tensor = (nsz as f64 / rate).max(32.0) + 64.0;
    let most = if kt <= 2 { 2 } else { MAX_FIRST_GROUP };
    (1..=most)
        .find(|&g| g as f64 * tensor >= 1.2 * (b_bytes + g as f64 * a_bytes) / 256.0)
        .unwrap_or(most) as usize
}

/// The narrowest column half of the kernel's last piece worth its own copy and store:
/// 16 elements make the 64 bytes a DMA run costs at least, for outputs of up to 4 bytes.
const MIN_HALF_COLS: u64 = 16;

/// The column pieces of the kernel's last output block `(n0, nsz)`: all but the last
/// `r` columns, then those, where `r` is the narrowest width whose matmul still costs no
/// more than its columns (32 cycles at `rate` columns per cycle), so the split adds no
/// Tensor time. One piece when the block is too narrow to split.
fn tail_pieces((n0, nsz): (u64, u64), rate: f64) -> Vec<(u64, u64)> {
    let r = (32.0 * rate) as u64;
    if nsz < 2 * r {
        return vec![(n0, nsz)];
    }
    vec![(n0, nsz - r), (n0 + nsz - r, r)]
}

/// How many of a streamed K step's `chunks` transposes GpSimd takes (576 cycles each, no
/// copy) when K is too long for B to stay in SBUF: as many as it finishes within the
/// Tensor engine's time for the step (the matmuls against `nsz` columns at `rate` columns
/// a cycle, and the transposes left to it). Bench shape M = 512, K = 32,768, N = 2,048
/// (four chunks): none 1,334,416 cycles, one 1,270,160, two 1,205,904.
fn long_k_gpsimd(chunks: u64, nsz: u64, rate: f64) -> usize {
    let matmul = (nsz as f64 / rate).max(32.0);
    let pe = (128.0 / rate).max(32.0);
    (0..=chunks)
        .rev()
        .find(|&gp| (gp * 576) as f64 <= chunks as f64 * matmul + (chunks - gp) as f64 * pe)
        .unwrap_or(0) as usize
}

/// Whether GpSimd transposes a slice of K step `t` of a staged group (see `stage_steps`):
/// every other step from the second. By then the DMA runs ahead of the Tensor engine by
/// more than GpSimd's 576 cycles a transpose, and a step (about 1,200 cycles for four
/// chunks) leaves GpSimd time for one slice, not two (bench, 1000 x 1500 x 700: every
/// other step 42,943 cycles, every third 43,055, every step 44,028, two slices every
/// third step 42,943 but 2048^3 0.3% slower).
fn gp_step(t: u64) -> bool {
    t >= 2 && t.is_multiple_of(2)
}

/// The cycles behind `gpsimd_share`.
struct ShareCosts {
    /// One matmul of a chunk against the first N block.
    matmul: u64,
    /// One transpose on the PE array.
    pe: u64,
    /// One transpose on GpSimd (64 + 4 max(P, F) for 128 x 128).
    gpsimd: u64,
}

/// How many of each later chunk's `kt` transposes GpSimd takes (the chunks after the
/// first `group`, `post` of them). While the Tensor engine runs a chunk's `kt` matmuls
/// and the PE array's share of the next chunk's transposes, GpSimd does its `g` of them;
/// when GpSimd is the slower it falls behind by `d(g) = g gp - (kt mm + (kt - g) pe)` a
/// chunk. It starts ahead: the first later chunk is prepared halfway through the group,
/// and GpSimd is idle for that second half but for the group's own slices. The share is
/// the largest `g` whose lag over the later chunks stays within that head start (bench:
/// 1000 x 1500 x 700 takes 8 of 12, 2048^3 9 of 16; one more costs each of them 0.5-1%,
/// one fewer 0.4%).
fn gpsimd_share(kt: u64, c: &ShareCosts, group: u64, post: u64) -> u64 {
    let (kt_f, mm, pe, gp) = (kt as f64, c.matmul as f64, c.pe as f64, c.gpsimd as f64);
    let head = if group > 1 {
        let slices = (kt / 2..kt).filter(|&t| gp_step(t)).count() as f64;
        (kt - kt / 2) as f64 * group as f64 * (mm + pe) - slices * (gp + pe)
    } else {
        0.0
    };
    let post = post.max(1) as f64;
    let lag = |g: f64| g * gp - (kt_f * mm + (kt_f - g) * pe);
    (0..kt)
        .take_while(|&g| post * lag((g + 1) as f64) <= head)
        .count() as u64
}

/// The view with its last two axes exchanged (a free transpose).
fn swap_last(view: &HView) -> HView {
    let rank = view.shape.len();
    let mut perm: Vec<usize> = (0..rank).collect();
    if rank >= 2 {
        perm.swap(rank - 2, rank - 1);
    }
    view.permute(&perm)
}

/// One K segment of an interleaved matmul (`Tiler::interleaved_matmul`): K indices
/// `k0..k0 + parts * run`, partition `p` holding the `run` consecutive indices from
/// `k0 + p * run`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct KSegment {
    pub k0: u64,
    pub parts: u64,
    pub run: u64,
}

/// M chunks (one PSUM bank each) of an `interleaved_tiles` output tile: every bank, so
/// each streamed B tile feeds as many chunks as PSUM holds.
const TILE_CHUNKS: usize = 8;

/// Bytes per partition that `interleaved_tiles` loads ahead of the matmuls at hand.
const LOAD_AHEAD: u64 = 48 * 1024;

/// One load of `interleaved_tiles`: a segment's B tile for an N block, or a chunk's A
/// slice of a segment.
#[derive(Clone, Copy, Debug)]
enum Load2 {
    B { ni: usize, si: usize },
    A { gi: usize, ci: usize, si: usize },
}

/// Bytes per partition of weight tiles that an interleaved matmul loads ahead, among the
/// instructions since the previous one (`Tiler::hoist_loads`).
const HOIST_BUDGET: u64 = 96 * 1024;

/// Bytes of the shortest DMA run that costs no more than its bytes (machine.md: every
/// contiguous run costs at least 64).
const MIN_RUN_BYTES: u64 = 64;

/// The K segments of an interleaved matmul over `k` with runs of `run` elements: as many
/// full segments of 128 partitions as fit, then the rest in whole runs on fewer
/// partitions, then what is left (fewer than `run` indices) one index per partition.
pub(super) fn k_segments(k: u64, run: u64) -> Vec<KSegment> {
    let mut segs = Vec::new();
    let mut k0 = 0;
    while k - k0 >= 128 * run {
        segs.push(KSegment {
            k0,
            parts: 128,
            run,
        });
        k0 += 128 * run;
    }
    let parts = (k - k0) / run;
    if parts > 0 {
        segs.push(KSegment { k0, parts, run });
        k0 += parts * run;
    }
    if k0 < k {
        segs.push(KSegment {
            k0,
            parts: k - k0,
            run: 1,
        });
    }
    segs
}

/// The segments `segs` with a partial one (fewer than 128 partitions) whose indices
/// fill all 128 partitions in whole runs spread over them with a shorter run: a matmul
/// costs its moving columns whatever the partitions it uses, so 2,048 indices as 128 x 16
/// take half the matmuls of 64 x 32, for runs of 32 bytes that the DMA charges as 64 (a
/// fair trade where the Tensor engine, not the DMA, is the bottleneck).
fn spread_partial(segs: &[KSegment]) -> Vec<KSegment> {
    segs.iter()
        .map(|&s| {
            let idx = s.parts * s.run;
            if s.parts < 128 && s.run > 1 && idx.is_multiple_of(128) {
                KSegment {
                    k0: s.k0,
                    parts: 128,
                    run: idx / 128,
                }
            } else {
                s
            }
        })
        .collect()
}

impl Tiler<'_> {
    /// The K segments of the interleaved schedule when it applies to this matmul, else
    /// `None`. It applies under the default dtype policy only (it sums K in another
    /// order, which docs/numerics.md allows there and strict does not), to a B whose K
    /// axis is contiguous in HBM (which the other schedules transpose on the PE array and
    /// copy out of PSUM block by block), when neither operand is computed on its way in,
    /// K holds at least one full segment (so most matmuls use all 128 partitions) and M is
    /// not empty. A small M whose A fits its SBUF budget runs `interleaved_matmul`, any
    /// other `interleaved_tiles`. For one M chunk whose A fits its budget half a segment
    /// is enough (an FP8 weight with K = 4,096: 64 partitions of 64-byte runs): each
    /// matmul then contracts 64 partitions, so the Tensor engine takes twice the steps,
    /// which for one chunk is still no longer than the weight's DMA (a moving column per
    /// 128 bytes of B either way), while a K-contiguous B otherwise goes through PE
    /// transposes and copies out of PSUM; such a matmul always runs `interleaved_matmul`.
    fn interleave_segments(
        &self,
        ao: &Operand2d,
        bo: &Operand2d,
        m: u64,
        k: u64,
    ) -> Option<Vec<KSegment>> {
        let bsize = bo.view.dtype.size() as u64;
        let run = (MIN_RUN_BYTES / bsize).max(1);
        let a_bytes = m * k * ao.view.dtype.size() as u64 / 128;
        let applies = !self.strict
            && ao.prologue.is_none()
            && bo.prologue.is_none()
            && !bo.direct()
            && (k >= 128 * run || (k >= 64 * run && m <= 128 && a_bytes <= A_BUDGET))
            && m > 0;
        applies.then(|| k_segments(k, run))
    }

    /// `C = A @ B` with K *interleaved* over partitions: in each K segment partition `p`
    /// holds `run` consecutive K indices, so both operands load straight from HBM in runs
    /// of at least 64 bytes (a DMA's least cost) even where K is their contiguous axis,
    /// and no operand is transposed on the PE array or copied out of PSUM. The matmul for
    /// step `j` of a segment contracts index `p * run + j` over the partitions: A's and
    /// B's tiles read with a stride of `run` elements. Each B tile (one segment, one N
    /// block) is read once and feeds every M chunk; A stays in SBUF. For a decode-size
    /// M this streams the weight at the DMA's rate with the Tensor engine half idle.
    ///
    /// The sum over K runs in another order than the language's (all of step 0's
    /// partitions, then step 1's, ...): allowed under the default policy only
    /// (`interleave_segments`).
    #[allow(clippy::too_many_arguments)]
    fn interleaved_matmul(
        &mut self,
        g: &Group,
        inst: Inst,
        (ao, bo): (&Operand2d, &Operand2d),
        (m, k, n): (u64, u64, u64),
        segs: &[KSegment],
        fixed: &[AxisUse],
        swapped: bool,
    ) -> Result<(), String> {
        let span = self.func.spans[inst];
        if k == 0 || segs.is_empty() {
            return Err("a matmul with K = 0".into());
        }
        let chunks: Vec<(u64, u64)> = (0..m.div_ceil(128))
            .map(|i| (i * 128, 128.min(m - i * 128)))
            .collect();
        // A's tiles, one per segment: `[parts, m * run]`, in (m, j) order when K is A's
        // contiguous axis (runs of `run` elements), else in (j, m) order (runs along M).
        // Weight loads that may move back among the instructions since the previous
        // interleaved matmul (`hoist_loads`), and the bytes per partition they take.
        let window = self.weight_hoist.take().map(|w| w..self.out.layout.len());
        let mut hoisted: Vec<TInst> = Vec::new();
        let mut hoisted_bytes = 0u64;
        let a_kmajor = ao.k_stride == 1;
        let mut a_tiles = Vec::with_capacity(segs.len());
        for s in segs {
            let tile = self.sbuf_tile(ao.view.dtype, s.parts as u32, (m * s.run) as u32);
            let base = ao.offset + s.k0 as i64 * ao.k_stride;
            let part = (s.parts, s.run as i64 * ao.k_stride);
            let (outer, inner) = if a_kmajor {
                ((m, ao.x_stride), (s.run, ao.k_stride))
            } else {
                ((s.run, ao.k_stride), (m, ao.x_stride))
            };
            self.dma_3d(tile, &ao.view, base, part, outer, inner, span);
            a_tiles.push(tile);
        }
        let mut n0 = 0;
        while n0 < n {
            let nsz = 512.min(n - n0);
            let psums = self.psum_tiles(&chunks, nsz);
            for (si, (s, a)) in segs.iter().zip(&a_tiles).enumerate() {
                // B's tile: `[parts, nsz * run]` in (n, j) order, K contiguous in HBM.
                let b = self.sbuf_tile(bo.view.dtype, s.parts as u32, (nsz * s.run) as u32);
                let base = bo.offset + s.k0 as i64 * bo.k_stride + n0 as i64 * bo.x_stride;
                let first = self.out.layout.len();
                self.dma_3d(
                    b,
                    &bo.view,
                    base,
                    (s.parts, s.run as i64 * bo.k_stride),
                    (nsz, bo.x_stride),
                    (s.run, bo.k_stride),
                    span,
                );
                let bytes = nsz * s.run * bo.view.dtype.size() as u64;
                if window.is_some() && hoisted_bytes + bytes <= HOIST_BUDGET {
                    hoisted_bytes += bytes;
                    hoisted.extend_from_slice(&self.out.layout[first..]);
                }
                for j in 0..s.run {
                    let moving = strided(&b, s.parts, j, nsz, s.run);
                    for (&(m0, msz), &psum) in chunks.iter().zip(&psums) {
                        let stationary = if a_kmajor {
                            strided(a, s.parts, m0 * s.run + j, msz, s.run)
                        } else {
                            strided(a, s.parts, j * m + m0, msz, 1)
                        };
                        self.out.push(
                            Op::Matmul {
                                out: psum.ap(),
                                stationary,
                                moving: moving.clone(),
                                accumulate: si > 0 || j > 0,
                            },
                            Engine::Tensor,
                            &[psum.buf, a.buf, b.buf],
                            span,
                        );
                    }
                }
            }
            for (&chunk, &psum) in chunks.iter().zip(&psums) {
                self.epilogue(g, inst, psum, fixed, chunk, (n0, nsz), swapped)?;
            }
            n0 += nsz;
        }
        if let Some(window) = window {
            self.hoist_loads(window, &hoisted, bo.view.buf);
        }
        self.weight_hoist = Some(self.out.layout.len());
        Ok(())
    }

    /// `C = A @ B` with K interleaved over partitions (as `interleaved_matmul`) for any M:
    /// the output in tiles of up to `TILE_CHUNKS` M chunks by one N block of 512 columns
    /// (one PSUM bank per chunk), each tile accumulating over every K segment. A step (one
    /// tile, one segment) needs the segment's B tile (`[parts, nsz * run]`) and one A slice
    /// per chunk (`[parts, msz * run]`), used by that chunk's `run` matmuls only. When a
    /// group of chunks' A over all of K fits `A_BUDGET`, its slices are loaded once and
    /// stay while every N block streams past; otherwise they are loaded again for each N
    /// block. B streams once per group either way.
    ///
    /// The loads run `LOAD_AHEAD` bytes a partition ahead of the matmuls that read them, and
    /// a chunk's epilogue follows its last matmul; its stores are held back until the
    /// following chunk's loads are emitted, so no load queues behind a store that waits
    /// for an epilogue.
    ///
    /// Each chunk's PSUM bank adds the segments in order and, within one, steps `j` in
    /// order: the same order as `interleaved_matmul`, allowed under the default policy only.
    ///
    /// `epilogue` is what the group's rest needs: the group, the matmul, the batch index
    /// and whether the matmul runs swapped.
    fn interleaved_tiles(
        &mut self,
        (g, inst, fixed, swapped): (&Group, Inst, &[AxisUse], bool),
        (ao, bo): (&Operand2d, &Operand2d),
        (m, k, n): (u64, u64, u64),
        segs: &[KSegment],
    ) -> Result<(), String> {
        let span = self.func.spans[inst];
        if segs.is_empty() {
            return Err("an interleaved matmul without K segments".into());
        }
        // A later interleaved matmul hoists no loads back across this one.
        self.weight_hoist = None;
        let segs = &spread_partial(segs);
        let (asize, bsize) = (ao.view.dtype.size() as u64, bo.view.dtype.size() as u64);
        let chunks: Vec<(u64, u64)> = (0..m.div_ceil(128))
            .map(|i| (i * 128, 128.min(m - i * 128)))
            .collect();
        let groups: Vec<&[(u64, u64)]> = chunks.chunks(TILE_CHUNKS).collect();
        let nblocks: Vec<(u64, u64)> = (0..n.div_ceil(512))
            .map(|j| (j * 512, 512.min(n - j * 512)))
            .collect();
        // The loads in the order the matmuls need them, each with the bytes per partition
        // before it: per step (group, N block, segment) the B tile, then each chunk's A
        // slice (a kept group's only at its first N block). `units` lists the matmul work,
        // one per step and chunk: (group, N block, segment, chunk, its B and A loads).
        let mut loads: Vec<(Load2, u64)> = Vec::new();
        let mut units = Vec::new();
        let mut total = 0u64;
        for (gi, group) in groups.iter().enumerate() {
            let rows: u64 = group.iter().map(|c| c.1).sum();
            let kept = rows * k * asize / 128 <= A_BUDGET;
            let mut kept_at: Vec<usize> = Vec::new();
            for (ni, &(_, nsz)) in nblocks.iter().enumerate() {
                for (si, s) in segs.iter().enumerate() {
                    let bi = loads.len();
                    loads.push((Load2::B { ni, si }, total));
                    total += nsz * s.run * bsize;
                    for (ci, &(_, msz)) in group.iter().enumerate() {
                        let ai = if kept && ni > 0 {
                            kept_at[si * group.len() + ci]
                        } else {
                            loads.push((Load2::A { gi, ci, si }, total));
                            total += msz * s.run * asize;
                            loads.len() - 1
                        };
                        if kept && ni == 0 {
                            kept_at.push(ai);
                        }
                        units.push((gi, ni, si, ci, bi, ai));
                    }
                }
            }
        }
        let a_kmajor = ao.k_stride == 1;
        let mut tiles: Vec<Option<Tile>> = vec![None; loads.len()];
        let mut issued = 0usize;
        let mut psums: Vec<Tile> = Vec::new();
        let mut held: Vec<TInst> = Vec::new();
        for &(gi, ni, si, ci, bi, ai) in &units {
            // Loads up to LOAD_AHEAD bytes past the end of this unit's own.
            let need = loads[bi.max(ai)].1 + LOAD_AHEAD;
            while issued < loads.len() && (issued <= bi.max(ai) || loads[issued].1 <= need) {
                let tile = match loads[issued].0 {
                    Load2::B { ni, si } => {
                        let (s, (n0, nsz)) = (segs[si], nblocks[ni]);
                        let b = self.sbuf_tile(bo.view.dtype, s.parts as u32, (nsz * s.run) as u32);
                        let base = bo.offset + s.k0 as i64 * bo.k_stride + n0 as i64 * bo.x_stride;
                        let part = (s.parts, s.run as i64 * bo.k_stride);
                        self.dma_3d(
                            b,
                            &bo.view,
                            base,
                            part,
                            (nsz, bo.x_stride),
                            (s.run, bo.k_stride),
                            span,
                        );
                        b
                    }
                    Load2::A { gi, ci, si } => {
                        let (s, (m0, msz)) = (segs[si], groups[gi][ci]);
                        let a = self.sbuf_tile(ao.view.dtype, s.parts as u32, (msz * s.run) as u32);
                        let base = ao.offset + s.k0 as i64 * ao.k_stride + m0 as i64 * ao.x_stride;
                        let (outer, inner) = if a_kmajor {
                            ((msz, ao.x_stride), (s.run, ao.k_stride))
                        } else {
                            ((s.run, ao.k_stride), (msz, ao.x_stride))
                        };
                        let part = (s.parts, s.run as i64 * ao.k_stride);
                        self.dma_3d(a, &ao.view, base, part, outer, inner, span);
                        a
                    }
                };
                tiles[issued] = Some(tile);
                issued += 1;
            }
            // The stores held back from the previous chunk's epilogue.
            self.out.layout.append(&mut held);
            let (s, (n0, nsz), (m0, msz)) = (segs[si], nblocks[ni], groups[gi][ci]);
            if si == 0 && ci == 0 {
                psums = self.psum_tiles(groups[gi], nsz);
            }
            let (Some(a), Some(b)) = (tiles[ai], tiles[bi]) else {
                return Err("an interleaved matmul step not loaded".into());
            };
            let psum = psums[ci];
            for j in 0..s.run {
                let stationary = if a_kmajor {
                    strided(&a, s.parts, j, msz, s.run)
                } else {
                    strided(&a, s.parts, j * msz, msz, 1)
                };
                self.out.push(
                    Op::Matmul {
                        out: psum.ap(),
                        stationary,
                        moving: strided(&b, s.parts, j, nsz, s.run),
                        accumulate: si > 0 || j > 0,
                    },
                    Engine::Tensor,
                    &[psum.buf, a.buf, b.buf],
                    span,
                );
            }
            if si + 1 == segs.len() {
                let start = self.out.layout.len();
                self.epilogue(g, inst, psum, fixed, (m0, msz), (n0, nsz), swapped)?;
                let tail = self.out.layout.split_off(start);
                let (stores, rest): (Vec<_>, Vec<_>) = tail
                    .into_iter()
                    .partition(|&i| crate::passes::schedule::is_store(&self.out.insts[i].op));
                self.out.layout.extend(rest);
                held = stores;
            }
        }
        self.out.layout.append(&mut held);
        Ok(())
    }

    /// Moves the weight loads `loads` (emitted last) back into the layout positions
    /// `window`, spread evenly over it, so they move while the instructions there (the
    /// attention between two projections of a decode step, say) leave DMA bandwidth
    /// unused; each DMA queue issues in program order, so a load placed after the window
    /// would wait behind all of it. Only for a weight that is a kernel input (`weight`,
    /// its HBM buffer, which nothing writes) and that nothing in the window touches.
    fn hoist_loads(&mut self, window: std::ops::Range<usize>, loads: &[TInst], weight: Buf) {
        let len = window.end - window.start;
        let input = matches!(
            self.out.bufs[weight].kind,
            crate::tile::BufKind::Hbm {
                role: isa::Role::Input,
                ..
            }
        );
        let touched = self.out.layout[window.clone()]
            .iter()
            .any(|&i| self.out.insts[i].bufs.contains(&weight));
        if loads.is_empty() || len == 0 || !input || touched {
            return;
        }
        let moved: std::collections::HashSet<TInst> = loads.iter().copied().collect();
        let tail: Vec<TInst> = self
            .out
            .layout
            .split_off(window.end)
            .into_iter()
            .filter(|i| !moved.contains(i))
            .collect();
        let inside = self.out.layout.split_off(window.start);
        // Load `j` goes after `(j + 1) * len / (loads + 1)` of the window's instructions.
        let mut next = 0;
        for (pos, &inst) in inside.iter().enumerate() {
            while next < loads.len() && (next + 1) * len / (loads.len() + 1) <= pos {
                self.out.layout.push(loads[next]);
                next += 1;
            }
            self.out.layout.push(inst);
        }
        self.out.layout.extend_from_slice(&loads[next..]);
        self.out.layout.extend(tail);
    }

    /// Loads the HBM pattern `part x outer x inner` (each `(size, stride)` in elements,
    /// from element `base`) into `tile` (`part` on partitions, `outer * inner` columns), in
    /// pieces spread over the DMA queues: groups of 32 partitions (where a tile of at most
    /// 32 may start) and chunks of `outer`, about 8 KiB or more each, at most 64 pieces.
    #[allow(clippy::too_many_arguments)]
    fn dma_3d(
        &mut self,
        tile: Tile,
        view: &HView,
        base: i64,
        part: (u64, i64),
        outer: (u64, i64),
        inner: (u64, i64),
        span: Span,
    ) {
        let bytes = part.0 * outer.0 * inner.0 * view.dtype.size() as u64;
        let want = (bytes / (8 * 1024)).clamp(1, 64);
        let pgroups = if want >= 4 && part.0 > 32 {
            part.0.div_ceil(32)
        } else {
            1
        };
        let pn = if pgroups > 1 { 32 } else { part.0 };
        let ochunk = outer.0.div_ceil((want / pgroups).clamp(1, outer.0));
        self.dma_pieces(
            tile,
            view,
            base,
            (part, outer, inner),
            (pgroups, pn, ochunk),
            span,
        );
    }

    /// Loads the HBM pattern `part x outer x inner` into `tile` in pieces: chunks of
    /// `ochunk` of `outer` (outermost), each in `pgroups` groups of `pn` partitions.
    fn dma_pieces(
        &mut self,
        tile: Tile,
        view: &HView,
        base: i64,
        (part, outer, inner): ((u64, i64), (u64, i64), (u64, i64)),
        (pgroups, pn, ochunk): (u64, u64, u64),
        span: Span,
    ) {
        let mut o0 = 0;
        while o0 < outer.0 {
            let on = ochunk.min(outer.0 - o0);
            for gi in 0..pgroups {
                let p0 = gi * pn;
                let pn = pn.min(part.0 - p0);
                let src = hbm_ap(
                    view.dtype,
                    base + p0 as i64 * part.1 + o0 as i64 * outer.1,
                    &[(pn, part.1), (on, outer.1), (inner.0, inner.1)],
                );
                let dst = tile.slice(
                    p0 as u32,
                    pn as u32,
                    (o0 * inner.0) as u32,
                    (on * inner.0) as u32,
                );
                self.out.push(
                    Op::Dma {
                        dst: DmaAp::Tile(dst),
                        src: DmaAp::Hbm(src),
                    },
                    Engine::Dma(0),
                    &[tile.buf, view.buf],
                    span,
                );
            }
            o0 += on;
        }
    }
}

/// Partitions `0..parts` of `tile` read as `size` elements `stride` apart from element
/// `first`: one step's operand of an interleaved matmul.
fn strided(tile: &Tile, parts: u64, first: u64, size: u64, stride: u64) -> TileAp {
    TileAp {
        mem: tile.mem,
        dtype: tile.dtype,
        partition: 0,
        partitions: parts as u8,
        offset: (tile.col_offset + first as u32) * tile.dtype.size(),
        dims: smallvec![Dim {
            size: size as u32,
            stride: stride as i32,
        }],
    }
}
