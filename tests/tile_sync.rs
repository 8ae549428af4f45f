//! The sync pass against a brute-force oracle: for every pair of instructions on different
//! engines that touch a common byte (one of them writing), the later one must be ordered
//! after the earlier by the semaphores (checked with vector clocks computed here, not by
//! the verifier); and every wait must name an instruction that really conflicts with the
//! waiting one (or with the instruction its `nop` carries waits for), so no wait is spare.

#[path = "tile/common.rs"]
mod common;

use isa::{Op, NUM_STREAMS};
use tessera::tile::{Hazards, TInst, TileFunc, Touch};

fn overlap(a: &Touch, b: &Touch) -> bool {
    a.space == b.space
        && a.groups & b.groups != 0
        && a.lo < b.hi
        && b.lo < a.hi
        && (a.write || b.write)
}

fn conflict(a: &[Touch], b: &[Touch]) -> bool {
    a.iter().any(|x| b.iter().any(|y| overlap(x, y)))
}

/// Checks a synchronised, allocated function against the oracle.
fn check(f: &TileFunc, what: &str) {
    let hazards = Hazards::new(f);
    let n = f.layout.len();
    let mut touches: Vec<Vec<Touch>> = Vec::with_capacity(n);
    for &i in &f.layout {
        let mut t = Vec::new();
        hazards.touches(f, i, &mut t).expect("touches");
        touches.push(t);
    }
    // Stream and position of each layout entry; the instruction at each stream position.
    let mut at: Vec<Vec<usize>> = vec![Vec::new(); NUM_STREAMS];
    let mut where_: Vec<(usize, usize)> = Vec::with_capacity(n);
    for (k, &i) in f.layout.iter().enumerate() {
        let s = f.insts[i].engine.index();
        where_.push((s, at[s].len()));
        at[s].push(k);
    }
    // Vector clocks: what each instruction knows complete when it starts.
    let mut clock: Vec<[u32; NUM_STREAMS]> = vec![[0; NUM_STREAMS]; n];
    let mut last: Vec<[u32; NUM_STREAMS]> = vec![[0; NUM_STREAMS]; NUM_STREAMS];
    for (k, &i) in f.layout.iter().enumerate() {
        let (s, _) = where_[k];
        let mut c = last[s];
        for &(sem, v) in &f.sync[i].waits {
            let t = sem as usize;
            let j = at[t][v as usize - 1];
            assert!(j < k, "{what}: {i} waits for a later instruction");
            for (x, y) in c.iter_mut().zip(clock[j]) {
                *x = (*x).max(y);
            }
            c[t] = c[t].max(v);
        }
        clock[k] = c;
        last[s] = c;
    }
    let mut pairs = 0;
    for k in 0..n {
        let (s, _) = where_[k];
        for j in 0..k {
            let (t, p) = where_[j];
            if t != s && conflict(&touches[j], &touches[k]) {
                pairs += 1;
                assert!(
                    clock[k][t] > p as u32,
                    "{what}: {} and {} conflict but are not ordered",
                    f.layout[j],
                    f.layout[k]
                );
            }
        }
    }
    // No spare waits: each names a conflicting instruction of the waiting one (for a
    // `nop`, of the next non-`nop` instruction of its stream).
    for (k, &i) in f.layout.iter().enumerate() {
        let (s, p) = where_[k];
        let target: TInst = at[s][p..]
            .iter()
            .map(|&x| f.layout[x])
            .find(|&x| f.insts[x].op != Op::Nop {})
            .expect("a waiting nop is followed by its instruction");
        let tk = f
            .layout
            .iter()
            .position(|&x| x == target)
            .expect("in layout");
        for &(sem, v) in &f.sync[i].waits {
            let j = at[sem as usize][v as usize - 1];
            assert!(
                conflict(&touches[j], &touches[tk]),
                "{what}: {i} waits for {}, which does not conflict with {target}",
                f.layout[j]
            );
        }
    }
    assert!(pairs > 0 || n < 2, "{what}: nothing conflicts");
    // A Tensor instruction's stationary load may begin at the previous matmul's or
    // transpose's start once its own waits hold: the writers of its stationary operand
    // must be known complete by then, from its own waits or from what the stream knew
    // when the previous one started, not from a `nop` in between.
    let mut prev_load: [u32; NUM_STREAMS] = [0; NUM_STREAMS];
    for (k, &i) in f.layout.iter().enumerate() {
        let mut stationary = Vec::new();
        hazards
            .stationary_touches(f, i, &mut stationary)
            .expect("stationary touches");
        if stationary.is_empty() {
            continue;
        }
        let mut own = prev_load;
        for &(sem, v) in &f.sync[i].waits {
            let t = sem as usize;
            for (x, y) in own.iter_mut().zip(clock[at[t][v as usize - 1]]) {
                *x = (*x).max(y);
            }
            own[t] = own[t].max(v);
        }
        let (s, _) = where_[k];
        for j in 0..k {
            let (t, p) = where_[j];
            if t != s && conflict(&touches[j], &stationary) {
                assert!(
                    own[t] > p as u32,
                    "{what}: {i}'s stationary operand may load before {} wrote it",
                    f.layout[j]
                );
            }
        }
        prev_load = clock[k];
    }
}

#[test]
fn sync_orders_every_conflict_and_adds_no_spare_wait() {
    for name in [
        "exp_rows.tir",
        "exp_rows_shared.tir",
        "matmul256.tir",
        "spill_sum.tir",
    ] {
        for balance in [false, true] {
            let c = common::compile(common::parse_file(name), balance);
            check(c.tile.as_ref().expect("tile"), name);
        }
    }
}

#[test]
fn a_synthetic_matmul_is_synchronised_exactly() {
    // The structure of the large compile-speed test, small enough for the O(n^2) oracle.
    for (m, n, k) in [(512, 1024, 1024), (256, 512, 2048)] {
        let c = common::compile(common::synthetic(m, n, k), true);
        check(c.tile.as_ref().expect("tile"), "synthetic");
    }
}

#[test]
fn many_waits_are_carried_by_nops() {
    // Sixteen DMA loads on sixteen queues, then one vector instruction that reads all of
    // them: sixteen waits, twelve of which go on three `nop`s.
    let mut text = String::from(
        "tile kernel k {\n    b0 = hbm input x f32[128, 16]\n    b1 = sbuf f32 128x64\n",
    );
    text.push_str(&column_loads(16, "f32", 1, 16));
    text.push_str("    inst16 = vector: tensor_reduce op=add, out=sbuf.f32[0:128, 0; 1:1], src=sbuf.f32[0:128, 0; 16:1] {b1, b1}\n}\n");
    let c = compile_and_run(&text, "fan-in", 128 * 16);
    let f = c.tile.as_ref().expect("tile");
    assert_eq!(nops(f), 3);
    assert!(f.layout.iter().all(|&i| f.sync[i].waits.len() <= 4));
}

/// Compiles tile IR text without the engines pass, checks it against the oracle, and
/// runs it (poisoned memories) with an input `x` of `elems` values.
fn compile_and_run(text: &str, what: &str, elems: usize) -> tessera::passes::Compilation {
    let f = tessera::tile::parse(text).expect("parse");
    let c = common::compile(f, false);
    check(c.tile.as_ref().expect("tile"), what);
    let x: Vec<f32> = (0..elems).map(common::value).collect();
    let p = c.program.as_ref().expect("program");
    assert_eq!(isa::verify(p), Ok(()));
    let cfg = runtime::MachineConfig {
        poison: true,
        ..Default::default()
    };
    runtime::run_program(p, &cfg, &[("x", &x)]).expect("run");
    c
}

/// Tile IR lines `inst0..` loading `queues` column slices of `cols` columns each of the
/// `[128, row]` input `b0` into the SBUF buffer `b1`, one slice a DMA queue.
fn column_loads(queues: usize, dtype: &str, cols: usize, row: usize) -> String {
    let esize = if dtype == "f32" { 4 } else { 2 };
    (0..queues)
        .map(|q| {
            let at = cols * esize * q;
            format!(
                "    inst{q} = dma{q}: dma dst=sbuf.{dtype}[0:128, {at}; {cols}:1], \
                 src=hbm.{dtype}[{at}; 128:{row}, {cols}:1] {{b1, b0}}\n"
            )
        })
        .collect()
}

/// The `nop`s in a function's layout.
fn nops(f: &TileFunc) -> usize {
    f.layout
        .iter()
        .filter(|&&i| f.insts[i].op == Op::Nop {})
        .count()
}

#[test]
fn a_stationary_operand_waits_on_its_matmul_not_on_a_nop() {
    // The moving operand comes from five DMA queues and the stationary one from Vector:
    // six waits, two of which go on a `nop`. The Vector wait stays on the matmul, where
    // the timing model's stationary load sees it; in stream order it would have been the
    // first to move to the `nop`, and the load could begin before its data was written.
    let mut text = String::from(
        "tile kernel k {\n    b0 = hbm input x bf16[128, 80]\n    b1 = sbuf bf16 128x160\n    b2 = sbuf bf16 128x128\n    b3 = psum f32 64x320\n    b4 = sbuf f32 64x320\n    b5 = hbm output out0 f32[64, 80]\n",
    );
    text.push_str(&column_loads(5, "bf16", 16, 80));
    text.push_str("    inst5 = vector: memset out=sbuf.bf16[0:128, 0; 64:1], value=0.5 {b2}\n");
    text.push_str("    inst6 = tensor: matmul out=psum.f32[0:64, 0; 80:1], stationary=sbuf.bf16[0:128, 0; 64:1], moving=sbuf.bf16[0:128, 0; 80:1], accumulate=false {b3, b2, b1}\n");
    text.push_str("    inst7 = vector: tensor_copy out=sbuf.f32[0:64, 0; 80:1], src=psum.f32[0:64, 0; 80:1] {b4, b3}\n");
    text.push_str("    inst8 = dma5: dma dst=hbm.f32[0; 64:80, 80:1], src=sbuf.f32[0:64, 0; 80:1] {b5, b4}\n}\n");
    let c = compile_and_run(&text, "stationary from vector", 128 * 80);
    let f = c.tile.as_ref().expect("tile");
    let mm = f
        .layout
        .iter()
        .copied()
        .find(|&i| matches!(f.insts[i].op, Op::Matmul { .. }))
        .expect("the matmul");
    let vector = isa::Engine::Vector.index() as u8;
    assert!(
        f.sync[mm].waits.iter().any(|&(sem, _)| sem == vector),
        "the matmul's own waits: {:?}",
        f.sync[mm].waits
    );
    assert_eq!(nops(f), 1);
}
