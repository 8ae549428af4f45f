//! Data movement in the tile pass: slices and `broadcast_to` are views of their operand's
//! HBM home (a strided or negative-step slice is a DMA access pattern, a broadcast a stride
//! of zero); `concat` writes each part into its range of the result's home (a part computed
//! for the concat alone is stored there directly by its own group, see
//! `Tiler::plan_concat_parts`), unless only other groups read the concat: then it is a view
//! of its parts and nothing is copied (`concat_view.rs`); `pad` memsets the border of the result's home and copies the
//! operand into the interior.

use super::block::{BArg, BGraph, BOp};
use super::view::HView;
use super::{row_blocks, Tiler, BLOCK_BUDGET};
use crate::frontend::typed::SliceAxis;
use crate::ir::{Inst, TOp, Value, ValueDef};
use crate::passes::fusion::{self, Fit, Root};
use isa::Role;

impl HView {
    /// The view of a slice: `axes` has one entry per axis of this view; the kept axes take
    /// their counts from `shape`.
    pub fn slice(&self, axes: &[SliceAxis], shape: &[u64]) -> HView {
        let mut offset = self.offset;
        let mut strides = Vec::with_capacity(shape.len());
        for (a, &s) in axes.iter().zip(&self.strides) {
            offset += a.start as i64 * s;
            if a.keep {
                strides.push(s * a.step);
            }
        }
        HView {
            buf: self.buf,
            dtype: self.dtype,
            shape: shape.to_vec(),
            strides,
            offset,
        }
    }

    /// The view broadcast (NumPy rules) to `shape`.
    pub fn broadcast_to(&self, shape: &[u64]) -> HView {
        HView {
            buf: self.buf,
            dtype: self.dtype,
            shape: shape.to_vec(),
            strides: self.broadcast_strides(shape),
            offset: self.offset,
        }
    }

    /// Elements `start..start + len` of `axis`.
    pub fn narrow(&self, axis: usize, start: u64, len: u64) -> HView {
        let mut v = self.clone();
        v.offset += start as i64 * self.strides[axis];
        v.shape[axis] = len;
        v
    }
}

/// Two views of one shape, reshaped for a copy: adjacent axes that both walk contiguously
/// (the outer stride is the inner one times the inner size, on both sides) become one axis,
/// and when fewer than 128 rows remain before a last axis of at least 8192 elements, that
/// axis is split into `p` rows of `n / p` (`p` the largest divisor of `n` up to 128 that
/// leaves rows of at least 64 elements), so that the copy uses every partition.
/// Element order and addresses are unchanged: only the blocking differs.
pub fn copy_shape(src: &HView, dest: &HView) -> (HView, HView) {
    if src.shape.len() != dest.shape.len() || src.shape.is_empty() {
        return (src.clone(), dest.clone());
    }
    let mut shape: Vec<u64> = Vec::new();
    let mut ss: Vec<i64> = Vec::new();
    let mut ds: Vec<i64> = Vec::new();
    for i in 0..src.shape.len() {
        let (n, a, b) = (src.shape[i], src.strides[i], dest.strides[i]);
        if n == 1 {
            continue;
        }
        if let Some(k) = shape.len().checked_sub(1) {
            // The previous (outer) axis continues into this one on both sides.
            if ss[k] == a * n as i64 && ds[k] == b * n as i64 {
                shape[k] *= n;
                ss[k] = a;
                ds[k] = b;
                continue;
            }
        }
        shape.push(n);
        ss.push(a);
        ds.push(b);
    }
    if shape.is_empty() {
        return (src.clone(), dest.clone());
    }
    // Spread a long last axis over the partitions when the rows before it are few.
    let rows: u64 = shape[..shape.len() - 1].iter().product();
    let n = shape[shape.len() - 1];
    if rows < 128 && n >= 128 * 64 && shape.len() < 6 {
        if let Some(p) = (2..=128u64)
            .rev()
            .find(|p| n.is_multiple_of(*p) && n / p >= 64)
        {
            let (a, b) = (ss[ss.len() - 1], ds[ds.len() - 1]);
            let k = shape.len() - 1;
            shape[k] = p;
            shape.push(n / p);
            ss[k] = a * (n / p) as i64;
            ss.push(a);
            ds[k] = b * (n / p) as i64;
            ds.push(b);
        }
    }
    let view = |v: &HView, strides: Vec<i64>| HView {
        buf: v.buf,
        dtype: v.dtype,
        shape: shape.clone(),
        strides,
        offset: v.offset,
    };
    (view(src, ss), view(dest, ds))
}

/// True for the operations whose result is a view of their operand's home.
pub fn is_view_op(op: &TOp) -> bool {
    matches!(
        op,
        TOp::Transpose(_) | TOp::Reshape | TOp::Slice(_) | TOp::BroadcastTo
    )
}

impl Tiler<'_> {
    /// The concat parts that are computed for the concat alone (by a row group, used
    /// nowhere else and not returned), with their concat: their groups will store them
    /// straight into the concat's home, so `plan_scratch` gives them no home of their own.
    pub(super) fn concat_parts_in_place(&self, grouping: &fusion::Grouping) -> Vec<(Value, Inst)> {
        let func = self.func;
        let mut uses: std::collections::HashMap<Value, usize> = Default::default();
        for &inst in &func.layout {
            for a in &func.insts[inst].args {
                *uses.entry(*a).or_default() += 1;
            }
        }
        for r in &func.results {
            *uses.entry(*r).or_default() += 2;
        }
        let mut out: Vec<(Value, Inst)> = Vec::new();
        for &inst in &func.layout {
            if !matches!(func.insts[inst].op, TOp::Concat(_)) || self.parts_planned.contains(&inst)
            {
                continue;
            }
            for &part in &func.insts[inst].args {
                let ValueDef::Inst(def) = func.values[part].def else {
                    continue;
                };
                let rows = grouping.group_of[def]
                    .is_some_and(|g| matches!(grouping.groups[g as usize].root, Root::Rows));
                let own = matches!(func.insts[def].op, TOp::Concat(_));
                // A part computed in the concat's own group is written into the concat's
                // tile there (`block.rs`), not stored.
                let same_group = grouping.group_of[def].is_some()
                    && grouping.group_of[def] == grouping.group_of[inst];
                if (rows || own)
                    && !same_group
                    && uses.get(&part) == Some(&1)
                    && !self.layout.transposed[part]
                    && out.iter().all(|(v, _)| *v != part)
                {
                    out.push((part, inst));
                }
            }
        }
        out
    }

    /// Gives each part of `concat_parts_in_place` the range of its concat's home; concats
    /// are visited last to first, so a concat that is itself a part has its range before
    /// its own parts are placed. A part whose concat has no home gets a scratch home.
    pub(super) fn place_concat_parts(&mut self) {
        let func = self.func;
        let planned = std::mem::take(&mut self.concat_homes);
        for &inst in func.layout.iter().rev() {
            let data = &func.insts[inst];
            let TOp::Concat(axis) = data.op else {
                continue;
            };
            let dest = self.home[data.result].clone();
            let mut start = 0;
            for &part in &data.args {
                let len = func.ty(part).shape[axis];
                if planned.contains(&(part, inst)) {
                    match &dest {
                        Some(d) => {
                            self.home[part] = Some(d.narrow(axis, start, len));
                            self.concat_homes.push((part, inst));
                        }
                        None => {
                            let ty = func.ty(part);
                            let buf = self.out.hbm(
                                &format!("t{}", part.as_u32()),
                                Role::Scratch,
                                ty.dtype,
                                &ty.shape,
                            );
                            self.home[part] = Some(HView::dense(buf, ty.dtype, &ty.shape));
                        }
                    }
                }
                start += len;
            }
        }
    }

    /// `concat`: each part not already stored in place is copied into its range.
    pub(super) fn lower_concat(&mut self, inst: Inst) -> Result<(), String> {
        let func = self.func;
        let data = &func.insts[inst];
        let TOp::Concat(axis) = data.op else {
            return Err(format!("{inst} is not a concat"));
        };
        let span = func.spans[inst];
        if self.parts_planned.contains(&inst) && self.home[data.result].is_none() {
            if self.parts_view(inst) {
                return Ok(());
            }
            // Not readable in place: a scratch home the parts are copied into.
            let ty = func.ty(data.result);
            let buf = self.out.hbm(
                &format!("t{}", data.result.as_u32()),
                Role::Scratch,
                ty.dtype,
                &ty.shape,
            );
            self.home[data.result] = Some(HView::dense(buf, ty.dtype, &ty.shape));
        }
        let dest = self.home_of(data.result)?;
        let mut start = 0;
        for &part in &data.args {
            let len = func.ty(part).shape[axis];
            let range = dest.narrow(axis, start, len);
            let in_place = self
                .concat_homes
                .iter()
                .any(|&(v, c)| v == part && c == inst);
            if !in_place {
                let src = self.home_of(part)?;
                self.copy_view(&src, &range, span);
            }
            start += len;
        }
        Ok(())
    }

    /// Makes the planned concat `inst` a parts view (`concat_view.rs`): its home is a
    /// placeholder that DMAs name until `resolve_parts_views` points them at the parts.
    /// False when a part has no home or is itself read in place.
    fn parts_view(&mut self, inst: Inst) -> bool {
        let func = self.func;
        let data = &func.insts[inst];
        let TOp::Concat(axis) = data.op else {
            return false;
        };
        let mut parts = Vec::new();
        let mut start = 0;
        for &part in &data.args {
            let Some(view) = self.home[part].clone() else {
                return false;
            };
            if self.parts_views.iter().any(|pv| pv.buf == view.buf) {
                return false;
            }
            let len = func.ty(part).shape[axis];
            parts.push((start, len, view));
            start += len;
        }
        let ty = func.ty(data.result);
        let buf = self.out.hbm(
            &format!("t{}_parts", data.result.as_u32()),
            Role::Scratch,
            ty.dtype,
            &[1],
        );
        self.home[data.result] = Some(HView::dense(buf, ty.dtype, &ty.shape));
        self.parts_views.push(super::concat_view::PartsView {
            buf,
            shape: ty.shape.clone(),
            axis,
            parts,
            seams: Vec::new(),
        });
        true
    }

    /// `pad`: the border of the result's home is filled with the value box by box (for each
    /// axis, the rows before and after the operand, the earlier axes restricted to the
    /// interior), then the operand is copied into the interior.
    pub(super) fn lower_pad(&mut self, inst: Inst) -> Result<(), String> {
        let func = self.func;
        let data = &func.insts[inst];
        let TOp::Pad {
            before,
            after,
            value,
        } = &data.op
        else {
            return Err(format!("{inst} is not a pad"));
        };
        let span = func.spans[inst];
        let dest = self.home_of(data.result)?;
        let src = self.home_of(data.args[0])?;
        let inner = src.shape.clone();
        let mut interior = dest.clone();
        for axis in 0..inner.len() {
            let n = interior.shape[axis];
            for (start, len) in [(0, before[axis]), (n - after[axis], after[axis])] {
                if len > 0 {
                    let border = interior.narrow(axis, start, len);
                    let value = super::block::imm_of(border.dtype, *value);
                    self.fill_view(&border, value, span);
                }
            }
            interior = interior.narrow(axis, before[axis], inner[axis]);
        }
        self.copy_view(&src, &interior, span);
        Ok(())
    }

    /// Writes `value` to every element of `dest`: a memset per block, stored.
    fn fill_view(&mut self, dest: &HView, value: f32, span: crate::ir::Span) {
        self.begin_group();
        let graph = BGraph::single(
            BOp::Copy,
            BArg::Imm(value),
            dest.dtype,
            Fit::Full,
            span,
            dest.clone(),
            dest.strides.clone(),
        );
        let col_chunk = (BLOCK_BUDGET / dest.dtype.size() as u64).max(1);
        for b in &row_blocks(&dest.shape, false, col_chunk) {
            self.eval_block(&graph, b);
        }
    }
}
