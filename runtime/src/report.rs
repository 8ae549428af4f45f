//! What a run reports: total cycles, per-engine busy cycles, utilisation and instruction
//! counts, bytes moved per direction, and optionally one event per instruction.
//!
//! The event list is the raw material for the Chrome trace writer and the profiler: it
//! says for every instruction when its stream was ready for it, when it started (after
//! its semaphore waits), when its data phase began (DMA) and when it ended.

use isa::{Engine, Opcode, NUM_STREAMS};

/// One executed instruction in the timeline.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Event {
    pub engine: Engine,
    /// Index of the instruction in its stream.
    pub index: u32,
    pub opcode: Opcode,
    /// When the stream was free to start this instruction (its previous instruction had
    /// ended, or for DMA had issued). `start - wait_start` is the time spent waiting on
    /// semaphores (and, on Tensor, for a stationary load that could not be hidden).
    pub wait_start: u64,
    /// When the instruction started (a DMA: when it issued and its latency began).
    pub start: u64,
    /// A DMA's data phase start; equal to `start` for other instructions.
    pub data_start: u64,
    /// When the instruction completed and incremented its signal semaphore.
    pub end: u64,
    /// A DMA's bytes written to its destination; 0 for other instructions.
    pub bytes: u64,
}

/// Per-engine (per-stream) statistics.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EngineStats {
    pub engine: Engine,
    /// Cycles the engine was executing: the sum of its instructions' `end - start`; for a
    /// DMA queue, the sum of its data phases (its latency phases overlap other work).
    pub busy_cycles: u64,
    /// Instructions executed (`end` not counted).
    pub instructions: u64,
}

/// The result of a run's timing model.
#[derive(Clone, Debug, PartialEq)]
pub struct Report {
    /// Cycle at which the last instruction of any stream completed.
    pub total_cycles: u64,
    /// The clock used to convert cycles to seconds.
    pub clock_hz: f64,
    /// One entry per stream, in `Engine::index` order.
    pub engines: Vec<EngineStats>,
    /// Bytes DMA read from HBM.
    pub hbm_read_bytes: u64,
    /// Bytes DMA wrote to HBM.
    pub hbm_write_bytes: u64,
    /// Bytes DMA copied from SBUF to SBUF.
    pub sbuf_to_sbuf_bytes: u64,
    /// Instructions executed in total (`end` not counted).
    pub instructions: u64,
    /// Floating-point operations of the matmuls executed (`2 K M N` each; transposes
    /// not counted).
    pub matmul_flops: u64,
    /// One event per executed instruction, in start order, when the configuration asked
    /// for events; empty otherwise.
    pub events: Vec<Event>,
}

impl Report {
    /// An empty report for `clock_hz`.
    pub(crate) fn new(clock_hz: f64) -> Report {
        Report {
            total_cycles: 0,
            clock_hz,
            engines: (0..NUM_STREAMS)
                .filter_map(Engine::from_index)
                .map(|engine| EngineStats {
                    engine,
                    busy_cycles: 0,
                    instructions: 0,
                })
                .collect(),
            hbm_read_bytes: 0,
            hbm_write_bytes: 0,
            sbuf_to_sbuf_bytes: 0,
            instructions: 0,
            matmul_flops: 0,
            events: Vec::new(),
        }
    }

    /// The statistics of one engine.
    pub fn engine(&self, engine: Engine) -> &EngineStats {
        &self.engines[engine.index()]
    }

    /// Busy cycles of an engine divided by the total cycles (0 for an empty run).
    pub fn utilisation(&self, engine: Engine) -> f64 {
        if self.total_cycles == 0 {
            0.0
        } else {
            self.engine(engine).busy_cycles as f64 / self.total_cycles as f64
        }
    }

    /// Simulated time in seconds.
    pub fn seconds(&self) -> f64 {
        self.total_cycles as f64 / self.clock_hz
    }

    /// A short human-readable summary: total cycles, then one line per engine that ran
    /// anything.
    pub fn summary(&self) -> String {
        let mut s = format!(
            "total {} cycles ({:.3} us), {} instructions, hbm read {} B, hbm write {} B, sbuf->sbuf {} B\n",
            self.total_cycles,
            self.seconds() * 1e6,
            self.instructions,
            self.hbm_read_bytes,
            self.hbm_write_bytes,
            self.sbuf_to_sbuf_bytes
        );
        for e in &self.engines {
            if e.instructions > 0 {
                s.push_str(&format!(
                    "  {:<7} {:>6} instructions, busy {:>10} cycles ({:5.1}%)\n",
                    e.engine.name(),
                    e.instructions,
                    e.busy_cycles,
                    100.0 * self.utilisation(e.engine)
                ));
            }
        }
        s
    }
}
