//! The bench's second table: real kernels ported from public sources (`bench/real/*.tsr`),
//! each compiled from its file at the sizes its kernel declares, run on the interpreter,
//! checked against the reference evaluator and reported with its roofline efficiency and
//! its bottleneck. It exists because the first table measures the forms the compiler was
//! tuned on; this one measures the same math as other people wrote it.
//!
//! Every file of `bench/real` is a row, read when the bench runs (adding a kernel is adding
//! a file). A file holds one kernel whose size defaults are the real sizes, so
//! `tessera run bench/real/FILE.tsr --random 1 --check --report` reproduces its row, and a
//! header of `//` comment lines:
//!
//! ```text
//! // name: vector add f32[98432]        the row's name (required)
//! // source: owner/repo path/to/file.py  where the kernel comes from (required)
//! // quick: N=1000                        small sizes for `--quick` (required)
//! ```

use super::{bench_inputs, check, compile_timed, execute, first_line, guarded, pct, summary};
use std::path::{Path, PathBuf};
use std::time::Instant;
use tessera::driver;
use tessera::profile::Profile;
use tessera::roofline;

/// The efficiency every real kernel should reach unless BENCHMARKS.md argues a lower
/// ceiling for it from the machine's costs.
pub const TARGET: f64 = 0.60;
/// The median the whole table should reach.
pub const MEDIAN_TARGET: f64 = 0.85;

/// One kernel file of `bench/real`.
pub struct RealKernel {
    /// The file, relative to the repository root (`bench/real/x.tsr`).
    pub file: String,
    pub name: String,
    pub source: String,
    pub quick: Vec<(String, i64)>,
    pub text: String,
}

/// The folder of the real kernels.
pub fn folder() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("bench")
        .join("real")
}

/// The value of a `// KEY: value` header line, joined with its continuation lines (the
/// `//` lines after it that start no other key).
fn header_value(text: &str, key: &str) -> Option<String> {
    let prefix = format!("// {key}:");
    let mut lines = text.lines().take_while(|l| l.starts_with("//"));
    let first = lines.find(|l| l.starts_with(&prefix))?;
    let mut value = first[prefix.len()..].trim().to_string();
    for l in lines {
        let rest = l.trim_start_matches('/').trim();
        let starts_key = rest
            .split_once(':')
            .is_some_and(|(k, _)| !k.is_empty() && k.chars().all(|c| c.is_ascii_lowercase()));
        if starts_key || rest.is_empty() {
            break;
        }
        value.push(' ');
        value.push_str(rest);
    }
    Some(value)
}

/// Parses one kernel file's header; an error names the file and what is missing.
pub fn parse(file: &str, text: &str) -> Result<RealKernel, String> {
    let need = |key: &str| {
        header_value(text, key).ok_or_else(|| format!("{file}: no `// {key}:` header line"))
    };
    let name = need("name")?;
    let source = need("source")?;
    let quick = need("quick")?
        .split_whitespace()
        .map(|d| {
            let (n, v) = d
                .split_once('=')
                .ok_or_else(|| format!("{file}: quick size `{d}` is not NAME=VALUE"))?;
            let v = v
                .parse::<i64>()
                .map_err(|e| format!("{file}: quick size `{d}`: {e}"))?;
            Ok((n.to_string(), v))
        })
        .collect::<Result<Vec<_>, String>>()?;
    Ok(RealKernel {
        file: file.to_string(),
        name,
        source,
        quick,
        text: text.to_string(),
    })
}

/// Every kernel of `bench/real`, sorted by file name.
pub fn load() -> Result<Vec<RealKernel>, String> {
    let dir = folder();
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .map_err(|e| format!("cannot read {}: {e}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "tsr"))
        .collect();
    files.sort();
    files
        .iter()
        .map(|p| {
            let text = std::fs::read_to_string(p)
                .map_err(|e| format!("cannot read {}: {e}", p.display()))?;
            let name = p.file_name().map(|n| n.to_string_lossy().to_string());
            parse(&format!("bench/real/{}", name.unwrap_or_default()), &text)
        })
        .collect()
}

/// One measured real kernel.
pub struct RealRow {
    pub cycles: u64,
    pub bound: u64,
    pub bound_engine: &'static str,
    /// The latency-aware ceiling's cycles (what a perfect schedule could reach at best).
    pub ceiling: Option<u64>,
    pub bottleneck: String,
    pub check: Result<String, String>,
    pub interp_s: f64,
}

impl RealRow {
    pub fn efficiency(&self) -> f64 {
        if self.cycles == 0 {
            0.0
        } else {
            self.bound as f64 / self.cycles as f64
        }
    }
}

/// Compiles, runs and checks one kernel (quick or real sizes).
pub fn run(k: &RealKernel, quick: bool) -> Result<RealRow, String> {
    let defines: Vec<(&str, i64)> = if quick {
        k.quick.iter().map(|(n, v)| (n.as_str(), *v)).collect()
    } else {
        Vec::new()
    };
    let (c, _) = compile_timed(&k.file, &k.text, None, &defines, 1)
        .map_err(|e| format!("does not compile: {}", first_line(&e)))?;
    let (params, inputs) = bench_inputs(&c);
    let (report, outputs, interp_s) = guarded("interpreter", || execute(&c, &params, &inputs))
        .map_err(|e| format!("interpreter error: {}", first_line(&e)))?;
    let program = driver::program_of(&c).map_err(|e| e.to_string())?;
    let timing = runtime::MachineConfig::new(program.preset).timing;
    let bound = roofline::bound(&c.tensor, &timing);
    let (bound_cycles, bound_engine) = (bound.cycles(), bound.engine());
    let profile = Profile::new(program, &report, Some(bound), timing.dma_total_rate);
    let ceiling = profile.ceiling_cycles();
    let bottleneck = summary(&profile, &profile.diagnose(program, &report));
    let check = guarded("reference", || check(&c, &inputs, &outputs));
    Ok(RealRow {
        cycles: report.total_cycles,
        bound: bound_cycles,
        bound_engine,
        ceiling,
        bottleneck,
        check,
        interp_s,
    })
}

/// The results of the real-kernel table: per kernel its name, file, source and outcome.
pub struct RealResults {
    pub rows: Vec<(String, String, String, Result<RealRow, String>)>,
    /// Why the folder could not be read, if it could not.
    pub error: Option<String>,
}

/// Runs every real kernel whose name or file contains `only` (all without it).
pub fn run_all(quick: bool, only: Option<&str>) -> RealResults {
    let kernels = match load() {
        Ok(k) => k,
        Err(e) => {
            return RealResults {
                rows: Vec::new(),
                error: Some(e),
            }
        }
    };
    let mut rows = Vec::new();
    for k in kernels {
        if only.is_some_and(|o| !k.name.contains(o) && !k.file.contains(o)) {
            continue;
        }
        eprintln!("bench: real {} ...", k.file);
        let t = Instant::now();
        let outcome = run(&k, quick);
        eprintln!(
            "bench: real {} done in {:.1} s",
            k.file,
            t.elapsed().as_secs_f64()
        );
        let name = if quick {
            let sizes: Vec<String> = k.quick.iter().map(|(n, v)| format!("{n}={v}")).collect();
            format!("{} ({})", k.name, sizes.join(" "))
        } else {
            k.name.clone()
        };
        rows.push((name, k.file.clone(), k.source.clone(), outcome));
    }
    RealResults { rows, error: None }
}

/// The median efficiency of the rows that ran (0 when none did).
pub fn median(results: &RealResults) -> f64 {
    let mut e: Vec<f64> = results
        .rows
        .iter()
        .filter_map(|(_, _, _, r)| r.as_ref().ok().map(RealRow::efficiency))
        .collect();
    if e.is_empty() {
        return 0.0;
    }
    e.sort_by(f64::total_cmp);
    let n = e.len();
    if !n.is_multiple_of(2) {
        e[n / 2]
    } else {
        (e[n / 2 - 1] + e[n / 2]) / 2.0
    }
}

/// The table as Markdown: one row per kernel with its efficiency, the latency-aware
/// ceiling's share of the run, the reference check and where the time went.
pub fn table(results: &RealResults) -> String {
    if let Some(e) = &results.error {
        return format!("Real kernels not run: {e}\n");
    }
    let mut s = String::from(
        "| kernel | file | cycles | bound (engine) | efficiency | >= target | ceiling | check | interpreter s | bottleneck |\n\
         |---|---|---:|---:|---:|:-:|---:|---|---:|---|\n",
    );
    for (name, file, _, outcome) in &results.rows {
        let file = file.trim_start_matches("bench/real/");
        match outcome {
            Ok(r) => {
                let check = match &r.check {
                    Ok(ok) => ok.clone(),
                    Err(e) => format!("MISMATCH: {}", first_line(e).replace('|', "/")),
                };
                // The latency-aware ceiling as an efficiency: the most a perfect schedule
                // of this kernel could show.
                let ceiling = match r.ceiling {
                    Some(c) if c > 0 => pct(r.bound as f64 / c as f64),
                    _ => "-".to_string(),
                };
                s.push_str(&format!(
                    "| {name} | {file} | {} | {} ({}) | {} | {} | {ceiling} | {check} | {:.2} | {} |\n",
                    r.cycles,
                    r.bound,
                    r.bound_engine,
                    pct(r.efficiency()),
                    if r.efficiency() >= TARGET { "yes" } else { "no" },
                    r.interp_s,
                    r.bottleneck.replace('|', "/"),
                ));
            }
            Err(e) => s.push_str(&format!(
                "| {name} | {file} | {} | | | no | | - | | |\n",
                e.replace('|', "/")
            )),
        }
    }
    let ran = results.rows.iter().filter(|r| r.3.is_ok()).count();
    let met = results
        .rows
        .iter()
        .filter(|r| r.3.as_ref().is_ok_and(|r| r.efficiency() >= TARGET))
        .count();
    let checked = results
        .rows
        .iter()
        .filter(|r| r.3.as_ref().is_ok_and(|r| r.check.is_ok()))
        .count();
    s.push_str(&format!(
        "\n{} kernels, {ran} ran, {checked} matched the reference evaluator; median efficiency {} \
         (target >= {}); {met} of {} at or above {}.\n",
        results.rows.len(),
        pct(median(results)),
        pct(MEDIAN_TARGET),
        results.rows.len(),
        pct(TARGET),
    ));
    s
}

/// The sources of the kernels, one line each, for BENCHMARKS.md.
pub fn sources(results: &RealResults) -> String {
    let mut s = String::new();
    for (name, file, source, _) in &results.rows {
        s.push_str(&format!("- {name} (`{file}`): {source}\n"));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_real_kernel_has_a_complete_header() {
        let kernels = load().expect("bench/real reads");
        assert!(kernels.len() >= 20, "only {} real kernels", kernels.len());
        for k in &kernels {
            assert!(!k.name.is_empty() && !k.source.is_empty(), "{}", k.file);
            assert!(!k.quick.is_empty(), "{}: no quick sizes", k.file);
        }
    }

    #[test]
    fn a_header_value_runs_over_its_continuation_lines_only() {
        let text = "// name: a b\n// source: x/y f.py (one\n// two)\n// quick: N=4\nkernel k";
        let k = parse("t.tsr", text).unwrap();
        assert_eq!(k.name, "a b");
        assert_eq!(k.source, "x/y f.py (one two)");
        assert_eq!(k.quick, vec![("N".to_string(), 4)]);
        assert!(parse("t.tsr", "// name: a\nkernel k").is_err());
        assert!(parse("t.tsr", "// name: a\n// source: s\n// quick: N4\n").is_err());
    }
}
