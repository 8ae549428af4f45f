//! The `engines` pass (optimising): decides which engine runs each instruction.
//!
//! The `tile` pass emits every instruction on its *canonical* engine: matmuls and
//! transposes on Tensor, activations (transcendentals and the fused `f(x * scale + bias)`)
//! on Scalar, masks (`iota`, `affine_select`) on GpSimd, other arithmetic, copies and
//! fills on Vector, and every DMA on queue 0 (flash attention aside, whose tiling emits
//! half of its copies out of PSUM and rescales in the Scalar form below: it knows which
//! engine waits for which at the turn of a key block; this pass leaves work already on
//! Scalar there). This pass then moves work where it runs best, changing no result bit:
//! - **GpSimd for columns.** Vector work on one element per partition (running maxima,
//!   per-row factors) goes to GpSimd: it costs GpSimd as little as it would cost Vector,
//!   and on the in-order Vector stream it would wait behind whole-row work while the
//!   engines that need it wait too.
//! - **Vector or Scalar.** Work that the Scalar engine's `f(x * scale + bias)` computes
//!   exactly as Vector does, with the identity function, goes to whichever of the two is
//!   less loaded around it: copies (also out of PSUM), `x * s`, `x + s`, `x - c`, `s - x`
//!   and `x * s + t` with per-partition or immediate `s`, `t`, and row sums (as the
//!   activation's `accum` output, the activation writing `x` over itself). The load is
//!   the estimated cycles of the timing model's cost formulas that each engine has in a
//!   window of instructions around the candidate: fixed work in the whole window, and
//!   movable work already placed before it. The second of two adjacent copies out of one
//!   PSUM buffer (a bank evacuated in pieces) takes the engine the first did not.
//! - **One instruction for two scalar steps.** First, a `tensor_scalar` chain `(x OP0 s0)
//!   OP1 s1` written as two instructions, whose f32 intermediate nothing else reads,
//!   becomes one (`merge_scalar_chains`), where that costs no engine a pass another
//!   could have taken.
//! - **DMA queues.** Transfers are spread over the 16 queues, each to the queue given the
//!   fewest bytes so far (ties to the lowest), so that they run in parallel; the pieces of
//!   a burst (one load, or the stores to one output) go to distinct queues first.
//!
//! Each rewrite is exact: the Scalar engine reads its input as f32, computes `x * scale`
//! and then `+ bias` in f32 with one rounding each (multiplying by one and adding minus
//! zero change nothing, signed zeros included), and rounds once to the output dtype, as
//! the Vector engine's arithmetic does; its row sum adds in the same order as
//! `tensor_reduce`. With the pass disabled every instruction stays where `tile` put it.

use super::Compilation;
use crate::tile::{Buf, TileFunc, TileInst};
use isa::{
    Access, ActFunc, AluOp, DmaAp, Engine, EngineClass, Mem, Op, ReduceOp, ScalarArg,
    NUM_DMA_QUEUES,
};
use runtime::{compute_cost, MachineConfig};
use smallvec::SmallVec;

/// Instructions on each side of a movable one whose work counts towards the engines' load.
const WINDOW: usize = 24;
/// The same for work GpSimd may share with Vector: a wider window, since one of its
/// instructions costs four of Vector's.
const GPSIMD_WINDOW: usize = 96;
/// The fewest shareable instructions in that window for GpSimd to take any: a long stream
/// of independent blocks, not a chain of few.
const GPSIMD_STREAM: usize = 48;

/// The bytes a DMA moves: the larger of its two sides.
pub(crate) fn dma_bytes(op: &Op) -> u64 {
    let side = |ap: &DmaAp| match ap {
        DmaAp::Hbm(h) => h.elems().saturating_mul(h.dtype.size() as u64),
        DmaAp::Tile(t) => t.elems().saturating_mul(t.dtype.size() as u64),
    };
    match op {
        Op::Dma { dst, src } => side(dst).max(side(src)),
        // A gather moves one row of `src` per partition of `dst`: `dst`'s bytes.
        Op::DmaGather { dst, .. } => dst.elems().saturating_mul(dst.dtype.size() as u64),
        _ => 0,
    }
}

/// Assigns the DMA instructions of `func` to queues; returns whether any moved.
pub fn balance(func: &mut TileFunc) -> bool {
    let mut load = [0u64; NUM_DMA_QUEUES];
    let mut changed = false;
    // The queues given a piece of the current burst (consecutive DMAs between the same
    // buffers: the pieces of one transfer): a burst is spread over distinct queues before
    // any queue gets a second piece, so its pieces move in parallel even when the byte
    // counts so far are uneven (the pieces of a kernel's last store would otherwise pile
    // up on the few lightest queues and lengthen its tail).
    let mut burst = [false; NUM_DMA_QUEUES];
    let mut burst_bufs: SmallVec<[Buf; 4]> = SmallVec::new();
    // The queue, buffer and tile of the last DMA that wrote a tile.
    let mut last_write: Option<(usize, Buf, isa::TileAp)> = None;
    for &i in &func.layout {
        let Some(inst) = func.insts.get_mut(i) else {
            continue;
        };
        if !matches!(inst.engine, Engine::Dma(_)) {
            burst = [false; NUM_DMA_QUEUES];
            continue;
        }
        let key = burst_key(inst);
        if burst.iter().all(|&b| b) || key[..] != burst_bufs[..] {
            burst = [false; NUM_DMA_QUEUES];
            burst_bufs = key;
        }
        let writes = match (&inst.op, inst.bufs.first()) {
            (
                Op::Dma {
                    dst: DmaAp::Tile(t),
                    ..
                },
                Some(&b),
            ) => Some((b, t.clone())),
            _ => None,
        };
        // A DMA that overwrites bytes the DMA just before it wrote (the overlaid pieces of
        // a concat read in place, `tiling/concat_view.rs`) goes to that DMA's queue: the
        // two are ordered anyway, and on one queue the second needs no semaphore and its
        // latency overlaps the first's data phase (a queue's data phases are serial), where
        // on another queue it would issue only when the first had ended.
        let follow = match (&last_write, &writes) {
            (Some((q, b0, t0)), Some((b, t))) if b0 == b && tiles_overlap(t0, t) => Some(*q),
            _ => None,
        };
        // Otherwise the least loaded queue not yet in the burst; `min_by_key` keeps the
        // first (lowest) of equal keys.
        let (q, _) = follow.map(|q| (q, &load[q])).unwrap_or_else(|| {
            load.iter()
                .enumerate()
                .filter(|&(q, _)| !burst[q])
                .min_by_key(|&(_, &bytes)| bytes)
                .unwrap_or((0, &0))
        });
        if let Some((b, t)) = writes {
            last_write = Some((q, b, t));
        }
        burst[q] = true;
        load[q] = load[q].saturating_add(dma_bytes(&inst.op));
        let engine = Engine::Dma(q as u8);
        changed |= inst.engine != engine;
        inst.engine = engine;
    }
    changed
}

/// Whether two tile patterns may share a byte: their memories, partition ranges and the
/// byte spans of their free patterns all meet.
fn tiles_overlap(a: &isa::TileAp, b: &isa::TileAp) -> bool {
    let span = |t: &isa::TileAp| {
        let e = t.dtype.size() as i64;
        let (mut lo, mut hi) = (t.offset as i64, t.offset as i64 + e);
        for d in &t.dims {
            let reach = (d.size as i64 - 1).max(0) * d.stride as i64 * e;
            if reach < 0 {
                lo += reach;
            } else {
                hi += reach;
            }
        }
        (lo, hi)
    };
    let (pa, pb) = (
        (a.partition as u32, a.partition as u32 + a.partitions as u32),
        (b.partition as u32, b.partition as u32 + b.partitions as u32),
    );
    let ((la, ha), (lb, hb)) = (span(a), span(b));
    a.mem == b.mem && pa.0 < pb.1 && pb.0 < pa.1 && la < hb && lb < ha
}

/// What makes consecutive DMAs one burst: for a store, the HBM tensor it writes (the
/// pieces of one SBUF tile's store, and the stores of a block's column pieces to one
/// output); otherwise both buffers (the pieces of one load: keyed by the HBM tensor
/// alone, the small loads of `run/lowp_casts` took 38,470 cycles instead of 36,921).
fn burst_key(inst: &TileInst) -> SmallVec<[Buf; 4]> {
    match (&inst.op, inst.bufs.first()) {
        (
            Op::Dma {
                dst: DmaAp::Hbm(_), ..
            },
            Some(&b),
        ) => SmallVec::from_slice(&[b]),
        _ => inst.bufs.iter().copied().collect(),
    }
}

/// For each instruction that writes a buffer, the next instruction in program order that
/// reads one of the buffers it writes.
fn next_readers(
    func: &TileFunc,
) -> std::collections::HashMap<crate::tile::TInst, crate::tile::TInst> {
    let mut out = std::collections::HashMap::new();
    // The latest writer of each buffer not yet read.
    let mut waiting: std::collections::HashMap<Buf, crate::tile::TInst> = Default::default();
    for &i in &func.layout {
        let accesses = func.insts[i].buf_accesses();
        for &(b, access) in &accesses {
            if access == Access::Read {
                if let Some(w) = waiting.remove(&b) {
                    out.entry(w).or_insert(i);
                }
            }
        }
        for &(b, access) in &accesses {
            if access == Access::Write {
                waiting.insert(b, i);
            }
        }
    }
    out
}

/// True for Vector work on at most one element per partition, all in SBUF (GpSimd has
/// no PSUM port), that GpSimd can run.
fn is_column_work(inst: &TileInst) -> bool {
    if inst.engine != Engine::Vector || !inst.op.opcode().engines().contains(EngineClass::GPSIMD) {
        return false;
    }
    let mut tiny = true;
    inst.op.visit_aps(&mut |ap, _| match ap {
        isa::ApRef::Tile(t) => tiny &= t.free_elems() <= 1 && t.mem == Mem::Sbuf,
        isa::ApRef::Hbm(_) => tiny = false,
    });
    tiny
}

/// The Scalar engine's exact form of a Vector instruction, with its buffers in
/// `visit_aps` order, when it has one.
pub fn scalar_form(inst: &TileInst) -> Option<(Op, SmallVec<[Buf; 4]>)> {
    // The Scalar engine has no integer datapath.
    if inst.engine != Engine::Vector || isa::integer_datapath(&inst.op) {
        return None;
    }
    let mut int_out = false;
    inst.op.visit_aps(&mut |ap, _| {
        if let isa::ApRef::Tile(t) = ap {
            int_out |= t.dtype == isa::Dtype::I32;
        }
    });
    if int_out {
        return None;
    }
    let identity = |out, src, scale, bias, accum| Op::Activate {
        out,
        src,
        func: ActFunc::Identity,
        scale,
        bias,
        accum,
    };
    let one = ScalarArg::imm(1.0);
    let minus_zero = ScalarArg::imm(-0.0);
    let b = &inst.bufs;
    match &inst.op {
        Op::TensorCopy { out, src } => Some((
            identity(out.clone(), src.clone(), one, minus_zero, None),
            b.iter().copied().collect(),
        )),
        Op::TensorScalar {
            out,
            src,
            op0,
            s0,
            op1,
            s1,
        } => {
            // The buffers of s0 and s1, when they are tiles.
            let mut rest = b.iter().skip(2).copied();
            let b0 = matches!(s0, ScalarArg::Ap(_))
                .then(|| rest.next())
                .flatten();
            let b1 = matches!(s1, ScalarArg::Ap(_))
                .then(|| rest.next())
                .flatten();
            let imm_neg = |s: &ScalarArg| match s {
                ScalarArg::Imm(v) => Some(ScalarArg::imm(-v.value())),
                ScalarArg::Ap(_) => None,
            };
            // (scale, its buffer, bias, its buffer)
            let (scale, bs, bias, bb) = match (op0, op1) {
                (AluOp::Mul, AluOp::Bypass) => (s0.clone(), b0, minus_zero, None),
                (AluOp::Add, AluOp::Bypass) => (one, None, s0.clone(), b0),
                (AluOp::Sub, AluOp::Bypass) => (one, None, imm_neg(s0)?, None),
                (AluOp::RSub, AluOp::Bypass) => (ScalarArg::imm(-1.0), None, s0.clone(), b0),
                (AluOp::Mul, AluOp::Add) => (s0.clone(), b0, s1.clone(), b1),
                _ => return None,
            };
            let mut bufs: SmallVec<[Buf; 4]> = b.iter().take(2).copied().collect();
            bufs.extend(bs);
            bufs.extend(bb);
            Some((identity(out.clone(), src.clone(), scale, bias, None), bufs))
        }
        // A row sum becomes the accumulated output of an identity activation that writes
        // its input over itself: only for one sum per partition of an SBUF tile read
        // without repeated elements (PSUM may hold an open accumulation group).
        Op::TensorReduce {
            op: ReduceOp::Add,
            out,
            src,
        } if out.free_elems() == 1
            && src.mem == Mem::Sbuf
            && src.dims.iter().all(|d| d.stride != 0 || d.size == 1) =>
        {
            let (bo, bs) = (*b.first()?, *b.get(1)?);
            Some((
                identity(src.clone(), src.clone(), one, minus_zero, Some(out.clone())),
                SmallVec::from_slice(&[bs, bs, bo]),
            ))
        }
        _ => None,
    }
}

/// The PSUM buffer a copy reads, for a copy out of PSUM in either engine's form.
fn psum_copy_src(inst: &TileInst) -> Option<Buf> {
    let src = match &inst.op {
        Op::TensorCopy { src, .. } => src,
        Op::Activate {
            src,
            func: ActFunc::Identity,
            accum: None,
            ..
        } => src,
        _ => return None,
    };
    (src.mem == Mem::Psum).then(|| inst.bufs.get(1).copied())?
}

/// Places compute work (see the module comment); returns whether anything moved.
pub fn assign_compute(func: &mut TileFunc, cfg: &MachineConfig) -> bool {
    let mut changed = false;
    // The buffers the Vector stream's previous instruction wrote: column work that reads
    // one of them and whose result an activation reads next stays on Vector, right
    // behind its producer (nothing whole-row can be between them), instead of a hop to
    // GpSimd and back on the way from Vector to Scalar (attention's running maximum,
    // between the block maximum and the exponentials: 363,968 -> 326,912 cycles at S =
    // 4096). Other column work goes to GpSimd (layernorm's statistics: keeping them on
    // Vector too cost it 40% of its speed).
    let next_reader = next_readers(func);
    let mut vector_wrote: SmallVec<[Buf; 2]> = SmallVec::new();
    for &i in &func.layout {
        let feeds_scalar = next_reader
            .get(&i)
            .is_some_and(|&r| matches!(func.insts[r].op, Op::Activate { .. }));
        if let Some(inst) = func.insts.get_mut(i) {
            if inst.engine != Engine::Vector {
                continue;
            }
            let accesses = inst.buf_accesses();
            let reads_fresh = accesses
                .iter()
                .any(|&(b, a)| a == Access::Read && vector_wrote.contains(&b));
            if is_column_work(inst) && !(reads_fresh && feeds_scalar) {
                inst.engine = Engine::GpSimd;
                changed = true;
            } else {
                vector_wrote = accesses
                    .iter()
                    .filter(|&&(_, a)| a == Access::Write)
                    .map(|&(b, _)| b)
                    .collect();
            }
        }
    }
    let order: Vec<_> = func.layout.clone();
    let n = order.len();
    // Work that stays where it is, per position: [Vector, Scalar, GpSimd].
    let mut fixed = vec![[0u64; 3]; n];
    // Per position, the costs of movable work: on [Vector, Scalar] for work with a Scalar
    // form (its Scalar form is rebuilt when placed: keeping every form here would hold a
    // whole `Op` per position), on [Vector, GpSimd] for two-input elementwise work.
    let mut movable: Vec<Option<(u64, u64)>> = vec![None; n];
    let mut shareable: Vec<Option<(u64, u64)>> = vec![None; n];
    for (pos, &i) in order.iter().enumerate() {
        let inst = &func.insts[i];
        match scalar_form(inst) {
            Some((op, _)) => {
                let v = compute_cost(&inst.op, Engine::Vector, cfg);
                let s = compute_cost(&op, Engine::Scalar, cfg);
                movable[pos] = Some((v, s));
            }
            None if is_shareable(inst) => {
                // Counted as Vector's until GpSimd takes it.
                let v = compute_cost(&inst.op, Engine::Vector, cfg);
                let g = compute_cost(&inst.op, Engine::GpSimd, cfg);
                shareable[pos] = Some((v, g));
                fixed[pos][0] = v;
            }
            None => match inst.engine {
                Engine::Vector => fixed[pos][0] = compute_cost(&inst.op, Engine::Vector, cfg),
                Engine::Scalar => fixed[pos][1] = compute_cost(&inst.op, Engine::Scalar, cfg),
                Engine::GpSimd => fixed[pos][2] = compute_cost(&inst.op, Engine::GpSimd, cfg),
                _ => {}
            },
        }
    }
    let prefix = |v: &[[u64; 3]]| {
        let mut p = vec![[0u64; 3]; v.len() + 1];
        for (k, x) in v.iter().enumerate() {
            p[k + 1] = [p[k][0] + x[0], p[k][1] + x[1], p[k][2] + x[2]];
        }
        p
    };
    let fixed_sum = prefix(&fixed);
    // How many shareable instructions precede each position, and their Vector cost.
    let mut shareable_before = vec![0usize; n + 1];
    let mut shareable_cost = vec![0u64; n + 1];
    for pos in 0..n {
        shareable_before[pos + 1] = shareable_before[pos] + usize::from(shareable[pos].is_some());
        shareable_cost[pos + 1] = shareable_cost[pos] + shareable[pos].map_or(0, |(v, _)| v);
    }
    // Movable work placed so far, per position, and its running prefix sums; and the
    // Vector work GpSimd took so far.
    let mut placed_sum = vec![[0u64; 3]; n + 1];
    let mut taken_sum = vec![0u64; n + 1];
    for pos in 0..n {
        let mut here = [0u64; 3];
        let mut taken = 0;
        if let Some((v, g)) = shareable[pos] {
            // GpSimd takes two-input elementwise work of a long stream of it (many blocks
            // in flight, so that its four times longer instructions delay no chain that
            // Vector would wait for) where it would still finish it before Vector in a
            // window of the stream: it shares about one part in five (RoPE's products
            // and sums: 499,872 -> 400,672 cycles at [32, 2048, 128]).
            let lo = pos.saturating_sub(GPSIMD_WINDOW);
            let hi = (pos + GPSIMD_WINDOW + 1).min(n);
            // Each engine's load: its fixed work in the window and the work placed on it
            // before this instruction (the shareable work after it is not placed yet).
            let vector =
                fixed_sum[hi][0] - fixed_sum[lo][0] - (shareable_cost[hi] - shareable_cost[lo])
                    + (shareable_cost[pos] - shareable_cost[lo])
                    - (taken_sum[pos] - taken_sum[lo])
                    + placed_sum[pos][0]
                    - placed_sum[lo][0];
            let gpsimd =
                fixed_sum[hi][2] - fixed_sum[lo][2] + placed_sum[pos][2] - placed_sum[lo][2];
            let stream = shareable_before[hi] - shareable_before[lo] >= GPSIMD_STREAM;
            if stream && gpsimd + g < vector + v {
                func.insts[order[pos]].engine = Engine::GpSimd;
                here[2] = g;
                taken = v;
                changed = true;
            }
        }
        if let Some((v, s)) = movable[pos] {
            let lo = pos.saturating_sub(WINDOW);
            let hi = (pos + WINDOW + 1).min(n);
            let load = |e: usize| {
                let taken = if e == 0 {
                    taken_sum[pos] - taken_sum[lo]
                } else {
                    0
                };
                fixed_sum[hi][e] - fixed_sum[lo][e] + placed_sum[pos][e] - placed_sum[lo][e] - taken
            };
            // The second of two adjacent copies out of one PSUM buffer (a bank evacuated
            // in pieces) goes to the engine the first did not take, so the pieces run
            // side by side: the loads in the window count work, not when it runs, and
            // can send both to the same engine one after the other (the odd matmul's
            // last piece: 42,843 cycles with both on Scalar).
            let sibling = pos > 0
                && movable[pos - 1].is_some()
                && psum_copy_src(&func.insts[order[pos]])
                    .is_some_and(|b| psum_copy_src(&func.insts[order[pos - 1]]) == Some(b));
            let to_scalar = if sibling {
                func.insts[order[pos - 1]].engine == Engine::Vector
            } else {
                // Ties stay on Vector, where `tile` put it.
                load(1) + s < load(0) + v
            };
            let form = if to_scalar {
                scalar_form(&func.insts[order[pos]])
            } else {
                None
            };
            if let Some((op, bufs)) = form {
                let inst = &mut func.insts[order[pos]];
                inst.op = op;
                inst.bufs = bufs;
                inst.engine = Engine::Scalar;
                here[1] = s;
                changed = true;
            } else {
                here[0] = v;
            }
        }
        placed_sum[pos + 1] = [
            placed_sum[pos][0] + here[0],
            placed_sum[pos][1] + here[1],
            placed_sum[pos][2] + here[2],
        ];
        taken_sum[pos + 1] = taken_sum[pos] + taken;
    }
    changed
}

/// Merges chains of two per-partition-scalar operations into one `tensor_scalar`: where a
/// Vector `tensor_scalar` with one operation writes an f32 tile `t`, and the next
/// instruction that touches `t`'s buffer is another such one that reads exactly `t` and
/// writes it over itself (or into another tile, when `t`'s buffer holds nothing else),
/// the two become `(x OP0 s0) OP1 s1` at the second's place.
/// The merged instruction keeps the intermediate in f32, which is what the first wrote,
/// so every bit is the same (strict too); nothing else could read the intermediate, and
/// the first's input and scalar are not written between the two. The layernorm
/// backward's `xhat * c1 + c2` took two full passes; now one, in either engine's form.
pub fn merge_scalar_chains(func: &mut TileFunc) -> bool {
    let one_op = |inst: &TileInst| match &inst.op {
        Op::TensorScalar {
            out,
            src,
            op1: AluOp::Bypass,
            ..
        } => {
            inst.engine == Engine::Vector
                && !isa::integer_datapath(&inst.op)
                && out.dtype.is_float()
                && src.dtype.is_float()
        }
        _ => false,
    };
    // For each buffer, the positions in the layout of the instructions that access it.
    let layout = func.layout.clone();
    let mut touches: std::collections::HashMap<Buf, Vec<usize>> = Default::default();
    for (pos, &i) in layout.iter().enumerate() {
        for (b, _) in func.insts[i].buf_accesses() {
            let v = touches.entry(b).or_default();
            if v.last() != Some(&pos) {
                v.push(pos);
            }
        }
    }
    let writes_between = |func: &TileFunc, b: Buf, lo: usize, hi: usize| {
        touches.get(&b).is_some_and(|ps| {
            ps.iter().any(|&p| {
                p > lo
                    && p < hi
                    && func.insts[layout[p]]
                        .buf_accesses()
                        .iter()
                        .any(|&(x, a)| x == b && a == Access::Write)
            })
        })
    };
    let mut dead = std::collections::HashSet::new();
    let mut changed = false;
    for (pos, &first) in layout.iter().enumerate() {
        if dead.contains(&first) || !one_op(&func.insts[first]) {
            continue;
        }
        let Op::TensorScalar {
            out: t,
            src: x,
            op0: a,
            s0,
            ..
        } = func.insts[first].op.clone()
        else {
            continue;
        };
        let fb = func.insts[first].bufs.clone();
        let (Some(&tb), Some(&xb)) = (fb.first(), fb.get(1)) else {
            continue;
        };
        // The first may work in place (its input is then the intermediate's tile itself).
        if t.dtype != isa::Dtype::F32 || t.mem != Mem::Sbuf || (xb == tb && x != t) {
            continue;
        }
        let Some(&next) = touches[&tb].iter().find(|&&p| p > pos) else {
            continue;
        };
        let second = layout[next];
        if !one_op(&func.insts[second]) {
            continue;
        }
        let Op::TensorScalar {
            out: t2,
            src: t1,
            op0: b,
            s0: s1,
            ..
        } = func.insts[second].op.clone()
        else {
            continue;
        };
        let sb = func.insts[second].bufs.clone();
        // The second writes the intermediate over itself, or into another tile when the
        // intermediate's buffer holds nothing else (its whole life is these two).
        let in_place = t2 == t && sb.first() == Some(&tb);
        let alone =
            touches[&tb].len() == 2 && xb != tb && sb.first().is_some_and(|&o| o != tb && o != xb);
        if t1 != t || sb.get(1) != Some(&tb) || !(in_place || alone) {
            continue;
        }
        // The second's scalar is not the intermediate itself.
        let s1_buf = match s1 {
            ScalarArg::Ap(_) => match sb.get(2) {
                Some(&b) if b != tb => Some(b),
                _ => continue,
            },
            ScalarArg::Imm(_) => None,
        };
        let s0_buf = match s0 {
            ScalarArg::Ap(_) => match fb.get(2) {
                Some(&b) => Some(b),
                None => continue,
            },
            ScalarArg::Imm(_) => None,
        };
        // Merged only where that costs no engine a pass it could have given to another:
        // `x * s + t` has a Scalar form, and two operations neither of which has one ran on
        // Vector anyway; `(x - m) * r` stays two passes that Vector and Scalar can share
        // (the E[x^2] - mean^2 layernorm took 1,585,245 cycles instead of 1,398,073 with
        // its one Vector pass).
        let movable = |op: AluOp, s: &ScalarArg| {
            matches!(op, AluOp::Mul | AluOp::Add | AluOp::RSub)
                || (op == AluOp::Sub && matches!(s, ScalarArg::Imm(_)))
        };
        let scalar_merged = a == AluOp::Mul && b == AluOp::Add;
        if !scalar_merged && (movable(a, &s0) || movable(b, &s1)) {
            continue;
        }
        if writes_between(func, xb, pos, next)
            || s0_buf.is_some_and(|b| writes_between(func, b, pos, next))
        {
            continue;
        }
        let mut bufs: SmallVec<[Buf; 4]> = SmallVec::from_slice(&[sb[0], xb]);
        bufs.extend(s0_buf);
        bufs.extend(s1_buf);
        func.insts[second].op = Op::TensorScalar {
            out: t2,
            src: x,
            op0: a,
            s0,
            op1: b,
            s1,
        };
        func.insts[second].bufs = bufs;
        dead.insert(first);
        changed = true;
    }
    func.layout.retain(|i| !dead.contains(i));
    changed
}

/// True for two-input elementwise work on Vector, all in SBUF (GpSimd has no PSUM port),
/// that GpSimd may share.
fn is_shareable(inst: &TileInst) -> bool {
    if inst.engine != Engine::Vector || !matches!(inst.op, Op::TensorTensor { .. }) {
        return false;
    }
    let mut sbuf = true;
    inst.op.visit_aps(&mut |ap, _| match ap {
        isa::ApRef::Tile(t) => sbuf &= t.mem == Mem::Sbuf,
        isa::ApRef::Hbm(_) => sbuf = false,
    });
    sbuf
}

/// The pass: nothing to do before the tile pass has produced tile IR.
pub fn run(c: &mut Compilation) -> Result<bool, String> {
    let cfg = MachineConfig::new(c.options.preset);
    match c.tile.as_mut() {
        Some(func) => {
            let merged = merge_scalar_chains(func);
            let compute = assign_compute(func, &cfg) || merged;
            let dma = balance(func);
            Ok(compute || dma)
        }
        None => Ok(false),
    }
}
