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
    let x = 1 + (b.u8() % 40) as u64;
    let h = 1 + (b.u8() % 40) as u64;
    let batch = 1 + (b.u8() % 17) as usize;
    let steps = 1 + (b.u8() % 20) as usize;
    let flags = b.u8();
    let optimize = flags & 1 == 0;
    let scale: f32 = if flags & 2 == 0 { 1.0 } else { 50.0 };
    let text = crate::gen::random_cell(seed);
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
                ..Options::default()
            },
        )
        .unwrap_or_else(|e| panic!("compile failed: {e}\n{text}"));
    let params = weights.param_values(&ir).unwrap_or_else(|e| panic!("{e}"));
    let d = differential(&kernel, &ir, &params, batch, steps, seed, scale);
    assert!(
        d.worst < 1e-4 * scale as f64 + 30.0 * d.sensitivity,
        "jit against interpreter: error {:e} (sensitivity {:e}), x={x} h={h} batch={batch} steps={steps} optimize={optimize}\n{text}",
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

/// Runs `steps` steps of `kernel` (one `step_inputs` call each) and of the
/// interpreter with `reference` parameters (the kernel's weights, unless a test
/// perturbs them), from the same random states (in [-0.5, 0.5]) and inputs (in
/// [-1, 1] times `input_scale`) drawn from `seed`. Values beyond f32's range
/// overflow in the kernel, as they must, and are not compared.
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
    let mut state = kernel.new_state(batch);
    let nudged = reference.nudged();
    let mut ref_state = interp::State::zeros(ir, batch);
    let mut nudged_state = interp::State::zeros(ir, batch);
    for (s, name) in kernel.state_names().iter().enumerate() {
        let v: Vec<f32> = (0..batch * kernel.state_len(s))
            .map(|_| rng.unit() as f32 * 0.5)
            .collect();
        state.set(name, &v).unwrap_or_else(|e| panic!("{e}"));
        ref_state.values[s] = v.iter().map(|&x| x as f64).collect();
        nudged_state.values[s] = ref_state.values[s].clone();
    }
    let mut d = Differential {
        worst: 0.0,
        sensitivity: 0.0,
    };
    for _ in 0..steps {
        let xs: Vec<Vec<f32>> = (0..ir.inputs.len())
            .map(|i| {
                (0..batch * kernel.input_len(i))
                    .map(|_| rng.unit() as f32 * input_scale)
                    .collect()
            })
            .collect();
        let refs: Vec<&[f32]> = xs.iter().map(Vec::as_slice).collect();
        kernel
            .step_inputs(&refs, &mut state)
            .unwrap_or_else(|e| panic!("{e}"));
        let xs64: Vec<Vec<f64>> = xs
            .iter()
            .map(|v| v.iter().map(|&x| x as f64).collect())
            .collect();
        let outs =
            interp::step(ir, reference, &xs64, &mut ref_state).unwrap_or_else(|e| panic!("{e}"));
        let nudged_outs =
            interp::step(ir, &nudged, &xs64, &mut nudged_state).unwrap_or_else(|e| panic!("{e}"));
        let (mut got, mut want, mut moved) = (Vec::new(), Vec::new(), Vec::new());
        for (o, name) in kernel.output_names().iter().enumerate() {
            got.extend(
                kernel
                    .output(&state, name)
                    .unwrap_or_else(|e| panic!("{e}")),
            );
            want.extend(outs[o].iter().copied());
            moved.extend(nudged_outs[o].iter().copied());
        }
        for (s, name) in kernel.state_names().iter().enumerate() {
            got.extend(state.get(name).unwrap_or_else(|e| panic!("{e}")));
            want.extend(ref_state.values[s].iter().copied());
            moved.extend(nudged_state.values[s].iter().copied());
        }
        let representable = |w: &f64| w.is_finite() && w.abs() <= f32::MAX as f64;
        let norm = want
            .iter()
            .filter(|w| representable(w))
            .fold(1.0f64, |m, w| m.max(w.abs()));
        for ((g, w), m) in got.iter().zip(&want).zip(&moved) {
            if !representable(w) {
                continue;
            }
            d.worst = d.worst.max((*g as f64 - w).abs() / norm);
            if m.is_finite() {
                d.sensitivity = d.sensitivity.max((m - w).abs() / norm);
            }
        }
    }
    d
}

/// The IR text parser and verifier on arbitrary text: never a panic; what
/// verifies prints back to the same text, runs in the interpreter, and plans.
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
    let small = cell.values.iter().all(|v| match v.ty {
        Type::Scalar => true,
        Type::Vector(n) => n <= 256,
        Type::Matrix(r, c) => r <= 256 && c <= 256,
    });
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
    let mut state = interp::State::zeros(&cell, 2);
    let inputs: Vec<Vec<f64>> = cell.inputs.iter().map(|p| vec![0.25; 2 * p.len]).collect();
    let _ = interp::step(&cell, &params, &inputs, &mut state);
    let mut legal = cell.clone();
    crate::codegen::plan::legalize(&mut legal);
    if ir::verify::verify(&legal).is_ok() {
        for hoist_inputs in [false, true] {
            for gemm_products in [false, true] {
                let opts = crate::codegen::plan::PlanOptions {
                    fuse_epilogues: true,
                    hoist_inputs,
                    gemm_products,
                };
                let _ = crate::codegen::plan::plan(&legal, opts);
            }
        }
    }
}
