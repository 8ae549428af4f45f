//! Fuzz target `tbin`: bytes -> decode_program -> verify -> a run with small limits.
//!
//! The body lives in `fuzz/bodies/`, shared with the plain test
//! `tests/robustness_fuzz_corpus.rs`, which runs it over the seed corpus on stable.

#![no_main]

#[path = "../bodies/limits.rs"]
mod limits;
#[path = "../bodies/tbin.rs"]
mod tbin;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    tbin::fuzz_tbin(data);
});
