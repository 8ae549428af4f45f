//! The bench's simulation-speed rows: how fast the reference evaluator runs the bf16
//! 2048^3 matmul next to NumPy, and what `run --check` of a Llama-3-8B prefill decoder
//! layer (`bench/llama_layer.tsr`, S = 2048, or `TESSERA_BENCH_LLAMA_S`) costs, part by part (compile, interpreter,
//! reference, error bounds) and as one whole `tessera run --check` process, with its wall
//! time and peak resident memory against the program's HBM (inputs, outputs, scratch).

use std::path::Path;
use std::process::Command;
use std::time::Instant;
use tessera::driver::{self, CompileOptions, Source};
use tessera::reference::HostTensor;

/// The layer's source.
pub const LLAMA: &str = include_str!("../../bench/llama_layer.tsr");

/// Llama-3-8B's sizes: 32 query heads in 8 groups of 4, heads of 128, MLP 4096 -> 14336.
pub const LLAMA_SIZES: &[(&str, i64)] = &[
    ("S", 2048),
    ("D", 4096),
    ("KVH", 8),
    ("G", 4),
    ("HD", 128),
    ("QD", 4096),
    ("KVD", 1024),
    ("F", 14336),
];

/// The reference evaluator's share of NumPy's float32 matmul rate it must reach.
pub const REFERENCE_SHARE: f64 = 0.25;

/// Wall-time targets of one `run --check` of the layer: on 2 AVX-512 cores, and on 2
/// AVX2 cores.
pub const LLAMA_CHECK_S_AVX512: f64 = 30.0;
pub const LLAMA_CHECK_S_AVX2: f64 = 45.0;

/// Peak resident memory of the run against the program's HBM must stay below this factor.
pub const LLAMA_MEMORY_FACTOR: f64 = 2.0;

/// The host's widest SIMD level the interpreter and the reference use.
pub fn simd_level() -> &'static str {
    #[cfg(target_arch = "x86_64")]
    {
        if std::is_x86_feature_detected!("avx512f") {
            return "AVX-512 (the interpreter's and the reference's matmul kernels use it)";
        }
        if std::is_x86_feature_detected!("avx2") {
            return "AVX2";
        }
        if std::is_x86_feature_detected!("avx") {
            return "AVX";
        }
    }
    "no SIMD beyond the target's baseline"
}

/// The reference evaluator on the tensor IR of a compiled kernel: best of `n`, seconds.
pub fn reference_seconds(
    c: &tessera::passes::Compilation,
    inputs: &[HostTensor],
    n: usize,
) -> Result<f64, String> {
    let mut best = f64::INFINITY;
    for _ in 0..n.max(1) {
        let t = Instant::now();
        tessera::reference::evaluate(&c.tensor, inputs).map_err(|e| e.to_string())?;
        best = best.min(t.elapsed().as_secs_f64());
    }
    Ok(best)
}

/// The parts of one `run --check` of the layer, measured in the bench's process, and the
/// whole `tessera run` process.
pub struct Llama {
    pub compile_s: f64,
    pub interp_s: f64,
    pub reference_s: f64,
    /// The reference with error bounds (what `--check` runs) minus the reference alone.
    pub bound_s: f64,
    pub flops: u64,
    /// Bytes of HBM the program declares: inputs, outputs and scratch.
    pub hbm_bytes: u64,
    /// Whether the outputs are within the bounds of the reference.
    pub check: Result<(), String>,
    /// The whole process: wall seconds and peak resident bytes.
    pub process: Result<(f64, u64), String>,
}

/// The layer's sizes as the bench runs them: [`LLAMA_SIZES`], with the sequence length
/// from the environment variable `TESSERA_BENCH_LLAMA_S` if set (a shorter prefill, to
/// measure the parts on a shared machine; the paragraph names the length it ran).
pub fn llama_sizes() -> Vec<(&'static str, i64)> {
    let s = std::env::var("TESSERA_BENCH_LLAMA_S")
        .ok()
        .and_then(|v| v.parse::<i64>().ok())
        .filter(|&s| s > 0);
    LLAMA_SIZES
        .iter()
        .map(|&(n, v)| match (n, s) {
            ("S", Some(s)) => (n, s),
            _ => (n, v),
        })
        .collect()
}

/// The sequence length the bench runs.
fn llama_s() -> i64 {
    llama_sizes()
        .iter()
        .find(|(n, _)| *n == "S")
        .map_or(0, |&(_, v)| v)
}

fn defines_args() -> Vec<String> {
    llama_sizes()
        .iter()
        .flat_map(|(n, v)| ["-D".to_string(), format!("{n}={v}")])
        .collect()
}

/// The command line whose wall time and memory the bench reports.
pub fn llama_command() -> String {
    format!(
        "tessera run bench/llama_layer.tsr {} --random 1 --check --report",
        defines_args().join(" ")
    )
}

/// Measures the layer: each part in this process, then the whole command with
/// `/usr/bin/time` (wall time and peak resident memory).
pub fn llama(exe: &Result<std::path::PathBuf, String>) -> Result<Llama, String> {
    let src = Source {
        name: "bench/llama_layer.tsr".into(),
        text: LLAMA.into(),
    };
    let options = CompileOptions {
        defines: llama_sizes()
            .iter()
            .map(|(n, v)| (n.to_string(), *v))
            .collect(),
        ..CompileOptions::default()
    };
    let t = Instant::now();
    let c = driver::compile(&src, &options, &mut String::new()).map_err(|e| e.to_string())?;
    let program = driver::program_of(&c).map_err(|e| e.to_string())?.clone();
    let compile_s = t.elapsed().as_secs_f64();
    let params = driver::params_of(&c.tensor);
    let inputs: Vec<HostTensor> = params
        .iter()
        .enumerate()
        .map(|(i, p)| driver::random_tensor(p, 1, i as u64))
        .collect();
    let t = Instant::now();
    let (outputs, report) =
        driver::execute(&program, &params, &inputs).map_err(|e| e.to_string())?;
    let interp_s = t.elapsed().as_secs_f64();
    let reference_s = reference_seconds(&c, &inputs, 1)?;
    let t = Instant::now();
    let comparisons = driver::check_outputs(&c, &inputs, &outputs).map_err(|e| e.to_string())?;
    let bound_s = (t.elapsed().as_secs_f64() - reference_s).max(0.0);
    let check = match comparisons.iter().enumerate().find(|(_, c)| c.bad > 0) {
        Some((i, cmp)) => Err(cmp.line(i)),
        None => Ok(()),
    };
    drop((outputs, inputs));
    let process = match exe {
        Err(e) => Err(e.clone()),
        Ok(exe) => whole_process(exe),
    };
    Ok(Llama {
        compile_s,
        interp_s,
        reference_s,
        bound_s,
        flops: report.matmul_flops,
        hbm_bytes: program.hbm_size,
        check,
        process,
    })
}

/// Runs the layer's `tessera run --check` under `/usr/bin/time`: wall seconds and peak
/// resident bytes. It runs in a scratch folder, where `--random` writes the inputs it
/// draws and the run writes its output, both removed afterwards.
fn whole_process(exe: &Path) -> Result<(f64, u64), String> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let dir = std::env::temp_dir().join(format!("tessera-bench-llama-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let out = Command::new("/usr/bin/time")
        .args(["-f", "TESSERA_TIME %e %M"])
        .arg(exe)
        .arg("run")
        .arg(root.join("bench/llama_layer.tsr"))
        .args(defines_args())
        .args(["--random", "1", "--check", "--report"])
        .current_dir(&dir)
        .output();
    let _ = std::fs::remove_dir_all(&dir);
    let out = out.map_err(|e| format!("cannot run /usr/bin/time ({e})"))?;
    let err = String::from_utf8_lossy(&out.stderr);
    if !out.status.success() {
        let last = err.lines().rev().find(|l| !l.starts_with("TESSERA_TIME"));
        return Err(format!(
            "`tessera run --check` failed: {}",
            last.unwrap_or("no message")
        ));
    }
    let line = err
        .lines()
        .find_map(|l| l.strip_prefix("TESSERA_TIME "))
        .ok_or("no timing from /usr/bin/time")?;
    let mut parts = line.split_whitespace();
    let wall: f64 = parts
        .next()
        .and_then(|s| s.parse().ok())
        .ok_or("bad wall time")?;
    let kib: u64 = parts
        .next()
        .and_then(|s| s.parse().ok())
        .ok_or("bad peak memory")?;
    Ok((wall, kib * 1024))
}

/// The layer's paragraph for the terminal and BENCHMARKS.md.
pub fn llama_text(l: &Result<Llama, String>) -> String {
    let l = match l {
        Ok(l) => l,
        Err(e) => return format!("Llama-3-8B decoder layer: not measured ({e}).\n"),
    };
    let avx512 = simd_level().starts_with("AVX-512");
    let target = if avx512 {
        LLAMA_CHECK_S_AVX512
    } else {
        LLAMA_CHECK_S_AVX2
    };
    let gb = |b: u64| b as f64 / 1e9;
    // The wall-time targets are stated for S = 2048.
    let full = llama_s() == 2048;
    let mut s = format!(
        "Llama-3-8B prefill decoder layer (`bench/llama_layer.tsr`, S = {}, {:.3} TFLOP of \
         matmuls), one `run --check`, part by part in the bench's process: compile {:.2} s, \
         interpreter {:.2} s ({:.1} GFLOP/s simulated), reference evaluator {:.2} s, error \
         bounds {:.2} s (the reference with bounds, as `--check` runs it, minus the reference \
         alone); check: {}.\n\n",
        llama_s(),
        l.flops as f64 / 1e12,
        l.compile_s,
        l.interp_s,
        l.flops as f64 / l.interp_s / 1e9,
        l.reference_s,
        l.bound_s,
        match &l.check {
            Ok(()) => "every output within its bound".to_string(),
            Err(e) => format!("MISMATCH: {e}"),
        }
    );
    match &l.process {
        Ok((wall, rss)) => {
            let factor = *rss as f64 / l.hbm_bytes.max(1) as f64;
            s.push_str(&format!(
                "The whole process, `{}` under `/usr/bin/time`: {:.1} s wall (target < {:.0} s \
                 on 2 {} cores: {}), peak resident memory {:.2} GB, {:.2}x the program's HBM \
                 of {:.2} GB (inputs, outputs and scratch; target < {:.0}x: {}).\n",
                llama_command(),
                wall,
                target,
                if avx512 { "AVX-512" } else { "AVX2" },
                if !full {
                    "not judged below S = 2048"
                } else if *wall < target {
                    "met"
                } else {
                    "not met"
                },
                gb(*rss),
                factor,
                gb(l.hbm_bytes),
                LLAMA_MEMORY_FACTOR,
                if factor < LLAMA_MEMORY_FACTOR {
                    "met"
                } else {
                    "not met"
                }
                .to_string()
                    + if full { "" } else { " at this S" },
            ));
        }
        Err(e) => s.push_str(&format!("The whole process was not measured: {e}.\n")),
    }
    s
}
