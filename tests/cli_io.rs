//! How the binary reads and writes files and streams (README.md): stdout that
//! fails or closes early, programs recognised by their magic bytes, `.npy` inputs in any
//! byte order or through a pipe, float16 and ml_dtypes' untyped bf16 and FP8 inputs read
//! bit for bit, endless inputs and paths that are not files, output paths
//! that are symbolic links or FIFOs, `--check`'s maxima when an output is NaN, and a
//! parameter named like a result file. Every case is driven through the binary, with a
//! time limit so that a hang fails the test instead of stalling it.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

/// A fresh scratch folder for one test.
fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("tessera-cli-io-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A kernel of one [2, 3] f32 parameter `x` that returns `x + x`.
const DOUBLE: &str = "kernel double(x: f32[2, 3]) -> f32[2, 3] {\n    return x + x;\n}\n";

/// The values of the `.npy` inputs the tests write.
const VALUES: [f32; 6] = [-1.5, -0.25, 0.0, 0.5, 1.0, 3.75];

/// Runs `tessera` in `dir` with `stdin` fed to it, killing it (and failing) after a minute.
fn tessera_with(dir: &Path, args: &[&str], stdin: &[u8], stdout: Stdio) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_tessera"))
        .current_dir(dir)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(stdout)
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut input = child.stdin.take().unwrap();
    let stdin = stdin.to_vec();
    // The binary may stop reading early; a failed write here is not the test's concern.
    let feeder = std::thread::spawn(move || {
        let _ = input.write_all(&stdin);
    });
    let mut out_pipe = child.stdout.take();
    let mut err_pipe = child.stderr.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut out = Vec::new();
        if let Some(pipe) = out_pipe.as_mut() {
            pipe.read_to_end(&mut out).unwrap();
        }
        let mut err = Vec::new();
        err_pipe.read_to_end(&mut err).unwrap();
        (out, err)
    });
    let start = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if start.elapsed() > Duration::from_secs(60) {
            let _ = child.kill();
            let _ = child.wait();
            panic!("tessera {args:?} did not finish within a minute");
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let _ = feeder.join();
    let (stdout, stderr) = reader.join().unwrap();
    Output {
        status,
        stdout,
        stderr,
    }
}

fn tessera(dir: &Path, args: &[&str]) -> Output {
    tessera_with(dir, args, b"", Stdio::piped())
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn ok(out: &Output) -> String {
    assert!(
        out.status.success(),
        "exit {:?}\nstderr:\n{}",
        out.status.code(),
        stderr(out)
    );
    String::from_utf8(out.stdout.clone()).unwrap()
}

/// Asserts exit code `code`, no panic, and one message containing `needle` on stderr.
fn fails(out: &Output, code: i32, needle: &str) {
    let err = stderr(out);
    assert_eq!(out.status.code(), Some(code), "stderr:\n{err}");
    assert!(err.contains(needle), "{err:?} lacks {needle:?}");
    assert!(!err.contains("panicked"), "a panic: {err}");
    assert_eq!(err.matches("error:").count(), 1, "one message: {err}");
}

/// The f32 values of a `.npy` file the binary wrote.
fn npy_values(path: &Path) -> Vec<f32> {
    let array = runtime::npy::read_npy(&std::fs::read(path).unwrap()).unwrap();
    match array.data {
        runtime::npy::NpyData::F32(v) => v,
        other => panic!("the binary writes float32, not {other:?}"),
    }
}

/// Writes `one.tsr` (the kernel [`DOUBLE`]) and compiles it to `one.tbin` in `dir`.
fn setup(dir: &Path) {
    std::fs::write(dir.join("one.tsr"), DOUBLE).unwrap();
    ok(&tessera(dir, &["compile", "one.tsr", "-o", "one.tbin"]));
}

/// Runs `tessera` with stdout on `/dev/full`, where every write fails with ENOSPC.
fn to_dev_full(dir: &Path, args: &[&str]) -> Option<Output> {
    // /dev/full exists on Linux; elsewhere there is no portable full device to test with.
    let full = std::fs::OpenOptions::new()
        .write(true)
        .open("/dev/full")
        .ok()?;
    Some(tessera_with(dir, args, b"", Stdio::from(full)))
}

#[test]
fn a_failed_write_to_stdout_exits_1_with_one_message() {
    let dir = scratch("full");
    setup(&dir);
    for args in [
        &["compile", "one.tsr", "--emit", "asm"][..],
        &["compile", "one.tsr", "--emit", "tensor-ir"],
        &["compile", "one.tsr", "--emit", "bin"],
        &["compile", "--list-passes"],
        &["disasm", "one.tbin"],
        &["run", "one.tsr", "--random", "1", "--report", "-o", "out"],
        &["run", "one.tbin", "--random", "1", "--report", "-o", "out"],
        &["run", "one.tsr", "--random", "1", "--check", "-o", "out"],
        &["--help"],
        &["--version"],
    ] {
        let Some(out) = to_dev_full(&dir, args) else {
            return;
        };
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {err}");
        assert!(err.contains("cannot write to stdout"), "{args:?}: {err}");
        assert!(!err.contains("panicked"), "{args:?}: {err}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_closed_pipe_on_stdout_ends_quietly() {
    let dir = scratch("pipe");
    setup(&dir);
    for args in [
        &["compile", "one.tsr", "--emit", "asm"][..],
        &["disasm", "one.tbin"],
        &["run", "one.tsr", "--random", "1", "--report", "-o", "out"],
        &["--help"],
    ] {
        let mut child = Command::new(env!("CARGO_BIN_EXE_tessera"))
            .current_dir(&dir)
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        // Close the reading end before the binary writes anything.
        drop(child.stdout.take());
        let out = child.wait_with_output().unwrap();
        assert_eq!(out.status.code(), Some(0), "{args:?}: {}", stderr(&out));
        assert!(out.stderr.is_empty(), "{args:?}: {}", stderr(&out));
    }
    // The run still wrote its results.
    assert_eq!(npy_values(&dir.join("out/out0.npy")).len(), 6);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn programs_are_recognised_by_their_magic_bytes() {
    let dir = scratch("magic");
    setup(&dir);
    ok(&tessera(
        &dir,
        &["run", "one.tbin", "--random", "7", "-o", "a"],
    ));
    for name in ["ONE.TBIN", "one.bin", "program"] {
        std::fs::copy(dir.join("one.tbin"), dir.join(name)).unwrap();
        let out_dir = format!("out-{name}");
        ok(&tessera(
            &dir,
            &["run", name, "--random", "7", "-o", &out_dir],
        ));
        assert_eq!(
            npy_values(&dir.join(&out_dir).join("out0.npy")),
            npy_values(&dir.join("a/out0.npy")),
            "{name}"
        );
    }
    // A damaged program with the extension in another case gets the decoder's message.
    std::fs::write(dir.join("BAD.TBIN"), b"not a program").unwrap();
    fails(&tessera(&dir, &["run", "BAD.TBIN"]), 1, "bad magic");
    let _ = std::fs::remove_dir_all(&dir);
}

/// The `.npy` of [`VALUES`] as shape (2, 3) in dtype `descr` (`<f4`, `>f8`, `=f4`, ...).
fn npy_in(descr: &str) -> Vec<u8> {
    let le = runtime::npy::write_npy(&[2, 3], &VALUES);
    let data_at = le.len() - 4 * VALUES.len();
    let mut out = le[..data_at].to_vec();
    let at = out.windows(3).position(|w| w == b"<f4").unwrap();
    out[at..at + 3].copy_from_slice(descr.as_bytes());
    let big = descr.starts_with('>') || (descr.starts_with('=') && cfg!(target_endian = "big"));
    for &v in &VALUES {
        match (&descr[1..], big) {
            ("f4", false) => out.extend_from_slice(&v.to_le_bytes()),
            ("f4", true) => out.extend_from_slice(&v.to_be_bytes()),
            ("f8", false) => out.extend_from_slice(&f64::from(v).to_le_bytes()),
            (_, _) => out.extend_from_slice(&f64::from(v).to_be_bytes()),
        }
    }
    out
}

#[test]
fn npy_inputs_in_any_byte_order_and_through_a_pipe() {
    let dir = scratch("order");
    setup(&dir);
    let want: Vec<f32> = VALUES.iter().map(|v| v + v).collect();
    for descr in ["<f4", ">f4", "=f4", "<f8", ">f8", "=f8"] {
        std::fs::write(dir.join("x.npy"), npy_in(descr)).unwrap();
        ok(&tessera(
            &dir,
            &["run", "one.tsr", "-i", "x=x.npy", "-o", "o"],
        ));
        assert_eq!(npy_values(&dir.join("o/out0.npy")), want, "{descr}");
    }
    // Read as a stream from a pipe, by the size its header declares.
    let piped = tessera_with(
        &dir,
        &["run", "one.tbin", "-i", "x=/dev/stdin", "-o", "p"],
        &npy_in(">f8"),
        Stdio::piped(),
    );
    ok(&piped);
    assert_eq!(npy_values(&dir.join("p/out0.npy")), want);
    let mut longer = npy_in("<f4");
    longer.extend_from_slice(b"more");
    fails(
        &tessera_with(
            &dir,
            &["run", "one.tsr", "-i", "x=/dev/stdin", "-o", "p"],
            &longer,
            Stdio::piped(),
        ),
        1,
        "4 bytes after its data",
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// A `.npy` file written by hand as `numpy.save` lays it out: magic, version 1.0, the
/// header length, the header dict padded with spaces so that the data starts at a multiple
/// of 64 bytes, a newline, then `data`.
fn npy_raw(descr: &str, shape: &str, data: &[u8]) -> Vec<u8> {
    let dict = format!("{{'descr': '{descr}', 'fortran_order': False, 'shape': {shape}, }}");
    let mut header = dict.into_bytes();
    while (10 + header.len() + 1) % 64 != 0 {
        header.push(b' ');
    }
    header.push(b'\n');
    let mut out = b"\x93NUMPY\x01\x00".to_vec();
    out.extend_from_slice(&(header.len() as u16).to_le_bytes());
    out.extend_from_slice(&header);
    out.extend_from_slice(data);
    out
}

/// Little-endian bytes of 16-bit codes.
fn le16(codes: &[u16]) -> Vec<u8> {
    codes.iter().flat_map(|c| c.to_le_bytes()).collect()
}

/// Runs a kernel that takes `x: DTYPE[2, 4]` and returns it converted to f32, with `file`
/// as `x`.
fn widen(dir: &Path, dtype: &str, file: &[u8]) -> Output {
    let kernel =
        format!("kernel widen(x: {dtype}[2, 4]) -> f32[2, 4] {{\n    return x as f32;\n}}\n");
    std::fs::write(dir.join("widen.tsr"), kernel).unwrap();
    std::fs::write(dir.join("x.npy"), file).unwrap();
    tessera(dir, &["run", "widen.tsr", "-i", "x=x.npy", "-o", "o"])
}

/// The bits of the f32 values [`widen`] wrote, after checking that it succeeded.
fn widened(dir: &Path, out: &Output) -> Vec<u32> {
    ok(out);
    let values = npy_values(&dir.join("o/out0.npy"));
    values.iter().map(|x| x.to_bits()).collect()
}

#[test]
fn npy_inputs_in_float16_and_ml_dtypes_raw_bits() {
    let dir = scratch("narrow");
    // float16: 1, -0, the smallest subnormal, the largest finite, -inf, 1/3, 1 + 2^-8 +
    // 2^-10 and -5, each exact in f32.
    let f16 = [
        0x3c00, 0x8000, 0x0001, 0x7bff, 0xfc00, 0x3555, 0x3c05, 0xc500,
    ];
    let f16_as_f32 = [
        0x3f80_0000,
        0x8000_0000,
        0x3380_0000,
        0x477f_e000,
        0xff80_0000,
        0x3eaa_a000,
        0x3f80_a000,
        0xc0a0_0000,
    ];
    let big: Vec<u8> = f16.iter().flat_map(|c: &u16| c.to_be_bytes()).collect();
    for (descr, data) in [("<f2", le16(&f16)), (">f2", big)] {
        let file = npy_raw(descr, "(2, 4)", &data);
        assert_eq!(
            widened(&dir, &widen(&dir, "f16", &file)),
            f16_as_f32,
            "{descr}"
        );
        assert_eq!(
            widened(&dir, &widen(&dir, "f32", &file)),
            f16_as_f32,
            "{descr}"
        );
    }
    // Into a bf16 parameter, float16 values are rounded by the language's rule: 65504 to
    // 65536, 1/3 and 1 + 2^-8 + 2^-10 up to the next bf16.
    let file = npy_raw("<f2", "(2, 4)", &le16(&f16));
    assert_eq!(
        widened(&dir, &widen(&dir, "bf16", &file)),
        [
            0x3f80_0000,
            0x8000_0000,
            0x3380_0000,
            0x4780_0000,
            0xff80_0000,
            0x3eab_0000,
            0x3f81_0000,
            0xc0a0_0000
        ]
    );

    // 2-byte void data (what numpy.save writes for an ml_dtypes bfloat16 array): the bits
    // of the bf16 (or f16) parameter.
    let v2 = [
        0x3f80, 0x8000, 0x0001, 0x477f, 0xc780, 0x3eab, 0xc0a0, 0x4049,
    ];
    for descr in ["<V2", "|V2"] {
        let file = npy_raw(descr, "(2, 4)", &le16(&v2));
        let as_bf16: Vec<u32> = v2.iter().map(|&c| u32::from(c) << 16).collect();
        assert_eq!(
            widened(&dir, &widen(&dir, "bf16", &file)),
            as_bf16,
            "{descr}"
        );
        assert_eq!(
            widened(&dir, &widen(&dir, "f16", &file)),
            [
                0x3ff0_0000,
                0x8000_0000,
                0x3380_0000,
                0x40ef_e000,
                0xc0f0_0000,
                0x3fd5_6000,
                0xc014_0000,
                0x4009_2000
            ],
            "{descr}"
        );
    }

    // 1-byte void data (ml_dtypes' FP8 types): the two formats cannot be told apart, so
    // the parameter's dtype decides what the same bytes mean.
    let v1 = [0x38u8, 0x80, 0x01, 0x7b, 0xfa, 0x08, 0x47, 0xb4];
    let file = npy_raw("|V1", "(2, 4)", &v1);
    assert_eq!(
        widened(&dir, &widen(&dir, "f8e4m3", &file)),
        [
            0x3f80_0000,
            0x8000_0000,
            0x3b00_0000,
            0x43b0_0000,
            0xc3a0_0000,
            0x3c80_0000,
            0x4070_0000,
            0xbf40_0000
        ]
    );
    assert_eq!(
        widened(&dir, &widen(&dir, "f8e5m2", &file)),
        [
            0x3f00_0000,
            0x8000_0000,
            0x3780_0000,
            0x4760_0000,
            0xc740_0000,
            0x3900_0000,
            0x40e0_0000,
            0xbe80_0000
        ]
    );

    // A void width that is not the parameter's is refused, naming the parameter, the
    // file's dtype and the parameter's dtype.
    let cases = [
        ("<V2", le16(&v2), "f8e4m3"),
        ("|V1", v1.to_vec(), "bf16"),
        ("|V1", v1.to_vec(), "f32"),
    ];
    for (descr, data, dtype) in cases {
        let out = widen(&dir, dtype, &npy_raw(descr, "(2, 4)", &data));
        for needle in [
            "input `x`".to_string(),
            format!("'{descr}'"),
            format!("{dtype}[2, 4]"),
            format!("but {dtype} has"),
        ] {
            fails(&out, 1, &needle);
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn endless_inputs_folders_and_fifos_give_one_error() {
    let dir = scratch("endless");
    setup(&dir);
    std::fs::create_dir(dir.join("folder")).unwrap();
    if Path::new("/dev/zero").exists() {
        fails(&tessera(&dir, &["check", "/dev/zero"]), 1, "too large");
        fails(
            &tessera(&dir, &["run", "/dev/zero", "--random", "1", "-o", "o"]),
            1,
            "too large",
        );
        fails(&tessera(&dir, &["disasm", "/dev/zero"]), 1, "bad magic");
        fails(
            &tessera(&dir, &["run", "one.tsr", "-i", "x=/dev/zero", "-o", "o"]),
            1,
            "not a .npy file",
        );
    }
    // A source file larger than the limit is refused without being read.
    let big = std::fs::File::create(dir.join("big.tsr")).unwrap();
    big.set_len(65 << 20).unwrap();
    drop(big);
    fails(&tessera(&dir, &["check", "big.tsr"]), 1, "at most 64 MiB");
    fails(&tessera(&dir, &["check", "folder"]), 1, "it is a folder");
    fails(
        &tessera(&dir, &["run", "one.tsr", "-i", "x=folder", "-o", "o"]),
        1,
        "it is a folder",
    );
    fails(
        &tessera(&dir, &["asm", "folder", "-o", "p.tbin"]),
        1,
        "it is a folder",
    );
    // A named pipe with no writer would block the open; it is refused instead.
    let made = Command::new("mkfifo")
        .arg(dir.join("fifo"))
        .status()
        .is_ok_and(|s| s.success());
    if made {
        fails(&tessera(&dir, &["check", "fifo"]), 1, "named pipe");
        fails(
            &tessera(&dir, &["run", "one.tsr", "-i", "x=fifo", "-o", "o"]),
            1,
            "named pipe",
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[cfg(unix)]
#[test]
fn output_paths_write_through_links_and_into_fifos() {
    use std::os::unix::fs::{symlink, FileTypeExt};
    let dir = scratch("links");
    setup(&dir);
    let asm = ok(&tessera(&dir, &["compile", "one.tsr", "--emit", "asm"]));
    // A link to an existing file: the file gets the output, the link stays.
    std::fs::write(dir.join("real.s"), "old").unwrap();
    symlink("real.s", dir.join("link.s")).unwrap();
    ok(&tessera(
        &dir,
        &["compile", "one.tsr", "--emit", "asm", "-o", "link.s"],
    ));
    assert!(std::fs::symlink_metadata(dir.join("link.s"))
        .unwrap()
        .file_type()
        .is_symlink());
    assert_eq!(std::fs::read_to_string(dir.join("real.s")).unwrap(), asm);
    // A dangling link: its target is created.
    std::fs::create_dir(dir.join("sub")).unwrap();
    symlink("sub/new.tbin", dir.join("dangling.tbin")).unwrap();
    ok(&tessera(&dir, &["asm", "real.s", "-o", "dangling.tbin"]));
    assert!(std::fs::symlink_metadata(dir.join("dangling.tbin"))
        .unwrap()
        .file_type()
        .is_symlink());
    assert_eq!(
        std::fs::read(dir.join("sub/new.tbin")).unwrap(),
        std::fs::read(dir.join("one.tbin")).unwrap()
    );
    // --trace, --report-json and the results of run also write through links.
    std::fs::create_dir(dir.join("out")).unwrap();
    for (link, target) in [
        ("t.json", "trace.json"),
        ("r.json", "report.json"),
        ("out/out0.npy", "../result.npy"),
    ] {
        symlink(target, dir.join(link)).unwrap();
    }
    let args = [
        "run",
        "one.tsr",
        "--random",
        "1",
        "-o",
        "out",
        "--trace",
        "t.json",
        "--report-json",
        "r.json",
    ];
    ok(&tessera(&dir, &args));
    for (link, target) in [
        ("t.json", "trace.json"),
        ("r.json", "report.json"),
        ("out/out0.npy", "result.npy"),
    ] {
        let meta = std::fs::symlink_metadata(dir.join(link)).unwrap();
        assert!(meta.file_type().is_symlink(), "{link}");
        assert!(dir.join(target).is_file(), "{target}");
    }
    assert_eq!(npy_values(&dir.join("result.npy")).len(), 6);
    // A FIFO is written into, not replaced. Opening it for reading and writing does not
    // block (Linux), and the output fits the pipe's buffer.
    let made = Command::new("mkfifo")
        .arg(dir.join("fifo.s"))
        .status()
        .is_ok_and(|s| s.success());
    if made && cfg!(target_os = "linux") {
        let mut fifo = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(dir.join("fifo.s"))
            .unwrap();
        ok(&tessera(
            &dir,
            &["compile", "one.tsr", "--emit", "asm", "-o", "fifo.s"],
        ));
        let kind = std::fs::symlink_metadata(dir.join("fifo.s"))
            .unwrap()
            .file_type();
        assert!(kind.is_fifo(), "the FIFO was replaced");
        let mut got = vec![0; asm.len()];
        fifo.read_exact(&mut got).unwrap();
        assert_eq!(String::from_utf8(got).unwrap(), asm);
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn check_prints_nan_and_infinite_maxima() {
    use tessera::driver::compare;
    let exact = [0.0f32; 4];
    // NaN where the reference is finite, before and after finite errors.
    let c = compare(&[1.5, f32::NAN, 2.0], &[1.0, 1.0, 2.0], &[1.0; 3]);
    assert!(c.max_abs.is_nan() && c.max_rel.is_nan(), "{c:?}");
    assert_eq!(
        c.line(0),
        "out0: max abs error NaN, max rel error NaN; worst out0[1]: error NaN of the allowed \
         1.000e0 (NaN), 1 elements outside the allowed error"
    );
    let c = compare(&[f32::NAN; 4], &[0.0; 4], &exact);
    assert_eq!(
        c.line(1),
        "out1: max abs error NaN, max rel error NaN; worst out1[0]: error NaN of the allowed \
         0.000e0 (none was allowed), 4 elements outside the allowed error"
    );
    // A finite value where the reference is NaN.
    assert!(compare(&[1.0], &[f32::NAN], &exact).max_abs.is_nan());
    // An infinity against a finite value.
    let c = compare(&[f32::INFINITY, 1.0], &[1.0, 1.0], &[1e30; 2]);
    assert_eq!(
        c.line(0),
        "out0: max abs error inf, max rel error inf; worst out0[0]: error inf of the allowed \
         1.000e30 (inf), 1 elements outside the allowed error"
    );
    // NaN meeting NaN and an infinity meeting the same infinity are equal.
    let c = compare(
        &[f32::NAN, f32::INFINITY, 1.0],
        &[f32::NAN, f32::INFINITY, 1.0],
        &exact,
    );
    assert_eq!(
        c.line(0),
        "out0: max abs error 0.000e0, max rel error 0.000e0; every element exact"
    );
    // Within the bound: the line says how much of it the worst element used.
    let c = compare(&[1.25, 2.0], &[1.0, 2.0], &[1.0, 0.0]);
    assert_eq!(
        c.line(0),
        "out0: max abs error 2.500e-1, max rel error 2.500e-1; worst out0[0]: error 2.500e-1 \
         of the allowed 1.000e0 (0.25)"
    );
}

/// The program of `kernel k(x: f32[4, 4]) -> f32[4, 4] { return x * 2.0; }` with its
/// input renamed `out0` and its output `y`: the input's random file and the result file
/// are both `DIR/out0.npy`.
#[test]
fn a_random_input_named_like_a_result_file_is_not_written() {
    let dir = scratch("out0");
    std::fs::write(
        dir.join("k.tsr"),
        "kernel k(x: f32[4, 4]) -> f32[4, 4] {\n    return x * 2.0;\n}\n",
    )
    .unwrap();
    let asm = ok(&tessera(&dir, &["compile", "k.tsr", "--emit", "asm"]));
    let renamed = asm
        .replace(".tensor out0 output", ".tensor y output")
        .replace(".tensor x input", ".tensor out0 input");
    assert_ne!(renamed, asm);
    std::fs::write(dir.join("k.s"), renamed).unwrap();
    ok(&tessera(&dir, &["asm", "k.s", "-o", "k.tbin"]));
    let out = tessera(&dir, &["run", "k.tbin", "--random", "1", "-o", "d"]);
    ok(&out);
    let err = stderr(&out);
    assert!(
        err.contains("note: the random input `out0` is not written to")
            && err.contains("result 0 is written there"),
        "{err}"
    );
    assert_eq!(err.lines().count(), 1, "{err}");
    let names: Vec<_> = std::fs::read_dir(dir.join("d"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names, vec!["out0.npy".to_string()]);
    assert_eq!(npy_values(&dir.join("d/out0.npy")), twice_random_out0());
    let _ = std::fs::remove_dir_all(&dir);
}

/// A parameter may be called `out0`: the program's result tensor takes another name
/// (`out0_1`), the result file is still `out0.npy`, and the random input of that name is
/// not written over it.
#[test]
fn a_parameter_named_out0_runs() {
    let dir = scratch("param-out0");
    std::fs::write(
        dir.join("k.tsr"),
        "kernel k(out0: f32[4, 4]) -> f32[4, 4] {\n    return out0 * 2.0;\n}\n",
    )
    .unwrap();
    let out = tessera(
        &dir,
        &["run", "k.tsr", "--random", "1", "-o", "d", "--check"],
    );
    ok(&out);
    assert!(stderr(&out).contains("note: the random input `out0` is not written"));
    assert_eq!(npy_values(&dir.join("d/out0.npy")), twice_random_out0());
    let _ = std::fs::remove_dir_all(&dir);
}

/// `2 * out0` for the `f32[4, 4]` input `out0` that `--random 1` makes: what the kernels
/// with a parameter named `out0` write to `out0.npy`.
fn twice_random_out0() -> Vec<f32> {
    let spec = tessera::driver::ParamSpec {
        name: "out0".into(),
        dtype: isa::Dtype::F32,
        shape: vec![4, 4],
        index_bound: None,
    };
    let x = tessera::driver::random_tensor(&spec, 1, 0);
    x.data.iter().map(|v| v * 2.0).collect()
}

/// `--check` allows for the wider intermediates the language permits: an f32 result computed from
/// a bf16 intermediate is held to bf16's tolerance (it failed with f32's, 7.8e-3 off), and
/// `run --dtype-policy strict` rounds every intermediate as the reference does, so the
/// result is exact.
#[test]
fn check_allows_for_wider_intermediates_and_strict_is_exact() {
    let dir = scratch("wide-check");
    std::fs::write(
        dir.join("k.tsr"),
        "kernel k(x: bf16[128, 64], y: f32[128, 64]) -> f32[128, 64] {\n    \
         return rsqrt(abs(x) + 0.5) + y;\n}\n",
    )
    .unwrap();
    let wide = ok(&tessera(
        &dir,
        &["run", "k.tsr", "--random", "3", "-o", "w", "--check"],
    ));
    assert!(!wide.contains("outside the allowed error"), "{wide}");
    let strict = ok(&tessera(
        &dir,
        &[
            "run",
            "k.tsr",
            "--random",
            "3",
            "-o",
            "s",
            "--check",
            "--dtype-policy",
            "strict",
        ],
    ));
    assert!(
        strict.contains("max abs error 0.000e0, max rel error 0.000e0; every element exact"),
        "{strict}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// An `i32` parameter takes int32, int64, int16, int8, uint8 and uint16 `.npy` files (in
/// either byte order), read exactly; an `i32` result is written as an int32 `.npy`, exact
/// beyond 2^24; an int64 value outside the i32 range, a float file for an i32 parameter
/// and an integer file for a float parameter are one error each, naming the file.
#[test]
fn integer_npy_inputs_and_int32_outputs() {
    let dir = scratch("integers");
    let kernel = "kernel wrap(n: i32[2, 3]) -> i32[2, 3] {\n    return n + 2147483647;\n}\n";
    std::fs::write(dir.join("wrap.tsr"), kernel).unwrap();
    std::fs::write(dir.join("one.tsr"), DOUBLE).unwrap();
    let values: [i64; 6] = [-2147483648, -7, 0, 1, 16777217, 2147483647];
    let want: Vec<i32> = values
        .iter()
        .map(|&v| (v as i32).wrapping_add(i32::MAX))
        .collect();
    let le = |w: usize| -> Vec<u8> {
        values
            .iter()
            .flat_map(|&v| v.to_le_bytes()[..w].to_vec())
            .collect()
    };
    let be4: Vec<u8> = values
        .iter()
        .flat_map(|&v| (v as i32).to_be_bytes())
        .collect();
    for (descr, data) in [("<i4", le(4)), (">i4", be4), ("<i8", le(8))] {
        std::fs::write(dir.join("n.npy"), npy_raw(descr, "(2, 3)", &data)).unwrap();
        ok(&tessera(
            &dir,
            &["run", "wrap.tsr", "-i", "n=n.npy", "-o", "o", "--check"],
        ));
        let out = runtime::npy::read_npy(&std::fs::read(dir.join("o/out0.npy")).unwrap()).unwrap();
        assert_eq!(out.dtype_name(), "int32", "{descr}");
        assert_eq!(out.to_i32().unwrap(), want, "{descr}");
    }
    // Narrow integer files.
    for (descr, data, first) in [
        ("|u1", vec![255u8, 1, 2, 3, 4, 5], 255i32),
        ("|i1", vec![0x80u8, 1, 2, 3, 4, 5], -128),
        ("<u2", le16(&[65535, 1, 2, 3, 4, 5]), 65535),
        ("<i2", le16(&[0x8000, 1, 2, 3, 4, 5]), -32768),
    ] {
        std::fs::write(dir.join("n.npy"), npy_raw(descr, "(2, 3)", &data)).unwrap();
        ok(&tessera(
            &dir,
            &["run", "wrap.tsr", "-i", "n=n.npy", "-o", "o"],
        ));
        let out = runtime::npy::read_npy(&std::fs::read(dir.join("o/out0.npy")).unwrap()).unwrap();
        assert_eq!(
            out.to_i32().unwrap()[0],
            first.wrapping_add(i32::MAX),
            "{descr}"
        );
    }
    let big: Vec<u8> = [1i64, 2, 3, -2147483649, 5, 6]
        .iter()
        .flat_map(|v| v.to_le_bytes())
        .collect();
    std::fs::write(dir.join("big.npy"), npy_raw("<i8", "(2, 3)", &big)).unwrap();
    fails(
        &tessera(&dir, &["run", "wrap.tsr", "-i", "n=big.npy", "-o", "o"]),
        1,
        "big.npy: input `n`: the int64 value -2147483649 (element 3 in C order) does not fit in i32",
    );
    std::fs::write(dir.join("f.npy"), npy_raw("<f4", "(2, 3)", &[0u8; 24])).unwrap();
    fails(
        &tessera(&dir, &["run", "wrap.tsr", "-i", "n=f.npy", "-o", "o"]),
        1,
        "f.npy: input `n` (i32[2, 3]): the .npy dtype '<f4' does not fit the i32 parameter",
    );
    fails(
        &tessera(&dir, &["run", "one.tsr", "-i", "x=big.npy", "-o", "o"]),
        1,
        "big.npy: input `x` (f32[2, 3]): the .npy dtype '<i8' does not fit the f32 parameter",
    );
}
