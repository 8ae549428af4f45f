//! The machine the fuzz targets run programs on: small limits, so that no input can make a
//! run take long or allocate much, and every debug check on, so that a compiled program
//! that races, reads never-written memory or breaks a PSUM group is a finding.

use runtime::MachineConfig;

/// A configuration for `preset` with the fuzzers' limits and the debug checks on.
pub fn fuzz_config(preset: isa::Preset) -> MachineConfig {
    let mut config = MachineConfig::new(preset).with_debug_checks();
    config.events = false;
    config.limits.max_instructions = 20_000;
    config.limits.max_cycles = 100_000_000;
    config.limits.max_hbm_bytes = 1 << 22;
    config.limits.max_elements_per_instruction = 1 << 18;
    config
}

/// Loads `program` (verifier on or off), binds every input to a ramp of values, runs it
/// and reads every output. Any error is fine; a panic is a finding. Returns the run's
/// result for callers that check more.
pub fn run_limited(program: &isa::Program, verify: bool) -> Result<(), runtime::RuntimeError> {
    let mut config = fuzz_config(program.preset);
    config.verify = verify;
    let mut loaded = runtime::Machine::new(config).load_program(program.clone())?;
    for t in program.tensors_with_role(isa::Role::Input) {
        // Loading checked that every tensor lies in the (small) HBM, so this is bounded.
        let values: Vec<f32> = (0..t.elems()).map(|i| (i % 7) as f32 - 3.0).collect();
        loaded.bind(&t.name, &values)?;
    }
    loaded.run()?;
    for t in program.tensors_with_role(isa::Role::Output) {
        loaded.read(&t.name)?;
    }
    Ok(())
}
