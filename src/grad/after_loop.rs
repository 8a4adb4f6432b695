//! The input adjoints' products, taken out of the backward step to run after
//! the loop. An input's adjoint is a sum with a term `Wᵀ z` per product `W
//! @ x` that reads it, and every `z` is an output of the backward cell
//! already (the weight gradients need it). Nothing later in a step reads
//! `dx`, so those terms can wait: after the loop they are one large product
//! per weight over all `T·B` rows (`dx += Z W`), on the panel kernels'
//! cache-blocked terms, where inside the step they were a product of a few
//! rows. This is what fused training libraries do: per step only the
//! recurrent product `W_rᵀ · dgates`, the input's share after the loop.

use std::collections::HashMap;

use super::{Layout, Operand};
use crate::ir::{BinaryOp, Cell, Op, ParamId, Value};

/// The part of input `input`'s adjoint computed after the loop: `dx +=
/// Σ z_k W_k` over all rows, on top of what the step gives (the rest of
/// the adjoint, if any: [`AfterLoop::input_outputs`]).
#[derive(Clone, Debug, PartialEq)]
pub struct DeferredInput {
    pub input: usize,
    /// Each term's weight (`W`, `[R, C]`) and the backward output holding
    /// the adjoint `z` of its product's result (`[R]` per row).
    pub terms: Vec<(ParamId, usize)>,
}

/// A backward cell with its input adjoints' products taken out of the
/// step ([`defer_input_products`]).
#[derive(Clone, Debug)]
pub struct AfterLoop {
    pub cell: Cell,
    /// The backward cell's layout, its output indices those of `cell`.
    pub layout: Layout,
    pub deferred: Vec<DeferredInput>,
    /// Per forward input, the output of `cell` holding what the step gives
    /// of its adjoint; `None` when all of it comes after the loop.
    pub input_outputs: Vec<Option<usize>>,
}

/// `bw` (a backward cell, before `transpose_products`, and its layout) with
/// the transposed products of each input adjoint taken out, and those
/// products. A term stays in the step when its `z` is no output (it always
/// is one for a backward cell made by `backward`); an input adjoint with
/// nothing left in the step is no output any more.
pub fn defer_input_products(bw: &Cell, layout: &Layout) -> AfterLoop {
    let mut cell = bw.clone();
    let mut deferred = Vec::new();
    let z_output: HashMap<Value, usize> = (bw.output_values.iter().enumerate())
        .skip(layout.inputs)
        .map(|(o, &v)| (v, o))
        .collect();
    let mut emptied = Vec::new();
    for i in 0..layout.inputs {
        let mut terms = Vec::new();
        let mut rest = Vec::new();
        split_sum(bw, bw.output_values[i], &mut |v| match *bw.op_of(v) {
            Op::MatVecT { weight, input } => match (bw.op_of(weight), z_output.get(&input)) {
                (&Op::Param(p), Some(&o)) => terms.push((p, o)),
                _ => rest.push(v),
            },
            _ => rest.push(v),
        });
        if terms.is_empty() {
            continue;
        }
        match rest.split_first() {
            Some((&first, others)) => {
                let ty = bw.ty(bw.output_values[i]);
                let sum = (others.iter()).fold(first, |acc, &t| {
                    cell.push1(Op::Binary(BinaryOp::Add, acc, t), ty)
                });
                cell.values[sum.index()].name = bw.values[bw.output_values[i].index()].name.clone();
                cell.output_values[i] = sum;
            }
            None => emptied.push(i),
        }
        deferred.push(DeferredInput { input: i, terms });
    }
    // The emptied outputs removed, the others renumbered.
    let renumber = |o: usize| o - emptied.iter().filter(|&&e| e < o).count();
    for &i in emptied.iter().rev() {
        cell.outputs.remove(i);
        cell.output_values.remove(i);
    }
    cell.compact();
    let mut layout = layout.clone();
    for g in &mut layout.products {
        g.z = renumber(g.z);
        if let Operand::Output(o) = &mut g.v {
            *o = renumber(*o);
        }
    }
    for (_, o) in &mut layout.vectors {
        *o = renumber(*o);
    }
    for d in &mut deferred {
        for (_, z) in &mut d.terms {
            *z = renumber(*z);
        }
    }
    let input_outputs = (0..layout.inputs)
        .map(|i| (!emptied.contains(&i)).then(|| renumber(i)))
        .collect();
    AfterLoop {
        cell,
        layout,
        deferred,
        input_outputs,
    }
}
/// Calls `term` with each term of the sum `v` (through additions).
fn split_sum(cell: &Cell, v: Value, term: &mut impl FnMut(Value)) {
    match *cell.op_of(v) {
        Op::Binary(BinaryOp::Add, a, b) if cell.ty(a) == cell.ty(b) => {
            split_sum(cell, a, term);
            split_sum(cell, b, term);
        }
        _ => term(v),
    }
}
