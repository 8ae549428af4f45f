//! The typing rules of tensor operations: broadcasting, promotion, matmul, reductions,
//! transposes. The verifier checks every instruction against them, and the reference
//! evaluator relies on them holding.

use super::{BinaryOp, ReduceFn, SliceAxis, TOp, TensorType, UnaryFn};
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

/// The dtype two operands of a binary operation (or `where`'s branches) compute in: floats
/// promote; an `i32` or `bool` operand only meets its own dtype.
pub fn operand_dtype(a: Dtype, b: Dtype) -> Result<Dtype, String> {
    if a.is_float() && b.is_float() || a == b {
        Ok(promote(a, b))
    } else {
        Err(format!("{a} and {b} do not mix"))
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
        TOp::Unary(u) => {
            let d = args[0].dtype;
            let ok = match u {
                UnaryFn::Not => d == Dtype::Bool,
                UnaryFn::Neg | UnaryFn::Abs => d != Dtype::Bool,
                _ => d.is_float(),
            };
            if !ok {
                return Err(format!("{u:?} does not take {}", args[0]));
            }
            expect(args[0].shape.clone(), d)
        }
        TOp::Binary(b) => {
            let shape = broadcast_shapes(&args[0].shape, &args[1].shape)
                .ok_or_else(|| format!("{} and {} do not broadcast", args[0], args[1]))?;
            let operand = operand_dtype(args[0].dtype, args[1].dtype)?;
            let ok = match b {
                BinaryOp::And | BinaryOp::Or => operand == Dtype::Bool,
                BinaryOp::Eq | BinaryOp::Ne => true,
                BinaryOp::Div => operand.is_float(),
                _ => operand != Dtype::Bool,
            };
            if !ok {
                return Err(format!("{b:?} does not take {} and {}", args[0], args[1]));
            }
            let dtype = if b.is_comparison() || matches!(b, BinaryOp::And | BinaryOp::Or) {
                Dtype::Bool
            } else {
                operand
            };
            expect(shape, dtype)
        }
        TOp::Matmul => {
            if !args[0].dtype.is_float() || !args[1].dtype.is_float() {
                return Err("matmul operands must be floats".into());
            }
            expect(matmul_shape(&args[0].shape, &args[1].shape)?, Dtype::F32)
        }
        TOp::Conv(attrs) => {
            if !args[0].dtype.is_float() || !args[1].dtype.is_float() {
                return Err("conv operands must be floats".into());
            }
            expect(
                attrs.result_shape(&args[0].shape, &args[1].shape)?,
                Dtype::F32,
            )
        }
        TOp::Where => {
            if args[0].dtype != Dtype::Bool {
                return Err(format!("a where condition must be bool, is {}", args[0]));
            }
            let shape = broadcast_shapes(&args[0].shape, &args[1].shape)
                .and_then(|s| broadcast_shapes(&s, &args[2].shape))
                .ok_or_else(|| {
                    format!("{}, {} and {} do not broadcast", args[0], args[1], args[2])
                })?;
            expect(shape, operand_dtype(args[1].dtype, args[2].dtype)?)
        }
        TOp::Arange => {
            if result.dtype != Dtype::I32 || result.shape.len() != 1 || result.shape[0] > 1 << 31 {
                return Err(format!("arange gives i32[n] with n <= 2^31, not {result}"));
            }
            Ok(())
        }
        TOp::Take { axis } => {
            if args[1].dtype != Dtype::I32 {
                return Err(format!("take indices must be i32, are {}", args[1]));
            }
            if *axis >= args[0].shape.len() {
                return Err(format!("axis {axis} out of range for {}", args[0]));
            }
            let mut shape = args[0].shape[..*axis].to_vec();
            shape.extend_from_slice(&args[1].shape);
            shape.extend_from_slice(&args[0].shape[axis + 1..]);
            if !(1..=4).contains(&shape.len()) {
                return Err(format!("take result of rank {}", shape.len()));
            }
            expect(shape, args[0].dtype)
        }
        TOp::Reduce {
            func,
            axis,
            keepdims,
        } => {
            let shape = reduce_shape(&args[0].shape, *axis, *keepdims)
                .ok_or_else(|| format!("axis {axis} out of range for {}", args[0]))?;
            if shape.is_empty() {
                return Err("a reduction must leave at least one axis".into());
            }
            let ok = match func {
                ReduceFn::Sum | ReduceFn::Max | ReduceFn::Min => args[0].dtype != Dtype::Bool,
                ReduceFn::Mean => args[0].dtype.is_float(),
            };
            if !ok {
                return Err(format!("{func:?} does not take {}", args[0]));
            }
            expect(shape, args[0].dtype)
        }
        TOp::ArgReduce { axis, keepdims, .. } => {
            let shape = reduce_shape(&args[0].shape, *axis, *keepdims)
                .ok_or_else(|| format!("axis {axis} out of range for {}", args[0]))?;
            if shape.is_empty() {
                return Err("a reduction must leave at least one axis".into());
            }
            if args[0].dtype == Dtype::Bool {
                return Err(format!("argmax and argmin do not take {}", args[0]));
            }
            expect(shape, Dtype::I32)
        }
        TOp::Cumsum { axis } => {
            if *axis >= args[0].shape.len() {
                return Err(format!("axis {axis} out of range for {}", args[0]));
            }
            if args[0].dtype == Dtype::Bool {
                return Err(format!("cumsum does not take {}", args[0]));
            }
            expect(args[0].shape.clone(), args[0].dtype)
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
            if !args[0].dtype.is_float() {
                return Err(format!("tril takes floats, not {}", args[0]));
            }
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
        TOp::Pool(p) => {
            if !args[0].dtype.is_float() {
                return Err(format!("{} takes floats, not {}", p.name(), args[0]));
            }
            expect(p.out_shape(&args[0].shape)?, args[0].dtype)
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
