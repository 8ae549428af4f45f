//! Tessera's instruction set for a Trainium-like NeuronCore.
//!
//! The ISA is one table (`table.rs`, the `for_each_op!` macro); everything else is derived
//! from it: the [`Op`] enum below, the binary encoding (`encode.rs`), the text assembly
//! (`asm.rs`), the program container `.tbin` (`program.rs`), the verifier (`verify.rs`) and
//! the reference document `ISA.md` (`doc.rs`, kept current by a test).
//!
//! Architecture invariant: this crate depends on nothing else in the workspace. The
//! runtime executes what it defines; the compiler emits it.
//!
//! The public entry points are few and total (they never panic, whatever the input):
//! [`encode_program`] / [`decode_program`] for the `.tbin` container, [`encode_inst`] /
//! [`decode_inst`] for single instructions, [`disassemble`] / [`assemble`] for the text
//! form (and `Display` / `FromStr` on [`Inst`] for one line), [`verify`] for the machine's
//! static rules, and [`reference_doc`] for `ISA.md`.

/// Gives a small fieldless enum its canonical names and byte codes: `ALL`, `name`,
/// `from_name`, `code`, `from_code` and `Display`. Used for the operand enums so that the
/// encoder, the assembler and the reference document share one list of spellings.
macro_rules! enum_names {
    ($ty:ident, $kind:literal, { $($variant:ident = $name:literal),* $(,)? }) => {
        impl $ty {
            /// Every value, in encoding order.
            pub const ALL: &'static [$ty] = &[$($ty::$variant),*];
            /// What the values are called in errors and documentation.
            pub const KIND: &'static str = $kind;

            /// The assembly name of the value.
            pub fn name(self) -> &'static str {
                match self {
                    $($ty::$variant => $name,)*
                }
            }

            /// The value of an assembly name.
            pub fn from_name(name: &str) -> Option<$ty> {
                Self::ALL.iter().copied().find(|v| v.name() == name)
            }

            /// The one-byte encoding.
            pub fn code(self) -> u8 {
                self as u8
            }

            /// The value of a one-byte encoding.
            pub fn from_code(code: u8) -> Option<$ty> {
                Self::ALL.iter().copied().find(|v| v.code() == code)
            }
        }

        impl std::fmt::Display for $ty {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.name())
            }
        }
    };
}

mod asm;
mod doc;
mod encode;
mod program;
mod table;
mod types;
mod verify;
mod visit;

pub use asm::{assemble, disassemble, AsmError};
pub use doc::reference_doc;
pub use encode::{
    decode_inst, decode_program, encode_inst, encode_program, DecodeError, FORMAT_VERSION, MAGIC,
    MIN_FORMAT_VERSION,
};
pub use program::*;
pub use types::*;
pub use verify::{
    byte_ranges, check_operands, data_inputs, extent, integer_datapath, verify, VerifyError,
};
pub use visit::{Access, ApMut, ApRef, VisitAps};

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
