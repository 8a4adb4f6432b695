//! Hostile and careless input, end to end: each gets a clear error and a
//! non-zero exit, never a panic, a hang or unbounded memory; and IEEE special
//! values and long sequences in the generated code.

mod common;

use std::io::Write;
use std::process::Command;

use cellc::interp;
use cellc::{Cell, Options, Weights};

fn cellc_on(text: &[u8], extra: &[&str]) -> (i32, String) {
    let dir = std::env::temp_dir().join(format!("cellc-hostile-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(format!(
        "{:x}.rnn",
        text.len() ^ (text.first().copied().unwrap_or(0) as usize) << 20
    ));
    std::fs::File::create(&path)
        .unwrap()
        .write_all(text)
        .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_cellc"))
        .arg("compile")
        .arg(&path)
        .args(extra)
        .output()
        .unwrap();
    let _ = std::fs::remove_file(&path);
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!err.contains("panicked"), "{err}");
    (out.status.code().unwrap_or(-1), err)
}

fn rejected(text: &[u8], extra: &[&str], expect: &str) {
    let (code, err) = cellc_on(text, extra);
    // 1 for a rejected cell, 2 for a flag the command line refuses.
    assert!(code == 1 || code == 2, "exit {code}: {err}");
    assert!(err.contains(expect), "expected {expect:?} in:\n{err}");
}

const OK_CELL: &str =
    "dim H = 4\ninput x: [H]\nstate h: [H]\nparam W: [H, H]\nh' = tanh(W @ h + x)\n";

#[test]
fn empty_file() {
    rejected(b"", &[], "computes nothing");
}

#[test]
fn not_utf8() {
    rejected(
        b"dim H = 4\nstate h: [H]\nh' = h\xff\xfe\n",
        &[],
        "not valid UTF-8",
    );
}

#[test]
fn ten_megabytes() {
    let mut text = OK_CELL.as_bytes().to_vec();
    text.resize(10 << 20, b' ');
    rejected(&text, &[], "too large");
}

#[test]
fn nested_a_hundred_thousand_deep() {
    let text = format!(
        "dim H = 2\nstate h: [H]\nh' = {}h{}\n",
        "(".repeat(100_000),
        ")".repeat(100_000)
    );
    rejected(text.as_bytes(), &[], "nested too deeply");
}

#[test]
fn ten_thousand_gates_compile() {
    let mut text = String::from("dim H = 3\ninput x: [H]\nstate h: [H]\n");
    for i in 0..10_000 {
        text.push_str(&format!("param W{i}: [H, H]\ng{i} = sigmoid(W{i} @ x)\n"));
    }
    let sum: Vec<String> = (0..10_000).map(|i| format!("g{i}")).collect();
    text.push_str(&format!("h' = {}\n", sum.join(" + ")));
    let (code, err) = cellc_on(text.as_bytes(), &[]);
    assert_eq!(code, 0, "{err}");
}

#[test]
fn a_hundred_thousand_gates_are_refused() {
    let mut text = String::from("dim H = 1\ninput x: [H]\nstate h: [H]\nparam W: [H, H]\n");
    for i in 0..30_000 {
        text.push_str(&format!("param U{i}: [H, H]\ng{i} = U{i} @ x\n"));
    }
    let sum: Vec<String> = (0..30_000).map(|i| format!("g{i}")).collect();
    text.push_str(&format!("h' = {}\n", sum.join(" * ")));
    rejected(text.as_bytes(), &[], "too large to compile");
}

#[test]
fn bad_sizes() {
    rejected(OK_CELL.as_bytes(), &["--dims", "H=0"], "at least 1");
    rejected(OK_CELL.as_bytes(), &["--dims", "H=-4"], "positive integer");
    rejected(
        OK_CELL.as_bytes(),
        &["--dims", "H=1099511627776"],
        "too large",
    );
    rejected(OK_CELL.as_bytes(), &["--dims", "H=16777216"], "would take");
    rejected(
        b"dim H = 0\nstate h: [H]\nh' = h\n",
        &[],
        "size `H` is zero",
    );
}

#[test]
fn names_that_shadow_functions() {
    rejected(
        b"dim H = 2\nstate tanh: [H]\ntanh' = tanh\n",
        &[],
        "name of a function",
    );
}

#[test]
fn a_state_defined_from_itself() {
    rejected(
        b"dim H = 2\nstate h: [H]\nh' = tanh(h') + h\n",
        &[],
        "depends on itself",
    );
}

/// A safetensors file: 8-byte little-endian header length, JSON header, body.
fn safetensors(header: &str, body: &[u8]) -> Vec<u8> {
    let mut v = (header.len() as u64).to_le_bytes().to_vec();
    v.extend_from_slice(header.as_bytes());
    v.extend_from_slice(body);
    v
}

#[test]
fn hostile_safetensors() {
    let good = safetensors(
        r#"{"w":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}"#,
        &[0; 8],
    );
    assert!(Weights::from_safetensors_bytes(&good).is_ok());
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        ("empty", vec![], "8-byte"),
        (
            "lying header length",
            {
                let mut v = good.clone();
                v[..8].copy_from_slice(&(1u64 << 40).to_le_bytes());
                v
            },
            "header claims",
        ),
        (
            "truncated body",
            good[..good.len() - 3].to_vec(),
            "not a valid safetensors",
        ),
        (
            "offset past the end",
            safetensors(
                r#"{"w":{"dtype":"F32","shape":[2],"data_offsets":[0,800]}}"#,
                &[0; 8],
            ),
            "not a valid safetensors",
        ),
        (
            "offsets that disagree with the shape",
            safetensors(
                r#"{"w":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}}"#,
                &[0; 8],
            ),
            "not a valid safetensors",
        ),
        (
            "a tensor bound twice",
            safetensors(
                r#"{"w":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"w":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}}"#,
                &[0; 8],
            ),
            "twice",
        ),
        (
            // The same name twice, once escaped: the duplicate check
            // compares decoded names (JSON would keep only the last).
            "a tensor bound twice under an escaped name",
            safetensors(
                r#"{"x":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"\u0078":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}"#,
                &[0; 4],
            ),
            "names tensor `x` twice",
        ),
        (
            "header not JSON",
            safetensors("{not json", &[]),
            "not a valid safetensors",
        ),
        (
            "header not UTF-8",
            safetensors("\u{0}", &[])
                .into_iter()
                .map(|b| if b == 0 { 0xff } else { b })
                .collect(),
            "not",
        ),
        (
            "an i16 tensor",
            safetensors(
                r#"{"w":{"dtype":"I16","shape":[4],"data_offsets":[0,8]}}"#,
                &[0; 8],
            ),
            "element type",
        ),
        (
            "a shape that overflows",
            safetensors(
                r#"{"w":{"dtype":"F32","shape":[4294967296,4294967296,16],"data_offsets":[0,8]}}"#,
                &[0; 8],
            ),
            "not a valid safetensors",
        ),
    ];
    for (what, bytes, expect) in cases {
        let err = Weights::from_safetensors_bytes(&bytes)
            .expect_err(what)
            .to_string();
        assert!(err.contains(expect), "{what}: {err}");
    }
}

#[test]
fn f16_bf16_f64_weights_are_converted() {
    let half: Vec<u8> = [1.5f32, -2.0]
        .iter()
        .flat_map(|v| half::f16::from_f32(*v).to_le_bytes())
        .collect();
    let bf: Vec<u8> = [0.25f32, 3.0]
        .iter()
        .flat_map(|v| half::bf16::from_f32(*v).to_le_bytes())
        .collect();
    let double: Vec<u8> = [0.1f64, 7.0].iter().flat_map(|v| v.to_le_bytes()).collect();
    let mut body = half.clone();
    body.extend(&bf);
    body.extend(&double);
    let header = r#"{"a":{"dtype":"F16","shape":[2],"data_offsets":[0,4]},"b":{"dtype":"BF16","shape":[2],"data_offsets":[4,8]},"c":{"dtype":"F64","shape":[2],"data_offsets":[8,24]}}"#;
    let w = Weights::from_safetensors_bytes(&safetensors(header, &body)).unwrap();
    assert_eq!(w.get("a").unwrap().data, vec![1.5, -2.0]);
    assert_eq!(w.get("b").unwrap().data, vec![0.25, 3.0]);
    assert_eq!(w.get("c").unwrap().data, vec![0.1f64 as f32, 7.0]);
}

fn lstm(x: u64, h: u64) -> (Cell, cellc::ir::Cell) {
    let cell = common::cell("lstm").dims(&[("X", x), ("H", h)]).unwrap();
    let ir = cell.ir().unwrap();
    (cell, ir)
}

/// NaN and infinities, in inputs and in weights, come out where IEEE arithmetic
/// puts them in the f64 interpreter: same NaN positions, same infinities, and
/// finite values that agree.
#[test]
fn nan_and_inf_propagate() {
    let (cell, ir) = lstm(4, 6);
    let mut weights = Weights::random(&ir, 5);
    // An infinite weight: row 0 of W_ii (gate i, unit 0).
    let mut w_ii = weights.get("W_ii").unwrap().clone();
    w_ii.data[0] = f32::INFINITY;
    let mut w = Weights::new();
    for name in weights.names().map(str::to_string).collect::<Vec<_>>() {
        let t = if name == "W_ii" {
            w_ii.clone()
        } else {
            weights.get(&name).unwrap().clone()
        };
        w.insert(&name, &t.shape, t.data).unwrap();
    }
    weights = w;
    let kernel = cell.compile(&weights, &Options::default()).unwrap();
    let params = cellc::interp::ParamValues::from_f32(&weights.resolve(&ir).unwrap());
    let batch = 4;
    let mut state = kernel.new_state(batch).unwrap();
    let mut reference = interp::State::zeros(&ir, batch).unwrap();
    // Row 0: ordinary; row 1: a NaN input; row 2: +inf input; row 3: x[0] = 0, so
    // inf * 0 = NaN in gate i of unit 0.
    let mut x = vec![0.5f32; batch * 4];
    x[4] = f32::NAN;
    x[8 + 1] = f32::INFINITY;
    x[12] = 0.0;
    for _ in 0..3 {
        kernel.step(&x, &mut state).unwrap();
        let x64: Vec<f64> = x.iter().map(|&v| v as f64).collect();
        interp::step(&ir, &params, &[x64], &mut reference).unwrap();
        for (s, name) in ["h", "c"].iter().enumerate() {
            let got = state.get(name).unwrap();
            for (i, (g, w)) in got.iter().zip(&reference.values[s]).enumerate() {
                if w.is_nan() {
                    assert!(g.is_nan(), "{name}[{i}]: interpreter NaN, JIT {g}");
                } else if w.is_infinite() {
                    assert_eq!(*g as f64, *w, "{name}[{i}]");
                } else {
                    assert!(
                        g.is_finite() && (*g as f64 - w).abs() < 1e-4,
                        "{name}[{i}]: JIT {g}, interpreter {w}"
                    );
                }
            }
        }
    }
    let h = state.get("h").unwrap();
    assert!(
        h[..6].iter().all(|v| v.is_finite()),
        "row 0 stays finite: {h:?}"
    );
    assert!(
        h[6..12].iter().all(|v| v.is_nan()),
        "a NaN input poisons its row: {h:?}"
    );
    assert!(h[18].is_nan(), "inf * 0 is NaN: {h:?}");
}

/// A long sequence of a saturating cell: 100,000 steps with inputs of magnitude
/// 50 stay finite and agree with the interpreter at the end (norm-wise 1e-4).
#[test]
fn a_hundred_thousand_steps() {
    let cell = common::cell("gru").dims(&[("X", 4), ("H", 8)]).unwrap();
    let ir = cell.ir().unwrap();
    let weights = Weights::random(&ir, 11);
    let kernel = cell.compile(&weights, &Options::default()).unwrap();
    let params = cellc::interp::ParamValues::from_f32(&weights.resolve(&ir).unwrap());
    let (batch, steps) = (2, 100_000);
    let mut rng = cellc::gen::Rng(3);
    let xs: Vec<f32> = (0..steps * batch * 4)
        .map(|_| rng.unit() as f32 * 50.0)
        .collect();
    let mut ys = vec![0.0f32; steps * batch * 8];
    let mut state = kernel.new_state(batch).unwrap();
    kernel.run(&xs, &mut state, &mut ys).unwrap();
    assert!(ys.iter().all(|v| v.is_finite()));
    let mut reference = interp::State::zeros(&ir, batch).unwrap();
    let mut last = Vec::new();
    for t in 0..steps {
        let x: Vec<f64> = xs[t * batch * 4..(t + 1) * batch * 4]
            .iter()
            .map(|&v| v as f64)
            .collect();
        last = interp::step(&ir, &params, &[x], &mut reference)
            .unwrap()
            .remove(0);
    }
    let got = &ys[(steps - 1) * batch * 8..];
    for (g, w) in got.iter().zip(&last) {
        assert!(
            (*g as f64 - w).abs() < 1e-4 * 50.0,
            "JIT {g}, interpreter {w}"
        );
    }
}

/// Sizes that do not fit: a batch of 2^62 rows, from the API, from a 100-byte
/// inputs file (`[0, 2^60, 8]`: no data, a huge batch) and from `cellc bench`,
/// is an error, never an abort or a crash; a batch of 0 is an error.
#[test]
fn huge_batches_are_errors() {
    let (cell, ir) = lstm(8, 4);
    let kernel = cell
        .compile(&Weights::random(&ir, 1), &Options::default())
        .unwrap();
    for batch in [0usize, 1 << 62, usize::MAX] {
        let err = kernel.new_state(batch).unwrap_err().to_string();
        assert!(err.contains("batch"), "{batch}: {err}");
    }
    let dir = std::env::temp_dir().join(format!("cellc-huge-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let mut inputs = Weights::new();
    inputs.insert("x", &[0, 1 << 60, 8], Vec::new()).unwrap();
    let x = dir.join("x.safetensors");
    std::fs::write(&x, inputs.to_safetensors_bytes().unwrap()).unwrap();
    let w = dir.join("w.safetensors");
    let mut weights = Weights::new();
    for (name, shape) in [("weight_ih_l0", [16usize, 8]), ("weight_hh_l0", [16, 4])] {
        weights
            .insert(name, &shape, vec![0.1; shape[0] * shape[1]])
            .unwrap();
    }
    for name in ["bias_ih_l0", "bias_hh_l0"] {
        weights.insert(name, &[16], vec![0.0; 16]).unwrap();
    }
    std::fs::write(&w, weights.to_safetensors_bytes().unwrap()).unwrap();
    let run = Command::new(env!("CARGO_BIN_EXE_cellc"))
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .args(["run", "examples/lstm.rnn", "--weights"])
        .arg(&w)
        .arg("--inputs")
        .arg(&x)
        .arg("-o")
        .arg(dir.join("out.safetensors"))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&run.stderr);
    assert_eq!(run.status.code(), Some(1), "{err}");
    assert!(err.contains("batch") && !err.contains("panicked"), "{err}");
    for batch in ["4611686018427387904", "18446744073709551615"] {
        let bench = Command::new(env!("CARGO_BIN_EXE_cellc"))
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .args([
                "bench",
                "examples/lstm.rnn",
                "--dims",
                "X=8,H=4",
                "--batch",
                batch,
            ])
            .args(["--samples", "1", "--no-unfused"])
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&bench.stderr);
        assert_eq!(bench.status.code(), Some(1), "{err}");
        assert!(!err.contains("panicked"), "{err}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// Memory sized by the input is allocated fallibly: a run whose outputs do
/// not fit under `ulimit -v` (1 GiB of inputs' worth of steps, 4 GiB of
/// outputs) is an error that says so; it used to abort the process in
/// `network::Direction::run`.
#[cfg(unix)]
#[test]
fn outputs_that_do_not_fit_are_an_error_not_an_abort() {
    let dir = std::env::temp_dir().join(format!("cellc-oom-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let cell = dir.join("wide.rnn");
    std::fs::write(
        &cell,
        "dim X = 1\ndim H = 16384\ninput x: [X]\nstate h: [H]\noutput y: [H]\nparam W: [H, X]\nh' = tanh(W @ x) + h * 0.5\ny = h'\n",
    )
    .unwrap();
    let weights = Weights::new()
        .with("W", &[16384, 1], vec![0.1; 16384])
        .unwrap();
    let inputs = Weights::new()
        .with("x", &[65536, 1, 1], vec![0.5; 65536])
        .unwrap();
    let (w, x, o) = (
        dir.join("w.safetensors"),
        dir.join("x.safetensors"),
        dir.join("o.safetensors"),
    );
    std::fs::write(&w, weights.to_safetensors_bytes().unwrap()).unwrap();
    std::fs::write(&x, inputs.to_safetensors_bytes().unwrap()).unwrap();
    let script = format!(
        "ulimit -v 2500000 && exec '{}' run '{}' --weights '{}' --inputs '{}' -o '{}'",
        env!("CARGO_BIN_EXE_cellc"),
        cell.display(),
        w.display(),
        x.display(),
        o.display()
    );
    let out = Command::new("sh").arg("-c").arg(&script).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("cannot allocate the outputs"), "{err}");
    assert!(!o.exists());
    let _ = std::fs::remove_dir_all(&dir);
}

/// The interpreter's states: a batch whose size overflows (2^62 rows of 4)
/// or does not fit (2^40 rows) is an error, not an abort or a wrapped size.
#[test]
fn interpreter_states_too_large_are_errors() {
    let (_, ir) = lstm(4, 4);
    for batch in [1usize << 40, 1 << 62] {
        assert!(interp::State::zeros(&ir, batch).is_err(), "{batch}");
    }
    assert_eq!(interp::State::zeros(&ir, 3).unwrap().values[0].len(), 12);
}
