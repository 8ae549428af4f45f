//! One small program per instruction class, written in assembly, whose outputs are checked
//! bit for bit against a plain-Rust computation with `runtime::numeric`.

mod common;

use common::*;
use isa::{ActFunc, AluOp, Dtype};
use runtime::numeric::{act, alu, round};

/// `dma` with a transposing pattern (HBM f32 -> SBUF bf16), a reversed pattern (negative
/// stride, f8e5m2 -> f32), conversions to f8e4m3 (saturating) and bf16, and SBUF to SBUF.
#[test]
fn dma_patterns_and_conversions() {
    let mut a = Asm::new();
    let x = a.tensor("x", "input", Dtype::F32, &[64, 32]);
    let w = a.tensor("w", "input", Dtype::F8E5M2, &[4, 16]);
    let yb = a.tensor("yb", "output", Dtype::Bf16, &[32, 64]);
    let y8 = a.tensor("y8", "output", Dtype::F8E4M3, &[32, 64]);
    let z = a.tensor("z", "output", Dtype::F32, &[32, 64]);
    let wo = a.tensor("wo", "output", Dtype::F32, &[4, 16]);
    // SBUF[p][i] = x[i][p]: the tile side walks p then i; x[i][p] is at element i*32 + p.
    a.inst(
        "dma0",
        format!("dma dst=sbuf.bf16[0:32, 0; 64:1], src=hbm.f32[{x}; 32:1, 64:32] signal(s0)"),
    );
    a.inst(
        "dma0",
        format!(
            "dma dst=sbuf.f32[0:4, 256; 16:1], src=hbm.f8e5m2[{}; 4:16, 16:-1] signal(s3)",
            w + 15
        ),
    );
    a.inst(
        "dma1",
        format!("wait(s0>=1) dma dst=hbm.bf16[{yb}; 2048:1], src=sbuf.bf16[0:32, 0; 64:1]"),
    );
    a.inst(
        "dma1",
        format!("wait(s0>=1) dma dst=hbm.f8e4m3[{y8}; 32:64, 64:1], src=sbuf.bf16[0:32, 0; 64:1]"),
    );
    a.inst(
        "dma1",
        "wait(s0>=1) dma dst=sbuf.bf16[32:32, 512; 64:1], src=sbuf.bf16[0:32, 0; 64:1] signal(s1)",
    );
    a.inst(
        "dma2",
        format!("wait(s1>=1) dma dst=hbm.f32[{z}; 32:64, 64:1], src=sbuf.bf16[32:32, 512; 64:1]"),
    );
    a.inst(
        "dma2",
        format!("wait(s3>=1) dma dst=hbm.f32[{wo}; 64:1], src=sbuf.f32[0:4, 256; 16:1]"),
    );
    let mut rng = Rng::new(1);
    let xv = rng.values(Dtype::F32, 64 * 32, 600.0);
    let wv = rng.values(Dtype::F8E5M2, 64, 1000.0);
    let (report, out) = run(&a.text(), &[("x", &xv), ("w", &wv)]);
    let t: Vec<f32> = (0..32 * 64)
        .map(|e| {
            let (p, i) = (e / 64, e % 64);
            round(Dtype::Bf16, xv[i * 32 + p])
        })
        .collect();
    assert_bits_eq(&out.read("yb").unwrap(), &t, "yb");
    let t8: Vec<f32> = t.iter().map(|&v| round(Dtype::F8E4M3, v)).collect();
    assert!(
        t8.iter().any(|v| v.abs() == 448.0),
        "saturation is exercised"
    );
    assert_bits_eq(&out.read("y8").unwrap(), &t8, "y8");
    assert_bits_eq(&out.read("z").unwrap(), &t, "z");
    let wr: Vec<f32> = (0..64).map(|e| wv[(e / 16) * 16 + 15 - e % 16]).collect();
    assert_bits_eq(&out.read("wo").unwrap(), &wr, "wo");
    assert_eq!(report.sbuf_to_sbuf_bytes, 32 * 64 * 2);
    assert_eq!(report.hbm_read_bytes, 64 * 32 * 4 + 64);
}

/// The plain-Rust matmul: `out[m][n] = (init) + sum_k s[k][m] * v[k][n]` in order.
fn matmul_ref(s: &[f32], v: &[f32], k: usize, m: usize, n: usize) -> Vec<f32> {
    let mut out = vec![0.0f32; m * n];
    for mi in 0..m {
        for ni in 0..n {
            let mut acc = 0.0f32;
            for ki in 0..k {
                acc += s[ki * m + mi] * v[ki * n + ni];
            }
            out[mi * n + ni] = acc;
        }
    }
    out
}

/// Runs `out = s^T @ v` for `s[K, M]`, `v[K, N]` of `dtype`, as `groups` matmuls that
/// split K into equal partition ranges and accumulate in PSUM.
fn matmul_case(dtype: Dtype, k: usize, m: usize, n: usize, groups: usize, seed: u64) {
    let mut a = Asm::new();
    let s_off = a.tensor("s", "input", dtype, &[k, m]);
    let v_off = a.tensor("v", "input", dtype, &[k, n]);
    let o_off = a.tensor("o", "output", Dtype::F32, &[m, n]);
    let d = dtype.name();
    let es = dtype.size() as usize;
    let v_sb = m * es;
    a.inst(
        "dma0",
        format!(
            "dma dst=sbuf.{d}[0:{k}, 0; {m}:1], src=hbm.{d}[{s_off}; {k}:{m}, {m}:1] signal(s0)"
        ),
    );
    a.inst(
        "dma1",
        format!("dma dst=sbuf.{d}[0:{k}, {v_sb}; {n}:1], src=hbm.{d}[{v_off}; {k}:{n}, {n}:1] signal(s0)"),
    );
    let kg = k / groups;
    for g in 0..groups {
        let p0 = g * kg;
        let signal = if g == groups - 1 { " signal(s1)" } else { "" };
        a.inst(
            "tensor",
            format!(
                "wait(s0>=2) matmul out=psum.f32[0:{m}, 0; {n}:1], stationary=sbuf.{d}[{p0}:{kg}, 0; {m}:1], moving=sbuf.{d}[{p0}:{kg}, {v_sb}; {n}:1], accumulate={}{signal}",
                g > 0
            ),
        );
    }
    a.inst(
        "vector",
        format!("wait(s1>=1) tensor_copy out=sbuf.f32[0:{m}, 8192; {n}:1], src=psum.f32[0:{m}, 0; {n}:1] signal(s2)"),
    );
    a.inst(
        "dma2",
        format!("wait(s2>=1) dma dst=hbm.f32[{o_off}; {m}:{n}, {n}:1], src=sbuf.f32[0:{m}, 8192; {n}:1]"),
    );
    let mut rng = Rng::new(seed);
    let sv = rng.values(dtype, k * m, 4.0);
    let vv = rng.values(dtype, k * n, 4.0);
    let text = a.text();
    let (report, out) = run(&text, &[("s", &sv), ("v", &vv)]);
    let want = matmul_ref(&sv, &vv, k, m, n);
    assert_bits_eq(&out.read("o").unwrap(), &want, &format!("{d} {k}x{m}x{n}"));
    assert_eq!(report.matmul_flops, 2 * (k * m * n) as u64);
    // Determinism: a second run gives the same bits and the same report.
    let (report2, out2) = run(&text, &[("s", &sv), ("v", &vv)]);
    assert_eq!(report, report2);
    assert_bits_eq(&out2.read("o").unwrap(), &want, "second run");
}

#[test]
fn matmul_bf16_full_tile() {
    matmul_case(Dtype::Bf16, 128, 128, 512, 1, 10);
}

#[test]
fn matmul_odd_sizes() {
    matmul_case(Dtype::Bf16, 77, 33, 100, 1, 11);
    matmul_case(Dtype::F16, 77, 33, 100, 1, 12);
}

#[test]
fn matmul_fp8_and_f32() {
    matmul_case(Dtype::F8E4M3, 64, 128, 256, 1, 13);
    matmul_case(Dtype::F8E5M2, 32, 16, 48, 1, 14);
    matmul_case(Dtype::F32, 32, 16, 64, 1, 15);
}

#[test]
fn matmul_accumulates_in_order() {
    matmul_case(Dtype::Bf16, 128, 64, 200, 2, 16);
    matmul_case(Dtype::F32, 128, 32, 40, 4, 17);
}

#[test]
fn transpose_bf16_to_psum() {
    let (p, f) = (64, 100);
    let mut a = Asm::new();
    let x = a.tensor("x", "input", Dtype::Bf16, &[p, f]);
    let y = a.tensor("y", "output", Dtype::F32, &[f, p]);
    a.inst(
        "dma0",
        format!("dma dst=sbuf.bf16[0:{p}, 0; {f}:1], src=hbm.bf16[{x}; {p}:{f}, {f}:1] signal(s0)"),
    );
    a.inst(
        "tensor",
        format!("wait(s0>=1) transpose out=psum.f32[0:{f}, 0; {p}:1], src=sbuf.bf16[0:{p}, 0; {f}:1] signal(s1)"),
    );
    a.inst(
        "vector",
        format!("wait(s1>=1) tensor_copy out=sbuf.f32[0:{f}, 1024; {p}:1], src=psum.f32[0:{f}, 0; {p}:1] signal(s2)"),
    );
    a.inst(
        "dma1",
        format!(
            "wait(s2>=1) dma dst=hbm.f32[{y}; {f}:{p}, {p}:1], src=sbuf.f32[0:{f}, 1024; {p}:1]"
        ),
    );
    let xv = Rng::new(2).values(Dtype::Bf16, p * f, 100.0);
    let (_, out) = run(&a.text(), &[("x", &xv)]);
    let want: Vec<f32> = (0..f * p).map(|e| xv[(e % p) * f + e / p]).collect();
    assert_bits_eq(&out.read("y").unwrap(), &want, "transpose");
}

#[test]
fn partition_transpose_on_gpsimd() {
    // bf16 in, f32 and f8e4m3 out (the second saturates), and a timing of 64 + 4 max(P, F).
    for (out_dtype, cost) in [(Dtype::F32, 64 + 4 * 100), (Dtype::F8E4M3, 64 + 4 * 100)] {
        let (p, f) = (64, 100);
        let mut a = Asm::new();
        let x = a.tensor("x", "input", Dtype::Bf16, &[p, f]);
        let d = out_dtype.name();
        let y = a.tensor("y", "output", out_dtype, &[f, p]);
        a.inst(
            "dma0",
            format!(
                "dma dst=sbuf.bf16[0:{p}, 0; {f}:1], src=hbm.bf16[{x}; {p}:{f}, {f}:1] signal(s0)"
            ),
        );
        a.inst(
            "gpsimd",
            format!("wait(s0>=1) partition_transpose out=sbuf.{d}[0:{f}, 1024; {p}:1], src=sbuf.bf16[0:{p}, 0; {f}:1] signal(s1)"),
        );
        a.inst(
            "dma1",
            format!("wait(s1>=1) dma dst=hbm.{d}[{y}; {f}:{p}, {p}:1], src=sbuf.{d}[0:{f}, 1024; {p}:1]"),
        );
        let xv = Rng::new(3).values(Dtype::Bf16, p * f, 1000.0);
        let (report, out) = run(&a.text(), &[("x", &xv)]);
        let want: Vec<f32> = (0..f * p)
            .map(|e| round(out_dtype, xv[(e % p) * f + e / p]))
            .collect();
        assert_bits_eq(&out.read("y").unwrap(), &want, "partition_transpose");
        let gpsimd = report.engine(isa::Engine::GpSimd);
        assert_eq!(gpsimd.busy_cycles, cost);
    }
}

/// Declares an input `x[parts, free]` of `dtype` and loads it into SBUF at byte 0 on
/// `dma0`, signalling `s0`.
fn with_input(a: &mut Asm, dtype: Dtype, parts: usize, free: usize) {
    let off = a.tensor("x", "input", dtype, &[parts, free]);
    let d = dtype.name();
    a.inst(
        "dma0",
        format!("dma dst=sbuf.{d}[0:{parts}, 0; {free}:1], src=hbm.{d}[{off}; {parts}:{free}, {free}:1] signal(s0)"),
    );
}

/// Adds an output `name[parts, free]` of `dtype` written from SBUF at `sb_off` on `queue`
/// after `s{sem} >= 1`.
#[allow(clippy::too_many_arguments)]
fn with_output(
    a: &mut Asm,
    name: &str,
    dtype: Dtype,
    parts: usize,
    free: usize,
    sb_off: usize,
    sem: u8,
    queue: u8,
) {
    let off = a.tensor(name, "output", dtype, &[parts, free]);
    let d = dtype.name();
    a.inst(
        &format!("dma{queue}"),
        format!("wait(s{sem}>=1) dma dst=hbm.{d}[{off}; {parts}:{free}, {free}:1], src=sbuf.{d}[0:{parts}, {sb_off}; {free}:1]"),
    );
}

#[test]
fn tensor_tensor_vector_and_gpsimd() {
    let (p, f) = (128, 64);
    let mut a = Asm::new();
    with_input(&mut a, Dtype::Bf16, p, f);
    let b_off = a.tensor("b", "input", Dtype::F32, &[p, f]);
    a.inst(
        "dma1",
        format!(
            "dma dst=sbuf.f32[0:{p}, 1024; {f}:1], src=hbm.f32[{b_off}; {p}:{f}, {f}:1] signal(s0)"
        ),
    );
    // add -> bf16; max through a pattern that writes 8x8 blocks transposed; mul on GpSimd.
    a.inst(
        "vector",
        "wait(s0>=2) tensor_tensor op=add, out=sbuf.bf16[0:128, 4096; 64:1], a=sbuf.bf16[0:128, 0; 64:1], b=sbuf.f32[0:128, 1024; 64:1] signal(s1)",
    );
    a.inst(
        "vector",
        "wait(s0>=2) tensor_tensor op=max, out=sbuf.f32[0:128, 8192; 8:1, 8:8], a=sbuf.bf16[0:128, 0; 64:1], b=sbuf.f32[0:128, 1024; 64:1] signal(s2)",
    );
    a.inst(
        "gpsimd",
        "wait(s0>=2) tensor_tensor op=div, out=sbuf.f32[0:128, 12288; 64:1], a=sbuf.bf16[0:128, 0; 64:1], b=sbuf.f32[0:128, 1024; 64:1] signal(s3)",
    );
    with_output(&mut a, "add", Dtype::Bf16, p, f, 4096, 1, 2);
    with_output(&mut a, "max", Dtype::F32, p, f, 8192, 2, 3);
    with_output(&mut a, "div", Dtype::F32, p, f, 12288, 3, 4);
    let mut rng = Rng::new(3);
    let xv = rng.values(Dtype::Bf16, p * f, 10.0);
    let bv = rng.values(Dtype::F32, p * f, 10.0);
    let (_, out) = run(&a.text(), &[("x", &xv), ("b", &bv)]);
    let add: Vec<f32> = (0..p * f)
        .map(|i| round(Dtype::Bf16, alu(AluOp::Add, xv[i], bv[i])))
        .collect();
    assert_bits_eq(&out.read("add").unwrap(), &add, "add");
    let max: Vec<f32> = (0..p * f)
        .map(|e| {
            let (row, c) = (e / f, e % f);
            // Memory element c = j*8 + i holds the walk's element i*8 + j.
            let walk = row * f + (c % 8) * 8 + c / 8;
            alu(AluOp::Max, xv[walk], bv[walk])
        })
        .collect();
    assert_bits_eq(&out.read("max").unwrap(), &max, "max");
    let div: Vec<f32> = (0..p * f).map(|i| alu(AluOp::Div, xv[i], bv[i])).collect();
    assert_bits_eq(&out.read("div").unwrap(), &div, "div");
}

/// Comparisons give 1 and 0 into a `bool` tile (NaN compares false but `is_ne`), and
/// `select` picks `a` where the mask is nonzero, else `b`, with -0, infinities and NaN kept
/// as they are; the mask and the result round-trip through `bool` HBM tensors.
#[test]
fn comparisons_and_select() {
    let (p, f) = (64, 32);
    let mut a = Asm::new();
    with_input(&mut a, Dtype::F32, p, f);
    let b_off = a.tensor("b", "input", Dtype::F32, &[p, f]);
    a.inst(
        "dma1",
        format!(
            "dma dst=sbuf.f32[0:{p}, 1024; {f}:1], src=hbm.f32[{b_off}; {p}:{f}, {f}:1] signal(s0)"
        ),
    );
    a.inst(
        "vector",
        "wait(s0>=2) tensor_tensor op=is_lt, out=sbuf.bool[0:64, 4096; 32:1], a=sbuf.f32[0:64, 0; 32:1], b=sbuf.f32[0:64, 1024; 32:1]",
    );
    a.inst(
        "vector",
        "tensor_tensor op=is_ne, out=sbuf.bool[0:64, 6144; 32:1], a=sbuf.f32[0:64, 0; 32:1], b=sbuf.f32[0:64, 1024; 32:1] signal(s1)",
    );
    a.inst(
        "gpsimd",
        "wait(s1>=1) select out=sbuf.f32[0:64, 8192; 32:1], mask=sbuf.bool[0:64, 4096; 32:1], a=sbuf.f32[0:64, 0; 32:1], b=sbuf.f32[0:64, 1024; 32:1] signal(s2)",
    );
    with_output(&mut a, "lt", Dtype::Bool, p, f, 4096, 1, 2);
    with_output(&mut a, "ne", Dtype::Bool, p, f, 6144, 1, 3);
    with_output(&mut a, "sel", Dtype::F32, p, f, 8192, 2, 4);
    let mut rng = Rng::new(5);
    let mut xv = rng.values(Dtype::F32, p * f, 10.0);
    let mut bv = rng.values(Dtype::F32, p * f, 10.0);
    // Special values: NaN on either side, equal values, signed zeros, infinities.
    xv[0] = f32::NAN;
    bv[1] = f32::NAN;
    xv[2] = 3.0;
    bv[2] = 3.0;
    xv[3] = -0.0;
    bv[3] = 0.0;
    xv[4] = f32::NEG_INFINITY;
    bv[5] = -0.0;
    xv[5] = 1.0;
    let (report, out) = run(&a.text(), &[("x", &xv), ("b", &bv)]);
    let lt: Vec<f32> = (0..p * f).map(|i| alu(AluOp::IsLt, xv[i], bv[i])).collect();
    assert_eq!(lt[..6], [0.0, 0.0, 0.0, 0.0, 1.0, 0.0]);
    assert_bits_eq(&out.read("lt").unwrap(), &lt, "lt");
    let ne: Vec<f32> = (0..p * f).map(|i| alu(AluOp::IsNe, xv[i], bv[i])).collect();
    assert_eq!(ne[..4], [1.0, 1.0, 0.0, 0.0]);
    assert_bits_eq(&out.read("ne").unwrap(), &ne, "ne");
    let sel: Vec<f32> = (0..p * f)
        .map(|i| if lt[i] != 0.0 { xv[i] } else { bv[i] })
        .collect();
    assert_bits_eq(&out.read("sel").unwrap(), &sel, "sel");
    // -0 of `b` is kept where the mask is 0.
    assert_eq!(out.read("sel").unwrap()[5].to_bits(), 0x8000_0000);
    // Two bool outputs of one byte per element.
    assert!(report.hbm_write_bytes >= (2 * p * f + 4 * p * f) as u64);
}

#[test]
fn tensor_scalar_immediate_and_per_partition() {
    let (p, f) = (64, 48);
    let mut a = Asm::new();
    with_input(&mut a, Dtype::F32, p, f);
    let s_off = a.tensor("s", "input", Dtype::F32, &[p]);
    a.inst(
        "dma1",
        format!("dma dst=sbuf.f32[0:{p}, 4096; 1:1], src=hbm.f32[{s_off}; {p}:1, 1:1] signal(s0)"),
    );
    a.inst(
        "vector",
        "wait(s0>=2) tensor_scalar out=sbuf.bf16[0:64, 8192; 48:1], src=sbuf.f32[0:64, 0; 48:1], op0=mul, s0=2.5, op1=add, s1=-1.0 signal(s1)",
    );
    a.inst(
        "gpsimd",
        "wait(s0>=2) tensor_scalar out=sbuf.f32[0:64, 12288; 48:1], src=sbuf.f32[0:64, 0; 48:1], op0=sub, s0=sbuf.f32[0:64, 4096; 1:1], op1=rdiv, s1=1.0 signal(s2)",
    );
    with_output(&mut a, "imm", Dtype::Bf16, p, f, 8192, 1, 2);
    with_output(&mut a, "ap", Dtype::F32, p, f, 12288, 2, 3);
    let mut rng = Rng::new(4);
    let xv = rng.values(Dtype::F32, p * f, 10.0);
    let sv = rng.values(Dtype::F32, p, 10.0);
    let (_, out) = run(&a.text(), &[("x", &xv), ("s", &sv)]);
    let imm: Vec<f32> = xv
        .iter()
        .map(|&x| round(Dtype::Bf16, alu(AluOp::Add, alu(AluOp::Mul, x, 2.5), -1.0)))
        .collect();
    assert_bits_eq(&out.read("imm").unwrap(), &imm, "imm");
    let ap: Vec<f32> = (0..p * f)
        .map(|i| alu(AluOp::RDiv, alu(AluOp::Sub, xv[i], sv[i / f]), 1.0))
        .collect();
    assert_bits_eq(&out.read("ap").unwrap(), &ap, "ap");
}

#[test]
fn tensor_reduce_add_max_min() {
    let (p, f) = (64, 64);
    let mut a = Asm::new();
    with_input(&mut a, Dtype::F32, p, f);
    a.inst(
        "vector",
        "wait(s0>=1) tensor_reduce op=add, out=sbuf.f32[0:64, 4096; 4:1], src=sbuf.f32[0:64, 0; 4:16, 16:1] signal(s1)",
    );
    a.inst(
        "vector",
        "wait(s0>=1) tensor_reduce op=max, out=sbuf.bf16[0:64, 8192; 1:1], src=sbuf.f32[0:64, 0; 64:1] signal(s2)",
    );
    a.inst(
        "gpsimd",
        "wait(s0>=1) tensor_reduce op=min, out=sbuf.f32[0:64, 12288; 16:1], src=sbuf.f32[0:64, 0; 16:1, 4:16] signal(s3)",
    );
    with_output(&mut a, "sum", Dtype::F32, p, 4, 4096, 1, 2);
    with_output(&mut a, "max", Dtype::Bf16, p, 1, 8192, 2, 3);
    with_output(&mut a, "min", Dtype::F32, p, 16, 12288, 3, 4);
    let mut xv = Rng::new(5).values(Dtype::F32, p * f, 100.0);
    xv[70] = f32::NAN;
    let (_, out) = run(&a.text(), &[("x", &xv)]);
    let fold = |op: AluOp, it: &mut dyn Iterator<Item = f32>| {
        let first = it.next().unwrap();
        it.fold(first, |acc, v| alu(op, acc, v))
    };
    let sum: Vec<f32> = (0..p * 4)
        .map(|e| fold(AluOp::Add, &mut (0..16).map(|j| xv[e * 16 + j])))
        .collect();
    assert_bits_eq(&out.read("sum").unwrap(), &sum, "sum");
    let max: Vec<f32> = (0..p)
        .map(|r| {
            round(
                Dtype::Bf16,
                fold(AluOp::Max, &mut (0..64).map(|j| xv[r * 64 + j])),
            )
        })
        .collect();
    assert!(max[1].is_nan(), "NaN propagates");
    assert_bits_eq(&out.read("max").unwrap(), &max, "max");
    let min: Vec<f32> = (0..p * 16)
        .map(|e| {
            let (r, c) = (e / 16, e % 16);
            fold(AluOp::Min, &mut (0..4).map(|j| xv[r * 64 + c + 16 * j]))
        })
        .collect();
    assert_bits_eq(&out.read("min").unwrap(), &min, "min");
}

#[test]
fn tensor_reduce_scalar_is_reduce_then_scalar() {
    // A row maximum scaled by -0.125 and capped by a per-partition minimum (attention's
    // running bias), rounded to bf16: the same bits as `tensor_reduce` into f32 followed by
    // `tensor_scalar`, in one instruction costing what the reduction alone costs.
    let (p, f) = (64, 96);
    for engine in ["vector", "gpsimd"] {
        let mut a = Asm::new();
        with_input(&mut a, Dtype::F32, p, f);
        let fused = format!(
            "wait(s0>=1) tensor_reduce_scalar op=max, out=sbuf.bf16[0:64, 8192; 1:1], \
             src=sbuf.f32[0:64, 0; {f}:1], op0=mul, s0=-0.125, op1=min, \
             s1=sbuf.f32[0:64, 0; 1:1] signal(s1)"
        );
        a.inst(engine, fused);
        with_output(&mut a, "fused", Dtype::Bf16, p, 1, 8192, 1, 2);
        let mut xv = Rng::new(11).values(Dtype::F32, p * f, 300.0);
        xv[f + 5] = f32::NAN;
        xv[2 * f + 7] = f32::INFINITY;
        xv[3 * f] = f32::NEG_INFINITY;
        let (report, out) = run(&a.text(), &[("x", &xv)]);
        let want: Vec<f32> = (0..p)
            .map(|r| {
                let row = &xv[r * f..(r + 1) * f];
                let max = row[1..]
                    .iter()
                    .fold(row[0], |acc, &v| alu(AluOp::Max, acc, v));
                round(
                    Dtype::Bf16,
                    alu(AluOp::Min, alu(AluOp::Mul, max, -0.125), row[0]),
                )
            })
            .collect();
        assert!(want[1].is_nan(), "NaN propagates");
        assert_bits_eq(&out.read("fused").unwrap(), &want, engine);
        let (e, per) = match engine {
            "vector" => (isa::Engine::Vector, 1),
            _ => (isa::Engine::GpSimd, 4),
        };
        assert_eq!(
            report.engine(e).busy_cycles,
            64 + per * f as u64,
            "{engine}"
        );
    }
}

#[test]
fn tensor_copy_and_memset_convert() {
    let (p, f) = (32, 40);
    let mut a = Asm::new();
    with_input(&mut a, Dtype::F32, p, f);
    a.inst(
        "vector",
        "wait(s0>=1) tensor_copy out=sbuf.f8e4m3[0:32, 4096; 40:1], src=sbuf.f32[0:32, 0; 40:1]",
    );
    a.inst(
        "vector",
        "tensor_copy out=sbuf.f16[0:32, 8192; 40:1], src=sbuf.f8e4m3[0:32, 4096; 40:1] signal(s1)",
    );
    a.inst(
        "gpsimd",
        "memset out=sbuf.bf16[0:32, 12288; 40:1], value=1.1 signal(s2)",
    );
    with_output(&mut a, "c", Dtype::F16, p, f, 8192, 1, 1);
    with_output(&mut a, "m", Dtype::Bf16, p, f, 12288, 2, 2);
    let xv = Rng::new(6).values(Dtype::F32, p * f, 1000.0);
    let (_, out) = run(&a.text(), &[("x", &xv)]);
    let c: Vec<f32> = xv.iter().map(|&x| round(Dtype::F8E4M3, x)).collect();
    assert!(c.iter().any(|v| v.abs() == 448.0));
    assert_bits_eq(&out.read("c").unwrap(), &c, "copy");
    assert_bits_eq(
        &out.read("m").unwrap(),
        &vec![round(Dtype::Bf16, 1.1); p * f],
        "memset",
    );
}

#[test]
fn activate_with_scale_bias_and_accum() {
    let (p, f) = (128, 96);
    let mut a = Asm::new();
    with_input(&mut a, Dtype::Bf16, p, f);
    let s_off = a.tensor("s", "input", Dtype::F32, &[p]);
    a.inst(
        "dma1",
        format!("dma dst=sbuf.f32[0:{p}, 4096; 1:1], src=hbm.f32[{s_off}; {p}:1, 1:1] signal(s0)"),
    );
    a.inst(
        "scalar",
        "wait(s0>=2) activate out=sbuf.bf16[0:128, 8192; 96:1], src=sbuf.bf16[0:128, 0; 96:1], func=exp, scale=sbuf.f32[0:128, 4096; 1:1], bias=0.5, accum=sbuf.f32[0:128, 4100; 1:1] signal(s1)",
    );
    a.inst(
        "scalar",
        "activate out=sbuf.f32[0:128, 12288; 96:1], src=sbuf.bf16[0:128, 0; 96:1], func=gelu, scale=1.5, bias=sbuf.f32[0:128, 4096; 1:1], accum=none signal(s2)",
    );
    with_output(&mut a, "e", Dtype::Bf16, p, f, 8192, 1, 2);
    with_output(&mut a, "acc", Dtype::F32, p, 1, 4100, 1, 3);
    with_output(&mut a, "g", Dtype::F32, p, f, 12288, 2, 4);
    let mut rng = Rng::new(7);
    let xv = rng.values(Dtype::Bf16, p * f, 2.0);
    let sv = rng.values(Dtype::F32, p, 1.0);
    let (_, out) = run(&a.text(), &[("x", &xv), ("s", &sv)]);
    let e32: Vec<f32> = (0..p * f)
        .map(|i| act(ActFunc::Exp, xv[i] * sv[i / f] + 0.5))
        .collect();
    let e: Vec<f32> = e32.iter().map(|&v| round(Dtype::Bf16, v)).collect();
    assert_bits_eq(&out.read("e").unwrap(), &e, "exp");
    let acc: Vec<f32> = (0..p)
        .map(|r| {
            let row = &e32[r * f..(r + 1) * f];
            row[1..].iter().fold(row[0], |s, &v| s + v)
        })
        .collect();
    assert_bits_eq(&out.read("acc").unwrap(), &acc, "accum");
    let g: Vec<f32> = (0..p * f)
        .map(|i| act(ActFunc::Gelu, xv[i] * 1.5 + sv[i / f]))
        .collect();
    assert_bits_eq(&out.read("g").unwrap(), &g, "gelu");
}

#[test]
fn iota_exact_and_rounded() {
    let mut a = Asm::new();
    a.inst(
        "gpsimd",
        "iota out=sbuf.f32[0:128, 0; 2:8, 8:1], expr=affine(base=-5, p=3, i=[100, -1]) signal(s0)",
    );
    a.inst(
        "gpsimd",
        "iota out=sbuf.bf16[0:32, 1024; 4:1], expr=affine(base=257, p=1000, i=[1]) signal(s1)",
    );
    with_output(&mut a, "f", Dtype::F32, 128, 16, 0, 0, 0);
    with_output(&mut a, "b", Dtype::Bf16, 32, 4, 1024, 1, 1);
    let (_, out) = run(&a.text(), &[]);
    let f: Vec<f32> = (0..128 * 16)
        .map(|e| {
            let (p, i, j) = (e / 16, (e % 16) / 8, e % 8);
            (-5 + 3 * p as i64 + 100 * i as i64 - j as i64) as f32
        })
        .collect();
    assert_bits_eq(&out.read("f").unwrap(), &f, "iota f32");
    let b: Vec<f32> = (0..32 * 4)
        .map(|e| round(Dtype::Bf16, (257 + 1000 * (e / 4) + e % 4) as f32))
        .collect();
    assert_eq!(b[0], 256.0, "257 rounds to even in bf16");
    assert_bits_eq(&out.read("b").unwrap(), &b, "iota bf16");
}

#[test]
fn affine_select_causal_mask() {
    let n = 128;
    let mut a = Asm::new();
    with_input(&mut a, Dtype::F32, n, n);
    a.inst(
        "gpsimd",
        "wait(s0>=1) affine_select out=sbuf.f32[0:128, 1024; 128:1], src=sbuf.f32[0:128, 0; 128:1], cmp=ge, expr=affine(base=0, p=1, i=[-1]), fill=-inf signal(s1)",
    );
    with_output(&mut a, "y", Dtype::F32, n, n, 1024, 1, 1);
    let xv = Rng::new(8).values(Dtype::F32, n * n, 1.0);
    let (_, out) = run(&a.text(), &[("x", &xv)]);
    let want: Vec<f32> = (0..n * n)
        .map(|e| {
            if e % n <= e / n {
                xv[e]
            } else {
                f32::NEG_INFINITY
            }
        })
        .collect();
    assert_bits_eq(&out.read("y").unwrap(), &want, "mask");
}

/// A program loaded from its `.tbin` bytes runs like the `Program` itself.
#[test]
fn load_from_tbin_bytes() {
    let mut a = Asm::new();
    with_input(&mut a, Dtype::F32, 4, 4);
    a.inst(
        "scalar",
        "wait(s0>=1) activate out=sbuf.f32[0:4, 64; 4:1], src=sbuf.f32[0:4, 0; 4:1], func=square, scale=1.0, bias=0.0, accum=none signal(s1)",
    );
    with_output(&mut a, "y", Dtype::F32, 4, 4, 64, 1, 1);
    let bytes = isa::encode_program(&asm(&a.text()));
    let mut loaded = runtime::Machine::new(config()).load(&bytes).unwrap();
    let xv: Vec<f32> = (0..16).map(|i| i as f32 - 8.0).collect();
    loaded.bind("x", &xv).unwrap();
    loaded.run().unwrap();
    let want: Vec<f32> = xv.iter().map(|x| x * x).collect();
    assert_bits_eq(&loaded.read("y").unwrap(), &want, "square");
}

/// `tensor_scan` over two chunks of 32 chained by `carry` (the second chunk starts from the
/// first's last running values) gives the in-order f32 scan of whole rows, bit for bit,
/// with infinities, NaN and -0 in the data; a column-wise scan (the innermost dimension
/// walking down a 2-D pattern) scans each column on its own.
#[test]
fn tensor_scan_chunks_with_carry() {
    let (p, f) = (64, 64);
    let mut a = Asm::new();
    with_input(&mut a, Dtype::F32, p, f);
    a.inst(
        "vector",
        "wait(s0>=1) tensor_scan out=sbuf.f32[0:64, 4096; 32:1], src=sbuf.f32[0:64, 0; 32:1], carry=none",
    );
    a.inst(
        "vector",
        "tensor_scan out=sbuf.f32[0:64, 4224; 32:1], src=sbuf.f32[0:64, 128; 32:1], carry=sbuf.f32[0:64, 4220; 1:1] signal(s1)",
    );
    a.inst(
        "gpsimd",
        "wait(s0>=1) tensor_scan out=sbuf.bf16[0:64, 8192; 8:1, 8:8], src=sbuf.f32[0:64, 0; 8:1, 8:8], carry=none signal(s2)",
    );
    with_output(&mut a, "rows", Dtype::F32, p, f, 4096, 1, 2);
    with_output(&mut a, "cols", Dtype::Bf16, p, f, 8192, 2, 3);
    let mut xv = Rng::new(9).values(Dtype::F32, p * f, 100.0);
    xv[0] = -0.0;
    xv[1] = -0.0;
    xv[64 + 40] = f32::INFINITY;
    xv[128 + 3] = f32::NAN;
    xv[192 + 10] = f32::INFINITY;
    xv[192 + 50] = f32::NEG_INFINITY;
    let (report, out) = run(&a.text(), &[("x", &xv)]);
    let mut rows = vec![0f32; p * f];
    for r in 0..p {
        let mut acc = xv[r * f];
        rows[r * f] = acc;
        for j in 1..f {
            acc += xv[r * f + j];
            rows[r * f + j] = acc;
        }
    }
    assert_eq!(rows[1].to_bits(), (-0.0f32).to_bits(), "-0 + -0 stays -0");
    assert!(rows[3 * 64 + 60].is_nan(), "inf + -inf is NaN");
    // Every NaN reaches memory as the canonical NaN.
    for v in rows.iter_mut().filter(|v| v.is_nan()) {
        *v = f32::NAN;
    }
    assert_bits_eq(&out.read("rows").unwrap(), &rows, "rows");
    // Columns: element (i, c) of each partition's 8 x 8 block is at i * 8 + c.
    let mut cols = vec![0f32; p * f];
    for r in 0..p {
        for c in 0..8 {
            let mut acc = xv[r * f + c];
            cols[r * f + c] = round(Dtype::Bf16, acc);
            for i in 1..8 {
                acc += xv[r * f + i * 8 + c];
                cols[r * f + i * 8 + c] = round(Dtype::Bf16, acc);
            }
        }
    }
    assert_bits_eq(&out.read("cols").unwrap(), &cols, "cols");
    // One input each: 64 + N on Vector, 64 + 4N on GpSimd.
    assert_eq!(
        report.engine(isa::Engine::Vector).busy_cycles,
        2 * (64 + 32)
    );
    assert_eq!(report.engine(isa::Engine::GpSimd).busy_cycles, 64 + 4 * 64);
}

/// `tensor_arg_reduce`: first position on ties, the first NaN wins, -0 equals +0; then
/// the per-chunk winners combined through `positions` (exact i32) give the row's winner.
#[test]
fn tensor_arg_reduce_first_position_and_combine() {
    let (p, f) = (8, 64);
    let mut a = Asm::new();
    with_input(&mut a, Dtype::F32, p, f);
    // Chunks of 16: value and position per chunk.
    a.inst(
        "vector",
        "wait(s0>=1) tensor_arg_reduce op=max, out=sbuf.f32[0:8, 4096; 4:1], index=sbuf.i32[0:8, 4352; 4:1], src=sbuf.f32[0:8, 0; 4:16, 16:1], positions=none",
    );
    // Positions of the chunk winners in the whole row: chunk c adds 16 c (integers).
    a.inst("gpsimd", "wait(s0>=1) iota out=sbuf.i32[0:8, 4608; 4:1], expr=affine(base=0, p=0, i=[16]) signal(s4)");
    a.inst(
        "vector",
        "wait(s4>=1) tensor_tensor op=add, out=sbuf.i32[0:8, 4864; 4:1], a=sbuf.i32[0:8, 4352; 4:1], b=sbuf.i32[0:8, 4608; 4:1]",
    );
    a.inst(
        "vector",
        "tensor_arg_reduce op=max, out=sbuf.f32[0:8, 5120; 1:1], index=sbuf.i32[0:8, 5376; 1:1], src=sbuf.f32[0:8, 4096; 4:1], positions=sbuf.i32[0:8, 4864; 4:1] signal(s1)",
    );
    a.inst(
        "vector",
        "wait(s0>=1) tensor_arg_reduce op=min, out=sbuf.bf16[0:8, 6144; 1:1], index=sbuf.i32[0:8, 6400; 1:1], src=sbuf.f32[0:8, 0; 64:1], positions=none signal(s2)",
    );
    with_output(&mut a, "imax", Dtype::I32, p, 1, 5376, 1, 2);
    with_output(&mut a, "vmax", Dtype::F32, p, 1, 5120, 1, 3);
    with_output(&mut a, "imin", Dtype::I32, p, 1, 6400, 2, 4);
    let mut xv = Rng::new(3).values(Dtype::F32, p * f, 100.0);
    // Row 0: a tie of the maximum in chunks 1 and 3 (the first wins).
    xv[20] = 500.0;
    xv[50] = 500.0;
    // Row 1: NaN after the maximum, and a second NaN (the first wins, for min too).
    xv[64 + 5] = 900.0;
    xv[64 + 40] = f32::NAN;
    xv[64 + 60] = f32::NAN;
    // Row 2: -0 before +0 as the maximum (equal: the first wins).
    for j in 0..64 {
        xv[128 + j] = -1.0 - j as f32;
    }
    xv[128 + 30] = -0.0;
    xv[128 + 31] = 0.0;
    // Row 3: -inf is the minimum, twice.
    xv[192 + 7] = f32::NEG_INFINITY;
    xv[192 + 9] = f32::NEG_INFINITY;
    let (_, out) = run(&a.text(), &[("x", &xv)]);
    let ints = |name: &str| -> Vec<i32> {
        out.read_bytes(name)
            .unwrap()
            .chunks_exact(4)
            .map(|b| i32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect()
    };
    let best = |max: bool, r: usize| -> i32 {
        let row = &xv[r * f..(r + 1) * f];
        let mut b = 0;
        for j in 0..f {
            if row[j].is_nan() {
                return j as i32;
            }
            if (max && row[j] > row[b]) || (!max && row[j] < row[b]) {
                b = j;
            }
        }
        b as i32
    };
    let imax = ints("imax");
    assert_eq!(&imax[..4], &[20, 40, 30, imax[3]]);
    assert_eq!(imax, (0..p).map(|r| best(true, r)).collect::<Vec<_>>());
    let imin = ints("imin");
    assert_eq!(imin[1], 40);
    assert_eq!(imin[3], 7);
    assert_eq!(imin, (0..p).map(|r| best(false, r)).collect::<Vec<_>>());
    let vmax = out.read("vmax").unwrap();
    assert_eq!(vmax[0], 500.0);
    assert!(vmax[1].is_nan());
}

/// The integer datapath (ISA.md): with an `i32` input, Vector and GpSimd compute in 32-bit
/// two's complement, never through f32: wrapping `add`/`mul`, exact `max`, comparisons and
/// the bitwise ops, `i32:N` immediates, a wrapping row sum with a scalar epilogue, an
/// exact `partition_transpose`, `iota` into `i32`, and conversions of `i32` to bf16 by DMA
/// and by `tensor_copy`, rounded once from the exact integer.
/// Assembles `a`, binds `xs` as the `i32` input `x` and runs it.
fn run_ints(a: &Asm, xs: &[i32]) -> runtime::Loaded {
    let mut loaded = runtime::Machine::new(config())
        .load_program(asm(&a.text()))
        .unwrap();
    let bytes: Vec<u8> = xs.iter().flat_map(|v| v.to_le_bytes()).collect();
    loaded.bind_bytes("x", &bytes).unwrap();
    loaded.run().unwrap();
    loaded
}

/// The `i32` output `name` of a run.
fn read_ints(loaded: &runtime::Loaded, name: &str) -> Vec<i32> {
    loaded
        .read_bytes(name)
        .unwrap()
        .chunks_exact(4)
        .map(|c| i32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect()
}

#[test]
fn integer_datapath_is_exact() {
    let (p, f) = (4usize, 8usize);
    let mut a = Asm::new();
    let x = a.tensor("x", "input", Dtype::I32, &[p, f]);
    let outs: Vec<(usize, &str, Dtype, [usize; 2])> = [
        ("sum", Dtype::I32, [p, f]),
        ("prod", Dtype::I32, [p, f]),
        ("bits", Dtype::I32, [p, f]),
        ("lt", Dtype::Bool, [p, f]),
        ("rows", Dtype::I32, [p, 1]),
        ("tr", Dtype::I32, [f, p]),
        ("io", Dtype::I32, [p, f]),
        ("bf", Dtype::Bf16, [p, f]),
        ("bfd", Dtype::Bf16, [p, f]),
    ]
    .iter()
    .map(|&(n, d, s)| (a.tensor(n, "output", d, &s), n, d, s))
    .collect();
    a.inst(
        "dma0",
        format!("dma dst=sbuf.i32[0:4, 0; 8:1], src=hbm.i32[{x}; 4:8, 8:1] signal(s0)"),
    );
    let v = |op: &str| format!("wait(s0>=1) {op} signal(s1)");
    a.inst("vector", v("tensor_scalar out=sbuf.i32[0:4, 64; 8:1], src=sbuf.i32[0:4, 0; 8:1], op0=add, s0=i32:2147483647, op1=max, s1=i32:-5"));
    a.inst("vector", v("tensor_tensor op=mul, out=sbuf.i32[0:4, 128; 8:1], a=sbuf.i32[0:4, 0; 8:1], b=sbuf.i32[0:4, 0; 8:1]"));
    a.inst("vector", v("tensor_scalar out=sbuf.i32[0:4, 192; 8:1], src=sbuf.i32[0:4, 0; 8:1], op0=bit_and, s0=i32:255, op1=bit_xor, s1=i32:-1"));
    a.inst("vector", v("tensor_tensor op=is_lt, out=sbuf.bool[0:4, 256; 8:1], a=sbuf.i32[0:4, 0; 8:1], b=sbuf.i32[0:4, 128; 8:1]"));
    a.inst("vector", v("tensor_reduce_scalar op=add, out=sbuf.i32[0:4, 288; 1:1], src=sbuf.i32[0:4, 0; 8:1], op0=mul, s0=i32:3, op1=bypass, s1=0.0"));
    a.inst(
        "vector",
        v("tensor_copy out=sbuf.bf16[0:4, 320; 8:1], src=sbuf.i32[0:4, 0; 8:1]"),
    );
    a.inst(
        "gpsimd",
        v("partition_transpose out=sbuf.i32[0:8, 384; 4:1], src=sbuf.i32[0:4, 0; 8:1]"),
    );
    a.inst(
        "gpsimd",
        "iota out=sbuf.i32[0:4, 448; 8:1], expr=affine(base=-2147483000, p=100, i=[7]) signal(s1)",
    );
    for (k, (off, name, d, [r, c])) in outs.iter().enumerate() {
        let dn = d.name();
        let sb = [64, 128, 192, 256, 288, 384, 448, 0, 320][k];
        let (src_d, parts, free) = match *name {
            "tr" => ("i32", 8, 4),
            "bf" => ("i32", 4, 8),
            _ => (dn, *r, *c),
        };
        let _ = (r, c);
        a.inst(
            &format!("dma{}", 1 + k),
            format!("wait(s1>=8) dma dst=hbm.{dn}[{off}; {parts}:{free}, {free}:1], src=sbuf.{src_d}[0:{parts}, {sb}; {free}:1]"),
        );
    }
    let xs: Vec<i32> = (0..(p * f) as i32)
        .map(|i| {
            [
                i32::MAX,
                i32::MIN,
                16_777_217,
                -16_777_217,
                0x0101_0001,
                -3,
                0,
                1_000_000_007,
            ][i as usize % 8]
                ^ ((i / 8) << 1)
        })
        .collect();
    let loaded = run_ints(&a, &xs);
    let ints = |name: &str| read_ints(&loaded, name);
    let sum: Vec<i32> = xs
        .iter()
        .map(|&v| v.wrapping_add(i32::MAX).max(-5))
        .collect();
    assert_eq!(ints("sum"), sum);
    let prod: Vec<i32> = xs.iter().map(|&v| v.wrapping_mul(v)).collect();
    assert_eq!(ints("prod"), prod);
    let bits: Vec<i32> = xs.iter().map(|&v| !(v & 255)).collect();
    assert_eq!(ints("bits"), bits);
    let lt: Vec<u8> = xs
        .iter()
        .map(|&v| u8::from(v < v.wrapping_mul(v)))
        .collect();
    assert_eq!(loaded.read_bytes("lt").unwrap(), lt.as_slice());
    let rows: Vec<i32> = xs
        .chunks(f)
        .map(|r| {
            r.iter()
                .fold(0i32, |s, &v| s.wrapping_add(v))
                .wrapping_mul(3)
        })
        .collect();
    assert_eq!(ints("rows"), rows);
    let tr: Vec<i32> = (0..f * p).map(|e| xs[(e % p) * f + e / p]).collect();
    assert_eq!(ints("tr"), tr);
    let io: Vec<i32> = (0..p * f)
        .map(|e| -2147483000 + 100 * (e / f) as i32 + 7 * (e % f) as i32)
        .collect();
    assert_eq!(ints("io"), io);
    let bf: Vec<f32> = xs
        .iter()
        .map(|&v| runtime::numeric::round_f64(Dtype::Bf16, f64::from(v)))
        .collect();
    assert_bits_eq(&loaded.read("bf").unwrap(), &bf, "bf (dma)");
    assert_bits_eq(&loaded.read("bfd").unwrap(), &bf, "bfd (tensor_copy)");
    // Rounded once: 2^24 + 2^16 + 1 is above the midpoint of two bf16 values, but through
    // f32 it would become the midpoint 2^24 + 2^16 and round down to even.
    assert_eq!(xs[4], 0x0101_0001);
    assert_eq!(loaded.read("bf").unwrap()[4], 16_908_288.0);
    assert_eq!(
        runtime::numeric::round(Dtype::Bf16, xs[4] as f32),
        16_777_216.0
    );
}

/// `tensor_scan` and `tensor_arg_reduce` of `i32` tiles on the integer datapath: a scan in
/// two chunks chained by an `i32` carry wraps around exactly, and the arg-reductions (per
/// chunk, combined through `positions`, and over whole rows on GpSimd) compare integers that
/// f32 could not tell apart (near 2^31 and -2^31, differing by 1), the first of equal values
/// winning, with the winning values written as exact `i32`.
#[test]
fn integer_scan_and_arg_reduce_are_exact() {
    let (p, f) = (4usize, 64usize);
    let mut a = Asm::new();
    with_input(&mut a, Dtype::I32, p, f);
    a.inst(
        "vector",
        "wait(s0>=1) tensor_scan out=sbuf.i32[0:4, 1024; 32:1], src=sbuf.i32[0:4, 0; 32:1], carry=none",
    );
    a.inst(
        "vector",
        "tensor_scan out=sbuf.i32[0:4, 1152; 32:1], src=sbuf.i32[0:4, 128; 32:1], carry=sbuf.i32[0:4, 1148; 1:1] signal(s1)",
    );
    a.inst(
        "vector",
        "tensor_arg_reduce op=max, out=sbuf.i32[0:4, 2048; 4:1], index=sbuf.i32[0:4, 2304; 4:1], src=sbuf.i32[0:4, 0; 4:16, 16:1], positions=none",
    );
    a.inst(
        "gpsimd",
        "iota out=sbuf.i32[0:4, 2560; 4:1], expr=affine(base=0, p=0, i=[16]) signal(s4)",
    );
    a.inst(
        "vector",
        "wait(s4>=1) tensor_tensor op=add, out=sbuf.i32[0:4, 2816; 4:1], a=sbuf.i32[0:4, 2304; 4:1], b=sbuf.i32[0:4, 2560; 4:1]",
    );
    a.inst(
        "vector",
        "tensor_arg_reduce op=max, out=sbuf.i32[0:4, 3072; 1:1], index=sbuf.i32[0:4, 3328; 1:1], src=sbuf.i32[0:4, 2048; 4:1], positions=sbuf.i32[0:4, 2816; 4:1] signal(s2)",
    );
    a.inst(
        "gpsimd",
        "wait(s0>=1) tensor_arg_reduce op=min, out=sbuf.i32[0:4, 3584; 1:1], index=sbuf.i32[0:4, 3840; 1:1], src=sbuf.i32[0:4, 0; 64:1], positions=none signal(s3)",
    );
    with_output(&mut a, "scan", Dtype::I32, p, f, 1024, 1, 1);
    with_output(&mut a, "imax", Dtype::I32, p, 1, 3328, 2, 2);
    with_output(&mut a, "vmax", Dtype::I32, p, 1, 3072, 2, 3);
    with_output(&mut a, "imin", Dtype::I32, p, 1, 3840, 3, 4);
    with_output(&mut a, "vmin", Dtype::I32, p, 1, 3584, 3, 5);
    // Rows 0-2 just below 2^31 (ties every 13 elements), row 3 just above -2^31.
    let xs: Vec<i32> = (0..p * f)
        .map(|e| {
            let (r, j) = (e / f, e % f);
            let d = ((j * 7 + r) % 13) as i32;
            if r < 3 {
                i32::MAX - d
            } else {
                i32::MIN + d
            }
        })
        .collect();
    let loaded = run_ints(&a, &xs);
    let ints = |name: &str| read_ints(&loaded, name);
    let mut scan = xs.clone();
    for row in scan.chunks_exact_mut(f) {
        for j in 1..f {
            row[j] = row[j - 1].wrapping_add(row[j]);
        }
    }
    assert_eq!(ints("scan"), scan);
    let best = |max: bool, r: usize| -> usize {
        let row = &xs[r * f..(r + 1) * f];
        let mut b = 0;
        for j in 1..f {
            if (max && row[j] > row[b]) || (!max && row[j] < row[b]) {
                b = j;
            }
        }
        b
    };
    let imax: Vec<i32> = (0..p).map(|r| best(true, r) as i32).collect();
    let imin: Vec<i32> = (0..p).map(|r| best(false, r) as i32).collect();
    // Row 0's maximum is at j = 0 and again at 13 (the first wins), its minimum first at
    // 7 j = 12 (mod 13), j = 11; f32 would see every element of rows 0-2 as 2^31 and
    // pick 0 for both reductions.
    assert_eq!((imax[0], imin[0]), (0, 11));
    assert_eq!(ints("imax"), imax);
    assert_eq!(ints("imin"), imin);
    let vals = |pick: &[i32]| -> Vec<i32> {
        pick.iter()
            .enumerate()
            .map(|(r, &j)| xs[r * f + j as usize])
            .collect()
    };
    assert_eq!(ints("vmax"), vals(&imax));
    assert_eq!(ints("vmin"), vals(&imin));
}

/// The verifier keeps the datapaths apart: a float input beside an `i32` one, `div` on
/// integers, a bitwise op on floats, and `i32` tiles on the Scalar and Tensor engines are
/// errors.
#[test]
fn integer_datapath_rules_are_verified() {
    for (stream, inst, needle) in [
        ("vector", "tensor_tensor op=add, out=sbuf.i32[0:4, 0; 8:1], a=sbuf.i32[0:4, 0; 8:1], b=sbuf.f32[0:4, 64; 8:1]", "on the integer datapath"),
        ("vector", "tensor_scalar out=sbuf.i32[0:4, 0; 8:1], src=sbuf.i32[0:4, 0; 8:1], op0=div, s0=i32:2, op1=bypass, s1=0.0", "`div` does not exist on the integer datapath"),
        ("gpsimd", "tensor_tensor op=bit_or, out=sbuf.f32[0:4, 0; 8:1], a=sbuf.f32[0:4, 0; 8:1], b=sbuf.f32[0:4, 64; 8:1]", "`bit_or` exists only on the integer datapath"),
        ("scalar", "activate out=sbuf.i32[0:4, 0; 8:1], src=sbuf.i32[0:4, 0; 8:1], func=identity, scale=1.0, bias=0.0, accum=none", "Scalar engine has no integer datapath"),
    ] {
        let text = format!(".preset default\n.hbm 1024\n\n.stream {stream}\n    {inst}\n    end\n");
        let program = asm(&text);
        let errors = isa::verify(&program).expect_err(inst);
        let all: Vec<String> = errors.iter().map(|e| e.to_string()).collect();
        assert!(all.iter().any(|e| e.contains(needle)), "{inst}: {all:?}");
    }
}
