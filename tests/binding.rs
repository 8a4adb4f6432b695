//! Binding checkpoints to cells: every tensor a cell reads is read whole and
//! once, biases are zero only when a checkpoint has none, and anything a
//! binding does not understand is an error that names it (never a default).

mod common;

use cellc::run::{run, run_network, NetworkOptions};
use cellc::{Cell, Options, Weights};

const X: usize = 8;
const H: usize = 16;

/// An `nn.LSTM(X, H, num_layers)` state_dict of random values, under
/// PyTorch's names (`bias`: with its biases).
fn lstm_checkpoint(layers: usize, bias: bool) -> Weights {
    let mut rng = common::Rng(7);
    let mut w = Weights::new();
    for l in 0..layers {
        let input = if l == 0 { X } else { H };
        let mut add = |name: &str, shape: &[usize]| {
            let n = shape.iter().product();
            let data = rng.vec(n, 0.3).into_iter().map(|v| v as f32).collect();
            w.insert(&format!("{name}_l{l}"), shape, data).unwrap();
        };
        add("weight_ih", &[4 * H, input]);
        add("weight_hh", &[4 * H, H]);
        if bias {
            add("bias_ih", &[4 * H]);
            add("bias_hh", &[4 * H]);
        }
    }
    w
}

fn sequence(steps: usize, batch: usize) -> Weights {
    let mut rng = common::Rng(3);
    let data = rng
        .vec(steps * batch * X, 1.0)
        .into_iter()
        .map(|v| v as f32)
        .collect();
    Weights::new().with("x", &[steps, batch, X], data).unwrap()
}

fn example(name: &str) -> Cell {
    common::cell(name)
}

/// A GRU cell given an LSTM's state_dict reads three of its four gates'
/// rows: an error naming the tensor and the rows no parameter reads (it used
/// to run and write wrong outputs), unless partial reads are allowed.
#[test]
fn a_checkpoint_of_another_module_is_refused_by_its_unread_rows() {
    let w = lstm_checkpoint(1, true);
    let e = run(
        &example("gru"),
        &w,
        &sequence(3, 2),
        &[],
        &Options::default(),
    )
    .unwrap_err()
    .to_string();
    assert!(
        e.contains("tensor `weight_ih_l0` [64, 8]: rows 48..64 are read by no parameter"),
        "{e}"
    );
    assert!(e.contains("allow-partial-reads"), "{e}");
    // Allowed on purpose: it runs.
    let out = run(
        &example("gru"),
        &w.allow_partial_reads(),
        &sequence(3, 2),
        &[],
        &Options::default(),
    )
    .unwrap();
    assert_eq!(out.get("y").unwrap().shape, [3, 2, H]);
}

/// A slice typo (a gate's rows bound twice, another gate's never read)
/// is an error naming both, through the API's compile and through a run.
#[test]
fn a_slice_bound_twice_is_refused() {
    let source = std::fs::read_to_string(common::example_path("lstm"))
        .unwrap()
        .replace(
            "param W_if: [H, X] = weight_ih_l0[H..2*H]   | weight_ih[H..2*H]",
            "param W_if: [H, X] = weight_ih_l0[2*H..3*H] | weight_ih[2*H..3*H]",
        );
    assert!(source.contains("weight_ih_l0[2*H..3*H] | weight_ih[2*H..3*H]"));
    let cell = Cell::from_source("typo.rnn", &source).unwrap();
    let w = lstm_checkpoint(1, true);
    let e = run(&cell, &w, &sequence(2, 1), &[], &Options::default())
        .unwrap_err()
        .to_string();
    assert!(e.contains("rows 16..32 are read by no parameter"), "{e}");
    assert!(
        e.contains("rows 32..48 are read by both `W_if` and `W_ig`"),
        "{e}"
    );
    // The same through `Cell::compile`, with the tensors under the cell's
    // single-layer names.
    let mut single = Weights::new();
    for name in ["weight_ih", "weight_hh", "bias_ih", "bias_hh"] {
        let t = w.get(&format!("{name}_l0")).unwrap();
        single.insert(name, &t.shape, t.data.clone()).unwrap();
    }
    let e = cell
        .clone()
        .dims(&[("X", X as u64), ("H", H as u64)])
        .unwrap()
        .compile(&single, &Options::default())
        .unwrap_err()
        .to_string();
    assert!(e.contains("tensor `weight_ih` [64, 8]"), "{e}");
    assert!(e.contains("read by both `W_if` and `W_ig`"), "{e}");
}

/// Parameters that read one tensor whole (tied weights) are fine; a column
/// left unread is named as columns.
#[test]
fn tied_weights_pass_and_unread_columns_are_named() {
    let tied = Cell::from_source(
        "tied.rnn",
        "dim H = 4\ninput x: [H]\nstate h: [H]\nparam A: [H, H] = W\nparam B: [H, H] = W\nh' = tanh(A @ x + B @ h)\n",
    )
    .unwrap();
    let w = Weights::new().with("W", &[4, 4], vec![0.1; 16]).unwrap();
    tied.compile(&w, &Options::default()).unwrap();
    let cols = Cell::from_source(
        "cols.rnn",
        "dim H = 4\ninput x: [H]\nstate h: [H]\nparam A: [H, H] = W[0..H, 0..H]\nh' = tanh(A @ x + h)\n",
    )
    .unwrap();
    let w = Weights::new().with("W", &[4, 6], vec![0.1; 24]).unwrap();
    let e = cols
        .compile(&w, &Options::default())
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("rows 0..4, columns 4..6, are read by no parameter"),
        "{e}"
    );
}

/// A layered checkpoint whose biases lack the layer suffix used to run
/// with zero biases; the rule is "zero only when the checkpoint has no bias
/// at all".
#[test]
fn biases_are_zero_only_when_the_checkpoint_has_none() {
    let mut w = lstm_checkpoint(1, false);
    let mut rng = common::Rng(1);
    for name in ["bias_ih", "bias_hh"] {
        let data = rng.vec(4 * H, 0.5).into_iter().map(|v| v as f32).collect();
        w.insert(name, &[4 * H], data).unwrap();
    }
    let e = run(
        &example("lstm"),
        &w,
        &sequence(2, 1),
        &[],
        &Options::default(),
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("tensor `bias_hh` has no layer suffix"), "{e}");
    assert!(e.contains("`bias_hh_l0`"), "{e}");
    // Without any bias, a two-layer checkpoint runs (zero biases), and gives
    // what a checkpoint with explicit zero biases gives.
    let nobias = lstm_checkpoint(2, false);
    let mut zeros = nobias.clone();
    for l in 0..2 {
        for name in ["bias_ih", "bias_hh"] {
            zeros
                .insert(&format!("{name}_l{l}"), &[4 * H], vec![0.0; 4 * H])
                .unwrap();
        }
    }
    let opts = NetworkOptions::default();
    let a = run_network(
        &example("lstm"),
        &nobias,
        &sequence(3, 2),
        &[],
        &Options::default(),
        &opts,
    )
    .unwrap();
    let b = run_network(
        &example("lstm"),
        &zeros,
        &sequence(3, 2),
        &[],
        &Options::default(),
        &opts,
    )
    .unwrap();
    assert_eq!(a, b);
}

/// What users hit first: a prefix given without its dot, a state_dict with
/// several recurrent modules, a `torch.save` file, sizes from the file's
/// defaults (issue 26, item 18).
#[test]
fn messages_point_the_right_way() {
    let w = lstm_checkpoint(1, true);
    let mut nested = Weights::new();
    for module in ["encoder.rnn", "decoder.rnn"] {
        for name in w.names() {
            let t = w.get(name).unwrap();
            nested
                .insert(&format!("{module}.{name}"), &t.shape, t.data.clone())
                .unwrap();
        }
    }
    // Without --prefix: both candidates named.
    let e = run(
        &example("lstm"),
        &nested,
        &sequence(2, 1),
        &[],
        &Options::default(),
    )
    .unwrap_err()
    .to_string();
    assert!(
        e.contains("under 2 prefixes")
            && e.contains("`decoder.rnn.`")
            && e.contains("`encoder.rnn.`"),
        "{e}"
    );
    // `--prefix encoder.rnn`, without the dot, just works.
    let inner = nested.strip_prefix("encoder.rnn").unwrap();
    assert_eq!(inner.get("weight_ih_l0"), w.get("weight_ih_l0"));
    run(
        &example("lstm"),
        &inner,
        &sequence(2, 1),
        &[],
        &Options::default(),
    )
    .unwrap();
    // A torch.save file (a zip archive) is recognised for what it is.
    let mut zip = b"PK\x03\x04".to_vec();
    zip.extend_from_slice(&[0u8; 60]);
    let e = Weights::from_safetensors_bytes(&zip)
        .unwrap_err()
        .to_string();
    assert!(e.contains("torch.save") && e.contains("save_file"), "{e}");
    // A real safetensors file whose header length starts like a pickle
    // (0x80 0x02 ...) is still read.
    let mut padded = Weights::new();
    let long_name = "t".repeat(640 - 60);
    padded.insert(&long_name, &[1], vec![1.0]).unwrap();
    let bytes = padded.to_safetensors_bytes().unwrap();
    assert_eq!(
        Weights::from_safetensors_bytes(&bytes)
            .unwrap()
            .get(&long_name)
            .unwrap()
            .data,
        [1.0]
    );
    // The API reads the sizes off the weights, as `cellc run` does (the file
    // says X = 64, H = 128; the weights are X = 8, H = 16)...
    let mut single = Weights::new();
    for name in ["weight_ih", "weight_hh", "bias_ih", "bias_hh"] {
        let t = w.get(&format!("{name}_l0")).unwrap();
        single.insert(name, &t.shape, t.data.clone()).unwrap();
    }
    let k = example("lstm")
        .compile(&single, &Options::default())
        .unwrap();
    assert_eq!((k.input_len(0), k.state_len(0)), (X, H));
    // ...and with sizes given that disagree, says where they came from.
    let e = example("lstm")
        .dims(&[("X", 8), ("H", 32)])
        .unwrap()
        .compile(&single, &Options::default())
        .unwrap_err()
        .to_string();
    assert!(e.contains("X=8, H=32 (as given to `Cell::dims`)"), "{e}");
}

/// A tensor that no parameter reads at all (not only some of its rows) is
/// refused too: a GRUCell's state_dict with a stray tensor, through the API.
#[test]
fn a_tensor_no_parameter_reads_is_refused() {
    let cell = example("gru").dims(&[("X", 4), ("H", 4)]).unwrap();
    let mut w = Weights::new();
    for (name, shape) in [
        ("weight_ih", vec![12, 4]),
        ("weight_hh", vec![12, 4]),
        ("bias_ih", vec![12]),
        ("bias_hh", vec![12]),
    ] {
        let n = shape.iter().product();
        w.insert(name, &shape, vec![0.1; n]).unwrap();
    }
    cell.compile(&w, &Options::default()).unwrap();
    w.insert("weight_hr", &[4, 4], vec![0.1; 16]).unwrap();
    let e = cell
        .compile(&w, &Options::default())
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("tensor `weight_hr` [4, 4] is read by no parameter of cell `gru`"),
        "{e}"
    );
    assert!(e.contains("lstm_proj.rnn"), "{e}");
    cell.compile(&w.allow_partial_reads(), &Options::default())
        .unwrap();
}
