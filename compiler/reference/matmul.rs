//! The reference evaluator's matmul kernel: cache-blocked, register-tiled, vectorised and
//! threaded, and bit-identical to the plain triple loop it replaces ([`matmul_scalar`]).
//!
//! The language's `@` accumulates in f32: each output element starts at +0.0 and adds the
//! products `a[i, k] * b[k, j]` for `k = 0, 1, .., K - 1` in that order, each product and
//! each sum rounded to f32 (Rust never fuses them into an FMA). Everything here keeps that
//! order per element and changes only which elements are computed together and where
//! their partial sums wait:
//! - a register tile holds `R x NR` outputs (`R <= MR` rows, `NR` consecutive columns),
//!   one accumulator per output, so SIMD lanes run across columns, never across `k`;
//! - `k` is cut into blocks of [`KC`] steps for the cache; between blocks an element's
//!   partial sum is stored to the output row and loaded again, which is exact in f32, and
//!   the blocks run in increasing `k`;
//! - threads split the output rows, or the columns where the rows are few and the columns
//!   many (then each thread packs only its part of `b`): every element is computed start
//!   to finish by one thread, so the result does not depend on the thread count.
//!
//! The kernel is plain Rust; [`Simd`] picks at run time which instruction set the compiler
//! may use for the same source (`target_feature` on a wrapper; AVX-512F, AVX2 or the
//! x86-64 baseline), so the arithmetic per element is the same on every path; on AVX-512
//! hosts two whole register tiles side by side run in 16-lane registers, one lane per
//! output column as on AVX2 (`tile_pair_avx512`). Where every product
//! of the operands is exact in f32 (bf16 and FP8 values of ordinary magnitude:
//! `runtime::kernels::products_exact`), whole tiles use fused multiply-adds, which round
//! each sum once, as the unfused add does: the same bits, at half the issue slots on hosts
//! whose multiply and add share the FMA ports.

/// An operand of [`matmul`]: its values, or values derived from them element by element
/// as they are packed (the error bounds multiply magnitudes, `|x|` or `|x| + e`, which are
/// then never stored whole). Derived values are computed in f32 exactly as a stored copy
/// would hold them.
#[derive(Clone, Copy, Debug)]
pub enum Operand<'a> {
    /// The values as they are.
    Values(&'a [f32]),
    /// `|x|`.
    Abs(&'a [f32]),
    /// `|x| + e`, with `e` from the second slice at the same index.
    AbsPlus(&'a [f32], &'a [f32]),
    /// `|x| + scaled_up(s, e)`, with `e` from the second slice at the same index: the
    /// bound of a matmul by an exact operand (`bound::matmul_prop`).
    AbsPlusScaled(&'a [f32], &'a [f32], f32),
}

impl<'a> Operand<'a> {
    /// The elements `range` of the operand.
    pub fn slice(self, range: std::ops::Range<usize>) -> Operand<'a> {
        match self {
            Operand::Values(x) => Operand::Values(&x[range]),
            Operand::Abs(x) => Operand::Abs(&x[range]),
            Operand::AbsPlus(x, e) => Operand::AbsPlus(&x[range.clone()], &e[range]),
            Operand::AbsPlusScaled(x, e, s) => {
                Operand::AbsPlusScaled(&x[range.clone()], &e[range], s)
            }
        }
    }

    fn len(&self) -> usize {
        match self {
            Operand::Values(x)
            | Operand::Abs(x)
            | Operand::AbsPlus(x, _)
            | Operand::AbsPlusScaled(x, _, _) => x.len(),
        }
    }

    /// Element `i`.
    #[inline(always)]
    fn at(&self, i: usize) -> f32 {
        match self {
            Operand::Values(x) => x[i],
            Operand::Abs(x) => x[i].abs(),
            Operand::AbsPlus(x, e) => x[i].abs() + e[i],
            Operand::AbsPlusScaled(x, e, s) => x[i].abs() + scaled_up(*s, e[i]),
        }
    }

    /// `dst[j] = self[start + j]`.
    #[inline(always)]
    fn copy_to(&self, start: usize, dst: &mut [f32]) {
        let range = start..start + dst.len();
        match self {
            Operand::Values(x) => dst.copy_from_slice(&x[range]),
            Operand::Abs(x) => {
                for (d, v) in dst.iter_mut().zip(&x[range]) {
                    *d = v.abs();
                }
            }
            Operand::AbsPlus(x, e) => {
                for ((d, v), b) in dst.iter_mut().zip(&x[range.clone()]).zip(&e[range]) {
                    *d = v.abs() + b;
                }
            }
            Operand::AbsPlusScaled(x, e, s) => {
                for ((d, v), b) in dst.iter_mut().zip(&x[range.clone()]).zip(&e[range]) {
                    *d = v.abs() + scaled_up(*s, *b);
                }
            }
        }
    }

    /// The exactness statistics of its values (`runtime::kernels::ExactScan`).
    fn scan(&self) -> runtime::kernels::ExactScan {
        let mut s = runtime::kernels::ExactScan::default();
        match self {
            Operand::Values(x) | Operand::Abs(x) => s.scan(x),
            Operand::AbsPlus(..) | Operand::AbsPlusScaled(..) => {
                let mut buf = [0f32; 1024];
                let n = self.len();
                for start in (0..n).step_by(buf.len()) {
                    let piece = &mut buf[..(n - start).min(1024)];
                    self.copy_to(start, piece);
                    s.scan(piece);
                }
            }
        }
        s
    }
}

/// `s e` for `s, e >= 0`, rounded to f32 and then moved one step up, so never below the
/// real product (whose f32 rounding may lose up to half a step, below the normal range
/// too); an exact zero and infinity stay as they are.
#[inline(always)]
pub fn scaled_up(s: f32, e: f32) -> f32 {
    let t = s * e;
    if t > 0.0 && t < f32::INFINITY {
        t.next_up()
    } else {
        t
    }
}

/// Rows of a register tile (the broadcast values of `a`).
const MR: usize = 6;

/// Columns of a register tile: two 8-lane vectors per row on AVX2.
const NR: usize = 16;

/// Steps of `k` per cache block: a packed panel of `b` is `KC x NR` values (16 KiB).
const KC: usize = 256;

/// Columns of `b` packed at once (`KC x NC` values, 256 KiB: within a core's L2).
const NC: usize = 256;

/// A range of output columns.
type Cols = std::ops::Range<usize>;

/// Below this many rows per thread the threads of a matmul with many columns split the
/// columns rather than the rows (`matmul_of`).
const COLUMN_SPLIT_ROWS: usize = 512;

/// Below this many multiply-adds a matmul runs on the calling thread alone.
const PARALLEL_MIN_MACS: usize = 1 << 22;

/// Which instruction set the kernel is compiled for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Simd {
    /// The target's baseline (SSE2 on x86-64), any host.
    Baseline,
    /// AVX2, on x86 hosts that have it.
    Avx2,
    /// AVX-512F, on x86 hosts that have it: whole pairs of register tiles side by side
    /// in 16-lane registers, the rest as on AVX2.
    Avx512,
}

impl Simd {
    /// The widest instruction set this host has, unless the environment variable
    /// `TESSERA_SIMD` limits it (as it does the interpreter's, `runtime::kernels::Path`):
    /// `scalar` asks for the baseline (the determinism tests use it), `avx2` or `avx` for
    /// AVX2 on an AVX-512 host.
    pub fn best() -> Simd {
        let limit = std::env::var("TESSERA_SIMD").ok();
        if limit.as_deref() == Some("scalar") {
            return Simd::Baseline;
        }
        #[cfg(target_arch = "x86_64")]
        {
            let avx2_only = matches!(limit.as_deref(), Some("avx2" | "avx"));
            if !avx2_only
                && std::is_x86_feature_detected!("avx512f")
                && std::is_x86_feature_detected!("avx2")
            {
                return Simd::Avx512;
            }
            if std::is_x86_feature_detected!("avx2") {
                return Simd::Avx2;
            }
        }
        Simd::Baseline
    }
}

/// The threads a large matmul uses: `TESSERA_THREADS` if set to a positive number, else
/// the host's available parallelism.
pub fn threads() -> usize {
    if let Some(n) = std::env::var("TESSERA_THREADS")
        .ok()
        .and_then(|v| v.parse::<usize>().ok())
        .filter(|&n| n > 0)
    {
        return n;
    }
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// `out[i, j] = sum_k a[i, k] * b[k, j]` for `a: [m, k]`, `b: [k, n]` and `out: [m, n]`, all
/// row-major, in the language's order, on `simd` with up to `threads` threads (the tests'
/// entry; the evaluator calls [`matmul_of`]).
#[cfg(test)]
#[allow(clippy::too_many_arguments)]
pub fn matmul(
    simd: Simd,
    threads: usize,
    m: usize,
    k: usize,
    n: usize,
    a: &[f32],
    b: &[f32],
    out: &mut [f32],
) {
    matmul_of(
        simd,
        threads,
        m,
        k,
        n,
        Operand::Values(a),
        Operand::Values(b),
        out,
    )
}

/// [`matmul`] of operands that may be derived from stored values ([`Operand`]).
#[allow(clippy::too_many_arguments)]
pub fn matmul_of(
    simd: Simd,
    threads: usize,
    m: usize,
    k: usize,
    n: usize,
    a: Operand,
    b: Operand,
    out: &mut [f32],
) {
    let (a, b, out) = (a.slice(0..m * k), b.slice(0..k * n), &mut out[..m * n]);
    out.fill(0.0);
    if m == 0 || n == 0 || k == 0 {
        return;
    }
    // Fused multiply-adds give the same bits where every product is exact (bf16 and FP8
    // operands of ordinary magnitude: `runtime::kernels::products_exact`).
    let fused = simd != Simd::Baseline && fma() && a.scan().products_exact(&b.scan());
    let threads = if m * n * k < PARALLEL_MIN_MACS {
        1
    } else {
        threads.max(1)
    };
    if threads == 1 {
        rows(simd, fused, m, k, n, 0..n, a, b, out);
        return;
    }
    // Few rows beside many columns (a row block times a weight): the threads split the
    // columns, so that each packs only its part of `b` (split by rows, each would pack
    // all of it); each computes into its own `[m, columns]` buffer, copied into `out`.
    let col_tiles = n.div_ceil(NR);
    if m < threads * COLUMN_SPLIT_ROWS && col_tiles >= threads * (NC / NR) {
        let per = col_tiles.div_ceil(threads) * NR;
        let parts: Vec<std::ops::Range<usize>> =
            (0..n).step_by(per).map(|j| j..(j + per).min(n)).collect();
        let mut bufs: Vec<Vec<f32>> = parts.iter().map(|c| vec![0.0; m * c.len()]).collect();
        std::thread::scope(|s| {
            let mut work = parts.iter().cloned().zip(bufs.iter_mut());
            let first = work.next();
            for (c, o) in work {
                s.spawn(move || rows(simd, fused, m, k, n, c, a, b, o));
            }
            if let Some((c, o)) = first {
                rows(simd, fused, m, k, n, c, a, b, o);
            }
        });
        for (c, buf) in parts.iter().zip(&bufs) {
            for (row, part) in out.chunks_exact_mut(n).zip(buf.chunks_exact(c.len())) {
                row[c.clone()].copy_from_slice(part);
            }
        }
        return;
    }
    // Whole register tiles of rows per thread, as even as they come.
    let threads = threads.min(m.div_ceil(MR));
    let per = m.div_ceil(MR).div_ceil(threads) * MR;
    std::thread::scope(|s| {
        let a_rows = (0..m)
            .step_by(per)
            .map(|r| a.slice(r * k..(r + per).min(m) * k));
        let mut chunks = out.chunks_mut(per * n).zip(a_rows);
        let first = chunks.next();
        for (o, a) in chunks {
            let rows_here = o.len() / n;
            s.spawn(move || rows(simd, fused, rows_here, k, n, 0..n, a, b, o));
        }
        if let Some((o, a)) = first {
            rows(simd, fused, o.len() / n, k, n, 0..n, a, b, o);
        }
    });
}

/// Whether the host has FMA (and the environment does not forbid fusing with
/// `TESSERA_SIMD=nofma`).
fn fma() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::is_x86_feature_detected!("fma")
            && !std::env::var("TESSERA_SIMD").is_ok_and(|v| v == "nofma")
    }
    #[cfg(not(target_arch = "x86_64"))]
    false
}

/// The blocked product for `m` rows and the columns `cols` on the calling thread: `out`
/// is `[m, cols.len()]` (starting at +0.0), `b` has `n` columns. `fused`: every product
/// is exact and the host has FMA.
#[allow(clippy::too_many_arguments)]
fn rows(
    simd: Simd,
    fused: bool,
    m: usize,
    k: usize,
    n: usize,
    cols: Cols,
    a: Operand,
    b: Operand,
    out: &mut [f32],
) {
    match simd {
        #[cfg(target_arch = "x86_64")]
        Simd::Avx512 if fused && std::is_x86_feature_detected!("avx512f") => {
            // SAFETY: the host has AVX-512F (checked just above) and AVX2 (`Simd::best`);
            // AVX-512F implies FMA.
            unsafe { rows_avx512_fma(m, k, n, cols, a, b, out) }
        }
        #[cfg(target_arch = "x86_64")]
        Simd::Avx512 if std::is_x86_feature_detected!("avx512f") => {
            // SAFETY: the host has AVX-512F (checked just above) and AVX2 (`Simd::best`).
            unsafe { rows_avx512(m, k, n, cols, a, b, out) }
        }
        #[cfg(target_arch = "x86_64")]
        Simd::Avx2 | Simd::Avx512 if fused && std::is_x86_feature_detected!("fma") => {
            // SAFETY: the host has AVX2 (`Simd::best`) and FMA (checked just above).
            unsafe { rows_fma(m, k, n, cols, a, b, out) }
        }
        #[cfg(target_arch = "x86_64")]
        Simd::Avx2 | Simd::Avx512 if std::is_x86_feature_detected!("avx2") => {
            // SAFETY: the host has AVX2 (checked just above).
            unsafe { rows_avx2(m, k, n, cols, a, b, out) }
        }
        _ => rows_generic(Kernel::Plain, m, k, n, cols, a, b, out),
    }
}

/// Which micro-kernel whole register tiles use.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Kernel {
    /// The plain loop of [`tile`] (any host).
    Plain,
    /// [`tile_full_avx`]: multiply, then add.
    Avx,
    /// [`tile_full_fma`]: fused multiply-adds, for exact products only.
    Fma,
    /// [`tile_pair_avx512`] for two whole tiles side by side, else [`Kernel::Avx`].
    Avx512,
    /// [`tile_pair_avx512_fma`] for two whole tiles side by side, else [`Kernel::Fma`].
    Avx512Fma,
}

/// Defines [`rows_generic`] compiled with `$features` for whole tiles on `$kernel`.
macro_rules! rows_on {
    ($(#[$doc:meta])* $name:ident, $features:literal, $kernel:expr) => {
$(#[$doc])*
///
/// # Safety
///
/// The host must have the function's target features, and for a fused kernel every
/// product of `a` and `b` must be exact.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = $features)]
unsafe fn $name(m: usize, k: usize, n: usize, cols: Cols, a: Operand, b: Operand, out: &mut [f32]) {
    rows_generic($kernel, m, k, n, cols, a, b, out)
}
    };
}

rows_on!(
    /// [`rows_generic`] compiled with AVX2.
    rows_avx2,
    "avx2",
    Kernel::Avx
);

rows_on!(
    /// [`rows_generic`] compiled with AVX2 and FMA, whole tiles fused.
    rows_fma,
    "avx2,fma",
    Kernel::Fma
);

rows_on!(
    /// [`rows_generic`] compiled with AVX-512F (and AVX2).
    rows_avx512,
    "avx2,fma,avx512f",
    Kernel::Avx512
);

rows_on!(
    /// [`rows_generic`] compiled with AVX-512F, whole tiles fused.
    rows_avx512_fma,
    "avx2,fma,avx512f",
    Kernel::Avx512Fma
);

/// The loop nest: column blocks of [`NC`], `k` blocks of [`KC`] in increasing order (the
/// panel of `b` packed once per block), then register tiles over the rows (their `a`
/// values packed as `[kk][MR]`) and the panels. `kernel`: what whole tiles use (the caller
/// checked that the host has it).
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn rows_generic(
    kernel: Kernel,
    m: usize,
    k: usize,
    n: usize,
    cols: Cols,
    a: Operand,
    b: Operand,
    out: &mut [f32],
) {
    // The row stride of `out`.
    let ld = cols.len();
    let mut packed = vec![0.0f32; KC * NC];
    let mut apack = [0.0f32; KC * MR];
    for jc in cols.clone().step_by(NC) {
        let nc = NC.min(cols.end - jc);
        let panels = nc.div_ceil(NR);
        for pc in (0..k).step_by(KC) {
            let kc = KC.min(k - pc);
            // Pack b[pc.., jc..] as panels [panel][kk][NR], the last one zero-padded.
            for p in 0..panels {
                let j0 = jc + p * NR;
                let w = NR.min(jc + nc - j0);
                let dst = &mut packed[p * KC * NR..][..kc * NR];
                for (kk, d) in dst.chunks_exact_mut(NR).enumerate() {
                    b.copy_to((pc + kk) * n + j0, &mut d[..w]);
                    d[w..].fill(0.0);
                }
            }
            let mut i = 0;
            while i < m {
                let r = MR.min(m - i);
                // a[i + rr, pc + kk] at apack[kk * MR + rr]; rows past `r` are zero.
                for (kk, g) in apack.chunks_exact_mut(MR).take(kc).enumerate() {
                    for (rr, x) in g.iter_mut().enumerate() {
                        *x = if rr < r {
                            a.at((i + rr) * k + pc + kk)
                        } else {
                            0.0
                        };
                    }
                }
                let ap = &apack[..kc * MR];
                let mut p = 0;
                while p < panels {
                    let j0 = jc + p * NR;
                    let w = NR.min(jc + nc - j0);
                    // Two whole tiles side by side in 16-lane registers, where the kernel
                    // has them: the same operations per element as two single tiles.
                    #[cfg(target_arch = "x86_64")]
                    if matches!(kernel, Kernel::Avx512 | Kernel::Avx512Fma)
                        && r == MR
                        && j0 + 2 * NR <= jc + nc
                    {
                        let pair = &packed[p * KC * NR..][..KC * NR + kc * NR];
                        let o = &mut out[i * ld + j0 - cols.start..];
                        // SAFETY: `kernel` says the host has AVX-512F (and that products
                        // are exact, for the fused one); the bounds are asserted inside.
                        unsafe {
                            match kernel {
                                Kernel::Avx512Fma => tile_pair_avx512_fma(ld, kc, ap, pair, o),
                                _ => tile_pair_avx512(ld, kc, ap, pair, o),
                            }
                        }
                        p += 2;
                        continue;
                    }
                    let panel = &packed[p * KC * NR..][..kc * NR];
                    let o = &mut out[i * ld + j0 - cols.start..];
                    match r {
                        6 => tile::<6>(kernel, ld, kc, w, ap, panel, o),
                        5 => tile::<5>(kernel, ld, kc, w, ap, panel, o),
                        4 => tile::<4>(kernel, ld, kc, w, ap, panel, o),
                        3 => tile::<3>(kernel, ld, kc, w, ap, panel, o),
                        2 => tile::<2>(kernel, ld, kc, w, ap, panel, o),
                        _ => tile::<1>(kernel, ld, kc, w, ap, panel, o),
                    }
                    p += 1;
                }
                i += r;
            }
        }
    }
}

/// One register tile: `R` rows and `w <= NR` columns of `out` (row stride `n`, starting at
/// the tile's first element), over `kc` steps of `k` with the rows' `a` values packed in
/// `ap` (`[kk][MR]`) and `b`'s in `panel` (`[kk][NR]`). The partial sums are loaded from
/// `out`, advanced step by step in order, and stored back; padding lanes (columns `w ..`)
/// are computed and dropped. A whole tile runs on the SIMD `kernel`; ragged ones on the
/// plain loop, which never fuses (their products give the same bits either way).
#[inline(always)]
fn tile<const R: usize>(
    kernel: Kernel,
    n: usize,
    kc: usize,
    w: usize,
    ap: &[f32],
    panel: &[f32],
    out: &mut [f32],
) {
    #[cfg(not(target_arch = "x86_64"))]
    let _ = kernel;
    #[cfg(target_arch = "x86_64")]
    if R == MR && w == NR {
        match kernel {
            // SAFETY: `kernel` says the host has AVX (and FMA, with exact products); the
            // bounds are asserted inside.
            Kernel::Avx | Kernel::Avx512 => return unsafe { tile_full_avx(n, kc, ap, panel, out) },
            Kernel::Fma | Kernel::Avx512Fma => {
                return unsafe { tile_full_fma(n, kc, ap, panel, out) }
            }
            Kernel::Plain => {}
        }
    }
    let mut acc = [[0.0f32; NR]; R];
    for (r, row) in acc.iter_mut().enumerate() {
        row[..w].copy_from_slice(&out[r * n..][..w]);
    }
    for (av, bv) in ap.chunks_exact(MR).zip(panel.chunks_exact(NR)).take(kc) {
        let bv: &[f32; NR] = bv.try_into().expect("a panel row is NR values");
        for (row, &s) in acc.iter_mut().zip(av) {
            for (x, &y) in row.iter_mut().zip(bv) {
                // A separate multiply and add, never fused: the language's rounding.
                *x += s * y;
            }
        }
    }
    for (r, row) in acc.iter().enumerate() {
        out[r * n..][..w].copy_from_slice(&row[..w]);
    }
}

/// Defines a micro-kernel for whole `MR x NR` tiles with twelve accumulators in SIMD
/// registers of `$lanes` lanes: each step broadcasts the six `a` values and multiply-adds
/// them with two vectors of `b`'s packed rows, `$b1` values apart, by `$madd`; the second
/// vector's outputs are `$c1` columns after the first's. The same operations as
/// [`tile`]'s loop, lane for lane (fused only where the products are exact, which gives
/// the same bits). With AVX, the two vectors are one tile's 16 columns; with AVX-512, two
/// tiles side by side from two adjacent packed panels (`KC * NR` values apart).
macro_rules! tile_simd {
    ($(#[$doc:meta])* $name:ident, $features:literal, $lanes:expr, $b1:expr, $c1:expr,
     $load:ident, $store:ident, $set1:expr, $madd:expr) => {
$(#[$doc])*
///
/// # Safety
///
/// The host must have the function's target features.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = $features)]
unsafe fn $name(n: usize, kc: usize, ap: &[f32], panel: &[f32], out: &mut [f32]) {
    use std::arch::x86_64::*;
    assert!((1..=KC).contains(&kc) && ap.len() >= kc * MR);
    assert!(panel.len() >= (kc - 1) * NR + $b1 + $lanes);
    assert!(out.len() >= (MR - 1) * n + $c1 + $lanes);
    let c = out.as_mut_ptr();
    let (a, b) = (ap.as_ptr(), panel.as_ptr());
    // Every pointer stays in bounds by the asserts: `a + kk * MR + r < ap.len()`,
    // `b + kk * NR + $b1 + $lanes <= panel.len()`, `c + r * n + $c1 + $lanes <= out.len()`.
    macro_rules! row {
        ($r:expr) => {
            ($load(c.add($r * n)), $load(c.add($r * n + $c1)))
        };
    }
    let (mut c00, mut c01) = row!(0);
    let (mut c10, mut c11) = row!(1);
    let (mut c20, mut c21) = row!(2);
    let (mut c30, mut c31) = row!(3);
    let (mut c40, mut c41) = row!(4);
    let (mut c50, mut c51) = row!(5);
    for kk in 0..kc {
        let b0 = $load(b.add(kk * NR));
        let b1 = $load(b.add(kk * NR + $b1));
        let ak = a.add(kk * MR);
        macro_rules! step {
            ($r:expr, $x0:ident, $x1:ident) => {
                let s = $set1(*ak.add($r));
                $x0 = $madd($x0, s, b0);
                $x1 = $madd($x1, s, b1);
            };
        }
        step!(0, c00, c01);
        step!(1, c10, c11);
        step!(2, c20, c21);
        step!(3, c30, c31);
        step!(4, c40, c41);
        step!(5, c50, c51);
    }
    macro_rules! store {
        ($r:expr, $x0:ident, $x1:ident) => {
            $store(c.add($r * n), $x0);
            $store(c.add($r * n + $c1), $x1);
        };
    }
    store!(0, c00, c01);
    store!(1, c10, c11);
    store!(2, c20, c21);
    store!(3, c30, c31);
    store!(4, c40, c41);
    store!(5, c50, c51);
}
    };
}

tile_simd!(
    /// One whole tile in AVX registers; multiply, then add (never fused): the language's
    /// rounding on any operands.
    tile_full_avx, "avx", 8, 8, 8, _mm256_loadu_ps, _mm256_storeu_ps, _mm256_set1_ps,
    |x, s, y| _mm256_add_ps(x, _mm256_mul_ps(s, y))
);

tile_simd!(
    /// One whole tile in AVX registers; fused multiply-adds, for exact products only.
    tile_full_fma, "avx,fma", 8, 8, 8, _mm256_loadu_ps, _mm256_storeu_ps, _mm256_set1_ps,
    |x, s, y| _mm256_fmadd_ps(s, y, x)
);

tile_simd!(
    /// Two whole tiles side by side in AVX-512 registers; multiply, then add (never fused).
    tile_pair_avx512, "avx512f", 16, KC * NR, NR, _mm512_loadu_ps, _mm512_storeu_ps,
    _mm512_set1_ps, |x, s, y| _mm512_add_ps(x, _mm512_mul_ps(s, y))
);

tile_simd!(
    /// Two whole tiles side by side in AVX-512 registers; fused multiply-adds, for exact
    /// products only.
    tile_pair_avx512_fma, "avx512f", 16, KC * NR, NR, _mm512_loadu_ps, _mm512_storeu_ps,
    _mm512_set1_ps, |x, s, y| _mm512_fmadd_ps(s, y, x)
);

/// The plain triple loop the blocked kernel must match bit for bit: each output row starts
/// at +0.0 and adds `a[i, k] * b[k, :]` for `k` in order (the evaluator's kernel before the
/// blocked one; the tests compare them).
#[cfg(test)]
fn matmul_scalar(m: usize, k: usize, n: usize, a: &[f32], b: &[f32], out: &mut [f32]) {
    for (row, acc) in out[..m * n].chunks_exact_mut(n).enumerate() {
        acc.fill(0.0);
        for kk in 0..k {
            let x = a[row * k + kk];
            let brow = &b[kk * n..(kk + 1) * n];
            for (o, &y) in acc.iter_mut().zip(brow) {
                *o += x * y;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Values that make every rounding count: mixed signs and magnitudes, zeros of both
    /// signs, so a changed order or a fused multiply-add changes bits.
    fn values(len: usize, seed: u64) -> Vec<f32> {
        let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        (0..len)
            .map(|_| {
                s ^= s << 13;
                s ^= s >> 7;
                s ^= s << 17;
                match s % 17 {
                    0 => 0.0,
                    1 => -0.0,
                    _ => {
                        let mant = (s >> 20) as u32 & 0xFFFF;
                        let e = ((s >> 40) % 24) as i32 - 12;
                        let sign = if s & (1 << 50) != 0 { -1.0 } else { 1.0 };
                        sign * (1.0 + mant as f32 / 65536.0) * 2f32.powi(e)
                    }
                }
            })
            .collect()
    }

    #[test]
    fn blocked_matches_the_triple_loop_bit_for_bit() {
        let shapes = [
            (1, 1, 1),
            (7, 3, 5),
            (6, 256, 16),
            (13, 300, 33),
            (64, 513, 257),
            (100, 1000, 70),
        ];
        for (m, k, n) in shapes {
            let a = values(m * k, (m * 31 + k) as u64);
            let b = values(k * n, (n * 17 + k) as u64);
            let mut want = vec![1.0; m * n];
            matmul_scalar(m, k, n, &a, &b, &mut want);
            for simd in [Simd::Baseline, Simd::Avx2, Simd::best()] {
                for threads in [1, 2, 3] {
                    let mut got = vec![f32::NAN; m * n];
                    matmul(simd, threads, m, k, n, &a, &b, &mut got);
                    let same = want
                        .iter()
                        .zip(&got)
                        .all(|(x, y)| x.to_bits() == y.to_bits());
                    assert!(same, "{m}x{k}x{n} on {simd:?} with {threads} threads");
                }
            }
        }
    }

    /// bf16 operands (every product exact) take the fused kernel on hosts with FMA, and
    /// still match the unfused triple loop bit for bit, over sums that round at every step.
    #[test]
    fn fused_bf16_matches_the_triple_loop() {
        let bf16 = |v: Vec<f32>| -> Vec<f32> {
            v.into_iter()
                .map(|x| f32::from_bits(x.to_bits() & 0xFFFF_0000))
                .collect()
        };
        for (m, k, n) in [(12, 256, 32), (13, 300, 33), (131, 600, 97)] {
            let a = bf16(values(m * k, (m + k) as u64));
            let b = bf16(values(k * n, (n * 3 + k) as u64));
            assert!(runtime::kernels::products_exact(&a, &b));
            let mut want = vec![0.0; m * n];
            matmul_scalar(m, k, n, &a, &b, &mut want);
            for threads in [1, 2] {
                let mut got = vec![f32::NAN; m * n];
                matmul(Simd::best(), threads, m, k, n, &a, &b, &mut got);
                assert!(
                    want.iter()
                        .zip(&got)
                        .all(|(x, y)| x.to_bits() == y.to_bits()),
                    "{m}x{k}x{n} with {threads} threads"
                );
            }
        }
    }

    #[test]
    fn large_blocked_matches_with_threads() {
        // Above the parallel threshold, with ragged tiles in every direction.
        let (m, k, n) = (131, 600, 97);
        let a = values(m * k, 5);
        let b = values(k * n, 6);
        let mut want = vec![0.0; m * n];
        matmul_scalar(m, k, n, &a, &b, &mut want);
        assert!(m * n * k >= PARALLEL_MIN_MACS);
        for threads in [1, 2, 4] {
            let mut got = vec![0.0; m * n];
            matmul(Simd::best(), threads, m, k, n, &a, &b, &mut got);
            assert!(want
                .iter()
                .zip(&got)
                .all(|(x, y)| x.to_bits() == y.to_bits()));
        }
    }

    /// Few rows beside many columns: the threads split the columns (ragged last part,
    /// column blocks cut in the middle of a pair of tiles), with the same bits as the
    /// triple loop on every instruction set.
    #[test]
    fn column_split_matches_the_triple_loop() {
        for (m, k, n, threads) in [(30, 300, 601, 2), (31, 300, 1100, 3), (13, 700, 1100, 4)] {
            assert!(m * n * k >= PARALLEL_MIN_MACS && m < threads * COLUMN_SPLIT_ROWS);
            assert!(
                n.div_ceil(NR) >= threads * (NC / NR),
                "the columns are split"
            );
            let a = values(m * k, (m + 3 * k) as u64);
            let b = values(k * n, (n + 5 * k) as u64);
            let mut want = vec![0.0; m * n];
            matmul_scalar(m, k, n, &a, &b, &mut want);
            for simd in [Simd::Baseline, Simd::Avx2, Simd::best()] {
                let mut got = vec![f32::NAN; m * n];
                matmul(simd, threads, m, k, n, &a, &b, &mut got);
                assert!(
                    want.iter()
                        .zip(&got)
                        .all(|(x, y)| x.to_bits() == y.to_bits()),
                    "{m}x{k}x{n} on {simd:?} with {threads} threads"
                );
            }
        }
    }

    /// Magnitudes made while packing (`Operand::Abs`, `Operand::AbsPlus`) give the bits of
    /// the matmul of stored magnitudes, with threads and on every instruction set.
    #[test]
    fn derived_operands_match_stored_copies() {
        let (m, k, n) = (131, 600, 97);
        let a = values(m * k, 7);
        let b = values(k * n, 8);
        let ea: Vec<f32> = values(m * k, 9).iter().map(|x| x.abs() * 1e-3).collect();
        let eb: Vec<f32> = values(k * n, 10).iter().map(|x| x.abs() * 1e-3).collect();
        let abs = |x: &[f32]| x.iter().map(|v| v.abs()).collect::<Vec<_>>();
        let plus = |x: &[f32], e: &[f32]| {
            x.iter()
                .zip(e)
                .map(|(v, e)| v.abs() + e)
                .collect::<Vec<_>>()
        };
        let cases = [
            (abs(&a), abs(&b), Operand::Abs(&a), Operand::Abs(&b)),
            (
                plus(&a, &ea),
                plus(&b, &eb),
                Operand::AbsPlus(&a, &ea),
                Operand::AbsPlus(&b, &eb),
            ),
        ];
        for (sa, sb, oa, ob) in cases {
            let mut want = vec![0.0; m * n];
            matmul_scalar(m, k, n, &sa, &sb, &mut want);
            for simd in [Simd::Baseline, Simd::Avx2, Simd::best()] {
                for threads in [1, 2] {
                    let mut got = vec![f32::NAN; m * n];
                    matmul_of(simd, threads, m, k, n, oa, ob, &mut got);
                    assert!(want
                        .iter()
                        .zip(&got)
                        .all(|(x, y)| x.to_bits() == y.to_bits()));
                }
            }
        }
    }
}
