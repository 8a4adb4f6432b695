//! Gradients through time, in f64 by the interpreter: the oracle for every
//! compiled backward pass. The forward pass keeps each step's old states
//! (the tape); the backward cell then runs from the last step to the first,
//! its state the adjoint of the forward state; the parameters' shares are
//! summed over rows and steps (a matrix's as the outer products of each
//! product's result adjoint and operand).

use super::{backward, training_forward, GradError};
use crate::interp::{self, ParamValues};
use crate::ir::{Cell, Type};

/// What [`through_time`] returns: the adjoint of every parameter (in its
/// shape, row-major), of every input (`[T, B, len]`) and of every initial
/// state (`[B, len]`).
#[derive(Clone, Debug, PartialEq)]
pub struct Gradients {
    pub params: Vec<Vec<f64>>,
    pub inputs: Vec<Vec<f64>>,
    pub initial_states: Vec<Vec<f64>>,
}

/// A sequence's sizes and data, as the interpreter takes them.
fn check_len(what: &str, got: usize, want: usize) -> Result<(), GradError> {
    if got == want {
        Ok(())
    } else {
        Err(GradError(format!(
            "{what} has {got} values, expected {want}"
        )))
    }
}

/// The gradients of `L = Σ_t Σ_o <d_outputs[o][t], y_o[t]> + Σ_s
/// <d_final[s], h_s[T]>` for `steps` steps of `cell` (as lowered) over
/// `batch` rows, from inputs `xs` (per input, `[T, B, len]`) and initial
/// states `h0` (per state, `[B, len]`); `d_outputs` per output `[T, B,
/// len]`, `d_final` per state `[B, len]`.
#[allow(clippy::too_many_arguments)]
pub fn through_time(
    cell: &Cell,
    params: &ParamValues,
    xs: &[Vec<f64>],
    h0: &[Vec<f64>],
    steps: usize,
    batch: usize,
    d_outputs: &[Vec<f64>],
    d_final: &[Vec<f64>],
) -> Result<Gradients, GradError> {
    let err = |e: interp::InterpError| GradError(e.to_string());
    check_sizes(cell, xs, h0, steps, batch, d_outputs, d_final)?;
    let rows = |len: usize| batch * len;
    let at = |v: &[f64], len: usize, t: usize| v[t * rows(len)..(t + 1) * rows(len)].to_vec();

    // Forward, keeping each step's tape: the old states and the taped
    // values (the training forward cell's outputs after the cell's own).
    let bw = backward(cell)?;
    let layout = &bw.layout;
    let forward = training_forward(cell, layout);
    let mut state = interp::State {
        batch,
        values: h0.to_vec(),
    };
    let mut tape = Vec::with_capacity(steps);
    for t in 0..steps {
        let x: Vec<Vec<f64>> = (cell.inputs.iter().zip(xs))
            .map(|(p, x)| at(x, p.len, t))
            .collect();
        let mut outs = interp::step(&forward, params, &x, &mut state).map_err(err)?;
        tape.push(outs.split_off(cell.outputs.len()));
    }

    // Backward, from the last step to the first.
    let mut grads = Gradients {
        params: (cell.params.iter())
            .map(|p| match p.ty {
                Type::Matrix(r, c) => vec![0.0; r * c],
                Type::Vector(n) => vec![0.0; n],
                Type::Scalar => vec![0.0],
            })
            .collect(),
        inputs: (cell.inputs.iter())
            .map(|p| vec![0.0; steps * rows(p.len)])
            .collect(),
        initial_states: Vec::new(),
    };
    let mut adjoint = interp::State {
        batch,
        values: d_final.to_vec(),
    };
    for t in (0..steps).rev() {
        let mut inputs: Vec<Vec<f64>> = (cell.inputs.iter().zip(xs))
            .map(|(p, x)| at(x, p.len, t))
            .collect();
        let (old_states, taped) = tape[t].split_at(cell.states.len());
        inputs.extend(old_states.iter().cloned());
        inputs.extend((cell.outputs.iter().zip(d_outputs)).map(|(p, d)| at(d, p.len, t)));
        inputs.extend(taped.iter().cloned());
        let outs = interp::step(&bw.cell, params, &inputs, &mut adjoint).map_err(err)?;
        for (i, p) in cell.inputs.iter().enumerate() {
            grads.inputs[i][t * rows(p.len)..(t + 1) * rows(p.len)].copy_from_slice(&outs[i]);
        }
        for g in &layout.products {
            let Type::Matrix(r, c) = cell.params[g.weight.index()].ty else {
                return Err(GradError(
                    "internal error: a product's weight is not a matrix".into(),
                ));
            };
            let v = match g.v {
                super::Operand::Input(i) => &inputs[i],
                super::Operand::Output(o) => &outs[o],
            };
            let z = &outs[g.z];
            let dw = &mut grads.params[g.weight.index()];
            for b in 0..batch {
                for i in 0..r {
                    let zi = z[b * r + i];
                    for (w, &vj) in dw[i * c..(i + 1) * c]
                        .iter_mut()
                        .zip(&v[b * c..(b + 1) * c])
                    {
                        *w += zi * vj;
                    }
                }
            }
        }
        for &(p, o) in &layout.vectors {
            let dp = &mut grads.params[p.index()];
            let n = dp.len();
            for row in outs[o].chunks(n) {
                for (g, &x) in dp.iter_mut().zip(row) {
                    *g += x;
                }
            }
        }
    }
    grads.initial_states = adjoint.values;
    Ok(grads)
}

/// Each list holds one array per port, each of its port's size.
#[allow(clippy::too_many_arguments)]
fn check_sizes(
    cell: &Cell,
    xs: &[Vec<f64>],
    h0: &[Vec<f64>],
    steps: usize,
    batch: usize,
    d_outputs: &[Vec<f64>],
    d_final: &[Vec<f64>],
) -> Result<(), GradError> {
    let count =
        |what: &str, got: usize, want: usize| check_len(&format!("the list of {what}"), got, want);
    count("inputs", xs.len(), cell.inputs.len())?;
    count("initial states", h0.len(), cell.states.len())?;
    count("output adjoints", d_outputs.len(), cell.outputs.len())?;
    count("final state adjoints", d_final.len(), cell.states.len())?;
    let size = |dims: &[usize]| {
        dims.iter()
            .try_fold(1usize, |a, &b| a.checked_mul(b))
            .ok_or_else(|| GradError("a sequence's size overflows".into()))
    };
    for (p, x) in cell.inputs.iter().zip(xs) {
        let n = size(&[steps, batch, p.len])?;
        check_len(&format!("input `{}`", p.name), x.len(), n)?;
    }
    for (p, d) in cell.outputs.iter().zip(d_outputs) {
        let n = size(&[steps, batch, p.len])?;
        check_len(&format!("the adjoint of `{}`", p.name), d.len(), n)?;
    }
    for ((p, h), d) in cell.states.iter().zip(h0).zip(d_final) {
        let n = size(&[batch, p.len])?;
        check_len(&format!("initial state `{}`", p.name), h.len(), n)?;
        check_len(&format!("the adjoint of `{}`", p.name), d.len(), n)?;
    }
    Ok(())
}
