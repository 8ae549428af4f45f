//! The timing model: each cost formula on single instructions, overlap of engines, Tensor
//! waiting for DMA, stationary reloads, DMA queue pipelining and shared DMA bandwidth.
//! Poison tracking is off here: these programs read memory they never wrote, on purpose,
//! since only time matters.

mod common;

use common::*;
use isa::Engine;
use runtime::{Event, MachineConfig, Report};

fn timing_config() -> MachineConfig {
    MachineConfig {
        events: true,
        ..MachineConfig::default()
    }
}

fn run_timed(cfg: MachineConfig, text: &str) -> Report {
    match try_run_with(cfg, text, &[]) {
        Ok((r, _)) => r,
        Err(e) => panic!("run failed: {e}\n{text}"),
    }
}

fn event(r: &Report, engine: Engine, index: u32) -> &Event {
    r.events
        .iter()
        .find(|e| e.engine == engine && e.index == index)
        .unwrap_or_else(|| panic!("no event {engine} {index}"))
}

fn durations(r: &Report, engine: Engine) -> Vec<u64> {
    r.events
        .iter()
        .filter(|e| e.engine == engine)
        .map(|e| e.end - e.start)
        .collect()
}

#[test]
fn compute_instruction_costs() {
    let mut a = Asm::new();
    let t100 = "sbuf.f32[0:128, 0; 100:1]";
    let s1 = "sbuf.f32[0:128, 4096; 1:1]";
    for i in [
        "nop".to_string(),
        format!("tensor_tensor op=add, out={t100}, a={t100}, b={t100}"),
        format!("tensor_scalar out={t100}, src={t100}, op0=mul, s0=2.0, op1=bypass, s1=0.0"),
        format!("tensor_reduce op=add, out={s1}, src=sbuf.f32[0:128, 0; 100:1]"),
        format!("tensor_copy out={t100}, src={t100}"),
        format!("memset out={t100}, value=0.0"),
    ] {
        a.inst("vector", i.clone());
        if i != "nop" {
            a.inst("gpsimd", i);
        }
    }
    a.inst(
        "gpsimd",
        "iota out=sbuf.f32[0:128, 8192; 100:1], expr=affine(base=0, p=1, i=[1])",
    );
    a.inst(
        "gpsimd",
        "affine_select out=sbuf.f32[0:128, 8192; 100:1], src=sbuf.f32[0:128, 8192; 100:1], cmp=ge, expr=affine(base=0, p=1, i=[1]), fill=0.0",
    );
    a.inst(
        "scalar",
        format!("activate out={t100}, src={t100}, func=exp, scale=1.0, bias=0.0, accum=none"),
    );
    let r = run_timed(timing_config(), &a.text());
    // Vector: 1, 64 + 2N, then 64 + N.
    assert_eq!(
        durations(&r, Engine::Vector),
        vec![1, 264, 164, 164, 164, 164]
    );
    // GpSimd: 64 + 8N for tensor_tensor, 64 + 4N for the rest.
    assert_eq!(
        durations(&r, Engine::GpSimd),
        vec![864, 464, 464, 464, 464, 464, 464]
    );
    assert_eq!(durations(&r, Engine::Scalar), vec![164]);
    // Each stream issues in order, back to back.
    assert_eq!(event(&r, Engine::Vector, 2).start, 265);
    assert_eq!(r.engine(Engine::GpSimd).busy_cycles, 864 + 6 * 464);
    assert_eq!(r.total_cycles, 864 + 6 * 464);
}

#[test]
fn tensor_costs_and_stationary_loads() {
    let mut a = Asm::new();
    let mm = |dt: &str, k: usize, m: usize, n: usize, soff: usize| {
        format!(
            "matmul out=psum.f32[0:{m}, 0; {n}:1], stationary=sbuf.{dt}[0:{k}, {soff}; {m}:1], moving=sbuf.{dt}[0:{k}, 8192; {n}:1], accumulate=false"
        )
    };
    a.inst("tensor", mm("bf16", 128, 128, 512, 0)); // load 0..32, then 256 cycles
    a.inst("tensor", mm("bf16", 128, 128, 512, 0)); // same stationary: no load
    a.inst("tensor", mm("bf16", 128, 128, 512, 256)); // new stationary, load hidden
    a.inst("tensor", mm("f32", 64, 64, 100, 0)); // 2N = 200
    a.inst("tensor", mm("f8e4m3", 64, 64, 100, 0)); // N/4 = 25 -> 32
    a.inst("tensor", mm("f16", 64, 64, 77, 0)); // ceil(77/2) = 39
    a.inst(
        "tensor",
        "transpose out=psum.f32[0:100, 4096; 128:1], src=sbuf.bf16[0:128, 0; 100:1]",
    ); // P/2 = 64
    a.inst(
        "tensor",
        "transpose out=psum.f32[0:100, 4096; 16:1], src=sbuf.bf16[0:16, 0; 100:1]",
    ); // 8 -> 32
    let r = run_timed(timing_config(), &a.text());
    assert_eq!(
        durations(&r, Engine::Tensor),
        vec![256, 256, 256, 200, 32, 39, 64, 32]
    );
    let starts: Vec<u64> = r
        .events
        .iter()
        .filter(|e| e.engine == Engine::Tensor)
        .map(|e| e.start)
        .collect();
    // Only the first load is exposed: every later one starts with the previous matmul
    // and takes 32 cycles, no longer than any matmul.
    assert_eq!(starts, vec![32, 288, 544, 800, 1000, 1032, 1071, 1135]);
    assert_eq!(r.total_cycles, 1167);
}

/// `i32` and `bool` transposes (exact moves on the integer datapath) cost what the float of
/// their width costs: `i32` as f32 (P / 0.5 columns a cycle), `bool` as FP8 (P / 4, at least
/// 32). The timing table once had no row for them, and such a program panicked.
#[test]
fn integer_transposes_cost_as_their_width() {
    let mut a = Asm::new();
    a.inst(
        "tensor",
        "transpose out=psum.i32[0:100, 0; 128:1], src=sbuf.i32[0:128, 0; 100:1]",
    ); // 128 / 0.5 = 256
    a.inst(
        "tensor",
        "transpose out=psum.bool[0:100, 4096; 128:1], src=sbuf.bool[0:128, 8192; 100:1]",
    ); // 128 / 4 = 32
    let r = run_timed(timing_config(), &a.text());
    assert_eq!(durations(&r, Engine::Tensor), vec![256, 32]);
}

#[test]
fn dma_costs_count_runs_of_at_least_64_bytes() {
    let mut a = Asm::new();
    let x = a.tensor("x", "input", isa::Dtype::F32, &[2048]);
    // 4096 contiguous bytes (32 partitions x 128 B in SBUF): 2000 + 4096/16.
    a.inst(
        "dma0",
        format!("dma dst=sbuf.f32[0:32, 0; 32:1], src=hbm.f32[{x}; 1024:1]"),
    );
    // 128 f32 with stride 2: 128 runs of 4 B, each counted as 64: 2000 + 8192/16.
    a.inst(
        "dma1",
        format!("dma dst=sbuf.f32[0:1, 0; 128:1], src=hbm.f32[{x}; 128:2]"),
    );
    // 128 partitions x one bf16: the tile side has 128 runs of 2 B: 2000 + 8192/16.
    a.inst(
        "dma2",
        format!("dma dst=sbuf.bf16[0:128, 0; 1:1], src=hbm.f32[{x}; 128:1]"),
    );
    // f32 -> bf16 of 1024 elements: the larger side (4096 B) counts.
    a.inst(
        "dma3",
        format!("dma dst=sbuf.bf16[0:1, 0; 1024:1], src=hbm.f32[{x}; 1024:1]"),
    );
    let xv = vec![1.0f32; 2048];
    let (r, _) = try_run_with(timing_config(), &a.text(), &[("x", &xv)]).unwrap();
    let d: Vec<u64> = (0..4)
        .map(|q| {
            let e = event(&r, Engine::Dma(q), 0);
            assert_eq!(e.data_start, e.start + 2000);
            e.end - e.start
        })
        .collect();
    assert_eq!(d, vec![2256, 2512, 2512, 2256]);
    assert_eq!(r.engine(Engine::Dma(1)).busy_cycles, 512);
}

#[test]
fn vector_and_scalar_run_in_parallel() {
    let mut a = Asm::new();
    a.inst(
        "vector",
        "memset out=sbuf.f32[0:128, 0; 1000:1], value=1.0 signal(s0)",
    );
    a.inst(
        "scalar",
        "activate out=sbuf.f32[0:128, 8192; 500:1], src=sbuf.f32[0:128, 4096; 500:1], func=exp, scale=1.0, bias=0.0, accum=none signal(s0)",
    );
    // Waits for both: starts at max(1064, 564).
    a.inst("vector", "wait(s0>=2) nop");
    let r = run_timed(timing_config(), &a.text());
    assert_eq!(event(&r, Engine::Vector, 0).start, 0);
    assert_eq!(event(&r, Engine::Scalar, 0).start, 0);
    assert_eq!(event(&r, Engine::Scalar, 0).end, 564);
    let nop = event(&r, Engine::Vector, 1);
    assert_eq!((nop.wait_start, nop.start, nop.end), (1064, 1064, 1065));
    assert_eq!(r.total_cycles, 1065);
    assert!((r.utilisation(Engine::Scalar) - 564.0 / 1065.0).abs() < 1e-12);
}

#[test]
fn tensor_waits_for_dma() {
    let mut a = Asm::new();
    let x = a.tensor("x", "input", isa::Dtype::Bf16, &[128, 16]);
    a.inst(
        "dma0",
        format!("dma dst=sbuf.bf16[0:128, 0; 16:1], src=hbm.bf16[{x}; 128:16, 16:1] signal(s0)"),
    );
    a.inst(
        "tensor",
        "wait(s0>=1) matmul out=psum.f32[0:16, 0; 16:1], stationary=sbuf.bf16[0:128, 0; 16:1], moving=sbuf.bf16[0:128, 0; 16:1], accumulate=false signal(s1)",
    );
    a.inst("vector", "wait(s1>=1) nop");
    let xv = vec![0.5f32; 128 * 16];
    let (r, _) = try_run_with(timing_config(), &a.text(), &[("x", &xv)]).unwrap();
    // 4096 B, but 128 SBUF runs of 32 B count 64 B each: 2000 + 8192/16 = 2512. The
    // stationary load follows (32 cycles), then the matmul (max(16/2, 32) = 32).
    assert_eq!(event(&r, Engine::Dma(0), 0).end, 2512);
    let mm = event(&r, Engine::Tensor, 0);
    assert_eq!((mm.wait_start, mm.start, mm.end), (0, 2544, 2576));
    assert_eq!(event(&r, Engine::Vector, 0).start, 2576);
    assert_eq!(r.total_cycles, 2577);
}

#[test]
fn dma_queue_pipelines_latency_but_serialises_data() {
    let mut a = Asm::new();
    let x = a.tensor("x", "input", isa::Dtype::F32, &[400]);
    for _ in 0..2 {
        a.inst(
            "dma0",
            format!("dma dst=sbuf.f32[0:1, 0; 400:1], src=hbm.f32[{x}; 400:1]"),
        );
    }
    let xv = vec![1.0f32; 400];
    let (r, _) = try_run_with(timing_config(), &a.text(), &[("x", &xv)]).unwrap();
    let (e0, e1) = (event(&r, Engine::Dma(0), 0), event(&r, Engine::Dma(0), 1));
    assert_eq!((e0.start, e0.data_start, e0.end), (0, 2000, 2100));
    assert_eq!((e1.start, e1.data_start, e1.end), (0, 2100, 2200));
    assert_eq!(r.engine(Engine::Dma(0)).busy_cycles, 200);
}

#[test]
fn dma_queues_share_the_total_bandwidth() {
    // Total 16 B/cycle: one queue alone gets 16, two share 8 each.
    let mut cfg = timing_config();
    cfg.timing.dma_total_rate = 16;
    let mut a = Asm::new();
    let x = a.tensor("x", "input", isa::Dtype::F32, &[1200]);
    a.inst(
        "dma0",
        format!("dma dst=sbuf.f32[0:1, 0; 1200:1], src=hbm.f32[{x}; 1200:1]"),
    );
    // 64 + 36 = 100 cycles, so the second transfer issues at 100.
    a.inst(
        "vector",
        "memset out=sbuf.f32[0:1, 8192; 36:1], value=0.0 signal(s0)",
    );
    a.inst(
        "dma1",
        format!("wait(s0>=1) dma dst=sbuf.f32[0:1, 16384; 400:1], src=hbm.f32[{x}; 400:1]"),
    );
    let xv = vec![1.0f32; 1200];
    let (r, _) = try_run_with(cfg, &a.text(), &[("x", &xv)]).unwrap();
    // A (4800 B): alone 2000..2100 (1600 B), shared with B 2100..2300 (1600 B), alone
    // again 2300..2400. B (1600 B): 2100..2300 at 8 B/cycle.
    let (ea, eb) = (event(&r, Engine::Dma(0), 0), event(&r, Engine::Dma(1), 0));
    assert_eq!((ea.data_start, ea.end), (2000, 2400));
    assert_eq!((eb.start, eb.data_start, eb.end), (100, 2100, 2300));

    // Three queues sharing 32 B/cycle get 32/3 each: 1024 B take 96 cycles.
    let mut cfg = timing_config();
    cfg.timing.dma_total_rate = 32;
    let mut a = Asm::new();
    let x = a.tensor("x", "input", isa::Dtype::F32, &[256]);
    for q in 0..3 {
        a.inst(
            &format!("dma{q}"),
            format!(
                "dma dst=sbuf.f32[0:1, {}; 256:1], src=hbm.f32[{x}; 256:1]",
                q * 1024
            ),
        );
    }
    let xv = vec![1.0f32; 256];
    let (r, _) = try_run_with(cfg, &a.text(), &[("x", &xv)]).unwrap();
    for q in 0..3 {
        assert_eq!(event(&r, Engine::Dma(q), 0).end, 2096);
    }

    // With the defaults, 16 queues x 16 B/cycle = 256: the cap never binds.
    let mut a = Asm::new();
    let x = a.tensor("x", "input", isa::Dtype::F32, &[256]);
    for q in 0..16 {
        a.inst(
            &format!("dma{q}"),
            format!(
                "dma dst=sbuf.f32[0:1, {}; 256:1], src=hbm.f32[{x}; 256:1]",
                q * 1024
            ),
        );
    }
    let (r, _) = try_run_with(timing_config(), &a.text(), &[("x", &xv)]).unwrap();
    assert_eq!(r.total_cycles, 2064);
}

#[test]
fn events_can_be_turned_off() {
    let mut cfg = timing_config();
    cfg.events = false;
    let mut a = Asm::new();
    a.inst("vector", "nop");
    let r = run_timed(cfg, &a.text());
    assert!(r.events.is_empty());
    assert_eq!((r.total_cycles, r.instructions), (1, 1));
}
