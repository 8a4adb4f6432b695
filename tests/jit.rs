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

use common::sequences::{norm_error, reference_sequence, run_sequence, TOLERANCE};

use cellc::fuzzing::{differential, Differential};
use cellc::interp::ParamValues;
use cellc::{Cell, Options, Weights};

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
            let opts = Options { optimize, threads: Some(threads), plan: Some(plan), isa: None, precision: None, compute: cellc::Compute::F32 };
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
                        compute: cellc::Compute::F32,
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
                        compute: cellc::Compute::F32,
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
                    compute: cellc::Compute::F32,
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
