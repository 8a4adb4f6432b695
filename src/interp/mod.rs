//! The reference interpreter: runs a cell's IR on concrete data, in `f64`, with
//! plain loops. It is the oracle for the optimizer (optimized IR must agree with
//! the original) and for the JIT (native code must agree with it within a stated
//! float32 tolerance). It runs any instruction, fused or not, for any batch size.
//!
//! Layouts: a parameter matrix `[r, c]` is row-major; a batch of vectors of length
//! `n` is `batch * n` values, batch row after batch row.

use std::fmt;

use crate::ir::*;

#[derive(Clone, Debug, PartialEq)]
pub struct InterpError(pub String);

impl fmt::Display for InterpError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for InterpError {}

/// Parameter values in the cell's parameter order, each row-major.
#[derive(Clone, Debug, PartialEq)]
pub struct ParamValues(pub Vec<Vec<f64>>);

impl ParamValues {
    /// The values of f32 parameters (as `Weights::resolve` gives them).
    pub fn from_f32(params: &[Vec<f32>]) -> ParamValues {
        ParamValues(
            params
                .iter()
                .map(|v| v.iter().map(|&x| f64::from(x)).collect())
                .collect(),
        )
    }

    /// Every value moved by one f32 rounding (relative 2^-24, alternating up and
    /// down): running a cell with these and with the originals shows how much
    /// the cell amplifies the roundings an f32 kernel cannot avoid, which is
    /// what a comparison of the JIT with the interpreter must allow for.
    pub fn nudged(&self) -> ParamValues {
        let ulp = 2f64.powi(-24);
        ParamValues(
            self.0
                .iter()
                .map(|p| {
                    p.iter()
                        .enumerate()
                        .map(|(i, &v)| v * if i % 2 == 0 { 1.0 + ulp } else { 1.0 - ulp })
                        .collect()
                })
                .collect(),
        )
    }

    /// Checks that there is one tensor per parameter, of the right size.
    pub fn check(&self, cell: &Cell) -> Result<(), InterpError> {
        if self.0.len() != cell.params.len() {
            return Err(InterpError(format!(
                "{} parameter tensors given, the cell has {}",
                self.0.len(),
                cell.params.len()
            )));
        }
        for (p, v) in cell.params.iter().zip(&self.0) {
            let want = match p.ty {
                Type::Scalar => 1,
                Type::Vector(n) => n,
                Type::Matrix(r, c) => r * c,
            };
            if v.len() != want {
                return Err(InterpError(format!(
                    "parameter `{}` has {} values, expected {want}",
                    p.name,
                    v.len()
                )));
            }
        }
        Ok(())
    }
}

/// The state of a batch: one `batch * len` vector per state.
#[derive(Clone, Debug, PartialEq)]
pub struct State {
    pub batch: usize,
    pub values: Vec<Vec<f64>>,
}

impl State {
    /// Zero states for `batch` rows; a batch whose buffers overflow or do
    /// not fit in memory is an error (never an abort, never a wrapped size).
    pub fn zeros(cell: &Cell, batch: usize) -> Result<State, InterpError> {
        let values = cell
            .states
            .iter()
            .map(|s| {
                let n = batch.checked_mul(s.len).ok_or_else(|| {
                    InterpError(format!("a batch of {batch} rows of `{}` overflows", s.name))
                })?;
                let mut v = Vec::new();
                v.try_reserve_exact(n).map_err(|_| {
                    InterpError(format!(
                        "a batch of {batch} rows of `{}` does not fit in memory",
                        s.name
                    ))
                })?;
                v.resize(n, 0.0);
                Ok(v)
            })
            .collect::<Result<_, InterpError>>()?;
        Ok(State { batch, values })
    }
}

enum Val {
    Scalar(f64),
    /// A batch of vectors (or a matrix, for parameters).
    Data(Vec<f64>),
}

/// What a matrix product multiplies its vector by.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Operands {
    /// The vector's values.
    #[default]
    Exact,
    /// The vector quantized batch row by batch row as `--compute int8`
    /// quantizes it (unsigned bytes with a scale and zero point over its
    /// float32 values' range, `quantized_row`), then taken back to the
    /// values those bytes stand for.
    /// With the weights' int8 values (`quant::effective_params`) it models
    /// the integer products exactly but for their float32 finish.
    Int8,
}

impl Operands {
    /// `x` (`batch` rows of `n`) as a product multiplies it.
    fn apply(self, x: Vec<f64>, n: usize) -> Vec<f64> {
        if self == Operands::Exact || n == 0 {
            return x;
        }
        x.chunks(n).flat_map(quantized_row).collect()
    }
}

/// The values a row of activations stands for once quantized as
/// [`Operands::Int8`] says, from the rule itself (the oracle of the
/// kernels' quantization, written apart from it): over the range from the
/// smallest value (or 0) to the largest (or 0) of the row's float32 values,
/// `scale = (hi - lo) / 255`, `zero = round(-lo / scale)`, each byte
/// `clamp(round(x * (1 / scale)) + zero, 0, 255)` (float32, rounding to
/// nearest even), standing for `(byte - zero) * scale`. A row of zeros stays
/// zeros; a row holding a value that is not finite is NaN throughout.
fn quantized_row(row: &[f64]) -> Vec<f64> {
    let row: Vec<f32> = row.iter().map(|&v| v as f32).collect();
    if row.iter().any(|v| !v.is_finite()) {
        return vec![f64::NAN; row.len()];
    }
    let lo = row.iter().fold(0.0f32, |m, &v| m.min(v));
    let hi = row.iter().fold(0.0f32, |m, &v| m.max(v));
    if hi == lo {
        return vec![0.0; row.len()];
    }
    let scale = (hi - lo) / 255.0;
    let inv = 1.0 / scale;
    let zero = (-lo * inv).round_ties_even().clamp(0.0, 255.0);
    row.iter()
        .map(|&v| {
            let byte = ((v * inv).round_ties_even() + zero).clamp(0.0, 255.0);
            f64::from(byte - zero) * f64::from(scale)
        })
        .collect()
}

/// Runs one step: reads `inputs` (one `batch * len` vector per input), updates
/// `state` in place, and returns the outputs (one `batch * len` vector each).
pub fn step(
    cell: &Cell,
    params: &ParamValues,
    inputs: &[Vec<f64>],
    state: &mut State,
) -> Result<Vec<Vec<f64>>, InterpError> {
    step_with(cell, params, inputs, state, Operands::Exact)
}

/// [`step`], the matrix products multiplying `operands`.
// Long by design: one match arm per operation of the IR, each its exact
// f64 meaning, read best in one place (the oracle).
pub fn step_with(
    cell: &Cell,
    params: &ParamValues,
    inputs: &[Vec<f64>],
    state: &mut State,
    operands: Operands,
) -> Result<Vec<Vec<f64>>, InterpError> {
    params.check(cell)?;
    let batch = state.batch;
    if inputs.len() != cell.inputs.len() {
        return Err(InterpError(format!(
            "{} inputs given, the cell has {}",
            inputs.len(),
            cell.inputs.len()
        )));
    }
    for (p, v) in cell.inputs.iter().zip(inputs) {
        if v.len() != batch * p.len {
            return Err(InterpError(format!(
                "input `{}` has {} values, expected {}",
                p.name,
                v.len(),
                batch * p.len
            )));
        }
    }
    if state.values.len() != cell.states.len() {
        return Err(InterpError("state does not match the cell".into()));
    }
    for (p, v) in cell.states.iter().zip(&state.values) {
        if v.len() != batch * p.len {
            return Err(InterpError(format!(
                "state `{}` has {} values, expected {}",
                p.name,
                v.len(),
                batch * p.len
            )));
        }
    }

    let mut vals: Vec<Option<Val>> = (0..cell.values.len()).map(|_| None).collect();
    for inst in &cell.insts {
        let results: Vec<Val> = match &inst.op {
            Op::Input(i) => vec![Val::Data(inputs[i.index()].clone())],
            Op::State(i) => vec![Val::Data(state.values[i.index()].clone())],
            Op::Param(i) => vec![Val::Data(params.0[i.index()].clone())],
            Op::Const(c) => vec![Val::Scalar(*c)],
            Op::Unary(op, a) => {
                let ty = cell.ty(*a);
                vec![match get(&vals, *a)? {
                    Val::Scalar(x) => Val::Scalar(op.eval(*x)),
                    Val::Data(d) => Val::Data(
                        broadcast(cell, *a, ty, d, batch)
                            .iter()
                            .map(|&x| op.eval(x))
                            .collect(),
                    ),
                }]
            }
            Op::Reduce(op, a) => {
                let n = cell.ty(*a).vector_len().unwrap_or(0);
                let Lanes::Data(d) = lanes(cell, &vals, *a, batch)? else {
                    return Err(InterpError("reduction of a scalar".into()));
                };
                if n == 0 || d.len() != batch * n {
                    return Err(InterpError(
                        "reduction of a vector of the wrong length".into(),
                    ));
                }
                vec![Val::Data(d.chunks(n).map(|row| op.eval(row)).collect())]
            }
            Op::Binary(op, a, b) => {
                let width = cell.ty(inst.results[0]).vector_len().unwrap_or(1);
                let la = widen(lanes(cell, &vals, *a, batch)?, cell.ty(*a), width);
                let lb = widen(lanes(cell, &vals, *b, batch)?, cell.ty(*b), width);
                vec![match (la, lb) {
                    (Lanes::Scalar(x), Lanes::Scalar(y)) => Val::Scalar(op.eval(x, y)),
                    (Lanes::Scalar(x), Lanes::Data(d)) => {
                        Val::Data(d.iter().map(|&y| op.eval(x, y)).collect())
                    }
                    (Lanes::Data(d), Lanes::Scalar(y)) => {
                        Val::Data(d.iter().map(|&x| op.eval(x, y)).collect())
                    }
                    (Lanes::Data(d), Lanes::Data(e)) => {
                        if d.len() != e.len() {
                            return Err(InterpError(
                                "element-wise operands differ in length".into(),
                            ));
                        }
                        Val::Data(d.iter().zip(&e).map(|(&x, &y)| op.eval(x, y)).collect())
                    }
                }]
            }
            Op::MatVec { weight, input } => {
                let Type::Matrix(r, c) = cell.ty(*weight) else {
                    return Err(InterpError("matvec weight is not a matrix".into()));
                };
                let (Val::Data(w), Val::Data(x)) = (get(&vals, *weight)?, get(&vals, *input)?)
                else {
                    return Err(InterpError("matvec of a scalar".into()));
                };
                let x = operands.apply(broadcast(cell, *input, cell.ty(*input), x, batch), c);
                let mut out = vec![0.0; batch * r];
                for b in 0..batch {
                    for i in 0..r {
                        out[b * r + i] = dot(&w[i * c..(i + 1) * c], &x[b * c..(b + 1) * c]);
                    }
                }
                vec![Val::Data(out)]
            }
            Op::MatVecT { .. } if operands != Operands::Exact => {
                return Err(InterpError(
                    "matvec_t (a backward cell's) with quantized operands".into(),
                ));
            }
            Op::MatVecT { weight, input } => {
                let Type::Matrix(r, c) = cell.ty(*weight) else {
                    return Err(InterpError("matvec_t weight is not a matrix".into()));
                };
                let (Val::Data(w), Val::Data(x)) = (get(&vals, *weight)?, get(&vals, *input)?)
                else {
                    return Err(InterpError("matvec_t of a scalar".into()));
                };
                let x = broadcast(cell, *input, cell.ty(*input), x, batch);
                let mut out = vec![0.0; batch * c];
                for b in 0..batch {
                    let (xb, ob) = (&x[b * r..(b + 1) * r], &mut out[b * c..(b + 1) * c]);
                    for (i, &xi) in xb.iter().enumerate() {
                        for (o, &wij) in ob.iter_mut().zip(&w[i * c..(i + 1) * c]) {
                            *o += wij * xi;
                        }
                    }
                }
                vec![Val::Data(out)]
            }
            Op::Product(p) => product(cell, &vals, p, batch, operands)?,
            Op::Fused(region) => fused(cell, &vals, region, batch)?,
        };
        for (v, r) in inst.results.iter().zip(results) {
            vals[v.index()] = Some(r);
        }
    }
    let read = |v: Value| -> Result<Vec<f64>, InterpError> {
        match lanes(cell, &vals, v, batch)? {
            Lanes::Data(d) => Ok(d),
            Lanes::Scalar(x) => {
                let n = cell.ty(v).vector_len().unwrap_or(1);
                Ok(vec![x; batch * n])
            }
        }
    };
    let outputs = cell
        .output_values
        .iter()
        .map(|&v| read(v))
        .collect::<Result<Vec<_>, _>>()?;
    let next = cell
        .state_updates
        .iter()
        .map(|&v| read(v))
        .collect::<Result<Vec<_>, _>>()?;
    state.values = next;
    Ok(outputs)
}

/// Runs a sequence: `inputs[t]` holds the inputs of step `t`. Returns the outputs
/// of every step, `[t][output]`.
pub fn run(
    cell: &Cell,
    params: &ParamValues,
    inputs: &[Vec<Vec<f64>>],
    state: &mut State,
) -> Result<Vec<Vec<Vec<f64>>>, InterpError> {
    inputs
        .iter()
        .map(|x| step(cell, params, x, state))
        .collect()
}

fn get(vals: &[Option<Val>], v: Value) -> Result<&Val, InterpError> {
    vals.get(v.index())
        .and_then(Option::as_ref)
        .ok_or_else(|| InterpError(format!("value v{} read before it is computed", v.0)))
}

fn dot(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

enum Lanes {
    Scalar(f64),
    Data(Vec<f64>),
}

/// Whether a value is a parameter vector (one copy shared by the batch).
fn is_shared(cell: &Cell, v: Value) -> bool {
    matches!(cell.op_of(v), Op::Param(_))
}

/// A parameter vector repeated over the batch; a step vector as it is.
fn broadcast(cell: &Cell, v: Value, ty: Type, d: &[f64], batch: usize) -> Vec<f64> {
    if is_shared(cell, v) {
        if let Type::Vector(_) = ty {
            return d.repeat(batch);
        }
    }
    d.to_vec()
}

/// A `[1]` value (one number per batch row) repeated to `width` lanes per
/// row, when it broadcasts against vectors of that length.
fn widen(l: Lanes, ty: Type, width: usize) -> Lanes {
    match l {
        Lanes::Data(d) if ty == Type::Vector(1) && width > 1 => Lanes::Data(
            d.iter()
                .flat_map(|&x| std::iter::repeat_n(x, width))
                .collect(),
        ),
        l => l,
    }
}

fn lanes(cell: &Cell, vals: &[Option<Val>], v: Value, batch: usize) -> Result<Lanes, InterpError> {
    match vals.get(v.index()).and_then(Option::as_ref) {
        Some(Val::Scalar(x)) => Ok(Lanes::Scalar(*x)),
        Some(Val::Data(d)) => Ok(Lanes::Data(broadcast(cell, v, cell.ty(v), d, batch))),
        None => Err(InterpError(format!(
            "value v{} read before it is computed",
            v.0
        ))),
    }
}

fn product(
    cell: &Cell,
    vals: &[Option<Val>],
    p: &Product,
    batch: usize,
    operands: Operands,
) -> Result<Vec<Val>, InterpError> {
    let inputs: Vec<(usize, Vec<f64>)> = p
        .inputs
        .iter()
        .map(|&x| match lanes(cell, vals, x, batch)? {
            Lanes::Data(d) => {
                let n = cell.ty(x).vector_len().unwrap_or(0);
                Ok((n, operands.apply(d, n)))
            }
            Lanes::Scalar(_) => Err(InterpError("product of a scalar".into())),
        })
        .collect::<Result<_, _>>()?;
    let mut results = Vec::new();
    for row in &p.rows {
        let rows = row
            .weights
            .iter()
            .flatten()
            .next()
            .and_then(|w| match cell.ty(*w) {
                Type::Matrix(r, _) => Some(r),
                _ => None,
            })
            .ok_or_else(|| InterpError("row block without a matrix".into()))?;
        let mut out = vec![0.0; batch * rows];
        for b in 0..batch {
            for i in 0..rows {
                let mut acc = 0.0;
                for (j, w) in row.weights.iter().enumerate() {
                    let Some(w) = w else { continue };
                    let Some(Val::Data(wd)) = vals[w.index()].as_ref() else {
                        return Err(InterpError("weight not computed".into()));
                    };
                    let (n, x) = &inputs[j];
                    acc += dot(&wd[i * n..(i + 1) * n], &x[b * n..(b + 1) * n]);
                }
                for bias in &row.biases {
                    let Some(Val::Data(bd)) = vals[bias.index()].as_ref() else {
                        return Err(InterpError("bias not computed".into()));
                    };
                    acc += bd[i];
                }
                out[b * rows + i] = acc;
            }
        }
        results.push(Val::Data(out));
    }
    Ok(results)
}

fn fused(
    cell: &Cell,
    vals: &[Option<Val>],
    r: &Region,
    batch: usize,
) -> Result<Vec<Val>, InterpError> {
    let n = batch * r.len;
    let args: Vec<Vec<f64>> = r
        .args
        .iter()
        .map(
            |&a| match widen(lanes(cell, vals, a, batch)?, cell.ty(a), r.len) {
                Lanes::Data(d) if d.len() == n => Ok(d),
                _ => Err(InterpError("region argument of the wrong length".into())),
            },
        )
        .collect::<Result<_, _>>()?;
    let mut body: Vec<Lanes> = Vec::with_capacity(r.body.len());
    let fetch = |body: &[Lanes], o: Operand| -> Result<Lanes, InterpError> {
        match o {
            Operand::Arg(a) => args
                .get(a as usize)
                .map(|d| Lanes::Data(d.clone()))
                .ok_or_else(|| InterpError("region argument out of range".into())),
            Operand::Inst(e) => match body.get(e as usize) {
                Some(Lanes::Scalar(x)) => Ok(Lanes::Scalar(*x)),
                Some(Lanes::Data(d)) => Ok(Lanes::Data(d.clone())),
                None => Err(InterpError("region value out of range".into())),
            },
        }
    };
    for ri in &r.body {
        let v = match ri.op {
            EwOp::Const(c) => Lanes::Scalar(c),
            EwOp::Unary(op) => match fetch(&body, ri.args[0])? {
                Lanes::Scalar(x) => Lanes::Scalar(op.eval(x)),
                Lanes::Data(d) => Lanes::Data(d.into_iter().map(|x| op.eval(x)).collect()),
            },
            EwOp::Binary(op) => {
                let a = fetch(&body, ri.args[0])?;
                let b = fetch(&body, ri.args[1])?;
                match (a, b) {
                    (Lanes::Scalar(x), Lanes::Scalar(y)) => Lanes::Scalar(op.eval(x, y)),
                    (Lanes::Scalar(x), Lanes::Data(d)) => {
                        Lanes::Data(d.into_iter().map(|y| op.eval(x, y)).collect())
                    }
                    (Lanes::Data(d), Lanes::Scalar(y)) => {
                        Lanes::Data(d.into_iter().map(|x| op.eval(x, y)).collect())
                    }
                    (Lanes::Data(d), Lanes::Data(e)) => {
                        Lanes::Data(d.into_iter().zip(e).map(|(x, y)| op.eval(x, y)).collect())
                    }
                }
            }
        };
        body.push(v);
    }
    r.yields
        .iter()
        .map(|&y| {
            Ok(match fetch(&body, y)? {
                Lanes::Data(d) => Val::Data(d),
                Lanes::Scalar(x) => Val::Data(vec![x; n]),
            })
        })
        .collect()
}
