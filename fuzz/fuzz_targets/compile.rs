//! Fuzz target `compile`: source text -> the whole compile pipeline -> verifier and a limited run.
//!
//! The body lives in `fuzz/bodies/`, shared with the plain test
//! `tests/robustness_fuzz_corpus.rs`, which runs it over the seed corpus on stable.

#![no_main]

#[path = "../bodies/compile.rs"]
mod compile;
#[path = "../bodies/limits.rs"]
mod limits;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    compile::fuzz_compile(data);
});
