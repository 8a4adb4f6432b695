//! Gradients through time (`cellc::grad`) against central finite
//! differences in f64, on every shipped cell and on random cells: of the
//! parameters, the inputs and the initial states, for a loss that weighs
//! every output of every step and every final state by random numbers (so
//! the output and final-state adjoints are those numbers).
//!
//! Tolerance: |analytic - numeric| <= 1e-6 * max(1, |analytic|). The central
//! difference with step 1e-5 errs by about 1e-10 times the third derivative
//! (truncation) plus 1e-16 |L| / 1e-5 (rounding): far below 1e-6 on these
//! small cells, while a wrong derivative (a dropped term, a sign) is off by
//! the size of the gradient itself. A point within 1e-5 of a kink (relu,
//! min, max, abs) would differ; random points land there with probability
//! about 1e-5 per element.

mod common;

use cellc::grad::{self, Gradients};
use cellc::interp::{self, ParamValues};
use cellc::ir::Cell;
use common::Rng;

/// A sequence, its initial states, and the loss's weights.
struct Problem {
    steps: usize,
    batch: usize,
    params: ParamValues,
    xs: Vec<Vec<f64>>,
    h0: Vec<Vec<f64>>,
    d_outputs: Vec<Vec<f64>>,
    d_final: Vec<Vec<f64>>,
}

impl Problem {
    fn random(cell: &Cell, steps: usize, batch: usize, seed: u64) -> Problem {
        let mut rng = Rng(seed);
        Problem {
            steps,
            batch,
            params: common::random_params(cell, &mut rng),
            xs: (cell.inputs.iter())
                .map(|p| rng.vec(steps * batch * p.len, 1.0))
                .collect(),
            h0: (cell.states.iter())
                .map(|p| rng.vec(batch * p.len, 0.5))
                .collect(),
            d_outputs: (cell.outputs.iter())
                .map(|p| rng.vec(steps * batch * p.len, 1.0))
                .collect(),
            d_final: (cell.states.iter())
                .map(|p| rng.vec(batch * p.len, 1.0))
                .collect(),
        }
    }

    /// `Σ <d_outputs, y> + Σ <d_final, h_T>`, by the interpreter.
    fn loss(&self, cell: &Cell) -> f64 {
        let mut state = interp::State {
            batch: self.batch,
            values: self.h0.clone(),
        };
        let mut loss = 0.0;
        for t in 0..self.steps {
            let x: Vec<Vec<f64>> = (cell.inputs.iter().zip(&self.xs))
                .map(|(p, x)| {
                    let n = self.batch * p.len;
                    x[t * n..(t + 1) * n].to_vec()
                })
                .collect();
            let ys = interp::step(cell, &self.params, &x, &mut state).unwrap();
            for ((p, y), d) in cell.outputs.iter().zip(&ys).zip(&self.d_outputs) {
                let n = self.batch * p.len;
                loss += dot(y, &d[t * n..(t + 1) * n]);
            }
        }
        for (h, d) in state.values.iter().zip(&self.d_final) {
            loss += dot(h, d);
        }
        loss
    }

    fn gradients(&self, cell: &Cell) -> Gradients {
        grad::through_time(
            cell,
            &self.params,
            &self.xs,
            &self.h0,
            self.steps,
            self.batch,
            &self.d_outputs,
            &self.d_final,
        )
        .unwrap_or_else(|e| panic!("{}: {e}", cell.name))
    }
}

fn dot(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// Which of the problem's numbers a check moves.
#[derive(Clone, Copy, Debug)]
enum Wrt {
    Param(usize),
    Input(usize),
    State(usize),
}

fn slot(p: &mut Problem, wrt: Wrt) -> &mut Vec<f64> {
    match wrt {
        Wrt::Param(k) => &mut p.params.0[k],
        Wrt::Input(k) => &mut p.xs[k],
        Wrt::State(k) => &mut p.h0[k],
    }
}

/// Compares up to `per` random elements of each parameter, input and initial
/// state with central differences; returns how many were compared.
fn check(cell: &Cell, p: &mut Problem, per: usize, seed: u64) -> usize {
    let g = p.gradients(cell);
    let base = p.loss(cell);
    if !base.is_finite() {
        return 0;
    }
    let mut rng = Rng(seed ^ 0xabc);
    let mut compared = 0;
    let wrts = (0..cell.params.len())
        .map(Wrt::Param)
        .chain((0..cell.inputs.len()).map(Wrt::Input))
        .chain((0..cell.states.len()).map(Wrt::State));
    for wrt in wrts {
        let analytic = match wrt {
            Wrt::Param(k) => &g.params[k],
            Wrt::Input(k) => &g.inputs[k],
            Wrt::State(k) => &g.initial_states[k],
        };
        let n = slot(p, wrt).len();
        assert_eq!(analytic.len(), n, "{}: {wrt:?}", cell.name);
        for _ in 0..per.min(n) {
            let i = rng.below(n);
            let eps = 1e-5;
            let x = slot(p, wrt)[i];
            slot(p, wrt)[i] = x + eps;
            let up = p.loss(cell);
            slot(p, wrt)[i] = x - eps;
            let down = p.loss(cell);
            slot(p, wrt)[i] = x;
            if !(up.is_finite() && down.is_finite()) {
                continue;
            }
            let numeric = (up - down) / (2.0 * eps);
            let a = analytic[i];
            assert!(
                (a - numeric).abs() <= 1e-6 * a.abs().max(1.0),
                "{}: d loss / d {wrt:?}[{i}] is {a}, finite differences give {numeric}",
                cell.name
            );
            compared += 1;
        }
    }
    compared
}

#[test]
fn every_shipped_cell_matches_finite_differences() {
    let mut total = 0;
    for (k, path) in common::examples().iter().enumerate() {
        let cell = common::sized(path, 3, 4);
        let ir = cell.ir().unwrap();
        let mut p = Problem::random(&ir, 3, 2, k as u64);
        let n = check(&ir, &mut p, 6, k as u64);
        assert!(n > 0, "{}: nothing compared", common::stem(path));
        total += n;
    }
    // 15 cells, each with several parameters, inputs and states.
    assert!(total > 500, "{total}");
}

#[test]
fn random_cells_match_finite_differences() {
    let mut total = 0;
    for seed in 0..40u64 {
        let text = cellc::gen::random_cell(seed);
        let cell = cellc::Cell::from_source("random.rnn", &text)
            .unwrap()
            .dims(&[("X", 3), ("H", 5)])
            .unwrap();
        let ir = cell.ir().unwrap();
        let mut p = Problem::random(&ir, 3, 2, seed);
        total += check(&ir, &mut p, 4, seed);
    }
    assert!(total > 500, "{total}");
}

/// The backward cell is a cell of the IR: it verifies, prints and parses
/// back to the same text, and declares the adjoint of each state as its
/// state.
#[test]
fn backward_cells_print_parse_and_verify() {
    for path in common::examples() {
        let ir = common::sized(&path, 3, 4).ir().unwrap();
        let bw = grad::backward(&ir).unwrap();
        cellc::ir::verify::verify(&bw.cell).unwrap();
        let text = cellc::ir::print::print(&bw.cell);
        let again = cellc::ir::parse::parse(&text).unwrap();
        assert_eq!(cellc::ir::print::print(&again), text);
        assert_eq!(bw.cell.states.len(), ir.states.len());
        for (d, s) in bw.cell.states.iter().zip(&ir.states) {
            assert_eq!(d.len, s.len);
        }
    }
}

/// An optimized cell (products and regions) is refused with a message that
/// says what to differentiate instead.
#[test]
fn optimized_cells_are_refused() {
    let cell = common::cell_with("lstm", &[("X", 3), ("H", 4)]);
    let opt = cell.optimized(&Default::default()).unwrap();
    let e = grad::backward(&opt.ir).unwrap_err().to_string();
    assert!(e.contains("before the optimizer"), "{e}");
}

/// Snapshots of every shipped cell's backward cell, as derived and after the
/// optimizer (`cellc compile --emit grad-stages` prints both and the passes
/// between).
#[test]
fn backward_cell_snapshots() {
    for path in common::examples() {
        let stem = common::stem(&path);
        let cell = cellc::Cell::from_file(&path).unwrap();
        let mut stages = Vec::new();
        let optimized = cell
            .backward_optimized_with_dumps(&Default::default(), &mut |name, ir| {
                stages.push((name.to_string(), cellc::ir::print::print(ir)));
            })
            .unwrap();
        assert_eq!(stages[0].0, "grad");
        insta::assert_snapshot!(format!("grad_{stem}"), stages[0].1);
        insta::assert_snapshot!(
            format!("grad_{stem}_optimized"),
            cellc::ir::print::print(&optimized.ir)
        );
    }
}

/// The values of a [`grad::Transposed`] cell's parameters from the forward
/// cell's.
fn transposed_values(fwd: &Cell, t: &grad::Transposed, params: &ParamValues) -> ParamValues {
    ParamValues(
        (t.sources.iter())
            .map(|s| match *s {
                grad::ParamSource::Same(p) => params.0[p.index()].clone(),
                grad::ParamSource::Transposed(p) => {
                    let cellc::ir::Type::Matrix(r, c) = fwd.params[p.index()].ty else {
                        panic!("not a matrix")
                    };
                    let w = &params.0[p.index()];
                    (0..c * r).map(|k| w[(k % r) * c + k / r]).collect()
                }
            })
            .collect(),
    )
}

/// The backward cell with its transposed products as products of
/// transposed parameters computes what it computed (to rounding: the sums
/// are the same in f64), and after the optimizer each operand's adjoints are
/// one product: an LSTM's backward step has one, `[Uᵀ; Wᵀ]` over the stacked
/// gate adjoints (the tape holds the gates' pre-activations: no forward
/// product is recomputed).
#[test]
fn transposed_products_compute_the_same_and_concatenate() {
    for (k, path) in common::examples().iter().enumerate() {
        let ir = common::sized(path, 3, 4).ir().unwrap();
        let bw = grad::backward(&ir).unwrap();
        let t = grad::transpose_products(&bw.cell);
        cellc::ir::verify::verify(&t.cell).unwrap();
        assert!(!cellc::ir::print::print(&t.cell).contains("matvec_t"));
        let mut rng = Rng(k as u64);
        let params = common::random_params(&ir, &mut rng);
        let tparams = transposed_values(&ir, &t, &params);
        let batch = 2;
        let inputs: Vec<Vec<f64>> = (bw.cell.inputs.iter())
            .map(|p| rng.vec(batch * p.len, 1.0))
            .collect();
        let start: Vec<Vec<f64>> = (bw.cell.states.iter())
            .map(|p| rng.vec(batch * p.len, 1.0))
            .collect();
        let run = |cell: &Cell, params: &ParamValues| {
            let mut state = interp::State {
                batch,
                values: start.clone(),
            };
            let outs = interp::step(cell, params, &inputs, &mut state).unwrap();
            (outs, state.values)
        };
        let (a, sa) = run(&bw.cell, &params);
        let (b, sb) = run(&t.cell, &tparams);
        for (x, y) in a
            .iter()
            .flatten()
            .chain(sa.iter().flatten())
            .zip(b.iter().flatten().chain(sb.iter().flatten()))
        {
            assert!(
                (x - y).abs() <= 1e-12 * x.abs().max(1.0) || (x.is_nan() && y.is_nan()),
                "{}: {x} against {y}",
                common::stem(path)
            );
        }
    }
    let ir = common::sized(&common::example_path("lstm"), 3, 4)
        .ir()
        .unwrap();
    let t = grad::transpose_products(&grad::backward(&ir).unwrap().cell);
    let mut cell = t.cell.clone();
    let mut ctx = cellc::opt::Ctx {
        source: None,
        remarks: Vec::new(),
    };
    cellc::opt::optimize(&mut cell, &Default::default(), &mut ctx, &mut |_, _| {}).unwrap();
    assert_eq!(
        cell.product_count(),
        1,
        "{}",
        cellc::ir::print::print(&cell)
    );
}
