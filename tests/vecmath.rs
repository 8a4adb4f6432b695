//! The generated activations against f64: maximum error over a dense sweep of
//! [-30, 30], range invariants, monotonicity, and the special values. The bounds
//! asserted here are the ones documented in `src/codegen/vecmath.rs`.

// Tests and programs print what they measure.
#![allow(clippy::print_stdout, clippy::print_stderr)]

use cellc::{Cell, Isa, Options, Weights};

/// Applies `func` to `xs` with JIT-compiled code, at every width this host
/// has (`Options::isa`: the generated 128-bit code with `scalar`, the wide
/// region kernels with `avx2` and `avx512`), which must agree bit for bit
/// (NaN payloads included): every bound below holds at every width.
fn jit_apply(func: &str, xs: &[f32]) -> Vec<f32> {
    let mut results = Isa::ALL
        .into_iter()
        .filter(|i| i.available())
        .map(|isa| (isa, jit_apply_with(func, xs, isa)));
    let (_, first) = results.next().unwrap();
    for (isa, other) in results {
        for (i, (a, b)) in first.iter().zip(&other).enumerate() {
            assert_eq!(
                a.to_bits(),
                b.to_bits(),
                "{func}({}) is {a} at the generated width and {b} on {}",
                xs[i],
                isa.name()
            );
        }
    }
    first
}

fn jit_apply_with(func: &str, xs: &[f32], isa: Isa) -> Vec<f32> {
    let n = 1000;
    let src = format!("dim N = {n}\ninput x: [N]\noutput y: [N]\ny = {func}(x)\n");
    let cell = Cell::from_source("act.rnn", &src).unwrap();
    let opts = Options {
        isa: Some(isa),
        ..Options::default()
    };
    let kernel = cell.compile(&Weights::new(), &opts).unwrap();
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

/// Logarithm over every binade of f32, subnormals included, relative to the
/// result where it is away from zero and absolutely near x = 1.
#[test]
fn log_error_over_every_binade() {
    let mut xs: Vec<f32> = Vec::new();
    // Dense in [0.5, 2], where the result crosses zero.
    xs.extend((0..=1_500_000).map(|i| 0.5 + i as f32 * 1e-6));
    // 4,000 points in each binade from the smallest subnormal to f32::MAX.
    let mut bits = 1u32;
    while bits < f32::MAX.to_bits() {
        xs.push(f32::from_bits(bits));
        bits = bits.saturating_add(2048).min(f32::MAX.to_bits());
    }
    xs.push(f32::MAX);
    let ys = jit_apply("log", &xs);
    let e = errors(&xs, &ys, f64::ln, 0.0);
    eprintln!(
        "log: max abs error {:.3e}, max rel error {:.3e}",
        e.abs, e.rel
    );
    assert!(e.rel <= 1e-7, "max rel error {}", e.rel);
    let dense = &xs[..1_500_001];
    assert_monotone(dense, &ys[..dense.len()], "log");
}

fn softplus64(x: f64) -> f64 {
    x.max(0.0) + (-x.abs()).exp().ln_1p()
}

#[test]
fn softplus_error_and_monotonicity() {
    // From where the result underflows to where it is x itself.
    let xs: Vec<f32> = (0..=1_300_000).map(|i| -100.0 + i as f32 * 1e-4).collect();
    let ys = jit_apply("softplus", &xs);
    let e = errors(&xs, &ys, softplus64, 1e-37);
    eprintln!(
        "softplus: max abs error {:.3e}, max rel error {:.3e}",
        e.abs, e.rel
    );
    assert!(e.rel <= 3e-7, "max rel error {}", e.rel);
    assert_monotone(&xs, &ys, "softplus");
}

/// The functions that are single instructions or written with them: exact
/// to f32 rounding, and what they make of NaN and the infinities.
#[test]
fn exact_functions_and_their_special_values() {
    let xs: Vec<f32> = (0..=200_000).map(|i| -10.0 + i as f32 * 1e-4).collect();
    let check = |func: &str, f: fn(f64) -> f64| {
        let ys = jit_apply(func, &xs);
        for (&x, &y) in xs.iter().zip(&ys) {
            let want = f(x as f64) as f32;
            assert!(
                y == want || (y.is_nan() && want.is_nan()),
                "{func}({x}) = {y}, want {want}"
            );
        }
    };
    check("abs", f64::abs);
    check("sqrt", f64::sqrt);
    check("relu6", |x| x.clamp(0.0, 6.0));
    check("hard_tanh", |x| x.clamp(-1.0, 1.0));
    // Rounded once more than the f64 formula: within one f32 rounding.
    for (func, f) in [
        (
            "hard_sigmoid",
            (|x| (0.2 * x + 0.5f64).clamp(0.0, 1.0)) as fn(f64) -> f64,
        ),
        ("softsign", |x| x / (1.0 + x.abs())),
        ("elu", |x| if x > 0.0 { x } else { x.exp_m1() }),
    ] {
        let ys = jit_apply(func, &xs);
        let e = errors(&xs, &ys, f, 0.0);
        eprintln!("{func}: max abs error {:.3e}", e.abs);
        assert!(e.abs <= 2.5e-7, "{func}: max abs error {}", e.abs);
    }
    let positive: Vec<f32> = xs.iter().copied().filter(|&x| x > 0.0).collect();
    let ys = jit_apply("rsqrt", &positive);
    let e = errors(&positive, &ys, |x| 1.0 / x.sqrt(), 0.0);
    eprintln!("rsqrt: max rel error {:.3e}", e.rel);
    assert!(e.rel <= 1.2e-7, "rsqrt: max rel error {}", e.rel);
    let special = [f32::NAN, f32::INFINITY, f32::NEG_INFINITY, 0.0, -0.0, -1.0];
    let log = jit_apply("log", &special);
    assert!(
        log[0].is_nan() && log[2].is_nan() && log[5].is_nan(),
        "{log:?}"
    );
    assert_eq!(&log[1..2], &[f32::INFINITY]);
    assert_eq!(&log[3..5], &[f32::NEG_INFINITY, f32::NEG_INFINITY]);
    let softplus = jit_apply("softplus", &special);
    assert!(softplus[0].is_nan());
    assert_eq!(
        &softplus[1..5],
        &[
            f32::INFINITY,
            0.0,
            std::f32::consts::LN_2,
            std::f32::consts::LN_2
        ]
    );
    for func in [
        "hard_sigmoid",
        "relu6",
        "hard_tanh",
        "softsign",
        "abs",
        "sqrt",
        "elu",
    ] {
        assert!(jit_apply(func, &special)[0].is_nan(), "{func}(NaN)");
    }
    assert_eq!(jit_apply("hard_sigmoid", &special)[1..3], [1.0, 0.0]);
    assert_eq!(jit_apply("hard_tanh", &special)[1..3], [1.0, -1.0]);
    assert_eq!(jit_apply("elu", &special)[1..3], [f32::INFINITY, -1.0]);
    // As PyTorch: softsign(±inf) = ±inf / inf.
    assert!(jit_apply("softsign", &special)[1].is_nan());
}

/// min, max and clip: NaN in either operand gives NaN, as in PyTorch.
#[test]
fn min_max_and_clip_propagate_nan() {
    let src = "dim N = 10\ninput a: [N], b: [N]\noutput lo: [N], hi: [N], c: [N]\nlo = min(a, b)\nhi = max(a, b)\nc = clip(a, -1, b)\n";
    let cell = Cell::from_source("minmax.rnn", src).unwrap();
    let a = [
        f32::NAN,
        1.0,
        2.0,
        -3.0,
        f32::INFINITY,
        -5.0,
        0.5,
        7.0,
        0.0,
        -0.0,
    ];
    let b = [
        0.0,
        f32::NAN,
        3.0,
        -4.0,
        1.0,
        f32::NEG_INFINITY,
        0.25,
        8.0,
        -0.0,
        0.0,
    ];
    let mut widths: Vec<(Isa, Vec<Vec<u32>>)> = Vec::new();
    for isa in Isa::ALL.into_iter().filter(|i| i.available()) {
        let opts = Options {
            isa: Some(isa),
            ..Options::default()
        };
        let kernel = cell.compile(&Weights::new(), &opts).unwrap();
        let mut state = kernel.new_state(1).unwrap();
        kernel.step_inputs(&[&a, &b], &mut state).unwrap();
        let bits = ["lo", "hi", "c"]
            .map(|o| {
                kernel
                    .output(&state, o)
                    .unwrap()
                    .iter()
                    .map(|v| v.to_bits())
                    .collect()
            })
            .to_vec();
        widths.push((isa, bits));
    }
    for (isa, bits) in &widths[1..] {
        assert_eq!(
            bits,
            &widths[0].1,
            "{} against the generated code",
            isa.name()
        );
    }
    let out =
        |o: usize| -> Vec<f32> { widths[0].1[o].iter().map(|&b| f32::from_bits(b)).collect() };
    let (lo, hi, c) = (out(0), out(1), out(2));
    // Signed zeros: min(0, -0) = -0, max(0, -0) = 0, either way round.
    assert!(lo[8].is_sign_negative() && lo[9].is_sign_negative());
    assert!(hi[8].is_sign_positive() && hi[9].is_sign_positive());
    for i in 0..10 {
        let (x, y) = (a[i] as f64, b[i] as f64);
        if x.is_nan() || y.is_nan() {
            assert!(lo[i].is_nan() && hi[i].is_nan() && c[i].is_nan(), "{i}");
        } else {
            assert_eq!(lo[i] as f64, x.min(y), "min {i}");
            assert_eq!(hi[i] as f64, x.max(y), "max {i}");
            assert_eq!(c[i] as f64, x.max(-1.0).min(y), "clip {i}");
        }
    }
}

/// `step` (an IR operation of backward cells, not a function of the
/// language): 1 where `x > 0`, else 0 (NaN, -0, +0 and negatives give 0), the
/// same bits from the generated code and the region kernels of every ISA.
#[test]
fn step_is_one_above_zero_on_every_isa() {
    let n = 16;
    let text = format!(
        "cell step\ninput x: [{n}]\noutput y: [{n}]\n\nv0: [{n}] = input x ; x\n\
         v1: [{n}] = fused [{n}] (v0) {{\n    e0 = step a0 ; y\n    yield e0\n}} ; y\noutput y = v1\n"
    );
    let ir = cellc::ir::parse::parse(&text).unwrap();
    let xs: Vec<f32> = vec![
        -1.0,
        -0.0,
        0.0,
        1e-45,
        -1e-45,
        f32::NAN,
        -f32::NAN,
        f32::INFINITY,
        f32::NEG_INFINITY,
        3.5,
        -3.5,
        f32::MIN_POSITIVE,
        f32::MAX,
        f32::MIN,
        0.5,
        -0.5,
    ];
    let want: Vec<f32> = xs
        .iter()
        .map(|&x| if x > 0.0 { 1.0 } else { 0.0 })
        .collect();
    let mut covered = Vec::new();
    for isa in Isa::ALL.into_iter().filter(|i| i.available()) {
        let opts = Options {
            isa: Some(isa),
            ..Options::default()
        };
        let kernel = cellc::Kernel::new(ir.clone(), Vec::new(), &opts).unwrap();
        let mut state = kernel.new_state(1).unwrap();
        kernel.step(&xs, &mut state).unwrap();
        let y = kernel.output(&state, "y").unwrap();
        assert_eq!(
            y.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
            want.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
            "{}",
            isa.name()
        );
        covered.push(isa);
    }
    eprintln!("step covered: {covered:?}");
}
