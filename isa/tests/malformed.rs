//! Malformed inputs: the decoder and the assembler must reject bad bytes and bad text with
//! a precise error (kind, offset or line:col, message) and never panic, and whatever they
//! accept must be safe to verify, disassemble and re-encode.

mod common;

use isa::*;
use proptest::prelude::*;

/// Byte offsets of a program with no tensors (see ISA.md, "The .tbin container").
const VERSION: usize = 8;
const PRESET: usize = 10;
const TENSOR_COUNT: usize = 20;
const STREAM_COUNT: usize = 24;
const STREAM0_ENGINE: usize = 25;
const STREAM0_LEN: usize = 26;
const STREAM0_FIRST_INST: usize = 34;

/// A program whose tensor stream starts with `op`.
fn program_with(op: Op) -> Vec<u8> {
    let mut p = Program::new(Preset::Default);
    p.hbm_size = 1 << 20;
    p.streams[0].insert(0, Inst::new(op));
    encode_program(&p)
}

fn matmul() -> Op {
    Op::Matmul {
        out: TileAp::new(Mem::Psum, Dtype::F32, 0, 4, 0, &[(8, 1)]),
        stationary: TileAp::new(Mem::Sbuf, Dtype::Bf16, 0, 4, 0, &[(4, 1)]),
        moving: TileAp::new(Mem::Sbuf, Dtype::Bf16, 0, 4, 64, &[(8, 1)]),
        accumulate: false,
    }
}

/// Exercises everything downstream of a successful decode; none of it may panic.
fn use_decoded(p: &Program) {
    use_decoded_binary(p);
    let text = disassemble(p);
    let _ = assemble(&text);
}

/// The cheap part of [`use_decoded`]: verify, and the binary form round-trips.
fn use_decoded_binary(p: &Program) {
    let _ = verify(p);
    let bytes = encode_program(p);
    assert_eq!(decode_program(&bytes).as_ref(), Ok(p));
}

#[test]
fn every_truncation_is_an_error() {
    let bytes = encode_program(&common::small_program());
    for len in 0..bytes.len() {
        match decode_program(&bytes[..len]) {
            Err(DecodeError::Truncated { .. }) | Err(DecodeError::LengthTooLarge { .. }) => {}
            other => panic!("prefix of {len} bytes: {other:?}"),
        }
    }
    assert!(decode_program(&bytes).is_ok());
}

#[test]
fn every_single_byte_mutation_is_handled() {
    let bytes = encode_program(&common::small_program());
    let mut accepted = 0;
    for i in 0..bytes.len() {
        for v in 0..=255u8 {
            if v == bytes[i] {
                continue;
            }
            let mut m = bytes.clone();
            m[i] = v;
            if let Ok(p) = decode_program(&m) {
                accepted += 1;
                // Decoding is checked exhaustively; what follows a successful decode is
                // slower and checked on a fixed sample (verify on every eighth, the text
                // form on every 32nd).
                if accepted % 32 == 0 {
                    use_decoded(&p);
                } else if accepted % 8 == 0 {
                    use_decoded_binary(&p);
                }
            }
        }
    }
    // Many mutations (offsets, sizes, semaphore values) still decode; they must be usable.
    assert!(accepted > 0);
    println!("{accepted} of {} mutations decoded", bytes.len() * 255);
}

#[test]
fn bad_magic() {
    let mut bytes = encode_program(&Program::new(Preset::Default));
    bytes[..8].copy_from_slice(b"\x7fELF\x02\x01\x01\x00");
    let err = decode_program(&bytes).unwrap_err();
    assert!(matches!(err, DecodeError::BadMagic { .. }), "{err:?}");
    assert!(err.to_string().contains("not a .tbin file"), "{err}");
    // A short foreign file is also a bad magic, a prefix of the magic is truncated.
    assert!(matches!(
        decode_program(b"PK"),
        Err(DecodeError::BadMagic { .. })
    ));
    assert!(matches!(
        decode_program(b"TESS"),
        Err(DecodeError::Truncated {
            offset: 0,
            needed: 4,
            what: "magic"
        })
    ));
    assert!(matches!(
        decode_program(b""),
        Err(DecodeError::Truncated { offset: 0, .. })
    ));
}

#[test]
fn bad_version() {
    let mut bytes = encode_program(&Program::new(Preset::Default));
    bytes[VERSION] = 9;
    let err = decode_program(&bytes).unwrap_err();
    assert_eq!(
        err,
        DecodeError::BadVersion {
            offset: VERSION,
            found: 9,
            expected: FORMAT_VERSION
        }
    );
    assert_eq!(
        err.to_string(),
        "unsupported .tbin format version 9 at byte 8 (this build reads versions 1 to 2)"
    );
}

/// A version 1 file (written before the origin section existed) still loads, without an
/// origin; the same bytes marked version 2 lack the origin flag, which is an error.
#[test]
fn version_1_files_still_load() {
    let mut p = common::small_program();
    p.origin = None;
    let mut bytes = encode_program(&p);
    assert_eq!(bytes.pop(), Some(0), "the last byte is the origin flag");
    assert!(matches!(
        decode_program(&bytes),
        Err(DecodeError::Truncated {
            what: "origin section flag",
            ..
        })
    ));
    bytes[VERSION..VERSION + 2].copy_from_slice(&1u16.to_le_bytes());
    assert_eq!(decode_program(&bytes), Ok(p));
}

/// A malformed origin section is an error naming what is wrong, never a panic.
#[test]
fn malformed_origin_section() {
    let p = common::small_program();
    let origin = p.origin.clone().expect("the small program has an origin");
    let bytes = encode_program(&p);
    // The origin section is the last part of the file: flag, path, hash, kernel, defines,
    // policy, passes.
    let start = bytes.len()
        - (1 + 4
            + origin.path.len()
            + 32
            + 4
            + origin.kernel.len()
            + 4
            + (4 + 1 + 8)
            + 1
            + 4
            + (4 + "fusion".len()));
    assert_eq!(bytes[start], 1, "origin flag");
    let mut bad_flag = bytes.clone();
    bad_flag[start] = 2;
    assert!(matches!(
        decode_program(&bad_flag),
        Err(DecodeError::BadEnum {
            what: "origin section flag",
            ..
        })
    ));
    let policy = bytes.len() - (1 + 4 + 4 + "fusion".len());
    let mut bad_policy = bytes.clone();
    bad_policy[policy] = 7;
    assert_eq!(
        decode_program(&bad_policy),
        Err(DecodeError::BadEnum {
            offset: policy,
            what: "origin dtype policy",
            value: 7
        })
    );
    let defines = start + 1 + 4 + origin.path.len() + 32 + 4 + origin.kernel.len();
    let mut huge_count = bytes.clone();
    huge_count[defines..defines + 4].copy_from_slice(&u32::MAX.to_le_bytes());
    assert!(matches!(
        decode_program(&huge_count),
        Err(DecodeError::LengthTooLarge {
            what: "origin define",
            ..
        })
    ));
    let mut trailing = bytes.clone();
    trailing.push(0);
    assert!(matches!(
        decode_program(&trailing),
        Err(DecodeError::TrailingBytes { .. })
    ));
}

#[test]
fn unknown_preset() {
    let mut bytes = encode_program(&Program::new(Preset::Default));
    bytes[PRESET] = 7;
    assert_eq!(
        decode_program(&bytes),
        Err(DecodeError::UnknownPreset {
            offset: PRESET,
            id: 7
        })
    );
}

#[test]
fn unknown_opcode() {
    let mut bytes = program_with(Op::Nop {});
    bytes[STREAM0_FIRST_INST] = 0xee;
    let err = decode_program(&bytes).unwrap_err();
    assert_eq!(
        err,
        DecodeError::UnknownOpcode {
            offset: STREAM0_FIRST_INST,
            byte: 0xee
        }
    );
    assert_eq!(err.to_string(), "unknown opcode byte 0xee at byte 34");
    assert_eq!(
        decode_inst(&[0x7f, 0]),
        Err(DecodeError::UnknownOpcode {
            offset: 0,
            byte: 0x7f
        })
    );
}

#[test]
fn bad_enum_bytes() {
    // Matmul: opcode, sync, then `out`: mem, dtype, ...
    let dtype = STREAM0_FIRST_INST + 3;
    let mut bytes = program_with(matmul());
    bytes[dtype] = 9;
    let err = decode_program(&bytes).unwrap_err();
    assert_eq!(
        err,
        DecodeError::BadEnum {
            offset: dtype,
            what: "dtype",
            value: 9
        }
    );
    assert_eq!(err.to_string(), "invalid dtype byte 0x09 at byte 37");

    let mut bytes = program_with(matmul());
    bytes[dtype - 1] = 2;
    assert!(matches!(
        decode_program(&bytes),
        Err(DecodeError::BadEnum {
            what: "memory",
            value: 2,
            ..
        })
    ));

    // The last byte of the matmul is its `accumulate` bool.
    let mut inst = Vec::new();
    encode_inst(&Inst::new(matmul()), &mut inst);
    let last = inst.len() - 1;
    inst[last] = 2;
    assert_eq!(
        decode_inst(&inst),
        Err(DecodeError::BadEnum {
            offset: last,
            what: "bool",
            value: 2
        })
    );

    let mut inst = Vec::new();
    let op = Op::TensorReduce {
        op: ReduceOp::Add,
        out: TileAp::new(Mem::Sbuf, Dtype::F32, 0, 1, 0, &[(1, 1)]),
        src: TileAp::new(Mem::Sbuf, Dtype::F32, 0, 1, 0, &[(1, 1)]),
    };
    encode_inst(&Inst::new(op), &mut inst);
    inst[2] = 3;
    assert_eq!(
        decode_inst(&inst),
        Err(DecodeError::BadEnum {
            offset: 2,
            what: "reduce op",
            value: 3
        })
    );
}

#[test]
fn trailing_bytes() {
    let mut bytes = encode_program(&Program::new(Preset::Default));
    let len = bytes.len();
    bytes.extend_from_slice(&[0, 0]);
    assert_eq!(
        decode_program(&bytes),
        Err(DecodeError::TrailingBytes {
            offset: len,
            count: 2,
            what: "program"
        })
    );

    // A stream whose byte length is longer than its instructions.
    let mut p = Program::new(Preset::Default);
    p.streams[0] = vec![Inst::new(Op::Nop {}), Inst::new(Op::End {})];
    let mut bytes = encode_program(&p);
    bytes[STREAM0_LEN] = 4; // Two instructions take 4 bytes; claim 4 but count 1.
    bytes[STREAM0_LEN + 4] = 1;
    assert_eq!(
        decode_program(&bytes),
        Err(DecodeError::TrailingBytes {
            offset: STREAM0_FIRST_INST + 2,
            count: 2,
            what: "stream's instructions"
        })
    );
}

#[test]
fn invalid_utf8() {
    let mut p = Program::new(Preset::Default);
    p.hbm_size = 64;
    p.tensors.push(TensorDecl {
        name: "ab".into(),
        role: Role::Input,
        dtype: Dtype::F32,
        shape: vec![4],
        offset: 0,
    });
    let mut bytes = encode_program(&p);
    // Tensor: role, dtype, name length (4 bytes), name.
    let name = TENSOR_COUNT + 4 + 2 + 4;
    assert_eq!(&bytes[name..name + 2], b"ab");
    bytes[name + 1] = 0xff;
    let err = decode_program(&bytes).unwrap_err();
    assert_eq!(
        err,
        DecodeError::InvalidUtf8 {
            offset: name + 1,
            what: "tensor name"
        }
    );
    assert_eq!(err.to_string(), "invalid UTF-8 in tensor name at byte 31");
}

#[test]
fn too_many_dims_and_waits() {
    // Matmul `out`: mem, dtype, start, count, offset (4), then the dim count.
    let ndims = STREAM0_FIRST_INST + 2 + 8;
    let mut bytes = program_with(matmul());
    assert_eq!(bytes[ndims], 1);
    bytes[ndims] = 5;
    let err = decode_program(&bytes).unwrap_err();
    assert_eq!(
        err,
        DecodeError::TooManyDims {
            offset: ndims,
            what: "tile access pattern",
            count: 5,
            max: 4
        }
    );
    assert_eq!(
        err.to_string(),
        "too many dimensions in tile access pattern at byte 44: 5 (at most 4)"
    );

    let mut bytes = program_with(Op::Nop {});
    bytes[STREAM0_FIRST_INST + 1] = 5;
    assert_eq!(
        decode_program(&bytes),
        Err(DecodeError::TooManyWaits {
            offset: STREAM0_FIRST_INST + 1,
            count: 5,
            max: 4
        })
    );
    bytes[STREAM0_FIRST_INST + 1] = 0x10;
    assert_eq!(
        decode_program(&bytes),
        Err(DecodeError::ReservedBits {
            offset: STREAM0_FIRST_INST + 1,
            byte: 0x10
        })
    );
}

#[test]
fn stream_table_errors() {
    let base = encode_program(&Program::new(Preset::Default));
    let mut bytes = base.clone();
    bytes[STREAM_COUNT] = 19;
    assert_eq!(
        decode_program(&bytes),
        Err(DecodeError::StreamCount {
            offset: STREAM_COUNT,
            found: 19,
            expected: NUM_STREAMS
        })
    );
    let mut bytes = base.clone();
    bytes[STREAM0_ENGINE] = 3;
    assert_eq!(
        decode_program(&bytes),
        Err(DecodeError::StreamEngine {
            offset: STREAM0_ENGINE,
            index: 0,
            found: 3
        })
    );
}

#[test]
fn hostile_lengths_do_not_allocate() {
    let mut bytes = encode_program(&Program::new(Preset::Default));
    bytes[TENSOR_COUNT..TENSOR_COUNT + 4].copy_from_slice(&u32::MAX.to_le_bytes());
    let err = decode_program(&bytes).unwrap_err();
    assert!(
        matches!(
            err,
            DecodeError::LengthTooLarge {
                offset: TENSOR_COUNT,
                what: "tensor",
                count: 0xffff_ffff,
                ..
            }
        ),
        "{err:?}"
    );
    let mut bytes = encode_program(&Program::new(Preset::Default));
    bytes[STREAM0_LEN + 4..STREAM0_LEN + 8].copy_from_slice(&u32::MAX.to_le_bytes());
    assert!(matches!(
        decode_program(&bytes),
        Err(DecodeError::LengthTooLarge {
            what: "instruction",
            ..
        })
    ));
}

/// Assembles `text` and returns the error as `line:col: message`.
fn asm_err(text: &str) -> String {
    match assemble(text) {
        Ok(p) => panic!("assembled:\n{}", disassemble(&p)),
        Err(e) => e.to_string(),
    }
}

#[test]
fn assembly_errors_say_where_and_what() {
    let cases: &[(&str, &str)] = &[
        (".stream vector\n    frobnicate", "2:5: unknown mnemonic `frobnicate`"),
        (
            ".stream vector\n  tensor_copy out=sbuf.f32[0:1, 0; 1:1]",
            "2:40: missing field `src` of `tensor_copy`",
        ),
        (
            ".stream vector\nmemset out=sbuf.f32[0:1, 0; 1:1], valu=1.0",
            "2:35: unknown field `valu` of `memset` (its fields: out, value)",
        ),
        (
            ".stream vector\nmemset value=1.0, value=2.0",
            "2:19: field `value` of `memset` is given twice",
        ),
        (
            ".stream vector\nmemset out=sbuf.f31[0:1, 0; 1:1], value=1.0",
            "2:17: unknown dtype `f31` (expected f32, bf16, f16, f8e4m3, f8e5m2, i32, bool)",
        ),
        (
            ".stream vector\nmemset out=dram.f32[0:1, 0; 1:1], value=1.0",
            "2:12: unknown memory `dram` for a tile (expected sbuf or psum)",
        ),
        (
            ".stream vector\nmemset out=sbuf.f32[0:1, 0 1:1], value=1.0",
            "2:28: expected `;`, found `1`",
        ),
        (
            ".stream vector\nmemset out=sbuf.f32[0:1, 0; 1:1] value=1.0",
            "2:34: expected `,` between fields, found `value`",
        ),
        (
            ".stream vector\nmemset out=sbuf.f32[0:1, 0; 1:1], value=one",
            "2:41: expected an f32 immediate (like `1.0`, `-2.5e-8`, `inf`, `nan`), found `one`",
        ),
        (
            ".stream vector\nmemset out=sbuf.f32[0:1, 0; 1:1], value=nan:0x3f800000",
            "2:45: 0x3f800000 is not the bit pattern of a NaN",
        ),
        (
            ".stream vector\nmemset out=sbuf.f32[0:300, 0; 1:1], value=0.0",
            "2:23: a partition count 300 is out of range",
        ),
        (
            ".stream tensor\nmatmul out=psum.f32[0:1, 0; 1:1], stationary=sbuf.f32[0:1, 0; 1:1], \
             moving=sbuf.f32[0:1, 0; 1:1], accumulate=yes",
            "2:110: expected `true` or `false`, found `yes`",
        ),
        (
            ".stream vector\nwait(s1>2) nop",
            "2:8: unexpected character `>`",
        ),
        (".stream vector\nwait(x1>=2) nop", "2:6: expected a semaphore like `s3`, found `x1`"),
        (".stream vector\nnop signal(s1", "2:14: expected `)`, found end of line"),
        (".stream vector\nnop extra", "2:5: unknown field `extra` of `nop` (it has no fields)"),
        ("nop", "1:1: instruction outside a stream (write `.stream NAME` first)"),
        (
            ".stream dma16",
            "1:9: unknown stream `dma16` (expected tensor, vector, scalar, gpsimd or dma0 .. dma15)",
        ),
        (".stream dma1\n.stream dma1", "2:9: stream `dma1` is given twice"),
        (
            ".frob 1",
            "1:1: unknown directive `.frob` (expected .preset, .hbm, .tensor, .source, .locs, \
             .origin, .origin-sha3, .origin-define, .origin-dtype-policy, .origin-disable-pass, \
             .stream or .loc)",
        ),
        (
            ".origin-define N 4",
            "1:1: `.origin-define` needs an `.origin` line before it",
        ),
        (
            ".origin \"k.tsr\" kernel k\n.origin-define N 4",
            "1:1: `.origin` needs an `.origin-sha3` line with the source's digest",
        ),
        (
            ".origin \"k.tsr\" kernel k\n.origin-sha3 abc",
            "2:14: expected a SHA3-256 digest (64 hexadecimal digits)",
        ),
        (
            ".origin \"k.tsr\" kernel k\n.origin-dtype-policy loose",
            "2:22: unknown dtype policy `loose` (expected wide or strict)",
        ),
        (
            ".origin \"k.tsr\" kernel k\n.origin \"k.tsr\" kernel k",
            "2:1: `.origin` is given twice",
        ),
        (".origin k.tsr", "1:9: expected a quoted source path, found `k.tsr`"),
        (".preset huge", "1:9: unknown preset `huge` (known: default)"),
        (".hbm 1\n.hbm 2", "2:1: `.hbm` is given twice"),
        (".hbm -1", "1:6: the HBM size in bytes -1 is out of range"),
        (".source \"a.tsr", "1:9: unterminated string: expected a closing `\"`"),
        (".source \"a\\q\"", "1:12: unknown string escape `\\q`"),
        (".tensor x inout f32 [1] @0", "1:11: expected a tensor role (input, output, scratch), found `inout`"),
        (".tensor x input f32 [1] 0", "1:25: expected `@`, found `0`"),
        (".stream vector\n.loc 1:2\n.stream scalar", "2:1: `.loc` is not followed by an instruction"),
        (".stream vector\n.loc 1:2", "2:1: `.loc` is not followed by an instruction"),
        (".loc 1:2", "1:1: `.loc` outside a stream"),
        (".stream vector\nnop # hash", "2:5: unexpected character `#`"),
        (
            ".stream dma0\ndma dst=1.0, src=hbm.f32[0; 1:1]",
            "2:9: expected an HBM pattern or an SBUF tile, found `1.0`",
        ),
        (
            ".stream vector\nmemset value 1.0",
            "2:14: expected `=`, found `1.0`",
        ),
        (".stream vector\nnop signal(s1) end", "2:16: expected end of line, found `end`"),
        // The text may not say more than the binary form holds (a proptest case found a
        // fifth affine step that assembled but did not survive encode/decode).
        (
            ".stream gpsimd\niota out=sbuf.f32[0:1, 0; 1:1, 1:1, 1:1, 1:1], \
             expr=affine(base=0, p=0, i=[1, 2, 3, 4, 5])",
            "2:88: an affine expression has at most 4 free-dimension steps",
        ),
        (
            ".stream vector\nmemset out=sbuf.f32[0:1, 0; 1:1, 1:1, 1:1, 1:1, 1:1], value=1.0",
            "2:49: a tile pattern has at most 4 dimensions",
        ),
        (
            ".stream dma0\ndma dst=sbuf.f32[0:1, 0; 1:1], \
             src=hbm.f32[0; 1:1, 1:1, 1:1, 1:1, 1:1, 1:1]",
            "2:72: an HBM pattern has at most 5 dimensions",
        ),
        (
            ".stream vector\nwait(s1>=1, s2>=1, s3>=1, s4>=1, s5>=1) nop",
            "2:34: an instruction waits on at most 4 semaphores",
        ),
        (
            ".tensor x input f32 [1, 1, 1, 1, 1, 1, 1, 1, 1] @0",
            "1:46: a tensor has at most 8 dimensions",
        ),
    ];
    for (text, expected) in cases {
        assert_eq!(&asm_err(text), expected, "text: {text:?}");
    }
}

proptest! {
    #![proptest_config(common::proptest_config(256))]

    /// Arbitrary text never panics the assembler.
    #[test]
    fn arbitrary_text_never_panics(text in any::<String>()) {
        if let Ok(p) = assemble(&text) {
            use_decoded(&p);
        }
    }

    /// Arbitrary bytes (with a valid header, to get past the magic) never panic the decoder.
    #[test]
    fn arbitrary_bytes_never_panic(tail in proptest::collection::vec(any::<u8>(), 0..200)) {
        let mut bytes = encode_program(&Program::new(Preset::Default))[..TENSOR_COUNT].to_vec();
        bytes.extend_from_slice(&tail);
        if let Ok(p) = decode_program(&bytes) {
            use_decoded(&p);
        }
    }

    /// Canonical text with one character replaced, deleted or duplicated never panics, and
    /// whatever still assembles is usable.
    #[test]
    fn mutated_text_never_panics(
        p in common::program(2),
        pos in any::<prop::sample::Index>(),
        kind in 0u8..3,
        c in prop::sample::select(vec![' ', ',', ';', '[', ']', '(', ')', ':', '=', '-', '0', '9', 'x', '"', '\n', '.', '@']),
    ) {
        let text = disassemble(&p);
        let mut chars: Vec<char> = text.chars().collect();
        let i = pos.index(chars.len());
        match kind {
            0 => chars[i] = c,
            1 => { chars.remove(i); }
            _ => chars.insert(i, c),
        }
        let text: String = chars.into_iter().collect();
        if let Ok(p) = assemble(&text) {
            use_decoded(&p);
        }
    }

    /// Random programs survive decoding of every truncation (a sampled one per case).
    #[test]
    fn random_program_truncations_fail(p in common::program(2), cut in any::<prop::sample::Index>()) {
        let bytes = encode_program(&p);
        let len = cut.index(bytes.len());
        prop_assert!(decode_program(&bytes[..len]).is_err());
    }
}
