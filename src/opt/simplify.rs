//! `simplify`: common-subexpression elimination and algebraic clean-up.
//!
//! Identical instructions (same op, same operands; `a + b` and `b + a` count as
//! the same) are merged, so that a product written twice is computed, and its
//! weights read, once. Constants fold, and identities that hold in IEEE
//! arithmetic go: `x * 1`, `1 * x`, `x / 1`, `x + 0`, `0 + x`, `x - 0`, `-(-x)`.
//! (`x * 0` stays: it is NaN for infinite `x`.)

use std::collections::HashMap;

use super::{Ctx, PassResult};
use crate::ir::{BinaryOp, Cell, InputId, Op, ParamId, ReduceOp, StateId, UnaryOp, Value};

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
enum Key {
    Input(InputId),
    State(StateId),
    Param(ParamId),
    Const(u64),
    Unary(UnaryOp, Value),
    Binary(BinaryOp, Value, Value),
    MatVec(Value, Value),
    MatVecT(Value, Value),
    Reduce(ReduceOp, Value),
}

fn key(op: &Op) -> Option<Key> {
    Some(match op {
        Op::Input(i) => Key::Input(*i),
        Op::State(i) => Key::State(*i),
        Op::Param(i) => Key::Param(*i),
        Op::Const(c) => Key::Const(c.to_bits()),
        Op::Unary(o, a) => Key::Unary(*o, *a),
        Op::Binary(o, a, b) => {
            let (a, b) = match o {
                BinaryOp::Add | BinaryOp::Mul if b < a => (*b, *a),
                _ => (*a, *b),
            };
            Key::Binary(*o, a, b)
        }
        Op::MatVec { weight, input } => Key::MatVec(*weight, *input),
        Op::MatVecT { weight, input } => Key::MatVecT(*weight, *input),
        Op::Reduce(o, a) => Key::Reduce(*o, *a),
        Op::Product(_) | Op::Fused(_) => return None,
    })
}

pub fn simplify(cell: &mut Cell, _ctx: &mut Ctx<'_>) -> PassResult {
    let mut changed = false;
    // `repl[v]` is what every use of `v` now reads.
    let mut repl: Vec<Value> = (0..cell.values.len() as u32).map(Value).collect();
    let mut seen: HashMap<Key, Value> = HashMap::new();
    for i in 0..cell.insts.len() {
        let op = &mut cell.insts[i].op;
        op.map_operands(|v| repl[v.index()]);
        let results = cell.insts[i].results.clone();
        let [result] = results.as_slice() else {
            continue;
        };
        let op = cell.insts[i].op.clone();
        if let Some(new) = fold(cell, &op) {
            let target = match new {
                Folded::Value(v) => v,
                Folded::Const(c) => {
                    cell.insts[i].op = Op::Const(c);
                    *result
                }
            };
            if target != *result {
                repl[result.index()] = target;
                changed = true;
                continue;
            }
        }
        let Some(k) = key(&cell.insts[i].op) else {
            continue;
        };
        match seen.get(&k) {
            Some(&earlier) => {
                repl[result.index()] = earlier;
                // Keep the more informative name on the survivor.
                if cell.values[earlier.index()].name.is_none() {
                    let name = cell.values[result.index()].name.clone();
                    cell.values[earlier.index()].name = name;
                }
                changed = true;
            }
            None => {
                seen.insert(k, *result);
            }
        }
    }
    for v in cell
        .state_updates
        .iter_mut()
        .chain(cell.output_values.iter_mut())
    {
        *v = repl[v.index()];
    }
    let before = cell.insts.len();
    cell.compact();
    Ok(changed || cell.insts.len() != before)
}

enum Folded {
    Value(Value),
    Const(f64),
}

fn constant(cell: &Cell, v: Value) -> Option<f64> {
    match cell.op_of(v) {
        Op::Const(c) => Some(*c),
        _ => None,
    }
}

fn fold(cell: &Cell, op: &Op) -> Option<Folded> {
    match *op {
        Op::Unary(o, a) => {
            if let Some(c) = constant(cell, a) {
                return Some(Folded::Const(o.eval(c)));
            }
            if o == UnaryOp::Neg {
                if let Op::Unary(UnaryOp::Neg, inner) = cell.op_of(a) {
                    return Some(Folded::Value(*inner));
                }
            }
            None
        }
        Op::Binary(o, a, b) => {
            let (ca, cb) = (constant(cell, a), constant(cell, b));
            if let (Some(x), Some(y)) = (ca, cb) {
                return Some(Folded::Const(o.eval(x, y)));
            }
            // Only identities whose result has the type of the kept operand.
            let keep_a = cell.ty(a) == cell.ty(b) || cb.is_some();
            let keep_b = cell.ty(a) == cell.ty(b) || ca.is_some();
            match o {
                BinaryOp::Mul if cb == Some(1.0) && keep_a => Some(Folded::Value(a)),
                BinaryOp::Mul if ca == Some(1.0) && keep_b => Some(Folded::Value(b)),
                BinaryOp::Div if cb == Some(1.0) && keep_a => Some(Folded::Value(a)),
                BinaryOp::Add if cb == Some(0.0) && keep_a => Some(Folded::Value(a)),
                BinaryOp::Add if ca == Some(0.0) && keep_b => Some(Folded::Value(b)),
                BinaryOp::Sub if cb == Some(0.0) && keep_a => Some(Folded::Value(a)),
                _ => None,
            }
        }
        _ => None,
    }
}
