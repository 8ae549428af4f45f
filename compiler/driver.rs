//! The driver: what each CLI command does, as library functions that return data and
//! errors with their exit codes. `main.rs` only parses flags, calls these and prints.
//!
//! Exit codes (README.md): 0 success; 1 an error in the user's program or inputs; 2 bad
//! command-line usage; 3 `--check` found a mismatch. An internal compiler error also exits
//! 1, with a message that says it is a bug.

use crate::diagnostic;
use crate::frontend::{self, typed::CheckedKernel};
use crate::ir::{self, Function};
use crate::passes::{self, Compilation, PassOptions};
use crate::reference::HostTensor;
use isa::Dtype;
use runtime::{npy, numeric};
use std::path::{Path, PathBuf};

/// An error of a command, with the exit code it maps to.
#[derive(Debug, thiserror::Error)]
pub enum DriverError {
    /// Source diagnostics, already rendered (spans, underlines, labels).
    #[error("{rendered}")]
    Source { rendered: String },
    /// A bad input file, program or value: exit 1.
    #[error("error: {0}")]
    Input(String),
    /// Bad command-line usage: exit 2.
    #[error("error: {0}")]
    Usage(String),
    /// `--check` found an output outside tolerance: exit 3.
    #[error("error: {0}")]
    Mismatch(String),
    /// A bug in the compiler.
    #[error("{0}\nThis is a bug in Tessera; please report it with the input file.")]
    Internal(String),
}

impl DriverError {
    /// The process exit code of the error.
    pub fn exit_code(&self) -> i32 {
        match self {
            DriverError::Source { .. } | DriverError::Input(_) | DriverError::Internal(_) => 1,
            DriverError::Usage(_) => 2,
            DriverError::Mismatch(_) => 3,
        }
    }
}

impl From<ir::InternalError> for DriverError {
    /// An internal compiler error as the command line shows it: short, with the whole IR in
    /// a file of the temporary folder (see [`internal_error_report`]).
    fn from(e: ir::InternalError) -> Self {
        DriverError::Internal(internal_error_report(&e, &std::env::temp_dir()))
    }
}

/// How many of a verifier's errors an internal compiler error shows on the terminal; the
/// file it writes holds them all.
pub const ICE_SHOWN_ERRORS: usize = 5;
/// The most characters of one verifier error shown on the terminal.
const ICE_ERROR_CHARS: usize = 240;

/// The text of an internal compiler error for the terminal: the pass after which the IR
/// does not verify, the first [`ICE_SHOWN_ERRORS`] of the verifier's errors (one line
/// each), and the path of a file in `dir`, `tessera-ice-<pid>-<pass>.txt`, that holds
/// every error and the whole IR, which for a large kernel runs to thousands of lines. When
/// the file cannot be written, the text says why and carries the IR itself, the only copy
/// left.
pub fn internal_error_report(e: &ir::InternalError, dir: &Path) -> String {
    let mut out = format!(
        "internal compiler error: the IR after pass `{}` does not verify\n",
        e.pass
    );
    for error in e.errors.iter().take(ICE_SHOWN_ERRORS) {
        let text = error.to_string();
        let first = text.lines().next().unwrap_or_default();
        let mut line: String = first.chars().take(ICE_ERROR_CHARS).collect();
        if line.len() < text.len() {
            line.push_str(" ...");
        }
        out.push_str(&format!("  error: {line}\n"));
    }
    if e.errors.len() > ICE_SHOWN_ERRORS {
        out.push_str(&format!(
            "  ... and {} more error(s)\n",
            e.errors.len() - ICE_SHOWN_ERRORS
        ));
    }
    let pass: String = e
        .pass
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect();
    let path = dir.join(format!("tessera-ice-{}-{pass}.txt", std::process::id()));
    match write_new_file(&path, e.to_string().as_bytes()) {
        Ok(()) => out.push_str(&format!(
            "every error and the whole IR after `{}` are in {}",
            e.pass,
            path.display()
        )),
        Err(io) => out.push_str(&format!(
            "the IR could not be written to {} ({io}), so here it is:\n{}",
            path.display(),
            e.ir
        )),
    }
    out
}

/// Writes a new file at `path`, replacing whatever file or link was there rather than
/// writing through it (the temporary folder is shared, and a name with a process id in it
/// can be guessed).
fn write_new_file(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let open = || {
        std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(path)
    };
    let mut file = match open() {
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            std::fs::remove_file(path)?;
            open()?
        }
        other => other?,
    };
    file.write_all(bytes)
}

/// A source file read from disk.
#[derive(Clone, Debug)]
pub struct Source {
    /// The name shown in diagnostics (the path as the user gave it).
    pub name: String,
    pub text: String,
}

/// The most bytes a source file (a kernel `.tsr`, an assembly `.s`) may have: 64 MiB.
pub const MAX_SOURCE_BYTES: u64 = 64 << 20;
/// The most bytes a program (`.tbin`) may have: 1 GiB.
pub const MAX_PROGRAM_BYTES: u64 = 1 << 30;

/// Opens a file to read, with one clear error for a path that cannot be read as a file: a
/// missing or unreadable one, a folder, or a named pipe (FIFO), which would wait for a
/// writer. A pipe the shell made (`/dev/stdin`, `<(...)`) is read. Returns the file and its
/// length when it is a regular file.
pub fn open_file(path: &Path) -> Result<(std::fs::File, Option<u64>), DriverError> {
    let cannot =
        |e: std::io::Error| DriverError::Input(format!("cannot read {}: {e}", path.display()));
    let not_a_file =
        |what: &str| DriverError::Input(format!("cannot read {}: it is {what}", path.display()));
    let meta = std::fs::metadata(path).map_err(cannot)?;
    if meta.is_dir() {
        return Err(not_a_file("a folder, not a file"));
    }
    if is_named_pipe(path, &meta) {
        return Err(not_a_file(
            "a named pipe (FIFO), not a regular file (reading it would wait for a writer)",
        ));
    }
    let file = std::fs::File::open(path).map_err(cannot)?;
    Ok((file, meta.is_file().then_some(meta.len())))
}

/// Whether `path` names a FIFO in the file system (made by `mkfifo`), as opposed to an
/// anonymous pipe reached through `/dev/stdin` or `/dev/fd/N`, whose link does not resolve
/// to a path.
#[cfg(unix)]
fn is_named_pipe(path: &Path, meta: &std::fs::Metadata) -> bool {
    use std::os::unix::fs::FileTypeExt;
    meta.file_type().is_fifo()
        && std::fs::canonicalize(path)
            .and_then(std::fs::symlink_metadata)
            .is_ok_and(|m| m.file_type().is_fifo())
}

#[cfg(not(unix))]
fn is_named_pipe(_path: &Path, _meta: &std::fs::Metadata) -> bool {
    false
}

/// Appends the rest of `file` to `bytes`, refusing a file of more than `limit` bytes (an
/// endless one such as `/dev/zero` included) with a clear error. `len` is the file's length
/// when known; `what` names the kind of file for the message.
fn read_limited(
    path: &Path,
    file: &mut std::fs::File,
    len: Option<u64>,
    bytes: &mut Vec<u8>,
    limit: u64,
    what: &str,
) -> Result<(), DriverError> {
    let too_large = || {
        DriverError::Input(format!(
            "{} is too large: a {what} may have at most {} MiB",
            path.display(),
            limit >> 20
        ))
    };
    if len.is_some_and(|l| l > limit) {
        return Err(too_large());
    }
    read_some(
        path,
        file,
        bytes,
        (limit + 1).saturating_sub(bytes.len() as u64),
    )?;
    if bytes.len() as u64 > limit {
        return Err(too_large());
    }
    Ok(())
}

/// Appends up to `n` more bytes of `file` to `bytes`, fewer only at its end.
fn read_some(
    path: &Path,
    file: &mut std::fs::File,
    bytes: &mut Vec<u8>,
    n: u64,
) -> Result<(), DriverError> {
    use std::io::Read;
    file.take(n)
        .read_to_end(bytes)
        .map(|_| ())
        .map_err(|e| DriverError::Input(format!("cannot read {}: {e}", path.display())))
}

/// Decodes a source file's bytes; invalid UTF-8 is an input error naming the byte offset.
fn source_of(path: &Path, bytes: Vec<u8>) -> Result<Source, DriverError> {
    let text = String::from_utf8(bytes).map_err(|e| {
        DriverError::Input(format!(
            "{} is not valid UTF-8 (at byte {})",
            path.display(),
            e.utf8_error().valid_up_to()
        ))
    })?;
    Ok(Source {
        name: path.display().to_string(),
        text,
    })
}

/// Reads a source file of at most [`MAX_SOURCE_BYTES`]; invalid UTF-8 is an input error
/// naming the byte offset.
pub fn read_source(path: &Path) -> Result<Source, DriverError> {
    let (mut file, len) = open_file(path)?;
    read_source_rest(path, &mut file, len, Vec::new())
}

/// Reads the rest of a source file whose first bytes are in `bytes`, up to
/// [`MAX_SOURCE_BYTES`] in all, as UTF-8 source.
fn read_source_rest(
    path: &Path,
    file: &mut std::fs::File,
    len: Option<u64>,
    mut bytes: Vec<u8>,
) -> Result<Source, DriverError> {
    read_limited(path, file, len, &mut bytes, MAX_SOURCE_BYTES, "source file")?;
    source_of(path, bytes)
}

/// Reads a program (`.tbin`) of at most [`MAX_PROGRAM_BYTES`], undecoded. A file that
/// does not start with the magic bytes is not read further: its first bytes are enough for
/// the decoder's error.
pub fn read_program_bytes(path: &Path) -> Result<Vec<u8>, DriverError> {
    let (mut file, len) = open_file(path)?;
    let mut bytes = Vec::new();
    read_program_rest(path, &mut file, len, &mut bytes)?;
    Ok(bytes)
}

/// Appends the rest of a program to `bytes` (which hold at most its first bytes), unless
/// its first bytes are not the magic bytes.
fn read_program_rest(
    path: &Path,
    file: &mut std::fs::File,
    len: Option<u64>,
    bytes: &mut Vec<u8>,
) -> Result<(), DriverError> {
    let magic_len = isa::MAGIC.len() as u64;
    read_some(
        path,
        file,
        bytes,
        magic_len.saturating_sub(bytes.len() as u64),
    )?;
    if !bytes.starts_with(&isa::MAGIC) {
        return Ok(());
    }
    read_limited(path, file, len, bytes, MAX_PROGRAM_BYTES, "program")
}

/// What `run` was given: a program or a kernel source file.
#[derive(Clone, Debug)]
pub enum RunFile {
    /// The undecoded bytes of a `.tbin`.
    Program(Vec<u8>),
    Source(Source),
}

/// Reads the file of `run`. It is a program when it starts with the `.tbin` magic bytes
/// (`isa::MAGIC`) or its extension is `.tbin` (in any case, so that a damaged program gets
/// the decoder's message); anything else is a source file.
pub fn read_run_file(path: &Path) -> Result<RunFile, DriverError> {
    let (mut file, len) = open_file(path)?;
    let mut bytes = Vec::new();
    read_some(path, &mut file, &mut bytes, isa::MAGIC.len() as u64)?;
    let by_extension = path
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("tbin"));
    if bytes.starts_with(&isa::MAGIC) || by_extension {
        read_program_rest(path, &mut file, len, &mut bytes)?;
        Ok(RunFile::Program(bytes))
    } else {
        Ok(RunFile::Source(read_source_rest(
            path, &mut file, len, bytes,
        )?))
    }
}

/// Parses `NAME=INT` defines.
pub fn parse_define(s: &str) -> Result<(String, i64), DriverError> {
    let (name, value) = s
        .split_once('=')
        .ok_or_else(|| DriverError::Usage(format!("-D expects NAME=INT, found `{s}`")))?;
    let value = value
        .trim()
        .parse::<i64>()
        .map_err(|_| DriverError::Usage(format!("-D {name}: `{value}` is not an integer")))?;
    Ok((name.trim().to_string(), value))
}

/// Checks the file (every kernel, or the one named).
pub fn check(
    src: &Source,
    kernel: Option<&str>,
    defines: &[(String, i64)],
) -> Result<Vec<CheckedKernel>, DriverError> {
    frontend::check_file(&src.text, defines, kernel).map_err(|diags| DriverError::Source {
        rendered: diagnostic::render(&diags, &src.name, &src.text, false),
    })
}

/// Picks the kernel to compile: the named one, or the only one of the file.
pub fn pick_kernel(src: &Source, kernel: Option<&str>) -> Result<Option<String>, DriverError> {
    if kernel.is_some() {
        return Ok(kernel.map(str::to_string));
    }
    let names = frontend::kernel_names(&src.text);
    if names.len() > 1 {
        return Err(DriverError::Usage(format!(
            "{} holds {} kernels; pick one with -k: {}",
            src.name,
            names.len(),
            names.join(", ")
        )));
    }
    // With zero or one kernel, the checker reports what is wrong, if anything.
    Ok(None)
}

/// Options of a compilation.
#[derive(Clone, Debug, Default)]
pub struct CompileOptions {
    pub kernel: Option<String>,
    pub defines: Vec<(String, i64)>,
    pub passes: PassOptions,
    /// `--dump-after PASS|all`.
    pub dump_after: Option<String>,
    /// `--verify-ir`: run the verifier after every pass. Debug builds (and so the tests)
    /// always do; release builds skip it unless asked, since on large kernels checking the
    /// tile IR for races costs as much as the whole pipeline.
    pub verify_ir: bool,
}

/// Compiles one kernel through the whole pipeline. IR dumps requested by `--dump-after`
/// are appended to `dumps` (even when a later pass fails, so the dump shows the last good IR).
pub fn compile(
    src: &Source,
    options: &CompileOptions,
    dumps: &mut String,
) -> Result<Compilation, DriverError> {
    check_pass_names(options)?;
    let kernel = pick_kernel(src, options.kernel.as_deref())?;
    let kernels = check(src, kernel.as_deref(), &options.defines)?;
    let Some(checked) = kernels.first() else {
        return Err(DriverError::Input(format!("{} holds no kernel", src.name)));
    };
    let func = ir::lower(checked);
    ir::verify(&func, passes::LOWER)?;
    check_hbm_size(&func)?;
    if let Some((span, what)) = passes::support::unsupported(&func) {
        let (line, col) = line_col(&src.text, span.start as usize);
        return Err(DriverError::Input(format!(
            "{}:{line}:{col}: {what} (`tessera check` accepts the kernel, and the reference \
             evaluator computes it)",
            src.name
        )));
    }
    if let Some((span, what)) = passes::conv::unsupported(&func) {
        let (line, col) = line_col(&src.text, span.start as usize);
        return Err(DriverError::Input(format!(
            "{}:{line}:{col}: {what} does not run on the machine in this version (`tessera \
             check` accepts the kernel, and the reference evaluator computes it)",
            src.name
        )));
    }
    let wants = |name: &str| {
        options
            .dump_after
            .as_deref()
            .is_some_and(|d| d == "all" || d == name)
    };
    if wants(passes::LOWER) {
        dumps.push_str(&format!("; after {}\n{func}", passes::LOWER));
    }
    let mut c = Compilation::new(func, options.passes.clone());
    c.source = Some((src.name.clone(), src.text.clone()));
    passes::run_pipeline(&mut c, options.verify_ir, &mut |name, outcome, c| {
        if wants(name) {
            match outcome {
                passes::Outcome::Changed => {
                    dumps.push_str(&format!("; after {name}\n{}", c.current_text()))
                }
                passes::Outcome::Unchanged => {
                    dumps.push_str(&format!("; after {name}\n(unchanged)\n"))
                }
                passes::Outcome::Disabled => {
                    dumps.push_str(&format!("; after {name}\n(disabled)\n"))
                }
            }
        }
    })?;
    Ok(c)
}

/// The SHA3-256 digest of a source text, which a program's origin records.
///
/// SHA3-256 (the `sha3` crate of RustCrypto, which the build already uses through lalrpop)
/// rather than a hash of our own or `std`'s `DefaultHasher`: its output is fixed by a
/// standard, so a digest written by one build is checked by every later one, and no edit
/// of a source file goes unnoticed by chance.
pub fn source_hash(text: &str) -> [u8; isa::SOURCE_HASH_BYTES] {
    use sha3::Digest;
    sha3::Sha3_256::digest(text.as_bytes()).into()
}

/// Records in the compiled program where it came from (`isa::Origin`): the source file's
/// path (absolute when it resolves), the digest of its text, the kernel compiled, the `-D`
/// values and the options that change the program. `run PROGRAM.tbin --check` reads it.
pub fn record_origin(
    c: &mut Compilation,
    path: &Path,
    src: &Source,
    options: &CompileOptions,
) -> Result<(), DriverError> {
    let resolved = std::fs::canonicalize(path)
        .or_else(|_| std::path::absolute(path))
        .unwrap_or_else(|_| path.to_path_buf());
    let origin = isa::Origin {
        path: resolved.to_string_lossy().into_owned(),
        source_sha3: source_hash(&src.text),
        kernel: c.tensor.name.clone(),
        defines: options.defines.clone(),
        strict_dtypes: options.passes.strict_dtypes,
        disabled_passes: options.passes.disabled.clone(),
    };
    let program = c.program.as_mut().ok_or_else(|| {
        DriverError::Internal("the pipeline produced no program (is the backend missing?)".into())
    })?;
    program.origin = Some(origin);
    Ok(())
}

/// Decodes a `.tbin` for a run that needs its kernel (`--check`, `--reference`) and finds
/// that kernel again through the program's origin: reads the recorded source file, checks
/// that its digest is the recorded one, and checks and lowers the recorded kernel with the
/// recorded `-D` values. Returns a compilation holding that kernel's tensor IR and the
/// decoded program (which is also checked to be loadable under `options`).
///
/// A program without an origin, a source file that cannot be read or whose text changed,
/// and a kernel whose parameters or results differ from the program's are errors of the
/// user's inputs (exit 1), never a check against some other kernel.
pub fn program_with_source(
    tbin: &Path,
    bytes: &[u8],
    options: &RunOptions,
) -> Result<Compilation, DriverError> {
    let in_file = |m: String| DriverError::Input(format!("{}: {m}", tbin.display()));
    let program = isa::decode_program(bytes).map_err(|e| in_file(e.to_string()))?;
    check_loadable(&program, options).map_err(|e| match e {
        DriverError::Input(m) => in_file(m),
        other => other,
    })?;
    let Some(origin) = program.origin.clone() else {
        return Err(in_file(
            "the program records no kernel source (it was assembled, or compiled before .tbin \
             format 2), so --check and --reference have no kernel to compare with; run them \
             on the kernel's .tsr file instead"
                .into(),
        ));
    };
    let path = Path::new(&origin.path);
    let src = read_source(path).map_err(|e| {
        let reason = match e {
            DriverError::Input(m) => m,
            other => other.to_string(),
        };
        in_file(format!(
            "it was compiled from {}, which cannot be read ({reason}); --check and --reference \
             need that source",
            origin.path
        ))
    })?;
    if source_hash(&src.text) != origin.source_sha3 {
        return Err(in_file(format!(
            "its source {} has changed since it was compiled (the SHA3-256 of its text \
             differs), so it is not the kernel the program runs; recompile the program, or \
             run --check on the source",
            origin.path
        )));
    }
    let kernels = check(&src, Some(&origin.kernel), &origin.defines)?;
    let Some(checked) = kernels.first() else {
        return Err(in_file(format!(
            "its source {} holds no kernel `{}`",
            origin.path, origin.kernel
        )));
    };
    let func = ir::lower(checked);
    ir::verify(&func, passes::LOWER)?;
    let describe = |specs: &[ParamSpec]| -> Vec<(String, Dtype, Vec<u64>)> {
        specs
            .iter()
            .map(|p| (p.name.clone(), p.dtype, p.shape.clone()))
            .collect()
    };
    let results: Vec<_> = func
        .results
        .iter()
        .map(|&v| (func.ty(v).dtype, func.ty(v).shape.clone()))
        .collect();
    let outputs: Vec<_> = program
        .tensors_with_role(isa::Role::Output)
        .map(|t| (t.dtype, t.shape.clone()))
        .collect();
    if describe(&params_of(&func)) != describe(&program_params(&program)) || results != outputs {
        return Err(in_file(format!(
            "its parameters or results differ from those of kernel `{}` in {}; recompile the \
             program",
            origin.kernel, origin.path
        )));
    }
    // The kernel is compiled again with the recorded options, so that the reference sees
    // the tensor IR and the grouping the program was made from (the casts a flash-lowered
    // attention relaxes, `Grouping::relaxed_casts`); the program run is the decoded one.
    let recompile = CompileOptions {
        kernel: Some(origin.kernel.clone()),
        defines: origin.defines.clone(),
        passes: PassOptions {
            strict_dtypes: origin.strict_dtypes,
            disabled: origin.disabled_passes.clone(),
            ..PassOptions::default()
        },
        dump_after: None,
        verify_ir: false,
    };
    let mut c = compile(&src, &recompile, &mut String::new())?;
    c.program = Some(program);
    Ok(c)
}

/// The note `run PROGRAM.tbin --check` prints on stderr: which kernel, of which source and
/// with which sizes, the reference evaluates (`None` for a program without an origin).
pub fn origin_note(program: &isa::Program) -> Option<String> {
    let origin = program.origin.as_ref()?;
    let mut note = format!(
        "note: the reference is kernel `{}` of {}",
        origin.kernel, origin.path
    );
    if !origin.defines.is_empty() {
        let defines: Vec<_> = origin
            .defines
            .iter()
            .map(|(name, value)| format!("-D {name}={value}"))
            .collect();
        note.push_str(&format!(" with {}", defines.join(" ")));
    }
    note.push_str(", as the program records");
    Some(note)
}

/// The most HBM a kernel may need, in bytes: the interpreter's limit
/// (`runtime::Limits::max_hbm_bytes`, 16 GiB).
pub fn max_hbm_bytes() -> u64 {
    runtime::Limits::default().max_hbm_bytes
}

/// Refuses, before any pass runs or anything is allocated, a kernel whose tensors cannot
/// fit the machine's HBM: its inputs and outputs together, or any one value of it, needing
/// more than [`max_hbm_bytes`]. The message gives the size needed.
/// The 1-based line and column of byte `at` of `text`.
fn line_col(text: &str, at: usize) -> (usize, usize) {
    let head = text.get(..at.min(text.len())).unwrap_or(text);
    let line = head.matches('\n').count() + 1;
    let col = head.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, col)
}

fn check_hbm_size(func: &Function) -> Result<(), DriverError> {
    let limit = max_hbm_bytes() as u128;
    let bytes = |v: ir::Value| -> u128 {
        let ty = func.ty(v);
        ty.shape.iter().fold(ty.dtype.size() as u128, |acc, &d| {
            acc.saturating_mul(d as u128)
        })
    };
    let too_big = |what: String, needed: u128| {
        DriverError::Input(format!(
            "kernel `{}` needs {needed} bytes of HBM for {what}, more than the machine's {limit} \
             bytes",
            func.name
        ))
    };
    let io_values = func
        .params
        .iter()
        .map(|(name, v)| (format!("`{name}` ({})", func.ty(*v)), bytes(*v)))
        .chain(
            func.results
                .iter()
                .enumerate()
                .map(|(i, v)| (format!("result {i} ({})", func.ty(*v)), bytes(*v))),
        );
    let mut io: u128 = 0;
    let mut largest: Option<(String, u128)> = None;
    for (name, b) in io_values {
        io = io.saturating_add(b);
        if !matches!(&largest, Some((_, l)) if *l >= b) {
            largest = Some((name, b));
        }
    }
    if io > limit {
        let what = match largest {
            Some((name, _)) => format!("its inputs and outputs (the largest is {name})"),
            None => "its inputs and outputs".to_string(),
        };
        return Err(too_big(what, io));
    }
    for &inst in &func.layout {
        let v = func.insts[inst].result;
        let b = bytes(v);
        if b > limit {
            return Err(too_big(format!("an intermediate {}", func.ty(v)), b));
        }
    }
    Ok(())
}

/// Checks the pass names of `--dump-after` and `--disable-pass`.
fn check_pass_names(options: &CompileOptions) -> Result<(), DriverError> {
    if let Some(d) = &options.dump_after {
        if d != "all" && d != passes::LOWER && passes::find(d).is_none() {
            let names: Vec<_> = std::iter::once(passes::LOWER)
                .chain(passes::PIPELINE.iter().map(|p| p.name))
                .collect();
            return Err(DriverError::Usage(format!(
                "--dump-after: no pass is called `{d}`; the passes are: all, {}",
                names.join(", ")
            )));
        }
    }
    for d in &options.passes.disabled {
        match passes::find(d) {
            Some(p) if p.optimising => {}
            Some(_) => {
                return Err(DriverError::Usage(format!(
                    "--disable-pass: `{d}` is needed for correctness and cannot be disabled"
                )))
            }
            None => {
                return Err(DriverError::Usage(format!(
                    "--disable-pass: no pass is called `{d}` (see --list-passes)"
                )))
            }
        }
    }
    Ok(())
}

/// Parses `NAME=PATH` of `-i`.
pub fn parse_input_flag(s: &str) -> Result<(String, PathBuf), DriverError> {
    let (name, path) = s
        .split_once('=')
        .ok_or_else(|| DriverError::Usage(format!("-i expects NAME=PATH.npy, found `{s}`")))?;
    Ok((name.to_string(), PathBuf::from(path)))
}

/// Parses every `-D NAME=INT`; a NAME given twice is a usage error.
pub fn parse_defines(flags: &[String]) -> Result<Vec<(String, i64)>, DriverError> {
    parse_named(flags, parse_define, "-D", "size")
}

/// Parses every `-i NAME=PATH.npy`; a NAME given twice is a usage error.
pub fn parse_input_flags(flags: &[String]) -> Result<Vec<(String, PathBuf)>, DriverError> {
    parse_named(flags, parse_input_flag, "-i", "input")
}

/// Parses each of `flags` with `parse` into a name and a value; a name given twice is a
/// usage error (`-D N is given twice; give each size once`).
fn parse_named<T>(
    flags: &[String],
    parse: fn(&str) -> Result<(String, T), DriverError>,
    flag: &str,
    what: &str,
) -> Result<Vec<(String, T)>, DriverError> {
    let mut out: Vec<(String, T)> = Vec::with_capacity(flags.len());
    for f in flags {
        let (name, value) = parse(f)?;
        if out.iter().any(|(n, _)| n == &name) {
            return Err(DriverError::Usage(format!(
                "{flag} {name} is given twice; give each {what} once"
            )));
        }
        out.push((name, value));
    }
    Ok(out)
}

/// The file `run` writes result `index` to: `DIR/out0.npy`, `DIR/out1.npy`, ... (README.md).
pub fn output_path(out_dir: &Path, index: usize) -> PathBuf {
    out_dir.join(format!("out{index}.npy"))
}

/// One kernel parameter as the runner sees it.
#[derive(Clone, Debug)]
pub struct ParamSpec {
    pub name: String,
    pub dtype: Dtype,
    pub shape: Vec<u64>,
    /// For an `i32` parameter that a `take` uses as indices: the length of the shortest
    /// axis it indexes, so that `--random` draws valid indices, in `[0, n)`.
    pub index_bound: Option<u64>,
}

/// Reads the inputs of a run: each parameter from its `-i` file, or from the reproducible
/// generator of `--random SEED` (written to `DIR/NAME.npy` so the run can be repeated).
/// A random input whose file would be one of the `results` result files (a parameter
/// named `out0`) is not written, since the result would overwrite it; a line saying so is
/// added to `notes`, for stderr.
pub fn gather_inputs(
    params: &[ParamSpec],
    given: &[(String, PathBuf)],
    random: Option<u64>,
    out_dir: &Path,
    results: usize,
    notes: &mut Vec<String>,
) -> Result<Vec<HostTensor>, DriverError> {
    check_input_names(params, given)?;
    let mut inputs = Vec::with_capacity(params.len());
    for index in 0..params.len() {
        inputs.push(gather_input(
            params, index, given, random, out_dir, results, notes,
        )?);
    }
    Ok(inputs)
}

/// Checks that every `-i` input names a parameter, before any input is read or made.
pub fn check_input_names(
    params: &[ParamSpec],
    given: &[(String, PathBuf)],
) -> Result<(), DriverError> {
    for (name, _) in given {
        if !params.iter().any(|p| &p.name == name) {
            return Err(DriverError::Input(format!(
                "-i {name}: {}",
                no_parameter_message(params, name)
            )));
        }
    }
    Ok(())
}

/// The input of parameter `index`, as [`gather_inputs`] reads or makes each (the caller
/// checked the `-i` names with [`check_input_names`]); one at a time, so that a run can
/// bind each into the machine and let it go before the next is made.
pub fn gather_input(
    params: &[ParamSpec],
    index: usize,
    given: &[(String, PathBuf)],
    random: Option<u64>,
    out_dir: &Path,
    results: usize,
    notes: &mut Vec<String>,
) -> Result<HostTensor, DriverError> {
    let p = &params[index];
    Ok(match given.iter().find(|(n, _)| n == &p.name) {
        Some((_, path)) => load_input(p, path)?,
        None => match random {
            Some(seed) => {
                let t = random_tensor(p, seed, index as u64);
                let path = out_dir.join(format!("{}.npy", p.name));
                match (0..results).find(|&i| output_path(out_dir, i) == path) {
                    Some(i) => notes.push(format!(
                        "note: the random input `{}` is not written to {}: result {i} is \
                         written there",
                        p.name,
                        path.display()
                    )),
                    None => write_output(&path, &t)?,
                }
                t
            }
            None => {
                return Err(DriverError::Input(format!(
                    "no input for parameter `{}` ({}); give it with -i {}=PATH.npy or use --random SEED",
                    p.name,
                    type_text(p.dtype, &p.shape),
                    p.name
                )))
            }
        },
    })
}

/// The message for an input given for a parameter the kernel does not have: `the kernel
/// has no parameter `y` (its parameters: x)`. The CLI prefixes `-i NAME: `; the Python
/// package raises it as it is.
pub fn no_parameter_message(params: &[ParamSpec], name: &str) -> String {
    let names: Vec<_> = params.iter().map(|p| p.name.as_str()).collect();
    format!(
        "the kernel has no parameter `{name}` (its parameters: {})",
        names.join(", ")
    )
}

/// The message for an input whose shape is not its parameter's: `input `x` has shape (2,
/// 3), the parameter is f32[4, 4]`; `found` is the shape as NumPy prints it. The CLI
/// prefixes the file's path.
pub fn shape_message(p: &ParamSpec, found: &str) -> String {
    format!(
        "input `{}` has shape {found}, the parameter is {}",
        p.name,
        type_text(p.dtype, &p.shape)
    )
}

/// A shape as NumPy prints it: `(2, 3)`, `(5,)` or `()`.
pub fn shape_repr(shape: &[u64]) -> String {
    match shape {
        [d] => format!("({d},)"),
        _ => {
            let dims: Vec<_> = shape.iter().map(|d| d.to_string()).collect();
            format!("({})", dims.join(", "))
        }
    }
}

/// `f32[128, 64]`, as messages print types.
pub fn type_text(dtype: Dtype, shape: &[u64]) -> String {
    let dims: Vec<_> = shape.iter().map(|d| d.to_string()).collect();
    format!("{dtype}[{}]", dims.join(", "))
}

/// Loads one `.npy` input and converts it to the parameter's dtype (round to nearest even;
/// untyped 1- and 2-byte data, as ml_dtypes writes bf16 and FP8, is taken bit for bit).
/// The file is read as a stream, by the size its header declares, and its shape is checked
/// before its data is read, so that an endless or huge input never hangs the run.
fn load_input(p: &ParamSpec, path: &Path) -> Result<HostTensor, DriverError> {
    let (file, len) = open_file(path)?;
    let in_file = |e: npy::NpyError| DriverError::Input(format!("{}: {e}", path.display()));
    let reader = npy::NpyReader::new(file, len).map_err(in_file)?;
    if reader.shape() != p.shape.as_slice() {
        return Err(DriverError::Input(format!(
            "{}: {}",
            path.display(),
            shape_message(p, &reader.shape_string())
        )));
    }
    // Untyped (void) data is read as the bits of the parameter's dtype, so it must be as wide.
    reader.check_dtype(p.dtype).map_err(|e| {
        let ty = type_text(p.dtype, &p.shape);
        DriverError::Input(format!(
            "{}: input `{}` ({ty}): {e}",
            path.display(),
            p.name
        ))
    })?;
    let array = reader.read_data().map_err(in_file)?;
    if p.dtype == Dtype::I32 {
        // Integers are read exactly; a value outside the i32 range is named.
        let ints = array.to_i32().map_err(|e| {
            DriverError::Input(format!("{}: input `{}`: {e}", path.display(), p.name))
        })?;
        return Ok(HostTensor::from_i32(&p.shape, ints));
    }
    let data = array.round_to(p.dtype).map_err(in_file)?;
    Ok(HostTensor {
        dtype: p.dtype,
        shape: p.shape.clone(),
        data,
        ints: Vec::new(),
    })
}

/// Reproducible input values, uniform in [-1, 1), rounded to the dtype. The stream depends
/// on the seed and the parameter's position.
///
/// The values are made in host memory, so the shape must be one that fits it, as every
/// compiled kernel's parameters do (the compiler bounds them by HBM). A shape too large to
/// allocate fails as any allocation does (a product of dims that overflows saturates
/// first, so that is the failure, not an arithmetic overflow).
pub fn random_tensor(p: &ParamSpec, seed: u64, index: u64) -> HostTensor {
    let n = p
        .shape
        .iter()
        .fold(1u64, |n, &d| n.saturating_mul(d))
        .try_into()
        .unwrap_or(usize::MAX);
    let mut state = seed ^ index.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ 0xD1B5_4A32_D192_ED03;
    let mut next = move || {
        // SplitMix64.
        state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    };
    match p.dtype {
        // Indices of a `take` in [0, n); other integers in [-100, 100].
        Dtype::I32 => {
            let (low, count) = match p.index_bound {
                Some(n) => (0i64, n.max(1)),
                None => (-100i64, 201),
            };
            let ints = (0..n)
                .map(|_| (low + ((next() >> 11) % count) as i64) as i32)
                .collect();
            return HostTensor::from_i32(&p.shape, ints);
        }
        // Fair coin flips.
        Dtype::Bool => {
            let data = (0..n)
                .map(|_| f32::from(u8::from(next() >> 63 == 1)))
                .collect();
            return HostTensor {
                dtype: p.dtype,
                shape: p.shape.clone(),
                data,
                ints: Vec::new(),
            };
        }
        _ => {}
    }
    let data = (0..n)
        .map(|_| {
            let z = next();
            let unit = (z >> 40) as f32 / (1u64 << 24) as f32;
            numeric::round(p.dtype, unit * 2.0 - 1.0)
        })
        .collect();
    HostTensor {
        dtype: p.dtype,
        shape: p.shape.clone(),
        data,
        ints: Vec::new(),
    }
}

/// Writes a tensor as a little-endian float32 `.npy` (a `bool` one as a bool `.npy`),
/// atomically.
pub fn write_output(path: &Path, t: &HostTensor) -> Result<(), DriverError> {
    // `bool` values are written as a bool `.npy`, `i32` ones as int32, exactly.
    let kind = match t.dtype {
        Dtype::Bool => npy::NpyOut::Bool,
        Dtype::I32 => {
            return npy::write_npy_i32_file(path, &t.shape, &t.ints)
                .map_err(|e| DriverError::Input(format!("cannot write {}: {e}", path.display())))
        }
        _ => npy::NpyOut::F32,
    };
    npy::write_npy_file_as(path, &t.shape, &t.data, kind)
        .map_err(|e| DriverError::Input(format!("cannot write {}: {e}", path.display())))
}

/// The length of the shortest axis that a `take` indexes with the parameter `v`, if any:
/// directly, or through instructions that only move its elements (slices, transposes,
/// reshapes, broadcasts, `concat`, `pad` and `take` of it), so that `--random` draws the
/// indices of `take(t, ids[::2])` in range too.
fn index_bound(func: &Function, v: ir::Value) -> Option<u64> {
    let mut moved = vec![v];
    let mut bound: Option<u64> = None;
    for &inst in &func.layout {
        let data = &func.insts[inst];
        match data.op {
            ir::TOp::Take { axis } if moved.contains(&data.args[1]) => {
                if let Some(&n) = func.ty(data.args[0]).shape.get(axis) {
                    bound = Some(bound.map_or(n, |b| b.min(n)));
                }
            }
            ir::TOp::Slice(_)
            | ir::TOp::Transpose(_)
            | ir::TOp::Reshape
            | ir::TOp::BroadcastTo
            | ir::TOp::Concat(_)
            | ir::TOp::Pad { .. }
            | ir::TOp::Take { .. }
                if moved.contains(&data.args[0])
                    || matches!(data.op, ir::TOp::Concat(_))
                        && data.args.iter().any(|a| moved.contains(a)) =>
            {
                moved.push(data.result);
            }
            _ => {}
        }
    }
    bound
}

/// The parameters of a tensor-IR function.
pub fn params_of(func: &Function) -> Vec<ParamSpec> {
    func.params
        .iter()
        .map(|(name, v)| ParamSpec {
            name: name.clone(),
            dtype: func.ty(*v).dtype,
            shape: func.ty(*v).shape.clone(),
            index_bound: index_bound(func, *v),
        })
        .collect()
}

/// Each result of the compiled kernel on `inputs` by the reference evaluator, with the
/// error bound `--check` allows per element: the bound `reference::bound` propagates under
/// the default policy (given the casts the compilation does not reproduce), and zero under
/// `--dtype-policy strict`, which promises the reference's bits.
pub fn expected(
    c: &Compilation,
    inputs: &[HostTensor],
) -> Result<Vec<(HostTensor, Vec<f32>)>, DriverError> {
    let (func, relaxed) = c.reference();
    if c.options.strict_dtypes {
        let want = crate::reference::evaluate(func, inputs).map_err(|e| reference_error(c, e))?;
        return Ok(exact(want));
    }
    crate::reference::evaluate_bounded(func, inputs, &relaxed).map_err(|e| reference_error(c, e))
}

/// Reference results with a zero bound for every element: under `--dtype-policy strict`
/// the bounds are not computed at all (the values are the same bits either way).
fn exact(want: Vec<HostTensor>) -> Vec<(HostTensor, Vec<f32>)> {
    want.into_iter()
        .map(|t| {
            let n = t.elems();
            (t, vec![0.0; n])
        })
        .collect()
}

/// A reference evaluator's error as the driver reports it: an index out of range of
/// computed indices names the `take`'s source location, as the machine's message does.
pub fn reference_error(c: &Compilation, e: crate::reference::EvalError) -> DriverError {
    if let crate::reference::EvalError::TakeIndex {
        computed_at: Some(span),
        ref operand,
        ..
    } = e
    {
        if let Some((name, text)) = &c.source {
            let (line, col) = line_col(text, span.start as usize);
            let located = computed_indices_at(&format!("{name}:{line}:{col}"));
            let message = e.to_string().replacen(operand.as_str(), &located, 1);
            return DriverError::Input(message);
        }
    }
    DriverError::Input(e.to_string())
}

/// How the run-time errors name the indices of the `take` at `place` when the kernel
/// computes them.
fn computed_indices_at(place: &str) -> String {
    crate::reference::COMPUTED_INDICES.replacen("`take`", &format!("`take` at {place}"), 1)
}

/// Compares every output of the compiled kernel with the reference (`expected`) and
/// returns one comparison per output, in result order.
pub fn check_outputs(
    c: &Compilation,
    inputs: &[HostTensor],
    outputs: &[HostTensor],
) -> Result<Vec<Comparison>, DriverError> {
    let mut want = expected(c, inputs)?;
    compare_outputs(c, &mut want, outputs)
}

/// Compares each output with the reference's value and bound (zero under strict).
fn compare_outputs(
    c: &Compilation,
    want: &mut [(HostTensor, Vec<f32>)],
    outputs: &[HostTensor],
) -> Result<Vec<Comparison>, DriverError> {
    if c.options.strict_dtypes {
        for (_, b) in want.iter_mut() {
            b.fill(0.0);
        }
    }
    if want.len() != outputs.len() {
        return Err(DriverError::Internal(format!(
            "the program has {} outputs, the kernel {}",
            outputs.len(),
            want.len()
        )));
    }
    for (i, (got, (w, _))) in outputs.iter().zip(want.iter()).enumerate() {
        // A length difference is never a numeric error: it is a bug on one side, and an
        // element-wise comparison would pass over the missing elements.
        let elems = w.shape.iter().product::<u64>() as usize;
        if got.elems() != elems || w.elems() != elems || got.dtype != w.dtype {
            return Err(DriverError::Internal(format!(
                "output {i} is `{}` with {} elements on the machine, but the reference gives `{}` with {} elements",
                got.dtype,
                got.elems(),
                w.dtype,
                w.elems()
            )));
        }
    }
    Ok(outputs
        .iter()
        .zip(want.iter())
        .map(|(got, (w, bound))| {
            if got.dtype == Dtype::I32 || w.dtype == Dtype::I32 {
                compare_i32(&got.ints, &w.ints)
            } else {
                compare(&got.data, &w.data, bound)
            }
        })
        .collect())
}

/// How far one output is from the reference.
#[derive(Clone, Debug, PartialEq)]
pub struct Comparison {
    /// The largest absolute error; NaN when some element is NaN on one side only, infinite
    /// when an infinity meets another value.
    pub max_abs: f64,
    /// The largest relative error (over elements whose reference is not 0), NaN and
    /// infinite as `max_abs` is.
    pub max_rel: f64,
    /// Elements outside their allowed error (NaN/inf mismatches count).
    pub bad: usize,
    /// The first element outside its allowed error: index, got, want, allowed error.
    pub first_bad: Option<(usize, f32, f32, f32)>,
    /// The element whose error is the largest fraction of its allowed error: index, error,
    /// allowed error. None when every element matches exactly.
    pub worst: Option<(usize, f64, f32)>,
    /// Elements whose reference value is finite but whose allowed error is not: the error
    /// analysis of the default policy cannot bound them (an ill-conditioned step, such as a
    /// softmax of scores whose own bounds are large), so any value passes there. `line`
    /// says so, rather than let such a comparison look like a check.
    pub unbounded: usize,
}

impl Comparison {
    /// The line `run --check` prints for output `index`, e.g. `out0: max abs error
    /// 1.192e-7, max rel error 2.384e-7; worst out0[5]: error 1.192e-7 of the allowed
    /// 4.768e-7 (0.25)` (then `, N elements outside the allowed error` if any).
    pub fn line(&self, index: usize) -> String {
        let mut line = format!(
            "out{index}: max abs error {:.3e}, max rel error {:.3e}",
            self.max_abs, self.max_rel
        );
        match self.worst {
            Some((at, err, allowed)) => line.push_str(&format!(
                "; worst out{index}[{at}]: error {err:.3e} of the allowed {allowed:.3e} ({})",
                fraction(err, allowed as f64)
            )),
            None => line.push_str("; every element exact"),
        }
        if self.bad > 0 {
            line.push_str(&format!(
                ", {} elements outside the allowed error",
                self.bad
            ));
        }
        if self.unbounded > 0 {
            line.push_str(&format!(
                "; note: {} of its elements have no finite error bound under this dtype policy, so they are not checked (`--dtype-policy strict` compares every element bit for bit)",
                self.unbounded
            ));
        }
        line
    }

    /// The message for the first element outside its allowed error, if any.
    pub fn mismatch(&self, index: usize) -> Option<String> {
        self.first_bad.map(|(at, g, w, allowed)| {
            format!("out{index}[{at}] is {g}, the reference says {w} (allowed error {allowed:.3e})")
        })
    }
}

/// `err / allowed` for printing: `0.31`, or `exact only` when nothing was allowed.
fn fraction(err: f64, allowed: f64) -> String {
    if allowed > 0.0 {
        format!("{:.2}", err / allowed)
    } else if err == 0.0 {
        "0".to_string()
    } else {
        "none was allowed".to_string()
    }
}

/// The larger of two errors, where NaN (an element NaN on one side only) beats everything.
fn worse(a: f64, b: f64) -> f64 {
    if a.is_nan() || b.is_nan() {
        f64::NAN
    } else {
        a.max(b)
    }
}

/// Compares an output with the reference, each element within its own allowed error
/// (`bound`, from `expected`; a bound shorter than the data allows nothing past its end).
/// NaN must meet NaN and infinities the same infinity; any other meeting with NaN makes
/// both maxima NaN, and with an infinity makes them infinite, so that the printed maxima
/// never hide a mismatch.
pub fn compare(got: &[f32], want: &[f32], bound: &[f32]) -> Comparison {
    let mut c = Comparison {
        max_abs: 0.0,
        max_rel: 0.0,
        bad: 0,
        first_bad: None,
        worst: None,
        unbounded: 0,
    };
    let mut worst_ratio = -1.0f64;
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        let allowed = bound.get(i).copied().unwrap_or(0.0);
        if w.is_finite() && !allowed.is_finite() {
            c.unbounded += 1;
        }
        let (abs, rel, ok) = if w.is_nan() || g.is_nan() || w.is_infinite() || g.is_infinite() {
            if (w.is_nan() && g.is_nan()) || g == w {
                (0.0, 0.0, true)
            } else if w.is_nan() || g.is_nan() {
                (f64::NAN, f64::NAN, false)
            } else {
                (f64::INFINITY, f64::INFINITY, false)
            }
        } else {
            let abs = (g as f64 - w as f64).abs();
            let rel = abs / (w as f64).abs().max(f64::MIN_POSITIVE);
            (abs, rel, abs <= allowed as f64)
        };
        c.max_abs = worse(c.max_abs, abs);
        if w != 0.0 || rel.is_nan() {
            c.max_rel = worse(c.max_rel, rel);
        }
        if abs != 0.0 {
            let ratio = if abs.is_nan() || allowed == 0.0 {
                f64::INFINITY
            } else {
                abs / allowed as f64
            };
            if ratio > worst_ratio {
                worst_ratio = ratio;
                c.worst = Some((i, abs, allowed));
            }
        }
        if !ok {
            c.bad += 1;
            c.first_bad.get_or_insert((i, g, w, allowed));
        }
    }
    if got.len() != want.len() {
        c.bad += got.len().abs_diff(want.len());
    }
    c
}

/// Compares an `i32` output with the reference: integers must be equal, whatever the
/// dtype policy (the integer datapath is exact). Errors are the integer differences.
pub fn compare_i32(got: &[i32], want: &[i32]) -> Comparison {
    let mut c = Comparison {
        max_abs: 0.0,
        max_rel: 0.0,
        bad: 0,
        first_bad: None,
        worst: None,
        unbounded: 0,
    };
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        if g == w {
            continue;
        }
        let abs = (i64::from(g) - i64::from(w)).abs() as f64;
        c.max_abs = c.max_abs.max(abs);
        if w != 0 {
            c.max_rel = c.max_rel.max(abs / f64::from(w).abs());
        }
        if c.worst.is_none_or(|(_, e, _)| abs > e) {
            c.worst = Some((i, abs, 0.0));
        }
        c.bad += 1;
        c.first_bad.get_or_insert((i, g as f32, w as f32, 0.0));
    }
    c.bad += got.len().abs_diff(want.len());
    c
}

/// The program a compilation produced.
pub fn program_of(c: &Compilation) -> Result<&isa::Program, DriverError> {
    c.program.as_ref().ok_or_else(|| {
        DriverError::Internal("the pipeline produced no program (is the backend missing?)".into())
    })
}

/// Options of a run on the interpreter.
#[derive(Clone, Debug)]
pub struct RunOptions {
    /// The interpreter's debug checks (`runtime::MachineConfig::with_debug_checks`):
    /// reads of never-written SBUF/PSUM bytes, races between engines, broken PSUM
    /// accumulation groups. Default: [`debug_checks_default`].
    pub debug_checks: bool,
    /// Instruction limit (default: the runtime's, 10^8).
    pub max_instructions: Option<u64>,
    /// Simulated-cycle limit (default: the runtime's, 10^12).
    pub max_cycles: Option<u64>,
}

impl Default for RunOptions {
    fn default() -> RunOptions {
        RunOptions {
            debug_checks: debug_checks_default(),
            max_instructions: None,
            max_cycles: None,
        }
    }
}

/// Whether runs do the interpreter's debug checks when not told: the environment variable
/// `TESSERA_DEBUG_CHECKS` (`1` on, `0` off) if set, else on exactly in builds with debug
/// assertions, so that every test of the compiler runs its output with them.
pub fn debug_checks_default() -> bool {
    match std::env::var("TESSERA_DEBUG_CHECKS") {
        Ok(v) => !matches!(v.trim(), "" | "0" | "false" | "off"),
        Err(_) => cfg!(debug_assertions),
    }
}

/// The machine a program runs on under `options`.
pub fn machine_config(program: &isa::Program, options: &RunOptions) -> runtime::MachineConfig {
    let mut config = runtime::MachineConfig::new(program.preset);
    if options.debug_checks {
        config = config.with_debug_checks();
    }
    if let Some(n) = options.max_instructions {
        config.limits.max_instructions = n;
    }
    if let Some(n) = options.max_cycles {
        config.limits.max_cycles = n;
    }
    config
}

/// Checks that a program can be loaded (verifier, HBM limit, tensor table) without
/// allocating anything, so that a bad `.tbin` fails before its inputs are read or made.
pub fn check_loadable(program: &isa::Program, options: &RunOptions) -> Result<(), DriverError> {
    runtime::Machine::new(machine_config(program, options))
        .load_program(program.clone())
        .map(|_| ())
        .map_err(|e| DriverError::Input(e.to_string()))
}

/// Runs a program on the interpreter with `inputs` bound to the `params` of the same
/// names; returns the outputs in result order and the timing report. Uses the default
/// [`RunOptions`].
pub fn execute(
    program: &isa::Program,
    params: &[ParamSpec],
    inputs: &[HostTensor],
) -> Result<(Vec<HostTensor>, runtime::Report), DriverError> {
    execute_with(program, params, inputs, &RunOptions::default())
}

/// [`execute`] under `options`. A `take` index out of range is reported as the reference
/// reports it (kernel, operand, value), with the faulting instruction and its source line;
/// the kernel is named when the program records its origin.
pub fn execute_with(
    program: &isa::Program,
    params: &[ParamSpec],
    inputs: &[HostTensor],
    options: &RunOptions,
) -> Result<(Vec<HostTensor>, runtime::Report), DriverError> {
    let kernel = program.origin.as_ref().map(|o| o.kernel.clone());
    run_machine(program, params, inputs, options, kernel.as_deref())
}

/// [`execute_with`] for the program of a compilation, whose kernel names the faults.
pub fn execute_compiled(
    c: &Compilation,
    params: &[ParamSpec],
    inputs: &[HostTensor],
    options: &RunOptions,
) -> Result<(Vec<HostTensor>, runtime::Report), DriverError> {
    run_machine(
        program_of(c)?,
        params,
        inputs,
        options,
        Some(&c.tensor.name),
    )
}

/// The message of an index fault of the indirect DMA, in the reference's words: `kernel
/// `k`: the operand `ids` holds the index 9, outside [-8, 8) for the axis `take` indexes`,
/// then where the machine stopped. The operand is the `i32` input whose DMA filled the
/// faulting gather's index tile (the only writer of that tile that reads an input, among
/// the DMAs of the same source location when the program has them); indices that no input
/// DMA filled are the take's computed indices, named by its location.
pub fn index_fault_message(
    program: &isa::Program,
    kernel: Option<&str>,
    e: &runtime::RuntimeError,
) -> Option<String> {
    let runtime::RuntimeError::IndexFault {
        at, index, rows, ..
    } = e
    else {
        return None;
    };
    let gather = program.streams.get(at.engine.index())?.get(at.index)?;
    let isa::Op::DmaGather { idx, .. } = &gather.op else {
        return None;
    };
    let loc_of = |engine: usize, index: usize| {
        program
            .locs
            .get(engine)
            .and_then(|s| s.get(index).copied().flatten())
    };
    let gather_loc = loc_of(at.engine.index(), at.index);
    let mut names: Vec<&str> = Vec::new();
    let located = program
        .streams
        .iter()
        .enumerate()
        .flat_map(|(e, stream)| stream.iter().enumerate().map(move |(i, inst)| (e, i, inst)));
    for (e, i, inst) in located {
        if gather_loc.is_some() && loc_of(e, i) != gather_loc {
            continue;
        }
        let isa::Op::Dma {
            dst: isa::DmaAp::Tile(t),
            src: isa::DmaAp::Hbm(h),
        } = &inst.op
        else {
            continue;
        };
        if (t.partition, t.offset) != (idx.partition, idx.offset) || h.dtype != Dtype::I32 {
            continue;
        }
        let input = program.tensors.iter().find(|d| {
            d.role == isa::Role::Input && d.offset <= h.offset && h.offset < d.offset + d.bytes()
        });
        if let Some(d) = input {
            if !names.contains(&d.name.as_str()) {
                names.push(&d.name);
            }
        }
    }
    let kernel = kernel.map_or("the program".to_string(), |k| format!("kernel `{k}`"));
    let loc = program
        .locs
        .get(at.engine.index())
        .and_then(|s| s.get(at.index).copied().flatten());
    let (place, operand) = match (loc, &program.source) {
        (Some(l), Some(f)) => {
            let at = format!("{f}:{}:{}", l.line, l.col);
            (format!(" at {at}"), computed_indices_at(&at))
        }
        (Some(l), None) => {
            let at = format!("line {}", l.line);
            (format!(" at {at}"), computed_indices_at(&at))
        }
        _ => (
            String::new(),
            crate::reference::COMPUTED_INDICES.to_string(),
        ),
    };
    // Indices loaded from one input are that operand; any others are computed by the
    // kernel (an instruction wrote them, or a copy of a view of an input into scratch).
    let operand = match names.as_slice() {
        [one] => format!("the operand `{one}`"),
        _ => operand,
    };
    Some(format!(
        "{kernel}: {operand} holds the index {index}, outside [-{rows}, {rows}) for the axis \
         `take` indexes (the machine stopped at {at}{place}, an indirect DMA that faulted \
         before reading or writing anything; no output was written)"
    ))
}

/// Runs a program on the interpreter (see [`execute_with`]).
fn run_machine(
    program: &isa::Program,
    params: &[ParamSpec],
    inputs: &[HostTensor],
    options: &RunOptions,
    kernel: Option<&str>,
) -> Result<(Vec<HostTensor>, runtime::Report), DriverError> {
    let mut loaded = load_machine(program, options)?;
    for (p, t) in params.iter().zip(inputs) {
        bind_input(&mut loaded, p, t)?;
    }
    run_loaded(&mut loaded, kernel)
}

/// Loads a program on the interpreter under `options`, for [`bind_input`] and
/// [`run_loaded`].
pub fn load_machine(
    program: &isa::Program,
    options: &RunOptions,
) -> Result<runtime::Loaded, DriverError> {
    runtime::Machine::new(machine_config(program, options))
        .load_program(program.clone())
        .map_err(|e| DriverError::Input(e.to_string()))
}

/// Binds one input into the machine's HBM (the machine holds its own bytes afterwards).
pub fn bind_input(
    loaded: &mut runtime::Loaded,
    p: &ParamSpec,
    t: &HostTensor,
) -> Result<(), DriverError> {
    let bound = if t.dtype == Dtype::I32 {
        // Integers are bound as their bytes: f32 holds them exactly only up to 2^24.
        let bytes: Vec<u8> = t.ints.iter().flat_map(|x| x.to_le_bytes()).collect();
        loaded.bind_bytes(&p.name, &bytes)
    } else {
        loaded.bind(&p.name, &t.data)
    };
    bound.map_err(|e| DriverError::Input(e.to_string()))
}

/// Runs a loaded program whose inputs are bound; returns the outputs in result order and
/// the timing report. `kernel` names an index fault.
pub fn run_loaded(
    loaded: &mut runtime::Loaded,
    kernel: Option<&str>,
) -> Result<(Vec<HostTensor>, runtime::Report), DriverError> {
    let report = loaded.run().map_err(|e| {
        DriverError::Input(
            index_fault_message(loaded.program(), kernel, &e).unwrap_or(e.to_string()),
        )
    })?;
    let mut outputs = Vec::new();
    let tensors: Vec<isa::TensorDecl> = loaded
        .program()
        .tensors_with_role(isa::Role::Output)
        .cloned()
        .collect();
    for t in &tensors {
        if t.dtype == Dtype::I32 {
            let bytes = loaded
                .read_bytes(&t.name)
                .map_err(|e| DriverError::Input(e.to_string()))?;
            let ints = bytes
                .chunks_exact(4)
                .map(|c| i32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect();
            outputs.push(HostTensor::from_i32(&t.shape, ints));
            continue;
        }
        let data = loaded
            .read(&t.name)
            .map_err(|e| DriverError::Input(e.to_string()))?;
        outputs.push(HostTensor {
            dtype: t.dtype,
            shape: t.shape.clone(),
            data,
            ints: Vec::new(),
        });
    }
    Ok((outputs, report))
}

/// The inputs of a run held once, compactly: the machine's HBM image after the run, where
/// each input's bytes are in its dtype. `--check` takes it from the machine (no copy), so
/// that the f32 copies the reference evaluator works on exist only while it needs them; the
/// image is let go once every input has been taken.
#[derive(Clone, Debug)]
pub struct PackedInputs {
    params: Vec<ParamSpec>,
    image: Vec<u8>,
    /// Each parameter's byte range in `image`; `None` once taken.
    ranges: Vec<Option<std::ops::Range<usize>>>,
}

impl PackedInputs {
    /// The bound inputs of `loaded`, one per parameter of `params`; consumes the machine.
    /// The rest of the image (outputs, already read, and scratch) is given back to the
    /// operating system at once.
    pub fn from_machine(
        loaded: runtime::Loaded,
        params: &[ParamSpec],
    ) -> Result<PackedInputs, DriverError> {
        let ranges: Vec<Option<std::ops::Range<usize>>> = params
            .iter()
            .map(|p| {
                let t = loaded
                    .tensor(&p.name)
                    .map_err(|e| DriverError::Internal(e.to_string()))?;
                Ok(Some(t.offset as usize..(t.offset + t.bytes()) as usize))
            })
            .collect::<Result<_, DriverError>>()?;
        let mut image = loaded.into_input_image();
        let mut kept: Vec<_> = ranges.iter().flatten().cloned().collect();
        kept.sort_by_key(|r| r.start);
        let mut from = 0;
        for r in kept
            .iter()
            .chain(std::iter::once(&(image.len()..image.len())))
        {
            if let Some(gap) = image.get_mut(from..r.start.max(from)) {
                release(gap);
            }
            from = from.max(r.end);
        }
        Ok(PackedInputs {
            params: params.to_vec(),
            image,
            ranges,
        })
    }

    /// Input `index` as the host tensor it was made from (every value exact in its dtype,
    /// so decoding gives it back). Taking an input twice is an internal error, reported as
    /// an empty tensor the evaluator refuses.
    pub fn take(&mut self, index: usize) -> HostTensor {
        let p = &self.params[index];
        let range = self.ranges[index].take();
        let bytes = match range.clone() {
            Some(r) => self.image.get(r).unwrap_or_default(),
            None => &[],
        };
        let t = if p.dtype == Dtype::I32 {
            let ints = bytes
                .chunks_exact(4)
                .map(|c| i32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect();
            HostTensor::from_i32(&p.shape, ints)
        } else {
            let mut data = vec![0f32; bytes.len() / p.dtype.size() as usize];
            numeric::load(p.dtype, bytes, &mut data);
            HostTensor {
                dtype: p.dtype,
                shape: p.shape.clone(),
                data,
                ints: Vec::new(),
            }
        };
        if let Some(taken) = range.and_then(|r| self.image.get_mut(r)) {
            release(taken);
        }
        if self.ranges.iter().all(|r| r.is_none()) {
            self.image = Vec::new();
        }
        t
    }
}

/// Gives the operating system back the whole pages of `bytes`, an input's range of the
/// HBM image that has been taken and is never read again, so that a run does not hold an
/// input twice (its bytes in the image and its f32 copy in the reference) while the
/// reference works. The pages stay mapped and read as zeros afterwards.
fn release(bytes: &mut [u8]) {
    #[cfg(target_os = "linux")]
    {
        const PAGE: usize = 4096;
        let start = bytes.as_mut_ptr() as usize;
        let (lo, hi) = (
            start.div_ceil(PAGE) * PAGE,
            (start + bytes.len()) / PAGE * PAGE,
        );
        if hi > lo {
            // SAFETY: `lo..hi` lies within `bytes`, memory of a live allocation that the
            // caller will not read again (its range is marked taken); MADV_DONTNEED keeps
            // the mapping valid, and the allocator may reuse it (it then reads zeros). The
            // advice is only a saving, so its result is not needed.
            unsafe {
                libc::madvise(lo as *mut libc::c_void, hi - lo, libc::MADV_DONTNEED);
            }
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = bytes;
}

/// [`check_outputs`] with the inputs taken one by one from `inputs` where the reference
/// first needs each, and dropped after its last use.
pub fn check_outputs_packed(
    c: &Compilation,
    inputs: &mut PackedInputs,
    outputs: &[HostTensor],
) -> Result<Vec<Comparison>, DriverError> {
    let (func, relaxed) = c.reference();
    let mut want = if c.options.strict_dtypes {
        exact(
            crate::reference::evaluate_lazy(func, &mut |i| inputs.take(i))
                .map_err(|e| reference_error(c, e))?,
        )
    } else {
        crate::reference::evaluate_bounded_lazy(func, &mut |i| inputs.take(i), &relaxed)
            .map_err(|e| reference_error(c, e))?
    };
    compare_outputs(c, &mut want, outputs)
}

/// Where `run --check`'s reference evaluator makes its own inputs when it runs at the same
/// time as the interpreter ([`concurrent_check`]): each parameter again from its `-i` file or
/// from `--random`'s generator, the same values the interpreter's run binds (the generator
/// depends only on the seed and the parameter's position; a file is read again). Made only
/// where that is sure to give the same values: every `-i` file a regular file that the run
/// does not write.
#[derive(Clone, Debug)]
pub struct InputSource {
    params: Vec<ParamSpec>,
    given: Vec<(String, PathBuf)>,
    random: Option<u64>,
}

impl InputSource {
    /// The source of a run's inputs, or `None` when one of them cannot be made twice: an
    /// `-i` input that is not a regular file (a named pipe is read once), or whose path is
    /// one of the `results` result files in `out_dir` (the run overwrites it).
    pub fn remakable(
        params: &[ParamSpec],
        given: &[(String, PathBuf)],
        random: Option<u64>,
        out_dir: &Path,
        results: usize,
    ) -> Option<InputSource> {
        let outputs: Vec<PathBuf> = (0..results)
            .map(|i| {
                let path = output_path(out_dir, i);
                path.canonicalize().unwrap_or(path)
            })
            .collect();
        for (_, path) in given {
            let meta = std::fs::metadata(path).ok()?;
            if !meta.is_file() {
                return None;
            }
            let real = path.canonicalize().ok()?;
            if outputs.contains(&real) {
                return None;
            }
        }
        Some(InputSource {
            params: params.to_vec(),
            given: given.to_vec(),
            random,
        })
    }

    /// Input `index`, made as [`gather_input`] makes it (without writing `--random`'s file,
    /// which the interpreter's side writes).
    pub fn make(&self, index: usize) -> Result<HostTensor, DriverError> {
        let p = &self.params[index];
        match (self.given.iter().find(|(n, _)| n == &p.name), self.random) {
            (Some((_, path)), _) => load_input(p, path),
            (None, Some(seed)) => Ok(random_tensor(p, seed, index as u64)),
            (None, None) => Err(DriverError::Input(format!(
                "no input for parameter `{}`",
                p.name
            ))),
        }
    }
}

/// Whether `run --check` may run the reference evaluator at the same time as the
/// interpreter: the reference's live tensors at their peak (`reference::estimate`), beside
/// the machine's memories (the HBM image, SBUF and PSUM), must leave the run under twice
/// the program's HBM, the memory target of docs/architecture.md. Where they would not,
/// the reference runs after the interpreter, on the machine's own copy of the inputs. The
/// environment variable `TESSERA_CHECK=sequential` asks for that order always, so that
/// tests and measurements can compare the two (`tests/sim_determinism.rs`).
pub fn concurrent_check_fits(c: &Compilation, program: &isa::Program) -> bool {
    if std::env::var("TESSERA_CHECK").is_ok_and(|v| v == "sequential") {
        return false;
    }
    let (func, _) = c.reference();
    let reference = crate::reference::estimate::peak_bytes(func, !c.options.strict_dtypes);
    let geometry = program.preset.geometry();
    let on_chip = u64::from(geometry.partitions)
        * (u64::from(geometry.sbuf_partition_bytes) + u64::from(geometry.psum_partition_bytes));
    let hbm = program.hbm_size;
    hbm.saturating_add(on_chip).saturating_add(reference) < hbm.saturating_mul(2)
}

/// The reference's results (with their bounds, zero under strict) on inputs made by
/// `source`: [`concurrent_check`]'s other thread.
pub fn expected_from(
    c: &Compilation,
    source: &InputSource,
) -> Result<Vec<(HostTensor, Vec<f32>)>, DriverError> {
    let (func, relaxed) = c.reference();
    let mut failed: Option<DriverError> = None;
    let mut input = |i: usize| match source.make(i) {
        Ok(t) => t,
        Err(e) => {
            // The evaluator refuses the empty tensor; the error reported is this one.
            failed.get_or_insert(e);
            HostTensor::from_i32(&[], Vec::new())
        }
    };
    let want = if c.options.strict_dtypes {
        crate::reference::evaluate_lazy(func, &mut input).map(exact)
    } else {
        crate::reference::evaluate_bounded_lazy(func, &mut input, &relaxed)
    };
    if let Some(e) = failed {
        return Err(e);
    }
    want.map_err(|e| reference_error(c, e))
}

/// `run --check` with the reference evaluator on a thread of its own, at the same time as
/// `interpret` (which reads or makes the inputs, binds them, runs the interpreter and
/// returns its outputs): the two share the host's cores, and the comparison waits for
/// both. The values compared are the same as in the sequential check, so the verdict is
/// too. An error of the interpreter's side is reported first.
pub fn concurrent_check(
    c: &Compilation,
    source: &InputSource,
    interpret: impl FnOnce() -> Result<Vec<HostTensor>, DriverError>,
) -> Result<Vec<Comparison>, DriverError> {
    std::thread::scope(|s| {
        let reference = std::thread::Builder::new()
            .name("tessera-reference".into())
            .spawn_scoped(s, || expected_from(c, source))
            .map_err(|e| DriverError::Internal(format!("cannot start a thread: {e}")))?;
        let ran = interpret();
        let want = reference
            .join()
            .map_err(|_| DriverError::Internal("the reference evaluator panicked".into()));
        let outputs = ran?;
        let mut want = want??;
        compare_outputs(c, &mut want, &outputs)
    })
}

/// The input parameters of a program, from its tensor table.
pub fn program_params(program: &isa::Program) -> Vec<ParamSpec> {
    program
        .tensors_with_role(isa::Role::Input)
        .map(|t| ParamSpec {
            name: t.name.clone(),
            dtype: t.dtype,
            shape: t.shape.clone(),
            index_bound: None,
        })
        .collect()
}
