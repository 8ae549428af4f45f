//! Everything that can go wrong when loading or running a program, as one error type.
//!
//! The interpreter never panics on a bad program or bad inputs: every failure becomes a
//! [`RuntimeError`] whose message names the engine, the instruction index and what was
//! wrong, so that a compiler bug can be found from the message alone.

use isa::{Engine, Opcode};

/// Where a failing instruction is: its stream and its index in that stream.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct At {
    pub engine: Engine,
    pub index: usize,
    pub opcode: Opcode,
}

impl std::fmt::Display for At {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} instruction {} ({})",
            self.engine,
            self.index,
            self.opcode.mnemonic()
        )
    }
}

/// One instruction that waits forever, as reported by a deadlock.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BlockedWait {
    pub engine: Engine,
    pub index: usize,
    pub opcode: Opcode,
    pub semaphore: u8,
    /// The semaphore's count when the machine stopped.
    pub count: u32,
    /// The value the instruction waits for.
    pub value: u32,
}

impl std::fmt::Display for BlockedWait {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} instruction {} ({}) waits for semaphore {} >= {} (count {})",
            self.engine,
            self.index,
            self.opcode.mnemonic(),
            self.semaphore,
            self.value,
            self.count
        )
    }
}

fn list_blocked(waits: &[BlockedWait]) -> String {
    waits
        .iter()
        .map(|w| w.to_string())
        .collect::<Vec<_>>()
        .join("; ")
}

/// An error of loading, binding, running or reading.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum RuntimeError {
    #[error("invalid machine configuration: {0}")]
    Config(String),
    #[error("cannot decode program: {0}")]
    Decode(String),
    #[error("program does not verify: {}", .0.join("; "))]
    Verify(Vec<String>),
    #[error("program was built for preset `{program}`, the machine is `{machine}`")]
    Preset {
        program: &'static str,
        machine: &'static str,
    },
    #[error("program needs {needed} bytes of HBM, the limit is {limit}")]
    HbmLimit { needed: u64, limit: u64 },
    #[error("tensor `{name}` (bytes {offset}..{end}) lies outside the program's {hbm_size} bytes of HBM")]
    TensorOutsideHbm {
        name: String,
        offset: u64,
        end: u64,
        hbm_size: u64,
    },
    #[error("program has {found} instruction streams, expected {expected}")]
    StreamCount { found: usize, expected: usize },
    #[error("{engine} stream does not end with `end`")]
    MissingEnd { engine: Engine },
    #[error("no tensor named `{0}`")]
    UnknownTensor(String),
    #[error("tensor `{name}` is an {role}, only inputs can be bound")]
    NotAnInput { name: String, role: &'static str },
    #[error("tensor `{name}` has {expected} elements, {found} were given")]
    ElementCount {
        name: String,
        expected: u64,
        found: u64,
    },
    #[error("tensor `{name}` has {expected} bytes, {found} were given")]
    ByteCount {
        name: String,
        expected: u64,
        found: u64,
    },
    #[error("input `{0}` was not bound before the run")]
    Unbound(String),
    #[error("the program has not run yet, so `{0}` cannot be read")]
    NotRun(String),
    #[error("{at}: out of bounds: {detail}")]
    OutOfBounds { at: At, detail: String },
    #[error("{at}: read of never-written bytes: {detail}")]
    PoisonRead { at: At, detail: String },
    #[error("output `{name}` was not completely written by the program: byte {byte} of it never was (debug checks require every output byte to be written)")]
    OutputNotWritten { name: String, byte: u64 },
    #[error("{at}: invalid operands: {detail}")]
    Invalid { at: At, detail: String },
    #[error("{at}: semaphore {semaphore} does not exist (the machine has {count})")]
    NoSuchSemaphore { at: At, semaphore: u8, count: u32 },
    #[error("{at}: semaphore {semaphore} overflows its count")]
    SemaphoreOverflow { at: At, semaphore: u8 },
    #[error("deadlock: {}", list_blocked(.0))]
    Deadlock(Vec<BlockedWait>),
    #[error("instruction limit of {limit} executed instructions reached ({at})")]
    InstructionLimit { limit: u64, at: At },
    #[error("cycle limit of {limit} reached at cycle {cycle}")]
    CycleLimit { limit: u64, cycle: u64 },
    /// Two instructions on different streams touch the same bytes, at least one writing,
    /// and no chain of semaphore waits orders them (`MachineConfig::race_check`).
    #[error("race: {at} {access} {detail}, which {earlier} {earlier_access} without a semaphore wait ordering them")]
    Race {
        /// The later instruction (in the simulated start order).
        at: At,
        access: &'static str,
        /// The memory both touch: `sbuf partition 3 bytes 0..64`.
        detail: String,
        /// The earlier instruction.
        earlier: At,
        earlier_access: &'static str,
    },
    /// An indirect DMA (`dma_gather`) met an index outside the rows of its source: the
    /// instruction faulted before reading or writing anything.
    #[error("{at}: index fault: partition {partition} of `idx` holds {index}, outside [{}, {rows}) for a source of {rows} rows", if *.wrap { -(*.rows as i128) } else { 0 })]
    IndexFault {
        at: At,
        partition: u32,
        /// The index as `idx` holds it.
        index: i32,
        /// The source's row count.
        rows: u64,
        /// Whether negative indices counted from the end.
        wrap: bool,
    },
    /// A matmul breaks the PSUM accumulation-group rule (`MachineConfig::psum_groups`).
    #[error("{at}: psum accumulation group: {detail}")]
    PsumGroup { at: At, detail: String },
}
