//! The program: what a `.tbin` holds. HBM tensor table, one instruction stream per engine,
//! the machine geometry it was built for, optional source locations per instruction, and
//! optionally the origin of a compiled program (its source file, a hash of the source text
//! and the options it was compiled with), so that the program can be checked against its
//! kernel later.
//!
//! The byte format is written and read by `encode.rs`; the text form by `asm.rs`.

use crate::{Inst, NUM_DMA_QUEUES, NUM_STREAMS};

/// The role of an HBM tensor in the kernel's interface.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum Role {
    /// A kernel parameter, bound by the caller before the run.
    Input = 0,
    /// A kernel result, read by the caller after the run.
    Output = 1,
    /// Compiler-owned HBM (spills); neither bound nor read by the caller.
    Scratch = 2,
}

/// One tensor in HBM: a row-major, densely packed array at a byte offset.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct TensorDecl {
    pub name: String,
    pub role: Role,
    pub dtype: crate::Dtype,
    pub shape: Vec<u64>,
    /// Byte offset in HBM.
    pub offset: u64,
}

impl TensorDecl {
    /// Number of elements (saturating, so a hostile decoded shape cannot overflow).
    pub fn elems(&self) -> u64 {
        self.shape
            .iter()
            .fold(1u64, |acc, &d| acc.saturating_mul(d))
    }

    /// Size in bytes (saturating).
    pub fn bytes(&self) -> u64 {
        self.elems().saturating_mul(self.dtype.size() as u64)
    }
}

/// The fixed geometry of a machine preset: what the verifier checks addresses against.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Geometry {
    pub partitions: u32,
    pub sbuf_partition_bytes: u32,
    pub psum_partition_bytes: u32,
    pub psum_bank_bytes: u32,
    pub semaphores: u32,
    pub dma_queues: u32,
}

/// Machine presets known to this ISA version. The id is stored in the `.tbin` header.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u16)]
pub enum Preset {
    /// The machine of `docs/machine.md` (NeuronCore-v2-like).
    Default = 0,
}

impl Preset {
    /// The preset of a header id.
    pub fn from_id(id: u16) -> Option<Preset> {
        match id {
            0 => Some(Preset::Default),
            _ => None,
        }
    }

    /// The assembly name of the preset.
    pub fn name(self) -> &'static str {
        match self {
            Preset::Default => "default",
        }
    }

    /// The preset of an assembly name.
    pub fn from_name(name: &str) -> Option<Preset> {
        match name {
            "default" => Some(Preset::Default),
            _ => None,
        }
    }

    /// The memory geometry of the preset.
    pub fn geometry(self) -> Geometry {
        match self {
            Preset::Default => Geometry {
                partitions: 128,
                sbuf_partition_bytes: 192 * 1024,
                psum_partition_bytes: 16 * 1024,
                psum_bank_bytes: 2 * 1024,
                semaphores: 64,
                dma_queues: NUM_DMA_QUEUES as u32,
            },
        }
    }
}

/// A source location of the kernel that an instruction came from (1-based).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct SrcLoc {
    pub line: u32,
    pub col: u32,
}

/// A whole program.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Program {
    pub preset: Preset,
    /// Bytes of HBM the program uses; every tensor lies inside it.
    pub hbm_size: u64,
    /// Inputs in the kernel's parameter order, then outputs in result order, then scratch.
    pub tensors: Vec<TensorDecl>,
    /// `NUM_STREAMS` streams, indexed by [`crate::Engine::index`].
    pub streams: Vec<Vec<Inst>>,
    /// Source file name and, per stream, per instruction, the source location if known.
    /// Empty `locs` means no debug information.
    pub source: Option<String>,
    pub locs: Vec<Vec<Option<SrcLoc>>>,
    /// Where a compiled program came from; `None` for an assembled program and for every
    /// program of format version 1.
    pub origin: Option<Origin>,
}

/// The length of [`Origin::source_sha3`]: a SHA3-256 digest.
pub const SOURCE_HASH_BYTES: usize = 32;

/// The origin of a compiled program: enough to find its kernel again and to tell whether
/// the source changed since, so that a run of the program can be checked against the
/// reference evaluator of the very kernel it was compiled from.
///
/// The ISA gives these fields no meaning of its own; the compiler writes them and reads
/// them back.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Origin {
    /// The source file's path, absolute when the compiler could resolve it.
    pub path: String,
    /// The SHA3-256 digest of the source file's bytes.
    pub source_sha3: [u8; SOURCE_HASH_BYTES],
    /// The name of the kernel compiled.
    pub kernel: String,
    /// The size overrides (`-D NAME=INT`) given, in the order given.
    pub defines: Vec<(String, i64)>,
    /// Whether every intermediate was rounded to its language dtype (`--dtype-policy
    /// strict`) rather than possibly kept wider (`wide`).
    pub strict_dtypes: bool,
    /// The optimising passes switched off (`--disable-pass`), in the order given.
    pub disabled_passes: Vec<String>,
}

impl Program {
    /// An empty program for a preset: every stream holds just `end`.
    pub fn new(preset: Preset) -> Program {
        Program {
            preset,
            hbm_size: 0,
            tensors: Vec::new(),
            streams: (0..NUM_STREAMS)
                .map(|_| vec![Inst::new(crate::Op::End {})])
                .collect(),
            source: None,
            locs: Vec::new(),
            origin: None,
        }
    }

    /// The tensors of a role, in table order.
    pub fn tensors_with_role(&self, role: Role) -> impl Iterator<Item = &TensorDecl> {
        self.tensors.iter().filter(move |t| t.role == role)
    }
}

enum_names!(Role, "tensor role", { Input = "input", Output = "output", Scratch = "scratch" });

/// Largest rank of an HBM tensor that the `.tbin` decoder accepts (the language allows 4;
/// the rest is headroom for compiler-owned scratch).
pub const MAX_TENSOR_RANK: usize = 8;
