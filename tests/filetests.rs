//! The data-driven test harness: every `tests/filetests/**/*.tsr` file is one test.
//!
//! A file starts with header lines that configure it, then the kernel source:
//!
//! ```text
//! // test: check
//! // define: N=128, M=64
//! // kernel: softmax
//! ```
//!
//! `test` (required, first) names the mode; `define` gives size overrides; `kernel` picks
//! one kernel; `expect: fault` says that a `run` test's run stops with a run-time error (a
//! `take` index out of range), whose messages are then the snapshot. The header ends at
//! the first line that is not `// word: value`; an unknown directive or mode fails the
//! test. Each file's output is compared with exactly one insta
//! snapshot, `tests/snapshots/<path with / as __>.snap` (e.g. `check__errors__zero_dim`).
//! Accept new or changed output with `INSTA_UPDATE=always cargo test --test filetests`,
//! then read the `.snap` files.
//!
//! To add a mode, write one `fn mode_x(test: &TestFile) -> Result<String, String>` and add
//! it to the `match` in [`run_mode`].

use std::path::{Path, PathBuf};

/// A parsed test file.
struct TestFile {
    /// The path relative to `tests/filetests`, with `/` separators (shown in diagnostics).
    rel_path: String,
    mode: String,
    defines: Vec<(String, i64)>,
    kernel: Option<String>,
    /// `// expect: fault`: a `run` test whose run stops with a run-time error; the
    /// snapshot holds the machine's and the reference's messages.
    fault: bool,
    source: String,
}

/// Runs the test's mode; the text returned is compared with the snapshot.
///
/// This is the one place where modes are dispatched: add new modes here.
fn run_mode(test: &TestFile) -> Result<String, String> {
    match test.mode.as_str() {
        "check" => mode_check(test),
        "tensor-ir" => mode_tensor_ir(test),
        "layout" => mode_layout(test),
        "canonical" => mode_canonical(test),
        "reference" => mode_reference(test),
        "tile-ir" => mode_tile_ir(test),
        "asm" => mode_asm(test),
        "run" => mode_run(test),
        other => Err(format!("unknown test mode `{other}`")),
    }
}

/// The tensor IR of the file's kernel after the tensor-level passes (not the backend).
/// Also checks that the IR verifies and that printing and parsing it back is stable.
fn tensor_ir(test: &TestFile) -> Result<tessera::ir::Function, String> {
    let kernels =
        tessera::frontend::check_file(&test.source, &test.defines, test.kernel.as_deref())
            .map_err(|d| tessera::diagnostic::render(&d, &test.rel_path, &test.source, false))?;
    let checked = kernels.first().ok_or("the file holds no kernel")?;
    let func = tessera::ir::lower(checked);
    tessera::ir::verify(&func, "lower").map_err(|e| e.to_string())?;
    check_round_trip(&func)?;
    Ok(func)
}

/// `print(parse(print(f))) == print(f)`, for every IR a test produces.
fn check_round_trip(func: &tessera::ir::Function) -> Result<(), String> {
    let printed = func.to_string();
    let parsed = tessera::ir::parse(&printed)
        .map_err(|e| format!("printed IR does not parse: {e}\n{printed}"))?;
    let again = parsed.first().map(|f| f.to_string()).unwrap_or_default();
    if again != printed {
        return Err(format!(
            "IR does not print back the same:\n{printed}\n---\n{again}"
        ));
    }
    Ok(())
}

/// `tensor-ir`: the lowered tensor IR of the kernel.
fn mode_tensor_ir(test: &TestFile) -> Result<String, String> {
    Ok(tensor_ir(test)?.to_string())
}

/// `canonical`: the lowered tensor IR, then the tensor IR after the passes up to
/// `canonicalize` (what `--dump-after canonicalize` prints), the verifier run after each
/// pass and both IRs printed and parsed back.
fn mode_canonical(test: &TestFile) -> Result<String, String> {
    let func = tensor_ir(test)?;
    let before = func.to_string();
    let mut c = tessera::passes::Compilation::new(func, Default::default());
    for pass in tessera::passes::PIPELINE {
        (pass.run)(&mut c).map_err(|e| format!("pass {}: {e}", pass.name))?;
        c.verify(pass.name).map_err(|e| e.to_string())?;
        if pass.name == "canonicalize" {
            check_round_trip(&c.tensor)?;
            return Ok(format!("{before}\n; after canonicalize\n{}", c.tensor));
        }
    }
    Err("the pipeline has no `canonicalize` pass".into())
}

/// `layout`: the tensor IR after the tensor-level passes up to `layout`, with the groups
/// of `fusion` and the decisions of `layout` as comments (what `--dump-after layout`
/// prints), the verifier run after each pass.
fn mode_layout(test: &TestFile) -> Result<String, String> {
    let func = tensor_ir(test)?;
    let mut c = tessera::passes::Compilation::new(func, Default::default());
    for pass in tessera::passes::PIPELINE {
        (pass.run)(&mut c).map_err(|e| format!("pass {}: {e}", pass.name))?;
        c.verify(pass.name).map_err(|e| e.to_string())?;
        if pass.name == "layout" {
            return Ok(c.current_text());
        }
    }
    Err("the pipeline has no `layout` pass".into())
}

/// Compiles the file's kernel through the whole pipeline (the verifier runs after every
/// pass), as `tessera compile` does.
fn compile(test: &TestFile) -> Result<tessera::passes::Compilation, String> {
    let src = tessera::driver::Source {
        name: test.rel_path.clone(),
        text: test.source.clone(),
    };
    let options = tessera::driver::CompileOptions {
        kernel: test.kernel.clone(),
        defines: test.defines.clone(),
        verify_ir: true,
        ..Default::default()
    };
    let c =
        tessera::driver::compile(&src, &options, &mut String::new()).map_err(|e| e.to_string())?;
    // The tensor IR the passes leave (simplify and dce delete and insert instructions)
    // prints and parses back too.
    check_round_trip(&c.tensor)?;
    Ok(c)
}

/// `tile-ir`: the tile IR after allocation and synchronisation; also checks that it
/// prints and parses back to the same text.
fn mode_tile_ir(test: &TestFile) -> Result<String, String> {
    let c = compile(test)?;
    let tile = c.tile.as_ref().ok_or("the pipeline produced no tile IR")?;
    let printed = tile.to_string();
    let again = tessera::tile::parse(&printed)
        .map_err(|e| format!("printed tile IR does not parse: {e}"))?
        .to_string();
    if again != printed {
        return Err(format!(
            "tile IR does not print back the same:\n{printed}\n---\n{again}"
        ));
    }
    Ok(printed)
}

/// `asm`: the emitted program as text assembly; also checks that it assembles back to
/// the same program.
fn mode_asm(test: &TestFile) -> Result<String, String> {
    let c = compile(test)?;
    let program = c
        .program
        .as_ref()
        .ok_or("the pipeline produced no program")?;
    let text = isa::disassemble(program);
    let back =
        isa::assemble(&text).map_err(|e| format!("the disassembly does not assemble: {e}"))?;
    if &back != program {
        return Err("the disassembly assembles to a different program".into());
    }
    Ok(text)
}

/// `run`: compiles, runs on the interpreter with the inputs of `--random 1`, and prints
/// each output's largest error against the reference evaluator and the timing model's
/// total cycles (bit-exact kernels print 0).
fn mode_run(test: &TestFile) -> Result<String, String> {
    let c = compile(test)?;
    c.program
        .as_ref()
        .ok_or("the pipeline produced no program")?;
    let params = tessera::driver::params_of(&c.tensor);
    let inputs: Vec<_> = params
        .iter()
        .enumerate()
        .map(|(i, p)| tessera::driver::random_tensor(p, 1, i as u64))
        .collect();
    let run = tessera::driver::execute_compiled(
        &c,
        &params,
        &inputs,
        &tessera::driver::RunOptions::default(),
    );
    if test.fault {
        // Both the machine and the reference must stop, each with its message.
        let machine = run
            .err()
            .ok_or("the run was expected to fault and did not")?;
        let reference = tessera::driver::expected(&c, &inputs)
            .err()
            .ok_or("the reference was expected to fail and did not")?;
        return Ok(format!("machine: {machine}\nreference: {reference}\n"));
    }
    let (outputs, report) = run.map_err(|e| e.to_string())?;
    let comparisons =
        tessera::driver::check_outputs(&c, &inputs, &outputs).map_err(|e| e.to_string())?;
    let mut out = format!("total cycles: {}\n", report.total_cycles);
    for (i, (got, cmp)) in outputs.iter().zip(&comparisons).enumerate() {
        out.push_str(&format!(
            "out{i}: {} max abs error {:e}, max rel error {:e}, {} outside tolerance\n",
            tessera::driver::type_text(got.dtype, &got.shape),
            cmp.max_abs,
            cmp.max_rel,
            cmp.bad
        ));
    }
    Ok(out)
}

/// `reference`: runs the kernel on the reference evaluator with the reproducible inputs of
/// `tessera run --random 1`, and prints each output's type, first values (exact f32) and
/// checksums.
fn mode_reference(test: &TestFile) -> Result<String, String> {
    let func = tensor_ir(test)?;
    let params = tessera::driver::params_of(&func);
    let inputs: Vec<_> = params
        .iter()
        .enumerate()
        .map(|(i, p)| tessera::driver::random_tensor(p, 1, i as u64))
        .collect();
    let outputs = tessera::reference::evaluate(&func, &inputs).map_err(|e| e.to_string())?;
    let mut out = String::new();
    for (i, t) in outputs.iter().enumerate() {
        out.push_str(&format!(
            "out{i}: {}\n",
            tessera::driver::type_text(t.dtype, &t.shape)
        ));
        if t.dtype == isa::Dtype::I32 {
            // Integers print exactly, with a wrapping sum.
            let head: Vec<String> = t.ints.iter().take(8).map(|x| x.to_string()).collect();
            out.push_str(&format!("  first: [{}]\n", head.join(", ")));
            let sum = t.ints.iter().fold(0i64, |s, &x| s + i64::from(x));
            out.push_str(&format!("  sum: {sum}\n"));
            continue;
        }
        let head: Vec<String> = t.data.iter().take(8).map(|x| format!("{x:?}")).collect();
        out.push_str(&format!("  first: [{}]\n", head.join(", ")));
        let sum: f64 = t.data.iter().map(|&x| x as f64).sum();
        let hash = t.data.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, x| {
            (h ^ x.to_bits() as u64).wrapping_mul(0x0000_0100_0000_01b3)
        });
        out.push_str(&format!("  sum: {sum:?}, bits: {hash:016x}\n"));
    }
    Ok(out)
}

/// `check`: parses and checks; prints every kernel's listing, or the diagnostics.
fn mode_check(test: &TestFile) -> Result<String, String> {
    let result = tessera::frontend::check_file(&test.source, &test.defines, test.kernel.as_deref());
    Ok(match result {
        Ok(kernels) => {
            // Every kernel that checks must also lower to IR that verifies and round-trips.
            for k in &kernels {
                let func = tessera::ir::lower(k);
                tessera::ir::verify(&func, "lower").map_err(|e| e.to_string())?;
                check_round_trip(&func)?;
            }
            let mut out = String::from("ok\n");
            for k in &kernels {
                out.push('\n');
                out.push_str(&k.to_string());
            }
            out
        }
        Err(diags) => tessera::diagnostic::render(&diags, &test.rel_path, &test.source, false),
    })
}

/// Parses `N=128, M=64`.
fn parse_defines(text: &str) -> Result<Vec<(String, i64)>, String> {
    text.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|item| {
            let (name, value) = item
                .split_once('=')
                .ok_or_else(|| format!("bad define `{item}`: expected NAME=INT"))?;
            let value = value
                .trim()
                .parse::<i64>()
                .map_err(|_| format!("bad define `{item}`: expected NAME=INT"))?;
            Ok((name.trim().to_string(), value))
        })
        .collect()
}

/// Reads a test file's header.
fn parse_test(rel_path: String, source: String) -> Result<TestFile, String> {
    let mut mode = None;
    let mut defines = Vec::new();
    let mut kernel = None;
    let mut fault = false;
    for (i, line) in source.lines().enumerate() {
        let Some(rest) = line.strip_prefix("// ") else {
            break;
        };
        let Some((key, value)) = rest.split_once(':') else {
            break;
        };
        if key.is_empty() || !key.chars().all(|c| c.is_ascii_lowercase() || c == '-') {
            break;
        }
        let value = value.trim();
        match key {
            "test" if i == 0 => mode = Some(value.to_string()),
            "test" => return Err("`// test:` must be the first line".to_string()),
            "define" => defines.extend(parse_defines(value)?),
            "kernel" => kernel = Some(value.to_string()),
            "expect" if value == "fault" => fault = true,
            "expect" => return Err(format!("unknown expectation `{value}` (`fault`)")),
            other => return Err(format!("unknown directive `{other}`")),
        }
    }
    let mode = mode.ok_or("the first line must be `// test: MODE`")?;
    Ok(TestFile {
        rel_path,
        mode,
        defines,
        kernel,
        fault,
        source,
    })
}

/// Every `.tsr` file under `dir`, sorted.
fn collect(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            collect(&path, out);
        } else if path.extension().is_some_and(|e| e == "tsr") {
            out.push(path);
        }
    }
    out.sort();
}

/// Runs one file and compares its output with its snapshot.
fn run_file(root: &Path, path: &Path) -> Result<(), String> {
    let rel = path
        .strip_prefix(root)
        .map_err(|e| e.to_string())?
        .to_string_lossy()
        .replace('\\', "/");
    let source = std::fs::read_to_string(path).map_err(|e| format!("{rel}: {e}"))?;
    let test = parse_test(rel.clone(), source).map_err(|e| format!("{rel}: {e}"))?;
    let output = run_mode(&test).map_err(|e| format!("{rel}: {e}"))?;
    let name = rel.trim_end_matches(".tsr").replace('/', "__");
    let mut settings = insta::Settings::clone_current();
    settings.set_snapshot_path("snapshots");
    settings.set_prepend_module_to_snapshot(false);
    settings.set_omit_expression(true);
    settings.set_input_file(path);
    settings.set_description(format!("{} {rel}", test.mode));
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        settings.bind(|| insta::assert_snapshot!(name, output));
    }));
    result.map_err(|_| format!("{rel}: output differs from the snapshot"))
}

/// Snapshots of filetests that no longer exist (a snapshot belongs to the filetests when
/// its name starts with a top-level folder of `tests/filetests`, e.g. `check__`).
fn orphan_snapshots(root: &Path, files: &[PathBuf]) -> Vec<String> {
    let expected: Vec<String> = files
        .iter()
        .filter_map(|p| p.strip_prefix(root).ok())
        .map(|rel| {
            let rel = rel.to_string_lossy().replace('\\', "/");
            format!("{}.snap", rel.trim_end_matches(".tsr").replace('/', "__"))
        })
        .collect();
    let prefixes: Vec<String> = std::fs::read_dir(root)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.path().is_dir())
        .map(|e| format!("{}__", e.file_name().to_string_lossy()))
        .collect();
    let snapshots = root.join("../snapshots");
    let mut orphans: Vec<String> = std::fs::read_dir(snapshots)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".snap") && prefixes.iter().any(|p| n.starts_with(p)))
        .filter(|n| !expected.contains(n))
        .map(|n| format!("tests/snapshots/{n}: no filetest has this snapshot; delete it"))
        .collect();
    orphans.sort();
    orphans
}

#[test]
fn filetests() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/filetests");
    let mut files = Vec::new();
    collect(&root, &mut files);
    assert!(!files.is_empty(), "no filetests under {}", root.display());
    let failures: Vec<String> = files
        .iter()
        .filter_map(|path| run_file(&root, path).err())
        .collect();
    let mut failures = failures;
    failures.extend(orphan_snapshots(&root, &files));
    assert!(
        failures.is_empty(),
        "{} of {} filetests failed:\n{}",
        failures.len(),
        files.len(),
        failures.join("\n")
    );
}

#[test]
fn header_errors_fail() {
    let bad = [
        "kernel k() -> f32[1] { return 1; }",
        "// test: check\n// frobnicate: yes\n",
        "// kernel: k\n// test: check\n",
        "// test: check\n// define: N\n",
    ];
    for src in bad {
        assert!(
            parse_test("x.tsr".to_string(), src.to_string()).is_err(),
            "{src}"
        );
    }
    let unknown = parse_test("x.tsr".to_string(), "// test: frobnicate\n".to_string());
    let err = run_mode(&unknown.expect("the header parses")).expect_err("unknown mode");
    assert!(err.contains("unknown test mode"), "{err}");
    let ok = parse_test(
        "x.tsr".to_string(),
        "// test: check\n// define: N=128, M=64\n// kernel: k\n// y = x\n".to_string(),
    )
    .expect("a valid header");
    assert_eq!(
        ok.defines,
        vec![("N".to_string(), 128), ("M".to_string(), 64)]
    );
    assert_eq!(ok.kernel.as_deref(), Some("k"));
}
