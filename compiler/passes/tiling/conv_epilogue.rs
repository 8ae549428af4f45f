//! Convolution epilogues made cheaper after the block evaluator has emitted them: two
//! consecutive `tensor_scalar` steps on one tile become one instruction with both
//! operations (`op0` then `op1`).
//!
//! Why: an epilogue such as ReLU6 (`clip(y + b, 0, 6)`, MobileNetV2) is evaluated as the
//! bias on Scalar out of PSUM, then `max 0` and `min 6` as two `tensor_scalar`
//! instructions on Vector, so Vector does two passes for Scalar's one and is the
//! bottleneck of the whole layer (MobileNetV2's 1x1 24 -> 144 expand: Vector 94.8% busy).
//! A `tensor_scalar` computes `op1(op0(x, s0), s1)` in f32 with one rounding on write
//! (isa/ISA.md), so when the first step writes f32 (its rounding to f32 is then no
//! rounding at all) and nothing else reads what it wrote, the fused instruction gives the
//! same bits as the two steps, at the cost of one: `64 + N` instead of `2 (64 + N)`.
//!
//! The fusion applies to any pair in a range of the layout (one PSUM tile's epilogue)
//! where all of these hold, and to nothing else:
//! - both are `tensor_scalar` with `op1 = bypass`, on the float datapath (no `i32` or
//!   `bool` tile), the first writing an f32 tile;
//! - the second reads exactly the tile the first wrote (the same access pattern);
//! - no instruction between them touches the first's output buffer, and no instruction
//!   after the second in the range (the rest of the epilogue, its stores included)
//!   touches it either: the first's result is dead once the second has read it;
//! - the first's scalars are immediates or tiles in buffers the second does not write.
//!
//! A second rewrite balances the epilogues' work between the Scalar and Vector engines
//! ([`Tiler::balance_conv_relus`]): a convolution's epilogue is mostly one activation a
//! PSUM tile, `relu(psum + bias)` with the cast, on Scalar, while Vector waits (ResNet-50's
//! 1x1 256 -> 1024: Scalar 66% busy and the layer's last engine, Vector 7%). The same
//! value is a `tensor_scalar` on Vector: `(x + bias) max 0`, the sum rounded to f32 and
//! one rounding to the output dtype, where the activation computes `x * 1` (exact),
//! `+ bias` rounded to f32, `relu` as `max(x, 0)` (docs/machine.md, isa/ISA.md) and the
//! same one rounding: the same bits, NaN, infinities and signed zeros included. Each such
//! activation goes to whichever of the two engines has had less of the convolution's
//! epilogue work so far (the `engines` pass moves only identity activations).

use super::Tiler;
use isa::{ActFunc, AluOp, Dtype, Engine, Op, ScalarArg};

impl Tiler<'_> {
    /// Fuses every pair of `tensor_scalar` steps of the layout from position `start` on
    /// that the module comment allows; returns how many pairs were fused.
    pub(super) fn fuse_tensor_scalars(&mut self, start: usize) -> usize {
        let mut fused = 0;
        let mut i = start;
        while i < self.out.layout.len() {
            if let Some(j) = self.fusable_partner(i) {
                let (a, b) = (self.out.layout[i], self.out.layout[j]);
                let Op::TensorScalar { src, op0, s0, .. } = self.out.insts[a].op.clone() else {
                    unreachable!("checked by fusable_partner")
                };
                let Op::TensorScalar {
                    out,
                    op0: op1,
                    s0: s1,
                    ..
                } = self.out.insts[b].op.clone()
                else {
                    unreachable!("checked by fusable_partner")
                };
                let op = Op::TensorScalar {
                    out,
                    src,
                    op0,
                    s0,
                    op1,
                    s1,
                };
                // The buffers in `Op::visit_aps` order: `out`, `src`, then tile scalars.
                let ia = &self.out.insts[a];
                let ib = &self.out.insts[b];
                let mut bufs: smallvec::SmallVec<[crate::tile::Buf; 4]> = Default::default();
                bufs.push(ib.bufs[0]);
                bufs.extend(ia.bufs.iter().skip(1).copied());
                bufs.extend(ib.bufs.iter().skip(2).copied());
                let engine = ia.engine;
                let inst = &mut self.out.insts[b];
                inst.op = op;
                inst.bufs = bufs;
                inst.engine = engine;
                self.out.layout.remove(i);
                fused += 1;
                continue;
            }
            i += 1;
        }
        fused
    }

    /// Moves the relu activations of a convolution tile's epilogue (the layout from
    /// position `start` on) to Vector as `tensor_scalar (x + bias) max 0` while Vector has
    /// had less epilogue work than Scalar (`self.epilogue_load`: the estimated cycles of
    /// each so far, by docs/machine.md's `64 + N`). See the module comment for why the bits
    /// are the same.
    pub(super) fn balance_conv_relus(&mut self, start: usize) {
        for k in start..self.out.layout.len() {
            let t = self.out.layout[k];
            let inst = &self.out.insts[t];
            let cost = |op: &Op| match op {
                Op::Activate { src, .. } | Op::TensorScalar { src, .. } => 64 + src.free_elems(),
                Op::TensorTensor { a, .. } => 64 + 2 * a.free_elems(),
                Op::TensorCopy { src, .. } => 64 + src.free_elems(),
                _ => 0,
            };
            let c = cost(&inst.op);
            let movable = match &inst.op {
                Op::Activate {
                    out,
                    src,
                    func: ActFunc::Relu,
                    scale: ScalarArg::Imm(one),
                    bias,
                    accum: None,
                } => {
                    one.value() == 1.0
                        && out.dtype.is_float()
                        && src.dtype.is_float()
                        && match bias {
                            ScalarArg::Ap(b) => b.dtype.is_float(),
                            ScalarArg::Imm(_) => true,
                        }
                }
                _ => false,
            };
            let (scalar, vector) = self.epilogue_load;
            if movable && vector < scalar {
                let Op::Activate { out, src, bias, .. } = inst.op.clone() else {
                    unreachable!("checked above")
                };
                let inst = &mut self.out.insts[t];
                inst.op = Op::TensorScalar {
                    out,
                    src,
                    op0: AluOp::Add,
                    s0: bias,
                    op1: AluOp::Max,
                    s1: ScalarArg::imm(0.0),
                };
                inst.engine = Engine::Vector;
            }
            match self.out.insts[t].engine {
                Engine::Scalar => self.epilogue_load.0 += c,
                Engine::Vector => self.epilogue_load.1 += c,
                _ => {}
            }
        }
    }

    /// The layout position of the `tensor_scalar` that the one at position `i` may be
    /// fused into (see the module comment), if any.
    fn fusable_partner(&self, i: usize) -> Option<usize> {
        let layout = &self.out.layout;
        let a = &self.out.insts[layout[i]];
        let Op::TensorScalar {
            out: a_out,
            src: a_src,
            op1: AluOp::Bypass,
            s0: a_s0,
            s1: ScalarArg::Imm(_),
            ..
        } = &a.op
        else {
            return None;
        };
        if a_out.dtype != Dtype::F32 || !a_src.dtype.is_float() {
            return None;
        }
        if let ScalarArg::Ap(t) = a_s0 {
            if !t.dtype.is_float() {
                return None;
            }
        }
        let a_buf = *a.bufs.first()?;
        // The fused instruction reads the first's source and scalar where the second
        // stands: nothing in between may write them.
        let a_reads = &a.bufs[1..];
        // The first later instruction that touches the first's output buffer must be the
        // partner; every one after it must leave that buffer alone.
        let mut partner = None;
        for (k, &t) in layout.iter().enumerate().skip(i + 1) {
            let inst = &self.out.insts[t];
            if partner.is_none()
                && inst
                    .buf_accesses()
                    .iter()
                    .any(|&(b, acc)| acc == isa::Access::Write && a_reads.contains(&b))
            {
                return None;
            }
            if !inst.bufs.contains(&a_buf) {
                continue;
            }
            if partner.is_some() {
                return None;
            }
            let Op::TensorScalar {
                out: b_out,
                src: b_src,
                op1: AluOp::Bypass,
                s0: b_s0,
                s1: ScalarArg::Imm(_),
                ..
            } = &inst.op
            else {
                return None;
            };
            if b_src != a_out || inst.bufs[1] != a_buf || !b_out.dtype.is_float() {
                return None;
            }
            if let ScalarArg::Ap(s) = b_s0 {
                if !s.dtype.is_float() || inst.bufs.get(2) == Some(&a_buf) {
                    return None;
                }
            }
            // The first's scalar tile must not be what the second writes.
            if matches!(a_s0, ScalarArg::Ap(_)) && a.bufs.get(2) == Some(&inst.bufs[0]) {
                return None;
            }
            partner = Some(k);
        }
        partner
    }
}
