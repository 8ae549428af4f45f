//! Miscompiles injected on purpose, to prove that the checks catch them: a flash
//! attention that drops its accumulator rescale, groups emitted out of dependency order, a
//! load that reads another buffer (a zeroed operand) and a cast written in the wrong dtype.
//! Each is caught: by `run --check`'s bounds (docs/numerics.md), by the tile verifier, or
//! by the interpreter's poison tracking. A control run of each unmutated kernel passes, so
//! a catch is not a bound that fails everything.

mod common;

use tessera::driver::{self, CompileOptions, RunOptions, Source};
use tessera::passes::{Compilation, Mutation, PassOptions};
use tessera::reference::HostTensor;

/// Attention with 1,100 keys (three blocks of the flash lowering, so the running maximum
/// grows and rescales happen) and `v` computed in the kernel.
const ATTENTION: &str =
    "kernel attn<S = 1100, D = 64>(q: bf16[S, D], k: bf16[S, D], v: f32[S, D]) -> bf16[S, D] {
    let s = q @ transpose(k);
    let e = exp(s - max(s, axis=-1, keepdims=true));
    return ((e / sum(e, axis=-1, keepdims=true)) as bf16 @ (v as bf16)) as bf16;
}
";

fn compile(text: &str, mutation: Option<Mutation>) -> Result<Compilation, driver::DriverError> {
    let source = Source {
        name: "k.tsr".to_string(),
        text: text.to_string(),
    };
    let options = CompileOptions {
        passes: PassOptions {
            mutation,
            ..PassOptions::default()
        },
        verify_ir: true,
        ..CompileOptions::default()
    };
    driver::compile(&source, &options, &mut String::new())
}

/// Inputs of `--random 1`, scaled by 3 (wider scores, so the maximum moves between blocks).
fn inputs(c: &Compilation) -> Vec<HostTensor> {
    common::scaled_random_inputs(c, 3.0)
}

/// Runs `program` (of `c`'s kernel) without the interpreter's debug checks, so that only
/// `--check` can see what it computed, and returns the elements outside their bounds.
fn bad_elements(c: &Compilation, program: &isa::Program) -> usize {
    let inputs = inputs(c);
    let params = driver::params_of(&c.tensor);
    let options = RunOptions {
        debug_checks: false,
        ..RunOptions::default()
    };
    let (got, _) = driver::execute_with(program, &params, &inputs, &options).expect("runs");
    driver::check_outputs(c, &inputs, &got)
        .expect("the reference")
        .iter()
        .map(|cmp| cmp.bad)
        .sum()
}

#[test]
fn the_unmutated_kernel_passes() {
    let c = compile(ATTENTION, None).unwrap();
    assert_eq!(bad_elements(&c, c.program.as_ref().unwrap()), 0);
}

#[test]
fn a_dropped_rescale_is_caught_by_check() {
    let c = compile(ATTENTION, Some(Mutation::DropRescale)).unwrap();
    let bad = bad_elements(&c, c.program.as_ref().unwrap());
    assert!(bad > 1000, "only {bad} elements caught");
}

#[test]
fn groups_out_of_order_are_caught_by_the_verifier() {
    let e = compile(ATTENTION, Some(Mutation::AttentionFirst))
        .expect_err("the tile verifier rejects it");
    // The tiler itself finds the transposed K it needs has no home yet; where it does
    // not, the tile verifier's program-order check does (`tests/tile_verify.rs`).
    let text = e.to_string();
    assert!(text.contains("after pass `tile` does not verify"), "{text}");
    // The grouping's own verifier rejects a grouping in the wrong order too.
    let c = compile(ATTENTION, None).unwrap();
    let mut g = c.groups.clone().unwrap();
    assert!(g.verify(&c.tensor).is_empty());
    g.groups.reverse();
    let n = g.groups.len();
    for (gi, grp) in g.groups.iter().enumerate() {
        for &i in &grp.insts {
            g.group_of[i] = Some(gi as u32);
        }
    }
    let errors = g.verify(&c.tensor);
    assert!(n > 1 && !errors.is_empty());
    assert!(errors[0].contains("which the later group"), "{errors:?}");
}

/// The program's assembly with `from` replaced by `to` once (the first occurrence).
fn mutate(program: &isa::Program, from: &str, to: &str) -> isa::Program {
    let text = isa::disassemble(program);
    assert!(text.contains(from), "no `{from}` in\n{text}");
    isa::assemble(&text.replacen(from, to, 1)).expect("the mutated program assembles")
}

/// The byte offset of a tensor in the program's HBM.
fn offset(program: &isa::Program, name: &str) -> u64 {
    program
        .tensors
        .iter()
        .find(|t| t.name == name)
        .unwrap_or_else(|| panic!("no tensor {name}"))
        .offset
}

#[test]
fn a_zeroed_operand_is_caught_by_check_and_by_poison() {
    let c = compile(ATTENTION, None).unwrap();
    let program = c.program.as_ref().unwrap();
    // The first load of `v` reads the output instead (zeros: nothing has been stored).
    let v = offset(program, "v");
    let out = offset(program, "out0");
    let mutated = mutate(
        program,
        &format!("src=hbm.f32[{v};"),
        &format!("src=hbm.f32[{out};"),
    );
    assert!(bad_elements(&c, &mutated) > 0);
    // With the debug checks the interpreter stops at the read itself.
    let inputs = inputs(&c);
    let params = driver::params_of(&c.tensor);
    let options = RunOptions {
        debug_checks: true,
        ..RunOptions::default()
    };
    let e = driver::execute_with(&mutated, &params, &inputs, &options).expect_err("a poison error");
    assert!(
        e.to_string()
            .contains("read of never-written bytes: hbm byte"),
        "{e}"
    );
}

#[test]
fn a_cast_to_the_wrong_dtype_is_caught_by_check() {
    let c = compile(ATTENTION, None).unwrap();
    let program = c.program.as_ref().unwrap();
    // `v as bf16` written as f16 bits into the bf16 tile that is stored and read back.
    let mutated = mutate(
        program,
        "tensor_copy out=sbuf.bf16[",
        "tensor_copy out=sbuf.f16[",
    );
    assert!(bad_elements(&c, &mutated) > 0);
}
