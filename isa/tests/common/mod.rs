//! Proptest generators of *valid* programs, shared by the round-trip and malformed-input
//! tests: every generated program passes `isa::verify`, so the round-trip properties are
//! tested on exactly the programs that the guarantees cover.
//!
//! Each engine has its own instruction generator that builds operands satisfying the
//! machine's rules: tiles are laid out from random sizes and signed strides and then placed
//! at an offset where every byte they touch is inside the memory (and inside one PSUM bank).

#![allow(dead_code)]

use isa::*;
use proptest::collection::vec;
use proptest::prelude::*;

/// HBM size of every generated program.
pub const HBM_SIZE: u64 = 1 << 20;
const SBUF_BYTES: i64 = 192 * 1024;
const PSUM_BANK: i64 = 2048;
const PSUM_BANKS: i64 = 8;

/// An allowed start partition for a tile of `count` partitions.
fn start_for(count: u8, pick: u8) -> u8 {
    let starts: &[u8] = match count {
        65.. => &[0],
        33..=64 => &[0, 64],
        _ => &[0, 32, 64, 96],
    };
    starts[pick as usize % starts.len()]
}

/// The lowest and highest element offsets of a pattern.
fn extent(sizes: &[i64], strides: &[i64]) -> (i64, i64) {
    let (mut lo, mut hi) = (0, 0);
    for (&s, &t) in sizes.iter().zip(strides) {
        let span = (s - 1) * t;
        if span < 0 {
            lo += span;
        } else {
            hi += span;
        }
    }
    (lo, hi)
}

/// Row-major contiguous strides for sizes.
fn contiguous(sizes: &[i64]) -> Vec<i64> {
    let mut strides = vec![0; sizes.len()];
    let mut acc = 1;
    for i in (0..sizes.len()).rev() {
        strides[i] = acc;
        acc *= sizes[i];
    }
    strides
}

/// Places a pattern of `sizes` (with `strides`, or contiguous when those do not fit) in a
/// region of `cap` bytes; returns the strides and the byte offset inside the region.
fn place(sizes: &[i64], strides: &[i64], esize: i64, cap: i64, seed: u32) -> (Vec<i64>, i64) {
    let mut strides = strides.to_vec();
    let (mut lo, mut hi) = extent(sizes, &strides);
    if (hi - lo + 1) * esize > cap {
        strides = contiguous(sizes);
        (lo, hi) = extent(sizes, &strides);
    }
    let span = (hi - lo + 1) * esize;
    let room = cap - span;
    assert!(room >= 0, "generator bug: pattern of {span} bytes in {cap}");
    let offset = -lo * esize + (seed as i64 % (room + 1));
    (strides, offset)
}

/// Random layout choices for one tile.
#[derive(Clone, Debug)]
pub struct Layout {
    dtype: Dtype,
    pick: u8,
    strides: Vec<i32>,
    seed: u32,
    bank: u8,
}

fn layout() -> impl Strategy<Value = Layout> {
    (
        prop::sample::select(Dtype::ALL.to_vec()),
        any::<u8>(),
        vec(-20i32..=20, 4),
        any::<u32>(),
        0u8..PSUM_BANKS as u8,
    )
        .prop_map(|(dtype, pick, strides, seed, bank)| Layout {
            dtype,
            pick,
            strides,
            seed,
            bank,
        })
}

/// Builds a valid tile of `partitions` partitions and free `sizes` in `mem`.
pub fn make_tile(mem: Mem, dtype: Dtype, partitions: u8, sizes: &[u32], l: &Layout) -> TileAp {
    let sizes64: Vec<i64> = sizes.iter().map(|&s| s as i64).collect();
    let strides64: Vec<i64> = l.strides[..sizes.len()].iter().map(|&s| s as i64).collect();
    let esize = dtype.size() as i64;
    let (cap, base) = match mem {
        Mem::Sbuf => (SBUF_BYTES, 0),
        Mem::Psum => (PSUM_BANK, l.bank as i64 * PSUM_BANK),
    };
    let (strides, offset) = place(&sizes64, &strides64, esize, cap, l.seed);
    let dims: Vec<(u32, i32)> = sizes
        .iter()
        .zip(strides)
        .map(|(&s, t)| (s, t as i32))
        .collect();
    TileAp::new(
        mem,
        dtype,
        start_for(partitions, l.pick),
        partitions,
        (base + offset) as u32,
        &dims,
    )
}

/// Builds a valid HBM pattern with `sizes` inside `HBM_SIZE`.
fn make_hbm(dtype: Dtype, sizes: &[u64], l: &Layout) -> HbmAp {
    let sizes64: Vec<i64> = sizes.iter().map(|&s| s as i64).collect();
    let strides64: Vec<i64> = (0..sizes.len())
        .map(|i| l.strides[i % 4] as i64 * 7)
        .collect();
    let (strides, offset) = place(
        &sizes64,
        &strides64,
        dtype.size() as i64,
        HBM_SIZE as i64,
        l.seed,
    );
    let dims: Vec<(u64, i64)> = sizes.iter().copied().zip(strides).collect();
    HbmAp::new(dtype, offset as u64, &dims)
}

/// Free-axis sizes of 1 to 4 dimensions with at most 512 elements.
fn free_sizes() -> impl Strategy<Value = Vec<u32>> {
    prop_oneof![
        vec(1u32..=8, 1..=3),
        vec(1u32..=4, 4),
        (1u32..=512).prop_map(|n| vec![n]),
    ]
}

/// The same element count in another shape: flattened, or as given.
fn reshape(sizes: &[u32], flatten: bool) -> Vec<u32> {
    if flatten {
        vec![sizes.iter().product()]
    } else {
        sizes.to_vec()
    }
}

fn partitions() -> impl Strategy<Value = u8> {
    prop_oneof![Just(128u8), Just(64), Just(32), 1u8..=128]
}

fn mem_for(engine: Engine, psum: bool) -> Mem {
    if psum && engine != Engine::GpSimd {
        Mem::Psum
    } else {
        Mem::Sbuf
    }
}

/// Immediates: ordinary values, the special ones, and arbitrary bit patterns.
pub fn imm() -> impl Strategy<Value = Imm> {
    prop_oneof![
        (-1000.0f32..1000.0).prop_map(Imm::new),
        prop::sample::select(vec![
            0.0f32,
            -0.0,
            1.0,
            f32::INFINITY,
            f32::NEG_INFINITY,
            f32::NAN,
            f32::MIN_POSITIVE,
            f32::MAX,
            1e-45,
        ])
        .prop_map(Imm::new),
        any::<u32>().prop_map(Imm),
    ]
}

fn alu() -> impl Strategy<Value = AluOp> {
    prop::sample::select(AluOp::ALL.to_vec())
}

/// A tile of the given mem/partitions/sizes with a random dtype and layout. `psum` is only
/// honoured when the engine may touch PSUM.
fn tile(engine: Engine, partitions: u8, sizes: Vec<u32>) -> impl Strategy<Value = TileAp> {
    (layout(), any::<bool>()).prop_map(move |(l, psum)| {
        make_tile(mem_for(engine, psum), l.dtype, partitions, &sizes, &l)
    })
}

/// A scalar argument for a tile of `partitions` partitions: immediate or `[P, 1]` tile.
fn scalar_arg(engine: Engine, partitions: u8) -> impl Strategy<Value = ScalarArg> {
    prop_oneof![
        imm().prop_map(ScalarArg::Imm),
        tile(engine, partitions, vec![1]).prop_map(ScalarArg::Ap),
    ]
}

fn sync() -> impl Strategy<Value = Sync> {
    (
        vec((0u8..64, any::<u32>()), 0..=MAX_WAITS),
        prop::option::of(0u8..64),
    )
        .prop_map(|(waits, signal)| Sync {
            waits: waits.into_iter().collect(),
            signal,
        })
}

/// Vector/GpSimd operations (the shared set).
fn vector_op(engine: Engine) -> BoxedStrategy<Op> {
    let tt = (partitions(), free_sizes(), any::<[bool; 3]>())
        .prop_flat_map(move |(p, s, flat)| {
            (
                alu(),
                tile(engine, p, reshape(&s, flat[0])),
                tile(engine, p, reshape(&s, flat[1])),
                tile(engine, p, reshape(&s, flat[2])),
            )
        })
        .prop_map(|(op, out, a, b)| Op::TensorTensor { op, out, a, b });
    let sel = (partitions(), free_sizes(), any::<[bool; 4]>())
        .prop_flat_map(move |(p, s, flat)| {
            (
                tile(engine, p, reshape(&s, flat[0])),
                tile(engine, p, reshape(&s, flat[1])),
                tile(engine, p, reshape(&s, flat[2])),
                tile(engine, p, reshape(&s, flat[3])),
            )
        })
        .prop_map(|(out, mask, a, b)| Op::Select { out, mask, a, b });
    let ts = (partitions(), free_sizes(), any::<bool>())
        .prop_flat_map(move |(p, s, flat)| {
            (
                tile(engine, p, reshape(&s, flat)),
                tile(engine, p, s),
                alu(),
                scalar_arg(engine, p),
                alu(),
                scalar_arg(engine, p),
            )
        })
        .prop_map(|(out, src, op0, s0, op1, s1)| Op::TensorScalar {
            out,
            src,
            op0,
            s0,
            op1,
            s1,
        });
    // A reduction, and with `post` its scalar epilogue (`tensor_reduce_scalar`).
    let reduce = (partitions(), free_sizes(), any::<bool>())
        .prop_flat_map(move |(p, s, post)| {
            let kept = reduced(&s);
            (
                prop::sample::select(ReduceOp::ALL.to_vec()),
                tile(engine, p, kept),
                tile(engine, p, s),
                (alu(), scalar_arg(engine, p)),
                (alu(), scalar_arg(engine, p)),
                Just(post),
            )
        })
        .prop_map(|(op, out, src, (op0, s0), (op1, s1), post)| match post {
            false => Op::TensorReduce { op, out, src },
            true => Op::TensorReduceScalar {
                op,
                out,
                src,
                op0,
                s0,
                op1,
                s1,
            },
        });
    let copy = (partitions(), free_sizes(), any::<bool>())
        .prop_flat_map(move |(p, s, flat)| (tile(engine, p, reshape(&s, flat)), tile(engine, p, s)))
        .prop_map(|(out, src)| Op::TensorCopy { out, src });
    let memset = (partitions(), free_sizes())
        .prop_flat_map(move |(p, s)| (tile(engine, p, s), imm()))
        .prop_map(|(out, value)| Op::Memset { out, value });
    // A scan: i32 throughout or floats throughout, with an optional carry per line.
    let scan = (partitions(), free_sizes(), any::<bool>(), any::<bool>()).prop_flat_map(
        move |(p, s, int, carry)| {
            let lines = reduced(&s);
            (layout(), layout(), layout(), any::<bool>()).prop_map(move |(lo, ls, lc, psum)| {
                let pick = |l: &Layout| {
                    if int {
                        Dtype::I32
                    } else if l.dtype == Dtype::I32 {
                        Dtype::F32
                    } else {
                        l.dtype
                    }
                };
                Op::TensorScan {
                    out: make_tile(mem_for(engine, psum), pick(&lo), p, &s, &lo),
                    src: make_tile(Mem::Sbuf, pick(&ls), p, &s, &ls),
                    carry: carry.then(|| make_tile(Mem::Sbuf, pick(&lc), p, &lines, &lc)),
                }
            })
        },
    );
    // A max or min with its position, optionally through a positions tile.
    let arg = (partitions(), free_sizes(), any::<bool>(), any::<bool>()).prop_flat_map(
        move |(p, s, max, with_pos)| {
            let kept = reduced(&s);
            (layout(), layout(), layout(), layout()).prop_map(move |(lo, li, ls, lp)| {
                Op::TensorArgReduce {
                    op: if max { ReduceOp::Max } else { ReduceOp::Min },
                    out: make_tile(Mem::Sbuf, lo.dtype, p, &kept, &lo),
                    index: make_tile(Mem::Sbuf, Dtype::I32, p, &kept, &li),
                    src: make_tile(Mem::Sbuf, ls.dtype, p, &s, &ls),
                    positions: with_pos.then(|| make_tile(Mem::Sbuf, Dtype::I32, p, &s, &lp)),
                }
            })
        },
    );
    prop_oneof![tt, sel, ts, reduce, copy, memset, scan, arg].boxed()
}

fn affine(steps: usize) -> impl Strategy<Value = Affine> {
    (any::<i32>(), any::<i32>(), vec(any::<i32>(), steps)).prop_map(
        |(base, partition_step, steps)| Affine {
            base,
            partition_step,
            steps: steps.into_iter().collect(),
        },
    )
}

fn gpsimd_op() -> BoxedStrategy<Op> {
    let e = Engine::GpSimd;
    let iota = (partitions(), free_sizes())
        .prop_flat_map(move |(p, s)| (affine(s.len()), tile(e, p, s)))
        .prop_map(|(expr, out)| Op::Iota { out, expr });
    let select = (partitions(), free_sizes(), any::<bool>())
        .prop_flat_map(move |(p, s, flat)| {
            let out_sizes = reshape(&s, flat);
            (
                affine(out_sizes.len()),
                tile(e, p, out_sizes),
                tile(e, p, s),
                prop::sample::select(CmpOp::ALL.to_vec()),
                imm(),
            )
        })
        .prop_map(|(expr, out, src, cmp, fill)| Op::AffineSelect {
            out,
            src,
            cmp,
            expr,
            fill,
        });
    let ptrans = (1u8..=128, 1u32..=128).prop_flat_map(move |(p, f)| {
        (layout(), layout()).prop_map(move |(ls, lo)| Op::PartitionTranspose {
            out: make_tile(Mem::Sbuf, lo.dtype, f as u8, &[p as u32], &lo),
            src: make_tile(Mem::Sbuf, ls.dtype, p, &[f], &ls),
        })
    });
    prop_oneof![vector_op(e), iota, select, ptrans].boxed()
}

fn tensor_op() -> BoxedStrategy<Op> {
    let e = Engine::Tensor;
    let matmul = (1u8..=128, 1u32..=128, 1u32..=512, any::<[bool; 2]>()).prop_flat_map(
        move |(k, m, n, split)| {
            let st_sizes = if split[0] && m % 2 == 0 {
                vec![2, m / 2]
            } else {
                vec![m]
            };
            let mv_sizes = if split[1] && n % 4 == 0 {
                vec![4, n / 4]
            } else {
                vec![n]
            };
            (layout(), layout(), layout(), any::<bool>()).prop_map(move |(ls, lm, lo, acc)| {
                let stationary = make_tile(Mem::Sbuf, ls.dtype, k, &st_sizes, &ls);
                let mut moving = make_tile(Mem::Sbuf, lm.dtype, k, &mv_sizes, &lm);
                moving.partition = stationary.partition;
                let out = make_tile(Mem::Psum, Dtype::F32, m as u8, &[n], &lo);
                Op::Matmul {
                    out,
                    stationary,
                    moving,
                    accumulate: acc,
                }
            })
        },
    );
    let transpose = (1u8..=128, 1u32..=128).prop_flat_map(move |(p, f)| {
        (layout(), layout()).prop_map(move |(ls, lo)| Op::Transpose {
            out: make_tile(Mem::Psum, lo.dtype, f as u8, &[p as u32], &lo),
            src: make_tile(Mem::Sbuf, ls.dtype, p, &[f], &ls),
        })
    });
    let _ = e;
    prop_oneof![matmul, transpose].boxed()
}

fn scalar_op() -> BoxedStrategy<Op> {
    let e = Engine::Scalar;
    (partitions(), free_sizes(), any::<bool>())
        .prop_flat_map(move |(p, s, flat)| {
            (
                tile(e, p, reshape(&s, flat)),
                tile(e, p, s),
                prop::sample::select(ActFunc::ALL.to_vec()),
                scalar_arg(e, p),
                scalar_arg(e, p),
                prop::option::of(tile(e, p, vec![1])),
            )
        })
        .prop_map(|(out, src, func, scale, bias, accum)| Op::Activate {
            out,
            src,
            func,
            scale,
            bias,
            accum,
        })
        .boxed()
}

fn dma_op() -> BoxedStrategy<Op> {
    (partitions(), free_sizes(), 0u8..4, any::<bool>())
        .prop_flat_map(|(p, s, kind, flat)| {
            (layout(), layout()).prop_map(move |(la, lb)| {
                let tile = make_tile(Mem::Sbuf, la.dtype, p, &s, &la);
                let mut hsizes: Vec<u64> = vec![p as u64];
                hsizes.extend(s.iter().map(|&x| x as u64));
                if flat {
                    hsizes = vec![hsizes.iter().product()];
                }
                let other = match kind {
                    0 | 1 => DmaAp::Hbm(make_hbm(lb.dtype, &hsizes, &lb)),
                    _ => DmaAp::Tile(make_tile(Mem::Sbuf, lb.dtype, p, &reshape(&s, flat), &lb)),
                };
                if kind == 3 {
                    // A gather: `p` rows of `s`'s elements, one index per partition.
                    let mut rows: Vec<u64> = vec![p as u64 + 3];
                    rows.extend(s.iter().map(|&x| x as u64));
                    Op::DmaGather {
                        dst: tile,
                        idx: make_tile(Mem::Sbuf, Dtype::I32, p, &[1], &lb),
                        src: make_hbm(lb.dtype, &rows, &lb),
                        wrap: flat,
                    }
                } else if kind == 0 {
                    Op::Dma {
                        dst: DmaAp::Tile(tile),
                        src: other,
                    }
                } else {
                    Op::Dma {
                        dst: other,
                        src: DmaAp::Tile(tile),
                    }
                }
            })
        })
        .boxed()
}

/// A valid non-`end` operation for a stream's engine (sometimes a `nop`).
pub fn op_for(engine: Engine) -> BoxedStrategy<Op> {
    let main = match engine {
        Engine::Tensor => tensor_op(),
        Engine::Vector => vector_op(engine),
        Engine::Scalar => scalar_op(),
        Engine::GpSimd => gpsimd_op(),
        Engine::Dma(_) => dma_op(),
    };
    prop_oneof![1 => Just(Op::Nop {}), 6 => main.prop_map(legal_datapath)].boxed()
}

/// Makes a generated operation keep the integer datapath's rules (ISA.md): `i32` tiles
/// become `f32` (the same size, so placements stay valid) where the Scalar or Tensor engine
/// would read them or where they meet a float input; then the ALU ops are the ones the
/// chosen datapath has.
pub fn legal_datapath(mut op: Op) -> Op {
    let mixed = isa::integer_datapath(&op)
        && isa::data_inputs(&op)
            .iter()
            .any(|(_, t)| t.dtype.is_float());
    if mixed || matches!(op, Op::Matmul { .. } | Op::Activate { .. }) {
        op.visit_aps_mut(&mut |ap, _| match ap {
            isa::ApMut::Tile(t) if t.dtype == Dtype::I32 => t.dtype = Dtype::F32,
            isa::ApMut::Hbm(h) if h.dtype == Dtype::I32 => h.dtype = Dtype::F32,
            _ => {}
        });
    }
    let int = isa::integer_datapath(&op);
    let fix = |o: &mut AluOp| {
        if (int && !o.is_integer()) || (!int && o.is_integer_only()) {
            *o = AluOp::Add;
        }
    };
    match &mut op {
        Op::TensorTensor { op, .. } => fix(op),
        Op::TensorScalar { op0, op1, .. } | Op::TensorReduceScalar { op0, op1, .. } => {
            fix(op0);
            fix(op1);
        }
        _ => {}
    }
    op
}

/// A valid stream for an engine: up to `max` instructions, then `end`.
pub fn stream_for(engine: Engine, max: usize) -> BoxedStrategy<Vec<Inst>> {
    (
        vec((sync(), op_for(engine)), 0..=max),
        prop_oneof![3 => Just(Sync::default()), 1 => sync()],
    )
        .prop_map(|(insts, end_sync)| {
            let mut v: Vec<Inst> = insts
                .into_iter()
                .map(|(sync, op)| Inst { sync, op })
                .collect();
            v.push(Inst {
                sync: end_sync,
                op: Op::End {},
            });
            v
        })
        .boxed()
}

/// A tensor name: plain identifiers mostly, sometimes arbitrary text (to test quoting).
fn name_prefix() -> impl Strategy<Value = String> {
    prop_oneof![3 => "[a-z_][a-z0-9_]{0,6}", 1 => any::<String>()]
}

fn tensors() -> impl Strategy<Value = Vec<TensorDecl>> {
    vec(
        (
            prop::sample::select(Role::ALL.to_vec()),
            prop::sample::select(Dtype::ALL.to_vec()),
            vec(1u64..=16, 0..=4),
            0u64..64,
        ),
        0..4,
    )
    .prop_flat_map(|specs| (name_prefix(), Just(specs)))
    .prop_map(|(prefix, specs)| {
        let mut offset = 0;
        specs
            .into_iter()
            .enumerate()
            .map(|(i, (role, dtype, shape, gap))| {
                offset += gap;
                let t = TensorDecl {
                    name: format!("{prefix}{i}"),
                    role,
                    dtype,
                    shape,
                    offset,
                };
                offset += t.bytes();
                t
            })
            .collect()
    })
}

/// A whole valid program: tensors, every stream, and sometimes debug information.
pub fn program(max_per_stream: usize) -> BoxedStrategy<Program> {
    let streams: Vec<BoxedStrategy<Vec<Inst>>> = Engine::all()
        .map(|e| {
            prop_oneof![
                2 => Just(vec![Inst::new(Op::End {})]).boxed(),
                1 => stream_for(e, max_per_stream),
            ]
            .boxed()
        })
        .collect();
    (
        tensors(),
        streams,
        prop::option::of(any::<String>()),
        any::<bool>(),
        any::<u64>(),
        prop::option::of(origin()),
    )
        .prop_map(|(tensors, streams, source, with_locs, seed, origin)| {
            let mut rng = seed;
            let mut next = move || {
                rng = rng
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                rng >> 33
            };
            let locs = if with_locs {
                streams
                    .iter()
                    .map(|s| {
                        s.iter()
                            .map(|_| {
                                (next() % 3 != 0).then(|| SrcLoc {
                                    line: next() as u32 % 500 + 1,
                                    col: next() as u32 % 80 + 1,
                                })
                            })
                            .collect()
                    })
                    .collect()
            } else {
                Vec::new()
            };
            Program {
                preset: Preset::Default,
                hbm_size: HBM_SIZE,
                tensors,
                streams,
                source,
                locs,
                origin,
            }
        })
        .boxed()
}

/// The origin of a compiled program: names plain mostly, sometimes arbitrary text.
fn origin() -> impl Strategy<Value = Origin> {
    (
        any::<String>(),
        any::<[u8; SOURCE_HASH_BYTES]>(),
        name_prefix(),
        vec((name_prefix(), any::<i64>()), 0..3),
        any::<bool>(),
        vec(name_prefix(), 0..3),
    )
        .prop_map(
            |(path, source_sha3, kernel, defines, strict_dtypes, disabled_passes)| Origin {
                path,
                source_sha3,
                kernel,
                defines,
                strict_dtypes,
                disabled_passes,
            },
        )
}

/// A small, fixed, valid program that uses every opcode, for exhaustive byte tests.
pub fn small_program() -> Program {
    isa::assemble(
        ".preset default
.hbm 4096
.tensor x input bf16 [4, 8] @0
.tensor y output f32 [4, 8] @64
.source \"k.tsr\"
.origin \"/src/k.tsr\" kernel k
.origin-sha3 00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff
.origin-define N 128
.origin-dtype-policy strict
.origin-disable-pass fusion

.stream tensor
    .loc 3:4
    matmul out=psum.f32[0:8, 0; 4:1], stationary=sbuf.bf16[0:4, 0; 8:1], moving=sbuf.bf16[0:4, 16; 4:1], accumulate=true
    transpose out=psum.bf16[0:8, 2048; 4:1], src=sbuf.bf16[0:4, 0; 8:1]
    end

.stream vector
    wait(s0>=1, s1>=2) tensor_tensor op=max, out=sbuf.f32[0:4, 64; 8:1], a=sbuf.f32[0:4, 96; 8:-1], b=psum.f32[0:4, 0; 2:4, 4:1] signal(s2)
    tensor_scalar out=sbuf.f32[0:4, 64; 8:1], src=sbuf.f32[0:4, 64; 8:1], op0=sub, s0=sbuf.f32[0:4, 200; 1:1], op1=bypass, s1=nan:0x7fc00001
    tensor_reduce op=add, out=sbuf.f32[0:4, 0; 1:1], src=sbuf.f32[0:4, 64; 8:1]
    tensor_copy out=sbuf.f8e4m3[0:4, 300; 8:1], src=sbuf.f32[0:4, 64; 8:1]
    memset out=sbuf.f16[0:4, 400; 8:1], value=-inf
    end

.stream scalar
    activate out=sbuf.f32[0:4, 64; 8:1], src=sbuf.f32[0:4, 64; 8:1], func=gelu_tanh, scale=2.0, bias=-1.5, accum=sbuf.f32[0:4, 500; 1:1]
    end

.stream gpsimd
    iota out=sbuf.f32[0:4, 600; 8:1], expr=affine(base=-3, p=8, i=[1])
    affine_select out=sbuf.f32[0:4, 600; 8:1], src=sbuf.f32[0:4, 64; 8:1], cmp=le, expr=affine(base=0, p=1, i=[-1]), fill=0.0
    nop signal(s5)
    end

.stream dma3
    dma dst=sbuf.bf16[0:4, 0; 8:1], src=hbm.bf16[0; 4:8, 8:1] signal(s0)
    wait(s2>=1) dma dst=hbm.f32[64; 32:1], src=sbuf.f32[0:4, 64; 8:1]
    end
",
    )
    .expect("the small program assembles")
}

/// The proptest configuration of this crate's property tests: `cases` cases from a fixed
/// seed, so every run (and CI) checks the same cases and a failure reproduces as it is.
/// `PROPTEST_RNG_SEED=<u64>` (read by `ProptestConfig::default`) explores other cases.
pub fn proptest_config(cases: u32) -> proptest::test_runner::Config {
    use proptest::test_runner::{Config, RngSeed};
    let base = Config::default();
    let rng_seed = match base.rng_seed {
        RngSeed::Random => RngSeed::Fixed(0x15a_2026),
        chosen => chosen,
    };
    Config {
        cases,
        rng_seed,
        ..base
    }
}

/// The free shape of a reduction's result: `s` without its last dimension (one element when
/// `s` has one dimension).
fn reduced(s: &[u32]) -> Vec<u32> {
    if s.len() > 1 {
        s[..s.len() - 1].to_vec()
    } else {
        vec![1]
    }
}
