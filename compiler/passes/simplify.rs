//! Algebraic simplification of tensor IR, exact in every case (results are bit-identical):
//! - a cast to the dtype the value already has is dropped;
//! - `a * a` becomes `square(a)` (the product of an f32 with itself is the f32 square, and
//!   `square` runs on the Scalar engine, where it can also produce a row sum for free).

use crate::ir::{BinaryOp, Function, TOp, UnaryFn, Value};
use std::collections::HashMap;

/// Simplifies `func` in place; returns whether anything changed.
pub fn run(func: &mut Function) -> bool {
    let mut changed = false;
    let mut replace: HashMap<Value, Value> = HashMap::new();
    let layout = func.layout.clone();
    let mut keep = Vec::with_capacity(layout.len());
    for inst in layout {
        // Rewrite arguments replaced by earlier simplifications.
        let data = &mut func.insts[inst];
        for a in data.args.iter_mut() {
            if let Some(r) = replace.get(a) {
                *a = *r;
            }
        }
        let result = data.result;
        match data.op {
            TOp::Cast if func.values[data.args[0]].ty.dtype == func.values[result].ty.dtype => {
                replace.insert(result, data.args[0]);
                changed = true;
                continue;
            }
            // `square` is a float function; an `i32` product stays a (wrapping) product.
            TOp::Binary(BinaryOp::Mul)
                if data.args[0] == data.args[1] && func.values[result].ty.dtype.is_float() =>
            {
                data.op = TOp::Unary(UnaryFn::Square);
                data.args.truncate(1);
                changed = true;
            }
            _ => {}
        }
        keep.push(inst);
    }
    func.layout = keep;
    for r in func.results.iter_mut() {
        if let Some(v) = replace.get(r) {
            *r = *v;
        }
    }
    changed
}
