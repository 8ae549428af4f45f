//! Pinned encodings: one row per opcode with the instruction built as a Rust value, its
//! canonical text and its exact bytes. A change to the table, an operand encoding or the
//! text syntax shows up here as a diff; the test also fails when an opcode has no row.

use isa::*;
use smallvec::smallvec;

fn sb(dtype: Dtype, start: u8, parts: u8, offset: u32, dims: &[(u32, i32)]) -> TileAp {
    TileAp::new(Mem::Sbuf, dtype, start, parts, offset, dims)
}

fn ps(dtype: Dtype, start: u8, parts: u8, offset: u32, dims: &[(u32, i32)]) -> TileAp {
    TileAp::new(Mem::Psum, dtype, start, parts, offset, dims)
}

fn rows() -> Vec<(Inst, &'static str, &'static str)> {
    use Dtype::*;
    vec![
        (
            Inst {
                sync: Sync { waits: smallvec![(0, 1), (63, 0xdead_beef)], signal: Some(1) },
                op: Op::Nop {},
            },
            "wait(s0>=1, s63>=3735928559) nop signal(s1)",
            "00 0a 00 01 00 00 00 3f ef be ad de 01",
        ),
        (Inst::new(Op::End {}), "end", "01 00"),
        (
            Inst::new(Op::Dma {
                dst: DmaAp::Tile(sb(Bf16, 0, 128, 0, &[(64, 1)])),
                src: DmaAp::Hbm(HbmAp::new(F32, 4096, &[(128, 64), (64, 1)])),
            }),
            "dma dst=sbuf.bf16[0:128, 0; 64:1], src=hbm.f32[4096; 128:64, 64:1]",
            "10 00 01 00 01 00 80 00 00 00 00 01 40 00 00 00 01 00 00 00 00 00 00 10 \
             00 00 00 00 00 00 02 80 00 00 00 00 00 00 00 40 00 00 00 00 00 00 00 40 \
             00 00 00 00 00 00 00 01 00 00 00 00 00 00 00",
        ),
        (
            Inst::new(Op::DmaGather {
                dst: sb(Bf16, 0, 128, 0, &[(64, 1)]),
                idx: sb(I32, 0, 128, 256, &[(1, 1)]),
                src: HbmAp::new(Bf16, 4096, &[(1000, 64), (64, 1)]),
                wrap: true,
            }),
            "dma_gather dst=sbuf.bf16[0:128, 0; 64:1], idx=sbuf.i32[0:128, 256; 1:1], \
             src=hbm.bf16[4096; 1000:64, 64:1], wrap=true",
            "11 00 00 01 00 80 00 00 00 00 01 40 00 00 00 01 00 00 00 00 05 00 80 00 \
             01 00 00 01 01 00 00 00 01 00 00 00 01 00 10 00 00 00 00 00 00 02 e8 03 \
             00 00 00 00 00 00 40 00 00 00 00 00 00 00 40 00 00 00 00 00 00 00 01 00 \
             00 00 00 00 00 00 01",
        ),
        (
            Inst::new(Op::Matmul {
                out: ps(F32, 0, 128, 2048, &[(512, 1)]),
                stationary: sb(Bf16, 0, 64, 0, &[(128, 1)]),
                moving: sb(Bf16, 0, 64, 256, &[(4, 128), (128, 1)]),
                accumulate: true,
            }),
            "matmul out=psum.f32[0:128, 2048; 512:1], stationary=sbuf.bf16[0:64, 0; 128:1], \
             moving=sbuf.bf16[0:64, 256; 4:128, 128:1], accumulate=true",
            "20 00 01 00 00 80 00 08 00 00 01 00 02 00 00 01 00 00 00 00 01 00 40 00 \
             00 00 00 01 80 00 00 00 01 00 00 00 00 01 00 40 00 01 00 00 02 04 00 00 \
             00 80 00 00 00 80 00 00 00 01 00 00 00 01",
        ),
        (
            Inst::new(Op::Transpose {
                out: ps(Bf16, 0, 64, 0, &[(32, 1)]),
                src: sb(Bf16, 96, 32, 200, &[(64, -1)]),
            }),
            "transpose out=psum.bf16[0:64, 0; 32:1], src=sbuf.bf16[96:32, 200; 64:-1]",
            "21 00 01 01 00 40 00 00 00 00 01 20 00 00 00 01 00 00 00 00 01 60 20 c8 \
             00 00 00 01 40 00 00 00 ff ff ff ff",
        ),
        (
            Inst::new(Op::PartitionTranspose {
                out: sb(Bf16, 0, 64, 0, &[(32, 1)]),
                src: sb(Bf16, 96, 32, 200, &[(64, -1)]),
            }),
            "partition_transpose out=sbuf.bf16[0:64, 0; 32:1], src=sbuf.bf16[96:32, 200; 64:-1]",
            "52 00 00 01 00 40 00 00 00 00 01 20 00 00 00 01 00 00 00 00 01 60 20 c8 \
             00 00 00 01 40 00 00 00 ff ff ff ff",
        ),
        (
            Inst::new(Op::TensorTensor {
                op: AluOp::RSub,
                out: sb(F32, 0, 128, 0, &[(512, 1)]),
                a: sb(F32, 0, 128, 2048, &[(512, 1)]),
                b: ps(F32, 0, 128, 0, &[(512, 1)]),
            }),
            "tensor_tensor op=rsub, out=sbuf.f32[0:128, 0; 512:1], a=sbuf.f32[0:128, 2048; 512:1], \
             b=psum.f32[0:128, 0; 512:1]",
            "30 00 03 00 00 00 80 00 00 00 00 01 00 02 00 00 01 00 00 00 00 00 00 80 \
             00 08 00 00 01 00 02 00 00 01 00 00 00 01 00 00 80 00 00 00 00 01 00 02 \
             00 00 01 00 00 00",
        ),
        (
            Inst::new(Op::Select {
                out: sb(F32, 0, 128, 0, &[(512, 1)]),
                mask: sb(Bool, 0, 128, 2048, &[(512, 1)]),
                a: sb(F32, 0, 128, 4096, &[(512, 1)]),
                b: ps(F32, 0, 128, 0, &[(512, 1)]),
            }),
            "select out=sbuf.f32[0:128, 0; 512:1], mask=sbuf.bool[0:128, 2048; 512:1], \
             a=sbuf.f32[0:128, 4096; 512:1], b=psum.f32[0:128, 0; 512:1]",
            "36 00 00 00 00 80 00 00 00 00 01 00 02 00 00 01 00 00 00 00 06 00 80 00 \
             08 00 00 01 00 02 00 00 01 00 00 00 00 00 00 80 00 10 00 00 01 00 02 00 \
             00 01 00 00 00 01 00 00 80 00 00 00 00 01 00 02 00 00 01 00 00 00",
        ),
        (
            Inst::new(Op::TensorScalar {
                out: sb(Bf16, 0, 128, 0, &[(4, 128), (128, 1)]),
                src: ps(F32, 0, 128, 0, &[(512, 1)]),
                op0: AluOp::Mul,
                s0: ScalarArg::Ap(sb(F32, 0, 128, 4096, &[(1, 1)])),
                op1: AluOp::Add,
                s1: ScalarArg::imm(0.5),
            }),
            "tensor_scalar out=sbuf.bf16[0:128, 0; 4:128, 128:1], src=psum.f32[0:128, 0; 512:1], \
             op0=mul, s0=sbuf.f32[0:128, 4096; 1:1], op1=add, s1=0.5",
            "31 00 00 01 00 80 00 00 00 00 02 04 00 00 00 80 00 00 00 80 00 00 00 01 \
             00 00 00 01 00 00 80 00 00 00 00 01 00 02 00 00 01 00 00 00 04 01 00 00 \
             00 80 00 10 00 00 01 01 00 00 00 01 00 00 00 01 00 00 00 00 3f",
        ),
        (
            Inst::new(Op::TensorReduce {
                op: ReduceOp::Min,
                out: sb(F32, 0, 128, 0, &[(4, 1)]),
                src: sb(F32, 0, 128, 64, &[(4, 256), (256, 1)]),
            }),
            "tensor_reduce op=min, out=sbuf.f32[0:128, 0; 4:1], src=sbuf.f32[0:128, 64; 4:256, 256:1]",
            "32 00 02 00 00 00 80 00 00 00 00 01 04 00 00 00 01 00 00 00 00 00 00 80 \
             40 00 00 00 02 04 00 00 00 00 01 00 00 00 01 00 00 01 00 00 00",
        ),
        (
            Inst::new(Op::TensorReduceScalar {
                op: ReduceOp::Max,
                out: sb(F32, 0, 128, 8, &[(1, 1)]),
                src: ps(F32, 0, 128, 0, &[(512, 1)]),
                op0: AluOp::Mul,
                s0: ScalarArg::imm(-0.125),
                op1: AluOp::Min,
                s1: ScalarArg::Ap(sb(F32, 0, 128, 12, &[(1, 1)])),
            }),
            "tensor_reduce_scalar op=max, out=sbuf.f32[0:128, 8; 1:1], src=psum.f32[0:128, 0; 512:1], \
             op0=mul, s0=-0.125, op1=min, s1=sbuf.f32[0:128, 12; 1:1]",
            "35 00 01 00 00 00 80 08 00 00 00 01 01 00 00 00 01 00 00 00 01 00 00 80 \
             00 00 00 00 01 00 02 00 00 01 00 00 00 04 00 00 00 00 be 08 01 00 00 00 \
             80 0c 00 00 00 01 01 00 00 00 01 00 00 00",
        ),
        (
            Inst::new(Op::TensorCopy {
                out: sb(F8E4M3, 64, 64, 0, &[(32, 1), (16, 32)]),
                src: sb(F32, 64, 64, 1024, &[(16, 32), (32, 1)]),
            }),
            "tensor_copy out=sbuf.f8e4m3[64:64, 0; 32:1, 16:32], src=sbuf.f32[64:64, 1024; 16:32, 32:1]",
            "33 00 00 03 40 40 00 00 00 00 02 20 00 00 00 01 00 00 00 10 00 00 00 20 \
             00 00 00 00 00 40 40 00 04 00 00 02 10 00 00 00 20 00 00 00 20 00 00 00 \
             01 00 00 00",
        ),
        (
            Inst::new(Op::Memset {
                out: sb(F16, 32, 32, 0, &[(128, 1)]),
                value: Imm(0x7fc0_0001),
            }),
            "memset out=sbuf.f16[32:32, 0; 128:1], value=nan:0x7fc00001",
            "34 00 00 02 20 20 00 00 00 00 01 80 00 00 00 01 00 00 00 01 00 c0 7f",
        ),
        (
            Inst::new(Op::Activate {
                out: sb(Bf16, 0, 128, 0, &[(512, 1)]),
                src: ps(F32, 0, 128, 0, &[(512, 1)]),
                func: ActFunc::GeluTanh,
                scale: ScalarArg::imm(f32::NEG_INFINITY),
                bias: ScalarArg::Ap(sb(F32, 0, 128, 2048, &[(1, 1)])),
                accum: Some(sb(F32, 0, 128, 2052, &[(1, 1)])),
            }),
            "activate out=sbuf.bf16[0:128, 0; 512:1], src=psum.f32[0:128, 0; 512:1], func=gelu_tanh, \
             scale=-inf, bias=sbuf.f32[0:128, 2048; 1:1], accum=sbuf.f32[0:128, 2052; 1:1]",
            "40 00 00 01 00 80 00 00 00 00 01 00 02 00 00 01 00 00 00 01 00 00 80 00 \
             00 00 00 01 00 02 00 00 01 00 00 00 0d 00 00 00 80 ff 01 00 00 00 80 00 \
             08 00 00 01 01 00 00 00 01 00 00 00 01 00 00 00 80 04 08 00 00 01 01 00 \
             00 00 01 00 00 00",
        ),
        (
            Inst::new(Op::Iota {
                out: sb(F32, 0, 128, 0, &[(64, 1)]),
                expr: Affine { base: -5, partition_step: 64, steps: smallvec![1] },
            }),
            "iota out=sbuf.f32[0:128, 0; 64:1], expr=affine(base=-5, p=64, i=[1])",
            "50 00 00 00 00 80 00 00 00 00 01 40 00 00 00 01 00 00 00 fb ff ff ff 40 \
             00 00 00 01 01 00 00 00",
        ),
        (
            Inst {
                sync: Sync { waits: smallvec![(2, 1)], signal: Some(3) },
                op: Op::AffineSelect {
                    out: sb(F32, 0, 128, 0, &[(128, 1)]),
                    src: sb(F32, 0, 128, 512, &[(128, 1)]),
                    cmp: CmpOp::Ge,
                    expr: Affine { base: 0, partition_step: 1, steps: smallvec![-1] },
                    fill: Imm::new(-1e-45),
                },
            },
            "wait(s2>=1) affine_select out=sbuf.f32[0:128, 0; 128:1], src=sbuf.f32[0:128, 512; 128:1], \
             cmp=ge, expr=affine(base=0, p=1, i=[-1]), fill=-1e-45 signal(s3)",
            "51 09 02 01 00 00 00 03 00 00 00 80 00 00 00 00 01 80 00 00 00 01 00 00 \
             00 00 00 00 80 00 02 00 00 01 80 00 00 00 01 00 00 00 00 00 00 00 00 01 \
             00 00 00 01 ff ff ff ff 01 00 00 80",
        ),
        (
            Inst::new(Op::TensorScan {
                out: sb(F32, 0, 128, 0, &[(32, 1), (128, 32)]),
                src: sb(F32, 0, 128, 16384, &[(32, 1), (128, 32)]),
                carry: Some(sb(F32, 0, 128, 32768, &[(32, 1)])),
            }),
            "tensor_scan out=sbuf.f32[0:128, 0; 32:1, 128:32], src=sbuf.f32[0:128, 16384; 32:1, 128:32], \
             carry=sbuf.f32[0:128, 32768; 32:1]",
            "37 00 00 00 00 80 00 00 00 00 02 20 00 00 00 01 00 00 00 80 00 00 00 20 00 00 00 00 00 00 80 00 40 00 00 02 20 00 00 00 01 00 00 00 80 00 00 00 20 00 00 00 01 00 00 00 80 00 80 00 00 01 20 00 00 00 01 00 00 00",
        ),
        (
            Inst::new(Op::TensorArgReduce {
                op: ReduceOp::Min,
                out: sb(Bf16, 0, 64, 0, &[(2, 1)]),
                index: sb(I32, 0, 64, 8, &[(2, 1)]),
                src: sb(Bf16, 0, 64, 64, &[(2, 512), (512, 1)]),
                positions: Some(sb(I32, 0, 64, 4096, &[(2, 512), (512, 1)])),
            }),
            "tensor_arg_reduce op=min, out=sbuf.bf16[0:64, 0; 2:1], index=sbuf.i32[0:64, 8; 2:1], \
             src=sbuf.bf16[0:64, 64; 2:512, 512:1], positions=sbuf.i32[0:64, 4096; 2:512, 512:1]",
            "38 00 02 00 01 00 40 00 00 00 00 01 02 00 00 00 01 00 00 00 00 05 00 40 08 00 00 00 01 02 00 00 00 01 00 00 00 00 01 00 40 40 00 00 00 02 02 00 00 00 00 02 00 00 00 02 00 00 01 00 00 00 01 00 05 00 40 00 10 00 00 02 02 00 00 00 00 02 00 00 00 02 00 00 01 00 00 00",
        ),
    ]
}

fn hex(bytes: &[u8]) -> String {
    bytes
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(" ")
}

#[test]
fn every_opcode_has_a_pinned_row() {
    let rows = rows();
    for &opcode in Opcode::ALL {
        assert!(
            rows.iter().any(|(inst, _, _)| inst.op.opcode() == opcode),
            "no pinned row for `{}`",
            opcode.mnemonic()
        );
    }
}

#[test]
fn pinned_text_and_bytes() {
    for (inst, text, bytes) in rows() {
        assert_eq!(inst.to_string(), text);
        assert_eq!(text.parse::<Inst>(), Ok(inst.clone()));
        let mut enc = Vec::new();
        encode_inst(&inst, &mut enc);
        assert_eq!(hex(&enc), bytes, "bytes of `{text}`");
        assert_eq!(decode_inst(&enc), Ok((inst.clone(), enc.len())));
    }
}

/// Every pinned row is a valid instruction on an engine that may run it.
#[test]
fn pinned_rows_verify() {
    for (inst, text, _) in rows() {
        let engine = Engine::all()
            .find(|e| inst.op.opcode().engines().contains(e.class()))
            .expect("an engine runs it");
        let mut p = Program::new(Preset::Default);
        p.hbm_size = 1 << 20;
        if inst.op.opcode() == Opcode::End {
            p.streams[engine.index()] = vec![inst];
        } else {
            p.streams[engine.index()].insert(0, inst);
        }
        assert_eq!(verify(&p), Ok(()), "{text}");
    }
}

/// The header of a `.tbin` file, byte for byte, for an empty program: format version 2,
/// then after the streams the debug flag and the origin flag, both 0.
#[test]
fn pinned_empty_program_bytes() {
    let mut p = Program::new(Preset::Default);
    p.hbm_size = 0x0102;
    let bytes = encode_program(&p);
    let mut expected =
        String::from("54 45 53 53 45 52 41 00 02 00 00 00 02 01 00 00 00 00 00 00 00 00 00 00 14");
    for i in 0..NUM_STREAMS {
        expected.push_str(&format!(" {i:02x} 02 00 00 00 01 00 00 00 01 00"));
    }
    expected.push_str(" 00 00");
    assert_eq!(hex(&bytes), expected);
}
