//! The timeline of a run as Chrome trace-event JSON, for Perfetto and chrome://tracing
//! (`tessera run --trace PATH.json`), and the semaphore bookkeeping behind it: which
//! instruction satisfied each wait.
//!
//! The output is the trace-event "JSON Object Format": `{"traceEvents": [...]}` with
//! - `M` metadata events naming the process and one track (thread) per engine and per DMA
//!   queue, in stream order, and one `dmaN issue` track per queue;
//! - one `X` complete event per executed instruction: on a compute engine's track from its
//!   start to its end; for a DMA transfer, its data phase on the queue's track (data phases
//!   of one queue never overlap, while their 2,000-cycle latency phases do, so the issue is
//!   an instant event `i` on the queue's issue track);
//! - a `wait` `X` event before every instruction that could not start when its stream was
//!   free (`Event::wait_start < Event::start`), on the same track (compute engines) or the
//!   issue track (DMA), naming the semaphores and the instructions that signalled them;
//! - a flow (`s` / `f`, drawn as an arrow) from the instruction whose completion ended the
//!   wait to the wait it ended.
//!
//! Times are microseconds (`ts`, `dur`), computed from cycles and the report's clock and
//! rounded to whole nanoseconds; every number is written with exactly three decimals, so a
//! reader that converts to integer nanoseconds gets exactly `end - start` and slices that
//! touch in cycles touch in the trace too (a track's slices are disjoint or nested, which
//! the viewers require). `args` of an instruction hold its assembly text (`Display` of
//! [`isa::Inst`]), its source location from `Program::locs` when present, its operand
//! shapes and its cycles. Events other than metadata are sorted by `ts`.
//!
//! This module only reads a [`Program`] and a [`Report`]; it never fails and never panics:
//! an event that names an instruction the program does not have is written without its text.

use crate::report::{Event, Report};
use isa::{Access, ApRef, Engine, Inst, Mem, Opcode, Program, NUM_DMA_QUEUES, NUM_STREAMS};
use std::fmt::Write as _;

/// The trace's process id (one NeuronCore).
const PID: u32 = 1;

/// One semaphore wait of an executed instruction and the instruction that satisfied it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WaitSource {
    pub semaphore: u8,
    /// The wait is `semaphore >= value`.
    pub value: u32,
    /// Index in the report's events of the instruction whose completion brought the
    /// semaphore to `value`; `None` for a wait on 0 or when that instruction has no event.
    pub producer: Option<usize>,
}

/// The instruction of an event, if the program has it.
pub fn inst_of<'a>(program: &'a Program, event: &Event) -> Option<&'a Inst> {
    program
        .streams
        .get(event.engine.index())
        .and_then(|s| s.get(event.index as usize))
}

/// For every event (same order as `events`), its waits in the instruction's order, each
/// with the event that satisfied it.
///
/// A semaphore counts completions: the wait `s >= v` is satisfied by the `v`-th
/// instruction that signals `s`, in completion order (ties at the same cycle in start
/// order, as the timing model applies them).
pub fn wait_sources(program: &Program, events: &[Event]) -> Vec<Vec<WaitSource>> {
    let mut signals: Vec<Vec<(u64, usize)>> = vec![Vec::new(); 256];
    for (i, e) in events.iter().enumerate() {
        if let Some(sem) = inst_of(program, e).and_then(|inst| inst.sync.signal) {
            signals[sem as usize].push((e.end, i));
        }
    }
    for s in &mut signals {
        s.sort_unstable();
    }
    events
        .iter()
        .map(|e| {
            let Some(inst) = inst_of(program, e) else {
                return Vec::new();
            };
            inst.sync
                .waits
                .iter()
                .map(|&(semaphore, value)| WaitSource {
                    semaphore,
                    value,
                    producer: (value as usize)
                        .checked_sub(1)
                        .and_then(|k| signals[semaphore as usize].get(k))
                        .map(|&(_, i)| i),
                })
                .collect()
        })
        .collect()
}

/// The wait that ended last: the one whose producer completed latest.
pub fn binding_wait<'a>(sources: &'a [WaitSource], events: &[Event]) -> Option<&'a WaitSource> {
    sources
        .iter()
        .filter_map(|w| Some((w, events.get(w.producer?)?.end)))
        .max_by_key(|&(_, end)| end)
        .map(|(w, _)| w)
}

/// A short name of an instruction: `dma3 #12 dma`.
pub fn event_name(e: &Event) -> String {
    format!("{} #{} {}", e.engine, e.index, e.opcode.mnemonic())
}

/// The shape of a tile or HBM operand: `sbuf.bf16[128, 512]` (partitions, then the free
/// sizes) or `hbm.f32[64, 1024]`.
fn shape_text(ap: &ApRef) -> String {
    match ap {
        ApRef::Tile(t) => {
            let mem = match t.mem {
                Mem::Sbuf => "sbuf",
                Mem::Psum => "psum",
            };
            let mut s = format!("{mem}.{}[{}", t.dtype, t.partitions);
            for d in &t.dims {
                let _ = write!(s, ", {}", d.size);
            }
            s.push(']');
            s
        }
        ApRef::Hbm(h) => {
            let dims: Vec<String> = h.dims.iter().map(|d| d.size.to_string()).collect();
            format!("hbm.{}[{}]", h.dtype, dims.join(", "))
        }
    }
}

/// Appends `s` as a JSON string literal.
fn json_str(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

/// Nanoseconds as microseconds with exactly three decimals.
fn us(ns: u64) -> String {
    format!("{}.{:03}", ns / 1000, ns % 1000)
}

/// Converts cycles to whole nanoseconds (monotonic, so touching intervals stay touching).
struct Clock {
    hz: f64,
    ns_per_cycle: f64,
}

impl Clock {
    fn new(clock_hz: f64) -> Clock {
        let hz = if clock_hz.is_finite() && clock_hz > 0.0 {
            clock_hz
        } else {
            1.4e9
        };
        Clock {
            hz,
            ns_per_cycle: 1e9 / hz,
        }
    }

    fn ns(&self, cycles: u64) -> u64 {
        // Float-to-integer casts saturate, so a huge cycle count cannot wrap.
        (cycles as f64 * self.ns_per_cycle).round() as u64
    }
}

/// The track (thread id) of a stream: 1 + its index.
fn track(engine: Engine) -> u32 {
    engine.index() as u32 + 1
}

/// The issue track of DMA queue `q`.
fn issue_track(q: u8) -> u32 {
    NUM_STREAMS as u32 + 1 + q as u32
}

/// The trace being written: events with their sort keys.
struct Writer {
    clock: Clock,
    events: Vec<(u64, String)>,
}

impl Writer {
    /// A complete event from cycle `start` to cycle `end` with `args` (a JSON object's
    /// members without braces).
    fn slice(&mut self, tid: u32, name: &str, cat: &str, start: u64, end: u64, args: &str) {
        let (ts, te) = (self.clock.ns(start), self.clock.ns(end.max(start)));
        let mut s = String::with_capacity(128 + args.len());
        s.push_str("{\"ph\":\"X\",\"name\":");
        json_str(&mut s, name);
        s.push_str(",\"cat\":");
        json_str(&mut s, cat);
        let _ = write!(
            s,
            ",\"pid\":{PID},\"tid\":{tid},\"ts\":{},\"dur\":{},\"args\":{{{args}}}}}",
            us(ts),
            us(te - ts)
        );
        self.events.push((ts, s));
    }

    /// A flow step: `ph` is `s` (start) or `f` (finish, bound to the enclosing slice).
    fn flow(&mut self, ph: &str, id: usize, tid: u32, ns: u64) {
        let bind = if ph == "f" { ",\"bp\":\"e\"" } else { "" };
        let s = format!(
            "{{\"ph\":\"{ph}\",\"name\":\"semaphore\",\"cat\":\"sync\",\"id\":{id},\"pid\":{PID},\"tid\":{tid},\"ts\":{}{bind}}}",
            us(ns)
        );
        self.events.push((ns, s));
    }
}

/// The `args` members of an instruction's slice.
fn inst_args(program: &Program, e: &Event) -> String {
    let mut a = String::new();
    a.push_str("\"inst\":");
    match inst_of(program, e) {
        Some(inst) => json_str(&mut a, &inst.to_string()),
        None => a.push_str("null"),
    }
    let _ = write!(a, ",\"engine\":\"{}\",\"index\":{}", e.engine, e.index);
    let loc = program
        .locs
        .get(e.engine.index())
        .and_then(|l| l.get(e.index as usize))
        .and_then(|l| *l);
    if let Some(loc) = loc {
        a.push_str(",\"loc\":");
        let text = match &program.source {
            Some(file) => format!("{file}:{}:{}", loc.line, loc.col),
            None => format!("{}:{}", loc.line, loc.col),
        };
        json_str(&mut a, &text);
    }
    if let Some(inst) = inst_of(program, e) {
        let mut shapes = Vec::new();
        inst.op.visit_aps(&mut |ap, access| {
            let dir = match access {
                Access::Read => "in",
                Access::Write => "out",
            };
            shapes.push(format!("{dir} {}", shape_text(&ap)));
        });
        a.push_str(",\"operands\":[");
        for (i, s) in shapes.iter().enumerate() {
            if i > 0 {
                a.push(',');
            }
            json_str(&mut a, s);
        }
        a.push(']');
    }
    let _ = write!(
        a,
        ",\"start_cycle\":{},\"end_cycle\":{},\"cycles\":{}",
        e.start,
        e.end,
        e.end.saturating_sub(e.start)
    );
    if matches!(e.engine, Engine::Dma(_)) && matches!(e.opcode, Opcode::Dma | Opcode::DmaGather) {
        let _ = write!(
            a,
            ",\"issue_cycle\":{},\"data_start_cycle\":{},\"bytes\":{}",
            e.start, e.data_start, e.bytes
        );
    }
    a
}

/// The `args` members of a wait slice.
fn wait_args(events: &[Event], e: &Event, sources: &[WaitSource]) -> String {
    let mut a = format!(
        "\"cycles\":{},\"for\":",
        e.start.saturating_sub(e.wait_start)
    );
    json_str(&mut a, &event_name(e));
    a.push_str(",\"waits\":[");
    for (i, w) in sources.iter().enumerate() {
        if i > 0 {
            a.push(',');
        }
        let by = match w.producer.and_then(|p| events.get(p)) {
            Some(p) => format!(
                "s{}>={} signalled by {} at cycle {}",
                w.semaphore,
                w.value,
                event_name(p),
                p.end
            ),
            None => format!("s{}>={}", w.semaphore, w.value),
        };
        json_str(&mut a, &by);
    }
    a.push(']');
    if sources.is_empty() && e.engine == Engine::Tensor {
        a.push_str(",\"reason\":\"stationary load\"");
    }
    a
}

/// The Chrome trace-event JSON of a run of `program` (see the module documentation).
/// A report without events (events were turned off) gives a trace with only the tracks.
pub fn chrome_trace(program: &Program, report: &Report) -> String {
    let events = &report.events;
    let sources = wait_sources(program, events);
    let mut w = Writer {
        clock: Clock::new(report.clock_hz),
        events: Vec::with_capacity(events.len() * 2),
    };
    let mut flow_id = 0usize;
    for (i, e) in events.iter().enumerate() {
        let is_dma_queue = matches!(e.engine, Engine::Dma(_));
        let is_transfer = is_dma_queue && matches!(e.opcode, Opcode::Dma | Opcode::DmaGather);
        let cat = match e.engine {
            Engine::Dma(_) => "dma".to_string(),
            other => other.name(),
        };
        let args = inst_args(program, e);
        // The track of the instruction's waits (and of a DMA queue's non-transfers).
        let side = match e.engine {
            Engine::Dma(q) => issue_track(q),
            other => track(other),
        };
        if is_transfer {
            w.slice(
                track(e.engine),
                e.opcode.mnemonic(),
                &cat,
                e.data_start,
                e.end,
                &args,
            );
            let ns = w.clock.ns(e.start);
            let mut s =
                String::from("{\"ph\":\"i\",\"s\":\"t\",\"name\":\"issue\",\"cat\":\"dma\"");
            let _ = write!(
                s,
                ",\"pid\":{PID},\"tid\":{side},\"ts\":{},\"args\":{{{args}}}}}",
                us(ns)
            );
            w.events.push((ns, s));
        } else {
            let tid = if is_dma_queue { side } else { track(e.engine) };
            w.slice(tid, e.opcode.mnemonic(), &cat, e.start, e.end, &args);
        }
        if e.start > e.wait_start {
            let srcs = &sources[i];
            w.slice(
                side,
                "wait",
                "wait",
                e.wait_start,
                e.start,
                &wait_args(events, e, srcs),
            );
            // An arrow from the instruction that ended the wait to the wait.
            let producer = binding_wait(srcs, events)
                .and_then(|b| b.producer)
                .and_then(|p| Some((p, events.get(p)?)));
            if let Some((_, p)) = producer {
                let (p0, p1) = if matches!(p.engine, Engine::Dma(_))
                    && matches!(p.opcode, Opcode::Dma | Opcode::DmaGather)
                {
                    (p.data_start, p.end)
                } else {
                    (p.start, p.end)
                };
                let (p0, p1) = (w.clock.ns(p0), w.clock.ns(p1));
                let (c0, c1) = (w.clock.ns(e.wait_start), w.clock.ns(e.start));
                // The arrow starts inside the producer's slice and lands inside the wait, never
                // earlier than it started; slices shorter than 2 ns have no interior point.
                let p_mid = p0 + (p1 - p0) / 2;
                if p1 >= p0 + 2 && c1 >= c0 + 2 && p1 <= c1 {
                    let ptid = match p.engine {
                        Engine::Dma(q) if p.opcode != Opcode::Dma => issue_track(q),
                        other => track(other),
                    };
                    flow_id += 1;
                    w.flow("s", flow_id, ptid, p_mid);
                    w.flow("f", flow_id, side, p_mid.max(c0 + (c1 - c0) / 2));
                }
            }
        }
    }
    w.events.sort_by_key(|(ts, _)| *ts);

    let mut out =
        String::with_capacity(4096 + w.events.iter().map(|(_, s)| s.len() + 2).sum::<usize>());
    out.push_str("{\"traceEvents\":[\n");
    let mut meta = Vec::new();
    meta.push(format!(
        "{{\"ph\":\"M\",\"name\":\"process_name\",\"pid\":{PID},\"tid\":0,\"args\":{{\"name\":\"NeuronCore\"}}}}"
    ));
    let mut name_track = |tid: u32, name: &str| {
        let mut s = format!("{{\"ph\":\"M\",\"name\":\"thread_name\",\"pid\":{PID},\"tid\":{tid},\"args\":{{\"name\":");
        json_str(&mut s, name);
        s.push_str("}}");
        meta.push(s);
        meta.push(format!(
            "{{\"ph\":\"M\",\"name\":\"thread_sort_index\",\"pid\":{PID},\"tid\":{tid},\"args\":{{\"sort_index\":{tid}}}}}"
        ));
    };
    for engine in Engine::all() {
        name_track(track(engine), &engine.name());
    }
    for q in 0..NUM_DMA_QUEUES as u8 {
        name_track(issue_track(q), &format!("dma{q} issue"));
    }
    let all = meta
        .iter()
        .map(String::as_str)
        .chain(w.events.iter().map(|(_, s)| s.as_str()));
    for (i, s) in all.enumerate() {
        if i > 0 {
            out.push_str(",\n");
        }
        out.push_str(s);
    }
    out.push_str("\n],\n\"otherData\":{");
    let _ = write!(
        out,
        "\"clock_hz\":{},\"total_cycles\":{},\"instructions\":{}",
        Clock::new(report.clock_hz).hz,
        report.total_cycles,
        report.instructions
    );
    if let Some(src) = &program.source {
        out.push_str(",\"source\":");
        json_str(&mut out, src);
    }
    out.push_str("}}\n");
    out
}
