//! Networks against an oracle that shares none of their running code: each
//! row alone, one `step` at a time, layer by layer and direction by direction,
//! its own length long (the reverse direction from its own last step). Every
//! schedule and thread count must give the same bits, and agree with the
//! oracle to float precision (the oracle steps one row at a time, whose plan
//! sums in another order than a sequence's).

mod common;

use cellc::network::{Layout, Network, Schedule};
use cellc::{Cell, Options};

const TOLERANCE: f64 = 2e-5;

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn unit(&mut self) -> f32 {
        (self.next() % 2_000_001) as f32 / 1_000_000.0 - 1.0
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

fn example(name: &str, dims: &[(&str, u64)]) -> Cell {
    common::cell_with(name.trim_end_matches(".rnn"), dims)
}

/// The oracle: outputs `[T, B, D*len]` and final states `[D*L, B, len]`.
fn oracle(
    net: &cellc::network::CompiledNetwork,
    layout: Layout,
    x: &[f32],
    steps: usize,
    batch: usize,
    lengths: &[usize],
    init: &[Vec<f32>],
) -> (Vec<f32>, Vec<Vec<f32>>) {
    let d_count = layout.directions();
    let k0 = net.kernel(0, 0).unwrap();
    let mut finals: Vec<Vec<f32>> = init.to_vec();
    let mut out_all = Vec::new();
    let mut input_len = k0.input_len(0);
    let mut layer_in: Vec<f32> = x.to_vec();
    for l in 0..layout.layers {
        let out_len = net.kernel(l, 0).unwrap().output_len(0);
        let mut layer_out = vec![0.0f32; steps * batch * d_count * out_len];
        for d in 0..d_count {
            let k = net.kernel(l, d).unwrap();
            for b in 0..batch {
                let mut state = k.new_state(1).unwrap();
                for (s, name) in k.state_names().iter().enumerate() {
                    let len = k.state_len(s);
                    let at = ((l * d_count + d) * batch + b) * len;
                    state.set(name, &init[s][at..at + len]).unwrap();
                }
                let n = lengths[b];
                for i in 0..n {
                    let t = if layout.runs()[d] { n - 1 - i } else { i };
                    let xt = &layer_in[(t * batch + b) * input_len..][..input_len];
                    k.step_inputs(&[xt], &mut state).unwrap();
                    let y = k.output(&state, &k.output_names()[0]).unwrap();
                    let at = ((t * batch + b) * d_count + d) * out_len;
                    layer_out[at..at + out_len].copy_from_slice(&y);
                }
                for (s, name) in k.state_names().iter().enumerate() {
                    let len = k.state_len(s);
                    let at = ((l * d_count + d) * batch + b) * len;
                    finals[s][at..at + len].copy_from_slice(&state.get(name).unwrap());
                }
            }
        }
        input_len = d_count * out_len;
        layer_in = layer_out.clone();
        out_all = layer_out;
    }
    (out_all, finals)
}

fn close(what: &str, got: &[f32], want: &[f32]) {
    assert_eq!(got.len(), want.len(), "{what}");
    let scale = want.iter().fold(1e-3f64, |m, v| m.max(v.abs() as f64));
    for (i, (a, b)) in got.iter().zip(want).enumerate() {
        let err = (*a as f64 - *b as f64).abs() / scale;
        assert!(
            err < TOLERANCE,
            "{what}[{i}]: {a} vs {b} (relative {err:e})"
        );
    }
}

#[test]
fn every_schedule_gives_the_oracles_numbers_and_the_same_bits() {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let cells = [
        ("lstm.rnn", vec![("X", 13), ("H", 21)]),
        ("gru.rnn", vec![("X", 13), ("H", 21)]),
        ("lstm_proj.rnn", vec![("X", 13), ("H", 21), ("P", 9)]),
    ];
    let layouts = [
        (1, true, false),
        (2, false, false),
        (3, true, false),
        (3, false, false),
        (2, false, true),
    ];
    for (file, dims) in &cells {
        let cell = example(file, dims);
        for &(layers, bidirectional, reverse) in &layouts {
            let layout = Layout {
                layers,
                bidirectional,
                reverse,
            };
            let net = Network::new(cell.clone(), layout).unwrap();
            // T = 0 (no step: empty outputs, final states the initial ones)
            // under every schedule too; the wavefront used to refuse it.
            for (batch, steps, ragged) in [
                (3, 9, false),
                (7, 9, true),
                (2, 13, true),
                (5, 4, false),
                (3, 0, false),
            ] {
                let what = format!("{file} {layout} batch {batch} T {steps} ragged {ragged}");
                let mut lengths: Vec<usize> = (0..batch)
                    .map(|_| if ragged { rng.below(steps + 1) } else { steps })
                    .collect();
                if ragged {
                    lengths[rng.below(batch)] = steps;
                    lengths[rng.below(batch)] = 0;
                }
                let mut outs = Vec::new();
                // 4 and 8: the two directions of a layer each on a pool of
                // their own (they once shared one and ran in turn).
                for threads in [1, 2, 3, 4, 8] {
                    let opts = Options {
                        threads: Some(threads),
                        ..Options::default()
                    };
                    let mut compiled = net.compile_random(5, &opts).unwrap();
                    let x: Vec<f32> = {
                        let mut r = Rng(11);
                        (0..steps * batch * compiled.input_lens()[0])
                            .map(|_| r.unit())
                            .collect()
                    };
                    let state_lens = compiled.state_lens();
                    let init: Vec<Vec<f32>> = (0..compiled.state_names().len())
                        .map(|s| {
                            let mut r = Rng(23 + s as u64);
                            (0..layout.directions() * layers * batch * state_lens[0][s])
                                .map(|_| r.unit() * 0.5)
                                .collect()
                        })
                        .collect();
                    let names: Vec<String> = compiled.state_names().to_vec();
                    let initial: Vec<(&str, &[f32])> = names
                        .iter()
                        .zip(&init)
                        .map(|(n, v)| (n.as_str(), v.as_slice()))
                        .collect();
                    let lens = ragged.then_some(lengths.as_slice());
                    if threads == 1 {
                        let run = compiled.run(&[&x], batch, lens, &initial).unwrap();
                        let (y, finals) =
                            oracle(&compiled, layout, &x, steps, batch, &lengths, &init);
                        close(&format!("{what}: y"), &run.outputs[0], &y);
                        for (s, f) in finals.iter().enumerate() {
                            close(&format!("{what}: state {s}"), &run.states[s], f);
                        }
                    }
                    for schedule in [None].into_iter().chain(Schedule::ALL.map(Some)) {
                        if compiled.force_schedule(schedule).is_err() {
                            continue;
                        }
                        let run = compiled.run(&[&x], batch, lens, &initial).unwrap();
                        outs.push((threads, schedule, run));
                    }
                }
                for (threads, schedule, run) in &outs[1..] {
                    assert!(
                        *run == outs[0].2,
                        "{what}: {threads} threads, {schedule:?} differ from 1 thread"
                    );
                }
            }
        }
    }
}

/// A compiled network keeps each kernel's last state for its next run
/// (`CompiledNetwork`'s spare states): runs one after the other, on other
/// inputs, initial states, batches and lengths (rows ending early, so that
/// the live rows change between segments), give the bits a network compiled
/// afresh gives each of them, on 1 and 2 threads.
#[test]
fn runs_one_after_another_give_a_fresh_networks_bits() {
    let cell = example("lstm.rnn", &[("X", 7), ("H", 19)]);
    let layout = Layout {
        layers: 2,
        bidirectional: true,
        reverse: false,
    };
    let net = Network::new(cell, layout).unwrap();
    let runs: [(usize, usize, Option<Vec<usize>>, u64); 5] = [
        (3, 8, None, 1),
        (3, 8, None, 2),
        (4, 8, Some(vec![8, 3, 0, 5]), 3),
        (3, 6, None, 4),
        (4, 8, Some(vec![2, 8, 8, 1]), 5),
    ];
    for threads in [1, 2] {
        let opts = Options {
            threads: Some(threads),
            ..Options::default()
        };
        let kept = net.compile_random(9, &opts).unwrap();
        for (batch, steps, lengths, seed) in &runs {
            let (batch, steps) = (*batch, *steps);
            let mut r = Rng(*seed);
            let x: Vec<f32> = (0..steps * batch * kept.input_lens()[0])
                .map(|_| r.unit())
                .collect();
            let state_lens = kept.state_lens();
            let init: Vec<Vec<f32>> = (0..kept.state_names().len())
                .map(|s| {
                    (0..layout.directions() * layout.layers * batch * state_lens[0][s])
                        .map(|_| r.unit() * 0.5)
                        .collect()
                })
                .collect();
            let names: Vec<String> = kept.state_names().to_vec();
            // Every other run from zero states (none given).
            let initial: Vec<(&str, &[f32])> = if seed % 2 == 0 {
                Vec::new()
            } else {
                names
                    .iter()
                    .map(String::as_str)
                    .zip(init.iter().map(Vec::as_slice))
                    .collect()
            };
            let lens = lengths.as_deref();
            let again = kept.run(&[&x], batch, lens, &initial).unwrap();
            let fresh = net.compile_random(9, &opts).unwrap();
            let first = fresh.run(&[&x], batch, lens, &initial).unwrap();
            assert!(
                again == first,
                "run {seed} (batch {batch}, T {steps}, lengths {lengths:?}) on {threads} threads"
            );
        }
    }
}

/// Stacking needs one input and one output; a network has 1 to 64 layers.
#[test]
fn networks_the_cell_cannot_make_are_refused() {
    let two_outputs = Cell::from_source(
        "two.rnn",
        "dim H = 4\ninput x: [H]\nstate h: [H]\noutput y: [H], z: [H]\nparam W: [H, H]\nh' = tanh(W @ h + x)\ny = h'\nz = h' * 2\n",
    )
    .unwrap();
    let layout = Layout {
        layers: 2,
        bidirectional: false,
        reverse: false,
    };
    let err = Network::new(two_outputs.clone(), layout)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("1 input and 2 outputs") && err.contains("stacking"),
        "{err}"
    );
    // One layer in both directions is fine with two outputs: each doubles.
    let both = Layout {
        layers: 1,
        bidirectional: true,
        reverse: false,
    };
    let net = Network::new(two_outputs, both).unwrap();
    let compiled = net.compile_random(1, &Options::default()).unwrap();
    assert_eq!(compiled.output_lens(), vec![8, 8]);
    let lstm = example("lstm.rnn", &[("X", 4), ("H", 4)]);
    for layers in [0, 65] {
        let err = Network::new(
            lstm.clone(),
            Layout {
                layers,
                bidirectional: false,
                reverse: false,
            },
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("1 to 64 layers"), "{err}");
    }
    // Short buffers and bad lengths are errors before anything runs.
    let net = Network::new(lstm, layout).unwrap();
    let compiled = net.compile_random(1, &Options::default()).unwrap();
    let x = vec![0.0; 3 * 2 * 4];
    let err = compiled
        .run(&[&x[1..]], 2, None, &[])
        .unwrap_err()
        .to_string();
    assert!(err.contains("whole number of steps"), "{err}");
    let err = compiled
        .run(&[&x], 2, Some(&[3, 4]), &[])
        .unwrap_err()
        .to_string();
    assert!(err.contains("row 1 4 steps"), "{err}");
    let err = compiled
        .run(&[&x], 2, Some(&[3]), &[])
        .unwrap_err()
        .to_string();
    assert!(err.contains("1 values for a batch of 2"), "{err}");
    let err = compiled
        .run(&[&x], 2, None, &[("h", &[0.0; 8])])
        .unwrap_err()
        .to_string();
    assert!(err.contains("expected 16 values ([2, 2, 4])"), "{err}");
    let err = compiled
        .run(&[&x], 2, None, &[("q", &[0.0; 16])])
        .unwrap_err()
        .to_string();
    assert!(err.contains("no state named `q`"), "{err}");
}

/// A cell's own tensor whose name ends like a layer's (`gate_l2`) is not a
/// third layer: only names whose layer 0 exists make a network.
#[test]
fn a_layer_suffix_without_layer_0_is_a_plain_name() {
    let cell = Cell::from_source(
        "gated.rnn",
        "dim H = 3\ninput x: [H]\nstate h: [H]\noutput y: [H]\nparam g: [H] = gate_l2\nh' = tanh(g * h + x)\ny = h'\n",
    )
    .unwrap();
    let mut weights = cellc::Weights::new();
    weights
        .insert("gate_l2", &[3], vec![0.5, -0.5, 0.25])
        .unwrap();
    let mut inputs = cellc::Weights::new();
    inputs
        .insert("x", &[2, 1, 3], vec![0.1, 0.2, 0.3, 0.4, 0.5, 0.6])
        .unwrap();
    let out = cellc::run::run(&cell, &weights, &inputs, &[], &Options::default()).unwrap();
    // Step 1 from h = 0: tanh(x); step 2: tanh(g * h + x).
    let h1: Vec<f32> = [0.1f32, 0.2, 0.3].iter().map(|v| v.tanh()).collect();
    let h2: Vec<f32> = [0.5f32, -0.5, 0.25]
        .iter()
        .zip(&h1)
        .zip([0.4f32, 0.5, 0.6])
        .map(|((g, h), x)| (g * h + x).tanh())
        .collect();
    close("y", &out.get("y").unwrap().data[3..], &h2);
    assert_eq!(out.get("h").unwrap().shape, vec![1, 3]);
}
