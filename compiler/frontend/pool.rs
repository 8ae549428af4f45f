//! The geometry of `max_pool` and `avg_pool`: their attributes and PyTorch's rules for the
//! output size, the windows and the average's divisor, in one place, so that the checker,
//! the tensor IR's typing rules, the reference evaluator, the roofline and the tiling all
//! compute the same windows.
//!
//! PyTorch's rules (`max_pool1d/2d`, `avg_pool1d/2d`), per spatial axis of length `n` with
//! window `k`, stride `s`, padding `p` and dilation `d`:
//! - the output length is `floor((n + 2p - d(k - 1) - 1) / s) + 1`, or with `ceil_mode`
//!   the ceiling, less one when the last window would start past the input and the left
//!   padding (`(out - 1) s >= n + p`): the last window starts inside them;
//! - the window of output `o` covers positions `o s - p + i d`, `i < k`; the positions
//!   outside `[0, n)` are padding (`-inf` for the maximum, left out of the sum);
//! - the average's divisor is the product over axes of the window's length clipped to
//!   `[-p, n + p)` (`count_include_pad`, the default), or clipped to `[0, n)` without it.

/// Which pool.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PoolKind {
    Max,
    Avg,
}

/// A pool's attributes: one entry per spatial axis (one or two) in every list.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Pool {
    pub kind: PoolKind,
    pub window: Vec<u64>,
    pub stride: Vec<u64>,
    pub padding: Vec<u64>,
    /// All 1 for `avg_pool`, which has no dilation.
    pub dilation: Vec<u64>,
    pub ceil_mode: bool,
    /// Meaningful for `avg_pool` only; `false` for `max_pool`.
    pub count_include_pad: bool,
}

/// The span of one window along one axis, for one output position.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AxisWindow {
    /// The first position of the window (may be negative: left padding).
    pub start: i64,
    /// The window's taps that fall inside the input: `first..end` (tap `i` reads position
    /// `start + i d`).
    pub first: u64,
    pub end: u64,
    /// The average's divisor factor along this axis.
    pub divisor: u64,
}

impl Pool {
    /// The language's name of the pool.
    pub fn name(&self) -> &'static str {
        match self.kind {
            PoolKind::Max => "max_pool",
            PoolKind::Avg => "avg_pool",
        }
    }

    /// The number of spatial axes (1 or 2).
    pub fn axes(&self) -> usize {
        self.window.len()
    }

    /// The dilated window length along axis `a`: `d (k - 1) + 1`.
    pub fn extent(&self, a: usize) -> u64 {
        self.dilation[a]
            .saturating_mul(self.window[a].saturating_sub(1))
            .saturating_add(1)
    }

    /// The output length along spatial axis `a` for an input of length `n`, or `None` when
    /// the (dilated) window is longer than the padded input.
    pub fn out_len(&self, a: usize, n: u64) -> Option<u64> {
        let (s, p) = (self.stride[a], self.padding[a]);
        let padded = n.checked_add(p.checked_mul(2)?)?;
        let num = padded.checked_sub(self.extent(a))?;
        let mut out = if self.ceil_mode {
            num.div_ceil(s) + 1
        } else {
            num / s + 1
        };
        if self.ceil_mode && (out - 1).saturating_mul(s) >= n + p {
            out -= 1;
        }
        Some(out)
    }

    /// The attributes' own rules (the checker reports each with its own message): lists of
    /// equal length 1 or 2, windows, strides and dilations of at least 1, padding at most
    /// half the window, no dilation for `avg_pool`.
    pub fn validate(&self) -> Result<(), String> {
        let n = self.window.len();
        if !(1..=2).contains(&n)
            || [&self.stride, &self.padding, &self.dilation]
                .iter()
                .any(|l| l.len() != n)
        {
            return Err(format!("{} lists of unequal or bad lengths", self.name()));
        }
        for a in 0..n {
            if self.window[a] == 0 || self.stride[a] == 0 || self.dilation[a] == 0 {
                return Err("a window, stride or dilation of 0".into());
            }
            if self.padding[a] > self.window[a] / 2 {
                return Err(format!(
                    "padding {} over half the window {}",
                    self.padding[a], self.window[a]
                ));
            }
        }
        if self.kind == PoolKind::Avg && self.dilation.iter().any(|&d| d != 1) {
            return Err("avg_pool has no dilation".into());
        }
        if self.kind == PoolKind::Max && self.count_include_pad {
            return Err("max_pool has no count_include_pad".into());
        }
        Ok(())
    }

    /// The result shape for an input of shape `[N, C, spatial..]`.
    pub fn out_shape(&self, input: &[u64]) -> Result<Vec<u64>, String> {
        self.validate()?;
        if input.len() != self.axes() + 2 {
            return Err(format!(
                "{} of {} spatial axes on an input of rank {}",
                self.name(),
                self.axes(),
                input.len()
            ));
        }
        let mut shape = input[..2].to_vec();
        for a in 0..self.axes() {
            let n = input[2 + a];
            shape.push(self.out_len(a, n).ok_or_else(|| {
                format!(
                    "window {} (dilated {}) longer than the padded axis {n} + 2 x {}",
                    self.window[a],
                    self.extent(a),
                    self.padding[a]
                )
            })?);
        }
        Ok(shape)
    }

    /// The window of output position `o` along axis `a` of an input of length `n`.
    pub fn window_of(&self, a: usize, n: u64, o: u64) -> AxisWindow {
        let (k, s, p, d) = (
            self.window[a] as i64,
            self.stride[a] as i64,
            self.padding[a] as i64,
            self.dilation[a] as i64,
        );
        let n = n as i64;
        let start = o as i64 * s - p;
        // Taps i with 0 <= start + i d < n.
        let first = if start >= 0 { 0 } else { (-start + d - 1) / d };
        let end = if start >= n {
            0
        } else {
            ((n - 1 - start) / d + 1).min(k)
        };
        let end = end.max(first);
        // PyTorch's divisor: the window clipped to the padded input, or to the input.
        let divisor = if self.count_include_pad {
            (start + k).min(n + p) - start
        } else {
            (start + k).min(n) - start.max(0)
        };
        AxisWindow {
            start,
            first: first as u64,
            end: end as u64,
            divisor: divisor.max(0) as u64,
        }
    }

    /// True when the window is the whole input and there is one output: a global pool,
    /// computed as a plain reduction over the spatial axes.
    pub fn is_global(&self, input: &[u64]) -> bool {
        (0..self.axes()).all(|a| {
            let n = input[2 + a];
            self.padding[a] == 0
                && self.dilation[a] == 1
                && self.window[a] == n
                && self.out_len(a, n) == Some(1)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pool(k: u64, s: u64, p: u64, d: u64, ceil: bool) -> Pool {
        Pool {
            kind: PoolKind::Max,
            window: vec![k],
            stride: vec![s],
            padding: vec![p],
            dilation: vec![d],
            ceil_mode: ceil,
            count_include_pad: false,
        }
    }

    #[test]
    fn output_lengths_follow_pytorch() {
        // torch.nn.functional.max_pool1d lengths.
        assert_eq!(pool(3, 2, 1, 1, false).out_len(0, 112), Some(56));
        assert_eq!(pool(2, 2, 0, 1, false).out_len(0, 5), Some(2));
        assert_eq!(pool(2, 2, 0, 1, true).out_len(0, 5), Some(3));
        // The ceil-mode rule: the last window must start inside the input or left padding.
        assert_eq!(pool(2, 2, 1, 1, true).out_len(0, 5), Some(3));
        assert_eq!(pool(3, 3, 1, 1, true).out_len(0, 6), Some(3));
        assert_eq!(pool(3, 2, 0, 2, false).out_len(0, 9), Some(3));
        assert_eq!(pool(3, 1, 0, 2, false).out_len(0, 4), None);
    }

    #[test]
    fn windows_clip_to_the_input() {
        let mut p = pool(3, 2, 1, 1, true);
        let w = p.window_of(0, 6, 0);
        assert_eq!((w.start, w.first, w.end, w.divisor), (-1, 1, 3, 2));
        p.count_include_pad = true;
        assert_eq!(p.window_of(0, 6, 0).divisor, 3);
        // The ceil-mode overhang: start 5, taps 5 (in), 6 (right padding), 7 (past it).
        let w = p.window_of(0, 6, 3);
        assert_eq!((w.start, w.first, w.end, w.divisor), (5, 0, 1, 2));
    }
}
