//! `Compute::Int8` (`--compute int8`): int8 weights with a scale per row,
//! every vector a matrix multiplies quantized per batch row to unsigned
//! bytes, exact integer sums. The JIT against the interpreter modelling the
//! same quantization (`interp::Operands::Int8`) on every shipped cell, both
//! `gemm` plans, every ISA (and so every integer path) this host has; one
//! step exact to float32 rounding; the quantization real; the same bits on
//! any thread count; what cannot compute in int8 refused.

mod common;

use cellc::interp::{self, Operands, ParamValues};
use cellc::ir::Precision;
use cellc::{Cell, Compute, Isa, Options, Variant, Weights};

fn int8(plan: Option<Variant>, threads: Option<usize>) -> Options {
    Options {
        plan,
        threads,
        compute: Compute::Int8,
        ..Options::default()
    }
}

/// The largest difference between `a` and `b`, relative to max(1, |b|).
fn error(a: &[f32], b: &[f64]) -> f64 {
    assert_eq!(a.len(), b.len());
    let norm = b.iter().fold(1.0f64, |m, v| m.max(v.abs()));
    a.iter()
        .zip(b)
        .map(|(&x, &y)| (x as f64 - y).abs() / norm)
        .fold(0.0, f64::max)
}

/// One step of `cell` under `opts` from random states and inputs, and the
/// same step in the interpreter (the kernel's int8 weights, the products'
/// operands as `operands` says): the kernel's outputs and next states, the
/// interpreter's.
fn one_step(
    cell: &Cell,
    opts: &Options,
    batch: usize,
    seed: u64,
    operands: Operands,
) -> (Vec<f32>, Vec<f64>) {
    let ir = cell.ir().unwrap();
    let weights = Weights::random(&ir, seed);
    let kernel = cell
        .compile(&weights, opts)
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(kernel.compute(), Compute::Int8);
    let kernel_ir = cell.kernel_ir(opts).unwrap();
    let effective: Vec<Vec<f32>> =
        cellc::quant::effective_params(&kernel_ir, &weights.resolve(&kernel_ir).unwrap())
            .into_iter()
            .map(|v| v.into_owned())
            .collect();
    let mut rng = common::Rng(seed);
    let starts: Vec<Vec<f32>> = (0..ir.states.len())
        .map(|s| to_f32(&rng.vec(batch * kernel.state_len(s), 0.8)))
        .collect();
    let xs: Vec<Vec<f32>> = (0..ir.inputs.len())
        .map(|i| to_f32(&rng.vec(batch * kernel.input_len(i), 1.5)))
        .collect();
    let mut state = kernel.new_state(batch).unwrap();
    for (name, v) in kernel.state_names().iter().zip(&starts) {
        state.set(name, v).unwrap();
    }
    let inputs: Vec<&[f32]> = xs.iter().map(Vec::as_slice).collect();
    kernel.step_inputs(&inputs, &mut state).unwrap();
    let mut got: Vec<f32> = Vec::new();
    for name in kernel.output_names() {
        got.extend(kernel.output(&state, name).unwrap());
    }
    for name in kernel.state_names() {
        got.extend(state.get(name).unwrap());
    }
    let mut reference = interp::State::zeros(&ir, batch).unwrap();
    reference.values = starts.iter().map(|v| to_f64(v)).collect();
    let x64: Vec<Vec<f64>> = xs.iter().map(|v| to_f64(v)).collect();
    let params = ParamValues::from_f32(&effective);
    let outs = interp::step_with(&ir, &params, &x64, &mut reference, operands).unwrap();
    let want: Vec<f64> = outs
        .into_iter()
        .flatten()
        .chain(reference.values.into_iter().flatten())
        .collect();
    (got, want)
}

fn to_f32(v: &[f64]) -> Vec<f32> {
    v.iter().map(|&x| x as f32).collect()
}

fn to_f64(v: &[f32]) -> Vec<f64> {
    v.iter().map(|&x| f64::from(x)).collect()
}

/// The shipped cells compute int8 unless they have block-circulant weights.
fn int8_cells() -> Vec<std::path::PathBuf> {
    common::examples()
        .into_iter()
        .filter(|p| {
            let ir = common::sized(p, 4, 4).ir().unwrap();
            ir.params
                .iter()
                .all(|p| p.structure == cellc::ir::Structure::Dense)
        })
        .collect()
}

/// From the same floats the kernel and the interpreter quantize the same
/// bytes: one step agrees to float32 rounding on every cell, size, plan,
/// ISA (each integer path: `kernels::int8::Dots::for_isa`) and thread
/// count; and it differs from float32 products of the same int8 weights
/// by far more (the operands are quantized, not multiplied as they are).
#[test]
fn one_step_is_the_integer_arithmetic() {
    let isas: Vec<Isa> = Isa::ALL.into_iter().filter(|i| i.available()).collect();
    common::check_isa_coverage("compute int8", &isas);
    let mut seed = 300;
    for path in int8_cells() {
        // Odd k, k below and above a quad's multiple, rows beyond two units.
        for (x, h) in [(3, 17), (33, 16), (40, 72)] {
            let cell = common::sized(&path, x, h);
            for &isa in &isas {
                for plan in [Variant::Gemm, Variant::GemmHoisted] {
                    for (batch, threads) in [(1, 1), (3, 2), (40, 2)] {
                        seed += 1;
                        let opts = Options {
                            isa: Some(isa),
                            ..int8(Some(plan), Some(threads))
                        };
                        let what = format!(
                            "{} x={x} h={h} {} {} batch={batch} threads={threads}",
                            path.display(),
                            isa.name(),
                            plan.name()
                        );
                        let (got, want) = one_step(&cell, &opts, batch, seed, Operands::Int8);
                        let e = error(&got, &want);
                        assert!(e < 2e-5, "{what}: error {e:e}");
                        if (x, h, batch) == (40, 72, 40) {
                            let (_, exact) = one_step(&cell, &opts, batch, seed, Operands::Exact);
                            let e = error(&got, &exact);
                            assert!(e > 1e-3, "{what}: {e:e} from float32 products");
                        }
                    }
                }
            }
        }
    }
}

/// Over steps the kernel's states and the interpreter's differ by float32
/// rounding, and now and then a value on the edge of a quantization level
/// lands on the other side of it: a level's worth (about 1/255 of a row's
/// range times a weight) at most, where a lost term or a wrong scale is
/// off by tenths.
#[test]
fn sequences_follow_the_interpreter() {
    let mut seed = 500;
    for path in int8_cells() {
        let cell = common::sized(&path, 24, 40);
        for plan in [Variant::Gemm, Variant::GemmHoisted] {
            for (batch, threads) in [(1, 1), (5, 2)] {
                seed += 1;
                let (err, compute) = common::kernel_error(
                    &cell,
                    &int8(Some(plan), Some(threads)),
                    batch,
                    seed,
                    true,
                );
                assert_eq!(compute, Compute::Int8);
                assert!(
                    err < 2e-2,
                    "{} {} batch={batch} threads={threads}: error {err:e}",
                    path.display(),
                    plan.name()
                );
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

/// Both `gemm` plans give the same bits on one thread and on two, and with
/// the plan chosen by the cost model.
#[test]
fn any_thread_count_gives_the_same_bits() {
    let cell = common::sized(&common::example_path("lstm"), 64, 96);
    let weights = Weights::random(&cell.ir().unwrap(), 4);
    let mut rng = common::Rng(8);
    let xs = to_f32(&rng.vec(10 * 24 * 64, 1.0));
    for plan in [Variant::Gemm, Variant::GemmHoisted] {
        let one = run(&cell, &weights, &int8(Some(plan), Some(1)), &xs);
        let two = run(&cell, &weights, &int8(Some(plan), Some(2)), &xs);
        assert!(
            one.iter()
                .zip(&two)
                .all(|(a, b)| a.to_bits() == b.to_bits()),
            "{}",
            plan.name()
        );
        assert!(one.iter().all(|v| v.is_finite()));
    }
    // Whatever the cost model picks, it is a `gemm` plan: the same bits as one.
    let chosen = run(&cell, &weights, &int8(None, None), &xs);
    let gemm = run(&cell, &weights, &int8(Some(Variant::Gemm), Some(1)), &xs);
    let hoisted = run(
        &cell,
        &weights,
        &int8(Some(Variant::GemmHoisted), Some(1)),
        &xs,
    );
    assert!(chosen == gemm || chosen == hoisted);
}

/// A batch row holding a NaN makes that row's outputs NaN, never numbers,
/// and leaves the other rows as they were.
#[test]
fn a_nan_stays_in_its_row() {
    let cell = common::sized(&common::example_path("gru"), 16, 32);
    let weights = Weights::random(&cell.ir().unwrap(), 2);
    let mut rng = common::Rng(5);
    let clean = to_f32(&rng.vec(24 * 16, 1.0));
    let mut dirty = clean.clone();
    dirty[3 * 16 + 5] = f32::NAN;
    for plan in [Variant::Gemm, Variant::GemmHoisted] {
        let opts = int8(Some(plan), Some(1));
        let a = run(&cell, &weights, &opts, &clean);
        let b = run(&cell, &weights, &opts, &dirty);
        for row in 0..24 {
            let (ra, rb) = (&a[row * 32..(row + 1) * 32], &b[row * 32..(row + 1) * 32]);
            if row == 3 {
                assert!(rb.iter().all(|v| v.is_nan()), "{}: {rb:?}", plan.name());
            } else {
                assert_eq!(ra, rb, "{} row {row}", plan.name());
            }
        }
    }
}

#[test]
fn what_cannot_compute_in_int8_is_refused() {
    let cell = common::sized(&common::example_path("gru"), 8, 8);
    let weights = Weights::random(&cell.ir().unwrap(), 1);
    // Weights stored in bf16 or f32, asked for.
    for p in [Precision::Bf16, Precision::F32] {
        let opts = Options {
            precision: Some(p),
            ..int8(None, None)
        };
        let e = cell.compile(&weights, &opts).unwrap_err().to_string();
        assert!(e.contains("compute int8") && e.contains(p.name()), "{e}");
    }
    // A plan whose products are generated float32 code.
    for plan in [Variant::Streaming, Variant::Hoisted] {
        let e = cell
            .compile(&weights, &int8(Some(plan), None))
            .unwrap_err()
            .to_string();
        assert!(e.contains("compute int8") && e.contains(plan.name()), "{e}");
    }
    // A parameter annotated bf16 in the source.
    let e = common::compile_error(&common::annotated("bf16"), &int8(None, None));
    assert!(e.contains("`W`") && e.contains("bf16"), "{e}");
    // Block-circulant weights.
    let circulant = common::sized(
        &std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/circulant/clstm.rnn"),
        32,
        32,
    );
    let e = common::compile_error(&circulant, &int8(None, None));
    assert!(e.contains("block-circulant") && e.contains("int8"), "{e}");
    common::assert_float32_faces_refuse(&cell, &int8(None, None));
}

#[test]
fn the_command_line_takes_compute_int8() {
    let j = common::bench_json_with_compute("int8");
    assert_eq!(j["compute"], "int8", "{j}");
    assert!(
        j["schedule"].as_str().is_some_and(|p| p.contains("gemm")),
        "{j}"
    );
    let (code, _, err) = common::cellc(&[
        "bench",
        "examples/lstm.rnn",
        "--dims",
        "X=8,H=8",
        "--compute",
        "int8",
        "--plan",
        "streaming",
    ]);
    assert_eq!(code, 1);
    assert!(err.contains("compute int8"), "{err}");
}

/// The integer sums are exact and both plans start each product from its
/// bias and add the terms in the same order, each with the same fused
/// finish: the hoisted projection changes where the input's term is
/// computed, not its bits. Every cell, the plans on one and two threads.
#[test]
fn both_plans_give_the_same_bits() {
    for path in int8_cells() {
        let cell = common::sized(&path, 64, 96);
        let weights = Weights::random(&cell.ir().unwrap(), 4);
        let mut rng = common::Rng(8);
        let n = cell
            .compile(&weights, &int8(None, None))
            .unwrap()
            .input_len(0);
        let xs = to_f32(&rng.vec(10 * 24 * n, 1.0));
        let a = run(&cell, &weights, &int8(Some(Variant::Gemm), Some(1)), &xs);
        let b = run(
            &cell,
            &weights,
            &int8(Some(Variant::GemmHoisted), Some(2)),
            &xs,
        );
        assert!(a.iter().all(|v| v.is_finite()), "{}", path.display());
        assert!(
            a.iter().zip(&b).all(|(x, y)| x.to_bits() == y.to_bits()),
            "{}",
            path.display()
        );
    }
}
