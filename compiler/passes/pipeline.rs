//! The `pipeline` pass (optimising): interleaves the blocks of row groups, so that each
//! engine works on the next block while another engine finishes this one.
//!
//! The block evaluator emits a row group block after block, and each engine's stream is
//! the layout restricted to it, in order. A chain that crosses engines inside a block —
//! softmax's row maximum on Vector, its exponentials on Scalar, the division on Vector
//! again — then serialises the engines: Vector's division of block `i` waits for Scalar's
//! exponentials of block `i`, and Vector's maximum of block `i + 1`, which needs only its
//! load, waits behind it. This pass list-schedules each run of row-group instructions with
//! the timing model's costs (docs/machine.md): compute instructions in the order in which
//! an estimate of the machine would start them, each on the engine it already has; DMAs in
//! their order (the `schedule` pass chose it, and queues were assigned in it). In the
//! layout each DMA keeps its place relative to the compute work around it, so that loads
//! are not moved earlier (which would make every block's tiles live at once).
//!
//! The estimate: a compute instruction starts when its engine is free and the instructions
//! it depends on (through the buffers it reads and writes) have ended, and takes
//! `compute_cost`; a DMA issues when its queue has issued the previous one and its inputs
//! are ready, moves its bytes at 16 B per cycle after 2,000 cycles of latency, and its
//! queue's data phases are serial. A compute instruction may move ahead of at most
//! `WINDOW` compute instructions that precede it.
//!
//! Only the layout changes (no instruction, engine or buffer), and every instruction stays
//! after everything it depends on, so results do not change. Runs after `engines` (it
//! needs each instruction's engine) and before `alloc` and `sync`.

use super::engines::dma_bytes;
use super::Compilation;
use crate::tile::{Buf, TInst, TileFunc};
use isa::{Access, Engine};
use runtime::{compute_cost, MachineConfig};
use std::collections::HashMap;

/// How many earlier compute instructions one may overtake.
const WINDOW: usize = 48;
/// DMA latency and per-queue rate of the estimate (docs/machine.md).
const DMA_LATENCY: u64 = 2000;
const DMA_BYTES_PER_CYCLE: u64 = 16;

/// Reorders every maximal run of row-group instructions of `func.layout`; returns whether
/// anything moved.
pub fn interleave(func: &mut TileFunc, cfg: &MachineConfig) -> bool {
    let old = func.layout.clone();
    let mut out = Vec::with_capacity(old.len());
    let mut k = 0;
    while k < old.len() {
        if !func.row_group[old[k]] {
            out.push(old[k]);
            k += 1;
            continue;
        }
        let mut e = k;
        while e < old.len() && func.row_group[old[e]] {
            e += 1;
        }
        let seg = &old[k..e];
        match schedule_segment(func, seg, cfg) {
            Some(order) => out.extend(order),
            None => out.extend_from_slice(seg),
        }
        k = e;
    }
    let changed = out != old;
    func.layout = out;
    changed
}

/// The new order of one run of instructions, or `None` to keep it.
fn schedule_segment(func: &TileFunc, seg: &[TInst], cfg: &MachineConfig) -> Option<Vec<TInst>> {
    let n = seg.len();
    if n < 3 {
        return None;
    }
    // Dependencies through buffers: read after write, write after write, write after read.
    // A write after a write orders the two (the pieces of one load write one tile), but
    // the second need not wait for the first to end: `overlap` marks those edges.
    let mut preds: Vec<Vec<usize>> = vec![Vec::new(); n];
    let mut overlap: Vec<Vec<usize>> = vec![Vec::new(); n];
    let mut last_write: HashMap<Buf, usize> = HashMap::new();
    let mut reads_since: HashMap<Buf, Vec<usize>> = HashMap::new();
    for (i, &t) in seg.iter().enumerate() {
        let acc = func.insts[t].buf_accesses();
        let reads: Vec<Buf> = acc
            .iter()
            .filter(|&&(_, a)| a != Access::Write)
            .map(|&(b, _)| b)
            .collect();
        for &(b, a) in &acc {
            if let Some(&w) = last_write.get(&b) {
                if a == Access::Write && !reads.contains(&b) {
                    overlap[i].push(w);
                } else {
                    preds[i].push(w);
                }
            }
            if a == Access::Write {
                if let Some(rs) = reads_since.get(&b) {
                    preds[i].extend(rs.iter().copied().filter(|&r| r != i));
                }
            }
        }
        for &(b, a) in &acc {
            match a {
                Access::Write => {
                    last_write.insert(b, i);
                    reads_since.remove(&b);
                }
                _ => reads_since.entry(b).or_default().push(i),
            }
        }
        preds[i].sort_unstable();
        preds[i].dedup();
        overlap[i].retain(|w| !preds[i].contains(w));
        overlap[i].sort_unstable();
        overlap[i].dedup();
    }
    let is_dma = |i: usize| matches!(func.insts[seg[i]].engine, Engine::Dma(_));
    let dmas: Vec<usize> = (0..n).filter(|&i| is_dma(i)).collect();
    let computes: Vec<usize> = (0..n).filter(|&i| !is_dma(i)).collect();
    // The rank of each compute instruction among the compute instructions.
    let mut rank = vec![0usize; n];
    for (r, &i) in computes.iter().enumerate() {
        rank[i] = r;
    }
    let mut unmet: Vec<usize> = (0..n).map(|i| preds[i].len() + overlap[i].len()).collect();
    let mut succs: Vec<Vec<usize>> = vec![Vec::new(); n];
    for i in 0..n {
        for &p in preds[i].iter().chain(&overlap[i]) {
            succs[p].push(i);
        }
    }
    // Each instruction's estimated cost, and the longest path of costs from it to the end
    // of the run: among candidates that would start at the same time, the one with more
    // work behind it goes first (the next block's first stage before this block's last).
    let cost: Vec<u64> = (0..n)
        .map(|i| {
            let inst = &func.insts[seg[i]];
            if is_dma(i) {
                DMA_LATENCY + dma_bytes(&inst.op).div_ceil(DMA_BYTES_PER_CYCLE)
            } else {
                compute_cost(&inst.op, inst.engine, cfg).max(1)
            }
        })
        .collect();
    let mut path = vec![0u64; n];
    for i in (0..n).rev() {
        path[i] = cost[i] + succs[i].iter().map(|&s| path[s]).max().unwrap_or(0);
    }
    let better = |a: (u64, usize), b: (u64, usize)| {
        (a.0, std::cmp::Reverse(path[a.1]), a.1) < (b.0, std::cmp::Reverse(path[b.1]), b.1)
    };
    let mut finish = vec![0u64; n];
    let mut done = vec![false; n];
    let mut engine_free: HashMap<Engine, u64> = HashMap::new();
    let mut queue_issue: HashMap<Engine, u64> = HashMap::new();
    let mut queue_data: HashMap<Engine, u64> = HashMap::new();
    // Compute instructions whose dependencies are all scheduled.
    let mut ready: Vec<usize> = computes.iter().copied().filter(|&i| unmet[i] == 0).collect();
    let mut next_dma = 0;
    let mut first_compute = 0; // rank of the first unscheduled compute instruction
    let mut compute_order = Vec::with_capacity(computes.len());
    let mut begin = vec![0u64; n];
    let ready_at = |i: usize, finish: &[u64], begin: &[u64]| {
        let after = preds[i].iter().map(|&p| finish[p]).max().unwrap_or(0);
        let with = overlap[i].iter().map(|&p| begin[p]).max().unwrap_or(0);
        after.max(with)
    };
    for _ in 0..n {
        // The candidate that would start first (ties: the earliest in the old order).
        let mut best: Option<(u64, usize)> = None;
        for &i in &ready {
            if rank[i] >= first_compute + WINDOW {
                continue;
            }
            let e = func.insts[seg[i]].engine;
            let start = ready_at(i, &finish, &begin).max(engine_free.get(&e).copied().unwrap_or(0));
            if best.is_none_or(|b| better((start, i), b)) {
                best = Some((start, i));
            }
        }
        if let Some(&d) = dmas.get(next_dma) {
            if unmet[d] == 0 {
                let q = func.insts[seg[d]].engine;
                let start = ready_at(d, &finish, &begin).max(queue_issue.get(&q).copied().unwrap_or(0));
                if best.is_none_or(|b| better((start, d), b)) {
                    best = Some((start, d));
                }
            }
        }
        let (start, i) = best?;
        begin[i] = start;
        let inst = &func.insts[seg[i]];
        if is_dma(i) {
            let q = inst.engine;
            queue_issue.insert(q, start);
            let data = (start + DMA_LATENCY).max(queue_data.get(&q).copied().unwrap_or(0));
            let end = data + cost[i] - DMA_LATENCY;
            queue_data.insert(q, end);
            finish[i] = end;
            next_dma += 1;
        } else {
            let end = start + cost[i];
            engine_free.insert(inst.engine, end);
            finish[i] = end;
            ready.retain(|&r| r != i);
            compute_order.push(i);
            while first_compute < computes.len() && done[computes[first_compute]] {
                first_compute += 1;
            }
        }
        done[i] = true;
        if std::env::var("TESSERA_PIPELINE_DEBUG").is_ok() {
            eprintln!("{} {:?} {} {} {}", seg[i], inst.engine, start, finish[i], format!("{:?}", inst.op.opcode()));
        }
        if !is_dma(i) {
            while first_compute < computes.len() && done[computes[first_compute]] {
                first_compute += 1;
            }
        }
        for &s in &succs[i] {
            unmet[s] -= 1;
            if unmet[s] == 0 && !is_dma(s) {
                ready.push(s);
            }
        }
    }
    // The layout: compute work in the scheduled order, each DMA as early as its inputs
    // allow but not before the compute work that preceded it in the old order.
    let mut emitted = vec![false; n];
    let mut order = Vec::with_capacity(n);
    let (mut di, mut ci) = (0, 0);
    let can = |i: usize, emitted: &[bool]| preds[i].iter().chain(&overlap[i]).all(|&p| emitted[p]);
    while order.len() < n {
        let d = dmas.get(di).copied().filter(|&d| can(d, &emitted));
        let c = compute_order.get(ci).copied().filter(|&c| can(c, &emitted));
        let pick = match (d, c) {
            (Some(d), Some(c)) => {
                if d < compute_order[ci] {
                    d
                } else {
                    c
                }
            }
            (Some(d), None) => d,
            (None, Some(c)) => c,
            (None, None) => return None,
        };
        if Some(pick) == d {
            di += 1;
        } else {
            ci += 1;
        }
        emitted[pick] = true;
        order.push(seg[pick]);
    }
    Some(order)
}

/// The pass: nothing to do before the tile pass has produced tile IR.
pub fn run(c: &mut Compilation) -> Result<bool, String> {
    let cfg = MachineConfig::new(c.options.preset);
    match c.tile.as_mut() {
        Some(func) => Ok(interleave(func, &cfg)),
        None => Ok(false),
    }
}
