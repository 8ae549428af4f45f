//! Body of the fuzz target `tbin`: arbitrary bytes -> `isa::decode_program`, then the
//! verifier and a run on the interpreter with small limits, with the verifier and without
//! it (so the interpreter's own checks see hostile programs too). Nothing may panic; a
//! decoded program must encode back to a program that decodes to itself.

/// Runs the target on one input.
pub fn fuzz_tbin(data: &[u8]) {
    let Ok(program) = isa::decode_program(data) else {
        return;
    };
    let bytes = isa::encode_program(&program);
    assert_eq!(
        isa::decode_program(&bytes).as_ref(),
        Ok(&program),
        "re-encoding a decoded program changes it"
    );
    let _ = isa::disassemble(&program);
    let verified = isa::verify(&program).is_ok();
    let with_verifier = super::limits::run_limited(&program, true);
    if !verified {
        assert!(with_verifier.is_err(), "a program that does not verify ran");
    }
    let _ = super::limits::run_limited(&program, false);
}
