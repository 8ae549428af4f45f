//! Helpers shared by the runtime's integration tests: assembling and running programs with
//! poison tracking on, deterministic pseudo-random inputs, and plain-Rust references.

#![allow(dead_code)]

use isa::Dtype;
use runtime::{numeric, Loaded, Machine, MachineConfig, Report, RuntimeError};

/// The configuration of the tests: defaults with poison tracking and events on.
pub fn config() -> MachineConfig {
    MachineConfig {
        poison: true,
        events: true,
        ..MachineConfig::default()
    }
}

/// Assembles `text`, panicking with the assembler's message on error.
pub fn asm(text: &str) -> isa::Program {
    match isa::assemble(text) {
        Ok(p) => p,
        Err(e) => panic!("assembly error {e}\n{text}"),
    }
}

/// Loads `text` under `cfg`, binds `inputs` and runs it.
pub fn try_run_with(
    cfg: MachineConfig,
    text: &str,
    inputs: &[(&str, &[f32])],
) -> Result<(Report, Loaded), RuntimeError> {
    let program = asm(text);
    let mut loaded = Machine::new(cfg).load_program(program)?;
    for (name, values) in inputs {
        loaded.bind(name, values)?;
    }
    let report = loaded.run()?;
    Ok((report, loaded))
}

/// Like [`try_run_with`] with the test configuration, panicking on error.
pub fn run(text: &str, inputs: &[(&str, &[f32])]) -> (Report, Loaded) {
    match try_run_with(config(), text, inputs) {
        Ok(r) => r,
        Err(e) => panic!("run failed: {e}\n{text}"),
    }
}

/// A deterministic generator of test values (xorshift64*).
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// A value in [-range, range), rounded to `dtype`.
    pub fn value(&mut self, dtype: Dtype, range: f32) -> f32 {
        let u = (self.next_u64() >> 40) as f32 / (1u64 << 24) as f32;
        numeric::round(dtype, (u * 2.0 - 1.0) * range)
    }

    pub fn values(&mut self, dtype: Dtype, n: usize, range: f32) -> Vec<f32> {
        (0..n).map(|_| self.value(dtype, range)).collect()
    }
}

/// Bitwise equality of two f32 slices, with the first difference in the panic message.
pub fn assert_bits_eq(got: &[f32], want: &[f32], what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: lengths differ");
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert!(
            g.to_bits() == w.to_bits(),
            "{what}: element {i}: got {g} ({:#x}), want {w} ({:#x})",
            g.to_bits(),
            w.to_bits()
        );
    }
}

/// A program under construction as assembly text: tensors laid out one after the other
/// (64-byte aligned) and instructions per stream.
pub struct Asm {
    tensors: Vec<(String, String, Dtype, Vec<usize>, usize)>,
    hbm: usize,
    streams: Vec<(String, Vec<String>)>,
}

impl Asm {
    pub fn new() -> Asm {
        Asm {
            tensors: Vec::new(),
            hbm: 0,
            streams: Vec::new(),
        }
    }

    /// Declares a tensor and returns its byte offset.
    pub fn tensor(&mut self, name: &str, role: &str, dtype: Dtype, shape: &[usize]) -> usize {
        let off = self.hbm;
        let bytes: usize = shape.iter().product::<usize>() * dtype.size() as usize;
        self.hbm = (off + bytes).div_ceil(64) * 64;
        self.tensors
            .push((name.into(), role.into(), dtype, shape.to_vec(), off));
        off
    }

    /// Appends an instruction to a stream.
    pub fn inst(&mut self, stream: &str, text: impl Into<String>) -> &mut Asm {
        match self.streams.iter_mut().find(|(s, _)| s == stream) {
            Some((_, v)) => v.push(text.into()),
            None => self.streams.push((stream.into(), vec![text.into()])),
        }
        self
    }

    pub fn text(&self) -> String {
        let mut t = format!(".hbm {}\n", self.hbm.max(64));
        for (name, role, dtype, shape, off) in &self.tensors {
            let dims: Vec<String> = shape.iter().map(|d| d.to_string()).collect();
            t.push_str(&format!(
                ".tensor {name} {role} {dtype} [{}] @{off}\n",
                dims.join(", ")
            ));
        }
        for (s, insts) in &self.streams {
            t.push_str(&format!("\n.stream {s}\n"));
            for i in insts {
                t.push_str(&format!("    {i}\n"));
            }
            t.push_str("    end\n");
        }
        t
    }
}

impl Default for Asm {
    fn default() -> Asm {
        Asm::new()
    }
}

/// The proptest configuration of this crate's property tests: `cases` cases from a fixed
/// seed, so every run (and CI) checks the same cases and a failure reproduces as it is.
/// `PROPTEST_RNG_SEED=<u64>` (read by `ProptestConfig::default`) explores other cases.
pub fn proptest_config(cases: u32) -> proptest::test_runner::Config {
    use proptest::test_runner::{Config, RngSeed};
    let base = Config::default();
    let rng_seed = match base.rng_seed {
        RngSeed::Random => RngSeed::Fixed(0x2e_2026),
        chosen => chosen,
    };
    Config {
        cases,
        rng_seed,
        ..base
    }
}
