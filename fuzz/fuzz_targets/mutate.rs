//! Fuzz target `mutate`: a generated valid program with one field mutated -> verify -> a limited run.
//!
//! The body lives in `fuzz/bodies/`, shared with the plain test
//! `tests/robustness_fuzz_corpus.rs`, which runs it over the seed corpus on stable.

#![no_main]

#[path = "../bodies/limits.rs"]
mod limits;
#[path = "../bodies/mutate.rs"]
mod mutate;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    mutate::fuzz_mutate(data);
});
