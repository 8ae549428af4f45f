//! Packed rows (`passes/tiling/block.rs`, `Pack`): an elementwise row group with short
//! rows evaluates several blocks as one, their rows side by side on the free axis, so that
//! each instruction pays its fixed cost once for up to 1,024 elements. Packing is exact,
//! so every case must match the reference bit for bit under both dtype policies; and it
//! must take effect (instructions over two-dimensional free patterns, fewer of them, the
//! compulsory HBM bytes only).

mod common;

use common::{both_policies as policies, compile_verified as compile, rope, run_case, run_seed1};
use isa::{Engine, Op};
use tessera::passes::PassOptions;

/// The compute instructions of a compilation whose output is a pattern of packed rows
/// (two free dimensions), and all its compute instructions on Vector and GpSimd.
fn packed_and_elementwise(c: &tessera::passes::Compilation) -> (usize, usize) {
    let tile = c.tile.as_ref().expect("tile IR");
    let (mut packed, mut all) = (0, 0);
    for inst in tile.insts.values() {
        if !matches!(inst.engine, Engine::Vector | Engine::GpSimd) {
            continue;
        }
        if let Op::TensorTensor { out, .. } = &inst.op {
            all += 1;
            packed += usize::from(out.dims.len() == 2);
        }
    }
    (packed, all)
}

#[test]
fn rope_packs_heads_and_moves_only_its_compulsory_bytes() {
    // 16 heads of 512 positions: 64 blocks of 128 rows, packed 4 heads to a tile (16
    // blocks left to overlap each other).
    let (b, s, d) = (16u64, 512u64, 64u64);
    for options in policies() {
        let c = compile(&rope(b, s, d), options);
        let (packed, all) = packed_and_elementwise(&c);
        assert!(
            packed > 0 && packed == all,
            "{packed} of {all} products packed"
        );
        // Three two-input operations per packed block (each maybe split with GpSimd),
        // instead of three per block of 128 rows (192).
        assert!(all <= 2 * 3 * 16, "{all} tensor_tensor instructions");
        let (report, cmp) = run_seed1(&c);
        assert!(cmp.iter().all(|x| x.bad == 0 && x.max_abs == 0.0));
        // q once, cos and sin once (the packed heads read one row of them, repeated).
        assert_eq!(report.hbm_read_bytes, 2 * (b * s * d + 2 * s * d));
        assert_eq!(report.hbm_write_bytes, 2 * b * s * d);
    }
}

#[test]
fn few_blocks_are_not_packed() {
    // 8 blocks of 128 rows: packing would leave too few to overlap each other.
    let c = compile(&rope(4, 256, 64), PassOptions::default());
    assert_eq!(packed_and_elementwise(&c).0, 0);
    // 42 blocks of rows of 128: a pack of 2 gains less than the overlap it loses.
    let c = compile(&rope(21, 256, 128), PassOptions::default());
    assert_eq!(packed_and_elementwise(&c).0, 0);
}

#[test]
fn packing_partition_blocks_of_a_rank_two_space() {
    // No outer axis: blocks of 128 rows of the same axis are packed.
    let text = "kernel k(x: f32[4096, 64], y: f32[4096, 64]) -> f32[4096, 64] {\n\
                \x20   return silu(x) * y + x;\n\
                }\n";
    let c = compile(text, PassOptions::default());
    assert!(packed_and_elementwise(&c).0 > 0);
}

#[test]
fn packed_rows_match_the_reference_bit_for_bit() {
    let cases = [
        // Heads of 128 columns: 72 blocks, packed 4 to a tile, the ninth head alone.
        rope(9, 1024, 128),
        // A last block of fewer rows (200 = 128 + 72) is packed apart from the others.
        rope(16, 200, 64),
        // Rows of 128 on the partition axis one at a time: [64, 128, 96] packs axis 0.
        "kernel k(x: f32[64, 128, 96], w: f32[128, 96]) -> bf16[64, 128, 96] {\n\
         \x20   return (exp(x) * w - x) as bf16;\n\
         }\n"
        .to_string(),
        // Partition blocks of a rank-2 space, with a row-invariant operand, a mask and a
        // cast.
        "kernel k(x: bf16[4096, 32], b: bf16[32]) -> (f32[4096, 32], bf16[4096, 32]) {\n\
         \x20   let y = x as f32 + b as f32;\n\
         \x20   return (where(y > 0.0, y, y * 0.01), -x);\n\
         }\n"
        .to_string(),
        // Integer work on the integer datapath, packed like any other.
        "kernel k(a: i32[16, 256, 64], c: i32[256, 64]) -> i32[16, 256, 64] {\n\
         \x20   return a * c + a;\n\
         }\n"
        .to_string(),
        // Slices and a concat of three parts, with an operand broadcast over the heads.
        "kernel k(x: f32[32, 256, 96], y: f32[256, 32]) -> f32[32, 256, 96] {\n\
         \x20   let e = exp(x);\n\
         \x20   let c = concat([e[..., 64:] * 2.0, x[..., 32:64] * y, x[..., :32] + y], axis=-1);\n\
         \x20   return c - e;\n\
         }\n"
        .to_string(),
    ];
    for text in &cases {
        for options in policies() {
            let c = compile(text, options.clone());
            assert!(packed_and_elementwise(&c).0 > 0, "{text}: nothing packed");
            let outcome = run_case(text, &options, 7);
            assert!(outcome.is_match(), "{text}\n{}", outcome.describe());
        }
    }
}
