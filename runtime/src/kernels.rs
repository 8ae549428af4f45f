//! The Tensor engine's matmul inner kernel: a register-blocked, vectorised micro-kernel over
//! packed f32 operands, and persistent helper threads (one per further core) that share its
//! work.
//!
//! The interpreter spends nearly all of a matmul-heavy program's time here, so this is the
//! one place that is tuned for the host. The contract it keeps is the ISA's: every output
//! element starts from its initial value (+0.0, or the PSUM value when accumulating) and
//! adds `stationary[k, m] * moving[k, n]` for `k = 0, 1, .., K - 1` in order, each product
//! and each sum rounded to f32, never fused. The kernel therefore vectorises across `n`
//! only (each SIMD lane is one output element with its own sequential sum) and blocks over
//! `m` and `n` for register and cache reuse; the `k` loop is never split or reordered.
//!
//! Layout. A [`Job`] holds the operands packed for the micro-kernel: the stationary matrix
//! in blocks of [`MR`] columns (`[m_block][k][MR]`), the moving matrix in panels of [`NR`]
//! columns (`[n_panel][k][NR]`), and the output in the same column panels
//! (`[n_panel][m_block * MR][NR]`), zero-padded to whole blocks. Padding lanes compute
//! values that are never read back, and no output element depends on another's lanes.
//!
//! Paths. [`Path::Avx`] is a hand-written AVX micro-kernel (`_mm256_mul_ps` then
//! `_mm256_add_ps`, never an FMA), chosen at run time when the host has AVX; the portable
//! path is plain Rust with the same blocking, for every other host. Both compute IEEE
//! binary32 products and sums of the same operands in the same order, so they agree bit
//! for bit (NaN payloads aside, which the store to memory makes canonical).
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
    /// AVX intrinsics (8-lane f32 multiply and add, never fused); x86 hosts with AVX.
    Avx,
}

impl Path {
    /// The fastest path this host supports, unless the environment variable
    /// `TESSERA_SIMD=scalar` forces the portable one (the determinism tests compare them).
    pub fn best() -> Path {
        if std::env::var("TESSERA_SIMD").is_ok_and(|v| v == "scalar") {
            return Path::Portable;
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
        }
    }
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
        }
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
    }

    /// The padded number of multiply-adds, a measure of the work.
    pub fn macs(&self) -> usize {
        self.m_blocks * MR * self.n_panels * NR * self.k
    }

    /// Sets row `ki` of the stationary matrix (`m` values, one per output row).
    pub fn set_stationary_row(&mut self, ki: usize, row: &[f32]) {
        let k = self.k;
        let st = &mut self.st;
        scatter::<MR>(&row[..self.m], |mb, g| {
            st[(mb * k + ki) * MR..][..MR].copy_from_slice(&g)
        });
    }

    /// Sets row `ki` of the moving matrix (`n` values, one per output column).
    pub fn set_moving_row(&mut self, ki: usize, row: &[f32]) {
        let k = self.k;
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
        loop {
            let p = self.next.fetch_add(1, Ordering::Relaxed);
            if p >= self.n_panels {
                return;
            }
            let mut out = lock(&self.out[p]);
            let mv = &self.mv[p * self.k * NR..][..self.k * NR];
            panel(self.path, self.k, self.m_blocks, &self.st, mv, &mut out);
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
/// every block `mb`, `k` in order.
fn panel(path: Path, k: usize, m_blocks: usize, st: &[f32], mv: &[f32], out: &mut [f32]) {
    assert!(st.len() >= m_blocks * k * MR && mv.len() >= k * NR);
    assert!(out.len() >= m_blocks * MR * NR);
    match path {
        #[cfg(any(target_arch = "x86", target_arch = "x86_64"))]
        Path::Avx => {
            // SAFETY: `Job::new` checked that the host has AVX, and the asserts above are
            // the bounds `panel_avx` requires.
            unsafe { panel_avx(k, m_blocks, st, mv, out) }
        }
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

/// The AVX micro-kernel over every block of one panel: for each `MR x NR` block, the
/// accumulators stay in eight registers while `k` streams; each step broadcasts the `MR`
/// stationary values and multiplies, then adds, two vectors of the moving row.
///
/// # Safety
///
/// The host must have AVX, and `st.len() >= m_blocks * k * MR`, `mv.len() >= k * NR`,
/// `out.len() >= m_blocks * MR * NR`.
#[cfg(any(target_arch = "x86", target_arch = "x86_64"))]
#[target_feature(enable = "avx")]
unsafe fn panel_avx(k: usize, m_blocks: usize, st: &[f32], mv: &[f32], out: &mut [f32]) {
    #[cfg(target_arch = "x86")]
    use std::arch::x86::*;
    #[cfg(target_arch = "x86_64")]
    use std::arch::x86_64::*;

    const V: usize = NR / 8;
    let b = mv.as_ptr();
    for mb in 0..m_blocks {
        // Every pointer below stays inside the slices by the function's bounds contract:
        // `a + kk * MR + r < st.len()`, `b + kk * NR + 8 * v + 8 <= mv.len()` and
        // `c + r * NR + 8 * v + 8 <= out.len()`.
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
                    *x = _mm256_add_ps(*x, _mm256_mul_ps(s, y));
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
