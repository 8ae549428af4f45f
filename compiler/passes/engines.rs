//! The `engines` pass (optimising): spreads DMA instructions over the machine's 16 queues.
//!
//! The `tile` pass puts every DMA on queue 0, where their data phases would run one after
//! another at a single queue's rate. This pass walks the layout and moves each DMA to the
//! queue that has been given the fewest bytes so far (ties go to the lowest queue), so
//! that transfers run in parallel and the queues carry balanced loads.
//!
//! Loads (HBM to SBUF, and SBUF to SBUF) and stores (SBUF to HBM) get separate sets of
//! queues, sized by their share of the kernel's bytes. A queue issues in order, and a
//! store waits for the compute that produces its data: on a shared queue it would hold
//! back every load queued after it — the loads of the next blocks, which are exactly what
//! the compute engines are about to need.
//!
//! Engines other than DMA are left alone. With the pass disabled, every instruction stays
//! where `tile` put it.

use super::Compilation;
use crate::tile::TileFunc;
use isa::{DmaAp, Engine, Op, NUM_DMA_QUEUES};

/// The bytes a DMA moves: the larger of its two sides.
pub(crate) fn dma_bytes(op: &Op) -> u64 {
    let side = |ap: &DmaAp| match ap {
        DmaAp::Hbm(h) => h.elems().saturating_mul(h.dtype.size() as u64),
        DmaAp::Tile(t) => t.elems().saturating_mul(t.dtype.size() as u64),
    };
    match op {
        Op::Dma { dst, src } => side(dst).max(side(src)),
        _ => 0,
    }
}

/// True for a DMA that writes HBM (a store).
fn is_store(op: &Op) -> bool {
    matches!(
        op,
        Op::Dma {
            dst: DmaAp::Hbm(_),
            ..
        }
    )
}

/// Assigns the DMA instructions of `func` to queues; returns whether any moved.
pub fn balance(func: &mut TileFunc) -> bool {
    // Split the queues between loads and stores by their shares of the bytes.
    let (mut load_bytes, mut store_bytes) = (0u64, 0u64);
    for &i in &func.layout {
        if let Some(inst) = func.insts.get(i) {
            if matches!(inst.engine, Engine::Dma(_)) {
                let b = dma_bytes(&inst.op);
                if is_store(&inst.op) {
                    store_bytes = store_bytes.saturating_add(b);
                } else {
                    load_bytes = load_bytes.saturating_add(b);
                }
            }
        }
    }
    let total = load_bytes.saturating_add(store_bytes).max(1);
    let queues = NUM_DMA_QUEUES as u64;
    let load_queues = if load_bytes == 0 || store_bytes == 0 {
        queues
    } else {
        ((queues * load_bytes + total / 2) / total).clamp(1, queues - 1)
    } as usize;
    let mut load = [0u64; NUM_DMA_QUEUES];
    let mut changed = false;
    for &i in &func.layout {
        let Some(inst) = func.insts.get_mut(i) else {
            continue;
        };
        if !matches!(inst.engine, Engine::Dma(_)) {
            continue;
        }
        let range = if store_bytes == 0 || load_bytes == 0 {
            0..NUM_DMA_QUEUES
        } else if is_store(&inst.op) {
            load_queues..NUM_DMA_QUEUES
        } else {
            0..load_queues
        };
        // The least loaded queue of the set; `min_by_key` keeps the first of equal keys.
        let (q, _) = load[range.clone()]
            .iter()
            .enumerate()
            .min_by_key(|&(_, &bytes)| bytes)
            .map(|(q, b)| (q + range.start, *b))
            .unwrap_or((range.start, 0));
        load[q] = load[q].saturating_add(dma_bytes(&inst.op));
        let engine = Engine::Dma(q as u8);
        changed |= inst.engine != engine;
        inst.engine = engine;
    }
    changed
}

/// The pass: nothing to do before the tile pass has produced tile IR.
pub fn run(c: &mut Compilation) -> Result<bool, String> {
    match c.tile.as_mut() {
        Some(func) => Ok(balance(func)),
        None => Ok(false),
    }
}
