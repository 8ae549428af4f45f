//! The reference document `isa/ISA.md`, generated from the instruction table and the
//! operand types so that it cannot drift from the code.
//!
//! [`reference_doc`] builds the whole Markdown text: hand-written sections (machine model,
//! synchronisation, operand encodings, the `.tbin` format, the assembly syntax, the
//! verifier's rules) with their tables filled from the code (enum codes and names, the
//! preset's geometry), then one section per opcode from `for_each_op!` with its fields,
//! semantics, `Numerics:` and `Cost:` paragraphs and an encoded example. A test compares the
//! checked-in `ISA.md` with this function's output.

use std::fmt::Write as _;

use crate::{
    for_each_op, ActFunc, Affine, AluOp, CmpOp, DmaAp, Dtype, Engine, HbmAp, Imm, Inst, Mem,
    Opcode, Preset, ReduceOp, Role, ScalarArg, TileAp, FORMAT_VERSION, MAGIC, MAX_HBM_DIMS,
    MAX_TENSOR_RANK, MAX_TILE_DIMS, MAX_WAITS, MIN_FORMAT_VERSION, NUM_DMA_QUEUES, NUM_STREAMS,
    SOURCE_HASH_BYTES,
};

/// Documentation of an operand type: its name, its assembly syntax, its encoding.
trait OperandDoc {
    const TYPE: &'static str;
    const SYNTAX: &'static str;
    const ENCODING: &'static str;
}

impl OperandDoc for bool {
    const TYPE: &'static str = "bool";
    const SYNTAX: &'static str = "`true` or `false`";
    const ENCODING: &'static str = "1 byte: 0 or 1";
}

impl OperandDoc for AluOp {
    const TYPE: &'static str = "AluOp";
    const SYNTAX: &'static str = "ALU op name (table below)";
    const ENCODING: &'static str = "1 byte: ALU op code";
}

impl OperandDoc for ReduceOp {
    const TYPE: &'static str = "ReduceOp";
    const SYNTAX: &'static str = "`add`, `max` or `min`";
    const ENCODING: &'static str = "1 byte: reduce op code";
}

impl OperandDoc for ActFunc {
    const TYPE: &'static str = "ActFunc";
    const SYNTAX: &'static str = "function name (table below)";
    const ENCODING: &'static str = "1 byte: function code";
}

impl OperandDoc for CmpOp {
    const TYPE: &'static str = "CmpOp";
    const SYNTAX: &'static str = "`ge`, `gt`, `le`, `lt`, `eq` or `ne`";
    const ENCODING: &'static str = "1 byte: comparison code";
}

impl OperandDoc for Imm {
    const TYPE: &'static str = "Imm";
    const SYNTAX: &'static str =
        "f32 literal: `1.0`, `-2.5e-8`, `inf`, `-inf`, `nan`, `nan:0x7fc00001`";
    const ENCODING: &'static str = "4 bytes: the f32 bits, u32 LE";
}

impl OperandDoc for TileAp {
    const TYPE: &'static str = "TileAp";
    const SYNTAX: &'static str = "`MEM.DTYPE[START:COUNT, OFFSET; SIZE:STRIDE, ...]`";
    const ENCODING: &'static str = "9 + 8n bytes (see Tile access pattern)";
}

impl OperandDoc for HbmAp {
    const TYPE: &'static str = "HbmAp";
    const SYNTAX: &'static str = "an HBM pattern `hbm.DTYPE[OFFSET; SIZE:STRIDE, ...]`";
    const ENCODING: &'static str = "the HBM pattern (see HBM access pattern)";
}

impl OperandDoc for DmaAp {
    const TYPE: &'static str = "DmaAp";
    const SYNTAX: &'static str =
        "an HBM pattern `hbm.DTYPE[OFFSET; SIZE:STRIDE, ...]` or an SBUF tile";
    const ENCODING: &'static str = "tag byte (0 HBM, 1 tile), then the pattern";
}

impl OperandDoc for ScalarArg {
    const TYPE: &'static str = "ScalarArg";
    const SYNTAX: &'static str = "an f32 literal or a `[P, 1]` tile";
    const ENCODING: &'static str = "tag byte (0 immediate, 1 tile), then the Imm or TileAp";
}

impl OperandDoc for Option<TileAp> {
    const TYPE: &'static str = "Option<TileAp>";
    const SYNTAX: &'static str = "`none` or a tile";
    const ENCODING: &'static str = "tag byte (0 none, 1 tile), then the TileAp";
}

impl OperandDoc for Affine {
    const TYPE: &'static str = "Affine";
    const SYNTAX: &'static str = "`affine(base=B, p=P, i=[S0, ...])`";
    const ENCODING: &'static str = "base i32, partition step i32, n u8, n x step i32";
}

/// One field of an opcode as the document shows it.
struct FieldDoc {
    name: &'static str,
    ty: &'static str,
    syntax: &'static str,
    encoding: &'static str,
}

/// Generates `fn field_docs(Opcode) -> Vec<FieldDoc>` from the table.
macro_rules! define_field_docs {
    ($(
        $(#[doc = $doc:literal])*
        $name:ident = $code:literal, $mnemonic:literal, $engines:expr, { $($field:ident : $ty:ty),* $(,)? };
    )*) => {
        /// The documented fields of an opcode, in table (and encoding) order.
        fn field_docs(opcode: Opcode) -> Vec<FieldDoc> {
            match opcode {
                $(Opcode::$name => vec![$(FieldDoc {
                    name: stringify!($field),
                    ty: <$ty as OperandDoc>::TYPE,
                    syntax: <$ty as OperandDoc>::SYNTAX,
                    encoding: <$ty as OperandDoc>::ENCODING,
                }),*],)*
            }
        }
    };
}

for_each_op!(define_field_docs);

/// One canonical example line per opcode, shown with its encoding. A unit test checks that
/// every opcode has one, that it is canonical, and that it verifies on its engine.
pub(crate) const EXAMPLES: &[&str] = &[
    "wait(s0>=1) nop signal(s1)",
    "end",
    "dma dst=sbuf.bf16[0:128, 0; 64:1], src=hbm.f32[0; 128:64, 64:1]",
    "dma_gather dst=sbuf.bf16[0:128, 0; 64:1], idx=sbuf.i32[0:128, 256; 1:1], \
     src=hbm.bf16[0; 1000:64, 64:1], wrap=true",
    "matmul out=psum.f32[0:128, 0; 512:1], stationary=sbuf.bf16[0:128, 0; 128:1], \
     moving=sbuf.bf16[0:128, 256; 512:1], accumulate=false",
    "transpose out=psum.f32[0:64, 2048; 128:1], src=sbuf.bf16[0:128, 0; 64:1]",
    "tensor_tensor op=add, out=sbuf.f32[0:128, 0; 512:1], a=sbuf.f32[0:128, 2048; 512:1], \
     b=psum.f32[0:128, 0; 512:1]",
    "tensor_scalar out=sbuf.bf16[0:128, 0; 4:128, 128:1], src=psum.f32[0:128, 0; 512:1], \
     op0=mul, s0=sbuf.f32[0:128, 4096; 1:1], op1=add, s1=0.5",
    "tensor_reduce op=max, out=sbuf.f32[0:128, 0; 4:1], src=sbuf.f32[0:128, 64; 4:256, 256:1]",
    "tensor_reduce_scalar op=max, out=sbuf.f32[0:128, 8; 1:1], src=psum.f32[0:128, 0; 512:1], \
     op0=mul, s0=-0.125, op1=min, s1=sbuf.f32[0:128, 12; 1:1]",
    "select out=sbuf.f32[0:128, 0; 512:1], mask=sbuf.bool[0:128, 2048; 512:1], \
     a=sbuf.f32[0:128, 4096; 512:1], b=psum.f32[0:128, 0; 512:1]",
    "tensor_scan out=sbuf.f32[0:128, 0; 32:1, 128:32], src=sbuf.f32[0:128, 16384; 32:1, 128:32], \
     carry=sbuf.f32[0:128, 32768; 32:1]",
    "tensor_arg_reduce op=max, out=sbuf.f32[0:128, 0; 1:1], index=sbuf.i32[0:128, 4; 1:1], \
     src=sbuf.f32[0:128, 64; 1024:1], positions=none",
    "tensor_copy out=sbuf.bf16[64:64, 0; 32:1, 16:32], src=sbuf.f32[64:64, 1024; 16:32, 32:1]",
    "memset out=sbuf.f32[0:32, 0; 128:1], value=-inf",
    "activate out=sbuf.bf16[0:128, 0; 512:1], src=psum.f32[0:128, 0; 512:1], func=exp, \
     scale=1.0, bias=sbuf.f32[0:128, 2048; 1:1], accum=sbuf.f32[0:128, 2052; 1:1]",
    "iota out=sbuf.f32[0:128, 0; 64:1], expr=affine(base=0, p=64, i=[1])",
    "wait(s2>=1) affine_select out=sbuf.f32[0:128, 0; 128:1], src=sbuf.f32[0:128, 512; 128:1], \
     cmp=ge, expr=affine(base=0, p=1, i=[-1]), fill=-inf signal(s3)",
    "partition_transpose out=sbuf.bf16[0:128, 4096; 128:1], src=sbuf.bf16[0:128, 0; 128:1]",
];

/// A whole example program: load a tile, exponentiate it, store it.
pub(crate) const EXAMPLE_PROGRAM: &str = "\
.preset default
.hbm 65536
.tensor x input f32 [128, 64] @0
.tensor y output f32 [128, 64] @32768
.source \"exp.tsr\"
.locs

.stream scalar
    .loc 2:12
    wait(s0>=1) activate out=sbuf.f32[0:128, 256; 64:1], src=sbuf.f32[0:128, 0; 64:1], func=exp, scale=1.0, bias=0.0, accum=none signal(s1)
    end

.stream dma0
    dma dst=sbuf.f32[0:128, 0; 64:1], src=hbm.f32[0; 128:64, 64:1] signal(s0)
    wait(s1>=1) dma dst=hbm.f32[32768; 128:64, 64:1], src=sbuf.f32[0:128, 256; 64:1]
    end
";

/// The meaning of each ALU op (exhaustive, so a new op must be documented).
fn alu_meaning(op: AluOp) -> &'static str {
    match op {
        AluOp::Bypass => "`a` (the second operand is ignored)",
        AluOp::Add => "`a + b`",
        AluOp::Sub => "`a - b`",
        AluOp::RSub => "`b - a`",
        AluOp::Mul => "`a * b`",
        AluOp::Div => "`a / b` (IEEE division)",
        AluOp::RDiv => "`b / a`",
        AluOp::Max => "maximum; NaN if either operand is NaN",
        AluOp::Min => "minimum; NaN if either operand is NaN",
        AluOp::IsLt => "`1.0` if `a < b`, else `0.0` (false with NaN)",
        AluOp::IsLe => "`1.0` if `a <= b`, else `0.0` (false with NaN)",
        AluOp::IsGt => "`1.0` if `a > b`, else `0.0` (false with NaN)",
        AluOp::IsGe => "`1.0` if `a >= b`, else `0.0` (false with NaN)",
        AluOp::IsEq => "`1.0` if `a == b`, else `0.0` (`-0 == +0`; false with NaN)",
        AluOp::IsNe => "`1.0` if `a != b`, else `0.0` (true with NaN)",
        AluOp::And => "`1.0` if `a != 0` and `b != 0`, else `0.0`",
        AluOp::Or => "`1.0` if `a != 0` or `b != 0`, else `0.0`",
        AluOp::Pow => "`powf(a, b)` with C99's special cases (`pow(x, ±0) = 1`, `pow(1, y) = 1` even for NaN `x`/`y`, `pow(-1, ±inf) = 1`, a negative base with a non-integer exponent is NaN); within 1 ulp",
        AluOp::RPow => "`powf(b, a)`",
        AluOp::BitAnd => "`a & b`, bitwise (integer datapath only)",
        AluOp::BitOr => "`a | b`, bitwise (integer datapath only)",
        AluOp::BitXor => "`a ^ b`, bitwise; `x ^ -1` is bitwise not (integer datapath only)",
    }
}

/// The meaning of each reduction.
fn reduce_meaning(op: ReduceOp) -> &'static str {
    match op {
        ReduceOp::Add => "sum",
        ReduceOp::Max => "maximum, NaN-propagating",
        ReduceOp::Min => "minimum, NaN-propagating",
    }
}

/// The formula of each activation function.
fn act_meaning(f: ActFunc) -> &'static str {
    match f {
        ActFunc::Identity => "`x`",
        ActFunc::Exp => "`exp(x)`",
        ActFunc::Log => "`ln(x)`",
        ActFunc::Sqrt => "`sqrt(x)`",
        ActFunc::Rsqrt => "`1 / sqrt(x)`",
        ActFunc::Reciprocal => "`1 / x`",
        ActFunc::Abs => "`abs(x)`",
        ActFunc::Square => "`x * x`",
        ActFunc::Tanh => "`tanh(x)`",
        ActFunc::Sigmoid => "`1 / (1 + exp(-x))`",
        ActFunc::Relu => "`max(x, 0)`",
        ActFunc::Silu => "`x * sigmoid(x)`",
        ActFunc::Gelu => "`x * 0.5 * (1 + erf(x / sqrt(2)))`",
        ActFunc::GeluTanh => "`0.5 * x * (1 + tanh(sqrt(2/pi) * (x + 0.044715 * x^3)))`",
        ActFunc::Sin => "`sin(x)` (x in radians, exact argument reduction for every f32)",
        ActFunc::Cos => "`cos(x)` (x in radians, exact argument reduction for every f32)",
        ActFunc::Erf => "`erf(x)`",
        ActFunc::Floor => "`floor(x)` (exact; `-0` stays `-0`)",
        ActFunc::Ceil => "`ceil(x)` (exact; `ceil(-0.5) = -0`)",
        ActFunc::Round => "nearest integer, ties to even (exact; `round(-0.5) = -0`)",
        ActFunc::Sign => "`-1`, `0` or `1` by the sign of `x`; `sign(±0) = ±0`, NaN stays NaN",
        ActFunc::Softplus => "`ln(1 + exp(x))`, without overflow for large `x`",
    }
}

/// The predicate of each comparison (`expr CMP 0`).
fn cmp_meaning(op: CmpOp) -> &'static str {
    match op {
        CmpOp::Ge => "`expr >= 0`",
        CmpOp::Gt => "`expr > 0`",
        CmpOp::Le => "`expr <= 0`",
        CmpOp::Lt => "`expr < 0`",
        CmpOp::Eq => "`expr == 0`",
        CmpOp::Ne => "`expr != 0`",
    }
}

/// A Markdown table of code, name and meaning for a small enum.
fn enum_table<T: Copy>(
    out: &mut String,
    title: &str,
    values: &[T],
    code: impl Fn(T) -> u8,
    name: impl Fn(T) -> String,
    meaning: impl Fn(T) -> String,
) {
    let _ = writeln!(out, "{title}:\n");
    out.push_str("| code | name | meaning |\n|---|---|---|\n");
    for &v in values {
        let _ = writeln!(out, "| {} | `{}` | {} |", code(v), name(v), meaning(v));
    }
    out.push('\n');
}

/// The doc comment of an opcode split into summary paragraphs, `Numerics:` and `Cost:`.
fn split_doc(doc: &str) -> (Vec<String>, Option<String>, Option<String>) {
    let mut paragraphs = Vec::new();
    let mut current: Vec<&str> = Vec::new();
    for line in doc.lines() {
        let line = line.strip_prefix(' ').unwrap_or(line);
        if line.trim().is_empty() {
            if !current.is_empty() {
                paragraphs.push(current.join("\n"));
                current.clear();
            }
        } else {
            current.push(line);
        }
    }
    if !current.is_empty() {
        paragraphs.push(current.join("\n"));
    }
    let mut summary = Vec::new();
    let (mut numerics, mut cost) = (None, None);
    for p in paragraphs {
        if let Some(rest) = p.strip_prefix("Numerics:") {
            numerics = Some(capitalize(rest.trim()));
        } else if let Some(rest) = p.strip_prefix("Cost:") {
            cost = Some(capitalize(rest.trim()));
        } else {
            summary.push(p);
        }
    }
    (summary, numerics, cost)
}

/// The text with its first letter in upper case.
fn capitalize(text: &str) -> String {
    let mut chars = text.chars();
    match chars.next() {
        Some(first) => first.to_uppercase().chain(chars).collect(),
        None => String::new(),
    }
}

/// Bytes as spaced lowercase hex.
fn hex(bytes: &[u8]) -> String {
    let parts: Vec<String> = bytes.iter().map(|b| format!("{b:02x}")).collect();
    parts.join(" ")
}

/// The section of one opcode.
fn opcode_section(out: &mut String, opcode: Opcode) {
    let m = opcode.mnemonic();
    let _ = writeln!(out, "### `{m}` (opcode `{:#04x}`)\n", opcode as u8);
    let engines: Vec<String> = opcode
        .engines()
        .names()
        .iter()
        .map(|n| format!("`{n}`"))
        .collect();
    let _ = writeln!(out, "Engines: {}.\n", engines.join(", "));
    let fields = field_docs(opcode);
    let syntax: Vec<String> = fields
        .iter()
        .map(|f| format!("{}={}", f.name, f.ty))
        .collect();
    if syntax.is_empty() {
        let _ = writeln!(out, "Syntax: `{m}`\n");
    } else {
        let _ = writeln!(out, "Syntax: `{m} {}`\n", syntax.join(", "));
    }
    let (summary, numerics, cost) = split_doc(opcode.doc());
    for p in summary {
        let _ = writeln!(out, "{p}\n");
    }
    if !fields.is_empty() {
        out.push_str("| # | field | type | text | encoding |\n|---|---|---|---|---|\n");
        for (i, f) in fields.iter().enumerate() {
            let _ = writeln!(
                out,
                "| {} | `{}` | `{}` | {} | {} |",
                i + 1,
                f.name,
                f.ty,
                f.syntax,
                f.encoding
            );
        }
        out.push('\n');
    }
    let _ = writeln!(
        out,
        "**Numerics.** {}\n",
        numerics.as_deref().unwrap_or("not stated.")
    );
    let _ = writeln!(
        out,
        "**Cost.** {}\n",
        cost.as_deref().unwrap_or("not stated.")
    );
    let example = EXAMPLES
        .iter()
        .filter_map(|t| t.parse::<Inst>().ok())
        .find(|i| i.op.opcode() == opcode);
    if let Some(inst) = example {
        let mut bytes = Vec::new();
        crate::encode_inst(&inst, &mut bytes);
        let _ = writeln!(
            out,
            "Example ({} bytes):\n\n```text\n{inst}\n{}\n```\n",
            bytes.len(),
            hex(&bytes)
        );
    }
}

/// Builds `ISA.md`: the complete reference of the instruction set.
pub fn reference_doc() -> String {
    let mut out = String::new();
    let g = Preset::Default.geometry();
    let _ = write!(
        out,
        "# Tessera ISA reference

<!-- Generated by `isa::reference_doc()` from `isa/src/table.rs` and the operand types.
     Do not edit by hand: regenerate with `UPDATE_ISA_DOC=1 cargo test -p tessera-isa`. -->

Tessera's instruction set for one NeuronCore of a Trainium-like accelerator. The whole ISA is
one table (`isa/src/table.rs`, the `for_each_op!` macro); the `Op` enum, the binary encoder
and decoder, the assembler and disassembler, the verifier's per-field checks and this
document are generated from it.

Contents: [Machine model](#machine-model), [Synchronisation](#synchronisation),
[Timing model](#timing-model), [Operand types](#operand-types), [Instruction encoding](#instruction-encoding),
[The .tbin container](#the-tbin-container), [Assembly syntax](#assembly-syntax),
[Verifier rules](#verifier-rules), [Instructions](#instructions).

## Machine model

A program has {NUM_STREAMS} instruction streams, one per engine; each engine runs its stream
in order. The four compute engines have one stream each and DMA has one per queue
({NUM_DMA_QUEUES} queues). Engines synchronise only through semaphores.

| stream | engine | may run |
|---|---|---|
"
    );
    for e in Engine::all() {
        let may: Vec<&str> = Opcode::ALL
            .iter()
            .filter(|o| o.engines().contains(e.class()))
            .map(|o| o.mnemonic())
            .collect();
        let _ = writeln!(out, "| {} | `{e}` | {} |", e.index(), may.join(", "));
    }
    let _ = write!(
        out,
        "
Memories of the `default` preset (the only one; its id is 0 in the `.tbin` header):

| memory | geometry |
|---|---|
| SBUF | {p} partitions x {sbuf} bytes |
| PSUM | {p} partitions x {psum} bytes, in banks of {bank} bytes |
| HBM | byte-addressed, `hbm_size` bytes (declared by the program) |
| semaphores | {sems} (`s0` .. `s{last}`) |

A *tile* is a region of SBUF or PSUM: `COUNT` consecutive partitions starting at `START`,
and in each the same free-axis pattern of 1 to {MAX_TILE_DIMS} dimensions, starting at byte
`OFFSET` of the partition. Element `(p, i0, .., in)` lives in partition `START + p` at byte
`OFFSET + (i0*stride0 + .. + in*striden) * size(dtype)`; sizes and strides count elements,
strides may be negative, the last dimension is the innermost. A tile's start partition
depends on its partition count: 0 for more than 64, 0 or 64 for 33 to 64, and 0, 32, 64 or
96 for 32 or fewer. An *HBM pattern* is the same without partitions: 1 to {MAX_HBM_DIMS}
dimensions from a byte offset in HBM. Elements are iterated in row-major order (the last
dimension fastest; a tile partition-major when it is one side of a DMA).

Numerics common to every engine: values are computed in f32 and rounded to the output
dtype with round-to-nearest-even. A NaN that any instruction writes (and any NaN a program
is given as input) is the canonical quiet NaN `0x7fc00000` (and the dtype's quiet NaN
below f32): payloads are not kept, whatever the operands or an immediate's bits. `max` and
`min` follow IEEE 754-2019 `maximum` and `minimum`: NaN if either operand is NaN, and
`max(+0, -0) = +0`, `min(+0, -0) = -0`.

## Synchronisation

Semaphores are monotonic counters: each starts at 0 at the start of the run and is only ever
incremented. An instruction may carry up to {MAX_WAITS} waits and one signal:

- `wait(sN>=V)`: the instruction does not start until semaphore `N` has reached at least
  `V`. With several waits, all must hold.
- `signal(sN)`: when the instruction completes (its results are written), semaphore `N` is
  incremented by one.

There is no other ordering between streams: every cross-engine dependency (read after
write, write after read, write after write) must be carried by a signal and a wait. Within a
stream instructions start in order. A run where every unfinished stream waits forever is a
deadlock, which the interpreter reports as an error.

## Timing model

The interpreter (`runtime`) runs the streams under this timing model; each instruction's
`Cost` paragraph below gives its formula, with the defaults of the `default` preset
(`runtime::Timing` holds every number). Cycles are of a 1.4 GHz clock.

1. Each stream issues in order. An instruction starts at the latest of: its stream being
   free, every wait being satisfied, and the current time. A wait `sN>=V` is satisfied at
   the time of the V-th increment of `sN` (`V = 0` at time 0).
2. A compute instruction ends at `start + cost`; its stream is free again then, and its
   signal is incremented then.
3. Costs: `nop` 1 (on any stream), `end` 0; `matmul` `max(ceil(N / rate), 32)` with the
   rate of the moving operand's dtype (f32 0.5, bf16 and f16 2, FP8 4 columns per cycle);
   `transpose` the same with N = the source's partitions and the source's dtype; Vector
   instructions `64 + inputs * N` (2 inputs for `tensor_tensor`, else 1), the same on
   GpSimd `64 + inputs * 4N`; `activate` `64 + N`; `iota` and `affine_select` `64 + 4N`;
   `partition_transpose` `64 + 4 max(P, F)` for a source of P partitions and F free
   elements. N is the free elements per partition of the source (of `out` for `memset`,
   `iota` and `affine_select`).
4. Stationary reload: the stationary tile description (memory, dtype, partitions, offset,
   dims; the source for a transpose) is compared with the previous matmul's or transpose's.
   When it differs, a 32-cycle load starts at the later of the previous matmul's start
   and the instruction's own waits, and the matmul starts no earlier than the load's end.
   Only the description is compared, not the data. Waits carried by a `nop` before the
   matmul hold the matmul, not the load: the model does not know which operand a wait is
   for, so a program puts the waits its stationary operand needs on the matmul itself
   (a wait on a `nop` lets the load begin before that data is there; the compiler's `sync`
   pass keeps them there).
5. A DMA issues at the later of its waits and the previous issue on its queue; the queue is
   free again at issue. Its data phase starts at the later of `issue + 2000` and the end of
   the previous data phase on the same queue: latencies overlap, data phases of one queue
   are serial.
6. Queues in their data phase share bandwidth by processor sharing: each moves
   `min(16, 256 / active queues)` bytes per cycle, recomputed whenever a data phase starts
   or ends (exact fixed-point arithmetic). A transfer ends in the cycle its last byte moves,
   then signals.
7. A DMA moves the larger of its two sides' effective bytes; a side's effective bytes sum its
   maximal contiguous runs, each rounded up to 64 bytes (a tile side's runs never join
   across partitions). A run is a sequence of elements at consecutive ascending addresses
   in iteration order: a dimension walked with a negative or zero stride gives runs of one
   element each (its bytes may be contiguous, but not in the order they move).
8. Everything that completes at a cycle (semaphore increments, DMA phase changes) is
   handled before anything starts at that cycle; ties between streams go to the lowest
   stream index. An instruction's effect on memory is applied when it starts.
9. Total cycles is the latest end of anything. A DMA queue's busy time is the sum of its
   data phases and of its `nop`s (1 cycle each); the `dma` engine's busy time counts the
   cycles in which any queue moves data.
10. A deadlock, the cycle limit, the instruction limit and a semaphore overflow are errors.

## Operand types

| type | text | encoding |
|---|---|---|
",
        p = g.partitions,
        sbuf = g.sbuf_partition_bytes,
        psum = g.psum_partition_bytes,
        bank = g.psum_bank_bytes,
        sems = g.semaphores,
        last = g.semaphores.saturating_sub(1),
    );
    fn row<T: OperandDoc + ?Sized>(out: &mut String) {
        let _ = writeln!(out, "| `{}` | {} | {} |", T::TYPE, T::SYNTAX, T::ENCODING);
    }
    row::<TileAp>(&mut out);
    row::<DmaAp>(&mut out);
    row::<HbmAp>(&mut out);
    row::<ScalarArg>(&mut out);
    row::<Option<TileAp>>(&mut out);
    row::<Imm>(&mut out);
    row::<Affine>(&mut out);
    row::<bool>(&mut out);
    row::<AluOp>(&mut out);
    row::<ReduceOp>(&mut out);
    row::<ActFunc>(&mut out);
    row::<CmpOp>(&mut out);
    out.push_str(
        "
All integers are little-endian and fixed-width. `u8`/`u16`/`u32`/`u64` are unsigned and
`i32`/`i64` two's-complement signed.

### Tile access pattern (`TileAp`)

| bytes | field | meaning |
|---|---|---|
| 1 | mem | memory code (table below) |
| 1 | dtype | dtype code (table below) |
| 1 | start | first partition, u8 |
| 1 | count | number of partitions, u8 (1 to 128) |
| 4 | offset | byte offset in each partition, u32 |
| 1 | n | number of free dimensions, u8 (the decoder rejects more than 4) |
| 8 each | dims | per dimension, outermost first: size u32, stride i32 (elements) |

Text: `sbuf.bf16[0:128, 1024; 4:512, 128:1]` is SBUF, bf16, partitions 0..128, byte
offset 1024, dimensions 4 (stride 512) by 128 (stride 1). With no dimensions: `[0:1, 0;]`.

### HBM access pattern (`HbmAp`, inside `DmaAp`)

| bytes | field | meaning |
|---|---|---|
| 1 | dtype | dtype code |
| 8 | offset | byte offset in HBM, u64 |
| 1 | n | number of dimensions, u8 (the decoder rejects more than 5) |
| 16 each | dims | per dimension, outermost first: size u64, stride i64 (elements) |

Text: `hbm.f32[4096; 128:64, 64:1]`.

### Tagged operands

`DmaAp` is a tag byte, 0 for an HBM pattern or 1 for a tile, then the pattern. `ScalarArg`
is a tag byte, 0 for an immediate (then 4 bytes) or 1 for a tile. `Option<TileAp>` is a tag
byte, 0 for none or 1 for a tile. Any other tag is a decoding error.

### Immediates (`Imm`)

An f32 kept as its 32 bits (so NaN payloads survive), encoded as u32 LE. Text: Rust's
shortest round-trip form (`1.0`, `-0.0`, `3.4028235e38`, `1e-45`), `inf` and `-inf`, `nan`
for the canonical quiet NaN `0x7fc00000`, and `nan:0xXXXXXXXX` for any other NaN pattern.
On the integer datapath (below) the same 32 bits are a two's-complement `i32`; the text
`i32:N` (`i32:-1`, `i32:2147483647`) writes those bits, and the disassembler prints it for
the integers `0 < |N| < 2^23` (positive subnormals and negative NaN patterns as f32); the
other patterns print as floats. Either way the text parses back to the same bits.

### The integer datapath

Vector and GpSimd instructions choose their datapath by the dtypes of their operands; there
are no integer opcodes. An instruction whose data inputs include an `i32` tile (`a`/`b` of
`tensor_tensor` and `select`, `src` of `tensor_scalar`, `tensor_reduce`,
`tensor_reduce_scalar`, `tensor_copy`, `affine_select`, `transpose` and
`partition_transpose`, a DMA's source), and `memset` and `iota` into an `i32` tile, compute on
32-bit two's-complement integers, never through f32 (which holds integers exactly only up to
2^24):

- inputs are read as integers: `i32` as is, `bool` as 0 or 1; a float input beside an `i32`
  one is a verifier error (convert it first with `tensor_copy`). A per-partition scalar tile
  is read the same way; an immediate's 32 bits are the integer (`i32:N`).
- `add`, `sub`, `rsub`, `mul` wrap around; `max`, `min` exact; comparisons, `and`, `or` give 1
  or 0; `bit_and`, `bit_or`, `bit_xor` are bitwise. `div`, `rdiv`, `pow`, `rpow` do not
  exist on it (a verifier error). Reductions: `add` wraps, `max`/`min` exact.
- the result is written to `out`'s dtype: `i32` exactly, `bool` as `x != 0`, a float rounded
  once to nearest even from the exact integer (so `i32` to `bf16` rounds once).
- `select`'s mask is read as a truth value (nonzero is true) whatever its dtype.
- a float input converted to `i32` (a `tensor_copy` or DMA from a float tile into an `i32`
  one, on the float datapath) rounds toward zero, saturates at the `i32` range, and gives 0
  for NaN; a number converted to `bool` is `x != 0` (NaN gives 1).

The bitwise operations exist only on the integer datapath; the Scalar engine (`activate`)
and the Tensor engine's `matmul` take no `i32` tile (verifier errors). Costs do not depend
on the datapath. DMA and `transpose`/`partition_transpose` of `i32` and `bool` tiles are
exact bit copies.

### Affine expressions (`Affine`)

`base + p_step * p + sum(steps[d] * i_d)`, computed exactly in i64, with one step per free
dimension of the tile it is applied to. Encoding: base i32, partition step i32, count u8
(at most 4), steps i32 each. Text: `affine(base=0, p=1, i=[-1, 0])`.

### Small enums

",
    );
    enum_table(
        &mut out,
        "Dtypes",
        &Dtype::ALL,
        |d| d as u8,
        |d| d.name().into(),
        |d| format!("{} byte(s)", d.size()),
    );
    enum_table(
        &mut out,
        "Memories",
        Mem::ALL,
        Mem::code,
        |m| m.name().into(),
        |m| {
            match m {
                Mem::Sbuf => "state buffer",
                Mem::Psum => "partial-sum buffer",
            }
            .into()
        },
    );
    enum_table(
        &mut out,
        "ALU ops (`a` is the first operand: the tile, or the running value)",
        AluOp::ALL,
        AluOp::code,
        |o| o.name().into(),
        |o| alu_meaning(o).into(),
    );
    enum_table(
        &mut out,
        "Reductions",
        ReduceOp::ALL,
        ReduceOp::code,
        |o| o.name().into(),
        |o| reduce_meaning(o).into(),
    );
    enum_table(
        &mut out,
        "Activation functions",
        ActFunc::ALL,
        ActFunc::code,
        |f| f.name().into(),
        |f| act_meaning(f).into(),
    );
    enum_table(
        &mut out,
        "Comparisons (the predicate of `affine_select`)",
        CmpOp::ALL,
        CmpOp::code,
        |o| o.name().into(),
        |o| cmp_meaning(o).into(),
    );
    enum_table(
        &mut out,
        "Tensor roles (in the `.tbin` tensor table)",
        Role::ALL,
        Role::code,
        |r| r.name().into(),
        |r| {
            match r {
                Role::Input => "kernel parameter, bound before the run",
                Role::Output => "kernel result, read after the run",
                Role::Scratch => "compiler-owned HBM",
            }
            .into()
        },
    );
    let magic_text: String = MAGIC
        .iter()
        .map(|&b| char::from(b).escape_default().to_string())
        .collect();
    let _ = write!(
        out,
        "## Instruction encoding

| bytes | field | meaning |
|---|---|---|
| 1 | opcode | the opcode byte (see [Instructions](#instructions)) |
| 1 | sync header | bits 0-2: number of waits (at most {MAX_WAITS}); bit 3: a signal follows; bits 4-7: zero |
| 5 each | waits | semaphore u8, value u32 |
| 0 or 1 | signal | semaphore u8, when bit 3 is set |
| ... | fields | each field of the opcode in table order, encoded by its type |

So the smallest instruction (`end`) is 2 bytes: `01 00`.

## The .tbin container

A program file. The decoder checks every length against the bytes that remain, rejects
unknown codes and trailing bytes, and reports each problem with its byte offset.

| bytes | field | meaning |
|---|---|---|
| 8 | magic | `{magic_text}` ({magic_hex}) |
| 2 | version | format version u16, currently {FORMAT_VERSION} (version {MIN_FORMAT_VERSION} is still read: it has no origin section) |
| 2 | preset | machine preset id u16 (0 = `default`) |
| 8 | hbm_size | bytes of HBM the program uses, u64 |
| 4 | tensor count | u32 |
| ... | tensors | per tensor: role u8, dtype u8, name (u32 length + UTF-8 bytes), rank u8 (at most {MAX_TENSOR_RANK}), rank x dim u64, byte offset u64 |
| 1 | stream count | u8, always {NUM_STREAMS} |
| ... | streams | per stream in index order: engine id u8 (= the stream index), byte length u32, instruction count u32, then the instructions, which must fill exactly the byte length |
| 1 | debug flag | 0: no debug section (end of file); 1: a debug section follows |
| 1 | source flag | 0 or 1: a source file name follows (u32 length + UTF-8) |
| 4 | location streams | u32: 0, or one list per stream |
| ... | locations | per list: count u32, then per instruction a tag u8 (0 none; 1 then line u32, column u32) |
| 1 | origin flag | version 2 and later: 0: no origin (end of file); 1: the origin section follows |
| ... | origin | source path (u32 length + UTF-8), SHA3-256 of the source file's bytes ({SOURCE_HASH_BYTES} bytes), kernel name (u32 length + UTF-8), define count u32 then per define a name (u32 length + UTF-8) and a value i64, dtype policy u8 (0 `wide`, 1 `strict`), disabled pass count u32 then per pass a name (u32 length + UTF-8) |

Nothing may follow the last section.

The origin section records where a compiled program came from: the kernel source file
(absolute path when the compiler could resolve it), a digest of its text, the kernel's
name, the `-D` size overrides and the options that change the program (dtype policy,
disabled passes). `tessera run PROGRAM.tbin --check` reads it to find the kernel again,
refuses when the source is missing or its digest differs, and checks the outputs against
the reference evaluator of that kernel with those sizes. Assembled programs have no origin
unless their text gives one.

## Assembly syntax

The text form, read by `assemble` (`tessera asm`) and written by `disassemble` (`tessera
disasm`). One item per line; `;` starts a comment that runs to the end of the line (inside
`[...]` a `;` is part of a pattern); blank lines and extra spaces are ignored.

Directives:

| directive | meaning |
|---|---|
| `.preset default` | the machine preset (default: `default`) |
| `.hbm 65536` | HBM size in bytes (default: 0) |
| `.tensor x input f32 [128, 64] @0` | a tensor: name (bare identifier or a quoted string), role, dtype, shape, byte offset; in table order |
| `.source \"kernel.tsr\"` | the source file name (quoted, with Rust string escapes) |
| `.locs` | the program carries a location table (implied by any `.loc`) |
| `.origin \"/src/k.tsr\" kernel matmul` | the program's origin: source path (quoted) and kernel name (bare or quoted); the `.origin-*` lines after it complete it |
| `.origin-sha3 00ff...` | the SHA3-256 digest of the source, 64 hexadecimal digits (required with `.origin`) |
| `.origin-define N 128` | one `-D` size override of the origin, in order |
| `.origin-dtype-policy strict` | the origin's dtype policy: `wide` or `strict` |
| `.origin-disable-pass fusion` | one disabled pass of the origin, in order |
| `.stream tensor` | the following instructions belong to this stream: `tensor`, `vector`, `scalar`, `gpsimd`, `dma0` .. `dma15` |
| `.loc 12:5` | the source line and column of the next instruction |

Instructions: `[wait(sN>=V, ...)] MNEMONIC field=value, field=value, ... [signal(sN)]`.
Fields are written in table order by the disassembler; the assembler accepts any order but
each field exactly once. A stream that holds only `end` may be left out, and is then `end`.
Streams may be given in any order, each once.

Canonical text (what `disassemble` writes, and what `assemble` followed by `disassemble`
reproduces exactly): `.preset`, `.hbm`, the `.tensor` lines, `.source` and `.locs` when
present, the origin lines when there is an origin (`.origin`, `.origin-sha3`, one
`.origin-define` per define, `.origin-dtype-policy`, one `.origin-disable-pass` per pass),
then for every stream that holds more than a plain `end`, a blank line, `.stream
NAME` and its instructions indented by four spaces, each preceded by its `.loc` if it has
one. For every program that passes the verifier, `assemble(disassemble(p)) == p`.

Example:

```text
{EXAMPLE_PROGRAM}```

## Verifier rules

`verify` reports every violation with its stream and instruction index:

- The program has exactly {NUM_STREAMS} streams; each ends with exactly one `end` and nothing
  follows it; each opcode runs only on the engines listed for it.
- At most {MAX_WAITS} waits; every semaphore index is below the preset's semaphore count.
- Tiles: 1 to {MAX_TILE_DIMS} free dimensions, every size at least 1, 1 to 128 partitions,
  the start-partition rule above, every byte touched (from the sizes and signed strides)
  inside the partition's memory, and a PSUM tile inside one bank.
- HBM patterns: 1 to {MAX_HBM_DIMS} dimensions, sizes at least 1, every byte inside
  `hbm_size`. Tensors lie inside `hbm_size`, do not overlap, and have distinct names.
- DMA: tile sides are in SBUF (never PSUM), and at least one side is a tile
  (`docs/machine.md`: DMA moves data between HBM and SBUF, and SBUF to SBUF); both sides
  have the same number of elements.
- GpSimd instructions do not touch PSUM.
- The per-opcode shape rules stated in each instruction's description below.
- When the program has a location table, it has one list per stream and one entry per
  instruction.

The interpreter adds limits of its own (`runtime::Limits`), reported as errors when a
program is loaded or run, not by `verify`: HBM of at most 16 GiB, at most 2^26 elements
touched by one instruction, and the instruction and cycle limits of a run.

## Instructions

| opcode | mnemonic | engines | fields |
|---|---|---|---|
",
        magic_hex = hex(&MAGIC),
    );
    for &op in Opcode::ALL {
        let fields: Vec<&str> = field_docs(op).iter().map(|f| f.name).collect();
        let _ = writeln!(
            out,
            "| `{:#04x}` | [`{}`](#{}-opcode-{:#04x}) | {} | {} |",
            op as u8,
            op.mnemonic(),
            op.mnemonic(),
            op as u8,
            op.engines().names().join(", "),
            fields.join(", ")
        );
    }
    out.push('\n');
    for &op in Opcode::ALL {
        opcode_section(&mut out, op);
    }
    while out.ends_with("\n\n") {
        out.pop();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every opcode has exactly one example, written canonically, that verifies when placed
    /// on an engine that may run it.
    #[test]
    fn examples_cover_every_opcode_and_verify() {
        for &opcode in Opcode::ALL {
            let found: Vec<Inst> = EXAMPLES
                .iter()
                .map(|t| t.parse::<Inst>().unwrap_or_else(|e| panic!("{t}: {e}")))
                .filter(|i| i.op.opcode() == opcode)
                .collect();
            assert_eq!(found.len(), 1, "examples of {}", opcode.mnemonic());
        }
        for text in EXAMPLES {
            let inst: Inst = text.parse().expect("parses");
            assert_eq!(&inst.to_string(), text, "example is not canonical");
            let engine = Engine::all()
                .find(|e| inst.op.opcode().engines().contains(e.class()))
                .expect("an engine runs it");
            let mut p = crate::Program::new(Preset::Default);
            p.hbm_size = 1 << 20;
            if inst.op.opcode() != Opcode::End {
                p.streams[engine.index()].insert(0, inst.clone());
            }
            assert_eq!(crate::verify(&p), Ok(()), "{text}");
        }
    }

    #[test]
    fn example_program_is_canonical_and_valid() {
        let p = crate::assemble(EXAMPLE_PROGRAM).expect("assembles");
        assert_eq!(crate::verify(&p), Ok(()));
        assert_eq!(crate::disassemble(&p), EXAMPLE_PROGRAM);
    }
}
