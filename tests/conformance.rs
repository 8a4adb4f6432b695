//! Conformance with PyTorch: every case written by `tests/conformance/gen.py`
//! (nn.LSTM, nn.LSTM(proj_size), nn.GRU, nn.RNN, nn.LSTMCell, nn.GRUCell,
//! nn.RNNCell, each at a tiny and a medium size, with non-zero initial states) is
//! run through the library and through `cellc run`, and compared with PyTorch's
//! outputs and final states.
//!
//! Tolerance: max |cellc - PyTorch| <= 1e-5 * max |PyTorch| per tensor. Both sides
//! compute in f32 from the same weights but sum in different orders and use
//! different activation approximations; each side's rounding error is about
//! K * 2^-24 relative to the magnitude of the terms (K = X + H <= 160 here: ~1e-6
//! in the worst case, far less in practice), and both are within a few 1e-7 of the
//! exact result. The measured errors are around 4e-7; 1e-5 leaves headroom without
//! hiding a mistake (a wrong gate order or a dropped bias moves values by 1e-2).

mod common;

use std::path::Path;
use std::process::Command;

use cellc::network::Schedule;
use cellc::{Cell, Options, Weights};
use common::conformance::{case_file, cases, compare, dir, load, TOLERANCE};

#[test]
fn there_are_cases_for_every_module() {
    let cases = cases();
    assert_eq!(cases.len(), 26);
    for module in [
        "layernorm_lstm_",
        "layernorm_gru_",
        "peephole_lstm_",
        "indrnn_",
        "sru_",
        "hard_sigmoid_gru_",
        "lstm_",
        "lstm_proj_",
        "gru_",
        "rnn_",
        "lstmcell_",
        "grucell_",
        "rnncell_",
    ] {
        for size in ["tiny", "medium"] {
            assert!(
                cases.iter().any(|(c, _)| *c == format!("{module}{size}")),
                "{module}{size}"
            );
        }
    }
}

#[test]
fn library_matches_pytorch() {
    for (case, cell_file) in cases() {
        let cell = Cell::from_file(
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("examples")
                .join(&cell_file),
        )
        .unwrap();
        for optimize in [true, false] {
            let out = cellc::run::run(
                &cell,
                &load(&case, "weights"),
                &load(&case, "inputs"),
                &[],
                &Options {
                    optimize,
                    ..Options::default()
                },
            )
            .unwrap_or_else(|e| panic!("{case}: {e}"));
            let err = compare(&case, &out, &load(&case, "expected"));
            assert!(
                err < TOLERANCE,
                "{case} (optimize: {optimize}): relative error {err:e}"
            );
        }
    }
}

#[test]
fn cellc_run_matches_pytorch() {
    for (case, cell_file) in cases() {
        let out = common::cellc_run(&[
            &format!("examples/{cell_file}"),
            "--weights",
            &case_file(&case, "weights"),
            "--inputs",
            &case_file(&case, "inputs"),
        ]);
        let err = compare(&case, &out, &load(&case, "expected"));
        assert!(err < TOLERANCE, "{case}: relative error {err:e}");
    }
}

/// The network cases of `tests/conformance/gen_networks.py`: (case, cell file,
/// batch first).
fn network_cases() -> Vec<(String, String, bool)> {
    let manifest: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir().join("networks.json")).unwrap())
            .unwrap();
    manifest["cases"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["case"].as_str().unwrap().to_string(),
                c["cell"].as_str().unwrap().to_string(),
                c["batch_first"].as_bool().unwrap(),
            )
        })
        .collect()
}

/// Stacked, bidirectional, projected, bias-free, batch-first PyTorch modules,
/// with ragged lengths through `pack_padded_sequence`: the library on one and
/// on two threads (the same bits) and `cellc run` agree with PyTorch.
#[test]
fn networks_match_pytorch() {
    let cases = network_cases();
    assert_eq!(cases.len(), 12);
    let tmp = std::env::temp_dir().join(format!("cellc-net-{}", std::process::id()));
    std::fs::create_dir_all(&tmp).unwrap();
    for (case, cell_file, batch_first) in cases {
        let cell = Cell::from_file(
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("examples")
                .join(&cell_file),
        )
        .unwrap();
        let weights = load(&case, "weights");
        let inputs = load(&case, "inputs");
        let expected = load(&case, "expected");
        // The schedules this network can run this batch with.
        let bidirectional = weights.names().any(|n| n.ends_with("_reverse"));
        let layers = weights
            .names()
            .filter(|n| n.starts_with("weight_ih_l") && !n.ends_with("_reverse"))
            .count();
        let steps = inputs.get("x").unwrap().shape[usize::from(batch_first)];
        let ragged = inputs
            .integers("lengths")
            .is_some_and(|(_, l)| l.iter().any(|&n| n as usize != steps));
        let mut schedules = vec![None, Some(Schedule::LayerByLayer)];
        if bidirectional {
            schedules.push(Some(Schedule::DirectionsInParallel));
        }
        if !bidirectional && layers > 1 && !ragged {
            schedules.push(Some(Schedule::Wavefront));
        }
        let mut outs = Vec::new();
        for threads in [1, 2] {
            for &schedule in &schedules {
                let opts = Options {
                    threads: Some(threads),
                    ..Options::default()
                };
                let net_opts = cellc::run::NetworkOptions {
                    batch_first,
                    schedule,
                    ..Default::default()
                };
                let out = cellc::run::run_network(&cell, &weights, &inputs, &[], &opts, &net_opts)
                    .unwrap_or_else(|e| panic!("{case} {schedule:?}: {e}"));
                let err = compare(&case, &out, &expected);
                assert!(
                    err < TOLERANCE,
                    "{case} ({threads} threads, {schedule:?}): relative error {err:e}"
                );
                outs.push((threads, schedule, out));
            }
        }
        for (threads, schedule, out) in &outs[1..] {
            assert!(
                *out == outs[0].2,
                "{case}: {threads} threads, {schedule:?} differ from 1 thread, the default schedule"
            );
        }
        // A schedule this batch cannot take is refused, not ignored.
        let refused = |schedule: Schedule| {
            let net_opts = cellc::run::NetworkOptions {
                batch_first,
                schedule: Some(schedule),
                ..Default::default()
            };
            cellc::run::run_network(
                &cell,
                &weights,
                &inputs,
                &[],
                &Options::default(),
                &net_opts,
            )
            .unwrap_err()
            .to_string()
        };
        if ragged && !bidirectional && layers > 1 {
            let err = refused(Schedule::Wavefront);
            assert!(err.contains("different lengths"), "{case}: {err}");
        }
        if !bidirectional {
            let err = refused(Schedule::DirectionsInParallel);
            assert!(
                err.contains("cannot run directions-in-parallel"),
                "{case}: {err}"
            );
        }
        let out_path = tmp.join(format!("{case}.out.safetensors"));
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_cellc"));
        cmd.current_dir(env!("CARGO_MANIFEST_DIR"))
            .args(["run", &format!("examples/{cell_file}")])
            .arg("--weights")
            .arg(dir().join(format!("{case}.weights.safetensors")))
            .arg("--inputs")
            .arg(dir().join(format!("{case}.inputs.safetensors")))
            .arg("-o")
            .arg(&out_path);
        if batch_first {
            cmd.arg("--batch-first");
        }
        let status = cmd.status().unwrap();
        assert!(status.success(), "{case}");
        let got = Weights::from_safetensors(&out_path).unwrap();
        let err = compare(&case, &got, &expected);
        assert!(
            err < TOLERANCE,
            "{case} (cellc run): relative error {err:e}"
        );
    }
    let _ = std::fs::remove_dir_all(&tmp);
}

fn run_err(cell: &str, weights: &Weights, inputs: &Weights) -> String {
    let cell = Cell::from_file(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("examples")
            .join(cell),
    )
    .unwrap();
    cellc::run::run(&cell, weights, inputs, &[], &Options::default())
        .unwrap_err()
        .to_string()
}

/// What a network run cannot take is an error that names it.
#[test]
fn network_refusals_name_the_problem() {
    let weights = load("net_lstm_l2_bi_ragged", "weights");
    let inputs = load("net_lstm_l2_bi_ragged", "inputs");
    // Initial states of one layer for a network of two bidirectional layers.
    let mut two_d = Weights::new();
    for name in ["x", "h", "c"] {
        let t = inputs.get(name).unwrap();
        let shape = if name == "x" {
            t.shape.clone()
        } else {
            t.shape[1..].to_vec()
        };
        let n: usize = shape.iter().product();
        two_d.insert(name, &shape, t.data[..n].to_vec()).unwrap();
    }
    let err = run_err("lstm.rnn", &weights, &two_d);
    assert!(
        err.contains("initial state `h`") && err.contains("[4, B, len]"),
        "{err}"
    );
    // A layer without one of the tensors the others have.
    let mut missing = Weights::new();
    for name in weights.names().filter(|n| *n != "bias_hh_l1_reverse") {
        let t = weights.get(name).unwrap();
        missing.insert(name, &t.shape, t.data.clone()).unwrap();
    }
    let err = run_err("lstm.rnn", &missing, &inputs);
    assert!(err.contains("no `bias_hh_l1_reverse`"), "{err}");
    // A tensor of the checkpoint that the cell does not read.
    let mut extra = weights.clone();
    extra
        .insert("weight_hr_l0", &[11, 11], vec![0.0; 121])
        .unwrap();
    extra
        .insert("weight_hr_l1", &[11, 11], vec![0.0; 121])
        .unwrap();
    extra
        .insert("weight_hr_l0_reverse", &[11, 11], vec![0.0; 121])
        .unwrap();
    extra
        .insert("weight_hr_l1_reverse", &[11, 11], vec![0.0; 121])
        .unwrap();
    let err = run_err("lstm.rnn", &extra, &inputs);
    assert!(
        err.contains("`weight_hr_l0`")
            && err.contains("read by no parameter")
            && err.contains("lstm_proj.rnn"),
        "{err}"
    );
    // Lengths: too long, negative, floating-point, of the wrong shape, misnamed.
    let with_lengths = |f: &dyn Fn(&mut Weights)| {
        let mut w = Weights::new();
        for name in ["x", "h", "c"] {
            let t = inputs.get(name).unwrap();
            w.insert(name, &t.shape, t.data.clone()).unwrap();
        }
        f(&mut w);
        run_err("lstm.rnn", &weights, &w)
    };
    let err = with_lengths(&|w| {
        w.insert_integers("lengths", &[4], vec![6, 7, 1, 2])
            .unwrap()
    });
    assert!(
        err.contains("row 1 length 7") && err.contains("T = 6"),
        "{err}"
    );
    let err = with_lengths(&|w| {
        w.insert_integers("lengths", &[4], vec![6, -1, 1, 2])
            .unwrap()
    });
    assert!(err.contains("row 1 length -1"), "{err}");
    let err = with_lengths(&|w| w.insert("lengths", &[4], vec![6.0, 1.0, 1.0, 2.0]).unwrap());
    assert!(err.contains("sequence lengths are integers"), "{err}");
    let err = with_lengths(&|w| w.insert_integers("lengths", &[3], vec![6, 1, 1]).unwrap());
    assert!(err.contains("expected [4]"), "{err}");
    let err = with_lengths(&|w| w.insert_integers("length", &[4], vec![6, 1, 1, 2]).unwrap());
    assert!(err.contains("did you mean `lengths`"), "{err}");
    // A network's checkpoint compiled as one cell: refused, not layer 0 alone.
    let one = common::cell("lstm").dims(&[("X", 7), ("H", 11)]).unwrap();
    let err = one
        .compile(&weights, &Options::default())
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("hold a network (2 layers, bidirectional") && err.contains("for_checkpoint"),
        "{err}"
    );
    // Weights of another depth than the network asked for.
    let lstm = common::cell("lstm");
    let net = cellc::network::Network::new(
        lstm,
        cellc::network::Layout {
            layers: 3,
            bidirectional: true,
            reverse: false,
        },
    )
    .unwrap();
    let err = net
        .compile(&weights, &Options::default())
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("3 layers, bidirectional") && err.contains("2 layers, bidirectional"),
        "{err}"
    );
}

#[test]
fn disagreeing_shapes_name_both_tensors() {
    let gru = common::cell("gru");
    // Tiny weights (X = 7) with medium inputs (X = 64).
    let err = cellc::run::run(
        &gru,
        &load("gru_tiny", "weights"),
        &load("gru_medium", "inputs"),
        &[],
        &Options::default(),
    )
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("weight_ih_l0") && err.contains("input `x` [20, 4, 64]"),
        "{err}"
    );
    // An initial state of the wrong batch.
    let mut inputs = Weights::new();
    let x = load("gru_tiny", "inputs");
    let xt = x.get("x").unwrap();
    inputs.insert("x", &xt.shape, xt.data.clone()).unwrap();
    inputs.insert("h", &[2, 11], vec![0.0; 22]).unwrap();
    let err = cellc::run::run(
        &gru,
        &load("gru_tiny", "weights"),
        &inputs,
        &[],
        &Options::default(),
    )
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("initial state `h` is [2, 11]") && err.contains("B = 3"),
        "{err}"
    );
}

/// A tensor in the inputs that the cell does not read (an initial state saved
/// as `h0` where the state is `h`) is an error naming what the cell reads, not
/// a run from zeros.
#[test]
fn inputs_the_cell_does_not_read_are_refused() {
    let gru = common::cell("gru");
    let x = load("gru_tiny", "inputs");
    let xt = x.get("x").unwrap();
    let mut inputs = Weights::new();
    inputs.insert("x", &xt.shape, xt.data.clone()).unwrap();
    inputs.insert("h0", &[3, 11], vec![0.5; 33]).unwrap();
    let err = cellc::run::run(
        &gru,
        &load("gru_tiny", "weights"),
        &inputs,
        &[],
        &Options::default(),
    )
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("`h0`") && err.contains("`x` (input") && err.contains("`h` (initial state"),
        "{err}"
    );
}

/// The state_dict of a module holding the LSTM as `self.rnn`: the error names
/// the prefix, and `--prefix` (or `Weights::strip_prefix`) runs it.
#[test]
fn prefixed_state_dicts_are_recognised() {
    let weights = load("lstm_tiny", "weights");
    let mut prefixed = Weights::new();
    for name in weights.names() {
        let t = weights.get(name).unwrap();
        prefixed
            .insert(&format!("rnn.{name}"), &t.shape, t.data.clone())
            .unwrap();
    }
    let lstm = common::cell("lstm");
    let inputs = load("lstm_tiny", "inputs");
    let err = cellc::run::run(&lstm, &prefixed, &inputs, &[], &Options::default())
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("`rnn.weight_ih_l0`") && err.contains("--prefix rnn."),
        "{err}"
    );
    let stripped = prefixed.strip_prefix("rnn.").unwrap();
    let out = cellc::run::run(&lstm, &stripped, &inputs, &[], &Options::default()).unwrap();
    assert!(compare("lstm_tiny", &out, &load("lstm_tiny", "expected")) < TOLERANCE);
    let err = prefixed.strip_prefix("model.").unwrap_err().to_string();
    assert!(err.contains("`rnn.`"), "{err}");
    // The command line.
    let tmp = std::env::temp_dir().join(format!("cellc-prefix-{}", std::process::id()));
    std::fs::create_dir_all(&tmp).unwrap();
    let w = tmp.join("w.safetensors");
    std::fs::write(&w, prefixed.to_safetensors_bytes().unwrap()).unwrap();
    let out = tmp.join("out.safetensors");
    let run = |extra: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_cellc"))
            .args(["run", "examples/lstm.rnn", "--weights"])
            .arg(&w)
            .arg("--inputs")
            .arg(dir().join("lstm_tiny.inputs.safetensors"))
            .arg("-o")
            .arg(&out)
            .args(extra)
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .output()
            .unwrap()
    };
    let refused = run(&[]);
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("--prefix rnn."));
    let ok = run(&["--prefix", "rnn."]);
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    let got = Weights::from_safetensors(&out).unwrap();
    assert!(compare("lstm_tiny", &got, &load("lstm_tiny", "expected")) < TOLERANCE);
    let _ = std::fs::remove_dir_all(&tmp);
}
