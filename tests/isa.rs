//! The kernels of each ISA the host has: the batched products give the
//! portable kernel's bits, the region kernels the generated code's, and the
//! cost model costs a forced ISA at its own rates.

mod common;

use cellc::{Cell, Isa, Options, Weights};
use common::sequences::{reference_sequence, run_sequence, TOLERANCE};

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
                compute: cellc::Compute::F32,
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
