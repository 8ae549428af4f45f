//! Tile IR text: printing and parsing round trip (hand-written files, every example kernel
//! as the pipeline compiles it, and functions after allocation, spills and
//! synchronisation), and parse errors name the line, column and problem.

#[path = "tile/common.rs"]
mod common;

use tessera::driver::{self, CompileOptions};
use tessera::tile;

/// `print(parse(print(f))) == print(f)`, and the parsed function verifies the same way.
fn assert_round_trip(f: &tile::TileFunc) {
    let text = f.to_string();
    let back = tile::parse(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
    assert_eq!(back.to_string(), text);
    assert_eq!(back.synced, f.synced);
    assert_eq!(tile::verify(&back).is_ok(), tile::verify(f).is_ok());
}

#[test]
fn files_round_trip_before_and_after_the_passes() {
    for name in [
        "exp_rows.tir",
        "exp_rows_shared.tir",
        "matmul256.tir",
        "spill_sum.tir",
    ] {
        let f = common::parse_file(name);
        assert_eq!(tile::verify(&f), Ok(()), "{name}");
        assert_round_trip(&f);
        let c = common::compile(f, true);
        let done = c.tile.as_ref().expect("tile IR");
        assert!(done.synced);
        assert_round_trip(done);
    }
}

#[test]
fn canonical_text_is_reproduced_exactly() {
    let text = "\
tile kernel k synced {
    b0 = hbm input \"x y\" f32[128, 64] @ 0
    b1 = hbm output out0 f32[128, 64] @ 32768
    b2 = sbuf f32 128x256 @ p0+1024
    b3 = psum f32 128x2048 @ p0+0
    inst0 = dma3: dma dst=sbuf.f32[0:128, 0; 64:1], src=hbm.f32[0; 128:64, 64:1] signal(s7) {b2, b0} @12..20
    inst2 = vector: wait(s7>=1) tensor_copy out=psum.f32[0:128, 0; 64:1], src=sbuf.f32[0:128, 0; 64:1] signal(s1) {b3, b2} @30..35
    inst1 = vector: wait(s7>=1) tensor_copy out=sbuf.f32[0:128, 0; 64:1], src=psum.f32[0:128, 0; 64:1] signal(s1) {b2, b3} @36..40
    inst3 = dma0: wait(s1>=2) dma dst=hbm.f32[0; 128:64, 64:1], src=sbuf.f32[0:128, 0; 64:1] signal(s4) {b1, b2} @50..60
}
";
    let f = tile::parse(text).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(f.to_string(), text);
    // Instruction numbers are kept even out of layout order.
    let order: Vec<String> = f.layout.iter().map(|i| i.to_string()).collect();
    assert_eq!(order, ["inst0", "inst2", "inst1", "inst3"]);
    assert_eq!(tile::verify(&f), Ok(()));
}

#[test]
fn comments_blank_lines_and_missing_spans_are_accepted() {
    let text = "
; a comment
tile kernel k {   ; trailing comment
    b0 = hbm input x f32[4, 4]

    b1 = sbuf f32 4x16 ; four partitions
    inst5 = dma0:   dma dst=sbuf.f32[0:4, 0; 4:1], src=hbm.f32[0; 4:4, 4:1]   {b1, b0}
}
";
    let f = tile::parse(text).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(f.layout.len(), 1);
    // Unused numbers become placeholders outside the layout.
    assert_eq!(f.insts.len(), 6);
    assert!(f.to_string().contains(
        "inst5 = dma0: dma dst=sbuf.f32[0:4, 0; 4:1], src=hbm.f32[0; 4:4, 4:1] {b1, b0} @0..0"
    ));
    assert_round_trip(&f);
}

#[test]
fn every_example_kernel_round_trips_after_the_pipeline() {
    let dir = format!("{}/examples", env!("CARGO_MANIFEST_DIR"));
    let mut seen = 0;
    for entry in std::fs::read_dir(&dir).expect("examples") {
        let path = entry.expect("entry").path();
        if path.extension().and_then(|e| e.to_str()) != Some("tsr") {
            continue;
        }
        let src = driver::read_source(&path).expect("source");
        let mut dumps = String::new();
        let c = match driver::compile(&src, &CompileOptions::default(), &mut dumps) {
            Ok(c) => c,
            // A kernel the frontend or tiling does not handle yet is not this test's concern.
            Err(driver::DriverError::Internal(e)) => panic!("{}: {e}", path.display()),
            Err(_) => continue,
        };
        let Some(f) = c.tile.as_ref() else { continue };
        assert_round_trip(f);
        let program = c.program.as_ref().expect("program");
        assert_eq!(isa::verify(program), Ok(()), "{}", path.display());
        assert_eq!(program.source.as_deref(), Some(src.name.as_str()));
        seen += 1;
    }
    assert!(seen > 0, "no example compiled");
}

/// The error of parsing `text`, as `line:col: message`.
fn error(text: &str) -> String {
    match tile::parse(text) {
        Ok(f) => panic!("parsed:\n{f}"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn parse_errors_name_line_column_and_problem() {
    let head = "tile kernel k {\n    b0 = hbm input x f32[4, 4]\n    b1 = sbuf f32 4x16\n";
    assert_eq!(
        error(""),
        "1:1: expected `tile kernel NAME {`, found end of input"
    );
    assert_eq!(
        error("kernel k {\n}\n"),
        "1:1: expected `tile kernel NAME {`, found `kernel k {`"
    );
    assert_eq!(
        error("tile kernel k {\n    b1 = sbuf f32 4x16\n}\n"),
        "2:5: buffers must be declared in order: expected b0, found b1"
    );
    assert_eq!(
        error("tile kernel k {\n    b0 = dram f32 4x16\n}\n"),
        "2:10: unknown memory `dram` (expected hbm, sbuf, psum)"
    );
    assert_eq!(
        error("tile kernel k {\n    b0 = sbuf f33 4x16\n}\n"),
        "2:15: unknown dtype `f33` (expected f32, bf16, f16, f8e4m3, f8e5m2, i32, bool)"
    );
    assert_eq!(
        error(&format!("{head}    inst0 = dma9x: nop {{}}\n}}\n")),
        "4:13: unknown engine `dma9x` (expected tensor, vector, scalar, gpsimd, dma0 .. dma15)"
    );
    // Errors inside the instruction text come from the ISA's parser, at the right column.
    assert_eq!(
        error(&format!("{head}    inst0 = dma0: dma dst=sbuf.f32[0:4, 0; 4:1], srcc=hbm.f32[0; 16:1] {{b1, b0}}\n}}\n")),
        "4:50: unknown field `srcc` of `dma` (its fields: dst, src)"
    );
    assert_eq!(
        error(&format!(
            "{head}    inst0 = vector: memset out=sbuf.f32[0:4, 0; 4:1], value=1.0\n}}\n"
        )),
        "4:64: expected the operand buffers `{b0, b1}` after the instruction"
    );
    assert_eq!(
        error(&format!(
            "{head}    inst0 = vector: memset out=sbuf.f32[0:4, 0; 4:1], value=1.0 {{b7}}\n}}\n"
        )),
        "4:1: inst0 uses b7, which is not declared"
    );
    assert_eq!(
        error(&format!(
            "{head}    inst0 = vector: nop {{}}\n    inst0 = vector: nop {{}}\n}}\n"
        )),
        "5:1: inst0 is defined twice"
    );
    assert_eq!(
        error(&format!("{head}    inst0 = vector: nop {{}}\n")),
        "4:1: expected the closing `}` of the function, found end of input"
    );
    assert_eq!(
        error(&format!("{head}}}\n}}\n")),
        "5:1: nothing may follow the closing `}` of the function"
    );
    assert_eq!(
        error(&format!("{head}    inst0 = vector: nop {{}} @5-6\n}}\n")),
        "4:30: expected `..` in a span like `@12..20`, found `-6`"
    );
    assert_eq!(
        error(&format!(
            "{head}    inst0 = vector: nop {{}}\n    b2 = sbuf f32 4x4\n}}\n"
        )),
        "5:5: buffers must be declared before the instructions"
    );
    assert_eq!(
        error("tile kernel k {\n    b0 = sbuf f32 4x16 @ 12\n}\n"),
        "2:26: expected a tile placement like `p0+1024`, found `12`"
    );
}

/// An HBM buffer declared under a name already taken (a parameter called `out0` or
/// `spill0`, the names of results and spill scratch) gets the first free suffix.
#[test]
fn hbm_names_stay_distinct() {
    use isa::{Dtype, Role};
    use tessera::tile::{BufKind, TileFunc};
    let mut f = TileFunc::new("k");
    let name = |f: &TileFunc, b| match &f.bufs[b] {
        tile::BufData {
            kind: BufKind::Hbm { name, .. },
            ..
        } => name.clone(),
        _ => unreachable!("an HBM buffer"),
    };
    let a = f.hbm("spill0", Role::Input, Dtype::F32, &[4]);
    let b = f.hbm("spill0", Role::Scratch, Dtype::F32, &[4]);
    let c = f.hbm("spill0", Role::Scratch, Dtype::F32, &[4]);
    assert_eq!(
        [name(&f, a), name(&f, b), name(&f, c)],
        ["spill0", "spill0_1", "spill0_2"]
    );
}
