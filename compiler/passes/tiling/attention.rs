//! Flash attention: the lowering of an attention group (`passes/attention.rs`) in which
//! the S x S scores never go to HBM.
//!
//! K (transposed, D on partitions) and V (keys on partitions) are loaded once and stay in
//! SBUF. For each block of 128 queries: `q^T` is prepared on the Tensor engine; then for
//! each block of keys the scores go to PSUM (`q^T^T @ k^T`), the row maximum is updated
//! (kept as the exponentials' bias `-c*m`, with `c` the positive scale), the
//! probabilities `exp(c*s - c*m_new)` and their row sum come from one Scalar activation,
//! the running sum and the output accumulator are rescaled by `alpha = exp(c*m -
//! c*m_new)`, the probabilities are transposed on the Tensor engine and multiplied with V
//! into PSUM, and added to the accumulator. At the end the accumulator is divided by the
//! running sum and the rest of the group (a cast) runs on it. A causal mask (`tril`, fill
//! -inf) skips key blocks that lie entirely above the diagonal and masks the blocks that
//! cross it.
//!
//! Vector and Scalar are the bottleneck (the maximum, the exponentials and the copy of
//! p^T out of PSUM each pass over every score), so the schedule keeps them fed: four
//! query tiles are in flight, each stage emitted for all of them in turn; block j+1's
//! scores are emitted right after block j's exponentials, before its transposes, so the
//! PE array computes a tile's next scores (in the bank its exponentials just freed) while
//! Scalar works through the other tiles' exponentials; the tiles' output accumulators
//! share one PSUM bank, leaving the banks to scores and p^T; nothing on the path from
//! the maximum to the exponentials leaves Vector and Scalar; and GpSimd, then free,
//! transposes one chunk of p in four, taking that copy off them (bench, S = 4096:
//! 404,896 -> 315,872 cycles).

use super::block::{AxisUse, Tile};
use super::matmul::Operand2d;
use super::Tiler;
use crate::passes::attention::Attention;
use crate::passes::fusion::{Group, Root};
use isa::{ActFunc, Affine, AluOp, CmpOp, Dtype, Engine, Imm, Op, ReduceOp, ScalarArg};
use smallvec::smallvec;

/// Keys per block: one PSUM bank of f32 scores.
const KEY_BLOCK: u64 = 512;
/// Chunks of 128 keys per key block (of four) whose probabilities GpSimd transposes
/// (`attention_transpose`).
const GPSIMD_CHUNKS: usize = 1;
/// Query tiles in flight together (bench, S = 4096: three 363,279 cycles, four 326,912;
/// five would need more PSUM banks than there are).
const QUERY_GROUP: usize = 4;

/// The running state of one block of 128 queries.
struct QueryTile {
    m0: u64,
    msz: u64,
    /// q^T, one tile per chunk of D.
    qt: Vec<Tile>,
    /// The running row maximum as the exponentials' bias, `-c * m` (c > 0, so the
    /// running maximum is the running minimum of this), and the running sum.
    nb_run: Tile,
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
            // The group's output accumulators share one PSUM bank when they fit (PSUM's
            // eight banks are what limits how many blocks of scores are in flight).
            let packed = (group.len() as u64 * dv * 4 <= 2048)
                .then(|| self.psum_tile(Dtype::F32, 128.min(sq), group.len() as u64 * dv));
            let mut states: Vec<QueryTile> = group
                .iter()
                .enumerate()
                .map(|(gi, &(m0, msz))| {
                    let qt = self.prepare_kmajor(&qo, d, m0, msz, 0, span);
                    let parts = msz as u32;
                    // -c * max = +inf before any key.
                    let nb_run = self.sbuf_tile(Dtype::F32, parts, 1);
                    self.fill(nb_run, f32::INFINITY, span);
                    let l_run = self.sbuf_tile(Dtype::F32, parts, 1);
                    self.fill(l_run, 0.0, span);
                    // The output accumulates in PSUM across key blocks: each block rescales
                    // it in place and its p @ v matmuls add to it.
                    let o = match packed {
                        Some(bank) => Tile {
                            parts: msz as u32,
                            cols: dv as u32,
                            col_offset: (gi as u64 * dv) as u32,
                            ..bank
                        },
                        None => self.psum_tile(Dtype::F32, msz, dv),
                    };
                    self.fill(o, 0.0, span);
                    QueryTile {
                        m0,
                        msz,
                        qt,
                        nb_run,
                        l_run,
                        o,
                    }
                })
                .collect();
            let blocks: Vec<(u64, u64)> = (0..sk.div_ceil(KEY_BLOCK))
                .map(|b| (b * KEY_BLOCK, KEY_BLOCK.min(sk - b * KEY_BLOCK)))
                .collect();
            // Every tile's scores of one block, where live (causal: a block whose first key
            // is past every query's diagonal is skipped).
            let block_scores = |this: &mut Self, states: &[QueryTile], (j0, kb): (u64, u64)| {
                states
                    .iter()
                    .map(|st| {
                        let live = match a.tril {
                            Some(k) => j0 as i64 <= (st.m0 + st.msz - 1) as i64 + k,
                            None => true,
                        };
                        live.then(|| this.attention_scores(a, st, &kt_tiles, j0, kb, span))
                    })
                    .collect::<Vec<Option<Tile>>>()
            };
            // The scores run one block ahead: block j+1's are emitted after block j's
            // exponentials, so the PE array computes them while the softmax of the other
            // tiles of block j still runs.
            let mut next_scores = block_scores(self, &states, blocks[0]);
            for (bi, &(j0, kb)) in blocks.iter().enumerate() {
                let scores = std::mem::take(&mut next_scores);
                // Then each stage for every tile in turn, so no engine's in-order stream
                // holds one tile's work behind another tile's wait.
                let soft: Vec<Option<(Tile, Tile)>> = states
                    .iter_mut()
                    .zip(scores)
                    .map(|(st, s)| s.map(|s| self.attention_softmax(a, st, s, kb, p_dtype, span)))
                    .collect();
                if let Some(&next) = blocks.get(bi + 1) {
                    next_scores = block_scores(self, &states, next);
                }
                let mut pts: Vec<Vec<(u64, Tile)>> = vec![Vec::new(); states.len()];
                for (i, st) in states.iter().enumerate() {
                    if let Some((p, _)) = soft[i] {
                        pts[i] = self.attention_transpose(st, p, j0, kb, p_dtype, span);
                    }
                }
                for (i, st) in states.iter().enumerate() {
                    if let Some((_, alpha)) = soft[i] {
                        self.attention_rescale(st, alpha, span);
                        self.attention_pv(st, &pts[i], &v_tiles, span);
                    }
                }
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
        // The block's maximum, then nb_new = min(nb, -c * max(s)) = -c * max(m, max(s))
        // exactly (x -> -c * x, rounded, never increases), on Vector right behind the
        // maximum (the `engines` pass keeps it there), and alpha = exp(nb_new - nb) =
        // exp(c*m - c*m_new) on Scalar, which then needs only nb_new for the block.
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
        let bias = self.sbuf_tile(Dtype::F32, parts, 1);
        self.out.push(
            Op::TensorScalar {
                out: bias.ap(),
                src: mb.ap(),
                op0: AluOp::Mul,
                s0: ScalarArg::imm(-c),
                op1: AluOp::Min,
                s1: ScalarArg::Ap(st.nb_run.ap()),
            },
            Engine::Vector,
            &[bias.buf, mb.buf, st.nb_run.buf],
            span,
        );
        let alpha = self.sbuf_tile(Dtype::F32, parts, 1);
        self.out.push(
            Op::Activate {
                out: alpha.ap(),
                src: st.nb_run.ap(),
                func: ActFunc::Exp,
                scale: ScalarArg::imm(-1.0),
                bias: ScalarArg::Ap(bias.ap()),
                accum: None,
            },
            Engine::Scalar,
            &[alpha.buf, st.nb_run.buf, bias.buf],
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
        st.nb_run = bias;
        (p, alpha)
    }

    /// p^T for one block (keys from `j0`) of one query tile: one tile per chunk of 128
    /// keys, with the chunk's first key. The chunks are transposed on the PE array side
    /// by side into one PSUM bank and copied out at once (the `engines` pass balances the
    /// copies over Vector and Scalar), except the last GPSIMD_CHUNKS (never the only
    /// one), which GpSimd's `partition_transpose` moves SBUF to SBUF: no copy for Vector
    /// and Scalar, the bottleneck. GpSimd's in-order stream holds nothing else on the
    /// softmax's path (bench, S = 4096: none 326,912 cycles, one of four 315,872, two
    /// 369,184 as GpSimd, at 576 cycles a chunk, becomes the bottleneck, one and two in
    /// turn 330,944).
    fn attention_transpose(
        &mut self,
        st: &QueryTile,
        p: Tile,
        j0: u64,
        kb: u64,
        p_dtype: Dtype,
        span: crate::frontend::typed::Span,
    ) -> Vec<(u64, Tile)> {
        let parts = st.msz as u32;
        let all: Vec<(u64, u64)> = (0..kb.div_ceil(128))
            .map(|i| (i * 128, 128.min(kb - i * 128)))
            .collect();
        let on_pe = all.len() - GPSIMD_CHUNKS.min(all.len() - 1);
        let chunks = &all[..on_pe];
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
        let mut tiles: Vec<(u64, Tile)> = chunks
            .iter()
            .enumerate()
            .map(|(i, &(c0, cs))| {
                let tile = Tile {
                    parts: cs as u32,
                    cols: parts,
                    col_offset: i as u32 * parts,
                    ..pt
                };
                (j0 + c0, tile)
            })
            .collect();
        for &(c0, cs) in &all[on_pe..] {
            let out = self.sbuf_tile(p_dtype, cs as u32, parts);
            self.out.push(
                Op::PartitionTranspose {
                    out: out.ap(),
                    src: p.slice(0, parts, c0 as u32, cs as u32),
                },
                Engine::GpSimd,
                &[out.buf, p.buf],
                span,
            );
            tiles.push((j0 + c0, out));
        }
        tiles
    }

    /// o = o * alpha, in PSUM.
    fn attention_rescale(
        &mut self,
        st: &QueryTile,
        alpha: Tile,
        span: crate::frontend::typed::Span,
    ) {
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
    }

    /// o += p @ v for chunks of p^T, each with its first key.
    fn attention_pv(
        &mut self,
        st: &QueryTile,
        pt: &[(u64, Tile)],
        v_tiles: &[Tile],
        span: crate::frontend::typed::Span,
    ) {
        for &(key0, stationary) in pt {
            self.matmul(st.o, stationary, v_tiles[(key0 / 128) as usize], true, span);
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
}
