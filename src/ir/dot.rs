//! A Graphviz picture of the IR (`cellc compile --emit dot`): one node per
//! instruction, edges along the dataflow. Matrix products show their weights in
//! their label (`[W_ii W_hi; W_if W_hf] @ [x; h]`), so the fusion is visible at a
//! glance; parameters appear as nodes only where element-wise work reads them.

use std::fmt::Write;

use super::{Cell, EwOp, Op, Value};

fn esc(s: &str) -> String {
    s.replace('\\', "\\\\").replace('"', "\\\"")
}

fn label_of(cell: &Cell, v: Value) -> String {
    cell.describe(v, None)
}

pub fn dot(cell: &Cell) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "digraph \"{}\" {{", esc(&cell.name));
    let _ = writeln!(out, "  rankdir=TB;");
    let _ = writeln!(out, "  node [fontname=\"monospace\", fontsize=10];");
    let _ = writeln!(out, "  edge [fontname=\"monospace\", fontsize=9];");
    // Which parameters are read by something other than a product's weight slots.
    let mut shown = vec![true; cell.insts.len()];
    for (i, inst) in cell.insts.iter().enumerate() {
        if let Op::Param(_) = inst.op {
            let v = inst.results[0];
            shown[i] = cell.insts.iter().any(|u| match &u.op {
                Op::Product(_) | Op::MatVec { .. } | Op::MatVecT { .. } => false,
                op => op.operands().contains(&v),
            });
        }
    }
    for (i, inst) in cell.insts.iter().enumerate() {
        if !shown[i] {
            continue;
        }
        let (label, shape) = node(cell, &inst.op);
        let name: Vec<&str> = inst.results.iter().filter_map(|v| cell.name(*v)).collect();
        let label =
            if name.is_empty() || matches!(inst.op, Op::Input(_) | Op::State(_) | Op::Param(_)) {
                label
            } else {
                format!("{}\\n= {}", label, name.join(", "))
            };
        let _ = writeln!(
            out,
            "  n{i} [label=\"{}\", shape={shape}];",
            esc_label(&label)
        );
    }
    for (i, inst) in cell.insts.iter().enumerate() {
        if !shown[i] {
            continue;
        }
        let mut seen = Vec::new();
        for v in inst.op.operands() {
            let d = cell.values[v.index()].inst.index();
            if !shown[d] || seen.contains(&v) {
                continue;
            }
            seen.push(v);
            match cell.name(v) {
                Some(n) if !matches!(cell.op_of(v), Op::Input(_) | Op::State(_) | Op::Param(_)) => {
                    let _ = writeln!(out, "  n{d} -> n{i} [label=\"{}\"];", esc(n));
                }
                _ => {
                    let _ = writeln!(out, "  n{d} -> n{i};");
                }
            }
        }
    }
    for (k, v) in cell.state_updates.iter().enumerate() {
        let d = cell.values[v.index()].inst.index();
        let _ = writeln!(
            out,
            "  s{k} [label=\"{}'\", shape=doublecircle];\n  n{d} -> s{k};",
            esc(&cell.states[k].name)
        );
    }
    for (k, v) in cell.output_values.iter().enumerate() {
        let d = cell.values[v.index()].inst.index();
        let _ = writeln!(
            out,
            "  o{k} [label=\"output {}\", shape=doubleoctagon];\n  n{d} -> o{k};",
            esc(&cell.outputs[k].name)
        );
    }
    out.push_str("}\n");
    out
}

/// A node's label (before its value's name) and shape.
fn node(cell: &Cell, op: &Op) -> (String, &'static str) {
    match op {
        Op::Input(k) => (format!("input {}", cell.inputs[k.index()].name), "ellipse"),
        Op::State(k) => (format!("state {}", cell.states[k.index()].name), "ellipse"),
        Op::Param(k) => (format!("param {}", cell.params[k.index()].name), "ellipse"),
        Op::Const(c) => (format!("{c}"), "plaintext"),
        Op::Unary(op, _) => (op.name().to_string(), "box"),
        Op::Binary(op, _, _) => (op.name().to_string(), "box"),
        Op::Reduce(op, _) => (op.name().to_string(), "invtriangle"),
        Op::MatVec { weight, input } => (
            format!("{} @ {}", label_of(cell, *weight), label_of(cell, *input)),
            "box3d",
        ),
        Op::MatVecT { weight, input } => (
            format!("{}ᵀ @ {}", label_of(cell, *weight), label_of(cell, *input)),
            "box3d",
        ),
        Op::Product(p) => {
            let rows: Vec<String> = p
                .rows
                .iter()
                .map(|r| {
                    let ws: Vec<String> = r
                        .weights
                        .iter()
                        .map(|w| w.map_or("0".to_string(), |w| label_of(cell, w)))
                        .collect();
                    let mut s = ws.join(" ");
                    for b in &r.biases {
                        let _ = write!(s, " +{}", label_of(cell, *b));
                    }
                    s
                })
                .collect();
            let ins: Vec<String> = p.inputs.iter().map(|v| label_of(cell, *v)).collect();
            (
                format!(
                    "product\\n[{}]\\n@ [{}]",
                    rows.join(";\\n "),
                    ins.join("; ")
                ),
                "box3d",
            )
        }
        Op::Fused(r) => {
            let ops: Vec<String> = r
                .body
                .iter()
                .filter_map(|b| match b.op {
                    EwOp::Const(_) => None,
                    EwOp::Unary(o) => Some(o.name().to_string()),
                    EwOp::Binary(o) => Some(o.name().to_string()),
                })
                .collect();
            (
                format!("fused [{}]\\n{} ops: {}", r.len, ops.len(), wrap(&ops)),
                "component",
            )
        }
    }
}

/// Keeps `\n` escapes written above, escapes quotes.
fn esc_label(s: &str) -> String {
    s.replace('"', "\\\"")
}

fn wrap(ops: &[String]) -> String {
    ops.chunks(6)
        .map(|c| c.join(" "))
        .collect::<Vec<_>>()
        .join("\\n")
}
