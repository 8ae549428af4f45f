//! `take` through the command line, on the machine: integer index files are read exactly,
//! negative indices count from the end, repeated indices repeat rows, and an index out of
//! range stops the run with exit 1, a message naming the kernel, the operand and the value
//! the user gave (as the reference's does), and no output file; for indices the kernel
//! computes, the message names the `take` by its source location.

use std::path::{Path, PathBuf};
use std::process::Command;

/// A fresh scratch folder for the tests of this file.
fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("tessera-cli-take-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("creating a scratch folder");
    dir
}

/// A version 1.0 `.npy` with the given `descr`, shape (as Python writes it) and raw data
/// bytes.
fn npy(descr: &str, shape: &str, data: &[u8]) -> Vec<u8> {
    let mut header = format!("{{'descr': '{descr}', 'fortran_order': False, 'shape': {shape}, }}");
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

/// A table of 40 rows of 8 and a lookup of 200 indices (two index tiles).
const KERNEL: &[u8] = b"kernel lookup(table: f32[40, 8], ids: i32[200]) -> f32[200, 8] {\n    \
    return take(table, ids);\n}\n";

/// Writes the kernel, a table whose row `r` holds `r * 8 + column`, and the indices.
fn setup(name: &str, ids: &[i64]) -> PathBuf {
    let dir = scratch(name);
    std::fs::write(dir.join("k.tsr"), KERNEL).expect("writing");
    let table: Vec<u8> = (0..320).flat_map(|v| (v as f32).to_le_bytes()).collect();
    std::fs::write(dir.join("table.npy"), npy("<f4", "(40, 8)", &table)).expect("writing");
    // int64, as NumPy makes integers by default.
    let bytes: Vec<u8> = ids.iter().flat_map(|v| v.to_le_bytes()).collect();
    let shape = format!("({},)", ids.len());
    std::fs::write(dir.join("ids.npy"), npy("<i8", &shape, &bytes)).expect("writing");
    dir
}

/// Reads a float32 `.npy` written by the CLI (header skipped by its stated length).
fn read_f32(path: &Path) -> Vec<f32> {
    let bytes = std::fs::read(path).expect("reading");
    let hlen = u16::from_le_bytes([bytes[8], bytes[9]]) as usize;
    bytes[10 + hlen..]
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect()
}

#[test]
fn negative_and_repeated_indices_select_rows() {
    // Negative indices from the end, repeats, the first and the last row.
    let ids: Vec<i64> = (0..200)
        .map(|i| [-1, 0, 39, -40, 7, 7, 7, -13][i % 8])
        .collect();
    let dir = setup("ok", &ids);
    let out = tessera(
        &dir,
        &[
            "run",
            "k.tsr",
            "-i",
            "table=table.npy",
            "-i",
            "ids=ids.npy",
            "--check",
            "-o",
            "out",
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("every element exact"), "{stdout}");
    let got = read_f32(&dir.join("out/out0.npy"));
    assert_eq!(got.len(), 200 * 8);
    for (j, &i) in ids.iter().enumerate() {
        let r = if i < 0 { i + 40 } else { i };
        for c in 0..8 {
            assert_eq!(got[j * 8 + c], (r * 8 + c as i64) as f32, "index {j}");
        }
    }
}

#[test]
fn an_index_out_of_range_names_kernel_operand_and_value_and_writes_nothing() {
    for (bad, at) in [(40i64, 150usize), (-41, 3), (1 << 20, 0)] {
        let mut ids: Vec<i64> = (0..200).map(|i| i % 40).collect();
        ids[at] = bad;
        let dir = setup(&format!("bad{at}"), &ids);
        let out = tessera(
            &dir,
            &[
                "run",
                "k.tsr",
                "-i",
                "table=table.npy",
                "-i",
                "ids=ids.npy",
                "-o",
                "out",
            ],
        );
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{stderr}");
        assert!(
            stderr.contains(&format!(
                "kernel `lookup`: the operand `ids` holds the index {bad}, outside [-40, 40)"
            )),
            "{stderr}"
        );
        // Where the machine stopped: the gather and its source line.
        assert!(stderr.contains("(dma_gather) at k.tsr:2:12"), "{stderr}");
        assert!(!dir.join("out/out0.npy").exists(), "an output was written");
        // The reference says the same in substance.
        let reference = tessera(
            &dir,
            &[
                "run",
                "k.tsr",
                "-i",
                "table=table.npy",
                "-i",
                "ids=ids.npy",
                "--reference",
                "-o",
                "ref",
            ],
        );
        let ref_err = String::from_utf8_lossy(&reference.stderr);
        assert_eq!(reference.status.code(), Some(1), "{ref_err}");
        assert!(
            ref_err.contains(&format!("kernel `lookup`: the operand `ids` holds the index {bad}, outside [-40, 40) for the axis `take` indexes")),
            "{ref_err}"
        );
        assert!(!dir.join("ref/out0.npy").exists());
    }
}

#[test]
fn random_indices_are_in_range_and_written_as_int32() {
    let dir = setup("random", &[0; 200]);
    let out = tessera(
        &dir,
        &["run", "k.tsr", "--random", "3", "--check", "-o", "out"],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let bytes = std::fs::read(dir.join("out/ids.npy")).expect("the random indices");
    let hlen = u16::from_le_bytes([bytes[8], bytes[9]]) as usize;
    let header = String::from_utf8_lossy(&bytes[10..10 + hlen]);
    assert!(header.contains("'descr': '<i4'"), "{header}");
    let ids: Vec<i32> = bytes[10 + hlen..]
        .chunks_exact(4)
        .map(|c| i32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect();
    assert_eq!(ids.len(), 200);
    assert!(ids.iter().all(|&i| (0..40).contains(&i)), "{ids:?}");
    // Running again from the written indices gives the same result.
    let again = tessera(
        &dir,
        &[
            "run",
            "k.tsr",
            "-i",
            "table=out/table.npy",
            "-i",
            "ids=out/ids.npy",
            "-o",
            "again",
        ],
    );
    assert!(
        again.status.success(),
        "{}",
        String::from_utf8_lossy(&again.stderr)
    );
    assert_eq!(
        read_f32(&dir.join("out/out0.npy")),
        read_f32(&dir.join("again/out0.npy"))
    );
}

/// A greedy-decoding lookup: the indices are the positions of the row maxima of `logits`,
/// shifted by `off` (an `i32` input), so the kernel computes them.
const COMPUTED: &[u8] =
    b"kernel greedy(table: f32[40, 8], logits: f32[200, 40], off: i32[200]) -> f32[200, 8] {\n    \
    return take(table, argmax(logits, axis=1) + off);\n}\n";

#[test]
fn a_computed_index_out_of_range_names_the_take_and_the_value() {
    let dir = scratch("computed");
    std::fs::write(dir.join("g.tsr"), COMPUTED).expect("writing");
    let table: Vec<u8> = (0..320).flat_map(|v| (v as f32).to_le_bytes()).collect();
    std::fs::write(dir.join("table.npy"), npy("<f4", "(40, 8)", &table)).expect("writing");
    // Row `j`'s maximum is at column `j % 40`.
    let logits: Vec<u8> = (0..200 * 40)
        .flat_map(|i| f32::from(u8::from(i % 40 == (i / 40) % 40)).to_le_bytes())
        .collect();
    std::fs::write(dir.join("logits.npy"), npy("<f4", "(200, 40)", &logits)).expect("writing");
    let write_off = |off: &[i32]| {
        let bytes: Vec<u8> = off.iter().flat_map(|v| v.to_le_bytes()).collect();
        std::fs::write(dir.join("off.npy"), npy("<i4", "(200,)", &bytes)).expect("writing");
    };
    let args = |out: &'static str, reference: bool| {
        let mut a = vec![
            "run",
            "g.tsr",
            "-i",
            "table=table.npy",
            "-i",
            "logits=logits.npy",
            "-i",
            "off=off.npy",
            "-o",
            out,
        ];
        if reference {
            a.push("--reference");
        }
        a
    };
    // In range, negative ones included: row `j` is `(j % 40 + off[j]) mod 40`.
    let off: Vec<i32> = (0..200).map(|j| [0, -40, -1, -39][j % 4]).collect();
    write_off(&off);
    let out = tessera(&dir, &args("ok", false));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let got = read_f32(&dir.join("ok/out0.npy"));
    for j in 0..200 {
        let r = (j as i32 % 40 + off[j]).rem_euclid(40);
        assert_eq!(got[j * 8 + 3], (r * 8 + 3) as f32, "row {j}");
    }
    // One index out of range: row 130's maximum is at 10, and 10 + 35 = 45.
    let mut bad = off.clone();
    bad[130] = 35;
    write_off(&bad);
    let out = tessera(&dir, &args("bad", false));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    let message = "kernel `greedy`: the index operand of the `take` at g.tsr:2:12 (computed in \
                   the kernel) holds the index 45, outside [-40, 40) for the axis `take` indexes";
    assert!(stderr.contains(message), "{stderr}");
    assert!(stderr.contains("(dma_gather) at g.tsr:2:12"), "{stderr}");
    assert!(!dir.join("bad/out0.npy").exists(), "an output was written");
    // The reference says the same.
    let reference = tessera(&dir, &args("ref", true));
    let ref_err = String::from_utf8_lossy(&reference.stderr);
    assert_eq!(reference.status.code(), Some(1), "{ref_err}");
    assert!(ref_err.contains(message), "{ref_err}");
    assert!(!dir.join("ref/out0.npy").exists());
}
