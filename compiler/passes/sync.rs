//! The `sync` pass (required): semaphores for every cross-engine dependency, and no more.
//!
//! Streams are the engines (`Engine::index`: tensor, vector, scalar, gpsimd, dma0..15).
//! Every instruction signals its own stream's semaphore (semaphore index = stream index),
//! and streams complete in order, so semaphore `s` reaches `k + 1` exactly when the
//! instruction at position `k` of stream `s` has completed (inserted `nop`s count; the
//! `end` that emission appends never signals and is never waited on).
//!
//! Walking the layout, each instruction's accesses are computed in placed memory (HBM,
//! SBUF and PSUM; see [`crate::tile::Hazards`]) and it depends on the last writer of every
//! byte it reads or writes and on every reader since that write, on other streams (a
//! matmul with `accumulate` reads its `out`). Per producing stream only the latest
//! conflicting instruction matters: the wait is `sem[t] >= pos + 1`. A wait is dropped
//! when the consuming stream already knows that much: per consumer stream the pass keeps a
//! vector clock of the counts it has waited for, merged with what each waited-for
//! instruction itself knew when it started (transitively), and a new wait implied by
//! another new wait's knowledge is dropped too. More than four waits are carried by `nop`s
//! inserted on the same stream just before the instruction.
//!
//! A matmul's or transpose's stationary operand may be loaded before the instruction
//! starts: the timing model begins the load at the later of the previous Tensor
//! instruction's start and the instruction's *own* waits (ISA.md, timing rule 4). So the
//! waits that its stationary operand needs stay on the instruction itself, never on a
//! `nop` before it and never left out because a `nop` or another instruction after the
//! previous matmul already waited for them: only what the stream knew when the previous
//! matmul or transpose started counts as known for them.

use super::Compilation;
use crate::tile::{Hazards, TileFunc, TileInst};
use isa::{Op, MAX_WAITS, NUM_STREAMS};

const NS: usize = NUM_STREAMS;

/// What synchronisation did, for tests and statistics.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SyncStats {
    /// Waits placed on instructions (including on inserted `nop`s).
    pub waits: usize,
    /// `nop`s inserted to carry waits beyond four.
    pub nops: usize,
}

/// The pass: nothing to do before the tile pass has produced tile IR.
pub fn run(c: &mut Compilation) -> Result<bool, String> {
    match c.tile.as_mut() {
        Some(func) => synchronise(func).map(|_| true),
        None => Ok(false),
    }
}

/// Adds semaphore waits and signals to every instruction of an allocated function.
pub fn synchronise(func: &mut TileFunc) -> Result<SyncStats, String> {
    let mut hazards = Hazards::new(func);
    let mut stats = SyncStats::default();
    // Per consumer stream: the count of each producer stream known to be complete.
    let mut know = [[0u32; NS]; NS];
    // Per stream, per position: what the instruction knew when it started.
    let mut snaps: Vec<Vec<[u32; NS]>> = vec![Vec::new(); NS];
    let mut touched = Vec::new();
    let mut stationary = Vec::new();
    // What the Tensor stream knew when its last matmul or transpose started.
    let mut know_at_load = [0u32; NS];
    // The stream position of each instruction, by its index in the original layout (the
    // tracker names earlier accesses by that index).
    let mut pos_of: Vec<u32> = Vec::with_capacity(func.layout.len());
    let layout = std::mem::take(&mut func.layout);
    let mut new_layout = Vec::with_capacity(layout.len() + layout.len() / 16);
    for (seq, i) in layout.into_iter().enumerate() {
        let seq = seq as u32;
        let Some(inst) = func.insts.get(i) else {
            return Err(format!("the layout lists {i}, which is not declared"));
        };
        let engine = inst.engine;
        let s = engine.index();
        touched.clear();
        hazards.touches(func, i, &mut touched)?;
        let mut deps = [0u32; NS];
        hazards.access(&touched, s as u8, seq, &mut |t, q| {
            // The instruction's own entries (not numbered yet) are on its own stream.
            if let (Some(&p), Some(d)) = (pos_of.get(q as usize), deps.get_mut(t as usize)) {
                *d = (*d).max(p + 1);
            }
        });
        deps[s] = 0;
        // The stationary operand's producers, as far as the stream did not know them
        // complete when its previous matmul or transpose started.
        stationary.clear();
        hazards.stationary_touches(func, i, &mut stationary)?;
        let mut held = [0u32; NS];
        if !stationary.is_empty() {
            hazards.access(&stationary, s as u8, seq, &mut |t, q| {
                if let (Some(&p), Some(d)) = (pos_of.get(q as usize), held.get_mut(t as usize)) {
                    *d = (*d).max(p + 1);
                }
            });
            held[s] = 0;
            for (h, known) in held.iter_mut().zip(know_at_load) {
                if *h <= known {
                    *h = 0;
                }
            }
        }
        // The waits this stream does not already know to be satisfied.
        let mut waits: Vec<(usize, u32)> = deps
            .iter()
            .enumerate()
            .filter(|&(t, &need)| need > know[s][t])
            .map(|(t, &need)| (t, need))
            .collect();
        // Drop a wait that another remaining wait's producer already knew to hold.
        let mut k = 0;
        while k < waits.len() {
            let (t, need) = waits[k];
            let implied = waits.iter().enumerate().any(|(j, &(u, v))| {
                j != k
                    && snaps[u]
                        .get(v as usize - 1)
                        .is_some_and(|snap| snap[t] >= need)
            });
            if implied {
                waits.remove(k);
            } else {
                k += 1;
            }
        }
        // The stationary operand's waits, last, so that they stay on the instruction
        // (in stream order when no `nop` is needed).
        waits.retain(|&(t, _)| held[t] == 0);
        for (t, &need) in held.iter().enumerate() {
            if need > 0 {
                waits.push((t, need.max(deps[t])));
            }
        }
        if waits.len() <= MAX_WAITS {
            waits.sort_unstable();
        }
        stats.waits += waits.len();
        // Waits beyond the last four go on `nop`s just before the instruction.
        while waits.len() > MAX_WAITS {
            let take = (waits.len() - MAX_WAITS).min(MAX_WAITS);
            let carried: Vec<(usize, u32)> = waits.drain(..take).collect();
            let nop = func.insts.push(TileInst {
                op: Op::Nop {},
                engine,
                bufs: Default::default(),
            });
            func.spans[nop] = func.spans[i];
            apply(&mut know, &snaps, s, &carried);
            func.sync[nop] = sync_of(&carried, s);
            snaps[s].push(know[s]);
            new_layout.push(nop);
            stats.nops += 1;
        }
        apply(&mut know, &snaps, s, &waits);
        if !stationary.is_empty() {
            know_at_load = know[s];
        }
        func.sync[i] = sync_of(&waits, s);
        let pos = snaps[s].len() as u32;
        snaps[s].push(know[s]);
        pos_of.push(pos);
        new_layout.push(i);
    }
    func.layout = new_layout;
    func.synced = true;
    Ok(stats)
}

/// Learns what the waits of an instruction on stream `s` establish.
fn apply(know: &mut [[u32; NS]; NS], snaps: &[Vec<[u32; NS]>], s: usize, waits: &[(usize, u32)]) {
    for &(t, need) in waits {
        if let Some(snap) = snaps[t].get(need as usize - 1) {
            for (k, v) in know[s].iter_mut().zip(snap) {
                *k = (*k).max(*v);
            }
        }
        know[s][t] = know[s][t].max(need);
    }
}

/// The sync fields: the waits (stream index = semaphore) and the own-stream signal.
fn sync_of(waits: &[(usize, u32)], s: usize) -> isa::Sync {
    isa::Sync {
        waits: waits.iter().map(|&(t, v)| (t as u8, v)).collect(),
        signal: Some(s as u8),
    }
}
