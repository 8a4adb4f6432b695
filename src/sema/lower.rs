//! Lowering: a checked cell with bound sizes becomes IR. The last step of the
//! front end: the IR knows nothing of the syntax it came from.
//!
//! Each equation becomes the instructions of its expression, in the dependency
//! order sema computed; sums and products are folded left to right, `W @ U @ v`
//! from the right. Scalar sub-expressions are folded to constants here (they are
//! built from literals only). The value an equation defines takes its name
//! (`i`, `c'`, `y`), and every value keeps the span of its source expression.
//!
//! Everything lowering relies on was checked before: a name that does not
//! resolve, a function the language lacks, a size that does not evaluate is an
//! internal error here, never a default.

use super::functions::{self, Function};
use super::{poly::Poly, Checked, Dims, IndexInfo, PortInfo, Ref, SymTy, Target};
use crate::ir::*;
use crate::syntax::ast::{AddOp, Expr, ExprKind, MulOp};

/// What lowering found that the checker should have refused: a bug.
#[derive(Clone, Debug, PartialEq)]
pub struct LowerError(pub String);

type Lowered<T> = Result<T, LowerError>;

fn bug<T>(m: impl Into<String>) -> Lowered<T> {
    Err(LowerError(m.into()))
}

/// Lowers a checked cell. `dims` must come from [`super::bind_dims`] on the
/// same cell, which guarantees that every size evaluates to a positive number.
pub fn lower(checked: &Checked, dims: &Dims) -> Lowered<Cell> {
    let cell = declarations(checked, dims)?;
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
    lw.leaves();
    for eq in &checked.equations {
        let v = lw.expr(&eq.value)?;
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
    // Sema checked that every state is updated and every output defined.
    cell.state_updates = lw
        .next_states
        .iter()
        .zip(&checked.states)
        .map(|(v, s)| v.ok_or_else(|| LowerError(format!("state `{}` has no next value", s.name))))
        .collect::<Lowered<_>>()?;
    cell.output_values = lw
        .outputs
        .iter()
        .zip(&checked.outputs)
        .map(|(v, o)| v.ok_or_else(|| LowerError(format!("output `{}` is not defined", o.name))))
        .collect::<Lowered<_>>()?;
    Ok(cell)
}

/// The cell's name, sizes, ports and parameters, at `dims`.
fn declarations(checked: &Checked, dims: &Dims) -> Lowered<Cell> {
    let size = |p: &Poly| -> Lowered<usize> {
        match dims.eval(p).map(usize::try_from) {
            Some(Ok(v)) if v > 0 => Ok(v),
            _ => bug("a size does not evaluate to a positive number"),
        }
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
    let port = |p: &PortInfo| -> Lowered<Port> {
        Ok(Port {
            name: p.name.clone(),
            len: size(&p.len)?,
        })
    };
    cell.inputs = checked.inputs.iter().map(port).collect::<Lowered<_>>()?;
    cell.states = checked.states.iter().map(port).collect::<Lowered<_>>()?;
    cell.outputs = checked.outputs.iter().map(port).collect::<Lowered<_>>()?;
    let index = |p: &Poly| -> Lowered<u64> {
        match dims.eval(p).map(u64::try_from) {
            Some(Ok(v)) => Ok(v),
            _ => bug("a tensor index does not evaluate to a number of 0 or more"),
        }
    };
    let range = |p: &Option<Poly>| p.as_ref().map(index).transpose();
    for p in &checked.params {
        let ty = match &p.ty {
            SymTy::Scalar => Type::Scalar,
            SymTy::Vector(n) => Type::Vector(size(n)?),
            SymTy::Matrix(r, c) => Type::Matrix(size(r)?, size(c)?),
        };
        let mut binding = Vec::with_capacity(p.binding.len());
        for b in &p.binding {
            let indices = b
                .indices
                .iter()
                .map(|ix| match ix {
                    IndexInfo::At(p) => Ok(BindIndex::At(index(p)?)),
                    IndexInfo::Range(a, b) => Ok(BindIndex::Range(range(a)?, range(b)?)),
                })
                .collect::<Lowered<_>>()?;
            binding.push(Binding {
                tensor: b.tensor.clone(),
                indices,
            });
        }
        cell.params.push(Param {
            name: p.name.clone(),
            ty,
            binding,
            precision: p.precision,
            structure: match p.circulant {
                Some((k, _)) => crate::ir::Structure::Circulant(k),
                None => crate::ir::Structure::Dense,
            },
        });
    }

    Ok(cell)
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
    /// The instructions of the inputs, states and parameters, named.
    fn leaves(&mut self) {
        for i in 0..self.cell.inputs.len() {
            let ty = Type::Vector(self.cell.inputs[i].len);
            let v = self.cell.push1(Op::Input(InputId::new(i)), ty);
            self.name(v, &self.checked.inputs[i].name, self.checked.inputs[i].span);
            self.inputs.push(v);
        }
        for i in 0..self.cell.states.len() {
            let ty = Type::Vector(self.cell.states[i].len);
            let v = self.cell.push1(Op::State(StateId::new(i)), ty);
            self.name(v, &self.checked.states[i].name, self.checked.states[i].span);
            self.states.push(v);
        }
        for i in 0..self.cell.params.len() {
            let ty = self.cell.params[i].ty;
            let v = self.cell.push1(Op::Param(ParamId::new(i)), ty);
            self.name(v, &self.checked.params[i].name, self.checked.params[i].span);
            self.params.push(v);
        }
    }

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

    fn binary(&mut self, op: BinaryOp, a: Value, b: Value) -> Lowered<Value> {
        if let (Some(x), Some(y)) = (self.constant(a), self.constant(b)) {
            return Ok(self.cell.push1(Op::Const(op.eval(x, y)), Type::Scalar));
        }
        let (ta, tb) = (self.cell.ty(a), self.cell.ty(b));
        // Sema checked that the operands combine: anything else is a bug,
        // never a guessed type.
        let Some(ty) = Type::broadcast(ta, tb) else {
            return bug(format!("`{}` of {ta} and {tb}", op.name()));
        };
        Ok(self.cell.push1(Op::Binary(op, a, b), ty))
    }

    fn constant_value(&mut self, c: f64) -> Value {
        self.cell.push1(Op::Const(c), Type::Scalar)
    }

    /// A call of a function of the language, its arguments lowered.
    fn call(&mut self, function: Function, args: &[Value]) -> Lowered<Value> {
        use BinaryOp::{Add, Max, Min, Mul};
        let arg = |k: usize| {
            args.get(k)
                .copied()
                .ok_or_else(|| LowerError("a function called with too few arguments".into()))
        };
        Ok(match function {
            Function::Unary(op) => self.unary(op, arg(0)?),
            Function::Binary(op) => self.binary(op, arg(0)?, arg(1)?)?,
            Function::Reduce(op) => {
                let a = arg(0)?;
                if !matches!(self.cell.ty(a), Type::Vector(_)) {
                    return bug("a reduction of something that is not a vector");
                }
                self.cell.push1(Op::Reduce(op, a), Type::Vector(1))
            }
            Function::Rsqrt => {
                let one = self.constant_value(1.0);
                let root = self.unary(UnaryOp::Sqrt, arg(0)?);
                self.binary(BinaryOp::Div, one, root)?
            }
            Function::Clip => {
                let lo = self.binary(Max, arg(0)?, arg(1)?)?;
                self.binary(Min, lo, arg(2)?)?
            }
            Function::HardSigmoid => {
                let slope = self.constant_value(0.2);
                let half = self.constant_value(0.5);
                let scaled = self.binary(Mul, slope, arg(0)?)?;
                let shifted = self.binary(Add, scaled, half)?;
                self.clip(shifted, 0.0, 1.0)?
            }
            Function::HardTanh => self.clip(arg(0)?, -1.0, 1.0)?,
            Function::Relu6 => self.clip(arg(0)?, 0.0, 6.0)?,
            Function::Softsign => {
                let x = arg(0)?;
                let one = self.constant_value(1.0);
                let magnitude = self.unary(UnaryOp::Abs, x);
                let denominator = self.binary(Add, one, magnitude)?;
                self.binary(BinaryOp::Div, x, denominator)?
            }
            Function::LeakyRelu => {
                let (x, slope) = (arg(0)?, arg(1)?);
                let zero = self.constant_value(0.0);
                let positive = self.binary(Max, x, zero)?;
                let zero = self.constant_value(0.0);
                let negative = self.binary(Min, x, zero)?;
                let scaled = self.binary(Mul, slope, negative)?;
                self.binary(Add, positive, scaled)?
            }
            Function::LayerNorm => {
                let v = arg(0)?;
                if !matches!(self.cell.ty(v), Type::Vector(_)) {
                    return bug("layernorm of something that is not a vector");
                }
                self.layernorm(v, arg(1)?, arg(2)?, arg(3)?)?
            }
            Function::Elu => {
                let x = arg(0)?;
                let zero = self.constant_value(0.0);
                let positive = self.binary(Max, x, zero)?;
                let zero = self.constant_value(0.0);
                let negative = self.binary(Min, x, zero)?;
                let e = self.unary(UnaryOp::Exp, negative);
                let one = self.constant_value(1.0);
                let em1 = self.binary(BinaryOp::Sub, e, one)?;
                self.binary(Add, positive, em1)?
            }
        })
    }

    /// `(v - mean(v)) * rsqrt(mean((v - mean(v))^2) + eps) * gain + shift`.
    fn layernorm(&mut self, v: Value, gain: Value, shift: Value, eps: Value) -> Lowered<Value> {
        let mean = self
            .cell
            .push1(Op::Reduce(ReduceOp::Mean, v), Type::Vector(1));
        let centred = self.binary(BinaryOp::Sub, v, mean)?;
        let square = self.binary(BinaryOp::Mul, centred, centred)?;
        let variance = self
            .cell
            .push1(Op::Reduce(ReduceOp::Mean, square), Type::Vector(1));
        let shifted = self.binary(BinaryOp::Add, variance, eps)?;
        let root = self.unary(UnaryOp::Sqrt, shifted);
        let one = self.constant_value(1.0);
        let inverse = self.binary(BinaryOp::Div, one, root)?;
        let normal = self.binary(BinaryOp::Mul, centred, inverse)?;
        let scaled = self.binary(BinaryOp::Mul, normal, gain)?;
        self.binary(BinaryOp::Add, scaled, shift)
    }

    /// `min(max(x, lo), hi)`.
    fn clip(&mut self, x: Value, lo: f64, hi: f64) -> Lowered<Value> {
        let lo = self.constant_value(lo);
        let above = self.binary(BinaryOp::Max, x, lo)?;
        let hi = self.constant_value(hi);
        self.binary(BinaryOp::Min, above, hi)
    }

    fn expr(&mut self, e: &Expr) -> Lowered<Value> {
        let v = match &e.kind {
            ExprKind::Number(n) => self.cell.push1(Op::Const(*n), Type::Scalar),
            ExprKind::Var { name, primed } => {
                let r = self.checked.resolve(&name.name);
                let defined = match (r, primed) {
                    // `h'` before its equation is ordered: sema orders
                    // equations by dependency, so it has one by now.
                    (Some(Ref::State(s)), true) => self.next_states[s],
                    (Some(Ref::State(s)), false) => Some(self.states[s]),
                    (Some(Ref::Input(i)), _) => Some(self.inputs[i]),
                    (Some(Ref::Param(p)), _) => Some(self.params[p]),
                    (Some(Ref::Let(l)), _) => self.lets[l],
                    (Some(Ref::Output(o)), _) => self.outputs[o],
                    _ => None,
                };
                match defined {
                    Some(v) => v,
                    None => return bug(format!("`{}` is read before it is defined", name.name)),
                }
            }
            ExprKind::Call { func, args } => {
                let Some(info) = functions::lookup(&func.name) else {
                    return bug(format!("no function `{}`", func.name));
                };
                if args.len() != info.params.len() {
                    return bug(format!(
                        "`{}` called with {} arguments",
                        func.name,
                        args.len()
                    ));
                }
                let args = args
                    .iter()
                    .map(|a| self.expr(a))
                    .collect::<Lowered<Vec<Value>>>()?;
                // What a library function expands to is the call's work.
                let first = self.cell.values.len();
                let v = self.call(info.function, &args)?;
                for data in &mut self.cell.values[first..] {
                    data.span.get_or_insert(e.span);
                }
                v
            }
            ExprKind::Neg(inner) => {
                let a = self.expr(inner)?;
                self.unary(UnaryOp::Neg, a)
            }
            ExprKind::Sum(terms) => {
                let mut acc: Option<Value> = None;
                for (op, t) in terms {
                    let v = self.expr(t)?;
                    acc = Some(match (acc, op) {
                        (None, AddOp::Add) => v,
                        (None, AddOp::Sub) => self.unary(UnaryOp::Neg, v),
                        (Some(a), AddOp::Add) => self.binary(BinaryOp::Add, a, v)?,
                        (Some(a), AddOp::Sub) => self.binary(BinaryOp::Sub, a, v)?,
                    });
                }
                acc.ok_or_else(|| LowerError("an empty sum".into()))?
            }
            ExprKind::Product(factors) => {
                let mut acc: Option<Value> = None;
                for (op, f) in factors {
                    let v = self.expr(f)?;
                    acc = Some(match (acc, op) {
                        (None, _) => v,
                        (Some(a), MulOp::Mul) => self.binary(BinaryOp::Mul, a, v)?,
                        (Some(a), MulOp::Div) => self.binary(BinaryOp::Div, a, v)?,
                    });
                }
                acc.ok_or_else(|| LowerError("an empty product".into()))?
            }
            ExprKind::MatVec { matrices, vector } => {
                let mut v = self.expr(vector)?;
                for m in matrices.iter().rev() {
                    let Some(Ref::Param(p)) = self.checked.resolve(&m.name) else {
                        return bug(format!("`{}` in a product is not a parameter", m.name));
                    };
                    let w = self.params[p];
                    let Type::Matrix(rows, _) = self.cell.ty(w) else {
                        return bug(format!("`{}` in a product is not a matrix", m.name));
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
        Ok(self.spanned(v, e))
    }
}
