//! Round-trip properties over random valid programs: binary encode/decode, text
//! disassemble/assemble in both directions, and per-instruction `Display`/`FromStr`.
//! The generator (`common`) only builds programs that pass `verify`, which is asserted too.

mod common;

use isa::*;
use proptest::prelude::*;

proptest! {
    #![proptest_config(common::proptest_config(256))]

    #[test]
    fn generated_programs_verify(p in common::program(3)) {
        if let Err(errors) = verify(&p) {
            let text: Vec<String> = errors.iter().map(|e| e.to_string()).collect();
            prop_assert!(false, "generator made an invalid program:\n{}", text.join("\n"));
        }
    }

    #[test]
    fn binary_round_trip(p in common::program(3)) {
        let bytes = encode_program(&p);
        let back = decode_program(&bytes);
        prop_assert_eq!(back.as_ref(), Ok(&p));
    }

    #[test]
    fn text_round_trip(p in common::program(3)) {
        let text = disassemble(&p);
        let back = assemble(&text);
        prop_assert_eq!(back.as_ref(), Ok(&p), "text:\n{}", text);
        // The text is canonical: assembling and disassembling it gives it back.
        prop_assert_eq!(disassemble(back.as_ref().unwrap()), text);
    }

    #[test]
    fn inst_display_parses_back(
        inst in (0..NUM_STREAMS).prop_flat_map(|i| {
            common::stream_for(Engine::from_index(i).unwrap(), 4)
        })
    ) {
        for inst in inst {
            let line = inst.to_string();
            prop_assert_eq!(line.parse::<Inst>(), Ok(inst.clone()), "line: {}", line);
            let mut bytes = Vec::new();
            encode_inst(&inst, &mut bytes);
            prop_assert_eq!(decode_inst(&bytes), Ok((inst, bytes.len())));
        }
    }

    #[test]
    fn immediates_round_trip_as_text(imm in common::imm()) {
        let text = imm.to_string();
        let line = format!("memset out=sbuf.f32[0:1, 0; 1:1], value={text}");
        let inst: Inst = line.parse().expect("parses");
        prop_assert_eq!(inst.op, Op::Memset {
            out: TileAp::new(Mem::Sbuf, Dtype::F32, 0, 1, 0, &[(1, 1)]),
            value: imm,
        });
    }
}

#[test]
fn small_program_round_trips() {
    let p = common::small_program();
    assert_eq!(verify(&p), Ok(()));
    assert_eq!(decode_program(&encode_program(&p)), Ok(p.clone()));
    assert_eq!(assemble(&disassemble(&p)), Ok(p));
}

#[test]
fn empty_program_text_is_just_the_header() {
    let p = Program::new(Preset::Default);
    assert_eq!(disassemble(&p), ".preset default\n.hbm 0\n");
    assert_eq!(assemble(""), Ok(p));
}

#[test]
fn non_canonical_text_is_accepted() {
    // Fields in another order, comments, extra spaces, trailing comment after a tile, and a
    // `.loc` without `.locs`.
    let text = "
        ; a comment line
        .stream vector   ; the vector engine
        .loc 7:1
        tensor_copy src=sbuf.f32[0:128, 0 ; 64:1], out=sbuf.bf16[0:128,512;64:1] ; copy
        end
    ";
    let p = assemble(text).expect("assembles");
    assert_eq!(verify(&p), Ok(()));
    assert_eq!(
        disassemble(&p),
        ".preset default\n.hbm 0\n.locs\n\n.stream vector\n    .loc 7:1\n    \
         tensor_copy out=sbuf.bf16[0:128, 512; 64:1], src=sbuf.f32[0:128, 0; 64:1]\n    end\n"
    );
}

#[test]
fn quoted_names_and_sources_round_trip() {
    let mut p = Program::new(Preset::Default);
    p.hbm_size = 64;
    p.source = Some("dir with space/k\"é\n\u{301}.tsr".into());
    p.tensors.push(TensorDecl {
        name: "x; y [\"z\"]".into(),
        role: Role::Scratch,
        dtype: Dtype::F16,
        shape: vec![],
        offset: 0,
    });
    let text = disassemble(&p);
    assert!(
        text.contains(".tensor \"x; y [\\\"z\\\"]\" scratch f16 [] @0\n"),
        "{text}"
    );
    assert_eq!(assemble(&text), Ok(p));
}

/// The generator reaches every opcode (so the round-trip properties cover each one): 200
/// programs from proptest's deterministic runner. Print some with
/// `PRINT_SAMPLE=1 cargo test -p tessera-isa --test roundtrip generator -- --nocapture`.
#[test]
fn generator_reaches_every_opcode() {
    use proptest::strategy::ValueTree;
    let mut runner = proptest::test_runner::TestRunner::deterministic();
    let mut seen = std::collections::BTreeSet::new();
    for i in 0..200 {
        let p = common::program(3).new_tree(&mut runner).unwrap().current();
        if i < 2 && std::env::var_os("PRINT_SAMPLE").is_some() {
            println!("{}", disassemble(&p));
        }
        for inst in p.streams.iter().flatten() {
            seen.insert(inst.op.opcode().mnemonic());
        }
    }
    for &opcode in isa::Opcode::ALL {
        assert!(
            seen.contains(opcode.mnemonic()),
            "the generator never made `{}`",
            opcode.mnemonic()
        );
    }
}
