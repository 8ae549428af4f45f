//! Tessera: a tensor-kernel compiler for a Trainium-like accelerator.
//!
//! The pipeline is: source text -> `frontend` (lexer, parser, checker) -> checked kernel ->
//! `ir` (tensor IR, lowered, verified) -> passes -> backend (ISA program). The `reference`
//! evaluator runs tensor IR on the host and is the oracle of every test.

pub mod backend;
pub mod diagnostic;
pub mod driver;
pub mod frontend;
pub mod ir;
pub mod passes;
pub mod profile;
pub mod reference;
pub mod roofline;
pub mod tile;
