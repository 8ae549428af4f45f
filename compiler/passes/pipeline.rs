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
use crate::tile::{Buf, TInst, TileFunc, TileInst};
use isa::{Access, Engine, Mem, Op, TileAp};
use runtime::{compute_cost, MachineConfig};
use std::collections::HashMap;

/// How many earlier compute instructions one may overtake.
const WINDOW: usize = 48;
/// DMA latency and per-queue rate of the estimate (docs/machine.md).
const DMA_LATENCY: u64 = 2000;
const DMA_BYTES_PER_CYCLE: u64 = 16;

/// True for the instructions whose runs this pass reorders and splits: loads, stores, the
/// elementwise, reduction and activation work of row blocks, and the matmuls of column sums
/// a row group accumulates in PSUM (`tiling/colsum.rs`: every one writes the same PSUM
/// tile, so the dependencies keep them in their order on the Tensor engine, and the blocks'
/// other work moves around them; the layernorm backward's blocks took turns without this).
/// A run with anything else
/// (scans chained by their carries, arg-reductions) is left as the tiler emitted it: the
/// estimate does not model what its tiling planned (measured: `run/scans` took 1,147,553
/// cycles instead of 647,763 when its chunks were reordered).
fn plain_block_work(op: &Op) -> bool {
    matches!(
        op,
        Op::Dma { .. }
            | Op::TensorTensor { .. }
            | Op::TensorScalar { .. }
            | Op::TensorReduce { .. }
            | Op::TensorReduceScalar { .. }
            | Op::TensorCopy { .. }
            | Op::Activate { .. }
            | Op::Memset { .. }
            | Op::Select { .. }
            | Op::Iota { .. }
            | Op::AffineSelect { .. }
            | Op::Matmul { .. }
            | Op::Nop {}
    )
}

/// The runs of row-group instructions in `layout` (ranges of positions), without those
/// holding anything but plain block work.
fn runs(func: &TileFunc, layout: &[TInst]) -> Vec<std::ops::Range<usize>> {
    let mut out = Vec::new();
    let mut k = 0;
    while k < layout.len() {
        if !func.row_group[layout[k]] {
            k += 1;
            continue;
        }
        let mut e = k;
        while e < layout.len() && func.row_group[layout[e]] {
            e += 1;
        }
        if layout[k..e]
            .iter()
            .all(|&t| plain_block_work(&func.insts[t].op))
        {
            out.push(k..e);
        }
        k = e;
    }
    out
}

/// The largest fraction of an instruction's columns given to GpSimd (see
/// `share_with_gpsimd`): the pieces then end together.
const MAX_SHARE: f64 = 0.2;
/// The splittable instructions of a run from which the cap `MAX_SHARE` does not apply.
const LONG_STREAM: usize = 48;

/// The fewest columns of either piece of an instruction split between Vector and GpSimd.
const MIN_SPLIT_COLS: u32 = 64;

/// Columns `c0..c0 + cn` of the last dimension of a tile pattern of one or two
/// dimensions (the second: packed rows, `tiling::block::Pack`, each narrowed alike).
fn cols_of(ap: &TileAp, c0: u32, cn: u32) -> TileAp {
    let mut out = ap.clone();
    let last = ap.dims.len() - 1;
    let stride = ap.dims[last].stride as i64;
    let bytes = c0 as i64 * stride * ap.dtype.size() as i64;
    out.offset = (ap.offset as i64 + bytes) as u32;
    out.dims[last].size = cn;
    out
}

/// The Vector elementwise instruction `op` with its whole-row operands narrowed to columns
/// `c0..c0 + cn` of their last dimension, when it is one that GpSimd can share:
/// `tensor_tensor`, `tensor_scalar` and `tensor_copy` on float SBUF tiles of one free
/// dimension, or of two whose first (packed rows) is the same size in every operand.
fn split_op(op: &Op, c0: u32, cn: u32) -> Option<Op> {
    let shape = |ap: &TileAp| (ap.dims.len(), ap.dims.first().map(|d| d.size));
    let plain = |ap: &TileAp| {
        ap.mem == Mem::Sbuf
            && (1..=2).contains(&ap.dims.len())
            && ap.dtype.is_float()
            && ap.dims.last().is_some_and(|d| d.stride > 0)
    };
    match op {
        Op::TensorTensor { op, out, a, b }
            if plain(out)
                && plain(a)
                && plain(b)
                && shape(a) == shape(out)
                && shape(b) == shape(out) =>
        {
            Some(Op::TensorTensor {
                op: *op,
                out: cols_of(out, c0, cn),
                a: cols_of(a, c0, cn),
                b: cols_of(b, c0, cn),
            })
        }
        Op::TensorScalar {
            out,
            src,
            op0,
            s0,
            op1,
            s1,
        } if plain(out) && plain(src) && shape(src) == shape(out) => Some(Op::TensorScalar {
            out: cols_of(out, c0, cn),
            src: cols_of(src, c0, cn),
            op0: *op0,
            s0: s0.clone(),
            op1: *op1,
            s1: s1.clone(),
        }),
        Op::TensorCopy { out, src } if plain(out) && plain(src) && shape(src) == shape(out) => {
            Some(Op::TensorCopy {
                out: cols_of(out, c0, cn),
                src: cols_of(src, c0, cn),
            })
        }
        _ => None,
    }
}

/// The columns of a splittable instruction (its output's last dimension) and the packed
/// rows they repeat over (1 for a pattern of one dimension).
fn split_cols(op: &Op) -> Option<(u32, u32)> {
    let out = match op {
        Op::TensorTensor { out, .. }
        | Op::TensorScalar { out, .. }
        | Op::TensorCopy { out, .. } => out,
        _ => return None,
    };
    split_op(op, 0, 1)?;
    let reps = if out.dims.len() == 2 {
        out.dims[0].size
    } else {
        1
    };
    Some((out.dims.last()?.size, reps))
}

/// Gives GpSimd a share of the columns of Vector's elementwise work in each run of
/// row-group instructions where Vector has more work than Scalar and GpSimd: the share
/// that would make Vector's and GpSimd's loads equal (GpSimd costs four times Vector's per
/// element), no larger than what brings Vector down to Scalar's load. Each instruction is
/// cut in two column ranges, the second on GpSimd right after it; elementwise work gives
/// the same bits on either engine.
pub fn share_with_gpsimd(func: &mut TileFunc, cfg: &MachineConfig) -> bool {
    let mut changed = false;
    let old = func.layout.clone();
    let mut out = Vec::with_capacity(old.len());
    let mut k = 0;
    for r in runs(func, &old) {
        out.extend_from_slice(&old[k..r.start]);
        let (e, seg) = (r.end, &old[r.clone()]);
        // Each engine's load in the run, and Vector's work that GpSimd could share.
        let (mut v, mut sc, mut g, mut shareable) = (0u64, 0u64, 0u64, 0u64);
        let mut pieces = 0usize;
        for &t in seg {
            let inst = &func.insts[t];
            let c = compute_cost(&inst.op, inst.engine, cfg);
            match inst.engine {
                Engine::Vector => {
                    v += c;
                    if split_cols(&inst.op).is_some_and(|(n, r)| n * r >= 2 * MIN_SPLIT_COLS) {
                        shareable += c;
                        pieces += 1;
                    }
                }
                Engine::Scalar => sc += c,
                Engine::GpSimd => g += c,
                _ => {}
            }
        }
        // Vector work x moved costs GpSimd 4x; only where Vector is clearly the busiest
        // engine (layernorm f32[4096, 4096], with Vector 5% above Scalar, took 587,050
        // cycles instead of 579,532 with a share).
        if v * 10 < sc * 12 {
            k = r.end;
            out.extend_from_slice(seg);
            continue;
        }
        let x = (v.saturating_sub(g) / 5)
            .min(v.saturating_sub(sc))
            .min(shareable);
        // Unless the run is a long stream of splittable work (`LONG_STREAM` instructions,
        // many blocks whose chains overlap), no more than a fifth of an instruction's
        // columns: GpSimd's piece then takes no longer than Vector's (four times the cost
        // per element), so a chain through the split instructions gets shorter, never
        // longer. With a larger share where little of Vector's work can be split
        // (`run/scans`' `where` operands: 3,654 of 5,000 columns on GpSimd), GpSimd's
        // pieces took three times as long as the instruction had on Vector and the scans
        // after them started later (624,619 cycles without the pass, 741,337 with it);
        // rmsnorm + FP8 quantisation's 16 blocks also ran faster capped (307,158 ->
        // 260,991), the Triton layernorm forward's 64 split instructions slower (1,459,500
        // -> 1,484,011).
        let cap = if pieces >= LONG_STREAM {
            1.0
        } else {
            MAX_SHARE
        };
        let frac = if shareable == 0 {
            0.0
        } else {
            (x as f64 / shareable as f64).min(cap)
        };
        for &t in seg {
            out.push(t);
            let inst = &func.insts[t];
            if inst.engine != Engine::Vector || frac < 0.02 {
                continue;
            }
            let Some((n, reps)) = split_cols(&inst.op) else {
                continue;
            };
            let gn = (n as f64 * frac).round() as u32;
            if gn == 0 || gn * reps < MIN_SPLIT_COLS || (n - gn) * reps < MIN_SPLIT_COLS {
                continue;
            }
            let (Some(head), Some(tail)) = (
                split_op(&inst.op, 0, n - gn),
                split_op(&inst.op, n - gn, gn),
            ) else {
                continue;
            };
            let bufs = inst.bufs.clone();
            let span = func.spans[t];
            func.insts[t].op = head;
            let new = func.insts.push(TileInst {
                op: tail,
                engine: Engine::GpSimd,
                bufs,
            });
            func.spans[new] = span;
            func.row_group[new] = true;
            out.push(new);
            changed = true;
        }
        k = e;
    }
    out.extend_from_slice(&old[k..]);
    func.layout = out;
    changed
}

/// Reorders every maximal run of row-group instructions of `func.layout`; returns whether
/// anything moved.
pub fn interleave(func: &mut TileFunc, cfg: &MachineConfig, geometry: &isa::Geometry) -> bool {
    let sbuf_budget = geometry.sbuf_partition_bytes as i64 * 3 / 4;
    let old = func.layout.clone();
    let mut out = Vec::with_capacity(old.len());
    let mut k = 0;
    for r in runs(func, &old) {
        out.extend_from_slice(&old[k..r.start]);
        let seg = &old[r.clone()];
        match schedule_segment(func, seg, cfg, sbuf_budget) {
            Some(order) => out.extend(order),
            None => out.extend_from_slice(seg),
        }
        k = r.end;
    }
    out.extend_from_slice(&old[k..]);
    let changed = out != old;
    func.layout = out;
    changed
}

/// The new order of one run of instructions, or `None` to keep it.
fn schedule_segment(
    func: &TileFunc,
    seg: &[TInst],
    cfg: &MachineConfig,
    sbuf_budget: i64,
) -> Option<Vec<TInst>> {
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
    let mut ready: Vec<usize> = computes
        .iter()
        .copied()
        .filter(|&i| unmet[i] == 0)
        .collect();
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
                let start =
                    ready_at(d, &finish, &begin).max(queue_issue.get(&q).copied().unwrap_or(0));
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
        order.push(pick);
    }
    // Kept only where the estimate of the streams in the new order ends sooner than in
    // the old one (each engine and queue in order, every instruction after its inputs).
    let makespan = |order: &[usize]| {
        let mut end = vec![0u64; n];
        let mut begin = vec![0u64; n];
        let mut free: HashMap<Engine, u64> = HashMap::new();
        let mut data: HashMap<Engine, u64> = HashMap::new();
        for &i in order {
            let e = func.insts[seg[i]].engine;
            let start = ready_at(i, &end, &begin).max(free.get(&e).copied().unwrap_or(0));
            begin[i] = start;
            if is_dma(i) {
                free.insert(e, start);
                let d = (start + DMA_LATENCY).max(data.get(&e).copied().unwrap_or(0));
                end[i] = d + cost[i] - DMA_LATENCY;
                data.insert(e, end[i]);
            } else {
                end[i] = start + cost[i];
                free.insert(e, end[i]);
            }
        }
        end.iter().copied().max().unwrap_or(0)
    };
    // And only where it keeps no more SBUF bytes live at once than the old order (tiles of
    // the run, live from their first access in it to their last), or at most three
    // quarters of a partition: more would make `alloc` spill (measured: `run/scans`' long
    // rows, 647,763 -> 1,147,553 cycles).
    let peak = |order: &[usize]| {
        let mut first: HashMap<Buf, usize> = HashMap::new();
        let mut last: HashMap<Buf, usize> = HashMap::new();
        for (pos, &i) in order.iter().enumerate() {
            for &(b, _) in &func.insts[seg[i]].buf_accesses() {
                if matches!(func.bufs[b].kind, crate::tile::BufKind::Sbuf) {
                    first.entry(b).or_insert(pos);
                    last.insert(b, pos);
                }
            }
        }
        let mut delta = vec![0i64; n + 1];
        for (b, &f) in &first {
            delta[f] += func.bufs[*b].bytes as i64;
            delta[last[b] + 1] -= func.bufs[*b].bytes as i64;
        }
        let (mut live, mut most) = (0i64, 0i64);
        for d in delta {
            live += d;
            most = most.max(live);
        }
        most
    };
    let old: Vec<usize> = (0..n).collect();
    let new_peak = peak(&order);
    if makespan(&order) >= makespan(&old) || (new_peak > peak(&old) && new_peak > sbuf_budget) {
        return None;
    }
    Some(order.into_iter().map(|i| seg[i]).collect())
}

/// The pass: nothing to do before the tile pass has produced tile IR.
pub fn run(c: &mut Compilation) -> Result<bool, String> {
    let cfg = MachineConfig::new(c.options.preset);
    match c.tile.as_mut() {
        Some(func) => {
            // GpSimd's share lengthens each block's chain; it pays only where the blocks
            // are then interleaved, so it is undone where none are (measured: `run/scans`,
            // 647,763 -> 787,935 cycles with the share alone).
            let geometry = c.options.preset.geometry();
            let before = func.clone();
            let shared = share_with_gpsimd(func, &cfg);
            let moved = interleave(func, &cfg, &geometry);
            if shared && !moved {
                *func = before;
                return Ok(interleave(func, &cfg, &geometry));
            }
            Ok(moved || shared)
        }
        None => Ok(false),
    }
}
