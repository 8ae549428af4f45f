//! HBM views: a logical tensor laid over an HBM buffer with arbitrary element strides.
//!
//! Kernel inputs, outputs and materialised intermediates are dense views; `transpose`
//! permutes strides and `reshape` of a dense view changes the shape, so both cost nothing
//! until a DMA reads through them; broadcasting is a stride of zero.

use crate::tile::Buf;
use isa::{Dtype, HbmAp, HbmDim};
use smallvec::SmallVec;

/// A logical tensor over an HBM buffer.
#[derive(Clone, Debug, PartialEq)]
pub struct HView {
    pub buf: Buf,
    pub dtype: Dtype,
    pub shape: Vec<u64>,
    /// Element strides, one per axis.
    pub strides: Vec<i64>,
    /// Element offset of index zero.
    pub offset: i64,
}

impl HView {
    /// A dense row-major view of a whole buffer.
    pub fn dense(buf: Buf, dtype: Dtype, shape: &[u64]) -> HView {
        HView {
            buf,
            dtype,
            shape: shape.to_vec(),
            strides: dense_strides(shape),
            offset: 0,
        }
    }

    /// True when the view is row-major and dense (so any reshape is free).
    pub fn is_dense(&self) -> bool {
        let d = dense_strides(&self.shape);
        self.shape
            .iter()
            .zip(self.strides.iter().zip(&d))
            .all(|(&n, (&s, &ds))| n == 1 || s == ds)
    }

    /// The view with its axes permuted: output axis i is input axis `perm[i]`.
    pub fn permute(&self, perm: &[usize]) -> HView {
        HView {
            buf: self.buf,
            dtype: self.dtype,
            shape: perm.iter().map(|&p| self.shape[p]).collect(),
            strides: perm.iter().map(|&p| self.strides[p]).collect(),
            offset: self.offset,
        }
    }

    /// The same elements with another shape (only valid for dense views).
    pub fn reshape(&self, shape: &[u64]) -> HView {
        HView {
            buf: self.buf,
            dtype: self.dtype,
            shape: shape.to_vec(),
            strides: dense_strides(shape),
            offset: self.offset,
        }
    }

    /// Strides of this view broadcast (NumPy rules) to `target`: zero on stretched and
    /// missing axes.
    pub fn broadcast_strides(&self, target: &[u64]) -> Vec<i64> {
        let pad = target.len() - self.shape.len();
        (0..target.len())
            .map(|i| {
                if i < pad || self.shape[i - pad] == 1 {
                    0
                } else {
                    self.strides[i - pad]
                }
            })
            .collect()
    }
}

/// Row-major strides of a shape.
pub fn dense_strides(shape: &[u64]) -> Vec<i64> {
    let mut s = vec![1i64; shape.len()];
    for i in (0..shape.len().saturating_sub(1)).rev() {
        s[i] = s[i + 1] * shape[i + 1] as i64;
    }
    s
}

/// An HBM access pattern from an element offset and `(size, stride)` dims (outermost
/// first): size-1 dims are dropped and dims that walk memory contiguously are merged, so
/// DMA sees the longest contiguous runs; there is always at least one dim.
pub fn hbm_ap(dtype: Dtype, offset_elems: i64, dims: &[(u64, i64)]) -> HbmAp {
    let mut out: Vec<(u64, i64)> = Vec::new();
    for &(size, stride) in dims {
        if size == 1 {
            continue;
        }
        if let Some(last) = out.last_mut() {
            if last.1 == stride * size as i64 {
                last.0 *= size;
                last.1 = stride;
                continue;
            }
        }
        out.push((size, stride));
    }
    if out.is_empty() {
        out.push((1, 1));
    }
    HbmAp {
        dtype,
        offset: (offset_elems.max(0) as u64) * dtype.size() as u64,
        dims: out
            .into_iter()
            .map(|(size, stride)| HbmDim { size, stride })
            .collect::<SmallVec<_>>(),
    }
}
