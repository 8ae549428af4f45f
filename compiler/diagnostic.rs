//! Diagnostics: placeholder while it is being written.
