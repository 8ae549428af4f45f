//! Loads that read back what SBUF still holds, served from SBUF: a convolution's DMA
//! from HBM into a tile is dropped when an earlier transfer of the same bytes (a load of
//! the same input, or the store that wrote them) left them in another SBUF tile that is
//! still unchanged.
//!
//! Why: convolutions lowered one after the other exchange their results through HBM. In
//! ResNet-50's bottleneck block the first convolution's input `x` is read again for the
//! residual add, and each intermediate is stored as bf16 and loaded back by the next
//! convolution: 6.4 MB of 15.1 MB of DMA traffic for a kernel whose DMA queues are the
//! bottleneck. The values those loads fetch are still in SBUF when the convolutions run
//! image by image (`conv.rs`, `Tiler::chain_convs`).
//!
//! Two rewrites, each exact (the bytes read are the bytes the load would have written):
//! - *Rename*: when every writer of a tile buffer is such a load and each element comes
//!   from the same partition of one earlier tile at one fixed byte distance, the loads
//!   are removed and every reader of the buffer reads the earlier tile instead (the same
//!   partitions, offsets moved by that distance). Nothing is copied.
//! - *Copy*: otherwise, a load whose elements all come from one earlier tile, each on
//!   the same partition plus one fixed shift, becomes a copy between the two tiles: on
//!   the same partitions (a padded image's interior filled from a dense result tile) an
//!   engine copy on GpSimd (`64 + 4N`, where the load took the DMA queues' bandwidth),
//!   across partitions (the upper half of an image with taps packed, `conv.rs`) an
//!   SBUF-to-SBUF DMA, which moves the same bytes but needs no store before it. A
//!   same-dtype engine copy passes every value through f32 unchanged; a NaN becomes the
//!   canonical NaN, which no later instruction can tell apart.
//!
//! What an "earlier transfer" proves: a same-dtype DMA between an HBM buffer and an SBUF
//! tile (a *fact*) makes each byte of the one equal to the matching byte of the other.
//! For each element a load reads, the latest fact on its HBM address before the load is
//! used. It holds when no other instruction writes those HBM bytes between the fact and
//! the load, and no instruction writes the tile's bytes between the fact and the last
//! instruction that will read them in its place (buffers compared conservatively: any
//! other writer of the tile in that range rejects it). Stores that nothing reads any more
//! are removed afterwards ([`Tiler::drop_dead_scratch_stores`]), for compiler scratch
//! only, never for a kernel output.

use super::Tiler;
use crate::tile::{Buf, BufKind};
use isa::{Access, ApRef, DmaAp, Dtype, Engine, HbmAp, Op, Role, TileAp};
use std::collections::HashMap;

/// Every element of a tile pattern as (partition, byte offset), in the order a DMA walks
/// it: partition-major, then the free pattern in row-major order.
fn tile_elems(ap: &TileAp) -> Vec<(u32, i64)> {
    let es = ap.dtype.size() as i64;
    let free = offsets(ap.dims.iter().map(|d| (d.size as u64, d.stride as i64)));
    let mut out = Vec::with_capacity(free.len() * ap.partitions as usize);
    for p in 0..ap.partitions as u32 {
        for &f in &free {
            out.push((ap.partition as u32 + p, ap.offset as i64 + f * es));
        }
    }
    out
}

/// Every element of an HBM pattern as a byte address, in row-major order.
fn hbm_elems(ap: &HbmAp) -> Vec<i64> {
    let es = ap.dtype.size() as i64;
    offsets(ap.dims.iter().map(|d| (d.size, d.stride)))
        .into_iter()
        .map(|f| ap.offset as i64 + f * es)
        .collect()
}

/// The element offsets of a pattern of `(size, stride)` dimensions, row-major.
fn offsets(dims: impl Iterator<Item = (u64, i64)>) -> Vec<i64> {
    let mut out = vec![0i64];
    for (size, stride) in dims {
        let mut next = Vec::with_capacity(out.len() * size as usize);
        for &o in &out {
            for i in 0..size as i64 {
                next.push(o + i * stride);
            }
        }
        out = next;
    }
    out
}

/// A same-dtype transfer between an HBM buffer and an SBUF tile.
#[derive(Clone, Debug)]
struct Xfer {
    pos: usize,
    load: bool,
    hbm: Buf,
    tile: Buf,
    dtype: Dtype,
    h: HbmAp,
    t: TileAp,
}

/// Where a load's elements are in an earlier tile.
struct Source {
    tile: Buf,
    /// The dtype of the transfers that prove it (the load's).
    dtype: Dtype,
    /// The source's partition minus the load's, the same for every element.
    pshift: i64,
    /// Per element of the load (its DMA order): its partition in `tile`, its byte offset
    /// in `tile`, and the position of the fact that proves it.
    offs: Vec<(u32, i64, usize)>,
}

/// A transfer's claim about one element: its layout position, the tile, the partition,
/// the byte offset in the tile and the dtype.
type Fact = (usize, Buf, u32, i64, Dtype);

/// The loads into one buffer, each with where its elements are in an earlier tile.
type LoadsOf = Vec<(Xfer, Option<Source>)>;

/// The transfers of a region, indexed.
struct Facts {
    /// By HBM buffer and byte address: (position, tile, partition, byte offset, dtype).
    by_addr: HashMap<(Buf, i64), Vec<Fact>>,
    /// Tile elements written by loads: (tile, partition, byte offset) -> positions.
    loaded: HashMap<(Buf, u32, i64), Vec<usize>>,
    /// Positions and dtypes of the loads into each tile.
    loads_into: HashMap<Buf, Vec<(usize, Dtype)>>,
    /// The dtype of the store fact at each layout position, if it is one.
    stores: Vec<Option<Dtype>>,
}

impl Tiler<'_> {
    /// The transfer at layout position `pos`, if it is a same-dtype DMA between HBM and an
    /// SBUF tile.
    fn xfer_at(&self, pos: usize) -> Option<Xfer> {
        let inst = &self.out.insts[self.out.layout[pos]];
        let Op::Dma { dst, src } = &inst.op else {
            return None;
        };
        let (load, h, t) = match (dst, src) {
            (DmaAp::Tile(t), DmaAp::Hbm(h)) => (true, h, t),
            (DmaAp::Hbm(h), DmaAp::Tile(t)) => (false, h, t),
            _ => return None,
        };
        if h.dtype != t.dtype || h.elems() != t.elems() || inst.bufs.len() != 2 {
            return None;
        }
        let (tb, hb) = if load {
            (inst.bufs[0], inst.bufs[1])
        } else {
            (inst.bufs[1], inst.bufs[0])
        };
        if !self.out.bufs[tb].is_tile() || self.out.bufs[hb].is_tile() {
            return None;
        }
        Some(Xfer {
            pos,
            load,
            hbm: hb,
            tile: tb,
            dtype: h.dtype,
            h: h.clone(),
            t: t.clone(),
        })
    }

    /// Positions (from `start` on) of the instructions that write buffer `b`, and of those
    /// that only read it.
    fn accesses_of(&self, b: Buf, start: usize) -> (Vec<usize>, Vec<usize>) {
        let (mut w, mut r) = (Vec::new(), Vec::new());
        for (k, &t) in self.out.layout.iter().enumerate().skip(start) {
            let acc = self.out.insts[t].buf_accesses();
            if acc.iter().any(|&(x, a)| x == b && a == Access::Write) {
                w.push(k);
            } else if acc.iter().any(|&(x, _)| x == b) {
                r.push(k);
            }
        }
        (w, r)
    }

    /// Serves from SBUF the loads (from layout position `start` on) whose bytes an earlier
    /// transfer left in a tile that still holds them (see the module comment). Returns the
    /// layout positions (before the call) of the loads removed; loads turned into copies
    /// keep their places.
    pub(super) fn forward_conv_loads(&mut self, start: usize) -> Vec<usize> {
        let n = self.out.layout.len();
        let xfers: Vec<Xfer> = (start..n).filter_map(|k| self.xfer_at(k)).collect();
        if !xfers.iter().any(|x| x.load) {
            return Vec::new();
        }
        let mut ctx = Facts {
            by_addr: HashMap::new(),
            loaded: HashMap::new(),
            loads_into: HashMap::new(),
            stores: vec![None; n],
        };
        for x in &xfers {
            for (a, (p, o)) in hbm_elems(&x.h).into_iter().zip(tile_elems(&x.t)) {
                ctx.by_addr
                    .entry((x.hbm, a))
                    .or_default()
                    .push((x.pos, x.tile, p, o, x.dtype));
                if x.load {
                    ctx.loaded.entry((x.tile, p, o)).or_default().push(x.pos);
                }
            }
            if x.load {
                ctx.loads_into
                    .entry(x.tile)
                    .or_default()
                    .push((x.pos, x.dtype));
            } else {
                ctx.stores[x.pos] = Some(x.dtype);
            }
        }
        // The loads' sources, by destination buffer in the order of their first load.
        let mut by_dst: Vec<(Buf, LoadsOf)> = Vec::new();
        for x in xfers.iter().filter(|x| x.load) {
            let src = self.source_of(x, &ctx);
            match by_dst.iter_mut().find(|(b, _)| *b == x.tile) {
                Some((_, v)) => v.push((x.clone(), src)),
                None => by_dst.push((x.tile, vec![(x.clone(), src)])),
            }
        }
        // Renames: every writer of the buffer a load served from one tile at one distance,
        // every reader after the writers.
        let mut renames: Vec<(usize, Buf, i64, Vec<usize>)> = Vec::new();
        for (i, (dst, loads)) in by_dst.iter().enumerate() {
            let (writers, readers) = self.accesses_of(*dst, 0);
            let last_w = writers.iter().copied().max().unwrap_or(0);
            let last_r = readers.iter().copied().max().unwrap_or(0);
            if writers.len() != loads.len()
                || readers.is_empty()
                || readers.iter().any(|&r| r < last_w)
            {
                continue;
            }
            if let Some((tile, delta)) = self.rename_target(loads, last_r, &ctx) {
                renames.push((i, tile, delta, readers));
            }
        }
        // A fact that is a removed load proves nothing: cancel the renames that use one,
        // until none does.
        let used = |loads: &[(Xfer, Option<Source>)]| -> Vec<usize> {
            let mut v: Vec<usize> = loads
                .iter()
                .filter_map(|(_, s)| s.as_ref())
                .flat_map(|s| s.offs.iter().map(|o| o.2))
                .collect();
            v.sort_unstable();
            v.dedup();
            v
        };
        loop {
            let removed: Vec<usize> = renames
                .iter()
                .flat_map(|r| by_dst[r.0].1.iter().map(|(x, _)| x.pos))
                .collect();
            let before = renames.len();
            renames.retain(|r| !used(&by_dst[r.0].1).iter().any(|f| removed.contains(f)));
            if renames.len() == before {
                break;
            }
        }
        let removed: Vec<usize> = renames
            .iter()
            .flat_map(|r| by_dst[r.0].1.iter().map(|(x, _)| x.pos))
            .collect();
        // Copies, load by load, for the buffers not renamed.
        let mut copies: Vec<(usize, Op, [Buf; 2])> = Vec::new();
        for (i, (_, loads)) in by_dst.iter().enumerate() {
            if renames.iter().any(|r| r.0 == i) {
                continue;
            }
            for (x, src) in loads {
                let Some(src) = src else { continue };
                if src.offs.iter().any(|o| removed.contains(&o.2))
                    || !self.tile_holds(src, x.pos, &ctx)
                {
                    continue;
                }
                if let Some(ap) = fit_pattern(&x.t, src) {
                    // On the same partitions an engine copy; across partitions (the upper
                    // half of a packed image) a DMA from SBUF, which moves the same bytes
                    // as the load but needs no store before it.
                    let op = if src.pshift == 0 {
                        Op::TensorCopy {
                            out: x.t.clone(),
                            src: ap,
                        }
                    } else {
                        Op::Dma {
                            dst: DmaAp::Tile(x.t.clone()),
                            src: DmaAp::Tile(ap),
                        }
                    };
                    copies.push((x.pos, op, [x.tile, src.tile]));
                }
            }
        }
        for (i, tile, delta, readers) in &renames {
            let dst = by_dst[*i].0;
            for &r in readers {
                let t = self.out.layout[r];
                let inst = &mut self.out.insts[t];
                let bufs = inst.bufs.clone();
                let mut k = 0;
                inst.op.visit_aps_mut(&mut |ap, _| {
                    if let (isa::ApMut::Tile(ap), Some(&b)) = (ap, bufs.get(k)) {
                        if b == dst {
                            ap.offset = (ap.offset as i64 + delta) as u32;
                        }
                    }
                    k += 1;
                });
                for b in inst.bufs.iter_mut() {
                    if *b == dst {
                        *b = *tile;
                    }
                }
            }
        }
        // A copy takes the load's place and its instruction's identity.
        for (pos, op, bufs) in copies {
            let inst = &mut self.out.insts[self.out.layout[pos]];
            if matches!(op, Op::TensorCopy { .. }) {
                inst.engine = Engine::GpSimd;
            }
            inst.op = op;
            inst.bufs = bufs.iter().copied().collect();
        }
        let mut k = 0;
        self.out.layout.retain(|_| {
            k += 1;
            !removed.contains(&(k - 1))
        });
        let mut removed = removed;
        removed.sort_unstable();
        removed
    }

    /// Where load `x`'s elements are: each from the latest fact on its HBM address before
    /// `x`, all in one tile on the same partitions, with no other writer of those HBM
    /// bytes in between.
    fn source_of(&self, x: &Xfer, ctx: &Facts) -> Option<Source> {
        let mut tile = None;
        let mut shift = None;
        let mut offs = Vec::new();
        let addrs = hbm_elems(&x.h);
        for (&a, (p, _)) in addrs.iter().zip(tile_elems(&x.t)) {
            let &(fpos, ft, fp, fo, _) = ctx
                .by_addr
                .get(&(x.hbm, a))?
                .iter()
                .filter(|f| f.0 < x.pos && f.1 != x.tile && f.4 == x.dtype)
                .max_by_key(|f| f.0)?;
            let d = fp as i64 - p as i64;
            if *shift.get_or_insert(d) != d || *tile.get_or_insert(ft) != ft {
                return None;
            }
            offs.push((fp, fo, fpos));
        }
        let (tile, pshift) = (tile?, shift?);
        // No writer of the HBM bytes other than a store fact of `x`'s dtype (which would be
        // the latest fact of the addresses it writes) between the first fact and `x`.
        let first = offs.iter().map(|o| o.2).min()?;
        let lo = *addrs.iter().min()?;
        let hi = *addrs.iter().max()? + x.dtype.size() as i64;
        for k in first + 1..x.pos {
            if ctx.stores[k] == Some(x.dtype) {
                continue;
            }
            let inst = &self.out.insts[self.out.layout[k]];
            let mut i = 0;
            let mut hit = false;
            inst.op.visit_aps(&mut |ap, acc| {
                if let (ApRef::Hbm(h), Access::Write, Some(&b)) = (ap, acc, inst.bufs.get(i)) {
                    let (a0, a1) = super::conv::hbm_span(h);
                    hit |= b == x.hbm && a0 < hi && lo < a1;
                }
                i += 1;
            });
            if hit {
                return None;
            }
        }
        Some(Source {
            tile,
            dtype: x.dtype,
            pshift,
            offs,
        })
    }

    /// Whether `src`'s tile still holds the proven bytes up to position `until`: no
    /// instruction but a load writes the tile between the first fact and `until`, and no
    /// load writes one of the elements used after that element's fact.
    fn tile_holds(&self, src: &Source, until: usize, ctx: &Facts) -> bool {
        let Some(first) = src.offs.iter().map(|o| o.2).min() else {
            return false;
        };
        let none = Vec::new();
        let loads = ctx.loads_into.get(&src.tile).unwrap_or(&none);
        let (writers, _) = self.accesses_of(src.tile, 0);
        // Loads of another dtype may write parts of the elements: not allowed either.
        let allowed = |w: usize| loads.iter().any(|&(k, d)| k == w && d == src.dtype);
        if writers
            .iter()
            .any(|&w| w > first && w <= until && !allowed(w))
        {
            return false;
        }
        src.offs.iter().all(|&(p, o, f)| {
            ctx.loaded
                .get(&(src.tile, p, o))
                .is_none_or(|v| v.iter().all(|&w| w <= f || w > until))
        })
    }

    /// The tile and byte distance every load of one buffer may be renamed to, when each
    /// element of every load comes from the same tile at one distance and that tile holds
    /// its bytes until `last_r`.
    fn rename_target(
        &self,
        loads: &[(Xfer, Option<Source>)],
        last_r: usize,
        ctx: &Facts,
    ) -> Option<(Buf, i64)> {
        let mut target: Option<(Buf, i64)> = None;
        for (x, src) in loads {
            let src = src.as_ref().filter(|s| s.pshift == 0)?;
            for ((_, o), &(_, fo, _)) in tile_elems(&x.t).iter().zip(&src.offs) {
                let d = fo - o;
                if *target.get_or_insert((src.tile, d)) != (src.tile, d) {
                    return None;
                }
            }
            if !self.tile_holds(src, last_r, ctx) {
                return None;
            }
        }
        target
    }

    /// Removes stores into compiler scratch in HBM whose bytes no instruction reads (after
    /// [`Self::forward_conv_loads`] served their readers from SBUF). A kernel output is
    /// never touched.
    pub(super) fn drop_dead_scratch_stores(&mut self) -> usize {
        let scratch = |b: Buf| {
            matches!(
                &self.out.bufs[b].kind,
                BufKind::Hbm {
                    role: Role::Scratch,
                    ..
                }
            )
        };
        let mut reads: HashMap<Buf, Vec<(i64, i64)>> = HashMap::new();
        let mut stores: Vec<(usize, Buf, (i64, i64))> = Vec::new();
        for (k, &t) in self.out.layout.iter().enumerate() {
            let inst = &self.out.insts[t];
            let mut i = 0;
            let only_store = matches!(
                &inst.op,
                Op::Dma {
                    dst: DmaAp::Hbm(_),
                    src: DmaAp::Tile(_)
                }
            );
            inst.op.visit_aps(&mut |ap, acc| {
                if let (ApRef::Hbm(h), Some(&b)) = (ap, inst.bufs.get(i)) {
                    let span = super::conv::hbm_span(h);
                    match acc {
                        Access::Read => reads.entry(b).or_default().push(span),
                        Access::Write if only_store && scratch(b) => stores.push((k, b, span)),
                        Access::Write => {}
                    }
                }
                i += 1;
            });
        }
        let dead: Vec<usize> = stores
            .into_iter()
            .filter(|(_, b, (lo, hi))| {
                !reads
                    .get(b)
                    .is_some_and(|v| v.iter().any(|&(a0, a1)| a0 < *hi && *lo < a1))
            })
            .map(|s| s.0)
            .collect();
        let mut k = 0;
        self.out.layout.retain(|_| {
            k += 1;
            !dead.contains(&(k - 1))
        });
        dead.len()
    }
}

/// A pattern on `src.tile` that walks its elements in the order `dst` walks the load's:
/// `dst`'s partitions and dimensions, each dimension's stride read off the offsets.
fn fit_pattern(dst: &TileAp, src: &Source) -> Option<TileAp> {
    let es = dst.dtype.size() as i64;
    let offs: Vec<i64> = src.offs.iter().map(|o| o.1).collect();
    let base = *offs.first()?;
    let mut dims = dst.dims.clone();
    // Element index steps of each dimension in the walk (row-major).
    let mut step = 1usize;
    for d in dims.iter_mut().rev() {
        if d.size > 1 {
            let diff = offs.get(step)? - base;
            if diff % es != 0 {
                return None;
            }
            d.stride = i32::try_from(diff / es).ok()?;
        }
        step *= d.size as usize;
    }
    if base < 0 {
        return None;
    }
    let partition = u8::try_from(dst.partition as i64 + src.pshift).ok()?;
    let ap = TileAp {
        mem: dst.mem,
        dtype: dst.dtype,
        partition,
        partitions: dst.partitions,
        offset: u32::try_from(base).ok()?,
        dims,
    };
    // Every element where the pattern says (partitions were checked to be shifted alike).
    let walk = tile_elems(&ap);
    (walk.len() == offs.len() && walk.iter().zip(&offs).all(|(w, o)| w.1 == *o)).then_some(ap)
}
