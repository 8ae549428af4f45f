//! Tiling of `cumsum`, `argmax` and `argmin` (`tensor_scan` and `tensor_arg_reduce`).
//!
//! Both work along one axis of a dense tensor seen as `[outer, L, inner]` (the axis has
//! length `L`). No step crosses partitions while scanning: the scanned axis always lies on
//! the free dimension.
//!
//! - Along the last axis (`inner = 1`) each partition holds one lane (one `outer` index)
//!   and the lane is walked in chunks of the free axis; a scan chains its chunks by
//!   `carry` (the previous chunk's last running values, kept in f32), an arg-reduction
//!   combines each chunk's winner with the running winner through `positions`.
//! - Along another axis, `inner` is cut into groups of `w` consecutive columns (32 when it
//!   divides, so each DMA run is 128 bytes of f32) and each partition holds one group: its
//!   tile is `[L chunk, w]`, loaded by a DMA whose runs are the `w` columns of each row,
//!   and the instruction walks it column by column (`dims [(w, 1), (L chunk, w)]`, the
//!   scanned axis innermost). The scan is the same in-order one, so the result is
//!   bit-identical to the reference's; no matmul with a triangular matrix is involved
//!   (0 x inf would be NaN, and -0.0 sums would become +0.0).
//! - An arg-reduction along the last axis of few long lanes (the greedy-decoding
//!   `argmax(logits, axis=-1)` of 8 rows) spreads each lane over `S` partitions (a
//!   reshape of the dense input), reduces each segment chunk by chunk, then combines the
//!   `S` winners of each lane: the PE array (float values, into f32 PSUM) and GpSimd's
//!   `partition_transpose` (positions, and `i32` values, exact bit copies) bring all
//!   segments onto one partition, and one more `tensor_arg_reduce` over lines of `S` picks
//!   the first winner, NaN first, as NumPy (`lower_arg_spread`).
//!
//! `i32` operands never pass through f32 (which holds integers exactly only below 2^24):
//! `tensor_scan` adds them with 32-bit wrapping and chains its chunks by an `i32` carry,
//! `tensor_arg_reduce` compares them as integers, the running winners are copied on the
//! integer datapath, and a spread lane's winners cross partitions on GpSimd, never on the
//! PE array. Positions are `i32`, written exactly by `tensor_arg_reduce`, and the offsets
//! added to them are additions on the integer datapath. An axis longer than 2^24 is still
//! refused (`support.rs`): no test covers one.

use super::view::{hbm_ap, HView};
use super::Tiler;
use crate::frontend::typed::Span;
use crate::ir::{Inst, TOp};
use crate::tile::Buf;
use isa::{Affine, AluOp, Dim, DmaAp, Dtype, Engine, Mem, Op, ReduceOp, Role, ScalarArg, TileAp};
use smallvec::smallvec;

/// Bytes per partition of one chunk's f32 tile.
const CHUNK_BYTES: u64 = 16 * 1024;

/// The longest axis an arg-reduction takes (`support.rs` refuses longer ones, untested).
pub const MAX_ARG_AXIS: u64 = 1 << 24;

/// A tile AP over `parts` partitions of buffer `buf` from element `off`, with free `dims`
/// (outermost first).
fn ap(dtype: Dtype, parts: u32, off: u64, dims: &[(u64, i64)]) -> TileAp {
    TileAp {
        mem: Mem::Sbuf,
        dtype,
        partition: 0,
        partitions: parts as u8,
        offset: (off * dtype.size() as u64) as u32,
        dims: dims
            .iter()
            .map(|&(size, stride)| Dim {
                size: size as u32,
                stride: stride as i32,
            })
            .collect(),
    }
}

/// The same AP on partitions `p0..p0 + pn`.
fn on_parts(mut t: TileAp, p0: u32, pn: u32) -> TileAp {
    t.partition = p0 as u8;
    t.partitions = pn as u8;
    t
}

/// How a tensor of `[outer, len, inner]` is laid out for the work along its middle axis.
#[derive(Clone, Copy, Debug)]
struct Lanes {
    outer: u64,
    len: u64,
    inner: u64,
    /// Columns of `inner` per partition.
    w: u64,
}

impl Lanes {
    fn new(shape: &[u64], axis: usize) -> Lanes {
        let outer = shape[..axis].iter().product();
        let inner: u64 = shape[axis + 1..].iter().product();
        let w = (1..=32u64.min(inner))
            .rev()
            .find(|w| inner.is_multiple_of(*w))
            .unwrap_or(1);
        Lanes {
            outer,
            len: shape[axis],
            inner,
            w,
        }
    }

    /// Column groups per outer index.
    fn groups(&self) -> u64 {
        self.inner / self.w
    }

    /// The partition blocks: (first outer index, outer count, first group, group count);
    /// partitions run over outer indices when a lane has one group, else over groups.
    fn blocks(&self) -> Vec<(u64, u64, u64, u64)> {
        let mut out = Vec::new();
        if self.groups() == 1 {
            let mut o = 0;
            while o < self.outer {
                let n = 128.min(self.outer - o);
                out.push((o, n, 0, 1));
                o += n;
            }
        } else {
            for o in 0..self.outer {
                let mut g = 0;
                while g < self.groups() {
                    let n = 128.min(self.groups() - g);
                    out.push((o, 1, g, n));
                    g += n;
                }
            }
        }
        out
    }

    /// Partitions of a block and the element stride between them.
    fn parts(&self, b: (u64, u64, u64, u64)) -> (u32, i64) {
        if self.groups() == 1 {
            (b.1 as u32, (self.len * self.inner) as i64)
        } else {
            (b.3 as u32, self.w as i64)
        }
    }

    /// The element offset of row `i` of a block's first partition.
    fn offset(&self, b: (u64, u64, u64, u64), i: u64) -> i64 {
        (b.0 * self.len * self.inner + i * self.inner + b.2 * self.w) as i64
    }

    /// Rows of the scanned axis per chunk.
    fn chunk(&self) -> u64 {
        (CHUNK_BYTES / (4 * self.w)).clamp(1, self.len)
    }
}

impl Tiler<'_> {
    /// A dense home of `v` (a copy into scratch when its home is a strided view).
    fn dense_home(&mut self, v: crate::ir::Value, span: Span) -> Result<HView, String> {
        let home = self.home_of(v)?;
        if home.is_dense() {
            return Ok(home);
        }
        let ty = self.func.ty(v).clone();
        let buf = self.out.hbm(
            &format!("d{}", v.as_u32()),
            Role::Scratch,
            ty.dtype,
            &ty.shape,
        );
        let dense = HView::dense(buf, ty.dtype, &ty.shape);
        self.copy_view(&home, &dense, span);
        Ok(dense)
    }

    /// DMAs between a `[parts, rows x w]` tile and HBM rows `i0..i0 + rows` of a block,
    /// cut into up to 16 pieces (partition quarters and row ranges) for the queues.
    #[allow(clippy::too_many_arguments)]
    fn lane_dma(
        &mut self,
        lanes: &Lanes,
        b: (u64, u64, u64, u64),
        view: &HView,
        tile: (Buf, Dtype),
        i0: u64,
        rows: u64,
        load: bool,
        span: Span,
    ) {
        let (parts, pstride) = lanes.parts(b);
        let bytes = parts as u64 * rows * lanes.w * view.dtype.size() as u64;
        let want = (bytes / 8192).clamp(1, 16);
        let psplit = if parts > 32 && want >= 4 {
            parts.div_ceil(32)
        } else {
            1
        };
        let quarter = if psplit > 1 { 32 } else { parts };
        let row_bytes = lanes.w * view.dtype.size() as u64;
        let rsplit = (want / psplit as u64)
            .min((rows * row_bytes / 512).max(1))
            .max(1);
        let rchunk = rows.div_ceil(rsplit);
        for pi in 0..psplit {
            let p0 = pi * quarter;
            let pn = quarter.min(parts - p0);
            let mut r = 0;
            while r < rows {
                let rn = rchunk.min(rows - r);
                let off = view.offset + lanes.offset(b, i0 + r) + p0 as i64 * pstride;
                let hbm = DmaAp::Hbm(hbm_ap(
                    view.dtype,
                    off,
                    &[(pn as u64, pstride), (rn, lanes.inner as i64), (lanes.w, 1)],
                ));
                let t = DmaAp::Tile(on_parts(
                    ap(tile.1, pn, r * lanes.w, &[(rn * lanes.w, 1)]),
                    p0,
                    pn,
                ));
                let (dst, src, bufs) = if load {
                    (t, hbm, [tile.0, view.buf])
                } else {
                    (hbm, t, [view.buf, tile.0])
                };
                self.out
                    .push(Op::Dma { dst, src }, Engine::Dma(0), &bufs, span);
                r += rn;
            }
        }
    }

    /// `cumsum` (module comment).
    pub(super) fn lower_cumsum(&mut self, inst: Inst) -> Result<(), String> {
        let func = self.func;
        let data = &func.insts[inst];
        let span = func.spans[inst];
        let TOp::Cumsum { axis } = data.op else {
            return Err(format!("{inst} is not a cumsum"));
        };
        let src = self.dense_home(data.args[0], span)?;
        let dest = self.home_of(data.result)?;
        if !dest.is_dense() {
            return Err(format!("{inst}: the home of a cumsum is not dense"));
        }
        let shape = &func.ty(data.args[0]).shape;
        let dtype = func.ty(data.result).dtype;
        let acc_dtype = if dtype == Dtype::I32 {
            Dtype::I32
        } else {
            Dtype::F32
        };
        let lanes = Lanes::new(shape, axis);
        let chunk = lanes.chunk();
        let w = lanes.w;
        for b in lanes.blocks() {
            let (parts, _) = lanes.parts(b);
            let mut prev: Option<(crate::tile::Buf, u64)> = None;
            let mut i0 = 0;
            while i0 < lanes.len {
                let rows = chunk.min(lanes.len - i0);
                let n = (rows * w) as u32;
                let x = self.out.sbuf(src.dtype, parts, n);
                self.lane_dma(&lanes, b, &src, (x, src.dtype), i0, rows, true, span);
                let acc = self.out.sbuf(acc_dtype, parts, n);
                let walk = |d: Dtype| ap(d, parts, 0, &[(w, 1), (rows, w as i64)]);
                let (carry, bufs) = match prev {
                    Some((pb, prows)) => (
                        Some(ap(acc_dtype, parts, (prows - 1) * w, &[(w, 1)])),
                        vec![acc, x, pb],
                    ),
                    None => (None, vec![acc, x]),
                };
                self.out.push(
                    Op::TensorScan {
                        out: walk(acc_dtype),
                        src: walk(src.dtype),
                        carry,
                    },
                    Engine::Vector,
                    &bufs,
                    span,
                );
                let stored = if dtype == acc_dtype {
                    acc
                } else {
                    let y = self.out.sbuf(dtype, parts, n);
                    self.out.push(
                        Op::TensorCopy {
                            out: ap(dtype, parts, 0, &[(n as u64, 1)]),
                            src: ap(acc_dtype, parts, 0, &[(n as u64, 1)]),
                        },
                        Engine::Vector,
                        &[y, acc],
                        span,
                    );
                    y
                };
                self.lane_dma(&lanes, b, &dest, (stored, dtype), i0, rows, false, span);
                prev = Some((acc, rows));
                i0 += rows;
            }
        }
        Ok(())
    }

    /// `argmax` / `argmin` (module comment).
    pub(super) fn lower_arg_reduce(&mut self, inst: Inst) -> Result<(), String> {
        let func = self.func;
        let data = &func.insts[inst];
        let span = func.spans[inst];
        let TOp::ArgReduce { max, axis, .. } = data.op else {
            return Err(format!("{inst} is not an arg-reduction"));
        };
        let op = if max { ReduceOp::Max } else { ReduceOp::Min };
        let src = self.dense_home(data.args[0], span)?;
        let dest = self.home_of(data.result)?;
        if !dest.is_dense() {
            return Err(format!("{inst}: the home of an arg-reduction is not dense"));
        }
        let shape = func.ty(data.args[0]).shape.clone();
        let mut lanes = Lanes::new(&shape, axis);
        // Few long lanes along the last axis: each spread over `s` partitions.
        let mut spread = 1;
        if lanes.inner == 1 && lanes.outer < 64 && lanes.len >= 4096 {
            let most = 128 / lanes.outer;
            spread = (2..=most)
                .rev()
                .find(|s| lanes.len.is_multiple_of(*s))
                .unwrap_or(1);
            if spread > 1 {
                lanes = Lanes {
                    outer: lanes.outer * spread,
                    len: lanes.len / spread,
                    inner: 1,
                    w: 1,
                };
            }
        }
        if spread > 1 {
            return self.lower_arg_spread(inst, op, &src, &dest, lanes, spread);
        }
        // Chunks of the lane: the load of one overlaps the reduction of the previous.
        let chunk = lanes.chunk();
        let w = lanes.w;
        let vdt = src.dtype;
        for b in lanes.blocks() {
            let (parts, _) = lanes.parts(b);
            // The running winner: value and position per line.
            let mut best: Option<(Buf, Buf)> = None;
            let mut i0 = 0;
            while i0 < lanes.len {
                let rows = chunk.min(lanes.len - i0);
                let n = (rows * w) as u32;
                let x = self.out.sbuf(vdt, parts, n);
                self.lane_dma(&lanes, b, &src, (x, vdt), i0, rows, true, span);
                // Pair tiles: slot 0 the running winner, slot 1 this chunk's.
                let vals = self.out.sbuf(vdt, parts, (2 * w) as u32);
                let pos = self.out.sbuf(Dtype::I32, parts, (2 * w) as u32);
                let slot = |d: Dtype, s: u64| ap(d, parts, s, &[(w, 2)]);
                let walk = ap(vdt, parts, 0, &[(w, 1), (rows, w as i64)]);
                match best {
                    None => {
                        self.out.push(
                            Op::TensorArgReduce {
                                op,
                                out: slot(vdt, 0),
                                index: slot(Dtype::I32, 0),
                                src: walk,
                                positions: None,
                            },
                            Engine::Vector,
                            &[vals, pos, x],
                            span,
                        );
                    }
                    Some((bv, bp)) => {
                        self.out.push(
                            Op::TensorArgReduce {
                                op,
                                out: slot(vdt, 1),
                                index: slot(Dtype::I32, 1),
                                src: walk,
                                positions: None,
                            },
                            Engine::Vector,
                            &[vals, pos, x],
                            span,
                        );
                        // Positions in the lane, on the integer datapath: the immediate's
                        // 32 bits are the integer.
                        self.out.push(
                            Op::TensorScalar {
                                out: slot(Dtype::I32, 1),
                                src: slot(Dtype::I32, 1),
                                op0: AluOp::Add,
                                s0: ScalarArg::imm(super::block::imm_of(Dtype::I32, i0 as f64)),
                                op1: AluOp::Bypass,
                                s1: ScalarArg::imm(0.0),
                            },
                            Engine::Vector,
                            &[pos, pos],
                            span,
                        );
                        // The running winner (earlier positions) goes first: ties keep it.
                        for (t, d, from) in [(vals, vdt, bv), (pos, Dtype::I32, bp)] {
                            self.out.push(
                                Op::TensorCopy {
                                    out: slot(d, 0),
                                    src: ap(d, parts, 0, &[(w, 1)]),
                                },
                                Engine::Vector,
                                &[t, from],
                                span,
                            );
                        }
                        let nv = self.out.sbuf(vdt, parts, w as u32);
                        let np = self.out.sbuf(Dtype::I32, parts, w as u32);
                        self.out.push(
                            Op::TensorArgReduce {
                                op,
                                out: ap(vdt, parts, 0, &[(w, 1)]),
                                index: ap(Dtype::I32, parts, 0, &[(w, 1)]),
                                src: ap(vdt, parts, 0, &[(w, 2), (2, 1)]),
                                positions: Some(ap(Dtype::I32, parts, 0, &[(w, 2), (2, 1)])),
                            },
                            Engine::Vector,
                            &[nv, np, vals, pos],
                            span,
                        );
                        best = Some((nv, np));
                        i0 += rows;
                        continue;
                    }
                }
                // The first chunk's winner, compacted.
                let nv = self.out.sbuf(vdt, parts, w as u32);
                let np = self.out.sbuf(Dtype::I32, parts, w as u32);
                for (t, d, from) in [(nv, vdt, vals), (np, Dtype::I32, pos)] {
                    self.out.push(
                        Op::TensorCopy {
                            out: ap(d, parts, 0, &[(w, 1)]),
                            src: slot(d, 0),
                        },
                        Engine::Vector,
                        &[t, from],
                        span,
                    );
                }
                best = Some((nv, np));
                i0 += rows;
            }
            let (_, bp) = best.ok_or("an arg-reduction over an empty axis")?;
            // The result's element (o, g w + c) is at o inner + g w + c.
            let res = Lanes {
                outer: lanes.outer,
                len: 1,
                inner: lanes.inner,
                w,
            };
            self.lane_dma(&res, b, &dest, (bp, Dtype::I32), 0, 1, false, span);
        }
        Ok(())
    }

    /// Few long lanes along the last axis, each spread over `spread` partitions
    /// (`lanes` is already the spread layout: `outer * spread` lanes of `len / spread`).
    /// Each partition's segment is loaded in `K` chunks; chunk `k`'s winner goes to column
    /// `k` of a `[P, K]` pair of tiles, and the winners' flat positions
    /// (`p * len + k * C + j`, one precomputed offset tile) pick the partition's winner in one more
    /// `tensor_arg_reduce`. The values go across partitions on the PE array (exactly, into
    /// f32 PSUM) while GpSimd moves the positions (exact `i32`), and a last
    /// `tensor_arg_reduce` over lines of `spread` gives each lane's flat position, from
    /// which the lane's start is subtracted.
    #[allow(clippy::too_many_arguments)]
    fn lower_arg_spread(
        &mut self,
        inst: Inst,
        op: ReduceOp,
        src: &HView,
        dest: &HView,
        lanes: Lanes,
        spread: u64,
    ) -> Result<(), String> {
        let span = self.func.spans[inst];
        let vdt = src.dtype;
        let parts = lanes.outer as u32;
        let outer = lanes.outer / spread;
        let k_chunks = 16u64.min(lanes.len);
        let chunk = lanes.len.div_ceil(k_chunks);
        let k_chunks = lanes.len.div_ceil(chunk);
        let b = (0, lanes.outer, 0, 1);
        // Offsets of the chunk winners in the flattened input, and of each lane's start.
        let offs = self.out.sbuf(Dtype::I32, parts, k_chunks as u32);
        self.out.push(
            Op::Iota {
                out: ap(Dtype::I32, parts, 0, &[(k_chunks, 1)]),
                expr: Affine {
                    base: 0,
                    partition_step: lanes.len as i32,
                    steps: smallvec![chunk as i32],
                },
            },
            Engine::GpSimd,
            &[offs],
            span,
        );
        let starts = self.out.sbuf(Dtype::I32, 1, outer as u32);
        self.out.push(
            Op::Iota {
                out: ap(Dtype::I32, 1, 0, &[(outer, 1)]),
                expr: Affine {
                    base: 0,
                    partition_step: 0,
                    steps: smallvec![(lanes.len * spread) as i32],
                },
            },
            Engine::GpSimd,
            &[starts],
            span,
        );
        let vals = self.out.sbuf(vdt, parts, k_chunks as u32);
        let idx = self.out.sbuf(Dtype::I32, parts, k_chunks as u32);
        for k in 0..k_chunks {
            let i0 = k * chunk;
            let rows = chunk.min(lanes.len - i0);
            let x = self.out.sbuf(vdt, parts, rows as u32);
            self.lane_dma(&lanes, b, src, (x, vdt), i0, rows, true, span);
            self.out.push(
                Op::TensorArgReduce {
                    op,
                    out: ap(vdt, parts, k, &[(1, 1)]),
                    index: ap(Dtype::I32, parts, k, &[(1, 1)]),
                    src: ap(vdt, parts, 0, &[(rows, 1)]),
                    positions: None,
                },
                Engine::Vector,
                &[vals, idx, x],
                span,
            );
        }
        // Flat positions of the chunk winners, on the integer datapath.
        let flat = self.out.sbuf(Dtype::I32, parts, k_chunks as u32);
        self.out.push(
            Op::TensorTensor {
                op: AluOp::Add,
                out: ap(Dtype::I32, parts, 0, &[(k_chunks, 1)]),
                a: ap(Dtype::I32, parts, 0, &[(k_chunks, 1)]),
                b: ap(Dtype::I32, parts, 0, &[(k_chunks, 1)]),
            },
            Engine::Vector,
            &[flat, idx, offs],
            span,
        );
        let bv = self.out.sbuf(vdt, parts, 1);
        let bp = self.out.sbuf(Dtype::I32, parts, 1);
        self.out.push(
            Op::TensorArgReduce {
                op,
                out: ap(vdt, parts, 0, &[(1, 1)]),
                index: ap(Dtype::I32, parts, 0, &[(1, 1)]),
                src: ap(vdt, parts, 0, &[(k_chunks, 1)]),
                positions: Some(ap(Dtype::I32, parts, 0, &[(k_chunks, 1)])),
            },
            Engine::Vector,
            &[bv, bp, vals, flat],
            span,
        );
        // Across partitions: float values on the PE array (into f32 PSUM, exact), `i32`
        // values and the positions on GpSimd (exact bit copies: f32 holds integers exactly
        // only below 2^24).
        let (tv, lane_dt, lane_mem) = if vdt == Dtype::I32 {
            let tv = self.out.sbuf(Dtype::I32, 1, parts);
            self.out.push(
                Op::PartitionTranspose {
                    out: ap(Dtype::I32, 1, 0, &[(parts as u64, 1)]),
                    src: ap(Dtype::I32, parts, 0, &[(1, 1)]),
                },
                Engine::GpSimd,
                &[tv, bv],
                span,
            );
            (tv, Dtype::I32, Mem::Sbuf)
        } else {
            let tv = self.out.psum(Dtype::F32, 1, parts);
            self.out.push(
                Op::Transpose {
                    out: TileAp {
                        mem: Mem::Psum,
                        ..ap(Dtype::F32, 1, 0, &[(parts as u64, 1)])
                    },
                    src: ap(vdt, parts, 0, &[(1, 1)]),
                },
                Engine::Tensor,
                &[tv, bv],
                span,
            );
            (tv, Dtype::F32, Mem::Psum)
        };
        let tp = self.out.sbuf(Dtype::I32, 1, parts);
        self.out.push(
            Op::PartitionTranspose {
                out: ap(Dtype::I32, 1, 0, &[(parts as u64, 1)]),
                src: ap(Dtype::I32, parts, 0, &[(1, 1)]),
            },
            Engine::GpSimd,
            &[tp, bp],
            span,
        );
        let lines = |d: Dtype| ap(d, 1, 0, &[(outer, spread as i64), (spread, 1)]);
        let fv = self.out.sbuf(lane_dt, 1, outer as u32);
        let fp = self.out.sbuf(Dtype::I32, 1, outer as u32);
        self.out.push(
            Op::TensorArgReduce {
                op,
                out: ap(lane_dt, 1, 0, &[(outer, 1)]),
                index: ap(Dtype::I32, 1, 0, &[(outer, 1)]),
                src: TileAp {
                    mem: lane_mem,
                    ..lines(lane_dt)
                },
                positions: Some(lines(Dtype::I32)),
            },
            Engine::Vector,
            &[fv, fp, tv, tp],
            span,
        );
        let pos = self.out.sbuf(Dtype::I32, 1, outer as u32);
        self.out.push(
            Op::TensorTensor {
                op: AluOp::Sub,
                out: ap(Dtype::I32, 1, 0, &[(outer, 1)]),
                a: ap(Dtype::I32, 1, 0, &[(outer, 1)]),
                b: ap(Dtype::I32, 1, 0, &[(outer, 1)]),
            },
            Engine::Vector,
            &[pos, fp, starts],
            span,
        );
        let hbm = DmaAp::Hbm(hbm_ap(Dtype::I32, dest.offset, &[(outer, 1)]));
        let t = DmaAp::Tile(ap(Dtype::I32, 1, 0, &[(outer, 1)]));
        self.out.push(
            Op::Dma { dst: hbm, src: t },
            Engine::Dma(0),
            &[dest.buf, pos],
            span,
        );
        Ok(())
    }
}
