//! Prints tile IR as text (placeholder: being written).

use super::{Buf, TileFunc};
use std::fmt;

/// Writes a buffer's declaration.
pub fn write_buf(f: &mut dyn fmt::Write, func: &TileFunc, b: Buf) -> fmt::Result {
    write!(f, "{b} = {:?}", func.bufs[b])
}

impl fmt::Display for TileFunc {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "kernel {} {{", self.name)?;
        for b in self.bufs.keys() {
            f.write_str("    ")?;
            write_buf(f, self, b)?;
            f.write_str("\n")?;
        }
        for &i in &self.layout {
            let inst = &self.insts[i];
            writeln!(f, "    {i} = {}: {}", inst.engine, inst.op)?;
        }
        f.write_str("}\n")
    }
}
