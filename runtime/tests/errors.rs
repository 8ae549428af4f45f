//! Every failure is an error with a precise message, never a panic or a hang: deadlocks,
//! limits, out-of-bounds accesses, reads of never-written memory, binding mistakes and
//! programs the verifier rejects.

mod common;

use common::*;
use isa::{Dtype, Engine};
use runtime::{Machine, MachineConfig, RuntimeError};

/// The test configuration without the verifier, to reach the interpreter's own checks.
fn unverified() -> MachineConfig {
    let mut c = config();
    c.verify = false;
    c
}

fn run_err(cfg: MachineConfig, text: &str) -> RuntimeError {
    match try_run_with(cfg, text, &[]) {
        Ok(_) => panic!("expected an error\n{text}"),
        Err(e) => e,
    }
}

#[test]
fn deadlock_names_every_blocked_wait() {
    let mut a = Asm::new();
    a.inst("vector", "memset out=sbuf.f32[0:1, 0; 4:1], value=0.0");
    a.inst("vector", "wait(s1>=1) nop signal(s0)");
    a.inst("scalar", "wait(s0>=1) nop signal(s1)");
    let e = run_err(config(), &a.text());
    let RuntimeError::Deadlock(waits) = &e else {
        panic!("not a deadlock: {e}");
    };
    assert_eq!(waits.len(), 2);
    assert_eq!((waits[0].engine, waits[0].index), (Engine::Vector, 1));
    assert_eq!(
        (waits[0].semaphore, waits[0].count, waits[0].value),
        (1, 0, 1)
    );
    assert_eq!((waits[1].engine, waits[1].index), (Engine::Scalar, 0));
    assert_eq!(
        e.to_string(),
        "deadlock: vector instruction 1 (nop) waits for semaphore 1 >= 1 (count 0); \
         scalar instruction 0 (nop) waits for semaphore 0 >= 1 (count 0)"
    );
}

#[test]
fn waiting_for_a_count_never_reached_is_a_deadlock() {
    let mut a = Asm::new();
    a.inst("vector", "nop signal(s3)");
    a.inst("gpsimd", "wait(s3>=2) nop");
    let e = run_err(config(), &a.text());
    assert!(
        e.to_string()
            .contains("gpsimd instruction 0 (nop) waits for semaphore 3 >= 2 (count 1)"),
        "{e}"
    );
}

#[test]
fn instruction_limit() {
    let mut cfg = config();
    cfg.limits.max_instructions = 3;
    let mut a = Asm::new();
    for _ in 0..5 {
        a.inst("vector", "nop");
    }
    let e = run_err(cfg, &a.text());
    assert!(
        matches!(e, RuntimeError::InstructionLimit { limit: 3, .. }),
        "{e}"
    );
    assert!(e.to_string().contains("vector instruction 3 (nop)"), "{e}");
}

#[test]
fn cycle_limit() {
    let mut cfg = config();
    cfg.limits.max_cycles = 1000;
    let mut a = Asm::new();
    a.inst("vector", "memset out=sbuf.f32[0:1, 0; 2000:1], value=0.0");
    let e = run_err(cfg.clone(), &a.text());
    assert!(
        matches!(
            e,
            RuntimeError::CycleLimit {
                limit: 1000,
                cycle: 2064
            }
        ),
        "{e}"
    );
    // A DMA's data phase past the limit is caught too.
    let mut a = Asm::new();
    a.inst(
        "dma0",
        "dma dst=sbuf.f32[0:1, 4096; 4:1], src=sbuf.f32[0:1, 0; 4:1]",
    );
    a.inst(
        "vector",
        "memset out=sbuf.f32[0:1, 0; 4:1], value=0.0 signal(s0)",
    );
    let e = run_err(
        cfg,
        &a.text().replace("    dma dst", "    wait(s0>=1) dma dst"),
    );
    assert!(matches!(e, RuntimeError::CycleLimit { .. }), "{e}");
}

#[test]
fn hbm_limit_fails_before_allocating() {
    let text = ".hbm 1099511627776\n.tensor x input f32 [4] @0\n";
    let program = asm(text);
    let e = Machine::new(config()).load_program(program).unwrap_err();
    assert_eq!(
        e,
        RuntimeError::HbmLimit {
            needed: 1 << 40,
            limit: 16 << 30
        }
    );
    assert_eq!(
        e.to_string(),
        "program needs 1099511627776 bytes of HBM, the limit is 17179869184"
    );
}

#[test]
fn out_of_bounds_accesses_are_errors() {
    let cases = [
        (
            "vector",
            "memset out=sbuf.f32[0:1, 196600; 4:1], value=0.0",
            "vector instruction 0 (memset): out of bounds: sbuf bytes 196600..196616 of partitions 0..1 exceed its 196608 bytes",
        ),
        (
            "vector",
            "memset out=psum.f32[0:1, 2040; 4:1], value=0.0",
            "vector instruction 0 (memset): out of bounds: psum bytes 2040..2056 cross a 2048-byte bank boundary",
        ),
        (
            "vector",
            "memset out=sbuf.f32[16:32, 0; 4:1], value=0.0",
            "vector instruction 0 (memset): out of bounds: a tile of 32 partitions cannot start at partition 16",
        ),
        (
            "scalar",
            "activate out=sbuf.f32[0:1, 0; 4:-1], src=sbuf.f32[0:1, 0; 4:1], func=exp, scale=1.0, bias=0.0, accum=none",
            "scalar instruction 0 (activate): out of bounds: sbuf bytes -12..4",
        ),
        (
            "dma0",
            "dma dst=sbuf.f32[0:1, 0; 4:1], src=hbm.f32[60; 4:1]",
            "dma0 instruction 0 (dma): out of bounds: hbm bytes 60..76 of hbm exceed its 64 bytes",
        ),
    ];
    for (stream, inst, want) in cases {
        let mut a = Asm::new();
        a.inst(stream, inst);
        let e = run_err(unverified(), &a.text());
        assert!(matches!(e, RuntimeError::OutOfBounds { .. }), "{inst}: {e}");
        assert!(e.to_string().starts_with(want), "{inst}:\n{e}\n{want}");
        // The verifier rejects the same program at load.
        let e = run_err(config(), &a.text());
        assert!(matches!(e, RuntimeError::Verify(_)), "{inst}: {e}");
    }
}

#[test]
fn poison_reads_are_errors() {
    let mut a = Asm::new();
    a.inst("vector", "memset out=sbuf.f32[0:2, 0; 4:1], value=1.0");
    a.inst(
        "vector",
        "tensor_copy out=sbuf.f32[0:2, 64; 8:1], src=sbuf.f32[0:2, 0; 8:1]",
    );
    let e = run_err(config(), &a.text());
    assert_eq!(
        e.to_string(),
        "vector instruction 1 (tensor_copy): read of never-written bytes: sbuf partition 0 byte 16"
    );
    // Without poison tracking the same program runs (reading zeros).
    let mut cfg = config();
    cfg.poison = false;
    assert!(try_run_with(cfg, &a.text(), &[]).is_ok());
    // Matmul accumulating into never-written PSUM.
    let mut a = Asm::new();
    a.inst(
        "vector",
        "memset out=sbuf.bf16[0:4, 0; 4:1], value=1.0 signal(s0)",
    );
    a.inst(
        "tensor",
        "wait(s0>=1) matmul out=psum.f32[0:4, 0; 4:1], stationary=sbuf.bf16[0:4, 0; 4:1], moving=sbuf.bf16[0:4, 0; 4:1], accumulate=true",
    );
    let e = run_err(config(), &a.text());
    assert!(
        e.to_string().starts_with(
            "tensor instruction 0 (matmul): read of never-written bytes: psum partition 0 byte 0"
        ),
        "{e}"
    );
}

/// The bound inputs and nothing else count as written HBM under poison tracking: a load of
/// scratch that no DMA stored is an error naming the tensor, as a compiler that orders two
/// groups the wrong way round would make.
#[test]
fn reads_of_never_written_hbm_are_errors() {
    let mut a = Asm::new();
    let x = a.tensor("x", "input", Dtype::F32, &[4]);
    let t = a.tensor("tmp", "scratch", Dtype::F32, &[4]);
    let y = a.tensor("y", "output", Dtype::F32, &[4]);
    // Loads `tmp` before it is stored: the bug.
    a.inst(
        "dma0",
        format!("dma dst=sbuf.f32[0:1, 0; 4:1], src=hbm.f32[{t}; 4:1] signal(s0)"),
    );
    a.inst(
        "dma1",
        format!("wait(s0>=1) dma dst=hbm.f32[{t}; 4:1], src=hbm.f32[{x}; 4:1]"),
    );
    a.inst(
        "dma2",
        format!("wait(s0>=1) dma dst=hbm.f32[{y}; 4:1], src=sbuf.f32[0:1, 0; 4:1]"),
    );
    let text = a.text();
    let bind = |cfg: MachineConfig| {
        let mut loaded = Machine::new(cfg).load_program(asm(&text)).unwrap();
        loaded.bind("x", &[1.0, 2.0, 3.0, 4.0]).unwrap();
        loaded
    };
    let e = bind(unverified()).run().unwrap_err();
    assert_eq!(
        e.to_string(),
        "dma0 instruction 0 (dma): read of never-written bytes: hbm byte 64 (tensor `tmp`, \
         byte 0 of it), never written before this read"
    );
    // Without poison tracking the same program runs and reads zeros.
    let mut cfg = unverified();
    cfg.poison = false;
    bind(cfg).run().unwrap();
}

/// Under poison tracking an output the program leaves partly unwritten is an error, not
/// zeros in the result.
#[test]
fn outputs_left_unwritten_are_errors() {
    let mut a = Asm::new();
    let x = a.tensor("x", "input", Dtype::F32, &[4]);
    let y = a.tensor("y", "output", Dtype::F32, &[6]);
    a.inst(
        "dma0",
        format!("dma dst=sbuf.f32[0:1, 0; 4:1], src=hbm.f32[{x}; 4:1] signal(s0)"),
    );
    a.inst(
        "dma1",
        format!("wait(s0>=1) dma dst=hbm.f32[{y}; 4:1], src=sbuf.f32[0:1, 0; 4:1]"),
    );
    let mut loaded = Machine::new(unverified())
        .load_program(asm(&a.text()))
        .unwrap();
    loaded.bind("x", &[1.0; 4]).unwrap();
    assert_eq!(
        loaded.run().unwrap_err().to_string(),
        "output `y` was not completely written by the program: byte 16 of it never was \
         (debug checks require every output byte to be written)"
    );
}

#[test]
fn binding_errors() {
    let mut a = Asm::new();
    let x = a.tensor("x", "input", Dtype::F32, &[2, 3]);
    let y = a.tensor("y", "output", Dtype::F32, &[6]);
    a.inst(
        "dma0",
        format!("dma dst=sbuf.f32[0:1, 0; 6:1], src=hbm.f32[{x}; 6:1] signal(s0)"),
    );
    a.inst(
        "dma1",
        format!("wait(s0>=1) dma dst=hbm.f32[{y}; 6:1], src=sbuf.f32[0:1, 0; 6:1]"),
    );
    let mut loaded = Machine::new(config()).load_program(asm(&a.text())).unwrap();
    assert_eq!(
        loaded.bind("z", &[0.0]).unwrap_err().to_string(),
        "no tensor named `z`"
    );
    assert_eq!(
        loaded.bind("x", &[0.0; 5]).unwrap_err().to_string(),
        "tensor `x` has 6 elements, 5 were given"
    );
    assert_eq!(
        loaded.bind("y", &[0.0; 6]).unwrap_err().to_string(),
        "tensor `y` is an output, only inputs can be bound"
    );
    assert_eq!(
        loaded.bind_bytes("x", &[0; 23]).unwrap_err().to_string(),
        "tensor `x` has 24 bytes, 23 were given"
    );
    assert_eq!(
        loaded.read("y").unwrap_err().to_string(),
        "the program has not run yet, so `y` cannot be read"
    );
    assert_eq!(
        loaded.run().unwrap_err().to_string(),
        "input `x` was not bound before the run"
    );
    let xs = [1.0, -2.0, 3.5, 1e30, 0.0, -0.0];
    loaded.bind("x", &xs).unwrap();
    let r = loaded.run().unwrap();
    assert_eq!(r.hbm_read_bytes, 24);
    assert_bits_eq(&loaded.read("y").unwrap(), &xs, "copy");
    // Raw bytes bind too.
    let bytes: Vec<u8> = xs.iter().rev().flat_map(|v| v.to_le_bytes()).collect();
    loaded.bind_bytes("x", &bytes).unwrap();
    loaded.run().unwrap();
    assert_eq!(loaded.read_bytes("y").unwrap(), &bytes[..]);
}

#[test]
fn invalid_operands_and_semaphores_are_errors() {
    // Shape mismatch the verifier would catch, caught by the interpreter.
    let mut a = Asm::new();
    a.inst("vector", "memset out=sbuf.f32[0:2, 0; 8:1], value=1.0");
    a.inst(
        "vector",
        "tensor_tensor op=add, out=sbuf.f32[0:2, 64; 4:1], a=sbuf.f32[0:2, 0; 8:1], b=sbuf.f32[0:2, 0; 8:1]",
    );
    let e = run_err(unverified(), &a.text());
    assert_eq!(
        e.to_string(),
        "vector instruction 1 (tensor_tensor): invalid operands: out is [2, 4], expected [2, 8]"
    );
    // A semaphore beyond the machine's 64.
    let mut a = Asm::new();
    a.inst("vector", "nop signal(s64)");
    match isa::assemble(&a.text()) {
        Ok(p) => {
            let mut l = Machine::new(unverified()).load_program(p).unwrap();
            let e = l.run().unwrap_err();
            assert!(matches!(e, RuntimeError::NoSuchSemaphore { .. }), "{e}");
        }
        Err(e) => assert!(e.to_string().contains("64"), "{e}"),
    }
}

/// A configuration the interpreter could not hold or that contradicts the ISA is an
/// error from `validate`, not an abort on allocation or a silently ignored field.
#[test]
fn impossible_geometries_are_config_errors() {
    type Change = fn(&mut MachineConfig);
    let cases: [(&str, Change); 4] = [
        ("SBUF and PSUM together", |c| {
            c.geometry.sbuf_partition_bytes = u32::MAX
        }),
        ("SBUF must be non-empty", |c| {
            c.geometry.sbuf_partition_bytes = 0
        }),
        ("16 DMA queues", |c| c.geometry.dma_queues = 0),
        ("16 DMA queues", |c| c.geometry.dma_queues = 1),
    ];
    for (want, change) in cases {
        let mut c = MachineConfig::default();
        change(&mut c);
        match c.validate() {
            Err(RuntimeError::Config(m)) => assert!(m.contains(want), "{m}"),
            other => panic!("expected a config error about {want}, got {other:?}"),
        }
    }
    assert!(MachineConfig::default().validate().is_ok());
}

/// A tensor with a zero dim is empty whatever its other dims: both orders load and run (the
/// overflowing product of [u64::MAX, 0] made it "outside HBM" while [0, u64::MAX] loaded).
#[test]
fn empty_tensors_load_in_either_dim_order() {
    for shape in ["[18446744073709551615, 0]", "[0, 18446744073709551615]"] {
        let text = format!(".hbm 64\n.tensor y output f32 {shape} @0\n");
        let program = asm(&text);
        let loaded = Machine::new(config()).load_program(program);
        assert!(loaded.is_ok(), "{shape}: {:?}", loaded.err());
    }
}

/// A run starts from the bound inputs and fresh outputs and scratch even when the program
/// writes over its own input (the HBM image is reused between runs, so the machine must
/// restore what the last run changed), and with poison tracking off.
#[test]
fn repeated_runs_start_from_the_bound_inputs() {
    let mut a = Asm::new();
    let x = a.tensor("x", "input", Dtype::F32, &[4]);
    let y = a.tensor("y", "output", Dtype::F32, &[4]);
    a.inst(
        "dma0",
        format!("dma dst=sbuf.f32[0:1, 0; 4:1], src=hbm.f32[{x}; 4:1] signal(s0)"),
    );
    a.inst(
        "vector",
        "wait(s0>=1) tensor_scalar out=sbuf.f32[0:1, 16; 4:1], src=sbuf.f32[0:1, 0; 4:1], \
         op0=add, s0=1.0, op1=mul, s1=1.0 signal(s1)",
    );
    // The input is overwritten with x + 1, and y = x + 1 is written from it.
    a.inst(
        "dma1",
        format!("wait(s1>=1) dma dst=hbm.f32[{x}; 4:1], src=sbuf.f32[0:1, 16; 4:1] signal(s2)"),
    );
    a.inst(
        "dma1",
        format!("wait(s2>=1) dma dst=sbuf.f32[0:1, 32; 4:1], src=hbm.f32[{x}; 4:1] signal(s3)"),
    );
    a.inst(
        "dma1",
        format!("wait(s3>=1) dma dst=hbm.f32[{y}; 4:1], src=sbuf.f32[0:1, 32; 4:1]"),
    );
    for poison in [false, true] {
        let mut cfg = config();
        cfg.poison = poison;
        let mut loaded = Machine::new(cfg).load_program(asm(&a.text())).unwrap();
        loaded.bind("x", &[1.0, 2.0, 3.0, 4.0]).unwrap();
        for _ in 0..3 {
            loaded.run().unwrap();
            assert_bits_eq(&loaded.read("y").unwrap(), &[2.0, 3.0, 4.0, 5.0], "x + 1");
            let bound: Vec<u8> = [1f32, 2.0, 3.0, 4.0]
                .iter()
                .flat_map(|v| v.to_le_bytes())
                .collect();
            assert_eq!(loaded.input_bytes("x").unwrap(), &bound[..]);
        }
        // A new binding replaces the input for the next run and hides the last outputs.
        loaded.bind("x", &[0.5; 4]).unwrap();
        assert!(loaded.read("y").is_err());
        loaded.run().unwrap();
        assert_bits_eq(&loaded.read("y").unwrap(), &[1.5; 4], "x + 1");
    }
}
