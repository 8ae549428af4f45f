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
