//! The IR: an index-based SSA dataflow graph of tensor operations for one step.
//!
//! A [`Cell`] holds its ports (inputs, states, outputs), its parameters with their
//! checkpoint bindings, and a list of instructions in a valid schedule: every
//! operand is defined by an earlier instruction. Values are typed (scalar, vector
//! of a length, matrix); sizes are concrete, bound before lowering. Every vector
//! value is implicitly a batch of vectors; parameters broadcast over the batch.
//!
//! Instructions are a closed [`Op`] enum, so that the printer, the parser, the
//! verifier, the interpreter, the optimizer and codegen all match on every case.
//! The optimizer introduces two multi-result ops: [`Product`] (several matrix
//! products that share one pass over their inputs) and [`Region`] (fused
//! element-wise work). Source names and spans live in side tables on the values,
//! so dumps say `i`, `f`, `c'`.
//!
//! Architecture invariant: passes may append instructions out of order; they call
//! `Cell::compact` afterwards, which restores a schedule, drops dead
//! instructions and renumbers densely. [`verify::verify`] checks all of this.

pub mod analysis;
pub mod dot;
pub mod parse;
pub mod print;
pub mod stats;
pub mod verify;

use std::fmt;

pub(crate) use cranelift_entity::EntityRef;

use crate::diag::Span;

/// A value: one result of one instruction.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Value(pub u32);

/// An instruction, by its position in [`Cell::insts`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Inst(pub u32);

impl Value {
    pub fn index(self) -> usize {
        self.0 as usize
    }
}

/// An input of the cell, by its position in [`Cell::inputs`].
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct InputId(u32);
cranelift_entity::entity_impl!(InputId, "input");

/// A state of the cell, by its position in [`Cell::states`].
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct StateId(u32);
cranelift_entity::entity_impl!(StateId, "state");

/// A parameter of the cell, by its position in [`Cell::params`].
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ParamId(u32);
cranelift_entity::entity_impl!(ParamId, "param");

impl Inst {
    pub fn index(self) -> usize {
        self.0 as usize
    }
}

/// The position an id stands for, and the id of a position: what callers
/// outside the crate use (the crate's own code reaches the same through
/// `cranelift_entity::EntityRef`, which is not part of cellc's API).
macro_rules! positions {
    ($($id:ident),*) => {$(
        impl $id {
            /// The position in its table.
            pub fn index(self) -> usize {
                EntityRef::index(self)
            }

            /// The id of position `index`.
            pub fn new(index: usize) -> $id {
                EntityRef::new(index)
            }
        }
    )*};
}
positions!(InputId, StateId, ParamId);

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Type {
    /// A number, broadcast over vectors.
    Scalar,
    /// A vector of this length (a batch of them, for step values).
    Vector(usize),
    /// A matrix `[rows, cols]`.
    Matrix(usize, usize),
}

impl Type {
    /// The length of a vector type.
    pub fn vector_len(self) -> Option<usize> {
        match self {
            Type::Vector(n) => Some(n),
            _ => None,
        }
    }

    /// The type of an element-wise combination of `a` and `b`, if they combine:
    /// numbers broadcast against anything but a matrix, and so does a vector
    /// of length 1 (a reduction's result, a scalar parameter) against a
    /// vector of any length; other vectors must agree.
    pub fn broadcast(a: Type, b: Type) -> Option<Type> {
        match (a, b) {
            (Type::Scalar, t) | (t, Type::Scalar) if !matches!(t, Type::Matrix(..)) => Some(t),
            (Type::Vector(x), Type::Vector(y)) if x == y || y == 1 => Some(a),
            (Type::Vector(1), Type::Vector(_)) => Some(b),
            _ => None,
        }
    }
}

impl fmt::Display for Type {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Type::Scalar => write!(f, "scalar"),
            Type::Vector(n) => write!(f, "[{n}]"),
            Type::Matrix(r, c) => write!(f, "[{r}, {c}]"),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum UnaryOp {
    Neg,
    Sigmoid,
    Tanh,
    Relu,
    Exp,
    Abs,
    Sqrt,
    Log,
    /// `log(1 + exp(x))`.
    Softplus,
    /// 1 where `x > 0`, else 0 (NaN gives 0): the derivative of `relu` and
    /// the masks of `min`, `max` and `abs` in backward cells. Not a function
    /// of the language.
    Step,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum BinaryOp {
    Add,
    Sub,
    Mul,
    Div,
    /// The smaller operand; NaN if either is NaN.
    Min,
    /// The larger operand; NaN if either is NaN.
    Max,
}

/// A reduction of a vector to one number per batch row (a vector of length 1,
/// which broadcasts against vectors of any length).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ReduceOp {
    Sum,
    /// The sum divided by the length.
    Mean,
}

impl ReduceOp {
    pub const ALL: [ReduceOp; 2] = [ReduceOp::Sum, ReduceOp::Mean];

    pub fn name(self) -> &'static str {
        match self {
            ReduceOp::Sum => "sum",
            ReduceOp::Mean => "mean",
        }
    }

    pub fn from_name(s: &str) -> Option<ReduceOp> {
        ReduceOp::ALL.into_iter().find(|o| o.name() == s)
    }

    /// The exact reduction, in f64.
    pub fn eval(self, xs: &[f64]) -> f64 {
        let sum: f64 = xs.iter().sum();
        match self {
            ReduceOp::Sum => sum,
            ReduceOp::Mean => sum / xs.len() as f64,
        }
    }
}

impl UnaryOp {
    pub const ALL: [UnaryOp; 10] = [
        UnaryOp::Neg,
        UnaryOp::Sigmoid,
        UnaryOp::Tanh,
        UnaryOp::Relu,
        UnaryOp::Exp,
        UnaryOp::Abs,
        UnaryOp::Sqrt,
        UnaryOp::Log,
        UnaryOp::Softplus,
        UnaryOp::Step,
    ];

    pub fn name(self) -> &'static str {
        match self {
            UnaryOp::Neg => "neg",
            UnaryOp::Sigmoid => "sigmoid",
            UnaryOp::Tanh => "tanh",
            UnaryOp::Relu => "relu",
            UnaryOp::Exp => "exp",
            UnaryOp::Abs => "abs",
            UnaryOp::Sqrt => "sqrt",
            UnaryOp::Log => "log",
            UnaryOp::Softplus => "softplus",
            UnaryOp::Step => "step",
        }
    }

    pub fn from_name(s: &str) -> Option<UnaryOp> {
        UnaryOp::ALL.into_iter().find(|o| o.name() == s)
    }

    /// The exact function, in f64: the reference every implementation is held to.
    pub fn eval(self, x: f64) -> f64 {
        match self {
            UnaryOp::Neg => -x,
            UnaryOp::Sigmoid => {
                // Written to avoid overflow of exp for large |x|.
                if x >= 0.0 {
                    1.0 / (1.0 + (-x).exp())
                } else {
                    let e = x.exp();
                    e / (1.0 + e)
                }
            }
            UnaryOp::Tanh => x.tanh(),
            // NaN stays NaN: it is not greater than zero, and not less either.
            UnaryOp::Relu => {
                if x < 0.0 {
                    0.0
                } else {
                    x
                }
            }
            UnaryOp::Exp => x.exp(),
            UnaryOp::Abs => x.abs(),
            UnaryOp::Sqrt => x.sqrt(),
            UnaryOp::Log => x.ln(),
            // max(x, 0) + log(1 + exp(-|x|)): no overflow, and exact enough
            // where the result is tiny.
            UnaryOp::Softplus => {
                if x.is_nan() {
                    x
                } else {
                    x.max(0.0) + (-x.abs()).exp().ln_1p()
                }
            }
            UnaryOp::Step => {
                if x > 0.0 {
                    1.0
                } else {
                    0.0
                }
            }
        }
    }
}

impl BinaryOp {
    pub const ALL: [BinaryOp; 6] = [
        BinaryOp::Add,
        BinaryOp::Sub,
        BinaryOp::Mul,
        BinaryOp::Div,
        BinaryOp::Min,
        BinaryOp::Max,
    ];

    pub fn name(self) -> &'static str {
        match self {
            BinaryOp::Add => "add",
            BinaryOp::Sub => "sub",
            BinaryOp::Mul => "mul",
            BinaryOp::Div => "div",
            BinaryOp::Min => "min",
            BinaryOp::Max => "max",
        }
    }

    pub fn from_name(s: &str) -> Option<BinaryOp> {
        BinaryOp::ALL.into_iter().find(|o| o.name() == s)
    }

    pub fn eval(self, a: f64, b: f64) -> f64 {
        match self {
            BinaryOp::Add => a + b,
            BinaryOp::Sub => a - b,
            BinaryOp::Mul => a * b,
            BinaryOp::Div => a / b,
            BinaryOp::Min | BinaryOp::Max if a.is_nan() || b.is_nan() => f64::NAN,
            BinaryOp::Min => a.min(b),
            BinaryOp::Max => a.max(b),
        }
    }
}

/// Several matrix products that read their input vectors once, together:
/// row block `r` computes `sum_j rows[r].weights[j] @ inputs[j] + sum(rows[r].biases)`.
/// A missing weight is a zero block that is never read.
#[derive(Clone, Debug, PartialEq)]
pub struct Product {
    pub inputs: Vec<Value>,
    pub rows: Vec<RowBlock>,
}

impl Product {
    /// The block size row block `row` (of `len` rows) runs its block-circulant
    /// matrices through spectra with, if any: of the sizes
    /// [`Structure::spectral_k`] sends there, the one of the most elements
    /// (then the larger). Its other matrices run on their dense expansion.
    pub(crate) fn spectral_k(&self, cell: &Cell, row: usize, len: usize) -> Option<usize> {
        let mut by_k: Vec<(usize, usize)> = Vec::new();
        for (j, w) in self.rows[row].weights.iter().enumerate() {
            let Some(w) = w else { continue };
            let Op::Param(p) = cell.op_of(*w) else {
                continue;
            };
            let cols = cell.ty(self.inputs[j]).vector_len().unwrap_or(0);
            if let Some(k) = cell.params[p.index()].structure.spectral_k(len, cols) {
                match by_k.iter_mut().find(|e| e.0 == k) {
                    Some(e) => e.1 += len * cols,
                    None => by_k.push((k, len * cols)),
                }
            }
        }
        by_k.into_iter().max_by_key(|e| (e.1, e.0)).map(|e| e.0)
    }

    /// The block size term `j` of row block `row` (of `len` rows) is
    /// multiplied through spectra with: the row's ([`Product::spectral_k`])
    /// when its own matrix is sent there at that size, else `None` (the
    /// dense expansion). The planner, `--emit stats` and the remarks all
    /// ask this.
    pub(crate) fn spectral_term(
        &self,
        cell: &Cell,
        row: usize,
        j: usize,
        len: usize,
    ) -> Option<usize> {
        let k = self.spectral_k(cell, row, len)?;
        let Some(Op::Param(p)) = self.rows[row].weights[j].map(|w| cell.op_of(w)) else {
            return None;
        };
        let cols = cell.ty(self.inputs[j]).vector_len().unwrap_or(0);
        (cell.params[p.index()].structure.spectral_k(len, cols) == Some(k)).then_some(k)
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct RowBlock {
    /// One entry per input of the product: a matrix parameter, or none.
    pub weights: Vec<Option<Value>>,
    /// Vector parameters added to the block (folded into one at packing time).
    pub biases: Vec<Value>,
}

/// An operand inside a [`Region`]: one of its arguments, or an earlier body result.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Operand {
    Arg(u32),
    Inst(u32),
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub enum EwOp {
    Const(f64),
    Unary(UnaryOp),
    Binary(BinaryOp),
}

#[derive(Clone, Debug, PartialEq)]
pub struct RegionInst {
    pub op: EwOp,
    pub args: Vec<Operand>,
    /// The source name of this value, if it had one.
    pub name: Option<String>,
}

/// Element-wise work over vectors of one length, fused into one pass: codegen
/// runs the body per block of lanes while they are in registers.
#[derive(Clone, Debug, PartialEq)]
pub struct Region {
    pub len: usize,
    pub args: Vec<Value>,
    pub body: Vec<RegionInst>,
    pub yields: Vec<Operand>,
}

#[derive(Clone, Debug, PartialEq)]
pub enum Op {
    /// The cell's input with this index, at this step.
    Input(InputId),
    /// The state's value at the start of the step.
    State(StateId),
    Param(ParamId),
    Const(f64),
    Unary(UnaryOp, Value),
    Binary(BinaryOp, Value, Value),
    /// `weight @ input`, weight a matrix parameter.
    MatVec {
        weight: Value,
        input: Value,
    },
    /// `weight^T @ input`, weight a matrix parameter `[R, C]` and input
    /// `[R]`: the adjoint of a [`Op::MatVec`]'s input in a backward cell.
    MatVecT {
        weight: Value,
        input: Value,
    },
    /// A vector reduced to one number per batch row (type `[1]`).
    Reduce(ReduceOp, Value),
    Product(Product),
    Fused(Region),
}

impl Op {
    /// Every value the op reads, in a fixed order.
    pub fn operands(&self) -> Vec<Value> {
        match self {
            Op::Input(_) | Op::State(_) | Op::Param(_) | Op::Const(_) => Vec::new(),
            Op::Unary(_, a) | Op::Reduce(_, a) => vec![*a],
            Op::Binary(_, a, b) => vec![*a, *b],
            Op::MatVec { weight, input } | Op::MatVecT { weight, input } => {
                vec![*weight, *input]
            }
            Op::Product(p) => {
                let mut v = p.inputs.clone();
                for r in &p.rows {
                    v.extend(r.weights.iter().flatten());
                    v.extend(&r.biases);
                }
                v
            }
            Op::Fused(r) => r.args.clone(),
        }
    }

    /// Rewrites every operand through `f`.
    pub fn map_operands(&mut self, mut f: impl FnMut(Value) -> Value) {
        match self {
            Op::Input(_) | Op::State(_) | Op::Param(_) | Op::Const(_) => {}
            Op::Unary(_, a) | Op::Reduce(_, a) => *a = f(*a),
            Op::Binary(_, a, b) => {
                *a = f(*a);
                *b = f(*b);
            }
            Op::MatVec { weight, input } | Op::MatVecT { weight, input } => {
                *weight = f(*weight);
                *input = f(*input);
            }
            Op::Product(p) => {
                for v in &mut p.inputs {
                    *v = f(*v);
                }
                for r in &mut p.rows {
                    for w in r.weights.iter_mut().flatten() {
                        *w = f(*w);
                    }
                    for b in &mut r.biases {
                        *b = f(*b);
                    }
                }
            }
            Op::Fused(r) => {
                for v in &mut r.args {
                    *v = f(*v);
                }
            }
        }
    }

    pub fn is_elementwise(&self) -> bool {
        matches!(self, Op::Unary(..) | Op::Binary(..) | Op::Const(_))
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct InstData {
    pub op: Op,
    pub results: Vec<Value>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct ValueData {
    pub ty: Type,
    pub inst: Inst,
    /// Which result of the instruction.
    pub result: usize,
    /// Side table: the source name (`i`, `c'`), if any.
    pub name: Option<String>,
    /// Side table: the source expression this value computes.
    pub span: Option<Span>,
}

/// An input, state or output: a named vector.
#[derive(Clone, Debug, PartialEq)]
pub struct Port {
    pub name: String,
    pub len: usize,
}

/// Where a parameter is read from in a checkpoint, with sizes bound.
#[derive(Clone, Debug, PartialEq)]
pub struct Binding {
    pub tensor: String,
    pub indices: Vec<BindIndex>,
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub enum BindIndex {
    Range(Option<u64>, Option<u64>),
    At(u64),
}

#[derive(Clone, Debug, PartialEq)]
pub struct Param {
    pub name: String,
    pub ty: Type,
    /// Alternatives tried in order; empty means "the tensor of the parameter's name".
    pub binding: Vec<Binding>,
    /// How its values are stored ([`Precision::F32`] unless the source says).
    pub precision: Precision,
    /// How a matrix's values are laid out in a checkpoint.
    pub structure: Structure,
}

/// How a matrix parameter is laid out. Every reader of the IR sees the
/// matrix itself (`[R, C]`); the structure says how a checkpoint stores
/// it and what a faster product may exploit.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Structure {
    /// Every element stored.
    #[default]
    Dense,
    /// `k x k` circulant blocks (the C-LSTM paper's compression), stored
    /// as `[R/k, C/k, k]`: block `(i, j)` is the circulant matrix whose
    /// first column is `w[i, j, :]`, `W[i*k + a, j*k + b] = w[i, j, (a - b)
    /// mod k]`. `k` divides `R` and `C`.
    Circulant(usize),
}

impl Structure {
    /// The stored shape of an `[r, c]` matrix.
    pub fn stored_shape(self, r: usize, c: usize) -> Vec<usize> {
        match self {
            Structure::Dense => vec![r, c],
            Structure::Circulant(k) => vec![r / k.max(1), c / k.max(1), k],
        }
    }

    /// The offset in the stored values of element `(row, col)` of an `[r,
    /// c]` matrix.
    pub fn stored_offset(self, c: usize, row: usize, col: usize) -> usize {
        match self {
            Structure::Dense => row * c + col,
            Structure::Circulant(k) => {
                let (i, a, j, b) = (row / k, row % k, col / k, col % k);
                (i * (c / k) + j) * k + (a + k - b) % k
            }
        }
    }

    /// The number of values an `[r, c]` matrix stores.
    pub fn stored_len(self, r: usize, c: usize) -> usize {
        self.stored_shape(r, c).iter().product()
    }

    /// The gradient of the stored values from the gradient of the `[r, c]`
    /// matrix (row-major): each stored value's is the sum over the
    /// elements it gives (a circular correlation, for circulant blocks; the
    /// gradient as it is where the structure does not fit).
    pub fn fold(self, r: usize, c: usize, dense: &[f32]) -> Vec<f32> {
        match self {
            Structure::Circulant(_) if self.fits(r, c) => {
                let mut stored = vec![0.0f64; self.stored_len(r, c)];
                for (e, &d) in dense.iter().enumerate().take(r * c) {
                    stored[self.stored_offset(c, e / c, e % c)] += f64::from(d);
                }
                stored.into_iter().map(|v| v as f32).collect()
            }
            _ => dense.to_vec(),
        }
    }

    /// Block sizes whose products the code generator runs through spectra
    /// (`kernels::spectral`): powers of two from 4 to 64.
    pub(crate) fn spectral_block(k: usize) -> bool {
        k.is_power_of_two() && (4..=64).contains(&k)
    }

    /// The block size products by an `[r, c]` matrix of this structure run
    /// through spectra with (FFT products), `None` for the dense expansion
    /// (or a dense matrix). The cost model: the flops per batch row of the
    /// multiply-accumulate (`4rc/k`: `4k` a block) and of the transforms
    /// (`2k` per value of the input and of the output) against the dense
    /// product's `2rc`, at most three quarters of them (a margin for the
    /// kernels' lower efficiency). Batch-independent: at batch 1, where a
    /// step reads its weights once, the spectra are also `k` times fewer
    /// bytes.
    pub(crate) fn spectral_k(self, r: usize, c: usize) -> Option<usize> {
        let Structure::Circulant(k) = self else {
            return None;
        };
        let (rf, cf, kf) = (r as f64, c as f64, k as f64);
        let flops = 4.0 * rf * cf / kf + 2.0 * kf * (rf + cf);
        (Structure::spectral_block(k) && self.fits(r, c) && flops <= 0.75 * 2.0 * rf * cf)
            .then_some(k)
    }

    /// Whether an `[r, c]` matrix can have this structure (`k` divides both).
    pub fn fits(self, r: usize, c: usize) -> bool {
        match self {
            Structure::Dense => true,
            Structure::Circulant(k) => k > 0 && r.is_multiple_of(k) && c.is_multiple_of(k),
        }
    }

    /// The `[r, c]` matrix, row-major, from its stored values; `None` unless
    /// the structure [`fits`](Structure::fits) and `stored` holds
    /// [`Structure::stored_shape`]'s elements.
    pub fn expand(self, r: usize, c: usize, stored: &[f32]) -> Option<Vec<f32>> {
        if !self.fits(r, c) || r.checked_mul(c).is_none() || stored.len() != self.stored_len(r, c) {
            return None;
        }
        Some(match self {
            Structure::Dense => stored.to_vec(),
            Structure::Circulant(_) => (0..r * c)
                .map(|e| stored[self.stored_offset(c, e / c, e % c)])
                .collect(),
        })
    }
}

/// How a parameter's values are stored. Arithmetic is `f32` whatever the
/// storage: narrow weights are widened in registers, and every reader (the
/// interpreter included) sees the same rounded values ([`crate::quant`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Precision {
    #[default]
    F32,
    /// bfloat16: the top 16 bits of an `f32`, rounded to nearest even.
    Bf16,
    /// Signed 8-bit integers, symmetric, with one `f32` scale per row
    /// (`max |w| / 127`; a vector is one row).
    Int8,
}

impl Precision {
    pub const ALL: [Precision; 3] = [Precision::F32, Precision::Bf16, Precision::Int8];

    pub fn name(self) -> &'static str {
        match self {
            Precision::F32 => "f32",
            Precision::Bf16 => "bf16",
            Precision::Int8 => "int8",
        }
    }

    pub fn from_name(s: &str) -> Option<Precision> {
        Precision::ALL.into_iter().find(|p| p.name() == s)
    }

    /// Bytes per stored value.
    pub fn bytes(self) -> usize {
        match self {
            Precision::F32 => 4,
            Precision::Bf16 => 2,
            Precision::Int8 => 1,
        }
    }
}

impl std::fmt::Display for Precision {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

#[derive(Clone, Debug, PartialEq, Default)]
pub struct Cell {
    pub name: String,
    /// The sizes this cell was lowered with, for the record.
    pub dims: Vec<(String, u64)>,
    pub inputs: Vec<Port>,
    pub states: Vec<Port>,
    pub outputs: Vec<Port>,
    pub params: Vec<Param>,
    pub insts: Vec<InstData>,
    pub values: Vec<ValueData>,
    /// The next value of each state, by state index.
    pub state_updates: Vec<Value>,
    /// The value of each output, by output index.
    pub output_values: Vec<Value>,
}

impl Cell {
    pub fn ty(&self, v: Value) -> Type {
        self.values[v.index()].ty
    }

    pub(crate) fn def(&self, v: Value) -> &InstData {
        &self.insts[self.values[v.index()].inst.index()]
    }

    pub fn op_of(&self, v: Value) -> &Op {
        &self.def(v).op
    }

    pub fn name(&self, v: Value) -> Option<&str> {
        self.values[v.index()].name.as_deref()
    }

    /// Appends an instruction with results of the given types.
    pub(crate) fn push(&mut self, op: Op, tys: &[Type]) -> Vec<Value> {
        let inst = Inst(self.insts.len() as u32);
        let results: Vec<Value> = tys
            .iter()
            .enumerate()
            .map(|(i, &ty)| {
                let v = Value(self.values.len() as u32);
                self.values.push(ValueData {
                    ty,
                    inst,
                    result: i,
                    name: None,
                    span: None,
                });
                v
            })
            .collect();
        self.insts.push(InstData {
            op,
            results: results.clone(),
        });
        results
    }

    /// Appends a single-result instruction.
    pub(crate) fn push1(&mut self, op: Op, ty: Type) -> Value {
        self.push(op, &[ty])[0]
    }

    /// The values every later step or the caller reads: state updates, outputs.
    pub(crate) fn roots(&self) -> impl Iterator<Item = Value> + '_ {
        self.state_updates
            .iter()
            .chain(self.output_values.iter())
            .copied()
    }

    /// How many instructions read each value (roots count as readers).
    pub(crate) fn use_counts(&self) -> Vec<usize> {
        let mut uses = vec![0usize; self.values.len()];
        for inst in &self.insts {
            for v in inst.op.operands() {
                uses[v.index()] += 1;
            }
        }
        for v in self.roots() {
            uses[v.index()] += 1;
        }
        uses
    }

    /// For each value, the instructions that read it (once per operand slot).
    pub(crate) fn users(&self) -> Vec<Vec<Inst>> {
        let mut users = vec![Vec::new(); self.values.len()];
        for (i, inst) in self.insts.iter().enumerate() {
            for v in inst.op.operands() {
                users[v.index()].push(Inst(i as u32));
            }
        }
        users
    }

    /// Whether a state update or an output reads this value.
    pub(crate) fn is_root(&self, v: Value) -> bool {
        self.roots().any(|r| r == v)
    }

    /// A name for a value in messages: its source name, or the source text it
    /// computes, or its number.
    pub fn describe(&self, v: Value, source: Option<&str>) -> String {
        if let Some(n) = self.name(v) {
            return n.to_string();
        }
        if let (Some(span), Some(src)) = (self.values[v.index()].span, source) {
            if let Some(text) = src.get(span.range()) {
                let text: String = text.split_whitespace().collect::<Vec<_>>().join(" ");
                if text.len() <= 40 {
                    return text;
                }
            }
        }
        format!("v{}", v.0)
    }

    /// Restores the architecture invariant after a rewrite: drops instructions
    /// whose results nobody reads, orders the rest so that operands come first
    /// (keeping the current order where it is already valid), and renumbers
    /// instructions and values densely in that order.
    pub(crate) fn compact(&mut self) {
        let n = self.insts.len();
        // Liveness from the roots.
        let mut live = vec![false; n];
        let mut stack: Vec<Inst> = self.roots().map(|v| self.values[v.index()].inst).collect();
        while let Some(i) = stack.pop() {
            if std::mem::replace(&mut live[i.index()], true) {
                continue;
            }
            for v in self.insts[i.index()].op.operands() {
                stack.push(self.values[v.index()].inst);
            }
        }
        // Depth-first post-order from the instructions in their current order:
        // each instruction is emitted after its operands.
        let mut order = Vec::with_capacity(n);
        let mut state = vec![0u8; n]; // 0 new, 1 on stack, 2 done
        for start in 0..n {
            if !live[start] || state[start] != 0 {
                continue;
            }
            // Each frame keeps its operand list: recomputing it per visit would
            // be quadratic in the operands of a large product or region.
            let mut stack: Vec<(usize, Vec<Value>, usize)> =
                vec![(start, self.insts[start].op.operands(), 0)];
            state[start] = 1;
            while let Some((i, ops, next)) = stack.last_mut() {
                let i = *i;
                if *next < ops.len() {
                    let d = self.values[ops[*next].index()].inst.index();
                    *next += 1;
                    if state[d] == 0 {
                        state[d] = 1;
                        stack.push((d, self.insts[d].op.operands(), 0));
                    }
                } else {
                    state[i] = 2;
                    order.push(i);
                    stack.pop();
                }
            }
        }
        let old_insts = std::mem::take(&mut self.insts);
        let old_values = std::mem::take(&mut self.values);
        let mut value_map = vec![Value(u32::MAX); old_values.len()];
        let mut old_insts: Vec<Option<InstData>> = old_insts.into_iter().map(Some).collect();
        for &i in &order {
            let Some(mut data) = old_insts[i].take() else {
                continue;
            };
            data.op.map_operands(|v| value_map[v.index()]);
            let tys: Vec<Type> = data
                .results
                .iter()
                .map(|v| old_values[v.index()].ty)
                .collect();
            let new = self.push(data.op, &tys);
            for (old, new) in data.results.iter().zip(&new) {
                value_map[old.index()] = *new;
                let od = &old_values[old.index()];
                let nd = &mut self.values[new.index()];
                nd.name = od.name.clone();
                nd.span = od.span;
            }
        }
        for v in self
            .state_updates
            .iter_mut()
            .chain(self.output_values.iter_mut())
        {
            *v = value_map[v.index()];
        }
    }

    /// Applies a set of replacements to every operand and root at once; chains
    /// (`a -> b`, `b -> c`) resolve to their end.
    pub(crate) fn replace_all(&mut self, map: &std::collections::HashMap<Value, Value>) {
        if map.is_empty() {
            return;
        }
        let resolve = |mut v: Value| {
            let mut hops = 0;
            while let Some(&next) = map.get(&v) {
                if next == v || hops > map.len() {
                    break;
                }
                v = next;
                hops += 1;
            }
            v
        };
        for inst in &mut self.insts {
            inst.op.map_operands(resolve);
        }
        for v in self
            .state_updates
            .iter_mut()
            .chain(self.output_values.iter_mut())
        {
            *v = resolve(*v);
        }
    }

    /// The number of matrix products per step: `matvec`s and fused `product`s.
    pub fn product_count(&self) -> usize {
        self.insts
            .iter()
            .filter(|i| matches!(i.op, Op::MatVec { .. } | Op::Product(_)))
            .count()
    }
}
