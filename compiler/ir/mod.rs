//! Tensor IR: placeholder while it is being written.
