//! The reference evaluator: runs tensor IR on host tensors in plain Rust, with the
//! language's numerics exactly. It is the oracle of every end-to-end test.
//!
//! Numerics (docs/language.md repeats them for users):
//! - every value is stored as f32 holding a number exactly representable in its dtype;
//! - an elementwise operation decodes its inputs to f32, computes in f32 (unary functions
//!   through `runtime::numeric::act`, which evaluates in f64 with libm and rounds once to
//!   f32; binary ones through `runtime::numeric::alu`), then rounds to the result dtype
//!   (round to nearest even; FP8 saturates);
//! - `@` accumulates in f32: each output starts at +0.0 and adds the products for k = 0,
//!   1, .., K-1 in that order, each addition rounded to f32 — the Tensor engine's order, so
//!   compiled matmuls match exactly;
//! - a reduction starts from the first element along the axis and combines the rest in
//!   order in f32, then rounds once to the dtype (`mean` divides the f32 sum by the count
//!   before that rounding); max and min propagate NaN.
//! - `i32` values are held exactly as `i32` (`HostTensor::ints`), never as f32, and `bool`
//!   values as 0.0 and 1.0 in `data` (exact); their operations are in `v2.rs`.

pub mod bound;
mod conv;
pub mod estimate;
mod matmul;
pub mod movement;
mod par;
mod pool;
pub mod rows;
mod scan;
mod v2;

use crate::ir::{BinaryOp, Function, ReduceFn, Span, TOp, UnaryFn, Value};
use cranelift_entity::SecondaryMap;
use isa::{ActFunc, AluOp, Dtype};
use runtime::numeric;
use std::borrow::Cow;
pub use v2::COMPUTED_INDICES;

/// A tensor on the host: row-major values, each exactly representable in `dtype`. Float
/// and `bool` values (0.0 or 1.0) are in `data`; `i32` values are in `ints` (exactly), with
/// `data` empty. The other vector is always empty.
#[derive(Clone, Debug, PartialEq)]
pub struct HostTensor {
    pub dtype: Dtype,
    pub shape: Vec<u64>,
    pub data: Vec<f32>,
    pub ints: Vec<i32>,
}

impl HostTensor {
    /// A tensor from f32 values, each rounded to `dtype` with the language's rules.
    /// For `i32`, each value converts as the language's `as` does (toward zero, saturating).
    pub fn from_f32(dtype: Dtype, shape: &[u64], values: &[f32]) -> HostTensor {
        if dtype == Dtype::I32 {
            return HostTensor::from_i32(shape, values.iter().map(|&x| x as i32).collect());
        }
        HostTensor {
            dtype,
            shape: shape.to_vec(),
            data: values.iter().map(|&x| numeric::round(dtype, x)).collect(),
            ints: Vec::new(),
        }
    }

    /// An `i32` tensor.
    pub fn from_i32(shape: &[u64], values: Vec<i32>) -> HostTensor {
        HostTensor {
            dtype: Dtype::I32,
            shape: shape.to_vec(),
            data: Vec::new(),
            ints: values,
        }
    }

    /// Number of elements.
    pub fn elems(&self) -> usize {
        if self.dtype == Dtype::I32 {
            self.ints.len()
        } else {
            self.data.len()
        }
    }

    /// Element `i` as an f64 (exact for every dtype).
    pub fn get(&self, i: usize) -> f64 {
        if self.dtype == Dtype::I32 {
            f64::from(self.ints[i])
        } else {
            f64::from(self.data[i])
        }
    }
}

/// Why evaluation could not run.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum EvalError {
    #[error("kernel `{kernel}` takes {expected} inputs, {found} were given")]
    InputCount {
        kernel: String,
        expected: usize,
        found: usize,
    },
    #[error("input `{name}` should be {expected}, is {found}")]
    InputType {
        name: String,
        expected: String,
        found: String,
    },
    #[error("internal error: {0} is used before it is defined (the IR was not verified)")]
    Unverified(Value),
    #[error("the kernel would need {0} elements of memory in one tensor, more than the reference evaluator allows")]
    TooLarge(u64),
    #[error("kernel `{kernel}`: {operand} holds the index {value}, outside [-{len}, {len}) for the axis `take` indexes")]
    TakeIndex {
        kernel: String,
        /// The operand that holds the indices, as the user knows it.
        operand: String,
        value: i64,
        len: u64,
        /// The span of the `take`, when its indices are computed in the kernel (the
        /// driver then names the take's source location).
        computed_at: Option<Span>,
    },
}

/// The largest tensor the evaluator materialises (elements).
const MAX_ELEMS: u64 = 1 << 32;

/// Evaluates `func` on `inputs` (in parameter order) and returns its results.
pub fn evaluate(func: &Function, inputs: &[HostTensor]) -> Result<Vec<HostTensor>, EvalError> {
    Ok(run(
        func,
        Inputs::Given(inputs),
        None,
        Some(rows::Blocks::DEFAULT),
    )?
    .into_iter()
    .map(|(t, _)| t)
    .collect())
}

/// Evaluates `func` on `inputs` and returns each result with its error bound per element
/// (`bound.rs`): how far a compiled result may lie from the reference's under the numerics
/// docs/numerics.md allows. `relaxed` lists the casts whose rounding the compilation does
/// not reproduce (`Grouping::relaxed_casts`).
pub fn evaluate_bounded(
    func: &Function,
    inputs: &[HostTensor],
    relaxed: &[Value],
) -> Result<Vec<(HostTensor, Vec<f32>)>, EvalError> {
    evaluate_bounded_blocks(func, inputs, relaxed, Some(rows::Blocks::DEFAULT))
}

/// [`evaluate_bounded`] with the runs of row-independent operations evaluated by row
/// blocks (`rows.rs`), or every operation on whole tensors when `None`. The results and
/// bounds are the same bits either way; the tests compare the two.
pub fn evaluate_bounded_blocks(
    func: &Function,
    inputs: &[HostTensor],
    relaxed: &[Value],
    blocks: Option<rows::Blocks>,
) -> Result<Vec<(HostTensor, Vec<f32>)>, EvalError> {
    run(func, Inputs::Given(inputs), Some(relaxed), blocks)
}

/// [`evaluate_bounded`] with each input made by `input(index)` (in parameter order) where
/// the kernel first uses it, and dropped after its last use, so that the evaluator never
/// holds an input longer than it needs it.
pub fn evaluate_bounded_lazy(
    func: &Function,
    input: &mut dyn FnMut(usize) -> HostTensor,
    relaxed: &[Value],
) -> Result<Vec<(HostTensor, Vec<f32>)>, EvalError> {
    run(
        func,
        Inputs::Lazy(input),
        Some(relaxed),
        Some(rows::Blocks::DEFAULT),
    )
}

/// [`evaluate`] with each input made by `input(index)` where the kernel first uses it and
/// dropped after its last use, as [`evaluate_bounded_lazy`] does, without bounds (for
/// `--check --dtype-policy strict`, which compares every bit and needs none).
pub fn evaluate_lazy(
    func: &Function,
    input: &mut dyn FnMut(usize) -> HostTensor,
) -> Result<Vec<HostTensor>, EvalError> {
    Ok(
        run(func, Inputs::Lazy(input), None, Some(rows::Blocks::DEFAULT))?
            .into_iter()
            .map(|(t, _)| t)
            .collect(),
    )
}

/// Where the evaluation loop gets its inputs.
enum Inputs<'a> {
    /// Borrowed, all given at once.
    Given(&'a [HostTensor]),
    /// Made one by one at their first use, owned (and so dropped after their last).
    Lazy(&'a mut dyn FnMut(usize) -> HostTensor),
}

/// Checks that `input` is a value of parameter `name`'s type.
fn check_input(func: &Function, name: &str, v: Value, input: &HostTensor) -> Result<(), EvalError> {
    let ty = func.ty(v);
    let stored_ok = if input.dtype == Dtype::I32 {
        input.data.is_empty()
    } else {
        input.ints.is_empty()
    };
    if ty.dtype != input.dtype
        || ty.shape != input.shape
        || input.elems() as u64 != ty.elems()
        || !stored_ok
    {
        return Err(EvalError::InputType {
            name: name.to_string(),
            expected: ty.to_string(),
            found: format!(
                "{}{:?} with {} values",
                input.dtype,
                input.shape,
                input.elems()
            ),
        });
    }
    Ok(())
}

/// The evaluation loop, with bounds when `relaxed` is given (else every bound is left
/// empty), and the runs `rows::plan` finds evaluated by row blocks of `blocks` when
/// given.
fn run(
    func: &Function,
    mut inputs: Inputs,
    relaxed: Option<&[Value]>,
    blocks: Option<rows::Blocks>,
) -> Result<Vec<(HostTensor, Vec<f32>)>, EvalError> {
    let bounded = relaxed.is_some();
    if let Inputs::Given(given) = inputs {
        if given.len() != func.params.len() {
            return Err(EvalError::InputCount {
                kernel: func.name.clone(),
                expected: func.params.len(),
                found: given.len(),
            });
        }
    }
    // Given inputs are borrowed, not copied; a value is dropped (with its bound) after its
    // last use, so the evaluator holds only the live tensors of the kernel at any time.
    let mut env: SecondaryMap<Value, Option<Cow<HostTensor>>> = SecondaryMap::new();
    let last_use = last_uses(func);
    let mut bounds: SecondaryMap<Value, Vec<f32>> = SecondaryMap::new();
    let mut zeros: Vec<f32> = Vec::new();
    // Lazy inputs not made yet: parameter index per value.
    let mut pending: SecondaryMap<Value, Option<usize>> = SecondaryMap::new();
    for (index, (name, v)) in func.params.iter().enumerate() {
        match &inputs {
            Inputs::Given(given) => {
                let input = &given[index];
                check_input(func, name, *v, input)?;
                env[*v] = Some(Cow::Borrowed(input));
                // An input is exact: its bound is left empty (all zero, see below).
                if bounded {
                    bounds[*v] = Vec::new();
                }
            }
            Inputs::Lazy(_) => pending[*v] = Some(index),
        }
    }
    // Makes a lazy input the first time it is needed.
    let mut make = |v: Value,
                    env: &mut SecondaryMap<Value, Option<Cow<HostTensor>>>,
                    bounds: &mut SecondaryMap<Value, Vec<f32>>,
                    pending: &mut SecondaryMap<Value, Option<usize>>|
     -> Result<(), EvalError> {
        let (Some(index), Inputs::Lazy(input)) = (pending[v].take(), &mut inputs) else {
            return Ok(());
        };
        let t = input(index);
        check_input(func, &func.params[index].0, v, &t)?;
        if bounded {
            bounds[v] = Vec::new();
        }
        env[v] = Some(Cow::Owned(t));
        Ok(())
    };
    let regions = blocks.map_or_else(Vec::new, |n| rows::plan(func, n));
    let mut next_region = regions.iter().peekable();
    let mut skip_to = 0;
    for (at, &inst) in func.layout.iter().enumerate() {
        if at < skip_to {
            continue;
        }
        let data = &func.insts[inst];
        let ty = func.ty(data.result);
        if ty.elems() > MAX_ELEMS {
            return Err(EvalError::TooLarge(ty.elems()));
        }
        if let Some(region) = next_region.next_if(|r| r.start == at) {
            let here = &func.layout[region.start..region.end];
            for &i in here {
                let t = func.ty(func.insts[i].result);
                if t.elems() > MAX_ELEMS {
                    return Err(EvalError::TooLarge(t.elems()));
                }
                for a in &func.insts[i].args {
                    make(*a, &mut env, &mut bounds, &mut pending)?;
                }
            }
            let outside = |v: Value| -> Result<(&HostTensor, &[f32]), EvalError> {
                let t = env[v].as_deref().ok_or(EvalError::Unverified(v))?;
                Ok((t, &bounds[v][..]))
            };
            let kept = rows::eval_region(
                func,
                region,
                blocks.unwrap_or(rows::Blocks::DEFAULT),
                &last_use,
                &outside,
                relaxed,
            )?;
            for (v, t, b) in kept {
                env[v] = Some(Cow::Owned(t));
                bounds[v] = b;
            }
            for &i in here {
                for a in &func.insts[i].args {
                    if (region.start..region.end).contains(&last_use[*a]) {
                        env[*a] = None;
                        bounds[*a] = Vec::new();
                    }
                }
            }
            skip_to = region.end;
            continue;
        }
        for a in &data.args {
            make(*a, &mut env, &mut bounds, &mut pending)?;
        }
        let mut args = Vec::with_capacity(data.args.len());
        for a in &data.args {
            args.push(env[*a].as_deref().ok_or(EvalError::Unverified(*a))?);
        }
        let out =
            match data.op {
                TOp::Take { axis } => v2::take(args[0], args[1], axis, ty.dtype, &ty.shape)
                    .map_err(|(value, len)| EvalError::TakeIndex {
                        kernel: func.name.clone(),
                        operand: v2::operand_name(func, data.args[1]),
                        value,
                        len,
                        computed_at: match func.values[data.args[1]].def {
                            crate::ir::ValueDef::Param(_) => None,
                            crate::ir::ValueDef::Inst(_) => Some(func.spans[inst]),
                        },
                    })?,
                _ => eval_op(&data.op, &args, ty.dtype, &ty.shape),
            };
        if bounded {
            let raw: Vec<&[f32]> = data.args.iter().map(|a| &bounds[*a][..]).collect();
            let relax = relaxed.is_some_and(|r| r.contains(&data.result));
            let facts = bound::facts(func, data.result, relaxed.unwrap_or_default());
            bounds[data.result] = bound_step(&data.op, &args, &raw, &out, relax, facts, &mut zeros);
        }
        env[data.result] = Some(Cow::Owned(out));
        for a in &data.args {
            if last_use[*a] == at {
                env[*a] = None;
                bounds[*a] = Vec::new();
            }
        }
    }
    for r in &func.results {
        make(*r, &mut env, &mut bounds, &mut pending)?;
    }
    func.results
        .iter()
        .map(|r| {
            let t = env[*r]
                .clone()
                .ok_or(EvalError::Unverified(*r))?
                .into_owned();
            Ok((t, bounds[*r].clone()))
        })
        .collect()
}

/// The layout position of each value's last use (`usize::MAX` for the results).
fn last_uses(func: &Function) -> SecondaryMap<Value, usize> {
    let mut last_use: SecondaryMap<Value, usize> = SecondaryMap::new();
    for (at, &inst) in func.layout.iter().enumerate() {
        for a in &func.insts[inst].args {
            last_use[*a] = at;
        }
    }
    for r in &func.results {
        last_use[*r] = usize::MAX;
    }
    last_use
}

/// The bound of `out = op(args)` from the operands' bounds `raw`, where an empty bound (an
/// input's) is all zero. A matmul takes it so (its bound then multiplies `|w|` instead of
/// `|w| + 0`, the same values, and no zero copy of a weight is made); other operations get
/// a slice of `zeros`, one shared zero vector grown as needed.
fn bound_step(
    op: &TOp,
    args: &[&HostTensor],
    raw: &[&[f32]],
    out: &HostTensor,
    relax: bool,
    facts: bound::Facts,
    zeros: &mut Vec<f32>,
) -> Vec<f32> {
    let matmul = matches!(op, TOp::Matmul);
    let short = |b: &[f32], t: &HostTensor| b.len() < t.elems();
    let need = raw.iter().zip(args).filter(|(b, t)| short(b, t));
    let need = need.map(|(_, t)| t.elems()).max().unwrap_or(0);
    if !matmul && zeros.len() < need {
        *zeros = vec![0.0; need];
    }
    let arg_bounds: Vec<&[f32]> = raw
        .iter()
        .zip(args)
        .map(|(b, t)| match short(b, t) && !matmul {
            true => &zeros[..t.elems()],
            false => *b,
        })
        .collect();
    bound::op_bound(op, args, &arg_bounds, out, relax, facts)
}

/// Evaluates one operation whose result has `dtype` and `shape`. A `take` whose index is
/// out of range gives index 0 here; [`evaluate`] reports it instead.
pub fn eval_op(op: &TOp, args: &[&HostTensor], dtype: Dtype, shape: &[u64]) -> HostTensor {
    if let Some(t) = scan::eval(op, args, dtype, shape) {
        return t;
    }
    if let Some(t) = v2::eval(op, args, dtype, shape) {
        return t;
    }
    let data = match op {
        TOp::Const(x) => vec![numeric::round(dtype, *x as f32)],
        TOp::Unary(u) => {
            let x = &args[0].data;
            par::collect(x.len(), |i| numeric::round(dtype, unary(*u, x[i])))
        }
        TOp::Binary(b) => binary(alu_op(*b), args[0], args[1], dtype, shape),
        TOp::Matmul => matmul(args[0], args[1], shape),
        TOp::Conv(attrs) => conv::conv(args[0], args[1], attrs, shape, |v| v),
        TOp::Reduce { func, axis, .. } => reduce(*func, args[0], *axis, dtype),
        TOp::Transpose(perm) => transpose(args[0], perm),
        TOp::Reshape => args[0].data.clone(),
        TOp::Tril { k, fill } => tril(args[0], *k, numeric::round(dtype, *fill as f32)),
        TOp::Cast => {
            let x = &args[0].data;
            par::collect(x.len(), |i| numeric::round(dtype, x[i]))
        }
        TOp::Slice(_) | TOp::Concat(_) | TOp::Pad { .. } | TOp::BroadcastTo => {
            let fill = match op {
                TOp::Pad { value, .. } => numeric::round(dtype, *value as f32),
                _ => 0.0,
            };
            let moved: Vec<(&[u64], &[f32])> = args
                .iter()
                .map(|a| (a.shape.as_slice(), a.data.as_slice()))
                .collect();
            movement::move_elems(op, &moved, shape, fill).unwrap_or_default()
        }
        TOp::Pool(p) => pool::eval(p, args[0], dtype, shape),
        TOp::Where
        | TOp::Arange
        | TOp::Take { .. }
        | TOp::ArgReduce { .. }
        | TOp::Cumsum { .. } => {
            unreachable!("v2::eval and scan::eval evaluate {op:?}")
        }
    };
    HostTensor {
        dtype,
        shape: shape.to_vec(),
        data,
        ints: Vec::new(),
    }
}

/// A unary operation in f32 (before rounding to the dtype).
pub fn unary(u: UnaryFn, x: f32) -> f32 {
    match act_func(u) {
        Some(a) => numeric::act(a, x),
        None if u == UnaryFn::Not => f32::from(u8::from(x == 0.0)),
        None => -x,
    }
}

/// The Scalar engine function of a unary operation; `None` for negation.
pub fn act_func(u: UnaryFn) -> Option<ActFunc> {
    Some(match u {
        UnaryFn::Neg => return None,
        UnaryFn::Exp => ActFunc::Exp,
        UnaryFn::Log => ActFunc::Log,
        UnaryFn::Sqrt => ActFunc::Sqrt,
        UnaryFn::Rsqrt => ActFunc::Rsqrt,
        UnaryFn::Reciprocal => ActFunc::Reciprocal,
        UnaryFn::Abs => ActFunc::Abs,
        UnaryFn::Square => ActFunc::Square,
        UnaryFn::Tanh => ActFunc::Tanh,
        UnaryFn::Sigmoid => ActFunc::Sigmoid,
        UnaryFn::Relu => ActFunc::Relu,
        UnaryFn::Silu => ActFunc::Silu,
        UnaryFn::Gelu => ActFunc::Gelu,
        UnaryFn::GeluTanh => ActFunc::GeluTanh,
        UnaryFn::Sin => ActFunc::Sin,
        UnaryFn::Cos => ActFunc::Cos,
        UnaryFn::Erf => ActFunc::Erf,
        UnaryFn::Floor => ActFunc::Floor,
        UnaryFn::Ceil => ActFunc::Ceil,
        UnaryFn::Round => ActFunc::Round,
        UnaryFn::Sign => ActFunc::Sign,
        UnaryFn::Softplus => ActFunc::Softplus,
        UnaryFn::Not => return None,
    })
}

/// The Vector engine operation of a binary operation (on floats and booleans; `i32`
/// operations are evaluated exactly by `v2.rs`).
pub fn alu_op(b: BinaryOp) -> AluOp {
    match b {
        BinaryOp::Add => AluOp::Add,
        BinaryOp::Sub => AluOp::Sub,
        BinaryOp::Mul => AluOp::Mul,
        BinaryOp::Div => AluOp::Div,
        BinaryOp::Maximum => AluOp::Max,
        BinaryOp::Minimum => AluOp::Min,
        BinaryOp::Pow => AluOp::Pow,
        BinaryOp::Lt => AluOp::IsLt,
        BinaryOp::Le => AluOp::IsLe,
        BinaryOp::Gt => AluOp::IsGt,
        BinaryOp::Ge => AluOp::IsGe,
        BinaryOp::Eq => AluOp::IsEq,
        BinaryOp::Ne => AluOp::IsNe,
        BinaryOp::And => AluOp::And,
        BinaryOp::Or => AluOp::Or,
    }
}

/// Row-major strides (in elements) of a shape.
fn strides(shape: &[u64]) -> Vec<usize> {
    let mut s = vec![1usize; shape.len()];
    for i in (0..shape.len().saturating_sub(1)).rev() {
        s[i] = s[i + 1] * shape[i + 1] as usize;
    }
    s
}

/// Strides of `shape` broadcast to `out` (0 on stretched and missing axes).
fn broadcast_strides(shape: &[u64], out: &[u64]) -> Vec<usize> {
    let own = strides(shape);
    let pad = out.len() - shape.len();
    (0..out.len())
        .map(|i| {
            if i < pad || shape[i - pad] == 1 {
                0
            } else {
                own[i - pad]
            }
        })
        .collect()
}

/// Calls `f(out_index, offsets)` for every element of `out` in row-major order, with the
/// offset of that element in each operand under the given strides.
fn for_each_index<const N: usize>(
    out: &[u64],
    operand_strides: [&[usize]; N],
    f: impl FnMut(usize, [usize; N]),
) {
    let total: u64 = out.iter().product();
    for_each_index_in(out, operand_strides, 0..total as usize, f);
}

/// [`for_each_index`] over the elements `range` of `out` (row-major flat indices) only.
fn for_each_index_in<const N: usize>(
    out: &[u64],
    operand_strides: [&[usize]; N],
    range: std::ops::Range<usize>,
    mut f: impl FnMut(usize, [usize; N]),
) {
    let rank = out.len();
    let mut idx = vec![0u64; rank];
    let mut offs = [0usize; N];
    // The multi-index and operand offsets of the range's first element.
    let mut rest = range.start;
    for d in (0..rank).rev() {
        let dim = out[d].max(1) as usize;
        idx[d] = (rest % dim) as u64;
        rest /= dim;
        for (o, s) in offs.iter_mut().zip(operand_strides.iter()) {
            *o += s[d] * idx[d] as usize;
        }
    }
    for flat in range {
        f(flat, offs);
        // Advance the multi-index and the operand offsets.
        let mut d = rank;
        while d > 0 {
            d -= 1;
            idx[d] += 1;
            for (o, s) in offs.iter_mut().zip(operand_strides.iter()) {
                *o += s[d];
            }
            if idx[d] < out[d] {
                break;
            }
            for (o, s) in offs.iter_mut().zip(operand_strides.iter()) {
                *o -= s[d] * out[d] as usize;
            }
            idx[d] = 0;
        }
    }
}

fn binary(op: AluOp, a: &HostTensor, b: &HostTensor, dtype: Dtype, shape: &[u64]) -> Vec<f32> {
    let sa = broadcast_strides(&a.shape, shape);
    let sb = broadcast_strides(&b.shape, shape);
    let mut out = vec![0f32; shape.iter().product::<u64>() as usize];
    par::chunks(&mut out, |start, part| {
        let range = start..start + part.len();
        for_each_index_in(shape, [&sa, &sb], range, |i, [ia, ib]| {
            part[i - start] = numeric::round(dtype, numeric::alu(op, a.data[ia], b.data[ib]));
        });
    });
    out
}

fn matmul(a: &HostTensor, b: &HostTensor, shape: &[u64]) -> Vec<f32> {
    use matmul::Operand::Values;
    matmul_of(&a.shape, Values(&a.data), &b.shape, Values(&b.data), shape)
}

/// The matmul of operands of shapes `a_shape` and `b_shape` whose values `a` and `b` may
/// be derived from stored ones as they are packed (`matmul::Operand`), with NumPy's
/// broadcasting of the batch axes to the result's `shape`.
fn matmul_of(
    a_shape: &[u64],
    a: matmul::Operand,
    b_shape: &[u64],
    b: matmul::Operand,
    shape: &[u64],
) -> Vec<f32> {
    let rank = shape.len();
    let (m, n) = (shape[rank - 2] as usize, shape[rank - 1] as usize);
    let k = a_shape[a_shape.len() - 1] as usize;
    let batch = &shape[..rank - 2];
    // Batch offsets (in matrices) of each operand, broadcast to the output's batch axes.
    let sa = broadcast_strides(&a_shape[..a_shape.len() - 2], batch);
    let sb = broadcast_strides(&b_shape[..b_shape.len() - 2], batch);
    let mut out = vec![0f32; shape.iter().product::<u64>() as usize];
    // The blocked kernel (`matmul.rs`) keeps the language's order (the module comment)
    // exactly, whatever the instruction set and thread count.
    let (simd, threads) = (matmul::Simd::best(), matmul::threads());
    for_each_index(batch, [&sa, &sb], |bi, [ia, ib]| {
        let am = a.slice(ia * m * k..(ia + 1) * m * k);
        let bm = b.slice(ib * k * n..(ib + 1) * k * n);
        let om = &mut out[bi * m * n..(bi + 1) * m * n];
        matmul::matmul_of(simd, threads, m, k, n, am, bm, om);
    });
    out
}

fn reduce(func: ReduceFn, a: &HostTensor, axis: usize, dtype: Dtype) -> Vec<f32> {
    let outer: u64 = a.shape[..axis].iter().product();
    let len = a.shape[axis] as usize;
    let inner: u64 = a.shape[axis + 1..].iter().product();
    let (outer, inner) = (outer as usize, inner as usize);
    let op = match func {
        ReduceFn::Sum | ReduceFn::Mean => AluOp::Add,
        ReduceFn::Max => AluOp::Max,
        ReduceFn::Min => AluOp::Min,
    };
    // Each output element is one sequential fold along the axis, whichever thread runs it.
    par::collect(outer * inner, |oi| {
        let (o, i) = (oi / inner, oi % inner);
        let at = |j: usize| a.data[(o * len + j) * inner + i];
        let mut acc = at(0);
        for j in 1..len {
            acc = numeric::alu(op, acc, at(j));
        }
        if func == ReduceFn::Mean {
            acc /= len as f32;
        }
        numeric::round(dtype, acc)
    })
}

fn transpose(a: &HostTensor, perm: &[usize]) -> Vec<f32> {
    let out_shape: Vec<u64> = perm.iter().map(|&p| a.shape[p]).collect();
    let own = strides(&a.shape);
    let s: Vec<usize> = perm.iter().map(|&p| own[p]).collect();
    let mut out = vec![0f32; a.data.len()];
    par::chunks(&mut out, |start, part| {
        let range = start..start + part.len();
        for_each_index_in(&out_shape, [&s], range, |i, [ia]| {
            part[i - start] = a.data[ia]
        });
    });
    out
}

fn tril(a: &HostTensor, k: i64, fill: f32) -> Vec<f32> {
    let rank = a.shape.len();
    let (rows, cols) = (a.shape[rank - 2] as usize, a.shape[rank - 1] as usize);
    par::collect(a.data.len(), |idx| {
        let j = (idx % cols) as i64;
        let i = ((idx / cols) % rows) as i64;
        // Saturating: k may be any i64 (near i64::MAX every element is kept).
        if j > i.saturating_add(k) {
            fill
        } else {
            a.data[idx]
        }
    })
}
