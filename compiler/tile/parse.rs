//! Reads tile IR text, as `Display for TileFunc` writes it (see `print.rs` for the format),
//! so that tests and bug reports can state tile functions directly.
//!
//! Besides the canonical text it accepts blank lines, `;` comments (outside brackets and
//! parentheses), extra spaces, and instructions without a span (`@S..E`, default `0..0`).
//! Buffers are declared `b0`, `b1`, ... in order, before the instructions. Instructions
//! may carry any distinct numbers (a pass may have inserted some out of numeric order);
//! numbers that no line uses become `nop` placeholders outside the layout, so printing
//! the parsed function reproduces the text. The parser never panics.

use super::{Buf, BufData, BufKind, Placement, TInst, TileFunc, TileInst};
use crate::frontend::typed::Span;
use cranelift_entity::EntityRef;
use isa::{Dtype, Engine, Inst, Op, Role};
use std::fmt;

/// A parse error: 1-based line and column (in characters) and what was wrong.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParseError {
    pub line: usize,
    pub col: usize,
    pub message: String,
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}: {}", self.line, self.col, self.message)
    }
}

impl std::error::Error for ParseError {}

/// A cursor over the characters of one line.
struct Line<'a> {
    chars: Vec<char>,
    pos: usize,
    line: usize,
    text: &'a str,
}

impl<'a> Line<'a> {
    fn new(line: usize, text: &'a str) -> Line<'a> {
        Line {
            chars: text.chars().collect(),
            pos: 0,
            line,
            text,
        }
    }

    fn err_at(&self, pos: usize, message: impl Into<String>) -> ParseError {
        ParseError {
            line: self.line,
            col: pos + 1,
            message: message.into(),
        }
    }

    fn err(&self, message: impl Into<String>) -> ParseError {
        self.err_at(self.pos, message)
    }

    fn skip_ws(&mut self) {
        while self.chars.get(self.pos).is_some_and(|c| c.is_whitespace()) {
            self.pos += 1;
        }
    }

    fn peek(&mut self) -> Option<char> {
        self.skip_ws();
        self.chars.get(self.pos).copied()
    }

    /// Describes the next token for "found ..." messages.
    fn found(&mut self) -> String {
        match self.peek() {
            None => "end of line".to_string(),
            Some(_) => {
                let rest: String = self.chars[self.pos..].iter().take(12).collect();
                format!("`{rest}`")
            }
        }
    }

    fn expected(&mut self, what: &str) -> ParseError {
        let found = self.found();
        self.err(format!("expected {what}, found {found}"))
    }

    /// Consumes `c` if it is next.
    fn eat(&mut self, c: char) -> bool {
        if self.peek() == Some(c) {
            self.pos += 1;
            true
        } else {
            false
        }
    }

    fn expect(&mut self, c: char) -> Result<(), ParseError> {
        if self.eat(c) {
            Ok(())
        } else {
            Err(self.expected(&format!("`{c}`")))
        }
    }

    /// Takes a run of ASCII letters, digits and `_`.
    fn word(&mut self, what: &str) -> Result<String, ParseError> {
        self.skip_ws();
        let start = self.pos;
        while self
            .chars
            .get(self.pos)
            .is_some_and(|c| c.is_ascii_alphanumeric() || *c == '_')
        {
            self.pos += 1;
        }
        if start == self.pos {
            return Err(self.expected(what));
        }
        Ok(self.chars[start..self.pos].iter().collect())
    }

    /// Takes a run of decimal digits as an integer of type `T`.
    fn int<T: std::str::FromStr>(&mut self, what: &str) -> Result<T, ParseError> {
        self.skip_ws();
        let start = self.pos;
        while self.chars.get(self.pos).is_some_and(|c| c.is_ascii_digit()) {
            self.pos += 1;
        }
        if start == self.pos {
            return Err(self.expected(what));
        }
        let digits: String = self.chars[start..self.pos].iter().collect();
        digits
            .parse()
            .map_err(|_| self.err_at(start, format!("{what} `{digits}` is out of range")))
    }

    /// Takes a name: bare, or double-quoted with Rust's escapes.
    fn name(&mut self, what: &str) -> Result<String, ParseError> {
        if self.peek() != Some('"') {
            return self.word(what);
        }
        let start = self.pos;
        self.pos += 1;
        let mut s = String::new();
        loop {
            let Some(&c) = self.chars.get(self.pos) else {
                return Err(self.err_at(start, "unterminated string: expected a closing `\"`"));
            };
            self.pos += 1;
            match c {
                '"' => return Ok(s),
                '\\' => {
                    let Some(&e) = self.chars.get(self.pos) else {
                        return Err(self.err("expected an escape after `\\`"));
                    };
                    self.pos += 1;
                    match e {
                        'n' => s.push('\n'),
                        'r' => s.push('\r'),
                        't' => s.push('\t'),
                        '0' => s.push('\0'),
                        '\\' | '"' | '\'' => s.push(e),
                        'u' => {
                            let rest: String = self.chars[self.pos..].iter().collect();
                            let close = rest.find('}');
                            let ch = match (rest.starts_with('{'), close) {
                                (true, Some(close)) => u32::from_str_radix(&rest[1..close], 16)
                                    .ok()
                                    .and_then(char::from_u32)
                                    .map(|ch| (ch, rest[..=close].chars().count())),
                                _ => None,
                            };
                            let Some((ch, len)) = ch else {
                                return Err(self.err("expected a unicode escape like `\\u{1b}`"));
                            };
                            s.push(ch);
                            self.pos += len;
                        }
                        other => return Err(self.err(format!("unknown string escape `\\{other}`"))),
                    }
                }
                c => s.push(c),
            }
        }
    }

    /// Takes an entity name `PREFIX<number>`.
    fn entity(&mut self, prefix: &str, what: &str) -> Result<u32, ParseError> {
        let start = {
            self.skip_ws();
            self.pos
        };
        let w = self.word(what)?;
        match w.strip_prefix(prefix).map(|n| (n, n.parse::<u32>())) {
            Some((n, Ok(v))) if !n.starts_with('+') && v < u32::MAX => Ok(v),
            _ => Err(self.err_at(start, format!("expected {what}, found `{w}`"))),
        }
    }

    fn at_end(&mut self) -> bool {
        self.peek().is_none()
    }

    fn end(&mut self) -> Result<(), ParseError> {
        if self.at_end() {
            Ok(())
        } else {
            Err(self.expected("end of line"))
        }
    }

    /// The byte offset in `text` of the character position `pos`.
    fn byte_offset(&self, pos: usize) -> usize {
        self.text
            .char_indices()
            .nth(pos)
            .map_or(self.text.len(), |(b, _)| b)
    }
}

/// Removes a `;` comment: a `;` outside quotes, brackets and parentheses.
fn strip_comment(text: &str) -> &str {
    let mut depth = 0usize;
    let mut quoted = false;
    let mut escaped = false;
    for (i, c) in text.char_indices() {
        if quoted {
            match (escaped, c) {
                (true, _) => escaped = false,
                (false, '\\') => escaped = true,
                (false, '"') => quoted = false,
                _ => {}
            }
            continue;
        }
        match c {
            '"' => quoted = true,
            '[' | '(' => depth += 1,
            ']' | ')' => depth = depth.saturating_sub(1),
            ';' if depth == 0 => return &text[..i],
            _ => {}
        }
    }
    text
}

/// One parsed instruction line, before instructions are numbered.
struct ParsedInst {
    number: u32,
    line: usize,
    inst: TileInst,
    sync: isa::Sync,
    span: Span,
}

/// Parses a tile function from text.
pub fn parse(text: &str) -> Result<TileFunc, ParseError> {
    let mut func: Option<TileFunc> = None;
    let mut closed = false;
    let mut insts: Vec<ParsedInst> = Vec::new();
    let mut last_line = 0;
    for (index, raw) in text.lines().enumerate() {
        let line_no = index + 1;
        last_line = line_no;
        let body = strip_comment(raw);
        let mut l = Line::new(line_no, body);
        if l.at_end() {
            continue;
        }
        if closed {
            return Err(l.err("nothing may follow the closing `}` of the function"));
        }
        let Some(f) = func.as_mut() else {
            func = Some(header(&mut l)?);
            continue;
        };
        if l.eat('}') {
            l.end()?;
            closed = true;
            continue;
        }
        let start = l.pos;
        let w = l.word("a buffer `bN = ...`, an instruction `instN = ...` or `}`")?;
        l.pos = start;
        if w.starts_with("inst") {
            insts.push(inst_line(&mut l)?);
        } else if w.starts_with('b') {
            if !insts.is_empty() {
                return Err(l.err("buffers must be declared before the instructions"));
            }
            buf_line(&mut l, f)?;
        } else {
            return Err(l.err(format!(
                "expected a buffer `bN = ...`, an instruction `instN = ...` or `}}`, found `{w}`"
            )));
        }
    }
    let Some(mut f) = func else {
        return Err(ParseError {
            line: last_line.max(1),
            col: 1,
            message: "expected `tile kernel NAME {`, found end of input".into(),
        });
    };
    if !closed {
        return Err(ParseError {
            line: last_line.max(1),
            col: 1,
            message: "expected the closing `}` of the function, found end of input".into(),
        });
    }
    number_insts(&mut f, insts)?;
    Ok(f)
}

/// `tile kernel NAME [synced] {`.
fn header(l: &mut Line<'_>) -> Result<TileFunc, ParseError> {
    for kw in ["tile", "kernel"] {
        let start = l.pos;
        match l.word(&format!("`{kw}`")) {
            Ok(w) if w == kw => {}
            _ => {
                l.pos = start;
                return Err(l.expected("`tile kernel NAME {`"));
            }
        }
    }
    let name = l.name("the kernel name")?;
    let mut f = TileFunc::new(&name);
    if l.peek() != Some('{') {
        let start = l.pos;
        let w = l.word("`synced` or `{`")?;
        if w != "synced" {
            return Err(l.err_at(start, format!("expected `synced` or `{{`, found `{w}`")));
        }
        f.synced = true;
    }
    l.expect('{')?;
    l.end()?;
    Ok(f)
}

/// `bN = hbm ROLE NAME DTYPE[SHAPE] [@ OFF]` or `bN = sbuf|psum DTYPE PxBYTES [@ pP+OFF]`.
fn buf_line(l: &mut Line<'_>, f: &mut TileFunc) -> Result<(), ParseError> {
    let start = {
        l.skip_ws();
        l.pos
    };
    let n = l.entity("b", "a buffer name like `b0`")?;
    let expect = f.bufs.len() as u32;
    if n != expect {
        return Err(l.err_at(
            start,
            format!("buffers must be declared in order: expected b{expect}, found b{n}"),
        ));
    }
    l.expect('=')?;
    let kstart = {
        l.skip_ws();
        l.pos
    };
    let kind = l.word("a memory (hbm, sbuf, psum)")?;
    let data = match kind.as_str() {
        "hbm" => {
            let rstart = {
                l.skip_ws();
                l.pos
            };
            let role = l.word("a role (input, output, scratch)")?;
            let Some(role) = Role::from_name(&role) else {
                return Err(l.err_at(
                    rstart,
                    format!("unknown role `{role}` (expected input, output, scratch)"),
                ));
            };
            let name = l.name("the tensor's name")?;
            let dtype = dtype(l)?;
            l.expect('[')?;
            let mut shape = Vec::new();
            if !l.eat(']') {
                loop {
                    shape.push(l.int::<u64>("a dimension")?);
                    if l.eat(']') {
                        break;
                    }
                    l.expect(',')?;
                }
            }
            let bytes = shape
                .iter()
                .try_fold(dtype.size() as u64, |acc, &d| acc.checked_mul(d))
                .ok_or_else(|| l.err(format!("the tensor `{name}` has more bytes than fit u64")))?;
            BufData {
                kind: BufKind::Hbm { name, role, shape },
                dtype,
                partitions: 1,
                bytes,
            }
        }
        "sbuf" | "psum" => {
            let dtype = dtype(l)?;
            let partitions = l.int::<u32>("a partition count")?;
            if !l.eat('x') {
                return Err(l.expected("`x` between partitions and bytes, as in `128x256`"));
            }
            let bytes = l.int::<u64>("bytes per partition")?;
            BufData {
                kind: if kind == "sbuf" {
                    BufKind::Sbuf
                } else {
                    BufKind::Psum
                },
                dtype,
                partitions,
                bytes,
            }
        }
        other => {
            return Err(l.err_at(
                kstart,
                format!("unknown memory `{other}` (expected hbm, sbuf, psum)"),
            ))
        }
    };
    let placement = if l.eat('@') {
        Some(if data.is_tile() {
            if !l.eat('p') {
                return Err(l.expected("a tile placement like `p0+1024`"));
            }
            let partition = l.int::<u32>("a start partition")?;
            l.expect('+')?;
            let offset = l.int::<u32>("a byte offset")?;
            Placement::Tile { partition, offset }
        } else {
            Placement::Hbm(l.int::<u64>("an HBM byte offset")?)
        })
    } else {
        None
    };
    l.end()?;
    let b = f.bufs.push(data);
    f.placement[b] = placement;
    Ok(())
}

/// A dtype name.
fn dtype(l: &mut Line<'_>) -> Result<Dtype, ParseError> {
    let start = {
        l.skip_ws();
        l.pos
    };
    let w = l.word("a dtype")?;
    Dtype::from_name(&w).ok_or_else(|| {
        let names: Vec<&str> = Dtype::ALL.iter().map(|d| d.name()).collect();
        l.err_at(
            start,
            format!("unknown dtype `{w}` (expected {})", names.join(", ")),
        )
    })
}

/// `instN = ENGINE: INST {bA, bB} [@S..E]`.
fn inst_line(l: &mut Line<'_>) -> Result<ParsedInst, ParseError> {
    let number = l.entity("inst", "an instruction name like `inst0`")?;
    l.expect('=')?;
    let estart = {
        l.skip_ws();
        l.pos
    };
    let ename = l.word("an engine (tensor, vector, scalar, gpsimd, dma0 .. dma15)")?;
    let Some(engine) = Engine::from_name(&ename) else {
        return Err(l.err_at(
            estart,
            format!(
                "unknown engine `{ename}` (expected tensor, vector, scalar, gpsimd, dma0 .. dma15)"
            ),
        ));
    };
    l.expect(':')?;
    l.skip_ws();
    let text_start = l.pos;
    let Some(brace) = l.chars[text_start..].iter().position(|&c| c == '{') else {
        return Err(l.err_at(
            l.chars.len(),
            "expected the operand buffers `{b0, b1}` after the instruction",
        ));
    };
    let text_end = text_start + brace;
    let from = l.byte_offset(text_start);
    let to = l.byte_offset(text_end);
    let inst: Inst = l.text[from..to]
        .parse()
        .map_err(|e: isa::AsmError| ParseError {
            line: l.line,
            col: text_start + e.col,
            message: e.message,
        })?;
    l.pos = text_end;
    l.expect('{')?;
    let mut bufs = smallvec::SmallVec::new();
    if !l.eat('}') {
        loop {
            let b = l.entity("b", "a buffer name like `b0`")?;
            bufs.push(Buf::new(b as usize));
            if l.eat('}') {
                break;
            }
            l.expect(',')?;
        }
    }
    let mut span = Span::default();
    if l.eat('@') {
        let start = l.int::<u32>("a span start")?;
        if !(l.eat('.') && l.eat('.')) {
            return Err(l.expected("`..` in a span like `@12..20`"));
        }
        let end = l.int::<u32>("a span end")?;
        span = Span { start, end };
    }
    l.end()?;
    Ok(ParsedInst {
        number,
        line: l.line,
        inst: TileInst {
            op: inst.op,
            engine,
            bufs,
        },
        sync: inst.sync,
        span,
    })
}

/// Creates the instructions under their numbers, the layout in text order, and checks
/// that every operand buffer is declared.
fn number_insts(f: &mut TileFunc, insts: Vec<ParsedInst>) -> Result<(), ParseError> {
    let count = insts.len();
    let mut slots: Vec<Option<usize>> = Vec::new();
    for (k, p) in insts.iter().enumerate() {
        let n = p.number as usize;
        if n > 2 * count + 4096 {
            return Err(ParseError {
                line: p.line,
                col: 1,
                message: format!(
                    "inst{n} is numbered far beyond the {count} instructions of the function"
                ),
            });
        }
        if n >= slots.len() {
            slots.resize(n + 1, None);
        }
        if slots[n].is_some() {
            return Err(ParseError {
                line: p.line,
                col: 1,
                message: format!("inst{n} is defined twice"),
            });
        }
        slots[n] = Some(k);
        for b in &p.inst.bufs {
            if b.index() >= f.bufs.len() {
                return Err(ParseError {
                    line: p.line,
                    col: 1,
                    message: format!("inst{n} uses {b}, which is not declared"),
                });
            }
        }
    }
    let mut insts: Vec<Option<ParsedInst>> = insts.into_iter().map(Some).collect();
    let mut order: Vec<(usize, TInst)> = Vec::with_capacity(count);
    for slot in slots {
        let placeholder = TileInst {
            op: Op::Nop {},
            engine: Engine::Tensor,
            bufs: smallvec::SmallVec::new(),
        };
        match slot.and_then(|k| insts.get_mut(k).and_then(Option::take).map(|p| (k, p))) {
            Some((k, p)) => {
                let i = f.insts.push(p.inst);
                f.spans[i] = p.span;
                if p.sync != isa::Sync::default() {
                    f.sync[i] = p.sync;
                }
                order.push((k, i));
            }
            None => {
                f.insts.push(placeholder);
            }
        }
    }
    order.sort();
    f.layout = order.into_iter().map(|(_, i)| i).collect();
    Ok(())
}
