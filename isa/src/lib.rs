//! Tessera's instruction set for a Trainium-like NeuronCore.
//!
//! The ISA is one table (`table.rs`, the `for_each_op!` macro); everything else is derived
//! from it: the [`Op`] enum below, the binary encoding (`encode.rs`), the text assembly
//! (`asm.rs`), the program container `.tbin` (`program.rs`), the verifier (`verify.rs`) and
//! the reference document `ISA.md` (`doc.rs`, kept current by a test).
//!
//! Architecture invariant: this crate depends on nothing else in the workspace. The
//! runtime executes what it defines; the compiler emits it.

mod program;
mod table;
mod types;

pub use program::*;
pub use types::*;

/// Generates the [`Op`] enum and its table-driven metadata from `for_each_op!`.
macro_rules! define_op_enum {
    ($(
        $(#[doc = $doc:literal])*
        $name:ident = $code:literal, $mnemonic:literal, $engines:expr, { $($field:ident : $ty:ty),* $(,)? };
    )*) => {
        /// One operation of the ISA, with its fields. See `ISA.md` for each one's semantics.
        #[derive(Clone, Debug, PartialEq, Eq, Hash)]
        pub enum Op {
            $(
                $(#[doc = $doc])*
                $name { $($field: $ty),* },
            )*
        }

        /// The opcode of each operation, as its own enum for tables and statistics.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
        #[repr(u8)]
        pub enum Opcode {
            $($name = $code,)*
        }

        impl Opcode {
            /// Every opcode, in table order.
            pub const ALL: &'static [Opcode] = &[$(Opcode::$name),*];

            /// The opcode of an encoding byte.
            pub fn from_byte(byte: u8) -> Option<Opcode> {
                match byte {
                    $($code => Some(Opcode::$name),)*
                    _ => None,
                }
            }

            /// The assembly mnemonic.
            pub fn mnemonic(self) -> &'static str {
                match self {
                    $(Opcode::$name => $mnemonic,)*
                }
            }

            /// The opcode of a mnemonic.
            pub fn from_mnemonic(m: &str) -> Option<Opcode> {
                match m {
                    $($mnemonic => Some(Opcode::$name),)*
                    _ => None,
                }
            }

            /// The engines that may run this opcode.
            pub fn engines(self) -> EngineClass {
                match self {
                    $(Opcode::$name => $engines,)*
                }
            }

            /// The table's doc comment of the opcode (semantics, numerics, cost).
            pub fn doc(self) -> &'static str {
                match self {
                    $(Opcode::$name => concat!($($doc, "\n"),*),)*
                }
            }

            /// The field names and their Rust type names, in encoding order.
            pub fn fields(self) -> &'static [(&'static str, &'static str)] {
                match self {
                    $(Opcode::$name => &[$((stringify!($field), stringify!($ty))),*],)*
                }
            }
        }

        impl Op {
            /// The opcode of this operation.
            pub fn opcode(&self) -> Opcode {
                match self {
                    $(Op::$name { .. } => Opcode::$name,)*
                }
            }
        }
    };
}

for_each_op!(define_op_enum);

/// One instruction: an operation and its semaphore use.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Inst {
    pub sync: Sync,
    pub op: Op,
}

impl Inst {
    /// An instruction with no waits and no signal.
    pub fn new(op: Op) -> Inst {
        Inst {
            sync: Sync::default(),
            op,
        }
    }
}
