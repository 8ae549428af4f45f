//! The matmul micro-kernel against a straightforward scalar reference, bit for bit: random
//! shapes (K = 1, odd sizes, partial blocks), special values (NaN, infinities, -0.0,
//! subnormals), initial accumulator values, every kernel path the host has, one thread and
//! two; and, through the interpreter, the reuse of the PSUM values a previous matmul left.

mod common;

use common::*;
use isa::Dtype;
use proptest::prelude::{prop, prop_oneof, proptest, Just, Strategy};
use runtime::kernels::{self, Job, Path, Pool};
use std::sync::Arc;

/// The contract: `acc[m][n]` plus `s[k][m] * v[k][n]` for `k = 0, 1, ..` in order, each
/// product and each sum rounded to f32, never fused.
fn reference(k: usize, m: usize, n: usize, s: &[f32], v: &[f32], acc: &mut [f32]) {
    for mi in 0..m {
        for ni in 0..n {
            let mut a = acc[mi * n + ni];
            for ki in 0..k {
                let p = s[ki * m + mi] * v[ki * n + ni];
                a += p;
            }
            acc[mi * n + ni] = a;
        }
    }
}

/// Bit equality, except that any NaN equals any NaN: the kernel leaves NaN payloads to the
/// host, and the store to memory makes every NaN canonical.
fn same(got: &[f32], want: &[f32], what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: lengths differ");
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert!(
            g.to_bits() == w.to_bits() || (g.is_nan() && w.is_nan()),
            "{what}: element {i}: got {g} ({:#x}), want {w} ({:#x})",
            g.to_bits(),
            w.to_bits()
        );
    }
}

fn paths() -> Vec<Path> {
    [Path::Portable, Path::Avx, Path::Avx512]
        .into_iter()
        .filter(|p| p.is_available())
        .collect()
}

/// An f32 that is usually an ordinary value and sometimes a special one.
fn value() -> impl Strategy<Value = f32> {
    prop_oneof![
        8 => -4.0f32..4.0,
        1 => prop::sample::select(vec![
            0.0f32,
            -0.0,
            f32::INFINITY,
            f32::NEG_INFINITY,
            f32::NAN,
            f32::MIN_POSITIVE / 4.0,
            -f32::MIN_POSITIVE / 8.0,
            f32::MAX,
            -f32::MAX,
            1e-30,
            1e30,
        ]),
    ]
}

fn case() -> impl Strategy<Value = (usize, usize, usize, Vec<f32>, Vec<f32>, Vec<f32>)> {
    (1usize..=20, 1usize..=23, 1usize..=70).prop_flat_map(|(k, m, n)| {
        (
            Just(k),
            Just(m),
            Just(n),
            prop::collection::vec(value(), k * m),
            prop::collection::vec(value(), k * n),
            prop::collection::vec(value(), m * n),
        )
    })
}

proptest! {
    #![proptest_config(proptest_config(200))]

    #[test]
    fn kernel_matches_the_reference((k, m, n, s, v, init) in case(), zero_init: bool) {
        let init = if zero_init { vec![0.0; m * n] } else { init };
        let mut want = init.clone();
        reference(k, m, n, &s, &v, &mut want);
        for path in paths() {
            let mut got = init.clone();
            kernels::matmul(path, k, m, n, &s, &v, &mut got);
            same(&got, &want, &format!("{path:?} k={k} m={m} n={n}"));
        }
    }
}

/// A bf16 value from its 16 bits.
fn bf16(bits: u16) -> f32 {
    f32::from_bits(u32::from(bits) << 16)
}

/// Whether a job of the two single values says their product is exact.
fn claims_exact(s: f32, v: f32) -> bool {
    let mut job = Job::new(Path::Portable);
    job.reset(1, 1, 1);
    job.set_stationary_row(0, &[s]);
    job.set_moving_row(0, &[v]);
    job.exact_products()
}

proptest! {
    #![proptest_config(proptest_config(2000))]

    /// The condition under which the kernels fuse multiply and add is sound: whenever a
    /// job says its products are exact, the f32 product of two bf16 values (any bits:
    /// subnormals, the largest exponents) equals the exact product, computed in f64.
    #[test]
    fn claimed_exact_products_are_exact(a: u16, b: u16) {
        let (s, v) = (bf16(a), bf16(b));
        if claims_exact(s, v) && s.is_finite() && v.is_finite() {
            let exact = f64::from(s) * f64::from(v);
            assert_eq!(f64::from(s * v), exact, "{s:e} * {v:e}");
        }
    }
}

/// The condition is tight where it matters: bf16 products down to f32's last subnormal bit
/// are fused, one exponent lower they are not, nor are f32 operands or products that may
/// overflow.
#[test]
fn exactness_boundaries() {
    // 1 + 2^-7 at biased exponents 60 and 59: the product's lowest bit is 2^-149.
    let m = 1.0 + 2f32.powi(-7);
    let (s, v) = (m * 2f32.powi(60 - 127), m * 2f32.powi(59 - 127));
    assert!(claims_exact(s, v));
    assert_eq!(f64::from(s * v), f64::from(s) * f64::from(v));
    // One exponent lower the lowest bit is 2^-150: rounded, so not fused.
    let v_low = v / 2.0;
    assert!(!claims_exact(s, v_low));
    assert_ne!(f64::from(s * v_low), f64::from(s) * f64::from(v_low));
    // A zero, an infinity or a NaN never stops fusing; an f32 value does.
    assert!(claims_exact(0.0, f32::INFINITY));
    assert!(claims_exact(f32::NAN, 3.0));
    assert!(!claims_exact(1.1, 1.0));
    // Products that might overflow are not fused.
    assert!(claims_exact(2f32.powi(125), 1.5));
    assert!(!claims_exact(2f32.powi(127), 2.0));
}

/// bf16 operands of every magnitude, down to where the fused kernels must give up, match
/// the unfused reference bit for bit on every path; ordinary bf16 operands are fused.
#[test]
fn bf16_operands_match_with_and_without_fusing() {
    let mut rng = Rng::new(11);
    let (k, m, n) = (64, 12, 48);
    for scale_exp in [0, -60, -64, -70, 60] {
        let scale = 2f32.powi(scale_exp);
        let s: Vec<f32> = rng
            .values(Dtype::Bf16, k * m, 3.0)
            .into_iter()
            .map(|x| x * scale)
            .collect();
        let v: Vec<f32> = rng
            .values(Dtype::Bf16, k * n, 3.0)
            .into_iter()
            .map(|x| x * scale)
            .collect();
        let init: Vec<f32> = rng
            .values(Dtype::F32, m * n, 1.0)
            .into_iter()
            .map(|x| x * scale * scale)
            .collect();
        let mut want = init.clone();
        reference(k, m, n, &s, &v, &mut want);
        for path in paths() {
            let mut got = init.clone();
            kernels::matmul(path, k, m, n, &s, &v, &mut got);
            same(&got, &want, &format!("{path:?} scale 2^{scale_exp}"));
        }
    }
    let s = rng.values(Dtype::Bf16, k * m, 3.0);
    let mut job = Job::new(Path::Portable);
    job.reset(k, m, m);
    for ki in 0..k {
        job.set_stationary_row(ki, &s[ki * m..][..m]);
        job.set_moving_row(ki, &s[ki * m..][..m]);
    }
    assert!(job.exact_products(), "ordinary bf16 values are fused");
}

/// Full and ragged instruction shapes, including the largest (128 x 512, K = 128), with
/// values whose sums round at every step.
#[test]
fn kernel_on_instruction_shapes() {
    let mut rng = Rng::new(7);
    for (k, m, n) in [
        (1, 1, 1),
        (1, 128, 512),
        (128, 128, 512),
        (128, 127, 511),
        (3, 5, 17),
        (64, 4, 16),
        (65, 9, 33),
    ] {
        let s = rng.values(Dtype::F32, k * m, 3.0);
        let v = rng.values(Dtype::F32, k * n, 3.0);
        let init = rng.values(Dtype::F32, m * n, 100.0);
        let mut want = init.clone();
        reference(k, m, n, &s, &v, &mut want);
        for path in paths() {
            let mut got = init.clone();
            kernels::matmul(path, k, m, n, &s, &v, &mut got);
            same(&got, &want, &format!("{path:?} k={k} m={m} n={n}"));
        }
    }
}

/// Helper threads change nothing: every panel is computed by one thread, in order, so a
/// shared job gives the same bits as a single-threaded one, run after run, with one helper,
/// with more helpers than this host has cores, and with the host's own count.
#[test]
fn helper_threads_give_the_same_bits() {
    let pools: Vec<Pool> = [Pool::with_helpers(1), Pool::with_helpers(5), Pool::new()]
        .into_iter()
        .flatten()
        .collect();
    assert!(
        pools.len() >= 2,
        "the pools of one and five helpers did not start"
    );
    assert_eq!(pools[1].helpers(), 5);
    for pool in &pools {
        shared_job_is_exact(pool);
    }
}

fn shared_job_is_exact(pool: &Pool) {
    let (k, m, n) = (128, 128, 512);
    let mut rng = Rng::new(9);
    let s = rng.values(Dtype::Bf16, k * m, 2.0);
    let v = rng.values(Dtype::Bf16, k * n, 2.0);
    let init = rng.values(Dtype::F32, m * n, 50.0);
    let mut want = init.clone();
    reference(k, m, n, &s, &v, &mut want);
    for path in paths() {
        let mut job = Arc::new(Job::new(path));
        for rep in 0..20 {
            let j = Arc::get_mut(&mut job).expect("the helpers let go of the job");
            j.reset(k, m, n);
            for ki in 0..k {
                j.set_stationary_row(ki, &s[ki * m..][..m]);
                j.set_moving_row(ki, &v[ki * n..][..n]);
            }
            for mi in 0..m {
                j.set_output_row(mi, &init[mi * n..][..n]);
            }
            pool.run(&mut job);
            let j = Arc::get_mut(&mut job).expect("the helpers let go of the job");
            let mut got = vec![0.0; m * n];
            for mi in 0..m {
                j.output_row(mi, &mut got[mi * n..][..n]);
            }
            let helpers = pool.helpers();
            same(
                &got,
                &want,
                &format!("{path:?}, {helpers} helpers, repetition {rep}"),
            );
        }
    }
}

/// The canonical NaN, as every NaN reaches memory.
fn canonical(x: f32) -> f32 {
    if x.is_nan() {
        f32::from_bits(0x7fc0_0000)
    } else {
        x
    }
}

/// Accumulating matmuls through the interpreter: the first result stays in the kernel's
/// buffers and is reused while PSUM is unchanged, but a write to PSUM in between (a
/// `memset` of the same region) or a different output region must be read back. Operands
/// include infinities and zeros, so some outputs are NaN along the way.
#[test]
fn accumulation_reuses_psum_only_while_it_is_unchanged() {
    let (k, m, n) = (16usize, 24usize, 40usize);
    let mut a = Asm::new();
    let s_off = a.tensor("s", "input", Dtype::F32, &[k, m]);
    let v_off = a.tensor("v", "input", Dtype::F32, &[k, n]);
    let o_off = a.tensor("o", "output", Dtype::F32, &[3 * m, n]);
    let v_sb = m * 4;
    a.inst(
        "dma0",
        format!(
            "dma dst=sbuf.f32[0:{k}, 0; {m}:1], src=hbm.f32[{s_off}; {k}:{m}, {m}:1] signal(s0)"
        ),
    );
    a.inst(
        "dma1",
        format!("dma dst=sbuf.f32[0:{k}, {v_sb}; {n}:1], src=hbm.f32[{v_off}; {k}:{n}, {n}:1] signal(s0)"),
    );
    let mm = |wait: &str, bank: usize, acc: bool, signal: &str| {
        format!(
            "wait(s0>=2{wait}) matmul out=psum.f32[0:{m}, {}; {n}:1], stationary=sbuf.f32[0:{k}, 0; {m}:1], moving=sbuf.f32[0:{k}, {v_sb}; {n}:1], accumulate={acc}{signal}",
            bank * 2048
        )
    };
    // Bank 0: three accumulating matmuls in a row (reuse).
    a.inst("tensor", mm("", 0, false, ""));
    a.inst("tensor", mm("", 0, true, ""));
    a.inst("tensor", mm("", 0, true, " signal(s1)"));
    // Bank 1: a matmul, then the vector engine sets the region to 1.5, then accumulate.
    a.inst("tensor", mm("", 1, false, " signal(s2)"));
    a.inst(
        "vector",
        format!("wait(s2>=1) memset out=psum.f32[0:{m}, 2048; {n}:1], value=1.5 signal(s3)"),
    );
    a.inst("tensor", mm(", s3>=1", 1, true, " signal(s1)"));
    // Bank 2: accumulate onto a region other than the previous matmul's output, set to
    // -0.0 first (an accumulating matmul must not read never-written PSUM).
    a.inst(
        "vector",
        format!("memset out=psum.f32[0:{m}, 4096; {n}:1], value=-0.0 signal(s4)"),
    );
    a.inst("tensor", mm(", s4>=1", 2, true, " signal(s1)"));
    for (i, bank) in [0usize, 1, 2].into_iter().enumerate() {
        let sb = 8192 + i * n * 4;
        a.inst(
            "vector",
            format!(
                "wait(s1>={}) tensor_copy out=sbuf.f32[0:{m}, {sb}; {n}:1], src=psum.f32[0:{m}, {}; {n}:1] signal(s5)",
                3,
                bank * 2048
            ),
        );
        a.inst(
            "dma2",
            format!(
                "wait(s5>={}) dma dst=hbm.f32[{}; {m}:{n}, {n}:1], src=sbuf.f32[0:{m}, {sb}; {n}:1]",
                i + 1,
                o_off + i * m * n * 4
            ),
        );
    }
    let mut rng = Rng::new(21);
    let mut s = rng.values(Dtype::F32, k * m, 2.0);
    let mut v = rng.values(Dtype::F32, k * n, 2.0);
    s[3] = f32::INFINITY;
    v[7] = 0.0;
    v[2] = f32::NEG_INFINITY;
    s[m + 1] = -0.0;
    let (_, out) = run(&a.text(), &[("s", &s), ("v", &v)]);
    let got = out.read("o").unwrap();
    let round = |acc: &mut Vec<f32>| {
        reference(k, m, n, &s, &v, acc);
        for x in acc.iter_mut() {
            *x = canonical(*x);
        }
    };
    let mut bank0 = vec![0.0; m * n];
    for _ in 0..3 {
        round(&mut bank0);
    }
    let mut bank1 = vec![1.5; m * n];
    round(&mut bank1);
    let mut bank2 = vec![-0.0; m * n];
    round(&mut bank2);
    assert!(bank0.iter().any(|x| x.is_nan()), "NaN is exercised");
    assert_bits_eq(&got[..m * n], &bank0, "bank 0");
    assert_bits_eq(&got[m * n..2 * m * n], &bank1, "bank 1");
    assert_bits_eq(&got[2 * m * n..], &bank2, "bank 2");
}
