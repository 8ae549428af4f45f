//! Flash attention: the lowering of an attention group (`passes/attention.rs`) in which
//! the S x S scores never go to HBM.
//!
//! K (transposed, D on partitions) and V (keys on partitions) are loaded once and stay in
//! SBUF. For each block of 128 queries: `q^T` is prepared on the Tensor engine; then for
//! each block of keys the scores go to PSUM (`q^T^T @ k^T`), the row maximum is updated
//! (`m_new = max(m, max(s))`), the probabilities `exp(c*s - c*m_new)` and their row sum come
//! from one Scalar activation (with `c` the positive scale), the running sum and the output
//! accumulator are rescaled by `alpha = exp(c*m - c*m_new)`, the probabilities are
//! transposed on the Tensor engine and multiplied with V into PSUM, and added to the
//! accumulator. At the end the accumulator is divided by the running sum and the rest of
//! the group (a cast) runs on it. A causal mask (`tril`, fill -inf) skips key blocks that
//! lie entirely above the diagonal and masks the blocks that cross it.

use super::block::{AxisUse, Tile};
use super::matmul::Operand2d;
use super::Tiler;
use crate::passes::attention::Attention;
use crate::passes::fusion::{Group, Root};
use isa::{ActFunc, Affine, AluOp, CmpOp, Dtype, Engine, Imm, Op, ReduceOp, ScalarArg};
use smallvec::smallvec;

/// Keys per block: one PSUM bank of f32 scores.
const KEY_BLOCK: u64 = 512;
/// Query tiles in flight together.
const QUERY_GROUP: usize = 4;

/// The running state of one block of 128 queries.
struct QueryTile {
    m0: u64,
    msz: u64,
    /// q^T, one tile per chunk of D.
    qt: Vec<Tile>,
    /// Running row maximum and sum.
    m_run: Tile,
    l_run: Tile,
    /// The output accumulator, in PSUM.
    o: Tile,
}

impl Tiler<'_> {
    pub(super) fn lower_attention(&mut self, g: &Group, a: &Attention) -> Result<(), String> {
        let func = self.func;
        let span = func.spans[a.out];
        let q = self.home_of(a.q)?;
        let kt = self.home_of(a.kt)?;
        let v = self.home_of(a.v)?;
        let (sq, d) = (q.shape[0], q.shape[1]);
        let sk = kt.shape[1];
        let dv = v.shape[1];
        // The probabilities' dtype: what the second matmul multiplies.
        let p_dtype = func.ty(func.insts[a.out].args[0]).dtype;
        // The layout pass's loads (none: follow the strides).
        let loads = self.layout.attention(a.out);
        let load = |i: usize| loads.map(|l| l[i]);
        let qo = Operand2d::new(q.clone(), q.offset, q.strides[1], q.strides[0], load(0));
        let ko = Operand2d::new(kt.clone(), kt.offset, kt.strides[0], kt.strides[1], load(1));
        let vo = Operand2d::new(v.clone(), v.offset, v.strides[0], v.strides[1], load(2));
        // K^T and V stay in SBUF: per chunk of 128 keys, K^T as one tile per chunk of D.
        let chunks = sk.div_ceil(128);
        let kt_tiles: Vec<Vec<Tile>> = (0..chunks)
            .map(|c| {
                let k0 = c * 128;
                self.prepare_kmajor(&ko, d, k0, 128.min(sk - k0), 0, span)
            })
            .collect();
        let v_tiles: Vec<Tile> = (0..chunks)
            .map(|c| {
                let k0 = c * 128;
                self.load_kmajor(&vo, k0, 128.min(sk - k0), 0, dv, span)
            })
            .collect();
        // The rest of the group after the second matmul (casts), evaluated on the output.
        let pos = g.insts.iter().position(|&i| i == a.out).unwrap_or(0);
        let tail = Group {
            root: Root::Matmul(a.out),
            space: g.space.clone(),
            insts: g.insts[pos..].to_vec(),
            needs_plain_rows: false,
        };
        // Query tiles are processed QUERY_GROUP at a time, block by block in turn, so the
        // engines always have a second, independent chain of work: while one tile's
        // softmax runs on Vector and Scalar, the other's matmuls run on the PE array.
        let tiles: Vec<(u64, u64)> = (0..sq.div_ceil(128))
            .map(|t| (t * 128, 128.min(sq - t * 128)))
            .collect();
        for group in tiles.chunks(QUERY_GROUP) {
            let mut states: Vec<QueryTile> = group
                .iter()
                .map(|&(m0, msz)| {
                    let qt = self.prepare_kmajor(&qo, d, m0, msz, 0, span);
                    let parts = msz as u32;
                    let m_run = self.sbuf_tile(Dtype::F32, parts, 1);
                    self.fill(m_run, f32::NEG_INFINITY, span);
                    let l_run = self.sbuf_tile(Dtype::F32, parts, 1);
                    self.fill(l_run, 0.0, span);
                    // The output accumulates in PSUM across key blocks: each block rescales
                    // it in place and its p @ v matmuls add to it.
                    let o = self.psum_tile(Dtype::F32, msz, dv);
                    self.fill(o, 0.0, span);
                    QueryTile {
                        m0,
                        msz,
                        qt,
                        m_run,
                        l_run,
                        o,
                    }
                })
                .collect();
            let mut j0 = 0;
            while j0 < sk {
                let kb = KEY_BLOCK.min(sk - j0);
                // Causal: a block whose first key is past every query's diagonal is skipped.
                let live: Vec<bool> = states
                    .iter()
                    .map(|st| match a.tril {
                        Some(k) => j0 as i64 <= (st.m0 + st.msz - 1) as i64 + k,
                        None => true,
                    })
                    .collect();
                // Every tile's scores first, then every tile's softmax and p @ v: the PE
                // array computes one tile's scores while another's softmax runs.
                let scores: Vec<Option<Tile>> = states
                    .iter()
                    .zip(&live)
                    .map(|(st, &l)| {
                        l.then(|| self.attention_scores(a, st, &kt_tiles, j0, kb, span))
                    })
                    .collect();
                // Then each stage for every tile in turn, so no engine's in-order stream
                // holds one tile's work behind another tile's wait.
                let soft: Vec<Option<(Tile, Tile)>> = states
                    .iter_mut()
                    .zip(scores)
                    .map(|(st, s)| s.map(|s| self.attention_softmax(a, st, s, kb, p_dtype, span)))
                    .collect();
                let pts: Vec<Option<Tile>> = states
                    .iter()
                    .zip(&soft)
                    .map(|(st, sm)| {
                        sm.map(|(p, _)| self.attention_transpose(st, p, kb, p_dtype, span))
                    })
                    .collect();
                for ((st, sm), pt) in states.iter().zip(&soft).zip(pts) {
                    if let (Some((_, alpha)), Some(pt)) = (sm, pt) {
                        self.attention_accumulate(st, pt, *alpha, &v_tiles, j0, kb, span);
                    }
                }
                j0 += kb;
            }
            for st in &states {
                // o / l, then the rest of the group.
                let parts = st.msz as u32;
                let o = self.sbuf_tile(Dtype::F32, parts, dv as u32);
                self.out.push(
                    Op::TensorScalar {
                        out: o.ap(),
                        src: st.o.ap(),
                        op0: AluOp::Div,
                        s0: ScalarArg::Ap(st.l_run.ap()),
                        op1: AluOp::Bypass,
                        s1: ScalarArg::imm(0.0),
                    },
                    Engine::Vector,
                    &[o.buf, st.o.buf, st.l_run.buf],
                    span,
                );
                let fixed: Vec<AxisUse> = Vec::new();
                self.epilogue(&tail, a.out, o, &fixed, (st.m0, st.msz), (0, dv), false)?;
            }
        }
        Ok(())
    }

    /// The scores of one key block of one query tile (in PSUM, or masked in SBUF).
    fn attention_scores(
        &mut self,
        a: &Attention,
        st: &QueryTile,
        kt_tiles: &[Vec<Tile>],
        j0: u64,
        kb: u64,
        span: crate::frontend::typed::Span,
    ) -> Tile {
        let (m0, msz) = (st.m0, st.msz);
        // Scores s = q k^T for this block, 128 keys per matmul.
        let s = self.psum_tile(Dtype::F32, msz, kb);
        let mut c0 = 0;
        while c0 < kb {
            let cs = 128.min(kb - c0);
            let chunk = ((j0 + c0) / 128) as usize;
            let slice = Tile {
                cols: cs as u32,
                col_offset: s.col_offset + c0 as u32,
                ..s
            };
            for (di, q) in st.qt.iter().enumerate() {
                self.matmul(slice, *q, kt_tiles[chunk][di], di > 0, span);
            }
            c0 += cs;
        }
        // The mask, where the block crosses the diagonal (GpSimd reads SBUF only).
        let mut src = s;
        if let Some(k) = a.tril {
            if (j0 + kb - 1) as i64 > m0 as i64 + k {
                let copy = self.copy_to_sbuf(s, Dtype::F32, span);
                let base = m0 as i64 + k - j0 as i64;
                self.out.push(
                    Op::AffineSelect {
                        out: copy.ap(),
                        src: copy.ap(),
                        cmp: CmpOp::Ge,
                        expr: Affine {
                            base: base.clamp(i32::MIN as i64, i32::MAX as i64) as i32,
                            partition_step: 1,
                            steps: smallvec![-1],
                        },
                        fill: Imm::new(f32::NEG_INFINITY),
                    },
                    Engine::GpSimd,
                    &[copy.buf, copy.buf],
                    span,
                );
                src = copy;
            }
        }
        src
    }

    /// The softmax part of one key block of one query tile, given its scores `src`:
    /// running max and sum, and the probabilities; returns them and the rescale factor.
    fn attention_softmax(
        &mut self,
        a: &Attention,
        st: &mut QueryTile,
        src: Tile,
        kb: u64,
        p_dtype: Dtype,
        span: crate::frontend::typed::Span,
    ) -> (Tile, Tile) {
        let c = a.scale;
        let parts = st.msz as u32;
        // m_new = max(m, max(s)); bias = -c * m_new; alpha = exp(c*m - c*m_new).
        let mb = self.sbuf_tile(Dtype::F32, parts, 1);
        self.out.push(
            Op::TensorReduce {
                op: ReduceOp::Max,
                out: mb.ap(),
                src: src.ap(),
            },
            Engine::Vector,
            &[mb.buf, src.buf],
            span,
        );
        let m_new = self.tiny(
            AluOp::Max,
            mb,
            ScalarArg::Ap(st.m_run.ap()),
            Some(st.m_run.buf),
            span,
        );
        let bias = self.tiny(AluOp::Mul, m_new, ScalarArg::imm(-c), None, span);
        let alpha = self.sbuf_tile(Dtype::F32, parts, 1);
        self.out.push(
            Op::Activate {
                out: alpha.ap(),
                src: st.m_run.ap(),
                func: ActFunc::Exp,
                scale: ScalarArg::imm(c),
                bias: ScalarArg::Ap(bias.ap()),
                accum: None,
            },
            Engine::Scalar,
            &[alpha.buf, st.m_run.buf, bias.buf],
            span,
        );
        // p = exp(c*s - c*m_new) and its row sum, in one activation.
        let p = self.sbuf_tile(p_dtype, parts, kb as u32);
        let lb = self.sbuf_tile(Dtype::F32, parts, 1);
        self.out.push(
            Op::Activate {
                out: p.ap(),
                src: src.ap(),
                func: ActFunc::Exp,
                scale: ScalarArg::imm(c),
                bias: ScalarArg::Ap(bias.ap()),
                accum: Some(lb.ap()),
            },
            Engine::Scalar,
            &[p.buf, src.buf, bias.buf, lb.buf],
            span,
        );
        // l = l * alpha + lb (one instruction with two per-row operands; a column, which
        // the `engines` pass gives to GpSimd).
        let l_new = self.sbuf_tile(Dtype::F32, parts, 1);
        self.out.push(
            Op::TensorScalar {
                out: l_new.ap(),
                src: st.l_run.ap(),
                op0: AluOp::Mul,
                s0: ScalarArg::Ap(alpha.ap()),
                op1: AluOp::Add,
                s1: ScalarArg::Ap(lb.ap()),
            },
            Engine::Vector,
            &[l_new.buf, st.l_run.buf, alpha.buf, lb.buf],
            span,
        );
        st.l_run = l_new;
        st.m_run = m_new;
        (p, alpha)
    }

    /// p^T for one block of one query tile.
    fn attention_transpose(
        &mut self,
        st: &QueryTile,
        p: Tile,
        kb: u64,
        p_dtype: Dtype,
        span: crate::frontend::typed::Span,
    ) -> Tile {
        let parts = st.msz as u32;
        // p^T: the block's 128-key chunks transposed side by side into one PSUM bank and
        // copied out at once (the `engines` pass balances the copies over Vector and Scalar).
        let chunks: Vec<(u64, u64)> = (0..kb.div_ceil(128))
            .map(|i| (i * 128, 128.min(kb - i * 128)))
            .collect();
        let pt_bank = self.psum_tile(p_dtype, 128.min(kb), parts as u64 * chunks.len() as u64);
        for (i, &(c0, cs)) in chunks.iter().enumerate() {
            self.out.push(
                Op::Transpose {
                    out: pt_bank.slice(0, cs as u32, i as u32 * parts, parts),
                    src: p.slice(0, parts, c0 as u32, cs as u32),
                },
                Engine::Tensor,
                &[pt_bank.buf, p.buf],
                span,
            );
        }
        let pt = self.sbuf_tile(p_dtype, pt_bank.parts, pt_bank.cols);
        // Copy what the transposes wrote: full 128-key chunks in one instruction, a last
        // shorter chunk (fewer partitions) in another.
        let full = chunks.iter().filter(|c| c.1 == 128).count() as u32;
        let mut pieces = Vec::new();
        if full > 0 {
            pieces.push((
                pt.slice(0, 128, 0, full * parts),
                pt_bank.slice(0, 128, 0, full * parts),
            ));
        }
        if let Some(&(_, cs)) = chunks.last().filter(|c| c.1 < 128) {
            let at = (chunks.len() as u32 - 1) * parts;
            pieces.push((
                pt.slice(0, cs as u32, at, parts),
                pt_bank.slice(0, cs as u32, at, parts),
            ));
        }
        for (dst, src) in pieces {
            self.copy_out(dst, src, &[pt.buf, pt_bank.buf], span);
        }
        pt
    }

    /// o = o * alpha (in PSUM), then o += p @ v, for one block of one query tile.
    #[allow(clippy::too_many_arguments)]
    fn attention_accumulate(
        &mut self,
        st: &QueryTile,
        pt: Tile,
        alpha: Tile,
        v_tiles: &[Tile],
        j0: u64,
        kb: u64,
        span: crate::frontend::typed::Span,
    ) {
        let parts = st.msz as u32;
        let chunks: Vec<(u64, u64)> = (0..kb.div_ceil(128))
            .map(|i| (i * 128, 128.min(kb - i * 128)))
            .collect();
        self.out.push(
            Op::TensorScalar {
                out: st.o.ap(),
                src: st.o.ap(),
                op0: AluOp::Mul,
                s0: ScalarArg::Ap(alpha.ap()),
                op1: AluOp::Bypass,
                s1: ScalarArg::imm(0.0),
            },
            Engine::Vector,
            &[st.o.buf, st.o.buf, alpha.buf],
            span,
        );
        for (i, &(c0, cs)) in chunks.iter().enumerate() {
            let chunk = ((j0 + c0) / 128) as usize;
            let stationary = Tile {
                parts: cs as u32,
                cols: parts,
                col_offset: i as u32 * parts,
                ..pt
            };
            self.matmul(st.o, stationary, v_tiles[chunk], true, span);
        }
    }

    /// Fills a tile with a value (the `engines` pass moves column fills to GpSimd).
    fn fill(&mut self, t: Tile, value: f32, span: crate::frontend::typed::Span) {
        self.out.push(
            Op::Memset {
                out: t.ap(),
                value: Imm::new(value),
            },
            Engine::Vector,
            &[t.buf],
            span,
        );
    }

    /// `out = x OP s` on one column per partition (which the `engines` pass gives to
    /// GpSimd); `extra` is the buffer of `s` when it is a tile.
    fn tiny(
        &mut self,
        op: AluOp,
        x: Tile,
        s: ScalarArg,
        extra: Option<crate::tile::Buf>,
        span: crate::frontend::typed::Span,
    ) -> Tile {
        let out = self.sbuf_tile(Dtype::F32, x.parts, 1);
        let mut bufs = vec![out.buf, x.buf];
        bufs.extend(extra);
        self.out.push(
            Op::TensorScalar {
                out: out.ap(),
                src: x.ap(),
                op0: op,
                s0: s,
                op1: AluOp::Bypass,
                s1: ScalarArg::imm(0.0),
            },
            Engine::Vector,
            &bufs,
            span,
        );
        out
    }
}
