//! The block evaluator: computes a small graph of row operations (elementwise ops,
//! last-axis reductions, masks, casts, copies) on one block of an iteration space — some
//! rows on partitions, a range of the last axis on the free axis — loading what it needs
//! from HBM views and storing what must leave the block.
//!
//! Every node's tile holds its value in the node's own dtype, so each operation rounds
//! exactly where the language rounds: row groups match the reference evaluator bit for
//! bit (reductions run over whole rows, in order, as the reference does).

use super::affine::Form;
use super::view::{hbm_ap, HView};
use super::Tiler;
use crate::frontend::typed::Span;
use crate::ir::{BinaryOp, ReduceFn, UnaryFn};
use crate::passes::fusion::Fit;
use crate::reference;
use crate::tile::Buf;
use isa::{
    ActFunc, Affine, AluOp, CmpOp, Dim, DmaAp, Dtype, Engine, Imm, Mem, Op, ReduceOp, ScalarArg,
    TileAp,
};
use smallvec::smallvec;

/// An operation of the block graph.
#[derive(Clone, Debug)]
pub enum BOp {
    Unary(UnaryFn),
    Binary(BinaryOp),
    /// `where(c, a, b)` with args `[c, a, b]`: the `select` instruction.
    Where,
    Cast,
    Tril {
        k: i64,
        /// The fill value, of the node's dtype.
        fill: f64,
    },
    /// `arange`: each element is its index along the last axis of the space (the
    /// GpSimd engine's `iota`, an `i32` tile).
    Iota,
    /// `where(form CMP 0, x, fill)` with args `[x]`, `form` over the space: GpSimd's
    /// `affine_select` (`affine.rs`).
    AffineSelect {
        form: Form,
        cmp: CmpOp,
        /// The fill value, of the node's dtype.
        fill: f64,
    },
    /// Reduction of the last axis (per-row result).
    Reduce(ReduceFn),
    /// The operand as is (materialises a PSUM tile or a view).
    Copy,
    /// The Scalar engine's `func(x * scale + bias)` with args `[x, scale, bias]` (scale and
    /// bias immediates or per-row columns; `negate_bias` negates the bias first).
    Activate {
        func: ActFunc,
        negate_bias: bool,
    },
    /// The sum (or mean) along the row that the activation whose `accum` names this node
    /// computed.
    Accum(ReduceFn),
    /// Folded into another node; computes nothing.
    Folded,
    /// Columns `start..start + width` of the operand (a node): a view of its tile, no
    /// instruction (`fusion::column_slice`).
    Slice {
        start: u32,
    },
    /// The operands side by side along the free axis, one range each of the given widths:
    /// one tile, which an operand computed for it alone is written into directly (its
    /// range is its output tile); any other operand is copied into its range.
    Concat(Vec<u32>),
    /// The combining step of a reduction whose rows are split over partitions
    /// (`split_rows.rs`): the operand holds per-partition partials, `parts` consecutive
    /// partitions to a row of `cols` columns; the result is the row's reduction (a mean
    /// divided by `cols`) on every partition of the row.
    Combine {
        func: ReduceFn,
        parts: u32,
        cols: u64,
    },
}

/// An operand of a node.
#[derive(Clone, Debug)]
pub enum BArg {
    /// Another node's value.
    Node(usize),
    /// A value in HBM: the view and the space strides (one per space axis) it is read with.
    Load(HView, Vec<i64>),
    /// A scalar immediate (already rounded to the dtype it meets).
    Imm(f32),
    /// A tile computed outside the evaluator for this block (a matmul's PSUM tile).
    Given(Tile),
    /// An `i32` value that is an affine function of the space's indices (`affine.rs`),
    /// written by GpSimd's `iota` instead of being loaded.
    Affine(Form),
}

/// One node: an operation, its operands, and the type and fit of its result.
#[derive(Clone, Debug)]
pub struct BNode {
    pub op: BOp,
    pub args: Vec<BArg>,
    pub dtype: Dtype,
    pub fit: Fit,
    pub span: Span,
    /// For activations: the `Accum` node that receives the row sums.
    pub accum: Option<usize>,
    /// For a full-row value of another length than the space's last axis (a column slice,
    /// a concat, elementwise work on them): its columns. The block then holds whole rows.
    pub width: Option<u32>,
}

/// A value that must leave the block: node index, destination view and its space strides.
#[derive(Clone, Debug)]
pub struct BStore {
    pub node: usize,
    pub dest: HView,
    pub strides: Vec<i64>,
}

/// A block graph.
#[derive(Clone, Debug, Default)]
pub struct BGraph {
    pub nodes: Vec<BNode>,
    pub stores: Vec<BStore>,
    /// Nodes whose tiles outlive the block (a long row's values kept for a later phase,
    /// `longrow.rs`): never written over by a node they feed.
    pub keep: Vec<usize>,
}

impl BGraph {
    /// A graph of one node stored to `dest` (with its space strides): the standalone
    /// copies, memsets and reductions of layout operations.
    pub fn single(
        op: BOp,
        arg: BArg,
        dtype: Dtype,
        fit: Fit,
        span: Span,
        dest: HView,
        strides: Vec<i64>,
    ) -> BGraph {
        BGraph {
            nodes: vec![BNode {
                op,
                args: vec![arg],
                dtype,
                fit,
                span,
                accum: None,
                width: None,
            }],
            stores: vec![BStore {
                node: 0,
                dest,
                strides,
            }],
            keep: Vec::new(),
        }
    }
}

/// How a block uses one axis of the space.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AxisUse {
    /// A single index.
    Fixed(u64),
    /// A range spread over partitions (several such axes multiply, outer first).
    Part { start: u64, size: u64 },
    /// A range on the free axis (the last axis only).
    Col { start: u64, size: u64 },
}

/// Several rows of an outer axis side by side on the free axis of a block's tiles (*packed
/// rows*): rep `r` of the block adds `r * step` to the index of `axis` (an axis the block
/// holds at one index, or its partition axis, then `step` is the partitions' range). The
/// free axis of a packed tile is `reps` rows of the block's columns each, so that one
/// instruction does the work of `reps` blocks and pays its fixed cost once.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Pack {
    pub axis: usize,
    pub reps: u64,
    pub step: u64,
}

/// One block: a use for every axis of the space.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Block {
    pub axes: Vec<AxisUse>,
    /// Rows packed on the free axis (`Tiler::pack_blocks`), if any.
    pub pack: Option<Pack>,
}

impl Block {
    /// Partitions of the block's tiles.
    pub fn parts(&self) -> u32 {
        self.axes
            .iter()
            .map(|a| match a {
                AxisUse::Part { size, .. } => *size as u32,
                _ => 1,
            })
            .product()
    }

    /// Packed rows per tile (1 unless `pack`).
    pub fn reps(&self) -> u32 {
        self.pack.map_or(1, |p| p.reps as u32)
    }

    /// The block without its packed rows: rep 0 alone.
    pub fn unpacked(&self) -> Block {
        Block {
            axes: self.axes.clone(),
            pack: None,
        }
    }

    /// Free elements of a full tile per packed row (of the whole tile when not packed).
    pub fn cols(&self) -> u32 {
        self.axes
            .iter()
            .map(|a| match a {
                AxisUse::Col { size, .. } => *size as u32,
                _ => 1,
            })
            .product()
    }

    /// The block with `width` columns from its first (for a value of its own width in a
    /// group of whole rows).
    pub fn with_cols(&self, width: Option<u32>) -> Block {
        let Some(w) = width else {
            return self.clone();
        };
        let mut b = self.clone();
        if let Some(AxisUse::Col { size, .. }) = b.axes.last_mut() {
            *size = w as u64;
        }
        b
    }

    /// The first index of the block along the last axis.
    pub fn col_start(&self) -> u64 {
        match self.axes.last() {
            Some(AxisUse::Col { start, .. }) => *start,
            Some(AxisUse::Fixed(i)) => *i,
            _ => 0,
        }
    }

    /// The HBM pattern of a view read with space `strides` over this block; per-row tiles
    /// take only column 0.
    pub fn hbm_pattern(&self, view: &HView, strides: &[i64], fit: Fit) -> isa::HbmAp {
        let mut offset = view.offset;
        let mut dims = Vec::new();
        let mut col = None;
        for (a, &s) in self.axes.iter().zip(strides) {
            match *a {
                AxisUse::Fixed(i) => offset += i as i64 * s,
                AxisUse::Part { start, size } => {
                    offset += start as i64 * s;
                    dims.push((size, s));
                }
                AxisUse::Col { start, size } => {
                    offset += start as i64 * s;
                    if fit == Fit::Full {
                        col = Some((size, s));
                    }
                }
            }
        }
        // Packed rows lie between the partitions and the columns on the tile's free axis.
        if let Some(p) = self.pack {
            let s = strides.get(p.axis).copied().unwrap_or(0);
            dims.push((p.reps, p.step as i64 * s));
        }
        dims.extend(col);
        hbm_ap(view.dtype, offset, &dims)
    }
}

/// A tile buffer holding one value for one block: `parts` x `cols` elements.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Tile {
    pub buf: Buf,
    pub mem: Mem,
    pub dtype: Dtype,
    pub parts: u32,
    pub cols: u32,
    /// Element offset inside the buffer (for tiles that are slices of a larger buffer).
    pub col_offset: u32,
    /// Packed rows (`Pack`): the tile holds `reps` rows of `cols` elements, `pitch`
    /// elements apart; a pitch of 0 repeats one row (an operand broadcast over the packed
    /// axis, loaded once), which is only ever read.
    pub reps: u32,
    pub pitch: u32,
}

impl Tile {
    /// The access pattern of the whole tile (relative to its buffer).
    pub fn ap(&self) -> TileAp {
        self.slice(0, self.parts, 0, self.cols)
    }

    /// A tile of one row per partition, `reps` 1.
    pub fn plain(buf: Buf, mem: Mem, dtype: Dtype, parts: u32, cols: u32, col_offset: u32) -> Tile {
        Tile {
            buf,
            mem,
            dtype,
            parts,
            cols,
            col_offset,
            reps: 1,
            pitch: 0,
        }
    }

    /// True for a tile that may be written: not a packed row repeated (`pitch` 0).
    pub fn writable(&self) -> bool {
        self.reps == 1 || self.pitch != 0
    }

    /// Columns `c0..c0 + cn` of the tile, as a tile of its own (a view of the same buffer).
    pub fn cols_view(&self, c0: u32, cn: u32) -> Tile {
        Tile {
            cols: cn,
            col_offset: self.col_offset + c0,
            ..*self
        }
    }

    /// The access pattern of partitions `p0..p0+pn` and columns `c0..c0+cn` of the tile.
    /// Each packed row's columns `c0..c0+cn` when the tile holds several.
    pub fn slice(&self, p0: u32, pn: u32, c0: u32, cn: u32) -> TileAp {
        let dims = if self.reps > 1 {
            smallvec![
                Dim {
                    size: self.reps,
                    stride: self.pitch as i32
                },
                Dim {
                    size: cn,
                    stride: 1
                }
            ]
        } else {
            smallvec![Dim {
                size: cn,
                stride: 1
            }]
        };
        TileAp {
            mem: self.mem,
            dtype: self.dtype,
            partition: p0 as u8,
            partitions: pn as u8,
            offset: (self.col_offset + c0) * self.dtype.size(),
            dims,
        }
    }
}

/// True when a block graph may be evaluated on packed rows (`Pack`): elementwise work,
/// casts, copies, column slices and concats on full rows only, from loads of full rows,
/// immediates and each other (no reductions or per-row values, which would need one
/// value per packed row, no masks or index values, which are functions of the row, and no
/// tiles given from outside or kept for other blocks).
pub fn packable(graph: &BGraph) -> bool {
    graph.keep.is_empty()
        && graph.nodes.iter().all(|n| {
            let op = matches!(
                n.op,
                BOp::Unary(_)
                    | BOp::Binary(_)
                    | BOp::Where
                    | BOp::Cast
                    | BOp::Copy
                    | BOp::Activate { .. }
                    | BOp::Folded
                    | BOp::Slice { .. }
                    | BOp::Concat(_)
            );
            let args = n.args.iter().all(|a| match a {
                BArg::Node(k) => graph.nodes[*k].fit == Fit::Full,
                BArg::Imm(_) => true,
                BArg::Load(_, st) => st.last() != Some(&0),
                BArg::Given(_) | BArg::Affine(_) => false,
            });
            matches!(n.op, BOp::Folded) || (op && args && n.fit == Fit::Full && n.accum.is_none())
        })
}

/// Bytes of one DMA piece below which a transfer is not split further.
const DMA_PIECE_BYTES: u64 = 16 * 1024;
/// Bytes per partition below which a transfer is not split into column chunks.
const DMA_MIN_ROW_BYTES: u64 = 512;
/// The same for a kernel's last stores (`Tiler::last_stores`): nothing runs after them,
/// so their latency is the kernel's tail, and 128-byte runs still move at full rate (a
/// run costs at least 64 bytes).
const DMA_MIN_ROW_BYTES_LAST: u64 = 64;

/// Splits a block's transfer into pieces for several DMA queues (each queue moves 16
/// B/cycle; all 16 together 256): into quarters of 32 partitions when the block has more
/// than 32 partitions on one axis, and into column chunks of at least 512 bytes per partition,
/// pieces of at least 16 KiB. A queue overlaps a transfer's fixed latency with the
/// previous transfer's data, so smaller pieces cost little and shorten the first load
/// and the last store of a kernel.
/// Returns each piece as a sub-block with its first partition and column in the tile.
///
/// `last` marks a kernel's last stores: they are split into as many pieces as the 16
/// queues take, whatever their size, so that the transfer after the last compute ends
/// soonest.
pub fn dma_pieces(block: &Block, fit: Fit, dtype: Dtype, last: bool) -> Vec<(Block, u32, u32)> {
    let parts = block.parts() as u64;
    let cols = if fit == Fit::Full {
        block.cols() as u64
    } else {
        1
    };
    let bytes = parts * cols * block.reps() as u64 * dtype.size() as u64;
    let want = if last {
        16
    } else {
        (bytes / DMA_PIECE_BYTES).clamp(1, 16)
    };
    let min_row = if last {
        DMA_MIN_ROW_BYTES_LAST
    } else {
        DMA_MIN_ROW_BYTES
    };
    let part_axes: Vec<usize> = block
        .axes
        .iter()
        .enumerate()
        .filter(|(_, a)| matches!(a, AxisUse::Part { .. }))
        .map(|(i, _)| i)
        .collect();
    // Partition quarters of 32 (a tile of at most 32 partitions must start at a multiple
    // of 32): four for 128 rows, the last one shorter when the rows are fewer. With several
    // partition axes, the outermost is cut when the inner ones' partitions divide 32.
    let inner: u64 = part_axes
        .iter()
        .skip(1)
        .map(|&a| match block.axes[a] {
            AxisUse::Part { size, .. } => size,
            _ => 1,
        })
        .product();
    let psplit = if want >= 4 && parts > 32 && 32 % inner == 0 {
        parts.div_ceil(32)
    } else {
        1
    };
    let row_bytes = cols * dtype.size() as u64;
    let csplit = (want / psplit).min(row_bytes / min_row).max(1);
    let quarter = if psplit > 1 { 32 } else { parts };
    let mut out = Vec::new();
    for pi in 0..psplit {
        let p0 = pi * quarter;
        let pn = quarter.min(parts - p0);
        let chunk = cols.div_ceil(csplit);
        let mut c0 = 0;
        while c0 < cols {
            let cn = chunk.min(cols - c0);
            let mut axes = block.axes.clone();
            if psplit > 1 {
                if let AxisUse::Part { start, .. } = axes[part_axes[0]] {
                    axes[part_axes[0]] = AxisUse::Part {
                        start: start + p0 / inner,
                        size: pn / inner,
                    };
                }
            }
            if fit == Fit::Full {
                if let Some(last) = axes.last_mut() {
                    if let AxisUse::Col { start, .. } = *last {
                        *last = AxisUse::Col {
                            start: start + c0,
                            size: cn,
                        };
                    }
                }
            }
            let pack = block.pack;
            out.push((Block { axes, pack }, p0 as u32, c0 as u32));
            c0 += cn;
        }
    }
    out
}

/// The canonical engine of elementwise work (the `engines` pass may move it).
const VECTOR: Engine = Engine::Vector;

impl Tiler<'_> {
    /// A fresh SBUF tile of `parts` x `cols` elements.
    /// In a block of packed rows (`pack_reps` above 1), `pack_reps` rows of `cols` each.
    pub fn sbuf_tile(&mut self, dtype: Dtype, parts: u32, cols: u32) -> Tile {
        let reps = self.pack_reps.max(1);
        let buf = self.out.sbuf(dtype, parts, (cols * reps).max(1));
        Tile {
            reps,
            pitch: cols,
            ..Tile::plain(buf, Mem::Sbuf, dtype, parts, cols, 0)
        }
    }

    /// Loads `view` (read with space `strides`) for `block` into a new SBUF tile.
    pub fn load(
        &mut self,
        block: &Block,
        view: &HView,
        strides: &[i64],
        fit: Fit,
        span: Span,
    ) -> Tile {
        let cols = if fit == Fit::Full { block.cols() } else { 1 };
        let tile = self.sbuf_tile(view.dtype, block.parts(), cols);
        self.transfer(block, tile, view, strides, fit, true, span);
        tile
    }

    /// Loads `view` (read with space `strides`, full rows) for `block` into a new SBUF tile
    /// of `dtype`; the DMA converts.
    pub fn load_as(
        &mut self,
        block: &Block,
        view: &HView,
        strides: &[i64],
        dtype: Dtype,
        span: Span,
    ) -> Tile {
        let tile = self.sbuf_tile(dtype, block.parts(), block.cols());
        self.transfer(block, tile, view, strides, Fit::Full, true, span);
        tile
    }

    /// Stores `tile` to `dest` (read with space `strides`) for `block`.
    pub fn store(
        &mut self,
        block: &Block,
        tile: Tile,
        dest: &HView,
        strides: &[i64],
        fit: Fit,
        span: Span,
    ) {
        self.transfer(block, tile, dest, strides, fit, false, span);
    }

    /// The DMAs between `tile` and `view` for `block`, split over queues (`dma_pieces`):
    /// HBM to the tile when `load`, else the tile to HBM.
    #[allow(clippy::too_many_arguments)]
    fn transfer(
        &mut self,
        block: &Block,
        tile: Tile,
        view: &HView,
        strides: &[i64],
        fit: Fit,
        load: bool,
        span: Span,
    ) {
        let last = if load {
            self.wide_loads
        } else {
            self.last_stores
        };
        for (piece, p0, c0) in dma_pieces(block, fit, view.dtype, last) {
            let hbm = DmaAp::Hbm(piece.hbm_pattern(view, strides, fit));
            let cols = if fit == Fit::Full { piece.cols() } else { 1 };
            let sbuf = DmaAp::Tile(tile.slice(p0, piece.parts(), c0, cols));
            let (dst, src, bufs) = if load {
                (sbuf, hbm, [tile.buf, view.buf])
            } else {
                (hbm, sbuf, [view.buf, tile.buf])
            };
            self.out
                .push(Op::Dma { dst, src }, Engine::Dma(0), &bufs, span);
        }
    }

    /// Forgets the operands loaded for the previous group (call before each group).
    pub fn begin_group(&mut self) {
        self.group_loads.clear();
        self.group_load_bytes = 0;
        self.reuse_space = None;
    }

    /// Evaluates `graph` on `block`: emits loads, computation and stores; returns each
    /// node's tile (for an `Accum` node, its row sums).
    pub fn eval_block(&mut self, graph: &BGraph, block: &Block) -> Vec<Option<Tile>> {
        let tiles = self.eval_nodes(graph, block);
        for st in &graph.stores {
            let node = &graph.nodes[st.node];
            let Some(mut tile) = tiles[st.node] else {
                continue;
            };
            if tile.mem == Mem::Psum || tile.dtype != st.dest.dtype {
                // DMA never reads PSUM; and a store converts nothing here.
                tile = self.copy_to_sbuf(tile, st.dest.dtype, node.span);
            }
            let nb = block.with_cols(node.width);
            self.store(&nb, tile, &st.dest, &st.strides, node.fit, node.span);
        }
        tiles
    }

    /// Evaluates `graph` on `block` without its stores and returns the tile of `node`
    /// (which must be one of the graph's stored nodes, so that no other node writes over
    /// it): a matmul operand computed on its way into SBUF (`matmul::Prologue`).
    pub fn eval_block_value(&mut self, graph: &BGraph, block: &Block, node: usize) -> Option<Tile> {
        self.eval_nodes(graph, block)[node]
    }

    /// Emits the loads and the computation of `graph` on `block`; returns each node's tile.
    fn eval_nodes(&mut self, graph: &BGraph, block: &Block) -> Vec<Option<Tile>> {
        self.block_loads.clear();
        // Last uses, so that a result can overwrite an operand that dies with it (which
        // keeps a block's footprint small enough for several blocks to be in flight).
        let n = graph.nodes.len();
        let mut last_use = vec![usize::MAX; n];
        let mut uses = vec![0usize; n];
        let mut load_last: Vec<(HView, Vec<i64>, usize)> = Vec::new();
        for (i, node) in graph.nodes.iter().enumerate() {
            for a in &node.args {
                match a {
                    BArg::Node(k) => {
                        last_use[*k] = i;
                        uses[*k] += 1;
                    }
                    BArg::Load(v, st) => {
                        match load_last.iter_mut().find(|(lv, ls, _)| lv == v && ls == st) {
                            Some(e) => e.2 = i,
                            None => load_last.push((v.clone(), st.clone(), i)),
                        }
                    }
                    _ => {}
                }
            }
        }
        for st in &graph.stores {
            last_use[st.node] = usize::MAX - 1;
            uses[st.node] += 2;
        }
        for &k in &graph.keep {
            last_use[k] = usize::MAX - 1;
            uses[k] += 2;
        }
        // A slice is a view of its operand's tile: the operand lives as long as the slice.
        for i in (0..n).rev() {
            if let (BOp::Slice { .. }, Some(BArg::Node(k))) =
                (&graph.nodes[i].op, graph.nodes[i].args.first())
            {
                last_use[*k] = last_use[*k].max(last_use[i]);
            }
        }
        let is_view = |k: usize| matches!(graph.nodes[k].op, BOp::Slice { .. });
        // Concat operands computed for the concat alone, of its dtype, write their range
        // of its tile: node -> (concat node, first column).
        let mut target: Vec<Option<(usize, u32)>> = vec![None; n];
        for (c, node) in graph.nodes.iter().enumerate() {
            let BOp::Concat(widths) = &node.op else {
                continue;
            };
            let mut off = 0;
            for (a, &w) in node.args.iter().zip(widths) {
                if let BArg::Node(k) = a {
                    let part = &graph.nodes[*k];
                    let computes = matches!(
                        part.op,
                        BOp::Unary(_)
                            | BOp::Binary(_)
                            | BOp::Where
                            | BOp::Cast
                            | BOp::Activate { .. }
                    );
                    if computes
                        && uses[*k] == 1
                        && part.dtype == node.dtype
                        && part.fit == Fit::Full
                        && part.accum.is_none()
                        && target[*k].is_none()
                    {
                        target[*k] = Some((c, off));
                    }
                }
                off += w;
            }
        }
        let mut concat_tiles: Vec<Option<Tile>> = vec![None; n];
        let mut tiles: Vec<Option<Tile>> = vec![None; n];
        for (i, node) in graph.nodes.iter().enumerate() {
            match node.op {
                BOp::Folded | BOp::Accum(_) => continue,
                _ => {}
            }
            let nb = block.with_cols(node.width);
            self.dying.clear();
            for a in &node.args {
                match a {
                    BArg::Node(k) if last_use[*k] == i && !is_view(*k) => {
                        if let Some(t) = tiles[*k] {
                            self.dying.push(t.buf);
                        }
                    }
                    BArg::Load(v, st) => {
                        // A tile kept for other blocks is never written over.
                        let kept = reuse_of(st, self.reuse_space.as_deref()) != Reuse::No;
                        let last = load_last.iter().find(|(lv, ls, _)| lv == v && ls == st);
                        if !kept && last.is_some_and(|l| l.2 == i) {
                            self.dying_loads.push((v.clone(), st.clone()));
                        }
                    }
                    _ => {}
                }
            }
            let into = target[i].map(|(c, off)| {
                let whole = self.concat_tile(&graph.nodes[c], block, &mut concat_tiles[c]);
                whole.cols_view(off, nb.cols())
            });
            self.target = into;
            let (mut t, acc) = match &node.op {
                BOp::Concat(widths) => {
                    let whole = self.concat_tile(node, block, &mut concat_tiles[i]);
                    let mut off = 0;
                    for (a, &w) in node.args.iter().zip(widths) {
                        let written = matches!(a, BArg::Node(k) if target[*k] == Some((i, off)));
                        if !written {
                            let pb = block.with_cols(Some(w));
                            let src = self.operand(a, Fit::Full, &pb, &tiles, node.span);
                            self.write_from(whole.cols_view(off, w), src, node.span);
                        }
                        off += w;
                    }
                    (whole, None)
                }
                _ => self.eval_node(graph, node, &nb, &tiles),
            };
            self.target = None;
            if let Some(dest) = into {
                if t.buf != dest.buf || t.col_offset != dest.col_offset || t.mem != dest.mem {
                    self.write_from(dest, Operand::Tile(t), node.span);
                    t = dest;
                }
            }
            self.dying_loads.clear();
            tiles[i] = Some(t);
            if let (Some(r), Some(acc)) = (node.accum, acc) {
                let reduce = &graph.nodes[r];
                tiles[r] = Some(if matches!(reduce.op, BOp::Accum(ReduceFn::Mean)) {
                    // The activation summed in f32; the mean divides once and rounds once.
                    let mean = self.sbuf_tile(reduce.dtype, acc.parts, 1);
                    let n = block.cols() as f32;
                    self.tensor_scalar(mean, acc, AluOp::Div, Operand::Imm(n), reduce.span);
                    mean
                } else {
                    acc
                });
            }
        }
        tiles
    }

    /// The tile of a concat node for this block, made when first needed (by the first of
    /// its operands written into it, or by the concat itself).
    fn concat_tile(&mut self, node: &BNode, block: &Block, slot: &mut Option<Tile>) -> Tile {
        if let Some(t) = *slot {
            return t;
        }
        let cols = block.with_cols(node.width).cols();
        let t = self.sbuf_tile(node.dtype, block.parts(), cols);
        *slot = Some(t);
        t
    }

    /// The tile a node writes: one of `candidates` (its operands) when that operand dies
    /// with this node and has the same shape and dtype — elementwise instructions may
    /// write over their input — else a new SBUF tile.
    fn out_tile(&mut self, dtype: Dtype, parts: u32, cols: u32, candidates: &[Tile]) -> Tile {
        // A concat operand writes its range of the concat's tile.
        if let Some(t) = self.target.take() {
            if t.dtype == dtype && t.parts == parts && t.cols == cols {
                return t;
            }
        }
        for c in candidates {
            let same = c.mem == Mem::Sbuf
                && c.writable()
                && c.reps == self.pack_reps.max(1)
                && c.dtype == dtype
                && c.parts == parts
                && c.cols == cols
                && c.col_offset == 0;
            let dies = self.dying.contains(&c.buf)
                || self.block_loads.iter().any(|(v, st, _, t)| {
                    t.buf == c.buf && self.dying_loads.iter().any(|(dv, ds)| dv == v && ds == st)
                });
            if same && dies {
                // Used once: a later node of this block must not get it again.
                self.dying.retain(|b| *b != c.buf);
                self.block_loads.retain(|l| l.3.buf != c.buf);
                return *c;
            }
        }
        self.sbuf_tile(dtype, parts, cols)
    }

    /// Copies `src` (usually PSUM) to `dst`, on Vector (the `engines` pass may move it to
    /// Scalar as an exact identity activation).
    pub fn copy_out(&mut self, dst: TileAp, src: TileAp, bufs: &[Buf], span: Span) {
        self.out
            .push(Op::TensorCopy { out: dst, src }, Engine::Vector, bufs, span);
    }

    /// A copy of `tile` in a new SBUF tile of `dtype` (Vector engine).
    pub fn copy_to_sbuf(&mut self, tile: Tile, dtype: Dtype, span: Span) -> Tile {
        let out = self.sbuf_tile(dtype, tile.parts, tile.cols);
        self.out.push(
            Op::TensorCopy {
                out: out.ap(),
                src: tile.ap(),
            },
            VECTOR,
            &[out.buf, tile.buf],
            span,
        );
        out
    }

    /// The tile or immediate of an operand in this block.
    pub(super) fn operand(
        &mut self,
        arg: &BArg,
        fit: Fit,
        block: &Block,
        tiles: &[Option<Tile>],
        span: Span,
    ) -> Operand {
        match arg {
            BArg::Node(i) => match tiles[*i] {
                Some(t) => Operand::Tile(t),
                None => Operand::Imm(f32::NAN),
            },
            BArg::Given(t) => Operand::Tile(*t),
            BArg::Imm(x) => Operand::Imm(*x),
            BArg::Affine(form) => {
                // Constant along the row: a per-row column is enough.
                let cols = if fit == Fit::Full && form.coefs.last() != Some(&0) {
                    block.cols()
                } else {
                    1
                };
                let out = self.sbuf_tile(Dtype::I32, block.parts(), cols);
                self.out.push(
                    Op::Iota {
                        out: out.ap(),
                        expr: block_affine(form, block),
                    },
                    Engine::GpSimd,
                    &[out.buf],
                    span,
                );
                Operand::Tile(out)
            }
            BArg::Load(view, strides) => {
                // A load whose last-axis stride is zero is constant along the row: load
                // it as a per-row column.
                let f = if fit == Fit::Full && strides.last() == Some(&0) {
                    Fit::PerRow
                } else {
                    fit
                };
                // An operand broadcast over some row axis (a weight or bias vector, a
                // table shared by the heads) reads the same elements in several blocks:
                // it is loaded once per group for each pattern, while the tiles kept fit
                // `GROUP_CACHE_BUDGET`.
                // Packed rows that all read the same elements (a stride of 0 along the
                // packed axis) read one row's load, repeated (`pitch` 0).
                if let Some(p) = block.pack {
                    if strides.get(p.axis) == Some(&0) {
                        let reps = std::mem::replace(&mut self.pack_reps, 1);
                        let t = self.operand(arg, fit, &block.unpacked(), tiles, span);
                        self.pack_reps = reps;
                        return match t {
                            Operand::Tile(t) => Operand::Tile(Tile {
                                reps,
                                pitch: 0,
                                ..t
                            }),
                            imm => imm,
                        };
                    }
                }
                let reuse = reuse_of(strides, self.reuse_space.as_deref());
                let reusable = reuse != Reuse::No;
                let pattern = block.hbm_pattern(view, strides, f);
                let cols = if f == Fit::Full { block.cols() } else { 1 };
                let key = (block.parts(), cols, pattern);
                if reusable {
                    if let Some(t) = self
                        .group_loads
                        .iter()
                        .find(|(v, s, ff, k, _)| v == view && s == strides && *ff == f && *k == key)
                        .map(|l| l.4)
                    {
                        return Operand::Tile(t);
                    }
                }
                // Each operand is loaded once per block, however many nodes read it.
                let cached = self
                    .block_loads
                    .iter()
                    .find(|(v, s, ff, _)| v == view && s == strides && *ff == f)
                    .map(|l| l.3);
                let tile = match cached {
                    Some(t) => t,
                    None => {
                        let t = self.load(block, view, strides, f, span);
                        self.block_loads.push((view.clone(), strides.clone(), f, t));
                        let bytes = cols as u64 * view.dtype.size() as u64;
                        let fits = self.group_load_bytes + bytes <= super::GROUP_CACHE_BUDGET;
                        if reuse == Reuse::Invariant || (reuse == Reuse::Broadcast && fits) {
                            if reuse == Reuse::Broadcast {
                                self.group_load_bytes += bytes;
                            }
                            self.group_loads
                                .push((view.clone(), strides.clone(), f, key, t));
                        }
                        t
                    }
                };
                Operand::Tile(tile)
            }
        }
    }

    /// Emits one node; returns its tile and, for an activation with `accum`, the row sums.
    fn eval_node(
        &mut self,
        graph: &BGraph,
        node: &BNode,
        block: &Block,
        tiles: &[Option<Tile>],
    ) -> (Tile, Option<Tile>) {
        if let BOp::Activate { func, negate_bias } = node.op {
            return self.eval_activate(graph, node, func, negate_bias, block, tiles);
        }
        if let BOp::Combine { func, parts, cols } = node.op {
            return (
                self.eval_combine(node, func, parts, cols, block, tiles),
                None,
            );
        }
        if let BOp::Unary(u) = node.op {
            if let (Some(func), Some(_)) = (reference::act_func(u), node.accum) {
                return self.eval_activate(graph, node, func, false, block, tiles);
            }
        }
        (self.eval_simple(node, block, tiles), None)
    }

    /// `func(x * scale + bias)` on the Scalar engine, with the row sums when asked.
    fn eval_activate(
        &mut self,
        graph: &BGraph,
        node: &BNode,
        func: ActFunc,
        negate_bias: bool,
        block: &Block,
        tiles: &[Option<Tile>],
    ) -> (Tile, Option<Tile>) {
        let parts = block.parts();
        // A per-row activation (`split_rows::fold_rows`) works on one column.
        let cols = if node.fit == Fit::Full {
            block.cols()
        } else {
            1
        };
        let span = node.span;
        let x = self.operand(&node.args[0], node.fit, block, tiles, span);
        let x = self.widen(x, parts, cols, node.dtype, span);
        let mut bufs = Vec::new();
        let mut scalar = |t: &mut Self, arg: Option<&BArg>, default: f32, negate: bool| match arg {
            None => ScalarArg::imm(default),
            Some(a) => match t.operand(a, Fit::PerRow, block, tiles, span) {
                Operand::Imm(v) => ScalarArg::imm(if negate { -v } else { v }),
                Operand::Tile(col) => {
                    let col = if negate {
                        let n = t.sbuf_tile(Dtype::F32, parts, 1);
                        t.tensor_scalar(n, col, AluOp::Mul, Operand::Imm(-1.0), span);
                        n
                    } else {
                        col
                    };
                    bufs.push(col.buf);
                    ScalarArg::Ap(col.ap())
                }
            },
        };
        // x * 1 + (-0) is x exactly, signed zeros included.
        let scale = scalar(self, node.args.get(1), 1.0, false);
        let bias = scalar(self, node.args.get(2), -0.0, negate_bias);
        let out = self.out_tile(node.dtype, parts, cols, &[x]);
        let acc = node.accum.map(|r| {
            let reduce = &graph.nodes[r];
            let dtype = if matches!(reduce.op, BOp::Accum(ReduceFn::Mean)) {
                Dtype::F32
            } else {
                reduce.dtype
            };
            self.sbuf_tile(dtype, parts, 1)
        });
        let mut all = vec![out.buf, x.buf];
        all.extend(bufs);
        all.extend(acc.map(|a| a.buf));
        self.out.push(
            Op::Activate {
                out: out.ap(),
                src: x.ap(),
                func,
                scale,
                bias,
                accum: acc.map(|a| a.ap()),
            },
            Engine::Scalar,
            &all,
            span,
        );
        (out, acc)
    }

    fn eval_simple(&mut self, node: &BNode, block: &Block, tiles: &[Option<Tile>]) -> Tile {
        let parts = block.parts();
        let cols = if node.fit == Fit::Full {
            block.cols()
        } else {
            1
        };
        let span = node.span;
        match &node.op {
            BOp::Slice { start } => {
                let src = self.operand(&node.args[0], node.fit, block, tiles, span);
                match src {
                    Operand::Tile(t) => t.cols_view(*start, cols),
                    other => self.widen(other, parts, cols, node.dtype, span),
                }
            }
            // Evaluated by `eval_block`.
            BOp::Concat(_) => self.sbuf_tile(node.dtype, parts, cols),
            BOp::Copy => {
                let src = self.operand(&node.args[0], node.fit, block, tiles, span);
                match src {
                    Operand::Tile(t) if t.cols == cols => t,
                    other => {
                        let out = self.sbuf_tile(node.dtype, parts, cols);
                        self.write_from(out, other, span);
                        out
                    }
                }
            }
            BOp::Cast => {
                let src = self.operand(&node.args[0], node.fit, block, tiles, span);
                // A tile already in SBUF in the target dtype that dies here (a value
                // computed outside the evaluator and written in its final dtype) is its own
                // cast; `out_tile` hands it back only then.
                let candidates: &[Tile] = match &src {
                    Operand::Tile(t) => std::slice::from_ref(t),
                    _ => &[],
                };
                let out = self.out_tile(node.dtype, parts, cols, candidates);
                if candidates.first().is_none_or(|t| t.buf != out.buf) {
                    self.write_from(out, src, span);
                }
                out
            }
            BOp::Unary(u) => {
                let src = self.operand(&node.args[0], node.fit, block, tiles, span);
                let src = self.widen(src, parts, cols, node.dtype, span);
                let out = self.out_tile(node.dtype, parts, cols, &[src]);
                if node.dtype == Dtype::I32 {
                    self.int_unary(*u, out, src, span);
                    return out;
                }
                match reference::act_func(*u) {
                    // `logical_not(m)` is `m == 0`, 1 or 0.
                    None if *u == UnaryFn::Not => self.out.push(
                        Op::TensorScalar {
                            out: out.ap(),
                            src: src.ap(),
                            op0: AluOp::IsEq,
                            s0: ScalarArg::imm(0.0),
                            op1: AluOp::Bypass,
                            s1: ScalarArg::imm(0.0),
                        },
                        VECTOR,
                        &[out.buf, src.buf],
                        span,
                    ),
                    None => self.out.push(
                        Op::TensorScalar {
                            out: out.ap(),
                            src: src.ap(),
                            op0: AluOp::Mul,
                            s0: ScalarArg::imm(-1.0),
                            op1: AluOp::Bypass,
                            s1: ScalarArg::imm(0.0),
                        },
                        VECTOR,
                        &[out.buf, src.buf],
                        span,
                    ),
                    Some(func) => self.out.push(
                        Op::Activate {
                            out: out.ap(),
                            src: src.ap(),
                            func,
                            // x * 1 + (-0) is x exactly, signed zeros included.
                            scale: ScalarArg::imm(1.0),
                            bias: ScalarArg::imm(-0.0),
                            accum: None,
                        },
                        Engine::Scalar,
                        &[out.buf, src.buf],
                        span,
                    ),
                };
                out
            }
            BOp::Binary(b) => {
                let op = reference::alu_op(*b);
                let a = self.operand(&node.args[0], node.fit, block, tiles, span);
                let c = self.operand(&node.args[1], node.fit, block, tiles, span);
                let candidates: Vec<Tile> = [a, c]
                    .iter()
                    .filter_map(|o| match o {
                        Operand::Tile(t) => Some(*t),
                        Operand::Imm(_) => None,
                    })
                    .collect();
                let out = self.out_tile(node.dtype, parts, cols, &candidates);
                let full = |o: &Operand| matches!(o, Operand::Tile(t) if t.cols == cols);
                match (a, c) {
                    (Operand::Tile(x), Operand::Tile(y)) if x.cols == cols && y.cols == cols => {
                        self.out.push(
                            Op::TensorTensor {
                                op,
                                out: out.ap(),
                                a: x.ap(),
                                b: y.ap(),
                            },
                            VECTOR,
                            &[out.buf, x.buf, y.buf],
                            span,
                        );
                    }
                    // x OP s, with s a per-row column or an immediate.
                    _ if full(&a) => {
                        let x = self.widen(a, parts, cols, node.dtype, span);
                        self.tensor_scalar(out, x, op, c, span);
                    }
                    // s OP y: the operation reversed.
                    _ if full(&c) => {
                        let y = self.widen(c, parts, cols, node.dtype, span);
                        self.tensor_scalar(out, y, reversed(op), a, span);
                    }
                    _ => {
                        let x = self.widen(a, parts, cols, node.dtype, span);
                        self.tensor_scalar(out, x, op, c, span);
                    }
                }
                out
            }
            BOp::Where => {
                // Full tiles are read as they are; an immediate or a per-row column is read
                // through a pattern that repeats one column over the row (step 0), so it is
                // never widened into a tile of its own: widening cost a `memset` (and a
                // `tensor_scalar` for a column) of the whole row per block, as much Vector
                // time again as half the select (`where(mask, scores, -inf)`).
                let mut full = Vec::new();
                let mut aps = Vec::new();
                let mut bufs = Vec::new();
                for (i, a) in node.args.iter().enumerate() {
                    let o = self.operand(a, node.fit, block, tiles, span);
                    let dtype = if i == 0 { Dtype::Bool } else { node.dtype };
                    let (ap, buf) = match o {
                        Operand::Tile(t) if t.cols == cols => {
                            full.push(t);
                            (t.ap(), t.buf)
                        }
                        other => self.repeated_column(other, parts, cols, dtype, span),
                    };
                    aps.push(ap);
                    bufs.push(buf);
                }
                let out = self.out_tile(node.dtype, parts, cols, &full);
                self.out.push(
                    Op::Select {
                        out: out.ap(),
                        mask: aps[0].clone(),
                        a: aps[1].clone(),
                        b: aps[2].clone(),
                    },
                    VECTOR,
                    &[out.buf, bufs[0], bufs[1], bufs[2]],
                    span,
                );
                out
            }
            BOp::Iota => {
                let out = self.sbuf_tile(node.dtype, parts, cols);
                let base = i32::try_from(block.col_start()).unwrap_or(i32::MAX);
                self.out.push(
                    Op::Iota {
                        out: out.ap(),
                        expr: Affine {
                            base,
                            partition_step: 0,
                            steps: smallvec![1],
                        },
                    },
                    Engine::GpSimd,
                    &[out.buf],
                    span,
                );
                out
            }
            BOp::AffineSelect { form, cmp, fill } => {
                let src = self.operand(&node.args[0], node.fit, block, tiles, span);
                let mut src = self.widen(src, parts, cols, node.dtype, span);
                if src.mem == Mem::Psum {
                    // GpSimd cannot read PSUM.
                    src = self.copy_to_sbuf(src, src.dtype, span);
                }
                let out = self.out_tile(node.dtype, parts, cols, &[src]);
                self.out.push(
                    Op::AffineSelect {
                        out: out.ap(),
                        src: src.ap(),
                        cmp: *cmp,
                        expr: block_affine(form, block),
                        fill: Imm::new(imm_of(node.dtype, *fill)),
                    },
                    Engine::GpSimd,
                    &[out.buf, src.buf],
                    span,
                );
                out
            }
            BOp::Tril { k, fill } => {
                let src = self.operand(&node.args[0], node.fit, block, tiles, span);
                let mut src = self.widen(src, parts, cols, node.dtype, span);
                if src.mem == Mem::Psum {
                    // GpSimd cannot read PSUM.
                    src = self.copy_to_sbuf(src, src.dtype, span);
                }
                let out = self.out_tile(node.dtype, parts, cols, &[src]);
                let rank = block.axes.len();
                let row0 = match block.axes.get(rank.wrapping_sub(2)) {
                    Some(AxisUse::Part { start, .. }) | Some(AxisUse::Fixed(start)) => {
                        *start as i64
                    }
                    _ => 0,
                };
                let partition_step = match block.axes.get(rank.wrapping_sub(2)) {
                    Some(AxisUse::Part { .. }) => 1,
                    _ => 0,
                };
                // Keep (i, j) where i + k - j >= 0.
                // Saturating: k may be any i64 (tril(x, k=9223372036854775807) keeps all).
                let base = row0
                    .saturating_add(*k)
                    .saturating_sub(block.col_start() as i64);
                self.out.push(
                    Op::AffineSelect {
                        out: out.ap(),
                        src: src.ap(),
                        cmp: CmpOp::Ge,
                        expr: Affine {
                            base: base.clamp(i32::MIN as i64, i32::MAX as i64) as i32,
                            partition_step,
                            steps: smallvec![-1],
                        },
                        fill: Imm::new(imm_of(node.dtype, *fill)),
                    },
                    Engine::GpSimd,
                    &[out.buf, src.buf],
                    span,
                );
                out
            }
            // Emitted by `eval_node` and `eval_activate`, or nothing to emit.
            BOp::Activate { .. } | BOp::Accum(_) | BOp::Folded | BOp::Combine { .. } => {
                self.sbuf_tile(node.dtype, parts, cols)
            }
            BOp::Reduce(func) => {
                let src = self.operand(&node.args[0], Fit::Full, block, tiles, span);
                let src = self.widen(src, parts, block.cols(), node.dtype, span);
                let op = match func {
                    ReduceFn::Sum | ReduceFn::Mean => ReduceOp::Add,
                    ReduceFn::Max => ReduceOp::Max,
                    ReduceFn::Min => ReduceOp::Min,
                };
                let acc_dtype = if *func == ReduceFn::Mean {
                    Dtype::F32
                } else {
                    node.dtype
                };
                let acc = self.sbuf_tile(acc_dtype, parts, 1);
                // A second operand is the running result of the columns before this
                // block's (`longrow.rs`): it goes into the first column (`x0 = run OP x0`)
                // for the reduction, which so continues in the reference's order, and the
                // column is put back afterwards for the operand's other readers.
                let running = match node.args.get(1) {
                    Some(BArg::Given(run)) => {
                        let saved = self.sbuf_tile(src.dtype, parts, 1);
                        let first = src.slice(0, parts, 0, 1);
                        self.out.push(
                            Op::TensorCopy {
                                out: saved.ap(),
                                src: first.clone(),
                            },
                            VECTOR,
                            &[saved.buf, src.buf],
                            span,
                        );
                        self.out.push(
                            Op::TensorTensor {
                                op: match op {
                                    ReduceOp::Add => AluOp::Add,
                                    ReduceOp::Max => AluOp::Max,
                                    ReduceOp::Min => AluOp::Min,
                                },
                                out: first.clone(),
                                a: run.ap(),
                                b: first,
                            },
                            VECTOR,
                            &[src.buf, run.buf, src.buf],
                            span,
                        );
                        Some(saved)
                    }
                    _ => None,
                };
                // Row sums may move to the Scalar engine's accumulating activation
                // (the `engines` pass).
                self.out.push(
                    Op::TensorReduce {
                        op,
                        out: acc.ap(),
                        src: src.ap(),
                    },
                    VECTOR,
                    &[acc.buf, src.buf],
                    span,
                );
                if let Some(saved) = running {
                    self.out.push(
                        Op::TensorCopy {
                            out: src.slice(0, parts, 0, 1),
                            src: saved.ap(),
                        },
                        VECTOR,
                        &[src.buf, saved.buf],
                        span,
                    );
                }
                if *func != ReduceFn::Mean {
                    return acc;
                }
                let out = self.sbuf_tile(node.dtype, parts, 1);
                let n = block.cols() as f32;
                self.tensor_scalar(out, acc, AluOp::Div, Operand::Imm(n), span);
                out
            }
        }
    }

    /// `-x` and `abs(x)` of an `i32` tile on the integer datapath: `x * -1` (wrapping),
    /// and `max(x, x * -1)` (so `abs(-2^31)` is `-2^31`, as the reference's wrapping
    /// `abs` gives).
    fn int_unary(&mut self, u: UnaryFn, out: Tile, src: Tile, span: Span) {
        let minus_one = f32::from_bits(-1i32 as u32);
        let neg = if u == UnaryFn::Neg {
            out
        } else {
            self.sbuf_tile(Dtype::I32, src.parts, src.cols)
        };
        self.tensor_scalar(neg, src, AluOp::Mul, Operand::Imm(minus_one), span);
        if u != UnaryFn::Neg {
            self.out.push(
                Op::TensorTensor {
                    op: AluOp::Max,
                    out: out.ap(),
                    a: src.ap(),
                    b: neg.ap(),
                },
                VECTOR,
                &[out.buf, src.buf, neg.buf],
                span,
            );
        }
    }

    /// `out = x OP s` with `s` a per-row column tile or an immediate.
    /// Subtracting a per-row column over whole rows is emitted as adding its negation
    /// (computed exactly in f32 on the column): `x + (-c)` is `x - c` bit for bit, and the
    /// `engines` pass can move an addition, not a subtraction of a column, to the Scalar
    /// engine's bias.
    pub(super) fn tensor_scalar(&mut self, out: Tile, x: Tile, op: AluOp, s: Operand, span: Span) {
        let (op, s) = match s {
            Operand::Tile(col) if op == AluOp::Sub && x.cols > 1 && x.dtype != Dtype::I32 => {
                let neg = self.sbuf_tile(Dtype::F32, col.parts, 1);
                self.tensor_scalar(neg, col, AluOp::Mul, Operand::Imm(-1.0), span);
                (AluOp::Add, Operand::Tile(neg))
            }
            other => (op, other),
        };
        let (s0, extra) = match s {
            Operand::Imm(v) => (ScalarArg::imm(v), None),
            Operand::Tile(t) => (ScalarArg::Ap(t.ap()), Some(t.buf)),
        };
        let mut bufs = vec![out.buf, x.buf];
        bufs.extend(extra);
        self.out.push(
            Op::TensorScalar {
                out: out.ap(),
                src: x.ap(),
                op0: op,
                s0,
                op1: AluOp::Bypass,
                s1: ScalarArg::imm(0.0),
            },
            VECTOR,
            &bufs,
            span,
        );
    }

    /// Writes an operand into `out` (a copy with conversion, or a fill).
    fn write_from(&mut self, out: Tile, src: Operand, span: Span) {
        match src {
            Operand::Tile(t) if t.cols == out.cols => {
                self.out.push(
                    Op::TensorCopy {
                        out: out.ap(),
                        src: t.ap(),
                    },
                    VECTOR,
                    &[out.buf, t.buf],
                    span,
                );
            }
            Operand::Tile(t) => {
                // A per-row column stretched over the row: 0 * x + column... use
                // tensor_scalar on a zero-filled tile.
                self.out.push(
                    Op::Memset {
                        out: out.ap(),
                        value: Imm::new(0.0),
                    },
                    VECTOR,
                    &[out.buf],
                    span,
                );
                self.out.push(
                    Op::TensorScalar {
                        out: out.ap(),
                        src: out.ap(),
                        op0: AluOp::Add,
                        s0: ScalarArg::Ap(t.ap()),
                        op1: AluOp::Bypass,
                        s1: ScalarArg::imm(0.0),
                    },
                    VECTOR,
                    &[out.buf, out.buf, t.buf],
                    span,
                );
            }
            Operand::Imm(v) => {
                self.out.push(
                    Op::Memset {
                        out: out.ap(),
                        value: Imm::new(v),
                    },
                    VECTOR,
                    &[out.buf],
                    span,
                );
            }
        }
    }

    /// An immediate or a per-row column (`[parts, 1]`) as an access pattern of `cols`
    /// columns (of each packed row) that repeats its one column with step 0, for an
    /// instruction that reads it beside full tiles. An immediate is written once into a
    /// one-column tile (`memset` of one element per partition); a column is read in place.
    fn repeated_column(
        &mut self,
        src: Operand,
        parts: u32,
        cols: u32,
        dtype: Dtype,
        span: Span,
    ) -> (TileAp, Buf) {
        let column = match src {
            Operand::Tile(t) if t.cols == 1 && t.reps == 1 => t,
            Operand::Tile(t) => {
                // Not a column: widen it as before.
                let w = self.widen(Operand::Tile(t), parts, cols, dtype, span);
                return (w.ap(), w.buf);
            }
            Operand::Imm(v) => {
                let buf = self.out.sbuf(dtype, parts, 1);
                let t = Tile::plain(buf, Mem::Sbuf, dtype, parts, 1, 0);
                self.out.push(
                    Op::Memset {
                        out: t.ap(),
                        value: Imm::new(v),
                    },
                    VECTOR,
                    &[buf],
                    span,
                );
                t
            }
        };
        let mut ap = column.slice(0, parts, 0, 1);
        ap.dims = smallvec![Dim {
            size: cols * self.pack_reps.max(1),
            stride: 0
        }];
        (ap, column.buf)
    }

    /// An operand as a tile of the node's shape (immediates and stretched columns become
    /// full tiles).
    fn widen(&mut self, src: Operand, parts: u32, cols: u32, dtype: Dtype, span: Span) -> Tile {
        match src {
            Operand::Tile(t) if t.cols == cols => t,
            other => {
                let dt = match other {
                    Operand::Tile(t) => t.dtype,
                    Operand::Imm(_) => dtype,
                };
                let out = self.sbuf_tile(dt, parts, cols);
                self.write_from(out, other, span);
                out
            }
        }
    }
}

/// Folds work into the Scalar engine's `func(x * scale + bias)`:
/// - `f(x + c)`, `f(x - c)`, `f(x * c)` with `c` an immediate or a per-row column, when the
///   inner result is used only there, becomes one activation (`exp(x - max)` of softmax);
/// - `sum(f(..))` along the row becomes the activation's `accum` output.
///
/// The folded forms keep the intermediate in f32 instead of rounding it to its dtype, which
/// the language allows ("wider, never narrower"); with `strict` they are only used where
/// the intermediate is f32 anyway, so results are unchanged.
pub fn fold(graph: &mut BGraph, strict: bool) {
    let n = graph.nodes.len();
    let uses = uses_of(graph);
    let per_row = |g: &BGraph, a: &BArg| match a {
        BArg::Imm(_) => true,
        BArg::Affine(f) => f.coefs.last() == Some(&0),
        BArg::Node(k) => g.nodes[*k].fit == Fit::PerRow,
        BArg::Load(_, strides) => strides.last() == Some(&0),
        BArg::Given(_) => false,
    };
    let full = |g: &BGraph, a: &BArg| match a {
        BArg::Node(k) => g.nodes[*k].fit == Fit::Full,
        BArg::Load(_, strides) => strides.last() != Some(&0),
        BArg::Given(_) => true,
        BArg::Affine(f) => f.coefs.last() != Some(&0),
        BArg::Imm(_) => false,
    };
    for i in 0..n {
        let BOp::Unary(u) = graph.nodes[i].op else {
            continue;
        };
        let Some(func) = reference::act_func(u) else {
            continue;
        };
        // The Scalar engine has no integer datapath.
        if graph.nodes[i].fit != Fit::Full || graph.nodes[i].dtype == Dtype::I32 {
            continue;
        }
        let BArg::Node(j) = graph.nodes[i].args[0] else {
            continue;
        };
        let inner = &graph.nodes[j];
        let BOp::Binary(b) = inner.op else {
            continue;
        };
        if uses[j] != 1
            || inner.fit != Fit::Full
            || inner.dtype == Dtype::I32
            || (strict && inner.dtype != Dtype::F32)
        {
            continue;
        }
        let (x, y) = (inner.args[0].clone(), inner.args[1].clone());
        let folded = match b {
            BinaryOp::Add if full(graph, &x) && per_row(graph, &y) => {
                Some((vec![x, BArg::Imm(1.0), y], false))
            }
            BinaryOp::Add if per_row(graph, &x) && full(graph, &y) => {
                Some((vec![y, BArg::Imm(1.0), x], false))
            }
            BinaryOp::Sub if full(graph, &x) && per_row(graph, &y) => {
                Some((vec![x, BArg::Imm(1.0), y], true))
            }
            BinaryOp::Mul if full(graph, &x) && per_row(graph, &y) => Some((vec![x, y], false)),
            BinaryOp::Mul if per_row(graph, &x) && full(graph, &y) => Some((vec![y, x], false)),
            _ => None,
        };
        if let Some((args, negate_bias)) = folded {
            graph.nodes[j].op = BOp::Folded;
            graph.nodes[j].args.clear();
            graph.nodes[i].op = BOp::Activate { func, negate_bias };
            graph.nodes[i].args = args;
        }
    }
    for r in 0..n {
        let BOp::Reduce(rf @ (ReduceFn::Sum | ReduceFn::Mean)) = graph.nodes[r].op else {
            continue;
        };
        let BArg::Node(a) = graph.nodes[r].args[0] else {
            continue;
        };
        let src = &graph.nodes[a];
        let is_act = match src.op {
            BOp::Activate { .. } => true,
            BOp::Unary(u) => reference::act_func(u).is_some(),
            _ => false,
        };
        if is_act
            && src.dtype != Dtype::I32
            && src.accum.is_none()
            && src.fit == Fit::Full
            && (!strict || src.dtype == Dtype::F32)
        {
            graph.nodes[a].accum = Some(r);
            graph.nodes[r].op = BOp::Accum(rf);
            graph.nodes[r].args.clear();
        }
    }
}

/// How many times each node is read: once per operand that names it, twice more when it
/// is stored or kept (so that folding never removes it).
pub fn uses_of(graph: &BGraph) -> Vec<usize> {
    let mut uses = vec![0usize; graph.nodes.len()];
    for node in &graph.nodes {
        for a in &node.args {
            if let BArg::Node(j) = a {
                uses[*j] += 1;
            }
        }
    }
    for st in &graph.stores {
        uses[st.node] += 2;
    }
    for &k in &graph.keep {
        uses[k] += 2;
    }
    uses
}

/// The affine expression of a tile of `block` for `form` (over the block's space): the
/// value at the tile's first element, the step between partitions (the innermost
/// partition axis's coefficient; `affine::linear_partitions` checked that the others
/// agree with it), and the step along the free axis.
pub fn block_affine(form: &Form, block: &Block) -> Affine {
    let mut base = form.base;
    let mut partition_step = 0;
    for (a, &c) in block.axes.iter().zip(&form.coefs) {
        match *a {
            AxisUse::Fixed(i) => base += c * i as i64,
            AxisUse::Part { start, .. } => {
                base += c * start as i64;
                partition_step = c;
            }
            AxisUse::Col { start, .. } => base += c * start as i64,
        }
    }
    let last = form.coefs.last().copied().unwrap_or(0);
    // `affine::form_of` keeps every value and coefficient inside i32.
    let small = |x: i64| x.clamp(i32::MIN as i64, i32::MAX as i64) as i32;
    Affine {
        base: small(base),
        partition_step: small(partition_step),
        steps: smallvec![small(last)],
    }
}

/// True when `form`'s value is linear in the flattened partition index of every block of
/// the space (`blocks`): each outer partition axis's coefficient is the inner one's times
/// the inner axis's size.
pub fn linear_partitions(form: &Form, block: &Block) -> bool {
    let parts: Vec<(i64, u64)> = block
        .axes
        .iter()
        .zip(&form.coefs)
        .filter_map(|(a, &c)| match a {
            AxisUse::Part { size, .. } => Some((c, *size)),
            _ => None,
        })
        .collect();
    parts
        .windows(2)
        .all(|w| w[0].0 == w[1].0.saturating_mul(w[1].1 as i64))
}

/// The immediate of a constant `c` of `dtype`: on the integer datapath (`i32`) an
/// immediate's 32 bits are the integer, carried here as the f32 of those bits, which every
/// copy keeps; for the other dtypes the f32 value.
pub fn imm_of(dtype: Dtype, c: f64) -> f32 {
    if dtype == Dtype::I32 {
        f32::from_bits(c as i32 as u32)
    } else {
        c as f32
    }
}

/// How a load may be kept for other blocks of its group.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Reuse {
    /// Every block reads other elements.
    No,
    /// The same for every row (a weight or bias vector): kept, whatever its size.
    Invariant,
    /// Broadcast over some row axis of more than one index (a table shared by heads): kept
    /// while the kept tiles fit `GROUP_CACHE_BUDGET`.
    Broadcast,
}

/// How a load read with `strides` over the rows of `space` (when known) may be kept.
pub(super) fn reuse_of(strides: &[i64], space: Option<&[u64]>) -> Reuse {
    let rows = &strides[..strides.len().saturating_sub(1)];
    if rows.iter().all(|&s| s == 0) {
        return Reuse::Invariant;
    }
    match space {
        Some(sp)
            if sp.len() == strides.len() && rows.iter().zip(sp).any(|(&s, &n)| s == 0 && n > 1) =>
        {
            Reuse::Broadcast
        }
        _ => Reuse::No,
    }
}

/// An evaluated operand.
#[derive(Clone, Copy, Debug)]
pub(super) enum Operand {
    Tile(Tile),
    Imm(f32),
}

/// The operation with its operands swapped: `a OP b == b reversed(OP) a`.
fn reversed(op: AluOp) -> AluOp {
    match op {
        AluOp::Sub => AluOp::RSub,
        AluOp::RSub => AluOp::Sub,
        AluOp::Div => AluOp::RDiv,
        AluOp::RDiv => AluOp::Div,
        AluOp::Pow => AluOp::RPow,
        AluOp::RPow => AluOp::Pow,
        // `s < y` is `y > s`.
        AluOp::IsLt => AluOp::IsGt,
        AluOp::IsGt => AluOp::IsLt,
        AluOp::IsLe => AluOp::IsGe,
        AluOp::IsGe => AluOp::IsLe,
        other => other,
    }
}
