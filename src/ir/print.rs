//! The IR's text form: stable, one instruction a line, types on results, values
//! renumbered densely in print order, source names after `;`.
//!
//! ```text
//! cell lstm
//! dims H = 4, X = 3
//! input x: [3]
//! state h: [4]
//! param W_ii: [4, 3] = weight_ih_l0[0..4]
//!
//! v0: [3] = input x
//! v1: [4, 3] = param W_ii
//! v2: [4] = matvec v1, v0 ; i
//! update h = v2
//! ```
//!
//! [`super::parse`] reads this back; print -> parse -> print is the identity.

use std::fmt::Write;

use super::*;

/// Formats a float so that it parses back to the same bits.
pub(crate) fn fmt_f64(v: f64) -> String {
    if v.is_nan() {
        "nan".into()
    } else if v.is_infinite() {
        if v > 0.0 { "inf" } else { "-inf" }.into()
    } else {
        format!("{v:?}")
    }
}

/// A parameter's binding as the source states it, with its bounds
/// evaluated (`weight_ih_l0[0..128] | weight_ih[0..128]`), or `None` when it
/// reads the tensor of its own name.
pub fn binding_text(p: &Param) -> Option<String> {
    (!p.binding.is_empty()).then(|| {
        p.binding
            .iter()
            .map(fmt_binding)
            .collect::<Vec<_>>()
            .join(" | ")
    })
}

fn fmt_binding(b: &Binding) -> String {
    let mut s = String::new();
    let plain = b
        .tensor
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.' || c == '-')
        && !b.tensor.is_empty();
    if plain {
        s.push_str(&b.tensor);
    } else {
        let _ = write!(s, "\"{}\"", b.tensor);
    }
    if !b.indices.is_empty() {
        s.push('[');
        for (i, ix) in b.indices.iter().enumerate() {
            if i > 0 {
                s.push_str(", ");
            }
            match ix {
                BindIndex::At(n) => {
                    let _ = write!(s, "{n}");
                }
                BindIndex::Range(a, b) => {
                    if let Some(a) = a {
                        let _ = write!(s, "{a}");
                    }
                    s.push_str("..");
                    if let Some(b) = b {
                        let _ = write!(s, "{b}");
                    }
                }
            }
        }
        s.push(']');
    }
    s
}

fn fmt_operand(o: Operand) -> String {
    match o {
        Operand::Arg(a) => format!("a{a}"),
        Operand::Inst(i) => format!("e{i}"),
    }
}

/// Prints a whole cell.
pub fn print(cell: &Cell) -> String {
    let mut out = String::new();
    print_header(&mut out, cell);
    let names = Names::new(cell);
    let name = |v: Value| names.of(v);
    for inst in &cell.insts {
        let results: Vec<String> = inst
            .results
            .iter()
            .map(|&v| format!("{}: {}", name(v), cell.ty(v)))
            .collect();
        let _ = write!(out, "{} = ", results.join(", "));
        match &inst.op {
            Op::Input(i) => {
                let _ = write!(out, "input {}", port_name(&cell.inputs, i.index()));
            }
            Op::State(i) => {
                let _ = write!(out, "state {}", port_name(&cell.states, i.index()));
            }
            Op::Param(i) => {
                let n = cell.params.get(i.index()).map_or("?", |p| p.name.as_str());
                let _ = write!(out, "param {n}");
            }
            Op::Const(c) => {
                let _ = write!(out, "const {}", fmt_f64(*c));
            }
            Op::Unary(op, a) => {
                let _ = write!(out, "{} {}", op.name(), name(*a));
            }
            Op::Reduce(op, a) => {
                let _ = write!(out, "reduce_{} {}", op.name(), name(*a));
            }
            Op::Binary(op, a, b) => {
                let _ = write!(out, "{} {}, {}", op.name(), name(*a), name(*b));
            }
            Op::MatVec { weight, input } => {
                let _ = write!(out, "matvec {}, {}", name(*weight), name(*input));
            }
            Op::MatVecT { weight, input } => {
                let _ = write!(out, "matvec_t {}, {}", name(*weight), name(*input));
            }
            Op::Product(p) => print_product(&mut out, cell, &names, p, &inst.results),
            Op::Fused(region) => print_region(&mut out, &names, region),
        }
        // Single-result instructions carry their name at the end of the line;
        // products name each row block, regions each body value.
        if !matches!(inst.op, Op::Product(_)) {
            let names: Vec<&str> = inst
                .results
                .iter()
                .map(|&v| cell.name(v).unwrap_or("-"))
                .collect();
            if names.iter().any(|n| *n != "-") {
                let _ = write!(out, " ; {}", names.join(", "));
            }
        }
        out.push('\n');
    }
    for (s, v) in cell.state_updates.iter().enumerate() {
        let _ = writeln!(out, "update {} = {}", port_name(&cell.states, s), name(*v));
    }
    for (o, v) in cell.output_values.iter().enumerate() {
        let _ = writeln!(out, "output {} = {}", port_name(&cell.outputs, o), name(*v));
    }
    out
}

/// The cell's name, sizes, ports and parameters, and a blank line.
fn print_header(out: &mut String, cell: &Cell) {
    let _ = writeln!(out, "cell {}", cell.name);
    if !cell.dims.is_empty() {
        let dims: Vec<String> = cell
            .dims
            .iter()
            .map(|(n, v)| format!("{n} = {v}"))
            .collect();
        let _ = writeln!(out, "dims {}", dims.join(", "));
    }
    for (kw, ports) in [
        ("input", &cell.inputs),
        ("state", &cell.states),
        ("output", &cell.outputs),
    ] {
        for p in ports {
            let _ = writeln!(out, "{kw} {}: [{}]", p.name, p.len);
        }
    }
    for p in &cell.params {
        // `f32` is the default and not printed (dumps of f32 cells are unchanged).
        let precision = match p.precision {
            Precision::F32 => String::new(),
            other if p.ty == Type::Scalar => format!("{other} "),
            other => other.name().to_string(),
        };
        let structure = match (p.structure, precision.is_empty()) {
            (Structure::Dense, _) => String::new(),
            (Structure::Circulant(k), true) => format!("circulant({k})"),
            (Structure::Circulant(k), false) => format!(" circulant({k})"),
        };
        let _ = write!(out, "param {}: {precision}{structure}{}", p.name, p.ty);
        if let Some(b) = binding_text(p) {
            let _ = write!(out, " = {b}");
        }
        out.push('\n');
    }
    out.push('\n');
}

/// Values numbered densely in print order (`v0`, `v1`, ...).
struct Names(Vec<u32>);

impl Names {
    fn new(cell: &Cell) -> Names {
        let mut num = vec![u32::MAX; cell.values.len()];
        let mut next = 0u32;
        for inst in &cell.insts {
            for v in &inst.results {
                if let Some(slot) = num.get_mut(v.index()) {
                    *slot = next;
                    next += 1;
                }
            }
        }
        Names(num)
    }

    fn of(&self, v: Value) -> String {
        match self.0.get(v.index()) {
            Some(&n) if n != u32::MAX => format!("v{n}"),
            _ => format!("v?{}", v.0),
        }
    }
}

/// A product: its inputs, then a line per row block (weights, biases, name).
fn print_product(out: &mut String, cell: &Cell, names: &Names, p: &Product, results: &[Value]) {
    let ins: Vec<String> = p.inputs.iter().map(|&v| names.of(v)).collect();
    let _ = write!(out, "product ({}) {{", ins.join(", "));
    for (r, row) in p.rows.iter().enumerate() {
        let ws: Vec<String> = row
            .weights
            .iter()
            .map(|w| w.map_or("_".to_string(), |w| names.of(w)))
            .collect();
        let _ = write!(out, "\n    [{}]", ws.join(", "));
        for b in &row.biases {
            let _ = write!(out, " + {}", names.of(*b));
        }
        if let Some(n) = results.get(r).and_then(|&v| cell.name(v)) {
            let _ = write!(out, " ; {n}");
        }
    }
    out.push_str("\n}");
}

/// A fused region: its arguments, then a line per body value, then its yields.
fn print_region(out: &mut String, names: &Names, region: &Region) {
    let args: Vec<String> = region.args.iter().map(|&v| names.of(v)).collect();
    let _ = write!(out, "fused [{}] ({}) {{", region.len, args.join(", "));
    for (i, ri) in region.body.iter().enumerate() {
        let _ = write!(out, "\n    e{i} = ");
        match ri.op {
            EwOp::Const(c) => {
                let _ = write!(out, "const {}", fmt_f64(c));
            }
            EwOp::Unary(op) => {
                let a: Vec<String> = ri.args.iter().map(|&o| fmt_operand(o)).collect();
                let _ = write!(out, "{} {}", op.name(), a.join(", "));
            }
            EwOp::Binary(op) => {
                let a: Vec<String> = ri.args.iter().map(|&o| fmt_operand(o)).collect();
                let _ = write!(out, "{} {}", op.name(), a.join(", "));
            }
        }
        if let Some(n) = &ri.name {
            let _ = write!(out, " ; {n}");
        }
    }
    let ys: Vec<String> = region.yields.iter().map(|&o| fmt_operand(o)).collect();
    let _ = write!(out, "\n    yield {}\n}}", ys.join(", "));
}

fn port_name(ports: &[Port], i: usize) -> &str {
    ports.get(i).map_or("?", |p| p.name.as_str())
}
