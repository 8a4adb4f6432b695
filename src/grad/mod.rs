//! Reverse-mode differentiation of a cell: its *backward cell*, itself a cell
//! of the IR, and the gradients through time it gives (`through_time`).
//!
//! A forward step maps `(x_t, h_{t-1})` to `(y_t, h_t)`. Its backward step
//! maps the adjoints of what the step produced to the adjoints of what it
//! read: given `x_t` and `h_{t-1}` (the tape: the step's inputs and old
//! states), `dy_t` (the adjoints of its outputs) and `dh_t` (the adjoint of
//! its new states), it gives `dh_{t-1}`, `dx_t`, and each parameter's share
//! of the step. Run from the last step to the first, the adjoint of the state
//! is a recurrence: the backward cell declares it as its *state*, so the
//! backward cell is a cell like any other, run over the reversed sequence.
//!
//! The backward cell recomputes the forward step's element-wise work from
//! the tape (the activations; the products' sums are on the tape,
//! `taped_values`), then sweeps the forward instructions in reverse,
//! summing each value's adjoint from its readers. Its ports, in order
//! ([`Layout`]):
//!
//! - inputs: the forward inputs, the forward states (their values at the
//!   start of the step), one adjoint per forward output (`d_y`), then the
//!   taped sums of products;
//! - states: one adjoint per forward state (`d_h`);
//! - outputs: one adjoint per forward input (`d_x`); for each product
//!   `W @ v` of the step, the adjoint of its result (`z`) and its operand
//!   (`v`), whose outer products summed over rows and steps are `W`'s
//!   gradient (one large product after the loop, not one per step); then
//!   each vector parameter's share of the step (`d_b`), summed over rows and
//!   steps.
//!
//! Derivatives where a function has none (its kinks) are the subgradients
//! PyTorch takes: `relu'(0) = 0`, `abs'(0) = 0`, and `min`/`max` split the
//! adjoint in half between equal operands (as `torch.minimum` and
//! `torch.maximum`; `clip`, written with them, gives 1/2 exactly at a
//! bound, where `torch.clamp` gives 1). `step` is flat: its derivative is 0.
//!
//! Differentiation reads the IR as lowered (before the optimizer: products
//! are still `matvec`s), and its result goes through the optimizer like any
//! cell.

mod after_loop;
mod through_time;

pub(crate) use after_loop::{defer_input_products, DeferredInput};
pub use through_time::{through_time, Gradients};

use std::collections::HashSet;
use std::fmt;

use crate::ir::{
    BinaryOp, Cell, InputId, Op, ParamId, Port, ReduceOp, StateId, Type, UnaryOp, Value,
};

/// Why a cell could not be differentiated.
#[derive(Clone, Debug, PartialEq)]
pub struct GradError(pub String);

impl fmt::Display for GradError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for GradError {}

/// A backward cell and how its ports relate to the forward cell's.
#[derive(Clone, Debug)]
pub struct Backward {
    pub cell: Cell,
    pub layout: Layout,
}

/// Where things are among the backward cell's ports (see the module's
/// documentation for the order).
#[derive(Clone, Debug, PartialEq)]
pub struct Layout {
    /// The forward cell's input, state and output counts.
    pub inputs: usize,
    pub states: usize,
    pub outputs: usize,
    /// Each product of the step, in forward order.
    pub products: Vec<ProductGrad>,
    /// Each vector parameter and the output holding its share of a step
    /// (a product's `z` output when they are the same vector: a bias).
    pub vectors: Vec<(ParamId, usize)>,
    /// The forward values the tape keeps besides the inputs and old
    /// states (`taped_values`), each an input of the backward cell after
    /// the output adjoints.
    pub taped: Vec<Value>,
}

/// A product `W @ v` of the forward step: the backward output holding the
/// adjoint of its result, and where its operand is.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ProductGrad {
    pub weight: ParamId,
    pub z: usize,
    pub v: Operand,
}

/// A vector of each backward step: one of the backward cell's inputs (the
/// forward inputs and old states, which the tape holds) or outputs.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Operand {
    Input(usize),
    Output(usize),
}

impl Layout {
    /// The backward input holding the forward state `s` (its old value).
    pub fn state_input(&self, s: usize) -> usize {
        self.inputs + s
    }

    /// The backward input holding the adjoint of forward output `o`.
    pub fn output_adjoint_input(&self, o: usize) -> usize {
        self.inputs + self.states + o
    }

    /// The backward input holding taped value `k`.
    pub fn taped_input(&self, k: usize) -> usize {
        self.inputs + self.states + self.outputs + k
    }
}

/// The forward values a training forward pass keeps for the backward pass
/// besides its inputs and old states: each sum of products (a gate's
/// pre-activation, `W x + U h + b`) where it leaves the sum. With them the
/// backward cell recomputes no product: only the element-wise work of the
/// step. (The products' operands are inputs and states, or values the
/// element-wise work recomputes.)
pub(crate) fn taped_values(fwd: &Cell) -> Vec<Value> {
    let mut sum = vec![false; fwd.values.len()];
    for inst in &fwd.insts {
        let r = inst.results[0];
        sum[r.index()] = match inst.op {
            Op::MatVec { .. } => true,
            Op::Binary(BinaryOp::Add | BinaryOp::Sub, a, b) => sum[a.index()] || sum[b.index()],
            _ => false,
        };
    }
    let users = fwd.users();
    (fwd.insts.iter())
        .map(|i| i.results[0])
        .filter(|&v| {
            sum[v.index()]
                && (fwd.is_root(v)
                    || users[v.index()].iter().any(|u| {
                        !matches!(
                            fwd.insts[u.index()].op,
                            Op::Binary(BinaryOp::Add | BinaryOp::Sub, ..)
                        )
                    }))
        })
        .collect()
}

/// The names of a cell's ports, for new ports of names no other has.
struct PortNames(HashSet<String>);

impl PortNames {
    fn of(cell: &Cell) -> PortNames {
        PortNames(
            (cell.inputs.iter())
                .chain(&cell.states)
                .chain(&cell.outputs)
                .map(|p| p.name.clone())
                .collect(),
        )
    }

    /// `want`, or `want_1`, `want_2`, ... if taken.
    fn fresh(&mut self, want: &str) -> String {
        let mut name = want.to_string();
        let mut k = 1;
        while !self.0.insert(name.clone()) {
            name = format!("{want}_{k}");
            k += 1;
        }
        name
    }
}

/// The value of state `s` at the start of the step in `cell` (its `state`
/// instruction, made if the cell has none).
fn state_value(cell: &mut Cell, s: usize) -> Value {
    let id = StateId::new(s);
    match (cell.insts.iter()).find(|i| i.op == Op::State(id)) {
        Some(i) => i.results[0],
        None => {
            let ty = Type::Vector(cell.states[s].len);
            cell.push1(Op::State(id), ty)
        }
    }
}

/// The forward cell of training: `fwd` with more outputs, the tape: each
/// state's value at the start of the step, then each of `layout.taped`.
pub(crate) fn training_forward(fwd: &Cell, layout: &Layout) -> Cell {
    let mut cell = fwd.clone();
    let mut names = PortNames::of(&cell);
    for s in 0..cell.states.len() {
        let v = state_value(&mut cell, s);
        let len = cell.states[s].len;
        let name = names.fresh(&format!("tape_{}", cell.states[s].name));
        cell.outputs.push(Port { name, len });
        cell.output_values.push(v);
    }
    for (k, &v) in layout.taped.iter().enumerate() {
        let len = cell.ty(v).vector_len().unwrap_or(1);
        let name = names.fresh(&format!("tape{k}"));
        cell.outputs.push(Port { name, len });
        cell.output_values.push(v);
    }
    cell
}

/// Derives the backward cell of `fwd`, a cell as lowered (no products or
/// regions yet).
pub fn backward(fwd: &Cell) -> Result<Backward, GradError> {
    for inst in &fwd.insts {
        if matches!(inst.op, Op::Product(_) | Op::Fused(_) | Op::MatVecT { .. }) {
            return Err(GradError(format!(
                "cell `{}` is optimized (it has products or regions): differentiate the IR \
                 as lowered, before the optimizer",
                fwd.name
            )));
        }
    }
    let taped = taped_values(fwd);
    let mut b = Builder::new(fwd, &taped);
    b.recompute();
    b.seed();
    for i in (0..fwd.insts.len()).rev() {
        b.adjoint_of(i);
    }
    let mut backward = b.finish();
    // The recomputation and the adjoints of constants that nothing reads.
    backward.cell.compact();
    crate::ir::verify::verify(&backward.cell).map_err(|e| {
        GradError(format!(
            "internal error: the backward cell of `{}` does not verify: {e}",
            fwd.name
        ))
    })?;
    Ok(backward)
}

/// The backward cell being built.
struct Builder<'a> {
    fwd: &'a Cell,
    cell: Cell,
    /// Each forward value's copy in the backward cell.
    copy: Vec<Value>,
    /// Each forward value's adjoint, as terms to sum.
    adjoint: Vec<Vec<Value>>,
    products: Vec<(ParamId, Value, Value)>,
    names: PortNames,
    /// The forward values the tape holds, each with its backward input.
    taped: std::collections::HashMap<Value, usize>,
    taped_order: Vec<Value>,
}

impl<'a> Builder<'a> {
    fn new(fwd: &'a Cell, taped: &[Value]) -> Builder<'a> {
        let mut b = Builder {
            fwd,
            cell: Cell {
                name: format!("{}_grad", fwd.name),
                dims: fwd.dims.clone(),
                params: fwd.params.clone(),
                ..Cell::default()
            },
            copy: Vec::with_capacity(fwd.values.len()),
            adjoint: vec![Vec::new(); fwd.values.len()],
            products: Vec::new(),
            names: PortNames(HashSet::new()),
            taped: std::collections::HashMap::new(),
            taped_order: taped.to_vec(),
        };
        // Forward inputs and states keep their names; adjoints take `d_`.
        for p in fwd.inputs.iter().chain(&fwd.states) {
            b.names.0.insert(p.name.clone());
        }
        b.cell.inputs = fwd.inputs.iter().chain(&fwd.states).cloned().collect();
        for o in &fwd.outputs {
            let port = b.port(&format!("d_{}", o.name), o.len);
            b.cell.inputs.push(port);
        }
        for (k, &v) in taped.iter().enumerate() {
            let len = fwd.ty(v).vector_len().unwrap_or(1);
            let port = b.port(&format!("tape{k}"), len);
            b.taped.insert(v, b.cell.inputs.len());
            b.cell.inputs.push(port);
        }
        for s in &fwd.states {
            let port = b.port(&format!("d_{}", s.name), s.len);
            b.cell.states.push(port);
        }
        b
    }

    /// A port of a name no other port has.
    fn port(&mut self, want: &str, len: usize) -> Port {
        let name = self.names.fresh(want);
        Port { name, len }
    }

    fn push(&mut self, op: Op, ty: Type) -> Value {
        self.cell.push1(op, ty)
    }

    fn konst(&mut self, c: f64) -> Value {
        self.push(Op::Const(c), Type::Scalar)
    }

    fn unary(&mut self, op: UnaryOp, a: Value) -> Value {
        let ty = self.cell.ty(a);
        self.push(Op::Unary(op, a), ty)
    }

    fn binary(&mut self, op: BinaryOp, a: Value, b: Value) -> Value {
        let ty = Type::broadcast(self.cell.ty(a), self.cell.ty(b))
            .unwrap_or_else(|| unreachable!("operands of the forward cell's types combine"));
        self.push(Op::Binary(op, a, b), ty)
    }

    /// The forward step, recomputed from the tape: its inputs, old states
    /// and taped values are inputs; what those make is computed again
    /// (only what the adjoints read survives `compact`).
    fn recompute(&mut self) {
        let fwd = self.fwd;
        for inst in &fwd.insts {
            let v = inst.results[0];
            let op = match &inst.op {
                Op::State(s) => Op::Input(InputId::new(fwd.inputs.len() + s.index())),
                _ if self.taped.contains_key(&v) => Op::Input(InputId::new(self.taped[&v])),
                op => {
                    let mut op = op.clone();
                    op.map_operands(|a| self.copy[a.index()]);
                    op
                }
            };
            let c = self.push(op, fwd.ty(v));
            self.cell.values[c.index()].name = fwd.values[v.index()].name.clone();
            self.copy.push(c);
        }
    }

    /// The adjoints the step is given: of each output, and of each new
    /// state.
    fn seed(&mut self) {
        let fwd = self.fwd;
        for (o, &v) in fwd.output_values.iter().enumerate() {
            let len = fwd.outputs[o].len;
            let d = self.push(
                Op::Input(InputId::new(fwd.inputs.len() + fwd.states.len() + o)),
                Type::Vector(len),
            );
            self.adjoint[v.index()].push(d);
        }
        for (s, &v) in fwd.state_updates.iter().enumerate() {
            let len = fwd.states[s].len;
            let d = self.push(Op::State(StateId::new(s)), Type::Vector(len));
            self.adjoint[v.index()].push(d);
        }
    }

    /// Zeros of the type of `like` (a vector of the backward cell): `step(x)`
    /// is 0 or 1 whatever `x` is, never NaN, so `step(x) * 0` is exactly 0.
    fn zeros_like(&mut self, like: Value) -> Value {
        let s = self.unary(UnaryOp::Step, like);
        let zero = self.konst(0.0);
        self.binary(BinaryOp::Mul, s, zero)
    }

    /// The adjoint of forward value `v`, summed: zeros when nothing read
    /// `v`. When every term is one number per row (`v` read only by
    /// reductions), the sum is too unless `exact` asks for `v`'s type (a
    /// port, or a transposed product's operand); element-wise readers
    /// broadcast it.
    fn total(&mut self, v: Value, exact: bool) -> Value {
        let terms = std::mem::take(&mut self.adjoint[v.index()]);
        let like = self.copy[v.index()];
        let mut sum = match terms.split_first() {
            None => return self.zeros_like(like),
            Some((&first, rest)) => rest
                .iter()
                .fold(first, |acc, &t| self.binary(BinaryOp::Add, acc, t)),
        };
        if exact && self.cell.ty(sum) != self.fwd.ty(v) {
            let z = self.zeros_like(like);
            sum = self.binary(BinaryOp::Add, z, sum);
        }
        // A term that is the whole sum keeps the name it has (a value's
        // adjoint may be another's, `d = d_c'` through an addition).
        if self.cell.values[sum.index()].name.is_none() {
            self.cell.values[sum.index()].name = self.fwd.name(v).map(|n| format!("d_{n}"));
        }
        self.adjoint[v.index()] = vec![sum];
        sum
    }

    /// Adds `d`, an adjoint of the shape of a result, to operand `a`'s:
    /// summed over the lanes where `a` is one number per row broadcast,
    /// dropped where `a` is a constant.
    fn flow(&mut self, a: Value, d: Value) {
        match self.fwd.ty(a) {
            Type::Scalar => {}
            Type::Vector(1) if self.cell.ty(d) != Type::Vector(1) => {
                let s = self.push(Op::Reduce(ReduceOp::Sum, d), Type::Vector(1));
                self.adjoint[a.index()].push(s);
            }
            _ => self.adjoint[a.index()].push(d),
        }
    }

    /// The adjoints of forward instruction `i`'s operands, from its result's.
    fn adjoint_of(&mut self, i: usize) {
        let fwd = self.fwd;
        let inst = &fwd.insts[i];
        let r = inst.results[0];
        if self.adjoint[r.index()].is_empty() || fwd.ty(r) == Type::Scalar {
            return;
        }
        let d = self.total(r, matches!(inst.op, Op::MatVec { .. }));
        let copy = |b: &Self, v: Value| b.copy[v.index()];
        match inst.op {
            Op::Input(_) | Op::State(_) | Op::Param(_) | Op::Const(_) => {}
            Op::Unary(op, a) => {
                if let Some(da) = self.unary_adjoint(op, copy(self, a), copy(self, r), d) {
                    self.flow(a, da);
                }
            }
            Op::Binary(op, a, b) => {
                let (da, db) =
                    self.binary_adjoint(op, copy(self, a), copy(self, b), copy(self, r), d);
                self.flow(a, da);
                self.flow(b, db);
            }
            Op::Reduce(op, a) => {
                let da = match op {
                    ReduceOp::Sum => d,
                    ReduceOp::Mean => {
                        let n = fwd.ty(a).vector_len().unwrap_or(1);
                        let k = self.konst(1.0 / n as f64);
                        self.binary(BinaryOp::Mul, d, k)
                    }
                };
                // `[1]`, broadcast over `a`'s lanes where it is summed.
                self.adjoint[a.index()].push(da);
            }
            Op::MatVec { weight, input } => {
                let &Op::Param(p) = fwd.op_of(weight) else {
                    unreachable!("the verifier checks that a matvec's weight is a parameter")
                };
                let Type::Matrix(_, c) = fwd.ty(weight) else {
                    unreachable!("the verifier checks that a matvec's weight is a matrix")
                };
                let dx = self.push(
                    Op::MatVecT {
                        weight: copy(self, weight),
                        input: d,
                    },
                    Type::Vector(c),
                );
                self.products.push((p, d, copy(self, input)));
                self.flow(input, dx);
            }
            Op::MatVecT { .. } | Op::Product(_) | Op::Fused(_) => {
                unreachable!("`backward` refuses optimized and backward cells")
            }
        }
    }

    /// `d * f'(a)` for `r = f(a)`; `None` where `f` is flat.
    fn unary_adjoint(&mut self, op: UnaryOp, a: Value, r: Value, d: Value) -> Option<Value> {
        use BinaryOp::{Div, Mul, Sub};
        let one = |b: &mut Self| b.konst(1.0);
        let slope = match op {
            UnaryOp::Neg => return Some(self.unary(UnaryOp::Neg, d)),
            UnaryOp::Step => return None,
            // s (1 - s), from the result.
            UnaryOp::Sigmoid => {
                let o = one(self);
                let c = self.binary(Sub, o, r);
                self.binary(Mul, r, c)
            }
            // 1 - t^2.
            UnaryOp::Tanh => {
                let o = one(self);
                let t2 = self.binary(Mul, r, r);
                self.binary(Sub, o, t2)
            }
            UnaryOp::Relu => self.unary(UnaryOp::Step, a),
            UnaryOp::Exp => r,
            // sign(a), 0 at 0.
            UnaryOp::Abs => {
                let pos = self.unary(UnaryOp::Step, a);
                let na = self.unary(UnaryOp::Neg, a);
                let neg = self.unary(UnaryOp::Step, na);
                self.binary(Sub, pos, neg)
            }
            // 1 / (2 sqrt(a)), from the result.
            UnaryOp::Sqrt => {
                let half = self.konst(0.5);
                let dh = self.binary(Mul, d, half);
                return Some(self.binary(Div, dh, r));
            }
            UnaryOp::Log => return Some(self.binary(Div, d, a)),
            UnaryOp::Softplus => self.unary(UnaryOp::Sigmoid, a),
        };
        Some(self.binary(Mul, d, slope))
    }

    /// `(d * dr/da, d * dr/db)` for `r = a op b`, of `r`'s shape.
    fn binary_adjoint(
        &mut self,
        op: BinaryOp,
        a: Value,
        b: Value,
        r: Value,
        d: Value,
    ) -> (Value, Value) {
        use BinaryOp::{Add, Div, Mul, Sub};
        match op {
            BinaryOp::Add => (d, d),
            BinaryOp::Sub => {
                let nd = self.unary(UnaryOp::Neg, d);
                (d, nd)
            }
            BinaryOp::Mul => {
                let da = self.binary(Mul, d, b);
                let db = self.binary(Mul, d, a);
                (da, db)
            }
            // d / b, and -d r / b.
            BinaryOp::Div => {
                let da = self.binary(Div, d, b);
                let dr = self.binary(Mul, d, r);
                let q = self.binary(Div, dr, b);
                let db = self.unary(UnaryOp::Neg, q);
                (da, db)
            }
            // The operand that is taken gets the adjoint; equal operands
            // share it: a's share is (1 + [a wins] - [b wins]) / 2.
            BinaryOp::Min | BinaryOp::Max => {
                let (wins_a, wins_b) = if op == BinaryOp::Min {
                    (self.binary(Sub, b, a), self.binary(Sub, a, b))
                } else {
                    (self.binary(Sub, a, b), self.binary(Sub, b, a))
                };
                let sa = self.unary(UnaryOp::Step, wins_a);
                let sb = self.unary(UnaryOp::Step, wins_b);
                let one = self.konst(1.0);
                let half = self.konst(0.5);
                let diff = self.binary(Sub, sa, sb);
                let twice = self.binary(Add, one, diff);
                let share = self.binary(Mul, twice, half);
                let da = self.binary(Mul, d, share);
                let db = self.binary(Sub, d, da);
                (da, db)
            }
        }
    }

    /// The outputs: each input's adjoint, each product's result adjoint and
    /// operand, each vector parameter's share; the state updates: each old
    /// state's adjoint.
    fn finish(mut self) -> Backward {
        let fwd = self.fwd;
        let leaf = |op: &Op| fwd.insts.iter().find(|i| &i.op == op).map(|i| i.results[0]);
        let mut outputs: Vec<(String, Value)> = Vec::new();
        for (i, p) in fwd.inputs.iter().enumerate() {
            let d = match leaf(&Op::Input(InputId::new(i))) {
                Some(v) => self.total(v, true),
                None => {
                    let x = self.push(Op::Input(InputId::new(i)), Type::Vector(p.len));
                    self.zeros_like(x)
                }
            };
            outputs.push((format!("d_{}", p.name), d));
        }
        for (s, p) in fwd.states.iter().enumerate() {
            let d = match leaf(&Op::State(StateId::new(s))) {
                Some(v) => self.total(v, true),
                None => {
                    let h = self.push(
                        Op::Input(InputId::new(fwd.inputs.len() + s)),
                        Type::Vector(p.len),
                    );
                    self.zeros_like(h)
                }
            };
            self.cell.state_updates.push(d);
        }
        // One output per distinct vector (the gates' products share their
        // adjoint); an operand that is an input of the backward cell is read
        // there.
        let mut products = Vec::new();
        let mut output_of = std::collections::HashMap::new();
        let mut out = |name: String, v: Value, outputs: &mut Vec<(String, Value)>| {
            *output_of.entry(v).or_insert_with(|| {
                outputs.push((name, v));
                outputs.len() - 1
            })
        };
        for (k, &(w, z, v)) in self.products.clone().iter().enumerate() {
            let name = &fwd.params[w.index()].name;
            let z = out(format!("z{k}_{name}"), z, &mut outputs);
            let v = match self.cell.op_of(v) {
                Op::Input(i) => Operand::Input(i.index()),
                _ => Operand::Output(out(format!("v{k}_{name}"), v, &mut outputs)),
            };
            products.push(ProductGrad { weight: w, z, v });
        }
        let mut vectors = Vec::new();
        for (k, p) in fwd.params.iter().enumerate() {
            if !matches!(p.ty, Type::Vector(_)) {
                continue;
            }
            let id = ParamId::new(k);
            let d = match leaf(&Op::Param(id)) {
                Some(v) => self.total(v, true),
                None => {
                    let w = self.push(Op::Param(id), p.ty);
                    self.zeros_like(w)
                }
            };
            vectors.push((id, out(format!("d_{}", p.name), d, &mut outputs)));
        }
        for (name, v) in outputs {
            let len = self.cell.ty(v).vector_len().unwrap_or(1);
            let port = self.port(&name, len);
            self.cell.outputs.push(port);
            self.cell.output_values.push(v);
        }
        Backward {
            layout: Layout {
                inputs: fwd.inputs.len(),
                states: fwd.states.len(),
                outputs: fwd.outputs.len(),
                products,
                vectors,
                taped: self.taped_order.clone(),
            },
            cell: self.cell,
        }
    }
}

/// Where a parameter of a [`Transposed`] cell takes its values from.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum ParamSource {
    /// The forward cell's parameter, as it is.
    Same(ParamId),
    /// The forward cell's matrix parameter `[R, C]`, transposed (`[C, R]`).
    Transposed(ParamId),
}

/// A backward cell for the code generator: every `matvec_t W, d` is a
/// `matvec W_T, d` of a parameter that holds `W` transposed, so that the
/// optimizer's rules apply to the transposed products too (the adjoints
/// `W_iᵀ dz_i + W_fᵀ dz_f + ...` of one operand become one product of the
/// concatenated `[W_iᵀ W_fᵀ ...]` with the stacked `[dz_i; dz_f; ...]`).
#[derive(Clone, Debug)]
pub struct Transposed {
    pub cell: Cell,
    /// Per parameter of `cell`, where its values come from.
    pub sources: Vec<ParamSource>,
}

/// [`Transposed`] from a backward cell.
pub fn transpose_products(bw: &Cell) -> Transposed {
    let mut cell = bw.clone();
    let mut sources: Vec<ParamSource> = (0..cell.params.len())
        .map(|k| ParamSource::Same(ParamId::new(k)))
        .collect();
    let mut names: HashSet<String> = cell.params.iter().map(|p| p.name.clone()).collect();
    // The transposed parameter of each forward one, once made.
    let mut made: Vec<Option<Value>> = vec![None; bw.params.len()];
    let mut replaced = std::collections::HashMap::new();
    for i in 0..bw.insts.len() {
        let Op::MatVecT { weight, input } = bw.insts[i].op else {
            continue;
        };
        let &Op::Param(p) = bw.op_of(weight) else {
            unreachable!("the verifier checks that a matvec_t's weight is a parameter")
        };
        let Type::Matrix(r, c) = bw.params[p.index()].ty else {
            unreachable!("the verifier checks that a matvec_t's weight is a matrix")
        };
        let wt = *made[p.index()].get_or_insert_with(|| {
            let base = format!("{}_T", bw.params[p.index()].name);
            let mut name = base.clone();
            let mut k = 1;
            while !names.insert(name.clone()) {
                name = format!("{base}{k}");
                k += 1;
            }
            let id = ParamId::new(cell.params.len());
            cell.params.push(crate::ir::Param {
                name: name.clone(),
                ty: Type::Matrix(c, r),
                binding: Vec::new(),
                precision: bw.params[p.index()].precision,
                // The trainer packs the transposed values as they are.
                structure: crate::ir::Structure::Dense,
            });
            sources.push(ParamSource::Transposed(p));
            let v = cell.push1(Op::Param(id), Type::Matrix(c, r));
            cell.values[v.index()].name = Some(name);
            v
        });
        let old = bw.insts[i].results[0];
        let new = cell.push1(Op::MatVec { weight: wt, input }, Type::Vector(c));
        cell.values[new.index()].name = bw.values[old.index()].name.clone();
        replaced.insert(old, new);
    }
    cell.replace_all(&replaced);
    cell.compact();
    Transposed { cell, sources }
}

/// `fwd` for batches of rows of different lengths: one more input, `mask`
/// (`[1]` per row and step: 1 while the row lasts, then 0), that holds each
/// state where the row has ended and zeroes its outputs (as PyTorch pads a
/// packed sequence's output). Each update `v` of state `h` becomes `v·m +
/// h·(1 - m)`, each output `y` becomes `y·m`: exactly `v` and `y` where `m`
/// is 1, `h` and 0 where it is 0 (for finite values), and differentiable
/// like the rest of the cell.
pub fn masked(fwd: &Cell) -> Cell {
    let mut cell = fwd.clone();
    let name = PortNames::of(&cell).fresh("mask");
    let mask_id = InputId::new(cell.inputs.len());
    cell.inputs.push(Port { name, len: 1 });
    let mask = cell.push1(Op::Input(mask_id), Type::Vector(1));
    let one = cell.push1(Op::Const(1.0), Type::Scalar);
    let keep = cell.push1(Op::Binary(BinaryOp::Sub, one, mask), Type::Vector(1));
    for s in 0..cell.states.len() {
        let ty = Type::Vector(cell.states[s].len);
        let old = state_value(&mut cell, s);
        let new = cell.state_updates[s];
        let a = cell.push1(Op::Binary(BinaryOp::Mul, new, mask), ty);
        let b = cell.push1(Op::Binary(BinaryOp::Mul, old, keep), ty);
        cell.state_updates[s] = cell.push1(Op::Binary(BinaryOp::Add, a, b), ty);
    }
    for o in 0..cell.outputs.len() {
        let ty = Type::Vector(cell.outputs[o].len);
        let y = cell.output_values[o];
        cell.output_values[o] = cell.push1(Op::Binary(BinaryOp::Mul, y, mask), ty);
    }
    cell
}
