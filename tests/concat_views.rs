//! Concats read in place (`compiler/passes/tiling/concat_view.rs`): a concat along a
//! non-last axis that feeds a matmul, attention's K and V, or a reduction is never copied
//! into a home of its own. Each kernel is compared with the same kernel given the
//! concatenated tensor whole: the HBM bytes read are the same (the parts are read where
//! they lie, once each), nothing is written but the results (where a 32-row DMA piece
//! crosses a boundary at a partition no tile may start at, overlaid DMAs read it from the
//! parts when the later parts hold a few rows of it, or else a seam of at most the
//! positions it spans), and the results match the reference under both policies.

mod common;

use common::{both_policies, compile_verified, run_seed1};
use tessera::passes::PassOptions;

/// HBM bytes read and written by `text` on seed-1 inputs; asserts every output matches
/// the reference (bit for bit under strict).
fn traffic(text: &str, options: &PassOptions) -> (u64, u64) {
    let c = compile_verified(text, options.clone());
    let (report, cmp) = run_seed1(&c);
    for (i, x) in cmp.iter().enumerate() {
        assert_eq!(x.bad, 0, "output {i} differs from the reference:\n{text}");
        if options.strict_dtypes {
            assert_eq!(
                x.max_abs, 0.0,
                "output {i} is not bit-exact under strict:\n{text}"
            );
        }
    }
    (report.hbm_read_bytes, report.hbm_write_bytes)
}

/// A matmul whose left operand is the concat of two row blocks, against the same matmul
/// of the whole matrix.
fn matmul(rows: (u64, u64)) -> (String, String) {
    let (a, b) = rows;
    let m = a + b;
    (
        format!(
            "kernel k(x: bf16[{a}, 256], y: bf16[{b}, 256], w: bf16[256, 192]) -> f32[{m}, 192] {{\n\
             \x20   return concat([x, y], axis=0) @ w;\n}}\n"
        ),
        format!(
            "kernel k(xy: bf16[{m}, 256], w: bf16[256, 192]) -> f32[{m}, 192] {{\n\
             \x20   return xy @ w;\n}}\n"
        ),
    )
}

/// Single-query-tile attention over a key cache of `t - 1` positions and this step's key
/// and value appended, against the same attention over the whole cache.
fn attention(t: u64) -> (String, String) {
    let c = t - 1;
    let body = |k: &str, v: &str| {
        format!(
            "    let s = (q @ transpose({k})) * 0.125;\n\
             \x20   let e = exp(s - max(s, axis=-1, keepdims=true));\n\
             \x20   return ((e / sum(e, axis=-1, keepdims=true)) as bf16 @ {v}) as bf16;\n}}\n"
        )
    };
    (
        format!(
            "kernel k(q: bf16[4, 64], kc: bf16[{c}, 64], kn: bf16[1, 64], vc: bf16[{c}, 64], vn: bf16[1, 64]) -> bf16[4, 64] {{\n{}",
            body("concat([kc, kn], axis=0)", "concat([vc, vn], axis=0)")
        ),
        format!(
            "kernel k(q: bf16[4, 64], kw: bf16[{t}, 64], vw: bf16[{t}, 64]) -> bf16[4, 64] {{\n{}",
            body("kw", "vw")
        ),
    )
}

#[test]
fn a_matmul_reads_its_concat_operand_where_it_lies() {
    // Boundaries at a partition where a tile may start (96 rows, then 32), and where the
    // rows of one DMA piece are split between the parts (100 rows, then 60).
    for rows in [(96, 32), (100, 60), (200, 56)] {
        let (cat, whole) = matmul(rows);
        for options in both_policies() {
            let (r, w) = traffic(&cat, &options);
            let (r0, w0) = traffic(&whole, &options);
            let out = (rows.0 + rows.1) * 192 * 4;
            assert_eq!(w0, out);
            // At most a seam of 32 rows of 256 bf16 is copied, never the concat.
            let seam = 32 * 256 * 2;
            assert!(w <= out + seam, "{rows:?}: wrote {w} B, output {out} B");
            assert!(r <= r0 + seam, "{rows:?}: read {r} B, whole {r0} B");
            if rows.0 % 32 == 0 {
                assert_eq!(
                    (r, w),
                    (r0, w0),
                    "{rows:?}: a split at a quadrant copies nothing"
                );
            }
        }
    }
}

#[test]
fn attention_reads_a_kv_cache_concat_in_place() {
    for t in [225u64, 256, 300] {
        let (cat, whole) = attention(t);
        for options in both_policies() {
            let (r, w) = traffic(&cat, &options);
            let (r0, w0) = traffic(&whole, &options);
            // The output only: the appended position is one row, so a 32-row piece that
            // crosses the boundary at a partition no tile may start at is read by
            // overlaid DMAs from the parts (the new row broadcast over the piece's
            // partitions, then the cached rows over it), never through a seam. Those read
            // at most 32 rows more of K and of V per crossing piece.
            assert_eq!(w, w0, "T={t}: wrote {w} B, whole {w0} B");
            let overlay = 2 * 32 * 64 * 2;
            assert!(r <= r0 + overlay, "T={t}: read {r} B, whole {r0} B");
            if (t - 1) % 32 == 0 {
                assert_eq!((r, w), (r0, w0), "T={t}");
            }
        }
    }
}

#[test]
fn an_append_of_many_positions_still_reads_a_seam() {
    // Eight appended positions crossing a 32-row piece at its partition 25: more later rows
    // than overlaid DMAs are used for, so the piece reads a seam, and the results are right.
    let (cat, whole) = attention(250);
    let cat = cat
        .replace("kn: bf16[1, 64]", "kn: bf16[8, 64]")
        .replace("vn: bf16[1, 64]", "vn: bf16[8, 64]")
        .replace("kc: bf16[249, 64]", "kc: bf16[242, 64]")
        .replace("vc: bf16[249, 64]", "vc: bf16[242, 64]");
    for options in both_policies() {
        let (r, w) = traffic(&cat, &options);
        let (r0, w0) = traffic(&whole, &options);
        let seam = 2 * 32 * 64 * 2;
        assert!(w > w0 && w <= w0 + seam, "wrote {w} B, whole {w0} B");
        assert!(r <= r0 + 2 * seam, "read {r} B, whole {r0} B");
    }
}

#[test]
fn reductions_and_copies_read_concat_parts() {
    // Row sums of a concat along the rows, a column sum, and a transposed copy.
    let text = "kernel k(x: f32[96, 80], y: f32[64, 80]) -> (f32[160], f32[80], f32[80, 160]) {\n\
                \x20   let c = concat([x, y], axis=0);\n\
                \x20   return (sum(c, axis=-1), sum(c, axis=0), transpose(c));\n}\n";
    let whole = "kernel k(c: f32[160, 80]) -> (f32[160], f32[80], f32[80, 160]) {\n\
                 \x20   return (sum(c, axis=-1), sum(c, axis=0), transpose(c));\n}\n";
    for options in both_policies() {
        let (r, w) = traffic(text, &options);
        let (r0, w0) = traffic(whole, &options);
        assert_eq!((r, w), (r0, w0));
    }
}

#[test]
fn a_concat_of_three_parts_along_a_middle_axis() {
    // Batched grouped-query attention over [B, T, H, D] caches, as the Llama decode step
    // writes it: the concat is transposed before attention reads it.
    let attend = |params: &str, k: &str, v: &str| {
        format!(
            "kernel k(q: bf16[2, 2, 4, 64], {params}) -> bf16[2, 2, 4, 64] {{\n\
             \x20   let keys = transpose({k}, perm=[0, 2, 1, 3]);\n\
             \x20   let values = transpose({v}, perm=[0, 2, 1, 3]);\n\
             \x20   let s = (q @ transpose(keys)) * 0.125;\n\
             \x20   let e = exp(s - max(s, axis=-1, keepdims=true));\n\
             \x20   return ((e / sum(e, axis=-1, keepdims=true)) as bf16 @ values) as bf16;\n}}\n"
        )
    };
    let cat = attend(
        "kc: bf16[2, 150, 2, 64], kn: bf16[2, 2, 2, 64], vc: bf16[2, 150, 2, 64], vm: bf16[2, 1, 2, 64], vn: bf16[2, 1, 2, 64]",
        "concat([kc, kn], axis=1)",
        "concat([vc, vm, vn], axis=1)",
    );
    let whole = attend(
        "kw: bf16[2, 152, 2, 64], vw: bf16[2, 152, 2, 64]",
        "kw",
        "vw",
    );
    for options in both_policies() {
        let (r, w) = traffic(&cat, &options);
        let (r0, w0) = traffic(&whole, &options);
        // The later parts hold two positions: overlaid DMAs, no seam (at most three
        // 32-row pieces per crossing piece, for both batches and heads of K and V).
        assert_eq!(w, w0, "wrote {w} B, whole {w0} B");
        let overlay = 2 * (2 * 2 * 3 * 32 * 64 * 2);
        assert!(r <= r0 + overlay, "read {r} B, whole {r0} B");
    }
}

#[test]
fn a_gathered_concat_reads_a_full_copy() {
    // An indirect gather cannot be split between parts: the concat is copied whole just
    // before it, and the rows gathered are right.
    let text = "kernel k(a: bf16[40, 64], b: bf16[24, 64], ids: i32[16]) -> bf16[16, 64] {\n\
                \x20   return take(concat([a, b], axis=0), ids, axis=0);\n}\n";
    for options in both_policies() {
        let c = compile_verified(text, options.clone());
        let program = tessera::driver::program_of(&c).unwrap();
        let params = tessera::driver::params_of(&c.tensor);
        // Indices 0..63 cover both parts.
        let inputs: Vec<_> = params
            .iter()
            .enumerate()
            .map(|(i, p)| {
                let mut t = tessera::driver::random_tensor(p, 1, i as u64);
                if p.dtype == isa::Dtype::I32 {
                    t.ints = (0..16).map(|j| (j * 4 + 3) % 64).collect();
                }
                t
            })
            .collect();
        let (outputs, _) = tessera::driver::execute(program, &params, &inputs).unwrap();
        let cmp = tessera::driver::check_outputs(&c, &inputs, &outputs).unwrap();
        assert!(
            cmp.iter().all(|x| x.bad == 0 && x.max_abs == 0.0),
            "{cmp:?}"
        );
    }
}
