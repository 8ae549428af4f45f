//! The text assembly: [`disassemble`] writes a program in its canonical text form and
//! [`assemble`] reads it back (and also accepts some non-canonical spellings: any field
//! order, omitted streams, comments, blank lines and extra spaces).
//!
//! Every operand type implements [`AsmOperand`]; the per-opcode writers and parsers are
//! generated from `for_each_op!`, so the text form cannot drift from the table. The syntax
//! is documented in `ISA.md` (section "Assembly syntax"). Round-trip guarantees:
//! `assemble(&disassemble(p)) == p` for every program that passes `verify`, and
//! `disassemble(&assemble(t)?) == t` for canonical text (what `disassemble` writes).

use std::fmt::{self, Write as _};
use std::str::FromStr;

use crate::{
    for_each_op, ActFunc, Affine, AluOp, CmpOp, DmaAp, Dtype, Engine, HbmAp, Imm, Inst, Mem, Op,
    Opcode, Origin, Preset, Program, ReduceOp, Role, ScalarArg, SrcLoc, Sync, TensorDecl, TileAp,
    MAX_HBM_DIMS, MAX_TENSOR_RANK, MAX_TILE_DIMS, MAX_WAITS, NUM_STREAMS, SOURCE_HASH_BYTES,
};

/// Indentation of instructions and `.loc` lines inside a stream.
const INDENT: &str = "    ";
/// The bits of the canonical NaN, written plainly as `nan`.
const CANONICAL_NAN: u32 = 0x7fc0_0000;

/// An assembly error: where (1-based line and column, counted in characters) and what was
/// expected and found.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{line}:{col}: {message}")]
pub struct AsmError {
    pub line: usize,
    pub col: usize,
    pub message: String,
}

/// A token of one line.
#[derive(Clone, Debug, PartialEq)]
enum Tok {
    /// A run of letters, digits and `_ . + -`: names, numbers, mnemonics, directives.
    Word(String),
    /// A double-quoted string with its escapes resolved.
    Str(String),
    /// One of `, [ ] ( ) = : ; @`.
    Punct(char),
    /// `>=`.
    Ge,
    /// The end of the line (or the start of a comment).
    End,
}

impl Tok {
    /// How the token is named in "found ..." messages.
    fn describe(&self) -> String {
        match self {
            Tok::Word(w) => format!("`{w}`"),
            Tok::Str(s) => format!("string {s:?}"),
            Tok::Punct(c) => format!("`{c}`"),
            Tok::Ge => "`>=`".to_string(),
            Tok::End => "end of line".to_string(),
        }
    }
}

/// True for the characters of a word token.
fn is_word_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '+' | '-')
}

/// Splits one line into tokens. A `;` outside brackets and parentheses starts a comment
/// (inside brackets it separates a tile's header from its dimensions).
fn lex(line: usize, text: &str) -> Result<Vec<(Tok, usize)>, AsmError> {
    let chars: Vec<char> = text.chars().collect();
    let mut toks = Vec::new();
    let mut depth = 0usize;
    let mut i = 0;
    let err = |col: usize, message: String| AsmError { line, col, message };
    while i < chars.len() {
        let c = chars[i];
        let col = i + 1;
        if c.is_whitespace() {
            i += 1;
        } else if c == ';' && depth == 0 {
            break;
        } else if is_word_char(c) {
            let start = i;
            while i < chars.len() && is_word_char(chars[i]) {
                i += 1;
            }
            toks.push((Tok::Word(chars[start..i].iter().collect()), col));
        } else if c == '"' {
            i += 1;
            let mut s = String::new();
            loop {
                let Some(&c) = chars.get(i) else {
                    return Err(err(
                        col,
                        "unterminated string: expected a closing `\"`".into(),
                    ));
                };
                i += 1;
                match c {
                    '"' => break,
                    '\\' => {
                        let Some(&e) = chars.get(i) else {
                            return Err(err(i + 1, "expected an escape after `\\`".into()));
                        };
                        i += 1;
                        match e {
                            'n' => s.push('\n'),
                            'r' => s.push('\r'),
                            't' => s.push('\t'),
                            '0' => s.push('\0'),
                            '\\' | '"' | '\'' => s.push(e),
                            'u' => {
                                let start = i;
                                let close = chars[i..].iter().position(|&c| c == '}');
                                let valid = chars.get(i) == Some(&'{') && close.is_some();
                                let ch = close.filter(|_| valid).and_then(|close| {
                                    let hex: String = chars[i + 1..i + close].iter().collect();
                                    i += close + 1;
                                    u32::from_str_radix(&hex, 16).ok().and_then(char::from_u32)
                                });
                                match ch {
                                    Some(ch) => s.push(ch),
                                    None => {
                                        return Err(err(
                                            start + 1,
                                            "expected a unicode escape like `\\u{1b}`".into(),
                                        ))
                                    }
                                }
                            }
                            other => {
                                return Err(err(i, format!("unknown string escape `\\{other}`")))
                            }
                        }
                    }
                    c => s.push(c),
                }
            }
            toks.push((Tok::Str(s), col));
        } else if c == '>' && chars.get(i + 1) == Some(&'=') {
            toks.push((Tok::Ge, col));
            i += 2;
        } else if matches!(c, ',' | '[' | ']' | '(' | ')' | '=' | ':' | ';' | '@') {
            match c {
                '[' | '(' => depth += 1,
                ']' | ')' => depth = depth.saturating_sub(1),
                _ => {}
            }
            toks.push((Tok::Punct(c), col));
            i += 1;
        } else {
            return Err(err(col, format!("unexpected character `{c}`")));
        }
    }
    toks.push((Tok::End, chars.len() + 1));
    Ok(toks)
}

/// The parser's position in one line's tokens.
pub(crate) struct AsmCursor {
    toks: Vec<(Tok, usize)>,
    pos: usize,
    line: usize,
}

impl AsmCursor {
    /// Lexes a line and puts the cursor on its first token.
    fn new(line: usize, text: &str) -> Result<AsmCursor, AsmError> {
        Ok(AsmCursor {
            toks: lex(line, text)?,
            pos: 0,
            line,
        })
    }

    fn peek(&self) -> &Tok {
        &self.toks[self.pos.min(self.toks.len() - 1)].0
    }

    /// The column of the next token.
    fn col(&self) -> usize {
        self.toks[self.pos.min(self.toks.len() - 1)].1
    }

    /// Takes the next token (the end token is never passed).
    fn next(&mut self) -> (Tok, usize) {
        let t = self.toks[self.pos.min(self.toks.len() - 1)].clone();
        if t.0 != Tok::End {
            self.pos += 1;
        }
        t
    }

    fn at_end(&self) -> bool {
        *self.peek() == Tok::End
    }

    /// True when the next token is the word `w`.
    fn at_word(&self, w: &str) -> bool {
        matches!(self.peek(), Tok::Word(x) if x == w)
    }

    /// An error at column `col`.
    fn err_at(&self, col: usize, message: impl Into<String>) -> AsmError {
        AsmError {
            line: self.line,
            col,
            message: message.into(),
        }
    }

    /// An error at the next token.
    fn err(&self, message: impl Into<String>) -> AsmError {
        self.err_at(self.col(), message)
    }

    /// "expected WHAT, found TOKEN" at the next token.
    fn expected(&self, what: &str) -> AsmError {
        self.err(format!("expected {what}, found {}", self.peek().describe()))
    }

    /// Consumes the punctuation `c` or reports it as expected.
    fn punct(&mut self, c: char) -> Result<(), AsmError> {
        if *self.peek() == Tok::Punct(c) {
            self.pos += 1;
            Ok(())
        } else {
            Err(self.expected(&format!("`{c}`")))
        }
    }

    /// Consumes the punctuation `c` if it is next.
    fn eat(&mut self, c: char) -> bool {
        let here = *self.peek() == Tok::Punct(c);
        if here {
            self.pos += 1;
        }
        here
    }

    /// Takes a word, returning it and its column.
    fn word(&mut self, what: &str) -> Result<(String, usize), AsmError> {
        match self.peek() {
            Tok::Word(w) => {
                let w = w.clone();
                Ok((w, self.next().1))
            }
            _ => Err(self.expected(what)),
        }
    }

    /// Consumes the keyword `kw`.
    fn keyword(&mut self, kw: &str) -> Result<(), AsmError> {
        if self.at_word(kw) {
            self.pos += 1;
            Ok(())
        } else {
            Err(self.expected(&format!("`{kw}`")))
        }
    }

    /// Takes a decimal integer of type `T` (`what` names it in errors).
    fn int<T: TryFrom<i128>>(&mut self, what: &str) -> Result<T, AsmError> {
        let expected = format!("{what} (an integer)");
        let Tok::Word(w) = self.peek() else {
            return Err(self.expected(&expected));
        };
        let Ok(v) = w.parse::<i128>() else {
            return Err(self.expected(&expected));
        };
        match T::try_from(v) {
            Ok(v) => {
                self.next();
                Ok(v)
            }
            Err(_) => Err(self.err(format!("{what} {v} is out of range"))),
        }
    }

    /// Takes a semaphore name `sN`.
    fn semaphore(&mut self) -> Result<u8, AsmError> {
        let what = "a semaphore like `s3`";
        let Tok::Word(w) = self.peek() else {
            return Err(self.expected(what));
        };
        match w.strip_prefix('s').and_then(|n| n.parse::<u8>().ok()) {
            Some(n) if w.len() > 1 && !w[1..].starts_with('+') => {
                self.next();
                Ok(n)
            }
            _ => Err(self.expected(what)),
        }
    }

    /// Requires the end of the line.
    fn end(&self) -> Result<(), AsmError> {
        if self.at_end() {
            Ok(())
        } else {
            Err(self.expected("end of line"))
        }
    }
}

/// The text form of an operand type. `ISA.md` documents each syntax.
pub(crate) trait AsmOperand: Sized {
    /// Appends the canonical text of `self`.
    fn write_asm(&self, out: &mut String);
    /// Parses one value at the cursor.
    fn parse_asm(c: &mut AsmCursor) -> Result<Self, AsmError>;
}

impl AsmOperand for bool {
    fn write_asm(&self, out: &mut String) {
        out.push_str(if *self { "true" } else { "false" });
    }
    fn parse_asm(c: &mut AsmCursor) -> Result<Self, AsmError> {
        if c.at_word("true") {
            c.next();
            Ok(true)
        } else if c.at_word("false") {
            c.next();
            Ok(false)
        } else {
            Err(c.expected("`true` or `false`"))
        }
    }
}

/// Implements [`AsmOperand`] for the enums with `name` / `from_name`.
macro_rules! asm_enum {
    ($($ty:ident),*) => {$(
        impl AsmOperand for $ty {
            fn write_asm(&self, out: &mut String) {
                out.push_str(self.name());
            }
            fn parse_asm(c: &mut AsmCursor) -> Result<Self, AsmError> {
                let expected = || {
                    let names: Vec<&str> = $ty::ALL.iter().map(|v| v.name()).collect();
                    format!("{} ({})", $ty::KIND, names.join(", "))
                };
                match c.peek() {
                    Tok::Word(w) => match $ty::from_name(w) {
                        Some(v) => {
                            c.next();
                            Ok(v)
                        }
                        None => Err(c.expected(&expected())),
                    },
                    _ => Err(c.expected(&expected())),
                }
            }
        }
    )*};
}

asm_enum!(AluOp, ReduceOp, ActFunc, CmpOp);

impl AsmOperand for Imm {
    fn write_asm(&self, out: &mut String) {
        let v = self.value();
        // The integer datapath's immediates: small integers (`|N| < 2^23`) are positive
        // subnormals or negative NaN patterns as f32, unreadable that way; `i32:N` writes
        // the same bits.
        let int = self.0 as i32;
        if int != 0 && int.unsigned_abs() < 1 << 23 {
            let _ = write!(out, "i32:{int}");
            return;
        }
        if v.is_nan() {
            if self.0 == CANONICAL_NAN {
                out.push_str("nan");
            } else {
                let _ = write!(out, "nan:{:#010x}", self.0);
            }
        } else {
            // Rust's `{:?}` is the shortest text that parses back to the same bits; it
            // writes infinities as `inf` and `-inf`.
            let _ = write!(out, "{v:?}");
        }
    }
    fn parse_asm(c: &mut AsmCursor) -> Result<Self, AsmError> {
        let what = "an f32 immediate (like `1.0`, `-2.5e-8`, `inf`, `nan`)";
        let Tok::Word(w) = c.peek().clone() else {
            return Err(c.expected(what));
        };
        if w == "i32" {
            c.next();
            let what = "an integer like `-7` after `i32:`";
            if !c.eat(':') {
                return Err(c.expected(what));
            }
            let Tok::Word(digits) = c.peek().clone() else {
                return Err(c.expected(what));
            };
            let value = digits
                .parse::<i64>()
                .ok()
                .and_then(|v| i32::try_from(v).ok());
            return match value {
                Some(v) => {
                    c.next();
                    Ok(Imm(v as u32))
                }
                None => Err(c.err(format!("`{digits}` is not an i32"))),
            };
        }
        if w == "nan" {
            c.next();
            if !c.eat(':') {
                return Ok(Imm(CANONICAL_NAN));
            }
            let payload = "NaN bits like `0x7fc00001`";
            let Tok::Word(hex) = c.peek().clone() else {
                return Err(c.expected(payload));
            };
            let bits = hex
                .strip_prefix("0x")
                .and_then(|h| u32::from_str_radix(h, 16).ok());
            return match bits {
                Some(bits) if f32::from_bits(bits).is_nan() => {
                    c.next();
                    Ok(Imm(bits))
                }
                Some(_) => Err(c.err(format!("{hex} is not the bit pattern of a NaN"))),
                None => Err(c.expected(payload)),
            };
        }
        match w.parse::<f32>() {
            Ok(v) => {
                c.next();
                Ok(Imm::new(v))
            }
            Err(_) => Err(c.expected(what)),
        }
    }
}

/// Writes the `size:stride` list of a pattern.
fn write_dims(out: &mut String, dims: impl Iterator<Item = (String, String)>) {
    let mut first = true;
    for (size, stride) in dims {
        out.push_str(if first { " " } else { ", " });
        first = false;
        let _ = write!(out, "{size}:{stride}");
    }
    out.push(']');
}

/// Parses a `size:stride` list up to and including the closing `]`.
/// Parses `size:stride, ...]` with at most `max` dimensions: the binary form has no room
/// for more, so text that has them is refused here rather than failing to round-trip.
fn parse_dims<S: TryFrom<i128>, T: TryFrom<i128>>(
    c: &mut AsmCursor,
    max: usize,
    what: &str,
) -> Result<Vec<(S, T)>, AsmError> {
    let mut dims = Vec::new();
    if c.eat(']') {
        return Ok(dims);
    }
    loop {
        if dims.len() == max {
            return Err(c.err(format!("{what} has at most {max} dimensions")));
        }
        let size = c.int("a dimension size")?;
        c.punct(':')?;
        let stride = c.int("a dimension stride")?;
        dims.push((size, stride));
        if c.eat(']') {
            return Ok(dims);
        }
        if !c.eat(',') {
            return Err(c.expected("`,` or `]`"));
        }
    }
}

/// Splits the `mem.dtype` word that starts a pattern.
fn pattern_head(c: &mut AsmCursor, what: &str) -> Result<(String, Dtype, usize), AsmError> {
    let Tok::Word(w) = c.peek().clone() else {
        return Err(c.expected(what));
    };
    let col = c.col();
    let Some((mem, dtype)) = w.split_once('.') else {
        return Err(c.expected(what));
    };
    let Some(dtype) = Dtype::from_name(dtype) else {
        let names: Vec<&str> = Dtype::ALL.iter().map(|d| d.name()).collect();
        return Err(c.err_at(
            col + mem.len() + 1,
            format!("unknown dtype `{dtype}` (expected {})", names.join(", ")),
        ));
    };
    c.next();
    Ok((mem.to_string(), dtype, col))
}

impl AsmOperand for TileAp {
    fn write_asm(&self, out: &mut String) {
        let _ = write!(
            out,
            "{}.{}[{}:{}, {};",
            self.mem.name(),
            self.dtype,
            self.partition,
            self.partitions,
            self.offset
        );
        write_dims(
            out,
            self.dims
                .iter()
                .map(|d| (d.size.to_string(), d.stride.to_string())),
        );
    }
    fn parse_asm(c: &mut AsmCursor) -> Result<Self, AsmError> {
        let what = "a tile like `sbuf.bf16[0:128, 0; 64:1]`";
        let (mem, dtype, col) = pattern_head(c, what)?;
        let Some(mem) = Mem::from_name(&mem) else {
            return Err(c.err_at(
                col,
                format!("unknown memory `{mem}` for a tile (expected sbuf or psum)"),
            ));
        };
        c.punct('[')?;
        let partition = c.int("a start partition")?;
        c.punct(':')?;
        let partitions = c.int("a partition count")?;
        c.punct(',')?;
        let offset = c.int("a byte offset")?;
        c.punct(';')?;
        let dims = parse_dims::<u32, i32>(c, MAX_TILE_DIMS, "a tile pattern")?;
        Ok(TileAp::new(
            mem, dtype, partition, partitions, offset, &dims,
        ))
    }
}

impl AsmOperand for HbmAp {
    fn write_asm(&self, out: &mut String) {
        let _ = write!(out, "hbm.{}[{};", self.dtype, self.offset);
        write_dims(
            out,
            self.dims
                .iter()
                .map(|d| (d.size.to_string(), d.stride.to_string())),
        );
    }
    fn parse_asm(c: &mut AsmCursor) -> Result<Self, AsmError> {
        let what = "an HBM pattern like `hbm.f32[0; 128:64, 64:1]`";
        let (mem, dtype, col) = pattern_head(c, what)?;
        if mem != "hbm" {
            return Err(c.err_at(col, format!("expected `hbm`, found `{mem}`")));
        }
        c.punct('[')?;
        let offset = c.int("a byte offset")?;
        c.punct(';')?;
        let dims = parse_dims::<u64, i64>(c, MAX_HBM_DIMS, "an HBM pattern")?;
        Ok(HbmAp::new(dtype, offset, &dims))
    }
}

impl AsmOperand for DmaAp {
    fn write_asm(&self, out: &mut String) {
        match self {
            DmaAp::Hbm(ap) => ap.write_asm(out),
            DmaAp::Tile(ap) => ap.write_asm(out),
        }
    }
    fn parse_asm(c: &mut AsmCursor) -> Result<Self, AsmError> {
        match c.peek() {
            Tok::Word(w) if w.starts_with("hbm.") => Ok(DmaAp::Hbm(HbmAp::parse_asm(c)?)),
            Tok::Word(w) if w.starts_with("sbuf.") || w.starts_with("psum.") => {
                Ok(DmaAp::Tile(TileAp::parse_asm(c)?))
            }
            _ => Err(c.expected("an HBM pattern or an SBUF tile")),
        }
    }
}

impl AsmOperand for ScalarArg {
    fn write_asm(&self, out: &mut String) {
        match self {
            ScalarArg::Imm(imm) => imm.write_asm(out),
            ScalarArg::Ap(ap) => ap.write_asm(out),
        }
    }
    fn parse_asm(c: &mut AsmCursor) -> Result<Self, AsmError> {
        match c.peek() {
            Tok::Word(w) if w.starts_with("sbuf.") || w.starts_with("psum.") => {
                Ok(ScalarArg::Ap(TileAp::parse_asm(c)?))
            }
            _ => Ok(ScalarArg::Imm(Imm::parse_asm(c)?)),
        }
    }
}

impl AsmOperand for Option<TileAp> {
    fn write_asm(&self, out: &mut String) {
        match self {
            None => out.push_str("none"),
            Some(ap) => ap.write_asm(out),
        }
    }
    fn parse_asm(c: &mut AsmCursor) -> Result<Self, AsmError> {
        if c.at_word("none") {
            c.next();
            Ok(None)
        } else {
            Ok(Some(TileAp::parse_asm(c)?))
        }
    }
}

impl AsmOperand for Affine {
    fn write_asm(&self, out: &mut String) {
        let steps: Vec<String> = self.steps.iter().map(|s| s.to_string()).collect();
        let _ = write!(
            out,
            "affine(base={}, p={}, i=[{}])",
            self.base,
            self.partition_step,
            steps.join(", ")
        );
    }
    fn parse_asm(c: &mut AsmCursor) -> Result<Self, AsmError> {
        if !c.at_word("affine") {
            return Err(c.expected("an affine expression like `affine(base=0, p=1, i=[-1])`"));
        }
        c.next();
        c.punct('(')?;
        c.keyword("base")?;
        c.punct('=')?;
        let base = c.int("the affine base")?;
        c.punct(',')?;
        c.keyword("p")?;
        c.punct('=')?;
        let partition_step = c.int("the partition step")?;
        c.punct(',')?;
        c.keyword("i")?;
        c.punct('=')?;
        c.punct('[')?;
        let mut steps = smallvec::SmallVec::new();
        if !c.eat(']') {
            loop {
                if steps.len() == MAX_TILE_DIMS {
                    return Err(c.err(format!(
                        "an affine expression has at most {MAX_TILE_DIMS} free-dimension steps"
                    )));
                }
                steps.push(c.int("a free-dimension step")?);
                if c.eat(']') {
                    break;
                }
                if !c.eat(',') {
                    return Err(c.expected("`,` or `]`"));
                }
            }
        }
        c.punct(')')?;
        Ok(Affine {
            base,
            partition_step,
            steps,
        })
    }
}

/// Generates the per-opcode field writer and parser from the table.
macro_rules! define_op_asm {
    ($(
        $(#[doc = $doc:literal])*
        $name:ident = $code:literal, $mnemonic:literal, $engines:expr, { $($field:ident : $ty:ty),* $(,)? };
    )*) => {
        /// Appends ` field=value, ...` for the fields of `op`, in table order.
        fn write_fields(op: &Op, out: &mut String) {
            match op {
                $(Op::$name { $($field),* } => {
                    let start = out.len();
                    $(
                        out.push_str(if out.len() == start { " " } else { ", " });
                        out.push_str(concat!(stringify!($field), "="));
                        <$ty as AsmOperand>::write_asm($field, out);
                    )*
                    let _ = start;
                })*
            }
        }

        /// Parses `field=value, ...` (in any order, each field once) for `opcode`.
        fn parse_fields(opcode: Opcode, c: &mut AsmCursor) -> Result<Op, AsmError> {
            match opcode {
                $(Opcode::$name => {
                    $(let mut $field: Option<$ty> = None;)*
                    while !c.at_end() && !c.at_word("signal") {
                        let (key, col) = c.word("a field name")?;
                        match key.as_str() {
                            $(stringify!($field) => {
                                c.punct('=')?;
                                if $field.is_some() {
                                    return Err(c.err_at(col, format!(
                                        "field `{key}` of `{}` is given twice", $mnemonic)));
                                }
                                $field = Some(<$ty as AsmOperand>::parse_asm(c)?);
                                if !c.eat(',') && !c.at_end() && !c.at_word("signal") {
                                    return Err(c.expected("`,` between fields"));
                                }
                            })*
                            _ => {
                                let fields: &[&str] = &[$(stringify!($field)),*];
                                let list = if fields.is_empty() {
                                    "it has no fields".to_string()
                                } else {
                                    format!("its fields: {}", fields.join(", "))
                                };
                                return Err(c.err_at(col, format!(
                                    "unknown field `{key}` of `{}` ({list})", $mnemonic)));
                            }
                        }
                    }
                    Ok(Op::$name {
                        $($field: $field.ok_or_else(|| c.err(format!(
                            "missing field `{}` of `{}`", stringify!($field), $mnemonic)))?,)*
                    })
                })*
            }
        }
    };
}

for_each_op!(define_op_asm);

/// Appends the one-line text of an instruction (no indentation, no newline).
fn write_inst(inst: &Inst, out: &mut String) {
    if !inst.sync.waits.is_empty() {
        out.push_str("wait(");
        for (i, (sem, value)) in inst.sync.waits.iter().enumerate() {
            if i > 0 {
                out.push_str(", ");
            }
            let _ = write!(out, "s{sem}>={value}");
        }
        out.push_str(") ");
    }
    out.push_str(inst.op.opcode().mnemonic());
    write_fields(&inst.op, out);
    if let Some(sem) = inst.sync.signal {
        let _ = write!(out, " signal(s{sem})");
    }
}

/// Parses one instruction line (the whole rest of the cursor's line).
fn parse_inst(c: &mut AsmCursor) -> Result<Inst, AsmError> {
    let mut sync = Sync::default();
    if c.at_word("wait") {
        c.next();
        c.punct('(')?;
        if !c.eat(')') {
            loop {
                if sync.waits.len() == MAX_WAITS {
                    return Err(c.err(format!(
                        "an instruction waits on at most {MAX_WAITS} semaphores"
                    )));
                }
                let sem = c.semaphore()?;
                if *c.peek() != Tok::Ge {
                    return Err(c.expected("`>=`"));
                }
                c.next();
                let value = c.int("a semaphore value")?;
                sync.waits.push((sem, value));
                if c.eat(')') {
                    break;
                }
                if !c.eat(',') {
                    return Err(c.expected("`,` or `)`"));
                }
            }
        }
    }
    let col = c.col();
    let (mnemonic, _) = c.word("a mnemonic")?;
    let Some(opcode) = Opcode::from_mnemonic(&mnemonic) else {
        return Err(c.err_at(col, format!("unknown mnemonic `{mnemonic}`")));
    };
    let op = parse_fields(opcode, c)?;
    if c.at_word("signal") {
        c.next();
        c.punct('(')?;
        sync.signal = Some(c.semaphore()?);
        c.punct(')')?;
    }
    c.end()?;
    Ok(Inst { sync, op })
}

impl fmt::Display for Inst {
    /// The instruction's assembly line, e.g. `wait(s1>=2) tensor_copy out=..., src=... signal(s3)`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut s = String::new();
        write_inst(self, &mut s);
        f.write_str(&s)
    }
}

impl fmt::Display for Op {
    /// The operation's assembly text without semaphores.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut s = String::from(self.opcode().mnemonic());
        write_fields(self, &mut s);
        f.write_str(&s)
    }
}

/// `Display` through the canonical assembly text, for traces and error messages.
macro_rules! display_via_asm {
    ($($ty:ty),*) => {$(
        impl fmt::Display for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                let mut s = String::new();
                self.write_asm(&mut s);
                f.write_str(&s)
            }
        }
    )*};
}

display_via_asm!(TileAp, HbmAp, DmaAp, ScalarArg, Imm, Affine);

impl FromStr for Inst {
    type Err = AsmError;

    /// Parses one instruction line as [`Inst`]'s `Display` writes it (errors are on line 1).
    fn from_str(s: &str) -> Result<Inst, AsmError> {
        let mut c = AsmCursor::new(1, s)?;
        parse_inst(&mut c)
    }
}

/// True for names that `.tensor` writes without quotes.
fn is_bare_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// True for a stream that `disassemble` may leave out: just a plain `end` and no location.
fn is_default_stream(program: &Program, index: usize) -> bool {
    let plain_end = program.streams[index].as_slice() == [Inst::new(Op::End {})];
    let no_loc = program.locs.is_empty() || program.locs.get(index) == Some(&vec![None]);
    plain_end && no_loc
}

/// Writes a program in canonical assembly text (see `ISA.md`, "Assembly syntax").
///
/// The output is `.preset`, `.hbm`, one `.tensor` per tensor, `.source` and `.locs` when the
/// program has debug information, then a blank line and `.stream NAME` before the
/// instructions of every stream that holds more than a plain `end`.
pub fn disassemble(program: &Program) -> String {
    let mut out = String::new();
    let _ = writeln!(out, ".preset {}", program.preset.name());
    let _ = writeln!(out, ".hbm {}", program.hbm_size);
    for t in &program.tensors {
        out.push_str(".tensor ");
        if is_bare_name(&t.name) {
            out.push_str(&t.name);
        } else {
            let _ = write!(out, "{:?}", t.name);
        }
        let shape: Vec<String> = t.shape.iter().map(|d| d.to_string()).collect();
        let _ = writeln!(
            out,
            " {} {} [{}] @{}",
            t.role,
            t.dtype,
            shape.join(", "),
            t.offset
        );
    }
    if let Some(source) = &program.source {
        let _ = writeln!(out, ".source {source:?}");
    }
    if !program.locs.is_empty() {
        out.push_str(".locs\n");
    }
    if let Some(origin) = &program.origin {
        write_origin(origin, &mut out);
    }
    for (index, stream) in program.streams.iter().enumerate().take(NUM_STREAMS) {
        if is_default_stream(program, index) {
            continue;
        }
        let engine = Engine::from_index(index).map_or_else(String::new, |e| e.name());
        let _ = writeln!(out, "\n.stream {engine}");
        let locs = program.locs.get(index);
        for (i, inst) in stream.iter().enumerate() {
            if let Some(Some(loc)) = locs.and_then(|l| l.get(i)) {
                let _ = writeln!(out, "{INDENT}.loc {}:{}", loc.line, loc.col);
            }
            out.push_str(INDENT);
            write_inst(inst, &mut out);
            out.push('\n');
        }
    }
    out
}

/// Writes `name` bare when `.tensor` would, else quoted.
fn write_name(name: &str, out: &mut String) {
    if is_bare_name(name) {
        out.push_str(name);
    } else {
        let _ = write!(out, "{name:?}");
    }
}

/// Writes the origin directives of a compiled program (see `ISA.md`, "Assembly syntax").
fn write_origin(origin: &Origin, out: &mut String) {
    let _ = write!(out, ".origin {:?} kernel ", origin.path);
    write_name(&origin.kernel, out);
    out.push('\n');
    out.push_str(".origin-sha3 ");
    for b in origin.source_sha3 {
        let _ = write!(out, "{b:02x}");
    }
    out.push('\n');
    for (name, value) in &origin.defines {
        out.push_str(".origin-define ");
        write_name(name, out);
        let _ = writeln!(out, " {value}");
    }
    let policy = if origin.strict_dtypes {
        "strict"
    } else {
        "wide"
    };
    let _ = writeln!(out, ".origin-dtype-policy {policy}");
    for name in &origin.disabled_passes {
        out.push_str(".origin-disable-pass ");
        write_name(name, out);
        out.push('\n');
    }
}

/// Reads a name written bare or quoted.
fn read_name(c: &mut AsmCursor, what: &str) -> Result<String, AsmError> {
    match c.peek().clone() {
        Tok::Str(s) | Tok::Word(s) => {
            c.next();
            Ok(s)
        }
        _ => Err(c.expected(what)),
    }
}

/// Parses the hexadecimal digits of a SHA3-256 digest.
fn parse_sha3(hex: &str) -> Option<[u8; SOURCE_HASH_BYTES]> {
    if hex.len() != 2 * SOURCE_HASH_BYTES || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    let mut out = [0u8; SOURCE_HASH_BYTES];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).ok()?;
    }
    Some(out)
}

/// An origin being assembled: the `.origin` line's number, and the hash once given.
struct PendingOrigin {
    line: usize,
    origin: Origin,
    has_hash: bool,
}

/// What the assembler has read so far.
struct Assembler {
    preset: Option<Preset>,
    hbm_size: Option<u64>,
    tensors: Vec<TensorDecl>,
    source: Option<String>,
    has_locs: bool,
    streams: Vec<Option<Vec<Inst>>>,
    locs: Vec<Vec<Option<SrcLoc>>>,
    current: Option<usize>,
    /// A `.loc` waiting for its instruction, with the line it was on.
    pending_loc: Option<(SrcLoc, usize)>,
    /// The origin of `.origin` and the `.origin-*` lines after it.
    origin: Option<PendingOrigin>,
}

impl Assembler {
    /// The origin that an `.origin-*` directive adds to, or an error when no `.origin`
    /// line came before it.
    fn origin_of(
        &mut self,
        c: &AsmCursor,
        col: usize,
        name: &str,
    ) -> Result<&mut PendingOrigin, AsmError> {
        match self.origin.as_mut() {
            Some(o) => Ok(o),
            None => Err(c.err_at(col, format!("`{name}` needs an `.origin` line before it"))),
        }
    }

    /// Handles one directive line (the cursor is on the directive word).
    fn directive(&mut self, c: &mut AsmCursor) -> Result<(), AsmError> {
        let (name, col) = c.word("a directive")?;
        let twice = |what: &str| c.err_at(col, format!("`{what}` is given twice"));
        match name.as_str() {
            ".preset" => {
                if self.preset.is_some() {
                    return Err(twice(".preset"));
                }
                let (p, pcol) = c.word("a preset name")?;
                let Some(p) = Preset::from_name(&p) else {
                    return Err(c.err_at(pcol, format!("unknown preset `{p}` (known: default)")));
                };
                self.preset = Some(p);
            }
            ".hbm" => {
                if self.hbm_size.is_some() {
                    return Err(twice(".hbm"));
                }
                self.hbm_size = Some(c.int("the HBM size in bytes")?);
            }
            ".tensor" => {
                let name = match c.peek().clone() {
                    Tok::Str(s) => {
                        c.next();
                        s
                    }
                    Tok::Word(w) => {
                        c.next();
                        w
                    }
                    _ => return Err(c.expected("a tensor name")),
                };
                let role = match c.peek() {
                    Tok::Word(w) if Role::from_name(w).is_some() => {
                        let r = Role::from_name(w);
                        c.next();
                        r
                    }
                    _ => None,
                };
                let Some(role) = role else {
                    return Err(c.expected("a tensor role (input, output, scratch)"));
                };
                let dcol = c.col();
                let (dtype, _) = c.word("a dtype")?;
                let Some(dtype) = Dtype::from_name(&dtype) else {
                    return Err(c.err_at(dcol, format!("unknown dtype `{dtype}`")));
                };
                c.punct('[')?;
                let mut shape = Vec::new();
                if !c.eat(']') {
                    loop {
                        if shape.len() == MAX_TENSOR_RANK {
                            return Err(c.err(format!(
                                "a tensor has at most {MAX_TENSOR_RANK} dimensions"
                            )));
                        }
                        shape.push(c.int("a dimension")?);
                        if c.eat(']') {
                            break;
                        }
                        if !c.eat(',') {
                            return Err(c.expected("`,` or `]`"));
                        }
                    }
                }
                c.punct('@')?;
                let offset = c.int("a byte offset")?;
                self.tensors.push(TensorDecl {
                    name,
                    role,
                    dtype,
                    shape,
                    offset,
                });
            }
            ".source" => {
                if self.source.is_some() {
                    return Err(twice(".source"));
                }
                let Tok::Str(s) = c.peek().clone() else {
                    return Err(c.expected("a quoted file name"));
                };
                c.next();
                self.source = Some(s);
            }
            ".locs" => self.has_locs = true,
            ".origin" => {
                if self.origin.is_some() {
                    return Err(twice(".origin"));
                }
                let Tok::Str(path) = c.peek().clone() else {
                    return Err(c.expected("a quoted source path"));
                };
                c.next();
                c.keyword("kernel")?;
                let kernel = read_name(c, "a kernel name")?;
                self.origin = Some(PendingOrigin {
                    line: c.line,
                    origin: Origin {
                        path,
                        source_sha3: [0; SOURCE_HASH_BYTES],
                        kernel,
                        defines: Vec::new(),
                        strict_dtypes: false,
                        disabled_passes: Vec::new(),
                    },
                    has_hash: false,
                });
            }
            ".origin-sha3" => {
                let (hex, hcol) = c.word("a SHA3-256 digest (64 hexadecimal digits)")?;
                let Some(hash) = parse_sha3(&hex) else {
                    return Err(
                        c.err_at(hcol, "expected a SHA3-256 digest (64 hexadecimal digits)")
                    );
                };
                let o = self.origin_of(c, col, &name)?;
                if o.has_hash {
                    return Err(c.err_at(col, "`.origin-sha3` is given twice"));
                }
                o.origin.source_sha3 = hash;
                o.has_hash = true;
            }
            ".origin-define" => {
                let size = read_name(c, "a size name")?;
                let value = c.int("the size's value")?;
                self.origin_of(c, col, &name)?
                    .origin
                    .defines
                    .push((size, value));
            }
            ".origin-dtype-policy" => {
                let (policy, pcol) = c.word("a dtype policy (wide or strict)")?;
                let strict = match policy.as_str() {
                    "wide" => false,
                    "strict" => true,
                    _ => {
                        return Err(c.err_at(
                            pcol,
                            format!("unknown dtype policy `{policy}` (expected wide or strict)"),
                        ))
                    }
                };
                self.origin_of(c, col, &name)?.origin.strict_dtypes = strict;
            }
            ".origin-disable-pass" => {
                let pass = read_name(c, "a pass name")?;
                self.origin_of(c, col, &name)?
                    .origin
                    .disabled_passes
                    .push(pass);
            }
            ".stream" => {
                self.check_no_pending_loc()?;
                let (name, scol) = c.word("an engine name")?;
                let Some(engine) = Engine::from_name(&name) else {
                    return Err(c.err_at(
                        scol,
                        format!(
                            "unknown stream `{name}` (expected tensor, vector, scalar, gpsimd \
                             or dma0 .. dma15)"
                        ),
                    ));
                };
                let index = engine.index();
                if self.streams[index].is_some() {
                    return Err(c.err_at(scol, format!("stream `{name}` is given twice")));
                }
                self.streams[index] = Some(Vec::new());
                self.current = Some(index);
            }
            ".loc" => {
                if self.current.is_none() {
                    return Err(c.err_at(col, "`.loc` outside a stream"));
                }
                if self.pending_loc.is_some() {
                    return Err(c.err_at(col, "two `.loc` lines for one instruction"));
                }
                let line = c.int("a line number")?;
                c.punct(':')?;
                let lcol = c.int("a column number")?;
                self.pending_loc = Some((SrcLoc { line, col: lcol }, c.line));
                self.has_locs = true;
            }
            other => {
                return Err(c.err_at(
                    col,
                    format!(
                        "unknown directive `{other}` (expected .preset, .hbm, .tensor, \
                         .source, .locs, .origin, .origin-sha3, .origin-define, \
                         .origin-dtype-policy, .origin-disable-pass, .stream or .loc)"
                    ),
                ))
            }
        }
        c.end()
    }

    /// A `.loc` must be followed by an instruction of the same stream.
    fn check_no_pending_loc(&self) -> Result<(), AsmError> {
        match self.pending_loc {
            Some((_, line)) => Err(AsmError {
                line,
                col: 1,
                message: "`.loc` is not followed by an instruction".into(),
            }),
            None => Ok(()),
        }
    }
}

/// Assembles program text (see `ISA.md`, "Assembly syntax"). Streams that are not given
/// hold just `end`. The result is well-formed but not verified: call [`crate::verify`].
pub fn assemble(text: &str) -> Result<Program, AsmError> {
    let mut a = Assembler {
        preset: None,
        hbm_size: None,
        tensors: Vec::new(),
        source: None,
        has_locs: false,
        streams: vec![None; NUM_STREAMS],
        locs: vec![Vec::new(); NUM_STREAMS],
        current: None,
        pending_loc: None,
        origin: None,
    };
    for (i, line) in text.lines().enumerate() {
        let mut c = AsmCursor::new(i + 1, line)?;
        match c.peek() {
            Tok::End => continue,
            Tok::Word(w) if w.starts_with('.') => a.directive(&mut c)?,
            _ => {
                let Some(index) = a.current else {
                    return Err(c.err("instruction outside a stream (write `.stream NAME` first)"));
                };
                let inst = parse_inst(&mut c)?;
                if let Some(stream) = a.streams[index].as_mut() {
                    stream.push(inst);
                }
                a.locs[index].push(a.pending_loc.take().map(|(loc, _)| loc));
            }
        }
    }
    a.check_no_pending_loc()?;
    let origin = match a.origin {
        None => None,
        Some(o) if !o.has_hash => {
            return Err(AsmError {
                line: o.line,
                col: 1,
                message: "`.origin` needs an `.origin-sha3` line with the source's digest".into(),
            })
        }
        Some(o) => Some(o.origin),
    };
    let mut streams = Vec::with_capacity(NUM_STREAMS);
    let mut locs = Vec::new();
    for (stream, stream_locs) in a.streams.into_iter().zip(a.locs) {
        match stream {
            Some(stream) => {
                streams.push(stream);
                locs.push(stream_locs);
            }
            None => {
                streams.push(vec![Inst::new(Op::End {})]);
                locs.push(vec![None]);
            }
        }
    }
    Ok(Program {
        preset: a.preset.unwrap_or(Preset::Default),
        hbm_size: a.hbm_size.unwrap_or(0),
        tensors: a.tensors,
        streams,
        source: a.source,
        locs: if a.has_locs { locs } else { Vec::new() },
        origin,
    })
}
