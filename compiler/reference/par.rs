//! Data-parallel loops of the reference evaluator and its error bounds: an output slice is
//! cut into contiguous chunks, one per thread, and every element is computed by exactly one
//! thread from the same inputs as the sequential loop would use. No element depends on
//! another's result, so the values are the same bits whatever the thread count.

/// Below this many elements a loop runs on the calling thread alone: starting threads
/// costs more than it saves.
const PARALLEL_MIN_ELEMS: usize = 1 << 16;

/// Calls `f(start, chunk)` over contiguous chunks of `out` that cover it, where `start` is
/// the index of the chunk's first element in `out`; the chunks run on up to
/// `super::matmul::threads()` threads.
pub fn chunks<T: Send>(out: &mut [T], f: impl Fn(usize, &mut [T]) + Sync) {
    let threads = if out.len() < PARALLEL_MIN_ELEMS {
        1
    } else {
        super::matmul::threads()
    };
    if threads <= 1 {
        f(0, out);
        return;
    }
    let per = out.len().div_ceil(threads);
    std::thread::scope(|s| {
        let f = &f;
        let mut parts = out.chunks_mut(per).enumerate();
        let first = parts.next();
        for (i, part) in parts {
            s.spawn(move || f(i * per, part));
        }
        if let Some((_, part)) = first {
            f(0, part);
        }
    });
}

/// `out[i] = f(i)` for every element, in parallel chunks.
pub fn fill<T: Send>(out: &mut [T], f: impl Fn(usize) -> T + Sync) {
    chunks(out, |start, part| {
        for (j, o) in part.iter_mut().enumerate() {
            *o = f(start + j);
        }
    });
}

/// A vector of `len` elements `f(0), f(1), ..`, computed in parallel chunks.
pub fn collect<T: Send + Default + Clone>(len: usize, f: impl Fn(usize) -> T + Sync) -> Vec<T> {
    let mut out = vec![T::default(); len];
    fill(&mut out, f);
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn every_element_once_in_place() {
        for len in [0, 1, 1000, super::PARALLEL_MIN_ELEMS + 7, 300_001] {
            let got = super::collect(len, |i| i as u64 * 3);
            assert_eq!(got, (0..len as u64).map(|i| i * 3).collect::<Vec<_>>());
        }
    }
}
