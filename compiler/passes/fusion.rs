//! Fusion: groups tensor-IR instructions that the tile pass computes together, one block
//! of rows at a time, without sending intermediates to HBM.
//!
//! A group has an iteration space `space` (a shape): its last axis is the free axis of
//! every tile, the other axes are its rows (spread over partitions). Every value computed
//! in a group is either *full* (shape == space) or *per-row* (one element per row: a
//! reduction of the last axis, with or without keepdims). A group is rooted either in row
//! operations (elementwise ops and reductions of the last axis) or in a matmul, whose PSUM
//! tiles the rest of the group reads (bias, scale, activation and cast "epilogues").
//!
//! Rules that keep the emission order sound: an instruction joins a group only when each
//! operand is computed in that group or defined before the group's first instruction.
//! Groups are then put in an order that respects every data dependency ([`Grouping::order`]:
//! an attention group, gathered from a pattern, may start before the instruction that
//! computes its `v`), and the tile pass emits them in that order. [`Grouping::verify`]
//! checks it after the pass: no group reads a value that a later group computes.
//!
//! With fusion disabled every instruction is its own group, which is always correct.

use crate::ir::{Function, Inst, TOp, Value, ValueDef};
use cranelift_entity::SecondaryMap;

/// How a value sits in its group's iteration space.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fit {
    /// The value's shape is the space.
    Full,
    /// One element per row: shape is the rows plus `[1]`, or the rows alone.
    PerRow,
}

/// What a group is built around.
#[derive(Clone, Debug, PartialEq)]
pub enum Root {
    /// Elementwise ops and last-axis reductions.
    Rows,
    /// A matmul whose result tiles live in PSUM.
    Matmul(Inst),
    /// An instruction the tile pass lowers on its own (layout ops, other reductions).
    Single(Inst),
    /// Attention (`attention.rs`): computed block by block with an online softmax.
    Attention(Box<super::attention::Attention>),
}

/// A group of instructions computed together.
#[derive(Clone, Debug)]
pub struct Group {
    pub root: Root,
    /// The iteration space.
    pub space: Vec<u64>,
    /// Members in program order.
    pub insts: Vec<Inst>,
    /// Groups that contain a `tril` must map the second-to-last axis straight onto
    /// partitions (no packing of outer rows).
    pub needs_plain_rows: bool,
}

/// The grouping of a function.
#[derive(Clone, Debug, Default)]
pub struct Grouping {
    pub groups: Vec<Group>,
    /// The group of each instruction.
    pub group_of: SecondaryMap<Inst, Option<u32>>,
}

impl Grouping {
    /// Text for dumps: one line per group.
    pub fn describe(&self) -> String {
        let mut s = String::new();
        for (i, g) in self.groups.iter().enumerate() {
            let members: Vec<String> = g.insts.iter().map(|i| i.to_string()).collect();
            let root = match &g.root {
                Root::Rows => "rows".to_string(),
                Root::Matmul(i) => format!("matmul {i}"),
                Root::Single(i) => format!("single {i}"),
                Root::Attention(a) => format!("attention {}", a.out),
            };
            s.push_str(&format!(
                "; group g{i} ({root}) space {:?}: {}\n",
                g.space,
                members.join(" ")
            ));
        }
        s
    }
}

impl Grouping {
    /// Puts the groups in an order where every group comes after the groups computing its
    /// operands, keeping the order of first instructions wherever the dependencies allow
    /// (a stable topological sort). An error names the groups of a cycle, which no
    /// emission order can serve.
    pub fn order(&mut self, func: &Function) -> Result<(), String> {
        let pos: SecondaryMap<Inst, usize> = {
            let mut m = SecondaryMap::new();
            for (i, &inst) in func.layout.iter().enumerate() {
                m[inst] = i;
            }
            m
        };
        let n = self.groups.len();
        // deps[g]: the groups whose values g reads.
        let mut deps: Vec<Vec<usize>> = vec![Vec::new(); n];
        for (gi, g) in self.groups.iter().enumerate() {
            for &inst in &g.insts {
                for a in &func.insts[inst].args {
                    if let Some(d) = self.producer(func, *a) {
                        if d != gi && !deps[gi].contains(&d) {
                            deps[gi].push(d);
                        }
                    }
                }
            }
        }
        let first = |g: &Group| g.insts.iter().map(|&i| pos[i]).min().unwrap_or(usize::MAX);
        let mut ready: std::collections::BTreeSet<(usize, usize)> = Default::default();
        let mut missing: Vec<usize> = deps.iter().map(Vec::len).collect();
        let mut users: Vec<Vec<usize>> = vec![Vec::new(); n];
        for (gi, ds) in deps.iter().enumerate() {
            for &d in ds {
                users[d].push(gi);
            }
            if ds.is_empty() {
                ready.insert((first(&self.groups[gi]), gi));
            }
        }
        let mut order = Vec::with_capacity(n);
        while let Some(&(key, gi)) = ready.iter().next() {
            ready.remove(&(key, gi));
            order.push(gi);
            for &u in &users[gi] {
                missing[u] -= 1;
                if missing[u] == 0 {
                    ready.insert((first(&self.groups[u]), u));
                }
            }
        }
        if order.len() != n {
            let stuck: Vec<String> = (0..n)
                .filter(|g| !order.contains(g))
                .map(|g| format!("g{g}"))
                .collect();
            return Err(format!(
                "fusion made groups that depend on each other in a cycle: {}",
                stuck.join(", ")
            ));
        }
        let old = std::mem::take(&mut self.groups);
        let mut slots: Vec<Option<Group>> = old.into_iter().map(Some).collect();
        for (new, &gi) in order.iter().enumerate() {
            let g = slots[gi].take().expect("each group once");
            for &i in &g.insts {
                self.group_of[i] = Some(new as u32);
            }
            self.groups.push(g);
        }
        Ok(())
    }

    /// The casts whose rounding the compiled code does not reproduce: flash attention
    /// rounds the unnormalised exponentials where the kernel rounds the probabilities
    /// (docs/numerics.md bounds the difference). `run --check` allows them one step of
    /// their dtype's grid.
    pub fn relaxed_casts(&self, func: &Function) -> Vec<Value> {
        let mut out = Vec::new();
        for g in &self.groups {
            if let Root::Attention(a) = &g.root {
                // The pattern's cast (of the exponentials); a cast of the output after it
                // is performed as written.
                for &i in &a.insts {
                    if func.insts[i].op == TOp::Cast {
                        out.push(func.insts[i].result);
                    }
                }
            }
        }
        out
    }

    /// The group computing `v`, if an instruction of a group does (constants are
    /// immediates of their users and belong to no group).
    fn producer(&self, func: &Function, v: Value) -> Option<usize> {
        match func.values[v].def {
            ValueDef::Inst(i) if !matches!(func.insts[i].op, TOp::Const(_)) => {
                self.group_of[i].map(|g| g as usize)
            }
            _ => None,
        }
    }

    /// Checks that every instruction belongs to exactly the group that lists it and that no
    /// group reads a value a later group computes. Returns one message per violation.
    pub fn verify(&self, func: &Function) -> Vec<String> {
        let mut errors = Vec::new();
        let mut seen: SecondaryMap<Inst, bool> = SecondaryMap::new();
        for (gi, g) in self.groups.iter().enumerate() {
            for &inst in &g.insts {
                if seen[inst] {
                    errors.push(format!("{inst} is listed by two groups"));
                }
                seen[inst] = true;
                if self.group_of[inst] != Some(gi as u32) {
                    errors.push(format!("{inst} is listed by g{gi} but mapped elsewhere"));
                }
                for a in &func.insts[inst].args {
                    if let Some(d) = self.producer(func, *a) {
                        if d > gi {
                            errors.push(format!(
                                "g{gi} ({inst}) reads {a}, which the later group g{d} computes"
                            ));
                        }
                    }
                }
            }
        }
        for &inst in &func.layout {
            if !matches!(func.insts[inst].op, TOp::Const(_)) && !seen[inst] {
                errors.push(format!("{inst} belongs to no group"));
            }
        }
        errors
    }
}

/// How a value fits a space, if it does.
pub fn fit(shape: &[u64], space: &[u64]) -> Option<Fit> {
    if shape == space {
        return Some(Fit::Full);
    }
    let rows = &space[..space.len() - 1];
    if shape == rows && !rows.is_empty() {
        return Some(Fit::PerRow);
    }
    if shape.len() == space.len()
        && shape[..shape.len() - 1] == *rows
        && shape[shape.len() - 1] == 1
    {
        return Some(Fit::PerRow);
    }
    None
}

/// True for operations a row group can compute.
fn is_row_op(func: &Function, inst: Inst) -> bool {
    let data = &func.insts[inst];
    match &data.op {
        TOp::Unary(_) | TOp::Binary(_) | TOp::Where | TOp::Cast | TOp::Tril { .. } => true,
        TOp::Reduce { axis, .. } => *axis + 1 == func.ty(data.args[0]).shape.len(),
        _ => false,
    }
}

/// The space in which an instruction would start a new row group.
fn own_space(func: &Function, inst: Inst) -> Vec<u64> {
    let data = &func.insts[inst];
    match data.op {
        TOp::Reduce { .. } => func.ty(data.args[0]).shape.clone(),
        _ => func.ty(data.result).shape.clone(),
    }
}

/// Checks that `inst` computed in `space` has operands and result that fit the way the
/// tile pass handles them.
fn fits_space(func: &Function, inst: Inst, space: &[u64]) -> bool {
    let data = &func.insts[inst];
    let res = func.ty(data.result);
    match &data.op {
        TOp::Reduce { keepdims, .. } => {
            let arg = func.ty(data.args[0]);
            fit(&arg.shape, space) == Some(Fit::Full)
                && (if *keepdims {
                    fit(&res.shape, space) == Some(Fit::PerRow)
                } else {
                    res.shape == space[..space.len() - 1]
                })
        }
        TOp::Tril { .. } => fit(&res.shape, space) == Some(Fit::Full),
        _ => fit(&res.shape, space).is_some(),
    }
}

/// The operand and first column of a slice that takes a column range of its operand: every
/// axis but the last whole (start 0, step 1, kept), the last one with step 1. Such a slice
/// is a view of its operand's tile in a row group (a range of the free axis), so a group
/// that loads or computes the operand reads the slice without moving it.
pub fn column_slice(func: &Function, inst: Inst) -> Option<(Value, u64)> {
    let data = &func.insts[inst];
    let TOp::Slice(axes) = &data.op else {
        return None;
    };
    let src = &func.ty(data.args[0]).shape;
    let res = &func.ty(data.result).shape;
    let rank = src.len();
    if rank == 0 || axes.len() != rank || res.len() != rank || !axes.iter().all(|a| a.keep) {
        return None;
    }
    let last = &axes[rank - 1];
    let rows_whole =
        (0..rank - 1).all(|i| axes[i].start == 0 && axes[i].step == 1 && res[i] == src[i]);
    (rows_whole && last.step == 1 && res[rank - 1] > 0).then_some((data.args[0], last.start))
}

/// True for a `concat` along the last axis: a row group builds it in one tile, each part
/// in its range of the free axis.
pub fn is_column_concat(func: &Function, inst: Inst) -> bool {
    let data = &func.insts[inst];
    matches!(data.op, TOp::Concat(axis) if axis + 1 == func.ty(data.result).shape.len())
}

/// True when `shape` has the rows of `space` and a last axis of another length: a value of
/// a row group that takes a column range of its own (a slice, a concat part), computed on
/// whole rows.
pub fn is_narrow(shape: &[u64], space: &[u64]) -> bool {
    let n = space.len();
    n >= 1 && shape.len() == n && shape[..n - 1] == space[..n - 1] && shape[n - 1] != space[n - 1]
}

/// True when a group may hold values narrower or wider than its space (whole rows of
/// another length): a row group without reductions or masks, whose rows are then never cut
/// into column chunks.
fn takes_columns(func: &Function, grp: &Group) -> bool {
    matches!(grp.root, Root::Rows)
        && !grp.needs_plain_rows
        && grp
            .insts
            .iter()
            .all(|&i| !matches!(func.insts[i].op, TOp::Reduce { .. } | TOp::Tril { .. }))
}

/// Builds the grouping, in an order that respects every data dependency. With `fuse` false
/// every instruction is its own group. With `strict` (`--dtype-policy strict`) no attention
/// is given to the flash lowering: its online softmax rounds other values than the
/// language does (docs/numerics.md), and strict promises the reference's bits.
pub fn group(func: &Function, fuse: bool, strict: bool) -> Result<Grouping, String> {
    let mut g = collect(func, fuse, strict);
    if fuse {
        super::row_merge::merge(func, &mut g, strict);
    }
    g.order(func)?;
    Ok(g)
}

/// The groups, in the order they were made.
fn collect(func: &Function, fuse: bool, strict: bool) -> Grouping {
    let mut g = Grouping::default();
    let pos: SecondaryMap<Inst, usize> = {
        let mut m = SecondaryMap::new();
        for (i, &inst) in func.layout.iter().enumerate() {
            m[inst] = i;
        }
        m
    };
    // Position of the instruction defining a value (params: before everything).
    let def_pos = |v: Value| -> Option<usize> {
        match func.values[v].def {
            ValueDef::Param(_) => None,
            ValueDef::Inst(i) => Some(pos[i]),
        }
    };
    if fuse && !strict {
        for a in super::attention::find(func) {
            if a.insts.iter().any(|i| g.group_of[*i].is_some()) {
                continue;
            }
            let gi = g.groups.len() as u32;
            for &i in &a.insts {
                g.group_of[i] = Some(gi);
            }
            g.groups.push(Group {
                root: Root::Rows,
                space: func.ty(func.insts[a.out].result).shape.clone(),
                insts: a.insts.clone(),
                needs_plain_rows: false,
            });
            g.groups[gi as usize].root = Root::Attention(Box::new(a));
        }
    }
    // Column slices (`column_slice`) wait until their users are grouped: a slice joins the
    // row group that uses it, as a view of its operand's tile, or else stays a view of
    // its operand's HBM home. Until then an instruction that reads one is taken to read
    // the operand (`resolve`), so that `x * c + concat([-x[.., h:], x[.., :h]]) * s` is
    // one group that reads `x` once.
    let mut deferred: SecondaryMap<Inst, bool> = SecondaryMap::new();
    let resolve = |deferred: &SecondaryMap<Inst, bool>, mut v: Value| -> Value {
        while let ValueDef::Inst(i) = func.values[v].def {
            if !deferred[i] {
                break;
            }
            v = func.insts[i].args[0];
        }
        v
    };
    for &inst in &func.layout {
        let data = &func.insts[inst];
        if matches!(data.op, TOp::Const(_)) || g.group_of[inst].is_some() {
            // Constants are immediates of the instructions that use them; attention was
            // grouped above.
            continue;
        }
        if fuse && column_slice(func, inst).is_some() {
            deferred[inst] = true;
            continue;
        }
        let concat = fuse && is_column_concat(func, inst);
        let args: Vec<Value> = data.args.iter().map(|&a| resolve(&deferred, a)).collect();
        let mut joined = None;
        if fuse && (is_row_op(func, inst) || concat) {
            // Try the groups of the operands, most recent first.
            let mut candidates: Vec<u32> = args
                .iter()
                .filter_map(|a| match func.values[*a].def {
                    ValueDef::Inst(i) => g.group_of[i],
                    ValueDef::Param(_) => None,
                })
                .collect();
            candidates.sort_unstable();
            candidates.dedup();
            candidates.reverse();
            // Then sibling groups: row groups that read one of this instruction's kernel
            // inputs, or every value it reads, most recent first. Joining one shares the
            // loads of that input (`where(x > 0, x, 0.1 * x)`, or a second reduction of
            // the same rows; RoPE's `q * cos + concat([-q[.., h:], q[.., :h]]) * sin` on a
            // computed `q`, whose `q * cos` would otherwise go through HBM scratch). The
            // instruction then reads nothing those groups compute and nothing they do not
            // already depend on, so joining cannot close a cycle, and the checks below are
            // the same as for an operand's group.
            let params: Vec<Value> = args
                .iter()
                .copied()
                .filter(|a| matches!(func.values[*a].def, ValueDef::Param(_)))
                .collect();
            let is_const = |v: Value| {
                matches!(func.values[v].def,
                    ValueDef::Inst(i) if matches!(func.insts[i].op, TOp::Const(_)))
            };
            let outside: Vec<Value> = args
                .iter()
                .copied()
                .filter(|&a| !is_const(a) && def_pos(a).is_some())
                .collect();
            if !params.is_empty() || !outside.is_empty() {
                for (gi, grp) in g.groups.iter().enumerate().rev() {
                    let read = |v: Value| {
                        grp.insts.iter().any(|i| {
                            func.insts[*i]
                                .args
                                .iter()
                                .any(|a| resolve(&deferred, *a) == v)
                        })
                    };
                    let reads = params.iter().any(|&p| read(p))
                        || (!outside.is_empty() && args.iter().all(|&a| is_const(a) || read(a)));
                    if matches!(grp.root, Root::Rows) && reads && !candidates.contains(&(gi as u32))
                    {
                        candidates.push(gi as u32);
                    }
                }
            }
            let res_shape = &func.ty(data.result).shape;
            for &gi in candidates.iter() {
                let grp = &g.groups[gi as usize];
                if matches!(grp.root, Root::Single(_)) {
                    continue;
                }
                if matches!(grp.root, Root::Matmul(_) | Root::Attention(_))
                    && (matches!(data.op, TOp::Reduce { .. }) || concat)
                {
                    continue;
                }
                // A value of other columns than the space (a concat, or elementwise work on
                // a slice or a concat part) needs whole rows of a group that allows them.
                let columns = takes_columns(func, grp);
                let fits = if concat {
                    (res_shape == &grp.space || is_narrow(res_shape, &grp.space)) && columns
                } else {
                    fits_space(func, inst, &grp.space)
                        || (columns
                            && is_narrow(res_shape, &grp.space)
                            && matches!(
                                data.op,
                                TOp::Unary(_) | TOp::Binary(_) | TOp::Cast | TOp::Where
                            ))
                };
                if !fits {
                    continue;
                }
                let first = pos[grp.insts[0]];
                let operands_ok = args.iter().all(|a| {
                    let in_group = match func.values[*a].def {
                        ValueDef::Inst(i) => g.group_of[i] == Some(gi),
                        ValueDef::Param(_) => false,
                    };
                    in_group
                        || def_pos(*a).is_none_or(|p| p < first)
                        || matches!(
                            func.values[*a].def,
                            ValueDef::Inst(i) if matches!(func.insts[i].op, TOp::Const(_))
                        )
                });
                // Operands computed in the group must broadcast the way their tiles
                // are laid out: a full one only into a full result, a per-row one of
                // rank `rows` only into a result of that same shape (NumPy would align
                // it with the last axis otherwise), one of other columns only into a
                // result of its own shape or into a concat.
                let layout_ok = data.args.iter().zip(&args).all(|(a, r)| {
                    let in_group = matches!(
                        func.values[*r].def,
                        ValueDef::Inst(i) if g.group_of[i] == Some(gi)
                    );
                    if !in_group || matches!(data.op, TOp::Reduce { .. }) {
                        return true;
                    }
                    let shape = &func.ty(*a).shape;
                    if is_narrow(shape, &grp.space) && fit(shape, &grp.space).is_none() {
                        return concat || res_shape == shape;
                    }
                    match fit(shape, &grp.space) {
                        Some(Fit::Full) => concat || res_shape == &grp.space,
                        Some(Fit::PerRow) if shape.len() == grp.space.len() => true,
                        Some(Fit::PerRow) => res_shape == shape,
                        None => false,
                    }
                });
                if operands_ok && layout_ok {
                    joined = Some(gi);
                    break;
                }
            }
        }
        let gi = match joined {
            Some(gi) => {
                let grp = &mut g.groups[gi as usize];
                grp.insts.push(inst);
                if matches!(data.op, TOp::Tril { .. }) {
                    grp.needs_plain_rows = true;
                }
                // A concat wider than the space widens it: the other values become
                // narrower columns of the same rows.
                let res_shape = &func.ty(data.result).shape;
                if concat && res_shape.last() > grp.space.last() {
                    grp.space = res_shape.clone();
                }
                gi
            }
            None => {
                let (root, space) = match &data.op {
                    TOp::Matmul => (Root::Matmul(inst), func.ty(data.result).shape.clone()),
                    _ if concat => (Root::Rows, func.ty(data.result).shape.clone()),
                    _ if is_row_op(func, inst)
                        && fits_space(func, inst, &own_space(func, inst)) =>
                    {
                        (Root::Rows, own_space(func, inst))
                    }
                    _ => (Root::Single(inst), func.ty(data.result).shape.clone()),
                };
                g.groups.push(Group {
                    root,
                    space,
                    insts: vec![inst],
                    needs_plain_rows: matches!(data.op, TOp::Tril { .. }),
                });
                (g.groups.len() - 1) as u32
            }
        };
        g.group_of[inst] = Some(gi);
    }
    // The deferred slices, last first (a slice of a slice follows its user): one whose
    // users are all in one row group, of its rows, joins it; any other is a view of its
    // operand's home, a group of its own.
    let mut users: std::collections::HashMap<Value, Vec<Inst>> = Default::default();
    for &inst in &func.layout {
        for a in &func.insts[inst].args {
            users.entry(*a).or_default().push(inst);
        }
    }
    for &inst in func.layout.iter().rev() {
        if !deferred[inst] {
            continue;
        }
        let v = func.insts[inst].result;
        let shape = &func.ty(v).shape;
        let us = users.get(&v).map(Vec::as_slice).unwrap_or(&[]);
        let target = us.first().and_then(|&u| g.group_of[u]).filter(|&gi| {
            let grp = &g.groups[gi as usize];
            matches!(grp.root, Root::Rows)
                && us.iter().all(|&u| g.group_of[u] == Some(gi))
                && !func.results.contains(&v)
                && (shape == &grp.space
                    || (is_narrow(shape, &grp.space) && takes_columns(func, grp)))
        });
        let gi = match target {
            Some(gi) => {
                let grp = &mut g.groups[gi as usize];
                grp.insts.push(inst);
                grp.insts.sort_by_key(|&i| pos[i]);
                gi
            }
            None => {
                g.groups.push(Group {
                    root: Root::Single(inst),
                    space: shape.clone(),
                    insts: vec![inst],
                    needs_plain_rows: false,
                });
                (g.groups.len() - 1) as u32
            }
        };
        g.group_of[inst] = Some(gi);
    }
    g
}
