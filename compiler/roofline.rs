//! The roofline bound of a kernel (`docs/machine.md`, "The roofline bound"): the time
//! the kernel cannot beat on the machine, computed from tensor IR alone — never from the
//! emitted instructions, so emitting more or other code cannot make it look better.
//!
//! Three limits, in cycles; the bound is the largest:
//! - `dma`: compulsory HBM traffic — every input read once, every output written once — at
//!   the DMA peak (`dma_total_rate`, 256 B/cycle by default);
//! - `tensor`: the multiply-accumulates of every matmul at the Tensor engine's peak for
//!   its operands (128 x 128 MACs per moving column; the faster operand dtype decides,
//!   since the compiler may choose which side moves);
//! - `scalar`: the elements of every transcendental function at the Scalar engine's peak
//!   of 128 elements per cycle (one element per partition per cycle).
//!
//! The bound ignores latency, so a small kernel cannot come near it: every DMA transfer
//! waits `dma_latency` cycles (2,000 by default) before its first byte moves, and a kernel
//! needs at least a load before its work and a store after it. The *latency-aware
//! ceiling* ([`Ceiling`]) adds what latency no program can avoid; like the bound it is
//! computed from tensor IR and the machine's timing alone, and it rests on the same
//! premise (every input byte, every output byte and every counted operation is needed).
//! Its argument, for any race-free program (a consumer waits on a semaphore its producer
//! signals when it ends; a transfer issues at cycle 0 at the earliest and its data phase
//! starts `L = dma_latency` cycles after its issue at the earliest):
//! - no byte moves before cycle `L`, so the compulsory bytes `R + W` need `L + (R + W) / B`
//!   (`B` the DMA peak);
//! - the last input byte arrives at `L + R / B` at the earliest, and a store that depends
//!   on it issues after that and moves its first byte `L` later: `2L + R / B`;
//! - a store of an output every element of which depends on an input issues after a load
//!   ended, so those `W'` bytes move after `2L` at the earliest: `2L + W' / B`;
//! - when every matmul reads an operand every element of which depends on an input, the
//!   Tensor engine starts after a load ended (after `L`), is busy for the bound's `tensor`
//!   cycles at least, and the last matmul's result is in PSUM, which DMA cannot read: a
//!   Vector or Scalar instruction (at least `min(vector_fixed, scalar_fixed)` cycles)
//!   copies it out before the store that takes `L`: `2L + tensor + fixed`;
//! - likewise for transcendentals, evaluated by Scalar instructions of at least
//!   `scalar_fixed` cycles each, and read directly by a store: `2L + scalar + scalar_fixed`.
//!
//! A latency term is left out where its premise fails (no inputs, an operand with
//! constant elements such as a `tril` fill), so the ceiling never overstates what a
//! program can reach. It does not add one latency after the whole bandwidth term: a
//! program that stores early blocks while it loads later ones moves bytes during the last
//! store's latency, so a large kernel can end `L + (R + W) / B` cycles in. The best
//! roofline efficiency a kernel can reach is `bound / ceiling`.

use crate::ir::{BinaryOp, Function, TOp, UnaryFn, Value};
use cranelift_entity::SecondaryMap;
use runtime::Timing;

/// The bound and its parts, in cycles.
#[derive(Clone, Debug, PartialEq)]
pub struct Bound {
    pub dma_cycles: f64,
    pub tensor_cycles: f64,
    pub scalar_cycles: f64,
    /// Bytes of the inputs and of the outputs.
    pub hbm_read_bytes: u64,
    pub hbm_write_bytes: u64,
    /// Matmul floating-point operations (2 per multiply-accumulate).
    pub matmul_flops: u64,
    /// Transcendental elements.
    pub transcendentals: u64,
    /// The latency-aware ceiling, from the same tensor IR.
    pub ceiling: Ceiling,
}

/// The latency-aware ceiling and its parts, in cycles: the bound's three limits with the
/// DMA latency no program can avoid (the module documentation gives the argument). Each
/// part is at least the bound's part of the same name.
#[derive(Clone, Debug, PartialEq)]
pub struct Ceiling {
    /// The machine's DMA latency, `L`.
    pub dma_latency: u64,
    /// The largest of `L + (R + W) / B`, `2L + R / B` and `2L + W' / B`.
    pub dma_cycles: f64,
    /// `2L + tensor + min(vector_fixed, scalar_fixed)`, or less where a latency cannot
    /// be proved; 0 without matmuls.
    pub tensor_cycles: f64,
    /// `2L + scalar + scalar_fixed`, or less where a latency cannot be proved; 0 without
    /// transcendentals.
    pub scalar_cycles: f64,
}

/// The largest of three limits (DMA, Tensor, Scalar), rounded up to whole cycles: what
/// both the bound and the ceiling are.
fn largest_cycles(dma: f64, tensor: f64, scalar: f64) -> u64 {
    dma.max(tensor).max(scalar).ceil() as u64
}

/// The name of the largest of three limits; ties go to the Tensor engine, then to DMA.
fn largest_engine(dma: f64, tensor: f64, scalar: f64) -> &'static str {
    if tensor >= dma && tensor >= scalar {
        "tensor"
    } else if scalar > dma {
        "scalar"
    } else {
        "dma"
    }
}

impl Ceiling {
    /// The ceiling: the largest of the three parts, rounded up to whole cycles.
    pub fn cycles(&self) -> u64 {
        largest_cycles(self.dma_cycles, self.tensor_cycles, self.scalar_cycles)
    }

    /// The part that sets the ceiling: `"dma"`, `"tensor"` or `"scalar"`.
    pub fn engine(&self) -> &'static str {
        largest_engine(self.dma_cycles, self.tensor_cycles, self.scalar_cycles)
    }
}

impl Bound {
    /// The bound: the largest of the three limits, rounded up to whole cycles.
    pub fn cycles(&self) -> u64 {
        largest_cycles(self.dma_cycles, self.tensor_cycles, self.scalar_cycles)
    }

    /// The engine whose limit is the bound: `"dma"`, `"tensor"` or `"scalar"`.
    pub fn engine(&self) -> &'static str {
        largest_engine(self.dma_cycles, self.tensor_cycles, self.scalar_cycles)
    }

    /// The best roofline efficiency a program can reach: bound / ceiling.
    pub fn best_efficiency(&self) -> f64 {
        let c = self.ceiling.cycles();
        if c == 0 {
            0.0
        } else {
            self.cycles() as f64 / c as f64
        }
    }
}

/// True for the functions the roofline counts as transcendentals, one per element at the
/// Scalar engine's peak: exactly the machine's list (docs/machine.md), `exp log tanh
/// sigmoid silu gelu gelu_tanh sin cos erf softplus` and the binary `pow`. `sqrt`, `rsqrt`
/// and `reciprocal` are not in it, nor are the exact functions.
fn is_transcendental(op: &TOp) -> bool {
    matches!(
        op,
        TOp::Unary(
            UnaryFn::Exp
                | UnaryFn::Log
                | UnaryFn::Tanh
                | UnaryFn::Sigmoid
                | UnaryFn::Silu
                | UnaryFn::Gelu
                | UnaryFn::GeluTanh
                | UnaryFn::Sin
                | UnaryFn::Cos
                | UnaryFn::Erf
                | UnaryFn::Softplus
        ) | TOp::Binary(BinaryOp::Pow)
    )
}

/// For each value, whether every one of its elements depends on some input element: then
/// whatever computes any part of it waits for a load. Conservative: `tril` gives false,
/// since the elements it fills are constants.
fn input_dependent(func: &Function) -> SecondaryMap<Value, bool> {
    let mut full = SecondaryMap::new();
    for (_, v) in &func.params {
        full[*v] = true;
    }
    for &inst in &func.layout {
        let data = &func.insts[inst];
        let any = data.args.iter().any(|a| full[*a]);
        full[data.result] = match data.op {
            TOp::Const(_) | TOp::Tril { .. } | TOp::Pad { .. } | TOp::Arange => false,
            // Each element is an element of one part.
            TOp::Concat(_) => data.args.iter().all(|a| full[*a]),
            // Each element of these reads at least one element of every argument (a
            // reduction or a matmul's K axis has at least one element).
            TOp::Unary(_)
            | TOp::Binary(_)
            | TOp::Matmul
            | TOp::Reduce { .. }
            | TOp::ArgReduce { .. }
            | TOp::Cumsum { .. }
            | TOp::Transpose(_)
            | TOp::Reshape
            | TOp::Slice(_)
            | TOp::BroadcastTo
            | TOp::Cast
            | TOp::Take { .. }
            | TOp::Pool(_) => any,
            // Without padding every window reads some input element; with it, a window may
            // lie wholly in the padding (PyTorch allows any padding).
            TOp::Conv(ref a) => any && a.padding.iter().all(|&p| p == 0),
            // A branch may be a constant, but the condition is read for every element.
            TOp::Where => full[data.args[0]] && any,
        };
    }
    full
}

/// The elements of input `v` a kernel must read: all of them, unless the kernel reads `v`
/// only through slices, when it is the elements those slices select (their union, exact up
/// to 2^24 elements; beyond, the largest slice's, which never overstates it).
fn read_elems(func: &Function, v: Value) -> u64 {
    let all = func.ty(v).elems();
    if let Some(n) = pooled_elems(func, v) {
        return n;
    }
    let mut slices = Vec::new();
    for &inst in &func.layout {
        let data = &func.insts[inst];
        if !data.args.contains(&v) {
            continue;
        }
        match &data.op {
            TOp::Slice(axes) => slices.push((axes, func.ty(data.result).shape.clone())),
            _ => return all,
        }
    }
    if func.results.contains(&v) || slices.is_empty() {
        return all;
    }
    let shape = &func.ty(v).shape;
    let counts = |axes: &[crate::ir::SliceAxis], result: &[u64]| -> Vec<u64> {
        let mut kept = result.iter();
        axes.iter()
            .map(|a| {
                if a.keep {
                    *kept.next().unwrap_or(&1)
                } else {
                    1
                }
            })
            .collect()
    };
    if all > 1 << 24 {
        return slices
            .iter()
            .map(|(axes, r)| counts(axes, r).iter().product::<u64>())
            .max()
            .unwrap_or(all);
    }
    let mut seen = vec![false; all as usize];
    let mut strides = vec![1u64; shape.len()];
    for i in (0..shape.len().saturating_sub(1)).rev() {
        strides[i] = strides[i + 1] * shape[i + 1];
    }
    for (axes, result) in &slices {
        let counts = counts(axes, result);
        let total: u64 = counts.iter().product();
        for flat in 0..total {
            let mut rem = flat;
            let mut off = 0i64;
            for d in (0..counts.len()).rev() {
                let i = (rem % counts[d]) as i64;
                rem /= counts[d];
                off += (axes[d].start as i64 + i * axes[d].step) * strides[d] as i64;
            }
            if let Some(s) = seen.get_mut(off as usize) {
                *s = true;
            }
        }
    }
    seen.iter().filter(|&&s| s).count() as u64
}

/// The elements of input `v` that a kernel reading it only through pools must read: along
/// each spatial axis the positions some window covers (a stride longer than the dilated
/// window skips some), the largest count over the pools. `None` when something else reads
/// `v` or it is returned.
fn pooled_elems(func: &Function, v: Value) -> Option<u64> {
    if func.results.contains(&v) {
        return None;
    }
    let mut most: Option<u64> = None;
    for &inst in &func.layout {
        let data = &func.insts[inst];
        if !data.args.contains(&v) {
            continue;
        }
        let TOp::Pool(p) = &data.op else {
            return None;
        };
        let shape = &func.ty(v).shape;
        let out = &func.ty(data.result).shape;
        let mut n = shape[0] * shape[1];
        for a in 0..p.axes() {
            let len = shape[2 + a];
            let mut seen = vec![false; len as usize];
            for o in 0..out[2 + a] {
                let w = p.window_of(a, len, o);
                for t in w.first..w.end {
                    seen[(w.start + (t * p.dilation[a]) as i64) as usize] = true;
                }
            }
            n *= seen.iter().filter(|&&s| s).count() as u64;
        }
        most = Some(most.map_or(n, |m| m.max(n)));
    }
    most
}

/// The compulsory HBM bytes read of the parameter `p`: all of it once, or, when the kernel
/// reads it only as the source of `take`s, the rows those takes select (duplicates
/// included: each selected row is a read of its own).
fn read_bytes(func: &Function, p: Value) -> u64 {
    let ty = func.ty(p);
    let whole = ty.elems() * ty.dtype.size() as u64;
    let mut taken = 0u64;
    for &inst in &func.layout {
        let data = &func.insts[inst];
        for (i, &a) in data.args.iter().enumerate() {
            if a != p {
                continue;
            }
            match data.op {
                TOp::Take { .. } if i == 0 => {
                    taken =
                        taken.saturating_add(func.ty(data.result).elems() * ty.dtype.size() as u64);
                }
                _ => return whole,
            }
        }
    }
    if taken > 0 && !func.results.contains(&p) {
        taken
    } else {
        whole
    }
}

/// The roofline bound of a kernel on a machine with timing `t`.
pub fn bound(func: &Function, t: &Timing) -> Bound {
    let bytes = |v| {
        let ty = func.ty(v);
        ty.elems() * ty.dtype.size() as u64
    };
    // An input read only through `take`s counts the rows they select; one read only through
    // slices, the elements they select; any other input, all of it.
    let hbm_read_bytes: u64 = func
        .params
        .iter()
        .map(|(_, v)| {
            let ty = func.ty(*v);
            let taken = read_bytes(func, *v);
            if taken != ty.elems() * ty.dtype.size() as u64 {
                taken
            } else {
                read_elems(func, *v) * ty.dtype.size() as u64
            }
        })
        .sum();
    let hbm_write_bytes: u64 = func.results.iter().map(|v| bytes(*v)).sum();
    let full = input_dependent(func);
    let mut tensor_cycles = 0.0;
    let mut matmul_flops = 0u64;
    let mut transcendentals = 0u64;
    // Whether every matmul, and every transcendental, waits for a load.
    let mut matmuls_wait = true;
    let mut transcendentals_wait = true;
    for &inst in &func.layout {
        let data = &func.insts[inst];
        match data.op {
            TOp::Matmul => {
                let a = func.ty(data.args[0]);
                let b = func.ty(data.args[1]);
                let k = a.shape[a.shape.len() - 1];
                let out = func.ty(data.result).elems();
                let macs = out * k;
                matmul_flops += 2 * macs;
                let rate = |d| {
                    let r = t.pe_rate_of(d);
                    r.columns as f64 / r.cycles as f64
                };
                let columns_per_cycle = rate(a.dtype).max(rate(b.dtype));
                tensor_cycles += macs as f64 / (128.0 * 128.0 * columns_per_cycle);
                matmuls_wait &= full[data.result];
            }
            TOp::Conv(_) => {
                // N x O x C/groups x kernel elements x output positions multiply-adds.
                let x = func.ty(data.args[0]);
                let w = func.ty(data.args[1]);
                let macs = func.ty(data.result).elems() * w.shape[1..].iter().product::<u64>();
                matmul_flops += 2 * macs;
                let rate = |d| {
                    let r = t.pe_rate_of(d);
                    r.columns as f64 / r.cycles as f64
                };
                let columns_per_cycle = rate(x.dtype).max(rate(w.dtype));
                tensor_cycles += macs as f64 / (128.0 * 128.0 * columns_per_cycle);
                matmuls_wait &= full[data.result];
            }
            ref op if is_transcendental(op) => {
                transcendentals += func.ty(data.result).elems();
                transcendentals_wait &= full[data.result];
            }
            _ => {}
        }
    }
    let dependent_write_bytes: u64 = func
        .results
        .iter()
        .filter(|v| full[**v])
        .map(|v| bytes(*v))
        .sum();
    let rate = t.dma_total_rate as f64;
    let scalar_cycles = transcendentals as f64 / 128.0;
    let latency = t.dma_latency as f64;
    // The first load's latency before work that waits for a load, the last store's after.
    let lead = |waits: bool| if waits { latency } else { 0.0 };
    let mut ceiling_dma: f64 = 0.0;
    if hbm_read_bytes + hbm_write_bytes > 0 {
        ceiling_dma = latency + (hbm_read_bytes + hbm_write_bytes) as f64 / rate;
    }
    if hbm_read_bytes > 0 && hbm_write_bytes > 0 {
        ceiling_dma = ceiling_dma.max(2.0 * latency + hbm_read_bytes as f64 / rate);
    }
    if dependent_write_bytes > 0 {
        ceiling_dma = ceiling_dma.max(2.0 * latency + dependent_write_bytes as f64 / rate);
    }
    let ceiling_tensor = if matmul_flops > 0 {
        lead(matmuls_wait) + tensor_cycles + t.vector_fixed.min(t.scalar_fixed) as f64 + latency
    } else {
        0.0
    };
    let ceiling_scalar = if transcendentals > 0 {
        lead(transcendentals_wait) + scalar_cycles + t.scalar_fixed as f64 + latency
    } else {
        0.0
    };
    Bound {
        dma_cycles: (hbm_read_bytes + hbm_write_bytes) as f64 / rate,
        tensor_cycles,
        scalar_cycles,
        hbm_read_bytes,
        hbm_write_bytes,
        matmul_flops,
        transcendentals,
        ceiling: Ceiling {
            dma_latency: t.dma_latency,
            dma_cycles: ceiling_dma,
            tensor_cycles: ceiling_tensor,
            scalar_cycles: ceiling_scalar,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bound_of(ir: &str) -> Bound {
        let funcs = crate::ir::parse(ir).expect("test IR parses");
        bound(
            &funcs[0],
            &runtime::MachineConfig::new(isa::Preset::Default).timing,
        )
    }

    /// The quick start's softmax at its default size: 512,000 bytes each way.
    const SOFTMAX: &str = "kernel softmax(v0 x: f32[128, 1000] @0..0) -> (f32[128, 1000]) {
        v1 = max v0 axis=1 keepdims=true : f32[128, 1] @0..0
        v2 = sub v0, v1 : f32[128, 1000] @0..0
        v3 = exp v2 : f32[128, 1000] @0..0
        v4 = sum v3 axis=1 keepdims=true : f32[128, 1] @0..0
        v5 = div v3, v4 : f32[128, 1000] @0..0
        return v5
    }";

    #[test]
    fn a_small_kernel_pays_a_load_and_a_store_latency_on_top_of_its_bound() {
        let b = bound_of(SOFTMAX);
        assert_eq!(b.cycles(), 4000);
        assert_eq!(b.engine(), "dma");
        // 2,000 cycles of latency, then 512,000 bytes read, then 2,000 cycles of latency
        // before the last store moves: 6,000, more than latency and all bytes (6,000 too).
        assert_eq!(b.ceiling.dma_cycles, 6000.0);
        // exp: 2,000 + 1,000 + 64 + 2,000.
        assert_eq!(b.ceiling.scalar_cycles, 5064.0);
        assert_eq!(b.ceiling.tensor_cycles, 0.0);
        assert_eq!(b.ceiling.cycles(), 6000);
        assert_eq!(b.ceiling.engine(), "dma");
        assert!((b.best_efficiency() - 4000.0 / 6000.0).abs() < 1e-12);
    }

    #[test]
    fn a_large_kernel_pays_one_latency_since_stores_overlap_the_last_ones() {
        let b = bound_of(
            "kernel k(v0 x: f32[4096, 4096] @0..0) -> (f32[4096, 4096]) {
                v1 = exp v0 : f32[4096, 4096] @0..0
                return v1
            }",
        );
        let bytes = 2.0 * 4096.0 * 4096.0 * 4.0;
        assert_eq!(b.dma_cycles, bytes / 256.0);
        assert_eq!(b.ceiling.dma_cycles, 2000.0 + bytes / 256.0);
        assert_eq!(b.ceiling.cycles(), b.cycles() + 2000);
    }

    #[test]
    fn a_matmul_adds_both_latencies_and_the_psum_copy() {
        let b = bound_of(
            "kernel k(v0 a: bf16[4096, 4096] @0..0, v1 b: bf16[4096, 4096] @0..0) -> (f32[4096, 4096]) {
                v2 = matmul v0, v1 : f32[4096, 4096] @0..0
                return v2
            }",
        );
        assert_eq!(b.engine(), "tensor");
        assert_eq!(
            b.ceiling.tensor_cycles,
            b.tensor_cycles + 2000.0 + 64.0 + 2000.0
        );
        assert_eq!(b.ceiling.engine(), "tensor");
    }

    /// A `tril` fill is constant, so what reads it may start before any load: no leading
    /// latency for the work on it, nor for the store of its constant elements.
    #[test]
    fn work_on_constant_elements_gets_no_leading_latency() {
        let b = bound_of(
            "kernel k(v0 x: f32[128, 128] @0..0) -> (f32[128, 128]) {
                v1 = tril v0 k=0 fill=0 : f32[128, 128] @0..0
                v2 = exp v1 : f32[128, 128] @0..0
                return v2
            }",
        );
        assert_eq!(b.ceiling.scalar_cycles, 128.0 + 64.0 + 2000.0);
        // Reads: 2,000 + 256, then the store's latency; every output byte may be a fill.
        assert_eq!(b.ceiling.dma_cycles, 2.0 * 2000.0 + 65536.0 / 256.0);
        let c = bound_of(
            "kernel k(v0 x: f32[128, 128] @0..0) -> (f32[128, 128]) {
                v1 = const 2.0 : f32[] @0..0
                v2 = mul v0, v1 : f32[128, 128] @0..0
                v3 = exp v2 : f32[128, 128] @0..0
                return v3
            }",
        );
        assert_eq!(c.ceiling.scalar_cycles, 2000.0 + 128.0 + 64.0 + 2000.0);
    }
}
