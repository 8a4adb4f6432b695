//! The JIT against the interpreter, on every example and on random cells.
//!
//! Tolerance: after every step, max |jit - reference| <= 1e-4 * max(1, max
//! |reference|), the maxima over every output and state value of the step (a
//! norm-wise relative error). The JIT computes in f32: a product of K terms
//! accumulates about K * 2^-24 relative rounding error (K <= 100 here: ~6e-6),
//! the activations are within 1e-7 (tests/vecmath.rs), and the recurrence carries
//! errors from step to step (20 steps at most). Norm-wise, because random cells
//! with unbounded gates can cancel large terms into a small value, whose f32
//! error is small against the terms but not against itself. With saturating
//! inputs (|x| up to 50) the products' terms are 50 times larger, and so is their
//! rounding error, which a near-zero pre-activation passes on unchanged: there the
//! tolerance scales with the input magnitude. 1e-4 is still tight:
//! a dropped bias, two gates swapped, or a wrong tail row each change values by
//! 1e-2 or more (see `mistakes_are_caught`).

mod common;

use cellc::fuzzing::{differential, Differential};
use cellc::interp::{self, ParamValues};
use cellc::{Cell, Isa, Options, Weights};

const TOLERANCE: f64 = 1e-4;

/// The data of one comparison.
#[derive(Clone, Copy)]
struct Case {
    batch: usize,
    steps: usize,
    seed: u64,
    input_scale: f32,
}

/// Runs `case.steps` steps through the JIT (with `weights`) and the interpreter
/// (with `reference` parameters, the same weights unless a test perturbs them).
fn compare_with(
    cell: &Cell,
    opts: &Options,
    weights: &Weights,
    reference: &ParamValues,
    case: Case,
) -> Differential {
    let ir = cell.ir().unwrap();
    let kernel = cell
        .compile(weights, opts)
        .unwrap_or_else(|e| panic!("{e}"));
    differential(
        &kernel,
        &ir,
        reference,
        case.batch,
        case.steps,
        case.seed,
        case.input_scale,
    )
}

fn compare_run(
    cell: &Cell,
    opts: &Options,
    batch: usize,
    steps: usize,
    seed: u64,
    input_scale: f32,
) -> Differential {
    let ir = cell.ir().unwrap();
    let weights = Weights::random(&ir, seed);
    let reference = cellc::interp::ParamValues::from_f32(&weights.resolve(&ir).unwrap());
    let case = Case {
        batch,
        steps,
        seed,
        input_scale,
    };
    compare_with(cell, opts, &weights, &reference, case)
}

#[test]
fn examples_match_the_interpreter() {
    let mut case = 0;
    for path in common::examples() {
        for (x, h) in [(1, 1), (3, 17), (8, 8), (33, 16), (17, 33)] {
            let cell = common::sized(&path, x, h);
            for batch in [1, 3, 8, 17] {
                for optimize in [true, false] {
                    case += 1;
                    let scale = if case % 2 == 0 { 50.0 } else { 1.0 };
                    let opts = Options {
                        optimize,
                        ..Options::default()
                    };
                    let err = compare_run(&cell, &opts, batch, 5, case, scale).worst;
                    assert!(
                        err < TOLERANCE * scale as f64,
                        "{} x={x} h={h} batch={batch} optimize={optimize} |x|<={scale}: error {err:e}",
                        path.display()
                    );
                }
            }
        }
    }
}

#[test]
fn large_batches() {
    let path = common::examples()
        .into_iter()
        .find(|p| common::stem(p) == "gru")
        .unwrap();
    let cell = common::sized(&path, 16, 24);
    for batch in [64, 1000] {
        let err = compare_run(&cell, &Options::default(), batch, 2, 9, 1.0).worst;
        assert!(err < TOLERANCE, "batch {batch}: {err:e}");
    }
}

/// The tolerance is tight: a dropped bias, two swapped gates, and a perturbed
/// weight in the tail rows all show up as errors far above it.
#[test]
fn mistakes_are_caught() {
    let path = common::examples()
        .into_iter()
        .find(|p| common::stem(p) == "lstm")
        .unwrap();
    let cell = common::sized(&path, 5, 17);
    let ir = cell.ir().unwrap();
    let weights = Weights::random(&ir, 3);
    let good = cellc::interp::ParamValues::from_f32(&weights.resolve(&ir).unwrap());
    let idx = |name: &str| ir.params.iter().position(|p| p.name == name).unwrap();
    let mut mistakes: Vec<(&str, ParamValues)> = Vec::new();
    let mut dropped = good.clone();
    dropped.0[idx("b_hf")].iter_mut().for_each(|v| *v = 0.0);
    mistakes.push(("dropped bias b_hf", dropped));
    let mut swapped = good.clone();
    swapped.0.swap(idx("W_ii"), idx("W_if"));
    mistakes.push(("gates i and f swapped", swapped));
    let mut tail = good.clone();
    // Row 16 is the last row of H = 17: alone in the last tile of 4 lanes. (With
    // these weights its g gate is near saturation at +1: push it the other way.)
    tail.0[idx("b_hg")][16] -= 3.0;
    mistakes.push(("tail row changed", tail));
    let opts = Options::default();
    let case = Case {
        batch: 3,
        steps: 4,
        seed: 3,
        input_scale: 1.0,
    };
    assert!(compare_with(&cell, &opts, &weights, &good, case).worst < TOLERANCE);
    for (what, reference) in mistakes {
        let err = compare_with(&cell, &opts, &weights, &reference, case).worst;
        assert!(
            err > 10.0 * TOLERANCE,
            "{what}: error {err:e} is too small to notice"
        );
    }
}

mod random {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

        /// Random cells, sizes (1, 3, 17, 33, multiples of 8...), batches 1..17,
        /// saturating inputs, sequences of 1..20 steps; fused and unfused; every
        /// plan on 1 and 2 threads; stepped and run (`fuzzing::differential`).
        #[test]
        fn random_cells_match_the_interpreter(
            seed in any::<u64>(),
            x in prop::sample::select(vec![1u64, 3, 4, 8, 17, 33]),
            h in prop::sample::select(vec![1u64, 3, 8, 16, 17, 33]),
            batch in 1usize..18,
            steps in 1usize..21,
            saturating in any::<bool>(),
            optimize in any::<bool>(),
            plan in prop::sample::select(cellc::Variant::ALL.to_vec()),
            threads in 1usize..3,
        ) {
            let text = cellc::gen::random_cell(seed);
            let cell = Cell::from_source("random.rnn", &text).unwrap().dims(&[("X", x), ("H", h)]).unwrap();
            let opts = Options { optimize, threads: Some(threads), plan: Some(plan), isa: None, precision: None };
            let scale = if saturating { 50.0 } else { 1.0 };
            let run = compare_run(&cell, &opts, batch, steps, seed, scale);
            // Beyond the fixed tolerance, what the cell itself makes of f32
            // roundings (a random cell can be chaotic): a real mistake is far
            // above both.
            let bound = TOLERANCE * scale as f64 + 30.0 * run.sensitivity;
            prop_assert!(run.worst < bound, "error {:e} (sensitivity {:e})\n{}", run.worst, run.sensitivity, text);
        }
    }
}

/// Runs a sequence under `opts`, with one `run_with` for the whole of it or one
/// `step_inputs` call per step, and returns every output of every step and the
/// final states.
fn run_sequence(
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
fn reference_sequence(
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

fn norm_error(got: &[f32], want: &[f64]) -> f64 {
    let norm = want.iter().fold(1.0f64, |m, w| m.max(w.abs()));
    got.iter()
        .zip(want)
        .fold(0.0f64, |m, (g, w)| m.max((*g as f64 - w).abs() / norm))
}

/// Every plan (streaming, hoisted input projection, gemm products, both) on 1 to
/// 3 threads computes what the interpreter computes.
#[test]
fn every_plan_and_thread_count_matches_the_interpreter() {
    use cellc::Variant;
    let mut cases: Vec<(String, Cell)> = Vec::new();
    for path in common::examples() {
        cases.push((common::stem(&path), common::sized(&path, 5, 17)));
    }
    for seed in [3u64, 17, 99] {
        let text = cellc::gen::random_cell(seed);
        let cell = Cell::from_source("random.rnn", &text)
            .unwrap()
            .dims(&[("X", 9), ("H", 70)])
            .unwrap();
        cases.push((format!("random {seed}"), cell));
    }
    for (name, cell) in &cases {
        let weights = Weights::random(&cell.ir().unwrap(), 5);
        let (want_y, want_s) = reference_sequence(cell, &weights, 3, 7, 11);
        for plan in Variant::ALL {
            for threads in [1, 2, 3] {
                for optimize in [true, false] {
                    let opts = Options {
                        optimize,
                        threads: Some(threads),
                        plan: Some(plan),
                        isa: None,
                        precision: None,
                    };
                    let (ys, finals) = run_sequence(cell, &weights, &opts, 3, 7, 11, false);
                    for (g, w) in ys.iter().zip(&want_y).chain(finals.iter().zip(&want_s)) {
                        let err = norm_error(g, w);
                        assert!(
                            err < TOLERANCE,
                            "{name}: plan {} threads {threads} optimize {optimize}: error {err:e}",
                            plan.name()
                        );
                    }
                }
            }
        }
    }
}

/// One `step` call at a time runs the plans that hoist nothing (streaming and
/// `gemm`, which a large batch picks): asked for any plan, on 1 and 2 threads,
/// stepping computes what the interpreter computes.
#[test]
fn every_plan_stepped_one_call_at_a_time_matches_the_interpreter() {
    use cellc::Variant;
    for path in common::examples() {
        let name = common::stem(&path);
        let cell = common::sized(&path, 6, 21);
        let weights = Weights::random(&cell.ir().unwrap(), 8);
        let (want_y, want_s) = reference_sequence(&cell, &weights, 5, 4, 13);
        let plans = Variant::ALL.into_iter().map(Some).chain([None]);
        for plan in plans {
            for threads in [1, 2] {
                let opts = Options {
                    threads: Some(threads),
                    plan,
                    ..Options::default()
                };
                let (ys, finals) = run_sequence(&cell, &weights, &opts, 5, 4, 13, true);
                for (g, w) in ys.iter().zip(&want_y).chain(finals.iter().zip(&want_s)) {
                    let err = norm_error(g, w);
                    assert!(
                        err < TOLERANCE,
                        "{name}: stepping with plan {plan:?} on {threads} threads: error {err:e}"
                    );
                }
            }
        }
    }
}

/// The thread count changes nothing, bit for bit: each output is computed by one
/// worker, in a fixed order. The same with narrow weights (bf16, int8).
#[test]
fn results_do_not_depend_on_the_thread_count() {
    use cellc::ir::Precision;
    use cellc::Variant;
    // layernorm_lstm: reductions, which threads split by whole reductions.
    for (name, precision) in [
        ("lstm", None),
        ("gru", None),
        ("layernorm_lstm", None),
        ("lstm", Some(Precision::Bf16)),
        ("gru", Some(Precision::Int8)),
    ] {
        let path = common::examples()
            .into_iter()
            .find(|p| common::stem(p) == name)
            .unwrap();
        let cell = common::sized(&path, 24, 200);
        let weights = Weights::random(&cell.ir().unwrap(), 2);
        // Batch 1: short tiles, whose units are 64 rows on 1, 2 and 4
        // threads and 32 on 3.
        for (plan, batch) in Variant::ALL.into_iter().flat_map(|p| [(p, 5), (p, 1)]) {
            let one = run_sequence(
                &cell,
                &weights,
                &Options {
                    threads: Some(1),
                    plan: Some(plan),
                    precision,
                    ..Options::default()
                },
                batch,
                4,
                1,
                false,
            );
            for threads in [2, 3, 4] {
                let many = run_sequence(
                    &cell,
                    &weights,
                    &Options {
                        threads: Some(threads),
                        plan: Some(plan),
                        precision,
                        ..Options::default()
                    },
                    batch,
                    4,
                    1,
                    false,
                );
                assert_eq!(
                    one,
                    many,
                    "{name} ({precision:?}): plan {} at batch {batch} on {threads} threads differs from 1",
                    plan.name()
                );
            }
        }
        // And the streaming step on threads.
        let step = |threads| {
            let k = cell
                .compile(
                    &weights,
                    &Options {
                        threads: Some(threads),
                        precision,
                        ..Options::default()
                    },
                )
                .unwrap();
            let mut s = k.new_state(2).unwrap();
            for t in 0..5 {
                k.step(&[0.1 * t as f32; 2 * 24], &mut s).unwrap();
            }
            s.get("h").unwrap()
        };
        assert_eq!(step(1), step(2));
        assert_eq!(step(1), step(3));
    }
}

/// A random cell with its weights scaled up three times (seed found by a
/// search) amplifies f32 roundings about ten-thousandfold over 13 steps: its
/// error exceeds the fixed tolerance and is judged against that amplification
/// (the bound the property test uses), which stays tight for well-conditioned
/// cells.
#[test]
fn a_chaotic_random_cell_is_judged_by_its_sensitivity() {
    let seed = 160u64;
    let text = cellc::gen::random_cell(seed);
    let cell = Cell::from_source("random.rnn", &text)
        .unwrap()
        .dims(&[("X", 1), ("H", 16)])
        .unwrap();
    let ir = cell.ir().unwrap();
    let random = Weights::random(&ir, seed);
    let mut weights = Weights::new();
    for name in random.names() {
        let t = random.get(name).unwrap();
        let scaled = t.data.iter().map(|v| v * 3.0).collect();
        weights.insert(name, &t.shape, scaled).unwrap();
    }
    let reference = cellc::interp::ParamValues::from_f32(&weights.resolve(&ir).unwrap());
    let case = Case {
        batch: 5,
        steps: 13,
        seed,
        input_scale: 1.0,
    };
    for optimize in [false, true] {
        let opts = Options {
            optimize,
            ..Options::default()
        };
        let run = compare_with(&cell, &opts, &weights, &reference, case);
        assert!(
            run.sensitivity > 1e-4,
            "no longer chaotic: {:e}",
            run.sensitivity
        );
        assert!(
            run.worst > TOLERANCE,
            "within the fixed tolerance: {:e}",
            run.worst
        );
        assert!(
            run.worst < TOLERANCE + 30.0 * run.sensitivity,
            "{:e}",
            run.worst
        );
    }
    // A well-conditioned cell moves by about one rounding.
    let lstm = common::examples()
        .into_iter()
        .find(|p| common::stem(p) == "lstm")
        .unwrap();
    let run = compare_run(
        &common::sized(&lstm, 5, 17),
        &Options::default(),
        3,
        13,
        1,
        1.0,
    );
    assert!(run.sensitivity < 1e-6, "{:e}", run.sensitivity);
}

/// Outputs that no instruction computes: a state's old value (`y = h`), an input
/// read in place from the caller's buffer (`X` a multiple of the vector width),
/// a parameter; read with `output` after `step` and after `run`, on every plan
/// and on 1 and 2 threads.
#[test]
fn outputs_that_are_inputs_old_states_or_parameters() {
    let text = "
        dim X = 8
        dim H = 12
        input x: [X]
        state h: [H], k: [H]
        output old: [H], inp: [X], new: [H], bias: [H], kept: [H]
        param W: [H, H]
        param U: [H, X]
        param b: [H]
        h' = tanh(W @ h + U @ x + b)
        k' = k
        old = h
        inp = x
        new = h'
        bias = b
        kept = k'
    ";
    for (x, h) in [(8, 12), (3, 5)] {
        let cell = Cell::from_source("outputs.rnn", text)
            .unwrap()
            .dims(&[("X", x), ("H", h)])
            .unwrap();
        for plan in cellc::Variant::ALL {
            for threads in [1, 2] {
                for optimize in [true, false] {
                    let opts = Options {
                        optimize,
                        threads: Some(threads),
                        plan: Some(plan),
                        isa: None,
                        precision: None,
                    };
                    let d = compare_run(&cell, &opts, 3, 4, 7, 1.0);
                    assert!(
                        d.worst < TOLERANCE,
                        "x={x} h={h} plan {plan:?} threads {threads} optimize {optimize}: error {:e}",
                        d.worst
                    );
                }
            }
        }
    }
}

/// On two threads, a worker still copying a step's output must not race the
/// next step: a state's old value (`y = h`) is the buffer the next step writes.
/// (Workers copy outputs by element and compute them by tiles of 4: with H = 3
/// or 13 the two shares differ.) A long run gives the race many chances.
#[test]
fn outputs_of_old_states_do_not_race_the_next_step() {
    let text = "
        dim X = 8
        dim H = 3
        input x: [X]
        state h: [H]
        output old: [H]
        param W: [H, H]
        param U: [H, X]
        h' = tanh(W @ h + U @ x)
        old = h
    ";
    for (h, plan) in [3, 13]
        .into_iter()
        .flat_map(|h| [(h, cellc::Variant::Streaming), (h, cellc::Variant::Hoisted)])
    {
        let cell = Cell::from_source("race.rnn", text)
            .unwrap()
            .dims(&[("H", h)])
            .unwrap();
        let opts = Options {
            threads: Some(2),
            plan: Some(plan),
            ..Options::default()
        };
        let d = compare_run(&cell, &opts, 10, 2000, 5, 1.0);
        assert!(d.worst < TOLERANCE, "H={h} {plan:?}: error {:e}", d.worst);
    }
}

/// A scalar parameter (`[]`) loads from a 0-d tensor (as PyTorch saves one)
/// or a `[1]`, broadcasts, and a tensor of another shape is an error.
#[test]
fn scalar_parameters_load_and_broadcast() {
    let src = "dim H = 5\ninput x: [H]\nstate h: [H]\nparam t: []\nparam u: [1]\nh' = tanh(x * t + h * u + mean(x))\n";
    let cell = Cell::from_source("scalar.rnn", src).unwrap();
    let x = [0.5f32, -1.0, 2.0, 0.25, -0.75];
    let mean = x.iter().sum::<f32>() / 5.0;
    for t_shape in [vec![], vec![1]] {
        let mut w = Weights::new();
        w.insert("t", &t_shape, vec![2.0]).unwrap();
        w.insert("u", &[], vec![-0.5]).unwrap();
        let kernel = cell.compile(&w, &Options::default()).unwrap();
        let mut state = kernel.new_state(1).unwrap();
        state.set("h", &[1.0; 5]).unwrap();
        kernel.step(&x, &mut state).unwrap();
        let h = state.get("h").unwrap();
        for (k, &xk) in x.iter().enumerate() {
            let want = (xk as f64 * 2.0 - 0.5 + mean as f64).tanh();
            assert!((h[k] as f64 - want).abs() < 1e-6, "{k}: {} vs {want}", h[k]);
        }
    }
    let mut w = Weights::new();
    w.insert("t", &[2], vec![2.0, 3.0]).unwrap();
    w.insert("u", &[1], vec![1.0]).unwrap();
    let err = cell
        .compile(&w, &Options::default())
        .unwrap_err()
        .to_string();
    assert!(err.contains("`t`") && err.contains("[2]"), "{err}");
}

/// Reductions where they are unusual: of a reduction, of a parameter, of an
/// input read in place, as a product's input, as an output and as a state of
/// length 1; on every plan, 1 and 2 threads, against the interpreter.
#[test]
fn reductions_in_unusual_places_match_the_interpreter() {
    let src = "dim X = 5, H = 7
input x: [X]
state h: [H], s: [1]
output m: [1], y: [H]
param W: [H, 1]
param p: [H]
param t: []
h' = tanh(W @ mean(h) + h * t + sum(p) * 0.1 - mean(mean(x)))
s' = s * 0.5 + mean(x * x)
m = sum(x)
y = h' * s'
";
    let cell = Cell::from_source("edges.rnn", src).unwrap();
    for plan in cellc::Variant::ALL {
        for threads in [1, 2] {
            for optimize in [true, false] {
                let opts = Options {
                    optimize,
                    threads: Some(threads),
                    plan: Some(plan),
                    isa: None,
                    precision: None,
                };
                for batch in [1, 5] {
                    let run = compare_run(&cell, &opts, batch, 6, 3, 1.0);
                    assert!(
                        run.worst < TOLERANCE,
                        "{} threads={threads} optimize={optimize} batch={batch}: {:e}",
                        plan.name(),
                        run.worst
                    );
                }
            }
        }
    }
}

/// A cell whose gates read three vectors (input, and two states of other
/// lengths): one product of three inputs per gate.
const THREE_INPUTS: &str = "cell three
dim X = 5, H = 19, S = 7
input x: [X]
state h: [H], s: [S]
output y: [H]
param W: [H, X]
param U: [H, H]
param V: [H, S]
param A: [S, X]
param B: [S, H]
param b: [H]
a = sigmoid(W @ x + U @ h + V @ s + b)
g = tanh(W @ x - U @ h + V @ s)
h' = a * g + (1 - a) * h
s' = tanh(A @ x + B @ h)
y = h'
";

/// The batched products' kernels (`Options::isa`): every one this host has
/// gives the same bits as the portable one on the `gemm` plans, on 1 and 2
/// threads, batches 1, 3, 7 and 65, sizes no multiple of 8 or 16 (X ≠ H), the
/// LSTM and a cell whose products have three inputs; and each matches the
/// interpreter. One the host lacks is an error that names what it has.
#[test]
#[allow(clippy::print_stderr)] // says which kernels the host let it test
fn every_product_kernel_gives_the_same_bits() {
    use cellc::{Isa, Variant};
    let path = common::examples()
        .into_iter()
        .find(|p| common::stem(p) == "lstm")
        .unwrap();
    // Rows not a multiple of the 16-row panels; batch around the 6-row tile.
    let cells = [
        common::sized(&path, 19, 37),
        Cell::from_source("three.rnn", THREE_INPUTS).unwrap(),
    ];
    let mut covered = Vec::new();
    for cell in &cells {
        let weights = Weights::random(&cell.ir().unwrap(), 4);
        for (i, plan) in [Variant::Gemm, Variant::GemmHoisted]
            .into_iter()
            .enumerate()
        {
            for threads in [1, 2] {
                let batch = [1, 3, 7, 65][(2 * i + threads - 1) % 4];
                let steps = 5;
                let run = |isa| {
                    let opts = Options {
                        threads: Some(threads),
                        plan: Some(plan),
                        isa: Some(isa),
                        precision: None,
                        ..Options::default()
                    };
                    run_sequence(cell, &weights, &opts, batch, steps, 2, false)
                };
                let portable = run(Isa::Scalar);
                let (ref_ys, _) = reference_sequence(cell, &weights, batch, steps, 2);
                for (got, want) in portable.0.iter().zip(&ref_ys) {
                    let err = got
                        .iter()
                        .zip(want)
                        .map(|(g, w)| (*g as f64 - w).abs())
                        .fold(0.0, f64::max);
                    assert!(err < TOLERANCE, "{} batch {batch}: {err:e}", plan.name());
                }
                for isa in Isa::ALL {
                    if !isa.available() {
                        let opts = Options {
                            isa: Some(isa),
                            precision: None,
                            ..Options::default()
                        };
                        let err = cell.compile(&weights, &opts).unwrap_err().to_string();
                        assert!(err.contains(isa.name()) && err.contains("scalar"), "{err}");
                        continue;
                    }
                    assert_eq!(
                        run(isa),
                        portable,
                        "{} {} threads={threads} batch={batch}",
                        isa.name(),
                        plan.name()
                    );
                    covered.push(isa.name());
                }
            }
        }
    }
    let covered: Vec<Isa> = Isa::ALL
        .into_iter()
        .filter(|i| covered.contains(&i.name()))
        .collect();
    common::check_isa_coverage("product kernels", &covered);
}

/// The region kernels (`Options::isa` avx2, avx512 and neon) compute what
/// the generated 128-bit code computes, to the bit: random cells (every
/// function of the language), sizes that are no multiple of 8 or 16, X ≠ H,
/// batches 1, 3, 7 and 65, saturating inputs with infinities and NaNs among
/// them, fused and unfused regions, on 1 and 2 threads. (NaN payloads are not
/// compared: the compilers may pick either operand's NaN.)
#[test]
#[allow(clippy::print_stderr)] // says which widths the host let it test
fn wide_regions_give_the_generated_bits() {
    use cellc::{Isa, Variant};
    let wide: Vec<Isa> = Isa::ALL
        .into_iter()
        .filter(|i| *i != Isa::Scalar && i.available())
        .collect();
    let run = |cell: &Cell, weights: &Weights, opts: &Options, batch: usize, seed: u64| {
        let kernel = cell
            .compile(weights, opts)
            .unwrap_or_else(|e| panic!("{e}"));
        let mut rng = cellc::gen::Rng(seed);
        let value = |rng: &mut cellc::gen::Rng| match rng.below(40) {
            0 => f32::INFINITY,
            1 => f32::NEG_INFINITY,
            2 => f32::NAN,
            3 => -0.0,
            _ => (rng.unit() * 30.0) as f32,
        };
        let mut state = kernel.new_state(batch).unwrap();
        for (s, name) in kernel.state_names().iter().enumerate() {
            let v: Vec<f32> = (0..batch * kernel.state_len(s))
                .map(|_| value(&mut rng))
                .collect();
            state.set(name, &v).unwrap();
        }
        let steps = 3;
        let xs: Vec<Vec<f32>> = (0..kernel.input_names().len())
            .map(|i| {
                (0..steps * batch * kernel.input_len(i))
                    .map(|_| value(&mut rng))
                    .collect()
            })
            .collect();
        let mut ys: Vec<Vec<f32>> = (0..kernel.output_names().len())
            .map(|o| vec![0.0; steps * batch * kernel.output_len(o)])
            .collect();
        let refs: Vec<&[f32]> = xs.iter().map(Vec::as_slice).collect();
        let mut outs: Vec<&mut [f32]> = ys.iter_mut().map(Vec::as_mut_slice).collect();
        kernel.run_with(&refs, &mut state, &mut outs).unwrap();
        for name in kernel.state_names() {
            ys.push(state.get(name).unwrap());
        }
        // One NaN for all.
        ys.into_iter()
            .map(|v| {
                v.iter()
                    .map(|x| if x.is_nan() { u32::MAX } else { x.to_bits() })
                    .collect::<Vec<u32>>()
            })
            .collect::<Vec<_>>()
    };
    let mut compared = 0;
    for seed in 0..24u64 {
        let text = cellc::gen::random_cell(seed);
        let (x, h) = [(3, 17), (8, 33), (5, 4), (19, 20)][seed as usize % 4];
        let cell = Cell::from_source("random.rnn", &text)
            .unwrap()
            .dims(&[("X", x), ("H", h)])
            .unwrap();
        let weights = Weights::random(&cell.ir().unwrap(), seed);
        let batch = [1, 3, 7, 65][(seed as usize / 4) % 4];
        for (optimize, plan, threads) in [
            (true, Variant::Gemm, 1),
            (false, Variant::Streaming, 2),
            (true, Variant::Streaming, 1),
        ] {
            let opts = |isa| Options {
                optimize,
                threads: Some(threads),
                plan: Some(plan),
                isa: Some(isa),
                precision: None,
            };
            let generated = run(&cell, &weights, &opts(Isa::Scalar), batch, seed);
            for &isa in &wide {
                let got = run(&cell, &weights, &opts(isa), batch, seed);
                assert!(
                    got == generated,
                    "{} differs from the generated code: seed {seed}, batch {batch}, optimize {optimize}, {} on {threads} threads\n{text}",
                    isa.name(),
                    plan.name()
                );
                compared += 1;
            }
        }
    }
    assert!(compared > 0 || wide.is_empty());
    let mut covered = wide.clone();
    covered.push(Isa::Scalar);
    common::check_isa_coverage("wide regions", &covered);
}

/// The cost model costs the kernels a kernel runs on: a forced `--isa
/// scalar` (the portable kernel, hundreds of times slower than a wide one)
/// does not pick the panel kernels' plans that the widest ISA picks.
#[test]
fn the_cost_model_costs_a_forced_isa() {
    let widest = Isa::detect();
    if widest == Isa::Scalar {
        return; // One kernel: nothing to tell apart.
    }
    let cell = common::sized(&common::example_path("lstm"), 256, 256);
    let weights = Weights::random(&cell.ir().unwrap(), 1);
    let choose = |isa| {
        let opts = Options {
            isa: Some(isa),
            threads: Some(1),
            ..Options::default()
        };
        cell.compile(&weights, &opts).unwrap().choice(16, 20)
    };
    let wide = choose(widest);
    let scalar = choose(Isa::Scalar);
    assert!(wide.variant.uses_gemm(), "{wide:?}");
    assert!(!scalar.variant.uses_gemm(), "{scalar:?}");
    let gemm = |isa| {
        let opts = Options {
            isa: Some(isa),
            threads: Some(1),
            plan: Some(cellc::Variant::Gemm),
            ..Options::default()
        };
        cell.compile(&weights, &opts)
            .unwrap()
            .choice(16, 20)
            .predicted_us
    };
    assert!(gemm(Isa::Scalar) > 20.0 * gemm(widest));
}
