//! Body of the fuzz target `compile`: source text (at most [`MAX_SOURCE`] bytes) through
//! the whole pipeline, `tessera::driver::compile`, then the program's verifier, binary
//! round trip and a run on the interpreter with small limits and every debug check on.
//!
//! Findings: a panic anywhere; an internal compiler error (the driver's "this is a bug"
//! error), except the known ones listed in [`KNOWN_INTERNAL`]; a compiled program that does
//! not verify or does not round-trip; a compiled program that the interpreter rejects for
//! any reason but a limit (a race, a read of never-written memory, a broken PSUM group, an
//! out-of-bounds access are compiler bugs). Kernels with a value of more than
//! [`MAX_ELEMS`] elements are skipped, so each input compiles quickly.

use tessera::driver::{self, CompileOptions, DriverError, Source};

/// The largest input the target compiles.
pub const MAX_SOURCE: usize = 4096;
/// The most elements any value of a kernel may have for the target to compile it.
pub const MAX_ELEMS: u128 = 1 << 16;
/// Internal compiler errors already known (docs/fuzzing.md), each with a regression test;
/// the target lets them pass so that it can look for others.
pub const KNOWN_INTERNAL: &[&str] = &[];

/// Runs the target on one input.
pub fn fuzz_compile(data: &[u8]) {
    if data.len() > MAX_SOURCE {
        return;
    }
    let text = String::from_utf8_lossy(data).into_owned();
    let Ok(kernels) = tessera::frontend::check_file(&text, &[], None) else {
        return;
    };
    for k in &kernels {
        let f = tessera::ir::lower(k);
        let too_big = f.values.values().any(|v| {
            let elems =
                v.ty.shape
                    .iter()
                    .try_fold(1u128, |acc, &d| acc.checked_mul(d as u128));
            !matches!(elems, Some(n) if n <= MAX_ELEMS)
        });
        if too_big {
            return;
        }
    }
    let src = Source {
        name: "fuzz.tsr".into(),
        text,
    };
    let c = match driver::compile(
        &src,
        &CompileOptions {
            verify_ir: true,
            ..CompileOptions::default()
        },
        &mut String::new(),
    ) {
        Ok(c) => c,
        Err(DriverError::Internal(m)) => {
            if KNOWN_INTERNAL.iter().any(|k| m.contains(k)) {
                return;
            }
            panic!("internal compiler error:\n{m}");
        }
        Err(_) => return,
    };
    let Ok(program) = driver::program_of(&c) else {
        panic!("a compilation without a program");
    };
    if let Err(errors) = isa::verify(program) {
        let lines: Vec<String> = errors.iter().map(|e| e.to_string()).collect();
        panic!(
            "the compiled program does not verify:\n{}",
            lines.join("\n")
        );
    }
    let bytes = isa::encode_program(program);
    assert_eq!(isa::decode_program(&bytes).as_ref(), Ok(program));
    match super::limits::run_limited(program, true) {
        Ok(())
        | Err(runtime::RuntimeError::InstructionLimit { .. })
        | Err(runtime::RuntimeError::CycleLimit { .. })
        | Err(runtime::RuntimeError::HbmLimit { .. })
        // The ramp the inputs get may hold a `take` index outside a short axis: a fault of
        // the user's data, which the machine reports, not a compiler bug.
        | Err(runtime::RuntimeError::IndexFault { .. }) => {}
        Err(e) => panic!("the compiled program fails on the interpreter: {e}"),
    }
}
