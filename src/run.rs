//! `cellc run`: a cell, its weights and an input sequence from safetensors files,
//! the output sequence and final states back into one.
//!
//! The inputs are time-major, `[T, B, len]`, under the cell's input names
//! (PyTorch's default layout); initial states, `[B, len]` under the state names,
//! are optional (zeros). Sizes are read off the tensors: each input's length,
//! each given state's, and each parameter's checkpoint tensor (an axis taken
//! whole must have the parameter's length) give equations over the size
//! variables, which [`sema::infer_dims`] solves. A disagreement is an error that
//! names both tensors. The result holds each output as `[T, B, len]` under its
//! name, and each state's final value as `[B, len]` under its name.

use crate::sema::{self, poly::Poly, IndexInfo, SizeFact, SymTy};
use crate::weights::{shape_str, Weights};
use crate::{Cell, Error, Options, Result};

/// The sizes a run reads off its tensors.
pub(crate) struct Shapes {
    pub steps: usize,
    pub batch: usize,
    pub dims: Vec<(String, u64)>,
}

/// Infers the sequence length, the batch, and the cell's sizes from the tensors.
pub(crate) fn shapes(
    cell: &Cell,
    weights: &Weights,
    inputs: &Weights,
    given: &[(String, u64)],
) -> Result<Shapes> {
    let checked = cell.checked();
    let mut facts = Vec::new();
    let mut seq: Option<(usize, usize, String)> = None;
    if checked.inputs.is_empty() {
        return Err(Error::shape(format!(
            "cell `{}` has no input, so there is no sequence to run",
            checked.name
        )));
    }
    for port in &checked.inputs {
        let t = inputs.get(&port.name).ok_or_else(|| {
            Error::shape(format!(
                "the inputs have no tensor `{}` (the cell's input, [T, B, len]); they have: {}",
                port.name,
                inputs.names().collect::<Vec<_>>().join(", ")
            ))
        })?;
        let [steps, batch, len] = t.shape[..] else {
            return Err(Error::shape(format!(
                "input `{}` is {}; expected [T, B, len] (time-major)",
                port.name,
                shape_str(&t.shape)
            )));
        };
        if let Some((s, b, first)) = &seq {
            if (*s, *b) != (steps, batch) {
                return Err(Error::shape(format!(
                    "input `{}` is {} but input `{first}` has T = {s}, B = {b}",
                    port.name,
                    shape_str(&t.shape)
                )));
            }
        } else {
            seq = Some((steps, batch, port.name.clone()));
        }
        facts.push(SizeFact {
            what: format!("input `{}` {}", port.name, shape_str(&t.shape)),
            poly: port.len.clone(),
            value: len as i128,
        });
    }
    let (steps, batch, first) = seq.unwrap_or((0, 0, String::new()));
    // A tensor the cell does not read would be silently ignored (an initial
    // state saved under another name would start from zeros): refuse it.
    for name in inputs.names() {
        let known = checked.inputs.iter().any(|p| p.name == name)
            || checked.states.iter().any(|p| p.name == name);
        if !known {
            let reads: Vec<String> = checked
                .inputs
                .iter()
                .map(|p| format!("`{}` (input, [T, B, len])", p.name))
                .chain(
                    checked
                        .states
                        .iter()
                        .map(|p| format!("`{}` (initial state, [B, len])", p.name)),
                )
                .collect();
            let hint = sema::suggest(
                name,
                checked
                    .inputs
                    .iter()
                    .chain(&checked.states)
                    .map(|p| p.name.as_str()),
            )
            .map_or(String::new(), |s| format!(" (did you mean `{s}`?)"));
            return Err(Error::shape(format!(
                "the inputs have tensor `{name}`, which cell `{}` does not read{hint}; it reads {}",
                checked.name,
                reads.join(", ")
            )));
        }
    }
    for port in &checked.states {
        if let Some(t) = inputs.get(&port.name) {
            let [b, len] = t.shape[..] else {
                return Err(Error::shape(format!(
                    "initial state `{}` is {}; expected [B, len]",
                    port.name,
                    shape_str(&t.shape)
                )));
            };
            if b != batch {
                return Err(Error::shape(format!(
                    "initial state `{}` is {} but input `{first}` has B = {batch}",
                    port.name,
                    shape_str(&t.shape)
                )));
            }
            facts.push(SizeFact {
                what: format!("initial state `{}` {}", port.name, shape_str(&t.shape)),
                poly: port.len.clone(),
                value: len as i128,
            });
        }
    }
    for p in &checked.params {
        let axes: Vec<&Poly> = match &p.ty {
            SymTy::Vector(n) => vec![n],
            SymTy::Matrix(r, c) => vec![r, c],
            SymTy::Scalar => vec![],
        };
        let found = p
            .binding
            .iter()
            .find(|b| weights.get(&b.tensor).is_some())
            .map(|b| (b.tensor.clone(), b.indices.clone()))
            .or_else(|| weights.get(&p.name).map(|_| (p.name.clone(), Vec::new())));
        let Some((tensor, indices)) = found else {
            continue; // Reported, with every name tried, when the weights bind.
        };
        let Some(t) = weights.get(&tensor) else {
            continue;
        };
        let mut k = 0;
        for (a, &dim) in t.shape.iter().enumerate() {
            let what = format!(
                "axis {a} of tensor `{tensor}` {} (parameter `{}`)",
                shape_str(&t.shape),
                p.name
            );
            let axis = match indices.get(a) {
                None => Some(axes.get(k).map(|&x| x.clone())),
                Some(IndexInfo::Range(start, None)) => Some(axes.get(k).map(|&x| match start {
                    Some(s) => x.add(s),
                    None => x.clone(),
                })),
                Some(IndexInfo::Range(_, Some(_))) => None,
                Some(IndexInfo::At(_)) => {
                    continue;
                }
            };
            if let Some(Some(poly)) = axis {
                facts.push(SizeFact {
                    what,
                    poly,
                    value: dim as i128,
                });
            }
            k += 1;
        }
    }
    let dims = sema::infer_dims(checked, &facts, given).map_err(Error::shape)?;
    Ok(Shapes { steps, batch, dims })
}

/// Runs a cell over a sequence. `given` sizes override nothing: they must agree
/// with the tensors.
pub fn run(
    cell: &Cell,
    weights: &Weights,
    inputs: &Weights,
    given: &[(String, u64)],
    opts: &Options,
) -> Result<Weights> {
    let shapes = shapes(cell, weights, inputs, given)?;
    let dims: Vec<(&str, u64)> = shapes.dims.iter().map(|(n, v)| (n.as_str(), *v)).collect();
    let cell = cell.clone().dims(&dims)?;
    let kernel = cell.compile(weights, opts)?;
    let (steps, batch) = (shapes.steps, shapes.batch);
    let mut state = kernel.new_state(batch)?;
    for name in kernel.state_names() {
        if let Some(t) = inputs.get(name) {
            state.set(name, &t.data)?;
        }
    }
    let xs: Vec<&[f32]> = kernel
        .input_names()
        .iter()
        .map(|n| inputs.get(n).map_or(&[][..], |t| t.data.as_slice()))
        .collect();
    let mut outs: Vec<Vec<f32>> = (0..kernel.output_names().len())
        .map(|o| vec![0.0; steps * batch * kernel.output_len(o)])
        .collect();
    {
        let mut views: Vec<&mut [f32]> = outs.iter_mut().map(Vec::as_mut_slice).collect();
        kernel.run_with(&xs, &mut state, &mut views)?;
    }
    let mut result = Weights::new();
    for (o, name) in kernel.output_names().iter().enumerate() {
        let len = kernel.output_len(o);
        result
            .insert(name, &[steps, batch, len], std::mem::take(&mut outs[o]))
            .map_err(|e| Error::internal(e.0))?;
    }
    for (s, name) in kernel.state_names().iter().enumerate() {
        let len = kernel.state_len(s);
        result
            .insert(name, &[batch, len], state.get(name)?)
            .map_err(|e| Error::internal(e.0))?;
    }
    Ok(result)
}
