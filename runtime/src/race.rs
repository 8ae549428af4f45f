//! Debug checks of a run that catch compiler bugs instead of hiding them: the race detector
//! and the PSUM accumulation-group check. The timing model calls them for every executed
//! instruction, in the simulated start order, after the instruction's operands have passed
//! the interpreter's bounds checks.
//!
//! # Race detector
//!
//! The interpreter applies an instruction's effect when it starts, so a program whose
//! engines touch the same bytes without synchronising gets the one answer that this timing
//! model's schedule happens to give; real hardware, or the same program under other
//! timing parameters, may give another. The detector reports such pairs instead.
//!
//! It is a vector-clock happens-before check, like the compiler's static race check
//! (`compiler/tile/verify.rs`), but on the executed program:
//! - Each stream `s` has a clock `C[s]`: `C[s][t]` is how many instructions of stream `t`
//!   are known to have completed before `s`'s next instruction starts. Streams complete in
//!   order (an engine runs one instruction at a time; a DMA queue's data phases are
//!   serial), so stream order is happens-before and same-stream pairs are never races.
//! - An instruction that signals a semaphore hands the clock it started with, plus itself,
//!   to its increment. Per semaphore the detector keeps the join of the clocks of its first
//!   `k` increments, in the order the run applied them; a wait `sem >= v` that passed joins
//!   the prefix of `v` into the waiting stream's clock. (When several streams signal one
//!   semaphore, which increments came first depends on timing: the detector then checks the
//!   order this run observed, as dynamic race detectors do.)
//! - Shadow memory keeps, per HBM byte and per SBUF/PSUM partition byte (as interval maps of
//!   runs with the same history), the last writer and the latest reader per stream since.
//!   An access by instruction `i` of stream `s` races with an earlier access by `(t, q)`,
//!   `t != s`, when `C[s][t] <= q` and one of the two writes. A `matmul` with
//!   `accumulate=true` reads its `out` as well as writing it.
//!
//! Each operand is tracked exactly, one byte range per contiguous run, while a pattern has
//! few runs; a pattern with more (per partition, at most [`MAX_PIECES_PER_ACCESS`] over all
//! its partitions) is split along its widest-strided dimensions into at most that many
//! pieces, each the bounding box of the others (`isa::byte_ranges`, which the compiler's
//! hazard tracker uses too, with at most 256 pieces for HBM and one bounding box per 32
//! partitions for tiles). These ranges lie inside the compiler's, so a program the
//! compiler's check accepts raises no false race here.
//!
//! # PSUM accumulation groups
//!
//! A matmul with `accumulate=false` *opens a group* on the bytes of its `out` (its
//! partitions and the bounding box of its bytes in them). A matmul with `accumulate=true`
//! must write exactly the bytes of an open group. Any other instruction that reads or
//! writes bytes of an open group (evacuating the sum, or overwriting it) *closes* the
//! group; an instruction that writes PSUM bytes (a memset, an in-place rescale) leaves a
//! partial sum there and *opens* a group on them. Errors: an accumulating matmul whose `out` overlaps an open group with other
//! bytes (it would add into another group's unfinished sum), an accumulating matmul with
//! no open group on its bytes (it adds onto bytes that hold no partial sum, for example a
//! sum that was already read out), and a starting matmul that overlaps an open group with
//! other bytes (it destroys part of another group's unfinished sum). A start on exactly
//! the bytes of an open group replaces it.

use crate::error::{At, RuntimeError};
use isa::{Access, ApRef, Engine, Inst, Mem, Op, Program, NUM_STREAMS};
use smallvec::SmallVec;
use std::collections::{BTreeMap, HashMap};

/// At most this many byte ranges per access of one operand, over all its partitions, before
/// outer dimensions are merged into bounding boxes.
pub const MAX_PIECES_PER_ACCESS: u64 = 16_384;

/// A vector clock: per stream, how many of its instructions are known complete.
type Clock = [u32; NUM_STREAMS];

/// An instruction: its stream and its index in that stream.
type Who = (u8, u32);

/// The access history of a run of bytes.
#[derive(Clone, Debug)]
struct Seg {
    end: u64,
    writer: Option<Who>,
    /// The latest reader per stream since the last write.
    readers: SmallVec<[Who; 2]>,
}

/// The memory an access names, for messages.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Space {
    Hbm,
    Sbuf,
    Psum,
}

/// One byte range of one operand in one partition (0 for HBM).
#[derive(Clone, Copy, Debug)]
struct Piece {
    space: Space,
    partition: u32,
    lo: u64,
    hi: u64,
    write: bool,
}

/// An open PSUM accumulation group.
#[derive(Clone, Copy, Debug)]
struct Group {
    p0: u32,
    p1: u32,
    lo: u64,
    hi: u64,
    opener: At,
}

impl Group {
    fn overlaps(&self, o: &Group) -> bool {
        self.p0 < o.p1 && o.p0 < self.p1 && self.lo < o.hi && o.lo < self.hi
    }

    fn same_bytes(&self, o: &Group) -> bool {
        (self.p0, self.p1, self.lo, self.hi) == (o.p0, o.p1, o.lo, o.hi)
    }

    fn describe(&self) -> String {
        format!(
            "psum partitions {}..{} bytes {}..{}",
            self.p0, self.p1, self.lo, self.hi
        )
    }
}

/// The state of the debug checks during one run.
pub(crate) struct Checks<'a> {
    program: &'a Program,
    races: bool,
    groups_on: bool,
    clocks: Vec<Clock>,
    /// Per semaphore, the join of the clocks of its first `k + 1` increments at index `k`.
    sem_prefix: Vec<Vec<Clock>>,
    /// The clock each signalling instruction hands to its increment, until it is applied.
    signal_clocks: HashMap<Who, Clock>,
    /// Shadow memory: HBM, then each SBUF partition, then each PSUM partition; each an
    /// interval map from the start of a run to its history.
    shadow: Vec<BTreeMap<u64, Seg>>,
    partitions: u32,
    groups: Vec<Group>,
    pieces: Vec<Piece>,
}

impl<'a> Checks<'a> {
    /// The checks for a run of `program`; `races` and `groups` say which are on.
    pub fn new(
        program: &'a Program,
        semaphores: usize,
        partitions: u32,
        races: bool,
        groups: bool,
    ) -> Checks<'a> {
        Checks {
            program,
            races,
            groups_on: groups,
            clocks: vec![[0; NUM_STREAMS]; NUM_STREAMS],
            sem_prefix: vec![Vec::new(); semaphores],
            signal_clocks: HashMap::new(),
            shadow: if races {
                vec![BTreeMap::new(); 1 + 2 * partitions as usize]
            } else {
                Vec::new()
            },
            partitions,
            groups: Vec::new(),
            pieces: Vec::new(),
        }
    }

    /// True when any check is on.
    pub fn enabled(&self) -> bool {
        self.races || self.groups_on
    }

    /// Records that an increment of `sem` by instruction `(stream, index)` was applied.
    pub fn on_increment(&mut self, sem: u8, stream: usize, index: usize) {
        if !self.races {
            return;
        }
        let clock = self
            .signal_clocks
            .remove(&(stream as u8, index as u32))
            .unwrap_or([0; NUM_STREAMS]);
        if let Some(prefix) = self.sem_prefix.get_mut(sem as usize) {
            let mut joined = prefix.last().copied().unwrap_or([0; NUM_STREAMS]);
            join(&mut joined, &clock);
            prefix.push(joined);
        }
    }

    /// Checks instruction `inst`, at `at` (stream `s`), which is starting now: its waits
    /// have passed and its operands are in bounds.
    pub fn on_start(&mut self, s: usize, inst: &Inst, at: At) -> Result<(), RuntimeError> {
        if self.races {
            for &(sem, value) in &inst.sync.waits {
                if value == 0 {
                    continue;
                }
                let prefix = self
                    .sem_prefix
                    .get(sem as usize)
                    .and_then(|p| p.get(value as usize - 1))
                    .copied();
                if let (Some(p), Some(c)) = (prefix, self.clocks.get_mut(s)) {
                    join(c, &p);
                }
            }
            self.collect_pieces(&inst.op)?;
            self.check_races(s, at)?;
            if inst.sync.signal.is_some() {
                let mut clock = self.clocks[s];
                clock[s] = at.index as u32 + 1;
                self.signal_clocks.insert((s as u8, at.index as u32), clock);
            }
        }
        if self.groups_on {
            self.check_groups(&inst.op, at)?;
        }
        Ok(())
    }

    /// Fills `self.pieces` with the byte ranges `op` touches.
    fn collect_pieces(&mut self, op: &Op) -> Result<(), RuntimeError> {
        let accumulate = matches!(
            op,
            Op::Matmul {
                accumulate: true,
                ..
            }
        );
        let mut pieces = std::mem::take(&mut self.pieces);
        pieces.clear();
        op.visit_aps(&mut |ap, access| {
            let write = access == Access::Write;
            match ap {
                ApRef::Tile(t) => {
                    let space = match t.mem {
                        Mem::Sbuf => Space::Sbuf,
                        Mem::Psum => Space::Psum,
                    };
                    let parts = (t.partitions as u64).max(1);
                    let dims: SmallVec<[(i128, i128); 5]> = t
                        .dims
                        .iter()
                        .map(|d| (d.size as i128, d.stride as i128))
                        .collect();
                    let ranges = isa::byte_ranges(
                        t.offset as i128,
                        &dims,
                        t.dtype.size() as i128,
                        (MAX_PIECES_PER_ACCESS / parts).max(1),
                    );
                    for p in t.partition as u32..t.partition as u32 + parts as u32 {
                        for &(lo, hi) in &ranges {
                            pieces.push(Piece {
                                space,
                                partition: p,
                                lo,
                                hi,
                                write,
                            });
                            if write && accumulate {
                                pieces.push(Piece {
                                    space,
                                    partition: p,
                                    lo,
                                    hi,
                                    write: false,
                                });
                            }
                        }
                    }
                }
                ApRef::Hbm(h) => {
                    let dims: SmallVec<[(i128, i128); 5]> = h
                        .dims
                        .iter()
                        .map(|d| (d.size as i128, d.stride as i128))
                        .collect();
                    for (lo, hi) in isa::byte_ranges(
                        h.offset as i128,
                        &dims,
                        h.dtype.size() as i128,
                        MAX_PIECES_PER_ACCESS,
                    ) {
                        pieces.push(Piece {
                            space: Space::Hbm,
                            partition: 0,
                            lo,
                            hi,
                            write,
                        });
                    }
                }
            }
        });
        self.pieces = pieces;
        Ok(())
    }

    fn shadow_index(&self, p: &Piece) -> Option<usize> {
        if p.partition >= self.partitions && p.space != Space::Hbm {
            return None;
        }
        Some(match p.space {
            Space::Hbm => 0,
            Space::Sbuf => 1 + p.partition as usize,
            Space::Psum => 1 + (self.partitions + p.partition) as usize,
        })
    }

    /// Checks the collected pieces of instruction `at` on stream `s` against the shadow
    /// memory and records them: reads first, then writes, so that an instruction that
    /// reads and writes the same bytes ends as their last writer.
    fn check_races(&mut self, s: usize, at: At) -> Result<(), RuntimeError> {
        let me: Who = (s as u8, at.index as u32);
        let clock = self.clocks[s];
        let pieces = std::mem::take(&mut self.pieces);
        let mut result = Ok(());
        'outer: for write in [false, true] {
            for p in pieces.iter().filter(|p| p.write == write && p.lo < p.hi) {
                let Some(k) = self.shadow_index(p) else {
                    continue;
                };
                if let Some(conflict) = access(&mut self.shadow[k], p, me, &clock) {
                    result = Err(self.race_error(at, p, conflict));
                    break 'outer;
                }
            }
        }
        self.pieces = pieces;
        result
    }

    fn race_error(&self, at: At, p: &Piece, (other, other_writes): (Who, bool)) -> RuntimeError {
        let (t, q) = other;
        let opcode = self
            .program
            .streams
            .get(t as usize)
            .and_then(|st| st.get(q as usize))
            .map(|i| i.op.opcode())
            .unwrap_or(isa::Opcode::End);
        let earlier = At {
            engine: Engine::from_index(t as usize).unwrap_or(Engine::Tensor),
            index: q as usize,
            opcode,
        };
        let detail = match p.space {
            Space::Hbm => format!("hbm bytes {}..{}", p.lo, p.hi),
            Space::Sbuf => format!("sbuf partition {} bytes {}..{}", p.partition, p.lo, p.hi),
            Space::Psum => format!("psum partition {} bytes {}..{}", p.partition, p.lo, p.hi),
        };
        RuntimeError::Race {
            at,
            access: if p.write { "writes" } else { "reads" },
            detail,
            earlier,
            earlier_access: if other_writes { "writes" } else { "reads" },
        }
    }

    /// The PSUM accumulation-group check of one instruction (see the module comment).
    fn check_groups(&mut self, op: &Op, at: At) -> Result<(), RuntimeError> {
        if let Op::Matmul {
            out, accumulate, ..
        } = op
        {
            if out.mem != Mem::Psum {
                return Ok(());
            }
            let dims: SmallVec<[(i128, i128); 5]> = out
                .dims
                .iter()
                .map(|d| (d.size as i128, d.stride as i128))
                .collect();
            let Some((lo, hi)) = bounding_box(out.offset as i128, &dims, out.dtype.size() as i128)
            else {
                return Ok(());
            };
            let me = Group {
                p0: out.partition as u32,
                p1: out.partition as u32 + out.partitions as u32,
                lo,
                hi,
                opener: at,
            };
            let clash = self
                .groups
                .iter()
                .find(|g| g.overlaps(&me) && !g.same_bytes(&me))
                .copied();
            if *accumulate {
                if self.groups.iter().any(|g| g.same_bytes(&me)) {
                    return Ok(());
                }
                let detail = match clash {
                    Some(g) => format!(
                        "accumulates into {}, which overlaps the unfinished group that {} opened on {}",
                        me.describe(),
                        g.opener,
                        g.describe()
                    ),
                    None => format!(
                        "accumulates into {}, where no group is open (no matmul with \
                         accumulate=false has started one since those bytes were last read or written)",
                        me.describe()
                    ),
                };
                return Err(RuntimeError::PsumGroup { at, detail });
            }
            if let Some(g) = clash {
                return Err(RuntimeError::PsumGroup {
                    at,
                    detail: format!(
                        "starts a group on {}, which overlaps the unfinished group that {} opened on {}",
                        me.describe(),
                        g.opener,
                        g.describe()
                    ),
                });
            }
            self.groups.retain(|g| !g.same_bytes(&me));
            self.groups.push(me);
            return Ok(());
        }
        // Any other access to a group's bytes closes the group; a write (a memset, or a
        // sum rescaled in place) then leaves a partial sum there that a matmul may
        // accumulate onto, so it opens a group on the bytes it wrote.
        let mut touched: SmallVec<[Group; 4]> = SmallVec::new();
        let mut written: SmallVec<[usize; 4]> = SmallVec::new();
        op.visit_aps(&mut |ap, access| {
            if let ApRef::Tile(t) = ap {
                if t.mem != Mem::Psum {
                    return;
                }
                let dims: SmallVec<[(i128, i128); 5]> = t
                    .dims
                    .iter()
                    .map(|d| (d.size as i128, d.stride as i128))
                    .collect();
                if let Some((lo, hi)) =
                    bounding_box(t.offset as i128, &dims, t.dtype.size() as i128)
                {
                    if access == Access::Write {
                        written.push(touched.len());
                    }
                    touched.push(Group {
                        p0: t.partition as u32,
                        p1: t.partition as u32 + t.partitions as u32,
                        lo,
                        hi,
                        opener: at,
                    });
                }
            }
        });
        if !touched.is_empty() {
            self.groups
                .retain(|g| !touched.iter().any(|t| t.overlaps(g)));
        }
        for &i in &written {
            self.groups.push(touched[i]);
        }
        Ok(())
    }
}

/// `a = max(a, b)` elementwise.
fn join(a: &mut Clock, b: &Clock) {
    for (x, y) in a.iter_mut().zip(b) {
        *x = (*x).max(*y);
    }
}

/// The byte range `[lo, hi)` that a pattern of `(size, stride)` dimensions (strides in
/// elements) from byte `offset` touches, or `None` when it is empty or negative.
fn bounding_box(offset: i128, dims: &[(i128, i128)], esize: i128) -> Option<(u64, u64)> {
    let (lo, hi) = isa::extent(dims.iter().copied())?;
    let lo = offset + lo * esize;
    let hi = offset + hi * esize + esize;
    (lo >= 0 && hi <= u64::MAX as i128).then_some((lo as u64, hi as u64))
}

/// Splits the run that straddles `at`, so that a run starts at `at`.
fn split_at(map: &mut BTreeMap<u64, Seg>, at: u64) {
    let Some((_, seg)) = map.range_mut(..at).next_back() else {
        return;
    };
    if seg.end > at {
        let tail = Seg {
            end: seg.end,
            writer: seg.writer,
            readers: seg.readers.clone(),
        };
        seg.end = at;
        map.insert(at, tail);
    }
}

/// The first earlier access of `seg` that races with an access by `me` (clock `clock`):
/// the other instruction and whether it wrote.
fn conflict(seg: &Seg, write: bool, me: Who, clock: &Clock) -> Option<(Who, bool)> {
    let unordered = |(t, q): Who| t != me.0 && clock.get(t as usize).is_some_and(|&c| c <= q);
    if let Some(w) = seg.writer.filter(|&w| unordered(w)) {
        return Some((w, true));
    }
    if write {
        if let Some(&r) = seg.readers.iter().find(|&&r| unordered(r)) {
            return Some((r, false));
        }
    }
    None
}

/// Checks and records one access of `p` by `me` in one shadow map; returns the first race.
fn access(map: &mut BTreeMap<u64, Seg>, p: &Piece, me: Who, clock: &Clock) -> Option<(Who, bool)> {
    split_at(map, p.lo);
    split_at(map, p.hi);
    for seg in map.range(p.lo..p.hi).map(|(_, s)| s) {
        if let Some(c) = conflict(seg, p.write, me, clock) {
            return Some(c);
        }
    }
    if p.write {
        // The range becomes one run written by `me`.
        let keys: SmallVec<[u64; 8]> = map.range(p.lo..p.hi).map(|(&k, _)| k).collect();
        for k in keys {
            map.remove(&k);
        }
        map.insert(
            p.lo,
            Seg {
                end: p.hi,
                writer: Some(me),
                readers: SmallVec::new(),
            },
        );
        return None;
    }
    let mut cursor = p.lo;
    let mut gaps: SmallVec<[(u64, u64); 4]> = SmallVec::new();
    for (&start, seg) in map.range_mut(p.lo..p.hi) {
        if start > cursor {
            gaps.push((cursor, start));
        }
        match seg.readers.iter_mut().find(|r| r.0 == me.0) {
            Some(r) => r.1 = r.1.max(me.1),
            None => seg.readers.push(me),
        }
        cursor = seg.end;
    }
    if cursor < p.hi {
        gaps.push((cursor, p.hi));
    }
    for (lo, hi) in gaps {
        map.insert(
            lo,
            Seg {
                end: hi,
                writer: None,
                readers: SmallVec::from_elem(me, 1),
            },
        );
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shadow_memory_finds_unordered_writes_only() {
        let mut map = BTreeMap::new();
        let piece = |lo, hi, write| Piece {
            space: Space::Sbuf,
            partition: 0,
            lo,
            hi,
            write,
        };
        let zero = [0u32; NUM_STREAMS];
        // Stream 4 writes 0..64.
        assert_eq!(access(&mut map, &piece(0, 64, true), (4, 0), &zero), None);
        // Stream 1 reads 32..96 without knowing of it: a race with the write.
        assert_eq!(
            access(&mut map, &piece(32, 96, false), (1, 0), &zero),
            Some(((4, 0), true))
        );
        // With a clock that knows stream 4's first instruction completed, no race.
        let mut knows = zero;
        knows[4] = 1;
        assert_eq!(
            access(&mut map, &piece(32, 96, false), (1, 0), &knows),
            None
        );
        // A write by stream 4 after stream 1's read, unordered: write after read.
        assert_eq!(
            access(&mut map, &piece(90, 100, true), (4, 1), &zero),
            Some(((1, 0), false))
        );
        // Same-stream accesses never race.
        assert_eq!(access(&mut map, &piece(0, 200, true), (1, 1), &knows), None);
    }
}
