//! Convolutions with few input channels and a column stride above one, computed from a
//! deinterleaved copy of the input in HBM and compact window tiles
//! (`compiler/passes/tiling/conv_deinterleave.rs`): each kernel here takes that lowering
//! by the cost estimate, matches the reference bit for bit under both policies, writes
//! nothing to HBM but its output and the copy, and adds its window's products in the
//! language's order, `C x KH x KW` partitions per PSUM tile.

mod common;

use common::{compile_verified as compile, run_seed1};

use isa::Role;
use tessera::passes::PassOptions;

/// A convolution `[n, c, h, w]` by `[o, c, kh, kw]` with `stride`, `padding`, the bias and
/// relu fused and the output cast to bf16.
fn kernel(
    x: [u64; 4],
    (o, kh, kw): (u64, u64, u64),
    stride: [u64; 2],
    padding: [u64; 2],
) -> String {
    let [n, c, h, w] = x;
    let oh = (h + 2 * padding[0] - kh) / stride[0] + 1;
    let ow = (w + 2 * padding[1] - kw) / stride[1] + 1;
    format!(
        "kernel k(x: bf16[{n}, {c}, {h}, {w}], w: bf16[{o}, {c}, {kh}, {kw}], b: f32[{o}]) -> bf16[{n}, {o}, {oh}, {ow}] {{\n\
         \x20   let y = conv(x, w, stride=[{}, {}], padding=[{}, {}]) + reshape(b, [1, {o}, 1, 1]);\n\
         \x20   return relu(y) as bf16;\n}}\n",
        stride[0], stride[1], padding[0], padding[1]
    )
}

/// Checks `text` (input `[n, c, h, w]`, kernel `kh x kw`) as the module comment says.
fn deinterleaved(text: &str, [n, c, h, _]: [u64; 4], (kh, kw): (u64, u64)) {
    for strict in [false, true] {
        let comp = compile(
            text,
            PassOptions {
                strict_dtypes: strict,
                ..PassOptions::default()
            },
        );
        let (report, cmp) = run_seed1(&comp);
        for x in &cmp {
            assert!(x.bad == 0 && x.max_abs == 0.0, "strict={strict}: {text}");
        }
        let program = tessera::driver::program_of(&comp).unwrap();
        let bytes = |role: Role| -> Vec<(String, Vec<u64>, u64)> {
            program
                .tensors
                .iter()
                .filter(|t| t.role == role)
                .map(|t| {
                    let size = t.shape.iter().product::<u64>() * t.dtype.size() as u64;
                    (t.name.clone(), t.shape.clone(), size)
                })
                .collect()
        };
        // The window matrix's and the padded input's tensors are declared but never
        // written; the copy is the one scratch tensor written.
        let copies: Vec<_> = bytes(Role::Scratch)
            .into_iter()
            .filter(|t| t.0.starts_with("deinterleaved"))
            .collect();
        assert_eq!(copies.len(), 1, "one deinterleaved copy: {copies:?}");
        let (_, shape, copy) = &copies[0];
        // `[N, C, rows, KW, OW]`, the rows the padded image's and any the last window
        // reads beyond it.
        assert_eq!((shape[0], shape[1], shape[3]), (n, c, kw), "{shape:?}");
        assert!(shape[2] >= h, "{shape:?}");
        let outputs: u64 = bytes(Role::Output).iter().map(|t| t.2).sum();
        assert_eq!(report.hbm_write_bytes, outputs + copy, "strict={strict}");
        // Each PSUM tile's matmuls cover the window once: `C x KH x KW` partitions.
        let ks: Vec<u64> = program
            .streams
            .iter()
            .flatten()
            .filter_map(|i| match &i.op {
                isa::Op::Matmul {
                    stationary,
                    accumulate,
                    ..
                } => Some((stationary.partitions as u64, *accumulate)),
                _ => None,
            })
            .fold(Vec::new(), |mut tiles, (k, acc)| {
                if acc {
                    *tiles.last_mut().unwrap() += k;
                } else {
                    tiles.push(k);
                }
                tiles
            });
        assert!(!ks.is_empty());
        assert!(ks.iter().all(|&k| k == c * kh * kw), "{ks:?}");
    }
}

#[test]
fn resnet_stem_shape_at_a_small_size() {
    // 7x7/2 over three channels, padding 3: tap rows four to a matmul (K = 84), tap rows
    // 4-6 read as rows 0-2 two output rows down (K = 63).
    let x = [1, 3, 64, 64];
    deinterleaved(&kernel(x, (64, 7, 7), [2, 2], [3, 3]), x, (7, 7));
}

#[test]
fn one_channel_odd_sizes() {
    let x = [1, 1, 129, 127];
    deinterleaved(&kernel(x, (32, 5, 5), [2, 2], [2, 2]), x, (5, 5));
}

#[test]
fn no_padding_odd_sizes() {
    let x = [1, 3, 81, 79];
    deinterleaved(&kernel(x, (16, 7, 7), [2, 2], [0, 0]), x, (7, 7));
}

#[test]
fn four_channels_5x5() {
    let x = [1, 4, 80, 81];
    deinterleaved(&kernel(x, (64, 5, 5), [2, 2], [2, 2]), x, (5, 5));
}

#[test]
fn row_stride_one_column_stride_two() {
    // Tap rows are one output row apart, so every group of four reads the first's
    // partitions shifted by four window rows.
    let x = [1, 3, 48, 97];
    deinterleaved(&kernel(x, (64, 7, 7), [1, 2], [3, 3]), x, (7, 7));
}
