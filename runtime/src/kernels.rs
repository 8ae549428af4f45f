//! The Tensor engine's matmul inner kernel: a register-blocked, vectorised micro-kernel over
//! packed f32 operands, and persistent helper threads (one per further core) that share its
//! work.
//!
//! The interpreter spends nearly all of a matmul-heavy program's time here, so this is the
//! one place that is tuned for the host. The contract it keeps is the ISA's: every output
//! element starts from its initial value (+0.0, or the PSUM value when accumulating) and
//! adds `stationary[k, m] * moving[k, n]` for `k = 0, 1, .., K - 1` in order, each product
//! and each sum rounded to f32 as unfused arithmetic rounds them. The kernel therefore
//! vectorises across `n`
//! only (each SIMD lane is one output element with its own sequential sum) and blocks over
//! `m` and `n` for register and cache reuse; the `k` loop is never split or reordered.
//!
//! Layout. A [`Job`] holds the operands packed for the micro-kernel: the stationary matrix
//! in blocks of [`MR`] columns (`[m_block][k][MR]`), the moving matrix in panels of [`NR`]
//! columns (`[n_panel][k][NR]`), and the output in the same column panels
//! (`[n_panel][m_block * MR][NR]`), zero-padded to whole blocks. Padding lanes compute
//! values that are never read back, and no output element depends on another's lanes.
//!
//! Paths. [`Path::Avx512`] and [`Path::Avx`] are hand-written micro-kernels (16 and 8
//! lanes), chosen at run time from what the host has; the portable path is plain Rust with
//! the same blocking, for every other host. All compute IEEE binary32 products and sums of
//! the same operands in the same order, so they agree bit for bit (NaN payloads aside,
//! which the store to memory makes canonical). The SIMD paths multiply and then add, except
//! when every product of the instruction's operands is exact in f32 ([`exact`]: bf16 or
//! FP8 values of ordinary magnitude, noted while packing): then a fused multiply-add rounds
//! the same sum once, as the unfused add does, and the FMA kernels run, at half the issue
//! slots on hosts whose multiply and add share the FMA ports.
//!
//! Threads. Every output panel is computed by exactly one thread, start to finish, so the
//! result does not depend on how panels are shared out. A [`Pool`] keeps its helper threads
//! (one per core beyond the caller's, at most [`MAX_HELPERS`]) asleep between instructions;
//! for a large enough matmul the calling thread posts the job, every thread claims panels
//! from an atomic counter, and the caller then retracts the job and waits only for panels
//! helpers have actually claimed. A helper that is slow to wake (a busy host) therefore
//! never delays the caller by more than one panel.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;

/// Rows of `m` per micro-kernel block: the broadcast stationary values.
pub const MR: usize = 4;

/// Columns of `n` per panel: two 8-lane vectors of accumulators per row.
pub const NR: usize = 16;

/// Below this many multiply-adds (`m * n * k`, padded) a matmul runs on the calling
/// thread alone: waking the helpers costs more than it saves.
pub(crate) const PARALLEL_MIN_MACS: usize = 1 << 20;

/// Which micro-kernel implementation runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Path {
    /// Plain Rust, any host.
    Portable,
    /// AVX intrinsics (8-lane f32 multiply and add, fused only where that is exact: see
    /// [`Job::exact_products`]); x86 hosts with AVX (the fused form needs FMA too).
    Avx,
    /// AVX-512 intrinsics (16-lane, the same rule for fusing); x86 hosts with AVX-512F.
    Avx512,
}

impl Path {
    /// The fastest path this host supports, unless the environment variable
    /// `TESSERA_SIMD` limits it: `scalar` forces the portable path (the determinism tests
    /// compare them), `avx2` the AVX one on an AVX-512 host.
    pub fn best() -> Path {
        match std::env::var("TESSERA_SIMD").as_deref() {
            Ok("scalar") => return Path::Portable,
            Ok("avx2") | Ok("avx") => {}
            _ if Path::Avx512.is_available() => return Path::Avx512,
            _ => {}
        }
        if Path::Avx.is_available() {
            Path::Avx
        } else {
            Path::Portable
        }
    }

    /// Whether this host can run the path.
    pub fn is_available(self) -> bool {
        match self {
            Path::Portable => true,
            #[cfg(any(target_arch = "x86", target_arch = "x86_64"))]
            Path::Avx => std::is_x86_feature_detected!("avx"),
            #[cfg(not(any(target_arch = "x86", target_arch = "x86_64")))]
            Path::Avx => false,
            #[cfg(any(target_arch = "x86", target_arch = "x86_64"))]
            Path::Avx512 => std::is_x86_feature_detected!("avx512f"),
            #[cfg(not(any(target_arch = "x86", target_arch = "x86_64")))]
            Path::Avx512 => false,
        }
    }

    /// Whether this path fuses multiply and add where the products are exact: the AVX path
    /// on hosts with FMA, and AVX-512 (whose base set has it); never when the environment
    /// variable `TESSERA_SIMD=nofma` says so (to measure and test the unfused kernels).
    pub fn fuses(self) -> bool {
        static NO_FMA: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
        if *NO_FMA.get_or_init(|| std::env::var("TESSERA_SIMD").is_ok_and(|v| v == "nofma")) {
            return false;
        }
        match self {
            Path::Portable => false,
            #[cfg(any(target_arch = "x86", target_arch = "x86_64"))]
            Path::Avx => std::is_x86_feature_detected!("fma"),
            #[cfg(not(any(target_arch = "x86", target_arch = "x86_64")))]
            Path::Avx => false,
            Path::Avx512 => true,
        }
    }
}

/// What the exactness of products depends on, gathered over one operand's values as they
/// are packed: whether every value has at most 8 significant bits (its low 16 bits are
/// zero: a bf16 or FP8 value), and the smallest and largest biased exponents of its
/// nonzero finite values (subnormals count as 1).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Stats {
    low_bits: u32,
    min_exp: u32,
    max_exp: u32,
}

impl Stats {
    const EMPTY: Stats = Stats {
        low_bits: 0,
        min_exp: 255,
        max_exp: 0,
    };

    /// Adds the values of `row`. Branch-free, so that the compiler vectorises it.
    fn scan(&mut self, row: &[f32]) {
        let (mut low, mut lo, mut hi) = (self.low_bits, self.min_exp, self.max_exp);
        for &v in row {
            let b = v.to_bits();
            low |= b & 0xFFFF;
            let e = (b >> 23) & 0xFF;
            let counts = (b & 0x7FFF_FFFF) != 0 && e != 255;
            lo = lo.min(if counts { e.max(1) } else { 255 });
            hi = hi.max(if counts { e.max(1) } else { 0 });
        }
        *self = Stats {
            low_bits: low,
            min_exp: lo,
            max_exp: hi,
        };
    }
}

/// Whether every product of a value of `a` and a value of `b` is exact in f32 ([`exact`]),
/// so that a fused multiply-add gives the bits of a multiply and then an add: for other
/// matmul kernels that keep the ISA's (or the language's) order, like the reference
/// evaluator's.
pub fn products_exact(a: &[f32], b: &[f32]) -> bool {
    let (mut sa, mut sb) = (Stats::EMPTY, Stats::EMPTY);
    sa.scan(a);
    sb.scan(b);
    exact(&sa, &sb)
}

/// What [`products_exact`] gathers over one operand, for callers that produce an operand's
/// values piece by piece (the reference evaluator's bound matmuls of magnitudes, which are
/// never stored whole).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ExactScan(Stats);

impl Default for ExactScan {
    fn default() -> ExactScan {
        ExactScan(Stats::EMPTY)
    }
}

impl ExactScan {
    /// Adds the values of `piece`.
    pub fn scan(&mut self, piece: &[f32]) {
        self.0.scan(piece);
    }

    /// Whether every product of a value scanned by `self` and one scanned by `other` is
    /// exact in f32, as [`products_exact`] says of whole operands.
    pub fn products_exact(&self, other: &ExactScan) -> bool {
        exact(&self.0, &other.0)
    }
}

/// Whether every product `s * v` of a value of the first operand and one of the second is
/// exact in f32 (neither rounded, nor out of range), so that a fused multiply-add rounds
/// exactly once where a multiply and then an add would round the same sum, and gives the
/// same bits. Both operands' values have at most 8 significant bits (their low 16 bits are
/// zero), so a product has at most 16; with biased exponents `E` (subnormals 1) its lowest
/// bit weighs at least `2^(Es + Ev - 268)`, which f32 holds from `2^-149` up, so
/// `Es + Ev >= 119` rules out underflow; a product is below `2^(Es + Ev - 252)`, under
/// `2^128` when `Es + Ev <= 379`. Zeros, infinities and NaNs take no part: their products
/// are the same fused or not (a NaN's payload aside, which the store to memory makes
/// canonical).
fn exact(s: &Stats, v: &Stats) -> bool {
    if s.low_bits != 0 || v.low_bits != 0 {
        return false;
    }
    if s.max_exp == 0 || v.max_exp == 0 {
        // One operand has no nonzero finite value: every product is a zero, an infinity
        // or a NaN.
        return true;
    }
    s.min_exp + v.min_exp >= 119 && s.max_exp + v.max_exp <= 379
}

/// One matmul's operands, packed for the micro-kernel, and its output in column panels.
#[derive(Debug)]
pub struct Job {
    path: Path,
    k: usize,
    m: usize,
    n: usize,
    m_blocks: usize,
    n_panels: usize,
    /// Stationary, `[m_block][k][MR]`.
    st: Vec<f32>,
    /// Moving, `[n_panel][k][NR]`.
    mv: Vec<f32>,
    /// Output panels, each `[m_blocks * MR][NR]`; a mutex each so that two threads can
    /// fill different panels (every lock is uncontended: a panel is claimed once).
    out: Vec<Mutex<Vec<f32>>>,
    /// The next panel to claim.
    next: AtomicUsize,
    /// The operands' values, for [`Job::exact_products`].
    st_stats: Stats,
    mv_stats: Stats,
}

impl Default for Job {
    fn default() -> Job {
        Job::new(Path::best())
    }
}

impl Job {
    /// An empty job that will run on `path`. Panics if the host cannot run `path`.
    pub fn new(path: Path) -> Job {
        assert!(
            path.is_available(),
            "{path:?} is not available on this host"
        );
        Job {
            path,
            k: 0,
            m: 0,
            n: 0,
            m_blocks: 0,
            n_panels: 0,
            st: Vec::new(),
            mv: Vec::new(),
            out: Vec::new(),
            next: AtomicUsize::new(0),
            st_stats: Stats::EMPTY,
            mv_stats: Stats::EMPTY,
        }
    }

    /// Whether every product of the operands set so far is exact in f32, so that the
    /// kernel may fuse multiply and add without changing a bit (see [`exact`]): true for
    /// bf16 and FP8 operands of ordinary magnitudes.
    pub fn exact_products(&self) -> bool {
        exact(&self.st_stats, &self.mv_stats)
    }

    /// Prepares for a `[m, n]` output over `k` steps. Every operand row and every output
    /// row must then be set before [`Job::run`]; padding is filled as rows are set.
    pub fn reset(&mut self, k: usize, m: usize, n: usize) {
        self.k = k;
        self.m = m;
        self.n = n;
        self.m_blocks = m.div_ceil(MR);
        self.n_panels = n.div_ceil(NR);
        self.st.resize(self.m_blocks * k * MR, 0.0);
        self.mv.resize(self.n_panels * k * NR, 0.0);
        let panel = self.m_blocks * MR * NR;
        self.out
            .resize_with(self.n_panels, || Mutex::new(Vec::new()));
        for p in &mut self.out {
            p.get_mut()
                .unwrap_or_else(PoisonError::into_inner)
                .resize(panel, 0.0);
        }
        *self.next.get_mut() = 0;
        self.st_stats = Stats::EMPTY;
        self.mv_stats = Stats::EMPTY;
    }

    /// The padded number of multiply-adds, a measure of the work.
    pub fn macs(&self) -> usize {
        self.m_blocks * MR * self.n_panels * NR * self.k
    }

    /// Sets row `ki` of the stationary matrix (`m` values, one per output row).
    pub fn set_stationary_row(&mut self, ki: usize, row: &[f32]) {
        let k = self.k;
        self.st_stats.scan(&row[..self.m]);
        let st = &mut self.st;
        scatter::<MR>(&row[..self.m], |mb, g| {
            st[(mb * k + ki) * MR..][..MR].copy_from_slice(&g)
        });
    }

    /// Sets row `ki` of the moving matrix (`n` values, one per output column).
    pub fn set_moving_row(&mut self, ki: usize, row: &[f32]) {
        let k = self.k;
        self.mv_stats.scan(&row[..self.n]);
        let mv = &mut self.mv;
        scatter::<NR>(&row[..self.n], |nb, g| {
            mv[(nb * k + ki) * NR..][..NR].copy_from_slice(&g)
        });
    }

    /// Sets every output element (padding included) to +0.0: a matmul that does not
    /// accumulate.
    pub fn zero_output(&mut self) {
        for p in &mut self.out {
            p.get_mut()
                .unwrap_or_else(PoisonError::into_inner)
                .fill(0.0);
        }
    }

    /// Sets output row `mi` (`n` values): the initial values of an accumulating matmul.
    /// Padding columns are zeroed, and padding rows along with the last real row.
    pub fn set_output_row(&mut self, mi: usize, row: &[f32]) {
        let out = &mut self.out;
        scatter::<NR>(&row[..self.n], |nb, g| {
            let panel = out[nb].get_mut().unwrap_or_else(PoisonError::into_inner);
            panel[mi * NR..][..NR].copy_from_slice(&g)
        });
        if mi + 1 == self.m {
            let (m, m_pad) = (self.m, self.m_blocks * MR);
            for p in out.iter_mut() {
                p.get_mut().unwrap_or_else(PoisonError::into_inner)[m * NR..m_pad * NR].fill(0.0);
            }
        }
    }

    /// Copies output row `mi` (`n` values) into `row`.
    pub fn output_row(&mut self, mi: usize, row: &mut [f32]) {
        let row = &mut row[..self.n];
        let mut chunks = row.chunks_exact_mut(NR);
        let mut panels = self.out.iter_mut();
        for (vals, panel) in (&mut chunks).zip(&mut panels) {
            let panel = panel.get_mut().unwrap_or_else(PoisonError::into_inner);
            vals.copy_from_slice(&panel[mi * NR..][..NR]);
        }
        let rest = chunks.into_remainder();
        if let Some(panel) = panels.next().filter(|_| !rest.is_empty()) {
            let panel = panel.get_mut().unwrap_or_else(PoisonError::into_inner);
            rest.copy_from_slice(&panel[mi * NR..][..rest.len()]);
        }
    }

    /// Computes the whole output on the calling thread.
    pub fn run(&mut self) {
        *self.next.get_mut() = 0;
        self.claim_panels();
    }

    /// Claims and computes panels until none is left; safe to call from several threads
    /// at once, each panel being computed by exactly one of them.
    fn claim_panels(&self) {
        let fused = self.path.fuses() && self.exact_products();
        loop {
            let p = self.next.fetch_add(1, Ordering::Relaxed);
            if p >= self.n_panels {
                return;
            }
            let mut out = lock(&self.out[p]);
            let mv = &self.mv[p * self.k * NR..][..self.k * NR];
            panel(
                self.path,
                fused,
                self.k,
                self.m_blocks,
                &self.st,
                mv,
                &mut out,
            );
        }
    }
}

/// Calls `put(i, group)` for the groups of `W` values of `row`, in order, the last group
/// padded with zeros. Groups are fixed-size arrays, so the copies are a few vector moves
/// rather than `memcpy` calls.
fn scatter<const W: usize>(row: &[f32], mut put: impl FnMut(usize, [f32; W])) {
    let mut chunks = row.chunks_exact(W);
    let mut i = 0;
    for vals in &mut chunks {
        let mut g = [0.0f32; W];
        g.copy_from_slice(vals);
        put(i, g);
        i += 1;
    }
    let rest = chunks.remainder();
    if !rest.is_empty() {
        let mut g = [0.0f32; W];
        g[..rest.len()].copy_from_slice(rest);
        put(i, g);
    }
}

/// Locks a mutex, ignoring poisoning (the data is plain numbers, always consistent).
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Computes one output panel: `out[mb * MR + r][j] += sum_k st[mb][k][r] * mv[k][j]`, for
/// every block `mb`, `k` in order. `fused`: the products are exact (the caller checked
/// [`Job::exact_products`] and [`Path::fuses`]), so the SIMD paths may use fused
/// multiply-adds.
fn panel(
    path: Path,
    fused: bool,
    k: usize,
    m_blocks: usize,
    st: &[f32],
    mv: &[f32],
    out: &mut [f32],
) {
    assert!(st.len() >= m_blocks * k * MR && mv.len() >= k * NR);
    assert!(out.len() >= m_blocks * MR * NR);
    // SAFETY (every arm): `Job::new` checked that the host has the path's instruction set,
    // `fused` implies `Path::fuses` (FMA for the AVX path), and the asserts above are the
    // bounds the kernels require.
    match (path, fused) {
        #[cfg(any(target_arch = "x86", target_arch = "x86_64"))]
        (Path::Avx, false) => unsafe { panel_avx(k, m_blocks, st, mv, out) },
        #[cfg(any(target_arch = "x86", target_arch = "x86_64"))]
        (Path::Avx, true) => unsafe { panel_fma(k, m_blocks, st, mv, out) },
        #[cfg(any(target_arch = "x86", target_arch = "x86_64"))]
        (Path::Avx512, false) => unsafe { panel_avx512(k, m_blocks, st, mv, out) },
        #[cfg(any(target_arch = "x86", target_arch = "x86_64"))]
        (Path::Avx512, true) => unsafe { panel_avx512_fma(k, m_blocks, st, mv, out) },
        _ => {
            for mb in 0..m_blocks {
                block_portable(
                    &st[mb * k * MR..][..k * MR],
                    &mv[..k * NR],
                    &mut out[mb * MR * NR..][..MR * NR],
                );
            }
        }
    }
}

/// The portable micro-kernel: one `MR x NR` block of accumulators over all of `k`.
/// `a` is `[k][MR]`, `b` is `[k][NR]`, `c` is `[MR][NR]`.
fn block_portable(a: &[f32], b: &[f32], c: &mut [f32]) {
    let mut acc = [[0.0f32; NR]; MR];
    for (row, src) in acc.iter_mut().zip(c.chunks_exact(NR)) {
        row.copy_from_slice(src);
    }
    for (av, bv) in a.chunks_exact(MR).zip(b.chunks_exact(NR)) {
        for (row, &s) in acc.iter_mut().zip(av) {
            for (x, &y) in row.iter_mut().zip(bv) {
                // A separate multiply and add: Rust never contracts them into an FMA.
                *x += s * y;
            }
        }
    }
    for (row, dst) in acc.iter().zip(c.chunks_exact_mut(NR)) {
        dst.copy_from_slice(row);
    }
}

/// Defines an AVX micro-kernel over every block of one panel: for each `MR x NR` block,
/// the accumulators stay in eight registers while `k` streams; each step broadcasts the
/// `MR` stationary values and multiply-adds two vectors of the moving row with `$madd`
/// (a multiply then an add, or a fused multiply-add where the products are exact).
macro_rules! avx_panel {
    ($(#[$doc:meta])* $name:ident, $features:literal, $madd:expr) => {
        $(#[$doc])*
        ///
        /// # Safety
        ///
        /// The host must have the function's target features, and
        /// `st.len() >= m_blocks * k * MR`, `mv.len() >= k * NR`,
        /// `out.len() >= m_blocks * MR * NR`.
        #[cfg(any(target_arch = "x86", target_arch = "x86_64"))]
        #[target_feature(enable = $features)]
        unsafe fn $name(k: usize, m_blocks: usize, st: &[f32], mv: &[f32], out: &mut [f32]) {
            #[cfg(target_arch = "x86")]
            use std::arch::x86::*;
            #[cfg(target_arch = "x86_64")]
            use std::arch::x86_64::*;

            const V: usize = NR / 8;
            let b = mv.as_ptr();
            for mb in 0..m_blocks {
                // Every pointer below stays inside the slices by the function's bounds
                // contract: `a + kk * MR + r < st.len()`, `b + kk * NR + 8 * v + 8 <=
                // mv.len()` and `c + r * NR + 8 * v + 8 <= out.len()`.
                let a = st.as_ptr().add(mb * k * MR);
                let c = out.as_mut_ptr().add(mb * MR * NR);
                let mut acc = [[_mm256_setzero_ps(); V]; MR];
                for (r, row) in acc.iter_mut().enumerate() {
                    for (v, x) in row.iter_mut().enumerate() {
                        *x = _mm256_loadu_ps(c.add(r * NR + 8 * v));
                    }
                }
                for kk in 0..k {
                    let bk = b.add(kk * NR);
                    let mut bv = [_mm256_setzero_ps(); V];
                    for (v, x) in bv.iter_mut().enumerate() {
                        *x = _mm256_loadu_ps(bk.add(8 * v));
                    }
                    for (r, row) in acc.iter_mut().enumerate() {
                        let s = _mm256_broadcast_ss(&*a.add(kk * MR + r));
                        for (x, &y) in row.iter_mut().zip(&bv) {
                            *x = $madd(*x, s, y);
                        }
                    }
                }
                for (r, row) in acc.iter().enumerate() {
                    for (v, x) in row.iter().enumerate() {
                        _mm256_storeu_ps(c.add(r * NR + 8 * v), *x);
                    }
                }
            }
        }
    };
}

avx_panel!(
    /// The AVX micro-kernel with a multiply, then an add (never fused).
    panel_avx,
    "avx",
    |x, s, y| _mm256_add_ps(x, _mm256_mul_ps(s, y))
);

avx_panel!(
    /// The AVX micro-kernel with fused multiply-adds, for exact products only.
    panel_fma,
    "avx,fma",
    |x, s, y| _mm256_fmadd_ps(s, y, x)
);

/// Defines an AVX-512 micro-kernel over every block of one panel: a panel row of `NR`
/// values is one 16-lane vector, and [`G512`] blocks (`G512 * MR` output rows) are
/// computed together so that enough independent sums are in flight; each step loads the
/// moving row once, broadcasts each row's stationary value and multiply-adds with `$madd`.
macro_rules! avx512_panel {
    ($(#[$doc:meta])* $name:ident, $madd:expr) => {
        $(#[$doc])*
        ///
        /// # Safety
        ///
        /// The host must have AVX-512F, and `st.len() >= m_blocks * k * MR`,
        /// `mv.len() >= k * NR`, `out.len() >= m_blocks * MR * NR`.
        #[cfg(any(target_arch = "x86", target_arch = "x86_64"))]
        #[target_feature(enable = "avx512f")]
        unsafe fn $name(k: usize, m_blocks: usize, st: &[f32], mv: &[f32], out: &mut [f32]) {
            #[cfg(target_arch = "x86")]
            use std::arch::x86::*;
            #[cfg(target_arch = "x86_64")]
            use std::arch::x86_64::*;

            /// `G` consecutive blocks from block `mb`: `G * MR` accumulators.
            #[inline(always)]
            unsafe fn blocks<const G: usize>(
                k: usize,
                mb: usize,
                st: *const f32,
                b: *const f32,
                out: *mut f32,
            ) {
                // In bounds by the caller's contract: `mb + G <= m_blocks`, so
                // `a[g] + kk * MR + r < st.len()`, `b + kk * NR + NR <= mv.len()` and
                // `c + (g * MR + r) * NR + NR <= out.len()`.
                let c = out.add(mb * MR * NR);
                let mut a = [st; G];
                for (g, p) in a.iter_mut().enumerate() {
                    *p = st.add((mb + g) * k * MR);
                }
                let mut acc = [[_mm512_setzero_ps(); MR]; G];
                for (g, rows) in acc.iter_mut().enumerate() {
                    for (r, x) in rows.iter_mut().enumerate() {
                        *x = _mm512_loadu_ps(c.add((g * MR + r) * NR));
                    }
                }
                for kk in 0..k {
                    let y = _mm512_loadu_ps(b.add(kk * NR));
                    for (g, rows) in acc.iter_mut().enumerate() {
                        for (r, x) in rows.iter_mut().enumerate() {
                            let s = _mm512_set1_ps(*a[g].add(kk * MR + r));
                            *x = $madd(*x, s, y);
                        }
                    }
                }
                for (g, rows) in acc.iter().enumerate() {
                    for (r, x) in rows.iter().enumerate() {
                        _mm512_storeu_ps(c.add((g * MR + r) * NR), *x);
                    }
                }
            }

            const _: () = assert!(NR == 16, "one AVX-512 vector per panel row");
            let (st, b, out) = (st.as_ptr(), mv.as_ptr(), out.as_mut_ptr());
            let mut mb = 0;
            while mb + G512 <= m_blocks {
                blocks::<G512>(k, mb, st, b, out);
                mb += G512;
            }
            while mb < m_blocks {
                blocks::<1>(k, mb, st, b, out);
                mb += 1;
            }
        }
    };
}

/// Blocks the AVX-512 kernels compute together: twelve accumulators of 16 lanes.
const G512: usize = 3;

avx512_panel!(
    /// The AVX-512 micro-kernel with a multiply, then an add (never fused).
    panel_avx512,
    |x, s, y| _mm512_add_ps(x, _mm512_mul_ps(s, y))
);

avx512_panel!(
    /// The AVX-512 micro-kernel with fused multiply-adds, for exact products only.
    panel_avx512_fma,
    |x, s, y| _mm512_fmadd_ps(s, y, x)
);

/// The most helper threads a [`Pool`] starts on its own: an instruction's matmul has at
/// most 512 / NR panels, and more threads than that share out nothing.
pub const MAX_HELPERS: usize = 7;

/// The threads the interpreter computes with: `TESSERA_THREADS` if set to a positive
/// number, else the host's available parallelism. Results and cycles do not depend on it.
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

/// Helper threads that share the panels of large matmuls with the calling thread.
#[derive(Debug)]
pub struct Pool {
    shared: Arc<Shared>,
    handles: Vec<JoinHandle<()>>,
}

#[derive(Debug, Default)]
struct Shared {
    state: Mutex<State>,
    /// Signalled when a job is posted or the pool shuts down.
    wake: Condvar,
    /// Signalled when a helper has finished a job it took.
    done: Condvar,
}

#[derive(Debug, Default)]
struct State {
    /// The posted job, until the caller retracts it.
    job: Option<Arc<Job>>,
    /// Counts the posted jobs, so that a helper takes each one at most once.
    posted: u64,
    /// Helpers holding a job.
    busy: usize,
    quit: bool,
}

impl Pool {
    /// A pool with one helper per thread beyond the calling one (at most [`MAX_HELPERS`]),
    /// or `None` for a single thread or when no thread starts. The threads are
    /// [`threads`]: the host's cores unless `TESSERA_THREADS` says otherwise.
    pub fn new() -> Option<Pool> {
        Pool::with_helpers(threads().saturating_sub(1).min(MAX_HELPERS))
    }

    /// A pool with `helpers` helper threads (as many as start), or `None` for none.
    pub fn with_helpers(helpers: usize) -> Option<Pool> {
        let shared = Arc::new(Shared::default());
        let handles: Vec<JoinHandle<()>> = (0..helpers)
            .map_while(|_| {
                let theirs = Arc::clone(&shared);
                std::thread::Builder::new()
                    .name("tessera-matmul".into())
                    .spawn(move || helper(&theirs))
                    .ok()
            })
            .collect();
        if handles.is_empty() {
            return None;
        }
        Some(Pool { shared, handles })
    }

    /// The helper threads running.
    pub fn helpers(&self) -> usize {
        self.handles.len()
    }

    /// Computes `job`, sharing its panels with the helpers when it is large enough. On
    /// return no helper holds a reference to `job`, so `Arc::get_mut` succeeds.
    pub fn run(&self, job: &mut Arc<Job>) {
        if job.macs() < PARALLEL_MIN_MACS || job.n_panels < 2 {
            if let Some(j) = Arc::get_mut(job) {
                j.run();
                return;
            }
        }
        job.next.store(0, Ordering::Relaxed);
        {
            let mut state = lock(&self.shared.state);
            state.job = Some(Arc::clone(job));
            state.posted = state.posted.wrapping_add(1);
        }
        self.shared.wake.notify_all();
        job.claim_panels();
        let mut state = lock(&self.shared.state);
        // Retract the job from helpers that never took it; wait for the others' last panels.
        state.job = None;
        while state.busy > 0 {
            state = self
                .shared
                .done
                .wait(state)
                .unwrap_or_else(PoisonError::into_inner);
        }
    }
}

/// A helper thread's loop: take each posted job once, compute panels until none is left,
/// drop the job and report, sleep.
fn helper(shared: &Shared) {
    let mut state = lock(&shared.state);
    let mut seen = state.posted;
    loop {
        if state.quit {
            return;
        }
        if state.posted != seen {
            seen = state.posted;
            if let Some(job) = state.job.clone() {
                state.busy += 1;
                drop(state);
                job.claim_panels();
                drop(job);
                state = lock(&shared.state);
                state.busy -= 1;
                shared.done.notify_all();
                continue;
            }
        }
        state = shared
            .wake
            .wait(state)
            .unwrap_or_else(PoisonError::into_inner);
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        lock(&self.shared.state).quit = true;
        self.shared.wake.notify_all();
        for h in self.handles.drain(..) {
            let _ = h.join();
        }
    }
}

/// Computes `acc[m][n] += sum_k stationary[k][m] * moving[k][n]` (all row-major; `acc`
/// holds the initial values) on `path`, on the calling thread: the kernel on plain
/// matrices, for tests and measurements.
pub fn matmul(
    path: Path,
    k: usize,
    m: usize,
    n: usize,
    stationary: &[f32],
    moving: &[f32],
    acc: &mut [f32],
) {
    let mut job = Job::new(path);
    job.reset(k, m, n);
    for ki in 0..k {
        job.set_stationary_row(ki, &stationary[ki * m..][..m]);
        job.set_moving_row(ki, &moving[ki * n..][..n]);
    }
    for mi in 0..m {
        job.set_output_row(mi, &acc[mi * n..][..n]);
    }
    job.run();
    for mi in 0..m {
        job.output_row(mi, &mut acc[mi * n..][..n]);
    }
}
