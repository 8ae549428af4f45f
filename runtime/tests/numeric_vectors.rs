//! Checks `runtime::numeric` against the conversion vectors in `tests/data/`, every line of
//! them.
//!
//! The vectors were generated with NumPy and ml_dtypes (`tests/data/README.md` and the
//! header comments of the files say how) and are the common ground of the interpreter, the
//! reference evaluator and any outside test: if these pass, our conversions agree with the
//! usual Python stack bit for bit. A token `nan` accepts any NaN of that format.

use isa::Dtype;
use runtime::numeric::{decode, encode, encode_f64, load, store};

const CASTS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/casts_from_f32.txt");
const DECODES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/decode_to_f32.txt");

/// The formats of the columns of `casts_from_f32.txt`, in order.
const CAST_COLUMNS: [Dtype; 4] = [Dtype::Bf16, Dtype::F16, Dtype::F8E4M3, Dtype::F8E5M2];

fn read(path: &str) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("cannot read {path}: {e}"))
}

fn hex(token: &str, line_no: usize) -> u32 {
    u32::from_str_radix(token, 16)
        .unwrap_or_else(|e| panic!("line {line_no}: bad hex {token:?}: {e}"))
}

/// Data lines with their 1-based line numbers, skipping comments and blank lines.
fn data_lines(text: &str) -> impl Iterator<Item = (usize, Vec<&str>)> {
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty() && !l.starts_with('#'))
        .map(|(i, l)| (i + 1, l.split_whitespace().collect()))
}

/// Fails with the first few mismatches and their count.
fn report(what: &str, failures: &[String]) {
    assert!(
        failures.is_empty(),
        "{} {what} mismatches, first ones:\n{}",
        failures.len(),
        failures[..failures.len().min(20)].join("\n")
    );
}

#[test]
fn casts_from_f32_every_line() {
    let text = read(CASTS);
    let mut failures = Vec::new();
    let mut inputs = Vec::new();
    let mut lines = 0;
    for (line_no, fields) in data_lines(&text) {
        assert_eq!(fields.len(), 5, "line {line_no}: expected 5 fields");
        let x = f32::from_bits(hex(fields[0], line_no));
        inputs.push(x);
        lines += 1;
        for (dtype, expected) in CAST_COLUMNS.iter().zip(&fields[1..]) {
            let got = encode(*dtype, x);
            let got64 = encode_f64(*dtype, f64::from(x));
            let ok = if *expected == "nan" {
                decode(*dtype, got).is_nan() && got64 == got
            } else {
                let want = hex(expected, line_no);
                got == want && got64 == want
            };
            if !ok {
                failures.push(format!(
                    "line {line_no}: {dtype} of {:08x} ({x:e}): got {got:x} (from f64: {got64:x}), want {expected}",
                    x.to_bits()
                ));
            }
        }
    }
    report("cast", &failures);
    // The file is large; make sure it was all read and not, say, an empty stub.
    assert!(lines > 50_000, "only {lines} data lines in {CASTS}");

    // The bulk path must give the scalar results for the same inputs.
    for dtype in Dtype::ALL {
        let size = dtype.size() as usize;
        let mut bytes = vec![0u8; inputs.len() * size];
        assert_eq!(store(dtype, &inputs, &mut bytes), inputs.len());
        for (i, (&x, chunk)) in inputs.iter().zip(bytes.chunks_exact(size)).enumerate() {
            let mut code = [0u8; 4];
            code[..size].copy_from_slice(chunk);
            let code = u32::from_le_bytes(code);
            assert_eq!(
                code,
                encode(dtype, x),
                "{dtype}: store of input {i} ({x:e})"
            );
        }
    }
}

#[test]
fn decode_to_f32_every_line() {
    let text = read(DECODES);
    let mut failures = Vec::new();
    let mut seen: std::collections::HashMap<Dtype, Vec<bool>> = Default::default();
    for (line_no, fields) in data_lines(&text) {
        assert_eq!(fields.len(), 3, "line {line_no}: expected 3 fields");
        let dtype = Dtype::from_name(fields[0])
            .unwrap_or_else(|| panic!("line {line_no}: unknown format {:?}", fields[0]));
        let code = hex(fields[1], line_no);
        let got = decode(dtype, code);
        let ok = if fields[2] == "nan" {
            got.is_nan()
        } else {
            got.to_bits() == hex(fields[2], line_no)
        };
        if !ok {
            failures.push(format!(
                "line {line_no}: {dtype} code {code:x}: got {:08x}, want {}",
                got.to_bits(),
                fields[2]
            ));
        }
        // The bulk path, one element at a time through the little-endian bytes.
        let size = dtype.size() as usize;
        let bytes = code.to_le_bytes();
        let mut out = [0.0f32];
        assert_eq!(load(dtype, &bytes[..size], &mut out), 1);
        if out[0].to_bits() != got.to_bits() {
            failures.push(format!("line {line_no}: load disagrees with decode"));
        }
        let marks = seen
            .entry(dtype)
            .or_insert_with(|| vec![false; 1 << (8 * size)]);
        match marks.get_mut(code as usize) {
            Some(m) => *m = true,
            None => failures.push(format!("line {line_no}: code {code:x} out of range")),
        }
    }
    report("decode", &failures);
    // Every code of every small format is in the file, so every code was checked.
    for dtype in [Dtype::Bf16, Dtype::F16, Dtype::F8E4M3, Dtype::F8E5M2] {
        let marks = seen.get(&dtype).map(Vec::as_slice).unwrap_or_default();
        assert!(
            !marks.is_empty() && marks.iter().all(|&m| m),
            "{dtype}: not every code is in {DECODES}"
        );
    }
}
