//! The frontend: lexer, parser, AST and checker of the kernel language. It knows nothing of
//! tiles, memories or engines; its output is the checked kernel of `typed.rs`.

pub mod typed;
