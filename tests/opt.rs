//! The optimizer: snapshots after every pass, the expected product counts of every
//! example, the legality cases spelled out in the issue, idempotence, and the
//! interpreter on optimized IR against the interpreter on the original.

mod common;

use cellc::interp::{self, ParamValues, State};
use cellc::ir::{self, Op, Type, Value};
use cellc::opt;

fn example(name: &str) -> cellc::Cell {
    common::cell(name)
}

fn optimized(cell: &cellc::Cell) -> ir::Cell {
    cell.optimized(&opt::Options::default()).unwrap().ir
}

#[test]
fn snapshots_after_every_pass() {
    for path in common::examples() {
        let stem = common::stem(&path);
        let cell = cellc::Cell::from_file(&path).unwrap();
        let mut stages = Vec::new();
        cell.optimized_with_dumps(&opt::Options::default(), &mut |name, ir| {
            stages.push((name.to_string(), ir::print::print(ir)));
        })
        .unwrap();
        assert_eq!(stages.len(), opt::stage_names().len());
        for (name, text) in stages.into_iter().skip(1) {
            insta::assert_snapshot!(format!("{stem}_after_{name}"), text);
        }
    }
}

#[test]
fn remarks_snapshots() {
    for name in ["gru", "lstmp", "gru_reset_before", "layernorm_lstm"] {
        let cell = example(name);
        let remarks = cell.optimized(&opt::Options::default()).unwrap().remarks;
        let text = cell
            .render_remarks(&remarks)
            .replace(env!("CARGO_MANIFEST_DIR"), "");
        insta::assert_snapshot!(format!("remarks_{name}"), text);
    }
}

/// Products per step before and after, for every example.
#[test]
fn product_counts() {
    // (cell, products before, after, element-wise passes after)
    let expected = [
        ("lstm", 8, 1, 1),
        ("gru", 6, 1, 1),
        ("gru_reset_before", 6, 2, 2),
        ("lstmp", 9, 2, 1),
        ("rnn_tanh", 2, 1, 1),
        ("rnn_relu", 2, 1, 1),
        ("mgu", 4, 2, 2),
        ("cifg", 6, 1, 1),
        ("lstm_proj", 9, 2, 1),
        ("onnx_lstm", 8, 1, 1),
        ("onnx_gru", 6, 1, 1),
        ("peephole_lstm", 8, 1, 1),
        ("hard_sigmoid_gru", 6, 2, 2),
        ("indrnn", 1, 1, 1),
        ("sru", 3, 1, 1),
        // Each layer norm is two reductions and a pass after each.
        ("layernorm_lstm", 8, 1, 14),
        ("layernorm_gru", 6, 1, 10),
    ];
    assert_eq!(
        expected.len(),
        common::examples().len(),
        "a new example needs its counts here"
    );
    for (name, before, after, passes) in expected {
        let cell = example(name);
        let b = cellc::ir::stats::stats(&cell.ir().unwrap());
        let a = cellc::ir::stats::stats(&optimized(&cell));
        assert_eq!((b.products, a.products), (before, after), "{name}");
        // One fused element-wise pass where the products leave work to do.
        assert_eq!(a.elementwise_passes, passes, "{name}");
        // Fusion never reads more weight bytes.
        assert!(a.weight_bytes_per_step <= b.weight_bytes_per_step, "{name}");
    }
}

fn products(ir: &ir::Cell) -> Vec<&ir::Product> {
    ir.insts
        .iter()
        .filter_map(|i| match &i.op {
            Op::Product(p) => Some(p),
            _ => None,
        })
        .collect()
}

fn param_name(ir: &ir::Cell, v: Value) -> String {
    match ir.op_of(v) {
        Op::Param(k) => ir.params[k.index()].name.clone(),
        other => panic!("not a parameter: {other:?}"),
    }
}

/// Every matrix parameter is read by exactly one row block of one product.
fn assert_each_weight_read_once(ir: &ir::Cell) {
    let mut read: Vec<String> = products(ir)
        .iter()
        .flat_map(|p| p.rows.iter().flat_map(|r| r.weights.iter().flatten()))
        .map(|w| param_name(ir, *w))
        .collect();
    read.sort();
    let mut all: Vec<String> = ir
        .params
        .iter()
        .filter(|p| matches!(p.ty, Type::Matrix(..)))
        .map(|p| p.name.clone())
        .collect();
    all.sort();
    assert_eq!(read, all);
}

/// The row block that reads `weight`, as (weight names, bias names).
fn block_of(ir: &ir::Cell, weight: &str) -> (Vec<String>, Vec<String>) {
    for p in products(ir) {
        for r in &p.rows {
            let ws: Vec<String> = r
                .weights
                .iter()
                .flatten()
                .map(|w| param_name(ir, *w))
                .collect();
            if ws.iter().any(|w| w == weight) {
                let bs = r.biases.iter().map(|b| param_name(ir, *b)).collect();
                return (ws, bs);
            }
        }
    }
    panic!("{weight} is in no product");
}

/// PyTorch's GRU: `W_hn @ h` is multiplied by `r` before it meets `W_in @ x`, so
/// it must not be concatenated with it, and `b_hn` must not fold into `b_in`. Its
/// rows still stack with the other gates': one product, no weight read twice.
#[test]
fn gru_reset_gate_is_not_concatenated() {
    let ir = optimized(&example("gru"));
    assert_eq!(products(&ir).len(), 1);
    assert_each_weight_read_once(&ir);
    assert_eq!(
        block_of(&ir, "W_hn"),
        (vec!["W_hn".into()], vec!["b_hn".into()])
    );
    assert_eq!(
        block_of(&ir, "W_in"),
        (vec!["W_in".into()], vec!["b_in".into()])
    );
    assert_eq!(
        block_of(&ir, "W_ir"),
        (
            vec!["W_ir".into(), "W_hr".into()],
            vec!["b_ir".into(), "b_hr".into()]
        )
    );
}

/// The original GRU: `W_hn @ (r * h)` reads this step's `r`, so it is a second
/// product, after the first.
#[test]
fn gru_reset_before_has_a_dependent_second_product() {
    let ir = optimized(&example("gru_reset_before"));
    let ps = products(&ir);
    assert_eq!(ps.len(), 2);
    assert_each_weight_read_once(&ir);
    let stage = cellc::ir::analysis::stages(&ir);
    let second = ir
        .insts
        .iter()
        .find(|i| matches!(&i.op, Op::Product(p) if p.rows.iter().any(|r| r.weights.iter().flatten().any(|w| param_name(&ir, *w) == "R_n"))))
        .unwrap();
    assert_eq!(stage[second.results[0].index()], 2);
    // Its input is computed by the first stage's fused region (`r * h`).
    let Op::Product(p) = &second.op else {
        unreachable!()
    };
    assert!(p
        .inputs
        .iter()
        .any(|v| matches!(ir.op_of(*v), Op::Fused(_))));
}

/// LSTMP: the gate products stack into one; the projection is a second, dependent
/// product; peepholes are element-wise and belong to the epilogue.
#[test]
fn lstmp_projection_and_peepholes() {
    let ir = optimized(&example("lstmp"));
    let ps = products(&ir);
    assert_eq!(ps.len(), 2);
    assert_each_weight_read_once(&ir);
    assert_eq!(ps[0].rows.len(), 4);
    assert_eq!(block_of(&ir, "W_ym"), (vec!["W_ym".into()], vec![]));
    assert_eq!(
        block_of(&ir, "W_ix").0,
        vec!["W_ix".to_string(), "W_ir".to_string()]
    );
    // The peephole vectors are read by the fused region, not by any product.
    for peep in ["w_ic", "w_fc", "w_oc"] {
        let v = ir
            .values
            .iter()
            .position(|d| matches!(ir.insts[d.inst.index()].op, Op::Param(k) if ir.params[k.index()].name == peep))
            .map(|i| Value(i as u32))
            .unwrap();
        let readers: Vec<&Op> = ir
            .insts
            .iter()
            .map(|i| &i.op)
            .filter(|op| op.operands().contains(&v))
            .collect();
        assert!(!readers.is_empty());
        assert!(
            readers.iter().all(|op| matches!(op, Op::Fused(_))),
            "{peep}"
        );
    }
}

#[test]
fn pipeline_is_idempotent() {
    for path in common::examples() {
        let cell = cellc::Cell::from_file(&path).unwrap();
        let once = optimized(&cell);
        let mut twice = once.clone();
        let mut ctx = opt::Ctx::default();
        let changed = opt::optimize(
            &mut twice,
            &opt::Options::default(),
            &mut ctx,
            &mut |_, _| {},
        )
        .unwrap();
        assert_eq!(
            ir::print::print(&twice),
            ir::print::print(&once),
            "{}",
            path.display()
        );
        // And every pass says so.
        assert!(changed.is_empty(), "{}: {changed:?}", path.display());
        // The first run changed something (every example has a product).
        let mut fresh = cell.ir().unwrap();
        let first = opt::optimize(
            &mut fresh,
            &opt::Options::default(),
            &mut opt::Ctx::default(),
            &mut |_, _| {},
        )
        .unwrap();
        assert!(!first.is_empty(), "{}", path.display());
    }
}

/// Runs original and optimized IR in the interpreter on the same random data.
fn assert_same_behaviour(
    original: &ir::Cell,
    optimized: &ir::Cell,
    seed: u64,
    batch: usize,
    steps: usize,
) {
    let mut rng = common::Rng(seed);
    let params: ParamValues = common::random_params(original, &mut rng);
    let mut s1 = State::zeros(original, batch).unwrap();
    for v in &mut s1.values {
        *v = rng.vec(v.len(), 1.0);
    }
    let mut s2 = s1.clone();
    for step in 0..steps {
        let xs: Vec<Vec<f64>> = original
            .inputs
            .iter()
            .map(|p| rng.vec(batch * p.len, 2.0))
            .collect();
        let o1 = interp::step(original, &params, &xs, &mut s1).unwrap();
        let o2 = interp::step(optimized, &params, &xs, &mut s2).unwrap();
        for (a, b) in o1
            .iter()
            .flatten()
            .zip(o2.iter().flatten())
            .chain(s1.values.iter().flatten().zip(s2.values.iter().flatten()))
        {
            // f64 sums in another order: agreement to 1e-12 relative.
            let ok = (a - b).abs() <= 1e-12 * a.abs().max(b.abs()).max(1.0)
                || (a.is_nan() && b.is_nan())
                || a == b;
            assert!(
                ok,
                "step {step}: {a} vs {b}\n{}",
                ir::print::print(optimized)
            );
        }
    }
}

#[test]
fn optimized_examples_compute_the_same() {
    for path in common::examples() {
        let cell = cellc::Cell::from_file(&path).unwrap();
        // The sizes each example has (sru has no X; lstmp also has P).
        let dims: Vec<(&str, u64)> = [("X", 5), ("H", 7), ("P", 3)]
            .into_iter()
            .filter(|(n, _)| cell.dim_names().iter().any(|d| d == n))
            .collect();
        let cell = cell.dims(&dims).unwrap();
        let original = cell.ir().unwrap();
        let opt = optimized(&cell);
        for seed in 0..3 {
            assert_same_behaviour(&original, &opt, seed, 3, 4);
        }
    }
}

/// A wrong fusion of the GRU's `n` gate (W_hn @ h concatenated with W_in @ x,
/// hand-written below) computes something else, and the comparison sees it.
#[test]
fn the_differential_check_catches_a_wrong_gru_fusion() {
    let cell = example("gru").dims(&[("X", 3), ("H", 4)]).unwrap();
    let original = cell.ir().unwrap();
    let good = ir::print::print(&optimized(&cell));
    // The naive fusion: W_hn joins W_in's row block with b_hn, and r scales the
    // whole concatenated sum instead of the recurrent term alone.
    let bad = good
        .replace("    [v4, _] + v10 ; n\n", "    [v4, v7] + v10 + v13 ; n\n")
        .replace("e3 = add a3, e2", "e3 = mul e0, a3");
    assert_ne!(
        bad, good,
        "the hand-made miscompile no longer applies:\n{good}"
    );
    let bad = ir::parse::parse(&bad).unwrap();
    ir::verify::verify(&bad).unwrap();
    let result = std::panic::catch_unwind(|| assert_same_behaviour(&original, &bad, 7, 2, 2));
    assert!(result.is_err(), "the wrong fusion went unnoticed");
}

mod random {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

        /// Random well-typed cells: optimized and original agree to 1e-12 (f64).
        #[test]
        fn random_cells_optimize_correctly(seed in any::<u64>(), x in 1u64..6, h in 1u64..9, batch in 1usize..4) {
            let text = cellc::gen::random_cell(seed);
            let cell = cellc::Cell::from_source("random.rnn", &text)
                .unwrap_or_else(|e| panic!("{e}\n{text}"))
                .dims(&[("X", x), ("H", h)])
                .unwrap();
            let original = cell.ir().unwrap();
            let opt = optimized(&cell);
            assert_same_behaviour(&original, &opt, seed, batch, 3);
            // Idempotent on random cells too.
            let mut again = opt.clone();
            opt::optimize(&mut again, &opt::Options::default(), &mut opt::Ctx::default(), &mut |_, _| {}).unwrap();
            prop_assert_eq!(ir::print::print(&again), ir::print::print(&opt));
            // Never more products than before.
            prop_assert!(opt.product_count() <= original.product_count());
        }
    }
}
