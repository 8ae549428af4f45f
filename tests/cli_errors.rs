//! Every error class of the command line (README.md) and of the language
//! (`docs/language.md`, Errors), driven through the binary: one table of cases, each with
//! its exit code and an insta snapshot of its stderr (`tests/snapshots/cli_errors__*`).
//! For every case stdout must be empty (it holds only requested output) and the output
//! folder must hold nothing new (no partial or temporary file is left behind).
//!
//! Exit 3 (`--check` found a mismatch) cannot be reached honestly through the binary
//! without a compiler bug, so it is tested through the driver's comparison and error type
//! (`check_mismatch_exits_3`).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

/// A fresh scratch folder for the tests of this file.
fn scratch(name: &str) -> PathBuf {
    let dir =
        std::env::temp_dir().join(format!("tessera-cli-errors-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("creating a scratch folder");
    dir
}

/// The names of the files below `dir`, relative to it.
fn listing(dir: &Path) -> BTreeSet<String> {
    fn walk(root: &Path, dir: &Path, out: &mut BTreeSet<String>) {
        for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
            let path = entry.path();
            if path.is_dir() {
                walk(root, &path, out);
            } else if let Ok(rel) = path.strip_prefix(root) {
                out.insert(rel.display().to_string());
            }
        }
    }
    let mut out = BTreeSet::new();
    walk(dir, dir, &mut out);
    out
}

/// A valid `.npy` of f32 values.
fn npy(shape: &[u64]) -> Vec<u8> {
    let n = shape.iter().product::<u64>() as usize;
    let data: Vec<f32> = (0..n).map(|i| i as f32 * 0.5).collect();
    runtime::npy::write_npy(shape, &data)
}

/// `bytes` with the first occurrence of `from` replaced by `to` (same length).
fn patch(bytes: &[u8], from: &str, to: &str) -> Vec<u8> {
    assert_eq!(from.len(), to.len());
    let mut out = bytes.to_vec();
    if let Some(at) = out.windows(from.len()).position(|w| w == from.as_bytes()) {
        out[at..at + to.len()].copy_from_slice(to.as_bytes());
    }
    out
}

/// A program that decodes but does not verify: a matmul on the Vector engine.
fn unverifiable_tbin() -> Vec<u8> {
    let mut p = isa::Program::new(isa::Preset::Default);
    p.hbm_size = 64;
    let tile = |offset| isa::TileAp::new(isa::Mem::Sbuf, isa::Dtype::F32, 0, 4, offset, &[(4, 1)]);
    let vector = isa::Engine::Vector.index();
    p.streams[vector].insert(
        0,
        isa::Inst::new(isa::Op::Matmul {
            out: isa::TileAp::new(isa::Mem::Psum, isa::Dtype::F32, 0, 4, 0, &[(4, 1)]),
            stationary: tile(0),
            moving: tile(64),
            accumulate: false,
        }),
    );
    isa::encode_program(&p)
}

/// A program that asks for 10^13 bytes of HBM.
fn huge_tbin() -> Vec<u8> {
    let mut p = isa::Program::new(isa::Preset::Default);
    p.hbm_size = 10_000_000_000_000;
    p.tensors.push(isa::TensorDecl {
        name: "x".into(),
        role: isa::Role::Input,
        dtype: isa::Dtype::F32,
        shape: vec![2_500_000_000_000],
        offset: 0,
    });
    isa::encode_program(&p)
}

/// Writes the files the cases use into `dir`.
fn setup(dir: &Path) {
    let w = |name: &str, bytes: &[u8]| std::fs::write(dir.join(name), bytes).expect("writing");
    w(
        "one.tsr",
        b"kernel double(x: f32[2, 3]) -> f32[2, 3] {\n    return x + x;\n}\n",
    );
    w(
        "two.tsr",
        b"kernel a(x: f32[4]) -> f32[4] {\n    return x;\n}\n\nkernel b(x: f32[4]) -> f32[4] {\n    return -x;\n}\n",
    );
    w(
        "integers.tsr",
        b"kernel k(x: f32[2, 3]) -> f32[4, 3] {\n    return take(x, arange(4) * 2);\n}\n",
    );
    w(
        "sized.tsr",
        b"kernel k<N = 4>(x: f32[N]) -> f32[N] {\n    return x;\n}\n",
    );
    w(
        "huge.tsr",
        b"kernel big(x: f32[10000000, 1000000]) -> f32[10000000, 1000000] {\n    return x + x;\n}\n",
    );
    w(
        "unknown_character.tsr",
        b"kernel k(x: f32[4]) -> f32[4] {\n    let y = x $ 2;\n    return x;\n}\n",
    );
    w(
        "unexpected_token.tsr",
        b"kernel k(x: f32[4]) -> f32[4] {\n    return x + ;\n}\n",
    );
    w(
        "unknown_name.tsr",
        b"kernel k(x: f32[4]) -> f32[4] {\n    return exp(y);\n}\n",
    );
    w(
        "broadcast.tsr",
        b"kernel k(x: f32[4, 3], y: f32[5]) -> f32[4, 3] {\n    return x + y;\n}\n",
    );
    w(
        "matmul_inner.tsr",
        b"kernel k(a: bf16[128, 64], b: bf16[32, 10]) -> f32[128, 10] {\n    return a @ b;\n}\n",
    );
    w(
        "result_mismatch.tsr",
        b"kernel k(x: f32[4]) -> f32[8] {\n    return x;\n}\n",
    );
    w(
        "not_utf8.tsr",
        b"kernel k(x: f32[4]) -> f32[4] {\xff\xfe}\n",
    );
    w("x_ok.npy", &npy(&[2, 3]));
    w("x_shape.npy", &npy(&[3, 2]));
    w("x_dtype.npy", &patch(&npy(&[2, 3]), "<f4", "<i4"));
    // Untyped 1-byte data (ml_dtypes' FP8) for an f32 parameter: 6 bytes of data, not 24.
    let mut void = patch(&npy(&[2, 3]), "<f4", "|V1");
    void.truncate(void.len() - 18);
    w("x_void_width.npy", &void);
    let ok = npy(&[2, 3]);
    w("x_truncated.npy", &ok[..ok.len() - 7]);
    w("x_not_npy.npy", b"x,y\n1,2\n");
    w("garbage.tbin", b"\x7fELF this is not a tessera program");
    w("unverifiable.tbin", &unverifiable_tbin());
    w("huge.tbin", &huge_tbin());
    w("garbage.s", b"this is not assembly\n");
    w(
        "racy.s",
        b".preset default\n.hbm 1024\n.tensor x input f32 [4, 8] @0\n.tensor y output f32 [4, 8] @512\n\n\
          .stream vector\n    memset out=sbuf.f32[0:4, 0; 8:1], value=1.0\n    end\n\n\
          .stream dma0\n    dma dst=sbuf.f32[0:4, 0; 8:1], src=hbm.f32[0; 4:8, 8:1]\n    end\n\n\
          .stream dma1\n    dma dst=hbm.f32[512; 4:8, 8:1], src=sbuf.f32[0:4, 0; 8:1]\n    end\n",
    );
    w(
        "psum_group.s",
        b".preset default\n.hbm 1024\n.tensor y output f32 [4, 8] @512\n\n\
          .stream tensor\n    wait(s0>=1) matmul out=psum.f32[0:4, 0; 8:1], stationary=sbuf.f32[0:4, 0; 4:1], moving=sbuf.f32[0:4, 64; 8:1], accumulate=false\n\
          \x20   matmul out=psum.f32[0:4, 16; 4:1], stationary=sbuf.f32[0:4, 0; 4:1], moving=sbuf.f32[0:4, 64; 4:1], accumulate=true signal(s1)\n    end\n\n\
          .stream vector\n    memset out=sbuf.f32[0:4, 0; 64:1], value=1.0 signal(s0)\n\
          \x20   wait(s1>=1) tensor_copy out=sbuf.f32[0:4, 0; 8:1], src=psum.f32[0:4, 0; 8:1] signal(s2)\n    end\n\n\
          .stream dma1\n    wait(s2>=1) dma dst=hbm.f32[512; 4:8, 8:1], src=sbuf.f32[0:4, 0; 8:1]\n    end\n",
    );
    w(
        "uninitialised.s",
        b".preset default\n.hbm 1024\n.tensor y output f32 [4, 8] @512\n\n\
          .stream dma1\n    dma dst=hbm.f32[512; 4:8, 8:1], src=sbuf.f32[0:4, 0; 8:1]\n    end\n",
    );
}

/// One case of the table: a name (the snapshot's), arguments, the expected exit code.
struct Case {
    name: &'static str,
    args: &'static [&'static str],
    exit: i32,
}

const fn case(name: &'static str, args: &'static [&'static str], exit: i32) -> Case {
    Case { name, args, exit }
}

/// Every error class, with its exit code (README.md: 1 user program or input, 2 usage).
const CASES: &[Case] = &[
    // Usage (2).
    case("unknown_flag", &["run", "one.tsr", "--no-such-flag"], 2),
    case("unknown_command", &["frobnicate"], 2),
    case("missing_file_argument", &["run"], 2),
    case("missing_flag_value", &["run", "one.tsr", "-k"], 2),
    case(
        "bad_number_flag",
        &["run", "one.tsr", "--random", "seven"],
        2,
    ),
    case(
        "kernel_needed_with_several",
        &["run", "two.tsr", "--random", "1", "-o", "out"],
        2,
    ),
    case(
        "define_without_value",
        &["compile", "sized.tsr", "-D", "N", "--emit", "asm"],
        2,
    ),
    case(
        "define_not_integer",
        &["compile", "sized.tsr", "-D", "N=abc", "--emit", "asm"],
        2,
    ),
    case("input_flag_without_path", &["run", "one.tsr", "-i", "x"], 2),
    case(
        "input_given_twice",
        &[
            "run",
            "one.tsr",
            "-i",
            "x=x_ok.npy",
            "-i",
            "x=x_shape.npy",
            "-o",
            "out",
        ],
        2,
    ),
    case(
        "define_given_twice",
        &[
            "compile",
            "sized.tsr",
            "-D",
            "N=4",
            "-D",
            "N=8",
            "--emit",
            "asm",
        ],
        2,
    ),
    case(
        "unknown_pass",
        &[
            "compile",
            "one.tsr",
            "--disable-pass",
            "nope",
            "--emit",
            "asm",
        ],
        2,
    ),
    case(
        "pass_flag_on_tbin",
        &["run", "racy.tbin", "--disable-pass", "fusion", "-o", "out"],
        2,
    ),
    case(
        "run_unknown_pass",
        &["run", "one.tsr", "--random", "1", "--disable-pass", "nope"],
        2,
    ),
    case(
        "kernel_flag_on_tbin",
        &["run", "garbage.tbin", "-k", "a", "-o", "out"],
        2,
    ),
    // Source files (1).
    case("missing_source_file", &["check", "no_such_file.tsr"], 1),
    case("source_not_utf8", &["check", "not_utf8.tsr"], 1),
    case(
        "unknown_kernel",
        &["run", "two.tsr", "-k", "c", "--random", "1", "-o", "out"],
        1,
    ),
    case(
        "unknown_define",
        &["compile", "sized.tsr", "-D", "M=3", "--emit", "asm"],
        1,
    ),
    case("unknown_character", &["check", "unknown_character.tsr"], 1),
    case("unexpected_token", &["check", "unexpected_token.tsr"], 1),
    case("unknown_name", &["check", "unknown_name.tsr"], 1),
    case("shapes_do_not_broadcast", &["check", "broadcast.tsr"], 1),
    case("matmul_inner_mismatch", &["check", "matmul_inner.tsr"], 1),
    case(
        "result_mismatch",
        &["run", "result_mismatch.tsr", "--random", "1", "-o", "out"],
        1,
    ),
    case(
        "kernel_too_big_for_hbm",
        &["run", "huge.tsr", "--random", "1", "-o", "out"],
        1,
    ),
    // Inputs (1).
    case("missing_input", &["run", "one.tsr", "-o", "out"], 1),
    case(
        "unknown_input_name",
        &["run", "one.tsr", "-i", "y=x_ok.npy", "-o", "out"],
        1,
    ),
    case(
        "input_file_missing",
        &["run", "one.tsr", "-i", "x=nothing.npy", "-o", "out"],
        1,
    ),
    case(
        "input_wrong_shape",
        &["run", "one.tsr", "-i", "x=x_shape.npy", "-o", "out"],
        1,
    ),
    case(
        "input_wrong_dtype",
        &["run", "one.tsr", "-i", "x=x_dtype.npy", "-o", "out"],
        1,
    ),
    case(
        "input_void_width",
        &["run", "one.tsr", "-i", "x=x_void_width.npy", "-o", "out"],
        1,
    ),
    case(
        "input_truncated",
        &["run", "one.tsr", "-i", "x=x_truncated.npy", "-o", "out"],
        1,
    ),
    case(
        "input_not_npy",
        &["run", "one.tsr", "-i", "x=x_not_npy.npy", "-o", "out"],
        1,
    ),
    // Programs (1).
    case("tbin_garbage", &["run", "garbage.tbin", "-o", "out"], 1),
    case(
        "tbin_does_not_verify",
        &["run", "unverifiable.tbin", "--random", "1", "-o", "out"],
        1,
    ),
    case(
        "tbin_too_big_for_hbm",
        &["run", "huge.tbin", "--random", "1", "-o", "out"],
        1,
    ),
    case(
        "check_on_tbin",
        &["run", "racy.tbin", "--check", "-o", "out"],
        1,
    ),
    case("disasm_garbage", &["disasm", "garbage.tbin"], 1),
    case("disasm_missing_file", &["disasm", "nothing.tbin"], 1),
    case(
        "asm_garbage",
        &["asm", "garbage.s", "-o", "out/garbage.tbin"],
        1,
    ),
    case(
        "asm_output_folder_missing",
        &["asm", "racy.s", "-o", "no/such/folder/p.tbin"],
        1,
    ),
    // Runaway programs and the interpreter's debug checks (1).
    case(
        "instruction_limit",
        &[
            "run",
            "one.tsr",
            "-i",
            "x=x_ok.npy",
            "--max-instructions",
            "2",
            "-o",
            "out",
        ],
        1,
    ),
    case(
        "cycle_limit",
        &[
            "run",
            "one.tsr",
            "-i",
            "x=x_ok.npy",
            "--max-cycles",
            "100",
            "-o",
            "out",
        ],
        1,
    ),
    case(
        "race",
        &[
            "run",
            "racy.tbin",
            "-i",
            "x=x_race.npy",
            "--debug-checks",
            "-o",
            "out",
        ],
        1,
    ),
    case(
        "psum_group",
        &["run", "psum_group.tbin", "--debug-checks", "-o", "out"],
        1,
    ),
    // A `take` with indices computed in the kernel runs on the machine; `arange(4) * 2`
    // leaves [-2, 2): the run faults at the gather, naming the kernel, the take's location
    // and the value, and writes no output.
    case(
        "computed_index_out_of_range",
        &["run", "integers.tsr", "-i", "x=x_ok.npy", "-o", "out"],
        1,
    ),
    case(
        "never_written_read",
        &["run", "uninitialised.tbin", "--debug-checks", "-o", "out"],
        1,
    ),
];

/// Replaces the scratch folder's path by `$DIR`, and the binary's name, in `text`.
fn normalise(text: &str, dir: &Path) -> String {
    text.replace(&dir.display().to_string(), "$DIR")
        .replace("tessera.exe", "tessera")
}

#[test]
fn every_error_class_has_its_exit_code_and_message() {
    let dir = scratch("table");
    setup(&dir);
    // Programs the binary itself assembles (they verify; the run finds what is wrong).
    for (s, tbin) in [
        ("racy.s", "racy.tbin"),
        ("psum_group.s", "psum_group.tbin"),
        ("uninitialised.s", "uninitialised.tbin"),
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_tessera"))
            .current_dir(&dir)
            .args(["asm", s, "-o", tbin])
            .output()
            .expect("running tessera");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    std::fs::write(dir.join("x_race.npy"), npy(&[4, 8])).expect("writing");
    let mut failures = Vec::new();
    for case in CASES {
        let out_dir = dir.join("out");
        let _ = std::fs::remove_dir_all(&out_dir);
        std::fs::create_dir_all(&out_dir).expect("creating out");
        let before = listing(&dir);
        let out = Command::new(env!("CARGO_BIN_EXE_tessera"))
            .current_dir(&dir)
            .args(case.args)
            .output()
            .expect("running tessera");
        let stderr = normalise(&String::from_utf8_lossy(&out.stderr), &dir);
        let code = out.status.code();
        if code != Some(case.exit) {
            failures.push(format!(
                "{}: exit {code:?}, expected {}\n{stderr}",
                case.name, case.exit
            ));
        }
        if !out.stdout.is_empty() {
            failures.push(format!(
                "{}: stdout is not empty: {}",
                case.name,
                String::from_utf8_lossy(&out.stdout)
            ));
        }
        if stderr.trim().is_empty() {
            failures.push(format!("{}: no message on stderr", case.name));
        }
        if stderr.contains("panicked") || stderr.contains("RUST_BACKTRACE") {
            failures.push(format!("{}: a panic: {stderr}", case.name));
        }
        let after = listing(&dir);
        let new: Vec<_> = after.difference(&before).collect();
        if !new.is_empty() {
            failures.push(format!("{}: files left behind: {new:?}", case.name));
        }
        insta::assert_snapshot!(case.name, format!("exit: {code:?}\n{stderr}"));
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn check_mismatch_exits_3() {
    use tessera::driver::{compare, DriverError};
    // An output outside its allowed error: what `run --check` turns into exit 3.
    let cmp = compare(&[1.0, 2.0, 3.5], &[1.0, 2.0, 3.0], &[0.0, 0.0, 0.25]);
    assert_eq!(cmp.bad, 1);
    assert_eq!(cmp.first_bad, Some((2, 3.5, 3.0, 0.25)));
    assert_eq!(
        cmp.mismatch(0).unwrap(),
        "out0[2] is 3.5, the reference says 3 (allowed error 2.500e-1)"
    );
    assert_eq!(
        DriverError::Mismatch("outputs differ".into()).exit_code(),
        3
    );
    // NaN must meet NaN, and a length difference counts.
    assert_eq!(compare(&[f32::NAN], &[1.0], &[1.0]).bad, 1);
    assert_eq!(compare(&[f32::NAN], &[f32::NAN], &[0.0]).bad, 0);
    assert_eq!(compare(&[1.0], &[1.0, 2.0], &[0.0, 0.0]).bad, 1);
}
