//! The binary encoding: single instructions and the `.tbin` program container.
//!
//! An instruction is its opcode byte, a sync header, then each field of the table entry in
//! table order, each encoded by its type's [`Encode`] implementation (little-endian,
//! fixed-width integers). The encoder and decoder of every opcode are generated from
//! `for_each_op!`, so they cannot drift from the table. `ISA.md` documents the bytes.
//!
//! Decoding treats its input as untrusted: it never panics, never allocates more than the
//! input can justify (every declared count is checked against the bytes that remain before
//! anything is reserved), and reports each kind of malformation as its own [`DecodeError`]
//! with the byte offset where it was found.

use crate::{
    for_each_op, ActFunc, Affine, AluOp, CmpOp, Dim, DmaAp, Dtype, Engine, HbmAp, HbmDim, Imm,
    Inst, Mem, Op, Opcode, Origin, Preset, Program, ReduceOp, Role, ScalarArg, SrcLoc, Sync,
    TensorDecl, TileAp, MAX_HBM_DIMS, MAX_TENSOR_RANK, MAX_TILE_DIMS, MAX_WAITS, NUM_STREAMS,
    SOURCE_HASH_BYTES,
};

/// The first eight bytes of every `.tbin` file.
pub const MAGIC: [u8; 8] = *b"TESSERA\0";
/// The version of the `.tbin` format this crate writes. Version 2 added the origin section
/// after the debug section; version 1 files (which end after the debug section) still load,
/// without an origin.
pub const FORMAT_VERSION: u16 = 2;
/// The oldest `.tbin` format version this crate reads.
pub const MIN_FORMAT_VERSION: u16 = 1;

/// Bit of the sync header that says a signal byte follows the waits.
const SYNC_SIGNAL_BIT: u8 = 0x08;
/// Bits of the sync header that hold the number of waits.
const SYNC_WAITS_MASK: u8 = 0x07;

/// Why a byte string is not a valid instruction or `.tbin` program. Every variant carries
/// the byte offset (from the start of the input) where the problem was found.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("unexpected end of input at byte {offset}: {needed} more byte(s) needed for {what}")]
    Truncated {
        offset: usize,
        needed: usize,
        what: &'static str,
    },
    #[error("bad magic at byte 0: expected {expected:02x?} (\"TESSERA\\0\"), found {found:02x?}; not a .tbin file")]
    BadMagic { found: Vec<u8>, expected: [u8; 8] },
    #[error("unsupported .tbin format version {found} at byte {offset} (this build reads versions {MIN_FORMAT_VERSION} to {expected})")]
    BadVersion {
        offset: usize,
        found: u16,
        expected: u16,
    },
    #[error("unknown machine preset id {id} at byte {offset}")]
    UnknownPreset { offset: usize, id: u16 },
    #[error("unknown opcode byte {byte:#04x} at byte {offset}")]
    UnknownOpcode { offset: usize, byte: u8 },
    #[error("invalid {what} byte {value:#04x} at byte {offset}")]
    BadEnum {
        offset: usize,
        what: &'static str,
        value: u8,
    },
    #[error("{count} trailing byte(s) after the end of the {what} at byte {offset}")]
    TrailingBytes {
        offset: usize,
        count: usize,
        what: &'static str,
    },
    #[error("invalid UTF-8 in {what} at byte {offset}")]
    InvalidUtf8 { offset: usize, what: &'static str },
    #[error("too many dimensions in {what} at byte {offset}: {count} (at most {max})")]
    TooManyDims {
        offset: usize,
        what: &'static str,
        count: usize,
        max: usize,
    },
    #[error("too many semaphore waits at byte {offset}: {count} (at most {max})")]
    TooManyWaits {
        offset: usize,
        count: usize,
        max: usize,
    },
    #[error("reserved bits set in sync header byte {byte:#04x} at byte {offset}")]
    ReservedBits { offset: usize, byte: u8 },
    #[error("declared {what} count {count} at byte {offset} cannot fit in the {remaining} byte(s) that remain")]
    LengthTooLarge {
        offset: usize,
        what: &'static str,
        count: u64,
        remaining: usize,
    },
    #[error("wrong stream count {found} at byte {offset} (a program has {expected} streams)")]
    StreamCount {
        offset: usize,
        found: u8,
        expected: usize,
    },
    #[error("stream {index} at byte {offset} has engine id {found}, expected {index}")]
    StreamEngine {
        offset: usize,
        index: usize,
        found: u8,
    },
}

/// A cursor over untrusted bytes with an end limit; all offsets are absolute positions in
/// the original input, so errors point into the file.
pub(crate) struct Reader<'a> {
    data: &'a [u8],
    pos: usize,
    end: usize,
}

impl<'a> Reader<'a> {
    /// A reader over the whole of `data`.
    pub(crate) fn new(data: &'a [u8]) -> Reader<'a> {
        Reader {
            data,
            pos: 0,
            end: data.len(),
        }
    }

    /// The offset of the next byte.
    pub(crate) fn offset(&self) -> usize {
        self.pos
    }

    /// The number of bytes left before the limit.
    pub(crate) fn remaining(&self) -> usize {
        self.end - self.pos
    }

    /// Takes the next `n` bytes, or reports what was being read when the input ends.
    pub(crate) fn take(&mut self, n: usize, what: &'static str) -> Result<&'a [u8], DecodeError> {
        if n > self.remaining() {
            return Err(DecodeError::Truncated {
                offset: self.pos,
                needed: n - self.remaining(),
                what,
            });
        }
        let bytes = &self.data[self.pos..self.pos + n];
        self.pos += n;
        Ok(bytes)
    }

    /// Takes exactly `N` bytes as an array.
    fn array<const N: usize>(&mut self, what: &'static str) -> Result<[u8; N], DecodeError> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N, what)?);
        Ok(out)
    }

    pub(crate) fn u8(&mut self, what: &'static str) -> Result<u8, DecodeError> {
        Ok(self.array::<1>(what)?[0])
    }

    pub(crate) fn u16(&mut self, what: &'static str) -> Result<u16, DecodeError> {
        Ok(u16::from_le_bytes(self.array(what)?))
    }

    pub(crate) fn u32(&mut self, what: &'static str) -> Result<u32, DecodeError> {
        Ok(u32::from_le_bytes(self.array(what)?))
    }

    pub(crate) fn i32(&mut self, what: &'static str) -> Result<i32, DecodeError> {
        Ok(i32::from_le_bytes(self.array(what)?))
    }

    pub(crate) fn u64(&mut self, what: &'static str) -> Result<u64, DecodeError> {
        Ok(u64::from_le_bytes(self.array(what)?))
    }

    pub(crate) fn i64(&mut self, what: &'static str) -> Result<i64, DecodeError> {
        Ok(i64::from_le_bytes(self.array(what)?))
    }

    /// Reads a one-byte enum code and maps it, reporting a bad byte as [`DecodeError::BadEnum`].
    fn code<T>(
        &mut self,
        what: &'static str,
        from_code: impl Fn(u8) -> Option<T>,
    ) -> Result<T, DecodeError> {
        let offset = self.pos;
        let value = self.u8(what)?;
        from_code(value).ok_or(DecodeError::BadEnum {
            offset,
            what,
            value,
        })
    }

    /// Checks that `count` items of at least `min_size` bytes each can still follow, so
    /// that a hostile count never drives an allocation. Returns the count as `usize`.
    fn count(
        &mut self,
        count: u64,
        min_size: usize,
        offset: usize,
        what: &'static str,
    ) -> Result<usize, DecodeError> {
        let fits = (count as u128) * (min_size.max(1) as u128) <= self.remaining() as u128;
        if !fits {
            return Err(DecodeError::LengthTooLarge {
                offset,
                what,
                count,
                remaining: self.remaining(),
            });
        }
        // The check above bounds `count` by the input length, so it fits in `usize`.
        Ok(count as usize)
    }

    /// Reads a length-prefixed (u32) UTF-8 string.
    fn string(&mut self, what: &'static str) -> Result<String, DecodeError> {
        let offset = self.pos;
        let len = self.u32(what)?;
        let len = self.count(len as u64, 1, offset, what)?;
        let start = self.pos;
        let bytes = self.take(len, what)?;
        match std::str::from_utf8(bytes) {
            Ok(s) => Ok(s.to_owned()),
            Err(e) => Err(DecodeError::InvalidUtf8 {
                offset: start + e.valid_up_to(),
                what,
            }),
        }
    }

    /// Reads a dimension count byte and checks it against `max`.
    fn dim_count(&mut self, what: &'static str, max: usize) -> Result<usize, DecodeError> {
        let offset = self.pos;
        let count = self.u8(what)? as usize;
        if count > max {
            return Err(DecodeError::TooManyDims {
                offset,
                what,
                count,
                max,
            });
        }
        Ok(count)
    }
}

/// Clamps a count to its one-byte field. Only invalid programs (which `verify` rejects)
/// have counts this large; clamping keeps the output well-formed instead of panicking.
fn count_u8(n: usize) -> u8 {
    n.min(u8::MAX as usize) as u8
}

/// Clamps a count to its four-byte field, as [`count_u8`] does.
fn count_u32(n: usize) -> u32 {
    n.min(u32::MAX as usize) as u32
}

/// Writes a length-prefixed (u32) UTF-8 string (clamped to 4 GiB, see [`count_u32`]).
fn put_string(out: &mut Vec<u8>, s: &str) {
    let bytes = s.as_bytes();
    let len = count_u32(bytes.len());
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(&bytes[..len as usize]);
}

/// The binary form of an operand type: written after the opcode and sync header, in table
/// order. `ISA.md` documents each implementation byte by byte.
pub(crate) trait Encode: Sized {
    /// Appends the encoding of `self`.
    fn encode(&self, out: &mut Vec<u8>);
    /// Reads one value, never panicking on malformed bytes.
    fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError>;
}

impl Encode for bool {
    fn encode(&self, out: &mut Vec<u8>) {
        out.push(*self as u8);
    }
    fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        r.code("bool", |b| match b {
            0 => Some(false),
            1 => Some(true),
            _ => None,
        })
    }
}

/// Implements [`Encode`] for the one-byte enums with `code` / `from_code`.
macro_rules! encode_enum {
    ($($ty:ident),*) => {$(
        impl Encode for $ty {
            fn encode(&self, out: &mut Vec<u8>) {
                out.push(self.code());
            }
            fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
                r.code($ty::KIND, $ty::from_code)
            }
        }
    )*};
}

encode_enum!(AluOp, ReduceOp, ActFunc, CmpOp, Mem, Role);

impl Encode for Dtype {
    fn encode(&self, out: &mut Vec<u8>) {
        out.push(*self as u8);
    }
    fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        r.code("dtype", Dtype::from_code)
    }
}

impl Encode for Imm {
    fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.0.to_le_bytes());
    }
    fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        Ok(Imm(r.u32("f32 immediate")?))
    }
}

impl Encode for TileAp {
    fn encode(&self, out: &mut Vec<u8>) {
        self.mem.encode(out);
        self.dtype.encode(out);
        out.push(self.partition);
        out.push(self.partitions);
        out.extend_from_slice(&self.offset.to_le_bytes());
        let n = count_u8(self.dims.len());
        out.push(n);
        for d in self.dims.iter().take(n as usize) {
            out.extend_from_slice(&d.size.to_le_bytes());
            out.extend_from_slice(&d.stride.to_le_bytes());
        }
    }
    fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let mem = Mem::decode(r)?;
        let dtype = Dtype::decode(r)?;
        let partition = r.u8("tile start partition")?;
        let partitions = r.u8("tile partition count")?;
        let offset = r.u32("tile byte offset")?;
        let n = r.dim_count("tile access pattern", MAX_TILE_DIMS)?;
        let mut dims = smallvec::SmallVec::new();
        for _ in 0..n {
            let size = r.u32("tile dimension size")?;
            let stride = r.i32("tile dimension stride")?;
            dims.push(Dim { size, stride });
        }
        Ok(TileAp {
            mem,
            dtype,
            partition,
            partitions,
            offset,
            dims,
        })
    }
}

impl Encode for HbmAp {
    fn encode(&self, out: &mut Vec<u8>) {
        self.dtype.encode(out);
        out.extend_from_slice(&self.offset.to_le_bytes());
        let n = count_u8(self.dims.len());
        out.push(n);
        for d in self.dims.iter().take(n as usize) {
            out.extend_from_slice(&d.size.to_le_bytes());
            out.extend_from_slice(&d.stride.to_le_bytes());
        }
    }
    fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let dtype = Dtype::decode(r)?;
        let offset = r.u64("HBM byte offset")?;
        let n = r.dim_count("HBM access pattern", MAX_HBM_DIMS)?;
        let mut dims = smallvec::SmallVec::new();
        for _ in 0..n {
            let size = r.u64("HBM dimension size")?;
            let stride = r.i64("HBM dimension stride")?;
            dims.push(HbmDim { size, stride });
        }
        Ok(HbmAp {
            dtype,
            offset,
            dims,
        })
    }
}

impl Encode for DmaAp {
    fn encode(&self, out: &mut Vec<u8>) {
        match self {
            DmaAp::Hbm(ap) => {
                out.push(0);
                ap.encode(out);
            }
            DmaAp::Tile(ap) => {
                out.push(1);
                ap.encode(out);
            }
        }
    }
    fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        match r.code("DMA side tag", |b| (b <= 1).then_some(b))? {
            0 => Ok(DmaAp::Hbm(HbmAp::decode(r)?)),
            _ => Ok(DmaAp::Tile(TileAp::decode(r)?)),
        }
    }
}

impl Encode for ScalarArg {
    fn encode(&self, out: &mut Vec<u8>) {
        match self {
            ScalarArg::Imm(imm) => {
                out.push(0);
                imm.encode(out);
            }
            ScalarArg::Ap(ap) => {
                out.push(1);
                ap.encode(out);
            }
        }
    }
    fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        match r.code("scalar argument tag", |b| (b <= 1).then_some(b))? {
            0 => Ok(ScalarArg::Imm(Imm::decode(r)?)),
            _ => Ok(ScalarArg::Ap(TileAp::decode(r)?)),
        }
    }
}

impl Encode for Option<TileAp> {
    fn encode(&self, out: &mut Vec<u8>) {
        match self {
            None => out.push(0),
            Some(ap) => {
                out.push(1);
                ap.encode(out);
            }
        }
    }
    fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        match r.code("optional tile tag", |b| (b <= 1).then_some(b))? {
            0 => Ok(None),
            _ => Ok(Some(TileAp::decode(r)?)),
        }
    }
}

impl Encode for Affine {
    fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.base.to_le_bytes());
        out.extend_from_slice(&self.partition_step.to_le_bytes());
        let n = count_u8(self.steps.len());
        out.push(n);
        for s in self.steps.iter().take(n as usize) {
            out.extend_from_slice(&s.to_le_bytes());
        }
    }
    fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let base = r.i32("affine base")?;
        let partition_step = r.i32("affine partition step")?;
        let n = r.dim_count("affine expression", MAX_TILE_DIMS)?;
        let mut steps = smallvec::SmallVec::new();
        for _ in 0..n {
            steps.push(r.i32("affine step")?);
        }
        Ok(Affine {
            base,
            partition_step,
            steps,
        })
    }
}

impl Encode for Sync {
    fn encode(&self, out: &mut Vec<u8>) {
        let n = self.waits.len().min(SYNC_WAITS_MASK as usize);
        let mut header = n as u8;
        if self.signal.is_some() {
            header |= SYNC_SIGNAL_BIT;
        }
        out.push(header);
        for &(sem, value) in self.waits.iter().take(n) {
            out.push(sem);
            out.extend_from_slice(&value.to_le_bytes());
        }
        if let Some(sem) = self.signal {
            out.push(sem);
        }
    }
    fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let offset = r.offset();
        let header = r.u8("sync header")?;
        if header & !(SYNC_WAITS_MASK | SYNC_SIGNAL_BIT) != 0 {
            return Err(DecodeError::ReservedBits {
                offset,
                byte: header,
            });
        }
        let n = (header & SYNC_WAITS_MASK) as usize;
        if n > MAX_WAITS {
            return Err(DecodeError::TooManyWaits {
                offset,
                count: n,
                max: MAX_WAITS,
            });
        }
        let mut waits = smallvec::SmallVec::new();
        for _ in 0..n {
            let sem = r.u8("wait semaphore")?;
            let value = r.u32("wait value")?;
            waits.push((sem, value));
        }
        let signal = if header & SYNC_SIGNAL_BIT != 0 {
            Some(r.u8("signal semaphore")?)
        } else {
            None
        };
        Ok(Sync { waits, signal })
    }
}

/// Generates the per-opcode field encoder and decoder from the table.
macro_rules! define_op_codec {
    ($(
        $(#[doc = $doc:literal])*
        $name:ident = $code:literal, $mnemonic:literal, $engines:expr, { $($field:ident : $ty:ty),* $(,)? };
    )*) => {
        /// Appends the fields of `op` in table order.
        fn encode_fields(op: &Op, out: &mut Vec<u8>) {
            match op {
                $(Op::$name { $($field),* } => {
                    $(<$ty as Encode>::encode($field, out);)*
                    let _ = &out;
                })*
            }
        }

        /// Reads the fields of an `opcode` in table order.
        fn decode_fields(opcode: Opcode, r: &mut Reader<'_>) -> Result<Op, DecodeError> {
            let _ = &r;
            Ok(match opcode {
                $(Opcode::$name => Op::$name { $($field: <$ty as Encode>::decode(r)?),* },)*
            })
        }
    };
}

for_each_op!(define_op_codec);

impl Encode for Inst {
    fn encode(&self, out: &mut Vec<u8>) {
        out.push(self.op.opcode() as u8);
        self.sync.encode(out);
        encode_fields(&self.op, out);
    }
    fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let offset = r.offset();
        let byte = r.u8("opcode")?;
        let opcode = Opcode::from_byte(byte).ok_or(DecodeError::UnknownOpcode { offset, byte })?;
        let sync = Sync::decode(r)?;
        let op = decode_fields(opcode, r)?;
        Ok(Inst { sync, op })
    }
}

/// Appends the binary encoding of one instruction to `out`.
pub fn encode_inst(inst: &Inst, out: &mut Vec<u8>) {
    inst.encode(out);
}

/// Decodes one instruction from the start of `bytes`, returning it and the number of bytes
/// it took. Offsets in errors count from the start of `bytes`.
pub fn decode_inst(bytes: &[u8]) -> Result<(Inst, usize), DecodeError> {
    let mut r = Reader::new(bytes);
    let inst = Inst::decode(&mut r)?;
    Ok((inst, r.offset()))
}

/// The smallest encoding of an instruction: opcode byte and sync header.
const MIN_INST_BYTES: usize = 2;
/// The smallest encoding of a tensor declaration: role, dtype, empty name, rank 0, offset.
const MIN_TENSOR_BYTES: usize = 1 + 1 + 4 + 1 + 8;
/// The smallest encoding of one stream's location list: its count.
const MIN_LOC_STREAM_BYTES: usize = 4;
/// The smallest encoding of an origin's define: an empty name and the value.
const MIN_DEFINE_BYTES: usize = 4 + 8;
/// The smallest encoding of an origin's disabled pass: an empty name.
const MIN_PASS_NAME_BYTES: usize = 4;

/// Encodes a program as a `.tbin` file (the format is documented in `ISA.md`).
///
/// Every program that passes [`crate::verify`] round-trips exactly through
/// [`decode_program`]. Encoding never fails or panics; a program whose counts overflow
/// their fields (more than 7 waits, 255 dims, 4 GiB of name, `u32::MAX` instructions) is
/// clamped to a well-formed file that does not round-trip, which `verify` rejects anyway.
pub fn encode_program(program: &Program) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(&MAGIC);
    out.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
    out.extend_from_slice(&(program.preset as u16).to_le_bytes());
    out.extend_from_slice(&program.hbm_size.to_le_bytes());

    let n_tensors = count_u32(program.tensors.len());
    out.extend_from_slice(&n_tensors.to_le_bytes());
    for t in program.tensors.iter().take(n_tensors as usize) {
        t.role.encode(&mut out);
        t.dtype.encode(&mut out);
        put_string(&mut out, &t.name);
        let rank = count_u8(t.shape.len());
        out.push(rank);
        for d in t.shape.iter().take(rank as usize) {
            out.extend_from_slice(&d.to_le_bytes());
        }
        out.extend_from_slice(&t.offset.to_le_bytes());
    }

    let n_streams = count_u8(program.streams.len());
    out.push(n_streams);
    for (index, stream) in program.streams.iter().take(n_streams as usize).enumerate() {
        let mut bytes = Vec::new();
        let n = count_u32(stream.len());
        for inst in stream.iter().take(n as usize) {
            inst.encode(&mut bytes);
        }
        out.push(count_u8(index));
        out.extend_from_slice(&count_u32(bytes.len()).to_le_bytes());
        out.extend_from_slice(&n.to_le_bytes());
        out.extend_from_slice(&bytes);
    }

    if program.source.is_none() && program.locs.is_empty() {
        out.push(0);
    } else {
        out.push(1);
        match &program.source {
            None => out.push(0),
            Some(name) => {
                out.push(1);
                put_string(&mut out, name);
            }
        }
        let n_loc_streams = count_u32(program.locs.len());
        out.extend_from_slice(&n_loc_streams.to_le_bytes());
        for stream in program.locs.iter().take(n_loc_streams as usize) {
            let n = count_u32(stream.len());
            out.extend_from_slice(&n.to_le_bytes());
            for loc in stream.iter().take(n as usize) {
                match loc {
                    None => out.push(0),
                    Some(loc) => {
                        out.push(1);
                        out.extend_from_slice(&loc.line.to_le_bytes());
                        out.extend_from_slice(&loc.col.to_le_bytes());
                    }
                }
            }
        }
    }

    match &program.origin {
        None => out.push(0),
        Some(origin) => {
            out.push(1);
            encode_origin(origin, &mut out);
        }
    }
    out
}

/// Appends the origin section's body (after its flag byte); see `ISA.md`.
fn encode_origin(origin: &Origin, out: &mut Vec<u8>) {
    put_string(out, &origin.path);
    out.extend_from_slice(&origin.source_sha3);
    put_string(out, &origin.kernel);
    let n = count_u32(origin.defines.len());
    out.extend_from_slice(&n.to_le_bytes());
    for (name, value) in origin.defines.iter().take(n as usize) {
        put_string(out, name);
        out.extend_from_slice(&value.to_le_bytes());
    }
    out.push(origin.strict_dtypes as u8);
    let n = count_u32(origin.disabled_passes.len());
    out.extend_from_slice(&n.to_le_bytes());
    for name in origin.disabled_passes.iter().take(n as usize) {
        put_string(out, name);
    }
}

/// Reads the origin section's body (after its flag byte), never panicking and never
/// allocating more than the remaining bytes justify.
fn decode_origin(r: &mut Reader<'_>) -> Result<Origin, DecodeError> {
    let path = r.string("origin source path")?;
    let source_sha3 = r.array::<SOURCE_HASH_BYTES>("origin source hash")?;
    let kernel = r.string("origin kernel name")?;
    let offset = r.offset();
    let n = r.u32("origin define count")?;
    let n = r.count(n as u64, MIN_DEFINE_BYTES, offset, "origin define")?;
    let mut defines = Vec::with_capacity(n);
    for _ in 0..n {
        let name = r.string("origin define name")?;
        let value = r.i64("origin define value")?;
        defines.push((name, value));
    }
    let strict_dtypes = r.code("origin dtype policy", |b| (b <= 1).then_some(b == 1))?;
    let offset = r.offset();
    let n = r.u32("origin disabled pass count")?;
    let n = r.count(
        n as u64,
        MIN_PASS_NAME_BYTES,
        offset,
        "origin disabled pass",
    )?;
    let mut disabled_passes = Vec::with_capacity(n);
    for _ in 0..n {
        disabled_passes.push(r.string("origin disabled pass name")?);
    }
    Ok(Origin {
        path,
        source_sha3,
        kernel,
        defines,
        strict_dtypes,
        disabled_passes,
    })
}

/// Decodes a `.tbin` file. Never panics; every malformation is a [`DecodeError`] with the
/// byte offset where it was found. The result is well-formed but not verified: call
/// [`crate::verify`] before running it.
pub fn decode_program(bytes: &[u8]) -> Result<Program, DecodeError> {
    let mut r = Reader::new(bytes);
    let head = &bytes[..MAGIC.len().min(bytes.len())];
    if head.len() < MAGIC.len() && MAGIC.starts_with(head) {
        // A prefix of the magic is a truncated file, not a foreign one.
        r.take(MAGIC.len(), "magic")?;
    }
    let magic = r.take(head.len(), "magic")?;
    if magic != MAGIC {
        return Err(DecodeError::BadMagic {
            found: magic.to_vec(),
            expected: MAGIC,
        });
    }
    let offset = r.offset();
    let version = r.u16("format version")?;
    if !(MIN_FORMAT_VERSION..=FORMAT_VERSION).contains(&version) {
        return Err(DecodeError::BadVersion {
            offset,
            found: version,
            expected: FORMAT_VERSION,
        });
    }
    let offset = r.offset();
    let id = r.u16("preset id")?;
    let preset = Preset::from_id(id).ok_or(DecodeError::UnknownPreset { offset, id })?;
    let hbm_size = r.u64("HBM size")?;

    let offset = r.offset();
    let n = r.u32("tensor count")?;
    let n = r.count(n as u64, MIN_TENSOR_BYTES, offset, "tensor")?;
    let mut tensors = Vec::with_capacity(n);
    for _ in 0..n {
        let role = Role::decode(&mut r)?;
        let dtype = Dtype::decode(&mut r)?;
        let name = r.string("tensor name")?;
        let rank = r.dim_count("tensor shape", MAX_TENSOR_RANK)?;
        let mut shape = Vec::with_capacity(rank);
        for _ in 0..rank {
            shape.push(r.u64("tensor dimension")?);
        }
        let offset = r.u64("tensor offset")?;
        tensors.push(TensorDecl {
            name,
            role,
            dtype,
            shape,
            offset,
        });
    }

    let offset = r.offset();
    let found = r.u8("stream count")?;
    if found as usize != NUM_STREAMS {
        return Err(DecodeError::StreamCount {
            offset,
            found,
            expected: NUM_STREAMS,
        });
    }
    let mut streams = Vec::with_capacity(NUM_STREAMS);
    for index in 0..NUM_STREAMS {
        let offset = r.offset();
        let engine = r.u8("stream engine id")?;
        if Engine::from_index(engine as usize).map(Engine::index) != Some(index) {
            return Err(DecodeError::StreamEngine {
                offset,
                index,
                found: engine,
            });
        }
        let len_offset = r.offset();
        let len = r.u32("stream byte length")?;
        let count_offset = r.offset();
        let count = r.u32("stream instruction count")?;
        // Checked only now that both header fields are read, so `len` is bounded by the
        // bytes that really follow the header.
        let len = r.count(len as u64, 1, len_offset, "stream byte")?;
        let mut sub = Reader {
            data: r.data,
            pos: r.pos,
            end: r.pos + len,
        };
        let count = sub.count(count as u64, MIN_INST_BYTES, count_offset, "instruction")?;
        let mut stream = Vec::with_capacity(count);
        for _ in 0..count {
            stream.push(Inst::decode(&mut sub)?);
        }
        if sub.remaining() != 0 {
            return Err(DecodeError::TrailingBytes {
                offset: sub.offset(),
                count: sub.remaining(),
                what: "stream's instructions",
            });
        }
        r.pos = sub.pos;
        streams.push(stream);
    }

    let mut source = None;
    let mut locs = Vec::new();
    let has_debug = r.code("debug section flag", |b| (b <= 1).then_some(b == 1))?;
    if has_debug {
        if r.code("source name flag", |b| (b <= 1).then_some(b == 1))? {
            source = Some(r.string("source file name")?);
        }
        let offset = r.offset();
        let n = r.u32("location stream count")?;
        let n = r.count(n as u64, MIN_LOC_STREAM_BYTES, offset, "location stream")?;
        locs.reserve(n);
        for _ in 0..n {
            let offset = r.offset();
            let count = r.u32("location count")?;
            let count = r.count(count as u64, 1, offset, "location")?;
            let mut stream = Vec::with_capacity(count);
            for _ in 0..count {
                let loc = if r.code("location tag", |b| (b <= 1).then_some(b == 1))? {
                    let line = r.u32("location line")?;
                    let col = r.u32("location column")?;
                    Some(SrcLoc { line, col })
                } else {
                    None
                };
                stream.push(loc);
            }
            locs.push(stream);
        }
    }
    // Version 1 ends after the debug section; version 2 adds the origin section.
    let mut origin = None;
    if version >= 2 && r.code("origin section flag", |b| (b <= 1).then_some(b == 1))? {
        origin = Some(decode_origin(&mut r)?);
    }
    if r.remaining() != 0 {
        return Err(DecodeError::TrailingBytes {
            offset: r.offset(),
            count: r.remaining(),
            what: "program",
        });
    }
    Ok(Program {
        preset,
        hbm_size,
        tensors,
        streams,
        source,
        locs,
        origin,
    })
}
