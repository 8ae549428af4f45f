//! The pass pipeline: every pass is a plain function, listed once in [`PIPELINE`] in the
//! order it runs. `--dump-after`, `--disable-pass` and `--list-passes` read this list, and
//! the verifier of the current stage runs after every pass in tests and debug builds.
//!
//! A compilation moves through three stages: tensor IR (`ir`), tile IR (`tile`) and the
//! ISA program. [`Compilation`] holds whichever is current; each pass names the stage it
//! leaves behind. Ordering constraints are written next to each entry.

pub mod alloc;
pub mod attention;
pub mod canonicalize;
pub mod conv;
mod dce;
pub mod engines;
pub mod fusion;
pub mod layout;
mod pipeline;
mod refold;
mod row_merge;
mod schedule;
mod simplify;
pub mod support;
pub mod sync;
pub mod tiling;

use crate::ir::{self, Function};
use crate::tile::{self, TileFunc};

/// A compilation in progress.
#[derive(Clone, Debug)]
pub struct Compilation {
    /// The tensor IR (kept after tiling, for the reference and for error spans).
    pub tensor: Function,
    /// The tensor IR as written, when `canonicalize` made a rewrite that changes rounding:
    /// the program the reference evaluates ([`Compilation::reference`]).
    pub original: Option<canonicalize::Original>,
    /// The grouping chosen by the `fusion` pass (none: one group per instruction).
    pub groups: Option<fusion::Grouping>,
    /// The layout chosen by the `layout` pass (none: `tile` uses the unoptimised plan).
    pub layout: Option<layout::Layout>,
    /// The tile IR, once the `tile` pass has run.
    pub tile: Option<TileFunc>,
    /// The program, once `emit` has run.
    pub program: Option<isa::Program>,
    /// The convolutions of one group the `conv` pass rewrote, each with its matmul, for
    /// the tile pass's implicit GEMM (`tiling/conv.rs`).
    pub convs: Vec<conv::Implicit>,
    /// The depthwise convolutions the `conv` pass rewrote, for the tile pass's lowering
    /// on Vector, GpSimd and Scalar (`tiling/depthwise.rs`).
    pub depthwise: Vec<conv::Depthwise>,
    /// The options that passes read.
    pub options: PassOptions,
    /// The source file's name and text, so emission can turn spans into line:col.
    pub source: Option<(String, String)>,
}

/// Knobs that passes read. Defaults are the machine's.
#[derive(Clone, Debug)]
pub struct PassOptions {
    /// The machine preset compiled for.
    pub preset: isa::Preset,
    /// Keep every intermediate at its language dtype (`--dtype-policy strict`).
    pub strict_dtypes: bool,
    /// Names of disabled optimising passes (passes may consult it for sub-features).
    pub disabled: Vec<String>,
    /// A miscompile to inject on purpose, so that tests can prove the verifiers and
    /// `run --check` catch it (`tests/check_mutations.rs`). Never set by the CLI.
    #[doc(hidden)]
    pub mutation: Option<Mutation>,
}

/// The miscompiles [`PassOptions::mutation`] injects.
#[doc(hidden)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mutation {
    /// Flash attention leaves out the rescale of its output accumulator when the running
    /// maximum grows.
    DropRescale,
    /// `tile` emits attention groups before every other group, as `fusion` once did: the
    /// group computing `v` comes after the attention that reads it.
    AttentionFirst,
}

impl Default for PassOptions {
    fn default() -> Self {
        PassOptions {
            preset: isa::Preset::Default,
            strict_dtypes: false,
            disabled: Vec::new(),
            mutation: None,
        }
    }
}

impl PassOptions {
    /// True unless the pass of that name was disabled.
    pub fn enabled(&self, name: &str) -> bool {
        !self.disabled.iter().any(|d| d == name)
    }
}

/// Which IR a pass leaves behind.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stage {
    Tensor,
    Tile,
    Program,
}

/// What a pass runs: returns whether it changed anything, or an internal error.
pub type PassFn = fn(&mut Compilation) -> Result<bool, String>;

/// One pass of the pipeline.
pub struct Pass {
    /// The name used by `--dump-after`, `--disable-pass` and in internal errors.
    pub name: &'static str,
    /// What it does, for `--list-passes`.
    pub summary: &'static str,
    /// Optimising passes may be switched off; the others are needed for correctness.
    pub optimising: bool,
    /// The stage the pass leaves.
    pub stage: Stage,
    pub run: PassFn,
}

/// Each tensor-IR pass that deletes or inserts instructions leaves the function compactly
/// numbered (`Function::compact`), so its dump parses back to the same text.
fn dce_pass(c: &mut Compilation) -> Result<bool, String> {
    let changed = dce::run(&mut c.tensor);
    if changed {
        c.tensor.compact();
    }
    Ok(changed)
}

fn simplify_pass(c: &mut Compilation) -> Result<bool, String> {
    let changed = simplify::run(&mut c.tensor);
    if changed {
        c.tensor.compact();
    }
    Ok(changed)
}

fn refold_pass(c: &mut Compilation) -> Result<bool, String> {
    let changed = refold::run(&mut c.tensor);
    if changed {
        c.tensor.compact();
    }
    Ok(changed)
}

/// Canonicalisation changes rounding (within docs/numerics.md's bound), so it makes no
/// rewrite under `--dtype-policy strict`, and it keeps the IR as written for the reference.
fn canonicalize_pass(c: &mut Compilation) -> Result<bool, String> {
    if c.options.strict_dtypes {
        return Ok(false);
    }
    match canonicalize::run(&mut c.tensor) {
        Some(original) => {
            if c.original.is_some() {
                return Err("canonicalize ran twice".into());
            }
            c.original = Some(original);
            Ok(true)
        }
        None => Ok(false),
    }
}

/// Rewrites convolutions into matmuls over window matrices (`conv.rs`), exactly. The
/// reference keeps evaluating the `conv` as written: the program before the rewrite
/// becomes (or stays) `Compilation::original`, with the value map composed.
fn conv_pass(c: &mut Compilation) -> Result<bool, String> {
    let before = c.tensor.clone();
    let mut convs = Vec::new();
    let mut depthwise = Vec::new();
    if !conv::run_recording(&mut c.tensor, &mut convs, &mut depthwise)? {
        return Ok(false);
    }
    let map = c
        .tensor
        .compact_mapped()
        .ok_or("the conv rewrite left a value used before its definition")?;
    // The recorded values, renumbered; a convolution whose matmul did not survive (none
    // does not today) is simply computed through its window matrix.
    c.convs = convs
        .into_iter()
        .filter_map(|r| {
            Some(conv::Implicit {
                matmul: map[r.matmul]?,
                x: map[r.x]?,
                w: map[r.w]?,
                attrs: r.attrs,
            })
        })
        .collect();
    c.depthwise = depthwise
        .into_iter()
        .filter_map(|r| {
            Some(conv::Depthwise {
                out: map[r.out]?,
                x: map[r.x]?,
                w: map[r.w]?,
                attrs: r.attrs,
            })
        })
        .collect();
    let mut to_before: cranelift_entity::SecondaryMap<ir::Value, Option<ir::Value>> =
        cranelift_entity::SecondaryMap::new();
    for (old, new) in map.iter() {
        if let Some(new) = new {
            to_before[*new] = Some(old);
        }
    }
    c.original = Some(match c.original.take() {
        None => canonicalize::Original {
            func: before,
            to_original: to_before,
            relaxed: Vec::new(),
        },
        Some(o) => {
            let mut to_original = cranelift_entity::SecondaryMap::new();
            for (new, old) in to_before.iter() {
                to_original[new] = old.and_then(|v| o.to_original[v]);
            }
            canonicalize::Original {
                func: o.func,
                to_original,
                relaxed: o.relaxed,
            }
        }
    });
    Ok(true)
}

fn fusion_pass(c: &mut Compilation) -> Result<bool, String> {
    c.groups = Some(fusion::group(&c.tensor, true, c.options.strict_dtypes)?);
    Ok(true)
}

fn tile_pass(c: &mut Compilation) -> Result<bool, String> {
    c.tile = Some(tiling::lower(
        &c.tensor,
        c.groups.as_ref(),
        c.layout.as_ref(),
        &c.options,
        &c.convs,
        &c.depthwise,
    )?);
    Ok(true)
}

/// The pipeline, in order.
pub const PIPELINE: &[Pass] = &[
    // Exact algebraic rewrites; first, so that dce removes what they leave unused.
    Pass {
        name: "simplify",
        summary: "drop same-dtype casts, turn a * a into square(a)",
        optimising: true,
        stage: Stage::Tensor,
        run: simplify_pass,
    },
    // Early, so that later passes never spend time on values nothing uses.
    Pass {
        name: "dce",
        summary: "remove instructions whose results are never used",
        optimising: true,
        stage: Stage::Tensor,
        run: dce_pass,
    },
    // Spreads few-row elementwise components over all partitions (exact); after dce, so
    // that dead readers do not keep a component from being refolded, and before
    // `canonicalize`, which must be the last pass that changes tensor IR, and `fusion`,
    // which groups the refolded operations.
    Pass {
        name: "refold",
        summary: "spread rank-1 and few-row elementwise work over all 128 partitions",
        optimising: true,
        stage: Stage::Tensor,
        run: refold_pass,
    },
    // Brings equivalent programs to one form (`canonicalize.rs`), which `fusion` matches
    // (attention). After `simplify` and `dce`, so that it sees no same-dtype cast and no
    // dead use; the last pass that changes tensor IR, since the map from its values back
    // to the program as written (`Compilation::original`) must stay valid.
    Pass {
        name: "canonicalize",
        summary: "bring equivalent forms to one: position masks to tril, softmax normalisation after its matmul and scales across a matmul (default policy only), exact widening casts of matmul operands dropped",
        optimising: true,
        stage: Stage::Tensor,
        run: canonicalize_pass,
    },
    // Convolutions as matmuls over window matrices (`conv.rs`): required (no tiling knows
    // `conv`); after `canonicalize`, whose value map it composes, and before `fusion`,
    // which fuses the matmul's epilogue.
    Pass {
        name: "conv",
        summary: "rewrite convolutions into matmuls over window matrices (exact)",
        optimising: false,
        stage: Stage::Tensor,
        run: conv_pass,
    },
    // Groups instructions that are computed together; reads the final tensor IR, so it
    // runs after every tensor-level pass. Disabled, every instruction is its own group.
    Pass {
        name: "fusion",
        summary: "group elementwise chains, last-axis reductions and matmul epilogues",
        optimising: true,
        stage: Stage::Tensor,
        run: fusion_pass,
    },
    // Reads the groups of `fusion` (it orients whole matmul groups and decides the homes
    // of the values they keep), so it runs after it and before `tile`, which follows it.
    // Disabled, every matmul keeps its normal orientation and every home is row-major.
    Pass {
        name: "layout",
        summary: "choose matmul operand sides, transposed homes and operand loads",
        optimising: true,
        stage: Stage::Tensor,
        run: layout::run,
    },
    // Lowers tensor IR to tile IR along the groups of `fusion` and the plan of `layout`.
    Pass {
        name: "tile",
        summary: "tile every group for 128 partitions, PSUM banks and the engines",
        optimising: false,
        stage: Stage::Tile,
        run: tile_pass,
    },
    // Reorders the layout, so it runs before `engines` (queue choice follows layout
    // order), `alloc` (liveness) and `sync` (semaphore counts name stream positions).
    Pass {
        name: "schedule",
        summary: "delay stores three bursts so DMA queues issue the next blocks' loads first",
        optimising: true,
        stage: Stage::Tile,
        run: schedule::run,
    },
    // Runs after `tile` (it moves the DMAs that `tile` put on queue 0), before `alloc`,
    // whose spill transfers go to the least loaded queue, and before `sync`, which derives
    // semaphores from the final engine of every instruction.
    Pass {
        name: "engines",
        summary: "spread DMA transfers over the 16 queues, balancing bytes per queue",
        optimising: true,
        stage: Stage::Tile,
        run: engines::run,
    },
    // Interleaves the blocks of row groups (`pipeline.rs`); after `engines`, whose engine
    // choice its estimate needs, and before `alloc` (liveness) and `sync` (semaphore
    // counts name stream positions).
    Pass {
        name: "pipeline",
        summary: "interleave row-group blocks so each engine works ahead (list scheduling)",
        optimising: true,
        stage: Stage::Tile,
        run: pipeline::run,
    },
    // Runs after every pass that adds instructions or changes which buffers they use (it
    // places buffers from liveness in the final layout), and before `sync`, which needs
    // placed memory to see conflicts between buffers that come to share bytes.
    Pass {
        name: "alloc",
        summary: "place buffers in HBM, SBUF and PSUM (next-fit from liveness, spilling)",
        optimising: false,
        stage: Stage::Tile,
        run: alloc::run,
    },
    // Runs after `alloc` (placed byte ranges, spill transfers) and after every pass that
    // changes engines or the layout, since semaphore counts name stream positions.
    Pass {
        name: "sync",
        summary: "add semaphore waits and signals for every cross-engine dependency",
        optimising: false,
        stage: Stage::Tile,
        run: sync::run,
    },
    // Runs last: it needs placements and semaphores, and leaves the ISA program.
    Pass {
        name: "emit",
        summary: "emit the ISA program: relocated patterns, semaphores, tensors, locations",
        optimising: false,
        stage: Stage::Program,
        run: crate::backend::emit::run,
    },
];

/// The name under which lowering's output is verified and dumped.
pub const LOWER: &str = "lower";

/// Finds a pass by name.
pub fn find(name: &str) -> Option<&'static Pass> {
    PIPELINE.iter().find(|p| p.name == name)
}

/// The passes that can be switched off, in pipeline order.
pub fn optimising() -> impl Iterator<Item = &'static Pass> {
    PIPELINE.iter().filter(|p| p.optimising)
}

/// What a pass did, as an observer of the pipeline sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    Changed,
    Unchanged,
    /// Switched off by `--disable-pass` (it did not run).
    Disabled,
}

/// An observer of the pipeline: the pass name, what it did, and the state after it.
pub type Observer<'a> = &'a mut dyn FnMut(&str, Outcome, &Compilation);

impl Compilation {
    /// A compilation of lowered, verified tensor IR.
    pub fn new(tensor: Function, options: PassOptions) -> Compilation {
        Compilation {
            tensor,
            original: None,
            groups: None,
            layout: None,
            tile: None,
            program: None,
            convs: Vec::new(),
            depthwise: Vec::new(),
            options,
            source: None,
        }
    }

    /// The program the reference evaluator runs for `run --check` (the tensor IR as
    /// written, before any rewrite that changes rounding), and the casts of it whose
    /// rounding the compiled code does not reproduce (flash attention's, `Grouping::
    /// relaxed_casts`, and canonicalisation's).
    pub fn reference(&self) -> (&Function, Vec<ir::Value>) {
        let relaxed = self
            .groups
            .as_ref()
            .map(|g| g.relaxed_casts(&self.tensor))
            .unwrap_or_default();
        match &self.original {
            None => (&self.tensor, relaxed),
            Some(o) => {
                let mut all: Vec<ir::Value> =
                    relaxed.iter().filter_map(|v| o.to_original[*v]).collect();
                all.extend(o.relaxed.iter().copied());
                (&o.func, all)
            }
        }
    }

    /// The current IR as text: the program's assembly, else tile IR, else tensor IR.
    pub fn current_text(&self) -> String {
        if let Some(p) = &self.program {
            isa::disassemble(p)
        } else if let Some(t) = &self.tile {
            t.to_string()
        } else {
            let mut s = self.tensor.to_string();
            if let Some(g) = &self.groups {
                s.push_str(&g.describe());
            }
            if let Some(l) = &self.layout {
                s.push_str(&l.describe());
            }
            s
        }
    }

    /// Runs the verifier of the current stage.
    pub fn verify(&self, pass: &str) -> Result<(), ir::InternalError> {
        let fail = |errors: Vec<String>, text: String| ir::InternalError {
            pass: pass.to_string(),
            errors: errors
                .into_iter()
                .map(|message| ir::VerifierError {
                    inst: None,
                    message,
                })
                .collect(),
            ir: text,
        };
        if let Some(p) = &self.program {
            isa::verify(p).map_err(|errs| {
                fail(
                    errs.iter().map(|e| e.to_string()).collect(),
                    isa::disassemble(p),
                )
            })
        } else if let Some(t) = &self.tile {
            tile::verify(t).map_err(|errs| fail(errs, t.to_string()))
        } else {
            ir::verify(&self.tensor, pass)?;
            match &self.groups {
                Some(g) => {
                    let errors = g.verify(&self.tensor);
                    if errors.is_empty() {
                        Ok(())
                    } else {
                        Err(fail(errors, self.current_text()))
                    }
                }
                None => Ok(()),
            }
        }
    }
}

/// Runs every enabled pass in order, verifying after each when `verify` is set (always in
/// debug builds); `observe` sees the state after each pass (for `--dump-after`).
pub fn run_pipeline(
    c: &mut Compilation,
    verify: bool,
    observe: Observer<'_>,
) -> Result<(), ir::InternalError> {
    for pass in PIPELINE {
        if pass.optimising && !c.options.enabled(pass.name) {
            observe(pass.name, Outcome::Disabled, c);
            continue;
        }
        let changed = (pass.run)(c).map_err(|message| ir::InternalError {
            pass: pass.name.to_string(),
            errors: vec![ir::VerifierError {
                inst: None,
                message,
            }],
            ir: c.current_text(),
        })?;
        if verify || cfg!(debug_assertions) {
            c.verify(pass.name)?;
        }
        let outcome = if changed {
            Outcome::Changed
        } else {
            Outcome::Unchanged
        };
        observe(pass.name, outcome, c);
    }
    Ok(())
}
