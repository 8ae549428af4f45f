//! Placeholder
pub mod npy;
pub mod numeric;
