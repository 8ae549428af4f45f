//! Column slices and last-axis concats inside row groups: RoPE's `rotate_half` as its
//! authors write it is one row group that reads `q` once, keeps its rotated half in SBUF,
//! and loads the `cos` and `sin` tables once for all heads, so the kernel moves exactly its
//! compulsory HBM bytes; and every such kernel matches the reference bit for bit under
//! both policies (slicing and concatenation are exact).

mod common;

use common::{both_policies as policies, compile_verified as compile, rope, run_case};
use tessera::driver;
use tessera::passes::fusion::Root;
use tessera::passes::PassOptions;

#[test]
fn rope_is_one_row_group() {
    let c = compile(&rope(4, 256, 64), PassOptions::default());
    let groups = c.groups.expect("fusion ran");
    assert!(groups.verify(&c.tensor).is_empty());
    assert_eq!(groups.groups.len(), 1, "{}", groups.describe());
    assert!(matches!(groups.groups[0].root, Root::Rows));
    assert_eq!(groups.groups[0].space, vec![4, 256, 64]);
}

#[test]
fn rope_moves_only_its_compulsory_bytes() {
    let (b, s, d) = (4u64, 256u64, 64u64);
    for options in policies() {
        let c = compile(&rope(b, s, d), options);
        let program = driver::program_of(&c).unwrap();
        let params = driver::params_of(&c.tensor);
        let inputs: Vec<_> = params
            .iter()
            .enumerate()
            .map(|(i, p)| driver::random_tensor(p, 1, i as u64))
            .collect();
        let (outputs, report) = driver::execute(program, &params, &inputs).unwrap();
        // q once, cos and sin once (not once per head), the result once; nothing through
        // scratch.
        assert_eq!(report.hbm_read_bytes, 2 * (b * s * d + 2 * s * d));
        assert_eq!(report.hbm_write_bytes, 2 * b * s * d);
        let cmp = driver::check_outputs(&c, &inputs, &outputs).unwrap();
        assert!(cmp.iter().all(|x| x.bad == 0 && x.max_abs == 0.0));
    }
}

#[test]
fn rope_of_a_computed_value_is_one_row_group() {
    // `q` is a matmul's result seen through a reshape (a group of its own, as in the Llama
    // decode step): `q * cos` joins the group of the rotated half, which reads the same `q`,
    // rather than going through HBM scratch. The same for another combination of a
    // computed value's full rows and its column views.
    let cases = [
        "kernel k(x: bf16[64, 256], w: bf16[256, 256], cos: bf16[1, 128], sin: bf16[1, 128]) -> bf16[2, 64, 128] {\n\
         \x20   let q = reshape(transpose(reshape((x @ w) as bf16, [64, 2, 128]), perm=[1, 0, 2]), [2, 64, 128]);\n\
         \x20   return q * cos + concat([-q[..., 64:], q[..., :64]], axis=-1) * sin;\n\
         }\n",
        "kernel k(x: f32[96, 64], w: f32[64, 64]) -> f32[96, 64] {\n\
         \x20   let h = reshape(x @ w, [96, 64]);\n\
         \x20   return exp(h) + concat([h[..., 32:], h[..., :32] * 2.0], axis=-1);\n\
         }\n",
    ];
    for text in cases {
        for options in policies() {
            let c = compile(text, options.clone());
            let groups = c.groups.as_ref().expect("fusion ran");
            let rows = groups
                .groups
                .iter()
                .filter(|g| matches!(g.root, Root::Rows))
                .count();
            assert_eq!(rows, 1, "{text}\n{}", groups.describe());
            let outcome = run_case(text, &options, 3);
            assert!(outcome.is_match(), "{text}\n{}", outcome.describe());
        }
    }
}

#[test]
fn column_views_match_the_reference_bit_for_bit() {
    let cases = [
        rope(2, 128, 64),
        rope(3, 200, 128),
        // A slice of a value computed in the group, a concat of three parts of which one
        // is a kernel input's columns, and elementwise work on each.
        "kernel k(x: f32[130, 96], y: f32[130, 32]) -> f32[130, 96] {\n\
         \x20   let e = exp(x);\n\
         \x20   let c = concat([e[..., 64:] * 2.0, y, x[..., :32] + y], axis=-1);\n\
         \x20   return c - e;\n\
         }\n"
        .to_string(),
        // A slice used only by itself loads only its columns; a concat wider than the
        // values it is made of; a part used twice.
        "kernel k(x: bf16[64, 256], w: bf16[64, 64]) -> (bf16[64, 192], bf16[64, 64]) {\n\
         \x20   let a = x[..., 64:128] * w;\n\
         \x20   return (concat([a, x[..., :64], a], axis=-1), -a);\n\
         }\n"
        .to_string(),
        // A slice of a slice, and a concat that is a kernel result.
        "kernel k(x: f32[8, 16, 64]) -> f32[8, 16, 48] {\n\
         \x20   let s = x[..., 8:56];\n\
         \x20   return concat([s[..., 24:], -s[..., :24]], axis=-1);\n\
         }\n"
        .to_string(),
    ];
    for text in &cases {
        for options in policies() {
            let outcome = run_case(text, &options, 7);
            assert!(outcome.is_match(), "{text}\n{}", outcome.describe());
        }
    }
}
