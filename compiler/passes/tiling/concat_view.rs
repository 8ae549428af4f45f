//! Concats read in place: a `concat` that only other groups read (not a result, not a part
//! of another concat) is not copied into a home of its own. Its value is a *parts view*:
//! a placeholder HBM buffer laid out as the dense concat, which every consumer addresses as
//! it would the copy (matmul operands, attention's K and V, row groups, copies, through any
//! transpose, slice or broadcast of it), and whose parts are the parts' own homes.
//!
//! After the kernel is tiled, `Tiler::resolve_parts_views` rewrites every DMA that reads
//! the placeholder: a read that lies in one part reads that part; a read that crosses a
//! boundary becomes one DMA per part when the SBUF side can be cut along the same elements
//! (whole partitions at the starts the machine allows, or a range of one partition's free
//! axis). A crossing read that cannot be cut so (a 128-key tile whose boundary falls on its
//! last partition: a tile of one partition must start at 0, 32, 64 or 96) is read by
//! overlaid DMAs from the parts when the later parts hold few of its rows
//! (`PartsView::overlay`), or else reads a *seam*:
//! the positions it spans along the concat axis, copied from the parts into a small HBM
//! buffer once, just before the first read that needs them. A read the rewrite cannot
//! follow at all (an indirect gather of the concat, a pattern whose steps carry across the
//! concat's axes) reads a full copy made the same way, so nothing is ever computed wrongly;
//! only the bytes moved differ.

use super::view::{dense_strides, hbm_ap, HView};
use super::Tiler;
use crate::tile::{Buf, TInst, TileInst};
use isa::{DmaAp, HbmAp, Op, Role, TileAp};

/// Seams (copies of a window of a parts view) made per concat before the whole concat is
/// copied instead.
const MAX_SEAMS: usize = 4;
/// Iterations over the dims outside the one that crosses a boundary, above which a read is
/// not split (it reads a seam or the full copy).
const MAX_OUTER: u64 = 64;
/// Steps of the later parts of a group of partitions, above which the group reads a seam
/// rather than overlaid DMAs (`PartsView::overlay`).
const MAX_OVERLAY_ROWS: u64 = 4;

/// A concat read in place.
#[derive(Clone, Debug)]
pub struct PartsView {
    /// The placeholder buffer that consumers' DMAs name.
    pub buf: Buf,
    /// The concat's shape; the placeholder is laid out densely in it.
    pub shape: Vec<u64>,
    /// The concat axis.
    pub axis: usize,
    /// Each part: first index along the axis, length, and its home.
    pub parts: Vec<(u64, u64, HView)>,
    /// Windows copied into HBM buffers of their own: first index, length, and the copy
    /// (a dense view whose axis `axis` starts at the window's first index).
    pub seams: Vec<(u64, u64, HView)>,
}

/// One dim of a read, after splitting merged dims back into the concat's axes: `n` steps
/// of `k` indices along `axis` (`None`: a broadcast, or a dim of one).
#[derive(Clone, Copy, Debug)]
struct UDim {
    n: u64,
    axis: Option<usize>,
    k: u64,
}

/// The multi-index of element `off` of a dense layout.
fn index_of(shape: &[u64], off: u64) -> Vec<u64> {
    let vs = dense_strides(shape);
    shape
        .iter()
        .zip(&vs)
        .map(|(&n, &s)| (off / s as u64) % n.max(1))
        .collect()
}

/// Splits `(n, s)` into dims along single axes of the dense `shape` starting at `start`.
fn expand(shape: &[u64], start: &[u64], n: u64, s: i64, out: &mut Vec<UDim>) -> Option<()> {
    if n == 1 || s == 0 {
        out.push(UDim {
            n,
            axis: None,
            k: 0,
        });
        return Some(());
    }
    if s < 0 {
        return None;
    }
    let vs = dense_strides(shape);
    let i = (0..shape.len()).find(|&i| shape[i] > 1 && s % vs[i] == 0)?;
    let k = (s / vs[i]) as u64;
    if k == 1 && n > shape[i] {
        // A merged run over whole rows of this axis.
        if !n.is_multiple_of(shape[i]) || start[i] != 0 {
            return None;
        }
        expand(shape, start, n / shape[i], vs[i] * shape[i] as i64, out)?;
        out.push(UDim {
            n: shape[i],
            axis: Some(i),
            k: 1,
        });
    } else {
        out.push(UDim {
            n,
            axis: Some(i),
            k,
        });
    }
    Some(())
}

/// The read `dims` from element `off` of the dense `shape` as dims along single axes, when
/// no step carries into another axis.
fn unmerge(shape: &[u64], off: u64, dims: &[(u64, i64)]) -> Option<(Vec<u64>, Vec<UDim>)> {
    let total: u64 = shape.iter().product();
    if off >= total.max(1) {
        return None;
    }
    let start = index_of(shape, off);
    let mut out = Vec::new();
    for &(n, s) in dims {
        expand(shape, &start, n, s, &mut out)?;
    }
    for (i, &n) in shape.iter().enumerate() {
        let reach: u64 = out
            .iter()
            .filter(|d| d.axis == Some(i))
            .map(|d| d.k * (d.n - 1))
            .sum();
        if start[i] + reach >= n {
            return None;
        }
    }
    Some((start, out))
}

/// The HBM pattern of the walk `dims` from `start` (indices of the concat) in `view`, a
/// window of the concat whose axis `axis` begins at `first`.
fn map_to(view: &HView, axis: usize, first: u64, start: &[u64], dims: &[UDim]) -> Option<HbmAp> {
    let mut off = view.offset;
    for (i, &x) in start.iter().enumerate() {
        let x = if i == axis { x - first } else { x };
        off += x as i64 * view.strides[i];
    }
    let d: Vec<(u64, i64)> = dims
        .iter()
        .map(|u| {
            let s = u.axis.map_or(0, |i| u.k as i64 * view.strides[i]);
            (u.n, s)
        })
        .collect();
    if off < 0 || d.iter().any(|&(_, s)| s < 0) {
        return None;
    }
    let ap = hbm_ap(view.dtype, off, &d);
    (ap.dims.len() <= isa::MAX_HBM_DIMS).then_some(ap)
}

/// Elements `e0..e0 + n` of a tile pattern (in its element order: partitions, then the
/// free dims) as a pattern of their own, where the machine can address them so.
fn carve(ap: &TileAp, e0: u64, n: u64) -> Option<TileAp> {
    let f = ap.free_elems();
    if e0.is_multiple_of(f) && n.is_multiple_of(f) {
        let p0 = ap.partition as u64 + e0 / f;
        let pn = n / f;
        let starts: &[u64] = match pn {
            65.. => &[0],
            33..=64 => &[0, 64],
            _ => &[0, 32, 64, 96],
        };
        if !starts.contains(&p0) {
            return None;
        }
        let mut out = ap.clone();
        out.partition = p0 as u8;
        out.partitions = pn as u8;
        return Some(out);
    }
    if e0 / f != (e0 + n - 1) / f {
        return None;
    }
    let p = ap.partition as u64 + e0 / f;
    let (off, dims) = carve_free(&ap.dims, e0 % f, n)?;
    let mut out = ap.clone();
    out.partition = p as u8;
    out.partitions = 1;
    out.offset = (out.offset as i64 + off * ap.dtype.size() as i64) as u32;
    out.dims = dims.into_iter().collect();
    // A tile of one partition starts at 0, 32, 64 or 96.
    p.is_multiple_of(32).then_some(out)
}

/// Elements `r0..r0 + n` of one partition's free dims: element offset and dims.
fn carve_free(dims: &[isa::Dim], r0: u64, n: u64) -> Option<(i64, Vec<isa::Dim>)> {
    let Some((outer, rest)) = dims.split_first() else {
        return (r0 == 0 && n == 1).then(|| (0, Vec::new()));
    };
    let inner: u64 = rest.iter().map(|d| d.size as u64).product();
    if r0.is_multiple_of(inner) && n.is_multiple_of(inner) {
        let mut out = vec![isa::Dim {
            size: (n / inner) as u32,
            stride: outer.stride,
        }];
        out.extend_from_slice(rest);
        return Some(((r0 / inner) as i64 * outer.stride as i64, out));
    }
    if r0 / inner != (r0 + n - 1) / inner {
        return None;
    }
    let (off, out) = carve_free(rest, r0 % inner, n)?;
    Some(((r0 / inner) as i64 * outer.stride as i64 + off, out))
}

/// The window (a part or a seam) that holds indices `lo..=hi` of the axis.
fn window_of(windows: &[(u64, u64, HView)], lo: u64, hi: u64) -> Option<&(u64, u64, HView)> {
    windows.iter().find(|(s, n, _)| *s <= lo && hi < s + n)
}

/// DMAs that replace one read: HBM pattern, its buffer, the tile pattern. Pieces are
/// issued in order on the read's own queue; a later piece may overwrite partitions an
/// earlier one wrote (see [`PartsView::overlay`]).
type Pieces = Vec<(HbmAp, Buf, TileAp)>;

/// Where a run of steps of a crossing read comes from.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Run {
    /// One part, read where it lies.
    Part(usize),
    /// A seam (a copy of the window in an HBM buffer of its own).
    Seam,
    /// Overlaid DMAs from the parts (an index into the iteration's overlays).
    Overlay(usize),
}

/// How a DMA reading a parts view is rewritten.
enum Plan {
    /// These DMAs instead.
    Split(Pieces),
    /// A copy of indices `lo..lo + n` of the axis is needed first (then plan again).
    Seam(u64, u64),
}

impl PartsView {
    /// How to read `hbm` (a pattern of the placeholder) into the elements `tile` names.
    fn plan(&self, hbm: &HbmAp, tile: &TileAp) -> Plan {
        let full = Plan::Seam(0, self.shape[self.axis]);
        let esize = hbm.dtype.size() as u64;
        let dims: Vec<(u64, i64)> = hbm.dims.iter().map(|d| (d.size, d.stride)).collect();
        let Some((start, u)) = unmerge(&self.shape, hbm.offset / esize, &dims) else {
            return full;
        };
        let a = self.axis;
        let on_a: Vec<usize> = (0..u.len()).filter(|&i| u[i].axis == Some(a)).collect();
        let lo = start[a];
        let hi = lo + on_a.iter().map(|&i| u[i].k * (u[i].n - 1)).sum::<u64>();
        let whole = |w: &(u64, u64, HView)| {
            map_to(&w.2, a, w.0, &start, &u)
                .map(|ap| Plan::Split(vec![(ap, w.2.buf, tile.clone())]))
        };
        if let Some(w) = window_of(&self.parts, lo, hi) {
            return whole(w).unwrap_or(full);
        }
        match self.split(&start, &u, &on_a, tile) {
            Ok(pieces) => return Plan::Split(pieces),
            Err(Some((s, n))) if self.seams.len() < MAX_SEAMS => return Plan::Seam(s, n),
            Err(_) => {}
        }
        if let Some(w) = window_of(&self.seams, lo, hi) {
            return whole(w).unwrap_or(full);
        }
        if self.seams.len() >= MAX_SEAMS {
            return full;
        }
        Plan::Seam(lo, hi + 1 - lo)
    }

    /// A group of partitions (32 or fewer, starting where a tile may start) that holds
    /// several parts, the later ones starting at partitions no tile may start at, read by
    /// overlaid DMAs instead of a seam. Each DMA starts at the group's first partition, so
    /// the machine allows it; the DMAs are issued in order on one queue, so a later one
    /// overwrites what an earlier one wrote. Working back from the group's last step, step
    /// `j` of a part that cannot be cut out on its own is its row broadcast (a stride of
    /// zero) over the group's partitions up to and including its own; the partitions before
    /// it get their right values from the DMAs that follow, and the group's first part is
    /// one DMA of its own, last. Every byte is read from where it lies: no seam is copied,
    /// and no latency of a copy is waited for. The DMAs move `(n + 1) * 32` rows or fewer
    /// for `n` rows of later parts, so only groups whose later parts hold at most
    /// `MAX_OVERLAY_ROWS` steps (a KV-cache append of a token or a few speculative ones)
    /// are read so; others read a seam, which later reads share. Needs one partition per
    /// step.
    #[allow(clippy::too_many_arguments)]
    fn overlay(
        &self,
        at: &[u64],
        u: &[UDim],
        d: usize,
        base: u64,
        inner: u64,
        segs: &[(u64, u64, usize)],
        tile: &TileAp,
    ) -> Option<Pieces> {
        let a = self.axis;
        let k = u[d].k;
        let (g, first_part) = (segs.first()?.0, segs.first()?.2);
        if inner != tile.free_elems() {
            return None;
        }
        let later: u64 = segs
            .iter()
            .skip_while(|s| s.2 == first_part)
            .map(|s| s.1 - s.0)
            .sum();
        if later > MAX_OVERLAY_ROWS {
            return None;
        }
        let mut out = Vec::new();
        for &(j0, j1, p) in segs.iter().rev() {
            let (p0, _, view) = &self.parts[p];
            if let Some(t) = carve(tile, base + j0 * inner, (j1 - j0) * inner) {
                let mut from = at.to_vec();
                from[a] += j0 * k;
                let mut dims = vec![UDim {
                    n: j1 - j0,
                    axis: Some(a),
                    k,
                }];
                dims.extend_from_slice(&u[d + 1..]);
                out.push((map_to(view, a, *p0, &from, &dims)?, view.buf, t));
                continue;
            }
            for j in (j0..j1).rev() {
                let t = carve(tile, base + g * inner, (j + 1 - g) * inner)?;
                let mut from = at.to_vec();
                from[a] += j * k;
                let mut dims = vec![UDim {
                    n: j + 1 - g,
                    axis: None,
                    k: 0,
                }];
                dims.extend_from_slice(&u[d + 1..]);
                out.push((map_to(view, a, *p0, &from, &dims)?, view.buf, t));
            }
        }
        Some(out)
    }

    /// One DMA per part (and per index of the dims outside the crossing one), when the tile
    /// side can be cut along the same elements. When the crossing dim walks partitions, a
    /// group of 32 partitions (where a tile may start) that holds a boundary at another
    /// partition reads a seam instead: `Err(Some(window))` asks for that seam when it does
    /// not exist yet; `Err(None)`: the read cannot be split.
    fn split(
        &self,
        start: &[u64],
        u: &[UDim],
        on_a: &[usize],
        tile: &TileAp,
    ) -> Result<Pieces, Option<(u64, u64)>> {
        let a = self.axis;
        let &[d] = on_a else {
            return Err(None);
        };
        let outer: u64 = u[..d].iter().map(|x| x.n).product();
        let inner: u64 = u[d + 1..].iter().map(|x| x.n).product();
        let (nd, k) = (u[d].n, u[d].k);
        let f = tile.free_elems();
        // Whether each step of the crossing dim covers whole partitions.
        let on_parts = inner.is_multiple_of(f);
        let part_at = |x: u64| {
            self.parts
                .iter()
                .position(|(p0, pn, _)| *p0 <= x && x < p0 + pn)
        };
        let mut out = Vec::new();
        if outer > 1 && outer == tile.partitions as u64 && nd * inner == f {
            // The outer dims are the partitions and the crossing dim walks each partition's
            // free axis (a transposed read): one DMA per part over every partition.
            for (p0, pn, view) in &self.parts {
                let j0 = p0.saturating_sub(start[a]).div_ceil(k);
                let j1 = (p0 + pn).saturating_sub(start[a]).div_ceil(k).min(nd);
                if j0 >= j1 {
                    continue;
                }
                let mut from = start.to_vec();
                from[a] += j0 * k;
                let mut dims = u[..d].to_vec();
                dims.push(UDim {
                    n: j1 - j0,
                    axis: Some(a),
                    k,
                });
                dims.extend_from_slice(&u[d + 1..]);
                let ap = map_to(view, a, *p0, &from, &dims).ok_or(None)?;
                let (off, fd) =
                    carve_free(&tile.dims, j0 * inner, (j1 - j0) * inner).ok_or(None)?;
                let mut t = tile.clone();
                t.offset = (t.offset as i64 + off * t.dtype.size() as i64) as u32;
                t.dims = fd.into_iter().collect();
                out.push((ap, view.buf, t));
            }
            return Ok(out);
        }
        if outer > MAX_OUTER {
            return Err(None);
        }
        for o in 0..outer {
            // The start of this outer iteration (the outer dims never move along `a`).
            let mut at = start.to_vec();
            let mut rem = o;
            for x in u[..d].iter().rev() {
                let i = rem % x.n;
                rem /= x.n;
                if let Some(ax) = x.axis {
                    at[ax] += i * x.k;
                }
            }
            let base = o * nd * inner;
            let quad = |j: u64| (tile.partition as u64 + (base + j * inner) / f) / 32;
            // Cuts at part boundaries and, on partitions, at groups of 32 partitions.
            let mut cuts: Vec<u64> = vec![0, nd];
            for (p0, _, _) in &self.parts {
                let j = p0.saturating_sub(at[a]).div_ceil(k);
                if j > 0 && j < nd {
                    cuts.push(j);
                }
            }
            if on_parts {
                cuts.extend((1..nd).filter(|&j| quad(j) != quad(j - 1)));
            }
            cuts.sort_unstable();
            cuts.dedup();
            // Segments (first step, end, part), then runs of one part or one seam.
            let segs: Vec<(u64, u64, usize)> = cuts
                .windows(2)
                .map(|w| (w[0], w[1], part_at(at[a] + w[0] * k).unwrap_or(0)))
                .collect();
            // (first step, end, source).
            let mut runs: Vec<(u64, u64, Run)> = Vec::new();
            let mut overlays: Vec<Pieces> = Vec::new();
            let mut i = 0;
            while i < segs.len() {
                let q = quad(segs[i].0);
                let mut e = i + 1;
                while on_parts && e < segs.len() && quad(segs[e].0) == q {
                    e += 1;
                }
                let mixed = segs[i..e].iter().any(|s| s.2 != segs[i].2);
                let cut_ok = segs[i..e]
                    .iter()
                    .all(|s| carve(tile, base + s.0 * inner, (s.1 - s.0) * inner).is_some());
                if mixed && !cut_ok {
                    if !on_parts {
                        return Err(None);
                    }
                    let (j0, j1) = (segs[i].0, segs[e - 1].1);
                    match self.overlay(&at, u, d, base, inner, &segs[i..e], tile) {
                        Some(pieces) => {
                            runs.push((j0, j1, Run::Overlay(overlays.len())));
                            overlays.push(pieces);
                        }
                        None => runs.push((j0, j1, Run::Seam)),
                    }
                } else {
                    for s in &segs[i..e] {
                        runs.push((s.0, s.1, Run::Part(s.2)));
                    }
                }
                i = e;
            }
            // Merge neighbouring runs of one part where the tile allows it.
            let mut merged: Vec<(u64, u64, Run)> = Vec::new();
            for r in runs {
                if let Some(last) = merged.last_mut() {
                    if matches!(last.2, Run::Part(_))
                        && last.2 == r.2
                        && carve(tile, base + last.0 * inner, (r.1 - last.0) * inner).is_some()
                    {
                        last.1 = r.1;
                        continue;
                    }
                }
                merged.push(r);
            }
            for (j0, j1, run) in merged {
                let (first, len) = (at[a] + j0 * k, (j1 - j0 - 1) * k + 1);
                let window = match run {
                    Run::Part(p) => &self.parts[p],
                    Run::Seam => {
                        window_of(&self.seams, first, first + len - 1).ok_or(Some((first, len)))?
                    }
                    Run::Overlay(o) => {
                        out.append(&mut overlays[o]);
                        continue;
                    }
                };
                let mut from = at.clone();
                from[a] = first;
                let mut dims = vec![UDim {
                    n: j1 - j0,
                    axis: Some(a),
                    k,
                }];
                dims.extend_from_slice(&u[d + 1..]);
                let ap = map_to(&window.2, a, window.0, &from, &dims).ok_or(None)?;
                let t = carve(tile, base + j0 * inner, (j1 - j0) * inner).ok_or(None)?;
                out.push((ap, window.2.buf, t));
            }
        }
        Ok(out)
    }
}

impl Tiler<'_> {
    /// Rewrites every DMA that reads a parts view (see the module comment); seams and full
    /// copies are emitted just before the first DMA that needs them.
    pub(super) fn resolve_parts_views(&mut self) -> Result<(), String> {
        if self.parts_views.is_empty() {
            return Ok(());
        }
        let old = std::mem::take(&mut self.out.layout);
        let mut layout: Vec<TInst> = Vec::with_capacity(old.len());
        let mut queue: std::collections::VecDeque<TInst> = old.into();
        while let Some(inst) = queue.pop_front() {
            let data = self.out.insts[inst].clone();
            let Some(vi) = self
                .parts_views
                .iter()
                .position(|pv| data.bufs.contains(&pv.buf))
            else {
                layout.push(inst);
                continue;
            };
            let plan = match (&data.op, &data.bufs[..]) {
                (
                    Op::Dma {
                        dst: DmaAp::Tile(t),
                        src: DmaAp::Hbm(h),
                    },
                    [_, b],
                ) if *b == self.parts_views[vi].buf => self.parts_views[vi].plan(h, t),
                _ => Plan::Seam(0, self.parts_views[vi].shape[self.parts_views[vi].axis]),
            };
            match plan {
                Plan::Split(pieces) => {
                    let span = self.out.spans[inst];
                    let row = self.out.row_group[inst];
                    for (h, b, t) in pieces {
                        let new = self.out.insts.push(TileInst {
                            op: Op::Dma {
                                dst: DmaAp::Tile(t),
                                src: DmaAp::Hbm(h),
                            },
                            engine: data.engine,
                            bufs: [data.bufs[0], b].into_iter().collect(),
                        });
                        self.out.spans[new] = span;
                        self.out.row_group[new] = row;
                        layout.push(new);
                    }
                }
                Plan::Seam(lo, n) => {
                    let span = self.out.spans[inst];
                    let full = n == self.parts_views[vi].shape[self.parts_views[vi].axis];
                    let seam = self.make_seam(vi, lo, n, span);
                    layout.append(&mut self.out.layout);
                    if full {
                        // The whole concat is a dense copy laid out as the placeholder:
                        // every later access reads it directly.
                        let pv = self.parts_views.remove(vi);
                        for &i in queue.iter().chain(std::iter::once(&inst)) {
                            for b in self.out.insts[i].bufs.iter_mut() {
                                if *b == pv.buf {
                                    *b = seam;
                                }
                            }
                        }
                    }
                    // Plan the same DMA again, now with the seam.
                    queue.push_front(inst);
                }
            }
        }
        self.out.layout = layout;
        Ok(())
    }

    /// Copies indices `lo..lo + n` of the axis of parts view `vi` from its parts into a new
    /// HBM buffer (emitted at the end of `self.out.layout`); returns the buffer.
    fn make_seam(&mut self, vi: usize, lo: u64, n: u64, span: crate::ir::Span) -> Buf {
        let pv = self.parts_views[vi].clone();
        let dtype = pv.parts[0].2.dtype;
        let mut shape = pv.shape.clone();
        shape[pv.axis] = n;
        let name = format!("seam{}", self.out.bufs.len());
        let buf = self.out.hbm(&name, Role::Scratch, dtype, &shape);
        let view = HView::dense(buf, dtype, &shape);
        for (p0, pn, part) in &pv.parts {
            let (s, e) = ((*p0).max(lo), (p0 + pn).min(lo + n));
            if s < e {
                let src = part.narrow(pv.axis, s - p0, e - s);
                let dst = view.narrow(pv.axis, s - lo, e - s);
                self.copy_view(&src, &dst, span);
            }
        }
        self.parts_views[vi].seams.push((lo, n, view));
        buf
    }
}

/// The axis of a concat.
fn axis_of(op: &crate::ir::TOp) -> usize {
    match op {
        crate::ir::TOp::Concat(a) => *a,
        _ => 0,
    }
}

/// The concats that become parts views: each a group of its own whose value is not a
/// result, not a part of another concat, not kept transposed by the layout pass, and
/// long enough along its axis for its seams.
pub(super) fn plan_parts_views(
    func: &crate::ir::Function,
    grouping: &crate::passes::fusion::Grouping,
    layout: &crate::passes::layout::Layout,
) -> Vec<crate::ir::Inst> {
    use crate::ir::TOp;
    use crate::passes::fusion::Root;
    let mut out = Vec::new();
    for &inst in &func.layout {
        let data = &func.insts[inst];
        if !matches!(data.op, TOp::Concat(_)) {
            continue;
        }
        let v = data.result;
        let alone = grouping.group_of[inst]
            .is_some_and(|g| grouping.groups[g as usize].root == Root::Single(inst));
        let returned = func.results.contains(&v);
        let nested = func.layout.iter().any(|&i| {
            matches!(func.insts[i].op, TOp::Concat(_)) && func.insts[i].args.contains(&v)
        });
        // A read crossing a boundary at a partition no tile may start at takes up to 32
        // positions from a seam: with many short parts (a convolution's window matrix of
        // 4-channel taps) the seams would be most of the concat, copied late, one at a
        // time; such a concat is copied whole where it is computed.
        let len = func.ty(v).shape[axis_of(&data.op)];
        let seams = (data.args.len() as u64 - 1) * 32;
        let few_seams = 2 * seams <= len;
        if alone && !returned && !nested && !layout.transposed[v] && few_seams {
            out.push(inst);
        }
    }
    out
}
