//! Faulting a fresh HBM image's pages in on another core, while the caller binds inputs and
//! runs the program.
//!
//! A large program's HBM image is allocated zeroed, and the operating system gives it pages
//! only as they are first written: the interpreter's thread then spends its time in the
//! kernel, zeroing each page where a DMA first stores to it (a third of its time at
//! Llama-layer sizes, more on virtual machines, whose page faults are dear). A
//! [`Prefault`] asks the kernel to make the pages present ahead of use
//! (`MADV_POPULATE_WRITE`, Linux 5.14 and later) from a thread of its own, a piece at a
//! time, so that the zeroing happens on a core the interpreter is not using. It changes no
//! byte: a page already present is left as it is, and a missing one becomes the zero page
//! it would have become on first write. Elsewhere, or where the kernel refuses, it does
//! nothing. The pages it makes present are those the run would touch anyway, unless the
//! program leaves part of its HBM unwritten.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;

/// Images smaller than this are left to fault on first use: a thread costs more.
const MIN_BYTES: usize = 64 << 20;

/// How much one request makes present, so that stopping waits for at most one piece.
const PIECE: usize = 32 << 20;

/// The thread making an image's pages present; stopped and joined on drop, before the
/// image can be freed.
pub(crate) struct Prefault {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Prefault {
    /// Starts making the pages of `image` present, from its end backwards (the inputs at
    /// its start are being written by the caller anyway). `None` for a small image, off
    /// Linux, or when no thread can be started.
    pub(crate) fn start(image: &mut [u8]) -> Option<Prefault> {
        if image.len() < MIN_BYTES || !cfg!(target_os = "linux") {
            return None;
        }
        let (start, len) = (image.as_mut_ptr() as usize, image.len());
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let thread = std::thread::Builder::new()
            .name("tessera-prefault".into())
            .spawn(move || populate(start, len, &flag))
            .ok()?;
        Some(Prefault {
            stop,
            thread: Some(thread),
        })
    }
}

impl Drop for Prefault {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Makes the pages of `start..start + len` present, piece by piece from the end, until
/// done, told to stop, or refused.
#[cfg(target_os = "linux")]
fn populate(start: usize, len: usize, stop: &AtomicBool) {
    const PAGE: usize = 4096;
    let (lo, hi) = (start.div_ceil(PAGE) * PAGE, (start + len) / PAGE * PAGE);
    let mut end = hi;
    while end > lo && !stop.load(Ordering::Relaxed) {
        let from = end.saturating_sub(PIECE).max(lo);
        // SAFETY: `from..end` lies within the image, which the owner of this `Prefault`
        // keeps allocated until it has stopped and joined this thread. MADV_POPULATE_WRITE
        // only makes pages present (a missing anonymous page becomes a zero page, as a first
        // write would make it); it reads and writes no byte, so the caller's concurrent
        // writes are unaffected.
        let refused = unsafe {
            libc::madvise(
                from as *mut libc::c_void,
                end - from,
                libc::MADV_POPULATE_WRITE,
            )
        } != 0;
        if refused {
            return;
        }
        end = from;
    }
}

#[cfg(not(target_os = "linux"))]
fn populate(_start: usize, _len: usize, _stop: &AtomicBool) {}

/// A [`Prefault`] held by a loaded machine: a clone of the machine (a new image) has none.
#[derive(Default)]
pub(crate) struct Slot(pub(crate) Option<Prefault>);

impl Clone for Slot {
    fn clone(&self) -> Slot {
        Slot(None)
    }
}

impl std::fmt::Debug for Slot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self.0 {
            Some(_) => "Slot(running)",
            None => "Slot(none)",
        })
    }
}

#[cfg(test)]
mod tests {
    /// Making the pages present changes no byte: the values written before, during and
    /// after it are all there, and every other byte is still zero.
    #[test]
    fn populating_changes_no_byte() {
        let len = super::MIN_BYTES + 3 * 4096 + 17;
        let mut image = vec![0u8; len];
        for i in (0..len).step_by(1 << 20) {
            image[i] = 1;
        }
        let running = super::Prefault::start(&mut image);
        assert_eq!(running.is_some(), cfg!(target_os = "linux"));
        for i in (7..len).step_by(1 << 19) {
            image[i] = 2;
        }
        drop(running);
        image[len - 1] = 3;
        for (i, &b) in image.iter().enumerate() {
            let want = if i == len - 1 {
                3
            } else if i % (1 << 19) == 7 {
                2
            } else if i % (1 << 20) == 0 {
                1
            } else {
                0
            };
            assert_eq!(b, want, "byte {i}");
        }
        // A small image is left alone.
        assert!(super::Prefault::start(&mut [0u8; 4096]).is_none());
    }
}
