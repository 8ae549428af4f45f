//! Helpers shared by the end-to-end test files (`examples.rs`, `differential.rs`): a
//! temporary folder, a runner that compiles a kernel through the whole pipeline and
//! compares the interpreter with the reference evaluator, the random kernel generator
//! (`kernel_gen`) and the pass bisector (`bisect`).
//!
//! Each test file uses a different subset of these helpers, so dead-code warnings are
//! silenced for the module as a whole.
#![allow(dead_code)]

pub mod attention_gen;
pub mod bisect;
pub mod conv_gen;
pub mod kernel_gen;
pub mod v2_gen;

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use tessera::driver::{self, CompileOptions, Source};
use tessera::passes::PassOptions;
use tessera::{frontend, ir, reference};

/// Compiles `text` (named `k.tsr`) through the whole pipeline with `passes`, verifying the
/// IR after every pass; panics with the diagnostic on any error.
pub fn compile_verified(text: &str, passes: PassOptions) -> tessera::passes::Compilation {
    let source = Source {
        name: "k.tsr".to_string(),
        text: text.to_string(),
    };
    let options = CompileOptions {
        passes,
        verify_ir: true,
        ..CompileOptions::default()
    };
    driver::compile(&source, &options, &mut String::new()).unwrap_or_else(|e| panic!("{e}"))
}

/// The inputs `--random 1` gives `c`'s kernel, each multiplied by `scale` and rounded to
/// its dtype (wider scores and larger errors than the unit range gives).
pub fn scaled_random_inputs(
    c: &tessera::passes::Compilation,
    scale: f32,
) -> Vec<reference::HostTensor> {
    driver::params_of(&c.tensor)
        .iter()
        .enumerate()
        .map(|(i, p)| {
            let mut t = driver::random_tensor(p, 1, i as u64);
            for x in &mut t.data {
                *x = runtime::numeric::round(t.dtype, *x * scale);
            }
            t
        })
        .collect()
}

/// The RoPE kernel of the column-view and packed-row tests: Llama's rotary embedding on `q[B, S, D]` with `cos` and `sin` of `[S, D]`.
pub fn rope(b: u64, s: u64, d: u64) -> String {
    format!(
        "kernel rope(q: bf16[{b}, {s}, {d}], cos: bf16[{s}, {d}], sin: bf16[{s}, {d}]) -> bf16[{b}, {s}, {d}] {{\n\
         \x20   let rot = concat([-q[..., {h}:], q[..., :{h}]], axis=-1);\n\
         \x20   return (q * cos + rot * sin) as bf16;\n\
         }}\n",
        h = d / 2
    )
}

/// Runs `c` on seed-1 random inputs (input `i` from stream `i`); returns the interpreter's
/// report and each output compared with the reference evaluator's.
pub fn run_seed1(c: &tessera::passes::Compilation) -> (runtime::Report, Vec<driver::Comparison>) {
    let program = driver::program_of(c).unwrap();
    let params = driver::params_of(&c.tensor);
    let inputs = seed1_inputs(c);
    let (outputs, report) = driver::execute(program, &params, &inputs).unwrap();
    (report, driver::check_outputs(c, &inputs, &outputs).unwrap())
}

/// The seed-1 random inputs of `c`'s kernel (input `i` from stream `i`).
pub fn seed1_inputs(c: &tessera::passes::Compilation) -> Vec<reference::HostTensor> {
    driver::params_of(&c.tensor)
        .iter()
        .enumerate()
        .map(|(i, p)| driver::random_tensor(p, 1, i as u64))
        .collect()
}

/// The default pipeline's options and the strict dtype policy's.
pub fn both_policies() -> [PassOptions; 2] {
    [
        PassOptions::default(),
        PassOptions {
            strict_dtypes: true,
            ..PassOptions::default()
        },
    ]
}

/// A folder under the system's temporary folder, removed (with its contents) on drop.
pub struct TempDir(PathBuf);

impl TempDir {
    /// Creates a fresh folder whose name contains `tag`, the process id and a counter.
    pub fn new(tag: &str) -> TempDir {
        use std::sync::atomic::{AtomicU64, Ordering};
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let path = std::env::temp_dir().join(format!("tessera-{tag}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).expect("can create a temporary folder");
        TempDir(path)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// How one run of a kernel through the compiler and the interpreter went.
#[derive(Clone, Debug)]
pub enum Outcome {
    /// Every output is within tolerance of the reference.
    Match,
    /// At least one output is outside tolerance; the text describes each output.
    Mismatch { details: String, max_abs: f64 },
    /// The source did not check (a generator bug when the source is generated).
    CheckError(String),
    /// The reference evaluator failed.
    ReferenceError(String),
    /// `driver::compile` failed, or produced no program.
    CompileError(String),
    /// The interpreter failed on the program.
    ExecError(String),
}

impl Outcome {
    pub fn is_match(&self) -> bool {
        matches!(self, Outcome::Match)
    }

    /// A one-paragraph description for failure messages.
    pub fn describe(&self) -> String {
        match self {
            Outcome::Match => "outputs match the reference".to_string(),
            Outcome::Mismatch { details, .. } => format!("outputs differ:\n{details}"),
            Outcome::CheckError(e) => format!("the kernel does not check:\n{e}"),
            Outcome::ReferenceError(e) => format!("the reference evaluator failed: {e}"),
            Outcome::CompileError(e) => format!("compilation failed: {e}"),
            Outcome::ExecError(e) => format!("the interpreter failed: {e}"),
        }
    }
}

/// Compiles `text` through the whole pipeline with the given pass options, runs it on the
/// interpreter with `driver::random_tensor` inputs of `seed`, and compares each output
/// with the reference evaluator run on the *unoptimised* tensor IR (lowering's output),
/// so that a bug in a tensor-level pass is caught too.
pub fn run_case(text: &str, passes: &PassOptions, seed: u64) -> Outcome {
    run_case_scaled(text, passes, seed, 1.0)
}

/// `run_case` with every input multiplied by `scale` (then rounded to its dtype): inputs
/// of a wider range than `driver::random_tensor`'s [-1, 1], as real activations have.
pub fn run_case_scaled(text: &str, passes: &PassOptions, seed: u64, scale: f32) -> Outcome {
    let checked = match frontend::check_file(text, &[], None) {
        Ok(k) => k,
        Err(diags) => {
            let rendered = tessera::diagnostic::render(&diags, "generated.tsr", text, false);
            return Outcome::CheckError(rendered);
        }
    };
    let func = ir::lower(&checked[0]);
    let params = driver::params_of(&func);
    let inputs: Vec<_> = params
        .iter()
        .enumerate()
        .map(|(i, p)| {
            let mut t = driver::random_tensor(p, seed, i as u64);
            for x in &mut t.data {
                *x = runtime::numeric::round(t.dtype, *x * scale);
            }
            t
        })
        .collect();
    let want = match reference::evaluate(&func, &inputs) {
        Ok(w) => w,
        Err(e) => return Outcome::ReferenceError(e.to_string()),
    };
    let source = Source {
        name: "generated.tsr".to_string(),
        text: text.to_string(),
    };
    let options = CompileOptions {
        passes: passes.clone(),
        verify_ir: true,
        ..CompileOptions::default()
    };
    let compilation = match driver::compile(&source, &options, &mut String::new()) {
        Ok(c) => c,
        Err(e) => return Outcome::CompileError(e.to_string()),
    };
    let program = match driver::program_of(&compilation) {
        Ok(p) => p,
        Err(e) => return Outcome::CompileError(e.to_string()),
    };
    let got = match driver::execute(program, &params, &inputs) {
        Ok((outputs, _report)) => outputs,
        Err(e) => return Outcome::ExecError(e.to_string()),
    };
    // The bounds come from the compiled tensor IR (which knows the casts the compilation
    // relaxes); its values must be the unoptimised IR's bit for bit, since every
    // tensor-level pass is exact.
    let expected = match driver::expected(&compilation, &inputs) {
        Ok(e) => e,
        Err(e) => return Outcome::ReferenceError(e.to_string()),
    };
    for (i, ((opt, _), unopt)) in expected.iter().zip(&want).enumerate() {
        let same = opt.data.len() == unopt.data.len()
            && opt.ints == unopt.ints
            && opt
                .data
                .iter()
                .zip(&unopt.data)
                .all(|(a, b)| a.to_bits() == b.to_bits() || (a.is_nan() && b.is_nan()));
        if !same {
            return Outcome::Mismatch {
                details: format!(
                    "out{i}: the reference gives other values on the optimised tensor IR than on \
                     the unoptimised one (a tensor-level pass changed the kernel)"
                ),
                max_abs: f64::NAN,
            };
        }
    }
    let bounds: Vec<Vec<f32>> = expected.into_iter().map(|(_, b)| b).collect();
    compare_outputs(&got, &want, &bounds)
}

/// Compares outputs with the reference under `driver::compare`, each element within its
/// allowed error (`driver::expected`'s bounds).
pub fn compare_outputs(
    got: &[reference::HostTensor],
    want: &[reference::HostTensor],
    bounds: &[Vec<f32>],
) -> Outcome {
    let mut details = String::new();
    let mut failed = got.len() != want.len();
    let mut worst = 0f64;
    if failed {
        let _ = writeln!(
            details,
            "the program has {} outputs, the kernel {}",
            got.len(),
            want.len()
        );
    }
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        if g.shape != w.shape || g.dtype != w.dtype {
            failed = true;
            let _ = writeln!(
                details,
                "out{i}: the program gives {}, the reference {}",
                driver::type_text(g.dtype, &g.shape),
                driver::type_text(w.dtype, &w.shape)
            );
            continue;
        }
        // `i32` values live in `ints` and must be equal bit for bit.
        if w.dtype == isa::Dtype::I32 {
            if let Some(at) =
                (0..w.ints.len().max(g.ints.len())).find(|&j| g.ints.get(j) != w.ints.get(j))
            {
                failed = true;
                let _ = writeln!(
                    details,
                    "out{i} (i32): first difference at flat index {at} (index {:?}): observed {:?}, expected {:?}",
                    unflatten(at, &w.shape),
                    g.ints.get(at),
                    w.ints.get(at)
                );
            }
            continue;
        }
        let c = driver::compare(&g.data, &w.data, &bounds[i]);
        worst = worst.max(c.max_abs);
        let _ = write!(
            details,
            "out{i} ({}): {}, {} of {} elements outside their allowed error",
            driver::type_text(w.dtype, &w.shape),
            c.line(i),
            c.bad,
            w.data.len()
        );
        if let Some((at, gv, wv, allowed)) = c.first_bad {
            failed = true;
            let _ = write!(
                details,
                "; first at flat index {at} (index {:?}): observed {gv:e}, expected {wv:e}, allowed error {allowed:e}",
                unflatten(at, &w.shape)
            );
        }
        details.push('\n');
    }
    if failed {
        Outcome::Mismatch {
            details,
            max_abs: worst,
        }
    } else {
        Outcome::Match
    }
}

/// The multi-index of a row-major flat index.
pub fn unflatten(mut flat: usize, shape: &[u64]) -> Vec<u64> {
    let mut idx = vec![0u64; shape.len()];
    for (i, &d) in shape.iter().enumerate().rev() {
        idx[i] = flat as u64 % d.max(1);
        flat /= d.max(1) as usize;
    }
    idx
}

/// The proptest configuration of this crate's property tests: `cases` cases from a fixed
/// seed, so every run (and CI) checks the same cases and a failure reproduces as it is.
/// `PROPTEST_RNG_SEED=<u64>` (read by `ProptestConfig::default`) explores other cases.
pub fn proptest_config(cases: u32) -> proptest::test_runner::Config {
    use proptest::test_runner::{Config, RngSeed};
    let base = Config::default();
    let rng_seed = match base.rng_seed {
        RngSeed::Random => RngSeed::Fixed(0x7e55_2026),
        chosen => chosen,
    };
    Config {
        cases,
        rng_seed,
        ..base
    }
}

/// One case of a data file written by a NumPy script (`tests/data/*.txt`): its name, its
/// kernel source, and each output's shape and values.
pub struct DataCase {
    pub name: String,
    pub src: String,
    pub outs: Vec<(Vec<u64>, Vec<f32>)>,
}

/// The cases of such a data file: `case NAME`, then `src SOURCE` and one
/// `out DIM,DIM,.. VALUE ..` line per output.
pub fn data_cases(text: &str) -> Vec<DataCase> {
    let mut out: Vec<DataCase> = Vec::new();
    for line in text.lines() {
        if let Some(name) = line.strip_prefix("case ") {
            out.push(DataCase {
                name: name.to_string(),
                src: String::new(),
                outs: Vec::new(),
            });
        } else if let Some(src) = line.strip_prefix("src ") {
            out.last_mut().expect("a case").src = src.to_string();
        } else if let Some(rest) = line.strip_prefix("out ") {
            let mut words = rest.split(' ');
            let shape = words
                .next()
                .expect("a shape")
                .split(',')
                .map(|d| d.parse().expect("a dim"))
                .collect();
            let values = words.map(|v| v.parse().expect("a value")).collect();
            out.last_mut().expect("a case").outs.push((shape, values));
        }
    }
    out
}
