//! `stack`: gate stacking.
//!
//! Products in different gates that read the same vectors become one product with
//! stacked row blocks (`[W_i; W_f; W_g; W_o] @ [x; h]`), so one pass over the
//! inputs serves every gate. Products that read different vectors stack too: a
//! block that does not read an input has no weight there (a zero block that is
//! never stored nor read), so no weight row is read twice.
//!
//! **Legality.** Two products may merge only if neither depends on the other. The
//! pass groups products by stage ([`stages`]: the number of products on the
//! longest dependency path to them); products of one stage never depend on each
//! other, since a dependency would put one at a later stage. Merging every stage
//! into one product gives the fewest products a step can have: one per link of
//! the longest chain of dependent products (GRU: 1; the original GRU, whose
//! `W_hn @ (r * h)` waits for `r`: 2).

use std::collections::HashMap;

use super::{Ctx, PassResult, RemarkKind};
use crate::ir::analysis::stages;
use crate::ir::{Cell, Op, Product, RowBlock, Type, Value};

const PASS: &str = "stack";

pub fn stack_gates(cell: &mut Cell, ctx: &mut Ctx<'_>) -> PassResult {
    let stage = stages(cell);
    let mut by_stage: Vec<Vec<usize>> = Vec::new();
    for (i, inst) in cell.insts.iter().enumerate() {
        if let Op::Product(_) = inst.op {
            let s = stage[inst.results[0].index()];
            if by_stage.len() <= s {
                by_stage.resize(s + 1, Vec::new());
            }
            by_stage[s].push(i);
        }
    }
    explain_dependent(cell, ctx, &stage, &by_stage);
    let mut replaced: HashMap<Value, Value> = HashMap::new();
    let mut changed = false;
    for (s, group) in by_stage.iter().enumerate() {
        if group.len() < 2 {
            continue;
        }
        let parts: Vec<(Product, Vec<Value>)> = group
            .iter()
            .filter_map(|&i| match &cell.insts[i].op {
                Op::Product(p) => Some((p.clone(), cell.insts[i].results.clone())),
                _ => None,
            })
            .collect();
        let merged = merge(&parts.iter().map(|p| &p.0).collect::<Vec<_>>());
        let tys: Vec<Type> = parts
            .iter()
            .flat_map(|(_, rs)| rs.iter().map(|&r| cell.ty(r)))
            .collect();
        let inputs: Vec<String> = merged
            .inputs
            .iter()
            .map(|&v| cell.describe(v, ctx.source))
            .collect();
        let new = cell.push(Op::Product(merged), &tys);
        let mut gates = Vec::new();
        for (old, new) in parts.iter().flat_map(|(_, rs)| rs.iter()).zip(&new) {
            let data = cell.values[old.index()].clone();
            cell.values[new.index()].name = data.name.clone();
            cell.values[new.index()].span = data.span;
            gates.push(cell.describe(*old, ctx.source));
            replaced.insert(*old, *new);
        }
        let spans: Vec<_> = parts
            .iter()
            .flat_map(|(_, rs)| rs.iter())
            .filter_map(|v| cell.values[v.index()].span)
            .collect();
        let r = ctx.remark(
            PASS,
            RemarkKind::Applied,
            spans.first().copied(),
            format!(
                "stacked {} products (gates {}) into one of {} row blocks reading [{}]",
                group.len(),
                gates
                    .iter()
                    .map(|g| format!("`{g}`"))
                    .collect::<Vec<_>>()
                    .join(", "),
                new.len(),
                inputs.join("; ")
            ),
        );
        for sp in spans.iter().skip(1) {
            r.related.push((*sp, "stacked".into()));
        }
        r.notes.push(format!(
            "these products are at stage {s}: none depends on another, so one pass over the inputs serves all"
        ));
        changed = true;
    }
    if changed {
        cell.replace_all(&replaced);
        cell.compact();
    }
    Ok(changed)
}

/// Says why the products of later stages stand apart: each reads a vector that
/// this step's earlier products compute.
fn explain_dependent(cell: &Cell, ctx: &mut Ctx<'_>, stage: &[usize], by_stage: &[Vec<usize>]) {
    for (s, group) in by_stage.iter().enumerate().skip(2) {
        for &i in group {
            let Op::Product(p) = &cell.insts[i].op else {
                continue;
            };
            let Some(late) = p.inputs.iter().find(|v| stage[v.index()] == s - 1) else {
                continue;
            };
            let result = cell.insts[i].results[0];
            let msg = format!(
                "the product for `{}` is a separate, later product: it reads `{}`, which this step's stage-{} product{} must compute first",
                cell.describe(result, ctx.source),
                cell.describe(*late, ctx.source),
                s - 1,
                if by_stage[s - 1].len() > 1 { "s" } else { "" }
            );
            let span = cell.values[result.index()].span;
            let r = ctx.remark(PASS, RemarkKind::Missed, span, msg);
            if let Some(sp) = cell.values[late.index()].span {
                r.related
                    .push((sp, "computed after the first product".into()));
            }
        }
    }
}

/// Merges products: the inputs are united (a vector read by several products is
/// read once; one read twice by one product keeps two columns), the row blocks
/// are concatenated, and each weight moves to its input's new column.
fn merge(parts: &[&Product]) -> Product {
    let mut inputs: Vec<Value> = Vec::new();
    let mut columns: Vec<Vec<usize>> = Vec::with_capacity(parts.len());
    for p in parts {
        // The k-th occurrence of a value in this product takes the k-th column of it.
        let mut seen: HashMap<Value, usize> = HashMap::new();
        let mut cols = Vec::with_capacity(p.inputs.len());
        for &x in &p.inputs {
            let k = seen.entry(x).or_insert(0);
            let col = inputs
                .iter()
                .enumerate()
                .filter(|(_, &v)| v == x)
                .map(|(c, _)| c)
                .nth(*k)
                .unwrap_or_else(|| {
                    inputs.push(x);
                    inputs.len() - 1
                });
            *k += 1;
            cols.push(col);
        }
        columns.push(cols);
    }
    let mut rows = Vec::new();
    for (p, cols) in parts.iter().zip(&columns) {
        for row in &p.rows {
            let mut weights = vec![None; inputs.len()];
            for (j, w) in row.weights.iter().enumerate() {
                weights[cols[j]] = *w;
            }
            rows.push(RowBlock {
                weights,
                biases: row.biases.clone(),
            });
        }
    }
    Product { inputs, rows }
}
