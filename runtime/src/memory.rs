//! The machine's memories as real byte arrays (HBM, SBUF, PSUM), with bounds-checked
//! access through access patterns and the optional poison tracking of never-written bytes.
//!
//! Every access goes through a [`Region`], made by [`Memories::tile`] or
//! [`Memories::hbm_region`] after checking that every address the pattern can name is in
//! range (and, for PSUM, inside one bank). Reads and writes then walk the pattern as
//! contiguous runs, so copying a contiguous row is one slice operation. Conversion between
//! bytes and f32 goes through `crate::numeric` only, so that every engine rounds alike.

use crate::error::{At, RuntimeError};
use crate::numeric;
use isa::{Dtype, Geometry, HbmAp, Mem, TileAp};
use smallvec::SmallVec;

/// The pattern 0xFF in every byte is a NaN in every dtype; poisoned memories start so.
pub(crate) const POISON_BYTE: u8 = 0xFF;

/// Which memory a region lives in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Space {
    Hbm,
    Sbuf,
    Psum,
}

impl Space {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Space::Hbm => "hbm",
            Space::Sbuf => "sbuf",
            Space::Psum => "psum",
        }
    }
}

/// A checked access pattern: `parts` partitions from `part0` (one for HBM), and in each the
/// same free pattern of `dims` (size, stride in elements, outermost first) from byte
/// `offset`. Every byte it can name is inside its memory.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Region {
    pub space: Space,
    pub dtype: Dtype,
    pub part0: usize,
    pub parts: usize,
    pub offset: u64,
    pub dims: SmallVec<[(u64, i64); 5]>,
    /// Elements per partition.
    pub free: usize,
}

impl Region {
    /// Total number of elements.
    pub fn elems(&self) -> usize {
        self.free * self.parts
    }

    /// Calls `f(first element offset, length)` for every maximal run of elements that are
    /// contiguous in memory, in the pattern's row-major order, for one partition (every
    /// partition has the same runs). Offsets are in elements relative to `offset`.
    pub fn for_each_run<E>(&self, mut f: impl FnMut(i64, u64) -> Result<(), E>) -> Result<(), E> {
        let dims = &self.dims;
        // Merge the innermost dimensions that continue each other into one block.
        let mut block: u64 = 1;
        let mut k = dims.len();
        while k > 0 {
            let (size, stride) = dims[k - 1];
            if size == 1 {
                k -= 1;
            } else if stride == block as i64 {
                block *= size;
                k -= 1;
            } else {
                break;
            }
        }
        let outer = &dims[..k];
        let mut idx: SmallVec<[u64; 5]> = SmallVec::from_elem(0, outer.len());
        let mut base: i64 = 0;
        let mut pending: Option<(i64, u64)> = None;
        loop {
            match pending {
                Some((b, len)) if b.wrapping_add(len as i64) == base => {
                    pending = Some((b, len + block))
                }
                Some(run) => {
                    f(run.0, run.1)?;
                    pending = Some((base, block));
                }
                None => pending = Some((base, block)),
            }
            // Advance the odometer over the outer dimensions.
            let mut d = outer.len();
            loop {
                if d == 0 {
                    if let Some(run) = pending {
                        f(run.0, run.1)?;
                    }
                    return Ok(());
                }
                d -= 1;
                let (size, stride) = outer[d];
                // Wrapping arithmetic: a dimension of size 1 may carry any stride, and the
                // region check bounds every address the walk actually produces.
                idx[d] += 1;
                base = base.wrapping_add(stride);
                if idx[d] < size {
                    break;
                }
                base = base.wrapping_sub(stride.wrapping_mul(size as i64));
                idx[d] = 0;
            }
        }
    }

    /// Effective bytes of this region for the DMA cost: every contiguous run counts at
    /// least `min_run` bytes.
    pub fn effective_bytes(&self, min_run: u64) -> u64 {
        let esz = self.dtype.size() as u64;
        let mut per_part: u64 = 0;
        let _ = self.for_each_run::<()>(|_, len| {
            per_part = per_part.saturating_add((len * esz).max(min_run));
            Ok(())
        });
        per_part.saturating_mul(self.parts as u64)
    }

    /// Bytes the region holds.
    pub fn bytes(&self) -> u64 {
        self.elems() as u64 * self.dtype.size() as u64
    }
}

/// One bit per byte of a memory: set when the byte has been written.
#[derive(Clone, Debug)]
struct Bitmap {
    words: Vec<u64>,
}

impl Bitmap {
    fn new(bits: usize) -> Bitmap {
        Bitmap {
            words: vec![0; bits.div_ceil(64)],
        }
    }

    fn set_range(&mut self, start: usize, len: usize) {
        let mut i = start;
        let end = start + len;
        while i < end {
            let w = i / 64;
            let b = i % 64;
            let n = (64 - b).min(end - i);
            let mask = if n == 64 {
                u64::MAX
            } else {
                ((1u64 << n) - 1) << b
            };
            if let Some(word) = self.words.get_mut(w) {
                *word |= mask;
            }
            i += n;
        }
    }

    /// The first clear bit of the range, if any.
    fn first_clear(&self, start: usize, len: usize) -> Option<usize> {
        let mut i = start;
        let end = start + len;
        while i < end {
            let w = i / 64;
            let b = i % 64;
            let n = (64 - b).min(end - i);
            let mask = if n == 64 {
                u64::MAX
            } else {
                ((1u64 << n) - 1) << b
            };
            let word = self.words.get(w).copied().unwrap_or(0);
            let missing = !word & mask;
            if missing != 0 {
                return Some(w * 64 + missing.trailing_zeros() as usize);
            }
            i += n;
        }
        None
    }
}

/// HBM, SBUF and PSUM of one run.
pub(crate) struct Memories {
    pub hbm: Vec<u8>,
    sbuf: Vec<u8>,
    psum: Vec<u8>,
    geometry: Geometry,
    /// Written-byte maps of SBUF, PSUM and HBM when poison tracking is on. HBM's starts
    /// with the bound inputs marked ([`Memories::mark_hbm_written`]): outputs and scratch
    /// are never-written until a DMA stores to them.
    written: Option<[Bitmap; 3]>,
    /// The named HBM tensors (name, first byte, end), so that a poisoned HBM read names
    /// the tensor it touched.
    hbm_names: Vec<(String, usize, usize)>,
    max_elems: u64,
    /// How many row writes PSUM has had: lets the Tensor engine tell that PSUM still
    /// holds what it last wrote.
    psum_writes: u64,
}

impl Memories {
    /// Memories for a run: `hbm` as given, SBUF and PSUM zeroed or poisoned. With poison
    /// tracking every HBM byte counts as never written until [`Memories::mark_hbm_written`]
    /// or a DMA writes it.
    pub fn new(hbm: Vec<u8>, geometry: Geometry, poison: bool, max_elems: u64) -> Memories {
        let hbm_len = hbm.len();
        let sbuf_len = geometry.partitions as usize * geometry.sbuf_partition_bytes as usize;
        let psum_len = geometry.partitions as usize * geometry.psum_partition_bytes as usize;
        let fill = if poison { POISON_BYTE } else { 0 };
        Memories {
            hbm,
            sbuf: vec![fill; sbuf_len],
            psum: vec![fill; psum_len],
            geometry,
            written: poison.then(|| {
                [
                    Bitmap::new(sbuf_len),
                    Bitmap::new(psum_len),
                    Bitmap::new(hbm_len),
                ]
            }),
            hbm_names: Vec::new(),
            max_elems,
            psum_writes: 0,
        }
    }

    /// Marks `len` HBM bytes from `start` as written (a bound input) and names the tensor
    /// there for poison errors. Without poison tracking it only records the name.
    pub fn mark_hbm_written(&mut self, name: &str, start: usize, len: usize) {
        if let Some(maps) = self.written.as_mut() {
            maps[2].set_range(start, len);
        }
        self.hbm_names.push((name.to_string(), start, start + len));
    }

    /// The first of `len` HBM bytes from `start` that nothing wrote, when poison tracking
    /// is on.
    pub fn first_unwritten_hbm(&self, start: usize, len: usize) -> Option<usize> {
        let maps = self.written.as_ref()?;
        maps[2].first_clear(start, len).map(|b| b - start)
    }

    /// Names an HBM tensor (an output or scratch) for poison errors.
    pub fn name_hbm(&mut self, name: &str, start: usize, len: usize) {
        self.hbm_names.push((name.to_string(), start, start + len));
    }

    /// Where a byte is, for a poison error: `hbm byte B (tensor T, byte O of it)`.
    fn describe_byte(&self, space: Space, part: usize, byte: usize) -> String {
        if space != Space::Hbm {
            return format!("{} partition {} byte {}", space.name(), part, byte);
        }
        match self
            .hbm_names
            .iter()
            .find(|(_, lo, hi)| (*lo..*hi).contains(&byte))
        {
            Some((name, lo, _)) => format!(
                "hbm byte {byte} (tensor `{name}`, byte {} of it), never written before this read",
                byte - lo
            ),
            None => format!("hbm byte {byte}, never written before this read"),
        }
    }

    fn part_bytes(&self, space: Space) -> u64 {
        match space {
            Space::Hbm => self.hbm.len() as u64,
            Space::Sbuf => self.geometry.sbuf_partition_bytes as u64,
            Space::Psum => self.geometry.psum_partition_bytes as u64,
        }
    }

    /// The number of PSUM row writes so far; unchanged means PSUM is unchanged.
    pub fn psum_writes(&self) -> u64 {
        self.psum_writes
    }

    /// Checks a tile against the geometry and the partition rule and returns its region.
    pub fn tile(&self, t: &TileAp, at: At) -> Result<Region, RuntimeError> {
        let space = match t.mem {
            Mem::Sbuf => Space::Sbuf,
            Mem::Psum => Space::Psum,
        };
        let parts = t.partitions as usize;
        let p0 = t.partition as usize;
        let invalid = |detail: String| RuntimeError::Invalid { at, detail };
        if parts == 0 {
            return Err(invalid(format!("{} tile has no partitions", space.name())));
        }
        if p0 + parts > self.geometry.partitions as usize {
            return Err(RuntimeError::OutOfBounds {
                at,
                detail: format!(
                    "{} tile partitions {}..{} exceed the machine's {}",
                    space.name(),
                    p0,
                    p0 + parts,
                    self.geometry.partitions
                ),
            });
        }
        let start_ok = match parts {
            65.. => p0 == 0,
            33..=64 => p0 & 63 == 0,
            _ => p0 & 31 == 0,
        };
        if !start_ok {
            return Err(RuntimeError::OutOfBounds {
                at,
                detail: format!(
                    "a tile of {parts} partitions cannot start at partition {p0} \
                     (allowed: 0 for > 64, 0 or 64 for 33-64, multiples of 32 for <= 32)"
                ),
            });
        }
        if t.dims.is_empty() || t.dims.len() > isa::MAX_TILE_DIMS {
            return Err(invalid(format!(
                "{} tile has {} free dimensions (1..=4 allowed)",
                space.name(),
                t.dims.len()
            )));
        }
        let dims: SmallVec<[(u64, i64); 5]> = t
            .dims
            .iter()
            .map(|d| (d.size as u64, d.stride as i64))
            .collect();
        self.region(space, t.dtype, p0, parts, t.offset as u64, dims, at)
    }

    /// Checks an HBM pattern against the program's HBM and returns its region.
    pub fn hbm_region(&self, h: &HbmAp, at: At) -> Result<Region, RuntimeError> {
        if h.dims.is_empty() || h.dims.len() > isa::MAX_HBM_DIMS {
            return Err(RuntimeError::Invalid {
                at,
                detail: format!(
                    "hbm pattern has {} dimensions (1..=5 allowed)",
                    h.dims.len()
                ),
            });
        }
        let mut dims: SmallVec<[(u64, i64); 5]> = SmallVec::new();
        for d in &h.dims {
            if d.size > i64::MAX as u64 {
                return Err(RuntimeError::Invalid {
                    at,
                    detail: format!("hbm dimension of size {} is too large", d.size),
                });
            }
            dims.push((d.size, d.stride));
        }
        self.region(Space::Hbm, h.dtype, 0, 1, h.offset, dims, at)
    }

    #[allow(clippy::too_many_arguments)]
    fn region(
        &self,
        space: Space,
        dtype: Dtype,
        part0: usize,
        parts: usize,
        offset: u64,
        dims: SmallVec<[(u64, i64); 5]>,
        at: At,
    ) -> Result<Region, RuntimeError> {
        let mut free: u128 = 1;
        let (mut lo, mut hi) = (0i128, 0i128);
        for &(size, stride) in &dims {
            if size == 0 {
                return Err(RuntimeError::Invalid {
                    at,
                    detail: format!("{} pattern has an empty dimension", space.name()),
                });
            }
            free = free.saturating_mul(size as u128);
            let span = (size as i128 - 1) * stride as i128;
            if span < 0 {
                lo += span;
            } else {
                hi += span;
            }
        }
        let total = free.saturating_mul(parts as u128);
        if total > self.max_elems as u128 {
            return Err(RuntimeError::Invalid {
                at,
                detail: format!(
                    "{} pattern has {} elements, more than the limit of {} per instruction",
                    space.name(),
                    total,
                    self.max_elems
                ),
            });
        }
        let esz = dtype.size() as i128;
        let byte_lo = offset as i128 + lo * esz;
        let byte_hi = offset as i128 + hi * esz + esz;
        let limit = self.part_bytes(space) as i128;
        if byte_lo < 0 || byte_hi > limit {
            let what = match space {
                Space::Hbm => "of hbm".to_string(),
                _ => format!("of partitions {}..{}", part0, part0 + parts),
            };
            return Err(RuntimeError::OutOfBounds {
                at,
                detail: format!(
                    "{} bytes {}..{} {} exceed its {} bytes",
                    space.name(),
                    byte_lo,
                    byte_hi,
                    what,
                    limit
                ),
            });
        }
        if space == Space::Psum {
            let bank = self.geometry.psum_bank_bytes as i128;
            if byte_lo / bank != (byte_hi - 1) / bank {
                return Err(RuntimeError::OutOfBounds {
                    at,
                    detail: format!(
                        "psum bytes {byte_lo}..{byte_hi} cross a {bank}-byte bank boundary"
                    ),
                });
            }
        }
        Ok(Region {
            space,
            dtype,
            part0,
            parts,
            offset,
            dims,
            free: free as usize,
        })
    }

    /// The byte array of a space and the start of partition `part` in it.
    fn base(&self, space: Space, part: usize) -> (&[u8], usize) {
        match space {
            Space::Hbm => (&self.hbm, 0),
            Space::Sbuf => (
                &self.sbuf,
                part * self.geometry.sbuf_partition_bytes as usize,
            ),
            Space::Psum => (
                &self.psum,
                part * self.geometry.psum_partition_bytes as usize,
            ),
        }
    }

    fn base_mut(&mut self, space: Space, part: usize) -> (&mut [u8], usize) {
        match space {
            Space::Hbm => (&mut self.hbm, 0),
            Space::Sbuf => (
                &mut self.sbuf,
                part * self.geometry.sbuf_partition_bytes as usize,
            ),
            Space::Psum => (
                &mut self.psum,
                part * self.geometry.psum_partition_bytes as usize,
            ),
        }
    }

    fn bitmap_index(space: Space) -> Option<usize> {
        match space {
            Space::Hbm => Some(2),
            Space::Sbuf => Some(0),
            Space::Psum => Some(1),
        }
    }

    /// Calls `f(byte slice, element offset in the row)` for every run of partition `p`
    /// (tile-relative) of `r`, after the poison check.
    fn read_runs(
        &self,
        r: &Region,
        p: usize,
        at: At,
        mut f: impl FnMut(&[u8], usize),
    ) -> Result<(), RuntimeError> {
        let part = r.part0 + p;
        let (mem, start) = self.base(r.space, part);
        let esz = r.dtype.size() as usize;
        let bitmap = match (&self.written, Self::bitmap_index(r.space)) {
            (Some(maps), Some(i)) => Some(&maps[i]),
            _ => None,
        };
        let mut pos = 0usize;
        r.for_each_run(|rel, len| {
            let byte = (r.offset as i64 + rel * esz as i64) as usize;
            let n = len as usize * esz;
            let from = start + byte;
            if let Some(map) = bitmap {
                if let Some(bad) = map.first_clear(from, n) {
                    return Err(RuntimeError::PoisonRead {
                        at,
                        detail: self.describe_byte(r.space, part, bad - start),
                    });
                }
            }
            let bytes = mem.get(from..from + n).ok_or_else(|| internal_oob(r, at))?;
            f(bytes, pos);
            pos += len as usize;
            Ok(())
        })
    }

    /// Decodes partition `p` (tile-relative) of `r` into `row` (`r.free` values).
    pub fn read_row(
        &self,
        r: &Region,
        p: usize,
        row: &mut [f32],
        at: At,
    ) -> Result<(), RuntimeError> {
        let esz = r.dtype.size() as usize;
        self.read_runs(r, p, at, |bytes, pos| {
            let n = bytes.len() / esz;
            if let Some(out) = row.get_mut(pos..pos + n) {
                numeric::load(r.dtype, bytes, out);
            }
        })
    }

    /// Asks the host to start loading partition `p` (tile-relative) of `r` into its caches,
    /// without reading it: a hint that lets the misses of many rows overlap, since every
    /// partition of a tile is far from the previous one. No effect on results; does
    /// nothing on hosts without a prefetch instruction.
    pub fn prefetch_row(&self, r: &Region, p: usize) {
        let (mem, start) = self.base(r.space, r.part0 + p);
        let esz = r.dtype.size() as i64;
        let _ = r.for_each_run::<()>(|rel, len| {
            let from = start as i64 + r.offset as i64 + rel * esz;
            let n = len as i64 * esz;
            if let Some(bytes) = usize::try_from(from)
                .ok()
                .and_then(|f| mem.get(f..f + n as usize))
            {
                for line in bytes.chunks(64) {
                    prefetch(line);
                }
            }
            Ok(())
        });
    }

    /// Appends the raw bytes of partition `p` (tile-relative) of `r` to `out`.
    pub fn read_row_bytes(
        &self,
        r: &Region,
        p: usize,
        out: &mut Vec<u8>,
        at: At,
    ) -> Result<(), RuntimeError> {
        self.read_runs(r, p, at, |bytes, _| out.extend_from_slice(bytes))
    }

    /// Calls `f(byte slice, element offset in the row)` for every run of partition `p`
    /// (tile-relative) of `r`, and marks the bytes written.
    fn write_runs(
        &mut self,
        r: &Region,
        p: usize,
        at: At,
        mut f: impl FnMut(&mut [u8], usize),
    ) -> Result<(), RuntimeError> {
        let part = r.part0 + p;
        let esz = r.dtype.size() as usize;
        let map_index = Self::bitmap_index(r.space);
        if r.space == Space::Psum {
            self.psum_writes += 1;
        }
        let mut pos = 0usize;
        // Split the borrow: the bitmap and the byte array are separate fields.
        let mut written = self.written.take();
        let result = {
            let (mem, start) = self.base_mut(r.space, part);
            r.for_each_run(|rel, len| {
                let byte = (r.offset as i64 + rel * esz as i64) as usize;
                let n = len as usize * esz;
                let from = start + byte;
                let bytes = mem
                    .get_mut(from..from + n)
                    .ok_or_else(|| internal_oob(r, at))?;
                f(bytes, pos);
                if let (Some(maps), Some(i)) = (written.as_mut(), map_index) {
                    maps[i].set_range(from, n);
                }
                pos += len as usize;
                Ok(())
            })
        };
        self.written = written;
        result
    }

    /// Encodes `row` (`r.free` values) into partition `p` (tile-relative) of `r`.
    pub fn write_row(
        &mut self,
        r: &Region,
        p: usize,
        row: &[f32],
        at: At,
    ) -> Result<(), RuntimeError> {
        let esz = r.dtype.size() as usize;
        let dtype = r.dtype;
        self.write_runs(r, p, at, |bytes, pos| {
            let n = bytes.len() / esz;
            if let Some(vals) = row.get(pos..pos + n) {
                numeric::store(dtype, vals, bytes);
            }
        })
    }

    /// Decodes partition `p` (tile-relative) of `r` into `row` (`r.free` values) as
    /// integers, for the integer datapath ([`numeric::decode_i32`]).
    pub fn read_row_i32(
        &self,
        r: &Region,
        p: usize,
        row: &mut [i32],
        at: At,
    ) -> Result<(), RuntimeError> {
        let esz = r.dtype.size() as usize;
        let dtype = r.dtype;
        self.read_runs(r, p, at, |bytes, pos| {
            let from = pos.min(row.len());
            for (o, c) in row[from..].iter_mut().zip(bytes.chunks_exact(esz)) {
                let mut word = [0u8; 4];
                word[..esz].copy_from_slice(c);
                *o = numeric::decode_i32(dtype, u32::from_le_bytes(word));
            }
        })
    }

    /// Encodes the integers of `row` (`r.free` values) into partition `p` (tile-relative)
    /// of `r` ([`numeric::encode_i32`]).
    pub fn write_row_i32(
        &mut self,
        r: &Region,
        p: usize,
        row: &[i32],
        at: At,
    ) -> Result<(), RuntimeError> {
        let esz = r.dtype.size() as usize;
        let dtype = r.dtype;
        self.write_runs(r, p, at, |bytes, pos| {
            for (c, &x) in bytes.chunks_exact_mut(esz).zip(&row[pos.min(row.len())..]) {
                let word = numeric::encode_i32(dtype, x).to_le_bytes();
                c.copy_from_slice(&word[..esz]);
            }
        })
    }

    /// Writes raw bytes (`r.free` elements' worth) into partition `p` (tile-relative).
    pub fn write_row_bytes(
        &mut self,
        r: &Region,
        p: usize,
        data: &[u8],
        at: At,
    ) -> Result<(), RuntimeError> {
        let esz = r.dtype.size() as usize;
        self.write_runs(r, p, at, |bytes, pos| {
            let from = pos * esz;
            if let Some(src) = data.get(from..from + bytes.len()) {
                bytes.copy_from_slice(src);
            }
        })
    }
}

/// Hints the cache line holding the start of `bytes` into the caches.
#[inline(always)]
fn prefetch(bytes: &[u8]) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: a prefetch is only a hint; it never faults and reads no data into the
    // program, and the address is that of a live slice anyway. SSE is part of x86-64.
    unsafe {
        use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
        _mm_prefetch::<_MM_HINT_T0>(bytes.as_ptr().cast());
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = bytes;
}

/// An access that the region check should have excluded; reported, never a panic.
fn internal_oob(r: &Region, at: At) -> RuntimeError {
    RuntimeError::OutOfBounds {
        at,
        detail: format!("{} access outside its memory", r.space.name()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn region(dims: &[(u64, i64)]) -> Region {
        Region {
            space: Space::Hbm,
            dtype: Dtype::F32,
            part0: 0,
            parts: 1,
            offset: 0,
            dims: dims.iter().copied().collect(),
            free: dims.iter().map(|d| d.0 as usize).product(),
        }
    }

    fn runs(dims: &[(u64, i64)]) -> Vec<(i64, u64)> {
        let mut out = Vec::new();
        region(dims)
            .for_each_run::<()>(|b, l| {
                out.push((b, l));
                Ok(())
            })
            .unwrap();
        out
    }

    #[test]
    fn runs_merge_contiguous_dimensions() {
        assert_eq!(runs(&[(4, 8), (8, 1)]), vec![(0, 32)]);
        assert_eq!(runs(&[(2, 10), (3, 1)]), vec![(0, 3), (10, 3)]);
        assert_eq!(
            runs(&[(3, 1), (2, 3)]),
            vec![(0, 1), (3, 1), (1, 1), (4, 1), (2, 1), (5, 1)]
        );
        // Runs that meet across a non-mergeable dimension are still one run.
        assert_eq!(
            runs(&[(2, 13), (2, 10), (3, 1)]),
            vec![(0, 3), (10, 6), (23, 3)]
        );
        assert_eq!(runs(&[(1, 0), (5, 1)]), vec![(0, 5)]);
        assert_eq!(runs(&[(3, -1)]), vec![(0, 1), (-1, 1), (-2, 1)]);
    }

    #[test]
    fn bitmap_ranges() {
        let mut b = Bitmap::new(300);
        b.set_range(3, 130);
        assert_eq!(b.first_clear(3, 130), None);
        assert_eq!(b.first_clear(0, 10), Some(0));
        assert_eq!(b.first_clear(100, 100), Some(133));
    }
}
