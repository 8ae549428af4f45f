//! Tensor IR: one kernel as a list of whole-tensor operations in SSA form.
//!
//! Values (`v0`, `v1`, ..) and instructions (`inst0`, ..) are cranelift-entity handles into
//! arenas; the order of instructions is kept apart from their data (`layout`), so passes
//! can insert and unlink without renumbering. Source spans live in a side table
//! (`spans`), not in the instruction data. The IR prints to text (`print.rs`) and parses
//! back (`parse.rs`); `verify.rs` checks its invariants and is run after lowering and after
//! every pass.
//!
//! Architecture invariant: tensor IR knows nothing of tiles, memories or engines; shapes
//! are concrete and dtypes are those of the language.

mod lower;
mod parse;
mod print;
pub mod rules;
mod verify;

use cranelift_entity::{entity_impl, PrimaryMap, SecondaryMap};
use smallvec::SmallVec;

pub use crate::frontend::pool::{Pool, PoolKind};
pub use crate::frontend::typed::{
    BinaryOp, ConvAttrs, ReduceFn, SliceAxis, Span, TensorType, UnaryFn,
};
pub use lower::lower;
pub use parse::{parse, ParseError};
pub use print::pool_attrs;
pub use verify::{verify, InternalError, VerifierError};

/// An SSA value: a kernel parameter or an instruction's result.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Value(u32);
entity_impl!(Value, "v");

/// An instruction.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Inst(u32);
entity_impl!(Inst, "inst");

/// Where a value comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ValueDef {
    /// The i-th kernel parameter.
    Param(usize),
    /// The result of an instruction.
    Inst(Inst),
}

/// The type and origin of a value.
#[derive(Clone, Debug, PartialEq)]
pub struct ValueData {
    pub ty: TensorType,
    pub def: ValueDef,
}

/// The operation of an instruction, with its attributes.
#[derive(Clone, Debug, PartialEq)]
pub enum TOp {
    /// A rank-0 constant of the result's dtype (the value is already rounded to it).
    Const(f64),
    Unary(UnaryFn),
    /// NumPy broadcasting of the two arguments.
    Binary(BinaryOp),
    /// NumPy matmul with batch broadcast; f32 result.
    Matmul,
    Reduce {
        func: ReduceFn,
        axis: usize,
        keepdims: bool,
    },
    /// `argmax` (`max`) or `argmin` over `axis`: the `i32` position of the first largest
    /// (smallest) element, NaN counting as the largest (smallest).
    ArgReduce {
        max: bool,
        axis: usize,
        keepdims: bool,
    },
    /// Inclusive prefix sum along `axis`, accumulated in f32 (wrapping for `i32`) in index
    /// order, each element rounded to the dtype.
    Cumsum {
        axis: usize,
    },
    /// Output axis i is input axis `perm[i]`.
    Transpose(Vec<usize>),
    /// Row-major reshape to the result's shape.
    Reshape,
    /// Keeps (.., i, j) where j <= i + k over the last two axes, else `fill`.
    Tril {
        k: i64,
        fill: f64,
    },
    /// Conversion to the result's dtype.
    Cast,
    /// Indexing and slicing: one entry per argument axis; the result's dims give the
    /// element counts of the kept axes (a dropped axis takes one element).
    Slice(Vec<SliceAxis>),
    /// Joins the arguments (one or more, all of the result's dtype) along `axis`.
    Concat(usize),
    /// Pads each axis with `before[i]` and `after[i]` elements of `value` (already rounded
    /// to the dtype).
    Pad {
        before: Vec<u64>,
        after: Vec<u64>,
        value: f64,
    },
    /// NumPy `broadcast_to` the result's shape.
    BroadcastTo,
    /// `where(c, a, b)`: NumPy broadcasting of the three arguments; `c` is `bool`.
    Where,
    /// The `i32[n]` vector `0, 1, .., n - 1` (n is the result's length).
    Arange,
    /// NumPy `take(x, idx, axis)` with `i32` indices; an index outside `[-n, n)` is a
    /// run-time error.
    Take {
        axis: usize,
    },
    /// `conv(x, w)`: PyTorch's 1-D or 2-D convolution; f32 result, accumulated in f32 over
    /// the taps in row-major order, then the channels of the group (docs/language.md).
    Conv(ConvAttrs),
    /// `max_pool` or `avg_pool` over the spatial axes of `[N, C, L]` or `[N, C, H, W]`
    /// (PyTorch's, `frontend/pool.rs`); the result keeps the argument's dtype.
    Pool(Pool),
}

impl TOp {
    /// The number of arguments the operation takes; `None` for any number from one
    /// (`concat`).
    pub fn arity(&self) -> Option<usize> {
        match self {
            TOp::Const(_) | TOp::Arange => Some(0),
            TOp::Binary(_) | TOp::Matmul | TOp::Take { .. } | TOp::Conv(_) => Some(2),
            TOp::Where => Some(3),
            TOp::Concat(_) => None,
            _ => Some(1),
        }
    }

    /// True for the operations that only move data (`transpose`, `reshape`, slices,
    /// `concat`, `pad`, `broadcast_to`): each result element is one argument element or
    /// the pad value, bit for bit.
    pub fn is_data_movement(&self) -> bool {
        matches!(
            self,
            TOp::Transpose(_)
                | TOp::Reshape
                | TOp::Slice(_)
                | TOp::Concat(_)
                | TOp::Pad { .. }
                | TOp::BroadcastTo
        )
    }
}

/// An instruction: an operation, its arguments and its one result.
#[derive(Clone, Debug, PartialEq)]
pub struct InstData {
    pub op: TOp,
    pub args: SmallVec<[Value; 2]>,
    pub result: Value,
}

/// A kernel in tensor IR.
#[derive(Clone, Debug, Default)]
pub struct Function {
    pub name: String,
    /// Bound sizes, for the reader; nothing depends on them.
    pub sizes: Vec<(String, u64)>,
    /// Parameter names and values, in signature order.
    pub params: Vec<(String, Value)>,
    /// Returned values, in result order.
    pub results: Vec<Value>,
    pub values: PrimaryMap<Value, ValueData>,
    pub insts: PrimaryMap<Inst, InstData>,
    /// Execution order of the instructions.
    pub layout: Vec<Inst>,
    /// Source span of each instruction (side table).
    pub spans: SecondaryMap<Inst, Span>,
    /// Source span of each parameter, by position.
    pub param_spans: Vec<Span>,
}

impl Function {
    /// An empty function.
    pub fn new(name: &str) -> Function {
        Function {
            name: name.to_string(),
            ..Function::default()
        }
    }

    /// Adds a parameter and returns its value.
    pub fn add_param(&mut self, name: &str, ty: TensorType, span: Span) -> Value {
        let index = self.params.len();
        let v = self.values.push(ValueData {
            ty,
            def: ValueDef::Param(index),
        });
        self.params.push((name.to_string(), v));
        self.param_spans.push(span);
        v
    }

    /// Appends an instruction whose result has type `ty`; returns the result.
    pub fn push(&mut self, op: TOp, args: &[Value], ty: TensorType, span: Span) -> Value {
        let inst = self.insts.next_key();
        let result = self.values.push(ValueData {
            ty,
            def: ValueDef::Inst(inst),
        });
        let inst2 = self.insts.push(InstData {
            op,
            args: args.iter().copied().collect(),
            result,
        });
        debug_assert_eq!(inst, inst2);
        self.layout.push(inst);
        self.spans[inst] = span;
        result
    }

    /// Renumbers values and instructions densely in the order they are defined (parameters,
    /// then the layout), dropping those no longer in the layout. The printer prints the
    /// numbers it finds and the parser numbers in text order, so after a pass that deletes
    /// or inserts instructions (`simplify`, `dce`) this keeps `parse(print(f))` printing as
    /// `f` does. IR that uses a value before defining it is left as it is, for the verifier
    /// to report.
    pub fn compact(&mut self) {
        self.compact_mapped();
    }

    /// [`Function::compact`], returning where each old value went (`None`: dropped), or
    /// `None` when the function was left as it is (a value used before its definition).
    pub fn compact_mapped(&mut self) -> Option<SecondaryMap<Value, Option<Value>>> {
        let mut new = Function {
            name: self.name.clone(),
            sizes: self.sizes.clone(),
            param_spans: self.param_spans.clone(),
            ..Function::default()
        };
        let mut map: SecondaryMap<Value, Option<Value>> = SecondaryMap::new();
        for (i, (name, v)) in self.params.iter().enumerate() {
            let nv = new.values.push(ValueData {
                ty: self.values[*v].ty.clone(),
                def: ValueDef::Param(i),
            });
            new.params.push((name.clone(), nv));
            map[*v] = Some(nv);
        }
        for &inst in &self.layout {
            let data = &self.insts[inst];
            let args = data.args.iter().map(|a| map[*a]).collect::<Option<_>>()?;
            let ni = new.insts.next_key();
            let result = new.values.push(ValueData {
                ty: self.values[data.result].ty.clone(),
                def: ValueDef::Inst(ni),
            });
            new.insts.push(InstData {
                op: data.op.clone(),
                args,
                result,
            });
            new.layout.push(ni);
            new.spans[ni] = self.spans[inst];
            map[data.result] = Some(result);
        }
        let results = self
            .results
            .iter()
            .map(|r| map[*r])
            .collect::<Option<_>>()?;
        new.results = results;
        *self = new;
        Some(map)
    }

    /// The type of a value.
    pub fn ty(&self, v: Value) -> &TensorType {
        &self.values[v].ty
    }

    /// The types of the results, in order.
    pub fn result_types(&self) -> Vec<TensorType> {
        self.results.iter().map(|&v| self.ty(v).clone()).collect()
    }
}
