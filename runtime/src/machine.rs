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
//! memories: HBM zeroed (or poisoned) but for the bound inputs, SBUF and PSUM zeroed (or
//! poisoned), so repeated runs are identical.
//!
//! HBM is held once: binding writes an input straight into the HBM image the run will use
//! (the first bind allocates it, zeroed by the allocator, so pages nothing touches cost no
//! memory), the run executes in that image, and the outputs are read from it afterwards. A
//! later run resets everything but the inputs; a program that may write into an input's
//! bytes (no compiled kernel does) keeps a copy of its bound inputs so that a later run
//! still starts from them.

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
    /// Whether each tensor (inputs only) is bound.
    bound: Vec<bool>,
    /// The thread making a fresh image's pages present (`prefault.rs`); declared before
    /// `hbm` so that it is stopped and joined before the image is freed.
    prefault: crate::prefault::Slot,
    /// The HBM image: the bound inputs at their offsets, and after a run everything that
    /// run wrote. Empty until the first bind or run.
    hbm: Vec<u8>,
    /// Whether a run has written `hbm` since it was allocated (its bytes outside the inputs
    /// must be reset before the next run).
    dirty: bool,
    /// Whether `hbm` holds the result of a successful run (outputs may be read).
    ran: bool,
    /// Whether some instruction may write into an input's bytes (`writes_inputs`).
    writes_inputs: bool,
    /// The bound bytes per tensor, kept only when `writes_inputs`.
    saved: Vec<Option<Vec<u8>>>,
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
            bound: vec![false; program.tensors.len()],
            saved: vec![None; program.tensors.len()],
            writes_inputs: writes_inputs(&program),
            program,
            config: self.config.clone(),
            prefault: crate::prefault::Slot::default(),
            hbm: Vec::new(),
            dirty: false,
            ran: false,
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
        let (start, len) = (t.offset as usize, t.bytes() as usize);
        let dtype = t.dtype;
        let hbm = self.hbm_image()?;
        numeric::store(dtype, values, &mut hbm[start..start + len]);
        self.bound_input(i);
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
        let start = t.offset as usize;
        let hbm = self.hbm_image()?;
        hbm[start..start + bytes.len()].copy_from_slice(bytes);
        self.bound_input(i);
        Ok(())
    }

    /// The HBM image, allocated (zeroed) on first use. A bind after a run invalidates the
    /// run's outputs.
    fn hbm_image(&mut self) -> Result<&mut [u8], RuntimeError> {
        if self.hbm.is_empty() && self.program.hbm_size > 0 {
            let size =
                usize::try_from(self.program.hbm_size).map_err(|_| RuntimeError::HbmLimit {
                    needed: self.program.hbm_size,
                    limit: usize::MAX as u64,
                })?;
            self.hbm = vec![0; size];
            self.prefault.0 = crate::prefault::Prefault::start(&mut self.hbm);
        }
        self.ran = false;
        Ok(&mut self.hbm)
    }

    /// Records that input `i` is bound (its bytes are in the HBM image), keeping a copy of
    /// them when the program may write over them.
    fn bound_input(&mut self, i: usize) {
        self.bound[i] = true;
        if self.writes_inputs {
            let t = &self.program.tensors[i];
            let start = t.offset as usize;
            self.saved[i] = Some(self.hbm[start..start + t.bytes() as usize].to_vec());
        }
    }

    /// Runs the program: fresh memories, the bound inputs in HBM, every stream to its
    /// `end` under the timing model. Every input must be bound.
    pub fn run(&mut self) -> Result<Report, RuntimeError> {
        self.ran = false;
        for (t, &bound) in self.program.tensors.iter().zip(&self.bound) {
            if t.role == Role::Input && !bound {
                return Err(RuntimeError::Unbound(t.name.clone()));
            }
        }
        self.hbm_image()?;
        // Under poison tracking, outputs and scratch start as NaN bytes, so that even a
        // read the bitmap could not see would show.
        let fill = if self.config.poison {
            crate::memory::POISON_BYTE
        } else {
            0
        };
        if self.dirty || fill != 0 {
            self.reset_hbm(fill);
        }
        let cfg = &self.config;
        let max_elems = cfg.limits.max_elements_per_instruction;
        let hbm = std::mem::take(&mut self.hbm);
        let mut mem = Memories::new(hbm, cfg.geometry, cfg.poison, max_elems);
        for t in &self.program.tensors {
            let (start, len) = (t.offset as usize, t.bytes() as usize);
            match t.role {
                Role::Input => mem.mark_hbm_written(&t.name, start, len),
                _ => mem.name_hbm(&t.name, start, len),
            }
        }
        let mut exec = Executor::new(mem, cfg.timing.dma_min_run);
        // Held here, after `exec`, while `exec` holds the image: should the run unwind,
        // the prefault thread is stopped before the image is freed.
        let prefault = std::mem::take(&mut self.prefault);
        let result = timing::simulate(&self.program, cfg, &mut exec);
        // Under poison tracking, every output byte must have been written by the program.
        let unwritten = self.program.tensors_with_role(Role::Output).find_map(|t| {
            exec.mem
                .first_unwritten_hbm(t.offset as usize, t.bytes() as usize)
                .map(|byte| RuntimeError::OutputNotWritten {
                    name: t.name.clone(),
                    byte: byte as u64,
                })
        });
        self.hbm = std::mem::take(&mut exec.mem.hbm);
        self.prefault = prefault;
        self.dirty = true;
        let report = result?;
        if let Some(e) = unwritten {
            return Err(e);
        }
        self.ran = true;
        Ok(report)
    }

    /// Sets every HBM byte outside the inputs to `fill` and restores inputs the program
    /// may have written over, so that a run starts as on a fresh image.
    fn reset_hbm(&mut self, fill: u8) {
        let mut inputs: Vec<(usize, usize)> = self
            .program
            .tensors
            .iter()
            .filter(|t| t.role == Role::Input)
            .map(|t| (t.offset as usize, t.offset as usize + t.bytes() as usize))
            .collect();
        inputs.sort_unstable();
        let mut at = 0;
        for (start, end) in inputs {
            if start > at {
                self.hbm[at..start].fill(fill);
            }
            at = at.max(end);
        }
        let len = self.hbm.len();
        if at < len {
            self.hbm[at..].fill(fill);
        }
        for (t, saved) in self.program.tensors.iter().zip(&self.saved) {
            if let Some(bytes) = saved {
                let start = t.offset as usize;
                self.hbm[start..start + bytes.len()].copy_from_slice(bytes);
            }
        }
    }

    /// The bytes of a tensor after the last run.
    pub fn read_bytes(&self, name: &str) -> Result<&[u8], RuntimeError> {
        let (_, t) = self.find(name)?;
        if !self.ran {
            return Err(RuntimeError::NotRun(name.to_string()));
        }
        let start = t.offset as usize;
        self.hbm
            .get(start..start + t.bytes() as usize)
            .ok_or_else(|| RuntimeError::UnknownTensor(name.to_string()))
    }

    /// The bytes bound to an input, as the next run will start from them (after a run
    /// too, even when the program wrote over them).
    pub fn input_bytes(&self, name: &str) -> Result<&[u8], RuntimeError> {
        let (i, t) = self.input(name)?;
        if !self.bound[i] {
            return Err(RuntimeError::Unbound(name.to_string()));
        }
        if let Some(saved) = &self.saved[i] {
            return Ok(saved);
        }
        let start = t.offset as usize;
        Ok(&self.hbm[start..start + t.bytes() as usize])
    }

    /// Consumes the machine and returns its HBM image with every bound input's bytes at
    /// its offset (restored where the program wrote over one), so that a caller done with
    /// the outputs can keep the inputs without copying them.
    pub fn into_input_image(mut self) -> Vec<u8> {
        self.prefault.0 = None;
        for (t, saved) in self.program.tensors.iter().zip(&self.saved) {
            if let Some(bytes) = saved {
                let start = t.offset as usize;
                self.hbm[start..start + bytes.len()].copy_from_slice(bytes);
            }
        }
        self.hbm
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

/// Whether some instruction of `program` may write into the bytes of an input: an HBM
/// operand it writes whose address range (from its pattern's extreme offsets) overlaps one.
fn writes_inputs(program: &Program) -> bool {
    let inputs: Vec<(i128, i128)> = program
        .tensors_with_role(Role::Input)
        .map(|t| (t.offset as i128, t.offset as i128 + t.bytes() as i128))
        .collect();
    if inputs.is_empty() {
        return false;
    }
    let mut hit = false;
    for inst in program.streams.iter().flatten() {
        inst.op.visit_aps(&mut |ap, access| {
            let isa::ApRef::Hbm(h) = ap else { return };
            if access != isa::Access::Write || hit {
                return;
            }
            let esz = h.dtype.size() as i128;
            let (mut lo, mut hi) = (h.offset as i128, h.offset as i128 + esz);
            for d in &h.dims {
                let span = (d.size.max(1) as i128 - 1) * d.stride as i128 * esz;
                if span < 0 {
                    lo += span;
                } else {
                    hi += span;
                }
            }
            hit = inputs.iter().any(|&(s, e)| lo < e && s < hi);
        });
        if hit {
            return true;
        }
    }
    false
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
