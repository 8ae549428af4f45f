//! Parses the text form of tensor IR (as `print.rs` writes it) back into a `Function`, so
//! that any pass can be tested from text. Value names map to fresh entities in order of
//! appearance; a compactly numbered text therefore parses to the same numbering.

use super::print::{BINARY_NAMES, REDUCE_NAMES, UNARY_NAMES};
use super::{ConvAttrs, Function, Pool, PoolKind, SliceAxis, Span, TOp, TensorType, Value};
use isa::Dtype;
use std::collections::HashMap;

/// A syntax error in IR text, with its 1-based line.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {message}")]
pub struct ParseError {
    pub line: usize,
    pub message: String,
}

/// Parses every kernel of an IR text.
pub fn parse(text: &str) -> Result<Vec<Function>, ParseError> {
    let mut p = Parser {
        toks: tokenize(text)?,
        pos: 0,
    };
    let mut funcs = Vec::new();
    while p.peek().is_some() {
        funcs.push(p.kernel()?);
    }
    Ok(funcs)
}

#[derive(Clone, Debug, PartialEq)]
enum Tok {
    Word(String),
    Int(i64),
    Float(f64),
    Punct(char),
    Arrow,
    DotDot,
}

struct Parser {
    toks: Vec<(Tok, usize)>,
    pos: usize,
}

fn tokenize(text: &str) -> Result<Vec<(Tok, usize)>, ParseError> {
    let mut out = Vec::new();
    for (lineno, line) in text.lines().enumerate() {
        let line_no = lineno + 1;
        let line = line.split(';').next().unwrap_or("");
        let b = line.as_bytes();
        let mut i = 0;
        while i < b.len() {
            let c = b[i] as char;
            if c.is_whitespace() {
                i += 1;
            } else if c == '-' && b.get(i + 1) == Some(&b'>') {
                out.push((Tok::Arrow, line_no));
                i += 2;
            } else if c == '.' && b.get(i + 1) == Some(&b'.') {
                out.push((Tok::DotDot, line_no));
                i += 2;
            } else if c.is_ascii_digit()
                || (c == '-'
                    && b.get(i + 1)
                        .is_some_and(|d| d.is_ascii_digit() || *d == b'i'))
            {
                let start = i;
                i += 1;
                while i < b.len() {
                    let d = b[i] as char;
                    let exp_sign = (d == '-' || d == '+') && matches!(b[i - 1], b'e' | b'E');
                    let dot = d == '.' && b.get(i + 1) != Some(&b'.');
                    if d.is_ascii_alphanumeric() || dot || exp_sign {
                        i += 1;
                    } else {
                        break;
                    }
                }
                let s = &line[start..i];
                let tok = if let Ok(n) = s.parse::<i64>() {
                    Tok::Int(n)
                } else if s == "-inf" {
                    Tok::Float(f64::NEG_INFINITY)
                } else if let Ok(x) = s.parse::<f64>() {
                    Tok::Float(x)
                } else {
                    return Err(ParseError {
                        line: line_no,
                        message: format!("bad number `{s}`"),
                    });
                };
                out.push((tok, line_no));
            } else if c.is_ascii_alphabetic() || c == '_' {
                let start = i;
                while i < b.len() && ((b[i] as char).is_ascii_alphanumeric() || b[i] == b'_') {
                    i += 1;
                }
                out.push((Tok::Word(line[start..i].to_string()), line_no));
            } else if "()[]{}<>,:=@".contains(c) {
                out.push((Tok::Punct(c), line_no));
                i += 1;
            } else {
                return Err(ParseError {
                    line: line_no,
                    message: format!("unexpected character `{c}`"),
                });
            }
        }
    }
    Ok(out)
}

impl Parser {
    fn peek(&self) -> Option<&Tok> {
        self.toks.get(self.pos).map(|(t, _)| t)
    }

    fn line(&self) -> usize {
        self.toks
            .get(self.pos)
            .or_else(|| self.toks.last())
            .map(|(_, l)| *l)
            .unwrap_or(1)
    }

    fn err<T>(&self, message: String) -> Result<T, ParseError> {
        Err(ParseError {
            line: self.line(),
            message,
        })
    }

    fn next(&mut self) -> Result<Tok, ParseError> {
        match self.toks.get(self.pos) {
            Some((t, _)) => {
                self.pos += 1;
                Ok(t.clone())
            }
            None => self.err("unexpected end of text".into()),
        }
    }

    fn eat(&mut self, t: &Tok) -> bool {
        if self.peek() == Some(t) {
            self.pos += 1;
            true
        } else {
            false
        }
    }

    fn expect_punct(&mut self, c: char) -> Result<(), ParseError> {
        match self.next()? {
            Tok::Punct(d) if d == c => Ok(()),
            t => self.err(format!("expected `{c}`, found {t:?}")),
        }
    }

    fn word(&mut self) -> Result<String, ParseError> {
        match self.next()? {
            Tok::Word(w) => Ok(w),
            t => self.err(format!("expected a name, found {t:?}")),
        }
    }

    fn keyword(&mut self, kw: &str) -> Result<(), ParseError> {
        match self.next()? {
            Tok::Word(w) if w == kw => Ok(()),
            t => self.err(format!("expected `{kw}`, found {t:?}")),
        }
    }

    fn int(&mut self) -> Result<i64, ParseError> {
        match self.next()? {
            Tok::Int(n) => Ok(n),
            t => self.err(format!("expected an integer, found {t:?}")),
        }
    }

    fn uint(&mut self) -> Result<u64, ParseError> {
        let n = self.int()?;
        u64::try_from(n)
            .or_else(|_| self.err(format!("expected a non-negative integer, found {n}")))
    }

    fn float(&mut self) -> Result<f64, ParseError> {
        match self.next()? {
            Tok::Int(n) => Ok(n as f64),
            Tok::Float(x) => Ok(x),
            Tok::Word(w) if w == "inf" => Ok(f64::INFINITY),
            Tok::Word(w) if w == "nan" => Ok(f64::NAN),
            t => self.err(format!("expected a number, found {t:?}")),
        }
    }

    fn ty(&mut self) -> Result<TensorType, ParseError> {
        let name = self.word()?;
        let dtype = match Dtype::from_name(&name) {
            Some(d) => d,
            None => return self.err(format!("unknown dtype `{name}`")),
        };
        self.expect_punct('[')?;
        let mut shape = Vec::new();
        if !self.eat(&Tok::Punct(']')) {
            loop {
                shape.push(self.uint()?);
                if self.eat(&Tok::Punct(']')) {
                    break;
                }
                self.expect_punct(',')?;
            }
        }
        Ok(TensorType { dtype, shape })
    }

    fn span(&mut self) -> Result<Span, ParseError> {
        self.expect_punct('@')?;
        let start = self.uint()?;
        if !self.eat(&Tok::DotDot) {
            return self.err("expected `..` in a span".into());
        }
        let end = self.uint()?;
        Ok(Span::new(start as usize, end as usize))
    }

    fn value(&mut self, names: &HashMap<String, Value>) -> Result<Value, ParseError> {
        let w = self.word()?;
        match names.get(&w) {
            Some(v) => Ok(*v),
            None => self.err(format!("use of undefined value `{w}`")),
        }
    }

    fn kernel(&mut self) -> Result<Function, ParseError> {
        self.keyword("kernel")?;
        let name = self.word()?;
        let mut f = Function::new(&name);
        if self.eat(&Tok::Punct('<')) {
            loop {
                let size = self.word()?;
                self.expect_punct('=')?;
                let value = self.uint()?;
                f.sizes.push((size, value));
                if self.eat(&Tok::Punct('>')) {
                    break;
                }
                self.expect_punct(',')?;
            }
        }
        let mut names: HashMap<String, Value> = HashMap::new();
        self.expect_punct('(')?;
        if !self.eat(&Tok::Punct(')')) {
            loop {
                let vname = self.word()?;
                let pname = self.word()?;
                self.expect_punct(':')?;
                let ty = self.ty()?;
                let span = self.span()?;
                let v = f.add_param(&pname, ty, span);
                if names.insert(vname.clone(), v).is_some() {
                    return self.err(format!("value `{vname}` defined twice"));
                }
                if self.eat(&Tok::Punct(')')) {
                    break;
                }
                self.expect_punct(',')?;
            }
        }
        if !self.eat(&Tok::Arrow) {
            return self.err("expected `->`".into());
        }
        self.expect_punct('(')?;
        let mut result_types = Vec::new();
        loop {
            result_types.push(self.ty()?);
            if self.eat(&Tok::Punct(')')) {
                break;
            }
            self.expect_punct(',')?;
        }
        self.expect_punct('{')?;
        loop {
            let w = self.word()?;
            if w == "return" {
                loop {
                    let v = self.value(&names)?;
                    f.results.push(v);
                    if !self.eat(&Tok::Punct(',')) {
                        break;
                    }
                }
                self.expect_punct('}')?;
                break;
            }
            self.expect_punct('=')?;
            let opname = self.word()?;
            let (op, arity) = self.op(&opname)?;
            let mut args = Vec::new();
            match arity {
                Some(arity) => {
                    for i in 0..arity {
                        if i > 0 {
                            self.expect_punct(',')?;
                        }
                        args.push(self.value(&names)?);
                    }
                }
                // Any number of arguments from one, separated by commas.
                None => loop {
                    args.push(self.value(&names)?);
                    if !self.eat(&Tok::Punct(',')) {
                        break;
                    }
                },
            }
            let op = self.attrs(op)?;
            self.expect_punct(':')?;
            let ty = self.ty()?;
            let span = self.span()?;
            let v = f.push(op, &args, ty, span);
            if names.insert(w.clone(), v).is_some() {
                return self.err(format!("value `{w}` defined twice"));
            }
        }
        if f.result_types() != result_types {
            return self.err(format!(
                "kernel {} returns values whose types differ from its signature",
                f.name
            ));
        }
        Ok(f)
    }

    /// The operation of a name, with placeholder attributes, and its arity.
    fn op(&mut self, name: &str) -> Result<(TOp, Option<usize>), ParseError> {
        if let Some((u, _)) = UNARY_NAMES.iter().find(|(_, n)| *n == name) {
            return Ok((TOp::Unary(*u), Some(1)));
        }
        if let Some((b, _)) = BINARY_NAMES.iter().find(|(_, n)| *n == name) {
            return Ok((TOp::Binary(*b), Some(2)));
        }
        if let Some((r, _)) = REDUCE_NAMES.iter().find(|(_, n)| *n == name) {
            let op = TOp::Reduce {
                func: *r,
                axis: 0,
                keepdims: false,
            };
            return Ok((op, Some(1)));
        }
        let op = match name {
            "const" => TOp::Const(0.0),
            "matmul" => TOp::Matmul,
            "transpose" => TOp::Transpose(Vec::new()),
            "reshape" => TOp::Reshape,
            "tril" => TOp::Tril { k: 0, fill: 0.0 },
            "cast" => TOp::Cast,
            "slice" => TOp::Slice(Vec::new()),
            "concat" => TOp::Concat(0),
            "pad" => TOp::Pad {
                before: Vec::new(),
                after: Vec::new(),
                value: 0.0,
            },
            "broadcast_to" => TOp::BroadcastTo,
            "where" => TOp::Where,
            "arange" => TOp::Arange,
            "take" => TOp::Take { axis: 0 },
            "argmax" | "argmin" => TOp::ArgReduce {
                max: name == "argmax",
                axis: 0,
                keepdims: false,
            },
            "cumsum" => TOp::Cumsum { axis: 0 },
            "conv" => TOp::Conv(ConvAttrs {
                stride: Vec::new(),
                padding: Vec::new(),
                dilation: Vec::new(),
                groups: 1,
            }),
            "max_pool" | "avg_pool" => TOp::Pool(Pool {
                kind: if name == "max_pool" {
                    PoolKind::Max
                } else {
                    PoolKind::Avg
                },
                window: Vec::new(),
                stride: Vec::new(),
                padding: Vec::new(),
                dilation: Vec::new(),
                ceil_mode: false,
                count_include_pad: false,
            }),
            _ => return self.err(format!("unknown operation `{name}`")),
        };
        let arity = op.arity();
        Ok((op, arity))
    }

    /// Reads `axis=N keepdims=BOOL`, the attributes of reductions.
    fn axis_keepdims(&mut self) -> Result<(usize, bool), ParseError> {
        self.keyword("axis")?;
        self.expect_punct('=')?;
        let axis = self.uint()? as usize;
        self.keyword("keepdims")?;
        self.expect_punct('=')?;
        let keepdims = match self.word()?.as_str() {
            "true" => true,
            "false" => false,
            w => return self.err(format!("expected true or false, found `{w}`")),
        };
        Ok((axis, keepdims))
    }

    /// Reads the attributes that follow the arguments of `op`.
    fn attrs(&mut self, op: TOp) -> Result<TOp, ParseError> {
        Ok(match op {
            TOp::Const(_) => TOp::Const(self.float()?),
            TOp::Reduce { func, .. } => {
                let (axis, keepdims) = self.axis_keepdims()?;
                TOp::Reduce {
                    func,
                    axis,
                    keepdims,
                }
            }
            TOp::ArgReduce { max, .. } => {
                let (axis, keepdims) = self.axis_keepdims()?;
                TOp::ArgReduce {
                    max,
                    axis,
                    keepdims,
                }
            }
            TOp::Cumsum { .. } => {
                self.keyword("axis")?;
                self.expect_punct('=')?;
                TOp::Cumsum {
                    axis: self.uint()? as usize,
                }
            }
            TOp::Transpose(_) => {
                self.keyword("perm")?;
                self.expect_punct('=')?;
                self.expect_punct('[')?;
                let mut perm = Vec::new();
                loop {
                    perm.push(self.uint()? as usize);
                    if self.eat(&Tok::Punct(']')) {
                        break;
                    }
                    self.expect_punct(',')?;
                }
                TOp::Transpose(perm)
            }
            TOp::Tril { .. } => {
                self.keyword("k")?;
                self.expect_punct('=')?;
                let k = self.int()?;
                self.keyword("fill")?;
                self.expect_punct('=')?;
                TOp::Tril {
                    k,
                    fill: self.float()?,
                }
            }
            TOp::Slice(_) => {
                let start = self.int_list("start")?;
                let step = self.int_list("step")?;
                self.keyword("keep")?;
                self.expect_punct('=')?;
                self.expect_punct('[')?;
                let mut keep = Vec::new();
                loop {
                    keep.push(match self.word()?.as_str() {
                        "true" => true,
                        "false" => false,
                        w => return self.err(format!("expected true or false, found `{w}`")),
                    });
                    if self.eat(&Tok::Punct(']')) {
                        break;
                    }
                    self.expect_punct(',')?;
                }
                if start.len() != step.len() || start.len() != keep.len() {
                    return self.err("a slice needs as many starts, steps and keeps".into());
                }
                let mut axes = Vec::new();
                for ((s, st), k) in start.into_iter().zip(step).zip(keep) {
                    let Ok(s) = u64::try_from(s) else {
                        return self.err(format!("a slice start of {s}"));
                    };
                    axes.push(SliceAxis {
                        start: s,
                        step: st,
                        keep: k,
                    });
                }
                TOp::Slice(axes)
            }
            TOp::Concat(_) => {
                self.keyword("axis")?;
                self.expect_punct('=')?;
                TOp::Concat(self.uint()? as usize)
            }
            TOp::Pad { .. } => {
                let before = self.int_list("before")?;
                let after = self.int_list("after")?;
                self.keyword("value")?;
                self.expect_punct('=')?;
                let value = self.float()?;
                let widths = |l: Vec<i64>| l.into_iter().map(u64::try_from).collect();
                let (Ok(before), Ok(after)) = (widths(before), widths(after)) else {
                    return self.err("a negative pad width".into());
                };
                TOp::Pad {
                    before,
                    after,
                    value,
                }
            }
            TOp::Pool(p) => {
                let list = |this: &mut Self, name: &str| -> Result<Vec<u64>, ParseError> {
                    let l = this.int_list(name)?;
                    match l.into_iter().map(u64::try_from).collect() {
                        Ok(l) => Ok(l),
                        Err(_) => this.err(format!("a negative entry in `{name}`")),
                    }
                };
                let window = list(self, "window")?;
                let stride = list(self, "stride")?;
                let padding = list(self, "padding")?;
                let dilation = if p.kind == PoolKind::Max {
                    list(self, "dilation")?
                } else {
                    vec![1; window.len()]
                };
                let ceil_mode = self.bool_attr("ceil_mode")?;
                let count_include_pad =
                    p.kind == PoolKind::Avg && self.bool_attr("count_include_pad")?;
                let pool = Pool {
                    window,
                    stride,
                    padding,
                    dilation,
                    ceil_mode,
                    count_include_pad,
                    ..p
                };
                if let Err(e) = pool.validate() {
                    return self.err(e);
                }
                TOp::Pool(pool)
            }
            TOp::Take { .. } => {
                self.keyword("axis")?;
                self.expect_punct('=')?;
                TOp::Take {
                    axis: self.uint()? as usize,
                }
            }
            TOp::Conv(_) => {
                let mut lists = Vec::new();
                for name in ["stride", "padding", "dilation"] {
                    let l = self.int_list(name)?;
                    let Ok(l) = l
                        .into_iter()
                        .map(u64::try_from)
                        .collect::<Result<Vec<u64>, _>>()
                    else {
                        return self.err(format!("a negative conv {name}"));
                    };
                    lists.push(l);
                }
                self.keyword("groups")?;
                self.expect_punct('=')?;
                let groups = self.uint()?;
                let dilation = lists.pop().unwrap_or_default();
                let padding = lists.pop().unwrap_or_default();
                let stride = lists.pop().unwrap_or_default();
                TOp::Conv(ConvAttrs {
                    stride,
                    padding,
                    dilation,
                    groups,
                })
            }
            other => other,
        })
    }

    /// Reads `name=true` or `name=false`.
    fn bool_attr(&mut self, name: &str) -> Result<bool, ParseError> {
        self.keyword(name)?;
        self.expect_punct('=')?;
        match self.word()?.as_str() {
            "true" => Ok(true),
            "false" => Ok(false),
            w => self.err(format!("expected true or false, found `{w}`")),
        }
    }

    /// Reads `name=[i, j, ...]` (signed integers).
    fn int_list(&mut self, name: &str) -> Result<Vec<i64>, ParseError> {
        self.keyword(name)?;
        self.expect_punct('=')?;
        self.expect_punct('[')?;
        let mut out = Vec::new();
        loop {
            out.push(self.int()?);
            if self.eat(&Tok::Punct(']')) {
                break;
            }
            self.expect_punct(',')?;
        }
        Ok(out)
    }
}
