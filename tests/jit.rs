//! The JIT against the interpreter.

mod common;

use cellc::interp::{self, ParamValues};
use cellc::{Cell, Options, Weights};

/// Runs `steps` steps through the JIT and the interpreter (f64) and returns the
/// largest error, relative to max(1, |reference|).
pub fn compare(
    cell: &Cell,
    opts: &Options,
    batch: usize,
    steps: usize,
    seed: u64,
    input_scale: f32,
) -> f64 {
    let ir = cell.ir().unwrap();
    let weights = Weights::random(&ir, seed);
    let kernel = cell
        .compile(&weights, opts)
        .unwrap_or_else(|e| panic!("{e}"));
    let params = ParamValues(
        weights
            .resolve(&ir)
            .unwrap()
            .into_iter()
            .map(|v| v.into_iter().map(f64::from).collect())
            .collect(),
    );
    let mut rng = cellc::gen::Rng(seed ^ 0x5555);
    let mut state = kernel.new_state(batch);
    let mut ref_state = interp::State::zeros(&ir, batch);
    // Non-zero initial states.
    for (s, name) in kernel.state_names().iter().enumerate() {
        let vals: Vec<f32> = (0..batch * kernel.state_len(s))
            .map(|_| rng.unit() as f32 * 0.5)
            .collect();
        state.set(name, &vals).unwrap();
        ref_state.values[s] = vals.iter().map(|&v| v as f64).collect();
    }
    let mut worst = 0.0f64;
    for _ in 0..steps {
        let xs: Vec<Vec<f32>> = (0..ir.inputs.len())
            .map(|i| {
                (0..batch * kernel.input_len(i))
                    .map(|_| rng.unit() as f32 * input_scale)
                    .collect()
            })
            .collect();
        let refs: Vec<&[f32]> = xs.iter().map(|v| v.as_slice()).collect();
        kernel.step_inputs(&refs, &mut state).unwrap();
        let xs64: Vec<Vec<f64>> = xs
            .iter()
            .map(|v| v.iter().map(|&x| x as f64).collect())
            .collect();
        let outs = interp::step(&ir, &params, &xs64, &mut ref_state).unwrap();
        for (o, name) in kernel.output_names().iter().enumerate() {
            let got = kernel.output(&state, name).unwrap();
            for (g, w) in got.iter().zip(&outs[o]) {
                worst = worst.max(((*g as f64) - w).abs() / w.abs().max(1.0));
            }
        }
        for (s, name) in kernel.state_names().iter().enumerate() {
            let got = state.get(name).unwrap();
            for (g, w) in got.iter().zip(&ref_state.values[s]) {
                worst = worst.max(((*g as f64) - w).abs() / w.abs().max(1.0));
            }
        }
    }
    worst
}

#[test]
fn examples_match_the_interpreter() {
    for path in common::examples() {
        for (x, h) in [(3, 5), (8, 8), (17, 33)] {
            let cell = Cell::from_file(&path).unwrap();
            let dims: Vec<(&str, u64)> = [("X", x), ("H", h), ("P", 6)]
                .into_iter()
                .filter(|(n, _)| cell.checked().dim_names().iter().any(|d| d == n))
                .collect();
            let cell = cell.dims(&dims).unwrap();
            for batch in [1, 3, 8] {
                for optimize in [true, false] {
                    let opts = Options {
                        optimize,
                        ..Options::default()
                    };
                    let err = compare(&cell, &opts, batch, 4, 1, 1.0);
                    eprintln!(
                        "{} x={x} h={h} b={batch} opt={optimize} err={err:.2e}",
                        path.display()
                    );
                    assert!(
                        err < 1e-5,
                        "{} x={x} h={h} batch={batch} optimize={optimize}: error {err}",
                        path.display()
                    );
                }
            }
        }
    }
}
