//! The tile IR verifier: each broken rule gives a sentence naming the instruction or
//! buffer, and a synchronised function with a missing wait is reported as a race.

#[path = "tile/common.rs"]
mod common;

use tessera::tile;

/// The verifier's errors for a function in text form (which must parse).
fn errors(text: &str) -> Vec<String> {
    let f = tile::parse(text).unwrap_or_else(|e| panic!("{e}\n{text}"));
    match tile::verify(&f) {
        Ok(()) => Vec::new(),
        Err(e) => e,
    }
}

/// Asserts that exactly one error is reported and that it is `want`.
fn assert_error(text: &str, want: &str) {
    assert_eq!(errors(text), vec![want.to_string()], "{text}");
}

const HEAD: &str = "tile kernel k {
    b0 = hbm input x f32[128, 64]
    b1 = sbuf f32 128x256
    b2 = psum f32 128x2048
";

fn with(insts: &str) -> String {
    format!("{HEAD}{insts}}}\n")
}

#[test]
fn operands_lie_inside_their_buffers() {
    assert_eq!(errors(&with("    inst0 = dma0: dma dst=sbuf.f32[0:128, 0; 64:1], src=hbm.f32[0; 128:64, 64:1] {b1, b0}\n")), Vec::<String>::new());
    assert_error(
        &with("    inst0 = dma0: dma dst=sbuf.f32[0:128, 4; 64:1], src=hbm.f32[0; 128:64, 64:1] {b1, b0}\n"),
        "inst0 operand 0 touches bytes 4..260 of each partition of b1, which has 256",
    );
    assert_error(
        &with("    inst0 = dma0: dma dst=sbuf.f32[0:128, 0; 64:1], src=hbm.f32[256; 128:64, 64:1] {b1, b0}\n"),
        "inst0 operand 1 touches bytes 256..33024 of b0, which has 32768 bytes",
    );
    // Signed strides: a reversed row that starts at its last element but runs backwards
    // past the buffer's start.
    assert_error(
        &with("    inst0 = vector: memset out=sbuf.f32[0:128, 12; 8:-1], value=0.0 {b1}\n"),
        "inst0 operand 0 touches bytes -16..16 of each partition of b1, which has 256",
    );
    assert_error(
        &with("    inst0 = vector: memset out=sbuf.f32[64:128, 0; 8:1], value=0.0 {b1}\n"),
        "inst0 operand 0 covers partitions 64..192 of b1, which has 128",
    );
    // Huge strides and sizes cannot overflow the arithmetic.
    assert_error(
        &with("    inst0 = vector: memset out=sbuf.f32[0:128, 4294967295; 4294967295:2147483647, 4294967295:-2147483648], value=0.0 {b1}\n"),
        "inst0 operand 0 touches bytes -36893488125944266753..36893488117354332171 of each partition of b1, which has 256",
    );
}

#[test]
fn memories_buffer_counts_and_engines_are_checked() {
    assert_error(
        &with("    inst0 = vector: memset out=psum.f32[0:128, 0; 8:1], value=0.0 {b1}\n"),
        "inst0 operand 0 is a PSUM tile but b1 is in SBUF",
    );
    assert_error(
        &with("    inst0 = dma0: dma dst=sbuf.f32[0:128, 0; 64:1], src=hbm.f32[0; 128:64, 64:1] {b1, b1}\n"),
        "inst0 operand 1 is an HBM pattern but b1 is in SBUF",
    );
    assert_error(
        &with("    inst0 = dma0: dma dst=hbm.f32[0; 8:1], src=sbuf.f32[0:1, 0; 8:1] {b0, b2}\n"),
        "inst0 operand 1 is a SBUF tile but b2 is in PSUM",
    );
    assert_error(
        &with("    inst0 = vector: memset out=sbuf.f32[0:128, 0; 8:1], value=0.0 {b1, b1}\n"),
        "inst0 has 1 memory operands but names 2 buffers",
    );
    assert_error(
        &with("    inst0 = vector: matmul out=psum.f32[0:64, 0; 8:1], stationary=sbuf.f32[0:128, 0; 64:1], moving=sbuf.f32[0:128, 0; 8:1], accumulate=false {b2, b1, b1}\n"),
        "inst0 runs `matmul` on the vector engine, but it runs on: tensor",
    );
    assert_error(
        &with("    inst0 = gpsimd: memset out=psum.f32[0:128, 0; 8:1], value=0.0 {b2}\n"),
        "inst0: `out` is in PSUM, which the GpSimd engine cannot access",
    );
    assert_error(
        &with("    inst0 = vector: end {}\n"),
        "inst0 is `end`, which emission appends; tile IR must not contain it",
    );
}

/// The operands of an instruction agree with each other as the ISA's verifier requires
/// (`isa::check_operands`), so a pass that builds a wrong instruction is named here and not
/// later by `emit`'s check of the program.
#[test]
fn operands_agree_with_each_other() {
    assert_error(
        &with("    inst0 = vector: tensor_copy out=sbuf.f32[0:128, 0; 64:1], src=sbuf.f32[0:128, 0; 2:1] {b1, b1}\n"),
        "inst0: `out` is [128, 64] but `src` is [128, 2]; they must have the same partitions and free elements",
    );
    assert_error(
        &with("    inst0 = dma0: dma dst=sbuf.f32[0:128, 0; 32:1], src=hbm.f32[0; 128:64, 64:1] {b1, b0}\n"),
        "inst0: `dst` has 4096 elements but `src` has 8192; a DMA copies equal counts",
    );
}

#[test]
fn buffer_sizes_fit_the_machine() {
    assert_error(
        "tile kernel k {\n    b0 = psum f32 128x4096\n}\n",
        "b0 needs 4096 bytes per partition, but one PSUM bank holds 2048",
    );
    assert_error(
        "tile kernel k {\n    b0 = sbuf f32 129x64\n}\n",
        "b0 has 129 partitions, but a SBUF buffer has 1 to 128",
    );
    assert_error(
        "tile kernel k {\n    b0 = sbuf f32 1x200000\n}\n",
        "b0 needs 200000 bytes per partition, but an SBUF partition holds 196608",
    );
    assert_error(
        "tile kernel k {\n    b0 = hbm input x f32[4]\n    b1 = hbm output x f32[4]\n}\n",
        "b0 and b1 are both HBM tensors named `x`",
    );
}

#[test]
fn placements_respect_memories_and_the_partition_rule() {
    assert_error(
        "tile kernel k {\n    b0 = sbuf f32 128x256 @ p0+196600\n}\n",
        "b0 is placed at bytes 196600..196856, outside SBUF's 196608 bytes",
    );
    assert_error(
        "tile kernel k {\n    b0 = sbuf f32 64x256 @ p32+0\n}\n",
        "b0 is placed on partitions 32..96, which breaks the start rule or leaves the 128 partitions",
    );
    assert_error(
        "tile kernel k {\n    b0 = psum f32 128x1024 @ p0+1536\n}\n",
        "b0 is placed at PSUM bytes 1536..2560, which cross a bank boundary",
    );
    assert_error(
        "tile kernel k {\n    b0 = sbuf f32 128x256 @ p0+0\n    b1 = sbuf f32 128x256\n}\n",
        "b1 is not placed, though allocation placed other buffers",
    );
    // An operand that starts inside a placed buffer must keep the start rule too.
    assert_error(
        "tile kernel k {
    b0 = sbuf f32 64x256 @ p64+0
    inst0 = vector: memset out=sbuf.f32[16:16, 0; 8:1], value=0.0 {b0}
}\n",
        "inst0 operand 0 starts at partition 80 once b0 is placed, but a tile of 16 partitions must start at 0 or 32 or 64 or 96",
    );
    // Buffers live at the same time must not share bytes.
    assert_error(
        "tile kernel k {
    b0 = sbuf f32 128x256 @ p0+0
    b1 = sbuf f32 128x256 @ p0+128
    inst0 = vector: memset out=sbuf.f32[0:128, 0; 64:1], value=0.0 {b0}
    inst1 = vector: memset out=sbuf.f32[0:128, 0; 64:1], value=0.0 {b1}
    inst2 = vector: tensor_copy out=sbuf.f32[0:128, 0; 64:1], src=sbuf.f32[0:128, 0; 64:1] {b1, b0}
}\n",
        "b1 and b0 are live at the same time but share memory",
    );
}

#[test]
fn semaphore_fields_are_in_range() {
    // The text form refuses a fifth wait (the binary has no room for it), so the fifth is
    // added to the parsed function, as a pass could.
    let text = with("    inst0 = vector: wait(s1>=1, s2>=1, s3>=1, s4>=1) memset out=sbuf.f32[0:128, 0; 8:1], value=0.0 signal(s64) {b1}\n");
    let mut f = tile::parse(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
    let inst = f.layout[0];
    f.sync[inst].waits.push((5, 1));
    assert_eq!(
        tile::verify(&f).err().unwrap_or_default(),
        vec![
            "inst0 has 5 semaphore waits, at most 4 are allowed".to_string(),
            "inst0 signals semaphore s64, but the machine has s0 .. s63".to_string(),
        ]
    );
    let five = with("    inst0 = vector: wait(s1>=1, s2>=1, s3>=1, s4>=1, s5>=1) memset out=sbuf.f32[0:128, 0; 8:1], value=0.0 {b1}\n");
    let err = tile::parse(&five)
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(err.contains("waits on at most 4 semaphores"), "{err}");
}

/// A synchronised, allocated exp kernel: the DMA load, the activation and the store.
const SYNCED: &str = "tile kernel k synced {
    b0 = hbm input x f32[128, 64] @ 0
    b1 = hbm output y f32[128, 64] @ 32768
    b2 = sbuf f32 128x256 @ p0+0
    b3 = sbuf f32 128x256 @ p0+256
    inst0 = dma0: dma dst=sbuf.f32[0:128, 0; 64:1], src=hbm.f32[0; 128:64, 64:1] signal(s4) {b2, b0}
    inst1 = scalar: wait(s4>=1) activate out=sbuf.f32[0:128, 0; 64:1], src=sbuf.f32[0:128, 0; 64:1], func=exp, scale=1.0, bias=0.0, accum=none signal(s2) {b3, b2}
    inst2 = dma1: wait(s2>=1) dma dst=hbm.f32[0; 128:64, 64:1], src=sbuf.f32[0:128, 0; 64:1] signal(s5) {b1, b3}
}
";

#[test]
fn a_synced_function_without_a_needed_wait_is_a_race() {
    assert_eq!(errors(SYNCED), Vec::<String>::new());
    assert_error(
        &SYNCED.replace("wait(s4>=1) ", ""),
        "inst1 on scalar may run before inst0 on dma0 has finished, but they access the same memory (a race: inst1 must wait for it)",
    );
    assert_error(
        &SYNCED.replace("wait(s2>=1) ", ""),
        "inst2 on dma1 may run before inst1 on scalar has finished, but they access the same memory (a race: inst2 must wait for it)",
    );
    assert_eq!(
        errors(&SYNCED.replace("wait(s2>=1)", "wait(s2>=2)")),
        [
            "inst2 waits for s2 >= 2, but only 1 instructions signal it",
            "inst2 on dma1 may run before inst1 on scalar has finished, but they access the same memory (a race: inst2 must wait for it)",
        ]
    );
    assert_eq!(
        errors(&SYNCED.replace("wait(s2>=1)", "wait(s9>=1)"))[0],
        "inst2 waits for s9, which no instruction signals",
    );
    // Waiting transitively is enough: the store waits for the activation, which waited for
    // the load, so a store that also read the loaded buffer would need nothing more.
    let transitive = SYNCED.replace("{b1, b3}", "{b1, b2}");
    assert_eq!(errors(&transitive), Vec::<String>::new());
}

#[test]
fn an_unsynchronised_copy_of_a_compiled_program_is_caught() {
    // Every wait the sync pass placed is needed: dropping any one is reported as a race.
    for name in ["exp_rows_shared.tir", "matmul256.tir"] {
        let c = common::compile(common::parse_file(name), true);
        let f = c.tile.expect("tile");
        let mut count = 0;
        for &i in &f.layout {
            for k in 0..f.sync[i].waits.len() {
                let mut g = f.clone();
                g.sync[i].waits.remove(k);
                let errs = tile::verify(&g).expect_err("a race");
                assert!(errs.iter().all(|e| e.contains("race")), "{errs:?}");
                count += 1;
            }
        }
        assert!(count > 0, "{name}");
    }
}

/// A fused group emitted before the group that computes its operand reads HBM scratch (or
/// an output) before anything writes it: the verifier rejects it in program order, since
/// synchronisation would otherwise order the read before the write faithfully.
#[test]
fn hbm_scratch_is_written_before_it_is_read() {
    let head = "tile kernel k {
    b0 = hbm input x f32[128, 64]
    b1 = sbuf f32 128x256
    b2 = hbm scratch t f32[128, 64]
";
    let load = "dma dst=sbuf.f32[0:128, 0; 64:1], src=hbm.f32[0; 128:64, 64:1]";
    let store = "dma dst=hbm.f32[0; 128:64, 64:1], src=sbuf.f32[0:128, 0; 64:1]";
    let read_first = format!(
        "{head}    inst0 = dma0: {load} {{b1, b2}}\n    inst1 = dma0: {store} {{b2, b1}}\n}}\n"
    );
    assert_error(
        &read_first,
        "inst0 reads HBM scratch `t` (b2) before any instruction writes it",
    );
    let write_first = format!(
        "{head}    inst0 = dma0: {load} {{b1, b0}}\n    inst1 = dma0: {store} {{b2, b1}}\n    inst2 = dma0: {load} {{b1, b2}}\n}}\n"
    );
    assert_eq!(errors(&write_first), Vec::<String>::new());
}
