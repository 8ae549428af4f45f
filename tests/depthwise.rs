//! Depthwise convolutions on Vector, GpSimd and Scalar (`compiler/passes/tiling/
//! depthwise.rs`): each kernel here is computed from its input and weights with its
//! epilogue fused, so it writes nothing to HBM but its outputs (the multiply-add chain the
//! `conv` pass wrote would store an f32 intermediate), and it matches the reference bit for
//! bit under both dtype policies, on shapes other than the benchmarks': 1-D and 2-D,
//! strides, dilations, paddings 0 to 3, channel counts that are not multiples of 128,
//! batches of 1 to 3.

mod common;

use common::{both_policies, compile_verified as compile, run_seed1};

/// Runs `text` on random inputs under both policies; requires every output element to be
/// the reference's and the bytes written to HBM to be the outputs' bytes.
fn depthwise(text: &str) {
    for options in both_policies() {
        let strict = options.strict_dtypes;
        let c = compile(text, options);
        let (report, cmp) = run_seed1(&c);
        assert!(
            cmp.iter().all(|x| x.bad == 0 && x.max_abs == 0.0),
            "strict={strict}: {text}"
        );
        let f = &c.tensor;
        let outputs = f.results.iter().map(|&r| f.ty(r));
        let result_bytes: u64 = outputs
            .map(|t| t.shape.iter().product::<u64>() * t.dtype.size() as u64)
            .sum();
        assert_eq!(
            report.hbm_write_bytes, result_bytes,
            "scratch written to HBM (strict={strict}): {text}"
        );
    }
}

#[test]
fn three_by_three_with_bias_and_relu6_images_side_by_side() {
    // 40 channels: three images share a block of 120 partitions.
    depthwise(
        "kernel k(x: bf16[3, 40, 9, 11], w: bf16[40, 1, 3, 3], b: f32[40]) -> bf16[3, 40, 9, 11] {\n\
         \x20   let y = conv(x, w, padding=[1, 1], groups=40) + reshape(b, [1, 40, 1, 1]);\n\
         \x20   return clip(y, 0.0, 6.0) as bf16;\n}\n",
    );
}

#[test]
fn stride_two_dilation_two_padding_three_over_channel_chunks() {
    // 200 channels: two chunks of 100; f32 input, a non-square window.
    depthwise(
        "kernel k(x: f32[1, 200, 13, 12], w: f32[200, 1, 3, 2]) -> f32[1, 200, 8, 8] {\n\
         \x20   return conv(x, w, stride=[2, 2], padding=[3, 3], dilation=[2, 2], groups=200) * 0.5;\n}\n",
    );
}

#[test]
fn no_padding_five_by_three() {
    depthwise(
        "kernel k(x: bf16[2, 64, 10, 9], w: bf16[64, 1, 5, 3]) -> bf16[2, 64, 6, 7] {\n\
         \x20   return relu(conv(x, w, groups=64)) as bf16;\n}\n",
    );
}

#[test]
fn causal_one_d_slice_with_bias_and_silu() {
    // Mamba's form: the convolution padded by k - 1 and cut back to L columns (an f32
    // bias: a bf16 one's cast to f32 is a group of its own, which writes 4 bytes per
    // channel to HBM).
    depthwise(
        "kernel k(x: bf16[2, 130, 50], w: bf16[130, 1, 4], b: f32[130]) -> bf16[2, 130, 50] {\n\
         \x20   let y = conv(x, w, padding=[3], groups=130)[:, :, :50] + reshape(b, [1, 130, 1]);\n\
         \x20   return silu(y) as bf16;\n}\n",
    );
}

#[test]
fn one_d_strided_dilated_without_padding() {
    depthwise(
        "kernel k(x: f32[3, 7, 40], w: f32[7, 1, 3]) -> f32[3, 7, 18] {\n\
         \x20   return maximum(conv(x, w, stride=[2], dilation=[2], groups=7), 0.0);\n}\n",
    );
}

#[test]
fn two_channels_three_images_five_by_five_odd_sizes() {
    // Two channels (one is a convolution of one group, computed by implicit GEMM): the
    // three images share a block of 6 partitions.
    depthwise(
        "kernel k(x: f32[3, 2, 9, 7], w: f32[2, 1, 5, 5]) -> f32[3, 2, 9, 7] {\n\
         \x20   return conv(x, w, padding=[2, 2], groups=2) + 1.0;\n}\n",
    );
}

#[test]
fn seven_channels_stride_two_odd_sizes() {
    depthwise(
        "kernel k(x: bf16[3, 7, 11, 13], w: bf16[7, 1, 3, 3]) -> bf16[3, 7, 6, 7] {\n\
         \x20   return conv(x, w, stride=[2, 2], padding=[1, 1], groups=7) as bf16;\n}\n",
    );
}

#[test]
fn one_hundred_twenty_nine_channels_one_image() {
    // A chunk of 128 channels and one of a single channel.
    depthwise(
        "kernel k(x: bf16[1, 129, 5, 5], w: bf16[129, 1, 3, 3], b: f32[129]) -> bf16[1, 129, 5, 5] {\n\
         \x20   let y = conv(x, w, padding=[1, 1], groups=129) + reshape(b, [1, 129, 1, 1]);\n\
         \x20   return clip(y, 0.0, 6.0) as bf16;\n}\n",
    );
}

#[test]
fn nine_hundred_sixty_channels_images_packed_on_the_free_axis() {
    // Seven chunks of 128 channels, each with the three images side by side on the free
    // axis, and 64 channels with two images on 128 partitions plus the third alone.
    depthwise(
        "kernel k(x: bf16[3, 960, 5, 5], w: bf16[960, 1, 3, 3], b: f32[960]) -> bf16[3, 960, 5, 5] {\n\
         \x20   let y = conv(x, w, padding=[1, 1], groups=960) + reshape(b, [1, 960, 1, 1]);\n\
         \x20   return clip(y, 0.0, 6.0) as bf16;\n}\n",
    );
}

#[test]
fn ninety_six_channels_cut_into_sixty_four_and_thirty_two() {
    // 64 channels with two images a block and 32 with four: every block fills its 128
    // partitions, and whole images go side by side on the free axis.
    depthwise(
        "kernel k(x: bf16[8, 96, 7, 7], w: bf16[96, 1, 3, 3], b: f32[96]) -> bf16[8, 96, 7, 7] {\n\
         \x20   let y = conv(x, w, padding=[1, 1], groups=96) + reshape(b, [1, 96, 1, 1]);\n\
         \x20   return relu(y) as bf16;\n}\n",
    );
}

#[test]
fn one_d_kernel_five_stride_two_whole_rows_packed() {
    depthwise(
        "kernel k(x: bf16[5, 48, 33], w: bf16[48, 1, 5], b: f32[48]) -> f32[5, 48, 17] {\n\
         \x20   return conv(x, w, stride=[2], padding=[2], groups=48) + reshape(b, [1, 48, 1]);\n}\n",
    );
}

#[test]
fn infinities_nan_and_negative_zero_keep_the_reference_semantics() {
    // An infinite weight on a tap that falls in the padding makes that channel's edge
    // outputs NaN (0 * inf) and no other channel's; an infinite or NaN input reaches only
    // its own channel's window; a -0 input and -0 products sum to the reference's +0.
    let text = "kernel k(x: f32[2, 40, 6, 6], w: f32[40, 1, 3, 3]) -> f32[2, 40, 6, 6] {\n\
                \x20   return conv(x, w, padding=[1, 1], groups=40);\n}\n";
    for options in both_policies() {
        let strict = options.strict_dtypes;
        let c = compile(text, options);
        let program = tessera::driver::program_of(&c).unwrap();
        let params = tessera::driver::params_of(&c.tensor);
        let mut inputs: Vec<_> = params
            .iter()
            .enumerate()
            .map(|(i, p)| tessera::driver::random_tensor(p, 1, i as u64))
            .collect();
        // x: an infinity (image 0, channel 3), a NaN (image 1, channel 17), a channel of
        // -0 (image 0, channel 5).
        inputs[0].data[3 * 36 + 14] = f32::INFINITY;
        inputs[0].data[(40 + 17) * 36 + 20] = f32::NAN;
        for v in &mut inputs[0].data[5 * 36..6 * 36] {
            *v = -0.0;
        }
        // w: channel 9's top-left tap infinite, channel 5's weights positive (so that its
        // products are -0).
        inputs[1].data[9 * 9] = f32::INFINITY;
        for v in &mut inputs[1].data[5 * 9..6 * 9] {
            *v = v.abs() + 0.5;
        }
        let (outputs, _) = tessera::driver::execute(program, &params, &inputs).unwrap();
        let cmp = tessera::driver::check_outputs(&c, &inputs, &outputs).unwrap();
        assert!(cmp.iter().all(|x| x.bad == 0), "strict={strict}: {cmp:?}");
        let out = &outputs[0].data;
        let at = |n: usize, ch: usize, y: usize, x: usize| out[((n * 40 + ch) * 6 + y) * 6 + x];
        // Channel 9's first row and column read the padding through the infinite tap.
        assert!(
            at(0, 9, 0, 3).is_nan() && at(1, 9, 3, 0).is_nan(),
            "strict={strict}"
        );
        assert!(at(0, 8, 0, 3).is_finite() && at(1, 10, 3, 0).is_finite());
        // The infinity and the NaN stay in their channels; -0 inputs give +0.
        assert!(at(0, 3, 2, 2).is_infinite() && at(0, 2, 2, 2).is_finite());
        assert!(at(1, 17, 3, 2).is_nan() && at(1, 16, 3, 2).is_finite());
        assert!(at(0, 5, 2, 2) == 0.0 && at(0, 5, 2, 2).is_sign_positive());
    }
}
