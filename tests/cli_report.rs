//! `tessera run --report`, `--report-json` and `--trace`, driven through the binary as a
//! user would: on a hand-written `.tbin` (no kernel, so no bound) and on kernel sources
//! (bound, efficiency, the latency-aware ceiling and, when the run is far from it, where
//! the time went), and the README's quick start.

use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// A fresh scratch folder for one test.
fn scratch(name: &str) -> PathBuf {
    let dir =
        std::env::temp_dir().join(format!("tessera-cli-report-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn tessera(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_tessera"))
        .current_dir(dir)
        .args(args)
        .output()
        .unwrap()
}

fn ok(out: &Output) -> String {
    assert!(
        out.status.success(),
        "exit {:?}\nstdout:\n{}\nstderr:\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout.clone()).unwrap()
}

fn json(path: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// Load a [128, 64] f32 tensor, exp it on the Scalar engine, store it: DMA, then Scalar
/// waiting on it, then DMA waiting on Scalar.
const PROGRAM: &str = "\
.hbm 65536
.tensor x input f32 [128, 64] @0
.tensor y output f32 [128, 64] @32768

.stream dma0
    dma dst=sbuf.f32[0:128, 0; 64:1], src=hbm.f32[0; 128:64, 64:1] signal(s0)
    end

.stream scalar
    wait(s0>=1) activate out=sbuf.f32[0:128, 256; 64:1], src=sbuf.f32[0:128, 0; 64:1], func=exp, scale=1.0, bias=0.0, accum=none signal(s1)
    end

.stream dma1
    wait(s1>=1) dma dst=hbm.f32[32768; 128:64, 64:1], src=sbuf.f32[0:128, 256; 64:1]
    end
";

#[test]
fn tbin_report_has_no_bound_and_says_where_the_time_went() {
    let dir = scratch("tbin");
    std::fs::write(dir.join("p.s"), PROGRAM).unwrap();
    ok(&tessera(&dir, &["asm", "p.s", "-o", "p.tbin"]));
    let out = ok(&tessera(
        &dir,
        &[
            "run",
            "p.tbin",
            "--random",
            "1",
            "--report",
            "--report-json",
            "r.json",
            "--trace",
            "t.json",
        ],
    ));
    assert!(out.starts_with("total "), "{out}");
    assert!(out.contains("bound: none"), "{out}");
    assert!(out.contains("where the time went"), "{out}");
    assert!(
        out.contains("waited on s0>=1 for dma0 #0 dma"),
        "the scalar engine's wait names the load: {out}"
    );
    let r = json(&dir.join("r.json"));
    assert!(r["bound_cycles"].is_null());
    assert!(r["bound_engine"].is_null());
    assert!(r["roofline_efficiency"].is_null());
    for key in [
        "ceiling_cycles",
        "best_roofline_efficiency",
        "of_ceiling",
        "ceiling",
    ] {
        assert!(r[key].is_null(), "{key} without a kernel");
    }
    assert!(r["diagnosis"]["cycles_above_ceiling"].is_null());
    assert!(!out.contains("ceiling"), "{out}");
    let total = r["total_cycles"].as_u64().unwrap();
    assert!(total > 4000, "two DMA latencies at least");
    for engine in ["tensor", "vector", "scalar", "gpsimd", "dma"] {
        assert!(
            r["engines"][engine]["busy_cycles"].is_u64(),
            "engines.{engine}.busy_cycles"
        );
    }
    assert_eq!(r["engines"]["scalar"]["busy_cycles"], 64 + 64);
    assert_eq!(r["engines"]["dma"]["instructions"], 2);
    assert!(r["engines"]["dma"]["queues"]["dma1"].is_object());
    assert_eq!(r["hbm_bytes_read"], 128 * 64 * 4);
    assert_eq!(r["hbm_bytes_written"], 128 * 64 * 4);
    let t = json(&dir.join("t.json"));
    let events = t["traceEvents"].as_array().unwrap();
    assert!(events
        .iter()
        .any(|e| e["name"] == "activate" && e["ph"] == "X"));
    // The outputs are still written.
    assert!(dir.join("out0.npy").is_file());
}

#[test]
fn kernel_report_has_the_roofline_bound() {
    let dir = scratch("kernel");
    let src =
        "kernel scale<N = 128, D = 256>(x: f32[N, D]) -> f32[N, D] {\n    return exp(x);\n}\n";
    std::fs::write(dir.join("k.tsr"), src).unwrap();
    let out = ok(&tessera(
        &dir,
        &[
            "run",
            "k.tsr",
            "--random",
            "3",
            "--report",
            "--report-json",
            "r.json",
            "--trace",
            "t.json",
        ],
    ));
    let r = json(&dir.join("r.json"));
    let total = r["total_cycles"].as_u64().unwrap();
    let bound = r["bound_cycles"].as_u64().unwrap();
    // Compulsory traffic: 128 KiB in and out at 256 B/cycle.
    assert_eq!(bound, 2 * 128 * 256 * 4 / 256);
    assert_eq!(r["bound_engine"], "dma");
    let eff = r["roofline_efficiency"].as_f64().unwrap();
    assert!((eff - bound as f64 / total as f64).abs() < 1e-12);
    assert!(
        out.contains(&format!("bound: {bound} cycles, set by dma")),
        "{out}"
    );
    assert!(out.contains("roofline efficiency"), "{out}");
    // A kernel this small is latency-bound: far from the bound, but the bound plus a
    // load's and a store's latency (2,000 each, the load of 128 KiB at 256 B/cycle
    // between them) is a ceiling it comes within reach of, and the report says so.
    assert!(eff < 0.7);
    let ceiling = r["ceiling_cycles"].as_u64().unwrap();
    assert_eq!(ceiling, 2000 + 128 * 256 * 4 / 256 + 2000);
    assert_eq!(r["ceiling"]["engine"], "dma");
    assert_eq!(r["ceiling"]["dma_latency"], 2000);
    let best = r["best_roofline_efficiency"].as_f64().unwrap();
    assert!((best - bound as f64 / ceiling as f64).abs() < 1e-12);
    let of = r["of_ceiling"].as_f64().unwrap();
    assert!((of - ceiling as f64 / total as f64).abs() < 1e-12);
    assert!(of >= 0.7, "{out}");
    assert!(
        out.contains(&format!(
            "ceiling: {ceiling} cycles with DMA latency, set by dma"
        )),
        "{out}"
    );
    assert!(
        out.contains(&format!(
            "best roofline efficiency {best:.3} (bound / ceiling)"
        )),
        "{out}"
    );
    assert!(
        out.contains(&format!("of the ceiling: {of:.3} (ceiling / total)")),
        "{out}"
    );
    let within = 100.0 * (total - ceiling) as f64 / ceiling as f64;
    assert!(
        out.contains(&format!(
            "within {within:.1}% of the latency-aware ceiling\n"
        )),
        "{out}"
    );
    assert!(!out.contains("where the time went"), "{out}");
    assert!(r["diagnosis"].is_null());
    let t = json(&dir.join("t.json"));
    assert!(t["traceEvents"]
        .as_array()
        .unwrap()
        .iter()
        .any(|e| e["args"]["loc"]
            .as_str()
            .is_some_and(|l| l.contains("k.tsr:"))));
}

/// The quick start's softmax at its default 128 rows: a load's and a store's latency
/// around its one block of rows, and the row statistics computed between them, keep it
/// below 0.7 of its ceiling, so the report explains the shortfall against the ceiling.
#[test]
fn a_run_far_from_its_ceiling_says_where_the_time_went() {
    let dir = scratch("far");
    let src = "kernel softmax<N = 128, D = 1000>(x: f32[N, D]) -> f32[N, D] {
    let m = max(x, axis=1, keepdims=true);
    let e = exp(x - m);
    return e / sum(e, axis=-1, keepdims=true);
}
";
    std::fs::write(dir.join("k.tsr"), src).unwrap();
    let out = ok(&tessera(
        &dir,
        &[
            "run",
            "k.tsr",
            "--random",
            "1",
            "--report",
            "--report-json",
            "r.json",
        ],
    ));
    let r = json(&dir.join("r.json"));
    let total = r["total_cycles"].as_u64().unwrap();
    // 512,000 bytes each way: the bound is their time at 256 B/cycle; the ceiling adds
    // the first load's latency and, after the loads, the last store's.
    assert_eq!(r["bound_cycles"], 4000);
    let ceiling = r["ceiling_cycles"].as_u64().unwrap();
    assert_eq!(ceiling, 2000 + 2000 + 2000);
    assert!((r["best_roofline_efficiency"].as_f64().unwrap() - 4000.0 / 6000.0).abs() < 1e-12);
    let of = r["of_ceiling"].as_f64().unwrap();
    assert!(of < 0.7, "{out}");
    assert_eq!(r["diagnosis"]["cycles_above_ceiling"], total - ceiling);
    assert!(
        out.contains(&format!(
            "where the time went ({total} cycles, {} above the latency-aware ceiling of \
             {ceiling}; {of:.3} of the ceiling < 0.7):",
            total - ceiling
        )),
        "{out}"
    );
    // The bottleneck's idle time: what a run at the ceiling would still have, and the rest.
    let d = &r["diagnosis"];
    let bottleneck = d["bottleneck"].as_str().unwrap();
    let busy = r["engines"][bottleneck]["busy_cycles"].as_u64().unwrap();
    let idle: u64 = d["idle_by_cause"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["cycles"].as_u64().unwrap())
        .sum();
    assert_eq!(idle, total - busy);
    assert!(
        out.contains(&format!(
            "{bottleneck} idle cycles by cause ({idle} in all; a run at the ceiling, busy as \
             long, would idle {} of them):",
            ceiling - busy
        )),
        "{out}"
    );
    assert!(!out.contains("of the latency-aware ceiling\n"), "{out}");
}

/// The README's quick start runs as written (its output folder moved to a scratch one):
/// the check passes and the report says the kernel is within reach of its ceiling, with
/// no "where the time went".
#[test]
fn the_readme_quick_start_reaches_its_ceiling() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let readme = std::fs::read_to_string(root.join("README.md")).unwrap();
    let command = readme
        .lines()
        .find(|l| l.starts_with("cargo run --release -- run "))
        .expect("the quick start's command");
    let mut args: Vec<String> = command
        .trim_start_matches("cargo run --release -- ")
        .split_whitespace()
        .map(String::from)
        .collect();
    let dir = scratch("quick-start");
    let o = args.iter().position(|a| a == "-o").expect("-o DIR");
    args[o + 1] = dir.join("out").to_string_lossy().into_owned();
    assert!(args.iter().any(|a| a == "--check") && args.iter().any(|a| a == "--report"));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = ok(&tessera(root, &args));
    assert!(out.contains("max abs error"), "{out}");
    assert!(
        out.contains("of the latency-aware ceiling\n")
            || out.contains("at the latency-aware ceiling\n"),
        "{out}"
    );
    assert!(!out.contains("where the time went"), "{out}");
    let eff: f64 = out
        .lines()
        .find_map(|l| l.strip_prefix("roofline efficiency: "))
        .and_then(|l| l.split_whitespace().next())
        .and_then(|e| e.parse().ok())
        .expect("a roofline efficiency line");
    assert!(eff >= 0.9, "{out}");
    assert!(dir.join("out/out0.npy").is_file());
}

#[test]
fn report_flags_need_the_interpreter_and_a_writable_path() {
    let dir = scratch("errors");
    std::fs::write(
        dir.join("k.tsr"),
        "kernel k(x: f32[128, 64]) -> f32[128, 64] {\n    return x + x;\n}\n",
    )
    .unwrap();
    let out = tessera(
        &dir,
        &[
            "run",
            "k.tsr",
            "--random",
            "1",
            "--reference",
            "--report-json",
            "r.json",
        ],
    );
    assert_eq!(out.status.code(), Some(2));
    let out = tessera(
        &dir,
        &[
            "run",
            "k.tsr",
            "--random",
            "1",
            "--report-json",
            "no/such/dir/r.json",
        ],
    );
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("cannot write"), "{err}");
    assert!(!err.contains("panicked"), "{err}");
}

/// `--report-json -` writes the JSON to stdout (it was written to a file named `-`).
#[test]
fn report_json_dash_is_stdout() {
    let dir = scratch("json-stdout");
    std::fs::write(dir.join("p.s"), PROGRAM).unwrap();
    ok(&tessera(&dir, &["asm", "p.s", "-o", "p.tbin"]));
    let out = ok(&tessera(
        &dir,
        &["run", "p.tbin", "--random", "1", "--report-json", "-"],
    ));
    let r: serde_json::Value = serde_json::from_str(&out).expect("stdout is the JSON");
    assert!(r["total_cycles"].as_u64().unwrap() > 4000, "{out}");
    assert!(!dir.join("-").exists());
}
