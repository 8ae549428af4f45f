//! Convolutions by implicit GEMM (`compiler/passes/tiling/conv.rs`): each kernel here is
//! computed with its input resident in SBUF and one matmul per window tap, so it writes
//! only its outputs to HBM (the window matrix the `conv` pass wrote its matmul over is
//! never built), and it matches the reference bit for bit under both policies.

mod common;

use common::{compile_verified as compile, run_seed1};

use tessera::passes::PassOptions;

/// Runs `text` on random inputs under both policies; requires every output element to be
/// the reference's, and returns the bytes written to HBM and the outputs' bytes.
fn run_exact(text: &str) -> Vec<(u64, u64)> {
    let mut out = Vec::new();
    for strict in [false, true] {
        let c = compile(
            text,
            PassOptions {
                strict_dtypes: strict,
                ..PassOptions::default()
            },
        );
        let (report, cmp) = run_seed1(&c);
        for x in &cmp {
            assert!(x.bad == 0 && x.max_abs == 0.0, "strict={strict}: {text}");
        }
        let result_bytes: u64 = c
            .tensor
            .results
            .iter()
            .map(|&r| {
                let t = c.tensor.ty(r);
                t.shape.iter().product::<u64>() * t.dtype.size() as u64
            })
            .sum();
        out.push((report.hbm_write_bytes, result_bytes));
    }
    out
}

/// Asserts that `text` runs exactly and writes nothing but its outputs.
fn implicit(text: &str) {
    for (written, results) in run_exact(text) {
        assert_eq!(written, results, "scratch written to HBM: {text}");
    }
}

#[test]
fn padded_3x3_over_channel_chunks_with_epilogue() {
    implicit(
        "kernel k(x: bf16[2, 130, 9, 7], w: bf16[140, 130, 3, 3], b: f32[140]) -> bf16[2, 140, 9, 7] {\n\
         \x20   let y = conv(x, w, padding=[1, 1]) + reshape(b, [1, 140, 1, 1]);\n\
         \x20   return relu(y) as bf16;\n}\n",
    );
}

#[test]
fn stride_padding_and_dilation() {
    implicit(
        "kernel k(x: f32[2, 5, 11, 9], w: f32[6, 5, 3, 2]) -> f32[2, 6, 5, 5] {\n\
         \x20   return conv(x, w, stride=[2, 2], padding=[1, 2], dilation=[2, 3]);\n}\n",
    );
}

#[test]
fn one_d_over_two_banks() {
    implicit(
        "kernel k(x: bf16[2, 64, 600], w: bf16[32, 64, 4]) -> bf16[2, 32, 603] {\n\
         \x20   return conv(x, w, padding=[3]) as bf16;\n}\n",
    );
}

#[test]
fn strided_pointwise() {
    implicit(
        "kernel k(x: bf16[2, 200, 9, 9], w: bf16[72, 200, 1, 1]) -> f32[2, 72, 5, 5] {\n\
         \x20   return conv(x, w, stride=[2, 2]);\n}\n",
    );
}

#[test]
fn residual_epilogue_of_a_computed_input() {
    // The input is computed (relu), so one scratch tensor holds it: written once.
    for (written, results) in run_exact(
        "kernel k(x: f32[1, 16, 6, 6], w: f32[16, 16, 3, 3], r: f32[1, 16, 6, 6]) -> f32[1, 16, 6, 6] {\n\
         \x20   return relu(conv(relu(x), w, padding=[1, 1]) + r);\n}\n",
    ) {
        assert_eq!(written, 2 * results);
    }
}

#[test]
fn few_channels_take_the_window_tile_in_sbuf() {
    // The 7x7 stem's window over C = 3 channels at stride 1: 49 matmuls with K = 3 per PSUM
    // tile would cost the PE array far more than K = 147 on partitions, and the window
    // matrix three passes through HBM; the window tile built in SBUF
    // (`tiling/conv_im2col.rs`) writes nothing but the output.
    let text = "kernel k(x: bf16[1, 3, 40, 40], w: bf16[64, 3, 7, 7]) -> f32[1, 64, 40, 40] {\n\
                \x20   return conv(x, w, padding=[3, 3]);\n}\n";
    for (written, results) in run_exact(text) {
        assert_eq!(written, results, "only the output goes to HBM");
    }
}

#[test]
fn output_blocks_outermost_with_weights_transposed_on_gpsimd() {
    // Tensor-bound with two blocks of output channels: every image resident, the first
    // block's weights transposed on the PE array and the second's by GpSimd's
    // `partition_transpose` (six images give GpSimd time for it), the last tile in pieces.
    implicit(
        "kernel k(x: bf16[6, 128, 14, 14], w: bf16[256, 128, 3, 3], b: f32[256]) -> bf16[6, 256, 14, 14] {\n\
         \x20   let y = conv(x, w, padding=[1, 1]) + reshape(b, [1, 256, 1, 1]);\n\
         \x20   return relu(y) as bf16;\n}\n",
    );
    let c = compile(
        "kernel k(x: bf16[6, 128, 14, 14], w: bf16[256, 128, 3, 3]) -> f32[6, 256, 14, 14] {\n\
         \x20   return conv(x, w, padding=[1, 1]);\n}\n",
        PassOptions::default(),
    );
    let program = tessera::driver::program_of(&c).unwrap();
    let on_gpsimd = program
        .streams
        .iter()
        .flatten()
        .filter(|i| matches!(i.op, isa::Op::PartitionTranspose { .. }))
        .count();
    assert_eq!(on_gpsimd, 9, "one per tap of the second block");
}

/// The partition counts (`K`) of the matmuls of `text`'s program, in program order.
fn matmul_ks(text: &str) -> Vec<u8> {
    let c = compile(text, PassOptions::default());
    let program = tessera::driver::program_of(&c).unwrap();
    program
        .streams
        .iter()
        .flatten()
        .filter_map(|i| match &i.op {
            isa::Op::Matmul { stationary, .. } => Some(stationary.partitions),
            _ => None,
        })
        .collect()
}

/// Asserts that `text` runs exactly under both policies, writes only its outputs, and
/// computes each PSUM tile with the matmuls `per_tile` (their K, taps packed two to a
/// matmul where K is twice the channels).
fn packed(text: &str, per_tile: &[u8]) {
    implicit(text);
    let ks = matmul_ks(text);
    assert!(
        !ks.is_empty() && ks.len().is_multiple_of(per_tile.len()),
        "{ks:?}: {text}"
    );
    for tile in ks.chunks(per_tile.len()) {
        assert_eq!(tile, per_tile, "{text}");
    }
}

/// A 3x3 convolution with padding 1 of `x: bf16[n, c, h, w]` into `o` channels, with a
/// bias, relu and a cast to bf16 fused (ResNet-50's form).
fn biased_3x3(n: u64, c: u64, o: u64, h: u64, w: u64) -> String {
    format!(
        "kernel k(x: bf16[{n}, {c}, {h}, {w}], w: bf16[{o}, {c}, 3, 3], b: f32[{o}]) -> bf16[{n}, {o}, {h}, {w}] {{\n\
         \x20   let y = conv(x, w, padding=[1, 1]) + reshape(b, [1, {o}, 1, 1]);\n\
         \x20   return relu(y) as bf16;\n}}\n"
    )
}

#[test]
fn taps_packed_for_64_channels_with_epilogue() {
    // Two taps a matmul (K = 128): 5 matmuls a PSUM tile instead of 9, the last tap alone;
    // odd H and W, and fewer output channels than input channels.
    packed(&biased_3x3(2, 64, 40, 9, 7), &[128, 128, 128, 128, 64]);
}

#[test]
fn taps_packed_for_32_channels_without_padding() {
    // C = 32: the second tap's channels on partitions 32..64 (K = 64); more output
    // channels than input channels; three images.
    packed(
        "kernel k(x: bf16[3, 32, 11, 10], w: bf16[70, 32, 3, 3]) -> f32[3, 70, 9, 8] {\n\
         \x20   return conv(x, w);\n}\n",
        &[64, 64, 64, 64, 32],
    );
}

#[test]
fn taps_packed_with_stride_dilation_and_two_output_blocks() {
    // Stride 2 on a small image: a second shifted copy (the pair of taps 2 and 3, across
    // window rows) would cost Vector more than the one matmul a tile it saves, so only
    // taps of one window row are paired (one copy): 6 matmuls a tile.
    packed(
        "kernel k(x: bf16[2, 64, 31, 29], w: bf16[64, 64, 3, 3]) -> bf16[2, 64, 16, 15] {\n\
         \x20   return conv(x, w, stride=[2, 2], padding=[1, 1]) as bf16;\n}\n",
        &[128, 64, 128, 64, 128, 64],
    );
    packed(
        "kernel k(x: f32[2, 32, 13, 11], w: f32[24, 32, 3, 3]) -> f32[2, 24, 11, 9] {\n\
         \x20   return conv(x, w, padding=[1, 1], dilation=[2, 2]);\n}\n",
        &[64, 64, 64, 64, 32],
    );
    packed(&biased_3x3(2, 64, 200, 28, 27), &[128, 128, 128, 128, 64]);
}

#[test]
fn taps_packed_in_one_d_and_in_tall_windows() {
    // A 1-D window of 5 taps: pairs (0, 1), (2, 3) and tap 4 alone, one shifted copy.
    packed(
        "kernel k(x: bf16[2, 64, 300], w: bf16[96, 64, 5]) -> bf16[2, 96, 298] {\n\
         \x20   return conv(x, w, padding=[1]) as bf16;\n}\n",
        &[128, 128, 64],
    );
    // A 5x2 window: every pair within one window row.
    packed(
        "kernel k(x: bf16[1, 32, 20, 19], w: bf16[32, 32, 5, 2]) -> f32[1, 32, 16, 18] {\n\
         \x20   return conv(x, w);\n}\n",
        &[64, 64, 64, 64, 64],
    );
}

#[test]
fn no_packing_where_the_second_half_cannot_start_at_partition_c() {
    // C = 48: a tile of 48 partitions may start at partition 0 or 64 only, so each tap
    // keeps a matmul of its own.
    let text = "kernel k(x: bf16[2, 48, 9, 9], w: bf16[48, 48, 3, 3]) -> bf16[2, 48, 9, 9] {\n\
                \x20   return conv(x, w, padding=[1, 1]) as bf16;\n}\n";
    implicit(text);
    assert!(matmul_ks(text).iter().all(|&k| k == 48));
}

/// The layout positions of the tile IR's matmuls that start an accumulation and of its
/// `relu` activations.
fn starts_and_relus(c: &tessera::passes::Compilation) -> (Vec<usize>, Vec<usize>) {
    let tile = c.tile.as_ref().expect("tile IR");
    let (mut starts, mut relus) = (Vec::new(), Vec::new());
    for (k, &t) in tile.layout.iter().enumerate() {
        match &tile.insts[t].op {
            isa::Op::Matmul {
                accumulate: false, ..
            } => starts.push(k),
            isa::Op::Activate {
                func: isa::ActFunc::Relu,
                ..
            } => relus.push(k),
            _ => {}
        }
    }
    (starts, relus)
}

/// A square `k x k` convolution of `x: dt[n, c, h, w]` into `o` channels (`attrs` after
/// the weights, e.g. `, padding=[1, 1]`, giving `out` positions) with a bias, a residual
/// `r` added, the relu and the cast to bf16: a residual epilogue.
fn residual_conv(
    dt: &str,
    [n, c, h, w]: [u64; 4],
    (o, k): (u64, u64),
    attrs: &str,
    [oh, ow]: [u64; 2],
) -> String {
    format!(
        "kernel k(x: {dt}[{n}, {c}, {h}, {w}], w: {dt}[{o}, {c}, {k}, {k}], b: f32[{o}], r: {dt}[{n}, {o}, {oh}, {ow}]) -> bf16[{n}, {o}, {oh}, {ow}] {{\n\
         \x20   let y = conv(x, w{attrs}) + reshape(b, [1, {o}, 1, 1]);\n\
         \x20   return relu(y + r) as bf16;\n}}\n"
    )
}

#[test]
fn residual_epilogues_of_successive_tiles_overlap() {
    // Bias, residual add and relu with the cast: the epilogue crosses engines, so each
    // tile's last step (the relu) is placed after the next tile's matmuls and first
    // steps, and the results keep the reference's bits under both policies. A 1x1 and a
    // padded 3x3 form, each with several PSUM tiles.
    for text in [
        residual_conv("bf16", [2, 64, 8, 8], (256, 1), "", [8, 8]),
        residual_conv("f32", [3, 16, 6, 5], (40, 3), ", padding=[1, 1]", [6, 5]),
    ] {
        let text = text.as_str();
        run_exact(text);
        let c = compile(text, PassOptions::default());
        let (starts, relus) = starts_and_relus(&c);
        assert!(starts.len() >= 2 && !relus.is_empty(), "{text}");
        assert!(
            relus[0] > starts[1],
            "the first tile's relu at {} is not after the second tile's first matmul at {}: {text}",
            relus[0],
            starts[1]
        );
    }
}

#[test]
fn residual_loads_are_issued_tiles_ahead() {
    // Each tile's epilogue reads its block of the residual `r` from HBM. Those loads move
    // ahead of earlier tiles' matmuls (up to ten tiles), so that their DMA latency and
    // data overlap the earlier tiles' work instead of stalling the residual add; the
    // results keep the reference's bits under both policies. A 1x1 form with two output
    // blocks and a padded 3x3 f32 form with a stride, eight and six PSUM tiles.
    for text in [
        residual_conv("bf16", [4, 64, 8, 8], (256, 1), "", [8, 8]),
        residual_conv(
            "f32",
            [6, 16, 9, 7],
            (40, 3),
            ", stride=[2, 2], padding=[1, 1]",
            [5, 4],
        ),
    ] {
        let text = text.as_str();
        run_exact(text);
        let c = compile(text, PassOptions::default());
        let tile = c.tile.as_ref().expect("tile IR");
        let (starts, _) = starts_and_relus(&c);
        let reads_r = |t: &tessera::tile::TInst| {
            let inst = &tile.insts[*t];
            matches!(inst.op, isa::Op::Dma { .. })
                && inst.bufs.iter().any(|&b| {
                    matches!(&tile.bufs[b].kind, tessera::tile::BufKind::Hbm { name, .. } if name == "r")
                })
        };
        let last_load = tile
            .layout
            .iter()
            .rposition(reads_r)
            .expect("the residual is loaded");
        let after = starts.iter().filter(|&&k| k > last_load).count();
        assert!(
            starts.len() >= 6 && after >= 4,
            "the last residual load precedes {after} of {} tiles' first matmuls: {text}",
            starts.len()
        );
    }
}

/// Whether the matmuls that start a PSUM tile of the second convolution (by source span)
/// begin before the first convolution's last one: the two run image by image.
fn convs_interleaved(c: &tessera::passes::Compilation) -> bool {
    let tile = c.tile.as_ref().expect("tile IR");
    let mut spans = Vec::new();
    let mut first_of = Vec::new();
    let mut last_of = Vec::new();
    for (k, &t) in tile.layout.iter().enumerate() {
        if let isa::Op::Matmul {
            accumulate: false, ..
        } = tile.insts[t].op
        {
            let s = tile.spans[t];
            match spans.iter().position(|&x| x == s) {
                Some(i) => last_of[i] = k,
                None => {
                    spans.push(s);
                    first_of.push(k);
                    last_of.push(k);
                }
            }
        }
    }
    spans.len() >= 2 && first_of[1] < last_of[0]
}

#[test]
fn convolutions_reading_each_other_run_image_by_image() {
    // A bottleneck-like chain (1x1, padded 3x3 over 64 channels with taps packed and
    // images loaded two ahead, 1x1 with a residual): each later convolution runs image by
    // image behind the one it reads. And two more chains (a 3x3 over 32 channels, a 1-D
    // chain in f32). Every result keeps the reference's bits under both policies.
    for (text, chained) in [
        ("kernel k(x: bf16[6, 128, 6, 6], w1: bf16[64, 128, 1, 1], b1: f32[64], w2: bf16[96, 64, 3, 3], w3: bf16[128, 96, 1, 1]) -> bf16[6, 128, 6, 6] {\n\
          \x20   let a = relu(conv(x, w1) + reshape(b1, [1, 64, 1, 1])) as bf16;\n\
          \x20   let b = relu(conv(a, w2, padding=[1, 1])) as bf16;\n\
          \x20   return relu(conv(b, w3) + x) as bf16;\n}\n", true),
        ("kernel k(x: bf16[5, 48, 7, 5], w1: bf16[32, 48, 1, 1], w2: bf16[40, 32, 3, 3]) -> bf16[5, 40, 7, 5] {\n\
          \x20   let a = relu(conv(x, w1)) as bf16;\n\
          \x20   return relu(conv(a, w2, padding=[1, 1])) as bf16;\n}\n", false),
        ("kernel k(x: f32[4, 16, 40], w1: f32[24, 16, 3], w2: f32[16, 24, 1]) -> f32[4, 16, 38] {\n\
          \x20   let a = relu(conv(x, w1));\n\
          \x20   return conv(a, w2);\n}\n", false),
    ] {
        run_exact(text);
        let c = compile(text, PassOptions::default());
        // Only the first is required to chain; the others check that whichever schedule
        // they get keeps the bits.
        if chained {
            assert!(convs_interleaved(&c), "not chained: {text}");
        }
    }
}

/// A bottleneck-like chain over `x: bf16[n, c, h, w]`: a 1x1 convolution into `m`
/// channels with a bias and relu, a `k x k` one (`attrs`, e.g. `, padding=[1, 1]`) into
/// `m` channels with a relu, and a 1x1 back to `c` channels with a bias, then the residual
/// `+ x` (when `residual`) and the relu, every intermediate cast to bf16.
fn bottleneck([n, c, h, w]: [u64; 4], m: u64, (k, attrs): (u64, &str), residual: bool) -> String {
    let add = if residual { " + x" } else { "" };
    format!(
        "kernel k(x: bf16[{n}, {c}, {h}, {w}], w1: bf16[{m}, {c}, 1, 1], b1: f32[{m}], w2: bf16[{m}, {m}, {k}, {k}], w3: bf16[{c}, {m}, 1, 1], b3: f32[{c}]) -> bf16[{n}, {c}, {h}, {w}] {{\n\
         \x20   let a = relu(conv(x, w1) + reshape(b1, [1, {m}, 1, 1])) as bf16;\n\
         \x20   let b = relu(conv(a, w2{attrs})) as bf16;\n\
         \x20   return relu(conv(b, w3) + reshape(b3, [1, {c}, 1, 1]){add}) as bf16;\n}}\n"
    )
}

#[test]
fn chained_convolutions_exchange_results_in_sbuf() {
    // Convolutions run image by image behind the one they read, so each intermediate and
    // the residual's `x` are still in SBUF when they are needed: the loads are served from
    // there (`conv_forward.rs`: a 1x1 input renamed to the producer's result tile, a padded
    // input's interior copied on GpSimd, the upper half of an image with taps packed
    // copied by an SBUF-to-SBUF DMA, the residual read from the first convolution's input
    // tile), and the stores nothing reads any more are dropped. So each kernel reads every
    // input once and writes only its output, with the reference's bits under both
    // policies. Channels 32, 48, 64, 96, 128 and 256, odd spatial sizes, padding 1, with
    // and without the residual.
    let cases = [
        bottleneck([3, 128, 7, 5], 64, (3, ", padding=[1, 1]"), true),
        bottleneck([2, 96, 9, 9], 32, (3, ", padding=[1, 1]"), true),
        bottleneck([4, 48, 5, 7], 96, (3, ", padding=[1, 1]"), false),
        bottleneck([2, 64, 11, 3], 64, (3, ", padding=[1, 1]"), false),
        bottleneck([4, 256, 8, 8], 128, (3, ", padding=[1, 1]"), true),
        bottleneck([2, 256, 9, 9], 96, (3, ", padding=[1, 1]"), true),
    ];
    for text in &cases {
        let text = text.as_str();
        for (written, results) in run_exact(text) {
            assert_eq!(written, results, "an intermediate written to HBM: {text}");
        }
        let c = compile(text, PassOptions::default());
        let (report, _) = run_seed1(&c);
        let inputs: u64 = c
            .tensor
            .params
            .iter()
            .map(|(_, p)| {
                let t = c.tensor.ty(*p);
                t.shape.iter().product::<u64>() * t.dtype.size() as u64
            })
            .sum();
        assert_eq!(
            report.hbm_read_bytes, inputs,
            "an input or intermediate read twice: {text}"
        );
    }
}

#[test]
fn loads_not_in_sbuf_are_kept() {
    // Where nothing in SBUF holds what a load reads, it stays a load, and the stores its
    // bytes come from stay too: a residual that is another input is loaded from HBM, and
    // a 1x1 convolution over 48 channels that takes the matmul over its input (not
    // implicit GEMM) reads the intermediate from HBM. The bits stay the reference's under
    // both policies.
    let strided = "kernel k(x: bf16[2, 64, 9, 9], w1: bf16[32, 64, 1, 1], w2: bf16[32, 32, 3, 3], w3: bf16[64, 32, 1, 1], r: bf16[2, 64, 5, 5]) -> bf16[2, 64, 5, 5] {\n\
        \x20   let a = relu(conv(x, w1)) as bf16;\n\
        \x20   let b = relu(conv(a, w2, stride=[2, 2], padding=[1, 1])) as bf16;\n\
        \x20   return relu(conv(b, w3) + r) as bf16;\n}\n";
    let pointwise = bottleneck([3, 256, 6, 6], 48, (1, ""), true);
    for text in [strided, pointwise.as_str()] {
        run_exact(text);
        let c = compile(text, PassOptions::default());
        let tile = c.tile.as_ref().expect("tile IR");
        // Whether a DMA loads from an HBM buffer that `pick` accepts.
        let loads = |pick: &dyn Fn(&tessera::tile::BufKind) -> bool| {
            tile.layout.iter().any(|&t| {
                let inst = &tile.insts[t];
                let load = matches!(
                    inst.op,
                    isa::Op::Dma {
                        src: isa::DmaAp::Hbm(_),
                        ..
                    }
                );
                load && inst.bufs.iter().any(|&b| pick(&tile.bufs[b].kind))
            })
        };
        let residual = |k: &tessera::tile::BufKind| matches!(k, tessera::tile::BufKind::Hbm { name, .. } if name == "r");
        let scratch = |k: &tessera::tile::BufKind| {
            matches!(
                k,
                tessera::tile::BufKind::Hbm {
                    role: isa::Role::Scratch,
                    ..
                }
            )
        };
        if text == strided {
            assert!(loads(&residual), "the residual input is not loaded: {text}");
        } else {
            assert!(loads(&scratch), "the matmul's input is not loaded: {text}");
        }
    }
}
