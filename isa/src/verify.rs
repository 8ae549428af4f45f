//! The static verifier: every rule of the machine that can be checked without running the
//! program (stream shape, engine placement, access-pattern bounds, per-opcode operand
//! shapes, semaphore ranges, debug-table shape).
//!
//! The interpreter checks the same bounds at run time; verifying first turns a bad program
//! into a list of precise errors before anything runs. The verifier collects every error
//! rather than stopping at the first, and never panics: address arithmetic is done in
//! `i128`, which cannot overflow for any field values.

use std::fmt;

use crate::{
    AluOp, DmaAp, Dtype, Engine, EngineClass, Geometry, HbmAp, Inst, Mem, Op, Opcode, Program,
    ScalarArg, TileAp, MAX_HBM_DIMS, MAX_TILE_DIMS, MAX_WAITS, NUM_STREAMS,
};

/// One rule violation: where (stream and instruction, when it concerns one) and what.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VerifyError {
    /// The stream's engine, or `None` for program-level errors (tensors, stream count,
    /// debug table).
    pub engine: Option<Engine>,
    /// The instruction's index in its stream, when the error concerns one instruction.
    pub index: Option<usize>,
    pub message: String,
}

impl fmt::Display for VerifyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.engine, self.index) {
            (Some(e), Some(i)) => write!(f, "{e}[{i}]: {}", self.message),
            (Some(e), None) => write!(f, "{e}: {}", self.message),
            (None, _) => write!(f, "program: {}", self.message),
        }
    }
}

impl std::error::Error for VerifyError {}

/// Checks a program against the machine's static rules, returning every violation.
///
/// The rules are listed in `ISA.md` ("Verifier rules") and in each opcode's description.
pub fn verify(program: &Program) -> Result<(), Vec<VerifyError>> {
    let mut v = Verifier {
        geometry: program.preset.geometry(),
        hbm_size: program.hbm_size,
        errors: Vec::new(),
        engine: None,
        index: None,
        operands_only: false,
    };
    v.tensors(program);
    if program.streams.len() != NUM_STREAMS {
        v.error(format!(
            "the program has {} streams, expected {NUM_STREAMS}",
            program.streams.len()
        ));
    }
    for (i, stream) in program.streams.iter().enumerate().take(NUM_STREAMS) {
        let Some(engine) = Engine::from_index(i) else {
            continue;
        };
        v.engine = Some(engine);
        v.stream(engine, stream);
        v.index = None;
    }
    v.engine = None;
    v.locs(program);
    if v.errors.is_empty() {
        Ok(())
    } else {
        Err(v.errors)
    }
}

/// The checks of one operation's operands against each other (shapes that must agree,
/// element counts, memories an engine can reach, transposes, reductions, scalars), without
/// the checks of each pattern against the machine's memories: for operations whose
/// addresses are not placed yet, as in the compiler's tile IR, so that a pass that builds
/// a wrong operation is named by the tile IR's verifier and not later by emission's.
pub fn check_operands(engine: Engine, op: &Op) -> Vec<String> {
    let mut v = Verifier {
        geometry: crate::Preset::Default.geometry(),
        hbm_size: u64::MAX,
        errors: Vec::new(),
        engine: Some(engine),
        index: None,
        operands_only: true,
    };
    v.op(engine, op);
    v.errors.into_iter().map(|e| e.message).collect()
}

/// The verifier's state: the geometry and where the current instruction is.
struct Verifier {
    geometry: Geometry,
    hbm_size: u64,
    errors: Vec<VerifyError>,
    engine: Option<Engine>,
    index: Option<usize>,
    /// Skip the checks of each pattern against the memories (`check_operands`).
    operands_only: bool,
}

/// The lowest and highest element offset (in elements, relative to the start) that a
/// pattern of `(size, stride)` dimensions touches. `None` when a size is zero (nothing is
/// touched).
pub fn extent(dims: impl Iterator<Item = (i128, i128)>) -> Option<(i128, i128)> {
    let (mut lo, mut hi) = (0i128, 0i128);
    for (size, stride) in dims {
        if size < 1 {
            return None;
        }
        let span = (size - 1) * stride;
        if span < 0 {
            lo += span;
        } else {
            hi += span;
        }
    }
    Some((lo, hi))
}

/// The byte ranges `[lo, hi)` that a pattern of `(size, stride)` dimensions (strides in
/// elements of `esize` bytes) from byte `offset` touches: one range per combination of the
/// indices of its widest-strided dimensions, as many of them as keep the count at most
/// `cap`, each the bounding box of the other dimensions; ranges that continue each other
/// are merged. Exact when the boxed dimensions are contiguous. Taking dimensions by
/// decreasing stride, not in pattern order, keeps the boxes tight: `[128:1, 3:16384]` is
/// three runs of 128 elements, not 128 overlapping boxes of 32,769.
///
/// The compiler's hazard tracker and the interpreter's race detector both use it, the
/// interpreter with a larger `cap`: its ranges then lie inside the compiler's, so a program
/// the compiler synchronised never shows it a false race. Empty when a size is zero;
/// ranges outside `0..=u64::MAX` are left out (callers check bounds on their own).
pub fn byte_ranges(offset: i128, dims: &[(i128, i128)], esize: i128, cap: u64) -> Vec<(u64, u64)> {
    let mut out: Vec<(u64, u64)> = Vec::new();
    if dims.iter().any(|&(s, _)| s < 1) {
        return out;
    }
    let mut dims: smallvec::SmallVec<[(i128, i128); 8]> = dims.iter().copied().collect();
    dims.sort_by_key(|&(_, stride)| std::cmp::Reverse(stride.abs()));
    let mut split = 0;
    let mut pieces = 1u64;
    while split < dims.len() {
        let next = pieces.saturating_mul(dims[split].0 as u64);
        if next > cap {
            break;
        }
        pieces = next;
        split += 1;
    }
    let (outer, inner) = dims.split_at(split);
    let Some((ilo, ihi)) = extent(inner.iter().copied()) else {
        return out;
    };
    let mut index: smallvec::SmallVec<[i128; 8]> = smallvec::SmallVec::from_elem(0, outer.len());
    loop {
        let base: i128 = index
            .iter()
            .zip(outer)
            .map(|(&i, &(_, stride))| i * stride)
            .sum();
        let lo = offset + (base + ilo) * esize;
        let hi = offset + (base + ihi) * esize + esize;
        if lo >= 0 && hi <= u64::MAX as i128 {
            let (lo, hi) = (lo as u64, hi as u64);
            match out.last_mut() {
                Some(last) if last.1 == lo => last.1 = hi,
                _ => out.push((lo, hi)),
            }
        }
        // Advance the outer index like an odometer.
        let mut d = outer.len();
        loop {
            if d == 0 {
                return out;
            }
            d -= 1;
            index[d] += 1;
            if index[d] < outer[d].0 {
                break;
            }
            index[d] = 0;
        }
    }
}

/// The allowed start partitions for a tile of `count` partitions (`docs/machine.md`, "Memories").
fn allowed_starts(count: u8) -> &'static [u8] {
    match count {
        65.. => &[0],
        33..=64 => &[0, 64],
        _ => &[0, 32, 64, 96],
    }
}

impl Verifier {
    fn error(&mut self, message: String) {
        self.errors.push(VerifyError {
            engine: self.engine,
            index: self.index,
            message,
        });
    }

    /// Tensors lie inside HBM and do not overlap.
    fn tensors(&mut self, program: &Program) {
        let mut spans = Vec::new();
        for (i, t) in program.tensors.iter().enumerate() {
            if program.tensors[..i].iter().any(|u| u.name == t.name) {
                self.error(format!("tensor `{}` is declared twice", t.name));
            }
            // A zero dim makes the tensor empty whatever the other dims are.
            let bytes = if t.shape.contains(&0) {
                0
            } else {
                t.shape
                    .iter()
                    .try_fold(t.dtype.size() as u128, |acc, &d| acc.checked_mul(d as u128))
                    .unwrap_or(u128::MAX)
            };
            let end = (t.offset as u128).saturating_add(bytes);
            if end > program.hbm_size as u128 {
                self.error(format!(
                    "tensor `{}` (bytes {}..{end}) lies outside HBM of {} bytes",
                    t.name, t.offset, program.hbm_size
                ));
            }
            if bytes > 0 {
                spans.push((t.offset as u128, end, &t.name));
            }
        }
        // Sweep in address order, comparing each tensor with the one that reaches furthest
        // so far: every tensor that overlaps an earlier one is reported (in O(n log n), as
        // a decoded program may hold many tensors).
        spans.sort();
        let mut reach: Option<(u128, &String)> = None;
        for (start, end, name) in spans {
            match reach {
                Some((far, other)) if start < far => {
                    self.error(format!("tensors `{other}` and `{name}` overlap in HBM"));
                    if end > far {
                        reach = Some((end, name));
                    }
                }
                _ => reach = Some((end, name)),
            }
        }
    }

    /// One stream: its `end`, and each instruction.
    fn stream(&mut self, engine: Engine, stream: &[Inst]) {
        match stream.last() {
            None => self.error("the stream is empty; it must end with `end`".into()),
            Some(last) if last.op.opcode() != Opcode::End => {
                self.index = Some(stream.len() - 1);
                self.error("the stream does not end with `end`".into());
            }
            Some(_) => {}
        }
        for (i, inst) in stream.iter().enumerate() {
            self.index = Some(i);
            if inst.op.opcode() == Opcode::End && i + 1 < stream.len() {
                self.error(format!(
                    "`end` must be the last instruction, but {} instruction(s) follow it",
                    stream.len() - i - 1
                ));
            }
            self.inst(engine, inst);
        }
    }

    /// One instruction: placement, semaphores, operands.
    fn inst(&mut self, engine: Engine, inst: &Inst) {
        let opcode = inst.op.opcode();
        if !opcode.engines().contains(engine.class()) {
            self.error(format!(
                "`{}` cannot run on the {} engine (it runs on: {})",
                opcode.mnemonic(),
                engine,
                opcode.engines().names().join(", ")
            ));
        }
        if inst.sync.waits.len() > MAX_WAITS {
            self.error(format!(
                "{} semaphore waits, at most {MAX_WAITS} are allowed",
                inst.sync.waits.len()
            ));
        }
        let sems = self.geometry.semaphores;
        for &(sem, _) in &inst.sync.waits {
            if sem as u32 >= sems {
                self.error(format!(
                    "wait on semaphore s{sem}, but the machine has s0 .. s{}",
                    sems.saturating_sub(1)
                ));
            }
        }
        if let Some(sem) = inst.sync.signal {
            if sem as u32 >= sems {
                self.error(format!(
                    "signal of semaphore s{sem}, but the machine has s0 .. s{}",
                    sems.saturating_sub(1)
                ));
            }
        }
        self.op(engine, &inst.op);
    }

    /// Checks one tile on its own: dims, partitions, start rule, memory bounds, PSUM bank.
    fn tile(&mut self, field: &str, ap: &TileAp) {
        if self.operands_only {
            return;
        }
        let n = ap.dims.len();
        if n == 0 || n > MAX_TILE_DIMS {
            self.error(format!(
                "`{field}` has {n} free dimensions, expected 1 to {MAX_TILE_DIMS}"
            ));
        }
        for (d, dim) in ap.dims.iter().enumerate() {
            if dim.size == 0 {
                self.error(format!("`{field}` dimension {d} has size 0, expected >= 1"));
            }
        }
        let parts = ap.partitions;
        if parts == 0 || parts as u32 > self.geometry.partitions {
            self.error(format!(
                "`{field}` has {parts} partitions, expected 1 to {}",
                self.geometry.partitions
            ));
        } else {
            let starts = allowed_starts(parts);
            let end = ap.partition as u32 + parts as u32;
            if !starts.contains(&ap.partition) || end > self.geometry.partitions {
                let list: Vec<String> = starts.iter().map(|s| s.to_string()).collect();
                self.error(format!(
                    "`{field}` starts at partition {} but a tile of {parts} partitions must \
                     start at {}",
                    ap.partition,
                    list.join(" or ")
                ));
            }
        }
        let (limit, name) = match ap.mem {
            Mem::Sbuf => (self.geometry.sbuf_partition_bytes, "SBUF"),
            Mem::Psum => (self.geometry.psum_partition_bytes, "PSUM"),
        };
        let esize = ap.dtype.size() as i128;
        let dims = ap.dims.iter().map(|d| (d.size as i128, d.stride as i128));
        if let Some((lo, hi)) = extent(dims) {
            let first = ap.offset as i128 + lo * esize;
            let last = ap.offset as i128 + hi * esize + esize - 1;
            if first < 0 || last >= limit as i128 {
                self.error(format!(
                    "`{field}` touches bytes {first}..={last} of each partition, outside \
                     {name}'s {limit} bytes"
                ));
            } else if ap.mem == Mem::Psum {
                let bank = self.geometry.psum_bank_bytes.max(1) as i128;
                if first / bank != last / bank {
                    self.error(format!(
                        "`{field}` touches PSUM bytes {first}..={last}, which cross a {bank}-byte \
                         bank boundary"
                    ));
                }
            }
        }
    }

    /// Checks an HBM pattern: dims and bounds.
    fn hbm(&mut self, field: &str, ap: &HbmAp) {
        if self.operands_only {
            return;
        }
        let n = ap.dims.len();
        if n == 0 || n > MAX_HBM_DIMS {
            self.error(format!(
                "`{field}` has {n} dimensions, expected 1 to {MAX_HBM_DIMS}"
            ));
        }
        for (d, dim) in ap.dims.iter().enumerate() {
            if dim.size == 0 {
                self.error(format!("`{field}` dimension {d} has size 0, expected >= 1"));
            }
        }
        let esize = ap.dtype.size() as i128;
        let dims = ap.dims.iter().map(|d| (d.size as i128, d.stride as i128));
        if let Some((lo, hi)) = extent(dims) {
            let first = ap.offset as i128 + lo * esize;
            let last = ap.offset as i128 + hi * esize + esize - 1;
            if first < 0 || last >= self.hbm_size as i128 {
                self.error(format!(
                    "`{field}` touches HBM bytes {first}..={last}, outside the program's {} bytes",
                    self.hbm_size
                ));
            }
        }
    }

    /// Requires a tile to be in `mem`.
    fn mem(&mut self, field: &str, ap: &TileAp, mem: Mem, why: &str) {
        if ap.mem != mem {
            self.error(format!(
                "`{field}` is in {}, but {why}",
                ap.mem.name().to_uppercase()
            ));
        }
    }

    /// Requires two tiles to have the same partition count and free element count.
    fn same_shape(&mut self, a: (&str, &TileAp), b: (&str, &TileAp)) {
        if a.1.partitions != b.1.partitions || a.1.free_elems() != b.1.free_elems() {
            self.error(format!(
                "`{}` is [{}, {}] but `{}` is [{}, {}]; they must have the same partitions \
                 and free elements",
                a.0,
                a.1.partitions,
                a.1.free_elems(),
                b.0,
                b.1.partitions,
                b.1.free_elems()
            ));
        }
    }

    /// Requires a `[P, 1]` tile for a per-partition scalar.
    fn per_partition(&mut self, field: &str, ap: &TileAp, partitions: u8) {
        if ap.partitions != partitions || ap.free_elems() != 1 {
            self.error(format!(
                "`{field}` is [{}, {}] but must be [{partitions}, 1] (one value per partition)",
                ap.partitions,
                ap.free_elems()
            ));
        }
    }

    /// A scalar argument: nothing for an immediate, a tile check and `[P, 1]` for a tile.
    fn scalar(&mut self, field: &str, arg: &ScalarArg, partitions: u8) {
        if let ScalarArg::Ap(ap) = arg {
            self.tile(field, ap);
            self.per_partition(field, ap, partitions);
        }
    }

    /// `out` is the transpose of `src`: `src` has at most 128 free elements, `out` as many
    /// partitions, and as many free elements as `src` has partitions.
    fn transposed(&mut self, out: &TileAp, src: &TileAp) {
        let f = src.free_elems();
        if f > 128 {
            self.error(format!("`src` has {f} free elements, at most 128"));
        }
        if out.partitions as u64 != f || out.free_elems() != src.partitions as u64 {
            self.error(format!(
                "`out` is [{}, {}] but must be the transpose of `src` [{}, {f}]: [{f}, {}]",
                out.partitions,
                out.free_elems(),
                src.partitions,
                src.partitions
            ));
        }
    }

    /// The per-partition scalars `s0` and `s1` of an instruction on `engine` whose source
    /// has `partitions` partitions.
    fn scalars(&mut self, engine: Engine, s0: &ScalarArg, s1: &ScalarArg, partitions: u8) {
        self.scalar("s0", s0, partitions);
        self.scalar("s1", s1, partitions);
        for (f, s) in [("s0", s0), ("s1", s1)] {
            if let ScalarArg::Ap(ap) = s {
                self.no_psum_on_gpsimd(engine, f, ap);
            }
        }
    }

    /// `out` is `src` reduced along its last dimension: the same partitions, one element
    /// per row of that dimension.
    fn reduced(&mut self, out: &TileAp, src: &TileAp) {
        let last = src.dims.last().map_or(1, |d| d.size as u64).max(1);
        let want = src.free_elems() / last;
        if out.partitions != src.partitions || out.free_elems() != want {
            self.error(format!(
                "`out` is [{}, {}] but reducing `src` [{}, {}] along its last dimension \
                 gives [{}, {want}]",
                out.partitions,
                out.free_elems(),
                src.partitions,
                src.free_elems(),
                src.partitions
            ));
        }
    }

    /// The affine expression has one step per free dimension of `out`.
    fn affine_steps(&mut self, steps: usize, out: &TileAp) {
        if steps != out.dims.len() {
            self.error(format!(
                "`expr` has {steps} steps but `out` has {} free dimensions",
                out.dims.len()
            ));
        }
    }

    /// The integer datapath's rules (`ISA.md`, "The integer datapath"): an integer
    /// instruction reads no float tile and uses only integer ALU ops; a float one uses no
    /// bitwise op; the Scalar engine and `matmul` take no `i32` tile.
    fn datapath(&mut self, op: &Op) {
        let i32_tile = |field: &str, ap: &TileAp, this: &mut Self, why: &str| {
            if ap.dtype == Dtype::I32 {
                this.error(format!("`{field}` is i32, but {why}"));
            }
        };
        match op {
            Op::Matmul {
                out,
                stationary,
                moving,
                ..
            } => {
                for (f, ap) in [("out", out), ("stationary", stationary), ("moving", moving)] {
                    i32_tile(f, ap, self, "the Tensor engine multiplies floats only");
                }
                return;
            }
            Op::Activate {
                out, src, accum, ..
            } => {
                let why = "the Scalar engine has no integer datapath";
                i32_tile("out", out, self, why);
                i32_tile("src", src, self, why);
                if let Some(acc) = accum {
                    i32_tile("accum", acc, self, why);
                }
                return;
            }
            _ => {}
        }
        let ops: Vec<AluOp> = match op {
            Op::TensorTensor { op, .. } => vec![*op],
            Op::TensorScalar { op0, op1, .. } | Op::TensorReduceScalar { op0, op1, .. } => {
                vec![*op0, *op1]
            }
            _ => Vec::new(),
        };
        if integer_datapath(op) {
            for (field, ap) in data_inputs(op) {
                if ap.dtype.is_float() {
                    self.error(format!(
                        "`{field}` is {} on the integer datapath (an i32 input): it reads \
                         i32 and bool only; convert the float with `tensor_copy` first",
                        ap.dtype
                    ));
                }
            }
            for o in ops {
                if !o.is_integer() {
                    self.error(format!(
                        "`{}` does not exist on the integer datapath (an i32 input)",
                        o.name()
                    ));
                }
            }
        } else {
            for o in ops {
                if o.is_integer_only() {
                    self.error(format!(
                        "`{}` exists only on the integer datapath (an i32 input)",
                        o.name()
                    ));
                }
            }
        }
    }

    /// Per-opcode operand rules (the table's descriptions).
    fn op(&mut self, engine: Engine, op: &Op) {
        self.datapath(op);
        let mut tiles: Vec<(&str, &TileAp)> = Vec::new();
        match op {
            Op::Nop {} | Op::End {} => {}
            Op::Dma { dst, src } => {
                let mut elems = [0u64; 2];
                for (k, (field, side)) in [("dst", dst), ("src", src)].into_iter().enumerate() {
                    match side {
                        DmaAp::Hbm(ap) => {
                            self.hbm(field, ap);
                            elems[k] = ap.elems();
                        }
                        DmaAp::Tile(ap) => {
                            self.tile(field, ap);
                            self.mem(field, ap, Mem::Sbuf, "DMA only reaches SBUF and HBM");
                            elems[k] = ap.elems();
                        }
                    }
                }
                if elems[0] != elems[1] {
                    self.error(format!(
                        "`dst` has {} elements but `src` has {}; a DMA copies equal counts",
                        elems[0], elems[1]
                    ));
                }
                if matches!((dst, src), (DmaAp::Hbm(_), DmaAp::Hbm(_))) {
                    self.error(
                        "both sides are in HBM; a DMA moves HBM <-> SBUF or SBUF -> SBUF".into(),
                    );
                }
            }
            Op::DmaGather {
                dst,
                idx,
                src,
                wrap: _,
            } => {
                tiles.extend([("dst", dst), ("idx", idx)]);
                self.mem("dst", dst, Mem::Sbuf, "DMA only reaches SBUF and HBM");
                self.mem(
                    "idx",
                    idx,
                    Mem::Sbuf,
                    "the gather reads its indices from SBUF",
                );
                self.hbm("src", src);
                if idx.dtype != crate::Dtype::I32 {
                    self.error(format!("`idx` is {} but indices are i32", idx.dtype));
                }
                if idx.partitions != dst.partitions || idx.free_elems() != 1 {
                    self.error(format!(
                        "`idx` is [{}, {}] but must be [{}, 1]: one index per partition of `dst`",
                        idx.partitions,
                        idx.free_elems(),
                        dst.partitions
                    ));
                }
                let row: u64 = src
                    .dims
                    .iter()
                    .skip(1)
                    .fold(1u64, |n, d| n.saturating_mul(d.size));
                if src.dims.len() < 2 {
                    self.error(
                        "`src` has one dimension, but needs the indexed one and at least one \
                         that walks a row"
                            .into(),
                    );
                } else if row != dst.free_elems() {
                    self.error(format!(
                        "a row of `src` has {row} elements but `dst` has {} per partition",
                        dst.free_elems()
                    ));
                }
            }
            Op::Matmul {
                out,
                stationary,
                moving,
                accumulate: _,
            } => {
                tiles.extend([("out", out), ("stationary", stationary), ("moving", moving)]);
                let why = "the Tensor engine reads its operands from SBUF";
                self.mem("stationary", stationary, Mem::Sbuf, why);
                self.mem("moving", moving, Mem::Sbuf, why);
                self.mem("out", out, Mem::Psum, "matmul writes PSUM");
                if out.dtype != crate::Dtype::F32 {
                    self.error(format!(
                        "`out` is {} but matmul accumulates in f32",
                        out.dtype
                    ));
                }
                if (stationary.partition, stationary.partitions)
                    != (moving.partition, moving.partitions)
                {
                    self.error(format!(
                        "`stationary` is on partitions {}..{} but `moving` on {}..{}; both must \
                         be on the same K partitions",
                        stationary.partition,
                        stationary.partition as u32 + stationary.partitions as u32,
                        moving.partition,
                        moving.partition as u32 + moving.partitions as u32
                    ));
                }
                let m = stationary.free_elems();
                let n = moving.free_elems();
                if m > 128 {
                    self.error(format!(
                        "`stationary` has M = {m} free elements, at most 128"
                    ));
                }
                if n > 512 {
                    self.error(format!("`moving` has N = {n} free elements, at most 512"));
                }
                if out.partitions as u64 != m || out.free_elems() != n {
                    self.error(format!(
                        "`out` is [{}, {}] but must be [M, N] = [{m}, {n}]",
                        out.partitions,
                        out.free_elems()
                    ));
                }
            }
            Op::PartitionTranspose { out, src } => {
                tiles.extend([("out", out), ("src", src)]);
                self.transposed(out, src);
            }
            Op::Transpose { out, src } => {
                tiles.extend([("out", out), ("src", src)]);
                self.mem("src", src, Mem::Sbuf, "the Tensor engine reads SBUF");
                self.mem("out", out, Mem::Psum, "transpose writes PSUM");
                self.transposed(out, src);
            }
            Op::TensorTensor { op: _, out, a, b } => {
                tiles.extend([("out", out), ("a", a), ("b", b)]);
                self.same_shape(("out", out), ("a", a));
                self.same_shape(("out", out), ("b", b));
            }
            Op::Select { out, mask, a, b } => {
                tiles.extend([("out", out), ("mask", mask), ("a", a), ("b", b)]);
                self.same_shape(("out", out), ("mask", mask));
                self.same_shape(("out", out), ("a", a));
                self.same_shape(("out", out), ("b", b));
            }
            Op::TensorScalar {
                out,
                src,
                op0: _,
                s0,
                op1: _,
                s1,
            } => {
                tiles.extend([("out", out), ("src", src)]);
                self.same_shape(("out", out), ("src", src));
                self.scalars(engine, s0, s1, src.partitions);
            }
            Op::TensorReduce { op: _, out, src } => {
                tiles.extend([("out", out), ("src", src)]);
                self.reduced(out, src);
            }
            Op::TensorReduceScalar {
                op: _,
                out,
                src,
                op0: _,
                s0,
                op1: _,
                s1,
            } => {
                tiles.extend([("out", out), ("src", src)]);
                self.reduced(out, src);
                self.scalars(engine, s0, s1, src.partitions);
            }
            Op::TensorScan { out, src, carry } => {
                tiles.extend([("out", out), ("src", src)]);
                self.same_shape(("out", out), ("src", src));
                let int = src.dtype == crate::Dtype::I32;
                let mut dtypes = vec![("out", out.dtype)];
                if let Some(c) = carry {
                    tiles.push(("carry", c));
                    self.reduced(c, src);
                    dtypes.push(("carry", c.dtype));
                }
                for (field, d) in dtypes {
                    if (d == crate::Dtype::I32) != int {
                        self.error(format!(
                            "`{field}` is {d} but `src` is {}; an i32 scan is i32 throughout",
                            src.dtype
                        ));
                    }
                }
            }
            Op::TensorArgReduce {
                op,
                out,
                index,
                src,
                positions,
            } => {
                tiles.extend([("out", out), ("index", index), ("src", src)]);
                if *op == crate::ReduceOp::Add {
                    self.error("`tensor_arg_reduce` takes `max` or `min`, not `add`".into());
                }
                self.reduced(out, src);
                self.reduced(index, src);
                if index.dtype != crate::Dtype::I32 {
                    self.error(format!("`index` is {} but must be i32", index.dtype));
                }
                if let Some(p) = positions {
                    tiles.push(("positions", p));
                    self.same_shape(("positions", p), ("src", src));
                    if p.dtype != crate::Dtype::I32 {
                        self.error(format!("`positions` is {} but must be i32", p.dtype));
                    }
                }
            }
            Op::TensorCopy { out, src } => {
                tiles.extend([("out", out), ("src", src)]);
                self.same_shape(("out", out), ("src", src));
            }
            Op::Memset { out, value: _ } => tiles.push(("out", out)),
            Op::Activate {
                out,
                src,
                func: _,
                scale,
                bias,
                accum,
            } => {
                tiles.extend([("out", out), ("src", src)]);
                self.same_shape(("out", out), ("src", src));
                self.scalar("scale", scale, src.partitions);
                self.scalar("bias", bias, src.partitions);
                if let Some(acc) = accum {
                    tiles.push(("accum", acc));
                    self.per_partition("accum", acc, src.partitions);
                }
            }
            Op::Iota { out, expr } => {
                tiles.push(("out", out));
                self.affine_steps(expr.steps.len(), out);
            }
            Op::AffineSelect {
                out,
                src,
                cmp: _,
                expr,
                fill: _,
            } => {
                tiles.extend([("out", out), ("src", src)]);
                self.same_shape(("out", out), ("src", src));
                self.affine_steps(expr.steps.len(), out);
            }
        }
        for (field, ap) in tiles {
            self.tile(field, ap);
            self.no_psum_on_gpsimd(engine, field, ap);
        }
    }

    /// GpSimd has no PSUM port.
    fn no_psum_on_gpsimd(&mut self, engine: Engine, field: &str, ap: &TileAp) {
        if engine.class() == EngineClass::GPSIMD && ap.mem == Mem::Psum {
            self.error(format!(
                "`{field}` is in PSUM, which the GpSimd engine cannot access"
            ));
        }
    }

    /// The debug table, when present, has one entry per instruction.
    fn locs(&mut self, program: &Program) {
        if program.locs.is_empty() {
            return;
        }
        if program.locs.len() != program.streams.len() {
            self.error(format!(
                "the debug table has {} streams but the program has {}",
                program.locs.len(),
                program.streams.len()
            ));
            return;
        }
        for (i, (locs, stream)) in program.locs.iter().zip(&program.streams).enumerate() {
            if locs.len() != stream.len() {
                self.engine = Engine::from_index(i);
                self.error(format!(
                    "the debug table has {} locations but the stream has {} instructions",
                    locs.len(),
                    stream.len()
                ));
            }
        }
        self.engine = None;
    }
}

/// The data inputs of an instruction, which decide its datapath: the tiles it reads values
/// from (not `select`'s mask, which is a truth value whatever its dtype), with their field
/// names; for `memset` and `iota`, which read nothing, their output.
pub fn data_inputs(op: &Op) -> Vec<(&'static str, &TileAp)> {
    let mut v: Vec<(&'static str, &TileAp)> = Vec::new();
    match op {
        Op::Dma {
            src: DmaAp::Tile(src),
            ..
        } => v.push(("src", src)),
        Op::TensorTensor { a, b, .. } | Op::Select { a, b, .. } => {
            v.push(("a", a));
            v.push(("b", b));
        }
        Op::TensorScalar { src, s0, s1, .. } | Op::TensorReduceScalar { src, s0, s1, .. } => {
            v.push(("src", src));
            if let ScalarArg::Ap(t) = s0 {
                v.push(("s0", t));
            }
            if let ScalarArg::Ap(t) = s1 {
                v.push(("s1", t));
            }
        }
        Op::TensorReduce { src, .. }
        | Op::TensorCopy { src, .. }
        | Op::AffineSelect { src, .. }
        | Op::Transpose { src, .. }
        | Op::PartitionTranspose { src, .. } => v.push(("src", src)),
        Op::Memset { out, .. } | Op::Iota { out, .. } => v.push(("out", out)),
        _ => {}
    }
    v
}

/// True when the instruction computes on the integer datapath: one of its data inputs
/// ([`data_inputs`]) is an `i32` tile, or a DMA reads `i32` from HBM.
pub fn integer_datapath(op: &Op) -> bool {
    if let Op::Dma {
        src: DmaAp::Hbm(h), ..
    } = op
    {
        return h.dtype == Dtype::I32;
    }
    data_inputs(op).iter().any(|(_, t)| t.dtype == Dtype::I32)
}

#[cfg(test)]
mod tests {
    use super::byte_ranges;

    #[test]
    fn ranges_are_exact_for_rows_and_bounded_for_many_runs() {
        // Four rows of 8 f32 with a row stride of 16 elements.
        assert_eq!(
            byte_ranges(0, &[(4, 16), (8, 1)], 4, 100),
            vec![(0, 32), (64, 96), (128, 160), (192, 224)]
        );
        // Contiguous rows merge into one range.
        assert_eq!(byte_ranges(8, &[(4, 8), (8, 1)], 4, 100), vec![(8, 136)]);
        // Over the cap, the rows become one bounding box.
        assert_eq!(byte_ranges(0, &[(4, 16), (8, 1)], 4, 2), vec![(0, 224)]);
        // Negative strides.
        assert_eq!(
            byte_ranges(12, &[(3, -1)], 4, 100),
            vec![(12, 16), (8, 12), (4, 8)]
        );
        assert!(byte_ranges(0, &[(0, 1)], 4, 100).is_empty());
    }

    #[test]
    fn ranges_follow_the_widest_strides() {
        // 128 partitions of 3 elements 16384 apart: three runs of 128 elements, not 128
        // overlapping boxes of 32,769 elements (a fuzz finding: 12 s to compile).
        assert_eq!(
            byte_ranges(0, &[(128, 1), (3, 16384)], 4, 256),
            vec![(0, 512), (65536, 66048), (131072, 131584)]
        );
        // 2 x 200 pieces would be too many: the widest dimension is enumerated and the
        // other two boxed (199 * 7 + 299 + 1 = 1,693 elements each).
        assert_eq!(
            byte_ranges(0, &[(300, 1), (2, 100_000), (200, 7)], 4, 256),
            vec![(0, 6772), (400_000, 406_772)]
        );
        // A larger cap never gives a range outside a smaller cap's.
        let coarse = byte_ranges(0, &[(300, 1), (2, 100_000), (200, 7)], 4, 256);
        for (lo, hi) in byte_ranges(0, &[(300, 1), (2, 100_000), (200, 7)], 4, 16_384) {
            assert!(
                coarse.iter().any(|&(a, b)| a <= lo && hi <= b),
                "{lo}..{hi}"
            );
        }
    }
}
