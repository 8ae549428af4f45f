//! Placeholder
pub mod numeric;
