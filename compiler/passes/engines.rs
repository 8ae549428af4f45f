//! The `engines` pass (optimising): spreads DMA instructions over the machine's 16 queues.
//!
//! The `tile` pass puts every DMA on queue 0, where their data phases would run one after
//! another at a single queue's rate. This pass walks the layout and moves each DMA to the
//! queue that has been given the fewest bytes so far (ties go to the lowest queue), so
//! that transfers run in parallel and the queues carry balanced loads. Engines other than
//! DMA are left alone. With the pass disabled, every instruction stays where `tile` put it.

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

/// Assigns the DMA instructions of `func` to queues; returns whether any moved.
pub fn balance(func: &mut TileFunc) -> bool {
    let mut load = [0u64; NUM_DMA_QUEUES];
    let mut changed = false;
    for &i in &func.layout {
        let Some(inst) = func.insts.get_mut(i) else {
            continue;
        };
        if !matches!(inst.engine, Engine::Dma(_)) {
            continue;
        }
        // The least loaded queue; `min_by_key` keeps the first (lowest) of equal keys.
        let (q, _) = load
            .iter()
            .enumerate()
            .min_by_key(|&(_, &bytes)| bytes)
            .unwrap_or((0, &0));
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
