//! Tile IR: the kernel as a flat list of machine operations on virtual buffers.
//!
//! Each instruction is an `isa::Op` (the ISA's own operation type, so tile IR and the ISA
//! cannot disagree on what an operation means) assigned to an engine, whose memory
//! operands address *virtual buffers* instead of memory: the access patterns' `partition`
//! and `offset` fields are relative to the buffer that the instruction's `bufs` list names
//! for that operand (one entry per operand, in `Op::visit_aps` order). Allocation places
//! buffers (`placement`), synchronisation adds semaphores (`sync`), and emission adds the
//! placements to the patterns to produce the program.
//!
//! Buffers live in one memory each: HBM (kernel inputs, outputs and compiler scratch),
//! SBUF or PSUM. A tile buffer spans `partitions` partitions (at most 128) and
//! `bytes` bytes in each.
//!
//! Architecture invariant: tile IR is produced from tensor IR by the `tile` pass and is
//! consumed only by the passes after it and by the backend; the frontend and tensor IR
//! know nothing of it.

pub mod parse;
mod print;
mod verify;

pub use parse::parse;
pub use print::write_buf;
pub use verify::verify;
// The hazard tracker is shared by the `sync` pass and the verifier's race check.
pub use verify::{Hazards, Touch};

use crate::frontend::typed::Span;
use cranelift_entity::{entity_impl, PrimaryMap, SecondaryMap};
use isa::{Dtype, Engine, Op, Role};
use smallvec::SmallVec;

/// A virtual buffer.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Buf(u32);
entity_impl!(Buf, "b");

/// A tile instruction.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TInst(u32);
entity_impl!(TInst, "inst");

/// The memory of a buffer, and for HBM its place in the kernel's interface.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BufKind {
    /// An HBM tensor: a kernel input, output, or compiler scratch (spills, intermediates).
    Hbm {
        name: String,
        role: Role,
        shape: Vec<u64>,
    },
    Sbuf,
    Psum,
}

/// A buffer's size and dtype.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BufData {
    pub kind: BufKind,
    /// The dtype the buffer is declared with (access patterns may view it differently).
    pub dtype: Dtype,
    /// Partitions of a tile buffer (1..=128); 1 for HBM.
    pub partitions: u32,
    /// Bytes per partition of a tile buffer; total bytes of an HBM buffer.
    pub bytes: u64,
}

impl BufData {
    /// True for SBUF and PSUM buffers.
    pub fn is_tile(&self) -> bool {
        !matches!(self.kind, BufKind::Hbm { .. })
    }
}

/// Where allocation put a buffer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Placement {
    /// Byte offset in HBM.
    Hbm(u64),
    /// First partition and byte offset in SBUF or PSUM.
    Tile { partition: u32, offset: u32 },
}

/// One tile instruction.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TileInst {
    pub op: Op,
    pub engine: Engine,
    /// The buffer of each memory operand, in `Op::visit_aps` order.
    pub bufs: SmallVec<[Buf; 4]>,
}

impl TileInst {
    /// Each memory operand's buffer with its access, in `Op::visit_aps` order.
    pub fn buf_accesses(&self) -> SmallVec<[(Buf, isa::Access); 4]> {
        let mut out = SmallVec::new();
        let mut k = 0;
        self.op.visit_aps(&mut |_, access| {
            if let Some(&b) = self.bufs.get(k) {
                out.push((b, access));
            }
            k += 1;
        });
        out
    }
}

/// A kernel in tile IR.
#[derive(Clone, Debug, Default)]
pub struct TileFunc {
    pub name: String,
    pub bufs: PrimaryMap<Buf, BufData>,
    pub insts: PrimaryMap<TInst, TileInst>,
    /// Program order. Each engine's stream is this order restricted to the engine.
    pub layout: Vec<TInst>,
    /// Source span of each instruction (side table).
    pub spans: SecondaryMap<TInst, Span>,
    /// Placement of each buffer, once allocation has run.
    pub placement: SecondaryMap<Buf, Option<Placement>>,
    /// Semaphore waits and signals, once synchronisation has run.
    pub sync: SecondaryMap<TInst, isa::Sync>,
    /// Whether synchronisation has run (the verifier then checks races are covered).
    pub synced: bool,
    /// Instructions of row groups (`tiling/block.rs`), whose blocks the `pipeline` pass
    /// may interleave: a hint, not part of the printed IR (parsed IR has none).
    pub row_group: SecondaryMap<TInst, bool>,
}

impl TileFunc {
    /// An empty function.
    pub fn new(name: &str) -> TileFunc {
        TileFunc {
            name: name.to_string(),
            ..TileFunc::default()
        }
    }

    /// Declares an HBM tensor buffer (row-major, dense). Its name is `name`, or, when
    /// another HBM buffer has it already, `name_1`, `name_2`, ...: a kernel parameter may
    /// be called `out0` or `t3`, the names of results and scratch tensors.
    pub fn hbm(&mut self, name: &str, role: Role, dtype: Dtype, shape: &[u64]) -> Buf {
        // Saturating: the verifier reports a buffer too large for HBM.
        let bytes = shape
            .iter()
            .fold(dtype.size() as u64, |n, &d| n.saturating_mul(d));
        let taken = |n: &str| {
            self.bufs
                .values()
                .any(|b| matches!(&b.kind, BufKind::Hbm { name, .. } if name == n))
        };
        let mut unique = name.to_string();
        let mut k = 1;
        while taken(&unique) {
            unique = format!("{name}_{k}");
            k += 1;
        }
        self.bufs.push(BufData {
            kind: BufKind::Hbm {
                name: unique,
                role,
                shape: shape.to_vec(),
            },
            dtype,
            partitions: 1,
            bytes,
        })
    }

    /// Declares an SBUF buffer of `partitions` x `elems` elements of `dtype`.
    pub fn sbuf(&mut self, dtype: Dtype, partitions: u32, elems: u32) -> Buf {
        self.bufs.push(BufData {
            kind: BufKind::Sbuf,
            dtype,
            partitions,
            bytes: elems as u64 * dtype.size() as u64,
        })
    }

    /// Declares a PSUM buffer of `partitions` x `elems` elements of `dtype`.
    pub fn psum(&mut self, dtype: Dtype, partitions: u32, elems: u32) -> Buf {
        self.bufs.push(BufData {
            kind: BufKind::Psum,
            dtype,
            partitions,
            bytes: elems as u64 * dtype.size() as u64,
        })
    }

    /// Appends an instruction.
    pub fn push(&mut self, op: Op, engine: Engine, bufs: &[Buf], span: Span) -> TInst {
        let inst = self.insts.push(TileInst {
            op,
            engine,
            bufs: bufs.iter().copied().collect(),
        });
        self.layout.push(inst);
        self.spans[inst] = span;
        inst
    }

    /// The HBM buffers of a role, in declaration order.
    pub fn hbm_bufs(&self, role: Role) -> impl Iterator<Item = Buf> + '_ {
        self.bufs.iter().filter_map(move |(b, d)| match &d.kind {
            BufKind::Hbm { role: r, .. } if *r == role => Some(b),
            _ => None,
        })
    }
}
