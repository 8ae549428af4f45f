//! Flash attention: the lowering of an attention group (`passes/attention.rs`) in which
//! the S x S scores never go to HBM.
//!
//! K (transposed, D on partitions) and V (keys on partitions) are loaded once and stay in
//! SBUF. For each block of 128 queries: `q^T` is prepared (by GpSimd for D <= 128); then
//! for each block of keys the scores go to PSUM (`q^T^T @ k^T`), the row maximum is updated
//! (kept as the exponentials' bias `-c*m`, with `c` the positive scale), the
//! probabilities `exp(c*s - c*m_new)` and their row sum come from one Scalar activation,
//! the running sum and the output accumulator are rescaled by `alpha = exp(c*m -
//! c*m_new)`, the probabilities are transposed on the Tensor engine and multiplied with V
//! into PSUM, and added to the accumulator. At the end the accumulator is divided by the
//! running sum and the rest of the group (a cast) runs on it. A causal mask (`tril`, fill
//! -inf) skips key blocks that lie entirely above the diagonal and masks the chunks that
//! cross it on the PE array (one more matmul into their scores, `mask_chunk`), and visits
//! a head's query groups alternately from the longest and the shortest
//! (`causal_group_order`). A run-time mask (an additive operand, or a `bool` condition
//! selected with its fill, `attention_mask`) is loaded per key block and applied to the
//! scores in PSUM. With several heads that read different K, each K^T is prepared once,
//! on the PE array.
//!
//! Vector and Scalar are the bottleneck (the maximum, the exponentials and the copy of
//! p^T out of PSUM each pass over every score), so the schedule keeps them fed: four
//! query tiles are in flight (fewer when their banks would not fit PSUM), and for each
//! tile in turn the softmax, the transposes of p and the next block's scores are emitted
//! together, so the PE array transposes a tile's p and computes its next scores (in the
//! bank its exponentials just freed) while Scalar works through the other tiles'
//! exponentials. The p^T of two tiles share a PSUM bank and one copy out of it; the
//! first pair's copy and rescales go to Vector, which finishes its maxima while Scalar
//! still has the last exponentials to do, the second pair's to Scalar (emitted in its
//! form, so the `engines` pass leaves them there): neither engine then waits for the
//! other at the turn of a block. The tiles' output accumulators share one PSUM bank,
//! leaving the banks to scores and p^T; nothing on the path from the maximum to the
//! exponentials leaves Vector and Scalar; and GpSimd, then free, transposes one chunk of
//! p in four, taking that copy off them (bench, S = 4096: 404,896 -> 315,872 cycles
//! before the pairs, 271,690 with them). Query groups follow each other without a pause:
//! the next group's first scores are computed in this group's last block, and this group's
//! outputs are divided out in the next group's first block.

use super::block::{AxisUse, Tile};
use super::matmul::Operand2d;
use super::view::{hbm_ap, HView};
use super::Tiler;
use crate::ir::TOp;
use crate::passes::attention::Attention;
use crate::passes::engines::scalar_form;
use crate::passes::fusion::{Group, Root};
use crate::tile::{Buf, TileInst};
use isa::{ActFunc, Affine, AluOp, CmpOp, DmaAp, Dtype, Engine, Imm, Op, ReduceOp, ScalarArg};
use smallvec::smallvec;

/// Keys per block: one PSUM bank of f32 scores.
const KEY_BLOCK: u64 = 512;
/// Chunks of 128 keys per key block (of four) whose probabilities GpSimd transposes
/// (`attention_transpose`).
const GPSIMD_CHUNKS: usize = 1;
/// Query tiles in flight together at most (bench, S = 4096: three 363,279 cycles, four
/// 326,912, before the pairs; five would need more PSUM banks than there are).
const QUERY_GROUP: usize = 4;

/// The constant tiles with which the PE array masks a causal diagonal: one more matmul
/// accumulates `eye2^T @ neg` into a chunk of scores that crosses the diagonal, adding
/// `2 * neg[r, c]` to each score. `eye2` is twice the identity and `neg[p, c]` is the
/// largest finite bf16 negated where `c > p + 128` and 0 elsewhere, so the product
/// overflows to -inf exactly where a row masks the key and is 0 elsewhere: a finite score
/// becomes -inf (as `tril` fills it) or stays as it was, with no Vector, Scalar or GpSimd
/// work on the scores (`mask_chunk`).
#[derive(Clone, Copy)]
struct DiagonalMask {
    eye2: Tile,
    neg: Tile,
}

/// The columns of `DiagonalMask::neg`: a chunk of up to 128 keys at any diagonal offset in
/// `[-127, 126]` reads 128 of them from `128 - offset`.
const NEG_COLS: u32 = 384;

/// The K^T and V tiles of the heads that read one K and one V.
struct KvTiles {
    /// Per chunk of 128 keys, K^T as one tile per chunk of D (empty: not prepared yet).
    kt: Vec<Vec<Tile>>,
    v: Vec<Option<Tile>>,
}

/// One index of the output's leading axes: its operands' matrices and its output axes.
struct Head {
    qo: Operand2d,
    ko: Operand2d,
    vo: Operand2d,
    fixed: Vec<AxisUse>,
}

/// A run-time mask (`Attention::mask`, additive, or `Attention::select`, a `bool`
/// condition) as the lowering reads it: its home and, per head, the element offset of its
/// (query 0, key 0), with its query and key strides (0 along an axis it is broadcast over).
struct MaskOperand {
    view: HView,
    offsets: Vec<i64>,
    row_stride: i64,
    key_stride: i64,
    /// Query rows a head (what a stacked tile's lane loads).
    rows: u64,
    /// For a `where` mask: a column holding the value the select puts at a masked score
    /// (read with step 0 across the block), and whether a true condition keeps the score.
    select: Option<(Tile, bool)>,
    /// Stacked tiles with padding rows (`Stacking`): the tiles their mask blocks are
    /// loaded into, used in turn, whose padding rows were written once (`MaskRing`); else
    /// each block has a new one.
    ring: Option<MaskRing>,
}

/// The tiles stacked tiles' mask blocks are loaded into, used in turn: one buffer of
/// `slots` tiles of `width` columns whose every row was set once, so the padding rows of
/// each lane's slot, which no load writes, hold defined values when a block's `select` or
/// addition reads the whole tile (a padding row's result is never read into a real row).
/// Setting them before each block's loads would make the loads, and the K and V loads
/// queued behind them, wait for that `memset`.
struct MaskRing {
    tile: Tile,
    slots: usize,
    width: u32,
    next: std::cell::Cell<usize>,
}

impl MaskRing {
    /// The next tile of the ring, `parts` partitions by `cols` columns.
    fn take(&self, parts: u32, cols: u32) -> Tile {
        let i = self.next.get();
        self.next.set((i + 1) % self.slots);
        Tile {
            parts,
            ..self.tile.cols_view(i as u32 * self.width, cols)
        }
    }
}

/// The running state of one block of 128 queries.
struct QueryTile {
    /// The head (`Head`) the tile belongs to (its first lane's when `lanes` is not empty).
    head: usize,
    /// The heads whose few query rows share the tile (`Stacking`): lane `i` holds its
    /// head's rows on partitions from `i * slot`, the rest of its slot padding. Empty for
    /// a tile of one head's rows `m0..m0 + msz` (then `msz` is the tile's partitions; for
    /// lanes it is every slot's).
    lanes: Vec<usize>,
    m0: u64,
    msz: u64,
    /// q^T, one tile per chunk of D.
    qt: Vec<Tile>,
    /// A stacked tile's query rows (`Stacking`), its padding set to zero when the tile is
    /// made, a group before its q^T is prepared: a DMA queue issues in order, so a load
    /// that waited there for GpSimd's `memset` would hold up the K and V loads behind it.
    q_rows: Option<Tile>,
    /// The running row maximum as the exponentials' bias, `-c * m` (c > 0, so the
    /// running maximum is the running minimum of this), and the running sum; `None`
    /// before the first key block, which writes them (and the output accumulator)
    /// without reading them: no fills, and no rescale for it.
    nb_run: Option<Tile>,
    l_run: Option<Tile>,
    /// The output accumulator, in PSUM.
    o: Tile,
}

/// Several heads' few query rows stacked on the partitions of one query tile, one head a
/// slot of 32 (or 64) partitions, where a tile of that many partitions may start: decode
/// attention has a handful of query rows a head, and every Vector and Scalar instruction
/// of the softmax costs by its columns whatever its partitions, so four heads in one tile
/// cost those engines what one does (grouped-query decode, B = 8, 8 KV heads of 4 query
/// rows, 2,048 cached positions: Vector 297,600 busy cycles before). A lane's padding
/// rows have zero queries, so their scores are 0 (or NaN when a key is infinite): they
/// are never read into a real row, as every softmax instruction works row by row and the
/// second matmul of a lane reads only its own columns of p^T.
#[derive(Clone, Copy)]
struct Stacking {
    /// Partitions per lane.
    slot: u64,
    /// Lanes per tile.
    lanes: usize,
}

impl Stacking {
    /// The stacking for `sq` query rows a head, `nheads` heads, if worth it.
    fn of(sq: u64, nheads: usize) -> Option<Stacking> {
        let slot = if sq <= 32 { 32 } else { 64 };
        (sq <= 64 && nheads > 1).then_some(Stacking {
            slot,
            lanes: (128 / slot) as usize,
        })
    }
}

/// SBUF bytes a partition for the K^T and V of one group of stacked tiles (`Stacking`):
/// two groups' are live at once, and the rest of SBUF holds the scores' and the
/// probabilities' tiles.
const STACKED_KV_BYTES: u64 = 32 * 1024;

/// One query tile of a group: `(head, m0, msz)` of one head's rows, or the heads of a
/// stacked tile's lanes (then `m0` is 0 and `msz` the tile's partitions).
#[derive(Clone, Debug)]
struct TileSpec {
    head: usize,
    m0: u64,
    msz: u64,
    lanes: Vec<usize>,
}

/// Query tiles in flight together for a value width of `dv`: at most QUERY_GROUP, and
/// only as many as PSUM's eight banks hold: per tile a bank of scores, per pair of tiles
/// a bank of p^T, the output accumulators (one bank when the group's fit together, else
/// one each), and one more for the transposes that prepare q^T and K^T. (Four tiles of
/// Dv = 192 needed ten banks and failed to compile.)
fn query_group(dv: u64) -> usize {
    let banks = |g: u64| {
        let o = if g * dv * 4 <= 2048 { 1 } else { g };
        g + g.div_ceil(2) + o + 1
    };
    (1..=QUERY_GROUP as u64)
        .rev()
        .find(|&g| banks(g) <= 8)
        .unwrap_or(1) as usize
}

/// One PSUM bank of p^T for one or two query tiles of a key block, and its SBUF copy.
/// Chunk-major: chunk `c` of slot `s` is at column `(c * slots + s) * width`, so the full
/// chunks of every slot are one column range and a last shorter chunk another.
struct PtBank {
    psum: Tile,
    sbuf: Tile,
    slots: u32,
    /// Columns per slot: 128 for a pair, the tile's queries for one tile alone.
    width: u32,
    /// The chunks of keys (first key in the block, keys) that the PE array transposes.
    chunks: Vec<(u64, u64)>,
    /// Whether the Scalar engine copies the bank out (and rescales its tiles).
    on_scalar: bool,
}

impl PtBank {
    /// The first column of chunk `c` of slot `slot`.
    fn col(&self, c: usize, slot: usize) -> u32 {
        (c as u32 * self.slots + slot as u32) * self.width
    }
}

/// The keys of the block of `kb` keys from `j0` that some row of the tile sees: under a
/// causal mask (`k >= 0`, so at least the first), those up to its last row's diagonal. The
/// keys after them are masked for every row: their exponentials are exactly 0, which adds
/// nothing to the running sum and to p @ v, so they are not computed (causal, S = 2048,
/// 8 heads: 500,322 -> 493,226 cycles; one head 66,350 -> 66,170).
fn keys_seen(a: &Attention, st: &QueryTile, j0: u64, kb: u64) -> u64 {
    match a.tril {
        Some(k) => {
            let last = ((st.m0 + st.msz - 1) as i64).saturating_add(k);
            (last - j0 as i64 + 1).clamp(1, kb as i64) as u64
        }
        None => kb,
    }
}

/// The order in which a head's `n` query groups are visited under a causal mask: the
/// longest (the last, with the most key blocks), the shortest (the first), the next
/// longest, and so on. A short group's chain (its diagonal block and little else) then
/// runs between long groups whose full blocks keep Vector and Scalar busy, where in order
/// the short groups came together at each head's start (causal, S = 2048: 8 heads
/// 328,959 -> 322,848 cycles, one head D = 128 46,075 -> 45,592, grouped-query 2 x 4
/// heads 311,463 -> 309,024). The online softmax of each tile is unchanged, so the
/// results are the same bits in any order.
fn causal_group_order(n: usize) -> Vec<usize> {
    let (mut lo, mut hi) = (0, n);
    let mut order = Vec::with_capacity(n);
    while lo < hi {
        hi -= 1;
        order.push(hi);
        if lo < hi {
            order.push(lo);
            lo += 1;
        }
    }
    order
}

/// The chunks of a key block of `kb` keys that the PE array transposes: all but the last
/// `gpsimd` (never the only one).
fn pe_chunks(kb: u64, gpsimd: usize) -> Vec<(u64, u64)> {
    let all: Vec<(u64, u64)> = (0..kb.div_ceil(128))
        .map(|i| (i * 128, 128.min(kb - i * 128)))
        .collect();
    let on_pe = all.len() - gpsimd.min(all.len() - 1);
    all[..on_pe].to_vec()
}

impl Tiler<'_> {
    /// Lowers an attention group: the rank-2 kernel for every index of the output's leading
    /// (batch and head) axes, outermost first, as one stream of query groups, so the next
    /// head's first scores are computed in this head's last block as the next group's are
    /// (8 heads, S = 2048: 513,861 -> 493,701 cycles). An operand
    /// whose leading axis is 1 where the output's is not is broadcast along it
    /// (grouped-query attention's K and V, shared by a group of query heads): the heads
    /// that read the same K and V share their tiles, which are loaded once.
    pub(super) fn lower_attention(&mut self, g: &Group, a: &Attention) -> Result<(), String> {
        let func = self.func;
        let span = func.spans[a.out];
        let q = self.home_of(a.q)?;
        let kt = self.home_of(a.kt)?;
        let v = self.home_of(a.v)?;
        let (rq, rk, rv) = (q.shape.len(), kt.shape.len(), v.shape.len());
        let (sq, d) = (q.shape[rq - 2], q.shape[rq - 1]);
        let sk = kt.shape[rk - 1];
        let dv = v.shape[rv - 1];
        let out_shape = func.ty(func.insts[a.out].result).shape.clone();
        let batch = out_shape[..out_shape.len() - 2].to_vec();
        let nheads = batch.iter().product::<u64>() as usize;
        // The element offset of an operand's matrix for the output's leading index `idx`:
        // its leading axes align with the output's last ones, and an axis of 1 is
        // broadcast.
        let offset = |view: &HView, idx: &[u64]| {
            let lead = view.shape.len() - 2;
            let skip = idx.len() - lead;
            view.offset
                + (0..lead)
                    .map(|j| {
                        let i = if view.shape[j] == 1 { 0 } else { idx[skip + j] };
                        i as i64 * view.strides[j]
                    })
                    .sum::<i64>()
        };
        // The probabilities' dtype: what the second matmul multiplies.
        let p_dtype = func.ty(func.insts[a.pv].args[0]).dtype;
        // The layout pass's loads (none: follow the strides).
        let loads = self.layout.attention(a.out);
        let load = |i: usize| loads.map(|l| l[i]);
        let heads: Vec<Head> = (0..nheads)
            .map(|h| {
                let mut idx = vec![0u64; batch.len()];
                let mut rem = h as u64;
                for d in (0..batch.len()).rev() {
                    idx[d] = rem % batch[d];
                    rem /= batch[d];
                }
                Head {
                    qo: Operand2d::new(
                        q.clone(),
                        offset(&q, &idx),
                        q.strides[rq - 1],
                        q.strides[rq - 2],
                        load(0),
                    ),
                    ko: Operand2d::new(
                        kt.clone(),
                        offset(&kt, &idx),
                        kt.strides[rk - 2],
                        kt.strides[rk - 1],
                        load(1),
                    ),
                    vo: Operand2d::new(
                        v.clone(),
                        offset(&v, &idx),
                        v.strides[rv - 2],
                        v.strides[rv - 1],
                        load(2),
                    ),
                    fixed: idx.iter().map(|&i| AxisUse::Fixed(i)).collect(),
                }
            })
            .collect();
        // The run-time mask's offsets: its axes align with the scores' last ones, and an
        // axis of 1 (or one it lacks) is broadcast.
        let mut mask = match a.mask.or(a.select.as_ref().map(|sm| sm.cond)) {
            Some(m) => {
                let view = self.home_of(m)?;
                let r = view.shape.len();
                let stride = |j: usize| {
                    if view.shape[j] == 1 {
                        0
                    } else {
                        view.strides[j]
                    }
                };
                let key_stride = stride(r - 1);
                let row_stride = if r >= 2 { stride(r - 2) } else { 0 };
                let lead = r.saturating_sub(2);
                let offsets = heads
                    .iter()
                    .map(|hd| {
                        let skip = hd.fixed.len() - lead;
                        view.offset
                            + (0..lead)
                                .map(|j| match hd.fixed[skip + j] {
                                    AxisUse::Fixed(i) => i as i64 * stride(j),
                                    _ => 0,
                                })
                                .sum::<i64>()
                    })
                    .collect();
                // A `where` mask's fill: the reference's value at a masked score, or the
                // unscaled value whose scaling rounds to it (`SelectMask`).
                let select = match &a.select {
                    Some(sm) => {
                        let fill = match (a.prescaled(), sm.unscaled_fill) {
                            (false, Some(u)) => u,
                            _ => sm.fill,
                        };
                        let col = self.sbuf_tile(Dtype::F32, 128, 1);
                        self.out.push(
                            Op::Memset {
                                out: col.ap(),
                                value: Imm::new(fill),
                            },
                            Engine::Vector,
                            &[col.buf],
                            span,
                        );
                        Some((col, sm.keep_if))
                    }
                    None => None,
                };
                Some(MaskOperand {
                    view,
                    offsets,
                    row_stride,
                    key_stride,
                    rows: sq,
                    select,
                    ring: None,
                })
            }
            None => None,
        };
        // K^T and V stay in SBUF: per chunk of 128 keys, K^T as one tile per chunk of D,
        // one set per distinct (K, V) of the heads (`kv_of`).
        // K^T is prepared whole after the first query tiles (whose loads then lead the
        // DMA queues), while the Vector and Scalar engines have nothing else to do; each
        // chunk of V loads one key block ahead of its first use, behind the K^T loads
        // instead of in front of the first scores (bench, S = 4096: 315,874 -> 311,778
        // cycles; K^T chunk by chunk as first used, 317,280, as its copies out of PSUM
        // then take the bottleneck engines' time).
        let chunks = sk.div_ceil(128) as usize;
        let mut keys: Vec<(i64, i64)> = Vec::new();
        let kv_of: Vec<usize> = heads
            .iter()
            .map(|hd| {
                let key = (hd.ko.offset, hd.vo.offset);
                keys.iter().position(|&k| k == key).unwrap_or_else(|| {
                    keys.push(key);
                    keys.len() - 1
                })
            })
            .collect();
        let mut kvs: Vec<KvTiles> = keys
            .iter()
            .map(|_| KvTiles {
                kt: vec![Vec::new(); chunks],
                v: vec![None; chunks],
            })
            .collect();
        let ensure_v = |this: &mut Self, kvs: &mut [KvTiles], h: usize, (j0, kb): (u64, u64)| {
            let first = (j0 / 128) as usize;
            let range = first..(j0 + kb).div_ceil(128) as usize;
            for (c, slot) in kvs[kv_of[h]].v[range].iter_mut().enumerate() {
                if slot.is_none() {
                    let k0 = (first + c) as u64 * 128;
                    *slot = Some(this.load_kmajor(&heads[h].vo, k0, 128.min(sk - k0), 0, dv, span));
                }
            }
        };
        // The chunks of K^T not prepared yet, transposed on the PE array.
        let ensure_kt = |this: &mut Self, kvs: &mut [KvTiles], h: usize| {
            let tiles = &mut kvs[kv_of[h]].kt;
            for (c, tile) in tiles.iter_mut().enumerate() {
                if tile.is_empty() {
                    let k0 = c as u64 * 128;
                    *tile = this.prepare_kmajor(&heads[h].ko, d, k0, 128.min(sk - k0), 0, span);
                }
            }
        };
        // The rest of the group after the division (casts), evaluated on the output.
        let pos = g.insts.iter().position(|&i| i == a.out).unwrap_or(0);
        let tail = Group {
            root: Root::Matmul(a.out),
            space: g.space.clone(),
            insts: g.insts[pos..].to_vec(),
            needs_plain_rows: false,
        };
        // When the rest is one cast of the output, the division writes the cast's dtype
        // (Vector rounds its f32 quotient once on write, as the cast would) and the cast
        // costs nothing.
        let o_dtype = match &tail.insts[..] {
            [_, c]
                if func.insts[*c].op == TOp::Cast
                    && func.insts[*c].args[..] == [func.insts[a.out].result] =>
            {
                func.ty(func.insts[*c].result).dtype
            }
            _ => Dtype::F32,
        };
        // Heads of few query rows share tiles (`Stacking`) when nothing but a store
        // follows the division (and no causal mask: its diagonal is per tile; a run-time
        // mask is loaded per lane, `attention_mask`): the output of the
        // tail, in HBM in the dtype the division writes, with each head's element offset.
        let last = tail.insts.last().map(|&i| func.insts[i].result);
        let stack_out = last
            .and_then(|v| self.home[v].clone())
            .filter(|view| {
                let simple = tail.insts.len() == 1 || o_dtype != Dtype::F32;
                simple && view.dtype == o_dtype && view.shape.len() == out_shape.len()
            })
            .map(|view| {
                let offsets: Vec<i64> = heads
                    .iter()
                    .map(|hd| {
                        let idx: Vec<u64> = hd
                            .fixed
                            .iter()
                            .map(|f| match f {
                                AxisUse::Fixed(i) => *i,
                                _ => 0,
                            })
                            .collect();
                        offset(&view, &idx)
                    })
                    .collect();
                (view, offsets)
            });
        let stacking = match (a.tril, &stack_out) {
            (None, Some(_)) => Stacking::of(sq, nheads),
            _ => None,
        };
        // K^T and V stay in SBUF for every head of a group of stacked tiles and the next:
        // as many stacked tiles as keep them within `STACKED_KV_BYTES` a partition.
        let tiles_per_group = stacking.map_or(1, |stk| {
            let esize = kt.dtype.size() as u64;
            let per_head = sk.div_ceil(128) * (d.div_ceil(128) * 128 + dv) * esize;
            let fit = STACKED_KV_BYTES / (per_head * stk.lanes as u64).max(1);
            fit.clamp(1, query_group(dv) as u64) as usize
        });
        // A stacked tile's mask blocks go to the tiles of a ring when its lanes have
        // padding rows: two blocks for every tile of a group (its scores run a block
        // ahead) and two more, so that a load never waits for the select before it.
        if let (Some(stk), Some(mk)) = (stacking, mask.as_mut()) {
            if sq < stk.slot {
                let (slots, width) = (2 * tiles_per_group + 2, KEY_BLOCK.min(sk) as u32);
                mk.ring = Some(self.mask_ring(&mk.view, slots, width, span));
            }
        }
        // Query tiles are processed `query_group` at a time, block by block in turn, so the
        // engines always have a second, independent chain of work: while one tile's
        // softmax runs on Vector and Scalar, the other's matmuls run on the PE array.
        let tiles: Vec<(u64, u64)> = (0..sq.div_ceil(128))
            .map(|t| (t * 128, 128.min(sq - t * 128)))
            .collect();
        // The constant tiles with which the PE array masks a diagonal, made at their first
        // use (`DiagonalMask`).
        let mut tri: Option<DiagonalMask> = None;
        // Every tile's scores of one block, where live (causal: a block whose first key
        // is past every query's diagonal is skipped).
        let block_scores = |this: &mut Self,
                            tri: &mut Option<DiagonalMask>,
                            kvs: &[KvTiles],
                            states: &[QueryTile],
                            (j0, kb): (u64, u64)| {
            states
                .iter()
                .map(|st| {
                    let live = match a.tril {
                        Some(k) => j0 as i64 <= ((st.m0 + st.msz - 1) as i64).saturating_add(k),
                        None => true,
                    };
                    live.then(|| {
                        let kb = keys_seen(a, st, j0, kb);
                        let kvs = (kvs, &kv_of[..]);
                        this.attention_scores(a, st, kvs, (j0, kb), tri, mask.as_ref(), span)
                    })
                })
                .collect::<Vec<Option<Tile>>>()
        };
        // Every head's groups in turn, one stream; with `stacking`, groups of tiles that
        // each hold several heads.
        let items: Vec<(usize, Vec<TileSpec>)> = match stacking {
            Some(stk) => {
                let all: Vec<usize> = (0..nheads).collect();
                let specs: Vec<TileSpec> = all
                    .chunks(stk.lanes)
                    .map(|hs| TileSpec {
                        head: hs[0],
                        m0: 0,
                        msz: hs.len() as u64 * stk.slot,
                        lanes: hs.to_vec(),
                    })
                    .collect();
                specs
                    .chunks(tiles_per_group)
                    .map(|grp| (grp[0].head, grp.to_vec()))
                    .collect()
            }
            None => (0..nheads)
                .flat_map(|h| {
                    let groups: Vec<&[(u64, u64)]> = tiles.chunks(query_group(dv)).collect();
                    let order = match a.tril {
                        Some(_) => causal_group_order(groups.len()),
                        None => (0..groups.len()).collect(),
                    };
                    order.into_iter().map(move |gi| {
                        let specs = groups[gi].iter().map(|&(m0, msz)| TileSpec {
                            head: h,
                            m0,
                            msz,
                            lanes: Vec::new(),
                        });
                        (h, specs.collect())
                    })
                })
                .collect(),
        };
        // The distinct heads of an item's tiles, in order.
        let heads_in = |grp: &[TileSpec]| {
            let mut hs: Vec<usize> = Vec::new();
            for t in grp {
                let lanes = if t.lanes.is_empty() {
                    vec![t.head]
                } else {
                    t.lanes.clone()
                };
                for h in lanes {
                    if !hs.contains(&h) {
                        hs.push(h);
                    }
                }
            }
            hs
        };
        // A group's running states, q^T not yet prepared (`prepare_qt`).
        let new_states = |this: &mut Self, group: &[TileSpec]| {
            // The group's output accumulators share one PSUM bank when they fit (PSUM's
            // eight banks are what limits how many blocks of scores are in flight).
            let parts = group.iter().map(|t| t.msz).max().unwrap_or(1);
            let packed = (group.len() as u64 * dv * 4 <= 2048)
                .then(|| this.psum_tile(Dtype::F32, parts, group.len() as u64 * dv));
            group
                .iter()
                .enumerate()
                .map(|(gi, t)| {
                    let (m0, msz) = (t.m0, t.msz);
                    // The output accumulates in PSUM across key blocks: each later block
                    // rescales it in place and its p @ v matmuls add to it.
                    let o = match packed {
                        Some(bank) => Tile {
                            parts: msz as u32,
                            cols: dv as u32,
                            col_offset: (gi as u64 * dv) as u32,
                            ..bank
                        },
                        None => this.psum_tile(Dtype::F32, msz, dv),
                    };
                    QueryTile {
                        head: t.head,
                        lanes: t.lanes.clone(),
                        m0,
                        msz,
                        qt: Vec::new(),
                        q_rows: match stacking {
                            Some(stk) if !t.lanes.is_empty() => {
                                Some(this.stacked_rows(q.dtype, msz as u32, d, sq < stk.slot, span))
                            }
                            _ => None,
                        },
                        nb_run: None,
                        l_run: None,
                        o,
                    }
                })
                .collect::<Vec<QueryTile>>()
        };
        // q^T's last chunk of D (all of it for D <= 128) is transposed by GpSimd
        // (`partition_transpose`), which has time between the blocks' p chunks, instead of
        // on the PE array with a copy out of PSUM for the bottleneck engines (bench, S =
        // 4096: 268,505 -> 264,122 cycles; every chunk of D = 192 on GpSimd made
        // run/attention_wide_v slower).
        let prepare_qt = |this: &mut Self, st: &mut QueryTile| {
            st.qt = Ok::<Vec<Tile>, String>(match stacking {
                Some(stk) if !st.lanes.is_empty() => {
                    let qos: Vec<&Operand2d> = st.lanes.iter().map(|&h| &heads[h].qo).collect();
                    let rows = st.q_rows.ok_or("attention: stacked query rows missing");
                    this.stacked_qt(rows?, &qos, d, sq, stk.slot, span)
                }
                _ => this.prepare_kmajor(&heads[st.head].qo, d, st.m0, st.msz, 1, span),
            })?;
            Ok::<(), String>(())
        };
        let blocks: Vec<(u64, u64)> = (0..sk.div_ceil(KEY_BLOCK))
            .map(|b| (b * KEY_BLOCK, KEY_BLOCK.min(sk - b * KEY_BLOCK)))
            .collect();
        // The blocks up to the last that any tile of a group sees (causal: the later ones
        // lie above every diagonal), so that the next group's work joins its last live
        // block.
        let live_of = |group: &[TileSpec]| match a.tril {
            Some(k) => {
                let last_row = group.iter().map(|t| t.m0 + t.msz - 1).max();
                let reach = last_row.map_or(0, |r| (r as i64).saturating_add(k));
                blocks
                    .iter()
                    .take_while(|&&(j0, _)| j0 as i64 <= reach)
                    .count()
                    .max(1)
            }
            None => blocks.len(),
        };
        // Stacked tiles under a run-time mask compute a tile's next scores (and mask them)
        // right after its softmax, before the transposes of its probabilities, in a PSUM
        // bank of their own: the mask's `select` then runs on Vector while Scalar computes
        // the exponentials, instead of on the path from one block's scores to the next
        // block's maximum (a group of one or two stacked tiles has the banks for it).
        // Grouped-query decode with a position mask (B = 8, 8 KV heads of 4 query rows,
        // 2,048 positions): 401,622 -> 336,933 cycles.
        let early_scores = stacking.is_some() && mask.is_some() && tiles_per_group <= 2;
        let live_counts: Vec<usize> = items.iter().map(|(_, grp)| live_of(grp)).collect();
        // Each item's blocks in the order it visits them. Under a causal mask the last
        // live block, the one that crosses the diagonal, comes first: its chain (longer
        // while the mask ran on Vector and GpSimd) then runs while the previous group's
        // full blocks keep Vector and Scalar busy, instead of at the end of the group with
        // nothing after it (causal, S = 2048, 8 heads: 454,974 -> 437,649 cycles). The online
        // softmax may visit the blocks in any order, but a row's first block must hold a
        // key it sees (else its maximum is -inf and exp(-inf + inf) is NaN): so only when
        // the first row of every tile that sees the block sees its first key.
        let orders: Vec<Vec<(u64, u64)>> = items
            .iter()
            .zip(&live_counts)
            .map(|((_, grp), &n)| {
                let mut o = blocks[..n].to_vec();
                let j0 = o[n - 1].0 as i64;
                let sees_first = |t: &TileSpec| {
                    let (m0, msz) = (t.m0, t.msz);
                    let k = a.tril.unwrap_or(0);
                    let last = ((m0 + msz - 1) as i64).saturating_add(k);
                    last < j0 || (m0 as i64).saturating_add(k) >= j0
                };
                if a.tril.is_some() && grp.iter().all(sees_first) {
                    o.rotate_right(1);
                }
                o
            })
            .collect();
        // The next group's states and first scores, made during this group's last block.
        let mut carried: Option<(Vec<QueryTile>, Vec<Option<Tile>>)> = None;
        let mut finishing: Vec<QueryTile> = Vec::new();
        for (gn, (_, group)) in items.iter().enumerate() {
            let item_heads = heads_in(group);
            let (mut states, first_scores) = match carried.take() {
                Some(c) => c,
                None => {
                    let mut states = new_states(self, group);
                    // The diagonal mask, while Vector waits for the first scores.
                    if a.tril.is_some() && tri.is_none() {
                        tri = Some(self.diagonal_mask(span));
                    }
                    for st in &mut states {
                        prepare_qt(self, st)?;
                    }
                    // All of K^T, behind the first group's query tiles.
                    for &ih in &item_heads {
                        ensure_kt(self, &mut kvs, ih);
                        ensure_v(self, &mut kvs, ih, orders[gn][0]);
                    }
                    let scores = block_scores(self, &mut tri, &kvs, &states, orders[gn][0]);
                    (states, scores)
                }
            };
            // The scores run one block ahead: a tile's scores of block j+1 are emitted
            // after its exponentials of block j, so the PE array computes them while the
            // softmax of the other tiles of block j still runs. In the last block the
            // next group's first scores take their place, and this group's outputs are
            // finished in the next group's first block, so the engines do not drain
            // between groups (bench, S = 4096: 262,138 -> 253,709 cycles; finished at the
            // end of the group instead, 261,507, as Vector's divisions then wait for the
            // last p @ v ahead of the next maxima).
            let mut next_scores = first_scores;
            let up_heads = items.get(gn + 1).map(|(_, ug)| heads_in(ug));
            let mut upcoming = items.get(gn + 1).map(|(_, ug)| new_states(self, ug));
            let mut upcoming_scores: Vec<Option<Tile>> = Vec::new();
            let mut prev_nb_all: Option<Tile> = None;
            let blocks = &orders[gn][..];
            let up_first = orders.get(gn + 1).map(|o| o[0]);
            for (bi, &(j0, kb)) in blocks.iter().enumerate() {
                let scores = std::mem::take(&mut next_scores);
                let n = states.len();
                let next = blocks.get(bi + 1).copied();
                if let Some(next) = next {
                    for &ih in &item_heads {
                        ensure_v(self, &mut kvs, ih, next);
                    }
                }
                // The next group's q^T, a block before the last computes its first scores:
                // emitted tile by tile there, GpSimd's transposes of it held the PE array
                // up; at the start of the last block, the last running sums (on GpSimd,
                // behind them) held up the divisions (bench, S = 4096: 247,062 -> 240,962
                // cycles).
                if bi + 2 == blocks.len().max(2) {
                    if let Some(up) = upcoming.as_mut() {
                        for st in up.iter_mut() {
                            prepare_qt(self, st)?;
                        }
                    }
                    // A new head's K^T and first V chunks, unless it shares this head's.
                    for &uh in up_heads.iter().flatten() {
                        ensure_kt(self, &mut kvs, uh);
                        ensure_v(self, &mut kvs, uh, up_first.unwrap_or(blocks[0]));
                    }
                }
                // The live tiles in pairs, each pair's p^T in one PSUM bank (when two fit),
                // copied out by one instruction; the pairs alternate between the Vector and
                // the Scalar engine, which also rescale their tiles' accumulators.
                let live: Vec<usize> = (0..n).filter(|&i| scores[i].is_some()).collect();
                // In a block that crosses a live tile's diagonal each tile takes only the
                // keys some of its rows see (`keys_seen`), in a bank of its own. GpSimd,
                // which no longer masks the diagonals (`mask_chunk`), transposes a chunk of
                // p there too (causal, S = 2048, one head: 49,339 -> 46,075 cycles).
                let crosses = |i: usize| {
                    a.tril.is_some_and(|k| {
                        (j0 + kb - 1) as i64 > (states[i].m0 as i64).saturating_add(k)
                    })
                };
                let crossing = live.iter().any(|&i| crosses(i));
                let gpsimd = GPSIMD_CHUNKS;
                let pair_size = if !crossing && self.pair_fits(&states, kb, p_dtype, gpsimd) {
                    2
                } else {
                    1
                };
                let banks: Vec<PtBank> = live
                    .chunks(pair_size)
                    .enumerate()
                    .map(|(k, tiles)| {
                        let width = if tiles.len() == 1 {
                            states[tiles[0]].msz
                        } else {
                            128
                        };
                        let slots = tiles.len() as u32;
                        let kb = keys_seen(a, &states[tiles[0]], j0, kb);
                        self.pt_bank(slots, width as u32, kb, p_dtype, k % 2 == 1, gpsimd)
                    })
                    .collect();
                let bank_of = |i: usize| {
                    let at = live.iter().position(|&t| t == i).unwrap_or(0);
                    (at / pair_size, at % pair_size)
                };
                let mut soft: Vec<Option<(Tile, Option<Tile>)>> = vec![None; n];
                let mut pts: Vec<Vec<(u64, Tile)>> = vec![Vec::new(); n];
                next_scores = vec![None; n];
                // When every tile is full and live, their biases are the columns of one
                // tile, and from the second such block on their alphas are one subtraction
                // (Vector) and one exponential (Scalar) for all of them instead of an
                // exponential each: Scalar, the busier engine, does 68 cycles a block
                // instead of 4 x 65 (same bits: both round nb_new - nb once).
                let shared = n >= 2
                    && states.iter().all(|st| st.msz == 128)
                    && scores.iter().all(Option::is_some);
                let nb_all = shared.then(|| self.sbuf_tile(Dtype::F32, 128, n as u32));
                let alpha_all = prev_nb_all
                    .filter(|_| shared)
                    .map(|_| self.sbuf_tile(Dtype::F32, 128, n as u32));
                let column = |t: Tile, i: usize| Tile {
                    cols: 1,
                    col_offset: t.col_offset + i as u32,
                    ..t
                };
                let mut sums: Vec<Option<Tile>> = vec![None; n];
                // Tile `i`'s scores of the next block (or the next group's first scores).
                macro_rules! next_block_scores {
                    ($i:expr) => {
                        let i = $i;
                        if let Some(nx) = next {
                            next_scores[i] =
                                block_scores(self, &mut tri, &kvs, &states[i..i + 1], nx)[0];
                        } else if let Some(up) = upcoming.as_mut() {
                            // The next group has at most as many tiles; the last current
                            // tile brings in any it has left.
                            let range = if i + 1 == n {
                                i..up.len()
                            } else {
                                i..(i + 1).min(up.len())
                            };
                            for u in range {
                                let first = up_first.unwrap_or(blocks[0]);
                                let sc = block_scores(self, &mut tri, &kvs, &up[u..u + 1], first);
                                upcoming_scores.push(sc[0]);
                            }
                        }
                    };
                }
                for i in 0..n {
                    // Each stage for every tile in turn, so no engine's in-order stream
                    // holds one tile's work behind another tile's wait: the softmax, the
                    // transposes of p (Tensor and GpSimd) and the next block's scores.
                    if let Some(s) = scores[i] {
                        let shared =
                            nb_all.map(|t| (column(t, i), alpha_all.map(|t| column(t, i))));
                        let (p, alpha, lb) = self.attention_softmax(
                            a,
                            &mut states[i],
                            s,
                            s.cols as u64,
                            p_dtype,
                            shared,
                            span,
                        );
                        if alpha_all.is_some() {
                            sums[i] = Some(lb);
                        } else {
                            self.attention_running_sum(&mut states[i], alpha, lb, span);
                        }
                        soft[i] = Some((p, alpha));
                    }
                    if early_scores {
                        next_block_scores!(i);
                    }
                    if bi == 0 && !finishing.is_empty() {
                        // The previous group has at least as many tiles: the last tile here
                        // finishes any it has left.
                        let last = if i + 1 == n { finishing.len() } else { i + 1 };
                        for st in &finishing[i.min(finishing.len())..last.min(finishing.len())] {
                            let fixed = &heads[st.head].fixed;
                            let store = stacking.zip(stack_out.as_ref());
                            self.attention_finish(a, st, &tail, o_dtype, dv, fixed, store, span)?;
                        }
                    }
                    if let Some((p, _)) = soft[i] {
                        let (b, slot) = bank_of(i);
                        pts[i] = self.attention_transpose(
                            &states[i],
                            p,
                            j0,
                            p.cols as u64,
                            &banks[b],
                            slot,
                            span,
                        );
                        // A tile alone copies its bank right away: the banks of every tile
                        // in flight and of the next block's scores would not fit PSUM.
                        if pair_size == 1 {
                            self.copy_pt_bank(&banks[b], span);
                        }
                    }
                    if !early_scores {
                        next_block_scores!(i);
                    }
                }
                finishing.clear();
                if let (Some(new), Some(old), Some(alpha)) = (nb_all, prev_nb_all, alpha_all) {
                    // The subtraction stays on Vector: on GpSimd, behind its transposes of
                    // p, it held the rescale factors up (bench, S = 4096: 283,826 cycles).
                    let d = self.sbuf_tile(Dtype::F32, 128, n as u32);
                    self.out.push(
                        Op::TensorTensor {
                            op: AluOp::Sub,
                            out: d.ap(),
                            a: new.ap(),
                            b: old.ap(),
                        },
                        Engine::Vector,
                        &[d.buf, new.buf, old.buf],
                        span,
                    );
                    self.out.push(
                        Op::Activate {
                            out: alpha.ap(),
                            src: d.ap(),
                            func: ActFunc::Exp,
                            scale: ScalarArg::imm(1.0),
                            bias: ScalarArg::imm(0.0),
                            accum: None,
                        },
                        Engine::Scalar,
                        &[alpha.buf, d.buf],
                        span,
                    );
                    for (i, lb) in sums.iter().enumerate() {
                        if let Some(lb) = *lb {
                            let a = Some(column(alpha, i));
                            self.attention_running_sum(&mut states[i], a, lb, span);
                        }
                    }
                }
                prev_nb_all = nb_all;
                for (b, bank) in banks.iter().enumerate() {
                    let tiles = &live[b * pair_size..(b * pair_size + pair_size).min(live.len())];
                    // Scalar rescales its first tile before the copy, which waits for the
                    // transposes of the last tile, right behind that tile's exponentials
                    // (bench, S = 4096: 271,690 cycles; the copy first, 282,698).
                    let first = usize::from(bank.on_scalar).min(tiles.len());
                    let (before, after) = tiles.split_at(first);
                    for &i in before {
                        if let Some((_, Some(alpha))) = soft[i] {
                            self.attention_rescale(&states[i], alpha, bank.on_scalar, span);
                        }
                    }
                    if pair_size > 1 {
                        self.copy_pt_bank(bank, span);
                    }
                    for &i in after {
                        if let Some((_, Some(alpha))) = soft[i] {
                            self.attention_rescale(&states[i], alpha, bank.on_scalar, span);
                        }
                    }
                }
                for i in 0..n {
                    if let Some((_, alpha)) = soft[i] {
                        // The first block's first matmul starts the accumulation.
                        let fresh = alpha.is_none();
                        let v_of = |h: usize| &kvs[kv_of[h]].v[..];
                        self.attention_pv(&states[i], &pts[i], v_of, stacking, fresh, span)?;
                    }
                }
            }
            carried = upcoming.map(|up| (up, upcoming_scores));
            // A group's outputs are finished in the next group's first block, tile by
            // tile after its softmax: Vector works through the next maxima while the PE
            // array completes this group's last p @ v.
            if carried.is_some() {
                finishing = states;
            } else {
                // The kernel's last query tiles: their stores go over every DMA queue, as
                // nothing runs after them (bench, S = 4096: 264,122 -> 262,202 cycles; one
                // 32 KB store a tile took 4,048 cycles after the last cast).
                self.last_stores = self.last_group;
                for st in &states {
                    let fixed = &heads[st.head].fixed;
                    let store = stacking.zip(stack_out.as_ref());
                    self.attention_finish(a, st, &tail, o_dtype, dv, fixed, store, span)?;
                }
                self.last_stores = false;
            }
        }
        Ok(())
    }

    /// o / l for one query tile, then the rest of the group (`tail`) on it; `fixed` are
    /// the output's leading indices.
    #[allow(clippy::too_many_arguments)]
    fn attention_finish(
        &mut self,
        a: &Attention,
        st: &QueryTile,
        tail: &Group,
        o_dtype: Dtype,
        dv: u64,
        fixed: &[AxisUse],
        store: Option<(Stacking, &(HView, Vec<i64>))>,
        span: crate::frontend::typed::Span,
    ) -> Result<(), String> {
        let parts = st.msz as u32;
        let l_run = st.l_run.ok_or("attention without keys")?;
        let o = self.sbuf_tile(o_dtype, parts, dv as u32);
        self.out.push(
            Op::TensorScalar {
                out: o.ap(),
                src: st.o.ap(),
                op0: AluOp::Div,
                s0: ScalarArg::Ap(l_run.ap()),
                op1: AluOp::Bypass,
                s1: ScalarArg::imm(0.0),
            },
            Engine::Vector,
            &[o.buf, st.o.buf, l_run.buf],
            span,
        );
        match store {
            Some((stk, (view, offsets))) if !st.lanes.is_empty() => {
                // Each lane's rows go straight to its head's rows of the output (the
                // division wrote the output's dtype, `stack_out`).
                let r = view.shape.len();
                let rows = view.shape[r - 2];
                for (li, &h) in st.lanes.iter().enumerate() {
                    let p0 = (li as u64 * stk.slot) as u32;
                    let dst = hbm_ap(
                        view.dtype,
                        offsets[h],
                        &[(rows, view.strides[r - 2]), (dv, view.strides[r - 1])],
                    );
                    self.out.push(
                        Op::Dma {
                            dst: DmaAp::Hbm(dst),
                            src: DmaAp::Tile(o.slice(p0, rows as u32, 0, dv as u32)),
                        },
                        Engine::Dma(0),
                        &[view.buf, o.buf],
                        span,
                    );
                }
                Ok(())
            }
            _ => self.epilogue(tail, a.out, o, fixed, (st.m0, st.msz), (0, dv), false),
        }
    }

    /// The query rows' tile of a stacked tile of `parts` partitions (`QueryTile::q_rows`),
    /// zero where `pad`.
    fn stacked_rows(
        &mut self,
        dtype: Dtype,
        parts: u32,
        d: u64,
        pad: bool,
        span: crate::frontend::typed::Span,
    ) -> Tile {
        let rows = self.sbuf_tile(dtype, parts, d as u32);
        if pad {
            self.out.push(
                Op::Memset {
                    out: rows.ap(),
                    value: Imm::new(0.0),
                },
                Engine::GpSimd,
                &[rows.buf],
                span,
            );
        }
        rows
    }

    /// q^T of a stacked tile (`Stacking`): every lane's `sq` query rows loaded on the
    /// partitions of its slot of one tile whose padding rows are zero, then transposed by
    /// GpSimd (no PSUM bank, no copy for Vector and Scalar), one tile per chunk of D, with
    /// lane `i`'s queries in the columns from `i * slot`.
    fn stacked_qt(
        &mut self,
        rows: Tile,
        qos: &[&Operand2d],
        d: u64,
        sq: u64,
        slot: u64,
        span: crate::frontend::typed::Span,
    ) -> Vec<Tile> {
        let parts = rows.parts;
        let dtype = rows.dtype;
        for (li, qo) in qos.iter().enumerate() {
            let p0 = (li as u64 * slot) as u32;
            let src = hbm_ap(dtype, qo.offset, &[(sq, qo.x_stride), (d, qo.k_stride)]);
            self.out.push(
                Op::Dma {
                    dst: DmaAp::Tile(rows.slice(p0, sq as u32, 0, d as u32)),
                    src: DmaAp::Hbm(src),
                },
                Engine::Dma(0),
                &[rows.buf, qo.view.buf],
                span,
            );
        }
        (0..d.div_ceil(128))
            .map(|c| {
                let (k0, ksz) = (c * 128, 128.min(d - c * 128));
                let out = self.sbuf_tile(dtype, ksz as u32, parts);
                self.out.push(
                    Op::PartitionTranspose {
                        out: out.ap(),
                        src: rows.slice(0, parts, k0 as u32, ksz as u32),
                    },
                    Engine::GpSimd,
                    &[out.buf, rows.buf],
                    span,
                );
                out
            })
            .collect()
    }

    /// The constant tiles of `DiagonalMask`, zeros set by Vector, their non-zero entries by
    /// GpSimd's `affine_select` (once a kernel).
    fn diagonal_mask(&mut self, span: crate::frontend::typed::Span) -> DiagonalMask {
        let eye2 = self.sbuf_tile(Dtype::Bf16, 128, 128);
        let neg = self.sbuf_tile(Dtype::Bf16, 128, NEG_COLS);
        for t in [eye2, neg] {
            self.out.push(
                Op::Memset {
                    out: t.ap(),
                    value: Imm::new(0.0),
                },
                Engine::Vector,
                &[t.buf],
                span,
            );
        }
        // eye2 = (p - c != 0) ? 0 : 2.
        self.out.push(
            Op::AffineSelect {
                out: eye2.ap(),
                src: eye2.ap(),
                cmp: CmpOp::Ne,
                expr: Affine {
                    base: 0,
                    partition_step: 1,
                    steps: smallvec![-1],
                },
                fill: Imm::new(2.0),
            },
            Engine::GpSimd,
            &[eye2.buf, eye2.buf],
            span,
        );
        // neg = (p + 128 - c >= 0) ? 0 : -max_bf16. Twice the largest finite bf16 overflows
        // f32 (3.39e38 * 2 > 3.40e38), whatever the score it is added to.
        let max_bf16 = f32::from_bits(0x7f7f_0000);
        self.out.push(
            Op::AffineSelect {
                out: neg.ap(),
                src: neg.ap(),
                cmp: CmpOp::Ge,
                expr: Affine {
                    base: 128,
                    partition_step: 1,
                    steps: smallvec![-1],
                },
                fill: Imm::new(-max_bf16),
            },
            Engine::GpSimd,
            &[neg.buf, neg.buf],
            span,
        );
        DiagonalMask { eye2, neg }
    }

    /// Masks the chunk `out` of scores (`parts` query rows, row `r` masking the chunk's
    /// columns `c > r + offset`) on the PE array: `out += eye2^T @ neg[.., 128 - offset..]`,
    /// which adds -inf where a row masks the key and 0 elsewhere (`DiagonalMask`). The
    /// matmul extends the chunk's accumulation group (same bytes), so the scores come out
    /// of PSUM masked: the maximum and the exponentials read them in place, as they read an
    /// unmasked block (causal, S = 2048, 8 heads: the copies out of PSUM, Vector's selects
    /// and GpSimd's `affine_select`s of the diagonal blocks were 5,600 Vector and Scalar
    /// and 4,600 GpSimd cycles a head, all on the softmax's chain).
    fn mask_chunk(
        &mut self,
        tri: DiagonalMask,
        out: Tile,
        offset: i64,
        span: crate::frontend::typed::Span,
    ) {
        let (parts, cols) = (out.parts, out.cols);
        let first = 128 - offset;
        debug_assert!(first >= 0 && first as u64 + cols as u64 <= NEG_COLS as u64);
        self.out.push(
            Op::Matmul {
                out: out.ap(),
                stationary: tri.eye2.slice(0, parts, 0, parts),
                moving: tri.neg.slice(0, parts, first as u32, cols),
                accumulate: true,
            },
            Engine::Tensor,
            &[out.buf, tri.eye2.buf, tri.neg.buf],
            span,
        );
    }

    /// The scores of one key block of one query tile: in PSUM (a causal diagonal masked
    /// there, `mask_chunk`), or scaled and masked in SBUF under a run-time mask.
    #[allow(clippy::too_many_arguments)]
    fn attention_scores(
        &mut self,
        a: &Attention,
        st: &QueryTile,
        (kvs, kv_of): (&[KvTiles], &[usize]),
        (j0, kb): (u64, u64),
        tri: &mut Option<DiagonalMask>,
        mask: Option<&MaskOperand>,
        span: crate::frontend::typed::Span,
    ) -> Tile {
        let (m0, msz) = (st.m0, st.msz);
        // Scores s = q k^T for this block, 128 keys per matmul.
        let s = self.psum_tile(Dtype::F32, msz, kb);
        if !st.lanes.is_empty() {
            // A stacked tile: each lane's scores on its slot's partitions, from its
            // head's K^T and its columns of q^T, then the run-time mask.
            let slot = msz / st.lanes.len() as u64;
            let mut c0 = 0;
            while c0 < kb {
                let cs = 128.min(kb - c0);
                let chunk = ((j0 + c0) / 128) as usize;
                for (li, &h) in st.lanes.iter().enumerate() {
                    let p0 = (li as u64 * slot) as u32;
                    for (di, q) in st.qt.iter().enumerate() {
                        let kt = kvs[kv_of[h]].kt[chunk][di];
                        self.out.push(
                            Op::Matmul {
                                out: s.slice(p0, slot as u32, c0 as u32, cs as u32),
                                stationary: q.slice(0, q.parts, p0, slot as u32),
                                moving: kt.slice(0, kt.parts, 0, cs as u32),
                                accumulate: di > 0,
                            },
                            Engine::Tensor,
                            &[s.buf, q.buf, kt.buf],
                            span,
                        );
                    }
                }
                c0 += cs;
            }
            return match mask {
                Some(mk) => self.attention_mask(a, st, s, (j0, kb), mk, span),
                None => s,
            };
        }
        let kt_tiles = &kvs[kv_of[st.head]].kt;
        let mut c0 = 0;
        while c0 < kb {
            let cs = 128.min(kb - c0);
            let chunk = ((j0 + c0) / 128) as usize;
            let slice = Tile {
                cols: cs as u32,
                col_offset: s.col_offset + c0 as u32,
                ..s
            };
            for (di, q) in st.qt.iter().enumerate() {
                // The chunk's first `cs` keys (fewer than K^T's tile holds where the keys
                // no row sees are left out, `keys_seen`).
                let kt = Tile {
                    cols: cs as u32,
                    ..kt_tiles[chunk][di]
                };
                self.matmul(slice, *q, kt, di > 0, span);
            }
            // Under a causal mask, row `r` masks the chunk's columns `c > r + offset`: a
            // chunk that crosses the diagonal is masked on the PE array (`mask_chunk`).
            if let (Some(k), None) = (a.tril, mask) {
                let offset = (m0 as i64).saturating_add(k) - (j0 + c0) as i64;
                if offset < cs as i64 - 1 {
                    let tri = *tri.get_or_insert_with(|| self.diagonal_mask(span));
                    self.mask_chunk(tri, slice, offset, span);
                }
            }
            c0 += cs;
        }
        if let Some(mk) = mask {
            return self.attention_mask(a, st, s, (j0, kb), mk, span);
        }
        s
    }

    /// The ring of mask tiles of stacked tiles with padding rows (`MaskRing`), all set to
    /// zero once.
    fn mask_ring(
        &mut self,
        view: &HView,
        slots: usize,
        width: u32,
        span: crate::frontend::typed::Span,
    ) -> MaskRing {
        let tile = self.sbuf_tile(view.dtype, 128, slots as u32 * width);
        self.out.push(
            Op::Memset {
                out: tile.ap(),
                value: Imm::new(0.0),
            },
            Engine::Vector,
            &[tile.buf],
            span,
        );
        MaskRing {
            tile,
            slots,
            width,
            next: std::cell::Cell::new(0),
        }
    }

    /// A stacked tile's mask for keys `j0..j0 + kb`: each lane loads its head's rows into
    /// its slot, in a tile of the ring when there is one (padding rows).
    fn stacked_mask(
        &mut self,
        mk: &MaskOperand,
        st: &QueryTile,
        (j0, kb): (u64, u64),
        span: crate::frontend::typed::Span,
    ) -> Tile {
        let parts = st.msz as u32;
        let mt = match &mk.ring {
            Some(r) => r.take(parts, kb as u32),
            None => self.sbuf_tile(mk.view.dtype, parts, kb as u32),
        };
        let slot = st.msz / st.lanes.len().max(1) as u64;
        for (li, &h) in st.lanes.iter().enumerate() {
            let p0 = (li as u64 * slot) as u32;
            let base = mk.offsets[h] + j0 as i64 * mk.key_stride;
            let dims = [(mk.rows, mk.row_stride), (kb, mk.key_stride)];
            let src = hbm_ap(mk.view.dtype, base, &dims);
            self.out.push(
                Op::Dma {
                    dst: DmaAp::Tile(mt.slice(p0, mk.rows as u32, 0, kb as u32)),
                    src: DmaAp::Hbm(src),
                },
                Engine::Dma(0),
                &[mt.buf, mk.view.buf],
                span,
            );
        }
        mt
    }

    /// Applies the run-time mask to one block of scores `s` (in PSUM) of one query tile
    /// and returns the masked scores. The mask's block is loaded (each lane of a stacked
    /// tile loads its head's rows into its slot); an additive mask is added to the scaled scores, rounded as the reference rounds
    /// `s * c + mask` (two f32 operations); a `where` mask selects, on the unscaled scores
    /// when its fill has an unscaled equivalent (`SelectMask::unscaled_fill`: the
    /// exponentials then scale), else on the scaled ones. Everything is done in place in
    /// PSUM. The select copies each kept score's bits and writes the fill's at each masked
    /// one: exact for every score, +inf and NaN included (an addition of -inf would give
    /// NaN there).
    fn attention_mask(
        &mut self,
        a: &Attention,
        st: &QueryTile,
        s: Tile,
        (j0, kb): (u64, u64),
        mk: &MaskOperand,
        span: crate::frontend::typed::Span,
    ) -> Tile {
        let parts = st.msz as u32;
        let mt = if !st.lanes.is_empty() {
            self.stacked_mask(mk, st, (j0, kb), span)
        } else {
            let mt = self.sbuf_tile(mk.view.dtype, parts, kb as u32);
            let base = mk.offsets[st.head] + st.m0 as i64 * mk.row_stride;
            let base = base + j0 as i64 * mk.key_stride;
            let (rows, cols) = ((st.msz, mk.row_stride), (kb, mk.key_stride));
            self.dma_2d(mt, &mk.view, base, rows, cols, span);
            mt
        };
        // The scaled scores, in place in PSUM (an SBUF tile for them made the Llama-3
        // decode step spill), on the Scalar engine (`identity(s * c + -0)`, the same
        // bits): Vector, the busier engine here, has the mask's addition or select.
        let scaled = |this: &mut Self| {
            let op = Op::TensorScalar {
                out: s.ap(),
                src: s.ap(),
                op0: AluOp::Mul,
                s0: ScalarArg::imm(a.scale),
                op1: AluOp::Bypass,
                s1: ScalarArg::imm(0.0),
            };
            this.push_vector_work(op, &[s.buf, s.buf], true, span);
            s
        };
        let Some((fill, keep_if)) = mk.select else {
            let out = scaled(self);
            self.out.push(
                Op::TensorTensor {
                    op: AluOp::Add,
                    out: out.ap(),
                    a: out.ap(),
                    b: mt.ap(),
                },
                Engine::Vector,
                &[out.buf, out.buf, mt.buf],
                span,
            );
            return out;
        };
        let out = if a.prescaled() { scaled(self) } else { s };
        let mut fill_ap = fill.slice(0, parts, 0, 1);
        fill_ap.dims = smallvec![isa::Dim {
            size: kb as u32,
            stride: 0
        }];
        // The operands' buffers go in the instruction's operand order.
        let ((x, xb), (y, yb)) = if keep_if {
            ((out.ap(), out.buf), (fill_ap, fill.buf))
        } else {
            ((fill_ap, fill.buf), (out.ap(), out.buf))
        };
        self.out.push(
            Op::Select {
                out: out.ap(),
                mask: mt.ap(),
                a: x,
                b: y,
            },
            Engine::Vector,
            &[out.buf, mt.buf, xb, yb],
            span,
        );
        out
    }

    /// The softmax part of one key block of one query tile, given its scores `src`:
    /// running max and sum, and the probabilities; returns them and the rescale factor.
    #[allow(clippy::too_many_arguments)]
    fn attention_softmax(
        &mut self,
        a: &Attention,
        st: &mut QueryTile,
        src: Tile,
        kb: u64,
        p_dtype: Dtype,
        shared: Option<(Tile, Option<Tile>)>,
        span: crate::frontend::typed::Span,
    ) -> (Tile, Option<Tile>, Tile) {
        // The scores may come scaled (`attention_mask`).
        let c = if a.prescaled() { 1.0 } else { a.scale };
        let parts = st.msz as u32;
        // The block's maximum and nb_new = min(nb, -c * max(s)) = -c * max(m, max(s))
        // exactly (x -> -c * x, rounded, never increases) in one Vector instruction
        // (`tensor_reduce_scalar`: the reduction's epilogue costs nothing; bench, S = 4096:
        // 253,709 -> 251,266 cycles), then alpha = exp(nb_new - nb) = exp(c*m - c*m_new) on
        // Scalar, which then needs only nb_new for the block.
        // `shared`: the bias goes to the tile's column of the block's shared tile, and
        // alpha, when given, is computed by the caller for every tile at once.
        let bias = match shared {
            Some((col, _)) => col,
            None => self.sbuf_tile(Dtype::F32, parts, 1),
        };
        // The first block: nb = min(-c * max(s), f32::MAX). A row whose scores so far
        // are all -inf (a run-time mask, or q . k overflowing f32 from finite inputs) then
        // keeps a finite bias, its exponentials are exp(-inf) = 0 instead of
        // exp(-inf + inf) = NaN, and later blocks take the minimum with it, so it stays
        // finite; a row whose every score is -inf still ends as 0 / 0 = NaN, as in the
        // language. Finite scores give the same bits as without the minimum
        // (`tests/flash_infinite_scores.rs`).
        let (op1, s1, bufs) = match st.nb_run {
            None => (
                AluOp::Min,
                ScalarArg::imm(f32::MAX),
                vec![bias.buf, src.buf],
            ),
            Some(nb) => (
                AluOp::Min,
                ScalarArg::Ap(nb.ap()),
                vec![bias.buf, src.buf, nb.buf],
            ),
        };
        self.out.push(
            Op::TensorReduceScalar {
                op: ReduceOp::Max,
                out: bias.ap(),
                src: src.ap(),
                op0: AluOp::Mul,
                s0: ScalarArg::imm(-c),
                op1,
                s1,
            },
            Engine::Vector,
            &bufs,
            span,
        );
        let later = shared.and_then(|(_, alpha)| alpha);
        let alpha = st.nb_run.map(|nb| {
            (
                nb,
                later.unwrap_or_else(|| self.sbuf_tile(Dtype::F32, parts, 1)),
            )
        });
        if let (Some((nb, alpha)), None) = (alpha, later) {
            self.out.push(
                Op::Activate {
                    out: alpha.ap(),
                    src: nb.ap(),
                    func: ActFunc::Exp,
                    scale: ScalarArg::imm(-1.0),
                    bias: ScalarArg::Ap(bias.ap()),
                    accum: None,
                },
                Engine::Scalar,
                &[alpha.buf, nb.buf, bias.buf],
                span,
            );
        }
        // p = exp(c*s - c*m_new) and its row sum, in one activation.
        let p = self.sbuf_tile(p_dtype, parts, kb as u32);
        let lb = self.sbuf_tile(Dtype::F32, parts, 1);
        self.out.push(
            Op::Activate {
                out: p.ap(),
                src: src.ap(),
                func: ActFunc::Exp,
                scale: ScalarArg::imm(c),
                bias: ScalarArg::Ap(bias.ap()),
                accum: Some(lb.ap()),
            },
            Engine::Scalar,
            &[p.buf, src.buf, bias.buf, lb.buf],
            span,
        );
        st.nb_run = Some(bias);
        (p, alpha.map(|(_, alpha)| alpha), lb)
    }

    /// l = l * alpha + lb (one instruction with two per-row operands; a column, which the
    /// `engines` pass gives to GpSimd), or lb itself for the first block.
    fn attention_running_sum(
        &mut self,
        st: &mut QueryTile,
        alpha: Option<Tile>,
        lb: Tile,
        span: crate::frontend::typed::Span,
    ) {
        let parts = st.msz as u32;
        st.l_run = Some(match (alpha, st.l_run) {
            (Some(alpha), Some(l_run)) => {
                let l_new = self.sbuf_tile(Dtype::F32, parts, 1);
                self.out.push(
                    Op::TensorScalar {
                        out: l_new.ap(),
                        src: l_run.ap(),
                        op0: AluOp::Mul,
                        s0: ScalarArg::Ap(alpha.ap()),
                        op1: AluOp::Add,
                        s1: ScalarArg::Ap(lb.ap()),
                    },
                    Engine::Vector,
                    &[l_new.buf, l_run.buf, alpha.buf, lb.buf],
                    span,
                );
                l_new
            }
            _ => lb,
        });
    }

    /// Whether the p^T of two query tiles of a key block fit one PSUM bank: full tiles of
    /// 128 queries, the chunks that the PE array transposes side by side.
    fn pair_fits(&self, states: &[QueryTile], kb: u64, p_dtype: Dtype, gpsimd: usize) -> bool {
        let on_pe = pe_chunks(kb, gpsimd).len() as u64;
        states.len() >= 2
            && states.iter().all(|st| st.msz == 128)
            && 2 * on_pe * 128 * p_dtype.size() as u64 <= 2048
    }

    /// The PSUM bank (and its SBUF copy) of p^T for `slots` query tiles of `width`
    /// queries each (128 for a pair) of a key block of `kb` keys, the last `gpsimd` chunks
    /// of which GpSimd transposes.
    fn pt_bank(
        &mut self,
        slots: u32,
        width: u32,
        kb: u64,
        p_dtype: Dtype,
        on_scalar: bool,
        gpsimd: usize,
    ) -> PtBank {
        let chunks = pe_chunks(kb, gpsimd);
        let cols = chunks.len() as u64 * slots as u64 * width as u64;
        PtBank {
            psum: self.psum_tile(p_dtype, 128.min(kb), cols),
            sbuf: self.sbuf_tile(p_dtype, 128.min(kb) as u32, cols as u32),
            slots,
            width,
            chunks,
            on_scalar,
        }
    }

    /// p^T for one block (keys from `j0`) of one query tile, in slot `slot` of `bank`:
    /// one tile per chunk of 128 keys, with the chunk's first key. The chunks go to the
    /// PE array side by side into the bank (copied out by `copy_pt_bank`), except the last
    /// GPSIMD_CHUNKS (never the only one), which GpSimd's `partition_transpose` moves SBUF
    /// to SBUF: no copy for Vector and Scalar, the bottleneck. GpSimd's in-order stream
    /// holds nothing else on the softmax's path (bench, S = 4096: none 326,912 cycles,
    /// one of four 315,872, two 369,184 as GpSimd, at 576 cycles a chunk, becomes the
    /// bottleneck, one and two in turn 330,944).
    #[allow(clippy::too_many_arguments)]
    fn attention_transpose(
        &mut self,
        st: &QueryTile,
        p: Tile,
        j0: u64,
        kb: u64,
        bank: &PtBank,
        slot: usize,
        span: crate::frontend::typed::Span,
    ) -> Vec<(u64, Tile)> {
        let parts = st.msz as u32;
        let mut tiles = Vec::new();
        for (ci, &(c0, cs)) in bank.chunks.iter().enumerate() {
            let col = bank.col(ci, slot);
            self.out.push(
                Op::Transpose {
                    out: bank.psum.slice(0, cs as u32, col, parts),
                    src: p.slice(0, parts, c0 as u32, cs as u32),
                },
                Engine::Tensor,
                &[bank.psum.buf, p.buf],
                span,
            );
            let tile = Tile {
                parts: cs as u32,
                cols: parts,
                col_offset: bank.sbuf.col_offset + col,
                ..bank.sbuf
            };
            tiles.push((j0 + c0, tile));
        }
        let all = kb.div_ceil(128);
        for i in bank.chunks.len() as u64..all {
            let (c0, cs) = (i * 128, 128.min(kb - i * 128));
            let out = self.sbuf_tile(p.dtype, cs as u32, parts);
            self.out.push(
                Op::PartitionTranspose {
                    out: out.ap(),
                    src: p.slice(0, parts, c0 as u32, cs as u32),
                },
                Engine::GpSimd,
                &[out.buf, p.buf],
                span,
            );
            tiles.push((j0 + c0, out));
        }
        tiles
    }

    /// Copies what the transposes wrote into `bank` to SBUF: the full 128-key chunks of
    /// every slot in one instruction, a last shorter chunk (fewer partitions) in another;
    /// on the Scalar engine as an identity activation (exactly the copy) when the bank is
    /// Scalar's.
    fn copy_pt_bank(&mut self, bank: &PtBank, span: crate::frontend::typed::Span) {
        let full = bank.chunks.iter().filter(|c| c.1 == 128).count() as u32;
        let w = bank.width;
        let mut pieces = Vec::new();
        if full > 0 {
            pieces.push((128u32, 0, full * bank.slots * w));
        }
        if let Some(&(_, cs)) = bank.chunks.last().filter(|c| c.1 < 128) {
            pieces.push((cs as u32, full * bank.slots * w, bank.slots * w));
        }
        for (pn, c0, cn) in pieces {
            let (dst, src) = (
                bank.sbuf.slice(0, pn, c0, cn),
                bank.psum.slice(0, pn, c0, cn),
            );
            let bufs = [bank.sbuf.buf, bank.psum.buf];
            let copy = Op::TensorCopy { out: dst, src };
            self.push_vector_work(copy, &bufs, bank.on_scalar, span);
        }
    }

    /// Vector work, or its exact Scalar form (`engines::scalar_form`, the rewrite the
    /// `engines` pass would make) when `on_scalar`: attention plans that split itself.
    fn push_vector_work(
        &mut self,
        op: Op,
        bufs: &[Buf],
        on_scalar: bool,
        span: crate::frontend::typed::Span,
    ) {
        let vector = TileInst {
            op,
            engine: Engine::Vector,
            bufs: bufs.iter().copied().collect(),
        };
        match on_scalar.then(|| scalar_form(&vector)).flatten() {
            Some((op, bufs)) => self.out.push(op, Engine::Scalar, &bufs, span),
            None => self.out.push(vector.op, Engine::Vector, &vector.bufs, span),
        };
    }

    /// o = o * alpha, in PSUM (on the Scalar engine as `identity(o * alpha)`, the same
    /// bits, when asked).
    fn attention_rescale(
        &mut self,
        st: &QueryTile,
        alpha: Tile,
        on_scalar: bool,
        span: crate::frontend::typed::Span,
    ) {
        if self.drop_rescale {
            return;
        }
        // A stacked tile's lanes accumulate apart (each lane's p @ v is a PSUM
        // accumulation group of its own slot), so each is rescaled apart.
        let lanes = st.lanes.len().max(1) as u32;
        let slot = st.o.parts / lanes;
        for li in 0..lanes {
            let p0 = li * slot;
            let o = st.o.slice(p0, slot, 0, st.o.cols);
            let rescale = Op::TensorScalar {
                out: o.clone(),
                src: o,
                op0: AluOp::Mul,
                s0: ScalarArg::Ap(alpha.slice(p0, slot, 0, 1)),
                op1: AluOp::Bypass,
                s1: ScalarArg::imm(0.0),
            };
            let bufs = [st.o.buf, st.o.buf, alpha.buf];
            self.push_vector_work(rescale, &bufs, on_scalar, span);
        }
    }

    /// o += p @ v for chunks of p^T, each with its first key.
    fn attention_pv<'v>(
        &mut self,
        st: &QueryTile,
        pt: &[(u64, Tile)],
        v_of: impl Fn(usize) -> &'v [Option<Tile>],
        stacking: Option<Stacking>,
        fresh: bool,
        span: crate::frontend::typed::Span,
    ) -> Result<(), String> {
        if let (Some(stk), false) = (stacking, st.lanes.is_empty()) {
            // A stacked tile: each lane multiplies its columns of p^T with its head's V
            // into its slot's rows of the accumulator.
            for (li, &h) in st.lanes.iter().enumerate() {
                let p0 = (li as u64 * stk.slot) as u32;
                let v_tiles = v_of(h);
                for (n, &(key0, pt)) in pt.iter().enumerate() {
                    let v =
                        v_tiles[(key0 / 128) as usize].ok_or("attention: V chunk not loaded")?;
                    self.out.push(
                        Op::Matmul {
                            out: st.o.slice(p0, stk.slot as u32, 0, st.o.cols),
                            stationary: pt.slice(0, pt.parts, p0, stk.slot as u32),
                            moving: v.slice(0, pt.parts, 0, v.cols),
                            accumulate: !(fresh && n == 0),
                        },
                        Engine::Tensor,
                        &[st.o.buf, pt.buf, v.buf],
                        span,
                    );
                }
            }
            return Ok(());
        }
        let v_tiles = v_of(st.head);
        for (n, &(key0, stationary)) in pt.iter().enumerate() {
            let v = v_tiles[(key0 / 128) as usize].ok_or("attention: V chunk not loaded")?;
            // The keys of this chunk of p^T (fewer than V's tile holds where `keys_seen`
            // left keys out).
            let v = Tile {
                parts: stationary.parts,
                ..v
            };
            self.matmul(st.o, stationary, v, !(fresh && n == 0), span);
        }
        Ok(())
    }
}
