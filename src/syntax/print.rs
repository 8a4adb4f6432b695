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
            let mut s = "(+".to_string();
            for (i, (op, t)) in terms.iter().enumerate() {
                if *op == AddOp::Sub && i > 0 {
                    let _ = write!(s, " (neg {})", expr(t));
                } else {
                    let _ = write!(s, " {}", expr(t));
                }
            }
            s + ")"
        }
        ExprKind::Product(fs) => {
            let mut s = "(*".to_string();
            for (op, f) in fs {
                if *op == MulOp::Div {
                    let _ = write!(s, " (recip {})", expr(f));
                } else {
                    let _ = write!(s, " {}", expr(f));
                }
            }
            s + ")"
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
