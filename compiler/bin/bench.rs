//! The benchmark: every target kernel through the real pipeline (source text -> compile ->
//! interpreter with its timing model), printed as a table of simulated cycles, roofline
//! bound, roofline efficiency against its target, whole-compile time and interpreter time;
//! then the interpreter's simulated FLOP rate next to NumPy's float32 matmul measured in
//! the same run, and compile times of whole `tessera compile` processes: the 4096^3 matmul,
//! how the time grows with problem size, and every example kernel. For those the bench
//! builds the `tessera` binary of its own profile first (`cargo build --bin tessera`, a
//! no-op when it is current) and runs it from the same target folder.
//!
//! ```text
//! cargo run --release --bin bench                  # the full table (a few minutes)
//! cargo run --release --bin bench -- --quick       # small sizes only, checked against the reference (CI)
//! cargo run --release --bin bench -- --write-md    # the full table, also written to BENCHMARKS.md
//! cargo run --release --bin bench -- --only attention
//! ```
//!
//! A kernel the pipeline cannot compile or run is a row that says so, never a crash: the
//! bench exits 0 unless it cannot write its output file or its arguments are wrong.
//! Kernel sources live in `bench/*.tsr`, compiled into this binary.

mod bench_sim;
#[path = "bench_real.rs"]
mod real;

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::time::Instant;
use tessera::driver::{self, CompileOptions, ParamSpec, Source};
use tessera::passes::Compilation;
use tessera::profile::{Diagnosis, Profile};
use tessera::reference::HostTensor;
use tessera::roofline;

const MATMUL: &str = include_str!("../../bench/matmul.tsr");
const NORMS: &str = include_str!("../../bench/norms.tsr");
const ATTENTION: &str = include_str!("../../bench/attention.tsr");
const MOVEMENT: &str = include_str!("../../bench/movement.tsr");

/// Target of the whole compile of the 4096^3 matmul, and of each example kernel.
const MATMUL_4096_COMPILE_MS: f64 = 100.0;
const EXAMPLE_COMPILE_MS: f64 = 20.0;

/// One row of the table: a kernel of a bench source at full and at quick sizes.
struct Case {
    name: &'static str,
    file: &'static str,
    text: &'static str,
    kernel: &'static str,
    full: &'static [(&'static str, i64)],
    quick: &'static [(&'static str, i64)],
    target: f64,
}

fn cases() -> Vec<Case> {
    let mm = |name, kernel, full, quick, target| Case {
        name,
        file: "bench/matmul.tsr",
        text: MATMUL,
        kernel,
        full,
        quick,
        target,
    };
    let norm = |name, kernel, target| Case {
        name,
        file: "bench/norms.tsr",
        text: NORMS,
        kernel,
        full: &[("N", 4096), ("D", 4096)],
        quick: &[("N", 256), ("D", 512)],
        target,
    };
    vec![
        mm(
            "matmul bf16 2048^3 -> f32",
            "matmul_bf16_f32",
            &[("M", 2048), ("K", 2048), ("N", 2048)],
            &[("M", 256), ("K", 256), ("N", 512)],
            0.90,
        ),
        mm(
            "matmul bf16 4096^3 -> bf16",
            "matmul_bf16_bf16",
            &[("M", 4096), ("K", 4096), ("N", 4096)],
            &[("M", 256), ("K", 512), ("N", 512)],
            0.95,
        ),
        mm(
            "matmul f32 1024^3",
            "matmul_f32",
            &[("M", 1024), ("K", 1024), ("N", 1024)],
            &[("M", 128), ("K", 256), ("N", 256)],
            0.85,
        ),
        mm(
            "matmul f8e4m3 4096^3 -> bf16",
            "matmul_fp8",
            &[("M", 4096), ("K", 4096), ("N", 4096)],
            &[("M", 256), ("K", 512), ("N", 512)],
            0.90,
        ),
        mm(
            "matmul bf16 1000x1500x700",
            "matmul_bf16_f32",
            &[("M", 1000), ("K", 1500), ("N", 700)],
            &[("M", 100), ("K", 150), ("N", 70)],
            0.75,
        ),
        norm("softmax f32[4096, 4096]", "softmax", 0.85),
        norm("rmsnorm f32[4096, 4096]", "rmsnorm", 0.85),
        norm("layernorm f32[4096, 4096]", "layernorm", 0.85),
        Case {
            name: "attention bf16 S=4096 D=128",
            file: "bench/attention.tsr",
            text: ATTENTION,
            kernel: "attention",
            full: &[("S", 4096), ("D", 128)],
            quick: &[("S", 256), ("D", 128)],
            target: 0.60,
        },
        // The RoPE target is 361,759 cycles: 0.3736 of its bound of 135,168.
        Case {
            name: "rope bf16[32, 2048, 128]",
            file: "bench/movement.tsr",
            text: MOVEMENT,
            kernel: "rope",
            full: &[("B", 32), ("S", 2048), ("D", 128)],
            quick: &[("B", 2), ("S", 256), ("D", 128)],
            target: 0.3736,
        },
        Case {
            name: "kv-cache append bf16[8, 2047+1, 128]",
            file: "bench/movement.tsr",
            text: MOVEMENT,
            kernel: "kv_append",
            full: &[("H", 8), ("S", 2047), ("D", 128)],
            quick: &[("H", 2), ("S", 255), ("D", 128)],
            target: 0.80,
        },
        Case {
            name: "embedding lookup bf16[128256, 4096], 2048 ids",
            file: "bench/movement.tsr",
            text: MOVEMENT,
            kernel: "embedding",
            full: &[("V", 128256), ("D", 4096), ("T", 2048)],
            quick: &[("V", 4096), ("D", 512), ("T", 256)],
            target: 0.70,
        },
    ]
}

/// What happened to one row.
enum Outcome {
    Ran(Row),
    /// The pipeline could not compile the kernel (or panicked doing so).
    NoCompile(String),
    /// It compiled but the interpreter failed.
    NoRun {
        compile_ms: f64,
        error: String,
    },
}

struct Row {
    cycles: u64,
    bound: u64,
    bound_engine: &'static str,
    compile_ms: f64,
    interp_s: f64,
    matmul_flops: u64,
    /// The comparison with the reference evaluator (quick mode only).
    check: Option<Result<String, String>>,
    /// Where the time went, in one line, when the efficiency is below the target.
    diagnosis: Option<String>,
}

impl Row {
    fn efficiency(&self) -> f64 {
        if self.cycles == 0 {
            0.0
        } else {
            self.bound as f64 / self.cycles as f64
        }
    }
}

/// Runs `f`, turning a panic into an error message.
fn guarded<T>(what: &str, f: impl FnOnce() -> Result<T, String>) -> Result<T, String> {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(r) => r,
        Err(p) => {
            let msg = p
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| p.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "unknown panic".into());
            Err(format!("{what} panicked: {msg}"))
        }
    }
}

/// The first line of an error, for a table cell.
fn first_line(s: &str) -> String {
    let line = s.lines().find(|l| !l.trim().is_empty()).unwrap_or("error");
    let mut t: String = line.chars().take(100).collect();
    if line.chars().count() > 100 {
        t.push_str("...");
    }
    t
}

/// Compiles `text` `repeat` times; returns the compilation and the fastest time in ms.
fn compile_timed(
    file: &str,
    text: &str,
    kernel: Option<&str>,
    defines: &[(&str, i64)],
    repeat: usize,
) -> Result<(Compilation, f64), String> {
    let src = Source {
        name: file.to_string(),
        text: text.to_string(),
    };
    let options = CompileOptions {
        kernel: kernel.map(str::to_string),
        defines: defines.iter().map(|(n, v)| (n.to_string(), *v)).collect(),
        ..CompileOptions::default()
    };
    let mut best = f64::INFINITY;
    let mut last = None;
    for _ in 0..repeat.max(1) {
        let t = Instant::now();
        let c = guarded("compile", || {
            driver::compile(&src, &options, &mut String::new()).map_err(|e| e.to_string())
        })?;
        best = best.min(t.elapsed().as_secs_f64() * 1e3);
        last = Some(c);
    }
    let c = last.ok_or("no compile ran")?;
    driver::program_of(&c).map_err(|e| e.to_string())?;
    Ok((c, best))
}

/// Runs the program of `c` on the interpreter (with events, for the profile) with
/// reproducible random inputs; returns the report, the outputs and the wall time. The
/// driver binds and reads `i32` tensors as their bytes (the bench once bound their empty
/// f32 vectors, so a take's indices were all zero and an argmax's positions unread).
fn execute(
    c: &Compilation,
    params: &[ParamSpec],
    inputs: &[HostTensor],
) -> Result<(runtime::Report, Vec<HostTensor>, f64), String> {
    let options = driver::RunOptions {
        debug_checks: false,
        ..driver::RunOptions::default()
    };
    let start = Instant::now();
    let (outputs, report) =
        driver::execute_compiled(c, params, inputs, &options).map_err(|e| e.to_string())?;
    Ok((report, outputs, start.elapsed().as_secs_f64()))
}

/// Compares outputs with the reference evaluator's: `ok`, or `ok, N unbounded` when the
/// default policy's error analysis could not bound N elements (they were not checked:
/// `--dtype-policy strict` checks them bit for bit), or the first mismatching output.
fn check(c: &Compilation, inputs: &[HostTensor], outputs: &[HostTensor]) -> Result<String, String> {
    let comparisons = driver::check_outputs(c, inputs, outputs).map_err(|e| e.to_string())?;
    for (i, cmp) in comparisons.iter().enumerate() {
        if cmp.bad > 0 {
            return Err(cmp.line(i));
        }
    }
    let unbounded: usize = comparisons.iter().map(|cmp| cmp.unbounded).sum();
    Ok(if unbounded > 0 {
        format!("ok, {unbounded} unbounded")
    } else {
        "ok".to_string()
    })
}

/// Where the time went, in one line: the bottleneck engine, its idle time by cause and
/// the work beyond the kernel's.
fn summary(p: &Profile, d: &Diagnosis) -> String {
    let what = if d.bottleneck == "dma" {
        "of its bandwidth"
    } else {
        "busy"
    };
    let mut s = format!(
        "bottleneck {} ({:.0}% {what})",
        d.bottleneck,
        100.0 * d.bottleneck_utilisation
    );
    let idle: Vec<String> = d
        .idle_by_cause
        .iter()
        .take(3)
        .map(|(cause, n)| {
            format!(
                "{cause} {:.0}%",
                100.0 * *n as f64 / p.total_cycles.max(1) as f64
            )
        })
        .collect();
    if !idle.is_empty() {
        s.push_str(&format!("; idle: {}", idle.join(", ")));
    }
    for note in &d.excess {
        // The notes' first clause is enough for a table.
        let short = note.split(" (").next().unwrap_or(note);
        s.push_str(&format!("; {short}"));
    }
    s
}

/// The parameters of a compiled kernel and the bench's inputs for them (seed 1).
fn bench_inputs(c: &Compilation) -> (Vec<ParamSpec>, Vec<HostTensor>) {
    let params = driver::params_of(&c.tensor);
    let inputs = params
        .iter()
        .enumerate()
        .map(|(i, p)| driver::random_tensor(p, 1, i as u64))
        .collect();
    (params, inputs)
}

fn run_case(case: &Case, quick: bool) -> Outcome {
    let defines = if quick { case.quick } else { case.full };
    // The compile is timed over a few runs; the fastest is reported.
    let (c, compile_ms) = match compile_timed(case.file, case.text, Some(case.kernel), defines, 3) {
        Ok(r) => r,
        Err(e) => return Outcome::NoCompile(first_line(&e)),
    };
    let (params, inputs) = bench_inputs(&c);
    let ran = guarded("interpreter", || execute(&c, &params, &inputs));
    let (report, outputs, interp_s) = match ran {
        Ok(r) => r,
        Err(e) => {
            return Outcome::NoRun {
                compile_ms,
                error: first_line(&e),
            }
        }
    };
    let timing = driver::program_of(&c)
        .map(|p| runtime::MachineConfig::new(p.preset).timing)
        .unwrap_or_default();
    let bound = roofline::bound(&c.tensor, &timing);
    let check = quick.then(|| guarded("reference", || check(&c, &inputs, &outputs)));
    let (bound_cycles, bound_engine) = (bound.cycles(), bound.engine());
    let diagnosis = driver::program_of(&c).ok().and_then(|program| {
        let p = Profile::new(program, &report, Some(bound), timing.dma_total_rate);
        let low = p.efficiency().is_some_and(|e| e < case.target);
        low.then(|| summary(&p, &p.diagnose(program, &report)))
    });
    Outcome::Ran(Row {
        cycles: report.total_cycles,
        bound: bound_cycles,
        bound_engine,
        diagnosis,
        compile_ms,
        interp_s,
        matmul_flops: report.matmul_flops,
        check,
    })
}

/// The results of a whole bench run, for the terminal and for BENCHMARKS.md.
struct Results {
    rows: Vec<(String, f64, Outcome)>,
    /// Per example kernel: the in-process compile and the whole process, in ms.
    examples: Vec<(String, ExampleTimes)>,
    /// Whole-process compiles of growing kernels (full mode only).
    growth: Result<Vec<Growth>, String>,
    numpy: Result<NumpyComparison, String>,
    /// The Llama-3-8B layer's `run --check` (full mode, all kernels or `--only llama`).
    llama: Result<bench_sim::Llama, String>,
    /// The second table: the real kernels of `bench/real`.
    real: real::RealResults,
    wall_s: f64,
}

struct NumpyComparison {
    interp_gflops: f64,
    numpy_gflops: f64,
    numpy_s: f64,
    interp_s: f64,
    /// The reference evaluator on the same matmul, best of 3, seconds.
    reference_s: Result<f64, String>,
}

fn pct(x: f64) -> String {
    format!("{:.2}%", 100.0 * x)
}

/// The table as Markdown (also readable in a terminal).
fn table(results: &Results, quick: bool) -> String {
    let mut s = String::from(
        "| kernel | cycles | bound (engine) | efficiency | target | met | compile ms | interpreter s |",
    );
    if quick {
        s.push_str(" check |");
    }
    s.push_str("\n|---|---:|---:|---:|---:|:-:|---:|---:|");
    if quick {
        s.push_str("---|");
    }
    s.push('\n');
    for (name, target, outcome) in &results.rows {
        match outcome {
            Outcome::Ran(r) => {
                s.push_str(&format!(
                    "| {name} | {} | {} ({}) | {} | {} | {} | {:.1} | {:.2} |",
                    r.cycles,
                    r.bound,
                    r.bound_engine,
                    pct(r.efficiency()),
                    pct(*target),
                    if r.efficiency() >= *target {
                        "yes"
                    } else {
                        "no"
                    },
                    r.compile_ms,
                    r.interp_s
                ));
                if quick {
                    let cell = match &r.check {
                        Some(Ok(ok)) => ok.clone(),
                        Some(Err(e)) => format!("MISMATCH: {e}"),
                        None => "-".into(),
                    };
                    s.push_str(&format!(" {cell} |"));
                }
            }
            Outcome::NoCompile(e) => {
                s.push_str(&format!(
                    "| {name} | does not compile yet: {} | | | {} | no | | |",
                    e.replace('|', "/"),
                    pct(*target)
                ));
                if quick {
                    s.push_str(" - |");
                }
            }
            Outcome::NoRun { compile_ms, error } => {
                s.push_str(&format!(
                    "| {name} | interpreter error: {} | | | {} | no | {compile_ms:.1} | |",
                    error.replace('|', "/"),
                    pct(*target)
                ));
                if quick {
                    s.push_str(" - |");
                }
            }
        }
        s.push('\n');
    }
    s
}

/// Where the time went for every kernel below its target.
fn diagnoses_text(results: &Results) -> String {
    let mut s = String::new();
    for (name, _, outcome) in &results.rows {
        if let Outcome::Ran(Row {
            diagnosis: Some(d), ..
        }) = outcome
        {
            s.push_str(&format!("- {name}: {d}\n"));
        }
    }
    if s.is_empty() {
        s.push_str("Every kernel that ran met its target.\n");
    }
    s
}

fn numpy_text(results: &Results) -> String {
    match &results.numpy {
        Ok(n) => {
            let share = n.interp_gflops / n.numpy_gflops.max(1e-12);
            format!(
                "Interpreter on the bf16 2048^3 matmul: {:.2} GFLOP/s simulated ({:.2} s, best \
                 of 3: loading, binding and running the program); NumPy float32 2048^3 matmul \
                 on the same machine: {:.1} GFLOP/s ({:.3} s, best of 3). The interpreter runs \
                 at {:.1}% of NumPy's rate (target >= {:.0}%: {}).\n",
                n.interp_gflops,
                n.interp_s,
                n.numpy_gflops,
                n.numpy_s,
                100.0 * share,
                100.0 * NUMPY_SHARE,
                if share >= NUMPY_SHARE {
                    "met"
                } else {
                    "not met"
                }
            ) + &match &n.reference_s {
                Ok(r) => {
                    let gflops = 2.0 * 2048f64.powi(3) / r / 1e9;
                    let share = gflops / n.numpy_gflops.max(1e-12);
                    format!(
                        "\nReference evaluator on the same matmul (its tensor IR, the same inputs): \
                         {gflops:.2} GFLOP/s ({r:.2} s, best of 3), {:.1}% of NumPy's rate \
                         (target >= {:.0}%: {}).\n",
                        100.0 * share,
                        100.0 * bench_sim::REFERENCE_SHARE,
                        if share >= bench_sim::REFERENCE_SHARE {
                            "met"
                        } else {
                            "not met"
                        }
                    )
                }
                Err(e) => format!("\nReference evaluator not measured: {e}\n"),
            }
        }
        Err(e) => format!("NumPy comparison skipped: {e}\n"),
    }
}

fn examples_text(results: &Results) -> String {
    let mut s = format!(
        "| example kernel | in-process ms | process ms (target < {EXAMPLE_COMPILE_MS:.0}) | met |\n\
         |---|---:|---:|:-:|\n"
    );
    for (name, r) in &results.examples {
        match r {
            Ok((inside, ms)) => s.push_str(&format!(
                "| {name} | {inside:.2} | {ms:.1} | {} |\n",
                if *ms < EXAMPLE_COMPILE_MS {
                    "yes"
                } else {
                    "no"
                }
            )),
            Err(e) => s.push_str(&format!(
                "| {name} | does not compile: {} | | no |\n",
                e.replace('|', "/")
            )),
        }
    }
    s
}

/// An example kernel's compile times in ms: (in-process, whole process).
type ExampleTimes = Result<(f64, f64), String>;

/// One kernel of the compile-time growth table: its label, bench file, source, kernel
/// and sizes.
type GrowthKernel = (
    String,
    &'static str,
    &'static str,
    &'static str,
    Vec<(&'static str, i64)>,
);

/// One kernel of the compile-time growth table.
struct Growth {
    label: String,
    /// Instructions of the program (every stream).
    insts: usize,
    /// The fastest whole `tessera compile` process, in ms.
    ms: Result<f64, String>,
}

/// The 4096^3 matmul compile time line (its row of the growth table).
fn matmul_compile_text(results: &Results) -> String {
    let row = results
        .growth
        .as_ref()
        .ok()
        .and_then(|g| g.iter().find(|r| r.label.starts_with(MATMUL_4096_LABEL)));
    match row.map(|r| &r.ms) {
        Some(Ok(ms)) => format!(
            "Compile of the bf16 4096^3 matmul, the whole `tessera compile` process (start, \
             compile, encode, write the `.tbin`), fastest of {PROCESS_REPEAT}: {ms:.1} ms \
             (target < {MATMUL_4096_COMPILE_MS:.0} ms: {}).\n",
            if *ms < MATMUL_4096_COMPILE_MS {
                "met"
            } else {
                "not met"
            }
        ),
        Some(Err(e)) => format!("Compile of the bf16 4096^3 matmul failed: {e}\n"),
        None => match &results.growth {
            Err(e) => format!("Compile of the bf16 4096^3 matmul not measured: {e}\n"),
            Ok(_) => "Compile of the bf16 4096^3 matmul: not measured.\n".into(),
        },
    }
}

/// How compile time grows with the problem: the growth table.
fn growth_text(results: &Results) -> String {
    let rows = match &results.growth {
        Ok(rows) => rows,
        Err(e) => return format!("Not measured: {e}\n"),
    };
    let mut s = String::from(
        "| kernel | instructions | process ms | us per instruction |\n|---|---:|---:|---:|\n",
    );
    for r in rows {
        match &r.ms {
            Ok(ms) => s.push_str(&format!(
                "| {} | {} | {ms:.1} | {:.2} |\n",
                r.label,
                r.insts,
                ms * 1e3 / r.insts.max(1) as f64
            )),
            Err(e) => s.push_str(&format!(
                "| {} | {} | fails: {} | |\n",
                r.label,
                r.insts,
                e.replace('|', "/")
            )),
        }
    }
    s
}

/// The label of the 4096^3 matmul in the growth table.
const MATMUL_4096_LABEL: &str = "matmul bf16 4096^3";
/// Whole-process compiles are timed this many times; the fastest is reported.
const PROCESS_REPEAT: usize = 5;

/// The `tessera` binary of the bench's own build profile, built first so that it is
/// current (cargo does nothing when it is).
fn tessera_exe() -> Result<PathBuf, String> {
    let exe = std::env::current_exe().map_err(|e| format!("cannot find the bench binary: {e}"))?;
    let dir = exe
        .parent()
        .ok_or("the bench binary has no folder")?
        .to_path_buf();
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_string());
    let mut build = Command::new(cargo);
    build
        .args(["build", "--quiet", "--bin", "tessera"])
        .current_dir(env!("CARGO_MANIFEST_DIR"));
    if !cfg!(debug_assertions) {
        build.arg("--release");
    }
    // Build into the folder the bench runs from, whatever CARGO_TARGET_DIR says.
    if let Some(target) = dir.parent() {
        build.env("CARGO_TARGET_DIR", target);
    }
    let status = build
        .status()
        .map_err(|e| format!("cannot run cargo to build `tessera`: {e}"))?;
    if !status.success() {
        return Err(format!("`cargo build --bin tessera` failed ({status})"));
    }
    let path = dir.join(format!("tessera{}", std::env::consts::EXE_SUFFIX));
    if path.is_file() {
        Ok(path)
    } else {
        Err(format!("{} is missing after the build", path.display()))
    }
}

/// Runs `tessera compile` on a file `repeat` times; the fastest wall time in ms.
fn process_compile_ms(
    exe: &Path,
    file: &Path,
    kernel: Option<&str>,
    defines: &[(&str, i64)],
    repeat: usize,
) -> Result<f64, String> {
    let out = std::env::temp_dir().join(format!("tessera-bench-{}.tbin", std::process::id()));
    let mut best = f64::INFINITY;
    for _ in 0..repeat.max(1) {
        let mut cmd = Command::new(exe);
        cmd.arg("compile").arg(file);
        if let Some(k) = kernel {
            cmd.args(["-k", k]);
        }
        for (n, v) in defines {
            cmd.arg("-D").arg(format!("{n}={v}"));
        }
        cmd.arg("-o").arg(&out);
        let t = Instant::now();
        let result = cmd.output();
        let ms = t.elapsed().as_secs_f64() * 1e3;
        let output = result.map_err(|e| format!("cannot run {}: {e}", exe.display()))?;
        if !output.status.success() {
            let _ = std::fs::remove_file(&out);
            return Err(first_line(&String::from_utf8_lossy(&output.stderr)));
        }
        best = best.min(ms);
    }
    let _ = std::fs::remove_file(&out);
    Ok(best)
}

/// The growth table: bf16 matmuls and attention of growing size, each compiled in-process
/// once (for its instruction count) and as a whole process.
fn measure_growth(exe: &Path) -> Vec<Growth> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut kernels: Vec<GrowthKernel> = Vec::new();
    for n in [256, 512, 1024, 2048, 4096, 8192] {
        kernels.push((
            format!("matmul bf16 {n}^3"),
            "bench/matmul.tsr",
            MATMUL,
            "matmul_bf16_bf16",
            vec![("M", n), ("K", n), ("N", n)],
        ));
    }
    for s in [1024, 2048, 4096, 8192] {
        kernels.push((
            format!("attention bf16 S={s} D=128"),
            "bench/attention.tsr",
            ATTENTION,
            "attention",
            vec![("S", s), ("D", 128)],
        ));
    }
    let mut out = Vec::new();
    for (label, file, text, kernel, defines) in kernels {
        eprintln!("bench: compile time of {label} ...");
        let insts = compile_timed(file, text, Some(kernel), &defines, 1)
            .ok()
            .and_then(|(c, _)| {
                driver::program_of(&c)
                    .ok()
                    .map(|p| p.streams.iter().map(Vec::len).sum())
            })
            .unwrap_or(0);
        let ms = process_compile_ms(
            exe,
            &root.join(file),
            Some(kernel),
            &defines,
            PROCESS_REPEAT,
        );
        out.push(Growth { label, insts, ms });
    }
    out
}

/// Every kernel of every example file, compiled `repeat` times in-process and as a whole
/// `tessera compile` process (fastest of each reported).
fn compile_examples(exe: &Result<PathBuf, String>, repeat: usize) -> Vec<(String, ExampleTimes)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .map(|d| {
            d.filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|x| x == "tsr"))
                .collect()
        })
        .unwrap_or_default();
    files.sort();
    let mut out = Vec::new();
    for path in files {
        let file = path
            .file_name()
            .map(|n| n.to_string_lossy().to_string())
            .unwrap_or_default();
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) => {
                out.push((file, Err(e.to_string())));
                continue;
            }
        };
        let names = tessera::frontend::kernel_names(&text);
        for k in &names {
            let label = if names.len() > 1 {
                format!("{file} -k {k}")
            } else {
                file.clone()
            };
            let r = compile_timed(&file, &text, Some(k), &[], repeat)
                .map(|(_, ms)| ms)
                .and_then(|inside| {
                    let exe = exe
                        .as_ref()
                        .map_err(|e| format!("no process timing: {e}"))?;
                    let ms = process_compile_ms(exe, &path, Some(k), &[], repeat)?;
                    Ok((inside, ms))
                })
                .map_err(|e| first_line(&e));
            out.push((label, r));
        }
    }
    out
}

/// The row whose interpreter run is compared with NumPy, and the share of NumPy's FLOP
/// rate the interpreter must reach.
const NUMPY_ROW: &str = "matmul bf16 2048^3";
const NUMPY_SHARE: f64 = 0.5;

/// `n` more interpreter runs of the NumPy comparison's kernel (compiled again, the same
/// inputs), in seconds each; none when it does not compile or run.
fn interp_reruns(n: usize) -> Vec<f64> {
    let Some(case) = cases().into_iter().find(|c| c.name.starts_with(NUMPY_ROW)) else {
        return Vec::new();
    };
    let Ok((c, _)) = compile_timed(case.file, case.text, Some(case.kernel), case.full, 1) else {
        return Vec::new();
    };
    let (params, inputs) = bench_inputs(&c);
    (0..n)
        .filter_map(|_| execute(&c, &params, &inputs).ok().map(|r| r.2))
        .collect()
}

/// The reference evaluator on the NumPy comparison's kernel, best of 3, in seconds.
fn reference_rerun() -> Result<f64, String> {
    let case = cases()
        .into_iter()
        .find(|c| c.name.starts_with(NUMPY_ROW))
        .ok_or("no such row")?;
    let (c, _) = compile_timed(case.file, case.text, Some(case.kernel), case.full, 1)?;
    let (_, inputs) = bench_inputs(&c);
    guarded("reference", || bench_sim::reference_seconds(&c, &inputs, 3))
}

/// NumPy's float32 `n^3` matmul, best of 3, in seconds.
fn numpy_matmul_seconds(n: usize) -> Result<f64, String> {
    let script = format!(
        "import time\nimport numpy as np\nn = {n}\nrng = np.random.default_rng(0)\n\
         a = rng.random((n, n), dtype=np.float32)\nb = rng.random((n, n), dtype=np.float32)\n\
         a @ b\nbest = 1e9\nfor _ in range(3):\n    t0 = time.perf_counter()\n    a @ b\n    \
         best = min(best, time.perf_counter() - t0)\nprint(best)\n"
    );
    let out = Command::new("python3")
        .arg("-c")
        .arg(&script)
        .output()
        .map_err(|e| format!("cannot run python3 ({e})"))?;
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        let last = err.lines().last().unwrap_or("").to_string();
        return Err(format!(
            "python3 with numpy failed ({last}); try `pip install numpy`"
        ));
    }
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse::<f64>()
        .map_err(|e| format!("unexpected output from python3: {e}"))
}

fn run_all(quick: bool, only: Option<&str>) -> Results {
    let start = Instant::now();
    let mut rows = Vec::new();
    for case in cases() {
        if only.is_some_and(|o| !case.name.contains(o) && !case.kernel.contains(o)) {
            continue;
        }
        eprintln!("bench: {} ...", case.name);
        let t = Instant::now();
        let outcome = run_case(&case, quick);
        eprintln!(
            "bench: {} done in {:.1} s",
            case.name,
            t.elapsed().as_secs_f64()
        );
        // Quick rows are named by their kernel and actual sizes, not the table's.
        let name = if quick {
            let sizes: Vec<String> = case.quick.iter().map(|(n, v)| format!("{n}={v}")).collect();
            format!("{} {}", case.kernel, sizes.join(" "))
        } else {
            case.name.to_string()
        };
        rows.push((name, case.target, outcome));
    }
    let real = real::run_all(quick, only);
    let numpy = if quick {
        Err("not run in --quick mode".to_string())
    } else {
        let interp = rows.iter().find_map(|(n, _, o)| match o {
            Outcome::Ran(r) if n.starts_with(NUMPY_ROW) => Some(r),
            _ => None,
        });
        match interp {
            None => Err("the bf16 2048^3 matmul did not run".to_string()),
            Some(r) => {
                // Both sides best of three: the row's run and two more.
                eprintln!("bench: interpreter again and numpy ...");
                let interp_s = interp_reruns(2).into_iter().fold(r.interp_s, f64::min);
                eprintln!("bench: the reference evaluator on the same matmul ...");
                let reference_s = reference_rerun();
                numpy_matmul_seconds(2048).map(|numpy_s| NumpyComparison {
                    interp_gflops: r.matmul_flops as f64 / interp_s / 1e9,
                    numpy_gflops: 2.0 * 2048f64.powi(3) / numpy_s / 1e9,
                    numpy_s,
                    interp_s,
                    reference_s,
                })
            }
        }
    };
    eprintln!("bench: building the `tessera` binary for whole-process compile times ...");
    let exe = tessera_exe();
    let growth = match (&exe, quick || only.is_some()) {
        (_, true) => Err("not run in --quick or --only mode".to_string()),
        (Err(e), _) => Err(e.clone()),
        (Ok(exe), false) => Ok(measure_growth(exe)),
    };
    let llama = if quick {
        Err("not run in --quick mode".to_string())
    } else if only.is_some_and(|o| !"llama".contains(o) && !o.contains("llama")) {
        Err("not run with this --only".to_string())
    } else {
        eprintln!("bench: the Llama-3-8B layer's run --check ...");
        guarded("llama layer", || bench_sim::llama(&exe))
    };
    eprintln!("bench: compiling the examples ...");
    let examples = compile_examples(&exe, if quick { 1 } else { PROCESS_REPEAT });
    Results {
        rows,
        examples,
        growth,
        numpy,
        llama,
        real,
        wall_s: start.elapsed().as_secs_f64(),
    }
}

/// The machine the bench ran on: processors and CPU model.
fn machine() -> String {
    let nproc = std::thread::available_parallelism()
        .map(|n| n.get().to_string())
        .unwrap_or_else(|_| "?".into());
    let model = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, m)| m.trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    format!(
        "{nproc} processors (nproc), {model}, SIMD {}",
        bench_sim::simd_level()
    )
}

/// Today's UTC date as YYYY-MM-DD (days since the epoch to a civil date).
fn today() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let z = (secs / 86_400) as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02}")
}

/// The commit the bench was built from, and whether the working tree had other changes.
fn commit() -> String {
    let git = |args: &[&str]| {
        Command::new("git")
            .args(args)
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
    };
    match git(&["rev-parse", "--short", "HEAD"]) {
        Some(c) => {
            let dirty = git(&["status", "--porcelain", "--untracked-files=no"])
                .is_some_and(|s| !s.is_empty());
            if dirty {
                format!("commit {c} plus uncommitted changes")
            } else {
                format!("commit {c}")
            }
        }
        None => "an unknown commit".into(),
    }
}

/// Why attention cannot reach its target with the compiler's current algorithms, and how
/// close the odd matmul is to its own, from the costs of `docs/machine.md` (kept with the
/// table, so that `--write-md` never loses it).
const CEILINGS: &str = "\
### Ceilings of the two hardest kernels

Both are limited by work the roofline bound does not count but the machine model makes \
unavoidable for the algorithm the compiler uses; the arithmetic uses the costs of `docs/machine.md`.

- **bf16 matmul 1000 x 1500 x 700 (target 0.75, met by 10 cycles).** A is row-major, so \
its K axis is contiguous and it must be transposed to put K on partitions: a DMA with \
2-byte runs would cost 64 bytes a run (32 times the data, about 375,000 cycles for A), so \
96 chunks of 128 x 128 are transposed, on the PE array (64 cycles each at 2 columns/cycle, \
plus a copy out of PSUM) or on GpSimd (`partition_transpose`, 576 cycles, no copy). Matmul \
cost depends on the moving columns only, so the remainder chunks (M = 7 x 128 + 104, \
K = 11 x 128 + 92) cost as much as full ones: 8 x 12 x 350 = 33,600 cycles against the \
bound's 32,044. The kernel is nearly DMA-bound too (7.9 MB at 256 B/cycle: 30,859 cycles), \
and the first four M chunks must stream all of the first N block's B (1.5 MB) with their \
A. The Tensor engine waits 3,113 cycles in the first 3,700 (one DMA latency, then the \
first K step's 256 KB of A slices and B at 256 B/cycle) and is busy 37,378 (33,600 of \
matmuls, 59 transposes; GpSimd does the other 37). After the last matmul (cycle 40,491) \
come the kernel's last 64 columns: copied out of PSUM in two 32-column halves on Vector \
and Scalar side by side (96 cycles instead of 128 for one copy) and stored as one burst \
over all 16 queues (a store's 2,000-cycle latency, then 2 KB a queue: 128 cycles), \
2,224 cycles in all. What is left is the DMA-paced first group: every chunk of it needs \
each step's B tile, and a smaller first group feeds the Tensor engine too slowly later \
(two or three chunks: 46,602 and 44,489 cycles); loading the first B tile in two column \
halves starts the first matmul earlier (cycle 2,420 instead of 2,672) but not the next \
ones, which wait for the rest of the step's 256 KB either way.
- **attention S = 4096, D = 128 (target 0.60).** The bound is 131,072 cycles (Tensor, and \
equally the Scalar engine's exponentials: S^2 / 128 per cycle). Per block of 128 queries x \
512 keys, Vector and Scalar must take the maximum (576 cycles, with the running bias folded \
in by `tensor_reduce_scalar`; GpSimd cannot read PSUM), the exponentials (576), copy the \
transposed probabilities out of PSUM (two query tiles' three chunks of four in one copy, \
832 for two blocks: 416; GpSimd transposes the fourth), rescale the accumulator (192) and \
find the rescale factors (one subtraction and one exponential for the group's four tiles: \
35): 1,795 cycles, 256 blocks, at least 229,760 cycles each for the two engines even if \
always busy, so efficiency <= 0.57 with this algorithm. Measured 0.544: Vector and Scalar \
are 97% and 95% busy (their steady state is balanced to within 4 cycles a group and block; \
Vector also does the final divisions), and the idle left is mostly the start (waiting for the \
first K^T and q^T, about 2,700 cycles) and the end (the last stores' latency, about 2,100); \
the turns between query groups no longer drain the engines (the next group's first scores \
are computed in this group's last block). The other algorithms within these costs: (a) \
superblocks of two key blocks (both banks of scores before one maximum, one rescale for \
1,024 keys) cut the Vector and Scalar work by 8.5%, but leave PSUM room for two query tiles \
in flight instead of four, and with two the chain maximum -> exponentials -> next scores \
leaves both engines idle a quarter of the time (measured 284,081 cycles against 251,266 \
then); (b) a first pass for the exact row maximum (S on the PE array, the maximum on \
Vector), then S^T computed directly (keys on partitions, so the exponentials write p^T and \
no copy out of PSUM is needed) with -c*m added by a one-row matmul: the Tensor engine then \
needs S (256) + S^T (256) + the bias row (128 in FP8 digits, 256 in bf16) + P V (256) per \
block, at least 229,000 cycles, ceiling 0.57; (c) the same with the maximum from FP8 scores \
(128 a block) has a ceiling of 0.67, but an FP8 maximum can be wrong by more than the \
exponent range for inputs of large norm (FP8 saturates at 448), and the exponentials then \
overflow or underflow to a row of zeros: silently wrong output, which the compiler must \
not produce. (d) GpSimd as a third engine: it cannot read PSUM, so of the work above it \
can only take p^T chunks (576 cycles each, against 128 for Vector or Scalar), besides the \
q^T transposes (32 x 576) and the running sums (68 a tile and block) it does already. With \
the chunks split at the best ratio and all three engines 100% busy, the per-block \
schedule is bounded by about 227,400 cycles of work an engine plus about 4,800 \
of start and end: 0.565 (with the split used, one chunk in four, and the final divisions: \
232,800 + 4,800, 0.552, against 0.544 measured). Superblocks of n key \
blocks (one maximum chain, one rescale and one set of factors per n blocks; a PSUM tile may \
not cross a bank, so the maxima and exponentials stay one instruction a bank, and a query \
tile holds n banks of scores until its last exponential) raise that bound to 0.599 (n = 2), \
0.612 (n = 3), 0.619 (n = 4) and 0.640 with no rescale at all: 0.60 needs n >= 3 with \
Vector, Scalar and GpSimd all at least 98% busy together while each query tile in flight \
holds three of PSUM's eight banks, where the current schedule reaches 97%, 95% and 75% with \
four tiles of one bank each. Measured on the current schedule: deleting every rescale \
(wrong outputs; what any superblock could save at most) gives 231,998 cycles, 0.565; one \
more chunk to GpSimd in one tile and block of every eight, 239,978 or 243,746 depending on \
which. No algorithm found keeps the exact softmax and reaches 0.60 on this machine model.
";

/// What the real-kernel table is and how to read it (kept with the table for `--write-md`).
const REAL_INTRO: &str = "\
The first table measures the forms the compiler was tuned on. This one measures the same \
kinds of math as their authors wrote them: kernels ported from public sources (NKI samples, \
Triton tutorials, Llama, Mistral and Mixtral reference code; each file of `bench/real` names \
its source in its header, and the list is below) at their real sizes, in today's language \
(no slicing, gather or integers yet). Each row is `tessera run bench/real/FILE --random 1 \
--check --report` in-process: the file's own size defaults, the bench's seed-1 inputs, the \
outputs compared with the reference evaluator within docs/numerics.md's bound (check; `ok, \
N unbounded` says that the bound analysis could not bound N elements, which were then not \
checked: `--dtype-policy strict` checks them bit for bit), the same roofline bound as above, and the profiler's bottleneck with its idle time by cause. \
Targets: every kernel >= 60% unless argued below, median >= 85%.
";

/// The reading of the real-kernel table: which general mechanism each slow row lacks.
const REAL_NOTES: &str = include_str!("../../bench/real/NOTES.md");

fn markdown(results: &Results) -> String {
    format!(
        "# Benchmarks\n\n\
         Written by `cargo run --release --bin bench -- --write-md` on {date}, on {machine}, \
         at {commit}; the whole run took {wall:.0} s.\n\n\
         Each kernel is compiled from source (`bench/*.tsr`) by the whole pipeline and run on \
         the interpreter, whose timing model gives the cycles. The bound is the kernel's roofline \
         bound from tensor IR alone (compulsory HBM traffic at the DMA peak, matmul FLOPs at the \
         Tensor engine's peak for the operand dtype, transcendentals at the Scalar engine's peak; \
         `compiler/roofline.rs`), so emitting more or other instructions cannot make a kernel look \
         better. Efficiency = bound / cycles. Compile ms is the fastest of three compiles in the \
         bench's process (source text to program, no process start or file output) in a \
         release build (whole-process times are under Compile time below); interpreter s is the wall time of loading, \
         binding and running the program (recording the per-instruction events the profile \
         uses). The machine is shared (2 processors, other builds running), so wall times \
         vary by tens of percent between runs; cycles do not.\n\n\
         {table}\n\
         {mm_compile}\n\
         ## Where the time went\n\n\
         For each kernel below its target, the profiler's summary (`tessera run --report` \
         prints the whole of it, with the largest idle gaps and what they waited on; \
         `--trace` shows the timeline in Perfetto): the bottleneck engine (closest to its \
         peak), its idle time by cause as a share of the run, and the work done beyond the \
         kernel's.\n\n{diagnoses}\n{ceilings}\n\
         ## Real kernels\n\n{real_intro}\n{real_table}\n{real_notes}\n\
         Sources of the real kernels:\n\n{real_sources}\n\
         ## Interpreter speed\n\n{numpy}\n{llama}\n\
         ## Compile time\n\n\
         Whole `tessera compile` processes of a release build (start, compile, encode and \
         write the `.tbin`; the verifier runs only when `--verify-ir` asks), fastest of \
         {repeat}. How the time grows with the problem: with the size, the tiling emits more \
         instructions, and the pipeline's time follows the instructions it emits (each tile \
         pass walks them a few times; the hazard tracking of `sync` costs O(log n) per \
         access), not the FLOPs: a process costs 2 to 3 ms to start, and from a few \
         thousand instructions on the time per instruction stays within a small factor \
         while the matmul grows 32,768-fold in FLOPs.\n\n{growth}\n\
         The example kernels (in-process: the pipeline alone, for comparison):\n\n{examples}\n\
         ## Comparison anchors\n\n\
         What comparable systems reach on real hardware or in established models, for scale:\n\n\
         - NKI's matmul tutorial reaches 85% of the hardware's FLOPs on Trn1 \
         (4096 x 8192 x 8192, bf16).\n\
         - An 8192^3 bf16 matmul on an H100 runs at about 80% of its dense peak.\n\
         - SCALE-Sim's fold model gives 91.5% utilisation (weight-stationary) for a 4096^3 \
         matmul on a 128 x 128 systolic array.\n\n\
         Our efficiencies are against a simulated machine (`docs/machine.md`), whose \
         timing model is simpler than real hardware: they say how close the compiler's schedule \
         comes to the model's bound, not what a Trainium would measure.\n",
        date = today(),
        commit = commit(),
        machine = machine(),
        wall = results.wall_s,
        table = table(results, false),
        mm_compile = matmul_compile_text(results),
        diagnoses = diagnoses_text(results),
        ceilings = CEILINGS,
        real_intro = REAL_INTRO,
        real_table = real::table(&results.real),
        real_notes = REAL_NOTES,
        real_sources = real::sources(&results.real),
        numpy = numpy_text(results),
        llama = bench_sim::llama_text(&results.llama),
        examples = examples_text(results),
        growth = growth_text(results),
        repeat = PROCESS_REPEAT,
    )
}

fn usage() -> ExitCode {
    eprintln!(
        "usage: bench [--quick] [--write-md [PATH]] [--only NAME]\n  \
         --quick      small sizes only, checked against the reference evaluator\n  \
         --write-md   also write the results to BENCHMARKS.md (or PATH)\n  \
         --only NAME  only the kernels whose name contains NAME"
    );
    ExitCode::from(2)
}

fn main() -> ExitCode {
    let mut quick = false;
    let mut write_md: Option<PathBuf> = None;
    let mut only: Option<String> = None;
    let mut args = std::env::args().skip(1).peekable();
    while let Some(a) = args.next() {
        match a.as_str() {
            "--quick" => quick = true,
            "--write-md" => {
                let path = match args.peek() {
                    Some(p) if !p.starts_with("--") => args.next().map(PathBuf::from),
                    _ => None,
                };
                write_md = Some(path.unwrap_or_else(|| {
                    Path::new(env!("CARGO_MANIFEST_DIR")).join("BENCHMARKS.md")
                }));
            }
            "--only" => match args.next() {
                Some(o) => only = Some(o),
                None => return usage(),
            },
            "-h" | "--help" => {
                usage();
                return ExitCode::SUCCESS;
            }
            _ => return usage(),
        }
    }
    if quick && write_md.is_some() {
        eprintln!("bench: --write-md records the full sizes; it cannot be combined with --quick");
        return ExitCode::from(2);
    }
    let results = run_all(quick, only.as_deref());
    let mode = if quick {
        "quick mode: small sizes, numbers not comparable with the targets"
    } else {
        "full sizes"
    };
    println!("Tessera bench ({mode}) on {}\n", machine());
    println!("{}", table(&results, quick));
    if !quick {
        println!("{}", matmul_compile_text(&results));
        println!("Compile time growth:\n{}", growth_text(&results));
        println!(
            "Where the time went (kernels below target):\n{}",
            diagnoses_text(&results)
        );
    }
    println!("Real kernels:\n{}", real::table(&results.real));
    println!("{}", numpy_text(&results));
    if !quick {
        println!("{}", bench_sim::llama_text(&results.llama));
    }
    println!("{}", examples_text(&results));
    println!("bench wall time: {:.1} s", results.wall_s);
    if let Some(path) = write_md {
        if let Err(e) = std::fs::write(&path, markdown(&results)) {
            eprintln!("bench: cannot write {}: {e}", path.display());
            return ExitCode::from(1);
        }
        eprintln!("bench: wrote {}", path.display());
    }
    ExitCode::SUCCESS
}
