//! The generated activations against f64: maximum error over a dense sweep of
//! [-30, 30], range invariants, monotonicity, and the special values. The bounds
//! asserted here are the ones documented in `src/codegen/vecmath.rs`.

// Tests and programs print what they measure.
#![allow(clippy::print_stdout, clippy::print_stderr)]

use cellc::{Cell, Options, Weights};

/// Applies `func` to `xs` with JIT-compiled code.
fn jit_apply(func: &str, xs: &[f32]) -> Vec<f32> {
    let n = 1000;
    let src = format!("dim N = {n}\ninput x: [N]\noutput y: [N]\ny = {func}(x)\n");
    let cell = Cell::from_source("act.rnn", &src).unwrap();
    let kernel = cell.compile(&Weights::new(), &Options::default()).unwrap();
    let batch = xs.len().div_ceil(n);
    let mut input = xs.to_vec();
    input.resize(batch * n, 0.0);
    let mut state = kernel.new_state(batch).unwrap();
    kernel.step(&input, &mut state).unwrap();
    let mut y = kernel.output(&state, "y").unwrap();
    y.truncate(xs.len());
    y
}

fn sweep() -> Vec<f32> {
    (0..=600_000).map(|i| -30.0 + i as f32 * 1e-4).collect()
}

fn sigmoid64(x: f64) -> f64 {
    1.0 / (1.0 + (-x).exp())
}

struct Errors {
    abs: f64,
    rel: f64,
}

fn errors(xs: &[f32], ys: &[f32], f: fn(f64) -> f64, rel_floor: f64) -> Errors {
    let mut e = Errors { abs: 0.0, rel: 0.0 };
    for (&x, &y) in xs.iter().zip(ys) {
        let want = f(x as f64);
        let d = (y as f64 - want).abs();
        e.abs = e.abs.max(d);
        if want.abs() > rel_floor {
            e.rel = e.rel.max(d / want.abs());
        }
    }
    e
}

fn assert_monotone(xs: &[f32], ys: &[f32], name: &str) {
    for i in 1..ys.len() {
        assert!(
            ys[i] >= ys[i - 1],
            "{name} decreases between {} ({}) and {} ({})",
            xs[i - 1],
            ys[i - 1],
            xs[i],
            ys[i]
        );
    }
}

#[test]
fn sigmoid_error_range_and_monotonicity() {
    let xs = sweep();
    let ys = jit_apply("sigmoid", &xs);
    let e = errors(&xs, &ys, sigmoid64, 0.0);
    eprintln!("sigmoid: max abs error {:.3e}", e.abs);
    assert!(e.abs <= 1e-7, "max abs error {}", e.abs);
    assert!(ys.iter().all(|&y| (0.0..=1.0).contains(&y)));
    assert_monotone(&xs, &ys, "sigmoid");
}

#[test]
fn tanh_error_range_and_monotonicity() {
    let xs = sweep();
    let ys = jit_apply("tanh", &xs);
    let e = errors(&xs, &ys, f64::tanh, 0.0);
    eprintln!("tanh: max abs error {:.3e}", e.abs);
    assert!(e.abs <= 1e-7, "max abs error {}", e.abs);
    // Relative accuracy near zero, where tanh(x) ~ x.
    let small: Vec<f32> = xs
        .iter()
        .copied()
        .filter(|x| x.abs() < 0.625 && *x != 0.0)
        .collect();
    let ys_small = jit_apply("tanh", &small);
    let es = errors(&small, &ys_small, f64::tanh, 0.0);
    eprintln!("tanh: max rel error below 0.625 {:.3e}", es.rel);
    assert!(es.rel <= 1e-7, "max rel error {}", es.rel);
    assert!(ys.iter().all(|&y| (-1.0..=1.0).contains(&y)));
    assert_monotone(&xs, &ys, "tanh");
}

#[test]
fn exp_relative_error() {
    // exp over the range where its f32 result is a normal number.
    let xs: Vec<f32> = (0..=1_740_000).map(|i| -87.0 + i as f32 * 1e-4).collect();
    let ys = jit_apply("exp", &xs);
    let e = errors(&xs, &ys, f64::exp, 0.0);
    eprintln!("exp: max rel error {:.3e}", e.rel);
    assert!(e.rel <= 1e-7, "max rel error {}", e.rel);
    assert_monotone(&xs, &ys, "exp");
}

#[test]
fn special_values() {
    let xs = [
        1e4f32,
        -1e4,
        f32::INFINITY,
        f32::NEG_INFINITY,
        f32::NAN,
        0.0,
        -0.0,
        88.7,
        89.5,
        -100.0,
        -110.0,
        f32::MAX,
        f32::MIN,
        1e-30,
    ];
    let sig = jit_apply("sigmoid", &xs);
    let tanh = jit_apply("tanh", &xs);
    let exp = jit_apply("exp", &xs);
    let relu = jit_apply("relu", &xs);
    assert_eq!(&sig[..4], &[1.0, 0.0, 1.0, 0.0]);
    assert_eq!(&tanh[..4], &[1.0, -1.0, 1.0, -1.0]);
    assert_eq!(&exp[..4], &[f32::INFINITY, 0.0, f32::INFINITY, 0.0]);
    assert!(sig[4].is_nan() && tanh[4].is_nan() && exp[4].is_nan() && relu[4].is_nan());
    assert_eq!((sig[5], tanh[5], exp[5]), (0.5, 0.0, 1.0));
    // exp overflows exactly where the true value passes f32::MAX (88.72...).
    assert!(exp[7].is_finite() && (exp[7] as f64 / (88.7f32 as f64).exp() - 1.0).abs() < 1e-6);
    assert_eq!(exp[8], f32::INFINITY);
    // ... and underflows gradually through the subnormals.
    // (Within one subnormal step, 2^-149, of e^-100 = 3.7e-44.)
    assert!(
        exp[9] > 0.0 && (exp[9] as f64 - (-100f64).exp()).abs() <= 1.5e-45,
        "{}",
        exp[9]
    );
    assert_eq!(exp[10], 0.0);
    // No NaN from a finite input.
    for (i, x) in xs.iter().enumerate() {
        if x.is_finite() {
            assert!(
                !sig[i].is_nan() && !tanh[i].is_nan() && !exp[i].is_nan(),
                "{x}"
            );
        }
    }
    assert_eq!(relu[0], 1e4);
    assert_eq!(relu[1], 0.0);
    // tanh is exact-ish for tiny inputs (the polynomial branch).
    assert_eq!(tanh[13], 1e-30);
}
