//! The tile IR verifier (placeholder: being written).

use super::TileFunc;

/// Checks the invariants of tile IR; returns every broken one.
pub fn verify(_func: &TileFunc) -> Result<(), Vec<String>> {
    Ok(())
}
