//! The `tessera` command line (README.md lists the commands): flag parsing and printing only; the
//! work is done by `tessera::driver`. stdout holds only the requested output; every error
//! goes to stderr as one readable message, with the exit code README.md gives.
//!
//! Nothing here uses `print!` or `println!`, which panic when stdout fails: every write to
//! stdout goes through [`write_stdout`], which turns a failed write (a full disk,
//! `/dev/full`) into an error and exit 1, and ends quietly when the reader has gone (a
//! closed pipe, as in `tessera disasm p.tbin | head -1`).

/// mimalloc instead of the system allocator: the compiler builds and drops large vectors
/// of instructions pass after pass, and glibc's malloc returns their pages to the system
/// and faults them back in (a 4096^3 matmul compile spent a fifth of its time in page
/// faults).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use clap::{Args, Parser, Subcommand};
use std::io::{ErrorKind, IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use tessera::driver::{self, DriverError};
use tessera::passes::{self, PassOptions};
use tessera::reference;

#[derive(Parser)]
#[command(
    name = "tessera",
    version,
    about = "A tensor-kernel compiler for a Trainium-like accelerator"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Parse and type-check a kernel file; diagnostics go to stderr.
    Check {
        file: PathBuf,
        #[command(flatten)]
        kernel: KernelArgs,
    },
    /// Compile a kernel to tensor IR, tile IR, assembly or a `.tbin`.
    Compile(CompileArgs),
    /// Compile (or load a `.tbin`) and execute on the interpreter.
    Run(RunArgs),
    /// Assemble a text program into a `.tbin`.
    Asm {
        file: PathBuf,
        #[arg(short = 'o', value_name = "PROGRAM.tbin")]
        output: PathBuf,
    },
    /// Print a `.tbin` as text assembly.
    Disasm { program: PathBuf },
}

#[derive(Args)]
struct KernelArgs {
    /// The kernel to use (may be left out when the file holds one).
    #[arg(short = 'k', value_name = "KERNEL")]
    kernel: Option<String>,
    /// Override a size: `-D N=128`.
    #[arg(short = 'D', value_name = "NAME=INT")]
    defines: Vec<String>,
}

#[derive(Args)]
struct CompileArgs {
    #[arg(required_unless_present = "list_passes")]
    file: Option<PathBuf>,
    #[command(flatten)]
    kernel: KernelArgs,
    /// What to produce.
    #[arg(long, value_enum, default_value = "bin")]
    emit: Emit,
    /// Where to write it (default: stdout for text forms).
    #[arg(short = 'o', value_name = "PATH")]
    output: Option<PathBuf>,
    #[command(flatten)]
    pipeline: PipelineArgs,
    /// List the passes of the pipeline in order and exit.
    #[arg(long)]
    list_passes: bool,
    /// `strict`: every intermediate is rounded to the dtype the language gives it;
    /// `wide` (default): compiled code may keep intermediates wider (never narrower).
    #[arg(long, value_enum, default_value = "wide")]
    dtype_policy: DtypePolicy,
}

/// The flags that steer the pass pipeline. `compile` and `run` share them, so that a
/// miscompile can be bisected with the very command that shows it
/// (`tessera run k.tsr --random 1 --check --disable-pass fusion`).
#[derive(Args)]
struct PipelineArgs {
    /// Print the IR after this pass (`all`: after every pass) to stderr.
    #[arg(long, value_name = "PASS|all")]
    dump_after: Option<String>,
    /// Run the IR verifier after every pass (debug builds always do).
    #[arg(long)]
    verify_ir: bool,
    /// Switch an optimising pass off (see `tessera compile --list-passes`); repeatable.
    #[arg(long, value_name = "PASS")]
    disable_pass: Vec<String>,
}

impl PipelineArgs {
    /// Whether any of the flags was given: they apply to a source file, not to a `.tbin`.
    fn any(&self) -> bool {
        self.dump_after.is_some() || self.verify_ir || !self.disable_pass.is_empty()
    }
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum Emit {
    #[value(name = "tensor-ir")]
    TensorIr,
    #[value(name = "tile-ir")]
    TileIr,
    Asm,
    Bin,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum DtypePolicy {
    Strict,
    Wide,
}

#[derive(Args)]
struct RunArgs {
    /// A kernel source file (.tsr) or a program (.tbin).
    file: PathBuf,
    #[command(flatten)]
    kernel: KernelArgs,
    /// An input: `-i NAME=PATH.npy` (float32 or float64, converted to the parameter's dtype).
    #[arg(short = 'i', value_name = "NAME=PATH.npy")]
    inputs: Vec<String>,
    /// Fill every input not given with reproducible values (also written as DIR/NAME.npy).
    #[arg(long, value_name = "SEED")]
    random: Option<u64>,
    /// Directory for outputs out0.npy, out1.npy, ... (default: the current folder).
    #[arg(short = 'o', value_name = "DIR")]
    output: Option<PathBuf>,
    /// Also run the reference evaluator, print the largest errors, exit 3 on a mismatch.
    #[arg(long)]
    check: bool,
    /// Write the timeline as Chrome trace-event JSON (`-`: to stdout).
    #[arg(long, value_name = "PATH.json")]
    trace: Option<PathBuf>,
    /// Print the timing model's summary (and, when the kernel is far from its roofline
    /// bound, where the time went).
    #[arg(long)]
    report: bool,
    /// Write the summary as JSON (`bound_*` fields are null for a .tbin, unless `--check`
    /// finds its kernel through the origin it records);
    /// `-` writes it to stdout.
    #[arg(long, value_name = "PATH.json")]
    report_json: Option<PathBuf>,
    /// Execute the kernel on the reference evaluator instead of the interpreter.
    #[arg(long)]
    reference: bool,
    /// Turn on the interpreter's debug checks: reads of never-written SBUF/PSUM bytes,
    /// races between engines, broken PSUM accumulation groups (default: on in debug builds;
    /// the environment variable TESSERA_DEBUG_CHECKS=1 or 0 overrides).
    #[arg(long)]
    debug_checks: bool,
    /// Stop with an error after this many executed instructions (default 100000000).
    #[arg(long, value_name = "N")]
    max_instructions: Option<u64>,
    /// Stop with an error when simulated time passes this many cycles (default 10^12).
    #[arg(long, value_name = "N")]
    max_cycles: Option<u64>,
    /// As for `compile`: `strict` rounds every intermediate to the dtype the language
    /// gives it (then the results match the reference bit for bit), `wide` (default) may
    /// keep intermediates wider. Not for a .tbin, which is compiled already.
    #[arg(long, value_enum)]
    dtype_policy: Option<DtypePolicy>,
    #[command(flatten)]
    pipeline: PipelineArgs,
}

impl RunArgs {
    /// The interpreter options of the flags.
    fn run_options(&self) -> driver::RunOptions {
        let mut options = driver::RunOptions {
            max_instructions: self.max_instructions,
            max_cycles: self.max_cycles,
            ..driver::RunOptions::default()
        };
        options.debug_checks |= self.debug_checks;
        options
    }
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => return clap_exit(&e),
    };
    let result = match cli.command {
        Command::Check { file, kernel } => cmd_check(&file, &kernel),
        Command::Compile(args) => cmd_compile(&args),
        Command::Run(args) => cmd_run(&args),
        Command::Asm { file, output } => cmd_asm(&file, &output),
        Command::Disasm { program } => cmd_disasm(&program),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            let mut text = e.to_string();
            if !text.ends_with('\n') {
                text.push('\n');
            }
            write_stderr(&text);
            ExitCode::from(e.exit_code() as u8)
        }
    }
}

/// Prints what clap has to say (help, version, or a usage error) and gives its exit code;
/// help or version that cannot be written to stdout exits 1, as any failed output does.
fn clap_exit(e: &clap::Error) -> ExitCode {
    let printed = e.print().and_then(|()| std::io::stdout().flush());
    match printed {
        Err(io) if !e.use_stderr() && io.kind() != ErrorKind::BrokenPipe => {
            write_stderr(&format!("error: cannot write to stdout: {io}\n"));
            ExitCode::FAILURE
        }
        _ => ExitCode::from(e.exit_code() as u8),
    }
}

/// Writes to stderr; a failure there has nowhere to be reported, so it is ignored rather
/// than a panic as with `eprint!`.
fn write_stderr(text: &str) {
    let _ = std::io::stderr().lock().write_all(text.as_bytes());
}

fn defines(args: &KernelArgs) -> Result<Vec<(String, i64)>, DriverError> {
    driver::parse_defines(&args.defines)
}

fn cmd_check(file: &Path, args: &KernelArgs) -> Result<(), DriverError> {
    let src = driver::read_source(file)?;
    driver::check(&src, args.kernel.as_deref(), &defines(args)?)?;
    Ok(())
}

/// The compile options of `compile` and of `run` on a source file.
fn compile_options(
    kernel: &KernelArgs,
    pipeline: &PipelineArgs,
    dtype_policy: DtypePolicy,
) -> Result<driver::CompileOptions, DriverError> {
    Ok(driver::CompileOptions {
        kernel: kernel.kernel.clone(),
        defines: defines(kernel)?,
        passes: PassOptions {
            disabled: pipeline.disable_pass.clone(),
            strict_dtypes: matches!(dtype_policy, DtypePolicy::Strict),
            ..PassOptions::default()
        },
        dump_after: pipeline.dump_after.clone(),
        verify_ir: pipeline.verify_ir,
    })
}

fn cmd_compile(args: &CompileArgs) -> Result<(), DriverError> {
    if args.list_passes {
        let mut out = String::new();
        out.push_str(&format!(
            "{:<12} (always)     lowering to tensor IR\n",
            passes::LOWER
        ));
        for p in passes::PIPELINE {
            let kind = if p.optimising {
                "optimising"
            } else {
                "required"
            };
            out.push_str(&format!("{:<12} {:<12} {}\n", p.name, kind, p.summary));
        }
        return write_stdout(out.as_bytes());
    }
    let Some(file) = args.file.as_deref() else {
        return Err(DriverError::Usage("compile needs a FILE".into()));
    };
    let src = driver::read_source(file)?;
    let options = compile_options(&args.kernel, &args.pipeline, args.dtype_policy)?;
    let mut dumps = String::new();
    let result = driver::compile(&src, &options, &mut dumps);
    write_stderr(&dumps);
    let mut c = result?;
    if matches!(args.emit, Emit::Asm | Emit::Bin) {
        // A program records where it came from, so that `run PROGRAM.tbin --check` can
        // find its kernel again; the text form carries it too, so that assembling it gives
        // the same program as `--emit bin`.
        driver::record_origin(&mut c, file, &src, &options)?;
    }
    match args.emit {
        Emit::TensorIr => write_text(args.output.as_deref(), c.tensor.to_string().as_bytes()),
        Emit::TileIr => {
            let tile = c
                .tile
                .as_ref()
                .ok_or_else(|| DriverError::Internal("the pipeline produced no tile IR".into()))?;
            write_text(args.output.as_deref(), tile.to_string().as_bytes())
        }
        Emit::Asm => {
            let program = driver::program_of(&c)?;
            write_text(args.output.as_deref(), isa::disassemble(program).as_bytes())
        }
        Emit::Bin => {
            let program = driver::program_of(&c)?;
            let bytes = isa::encode_program(program);
            match args.output.as_deref() {
                Some(p) => write_file_atomic(p, &bytes),
                None if std::io::stdout().is_terminal() => Err(DriverError::Usage(
                    "--emit bin writes binary: give -o PROGRAM.tbin or pipe stdout".into(),
                )),
                None => write_stdout(&bytes),
            }
        }
    }
}

/// Writes the requested output to stdout and flushes it. A failed write is an error (exit
/// 1); a closed pipe (e.g. `| head`) is not: the reader has all it wanted, so the rest of
/// the output is dropped and the command goes on (it may still have files to write).
fn write_stdout(bytes: &[u8]) -> Result<(), DriverError> {
    let mut out = std::io::stdout().lock();
    match out.write_all(bytes).and_then(|()| out.flush()) {
        Err(e) if e.kind() != ErrorKind::BrokenPipe => {
            Err(DriverError::Input(format!("cannot write to stdout: {e}")))
        }
        _ => Ok(()),
    }
}

fn write_text(path: Option<&Path>, bytes: &[u8]) -> Result<(), DriverError> {
    match path {
        None => write_stdout(bytes),
        Some(p) => write_file_atomic(p, bytes),
    }
}

/// Writes an output file (`-o`, `--trace`, `--report-json`) with
/// `runtime::npy::write_file_atomic`: a regular or new file is replaced through a temporary
/// file and a rename, so that an error or a kill never leaves half a file behind; a
/// symbolic link is written through, and a device or FIFO (`-o /dev/stdout`) written in
/// place.
fn write_file_atomic(path: &Path, bytes: &[u8]) -> Result<(), DriverError> {
    runtime::npy::write_file_atomic(path, bytes)
        .map_err(|e| DriverError::Input(format!("cannot write {}: {e}", path.display())))
}

fn cmd_run(args: &RunArgs) -> Result<(), DriverError> {
    // Flags first, so that a usage error leaves nothing behind.
    let given = driver::parse_input_flags(&args.inputs)?;
    let defines = defines(&args.kernel)?;
    let out_dir = args.output.clone().unwrap_or_else(|| PathBuf::from("."));
    if !out_dir.is_dir() {
        std::fs::create_dir_all(&out_dir).map_err(|e| {
            DriverError::Input(format!(
                "cannot create output folder {}: {e}",
                out_dir.display()
            ))
        })?;
    }
    let c = match driver::read_run_file(&args.file)? {
        driver::RunFile::Program(bytes) => {
            tbin_usage(args)?;
            if !(args.check || args.reference) {
                return run_tbin(args, &bytes, &given, &out_dir);
            }
            // The reference needs the kernel: the one the program records as its origin.
            let c = driver::program_with_source(&args.file, &bytes, &args.run_options())?;
            if let Some(note) = c.program.as_ref().and_then(driver::origin_note) {
                print_notes(&[note]);
            }
            c
        }
        driver::RunFile::Source(src) => {
            let options = driver::CompileOptions {
                defines,
                ..compile_options(
                    &args.kernel,
                    &args.pipeline,
                    args.dtype_policy.unwrap_or(DtypePolicy::Wide),
                )?
            };
            let mut dumps = String::new();
            let result = driver::compile(&src, &options, &mut dumps);
            write_stderr(&dumps);
            result?
        }
    };
    let params = driver::params_of(&c.tensor);
    if !args.reference {
        return run_interpreter(args, &c, &params, &given, &out_dir);
    }
    let mut notes = Vec::new();
    let inputs = driver::gather_inputs(
        &params,
        &given,
        args.random,
        &out_dir,
        c.tensor.results.len(),
        &mut notes,
    );
    print_notes(&notes);
    let inputs = inputs?;
    if args.trace.is_some() || args.report || args.report_json.is_some() {
        return Err(DriverError::Usage(
            "--trace, --report and --report-json need the interpreter; --reference has no timing"
                .into(),
        ));
    }
    let outputs = reference::evaluate(c.reference().0, &inputs)
        .map_err(|e| driver::reference_error(&c, e))?;
    for (i, t) in outputs.iter().enumerate() {
        driver::write_output(&driver::output_path(&out_dir, i), t)?;
    }
    if args.check {
        let comparisons = driver::check_outputs(&c, &inputs, &outputs)?;
        print_comparisons(&comparisons)?;
    }
    Ok(())
}

/// `run` on the interpreter. Inputs are held once: each is read or made, bound into the
/// machine's HBM and let go before the next. `--check` runs the reference evaluator on a
/// thread of its own at the same time, making its own inputs, where the inputs can be made
/// again and the memory estimate allows (`driver::concurrent_check_fits`); otherwise after
/// the run, taking the inputs back from the machine in their dtype's bytes (the machine is
/// then dropped) and decoding each to f32 only while it needs it.
fn run_interpreter(
    args: &RunArgs,
    c: &tessera::passes::Compilation,
    params: &[driver::ParamSpec],
    given: &[(String, PathBuf)],
    out_dir: &Path,
) -> Result<(), DriverError> {
    driver::check_input_names(params, given)?;
    let program = driver::program_of(c)?;
    let results = c.tensor.results.len();
    let source = match args.check && driver::concurrent_check_fits(c, program) {
        true => driver::InputSource::remakable(params, given, args.random, out_dir, results),
        false => None,
    };
    let interpret = || -> Result<(runtime::Loaded, Vec<reference::HostTensor>), DriverError> {
        let mut loaded = driver::load_machine(program, &args.run_options())?;
        let mut notes = Vec::new();
        for (index, p) in params.iter().enumerate() {
            let input = driver::gather_input(
                params,
                index,
                given,
                args.random,
                out_dir,
                results,
                &mut notes,
            );
            let input = match input {
                Ok(t) => t,
                Err(e) => {
                    print_notes(&notes);
                    return Err(e);
                }
            };
            driver::bind_input(&mut loaded, p, &input)?;
        }
        print_notes(&notes);
        let (outputs, report) = driver::run_loaded(&mut loaded, Some(&c.tensor.name))?;
        let timing = runtime::MachineConfig::new(program.preset).timing;
        let bound = tessera::roofline::bound(&c.tensor, &timing);
        emit_profile(args, program, &report, Some(bound))?;
        for (i, t) in outputs.iter().enumerate() {
            driver::write_output(&driver::output_path(out_dir, i), t)?;
        }
        Ok((loaded, outputs))
    };
    if let Some(source) = source {
        // The machine goes as soon as its outputs are read: the reference makes its own
        // inputs.
        let comparisons =
            driver::concurrent_check(c, &source, || interpret().map(|(_, outputs)| outputs))?;
        return print_comparisons(&comparisons);
    }
    let (loaded, outputs) = interpret()?;
    if args.check {
        let mut inputs = driver::PackedInputs::from_machine(loaded, params)?;
        let comparisons = driver::check_outputs_packed(c, &mut inputs, &outputs)?;
        print_comparisons(&comparisons)?;
    }
    Ok(())
}

/// Prints `--check`'s line per output; a mismatch is an error (exit 3).
fn print_comparisons(comparisons: &[driver::Comparison]) -> Result<(), DriverError> {
    let mut report = String::new();
    let mut bad = Vec::new();
    for (i, cmp) in comparisons.iter().enumerate() {
        report.push_str(&cmp.line(i));
        report.push('\n');
        bad.extend(cmp.mismatch(i));
        // A check that compares nothing must not look like a pass: the line notes it, and
        // stderr says it plainly (docs/numerics.md, "Bounds through a softmax").
        if cmp.unbounded > 0 {
            write_stderr(&format!(
                "warning: out{i}: {} elements have no finite error bound under the default dtype policy, so --check did not compare them and a wrong value there would pass; run with `--dtype-policy strict` to compare every element bit for bit\n",
                cmp.unbounded
            ));
        }
    }
    write_stdout(report.as_bytes())?;
    if !bad.is_empty() {
        return Err(DriverError::Mismatch(format!(
            "outputs differ from the reference beyond their allowed error: {}",
            bad.join("; ")
        )));
    }
    Ok(())
}

/// Prints the notes of a run (`driver::gather_inputs`) on stderr.
fn print_notes(notes: &[String]) {
    for note in notes {
        write_stderr(&format!("{note}\n"));
    }
}

/// Refuses the flags of `run` that apply to a source file only when the file is a `.tbin`:
/// the program is already compiled, with the kernel, sizes and passes it records.
fn tbin_usage(args: &RunArgs) -> Result<(), DriverError> {
    if args.kernel.kernel.is_some() || !args.kernel.defines.is_empty() {
        return Err(DriverError::Usage(
            "-k and -D apply to source files, not to a .tbin".into(),
        ));
    }
    if args.pipeline.any() || args.dtype_policy.is_some() {
        return Err(DriverError::Usage(
            "--disable-pass, --dump-after, --verify-ir and --dtype-policy apply when compiling \
             a source file; a .tbin is already compiled (run the kernel's .tsr file with them \
             instead)"
                .into(),
        ));
    }
    Ok(())
}

fn run_tbin(
    args: &RunArgs,
    bytes: &[u8],
    given: &[(String, PathBuf)],
    out_dir: &Path,
) -> Result<(), DriverError> {
    let program = isa::decode_program(bytes)
        .map_err(|e| DriverError::Input(format!("{}: {e}", args.file.display())))?;
    let options = args.run_options();
    // Refuse a program that does not verify or needs too much HBM before reading or making
    // its inputs.
    let in_file = |e: DriverError| match e {
        DriverError::Input(m) => DriverError::Input(format!("{}: {m}", args.file.display())),
        other => other,
    };
    driver::check_loadable(&program, &options).map_err(in_file)?;
    let params = driver::program_params(&program);
    let results = program.tensors_with_role(isa::Role::Output).count();
    let mut notes = Vec::new();
    let inputs = driver::gather_inputs(&params, given, args.random, out_dir, results, &mut notes);
    print_notes(&notes);
    let inputs = inputs?;
    let (outputs, report) =
        driver::execute_with(&program, &params, &inputs, &options).map_err(in_file)?;
    for (i, t) in outputs.iter().enumerate() {
        driver::write_output(&driver::output_path(out_dir, i), t)?;
    }
    emit_profile(args, &program, &report, None)?;
    Ok(())
}

/// `--report`, `--report-json` and `--trace` of `run`: the profile (with the kernel's
/// roofline bound; none for a .tbin) and the Chrome trace.
fn emit_profile(
    args: &RunArgs,
    program: &isa::Program,
    report: &runtime::Report,
    bound: Option<tessera::roofline::Bound>,
) -> Result<(), DriverError> {
    if args.report || args.report_json.is_some() {
        let rate = runtime::MachineConfig::new(program.preset)
            .timing
            .dma_total_rate;
        let profile = tessera::profile::Profile::new(program, report, bound, rate);
        if let Some(path) = &args.report_json {
            let mut text = serde_json::to_string_pretty(&profile.to_json())
                .map_err(|e| DriverError::Internal(e.to_string()))?;
            text.push('\n');
            write_path_or_stdout(path, text.as_bytes())?;
        }
        if args.report {
            write_stdout(profile.text().as_bytes())?;
        }
    }
    if let Some(path) = &args.trace {
        write_path_or_stdout(
            path,
            runtime::trace::chrome_trace(program, report).as_bytes(),
        )?;
    }
    Ok(())
}

/// Writes `--report-json` or `--trace` output: `-` is stdout (the requested output, as
/// for text forms of `compile`), anything else a file.
fn write_path_or_stdout(path: &Path, bytes: &[u8]) -> Result<(), DriverError> {
    if path.as_os_str() == "-" {
        write_stdout(bytes)
    } else {
        write_file_atomic(path, bytes)
    }
}

fn cmd_asm(file: &Path, output: &Path) -> Result<(), DriverError> {
    let src = driver::read_source(file)?;
    let program =
        isa::assemble(&src.text).map_err(|e| DriverError::Input(format!("{}:{e}", src.name)))?;
    if let Err(errors) = isa::verify(&program) {
        let lines: Vec<_> = errors.iter().map(|e| format!("  {e}")).collect();
        return Err(DriverError::Input(format!(
            "{}: the program does not verify:\n{}",
            src.name,
            lines.join("\n")
        )));
    }
    write_file_atomic(output, &isa::encode_program(&program))
}

fn cmd_disasm(path: &Path) -> Result<(), DriverError> {
    let bytes = driver::read_program_bytes(path)?;
    let program = isa::decode_program(&bytes)
        .map_err(|e| DriverError::Input(format!("{}: {e}", path.display())))?;
    write_stdout(isa::disassemble(&program).as_bytes())
}
