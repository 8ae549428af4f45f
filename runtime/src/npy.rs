//! Reading and writing NumPy `.npy` files: the inputs and outputs of `tessera run`.
//!
//! Written by hand rather than with a crate so that every way a file can be wrong gets its
//! own precise error (see [`NpyError`]), and so that nothing in here can panic or allocate
//! more than the file's own size, whatever the input.
//!
//! Reading accepts format versions 1.0, 2.0 and 3.0 and these dtypes:
//!
//! - float16, float32 and float64 in little-endian (`'<f2'`, `'<f4'`, `'<f8'`), big-endian
//!   (`'>f2'`, ...) or native (`'=f2'`, ...: the byte order of the machine reading the
//!   file) byte order. float16 is exact in f32, and float64 is kept exactly, so that the
//!   caller rounds once ([`NpyArray::round_to`]). A float `descr` without a byte order
//!   (`'|f4'`, `'f4'`) is refused: NumPy itself always writes `'<f4'` or `'>f4'`.
//! - Untyped ("void") elements of 1 or 2 bytes (`'|V1'`, `'<V1'`, `'|V2'`, `'<V2'`, ...):
//!   what `numpy.save` writes for ml_dtypes' bfloat16 (2 bytes) and FP8 types (1 byte),
//!   whose names NumPy does not know. They are kept as raw bits and read as the formats
//!   of the caller's dtype of the same width ([`NpyArray::round_to`]); a 2-byte void is
//!   little-endian unless its `descr` says `'>'` (or `'='` on a big-endian machine).
//!
//! Both `fortran_order` values are accepted (Fortran-ordered data is returned in C order).
//! The header is parsed as the small subset of Python literals NumPy writes: a dict with
//! exactly the keys `descr`, `fortran_order` and `shape`.
//!
//! [`NpyReader`] reads a file as a stream: the header first, then no more data than the
//! header declares (and a bounded look past it for trailing bytes), so that a caller that
//! checks the declared shape first ([`NpyReader::shape`]) never hangs on an endless input
//! (`/dev/zero`, a pipe); [`read_npy`] reads a file already in memory.
//!
//! Writing mirrors `numpy.lib.format` (NumPy 1.24 and later) byte for byte: version 1.0
//! (2.0 only if the header does not fit a 16-bit length, as NumPy does), the header dict
//! with sorted keys, 21 minus the number of digits of the first axis spaces of growth room,
//! then spaces up to a multiple of 64 bytes and a final `'\n'`. Files are written with
//! [`write_file_atomic`], which the command line also uses for its other output files.

use std::fmt;
use std::io::{self, Read, Write};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

use isa::Dtype;

use crate::numeric;

/// An array read from a `.npy` file, in C (row-major) order.
#[derive(Clone, Debug, PartialEq)]
pub struct NpyArray {
    /// The dimensions, outermost first; empty for a 0-d array (one element).
    pub shape: Vec<u64>,
    pub data: NpyData,
}

/// The elements of an [`NpyArray`], in the file's element type.
#[derive(Clone, Debug, PartialEq)]
pub enum NpyData {
    /// float16, as its bit patterns.
    F16(Vec<u16>),
    F32(Vec<f32>),
    F64(Vec<f64>),
    /// Untyped 1-byte elements (`'|V1'`): the bits of an FP8 value, as ml_dtypes writes
    /// them.
    Void1(Vec<u8>),
    /// Untyped 2-byte elements (`'<V2'`): the bits of a bfloat16 (or float16) value, as
    /// ml_dtypes writes them.
    Void2(Vec<u16>),
    /// NumPy bools (`'|b1'`), one byte each; any nonzero byte is true.
    Bool(Vec<u8>),
    /// Integers (`'<i4'`, `'<i8'`, `'<i2'`, `'|i1'`, `'|u1'`, `'<u2'`, either byte order),
    /// widened to i64 exactly; the file's element type is kept for messages.
    Int {
        kind: IntKind,
        values: Vec<i64>,
    },
}

/// The integer element types a `.npy` input may have (for `i32` parameters).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IntKind {
    I8,
    I16,
    I32,
    I64,
    U8,
    U16,
}

impl NpyArray {
    /// The number of elements.
    pub fn len(&self) -> usize {
        match &self.data {
            NpyData::F16(v) | NpyData::Void2(v) => v.len(),
            NpyData::F32(v) => v.len(),
            NpyData::F64(v) => v.len(),
            NpyData::Void1(v) | NpyData::Bool(v) => v.len(),
            NpyData::Int { values, .. } => values.len(),
        }
    }

    /// True when the array has no element (some dimension is 0).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// NumPy's name of the element type: `float16`, `float32`, `float64`, `void8` or
    /// `void16`.
    pub fn dtype_name(&self) -> &'static str {
        self.kind().name()
    }

    fn kind(&self) -> Kind {
        match &self.data {
            NpyData::F16(_) => Kind::F16,
            NpyData::F32(_) => Kind::F32,
            NpyData::F64(_) => Kind::F64,
            NpyData::Void1(_) => Kind::Void1,
            NpyData::Void2(_) => Kind::Void2,
            NpyData::Bool(_) => Kind::Bool,
            NpyData::Int { kind, .. } => Kind::Int(*kind),
        }
    }

    /// The shape written as NumPy prints it, e.g. `(2, 3)`, `(5,)` or `()`.
    pub fn shape_string(&self) -> String {
        shape_repr(&self.shape)
    }

    /// Every element as a value of `dtype`, as exact f32 values.
    ///
    /// Float elements are rounded once to `dtype` with the language's rules (round to
    /// nearest even, see [`numeric::encode`]): float16 is exact in f32, and float64 is
    /// rounded directly, never through f32 first. Void elements are read bit for bit as
    /// `dtype`'s encoding, so `dtype` must have their width ([`check_void_width`]; a NaN
    /// encoding gives NaN, whose payload the machine does not keep).
    pub fn round_to(&self, dtype: Dtype) -> Result<Vec<f32>, NpyError> {
        check_void_width(self.kind(), dtype)?;
        let bits = |code: u32| numeric::decode(dtype, code);
        Ok(match &self.data {
            NpyData::F16(v) => v
                .iter()
                .map(|&c| numeric::round(dtype, numeric::decode(Dtype::F16, c.into())))
                .collect(),
            NpyData::F32(v) => v.iter().map(|&x| numeric::round(dtype, x)).collect(),
            NpyData::F64(v) => v.iter().map(|&x| numeric::round_f64(dtype, x)).collect(),
            NpyData::Void1(v) => v.iter().map(|&c| bits(c.into())).collect(),
            NpyData::Void2(v) => v.iter().map(|&c| bits(c.into())).collect(),
            NpyData::Bool(v) => v
                .iter()
                .map(|&c| numeric::round(dtype, f32::from(u8::from(c != 0))))
                .collect(),
            // `check_void_width` lets integers fill only `i32` parameters, which read them
            // with `to_i32`.
            NpyData::Int { .. } => {
                return Err(NpyError::IntMismatch {
                    descr: self.kind().name().to_string(),
                    dtype,
                })
            }
        })
    }

    /// Every element as an `i32`, for an `i32` parameter: integer elements whose values
    /// fit, exactly. Fails with [`NpyError::IntRange`] naming the first value outside the
    /// `i32` range, and with [`NpyError::IntMismatch`] for float, bool or void elements.
    pub fn to_i32(&self) -> Result<Vec<i32>, NpyError> {
        let NpyData::Int { values, .. } = &self.data else {
            return Err(NpyError::IntMismatch {
                descr: self.kind().name().to_string(),
                dtype: Dtype::I32,
            });
        };
        values
            .iter()
            .enumerate()
            .map(|(i, &v)| {
                i32::try_from(v).map_err(|_| NpyError::IntRange {
                    value: v,
                    index: i as u64,
                    dtype: self.kind().name(),
                })
            })
            .collect()
    }
}

/// Why a byte string is not a `.npy` file this reader accepts. Each case has its own
/// message, meant to be shown to the user as is.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum NpyError {
    #[error("not a .npy file: it does not start with the magic string \\x93NUMPY")]
    BadMagic,
    #[error(
        "unsupported .npy format version {major}.{minor}; versions 1.0, 2.0 and 3.0 are supported"
    )]
    UnsupportedVersion { major: u8, minor: u8 },
    #[error("truncated .npy file: the header needs {needed} bytes but the file has only {found}")]
    TruncatedHeader { needed: u64, found: u64 },
    #[error(
        "the .npy dtype {descr} does not fit a {dtype} parameter: a bool parameter takes a \
         bool .npy ('|b1'), and a bool .npy fills only a bool parameter"
    )]
    BoolMismatch { descr: String, dtype: Dtype },
    #[error(
        "the .npy dtype {descr} does not fit the {dtype} parameter: an i32 parameter takes an \
         integer .npy (int32, or int64, int16, int8, uint8 or uint16 whose values fit in \
         i32), and an integer .npy fills only an i32 parameter"
    )]
    IntMismatch { descr: String, dtype: Dtype },
    #[error(
        "the {dtype} value {value} (element {index} in C order) does not fit in i32 \
         (-2147483648 to 2147483647)"
    )]
    IntRange {
        value: i64,
        index: u64,
        dtype: &'static str,
    },
    #[error("malformed .npy header: {reason}")]
    MalformedHeader { reason: String },
    #[error(
        "unsupported .npy dtype {found}; accepted are '<f2' (float16), '<f4' (float32) and \
         '<f8' (float64), also big-endian ('>f4') or in the native byte order ('=f4'), and \
         the untyped '|V2' and '|V1' that ml_dtypes writes for bfloat16 and FP8; '|b1' (bool) \
         for bool parameters; '<i4', '<i8', '<i2', '|i1', '|u1' and '<u2' (either byte order) \
         for i32 parameters"
    )]
    UnsupportedDtype { found: String },
    #[error(
        "the .npy dtype {descr} holds untyped {width}-byte values, which are read bit for bit \
         as a dtype of that width ({fits}), but {dtype} has {size}-byte elements",
        fits = if *.width == 1 { "f8e4m3 or f8e5m2" } else { "bf16 or f16" },
        size = .dtype.size()
    )]
    VoidWidth {
        descr: String,
        width: u64,
        dtype: Dtype,
    },
    #[error("the .npy shape {shape} is too large: its size in bytes does not fit in 64 bits")]
    ShapeOverflow { shape: String },
    #[error(
        "truncated .npy data: shape {shape} of {dtype} needs {expected} bytes of data but the file has {found}"
    )]
    TruncatedData {
        shape: String,
        dtype: &'static str,
        expected: u64,
        found: u64,
    },
    #[error(
        ".npy file has {} bytes after its data: shape {shape} of {dtype} needs {expected} bytes of data but the file has {found}",
        .found - .expected
    )]
    TrailingData {
        shape: String,
        dtype: &'static str,
        expected: u64,
        found: u64,
    },
    #[error(
        ".npy data goes on past its end: shape {shape} of {dtype} needs {expected} bytes of data but the stream has more than {}",
        .expected + TRAILING_COUNT_LIMIT
    )]
    TrailingStream {
        shape: String,
        dtype: &'static str,
        expected: u64,
    },
    #[error("cannot read the .npy file: {message}")]
    Io { message: String },
}

/// Parses a whole `.npy` file held in memory.
pub fn read_npy(bytes: &[u8]) -> Result<NpyArray, NpyError> {
    NpyReader::new(bytes, Some(bytes.len() as u64))?.read_data()
}

/// A `.npy` stream whose header has been read and checked; [`NpyReader::read_data`] reads
/// its elements. Nothing is read beyond what the header declares (and, for a stream of
/// unknown length, a bounded look past the end to report trailing bytes).
pub struct NpyReader<R> {
    reader: R,
    header: Header,
    /// The data bytes the header's shape and dtype need.
    expected: u64,
    /// The stream's whole length, when known (a regular file, a byte slice).
    file_len: Option<u64>,
}

impl<R: Read> NpyReader<R> {
    /// Reads and checks the header of a `.npy` stream. `file_len` is the stream's whole
    /// length when known (a regular file): a data size that differs from the header's is
    /// then refused before any data is read.
    pub fn new(mut reader: R, file_len: Option<u64>) -> Result<NpyReader<R>, NpyError> {
        let mut prefix = Vec::with_capacity(V1_PREFIX_LEN + 2);
        read_up_to(&mut reader, &mut prefix, MAGIC.len() as u64)?;
        let found = |buf: &Vec<u8>| buf.len() as u64;
        if prefix.len() < MAGIC.len() {
            return Err(if MAGIC.starts_with(&prefix) {
                NpyError::TruncatedHeader {
                    needed: V1_PREFIX_LEN as u64,
                    found: found(&prefix),
                }
            } else {
                NpyError::BadMagic
            });
        }
        if prefix != MAGIC {
            return Err(NpyError::BadMagic);
        }
        read_up_to(&mut reader, &mut prefix, 2)?;
        let (major, minor) = match prefix.get(6..8) {
            Some(&[major, minor]) => (major, minor),
            _ => {
                return Err(NpyError::TruncatedHeader {
                    needed: V1_PREFIX_LEN as u64,
                    found: found(&prefix),
                })
            }
        };
        let version = match (major, minor) {
            (1, 0) => Version::V1,
            (2, 0) => Version::V2,
            (3, 0) => Version::V3,
            _ => return Err(NpyError::UnsupportedVersion { major, minor }),
        };
        let len_size = if version == Version::V1 { 2 } else { 4 };
        let prefix_len = 8 + len_size;
        read_up_to(&mut reader, &mut prefix, len_size as u64)?;
        let header_len = match prefix.get(8..prefix_len) {
            Some(&[a, b]) => u64::from(u16::from_le_bytes([a, b])),
            Some(&[a, b, c, d]) => u64::from(u32::from_le_bytes([a, b, c, d])),
            _ => {
                return Err(NpyError::TruncatedHeader {
                    needed: prefix_len as u64,
                    found: found(&prefix),
                })
            }
        };
        let header_end = prefix_len as u64 + header_len;
        if let Some(len) = file_len.filter(|&len| len < header_end) {
            return Err(NpyError::TruncatedHeader {
                needed: header_end,
                found: len,
            });
        }
        let mut raw_header = Vec::new();
        read_up_to(&mut reader, &mut raw_header, header_len)?;
        if (raw_header.len() as u64) < header_len {
            return Err(NpyError::TruncatedHeader {
                needed: header_end,
                found: prefix_len as u64 + raw_header.len() as u64,
            });
        }
        let header = parse_header(&raw_header, version)?;
        // A zero dimension makes the array empty however large the others are, so it is
        // checked before the product can overflow.
        let expected = if header.shape.contains(&0) {
            Some(0)
        } else {
            header
                .shape
                .iter()
                .try_fold(header.kind.size(), |acc, &d| acc.checked_mul(d))
        };
        let Some(expected) = expected else {
            return Err(NpyError::ShapeOverflow {
                shape: shape_repr(&header.shape),
            });
        };
        let reader = NpyReader {
            reader,
            header,
            expected,
            file_len,
        };
        if let Some(len) = file_len {
            reader.check_data_len(len.saturating_sub(header_end))?;
        }
        Ok(reader)
    }

    /// The dimensions the header declares, outermost first.
    pub fn shape(&self) -> &[u64] {
        &self.header.shape
    }

    /// The shape written as NumPy prints it, e.g. `(2, 3)`.
    pub fn shape_string(&self) -> String {
        shape_repr(&self.header.shape)
    }

    /// NumPy's name of the element type: `float16`, `float32`, `float64`, `void8` or
    /// `void16`.
    pub fn dtype_name(&self) -> &'static str {
        self.header.kind.name()
    }

    /// The `descr` string of the header, as the file gives it (`<f4`, `|V2`).
    pub fn descr(&self) -> &str {
        &self.header.descr
    }

    /// Fails with [`NpyError::VoidWidth`] when the file's elements are untyped and not as
    /// wide as `dtype`'s, so [`NpyArray::round_to`] could not read them as `dtype`. Cheap:
    /// a caller can check before reading the data.
    pub fn check_dtype(&self, dtype: Dtype) -> Result<(), NpyError> {
        check_void_width_of(self.header.kind, &format!("'{}'", self.header.descr), dtype)
    }

    /// Refuses data of `found` bytes when the header needs another number.
    fn check_data_len(&self, found: u64) -> Result<(), NpyError> {
        let expected = self.expected;
        if found == expected {
            return Ok(());
        }
        let (shape, dtype) = (self.shape_string(), self.dtype_name());
        Err(if found < expected {
            NpyError::TruncatedData {
                shape,
                dtype,
                expected,
                found,
            }
        } else {
            NpyError::TrailingData {
                shape,
                dtype,
                expected,
                found,
            }
        })
    }

    /// Reads the data the header declares, and checks that the stream ends there.
    pub fn read_data(mut self) -> Result<NpyArray, NpyError> {
        let mut data_bytes = Vec::new();
        if self.file_len.is_some() {
            // The length was checked against the file's, so this allocation is bounded by
            // the file's size.
            data_bytes.reserve_exact(usize::try_from(self.expected).unwrap_or(0));
        }
        read_up_to(&mut self.reader, &mut data_bytes, self.expected)?;
        let got = data_bytes.len() as u64;
        if got < self.expected {
            self.check_data_len(got)?;
        }
        // A stream must end with the data; count what follows, up to a limit.
        let mut rest = Vec::new();
        read_up_to(&mut self.reader, &mut rest, TRAILING_COUNT_LIMIT + 1)?;
        if rest.len() as u64 > TRAILING_COUNT_LIMIT {
            return Err(NpyError::TrailingStream {
                shape: self.shape_string(),
                dtype: self.dtype_name(),
                expected: self.expected,
            });
        }
        self.check_data_len(got + rest.len() as u64)?;
        // From here on the element count is bounded by the bytes read, so allocating the
        // elements is safe, and in a non-empty array every dimension fits a usize.
        let header = self.header;
        let dims: Vec<usize> = header
            .shape
            .iter()
            .map(|&d| usize::try_from(d).unwrap_or(usize::MAX))
            .collect();
        let big = header.big_endian;
        let fortran = header.fortran_order.then_some(&dims[..]);
        let data = match header.kind {
            Kind::F16 => NpyData::F16(decode(
                &data_bytes,
                big,
                fortran,
                u16::from_be_bytes,
                u16::from_le_bytes,
            )),
            Kind::Bool => NpyData::Bool(decode(
                &data_bytes,
                big,
                fortran,
                u8::from_be_bytes,
                u8::from_le_bytes,
            )),
            Kind::Void1 => NpyData::Void1(decode(
                &data_bytes,
                big,
                fortran,
                u8::from_be_bytes,
                u8::from_le_bytes,
            )),
            Kind::Void2 => NpyData::Void2(decode(
                &data_bytes,
                big,
                fortran,
                u16::from_be_bytes,
                u16::from_le_bytes,
            )),
            Kind::F32 => NpyData::F32(decode(
                &data_bytes,
                big,
                fortran,
                f32::from_be_bytes,
                f32::from_le_bytes,
            )),
            Kind::Int(kind) => NpyData::Int {
                kind,
                values: decode_int(kind, &data_bytes, big, fortran),
            },
            Kind::F64 => NpyData::F64(decode(
                &data_bytes,
                big,
                fortran,
                f64::from_be_bytes,
                f64::from_le_bytes,
            )),
        };
        Ok(NpyArray {
            shape: header.shape,
            data,
        })
    }
}

/// The elements of `N` bytes each in `bytes`, big- or little-endian, in C order (given
/// the dims when the file stores them in Fortran order).
fn decode<T: Copy, const N: usize>(
    bytes: &[u8],
    big: bool,
    fortran: Option<&[usize]>,
    from_be: fn([u8; N]) -> T,
    from_le: fn([u8; N]) -> T,
) -> Vec<T> {
    let from = if big { from_be } else { from_le };
    let v: Vec<T> = bytes
        .chunks_exact(N)
        .map(|c| from(c.try_into().unwrap_or([0; N])))
        .collect();
    match fortran {
        Some(dims) => fortran_to_c(dims, &v),
        None => v,
    }
}

/// Integer elements of `kind`, widened to i64 exactly, in C order.
fn decode_int(kind: IntKind, bytes: &[u8], big: bool, fortran: Option<&[usize]>) -> Vec<i64> {
    match kind {
        IntKind::I8 => decode(bytes, big, fortran, i8::from_be_bytes, i8::from_le_bytes)
            .into_iter()
            .map(i64::from)
            .collect(),
        IntKind::U8 => decode(bytes, big, fortran, u8::from_be_bytes, u8::from_le_bytes)
            .into_iter()
            .map(i64::from)
            .collect(),
        IntKind::I16 => decode(bytes, big, fortran, i16::from_be_bytes, i16::from_le_bytes)
            .into_iter()
            .map(i64::from)
            .collect(),
        IntKind::U16 => decode(bytes, big, fortran, u16::from_be_bytes, u16::from_le_bytes)
            .into_iter()
            .map(i64::from)
            .collect(),
        IntKind::I32 => decode(bytes, big, fortran, i32::from_be_bytes, i32::from_le_bytes)
            .into_iter()
            .map(i64::from)
            .collect(),
        IntKind::I64 => decode(bytes, big, fortran, i64::from_be_bytes, i64::from_le_bytes),
    }
}

/// Appends up to `n` more bytes of `reader` to `buf`, fewer only at the end of the stream.
fn read_up_to(reader: &mut impl Read, buf: &mut Vec<u8>, n: u64) -> Result<(), NpyError> {
    reader
        .take(n)
        .read_to_end(buf)
        .map(|_| ())
        .map_err(|e| NpyError::Io {
            message: e.to_string(),
        })
}

/// Serialises a float32 array in C order exactly as `numpy.save` does (see the module
/// documentation). The product of `shape` must equal `data.len()`; if it does not, the file
/// is written with the 1-d shape `(data.len(),)` so that it still holds every value and
/// loads.
pub fn write_npy(shape: &[u64], data: &[f32]) -> Vec<u8> {
    write_npy_as(shape, data, NpyOut::F32)
}

/// The element type [`write_npy_as`] writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NpyOut {
    /// `'<f4'`.
    F32,
    /// `'|b1'`: 1 for every nonzero value (NaN too), else 0.
    Bool,
}

impl NpyOut {
    /// The header's `descr` of this element type.
    fn descr(self) -> &'static str {
        match self {
            NpyOut::F32 => "<f4",
            NpyOut::Bool => "|b1",
        }
    }
}

/// [`write_npy`] with the element type `out_kind`.
pub fn write_npy_as(shape: &[u64], data: &[f32], out_kind: NpyOut) -> Vec<u8> {
    let one_d = [data.len() as u64];
    let shape = if shape_matches(shape, data.len()) {
        shape
    } else {
        &one_d[..]
    };
    let mut out = npy_header(shape, out_kind.descr(), 4 * data.len());
    match out_kind {
        NpyOut::F32 => {
            for x in data {
                out.extend_from_slice(&x.to_le_bytes());
            }
        }
        NpyOut::Bool => out.extend(data.iter().map(|&x| u8::from(x != 0.0))),
    }
    out
}

/// Serialises an int32 array (`'<i4'`) in C order as `numpy.save` does, exactly; the shape
/// rule of [`write_npy`].
pub fn write_npy_i32(shape: &[u64], data: &[i32]) -> Vec<u8> {
    let one_d = [data.len() as u64];
    let shape = if shape_matches(shape, data.len()) {
        shape
    } else {
        &one_d[..]
    };
    let mut out = npy_header(shape, "<i4", 4 * data.len());
    for x in data {
        out.extend_from_slice(&x.to_le_bytes());
    }
    out
}

/// [`write_npy_i32`]'s bytes written to `path` as [`write_npy_file`] writes.
pub fn write_npy_i32_file(path: impl AsRef<Path>, shape: &[u64], data: &[i32]) -> io::Result<()> {
    if !shape_matches(shape, data.len()) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "shape {} does not hold {} elements",
                shape_repr(shape),
                data.len()
            ),
        ));
    }
    write_file_atomic(path.as_ref(), &write_npy_i32(shape, data))
}

/// The magic string, version, header length and header of a `.npy` file of `shape` and
/// `descr`, with room reserved for `data_bytes` bytes of data.
fn npy_header(shape: &[u64], descr: &str, data_bytes: usize) -> Vec<u8> {
    let mut header = format!(
        "{{'descr': '{descr}', 'fortran_order': False, 'shape': {}, }}",
        shape_repr(shape)
    );
    // Spare room so that the first axis can grow in place (numpy.lib.format's
    // GROWTH_AXIS_MAX_DIGITS).
    if let Some(first) = shape.first() {
        let digits = first.to_string().len();
        header.push_str(&" ".repeat(GROWTH_AXIS_MAX_DIGITS.saturating_sub(digits)));
    }
    // NumPy pads with spaces so that magic, length and header end on a multiple of 64 bytes
    // (a full 64 when already aligned), then ends the header with a newline.
    let hlen = header.len() + 1;
    let wrap = |len_size: usize| {
        let padlen = ARRAY_ALIGN - (MAGIC.len() + 2 + len_size + hlen) % ARRAY_ALIGN;
        (padlen, hlen + padlen)
    };
    let (padlen, total) = wrap(2);
    let mut out = Vec::with_capacity(12 + total + data_bytes);
    out.extend_from_slice(MAGIC);
    let padlen = match u16::try_from(total) {
        Ok(len) => {
            out.extend_from_slice(&[1, 0]);
            out.extend_from_slice(&len.to_le_bytes());
            padlen
        }
        Err(_) => {
            let (padlen, total) = wrap(4);
            out.extend_from_slice(&[2, 0]);
            out.extend_from_slice(&(total as u32).to_le_bytes());
            padlen
        }
    };
    out.extend_from_slice(header.as_bytes());
    out.resize(out.len() + padlen, b' ');
    out.push(b'\n');
    out
}

/// Writes [`write_npy`]'s bytes to `path` as [`write_file_atomic`] does: a regular file
/// (or a new one) is replaced in one step, so that a reader never sees half a file. Fails
/// with `InvalidInput` when the product of `shape` is not `data.len()`.
pub fn write_npy_file(path: impl AsRef<Path>, shape: &[u64], data: &[f32]) -> io::Result<()> {
    write_npy_file_as(path, shape, data, NpyOut::F32)
}

/// [`write_npy_file`] with the element type `out_kind`.
pub fn write_npy_file_as(
    path: impl AsRef<Path>,
    shape: &[u64],
    data: &[f32],
    out_kind: NpyOut,
) -> io::Result<()> {
    if !shape_matches(shape, data.len()) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "shape {} does not hold {} elements",
                shape_repr(shape),
                data.len()
            ),
        ));
    }
    // Streamed: the header, then the data a piece at a time (a large input's f32 file is
    // never built in memory).
    let header = npy_header(shape, out_kind.descr(), 0);
    write_file_atomic_with(path.as_ref(), &mut |w| {
        w.write_all(&header)?;
        let mut buf = Vec::with_capacity(1 << 16);
        for piece in data.chunks(1 << 14) {
            buf.clear();
            match out_kind {
                NpyOut::F32 => {
                    for x in piece {
                        buf.extend_from_slice(&x.to_le_bytes());
                    }
                }
                NpyOut::Bool => buf.extend(piece.iter().map(|&x| u8::from(x != 0.0))),
            }
            w.write_all(&buf)?;
        }
        Ok(())
    })
}

/// Writes `bytes` to `path` the way a user expects of an output path, without ever leaving
/// half a file behind:
///
/// - a new path or an existing regular file is written through a temporary file in the
///   same folder, synced, then renamed over it;
/// - a symbolic link is followed (to its final target, even a dangling one), and its
///   target written as above, so that the link itself stays;
/// - an existing file that is not a regular file (a character device such as
///   `/dev/stdout` or `/dev/null`, a FIFO) is opened and written directly, never replaced;
/// - a folder is an error.
///
/// The command line writes every output file (`-o`, `--trace`, `--report-json`, the
/// `.npy` files of `run`) through this function.
pub fn write_file_atomic(path: &Path, bytes: &[u8]) -> io::Result<()> {
    write_file_atomic_with(path, &mut |w| w.write_all(bytes))
}

/// [`write_file_atomic`] of the bytes `write` produces into a writer, piece by piece, so
/// that a large file is never held whole in memory.
pub fn write_file_atomic_with(
    path: &Path,
    write: &mut dyn FnMut(&mut dyn Write) -> io::Result<()>,
) -> io::Result<()> {
    let bytes = write;
    match std::fs::metadata(path) {
        Ok(meta) if meta.is_dir() => Err(io::Error::other("it is a folder, not a file")),
        Ok(meta) if meta.is_file() => {
            let is_link = std::fs::symlink_metadata(path)?.file_type().is_symlink();
            if is_link {
                replace_file(&std::fs::canonicalize(path)?, bytes)
            } else {
                replace_file(path, bytes)
            }
        }
        Ok(_) => {
            // A device or a FIFO: replacing it would break it (and, for `/dev/stdout`,
            // replace a system symlink), so it is written in place.
            let file = std::fs::OpenOptions::new().write(true).open(path)?;
            let mut file = io::BufWriter::with_capacity(1 << 16, file);
            bytes(&mut file)?;
            file.flush()
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            replace_file(&final_link_target(path)?, bytes)
        }
        Err(e) => Err(e),
    }
}

/// The path a chain of symbolic links starting at `path` ends at, followed by hand so that
/// a dangling link gives the path it points to (`path` itself when it is not a link).
fn final_link_target(path: &Path) -> io::Result<std::path::PathBuf> {
    let mut current = path.to_path_buf();
    // Linux's own limit on links followed in one path lookup.
    for _ in 0..40 {
        match std::fs::symlink_metadata(&current) {
            Ok(meta) if meta.file_type().is_symlink() => {
                let target = std::fs::read_link(&current)?;
                current = match current.parent() {
                    Some(dir) if target.is_relative() => dir.join(target),
                    _ => target,
                };
            }
            _ => return Ok(current),
        }
    }
    Err(io::Error::other("too many levels of symbolic links"))
}

/// Replaces (or creates) the regular file `path` through a synced temporary file in the
/// same folder and a rename.
fn replace_file(
    path: &Path,
    bytes: &mut dyn FnMut(&mut dyn Write) -> io::Result<()>,
) -> io::Result<()> {
    let Some(name) = path.file_name() else {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{} is not a file path", path.display()),
        ));
    };
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let tmp_name = format!(
        ".{}.{}.{}.tmp",
        name.to_string_lossy(),
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    );
    let tmp = path.with_file_name(tmp_name);
    let result = (|| {
        let file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&tmp)?;
        let mut file = io::BufWriter::with_capacity(1 << 16, file);
        bytes(&mut file)?;
        let file = file.into_inner().map_err(|e| e.into_error())?;
        file.sync_all()?;
        drop(file);
        std::fs::rename(&tmp, path)
    })();
    if result.is_err() {
        // Best effort: the temporary file may not even exist.
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

const MAGIC: &[u8] = b"\x93NUMPY";
/// Magic, version and a 16-bit header length.
const V1_PREFIX_LEN: usize = 10;
const ARRAY_ALIGN: usize = 64;
const GROWTH_AXIS_MAX_DIGITS: usize = 21;
/// How many bytes after the data of a stream of unknown length are counted for the
/// message before the reader gives up and says only that there are more.
const TRAILING_COUNT_LIMIT: u64 = 1 << 20;
/// How deep the header's literals may nest; NumPy's own headers nest two levels.
const MAX_DEPTH: usize = 32;

#[derive(Clone, Copy, PartialEq, Eq)]
enum Version {
    V1,
    V2,
    V3,
}

/// The element types this reader accepts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    F16,
    F32,
    F64,
    Void1,
    Void2,
    Bool,
    Int(IntKind),
}

impl Kind {
    fn size(self) -> u64 {
        match self {
            Kind::Int(IntKind::I8 | IntKind::U8) => 1,
            Kind::Int(IntKind::I16 | IntKind::U16) => 2,
            Kind::Int(IntKind::I32) => 4,
            Kind::Int(IntKind::I64) => 8,
            Kind::Void1 | Kind::Bool => 1,
            Kind::F16 | Kind::Void2 => 2,
            Kind::F32 => 4,
            Kind::F64 => 8,
        }
    }

    /// NumPy's name (a void type is named by its width in bits).
    fn name(self) -> &'static str {
        match self {
            Kind::F16 => "float16",
            Kind::F32 => "float32",
            Kind::F64 => "float64",
            Kind::Void1 => "void8",
            Kind::Void2 => "void16",
            Kind::Bool => "bool",
            Kind::Int(IntKind::I8) => "int8",
            Kind::Int(IntKind::I16) => "int16",
            Kind::Int(IntKind::I32) => "int32",
            Kind::Int(IntKind::I64) => "int64",
            Kind::Int(IntKind::U8) => "uint8",
            Kind::Int(IntKind::U16) => "uint16",
        }
    }
}

/// Untyped elements are read as the bits of `dtype`, so they must have its width.
/// `descr` is the file's dtype string, for the message.
fn check_void_width_of(kind: Kind, descr: &str, dtype: Dtype) -> Result<(), NpyError> {
    // A `bool` parameter takes bool files only, and bool files fill `bool` parameters only.
    if (kind == Kind::Bool) != (dtype == Dtype::Bool) {
        return Err(NpyError::BoolMismatch {
            descr: descr.to_string(),
            dtype,
        });
    }
    // An `i32` parameter takes integer files only, and integer files fill `i32` parameters
    // only: integers never pass through a float, nor floats through a silent truncation.
    if matches!(kind, Kind::Int(_)) != (dtype == Dtype::I32) {
        return Err(NpyError::IntMismatch {
            descr: descr.to_string(),
            dtype,
        });
    }
    let width = kind.size();
    if matches!(kind, Kind::Void1 | Kind::Void2) && width != u64::from(dtype.size()) {
        return Err(NpyError::VoidWidth {
            descr: descr.to_string(),
            width,
            dtype,
        });
    }
    Ok(())
}

/// Fails with [`NpyError::VoidWidth`] when elements of `kind` cannot be read as `dtype`.
fn check_void_width(kind: Kind, dtype: Dtype) -> Result<(), NpyError> {
    check_void_width_of(kind, &format!("'V{}'", kind.size()), dtype)
}

/// The checked content of a header.
struct Header {
    kind: Kind,
    /// The `descr` string as the file gives it, for messages.
    descr: String,
    /// The data is big-endian (`'>f4'`, or `'=f4'` on a big-endian machine).
    big_endian: bool,
    fortran_order: bool,
    shape: Vec<u64>,
}

fn shape_matches(shape: &[u64], len: usize) -> bool {
    if shape.contains(&0) {
        return len == 0;
    }
    shape
        .iter()
        .try_fold(1u64, |acc, &d| acc.checked_mul(d))
        .is_some_and(|n| n == len as u64)
}

/// A shape as Python's `repr` of a tuple: `()`, `(5,)`, `(2, 3)`.
fn shape_repr(shape: &[u64]) -> String {
    match shape {
        [] => "()".to_string(),
        [d] => format!("({d},)"),
        _ => {
            let dims: Vec<String> = shape.iter().map(u64::to_string).collect();
            format!("({})", dims.join(", "))
        }
    }
}

/// Reorders Fortran-ordered elements (first axis fastest) into C order (last axis fastest).
fn fortran_to_c<T: Copy>(dims: &[usize], src: &[T]) -> Vec<T> {
    let mut out = Vec::with_capacity(src.len());
    if src.is_empty() || dims.len() < 2 {
        out.extend_from_slice(src);
        return out;
    }
    // The Fortran stride of each axis, in elements.
    let mut strides = Vec::with_capacity(dims.len());
    let mut stride = 1usize;
    for &d in dims {
        strides.push(stride);
        stride = stride.saturating_mul(d);
    }
    // Walk the C order with an odometer over the indices, keeping the Fortran offset.
    let mut index = vec![0usize; dims.len()];
    let mut offset = 0usize;
    for _ in 0..src.len() {
        out.extend(src.get(offset).copied());
        for axis in (0..dims.len()).rev() {
            index[axis] += 1;
            offset += strides[axis];
            if index[axis] < dims[axis] {
                break;
            }
            offset -= dims[axis] * strides[axis];
            index[axis] = 0;
        }
    }
    out
}

/// A Python literal of the subset NumPy headers use.
#[derive(Debug)]
enum Value {
    Str(String),
    /// A non-negative integer, or `None` when it does not fit 64 bits.
    Int {
        negative: bool,
        magnitude: Option<u64>,
    },
    Bool(bool),
    None,
    Tuple(Vec<Value>),
    List(Vec<Value>),
    Dict(Vec<(Value, Value)>),
}

impl fmt::Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let seq = |f: &mut fmt::Formatter<'_>, items: &[Value]| -> fmt::Result {
            for (i, v) in items.iter().enumerate() {
                if i > 0 {
                    f.write_str(", ")?;
                }
                write!(f, "{v}")?;
            }
            Ok(())
        };
        match self {
            Value::Str(s) => write!(f, "'{s}'"),
            Value::Int {
                negative,
                magnitude,
            } => {
                let sign = if *negative { "-" } else { "" };
                match magnitude {
                    Some(m) => write!(f, "{sign}{m}"),
                    None => write!(f, "{sign}<an integer of more than 64 bits>"),
                }
            }
            Value::Bool(b) => f.write_str(if *b { "True" } else { "False" }),
            Value::None => f.write_str("None"),
            Value::Tuple(items) => {
                f.write_str("(")?;
                seq(f, items)?;
                f.write_str(if items.len() == 1 { ",)" } else { ")" })
            }
            Value::List(items) => {
                f.write_str("[")?;
                seq(f, items)?;
                f.write_str("]")
            }
            Value::Dict(items) => {
                f.write_str("{")?;
                for (i, (k, v)) in items.iter().enumerate() {
                    if i > 0 {
                        f.write_str(", ")?;
                    }
                    write!(f, "{k}: {v}")?;
                }
                f.write_str("}")
            }
        }
    }
}

fn malformed(reason: impl Into<String>) -> NpyError {
    NpyError::MalformedHeader {
        reason: reason.into(),
    }
}

/// Parses and checks the header dict.
fn parse_header(raw: &[u8], version: Version) -> Result<Header, NpyError> {
    // Versions 1.0 and 2.0 are latin-1, 3.0 is UTF-8. Everything we accept is ASCII, so
    // the parser works on bytes; only version 3.0 must also be valid UTF-8.
    if version == Version::V3 && std::str::from_utf8(raw).is_err() {
        return Err(malformed("a version 3.0 header must be UTF-8"));
    }
    let mut parser = Parser {
        text: raw,
        pos: 0,
        // NumPy drops the `L` of Python 2 longs in version 1.0 and 2.0 headers.
        allow_long_suffix: version != Version::V3,
    };
    parser.skip_space();
    let value = parser.value(0)?;
    parser.skip_space();
    if parser.pos != raw.len() {
        return Err(parser.error("expected the end of the header after the dict"));
    }
    let Value::Dict(entries) = value else {
        return Err(malformed(format!("the header is not a dict: {value}")));
    };

    let (mut descr, mut fortran, mut shape) = (None, None, None);
    for (key, value) in entries {
        let Value::Str(key) = key else {
            return Err(malformed(format!("a header key is not a string: {key}")));
        };
        let slot = match key.as_str() {
            "descr" => &mut descr,
            "fortran_order" => &mut fortran,
            "shape" => &mut shape,
            _ => {
                return Err(malformed(format!(
                    "unexpected key '{key}'; the keys are 'descr', 'fortran_order' and 'shape'"
                )))
            }
        };
        if slot.replace(value).is_some() {
            return Err(malformed(format!("the key '{key}' appears twice")));
        }
    }
    let missing = |key: &str| malformed(format!("the key '{key}' is missing"));
    let descr = descr.ok_or_else(|| missing("descr"))?;
    let fortran = fortran.ok_or_else(|| missing("fortran_order"))?;
    let shape = shape.ok_or_else(|| missing("shape"))?;

    let (kind, big_endian) = check_descr(&descr)?;
    // An accepted descr is always a string; kept without its quotes.
    let descr = match descr {
        Value::Str(s) => s,
        other => other.to_string(),
    };
    let Value::Bool(fortran_order) = fortran else {
        return Err(malformed(format!(
            "fortran_order is not True or False: {fortran}"
        )));
    };
    let Value::Tuple(dims) = &shape else {
        return Err(malformed(format!("shape is not a tuple: {shape}")));
    };
    let mut out = Vec::with_capacity(dims.len());
    for d in dims {
        match d {
            Value::Int {
                negative: false,
                magnitude: Some(m),
            } => out.push(*m),
            Value::Int {
                negative: true,
                magnitude: Some(0),
            } => out.push(0),
            Value::Int {
                negative: false,
                magnitude: None,
            } => {
                return Err(NpyError::ShapeOverflow {
                    shape: shape.to_string(),
                })
            }
            _ => {
                return Err(malformed(format!(
                    "shape {shape} has a dimension that is not a non-negative integer: {d}"
                )))
            }
        }
    }
    Ok(Header {
        kind,
        descr,
        big_endian,
        fortran_order,
        shape: out,
    })
}

/// Accepts float16, float32 and float64 with a stated byte order (`<`, `>` or `=`) and
/// 1- or 2-byte voids, returning the kind and whether the data is big-endian; names
/// anything else.
fn check_descr(descr: &Value) -> Result<(Kind, bool), NpyError> {
    let s = match descr {
        Value::Str(s) => s.as_str(),
        Value::List(_) => {
            return Err(NpyError::UnsupportedDtype {
                found: format!("{descr} (a structured dtype)"),
            })
        }
        _ => {
            return Err(NpyError::UnsupportedDtype {
                found: format!("{descr} (not a dtype string)"),
            })
        }
    };
    let native_big = cfg!(target_endian = "big");
    match s {
        "<f2" => return Ok((Kind::F16, false)),
        "<f4" => return Ok((Kind::F32, false)),
        "<f8" => return Ok((Kind::F64, false)),
        ">f2" => return Ok((Kind::F16, true)),
        ">f4" => return Ok((Kind::F32, true)),
        ">f8" => return Ok((Kind::F64, true)),
        "=f2" => return Ok((Kind::F16, native_big)),
        "=f4" => return Ok((Kind::F32, native_big)),
        "=f8" => return Ok((Kind::F64, native_big)),
        // NumPy writes a void's byte order as `|`, ml_dtypes' types as the machine's (`<`
        // on every little-endian machine); only a 2-byte value has bytes to order.
        "|V1" | "<V1" | ">V1" | "=V1" => return Ok((Kind::Void1, false)),
        "|b1" | "<b1" | ">b1" | "=b1" | "b1" | "?" => return Ok((Kind::Bool, false)),
        "|V2" | "<V2" => return Ok((Kind::Void2, false)),
        ">V2" => return Ok((Kind::Void2, true)),
        "=V2" => return Ok((Kind::Void2, native_big)),
        "|i1" | "<i1" | ">i1" | "=i1" | "i1" => return Ok((Kind::Int(IntKind::I8), false)),
        "|u1" | "<u1" | ">u1" | "=u1" | "u1" => return Ok((Kind::Int(IntKind::U8), false)),
        _ => {}
    }
    let int = match s.get(1..) {
        Some("i2") => Some(IntKind::I16),
        Some("u2") => Some(IntKind::U16),
        Some("i4") => Some(IntKind::I32),
        Some("i8") => Some(IntKind::I64),
        _ => None,
    };
    if let Some(kind) = int {
        match s.as_bytes().first() {
            Some(b'<') => return Ok((Kind::Int(kind), false)),
            Some(b'>') => return Ok((Kind::Int(kind), true)),
            Some(b'=') => return Ok((Kind::Int(kind), native_big)),
            _ => {}
        }
    }
    let (order, code) = match s.as_bytes().first() {
        Some(b'<' | b'>' | b'|' | b'=') => s.split_at(1),
        _ => ("", s),
    };
    let name = dtype_name(code);
    let found = match (order, name) {
        ("|" | "", Some(n)) if matches!(code, "f2" | "f4" | "f8") => {
            format!("'{s}' ({n} without a stated byte order)")
        }
        (_, Some("void")) => {
            format!("'{s}' (void; only 1- and 2-byte voids with a byte order are read)")
        }
        (_, Some(n)) => format!("'{s}' ({n})"),
        (_, None) => format!("'{s}'"),
    };
    Err(NpyError::UnsupportedDtype { found })
}

/// NumPy's name of a type code without its byte order, for messages.
fn dtype_name(code: &str) -> Option<&'static str> {
    Some(match code {
        "f2" => "float16",
        "f4" => "float32",
        "f8" => "float64",
        "f16" => "float128",
        "i1" => "int8",
        "i2" => "int16",
        "i4" => "int32",
        "i8" => "int64",
        "u1" => "uint8",
        "u2" => "uint16",
        "u4" => "uint32",
        "u8" => "uint64",
        "b1" => "bool",
        "c8" => "complex64",
        "c16" => "complex128",
        "c32" => "complex256",
        "O" => "object",
        _ if code.starts_with('U') => "str",
        _ if code.starts_with('S') => "bytes",
        _ if code.starts_with('V') => "void",
        _ if code.starts_with("M8") => "datetime64",
        _ if code.starts_with("m8") => "timedelta64",
        _ => return None,
    })
}

/// A recursive-descent parser for the Python literals of a header.
struct Parser<'a> {
    text: &'a [u8],
    pos: usize,
    allow_long_suffix: bool,
}

impl Parser<'_> {
    fn error(&self, what: &str) -> NpyError {
        let found = match self.peek() {
            Some(c) if c.is_ascii_graphic() || c == b' ' => format!("'{}'", c as char),
            Some(c) => format!("byte 0x{c:02x}"),
            None => "the end of the header".to_string(),
        };
        let text = String::from_utf8_lossy(self.text);
        let shown: String = text.trim_end().chars().take(120).collect();
        malformed(format!(
            "{what}, found {found} at byte {} of {shown:?}",
            self.pos
        ))
    }

    fn peek(&self) -> Option<u8> {
        self.text.get(self.pos).copied()
    }

    fn skip_space(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t' | b'\n' | b'\r' | b'\x0c')) {
            self.pos += 1;
        }
    }

    fn eat(&mut self, c: u8) -> bool {
        self.skip_space();
        if self.peek() == Some(c) {
            self.pos += 1;
            true
        } else {
            false
        }
    }

    fn value(&mut self, depth: usize) -> Result<Value, NpyError> {
        if depth > MAX_DEPTH {
            return Err(self.error("the header's literals nest too deeply"));
        }
        self.skip_space();
        match self.peek() {
            Some(b'{') => {
                self.pos += 1;
                let mut entries = Vec::new();
                loop {
                    if self.eat(b'}') {
                        return Ok(Value::Dict(entries));
                    }
                    let key = self.value(depth + 1)?;
                    if !self.eat(b':') {
                        return Err(self.error("expected ':' after a dict key"));
                    }
                    let value = self.value(depth + 1)?;
                    entries.push((key, value));
                    if !self.eat(b',') {
                        if self.eat(b'}') {
                            return Ok(Value::Dict(entries));
                        }
                        return Err(self.error("expected ',' or '}' in the dict"));
                    }
                }
            }
            Some(open @ (b'(' | b'[')) => {
                self.pos += 1;
                let close = if open == b'(' { b')' } else { b']' };
                let mut items = Vec::new();
                let mut saw_comma = false;
                loop {
                    if self.eat(close) {
                        break;
                    }
                    items.push(self.value(depth + 1)?);
                    if self.eat(b',') {
                        saw_comma = true;
                    } else if self.eat(close) {
                        break;
                    } else {
                        return Err(self.error(if open == b'(' {
                            "expected ',' or ')' in the tuple"
                        } else {
                            "expected ',' or ']' in the list"
                        }));
                    }
                }
                Ok(match open {
                    // `(x)` is x itself in Python, not a tuple.
                    b'(' if items.len() == 1 && !saw_comma => items.pop().unwrap_or(Value::None),
                    b'(' => Value::Tuple(items),
                    _ => Value::List(items),
                })
            }
            Some(q @ (b'\'' | b'"')) => self.string(q),
            Some(b'0'..=b'9' | b'-' | b'+') => self.int(),
            Some(c) if c.is_ascii_alphabetic() => {
                let start = self.pos;
                while self
                    .peek()
                    .is_some_and(|c| c.is_ascii_alphanumeric() || c == b'_')
                {
                    self.pos += 1;
                }
                match &self.text[start..self.pos] {
                    b"True" => Ok(Value::Bool(true)),
                    b"False" => Ok(Value::Bool(false)),
                    b"None" => Ok(Value::None),
                    _ => {
                        self.pos = start;
                        Err(self.error("expected a Python literal"))
                    }
                }
            }
            _ => Err(self.error("expected a Python literal")),
        }
    }

    fn string(&mut self, quote: u8) -> Result<Value, NpyError> {
        self.pos += 1;
        let mut bytes = Vec::new();
        loop {
            match self.peek() {
                None | Some(b'\n') => return Err(self.error("unterminated string")),
                Some(c) if c == quote => {
                    self.pos += 1;
                    break;
                }
                Some(b'\\') => {
                    self.pos += 1;
                    match self.peek() {
                        None => return Err(self.error("unterminated string")),
                        Some(c) => {
                            // The escapes NumPy's repr can produce in a dtype string keep the
                            // escaped character; others keep the backslash, as Python does.
                            if !matches!(c, b'\\' | b'\'' | b'"') {
                                bytes.push(b'\\');
                            }
                            bytes.push(c);
                            self.pos += 1;
                        }
                    }
                }
                Some(c) => {
                    bytes.push(c);
                    self.pos += 1;
                }
            }
        }
        Ok(Value::Str(String::from_utf8_lossy(&bytes).into_owned()))
    }

    fn int(&mut self) -> Result<Value, NpyError> {
        let mut negative = false;
        if let Some(sign @ (b'-' | b'+')) = self.peek() {
            negative = sign == b'-';
            self.pos += 1;
            self.skip_space();
        }
        let start = self.pos;
        let mut magnitude = Some(0u64);
        while let Some(c @ b'0'..=b'9') = self.peek() {
            magnitude = magnitude
                .and_then(|m| m.checked_mul(10))
                .and_then(|m| m.checked_add(u64::from(c - b'0')));
            self.pos += 1;
        }
        if self.pos == start {
            return Err(self.error("expected digits"));
        }
        if self.text[start] == b'0' && self.pos - start > 1 && magnitude != Some(0) {
            return Err(self.error("leading zeros are not allowed in an integer"));
        }
        if self.allow_long_suffix && self.peek() == Some(b'L') {
            self.pos += 1;
        }
        if self
            .peek()
            .is_some_and(|c| c.is_ascii_alphanumeric() || c == b'_' || c == b'.')
        {
            return Err(self.error("expected a decimal integer"));
        }
        Ok(Value::Int {
            negative,
            magnitude,
        })
    }
}
