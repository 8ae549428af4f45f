//! Convolutions by implicit GEMM on the PE array: a `conv` of one group (1-D or 2-D) that
//! the `conv` pass rewrote into `w2 @ cols` over its window matrix is computed here
//! straight from its input and weights, the window matrix never built.
//!
//! - Channels go on partitions, in chunks of up to 128. Each image's input is loaded once
//!   into one SBUF tile per channel chunk, `[C, Hp x Wp]`, with its padding as a border
//!   memset to zero around the DMA'd interior.
//! - The weights are loaded once, a block of up to 128 output channels at a time as
//!   contiguous rows `[O, C x taps]`, and transposed on the PE array (eight transposes a
//!   PSUM bank, one copy out) into one stationary tile `[C chunk, O]` per tap.
//! - For each image, each block of up to 128 output channels and each block of output
//!   positions (whole output rows, up to 512 positions, one PSUM bank of f32), one matmul
//!   per window tap and channel chunk accumulates in PSUM: the moving operand is a strided
//!   view of the resident input, `OH` rows of `OW` columns shifted by the tap. The rest of
//!   the matmul's group (bias, relu, residual add, cast) is its epilogue, evaluated on the
//!   PSUM tile as `matmul.rs` does (`Tiler::epilogue`).
//! - The next image's input is loaded while this one's matmuls run.
//! - The start is what the first matmul waits for: the first block's weights go first on
//!   the DMA queues, ahead of the first image (whose load waits for its border's memsets,
//!   and goes in pieces for every queue), and the first transpose of each channel chunk
//!   is alone in its PSUM bank (banks of 1, 1, 2, 4, 8 transposes), so that the first
//!   matmuls wait for short copies out of PSUM.
//! - Where the Tensor engine is the bottleneck (by [`implicit_parts`]) and there are
//!   several blocks of output channels, the blocks go outermost instead: every image
//!   resident in one tile per channel chunk (four memsets for all the borders, on
//!   Vector), the first block's pass over every image needs only its own weights, and
//!   GpSimd transposes the later blocks' weights (`partition_transpose`, no PSUM bank)
//!   while the PE array works, as far as it finishes each before its pass; the others are
//!   transposed on the PE array before their pass. DMA-bound layers keep the image
//!   order, whose loads and stores interleave (every image resident and loaded ahead of
//!   the stores measured slower: ResNet-50's 1x1 layers 0.683 and 0.625 against 0.771 and
//!   0.658).
//! - The kernel's last tile goes in up to four pieces of whole rows (of at least 64
//!   positions), so that only the last piece's epilogue and store follow the last matmul.
//! - A tile's epilogue loads (a residual block) are issued ten tiles ahead
//!   ([`Tiler::prefetch_epilogue_loads`]), and a convolution that reads the output of the
//!   one lowered just before it runs image by image behind it ([`Tiler::chain_convs`]),
//!   so that one's epilogue work overlaps the other's matmuls (ResNet-50's bottleneck
//!   block). Both only reorder instructions, where nothing jumped over conflicts. Once a
//!   chain is placed, its loads of bytes an SBUF tile still holds (the residual's input,
//!   the previous convolution's result) are served from that tile, and the stores nobody
//!   reads any more are dropped (`conv_forward.rs`); so a convolution that feeds another
//!   keeps its last tile whole (its last store is not the kernel's).
//! - Taps packed on partitions ([`Pack`]): a matmul costs `N / 2` cycles whatever K is,
//!   so with 32 or 64 channels two consecutive taps share one matmul (`K = 2C`): tap `t`'s
//!   channels on partitions `0..C`, tap `t + 1`'s on `C..2C`. One tile holds the padded
//!   image on partitions `0..C` and, on `C..2C`, the same image starting earlier by the
//!   distance between the two taps (the shift), so that one address reads both taps. A
//!   2-D window's consecutive pairs have two shifts (the step along a window row, and
//!   from one row's last tap to the next row's first), so the tile has a region per
//!   shift: the first loaded by DMA (each half with its border memsets), the second
//!   copied from the first partition for partition on Vector and Scalar, in pieces
//!   between the previous image's tiles (images are loaded two ahead). The weights are
//!   transposed per group into `[K, O]` tiles. `C` must be 32 or 64 so that the upper
//!   half may start at partition `C` (docs/machine.md's rule for a tile's first
//!   partition). The cost estimate picks every consecutive pair (ResNet-50's 3x3 64->64:
//!   5 matmuls a tile instead of 9), or only pairs within a window row (one region, no
//!   copies), or no packing.
//!
//! Exactness: the matmuls run taps in row-major order outermost and channels inner, each
//! adding its products in channel order to the PSUM accumulator, which starts from the
//! first product's `0 + p` as a matmul's sum does. That is the order of the window
//! matrix's reduced index `k = tap x C + c`, the language's order (docs/language.md), so
//! the result has the reference's bits under every policy. A packed matmul adds its
//! `2C` products in partition order (docs/machine.md: `k = 0, 1, .., K-1`, each addition
//! rounded to f32), tap `t`'s channels then tap `t + 1`'s: the same sequence of additions
//! as two matmuls of `C`, so packing changes no bit either. The copies between regions
//! are exact (a value passes through f32 unchanged).
//!
//! Which lowering a convolution gets is a cost estimate ([`estimates`], [`plan`]): the
//! larger of the Tensor engine's and the DMA's cycles of each lowering, by
//! docs/machine.md's costs; the window matrix's costs three passes over `taps x` the input
//! in HBM (a copy per tap, its read as the matmul's operand), each run of a strided slice
//! charged 64 bytes, plus a DMA latency per round trip through HBM (the padded copy, the
//! window matrix). Implicit
//! GEMM costs one matmul per tap and channel chunk, which loses where few channels fill
//! few PE rows (the 7x7 stem, C = 3: 49 matmuls with K = 3 per block). It also needs the
//! image's padded input and all the weights to fit SBUF (`INPUT_BUDGET`,
//! `WEIGHT_BUDGET`); otherwise, and for grouped and depthwise convolutions, the window
//! matrix is used.

use super::block::{AxisUse, Tile};
use super::pool::{tile_ap, Xfer};
use super::Tiler;
use crate::ir::{ConvAttrs, Function, Inst, TOp, Value, ValueDef};
use crate::passes::conv::Implicit;
use crate::passes::fusion::{Grouping, Root};
use crate::passes::layout::Layout;
use crate::tile::TInst;
use cranelift_entity::EntityRef;
use isa::{Access, Dtype, Engine, Op};

/// Bytes per partition one image's padded input may take (all its channel chunks), so
/// that the next image's loads fit beside it.
const INPUT_BUDGET: u64 = 48 * 1024;
/// Bytes per partition the transposed weights may take (all taps and output channels).
const WEIGHT_BUDGET: u64 = 72 * 1024;
/// Bytes per partition every image's padded input may take together, for the order with
/// output channel blocks outermost (every image resident).
const RESIDENT_BUDGET: u64 = 32 * 1024;
/// A DMA's fixed latency in cycles (docs/machine.md).
const DMA_LATENCY: u64 = 2000;
/// Most positions of one PSUM tile (a bank of f32).
const BANK_COLS: u64 = 512;
/// How many tiles ahead a convolution tile's epilogue loads are issued
/// ([`Tiler::prefetch_epilogue_loads`]): enough to cover a DMA's latency and a load's data
/// phase on one queue behind the stores ahead of it. ResNet-50's conv4_x bottleneck block
/// (64 residual tiles of `[128, 196]` bf16) measured 114,186 cycles without, and 102,362,
/// 97,574, 97,336, 97,856 and 99,944 with 4, 8, 10, 12 and 16.
const EPILOGUE_LOOKAHEAD: usize = 10;
/// The instruction that computes `v`'s elements: its definition, through reshapes.
fn source_inst(func: &Function, mut v: Value) -> Option<Inst> {
    loop {
        let ValueDef::Inst(i) = func.values[v].def else {
            return None;
        };
        let data = &func.insts[i];
        if data.op != TOp::Reshape {
            return Some(i);
        }
        v = *data.args.first()?;
    }
}

/// The bytes `[lo, hi)` of its buffer that an HBM pattern touches (offset in bytes,
/// strides in elements).
pub(super) fn hbm_span(h: &isa::HbmAp) -> (i64, i64) {
    let es = h.dtype.size() as i64;
    let (mut lo, mut hi) = (h.offset as i64, h.offset as i64 + es);
    for d in &h.dims {
        let reach = (d.size as i64 - 1) * d.stride * es;
        if reach < 0 {
            lo += reach;
        } else {
            hi += reach;
        }
    }
    (lo, hi)
}

/// Where instruction `t` of layout `old` is once the positions `removed` (sorted) are
/// gone from it (`layout`): itself, or the next one that remains when it was removed.
fn relocated(old: &[TInst], layout: &[TInst], removed: &[usize], t: TInst) -> Option<TInst> {
    let k = old.iter().position(|&u| u == t)?;
    let gone = removed.iter().filter(|&&r| r < k).count();
    layout.get(k - gone).copied()
}

/// The shape of one convolution, 1-D as 2-D of height 1.
#[derive(Clone, Copy, Debug)]
pub struct Geom {
    pub(super) n: u64,
    pub(super) c: u64,
    pub(super) h: u64,
    pub(super) w: u64,
    pub(super) o: u64,
    pub(super) kh: u64,
    pub(super) kw: u64,
    pub(super) oh: u64,
    pub(super) ow: u64,
    pub(super) sh: u64,
    pub(super) sw: u64,
    pub(super) ph: u64,
    pub(super) pw: u64,
    pub(super) dh: u64,
    pub(super) dw: u64,
}

impl Geom {
    pub(super) fn new(xs: &[u64], ws: &[u64], a: &ConvAttrs) -> Option<Geom> {
        let (n, c, o) = (xs[0], xs[1], ws[0]);
        match xs.len() {
            3 => Some(Geom {
                n,
                c,
                h: 1,
                w: xs[2],
                o,
                kh: 1,
                kw: ws[2],
                oh: 1,
                ow: a.out_len(0, xs[2], ws[2])?,
                sh: 1,
                sw: a.stride[0],
                ph: 0,
                pw: a.padding[0],
                dh: 1,
                dw: a.dilation[0],
            }),
            4 => Some(Geom {
                n,
                c,
                h: xs[2],
                w: xs[3],
                o,
                kh: ws[2],
                kw: ws[3],
                oh: a.out_len(0, xs[2], ws[2])?,
                ow: a.out_len(1, xs[3], ws[3])?,
                sh: a.stride[0],
                sw: a.stride[1],
                ph: a.padding[0],
                pw: a.padding[1],
                dh: a.dilation[0],
                dw: a.dilation[1],
            }),
            _ => None,
        }
    }

    fn hp(&self) -> u64 {
        self.h + 2 * self.ph
    }

    fn wp(&self) -> u64 {
        self.w + 2 * self.pw
    }

    fn taps(&self) -> u64 {
        self.kh * self.kw
    }

    /// The blocks of output positions of one PSUM tile: `(oh0, ohs, ow0, ows)`, whole
    /// output rows (as many as fit a bank, balanced) or pieces of one long row.
    fn blocks(&self) -> Vec<(u64, u64, u64, u64)> {
        let mut out = Vec::new();
        if self.ow <= BANK_COLS {
            let most = BANK_COLS / self.ow;
            let count = self.oh.div_ceil(most);
            let rows = self.oh.div_ceil(count);
            let mut r = 0;
            while r < self.oh {
                let n = rows.min(self.oh - r);
                out.push((r, n, 0, self.ow));
                r += n;
            }
        } else {
            for r in 0..self.oh {
                let mut c = 0;
                while c < self.ow {
                    let n = BANK_COLS.min(self.ow - c);
                    out.push((r, 1, c, n));
                    c += n;
                }
            }
        }
        out
    }
}

/// Where a padded image goes: a tile, its first partition and partition count, and the
/// element where the image starts in each partition.
type Spot = (Tile, u32, u32, u64);

/// Every partition of each of `tiles`, from its start.
fn whole(tiles: &[Tile]) -> Vec<Spot> {
    tiles.iter().map(|&t| (t, 0, t.parts, 0)).collect()
}

/// Image slot `slot` of each of `tiles` (padded images side by side), from partition 0.
fn at_slot(tiles: &[Tile], slot: u64, g: &Geom) -> Vec<(Tile, u32, u64)> {
    tiles
        .iter()
        .map(|&t| (t, 0, slot * g.hp() * g.wp()))
        .collect()
}

/// Chunks of up to 128 of `n`: `(start, size)`.
fn chunks128(n: u64) -> Vec<(u64, u64)> {
    (0..n.div_ceil(128))
        .map(|i| (i * 128, 128.min(n - i * 128)))
        .collect()
}

/// Moving columns per cycle of a matmul whose operands are `dtype`.
fn rate(dtype: Dtype) -> f64 {
    match dtype {
        Dtype::F32 => 0.5,
        d if d.is_fp8() => 4.0,
        _ => 2.0,
    }
}

/// A matmul's cycles for `cols` moving columns.
fn matmul_cycles(cols: u64, rate: f64) -> f64 {
    (cols as f64 / rate).max(32.0)
}

/// Bytes a DMA is charged for `runs` contiguous runs of `len` bytes each.
fn run_bytes(runs: u64, len: u64) -> f64 {
    (runs * len.max(64)) as f64
}

/// The estimated Tensor and DMA cycles of implicit GEMM for a convolution of `g` with
/// operands of `dtype`: one matmul per tap and channel chunk for each PSUM tile and a
/// transpose per tap and channel chunk of the weights; the input once (a padded image is
/// DMA'd row by row), the weights once, the output once.
fn implicit_parts(g: &Geom, dtype: Dtype) -> (f64, f64) {
    let es = dtype.size() as u64;
    let r = rate(dtype);
    let taps = g.taps();
    let (cch, och) = (g.c.div_ceil(128), g.o.div_ceil(128));
    let out_bytes = (g.n * g.o * g.oh * g.ow * 2) as f64;
    let w_bytes = (g.o * g.c * taps * es) as f64;
    let per_image: f64 = g.blocks().iter().map(|b| matmul_cycles(b.1 * b.3, r)).sum();
    let tensor = (g.n * och) as f64 * (taps * cch) as f64 * per_image
        + (taps * cch * och) as f64 * matmul_cycles(128, r);
    let x_bytes = if g.ph == 0 && g.pw == 0 {
        run_bytes(g.n * g.c, g.h * g.w * es)
    } else {
        run_bytes(g.n * g.c * g.h, g.w * es)
    };
    (tensor, (x_bytes + w_bytes + out_bytes) / 256.0)
}

/// Window taps packed two to a matmul (see the module comment): the matmuls of one PSUM
/// tile in tap order, each one tap (`K = C`) or two consecutive ones (`K = 2C`, the second
/// tap's channels on partitions `C..2C`, read from a copy of the input shifted by the
/// distance between the two taps).
#[derive(Clone, Debug, PartialEq)]
pub struct Pack {
    /// Per matmul: its first tap, and whether the next tap is paired with it.
    groups: Vec<(u64, bool)>,
    /// Per matmul, the copy of the input its second tap reads (0 for a single tap).
    copy: Vec<usize>,
    /// Per copy, its shift in elements of the padded image.
    shifts: Vec<u64>,
}

impl Pack {
    /// Elements of each copy's region in a partition: the padded image after room for
    /// the largest shift (the upper partitions' copy starts that much earlier).
    fn region(&self, g: &Geom) -> u64 {
        self.lead() + g.hp() * g.wp()
    }

    /// Where the padded image starts in each copy's region (the largest shift).
    fn lead(&self) -> u64 {
        self.shifts.iter().copied().max().unwrap_or(0)
    }
}

/// Where tap `t`'s window starts in the padded image, in elements (row-major taps).
fn tap_offset(g: &Geom, t: u64) -> u64 {
    (t / g.kw) * g.dh * g.wp() + (t % g.kw) * g.dw
}

/// The ways of packing `g`'s taps two to a matmul, or none. Two taps share a matmul's
/// partitions only where the second half can start at partition `C` by docs/machine.md's
/// rule for a tile's first partition (`C` 32 or 64), so `2C <= 128`. Two packings are
/// offered: every two consecutive taps (up to two shifted copies for a 2-D window, a row's
/// step and the step from one row's last tap to the next row's first), and only taps
/// next to each other in one window row (one copy).
fn packings(g: &Geom) -> Vec<Pack> {
    if !(g.c == 32 || g.c == 64) || g.taps() < 2 {
        return Vec::new();
    }
    let make = |pair: &dyn Fn(u64) -> bool| {
        let mut pack = Pack {
            groups: Vec::new(),
            copy: Vec::new(),
            shifts: Vec::new(),
        };
        let mut t = 0;
        while t < g.taps() {
            if t + 1 < g.taps() && pair(t) {
                let shift = tap_offset(g, t + 1) - tap_offset(g, t);
                let copy = match pack.shifts.iter().position(|&s| s == shift) {
                    Some(i) => i,
                    None => {
                        pack.shifts.push(shift);
                        pack.shifts.len() - 1
                    }
                };
                pack.groups.push((t, true));
                pack.copy.push(copy);
                t += 2;
            } else {
                pack.groups.push((t, false));
                pack.copy.push(0);
                t += 1;
            }
        }
        pack
    };
    let mut out = vec![make(&|_| true)];
    let rows = make(&|t| t % g.kw + 1 < g.kw);
    if !rows.shifts.is_empty() && rows != out[0] {
        out.push(rows);
    }
    out
}

/// The estimated Tensor and DMA cycles of implicit GEMM with taps packed by `pack`: one
/// matmul per group for each PSUM tile, the weights' transposes as before, and the input
/// loaded twice (the image on partitions `0..C` and the first copy's shifted one on
/// `C..2C`); each later copy is two copies on Vector (`64 + N` a half), counted in the
/// DMA's column where they take longer.
fn packed_parts(g: &Geom, dtype: Dtype, pack: &Pack) -> (f64, f64) {
    let es = dtype.size() as u64;
    let r = rate(dtype);
    let och = g.o.div_ceil(128);
    let out_bytes = (g.n * g.o * g.oh * g.ow * 2) as f64;
    let w_bytes = (g.o * g.c * g.taps() * es) as f64;
    let per_image: f64 = g.blocks().iter().map(|b| matmul_cycles(b.1 * b.3, r)).sum();
    let tensor = (g.n * och) as f64 * pack.groups.len() as f64 * per_image
        + (g.taps() * och) as f64 * matmul_cycles(128, r);
    let x_bytes = run_bytes(g.n * g.c * g.h, g.w * es);
    let dma = (2.0 * x_bytes + w_bytes + out_bytes) / 256.0;
    let later = pack.shifts.len().saturating_sub(1) as u64;
    let vector = (g.n * later * 2 * (64 + g.hp() * g.wp())) as f64;
    (tensor, dma.max(vector))
}

/// The cheapest packing of `g`'s taps that fits the SBUF budgets and beats one matmul per
/// tap by the cost estimate, with its estimated cycles.
fn best_packing(g: &Geom, dtype: Dtype) -> Option<(Pack, f64)> {
    let es = dtype.size() as u64;
    let (t, d) = implicit_parts(g, dtype);
    let plain = t.max(d);
    packings(g)
        .into_iter()
        .filter(|p| {
            p.shifts.len() as u64 * p.region(g) * es <= INPUT_BUDGET
                && p.groups.len() as u64 * g.o * es <= WEIGHT_BUDGET
        })
        .map(|p| {
            let (t, d) = packed_parts(g, dtype, &p);
            (p, t.max(d))
        })
        .filter(|(_, cost)| *cost < plain)
        .min_by(|a, b| a.1.total_cmp(&b.1))
}

/// The estimated cycles (the larger of Tensor and DMA) of implicit GEMM and of the window
/// matrix, for a convolution of `g` with operands of `dtype`.
pub fn estimates(g: &Geom, dtype: Dtype) -> (f64, f64) {
    let es = dtype.size() as u64;
    let r = rate(dtype);
    let taps = g.taps();
    let och = g.o.div_ceil(128);
    let positions = g.oh * g.ow;
    let out_bytes = (g.n * g.o * positions * 2) as f64;
    let w_bytes = (g.o * g.c * taps * es) as f64;
    let (tensor_i, dma_i) = implicit_parts(g, dtype);
    let implicit = match best_packing(g, dtype) {
        Some((_, packed)) => packed,
        None => tensor_i.max(dma_i),
    };
    // The window matrix: K = taps x C in chunks of 128, N in blocks of 512 positions.
    let k = taps * g.c;
    let blocks = positions.div_ceil(BANK_COLS);
    let tensor_c = (g.n * och * k.div_ceil(128)) as f64
        * (0..blocks)
            .map(|b| matmul_cycles(BANK_COLS.min(positions - b * BANK_COLS), r))
            .sum::<f64>();
    let plain = taps == 1 && g.ph == 0 && g.pw == 0 && g.sh == 1 && g.sw == 1;
    let dma_c = if plain {
        // The input is the matmul's operand as it is; the weights are prepared per image.
        run_bytes(g.n * g.c, positions * es) + g.n as f64 * w_bytes + out_bytes
    } else {
        let matrix = (g.n * k * positions * es) as f64;
        // Each tap's slice: one run per output row, or per element when strided.
        let slice_runs = if g.sw == 1 {
            run_bytes(g.n * k * g.oh, g.ow * es)
        } else {
            run_bytes(g.n * k * positions, es)
        };
        let pad = if g.ph > 0 || g.pw > 0 {
            2.0 * (g.n * g.c * g.hp() * g.wp() * es) as f64
        } else {
            0.0
        };
        slice_runs + 2.0 * matrix + pad + w_bytes + out_bytes
    };
    // Each round trip through HBM before the matmul (the padded copy, the window matrix)
    // adds a DMA latency that nothing overlaps.
    let trips = if plain {
        0
    } else {
        1 + u64::from(g.ph > 0 || g.pw > 0)
    };
    let im2col = tensor_c.max(dma_c / 256.0) + (trips * DMA_LATENCY) as f64;
    (implicit, im2col)
}

/// How the tile pass computes one convolution's matmul by implicit GEMM.
#[derive(Clone, Debug)]
pub struct ConvPlan {
    /// The matmul the `conv` pass made.
    pub matmul: Inst,
    pub x: Value,
    pub w: Value,
    geom: Geom,
    /// Taps packed two to a matmul, when that is cheaper.
    pack: Option<Pack>,
    /// The window tile built in SBUF instead (few input channels, `conv_im2col.rs`).
    window: Option<super::conv_im2col::WindowPlan>,
}

/// The implicit-GEMM plan of a recorded convolution, when it applies and the cost estimate
/// favours it; `None` leaves its matmul to the window matrix.
pub fn plan(
    func: &Function,
    grouping: &Grouping,
    layout: &Layout,
    rec: &Implicit,
) -> Option<ConvPlan> {
    let ValueDef::Inst(mm) = func.values[rec.matmul].def else {
        return None;
    };
    if func.insts[mm].op != TOp::Matmul || rec.attrs.groups != 1 {
        return None;
    }
    let gi = grouping.group_of[mm]?;
    if grouping.groups[gi as usize].root != Root::Matmul(mm) {
        return None;
    }
    if layout.matmul(mm).is_some_and(|p| p.swapped) || layout.transposed[rec.matmul] {
        return None;
    }
    let (xt, wt) = (func.ty(rec.x), func.ty(rec.w));
    let dtype = xt.dtype;
    if wt.dtype != dtype || !dtype.is_float() {
        return None;
    }
    let geom = Geom::new(&xt.shape, &wt.shape, &rec.attrs)?;
    let out = &func.ty(rec.matmul).shape;
    if out != &[geom.n, geom.o, geom.oh * geom.ow] {
        return None;
    }
    let es = dtype.size() as u64;
    let input = geom.c.div_ceil(128) * geom.hp() * geom.wp() * es;
    let weights = geom.c.div_ceil(128) * geom.taps() * geom.o * es;
    let rows = geom.c * geom.taps() * es;
    let fits = input <= INPUT_BUDGET && weights <= WEIGHT_BUDGET && rows <= INPUT_BUDGET;
    let (implicit, im2col) = estimates(&geom, dtype);
    // Few input channels: a window tile built in SBUF (`conv_im2col.rs`), where its
    // estimate beats the others.
    let best = if fits { implicit.min(im2col) } else { im2col };
    let window = super::conv_im2col::plan(&xt.shape, &wt.shape, &rec.attrs, dtype)
        .filter(|p| p.cycles < best);
    if !fits && window.is_none() {
        return None;
    }
    (window.is_some() || implicit <= im2col).then(|| ConvPlan {
        matmul: mm,
        x: rec.x,
        w: rec.w,
        geom,
        pack: best_packing(&geom, dtype)
            .map(|p| p.0)
            .filter(|_| window.is_none()),
        window,
    })
}

impl Tiler<'_> {
    /// Lowers the matmul group `grp` of a convolution by implicit GEMM (see the module
    /// comment).
    pub(super) fn lower_conv(
        &mut self,
        grp: &crate::passes::fusion::Group,
        p: &ConvPlan,
    ) -> Result<(), String> {
        if let Some(win) = &p.window {
            return self.lower_window(grp, p.matmul, (p.x, p.w), win);
        }
        let g = p.geom;
        self.epilogue_tail.clear();
        self.conv_anchors.clear();
        self.epilogue_load = (0, 0);
        let region = self.out.layout.len();
        let mut image_starts: Vec<TInst> = Vec::new();
        let span = self.func.spans[p.matmul];
        let xv = self.home_of(p.x)?;
        let wv = self.home_of(p.w)?;
        let dt = xv.dtype;
        let es = dt.size() as u64;
        let taps = g.taps();
        // The weights' rows `[O, C x taps]` must be contiguous in HBM.
        let ws = &wv.strides;
        let dense_rows = ws[ws.len() - 1] == 1
            && (1..ws.len() - 1).all(|a| ws[a] == ws[a + 1] * wv.shape[a + 1] as i64);
        if !dense_rows {
            return Err(format!(
                "{}: implicit GEMM needs contiguous weight rows",
                p.matmul
            ));
        }
        let cch = chunks128(g.c);
        let och = chunks128(g.o);
        let blocks = g.blocks();
        // Output channel blocks outermost (every image resident) where the Tensor engine is
        // the bottleneck and there are several blocks: the first block's matmuls then need
        // only the first block's weights, and the other blocks' weights are transposed by
        // GpSimd while the PE array works (see the module comment).
        let (tensor, dma) = implicit_parts(&g, dt);
        let image_bytes = cch.len() as u64 * g.hp() * g.wp() * es;
        // A convolution whose output another convolution reads keeps the image order, so
        // that the next one can run image by image behind it ([`Self::chain_convs`]).
        let feeds_conv = self
            .convs
            .iter()
            .any(|q| source_inst(self.func, q.x).is_some_and(|i| grp.insts.contains(&i)));
        let och_outer = p.pack.is_none()
            && !feeds_conv
            && och.len() > 1
            && tensor > dma
            && g.n * image_bytes <= RESIDENT_BUDGET;
        // Transposed weights: per channel chunk one tile, the stationary operand of output
        // block `(o0, osz)` and tap `t` at column `o0 x taps + t x osz`.
        // With taps packed, one tile `[2C, groups x O]`: the stationary operand of output
        // block `(o0, osz)` and matmul group `i` at column `o0 x groups + i x osz`.
        let wt: Vec<Tile> = match &p.pack {
            Some(pack) => {
                let cols = pack.groups.len() as u64 * g.o;
                vec![self.sbuf_tile(dt, (2 * g.c) as u32, cols as u32)]
            }
            None => cch
                .iter()
                .map(|&(_, csz)| self.sbuf_tile(dt, csz as u32, (taps * g.o) as u32))
                .collect(),
        };
        // Epilogue operands broadcast over the images (a bias `[1, O, 1]`) are loaded once
        // per block of output channels and kept for the later images, instead of a load
        // (and its DMA latency) before every tile's epilogue.
        self.reuse_space = Some(grp.space.clone());
        let tiles = och.len() * blocks.len();
        // The first block's weights go first on the DMA queues, ahead of the first image
        // (whose load waits for its border's memsets): the first matmuls need both.
        let images: Vec<Tile> = if och_outer {
            cch.iter()
                .map(|&(_, csz)| self.sbuf_tile(dt, csz as u32, (g.n * g.hp() * g.wp()) as u32))
                .collect()
        } else {
            Vec::new()
        };
        if och_outer {
            // Every image in one tile per channel chunk, side by side: four memsets a
            // chunk for all the borders, on Vector (idle until the epilogues; ahead of the
            // weights' copies out of PSUM, which wait for the weights), since GpSimd
            // transposes weights here.
            self.image_borders(&g, &whole(&images), g.n, Engine::Vector, span);
        }
        self.block_weights(&g, p, &wv, &cch, och[0], &wt, span);
        if och_outer {
            // The first four images go ahead of the later blocks' weights on the DMA
            // queues, the other images after them.
            let early = g.n.min(4);
            for n in 0..early {
                self.image_dma(&g, &xv, &cch, &at_slot(&images, n, &g), n, true, span);
            }
            // GpSimd transposes the later blocks' weights while it finishes each before
            // the PE array needs it (one block's pass over every image later per block);
            // the rest are transposed on the PE array right before their pass.
            let pass = tensor / och.len() as f64;
            let mut gpsimd = 0.0;
            let mut on_pe = vec![false; och.len()];
            for (j, &ob) in och.iter().enumerate().skip(1) {
                let cost: f64 = cch
                    .iter()
                    .map(|&(_, csz)| (taps * (64 + 4 * ob.1.max(csz))) as f64)
                    .sum();
                if gpsimd + cost <= j as f64 * pass {
                    gpsimd += cost;
                    self.conv_weights(&g, &wv, &cch, ob, &wt, true, span);
                } else {
                    on_pe[j] = true;
                }
            }
            for n in early..g.n {
                self.image_dma(&g, &xv, &cch, &at_slot(&images, n, &g), n, true, span);
            }
            for (j, &ob) in och.iter().enumerate() {
                if on_pe[j] {
                    self.conv_weights(&g, &wv, &cch, ob, &wt, false, span);
                }
                for n in 0..g.n {
                    let last = j + 1 == och.len() && n + 1 == g.n;
                    let at = n * g.hp() * g.wp();
                    for (bi, &b) in blocks.iter().enumerate() {
                        let end = last && bi + 1 == blocks.len();
                        self.conv_tile(grp, p, n, ob, b, (&images, at), &wt, end, tiles)?;
                    }
                }
            }
        } else {
            // With taps packed, images are loaded two ahead, and the next image's later
            // copies (Vector, [`Self::packed_copies`]) go in pieces between this image's
            // tiles, so that no epilogue waits behind a copy that waits for a load; the
            // first image's go ahead of its first tile, in two halves that the `engines`
            // pass may put on Vector and Scalar side by side (pieces ahead of each tile
            // measured slower: 81,355 cycles against 72,907 for ResNet-50's conv2_x).
            let image = g.hp() * g.wp();
            let mut copied = 0;
            let ahead = if p.pack.is_some() { 2 } else { 1 };
            let mut loaded = std::collections::VecDeque::new();
            loaded.push_back(self.conv_input(&g, p, &xv, &cch, 0, true, span));
            for &ob in &och[1..] {
                self.block_weights(&g, p, &wv, &cch, ob, &wt, span);
            }
            for m in 1..ahead.min(g.n) {
                loaded.push_back(self.conv_input(&g, p, &xv, &cch, m, false, span));
            }
            for n in 0..g.n {
                if n > 0 {
                    image_starts.push(TInst::new(self.out.insts.len()));
                }
                let cur = loaded.pop_front().ok_or("an image's input not loaded")?;
                if n + ahead < g.n {
                    let next = self.conv_input(&g, p, &xv, &cch, n + ahead, false, span);
                    loaded.push_back(next);
                }
                for (j, &ob) in och.iter().enumerate() {
                    for (bi, &b) in blocks.iter().enumerate() {
                        // The last tile goes in pieces only at the kernel's end: a result
                        // another convolution reads is then read from one tile in SBUF
                        // (`conv_forward.rs`).
                        let end = n + 1 == g.n
                            && j + 1 == och.len()
                            && bi + 1 == blocks.len()
                            && !feeds_conv;
                        if let (Some(pack), 0, 0) = (&p.pack, n, copied) {
                            let half = image / 2;
                            self.packed_copies(&g, pack, cur[0], (0, half), span);
                            self.packed_copies(&g, pack, cur[0], (half, image), span);
                            copied = image;
                        }
                        self.conv_tile(grp, p, n, ob, b, (&cur, 0), &wt, end, tiles)?;
                        // The second image's load runs beside the first's, so its copies
                        // go in the first image's second half.
                        let from = if n == 0 { tiles as u64 / 2 } else { 0 };
                        let idx = (j * blocks.len() + bi) as u64;
                        if let (Some(pack), Some(next), true) =
                            (&p.pack, loaded.front(), idx >= from)
                        {
                            let (piece, pieces) = (idx - from, tiles as u64 - from);
                            let range = (image * piece / pieces, image * (piece + 1) / pieces);
                            self.packed_copies(&g, pack, next[0], range, span);
                        }
                    }
                }
            }
        }
        self.last_stores = false;
        self.reuse_space = None;
        // The last tile's tail stays at the end of the layout.
        self.epilogue_tail.clear();
        let prev = self.conv_chain.take();
        let mut start = self.out.layout.get(region).copied();
        if let (Some(prev), false) = (prev, och_outer) {
            let reads_prev = source_inst(self.func, p.x).is_some_and(|i| prev.insts.contains(&i));
            if reads_prev && prev.end == region && prev.images.len() == image_starts.len() {
                // Image `n` loads image `n + ahead` (two ahead with taps packed).
                let lag = if p.pack.is_some() { 3 } else { 2 };
                if self.chain_convs(&prev, region, &image_starts, lag) {
                    start = Some(prev.start);
                }
            }
        }
        // Loads of what SBUF still holds (the residual's `x`, a previous convolution's
        // result) are served from SBUF (`conv_forward.rs`). Instructions the next
        // convolution's chaining names stay found: a removed one is replaced by the next
        // one that remains.
        if let Some(s) = start {
            if let Some(from) = self.out.layout.iter().position(|&t| t == s) {
                let old = self.out.layout.clone();
                let removed = self.forward_conv_loads(from);
                if !removed.is_empty() {
                    let layout = &self.out.layout;
                    start = relocated(&old, layout, &removed, s);
                    image_starts = image_starts
                        .into_iter()
                        .filter_map(|t| relocated(&old, layout, &removed, t))
                        .collect();
                }
            }
        }
        if let (Some(start), false) = (start, och_outer) {
            self.conv_chain = Some(super::ConvChain {
                start,
                images: image_starts,
                insts: grp.insts.clone(),
                end: self.out.layout.len(),
            });
        }
        Ok(())
    }

    /// Runs a convolution image by image behind the previous one, whose output it reads:
    /// its instructions (from layout position `region` on, image `n`'s from `images[n -
    /// 1]`) go between the previous convolution's images (`prev`), image `n` after the
    /// previous one's image `n + lag` (image `n` loads image `n + lag - 1` ahead, and the
    /// previous one's last store of an image is deferred into its next image, so those
    /// stores are then in the layout before it). Each engine's stream then
    /// alternates between the two, so that one's epilogue work overlaps the other's
    /// matmuls. An image's instructions move only where no instruction they jump over
    /// writes memory they read or write or reads memory they write (HBM by the bytes each
    /// transfer touches, SBUF and PSUM by buffer): the same instructions, the same bits.
    /// Returns whether they moved.
    fn chain_convs(
        &mut self,
        prev: &super::ConvChain,
        region: usize,
        images: &[TInst],
        lag: usize,
    ) -> bool {
        let layout = &self.out.layout;
        let pos = |t: TInst| layout.iter().position(|&u| u == t);
        let Some(r0) = pos(prev.start) else {
            return false;
        };
        let mut pb = vec![r0];
        for &t in &prev.images {
            match pos(t) {
                Some(k) => pb.push(k),
                None => return false,
            }
        }
        pb.push(region);
        let mut sb = vec![region];
        for &t in images {
            match pos(t) {
                Some(k) => sb.push(k),
                None => return false,
            }
        }
        sb.push(layout.len());
        if pb.windows(2).any(|w| w[0] > w[1]) || sb.windows(2).any(|w| w[0] > w[1]) {
            return false;
        }
        let count = images.len() + 1;
        let piece = |b: &[usize], k: usize| layout[b[k]..b[k + 1]].to_vec();
        let pieces: Vec<Vec<TInst>> = (0..count).map(|k| piece(&pb, k)).collect();
        let segs: Vec<Vec<TInst>> = (0..count).map(|k| piece(&sb, k)).collect();
        for n in 0..count.saturating_sub(lag + 1) {
            let over: Vec<TInst> = pieces[n + lag + 1..].concat();
            if self.conflicts_hbm(&segs[n], &over) {
                return false;
            }
        }
        let mut moved = layout[..r0].to_vec();
        for k in 0..count {
            moved.extend_from_slice(&pieces[k]);
            if k >= lag {
                moved.extend_from_slice(&segs[k - lag]);
            }
        }
        for seg in &segs[count.saturating_sub(lag)..] {
            moved.extend_from_slice(seg);
        }
        debug_assert_eq!(moved.len(), layout.len());
        self.out.layout = moved;
        true
    }

    /// [`Self::conflicts`] with HBM compared by the bytes each transfer touches: true when
    /// an instruction of `over` writes memory that one of `seg` reads or writes, or reads
    /// memory that one of `seg` writes.
    fn conflicts_hbm(&self, seg: &[TInst], over: &[TInst]) -> bool {
        let access = |t: TInst| {
            let inst = &self.out.insts[t];
            let mut spans = Vec::new();
            inst.op.visit_aps(&mut |ap, _| {
                spans.push(match ap {
                    isa::ApRef::Hbm(h) => Some(hbm_span(h)),
                    isa::ApRef::Tile(_) => None,
                })
            });
            inst.buf_accesses()
                .into_iter()
                .zip(spans.into_iter().chain(std::iter::repeat(None)))
                .map(|((b, a), s)| (b, a, s))
                .collect::<Vec<_>>()
        };
        let mine: Vec<_> = seg.iter().flat_map(|&t| access(t)).collect();
        over.iter().any(|&t| {
            access(t).iter().any(|&(b, a, s)| {
                mine.iter().any(|&(mb, ma, ms)| {
                    if mb != b || (a == Access::Read && ma == Access::Read) {
                        return false;
                    }
                    let hbm = !self.out.bufs[b].is_tile();
                    match (hbm, s, ms) {
                        (true, Some((lo, hi)), Some((mlo, mhi))) => lo < mhi && mlo < hi,
                        _ => true,
                    }
                })
            })
        })
    }

    /// The stationary weights of output block `ob` into `wt`: one tile per tap and channel
    /// chunk on the PE array ([`Self::conv_weights`]), or packed ([`Self::packed_weights`]).
    #[allow(clippy::too_many_arguments)]
    fn block_weights(
        &mut self,
        g: &Geom,
        p: &ConvPlan,
        wv: &super::view::HView,
        cch: &[(u64, u64)],
        ob: (u64, u64),
        wt: &[Tile],
        span: crate::ir::Span,
    ) {
        match &p.pack {
            Some(pack) => self.packed_weights(g, wv, pack, ob, wt[0], span),
            None => self.conv_weights(g, wv, cch, ob, wt, false, span),
        }
    }

    /// Image `n`'s input: [`Self::load_image`], or with taps packed
    /// [`Self::load_packed`] (one tile).
    #[allow(clippy::too_many_arguments)]
    fn conv_input(
        &mut self,
        g: &Geom,
        p: &ConvPlan,
        xv: &super::view::HView,
        cch: &[(u64, u64)],
        n: u64,
        first: bool,
        span: crate::ir::Span,
    ) -> Vec<Tile> {
        match &p.pack {
            Some(pack) => vec![self.load_packed(g, xv, pack, n, first, span)],
            None => self.load_image(g, xv, cch, n, first, span),
        }
    }

    /// The weight rows `[osz, C x taps]` of output block `(o0, osz)`, loaded into a new
    /// SBUF tile (contiguous rows in HBM, one run each).
    fn weight_rows(
        &mut self,
        g: &Geom,
        wv: &super::view::HView,
        (o0, osz): (u64, u64),
        span: crate::ir::Span,
    ) -> Tile {
        let ws = &wv.strides;
        let cols = g.c * g.taps();
        let rows = self.sbuf_tile(wv.dtype, osz as u32, cols as u32);
        let at = wv.offset + o0 as i64 * ws[0];
        self.dma_2d(rows, wv, at, (osz, ws[0]), (cols, 1), span);
        rows
    }

    /// Loads the weight rows of output block `(o0, osz)` and transposes them into `wt`
    /// packed as `pack` groups the taps: per group a PSUM tile `[K, osz]` (`K` = C, or 2C
    /// with the second tap's transpose on partitions `C..2C`), copied out at column
    /// `o0 x groups + group x osz`. The partition index of a pair is `tap x C + c` over
    /// its two taps, the reduction's order.
    fn packed_weights(
        &mut self,
        g: &Geom,
        wv: &super::view::HView,
        pack: &Pack,
        (o0, osz): (u64, u64),
        wt: Tile,
        span: crate::ir::Span,
    ) {
        let dt = wv.dtype;
        let taps = g.taps();
        let rows = self.weight_rows(g, wv, (o0, osz), span);
        let ng = pack.groups.len() as u64;
        for (gi, &(t, pair)) in pack.groups.iter().enumerate() {
            let members = if pair { 2 } else { 1 };
            let k = members * g.c;
            let bank = self.psum_tile(dt, k, osz);
            for h in 0..members {
                let dst = bank.slice((h * g.c) as u32, g.c as u32, 0, osz as u32);
                let src = tile_ap(dt, 0, osz as u32, t + h, &[(g.c, taps as i64)], false);
                self.out.push(
                    Op::Transpose { out: dst, src },
                    Engine::Tensor,
                    &[bank.buf, rows.buf],
                    span,
                );
            }
            let dst = wt.slice(0, k as u32, (o0 * ng + gi as u64 * osz) as u32, osz as u32);
            self.copy_out(dst, bank.ap(), &[wt.buf, bank.buf], span);
        }
    }

    /// Image `n`'s input with taps packed by `pack`: one tile of `2C` partitions holding,
    /// per shifted copy, a region of [`Pack::region`] elements: the padded image on
    /// partitions `0..C` from [`Pack::lead`] and the same image on partitions `C..2C`
    /// starting the copy's shift earlier, so that one address reads tap `t` below and tap
    /// `t + 1` above. Each half gets its border memsets (GpSimd) and its interior by DMA.
    fn load_packed(
        &mut self,
        g: &Geom,
        xv: &super::view::HView,
        pack: &Pack,
        n: u64,
        first: bool,
        span: crate::ir::Span,
    ) -> Tile {
        let c = g.c;
        let region = pack.region(g);
        let lead = pack.lead();
        let cols = pack.shifts.len() as u64 * region;
        let tile = self.sbuf_tile(xv.dtype, (2 * c) as u32, cols as u32);
        for (p0, at) in [(0, lead), (c as u32, lead - pack.shifts[0])] {
            self.image_borders(g, &[(tile, p0, c as u32, at)], 1, Engine::GpSimd, span);
            self.image_dma(g, xv, &[(0, c)], &[(tile, p0, at)], n, first, span);
        }
        tile
    }

    /// Elements `e0..e1` of each partition's image in the later shifted copies of a packed image `tile`
    /// ([`Self::load_packed`] loads only the first): each half of each later region is
    /// copied from the first region's same half, partition for partition (borders
    /// included), on Vector, instead of loading the image again by DMA. An exact copy:
    /// the values pass through f32 unchanged.
    fn packed_copies(
        &mut self,
        g: &Geom,
        pack: &Pack,
        tile: Tile,
        (e0, e1): (u64, u64),
        span: crate::ir::Span,
    ) {
        let (c, region, lead) = (g.c as u32, pack.region(g), pack.lead());
        if e1 == e0 {
            return;
        }
        for (r, &shift) in pack.shifts.iter().enumerate().skip(1) {
            let base = r as u64 * region + lead;
            for (p0, at, from) in [(0, base, lead), (c, base - shift, lead - pack.shifts[0])] {
                let dims = [(e1 - e0, 1)];
                let dst = tile_ap(tile.dtype, p0, c, at + e0, &dims, false);
                let src = tile_ap(tile.dtype, p0, c, from + e0, &dims, false);
                self.copy_out(dst, src, &[tile.buf, tile.buf], span);
            }
        }
    }

    /// Loads the weight rows of output block `(o0, osz)` and transposes them into `wt`,
    /// one `[C chunk, osz]` tile per tap: on the PE array (up to eight transposes a PSUM
    /// bank, one copy out; the first of each channel chunk alone in its bank, so that the
    /// first matmuls wait for one transpose and a short copy), or with `gpsimd` by GpSimd's
    /// `partition_transpose` (no PSUM bank, no copy, the PE array left to the matmuls).
    #[allow(clippy::too_many_arguments)]
    fn conv_weights(
        &mut self,
        g: &Geom,
        wv: &super::view::HView,
        cch: &[(u64, u64)],
        (o0, osz): (u64, u64),
        wt: &[Tile],
        gpsimd: bool,
        span: crate::ir::Span,
    ) {
        let dt = wv.dtype;
        let es = dt.size() as u64;
        let taps = g.taps();
        let rows = self.weight_rows(g, wv, (o0, osz), span);
        let per_bank = (2048 / (osz * es)).clamp(1, 8);
        for (ci, &(c0, csz)) in cch.iter().enumerate() {
            let src = |t: u64| {
                tile_ap(
                    dt,
                    0,
                    osz as u32,
                    c0 * taps + t,
                    &[(csz, taps as i64)],
                    false,
                )
            };
            if gpsimd {
                for t in 0..taps {
                    let dst = wt[ci].slice(0, csz as u32, (o0 * taps + t * osz) as u32, osz as u32);
                    self.out.push(
                        Op::PartitionTranspose {
                            out: dst,
                            src: src(t),
                        },
                        Engine::GpSimd,
                        &[wt[ci].buf, rows.buf],
                        span,
                    );
                }
                continue;
            }
            // Banks of 1, 1, 2, 4, 8 .. transposes: the first matmuls wait for short copies.
            let mut t = 0;
            while t < taps {
                let group = t.max(1).min(per_bank).min(taps - t);
                let bank = self.psum_tile(dt, csz, group * osz);
                for j in 0..group {
                    let dst = bank.slice(0, csz as u32, (j * osz) as u32, osz as u32);
                    self.out.push(
                        Op::Transpose {
                            out: dst,
                            src: src(t + j),
                        },
                        Engine::Tensor,
                        &[bank.buf, rows.buf],
                        span,
                    );
                }
                // Banks of four or more transposes are copied in two halves, which the
                // `engines` pass may put on Vector and Scalar side by side.
                let halves = if group >= 4 { 2 } else { 1 };
                let mut done = 0;
                for h in 0..halves {
                    let cnt = (group - done) / (halves - h);
                    let (c0, cn) = ((done * osz) as u32, (cnt * osz) as u32);
                    let dst = wt[ci].slice(0, csz as u32, (o0 * taps + t * osz) as u32 + c0, cn);
                    let src = bank.slice(0, csz as u32, c0, cn);
                    self.copy_out(dst, src, &[wt[ci].buf, bank.buf], span);
                    done += cnt;
                }
                t += group;
            }
        }
    }

    /// The PSUM tile of image `n`, output block `(o0, osz)` and positions `block`: one
    /// matmul per tap and channel chunk, then the group's epilogue. The kernel's very last
    /// tile (`end`) goes in up to four pieces of whole rows, so that only the last piece's
    /// epilogue and store follow the last matmul.
    #[allow(clippy::too_many_arguments)]
    fn conv_tile(
        &mut self,
        grp: &crate::passes::fusion::Group,
        p: &ConvPlan,
        n: u64,
        (o0, osz): (u64, u64),
        (oh0, ohs, ow0, ows): (u64, u64, u64, u64),
        (cur, at): (&[Tile], u64),
        wt: &[Tile],
        end: bool,
        tiles: usize,
    ) -> Result<(), String> {
        let g = p.geom;
        // Pieces of at least 64 positions, so that each matmul still costs more than the
        // Tensor engine's 32-cycle minimum.
        let pieces = ohs.min(4).min(ohs * ows / 64);
        if end && pieces > 1 {
            let mut r = 0;
            for i in 0..pieces {
                let rows = (ohs - r) / (pieces - i);
                let b = (oh0 + r, rows, ow0, ows);
                self.conv_tile(grp, p, n, (o0, osz), b, (cur, at), wt, false, tiles)?;
                r += rows;
            }
            return Ok(());
        }
        let span = self.func.spans[p.matmul];
        let dt = cur[0].dtype;
        let taps = g.taps();
        let wp = g.wp();
        let cols = ohs * ows;
        let psum = self.psum_tile(Dtype::F32, osz, cols);
        let mut first = true;
        let dims = [(ohs, (g.sh * wp) as i64), (ows, g.sw as i64)];
        let matmuls = self.out.layout.len();
        if let Some(pack) = &p.pack {
            // One matmul per group of taps: a pair reads the image below and its shifted
            // copy above at one address, so its K = 2C products come in tap x C + c order.
            let x = cur[0];
            let ng = pack.groups.len() as u64;
            let (region, lead) = (pack.region(&g), pack.lead());
            for (gi, &(t, pair)) in pack.groups.iter().enumerate() {
                let k = if pair { 2 * g.c } else { g.c } as u32;
                let col = o0 * ng + gi as u64 * osz;
                let stationary = wt[0].slice(0, k, col as u32, osz as u32);
                let off = at
                    + pack.copy[gi] as u64 * region
                    + lead
                    + oh0 * g.sh * wp
                    + ow0 * g.sw
                    + tap_offset(&g, t);
                let moving = tile_ap(dt, 0, k, off, &dims, false);
                self.out.push(
                    Op::Matmul {
                        out: psum.ap(),
                        stationary,
                        moving,
                        accumulate: gi > 0,
                    },
                    Engine::Tensor,
                    &[psum.buf, wt[0].buf, x.buf],
                    span,
                );
            }
        }
        for i in 0..g.kh {
            if p.pack.is_some() {
                break;
            }
            for j in 0..g.kw {
                let tap = i * g.kw + j;
                for (ci, x) in cur.iter().enumerate() {
                    let csz = x.parts;
                    let stationary =
                        wt[ci].slice(0, csz, (o0 * taps + tap * osz) as u32, osz as u32);
                    let off = at + (oh0 * g.sh + i * g.dh) * wp + ow0 * g.sw + j * g.dw;
                    let moving = tile_ap(dt, 0, csz, off, &dims, false);
                    self.out.push(
                        Op::Matmul {
                            out: psum.ap(),
                            stationary,
                            moving,
                            accumulate: !first,
                        },
                        Engine::Tensor,
                        &[psum.buf, wt[ci].buf, x.buf],
                        span,
                    );
                    first = false;
                }
            }
        }
        // Stores split over all the queues, as a kernel's last ones are, for the last
        // image (little is left to overlap them) and wherever an image has few tiles (one
        // store on one queue would hold it for a whole tile at 16 B/cycle). Not for many
        // tiles: 16 pieces each then crowd the queues ahead of the next image's loads
        // (ResNet-50's 1x1 256 -> 1024, eight tiles an image: 0.611 of the bound with the
        // last image's split, 0.608 with every tile's, and 0.50 against 0.30 before the
        // bias was kept across images; the 3x3 layers, two tiles an image, 0.72 and 0.63
        // against 0.74 and 0.68).
        self.last_stores = n + 1 == g.n || tiles <= 4;
        let start = self.out.layout.len();
        self.epilogue(
            grp,
            p.matmul,
            psum,
            &[AxisUse::Fixed(n)],
            (o0, osz),
            (oh0 * g.ow + ow0, cols),
            false,
        )?;
        if let Some(&anchor) = self.out.layout.get(matmuls) {
            self.conv_anchors.push(anchor);
        }
        // Two `tensor_scalar` steps in a row (ReLU6's max and min) become one
        // (`conv_epilogue.rs`).
        self.fuse_tensor_scalars(start);
        // Relu activations shared between Scalar and Vector (`conv_epilogue.rs`).
        self.balance_conv_relus(start);
        let epilogue = self.out.layout[start..].to_vec();
        self.overlap_epilogue(start);
        self.prefetch_epilogue_loads(&epilogue);
        Ok(())
    }

    /// Moves the loads of a convolution tile's epilogue (`epilogue`: its instructions,
    /// e.g. a residual `[O block, positions]` read from HBM) to just before the matmuls
    /// of the tile [`EPILOGUE_LOOKAHEAD`] tiles earlier. Emitted with its epilogue, a load
    /// issues only when its queue has issued the stores ahead of it, which wait for the
    /// previous tiles' epilogues, and then takes a DMA latency and its data phase: the
    /// epilogue's next step waits for that on every tile. Moved earlier, it overlaps the
    /// earlier tiles' work. A load moves only where nothing it jumps over writes a buffer
    /// it reads or writes or reads a buffer it writes, so every instruction stays after
    /// what it depends on: the same instructions, the same bits.
    fn prefetch_epilogue_loads(&mut self, epilogue: &[TInst]) {
        let loads: Vec<TInst> = epilogue
            .iter()
            .copied()
            .filter(|&t| {
                matches!(
                    &self.out.insts[t].op,
                    Op::Dma {
                        dst: isa::DmaAp::Tile(d),
                        src: isa::DmaAp::Hbm(_),
                    } if d.free_elems() > 1
                )
            })
            .collect();
        let count = self.conv_anchors.len();
        if loads.is_empty() || count < 2 {
            return;
        }
        let anchor = self.conv_anchors[count.saturating_sub(1 + EPILOGUE_LOOKAHEAD)];
        let layout = &self.out.layout;
        let Some(a) = layout.iter().rposition(|&t| t == anchor) else {
            return;
        };
        let over: Vec<TInst> = layout[a..]
            .iter()
            .copied()
            .filter(|t| !loads.contains(t))
            .collect();
        // Only the instructions before the last load are jumped over.
        let Some(end) = layout.iter().rposition(|t| loads.contains(t)) else {
            return;
        };
        if end < a {
            return;
        }
        let jumped: Vec<TInst> = layout[a..=end]
            .iter()
            .copied()
            .filter(|t| !loads.contains(t))
            .collect();
        if self.conflicts(&loads, &jumped) {
            return;
        }
        let mut moved = layout[..a].to_vec();
        moved.extend_from_slice(&loads);
        moved.extend(over);
        self.out.layout = moved;
    }

    /// Lets successive tiles' epilogues overlap (the epilogue emitted from layout position
    /// `start` on). An epilogue that comes back to an engine after a step on another (the
    /// bias on Scalar, the residual add on Vector, then the relu and the cast on Scalar
    /// again) would hold that engine, whose stream runs in order, until the other's step
    /// ends, and the next tile's first step would wait behind it: the steps of successive
    /// tiles would not overlap. So the epilogue's tail (from its first return to an engine
    /// on) is deferred, and the previous tile's tail moves after this tile's head (its
    /// matmuls and first steps), where the engines' streams interleave the two tiles.
    /// The move is made only where nothing it jumps over writes a buffer the tail reads or
    /// writes, or reads a buffer the tail writes, so every instruction stays after what
    /// it depends on: the same instructions on the same engines, the same bits.
    fn overlap_epilogue(&mut self, start: usize) {
        let layout = &self.out.layout;
        let epi = &layout[start..];
        // The tail: from the last compute instruction whose engine differs from the
        // previous compute instruction's. (The `engines` pass may later move a step
        // between Vector and Scalar, so that the head ends on the tail's engine: then the
        // next tile's head goes ahead of this tile's tail on that engine too.)
        let mut last: Option<Engine> = None;
        let mut split = None;
        for (k, &t) in epi.iter().enumerate() {
            let e = self.out.insts[t].engine;
            if matches!(e, Engine::Dma(_)) {
                continue;
            }
            if last.is_some_and(|l| l != e) {
                split = Some(start + k);
            }
            last = Some(e);
        }
        let head_end = split.unwrap_or(layout.len());
        let prev = std::mem::take(&mut self.epilogue_tail);
        if let Some(a) = prev
            .first()
            .and_then(|&t0| layout[..start].iter().rposition(|&t| t == t0))
        {
            let b = a + prev.len();
            if layout[a..b] == prev[..] && !self.conflicts(&prev, &layout[b..head_end]) {
                let mut moved = layout[..a].to_vec();
                moved.extend_from_slice(&layout[b..head_end]);
                moved.extend_from_slice(&prev);
                moved.extend_from_slice(&layout[head_end..]);
                self.out.layout = moved;
            }
        }
        if let Some(k) = split {
            self.epilogue_tail = self.out.layout[k..].to_vec();
        }
    }

    /// True when an instruction of `over` writes a buffer that `tail` reads or writes, or
    /// reads one that `tail` writes: `tail` may not move after `over`.
    fn conflicts(&self, tail: &[TInst], over: &[TInst]) -> bool {
        let (mut reads, mut writes) = (Vec::new(), Vec::new());
        for &t in tail {
            for (b, a) in self.out.insts[t].buf_accesses() {
                match a {
                    Access::Read => reads.push(b),
                    Access::Write => writes.push(b),
                }
            }
        }
        over.iter().any(|&t| {
            self.out.insts[t]
                .buf_accesses()
                .iter()
                .any(|&(b, a)| writes.contains(&b) || (a == Access::Write && reads.contains(&b)))
        })
    }

    /// Image `n`'s padded input, one tile per channel chunk: the border memset to zero on
    /// GpSimd (idle otherwise here, so the load never waits behind Vector's epilogue
    /// work), the interior loaded by DMA (`first`: in pieces for every queue, since the
    /// first matmuls wait for it).
    fn load_image(
        &mut self,
        g: &Geom,
        xv: &super::view::HView,
        cch: &[(u64, u64)],
        n: u64,
        first: bool,
        span: crate::ir::Span,
    ) -> Vec<Tile> {
        let dt = xv.dtype;
        let tiles: Vec<Tile> = cch
            .iter()
            .map(|&(_, csz)| self.sbuf_tile(dt, csz as u32, (g.hp() * g.wp()) as u32))
            .collect();
        self.image_borders(g, &whole(&tiles), 1, Engine::GpSimd, span);
        self.image_dma(g, xv, cch, &at_slot(&tiles, 0, g), n, first, span);
        tiles
    }

    /// Memsets to zero the padding border of `count` padded images side by side in each
    /// of `spots`: four instructions a spot whatever the count.
    fn image_borders(
        &mut self,
        g: &Geom,
        spots: &[Spot],
        count: u64,
        engine: Engine,
        span: crate::ir::Span,
    ) {
        let (hp, wp) = (g.hp(), g.wp());
        let image = (count, (hp * wp) as i64);
        let mut sets: Vec<(u64, Vec<(u64, i64)>)> = Vec::new();
        if g.ph > 0 {
            sets.push((0, vec![image, (g.ph * wp, 1)]));
            sets.push(((g.ph + g.h) * wp, vec![image, (g.ph * wp, 1)]));
        }
        if g.pw > 0 {
            let rows = vec![image, (g.h, wp as i64), (g.pw, 1)];
            sets.push((g.ph * wp, rows.clone()));
            sets.push((g.ph * wp + g.pw + g.w, rows));
        }
        for &(tile, p0, pn, at) in spots {
            for (off, dims) in &sets {
                let ap = tile_ap(tile.dtype, p0, pn, at + *off, dims, false);
                self.push_memset(ap, tile, engine, span);
            }
        }
    }

    /// Loads image `n`'s interior into `dst` (per channel chunk a tile, its first
    /// partition and where its padded image starts). With `first`, in pieces of row bands
    /// and partition quarters for every queue.
    #[allow(clippy::too_many_arguments)]
    fn image_dma(
        &mut self,
        g: &Geom,
        xv: &super::view::HView,
        cch: &[(u64, u64)],
        dst: &[(Tile, u32, u64)],
        n: u64,
        first: bool,
        span: crate::ir::Span,
    ) {
        let dt = xv.dtype;
        let xs = &xv.strides;
        let (s_n, s_c) = (xs[0], xs[1]);
        let (s_h, s_w) = if xs.len() == 4 {
            (xs[2], xs[3])
        } else {
            (0, xs[2])
        };
        let wp = g.wp();
        for (&(c0, csz), &(tile, pbase, at)) in cch.iter().zip(dst) {
            let base = at + g.ph * wp + g.pw;
            // Partition quarters and bands of rows, about 16 pieces over all the chunks.
            let (quarters, bands) = if first && csz > 32 {
                let q = csz.div_ceil(32);
                (q, (16 / (q * cch.len() as u64)).clamp(1, g.h))
            } else {
                (1, 1)
            };
            let qsize = if quarters > 1 { 32 } else { csz };
            for q in 0..quarters {
                let p0 = q * qsize;
                let pn = qsize.min(csz - p0);
                let mut r = 0;
                for b in 0..bands {
                    let rows = (g.h - r) / (bands - b);
                    self.pool_transfer(
                        &Xfer {
                            tile: tile.buf,
                            hbm: xv.buf,
                            dtype: dt,
                            p0: pbase + p0 as u32,
                            pn: pn as u32,
                            tile_off: base + r * wp,
                            hbm_off: xv.offset
                                + n as i64 * s_n
                                + (c0 + p0) as i64 * s_c
                                + r as i64 * s_h,
                            part_stride: s_c,
                            dims: vec![(rows, wp as i64, s_h), (g.w, 1, s_w)],
                        },
                        true,
                        span,
                    );
                    r += rows;
                }
            }
        }
    }
}
