//! The embedding API: load a `.tbin` (or a [`Program`]), bind inputs, run, read outputs.
//!
//! ```no_run
//! # fn main() -> Result<(), runtime::RuntimeError> {
//! use runtime::{Machine, MachineConfig};
//! let bytes = std::fs::read("kernel.tbin").unwrap();
//! let machine = Machine::new(MachineConfig::default());
//! let mut kernel = machine.load(&bytes)?;
//! kernel.bind("x", &[1.0, 2.0, 3.0, 4.0])?;
//! let report = kernel.run()?;
//! println!("{:?} in {} cycles", kernel.read("y")?, report.total_cycles);
//! # Ok(())
//! # }
//! ```
//!
//! Loading decodes, verifies (unless the configuration turns it off) and checks the HBM
//! size against the limit before anything is allocated. Each run starts from fresh
//! memories: HBM zeroed with the bound inputs copied in, SBUF and PSUM zeroed (or
//! poisoned), so repeated runs are identical.

use crate::config::MachineConfig;
use crate::error::RuntimeError;
use crate::exec::Executor;
use crate::memory::Memories;
use crate::numeric;
use crate::report::Report;
use crate::timing;
use isa::{Program, Role, TensorDecl};

/// A simulated machine: a configuration to load programs onto.
#[derive(Clone, Debug, Default)]
pub struct Machine {
    config: MachineConfig,
}

/// A program loaded on a machine, with its bound inputs and, after a run, its HBM.
#[derive(Clone, Debug)]
pub struct Loaded {
    program: Program,
    config: MachineConfig,
    /// Bound bytes per tensor (inputs only).
    inputs: Vec<Option<Vec<u8>>>,
    /// HBM as the last successful run left it.
    hbm: Option<Vec<u8>>,
}

/// Outputs and report of [`run_program`].
#[derive(Clone, Debug)]
pub struct RunResult {
    pub report: Report,
    /// Every output tensor, in table order, as f32 values.
    pub outputs: Vec<(String, Vec<f32>)>,
}

fn role_name(role: Role) -> &'static str {
    match role {
        Role::Input => "input",
        Role::Output => "output",
        Role::Scratch => "scratch",
    }
}

impl Machine {
    /// A machine with a configuration.
    pub fn new(config: MachineConfig) -> Machine {
        Machine { config }
    }

    /// The machine's configuration.
    pub fn config(&self) -> &MachineConfig {
        &self.config
    }

    /// Decodes a `.tbin`, then loads it as [`Machine::load_program`] does.
    pub fn load(&self, bytes: &[u8]) -> Result<Loaded, RuntimeError> {
        let program =
            isa::decode_program(bytes).map_err(|e| RuntimeError::Decode(e.to_string()))?;
        self.load_program(program)
    }

    /// Checks a program against the machine (configuration, preset, HBM limit, tensor
    /// table, and the verifier unless turned off) and loads it. Nothing is allocated for a
    /// program that asks for more HBM than the limit.
    pub fn load_program(&self, program: Program) -> Result<Loaded, RuntimeError> {
        self.config.validate()?;
        if program.preset != self.config.preset {
            return Err(RuntimeError::Preset {
                program: program.preset.name(),
                machine: self.config.preset.name(),
            });
        }
        let limit = self.config.limits.max_hbm_bytes;
        if program.hbm_size > limit {
            return Err(RuntimeError::HbmLimit {
                needed: program.hbm_size,
                limit,
            });
        }
        for t in &program.tensors {
            // A tensor with a zero dim has no bytes, whatever its other dims (checked in
            // that order, [u64::MAX, 0] overflowed where [0, u64::MAX] did not).
            let bytes = if t.shape.contains(&0) {
                Some(0)
            } else {
                t.shape
                    .iter()
                    .try_fold(t.dtype.size() as u64, |acc, &d| acc.checked_mul(d))
            };
            let end = bytes.and_then(|b| t.offset.checked_add(b));
            if !matches!(end, Some(e) if e <= program.hbm_size) {
                return Err(RuntimeError::TensorOutsideHbm {
                    name: t.name.clone(),
                    offset: t.offset,
                    end: end.unwrap_or(u64::MAX),
                    hbm_size: program.hbm_size,
                });
            }
        }
        if self.config.verify {
            isa::verify(&program).map_err(|errs| {
                RuntimeError::Verify(errs.iter().map(|e| e.to_string()).collect())
            })?;
        }
        Ok(Loaded {
            inputs: vec![None; program.tensors.len()],
            program,
            config: self.config.clone(),
            hbm: None,
        })
    }
}

impl Loaded {
    /// The loaded program.
    pub fn program(&self) -> &Program {
        &self.program
    }

    /// The configuration the program runs under.
    pub fn config(&self) -> &MachineConfig {
        &self.config
    }

    /// Changes the configuration for later runs (timing, limits, events, poison). The
    /// geometry and preset stay those the program was loaded for.
    pub fn set_config(&mut self, mut config: MachineConfig) -> Result<(), RuntimeError> {
        config.preset = self.config.preset;
        config.geometry = self.config.geometry;
        config.validate()?;
        self.config = config;
        Ok(())
    }

    fn find(&self, name: &str) -> Result<(usize, &TensorDecl), RuntimeError> {
        self.program
            .tensors
            .iter()
            .enumerate()
            .find(|(_, t)| t.name == name)
            .ok_or_else(|| RuntimeError::UnknownTensor(name.to_string()))
    }

    /// The declaration of a tensor.
    pub fn tensor(&self, name: &str) -> Result<&TensorDecl, RuntimeError> {
        self.find(name).map(|(_, t)| t)
    }

    fn input(&self, name: &str) -> Result<(usize, &TensorDecl), RuntimeError> {
        let (i, t) = self.find(name)?;
        if t.role != Role::Input {
            return Err(RuntimeError::NotAnInput {
                name: name.to_string(),
                role: role_name(t.role),
            });
        }
        Ok((i, t))
    }

    /// Binds an input from f32 values (row-major), each rounded to the tensor's dtype with
    /// the machine's rounding (nearest even; FP8 saturates).
    pub fn bind(&mut self, name: &str, values: &[f32]) -> Result<(), RuntimeError> {
        let (i, t) = self.input(name)?;
        if values.len() as u64 != t.elems() {
            return Err(RuntimeError::ElementCount {
                name: name.to_string(),
                expected: t.elems(),
                found: values.len() as u64,
            });
        }
        let mut bytes = vec![0u8; t.bytes() as usize];
        numeric::store(t.dtype, values, &mut bytes);
        self.inputs[i] = Some(bytes);
        Ok(())
    }

    /// Binds an input from its bytes in the tensor's dtype (little-endian, row-major).
    pub fn bind_bytes(&mut self, name: &str, bytes: &[u8]) -> Result<(), RuntimeError> {
        let (i, t) = self.input(name)?;
        if bytes.len() as u64 != t.bytes() {
            return Err(RuntimeError::ByteCount {
                name: name.to_string(),
                expected: t.bytes(),
                found: bytes.len() as u64,
            });
        }
        self.inputs[i] = Some(bytes.to_vec());
        Ok(())
    }

    /// Runs the program: fresh memories, the bound inputs in HBM, every stream to its
    /// `end` under the timing model. Every input must be bound.
    pub fn run(&mut self) -> Result<Report, RuntimeError> {
        self.hbm = None;
        let size = usize::try_from(self.program.hbm_size).map_err(|_| RuntimeError::HbmLimit {
            needed: self.program.hbm_size,
            limit: usize::MAX as u64,
        })?;
        // Under poison tracking, outputs and scratch start as NaN bytes, so that even a
        // read the bitmap could not see would show.
        let fill = if self.config.poison {
            crate::memory::POISON_BYTE
        } else {
            0
        };
        let mut hbm = vec![fill; size];
        for (t, bound) in self.program.tensors.iter().zip(&self.inputs) {
            if t.role != Role::Input {
                continue;
            }
            let Some(bytes) = bound else {
                return Err(RuntimeError::Unbound(t.name.clone()));
            };
            let start = t.offset as usize;
            if let Some(dst) = hbm.get_mut(start..start + bytes.len()) {
                dst.copy_from_slice(bytes);
            }
        }
        let cfg = &self.config;
        let max_elems = cfg.limits.max_elements_per_instruction;
        let mut mem = Memories::new(hbm, cfg.geometry, cfg.poison, max_elems);
        for t in &self.program.tensors {
            let (start, len) = (t.offset as usize, t.bytes() as usize);
            match t.role {
                Role::Input => mem.mark_hbm_written(&t.name, start, len),
                _ => mem.name_hbm(&t.name, start, len),
            }
        }
        let mut exec = Executor::new(mem, cfg.timing.dma_min_run);
        let report = timing::simulate(&self.program, cfg, &mut exec)?;
        // Under poison tracking, every output byte must have been written by the program.
        for t in self.program.tensors_with_role(Role::Output) {
            if let Some(byte) = exec
                .mem
                .first_unwritten_hbm(t.offset as usize, t.bytes() as usize)
            {
                return Err(RuntimeError::OutputNotWritten {
                    name: t.name.clone(),
                    byte: byte as u64,
                });
            }
        }
        self.hbm = Some(exec.mem.hbm);
        Ok(report)
    }

    /// The bytes of a tensor after the last run.
    pub fn read_bytes(&self, name: &str) -> Result<&[u8], RuntimeError> {
        let (_, t) = self.find(name)?;
        let hbm = self
            .hbm
            .as_ref()
            .ok_or_else(|| RuntimeError::NotRun(name.to_string()))?;
        let start = t.offset as usize;
        hbm.get(start..start + t.bytes() as usize)
            .ok_or_else(|| RuntimeError::UnknownTensor(name.to_string()))
    }

    /// The values of a tensor (usually an output) after the last run, decoded to f32.
    pub fn read(&self, name: &str) -> Result<Vec<f32>, RuntimeError> {
        let (_, t) = self.find(name)?;
        let bytes = self.read_bytes(name)?;
        let mut out = vec![0.0f32; t.elems() as usize];
        numeric::load(t.dtype, bytes, &mut out);
        Ok(out)
    }
}

/// Loads `program` on a machine of `config`, binds `inputs` (name, values), runs it and
/// returns the report and every output.
pub fn run_program(
    program: &Program,
    config: &MachineConfig,
    inputs: &[(&str, &[f32])],
) -> Result<RunResult, RuntimeError> {
    let mut loaded = Machine::new(config.clone()).load_program(program.clone())?;
    for (name, values) in inputs {
        loaded.bind(name, values)?;
    }
    let report = loaded.run()?;
    let outputs = program
        .tensors_with_role(Role::Output)
        .map(|t| Ok((t.name.clone(), loaded.read(&t.name)?)))
        .collect::<Result<Vec<_>, RuntimeError>>()?;
    Ok(RunResult { report, outputs })
}
