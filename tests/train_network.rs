//! Training networks (`Network::compile_training`): stacked, bidirectional
//! and reverse layers over rows of different lengths. The oracle is the
//! inference network (`CompiledNetwork::run`, checked against a row-by-row
//! stepping oracle in `tests/network.rs` and against PyTorch in the
//! conformance suite), which shares none of the trainer's composition: its
//! outputs must agree with the training forward pass, and the gradients
//! with central differences of its loss along random directions of every
//! tensor, of the inputs and of the initial states.
//!
//! Tolerance of a directional derivative: |analytic - difference| <= 2e-3 *
//! max(1, |analytic|). The loss is an f32 sum of a few hundred terms of
//! order 1 (rounding about 1e-5 after dividing by 2ε = 2e-2), and the
//! central difference's truncation is of order ε² = 1e-4; a wrong reversal,
//! direction or layer gives errors of order 1.

mod common;

use cellc::network::{Layout, Network, NetworkTrainer};
use cellc::{Options, Weights};
use common::Rng;

const EPS: f32 = 1e-2;
const TOLERANCE: f64 = 2e-3;

/// A PyTorch `nn.LSTM`/`nn.GRU`/`nn.RNN` state_dict of random values:
/// `gates` blocks of `h` rows per weight, `proj` > 0 for an LSTM with a
/// projection.
fn checkpoint(
    gates: usize,
    x: usize,
    h: usize,
    proj: usize,
    layout: Layout,
    rng: &mut Rng,
) -> Weights {
    let out = if proj > 0 { proj } else { h };
    let mut w = Weights::new();
    for l in 0..layout.layers {
        for &reverse in layout.runs() {
            let dir = if reverse { "_reverse" } else { "" };
            let input = if l == 0 { x } else { layout.directions() * out };
            let mut tensors = vec![
                ("weight_ih", vec![gates * h, input]),
                ("weight_hh", vec![gates * h, out]),
                ("bias_ih", vec![gates * h]),
                ("bias_hh", vec![gates * h]),
            ];
            if proj > 0 {
                tensors.push(("weight_hr", vec![proj, h]));
            }
            for (name, shape) in tensors {
                let n = shape.iter().product();
                let values = rng.vec(n, 0.6).into_iter().map(|v| v as f32).collect();
                w.insert(&format!("{name}_l{l}{dir}"), &shape, values)
                    .unwrap();
            }
        }
    }
    w
}

/// A network's problem: inputs, lengths, initial states and the adjoints
/// that define the loss `L = Σ <dy, y> + Σ <ds, s>`.
struct Problem {
    steps: usize,
    batch: usize,
    x: Vec<f32>,
    lengths: Option<Vec<usize>>,
    init: Vec<(String, Vec<f32>)>,
    dy: Vec<f32>,
    ds: Vec<Vec<f32>>,
}

impl Problem {
    fn initial(&self) -> Vec<(&str, &[f32])> {
        (self.init.iter())
            .map(|(n, v)| (n.as_str(), v.as_slice()))
            .collect()
    }

    /// The loss by the inference network, in f64 from its f32 results.
    fn loss(&self, net: &Network, w: &Weights, x: &[f32], init: &[(&str, &[f32])]) -> f64 {
        let compiled = net.compile(w, &Options::default()).unwrap();
        let run = (compiled.run(&[x], self.batch, self.lengths.as_deref(), init)).unwrap();
        let dot = |a: &[f32], b: &[f32]| -> f64 {
            a.iter()
                .zip(b)
                .map(|(&a, &b)| f64::from(a) * f64::from(b))
                .sum()
        };
        dot(&run.outputs[0], &self.dy)
            + (run.states.iter().zip(&self.ds))
                .map(|(s, d)| dot(s, d))
                .sum::<f64>()
    }
}

fn dot(a: &[f32], b: &[f32]) -> f64 {
    a.iter()
        .zip(b)
        .map(|(&a, &b)| f64::from(a) * f64::from(b))
        .sum()
}

fn agree(what: &str, analytic: f64, difference: f64) {
    let err = (analytic - difference).abs() / analytic.abs().max(1.0);
    assert!(
        err <= TOLERANCE,
        "{what}: analytic {analytic} vs central difference {difference} (relative {err:e})"
    );
}

fn along(v: &[f32], dir: &[f32], eps: f32) -> Vec<f32> {
    v.iter().zip(dir).map(|(a, d)| a + eps * d).collect()
}

/// The trainer's forward pass against the inference network and its
/// gradients against central differences of the inference network's loss.
fn check(
    what: &str,
    net: &Network,
    weights: &Weights,
    p: &Problem,
    rng: &mut Rng,
) -> NetworkTrainer {
    let trainer = net.compile_training(weights, &Options::default()).unwrap();
    let initial = p.initial();
    let fwd = (trainer.forward(&[&p.x], p.batch, p.lengths.as_deref(), &initial)).unwrap();
    let compiled = net.compile(weights, &Options::default()).unwrap();
    let run = (compiled.run(&[&p.x], p.batch, p.lengths.as_deref(), &initial)).unwrap();
    for (got, want) in fwd
        .outputs
        .iter()
        .chain(&fwd.states)
        .zip(run.outputs.iter().chain(&run.states))
    {
        assert_eq!(got.len(), want.len(), "{what}");
        for (i, (a, b)) in got.iter().zip(want).enumerate() {
            assert!(
                (a - b).abs() <= 1e-5 * b.abs().max(1.0),
                "{what}: forward [{i}] {a} vs {b}"
            );
        }
    }
    let ds: Vec<&[f32]> = p.ds.iter().map(Vec::as_slice).collect();
    let g = trainer.backward(&fwd.tape, &[&p.dy], &ds).unwrap();

    // Each tensor along a random direction.
    for t in &g.tensors {
        let dir: Vec<f32> = rng
            .vec(t.values.len(), 1.0)
            .iter()
            .map(|&v| v as f32)
            .collect();
        let base = weights.get(&t.name).unwrap();
        assert_eq!(base.shape, t.shape, "{what}: {}", t.name);
        let moved = |eps: f32| {
            let mut w = weights.clone();
            w.remove(&t.name);
            w.insert(&t.name, &base.shape, along(&base.data, &dir, eps))
                .unwrap();
            p.loss(net, &w, &p.x, &initial)
        };
        let diff = (moved(EPS) - moved(-EPS)) / (2.0 * f64::from(EPS));
        agree(&format!("{what}: {}", t.name), dot(&t.values, &dir), diff);
    }
    // The inputs (past a row's length, nothing reads them: their adjoint
    // must be zero, and a difference along them is zero).
    let dir: Vec<f32> = rng.vec(p.x.len(), 1.0).iter().map(|&v| v as f32).collect();
    let diff = (p.loss(net, weights, &along(&p.x, &dir, EPS), &initial)
        - p.loss(net, weights, &along(&p.x, &dir, -EPS), &initial))
        / (2.0 * f64::from(EPS));
    agree(&format!("{what}: inputs"), dot(&g.inputs[0], &dir), diff);
    if let Some(lens) = &p.lengths {
        let len = p.x.len() / (p.steps * p.batch);
        for (b, &n) in lens.iter().enumerate() {
            for t in n..p.steps {
                let at = (t * p.batch + b) * len;
                assert!(
                    g.inputs[0][at..at + len].iter().all(|&v| v == 0.0),
                    "{what}: the adjoint of row {b}'s input past its length {n}, at step {t}"
                );
            }
        }
    }
    // Each initial state.
    for (s, (name, h0)) in p.init.iter().enumerate() {
        let dir: Vec<f32> = rng.vec(h0.len(), 1.0).iter().map(|&v| v as f32).collect();
        let with = |eps: f32| {
            let moved = along(h0, &dir, eps);
            let mut init = initial.clone();
            init[s] = (name.as_str(), &moved);
            p.loss(net, weights, &p.x, &init)
        };
        let diff = (with(EPS) - with(-EPS)) / (2.0 * f64::from(EPS));
        agree(
            &format!("{what}: initial {name}"),
            dot(&g.initial_states[s], &dir),
            diff,
        );
    }
    trainer
}

/// A random problem for `trainer`'s network.
fn problem(
    trainer: &NetworkTrainer,
    steps: usize,
    batch: usize,
    ragged: bool,
    rng: &mut Rng,
) -> Problem {
    let first = trainer.trainer(0, 0).unwrap().ir();
    let last = trainer
        .trainer(trainer.layout().layers - 1, 0)
        .unwrap()
        .ir();
    let d = trainer.layout().directions();
    let mut v = |n: usize, scale: f64| -> Vec<f32> {
        rng.vec(n, scale).into_iter().map(|x| x as f32).collect()
    };
    let x = v(steps * batch * first.inputs[0].len, 1.0);
    let dy = v(steps * batch * d * last.outputs[0].len, 1.0);
    let per_layer = |s: usize| -> usize {
        (0..trainer.layout().layers)
            .map(|l| trainer.trainer(l, 0).unwrap().ir().states[s].len)
            .sum::<usize>()
            * d
            * batch
    };
    let init = (first.states.iter().enumerate())
        .map(|(s, p)| (p.name.clone(), v(per_layer(s), 0.5)))
        .collect();
    let ds = (0..first.states.len())
        .map(|s| v(per_layer(s), 1.0))
        .collect();
    // Lengths 0, full and between, longest not first.
    let lengths = ragged.then(|| {
        (0..batch)
            .map(|b| [steps - 2, 0, steps, 1][b % 4])
            .collect()
    });
    Problem {
        steps,
        batch,
        x,
        lengths,
        init,
        dy,
        ds,
    }
}

#[test]
fn gradients_are_those_of_the_inference_network() {
    let mut rng = Rng(0x7261_696e);
    let cells = [
        ("lstm", 4, 0),
        ("gru", 3, 0),
        ("rnn_tanh", 1, 0),
        ("lstm_proj", 4, 3),
    ];
    let layouts = [(1, false, false), (2, true, false), (2, false, true)];
    for (name, gates, proj) in cells {
        for (layers, bidirectional, reverse) in layouts {
            for ragged in [false, true] {
                let layout = Layout {
                    layers,
                    bidirectional,
                    reverse,
                };
                let what = format!("{name} {layout} ragged {ragged}");
                let weights = checkpoint(gates, 3, 4, proj, layout, &mut rng);
                let net = Network::new(common::cell(name), layout).unwrap();
                let trainer = net.compile_training(&weights, &Options::default()).unwrap();
                let p = problem(&trainer, 5, 4, ragged, &mut rng);
                check(&what, &net, &weights, &p, &mut rng);
            }
        }
    }
}

/// A module made with `bias=False` saves no biases: the network runs with
/// zero biases and trains the tensors it has.
#[test]
fn a_checkpoint_without_biases_trains() {
    let mut rng = Rng(41);
    let layout = Layout {
        layers: 2,
        bidirectional: true,
        reverse: false,
    };
    let mut weights = checkpoint(3, 3, 4, 0, layout, &mut rng);
    let biases: Vec<String> = weights
        .names()
        .filter(|n| n.starts_with("bias"))
        .map(String::from)
        .collect();
    for b in &biases {
        weights.remove(b);
    }
    let net = Network::new(common::cell("gru"), layout).unwrap();
    let trainer = net.compile_training(&weights, &Options::default()).unwrap();
    let p = problem(&trainer, 5, 4, true, &mut rng);
    let trainer = check("gru without biases", &net, &weights, &p, &mut rng);
    let names: Vec<&str> = trainer
        .tensor_shapes()
        .iter()
        .map(|(n, _)| n.as_str())
        .collect();
    assert!(names.iter().all(|n| !n.starts_with("bias")), "{names:?}");
}

#[test]
fn results_do_not_depend_on_the_thread_count() {
    let mut rng = Rng(17);
    let layout = Layout {
        layers: 2,
        bidirectional: true,
        reverse: false,
    };
    let weights = checkpoint(4, 24, 40, 0, layout, &mut rng);
    let net = Network::new(common::cell("lstm"), layout).unwrap();
    let mut seen = Vec::new();
    for threads in [1, 2, 3] {
        let opts = Options {
            threads: Some(threads),
            ..Options::default()
        };
        let trainer = net.compile_training(&weights, &opts).unwrap();
        for ragged in [false, true] {
            let p = problem(&trainer, 7, 9, ragged, &mut Rng(5));
            let fwd =
                (trainer.forward(&[&p.x], p.batch, p.lengths.as_deref(), &p.initial())).unwrap();
            let ds: Vec<&[f32]> = p.ds.iter().map(Vec::as_slice).collect();
            let g = trainer.backward(&fwd.tape, &[&p.dy], &ds).unwrap();
            seen.push((threads, ragged, fwd.outputs, g));
        }
    }
    for (threads, ragged, y, g) in &seen[2..] {
        let (_, _, y0, g0) = &seen[usize::from(*ragged)];
        assert!(
            y == y0 && g == g0,
            "{threads} threads (ragged {ragged}) differ from 1"
        );
    }
}

#[test]
fn set_weights_is_compiling_again() {
    let mut rng = Rng(99);
    let layout = Layout {
        layers: 2,
        bidirectional: true,
        reverse: false,
    };
    let net = Network::new(common::cell("gru"), layout).unwrap();
    let first = checkpoint(3, 3, 4, 0, layout, &mut rng);
    let second = checkpoint(3, 3, 4, 0, layout, &mut rng);
    let mut trainer = net.compile_training(&first, &Options::default()).unwrap();
    let fresh = net.compile_training(&second, &Options::default()).unwrap();
    for ragged in [true, false] {
        let p = problem(&fresh, 6, 4, ragged, &mut rng);
        let lens = p.lengths.as_deref();
        let old = trainer
            .forward(&[&p.x], p.batch, lens, &p.initial())
            .unwrap();
        trainer.set_weights(&second).unwrap();
        let ds: Vec<&[f32]> = p.ds.iter().map(Vec::as_slice).collect();
        let e = trainer.backward(&old.tape, &[&p.dy], &ds).unwrap_err();
        assert!(e.to_string().contains("before its"), "{e}");
        let a = trainer
            .forward(&[&p.x], p.batch, lens, &p.initial())
            .unwrap();
        let b = fresh.forward(&[&p.x], p.batch, lens, &p.initial()).unwrap();
        assert_eq!(a.outputs, b.outputs);
        let ga = trainer.backward(&a.tape, &[&p.dy], &ds).unwrap();
        let gb = fresh.backward(&b.tape, &[&p.dy], &ds).unwrap();
        assert_eq!(ga, gb);
        trainer.set_weights(&first).unwrap();
    }
    // Other sizes are refused, and the trainer still works.
    let other = checkpoint(3, 5, 4, 0, layout, &mut rng);
    let e = trainer.set_weights(&other).unwrap_err();
    assert!(e.to_string().contains("compile it again"), "{e}");
    let p = problem(&trainer, 3, 2, false, &mut rng);
    trainer
        .forward(&[&p.x], p.batch, None, &p.initial())
        .unwrap();
}

#[test]
fn misuse_is_refused() {
    let mut rng = Rng(3);
    let layout = Layout {
        layers: 2,
        bidirectional: false,
        reverse: false,
    };
    let net = Network::new(common::cell("lstm"), layout).unwrap();
    let weights = checkpoint(4, 3, 4, 0, layout, &mut rng);
    let a = net.compile_training(&weights, &Options::default()).unwrap();
    let b = net.compile_training(&weights, &Options::default()).unwrap();
    let p = problem(&a, 4, 2, false, &mut rng);
    let fwd = a.forward(&[&p.x], p.batch, None, &p.initial()).unwrap();
    let ds: Vec<&[f32]> = p.ds.iter().map(Vec::as_slice).collect();
    let message = |r: cellc::Result<cellc::network::NetworkGradients>| r.unwrap_err().to_string();
    assert!(message(b.backward(&fwd.tape, &[&p.dy], &ds)).contains("another"));
    assert!(message(a.backward(&fwd.tape, &[&p.dy[1..]], &ds)).contains("expected"));
    assert!(message(a.backward(&fwd.tape, &[], &ds)).contains("output adjoints"));
    assert!(message(a.backward(&fwd.tape, &[&p.dy], &ds[..1])).contains("state adjoints"));
    let short = &ds[1][1..];
    assert!(message(a.backward(&fwd.tape, &[&p.dy], &[ds[0], short])).contains("final state `c`"));
    // A tape of another layout (one layer) is refused, not indexed.
    let one = Network::new(common::cell("lstm"), Layout::SINGLE).unwrap();
    let single = checkpoint(
        4,
        3,
        4,
        0,
        Layout {
            layers: 1,
            ..layout
        },
        &mut rng,
    );
    let c = one.compile_training(&single, &Options::default()).unwrap();
    let q = problem(&c, 4, 2, false, &mut rng);
    let other = c.forward(&[&q.x], q.batch, None, &q.initial()).unwrap();
    assert!(message(a.backward(&other.tape, &[&p.dy], &ds)).contains("another"));
    // Inputs and lengths as the inference network checks them.
    let fwd_err =
        |x: &[f32], lens: Option<&[usize]>| a.forward(&[x], 2, lens, &[]).unwrap_err().to_string();
    assert!(fwd_err(&p.x[1..], None).contains("whole number of steps"));
    assert!(fwd_err(&p.x, Some(&[1])).contains("`lengths`"));
    assert!(fwd_err(&p.x, Some(&[9, 1])).contains("`lengths`"));
    let e = a
        .forward(&[&p.x], 2, None, &[("h", &[0.0; 3])])
        .unwrap_err();
    assert!(e.to_string().contains("initial state `h`"), "{e}");
}
