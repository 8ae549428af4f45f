//! The tensor IR verifier: every value defined once before its use, every instruction's
//! types consistent with its operation's rule (`rules.rs`), results consistent with the
//! signature. It collects every error; a failure is an internal compiler error (a bug in
//! lowering or a pass), reported with the pass name and the whole IR, never a user error.

use super::{rules, Function, Inst, ValueDef};
use crate::frontend::check::MAX_RANK;
use cranelift_entity::EntitySet;
use std::fmt;

/// One broken invariant, at an instruction when it has one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VerifierError {
    pub inst: Option<Inst>,
    pub message: String,
}

impl fmt::Display for VerifierError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.inst {
            Some(i) => write!(f, "{i}: {}", self.message),
            None => f.write_str(&self.message),
        }
    }
}

/// An internal compiler error: the IR after `pass` broke an invariant. Its text carries
/// the pass name, every error and the IR.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("internal compiler error: the IR after pass `{pass}` does not verify\n{}\n{ir}", errors.iter().map(|e| format!("  error: {e}")).collect::<Vec<_>>().join("\n"))]
pub struct InternalError {
    pub pass: String,
    pub errors: Vec<VerifierError>,
    pub ir: String,
}

/// Verifies a function; `pass` names the stage that produced it, for the error.
pub fn verify(func: &Function, pass: &str) -> Result<(), InternalError> {
    let errors = collect_errors(func);
    if errors.is_empty() {
        Ok(())
    } else {
        Err(InternalError {
            pass: pass.to_string(),
            errors,
            ir: func.to_string(),
        })
    }
}

/// What is wrong with a type whose dims or element count pass the language's limit
/// (2^48, as the checker enforces on source): the later passes multiply them freely.
fn too_large(ty: &crate::frontend::typed::TensorType) -> Option<String> {
    let limit = crate::frontend::check::MAX_ELEMS;
    if ty.shape.iter().any(|&d| d > limit) || ty.elems() > limit {
        Some(format!("has type {ty}, more than 2^48 = {limit} elements"))
    } else {
        None
    }
}

fn collect_errors(func: &Function) -> Vec<VerifierError> {
    let mut errors = Vec::new();
    let mut err =
        |inst: Option<Inst>, message: String| errors.push(VerifierError { inst, message });
    let mut defined = EntitySet::new();
    for (i, (_, v)) in func.params.iter().enumerate() {
        match func.values.get(*v) {
            Some(data) if data.def == ValueDef::Param(i) => {
                if !(1..=MAX_RANK).contains(&data.ty.shape.len()) {
                    err(
                        None,
                        format!("parameter {v} has rank {}", data.ty.shape.len()),
                    );
                }
                if let Some(m) = too_large(&data.ty) {
                    err(None, format!("parameter {v} {m}"));
                }
                defined.insert(*v);
            }
            _ => err(
                None,
                format!("parameter {i} is not defined as parameter {v}"),
            ),
        }
    }
    let mut placed = EntitySet::new();
    for &inst in &func.layout {
        let Some(data) = func.insts.get(inst) else {
            err(Some(inst), "is in the layout but does not exist".into());
            continue;
        };
        if !placed.insert(inst) {
            err(Some(inst), "appears twice in the layout".into());
        }
        let mut ok = true;
        for a in &data.args {
            if !func.values.is_valid(*a) || !defined.contains(*a) {
                err(Some(inst), format!("uses {a} before it is defined"));
                ok = false;
            }
        }
        if !func.values.is_valid(data.result) {
            err(Some(inst), format!("result {} does not exist", data.result));
            continue;
        }
        if func.values[data.result].def != ValueDef::Inst(inst) {
            err(
                Some(inst),
                format!("result {} is not defined by it", data.result),
            );
        }
        if !defined.insert(data.result) {
            err(Some(inst), format!("defines {} a second time", data.result));
        }
        if let Some(m) = too_large(func.ty(data.result)) {
            err(Some(inst), format!("result {} {m}", data.result));
            ok = false;
        }
        if ok {
            let args: Vec<_> = data.args.iter().map(|a| func.ty(*a)).collect();
            if let Err(m) = rules::check(&data.op, &args, func.ty(data.result)) {
                err(Some(inst), m);
            }
        }
    }
    if func.results.is_empty() {
        err(None, "the kernel returns nothing".into());
    }
    for r in &func.results {
        if !func.values.is_valid(*r) || !defined.contains(*r) {
            err(None, format!("returns {r}, which is not defined"));
        } else if !(1..=MAX_RANK).contains(&func.ty(*r).shape.len()) {
            err(
                None,
                format!("returns {r} of rank {}", func.ty(*r).shape.len()),
            );
        }
    }
    errors
}
