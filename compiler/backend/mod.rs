//! The backend: turns allocated, synchronised tile IR into an `isa::Program`.
//!
//! Emission is the last step of the pipeline (the `emit` pass). It adds placements to the
//! buffer-relative access patterns, attaches the semaphores of the sync side table, builds
//! the HBM tensor table, and records source locations; the ISA verifier then checks the
//! result like any other program.

pub mod emit;

pub use emit::emit;
