//! The `emit` pass (required): produces the ISA program from tile IR.
//!
//! The tensor table lists the HBM buffers (inputs in declaration order, then outputs, then
//! scratch) at their placements, and `hbm_size` is the end of the last of them. Each stream
//! is its engine's instructions in layout order, with every access pattern moved by its
//! buffer's placement (`Op::visit_aps_mut`) and the semaphores of `sync`, followed by a
//! final `end`. When the source text is known, each instruction's span start becomes a
//! 1-based line and column (in characters) in `program.locs`.

use crate::passes::Compilation;
use crate::tile::{BufKind, Placement, TileFunc};
use isa::{ApMut, Inst, Op, Preset, Program, Role, SrcLoc, TensorDecl, NUM_STREAMS};

/// The pass: nothing to do before the tile pass has produced tile IR.
pub fn run(c: &mut Compilation) -> Result<bool, String> {
    let Some(func) = c.tile.as_ref() else {
        return Ok(false);
    };
    let source = c.source.as_ref().map(|(n, t)| (n.as_str(), t.as_str()));
    c.program = Some(emit(func, c.options.preset, source)?);
    Ok(true)
}

/// Converts byte offsets of a text to 1-based line and column (in characters).
struct LineIndex<'a> {
    text: &'a str,
    /// Byte offset of the start of each line.
    starts: Vec<usize>,
}

impl<'a> LineIndex<'a> {
    fn new(text: &'a str) -> LineIndex<'a> {
        let starts = std::iter::once(0)
            .chain(text.match_indices('\n').map(|(i, _)| i + 1))
            .collect();
        LineIndex { text, starts }
    }

    fn loc(&self, offset: usize) -> Option<SrcLoc> {
        if offset > self.text.len() || !self.text.is_char_boundary(offset) {
            return None;
        }
        let line = self
            .starts
            .partition_point(|&s| s <= offset)
            .checked_sub(1)?;
        let col = self.text.get(self.starts[line]..offset)?.chars().count() + 1;
        Some(SrcLoc {
            line: u32::try_from(line + 1).ok()?,
            col: u32::try_from(col).ok()?,
        })
    }
}

/// Emits the program of an allocated and synchronised tile function. `source` is the
/// source file's name and text, for the location table.
pub fn emit(
    func: &TileFunc,
    preset: Preset,
    source: Option<(&str, &str)>,
) -> Result<Program, String> {
    if !func.synced {
        return Err("emission needs synchronised tile IR: the sync pass must run first".into());
    }
    let mut program = Program::new(preset);
    let mut hbm_size = 0u64;
    for role in [Role::Input, Role::Output, Role::Scratch] {
        for b in func.hbm_bufs(role) {
            let data = &func.bufs[b];
            let BufKind::Hbm { name, shape, .. } = &data.kind else {
                continue;
            };
            let Some(Placement::Hbm(offset)) = func.placement.get(b).copied().flatten() else {
                return Err(format!(
                    "{b} (`{name}`) has no HBM placement: alloc must run first"
                ));
            };
            let end = offset
                .checked_add(data.bytes)
                .ok_or_else(|| format!("{b} (`{name}`) ends beyond 2^64 bytes"))?;
            hbm_size = hbm_size.max(end);
            program.tensors.push(TensorDecl {
                name: name.clone(),
                role,
                dtype: data.dtype,
                shape: shape.clone(),
                offset,
            });
        }
    }
    program.hbm_size = hbm_size.next_multiple_of(64);
    let index = source.map(|(_, text)| LineIndex::new(text));
    let mut streams: Vec<Vec<Inst>> = vec![Vec::new(); NUM_STREAMS];
    let mut locs: Vec<Vec<Option<SrcLoc>>> = vec![Vec::new(); NUM_STREAMS];
    for &i in &func.layout {
        let inst = func
            .insts
            .get(i)
            .ok_or_else(|| format!("the layout lists {i}, which is not declared"))?;
        let mut op = inst.op.clone();
        relocate(func, i, &mut op)?;
        let s = inst.engine.index();
        streams[s].push(Inst {
            sync: func.sync.get(i).cloned().unwrap_or_default(),
            op,
        });
        let span = func.spans.get(i).copied().unwrap_or_default();
        let known = span.start != 0 || span.end != 0;
        locs[s].push(
            index
                .as_ref()
                .filter(|_| known)
                .and_then(|x| x.loc(span.start as usize)),
        );
    }
    for (stream, loc) in streams.iter_mut().zip(&mut locs) {
        stream.push(Inst::new(Op::End {}));
        loc.push(None);
    }
    program.streams = streams;
    if let Some((name, _)) = source {
        program.source = Some(name.to_string());
        program.locs = locs;
    }
    Ok(program)
}

/// Adds the placements of an instruction's buffers to its access patterns.
fn relocate(func: &TileFunc, i: crate::tile::TInst, op: &mut Op) -> Result<(), String> {
    let bufs = &func.insts[i].bufs;
    let mut k = 0;
    let mut error = None;
    op.visit_aps_mut(&mut |ap, _| {
        let b = bufs.get(k).copied();
        k += 1;
        let placement = b.and_then(|b| func.placement.get(b).copied().flatten());
        let ok = match (ap, placement) {
            (ApMut::Tile(t), Some(Placement::Tile { partition, offset })) => {
                let p = u8::try_from(partition + t.partition as u32).ok();
                let o = t.offset.checked_add(offset);
                match (p, o) {
                    (Some(p), Some(o)) => {
                        t.partition = p;
                        t.offset = o;
                        true
                    }
                    _ => false,
                }
            }
            (ApMut::Hbm(h), Some(Placement::Hbm(offset))) => match h.offset.checked_add(offset) {
                Some(o) => {
                    h.offset = o;
                    true
                }
                None => false,
            },
            _ => false,
        };
        if !ok && error.is_none() {
            error = Some(match b {
                Some(b) => format!(
                    "{i} operand {} cannot be placed in {b} (placement {:?})",
                    k - 1,
                    placement
                ),
                None => format!("{i} has no buffer for operand {}", k - 1),
            });
        }
    });
    match error {
        Some(e) => Err(e),
        None if k != bufs.len() => Err(format!(
            "{i} has {k} memory operands but names {} buffers",
            bufs.len()
        )),
        None => Ok(()),
    }
}
