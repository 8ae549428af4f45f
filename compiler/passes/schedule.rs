//! The `schedule` pass (optimising): delays each burst of stores to HBM by a few bursts in
//! program order.
//!
//! A DMA queue issues in order, and a store waits for the compute that produces its data.
//! The tile pass emits a block's store right after the block's computation and before the
//! next block's loads, so a queue that holds the store would hold those loads back until
//! the computation ends — exactly when the compute engines want the next block. Moving
//! the store a few blocks later (three: measured on softmax, the norms and matmuls; two
//! was measurably worse, four and five no better: five cost the `long_row` filetest 11%)
//! lets the loads go first; by the time the queue reaches the store, its data is ready.
//! A block whose stores should count as one burst emits them together (the matmul tiler
//! does so for the M chunks that run as a group).
//!
//! Runs before `alloc` (a delayed store keeps its source tile alive, and allocation sees
//! that) and before `sync`. A store never moves past an instruction that touches the HBM
//! buffer it writes, so every read of stored data still comes after the store.

use super::Compilation;
use crate::tile::{Buf, BufKind, TInst, TileFunc};
use isa::{DmaAp, Op};

/// How many bursts of stores a burst waits behind.
const DELAY: usize = 3;

/// True for a DMA that writes HBM.
pub(crate) fn is_store(op: &Op) -> bool {
    matches!(
        op,
        Op::Dma {
            dst: DmaAp::Hbm(_),
            ..
        }
    )
}

/// The HBM buffers an instruction touches.
fn hbm_bufs(func: &TileFunc, inst: TInst) -> impl Iterator<Item = Buf> + '_ {
    func.insts[inst]
        .bufs
        .iter()
        .copied()
        .filter(move |b| matches!(func.bufs[*b].kind, BufKind::Hbm { .. }))
}

/// Reorders `func.layout`; returns whether anything moved.
pub fn delay_stores(func: &mut TileFunc) -> bool {
    let old = std::mem::take(&mut func.layout);
    let mut out = Vec::with_capacity(old.len());
    // The bursts waiting to be placed (oldest first), and the burst being collected.
    let mut pending: std::collections::VecDeque<Vec<TInst>> = Default::default();
    let mut current: Vec<TInst> = Vec::new();
    for &inst in &old {
        if is_store(&func.insts[inst].op) {
            current.push(inst);
            continue;
        }
        if !current.is_empty() {
            // A burst ended: it waits; the oldest waiting one goes here.
            pending.push_back(std::mem::take(&mut current));
            if pending.len() > DELAY {
                if let Some(mut b) = pending.pop_front() {
                    out.append(&mut b);
                }
            }
        }
        // Never move a store past an instruction that touches its HBM buffer.
        let touches = hbm_bufs(func, inst).any(|b| {
            pending
                .iter()
                .flatten()
                .any(|&s| hbm_bufs(func, s).any(|sb| sb == b))
        });
        if touches {
            for mut b in pending.drain(..) {
                out.append(&mut b);
            }
        }
        out.push(inst);
    }
    for mut b in pending.drain(..) {
        out.append(&mut b);
    }
    out.append(&mut current);
    let changed = out != old;
    func.layout = out;
    changed
}

/// The pass: nothing to do before the tile pass has produced tile IR.
pub fn run(c: &mut Compilation) -> Result<bool, String> {
    match c.tile.as_mut() {
        Some(func) => Ok(delay_stores(func)),
        None => Ok(false),
    }
}
