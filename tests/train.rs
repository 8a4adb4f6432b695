//! Training on the JIT (`Cell::compile_training`): the forward pass and the
//! gradients through time against the f64 oracle (`cellc::grad`, itself
//! checked against finite differences in `tests/grad.rs`) on every shipped
//! cell and on random cells; the same bits on every thread count; misuse
//! refused.
//!
//! Tolerance: per tensor, max |jit - oracle| <= 1e-4 * max(1, max |oracle|),
//! the JIT tests' norm-wise bound (`tests/jit.rs`): f32 sums of at most a
//! few hundred terms per step, over a few steps forward and back.

mod common;

use cellc::interp::ParamValues;
use cellc::train::{Gradients, Trainer};
use cellc::{Cell, Options, Weights};
use common::Rng;

const TOLERANCE: f64 = 1e-4;

/// Random inputs, initial states and adjoints for a cell.
struct Data {
    steps: usize,
    batch: usize,
    xs: Vec<Vec<f32>>,
    h0: Vec<Vec<f32>>,
    d_outputs: Vec<Vec<f32>>,
    d_final: Vec<Vec<f32>>,
}

impl Data {
    fn random(ir: &cellc::ir::Cell, steps: usize, batch: usize, seed: u64) -> Data {
        let mut rng = Rng(seed);
        let mut v = |n: usize, scale: f64| -> Vec<f32> {
            rng.vec(n, scale).into_iter().map(|x| x as f32).collect()
        };
        Data {
            steps,
            batch,
            xs: (ir.inputs.iter())
                .map(|p| v(steps * batch * p.len, 1.0))
                .collect(),
            h0: ir.states.iter().map(|p| v(batch * p.len, 0.5)).collect(),
            d_outputs: (ir.outputs.iter())
                .map(|p| v(steps * batch * p.len, 1.0))
                .collect(),
            d_final: ir.states.iter().map(|p| v(batch * p.len, 1.0)).collect(),
        }
    }

    fn run(&self, trainer: &Trainer) -> (Vec<Vec<f32>>, Gradients) {
        let xs: Vec<&[f32]> = self.xs.iter().map(Vec::as_slice).collect();
        let h0: Vec<&[f32]> = self.h0.iter().map(Vec::as_slice).collect();
        let f = trainer
            .forward(&xs, &h0, self.steps, self.batch)
            .unwrap_or_else(|e| panic!("{e}"));
        let dy: Vec<&[f32]> = self.d_outputs.iter().map(Vec::as_slice).collect();
        let dh: Vec<&[f32]> = self.d_final.iter().map(Vec::as_slice).collect();
        let g = trainer
            .backward(&f.tape, &dy, &dh)
            .unwrap_or_else(|e| panic!("{e}"));
        (f.outputs, g)
    }
}

fn f64s(v: &[Vec<f32>]) -> Vec<Vec<f64>> {
    v.iter()
        .map(|x| x.iter().map(|&y| f64::from(y)).collect())
        .collect()
}

fn close(what: &str, got: &[f32], want: &[f64]) {
    assert_eq!(got.len(), want.len(), "{what}");
    let scale = want.iter().fold(1.0f64, |m, w| m.max(w.abs()));
    let err = (got.iter().zip(want)).fold(0.0f64, |m, (g, w)| m.max((f64::from(*g) - w).abs()));
    assert!(
        err <= TOLERANCE * scale,
        "{what}: error {err:e} (scale {scale})"
    );
}

/// Compiles `cell` for training with random weights and compares its
/// gradients with the oracle's.
fn check(name: &str, cell: &Cell, seed: u64, opts: &Options) {
    let ir = cell.ir().unwrap();
    let weights = Weights::random(&ir, seed);
    let trainer = cell
        .compile_training(&weights, opts)
        .unwrap_or_else(|e| panic!("{name}: {e}"));
    let params = ParamValues::from_f32(&weights.resolve(&ir).unwrap());
    let data = Data::random(&ir, 4, 3, seed);
    let (_, got) = data.run(&trainer);
    let want = cellc::grad::through_time(
        &ir,
        &params,
        &f64s(&data.xs),
        &f64s(&data.h0),
        data.steps,
        data.batch,
        &f64s(&data.d_outputs),
        &f64s(&data.d_final),
    )
    .unwrap();
    for (k, p) in ir.params.iter().enumerate() {
        let g = got.param(&p.name).unwrap();
        close(&format!("{name}: d {}", p.name), &g.values, &want.params[k]);
    }
    for (i, p) in ir.inputs.iter().enumerate() {
        close(
            &format!("{name}: d {}", p.name),
            &got.inputs[i],
            &want.inputs[i],
        );
    }
    for (s, p) in ir.states.iter().enumerate() {
        close(
            &format!("{name}: d {}0", p.name),
            &got.initial_states[s],
            &want.initial_states[s],
        );
    }
}

#[test]
fn every_shipped_cell_matches_the_oracle() {
    for (k, path) in common::examples().iter().enumerate() {
        let cell = common::sized(path, 5, 6);
        check(&common::stem(path), &cell, k as u64, &Options::default());
    }
}

#[test]
fn random_cells_match_the_oracle() {
    for seed in 0..24u64 {
        let text = cellc::gen::random_cell(seed);
        let cell = Cell::from_source("random.rnn", &text)
            .unwrap()
            .dims(&[("X", 5), ("H", 7)])
            .unwrap();
        check(&format!("random {seed}"), &cell, seed, &Options::default());
    }
}

/// Unoptimized kernels (every product apart) give the oracle's gradients too.
#[test]
fn unoptimized_kernels_match_the_oracle() {
    for name in ["lstm", "gru", "layernorm_lstm"] {
        let cell = common::sized(&common::example_path(name), 5, 6);
        let opts = Options {
            optimize: false,
            ..Options::default()
        };
        check(name, &cell, 3, &opts);
    }
}

/// The forward pass and the gradients are the same bits on 1, 2 and 3
/// threads, at a size where threads split the work.
#[test]
fn results_do_not_depend_on_the_thread_count() {
    let cell = common::sized(&common::example_path("lstm"), 40, 64);
    let ir = cell.ir().unwrap();
    let weights = Weights::random(&ir, 5);
    let data = Data::random(&ir, 5, 9, 5);
    let run = |threads: usize| {
        let opts = Options {
            threads: Some(threads),
            ..Options::default()
        };
        data.run(&cell.compile_training(&weights, &opts).unwrap())
    };
    let one = run(1);
    for threads in [2, 3] {
        assert!(run(threads) == one, "{threads} threads");
    }
}

/// A tape of another trainer, adjoints of the wrong shape or count, and
/// inputs of the wrong length are errors that say so.
#[test]
fn misuse_is_refused() {
    let cell = common::sized(&common::example_path("gru"), 3, 4);
    let ir = cell.ir().unwrap();
    let weights = Weights::random(&ir, 1);
    let a = cell
        .compile_training(&weights, &Options::default())
        .unwrap();
    let b = cell
        .compile_training(&weights, &Options::default())
        .unwrap();
    let data = Data::random(&ir, 2, 1, 1);
    let xs: Vec<&[f32]> = data.xs.iter().map(Vec::as_slice).collect();
    let h0: Vec<&[f32]> = data.h0.iter().map(Vec::as_slice).collect();
    let f = a.forward(&xs, &h0, 2, 1).unwrap();
    let dy: Vec<&[f32]> = data.d_outputs.iter().map(Vec::as_slice).collect();
    let dh: Vec<&[f32]> = data.d_final.iter().map(Vec::as_slice).collect();
    let e = b.backward(&f.tape, &dy, &dh).unwrap_err().to_string();
    assert!(e.contains("another trainer"), "{e}");
    let short = &data.d_outputs[0][1..];
    let e = a.backward(&f.tape, &[short], &dh).unwrap_err().to_string();
    assert!(e.contains("adjoint of output `y`"), "{e}");
    let e = a.backward(&f.tape, &[], &dh).unwrap_err().to_string();
    assert!(e.contains("output adjoints"), "{e}");
    let e = a.forward(&xs, &h0, 3, 1).unwrap_err().to_string();
    assert!(e.contains("input `x`"), "{e}");
    // A tape may be used again: the same gradients.
    assert_eq!(
        a.backward(&f.tape, &dy, &dh).unwrap(),
        a.backward(&f.tape, &dy, &dh).unwrap()
    );
}

/// A sequence of no steps: no outputs, zero parameter gradients, and the
/// final states' adjoints are the initial states'.
#[test]
fn no_steps() {
    let cell = common::sized(&common::example_path("lstm"), 3, 4);
    let ir = cell.ir().unwrap();
    let weights = Weights::random(&ir, 2);
    let t = cell
        .compile_training(&weights, &Options::default())
        .unwrap();
    let data = Data::random(&ir, 0, 2, 2);
    let (ys, g) = data.run(&t);
    assert!(ys.iter().all(Vec::is_empty));
    assert!(g.params.iter().all(|p| p.values.iter().all(|&v| v == 0.0)));
    assert_eq!(g.initial_states, data.d_final);
}

/// New parameters set on a trainer give the bits of a trainer compiled with
/// them; a tape of the old ones is refused.
#[test]
fn set_params_is_compiling_again() {
    let cell = common::sized(&common::example_path("lstm"), 5, 6);
    let ir = cell.ir().unwrap();
    let (w1, w2) = (Weights::random(&ir, 1), Weights::random(&ir, 2));
    let mut t = cell.compile_training(&w1, &Options::default()).unwrap();
    let data = Data::random(&ir, 3, 2, 4);
    let xs: Vec<&[f32]> = data.xs.iter().map(Vec::as_slice).collect();
    let h0: Vec<&[f32]> = data.h0.iter().map(Vec::as_slice).collect();
    let old = t.forward(&xs, &h0, 3, 2).unwrap();
    t.set_params(w2.resolve(&ir).unwrap()).unwrap();
    let fresh = cell.compile_training(&w2, &Options::default()).unwrap();
    assert!(data.run(&t) == data.run(&fresh));
    let dy: Vec<&[f32]> = data.d_outputs.iter().map(Vec::as_slice).collect();
    let dh: Vec<&[f32]> = data.d_final.iter().map(Vec::as_slice).collect();
    let e = t.backward(&old.tape, &dy, &dh).unwrap_err().to_string();
    assert!(e.contains("before its parameters changed"), "{e}");
    let e = t.set_params(vec![vec![0.0; 3]]).unwrap_err().to_string();
    assert!(e.contains("16 parameters, 1 given"), "{e}");
    let e = t
        .set_params(vec![vec![0.0; 3]; 16])
        .unwrap_err()
        .to_string();
    assert!(e.contains("needs"), "{e}");
}

/// Without the inputs' adjoints, the rest is the same bits; after a set of
/// new parameters too (the weights of the products after the loop follow).
#[test]
fn backward_without_inputs_gives_the_rest() {
    let cell = common::sized(&common::example_path("lstm"), 5, 6);
    let ir = cell.ir().unwrap();
    let mut t = cell
        .compile_training(&Weights::random(&ir, 1), &Options::default())
        .unwrap();
    let data = Data::random(&ir, 4, 3, 9);
    let xs: Vec<&[f32]> = data.xs.iter().map(Vec::as_slice).collect();
    let h0: Vec<&[f32]> = data.h0.iter().map(Vec::as_slice).collect();
    let dy: Vec<&[f32]> = data.d_outputs.iter().map(Vec::as_slice).collect();
    let dh: Vec<&[f32]> = data.d_final.iter().map(Vec::as_slice).collect();
    for seed in [1, 2] {
        t.set_params(Weights::random(&ir, seed).resolve(&ir).unwrap())
            .unwrap();
        let f = t.forward(&xs, &h0, 4, 3).unwrap();
        let all = t.backward(&f.tape, &dy, &dh).unwrap();
        let some = t.backward_without_inputs(&f.tape, &dy, &dh).unwrap();
        assert!(some.inputs.is_empty());
        assert!(some.params == all.params && some.initial_states == all.initial_states);
        // The inputs' adjoints follow the new weights: the oracle's.
        let fresh = cell
            .compile_training(&Weights::random(&ir, seed), &Options::default())
            .unwrap();
        assert!(data.run(&fresh).1 == all, "seed {seed}");
    }
}

/// Rows of different lengths (`compile_training_ragged`): the gradients
/// match the oracle's on the masked cell, each row's final state is the
/// state after its own length (outputs past it are zero), and a row's
/// gradients are those of the row run alone for its length.
#[test]
fn ragged_rows_are_rows_run_alone() {
    let cell = common::sized(&common::example_path("gru"), 4, 5);
    let ir = cell.ir().unwrap();
    let weights = Weights::random(&ir, 8);
    let params = weights.resolve(&ir).unwrap();
    let t = cell
        .compile_training_ragged(params.clone(), &Options::default())
        .unwrap();
    let plain = cell
        .compile_training_params(params.clone(), &Options::default())
        .unwrap();
    let (steps, batch, lengths) = (5, 3, [5usize, 2, 0]);
    let data = Data::random(&ir, steps, batch, 9);
    let mask: Vec<f32> = (0..steps)
        .flat_map(|s| lengths.iter().map(move |&l| if s < l { 1.0 } else { 0.0 }))
        .collect();
    let xs: Vec<&[f32]> = vec![&data.xs[0], &mask];
    let h0: Vec<&[f32]> = data.h0.iter().map(Vec::as_slice).collect();
    let f = t.forward(&xs, &h0, steps, batch).unwrap();
    let dy: Vec<&[f32]> = data.d_outputs.iter().map(Vec::as_slice).collect();
    let dh: Vec<&[f32]> = data.d_final.iter().map(Vec::as_slice).collect();
    let g = t.backward(&f.tape, &dy, &dh).unwrap();
    // The oracle on the masked cell.
    let masked = cellc::grad::masked(&ir);
    let want = cellc::grad::through_time(
        &masked,
        &ParamValues::from_f32(&params),
        &f64s(&[data.xs[0].clone(), mask.clone()]),
        &f64s(&data.h0),
        steps,
        batch,
        &f64s(&data.d_outputs),
        &f64s(&data.d_final),
    )
    .unwrap();
    for (k, p) in ir.params.iter().enumerate() {
        close(
            &format!("d {}", p.name),
            &g.param(&p.name).unwrap().values,
            &want.params[k],
        );
    }
    // Each row alone, for its length, through the plain trainer.
    let (x_len, h) = (ir.inputs[0].len, ir.states[0].len);
    for (b, &len) in lengths.iter().enumerate() {
        let row = |v: &[f32], n: usize, t: usize| {
            v[(t * batch + b) * n..(t * batch + b + 1) * n].to_vec()
        };
        let x: Vec<f32> = (0..len).flat_map(|t| row(&data.xs[0], x_len, t)).collect();
        let dy: Vec<f32> = (0..len)
            .flat_map(|t| row(&data.d_outputs[0], h, t))
            .collect();
        let h0 = row(&data.h0[0], h, 0);
        let fa = plain.forward(&[&x], &[&h0], len, 1).unwrap();
        let ga = plain
            .backward(&fa.tape, &[&dy], &[&row(&data.d_final[0], h, 0)])
            .unwrap();
        let want_final: Vec<f64> = fa.final_states[0].iter().map(|&v| f64::from(v)).collect();
        close(
            &format!("row {b}: h_n"),
            &row(&f.final_states[0], h, 0),
            &want_final,
        );
        for t in len..steps {
            assert!(
                row(&f.outputs[0], h, t).iter().all(|&v| v == 0.0),
                "row {b} step {t}"
            );
        }
        let want_dh0: Vec<f64> = ga.initial_states[0].iter().map(|&v| f64::from(v)).collect();
        close(
            &format!("row {b}: dh0"),
            &row(&g.initial_states[0], h, 0),
            &want_dh0,
        );
    }
}
