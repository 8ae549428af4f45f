//! The Chrome trace writer: its JSON is checked against the trace-event format (the JSON
//! Object Format: required keys and types per phase, non-negative durations, every track
//! named, flows paired, and the slices of one track disjoint or nested as Perfetto and
//! chrome://tracing need), and its content against the run: one slice per instruction
//! with the instruction's text, waits with the instruction that signalled them, source
//! locations when the program has them.

mod common;

#[path = "common/matmul.rs"]
mod matmul;

use common::*;
use isa::{Engine, SrcLoc};
use runtime::trace::{chrome_trace, wait_sources};
use runtime::{Machine, MachineConfig, Report};
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};

/// Converts a `ts` or `dur` in microseconds to integer nanoseconds, as Perfetto does.
fn ns(v: &Value) -> i64 {
    (v.as_f64().expect("a number") * 1000.0).round() as i64
}

/// Checks `text` against the trace-event format and returns the parsed events.
fn validate(text: &str) -> Vec<Value> {
    let root: Value = serde_json::from_str(text).expect("the trace is valid JSON");
    let events = root["traceEvents"]
        .as_array()
        .expect("an object with a traceEvents array")
        .clone();
    let mut named_threads = BTreeSet::new();
    let mut named_processes = BTreeSet::new();
    let mut used_threads = BTreeSet::new();
    let mut flows: BTreeMap<u64, Vec<String>> = BTreeMap::new();
    let mut slices: BTreeMap<(u64, u64), Vec<(i64, i64)>> = BTreeMap::new();
    let mut last_ts = i64::MIN;
    for e in &events {
        let ph = e["ph"].as_str().expect("every event has a string ph");
        assert!(e["name"].is_string(), "every event has a string name: {e}");
        let pid = e["pid"].as_u64().expect("an integer pid");
        let tid = e["tid"].as_u64().expect("an integer tid");
        if ph == "M" {
            let name = e["name"].as_str().unwrap_or_default();
            match name {
                "thread_name" => {
                    assert!(e["args"]["name"].is_string(), "{e}");
                    named_threads.insert((pid, tid));
                }
                "process_name" => {
                    assert!(e["args"]["name"].is_string(), "{e}");
                    named_processes.insert(pid);
                }
                "thread_sort_index" => assert!(e["args"]["sort_index"].is_i64(), "{e}"),
                other => panic!("unknown metadata event {other}"),
            }
            continue;
        }
        // Not required by the format, but the writer promises it: sorted by ts.
        let ts = ns(&e["ts"]);
        assert!(ts >= 0, "negative ts: {e}");
        assert!(ts >= last_ts, "events are sorted by ts: {e}");
        last_ts = ts;
        used_threads.insert((pid, tid));
        if let Some(cat) = e.get("cat") {
            assert!(cat.is_string(), "{e}");
        }
        match ph {
            "X" => {
                let dur = ns(&e["dur"]);
                assert!(dur >= 0, "negative duration: {e}");
                assert!(e["args"].is_object(), "{e}");
                slices.entry((pid, tid)).or_default().push((ts, ts + dur));
            }
            "i" => assert!(
                matches!(e["s"].as_str(), Some("t" | "p" | "g")),
                "instant scope: {e}"
            ),
            "s" | "f" => {
                let id = e["id"].as_u64().expect("a flow has an integer id");
                if ph == "f" {
                    assert_eq!(e["bp"], "e", "{e}");
                }
                flows.entry(id).or_default().push(ph.to_string());
            }
            other => panic!("unexpected phase {other}"),
        }
    }
    for t in &used_threads {
        assert!(named_threads.contains(t), "track {t:?} has no thread_name");
        assert!(
            named_processes.contains(&t.0),
            "process {} has no name",
            t.0
        );
    }
    for (id, steps) in &flows {
        assert_eq!(steps, &["s", "f"], "flow {id} is one start then one finish");
    }
    // The slices of a track are disjoint or nested.
    for (t, mut list) in slices {
        list.sort_by_key(|&(s, e)| (s, std::cmp::Reverse(e)));
        let mut open: Vec<i64> = Vec::new();
        for (s, e) in list {
            while open.last().is_some_and(|&end| end <= s) {
                open.pop();
            }
            if let Some(&end) = open.last() {
                assert!(
                    e <= end,
                    "track {t:?}: slice {s}..{e} overlaps one ending at {end}"
                );
            }
            open.push(e);
        }
    }
    events
}

/// Runs `program` with every input bound to zeros (only time matters here).
fn run_with(program: &isa::Program, events: bool) -> Report {
    let cfg = MachineConfig {
        events,
        ..MachineConfig::default()
    };
    let mut loaded = Machine::new(cfg).load_program(program.clone()).unwrap();
    for t in program.tensors_with_role(isa::Role::Input) {
        loaded
            .bind(&t.name, &vec![0.0; t.elems() as usize])
            .unwrap();
    }
    loaded.run().unwrap()
}

fn run_events(text: &str) -> (isa::Program, Report) {
    let program = asm(text);
    let report = run_with(&program, true);
    (program, report)
}

fn thread_names(events: &[Value]) -> BTreeMap<u64, String> {
    events
        .iter()
        .filter(|e| e["name"] == "thread_name")
        .map(|e| {
            (
                e["tid"].as_u64().unwrap(),
                e["args"]["name"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

#[test]
fn matmul_trace_is_valid_and_complete() {
    let (program, report) = run_events(&matmul::matmul_program(256, 256, 1024));
    let events = validate(&chrome_trace(&program, &report));
    let names = thread_names(&events);
    for track in [
        "tensor",
        "vector",
        "scalar",
        "gpsimd",
        "dma0",
        "dma15",
        "dma0 issue",
    ] {
        assert!(names.values().any(|n| n == track), "no track {track}");
    }
    // One slice per instruction, with its assembly text and cycles.
    let inst_slices: Vec<&Value> = events
        .iter()
        .filter(|e| e["ph"] == "X" && e["cat"] != "wait")
        .collect();
    assert_eq!(inst_slices.len(), report.events.len());
    for s in &inst_slices {
        let engine = Engine::from_name(s["args"]["engine"].as_str().unwrap()).unwrap();
        let index = s["args"]["index"].as_u64().unwrap() as usize;
        let want = program.streams[engine.index()][index].to_string();
        assert_eq!(s["args"]["inst"], want.as_str());
        assert!(s["args"]["operands"]
            .as_array()
            .is_some_and(|o| !o.is_empty()));
    }
    let matmul = inst_slices.iter().find(|s| s["name"] == "matmul").unwrap();
    let operands: Vec<&str> = matmul["args"]["operands"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o.as_str().unwrap())
        .collect();
    assert_eq!(
        operands,
        [
            "out psum.f32[128, 512]",
            "in sbuf.bf16[128, 128]",
            "in sbuf.bf16[128, 512]"
        ]
    );
    // The first matmul waited for its K tile's loads: a wait slice names a DMA.
    let wait = events
        .iter()
        .find(|e| e["cat"] == "wait" && e["args"]["for"] == "tensor #0 matmul")
        .expect("the first matmul waited");
    let why = wait["args"]["waits"][0].as_str().unwrap();
    assert!(why.starts_with("s0>=4 signalled by dma"), "{why}");
    // The last total cycle is the end of the last slice.
    let last_end = inst_slices
        .iter()
        .map(|s| ns(&s["ts"]) + ns(&s["dur"]))
        .max()
        .unwrap();
    assert_eq!(last_end, (report.total_cycles as f64 / 1.4).round() as i64);
    assert!(events.iter().any(|e| e["ph"] == "s"));
}

#[test]
fn wait_sources_name_the_signalling_instruction() {
    let (program, report) = run_events(&matmul::matmul_program(256, 256, 512));
    let sources = wait_sources(&program, &report.events);
    for (e, waits) in report.events.iter().zip(&sources) {
        for w in waits {
            let p = &report.events[w.producer.expect("every wait has a producer")];
            let signal = program.streams[p.engine.index()][p.index as usize]
                .sync
                .signal;
            assert_eq!(signal, Some(w.semaphore));
            assert!(p.end <= e.start, "a wait ends after its producer");
        }
    }
}

#[test]
fn locations_and_nops_on_dma_queues() {
    let mut a = Asm::new();
    a.tensor("x", "input", isa::Dtype::F32, &[128, 16]);
    a.inst(
        "dma0",
        "dma dst=sbuf.f32[0:128, 0; 16:1], src=hbm.f32[0; 128:16, 16:1] signal(s0)",
    );
    a.inst("dma0", "wait(s1>=1) nop");
    a.inst(
        "vector",
        "wait(s0>=1) tensor_copy out=sbuf.f32[0:128, 64; 16:1], src=sbuf.f32[0:128, 0; 16:1] signal(s1)",
    );
    let (mut program, report) = run_events(&a.text());
    program.source = Some("k\"ernel.tsr".into());
    program.locs = program
        .streams
        .iter()
        .map(|s| s.iter().map(|_| Some(SrcLoc { line: 3, col: 7 })).collect())
        .collect();
    let events = validate(&chrome_trace(&program, &report));
    let copy = events.iter().find(|e| e["name"] == "tensor_copy").unwrap();
    assert_eq!(copy["args"]["loc"], "k\"ernel.tsr:3:7");
    // The nop sits on the queue's issue track, not over the transfer's data phase.
    let names = thread_names(&events);
    let nop = events.iter().find(|e| e["name"] == "nop").unwrap();
    assert_eq!(names[&nop["tid"].as_u64().unwrap()], "dma0 issue");
    let dma = events
        .iter()
        .find(|e| e["name"] == "dma" && e["ph"] == "X")
        .unwrap();
    assert_eq!(names[&dma["tid"].as_u64().unwrap()], "dma0");
    assert!(events
        .iter()
        .any(|e| e["ph"] == "i" && e["name"] == "issue"));
}

#[test]
fn a_report_without_events_gives_the_tracks_only() {
    let program = asm(&matmul::matmul_program(128, 128, 512));
    let report = run_with(&program, false);
    let events = validate(&chrome_trace(&program, &report));
    assert!(events.iter().all(|e| e["ph"] == "M"));
    // A report whose events name instructions the program does not have, and a broken
    // clock, still give a valid trace.
    let (_, mut other) = run_events(&matmul::matmul_program(256, 256, 512));
    other.clock_hz = f64::NAN;
    let empty = isa::Program::new(isa::Preset::Default);
    validate(&chrome_trace(&empty, &other));
}
