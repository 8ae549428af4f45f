//! The `alloc` pass (required): places every buffer in memory.
//!
//! HBM: inputs in declaration order, then outputs, then scratch, each at the next 64-byte
//! boundary from 0. SBUF and PSUM: from liveness over program order, where a buffer is
//! live from the layout position of its first access to that of its last. Every tile
//! buffer starts at partition 0 and takes its partitions and a byte range in all of them.
//!
//! SBUF byte ranges are allocated *next-fit*: a cursor rotates through the partition's
//! bytes and each buffer goes into the first gap at or after it (64-byte aligned), wrapping
//! around to the start when the end is reached. A buffer freed a moment ago is therefore
//! not reused at once, so the DMA that fills the next tile can overlap the compute that
//! reads the current one: multi-buffering without the tile pass asking for it. PSUM
//! buffers each take one whole 2 KiB bank (so none crosses a bank), the banks used in
//! rotation the same way.
//!
//! When SBUF has no gap large enough, a live buffer is spilled: the one whose next use is
//! furthest away (Belady's choice) among those the current instruction does not use. A DMA
//! stores the part of it written so far to a new HBM scratch buffer right after its last
//! access before the current point; a DMA loads it into a fresh buffer just before its next
//! use; later instructions are renamed to the fresh buffer. A buffer larger than its whole
//! memory, or more PSUM buffers live at once than there are banks, is an internal error.

use super::engines::dma_bytes;
use super::Compilation;
use crate::tile::{Buf, BufData, BufKind, Placement, TInst, TileFunc, TileInst};
use cranelift_entity::EntityRef;
use isa::{DmaAp, Dtype, Engine, Geometry, HbmAp, Op, Role, TileAp, NUM_DMA_QUEUES};
use std::collections::BTreeMap;

/// Alignment of HBM tensors and of SBUF byte ranges.
const ALIGN: u64 = 64;

/// What allocation did, for tests and statistics.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AllocStats {
    /// Buffers spilled to HBM.
    pub spills: usize,
    /// Bytes of HBM used.
    pub hbm_bytes: u64,
}

/// The pass: nothing to do before the tile pass has produced tile IR.
pub fn run(c: &mut Compilation) -> Result<bool, String> {
    let geometry = c.options.preset.geometry();
    match c.tile.as_mut() {
        Some(func) => allocate(func, &geometry).map(|_| true),
        None => Ok(false),
    }
}

fn align_up(x: u64, a: u64) -> u64 {
    x.div_ceil(a).saturating_mul(a)
}

/// A next-fit allocator of byte ranges in `[0, size)`.
struct NextFit {
    /// Occupied ranges: start -> (end, owner).
    occupied: BTreeMap<u64, (u64, Buf)>,
    cursor: u64,
    size: u64,
}

impl NextFit {
    /// The first aligned gap of `bytes` at or after `from`.
    fn find(&self, from: u64, bytes: u64) -> Option<u64> {
        let mut p = align_up(from, ALIGN);
        if let Some((_, &(end, _))) = self.occupied.range(..=p).next_back() {
            if end > p {
                p = align_up(end, ALIGN);
            }
        }
        for (&start, &(end, _)) in self.occupied.range(p..) {
            if start >= p.saturating_add(bytes) {
                break;
            }
            p = p.max(align_up(end, ALIGN));
        }
        (p.saturating_add(bytes) <= self.size).then_some(p)
    }

    /// Takes `bytes` at the first gap from the cursor, wrapping around once.
    fn alloc(&mut self, bytes: u64, owner: Buf) -> Option<u64> {
        let p = self
            .find(self.cursor, bytes)
            .or_else(|| self.find(0, bytes))?;
        if bytes > 0 {
            self.occupied.insert(p, (p + bytes, owner));
        }
        self.cursor = if p + bytes >= self.size { 0 } else { p + bytes };
        Some(p)
    }

    fn free(&mut self, start: u64) {
        self.occupied.remove(&start);
    }
}

/// Where a buffer stands in the walk.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    Waiting,
    /// Allocated at this byte offset (SBUF) or bank start (PSUM).
    Live(u64),
    Done,
}

/// The allocator's state during the walk over the layout.
struct Walk<'a> {
    func: &'a mut TileFunc,
    geometry: Geometry,
    /// Layout positions (in the original layout) of each buffer's accesses, sorted.
    uses: Vec<Vec<usize>>,
    state: Vec<State>,
    /// Buffers to allocate before, and to free after, each position.
    starts: Vec<Vec<Buf>>,
    ends: Vec<Vec<Buf>>,
    /// Instructions inserted before and after each position.
    before: Vec<Vec<TInst>>,
    after: Vec<Vec<TInst>>,
    sbuf: NextFit,
    banks: Vec<Option<Buf>>,
    bank_cursor: usize,
    /// Bytes given to each DMA queue, to put spill transfers on the least loaded one.
    queue_load: [u64; NUM_DMA_QUEUES],
    spills: usize,
    /// The layout as it was when the walk began.
    layout: Vec<TInst>,
}

/// Places every buffer of `func` (see the module documentation); returns what it did.
pub fn allocate(func: &mut TileFunc, geometry: &Geometry) -> Result<AllocStats, String> {
    check_sizes(func, geometry)?;
    let layout = func.layout.clone();
    let n = layout.len();
    let mut uses: Vec<Vec<usize>> = vec![Vec::new(); func.bufs.len()];
    let mut queue_load = [0u64; NUM_DMA_QUEUES];
    for (pos, &i) in layout.iter().enumerate() {
        let inst = func
            .insts
            .get(i)
            .ok_or_else(|| format!("the layout lists {i}, which is not declared"))?;
        if let Engine::Dma(q) = inst.engine {
            if let Some(l) = queue_load.get_mut(q as usize) {
                *l = l.saturating_add(dma_bytes(&inst.op));
            }
        }
        for b in &inst.bufs {
            let u = uses
                .get_mut(b.index())
                .ok_or_else(|| format!("{i} uses {b}, which is not declared"))?;
            if u.last() != Some(&pos) {
                u.push(pos);
            }
        }
    }
    let mut starts = vec![Vec::new(); n];
    let mut ends = vec![Vec::new(); n];
    for (b, data) in func.bufs.iter() {
        if let (true, Some(&first), Some(&last)) = (
            data.is_tile(),
            uses[b.index()].first(),
            uses[b.index()].last(),
        ) {
            starts[first].push(b);
            ends[last].push(b);
        }
    }
    let banks = (geometry.psum_partition_bytes / geometry.psum_bank_bytes.max(1)) as usize;
    let mut w = Walk {
        state: vec![State::Waiting; func.bufs.len()],
        func,
        geometry: *geometry,
        uses,
        starts,
        ends,
        before: vec![Vec::new(); n],
        after: vec![Vec::new(); n],
        sbuf: NextFit {
            occupied: BTreeMap::new(),
            cursor: 0,
            size: geometry.sbuf_partition_bytes as u64,
        },
        banks: vec![None; banks],
        bank_cursor: 0,
        queue_load,
        spills: 0,
        layout,
    };
    for pos in 0..n {
        let mut k = 0;
        while k < w.starts[pos].len() {
            let b = w.starts[pos][k];
            w.place(b, pos)?;
            k += 1;
        }
        for b in std::mem::take(&mut w.ends[pos]) {
            w.free(b, pos);
        }
    }
    let spills = w.spills;
    let (before, after, layout) = (w.before, w.after, w.layout);
    let func = w.func;
    // Buffers nothing accesses still get a place, so that every buffer has one.
    for (b, data) in func.bufs.iter() {
        if data.is_tile() && func.placement[b].is_none() {
            func.placement[b] = Some(Placement::Tile {
                partition: 0,
                offset: 0,
            });
        }
    }
    let mut new_layout = Vec::with_capacity(layout.len() + 2 * spills);
    for (pos, i) in layout.into_iter().enumerate() {
        new_layout.extend_from_slice(&before[pos]);
        new_layout.push(i);
        new_layout.extend_from_slice(&after[pos]);
    }
    func.layout = new_layout;
    let hbm_bytes = place_hbm(func)?;
    Ok(AllocStats { spills, hbm_bytes })
}

/// Every tile buffer fits its memory and the partitions.
fn check_sizes(func: &TileFunc, g: &Geometry) -> Result<(), String> {
    for (b, data) in func.bufs.iter() {
        let (mem, limit) = match data.kind {
            BufKind::Hbm { .. } => continue,
            BufKind::Sbuf => ("SBUF partition", g.sbuf_partition_bytes),
            BufKind::Psum => ("PSUM bank", g.psum_bank_bytes),
        };
        if data.bytes > limit as u64 {
            return Err(format!(
                "{b} needs {} bytes per partition, more than a whole {mem} ({limit} bytes); \
                 the tile pass must make smaller tiles",
                data.bytes
            ));
        }
        if data.partitions == 0 || data.partitions > g.partitions {
            return Err(format!(
                "{b} has {} partitions, but tiles have 1 to {}",
                data.partitions, g.partitions
            ));
        }
    }
    Ok(())
}

/// Places the HBM buffers: inputs, outputs, scratch, each 64-byte aligned. Returns the end.
fn place_hbm(func: &mut TileFunc) -> Result<u64, String> {
    let mut next = 0u64;
    for role in [Role::Input, Role::Output, Role::Scratch] {
        let bufs: Vec<Buf> = func.hbm_bufs(role).collect();
        for b in bufs {
            func.placement[b] = Some(Placement::Hbm(next));
            next = next
                .checked_add(func.bufs[b].bytes)
                .map(|e| align_up(e, ALIGN))
                .ok_or_else(|| format!("the HBM tensors need more than 2^64 bytes at {b}"))?;
        }
    }
    Ok(next)
}

impl Walk<'_> {
    /// Allocates buffer `b` before the instruction at `pos`, spilling as needed.
    fn place(&mut self, b: Buf, pos: usize) -> Result<(), String> {
        if self.state[b.index()] != State::Waiting {
            return Ok(());
        }
        let data = &self.func.bufs[b];
        if data.kind == BufKind::Psum {
            let count = self.banks.len();
            let Some(bank) = (0..count)
                .map(|k| (self.bank_cursor + k) % count)
                .find(|&k| self.banks[k].is_none())
            else {
                return Err(format!(
                    "{b} needs a PSUM bank at {}, but all {count} banks hold live buffers; the \
                     tile pass must keep fewer PSUM tiles live",
                    self.layout[pos]
                ));
            };
            self.banks[bank] = Some(b);
            self.bank_cursor = (bank + 1) % count;
            let offset = bank as u64 * self.geometry.psum_bank_bytes as u64;
            self.state[b.index()] = State::Live(offset);
            self.func.placement[b] = Some(Placement::Tile {
                partition: 0,
                offset: offset as u32,
            });
            return Ok(());
        }
        let bytes = data.bytes;
        loop {
            if let Some(offset) = self.sbuf.alloc(bytes, b) {
                self.state[b.index()] = State::Live(offset);
                self.func.placement[b] = Some(Placement::Tile {
                    partition: 0,
                    offset: offset as u32,
                });
                return Ok(());
            }
            self.spill(pos, b)?;
        }
    }

    /// Frees `b` after its last access at `pos` (unless a spill already freed it).
    fn free(&mut self, b: Buf, pos: usize) {
        if self.uses[b.index()].last() != Some(&pos) {
            return;
        }
        if let State::Live(offset) = self.state[b.index()] {
            if self.func.bufs[b].kind == BufKind::Psum {
                for slot in self.banks.iter_mut().filter(|s| **s == Some(b)) {
                    *slot = None;
                }
            } else {
                self.sbuf.free(offset);
            }
        }
        self.state[b.index()] = State::Done;
    }

    /// The first access of `b` at or after `pos`.
    fn next_use(&self, b: Buf, pos: usize) -> Option<usize> {
        let u = &self.uses[b.index()];
        u.get(u.partition_point(|&p| p < pos)).copied()
    }

    /// Spills the live SBUF buffer whose next use is furthest from `pos`, to make room
    /// for `want`.
    fn spill(&mut self, pos: usize, want: Buf) -> Result<(), String> {
        let mut victim: Option<(usize, Buf)> = None;
        for &(_, b) in self.sbuf.occupied.values() {
            let Some(next) = self.next_use(b, pos).filter(|&n| n > pos) else {
                continue;
            };
            match victim {
                Some((v, _)) if next <= v => {}
                _ => victim = Some((next, b)),
            }
        }
        let Some((next, v)) = victim else {
            return Err(format!(
                "SBUF is full at {}: {want} ({} bytes per partition) does not fit beside the \
                 buffers that instruction itself uses, in {} bytes per partition",
                self.layout[pos], self.func.bufs[want].bytes, self.geometry.sbuf_partition_bytes
            ));
        };
        self.spills += 1;
        let u = &self.uses[v.index()];
        let split = u.partition_point(|&p| p < pos);
        let later: Vec<usize> = u[split..].to_vec();
        let prev = split.checked_sub(1).and_then(|k| u.get(k)).copied();
        self.uses[v.index()].truncate(split);
        // The region written so far: only it needs to travel (and reading bytes nothing
        // wrote would trip the interpreter's poison check).
        let region = prev.and_then(|prev| self.written_region(v, prev));
        let data = self.func.bufs[v].clone();
        let fresh = self.func.bufs.push(BufData {
            kind: data.kind.clone(),
            ..data.clone()
        });
        self.uses.push(later.clone());
        self.state.push(State::Waiting);
        for &p in &later {
            let i = self.layout[p];
            for slot in self.func.insts[i].bufs.iter_mut().filter(|s| **s == v) {
                *slot = fresh;
            }
        }
        if let (Some(prev), Some((parts, lo, hi))) = (prev, region) {
            self.transfer(v, fresh, data.dtype, parts, lo, hi, prev, next);
            // The load is the fresh buffer's first access, at its next use.
        }
        self.starts[next].push(fresh);
        if let Some(&last) = later.last() {
            self.ends[last].push(fresh);
        }
        // Free the victim now: its remaining accesses belong to the fresh buffer.
        if let State::Live(offset) = self.state[v.index()] {
            self.sbuf.free(offset);
        }
        self.state[v.index()] = State::Done;
        Ok(())
    }

    /// The bounding box of what instructions up to layout position `upto` wrote into `b`:
    /// partitions `0..parts` and bytes `lo..hi`, or `None` if nothing was written.
    fn written_region(&self, b: Buf, upto: usize) -> Option<(u32, u64, u64)> {
        let mut region: Option<(u32, u64, u64)> = None;
        for &p in self.uses[b.index()].iter().filter(|&&p| p <= upto) {
            let inst = &self.func.insts[self.layout[p]];
            let mut k = 0;
            inst.op.visit_aps(&mut |ap, access| {
                let this = inst.bufs.get(k) == Some(&b);
                k += 1;
                let (isa::ApRef::Tile(t), isa::Access::Write, true) = (ap, access, this) else {
                    return;
                };
                let es = t.dtype.size() as i128;
                let (mut lo, mut hi) = (0i128, 0i128);
                for d in &t.dims {
                    let span = (d.size as i128 - 1).max(0) * d.stride as i128;
                    if span < 0 {
                        lo += span
                    } else {
                        hi += span
                    }
                }
                let lo = (t.offset as i128 + lo * es).max(0) as u64;
                let hi = (t.offset as i128 + hi * es + es).max(0) as u64;
                let parts = t.partition as u32 + t.partitions as u32;
                region = Some(match region {
                    None => (parts, lo, hi),
                    Some((p0, l0, h0)) => (p0.max(parts), l0.min(lo), h0.max(hi)),
                });
            });
        }
        region
    }

    /// Inserts the store of `v`'s region after position `prev` into a new HBM scratch
    /// buffer, and its load into `fresh` before position `next`.
    #[allow(clippy::too_many_arguments)]
    fn transfer(
        &mut self,
        v: Buf,
        fresh: Buf,
        dtype: Dtype,
        parts: u32,
        lo: u64,
        hi: u64,
        prev: usize,
        next: usize,
    ) {
        // Copy in the buffer's dtype when the region is whole elements, else as bytes
        // (same-dtype DMA copies are exact bit copies either way).
        let es = dtype.size() as u64;
        let (dtype, es) = if lo.checked_rem(es) == Some(0) && hi.checked_rem(es) == Some(0) {
            (dtype, es)
        } else {
            (Dtype::F8E4M3, 1)
        };
        let elems = (hi - lo) / es;
        let parts = parts.clamp(1, 128);
        // `hbm` gives the name a suffix if a parameter already has it.
        let name = format!("spill{}", self.spills);
        let scratch = self
            .func
            .hbm(&name, Role::Scratch, dtype, &[parts as u64, elems]);
        self.uses.push(Vec::new());
        self.state.push(State::Done);
        let tile = TileAp::new(
            isa::Mem::Sbuf,
            dtype,
            0,
            parts as u8,
            lo as u32,
            &[(elems as u32, 1)],
        );
        let hbm = HbmAp::new(dtype, 0, &[(parts as u64, elems as i64), (elems, 1)]);
        let q = self
            .queue_load
            .iter()
            .enumerate()
            .min_by_key(|&(_, &l)| l)
            .map_or(0, |(q, _)| q);
        self.queue_load[q] = self.queue_load[q].saturating_add(parts as u64 * (hi - lo) * 2);
        let engine = Engine::Dma(q as u8);
        let store = self.func.insts.push(TileInst {
            op: Op::Dma {
                dst: DmaAp::Hbm(hbm.clone()),
                src: DmaAp::Tile(tile.clone()),
            },
            engine,
            bufs: [scratch, v].into_iter().collect(),
        });
        self.func.spans[store] = self.func.spans[self.layout[prev]];
        self.after[prev].push(store);
        let load = self.func.insts.push(TileInst {
            op: Op::Dma {
                dst: DmaAp::Tile(tile),
                src: DmaAp::Hbm(hbm),
            },
            engine,
            bufs: [fresh, scratch].into_iter().collect(),
        });
        self.func.spans[load] = self.func.spans[self.layout[next]];
        self.before[next].push(load);
    }
}
