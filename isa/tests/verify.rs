//! Verifier tests: one per rule, each asserting the exact message (with its stream and
//! instruction index), plus a test that all errors of a program are collected.

use isa::*;
use smallvec::smallvec;
use Dtype::*;

fn sb(dtype: Dtype, start: u8, parts: u8, offset: u32, dims: &[(u32, i32)]) -> TileAp {
    TileAp::new(Mem::Sbuf, dtype, start, parts, offset, dims)
}

fn ps(dtype: Dtype, start: u8, parts: u8, offset: u32, dims: &[(u32, i32)]) -> TileAp {
    TileAp::new(Mem::Psum, dtype, start, parts, offset, dims)
}

fn hbm(dtype: Dtype, offset: u64, dims: &[(u64, i64)]) -> HbmAp {
    HbmAp::new(dtype, offset, dims)
}

/// A program with 64 KiB of HBM whose `engine` stream runs `ops` then `end`.
fn program(engine: Engine, ops: Vec<Op>) -> Program {
    let mut p = Program::new(Preset::Default);
    p.hbm_size = 65536;
    let stream = &mut p.streams[engine.index()];
    for (i, op) in ops.into_iter().enumerate() {
        stream.insert(i, Inst::new(op));
    }
    p
}

/// The verifier's messages, as `Display` writes them.
fn errors(p: &Program) -> Vec<String> {
    match verify(p) {
        Ok(()) => Vec::new(),
        Err(errors) => errors.iter().map(|e| e.to_string()).collect(),
    }
}

/// Asserts that one op on `engine` gives exactly `expected`.
fn check(engine: Engine, op: Op, expected: &[&str]) {
    let got = errors(&program(engine, vec![op]));
    assert_eq!(got, expected);
}

fn copy(out: TileAp, src: TileAp) -> Op {
    Op::TensorCopy { out, src }
}

fn memset(out: TileAp) -> Op {
    Op::Memset {
        out,
        value: Imm::new(0.0),
    }
}

const V: Engine = Engine::Vector;

#[test]
fn a_valid_program_passes() {
    let op = copy(
        sb(F32, 0, 128, 0, &[(64, 1)]),
        ps(Bf16, 0, 128, 0, &[(64, 1)]),
    );
    assert_eq!(verify(&program(V, vec![op])), Ok(()));
    assert_eq!(verify(&Program::new(Preset::Default)), Ok(()));
}

#[test]
fn stream_count() {
    let mut p = Program::new(Preset::Default);
    p.streams.pop();
    assert_eq!(
        errors(&p),
        ["program: the program has 19 streams, expected 20"]
    );
}

#[test]
fn stream_must_end_with_one_end() {
    let mut p = Program::new(Preset::Default);
    p.streams[1] = vec![];
    p.streams[2] = vec![Inst::new(Op::Nop {})];
    p.streams[3] = vec![
        Inst::new(Op::End {}),
        Inst::new(Op::Nop {}),
        Inst::new(Op::End {}),
    ];
    assert_eq!(
        errors(&p),
        [
            "vector: the stream is empty; it must end with `end`",
            "scalar[0]: the stream does not end with `end`",
            "gpsimd[0]: `end` must be the last instruction, but 2 instruction(s) follow it",
        ]
    );
}

#[test]
fn opcode_must_run_on_its_engine() {
    check(
        V,
        Op::Iota {
            out: sb(F32, 0, 1, 0, &[(1, 1)]),
            expr: Affine {
                base: 0,
                partition_step: 0,
                steps: smallvec![0],
            },
        },
        &["vector[0]: `iota` cannot run on the vector engine (it runs on: gpsimd)"],
    );
    check(
        Engine::Dma(5),
        memset(sb(F32, 0, 1, 0, &[(1, 1)])),
        &["dma5[0]: `memset` cannot run on the dma5 engine (it runs on: vector, gpsimd)"],
    );
}

#[test]
fn tile_dims_and_sizes() {
    check(
        V,
        memset(sb(F32, 0, 1, 0, &[])),
        &["vector[0]: `out` has 0 free dimensions, expected 1 to 4"],
    );
    check(
        V,
        memset(sb(F32, 0, 1, 0, &[(1, 1); 5])),
        &["vector[0]: `out` has 5 free dimensions, expected 1 to 4"],
    );
    check(
        V,
        memset(sb(F32, 0, 1, 0, &[(2, 1), (0, 1)])),
        &["vector[0]: `out` dimension 1 has size 0, expected >= 1"],
    );
}

#[test]
fn partition_counts_and_start_rule() {
    check(
        V,
        memset(sb(F32, 0, 0, 0, &[(1, 1)])),
        &["vector[0]: `out` has 0 partitions, expected 1 to 128"],
    );
    check(
        V,
        memset(sb(F32, 0, 200, 0, &[(1, 1)])),
        &["vector[0]: `out` has 200 partitions, expected 1 to 128"],
    );
    check(
        V,
        memset(sb(F32, 32, 65, 0, &[(1, 1)])),
        &["vector[0]: `out` starts at partition 32 but a tile of 65 partitions must start at 0"],
    );
    check(
        V,
        memset(sb(F32, 32, 64, 0, &[(1, 1)])),
        &["vector[0]: `out` starts at partition 32 but a tile of 64 partitions must start at 0 or 64"],
    );
    check(
        V,
        memset(sb(F32, 16, 32, 0, &[(1, 1)])),
        &["vector[0]: `out` starts at partition 16 but a tile of 32 partitions must start at 0 or 32 or 64 or 96"],
    );
    // Every allowed start is accepted.
    for (parts, start) in [(128, 0), (64, 64), (33, 64), (32, 96), (1, 96), (17, 32)] {
        let p = program(V, vec![memset(sb(F32, start, parts, 0, &[(1, 1)]))]);
        assert_eq!(verify(&p), Ok(()), "{parts} at {start}");
    }
}

#[test]
fn tiles_stay_inside_their_memory() {
    check(
        V,
        memset(sb(F32, 0, 1, 196600, &[(4, 1)])),
        &["vector[0]: `out` touches bytes 196600..=196615 of each partition, outside SBUF's 196608 bytes"],
    );
    // The last byte of SBUF is fine; one element more is not.
    let fits = program(V, vec![memset(sb(F32, 0, 1, 196604, &[(1, 1)]))]);
    assert_eq!(verify(&fits), Ok(()));
    check(
        V,
        memset(sb(Bf16, 0, 1, 4, &[(2, 3), (4, -1)])),
        &["vector[0]: `out` touches bytes -2..=11 of each partition, outside SBUF's 196608 bytes"],
    );
    check(
        V,
        memset(ps(F32, 0, 1, 16380, &[(2, 1)])),
        &["vector[0]: `out` touches bytes 16380..=16387 of each partition, outside PSUM's 16384 bytes"],
    );
    check(
        V,
        memset(sb(F32, 0, 1, u32::MAX, &[(u32::MAX, i32::MAX); 4])),
        &["vector[0]: `out` touches bytes 4294967295..=147573952456532426786 of each partition, outside SBUF's 196608 bytes"],
    );
}

#[test]
fn psum_tiles_stay_inside_one_bank() {
    check(
        V,
        memset(ps(F32, 0, 1, 2040, &[(4, 1)])),
        &["vector[0]: `out` touches PSUM bytes 2040..=2055, which cross a 2048-byte bank boundary"],
    );
    let fits = program(V, vec![memset(ps(F32, 0, 1, 2048 * 7, &[(512, 1)]))]);
    assert_eq!(verify(&fits), Ok(()));
}

#[test]
fn dma_sides() {
    let d = Engine::Dma(0);
    check(
        d,
        Op::Dma {
            dst: DmaAp::Tile(ps(F32, 0, 1, 0, &[(4, 1)])),
            src: DmaAp::Hbm(hbm(F32, 0, &[(4, 1)])),
        },
        &["dma0[0]: `dst` is in PSUM, but DMA only reaches SBUF and HBM"],
    );
    check(
        d,
        Op::Dma {
            dst: DmaAp::Tile(sb(F32, 0, 2, 0, &[(4, 1)])),
            src: DmaAp::Hbm(hbm(Bf16, 0, &[(2, 5)])),
        },
        &["dma0[0]: `dst` has 8 elements but `src` has 2; a DMA copies equal counts"],
    );
    check(
        d,
        Op::Dma {
            dst: DmaAp::Hbm(hbm(F32, 65532, &[(2, 1)])),
            src: DmaAp::Tile(sb(F32, 0, 1, 0, &[(2, 1)])),
        },
        &["dma0[0]: `dst` touches HBM bytes 65532..=65539, outside the program's 65536 bytes"],
    );
    check(
        d,
        Op::Dma {
            dst: DmaAp::Hbm(hbm(F32, 4, &[(2, -2)])),
            src: DmaAp::Tile(sb(F32, 0, 1, 0, &[(2, 1)])),
        },
        &["dma0[0]: `dst` touches HBM bytes -4..=7, outside the program's 65536 bytes"],
    );
    // docs/machine.md: DMA moves HBM <-> SBUF and SBUF -> SBUF, never HBM to HBM.
    check(
        d,
        Op::Dma {
            dst: DmaAp::Hbm(hbm(F32, 1024, &[(4, 1)])),
            src: DmaAp::Hbm(hbm(F32, 0, &[(4, 1)])),
        },
        &["dma0[0]: both sides are in HBM; a DMA moves HBM <-> SBUF or SBUF -> SBUF"],
    );
    check(
        d,
        Op::Dma {
            dst: DmaAp::Hbm(hbm(F32, 0, &[(1, 1); 6])),
            src: DmaAp::Tile(sb(F32, 0, 1, 0, &[(1, 1)])),
        },
        &["dma0[0]: `dst` has 6 dimensions, expected 1 to 5"],
    );
    check(
        d,
        Op::Dma {
            dst: DmaAp::Hbm(hbm(F32, 0, &[(0, 1)])),
            src: DmaAp::Tile(sb(F32, 0, 1, 0, &[(1, 1)])),
        },
        &[
            "dma0[0]: `dst` dimension 0 has size 0, expected >= 1",
            "dma0[0]: `dst` has 0 elements but `src` has 1; a DMA copies equal counts",
        ],
    );
}

#[test]
fn tensors_inside_hbm_without_overlap() {
    let mut p = Program::new(Preset::Default);
    p.hbm_size = 100;
    let t = |name: &str, shape: Vec<u64>, offset| TensorDecl {
        name: name.into(),
        role: Role::Input,
        dtype: F32,
        shape,
        offset,
    };
    p.tensors = vec![
        t("a", vec![4], 0),
        t("b", vec![4], 8),
        t("c", vec![5], 90),
        t("a", vec![1], 96),
    ];
    assert_eq!(
        errors(&p),
        [
            "program: tensor `c` (bytes 90..110) lies outside HBM of 100 bytes",
            "program: tensor `a` is declared twice",
            "program: tensors `a` and `b` overlap in HBM",
            "program: tensors `c` and `a` overlap in HBM",
        ]
    );
    // A tensor that spans others is reported against each of them, and huge shapes do not
    // overflow.
    p.tensors = vec![
        t("big", vec![25], 0),
        t("x", vec![1], 10),
        t("y", vec![1], 40),
        t("huge", vec![u64::MAX, u64::MAX], 96),
    ];
    assert_eq!(
        errors(&p),
        [
            "program: tensor `huge` (bytes 96..340282366920938463463374607431768211455) lies outside HBM of 100 bytes",
            "program: tensors `big` and `x` overlap in HBM",
            "program: tensors `big` and `y` overlap in HBM",
            "program: tensors `big` and `huge` overlap in HBM",
        ]
    );
}

fn mm(out: TileAp, stationary: TileAp, moving: TileAp) -> Op {
    Op::Matmul {
        out,
        stationary,
        moving,
        accumulate: false,
    }
}

#[test]
fn matmul_operands() {
    let t = Engine::Tensor;
    let ok = mm(
        ps(F32, 0, 128, 0, &[(512, 1)]),
        sb(Bf16, 0, 128, 0, &[(128, 1)]),
        sb(Bf16, 0, 128, 256, &[(512, 1)]),
    );
    assert_eq!(verify(&program(t, vec![ok])), Ok(()));
    check(
        t,
        mm(
            sb(Bf16, 0, 4, 0, &[(8, 1)]),
            ps(F32, 0, 4, 0, &[(4, 1)]),
            sb(F32, 0, 4, 0, &[(8, 1)]),
        ),
        &[
            "tensor[0]: `stationary` is in PSUM, but the Tensor engine reads its operands from SBUF",
            "tensor[0]: `out` is in SBUF, but matmul writes PSUM",
            "tensor[0]: `out` is bf16 but matmul accumulates in f32",
        ],
    );
    check(
        t,
        mm(
            ps(F32, 0, 4, 0, &[(8, 1)]),
            sb(Bf16, 0, 32, 0, &[(4, 1)]),
            sb(Bf16, 32, 32, 0, &[(8, 1)]),
        ),
        &["tensor[0]: `stationary` is on partitions 0..32 but `moving` on 32..64; both must be on the same K partitions"],
    );
    check(
        t,
        mm(
            ps(F32, 0, 128, 0, &[(512, 1)]),
            sb(Bf16, 0, 128, 0, &[(2, 128), (128, 1)]),
            sb(Bf16, 0, 128, 512, &[(2, 512), (512, 1)]),
        ),
        &[
            "tensor[0]: `stationary` has M = 256 free elements, at most 128",
            "tensor[0]: `moving` has N = 1024 free elements, at most 512",
            "tensor[0]: `out` is [128, 512] but must be [M, N] = [256, 1024]",
        ],
    );
}

#[test]
fn transpose_shape() {
    let t = Engine::Tensor;
    let ok = Op::Transpose {
        out: ps(F32, 0, 64, 0, &[(128, 1)]),
        src: sb(Bf16, 0, 128, 0, &[(64, 1)]),
    };
    assert_eq!(verify(&program(t, vec![ok])), Ok(()));
    check(
        t,
        Op::Transpose {
            out: ps(F32, 0, 128, 0, &[(64, 1)]),
            src: sb(Bf16, 0, 128, 0, &[(64, 1)]),
        },
        &["tensor[0]: `out` is [128, 64] but must be the transpose of `src` [128, 64]: [64, 128]"],
    );
    check(
        t,
        Op::Transpose {
            out: ps(F32, 0, 1, 0, &[(1, 1)]),
            src: sb(Bf16, 0, 1, 0, &[(256, 1)]),
        },
        &[
            "tensor[0]: `src` has 256 free elements, at most 128",
            "tensor[0]: `out` is [1, 1] but must be the transpose of `src` [1, 256]: [256, 1]",
        ],
    );
}

#[test]
fn elementwise_shapes_match() {
    check(
        V,
        Op::TensorTensor {
            op: AluOp::Add,
            out: sb(F32, 0, 4, 0, &[(8, 1)]),
            a: sb(F32, 0, 4, 64, &[(2, 4), (4, 1)]),
            b: sb(F32, 0, 2, 128, &[(8, 1)]),
        },
        &["vector[0]: `out` is [4, 8] but `b` is [2, 8]; they must have the same partitions and free elements"],
    );
    check(
        V,
        copy(sb(F32, 0, 4, 0, &[(8, 1)]), sb(F32, 0, 4, 64, &[(9, 1)])),
        &["vector[0]: `out` is [4, 8] but `src` is [4, 9]; they must have the same partitions and free elements"],
    );
}

#[test]
fn scalar_arguments_are_per_partition() {
    check(
        V,
        Op::TensorScalar {
            out: sb(F32, 0, 4, 0, &[(8, 1)]),
            src: sb(F32, 0, 4, 0, &[(8, 1)]),
            op0: AluOp::Mul,
            s0: ScalarArg::Ap(sb(F32, 0, 4, 100, &[(2, 1)])),
            op1: AluOp::Add,
            s1: ScalarArg::Ap(sb(F32, 0, 2, 100, &[(1, 1)])),
        },
        &[
            "vector[0]: `s0` is [4, 2] but must be [4, 1] (one value per partition)",
            "vector[0]: `s1` is [2, 1] but must be [4, 1] (one value per partition)",
        ],
    );
}

#[test]
fn reduce_output_shape() {
    let ok = Op::TensorReduce {
        op: ReduceOp::Max,
        out: sb(F32, 0, 4, 0, &[(3, 1)]),
        src: sb(F32, 0, 4, 64, &[(3, 8), (8, 1)]),
    };
    assert_eq!(verify(&program(V, vec![ok])), Ok(()));
    check(
        V,
        Op::TensorReduce {
            op: ReduceOp::Add,
            out: sb(F32, 0, 4, 0, &[(8, 1)]),
            src: sb(F32, 0, 4, 64, &[(3, 8), (8, 1)]),
        },
        &["vector[0]: `out` is [4, 8] but reducing `src` [4, 24] along its last dimension gives [4, 3]"],
    );
}

#[test]
fn activation_accumulator_is_per_partition() {
    check(
        Engine::Scalar,
        Op::Activate {
            out: sb(F32, 0, 4, 0, &[(8, 1)]),
            src: ps(F32, 0, 4, 0, &[(8, 1)]),
            func: ActFunc::Exp,
            scale: ScalarArg::imm(1.0),
            bias: ScalarArg::Ap(sb(F32, 0, 4, 64, &[(1, 1)])),
            accum: Some(sb(F32, 0, 4, 68, &[(2, 1)])),
        },
        &["scalar[0]: `accum` is [4, 2] but must be [4, 1] (one value per partition)"],
    );
}

#[test]
fn gpsimd_does_not_touch_psum() {
    let g = Engine::GpSimd;
    check(
        g,
        copy(sb(F32, 0, 4, 0, &[(8, 1)]), ps(F32, 0, 4, 0, &[(8, 1)])),
        &["gpsimd[0]: `src` is in PSUM, which the GpSimd engine cannot access"],
    );
    check(
        g,
        Op::TensorScalar {
            out: sb(F32, 0, 4, 0, &[(8, 1)]),
            src: sb(F32, 0, 4, 0, &[(8, 1)]),
            op0: AluOp::Mul,
            s0: ScalarArg::Ap(ps(F32, 0, 4, 0, &[(1, 1)])),
            op1: AluOp::Bypass,
            s1: ScalarArg::imm(0.0),
        },
        &["gpsimd[0]: `s0` is in PSUM, which the GpSimd engine cannot access"],
    );
    // The same copy is fine on Vector.
    let v = program(
        V,
        vec![copy(
            sb(F32, 0, 4, 0, &[(8, 1)]),
            ps(F32, 0, 4, 0, &[(8, 1)]),
        )],
    );
    assert_eq!(verify(&v), Ok(()));
}

#[test]
fn affine_steps_match_out_dims() {
    let expr = Affine {
        base: 0,
        partition_step: 1,
        steps: smallvec![1],
    };
    check(
        Engine::GpSimd,
        Op::Iota {
            out: sb(F32, 0, 4, 0, &[(2, 4), (4, 1)]),
            expr: expr.clone(),
        },
        &["gpsimd[0]: `expr` has 1 steps but `out` has 2 free dimensions"],
    );
    check(
        Engine::GpSimd,
        Op::AffineSelect {
            out: sb(F32, 0, 4, 0, &[(8, 1)]),
            src: sb(F32, 0, 4, 64, &[(2, 4), (4, 1)]),
            cmp: CmpOp::Lt,
            expr: Affine {
                steps: smallvec![],
                ..expr
            },
            fill: Imm::new(f32::NEG_INFINITY),
        },
        &["gpsimd[0]: `expr` has 0 steps but `out` has 1 free dimensions"],
    );
}

#[test]
fn semaphores_in_range_and_few_waits() {
    let mut p = Program::new(Preset::Default);
    p.streams[0][0].sync = Sync {
        waits: smallvec![(0, 1), (64, 1), (1, 1), (2, 1), (3, 1)],
        signal: Some(255),
    };
    assert_eq!(
        errors(&p),
        [
            "tensor[0]: 5 semaphore waits, at most 4 are allowed",
            "tensor[0]: wait on semaphore s64, but the machine has s0 .. s63",
            "tensor[0]: signal of semaphore s255, but the machine has s0 .. s63",
        ]
    );
}

#[test]
fn debug_locations_match_streams() {
    let mut p = Program::new(Preset::Default);
    p.locs = vec![vec![None]; NUM_STREAMS];
    assert_eq!(verify(&p), Ok(()));
    p.locs[4] = vec![];
    assert_eq!(
        errors(&p),
        ["dma0: the debug table has 0 locations but the stream has 1 instructions"]
    );
    p.locs.pop();
    assert_eq!(
        errors(&p),
        ["program: the debug table has 19 streams but the program has 20"]
    );
}

#[test]
fn every_error_is_collected() {
    let mut p = program(
        V,
        vec![
            memset(sb(F32, 0, 0, 0, &[(1, 1)])),
            Op::Matmul {
                out: ps(F32, 0, 1, 0, &[(1, 1)]),
                stationary: sb(F32, 0, 1, 0, &[(1, 1)]),
                moving: sb(F32, 0, 1, 0, &[(1, 1)]),
                accumulate: true,
            },
        ],
    );
    p.streams[2].clear();
    let errs = verify(&p).unwrap_err();
    let at: Vec<(Option<Engine>, Option<usize>)> =
        errs.iter().map(|e| (e.engine, e.index)).collect();
    assert_eq!(
        at,
        [
            (Some(V), Some(0)),
            (Some(V), Some(1)),
            (Some(Engine::Scalar), None)
        ]
    );
}
