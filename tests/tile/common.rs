//! Helpers shared by the `tile_*` tests: reading the tile IR test files, and pushing a tile
//! function through the passes after `tile` (engines, alloc, sync, emit) with the
//! verifier of each stage run after every pass, as the pipeline does in debug builds.

#![allow(dead_code)]

use tessera::ir::Function;
use tessera::passes::{self, Compilation, PassOptions};
use tessera::tile::{self, TileFunc};

/// The text of `tests/tile/NAME`.
pub fn read(name: &str) -> String {
    let path = format!("{}/tests/tile/{name}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("cannot read {path}: {e}"))
}

/// Parses `tests/tile/NAME`, failing the test with the parse error.
pub fn parse_file(name: &str) -> TileFunc {
    tile::parse(&read(name)).unwrap_or_else(|e| panic!("{name}:{e}"))
}

/// A compilation whose current stage is `func`.
pub fn compilation(func: TileFunc) -> Compilation {
    let mut c = Compilation::new(Function::new(&func.name), PassOptions::default());
    c.tile = Some(func);
    c
}

/// Runs one pass by name and the verifier after it.
pub fn run_pass(c: &mut Compilation, name: &str) {
    let pass = passes::find(name).unwrap_or_else(|| panic!("no pass `{name}`"));
    (pass.run)(c).unwrap_or_else(|e| panic!("pass {name} failed: {e}"));
    if let Err(e) = c.verify(name) {
        panic!("verifier after {name}: {e}");
    }
}

/// Runs engines (unless `balance` is false), alloc, sync and emit on `func`.
pub fn compile(func: TileFunc, balance: bool) -> Compilation {
    let mut c = compilation(func);
    let names: &[&str] = if balance {
        &["engines", "alloc", "sync", "emit"]
    } else {
        &["alloc", "sync", "emit"]
    };
    for name in names {
        run_pass(&mut c, name);
    }
    c
}

/// The `i`-th deterministic test value, a multiple of 1/64 in [-2, 2) (exact in bf16).
pub fn value(i: usize) -> f32 {
    ((i.wrapping_mul(2_654_435_761) >> 7) % 255) as f32 / 64.0 - 2.0
}
