//! The bodies of the fuzz targets (`fuzz/fuzz_targets/`), here so that the normal
//! test suite runs them too (`tests/fuzz_smoke.rs`). Each takes arbitrary bytes
//! and panics only on a real bug: a crash of the compiler, an IR that does not
//! round-trip, or native code that disagrees with the interpreter.

use crate::interp::{self, ParamValues};
use crate::ir::{self, Type};
use crate::{Cell, Kernel, Options, Weights};

/// Parse and check arbitrary bytes: always a cell or diagnostics, never a panic.
pub fn parse_check(bytes: &[u8]) {
    let text = String::from_utf8_lossy(bytes);
    match Cell::from_source("fuzz.rnn", &text) {
        Ok(cell) => {
            // Sizes default or unbound: either way, no panic.
            if let Ok(ir) = cell.ir() {
                let _ = cell.optimized(&crate::opt::Options::default());
                let _ = ir::print::print(&ir);
            }
        }
        Err(crate::Error::Source { diagnostics, .. }) => {
            assert!(
                diagnostics.iter().any(|d| d.is_error()),
                "rejected without an error"
            );
        }
        Err(_) => {}
    }
}

/// A little reader of fuzz bytes.
struct Bytes<'a>(&'a [u8]);

impl Bytes<'_> {
    fn u8(&mut self) -> u8 {
        match self.0.split_first() {
            Some((&b, rest)) => {
                self.0 = rest;
                b
            }
            None => 0,
        }
    }

    fn u64(&mut self) -> u64 {
        (0..8).fold(0u64, |acc, _| (acc << 8) | self.u8() as u64)
    }
}

/// Generates a random well-typed cell from the bytes, compiles it at random
/// sizes, and runs the JIT against the interpreter (tolerance as in
/// `tests/jit.rs`: 1e-4 norm-wise, times the input magnitude, plus 30 times the
/// cell's [`Differential::sensitivity`]).
pub fn jit_vs_interp(bytes: &[u8]) {
    let mut b = Bytes(bytes);
    let seed = b.u64();
    let mut x = 1 + (b.u8() % 40) as u64;
    let mut h = 1 + (b.u8() % 40) as u64;
    let batch = 1 + (b.u8() % 17) as usize;
    let steps = 1 + (b.u8() % 20) as usize;
    let flags = b.u8();
    let optimize = flags & 1 == 0;
    let scale: f32 = if flags & 2 == 0 { 1.0 } else { 50.0 };
    let threads = 1 + ((flags >> 2) & 1) as usize;
    let plan = crate::Variant::ALL[((flags >> 3) & 3) as usize];
    // Bit 5: some matrices block-circulant, blocks of 2, 4, 8 or 16
    // dividing the sizes (up to 8 blocks: large enough for the FFT products
    // of `Structure::spectral_k` as well as the dense expansion).
    let text = if flags & 32 != 0 {
        let k = 2u64 << ((flags >> 6) % 4);
        x = k * (1 + x % 8);
        h = k * (1 + h % 8);
        crate::gen::random_circulant_cell(seed, k as usize)
    } else {
        crate::gen::random_cell(seed)
    };
    let cell = Cell::from_source("gen.rnn", &text)
        .and_then(|c| c.dims(&[("X", x), ("H", h)]))
        .unwrap_or_else(|e| panic!("the generator made an invalid cell: {e}\n{text}"));
    let ir = cell.ir().unwrap_or_else(|e| panic!("{e}"));
    let weights = Weights::random(&ir, seed);
    let kernel = cell
        .compile(
            &weights,
            &Options {
                optimize,
                threads: Some(threads),
                plan: Some(plan),
                isa: None,
                precision: None,
                compute: crate::Compute::F32,
            },
        )
        .unwrap_or_else(|e| panic!("compile failed: {e}\n{text}"));
    let params = ParamValues::from_f32(&weights.resolve(&ir).unwrap_or_else(|e| panic!("{e}")));
    let d = differential(&kernel, &ir, &params, batch, steps, seed, scale);
    assert!(
        d.worst < 1e-4 * scale as f64 + 30.0 * d.sensitivity,
        "jit against interpreter: error {:e} (sensitivity {:e}), x={x} h={h} batch={batch} steps={steps} optimize={optimize} plan={plan:?} threads={threads}\n{text}",
        d.worst,
        d.sensitivity
    );
}

/// How far a kernel's steps are from the interpreter's.
#[derive(Clone, Copy, Debug)]
pub struct Differential {
    /// Largest error of any output or state at any step, relative to
    /// max(1, |reference|) over that step's values.
    pub worst: f64,
    /// How far the interpreter itself moves, measured the same way, when every
    /// parameter moves by one f32 rounding ([`ParamValues::nudged`]): how much
    /// the cell amplifies the roundings an f32 kernel cannot avoid. A chaotic
    /// random cell can turn them into 1e-4 within a dozen steps.
    pub sensitivity: f64,
}

/// The largest error of `got` against `want`, relative to max(1, |want|) over
/// the values compared. Values beyond f32's range overflow in the kernel, as
/// they must, and are not compared.
fn normwise_error(got: impl IntoIterator<Item = f64>, want: &[f64], skip_non_finite: bool) -> f64 {
    let representable = |w: &f64| w.is_finite() && w.abs() <= f32::MAX as f64;
    let norm = want
        .iter()
        .filter(|w| representable(w))
        .fold(1.0f64, |m, w| m.max(w.abs()));
    let mut worst = 0.0f64;
    for (g, w) in got.into_iter().zip(want) {
        if !representable(w) || (skip_non_finite && !g.is_finite()) {
            continue;
        }
        // A NaN or infinity where the reference is a float is as wrong as can be.
        let e = if g.is_finite() {
            (g - w).abs() / norm
        } else {
            f64::INFINITY
        };
        worst = worst.max(e);
    }
    worst
}

/// Runs `steps` steps of `kernel` and of the interpreter with `reference`
/// parameters (the kernel's weights, unless a test perturbs them), from the same
/// random states (in [-0.5, 0.5]) and inputs (in [-1, 1] times `input_scale`)
/// drawn from `seed`, driving the kernel two ways: one `step_inputs` call per
/// step, reading every output with [`Kernel::output`] and every state after each
/// step; and one `run_with` call for the whole sequence from the same start,
/// reading its output buffers, the final states, and `output` after it (`run`
/// for a cell of one input and one output). The kernel's options choose the plan
/// and threads of both.
pub fn differential(
    kernel: &Kernel,
    ir: &ir::Cell,
    reference: &ParamValues,
    batch: usize,
    steps: usize,
    seed: u64,
    input_scale: f32,
) -> Differential {
    let mut rng = crate::gen::Rng(seed ^ 0x5555);
    let start: Vec<Vec<f32>> = (0..ir.states.len())
        .map(|s| {
            (0..batch * kernel.state_len(s))
                .map(|_| rng.unit() as f32 * 0.5)
                .collect()
        })
        .collect();
    // Inputs, `[steps, batch, len]`, drawn step after step.
    let mut xs: Vec<Vec<f32>> = vec![Vec::new(); ir.inputs.len()];
    for _ in 0..steps {
        for (i, x) in xs.iter_mut().enumerate() {
            x.extend((0..batch * kernel.input_len(i)).map(|_| rng.unit() as f32 * input_scale));
        }
    }
    let case = Case {
        kernel,
        ir,
        batch,
        steps,
        start,
        xs,
    };
    let want = case.interpret(reference);
    let moved = case.interpret(&reference.nudged());
    let sensitivity = (want.iter().zip(&moved))
        .map(|(w, m)| normwise_error(m.iter().copied(), w, true))
        .fold(0.0, f64::max);
    Differential {
        worst: case.per_step_error(&want).max(case.sequence_error(&want)),
        sensitivity,
    }
}

/// One differential run's kernel, sizes, initial states and inputs.
struct Case<'a> {
    kernel: &'a Kernel,
    ir: &'a ir::Cell,
    batch: usize,
    steps: usize,
    start: Vec<Vec<f32>>,
    /// Per input, `[steps, batch, len]`.
    xs: Vec<Vec<f32>>,
}

impl Case<'_> {
    fn step_inputs(&self, t: usize) -> Vec<&[f32]> {
        (self.xs.iter().enumerate())
            .map(|(i, x)| {
                let n = self.batch * self.kernel.input_len(i);
                &x[t * n..(t + 1) * n]
            })
            .collect()
    }

    /// The interpreter with `params`: every step's outputs, then its
    /// states, one vector per step.
    fn interpret(&self, params: &ParamValues) -> Vec<Vec<f64>> {
        let mut state = interp::State::zeros(self.ir, self.batch).unwrap();
        for (s, v) in self.start.iter().enumerate() {
            state.values[s] = v.iter().map(|&x| x as f64).collect();
        }
        (0..self.steps)
            .map(|t| {
                // Under compute bf16 the kernel rounds its inputs to bf16.
                let bf16 = self.kernel.compute() == crate::Compute::Bf16;
                let x64: Vec<Vec<f64>> = (self.step_inputs(t).iter())
                    .map(|v| {
                        v.iter()
                            .map(|&x| if bf16 { crate::quant::round_bf16(x) } else { x } as f64)
                            .collect()
                    })
                    .collect();
                // Under compute int8 the products quantize their operands.
                let operands = if self.kernel.compute() == crate::Compute::Int8 {
                    interp::Operands::Int8
                } else {
                    interp::Operands::Exact
                };
                let outs = interp::step_with(self.ir, params, &x64, &mut state, operands)
                    .unwrap_or_else(|e| panic!("{e}"));
                outs.into_iter()
                    .flatten()
                    .chain(state.values.iter().flatten().copied())
                    .collect()
            })
            .collect()
    }

    /// A kernel state holding the initial states.
    fn fresh_state(&self) -> crate::State {
        let kernel = self.kernel;
        let mut state = kernel
            .new_state(self.batch)
            .unwrap_or_else(|e| panic!("{e}"));
        for (s, name) in kernel.state_names().iter().enumerate() {
            (state.set(name, &self.start[s])).unwrap_or_else(|e| panic!("{e}"));
        }
        state
    }

    /// Every output read with [`Kernel::output`], then every state.
    fn read_back(&self, state: &crate::State) -> Vec<f64> {
        let kernel = self.kernel;
        let mut got = Vec::new();
        for name in kernel.output_names() {
            let v = kernel.output(state, name).unwrap_or_else(|e| panic!("{e}"));
            got.extend(v.iter().map(|&x| x as f64));
        }
        for name in kernel.state_names() {
            let v = state.get(name).unwrap_or_else(|e| panic!("{e}"));
            got.extend(v.iter().map(|&x| x as f64));
        }
        got
    }

    /// The worst error of one `step_inputs` call per step.
    fn per_step_error(&self, want: &[Vec<f64>]) -> f64 {
        let mut state = self.fresh_state();
        let mut worst = 0.0f64;
        for (t, w) in want.iter().enumerate() {
            (self.kernel.step_inputs(&self.step_inputs(t), &mut state))
                .unwrap_or_else(|e| panic!("{e}"));
            worst = worst.max(normwise_error(self.read_back(&state), w, false));
        }
        worst
    }

    /// The worst error of one call for the sequence (which needs an input or
    /// an output to say how long it is): its output buffers at every step,
    /// then what [`Case::read_back`] reads after it.
    fn sequence_error(&self, want: &[Vec<f64>]) -> f64 {
        let (kernel, ir, batch, steps) = (self.kernel, self.ir, self.batch, self.steps);
        let out_len: usize = (0..ir.outputs.len())
            .map(|o| batch * kernel.output_len(o))
            .sum();
        if steps == 0 || (ir.inputs.is_empty() && out_len == 0) {
            return 0.0;
        }
        let mut state = self.fresh_state();
        let mut ys: Vec<Vec<f32>> = (0..ir.outputs.len())
            .map(|o| vec![f32::NAN; steps * batch * kernel.output_len(o)])
            .collect();
        if let ([x], [y]) = (&self.xs[..], &mut ys[..]) {
            kernel
                .run(x, &mut state, y)
                .unwrap_or_else(|e| panic!("{e}"));
        } else {
            let refs: Vec<&[f32]> = self.xs.iter().map(Vec::as_slice).collect();
            let mut outs: Vec<&mut [f32]> = ys.iter_mut().map(Vec::as_mut_slice).collect();
            kernel
                .run_with(&refs, &mut state, &mut outs)
                .unwrap_or_else(|e| panic!("{e}"));
        }
        let mut worst = 0.0f64;
        for (t, w) in want.iter().enumerate() {
            let got = (0..ir.outputs.len()).flat_map(|o| {
                let n = batch * kernel.output_len(o);
                ys[o][t * n..(t + 1) * n].iter().map(|&x| x as f64)
            });
            worst = worst.max(normwise_error(got, &w[..out_len], false));
        }
        worst.max(normwise_error(
            self.read_back(&state),
            &want[steps - 1],
            false,
        ))
    }
}

/// The IR text parser and verifier on arbitrary text: never a panic; what
/// verifies prints back to the same text, runs in the interpreter, has a
/// backward cell that runs (or an error), and plans.
pub fn ir_text(bytes: &[u8]) {
    let text = String::from_utf8_lossy(bytes);
    let Ok(cell) = ir::parse::parse(&text) else {
        return;
    };
    if ir::verify::verify(&cell).is_err() {
        return;
    }
    let printed = ir::print::print(&cell);
    let again = ir::parse::parse(&printed)
        .unwrap_or_else(|e| panic!("printed IR does not parse: {e}\n{printed}"));
    assert_eq!(
        ir::print::print(&again),
        printed,
        "print -> parse -> print changed the text"
    );
    // Keep the data small: the fuzzer may write `[1000000000]`.
    let small_type = |t: Type| match t {
        Type::Scalar => true,
        Type::Vector(n) => n <= 256,
        Type::Matrix(r, c) => r <= 256 && c <= 256,
    };
    // Parameters and ports too: one may be declared and never read.
    let small = cell.values.iter().all(|v| small_type(v.ty))
        && cell.params.iter().all(|p| small_type(p.ty))
        && (cell.inputs.iter())
            .chain(&cell.states)
            .chain(&cell.outputs)
            .all(|p| p.len <= 256);
    if !small {
        return;
    }
    let params = ParamValues(
        cell.params
            .iter()
            .map(|p| match p.ty {
                Type::Scalar => vec![0.5],
                Type::Vector(n) => vec![0.5; n],
                Type::Matrix(r, c) => vec![0.5; r * c],
            })
            .collect(),
    );
    let mut state = interp::State::zeros(&cell, 2).unwrap();
    let inputs: Vec<Vec<f64>> = cell.inputs.iter().map(|p| vec![0.25; 2 * p.len]).collect();
    let _ = interp::step(&cell, &params, &inputs, &mut state);
    // Its backward cell, when it has one, verifies (`backward` checks) and
    // runs.
    if let Ok(bw) = crate::grad::backward(&cell) {
        let mut adjoint = interp::State::zeros(&bw.cell, 2).unwrap();
        let inputs: Vec<Vec<f64>> = (bw.cell.inputs.iter())
            .map(|p| vec![0.25; 2 * p.len])
            .collect();
        let _ = interp::step(&bw.cell, &params, &inputs, &mut adjoint);
    }
    let mut legal = cell.clone();
    crate::opt::legalize(&mut legal);
    if ir::verify::verify(&legal).is_ok() {
        for variant in crate::Variant::ALL {
            for fuse in [false, true] {
                let _ = crate::codegen::plan::plan(&legal, variant, fuse);
            }
        }
    }
}

/// The ONNX reader on arbitrary bytes: an import or an error, never a panic,
/// an error message of bounded length; what imports is a cell that checks,
/// with weights that bind to it, and runs a short sequence as ONNX Runtime
/// would ([`crate::run::run_onnx`], every graph input given).
pub fn onnx_import(bytes: &[u8]) {
    check_import(crate::onnx::import(bytes));
}

/// The ONNX reader on a model with its external data: the first half of the
/// bytes is the model, the second half the contents of every file its
/// tensors name (plain names only), written beside it in a folder of this
/// process; then as [`onnx_import`].
pub fn onnx_external(bytes: &[u8]) {
    let (model, data) = bytes.split_at(bytes.len() / 2);
    onnx_with_data(model, data);
}

/// [`onnx_external`] of a model and a data file.
pub fn onnx_with_data(model: &[u8], data: &[u8]) {
    use std::sync::atomic::{AtomicU64, Ordering};
    static RUN: AtomicU64 = AtomicU64::new(0);
    let dir = std::env::temp_dir().join(format!(
        "cellc-fuzz-onnx-{}-{}",
        std::process::id(),
        RUN.fetch_add(1, Ordering::Relaxed)
    ));
    if std::fs::create_dir_all(&dir).is_err() {
        return;
    }
    let path = dir.join("model.onnx");
    let mut written = std::fs::write(&path, model).is_ok();
    if let Ok(g) = crate::onnx::proto::read_model(model) {
        for t in g.initializers.iter() {
            if let Some(e) = &t.external {
                let name = std::path::Path::new(e.location);
                if name.components().count() == 1 && !e.location.starts_with('.') {
                    written &= std::fs::write(dir.join(name), data).is_ok();
                }
            }
        }
    }
    if written {
        check_import(crate::onnx::import_file(&path));
    }
    let _ = std::fs::remove_dir_all(&dir);
}

fn check_import(imported: Result<crate::onnx::Imported, crate::WeightsError>) {
    match imported {
        Err(e) => assert!(e.0.len() < 2000, "a {} byte message", e.0.len()),
        Ok(imported) => {
            Cell::from_source(imported.cell_name, imported.cell_source)
                .unwrap_or_else(|e| panic!("the imported cell does not check: {e}"));
            // Small models only: the fuzzer may declare a large hidden size.
            if imported.hidden_size > 64 || imported.input_size > 64 {
                return;
            }
            let (steps, batch) = (
                imported.fixed_sizes.0.unwrap_or(3).min(8),
                imported.fixed_sizes.1.unwrap_or(2).min(8),
            );
            let mut inputs = Weights::new();
            let shape = if imported.batch_first {
                [batch, steps, imported.input_size]
            } else {
                [steps, batch, imported.input_size]
            };
            let _ = inputs.insert("x", &shape, vec![0.25; steps * batch * imported.input_size]);
            let slots = imported.layers * if imported.bidirectional { 2 } else { 1 };
            for (state, _) in &imported.state_inputs {
                let n = slots * batch * imported.hidden_size;
                let _ = inputs.insert(state, &[slots, batch, imported.hidden_size], vec![0.5; n]);
            }
            if imported.lengths_input.is_some() {
                let _ = inputs.insert_integers(
                    crate::run::LENGTHS,
                    &[batch],
                    vec![steps as i64; batch],
                );
            }
            let _ = crate::run::run_onnx(&imported, &inputs, &Options::default());
        }
    }
}

/// The safetensors reader on arbitrary bytes: weights or an error, never a
/// panic; what reads writes back to the same tensors.
pub fn safetensors(bytes: &[u8]) {
    let Ok(w) = Weights::from_safetensors_bytes(bytes) else {
        return;
    };
    let again = Weights::from_safetensors_bytes(
        &w.to_safetensors_bytes()
            .unwrap_or_else(|e| panic!("weights that read do not write: {e}")),
    )
    .unwrap_or_else(|e| panic!("written weights do not read: {e}"));
    assert_eq!(
        w.names().collect::<Vec<_>>(),
        again.names().collect::<Vec<_>>()
    );
    for name in w.names() {
        let (a, b) = (w.get(name), again.get(name));
        let bits = |t: Option<&crate::weights::Tensor>| {
            t.map(|t| {
                (
                    t.shape.clone(),
                    t.data.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
                )
            })
        };
        assert_eq!(bits(a), bits(b), "tensor `{name}` changed");
    }
}

/// `cellc run`'s shape inference on tensors of arbitrary names and shapes
/// (from the bytes) for an LSTM, a GRU or a random cell: a result whose
/// shapes follow the inputs', or an error, never a panic.
pub fn run_shapes(bytes: &[u8]) {
    let mut b = Bytes(bytes);
    let which = b.u8() % 3;
    let text = match which {
        0 => include_str!("../examples/lstm.rnn").to_string(),
        1 => include_str!("../examples/gru.rnn").to_string(),
        _ => crate::gen::random_cell(b.u64()),
    };
    let Ok(cell) = Cell::from_source("cell.rnn", &text) else {
        panic!("a shipped or generated cell does not check");
    };
    const NAMES: [&str; 12] = [
        "x",
        "h",
        "c",
        "y",
        "x0",
        "s0",
        "weight_ih_l0",
        "weight_hh_l0",
        "bias_ih_l0",
        "bias_hh_l0",
        "p0",
        "junk",
    ];
    let mut weights = Weights::new();
    let mut inputs = Weights::new();
    if which == 0 && b.u8() % 2 == 0 {
        // A consistent LSTM checkpoint and sequence, sometimes with one axis off.
        let (xd, hd) = (1 + (b.u8() % 6) as usize, 1 + (b.u8() % 6) as usize);
        let (t, bt) = ((b.u8() % 4) as usize, 1 + (b.u8() % 4) as usize);
        let off = |b: &mut Bytes| usize::from(b.u8().is_multiple_of(8));
        let shapes = [
            ("weight_ih_l0", vec![4 * hd, xd + off(&mut b)]),
            ("weight_hh_l0", vec![4 * hd + off(&mut b), hd]),
            ("bias_ih_l0", vec![4 * hd]),
            ("bias_hh_l0", vec![4 * hd]),
        ];
        for (name, shape) in shapes {
            let n = shape.iter().product();
            let _ = weights.insert(name, &shape, vec![0.125; n]);
        }
        let _ = inputs.insert("x", &[t, bt, xd], vec![0.5; t * bt * xd]);
        if b.u8() % 2 == 0 {
            let hh = hd + off(&mut b);
            let _ = inputs.insert("h", &[bt, hh], vec![0.25; bt * hh]);
        }
    }
    let tensors = b.u8() % 8;
    for _ in 0..tensors {
        let name = NAMES[(b.u8() % NAMES.len() as u8) as usize];
        let rank = b.u8() % 4;
        let shape: Vec<usize> = (0..rank).map(|_| (b.u8() % 9) as usize).collect();
        let n: usize = shape.iter().product();
        let data = vec![0.125f32; n];
        let target = if b.u8() % 2 == 0 {
            &mut weights
        } else {
            &mut inputs
        };
        let _ = target.insert(name, &shape, data);
    }
    if let Ok(out) = crate::run::run(&cell, &weights, &inputs, &[], &Options::default()) {
        // Every output is [T, B, len], like the inputs' leading axes.
        let Some(x) = cell
            .ir()
            .ok()
            .and_then(|ir| ir.inputs.first().map(|p| p.name.clone()))
            .and_then(|n| inputs.get(&n).cloned())
        else {
            return;
        };
        for name in out.names() {
            let t = out.get(name).map(|t| t.shape.clone()).unwrap_or_default();
            assert!(
                t.len() == 2 && t[0] == x.shape[1] || t.len() == 3 && t[..2] == x.shape[..2],
                "output `{name}` is {t:?} for input {:?}",
                x.shape
            );
        }
    }
}

/// Sequences run in pieces with a plan and threads from the bytes: each
/// piece's outputs and the final states agree with the interpreter, and with
/// the same pieces on one thread bit for bit.
pub fn sequences(bytes: &[u8]) {
    let mut b = Bytes(bytes);
    let seed = b.u64();
    let x = 1 + (b.u8() % 24) as u64;
    let h = 1 + (b.u8() % 40) as u64;
    let batch = 1 + (b.u8() % 9) as usize;
    let flags = b.u8();
    let plan = crate::Variant::ALL[(flags & 3) as usize];
    let threads = 2 + ((flags >> 2) & 1) as usize;
    let pieces: Vec<usize> = (0..1 + b.u8() % 3)
        .map(|_| 1 + (b.u8() % 12) as usize)
        .collect();
    let text = crate::gen::random_cell(seed);
    let cell = Cell::from_source("gen.rnn", &text)
        .and_then(|c| c.dims(&[("X", x), ("H", h)]))
        .unwrap_or_else(|e| panic!("the generator made an invalid cell: {e}\n{text}"));
    let ir = cell.ir().unwrap_or_else(|e| panic!("{e}"));
    let weights = Weights::random(&ir, seed);
    let run = |threads: usize| -> (Vec<Vec<f32>>, Vec<Vec<f32>>) {
        let opts = Options {
            threads: Some(threads),
            plan: Some(plan),
            ..Options::default()
        };
        let kernel = cell
            .compile(&weights, &opts)
            .unwrap_or_else(|e| panic!("compile failed: {e}\n{text}"));
        let mut state = kernel.new_state(batch).unwrap_or_else(|e| panic!("{e}"));
        let mut rng = crate::gen::Rng(seed ^ 0x77);
        let mut outs: Vec<Vec<f32>> = vec![Vec::new(); ir.outputs.len()];
        for &t in &pieces {
            let xs: Vec<Vec<f32>> = (0..ir.inputs.len())
                .map(|i| {
                    (0..t * batch * kernel.input_len(i))
                        .map(|_| rng.unit() as f32)
                        .collect()
                })
                .collect();
            let mut ys: Vec<Vec<f32>> = (0..ir.outputs.len())
                .map(|o| vec![0.0; t * batch * kernel.output_len(o)])
                .collect();
            let refs: Vec<&[f32]> = xs.iter().map(Vec::as_slice).collect();
            let mut views: Vec<&mut [f32]> = ys.iter_mut().map(Vec::as_mut_slice).collect();
            kernel
                .run_with(&refs, &mut state, &mut views)
                .unwrap_or_else(|e| panic!("{e}"));
            for (o, y) in ys.into_iter().enumerate() {
                outs[o].extend(y);
            }
        }
        let finals = kernel
            .state_names()
            .iter()
            .map(|n| state.get(n).unwrap_or_else(|e| panic!("{e}")))
            .collect();
        (outs, finals)
    };
    let one = run(1);
    let many = run(threads);
    assert!(
        one == many,
        "{threads} threads differ from 1: plan {plan:?}, batch {batch}, pieces {pieces:?}\n{text}"
    );
    // Against the interpreter, step by step, from zero states: with the
    // kernel's parameters, and with every parameter moved by one rounding (the
    // cell's own sensitivity, as in `differential`).
    let params = ParamValues::from_f32(&weights.resolve(&ir).unwrap_or_else(|e| panic!("{e}")));
    let reference = |params: &ParamValues| -> (Vec<Vec<f64>>, Vec<Vec<f64>>) {
        let mut state = interp::State::zeros(&ir, batch).unwrap();
        let mut rng = crate::gen::Rng(seed ^ 0x77);
        let mut outs: Vec<Vec<f64>> = vec![Vec::new(); ir.outputs.len()];
        for &t in &pieces {
            let xs: Vec<Vec<f64>> = ir
                .inputs
                .iter()
                .map(|p| {
                    (0..t * batch * p.len)
                        .map(|_| rng.unit() as f32 as f64)
                        .collect()
                })
                .collect();
            for s in 0..t {
                let step: Vec<Vec<f64>> = ir
                    .inputs
                    .iter()
                    .enumerate()
                    .map(|(i, p)| xs[i][s * batch * p.len..(s + 1) * batch * p.len].to_vec())
                    .collect();
                let want =
                    interp::step(&ir, params, &step, &mut state).unwrap_or_else(|e| panic!("{e}"));
                for (o, w) in want.into_iter().enumerate() {
                    outs[o].extend(w);
                }
            }
        }
        (outs, state.values)
    };
    let (want_y, want_s) = reference(&params);
    let (moved_y, moved_s) = reference(&params.nudged());
    let mut worst = 0.0f64;
    let mut sensitivity = 0.0f64;
    let pairs = one.0.iter().zip(&want_y).zip(&moved_y);
    for ((got, want), moved) in pairs.chain(one.1.iter().zip(&want_s).zip(&moved_s)) {
        worst = worst.max(normwise_error(got.iter().map(|&v| v as f64), want, false));
        sensitivity = sensitivity.max(normwise_error(moved.iter().copied(), want, true));
    }
    assert!(
        worst < 1e-4 + 30.0 * sensitivity,
        "error {worst:e} (sensitivity {sensitivity:e}): plan {plan:?}, batch {batch}, pieces {pieces:?}\n{text}"
    );
}
