//! Operand types of the instruction set: dtypes, engines, memories, access patterns,
//! scalar arguments and the small enums (ALU ops, activation functions, comparisons).
//!
//! These are plain data. Encoding, text form and verification live in their own modules
//! and are driven by the instruction table in `table.rs`.

use smallvec::SmallVec;

/// Number of partitions of SBUF and PSUM (the first axis of every tile).
pub const PARTITIONS: u32 = 128;
/// Maximum number of free-axis dimensions of a tile access pattern.
pub const MAX_TILE_DIMS: usize = 4;
/// Maximum number of dimensions of an HBM access pattern.
pub const MAX_HBM_DIMS: usize = 5;
/// Maximum number of semaphore waits on one instruction.
pub const MAX_WAITS: usize = 4;

/// Element types the machine stores. The discriminant is the encoding.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(u8)]
pub enum Dtype {
    F32 = 0,
    Bf16 = 1,
    F16 = 2,
    F8E4M3 = 3,
    F8E5M2 = 4,
    /// Two's-complement 32-bit integer (language version 2).
    I32 = 5,
    /// A boolean, one byte holding 0 or 1 (language version 2).
    Bool = 6,
}

impl Dtype {
    /// Every dtype, in encoding order.
    pub const ALL: [Dtype; 7] = [
        Dtype::F32,
        Dtype::Bf16,
        Dtype::F16,
        Dtype::F8E4M3,
        Dtype::F8E5M2,
        Dtype::I32,
        Dtype::Bool,
    ];

    /// The float dtypes, in encoding order.
    pub const FLOATS: [Dtype; 5] = [
        Dtype::F32,
        Dtype::Bf16,
        Dtype::F16,
        Dtype::F8E4M3,
        Dtype::F8E5M2,
    ];

    /// Size of one element in bytes.
    pub fn size(self) -> u32 {
        match self {
            Dtype::F32 | Dtype::I32 => 4,
            Dtype::Bf16 | Dtype::F16 => 2,
            Dtype::F8E4M3 | Dtype::F8E5M2 | Dtype::Bool => 1,
        }
    }

    /// The language's and the assembly's name of the dtype.
    pub fn name(self) -> &'static str {
        match self {
            Dtype::F32 => "f32",
            Dtype::Bf16 => "bf16",
            Dtype::F16 => "f16",
            Dtype::F8E4M3 => "f8e4m3",
            Dtype::F8E5M2 => "f8e5m2",
            Dtype::I32 => "i32",
            Dtype::Bool => "bool",
        }
    }

    /// Parses a dtype name as written by [`Dtype::name`].
    pub fn from_name(name: &str) -> Option<Dtype> {
        Dtype::ALL.into_iter().find(|d| d.name() == name)
    }

    /// Decodes the one-byte encoding.
    pub fn from_code(code: u8) -> Option<Dtype> {
        Dtype::ALL.get(code as usize).copied()
    }

    /// True for the five float formats (not `i32`, not `bool`).
    pub fn is_float(self) -> bool {
        !matches!(self, Dtype::I32 | Dtype::Bool)
    }

    /// True for the two FP8 formats.
    pub fn is_fp8(self) -> bool {
        matches!(self, Dtype::F8E4M3 | Dtype::F8E5M2)
    }
}

impl std::fmt::Display for Dtype {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// The engines that own an instruction stream. DMA has one stream per queue.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Engine {
    Tensor,
    Vector,
    Scalar,
    GpSimd,
    /// A DMA queue, `0..NUM_DMA_QUEUES`.
    Dma(u8),
}

/// Number of DMA queues, each with its own instruction stream.
pub const NUM_DMA_QUEUES: usize = 16;
/// Number of instruction streams in a program: four compute engines and the DMA queues.
pub const NUM_STREAMS: usize = 4 + NUM_DMA_QUEUES;

impl Engine {
    /// The stream index of this engine, `0..NUM_STREAMS`.
    pub fn index(self) -> usize {
        match self {
            Engine::Tensor => 0,
            Engine::Vector => 1,
            Engine::Scalar => 2,
            Engine::GpSimd => 3,
            Engine::Dma(q) => 4 + q as usize,
        }
    }

    /// The engine of a stream index, if the index is in range.
    pub fn from_index(index: usize) -> Option<Engine> {
        Some(match index {
            0 => Engine::Tensor,
            1 => Engine::Vector,
            2 => Engine::Scalar,
            3 => Engine::GpSimd,
            i if i < NUM_STREAMS => Engine::Dma((i - 4) as u8),
            _ => return None,
        })
    }

    /// Every engine in stream order.
    pub fn all() -> impl Iterator<Item = Engine> {
        (0..NUM_STREAMS).map(|i| Engine::from_index(i).expect("in range"))
    }

    /// The assembly name: `tensor`, `vector`, `scalar`, `gpsimd`, `dma0` .. `dma15`.
    pub fn name(self) -> String {
        match self {
            Engine::Tensor => "tensor".into(),
            Engine::Vector => "vector".into(),
            Engine::Scalar => "scalar".into(),
            Engine::GpSimd => "gpsimd".into(),
            Engine::Dma(q) => format!("dma{q}"),
        }
    }

    /// Parses an engine name as written by [`Engine::name`].
    pub fn from_name(name: &str) -> Option<Engine> {
        Engine::all().find(|e| e.name() == name)
    }

    /// The class of the engine, which decides which opcodes it may run.
    pub fn class(self) -> EngineClass {
        match self {
            Engine::Tensor => EngineClass::TENSOR,
            Engine::Vector => EngineClass::VECTOR,
            Engine::Scalar => EngineClass::SCALAR,
            Engine::GpSimd => EngineClass::GPSIMD,
            Engine::Dma(_) => EngineClass::DMA,
        }
    }
}

impl std::fmt::Display for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.name())
    }
}

/// A set of engine kinds, as a bit mask: which engines may run an opcode.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct EngineClass(pub u8);

impl EngineClass {
    pub const TENSOR: EngineClass = EngineClass(1);
    pub const VECTOR: EngineClass = EngineClass(2);
    pub const SCALAR: EngineClass = EngineClass(4);
    pub const GPSIMD: EngineClass = EngineClass(8);
    pub const DMA: EngineClass = EngineClass(16);
    pub const ANY: EngineClass = EngineClass(31);

    /// The union of two sets.
    pub const fn or(self, other: EngineClass) -> EngineClass {
        EngineClass(self.0 | other.0)
    }

    /// True when every engine of `other` is in `self`.
    pub fn contains(self, other: EngineClass) -> bool {
        self.0 & other.0 == other.0
    }

    /// The names of the engine kinds in the set, for documentation and errors.
    pub fn names(self) -> Vec<&'static str> {
        let all = [
            (EngineClass::TENSOR, "tensor"),
            (EngineClass::VECTOR, "vector"),
            (EngineClass::SCALAR, "scalar"),
            (EngineClass::GPSIMD, "gpsimd"),
            (EngineClass::DMA, "dma"),
        ];
        all.iter()
            .filter(|(c, _)| self.contains(*c))
            .map(|(_, n)| *n)
            .collect()
    }
}

/// On-chip memories that engines address as tiles.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum Mem {
    Sbuf = 0,
    Psum = 1,
}

/// One dimension of an access pattern: `size` elements, `stride` elements apart.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Dim {
    pub size: u32,
    pub stride: i32,
}

/// A tile in SBUF or PSUM: `partitions` consecutive partitions starting at `partition`,
/// and in each of them the same free-axis pattern of up to four dimensions, starting at
/// byte `offset` of the partition. Element `(p, i0, .., in)` lives in partition
/// `partition + p` at byte `offset + (i0*stride0 + .. + in*striden) * dtype.size()`.
/// The last dimension is the innermost.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct TileAp {
    pub mem: Mem,
    pub dtype: Dtype,
    pub partition: u8,
    /// Number of partitions, 1..=128.
    pub partitions: u8,
    pub offset: u32,
    /// 1..=4 dimensions, outermost first.
    pub dims: SmallVec<[Dim; MAX_TILE_DIMS]>,
}

impl TileAp {
    /// Number of elements per partition (the product of the free sizes; saturating, so a
    /// hostile decoded pattern cannot overflow).
    pub fn free_elems(&self) -> u64 {
        self.dims
            .iter()
            .fold(1u64, |acc, d| acc.saturating_mul(d.size as u64))
    }

    /// Total number of elements of the tile (saturating).
    pub fn elems(&self) -> u64 {
        self.free_elems().saturating_mul(self.partitions as u64)
    }
}

/// A pattern over HBM: element `(i0, .., in)` lives at byte
/// `offset + (i0*stride0 + .. + in*striden) * dtype.size()`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct HbmAp {
    pub dtype: Dtype,
    pub offset: u64,
    /// 1..=5 dimensions, outermost first.
    pub dims: SmallVec<[HbmDim; MAX_HBM_DIMS]>,
}

/// One dimension of an HBM access pattern (strides may be large).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct HbmDim {
    pub size: u64,
    pub stride: i64,
}

impl HbmAp {
    /// Number of elements of the pattern (saturating).
    pub fn elems(&self) -> u64 {
        self.dims
            .iter()
            .fold(1u64, |acc, d| acc.saturating_mul(d.size))
    }
}

/// One side of a DMA transfer. A tile side is iterated partition-major, then its free
/// pattern in row-major order; an HBM side in row-major order of its dimensions.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum DmaAp {
    Hbm(HbmAp),
    /// Only SBUF tiles: DMA never touches PSUM.
    Tile(TileAp),
}

/// A per-partition scalar operand: an immediate, or a `[P, 1]` tile whose element in
/// partition `p` is used for every element of partition `p`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum ScalarArg {
    Imm(Imm),
    Ap(TileAp),
}

impl ScalarArg {
    /// An immediate from an f32 value.
    pub fn imm(value: f32) -> ScalarArg {
        ScalarArg::Imm(Imm::new(value))
    }
}

/// Semaphore use of one instruction: it starts only when every `waits` semaphore has
/// reached at least the given value, and when it completes it increments `signal`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct Sync {
    /// `(semaphore, value)`: wait until the semaphore's count is >= value. At most 4.
    pub waits: SmallVec<[(u8, u32); 2]>,
    /// The semaphore incremented by one at completion.
    pub signal: Option<u8>,
}

/// Arithmetic of the Vector and GpSimd engines, on f32 values.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum AluOp {
    /// `a` (the second operand is ignored).
    Bypass = 0,
    Add = 1,
    /// `a - b`.
    Sub = 2,
    /// `b - a` (reversed, for scalar-minus-tensor).
    RSub = 3,
    Mul = 4,
    /// `a / b`.
    Div = 5,
    /// `b / a` (reversed).
    RDiv = 6,
    /// IEEE 754-2019 `maximum`: NaN if either operand is NaN; `max(+0, -0) = +0`.
    Max = 7,
    /// IEEE 754-2019 `minimum`: NaN if either operand is NaN; `min(+0, -0) = -0`.
    Min = 8,
    /// `1.0` if `a < b`, else `0.0` (false when either is NaN). Language version 2's
    /// comparisons, whose `bool` results are 0 and 1.
    IsLt = 9,
    /// `1.0` if `a <= b`, else `0.0`.
    IsLe = 10,
    /// `1.0` if `a > b`, else `0.0`.
    IsGt = 11,
    /// `1.0` if `a >= b`, else `0.0`.
    IsGe = 12,
    /// `1.0` if `a == b`, else `0.0` (`-0 == +0`; NaN is unequal to everything).
    IsEq = 13,
    /// `1.0` if `a != b`, else `0.0` (true when either is NaN).
    IsNe = 14,
    /// `1.0` if `a != 0` and `b != 0`, else `0.0`: logical and of truth values.
    And = 15,
    /// `1.0` if `a != 0` or `b != 0`, else `0.0`: logical or of truth values.
    Or = 16,
    /// C's `powf(a, b)`, with its special cases (runtime::numeric documents the numerics).
    Pow = 17,
    /// `powf(b, a)`: `pow` with the operands swapped, for a scalar base.
    RPow = 18,
    /// `a & b`, bitwise: integer datapath only.
    BitAnd = 19,
    /// `a | b`, bitwise: integer datapath only.
    BitOr = 20,
    /// `a ^ b`, bitwise (`x ^ -1` is bitwise not): integer datapath only.
    BitXor = 21,
}

impl AluOp {
    /// True for the operations the integer datapath computes (every one but `div`,
    /// `rdiv`, `pow` and `rpow`).
    pub fn is_integer(self) -> bool {
        !matches!(self, AluOp::Div | AluOp::RDiv | AluOp::Pow | AluOp::RPow)
    }

    /// True for the operations only the integer datapath computes (the bitwise ones).
    pub fn is_integer_only(self) -> bool {
        matches!(self, AluOp::BitAnd | AluOp::BitOr | AluOp::BitXor)
    }
}

/// Reductions along the innermost free dimension.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum ReduceOp {
    Add = 0,
    Max = 1,
    Min = 2,
}

/// Functions of the Scalar engine's `f(in * scale + bias)`: every unary function of the
/// language, plus identity.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum ActFunc {
    Identity = 0,
    Exp = 1,
    Log = 2,
    Sqrt = 3,
    Rsqrt = 4,
    Reciprocal = 5,
    Abs = 6,
    Square = 7,
    Tanh = 8,
    Sigmoid = 9,
    Relu = 10,
    Silu = 11,
    Gelu = 12,
    GeluTanh = 13,
    Sin = 14,
    Cos = 15,
    Erf = 16,
    Floor = 17,
    Ceil = 18,
    Round = 19,
    Sign = 20,
    Softplus = 21,
}

/// Comparisons of GpSimd's affine select: the predicate is `expr CMP 0`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum CmpOp {
    Ge = 0,
    Gt = 1,
    Le = 2,
    Lt = 3,
    Eq = 4,
    Ne = 5,
}

/// An affine expression over a tile's indices: `base + partition_step * p + sum(steps[d] * i_d)`,
/// with one step per free dimension of the tile it is applied to. Computed exactly in i64.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Affine {
    pub base: i32,
    pub partition_step: i32,
    pub steps: SmallVec<[i32; MAX_TILE_DIMS]>,
}

/// An f32 immediate, kept as its bits so that NaN payloads round-trip and `Eq` holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Imm(pub u32);

impl Imm {
    /// The immediate of an f32 value.
    pub fn new(value: f32) -> Imm {
        Imm(value.to_bits())
    }

    /// The f32 value.
    pub fn value(self) -> f32 {
        f32::from_bits(self.0)
    }
}

enum_names!(Mem, "memory", { Sbuf = "sbuf", Psum = "psum" });

enum_names!(AluOp, "ALU op", {
    Bypass = "bypass",
    Add = "add",
    Sub = "sub",
    RSub = "rsub",
    Mul = "mul",
    Div = "div",
    RDiv = "rdiv",
    Max = "max",
    Min = "min",
    IsLt = "is_lt",
    IsLe = "is_le",
    IsGt = "is_gt",
    IsGe = "is_ge",
    IsEq = "is_eq",
    IsNe = "is_ne",
    And = "and",
    Or = "or",
    Pow = "pow",
    RPow = "rpow",
    BitAnd = "bit_and",
    BitOr = "bit_or",
    BitXor = "bit_xor",
});

enum_names!(ReduceOp, "reduce op", { Add = "add", Max = "max", Min = "min" });

enum_names!(ActFunc, "activation function", {
    Identity = "identity",
    Exp = "exp",
    Log = "log",
    Sqrt = "sqrt",
    Rsqrt = "rsqrt",
    Reciprocal = "reciprocal",
    Abs = "abs",
    Square = "square",
    Tanh = "tanh",
    Sigmoid = "sigmoid",
    Relu = "relu",
    Silu = "silu",
    Gelu = "gelu",
    GeluTanh = "gelu_tanh",
    Sin = "sin",
    Cos = "cos",
    Erf = "erf",
    Floor = "floor",
    Ceil = "ceil",
    Round = "round",
    Sign = "sign",
    Softplus = "softplus",
});

enum_names!(CmpOp, "comparison", { Ge = "ge", Gt = "gt", Le = "le", Lt = "lt", Eq = "eq", Ne = "ne" });

impl TileAp {
    /// A tile from its parts, for builders and tests: `dims` are `(size, stride)` pairs,
    /// outermost first.
    pub fn new(
        mem: Mem,
        dtype: Dtype,
        partition: u8,
        partitions: u8,
        offset: u32,
        dims: &[(u32, i32)],
    ) -> TileAp {
        TileAp {
            mem,
            dtype,
            partition,
            partitions,
            offset,
            dims: dims
                .iter()
                .map(|&(size, stride)| Dim { size, stride })
                .collect(),
        }
    }
}

impl HbmAp {
    /// An HBM pattern from its parts: `dims` are `(size, stride)` pairs, outermost first.
    pub fn new(dtype: Dtype, offset: u64, dims: &[(u64, i64)]) -> HbmAp {
        HbmAp {
            dtype,
            offset,
            dims: dims
                .iter()
                .map(|&(size, stride)| HbmDim { size, stride })
                .collect(),
        }
    }
}
