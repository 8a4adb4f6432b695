//! The reference interpreter against values worked out by hand: a tiny LSTM and
//! a tiny GRU (X = H = 2) whose weights are chosen so that every pre-activation
//! is a short sum written out below. These numbers do not come from cellc.

mod common;

use cellc::interp::{self, ParamValues, State};

fn sig(x: f64) -> f64 {
    1.0 / (1.0 + (-x).exp())
}

fn params(cell: &cellc::ir::Cell, named: &[(&str, &[f64])]) -> ParamValues {
    ParamValues(
        cell.params
            .iter()
            .map(|p| {
                named
                    .iter()
                    .find(|(n, _)| *n == p.name)
                    .unwrap_or_else(|| panic!("no value for {}", p.name))
                    .1
                    .to_vec()
            })
            .collect(),
    )
}

fn example(name: &str) -> cellc::ir::Cell {
    common::cell_with(name, &[("X", 2), ("H", 2)]).ir().unwrap()
}

fn assert_close(got: &[f64], want: &[f64]) {
    assert_eq!(got.len(), want.len());
    for (g, w) in got.iter().zip(want) {
        assert!((g - w).abs() < 1e-12, "got {got:?}, want {want:?}");
    }
}

#[test]
fn tiny_lstm_by_hand() {
    let cell = example("lstm");
    let p = params(
        &cell,
        &[
            ("W_ii", &[1.0, 0.0, 0.0, 1.0]),
            ("W_if", &[0.5, 0.5, 0.0, 1.0]),
            ("W_ig", &[1.0, 1.0, 1.0, -1.0]),
            ("W_io", &[0.0, 1.0, 1.0, 0.0]),
            ("W_hi", &[2.0, 0.0, 0.0, 2.0]),
            ("W_hf", &[1.0, 1.0, 1.0, 1.0]),
            ("W_hg", &[0.0, 2.0, 2.0, 0.0]),
            ("W_ho", &[1.0, 0.0, 0.0, -1.0]),
            ("b_ii", &[0.1, 0.2]),
            ("b_if", &[0.3, 0.4]),
            ("b_ig", &[-0.1, -0.2]),
            ("b_io", &[0.0, 0.5]),
            ("b_hi", &[0.1, 0.1]),
            ("b_hf", &[-0.3, 0.0]),
            ("b_hg", &[0.1, 0.0]),
            ("b_ho", &[0.5, 0.0]),
        ],
    );
    // Batch row 0: x = [1, -1], h = [0.5, -0.5], c = [0.2, 0.3].
    // Batch row 1: everything zero, so only the biases act.
    let x = vec![1.0, -1.0, 0.0, 0.0];
    let mut state = State {
        batch: 2,
        values: vec![vec![0.5, -0.5, 0.0, 0.0], vec![0.2, 0.3, 0.0, 0.0]],
    };
    let out = interp::step(&cell, &p, &[x], &mut state).unwrap();

    // Row 0. W_ii x = [1, -1], W_hi h = [1, -1]  -> i = sig([2.2, -1.7])
    //         W_if x = [0, -1], W_hf h = [0, 0]   -> f = sig([0.0, -0.6])
    //         W_ig x = [0, 2],  W_hg h = [-1, 1]  -> g = tanh([-1.0, 2.8])
    //         W_io x = [-1, 1], W_ho h = [0.5, 0.5] -> o = sig([0.0, 2.0])
    let c0 = [
        sig(0.0) * 0.2 + sig(2.2) * (-1.0f64).tanh(),
        sig(-0.6) * 0.3 + sig(-1.7) * 2.8f64.tanh(),
    ];
    let h0 = [sig(0.0) * c0[0].tanh(), sig(2.0) * c0[1].tanh()];
    // Row 1: pre-activations are the bias sums i = [0.2, 0.3], f = [0, 0.4],
    // g = [0, -0.2], o = [0.5, 0.5]; c = 0, so c' = i * g.
    let c1 = [sig(0.2) * 0.0f64.tanh(), sig(0.3) * (-0.2f64).tanh()];
    let h1 = [sig(0.5) * c1[0].tanh(), sig(0.5) * c1[1].tanh()];

    assert_close(&state.values[1], &[c0[0], c0[1], c1[0], c1[1]]);
    assert_close(&state.values[0], &[h0[0], h0[1], h1[0], h1[1]]);
    assert_close(&out[0], &state.values[0]);
}

#[test]
fn tiny_gru_by_hand() {
    let cell = example("gru");
    let p = params(
        &cell,
        &[
            ("W_ir", &[1.0, 0.0, 0.0, 1.0]),
            ("W_iz", &[0.0, 1.0, 1.0, 0.0]),
            ("W_in", &[1.0, 1.0, 1.0, -1.0]),
            ("W_hr", &[2.0, 0.0, 0.0, 2.0]),
            ("W_hz", &[1.0, 1.0, 1.0, 1.0]),
            ("W_hn", &[0.0, 2.0, 2.0, 0.0]),
            ("b_ir", &[0.1, 0.2]),
            ("b_iz", &[0.3, 0.4]),
            ("b_in", &[-0.1, -0.2]),
            ("b_hr", &[0.1, 0.1]),
            ("b_hz", &[-0.3, 0.0]),
            ("b_hn", &[0.1, 0.0]),
        ],
    );
    let mut state = State {
        batch: 1,
        values: vec![vec![0.5, -0.5]],
    };
    let out = interp::step(&cell, &p, &[vec![1.0, -1.0]], &mut state).unwrap();
    // W_ir x = [1, -1], W_hr h = [1, -1]   -> r = sig([2.2, -1.7])
    // W_iz x = [-1, 1], W_hz h = [0, 0]    -> z = sig([-1.0, 1.4])
    // W_in x = [0, 2],  W_hn h = [-1, 1]   -> n = tanh([0 - 0.1 + r0 * (-1 + 0.1),
    //                                                   2 - 0.2 + r1 * (1 + 0)])
    let r = [sig(2.2), sig(-1.7)];
    let z = [sig(-1.0), sig(1.4)];
    let n = [(-0.1 + r[0] * -0.9f64).tanh(), (1.8 + r[1] * 1.0).tanh()];
    let h = [
        (1.0 - z[0]) * n[0] + z[0] * 0.5,
        (1.0 - z[1]) * n[1] + z[1] * -0.5,
    ];
    assert_close(&state.values[0], &h);
    assert_close(&out[0], &h);

    // A second step reads the new state: h'' from h' with x = 0.
    let out2 = interp::step(&cell, &p, &[vec![0.0, 0.0]], &mut state).unwrap();
    let r2 = [sig(2.0 * h[0] + 0.2), sig(2.0 * h[1] + 0.3)];
    let z2 = [sig(h[0] + h[1]), sig(0.4 + h[0] + h[1])];
    let n2 = [
        (-0.1 + r2[0] * (2.0 * h[1] + 0.1)).tanh(),
        (-0.2 + r2[1] * (2.0 * h[0])).tanh(),
    ];
    let h2 = [
        (1.0 - z2[0]) * n2[0] + z2[0] * h[0],
        (1.0 - z2[1]) * n2[1] + z2[1] * h[1],
    ];
    assert_close(&out2[0], &h2);
}

#[test]
fn interpreter_checks_lengths() {
    let cell = example("gru");
    let mut rng = common::Rng(1);
    let p = common::random_params(&cell, &mut rng);
    let mut state = State::zeros(&cell, 3).unwrap();
    // Input of the wrong length.
    let err = interp::step(&cell, &p, &[vec![0.0; 5]], &mut state).unwrap_err();
    assert!(
        err.0.contains("input `x` has 5 values, expected 6"),
        "{err}"
    );
    // Missing parameter.
    let mut short = p.clone();
    short.0.pop();
    assert!(interp::step(&cell, &short, &[vec![0.0; 6]], &mut state).is_err());
    // A sequence runs step after step.
    let xs: Vec<Vec<Vec<f64>>> = (0..4).map(|_| vec![rng.vec(6, 1.0)]).collect();
    let outs = interp::run(&cell, &p, &xs, &mut state).unwrap();
    assert_eq!(outs.len(), 4);
    assert_eq!(outs[3][0], state.values[0]);
}
