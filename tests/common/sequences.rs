//! A random sequence through a compiled kernel and through the interpreter,
//! and the norm-wise error between them.

use cellc::interp;
use cellc::{Cell, Options, Weights};

/// The JIT's tolerance against the interpreter (`tests/jit.rs` explains it).
pub const TOLERANCE: f64 = 1e-4;

/// Runs a sequence under `opts`, with one `run_with` for the whole of it or one
/// `step_inputs` call per step, and returns every output of every step and the
/// final states.
pub fn run_sequence(
    cell: &Cell,
    weights: &Weights,
    opts: &Options,
    batch: usize,
    steps: usize,
    seed: u64,
    one_step_per_call: bool,
) -> (Vec<Vec<f32>>, Vec<Vec<f32>>) {
    let kernel = cell
        .compile(weights, opts)
        .unwrap_or_else(|e| panic!("{e}"));
    let mut rng = cellc::gen::Rng(seed);
    let mut state = kernel.new_state(batch).unwrap();
    for (s, name) in kernel.state_names().iter().enumerate() {
        let v: Vec<f32> = (0..batch * kernel.state_len(s))
            .map(|_| rng.unit() as f32 * 0.5)
            .collect();
        state.set(name, &v).unwrap();
    }
    let xs: Vec<Vec<f32>> = (0..kernel.input_names().len())
        .map(|i| {
            (0..steps * batch * kernel.input_len(i))
                .map(|_| rng.unit() as f32)
                .collect()
        })
        .collect();
    let mut ys: Vec<Vec<f32>> = (0..kernel.output_names().len())
        .map(|o| vec![0.0; steps * batch * kernel.output_len(o)])
        .collect();
    if one_step_per_call {
        for t in 0..steps {
            let refs: Vec<&[f32]> = xs
                .iter()
                .enumerate()
                .map(|(i, x)| {
                    let n = batch * kernel.input_len(i);
                    &x[t * n..(t + 1) * n]
                })
                .collect();
            kernel.step_inputs(&refs, &mut state).unwrap();
            for (o, name) in kernel.output_names().iter().enumerate() {
                let n = batch * kernel.output_len(o);
                kernel
                    .copy_output(&state, name, &mut ys[o][t * n..(t + 1) * n])
                    .unwrap();
            }
        }
    } else {
        let refs: Vec<&[f32]> = xs.iter().map(Vec::as_slice).collect();
        let mut outs: Vec<&mut [f32]> = ys.iter_mut().map(Vec::as_mut_slice).collect();
        kernel.run_with(&refs, &mut state, &mut outs).unwrap();
    }
    let finals = kernel
        .state_names()
        .iter()
        .map(|n| state.get(n).unwrap())
        .collect();
    (ys, finals)
}

/// The same sequence through the interpreter: outputs of every step, final states.
pub fn reference_sequence(
    cell: &Cell,
    weights: &Weights,
    batch: usize,
    steps: usize,
    seed: u64,
) -> (Vec<Vec<f64>>, Vec<Vec<f64>>) {
    let ir = cell.ir().unwrap();
    let params = cellc::interp::ParamValues::from_f32(&weights.resolve(&ir).unwrap());
    let mut rng = cellc::gen::Rng(seed);
    let mut state = interp::State::zeros(&ir, batch).unwrap();
    for (s, p) in ir.states.iter().enumerate() {
        state.values[s] = (0..batch * p.len)
            .map(|_| (rng.unit() as f32 * 0.5) as f64)
            .collect();
    }
    let xs: Vec<Vec<f32>> = ir
        .inputs
        .iter()
        .map(|p| {
            (0..steps * batch * p.len)
                .map(|_| rng.unit() as f32)
                .collect()
        })
        .collect();
    let mut ys: Vec<Vec<f64>> = ir.outputs.iter().map(|_| Vec::new()).collect();
    for t in 0..steps {
        let x: Vec<Vec<f64>> = ir
            .inputs
            .iter()
            .enumerate()
            .map(|(i, p)| {
                xs[i][t * batch * p.len..(t + 1) * batch * p.len]
                    .iter()
                    .map(|&v| v as f64)
                    .collect()
            })
            .collect();
        let outs = interp::step(&ir, &params, &x, &mut state).unwrap();
        for (o, v) in outs.into_iter().enumerate() {
            ys[o].extend(v);
        }
    }
    (ys, state.values)
}

pub fn norm_error(got: &[f32], want: &[f64]) -> f64 {
    let norm = want.iter().fold(1.0f64, |m, w| m.max(w.abs()));
    got.iter()
        .zip(want)
        .fold(0.0f64, |m, (g, w)| m.max((*g as f64 - w).abs() / norm))
}
