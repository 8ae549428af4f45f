//! Few long rows split over partitions with a combining step (`tiling/split_rows.rs`): a
//! row group of fewer than 64 rows with reductions spreads each row over `P` partitions
//! and combines the per-partition partials across them on the PE array. These tests run
//! such kernels of many shapes (1 to 100 rows, row lengths that 128 / R does not divide,
//! prime lengths that cannot be split) and forms (a mean, a maximum and a minimum, sums,
//! several reductions in one group) under both dtype policies: every output within
//! docs/numerics.md's bound under the default policy and bit for bit the reference's
//! under strict, and the split taken exactly where it is allowed (sums only under the
//! default policy; maxima and minima under both).

mod common;

use common::{both_policies as policies, compile_verified as compile, run_seed1, seed1_inputs};
use tessera::passes::Compilation;

/// Runs `c` on seed-1 inputs and checks every output against the reference (exact under
/// strict); returns the HBM bytes read.
fn run(c: &Compilation, strict: bool, what: &str) -> u64 {
    let (report, cmp) = run_seed1(c);
    for (i, x) in cmp.iter().enumerate() {
        assert_eq!(
            x.bad, 0,
            "{what}: output {i} outside the bound: {:?}",
            x.first_bad
        );
        if strict {
            assert_eq!(x.max_abs, 0.0, "{what}: output {i} differs under strict");
        }
    }
    report.hbm_read_bytes
}

/// The most partitions any instruction's output uses, and whether the program combines
/// partials across partitions (a transpose on the PE array).
fn shape_of(c: &Compilation) -> (u32, bool) {
    let tile = c.tile.as_ref().expect("tiled");
    let mut most = 0;
    let mut transposes = false;
    for inst in tile.insts.values() {
        if let isa::Op::Transpose { .. } = inst.op {
            transposes = true;
        }
        if let isa::Op::TensorReduce { src, .. } | isa::Op::Activate { src, .. } = &inst.op {
            most = most.max(src.partitions as u32);
        }
    }
    (most, transposes)
}

fn rmsnorm(r: u64, d: u64) -> String {
    format!(
        "kernel k(x: bf16[{r}, {d}], w: bf16[{d}]) -> bf16[{r}, {d}] {{
    let xf = x as f32;
    return (xf * rsqrt(mean(xf * xf, axis=-1, keepdims=true) + 1e-5)) as bf16 * w;
}}
"
    )
}

fn softmax(r: u64, d: u64) -> String {
    format!(
        "kernel k(x: f32[{r}, {d}]) -> f32[{r}, {d}] {{
    let e = exp(x - max(x, axis=-1, keepdims=true));
    return e / sum(e, axis=-1, keepdims=true);
}}
"
    )
}

fn layernorm(r: u64, d: u64) -> String {
    format!(
        "kernel k(x: f32[{r}, {d}], g: f32[{d}], b: f32[{d}]) -> f32[{r}, {d}] {{
    let mu = mean(x, axis=-1, keepdims=true);
    let var = mean(square(x), axis=-1, keepdims=true) - mu * mu;
    return (x - mu) * rsqrt(var + 1e-5) * g + b;
}}
"
    )
}

fn range_scale(r: u64, d: u64) -> String {
    format!(
        "kernel k(x: f32[{r}, {d}]) -> f32[{r}, {d}] {{
    let hi = max(x, axis=-1, keepdims=true);
    let lo = min(x, axis=-1, keepdims=true);
    return (x - lo) / (hi - lo);
}}
"
    )
}

/// The partitions a split of `r` rows of `d` columns uses (`split_rows::plan`'s choice
/// for one block: the largest divisor of `d` up to `128 / r`, chunks of 32 columns at
/// least), or `r` when no split is possible.
fn split_parts(r: u64, d: u64) -> u64 {
    (2..=128 / r)
        .rev()
        .find(|&p| d.is_multiple_of(p) && d / p >= 32)
        .map_or(r, |p| r * p)
}

#[test]
fn few_rows_of_every_form_match_the_reference_under_both_policies() {
    let shapes: &[(u64, u64)] = &[
        (1, 4096),
        (3, 3000),
        (8, 4100),
        (31, 1000),
        (64, 2048),
        (100, 2000),
        (2, 10007),
    ];
    type Form = fn(u64, u64) -> String;
    let forms: &[(&str, Form, bool)] = &[
        ("rmsnorm", rmsnorm, true),
        ("softmax", softmax, true),
        ("layernorm", layernorm, true),
        ("range", range_scale, false),
    ];
    for &(r, d) in shapes {
        for &(name, form, sums) in forms {
            for options in policies() {
                let strict = options.strict_dtypes;
                let what = format!("{name} [{r}, {d}] strict={strict}");
                let c = compile(&form(r, d), options);
                run(&c, strict, &what);
                let (parts, transposes) = shape_of(&c);
                let split = r * 2 <= 128 && split_parts(r, d) > r && !(strict && sums);
                if split {
                    assert!(transposes, "{what}: not split");
                    assert_eq!(parts as u64, split_parts(r, d), "{what}");
                } else {
                    assert!(!transposes, "{what}: split where it must not be");
                    assert!(parts as u64 <= r.min(128), "{what}: {parts} partitions");
                }
            }
        }
    }
}

#[test]
fn a_long_softmax_reads_its_input_once_when_split() {
    // 4 x 128 KB rows: split over 32 partitions each, the input is kept in SBUF between
    // the phases (4 KB a partition), so it is read once; under strict the sums keep the
    // reference's order, unsplit, and the input is read once per phase.
    for options in policies() {
        let strict = options.strict_dtypes;
        let c = compile(&softmax(4, 32000), options);
        let read = run(&c, strict, "softmax [4, 32000]");
        let times = if strict { 3 } else { 1 };
        assert_eq!(read, times * 4 * 4 * 32000, "strict={strict}");
    }
}

#[test]
fn combining_keeps_infinities_and_nans_in_their_own_rows() {
    // A row holding an infinity or a NaN must not spill into its neighbours' sums (a
    // 0/1 matmul would make 0 * inf NaN there): the reference's rows are each checked.
    let text = "kernel k(x: f32[8, 4096], y: f32[8, 4096]) -> f32[8, 4096] {
    let z = x / y;
    return z - mean(z, axis=-1, keepdims=true);
}
";
    let c = compile(text, tessera::passes::PassOptions::default());
    let (_, transposes) = shape_of(&c);
    assert!(transposes, "not split");
    let program = tessera::driver::program_of(&c).unwrap();
    let params = tessera::driver::params_of(&c.tensor);
    let mut inputs = seed1_inputs(&c);
    // Row 2 divides by zero somewhere (an infinity), row 5 computes 0 / 0 (a NaN).
    set(&mut inputs[1], 2 * 4096 + 17, 0.0);
    set(&mut inputs[0], 5 * 4096 + 3000, 0.0);
    set(&mut inputs[1], 5 * 4096 + 3000, 0.0);
    let (outputs, _) = tessera::driver::execute(program, &params, &inputs).unwrap();
    let cmp = tessera::driver::check_outputs(&c, &inputs, &outputs).unwrap();
    assert_eq!(cmp[0].bad, 0, "{:?}", cmp[0].first_bad);
}

/// Sets element `i` of an f32 tensor.
fn set(t: &mut tessera::reference::HostTensor, i: usize, v: f32) {
    t.data[i] = v;
}
