//! `Compute::Bf16` (`--compute bf16`): bf16 operands, float32 sums. The JIT
//! against the interpreter given the same bf16 weights and inputs on every
//! example, plan and thread count (the hoisted projection on AMX where the
//! host has it); the inputs' rounding is real; the same bits on any thread
//! count; what cannot compute in bf16 refused.

mod common;

use cellc::ir::Precision;
use cellc::{Cell, Compute, Options, Variant, Weights};

/// As tests/precision.rs: the interpreter computes with the kernel's bf16
/// weights and (through `differential`, which reads the kernel's
/// arithmetic) its rounded inputs, so only float32 sums separate them.
const TOLERANCE: f64 = 1e-4;

fn bf16(plan: Option<Variant>, threads: Option<usize>) -> Options {
    Options {
        plan,
        threads,
        compute: Compute::Bf16,
        ..Options::default()
    }
}

/// The worst error of 6 steps of the kernel against the interpreter given
/// the weights the kernel computes with; the kernel computes in bf16.
fn error(cell: &Cell, opts: &Options, batch: usize, seed: u64) -> f64 {
    let (err, compute) = common::kernel_error(cell, opts, batch, seed, true);
    assert_eq!(compute, Compute::Bf16);
    err
}

#[test]
fn bf16_compute_matches_the_interpreter_on_every_plan() {
    let mut seed = 100;
    for path in common::examples() {
        // Odd k, k below and above an AMX step (32), rows beyond two units.
        for (x, h) in [(3, 17), (33, 16), (40, 72)] {
            let cell = common::sized(&path, x, h);
            for plan in Variant::ALL {
                for (batch, threads) in [(1, 1), (3, 1), (40, 2)] {
                    seed += 1;
                    let err = error(&cell, &bf16(Some(plan), Some(threads)), batch, seed);
                    assert!(
                        err < TOLERANCE,
                        "{} x={x} h={h} {} batch={batch} threads={threads}: error {err:e}",
                        path.display(),
                        plan.name()
                    );
                }
            }
        }
    }
}

/// Runs `T = 10` steps of batch 24 from zero states: the outputs.
fn run(cell: &Cell, weights: &Weights, opts: &Options, xs: &[f32]) -> Vec<f32> {
    let kernel = cell.compile(weights, opts).unwrap();
    let mut state = kernel.new_state(24).unwrap();
    let mut out = vec![0.0; xs.len() / kernel.input_len(0) * kernel.output_len(0)];
    kernel.run(xs, &mut state, &mut out).unwrap();
    out
}

/// Compute bf16 is bf16 storage (float32 arithmetic on the same weights)
/// given inputs rounded to bf16: on inputs that are bf16 values already the
/// two agree to float32 sums; on others they differ by the inputs'
/// rounding, far beyond that.
#[test]
fn the_inputs_are_rounded() {
    let cell = common::sized(&common::example_path("lstm"), 48, 40);
    let weights = Weights::random(&cell.ir().unwrap(), 9);
    let mut rng = common::Rng(3);
    let xs: Vec<f32> = rng
        .vec(10 * 24 * 48, 1.0)
        .iter()
        .map(|&v| v as f32)
        .collect();
    let rounded: Vec<f32> = xs.iter().map(|&v| cellc::quant::round_bf16(v)).collect();
    assert!(xs != rounded);
    let storage = Options {
        plan: Some(Variant::GemmHoisted),
        precision: Some(Precision::Bf16),
        ..Options::default()
    };
    let compute = bf16(Some(Variant::GemmHoisted), None);
    let max_diff = |a: &[f32], b: &[f32]| {
        a.iter()
            .zip(b)
            .map(|(x, y)| (x - y).abs())
            .fold(0.0f32, f32::max)
    };
    let same_inputs = max_diff(
        &run(&cell, &weights, &compute, &xs),
        &run(&cell, &weights, &storage, &rounded),
    );
    assert!(same_inputs < 1e-5, "{same_inputs:e}");
    let raw_inputs = max_diff(
        &run(&cell, &weights, &compute, &xs),
        &run(&cell, &weights, &storage, &xs),
    );
    assert!(raw_inputs > 1e-4, "{raw_inputs:e}");
}

/// Every plan gives the same bits on one thread and on two.
#[test]
fn any_thread_count_gives_the_same_bits() {
    let cell = common::sized(&common::example_path("lstm"), 64, 64);
    let weights = Weights::random(&cell.ir().unwrap(), 4);
    let mut rng = common::Rng(8);
    let xs: Vec<f32> = rng
        .vec(10 * 24 * 64, 1.0)
        .iter()
        .map(|&v| v as f32)
        .collect();
    for plan in Variant::ALL {
        let one = run(&cell, &weights, &bf16(Some(plan), Some(1)), &xs);
        let two = run(&cell, &weights, &bf16(Some(plan), Some(2)), &xs);
        assert!(
            one.iter()
                .zip(&two)
                .all(|(a, b)| a.to_bits() == b.to_bits()),
            "{}",
            plan.name()
        );
    }
}

#[test]
fn what_cannot_compute_in_bf16_is_refused() {
    let cell = common::sized(&common::example_path("gru"), 8, 8);
    let weights = Weights::random(&cell.ir().unwrap(), 1);
    // Weights stored in int8 (asked for, or annotated in the source).
    let int8 = Options {
        precision: Some(Precision::Int8),
        ..bf16(None, None)
    };
    let e = cell.compile(&weights, &int8).unwrap_err().to_string();
    assert!(e.contains("compute bf16") && e.contains("int8"), "{e}");
    let e = common::compile_error(&common::annotated("int8"), &bf16(None, None));
    assert!(e.contains("`W`") && e.contains("int8"), "{e}");
    common::assert_float32_faces_refuse(&cell, &bf16(None, None));
}

#[test]
fn the_command_line_takes_compute() {
    let (code, _, err) = common::cellc(&[
        "bench",
        "examples/lstm.rnn",
        "--dims",
        "X=4,H=4",
        "--compute",
        "fp8",
    ]);
    assert_eq!(code, 1);
    assert!(err.contains("f32, bf16 and int8"), "{err}");
    let j = common::bench_json_with_compute("bf16");
    assert!(
        j["us_per_step_median"].as_f64().is_some_and(|t| t > 0.0),
        "{j}"
    );
    assert_eq!(j["compute"], "bf16", "{j}");
    assert!(j["rows_apart"].is_boolean(), "{j}");
}
