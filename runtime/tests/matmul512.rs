//! The 512 x 512 x 512 bf16 matmul: exact results against a plain-Rust reference and total
//! cycles against a hand computation from the cost formulas.

mod common;

#[path = "common/matmul.rs"]
mod matmul;

use common::*;
use isa::{Dtype, Engine};

#[test]
fn matmul_512_cubed_bf16_is_exact_and_timed() {
    let (m, k, n) = (512, 512, 512);
    let text = matmul::matmul_program(m, k, n);
    let mut rng = Rng::new(512);
    let at = rng.values(Dtype::Bf16, k * m, 2.0);
    let b = rng.values(Dtype::Bf16, k * n, 2.0);
    let (report, loaded) = run(&text, &[("at", &at), ("b", &b)]);
    let c = loaded.read("c").unwrap();
    assert_bits_eq(&c, &matmul::matmul_reference(&at, &b, m, k, n), "c");

    // Hand computation (default timing, no bandwidth cap binds: at most 16 queues x 16
    // B/cycle = 256 B/cycle are ever active together):
    // - 16 loads of 64 partitions x 1 KiB = 65,536 B (one contiguous HBM run; 64 runs of
    //   1 KiB in SBUF), one per queue, all issued at 0: data 2000 .. 2000 + 65536/16 = 6096.
    // - 16 matmuls of N = 512 bf16: 256 cycles each. Every one has a new stationary
    //   pattern. The first's load starts when its waits hold (6096) and ends at 6128, where
    //   the matmul starts; each later load starts with the previous matmul and is hidden,
    //   so matmul i runs 6128 + 256 i .. 6128 + 256 (i + 1); tile t (4 K steps) ends at
    //   6128 + 1024 (t + 1): 7152, 8176, 9200, 10224.
    // - Vector evacuations, 64 + 512 = 576 cycles each, start at those ends (the vector
    //   engine is free by then): tile 3's ends at 10800.
    // - Tile 3's four output DMAs (32 partitions x 2 KiB = 65,536 B, contiguous on both
    //   sides) issue at 10800; their queues' earlier data phases ended at 6096, so data runs
    //   12800 .. 12800 + 4096 = 16896.
    assert_eq!(report.total_cycles, 16896);
    assert_eq!(report.engine(Engine::Tensor).busy_cycles, 16 * 256);
    assert_eq!(report.engine(Engine::Tensor).instructions, 16);
    assert_eq!(report.engine(Engine::Vector).busy_cycles, 4 * 576);
    assert_eq!(report.hbm_read_bytes, 2 * 512 * 512 * 2);
    assert_eq!(report.hbm_write_bytes, 512 * 512 * 4);
    assert_eq!(report.matmul_flops, 2 * 512 * 512 * 512);
    let first_mm = report
        .events
        .iter()
        .find(|e| e.engine == Engine::Tensor)
        .unwrap();
    assert_eq!((first_mm.start, first_mm.end), (6128, 6384));
}
