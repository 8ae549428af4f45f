//! The interpreter and the reference evaluator give the same bits and the same cycles
//! whatever the thread count and instruction set: each kernel runs through the `tessera`
//! binary with one thread, with two, with two and the scalar fallback forced, and with two
//! and AVX2 on an AVX-512 host (`TESSERA_THREADS`, `TESSERA_SIMD=scalar`, `avx2`), and with
//! `run --check`'s reference after the interpreter instead of beside it
//! (`TESSERA_CHECK=sequential`), and the outputs, the timing report and the
//! `--check` lines (the reference's comparison) must be identical byte for byte. On a host
//! with FMA the default path fuses the bf16 matmuls' multiply-adds (their products are
//! exact), so the comparison with the scalar path also proves that fusing changes no bit.
//!
//! The kernels are large enough that their matmul instructions exceed the interpreter's
//! threshold for sharing panels between threads, and that the reference's matmuls and
//! elementwise loops are split between threads (the 300 x 520 x 700 matmul's by columns,
//! the few-rows-many-columns case).

use std::path::{Path, PathBuf};
use std::process::Command;

/// A fresh scratch folder for one run.
fn scratch(name: &str) -> PathBuf {
    let dir =
        std::env::temp_dir().join(format!("tessera-determinism-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("creating a scratch folder");
    dir
}

/// Runs `tessera run FILE ARGS --random 1 --check --report` under `env`; returns stdout and
/// every written output file's bytes, in name order.
fn run(file: &str, args: &[&str], env: &[(&str, &str)], tag: &str) -> (String, Vec<Vec<u8>>) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let dir = scratch(tag);
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_tessera"));
    cmd.current_dir(root)
        .arg("run")
        .arg(file)
        .args(args)
        .args(["--random", "1", "--check", "--report", "-o"])
        .arg(&dir)
        .env_remove("TESSERA_THREADS")
        .env_remove("TESSERA_SIMD")
        .env_remove("TESSERA_CHECK");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().expect("running tessera");
    assert_eq!(
        out.status.code(),
        Some(0),
        "{file} under {env:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut names: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("reading the outputs")
        .map(|e| e.expect("a folder entry").path())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("out"))
        })
        .collect();
    names.sort();
    assert!(!names.is_empty(), "{file}: no outputs written");
    let files = names
        .iter()
        .map(|p| std::fs::read(p).expect("reading an output"))
        .collect();
    let _ = std::fs::remove_dir_all(&dir);
    (String::from_utf8_lossy(&out.stdout).into_owned(), files)
}

fn same_everywhere(file: &str, args: &[&str], tag: &str) {
    let settings: [&[(&str, &str)]; 5] = [
        &[("TESSERA_THREADS", "1")],
        &[("TESSERA_THREADS", "2")],
        // The reference after the interpreter, on the machine's copy of the inputs, where
        // the default runs them at once when the memory estimate allows.
        &[("TESSERA_THREADS", "2"), ("TESSERA_CHECK", "sequential")],
        &[("TESSERA_THREADS", "2"), ("TESSERA_SIMD", "scalar")],
        // On an AVX-512 host the default path uses it; this one the AVX2 kernels.
        &[("TESSERA_THREADS", "2"), ("TESSERA_SIMD", "avx2")],
    ];
    let runs: Vec<(String, Vec<Vec<u8>>)> = settings
        .iter()
        .enumerate()
        .map(|(i, env)| run(file, args, env, &format!("{tag}-{i}")))
        .collect();
    let (report, outputs) = &runs[0];
    assert!(report.contains("total "), "{file}: no report\n{report}");
    assert!(
        report.contains("out0: max abs error"),
        "{file}: no check\n{report}"
    );
    for (env, (r, o)) in settings.iter().zip(&runs).skip(1) {
        assert_eq!(
            r, report,
            "{file}: the report or check differs under {env:?}"
        );
        assert!(o == outputs, "{file}: the output bits differ under {env:?}");
    }
}

#[test]
fn llama_layer_is_deterministic() {
    same_everywhere("bench/llama_layer.tsr", &[], "llama");
}

#[test]
fn matmul_and_attention_are_deterministic() {
    same_everywhere(
        "bench/matmul.tsr",
        &[
            "-k",
            "matmul_bf16_f32",
            "-D",
            "M=300",
            "-D",
            "K=520",
            "-D",
            "N=700",
        ],
        "matmul",
    );
    same_everywhere("bench/attention.tsr", &["-D", "S=512"], "attention");
}

/// A softmax, a convolution (a matmul over its window matrix), and integer work (an
/// argmax over long rows, an embedding gather with `i32` indices, an in-order running sum):
/// the instructions besides the matmul, on every path.
#[test]
fn softmax_conv_and_integer_kernels_are_deterministic() {
    same_everywhere(
        "bench/real/softmax_bf16.tsr",
        &["-D", "N=256", "-D", "D=1024"],
        "softmax",
    );
    same_everywhere(
        "bench/real/resnet50_conv3_3x3.tsr",
        &["-D", "B=2", "-D", "H=14"],
        "conv",
    );
    same_everywhere(
        "bench/real/argmax_greedy_decode.tsr",
        &["-D", "V=20000"],
        "argmax",
    );
    same_everywhere(
        "bench/real/embedding_lookup.tsr",
        &["-D", "V=1000", "-D", "D=256", "-D", "T=256"],
        "embedding",
    );
    same_everywhere("bench/real/cumsum_rows.tsr", &["-D", "N=256"], "cumsum");
}
