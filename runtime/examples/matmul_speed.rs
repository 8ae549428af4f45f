//! Measures the interpreter's speed in simulated matmul FLOP per wall-clock second, on the
//! tiled bf16 matmul programs of the runtime's tests (512^3 and 2048^3).
//!
//! Run with `cargo run --release -p tessera-runtime --example matmul_speed`. Events are
//! turned off, as a large benchmark would.

#[path = "../tests/common/matmul.rs"]
mod matmul;

use runtime::{Machine, MachineConfig};
use std::time::Instant;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    for size in [512usize, 2048] {
        let program = isa::assemble(&matmul::matmul_program(size, size, size))?;
        let config = MachineConfig {
            events: false,
            ..MachineConfig::default()
        };
        let mut loaded = Machine::new(config).load_program(program)?;
        // Values are irrelevant to speed; small integers keep them exact in bf16.
        let values: Vec<f32> = (0..size * size).map(|i| (i % 7) as f32 - 3.0).collect();
        loaded.bind("at", &values)?;
        loaded.bind("b", &values)?;
        let start = Instant::now();
        let report = loaded.run()?;
        let wall = start.elapsed().as_secs_f64();
        println!(
            "{size}^3 bf16 matmul: {:.3} s wall, {:.2} GFLOP/s simulated, {} cycles ({:.1} us simulated)",
            wall,
            report.matmul_flops as f64 / wall / 1e9,
            report.total_cycles,
            report.seconds() * 1e6
        );
    }
    Ok(())
}
