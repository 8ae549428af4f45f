//! The profile of a run: what `tessera run --report` prints and `--report-json` writes.
//!
//! It puts the timing model's report (runtime's [`Report`]) next to the kernel's roofline
//! bound ([`crate::roofline`]): total cycles, busy cycles and utilisation per engine (DMA
//! both as all queues together and per queue), bytes moved, the bound, the engine that
//! sets it and the roofline efficiency `bound / total`; then the latency-aware ceiling
//! (the bound plus the DMA latency no program avoids, [`crate::roofline::Ceiling`]), the
//! best roofline efficiency it allows (`bound / ceiling`) and how close the run came to it
//! (`ceiling / total`, "of the ceiling"). A small kernel cannot reach the bound (a load's
//! and a store's latency alone are 4,000 cycles), so the report judges a run against the
//! ceiling: when the run is below [`LOW_EFFICIENCY`] of it, or when there is no ceiling (a
//! `.tbin` has no kernel, so no bound), it says where the time went, from the
//! per-instruction events: the cycles above the ceiling, the bottleneck engine and its
//! idle time by cause, and the largest idle gaps of the busiest engines with what each
//! waited on — the semaphore and the instruction that signalled it, a DMA's fixed
//! latency, a stationary load, or "idle: no work issued". Otherwise it says in one line
//! how close to the ceiling the run is.
//!
//! Everything here is total: any report and program give a profile, never a panic.

use crate::roofline::Bound;
use isa::{Engine, Opcode, Program};
use runtime::trace::{binding_wait, event_name, wait_sources};
use runtime::{Event, Report};
use serde_json::{json, Map, Value};

/// Below this fraction of the latency-aware ceiling (`ceiling / total`) the profile
/// explains where the time went.
pub const LOW_EFFICIENCY: f64 = 0.7;

/// How many idle gaps the diagnosis lists per engine, and for how many engines.
const GAPS_PER_ENGINE: usize = 3;
const ENGINES_WITH_GAPS: usize = 3;

/// The compute engines, in report order, and the name of all DMA queues together.
const COMPUTE: [Engine; 4] = [
    Engine::Tensor,
    Engine::Vector,
    Engine::Scalar,
    Engine::GpSimd,
];
const DMA: &str = "dma";

/// How one engine (or all DMA queues together) was used.
#[derive(Clone, Debug, PartialEq)]
pub struct EngineUse {
    /// `tensor`, `vector`, `scalar`, `gpsimd`, `dma` (all queues) or `dma0` .. `dma15`.
    pub name: String,
    /// Cycles the engine was executing. For DMA, cycles in which at least one queue was
    /// in its data phase (a queue: the sum of its data phases).
    pub busy_cycles: u64,
    /// `busy_cycles / total_cycles`.
    pub utilisation: f64,
    pub instructions: u64,
}

/// An interval in which an engine did nothing, and why.
#[derive(Clone, Debug, PartialEq)]
pub struct Gap {
    pub engine: String,
    pub start: u64,
    pub end: u64,
    /// The grouping key of the cause: `waiting on dma`, `dma latency`, `stationary load`,
    /// `no work issued`, ...
    pub cause: String,
    /// The cause in full: the semaphore and the instruction that signalled it, etc.
    pub detail: String,
}

impl Gap {
    pub fn cycles(&self) -> u64 {
        self.end - self.start
    }
}

/// Where the time went.
#[derive(Clone, Debug, PartialEq)]
pub struct Diagnosis {
    /// The engine closest to its peak: the largest utilisation among the compute
    /// engines and the DMA bandwidth utilisation.
    pub bottleneck: String,
    /// Its utilisation (for DMA, of the bandwidth).
    pub bottleneck_utilisation: f64,
    /// The bottleneck's idle cycles by cause, largest first.
    pub idle_by_cause: Vec<(String, u64)>,
    /// The largest idle gaps of the busiest engines, engine by engine.
    pub gaps: Vec<Gap>,
    /// False when the run recorded no events, so gaps could not be found.
    pub have_events: bool,
    /// Work beyond the kernel's: HBM traffic above the compulsory bytes, matmul FLOPs
    /// above the kernel's.
    pub excess: Vec<String>,
}

/// The profile of one run.
#[derive(Clone, Debug, PartialEq)]
pub struct Profile {
    pub total_cycles: u64,
    pub clock_hz: f64,
    pub instructions: u64,
    /// tensor, vector, scalar, gpsimd, dma (all queues together), in that order.
    pub engines: Vec<EngineUse>,
    /// Each DMA queue that ran anything.
    pub dma_queues: Vec<EngineUse>,
    /// Bytes moved by DMA divided by what the DMA peak could move in the run's time.
    pub dma_bandwidth_utilisation: f64,
    pub dma_peak_bytes_per_cycle: u64,
    pub hbm_bytes_read: u64,
    pub hbm_bytes_written: u64,
    pub sbuf_to_sbuf_bytes: u64,
    /// Matmul FLOPs executed (`2 K M N` per matmul instruction).
    pub matmul_flops: u64,
    /// The kernel's roofline bound; `None` for a `.tbin`, which has no kernel.
    pub bound: Option<Bound>,
    /// Present when the run is far from the ceiling (below [`LOW_EFFICIENCY`] of it) or
    /// there is no ceiling.
    pub diagnosis: Option<Diagnosis>,
}

/// Merges intervals into disjoint sorted ones.
fn merge(mut v: Vec<(u64, u64)>) -> Vec<(u64, u64)> {
    v.sort_unstable();
    let mut out: Vec<(u64, u64)> = Vec::with_capacity(v.len());
    for (s, e) in v {
        match out.last_mut() {
            Some(last) if s <= last.1 => last.1 = last.1.max(e),
            _ => out.push((s, e)),
        }
    }
    out
}

/// The busy interval of an event: a DMA transfer's data phase, else start to end.
fn busy_of(e: &Event) -> (u64, u64) {
    if is_transfer(e) {
        (e.data_start, e.end.max(e.data_start))
    } else {
        (e.start, e.end.max(e.start))
    }
}

fn is_transfer(e: &Event) -> bool {
    matches!(e.engine, Engine::Dma(_)) && matches!(e.opcode, Opcode::Dma | Opcode::DmaGather)
}

/// The engine kind of a stream, as the profile names engines.
fn kind(engine: Engine) -> String {
    match engine {
        Engine::Dma(_) => DMA.to_string(),
        other => other.name(),
    }
}

fn ratio(a: u64, b: u64) -> f64 {
    if b == 0 {
        0.0
    } else {
        a as f64 / b as f64
    }
}

impl Profile {
    /// The profile of a run of `program` that gave `report`, with the kernel's `bound`
    /// when there is a kernel. `dma_total_rate` is the machine's DMA peak in bytes per
    /// cycle (`Timing::dma_total_rate`).
    pub fn new(
        program: &Program,
        report: &Report,
        bound: Option<Bound>,
        dma_total_rate: u64,
    ) -> Profile {
        let total = report.total_cycles;
        let mut engines: Vec<EngineUse> = COMPUTE
            .iter()
            .map(|&e| {
                let stats = report.engines.get(e.index());
                let busy = stats.map_or(0, |s| s.busy_cycles);
                EngineUse {
                    name: e.name(),
                    busy_cycles: busy,
                    utilisation: ratio(busy, total),
                    instructions: stats.map_or(0, |s| s.instructions),
                }
            })
            .collect();
        let dma_queues: Vec<EngineUse> = report
            .engines
            .iter()
            .filter(|s| matches!(s.engine, Engine::Dma(_)) && s.instructions > 0)
            .map(|s| EngineUse {
                name: s.engine.name(),
                busy_cycles: s.busy_cycles,
                utilisation: ratio(s.busy_cycles, total),
                instructions: s.instructions,
            })
            .collect();
        let dma_instructions = dma_queues.iter().map(|q| q.instructions).sum();
        // All queues together: the union of their data phases when events were recorded;
        // without events, the busiest queue is a lower bound.
        let dma_busy = if report.events.is_empty() {
            dma_queues.iter().map(|q| q.busy_cycles).max().unwrap_or(0)
        } else {
            let phases = report
                .events
                .iter()
                .filter(|e| is_transfer(e))
                .map(busy_of)
                .collect();
            merge(phases).iter().map(|(s, e)| e - s).sum()
        };
        engines.push(EngineUse {
            name: DMA.into(),
            busy_cycles: dma_busy,
            utilisation: ratio(dma_busy, total),
            instructions: dma_instructions,
        });
        let moved = report.hbm_read_bytes + report.hbm_write_bytes + report.sbuf_to_sbuf_bytes;
        let mut p = Profile {
            total_cycles: total,
            clock_hz: report.clock_hz,
            instructions: report.instructions,
            engines,
            dma_queues,
            dma_bandwidth_utilisation: ratio(moved, total.saturating_mul(dma_total_rate.max(1))),
            dma_peak_bytes_per_cycle: dma_total_rate,
            hbm_bytes_read: report.hbm_read_bytes,
            hbm_bytes_written: report.hbm_write_bytes,
            sbuf_to_sbuf_bytes: report.sbuf_to_sbuf_bytes,
            matmul_flops: report.matmul_flops,
            bound,
            diagnosis: None,
        };
        if !matches!(p.of_ceiling(), Some(e) if e >= LOW_EFFICIENCY) && total > 0 {
            p.diagnosis = Some(diagnose(&p, program, report));
        }
        p
    }

    /// Where the time went, whatever the efficiency (`new` only does it when the run is
    /// far from the ceiling).
    pub fn diagnose(&self, program: &Program, report: &Report) -> Diagnosis {
        diagnose(self, program, report)
    }

    /// The bound in whole cycles, if there is a kernel.
    pub fn bound_cycles(&self) -> Option<u64> {
        self.bound.as_ref().map(Bound::cycles)
    }

    /// The engine whose limit is the bound.
    pub fn bound_engine(&self) -> Option<&'static str> {
        self.bound.as_ref().map(Bound::engine)
    }

    /// Roofline efficiency: bound cycles / total cycles (None without a bound or for an
    /// empty run).
    pub fn efficiency(&self) -> Option<f64> {
        let b = self.bound_cycles()?;
        (self.total_cycles > 0).then(|| b as f64 / self.total_cycles as f64)
    }

    /// The latency-aware ceiling in whole cycles, if there is a kernel.
    pub fn ceiling_cycles(&self) -> Option<u64> {
        self.bound.as_ref().map(|b| b.ceiling.cycles())
    }

    /// The best roofline efficiency any program can reach: bound / ceiling.
    pub fn best_efficiency(&self) -> Option<f64> {
        self.bound.as_ref().map(Bound::best_efficiency)
    }

    /// How close the run came to the ceiling: ceiling cycles / total cycles (None without
    /// a bound or for an empty run).
    pub fn of_ceiling(&self) -> Option<f64> {
        let c = self.ceiling_cycles()?;
        (self.total_cycles > 0).then(|| c as f64 / self.total_cycles as f64)
    }

    /// The use of an engine by name (`tensor`, ..., `dma`).
    pub fn engine(&self, name: &str) -> Option<&EngineUse> {
        self.engines.iter().find(|e| e.name == name)
    }

    /// Total cycles minus the ceiling (0 at or below it; None without a bound).
    pub fn cycles_above_ceiling(&self) -> Option<u64> {
        Some(self.total_cycles.saturating_sub(self.ceiling_cycles()?))
    }

    /// The one line that says how close a run that needs no explanation came to the
    /// ceiling: `(total - ceiling) / ceiling` as a percentage.
    fn closeness(&self, ceiling: u64) -> String {
        let total = self.total_cycles;
        match total.cmp(&ceiling) {
            std::cmp::Ordering::Equal => "at the latency-aware ceiling\n".into(),
            std::cmp::Ordering::Greater => format!(
                "within {:.1}% of the latency-aware ceiling\n",
                100.0 * (total - ceiling) as f64 / ceiling as f64
            ),
            // The ceiling's argument assumes every input byte, output byte and counted
            // operation is needed; a kernel that needs less can beat it.
            std::cmp::Ordering::Less => format!(
                "{} cycles below the latency-aware ceiling (the kernel needs less than the \
                 bound counts)\n",
                ceiling - total
            ),
        }
    }

    fn seconds(&self) -> f64 {
        if self.clock_hz > 0.0 {
            self.total_cycles as f64 / self.clock_hz
        } else {
            0.0
        }
    }

    /// The human-readable summary `--report` prints.
    pub fn text(&self) -> String {
        let mut s = format!(
            "total {} cycles ({:.3} us at {:.2} GHz), {} instructions\n",
            self.total_cycles,
            self.seconds() * 1e6,
            self.clock_hz / 1e9,
            self.instructions
        );
        s.push_str("  engine    busy cycles   util  instructions\n");
        for e in &self.engines {
            s.push_str(&format!(
                "  {:<7} {:>13} {:>5.1}% {:>13}",
                e.name,
                e.busy_cycles,
                100.0 * e.utilisation,
                e.instructions
            ));
            if e.name == DMA {
                s.push_str(&format!(
                    "  (any queue moving data; bandwidth {:.1}% of {} B/cycle, {} queues used)",
                    100.0 * self.dma_bandwidth_utilisation,
                    self.dma_peak_bytes_per_cycle,
                    self.dma_queues.len()
                ));
            }
            s.push('\n');
        }
        s.push_str(&format!(
            "bytes moved: hbm read {}, hbm written {}, sbuf->sbuf {}\n",
            self.hbm_bytes_read, self.hbm_bytes_written, self.sbuf_to_sbuf_bytes
        ));
        if self.matmul_flops > 0 {
            s.push_str(&format!(
                "matmul: {} FLOP, {:.2} TFLOP/s simulated\n",
                self.matmul_flops,
                ratio_f(self.matmul_flops as f64, self.seconds()) / 1e12
            ));
        }
        match (&self.bound, self.efficiency()) {
            (Some(b), eff) => {
                s.push_str(&format!(
                    "bound: {} cycles, set by {} (tensor {:.0}, dma {:.0}, scalar {:.0})\n",
                    b.cycles(),
                    b.engine(),
                    b.tensor_cycles,
                    b.dma_cycles,
                    b.scalar_cycles
                ));
                if let Some(eff) = eff {
                    s.push_str(&format!("roofline efficiency: {eff:.3} (bound / total)\n"));
                }
                let c = &b.ceiling;
                s.push_str(&format!(
                    "ceiling: {} cycles with DMA latency, set by {} (tensor {:.0}, dma {:.0}, \
                     scalar {:.0}); best roofline efficiency {:.3} (bound / ceiling)\n",
                    c.cycles(),
                    c.engine(),
                    c.tensor_cycles,
                    c.dma_cycles,
                    c.scalar_cycles,
                    b.best_efficiency()
                ));
                if let Some(of) = self.of_ceiling() {
                    s.push_str(&format!("of the ceiling: {of:.3} (ceiling / total)\n"));
                    if self.diagnosis.is_none() {
                        s.push_str(&self.closeness(c.cycles()));
                    }
                }
            }
            (None, _) => {
                s.push_str("bound: none (a .tbin holds no kernel, and the bound is the kernel's)\n")
            }
        }
        if let Some(d) = &self.diagnosis {
            s.push_str(&d.text(self));
        }
        s
    }

    /// The JSON `--report-json` writes. Keys: `total_cycles`, `seconds`, `clock_hz`,
    /// `instructions`, `bound_cycles`, `bound_engine` and `roofline_efficiency` (null for a
    /// `.tbin`), `bound` (its parts, or null), `ceiling_cycles`, `best_roofline_efficiency`
    /// (bound / ceiling) and `of_ceiling` (ceiling / total; all three null for a `.tbin`),
    /// `ceiling` (its parts and `dma_latency`, or null),
    /// `engines.{tensor,vector,scalar,gpsimd,dma}` with `busy_cycles`, `utilisation` and
    /// `instructions` (and for `dma` also `bandwidth_utilisation` and `queues.dmaN`),
    /// `hbm_bytes_read`, `hbm_bytes_written`, `sbuf_to_sbuf_bytes`, `matmul_flops`, and
    /// `diagnosis` (or null; with `cycles_above_ceiling`, null for a `.tbin`).
    pub fn to_json(&self) -> Value {
        let use_json = |e: &EngineUse| {
            json!({
                "busy_cycles": e.busy_cycles,
                "utilisation": e.utilisation,
                "instructions": e.instructions,
            })
        };
        let mut engines = Map::new();
        for e in &self.engines {
            let mut v = use_json(e);
            if e.name == DMA {
                let queues: Map<String, Value> = self
                    .dma_queues
                    .iter()
                    .map(|q| (q.name.clone(), use_json(q)))
                    .collect();
                v["bandwidth_utilisation"] = json!(self.dma_bandwidth_utilisation);
                v["peak_bytes_per_cycle"] = json!(self.dma_peak_bytes_per_cycle);
                v["queues"] = Value::Object(queues);
            }
            engines.insert(e.name.clone(), v);
        }
        let bound = self.bound.as_ref().map(|b| {
            json!({
                "cycles": b.cycles(),
                "engine": b.engine(),
                "tensor_cycles": b.tensor_cycles,
                "dma_cycles": b.dma_cycles,
                "scalar_cycles": b.scalar_cycles,
                "hbm_read_bytes": b.hbm_read_bytes,
                "hbm_write_bytes": b.hbm_write_bytes,
                "matmul_flops": b.matmul_flops,
                "transcendentals": b.transcendentals,
            })
        });
        let ceiling = self.bound.as_ref().map(|b| {
            let c = &b.ceiling;
            json!({
                "cycles": c.cycles(),
                "engine": c.engine(),
                "dma_latency": c.dma_latency,
                "tensor_cycles": c.tensor_cycles,
                "dma_cycles": c.dma_cycles,
                "scalar_cycles": c.scalar_cycles,
            })
        });
        let diagnosis = self.diagnosis.as_ref().map(|d| {
            json!({
                "cycles_above_ceiling": self.cycles_above_ceiling(),
                "bottleneck": d.bottleneck,
                "bottleneck_utilisation": d.bottleneck_utilisation,
                "idle_by_cause": d.idle_by_cause.iter().map(|(c, n)| json!({"cause": c, "cycles": n})).collect::<Vec<_>>(),
                "gaps": d.gaps.iter().map(|g| json!({
                    "engine": g.engine,
                    "start": g.start,
                    "end": g.end,
                    "cycles": g.cycles(),
                    "cause": g.cause,
                    "detail": g.detail,
                })).collect::<Vec<_>>(),
                "have_events": d.have_events,
                "excess": d.excess,
            })
        });
        json!({
            "total_cycles": self.total_cycles,
            "seconds": self.seconds(),
            "clock_hz": self.clock_hz,
            "instructions": self.instructions,
            "bound_cycles": self.bound_cycles(),
            "bound_engine": self.bound_engine(),
            "roofline_efficiency": self.efficiency(),
            "bound": bound,
            "ceiling_cycles": self.ceiling_cycles(),
            "best_roofline_efficiency": self.best_efficiency(),
            "of_ceiling": self.of_ceiling(),
            "ceiling": ceiling,
            "engines": Value::Object(engines),
            "hbm_bytes_read": self.hbm_bytes_read,
            "hbm_bytes_written": self.hbm_bytes_written,
            "sbuf_to_sbuf_bytes": self.sbuf_to_sbuf_bytes,
            "matmul_flops": self.matmul_flops,
            "diagnosis": diagnosis,
        })
    }
}

fn ratio_f(a: f64, b: f64) -> f64 {
    if b > 0.0 {
        a / b
    } else {
        0.0
    }
}

impl Diagnosis {
    fn text(&self, p: &Profile) -> String {
        let why = match (p.ceiling_cycles(), p.of_ceiling()) {
            (Some(c), Some(of)) => format!(
                "{} cycles, {} above the latency-aware ceiling of {c}; {of:.3} of the ceiling \
                 < {LOW_EFFICIENCY}",
                p.total_cycles,
                p.total_cycles.saturating_sub(c)
            ),
            _ => "no bound to compare with".into(),
        };
        let mut s = format!("where the time went ({why}):\n");
        let what = if self.bottleneck == DMA {
            "of its bandwidth"
        } else {
            "busy"
        };
        s.push_str(&format!(
            "  bottleneck: {} ({:.1}% {what})\n",
            self.bottleneck,
            100.0 * self.bottleneck_utilisation
        ));
        for note in &self.excess {
            s.push_str(&format!("  {note}\n"));
        }
        if !self.have_events {
            s.push_str("  (the run recorded no events, so idle gaps are unknown)\n");
            return s;
        }
        if !self.idle_by_cause.is_empty() {
            let idle: u64 = self.idle_by_cause.iter().map(|(_, n)| n).sum();
            // The idle time splits into what a run at the ceiling with the same busy time
            // would still have and the cycles above the ceiling.
            let busy = p.engine(&self.bottleneck).map(|e| e.busy_cycles);
            let at_ceiling = match (p.ceiling_cycles(), busy) {
                (Some(c), Some(busy)) if busy <= c && p.total_cycles >= c => format!(
                    "; a run at the ceiling, busy as long, would idle {} of them",
                    c - busy
                ),
                _ => String::new(),
            };
            s.push_str(&format!(
                "  {} idle cycles by cause ({idle} in all{at_ceiling}):\n",
                self.bottleneck
            ));
            for (cause, n) in &self.idle_by_cause {
                s.push_str(&format!(
                    "    {:<28} {:>12} cycles ({:.1}% of the run)\n",
                    cause,
                    n,
                    100.0 * ratio(*n, p.total_cycles)
                ));
            }
        }
        if !self.gaps.is_empty() {
            s.push_str("  largest idle gaps of the busiest engines:\n");
            for g in &self.gaps {
                s.push_str(&format!(
                    "    {:<7} cycles {}..{} ({}): {}\n",
                    g.engine,
                    g.start,
                    g.end,
                    g.cycles(),
                    g.detail
                ));
            }
        }
        s
    }
}

/// The engine's (or all DMA queues') events in busy order, and its busy intervals merged.
fn engine_events<'a>(report: &'a Report, name: &str) -> Vec<(usize, &'a Event)> {
    let mut v: Vec<(usize, &Event)> = report
        .events
        .iter()
        .enumerate()
        .filter(|(_, e)| {
            if name == DMA {
                is_transfer(e)
            } else {
                e.engine.name() == name
            }
        })
        .collect();
    v.sort_by_key(|(_, e)| busy_of(e));
    v
}

/// Explains one gap `[start, end)` that ends where event `next` starts being busy.
fn explain(
    engine: &str,
    start: u64,
    end: u64,
    next: Option<(usize, &Event)>,
    report: &Report,
    sources: &[Vec<runtime::trace::WaitSource>],
) -> Gap {
    let gap = |cause: &str, detail: String| Gap {
        engine: engine.to_string(),
        start,
        end,
        cause: cause.to_string(),
        detail,
    };
    let events = &report.events;
    let Some((i, n)) = next else {
        return gap(
            "no work issued",
            if start == 0 {
                "idle: no work issued (the engine ran nothing)".into()
            } else {
                format!("idle: no work issued (its last instruction ended at cycle {start})")
            },
        );
    };
    // The wait that held the instruction back, if it ended inside the gap.
    let waited = (n.start > n.wait_start)
        .then(|| binding_wait(sources.get(i).map_or(&[][..], |s| s), events))
        .flatten()
        .and_then(|w| Some((w, events.get(w.producer?)?)))
        .filter(|(_, p)| p.end > start);
    let wait_text = |w: &runtime::trace::WaitSource, p: &Event| {
        format!(
            "waited on s{}>={} for {} (signalled at cycle {})",
            w.semaphore,
            w.value,
            event_name(p),
            p.end
        )
    };
    if is_transfer(n) {
        let latency = n.data_start.saturating_sub(n.start);
        return match waited {
            Some((w, p)) => gap(
                &format!("waiting on {}", kind(p.engine)),
                format!(
                    "{} before {}, then {latency} cycles of DMA latency",
                    wait_text(w, p),
                    event_name(n)
                ),
            ),
            None if n.start > start => gap(
                "no work issued",
                format!(
                    "idle: no work issued until {} at cycle {}, then {latency} cycles of DMA latency",
                    event_name(n),
                    n.start
                ),
            ),
            None => gap(
                "dma latency",
                format!(
                    "DMA latency of {} (issued at cycle {})",
                    event_name(n),
                    n.start
                ),
            ),
        };
    }
    match waited {
        Some((w, p)) => gap(
            &format!("waiting on {}", kind(p.engine)),
            format!("{} before {}", wait_text(w, p), event_name(n)),
        ),
        None if n.engine == Engine::Tensor && n.start > n.wait_start => gap(
            "stationary load",
            format!("stationary load before {}", event_name(n)),
        ),
        None => gap(
            "no work issued",
            format!("idle: no work issued before {}", event_name(n)),
        ),
    }
}

/// The idle gaps of an engine (or of all DMA queues), in time order.
fn gaps_of(name: &str, report: &Report, sources: &[Vec<runtime::trace::WaitSource>]) -> Vec<Gap> {
    let events = engine_events(report, name);
    let mut gaps = Vec::new();
    if events.is_empty() {
        return gaps;
    }
    let mut t = 0u64;
    for &(i, e) in &events {
        let (s, end) = busy_of(e);
        if s > t {
            gaps.push(explain(name, t, s, Some((i, e)), report, sources));
        }
        t = t.max(end);
    }
    if report.total_cycles > t {
        gaps.push(explain(name, t, report.total_cycles, None, report, sources));
    }
    gaps
}

fn diagnose(p: &Profile, program: &Program, report: &Report) -> Diagnosis {
    // Utilisation against each engine's peak: busy time for compute engines, bandwidth
    // for DMA.
    let mut ranked: Vec<(String, f64)> = p
        .engines
        .iter()
        .filter(|e| e.instructions > 0)
        .map(|e| {
            let u = if e.name == DMA {
                p.dma_bandwidth_utilisation
            } else {
                e.utilisation
            };
            (e.name.clone(), u)
        })
        .collect();
    ranked.sort_by(|a, b| b.1.total_cmp(&a.1));
    let (bottleneck, bottleneck_utilisation) = ranked
        .first()
        .cloned()
        .unwrap_or_else(|| ("none".into(), 0.0));
    let have_events = !report.events.is_empty();
    let sources = wait_sources(program, &report.events);
    let mut idle_by_cause: Vec<(String, u64)> = Vec::new();
    let mut gaps = Vec::new();
    if have_events {
        for (rank, (name, _)) in ranked.iter().take(ENGINES_WITH_GAPS).enumerate() {
            let mut all = gaps_of(name, report, &sources);
            if rank == 0 {
                for g in &all {
                    match idle_by_cause.iter_mut().find(|(c, _)| *c == g.cause) {
                        Some((_, n)) => *n += g.cycles(),
                        None => idle_by_cause.push((g.cause.clone(), g.cycles())),
                    }
                }
                idle_by_cause.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
            }
            all.sort_by(|a, b| b.cycles().cmp(&a.cycles()).then(a.start.cmp(&b.start)));
            gaps.extend(all.into_iter().take(GAPS_PER_ENGINE));
        }
    }
    Diagnosis {
        bottleneck,
        bottleneck_utilisation,
        idle_by_cause,
        gaps,
        have_events,
        excess: excess(p),
    }
}

/// Notes on work the run did beyond what the kernel needs (only with a bound).
fn excess(p: &Profile) -> Vec<String> {
    let Some(b) = &p.bound else {
        return Vec::new();
    };
    let mut notes = Vec::new();
    let compulsory = b.hbm_read_bytes + b.hbm_write_bytes;
    let moved = p.hbm_bytes_read + p.hbm_bytes_written;
    if compulsory > 0 && moved as f64 > 1.05 * compulsory as f64 {
        notes.push(format!(
            "HBM traffic {moved} B is {:.1}x the kernel's compulsory {compulsory} B \
             (spills, operands read more than once, or padding)",
            moved as f64 / compulsory as f64
        ));
    }
    if b.matmul_flops > 0 && p.matmul_flops as f64 > 1.05 * b.matmul_flops as f64 {
        notes.push(format!(
            "the Tensor engine ran {} matmul FLOP, {:.2}x the kernel's {} (padded tiles)",
            p.matmul_flops,
            p.matmul_flops as f64 / b.matmul_flops as f64,
            b.matmul_flops
        ));
    }
    notes
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(engine: Engine, index: u32, opcode: Opcode, t: [u64; 4]) -> Event {
        Event {
            engine,
            index,
            opcode,
            wait_start: t[0],
            start: t[1],
            data_start: t[2],
            end: t[3],
            bytes: 0,
        }
    }

    #[test]
    fn merge_joins_overlapping_and_touching_intervals() {
        assert_eq!(
            merge(vec![(5, 9), (0, 2), (2, 3), (8, 12)]),
            vec![(0, 3), (5, 12)]
        );
        assert_eq!(merge(vec![]), vec![]);
    }

    #[test]
    fn an_empty_report_gives_a_profile_without_panicking() {
        let program = Program::new(isa::Preset::Default);
        let report = Report {
            total_cycles: 0,
            clock_hz: 0.0,
            engines: Vec::new(),
            hbm_read_bytes: 0,
            hbm_write_bytes: 0,
            sbuf_to_sbuf_bytes: 0,
            instructions: 0,
            matmul_flops: 0,
            events: vec![event(Engine::Dma(3), 99, Opcode::Dma, [5, 1, 0, 2])],
        };
        let p = Profile::new(&program, &report, None, 0);
        assert!(p.text().contains("bound: none"));
        assert!(p.to_json()["bound_cycles"].is_null());
        assert_eq!(p.to_json()["engines"]["dma"]["busy_cycles"], 2);
    }
}
