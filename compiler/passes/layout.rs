//! The `layout` pass: decides how values sit in memory and on the partitions before the
//! `tile` pass commits to instructions.
//!
//! Decisions, all read by `tile`:
//! - **Matmul orientation.** `C = A @ B` normally runs with A stationary and the M axis of
//!   C on partitions. A matmul group may instead run *swapped*, as `C^T = B^T @ A^T`: B is
//!   stationary, the N axis of C is on partitions, and C's epilogue (bias, activation,
//!   casts) is evaluated on tiles of C^T, where a bias along N is one value per partition
//!   (the Scalar engine's per-partition bias operand).
//! - **Transposed homes.** A value computed by a swapped group and kept in HBM is stored
//!   as its transpose (last two axes swapped), because that is how its tiles come out of
//!   PSUM. When the value then feeds another matmul as its left operand, that operand
//!   arrives with K on the slow axis, which is exactly the K-on-partitions layout the
//!   Tensor engine needs: its transposes on the Tensor engine disappear.
//! - **Operand loads.** For every matmul, whether each operand is loaded straight into
//!   the K-on-partitions layout ("direct") or loaded with K along the free axis and
//!   transposed on the Tensor engine ("pe-transpose"), which is decided by which axis of
//!   the operand's HBM home is contiguous.
//! - **Partitions of every group** (for the dump): row groups put their rows on
//!   partitions and the last axis on the free axis.
//!
//! The swap is chosen, with as few transposes as possible as the aim, for the matmul
//! groups whose kept results feed only (a) other matmuls as left operands or (b) other
//! swapped groups elementwise, whose epilogue is elementwise, whose full-size epilogue
//! operands come from transposed homes, and whose M is at least 128 (so the moving side
//! keeps the Tensor engine busy). Kernel results are never stored transposed: their layout
//! is the caller's. Disabled, every matmul runs in its normal orientation and every home
//! is row-major.

use super::fusion::{self, Fit, Grouping, Root};
use super::Compilation;
use crate::ir::{Function, Inst, TOp, Value, ValueDef};
use cranelift_entity::SecondaryMap;
use std::collections::BTreeSet;

/// How a matmul operand reaches the K-on-partitions layout.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Load {
    /// A DMA reads it straight into K-on-partitions tiles (its other axis is contiguous).
    Direct,
    /// Its K axis is contiguous: rows are loaded and transposed on the Tensor engine.
    PeTranspose,
}

impl Load {
    fn name(self) -> &'static str {
        match self {
            Load::Direct => "direct",
            Load::PeTranspose => "pe-transpose",
        }
    }
}

/// The plan of one matmul.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MatmulLayout {
    /// Computed as `C^T = B^T @ A^T` (B stationary, N on partitions).
    pub swapped: bool,
    /// How the stationary operand (A, or B^T when swapped) is loaded.
    pub stationary: Load,
    /// How the moving operand (B, or A^T when swapped) is loaded.
    pub moving: Load,
}

/// The layout decisions of a function.
#[derive(Clone, Debug, Default)]
pub struct Layout {
    /// The plan of each matmul instruction.
    pub matmuls: SecondaryMap<Inst, Option<MatmulLayout>>,
    /// The loads of each attention pattern's operands (Q, K^T, V), by its output (the
    /// division by the row sums).
    pub attention: SecondaryMap<Inst, Option<[Load; 3]>>,
    /// Values whose HBM home holds their transpose (last two axes swapped).
    pub transposed: SecondaryMap<Value, bool>,
    /// The dump text, built with the plan (instruction and value names in program order).
    text: String,
}

impl Layout {
    /// Text for dumps: one comment line per decision.
    pub fn describe(&self) -> String {
        self.text.clone()
    }

    /// The plan of a matmul (the normal orientation when the pass did not see it).
    pub fn matmul(&self, inst: Inst) -> Option<MatmulLayout> {
        self.matmuls[inst]
    }

    /// The loads of the attention pattern whose output is `out`.
    pub fn attention(&self, out: Inst) -> Option<[Load; 3]> {
        self.attention[out]
    }
}

/// The pass.
pub fn run(c: &mut Compilation) -> Result<bool, String> {
    let singles;
    let grouping = match &c.groups {
        Some(g) => g,
        None => {
            singles = fusion::group(&c.tensor, false, false)?;
            &singles
        }
    };
    // Like `fusion`, the pass always attaches its plan, so `--dump-after layout` shows it.
    c.layout = Some(plan(&c.tensor, grouping, true));
    Ok(true)
}

/// The layout of `func` grouped by `grouping`; with `optimise` false, no matmul is swapped
/// (what `tile` uses when the pass is disabled).
pub fn plan(func: &Function, grouping: &Grouping, optimise: bool) -> Layout {
    let mut layout = Layout::default();
    let mut swapped = BTreeSet::new();
    if optimise {
        let kept = kept_values(func, grouping);
        swapped = choose_swaps(func, grouping, &kept);
        for &g in &swapped {
            for (v, _) in &kept[g as usize] {
                layout.transposed[*v] = true;
            }
        }
    }
    for &inst in &func.layout {
        let data = &func.insts[inst];
        if !matches!(data.op, TOp::Matmul) {
            continue;
        }
        let is_swapped = grouping.group_of[inst].is_some_and(|g| swapped.contains(&g));
        let (a, b) = (data.args[0], data.args[1]);
        let a_rank = func.ty(a).shape.len();
        let b_rank = func.ty(b).shape.len();
        // K is A's last axis and B's second-to-last; an operand needs the Tensor engine's
        // transposes when its K axis is the contiguous one.
        let a_load = match inner_axis(func, &layout.transposed, a) {
            Some(ax) if ax + 1 == a_rank => Load::PeTranspose,
            _ => Load::Direct,
        };
        let b_load = match inner_axis(func, &layout.transposed, b) {
            Some(ax) if ax + 2 == b_rank => Load::PeTranspose,
            _ => Load::Direct,
        };
        // Swapped, B^T is stationary and A^T moving: each keeps its own load.
        let (stationary, moving) = if is_swapped {
            (b_load, a_load)
        } else {
            (a_load, b_load)
        };
        layout.matmuls[inst] = Some(MatmulLayout {
            swapped: is_swapped,
            stationary,
            moving,
        });
    }
    // Attention (`attention.rs`): Q is the left operand of the scores (K = D, its last
    // axis), K^T and V the right operands of the two matmuls (K = their first axis).
    for g in &grouping.groups {
        let Root::Attention(a) = &g.root else {
            continue;
        };
        let load = |v: Value, k_axis: usize| match inner_axis(func, &layout.transposed, v) {
            Some(ax) if ax == k_axis => Load::PeTranspose,
            _ => Load::Direct,
        };
        let rank = |v: Value| func.ty(v).shape.len();
        layout.attention[a.out] = Some([
            load(a.q, rank(a.q) - 1),
            load(a.kt, rank(a.kt) - 2),
            load(a.v, rank(a.v) - 2),
        ]);
    }
    layout.text = describe(func, grouping, &layout);
    layout
}

/// The axis of `v`'s HBM home whose stride is one, when `v` is read from HBM.
fn inner_axis(func: &Function, transposed: &SecondaryMap<Value, bool>, v: Value) -> Option<usize> {
    let rank = func.ty(v).shape.len();
    match func.values[v].def {
        ValueDef::Param(_) => rank.checked_sub(1),
        ValueDef::Inst(i) => {
            let data = &func.insts[i];
            match &data.op {
                TOp::Const(_) => None,
                TOp::Transpose(perm) => {
                    let inner = inner_axis(func, transposed, data.args[0])?;
                    perm.iter().position(|&p| p == inner)
                }
                // A reshape reads a dense copy when its operand is not dense.
                TOp::Reshape => rank.checked_sub(1),
                // A slice keeps the operand's unit-stride axis if it keeps it with step 1.
                TOp::Slice(axes) => {
                    let inner = inner_axis(func, transposed, data.args[0])?;
                    let a = axes.get(inner)?;
                    if !a.keep || a.step != 1 {
                        return None;
                    }
                    Some(axes[..inner].iter().filter(|a| a.keep).count())
                }
                TOp::BroadcastTo => {
                    let inner = inner_axis(func, transposed, data.args[0])?;
                    let arg = &func.ty(data.args[0]).shape;
                    (arg[inner] != 1).then(|| inner + rank - arg.len())
                }
                _ if transposed[v] => rank.checked_sub(2),
                _ => rank.checked_sub(1),
            }
        }
    }
}

/// Per group, the values that get an HBM home (used outside the group, or returned), each
/// with the instructions of other groups that use it. Computed once: the swap rules look
/// at these uses again in every round.
type Kept = Vec<Vec<(Value, Vec<Inst>)>>;

fn kept_values(func: &Function, grouping: &Grouping) -> Kept {
    let mut users: SecondaryMap<Value, Vec<Inst>> = SecondaryMap::new();
    for &u in &func.layout {
        for &a in &func.insts[u].args {
            if !users[a].contains(&u) {
                users[a].push(u);
            }
        }
    }
    grouping
        .groups
        .iter()
        .enumerate()
        .map(|(g, group)| {
            group
                .insts
                .iter()
                .map(|&i| func.insts[i].result)
                .filter_map(|v| {
                    let outside: Vec<Inst> = users[v]
                        .iter()
                        .copied()
                        .filter(|&u| grouping.group_of[u] != Some(g as u32))
                        .collect();
                    (func.results.contains(&v) || !outside.is_empty()).then_some((v, outside))
                })
                .collect()
        })
        .collect()
}

/// The matmul groups to run swapped: the largest set that satisfies the rules in the
/// module comment (found by removing violators until none is left), without the groups
/// that gain nothing.
fn choose_swaps(func: &Function, grouping: &Grouping, kept: &Kept) -> BTreeSet<u32> {
    let mut set: BTreeSet<u32> = (0..grouping.groups.len() as u32)
        .filter(|&g| candidate(func, grouping, g))
        .collect();
    loop {
        let keep: BTreeSet<u32> = set
            .iter()
            .copied()
            .filter(|&g| {
                let kept = &kept[g as usize];
                consistent(func, grouping, kept, g, &set) && gains(func, grouping, kept, &set)
            })
            .collect();
        if keep == set {
            return set;
        }
        set = keep;
    }
}

/// A matmul group whose epilogue is elementwise over the full result, with M >= 128.
fn candidate(func: &Function, grouping: &Grouping, g: u32) -> bool {
    let group = &grouping.groups[g as usize];
    let Root::Matmul(mm) = group.root else {
        return false;
    };
    if func.insts[mm]
        .args
        .iter()
        .any(|&a| func.ty(a).shape.len() < 2)
    {
        return false;
    }
    let space = &group.space;
    if space.len() < 2 || space[space.len() - 2] < 128 {
        return false;
    }
    group.insts.iter().all(|&i| {
        let data = &func.insts[i];
        matches!(
            data.op,
            TOp::Matmul | TOp::Unary(_) | TOp::Binary(_) | TOp::Cast
        ) && fusion::fit(&func.ty(data.result).shape, space) == Some(Fit::Full)
    })
}

/// True when `v` varies along both of the last two axes of `space` once broadcast (a tile
/// of it in the swapped orientation would be read across the grain of its home).
fn full_in_both(func: &Function, v: Value, space: &[u64]) -> bool {
    let shape = &func.ty(v).shape;
    let n = space.len();
    let dim = |k: usize| -> u64 {
        // Axis n-k of the space, aligned from the right.
        shape.len().checked_sub(k).map_or(1, |i| shape[i])
    };
    n >= 2 && dim(1) > 1 && dim(2) > 1
}

/// The rules that depend on the other swapped groups: every kept value is used only as a
/// matmul's left operand or inside a swapped group, is not a result, and every full-size
/// operand read by the epilogue comes from a transposed home.
fn consistent(
    func: &Function,
    grouping: &Grouping,
    kept: &[(Value, Vec<Inst>)],
    g: u32,
    set: &BTreeSet<u32>,
) -> bool {
    let group = &grouping.groups[g as usize];
    let Root::Matmul(mm) = group.root else {
        return false;
    };
    for (v, users) in kept {
        if func.results.contains(v) {
            return false;
        }
        for &u in users {
            let data = &func.insts[u];
            let as_left =
                matches!(data.op, TOp::Matmul) && data.args[0] == *v && data.args[1] != *v;
            let in_swapped = grouping.group_of[u].is_some_and(|h| set.contains(&h))
                && !matches!(data.op, TOp::Matmul);
            if !(as_left || in_swapped) {
                return false;
            }
        }
    }
    for &i in &group.insts {
        if i == mm {
            continue;
        }
        for &a in &func.insts[i].args {
            let inside =
                matches!(func.values[a].def, ValueDef::Inst(d) if grouping.group_of[d] == Some(g));
            if inside || !full_in_both(func, a, &group.space) {
                continue;
            }
            let from_swapped = match func.values[a].def {
                ValueDef::Inst(d) => {
                    grouping.group_of[d].is_some_and(|h| set.contains(&h))
                        && !matches!(func.insts[d].op, TOp::Const(_))
                }
                ValueDef::Param(_) => false,
            };
            if !from_swapped {
                return false;
            }
        }
    }
    true
}

/// A swap gains when a kept value feeds a matmul as its left operand (whose transposes
/// disappear) or feeds another swapped group (which needs it transposed).
fn gains(
    func: &Function,
    grouping: &Grouping,
    kept: &[(Value, Vec<Inst>)],
    set: &BTreeSet<u32>,
) -> bool {
    kept.iter().any(|(v, users)| {
        users.iter().any(|&u| {
            (matches!(func.insts[u].op, TOp::Matmul) && func.insts[u].args[0] == *v)
                || grouping.group_of[u].is_some_and(|h| set.contains(&h))
        })
    })
}

/// The dump: matmul plans and transposed homes in program order, then each group's
/// partition axes.
fn describe(func: &Function, grouping: &Grouping, layout: &Layout) -> String {
    let mut s = String::new();
    for &inst in &func.layout {
        let Some(m) = layout.matmuls[inst] else {
            continue;
        };
        let data = &func.insts[inst];
        let (a, b) = (data.args[0], data.args[1]);
        let rank = func.ty(data.result).shape.len();
        if m.swapped {
            s.push_str(&format!(
                "; layout {inst}: swapped ({}^T = {b}^T @ {a}^T): stationary {b}^T ({}), moving {a}^T ({}), axis {} on partitions\n",
                data.result,
                m.stationary.name(),
                m.moving.name(),
                rank - 1
            ));
        } else {
            s.push_str(&format!(
                "; layout {inst}: stationary {a} ({}), moving {b} ({}), axis {} on partitions\n",
                m.stationary.name(),
                m.moving.name(),
                rank.saturating_sub(2)
            ));
        }
    }
    for &inst in &func.layout {
        if let Some([q, kt, v]) = layout.attention[inst] {
            let g = grouping.group_of[inst].unwrap_or(0);
            if let Some(Root::Attention(a)) = grouping.groups.get(g as usize).map(|g| &g.root) {
                s.push_str(&format!(
                    "; layout {inst}: attention: q {} ({}), k^T {} ({}), v {} ({}), queries on partitions\n",
                    a.q,
                    q.name(),
                    a.kt,
                    kt.name(),
                    a.v,
                    v.name()
                ));
            }
        }
    }
    for &inst in &func.layout {
        let v = func.insts[inst].result;
        if layout.transposed[v] {
            s.push_str(&format!("; layout {v}: home holds its transpose\n"));
        }
    }
    for (i, g) in grouping.groups.iter().enumerate() {
        let rank = g.space.len();
        let text = match &g.root {
            Root::Matmul(_) => continue,
            Root::Single(inst) => match &func.insts[*inst].op {
                TOp::Reduce { axis, .. } => {
                    format!("axis {axis} on the free axis, the others on partitions")
                }
                TOp::Transpose(_) | TOp::Reshape | TOp::Slice(_) | TOp::BroadcastTo => {
                    "a view of its operand's home".to_string()
                }
                _ => continue,
            },
            Root::Rows | Root::Attention(_) if rank == 2 => {
                "axis 0 on partitions, axis 1 on the free axis".to_string()
            }
            Root::Rows | Root::Attention(_) if rank > 2 => format!(
                "axes 0 to {} on partitions (packed, up to 128 rows), axis {} on the free axis",
                rank - 2,
                rank - 1
            ),
            Root::Rows | Root::Attention(_) => "one row on the free axis".to_string(),
        };
        s.push_str(&format!("; layout g{i}: {text}\n"));
    }
    s
}
