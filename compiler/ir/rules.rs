//! The typing rules of tensor operations: broadcasting, promotion, matmul, reductions,
//! transposes. The verifier checks every instruction against them, and the reference
//! evaluator relies on them holding.

use super::{SliceAxis, TOp, TensorType};
use crate::frontend::check::MAX_RANK;
use isa::Dtype;

/// NumPy broadcasting of two shapes: align trailing axes; a 1 stretches.
pub fn broadcast_shapes(a: &[u64], b: &[u64]) -> Option<Vec<u64>> {
    let rank = a.len().max(b.len());
    let mut out = vec![0; rank];
    for i in 0..rank {
        let da = if i < rank - a.len() {
            1
        } else {
            a[i - (rank - a.len())]
        };
        let db = if i < rank - b.len() {
            1
        } else {
            b[i - (rank - b.len())]
        };
        out[i] = match (da, db) {
            (x, y) if x == y => x,
            (1, y) => y,
            (x, 1) => x,
            _ => return None,
        };
    }
    Some(out)
}

/// The dtype of an elementwise operation on two tensors: the same dtype, or f32.
pub fn promote(a: Dtype, b: Dtype) -> Dtype {
    if a == b {
        a
    } else {
        Dtype::F32
    }
}

/// The result shape of NumPy `matmul` for ranks 2 to 6, batch axes broadcast.
pub fn matmul_shape(a: &[u64], b: &[u64]) -> Result<Vec<u64>, String> {
    if a.len() < 2 || b.len() < 2 {
        return Err("matmul operands must have rank 2 or more".into());
    }
    let (m, ka) = (a[a.len() - 2], a[a.len() - 1]);
    let (kb, n) = (b[b.len() - 2], b[b.len() - 1]);
    if ka != kb {
        return Err(format!("matmul inner dimensions differ: {ka} and {kb}"));
    }
    let mut batch = broadcast_shapes(&a[..a.len() - 2], &b[..b.len() - 2])
        .ok_or_else(|| "matmul batch axes do not broadcast".to_string())?;
    batch.push(m);
    batch.push(n);
    Ok(batch)
}

/// The shape of a reduction over `axis`.
pub fn reduce_shape(shape: &[u64], axis: usize, keepdims: bool) -> Option<Vec<u64>> {
    if axis >= shape.len() {
        return None;
    }
    let mut out = shape.to_vec();
    if keepdims {
        out[axis] = 1;
    } else {
        out.remove(axis);
    }
    Some(out)
}

/// True when `perm` is a permutation of `0..rank`.
pub fn is_permutation(perm: &[usize], rank: usize) -> bool {
    if perm.len() != rank {
        return false;
    }
    let mut seen = vec![false; rank];
    for &p in perm {
        if p >= rank || seen[p] {
            return false;
        }
        seen[p] = true;
    }
    true
}

/// Checks an instruction's result type against its operation and argument types.
pub fn check(op: &TOp, args: &[&TensorType], result: &TensorType) -> Result<(), String> {
    match op.arity() {
        Some(n) if args.len() != n => {
            return Err(format!("takes {n} arguments, has {}", args.len()));
        }
        None if args.is_empty() => return Err("takes at least one argument, has none".into()),
        _ => {}
    }
    let rank_ok = |t: &TensorType| (1..=MAX_RANK).contains(&t.shape.len());
    let expect = |shape: Vec<u64>, dtype: Dtype| {
        let want = TensorType { dtype, shape };
        if &want == result {
            Ok(())
        } else {
            Err(format!("result should be {want}, is {result}"))
        }
    };
    match op {
        TOp::Const(_) => {
            if result.shape.is_empty() {
                Ok(())
            } else {
                Err(format!("a constant has rank 0, not {result}"))
            }
        }
        TOp::Unary(_) => expect(args[0].shape.clone(), args[0].dtype),
        TOp::Binary(_) => {
            let shape = broadcast_shapes(&args[0].shape, &args[1].shape)
                .ok_or_else(|| format!("{} and {} do not broadcast", args[0], args[1]))?;
            expect(shape, promote(args[0].dtype, args[1].dtype))
        }
        TOp::Matmul => expect(matmul_shape(&args[0].shape, &args[1].shape)?, Dtype::F32),
        TOp::Reduce { axis, keepdims, .. } => {
            let shape = reduce_shape(&args[0].shape, *axis, *keepdims)
                .ok_or_else(|| format!("axis {axis} out of range for {}", args[0]))?;
            if shape.is_empty() {
                return Err("a reduction must leave at least one axis".into());
            }
            expect(shape, args[0].dtype)
        }
        TOp::Transpose(perm) => {
            if !is_permutation(perm, args[0].shape.len()) {
                return Err(format!("{perm:?} is not a permutation of {}", args[0]));
            }
            expect(
                perm.iter().map(|&p| args[0].shape[p]).collect(),
                args[0].dtype,
            )
        }
        TOp::Reshape => {
            if args[0].elems() != result.elems() || !rank_ok(result) {
                return Err(format!("cannot reshape {} to {result}", args[0]));
            }
            expect(result.shape.clone(), args[0].dtype)
        }
        TOp::Tril { .. } => {
            if args[0].shape.len() < 2 {
                return Err(format!("tril needs rank 2 or more, has {}", args[0]));
            }
            expect(args[0].shape.clone(), args[0].dtype)
        }
        TOp::Cast => expect(args[0].shape.clone(), result.dtype),
        TOp::Slice(axes) => {
            let shape = slice_shape(&args[0].shape, axes, &result.shape)?;
            expect(shape, args[0].dtype)
        }
        TOp::Concat(axis) => {
            let first = args[0];
            let rank = first.shape.len();
            if *axis >= rank {
                return Err(format!("concat axis {axis} out of range for {first}"));
            }
            let mut shape = first.shape.clone();
            shape[*axis] = 0;
            for a in args {
                let same = a.shape.len() == rank
                    && a.dtype == first.dtype
                    && (0..rank).all(|i| i == *axis || a.shape[i] == first.shape[i]);
                if !same {
                    return Err(format!("concat along axis {axis} of {first} and {a}"));
                }
                shape[*axis] += a.shape[*axis];
            }
            expect(shape, first.dtype)
        }
        TOp::Pad { before, after, .. } => {
            let rank = args[0].shape.len();
            if before.len() != rank || after.len() != rank {
                return Err(format!(
                    "pad widths of rank {} for {}",
                    before.len(),
                    args[0]
                ));
            }
            let shape = (0..rank)
                .map(|i| args[0].shape[i] + before[i] + after[i])
                .collect();
            expect(shape, args[0].dtype)
        }
        TOp::BroadcastTo => {
            if !rank_ok(result)
                || broadcast_shapes(&args[0].shape, &result.shape).as_ref() != Some(&result.shape)
            {
                return Err(format!("cannot broadcast {} to {result}", args[0]));
            }
            expect(result.shape.clone(), args[0].dtype)
        }
    }
}

/// The shape a slice gives (the kept axes' counts are read from `result`), after checking
/// that every position it reads lies inside `arg`.
pub fn slice_shape(arg: &[u64], axes: &[SliceAxis], result: &[u64]) -> Result<Vec<u64>, String> {
    if axes.len() != arg.len() {
        return Err(format!(
            "a slice of {} axes for rank {}",
            axes.len(),
            arg.len()
        ));
    }
    let kept = axes.iter().filter(|a| a.keep).count();
    if kept != result.len() || kept == 0 {
        return Err(format!(
            "a slice keeping {kept} axes gives rank {}",
            result.len()
        ));
    }
    let mut counts = result.iter();
    let mut shape = Vec::new();
    for (i, (a, &n)) in axes.iter().zip(arg).enumerate() {
        let count = if a.keep {
            *counts.next().unwrap_or(&0)
        } else {
            1
        };
        let last = a.start as i128 + (count as i128 - 1) * a.step as i128;
        if a.step == 0 || count == 0 || a.start >= n || last < 0 || last >= n as i128 {
            return Err(format!(
                "slice of axis {i} (start {}, step {}, {count} elements) outside its {n} elements",
                a.start, a.step
            ));
        }
        if a.keep {
            shape.push(count);
        }
    }
    Ok(shape)
}
