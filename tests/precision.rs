//! Narrow weights (bf16, int8): the JIT against the interpreter given the same
//! rounded weights, on every example, plan and precision; the rounding is
//! real; the language's annotations; refusals; and the accuracy against f32 on
//! the PyTorch conformance cases (docs/interop.md states the bounds).

mod common;

use std::path::Path;

use cellc::ir::Precision;
use cellc::{Cell, Compute, Options, Variant, Weights};

/// As tests/jit.rs: the interpreter is given the weights the kernel computes
/// with, so only f32 rounding separates them (int8 sums `q * x` and scales
/// once per row, the interpreter multiplies `q * s` first: one rounding more).
const TOLERANCE: f64 = 1e-4;

#[test]
fn narrow_weights_match_the_interpreter_on_every_plan() {
    let mut seed = 0;
    for path in common::examples() {
        // Odd and even k (the narrow panels hold k in pairs), k of 1.
        for (x, h) in [(3, 17), (33, 16), (17, 40), (1, 2)] {
            let cell = common::sized(&path, x, h);
            for precision in [Precision::Bf16, Precision::Int8] {
                for plan in Variant::ALL {
                    for batch in [1, 3, 8] {
                        seed += 1;
                        let opts = Options {
                            plan: Some(plan),
                            precision: Some(precision),
                            ..Options::default()
                        };
                        let err = common::kernel_error(&cell, &opts, batch, seed, true).0;
                        assert!(
                            err < TOLERANCE,
                            "{} x={x} h={h} {precision} {} batch={batch}: error {err:e}",
                            path.display(),
                            plan.name()
                        );
                    }
                }
            }
        }
    }
}

/// The interpreter given the unrounded weights is far off: the kernels do
/// compute with the narrow values (a test that could not tell would pass
/// with the option ignored).
#[test]
fn the_rounding_is_real() {
    let path = common::examples()
        .into_iter()
        .find(|p| common::stem(p) == "lstm")
        .unwrap();
    let cell = common::sized(&path, 24, 40);
    for precision in [Precision::Bf16, Precision::Int8] {
        for plan in Variant::ALL {
            let opts = Options {
                plan: Some(plan),
                precision: Some(precision),
                ..Options::default()
            };
            let err = common::kernel_error(&cell, &opts, 2, 5, false).0;
            assert!(
                err > 3.0 * TOLERANCE,
                "{precision} {}: the raw weights give the same result ({err:e})",
                plan.name()
            );
        }
    }
}

const ANNOTATED: &str = "
cell mixed
dim X = 7
dim H = 13
input x: [X]
state h: [H]
output y: [H]
param W: bf16[H, X]
param U: int8[H, H]
param V: f32[H, H]
param b: int8[H]
param d: bf16[H]
h' = tanh(W @ x + U @ h + b) + d * (V @ h)
y = h'
";

/// Precisions written in the source: each parameter keeps its own (vectors
/// too), the IR prints them and parses them back, and the kernel matches the
/// interpreter on every plan.
#[test]
fn annotated_parameters() {
    let cell = Cell::from_source("mixed.rnn", ANNOTATED).unwrap();
    let ir = cell.ir().unwrap();
    let of = |name: &str| ir.params.iter().find(|p| p.name == name).unwrap().precision;
    assert_eq!(
        [of("W"), of("U"), of("V"), of("b"), of("d")],
        [
            Precision::Bf16,
            Precision::Int8,
            Precision::F32,
            Precision::Int8,
            Precision::Bf16
        ]
    );
    let text = cellc::ir::print::print(&ir);
    assert!(text.contains("param W: bf16[13, 7]"), "{text}");
    assert!(text.contains("param U: int8[13, 13]"), "{text}");
    assert!(text.contains("param V: [13, 13]"), "{text}");
    let back = cellc::ir::parse::parse(&text).unwrap();
    assert_eq!(cellc::ir::print::print(&back), text);
    for plan in Variant::ALL {
        for batch in [1, 5] {
            let opts = Options {
                plan: Some(plan),
                ..Options::default()
            };
            let err = common::kernel_error(&cell, &opts, batch, 17, true).0;
            assert!(err < TOLERANCE, "{} batch {batch}: {err:e}", plan.name());
        }
    }
    // `--precision` overrides the matrices only: the vectors keep theirs.
    let opts = Options {
        precision: Some(Precision::F32),
        ..Options::default()
    };
    let k = cell.kernel_ir(&opts).unwrap();
    let of = |name: &str| k.params.iter().find(|p| p.name == name).unwrap().precision;
    assert_eq!(
        [of("W"), of("U"), of("b"), of("d")],
        [
            Precision::F32,
            Precision::F32,
            Precision::Int8,
            Precision::Bf16
        ]
    );
}

#[test]
fn an_unknown_precision_is_a_diagnostic() {
    let text = ANNOTATED.replace("bf16[H, X]", "fp16[H, X]");
    let err = Cell::from_source("mixed.rnn", &text)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("unknown precision `fp16`") && err.contains("bf16"),
        "{err}"
    );
    assert!(err.contains("mixed.rnn:8:"), "{err}");
}

/// An int8 row holding NaN or an infinity has no scale: an error that names
/// the parameter, not a row of zeros.
#[test]
fn int8_refuses_weights_it_cannot_store() {
    let cell = Cell::from_source("mixed.rnn", ANNOTATED).unwrap();
    let ir = cell.ir().unwrap();
    let mut weights = Weights::random(&ir, 1);
    let u = weights.get("U").unwrap().clone();
    let mut data = u.data.clone();
    data[13 * 4 + 2] = f32::INFINITY;
    weights.remove("U");
    weights.insert("U", &u.shape, data).unwrap();
    let Err(err) = cell.compile(&weights, &Options::default()) else {
        panic!("an infinite int8 weight must be refused");
    };
    let err = err.to_string();
    assert!(err.contains("`U`") && err.contains("row 4"), "{err}");
    // The same weights in bf16 are representable (an infinity stays one).
    let opts = Options {
        precision: Some(Precision::Bf16),
        ..Options::default()
    };
    let cell =
        Cell::from_source("mixed.rnn", &ANNOTATED.replace("int8[H, H]", "bf16[H, H]")).unwrap();
    assert!(cell.compile(&weights, &opts).is_ok());
    // A finite value that bf16 would round to an infinity is refused.
    let mut data = u.data.clone();
    data[7] = f32::MAX;
    weights.remove("U");
    weights.insert("U", &u.shape, data).unwrap();
    let Err(err) = cell.compile(&weights, &opts) else {
        panic!("a finite weight beyond bf16's range must be refused");
    };
    let err = err.to_string();
    assert!(err.contains("`U`") && err.contains("element 7"), "{err}");
    // A finite value whose int8 step makes its row's largest value infinite
    // (f32::MAX: 127 * (MAX / 127) rounds up) is refused too: it used to
    // pass, and plans then disagreed (NaN on some, 8.4e37 on others).
    let cell = Cell::from_source("mixed.rnn", ANNOTATED).unwrap();
    let Err(err) = cell.compile(&weights, &Options::default()) else {
        panic!("an int8 row whose scale overflows must be refused");
    };
    let err = err.to_string();
    assert!(err.contains("`U`") && err.contains("row 0"), "{err}");
    assert!(err.contains("3.4028235e38"), "{err}");
}

/// bf16 and int8 against f32 on the PyTorch conformance cases' weights,
/// inputs uniform in [-1, 1] over 100 steps (batch 2): the largest absolute
/// difference of any output or final state, against max(1, its largest
/// magnitude). The bounds are the ones docs/interop.md states (1e-2 for bf16,
/// 2.5e-2 for the layer-normalized cells, 5e-2 for int8); what was measured
/// is printed.
#[test]
#[allow(clippy::print_stderr)] // the measured errors, for the docs
fn accuracy_against_f32_on_the_conformance_cases() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/conformance/cases");
    let manifest: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("manifest.json")).unwrap()).unwrap();
    let mut worst = [0.0f64; MODES.len()];
    let mut rng = common::Rng(99);
    for c in manifest["cases"].as_array().unwrap() {
        let case = c["case"].as_str().unwrap();
        let cell_file = c["cell"].as_str().unwrap();
        let cell = Cell::from_file(
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("examples")
                .join(cell_file),
        )
        .unwrap();
        let weights =
            Weights::from_safetensors(dir.join(format!("{case}.weights.safetensors"))).unwrap();
        let given =
            Weights::from_safetensors(dir.join(format!("{case}.inputs.safetensors"))).unwrap();
        // The case's initial states, and 100 steps of inputs in [-1, 1].
        let mut inputs = Weights::new();
        for name in given.names() {
            let t = given.get(name).unwrap();
            if name == "x" {
                let (b, x) = (t.shape[1], t.shape[2]);
                let data: Vec<f32> = rng
                    .vec(100 * b.min(2) * x, 1.0)
                    .iter()
                    .map(|&v| v as f32)
                    .collect();
                inputs.insert("x", &[100, b.min(2), x], data).unwrap();
            } else {
                let (b, n) = (t.shape[0], t.shape[1]);
                let rows = b.min(2);
                inputs
                    .insert(name, &[rows, n], t.data[..rows * n].to_vec())
                    .unwrap();
            }
        }
        let run = |precision: Option<Precision>, compute: Compute| {
            let opts = Options {
                precision,
                compute,
                ..Options::default()
            };
            cellc::run::run(&cell, &weights, &inputs, &[], &opts)
                .unwrap_or_else(|e| panic!("{case}: {e}"))
        };
        let exact = run(None, Compute::F32);
        for (i, (precision, compute, mode)) in MODES.into_iter().enumerate() {
            let narrow = run(precision, compute);
            for name in exact.names() {
                let (a, b) = (exact.get(name).unwrap(), narrow.get(name).unwrap());
                let (e, mag) = max_error(&a.data, &b.data, &format!("{case} {name} {mode}"));
                eprintln!("{case} {name}: {mode} max abs error {e:.2e} (max |value| {mag:.2})");
                // Against max(1, |value|): an unbounded cell state of 6
                // carries its weights' relative rounding at its own scale.
                let e = e / mag.max(1.0);
                let bound = bound(precision, compute, cell_file.starts_with("layernorm"));
                assert!(e < bound, "{case} {name} {mode}: {e:e} (bound {bound:e})");
                worst[i] = worst[i].max(e);
            }
        }
    }
    eprintln!(
        "worst over the cases, against max(1, |value|): bf16 {:.2e}, int8 {:.2e}, compute bf16 {:.2e}, compute int8 {:.2e}",
        worst[0], worst[1], worst[2], worst[3]
    );
}

/// The arithmetic the accuracy tests compare with float32: bf16 and int8
/// storage (float32 arithmetic), bf16 arithmetic and integer arithmetic.
const MODES: [(Option<Precision>, Compute, &str); 4] = [
    (Some(Precision::Bf16), Compute::F32, "bf16"),
    (Some(Precision::Int8), Compute::F32, "int8"),
    (None, Compute::Bf16, "compute bf16"),
    (None, Compute::Int8, "compute int8"),
];

/// The bound on a mode's error against max(1, |value|) (docs/interop.md):
/// 5e-2 for int8 (stored, or computed); 2.5e-2 for the layer-normalized cells, whose
/// normalization divides by the spread of the gates' pre-activations and so
/// magnifies their rounding (measured: up to 1.6e-2); 1e-2 for the others
/// (measured: within 3.6e-3).
fn bound(precision: Option<Precision>, compute: Compute, layernorm: bool) -> f64 {
    if compute == Compute::Int8 {
        return 5e-2;
    }
    match (precision, layernorm) {
        (Some(Precision::Int8), _) => 5e-2,
        (_, true) => 2.5e-2,
        _ => 1e-2,
    }
}

/// The largest absolute difference of `got` from `want`, and `want`'s
/// largest magnitude; every value finite.
fn max_error(want: &[f32], got: &[f32], what: &str) -> (f64, f64) {
    assert_eq!(want.len(), got.len(), "{what}");
    let (mut e, mut mag) = (0.0f64, 0.0f64);
    for (x, y) in want.iter().zip(got) {
        assert!(x.is_finite() && y.is_finite(), "{what}");
        e = e.max((*x as f64 - *y as f64).abs());
        mag = mag.max(x.abs() as f64);
    }
    (e, mag)
}

/// The largest absolute difference between two runs' tensors of the same
/// names (those of `want`).
fn max_abs(got: &Weights, want: &Weights) -> f64 {
    let mut err = 0.0f64;
    for name in want.names() {
        let (a, b) = (got.get(name).unwrap(), want.get(name).unwrap());
        assert_eq!(a.shape, b.shape, "{name}");
        for (x, y) in a.data.iter().zip(&b.data) {
            err = err.max((*x as f64 - *y as f64).abs());
        }
    }
    err
}

/// ONNX Runtime's `DynamicQuantizeLSTM` models (from
/// `tests/conformance/gen_onnx_quantized.py`): imported as int8; per channel,
/// cellc's int8 values are the model's own; the outputs are within the int8
/// bound of the float model's; `cellc run` runs the model in int8 without
/// being told.
#[test]
#[allow(clippy::print_stderr)] // the measured errors, for the docs
fn onnx_dynamic_quantize_lstm_runs_in_int8() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/conformance/cases");
    let manifest: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("quantized.json")).unwrap())
            .unwrap();
    let cases = manifest["cases"].as_array().unwrap();
    assert_eq!(cases.len(), 3);
    for c in cases {
        let case = c["case"].as_str().unwrap();
        let file = |kind: &str| dir.join(format!("{case}.{kind}"));
        let load = |kind: &str| Weights::from_safetensors(file(kind)).unwrap();
        let bytes = std::fs::read(file("onnx")).unwrap();
        let imported = cellc::onnx::import(&bytes).unwrap_or_else(|e| panic!("{case}: {e}"));
        assert_eq!(imported.precision, Some(Precision::Int8), "{case}");
        // Per channel, requantizing the dequantized weights gives the
        // model's integers back.
        if c["per_channel"].as_bool().unwrap() {
            let q = load("q.safetensors");
            let suffixes: &[&str] = if c["directions"] == 2 {
                &["", "_reverse"]
            } else {
                &[""]
            };
            for m in ["W", "R"] {
                let (shape, ints) = q.integers(m).unwrap();
                let (k, rows) = (shape[1], shape[2]);
                for (d, suffix) in suffixes.iter().enumerate() {
                    let t = imported.weights.get(&format!("{m}_l0{suffix}")).unwrap();
                    let (mine, _) = cellc::quant::int8_rows(&t.data, k);
                    for j in 0..rows {
                        for i in 0..k {
                            assert_eq!(
                                mine[j * k + i] as i64,
                                ints[(d * k + i) * rows + j],
                                "{case} {m}{suffix} row {j} column {i}"
                            );
                        }
                    }
                }
            }
        }
        let cell = Cell::from_source(imported.cell_name, imported.cell_source).unwrap();
        let opts = Options {
            precision: imported.precision,
            ..Options::default()
        };
        let inputs = load("inputs.safetensors");
        let out = cellc::run::run(&cell, &imported.weights, &inputs, &[], &opts)
            .unwrap_or_else(|e| panic!("{case}: {e}"));
        let expected = load("expected.safetensors");
        let to_float = max_abs(&out, &expected);
        // For the record (not a bound: ONNX Runtime also rounds the
        // activations to uint8 at every step, and lands further away).
        let ort = max_abs(&load("ort_int8.safetensors"), &expected);
        eprintln!(
            "{case}: max abs error against the float model {to_float:.2e} (ONNX Runtime's int8: {ort:.2e})"
        );
        assert!(to_float < 5e-2, "{case}: {to_float:e} from the float model");
        // Integer arithmetic, as ONNX Runtime runs the model (its
        // activations quantized per batch row, where ONNX Runtime quantizes
        // per tensor): no further from the float model than ONNX Runtime.
        let integer = Options {
            compute: Compute::Int8,
            ..opts.clone()
        };
        let computed = cellc::run::run(&cell, &imported.weights, &inputs, &[], &integer)
            .unwrap_or_else(|e| panic!("{case}: {e}"));
        let computed_to_float = max_abs(&computed, &expected);
        eprintln!("{case}: compute int8 {computed_to_float:.2e} from the float model");
        assert!(
            computed_to_float < 5e-2 && computed_to_float <= ort,
            "{case}: compute int8 {computed_to_float:e} from the float model, ONNX Runtime {ort:e}"
        );
        assert!(
            max_abs(&computed, &out) > 0.0,
            "{case}: the activations were quantized"
        );
        // The command line runs it in int8 without `--precision`: the same bits.
        let tmp = std::env::temp_dir().join(format!(
            "cellc-quant-{}-{case}.safetensors",
            std::process::id()
        ));
        let status = std::process::Command::new(env!("CARGO_BIN_EXE_cellc"))
            .arg("run")
            .arg(file("onnx"))
            .arg("--inputs")
            .arg(file("inputs.safetensors"))
            .arg("-o")
            .arg(&tmp)
            .status()
            .unwrap();
        assert!(status.success(), "{case}");
        let cli = Weights::from_safetensors(&tmp).unwrap();
        let _ = std::fs::remove_file(&tmp);
        assert_eq!(max_abs(&cli, &out), 0.0, "{case}: cellc run differs");
    }
}

/// PyTorch's dynamically quantized LSTM: its weights, dequantized by the
/// two lines docs/interop.md gives, run by `examples/lstm.rnn` in int8 (both
/// layers), within the int8 bound of the float LSTM's outputs.
#[test]
#[allow(clippy::print_stderr)] // the measured errors, for the docs
fn pytorch_dynamic_quantized_lstm_weights_run_in_int8() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/conformance/cases");
    let manifest: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("quantized.json")).unwrap())
            .unwrap();
    let cases = manifest["torch_cases"].as_array().unwrap();
    assert_eq!(cases.len(), 1);
    let cell =
        Cell::from_file(Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/lstm.rnn")).unwrap();
    for c in cases {
        let case = c.as_str().unwrap();
        let load = |kind: &str| {
            Weights::from_safetensors(dir.join(format!("{case}.{kind}.safetensors"))).unwrap()
        };
        let opts = Options {
            precision: Some(Precision::Int8),
            ..Options::default()
        };
        let out = cellc::run::run(&cell, &load("weights"), &load("inputs"), &[], &opts)
            .unwrap_or_else(|e| panic!("{case}: {e}"));
        let expected = load("expected");
        let to_float = max_abs(&out, &expected);
        let torch = max_abs(&load("torch_int8"), &expected);
        eprintln!(
            "{case}: max abs error against the float model {to_float:.2e} (PyTorch's int8: {torch:.2e})"
        );
        assert!(to_float < 5e-2, "{case}: {to_float:e}");
    }
}

/// Every example cell, its weights drawn as PyTorch initializes them
/// (uniform in ±1/sqrt(columns)), inputs uniform in [-1, 1] over T = 100
/// steps, batch 2, zero states: bf16 and int8 against float32, the largest
/// absolute difference of any output or final state, and that divided by
/// max(1, the tensor's largest magnitude), under the bounds of the conformance
/// cases (docs/interop.md states what was measured).
#[test]
#[allow(clippy::print_stderr)] // the measured errors, for the docs
fn accuracy_against_f32_on_every_example() {
    let (steps, batch) = (100, 2);
    let mut worst = [0.0f64; MODES.len()];
    for path in common::examples() {
        let stem = common::stem(&path);
        let cell = common::sized(&path, 64, 128);
        let weights = Weights::random(&cell.ir().unwrap(), 7);
        let run = |precision: Option<Precision>, compute: Compute| {
            let opts = Options {
                precision,
                compute,
                ..Options::default()
            };
            let kernel = cell
                .compile(&weights, &opts)
                .unwrap_or_else(|e| panic!("{stem}: {e}"));
            let mut rng = common::Rng(5);
            let xs: Vec<Vec<f32>> = (0..kernel.input_names().len())
                .map(|i| {
                    let n = steps * batch * kernel.input_len(i);
                    rng.vec(n, 1.0).iter().map(|&v| v as f32).collect()
                })
                .collect();
            let mut ys: Vec<Vec<f32>> = (0..kernel.output_names().len())
                .map(|o| vec![0.0; steps * batch * kernel.output_len(o)])
                .collect();
            let mut state = kernel.new_state(batch).unwrap();
            let refs: Vec<&[f32]> = xs.iter().map(Vec::as_slice).collect();
            let mut outs: Vec<&mut [f32]> = ys.iter_mut().map(Vec::as_mut_slice).collect();
            kernel.run_with(&refs, &mut state, &mut outs).unwrap();
            for name in kernel.state_names() {
                ys.push(state.get(name).unwrap());
            }
            ys
        };
        let exact = run(None, Compute::F32);
        for (i, (precision, compute, mode)) in MODES.into_iter().enumerate() {
            let narrow = run(precision, compute);
            let (mut abs, mut rel) = (0.0f64, 0.0f64);
            for (a, b) in exact.iter().zip(&narrow) {
                let (e, mag) = max_error(a, b, &format!("{stem} {mode}"));
                abs = abs.max(e);
                rel = rel.max(e / mag.max(1.0));
            }
            eprintln!("{stem}: {mode} max abs {abs:.2e}, against max(1, |value|) {rel:.2e}");
            let bound = bound(precision, compute, stem.starts_with("layernorm"));
            assert!(rel < bound, "{stem} {mode}: {rel:e} (bound {bound:e})");
            worst[i] = worst[i].max(rel);
        }
    }
    eprintln!(
        "worst over the examples, against max(1, |value|): bf16 {:.2e}, int8 {:.2e}, compute bf16 {:.2e}, compute int8 {:.2e}",
        worst[0], worst[1], worst[2], worst[3]
    );
}
