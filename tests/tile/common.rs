//! Helpers shared by the `tile_*` tests: reading the tile IR test files, and pushing a tile
//! function through the passes after `tile` (engines, alloc, sync, emit) with the
//! verifier of each stage run after every pass, as the pipeline does in debug builds.

#![allow(dead_code)]

use isa::{DmaAp, Dtype, Engine, HbmAp, Mem, Op, Role, TileAp};
use tessera::frontend::typed::Span;
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

/// The synthetic matmul `c[M, N] = a[M, K] @ b[K, N]` tiled 128 x 256 x 128.
pub fn synthetic(m: u64, n: u64, k: u64) -> TileFunc {
    let mut f = TileFunc::new("big_matmul");
    let a = f.hbm("a", Role::Input, Dtype::Bf16, &[m, k]);
    let b = f.hbm("b", Role::Input, Dtype::Bf16, &[k, n]);
    let c = f.hbm("c", Role::Output, Dtype::F32, &[m, n]);
    let span = Span::new(0, 1);
    let tile =
        |mem, dtype, parts: u8, elems: u32| TileAp::new(mem, dtype, 0, parts, 0, &[(elems, 1)]);
    for mb in 0..m / 128 {
        for nb in 0..n / 256 {
            let acc = f.psum(Dtype::F32, 128, 256);
            for kb in 0..k / 128 {
                // A^T tile [128 k, 128 m] straight from HBM: k along partitions.
                let at = f.sbuf(Dtype::Bf16, 128, 128);
                let src = HbmAp::new(
                    Dtype::Bf16,
                    (mb * 128 * k + kb * 128) * 2,
                    &[(128, 1), (128, k as i64)],
                );
                f.push(
                    Op::Dma {
                        dst: DmaAp::Tile(tile(Mem::Sbuf, Dtype::Bf16, 128, 128)),
                        src: DmaAp::Hbm(src),
                    },
                    Engine::Dma(0),
                    &[at, a],
                    span,
                );
                let bt = f.sbuf(Dtype::Bf16, 128, 256);
                let src = HbmAp::new(
                    Dtype::Bf16,
                    (kb * 128 * n + nb * 256) * 2,
                    &[(128, n as i64), (256, 1)],
                );
                f.push(
                    Op::Dma {
                        dst: DmaAp::Tile(tile(Mem::Sbuf, Dtype::Bf16, 128, 256)),
                        src: DmaAp::Hbm(src),
                    },
                    Engine::Dma(0),
                    &[bt, b],
                    span,
                );
                f.push(
                    Op::Matmul {
                        out: tile(Mem::Psum, Dtype::F32, 128, 256),
                        stationary: tile(Mem::Sbuf, Dtype::Bf16, 128, 128),
                        moving: tile(Mem::Sbuf, Dtype::Bf16, 128, 256),
                        accumulate: kb > 0,
                    },
                    Engine::Tensor,
                    &[acc, at, bt],
                    span,
                );
            }
            let out = f.sbuf(Dtype::F32, 128, 256);
            f.push(
                Op::TensorCopy {
                    out: tile(Mem::Sbuf, Dtype::F32, 128, 256),
                    src: tile(Mem::Psum, Dtype::F32, 128, 256),
                },
                Engine::Vector,
                &[out, acc],
                span,
            );
            let dst = HbmAp::new(
                Dtype::F32,
                (mb * 128 * n + nb * 256) * 4,
                &[(128, n as i64), (256, 1)],
            );
            f.push(
                Op::Dma {
                    dst: DmaAp::Hbm(dst),
                    src: DmaAp::Tile(tile(Mem::Sbuf, Dtype::F32, 128, 256)),
                },
                Engine::Dma(0),
                &[c, out],
                span,
            );
        }
    }
    f
}
