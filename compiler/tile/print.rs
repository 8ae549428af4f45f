//! Prints tile IR as text, the form `--dump-after` shows and `tile::parse` reads back.
//!
//! The format, one item per line:
//!
//! ```text
//! tile kernel softmax synced {
//!     b0 = hbm input x f32[128, 64] @ 0
//!     b1 = sbuf f32 128x256 @ p0+1024
//!     b2 = psum f32 128x2048 @ p0+0
//!     inst0 = dma0: dma dst=sbuf.f32[0:128, 0; 64:1], src=hbm.f32[0; 128:64, 64:1] {b1, b0} @12..20
//! }
//! ```
//!
//! Buffers come first in entity order: `hbm ROLE NAME DTYPE[SHAPE]`, or `sbuf|psum DTYPE
//! PARTITIONSxBYTES` (bytes per partition), each followed by ` @ OFFSET` (HBM) or
//! ` @ pPARTITION+OFFSET` (tiles) once allocation has placed it. Instructions follow in
//! layout order: the engine, the instruction exactly as `isa::Inst`'s `Display` writes it
//! (with the semaphores of the sync side table), the buffer of each memory operand in
//! `Op::visit_aps` order, and the source span. `synced` after the name says that the
//! synchronisation pass has run. The text is canonical: printing what `parse` read from
//! printed text gives the same text.

use super::{Buf, BufKind, Placement, TileFunc};
use std::fmt;

/// True for names written without quotes: an ASCII letter or `_`, then letters, digits, `_`.
pub(crate) fn is_bare_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// Writes a name bare when it can be, else quoted with Rust's escapes.
fn write_name(f: &mut dyn fmt::Write, name: &str) -> fmt::Result {
    if is_bare_name(name) {
        f.write_str(name)
    } else {
        write!(f, "{name:?}")
    }
}

/// Writes a buffer's declaration (without indentation or newline), e.g.
/// `b2 = sbuf f32 128x256 @ p0+1024`.
pub fn write_buf(f: &mut dyn fmt::Write, func: &TileFunc, b: Buf) -> fmt::Result {
    let Some(data) = func.bufs.get(b) else {
        return write!(f, "{b} = <undeclared>");
    };
    write!(f, "{b} = ")?;
    match &data.kind {
        BufKind::Hbm { name, role, shape } => {
            write!(f, "hbm {role} ")?;
            write_name(f, name)?;
            let dims: Vec<String> = shape.iter().map(|d| d.to_string()).collect();
            write!(f, " {}[{}]", data.dtype, dims.join(", "))?;
        }
        BufKind::Sbuf | BufKind::Psum => {
            let mem = if data.kind == BufKind::Sbuf {
                "sbuf"
            } else {
                "psum"
            };
            write!(f, "{mem} {} {}x{}", data.dtype, data.partitions, data.bytes)?;
        }
    }
    match func.placement.get(b).copied().flatten() {
        None => Ok(()),
        Some(Placement::Hbm(offset)) => write!(f, " @ {offset}"),
        Some(Placement::Tile { partition, offset }) => write!(f, " @ p{partition}+{offset}"),
    }
}

impl fmt::Display for TileFunc {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("tile kernel ")?;
        write_name(f, &self.name)?;
        if self.synced {
            f.write_str(" synced")?;
        }
        f.write_str(" {\n")?;
        for b in self.bufs.keys() {
            f.write_str("    ")?;
            write_buf(f, self, b)?;
            f.write_str("\n")?;
        }
        for &i in &self.layout {
            let Some(inst) = self.insts.get(i) else {
                writeln!(f, "    ; {i} is in the layout but not declared")?;
                continue;
            };
            let full = isa::Inst {
                sync: self.sync.get(i).cloned().unwrap_or_default(),
                op: inst.op.clone(),
            };
            let bufs: Vec<String> = inst.bufs.iter().map(|b| b.to_string()).collect();
            let span = self.spans.get(i).copied().unwrap_or_default();
            writeln!(
                f,
                "    {i} = {}: {full} {{{}}} @{}..{}",
                inst.engine,
                bufs.join(", "),
                span.start,
                span.end
            )?;
        }
        f.write_str("}\n")
    }
}
