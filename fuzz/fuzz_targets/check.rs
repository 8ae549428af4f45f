//! Fuzz target `check`: source text -> parse -> check, on arbitrary bytes.
//!
//! The body lives in the library (`tessera::frontend::fuzz_check`) so that a plain test,
//! `tests/check_fuzz_corpus.rs`, runs the same code over the seed corpus on stable.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    tessera::frontend::fuzz_check(data);
});
