//! The `layout` and `engines` passes: what they decide and that they change no result bit.
//!
//! - layout: matmul chains run swapped (fewer Tensor-engine transposes; the MLP 5% faster,
//!   no kernel more than 2% slower) and
//!   give outputs bit-identical to the normal orientation (the same products summed in the
//!   same order); kernels where a swap cannot pay keep the normal orientation.
//! - engines: with the pass off every instruction is on its canonical engine; with it on,
//!   column work is on GpSimd, some Vector work is on Scalar, and outputs are bit-identical;
//!   the two halves of a PSUM bank's copy run on Vector and Scalar side by side and their
//!   stores go to distinct DMA queues.
//! - each Vector instruction that the pass may rewrite for the Scalar engine gives the same
//!   bits on special values (signed zeros, infinities, NaN, subnormals, values that
//!   overflow the output dtype) in both forms, run on the interpreter.

mod common;
#[path = "tile/common.rs"]
mod tile_common;

use isa::{
    ActFunc, AluOp, DmaAp, Dtype, Engine, HbmAp, Mem, Op, ReduceOp, Role, ScalarArg, TileAp,
};
use tessera::driver::{self, CompileOptions, Source};
use tessera::frontend::typed::Span;
use tessera::passes::engines::scalar_form;
use tessera::passes::PassOptions;
use tessera::tile::TileFunc;

/// Compiles `text` with the named passes disabled.
fn compile(text: &str, disabled: &[&str]) -> isa::Program {
    let source = Source {
        name: "test.tsr".to_string(),
        text: text.to_string(),
    };
    let options = CompileOptions {
        passes: PassOptions {
            disabled: disabled.iter().map(|s| s.to_string()).collect(),
            ..PassOptions::default()
        },
        ..CompileOptions::default()
    };
    let c = driver::compile(&source, &options, &mut String::new())
        .unwrap_or_else(|e| panic!("compile failed: {e}\n{text}"));
    driver::program_of(&c).expect("a program").clone()
}

/// Runs `program` on inputs of seed 3; returns the outputs' bits and the cycle count.
fn run(program: &isa::Program) -> (Vec<Vec<u32>>, u64) {
    let params = driver::program_params(program);
    let inputs: Vec<_> = params
        .iter()
        .enumerate()
        .map(|(i, p)| driver::random_tensor(p, 3, i as u64))
        .collect();
    let (outputs, report) = driver::execute(program, &params, &inputs).expect("the run");
    let bits = outputs
        .iter()
        .map(|t| t.data.iter().map(|x| x.to_bits()).collect())
        .collect();
    (bits, report.total_cycles)
}

/// Counts the instructions of `program` that satisfy `pred`.
fn count(program: &isa::Program, pred: impl Fn(&isa::Inst, Engine) -> bool) -> usize {
    program
        .streams
        .iter()
        .enumerate()
        .map(|(s, insts)| {
            let engine = Engine::from_index(s).expect("a stream index");
            insts.iter().filter(|i| pred(i, engine)).count()
        })
        .sum()
}

fn transposes(program: &isa::Program) -> usize {
    count(program, |i, _| matches!(i.op, Op::Transpose { .. }))
}

const MLP: &str = "kernel mlp<M = 384, D = 256, H = 640>(x: bf16[M, D], w1: bf16[D, H], b1: f32[H], w2: bf16[H, D], b2: f32[D]) -> f32[M, D] {
    let h = gelu_tanh(x @ w1 + b1) as bf16;
    return h @ w2 + b2;
}";

#[test]
fn swapped_matmul_chains_need_fewer_transposes_and_keep_every_bit() {
    let kernels = [
        MLP.to_string(),
        // Odd sizes, a batch axis and a SwiGLU gate (two swapped groups feeding one).
        "kernel odd<M = 200, D = 130, H = 300>(x: bf16[2, M, D], w1: bf16[D, H], w3: bf16[D, H], w2: bf16[H, D]) -> f32[2, M, D] {
            let gate = silu(x @ w1);
            let hidden = (gate * (x @ w3)) as bf16;
            return hidden @ w2;
        }"
        .to_string(),
        // Three layers: the middle one is swapped on both sides.
        "kernel deep<M = 256, D = 128>(x: bf16[M, D], w1: bf16[D, D], w2: bf16[D, D], w3: bf16[D, D]) -> f32[M, D] {
            let h1 = relu(x @ w1) as bf16;
            let h2 = relu(h1 @ w2) as bf16;
            return h2 @ w3;
        }"
        .to_string(),
    ];
    let mut cycles = Vec::new();
    for text in &kernels {
        let on = compile(text, &[]);
        let off = compile(text, &["layout"]);
        let (bits_on, cycles_on) = run(&on);
        let (bits_off, cycles_off) = run(&off);
        assert_eq!(
            bits_on, bits_off,
            "outputs differ with and without layout:\n{text}"
        );
        assert!(
            transposes(&on) < transposes(&off),
            "layout saved no transpose ({} vs {}):\n{text}",
            transposes(&on),
            transposes(&off)
        );
        eprintln!("{cycles_on} cycles with layout, {cycles_off} without");
        // The saving is the consumer's transposes; where the Tensor engine is not the
        // bottleneck (the small SwiGLU) the schedule may shift by a little either way.
        assert!(
            cycles_on * 100 <= cycles_off * 102,
            "layout made it slower ({cycles_on} vs {cycles_off} cycles):\n{text}"
        );
        cycles.push((cycles_on, cycles_off));
    }
    // The two-layer MLP, where the Tensor engine is the bottleneck, gains at least 5%.
    // (It gained 12% when the normal orientation's first M chunks waited for their B
    // tiles; the staged first group of `tiling/matmul.rs` took the unswapped kernel from
    // 25,158 to 22,980 cycles and the swapped one from 22,050 to 21,603, so the layout
    // pass's share of the gain is now 6%.)
    let (on, off) = cycles[0];
    assert!(
        on * 20 <= off * 19,
        "the MLP gained too little: {on} vs {off} cycles"
    );
}

/// A random chain of two or three linear layers: sizes 1..300 (M at least 128 so that a
/// swap is possible), an optional batch axis, operand dtypes bf16, f16, f32 or f8e4m3,
/// optional biases (along the output features, or full-size from an input), activations,
/// and casts between layers.
fn random_chain(seed: u64) -> String {
    let mut rng = common::kernel_gen::Rng::new(seed);
    let dt = rng.pick(&["bf16", "f16", "f32", "f8e4m3"]);
    let batch = if rng.chance(0.25) { "2, " } else { "" };
    let m = rng.range(128, 300);
    let layers = rng.range(2, 3) as usize;
    let dims: Vec<u64> = (0..=layers).map(|_| rng.range(1, 300)).collect();
    let mut params = vec![format!("x: {dt}[{batch}{m}, {}]", dims[0])];
    let mut body = String::new();
    let mut cur = "x".to_string();
    for l in 0..layers {
        params.push(format!("w{l}: {dt}[{}, {}]", dims[l], dims[l + 1]));
        let mut e = format!("{cur} @ w{l}");
        match rng.below(3) {
            0 => {
                params.push(format!("b{l}: f32[{}]", dims[l + 1]));
                e = format!("({e} + b{l})");
            }
            1 if rng.chance(0.3) => {
                params.push(format!("r{l}: f32[{batch}{m}, {}]", dims[l + 1]));
                e = format!("({e} + r{l})");
            }
            _ => {}
        }
        let act = rng.pick(&["relu", "gelu_tanh", "silu", "tanh", ""]);
        if !act.is_empty() {
            e = format!("{act}({e})");
        }
        if l + 1 < layers {
            body.push_str(&format!("    let h{l} = ({e}) as {dt};\n"));
            cur = format!("h{l}");
        } else {
            body.push_str(&format!("    return {e};\n"));
        }
    }
    format!(
        "kernel chain({}) -> f32[{batch}{m}, {}] {{\n{body}}}\n",
        params.join(", "),
        dims[layers]
    )
}

#[test]
fn random_matmul_chains_keep_every_bit_with_layout() {
    let mut swapped = 0;
    for seed in 0..16 {
        let text = random_chain(seed);
        swapped += swapped_matmuls(&text);
        let on = compile(&text, &[]);
        let off = compile(&text, &["layout"]);
        assert_eq!(
            run(&on).0,
            run(&off).0,
            "seed {seed}: outputs differ with and without layout:\n{text}"
        );
        let outcome = common::run_case(&text, &PassOptions::default(), seed);
        assert!(
            outcome.is_match(),
            "seed {seed}: {}\n{text}",
            outcome.describe()
        );
    }
    // The generator must reach the swapped orientation often enough to test it.
    assert!(swapped >= 4, "only {swapped} swapped matmuls in 16 chains");
}

/// The number of matmuls the layout pass swaps in `text` (from `--dump-after layout`).
fn swapped_matmuls(text: &str) -> usize {
    let source = Source {
        name: "test.tsr".to_string(),
        text: text.to_string(),
    };
    let mut dumps = String::new();
    let options = CompileOptions {
        dump_after: Some("layout".to_string()),
        ..CompileOptions::default()
    };
    driver::compile(&source, &options, &mut dumps).expect("compiles");
    dumps.lines().filter(|l| l.contains(": swapped (")).count()
}

#[test]
fn the_layout_pass_swaps_only_where_it_pays() {
    let swapped = swapped_matmuls;
    assert_eq!(swapped(MLP), 1);
    // The hidden layer is also a result: its layout is the caller's.
    assert_eq!(
        swapped(
            "kernel k(x: bf16[256, 128], w1: bf16[128, 256], w2: bf16[256, 128]) -> (bf16[256, 256], f32[256, 128]) {
                let h = (x @ w1) as bf16;
                return (h, h @ w2);
            }"
        ),
        0
    );
    // A row group reads the hidden layer.
    assert_eq!(
        swapped(
            "kernel k(x: bf16[256, 128], w1: bf16[128, 256], w2: bf16[256, 128]) -> (f32[256, 1], f32[256, 128]) {
                let h = (x @ w1) as bf16;
                return (max(h, axis=-1, keepdims=true) as f32, h @ w2);
            }"
        ),
        0
    );
    // M below 128: the moving side would be too narrow to keep the Tensor engine busy.
    assert_eq!(
        swapped(
            "kernel k(x: bf16[64, 128], w1: bf16[128, 256], w2: bf16[256, 128]) -> f32[64, 128] {
                return ((x @ w1) as bf16) @ w2;
            }"
        ),
        0
    );
    // A residual input read in full would be read across its grain.
    assert_eq!(
        swapped(
            "kernel k(x: bf16[256, 128], w1: bf16[128, 256], r: f32[256, 256], w2: bf16[256, 128]) -> f32[256, 128] {
                return ((x @ w1 + r) as bf16) @ w2;
            }"
        ),
        0
    );
    // The hidden layer feeds the next matmul as its right operand.
    assert_eq!(
        swapped(
            "kernel k(x: bf16[256, 128], w1: bf16[128, 256], y: bf16[64, 256]) -> f32[64, 256] {
                return y @ transpose((x @ w1) as bf16) @ ((x @ w1) as bf16);
            }"
        ),
        0
    );
}

/// Kernels that exercise every kind of work the `engines` pass moves.
const ENGINE_KERNELS: &[&str] = &[
    "kernel layernorm(x: f32[300, 200], w: f32[200], b: f32[200]) -> f32[300, 200] {
        let mu = mean(x, axis=-1, keepdims=true);
        let c = x - mu;
        let var = mean(square(c), axis=-1, keepdims=true);
        return c * rsqrt(var + 1e-5) * w + b;
    }",
    "kernel softmax(x: bf16[130, 700]) -> bf16[130, 700] {
        let m = max(x, axis=-1, keepdims=true);
        let e = exp(x - m);
        return (e / sum(e, axis=-1, keepdims=true)) as bf16;
    }",
    "kernel linear(x: bf16[200, 300], w: bf16[300, 600], b: f32[600]) -> f8e4m3[200, 600] {
        return gelu_tanh(x @ w + b) as f8e4m3;
    }",
    "kernel mix(x: f32[128, 64], s: f32[128, 1]) -> (f32[128, 64], f32[128, 64], f32[128, 1]) {
        return (2.0 - x * s, x - 3.0, sum(x * x, axis=-1, keepdims=true));
    }",
    "kernel attention(q: bf16[256, 64], k: bf16[256, 64], v: bf16[256, 64]) -> f32[256, 64] {
        let s = (q @ transpose(k)) * 0.125;
        let p = exp(s - max(s, axis=-1, keepdims=true));
        return (p / sum(p, axis=-1, keepdims=true)) as bf16 @ v;
    }",
];

#[test]
fn engine_assignment_moves_work_and_keeps_every_bit() {
    let mut moved_to_scalar = 0;
    let mut on_gpsimd = 0;
    for text in ENGINE_KERNELS {
        let on = compile(text, &[]);
        let off = compile(text, &["engines"]);
        assert_eq!(
            run(&on).0,
            run(&off).0,
            "outputs differ with and without engines:\n{text}"
        );
        // Off: canonical engines only.
        let misplaced = count(&off, |i, e| match &i.op {
            Op::Dma { .. } => e != Engine::Dma(0),
            Op::Activate { .. } => e != Engine::Scalar,
            Op::Iota { .. } | Op::AffineSelect { .. } | Op::PartitionTranspose { .. } => {
                e != Engine::GpSimd
            }
            Op::Matmul { .. } | Op::Transpose { .. } => e != Engine::Tensor,
            Op::Nop {} | Op::End {} => false,
            _ => e != Engine::Vector,
        });
        assert_eq!(
            misplaced, 0,
            "with engines off, work left its canonical engine:\n{text}"
        );
        let identities = |p: &isa::Program| {
            count(p, |i, _| {
                matches!(
                    i.op,
                    Op::Activate {
                        func: ActFunc::Identity,
                        ..
                    }
                )
            })
        };
        moved_to_scalar += identities(&on).saturating_sub(identities(&off));
        on_gpsimd += count(&on, |i, e| {
            e == Engine::GpSimd
                && !matches!(
                    i.op,
                    Op::Iota { .. }
                        | Op::AffineSelect { .. }
                        | Op::PartitionTranspose { .. }
                        | Op::Nop {}
                        | Op::End {}
                )
        });
        let queues: std::collections::BTreeSet<Engine> = (0..on.streams.len())
            .filter_map(Engine::from_index)
            .filter(|e| matches!(e, Engine::Dma(_)))
            .filter(|e| {
                on.streams[e.index()]
                    .iter()
                    .any(|i| matches!(i.op, Op::Dma { .. }))
            })
            .collect();
        assert!(queues.len() > 1, "every DMA stayed on one queue:\n{text}");
    }
    assert!(
        moved_to_scalar > 0,
        "no Vector work moved to the Scalar engine"
    );
    assert!(on_gpsimd > 0, "no column work moved to GpSimd");
}

/// Input values that stress exactness: signed zeros, infinities, NaN, a subnormal, values
/// that overflow bf16 and FP8, and ordinary ones.
const SPECIAL: [f32; 16] = [
    0.0,
    -0.0,
    1.0,
    -1.5,
    f32::INFINITY,
    f32::NEG_INFINITY,
    f32::NAN,
    1.0e-40,
    3.0e38,
    -7.0e5,
    1234.5678,
    0.1,
    -0.0078125,
    65504.0,
    448.0,
    -1.0e-3,
];

/// A function that loads `x` [4, 16] and the columns `s` and `t` [4, 1], runs the Vector
/// op that `make(out, x)` gives (its scalar operands address `s` and `t`), and stores the
/// tile `out` [4, 16] (and, for row sums, the column) to outputs.
fn one_op(out_dtype: Dtype, make: impl Fn(TileAp, TileAp) -> (Op, bool)) -> TileFunc {
    let mut f = TileFunc::new("one_op");
    let span = Span::new(0, 1);
    let x = f.hbm("x", Role::Input, Dtype::F32, &[4, 16]);
    let s = f.hbm("s", Role::Input, Dtype::F32, &[4, 1]);
    let t = f.hbm("t", Role::Input, Dtype::F32, &[4, 1]);
    let y = f.hbm("y", Role::Output, out_dtype, &[4, 16]);
    let tile = |dtype, cols: u32| TileAp::new(Mem::Sbuf, dtype, 0, 4, 0, &[(cols, 1)]);
    let (bx, bs, bt) = (
        f.sbuf(Dtype::F32, 4, 16),
        f.sbuf(Dtype::F32, 4, 1),
        f.sbuf(Dtype::F32, 4, 1),
    );
    for (b, h, cols) in [(bx, x, 16u32), (bs, s, 1), (bt, t, 1)] {
        f.push(
            Op::Dma {
                dst: DmaAp::Tile(tile(Dtype::F32, cols)),
                src: DmaAp::Hbm(HbmAp::new(Dtype::F32, 0, &[(4 * cols as u64, 1)])),
            },
            Engine::Dma(0),
            &[b, h],
            span,
        );
    }
    let (bo, br) = (f.sbuf(out_dtype, 4, 16), f.sbuf(Dtype::F32, 4, 1));
    // The output tile starts as a copy of x, and after a row sum gets x again, so a row sum
    // that writes x over itself (on Scalar) must leave x's values for `y`.
    let copy_x = |f: &mut TileFunc| {
        let (out, src) = (tile(out_dtype, 16), tile(Dtype::F32, 16));
        f.push(Op::TensorCopy { out, src }, Engine::Vector, &[bo, bx], span);
    };
    copy_x(&mut f);
    let (op, reduce) = make(tile(out_dtype, 16), tile(Dtype::F32, 16));
    // The row sum's output exists only for row sums: poison tracking requires every output
    // byte to be written.
    let r = reduce.then(|| f.hbm("r", Role::Output, Dtype::F32, &[4, 1]));
    let bufs: Vec<_> = match &op {
        Op::TensorReduce { .. } => vec![br, bx],
        Op::TensorScalar { s0, s1, .. } => {
            let mut b = vec![bo, bx];
            if matches!(s0, ScalarArg::Ap(_)) {
                b.push(bs);
            }
            if matches!(s1, ScalarArg::Ap(_)) {
                b.push(bt);
            }
            b
        }
        _ => vec![bo, bx],
    };
    f.push(op, Engine::Vector, &bufs, span);
    if reduce {
        copy_x(&mut f);
    }
    let stores = [(Some(y), bo, out_dtype, 16u32), (r, br, Dtype::F32, 1)];
    for (h, b, dtype, cols) in stores {
        let Some(h) = h else {
            continue;
        };
        f.push(
            Op::Dma {
                dst: DmaAp::Hbm(HbmAp::new(dtype, 0, &[(4 * cols as u64, 1)])),
                src: DmaAp::Tile(tile(dtype, cols)),
            },
            Engine::Dma(0),
            &[h, b],
            span,
        );
    }
    f
}

#[test]
fn every_scalar_rewrite_gives_the_same_bits_on_special_values() {
    let x: Vec<f32> = (0..64)
        .map(|i| SPECIAL[i % 16] * if i >= 32 { -1.0 } else { 1.0 })
        .collect();
    let s = [0.5f32, -0.0, f32::INFINITY, 3.0];
    let t = [-0.0f32, 1.0e-40, -2.5, f32::NAN];
    let ts = |op0: AluOp, s0: ScalarArg, op1: AluOp, s1: ScalarArg| {
        move |out: TileAp, src: TileAp| {
            (
                Op::TensorScalar {
                    out,
                    src,
                    op0,
                    s0: s0.clone(),
                    op1,
                    s1: s1.clone(),
                },
                false,
            )
        }
    };
    type Make = Box<dyn Fn(TileAp, TileAp) -> (Op, bool)>;
    let col = || TileAp::new(Mem::Sbuf, Dtype::F32, 0, 4, 0, &[(1, 1)]);
    let single = |op0: AluOp, s0: ScalarArg| -> Make {
        Box::new(ts(op0, s0, AluOp::Bypass, ScalarArg::imm(0.0)))
    };
    let cases: Vec<(&str, Make)> = vec![
        (
            "copy",
            Box::new(|out, src| (Op::TensorCopy { out, src }, false)),
        ),
        ("x * s", single(AluOp::Mul, ScalarArg::Ap(col()))),
        ("x * 3", single(AluOp::Mul, ScalarArg::imm(3.0))),
        ("x + s", single(AluOp::Add, ScalarArg::Ap(col()))),
        ("x + -0", single(AluOp::Add, ScalarArg::imm(-0.0))),
        ("x - 0", single(AluOp::Sub, ScalarArg::imm(0.0))),
        ("x - 2.5", single(AluOp::Sub, ScalarArg::imm(2.5))),
        ("s - x", single(AluOp::RSub, ScalarArg::Ap(col()))),
        ("0 - x", single(AluOp::RSub, ScalarArg::imm(0.0))),
        (
            "x * s + t",
            Box::new(ts(
                AluOp::Mul,
                ScalarArg::Ap(col()),
                AluOp::Add,
                ScalarArg::Ap(col()),
            )),
        ),
        (
            "row sum",
            Box::new(|_, src| {
                let out = TileAp::new(Mem::Sbuf, Dtype::F32, 0, 4, 0, &[(1, 1)]);
                (
                    Op::TensorReduce {
                        op: ReduceOp::Add,
                        out,
                        src,
                    },
                    true,
                )
            }),
        ),
    ];
    let mut rewritten = 0;
    for dtype in [
        Dtype::F32,
        Dtype::Bf16,
        Dtype::F16,
        Dtype::F8E4M3,
        Dtype::F8E5M2,
    ] {
        for (name, make) in &cases {
            let vector = one_op(dtype, make);
            let mut scalar = vector.clone();
            let target = scalar.layout[4];
            let (op, bufs) = scalar_form(&scalar.insts[target])
                .unwrap_or_else(|| panic!("{name}: no Scalar form"));
            let inst = &mut scalar.insts[target];
            inst.op = op;
            inst.bufs = bufs;
            inst.engine = Engine::Scalar;
            rewritten += 1;
            let results: Vec<Vec<Vec<u32>>> = [vector, scalar]
                .into_iter()
                .map(|func| {
                    let c = tile_common::compile(func, false);
                    let program = c.program.as_ref().expect("a program");
                    let config = runtime::MachineConfig {
                        poison: true,
                        ..Default::default()
                    };
                    let r =
                        runtime::run_program(program, &config, &[("x", &x), ("s", &s), ("t", &t)])
                            .unwrap_or_else(|e| panic!("{name} ({dtype}): {e}"));
                    r.outputs
                        .iter()
                        .map(|(_, v)| v.iter().map(|f| f.to_bits()).collect())
                        .collect()
                })
                .collect();
            assert_eq!(
                results[0], results[1],
                "{name} with a {dtype} output: Vector and Scalar forms differ"
            );
        }
    }
    assert_eq!(rewritten, 55);
    // What has no exact Scalar form stays: x - s (a column) and max.
    for make in [
        single(AluOp::Sub, ScalarArg::Ap(col())),
        single(AluOp::Max, ScalarArg::imm(0.0)),
    ] {
        let keep = one_op(Dtype::F32, make);
        assert!(scalar_form(&keep.insts[keep.layout[4]]).is_none());
    }
}

/// Where the Tensor engine is the bottleneck, part of a left operand's transposes go to
/// GpSimd's `partition_transpose` (no PSUM, no copy); the products are the same, so the
/// result equals the reference evaluator's bit for bit (both accumulate in f32 in K order).
#[test]
fn gpsimd_takes_part_of_the_transposes_and_keeps_every_bit() {
    for (dt, m, k, n) in [
        ("bf16", 256, 1024, 512),
        ("f32", 200, 700, 300),
        ("bf16", 130, 1500, 700),
    ] {
        let text = format!(
            "kernel mm(a: {dt}[{m}, {k}], b: {dt}[{k}, {n}]) -> f32[{m}, {n}] {{ return a @ b; }}"
        );
        let program = compile(&text, &[]);
        let on_gpsimd = count(&program, |i, _| {
            matches!(i.op, Op::PartitionTranspose { .. })
        });
        let on_pe = transposes(&program);
        // bf16 keeps part of the transposes on the PE array; f32 (0.5 columns a cycle)
        // gives them all to GpSimd.
        assert!(
            on_gpsimd > 0 && (on_pe > 0 || dt == "f32"),
            "{on_gpsimd} GpSimd and {on_pe} PE transposes:\n{text}"
        );
        // The reference's result, exactly.
        let source = Source {
            name: "mm.tsr".into(),
            text: text.clone(),
        };
        let c = driver::compile(&source, &CompileOptions::default(), &mut String::new())
            .expect("compiles");
        let params = driver::params_of(&c.tensor);
        let inputs: Vec<_> = params
            .iter()
            .enumerate()
            .map(|(i, p)| driver::random_tensor(p, 3, i as u64))
            .collect();
        let want = tessera::reference::evaluate(&c.tensor, &inputs).expect("the reference");
        let (got, _) = driver::execute(&program, &params, &inputs).expect("the run");
        let bits = |t: &[tessera::reference::HostTensor]| -> Vec<Vec<u32>> {
            t.iter()
                .map(|t| t.data.iter().map(|x| x.to_bits()).collect())
                .collect()
        };
        assert_eq!(bits(&got), bits(&want), "{text}");
    }
}

/// Tile IR: a 64-column copy out of PSUM bank `b1` to Vector (it is first, and ties stay
/// there), then the bank's other columns copied in two 32-column halves and stored in two
/// bursts of eight pieces (32 partitions x 16 columns, the last two of each half 8
/// partitions), after a load whose 16 pieces leave queues 0-7 lighter than 8-15.
fn halves_text() -> String {
    let mut insts = vec![
        "vector: tensor_copy out=sbuf.f32[0:104, 0; 64:1], src=psum.f32[0:104, 0; 64:1] {b2, b1}"
            .to_string(),
    ];
    for q in 0..16u32 {
        // 64 bytes (one run) for the first eight pieces, 1,024 for the others.
        let cols = if q < 8 { 16 } else { 256 };
        insts.push(format!(
            "dma0: dma dst=sbuf.f32[{p}:32, {o}; {cols}:1], src=hbm.f32[0; 1:{cols}, {cols}:1] {{b5, b0}}",
            p = (q % 4) * 32,
            o = (q / 4) * 1024,
        ));
    }
    for (h, b) in [(0u32, "b3"), (1, "b4")] {
        insts.push(format!(
            "vector: tensor_copy out=sbuf.f32[0:104, 0; 32:1], src=psum.f32[0:104, {}; 32:1] {{{b}, b1}}",
            64 * 4 + h * 32 * 4
        ));
    }
    for (h, b) in [(0u32, "b3"), (1, "b4")] {
        for (p0, pn) in [(0u32, 32u32), (32, 32), (64, 32), (96, 8)] {
            for c in 0..2u32 {
                insts.push(format!(
                    "dma0: dma dst=hbm.f32[{}; {pn}:64, 16:1], src=sbuf.f32[{p0}:{pn}, {}; 16:1] {{b6, {b}}}",
                    p0 * 64 + h * 32 + c * 16,
                    c * 16 * 4
                ));
            }
        }
    }
    let body: String = insts
        .iter()
        .enumerate()
        .map(|(i, s)| format!("    inst{i} = {s}\n"))
        .collect();
    format!(
        "tile kernel halves {{
    b0 = hbm input x f32[1, 256]
    b1 = psum f32 104x512
    b2 = sbuf f32 104x64
    b3 = sbuf f32 104x32
    b4 = sbuf f32 104x32
    b5 = sbuf f32 128x4096
    b6 = hbm output y f32[104, 64]
{body}}}
"
    )
}

/// The `engines` pass puts the two halves of a bank's copy on Vector and Scalar (by load
/// alone both went to Scalar: the window counts the first copy's work on Vector, not that
/// it is over), and the stores of the two halves to one output are one burst over sixteen
/// distinct queues (as separate bursts, the second half's pieces went to the two lightest
/// queues, which the first half had already used).
#[test]
fn halves_of_a_bank_run_side_by_side_and_their_stores_on_distinct_queues() {
    let mut f = tessera::tile::parse(&halves_text()).unwrap_or_else(|e| panic!("{e}"));
    let cfg = runtime::MachineConfig::default();
    tessera::passes::engines::assign_compute(&mut f, &cfg);
    tessera::passes::engines::balance(&mut f);
    let engines: Vec<Engine> = f.layout.iter().map(|&i| f.insts[i].engine).collect();
    assert_eq!(engines[0], Engine::Vector, "the first copy");
    let halves = [engines[17], engines[18]];
    assert!(
        halves.contains(&Engine::Vector) && halves.contains(&Engine::Scalar),
        "the halves' copies ran on {halves:?}"
    );
    let queues: std::collections::BTreeSet<Engine> = engines[19..].iter().copied().collect();
    assert_eq!(
        queues.len(),
        16,
        "the halves' 16 store pieces went to {:?}",
        &engines[19..]
    );
}
