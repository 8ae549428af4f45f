//! The machine configuration: memory geometry (from the ISA preset), the timing model's
//! parameters, the interpreter's limits and its debug options.
//!
//! Every number the timing model uses is a field here with its default documented, so a
//! caller can explore other machines without touching the interpreter, and so the ISA
//! documentation can quote the defaults from one place.

use crate::error::RuntimeError;
use isa::{Dtype, Geometry, Preset};

/// A rate of the Tensor engine: `columns` moving columns every `cycles` cycles.
///
/// Rates are rational so that costs stay exact integers: f32's half a column per cycle is
/// `{ columns: 1, cycles: 2 }`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PeRate {
    pub columns: u64,
    pub cycles: u64,
}

impl PeRate {
    /// Cycles to stream `n` moving columns at this rate, rounded up.
    pub fn cycles_for(self, n: u64) -> u64 {
        (n * self.cycles).div_ceil(self.columns.max(1))
    }
}

/// The timing model's parameters, in cycles of the engine clock and bytes.
#[derive(Clone, Debug, PartialEq)]
pub struct Timing {
    /// Engine clock in Hz. Default 1.4 GHz. Only used to convert cycles to seconds.
    pub clock_hz: f64,
    /// Fixed latency of every DMA transfer, from issue to the start of its data phase.
    /// Default 2,000 cycles.
    pub dma_latency: u64,
    /// Bytes per cycle one DMA queue moves in its data phase. Default 16.
    pub dma_queue_rate: u64,
    /// Bytes per cycle all DMA queues together move; queues in their data phase share it
    /// equally (each gets `min(queue rate, total / active queues)`). Default 256.
    pub dma_total_rate: u64,
    /// Every contiguous run of a DMA side costs at least this many bytes. Default 64.
    pub dma_min_run: u64,
    /// Tensor engine moving columns per cycle, indexed by the moving operand's dtype
    /// (`Dtype as usize`). Defaults: f32 0.5, bf16 2, f16 2, f8e4m3 4, f8e5m2 4.
    pub pe_rate: [PeRate; 5],
    /// Minimum cost of a matmul or transpose. Default 32 cycles.
    pub matmul_min: u64,
    /// Cost of loading a new stationary operand into the PE array; it overlaps the previous
    /// matmul. Default 32 cycles.
    pub stationary_load: u64,
    /// Fixed cost of a Vector instruction. Default 64.
    pub vector_fixed: u64,
    /// Vector cycles per free element per input tile. Default 1.
    pub vector_per_elem: u64,
    /// Fixed cost of a Scalar (activation) instruction. Default 64.
    pub scalar_fixed: u64,
    /// Scalar cycles per free element. Default 1.
    pub scalar_per_elem: u64,
    /// Fixed cost of a GpSimd instruction. Default 64.
    pub gpsimd_fixed: u64,
    /// GpSimd cycles per free element per input tile. Default 4 (so `tensor_tensor` on
    /// GpSimd costs `64 + 8N`).
    pub gpsimd_per_elem: u64,
    /// Cost of `nop`. Default 1.
    pub nop: u64,
}

impl Default for Timing {
    fn default() -> Timing {
        let two = PeRate {
            columns: 2,
            cycles: 1,
        };
        let four = PeRate {
            columns: 4,
            cycles: 1,
        };
        let half = PeRate {
            columns: 1,
            cycles: 2,
        };
        Timing {
            clock_hz: 1.4e9,
            dma_latency: 2000,
            dma_queue_rate: 16,
            dma_total_rate: 256,
            dma_min_run: 64,
            pe_rate: [half, two, two, four, four],
            matmul_min: 32,
            stationary_load: 32,
            vector_fixed: 64,
            vector_per_elem: 1,
            scalar_fixed: 64,
            scalar_per_elem: 1,
            gpsimd_fixed: 64,
            gpsimd_per_elem: 4,
            nop: 1,
        }
    }
}

impl Timing {
    /// The Tensor engine rate for a moving operand of `dtype`.
    /// `i32` and `bool` tiles (moved exactly by transposes; `matmul` takes no `i32`) cost
    /// what the float of their width costs: f32's rate and FP8's.
    pub fn pe_rate_of(&self, dtype: Dtype) -> PeRate {
        let row = match dtype {
            Dtype::I32 => Dtype::F32,
            Dtype::Bool => Dtype::F8E4M3,
            d => d,
        };
        self.pe_rate[row as usize]
    }
}

/// Limits that turn runaway programs into errors instead of hangs or exhausted memory.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Maximum number of instructions executed (`end` not counted). Default 100,000,000.
    pub max_instructions: u64,
    /// Maximum simulated time in cycles. Default 10^12 (about 12 minutes at 1.4 GHz).
    pub max_cycles: u64,
    /// Maximum HBM a program may ask for, in bytes. Default 16 GiB. A program asking for
    /// more is rejected at load, before anything is allocated.
    pub max_hbm_bytes: u64,
    /// Maximum number of elements one access pattern of one instruction may name (all
    /// partitions together). Default 2^26. Keeps a pattern with huge broadcast
    /// dimensions from exhausting time or memory.
    pub max_elements_per_instruction: u64,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            max_instructions: 100_000_000,
            max_cycles: 1_000_000_000_000,
            max_hbm_bytes: 16 << 30,
            max_elements_per_instruction: 1 << 26,
        }
    }
}

/// Everything the interpreter needs to know about the machine it simulates.
#[derive(Clone, Debug, PartialEq)]
pub struct MachineConfig {
    /// The preset whose geometry this configuration uses; a program built for another
    /// preset is rejected.
    pub preset: Preset,
    /// Memory geometry (from [`Preset::geometry`]).
    pub geometry: Geometry,
    pub timing: Timing,
    pub limits: Limits,
    /// Debug option: fill SBUF and PSUM with a NaN pattern (all bytes 0xFF, a NaN in every
    /// dtype) and report any read of bytes no instruction has written as an error. Off by
    /// default (memories then start as zeros); the runtime's tests turn it on.
    pub poison: bool,
    /// Record one [`crate::Event`] per executed instruction in the report. On by default;
    /// large benchmarks may turn it off.
    pub events: bool,
    /// Run the ISA verifier when a program is loaded. On by default; only tests of the
    /// interpreter's own run-time checks turn it off.
    pub verify: bool,
    /// Debug option: the race detector (`crate::race`). Two instructions on different
    /// streams that touch overlapping bytes, at least one of them writing, must be ordered
    /// by a chain of semaphore waits; the first pair that is not is reported as
    /// [`RuntimeError::Race`]. Off by default (tests of the timing model run racy programs
    /// on purpose); the compiler's driver turns it on in debug builds and for
    /// `tessera run --debug-checks`.
    pub race_check: bool,
    /// Debug option: PSUM accumulation groups (`crate::race`). A matmul with
    /// `accumulate=false` opens a group on its `out` bytes; a matmul with `accumulate=true`
    /// must write exactly the bytes of an open group; any other instruction that reads or
    /// writes a group's bytes closes it. Breaking this is [`RuntimeError::PsumGroup`]. Off
    /// by default; `tessera run --debug-checks` turns it on.
    pub psum_groups: bool,
}

impl MachineConfig {
    /// The configuration of a preset with the default timing, limits and options.
    pub fn new(preset: Preset) -> MachineConfig {
        MachineConfig {
            preset,
            geometry: preset.geometry(),
            timing: Timing::default(),
            limits: Limits::default(),
            poison: false,
            events: true,
            verify: true,
            race_check: false,
            psum_groups: false,
        }
    }

    /// This configuration with every debug check on: poison tracking of never-written
    /// SBUF/PSUM bytes, the race detector and the PSUM accumulation-group check.
    pub fn with_debug_checks(mut self) -> MachineConfig {
        self.poison = true;
        self.race_check = true;
        self.psum_groups = true;
        self
    }

    /// Checks that the parameters make sense (rates are positive, the geometry fits the
    /// ISA's fixed sizes).
    pub fn validate(&self) -> Result<(), RuntimeError> {
        let t = &self.timing;
        let bad = |what: &str| Err(RuntimeError::Config(what.to_string()));
        if t.dma_queue_rate == 0 || t.dma_total_rate == 0 {
            return bad("DMA rates must be at least 1 byte per cycle");
        }
        if t.pe_rate.iter().any(|r| r.columns == 0 || r.cycles == 0) {
            return bad("Tensor engine rates must be positive");
        }
        if t.clock_hz.is_nan() || t.clock_hz <= 0.0 {
            return bad("the clock must be positive");
        }
        let g = &self.geometry;
        if g.partitions == 0 || g.partitions > isa::PARTITIONS {
            return bad("the partition count must be 1..=128");
        }
        if g.psum_bank_bytes == 0
            || g.psum_partition_bytes.checked_rem(g.psum_bank_bytes) != Some(0)
        {
            return bad("PSUM must be a whole number of non-empty banks");
        }
        if g.semaphores == 0 || g.semaphores > 256 {
            return bad("the semaphore count must be 1..=256");
        }
        // The interpreter holds SBUF and PSUM in host memory: at most 1 GiB of both.
        let on_chip =
            g.partitions as u64 * (g.sbuf_partition_bytes as u64 + g.psum_partition_bytes as u64);
        if g.sbuf_partition_bytes == 0 || on_chip > MAX_ON_CHIP_BYTES {
            return bad("SBUF must be non-empty, and SBUF and PSUM together at most 1 GiB");
        }
        // Every program has one stream per DMA queue of the ISA.
        if g.dma_queues as usize != isa::NUM_DMA_QUEUES {
            return bad("the ISA has 16 DMA queues; the geometry must say 16");
        }
        Ok(())
    }
}

/// The most bytes of SBUF and PSUM (all partitions) a configuration may ask the interpreter
/// to hold: 1 GiB (the default machine has 26 MiB).
pub const MAX_ON_CHIP_BYTES: u64 = 1 << 30;

impl Default for MachineConfig {
    fn default() -> MachineConfig {
        MachineConfig::new(Preset::Default)
    }
}
