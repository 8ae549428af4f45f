//! Tessera's runtime: a bit-exact interpreter and timing model of the Trainium-like
//! machine, and the API to embed it (load a `.tbin`, bind inputs, run, read outputs).
//!
//! Modules: [`config`] (machine parameters and limits), `memory` (HBM, SBUF and PSUM as
//! bounds-checked byte arrays), `exec` (the semantics of each opcode), [`kernels`] (the
//! matmul micro-kernel and its helper thread, public so that tests can compare its paths),
//! `timing` (the event-driven timing model that drives execution), [`report`] (what a run
//! reports), [`machine`] (the embedding API), `race` (the race detector and the PSUM
//! accumulation-group check), [`trace`] (the timeline as Chrome trace-event JSON),
//! [`error`], and [`numeric`] (the number formats and arithmetic shared with the
//! compiler's reference evaluator) and [`npy`] (`.npy` files).
//!
//! Architecture invariant: this crate depends only on `isa` and small utility crates.

pub mod config;
pub mod error;
mod exec;
pub mod kernels;
pub mod machine;
mod memory;
pub mod npy;
pub mod numeric;
mod prefault;
mod race;
pub mod report;
mod timing;
pub mod trace;

pub use config::{Limits, MachineConfig, PeRate, Timing};
pub use error::{At, BlockedWait, RuntimeError};
pub use machine::{run_program, Loaded, Machine, RunResult};
pub use report::{EngineStats, Event, Report};
pub use timing::compute_cost;
