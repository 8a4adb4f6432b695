//! The AST dump (`cellc compile --emit ast`): each item on a line, expressions as
//! S-expressions so that precedence and grouping are explicit.

use std::fmt::Write;

use super::ast::*;

pub fn print(file: &File) -> String {
    let mut out = String::new();
    if let Some(n) = &file.name {
        let _ = writeln!(out, "(cell {})", n.name);
    }
    for item in &file.items {
        match item {
            Item::Dim(d) => {
                let _ = match d.default {
                    Some((v, _)) => writeln!(out, "(dim {} {v})", d.name.name),
                    None => writeln!(out, "(dim {})", d.name.name),
                };
            }
            Item::Input(p) => port(&mut out, "input", p),
            Item::State(p) => port(&mut out, "state", p),
            Item::Output(p) => port(&mut out, "output", p),
            Item::Param(p) => {
                let _ = write!(out, "(param {} {}", p.name.name, shape(&p.shape));
                if let Some(q) = &p.precision {
                    let _ = write!(out, " (precision {})", q.name);
                }
                if let Some((k, _)) = p.circulant {
                    let _ = write!(out, " (circulant {k})");
                }
                for s in &p.binding {
                    let _ = write!(out, " (from {:?}", s.tensor);
                    for ix in &s.indices {
                        match ix {
                            Index::At(e) => {
                                let _ = write!(out, " {}", dim(e));
                            }
                            Index::Range { start, end, .. } => {
                                let a = start.as_ref().map_or("_".to_string(), dim);
                                let b = end.as_ref().map_or("_".to_string(), dim);
                                let _ = write!(out, " (.. {a} {b})");
                            }
                        }
                    }
                    out.push(')');
                }
                out.push_str(")\n");
            }
            Item::Equation(eq) => {
                let prime = if eq.primed { "'" } else { "" };
                let _ = writeln!(out, "(= {}{prime} {})", eq.name.name, expr(&eq.value));
            }
        }
    }
    out
}

fn port(out: &mut String, kw: &str, p: &Port) {
    let _ = writeln!(out, "({kw} {} {})", p.name.name, shape(&p.shape));
}

fn shape(s: &Shape) -> String {
    let dims: Vec<String> = s.dims.iter().map(dim).collect();
    format!("[{}]", dims.join(" "))
}

fn dim(e: &DimExpr) -> String {
    match &e.kind {
        DimKind::Int(n) => n.to_string(),
        DimKind::Var(v) => v.clone(),
        DimKind::Sum(terms) => {
            let mut s = "(+".to_string();
            for (neg, t) in terms {
                if *neg {
                    let _ = write!(s, " (- {})", dim(t));
                } else {
                    let _ = write!(s, " {}", dim(t));
                }
            }
            s + ")"
        }
        DimKind::Product(fs) => {
            let parts: Vec<String> = fs.iter().map(dim).collect();
            format!("(* {})", parts.join(" "))
        }
    }
}

pub fn expr(e: &Expr) -> String {
    match &e.kind {
        ExprKind::Number(v) => format!("{v:?}"),
        ExprKind::Var { name, primed } => {
            format!("{}{}", name.name, if *primed { "'" } else { "" })
        }
        ExprKind::Call { func, args } => {
            let a: Vec<String> = args.iter().map(expr).collect();
            format!("({} {})", func.name, a.join(" "))
        }
        ExprKind::Neg(inner) => format!("(neg {})", expr(inner)),
        ExprKind::Sum(terms) => {
            let items: Vec<(bool, String)> = terms
                .iter()
                .map(|(op, t)| (*op == AddOp::Sub, expr(t)))
                .collect();
            nary("+", "-", &items)
        }
        ExprKind::Product(fs) => {
            let items: Vec<(bool, String)> = fs
                .iter()
                .map(|(op, f)| (*op == MulOp::Div, expr(f)))
                .collect();
            nary("*", "/", &items)
        }
        ExprKind::MatVec { matrices, vector } => {
            let mut s = String::new();
            for m in matrices {
                let _ = write!(s, "(@ {} ", m.name);
            }
            s.push_str(&expr(vector));
            for _ in matrices {
                s.push(')');
            }
            s
        }
    }
}

/// `(+ a b c)` when every operator is the plain one, else a left fold of binary
/// nodes, `(- (+ a b) c)`, so that the grouping is explicit.
fn nary(plain: &str, inverse: &str, items: &[(bool, String)]) -> String {
    if items.iter().skip(1).all(|(inv, _)| !inv) {
        let parts: Vec<&str> = items.iter().map(|(_, s)| s.as_str()).collect();
        return format!("({plain} {})", parts.join(" "));
    }
    let mut acc = items.first().map_or(String::new(), |(_, s)| s.clone());
    for (inv, s) in &items[1..] {
        let op = if *inv { inverse } else { plain };
        acc = format!("({op} {acc} {s})");
    }
    acc
}
