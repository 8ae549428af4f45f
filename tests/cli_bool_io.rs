//! `bool` tensors through the command line: a `bool` parameter takes a bool `.npy`
//! (`'|b1'`) and nothing else, a `bool` result is written as a bool `.npy`, and `--random`
//! fills a `bool` parameter with 0s and 1s, all checked against the reference.

use std::path::{Path, PathBuf};
use std::process::Command;

/// A fresh scratch folder for the tests of this file.
fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("tessera-cli-bool-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("creating a scratch folder");
    dir
}

/// A version 1.0 `.npy` with the given `descr`, 1-d shape and raw data bytes.
fn npy(descr: &str, len: usize, data: &[u8]) -> Vec<u8> {
    let mut header = format!("{{'descr': '{descr}', 'fortran_order': False, 'shape': ({len},), }}");
    while (10 + header.len() + 1) % 64 != 0 {
        header.push(' ');
    }
    header.push('\n');
    let mut out = b"\x93NUMPY\x01\x00".to_vec();
    out.extend_from_slice(&(header.len() as u16).to_le_bytes());
    out.extend_from_slice(header.as_bytes());
    out.extend_from_slice(data);
    out
}

fn tessera(dir: &Path, args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_tessera"))
        .current_dir(dir)
        .args(args)
        .output()
        .expect("running tessera")
}

const KERNEL: &[u8] = b"kernel k(x: f32[8], m: bool[8]) -> (bool[8], f32[8]) {\n    \
    let c = logical_and(x > 0.0, logical_not(m));\n    return (c, where(c, x, -1.0));\n}\n";

#[test]
fn bool_inputs_and_results_are_bool_npy() {
    let dir = scratch("io");
    std::fs::write(dir.join("k.tsr"), KERNEL).expect("writing");
    let xs: [f32; 8] = [1.0, -2.0, 3.0, 0.0, -0.0, 5.0, f32::NAN, 7.0];
    let x_bytes: Vec<u8> = xs.iter().flat_map(|v| v.to_le_bytes()).collect();
    std::fs::write(dir.join("x.npy"), npy("<f4", 8, &x_bytes)).expect("writing");
    let ms = [0u8, 0, 1, 0, 0, 0, 0, 1];
    std::fs::write(dir.join("m.npy"), npy("|b1", 8, &ms)).expect("writing");
    let out = tessera(
        &dir,
        &[
            "run", "k.tsr", "-i", "x=x.npy", "-i", "m=m.npy", "--check", "-o", "out",
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let c = std::fs::read(dir.join("out/out0.npy")).expect("out0.npy");
    assert!(String::from_utf8_lossy(&c[..80]).contains("'descr': '|b1'"));
    // x > 0 and not m: elements 0 and 5 (NaN > 0 is false).
    assert_eq!(c[c.len() - 8..], [1, 0, 0, 0, 0, 1, 0, 0]);
    let w = std::fs::read(dir.join("out/out1.npy")).expect("out1.npy");
    let w: Vec<f32> = w[w.len() - 32..]
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect();
    assert_eq!(w, [1.0, -1.0, -1.0, -1.0, -1.0, 5.0, -1.0, -1.0]);

    // A float file for a bool parameter is an error naming the parameter; nothing written.
    std::fs::write(dir.join("mf.npy"), npy("<f4", 8, &x_bytes)).expect("writing");
    let _ = std::fs::remove_dir_all(dir.join("bad"));
    let out = tessera(
        &dir,
        &[
            "run", "k.tsr", "-i", "x=x.npy", "-i", "m=mf.npy", "-o", "bad",
        ],
    );
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("`m`") && err.contains("bool"), "{err}");
    assert!(!dir.join("bad/out0.npy").exists());

    // --random fills the bool parameter with 0s and 1s, written as a bool .npy.
    let out = tessera(
        &dir,
        &["run", "k.tsr", "--random", "3", "--check", "-o", "rnd"],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let m = std::fs::read(dir.join("rnd/m.npy")).expect("m.npy");
    assert!(String::from_utf8_lossy(&m[..80]).contains("'|b1'"));
    assert!(m[m.len() - 8..].iter().all(|&b| b <= 1));
    let _ = std::fs::remove_dir_all(&dir);
}
