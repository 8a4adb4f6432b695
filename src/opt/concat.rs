//! `concat`: sibling concatenation, the classic trick.
//!
//! Inside one sum, `W_a @ a + W_b @ b + ... + b_1 + b_2` is one product of the
//! concatenated matrix `[W_a W_b]` with the stacked vector `[a; b]`, its biases
//! folded into one (summed once, when weights are packed).
//!
//! **Legality.** A sum is a maximal tree of `add`/`sub` instructions whose inner
//! nodes are read only by their parent. A product term joins the concatenation
//! only if it is a leaf of that tree with a plus sign and nothing else reads it:
//! then the sum meets it unchanged, so adding it inside the product computes the
//! same value (up to the order of f64 additions). A term inside an element-wise
//! product or a non-linearity (`r * (W_hn @ h + b_hn)`) is a leaf of a *different*
//! sum, so it is never concatenated with the outer one, nor is its bias folded
//! into the outer bias; the pass says so in a remark. A subtracted term, or one
//! read elsewhere too, stays a product of its own (also with a remark).
//!
//! Every matrix product left alone becomes a one-term product, so that later
//! passes and codegen see only `product`.

use std::collections::HashMap;

use super::{Ctx, PassResult, RemarkKind};
use crate::diag::Span;
use crate::ir::{BinaryOp, Cell, Op, Product, RowBlock, Type, Value};

const PASS: &str = "concat";

/// One sum: its root and its leaves with their signs (`true` for minus).
struct Sum {
    root: Value,
    terms: Vec<(bool, Value)>,
}

fn is_sum_op(op: &Op) -> bool {
    matches!(op, Op::Binary(BinaryOp::Add | BinaryOp::Sub, ..))
}

/// Whether `v` is an inner node of a larger sum: a sum read once, by a sum.
fn absorbed(cell: &Cell, uses: &[usize], users: &[Vec<crate::ir::Inst>], v: Value) -> bool {
    uses[v.index()] == 1
        && !cell.is_root(v)
        && users[v.index()]
            .first()
            .is_some_and(|u| is_sum_op(&cell.insts[u.index()].op))
}

fn collect_sums(cell: &Cell) -> Vec<Sum> {
    let uses = cell.use_counts();
    let users = cell.users();
    let mut sums = Vec::new();
    for inst in &cell.insts {
        if !is_sum_op(&inst.op) {
            continue;
        }
        let root = inst.results[0];
        if absorbed(cell, &uses, &users, root) {
            continue;
        }
        let mut terms = Vec::new();
        let mut stack = vec![(false, root)];
        while let Some((neg, v)) = stack.pop() {
            let expand = v == root || absorbed(cell, &uses, &users, v);
            match cell.op_of(v) {
                Op::Binary(BinaryOp::Add, a, b) if expand => {
                    stack.push((neg, *b));
                    stack.push((neg, *a));
                }
                Op::Binary(BinaryOp::Sub, a, b) if expand => {
                    stack.push((!neg, *b));
                    stack.push((neg, *a));
                }
                _ => terms.push((neg, v)),
            }
        }
        sums.push(Sum { root, terms });
    }
    sums
}

/// The name of the gate a value feeds: the first named value up a chain of
/// single readers (the sum inside `i = sigmoid(...)` belongs to `i`).
fn gate_name(cell: &Cell, users: &[Vec<crate::ir::Inst>], mut v: Value) -> Option<String> {
    for _ in 0..64 {
        if let Some(n) = cell.name(v) {
            return Some(n.to_string());
        }
        let [u] = users[v.index()].as_slice() else {
            return None;
        };
        let inst = &cell.insts[u.index()];
        if inst.results.len() != 1 {
            return None;
        }
        v = inst.results[0];
    }
    None
}

fn span_of(cell: &Cell, v: Value) -> Option<Span> {
    cell.values[v.index()].span
}

/// A sum's terms, sorted: the products that join (result, weight, input),
/// the vector parameters folded in as biases, and the rest (negated?).
struct Terms {
    products: Vec<(Value, Value, Value)>,
    biases: Vec<Value>,
    others: Vec<(bool, Value)>,
}

pub fn concat_siblings(cell: &mut Cell, ctx: &mut Ctx<'_>) -> PassResult {
    let sums = collect_sums(cell);
    let uses = cell.use_counts();
    let users = cell.users();

    // Which sum each product term belongs to, for the "why not" remarks.
    let mut products_of_sum: HashMap<Value, Vec<Value>> = HashMap::new();
    for s in &sums {
        let terms: Vec<Value> = s
            .terms
            .iter()
            .filter(|(_, v)| matches!(cell.op_of(*v), Op::MatVec { .. }))
            .map(|(_, v)| *v)
            .collect();
        products_of_sum.insert(s.root, terms);
    }
    explain_isolated_sums(cell, ctx, &sums, &products_of_sum, &uses, &users);

    let mut changed = false;
    let mut replaced: HashMap<Value, Value> = HashMap::new();
    for s in &sums {
        let terms = sort_terms(cell, ctx, s, &replaced, &uses);
        if terms.products.is_empty() {
            continue;
        }
        changed = true;
        let Type::Vector(rows) = cell.ty(s.root) else {
            continue;
        };
        let product = Product {
            inputs: terms.products.iter().map(|p| p.2).collect(),
            rows: vec![RowBlock {
                weights: terms.products.iter().map(|p| Some(p.1)).collect(),
                biases: terms.biases.clone(),
            }],
        };
        let p = cell.push1(Op::Product(product), Type::Vector(rows));
        cell.values[p.index()].name = gate_name(cell, &users, s.root);
        cell.values[p.index()].span = span_of(cell, s.root);
        remark_concatenated(cell, ctx, s.root, &terms);

        // The rest of the sum, in its original order, after the product.
        let mut acc = p;
        for (neg, v) in terms.others {
            let op = if neg { BinaryOp::Sub } else { BinaryOp::Add };
            let ty = match (cell.ty(acc), cell.ty(v)) {
                (Type::Scalar, t) => t,
                (t, _) => t,
            };
            acc = cell.push1(Op::Binary(op, acc, v), ty);
        }
        let data = cell.values[s.root.index()].clone();
        if data.name.is_some() {
            cell.values[acc.index()].name = data.name.clone();
        }
        if cell.values[acc.index()].span.is_none() {
            cell.values[acc.index()].span = data.span;
        }
        replaced.insert(s.root, acc);
    }
    changed |= standalone_products(cell, &users, &mut replaced);
    cell.replace_all(&replaced);
    cell.compact();
    Ok(changed)
}

/// Sorts a sum's terms (as replaced so far), with a remark for each
/// product that cannot join.
fn sort_terms(
    cell: &Cell,
    ctx: &mut Ctx<'_>,
    s: &Sum,
    replaced: &HashMap<Value, Value>,
    uses: &[usize],
) -> Terms {
    let mut t = Terms {
        products: Vec::new(),
        biases: Vec::new(),
        others: Vec::new(),
    };
    for &(neg, v) in &s.terms {
        let v = *replaced.get(&v).unwrap_or(&v);
        match cell.op_of(v) {
            Op::MatVec { weight, input } if !neg && uses[v.index()] == 1 => {
                t.products.push((v, *weight, *input));
            }
            Op::MatVec { .. } => {
                let why = if neg {
                    "it is subtracted".to_string()
                } else {
                    format!("its result is read {} times", uses[v.index()])
                };
                let msg = format!(
                    "`{}` is not concatenated with the other terms of its sum: {why}",
                    cell.describe(v, ctx.source)
                );
                ctx.remark(PASS, RemarkKind::Missed, span_of(cell, v), msg);
                t.others.push((neg, v));
            }
            Op::Param(_) if !neg && matches!(cell.ty(v), Type::Vector(_)) => t.biases.push(v),
            _ => t.others.push((neg, v)),
        }
    }
    t
}

/// Says what joined the product of the sum at `root`: several products, or
/// biases folded into one.
fn remark_concatenated(cell: &Cell, ctx: &mut Ctx<'_>, root: Value, t: &Terms) {
    let (products, biases) = (&t.products, &t.biases);
    if products.len() < 2 && biases.is_empty() {
        return;
    }
    let source = ctx.source;
    let weights: Vec<String> = products
        .iter()
        .map(|p| cell.describe(p.1, source))
        .collect();
    let inputs: Vec<String> = products
        .iter()
        .map(|p| cell.describe(p.2, source))
        .collect();
    let msg = if products.len() > 1 {
        format!(
            "concatenated {} products into one: [{}] @ [{}]",
            products.len(),
            weights.join(" "),
            inputs.join("; ")
        )
    } else {
        format!(
            "bias{} folded into the product `{} @ {}`",
            if biases.len() > 1 { "es" } else { "" },
            weights[0],
            inputs[0]
        )
    };
    let r = ctx.remark(PASS, RemarkKind::Applied, span_of(cell, root), msg);
    for (mv, _, _) in products {
        if let Some(sp) = cell.values[mv.index()].span {
            r.related.push((sp, "joins".into()));
        }
    }
    if !biases.is_empty() {
        let names: Vec<String> = biases
            .iter()
            .map(|b| format!("`{}`", cell.describe(*b, source)))
            .collect();
        r.notes.push(format!(
            "bias{} {} folded into one, summed when the weights are packed",
            if names.len() > 1 { "es" } else { "" },
            names.join(" + ")
        ));
    }
}

/// Products that are in no sum, or were left out of one, stand alone: each
/// becomes a product of one weight. Returns whether there was any.
fn standalone_products(
    cell: &mut Cell,
    users: &[Vec<crate::ir::Inst>],
    replaced: &mut HashMap<Value, Value>,
) -> bool {
    let mut changed = false;
    let uses = cell.use_counts();
    for i in 0..cell.insts.len() {
        let Op::MatVec { weight, input } = cell.insts[i].op else {
            continue;
        };
        let old = cell.insts[i].results[0];
        if uses[old.index()] == 0 {
            continue;
        }
        let ty = cell.ty(old);
        let p = cell.push1(
            Op::Product(Product {
                inputs: vec![input],
                rows: vec![RowBlock {
                    weights: vec![Some(weight)],
                    biases: Vec::new(),
                }],
            }),
            ty,
        );
        let data = cell.values[old.index()].clone();
        cell.values[p.index()].name = data.name.or_else(|| gate_name(cell, users, old));
        cell.values[p.index()].span = data.span;
        replaced.insert(old, p);
        changed = true;
    }
    changed
}

/// For each sum with products that is not part of a larger sum, says what stands
/// between it and the sum it eventually meets (`r * (W_hn @ h + b_hn)`).
fn explain_isolated_sums(
    cell: &Cell,
    ctx: &mut Ctx<'_>,
    sums: &[Sum],
    products_of_sum: &HashMap<Value, Vec<Value>>,
    uses: &[usize],
    users: &[Vec<crate::ir::Inst>],
) {
    let source = ctx.source;
    let root_of = |v: Value| -> Option<Value> {
        // Walk up through inner sum nodes to the sum's root.
        let mut v = v;
        for _ in 0..10_000 {
            if products_of_sum.contains_key(&v) {
                return Some(v);
            }
            let [u] = users[v.index()].as_slice() else {
                return None;
            };
            let inst = &cell.insts[u.index()];
            if !is_sum_op(&inst.op) {
                return None;
            }
            v = inst.results[0];
        }
        None
    };
    for s in sums {
        let mine = &products_of_sum[&s.root];
        if mine.is_empty() {
            continue;
        }
        // What reads this sum, up to the next sum.
        let mut v = s.root;
        let mut between: Vec<String> = Vec::new();
        let mut met: Option<Value> = None;
        for _ in 0..64 {
            if uses[v.index()] != 1 || cell.is_root(v) {
                break;
            }
            let [u] = users[v.index()].as_slice() else {
                break;
            };
            let inst = &cell.insts[u.index()];
            let [r] = inst.results.as_slice() else { break };
            match &inst.op {
                Op::Binary(BinaryOp::Mul, a, b) => {
                    let other = if *a == v { *b } else { *a };
                    between.push(format!("multiplied by `{}`", cell.describe(other, source)));
                }
                Op::Binary(BinaryOp::Div, a, b) => {
                    let other = if *a == v { *b } else { *a };
                    between.push(format!("divided by `{}`", cell.describe(other, source)));
                }
                Op::Unary(crate::ir::UnaryOp::Neg, _) => between.push("negated".into()),
                // A non-linearity makes a gate of its own: not worth a remark.
                Op::Unary(..) => break,
                op if is_sum_op(op) => {
                    met = root_of(*r);
                    break;
                }
                _ => break,
            }
            v = *r;
        }
        let Some(outer) = met else { continue };
        let theirs = &products_of_sum[&outer];
        if theirs.is_empty() || between.is_empty() {
            continue;
        }
        let names: Vec<String> = theirs
            .iter()
            .map(|p| format!("`{}`", cell.describe(*p, source)))
            .collect();
        for p in mine {
            let msg = format!(
                "`{}` is not concatenated with {}: its sum is {} before it meets them",
                cell.describe(*p, source),
                names.join(", "),
                between.join(", then ")
            );
            let r = ctx.remark(PASS, RemarkKind::Missed, span_of(cell, *p), msg);
            for q in theirs {
                if let Some(sp) = span_of(cell, *q) {
                    r.related.push((sp, "not joined with this".into()));
                }
            }
            r.notes.push(
                "a term may join a concatenation only where it meets its siblings in one sum, \
                 outside any element-wise product or non-linearity"
                    .into(),
            );
        }
    }
}
