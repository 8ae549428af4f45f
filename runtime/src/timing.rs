//! The timing model, run together with execution: an event-driven simulation of the 20
//! instruction streams, their semaphores and the shared DMA bandwidth.
//!
//! Rules (the ISA documentation repeats them):
//! - Each stream issues in order. An instruction starts at the earliest time at which its
//!   engine is free and every wait `sem >= value` holds; a wait holds from the time of the
//!   increment that brought the semaphore to `value`.
//! - A compute instruction ends at `start + cost` (the table's `Cost:` formulas with the
//!   parameters of [`crate::Timing`]); its engine is free again at its end, and at its end
//!   it increments its signal semaphore.
//! - Tensor: when a matmul's or transpose's stationary pattern differs from the previous
//!   one's (or there was none), a stationary load of `stationary_load` cycles may begin at
//!   `max(previous matmul's start, waits satisfied)` and the matmul starts at
//!   `max(previous end, load end, waits satisfied)`.
//! - DMA: a transfer issues when its waits hold and the previous instruction of its queue
//!   has issued (a `nop` must end). Its latency phase runs from issue for `dma_latency`
//!   cycles; its data phase starts at `max(issue + latency, previous data end of the same
//!   queue)`. During data phases the queues share the bandwidth fairly: each active queue
//!   moves `min(queue rate, total rate / active queues)` bytes per cycle (processor
//!   sharing, recomputed whenever a data phase starts or ends). It moves the effective
//!   bytes (larger side's sum of runs, each run at least `dma_min_run`), ends at the
//!   (whole) cycle in which its last byte moves, and then increments its signal.
//! - The semantic effect of an instruction is applied when it starts. Every cross-engine
//!   dependency goes through semaphores, so executing instructions in start order is
//!   correct; ties are broken by stream index, after all completions of that cycle.
//! - With the debug checks on (`MachineConfig::race_check`, `psum_groups`), every
//!   instruction is checked by `crate::race` as it starts: an unsynchronised conflicting
//!   access or a broken PSUM accumulation group is an error naming the instructions.
//! - No stream can progress while some have not reached `end`: a deadlock error listing
//!   every blocked wait. The instruction and cycle limits are errors, never hangs.

use crate::config::MachineConfig;
use crate::error::{At, BlockedWait, RuntimeError};
use crate::exec::Executor;
use crate::race::Checks;
use crate::report::{Event, Report};
use isa::{Engine, Inst, Op, Program, TileAp, NUM_STREAMS};
use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};

/// Fixed-point scale of DMA byte counts: divisible by every active-queue count 1..=16, so
/// that a fair share of an integer total rate is an exact integer in these units.
const UNITS: u128 = 720_720;

/// Cost in cycles of a non-DMA instruction on `engine`.
pub fn compute_cost(op: &Op, engine: Engine, cfg: &MachineConfig) -> u64 {
    let t = &cfg.timing;
    // Fixed cost plus per-element cost times the number of input tiles.
    let elementwise = |n: u64, inputs: u64| -> u64 {
        let (fixed, per) = match engine {
            Engine::GpSimd => (t.gpsimd_fixed, t.gpsimd_per_elem),
            Engine::Scalar => (t.scalar_fixed, t.scalar_per_elem),
            _ => (t.vector_fixed, t.vector_per_elem),
        };
        fixed.saturating_add(per.saturating_mul(inputs).saturating_mul(n))
    };
    match op {
        Op::Nop {} => t.nop,
        Op::End {} | Op::Dma { .. } | Op::DmaGather { .. } => 0,
        Op::Matmul { moving, .. } => t
            .pe_rate_of(moving.dtype)
            .cycles_for(moving.free_elems())
            .max(t.matmul_min),
        Op::Transpose { src, .. } => t
            .pe_rate_of(src.dtype)
            .cycles_for(src.partitions as u64)
            .max(t.matmul_min),
        Op::TensorTensor { a, .. } => elementwise(a.free_elems(), 2),
        Op::Select { a, .. } => elementwise(a.free_elems(), 3),
        Op::TensorScan { src, .. } => elementwise(src.free_elems(), 1),
        Op::TensorArgReduce { src, positions, .. } => {
            elementwise(src.free_elems(), 1 + u64::from(positions.is_some()))
        }
        Op::TensorScalar { src, .. }
        | Op::TensorReduce { src, .. }
        | Op::TensorReduceScalar { src, .. }
        | Op::TensorCopy { src, .. }
        | Op::Activate { src, .. } => elementwise(src.free_elems(), 1),
        Op::Memset { out, .. } => elementwise(out.free_elems(), 1),
        Op::PartitionTranspose { out, src } => t.gpsimd_fixed.saturating_add(
            t.gpsimd_per_elem
                .saturating_mul(src.free_elems().max(out.free_elems())),
        ),
        Op::Iota { out, .. } | Op::AffineSelect { out, .. } => t
            .gpsimd_fixed
            .saturating_add(t.gpsimd_per_elem.saturating_mul(out.free_elems())),
    }
}

/// The stationary operand of a Tensor instruction.
fn stationary_of(op: &Op) -> Option<&TileAp> {
    match op {
        Op::Matmul { stationary, .. } => Some(stationary),
        Op::Transpose { src, .. } => Some(src),
        _ => None,
    }
}

#[derive(Clone, Copy, Debug)]
struct Stream {
    pc: usize,
    /// When the stream may start its next instruction (previous end, or issue for DMA).
    free: u64,
    done: bool,
}

/// A DMA transfer in its queue.
#[derive(Clone, Debug)]
struct Transfer {
    /// `issue + latency`.
    ready: u64,
    /// Set when the transfer is the head of its queue.
    data_start: u64,
    active: bool,
    /// Remaining bytes times [`UNITS`].
    units: u128,
    signal: Option<u8>,
    at: At,
    event: Option<usize>,
}

#[derive(Clone, Debug, Default)]
struct Queue {
    fifo: VecDeque<Transfer>,
    last_data_end: u64,
}

/// A pending semaphore increment: (time, order of creation, semaphore, stream, index).
type Increment = Reverse<(u64, u64, u8, usize, usize)>;

struct Sim<'a> {
    program: &'a Program,
    cfg: &'a MachineConfig,
    streams: Vec<Stream>,
    counts: Vec<u32>,
    /// Per semaphore, the time of each increment, in order.
    inc_times: Vec<Vec<u64>>,
    pending: BinaryHeap<Increment>,
    seq: u64,
    queues: Vec<Queue>,
    /// The time up to which active DMA transfers have been advanced.
    dma_clock: u64,
    prev_stationary: Option<TileAp>,
    prev_mm_start: u64,
    now: u64,
    report: Report,
    /// The debug checks (race detector, PSUM groups), when the configuration asks for them.
    checks: Checks<'a>,
}

impl<'a> Sim<'a> {
    fn at(&self, s: usize) -> At {
        let engine = Engine::from_index(s).unwrap_or(Engine::Tensor);
        let index = self.streams[s].pc;
        let opcode = self.program.streams[s]
            .get(index)
            .map(|i| i.op.opcode())
            .unwrap_or(isa::Opcode::End);
        At {
            engine,
            index,
            opcode,
        }
    }

    fn inst(&self, s: usize) -> Result<&'a Inst, RuntimeError> {
        let program: &'a Program = self.program;
        program.streams[s]
            .get(self.streams[s].pc)
            .ok_or(RuntimeError::MissingEnd {
                engine: Engine::from_index(s).unwrap_or(Engine::Tensor),
            })
    }

    /// When the waits of stream `s`'s next instruction are all satisfied, or the first
    /// wait that is not (for deadlock reports).
    fn waits_time(&self, s: usize) -> Result<Result<u64, BlockedWait>, RuntimeError> {
        let inst = self.inst(s)?;
        let mut t = 0u64;
        for &(sem, value) in &inst.sync.waits {
            let Some(&count) = self.counts.get(sem as usize) else {
                return Err(RuntimeError::NoSuchSemaphore {
                    at: self.at(s),
                    semaphore: sem,
                    count: self.counts.len() as u32,
                });
            };
            if count < value {
                let at = self.at(s);
                return Ok(Err(BlockedWait {
                    engine: at.engine,
                    index: at.index,
                    opcode: at.opcode,
                    semaphore: sem,
                    count,
                    value,
                }));
            }
            if value > 0 {
                t = t.max(self.inc_times[sem as usize][value as usize - 1]);
            }
        }
        Ok(Ok(t))
    }

    /// The start time of stream `s`'s next instruction if its waits hold now.
    fn ready_time(&self, s: usize) -> Result<Option<u64>, RuntimeError> {
        let st = &self.streams[s];
        if st.done {
            return Ok(None);
        }
        let Ok(waits) = self.waits_time(s)? else {
            return Ok(None);
        };
        let mut start = st.free.max(waits);
        if s == Engine::Tensor.index() {
            if let Some(stat) = stationary_of(&self.inst(s)?.op) {
                if self.prev_stationary.as_ref() != Some(stat) {
                    let load_start = self.prev_mm_start.max(waits);
                    start = start.max(load_start + self.cfg.timing.stationary_load);
                }
            }
        }
        Ok(Some(start.max(self.now)))
    }

    /// Per-active-transfer DMA rate in units per cycle.
    fn dma_rate(&self) -> u128 {
        let active = self
            .queues
            .iter()
            .filter(|q| q.fifo.front().is_some_and(|t| t.active))
            .count() as u128;
        let t = &self.cfg.timing;
        let queue = t.dma_queue_rate as u128 * UNITS;
        if active == 0 {
            return queue;
        }
        queue.min(t.dma_total_rate as u128 * UNITS / active)
    }

    /// The next time a DMA data phase starts or ends.
    fn next_dma_event(&self) -> Option<u64> {
        let rate = self.dma_rate().max(1);
        self.queues
            .iter()
            .filter_map(|q| q.fifo.front())
            .map(|t| {
                if t.active {
                    let cycles = t.units.div_ceil(rate);
                    self.dma_clock
                        .saturating_add(u64::try_from(cycles).unwrap_or(u64::MAX))
                } else {
                    t.data_start
                }
            })
            .min()
    }

    /// Moves every active transfer forward to time `t`.
    fn advance_dma(&mut self, t: u64) {
        if t > self.dma_clock {
            let moved = self.dma_rate() * (t - self.dma_clock) as u128;
            for q in &mut self.queues {
                if let Some(tr) = q.fifo.front_mut() {
                    if tr.active {
                        tr.units = tr.units.saturating_sub(moved);
                    }
                }
            }
            self.dma_clock = t;
        }
    }

    /// Completes and starts DMA data phases at time `t`.
    fn process_dma(&mut self, t: u64) {
        self.advance_dma(t);
        for qi in 0..self.queues.len() {
            let done = self.queues[qi]
                .fifo
                .front()
                .is_some_and(|tr| tr.active && tr.units == 0);
            if done {
                let Some(tr) = self.queues[qi].fifo.pop_front() else {
                    continue;
                };
                let q = &mut self.queues[qi];
                q.last_data_end = t;
                if let Some(next) = q.fifo.front_mut() {
                    next.data_start = next.ready.max(t);
                }
                if let Some(sem) = tr.signal {
                    self.push_increment(t, sem, tr.at);
                }
                if let Some(e) = tr.event {
                    let ev = &mut self.report.events[e];
                    ev.end = t;
                }
                let stats = &mut self.report.engines[tr.at.engine.index()];
                stats.busy_cycles += t - tr.data_start;
                self.report.total_cycles = self.report.total_cycles.max(t);
            }
        }
        for q in &mut self.queues {
            if let Some(tr) = q.fifo.front_mut() {
                if !tr.active && tr.data_start <= t {
                    tr.active = true;
                    if let Some(e) = tr.event {
                        self.report.events[e].data_start = tr.data_start;
                    }
                }
            }
        }
    }

    fn push_increment(&mut self, t: u64, sem: u8, at: At) {
        self.seq += 1;
        self.pending
            .push(Reverse((t, self.seq, sem, at.engine.index(), at.index)));
    }

    /// Applies every pending increment at time `t`.
    fn process_increments(&mut self, t: u64) -> Result<(), RuntimeError> {
        while let Some(&Reverse((time, _, sem, stream, index))) = self.pending.peek() {
            if time > t {
                break;
            }
            self.pending.pop();
            let count = &mut self.counts[sem as usize];
            if *count == u32::MAX {
                let engine = Engine::from_index(stream).unwrap_or(Engine::Tensor);
                let opcode = self.program.streams[stream]
                    .get(index)
                    .map(|i| i.op.opcode())
                    .unwrap_or(isa::Opcode::End);
                return Err(RuntimeError::SemaphoreOverflow {
                    at: At {
                        engine,
                        index,
                        opcode,
                    },
                    semaphore: sem,
                });
            }
            *count += 1;
            self.inc_times[sem as usize].push(time);
            self.checks.on_increment(sem, stream, index);
        }
        Ok(())
    }

    /// Starts stream `s`'s next instruction at `start`: executes it and schedules its end.
    fn schedule(&mut self, s: usize, start: u64, exec: &mut Executor) -> Result<(), RuntimeError> {
        let inst = self.inst(s)?;
        let at = self.at(s);
        let limits = &self.cfg.limits;
        if start > limits.max_cycles {
            return Err(RuntimeError::CycleLimit {
                limit: limits.max_cycles,
                cycle: start,
            });
        }
        if let Some(sem) = inst.sync.signal {
            if sem as usize >= self.counts.len() {
                return Err(RuntimeError::NoSuchSemaphore {
                    at,
                    semaphore: sem,
                    count: self.counts.len() as u32,
                });
            }
        }
        self.now = start;
        let wait_start = self.streams[s].free;
        let is_end = matches!(inst.op, Op::End {});
        if !is_end {
            self.report.instructions += 1;
            if self.report.instructions > limits.max_instructions {
                return Err(RuntimeError::InstructionLimit {
                    limit: limits.max_instructions,
                    at,
                });
            }
            self.report.engines[s].instructions += 1;
        }
        let effect = exec.execute(inst, at)?;
        if self.checks.enabled() {
            self.checks.on_start(s, inst, at)?;
        }
        if let Some(stat) = stationary_of(&inst.op) {
            if self.prev_stationary.as_ref() != Some(stat) {
                self.prev_stationary = Some(stat.clone());
            }
            self.prev_mm_start = start;
            if let Op::Matmul {
                stationary, moving, ..
            } = &inst.op
            {
                self.report.matmul_flops += 2
                    * stationary.partitions as u64
                    * stationary.free_elems()
                    * moving.free_elems();
            }
        }
        let event = (self.cfg.events && !is_end).then(|| {
            self.report.events.push(Event {
                engine: at.engine,
                index: at.index as u32,
                opcode: at.opcode,
                wait_start,
                start,
                data_start: start,
                end: start,
                bytes: 0,
            });
            self.report.events.len() - 1
        });
        if let Some(dma) = effect {
            self.report.hbm_read_bytes += dma.hbm_read;
            self.report.hbm_write_bytes += dma.hbm_write;
            self.report.sbuf_to_sbuf_bytes += dma.sbuf_to_sbuf;
            if let Some(e) = event {
                self.report.events[e].bytes = dma.bytes;
            }
            let ready = start.saturating_add(self.cfg.timing.dma_latency);
            let q = &mut self.queues[s - 4];
            let data_start = if q.fifo.is_empty() {
                ready.max(q.last_data_end)
            } else {
                0
            };
            q.fifo.push_back(Transfer {
                ready,
                data_start,
                active: false,
                units: dma.effective_bytes as u128 * UNITS,
                signal: inst.sync.signal,
                at,
                event,
            });
            self.streams[s].free = start;
        } else {
            let end = start.saturating_add(compute_cost(&inst.op, at.engine, self.cfg));
            if end > limits.max_cycles {
                return Err(RuntimeError::CycleLimit {
                    limit: limits.max_cycles,
                    cycle: end,
                });
            }
            if let Some(sem) = inst.sync.signal {
                self.push_increment(end, sem, at);
            }
            if let Some(e) = event {
                self.report.events[e].end = end;
            }
            self.report.engines[s].busy_cycles += end - start;
            self.report.total_cycles = self.report.total_cycles.max(end);
            self.streams[s].free = end;
        }
        self.streams[s].pc += 1;
        if is_end {
            self.streams[s].done = true;
        }
        Ok(())
    }
}

/// Runs `program` on the executor's memories under the timing model.
pub(crate) fn simulate(
    program: &Program,
    cfg: &MachineConfig,
    exec: &mut Executor,
) -> Result<Report, RuntimeError> {
    if program.streams.len() != NUM_STREAMS {
        return Err(RuntimeError::StreamCount {
            found: program.streams.len(),
            expected: NUM_STREAMS,
        });
    }
    for (s, stream) in program.streams.iter().enumerate() {
        if !matches!(stream.last().map(|i| &i.op), Some(Op::End {})) {
            return Err(RuntimeError::MissingEnd {
                engine: Engine::from_index(s).unwrap_or(Engine::Tensor),
            });
        }
    }
    let sems = cfg.geometry.semaphores as usize;
    let mut sim = Sim {
        program,
        cfg,
        streams: vec![
            Stream {
                pc: 0,
                free: 0,
                done: false,
            };
            NUM_STREAMS
        ],
        counts: vec![0; sems],
        inc_times: vec![Vec::new(); sems],
        pending: BinaryHeap::new(),
        seq: 0,
        queues: vec![Queue::default(); NUM_STREAMS - 4],
        dma_clock: 0,
        prev_stationary: None,
        prev_mm_start: 0,
        now: 0,
        report: Report::new(cfg.timing.clock_hz),
        checks: Checks::new(
            program,
            sems,
            cfg.geometry.partitions,
            cfg.race_check,
            cfg.psum_groups,
        ),
    };
    loop {
        let t_inc = sim.pending.peek().map(|r| r.0 .0);
        let t_dma = sim.next_dma_event();
        let t_evt = match (t_inc, t_dma) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        let mut best: Option<(u64, usize)> = None;
        for s in 0..NUM_STREAMS {
            if let Some(r) = sim.ready_time(s)? {
                if !matches!(best, Some((b, _)) if b <= r) {
                    best = Some((r, s));
                }
            }
        }
        match (t_evt, best) {
            (Some(t), b) if !matches!(b, Some((r, _)) if r < t) => {
                if t > cfg.limits.max_cycles {
                    return Err(RuntimeError::CycleLimit {
                        limit: cfg.limits.max_cycles,
                        cycle: t,
                    });
                }
                sim.now = sim.now.max(t);
                if t_dma == Some(t) {
                    sim.process_dma(t);
                }
                sim.process_increments(t)?;
            }
            (_, Some((r, s))) => sim.schedule(s, r, exec)?,
            _ => break,
        }
    }
    if sim.streams.iter().any(|s| !s.done) {
        let mut blocked = Vec::new();
        for s in 0..NUM_STREAMS {
            if !sim.streams[s].done {
                if let Err(w) = sim.waits_time(s)? {
                    blocked.push(w);
                }
            }
        }
        return Err(RuntimeError::Deadlock(blocked));
    }
    Ok(sim.report)
}
