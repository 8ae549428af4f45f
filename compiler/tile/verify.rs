//! The tile IR verifier, and the memory-hazard tracker that the `sync` pass and the
//! verifier's race check share.
//!
//! `verify` checks what every pass after `tile` relies on: operand buffers exist, have the
//! memory of their access pattern and contain every byte the pattern touches; engines may
//! run their opcodes; buffer sizes fit the machine; once allocation has run, placements lie
//! inside their memory, keep the partition start rule, and buffers that are live at the same
//! time do not share bytes; semaphore fields are in range; and once synchronisation has run,
//! every pair of conflicting accesses on different engines is ordered by semaphore waits (a
//! vector-clock race check). Every error is a sentence naming the instruction or buffer.
//! Address arithmetic is done in `i128`, so no field value can overflow it, and nothing here
//! panics on any input.

use super::{Buf, BufKind, Placement, TInst, TileFunc};
use cranelift_entity::EntityRef;
use isa::{extent, Access, ApRef, Engine, Mem, Op, Opcode, Role, TileAp, MAX_WAITS};
use smallvec::SmallVec;
use std::collections::BTreeMap;

/// Number of instruction streams (engines).
const NS: usize = isa::NUM_STREAMS;
/// Partitions per hazard-tracking group: every tile that keeps the start rule and touches
/// a group contains the group's first partition, so two such tiles that touch a common
/// group share a partition; the grouping is exact for them and conservative otherwise.
const GROUP: u32 = 32;
/// Hazard spaces before the per-buffer HBM spaces: SBUF and PSUM.
const TILE_SPACES: u32 = 2;
/// Partition groups of SBUF and PSUM.
const GROUPS: usize = 4;
/// An HBM pattern is split into at most this many pieces (one per combination of the
/// indices of its widest-strided dimensions) before falling back to bounding boxes.
const MAX_PIECES: u64 = 256;

/// The allowed start partitions of a tile of `count` partitions (`docs/machine.md`, "Memories").
pub(crate) fn allowed_starts(count: u32) -> &'static [u32] {
    match count {
        65.. => &[0],
        33..=64 => &[0, 64],
        _ => &[0, 32, 64, 96],
    }
}

/// The byte range `[first, end)` that a tile pattern touches in each of its partitions,
/// relative to the start of its buffer (`None` for an empty pattern).
fn tile_bytes(ap: &TileAp) -> Option<(i128, i128)> {
    let esize = ap.dtype.size() as i128;
    let (lo, hi) = extent(ap.dims.iter().map(|d| (d.size as i128, d.stride as i128)))?;
    Some((
        ap.offset as i128 + lo * esize,
        ap.offset as i128 + hi * esize + esize,
    ))
}

/// The byte range `[first, end)` an HBM pattern touches, relative to its buffer.
fn hbm_bytes(ap: &isa::HbmAp) -> Option<(i128, i128)> {
    let esize = ap.dtype.size() as i128;
    let (lo, hi) = extent(ap.dims.iter().map(|d| (d.size as i128, d.stride as i128)))?;
    Some((
        ap.offset as i128 + lo * esize,
        ap.offset as i128 + hi * esize + esize,
    ))
}

/// The memory operands of an operation with their accesses, in `visit_aps` order. A
/// matmul with `accumulate` also reads its `out`, which the caller handles.
fn operands(op: &Op) -> SmallVec<[(ApRef<'_>, Access); 6]> {
    let mut aps = SmallVec::new();
    op.visit_aps(&mut |ap, access| aps.push((ap, access)));
    aps
}

/// One byte range an instruction touches in placed memory.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Touch {
    /// The address space: `0` SBUF, `1` PSUM, `2 + b` the HBM buffer `b` (HBM buffers
    /// never overlap, so their offsets are relative).
    pub space: u32,
    /// The partition groups touched, one bit per group of 32 partitions (bit 0 for HBM).
    pub groups: u8,
    /// First byte.
    pub lo: u64,
    /// One past the last byte.
    pub hi: u64,
    pub write: bool,
}

/// Appends the byte ranges that instruction `inst` touches (see [`Hazards::touches`]),
/// or, with `only`, those of its operand number `only` (in `visit_aps` order) alone.
fn touches(
    func: &TileFunc,
    hbm_written: &[bool],
    inst: TInst,
    only: Option<usize>,
    out: &mut Vec<Touch>,
) -> Result<(), String> {
    let Some(data) = func.insts.get(inst) else {
        return Err(format!("{inst} is not declared"));
    };
    let accumulate = matches!(
        data.op,
        Op::Matmul {
            accumulate: true,
            ..
        }
    );
    for (k, (ap, access)) in operands(&data.op).into_iter().enumerate() {
        if only.is_some_and(|o| o != k) {
            continue;
        }
        let Some(&buf) = data.bufs.get(k) else {
            return Err(format!("{inst} has no buffer for its operand {k}"));
        };
        let write = access == Access::Write;
        match ap {
            ApRef::Tile(t) => {
                let Some(Placement::Tile { partition, offset }) =
                    func.placement.get(buf).copied().flatten()
                else {
                    return Err(format!(
                        "{inst} uses {buf}, which has no tile placement (alloc must run first)"
                    ));
                };
                let Some((lo, hi)) = tile_bytes(t) else {
                    continue;
                };
                let (lo, hi) = (lo + offset as i128, hi + offset as i128);
                if lo < 0 || hi > u64::MAX as i128 {
                    return Err(format!("{inst} addresses bytes {lo}..{hi} of {buf}"));
                }
                let p0 = partition + t.partition as u32;
                let p1 = p0 + (t.partitions as u32).max(1) - 1;
                let groups = (p0 / GROUP).min(3)..=(p1 / GROUP).min(3);
                let touch = Touch {
                    space: if t.mem == Mem::Sbuf { 0 } else { 1 },
                    groups: groups.fold(0u8, |m, g| m | 1 << g),
                    lo: lo as u64,
                    hi: hi as u64,
                    write,
                };
                out.push(touch);
                if write && accumulate {
                    out.push(Touch {
                        write: false,
                        ..touch
                    });
                }
            }
            ApRef::Hbm(h) => {
                // HBM that nothing writes (the inputs) cannot conflict: skip it early.
                if hbm_written.get(buf.index()).copied().unwrap_or(false) {
                    hbm_touches(h, TILE_SPACES + buf.index() as u32, write, out)?;
                }
            }
        }
    }
    Ok(())
}

/// The pieces of an HBM pattern (`isa::byte_ranges` with at most [`MAX_PIECES`] ranges):
/// one range per combination of the indices of its widest-strided dimensions, each the
/// bounding box of the rest. Fails when the pattern reaches outside `0..2^64` bytes.
fn hbm_touches(
    h: &isa::HbmAp,
    space: u32,
    write: bool,
    out: &mut Vec<Touch>,
) -> Result<(), String> {
    let dims: SmallVec<[(i128, i128); 5]> = h
        .dims
        .iter()
        .map(|d| (d.size as i128, d.stride as i128))
        .collect();
    let esize = h.dtype.size() as i128;
    let Some((elo, ehi)) = extent(dims.iter().copied()) else {
        return Ok(());
    };
    let (lo, hi) = (
        h.offset as i128 + elo * esize,
        h.offset as i128 + ehi * esize + esize,
    );
    if lo < 0 || hi > u64::MAX as i128 {
        return Err(format!("an HBM pattern addresses bytes {lo}..{hi}"));
    }
    for (lo, hi) in isa::byte_ranges(h.offset as i128, &dims, esize, MAX_PIECES) {
        out.push(Touch {
            space,
            groups: 1,
            lo,
            hi,
            write,
        });
    }
    Ok(())
}

/// The access history of a run of bytes in one partition group.
#[derive(Clone, Debug, Default)]
struct History {
    /// The last instruction that wrote the bytes: (stream, position in its stream).
    writer: Option<(u8, u32)>,
    /// The latest reader per stream since that write.
    readers: SmallVec<[(u8, u32); 2]>,
}

/// A run of bytes with the same access history in each of its `G` partition groups
/// (four for SBUF and PSUM, one for an HBM buffer).
#[derive(Clone, Debug)]
struct Seg<const G: usize> {
    end: u64,
    groups: [History; G],
}

/// The group indices of a mask.
fn groups_of(mask: u8) -> impl Iterator<Item = usize> {
    (0..GROUPS).filter(move |g| mask & (1 << g) != 0)
}

/// The access history of placed memory: per address space an interval map from byte
/// ranges to the last writer and the readers since. Finding what an access conflicts with
/// costs `O(log n + k)` for `k` overlapping ranges.
pub struct Hazards {
    /// Per space: the start of each run -> its index in `tile_segs` (SBUF and PSUM) or
    /// `hbm_segs` (HBM buffers).
    spaces: Vec<BTreeMap<u64, u32>>,
    /// The runs (kept out of the maps, so that the maps move small values). HBM runs have
    /// one partition group, so they keep one history instead of four: a large kernel's
    /// output is tens of thousands of runs.
    tile_segs: Segs<GROUPS>,
    hbm_segs: Segs<1>,
    /// HBM buffers that some instruction writes; reads of the others never conflict.
    hbm_written: Vec<bool>,
}

impl Hazards {
    /// An empty history for the buffers of `func`.
    pub fn new(func: &TileFunc) -> Hazards {
        let mut hbm_written = vec![false; func.bufs.len()];
        for &i in &func.layout {
            let Some(data) = func.insts.get(i) else {
                continue;
            };
            for (k, (ap, access)) in operands(&data.op).into_iter().enumerate() {
                if let (ApRef::Hbm(_), Access::Write, Some(b)) = (ap, access, data.bufs.get(k)) {
                    if let Some(w) = hbm_written.get_mut(b.index()) {
                        *w = true;
                    }
                }
            }
        }
        Hazards {
            spaces: vec![BTreeMap::new(); TILE_SPACES as usize + func.bufs.len()],
            tile_segs: Segs::default(),
            hbm_segs: Segs::default(),
            hbm_written,
        }
    }

    /// Appends the byte ranges that instruction `inst` touches in placed memory: for a
    /// tile operand the bounding box of its bytes in each partition group it covers, for
    /// an HBM operand one range per combination of its outer indices (at most
    /// [`MAX_PIECES`], else the bounding box); HBM buffers that nothing writes are left
    /// out. A matmul with `accumulate` reads its `out` as well as writing it. Fails when a
    /// tile buffer has no placement or an operand has no buffer.
    pub fn touches(
        &self,
        func: &TileFunc,
        inst: TInst,
        out: &mut Vec<Touch>,
    ) -> Result<(), String> {
        touches(func, &self.hbm_written, inst, None, out)
    }

    /// The byte ranges of the stationary operand of a Tensor instruction (a matmul's
    /// `stationary`, a transpose's `src`; nothing for other instructions): what the timing
    /// model's stationary load reads, which may begin before the instruction starts.
    pub fn stationary_touches(
        &self,
        func: &TileFunc,
        inst: TInst,
        out: &mut Vec<Touch>,
    ) -> Result<(), String> {
        let Some(data) = func.insts.get(inst) else {
            return Err(format!("{inst} is not declared"));
        };
        let target: &TileAp = match &data.op {
            Op::Matmul { stationary, .. } => stationary,
            Op::Transpose { src, .. } => src,
            _ => return Ok(()),
        };
        let mut index = None;
        for (k, (ap, _)) in operands(&data.op).into_iter().enumerate() {
            if matches!(ap, ApRef::Tile(t) if std::ptr::eq(t, target)) {
                index = Some(k);
            }
        }
        match index {
            Some(k) => touches(func, &self.hbm_written, inst, Some(k), out),
            None => Ok(()),
        }
    }

    fn tracked(&self, t: &Touch) -> bool {
        t.space < TILE_SPACES
            || self
                .hbm_written
                .get((t.space - TILE_SPACES) as usize)
                .copied()
                .unwrap_or(false)
    }

    /// Checks and records the accesses `touches` of the next instruction in program
    /// order, on `stream`, numbered `seq` (numbers must increase along the program).
    /// Calls `note(stream, seq)` for every earlier access it conflicts with: the last
    /// writer of every byte it reads or writes (read after write, write after write) and,
    /// for writes, every reader since (write after read), at most one reader per stream
    /// (the latest). Entries of the instruction's own earlier touches may be noted too;
    /// callers ignore their own stream.
    pub fn access(
        &mut self,
        touches: &[Touch],
        stream: u8,
        seq: u32,
        note: &mut dyn FnMut(u8, u32),
    ) {
        // Reads first, so that an instruction that reads and writes the same bytes ends
        // as their last writer.
        for write in [false, true] {
            for t in touches.iter().filter(|t| t.write == write) {
                if !self.tracked(t) || t.lo >= t.hi {
                    continue;
                }
                // SBUF and PSUM have four partition groups, HBM buffers one.
                let Some(map) = self.spaces.get_mut(t.space as usize) else {
                    continue;
                };
                if t.space < TILE_SPACES {
                    access_one(map, &mut self.tile_segs, t, (stream, seq), note);
                } else {
                    access_one(map, &mut self.hbm_segs, t, (stream, seq), note);
                }
            }
        }
    }
}

/// A slab of runs with a free list.
struct Segs<const G: usize> {
    all: Vec<Seg<G>>,
    free: Vec<u32>,
}

impl<const G: usize> Default for Segs<G> {
    fn default() -> Self {
        Segs {
            all: Vec::new(),
            free: Vec::new(),
        }
    }
}

impl<const G: usize> Segs<G> {
    /// Every group of the run: the group mask of an access that covers them all.
    const FULL: u8 = ((1u16 << G) - 1) as u8;

    fn add(&mut self, seg: Seg<G>) -> u32 {
        match self.free.pop() {
            Some(k) => {
                self.all[k as usize] = seg;
                k
            }
            None => {
                self.all.push(seg);
                (self.all.len() - 1) as u32
            }
        }
    }
}

/// Splits the run that straddles `at`, so that a run starts at `at`.
fn split_at<const G: usize>(map: &mut BTreeMap<u64, u32>, segs: &mut Segs<G>, at: u64) {
    let Some((_, &k)) = map.range(..at).next_back() else {
        return;
    };
    let seg = &mut segs.all[k as usize];
    if seg.end > at {
        let tail = seg.clone();
        seg.end = at;
        let t = segs.add(tail);
        map.insert(at, t);
    }
}

/// Notes the conflicts of one access with a segment's history, then records the access.
fn visit<const G: usize>(
    seg: &mut Seg<G>,
    t: &Touch,
    me: (u8, u32),
    note: &mut dyn FnMut(u8, u32),
) {
    for g in groups_of(t.groups) {
        let Some(h) = seg.groups.get_mut(g) else {
            continue;
        };
        if let Some((s, q)) = h.writer {
            note(s, q);
        }
        if t.write {
            for &(s, q) in &h.readers {
                note(s, q);
            }
            h.writer = Some(me);
            h.readers.clear();
        } else {
            match h.readers.iter_mut().find(|(s, _)| *s == me.0) {
                Some(r) => r.1 = r.1.max(me.1),
                None => h.readers.push(me),
            }
        }
    }
}

/// Checks and records one access in one space.
fn access_one<const G: usize>(
    map: &mut BTreeMap<u64, u32>,
    segs: &mut Segs<G>,
    t: &Touch,
    me: (u8, u32),
    note: &mut dyn FnMut(u8, u32),
) {
    let full = Segs::<G>::FULL;
    // The common case: the access covers exactly one existing run (a tile written, then
    // read or overwritten as a whole).
    if let Some(&k) = map.get(&t.lo) {
        let seg = &mut segs.all[k as usize];
        if seg.end == t.hi {
            visit(seg, t, me, note);
            return;
        }
    }
    split_at(map, segs, t.lo);
    split_at(map, segs, t.hi);
    let mut cursor = t.lo;
    let mut gaps: SmallVec<[(u64, u64); 4]> = SmallVec::new();
    let mut keys: SmallVec<[(u64, u32); 8]> = SmallVec::new();
    for (&start, &k) in map.range(t.lo..t.hi) {
        if start > cursor {
            gaps.push((cursor, start));
        }
        let seg = &mut segs.all[k as usize];
        visit(seg, t, me, note);
        cursor = seg.end;
        keys.push((start, k));
    }
    if cursor < t.hi {
        gaps.push((cursor, t.hi));
    }
    let fresh = |end: u64| {
        let mut seg = Seg {
            end,
            groups: std::array::from_fn(|_| History::default()),
        };
        visit(&mut seg, t, me, &mut |_, _| {});
        seg
    };
    if t.write && t.groups & full == full && keys.len() + gaps.len() > 1 {
        // Every group is overwritten: the range becomes one run.
        for (start, k) in keys {
            map.remove(&start);
            segs.free.push(k);
        }
        let k = segs.add(fresh(t.hi));
        map.insert(t.lo, k);
        return;
    }
    for (lo, hi) in gaps {
        let k = segs.add(fresh(hi));
        map.insert(lo, k);
    }
}

/// Checks the invariants of tile IR; returns every broken one.
pub fn verify(func: &TileFunc) -> Result<(), Vec<String>> {
    let mut errors = Vec::new();
    let geometry = isa::Preset::Default.geometry();
    check_bufs(func, &geometry, &mut errors);
    check_insts(func, &mut errors);
    check_hbm_order(func, &mut errors);
    let placed = check_placements(func, &geometry, &mut errors);
    if func.synced {
        if !placed {
            errors.push(
                "the function is marked synced, but its buffers are not all placed".to_string(),
            );
        } else if errors.is_empty() {
            check_races(func, &geometry, &mut errors);
        }
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(errors)
    }
}

/// No instruction reads an HBM scratch or output buffer before some instruction earlier in
/// program order writes it: fused groups emitted before the group producing their operand
/// would read never-written bytes (synchronisation would then order the read before the
/// write, faithfully). Checked per buffer, in layout order.
fn check_hbm_order(func: &TileFunc, errors: &mut Vec<String>) {
    let mut written = vec![false; func.bufs.len()];
    for &i in &func.layout {
        let Some(data) = func.insts.get(i) else {
            continue;
        };
        let ops = operands(&data.op);
        for (k, (ap, access)) in ops.iter().enumerate() {
            let (ApRef::Hbm(_), Access::Read, Some(b)) = (ap, access, data.bufs.get(k)) else {
                continue;
            };
            let Some(buf) = func.bufs.get(*b) else {
                continue;
            };
            if let BufKind::Hbm { name, role, .. } = &buf.kind {
                if *role != Role::Input && !written.get(b.index()).copied().unwrap_or(true) {
                    errors.push(format!(
                        "{i} reads HBM {} `{name}` ({b}) before any instruction writes it",
                        role.name()
                    ));
                }
            }
        }
        for (k, (ap, access)) in ops.iter().enumerate() {
            if let (ApRef::Hbm(_), Access::Write, Some(b)) = (ap, access, data.bufs.get(k)) {
                if let Some(w) = written.get_mut(b.index()) {
                    *w = true;
                }
            }
        }
    }
}

/// Buffer sizes and HBM declarations.
fn check_bufs(func: &TileFunc, g: &isa::Geometry, errors: &mut Vec<String>) {
    let mut names: Vec<(&str, Buf)> = Vec::new();
    for (b, data) in func.bufs.iter() {
        match &data.kind {
            BufKind::Hbm { name, shape, .. } => {
                let bytes = shape
                    .iter()
                    .try_fold(data.dtype.size() as u64, |acc, &d| acc.checked_mul(d));
                if bytes != Some(data.bytes) {
                    errors.push(format!(
                        "{b} (HBM tensor `{name}`) has {} bytes, but its shape and dtype give {}",
                        data.bytes,
                        bytes.map_or("more than 2^64".to_string(), |x| x.to_string())
                    ));
                }
                if name.is_empty() {
                    errors.push(format!("{b} is an HBM tensor with an empty name"));
                }
                names.push((name, b));
            }
            BufKind::Sbuf | BufKind::Psum => {
                let (mem, limit) = if data.kind == BufKind::Sbuf {
                    ("SBUF", g.sbuf_partition_bytes)
                } else {
                    ("PSUM", g.psum_bank_bytes)
                };
                if data.partitions == 0 || data.partitions > g.partitions {
                    errors.push(format!(
                        "{b} has {} partitions, but a {mem} buffer has 1 to {}",
                        data.partitions, g.partitions
                    ));
                }
                if data.bytes > limit as u64 {
                    let what = if mem == "PSUM" {
                        "one PSUM bank holds"
                    } else {
                        "an SBUF partition holds"
                    };
                    errors.push(format!(
                        "{b} needs {} bytes per partition, but {what} {limit}",
                        data.bytes
                    ));
                }
            }
        }
    }
    names.sort();
    for pair in names.windows(2) {
        if pair[0].0 == pair[1].0 {
            errors.push(format!(
                "{} and {} are both HBM tensors named `{}`",
                pair[0].1, pair[1].1, pair[0].0
            ));
        }
    }
}

/// The name of a buffer's memory, for messages.
fn kind_name(kind: &BufKind) -> &'static str {
    match kind {
        BufKind::Hbm { .. } => "HBM",
        BufKind::Sbuf => "SBUF",
        BufKind::Psum => "PSUM",
    }
}

/// The layout, engines, operands and semaphore fields of every instruction.
fn check_insts(func: &TileFunc, errors: &mut Vec<String>) {
    let mut seen = vec![false; func.insts.len()];
    for &i in &func.layout {
        let Some(inst) = func.insts.get(i) else {
            errors.push(format!("the layout lists {i}, which is not declared"));
            continue;
        };
        if std::mem::replace(&mut seen[i.index()], true) {
            errors.push(format!("{i} appears twice in the layout"));
        }
        let opcode = inst.op.opcode();
        let engines = opcode.engines();
        if opcode == Opcode::End {
            errors.push(format!(
                "{i} is `end`, which emission appends; tile IR must not contain it"
            ));
        }
        if !engines.contains(inst.engine.class()) {
            errors.push(format!(
                "{i} runs `{}` on the {} engine, but it runs on: {}",
                opcode.mnemonic(),
                inst.engine,
                engines.names().join(", ")
            ));
        }
        // The operands against each other, as the ISA's verifier checks them.
        for m in isa::check_operands(inst.engine, &inst.op) {
            errors.push(format!("{i}: {m}"));
        }
        let aps = operands(&inst.op);
        if aps.len() != inst.bufs.len() {
            errors.push(format!(
                "{i} has {} memory operands but names {} buffers",
                aps.len(),
                inst.bufs.len()
            ));
        }
        for (k, ((ap, _), &b)) in aps.iter().zip(&inst.bufs).enumerate() {
            let Some(data) = func.bufs.get(b) else {
                errors.push(format!("{i} operand {k} uses {b}, which is not declared"));
                continue;
            };
            match ap {
                ApRef::Tile(t) => {
                    let want = match t.mem {
                        Mem::Sbuf => BufKind::Sbuf,
                        Mem::Psum => BufKind::Psum,
                    };
                    if data.kind != want {
                        errors.push(format!(
                            "{i} operand {k} is a {} tile but {b} is in {}",
                            kind_name(&want),
                            kind_name(&data.kind)
                        ));
                        continue;
                    }
                    check_tile_ap(i, k, b, t, data.partitions, data.bytes, errors);
                }
                ApRef::Hbm(h) => {
                    if !matches!(data.kind, BufKind::Hbm { .. }) {
                        errors.push(format!(
                            "{i} operand {k} is an HBM pattern but {b} is in {}",
                            kind_name(&data.kind)
                        ));
                        continue;
                    }
                    if h.dims.is_empty() || h.dims.len() > isa::MAX_HBM_DIMS {
                        errors.push(format!(
                            "{i} operand {k} has {} dimensions, expected 1 to {}",
                            h.dims.len(),
                            isa::MAX_HBM_DIMS
                        ));
                    }
                    match hbm_bytes(h) {
                        None => errors.push(format!("{i} operand {k} has a dimension of size 0")),
                        Some((lo, hi)) if lo < 0 || hi > data.bytes as i128 => {
                            errors.push(format!(
                            "{i} operand {k} touches bytes {lo}..{hi} of {b}, which has {} bytes",
                            data.bytes
                        ))
                        }
                        Some(_) => {}
                    }
                }
            }
        }
        if let Some(sync) = func.sync.get(i) {
            check_sync(i, sync, errors);
        }
    }
}

/// One tile pattern inside its buffer of `partitions` x `bytes`.
fn check_tile_ap(
    i: TInst,
    k: usize,
    b: Buf,
    t: &TileAp,
    partitions: u32,
    bytes: u64,
    errors: &mut Vec<String>,
) {
    if t.dims.is_empty() || t.dims.len() > isa::MAX_TILE_DIMS {
        errors.push(format!(
            "{i} operand {k} has {} free dimensions, expected 1 to {}",
            t.dims.len(),
            isa::MAX_TILE_DIMS
        ));
    }
    if t.partitions == 0 {
        errors.push(format!("{i} operand {k} covers no partitions"));
    }
    let end = t.partition as u32 + t.partitions as u32;
    if end > partitions {
        errors.push(format!(
            "{i} operand {k} covers partitions {}..{end} of {b}, which has {partitions}",
            t.partition
        ));
    }
    match tile_bytes(t) {
        None => errors.push(format!("{i} operand {k} has a dimension of size 0")),
        Some((lo, hi)) if lo < 0 || hi > bytes as i128 => errors.push(format!(
            "{i} operand {k} touches bytes {lo}..{hi} of each partition of {b}, which has {bytes}"
        )),
        Some(_) => {}
    }
}

/// Semaphore fields in range.
fn check_sync(i: TInst, sync: &isa::Sync, errors: &mut Vec<String>) {
    let sems = isa::Preset::Default.geometry().semaphores;
    if sync.waits.len() > MAX_WAITS {
        errors.push(format!(
            "{i} has {} semaphore waits, at most {MAX_WAITS} are allowed",
            sync.waits.len()
        ));
    }
    for &(s, _) in &sync.waits {
        if s as u32 >= sems {
            errors.push(format!(
                "{i} waits on semaphore s{s}, but the machine has s0 .. s{}",
                sems - 1
            ));
        }
    }
    if let Some(s) = sync.signal {
        if s as u32 >= sems {
            errors.push(format!(
                "{i} signals semaphore s{s}, but the machine has s0 .. s{}",
                sems - 1
            ));
        }
    }
}

/// Placements, when allocation has run: returns whether every buffer is placed.
fn check_placements(func: &TileFunc, g: &isa::Geometry, errors: &mut Vec<String>) -> bool {
    let placed = func
        .bufs
        .keys()
        .filter(|&b| func.placement.get(b).copied().flatten().is_some())
        .count();
    if placed == 0 {
        return func.bufs.is_empty();
    }
    if placed < func.bufs.len() {
        for b in func.bufs.keys() {
            if func.placement.get(b).copied().flatten().is_none() {
                errors.push(format!(
                    "{b} is not placed, though allocation placed other buffers"
                ));
            }
        }
        return false;
    }
    let mut hbm: Vec<(u128, u128, Buf)> = Vec::new();
    for (b, data) in func.bufs.iter() {
        match (&data.kind, func.placement[b]) {
            (BufKind::Hbm { .. }, Some(Placement::Hbm(offset))) => {
                hbm.push((offset as u128, offset as u128 + data.bytes as u128, b));
            }
            (BufKind::Sbuf | BufKind::Psum, Some(Placement::Tile { partition, offset })) => {
                let (mem, limit) = if data.kind == BufKind::Sbuf {
                    ("SBUF", g.sbuf_partition_bytes)
                } else {
                    ("PSUM", g.psum_partition_bytes)
                };
                let end = partition as u64 + data.partitions as u64;
                if end > g.partitions as u64
                    || !allowed_starts(data.partitions).contains(&partition)
                {
                    errors.push(format!(
                        "{b} is placed on partitions {partition}..{end}, which breaks the start \
                         rule or leaves the {} partitions",
                        g.partitions
                    ));
                }
                let last = offset as u64 + data.bytes;
                if last > limit as u64 {
                    errors.push(format!(
                        "{b} is placed at bytes {offset}..{last}, outside {mem}'s {limit} bytes"
                    ));
                }
                let bank = g.psum_bank_bytes.max(1) as u64;
                if data.kind == BufKind::Psum
                    && data.bytes > 0
                    && offset as u64 / bank != (last - 1) / bank
                {
                    errors.push(format!(
                        "{b} is placed at PSUM bytes {offset}..{last}, which cross a bank boundary"
                    ));
                }
            }
            (kind, p) => errors.push(format!(
                "{b} is in {} but is placed as {p:?}",
                kind_name(kind)
            )),
        }
    }
    hbm.sort();
    for pair in hbm.windows(2) {
        if pair[1].0 < pair[0].1 && pair[1].1 > pair[1].0 {
            errors.push(format!("{} and {} overlap in HBM", pair[0].2, pair[1].2));
        }
    }
    check_operand_starts(func, errors);
    check_live_overlap(func, errors);
    true
}

/// Every placed tile operand keeps the start-partition rule.
fn check_operand_starts(func: &TileFunc, errors: &mut Vec<String>) {
    for &i in &func.layout {
        let Some(inst) = func.insts.get(i) else {
            continue;
        };
        for (k, ((ap, _), b)) in operands(&inst.op).iter().zip(&inst.bufs).enumerate() {
            let (ApRef::Tile(t), Some(Some(Placement::Tile { partition, .. }))) =
                (ap, func.placement.get(*b))
            else {
                continue;
            };
            let start = partition + t.partition as u32;
            let starts = allowed_starts(t.partitions as u32);
            if !starts.contains(&start) {
                let list: Vec<String> = starts.iter().map(|s| s.to_string()).collect();
                errors.push(format!(
                    "{i} operand {k} starts at partition {start} once {b} is placed, but a tile \
                     of {} partitions must start at {}",
                    t.partitions,
                    list.join(" or ")
                ));
            }
        }
    }
}

/// Tile buffers that are live at the same time (from their first to their last access in
/// layout order) do not share any byte of any partition.
fn check_live_overlap(func: &TileFunc, errors: &mut Vec<String>) {
    let mut range: Vec<Option<(usize, usize)>> = vec![None; func.bufs.len()];
    for (pos, &i) in func.layout.iter().enumerate() {
        let Some(inst) = func.insts.get(i) else {
            continue;
        };
        for b in &inst.bufs {
            if let Some(r) = range.get_mut(b.index()) {
                *r = Some(r.map_or((pos, pos), |(f, _)| (f, pos)));
            }
        }
    }
    let mut live: Vec<(usize, usize, Buf)> = range
        .iter()
        .enumerate()
        .filter_map(|(b, r)| r.map(|(f, l)| (f, l, Buf::new(b))))
        .filter(|&(_, _, b)| func.bufs[b].is_tile())
        .collect();
    live.sort();
    let rect = |b: Buf| -> Option<(bool, u64, u64, u64, u64)> {
        let data = &func.bufs[b];
        match func.placement[b] {
            Some(Placement::Tile { partition, offset }) => Some((
                data.kind == BufKind::Sbuf,
                partition as u64,
                partition as u64 + data.partitions as u64,
                offset as u64,
                offset as u64 + data.bytes,
            )),
            _ => None,
        }
    };
    let mut active: Vec<(usize, Buf)> = Vec::new();
    for (first, last, b) in live {
        active.retain(|&(l, _)| l >= first);
        if let Some(r) = rect(b) {
            for &(_, other) in &active {
                if let Some(o) = rect(other) {
                    if r.0 == o.0 && r.1 < o.2 && o.1 < r.2 && r.3 < o.4 && o.3 < r.4 {
                        errors.push(format!(
                            "{b} and {other} are live at the same time but share memory"
                        ));
                    }
                }
            }
        }
        active.push((last, b));
    }
}

/// Every pair of conflicting accesses on different engines is ordered by semaphores: a
/// vector-clock check over the waits, assuming (as the machine guarantees) that each
/// stream's instructions complete in order.
fn check_races(func: &TileFunc, g: &isa::Geometry, errors: &mut Vec<String>) {
    // Each semaphore must be signalled by one stream, so that a count names an instruction.
    let sems = g.semaphores as usize;
    let mut signaller: Vec<Option<usize>> = vec![None; sems];
    let mut signals: Vec<Vec<u32>> = vec![Vec::new(); NS];
    let mut positions: Vec<Vec<TInst>> = vec![Vec::new(); NS];
    for &i in &func.layout {
        let s = func.insts[i].engine.index();
        let pos = positions[s].len() as u32;
        positions[s].push(i);
        if let Some(sem) = func.sync.get(i).and_then(|x| x.signal) {
            match &mut signaller[sem as usize] {
                Some(t) if *t != s => {
                    errors.push(format!(
                        "semaphore s{sem} is signalled by both {} and {}, so its counts name no \
                         instruction",
                        Engine::from_index(*t).map_or_else(String::new, |e| e.name()),
                        func.insts[i].engine
                    ));
                    return;
                }
                slot => *slot = Some(s),
            }
            signals[sem as usize].push(pos);
        }
    }
    let mut hazards = Hazards::new(func);
    let mut know: Vec<[u32; NS]> = vec![[0; NS]; NS];
    let mut snaps: Vec<Vec<[u32; NS]>> = vec![Vec::new(); NS];
    let mut touched = Vec::new();
    // The stream position of each instruction, by its index in the layout.
    let mut pos_of: Vec<u32> = Vec::with_capacity(func.layout.len());
    let mut seq = 0u32;
    for &i in &func.layout {
        let s = func.insts[i].engine.index();
        let pos = snaps[s].len() as u32;
        if let Some(sync) = func.sync.get(i) {
            for &(sem, value) in &sync.waits {
                if value == 0 {
                    continue;
                }
                let Some(t) = signaller[sem as usize] else {
                    errors.push(format!(
                        "{i} waits for s{sem}, which no instruction signals"
                    ));
                    continue;
                };
                let Some(&p) = signals[sem as usize].get(value as usize - 1) else {
                    errors.push(format!(
                        "{i} waits for s{sem} >= {value}, but only {} instructions signal it",
                        signals[sem as usize].len()
                    ));
                    continue;
                };
                let Some(snap) = snaps[t].get(p as usize).copied() else {
                    errors.push(format!(
                        "{i} waits for {}, which comes later in the layout",
                        positions[t][p as usize]
                    ));
                    continue;
                };
                for (k, v) in know[s].iter_mut().zip(snap) {
                    *k = (*k).max(v);
                }
                know[s][t] = know[s][t].max(p + 1);
            }
        }
        snaps[s].push(know[s]);
        touched.clear();
        if let Err(e) = hazards.touches(func, i, &mut touched) {
            errors.push(e);
            touched.clear();
        }
        let mut deps = [0u32; NS];
        hazards.access(&touched, s as u8, seq, &mut |t, q| {
            // The instruction's own entries (not numbered yet) are on its own stream.
            if let (Some(&p), Some(d)) = (pos_of.get(q as usize), deps.get_mut(t as usize)) {
                *d = (*d).max(p + 1);
            }
        });
        pos_of.push(pos);
        seq += 1;
        for (t, &need) in deps.iter().enumerate() {
            if t != s && need > know[s][t] {
                let other = positions[t][need as usize - 1];
                errors.push(format!(
                    "{i} on {} may run before {other} on {} has finished, but they access the \
                     same memory (a race: {i} must wait for it)",
                    func.insts[i].engine, func.insts[other].engine
                ));
            }
        }
    }
}
