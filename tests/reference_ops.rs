//! Hand-computed cases for each operation of the reference evaluator, written as tensor IR
//! text so they need nothing but the IR parser. The evaluator is the oracle of every
//! end-to-end test, so it is tested on its own first.

use isa::Dtype;
use tessera::ir;
use tessera::reference::{evaluate, HostTensor};

/// Parses one kernel, verifies it, runs it on `inputs` and returns its first result.
fn run(ir_text: &str, inputs: &[HostTensor]) -> HostTensor {
    let funcs = ir::parse(ir_text).expect("test IR parses");
    let f = &funcs[0];
    ir::verify(f, "test").expect("test IR verifies");
    // Printing and parsing back must give the same text.
    let printed = f.to_string();
    let again = ir::parse(&printed).expect("printed IR parses");
    assert_eq!(again[0].to_string(), printed);
    evaluate(f, inputs).expect("evaluation succeeds").remove(0)
}

fn t(dtype: Dtype, shape: &[u64], values: &[f32]) -> HostTensor {
    HostTensor::from_f32(dtype, shape, values)
}

#[test]
fn unary_functions_round_to_their_dtype() {
    let src = "kernel k(v0 x: f32[4] @0..0) -> (f32[4]) {
        v1 = exp v0 : f32[4] @0..0
        return v1
    }";
    let out = run(
        src,
        &[t(Dtype::F32, &[4], &[0.0, 1.0, -1.0, f32::NEG_INFINITY])],
    );
    assert_eq!(out.data, vec![1.0, std::f32::consts::E, 0.36787945, 0.0]);

    let src = "kernel k(v0 x: bf16[3] @0..0) -> (bf16[3]) {
        v1 = sqrt v0 : bf16[3] @0..0
        return v1
    }";
    let out = run(src, &[t(Dtype::Bf16, &[3], &[4.0, 2.0, -1.0])]);
    // sqrt(2) = 1.41421.. rounds to the bf16 1.4140625.
    assert_eq!(out.data[..2], [2.0, 1.4140625]);
    assert!(out.data[2].is_nan());
}

#[test]
fn negation_and_relu_keep_signs() {
    let src = "kernel k(v0 x: f32[3] @0..0) -> (f32[3]) {
        v1 = neg v0 : f32[3] @0..0
        v2 = relu v1 : f32[3] @0..0
        return v2
    }";
    let out = run(src, &[t(Dtype::F32, &[3], &[1.5, -2.0, 0.0])]);
    assert_eq!(out.data, vec![0.0, 2.0, 0.0]);
}

#[test]
fn binary_ops_broadcast_like_numpy() {
    let src = "kernel k(v0 x: f32[2, 3] @0..0, v1 y: f32[3] @0..0) -> (f32[2, 3]) {
        v2 = sub v0, v1 : f32[2, 3] @0..0
        return v2
    }";
    let x = t(Dtype::F32, &[2, 3], &[1.0, 2.0, 3.0, 4.0, 5.0, 6.0]);
    let y = t(Dtype::F32, &[3], &[1.0, 1.0, 10.0]);
    assert_eq!(run(src, &[x, y]).data, vec![0.0, 1.0, -7.0, 3.0, 4.0, -4.0]);

    let src = "kernel k(v0 x: f32[2, 1] @0..0, v1 y: f32[1, 3] @0..0) -> (f32[2, 3]) {
        v2 = mul v0, v1 : f32[2, 3] @0..0
        return v2
    }";
    let x = t(Dtype::F32, &[2, 1], &[2.0, 3.0]);
    let y = t(Dtype::F32, &[1, 3], &[1.0, 10.0, 100.0]);
    assert_eq!(
        run(src, &[x, y]).data,
        vec![2.0, 20.0, 200.0, 3.0, 30.0, 300.0]
    );
}

#[test]
fn mixed_dtypes_promote_to_f32_and_maximum_propagates_nan() {
    let src = "kernel k(v0 x: bf16[2] @0..0, v1 y: f16[2] @0..0) -> (f32[2]) {
        v2 = maximum v0, v1 : f32[2] @0..0
        return v2
    }";
    let x = t(Dtype::Bf16, &[2], &[1.0, f32::NAN]);
    let y = t(Dtype::F16, &[2], &[2.5, 0.0]);
    let out = run(src, &[x, y]);
    assert_eq!(out.data[0], 2.5);
    assert!(out.data[1].is_nan());
}

#[test]
fn same_dtype_results_round_to_that_dtype() {
    // 1 + 2^-8 is not a bf16: it rounds to even (1.0).
    let src = "kernel k(v0 x: bf16[1] @0..0, v1 y: bf16[1] @0..0) -> (bf16[1]) {
        v2 = add v0, v1 : bf16[1] @0..0
        return v2
    }";
    let x = t(Dtype::Bf16, &[1], &[1.0]);
    let y = t(Dtype::Bf16, &[1], &[1.0 / 256.0]);
    assert_eq!(run(src, &[x, y]).data, vec![1.0]);
}

#[test]
fn constants_are_rank_zero_and_broadcast() {
    let src = "kernel k(v0 x: f32[3] @0..0) -> (f32[3]) {
        v1 = const 0.5 : f32[] @0..0
        v2 = mul v0, v1 : f32[3] @0..0
        return v2
    }";
    let out = run(src, &[t(Dtype::F32, &[3], &[2.0, 4.0, -6.0])]);
    assert_eq!(out.data, vec![1.0, 2.0, -3.0]);
}

#[test]
fn matmul_accumulates_in_k_order_in_f32() {
    let src = "kernel k(v0 a: f32[2, 3] @0..0, v1 b: f32[3, 2] @0..0) -> (f32[2, 2]) {
        v2 = matmul v0, v1 : f32[2, 2] @0..0
        return v2
    }";
    let a = t(Dtype::F32, &[2, 3], &[1.0, 2.0, 3.0, 4.0, 5.0, 6.0]);
    let b = t(Dtype::F32, &[3, 2], &[7.0, 8.0, 9.0, 10.0, 11.0, 12.0]);
    assert_eq!(run(src, &[a, b]).data, vec![58.0, 64.0, 139.0, 154.0]);

    // The order is observable: (1e8 + 1) - 1e8 in f32 loses the 1, k-order gives 0.
    let src = "kernel k(v0 a: f32[1, 3] @0..0, v1 b: f32[3, 1] @0..0) -> (f32[1, 1]) {
        v2 = matmul v0, v1 : f32[1, 1] @0..0
        return v2
    }";
    let a = t(Dtype::F32, &[1, 3], &[1e8, 1.0, -1e8]);
    let b = t(Dtype::F32, &[3, 1], &[1.0, 1.0, 1.0]);
    assert_eq!(run(src, &[a, b]).data, vec![0.0]);
}

#[test]
fn batched_matmul_broadcasts_batch_axes() {
    let src = "kernel k(v0 a: bf16[2, 1, 2] @0..0, v1 b: bf16[2, 1] @0..0) -> (f32[2, 1, 1]) {
        v2 = matmul v0, v1 : f32[2, 1, 1] @0..0
        return v2
    }";
    let a = t(Dtype::Bf16, &[2, 1, 2], &[1.0, 2.0, 3.0, 4.0]);
    let b = t(Dtype::Bf16, &[2, 1], &[10.0, 1.0]);
    assert_eq!(run(src, &[a, b]).data, vec![12.0, 34.0]);
}

#[test]
fn reductions_along_any_axis() {
    let x = || t(Dtype::F32, &[2, 3], &[1.0, 5.0, 3.0, -4.0, 2.0, 8.0]);
    let case = |op: &str, axis: usize, shape: &str| {
        format!(
            "kernel k(v0 x: f32[2, 3] @0..0) -> (f32[{shape}]) {{
                v1 = {op} v0 axis={axis} keepdims=false : f32[{shape}] @0..0
                return v1
            }}"
        )
    };
    assert_eq!(
        run(&case("sum", 0, "3"), &[x()]).data,
        vec![-3.0, 7.0, 11.0]
    );
    assert_eq!(run(&case("sum", 1, "2"), &[x()]).data, vec![9.0, 6.0]);
    assert_eq!(run(&case("mean", 1, "2"), &[x()]).data, vec![3.0, 2.0]);
    assert_eq!(run(&case("max", 0, "3"), &[x()]).data, vec![1.0, 5.0, 8.0]);
    assert_eq!(run(&case("min", 1, "2"), &[x()]).data, vec![1.0, -4.0]);
}

#[test]
fn bf16_sum_accumulates_in_f32_and_rounds_once() {
    // 259 ones: summed in bf16 steps the sum would stick at 256 (256 + 1 rounds back to
    // 256); in f32 it is 259, which rounds once to the bf16 260 (a tie, to even).
    let src = "kernel k(v0 x: bf16[259] @0..0) -> (bf16[1]) {
        v1 = sum v0 axis=0 keepdims=true : bf16[1] @0..0
        return v1
    }";
    let out = run(src, &[t(Dtype::Bf16, &[259], &[1.0; 259])]);
    assert_eq!(out.data, vec![260.0]);
}

#[test]
fn transpose_reshape_tril_cast() {
    let x = || t(Dtype::F32, &[2, 3], &[1.0, 2.0, 3.0, 4.0, 5.0, 6.0]);
    let src = "kernel k(v0 x: f32[2, 3] @0..0) -> (f32[3, 2]) {
        v1 = transpose v0 perm=[1, 0] : f32[3, 2] @0..0
        return v1
    }";
    assert_eq!(run(src, &[x()]).data, vec![1.0, 4.0, 2.0, 5.0, 3.0, 6.0]);

    let src = "kernel k(v0 x: f32[2, 3] @0..0) -> (f32[3, 2]) {
        v1 = reshape v0 : f32[3, 2] @0..0
        return v1
    }";
    assert_eq!(run(src, &[x()]).data, vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0]);

    let src = "kernel k(v0 x: f32[2, 3] @0..0) -> (f32[2, 3]) {
        v1 = tril v0 k=0 fill=-inf : f32[2, 3] @0..0
        return v1
    }";
    let ninf = f32::NEG_INFINITY;
    assert_eq!(run(src, &[x()]).data, vec![1.0, ninf, ninf, 4.0, 5.0, ninf]);

    let src = "kernel k(v0 x: f32[3] @0..0) -> (f8e4m3[3]) {
        v1 = cast v0 : f8e4m3[3] @0..0
        return v1
    }";
    let out = run(src, &[t(Dtype::F32, &[3], &[1000.0, -1e9, 0.3])]);
    // FP8 E4M3 saturates at 448; 0.3 rounds to 0.3125 (1.25 * 2^-2).
    assert_eq!(out.data, vec![448.0, -448.0, 0.3125]);
}

#[test]
fn three_axis_transpose() {
    let src = "kernel k(v0 x: f32[2, 2, 2] @0..0) -> (f32[2, 2, 2]) {
        v1 = transpose v0 perm=[2, 0, 1] : f32[2, 2, 2] @0..0
        return v1
    }";
    let x = t(
        Dtype::F32,
        &[2, 2, 2],
        &[0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0],
    );
    // out[a, b, c] = x[b, c, a].
    assert_eq!(
        run(src, &[x]).data,
        vec![0.0, 2.0, 4.0, 6.0, 1.0, 3.0, 5.0, 7.0]
    );
}

#[test]
fn verifier_rejects_bad_ir_as_internal_error() {
    let src = "kernel k(v0 x: f32[2, 3] @0..0) -> (f32[2, 3]) {
        v1 = exp v0 : f32[3, 2] @0..0
        return v0
    }";
    let f = &ir::parse(src).unwrap()[0];
    let e = ir::verify(f, "lower").unwrap_err();
    let text = e.to_string();
    assert!(text.contains("internal compiler error"), "{text}");
    assert!(text.contains("after pass `lower`"), "{text}");
    assert!(
        text.contains("inst0: result should be f32[2, 3], is f32[3, 2]"),
        "{text}"
    );
    assert!(text.contains("v1 = exp v0"), "{text}");
}

#[test]
fn ir_parser_reports_undefined_values() {
    let src = "kernel k(v0 x: f32[2] @0..0) -> (f32[2]) {
        v1 = exp v7 : f32[2] @0..0
        return v1
    }";
    let e = ir::parse(src).unwrap_err();
    assert_eq!(e.line, 2);
    assert!(e.message.contains("undefined value `v7`"));
}

/// IR text may give any dims; the verifier reports a value past the language's 2^48
/// elements as an error (the passes after it multiply dims freely) instead of panicking
/// on the overflow.
#[test]
fn the_verifier_reports_dims_past_the_limit() {
    let text = "kernel k(v0 x: f32[4, 9223372036854775807] @0..0) -> (f32[4]) {\n    \
                v1 = reshape v0 : f32[4] @0..0\n    return v1\n}\n";
    let funcs = ir::parse(text).expect("the text parses");
    let e = ir::verify(&funcs[0], "test").expect_err("too large");
    let text = e.to_string();
    assert!(text.contains("more than 2^48"), "{text}");
}

/// `tril` with a diagonal offset near i64::MAX keeps every element (i + k saturates
/// instead of overflowing), in the reference and in compiled code.
#[test]
fn tril_with_the_largest_offsets() {
    let x = t(
        Dtype::F32,
        &[4, 8],
        &(0..32).map(|i| i as f32).collect::<Vec<_>>(),
    );
    let ir = |k: i64| {
        format!(
            "kernel k(v0 x: f32[4, 8] @0..0) -> (f32[4, 8]) {{\n    \
             v1 = tril v0 k={k} fill=-1 : f32[4, 8] @0..0\n    return v1\n}}\n"
        )
    };
    assert_eq!(run(&ir(i64::MAX), std::slice::from_ref(&x)).data, x.data);
    let none = run(&ir(i64::MIN + 1), std::slice::from_ref(&x));
    assert!(none.data.iter().all(|&v| v == -1.0), "{:?}", none.data);
    let src = "kernel k(x: f32[4, 8]) -> f32[4, 8] { return tril(x, k=9223372036854775807); }";
    let src = tessera::driver::Source {
        name: "k.tsr".into(),
        text: src.into(),
    };
    let options = tessera::driver::CompileOptions {
        verify_ir: true,
        ..Default::default()
    };
    let c = tessera::driver::compile(&src, &options, &mut String::new()).expect("compiles");
    let program = c.program.as_ref().expect("a program");
    let params = tessera::driver::params_of(&c.tensor);
    let (outputs, _) =
        tessera::driver::execute(program, &params, std::slice::from_ref(&x)).expect("runs");
    assert_eq!(outputs[0].data, x.data);
    // i64::MIN is a value too (its magnitude is no i64): every element is filled.
    let src = "kernel k(x: f32[4, 8]) -> f32[4, 8] { return tril(x, k=-9223372036854775808, fill=-1.0); }";
    let src = tessera::driver::Source {
        name: "k.tsr".into(),
        text: src.into(),
    };
    let c = tessera::driver::compile(&src, &options, &mut String::new()).expect("compiles");
    let program = c.program.as_ref().expect("a program");
    let params = tessera::driver::params_of(&c.tensor);
    let (outputs, _) =
        tessera::driver::execute(program, &params, std::slice::from_ref(&x)).expect("runs");
    assert!(
        outputs[0].data.iter().all(|&v| v == -1.0),
        "{:?}",
        outputs[0].data
    );
    let min = run(&ir(i64::MIN), std::slice::from_ref(&x));
    assert!(min.data.iter().all(|&v| v == -1.0), "{:?}", min.data);
}

/// `i32` arithmetic is exact and wraps: 16777217 is no f32, and `i32::MAX + 1` wraps to
/// `i32::MIN`; conversions to float round once, to `i32` go toward zero and saturate.
#[test]
fn integers_are_exact_and_wrap() {
    let src = "kernel k(v0 i: i32[3] @0..0) -> (i32[3], f32[3], bool[3], i32[3]) {
        v1 = const 1.0 : i32[] @0..0
        v2 = add v0, v1 : i32[3] @0..0
        v3 = cast v2 : f32[3] @0..0
        v4 = const 16777218.0 : i32[] @0..0
        v5 = lt v2, v4 : bool[3] @0..0
        v6 = cast v3 : i32[3] @0..0
        return v2, v3, v5, v6
    }";
    let f = &ir::parse(src).expect("parses")[0];
    ir::verify(f, "test").expect("verifies");
    let input = HostTensor::from_i32(&[3], vec![16777216, i32::MAX, -7]);
    let out = evaluate(f, &[input]).expect("evaluates");
    assert_eq!(out[0].ints, vec![16777217, i32::MIN, -6]);
    assert!(out[0].data.is_empty());
    // 16777217 rounds to the even f32 16777216.
    assert_eq!(out[1].data, vec![16777216.0, -2147483648.0, -6.0]);
    assert_eq!(out[2].data, vec![1.0, 1.0, 1.0]);
    assert_eq!(out[3].ints, vec![16777216, i32::MIN, -6]);
}

/// Slices, pads, joins and broadcasts of `i32` tensors move the integers themselves, bit for
/// bit (they once moved the empty f32 vector, and `--check` compared nothing).
#[test]
fn integer_moves_keep_every_bit() {
    let src = "kernel k(v0 x: i32[2, 3] @0..0, v1 y: i32[2, 1] @0..0) -> (i32[3, 5], i32[2, 2], i32[2, 4], i32[2, 2, 3]) {
        v2 = pad v0 before=[1, 1] after=[0, 1] value=-2147483648.0 : i32[3, 5] @0..0
        v3 = slice v0 start=[0, 2] step=[1, -2] keep=[true, true] : i32[2, 2] @0..0
        v4 = concat v0, v1 axis=1 : i32[2, 4] @0..0
        v5 = broadcast_to v0 : i32[2, 2, 3] @0..0
        return v2, v3, v4, v5
    }";
    let f = &ir::parse(src).expect("parses")[0];
    ir::verify(f, "test").expect("verifies");
    let big = 16_777_217;
    let x = HostTensor::from_i32(&[2, 3], vec![big, -1, i32::MAX, 4, i32::MIN, 6]);
    let y = HostTensor::from_i32(&[2, 1], vec![-9, 2_000_000_001]);
    let out = evaluate(f, &[x, y]).expect("evaluates");
    let m = i32::MIN;
    assert_eq!(
        out[0].ints,
        vec![m, m, m, m, m, m, big, -1, i32::MAX, m, m, 4, m, 6, m]
    );
    assert_eq!(out[1].ints, vec![i32::MAX, big, 6, 4]);
    assert_eq!(
        out[2].ints,
        vec![big, -1, i32::MAX, -9, 4, m, 6, 2_000_000_001]
    );
    assert_eq!(out[3].ints[6..], [big, -1, i32::MAX, 4, m, 6]);
    assert!(out.iter().all(|t| t.data.is_empty()));
}

/// Comparisons with NaN are false but `!=`; `where` selects per element with broadcasting.
#[test]
fn comparisons_and_where() {
    let src = "kernel k(v0 x: f32[3] @0..0, v1 y: f32[3] @0..0) -> (bool[3], bool[3], f32[3]) {
        v2 = eq v0, v1 : bool[3] @0..0
        v3 = ne v0, v1 : bool[3] @0..0
        v4 = const 0.0 : f32[] @0..0
        v5 = where v2, v0, v4 : f32[3] @0..0
        return v2, v3, v5
    }";
    let x = t(Dtype::F32, &[3], &[1.0, f32::NAN, 2.0]);
    let y = t(Dtype::F32, &[3], &[1.0, f32::NAN, 3.0]);
    let f = &ir::parse(src).expect("parses")[0];
    ir::verify(f, "test").expect("verifies");
    let out = evaluate(f, &[x, y]).expect("evaluates");
    assert_eq!(out[0].data, vec![1.0, 0.0, 0.0]);
    assert_eq!(out[1].data, vec![0.0, 1.0, 1.0]);
    assert_eq!(out[2].data, vec![1.0, 0.0, 0.0]);
}

/// `take` counts negative indices from the end, and an index outside `[-n, n)` is an
/// error naming the kernel, the operand and the value as given.
#[test]
fn take_wraps_negative_indices_and_rejects_out_of_range() {
    let src = "kernel emb(v0 table: f32[3, 2] @0..0, v1 ids: i32[4] @0..0) -> (f32[4, 2]) {
        v2 = take v0, v1 axis=0 : f32[4, 2] @0..0
        return v2
    }";
    let table = t(Dtype::F32, &[3, 2], &[0.0, 1.0, 10.0, 11.0, 20.0, 21.0]);
    let out = run(
        src,
        &[
            table.clone(),
            HostTensor::from_i32(&[4], vec![2, -1, 0, -3]),
        ],
    );
    assert_eq!(out.data, vec![20.0, 21.0, 20.0, 21.0, 0.0, 1.0, 0.0, 1.0]);
    let f = &ir::parse(src).expect("parses")[0];
    for bad in [3, -4] {
        let err = evaluate(
            f,
            &[
                table.clone(),
                HostTensor::from_i32(&[4], vec![0, bad, 1, 1]),
            ],
        )
        .expect_err("out of range")
        .to_string();
        assert!(err.contains("`emb`"), "{err}");
        assert!(err.contains("`ids`"), "{err}");
        assert!(err.contains(&format!("index {bad}")), "{err}");
    }
}

/// Slices, `concat`, `pad` and `broadcast_to` of `i32` values move the integers
/// themselves (values f32 cannot hold, 2^24 + 1 and the ends of the range, stay exact),
/// and a `take` whose indices are such a view reads them.
#[test]
fn i32_movement_keeps_every_integer() {
    let src =
        "kernel k(a: i32[2, 3], t: f32[4, 2]) -> (i32[2, 2], i32[3, 6], i32[2, 2, 3], f32[2, 2]) {
        let p = pad(concat([a, a[:, ::-1]], axis=1), before=[1, 0], after=[0, 0], value=-7);
        return (a[:, 1:], p, broadcast_to(a, [2, 2, 3]), take(t, a[0, 1:] - 16777217, axis=0));
    }";
    let kernels = tessera::frontend::check_file(src, &[], None).expect("the kernel checks");
    let f = ir::lower(&kernels[0]);
    ir::verify(&f, "lower").expect("the IR verifies");
    let big = 16_777_217;
    let a = HostTensor::from_i32(&[2, 3], vec![i32::MAX, big + 1, big + 2, i32::MIN, 5, -1]);
    let t = t(
        Dtype::F32,
        &[4, 2],
        &[0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0],
    );
    let out = evaluate(&f, &[a, t]).expect("evaluation succeeds");
    assert_eq!(out[0].ints, vec![big + 1, big + 2, 5, -1]);
    #[rustfmt::skip]
    let padded = vec![
        -7, -7, -7, -7, -7, -7,
        i32::MAX, big + 1, big + 2, big + 2, big + 1, i32::MAX,
        i32::MIN, 5, -1, -1, 5, i32::MIN,
    ];
    assert_eq!(out[1].ints, padded);
    let row0 = [i32::MAX, big + 1, big + 2];
    let row1 = [i32::MIN, 5, -1];
    let twice: Vec<i32> = [row0, row1, row0, row1].concat();
    assert_eq!(out[2].ints, twice);
    // Indices 1 and 2 select rows 1 and 2 of `t`.
    assert_eq!(out[3].data, vec![2.0, 3.0, 4.0, 5.0]);
}

/// A masked score is an exact `-inf`: subtracting the row maximum leaves it `-inf` whatever
/// the maximum's error, and its `exp` is an exact 0. Its bound is 0, so the probabilities
/// of a causal softmax keep finite bounds (the rounding term of an infinite result was
/// infinite, and it made every bound of the row, and of everything after it, infinite:
/// `--check` then allowed any value there).
#[test]
fn masked_scores_keep_finite_bounds() {
    let src = "kernel k(v0 s: f32[4, 4] @0..0) -> (f32[4, 4], f32[4, 4]) {
        v1 = tril v0 k=0 fill=-inf : f32[4, 4] @0..0
        v2 = max v1 axis=1 keepdims=true : f32[4, 1] @0..0
        v3 = sub v1, v2 : f32[4, 4] @0..0
        v4 = exp v3 : f32[4, 4] @0..0
        v5 = sum v4 axis=1 keepdims=true : f32[4, 1] @0..0
        v6 = div v4, v5 : f32[4, 4] @0..0
        return v3, v6
    }";
    let f = &ir::parse(src).expect("parses")[0];
    ir::verify(f, "test").expect("verifies");
    let values: Vec<f32> = (0..16).map(|i| (i as f32 * 0.37).sin() * 3.0).collect();
    let out = tessera::reference::evaluate_bounded(f, &[t(Dtype::F32, &[4, 4], &values)], &[])
        .expect("evaluates");
    let (shifted, shifted_bound) = &out[0];
    let (probs, probs_bound) = &out[1];
    for r in 0..4 {
        for c in 0..4 {
            let i = r * 4 + c;
            if c > r {
                assert_eq!(shifted.data[i], f32::NEG_INFINITY);
                assert_eq!(shifted_bound[i], 0.0, "masked element {i} is exact");
                assert_eq!(probs.data[i], 0.0);
                // 0 / sum keeps only the smallest rounding step of a zero result.
                assert!(probs_bound[i] < f32::MIN_POSITIVE, "masked probability {i}");
            } else {
                assert!(
                    probs_bound[i].is_finite() && probs_bound[i] < 1e-5,
                    "{i}: {}",
                    probs_bound[i]
                );
            }
        }
    }
}
