//! Long rows in row groups: a row group whose whole rows do not fit a block's budget is
//! evaluated in *phases* over column chunks, so that it stays one group and reads each of
//! its inputs from HBM once (or twice, when a later phase needs an input again and the row
//! does not fit SBUF), however many reductions it has.
//!
//! A node's phase is the number of row reductions on its longest path from the inputs: a
//! layernorm's `mean(x)` and `mean(square(x))` are phase 0 (they reduce what phase 0
//! computes), `x - mean` is phase 1. For each block of rows, phase by phase:
//! - the per-row values of the phase (functions of earlier reductions and per-row inputs)
//!   are computed once;
//! - the columns are walked in chunks: the phase's full-row values are computed on the
//!   chunk, and each reduction of the phase continues its running per-row result with the
//!   chunk's columns;
//! - the reductions are finished (a mean divided once by the row's length).
//!
//! A full-row value that a later phase reads again is *kept*: its chunk tiles stay in SBUF
//! until that phase, while the kept rows fit `KEEP_BUDGET` bytes a partition; otherwise the
//! later phase computes it again from its inputs (loading them again).
//!
//! Numerics. Under `--dtype-policy strict` every sum continues in the reference's order:
//! the running sum goes into the chunk's first column before the chunk is reduced
//! (`BOp::Reduce` with a running operand), and no sum is taken by an activation, so the
//! result is bit for bit the reference's; the operands of such sums must be f32 or i32
//! (else the group is split as before). Under the default policy a chunk's sum is reduced
//! on its own (or taken by the activation that computes its terms) in f32 and added to the
//! running sum: a sum in another order, which docs/numerics.md's item 2 allows. Maxima and
//! minima are exact in any order.

use super::block::{self, BArg, BGraph, BNode, BOp, BStore, Operand, Tile};
use super::{row_blocks, row_blocks_cols, Tiler, BLOCK_BUDGET};
use crate::ir::{Function, ReduceFn, TOp};
use crate::passes::fusion::{self, Fit, Group, Root};
use isa::{AluOp, Dtype, Op};

/// Bytes per partition that the full-row values kept for a later phase may take.
pub(super) const KEEP_BUDGET: u64 = 48 * 1024;
/// The fewest bytes per partition a chunk's working tiles get, kept rows or not.
const MIN_WORK: u64 = 24 * 1024;

/// True when `g` (a row group too long for whole rows) can be evaluated in phases: it has a
/// reduction, every value has the space's shape or its rows (no column views, no narrow
/// values), and under `strict` every sum reads f32 or i32 terms.
pub fn phased_ok(func: &Function, g: &Group, strict: bool) -> bool {
    if !matches!(g.root, Root::Rows) || g.insts.len() < 2 || g.needs_plain_rows {
        return false;
    }
    let mut reduces = false;
    for &i in &g.insts {
        let data = &func.insts[i];
        let shape = &func.ty(data.result).shape;
        if fusion::fit(shape, &g.space).is_none() {
            return false;
        }
        match &data.op {
            TOp::Reduce { func: rf, .. } => {
                reduces = true;
                let dt = func.ty(data.args[0]).dtype;
                let sum = matches!(rf, ReduceFn::Sum | ReduceFn::Mean);
                if strict && sum && !matches!(dt, Dtype::F32 | Dtype::I32) {
                    return false;
                }
            }
            TOp::Unary(_)
            | TOp::Binary(_)
            | TOp::Where
            | TOp::Cast
            | TOp::Const(_)
            | TOp::Arange => {}
            _ => return false,
        }
    }
    reduces
}

/// True when the tiler evaluates `g` as one group: its whole rows fit a block's budget,
/// or it has no reduction (its rows are cut into column chunks), or it can be evaluated
/// in phases.
pub fn fits_or_phases(func: &Function, g: &Group, strict: bool) -> bool {
    let reduces = g
        .insts
        .iter()
        .any(|&i| matches!(func.insts[i].op, TOp::Reduce { .. }));
    !reduces || super::peak_block_bytes(func, g) <= BLOCK_BUDGET || phased_ok(func, g, strict)
}

/// What a node of the phased graph is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    /// Computes nothing (folded away).
    Nothing,
    /// A per-row value computed once per block and phase.
    Row,
    /// A reduction (or the row sums of an activation) with its running result.
    Reduce,
    /// A full-row value computed chunk by chunk.
    Full,
}

impl Tiler<'_> {
    /// Lowers the row group `g`, whose block graph is `graph`, in phases over column
    /// chunks (module comment). `peak` is the most bytes a partition of one block holds
    /// over whole rows, `keep_budget` the bytes a partition may keep for later phases, and
    /// `min_pieces` the fewest chunks a row is walked in.
    pub(super) fn lower_phased(
        &mut self,
        g: &Group,
        graph: BGraph,
        peak: u64,
        keep_budget: u64,
        min_pieces: u64,
    ) -> Result<(), String> {
        let strict = self.strict;
        let cols = *g.space.last().unwrap_or(&1);
        let mut graph = with_load_nodes(graph, &g.space);
        // Column sums of the group's values, summed from their chunk tiles.
        let sums = self.group_sums(g);
        let sums = self.begin_sums(&graph, &sums)?;
        // Row sums taken by activations: kept under the default policy where the
        // activation sums in f32; else the reduction is done on its own.
        let n = graph.nodes.len();
        for a in 0..n {
            let Some(r) = graph.nodes[a].accum else {
                continue;
            };
            let BOp::Accum(rf) = graph.nodes[r].op else {
                continue;
            };
            let f32_sum = rf == ReduceFn::Mean || graph.nodes[r].dtype == Dtype::F32;
            if strict || !f32_sum {
                graph.nodes[a].accum = None;
                graph.nodes[r].op = BOp::Reduce(rf);
                graph.nodes[r].args = vec![BArg::Node(a)];
            }
        }
        let mut accum_src = vec![None; n];
        for (a, node) in graph.nodes.iter().enumerate() {
            if let Some(r) = node.accum {
                accum_src[r] = Some(a);
            }
        }
        // Kinds and phases, in node order (a topological order).
        let mut kind = vec![Kind::Nothing; n];
        let mut phase = vec![0usize; n];
        for i in 0..n {
            let node = &graph.nodes[i];
            kind[i] = match node.op {
                BOp::Folded => Kind::Nothing,
                BOp::Reduce(_) | BOp::Accum(_) => Kind::Reduce,
                _ if node.fit == Fit::PerRow => Kind::Row,
                _ => Kind::Full,
            };
            let mut p = 0;
            for a in &node.args {
                if let BArg::Node(k) = a {
                    let after = usize::from(kind[*k] == Kind::Reduce);
                    p = p.max(phase[*k] + after);
                }
            }
            if let Some(a) = accum_src[i] {
                p = phase[a];
            }
            phase[i] = p;
        }
        // An activation with row sums is evaluated before its `Accum` node; it belongs to
        // the same phase (set above), and nothing else reads an `Accum` node early.
        let phases = phase.iter().copied().max().unwrap_or(0) + 1;
        // Full-row values read by a later phase: kept while they fit, else computed again.
        let row_bytes = |k: usize| cols * graph.nodes[k].dtype.size() as u64;
        let mut keep = vec![false; n];
        let mut kept_bytes = 0;
        for k in 0..n {
            if kind[k] != Kind::Full {
                continue;
            }
            let later = graph.nodes.iter().enumerate().any(|(i, node)| {
                kind[i] != Kind::Nothing
                    && phase[i] > phase[k]
                    && node
                        .args
                        .iter()
                        .any(|a| matches!(a, BArg::Node(j) if *j == k))
            });
            if later && kept_bytes + row_bytes(k) <= keep_budget {
                keep[k] = true;
                kept_bytes += row_bytes(k);
            }
        }
        let work = BLOCK_BUDGET.saturating_sub(kept_bytes).max(MIN_WORK);
        let peak = peak.max(1);
        let chunk = (cols * work / peak).clamp(1, cols);
        let pieces = cols.div_ceil(chunk).max(min_pieces).min(cols);
        let mut chunk = cols.div_ceil(pieces);
        if !sums.is_empty() && chunk < cols {
            // Column sums take 128-column pieces of each chunk.
            chunk = (chunk / 128).max(1) * 128;
        }
        self.reuse_space = Some(g.space.clone());
        for b in &row_blocks(&g.space, false, u64::MAX) {
            let chunks = row_blocks_cols(b, cols, chunk);
            // Per-row tiles (row values and finished reductions) for the block.
            let mut row_tiles: Vec<Option<Tile>> = vec![None; n];
            // Kept full-row values: one tile per chunk.
            let mut kept: Vec<Vec<Tile>> = vec![Vec::new(); n];
            for p in 0..phases {
                // The per-row values of the phase.
                let rows: Vec<usize> = (0..n)
                    .filter(|&i| kind[i] == Kind::Row && phase[i] == p)
                    .collect();
                if !rows.is_empty() {
                    let (sub, local) =
                        self.phase_graph(&graph, &rows, &phase, p, &row_tiles, &[], &keep, &[], 0);
                    let tiles = self.eval_block(&sub, b);
                    for (&i, &l) in rows.iter().zip(&local) {
                        row_tiles[i] = tiles[l];
                    }
                }
                // The full-row values and reductions of the phase, chunk by chunk.
                let mut nodes: Vec<usize> = (0..n)
                    .filter(|&i| matches!(kind[i], Kind::Full | Kind::Reduce) && phase[i] == p)
                    .collect();
                if nodes.is_empty() {
                    continue;
                }
                // What the phase reads again from earlier phases and does not keep.
                let mut again = vec![false; n];
                for i in (0..n).rev() {
                    let needed = nodes.contains(&i) || again[i];
                    if !needed {
                        continue;
                    }
                    for a in &graph.nodes[i].args {
                        if let BArg::Node(k) = a {
                            if kind[*k] == Kind::Full && phase[*k] < p && !keep[*k] {
                                again[*k] = true;
                            }
                        }
                    }
                }
                nodes.extend((0..n).filter(|&i| again[i]));
                nodes.sort_unstable();
                let reduces: Vec<usize> = nodes
                    .iter()
                    .copied()
                    .filter(|&i| kind[i] == Kind::Reduce && phase[i] == p)
                    .collect();
                let mut running: Vec<Option<Tile>> = vec![None; n];
                for (c, piece) in chunks.iter().enumerate() {
                    let (sub, local) = self.phase_graph(
                        &graph, &nodes, &phase, p, &row_tiles, &kept, &keep, &running, c,
                    );
                    let tiles = self.eval_block(&sub, piece);
                    for (&i, &l) in nodes.iter().zip(&local) {
                        if keep[i] && phase[i] == p {
                            let t = tiles[l].ok_or("a kept value has no tile")?;
                            kept[i].push(t);
                        }
                    }
                    for (k, sum) in &sums {
                        if phase[*k] == p {
                            let at = nodes.iter().position(|x| x == k);
                            let t = at.and_then(|at| tiles[local[at]]);
                            let t = t.ok_or("a summed value has no tile")?;
                            self.column_sum_block(sum, piece, t)?;
                        }
                    }
                    for &r in &reduces {
                        let l = local[nodes.iter().position(|&x| x == r).unwrap_or(0)];
                        let part = tiles[l].ok_or("a reduction has no tile")?;
                        running[r] = Some(self.combine(&graph, r, running[r], part, strict));
                    }
                }
                for &r in &reduces {
                    let run = running[r].ok_or("a reduction over no columns")?;
                    let done = self.finish(&graph.nodes[r], run, cols);
                    row_tiles[r] = Some(done);
                    for st in graph.stores.iter().filter(|s| s.node == r) {
                        let node = &graph.nodes[r];
                        let mut tile = done;
                        if tile.dtype != st.dest.dtype {
                            tile = self.copy_to_sbuf(tile, st.dest.dtype, node.span);
                        }
                        self.store(b, tile, &st.dest, &st.strides, Fit::PerRow, node.span);
                    }
                }
            }
        }
        for (_, sum) in &sums {
            self.column_sum_finish(sum)?;
        }
        Ok(())
    }

    /// The graph of one step of phase `p`: `nodes` (indices into `graph`), their operands
    /// from earlier steps given as tiles (per-row tiles, or chunk `chunk` of kept values),
    /// reductions as the chunk's part (continuing `running` where a strict sum does), and
    /// the stores of the values of phase `p` (a value of an earlier phase computed again
    /// is not stored again). Returns the graph and each of `nodes`' index in it.
    #[allow(clippy::too_many_arguments)]
    fn phase_graph(
        &self,
        graph: &BGraph,
        nodes: &[usize],
        phase: &[usize],
        p: usize,
        row_tiles: &[Option<Tile>],
        kept: &[Vec<Tile>],
        keep: &[bool],
        running: &[Option<Tile>],
        chunk: usize,
    ) -> (BGraph, Vec<usize>) {
        let mut sub = BGraph::default();
        let mut local = vec![usize::MAX; graph.nodes.len()];
        for &i in nodes {
            let node = &graph.nodes[i];
            let mut args = Vec::with_capacity(node.args.len() + 1);
            for a in &node.args {
                args.push(match a {
                    BArg::Node(k) if local[*k] != usize::MAX => BArg::Node(local[*k]),
                    BArg::Node(k) => {
                        match (row_tiles[*k], kept.get(*k).and_then(|v| v.get(chunk))) {
                            (Some(t), _) => BArg::Given(t),
                            (None, Some(t)) => BArg::Given(*t),
                            // `lower_phased` computes every operand before its readers.
                            (None, None) => BArg::Imm(f32::NAN),
                        }
                    }
                    other => other.clone(),
                });
            }
            let mut op = node.op.clone();
            let mut dtype = node.dtype;
            match node.op {
                BOp::Reduce(ReduceFn::Sum | ReduceFn::Mean) => {
                    op = BOp::Reduce(ReduceFn::Sum);
                    if dtype != Dtype::I32 {
                        dtype = Dtype::F32;
                    }
                    if self.strict {
                        if let Some(run) = running[i] {
                            args.push(BArg::Given(run));
                        }
                    }
                }
                BOp::Accum(ReduceFn::Sum | ReduceFn::Mean) => {
                    op = BOp::Accum(ReduceFn::Sum);
                    dtype = Dtype::F32;
                }
                _ => {}
            }
            local[i] = sub.nodes.len();
            sub.nodes.push(BNode {
                op,
                args,
                dtype,
                fit: node.fit,
                span: node.span,
                accum: None,
                width: node.width,
            });
        }
        // Row sums of activations, reindexed.
        for &i in nodes {
            if let Some(r) = graph.nodes[i].accum {
                if local[r] != usize::MAX {
                    sub.nodes[local[i]].accum = Some(local[r]);
                }
            }
        }
        for st in &graph.stores {
            let i = st.node;
            if local[i] == usize::MAX || phase[i] != p || is_reduce(graph, i) {
                continue;
            }
            sub.stores.push(BStore {
                node: local[i],
                dest: st.dest.clone(),
                strides: st.strides.clone(),
            });
        }
        for &i in nodes {
            if (phase[i] == p && keep[i]) || graph.keep.contains(&i) {
                sub.keep.push(local[i]);
            }
        }
        let out = nodes.iter().map(|&i| local[i]).collect();
        (sub, out)
    }

    /// The running result of reduction `r` after a chunk whose part is `part`.
    fn combine(
        &mut self,
        graph: &BGraph,
        r: usize,
        running: Option<Tile>,
        part: Tile,
        strict: bool,
    ) -> Tile {
        let node = &graph.nodes[r];
        let Some(run) = running else {
            return part;
        };
        let (op, sum) = match node.op {
            BOp::Reduce(ReduceFn::Max) | BOp::Accum(ReduceFn::Max) => (AluOp::Max, false),
            BOp::Reduce(ReduceFn::Min) | BOp::Accum(ReduceFn::Min) => (AluOp::Min, false),
            _ => (AluOp::Add, true),
        };
        if strict && sum && matches!(node.op, BOp::Reduce(_)) {
            // The chunk's reduction continued the running sum.
            return part;
        }
        self.out.push(
            Op::TensorTensor {
                op,
                out: run.ap(),
                a: run.ap(),
                b: part.ap(),
            },
            isa::Engine::Vector,
            &[run.buf, run.buf, part.buf],
            node.span,
        );
        run
    }

    /// A reduction's result from its running value over `cols` columns: a mean divided
    /// once, a sum rounded once to its dtype.
    fn finish(&mut self, node: &BNode, run: Tile, cols: u64) -> Tile {
        let mean = matches!(
            node.op,
            BOp::Reduce(ReduceFn::Mean) | BOp::Accum(ReduceFn::Mean)
        );
        if mean {
            let out = self.sbuf_tile(node.dtype, run.parts, 1);
            self.tensor_scalar(out, run, AluOp::Div, Operand::Imm(cols as f32), node.span);
            out
        } else if run.dtype != node.dtype {
            self.copy_to_sbuf(run, node.dtype, node.span)
        } else {
            run
        }
    }
}

/// True for a reduction node (or an activation's row sums).
fn is_reduce(graph: &BGraph, i: usize) -> bool {
    matches!(graph.nodes[i].op, BOp::Reduce(_) | BOp::Accum(_))
}

/// The graph with every full-row load that no other block shares turned into a node of
/// its own (`BOp::Copy` of the load, which is the loaded tile itself), so that a later
/// phase can keep its tiles or load it again like any other value.
fn with_load_nodes(graph: BGraph, space: &[u64]) -> BGraph {
    let mut loads: Vec<BArg> = Vec::new();
    for node in &graph.nodes {
        for a in &node.args {
            if let BArg::Load(_, strides) = a {
                let full = strides.last() != Some(&0);
                let shared = block::reuse_of(strides, Some(space)) != block::Reuse::No;
                if full && !shared && !loads.iter().any(|l| same_load(l, a)) {
                    loads.push(a.clone());
                }
            }
        }
    }
    let shift = loads.len();
    let span = graph.nodes.first().map(|n| n.span).unwrap_or_default();
    let mut nodes: Vec<BNode> = loads
        .iter()
        .map(|l| {
            let BArg::Load(view, _) = l else {
                unreachable!("only loads are collected")
            };
            BNode {
                op: BOp::Copy,
                args: vec![l.clone()],
                dtype: view.dtype,
                fit: Fit::Full,
                span,
                accum: None,
                width: None,
            }
        })
        .collect();
    for mut node in graph.nodes {
        for a in node.args.iter_mut() {
            match a {
                BArg::Node(k) => *k += shift,
                BArg::Load(..) => {
                    if let Some(li) = loads.iter().position(|l| same_load(l, a)) {
                        *a = BArg::Node(li);
                    }
                }
                _ => {}
            }
        }
        if let Some(r) = node.accum.as_mut() {
            *r += shift;
        }
        nodes.push(node);
    }
    let stores = graph
        .stores
        .into_iter()
        .map(|mut s| {
            s.node += shift;
            s
        })
        .collect();
    BGraph {
        nodes,
        stores,
        keep: graph.keep.into_iter().map(|k| k + shift).collect(),
    }
}

/// True when two operands are the same load.
fn same_load(a: &BArg, b: &BArg) -> bool {
    matches!((a, b), (BArg::Load(v1, s1), BArg::Load(v2, s2)) if v1 == v2 && s1 == s2)
}
