//! Lowering: a checked cell with bound sizes becomes IR.
//!
//! Each equation becomes the instructions of its expression, in the dependency
//! order sema computed; sums and products are folded left to right, `W @ U @ v`
//! from the right. Scalar sub-expressions are folded to constants here (they are
//! built from literals only). The value an equation defines takes its name
//! (`i`, `c'`, `y`), and every value keeps the span of its source expression.

use super::*;
use crate::sema::{self, Checked, Dims, IndexInfo, Ref, SymTy, Target};
use crate::syntax::ast::{AddOp, Expr, ExprKind, MulOp};

/// Lowers a checked cell. `dims` must come from [`sema::bind_dims`] on the same
/// cell, which guarantees that every size evaluates to a positive number.
pub fn lower(checked: &Checked, dims: &Dims) -> Cell {
    let size = |p: &sema::poly::Poly| -> usize {
        dims.eval(p)
            .and_then(|v| usize::try_from(v).ok())
            .unwrap_or(0)
    };
    let mut cell = Cell {
        name: checked.name.clone(),
        dims: dims
            .names
            .iter()
            .cloned()
            .zip(dims.values.iter().copied())
            .collect(),
        ..Cell::default()
    };
    let port = |p: &sema::PortInfo| Port {
        name: p.name.clone(),
        len: size(&p.len),
    };
    cell.inputs = checked.inputs.iter().map(port).collect();
    cell.states = checked.states.iter().map(port).collect();
    cell.outputs = checked.outputs.iter().map(port).collect();
    cell.params = checked
        .params
        .iter()
        .map(|p| Param {
            name: p.name.clone(),
            ty: match &p.ty {
                SymTy::Scalar => Type::Scalar,
                SymTy::Vector(n) => Type::Vector(size(n)),
                SymTy::Matrix(r, c) => Type::Matrix(size(r), size(c)),
            },
            binding: p
                .binding
                .iter()
                .map(|b| Binding {
                    tensor: b.tensor.clone(),
                    indices: b
                        .indices
                        .iter()
                        .map(|ix| match ix {
                            IndexInfo::At(p) => BindIndex::At(eval_u64(dims, p)),
                            IndexInfo::Range(a, b) => BindIndex::Range(
                                a.as_ref().map(|p| eval_u64(dims, p)),
                                b.as_ref().map(|p| eval_u64(dims, p)),
                            ),
                        })
                        .collect(),
                })
                .collect(),
        })
        .collect();

    let mut lw = Lowerer {
        checked,
        inputs: Vec::new(),
        states: Vec::new(),
        params: Vec::new(),
        lets: vec![None; checked.lets.len()],
        next_states: vec![None; checked.states.len()],
        outputs: vec![None; checked.outputs.len()],
        cell,
    };
    for i in 0..lw.cell.inputs.len() {
        let ty = Type::Vector(lw.cell.inputs[i].len);
        let v = lw.cell.push1(Op::Input(i), ty);
        lw.name(v, &checked.inputs[i].name, checked.inputs[i].span);
        lw.inputs.push(v);
    }
    for i in 0..lw.cell.states.len() {
        let ty = Type::Vector(lw.cell.states[i].len);
        let v = lw.cell.push1(Op::State(i), ty);
        lw.name(v, &checked.states[i].name, checked.states[i].span);
        lw.states.push(v);
    }
    for i in 0..lw.cell.params.len() {
        let ty = lw.cell.params[i].ty;
        let v = lw.cell.push1(Op::Param(i), ty);
        lw.name(v, &checked.params[i].name, checked.params[i].span);
        lw.params.push(v);
    }
    for eq in &checked.equations {
        let v = lw.expr(&eq.value);
        let name = match eq.target {
            Target::Let(l) => {
                lw.lets[l] = Some(v);
                checked.lets[l].name.clone()
            }
            Target::State(s) => {
                lw.next_states[s] = Some(v);
                format!("{}'", checked.states[s].name)
            }
            Target::Output(o) => {
                lw.outputs[o] = Some(v);
                checked.outputs[o].name.clone()
            }
        };
        lw.name(v, &name, eq.lhs_span);
    }
    let mut cell = lw.cell;
    // Sema guarantees every state is updated and every output defined.
    cell.state_updates = lw
        .next_states
        .iter()
        .map(|v| v.unwrap_or(Value(0)))
        .collect();
    cell.output_values = lw.outputs.iter().map(|v| v.unwrap_or(Value(0))).collect();
    cell
}

fn eval_u64(dims: &Dims, p: &sema::poly::Poly) -> u64 {
    dims.eval(p)
        .and_then(|v| u64::try_from(v).ok())
        .unwrap_or(u64::MAX)
}

struct Lowerer<'a> {
    checked: &'a Checked,
    inputs: Vec<Value>,
    states: Vec<Value>,
    params: Vec<Value>,
    lets: Vec<Option<Value>>,
    next_states: Vec<Option<Value>>,
    outputs: Vec<Option<Value>>,
    cell: Cell,
}

impl Lowerer<'_> {
    /// Names a value after its source, unless it already has a name (`y = h'`
    /// keeps the name `h'`).
    fn name(&mut self, v: Value, name: &str, span: crate::diag::Span) {
        let data = &mut self.cell.values[v.index()];
        if data.name.is_none() {
            data.name = Some(name.to_string());
            data.span = Some(span);
        }
    }

    fn spanned(&mut self, v: Value, e: &Expr) -> Value {
        let data = &mut self.cell.values[v.index()];
        if data.span.is_none() {
            data.span = Some(e.span);
        }
        v
    }

    fn constant(&self, v: Value) -> Option<f64> {
        match self.cell.op_of(v) {
            Op::Const(c) => Some(*c),
            _ => None,
        }
    }

    fn unary(&mut self, op: UnaryOp, a: Value) -> Value {
        if let Some(c) = self.constant(a) {
            return self.cell.push1(Op::Const(op.eval(c)), Type::Scalar);
        }
        let ty = self.cell.ty(a);
        self.cell.push1(Op::Unary(op, a), ty)
    }

    fn binary(&mut self, op: BinaryOp, a: Value, b: Value) -> Value {
        if let (Some(x), Some(y)) = (self.constant(a), self.constant(b)) {
            return self.cell.push1(Op::Const(op.eval(x, y)), Type::Scalar);
        }
        let ty = match (self.cell.ty(a), self.cell.ty(b)) {
            (Type::Scalar, t) => t,
            (t, _) => t,
        };
        self.cell.push1(Op::Binary(op, a, b), ty)
    }

    fn expr(&mut self, e: &Expr) -> Value {
        let v = match &e.kind {
            ExprKind::Number(n) => self.cell.push1(Op::Const(*n), Type::Scalar),
            ExprKind::Var { name, primed } => {
                let r = self.checked.resolve(&name.name);
                match (r, primed) {
                    (Some(Ref::State(s)), true) => self.next_states[s].unwrap_or(self.states[s]),
                    (Some(Ref::State(s)), false) => self.states[s],
                    (Some(Ref::Input(i)), _) => self.inputs[i],
                    (Some(Ref::Param(p)), _) => self.params[p],
                    (Some(Ref::Let(l)), _) => self.lets[l].unwrap_or(Value(0)),
                    (Some(Ref::Output(o)), _) => self.outputs[o].unwrap_or(Value(0)),
                    // Sema rejects everything else.
                    _ => Value(0),
                }
            }
            ExprKind::Call { func, args } => {
                let a = match args.first() {
                    Some(a) => self.expr(a),
                    None => Value(0),
                };
                let op = UnaryOp::from_name(&func.name).unwrap_or(UnaryOp::Neg);
                self.unary(op, a)
            }
            ExprKind::Neg(inner) => {
                let a = self.expr(inner);
                self.unary(UnaryOp::Neg, a)
            }
            ExprKind::Sum(terms) => {
                let mut acc: Option<Value> = None;
                for (op, t) in terms {
                    let v = self.expr(t);
                    acc = Some(match (acc, op) {
                        (None, AddOp::Add) => v,
                        (None, AddOp::Sub) => self.unary(UnaryOp::Neg, v),
                        (Some(a), AddOp::Add) => self.binary(BinaryOp::Add, a, v),
                        (Some(a), AddOp::Sub) => self.binary(BinaryOp::Sub, a, v),
                    });
                }
                acc.unwrap_or(Value(0))
            }
            ExprKind::Product(factors) => {
                let mut acc: Option<Value> = None;
                for (op, f) in factors {
                    let v = self.expr(f);
                    acc = Some(match (acc, op) {
                        (None, _) => v,
                        (Some(a), MulOp::Mul) => self.binary(BinaryOp::Mul, a, v),
                        (Some(a), MulOp::Div) => self.binary(BinaryOp::Div, a, v),
                    });
                }
                acc.unwrap_or(Value(0))
            }
            ExprKind::MatVec { matrices, vector } => {
                let mut v = self.expr(vector);
                for m in matrices.iter().rev() {
                    let Some(Ref::Param(p)) = self.checked.resolve(&m.name) else {
                        continue;
                    };
                    let w = self.params[p];
                    let rows = match self.cell.ty(w) {
                        Type::Matrix(r, _) => r,
                        _ => 0,
                    };
                    v = self.cell.push1(
                        Op::MatVec {
                            weight: w,
                            input: v,
                        },
                        Type::Vector(rows),
                    );
                    let span = m.span.to(vector.span);
                    self.cell.values[v.index()].span = Some(span);
                }
                v
            }
        };
        self.spanned(v, e)
    }
}
