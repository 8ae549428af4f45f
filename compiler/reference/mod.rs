//! Reference evaluator: placeholder while it is being written.
