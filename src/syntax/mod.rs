//! Parsing: source text to [`ast::File`], with spans, and never a panic.
//!
//! The grammar lives in `grammar/cell.pest`. Before pest runs, [`check_nesting`]
//! bounds the depth of parentheses and brackets, so that neither pest's recursive
//! descent nor the later tree walks can exhaust the stack whatever the input.
//! After a syntax error the parser resynchronizes at the next line that starts an
//! item and keeps going, so that one run reports every syntax error it can.

pub mod ast;
pub mod print;

use pest::error::{ErrorVariant, InputLocation};
use pest::iterators::Pair;
use pest::Parser as _;

use crate::diag::{Diagnostic, Span};
use ast::*;

#[derive(pest_derive::Parser)]
#[grammar = "../grammar/cell.pest"]
struct CellParser;

/// Deepest nesting of `(` and `[` that the front end accepts.
pub const MAX_NESTING: usize = 64;
/// Largest source file the front end reads, in bytes.
pub const MAX_SOURCE_BYTES: usize = 8 << 20;
/// Syntax errors reported before giving up on a file.
const MAX_SYNTAX_ERRORS: usize = 20;

/// Parses a whole file. Returns the AST only when there was no syntax error.
pub fn parse(text: &str) -> (Option<File>, Vec<Diagnostic>) {
    if text.len() > MAX_SOURCE_BYTES {
        let d = Diagnostic::error(
            "E0001",
            format!(
                "source file too large: {} bytes (the limit is {} bytes)",
                text.len(),
                MAX_SOURCE_BYTES
            ),
        )
        .primary(Span::new(0, 0), "file starts here")
        .note("a cell is a few dozen lines; is this the right file?");
        return (None, vec![d]);
    }
    if let Some(d) = check_nesting(text) {
        return (None, vec![d]);
    }
    // Parse fast first; on an error, parse again recording which tokens were
    // tried, so that the message can say what was expected. (The switch is global
    // and only ever turned on, so concurrent parses cannot lose detail.)
    let first = CellParser::parse(Rule::file, text);
    let first = match first {
        Ok(p) => Ok(p),
        Err(_) => {
            pest::set_error_detail(true);
            CellParser::parse(Rule::file, text)
        }
    };
    match first {
        Ok(mut pairs) => {
            let mut builder = Builder { diags: Vec::new() };
            let file = match pairs.next() {
                Some(pair) => builder.file(pair),
                None => File {
                    name: None,
                    items: Vec::new(),
                },
            };
            let ok = builder.diags.is_empty();
            (ok.then_some(file), builder.diags)
        }
        Err(e) => {
            let mut diags = vec![syntax_error(text, 0, &e)];
            recover(text, error_offset(&e), &mut diags);
            (None, diags)
        }
    }
}

/// Reports further syntax errors after the first, by reparsing from the next line
/// that starts an item.
fn recover(text: &str, mut error_at: usize, diags: &mut Vec<Diagnostic>) {
    while diags.len() < MAX_SYNTAX_ERRORS {
        let Some(start) = next_item_line(text, error_at) else {
            return;
        };
        match CellParser::parse(Rule::items, &text[start..]) {
            Ok(_) => return,
            Err(e) => {
                let at = start + error_offset(&e);
                diags.push(syntax_error(text, start, &e));
                // Always make progress, even if the error is at the resync point.
                error_at = at.max(start + 1);
            }
        }
    }
}

/// The byte offset of the first line after `from` that looks like the start of an
/// item: a keyword, or `name =` / `name' =`.
fn next_item_line(text: &str, from: usize) -> Option<usize> {
    let mut pos = text[from.min(text.len())..].find('\n')? + from + 1;
    while pos < text.len() {
        let line_end = text[pos..].find('\n').map_or(text.len(), |e| pos + e);
        let line = &text[pos..line_end];
        let trimmed = line.trim_start();
        let indent = line.len() - trimmed.len();
        if starts_item(trimmed) {
            return Some(pos + indent);
        }
        pos = line_end + 1;
    }
    None
}

fn starts_item(line: &str) -> bool {
    let word_end = line
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .unwrap_or(line.len());
    let word = &line[..word_end];
    if word.is_empty() || word.as_bytes()[0].is_ascii_digit() {
        return false;
    }
    if matches!(word, "dim" | "input" | "state" | "output" | "param") {
        return true;
    }
    let rest = line[word_end..]
        .strip_prefix('\'')
        .unwrap_or(&line[word_end..]);
    rest.trim_start().starts_with('=')
}

/// Where the parse failed: the furthest position any token or rule was tried,
/// which is where the user's text stops making sense.
fn error_offset(e: &pest::error::Error<Rule>) -> usize {
    let located = match e.location {
        InputLocation::Pos(p) => p,
        InputLocation::Span((s, _)) => s,
    };
    match e.parse_attempts() {
        Some(a) => a.max_position.max(located),
        None => located,
    }
}

/// What would have been accepted at the error: literal tokens and rules.
fn expected_at(e: &pest::error::Error<Rule>) -> String {
    let mut words: Vec<String> = Vec::new();
    let located = match e.location {
        InputLocation::Pos(p) => p,
        InputLocation::Span((s, _)) => s,
    };
    if let Some(a) = e.parse_attempts() {
        if a.max_position >= located {
            for t in a.expected_tokens() {
                let token = t.to_string();
                // Characters inside names and numbers are not worth listing.
                let literal = !token.trim().is_empty()
                    && !matches!(
                        token.as_str(),
                        "//" | "BUILTIN_RULE" | "." | "_" | "\"" | "E"
                    )
                    && (token.len() <= 2 || !token.contains(".."));
                if literal {
                    words.push(format!("`{token}`"));
                }
            }
            let have_tokens = !words.is_empty();
            for cs in a.call_stacks() {
                let Some(&rule) = cs.deepest.get_rule() else {
                    continue;
                };
                // A failed token inside a declaration is reported as the token.
                let item_level = matches!(
                    rule,
                    Rule::dim_decl
                        | Rule::input_decl
                        | Rule::state_decl
                        | Rule::output_decl
                        | Rule::param_decl
                        | Rule::equation
                );
                if have_tokens && item_level {
                    continue;
                }
                if let Some(d) = describe_rule(rule) {
                    words.push(d.to_string());
                }
            }
        }
    }
    if words.is_empty() {
        if let ErrorVariant::ParsingError { positives, .. } = &e.variant {
            words = positives
                .iter()
                .filter_map(|r| describe_rule(*r))
                .map(str::to_string)
                .collect();
        }
    }
    if words.iter().any(|w| w == "an expression") {
        words.retain(|w| w != "`(`" && w != "`-`");
    }
    words.sort();
    words.dedup();
    match words.len() {
        0 => "something else".into(),
        1 => words.remove(0),
        n => format!("{} or {}", words[..n - 1].join(", "), words[n - 1]),
    }
}

/// Checks that parentheses and brackets do not nest deeper than [`MAX_NESTING`].
/// Unbalanced ones are left to the grammar, which reports them with context.
pub fn check_nesting(text: &str) -> Option<Diagnostic> {
    let mut depth = 0usize;
    let bytes = text.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'/' if bytes.get(i + 1) == Some(&b'/') => {
                while i < bytes.len() && bytes[i] != b'\n' {
                    i += 1;
                }
                continue;
            }
            b'(' | b'[' => {
                depth += 1;
                if depth > MAX_NESTING {
                    return Some(
                        Diagnostic::error("E0002", "expression nested too deeply")
                            .primary(
                                Span::new(i, i + 1),
                                format!("this opens level {depth}; the limit is {MAX_NESTING}"),
                            )
                            .note("name the inner parts with equations (`t = ...`) instead"),
                    );
                }
            }
            b')' | b']' => depth = depth.saturating_sub(1),
            _ => {}
        }
        i += 1;
    }
    None
}

fn syntax_error(text: &str, base: usize, e: &pest::error::Error<Rule>) -> Diagnostic {
    let at = (base + error_offset(e)).min(text.len());
    // Underline the offending word, or the single character.
    let rest = &text[at..];
    let word_len = rest
        .find(|c: char| !(c.is_alphanumeric() || c == '_'))
        .unwrap_or(rest.len());
    let end = if word_len > 0 {
        at + word_len
    } else {
        at + rest.chars().next().map_or(0, char::len_utf8)
    };
    let found = if at >= text.len() {
        "end of file".to_string()
    } else {
        let tok = &text[at..end];
        let tok: String = tok.chars().take(20).collect();
        if tok.trim().is_empty() {
            "whitespace".to_string()
        } else if tok.chars().any(|c| c.is_control() && c != '\t') {
            format!("byte {:?}", tok.chars().next().unwrap_or('?'))
        } else {
            format!("`{tok}`")
        }
    };
    let expected = match &e.variant {
        ErrorVariant::ParsingError { .. } => expected_at(e),
        ErrorVariant::CustomError { message } => message.clone(),
    };
    let mut d = Diagnostic::error("E0003", format!("syntax error: unexpected {found}"))
        .primary(Span::new(at, end), format!("expected {expected}"));
    if let Some(hint) = hint_for(text, at) {
        d = d.note(hint);
    }
    d
}

fn describe_rule(r: Rule) -> Option<&'static str> {
    Some(match r {
        Rule::EOI => "end of file",
        Rule::header => "`cell NAME`",
        Rule::dim_decl | Rule::input_decl | Rule::state_decl | Rule::output_decl => {
            "a declaration (`dim`, `input`, `state`, `output`, `param`)"
        }
        Rule::param_decl => "a declaration (`dim`, `input`, `state`, `output`, `param`)",
        Rule::equation | Rule::lhs => "an equation (`name = ...`)",
        Rule::dim_item => "a size variable",
        Rule::port => "`name: [shape]`",
        Rule::shape => "a shape like `[H, X]`",
        Rule::precision => "a storage precision (`f32`, `bf16`, `int8`)",
        Rule::structure => "a block structure (`circulant(8)`)",
        Rule::binding | Rule::source | Rule::tensor_name => "a tensor name",
        Rule::index | Rule::range => "an index or a range like `0..H`",
        Rule::dim_expr | Rule::dim_term | Rule::dim_atom => "a size expression",
        Rule::dim_add_op => "`+` or `-`",
        Rule::expr | Rule::term | Rule::factor | Rule::chain | Rule::atom => "an expression",
        Rule::add_op => "an operator",
        Rule::mul_op => "an operator",
        Rule::neg => "`-`",
        Rule::call => "a function call",
        Rule::var => "a name",
        Rule::prime => "`'`",
        Rule::number => "a number",
        Rule::int => "an integer",
        Rule::ident => "a name",
        Rule::keyword => "a keyword",
        _ => return None,
    })
}

/// A hint for a common mistake at `at`.
fn hint_for(text: &str, at: usize) -> Option<String> {
    let rest = &text[at..];
    let line_start = text[..at].rfind('\n').map_or(0, |p| p + 1);
    let before = text[line_start..at].trim();
    if matches!(
        before,
        "cell" | "dim" | "input" | "state" | "output" | "param"
    ) && (rest.starts_with('=') || rest.starts_with('\''))
    {
        return Some(format!(
            "`{before}` is a keyword and cannot be used as a name"
        ));
    }
    let word: String = rest
        .chars()
        .take_while(|c| c.is_alphanumeric() || *c == '_')
        .collect();
    if matches!(
        word.as_str(),
        "cell" | "dim" | "input" | "state" | "output" | "param"
    ) {
        return Some(format!(
            "`{word}` is a keyword and cannot be used as a name"
        ));
    }
    // A misspelt keyword at the start of a line (`imput x: [X]`).
    let is_word = !before.is_empty() && before.chars().all(|c| c.is_alphanumeric() || c == '_');
    if is_word {
        let keywords = ["cell", "dim", "input", "state", "output", "param"];
        if let Some(k) = crate::diag::suggest(before, keywords.into_iter()) {
            return Some(format!("`{before}` is not a keyword; did you mean `{k}`?"));
        }
    }
    if rest.starts_with('{') || rest.starts_with('}') || rest.starts_with(';') {
        return Some("items are written one after another, without braces or semicolons".into());
    }
    if rest.starts_with('^') {
        return Some("there is no power operator; write the product out, or use exp".into());
    }
    if rest.starts_with('=') {
        return Some("an equation is `name = expression`, one `=` each".into());
    }
    None
}

/// Turns pest's parse tree into the AST. Reports what the grammar accepts but the
/// language does not (e.g. `2 @ x`).
struct Builder {
    diags: Vec<Diagnostic>,
}

fn span_of(pair: &Pair<'_, Rule>) -> Span {
    let s = pair.as_span();
    Span::new(s.start(), s.end())
}

impl Builder {
    fn file(&mut self, pair: Pair<'_, Rule>) -> File {
        let mut name = None;
        let mut items = Vec::new();
        for p in pair.into_inner() {
            match p.as_rule() {
                Rule::header => name = p.into_inner().next().map(|i| ident(&i)),
                Rule::EOI => {}
                _ => self.item(p, &mut items),
            }
        }
        File { name, items }
    }

    fn item(&mut self, p: Pair<'_, Rule>, items: &mut Vec<Item>) {
        match p.as_rule() {
            Rule::dim_decl => {
                for d in p.into_inner() {
                    let mut it = d.into_inner();
                    let Some(name) = it.next() else { continue };
                    let default = it.next().map(|v| {
                        let span = span_of(&v);
                        match v.as_str().parse::<u64>() {
                            Ok(n) => (n, span),
                            Err(_) => {
                                self.diags.push(
                                    Diagnostic::error("E0004", "size too large")
                                        .primary(span, "does not fit in 64 bits"),
                                );
                                (0, span)
                            }
                        }
                    });
                    items.push(Item::Dim(DimDecl {
                        name: ident(&name),
                        default,
                    }));
                }
            }
            Rule::input_decl | Rule::state_decl | Rule::output_decl => {
                let rule = p.as_rule();
                for port in p.into_inner() {
                    let port = self.port(port);
                    items.push(match rule {
                        Rule::input_decl => Item::Input(port),
                        Rule::state_decl => Item::State(port),
                        _ => Item::Output(port),
                    });
                }
            }
            Rule::param_decl => {
                let mut it = p.into_inner().peekable();
                let Some(name) = it.next() else { return };
                let precision = it
                    .next_if(|q| q.as_rule() == Rule::precision)
                    .and_then(|q| q.into_inner().next())
                    .map(|q| ident(&q));
                let circulant = it
                    .next_if(|q| q.as_rule() == Rule::structure)
                    .and_then(|q| q.into_inner().next())
                    .map(|k| {
                        let span = span_of(&k);
                        let n = k.as_str().parse::<u64>().unwrap_or_else(|_| {
                            self.diags.push(
                                Diagnostic::error("E0004", "block size too large")
                                    .primary(span, "does not fit in 64 bits"),
                            );
                            0
                        });
                        (n, span)
                    });
                let Some(shape) = it.next() else { return };
                let binding = it.next().map(|b| self.binding(b)).unwrap_or_default();
                items.push(Item::Param(ParamDecl {
                    name: ident(&name),
                    precision,
                    circulant,
                    shape: self.shape(shape),
                    binding,
                }));
            }
            Rule::equation => {
                let mut it = p.into_inner();
                let (Some(lhs), Some(value)) = (it.next(), it.next()) else {
                    return;
                };
                let lhs_span = span_of(&lhs);
                let mut lhs_it = lhs.into_inner();
                let Some(name) = lhs_it.next() else { return };
                let primed = lhs_it.next().is_some();
                items.push(Item::Equation(Equation {
                    name: ident(&name),
                    primed,
                    value: self.expr(value),
                    lhs_span,
                }));
            }
            _ => {}
        }
    }

    fn port(&mut self, p: Pair<'_, Rule>) -> Port {
        let mut it = p.into_inner();
        let name = it.next().map(|n| ident(&n)).unwrap_or_else(|| Ident {
            name: String::new(),
            span: Span::default(),
        });
        let shape = it.next().map(|s| self.shape(s)).unwrap_or(Shape {
            dims: Vec::new(),
            span: name.span,
        });
        Port { name, shape }
    }

    fn shape(&mut self, p: Pair<'_, Rule>) -> Shape {
        let span = span_of(&p);
        Shape {
            dims: p.into_inner().map(|d| self.dim_expr(d)).collect(),
            span,
        }
    }

    fn binding(&mut self, p: Pair<'_, Rule>) -> Vec<ast::Source> {
        p.into_inner()
            .map(|src| {
                let span = span_of(&src);
                let mut it = src.into_inner();
                let name = it.next();
                let (tensor, tensor_span) = match &name {
                    Some(n) => {
                        let s = n.as_str();
                        let s = s
                            .strip_prefix('"')
                            .and_then(|s| s.strip_suffix('"'))
                            .unwrap_or(s);
                        (s.to_string(), span_of(n))
                    }
                    None => (String::new(), span),
                };
                let indices = it.map(|ix| self.index(ix)).collect();
                ast::Source {
                    tensor,
                    tensor_span,
                    indices,
                    span,
                }
            })
            .collect()
    }

    fn index(&mut self, p: Pair<'_, Rule>) -> Index {
        let Some(inner) = p.into_inner().next() else {
            return Index::Range {
                start: None,
                end: None,
                span: Span::default(),
            };
        };
        match inner.as_rule() {
            Rule::range => {
                let span = span_of(&inner);
                let dot = inner.as_str().find("..").unwrap_or(0) + span.start as usize;
                let mut start = None;
                let mut end = None;
                for e in inner.into_inner() {
                    if (e.as_span().start()) < dot {
                        start = Some(self.dim_expr(e));
                    } else {
                        end = Some(self.dim_expr(e));
                    }
                }
                Index::Range { start, end, span }
            }
            _ => Index::At(self.dim_expr(inner)),
        }
    }

    fn dim_expr(&mut self, p: Pair<'_, Rule>) -> DimExpr {
        let span = span_of(&p);
        match p.as_rule() {
            Rule::dim_expr => {
                let mut terms = Vec::new();
                let mut neg = false;
                for q in p.into_inner() {
                    if q.as_rule() == Rule::dim_add_op {
                        neg = q.as_str() == "-";
                    } else {
                        terms.push((neg, self.dim_expr(q)));
                    }
                }
                if terms.len() == 1 && !terms[0].0 {
                    return terms.pop().map(|t| t.1).unwrap_or(DimExpr {
                        kind: DimKind::Int(0),
                        span,
                    });
                }
                DimExpr {
                    kind: DimKind::Sum(terms),
                    span,
                }
            }
            Rule::dim_term => {
                let mut factors: Vec<DimExpr> = p.into_inner().map(|q| self.dim_expr(q)).collect();
                if factors.len() == 1 {
                    return factors.pop().unwrap_or(DimExpr {
                        kind: DimKind::Int(0),
                        span,
                    });
                }
                DimExpr {
                    kind: DimKind::Product(factors),
                    span,
                }
            }
            Rule::dim_atom => match p.into_inner().next() {
                Some(q) => self.dim_expr(q),
                None => DimExpr {
                    kind: DimKind::Int(0),
                    span,
                },
            },
            Rule::int => {
                let n = p.as_str().parse::<u64>().unwrap_or_else(|_| {
                    self.diags.push(
                        Diagnostic::error("E0004", "size too large")
                            .primary(span, "does not fit in 64 bits"),
                    );
                    0
                });
                DimExpr {
                    kind: DimKind::Int(n),
                    span,
                }
            }
            _ => DimExpr {
                kind: DimKind::Var(p.as_str().to_string()),
                span,
            },
        }
    }

    // Long by design: one match arm per grammar rule of an expression.
    fn expr(&mut self, p: Pair<'_, Rule>) -> Expr {
        let span = span_of(&p);
        match p.as_rule() {
            Rule::expr => {
                let mut terms = Vec::new();
                let mut op = AddOp::Add;
                for q in p.into_inner() {
                    if q.as_rule() == Rule::add_op {
                        op = if q.as_str() == "-" {
                            AddOp::Sub
                        } else {
                            AddOp::Add
                        };
                    } else {
                        terms.push((op, self.expr(q)));
                    }
                }
                collapse(terms, span, ExprKind::Sum, AddOp::Add)
            }
            Rule::term => {
                let mut factors = Vec::new();
                let mut op = MulOp::Mul;
                for q in p.into_inner() {
                    if q.as_rule() == Rule::mul_op {
                        op = if q.as_str() == "/" {
                            MulOp::Div
                        } else {
                            MulOp::Mul
                        };
                    } else {
                        factors.push((op, self.expr(q)));
                    }
                }
                collapse(factors, span, ExprKind::Product, MulOp::Mul)
            }
            Rule::factor => {
                let mut negs = 0usize;
                let mut value = None;
                for q in p.into_inner() {
                    if q.as_rule() == Rule::neg {
                        negs += 1;
                    } else {
                        value = Some(self.expr(q));
                    }
                }
                let value = value.unwrap_or(Expr {
                    kind: ExprKind::Number(0.0),
                    span,
                });
                if negs % 2 == 1 {
                    Expr {
                        kind: ExprKind::Neg(Box::new(value)),
                        span,
                    }
                } else {
                    value
                }
            }
            Rule::chain => {
                let mut atoms: Vec<Pair<'_, Rule>> = p.into_inner().collect();
                let Some(last) = atoms.pop() else {
                    return Expr {
                        kind: ExprKind::Number(0.0),
                        span,
                    };
                };
                let vector = self.expr(last);
                if atoms.is_empty() {
                    return vector;
                }
                let mut matrices = Vec::new();
                for a in atoms {
                    match matrix_name(&a) {
                        Some(id) => matrices.push(id),
                        None => self.diags.push(
                            Diagnostic::error(
                                "E0005",
                                "the left operand of `@` must be a matrix parameter",
                            )
                            .primary(span_of(&a), "not a parameter name")
                            .note(
                                "write `W @ v` where `W` is declared with `param W: [rows, cols]`",
                            ),
                        ),
                    }
                }
                Expr {
                    kind: ExprKind::MatVec {
                        matrices,
                        vector: Box::new(vector),
                    },
                    span,
                }
            }
            Rule::atom => match p.into_inner().next() {
                Some(q) => self.expr(q),
                None => Expr {
                    kind: ExprKind::Number(0.0),
                    span,
                },
            },
            Rule::number => {
                let v = p.as_str().parse::<f64>().unwrap_or(f64::NAN);
                Expr {
                    kind: ExprKind::Number(v),
                    span,
                }
            }
            Rule::call => {
                let mut it = p.into_inner();
                let func = it.next().map(|f| ident(&f)).unwrap_or(Ident {
                    name: String::new(),
                    span,
                });
                let args = it.map(|a| self.expr(a)).collect();
                Expr {
                    kind: ExprKind::Call { func, args },
                    span,
                }
            }
            Rule::var => {
                let mut it = p.into_inner();
                let name = it.next().map(|f| ident(&f)).unwrap_or(Ident {
                    name: String::new(),
                    span,
                });
                let primed = it.next().is_some();
                Expr {
                    kind: ExprKind::Var { name, primed },
                    span,
                }
            }
            _ => Expr {
                kind: ExprKind::Number(0.0),
                span,
            },
        }
    }
}

/// A list of one un-negated element is that element; otherwise an n-ary node.
fn collapse<Op: PartialEq + Copy>(
    mut items: Vec<(Op, Expr)>,
    span: Span,
    make: fn(Vec<(Op, Expr)>) -> ExprKind,
    identity: Op,
) -> Expr {
    if items.len() == 1 && items[0].0 == identity {
        if let Some((_, e)) = items.pop() {
            return e;
        }
    }
    Expr {
        kind: make(items),
        span,
    }
}

/// `W` in `W @ v`: an atom that is a bare, unprimed name.
fn matrix_name(atom: &Pair<'_, Rule>) -> Option<Ident> {
    let inner = atom.clone().into_inner().next()?;
    if inner.as_rule() != Rule::var {
        return None;
    }
    let mut it = inner.into_inner();
    let name = it.next()?;
    if it.next().is_some() {
        return None;
    }
    Some(ident(&name))
}

fn ident(p: &Pair<'_, Rule>) -> Ident {
    Ident {
        name: p.as_str().to_string(),
        span: span_of(p),
    }
}
