//! Hand-written tile IR pushed through engines, alloc, sync and emit, run on the
//! interpreter (with its poison check of never-written SBUF/PSUM reads on) and compared
//! bit for bit with plain-Rust computations: exp over row blocks, a 256^3 bf16 matmul with
//! Tensor-engine transposes and PSUM accumulation, and a sum whose working set forces
//! spills. Also: the timeline shows DMA overlapping compute, removing waits breaks runs,
//! emitted programs verify and carry source locations.

#[path = "tile/common.rs"]
mod common;

use common::value;
use isa::{Engine, Op, Program, Role};
use runtime::{run_program, MachineConfig, RunResult, RuntimeError};

/// The machine the tests run on: default timing, poison tracking on.
fn config() -> MachineConfig {
    MachineConfig {
        poison: true,
        ..MachineConfig::default()
    }
}

fn run(program: &Program, inputs: &[(&str, &[f32])]) -> Result<RunResult, RuntimeError> {
    run_program(program, &config(), inputs)
}

/// Asserts bit-identical outputs.
fn assert_bits(got: &[f32], want: &[f32], what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert_eq!(
            g.to_bits(),
            w.to_bits(),
            "{what}: element {i}: got {g}, want {w}"
        );
    }
}

fn exp_inputs() -> (Vec<f32>, Vec<f32>) {
    let x: Vec<f32> = (0..300 * 100).map(value).collect();
    let y = x.iter().map(|&v| (v as f64).exp() as f32).collect();
    (x, y)
}

#[test]
fn exp_over_row_blocks_is_exact() {
    let (x, want) = exp_inputs();
    for name in ["exp_rows.tir", "exp_rows_shared.tir"] {
        for balance in [false, true] {
            let c = common::compile(common::parse_file(name), balance);
            let program = c.program.as_ref().expect("program");
            assert_eq!(isa::verify(program), Ok(()));
            let r = run(program, &[("x", &x)]).unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_bits(&r.outputs[0].1, &want, name);
        }
    }
}

/// The stream index of every DMA that loads from HBM, and of every activation.
fn find(program: &Program, pred: impl Fn(&Op) -> bool) -> Vec<(Engine, u32)> {
    let mut found = Vec::new();
    for (s, stream) in program.streams.iter().enumerate() {
        for (k, inst) in stream.iter().enumerate() {
            if pred(&inst.op) {
                found.push((Engine::from_index(s).expect("stream"), k as u32));
            }
        }
    }
    found
}

#[test]
fn dma_of_the_next_block_overlaps_compute_of_the_current_one() {
    let c = common::compile(common::parse_file("exp_rows.tir"), true);
    let program = c.program.as_ref().expect("program");
    let (x, _) = exp_inputs();
    let r = run(program, &[("x", &x)]).expect("run");
    let span = |(engine, index): (Engine, u32)| {
        let e = r
            .report
            .events
            .iter()
            .find(|e| e.engine == engine && e.index == index)
            .expect("event");
        (e.start, e.end)
    };
    let loads = find(program, |op| {
        matches!(
            op,
            Op::Dma {
                src: isa::DmaAp::Hbm(_),
                ..
            }
        )
    });
    let acts = find(program, |op| matches!(op, Op::Activate { .. }));
    assert_eq!((loads.len(), acts.len()), (3, 3));
    // The loads went to three different queues and none waits for anything.
    let queues: std::collections::BTreeSet<Engine> = loads.iter().map(|l| l.0).collect();
    assert_eq!(queues.len(), 3);
    let stores = find(program, |op| {
        matches!(
            op,
            Op::Dma {
                dst: isa::DmaAp::Hbm(_),
                ..
            }
        )
    });
    assert_eq!(stores.len(), 3);
    for k in 0..2 {
        // The load of block k + 1 does not wait for the compute of block k (its buffer is
        // a different one: next-fit did not reuse the block's memory at once)...
        let (load_start, _) = span(loads[k + 1]);
        let (_, act_end) = span(acts[k]);
        assert!(
            load_start < act_end,
            "block {k}: load {load_start}, act end {act_end}"
        );
        // ...and the store of block k is in flight while block k + 1 computes.
        let (store_start, store_end) = span(stores[k]);
        let (next_start, next_end) = span(acts[k + 1]);
        assert!(
            store_start < next_end && next_start < store_end,
            "block {k}: store {store_start}..{store_end}, next act {next_start}..{next_end}"
        );
    }
    // With one queue and shared buffers, everything is serial and slower.
    let serial = common::compile(common::parse_file("exp_rows_shared.tir"), false);
    let rs = run(serial.program.as_ref().expect("program"), &[("x", &x)]).expect("run");
    assert!(
        r.report.total_cycles < rs.report.total_cycles,
        "{} vs {}",
        r.report.total_cycles,
        rs.report.total_cycles
    );
}

/// `c = a @ b` in f32 with the products added for k = 0, 1, .. in order.
fn matmul_reference(a: &[f32], b: &[f32], n: usize) -> Vec<f32> {
    let mut c = vec![0.0f32; n * n];
    for m in 0..n {
        for j in 0..n {
            let mut acc = 0.0f32;
            for k in 0..n {
                acc += a[m * n + k] * b[k * n + j];
            }
            c[m * n + j] = acc;
        }
    }
    c
}

fn matmul_inputs() -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    let a: Vec<f32> = (0..256 * 256).map(value).collect();
    let b: Vec<f32> = (0..256 * 256).map(|i| value(i * 3 + 1)).collect();
    let c = matmul_reference(&a, &b, 256);
    (a, b, c)
}

#[test]
fn matmul_with_transposes_and_psum_accumulation_is_exact() {
    let (a, b, want) = matmul_inputs();
    for balance in [false, true] {
        let c = common::compile(common::parse_file("matmul256.tir"), balance);
        let program = c.program.as_ref().expect("program");
        assert_eq!(isa::verify(program), Ok(()));
        let r = run(program, &[("a", &a), ("b", &b)]).expect("run");
        assert_bits(&r.outputs[0].1, &want, "matmul256");
        assert_eq!(r.report.matmul_flops, 2 * 256 * 256 * 256);
    }
}

/// Timing variants that change which engine runs ahead, so that a missing wait shows.
fn configs() -> Vec<MachineConfig> {
    let mut out = vec![config()];
    for k in 0..4 {
        let mut c = config();
        match k {
            0 => c.timing.dma_latency = 200_000,
            1 => c.timing.scalar_fixed = 200_000,
            2 => c.timing.vector_fixed = 200_000,
            _ => c.timing.matmul_min = 200_000,
        }
        out.push(c);
    }
    out
}

/// For every wait of the program: remove it and run under each timing variant. Returns
/// (waits, removals detected by a wrong result or a run-time error).
fn remove_each_wait(program: &Program, inputs: &[(&str, &[f32])], want: &[f32]) -> (usize, usize) {
    let (mut waits, mut detected) = (0, 0);
    for s in 0..program.streams.len() {
        for k in 0..program.streams[s].len() {
            for w in 0..program.streams[s][k].sync.waits.len() {
                waits += 1;
                let mut p = program.clone();
                p.streams[s][k].sync.waits.remove(w);
                let caught = configs()
                    .iter()
                    .any(|cfg| match run_program(&p, cfg, inputs) {
                        Err(_) => true,
                        Ok(r) => r.outputs[0]
                            .1
                            .iter()
                            .zip(want)
                            .any(|(g, w)| g.to_bits() != w.to_bits()),
                    });
                detected += caught as usize;
            }
        }
    }
    (waits, detected)
}

#[test]
fn removing_waits_breaks_the_runs() {
    // Every wait is needed by the happens-before argument (the tile verifier reports a
    // race for each removal: see tile_verify.rs). At run time a removal shows only when
    // the timing lets the consumer start before its producer (effects apply at start),
    // so this counts, under several timings, the removals that give a wrong result or
    // trip the poison check.
    let (x, y) = exp_inputs();
    let c = common::compile(common::parse_file("exp_rows_shared.tir"), true);
    let (waits, detected) = remove_each_wait(c.program.as_ref().expect("p"), &[("x", &x)], &y);
    eprintln!("exp_rows_shared: {detected} of {waits} removed waits break the run");
    assert!(waits > 0 && detected * 2 >= waits, "{detected} of {waits}");
    let (a, b, want) = matmul_inputs();
    let c = common::compile(common::parse_file("matmul256.tir"), true);
    let (waits, detected) = remove_each_wait(
        c.program.as_ref().expect("p"),
        &[("a", &a), ("b", &b)],
        &want,
    );
    eprintln!("matmul256: {detected} of {waits} removed waits break the run");
    assert!(waits > 0 && detected * 4 >= waits, "{detected} of {waits}");
}

#[test]
fn a_working_set_beyond_sbuf_is_spilled_and_still_exact() {
    let xs: Vec<Vec<f32>> = (0..5)
        .map(|k| (0..128 * 12288).map(|i| value(i * 5 + k)).collect())
        .collect();
    let want: Vec<f32> = (0..128 * 12288)
        .map(|i| (((xs[0][i] + xs[1][i]) + xs[2][i]) + xs[3][i]) + xs[4][i])
        .collect();
    let f = common::parse_file("spill_sum.tir");
    let mut c = common::compilation(f);
    for name in ["engines", "alloc"] {
        common::run_pass(&mut c, name);
    }
    let tile = c.tile.as_ref().expect("tile");
    let spills = tile.hbm_bufs(Role::Scratch).count();
    assert!(spills > 0, "nothing was spilled:\n{tile}");
    for name in ["sync", "emit"] {
        common::run_pass(&mut c, name);
    }
    let program = c.program.as_ref().expect("program");
    assert_eq!(isa::verify(program), Ok(()));
    assert_eq!(program.tensors_with_role(Role::Scratch).count(), spills);
    let names = ["x0", "x1", "x2", "x3", "x4"];
    let inputs: Vec<(&str, &[f32])> = names
        .iter()
        .zip(&xs)
        .map(|(n, x)| (*n, x.as_slice()))
        .collect();
    let r = run(program, &inputs).expect("run");
    assert_bits(&r.outputs[0].1, &want, "spill_sum");
}

#[test]
fn a_buffer_larger_than_sbuf_is_an_internal_error() {
    let f = tessera::tile::parse(
        "tile kernel k {
    b0 = sbuf f32 128x262144
    inst0 = vector: memset out=sbuf.f32[0:128, 0; 65536:1], value=0.0 {b0}
}\n",
    )
    .expect("parse");
    let mut c = common::compilation(f);
    let pass = tessera::passes::find("alloc").expect("alloc");
    let err = (pass.run)(&mut c).expect_err("too big");
    assert_eq!(
        err,
        "b0 needs 262144 bytes per partition, more than a whole SBUF partition (196608 bytes); \
         the tile pass must make smaller tiles"
    );
}

#[test]
fn emitted_programs_carry_tensors_and_source_locations() {
    let f = common::parse_file("exp_rows.tir");
    let mut c = common::compilation(f);
    // Spans of the file are 100.., 200.., 300..: a source text with lines of 100 bytes
    // puts load k at line 2 column 1 + k, and so on.
    let text: String = (0..4).map(|_| format!("{}\n", "x".repeat(99))).collect();
    c.source = Some(("rows.tsr".to_string(), text));
    for name in ["engines", "alloc", "sync", "emit"] {
        common::run_pass(&mut c, name);
    }
    let p = c.program.as_ref().expect("program");
    assert_eq!(p.source.as_deref(), Some("rows.tsr"));
    let t: Vec<(&str, Role, u64)> = p
        .tensors
        .iter()
        .map(|t| (t.name.as_str(), t.role, t.offset))
        .collect();
    assert_eq!(t, [("x", Role::Input, 0), ("y", Role::Output, 120_000)]);
    assert_eq!(p.hbm_size, 240_000);
    let scalar = &p.locs[Engine::Scalar.index()];
    let cols: Vec<String> = scalar
        .iter()
        .map(|l| l.map_or("-".into(), |l| format!("{}:{}", l.line, l.col)))
        .collect();
    assert_eq!(cols, ["3:1", "3:2", "3:3", "-"]);
    // Every stream ends with a plain `end`; every other instruction signals its stream.
    for (s, stream) in p.streams.iter().enumerate() {
        let (last, body) = stream.split_last().expect("end");
        assert_eq!(last.op, Op::End {});
        assert_eq!(last.sync, isa::Sync::default());
        for inst in body {
            assert_eq!(inst.sync.signal, Some(s as u8));
        }
    }
    // The text form of the program assembles back to the same program.
    assert_eq!(isa::assemble(&isa::disassemble(p)).as_ref(), Ok(p));
}

#[test]
fn with_engines_disabled_every_dma_stays_on_queue_0() {
    let c = common::compile(common::parse_file("matmul256.tir"), false);
    let p = c.program.as_ref().expect("program");
    for (s, stream) in p.streams.iter().enumerate().skip(Engine::Dma(1).index()) {
        assert_eq!(stream.len(), 1, "stream {s}");
    }
    let c = common::compile(common::parse_file("matmul256.tir"), true);
    let p = c.program.as_ref().expect("program");
    let used = (0..16)
        .filter(|&q| p.streams[Engine::Dma(q).index()].len() > 1)
        .count();
    assert_eq!(used, 6);
}
