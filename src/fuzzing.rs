//! The bodies of the fuzz targets (`fuzz/fuzz_targets/`), here so that the normal
//! test suite runs them too (`tests/fuzz_smoke.rs`). Each takes arbitrary bytes
//! and panics only on a real bug: a crash of the compiler, an IR that does not
//! round-trip, or native code that disagrees with the interpreter.

use crate::interp::{self, ParamValues};
use crate::ir::{self, Type};
use crate::{Cell, Options, Weights};

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
/// `tests/jit.rs`: 1e-4 norm-wise, times the input magnitude, plus 30 times how
/// far the interpreter itself moves when every parameter moves by one f32
/// rounding, which a chaotic random cell amplifies).
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
    let params = ParamValues(
        weights
            .resolve(&ir)
            .unwrap_or_else(|e| panic!("{e}"))
            .into_iter()
            .map(|v| v.into_iter().map(f64::from).collect())
            .collect(),
    );
    let mut rng = crate::gen::Rng(seed ^ 0xF00D);
    let mut state = kernel.new_state(batch);
    let mut reference = interp::State::zeros(&ir, batch);
    let nudged_params = params.nudged();
    let mut nudged = interp::State::zeros(&ir, batch);
    let mut sensitivity = 0.0f64;
    for (s, name) in kernel.state_names().iter().enumerate() {
        let v: Vec<f32> = (0..batch * kernel.state_len(s))
            .map(|_| rng.unit() as f32 * 0.5)
            .collect();
        let _ = state.set(name, &v);
        reference.values[s] = v.iter().map(|&x| x as f64).collect();
        nudged.values[s] = reference.values[s].clone();
    }
    for step in 0..steps {
        let xs: Vec<Vec<f32>> = (0..ir.inputs.len())
            .map(|i| {
                (0..batch * kernel.input_len(i))
                    .map(|_| rng.unit() as f32 * scale)
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
            interp::step(&ir, &params, &xs64, &mut reference).unwrap_or_else(|e| panic!("{e}"));
        let nudged_outs =
            interp::step(&ir, &nudged_params, &xs64, &mut nudged).unwrap_or_else(|e| panic!("{e}"));
        let mut got = Vec::new();
        let mut want = Vec::new();
        let mut moved = Vec::new();
        for (o, name) in kernel.output_names().iter().enumerate() {
            got.extend(kernel.output(&state, name).unwrap_or_default());
            want.extend(outs[o].iter().copied());
            moved.extend(nudged_outs[o].iter().copied());
        }
        for (s, name) in kernel.state_names().iter().enumerate() {
            got.extend(state.get(name).unwrap_or_default());
            want.extend(reference.values[s].iter().copied());
            moved.extend(nudged.values[s].iter().copied());
        }
        let representable = |w: &f64| w.is_finite() && w.abs() <= f32::MAX as f64;
        let norm = want
            .iter()
            .filter(|w| representable(w))
            .fold(1.0f64, |m, w| m.max(w.abs()));
        for (m, w) in moved.iter().zip(&want) {
            if representable(w) && m.is_finite() {
                sensitivity = sensitivity.max((m - w).abs() / norm);
            }
        }
        for (g, w) in got.iter().zip(&want) {
            if !representable(w) {
                continue;
            }
            let err = (*g as f64 - w).abs() / norm;
            assert!(
                err < 1e-4 * scale as f64 + 30.0 * sensitivity,
                "step {step}: jit {g} vs interpreter {w} (error {err:e}), x={x} h={h} batch={batch} optimize={optimize}\n{text}"
            );
        }
    }
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
