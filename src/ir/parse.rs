//! Reads the text form written by [`super::print`] back into a [`Cell`].
//!
//! The parser checks syntax and that every value it reads was defined on an
//! earlier line; everything else (types, shapes, the schedule) is the verifier's
//! job, so a test can start from hand-written IR and see the verifier's verdict.
//! It never panics, whatever the text.

use std::collections::HashMap;
use std::fmt;

use super::*;

#[derive(Clone, Debug, PartialEq)]
pub struct ParseError {
    /// 1-based line number.
    pub line: usize,
    pub message: String,
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "line {}: {}", self.line, self.message)
    }
}

impl std::error::Error for ParseError {}

type Result<T> = std::result::Result<T, String>;

/// A cursor over one line.
struct Cur<'a> {
    s: &'a str,
    pos: usize,
}

impl<'a> Cur<'a> {
    fn new(s: &'a str) -> Cur<'a> {
        Cur { s, pos: 0 }
    }

    fn rest(&self) -> &'a str {
        &self.s[self.pos..]
    }

    fn ws(&mut self) {
        let r = self.rest();
        self.pos += r.len() - r.trim_start().len();
    }

    fn eat(&mut self, tok: &str) -> bool {
        self.ws();
        if self.rest().starts_with(tok) {
            self.pos += tok.len();
            true
        } else {
            false
        }
    }

    fn expect(&mut self, tok: &str) -> Result<()> {
        if self.eat(tok) {
            Ok(())
        } else {
            Err(format!("expected `{tok}`, found `{}`", self.peek_word()))
        }
    }

    fn peek_word(&self) -> String {
        let r = self.rest().trim_start();
        if r.is_empty() {
            return "end of line".into();
        }
        r.chars().take(16).collect()
    }

    fn at_end(&mut self) -> bool {
        self.ws();
        self.rest().is_empty()
    }

    fn end(&mut self) -> Result<()> {
        if self.at_end() {
            Ok(())
        } else {
            Err(format!("unexpected `{}`", self.peek_word()))
        }
    }

    /// A name: letters, digits, `_`, and a trailing `'`s.
    fn ident(&mut self) -> Result<String> {
        self.ws();
        let r = self.rest();
        let mut end = r
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(r.len());
        while r[end..].starts_with('\'') {
            end += 1;
        }
        if end == 0 || r.as_bytes()[0].is_ascii_digit() {
            return Err(format!("expected a name, found `{}`", self.peek_word()));
        }
        self.pos += end;
        Ok(r[..end].to_string())
    }

    fn uint(&mut self) -> Result<u64> {
        self.ws();
        let r = self.rest();
        let end = r.find(|c: char| !c.is_ascii_digit()).unwrap_or(r.len());
        if end == 0 {
            return Err(format!("expected a number, found `{}`", self.peek_word()));
        }
        self.pos += end;
        r[..end]
            .parse()
            .map_err(|_| format!("number too large: {}", &r[..end]))
    }

    fn usize(&mut self) -> Result<usize> {
        let n = self.uint()?;
        usize::try_from(n).map_err(|_| format!("number too large: {n}"))
    }

    fn float(&mut self) -> Result<f64> {
        self.ws();
        let r = self.rest();
        let end = r
            .find(|c: char| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '+')))
            .unwrap_or(r.len());
        let tok = &r[..end];
        let v = match tok {
            "nan" => f64::NAN,
            "inf" => f64::INFINITY,
            "-inf" => f64::NEG_INFINITY,
            _ => tok
                .parse::<f64>()
                .map_err(|_| format!("expected a number, found `{tok}`"))?,
        };
        self.pos += end;
        Ok(v)
    }

    /// `vN`
    fn value_num(&mut self) -> Result<u32> {
        self.ws();
        if !self.rest().starts_with('v') {
            return Err(format!(
                "expected a value `vN`, found `{}`",
                self.peek_word()
            ));
        }
        self.pos += 1;
        let n = self.uint()?;
        u32::try_from(n).map_err(|_| format!("value number too large: {n}"))
    }

    fn ty(&mut self) -> Result<Type> {
        if self.eat("scalar") {
            return Ok(Type::Scalar);
        }
        self.expect("[")?;
        let a = self.usize()?;
        if self.eat(",") {
            let b = self.usize()?;
            self.expect("]")?;
            Ok(Type::Matrix(a, b))
        } else {
            self.expect("]")?;
            Ok(Type::Vector(a))
        }
    }

    fn operand(&mut self) -> Result<Operand> {
        self.ws();
        let r = self.rest();
        let kind = r.chars().next();
        self.pos += kind.map_or(0, char::len_utf8);
        let n = self.uint()?;
        let n = u32::try_from(n).map_err(|_| format!("operand number too large: {n}"))?;
        match kind {
            Some('a') => Ok(Operand::Arg(n)),
            Some('e') => Ok(Operand::Inst(n)),
            _ => Err(format!("expected an operand `aN` or `eN`, found `{r}`")),
        }
    }
}

/// Splits ` ; name, name` off the end of an instruction line.
fn split_names(line: &str) -> (&str, Vec<Option<String>>) {
    match line.split_once(';') {
        Some((code, names)) => (
            code,
            names
                .split(',')
                .map(|n| n.trim())
                .map(|n| (n != "-" && !n.is_empty()).then(|| n.to_string()))
                .collect(),
        ),
        None => (line, Vec::new()),
    }
}

struct Parser<'a> {
    lines: Vec<(usize, &'a str)>,
    at: usize,
    cell: Cell,
    values: HashMap<u32, Value>,
}

/// Parses a cell from its text form.
pub fn parse(text: &str) -> std::result::Result<Cell, ParseError> {
    let lines: Vec<(usize, &str)> = text
        .lines()
        .enumerate()
        .map(|(i, l)| (i + 1, l))
        .filter(|(_, l)| !l.trim().is_empty())
        .collect();
    let mut p = Parser {
        lines,
        at: 0,
        cell: Cell::default(),
        values: HashMap::new(),
    };
    match p.cell_text() {
        Ok(()) => Ok(p.cell),
        Err(message) => Err(ParseError {
            line: p
                .lines
                .get(p.at)
                .map_or(text.lines().count().max(1), |l| l.0),
            message,
        }),
    }
}

impl<'a> Parser<'a> {
    fn line(&self) -> Option<&'a str> {
        self.lines.get(self.at).map(|l| l.1)
    }

    fn next_line(&mut self) -> Result<&'a str> {
        let l = self.line().ok_or("unexpected end of text")?;
        Ok(l)
    }

    fn cell_text(&mut self) -> Result<()> {
        let mut c = Cur::new(self.next_line()?);
        c.expect("cell")?;
        self.cell.name = c.ident()?;
        c.end()?;
        self.at += 1;
        // Header.
        while let Some(l) = self.line() {
            let mut c = Cur::new(l);
            if c.eat("dims ") {
                loop {
                    let n = c.ident()?;
                    c.expect("=")?;
                    let v = c.uint()?;
                    self.cell.dims.push((n, v));
                    if !c.eat(",") {
                        break;
                    }
                }
                c.end()?;
            } else if c.eat("input ") {
                let p = port(&mut c)?;
                self.cell.inputs.push(p);
            } else if c.eat("state ") {
                let p = port(&mut c)?;
                self.cell.states.push(p);
            } else if c.eat("output ") && is_port_decl(c.rest()) {
                let p = port(&mut c)?;
                self.cell.outputs.push(p);
            } else if c.eat("param ") {
                let p = param(&mut c)?;
                self.cell.params.push(p);
            } else {
                break;
            }
            self.at += 1;
        }
        // Instructions.
        while let Some(l) = self.line() {
            let t = l.trim_start();
            if t.starts_with("update ") || t.starts_with("output ") {
                break;
            }
            self.inst()?;
        }
        // Roots.
        self.cell.state_updates = vec![Value(u32::MAX); self.cell.states.len()];
        self.cell.output_values = vec![Value(u32::MAX); self.cell.outputs.len()];
        while let Some(l) = self.line() {
            let mut c = Cur::new(l);
            let (ports, slots, kw) = if c.eat("update ") {
                (&self.cell.states, &mut self.cell.state_updates, "state")
            } else if c.eat("output ") {
                (&self.cell.outputs, &mut self.cell.output_values, "output")
            } else {
                return Err(format!(
                    "expected `update` or `output`, found `{}`",
                    c.peek_word()
                ));
            };
            let name = c.ident()?;
            let idx = ports
                .iter()
                .position(|p| p.name == name)
                .ok_or_else(|| format!("no {kw} named `{name}`"))?;
            c.expect("=")?;
            let n = c.value_num()?;
            let v = *self
                .values
                .get(&n)
                .ok_or_else(|| format!("value v{n} is not defined"))?;
            c.end()?;
            if slots[idx] != Value(u32::MAX) {
                return Err(format!("{kw} `{name}` is given twice"));
            }
            slots[idx] = v;
            self.at += 1;
        }
        if let Some(i) = self.cell.state_updates.iter().position(|v| v.0 == u32::MAX) {
            return Err(format!(
                "state `{}` has no `update`",
                self.cell.states[i].name
            ));
        }
        if let Some(i) = self.cell.output_values.iter().position(|v| v.0 == u32::MAX) {
            return Err(format!(
                "output `{}` has no value",
                self.cell.outputs[i].name
            ));
        }
        Ok(())
    }

    fn get(&self, n: u32) -> Result<Value> {
        self.values
            .get(&n)
            .copied()
            .ok_or_else(|| format!("value v{n} is used before it is defined"))
    }

    fn operand_value(&self, c: &mut Cur<'_>) -> Result<Value> {
        let n = c.value_num()?;
        self.get(n)
    }

    // Long by design: one match arm per instruction form of the text IR,
    // the inverse of `print`.
    fn inst(&mut self) -> Result<()> {
        let line = self.next_line()?;
        let (code, names) = split_names(line);
        let mut c = Cur::new(code);
        // Results.
        let mut results: Vec<(u32, Type)> = Vec::new();
        loop {
            let n = c.value_num()?;
            c.expect(":")?;
            let ty = c.ty()?;
            if self.values.contains_key(&n) || results.iter().any(|r| r.0 == n) {
                return Err(format!("value v{n} is defined twice"));
            }
            results.push((n, ty));
            if !c.eat(",") {
                break;
            }
        }
        c.expect("=")?;
        let opname = c.ident()?;
        let mut row_names: Vec<Option<String>> = Vec::new();
        let mut result_names = names;
        let op = match opname.as_str() {
            "input" | "state" | "param" => {
                let name = c.ident()?;
                c.end()?;
                let (list, make): (Vec<&str>, fn(usize) -> Op) = match opname.as_str() {
                    "input" => (
                        self.cell.inputs.iter().map(|p| p.name.as_str()).collect(),
                        |i| Op::Input(InputId::new(i)),
                    ),
                    "state" => (
                        self.cell.states.iter().map(|p| p.name.as_str()).collect(),
                        |i| Op::State(StateId::new(i)),
                    ),
                    _ => (
                        self.cell.params.iter().map(|p| p.name.as_str()).collect(),
                        |i| Op::Param(ParamId::new(i)),
                    ),
                };
                let idx = list
                    .iter()
                    .position(|n| *n == name)
                    .ok_or_else(|| format!("no {opname} named `{name}`"))?;
                make(idx)
            }
            "const" => {
                let v = c.float()?;
                c.end()?;
                Op::Const(v)
            }
            "matvec" | "matvec_t" => {
                let w = self.operand_value(&mut c)?;
                c.expect(",")?;
                let x = self.operand_value(&mut c)?;
                c.end()?;
                if opname == "matvec" {
                    Op::MatVec {
                        weight: w,
                        input: x,
                    }
                } else {
                    Op::MatVecT {
                        weight: w,
                        input: x,
                    }
                }
            }
            "product" => {
                c.expect("(")?;
                let mut inputs = Vec::new();
                if !c.eat(")") {
                    loop {
                        inputs.push(self.operand_value(&mut c)?);
                        if c.eat(")") {
                            break;
                        }
                        c.expect(",")?;
                    }
                }
                c.expect("{")?;
                c.end()?;
                let mut rows = Vec::new();
                loop {
                    self.at += 1;
                    let l = self.next_line()?;
                    if l.trim() == "}" {
                        break;
                    }
                    let (code, names) = split_names(l);
                    row_names.push(names.into_iter().next().flatten());
                    let mut c = Cur::new(code);
                    c.expect("[")?;
                    let mut weights = Vec::new();
                    if !c.eat("]") {
                        loop {
                            if c.eat("_") {
                                weights.push(None);
                            } else {
                                weights.push(Some(self.operand_value(&mut c)?));
                            }
                            if c.eat("]") {
                                break;
                            }
                            c.expect(",")?;
                        }
                    }
                    let mut biases = Vec::new();
                    while c.eat("+") {
                        biases.push(self.operand_value(&mut c)?);
                    }
                    c.end()?;
                    rows.push(RowBlock { weights, biases });
                }
                result_names = row_names.clone();
                Op::Product(Product { inputs, rows })
            }
            "fused" => {
                c.expect("[")?;
                let len = c.usize()?;
                c.expect("]")?;
                c.expect("(")?;
                let mut args = Vec::new();
                if !c.eat(")") {
                    loop {
                        args.push(self.operand_value(&mut c)?);
                        if c.eat(")") {
                            break;
                        }
                        c.expect(",")?;
                    }
                }
                c.expect("{")?;
                c.end()?;
                let mut body = Vec::new();
                let yields;
                loop {
                    self.at += 1;
                    let l = self.next_line()?;
                    let (code, names) = split_names(l);
                    let mut c = Cur::new(code);
                    if c.eat("yield") {
                        let mut ys = Vec::new();
                        if !c.at_end() {
                            loop {
                                ys.push(c.operand()?);
                                if !c.eat(",") {
                                    break;
                                }
                            }
                        }
                        c.end()?;
                        yields = ys;
                        self.at += 1;
                        let l = self.next_line()?;
                        let (code, names) = split_names(l);
                        if code.trim() != "}" {
                            return Err("expected `}` after `yield`".into());
                        }
                        result_names = names;
                        break;
                    }
                    c.expect(&format!("e{}", body.len()))?;
                    c.expect("=")?;
                    let opname = c.ident()?;
                    let (op, args) = if opname == "const" {
                        (EwOp::Const(c.float()?), Vec::new())
                    } else {
                        let op = if let Some(u) = UnaryOp::from_name(&opname) {
                            EwOp::Unary(u)
                        } else if let Some(b) = BinaryOp::from_name(&opname) {
                            EwOp::Binary(b)
                        } else {
                            return Err(format!("unknown element-wise op `{opname}`"));
                        };
                        let mut args = Vec::new();
                        loop {
                            args.push(c.operand()?);
                            if !c.eat(",") {
                                break;
                            }
                        }
                        (op, args)
                    };
                    c.end()?;
                    body.push(RegionInst {
                        op,
                        args,
                        name: names.into_iter().next().flatten(),
                    });
                }
                Op::Fused(Region {
                    len,
                    args,
                    body,
                    yields,
                })
            }
            other => {
                if let Some(u) = UnaryOp::from_name(other) {
                    let a = self.operand_value(&mut c)?;
                    c.end()?;
                    Op::Unary(u, a)
                } else if let Some(r) = other.strip_prefix("reduce_").and_then(ReduceOp::from_name)
                {
                    let a = self.operand_value(&mut c)?;
                    c.end()?;
                    Op::Reduce(r, a)
                } else if let Some(b) = BinaryOp::from_name(other) {
                    let a = self.operand_value(&mut c)?;
                    c.expect(",")?;
                    let b2 = self.operand_value(&mut c)?;
                    c.end()?;
                    Op::Binary(b, a, b2)
                } else {
                    return Err(format!("unknown instruction `{other}`"));
                }
            }
        };
        let tys: Vec<Type> = results.iter().map(|r| r.1).collect();
        let vals = self.cell.push(op, &tys);
        for (i, ((n, _), v)) in results.iter().zip(&vals).enumerate() {
            self.values.insert(*n, *v);
            self.cell.values[v.index()].name = result_names.get(i).cloned().flatten();
        }
        self.at += 1;
        Ok(())
    }
}

/// `y: [4]` (a declaration) rather than `y = v3` (a root).
fn is_port_decl(rest: &str) -> bool {
    let mut c = Cur::new(rest);
    c.ident().is_ok() && c.eat(":")
}

fn port(c: &mut Cur<'_>) -> Result<Port> {
    let name = c.ident()?;
    c.expect(":")?;
    let ty = c.ty()?;
    c.end()?;
    match ty {
        Type::Vector(len) => Ok(Port { name, len }),
        other => Err(format!("a port must be a vector, found {other}")),
    }
}

fn param(c: &mut Cur<'_>) -> Result<Param> {
    let name = c.ident()?;
    c.expect(":")?;
    c.ws();
    let mut precision = Precision::F32;
    let mut structure = Structure::Dense;
    // `bf16`, `circulant(8)`, both (in that order) or neither.
    for _ in 0..2 {
        c.ws();
        let word = c.rest().starts_with(|ch: char| ch.is_ascii_alphabetic())
            && !c.rest().starts_with("scalar");
        if !word {
            break;
        }
        let word = c.ident()?;
        if word == "circulant" && structure == Structure::Dense {
            c.expect("(")?;
            let k = c.usize()?;
            c.expect(")")?;
            structure = Structure::Circulant(k);
        } else if structure == Structure::Dense && precision == Precision::F32 {
            precision = Precision::from_name(&word)
                .ok_or_else(|| format!("unknown precision `{word}` (f32, bf16 or int8)"))?;
        } else {
            return Err(format!("unexpected `{word}` before a parameter's type"));
        }
    }
    let ty = c.ty()?;
    let mut binding = Vec::new();
    if c.eat("=") {
        loop {
            binding.push(bind(c)?);
            if !c.eat("|") {
                break;
            }
        }
    }
    c.end()?;
    Ok(Param {
        name,
        ty,
        binding,
        precision,
        structure,
    })
}

fn bind(c: &mut Cur<'_>) -> Result<Binding> {
    c.ws();
    let tensor = if c.eat("\"") {
        let r = c.rest();
        let end = r.find('"').ok_or("unterminated string")?;
        c.pos += end + 1;
        r[..end].to_string()
    } else {
        let r = c.rest();
        let end = r
            .find(|ch: char| !(ch.is_ascii_alphanumeric() || matches!(ch, '_' | '.' | '-')))
            .unwrap_or(r.len());
        if end == 0 {
            return Err(format!("expected a tensor name, found `{}`", c.peek_word()));
        }
        c.pos += end;
        r[..end].to_string()
    };
    let mut indices = Vec::new();
    if c.eat("[") {
        loop {
            c.ws();
            let start = if c.rest().starts_with(|ch: char| ch.is_ascii_digit()) {
                Some(c.uint()?)
            } else {
                None
            };
            if c.eat("..") {
                c.ws();
                let end = if c.rest().starts_with(|ch: char| ch.is_ascii_digit()) {
                    Some(c.uint()?)
                } else {
                    None
                };
                indices.push(BindIndex::Range(start, end));
            } else {
                indices.push(BindIndex::At(start.ok_or("expected an index")?));
            }
            if c.eat("]") {
                break;
            }
            c.expect(",")?;
        }
    }
    Ok(Binding { tensor, indices })
}
