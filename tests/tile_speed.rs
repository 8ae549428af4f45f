//! Compile speed of the passes after `tile` on a large synthetic tile function: a 4096^3
//! bf16 matmul with 128 x 256 output tiles, each accumulating 32 K blocks (a transposed A
//! tile and a B tile loaded per step), about 50k instructions and 33k buffers. Prints the
//! time of engines + alloc + sync + emit (and of the verifiers); run it in release to see
//! the real figure: `cargo test --release --test tile_speed -- --nocapture`.

#[path = "tile/common.rs"]
mod common;

use std::time::Instant;
use tessera::passes::{self, Compilation, PassOptions};
use tessera::tile;

#[test]
fn a_4096_cubed_matmul_compiles_quickly() {
    let f = common::synthetic(4096, 4096, 4096);
    assert_eq!(tile::verify(&f), Ok(()));
    let insts = f.layout.len();
    let mut c = Compilation::new(tessera::ir::Function::new("big"), PassOptions::default());
    c.tile = Some(f);
    let start = Instant::now();
    let mut times = Vec::new();
    for name in ["engines", "alloc", "sync", "emit"] {
        let t = Instant::now();
        let pass = passes::find(name).expect("pass");
        (pass.run)(&mut c).unwrap_or_else(|e| panic!("{name}: {e}"));
        times.push(format!("{name} {:.1} ms", t.elapsed().as_secs_f64() * 1e3));
    }
    let total = start.elapsed();
    let t = Instant::now();
    let f = c.tile.as_ref().expect("tile");
    assert_eq!(tile::verify(f), Ok(()));
    let program = c.program.as_ref().expect("program");
    assert_eq!(isa::verify(program), Ok(()));
    let verify = t.elapsed();
    let waits: usize = program
        .streams
        .iter()
        .flatten()
        .map(|i| i.sync.waits.len())
        .sum();
    eprintln!(
        "{insts} instructions, {} buffers, {waits} waits: engines+alloc+sync+emit {:.1} ms ({}); \
         tile and ISA verifiers {:.1} ms",
        f.bufs.len(),
        total.as_secs_f64() * 1e3,
        times.join(", "),
        verify.as_secs_f64() * 1e3
    );
    assert!(insts > 45_000);
    // A loose bound that holds in unoptimised test builds on a busy machine; the release
    // figure is what the target (< 100 ms) is about.
    assert!(total.as_secs_f64() < 20.0);
}
