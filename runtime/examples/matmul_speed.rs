//! Measures the interpreter's speed in simulated matmul FLOP per wall-clock second, on the
//! tiled bf16 matmul programs of the runtime's tests (512^3 and 2048^3), and the matmul
//! micro-kernel alone on one instruction's shape (128 x 512 outputs, K = 128) for each
//! kernel path, on one thread and with the helper thread.
//!
//! Run with `cargo run --release -p tessera-runtime --example matmul_speed`. Events are
//! turned off, as a large benchmark would. Each figure is the best of a few repetitions,
//! since the host may be shared. The argument `programs` or `kernel` runs only that part
//! (for profiling).

#[path = "../tests/common/matmul.rs"]
mod matmul;

use runtime::kernels::{Job, Path, Pool};
use runtime::{Machine, MachineConfig};
use std::sync::Arc;
use std::time::Instant;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let only = std::env::args().nth(1);
    if only.as_deref() != Some("kernel") {
        programs()?;
    }
    if only.as_deref() != Some("programs") {
        kernel_alone();
    }
    Ok(())
}

/// The whole interpreter on the matmul programs.
fn programs() -> Result<(), Box<dyn std::error::Error>> {
    for size in [512usize, 2048] {
        let program = isa::assemble(&matmul::matmul_program(size, size, size))?;
        let mut best = f64::INFINITY;
        let mut last = None;
        for _ in 0..3 {
            let config = MachineConfig {
                events: false,
                ..MachineConfig::default()
            };
            let mut loaded = Machine::new(config).load_program(program.clone())?;
            // Values are irrelevant to speed; small integers keep them exact in bf16.
            let values: Vec<f32> = (0..size * size).map(|i| (i % 7) as f32 - 3.0).collect();
            loaded.bind("at", &values)?;
            loaded.bind("b", &values)?;
            let start = Instant::now();
            let report = loaded.run()?;
            best = best.min(start.elapsed().as_secs_f64());
            last = Some(report);
        }
        let report = last.expect("ran");
        println!(
            "{size}^3 bf16 matmul: {:.3} s wall (best of 3), {:.2} GFLOP/s simulated, {} cycles ({:.1} us simulated)",
            best,
            report.matmul_flops as f64 / best / 1e9,
            report.total_cycles,
            report.seconds() * 1e6
        );
    }
    Ok(())
}

/// The micro-kernel on one instruction's shape, without decoding or memory traffic.
fn kernel_alone() {
    let (k, m, n) = (128usize, 128usize, 512usize);
    let reps = 200;
    let flops = (2 * k * m * n * reps) as f64;
    let pool = Pool::new();
    for path in [Path::Portable, Path::Avx] {
        if !path.is_available() {
            continue;
        }
        let mut job = Arc::new(Job::new(path));
        {
            let j = Arc::get_mut(&mut job).expect("unshared");
            j.reset(k, m, n);
            let row: Vec<f32> = (0..n).map(|i| (i % 5) as f32 * 0.25).collect();
            for ki in 0..k {
                j.set_stationary_row(ki, &row[..m]);
                j.set_moving_row(ki, &row);
            }
        }
        let mut report = format!("kernel {path:?}, 128 x 512 x K=128:");
        for threads in [1, 2] {
            if threads == 2 && pool.is_none() {
                continue;
            }
            let mut best = f64::INFINITY;
            for _ in 0..5 {
                let start = Instant::now();
                for _ in 0..reps {
                    let j = Arc::get_mut(&mut job).expect("unshared");
                    j.zero_output();
                    match (&pool, threads) {
                        (Some(p), 2) => p.run(&mut job),
                        _ => j.run(),
                    }
                }
                best = best.min(start.elapsed().as_secs_f64());
            }
            report += &format!(" {threads} thread(s) {:.1} GFLOP/s;", flops / best / 1e9);
        }
        println!("{report}");
    }
}
