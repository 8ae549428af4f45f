//! The `tile` pass: lowers tensor IR to tile IR, group by group (see `fusion.rs`).
//!
//! - Every value used outside its group, or returned, gets an HBM *home*: kernel inputs
//!   and outputs are dense views of their buffers, other values get scratch buffers, and
//!   `transpose` / `reshape` only make new views of their operand's home.
//! - Row groups are computed one block of rows at a time by the block evaluator
//!   (`block.rs`): blocks take up to 128 rows onto partitions and whole rows on the free
//!   axis.
//! - Matmul groups are tiled for the Tensor engine (`matmul.rs`): K in chunks of 128
//!   accumulated in a PSUM bank, M in chunks of 128 partitions, N in chunks of 512, with
//!   the rest of the group (bias, scale, activation, cast) evaluated on each PSUM tile.
//!
//! Every tile gets a buffer of its own; the `alloc` pass places them from liveness, which
//! is what lets the DMA of the next block overlap the compute of this one.

pub mod affine;
mod attention;
pub mod block;
mod casts;
mod colsum;
mod concat_view;
pub mod conv;
mod conv_deinterleave;
mod conv_epilogue;
mod conv_forward;
mod conv_im2col;
mod depthwise;
mod gather;
pub(crate) mod longrow;
mod matmul;
mod movement;
pub mod pool;
pub mod scan;
mod split_rows;
mod transpose;
pub mod view;

use crate::frontend::typed::Span;
use crate::ir::{Function, Inst, ReduceFn, TOp, Value, ValueDef};
use crate::passes::fusion::{self, Fit, Group, Root};
use crate::passes::layout::{self, Layout};
use crate::passes::PassOptions;
use crate::tile::TileFunc;
use block::{AxisUse, BArg, BGraph, BNode, BOp, BStore, Block};
use cranelift_entity::SecondaryMap;
use isa::Role;
use view::HView;

/// Bytes per partition that one block's tiles may take, so that several blocks fit in
/// SBUF at once (multi-buffering).
pub const BLOCK_BUDGET: u64 = 80 * 1024;
/// A row group with reductions whose whole rows take more than this a partition (but fit
/// `BLOCK_BUDGET`) is evaluated in phases over column chunks all the same (`longrow.rs`):
/// two such blocks fill most of SBUF, so the `pipeline` pass cannot interleave them, and
/// each engine waits for the others' whole-row instructions. Measured (release build,
/// `--random 1 --report`): the Triton layernorm forward f16[4096, 8192] (80 KiB a block)
/// 2,127,640 -> 1,459,500 cycles; a softmax of bf16 rows of 8,192 (64 KiB a block, whole
/// rows interleaved already) 544,569 -> 636,155 if it were phased, so it is not.
const PHASE_PEAK: u64 = 72 * 1024;

/// An operand broadcast over some row axis, loaded once for the blocks of a group that read
/// the same elements: view, strides, fit, what it holds (partitions, columns and the HBM
/// pattern it was loaded from), and its tile.
pub type GroupLoad = (HView, Vec<i64>, Fit, (u32, u32, isa::HbmAp), block::Tile);

/// Bytes per partition that the tiles a group keeps for reuse across blocks may take
/// (`Tiler::group_loads`); beyond them a broadcast operand is loaded per block.
pub const GROUP_CACHE_BUDGET: u64 = 48 * 1024;

/// A convolution lowered in the image order (`conv.rs`, `Tiler::chain_convs`).
#[derive(Clone, Debug)]
pub struct ConvChain {
    /// The first instruction of its layout region (with the convolutions it was chained
    /// behind).
    pub start: crate::tile::TInst,
    /// The first instruction of each image after the first.
    pub images: Vec<crate::tile::TInst>,
    /// The instructions of its group.
    pub insts: Vec<crate::ir::Inst>,
    /// The layout's length when it was lowered.
    pub end: usize,
}

/// The lowering state.
pub struct Tiler<'a> {
    pub func: &'a Function,
    pub out: TileFunc,
    /// The HBM home of each value that has one.
    pub home: SecondaryMap<Value, Option<HView>>,
    /// Operands loaded for the current block (the block evaluator's cache).
    pub block_loads: Vec<(HView, Vec<i64>, Fit, block::Tile)>,
    /// Broadcast operands loaded for the current group, for reuse by its later blocks.
    pub group_loads: Vec<GroupLoad>,
    /// Bytes per partition of `group_loads`' tiles.
    pub group_load_bytes: u64,
    /// The space of the row group being lowered, whose operands broadcast over a row axis
    /// may be kept for its later blocks (`None` elsewhere: only row-invariant ones are).
    pub reuse_space: Option<Vec<u64>>,
    /// Tiles of node results whose last use is the node being evaluated.
    pub dying: Vec<crate::tile::Buf>,
    /// Loaded operands (view, strides) whose last use is the node being evaluated.
    pub dying_loads: Vec<(HView, Vec<i64>)>,
    /// The plan of the `layout` pass (or the unoptimised one).
    pub layout: Layout,
    /// Fold work into activations (part of fusion).
    fold: bool,
    /// `--dtype-policy strict`.
    strict: bool,
    /// `Mutation::DropRescale`: flash attention leaves out its accumulator rescales.
    pub drop_rescale: bool,
    /// Set while the tiler emits a kernel's last block: its stores are split finely
    /// (`block::dma_pieces`).
    pub last_stores: bool,
    /// Set while the tiler emits a group that is one block of rows split over partitions
    /// (`split_rows.rs`): its loads come before any work, so they are split as finely as
    /// a kernel's last stores.
    pub wide_loads: bool,
    /// The deferred tail of the previous convolution tile's epilogue (`conv.rs`,
    /// `Tiler::overlap_epilogue`), at the end of the layout when set.
    pub epilogue_tail: Vec<crate::tile::TInst>,
    /// The first matmul of each tile of the convolution being lowered (`conv.rs`,
    /// `Tiler::prefetch_epilogue_loads`): where a later tile's epilogue loads may move.
    pub conv_anchors: Vec<crate::tile::TInst>,
    /// The convolution lowered last in the image order (`conv.rs`, `Tiler::chain_convs`):
    /// a convolution right after it that reads its output may run image by image behind it.
    pub conv_chain: Option<ConvChain>,
    /// The estimated Scalar and Vector cycles of the current convolution's epilogues so
    /// far (`conv_epilogue.rs`, `balance_conv_relus`).
    pub epilogue_load: (u64, u64),
    /// Set while the tiler lowers the kernel's last group.
    pub last_group: bool,
    /// The layout position after the last interleaved matmul (`matmul.rs`): the next one
    /// may move its first weight loads into the instructions since (`hoist_loads`).
    pub weight_hoist: Option<usize>,
    /// Concat parts stored straight into their range of the concat's home, with the
    /// concat (`movement.rs`).
    pub concat_homes: Vec<(Value, Inst)>,
    /// Concats whose value will be a view of their parts (`concat_view.rs`).
    pub parts_planned: Vec<Inst>,
    /// The concats read in place, by their placeholder buffers (`concat_view.rs`).
    pub parts_views: Vec<concat_view::PartsView>,
    /// Elementwise groups computed as matmul operands on their way into SBUF, by the
    /// matmul argument they feed (`matmul::operand_prologues`); they are not lowered.
    pub prologues: Vec<(Value, Group)>,
    /// The tile the node being evaluated writes its result into (its range of a concat's
    /// tile), taken by `out_tile`.
    pub target: Option<block::Tile>,
    /// Packed rows of the block being evaluated (`block::Pack`): every tile `sbuf_tile`
    /// makes holds that many rows; 1 outside packed row groups.
    pub pack_reps: u32,
    /// The convolutions' matmuls computed by implicit GEMM (`conv.rs`).
    pub convs: Vec<conv::ConvPlan>,
    /// The depthwise convolutions computed on Vector, GpSimd and Scalar
    /// (`depthwise.rs`), each with the row group that reads it.
    pub dws: Vec<depthwise::DwPlan>,
    /// Column sums computed by the row group that computes their operand (`colsum.rs`):
    /// (column sum, operand), for every such sum of the kernel.
    pub attached_sums: Vec<(Inst, Value)>,
    /// The operands of the attached column sums of the group being lowered: values its
    /// block graph keeps (`graph_of`).
    pub sum_operands: Vec<Value>,
}

/// Runs the pass: `grouping` from the fusion pass, or one group per instruction.
pub fn lower(
    func: &Function,
    grouping: Option<&fusion::Grouping>,
    layout: Option<&Layout>,
    options: &PassOptions,
    convs: &[crate::passes::conv::Implicit],
    dws: &[crate::passes::conv::Depthwise],
) -> Result<TileFunc, String> {
    let grouping_given = grouping.is_some();
    let singles;
    let grouping = match grouping {
        Some(g) => g,
        None => {
            singles = fusion::group(func, false, false)?;
            &singles
        }
    };
    // The layout plan was made for the grouping before splitting: splitting touches only
    // row groups, which the plan does not orient.
    let layout = match layout {
        Some(l) => l.clone(),
        None => layout::plan(func, grouping, false),
    };
    // Depthwise convolutions computed from their input and weights: their multiply-add
    // chain is then never computed.
    let dw_plans: Vec<depthwise::DwPlan> = dws
        .iter()
        .filter_map(|rec| depthwise::plan(func, grouping, rec))
        .collect();
    let mut grouping = split_oversized(func, grouping, options.strict_dtypes, &dw_plans)?;
    if options.mutation == Some(super::Mutation::AttentionFirst) {
        grouping
            .groups
            .sort_by_key(|g| !matches!(g.root, Root::Attention(_)));
        for (gi, g) in grouping.groups.iter().enumerate() {
            for &i in &g.insts {
                grouping.group_of[i] = Some(gi as u32);
            }
        }
    }
    let mut t = Tiler {
        func,
        out: TileFunc::new(&func.name),
        home: SecondaryMap::new(),
        block_loads: Vec::new(),
        group_loads: Vec::new(),
        group_load_bytes: 0,
        reuse_space: None,
        dying: Vec::new(),
        dying_loads: Vec::new(),
        layout,
        fold: grouping_given && options.enabled("fusion"),
        strict: options.strict_dtypes,
        drop_rescale: options.mutation == Some(super::Mutation::DropRescale),
        last_stores: false,
        wide_loads: false,
        epilogue_tail: Vec::new(),
        conv_anchors: Vec::new(),
        conv_chain: None,
        epilogue_load: (0, 0),
        last_group: false,
        weight_hoist: None,
        concat_homes: Vec::new(),
        parts_planned: Vec::new(),
        parts_views: Vec::new(),
        target: None,
        pack_reps: 1,
        prologues: Vec::new(),
        convs: Vec::new(),
        dws: Vec::new(),
        attached_sums: Vec::new(),
        sum_operands: Vec::new(),
    };
    // Convolutions computed by implicit GEMM read their input and weights; the window
    // matrix their matmul was written over is then never computed.
    t.convs = convs
        .iter()
        .filter_map(|rec| conv::plan(func, &grouping, &t.layout, rec))
        .collect();
    t.dws = dw_plans;
    for (name, v) in &func.params {
        let ty = func.ty(*v);
        let buf = t.out.hbm(name, Role::Input, ty.dtype, &ty.shape);
        t.home[*v] = Some(HView::dense(buf, ty.dtype, &ty.shape));
    }
    // Outputs: the first result slot of a value computed by a group is that value's home.
    let mut result_home: Vec<Option<HView>> = Vec::new();
    for (i, r) in func.results.iter().enumerate() {
        let ty = func.ty(*r);
        let buf = t
            .out
            .hbm(&format!("out{i}"), Role::Output, ty.dtype, &ty.shape);
        let view = HView::dense(buf, ty.dtype, &ty.shape);
        let computed = matches!(func.values[*r].def, ValueDef::Inst(inst)
            if !movement::is_view_op(&func.insts[inst].op));
        // A result that is a reshape of a value computed by a group: that value's home
        // is the output seen in the value's shape (a reshape of a dense view is free),
        // so the group stores straight into the output instead of into scratch that a
        // copy then moves (the reshape itself becomes a view of the output).
        let reshaped = match func.values[*r].def {
            ValueDef::Inst(inst) if matches!(func.insts[inst].op, TOp::Reshape) => {
                let x = func.insts[inst].args[0];
                let x_computed = matches!(func.values[x].def, ValueDef::Inst(d)
                    if !movement::is_view_op(&func.insts[d].op) && !matches!(func.insts[d].op, TOp::Const(_)));
                (x_computed && t.home[x].is_none() && t.home[*r].is_none()).then_some(x)
            }
            _ => None,
        };
        if computed && t.home[*r].is_none() {
            t.home[*r] = Some(view);
            result_home.push(None);
        } else if let Some(x) = reshaped {
            t.home[x] = Some(view.reshape(&func.ty(x).shape));
            result_home.push(None);
        } else {
            result_home.push(Some(view));
        }
    }
    t.parts_planned = concat_view::plan_parts_views(func, &grouping, &t.layout);
    // A concat whose home is an output already (a reshape of it is returned) is stored
    // there, its parts in place.
    t.parts_planned
        .retain(|&i| t.home[func.insts[i].result].is_none());
    t.concat_homes = t.concat_parts_in_place(&grouping);
    t.attached_sums = t.attach_column_sums(&grouping);
    t.plan_scratch(&grouping);
    t.place_concat_parts();
    let mut unneeded = unneeded_groups(func, &grouping, &t.convs, &t.dws);
    if t.fold {
        for (arg, gi) in matmul::operand_prologues(func, &grouping, &t.layout) {
            if !unneeded[gi] {
                unneeded[gi] = true;
                t.prologues.push((arg, grouping.groups[gi].clone()));
            }
        }
    }
    let last = unneeded.iter().rposition(|u| !u).unwrap_or(0);
    for (gi, g) in grouping.groups.iter().enumerate() {
        if unneeded[gi] {
            continue;
        }
        t.last_group = gi == last;
        t.lower_group(g)?;
    }
    t.last_stores = false;
    // Results that alias an input, a view, or another result: copy them.
    for (i, r) in func.results.iter().enumerate() {
        if let Some(dest) = &result_home[i] {
            let src = t.home[*r]
                .clone()
                .ok_or_else(|| format!("result {i} ({r}) has no home after tiling"))?;
            t.copy_view(&src, dest, Span::default());
        }
    }
    // DMAs that read a concat in place read its parts.
    t.resolve_parts_views()?;
    // Stores into scratch whose readers were served from SBUF (`conv_forward.rs`).
    t.drop_dead_scratch_stores();
    Ok(t.out)
}

/// The most bytes per partition that one block of `g` keeps live at once: each value's
/// tile lives from its definition to its last use in the group (to the end when it is
/// stored), each loaded operand from its first to its last use. Values from other groups
/// are conservatively taken as full-width loads.
fn peak_block_bytes(func: &Function, g: &Group) -> u64 {
    let cols = *g.space.last().unwrap_or(&1);
    let n = g.insts.len();
    let index: std::collections::HashMap<Value, usize> = g
        .insts
        .iter()
        .enumerate()
        .map(|(i, &inst)| (func.insts[inst].result, i))
        .collect();
    // (first, last, bytes) of every tile.
    let mut ranges: Vec<(usize, usize, u64)> = Vec::new();
    let mut loads: std::collections::HashMap<Value, (usize, usize)> = Default::default();
    for (i, &inst) in g.insts.iter().enumerate() {
        let data = &func.insts[inst];
        let res = func.ty(data.result);
        let full = fusion::fit(&res.shape, &g.space) == Some(Fit::Full);
        let bytes = if full {
            cols * res.dtype.size() as u64
        } else if fusion::is_narrow(&res.shape, &g.space) {
            res.shape.last().copied().unwrap_or(1) * res.dtype.size() as u64
        } else {
            4
        };
        let last = (i + 1..n)
            .rev()
            .find(|&j| func.insts[g.insts[j]].args.contains(&data.result))
            .unwrap_or(i);
        ranges.push((i, last.max(i), bytes));
        for a in &data.args {
            if !index.contains_key(a) {
                let e = loads.entry(*a).or_insert((i, i));
                e.1 = i;
            }
        }
    }
    for (v, (first, last)) in loads {
        let bytes = cols * func.ty(v).dtype.size() as u64;
        ranges.push((first, last, bytes));
    }
    (0..n)
        .map(|i| {
            ranges
                .iter()
                .filter(|(f, l, _)| *f <= i && i <= *l)
                .map(|(_, _, b)| b)
                .sum::<u64>()
        })
        .max()
        .unwrap_or(0)
}

/// Splits groups whose blocks would not fit the budget into single instructions, except
/// the row groups with reductions that `longrow.rs` evaluates in phases over column
/// chunks. The result keeps the groups in an order that respects every data dependency.
fn split_oversized(
    func: &Function,
    grouping: &fusion::Grouping,
    strict: bool,
    dws: &[depthwise::DwPlan],
) -> Result<fusion::Grouping, String> {
    let mut out = fusion::Grouping::default();
    for g in &grouping.groups {
        let bytes = peak_block_bytes(func, g);
        // Matmul and attention groups work on tiles of at most 512 columns whatever the
        // rows' length, so only row groups are split; a depthwise convolution's group is
        // evaluated on bands of its own size (`depthwise.rs`).
        let keep = g.insts.len() == 1
            || dws.iter().any(|p| p.insts == g.insts)
            || bytes <= BLOCK_BUDGET
            || !matches!(g.root, Root::Rows)
            || longrow::phased_ok(func, g, strict);
        if keep {
            let gi = out.groups.len() as u32;
            for &i in &g.insts {
                out.group_of[i] = Some(gi);
            }
            out.groups.push(g.clone());
        } else {
            let singles = fusion::group(func, false, false)?;
            for &i in &g.insts {
                let gi = out.groups.len() as u32;
                out.group_of[i] = Some(gi);
                let single = singles.group_of[i]
                    .map(|s| singles.groups[s as usize].clone())
                    .unwrap_or_else(|| g.clone());
                out.groups.push(single);
            }
        }
    }
    // A split group's pieces take their own places in the dependency order.
    out.order(func)?;
    Ok(out)
}

impl<'a> Tiler<'a> {
    /// Gives a scratch home to every computed value that an instruction of another group
    /// reads (layout ops and matmuls read only through HBM homes).
    fn plan_scratch(&mut self, grouping: &fusion::Grouping) {
        let func = self.func;
        for &inst in &func.layout {
            let data = &func.insts[inst];
            if self.attached_sums.iter().any(|(i, _)| *i == inst) {
                // Its row group sums the operand's tiles.
                continue;
            }
            for a in &data.args {
                let ValueDef::Inst(def) = func.values[*a].def else {
                    continue;
                };
                if matches!(func.insts[def].op, TOp::Const(_)) {
                    continue;
                }
                let same_group = grouping.group_of[def].is_some()
                    && grouping.group_of[def] == grouping.group_of[inst]
                    && !matches!(
                        grouping.groups[grouping.group_of[inst].unwrap_or(0) as usize].root,
                        Root::Single(_)
                    );
                let view_op = movement::is_view_op(&func.insts[def].op);
                let in_place = self.concat_homes.iter().any(|(v, _)| v == a);
                // A concat read in place gets its home when it is lowered.
                let parts_view = self.parts_planned.contains(&def);
                if !same_group && !view_op && !in_place && !parts_view && self.home[*a].is_none() {
                    let ty = func.ty(*a);
                    let rank = ty.shape.len();
                    if self.layout.transposed[*a] && rank >= 2 {
                        // The layout pass keeps this value as its transpose.
                        let mut perm: Vec<usize> = (0..rank).collect();
                        perm.swap(rank - 2, rank - 1);
                        let stored: Vec<u64> = perm.iter().map(|&p| ty.shape[p]).collect();
                        let buf = self.out.hbm(
                            &format!("t{}", a.as_u32()),
                            Role::Scratch,
                            ty.dtype,
                            &stored,
                        );
                        self.home[*a] = Some(HView::dense(buf, ty.dtype, &stored).permute(&perm));
                    } else {
                        let buf = self.out.hbm(
                            &format!("t{}", a.as_u32()),
                            Role::Scratch,
                            ty.dtype,
                            &ty.shape,
                        );
                        self.home[*a] = Some(HView::dense(buf, ty.dtype, &ty.shape));
                    }
                }
            }
        }
    }

    /// The home of a value that must have one.
    fn home_of(&self, v: Value) -> Result<HView, String> {
        self.home[v]
            .clone()
            .ok_or_else(|| format!("{v} is read from HBM but has no home"))
    }

    /// The exact value of `v` if it is a `const`.
    fn constant_f64(&self, v: Value) -> Option<f64> {
        match self.func.values[v].def {
            ValueDef::Inst(i) => match self.func.insts[i].op {
                TOp::Const(c) => Some(c),
                _ => None,
            },
            ValueDef::Param(_) => None,
        }
    }

    /// The constant value of `v` if it is a `const`.
    fn constant(&self, v: Value) -> Option<f32> {
        match self.func.values[v].def {
            ValueDef::Inst(i) => match self.func.insts[i].op {
                TOp::Const(c) => Some(block::imm_of(self.func.ty(v).dtype, c)),
                _ => None,
            },
            ValueDef::Param(_) => None,
        }
    }

    fn lower_group(&mut self, g: &Group) -> Result<(), String> {
        self.begin_group();
        if let Some(p) = self.dws.iter().find(|p| p.insts == g.insts).cloned() {
            return self.lower_depthwise(&p);
        }
        match g.root {
            Root::Single(inst) => self.lower_single(inst),
            Root::Rows => {
                // Few long rows: each row over several partitions (`split_rows.rs`).
                if let Some(parts) = split_rows::plan(self.func, g, self.strict) {
                    if self.lower_split(g, parts)? {
                        return Ok(());
                    }
                }
                let cols = *g.space.last().unwrap_or(&1);
                let peak = peak_block_bytes(self.func, g);
                let mut col_chunk = u64::MAX;
                // Whole rows that only just fit leave SBUF room for about two blocks, and
                // the `pipeline` pass cannot interleave them; in phases over column chunks
                // the blocks' chunks interleave (`longrow.rs`).
                let func = self.func;
                let reduces = g
                    .insts
                    .iter()
                    .any(|&i| matches!(func.insts[i].op, TOp::Reduce { .. }));
                if peak > PHASE_PEAK
                    && peak <= BLOCK_BUDGET
                    && reduces
                    && longrow::phased_ok(func, g, self.strict)
                {
                    return self.lower_group_phased(g);
                }
                if peak > BLOCK_BUDGET {
                    if reduces {
                        // A lone reduction's rows are summed chunk by chunk; a bigger
                        // group (one `split_oversized` kept) is evaluated in phases.
                        let &[inst] = g.insts.as_slice() else {
                            if !longrow::phased_ok(func, g, self.strict) {
                                return Err(format!(
                                    "a group of {} instructions with a reduction does not fit SBUF",
                                    g.insts.len()
                                ));
                            }
                            return self.lower_group_phased(g);
                        };
                        let src = self.home_of(self.func.insts[inst].args[0])?;
                        return self.lower_long_reduce(inst, src, &g.space);
                    }
                    // Elementwise work splits along the row (at multiples of 128 columns
                    // when column sums read its tiles).
                    col_chunk = (cols * BLOCK_BUDGET / peak.max(1)).max(1);
                    if !self.group_sums(g).is_empty() {
                        col_chunk = (col_chunk / 128).max(1) * 128;
                    }
                }
                col_chunk = col_chunk.min(pipeline_chunk(self.func, g));
                // Values of other widths than the space (slices, concats) need whole rows.
                let func = self.func;
                let columns = g.insts.iter().any(|&i| {
                    fusion::is_narrow(&func.ty(func.insts[i].result).shape, &g.space)
                        || matches!(func.insts[i].op, TOp::Slice(_) | TOp::Concat(_))
                });
                if columns {
                    if col_chunk < cols {
                        return Err(format!(
                            "a row group with slices or concats of rows of {cols} elements does not fit SBUF"
                        ));
                    }
                    col_chunk = u64::MAX;
                }
                let sums = self.group_sums(g);
                self.sum_operands = sums.iter().map(|s| s.1).collect();
                let graph = self.graph_of(g, None, false)?;
                self.sum_operands.clear();
                self.reuse_space = Some(g.space.clone());
                let mut blocks = row_blocks(&g.space, g.needs_plain_rows, col_chunk);
                if sums.is_empty() && !g.needs_plain_rows && block::packable(&graph) {
                    blocks = pack_blocks(blocks, &g.space, peak);
                }
                let sums = self.begin_sums(&graph, &sums)?;
                let first = self.out.insts.len();
                for b in &blocks {
                    self.pack_reps = b.reps();
                    let tiles = self.eval_block(&graph, b);
                    self.pack_reps = 1;
                    for (node, sum) in &sums {
                        let t = tiles[*node].ok_or("a summed value has no tile")?;
                        self.column_sum_block(sum, b, t)?;
                    }
                }
                for (_, sum) in &sums {
                    self.column_sum_finish(sum)?;
                }
                self.mark_row_group(first);
                Ok(())
            }
            Root::Matmul(inst) => match self.convs.iter().find(|p| p.matmul == inst).cloned() {
                Some(plan) => self.lower_conv(g, &plan),
                None => self.lower_matmul(g, inst),
            },
            Root::Attention(ref a) => self.lower_attention(g, a),
        }
    }

    /// Lowers the row group `g` in phases over column chunks (`longrow.rs`), as a row
    /// group whose blocks the `pipeline` pass may interleave.
    fn lower_group_phased(&mut self, g: &Group) -> Result<(), String> {
        self.sum_operands = self.group_sums(g).iter().map(|s| s.1).collect();
        let graph = self.graph_phased(g)?;
        self.sum_operands.clear();
        let first = self.out.insts.len();
        let peak = peak_block_bytes(self.func, g);
        self.lower_phased(g, graph, peak, longrow::KEEP_BUDGET, 1)?;
        self.mark_row_group(first);
        Ok(())
    }

    /// Marks the instructions emitted since `first` as a row group's, whose blocks the
    /// `pipeline` pass may interleave.
    fn mark_row_group(&mut self, first: usize) {
        for k in first..self.out.insts.len() {
            self.out.row_group[<crate::tile::TInst as cranelift_entity::EntityRef>::new(k)] = true;
        }
    }

    /// The block graph of a group; `given` is the instruction whose value arrives as a
    /// tile (a matmul's PSUM tile), which becomes node 0.
    /// With `swapped`, the graph works on tiles of the transposed space (a matmul group
    /// computed as `C^T`, see `layout.rs`): every load and store reads its view with the
    /// last two axes exchanged.
    fn graph_of(
        &self,
        g: &Group,
        given: Option<(Inst, block::Tile)>,
        swapped: bool,
    ) -> Result<BGraph, String> {
        let mut graph = self.graph_unrewritten(g, given, swapped)?;
        if self.fold {
            casts::rewrite(&mut graph);
        }
        Ok(graph)
    }

    /// The graph of a group lowered in phases (`longrow.rs`), with only the cast rewrites
    /// that phases keep exact (`casts::rewrite_phased`). Phases may turn an activation's
    /// row sum back into a reduction of its output, and `casts::rewrite` narrows an output
    /// that only the row sum reads to FP8, so the two together would sum rounded values (a
    /// differential test found strict kernels off by a quarter that way).
    fn graph_phased(&self, g: &Group) -> Result<BGraph, String> {
        let mut graph = self.graph_unrewritten(g, None, false)?;
        if self.fold {
            casts::rewrite_phased(&mut graph, self.strict);
        }
        Ok(graph)
    }

    /// `graph_of` without `casts::rewrite`.
    fn graph_unrewritten(
        &self,
        g: &Group,
        given: Option<(Inst, block::Tile)>,
        swapped: bool,
    ) -> Result<BGraph, String> {
        let swap = |mut s: Vec<i64>| {
            let n = s.len();
            if swapped && n >= 2 {
                s.swap(n - 2, n - 1);
            }
            s
        };
        let func = self.func;
        let mut graph = BGraph::default();
        let mut node_of: std::collections::HashMap<Value, usize> = Default::default();
        // Values that a column slice reads and that the group also reads whole are
        // loaded whole once, and the slices are views of that tile.
        let mut whole_reads: Vec<Value> = Vec::new();
        for &inst in &g.insts {
            if fusion::column_slice(func, inst).is_none() {
                for &a in &func.insts[inst].args {
                    whole_reads.push(a);
                }
            }
        }
        let width_of = |shape: &[u64]| -> Option<u32> {
            fusion::is_narrow(shape, &g.space)
                .then(|| shape.last().map(|&w| w as u32))
                .flatten()
        };
        // Affine values are written by `iota` and masks of them are `affine_select`s
        // (`affine.rs`) in plain row groups, whose blocks `block_affine` describes.
        // Groups with values of another width than the space (column views) keep whole
        // rows, whose positions the affine forms do not describe: they take no affine path.
        let has_narrow = g.insts.iter().any(|&i| {
            let shape = &func.ty(func.insts[i].result).shape;
            fusion::fit(shape, &g.space).is_none() && fusion::is_narrow(shape, &g.space)
        });
        let plain = given.is_none() && !swapped && !has_narrow;
        let affine_over =
            |v: Value, logical: &[u64]| plain.then(|| affine_arg(func, g, v, logical)).flatten();
        for &inst in &g.insts {
            let data = &func.insts[inst];
            let res = func.ty(data.result);
            let span = func.spans[inst];
            let narrow = fusion::fit(&res.shape, &g.space).is_none()
                && fusion::is_narrow(&res.shape, &g.space);
            let fit = if narrow {
                Fit::Full
            } else {
                fusion::fit(&res.shape, &g.space).ok_or_else(|| {
                    format!("{inst} does not fit the space {:?} of its group", g.space)
                })?
            };
            let width = if narrow { width_of(&res.shape) } else { None };
            if let Some((gi, tile)) = given {
                if gi == inst {
                    node_of.insert(data.result, graph.nodes.len());
                    graph.nodes.push(BNode {
                        op: BOp::Copy,
                        args: vec![BArg::Given(tile)],
                        dtype: tile.dtype,
                        fit,
                        span,
                        accum: None,
                        width,
                    });
                    continue;
                }
            }
            // `where(mask, x, c)` and `where(mask, c, x)` with an affine mask: one
            // `affine_select` of `x`.
            if data.op == TOp::Where {
                let consts = (
                    self.constant_f64(data.args[1]),
                    self.constant_f64(data.args[2]),
                );
                // With two constant branches the first is a memset tile.
                let pick = match consts {
                    (_, Some(c)) => Some((data.args[1], c, false)),
                    (Some(c), None) => Some((data.args[2], c, true)),
                    _ => None,
                };
                let mask = plain
                    .then(|| affine_mask(func, g, data.args[0], &res.shape))
                    .flatten();
                if let (Some((x, fill, flip)), Some((form, cmp))) = (pick, mask) {
                    let arg = if let Some(&n) = node_of.get(&x) {
                        BArg::Node(n)
                    } else if let Some(c) = self.constant(x) {
                        BArg::Imm(c)
                    } else if let Some(f) = affine_over(x, &res.shape) {
                        BArg::Affine(f)
                    } else {
                        let view = self.home_of(x)?;
                        BArg::Load(
                            view.clone(),
                            swap(space_strides(&view, &res.shape, &g.space)),
                        )
                    };
                    let cmp = if flip { affine::negate(cmp) } else { cmp };
                    node_of.insert(data.result, graph.nodes.len());
                    graph.nodes.push(BNode {
                        op: BOp::AffineSelect { form, cmp, fill },
                        args: vec![arg],
                        dtype: res.dtype,
                        fit,
                        span,
                        accum: None,
                        width,
                    });
                    continue;
                }
            }
            let op = match &data.op {
                TOp::Unary(u) => BOp::Unary(*u),
                TOp::Binary(b) => BOp::Binary(*b),
                TOp::Where => BOp::Where,
                TOp::Cast => BOp::Cast,
                TOp::Tril { k, fill } => BOp::Tril { k: *k, fill: *fill },
                TOp::Arange => BOp::Iota,
                TOp::Reduce { func: f, .. } => BOp::Reduce(*f),
                TOp::Slice(axes) => {
                    let Some((src, start)) = fusion::column_slice(func, inst) else {
                        return Err(format!("{inst}: only a slice of columns joins a row group"));
                    };
                    let src_shape = &func.ty(src).shape;
                    if !node_of.contains_key(&src) {
                        let view = self.home_of(src)?;
                        if whole_reads.contains(&src) {
                            // Loaded whole, once, as a node the slices and the other
                            // readers share.
                            node_of.insert(src, graph.nodes.len());
                            graph.nodes.push(BNode {
                                op: BOp::Copy,
                                args: vec![BArg::Load(
                                    view.clone(),
                                    swap(space_strides(&view, src_shape, &g.space)),
                                )],
                                dtype: func.ty(src).dtype,
                                fit: Fit::Full,
                                span,
                                accum: None,
                                width: width_of(src_shape),
                            });
                        } else {
                            // Only the columns the slice takes are loaded.
                            let sliced = view.slice(axes, &res.shape);
                            let strides = swap(space_strides(&sliced, &res.shape, &g.space));
                            node_of.insert(data.result, graph.nodes.len());
                            graph.nodes.push(BNode {
                                op: BOp::Copy,
                                args: vec![BArg::Load(sliced, strides)],
                                dtype: res.dtype,
                                fit,
                                span,
                                accum: None,
                                width,
                            });
                            continue;
                        }
                    }
                    BOp::Slice {
                        start: start as u32,
                    }
                }
                TOp::Concat(_) => BOp::Concat(
                    data.args
                        .iter()
                        .map(|&a| func.ty(a).shape.last().copied().unwrap_or(1) as u32)
                        .collect(),
                ),
                other => {
                    return Err(format!(
                        "{inst} ({other:?}) cannot be computed in a row group"
                    ))
                }
            };
            let mut args = Vec::new();
            for &a in &data.args {
                if let Some(&n) = node_of.get(&a) {
                    args.push(BArg::Node(n));
                } else if let Some(c) = self.constant(a) {
                    args.push(BArg::Imm(c));
                } else {
                    // Reductions read their operand over the whole space, concats each
                    // part in its own shape; other operations read it broadcast to their
                    // result.
                    let logical = if matches!(data.op, TOp::Reduce { .. }) {
                        g.space.clone()
                    } else if matches!(data.op, TOp::Concat(_)) {
                        func.ty(a).shape.clone()
                    } else {
                        res.shape.clone()
                    };
                    if let Some(form) = affine_over(a, &logical) {
                        args.push(BArg::Affine(form));
                        continue;
                    }
                    let view = self.home_of(a)?;
                    args.push(BArg::Load(
                        view.clone(),
                        swap(space_strides(&view, &logical, &g.space)),
                    ));
                }
            }
            node_of.insert(data.result, graph.nodes.len());
            graph.nodes.push(BNode {
                op,
                args,
                dtype: res.dtype,
                fit,
                span,
                accum: None,
                width,
            });
        }
        // Values with a home are stored.
        for &inst in &g.insts {
            let v = func.insts[inst].result;
            if let (Some(dest), Some(&node)) = (self.home[v].clone(), node_of.get(&v)) {
                let strides = swap(space_strides(&dest, &func.ty(v).shape, &g.space));
                graph.stores.push(BStore {
                    node,
                    dest,
                    strides,
                });
            }
        }
        // Nodes that nothing stored depends on (a mask an `affine_select` replaced)
        // compute nothing.
        let mut live = vec![given.is_some() || swapped; graph.nodes.len()];
        for st in &graph.stores {
            live[st.node] = true;
        }
        // Values that attached column sums read from the block's tiles.
        for v in &self.sum_operands {
            if let Some(&node) = node_of.get(v) {
                live[node] = true;
                graph.keep.push(node);
            }
        }
        for i in (0..graph.nodes.len()).rev() {
            if live[i] {
                for a in &graph.nodes[i].args {
                    if let BArg::Node(k) = a {
                        live[*k] = true;
                    }
                }
            }
        }
        for (node, live) in graph.nodes.iter_mut().zip(live) {
            if !live {
                node.op = BOp::Folded;
                node.args.clear();
            }
        }
        // Folding looks at the stores: a stored value is never folded away.
        if self.fold {
            block::fold(&mut graph, self.strict);
        }
        Ok(graph)
    }

    /// Lowers an instruction that is a group on its own: layout ops make views; other
    /// reductions read their operand through a permuted view.
    fn lower_single(&mut self, inst: Inst) -> Result<(), String> {
        let func = self.func;
        let data = &func.insts[inst];
        let span = func.spans[inst];
        let res = func.ty(data.result).clone();
        match &data.op {
            TOp::Const(_) => Ok(()),
            TOp::Transpose(perm) => {
                let src = self.home_of(data.args[0])?;
                let view = src.permute(perm);
                self.set_or_copy(data.result, view, span);
                Ok(())
            }
            TOp::Reshape => {
                let mut src = self.home_of(data.args[0])?;
                if !src.is_dense() {
                    let ty = func.ty(data.args[0]);
                    let buf = self.out.hbm(
                        &format!("t{}", data.args[0].as_u32()),
                        Role::Scratch,
                        ty.dtype,
                        &ty.shape,
                    );
                    let dense = HView::dense(buf, ty.dtype, &ty.shape);
                    self.copy_view(&src, &dense, span);
                    src = dense;
                }
                let view = src.reshape(&res.shape);
                self.set_or_copy(data.result, view, span);
                Ok(())
            }
            TOp::Reduce {
                func: f,
                axis,
                keepdims: _,
            } => {
                // Column sums of a matrix on the PE array (`colsum.rs`); others: move
                // the reduced axis last and reduce rows of that view.
                if self.attached_sums.iter().any(|(i, _)| *i == inst) {
                    // Computed with the row group of its operand.
                    return Ok(());
                }
                if self.is_column_sum(inst) {
                    return self.lower_column_sum(inst);
                }
                let src = self.home_of(data.args[0])?;
                let rank = src.shape.len();
                let mut perm: Vec<usize> = (0..rank).filter(|&a| a != *axis).collect();
                perm.push(*axis);
                let view = src.permute(&perm);
                let space = view.shape.clone();
                if space[rank - 1] * view.dtype.size() as u64 * 2 > BLOCK_BUDGET {
                    return self.lower_long_reduce(inst, view, &space);
                }
                let dest = self.home_of(data.result)?;
                let rows: Vec<u64> = space[..rank - 1].to_vec();
                let dest_rows = dest.reshape(&rows);
                let strides = space_strides(&dest_rows, &rows, &space);
                let graph = BGraph::single(
                    BOp::Reduce(*f),
                    BArg::Load(view.clone(), view.strides.clone()),
                    res.dtype,
                    Fit::PerRow,
                    span,
                    dest_rows,
                    strides,
                );
                for b in &row_blocks(&space, false, u64::MAX) {
                    self.eval_block(&graph, b);
                }
                Ok(())
            }
            TOp::Slice(axes) => {
                let src = self.home_of(data.args[0])?;
                let view = src.slice(axes, &res.shape);
                self.set_or_copy(data.result, view, span);
                Ok(())
            }
            TOp::BroadcastTo => {
                let src = self.home_of(data.args[0])?;
                let view = src.broadcast_to(&res.shape);
                self.set_or_copy(data.result, view, span);
                Ok(())
            }
            TOp::Take { .. } => self.lower_take(inst),
            TOp::Concat(_) => self.lower_concat(inst),
            TOp::Cumsum { .. } => self.lower_cumsum(inst),
            TOp::ArgReduce { .. } => self.lower_arg_reduce(inst),
            TOp::Pad { .. } => self.lower_pad(inst),
            TOp::Pool(_) => self.lower_pool(inst),
            TOp::Matmul => Err(format!("{inst}: a matmul must root its own group")),
            _ => {
                // A row operation that fusion left alone: a group of one.
                let g = Group {
                    root: Root::Rows,
                    space: match data.op {
                        TOp::Reduce { .. } => func.ty(data.args[0]).shape.clone(),
                        _ => res.shape.clone(),
                    },
                    insts: vec![inst],
                    needs_plain_rows: matches!(data.op, TOp::Tril { .. }),
                };
                self.lower_group(&g)
            }
        }
    }

    /// A reduction of the last axis whose rows do not fit SBUF: each block of rows is
    /// loaded chunk by chunk as f32 and reduced in the reference's order: the running
    /// result goes into the first column of the next chunk (`acc OP x0`) before that chunk
    /// is reduced, so the whole row is one sequential f32 reduction, rounded once, bit for
    /// bit what the reference computes (a sum of 40,000 elements in chunks combined
    /// afterwards was off by more than the f32 tolerance).
    fn lower_long_reduce(&mut self, inst: Inst, src: HView, space: &[u64]) -> Result<(), String> {
        let func = self.func;
        let data = &func.insts[inst];
        let span = func.spans[inst];
        let TOp::Reduce { func: rf, .. } = data.op else {
            return Err(format!("{inst} is not a reduction"));
        };
        let dest = self.home_of(data.result)?;
        let res_dtype = func.ty(data.result).dtype;
        let rank = space.len();
        let rows: Vec<u64> = space[..rank - 1].to_vec();
        let dest_rows = dest.reshape(&rows);
        let src_strides = space_strides(&src, space, space);
        let dest_strides = space_strides(&dest_rows, &rows, space);
        let cols = space[rank - 1];
        // Integers are reduced on the integer datapath (wrapping, exact); floats in f32.
        let acc_dtype = if src.dtype == isa::Dtype::I32 {
            isa::Dtype::I32
        } else {
            isa::Dtype::F32
        };
        let chunk = (BLOCK_BUDGET / (2 * isa::Dtype::F32.size() as u64)).max(1);
        let op = match rf {
            ReduceFn::Sum | ReduceFn::Mean => isa::ReduceOp::Add,
            ReduceFn::Max => isa::ReduceOp::Max,
            ReduceFn::Min => isa::ReduceOp::Min,
        };
        let alu = match op {
            isa::ReduceOp::Add => isa::AluOp::Add,
            isa::ReduceOp::Max => isa::AluOp::Max,
            isa::ReduceOp::Min => isa::AluOp::Min,
        };
        self.begin_group();
        for b in &row_blocks(space, false, u64::MAX) {
            let parts = b.parts();
            let mut acc: Option<block::Tile> = None;
            for piece in &row_blocks_cols(b, cols, chunk) {
                let x = self.load_as(piece, &src, &src_strides, acc_dtype, span);
                if let Some(a) = acc {
                    // x0 = acc OP x0: the reduction continues where the last chunk ended.
                    let first = x.slice(0, parts, 0, 1);
                    self.out.push(
                        isa::Op::TensorTensor {
                            op: alu,
                            out: first.clone(),
                            a: a.ap(),
                            b: first,
                        },
                        isa::Engine::Vector,
                        &[x.buf, a.buf, x.buf],
                        span,
                    );
                }
                let part = self.sbuf_tile(acc_dtype, parts, 1);
                self.out.push(
                    isa::Op::TensorReduce {
                        op,
                        out: part.ap(),
                        src: x.ap(),
                    },
                    isa::Engine::Vector,
                    &[part.buf, x.buf],
                    span,
                );
                acc = Some(part);
            }
            let acc = acc.ok_or("a reduction over an empty axis")?;
            let out = self.sbuf_tile(res_dtype, parts, 1);
            let (op0, s0) = if rf == ReduceFn::Mean {
                (isa::AluOp::Div, isa::ScalarArg::imm(cols as f32))
            } else {
                (isa::AluOp::Bypass, isa::ScalarArg::imm(0.0))
            };
            self.out.push(
                isa::Op::TensorScalar {
                    out: out.ap(),
                    src: acc.ap(),
                    op0,
                    s0,
                    op1: isa::AluOp::Bypass,
                    s1: isa::ScalarArg::imm(0.0),
                },
                isa::Engine::Vector,
                &[out.buf, acc.buf],
                span,
            );
            self.store(b, out, &dest_rows, &dest_strides, Fit::PerRow, span);
        }
        Ok(())
    }

    /// Makes `view` the home of `v`; if `v` already has a home (an output), copies into it.
    fn set_or_copy(&mut self, v: Value, view: HView, span: Span) {
        match self.home[v].clone() {
            Some(dest) if dest != view => self.copy_view(&view, &dest, span),
            _ => self.home[v] = Some(view),
        }
    }

    /// Copies a view into another of the same shape, through SBUF. Axes that both views
    /// walk contiguously are merged first and a long contiguous run is spread over the
    /// partitions (`movement::copy_shape`), so a dense copy moves long rows in few, large
    /// DMAs whatever the views' shapes.
    pub fn copy_view(&mut self, src: &HView, dest: &HView, span: Span) {
        let (src, dest) = movement::copy_shape(src, dest);
        let (src, dest) = (&src, &dest);
        self.begin_group();
        // A copy that exchanges the contiguous axis goes through the PE array.
        if self.copy_transposed(src, dest, span) {
            return;
        }
        let space = if src.shape.is_empty() {
            vec![1]
        } else {
            src.shape.clone()
        };
        let src_strides = if src.shape.is_empty() {
            vec![0]
        } else {
            src.strides.clone()
        };
        let dest_strides = if dest.shape.is_empty() {
            vec![0]
        } else {
            dest.strides.clone()
        };
        let graph = BGraph::single(
            BOp::Copy,
            BArg::Load(src.clone(), src_strides),
            src.dtype,
            Fit::Full,
            span,
            dest.clone(),
            dest_strides,
        );
        // Rows longer than a block's budget are copied in column chunks (a whole row of
        // 70,000 f32 did not fit an SBUF partition).
        let col_chunk = (BLOCK_BUDGET / src.dtype.size() as u64).max(1);
        for b in &row_blocks(&space, false, col_chunk) {
            self.eval_block(&graph, b);
        }
    }
}

/// The affine form (`affine.rs`) over `g`'s space of the `i32` value `v` read with the
/// shape `logical` by an instruction of the row group `g`, when the group's blocks can
/// compute it with `iota`.
fn affine_arg(func: &Function, g: &Group, v: Value, logical: &[u64]) -> Option<affine::Form> {
    let f = affine::form_of(func, v)?.broadcast(&func.ty(v).shape, logical)?;
    let f = affine::onto_space(&f, logical, &g.space)?;
    let sample = row_blocks(&g.space, g.needs_plain_rows, u64::MAX);
    sample
        .first()
        .is_some_and(|b| block::linear_partitions(&f, b))
        .then_some(f)
}

/// The predicate `form CMP 0` over `g`'s space of the `bool` value `v` read with the shape
/// `logical` by a `where` of the row group `g`, when it is a comparison of affine values
/// the group's blocks can compute.
fn affine_mask(
    func: &Function,
    g: &Group,
    v: Value,
    logical: &[u64],
) -> Option<(affine::Form, isa::CmpOp)> {
    let (f, cmp) = affine::predicate_of(func, v)?;
    let f = f.broadcast(&func.ty(v).shape, logical)?;
    let f = affine::onto_space(&f, logical, &g.space)?;
    let sample = row_blocks(&g.space, g.needs_plain_rows, u64::MAX);
    sample
        .first()
        .is_some_and(|b| block::linear_partitions(&f, b))
        .then_some((f, cmp))
}

/// The groups whose values nothing needs once affine values are computed where they are
/// read: a group is needed when it computes a kernel result or a value that a needed
/// group reads from HBM, and a row group does not read an affine value it writes with
/// `iota`, nor the mask of a `where` it computes as an `affine_select` (`graph_of`). The
/// others (the `arange` a mask was built from, the reshapes of it) are not lowered.
fn unneeded_groups(
    func: &Function,
    grouping: &fusion::Grouping,
    convs: &[conv::ConvPlan],
    dws: &[depthwise::DwPlan],
) -> Vec<bool> {
    let n = grouping.groups.len();
    let mut needed_value: SecondaryMap<Value, bool> = SecondaryMap::new();
    for &r in &func.results {
        needed_value[r] = true;
    }
    let mut unneeded = vec![false; n];
    for gi in (0..n).rev() {
        let g = &grouping.groups[gi];
        if !g.insts.iter().any(|&i| needed_value[func.insts[i].result]) {
            unneeded[gi] = true;
            continue;
        }
        // The row group the block evaluator computes, if it is one (a reduction too long
        // for SBUF reads its operand from HBM instead: `lower_long_reduce`).
        let long_reduce = g
            .insts
            .iter()
            .any(|&i| matches!(func.insts[i].op, TOp::Reduce { .. }))
            && g.insts.len() == 1
            && peak_block_bytes(func, g) > BLOCK_BUDGET;
        let rows = match g.root {
            Root::Rows if !long_reduce => Some(g.clone()),
            Root::Single(inst)
                if matches!(
                    func.insts[inst].op,
                    TOp::Unary(_) | TOp::Binary(_) | TOp::Where | TOp::Cast
                ) =>
            {
                Some(Group {
                    root: Root::Rows,
                    space: func.ty(func.insts[inst].result).shape.clone(),
                    insts: vec![inst],
                    needs_plain_rows: false,
                })
            }
            _ => None,
        };
        for &inst in &g.insts {
            let data = &func.insts[inst];
            if let Some(p) = convs.iter().find(|p| p.matmul == inst) {
                needed_value[p.x] = true;
                needed_value[p.w] = true;
                continue;
            }
            let res = &func.ty(data.result).shape;
            for (k, &a) in data.args.iter().enumerate() {
                // A depthwise convolution's result, computed from its input and weights.
                if let Some(p) = dws.iter().find(|p| p.out == a && p.insts.contains(&inst)) {
                    needed_value[p.x] = true;
                    needed_value[p.w] = true;
                    continue;
                }
                let inside =
                    matches!(func.values[a].def, ValueDef::Inst(d) if g.insts.contains(&d));
                if inside {
                    continue;
                }
                let spared = rows.as_ref().is_some_and(|rg| {
                    let logical = if matches!(data.op, TOp::Reduce { .. }) {
                        rg.space.clone()
                    } else {
                        res.clone()
                    };
                    let consts = data.args.iter().skip(1).filter(|&&b| {
                        matches!(func.values[b].def, ValueDef::Inst(d)
                            if matches!(func.insts[d].op, TOp::Const(_)))
                    });
                    let mask = k == 0
                        && data.op == TOp::Where
                        && consts.count() >= 1
                        && affine_mask(func, rg, a, res).is_some();
                    mask || affine_arg(func, rg, a, &logical).is_some()
                });
                if !spared {
                    needed_value[a] = true;
                }
            }
        }
    }
    unneeded
}

/// The fewest blocks an elementwise row group is cut into, so that the loads of one block
/// overlap the work and the stores of the one before (a group of one block waits for all
/// of its loads before it computes anything, and stores nothing until it has). Measured on
/// the vector add f32[98432] (one block of [128, 769] after `refold`): one block 10,237
/// cycles, two 8,957, three 10,711, four 9,504, eight 16,635. More pieces lose because a
/// store holds its DMA queue until its data is computed, and a load queued behind it then
/// starts its 2,000-cycle latency only after that; two halves gained 20 to 27% on
/// [1, 200000] and [128, 2048] f32 -> bf16 `silu(x) * y` and lost 2 to 6% on [8, 4096] and
/// [64, 1024].
const PIPELINE_BLOCKS: u64 = 2;
/// The fewest columns of a block cut for pipelining (512 bytes a partition in f32, below
/// which a DMA's fixed cost per run outweighs the overlap).
const PIPELINE_MIN_COLS: u64 = 128;

/// The column chunk that cuts an elementwise row group of few row blocks (few rows, or a
/// rank-1 tensor refolded over the partitions) into at least `PIPELINE_BLOCKS` blocks of at
/// least `PIPELINE_MIN_COLS` columns; `u64::MAX` (no cut) for groups with a reduction, whose
/// rows must be whole, or with row blocks enough already.
fn pipeline_chunk(func: &Function, g: &Group) -> u64 {
    let elementwise = g.insts.iter().all(|&i| {
        matches!(
            func.insts[i].op,
            TOp::Unary(_) | TOp::Binary(_) | TOp::Cast | TOp::Const(_)
        )
    });
    let cols = *g.space.last().unwrap_or(&1);
    if !elementwise || g.needs_plain_rows || g.space.is_empty() {
        return u64::MAX;
    }
    let row_blocks_n = row_blocks(&g.space, false, u64::MAX).len() as u64;
    if row_blocks_n >= PIPELINE_BLOCKS {
        return u64::MAX;
    }
    // Chunks of equal width (a last chunk of a few columns would cost a DMA round of its
    // own for almost nothing).
    let chunks = PIPELINE_BLOCKS
        .div_ceil(row_blocks_n.max(1))
        .min(cols / PIPELINE_MIN_COLS)
        .max(1);
    cols.div_ceil(chunks)
}

/// The most free elements of a tile of packed rows (`block::Pack`): with 1,024, a
/// two-input Vector instruction's fixed 64 cycles are 3% of its work (20% on a row of 128).
const PACK_FREE: u64 = 1024;
/// The longest rows packed: a row of 512 already pays its fixed cost on 6% of the work.
const PACK_MAX_COLS: u64 = 256;
/// The fewest blocks left after packing, so that blocks still overlap each other's loads,
/// work and stores (the `pipeline` pass interleaves them). With 8, `run/lowp_casts`' cast
/// of 17 blocks of 3 columns packed to 9 took 37,353 cycles instead of 36,921.
const PACK_MIN_BLOCKS: usize = 16;

/// Packs the whole-row `blocks` of an elementwise row group over `space` (`peak`: a
/// block's live bytes per partition) several rows to a tile: blocks that differ only in
/// the index of one row axis, consecutive along it, become one block whose tiles hold
/// their rows side by side on the free axis (`block::Pack`). The axis is the innermost
/// one that blocks hold at one index (several heads, several batch rows), else the
/// partition axis when it is cut into several blocks of equal size (several 128-row
/// blocks). Operands broadcast along that axis read one row, repeated, so they are
/// loaded once. Returns `blocks` unchanged when rows are long or few, or when packed
/// tiles would not fit the block budget.
fn pack_blocks(blocks: Vec<Block>, space: &[u64], peak: u64) -> Vec<Block> {
    let rank = space.len();
    let cols = space[rank - 1];
    let Some(first) = blocks.first() else {
        return blocks;
    };
    let whole_rows =
        matches!(first.axes.last(), Some(AxisUse::Col { start: 0, size }) if *size == cols);
    // The HBM side of a transfer has up to five dimensions: the partition axes, the
    // packed rows and the columns.
    let part_axes = first
        .axes
        .iter()
        .filter(|a| matches!(a, AxisUse::Part { .. }))
        .count();
    if rank < 2
        || cols > PACK_MAX_COLS
        || !whole_rows
        || part_axes > 3
        || blocks.iter().any(|b| b.pack.is_some())
    {
        return blocks;
    }
    let k = (PACK_FREE / cols.max(1))
        .min(BLOCK_BUDGET / peak.max(1))
        .min((blocks.len() / PACK_MIN_BLOCKS) as u64);
    // Two rows of 128 columns halve a fixed-cost share of 20% but leave half the blocks
    // to overlap and a GpSimd share too narrow to split (RoPE on [3, 7, 256, 128], packed
    // 2 to a tile: 44,176 cycles instead of 40,352); shorter rows gain from 2 (a sigmoid
    // chain on rows of 64: 37,552 -> 31,232).
    if k < 2 || (k < 4 && cols > 64) {
        return blocks;
    }
    // The axis: the innermost row axis of more than one index held at one index (or one
    // partition) per block, else a partition axis cut into several blocks.
    let one_index = |a: usize| {
        space[a] > 1
            && matches!(
                first.axes[a],
                AxisUse::Fixed(_) | AxisUse::Part { size: 1, .. }
            )
    };
    let cut = |a: usize| matches!(first.axes[a], AxisUse::Part { size, .. } if size > 1 && space[a] >= 2 * size);
    let Some(axis) = (0..rank - 1)
        .rev()
        .find(|&a| one_index(a))
        .or_else(|| (0..rank - 1).rev().find(|&a| cut(a)))
    else {
        return blocks;
    };
    let at = |b: &Block| match b.axes[axis] {
        AxisUse::Fixed(i) => (i, 1),
        AxisUse::Part { start, size } => (start, size),
        AxisUse::Col { start, size } => (start, size),
    };
    // Buckets of up to `k` consecutive blocks along the axis, in order of first appearance.
    let mut buckets: Vec<(Vec<AxisUse>, u64, u64, Vec<Block>)> = Vec::new();
    for b in blocks.iter() {
        let (i, size) = at(b);
        let mut key = b.axes.clone();
        key[axis] = AxisUse::Fixed(0);
        let slot = (i / size) / k;
        match buckets
            .iter_mut()
            .find(|(kk, s, sl, _)| *kk == key && *s == size && *sl == slot)
        {
            Some(e) => e.3.push(b.clone()),
            None => buckets.push((key, size, slot, vec![b.clone()])),
        }
    }
    let mut out = Vec::new();
    for (_, size, _, members) in buckets {
        let first_index = at(&members[0]).0;
        let consecutive = members
            .iter()
            .enumerate()
            .all(|(r, m)| at(m).0 == first_index + r as u64 * size);
        if members.len() < 2 || !consecutive {
            out.extend(members);
            continue;
        }
        let mut b = members[0].clone();
        b.pack = Some(block::Pack {
            axis,
            reps: members.len() as u64,
            step: size,
        });
        out.push(b);
    }
    if out.len() < PACK_MIN_BLOCKS {
        return blocks;
    }
    out
}

/// A block split into column chunks of at most `chunk` columns.
fn row_blocks_cols(b: &Block, cols: u64, chunk: u64) -> Vec<Block> {
    let mut out = Vec::new();
    let mut c0 = 0;
    while c0 < cols {
        let cs = chunk.min(cols - c0);
        let mut axes = b.axes.clone();
        if let Some(last) = axes.last_mut() {
            *last = AxisUse::Col {
                start: c0,
                size: cs,
            };
        }
        out.push(Block { axes, pack: b.pack });
        c0 += cs;
    }
    out
}

/// The strides with which a view, broadcast to `logical` (the shape of the value it feeds),
/// is read over `space`: `logical` is the space itself or its rows (with or without a
/// trailing 1); the last axis of the space reads with stride 0 for per-row values.
pub fn space_strides(view: &HView, logical: &[u64], space: &[u64]) -> Vec<i64> {
    let mut s = view.broadcast_strides(logical);
    if s.len() + 1 == space.len() {
        s.push(0);
    }
    if let (Some(l), Some(sp)) = (logical.last(), space.last()) {
        if logical.len() == space.len() && *l == 1 && *sp != 1 {
            if let Some(last) = s.last_mut() {
                *last = 0;
            }
        }
    }
    s
}

/// The blocks of a space: up to 128 rows on partitions, and on the free axis chunks of
/// `col_chunk` columns (whole rows unless a row alone exceeds the block budget). With `plain`, partitions hold a range of
/// the second-to-last axis only (what `tril` needs).
pub fn row_blocks(space: &[u64], plain: bool, col_chunk: u64) -> Vec<Block> {
    let rank = space.len();
    let cols = space[rank - 1];
    let rows = &space[..rank - 1];
    // Partition axes: the longest suffix of row axes with product <= 128, then a chunk of
    // the next axis.
    let mut inner = rows.len();
    let mut prod = 1u64;
    if !plain {
        while inner > 0 && prod * rows[inner - 1] <= 128 {
            prod *= rows[inner - 1];
            inner -= 1;
        }
    }
    // Axes [inner..] are whole on partitions; axis inner-1 (if any) is chunked by
    // 128/prod; axes before are fixed per block.
    let chunk_axis = inner.checked_sub(1);
    let chunk = (128 / prod).max(1);
    let mut blocks = Vec::new();
    let outer: Vec<u64> = match chunk_axis {
        Some(a) => rows[..a].to_vec(),
        None => Vec::new(),
    };
    let outer_count: u64 = outer.iter().product();
    let col_chunk = col_chunk.clamp(1, cols.max(1));
    for o in 0..outer_count {
        // Decompose o over the outer axes.
        let mut idx = vec![0u64; outer.len()];
        let mut rem = o;
        for d in (0..outer.len()).rev() {
            idx[d] = rem % outer[d];
            rem /= outer[d];
        }
        let chunk_len = chunk_axis.map(|a| rows[a]).unwrap_or(1);
        let mut start = 0;
        while start < chunk_len {
            let size = chunk.min(chunk_len - start);
            let mut c0 = 0;
            while c0 < cols {
                let cs = col_chunk.min(cols - c0);
                let mut axes = Vec::with_capacity(rank);
                for &i in &idx {
                    axes.push(AxisUse::Fixed(i));
                }
                if chunk_axis.is_some() {
                    axes.push(AxisUse::Part { start, size });
                }
                for &n in &rows[inner..] {
                    axes.push(AxisUse::Part { start: 0, size: n });
                }
                axes.push(AxisUse::Col {
                    start: c0,
                    size: cs,
                });
                blocks.push(Block { axes, pack: None });
                c0 += cs;
            }
            start += size;
        }
    }
    blocks
}
