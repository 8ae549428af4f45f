//! Tests of `runtime::npy`: NumPy's exact bytes (hand-built fixtures of what `numpy.save`
//! writes), round trips, Fortran order, every error class with its message, and
//! truncated or corrupted files, none of which may panic.

use isa::Dtype;
use runtime::npy::{read_npy, write_npy, write_npy_file, NpyArray, NpyData, NpyError, NpyReader};

/// A `.npy` file as NumPy lays it out: magic, version, header length, the header dict,
/// spaces up to `header_len - 1` bytes, a newline, then the data. `header_len` is the
/// number NumPy stores (118 for every small array since NumPy 1.24: 128 bytes in all).
fn fixture(major: u8, dict: &str, header_len: usize, data: &[u8]) -> Vec<u8> {
    let mut out = b"\x93NUMPY".to_vec();
    out.extend_from_slice(&[major, 0]);
    if major == 1 {
        out.extend_from_slice(&(header_len as u16).to_le_bytes());
    } else {
        out.extend_from_slice(&(header_len as u32).to_le_bytes());
    }
    assert!(
        dict.len() < header_len,
        "fixture dict longer than its header"
    );
    out.extend_from_slice(dict.as_bytes());
    out.resize(out.len() + header_len - 1 - dict.len(), b' ');
    out.push(b'\n');
    out.extend_from_slice(data);
    out
}

fn f32_bytes(values: &[f32]) -> Vec<u8> {
    values.iter().flat_map(|v| v.to_le_bytes()).collect()
}

fn f64_bytes(values: &[f64]) -> Vec<u8> {
    values.iter().flat_map(|v| v.to_le_bytes()).collect()
}

fn f32_data(a: &NpyArray) -> &[f32] {
    match &a.data {
        NpyData::F32(v) => v,
        other => panic!("expected float32 data, got {other:?}"),
    }
}

fn err(bytes: &[u8]) -> NpyError {
    match read_npy(bytes) {
        Ok(a) => panic!("expected an error, read shape {:?}", a.shape),
        Err(e) => e,
    }
}

fn header_err(dict: &str) -> NpyError {
    err(&fixture(1, dict, 118, &[]))
}

fn assert_malformed(e: NpyError, needle: &str) {
    match &e {
        NpyError::MalformedHeader { reason } => {
            assert!(reason.contains(needle), "{reason:?} lacks {needle:?}")
        }
        other => panic!("expected MalformedHeader ({needle}), got {other:?}"),
    }
}

const D23: &str = "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }";

#[test]
fn writer_matches_numpy_byte_for_byte() {
    let cases: Vec<(Vec<u64>, &str, usize)> = vec![
        (vec![2, 3], D23, 118),
        (
            vec![5],
            "{'descr': '<f4', 'fortran_order': False, 'shape': (5,), }",
            118,
        ),
        (
            vec![],
            "{'descr': '<f4', 'fortran_order': False, 'shape': (), }",
            118,
        ),
        (
            vec![0, 7],
            "{'descr': '<f4', 'fortran_order': False, 'shape': (0, 7), }",
            118,
        ),
        (
            vec![12_345_678_901, 0],
            "{'descr': '<f4', 'fortran_order': False, 'shape': (12345678901, 0), }",
            118,
        ),
    ];
    for (shape, dict, header_len) in cases {
        let n: u64 = shape.iter().product();
        let data: Vec<f32> = (0..n).map(|i| i as f32 * 0.5 - 1.0).collect();
        let want = fixture(1, dict, header_len, &f32_bytes(&data));
        let got = write_npy(&shape, &data);
        assert_eq!(
            String::from_utf8_lossy(&got[..128.min(got.len())]),
            String::from_utf8_lossy(&want[..128.min(want.len())]),
            "shape {shape:?}"
        );
        assert_eq!(got, want, "shape {shape:?}");
        assert_eq!(got.len() % 4, 0);
        assert_eq!(
            (got.len() - 4 * data.len()) % 64,
            0,
            "data must start 64-aligned"
        );
    }
}

#[test]
fn writer_pads_a_full_64_when_already_aligned() {
    // With this shape the header would end exactly on 256 bytes; NumPy still adds 64
    // spaces (`ARRAY_ALIGN - 0`), giving a header length of 246 after 20 growth spaces.
    let mut shape = vec![2u64];
    shape.extend([1; 35]);
    let dims: Vec<String> = shape.iter().map(u64::to_string).collect();
    let dict = format!(
        "{{'descr': '<f4', 'fortran_order': False, 'shape': ({}), }}",
        dims.join(", ")
    );
    assert_eq!(dict.len() + 20 + 64 + 1, 246);
    let data = [1.0f32, 2.0];
    let want = fixture(1, &dict, 246, &f32_bytes(&data));
    assert_eq!(write_npy(&shape, &data), want);
    let back = read_npy(&want).unwrap();
    assert_eq!(back.shape, shape);
}

#[test]
fn writer_switches_to_version_2_for_huge_headers() {
    // NumPy falls back to format 2.0 when the header length does not fit 16 bits.
    let shape = vec![1u64; 30_000];
    let bytes = write_npy(&shape, &[4.0]);
    assert_eq!(&bytes[..8], b"\x93NUMPY\x02\x00");
    let header_len = u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]) as usize;
    assert_eq!((12 + header_len) % 64, 0);
    assert_eq!(bytes[12 + header_len - 1], b'\n');
    let back = read_npy(&bytes).unwrap();
    assert_eq!(back.shape, shape);
    assert_eq!(f32_data(&back), &[4.0]);
}

#[test]
fn reads_numpy_output() {
    let data = [0.0f32, 1.0, 2.0, 3.0, 4.0, 5.0];
    let a = read_npy(&fixture(1, D23, 118, &f32_bytes(&data))).unwrap();
    assert_eq!(a.shape, vec![2, 3]);
    assert_eq!(f32_data(&a), &data);
    assert_eq!(a.dtype_name(), "float32");
    assert_eq!(a.shape_string(), "(2, 3)");
    assert_eq!(a.len(), 6);

    // 1-d, (5,).
    let five = [1.5f32, -2.0, f32::INFINITY, -0.0, 1e-45];
    let a = read_npy(&fixture(
        1,
        "{'descr': '<f4', 'fortran_order': False, 'shape': (5,), }",
        118,
        &f32_bytes(&five),
    ))
    .unwrap();
    assert_eq!(a.shape, vec![5]);
    let got: Vec<u32> = f32_data(&a).iter().map(|x| x.to_bits()).collect();
    let want: Vec<u32> = five.iter().map(|x| x.to_bits()).collect();
    assert_eq!(got, want);

    // 0-d: one element, empty shape.
    let a = read_npy(&fixture(
        1,
        "{'descr': '<f4', 'fortran_order': False, 'shape': (), }",
        118,
        &f32_bytes(&[7.0]),
    ))
    .unwrap();
    assert_eq!(a.shape, Vec::<u64>::new());
    assert_eq!(f32_data(&a), &[7.0]);
    assert_eq!(a.shape_string(), "()");

    // Zero elements.
    let a = read_npy(&fixture(
        1,
        "{'descr': '<f4', 'fortran_order': False, 'shape': (0, 3), }",
        118,
        &[],
    ))
    .unwrap();
    assert!(a.is_empty());
    assert_eq!(a.shape, vec![0, 3]);

    // NumPy before 1.14 aligned to 16 bytes: a header length of 70.
    let a = read_npy(&fixture(1, D23, 70, &f32_bytes(&data))).unwrap();
    assert_eq!(f32_data(&a), &data);
}

#[test]
fn reads_float16_in_either_byte_order_and_rounds_once() {
    // 1, -0, the smallest subnormal 2^-24, the largest finite 65504, -inf, 1/3 in f16, and
    // 1 + 2^-8 + 2^-10, which bf16 rounds up (above the tie at 1 + 2^-8).
    let codes: [u16; 7] = [0x3c00, 0x8000, 0x0001, 0x7bff, 0xfc00, 0x3555, 0x3c05];
    let want = [
        1.0,
        -0.0,
        2f32.powi(-24),
        65504.0,
        f32::NEG_INFINITY,
        0.333_251_95,
        1.0 + 2f32.powi(-8) + 2f32.powi(-10),
    ];
    for (descr, big) in [
        ("<f2", false),
        (">f2", true),
        ("=f2", cfg!(target_endian = "big")),
    ] {
        let data: Vec<u8> = codes
            .iter()
            .flat_map(|c| {
                if big {
                    c.to_be_bytes()
                } else {
                    c.to_le_bytes()
                }
            })
            .collect();
        let dict = format!("{{'descr': '{descr}', 'fortran_order': False, 'shape': (7,), }}");
        let a = read_npy(&fixture(1, &dict, 118, &data)).unwrap();
        assert_eq!(a.dtype_name(), "float16", "{descr}");
        assert_eq!(a.data, NpyData::F16(codes.to_vec()), "{descr}");
        let f32s = a.round_to(Dtype::F32).unwrap();
        let bits: Vec<u32> = f32s.iter().map(|x| x.to_bits()).collect();
        let want_bits: Vec<u32> = want.iter().map(|x| x.to_bits()).collect();
        assert_eq!(bits, want_bits, "{descr}");
        let bf16 = a.round_to(Dtype::Bf16).unwrap();
        assert_eq!(bf16[6], 1.0 + 2f32.powi(-7), "{descr}");
        assert_eq!(bf16[3], 65536.0, "{descr}");
        // FP8 e4m3 saturates 65504 to its largest finite value.
        assert_eq!(a.round_to(Dtype::F8E4M3).unwrap()[3], 448.0, "{descr}");
    }
}

#[test]
fn reads_void_data_as_the_bits_of_a_dtype_of_its_width() {
    // `'<V2'` (what `numpy.save` writes for an ml_dtypes bfloat16 array) and `'|V2'`:
    // little-endian bit patterns, read as bf16 or as f16 as the caller says.
    let codes: [u16; 4] = [0x3f80, 0x8000, 0x0001, 0xc0a0];
    let le: Vec<u8> = codes.iter().flat_map(|c| c.to_le_bytes()).collect();
    let be: Vec<u8> = codes.iter().flat_map(|c| c.to_be_bytes()).collect();
    for (descr, data) in [("<V2", &le), ("|V2", &le), (">V2", &be)] {
        let dict = format!("{{'descr': '{descr}', 'fortran_order': False, 'shape': (2, 2), }}");
        let a = read_npy(&fixture(1, &dict, 118, data)).unwrap();
        assert_eq!(a.dtype_name(), "void16", "{descr}");
        assert_eq!(a.data, NpyData::Void2(codes.to_vec()), "{descr}");
        let bf16: Vec<u32> = a
            .round_to(Dtype::Bf16)
            .unwrap()
            .iter()
            .map(|x| x.to_bits())
            .collect();
        assert_eq!(
            bf16,
            [0x3f80_0000, 0x8000_0000, 0x0001_0000, 0xc0a0_0000],
            "{descr}"
        );
        let f16 = a.round_to(Dtype::F16).unwrap();
        assert_eq!(f16[0], 1.875, "{descr}"); // 0x3f80 as f16
        assert_eq!(f16[2], 2f32.powi(-24), "{descr}");
    }
    // Fortran order moves whole elements: (2, 2) stored column by column.
    let dict = "{'descr': '<V2', 'fortran_order': True, 'shape': (2, 2), }";
    let fortran: Vec<u8> = [codes[0], codes[2], codes[1], codes[3]]
        .iter()
        .flat_map(|c| c.to_le_bytes())
        .collect();
    let a = read_npy(&fixture(1, dict, 118, &fortran)).unwrap();
    assert_eq!(a.data, NpyData::Void2(codes.to_vec()));

    // `'|V1'` (ml_dtypes' FP8 types): the same byte is a different value in each format,
    // so the caller's dtype decides.
    let bytes = [0x38u8, 0x7e, 0x81, 0xfb];
    for descr in ["|V1", "<V1", ">V1", "=V1"] {
        let dict = format!("{{'descr': '{descr}', 'fortran_order': False, 'shape': (4,), }}");
        let a = read_npy(&fixture(1, &dict, 118, &bytes)).unwrap();
        assert_eq!(a.dtype_name(), "void8", "{descr}");
        assert_eq!(a.data, NpyData::Void1(bytes.to_vec()), "{descr}");
        let e4m3 = a.round_to(Dtype::F8E4M3).unwrap();
        assert_eq!(e4m3, [1.0, 448.0, -(2f32.powi(-9)), -352.0], "{descr}");
        let e5m2 = a.round_to(Dtype::F8E5M2).unwrap();
        assert_eq!(e5m2[0], 0.5, "{descr}");
        assert!(e5m2[1].is_nan(), "{descr}: 0x7e is a NaN of f8e5m2");
        assert_eq!(e5m2[2], -(2f32.powi(-16)), "{descr}");
        assert_eq!(e5m2[3], -57344.0, "{descr}");
    }
}

#[test]
fn void_data_of_another_width_than_the_dtype_is_an_error() {
    let v2 = read_npy(&fixture(
        1,
        "{'descr': '<V2', 'fortran_order': False, 'shape': (1,), }",
        118,
        &[0x80, 0x3f],
    ))
    .unwrap();
    let v1 = read_npy(&fixture(
        1,
        "{'descr': '|V1', 'fortran_order': False, 'shape': (1,), }",
        118,
        &[0x38],
    ))
    .unwrap();
    for (a, dtype, needles) in [
        (
            &v2,
            Dtype::F8E4M3,
            &["'V2'", "2-byte", "bf16 or f16", "f8e4m3 has 1-byte"][..],
        ),
        (&v2, Dtype::F32, &["'V2'", "f32 has 4-byte"]),
        (
            &v1,
            Dtype::Bf16,
            &["'V1'", "1-byte", "f8e4m3 or f8e5m2", "bf16 has 2-byte"],
        ),
    ] {
        let e = a.round_to(dtype).unwrap_err();
        assert!(matches!(e, NpyError::VoidWidth { .. }), "{e:?}");
        let msg = e.to_string();
        for needle in needles {
            assert!(msg.contains(needle), "{msg:?} lacks {needle:?}");
        }
    }
    // The reader says so from the header alone, naming the file's own dtype string.
    let file = fixture(
        1,
        "{'descr': '|V2', 'fortran_order': False, 'shape': (1,), }",
        118,
        &[0x80, 0x3f],
    );
    let reader = NpyReader::new(&file[..], Some(file.len() as u64)).unwrap();
    assert_eq!(reader.descr(), "|V2");
    assert!(reader.check_dtype(Dtype::Bf16).is_ok());
    assert!(reader.check_dtype(Dtype::F16).is_ok());
    let msg = reader.check_dtype(Dtype::F8E5M2).unwrap_err().to_string();
    assert!(msg.contains("'|V2'") && msg.contains("f8e5m2"), "{msg}");
    // Float data converts to any dtype.
    let f32_file = fixture(1, D23, 118, &f32_bytes(&[1.0; 6]));
    let reader = NpyReader::new(&f32_file[..], None).unwrap();
    assert!(reader.check_dtype(Dtype::F8E4M3).is_ok());
}

#[test]
fn reads_float64_exactly_and_rounds_once() {
    let values = [
        0.1f64,
        -1e300,
        1.0 + 2f64.powi(-8) + 2f64.powi(-30),
        f64::MIN_POSITIVE,
    ];
    let a = read_npy(&fixture(
        1,
        "{'descr': '<f8', 'fortran_order': False, 'shape': (4,), }",
        118,
        &f64_bytes(&values),
    ))
    .unwrap();
    assert_eq!(a.dtype_name(), "float64");
    match &a.data {
        NpyData::F64(v) => assert_eq!(v.as_slice(), &values),
        other => panic!("expected float64 data, got {other:?}"),
    }
    let f32s = a.round_to(Dtype::F32).unwrap();
    assert_eq!(f32s[0], 0.1f32);
    assert_eq!(f32s[1], f32::NEG_INFINITY);
    // 1 + 2^-8 + 2^-30 is just above a bf16 tie: rounding once gives 1 + 2^-7, while
    // rounding through f32 first would lose the 2^-30 and tie down to 1.
    let bf16 = a.round_to(Dtype::Bf16).unwrap();
    assert_eq!(bf16[2], 1.0 + 2f32.powi(-7));
    assert_eq!(bf16[3], 0.0);
    assert_eq!(a.round_to(Dtype::F8E4M3).unwrap()[1], -448.0);
}

#[test]
fn reads_versions_2_and_3() {
    let data = f32_bytes(&[1.0, 2.0, 3.0, 4.0, 5.0, 6.0]);
    // Versions 2.0 and 3.0 have a 4-byte header length: 12 + 116 = 128.
    for major in [2, 3] {
        let a = read_npy(&fixture(major, D23, 116, &data)).unwrap();
        assert_eq!(a.shape, vec![2, 3]);
        assert_eq!(f32_data(&a)[5], 6.0);
    }
    // Version 3.0 headers are UTF-8; 1.0 and 2.0 are latin-1, where any byte is a char.
    let mut v3 = fixture(3, D23, 116, &data);
    v3[12 + D23.len() + 3] = 0xff;
    assert_malformed(err(&v3), "UTF-8");
}

#[test]
fn accepts_the_python_literals_numpy_could_have_written() {
    let data = f32_bytes(&[1.0, 2.0]);
    for dict in [
        // Double quotes, other key order, no trailing comma, no spaces.
        r#"{"shape":(2,),"fortran_order":False,"descr":"<f4"}"#,
        // Python 2 longs, as NumPy's filter removes them from 1.0 headers.
        "{'descr': '<f4', 'fortran_order': False, 'shape': (2L,), }",
        // A 1-d Fortran array is the same bytes.
        "{'descr': '<f4', 'fortran_order': True, 'shape': (2,), }",
        "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 1, 1,), }",
        "{ 'descr' : '<f4' ,\t'fortran_order' : False , 'shape' : ( 2 , ) , }",
    ] {
        let a = read_npy(&fixture(1, dict, 118, &data)).unwrap_or_else(|e| panic!("{dict}: {e}"));
        assert_eq!(f32_data(&a), &[1.0, 2.0], "{dict}");
    }
    // The `L` suffix is only filtered in versions 1.0 and 2.0.
    let dict = "{'descr': '<f4', 'fortran_order': False, 'shape': (2L,), }";
    assert_malformed(err(&fixture(3, dict, 116, &data)), "decimal integer");
}

#[test]
fn fortran_order_is_returned_in_c_order() {
    // C matrix [[0, 1, 2], [3, 4, 5]] stored column by column.
    let dict = "{'descr': '<f4', 'fortran_order': True, 'shape': (2, 3), }";
    let a = read_npy(&fixture(
        1,
        dict,
        118,
        &f32_bytes(&[0., 3., 1., 4., 2., 5.]),
    ))
    .unwrap();
    assert_eq!(a.shape, vec![2, 3]);
    assert_eq!(f32_data(&a), &[0., 1., 2., 3., 4., 5.]);

    // A 3-d float64 array: element (i, j, k) has value 100i + 10j + k; in Fortran order
    // it sits at i + 2j + 6k.
    let (d0, d1, d2) = (2usize, 3usize, 4usize);
    let mut fortran = vec![0f64; d0 * d1 * d2];
    for i in 0..d0 {
        for j in 0..d1 {
            for k in 0..d2 {
                fortran[i + d0 * j + d0 * d1 * k] = (100 * i + 10 * j + k) as f64;
            }
        }
    }
    let dict = "{'descr': '<f8', 'fortran_order': True, 'shape': (2, 3, 4), }";
    let a = read_npy(&fixture(1, dict, 118, &f64_bytes(&fortran))).unwrap();
    let NpyData::F64(v) = &a.data else {
        panic!("expected float64")
    };
    let mut n = 0;
    for i in 0..d0 {
        for j in 0..d1 {
            for k in 0..d2 {
                assert_eq!(v[n], (100 * i + 10 * j + k) as f64, "({i}, {j}, {k})");
                n += 1;
            }
        }
    }
    // Zero-size Fortran arrays are fine too.
    let dict = "{'descr': '<f4', 'fortran_order': True, 'shape': (3, 0), }";
    assert!(read_npy(&fixture(1, dict, 118, &[])).unwrap().is_empty());
}

#[test]
fn round_trips() {
    let shapes: [&[u64]; 6] = [&[], &[1], &[5], &[2, 3], &[2, 1, 4], &[3, 0, 2]];
    for shape in shapes {
        let n: u64 = shape.iter().product();
        let data: Vec<f32> = (0..n)
            .map(|i| f32::from_bits(0x3f80_0000 ^ (i as u32).wrapping_mul(0x9e37_79b9)))
            .collect();
        let a = read_npy(&write_npy(shape, &data)).unwrap();
        assert_eq!(a.shape, shape);
        let got: Vec<u32> = f32_data(&a).iter().map(|x| x.to_bits()).collect();
        let want: Vec<u32> = data.iter().map(|x| x.to_bits()).collect();
        assert_eq!(got, want, "{shape:?}");
    }
    // A shape that does not match the data is written as 1-d, keeping every value.
    let a = read_npy(&write_npy(&[4, 4], &[1.0, 2.0])).unwrap();
    assert_eq!(a.shape, vec![2]);
    let a = read_npy(&write_npy(&[u64::MAX, u64::MAX, 0], &[])).unwrap();
    assert_eq!(a.shape, vec![u64::MAX, u64::MAX, 0]);
}

#[test]
fn error_bad_magic_and_version() {
    assert_eq!(err(b"hello world, this is not npy"), NpyError::BadMagic);
    assert_eq!(err(b"PK\x03\x04"), NpyError::BadMagic);
    assert_eq!(err(b"\x93NUMPZ\x01\x00"), NpyError::BadMagic);
    let mut v = fixture(1, D23, 118, &[0; 24]);
    v[6] = 4;
    assert_eq!(err(&v), NpyError::UnsupportedVersion { major: 4, minor: 0 });
    v[6] = 1;
    v[7] = 1;
    let e = err(&v);
    assert_eq!(e, NpyError::UnsupportedVersion { major: 1, minor: 1 });
    assert!(e.to_string().contains("1.1"));
    assert!(NpyError::BadMagic.to_string().contains("not a .npy file"));
}

#[test]
fn error_truncated_header() {
    let file = fixture(1, D23, 118, &[0; 24]);
    assert_eq!(
        err(&file[..100]),
        NpyError::TruncatedHeader {
            needed: 128,
            found: 100
        }
    );
    assert!(err(&file[..100]).to_string().contains("128"));
    assert!(matches!(err(&[]), NpyError::TruncatedHeader { .. }));
    assert!(matches!(err(b"\x93NUM"), NpyError::TruncatedHeader { .. }));
    assert!(matches!(err(&file[..9]), NpyError::TruncatedHeader { .. }));
    // A version 2.0 header length near 4 GiB is checked against the file, not allocated.
    let mut v2 = b"\x93NUMPY\x02\x00\xff\xff\xff\xff".to_vec();
    v2.extend_from_slice(D23.as_bytes());
    assert_eq!(
        err(&v2),
        NpyError::TruncatedHeader {
            needed: 12 + 0xffff_ffff,
            found: v2.len() as u64
        }
    );
}

#[test]
fn error_truncated_and_trailing_data() {
    let file = fixture(1, D23, 118, &f32_bytes(&[0.0; 6]));
    let e = err(&file[..file.len() - 1]);
    assert_eq!(
        e,
        NpyError::TruncatedData {
            shape: "(2, 3)".into(),
            dtype: "float32",
            expected: 24,
            found: 23
        }
    );
    assert!(e.to_string().contains("(2, 3)") && e.to_string().contains("24"));
    let mut long = file.clone();
    long.push(0);
    let e = err(&long);
    assert_eq!(
        e,
        NpyError::TrailingData {
            shape: "(2, 3)".into(),
            dtype: "float32",
            expected: 24,
            found: 25
        }
    );
    assert!(e.to_string().contains("1 bytes after its data"), "{e}");
    // An absurd shape is compared with the file's length before anything is allocated.
    let dict = "{'descr': '<f8', 'fortran_order': False, 'shape': (1000000000000, 1000000), }";
    assert!(matches!(
        err(&fixture(1, dict, 118, &[0; 16])),
        NpyError::TruncatedData {
            expected: 8_000_000_000_000_000_000,
            found: 16,
            ..
        }
    ));
}

#[test]
fn error_shape_overflow() {
    for dict in [
        // The element count overflows 64 bits.
        "{'descr': '<f4', 'fortran_order': False, 'shape': (4294967296, 4294967296), }",
        // The count fits but not its size in bytes.
        "{'descr': '<f8', 'fortran_order': False, 'shape': (4611686018427387904,), }",
        // A dimension that is not even a 64-bit integer.
        "{'descr': '<f4', 'fortran_order': False, 'shape': (99999999999999999999999,), }",
    ] {
        let e = header_err(dict);
        assert!(matches!(e, NpyError::ShapeOverflow { .. }), "{dict}: {e:?}");
        assert!(e.to_string().contains("too large"));
    }
    // A zero anywhere makes the product zero, however large the others are.
    let dict = "{'descr': '<f4', 'fortran_order': False, 'shape': (4294967296, 4294967296, 0), }";
    assert!(read_npy(&fixture(1, dict, 118, &[])).unwrap().is_empty());
}

#[test]
fn reads_big_endian_and_native_byte_orders() {
    let values = [1.5f64, -2.25, 0.0, f64::INFINITY, 1e-300, -7.0];
    let native_big = cfg!(target_endian = "big");
    for (descr, big) in [
        ("<f4", false),
        (">f4", true),
        ("=f4", native_big),
        ("<f8", false),
        (">f8", true),
        ("=f8", native_big),
    ] {
        let f64_data = descr.ends_with('8');
        let data: Vec<u8> = values
            .iter()
            .flat_map(|&v| match (f64_data, big) {
                (false, false) => (v as f32).to_le_bytes().to_vec(),
                (false, true) => (v as f32).to_be_bytes().to_vec(),
                (true, false) => v.to_le_bytes().to_vec(),
                (true, true) => v.to_be_bytes().to_vec(),
            })
            .collect();
        for fortran in [false, true] {
            let order = if fortran { "True" } else { "False" };
            let dict =
                format!("{{'descr': '{descr}', 'fortran_order': {order}, 'shape': (3, 2), }}");
            let a = read_npy(&fixture(1, &dict, 118, &data)).unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(a.shape, vec![3, 2]);
            // Fortran order: element (i, j) is at j * 3 + i.
            let at = |k: usize| if fortran { (k % 2) * 3 + k / 2 } else { k };
            match &a.data {
                NpyData::F32(v) => {
                    assert!(!f64_data, "{descr}");
                    for (k, x) in v.iter().enumerate() {
                        assert_eq!(x.to_bits(), (values[at(k)] as f32).to_bits(), "{descr}");
                    }
                }
                NpyData::F64(v) => {
                    assert!(f64_data, "{descr}");
                    for (k, x) in v.iter().enumerate() {
                        assert_eq!(x.to_bits(), values[at(k)].to_bits(), "{descr}");
                    }
                }
                other => panic!("{descr}: {other:?}"),
            }
        }
    }
}

/// A reader that never ends: `prefix`, then zero bytes forever.
struct Endless {
    prefix: Vec<u8>,
    pos: usize,
}

impl std::io::Read for Endless {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        for b in buf.iter_mut() {
            *b = self.prefix.get(self.pos).copied().unwrap_or(0);
            self.pos += 1;
        }
        Ok(buf.len())
    }
}

#[test]
fn a_stream_is_read_by_its_declared_size() {
    let file = fixture(1, D23, 118, &f32_bytes(&[1.0, 2.0, 3.0, 4.0, 5.0, 6.0]));
    // A stream of unknown length that ends with the data reads as the file does.
    let reader = NpyReader::new(&file[..], None).unwrap();
    assert_eq!(reader.shape(), &[2, 3]);
    assert_eq!(reader.shape_string(), "(2, 3)");
    assert_eq!(reader.dtype_name(), "float32");
    let a = reader.read_data().unwrap();
    assert_eq!(f32_data(&a), &[1.0, 2.0, 3.0, 4.0, 5.0, 6.0]);
    // Short and long streams give the errors of short and long files.
    let e = NpyReader::new(&file[..file.len() - 5], None)
        .unwrap()
        .read_data()
        .unwrap_err();
    assert!(
        matches!(e, NpyError::TruncatedData { found: 19, .. }),
        "{e:?}"
    );
    let mut longer = file.clone();
    longer.extend_from_slice(b"xyz");
    let e = NpyReader::new(&longer[..], None)
        .unwrap()
        .read_data()
        .unwrap_err();
    assert!(
        matches!(e, NpyError::TrailingData { found: 27, .. }),
        "{e:?}"
    );
    // With the length known, a wrong data size is refused before any data is read.
    let e = NpyReader::new(&longer[..], Some(longer.len() as u64))
        .err()
        .unwrap();
    assert!(
        matches!(e, NpyError::TrailingData { found: 27, .. }),
        "{e:?}"
    );
    // An endless stream ends in an error, neither a hang nor an unbounded allocation:
    // after the header, or straight away when it is not a .npy at all.
    let endless = Endless {
        prefix: file[..128].to_vec(),
        pos: 0,
    };
    let e = NpyReader::new(endless, None)
        .unwrap()
        .read_data()
        .unwrap_err();
    assert!(
        matches!(e, NpyError::TrailingStream { expected: 24, .. }),
        "{e:?}"
    );
    assert!(e.to_string().contains("goes on past its end"), "{e}");
    let zeros = Endless {
        prefix: Vec::new(),
        pos: 0,
    };
    assert_eq!(NpyReader::new(zeros, None).err(), Some(NpyError::BadMagic));
}

/// A reader that fails with an I/O error after `prefix`.
struct Failing {
    prefix: Vec<u8>,
}

impl std::io::Read for Failing {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.prefix.is_empty() {
            return Err(std::io::Error::other("the disk is on fire"));
        }
        let n = buf.len().min(self.prefix.len());
        buf[..n].copy_from_slice(&self.prefix[..n]);
        self.prefix.drain(..n);
        Ok(n)
    }
}

#[test]
fn a_read_error_is_an_error() {
    let file = fixture(1, D23, 118, &f32_bytes(&[1.0; 6]));
    for cut in [0, 5, 100, 130] {
        let reader = Failing {
            prefix: file[..cut].to_vec(),
        };
        let e = NpyReader::new(reader, None).and_then(|r| r.read_data());
        let Err(e) = e else {
            panic!("{cut}: read");
        };
        assert!(e.to_string().contains("the disk is on fire"), "{cut}: {e}");
    }
}

/// A bool `.npy` (`'|b1'`) is read as 0s and 1s, and only for a `bool` dtype.
#[test]
fn bool_files_read_as_truth_values() {
    let bytes = fixture(
        1,
        "{'descr': '|b1', 'fortran_order': False, 'shape': (3,), }",
        118,
        &[0, 1, 7],
    );
    let a = read_npy(&bytes).expect("a bool file reads");
    assert_eq!(a.dtype_name(), "bool");
    assert_eq!(a.round_to(Dtype::Bool).unwrap(), vec![0.0, 1.0, 1.0]);
    assert!(matches!(
        a.round_to(Dtype::F32),
        Err(NpyError::BoolMismatch { .. })
    ));
    let reader = NpyReader::new(&bytes[..], Some(bytes.len() as u64)).expect("header");
    assert!(matches!(
        reader.check_dtype(Dtype::F32),
        Err(NpyError::BoolMismatch { .. })
    ));
    assert!(reader.check_dtype(Dtype::Bool).is_ok());
}

#[test]
fn error_unsupported_dtype() {
    for (descr, names) in [
        ("'<u8'", &["'<u8'", "uint64"][..]),
        ("'<u4'", &["'<u4'", "uint32"]),
        ("'|f2'", &["'|f2'", "float16", "byte order"]),
        ("'f2'", &["byte order"]),
        ("'|V4'", &["'|V4'", "void", "1- and 2-byte"]),
        ("'<V3'", &["'<V3'", "void"]),
        ("'V2'", &["'V2'", "byte order"]),
        ("'|i4'", &["'|i4'", "int32"]),
        ("'<c8'", &["complex64"]),
        ("'|O'", &["object"]),
        ("'<U5'", &["str"]),
        ("'i8'", &["'i8'", "int64"]),
        ("'|f4'", &["'|f4'", "byte order"]),
        ("'>u4'", &["'>u4'", "uint32"]),
        ("'f4'", &["byte order"]),
        ("'<q9'", &["'<q9'"]),
        ("[('x', '<f4'), ('y', '<f4')]", &["structured"]),
        ("None", &["None"]),
    ] {
        let dict = format!("{{'descr': {descr}, 'fortran_order': False, 'shape': (2,), }}");
        let e = header_err(&dict);
        let NpyError::UnsupportedDtype { .. } = &e else {
            panic!("{descr}: expected UnsupportedDtype, got {e:?}");
        };
        let msg = e.to_string();
        assert!(msg.contains("'<f4' (float32) and '<f8' (float64)"), "{msg}");
        for name in names {
            assert!(msg.contains(name), "{descr}: {msg:?} lacks {name:?}");
        }
    }
}

#[test]
fn error_malformed_header() {
    let cases: &[(&str, &str)] = &[
        ("", "expected a Python literal"),
        ("[1, 2]", "not a dict"),
        (
            "{'descr': '<f4', 'fortran_order': False}",
            "'shape' is missing",
        ),
        (
            "{'fortran_order': False, 'shape': (2,)}",
            "'descr' is missing",
        ),
        (
            "{'descr': '<f4', 'shape': (2,)}",
            "'fortran_order' is missing",
        ),
        (
            "{'descr': '<f4', 'fortran_order': False, 'shape': (2,), 'x': 1}",
            "unexpected key 'x'",
        ),
        (
            "{'descr': '<f4', 'descr': '<f4', 'fortran_order': False, 'shape': (2,)}",
            "appears twice",
        ),
        ("{1: '<f4'}", "not a string"),
        (
            "{'descr': '<f4', 'fortran_order': 0, 'shape': (2,)}",
            "fortran_order is not True or False",
        ),
        (
            "{'descr': '<f4', 'fortran_order': False, 'shape': (2)}",
            "shape is not a tuple: 2",
        ),
        (
            "{'descr': '<f4', 'fortran_order': False, 'shape': [2]}",
            "shape is not a tuple",
        ),
        (
            "{'descr': '<f4', 'fortran_order': False, 'shape': (2, -3)}",
            "not a non-negative integer: -3",
        ),
        (
            "{'descr': '<f4', 'fortran_order': False, 'shape': (2.5,)}",
            "decimal integer",
        ),
        (
            "{'descr': '<f4', 'fortran_order': False, 'shape': ('2',)}",
            "not a non-negative integer",
        ),
        (
            "{'descr': '<f4', 'fortran_order': False, 'shape': (02,)}",
            "leading zeros",
        ),
        (
            "{'descr': '<f4, 'fortran_order': False}",
            "expected ',' or '}' in the dict, found 'f' at byte 17",
        ),
        ("{'descr': '<f4", "unterminated string"),
        ("{'descr' '<f4'}", "expected ':'"),
        ("{'descr': '<f4' 'x'}", "expected ',' or '}'"),
        (
            "{'descr': '<f4', 'fortran_order': false, 'shape': (2,)}",
            "expected a Python literal",
        ),
        (
            "{'descr': '<f4', 'fortran_order': False, 'shape': (2,)} x",
            "end of the header",
        ),
        (
            "{'descr': '<f4', 'fortran_order': False, 'shape': (2 3)}",
            "expected ',' or ')'",
        ),
    ];
    for (dict, needle) in cases {
        assert_malformed(header_err(dict), needle);
    }
    // The message quotes the header and says where parsing stopped.
    let e = header_err("{'descr' '<f4'}").to_string();
    assert!(e.starts_with("malformed .npy header: "), "{e}");
    assert!(e.contains("at byte 9"), "{e}");
    // Deep nesting is refused without exhausting the stack.
    let deep = format!("{}{}", "(".repeat(30_000), ")".repeat(30_000));
    let bytes = {
        let mut b = b"\x93NUMPY\x02\x00".to_vec();
        b.extend_from_slice(&(deep.len() as u32 + 1).to_le_bytes());
        b.extend_from_slice(deep.as_bytes());
        b.push(b'\n');
        b
    };
    assert_malformed(err(&bytes), "nest too deeply");
}

/// Every way a valid file can be cut short gives a truncation error, and never a panic.
#[test]
fn every_prefix_is_an_error_and_never_panics() {
    let files = [
        fixture(1, D23, 118, &f32_bytes(&[1.0; 6])),
        fixture(2, D23, 116, &f32_bytes(&[1.0; 6])),
        fixture(
            3,
            "{'descr': '<f8', 'fortran_order': True, 'shape': (2, 3), }",
            116,
            &f64_bytes(&[1.0; 6]),
        ),
        write_npy(&[], &[3.0]),
    ];
    for file in &files {
        assert!(read_npy(file).is_ok());
        for cut in 0..file.len() {
            match read_npy(&file[..cut]) {
                Err(NpyError::TruncatedHeader { found, .. }) => assert_eq!(found, cut as u64),
                Err(NpyError::TruncatedData { .. }) => assert!(cut >= 128),
                other => panic!("prefix of {cut} bytes: {other:?}"),
            }
        }
    }
}

/// Corrupting any byte of a header, or the length field, never panics.
#[test]
fn corrupted_files_never_panic() {
    let file = fixture(1, D23, 118, &f32_bytes(&[1.0; 6]));
    let mut state = 0x2545_f491_4f6c_dd1du64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    for pos in 0..128 {
        for value in [
            0u8, b' ', b'(', b')', b'\'', b',', b'9', b'-', b'{', 0x80, 0xff,
        ] {
            let mut f = file.clone();
            f[pos] = value;
            let _ = read_npy(&f);
        }
    }
    let alphabet = b"{}()[]',: 0123456789-LTrueFalsNon<f4>8\"\\\n";
    for _ in 0..20_000 {
        let mut f = file.clone();
        for _ in 0..(next() % 6 + 1) {
            let pos = 8 + (next() % 120) as usize;
            f[pos] = alphabet[(next() % alphabet.len() as u64) as usize];
        }
        let cut = f.len() - (next() % 4) as usize;
        let _ = read_npy(&f[..cut]);
    }
}

#[test]
fn write_npy_file_is_atomic_and_checks_its_input() {
    let dir = std::env::temp_dir().join(format!("tessera-npy-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("out0.npy");
    write_npy_file(&path, &[2, 3], &[1.0, 2.0, 3.0, 4.0, 5.0, 6.0]).unwrap();
    // Overwriting replaces the file in one step.
    write_npy_file(&path, &[2], &[7.0, 8.0]).unwrap();
    let a = read_npy(&std::fs::read(&path).unwrap()).unwrap();
    assert_eq!(a.shape, vec![2]);
    assert_eq!(f32_data(&a), &[7.0, 8.0]);
    let e = write_npy_file(&path, &[3], &[1.0]).unwrap_err();
    assert_eq!(e.kind(), std::io::ErrorKind::InvalidInput);
    assert!(write_npy_file(dir.join("missing/out.npy"), &[1], &[1.0]).is_err());
    // No temporary file is left behind.
    let names: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names, vec!["out0.npy".to_string()]);
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Integer `.npy` files of every accepted width and byte order are read exactly, as `i32`
/// values when they fit; the first value outside the `i32` range is named with its
/// position; integer files fill only `i32` parameters, and `i32` parameters take only
/// integer files.
#[test]
fn integer_files_read_exactly_for_i32() {
    let cases: Vec<(&str, Vec<u8>, Vec<i32>)> = vec![
        (
            "<i4",
            [i32::MIN, -1, 0, i32::MAX]
                .iter()
                .flat_map(|v| v.to_le_bytes())
                .collect(),
            vec![i32::MIN, -1, 0, i32::MAX],
        ),
        (
            ">i4",
            [i32::MIN, -1, 0, i32::MAX]
                .iter()
                .flat_map(|v| v.to_be_bytes())
                .collect(),
            vec![i32::MIN, -1, 0, i32::MAX],
        ),
        (
            "<i8",
            [-2147483648i64, -5, 7, 2147483647]
                .iter()
                .flat_map(|v| v.to_le_bytes())
                .collect(),
            vec![i32::MIN, -5, 7, i32::MAX],
        ),
        (
            "<i2",
            [i16::MIN, -1, 0, i16::MAX]
                .iter()
                .flat_map(|v| v.to_le_bytes())
                .collect(),
            vec![-32768, -1, 0, 32767],
        ),
        ("|i1", vec![0x80, 0xff, 0, 0x7f], vec![-128, -1, 0, 127]),
        ("|u1", vec![0x80, 0xff, 0, 0x7f], vec![128, 255, 0, 127]),
        (
            "<u2",
            [0u16, 1, 40000, 65535]
                .iter()
                .flat_map(|v| v.to_le_bytes())
                .collect(),
            vec![0, 1, 40000, 65535],
        ),
    ];
    for (descr, data, want) in cases {
        let dict = format!("{{'descr': '{descr}', 'fortran_order': False, 'shape': (4,), }}");
        let bytes = fixture(1, &dict, 118, &data);
        let a = read_npy(&bytes).unwrap_or_else(|e| panic!("{descr}: {e}"));
        assert_eq!(a.to_i32().unwrap(), want, "{descr}");
        let reader = NpyReader::new(&bytes[..], Some(bytes.len() as u64)).expect("header");
        assert!(reader.check_dtype(Dtype::I32).is_ok(), "{descr}");
        assert!(
            matches!(
                reader.check_dtype(Dtype::F32),
                Err(NpyError::IntMismatch { .. })
            ),
            "{descr}"
        );
    }
    // int64 beyond i32: the first offending value and its position.
    let data: Vec<u8> = [1i64, 2147483648, -3000000000]
        .iter()
        .flat_map(|v| v.to_le_bytes())
        .collect();
    let bytes = fixture(
        1,
        "{'descr': '<i8', 'fortran_order': False, 'shape': (3,), }",
        118,
        &data,
    );
    let e = read_npy(&bytes).unwrap().to_i32().unwrap_err();
    assert_eq!(
        e.to_string(),
        "the int64 value 2147483648 (element 1 in C order) does not fit in i32 \
         (-2147483648 to 2147483647)"
    );
    // A float file does not fill an i32 parameter.
    let bytes = fixture(
        1,
        "{'descr': '<f4', 'fortran_order': False, 'shape': (1,), }",
        118,
        &f32_bytes(&[1.0]),
    );
    let reader = NpyReader::new(&bytes[..], Some(bytes.len() as u64)).expect("header");
    assert!(matches!(
        reader.check_dtype(Dtype::I32),
        Err(NpyError::IntMismatch { .. })
    ));
}

/// `write_npy_i32` writes NumPy's int32 layout, which reads back exactly.
#[test]
fn int32_outputs_round_trip() {
    let values = [i32::MIN, -7, 0, 9, i32::MAX, 3];
    let bytes = runtime::npy::write_npy_i32(&[2, 3], &values);
    assert_eq!(
        bytes.len() - 24,
        128,
        "a 128-byte header (64-aligned), then 24 data bytes"
    );
    assert!(std::str::from_utf8(&bytes[10..128])
        .unwrap()
        .contains("'descr': '<i4'"));
    let a = read_npy(&bytes).unwrap();
    assert_eq!(a.shape, vec![2, 3]);
    assert_eq!(a.to_i32().unwrap(), values);
}

/// The files are written streamed, a piece at a time; their bytes are those of the
/// in-memory serialisation, across many pieces and for both kinds.
#[test]
fn streamed_files_hold_the_serialised_bytes() {
    let dir = std::env::temp_dir().join(format!("tessera-npy-stream-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let data: Vec<f32> = (0..40_000).map(|i| (i % 7) as f32 * 0.5 - 1.0).collect();
    for (kind, name) in [
        (runtime::npy::NpyOut::F32, "f.npy"),
        (runtime::npy::NpyOut::Bool, "b.npy"),
    ] {
        let path = dir.join(name);
        runtime::npy::write_npy_file_as(&path, &[200, 200], &data, kind).unwrap();
        let bytes = std::fs::read(&path).unwrap();
        assert_eq!(
            bytes,
            runtime::npy::write_npy_as(&[200, 200], &data, kind),
            "{name}"
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}
