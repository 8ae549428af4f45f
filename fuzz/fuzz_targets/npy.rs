//! Fuzz target `npy`: bytes -> runtime::npy::read_npy.
//!
//! The body lives in `fuzz/bodies/`, shared with the plain test
//! `tests/robustness_fuzz_corpus.rs`, which runs it over the seed corpus on stable.

#![no_main]

#[path = "../bodies/npy.rs"]
mod npy;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    npy::fuzz_npy(data);
});
