//! The semantics of every opcode: what an instruction does to the memories, exactly as the
//! instruction table's doc comments state it.
//!
//! Tiles are processed partition by partition: a partition's inputs are decoded to f32 rows,
//! computed, and encoded back, so within a partition every read precedes every write and
//! in-place operations behave as if the whole row were read first. The Tensor engine
//! decodes both operands once into f32 blocks packed for `crate::kernels`, whose
//! vectorised micro-kernel (shared with a helper thread for large matmuls) keeps each
//! output element's summation order `k = 0, 1, .., K-1`; an accumulating matmul onto the
//! output the previous matmul left, with PSUM untouched since, starts from the kernel's
//! own copy of it instead of reading PSUM back.
//! All arithmetic goes through `crate::numeric` or plain f32 `+`/`*` (never fused, but in
//! the matmul kernel where every product is exact and fusing changes no bit), so
//! results are bit-identical on every run and host.

use crate::error::{At, RuntimeError};
use crate::kernels::{self, PARALLEL_MIN_MACS};
use crate::memory::{Memories, Region, Space};
use crate::numeric;
use isa::{
    ActFunc, Affine, AluOp, CmpOp, DmaAp, Engine, HbmAp, Imm, Inst, Mem, Op, ReduceOp, ScalarArg,
    TileAp,
};
use std::sync::Arc;

/// What the timing model needs to know about a DMA after executing it.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct DmaEffect {
    /// Bytes the data phase moves: the larger side's sum of runs, each at least the
    /// minimum run.
    pub effective_bytes: u64,
    /// Bytes read from HBM, written to HBM, and copied SBUF to SBUF.
    pub hbm_read: u64,
    pub hbm_write: u64,
    pub sbuf_to_sbuf: u64,
    /// Bytes written to the destination.
    pub bytes: u64,
}

/// How many partitions ahead of its reads the matmul prefetches its operands.
const PREFETCH_ROWS: usize = 8;

/// The executor: memories plus reusable scratch rows.
pub(crate) struct Executor {
    pub mem: Memories,
    min_run: u64,
    rows: [Vec<f32>; 4],
    /// Scratch rows of the integer datapath.
    irows: [Vec<i32>; 3],
    bytes: Vec<u8>,
    /// The Tensor engine's packed operands and output, reused by every matmul.
    mm_job: Arc<kernels::Job>,
    /// The matmul helper thread, started by the first large matmul (if the host has a
    /// second core).
    pool: Option<kernels::Pool>,
    pool_tried: bool,
    /// The output region of the last matmul and `Memories::psum_writes` right after it
    /// wrote it: while both match, `mm_job` still holds that output.
    mm_last: Option<(Region, u64)>,
}

/// A per-partition scalar operand after checking.
enum Scalar {
    Imm(f32),
    Tile(Region),
}

impl Executor {
    pub fn new(mem: Memories, min_run: u64) -> Executor {
        Executor {
            mem,
            min_run,
            rows: Default::default(),
            irows: Default::default(),
            bytes: Vec::new(),
            mm_job: Arc::default(),
            pool: None,
            pool_tried: false,
            mm_last: None,
        }
    }

    /// Checks a tile for an engine (GpSimd never touches PSUM) and returns its region.
    fn tile(&self, t: &TileAp, at: At) -> Result<Region, RuntimeError> {
        if at.engine == Engine::GpSimd && t.mem == Mem::Psum {
            return Err(invalid(at, "gpsimd cannot access psum".into()));
        }
        self.mem.tile(t, at)
    }

    fn scalar(&self, s: &ScalarArg, parts: usize, at: At) -> Result<Scalar, RuntimeError> {
        match s {
            ScalarArg::Imm(imm) => Ok(Scalar::Imm(imm.value())),
            ScalarArg::Ap(t) => {
                let r = self.tile(t, at)?;
                if r.parts != parts || r.free != 1 {
                    return Err(invalid(
                        at,
                        format!(
                            "scalar operand must be [{parts}, 1], is [{}, {}]",
                            r.parts, r.free
                        ),
                    ));
                }
                Ok(Scalar::Tile(r))
            }
        }
    }

    fn scalar_value(&self, s: &Scalar, p: usize, at: At) -> Result<f32, RuntimeError> {
        match s {
            Scalar::Imm(v) => Ok(*v),
            Scalar::Tile(r) => {
                let mut v = [0.0f32];
                self.mem.read_row(r, p, &mut v, at)?;
                Ok(v[0])
            }
        }
    }

    /// Executes one instruction. Returns the DMA effect for `dma`, `None` otherwise.
    pub fn execute(&mut self, inst: &Inst, at: At) -> Result<Option<DmaEffect>, RuntimeError> {
        if !inst.op.opcode().engines().contains(at.engine.class()) {
            return Err(invalid(
                at,
                format!("`{}` cannot run on {}", at.opcode.mnemonic(), at.engine),
            ));
        }
        if !matches!(inst.op, Op::Dma { .. }) && isa::integer_datapath(&inst.op) {
            return self.execute_int(&inst.op, at).map(|_| None);
        }
        match &inst.op {
            Op::Nop {} | Op::End {} => Ok(None),
            Op::Dma { dst, src } => self.dma(dst, src, at).map(Some),
            Op::DmaGather {
                dst,
                idx,
                src,
                wrap,
            } => self.dma_gather(dst, idx, src, *wrap, at).map(Some),
            Op::Matmul {
                out,
                stationary,
                moving,
                accumulate,
            } => self
                .matmul(out, stationary, moving, *accumulate, at)
                .map(|_| None),
            Op::Transpose { out, src } => self.transpose(out, src, Space::Psum, at).map(|_| None),
            Op::PartitionTranspose { out, src } => {
                self.transpose(out, src, Space::Sbuf, at).map(|_| None)
            }
            Op::TensorTensor { op, out, a, b } => {
                self.tensor_tensor(*op, out, a, b, at).map(|_| None)
            }
            Op::Select { out, mask, a, b } => self.select(out, mask, a, b, at).map(|_| None),
            Op::TensorScalar {
                out,
                src,
                op0,
                s0,
                op1,
                s1,
            } => self
                .tensor_scalar(out, src, *op0, s0, *op1, s1, at)
                .map(|_| None),
            Op::TensorReduce { op, out, src } => {
                self.tensor_reduce(*op, out, src, None, at).map(|_| None)
            }
            Op::TensorReduceScalar {
                op,
                out,
                src,
                op0,
                s0,
                op1,
                s1,
            } => self
                .tensor_reduce(*op, out, src, Some((*op0, s0, *op1, s1)), at)
                .map(|_| None),
            Op::TensorScan { out, src, carry } => {
                self.tensor_scan(out, src, carry.as_ref(), at).map(|_| None)
            }
            Op::TensorArgReduce {
                op,
                out,
                index,
                src,
                positions,
            } => self
                .tensor_arg_reduce(*op, out, index, src, positions.as_ref(), at)
                .map(|_| None),
            Op::TensorCopy { out, src } => self.tensor_copy(out, src, at).map(|_| None),
            Op::Memset { out, value } => self.memset(out, *value, at).map(|_| None),
            Op::Activate {
                out,
                src,
                func,
                scale,
                bias,
                accum,
            } => self
                .activate(out, src, *func, scale, bias, accum.as_ref(), at)
                .map(|_| None),
            Op::Iota { out, expr } => self.iota(out, expr, at).map(|_| None),
            Op::AffineSelect {
                out,
                src,
                cmp,
                expr,
                fill,
            } => self
                .affine_select(out, src, *cmp, expr, *fill, at)
                .map(|_| None),
        }
    }

    fn dma_side(&self, side: &DmaAp, at: At) -> Result<Region, RuntimeError> {
        match side {
            DmaAp::Hbm(h) => self.mem.hbm_region(h, at),
            DmaAp::Tile(t) => {
                if t.mem == Mem::Psum {
                    return Err(invalid(at, "dma cannot access psum".into()));
                }
                self.mem.tile(t, at)
            }
        }
    }

    fn dma(&mut self, dst: &DmaAp, src: &DmaAp, at: At) -> Result<DmaEffect, RuntimeError> {
        let s = self.dma_side(src, at)?;
        let d = self.dma_side(dst, at)?;
        if s.elems() != d.elems() {
            return Err(invalid(
                at,
                format!(
                    "dma source has {} elements, destination {}",
                    s.elems(),
                    d.elems()
                ),
            ));
        }
        if s.dtype == d.dtype {
            // Same dtype: an exact bit copy.
            let mut buf = std::mem::take(&mut self.bytes);
            buf.clear();
            for p in 0..s.parts {
                self.mem.read_row_bytes(&s, p, &mut buf, at)?;
            }
            let row = d.free * d.dtype.size() as usize;
            let mut result = Ok(());
            for p in 0..d.parts {
                let chunk = buf.get(p * row..(p + 1) * row).unwrap_or(&[]);
                result = self.mem.write_row_bytes(&d, p, chunk, at);
                if result.is_err() {
                    break;
                }
            }
            self.bytes = buf;
            result?;
        } else if s.dtype == isa::Dtype::I32 {
            // The integer datapath: an `i32` source converts exactly, never through f32.
            let mut buf = std::mem::take(&mut self.irows[0]);
            buf.clear();
            buf.resize(s.elems(), 0);
            let mut result = Ok(());
            for p in 0..s.parts {
                let row = &mut buf[p * s.free..(p + 1) * s.free];
                result = self.mem.read_row_i32(&s, p, row, at);
                if result.is_err() {
                    break;
                }
            }
            if result.is_ok() {
                for p in 0..d.parts {
                    result = self
                        .mem
                        .write_row_i32(&d, p, &buf[p * d.free..(p + 1) * d.free], at);
                    if result.is_err() {
                        break;
                    }
                }
            }
            self.irows[0] = buf;
            result?;
        } else {
            let mut buf = std::mem::take(&mut self.rows[0]);
            buf.clear();
            buf.resize(s.elems(), 0.0);
            let mut result = Ok(());
            for p in 0..s.parts {
                let row = &mut buf[p * s.free..(p + 1) * s.free];
                result = self.mem.read_row(&s, p, row, at);
                if result.is_err() {
                    break;
                }
            }
            if result.is_ok() {
                for p in 0..d.parts {
                    result = self
                        .mem
                        .write_row(&d, p, &buf[p * d.free..(p + 1) * d.free], at);
                    if result.is_err() {
                        break;
                    }
                }
            }
            self.rows[0] = buf;
            result?;
        }
        let mut e = DmaEffect {
            effective_bytes: s
                .effective_bytes(self.min_run)
                .max(d.effective_bytes(self.min_run)),
            bytes: d.bytes(),
            ..DmaEffect::default()
        };
        match (s.space, d.space) {
            (Space::Hbm, Space::Hbm) => {
                e.hbm_read = s.bytes();
                e.hbm_write = d.bytes();
            }
            (Space::Hbm, _) => e.hbm_read = s.bytes(),
            (_, Space::Hbm) => e.hbm_write = d.bytes(),
            _ => e.sbuf_to_sbuf = d.bytes(),
        }
        Ok(e)
    }

    /// The indirect DMA: partition `p` of `dst` gets row `idx[p]` of `src`. Every index is
    /// read and checked, and every row's region made, before any row is read, so that a
    /// fault (an index out of range) reads no row and writes nothing.
    fn dma_gather(
        &mut self,
        dst: &TileAp,
        idx: &TileAp,
        src: &HbmAp,
        wrap: bool,
        at: At,
    ) -> Result<DmaEffect, RuntimeError> {
        let d = self.dma_side(&DmaAp::Tile(dst.clone()), at)?;
        let ix = self.dma_side(&DmaAp::Tile(idx.clone()), at)?;
        if ix.dtype != isa::Dtype::I32 || ix.parts != d.parts || ix.free != 1 {
            return Err(invalid(
                at,
                format!(
                    "idx must be i32 [{}, 1], is {} [{}, {}]",
                    d.parts, ix.dtype, ix.parts, ix.free
                ),
            ));
        }
        let (Some(first), true) = (src.dims.first(), src.dims.len() >= 2) else {
            return Err(invalid(
                at,
                "src needs the indexed dimension and a row pattern".into(),
            ));
        };
        let rows = first.size;
        let row_ap = |r: u64| -> Option<HbmAp> {
            let esz = src.dtype.size() as i128;
            let offset = src.offset as i128 + r as i128 * first.stride as i128 * esz;
            Some(HbmAp {
                dtype: src.dtype,
                offset: u64::try_from(offset).ok()?,
                dims: src.dims[1..].iter().copied().collect(),
            })
        };
        let mut raw = std::mem::take(&mut self.bytes);
        raw.clear();
        let mut regions = Vec::with_capacity(d.parts);
        let mut result = Ok(());
        for p in 0..d.parts {
            raw.clear();
            if let Err(e) = self.mem.read_row_bytes(&ix, p, &mut raw, at) {
                result = Err(e);
                break;
            }
            let index = i32::from_le_bytes([raw[0], raw[1], raw[2], raw[3]]);
            let r = i64::from(index) + if wrap && index < 0 { rows as i64 } else { 0 };
            if r < 0 || r as u64 >= rows {
                result = Err(RuntimeError::IndexFault {
                    at,
                    partition: p as u32,
                    index,
                    rows,
                    wrap,
                });
                break;
            }
            let region = row_ap(r as u64)
                .ok_or_else(|| invalid(at, format!("row {r} of src lies before HBM")))
                .and_then(|ap| self.mem.hbm_region(&ap, at));
            match region {
                Ok(region) if region.elems() == d.free => regions.push(region),
                Ok(region) => {
                    result = Err(invalid(
                        at,
                        format!(
                            "a row of src has {} elements, dst {} per partition",
                            region.elems(),
                            d.free
                        ),
                    ));
                    break;
                }
                Err(e) => {
                    result = Err(e);
                    break;
                }
            }
        }
        self.bytes = raw;
        result?;
        let mut e = DmaEffect {
            bytes: d.bytes(),
            ..DmaEffect::default()
        };
        let mut src_effective = 0u64;
        if regions.first().is_some_and(|r| r.dtype == d.dtype) {
            // Same dtype: exact bit copies, row by row.
            let mut buf = std::mem::take(&mut self.bytes);
            let mut result = Ok(());
            for (p, region) in regions.iter().enumerate() {
                buf.clear();
                result = self
                    .mem
                    .read_row_bytes(region, 0, &mut buf, at)
                    .and_then(|_| self.mem.write_row_bytes(&d, p, &buf, at));
                if result.is_err() {
                    break;
                }
            }
            self.bytes = buf;
            result?;
        } else {
            let mut buf = std::mem::take(&mut self.rows[0]);
            buf.clear();
            buf.resize(d.free, 0.0);
            let mut result = Ok(());
            for (p, region) in regions.iter().enumerate() {
                result = self
                    .mem
                    .read_row(region, 0, &mut buf, at)
                    .and_then(|_| self.mem.write_row(&d, p, &buf, at));
                if result.is_err() {
                    break;
                }
            }
            self.rows[0] = buf;
            result?;
        }
        for region in &regions {
            src_effective = src_effective.saturating_add(region.effective_bytes(self.min_run));
            e.hbm_read = e.hbm_read.saturating_add(region.bytes());
        }
        e.effective_bytes = src_effective.max(d.effective_bytes(self.min_run));
        Ok(e)
    }

    /// Reads every partition of `r` into one row-major matrix `[parts, free]`.
    fn read_matrix(&self, r: &Region, out: &mut Vec<f32>, at: At) -> Result<(), RuntimeError> {
        out.clear();
        out.resize(r.elems(), 0.0);
        for p in 0..r.parts {
            self.mem
                .read_row(r, p, &mut out[p * r.free..(p + 1) * r.free], at)?;
        }
        Ok(())
    }

    fn matmul(
        &mut self,
        out: &TileAp,
        stationary: &TileAp,
        moving: &TileAp,
        accumulate: bool,
        at: At,
    ) -> Result<(), RuntimeError> {
        let st = self.tile(stationary, at)?;
        let mv = self.tile(moving, at)?;
        let o = self.tile(out, at)?;
        if st.space != Space::Sbuf || mv.space != Space::Sbuf || o.space != Space::Psum {
            return Err(invalid(
                at,
                "stationary and moving must be in sbuf, out in psum".into(),
            ));
        }
        let (k, m, n) = (st.parts, st.free, mv.free);
        if mv.parts != k {
            return Err(invalid(
                at,
                format!("stationary has K = {k} partitions, moving {}", mv.parts),
            ));
        }
        if m > 128 || n > 512 {
            return Err(invalid(
                at,
                format!("matmul M = {m} (at most 128), N = {n} (at most 512)"),
            ));
        }
        if o.parts != m || o.free != n {
            return Err(invalid(
                at,
                format!("out must be [{m}, {n}], is [{}, {}]", o.parts, o.free),
            ));
        }
        let mut job = std::mem::take(&mut self.mm_job);
        // Taken, so that an error on the way leaves no claim on what PSUM holds.
        let mut last = self.mm_last.take();
        if Arc::get_mut(&mut job).is_none() {
            // Unreachable (`Pool::run` returns only after the helpers let go), but a fresh
            // job is always correct.
            job = Arc::default();
            last = None;
        }
        let mut row = std::mem::take(&mut self.rows[0]);
        row.resize(m.max(n), 0.0);
        let result = (|| {
            let j = Arc::get_mut(&mut job).ok_or_else(|| invalid(at, "matmul busy".into()))?;
            j.reset(k, m, n);
            // An accumulating matmul whose output the previous matmul wrote, with PSUM
            // unchanged since, starts from the values still in the job: f32 PSUM holds them
            // exactly (a NaN aside, whose payload cannot reach memory), so reading them
            // back would change nothing.
            let reuse = accumulate
                && o.dtype == isa::Dtype::F32
                && matches!(&last, Some((r, w)) if *r == o && *w == self.mem.psum_writes());
            let psum_rows = if accumulate && !reuse { m } else { 0 };
            // The operand rows in the order they are read: stationary, moving, then the
            // PSUM rows an accumulating matmul starts from. Each is in another partition,
            // far from the last, so prefetching a few rows ahead overlaps their cache
            // misses instead of waiting for each in turn.
            let nth = |i: usize| match i {
                _ if i < k => Some((&st, i)),
                _ if i < 2 * k => Some((&mv, i - k)),
                _ if i < 2 * k + psum_rows => Some((&o, i - 2 * k)),
                _ => None,
            };
            for i in 0..PREFETCH_ROWS {
                if let Some((r, p)) = nth(i) {
                    self.mem.prefetch_row(r, p);
                }
            }
            for i in 0..2 * k + psum_rows {
                if let Some((r, p)) = nth(i + PREFETCH_ROWS) {
                    self.mem.prefetch_row(r, p);
                }
                if i < k {
                    self.mem.read_row(&st, i, &mut row[..m], at)?;
                    j.set_stationary_row(i, &row[..m]);
                } else if i < 2 * k {
                    self.mem.read_row(&mv, i - k, &mut row[..n], at)?;
                    j.set_moving_row(i - k, &row[..n]);
                } else {
                    self.mem.read_row(&o, i - 2 * k, &mut row[..n], at)?;
                    j.set_output_row(i - 2 * k, &row[..n]);
                }
            }
            if !accumulate {
                j.zero_output();
            }
            if !self.pool_tried && j.macs() >= PARALLEL_MIN_MACS {
                self.pool_tried = true;
                self.pool = kernels::Pool::new();
            }
            match &self.pool {
                Some(pool) => pool.run(&mut job),
                None => j.run(),
            }
            let j = Arc::get_mut(&mut job).ok_or_else(|| invalid(at, "matmul busy".into()))?;
            for mi in 0..m {
                j.output_row(mi, &mut row[..n]);
                self.mem.write_row(&o, mi, &row[..n], at)?;
            }
            self.mm_last = Some((o.clone(), self.mem.psum_writes()));
            Ok(())
        })();
        self.rows[0] = row;
        self.mm_job = job;
        result
    }

    /// `out = src^T`, `src` in SBUF and `out` in `out_space` (PSUM for the Tensor engine's
    /// `transpose`, SBUF for GpSimd's `partition_transpose`).
    fn transpose(
        &mut self,
        out: &TileAp,
        src: &TileAp,
        out_space: Space,
        at: At,
    ) -> Result<(), RuntimeError> {
        let s = self.tile(src, at)?;
        let o = self.tile(out, at)?;
        if s.space != Space::Sbuf || o.space != out_space {
            let to = if out_space == Space::Psum {
                "psum"
            } else {
                "sbuf"
            };
            return Err(invalid(
                at,
                format!("this transpose reads sbuf and writes {to}"),
            ));
        }
        let (p, f) = (s.parts, s.free);
        if f > 128 {
            return Err(invalid(
                at,
                format!("transpose source has {f} free elements (at most 128)"),
            ));
        }
        if o.parts != f || o.free != p {
            return Err(invalid(
                at,
                format!("out must be [{f}, {p}], is [{}, {}]", o.parts, o.free),
            ));
        }
        let mut buf = std::mem::take(&mut self.rows[0]);
        let mut row = std::mem::take(&mut self.rows[1]);
        let result = (|| {
            self.read_matrix(&s, &mut buf, at)?;
            row.clear();
            row.resize(p, 0.0);
            for fi in 0..f {
                for (pi, r) in row.iter_mut().enumerate() {
                    *r = buf[pi * f + fi];
                }
                self.mem.write_row(&o, fi, &row, at)?;
            }
            Ok(())
        })();
        self.rows[0] = buf;
        self.rows[1] = row;
        result
    }

    /// Checks that `r` has the shape `[parts, free]` of the instruction's first operand.
    fn same_shape(
        r: &Region,
        parts: usize,
        free: usize,
        what: &str,
        at: At,
    ) -> Result<(), RuntimeError> {
        if r.parts != parts || r.free != free {
            return Err(invalid(
                at,
                format!(
                    "{what} is [{}, {}], expected [{parts}, {free}]",
                    r.parts, r.free
                ),
            ));
        }
        Ok(())
    }

    fn tensor_tensor(
        &mut self,
        op: AluOp,
        out: &TileAp,
        a: &TileAp,
        b: &TileAp,
        at: At,
    ) -> Result<(), RuntimeError> {
        let ra = self.tile(a, at)?;
        let rb = self.tile(b, at)?;
        let ro = self.tile(out, at)?;
        Self::same_shape(&rb, ra.parts, ra.free, "b", at)?;
        Self::same_shape(&ro, ra.parts, ra.free, "out", at)?;
        let mut x = std::mem::take(&mut self.rows[0]);
        let mut y = std::mem::take(&mut self.rows[1]);
        x.resize(ra.free, 0.0);
        y.resize(ra.free, 0.0);
        let result = (|| {
            for p in 0..ra.parts {
                self.mem.read_row(&ra, p, &mut x, at)?;
                self.mem.read_row(&rb, p, &mut y, at)?;
                for (u, &v) in x.iter_mut().zip(y.iter()) {
                    *u = numeric::alu(op, *u, v);
                }
                self.mem.write_row(&ro, p, &x, at)?;
            }
            Ok(())
        })();
        self.rows[0] = x;
        self.rows[1] = y;
        result
    }

    /// `out = mask != 0 ? a : b`, row by row.
    fn select(
        &mut self,
        out: &TileAp,
        mask: &TileAp,
        a: &TileAp,
        b: &TileAp,
        at: At,
    ) -> Result<(), RuntimeError> {
        let rm = self.tile(mask, at)?;
        let ra = self.tile(a, at)?;
        let rb = self.tile(b, at)?;
        let ro = self.tile(out, at)?;
        Self::same_shape(&ra, rm.parts, rm.free, "a", at)?;
        Self::same_shape(&rb, rm.parts, rm.free, "b", at)?;
        Self::same_shape(&ro, rm.parts, rm.free, "out", at)?;
        let mut m = vec![0f32; rm.free];
        let mut x = vec![0f32; rm.free];
        let mut y = vec![0f32; rm.free];
        for p in 0..rm.parts {
            self.mem.read_row(&rm, p, &mut m, at)?;
            self.mem.read_row(&ra, p, &mut x, at)?;
            self.mem.read_row(&rb, p, &mut y, at)?;
            for ((u, &c), &v) in x.iter_mut().zip(&m).zip(&y) {
                if c == 0.0 {
                    *u = v;
                }
            }
            self.mem.write_row(&ro, p, &x, at)?;
        }
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    fn tensor_scalar(
        &mut self,
        out: &TileAp,
        src: &TileAp,
        op0: AluOp,
        s0: &ScalarArg,
        op1: AluOp,
        s1: &ScalarArg,
        at: At,
    ) -> Result<(), RuntimeError> {
        let rs = self.tile(src, at)?;
        let ro = self.tile(out, at)?;
        Self::same_shape(&ro, rs.parts, rs.free, "out", at)?;
        let a0 = self.scalar(s0, rs.parts, at)?;
        let a1 = self.scalar(s1, rs.parts, at)?;
        let mut x = std::mem::take(&mut self.rows[0]);
        x.resize(rs.free, 0.0);
        let result = (|| {
            for p in 0..rs.parts {
                let v0 = self.scalar_value(&a0, p, at)?;
                let v1 = self.scalar_value(&a1, p, at)?;
                self.mem.read_row(&rs, p, &mut x, at)?;
                for u in x.iter_mut() {
                    *u = numeric::alu(op1, numeric::alu(op0, *u, v0), v1);
                }
                self.mem.write_row(&ro, p, &x, at)?;
            }
            Ok(())
        })();
        self.rows[0] = x;
        result
    }

    /// `tensor_reduce`, and with `post` (`op0, s0, op1, s1`) `tensor_reduce_scalar`: each
    /// f32 result goes through the two operations before its one rounding on write.
    fn tensor_reduce(
        &mut self,
        op: ReduceOp,
        out: &TileAp,
        src: &TileAp,
        post: Option<(AluOp, &ScalarArg, AluOp, &ScalarArg)>,
        at: At,
    ) -> Result<(), RuntimeError> {
        let rs = self.tile(src, at)?;
        let ro = self.tile(out, at)?;
        let inner = rs.dims.last().map(|d| d.0 as usize).unwrap_or(1).max(1);
        Self::same_shape(&ro, rs.parts, rs.free / inner, "out", at)?;
        let post = match post {
            Some((op0, s0, op1, s1)) => Some((
                op0,
                self.scalar(s0, rs.parts, at)?,
                op1,
                self.scalar(s1, rs.parts, at)?,
            )),
            None => None,
        };
        let alu = match op {
            ReduceOp::Add => AluOp::Add,
            ReduceOp::Max => AluOp::Max,
            ReduceOp::Min => AluOp::Min,
        };
        let mut x = std::mem::take(&mut self.rows[0]);
        let mut y = std::mem::take(&mut self.rows[1]);
        x.resize(rs.free, 0.0);
        y.resize(ro.free, 0.0);
        let result = (|| {
            for p in 0..rs.parts {
                self.mem.read_row(&rs, p, &mut x, at)?;
                for (r, group) in y.iter_mut().zip(x.chunks_exact(inner)) {
                    let mut acc = group[0];
                    for &v in &group[1..] {
                        acc = numeric::alu(alu, acc, v);
                    }
                    *r = acc;
                }
                if let Some((op0, a0, op1, a1)) = &post {
                    let v0 = self.scalar_value(a0, p, at)?;
                    let v1 = self.scalar_value(a1, p, at)?;
                    for r in y.iter_mut() {
                        *r = numeric::alu(*op1, numeric::alu(*op0, *r, v0), v1);
                    }
                }
                self.mem.write_row(&ro, p, &y, at)?;
            }
            Ok(())
        })();
        self.rows[0] = x;
        self.rows[1] = y;
        result
    }

    /// Partition `p` of an `i32` region as integers, read exactly from its bytes.
    fn read_ints(
        &self,
        r: &Region,
        p: usize,
        out: &mut Vec<i32>,
        at: At,
    ) -> Result<(), RuntimeError> {
        let mut bytes = Vec::with_capacity(r.free * 4);
        self.mem.read_row_bytes(r, p, &mut bytes, at)?;
        out.clear();
        out.extend(
            bytes
                .chunks_exact(4)
                .map(|b| i32::from_le_bytes([b[0], b[1], b[2], b[3]])),
        );
        Ok(())
    }

    /// Writes integers exactly into partition `p` of an `i32` region.
    fn write_ints(
        &mut self,
        r: &Region,
        p: usize,
        vals: &[i32],
        at: At,
    ) -> Result<(), RuntimeError> {
        let bytes: Vec<u8> = vals.iter().flat_map(|v| v.to_le_bytes()).collect();
        self.mem.write_row_bytes(r, p, &bytes, at)
    }

    /// `tensor_scan`: the in-order running sum of each line of the innermost dimension,
    /// from the line's carry when given; f32 accumulation (wrapping `i32` for `i32`).
    fn tensor_scan(
        &mut self,
        out: &TileAp,
        src: &TileAp,
        carry: Option<&TileAp>,
        at: At,
    ) -> Result<(), RuntimeError> {
        let rs = self.tile(src, at)?;
        let ro = self.tile(out, at)?;
        Self::same_shape(&ro, rs.parts, rs.free, "out", at)?;
        let inner = rs.dims.last().map(|d| d.0 as usize).unwrap_or(1).max(1);
        let lines = rs.free / inner;
        let rc = match carry {
            Some(c) => {
                let r = self.tile(c, at)?;
                Self::same_shape(&r, rs.parts, lines, "carry", at)?;
                Some(r)
            }
            None => None,
        };
        let int = src.dtype == isa::Dtype::I32;
        if int {
            let (mut x, mut c) = (Vec::new(), Vec::new());
            for p in 0..rs.parts {
                self.read_ints(&rs, p, &mut x, at)?;
                if let Some(r) = &rc {
                    self.read_ints(r, p, &mut c, at)?;
                }
                for (l, line) in x.chunks_exact_mut(inner).enumerate() {
                    let mut acc = line[0];
                    if let Some(&carry) = c.get(l).filter(|_| rc.is_some()) {
                        acc = carry.wrapping_add(acc);
                    }
                    line[0] = acc;
                    for v in &mut line[1..] {
                        acc = acc.wrapping_add(*v);
                        *v = acc;
                    }
                }
                self.write_ints(&ro, p, &x, at)?;
            }
            return Ok(());
        }
        let mut x = std::mem::take(&mut self.rows[0]);
        let mut c = std::mem::take(&mut self.rows[1]);
        x.resize(rs.free, 0.0);
        c.resize(lines, 0.0);
        // The running values are kept in f32 and rounded to `out`'s dtype on write
        // (`write_row` rounds each element), so the accumulator never sees that rounding.
        let result = (|| {
            for p in 0..rs.parts {
                self.mem.read_row(&rs, p, &mut x, at)?;
                if let Some(r) = &rc {
                    self.mem.read_row(r, p, &mut c, at)?;
                }
                for (l, line) in x.chunks_exact_mut(inner).enumerate() {
                    let mut acc = line[0];
                    if rc.is_some() {
                        // The carry comes first in the scan's order; IEEE addition is
                        // commutative, and NaNs reach memory canonical.
                        acc += c[l];
                    }
                    line[0] = acc;
                    for v in &mut line[1..] {
                        acc += *v;
                        *v = acc;
                    }
                }
                self.mem.write_row(&ro, p, &x, at)?;
            }
            Ok(())
        })();
        self.rows[0] = x;
        self.rows[1] = c;
        result
    }

    /// `tensor_arg_reduce`: the first maximum (minimum) of each line and its position,
    /// the first NaN winning outright.
    #[allow(clippy::too_many_arguments)]
    fn tensor_arg_reduce(
        &mut self,
        op: ReduceOp,
        out: &TileAp,
        index: &TileAp,
        src: &TileAp,
        positions: Option<&TileAp>,
        at: At,
    ) -> Result<(), RuntimeError> {
        let max = match op {
            ReduceOp::Max => true,
            ReduceOp::Min => false,
            ReduceOp::Add => {
                return Err(invalid(at, "tensor_arg_reduce takes max or min".into()));
            }
        };
        let rs = self.tile(src, at)?;
        let ro = self.tile(out, at)?;
        let ri = self.tile(index, at)?;
        let inner = rs.dims.last().map(|d| d.0 as usize).unwrap_or(1).max(1);
        let lines = rs.free / inner;
        Self::same_shape(&ro, rs.parts, lines, "out", at)?;
        Self::same_shape(&ri, rs.parts, lines, "index", at)?;
        if index.dtype != isa::Dtype::I32 {
            return Err(invalid(at, "index must be i32".into()));
        }
        let rp = match positions {
            Some(t) => {
                if t.dtype != isa::Dtype::I32 {
                    return Err(invalid(at, "positions must be i32".into()));
                }
                let r = self.tile(t, at)?;
                Self::same_shape(&r, rs.parts, rs.free, "positions", at)?;
                Some(r)
            }
            None => None,
        };
        let int = src.dtype == isa::Dtype::I32;
        let mut x = std::mem::take(&mut self.rows[0]);
        let mut y = std::mem::take(&mut self.rows[1]);
        x.resize(rs.free, 0.0);
        y.resize(lines, 0.0);
        let (mut xi, mut pos, mut idx) = (Vec::new(), Vec::new(), vec![0i32; lines]);
        let result = (|| {
            for p in 0..rs.parts {
                if int {
                    self.read_ints(&rs, p, &mut xi, at)?;
                } else {
                    self.mem.read_row(&rs, p, &mut x, at)?;
                }
                if let Some(r) = &rp {
                    self.read_ints(r, p, &mut pos, at)?;
                }
                for l in 0..lines {
                    let base = l * inner;
                    let best = if int {
                        let line = &xi[base..base + inner];
                        let mut b = 0;
                        for (j, &v) in line.iter().enumerate().skip(1) {
                            if (max && v > line[b]) || (!max && v < line[b]) {
                                b = j;
                            }
                        }
                        y[l] = line[b] as f32;
                        b
                    } else {
                        let line = &x[base..base + inner];
                        let mut b = 0;
                        if !line[0].is_nan() {
                            for (j, &v) in line.iter().enumerate().skip(1) {
                                if v.is_nan() {
                                    b = j;
                                    break;
                                }
                                if (max && v > line[b]) || (!max && v < line[b]) {
                                    b = j;
                                }
                            }
                        }
                        y[l] = line[b];
                        b
                    };
                    idx[l] = if rp.is_some() {
                        pos[base + best]
                    } else {
                        best as i32
                    };
                }
                if int && out.dtype == isa::Dtype::I32 {
                    // The value of an i32 line, exact.
                    let vals: Vec<i32> = (0..lines)
                        .map(|l| {
                            let base = l * inner;
                            let line = &xi[base..base + inner];
                            let pick = if max {
                                line.iter().copied().max()
                            } else {
                                line.iter().copied().min()
                            };
                            pick.unwrap_or(0)
                        })
                        .collect();
                    self.write_ints(&ro, p, &vals, at)?;
                } else {
                    self.mem.write_row(&ro, p, &y, at)?;
                }
                self.write_ints(&ri, p, &idx, at)?;
            }
            Ok(())
        })();
        self.rows[0] = x;
        self.rows[1] = y;
        result
    }

    fn tensor_copy(&mut self, out: &TileAp, src: &TileAp, at: At) -> Result<(), RuntimeError> {
        let rs = self.tile(src, at)?;
        let ro = self.tile(out, at)?;
        Self::same_shape(&ro, rs.parts, rs.free, "out", at)?;
        let mut x = std::mem::take(&mut self.rows[0]);
        x.resize(rs.free, 0.0);
        let result = (|| {
            for p in 0..rs.parts {
                self.mem.read_row(&rs, p, &mut x, at)?;
                self.mem.write_row(&ro, p, &x, at)?;
            }
            Ok(())
        })();
        self.rows[0] = x;
        result
    }

    fn memset(&mut self, out: &TileAp, value: Imm, at: At) -> Result<(), RuntimeError> {
        let ro = self.tile(out, at)?;
        let mut x = std::mem::take(&mut self.rows[0]);
        x.clear();
        x.resize(ro.free, value.value());
        let result = (|| {
            for p in 0..ro.parts {
                self.mem.write_row(&ro, p, &x, at)?;
            }
            Ok(())
        })();
        self.rows[0] = x;
        result
    }

    #[allow(clippy::too_many_arguments)]
    fn activate(
        &mut self,
        out: &TileAp,
        src: &TileAp,
        func: ActFunc,
        scale: &ScalarArg,
        bias: &ScalarArg,
        accum: Option<&TileAp>,
        at: At,
    ) -> Result<(), RuntimeError> {
        let rs = self.tile(src, at)?;
        let ro = self.tile(out, at)?;
        Self::same_shape(&ro, rs.parts, rs.free, "out", at)?;
        let sc = self.scalar(scale, rs.parts, at)?;
        let bi = self.scalar(bias, rs.parts, at)?;
        let ra = match accum {
            Some(t) => {
                let r = self.tile(t, at)?;
                Self::same_shape(&r, rs.parts, 1, "accum", at)?;
                Some(r)
            }
            None => None,
        };
        let mut x = std::mem::take(&mut self.rows[0]);
        x.resize(rs.free, 0.0);
        let result = (|| {
            for p in 0..rs.parts {
                let s = self.scalar_value(&sc, p, at)?;
                let b = self.scalar_value(&bi, p, at)?;
                self.mem.read_row(&rs, p, &mut x, at)?;
                for u in x.iter_mut() {
                    let scaled = *u * s;
                    let biased = scaled + b;
                    *u = numeric::act(func, biased);
                }
                if let Some(ra) = &ra {
                    let mut sum = x.first().copied().unwrap_or(0.0);
                    for &v in x.iter().skip(1) {
                        sum += v;
                    }
                    self.mem.write_row(ra, p, &[sum], at)?;
                }
                self.mem.write_row(&ro, p, &x, at)?;
            }
            Ok(())
        })();
        self.rows[0] = x;
        result
    }

    /// Fills `row` with the affine expression's value for every element of partition `p`
    /// (tile-relative) of `r`, in row-major order.
    fn affine_row(
        r: &Region,
        expr: &Affine,
        p: usize,
        row: &mut Vec<i64>,
        at: At,
    ) -> Result<(), RuntimeError> {
        if expr.steps.len() != r.dims.len() {
            return Err(invalid(
                at,
                format!(
                    "affine expression has {} steps, the tile {} dimensions",
                    expr.steps.len(),
                    r.dims.len()
                ),
            ));
        }
        row.clear();
        // Within the element limit the exact value fits in i64; wrapping arithmetic only
        // keeps an absurd program from panicking.
        let start =
            (expr.base as i64).wrapping_add((expr.partition_step as i64).wrapping_mul(p as i64));
        let mut idx = [0u64; isa::MAX_TILE_DIMS];
        let nd = r.dims.len();
        let mut value = start;
        for _ in 0..r.free {
            row.push(value);
            let mut d = nd;
            while d > 0 {
                d -= 1;
                let step = expr.steps[d] as i64;
                idx[d] += 1;
                value = value.wrapping_add(step);
                if idx[d] < r.dims[d].0 {
                    break;
                }
                value = value.wrapping_sub(step.wrapping_mul(r.dims[d].0 as i64));
                idx[d] = 0;
            }
        }
        Ok(())
    }

    fn iota(&mut self, out: &TileAp, expr: &Affine, at: At) -> Result<(), RuntimeError> {
        let ro = self.tile(out, at)?;
        let mut x = std::mem::take(&mut self.rows[0]);
        let mut ints = Vec::with_capacity(ro.free);
        let result = (|| {
            for p in 0..ro.parts {
                Self::affine_row(&ro, expr, p, &mut ints, at)?;
                x.clear();
                // `as` converts an integer to the nearest f32, ties to even.
                x.extend(ints.iter().map(|&v| v as f32));
                self.mem.write_row(&ro, p, &x, at)?;
            }
            Ok(())
        })();
        self.rows[0] = x;
        result
    }

    fn affine_select(
        &mut self,
        out: &TileAp,
        src: &TileAp,
        cmp: CmpOp,
        expr: &Affine,
        fill: Imm,
        at: At,
    ) -> Result<(), RuntimeError> {
        let rs = self.tile(src, at)?;
        let ro = self.tile(out, at)?;
        Self::same_shape(&rs, ro.parts, ro.free, "src", at)?;
        let fill = fill.value();
        let mut x = std::mem::take(&mut self.rows[0]);
        x.resize(ro.free, 0.0);
        let mut ints = Vec::with_capacity(ro.free);
        let result = (|| {
            for p in 0..ro.parts {
                Self::affine_row(&ro, expr, p, &mut ints, at)?;
                self.mem.read_row(&rs, p, &mut x, at)?;
                for (u, &e) in x.iter_mut().zip(ints.iter()) {
                    let keep = match cmp {
                        CmpOp::Ge => e >= 0,
                        CmpOp::Gt => e > 0,
                        CmpOp::Le => e <= 0,
                        CmpOp::Lt => e < 0,
                        CmpOp::Eq => e == 0,
                        CmpOp::Ne => e != 0,
                    };
                    if !keep {
                        *u = fill;
                    }
                }
                self.mem.write_row(&ro, p, &x, at)?;
            }
            Ok(())
        })();
        self.rows[0] = x;
        result
    }
}

/// A per-partition scalar operand of the integer datapath after checking.
enum IScalar {
    Imm(i32),
    Tile(Region),
}

impl Executor {
    /// Executes an instruction on the integer datapath (`isa::integer_datapath`; ISA.md,
    /// "The integer datapath"): every value is a 32-bit two's-complement integer from
    /// read to write, never an f32.
    fn execute_int(&mut self, op: &Op, at: At) -> Result<(), RuntimeError> {
        let alu = |op: AluOp, a: i32, b: i32| {
            numeric::alu_i32(op, a, b).ok_or_else(|| {
                invalid(
                    at,
                    format!("`{}` does not exist on the integer datapath", op.name()),
                )
            })
        };
        let mut x = std::mem::take(&mut self.irows[0]);
        let mut y = std::mem::take(&mut self.irows[1]);
        let mut z = std::mem::take(&mut self.irows[2]);
        let result = (|| -> Result<(), RuntimeError> {
            match op {
                Op::TensorTensor { op, out, a, b } => {
                    let (ra, rb, ro) = (self.tile(a, at)?, self.tile(b, at)?, self.tile(out, at)?);
                    Self::same_shape(&rb, ra.parts, ra.free, "b", at)?;
                    Self::same_shape(&ro, ra.parts, ra.free, "out", at)?;
                    x.resize(ra.free, 0);
                    y.resize(ra.free, 0);
                    for p in 0..ra.parts {
                        self.mem.read_row_i32(&ra, p, &mut x, at)?;
                        self.mem.read_row_i32(&rb, p, &mut y, at)?;
                        for (u, &v) in x.iter_mut().zip(y.iter()) {
                            *u = alu(*op, *u, v)?;
                        }
                        self.mem.write_row_i32(&ro, p, &x, at)?;
                    }
                }
                Op::Select { out, mask, a, b } => {
                    let rm = self.tile(mask, at)?;
                    let (ra, rb, ro) = (self.tile(a, at)?, self.tile(b, at)?, self.tile(out, at)?);
                    Self::same_shape(&ra, rm.parts, rm.free, "a", at)?;
                    Self::same_shape(&rb, rm.parts, rm.free, "b", at)?;
                    Self::same_shape(&ro, rm.parts, rm.free, "out", at)?;
                    let mut m = vec![0f32; rm.free];
                    x.resize(rm.free, 0);
                    y.resize(rm.free, 0);
                    for p in 0..rm.parts {
                        self.mem.read_row(&rm, p, &mut m, at)?;
                        self.mem.read_row_i32(&ra, p, &mut x, at)?;
                        self.mem.read_row_i32(&rb, p, &mut y, at)?;
                        for ((u, &c), &v) in x.iter_mut().zip(&m).zip(&y) {
                            if c == 0.0 {
                                *u = v;
                            }
                        }
                        self.mem.write_row_i32(&ro, p, &x, at)?;
                    }
                }
                Op::TensorScalar {
                    out,
                    src,
                    op0,
                    s0,
                    op1,
                    s1,
                } => {
                    let (rs, ro) = (self.tile(src, at)?, self.tile(out, at)?);
                    Self::same_shape(&ro, rs.parts, rs.free, "out", at)?;
                    let a0 = self.iscalar(s0, rs.parts, at)?;
                    let a1 = self.iscalar(s1, rs.parts, at)?;
                    x.resize(rs.free, 0);
                    for p in 0..rs.parts {
                        let v0 = self.iscalar_value(&a0, p, at)?;
                        let v1 = self.iscalar_value(&a1, p, at)?;
                        self.mem.read_row_i32(&rs, p, &mut x, at)?;
                        for u in x.iter_mut() {
                            *u = alu(*op1, alu(*op0, *u, v0)?, v1)?;
                        }
                        self.mem.write_row_i32(&ro, p, &x, at)?;
                    }
                }
                Op::TensorReduce { op: red, out, src }
                | Op::TensorReduceScalar {
                    op: red, out, src, ..
                } => {
                    let (rs, ro) = (self.tile(src, at)?, self.tile(out, at)?);
                    let inner = rs.dims.last().map(|d| d.0 as usize).unwrap_or(1).max(1);
                    Self::same_shape(&ro, rs.parts, rs.free / inner, "out", at)?;
                    let post = match op_post(op) {
                        Some((op0, s0, op1, s1)) => Some((
                            op0,
                            self.iscalar(s0, rs.parts, at)?,
                            op1,
                            self.iscalar(s1, rs.parts, at)?,
                        )),
                        None => None,
                    };
                    let f = match red {
                        ReduceOp::Add => AluOp::Add,
                        ReduceOp::Max => AluOp::Max,
                        ReduceOp::Min => AluOp::Min,
                    };
                    x.resize(rs.free, 0);
                    y.resize(ro.free, 0);
                    for p in 0..rs.parts {
                        self.mem.read_row_i32(&rs, p, &mut x, at)?;
                        for (r, group) in y.iter_mut().zip(x.chunks_exact(inner)) {
                            let mut acc = group[0];
                            for &v in &group[1..] {
                                acc = alu(f, acc, v)?;
                            }
                            *r = acc;
                        }
                        if let Some((op0, a0, op1, a1)) = &post {
                            let v0 = self.iscalar_value(a0, p, at)?;
                            let v1 = self.iscalar_value(a1, p, at)?;
                            for r in y.iter_mut() {
                                *r = alu(*op1, alu(*op0, *r, v0)?, v1)?;
                            }
                        }
                        self.mem.write_row_i32(&ro, p, &y, at)?;
                    }
                }
                Op::TensorCopy { out, src } => {
                    let (rs, ro) = (self.tile(src, at)?, self.tile(out, at)?);
                    Self::same_shape(&ro, rs.parts, rs.free, "out", at)?;
                    x.resize(rs.free, 0);
                    for p in 0..rs.parts {
                        self.mem.read_row_i32(&rs, p, &mut x, at)?;
                        self.mem.write_row_i32(&ro, p, &x, at)?;
                    }
                }
                Op::Memset { out, value } => {
                    let ro = self.tile(out, at)?;
                    x.clear();
                    x.resize(ro.free, value.0 as i32);
                    for p in 0..ro.parts {
                        self.mem.write_row_i32(&ro, p, &x, at)?;
                    }
                }
                Op::Iota { out, expr } => {
                    let ro = self.tile(out, at)?;
                    let mut ints = Vec::with_capacity(ro.free);
                    for p in 0..ro.parts {
                        Self::affine_row(&ro, expr, p, &mut ints, at)?;
                        x.clear();
                        for &v in &ints {
                            let v = i32::try_from(v).map_err(|_| {
                                invalid(at, format!("iota value {v} is outside the i32 range"))
                            })?;
                            x.push(v);
                        }
                        self.mem.write_row_i32(&ro, p, &x, at)?;
                    }
                }
                Op::AffineSelect {
                    out,
                    src,
                    cmp,
                    expr,
                    fill,
                } => {
                    let (rs, ro) = (self.tile(src, at)?, self.tile(out, at)?);
                    Self::same_shape(&rs, ro.parts, ro.free, "src", at)?;
                    let fill = fill.0 as i32;
                    let mut ints = Vec::with_capacity(ro.free);
                    x.resize(ro.free, 0);
                    for p in 0..ro.parts {
                        Self::affine_row(&ro, expr, p, &mut ints, at)?;
                        self.mem.read_row_i32(&rs, p, &mut x, at)?;
                        for (u, &e) in x.iter_mut().zip(ints.iter()) {
                            if !cmp_holds(*cmp, e) {
                                *u = fill;
                            }
                        }
                        self.mem.write_row_i32(&ro, p, &x, at)?;
                    }
                }
                Op::Transpose { out, src } | Op::PartitionTranspose { out, src } => {
                    let psum = matches!(op, Op::Transpose { .. });
                    let s = self.tile(src, at)?;
                    let o = self.tile(out, at)?;
                    let want = if psum { Space::Psum } else { Space::Sbuf };
                    if s.space != Space::Sbuf || o.space != want {
                        return Err(invalid(at, "transpose reads sbuf".into()));
                    }
                    let (np, f) = (s.parts, s.free);
                    if f > 128 || o.parts != f || o.free != np {
                        return Err(invalid(
                            at,
                            format!("out must be [{f}, {np}], is [{}, {}]", o.parts, o.free),
                        ));
                    }
                    x.resize(np * f, 0);
                    for p in 0..np {
                        self.mem
                            .read_row_i32(&s, p, &mut x[p * f..(p + 1) * f], at)?;
                    }
                    z.resize(np, 0);
                    for fi in 0..f {
                        for (pi, r) in z.iter_mut().enumerate() {
                            *r = x[pi * f + fi];
                        }
                        self.mem.write_row_i32(&o, fi, &z, at)?;
                    }
                }
                _ => {
                    return Err(invalid(
                        at,
                        format!("`{}` has no integer datapath", at.opcode.mnemonic()),
                    ))
                }
            }
            Ok(())
        })();
        self.irows = [x, y, z];
        result
    }

    fn iscalar(&self, s: &ScalarArg, parts: usize, at: At) -> Result<IScalar, RuntimeError> {
        match self.scalar(s, parts, at)? {
            Scalar::Tile(r) => Ok(IScalar::Tile(r)),
            Scalar::Imm(_) => match s {
                ScalarArg::Imm(imm) => Ok(IScalar::Imm(imm.0 as i32)),
                ScalarArg::Ap(_) => Err(invalid(at, "scalar operand".into())),
            },
        }
    }

    fn iscalar_value(&self, s: &IScalar, p: usize, at: At) -> Result<i32, RuntimeError> {
        match s {
            IScalar::Imm(v) => Ok(*v),
            IScalar::Tile(r) => {
                let mut v = [0i32];
                self.mem.read_row_i32(r, p, &mut v, at)?;
                Ok(v[0])
            }
        }
    }
}

/// The post-operations of `tensor_reduce_scalar`.
fn op_post(op: &Op) -> Option<(AluOp, &ScalarArg, AluOp, &ScalarArg)> {
    match op {
        Op::TensorReduceScalar {
            op0, s0, op1, s1, ..
        } => Some((*op0, s0, *op1, s1)),
        _ => None,
    }
}

/// `expr CMP 0`.
fn cmp_holds(cmp: CmpOp, e: i64) -> bool {
    match cmp {
        CmpOp::Ge => e >= 0,
        CmpOp::Gt => e > 0,
        CmpOp::Le => e <= 0,
        CmpOp::Lt => e < 0,
        CmpOp::Eq => e == 0,
        CmpOp::Ne => e != 0,
    }
}

fn invalid(at: At, detail: String) -> RuntimeError {
    RuntimeError::Invalid { at, detail }
}

#[cfg(test)]
mod tests {
    use super::*;
    use isa::Opcode;

    /// An executor over 64 rows of 8 f32 in HBM, row `r` holding `r * 10 + column`.
    fn executor() -> Executor {
        let mut hbm = vec![0u8; 64 * 8 * 4];
        for r in 0..64 {
            for c in 0..8 {
                let v = (r * 10 + c) as f32;
                let at = (r * 8 + c) * 4;
                hbm[at..at + 4].copy_from_slice(&v.to_le_bytes());
            }
        }
        let geometry = isa::Preset::Default.geometry();
        let mut mem = Memories::new(hbm, geometry, true, 1 << 24);
        mem.mark_hbm_written("table", 0, 64 * 8 * 4);
        Executor::new(mem, 64)
    }

    fn at() -> At {
        At {
            engine: Engine::Dma(0),
            index: 7,
            opcode: Opcode::DmaGather,
        }
    }

    /// The operands of a `dma_gather` written in assembly: `dst`, `idx` and `src`.
    fn gather(dst: &str, parts: usize) -> (TileAp, TileAp, HbmAp) {
        let text = format!(
            "dma_gather dst={dst}, idx=sbuf.i32[0:{parts}, 1024; 1:1], \
             src=hbm.f32[0; 64:8, 8:1], wrap=true"
        );
        match text.parse::<Inst>().map(|i| i.op) {
            Ok(Op::DmaGather { dst, idx, src, .. }) => (dst, idx, src),
            other => panic!("{text}: {other:?}"),
        }
    }

    /// Writes the indices into partitions 0.. of the index tile.
    fn set_indices(e: &mut Executor, idx: &TileAp, indices: &[i32]) {
        let r = e.mem.tile(idx, at()).unwrap();
        for (p, i) in indices.iter().enumerate() {
            e.mem
                .write_row_bytes(&r, p, &i.to_le_bytes(), at())
                .unwrap();
        }
    }

    fn rows(e: &Executor, dst: &TileAp) -> Vec<Vec<f32>> {
        let r = e.mem.tile(dst, at()).unwrap();
        (0..r.parts)
            .map(|p| {
                let mut row = vec![0.0; r.free];
                e.mem.read_row(&r, p, &mut row, at()).unwrap();
                row
            })
            .collect()
    }

    #[test]
    fn gather_reads_the_indexed_rows_duplicates_and_negatives_included() {
        let mut e = executor();
        let (dst, idx, table) = gather("sbuf.bf16[0:5, 0; 8:1]", 5);
        set_indices(&mut e, &idx, &[5, 0, 5, -1, 63]);
        let effect = e.dma_gather(&dst, &idx, &table, true, at()).unwrap();
        let got = rows(&e, &dst);
        for (p, r) in [5, 0, 5, 63, 63].into_iter().enumerate() {
            // Converted to bf16 on the way, as `dma` converts.
            let want: Vec<f32> = (0..8)
                .map(|c| numeric::round(isa::Dtype::Bf16, (r * 10 + c) as f32))
                .collect();
            assert_eq!(got[p], want, "partition {p}");
        }
        // Five rows of 32 bytes, each its own run of at least 64 bytes.
        assert_eq!(effect.effective_bytes, 5 * 64);
        assert_eq!(effect.hbm_read, 5 * 32);
        assert_eq!(effect.bytes, 5 * 16);
    }

    #[test]
    fn an_index_out_of_range_faults_before_anything_is_written() {
        for (indices, wrap, bad) in [
            (vec![1, 2, 3, 64, 4], true, 64),
            (vec![1, 2, -65], true, -65),
            (vec![1, -1], false, -1),
        ] {
            let mut e = executor();
            let n = indices.len();
            let (dst, idx, table) = gather(&format!("sbuf.f32[0:{n}, 0; 8:1]"), n);
            // The destination holds known values first; the fault must leave them.
            let before: Vec<f32> = vec![-7.0; 8];
            let r = e.mem.tile(&dst, at()).unwrap();
            for p in 0..indices.len() {
                e.mem.write_row(&r, p, &before, at()).unwrap();
            }
            set_indices(&mut e, &idx, &indices);
            let err = e.dma_gather(&dst, &idx, &table, wrap, at()).unwrap_err();
            match &err {
                RuntimeError::IndexFault {
                    index, rows, at: a, ..
                } => {
                    assert_eq!((*index, *rows, a.index), (bad, 64, 7));
                }
                other => panic!("not an index fault: {other}"),
            }
            assert!(
                err.to_string().contains(&format!("holds {bad}, outside")),
                "{err}"
            );
            assert!(
                err.to_string()
                    .starts_with("dma0 instruction 7 (dma_gather)"),
                "{err}"
            );
            for (p, row) in rows(&e, &dst).iter().enumerate() {
                assert_eq!(row, &before, "partition {p} was written");
            }
        }
    }

    #[test]
    fn gather_indices_are_not_rounded_through_f32() {
        // 2^24 + 1 is not an f32; read through f32 it would become 2^24.
        let mut e = executor();
        let (dst, idx, table) = gather("sbuf.f32[0:1, 0; 8:1]", 1);
        set_indices(&mut e, &idx, &[(1 << 24) + 1]);
        let err = e.dma_gather(&dst, &idx, &table, true, at()).unwrap_err();
        assert!(
            matches!(err, RuntimeError::IndexFault { index, .. } if index == (1 << 24) + 1),
            "{err}"
        );
    }
}
