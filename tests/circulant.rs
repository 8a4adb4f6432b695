//! Block-circulant parameters (`param W: circulant(k)[R, C]`): the stored
//! tensor `[R/k, C/k, k]` expands by the documented convention (`W[i*k + a,
//! j*k + b] = w[i, j, (a - b) mod k]`, checked on hand-written cases), the
//! IR prints and parses it back, sizes are read off the stored tensor,
//! refusals name the problem, and circulant cells run on the JIT (through
//! their spectra, the FFT products, or on the dense expansion, as the cost
//! model says) as the interpreter runs them (the dense expansion) on every
//! plan, ISA and thread count.

mod common;

use cellc::fuzzing::differential;
use cellc::interp::ParamValues;
use cellc::ir::Structure;
use cellc::{Cell, Options, Variant, Weights};

/// An LSTM whose eight matrices are circulant with blocks of `k`.
fn circulant_lstm(k: usize) -> String {
    let mut s = String::from(
        "cell clstm\ndim X = 32\ndim H = 32\ninput x: [X]\nstate h: [H], c: [H]\noutput y: [H]\n",
    );
    for g in ["i", "f", "g", "o"] {
        s.push_str(&format!("param W_{g}: circulant({k})[H, X]\n"));
        s.push_str(&format!("param U_{g}: circulant({k})[H, H]\n"));
        s.push_str(&format!("param b_{g}: [H]\n"));
    }
    s.push_str(
        "i = sigmoid(W_i @ x + U_i @ h + b_i)\n\
         f = sigmoid(W_f @ x + U_f @ h + b_f)\n\
         g = tanh(W_g @ x + U_g @ h + b_g)\n\
         o = sigmoid(W_o @ x + U_o @ h + b_o)\n\
         c' = f * c + i * g\n\
         h' = o * tanh(c')\n\
         y = h'\n",
    );
    s
}

/// The convention on the worked example of `docs/language.md`: 2 x 2
/// blocks of 2, `w[i, j] = [p, q]` is the block `[[p, q], [q, p]]`; and on
/// blocks of 3, where `(a - b) mod k` is not symmetric.
#[test]
fn the_stored_vectors_expand_by_the_convention() {
    let source =
        "cell c\ninput x: [4]\nstate h: [4]\nparam W: circulant(2)[4, 4]\nh' = W @ x + h\n";
    let cell = Cell::from_source("c.rnn", source).unwrap();
    let ir = cell.ir().unwrap();
    assert_eq!(ir.params[0].structure, Structure::Circulant(2));
    let mut w = Weights::new();
    // w[0,0] = [1, 2], w[0,1] = [3, 4], w[1,0] = [5, 6], w[1,1] = [7, 8].
    w.insert("W", &[2, 2, 2], (1..=8).map(|v| v as f32).collect())
        .unwrap();
    let dense = w.resolve(&ir).unwrap().remove(0);
    #[rustfmt::skip]
    let want = [
        1.0, 2.0, 3.0, 4.0,
        2.0, 1.0, 4.0, 3.0,
        5.0, 6.0, 7.0, 8.0,
        6.0, 5.0, 8.0, 7.0,
    ];
    assert_eq!(dense, want);

    let source =
        "cell c\ninput x: [3]\nstate h: [3]\nparam W: circulant(3)[3, 3]\nh' = W @ x + h\n";
    let ir = Cell::from_source("c.rnn", source).unwrap().ir().unwrap();
    let mut w = Weights::new();
    w.insert("W", &[1, 1, 3], vec![1.0, 2.0, 3.0]).unwrap();
    // The first column is w; each column is the one before shifted down.
    #[rustfmt::skip]
    let want = [
        1.0, 3.0, 2.0,
        2.0, 1.0, 3.0,
        3.0, 2.0, 1.0,
    ];
    assert_eq!(w.resolve(&ir).unwrap().remove(0), want);
}

#[test]
fn the_ir_prints_and_parses_it_back() {
    let source = "cell c\ninput x: [8]\nstate h: [4]\nparam W: bf16 circulant(4)[4, 8]\n\
                  param U: circulant(2)[4, 4]\nh' = W @ x + U @ h\n";
    let ir = Cell::from_source("c.rnn", source).unwrap().ir().unwrap();
    let text = cellc::ir::print::print(&ir);
    assert!(text.contains("param W: bf16 circulant(4)[4, 8]"), "{text}");
    assert!(text.contains("param U: circulant(2)[4, 4]"), "{text}");
    let back = cellc::ir::parse::parse(&text).unwrap();
    assert_eq!(cellc::ir::print::print(&back), text);
    assert_eq!(back.params[0].structure, Structure::Circulant(4));
    // The verifier refuses blocks that do not divide.
    let bad = text.replace("circulant(2)[4, 4]", "circulant(3)[4, 4]");
    let refused = match cellc::ir::parse::parse(&bad) {
        Err(_) => true,
        Ok(c) => cellc::ir::verify::verify(&c).is_err(),
    };
    assert!(refused, "blocks of 3 in a 4 x 4 matrix verified");
    // Unverified, such a cell's weights are refused, not indexed past
    // their end.
    if let Ok(c) = cellc::ir::parse::parse(&bad) {
        let mut w = Weights::new();
        w.insert("W", &[1, 2, 4], vec![0.5; 8]).unwrap();
        w.insert("U", &[1, 1, 3], vec![0.5; 3]).unwrap();
        assert!(w.resolve(&c).is_err());
    }
}

/// Sizes come from the stored tensor: `[R/k, C/k, k]` gives `R` and `C`.
#[test]
fn sizes_are_read_off_the_stored_tensor() {
    let source = "cell c\ndim X\ndim H\ninput x: [X]\nstate h: [H]\n\
                  param W: circulant(4)[H, X] = w\nh' = W @ x + h\n";
    let cell = Cell::from_source("c.rnn", source).unwrap();
    let mut w = Weights::new();
    w.insert("w", &[3, 2, 4], vec![0.5; 24]).unwrap();
    let kernel = cell.compile(&w, &Options::default()).unwrap();
    assert_eq!((kernel.input_len(0), kernel.state_len(0)), (8, 12));
}

#[test]
fn mistakes_are_refused_with_their_reason() {
    let check = |source: &str, dims: &[(&str, u64)], want: &str| {
        let e = Cell::from_source("c.rnn", source)
            .and_then(|c| c.dims(dims))
            .and_then(|c| c.ir())
            .err()
            .unwrap_or_else(|| panic!("accepted: {source}"));
        let text = e.to_string();
        assert!(text.contains(want), "{source}: {text}");
    };
    let body = "input x: [X]\nstate h: [H]\nh' = W @ x + h\n";
    check(
        &format!("cell c\ndim X = 8\ndim H = 6\nparam W: circulant(4)[H, X]\n{body}"),
        &[],
        "do not divide",
    );
    check(
        &format!("cell c\ndim X = 8\ndim H = 8\nparam W: circulant(0)[H, X]\n{body}"),
        &[],
        "block size of 0",
    );
    check(
        "cell c\ninput x: [4]\nstate h: [4]\nparam v: circulant(2)[4]\nh' = v * x + h\n",
        &[],
        "only a matrix",
    );
    check(
        "cell c\ninput x: [4]\nstate h: [4]\nparam W: circulant[4, 4]\nh' = W @ x + h\n",
        &[],
        "circulant(8)[H, X]",
    );
    // Block sizes no size can be.
    check(
        &format!(
            "cell c\ndim X = 8\ndim H = 8\nparam W: circulant(99999999999999999999)[H, X]\n{body}"
        ),
        &[],
        "does not fit in 64 bits",
    );
    check(
        &format!("cell c\ndim X = 8\ndim H = 8\nparam W: circulant(4294967296)[H, X]\n{body}"),
        &[],
        "a block larger than a size can be",
    );
    // Sizes given later are checked too.
    check(
        &format!("cell c\ndim X\ndim H\nparam W: circulant(4)[H, X]\n{body}"),
        &[("X", 8), ("H", 10)],
        "do not divide",
    );
    // A tensor of the dense shape is not the stored one.
    let source = format!("cell c\ndim X = 8\ndim H = 8\nparam W: circulant(4)[H, X]\n{body}");
    let cell = Cell::from_source("c.rnn", &source).unwrap();
    let mut w = Weights::new();
    w.insert("W", &[8, 8], vec![0.0; 64]).unwrap();
    let e = cell
        .compile(&w, &Options::default())
        .unwrap_err()
        .to_string();
    assert!(e.contains("stored as [8, 8, 4]"), "{e}");
    // A trainer takes the blocks' vectors, and says so when given more.
    let ir = cell.ir().unwrap();
    let dense = Weights::random(&ir, 1).resolve(&ir).unwrap();
    let e = cell
        .compile_training_params(dense, &Options::default())
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(e.contains("needs 16 values"), "{e}");
}

/// The optimizer says what a circulant matrix's products run on, once per
/// matrix (through spectra where the cost model sends them, else the dense
/// expansion, with the reason), and still stacks them like any other.
#[test]
fn remarks_say_what_the_products_run_on() {
    for (k, says) in [
        (8, "through spectra"),
        (4, "through spectra"),
        (16, "the transforms would cost more"),
        (2, "take blocks of 4, 8, 16, 32 or 64"),
    ] {
        let cell = Cell::from_source("clstm.rnn", &circulant_lstm(k)).unwrap();
        let said = circulant_remarks(&cell);
        assert_eq!(said.len(), 8, "{said:?}");
        assert!(said.iter().all(|m| m.contains(says)), "k = {k}: {said:?}");
        let optimized = cell.optimized(&Default::default()).unwrap();
        let text = cellc::ir::print::print(&optimized.ir);
        assert_eq!(text.matches("= product").count(), 1, "{text}");
    }
}

/// What the optimizer says about the cell's circulant matrices.
fn circulant_remarks(cell: &Cell) -> Vec<String> {
    let optimized = cell.optimized(&Default::default()).unwrap();
    (optimized.remarks.into_iter())
        .filter(|r| r.pass == "circulant")
        .map(|r| r.message)
        .collect()
}

/// `source` with every matrix parameter block-circulant in blocks of `k`
/// (their checkpoint bindings dropped).
fn circulant_version(source: &str, k: usize) -> String {
    source
        .lines()
        .map(|l| {
            let is_matrix = l.starts_with("param ") && l.contains(", ");
            if !is_matrix {
                return l.to_string();
            }
            let l = l.split(" = ").next().unwrap_or(l);
            l.replacen(": [", &format!(": circulant({k})["), 1)
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// The FFT products: circulant LSTM, GRU and LSTM with peepholes and a
/// projection, blocks of 4, 8 and 16, at sizes where the remarks say the
/// products run through spectra, on every plan, every ISA the host has and
/// one to three threads, against the interpreter (1e-5 of the values'
/// size), and the same bits on every thread count.
#[test]
fn fft_products_run_as_the_interpreter_does() {
    let mut seed = 0;
    let lstm = circulant_lstm(1).replace("circulant(1)", "");
    for (name, source, dims) in [
        ("lstm", lstm.as_str(), vec![("X", 64), ("H", 64)]),
        (
            "gru",
            include_str!("../examples/gru.rnn"),
            vec![("X", 64), ("H", 128)],
        ),
        (
            "lstmp",
            include_str!("../examples/lstmp.rnn"),
            vec![("X", 64), ("H", 128), ("P", 64)],
        ),
    ] {
        for k in [4, 8, 16] {
            let text = circulant_version(source, k);
            let cell = Cell::from_source("c.rnn", &text)
                .and_then(|c| c.dims(&dims))
                .unwrap_or_else(|e| panic!("{e}\n{text}"));
            let spectral = (circulant_remarks(&cell).iter())
                .filter(|m| m.contains("through spectra"))
                .count();
            let matrices = text.matches("circulant(").count();
            assert!(
                matrices >= 6,
                "{name}: {matrices} circulant matrices\n{text}"
            );
            assert_eq!(
                spectral, matrices,
                "{name} k = {k}: matrices through spectra"
            );
            let ir = cell.ir().unwrap();
            let weights = Weights::random(&ir, k as u64);
            let reference = ParamValues::from_f32(&weights.resolve(&ir).unwrap());
            for isa in cellc::Isa::ALL.into_iter().filter(|i| i.available()) {
                for plan in Variant::ALL {
                    let mut bits: Option<Vec<u32>> = None;
                    for threads in [1, 2, 3] {
                        seed += 1;
                        let opts = Options {
                            plan: Some(plan),
                            threads: Some(threads),
                            isa: Some(isa),
                            ..Options::default()
                        };
                        let what = format!(
                            "{name} k {k} {} {} {threads} threads",
                            isa.name(),
                            plan.name()
                        );
                        let kernel = cell.compile(&weights, &opts).unwrap();
                        for batch in [1, 5] {
                            let d = differential(&kernel, &ir, &reference, batch, 4, seed, 1.0);
                            assert!(d.worst < 1e-5, "{what} batch {batch}: error {:e}", d.worst);
                        }
                        let got = run_bits(&kernel, 7, 5);
                        match &bits {
                            None => bits = Some(got),
                            Some(b) => assert!(*b == got, "{what}: other bits than on 1 thread"),
                        }
                    }
                }
            }
        }
    }
}

/// The bits of a cell's outputs and states after `steps` steps of `batch`
/// rows from fixed inputs (one input, one output).
fn run_bits(kernel: &cellc::Kernel, steps: usize, batch: usize) -> Vec<u32> {
    let x: Vec<f32> = (0..steps * batch * kernel.input_len(0))
        .map(|i| ((i * 7919 % 1000) as f32 / 500.0 - 1.0) * 0.5)
        .collect();
    let mut y = vec![0.0; steps * batch * kernel.output_len(0)];
    let mut state = kernel.new_state(batch).unwrap();
    kernel.run(&x, &mut state, &mut y).unwrap();
    y.iter().map(|v| v.to_bits()).collect()
}

/// Circulant LSTMs with blocks of 4, 8 and 16 on every plan and thread
/// count against the interpreter (at X = H = 32 the blocks of 4 and 8 run
/// through spectra, those of 16 on the dense expansion).
#[test]
fn circulant_cells_run_as_the_interpreter_does() {
    let mut seed = 0;
    for k in [4, 8, 16] {
        let cell = Cell::from_source("clstm.rnn", &circulant_lstm(k)).unwrap();
        let ir = cell.ir().unwrap();
        let weights = Weights::random(&ir, k as u64);
        for p in &ir.params {
            let t = weights.get(&p.name).unwrap();
            if let cellc::ir::Type::Matrix(r, c) = p.ty {
                assert_eq!(t.shape, [r / k, c / k, k], "{}", p.name);
            }
        }
        let reference = ParamValues::from_f32(&weights.resolve(&ir).unwrap());
        for plan in Variant::ALL {
            for threads in [1, 2] {
                seed += 1;
                let opts = Options {
                    plan: Some(plan),
                    threads: Some(threads),
                    ..Options::default()
                };
                let kernel = cell.compile(&weights, &opts).unwrap();
                for batch in [1, 5] {
                    let err = differential(&kernel, &ir, &reference, batch, 6, seed, 1.0).worst;
                    assert!(
                        err < 1e-5,
                        "k {k} {} {threads} threads batch {batch}: error {err:e}",
                        plan.name()
                    );
                }
            }
        }
    }
}

/// Random cells with some matrices circulant (`gen::random_circulant_cell`,
/// as the `jit_vs_interp` fuzz target makes them) against the interpreter,
/// at sizes where some run through spectra and some on the dense expansion.
#[test]
fn random_circulant_cells_run_as_the_interpreter_does() {
    let (mut circulant, mut spectral) = (0, 0);
    for seed in 0..32u64 {
        let k = [2, 4, 8, 16][seed as usize % 4];
        let text = cellc::gen::random_circulant_cell(seed, k);
        circulant += text.matches("circulant(").count();
        let (x, h) = (k as u64 * (2 + seed % 7), k as u64 * (3 + seed % 5));
        let cell = Cell::from_source("gen.rnn", &text)
            .and_then(|c| c.dims(&[("X", x), ("H", h)]))
            .unwrap_or_else(|e| panic!("{e}\n{text}"));
        spectral += (circulant_remarks(&cell).iter())
            .filter(|m| m.contains("through spectra"))
            .count();
        let ir = cell.ir().unwrap();
        let weights = Weights::random(&ir, seed);
        let reference = ParamValues::from_f32(&weights.resolve(&ir).unwrap());
        let plan = Variant::ALL[seed as usize % 4];
        let opts = Options {
            plan: Some(plan),
            threads: Some(1 + seed as usize % 2),
            ..Options::default()
        };
        let kernel = cell.compile(&weights, &opts).unwrap();
        let d = differential(&kernel, &ir, &reference, 3, 5, seed, 1.0);
        assert!(
            d.worst < 1e-4 + 30.0 * d.sensitivity,
            "seed {seed} k {k}: error {:e} (sensitivity {:e})\n{text}",
            d.worst,
            d.sensitivity
        );
    }
    assert!(
        circulant >= 32,
        "few circulant matrices were made: {circulant}"
    );
    assert!(
        spectral >= 8 && spectral < circulant,
        "{spectral} of {circulant} circulant matrices through spectra"
    );
}

/// Training a circulant LSTM: the gradient of each matrix's blocks' vectors
/// is the dense gradient folded onto them (`W[i*k+a, j*k+b]` adds to `w[i,
/// j, (a-b) mod k]`), against the f64 oracle's dense gradient folded here;
/// the other gradients as the oracle's. Tolerance as tests/train.rs.
#[test]
fn circulant_gradients_are_the_folded_dense_ones() {
    for k in [2, 4, 8] {
        let cell = Cell::from_source("clstm.rnn", &circulant_lstm(k))
            .and_then(|c| c.dims(&[("X", 16), ("H", 8)]))
            .unwrap();
        let ir = cell.ir().unwrap();
        let weights = Weights::random(&ir, k as u64);
        let trainer = cell
            .compile_training(&weights, &Options::default())
            .unwrap();
        let shapes = trainer.param_shapes();
        assert_eq!(shapes[0].1, [8 / k, 16 / k, k], "{}", shapes[0].0);
        let (steps, batch) = (4, 3);
        let mut rng = cellc::gen::Rng(k as u64);
        let mut v = |n: usize| -> Vec<f32> { rng.vec(n, 1.0).iter().map(|&x| x as f32).collect() };
        let x = v(steps * batch * 16);
        let h0 = [v(batch * 8), v(batch * 8)];
        let dy = v(steps * batch * 8);
        let dh = [v(batch * 8), v(batch * 8)];
        let f = trainer
            .forward(&[&x], &[&h0[0], &h0[1]], steps, batch)
            .unwrap();
        let got = trainer
            .backward(&f.tape, &[&dy], &[&dh[0], &dh[1]])
            .unwrap();
        let f64s = |v: &[f32]| -> Vec<f64> { v.iter().map(|&x| f64::from(x)).collect() };
        let want = cellc::grad::through_time(
            &ir,
            &ParamValues::from_f32(&weights.resolve(&ir).unwrap()),
            &[f64s(&x)],
            &[f64s(&h0[0]), f64s(&h0[1])],
            steps,
            batch,
            &[f64s(&dy)],
            &[f64s(&dh[0]), f64s(&dh[1])],
        )
        .unwrap();
        for (p, (g, dense)) in ir.params.iter().zip(got.params.iter().zip(&want.params)) {
            let folded: Vec<f64> = match p.ty {
                cellc::ir::Type::Matrix(r, c) => {
                    let mut out = vec![0.0; p.structure.stored_len(r, c)];
                    for (e, d) in dense.iter().enumerate() {
                        // The convention, written out: (row, col) -> (i, j, (a - b) mod k).
                        let (i, a, j, b) = (e / c / k, e / c % k, e % c / k, e % c % k);
                        out[(i * (c / k) + j) * k + (a + k - b) % k] += d;
                    }
                    out
                }
                _ => dense.clone(),
            };
            assert_eq!(g.values.len(), folded.len(), "k {k}: {}", p.name);
            let scale = folded.iter().fold(1.0f64, |m, v| m.max(v.abs()));
            for (a, b) in g.values.iter().zip(&folded) {
                assert!(
                    (f64::from(*a) - b).abs() <= 1e-4 * scale,
                    "k {k}: d {}: {a} vs {b}",
                    p.name
                );
            }
        }
        for (got, want) in got.inputs.iter().zip(&want.inputs) {
            for (a, b) in got.iter().zip(want) {
                assert!((f64::from(*a) - b).abs() <= 1e-4, "k {k}: dx {a} vs {b}");
            }
        }
    }
}

/// The C-LSTM paper's Google LSTM (`examples/circulant/`, blocks of 16 and
/// 8): at its own sizes every matrix runs through spectra; at smaller
/// sizes (multiples of the blocks) it runs as the interpreter does.
#[test]
fn the_clstm_examples_run_through_spectra() {
    for (file, k) in [("clstm.rnn", 16), ("clstm_k8.rnn", 8)] {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("examples/circulant")
            .join(file);
        let cell = Cell::from_file(&path).unwrap();
        let spectral = circulant_remarks(&cell);
        assert_eq!(spectral.len(), 9, "{file}: {spectral:?}");
        assert!(
            spectral.iter().all(|m| m.contains("through spectra")),
            "{file}: {spectral:?}"
        );
        let small = cell.dims(&[("X", 64), ("H", 128), ("P", 64)]).unwrap();
        let ir = small.ir().unwrap();
        let weights = Weights::random(&ir, k as u64);
        let reference = ParamValues::from_f32(&weights.resolve(&ir).unwrap());
        let kernel = small.compile(&weights, &Options::default()).unwrap();
        for batch in [1, 4] {
            let d = differential(&kernel, &ir, &reference, batch, 5, 3, 1.0);
            assert!(d.worst < 1e-5, "{file} batch {batch}: error {:e}", d.worst);
        }
    }
}

/// A row block with matrices of two block sizes: the larger share (here
/// equal, so the larger `k`) runs through spectra, the other on its dense
/// expansion, and a remark says so; the results are the interpreter's.
#[test]
fn mixed_block_sizes_are_said_and_run_right() {
    let text = "cell mixed\ndim X = 64\ndim H = 64\ninput x: [X]\nstate h: [H]\noutput y: [H]\n\
                param W: circulant(4)[H, X]\nparam U: circulant(8)[H, H]\nparam V: [H, X]\nparam b: [H]\n\
                h' = tanh(W @ x + U @ h + V @ x + b)\ny = h'\n";
    let cell = Cell::from_source("mixed.rnn", text).unwrap();
    let said = circulant_remarks(&cell);
    assert!(
        said.iter().any(
            |m| m.contains("`W` (blocks of 4) runs on the dense expansion")
                && m.contains("blocks of 8")
        ),
        "{said:?}"
    );
    let ir = cell.ir().unwrap();
    let weights = Weights::random(&ir, 5);
    let reference = ParamValues::from_f32(&weights.resolve(&ir).unwrap());
    for plan in Variant::ALL {
        let opts = Options {
            plan: Some(plan),
            ..Options::default()
        };
        let kernel = cell.compile(&weights, &opts).unwrap();
        let d = differential(&kernel, &ir, &reference, 3, 5, 9, 1.0);
        assert!(d.worst < 1e-5, "{}: error {:e}", plan.name(), d.worst);
    }
}

/// Narrow storage of circulant matrices keeps them circulant: bf16 rounds
/// each stored value alike, and int8's scale of a dense row is the same for
/// every row of a block row (each holds all of that block row's values), so
/// both run through spectra, with the values the narrow storage stands for:
/// the interpreter given the rounded weights (tolerance as
/// tests/precision.rs).
#[test]
fn narrow_circulant_matrices_match_the_interpreter() {
    for (precision, says) in [("bf16", "through spectra"), ("int8", "through spectra")] {
        let text = circulant_lstm(8).replace("circulant(8)", &format!("{precision} circulant(8)"));
        let cell = Cell::from_source("clstm.rnn", &text)
            .and_then(|c| c.dims(&[("X", 64), ("H", 64)]))
            .unwrap();
        let ir = cell.ir().unwrap();
        let weights = Weights::random(&ir, 11);
        let said = circulant_remarks(&cell);
        assert!(
            said.len() == 8 && said.iter().all(|m| m.contains(says)),
            "{said:?}"
        );
        let raw = weights.resolve(&ir).unwrap();
        let rounded: Vec<Vec<f32>> = cellc::quant::effective_params(&ir, &raw)
            .into_iter()
            .map(|v| v.into_owned())
            .collect();
        for plan in Variant::ALL {
            let opts = Options {
                plan: Some(plan),
                ..Options::default()
            };
            let kernel = cell.compile(&weights, &opts).unwrap();
            let d = differential(&kernel, &ir, &ParamValues::from_f32(&rounded), 3, 5, 4, 1.0);
            assert!(
                d.worst < 1e-4,
                "{precision} {}: error {:e}",
                plan.name(),
                d.worst
            );
        }
    }
}

/// `--emit stats` counts what the FFT products read and do: per matrix
/// `rc/k` floats and `4rc/k` flops, each input transformed once (`2k`
/// flops a value) and each row block transformed back once.
#[test]
fn stats_count_the_spectra() {
    let cell = Cell::from_source("clstm.rnn", &circulant_lstm(8))
        .and_then(|c| c.dims(&[("X", 64), ("H", 64)]))
        .unwrap();
    let stats: serde_json::Value = serde_json::from_str(&cell.stats_json().unwrap()).unwrap();
    let dense = Cell::from_source("lstm.rnn", &circulant_lstm(1).replace("circulant(1)", ""))
        .and_then(|c| c.dims(&[("X", 64), ("H", 64)]))
        .unwrap();
    let dense: serde_json::Value = serde_json::from_str(&dense.stats_json().unwrap()).unwrap();
    let (n, k) = (64 * 64, 8);
    let bytes = |s: &serde_json::Value| s["weight_bytes_per_step"].as_u64().unwrap() as usize;
    let flops = |s: &serde_json::Value| s["flops_per_step"].as_u64().unwrap() as usize;
    assert_eq!(bytes(&dense) - bytes(&stats), 8 * 4 * (n - n / k));
    let spectral = 8 * 4 * n / k + 2 * k * (64 + 64) + 2 * k * 4 * 64;
    assert_eq!(flops(&dense) - flops(&stats), 8 * 2 * n - spectral);
}
