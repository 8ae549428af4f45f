//! `tessera._tessera`: the native half of the Python package (issue 22), a thin PyO3 layer
//! over the compiler's driver (`tessera::driver`) and the runtime.
//!
//! The pure-Python `tessera/__init__.py` wraps it: it turns NumPy arrays into byte views
//! with a dtype tag, builds arrays from the bytes this module returns, and turns the one
//! exception this module raises, `NativeError(kind, message, details)`, into the public
//! classes (`CompileError`, `RunError`, `CheckError`, `InputError`). Keeping the Python
//! conveniences in Python keeps this file to what needs Rust: compiling, binding, running,
//! checking and the messages, which come from the driver so that they read as the CLI's.
//!
//! Every entry point releases the GIL while it compiles or runs (two threads run two
//! kernels at once) and catches panics there, so that no input crashes the interpreter: a
//! panic comes back as an `internal` error that says it is a bug.

use pyo3::buffer::PyBuffer;
use pyo3::prelude::*;
use pyo3::types::PyByteArray;
use pyo3::IntoPyObjectExt;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::PathBuf;
use std::sync::Arc;
use tessera::diagnostic::Diagnostic;
use tessera::driver::{self, CompileOptions, DriverError, ParamSpec, RunOptions, Source};
use tessera::passes::{self, Compilation, PassOptions};
use tessera::reference::HostTensor;

pyo3::create_exception!(
    _tessera,
    NativeError,
    pyo3::exceptions::PyException,
    "An error of the native module: args are (kind, message, details). The package turns \
     it into tessera.CompileError, RunError, CheckError, InputError or Error."
);

/// What went wrong, before it becomes a Python exception.
struct Failure {
    /// `compile`, `input`, `run`, `check`, `usage` or `internal`.
    kind: &'static str,
    message: String,
    /// Compile: the diagnostics as (severity, code, message, line, column) tuples. Check:
    /// the comparison lines. Otherwise empty.
    details: Vec<Detail>,
}

/// One entry of [`Failure::details`].
enum Detail {
    Diagnostic {
        severity: &'static str,
        code: &'static str,
        message: String,
        line: usize,
        column: usize,
    },
    Line(String),
}

impl Failure {
    fn new(kind: &'static str, message: impl Into<String>) -> Failure {
        Failure {
            kind,
            message: message.into(),
            details: Vec::new(),
        }
    }

    /// A driver error met while compiling: a compile error (source diagnostics, whose
    /// details [`compile_failure`] fills in, and also an unknown pass or kernel, an
    /// unreadable file, a kernel too large for HBM), or an internal error.
    fn of_compile(e: DriverError) -> Failure {
        let kind = match &e {
            DriverError::Internal(_) => "internal",
            _ => "compile",
        };
        Failure::new(kind, strip_error(&e))
    }

    /// A driver error met while running: the program's faults and limits are run errors.
    fn of_run(e: DriverError) -> Failure {
        let kind = match &e {
            DriverError::Internal(_) => "internal",
            DriverError::Mismatch(_) => "check",
            _ => "run",
        };
        Failure::new(kind, strip_error(&e))
    }

    fn into_py(self, py: Python<'_>) -> PyErr {
        let details: Vec<Py<PyAny>> = self
            .details
            .into_iter()
            .map(|d| match d {
                Detail::Diagnostic {
                    severity,
                    code,
                    message,
                    line,
                    column,
                } => (severity, code, message, line, column).into_py_any(py),
                Detail::Line(l) => l.into_py_any(py),
            })
            .collect::<PyResult<_>>()
            .unwrap_or_default();
        NativeError::new_err((self.kind, self.message, details))
    }
}

/// The message of a driver error without the CLI's `error: ` prefix (Python's traceback
/// names the class already).
fn strip_error(e: &DriverError) -> String {
    let text = e.to_string();
    match text.strip_prefix("error: ") {
        Some(rest) => rest.to_string(),
        None => text,
    }
}

/// Runs `f` without the GIL, turning a panic into an internal error.
fn detached<T: Send>(py: Python<'_>, f: impl FnOnce() -> Result<T, Failure> + Send) -> PyResult<T> {
    let result = py.detach(|| {
        catch_unwind(AssertUnwindSafe(f)).unwrap_or_else(|panic| {
            let what = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_else(|| "(no message)".into());
            Err(Failure::new(
                "internal",
                format!(
                    "internal error: {what}\nThis is a bug in Tessera; please report it with \
                     the input."
                ),
            ))
        })
    });
    result.map_err(|f| f.into_py(py))
}

/// The 1-based line and column (in characters) of byte `offset` of `text`.
fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let mut offset = offset.min(text.len());
    while !text.is_char_boundary(offset) {
        offset -= 1;
    }
    let before = &text[..offset];
    let line = before.matches('\n').count() + 1;
    let start = before.rfind('\n').map_or(0, |i| i + 1);
    (line, before[start..].chars().count() + 1)
}

/// A failed compilation as a compile error with its diagnostics as data, when the failure
/// is in the source (the checker is run again to get them: only on this error path).
fn compile_failure(src: &Source, options: &CompileOptions, e: DriverError) -> Failure {
    let is_source = matches!(e, DriverError::Source { .. });
    let mut failure = Failure::of_compile(e);
    if is_source {
        let diags: Vec<Diagnostic> =
            tessera::frontend::check_file(&src.text, &options.defines, options.kernel.as_deref())
                .err()
                .unwrap_or_default();
        failure.details = diags
            .iter()
            .map(|d| {
                let (line, column) = d
                    .primary_span()
                    .map_or((0, 0), |s| line_column(&src.text, s.start as usize));
                Detail::Diagnostic {
                    severity: match d.severity {
                        tessera::diagnostic::Severity::Error => "error",
                        tessera::diagnostic::Severity::Warning => "warning",
                        tessera::diagnostic::Severity::Note => "note",
                    },
                    code: d.code,
                    message: d.message.clone(),
                    line,
                    column,
                }
            })
            .collect();
    }
    failure
}

/// A compiled kernel (from source) or a loaded program (from a `.tbin`).
#[pyclass(frozen, module = "tessera._tessera")]
struct Kernel {
    /// The program that runs (shared with the timing reports of its runs).
    program: Arc<isa::Program>,
    /// The compilation, for a kernel compiled from source: its tensor IR is the
    /// reference's and the roofline's.
    compilation: Option<Compilation>,
    /// The source and options it was compiled with (for `ir(after=...)`).
    source: Option<(Source, CompileOptions)>,
    /// For a loaded program: its path and bytes (`check=True` finds its source through
    /// the origin it records, as `tessera run PROGRAM.tbin --check` does).
    tbin: Option<(PathBuf, Vec<u8>)>,
    params: Vec<ParamSpec>,
}

/// One input as the Python side hands it over: its bytes and the tag of its dtype
/// (`f32`, `f64`, `f16`, `bf16`, `f8e4m3`, `f8e5m2`, `i32`, `bool`, one of the other
/// integer tags `i8`, `i16`, `i64`, `u8`, `u16`, `u32`, `u64`, or `unsupported:NAME`) and
/// shape.
struct Wire {
    bytes: Vec<u8>,
    tag: String,
    shape: Vec<u64>,
}

/// One input bound to its parameter: the bytes HBM receives and the values the
/// reference sees.
struct BoundInput {
    bytes: Vec<u8>,
    tensor: HostTensor,
}

/// The integer tags the Python side sends: each one's NumPy name, width in bytes and
/// signedness (little-endian).
const INT_TAGS: [(&str, &str, usize, bool); 8] = [
    ("i8", "int8", 1, true),
    ("i16", "int16", 2, true),
    ("i32", "int32", 4, true),
    ("i64", "int64", 8, true),
    ("u8", "uint8", 1, false),
    ("u16", "uint16", 2, false),
    ("u32", "uint32", 4, false),
    ("u64", "uint64", 8, false),
];

/// The NumPy name of a tag, as messages print the array's dtype.
fn numpy_name(tag: &str) -> &str {
    if let Some((_, name, _, _)) = INT_TAGS.iter().find(|t| t.0 == tag) {
        return name;
    }
    match tag {
        "f32" => "float32",
        "f64" => "float64",
        "f16" => "float16",
        "bf16" => "bfloat16",
        "f8e4m3" => "float8_e4m3fn",
        "f8e5m2" => "float8_e5m2",
        other => other.strip_prefix("unsupported:").unwrap_or(other),
    }
}

/// The bytes of a host tensor in its dtype, as HBM holds them (`i32` exactly, from its
/// integers; `bool` as one byte 0 or 1).
fn tensor_bytes(t: &HostTensor) -> Vec<u8> {
    if t.dtype == isa::Dtype::I32 {
        return t.ints.iter().flat_map(|x| x.to_le_bytes()).collect();
    }
    let mut bytes = vec![0u8; t.data.len() * t.dtype.size() as usize];
    runtime::numeric::store(t.dtype, &t.data, &mut bytes);
    bytes
}

/// A host tensor from the bytes of an output in HBM (`i32` read exactly into its integers).
fn host_tensor(dtype: isa::Dtype, shape: &[u64], bytes: &[u8]) -> HostTensor {
    if dtype == isa::Dtype::I32 {
        let ints = bytes
            .chunks_exact(4)
            .map(|c| i32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        return HostTensor::from_i32(shape, ints);
    }
    let n = shape.iter().product::<u64>() as usize;
    let mut data = vec![0f32; n];
    runtime::numeric::load(dtype, bytes, &mut data);
    HostTensor {
        dtype,
        shape: shape.to_vec(),
        data,
        ints: Vec::new(),
    }
}

/// Reads an integer input for an `i32` parameter exactly: each value must fit in i32,
/// else the error names the parameter, the value and its position (as the CLI does).
fn convert_ints(p: &ParamSpec, w: Wire, width: usize, signed: bool) -> Result<BoundInput, Failure> {
    let n = p.shape.iter().product::<u64>() as usize;
    if w.bytes.len() != n * width {
        return Err(Failure::new(
            "internal",
            format!(
                "input `{}`: {} bytes for {n} elements",
                p.name,
                w.bytes.len()
            ),
        ));
    }
    let mut ints = Vec::with_capacity(n);
    for (i, c) in w.bytes.chunks_exact(width).enumerate() {
        let mut b = [0u8; 8];
        b[..width].copy_from_slice(c);
        // Sign-extend a signed value from its width; an unsigned one stays as it is.
        let v: i128 = if signed {
            let shift = 64 - 8 * width as u32;
            i128::from((i64::from_le_bytes(b) << shift) >> shift)
        } else {
            i128::from(u64::from_le_bytes(b))
        };
        let Ok(x) = i32::try_from(v) else {
            return Err(Failure::new(
                "input",
                format!(
                    "input `{}`: the {} value {v} (element {i} in C order) does not fit in i32 \
                     (-2147483648 to 2147483647)",
                    p.name,
                    numpy_name(&w.tag)
                ),
            ));
        };
        ints.push(x);
    }
    let tensor = HostTensor::from_i32(&p.shape, ints);
    Ok(BoundInput {
        bytes: tensor_bytes(&tensor),
        tensor,
    })
}

/// Converts one input to its parameter's dtype: bit for bit when the tags match, else
/// through f32 (f64 directly) with the language's rounding (`runtime::numeric`). An `i32`
/// parameter takes integer arrays only (read exactly) and a `bool` one bool arrays only;
/// neither kind of array fills a float parameter, as the CLI's `.npy` inputs.
fn convert(p: &ParamSpec, w: Wire) -> Result<BoundInput, Failure> {
    let ty = driver::type_text(p.dtype, &p.shape);
    if w.shape != p.shape {
        return Err(Failure::new(
            "input",
            driver::shape_message(p, &driver::shape_repr(&w.shape)),
        ));
    }
    let int = INT_TAGS.iter().find(|t| t.0 == w.tag.as_str());
    let is_bool = w.tag == "bool";
    if !w.tag.starts_with("unsupported:") {
        if (p.dtype == isa::Dtype::I32) != int.is_some() {
            return Err(Failure::new(
                "input",
                format!(
                    "input `{}` ({ty}): the array's dtype {} does not fit the parameter: an i32 \
                     parameter takes an integer array (int32, or int64, int16, int8, uint8 or \
                     uint16 whose values fit in i32), and an integer array fills only an i32 \
                     parameter",
                    p.name,
                    numpy_name(&w.tag)
                ),
            ));
        }
        if (p.dtype == isa::Dtype::Bool) != is_bool {
            return Err(Failure::new(
                "input",
                format!(
                    "input `{}` ({ty}): the array's dtype {} does not fit the parameter: a bool \
                     parameter takes a bool array, and a bool array fills only a bool parameter",
                    p.name,
                    numpy_name(&w.tag)
                ),
            ));
        }
    }
    if let Some(&(_, _, width, signed)) = int {
        return convert_ints(p, w, width, signed);
    }
    let n = p.shape.iter().product::<u64>() as usize;
    let values: Vec<f32> = match w.tag.as_str() {
        "f64" => w
            .bytes
            .chunks_exact(8)
            .map(|c| {
                let mut b = [0u8; 8];
                b.copy_from_slice(c);
                runtime::numeric::round_f64(p.dtype, f64::from_le_bytes(b))
            })
            .collect(),
        tag => match isa::Dtype::from_name(tag) {
            Some(from) => {
                let mut v = vec![0f32; n];
                runtime::numeric::load(from, &w.bytes, &mut v);
                // A bool array's bytes are normalised to 0 and 1 below, whatever it holds.
                if from == p.dtype && from != isa::Dtype::Bool {
                    return Ok(BoundInput {
                        bytes: w.bytes,
                        tensor: HostTensor {
                            dtype: p.dtype,
                            shape: p.shape.clone(),
                            data: v,
                            ints: Vec::new(),
                        },
                    });
                }
                for x in &mut v {
                    *x = runtime::numeric::round(p.dtype, *x);
                }
                v
            }
            None => {
                let name = tag.strip_prefix("unsupported:").unwrap_or(tag);
                return Err(Failure::new(
                    "input",
                    format!(
                        "input `{}` ({ty}): unsupported dtype {name}; accepted are float16, \
                         float32 and float64, ml_dtypes' bfloat16, float8_e4m3fn and \
                         float8_e5m2 (for float parameters), integer arrays (for i32 ones) \
                         and bool arrays (for bool ones)",
                        p.name
                    ),
                ));
            }
        },
    };
    if values.len() != n {
        return Err(Failure::new(
            "internal",
            format!(
                "input `{}`: {} bytes for {n} elements",
                p.name,
                w.bytes.len()
            ),
        ));
    }
    let mut bytes = vec![0u8; n * p.dtype.size() as usize];
    runtime::numeric::store(p.dtype, &values, &mut bytes);
    Ok(BoundInput {
        bytes,
        tensor: HostTensor {
            dtype: p.dtype,
            shape: p.shape.clone(),
            data: values,
            ints: Vec::new(),
        },
    })
}

/// Matches the inputs of a call to the parameters: positional ones first, then named
/// ones; then `random` fills what is missing.
fn bind_inputs(
    params: &[ParamSpec],
    positional: Vec<Wire>,
    named: Vec<(String, Wire)>,
    random: Option<u64>,
) -> Result<Vec<BoundInput>, Failure> {
    let usage = |m: String| Failure::new("usage", m);
    if positional.len() > params.len() {
        let names: Vec<_> = params.iter().map(|p| p.name.as_str()).collect();
        return Err(usage(format!(
            "the kernel takes {} input(s) ({}), {} were given positionally",
            params.len(),
            names.join(", "),
            positional.len()
        )));
    }
    let mut slots: Vec<Option<Wire>> = params.iter().map(|_| None).collect();
    for (slot, w) in slots.iter_mut().zip(positional) {
        *slot = Some(w);
    }
    for (name, w) in named {
        let Some(i) = params.iter().position(|p| p.name == name) else {
            return Err(usage(driver::no_parameter_message(params, &name)));
        };
        if slots[i].is_some() {
            return Err(usage(format!(
                "input `{name}` is given twice (positionally and by name); give each input once"
            )));
        }
        slots[i] = Some(w);
    }
    let mut out = Vec::with_capacity(params.len());
    for (index, (p, slot)) in params.iter().zip(slots).enumerate() {
        out.push(match (slot, random) {
            (Some(w), _) => convert(p, w)?,
            (None, Some(seed)) => {
                let tensor = driver::random_tensor(p, seed, index as u64);
                BoundInput {
                    bytes: tensor_bytes(&tensor),
                    tensor,
                }
            }
            (None, None) => {
                return Err(usage(format!(
                    "no input for parameter `{}` ({}); give it positionally, as {}=ARRAY, in \
                     inputs={{...}}, or use random=SEED",
                    p.name,
                    driver::type_text(p.dtype, &p.shape),
                    p.name
                )))
            }
        });
    }
    Ok(out)
}

/// The Python objects of `(view, tag, shape)` tuples as [`Wire`]s, copying each buffer
/// once (the GIL is held here; the copy is what the run reads without it).
fn wires(py: Python<'_>, items: Vec<(Bound<'_, PyAny>, String, Vec<u64>)>) -> PyResult<Vec<Wire>> {
    items
        .into_iter()
        .map(|(view, tag, shape)| {
            let bytes = if view.is_none() {
                Vec::new()
            } else {
                PyBuffer::<u8>::get(&view)?.to_vec(py)?
            };
            Ok(Wire { bytes, tag, shape })
        })
        .collect()
}

/// What a run returns to Python before it becomes a `tessera.Result`.
struct RunOutcome {
    /// Each output's bytes, dtype name and shape (a reference run: its values encoded).
    outputs: Vec<(Vec<u8>, &'static str, Vec<u64>)>,
    /// An interpreter run: the loaded program, whose HBM holds the outputs (they are
    /// copied straight from there into the arrays' buffers, once).
    loaded: Option<runtime::Loaded>,
    /// The timing of an interpreter run (none for a reference run).
    timing: Option<Timing>,
    lines: Vec<String>,
    max_error: Option<f64>,
}

/// The options of one `run` call.
struct Call {
    check: bool,
    reference: bool,
    trace: Option<PathBuf>,
    options: RunOptions,
}

impl Kernel {
    /// The compilation `check=True` and `reference` compare with: the kernel's own, or for
    /// a loaded program the one its recorded origin gives (as `run PROGRAM.tbin --check`).
    fn reference_compilation(&self, options: &RunOptions) -> Result<Compilation, Failure> {
        match (&self.compilation, &self.tbin) {
            (Some(c), _) => Ok(c.clone()),
            (None, Some((path, bytes))) => {
                driver::program_with_source(path, bytes, options).map_err(Failure::of_run)
            }
            (None, None) => Err(Failure::new("internal", "the kernel has no program")),
        }
    }

    fn run_bound(&self, inputs: Vec<BoundInput>, call: &Call) -> Result<RunOutcome, Failure> {
        let reference = if call.check || call.reference {
            Some(self.reference_compilation(&call.options)?)
        } else {
            None
        };
        let tensors: Vec<HostTensor> = inputs.iter().map(|b| b.tensor.clone()).collect();
        if call.reference {
            let c = reference.as_ref().expect("made above");
            let outs = tessera::reference::evaluate(c.reference().0, &tensors)
                .map_err(|e| Failure::new("run", e.to_string()))?;
            let outputs = outs
                .into_iter()
                .map(|t| (tensor_bytes(&t), t.dtype.name(), t.shape))
                .collect();
            return Ok(RunOutcome {
                outputs,
                loaded: None,
                timing: None,
                lines: Vec::new(),
                max_error: None,
            });
        }
        let program: &isa::Program = &self.program;
        let run_error = |e: runtime::RuntimeError| Failure::new("run", e.to_string());
        let machine = runtime::Machine::new(driver::machine_config(program, &call.options));
        let mut loaded = machine.load_program(program.clone()).map_err(run_error)?;
        for (p, b) in self.params.iter().zip(&inputs) {
            loaded.bind_bytes(&p.name, &b.bytes).map_err(run_error)?;
        }
        let report = loaded.run().map_err(run_error)?;
        let mut host = Vec::new();
        for t in program.tensors_with_role(isa::Role::Output) {
            let bytes = loaded.read_bytes(&t.name).map_err(run_error)?;
            if call.check {
                host.push(host_tensor(t.dtype, &t.shape, bytes));
            }
        }
        let timing = runtime::MachineConfig::new(program.preset).timing;
        let bound = self
            .compilation
            .as_ref()
            .map(|c| tessera::roofline::bound(&c.tensor, &timing));
        if let Some(path) = &call.trace {
            runtime::npy::write_file_atomic(
                path,
                runtime::trace::chrome_trace(program, &report).as_bytes(),
            )
            .map_err(|e| Failure::new("run", format!("cannot write {}: {e}", path.display())))?;
        }
        let mut outcome = RunOutcome {
            outputs: Vec::new(),
            loaded: Some(loaded),
            timing: Some(Timing {
                program: Arc::clone(&self.program),
                report,
                bound,
                dma_total_rate: timing.dma_total_rate,
            }),
            lines: Vec::new(),
            max_error: None,
        };
        if let Some(c) = &reference {
            let comparisons = driver::check_outputs(c, &tensors, &host).map_err(Failure::of_run)?;
            let mut bad = Vec::new();
            let mut max_error = 0f64;
            for (i, cmp) in comparisons.iter().enumerate() {
                outcome.lines.push(cmp.line(i));
                bad.extend(cmp.mismatch(i));
                max_error = if cmp.max_abs.is_nan() || max_error.is_nan() {
                    f64::NAN
                } else {
                    max_error.max(cmp.max_abs)
                };
            }
            outcome.max_error = Some(max_error);
            if !bad.is_empty() {
                let mut f = Failure::new(
                    "check",
                    format!(
                        "outputs differ from the reference beyond their allowed error: {}",
                        bad.join("; ")
                    ),
                );
                f.details = outcome.lines.iter().cloned().map(Detail::Line).collect();
                return Err(f);
            }
        }
        Ok(outcome)
    }
}

/// The timing of one run: the runtime's report, turned into the profile of `tessera run
/// --report` only when Python asks for it (building it costs more than a small run).
#[pyclass(frozen, module = "tessera._tessera")]
struct Timing {
    program: Arc<isa::Program>,
    report: runtime::Report,
    bound: Option<tessera::roofline::Bound>,
    dma_total_rate: u64,
}

impl Timing {
    fn profile(&self) -> tessera::profile::Profile {
        tessera::profile::Profile::new(
            &self.program,
            &self.report,
            self.bound.clone(),
            self.dma_total_rate,
        )
    }
}

#[pymethods]
impl Timing {
    /// The total simulated cycles of the run.
    #[getter]
    fn total_cycles(&self) -> u64 {
        self.report.total_cycles
    }

    /// The profile as `tessera run --report-json` writes it (a JSON string).
    fn json(&self, py: Python<'_>) -> PyResult<String> {
        detached(py, || {
            serde_json::to_string(&self.profile().to_json())
                .map_err(|e| Failure::new("internal", e.to_string()))
        })
    }

    /// The profile as `tessera run --report` prints it.
    fn text(&self, py: Python<'_>) -> PyResult<String> {
        detached(py, || Ok(self.profile().text()))
    }
}

type WireArg<'py> = (Bound<'py, PyAny>, String, Vec<u64>);

#[pymethods]
impl Kernel {
    /// The kernel's parameters: a list of (name, dtype, shape).
    #[getter]
    fn params(&self) -> Vec<(String, &'static str, Vec<u64>)> {
        self.params
            .iter()
            .map(|p| (p.name.clone(), p.dtype.name(), p.shape.clone()))
            .collect()
    }

    /// The kernel's results: a list of (name, dtype, shape), in result order.
    #[getter]
    fn results(&self) -> Vec<(String, &'static str, Vec<u64>)> {
        self.program
            .tensors_with_role(isa::Role::Output)
            .map(|t| (t.name.clone(), t.dtype.name(), t.shape.clone()))
            .collect()
    }

    /// The kernel's name.
    #[getter]
    fn name(&self) -> String {
        match (&self.compilation, &self.program.origin) {
            (Some(c), _) => c.tensor.name.clone(),
            (None, Some(o)) => o.kernel.clone(),
            (None, None) => String::new(),
        }
    }

    /// Whether the kernel was compiled from source here (false: loaded from a .tbin).
    #[getter]
    fn compiled(&self) -> bool {
        self.compilation.is_some()
    }

    /// The program as assembly text (`tessera compile --emit asm`).
    fn asm(&self) -> String {
        isa::disassemble(&self.program)
    }

    /// The tensor IR (`stage="tensor"`) or tile IR (`"tile"`) after the whole pipeline,
    /// or with `after`, the dumps of `--dump-after PASS|all` (the kernel is compiled again).
    #[pyo3(signature = (stage, after=None))]
    fn ir(&self, py: Python<'_>, stage: &str, after: Option<String>) -> PyResult<String> {
        let usage = |m: &str| Failure::new("usage", m).into_py(py);
        let (Some(c), Some((src, options))) = (&self.compilation, &self.source) else {
            return Err(usage(
                "a program loaded from a .tbin has no IR; compile its source to see it",
            ));
        };
        if let Some(after) = after {
            let options = CompileOptions {
                dump_after: Some(after),
                ..options.clone()
            };
            return detached(py, || {
                let mut dumps = String::new();
                driver::compile(src, &options, &mut dumps)
                    .map(|_| dumps)
                    .map_err(|e| compile_failure(src, &options, e))
            });
        }
        match stage {
            "tensor" => Ok(c.tensor.to_string()),
            "tile" => Ok(c.tile.as_ref().map(|t| t.to_string()).unwrap_or_default()),
            other => Err(usage(&format!(
                "ir: no stage `{other}`; the stages are `tensor` and `tile`"
            ))),
        }
    }

    /// The pipeline as `tessera compile --list-passes` prints it, with the passes this
    /// kernel was compiled without marked `(disabled)`.
    fn passes(&self) -> String {
        let disabled: &[String] = self
            .source
            .as_ref()
            .map(|(_, o)| o.passes.disabled.as_slice())
            .or_else(|| {
                self.program
                    .origin
                    .as_ref()
                    .map(|o| o.disabled_passes.as_slice())
            })
            .unwrap_or(&[]);
        let mut out = format!("{:<12} (always)     lowering to tensor IR\n", passes::LOWER);
        for p in passes::PIPELINE {
            let kind = if p.optimising {
                "optimising"
            } else {
                "required"
            };
            let mark = if disabled.iter().any(|d| d == p.name) {
                " (disabled)"
            } else {
                ""
            };
            out.push_str(&format!(
                "{:<12} {:<12} {}{mark}\n",
                p.name, kind, p.summary
            ));
        }
        out
    }

    /// Writes the program as a `.tbin` (atomically). A kernel compiled from a file records
    /// its origin, so that the loaded program can be checked; one compiled from a string
    /// records none.
    fn save(&self, py: Python<'_>, path: PathBuf) -> PyResult<()> {
        detached(py, || {
            let bytes = isa::encode_program(&self.program);
            runtime::npy::write_file_atomic(&path, &bytes)
                .map_err(|e| Failure::new("run", format!("cannot write {}: {e}", path.display())))
        })
    }

    /// Runs the kernel. `positional` and `named` are the inputs as (byte view, dtype tag,
    /// shape); returns (outputs as (bytearray, dtype, shape), report JSON, report text,
    /// comparison lines, max error).
    #[allow(clippy::too_many_arguments, clippy::type_complexity)]
    #[pyo3(signature = (positional, named, *, random=None, check=false, reference=false,
                        trace=None, debug_checks=None, max_instructions=None,
                        max_cycles=None))]
    fn run<'py>(
        &self,
        py: Python<'py>,
        positional: Vec<WireArg<'py>>,
        named: Vec<(String, WireArg<'py>)>,
        random: Option<u64>,
        check: bool,
        reference: bool,
        trace: Option<PathBuf>,
        debug_checks: Option<bool>,
        max_instructions: Option<u64>,
        max_cycles: Option<u64>,
    ) -> PyResult<(
        Vec<(Bound<'py, PyByteArray>, &'static str, Vec<u64>)>,
        Option<Timing>,
        Vec<String>,
        Option<f64>,
    )> {
        let positional = wires(py, positional)?;
        let mut names = Vec::with_capacity(named.len());
        let mut items = Vec::with_capacity(named.len());
        for (name, item) in named {
            names.push(name);
            items.push(item);
        }
        let named: Vec<(String, Wire)> = names.into_iter().zip(wires(py, items)?).collect();
        let call = Call {
            check,
            reference,
            trace,
            options: RunOptions {
                debug_checks: debug_checks.unwrap_or_else(driver::debug_checks_default),
                max_instructions,
                max_cycles,
            },
        };
        let outcome = detached(py, || {
            let inputs = bind_inputs(&self.params, positional, named, random)?;
            self.run_bound(inputs, &call)
        })?;
        let outputs = match &outcome.loaded {
            Some(loaded) => self
                .program
                .tensors_with_role(isa::Role::Output)
                .map(|t| {
                    let bytes = loaded
                        .read_bytes(&t.name)
                        .map_err(|e| Failure::new("run", e.to_string()).into_py(py))?;
                    Ok((PyByteArray::new(py, bytes), t.dtype.name(), t.shape.clone()))
                })
                .collect::<PyResult<Vec<_>>>()?,
            None => outcome
                .outputs
                .iter()
                .map(|(bytes, dtype, shape)| (PyByteArray::new(py, bytes), *dtype, shape.clone()))
                .collect(),
        };
        Ok((outputs, outcome.timing, outcome.lines, outcome.max_error))
    }
}

/// Compiles a kernel from `text` (named `name` in diagnostics), or from the file `path`
/// when `text` is None; a kernel compiled from a file records its origin in its program.
#[allow(clippy::too_many_arguments)]
#[pyfunction]
#[pyo3(signature = (text, name, path, kernel, defines, strict, disable, verify_ir))]
fn compile(
    py: Python<'_>,
    text: Option<String>,
    name: String,
    path: Option<PathBuf>,
    kernel: Option<String>,
    defines: Vec<(String, i64)>,
    strict: bool,
    disable: Vec<String>,
    verify_ir: bool,
) -> PyResult<Kernel> {
    detached(py, move || {
        let src = match (text, &path) {
            (Some(text), _) => Source { name, text },
            (None, Some(path)) => driver::read_source(path).map_err(Failure::of_compile)?,
            (None, None) => return Err(Failure::new("usage", "compile needs a text or a path")),
        };
        let options = CompileOptions {
            kernel,
            defines,
            passes: PassOptions {
                disabled: disable,
                strict_dtypes: strict,
                ..PassOptions::default()
            },
            dump_after: None,
            verify_ir,
        };
        let mut c = driver::compile(&src, &options, &mut String::new())
            .map_err(|e| compile_failure(&src, &options, e))?;
        if let Some(path) = &path {
            driver::record_origin(&mut c, path, &src, &options).map_err(Failure::of_compile)?;
        }
        let program = driver::program_of(&c).map_err(Failure::of_compile)?.clone();
        let params = driver::params_of(&c.tensor);
        Ok(Kernel {
            program: Arc::new(program),
            compilation: Some(c),
            source: Some((src, options)),
            tbin: None,
            params,
        })
    })
}

/// Loads a `.tbin` program, checking that it decodes, verifies and fits the machine.
#[pyfunction]
fn load(py: Python<'_>, path: PathBuf) -> PyResult<Kernel> {
    detached(py, move || {
        let in_file = |e: DriverError| {
            Failure::new("run", format!("{}: {}", path.display(), strip_error(&e)))
        };
        let bytes = driver::read_program_bytes(&path).map_err(Failure::of_run)?;
        let program = isa::decode_program(&bytes)
            .map_err(|e| Failure::new("run", format!("{}: {e}", path.display())))?;
        driver::check_loadable(&program, &RunOptions::default()).map_err(in_file)?;
        let params = driver::program_params(&program);
        Ok(Kernel {
            program: Arc::new(program),
            compilation: None,
            source: None,
            tbin: Some((path, bytes)),
            params,
        })
    })
}

/// The names of the passes of the pipeline, in order (`tessera compile --list-passes`).
#[pyfunction]
fn pass_names() -> Vec<&'static str> {
    passes::PIPELINE.iter().map(|p| p.name).collect()
}

/// The native module.
#[pymodule]
fn _tessera(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("NativeError", m.py().get_type::<NativeError>())?;
    m.add_class::<Kernel>()?;
    m.add_class::<Timing>()?;
    m.add_function(wrap_pyfunction!(compile, m)?)?;
    m.add_function(wrap_pyfunction!(load, m)?)?;
    m.add_function(wrap_pyfunction!(pass_names, m)?)?;
    Ok(())
}
