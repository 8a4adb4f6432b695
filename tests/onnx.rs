//! ONNX models against ONNX Runtime: the exported cases of
//! `tests/conformance/` (single nodes, networks, whole exported graphs with
//! their glue) run through the importer and compared with ONNX Runtime's
//! outputs (the conformance tolerance); models the importer does not
//! understand, and weights given beside a model, are refused with messages
//! that name the cause.

mod common;

use std::process::Command;

use cellc::{Cell, Options, Weights};
use common::conformance::{case_file, compare, dir, load, TOLERANCE};

fn onnx_cases() -> Vec<String> {
    let manifest: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir().join("manifest.json")).unwrap())
            .unwrap();
    manifest["onnx_cases"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["case"].as_str().unwrap().to_string())
        .collect()
}

/// ONNX LSTM (with and without peepholes) and GRU (linear_before_reset 0 and 1)
/// nodes, imported and run, against ONNX Runtime's outputs (same tolerance).
#[test]
fn onnx_models_match_onnx_runtime() {
    let cases = onnx_cases();
    assert_eq!(cases.len(), 5);
    for case in cases {
        let bytes = std::fs::read(dir().join(format!("{case}.onnx"))).unwrap();
        let imported = cellc::onnx::import(&bytes).unwrap_or_else(|e| panic!("{case}: {e}"));
        let cell = Cell::from_source(imported.cell_name, imported.cell_source).unwrap();
        let out = cellc::run::run(
            &cell,
            &imported.weights,
            &load(&case, "inputs"),
            &[],
            &Options::default(),
        )
        .unwrap_or_else(|e| panic!("{case}: {e}"));
        let err = compare(&case, &out, &load(&case, "expected"));
        assert!(err < TOLERANCE, "{case}: relative error {err:e}");
        // And through the command line.
        let out = common::cellc_run(&[
            dir().join(format!("{case}.onnx")).to_str().unwrap(),
            "--inputs",
            &case_file(&case, "inputs"),
        ]);
        let err = compare(&case, &out, &load(&case, "expected"));
        assert!(
            err < TOLERANCE,
            "{case} (cellc run): relative error {err:e}"
        );
    }
}

#[test]
fn unsupported_onnx_models_are_refused_clearly() {
    for (file, expect) in [
        ("refused_clip", "clip"),
        ("refused_activations", "activations"),
    ] {
        let bytes = std::fs::read(dir().join(format!("{file}.onnx"))).unwrap();
        let err = cellc::onnx::import(&bytes).unwrap_err().to_string();
        assert!(err.contains(expect), "{file}: {err}");
    }
    // Not ONNX at all, truncated ONNX, and random bytes: errors, never a panic.
    let good = std::fs::read(dir().join("onnx_gru_lbr1_tiny.onnx")).unwrap();
    for cut in [0, 1, 7, good.len() / 2, good.len() - 1] {
        assert!(cellc::onnx::import(&good[..cut]).is_err(), "cut at {cut}");
    }
    let mut rng = cellc::gen::Rng(9);
    for len in 0..2000 {
        let bytes: Vec<u8> = (0..len % 300).map(|_| rng.next_u64() as u8).collect();
        let _ = cellc::onnx::import(&bytes);
        let mut m = good.clone();
        let i = rng.below(m.len());
        m[i] = rng.next_u64() as u8;
        let _ = cellc::onnx::import(&m);
    }
}

/// `--weights` with an ONNX model (which carries its own) is an error, not
/// silently ignored.
#[test]
fn weights_beside_an_onnx_model_are_refused() {
    let out = Command::new(env!("CARGO_BIN_EXE_cellc"))
        .arg("run")
        .arg(dir().join("onnx_gru_lbr1_tiny.onnx"))
        .arg("--weights")
        .arg(dir().join("gru_tiny.weights.safetensors"))
        .arg("--inputs")
        .arg(dir().join("onnx_gru_lbr1_tiny.inputs.safetensors"))
        .arg("-o")
        .arg(std::env::temp_dir().join("cellc-never-written.safetensors"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--weights") && err.contains("ONNX"), "{err}");
}

fn onnx_graphs() -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(dir().join("onnx_graphs.json")).unwrap()).unwrap()
}

/// Models as `torch.onnx.export` writes them (`gen_onnx.py`): with the default
/// (dynamo) exporter, a Transpose and a Reshape after the LSTM; with the legacy
/// one, initial states from an Expand of zeros and a Squeeze of Y. Imported and
/// run, against ONNX Runtime's outputs.
#[test]
fn exported_graphs_match_onnx_runtime() {
    let graphs = onnx_graphs();
    let accepted = graphs["accepted"].as_array().unwrap();
    assert_eq!(accepted.len(), 2);
    for case in accepted {
        let case = case.as_str().unwrap();
        let bytes = std::fs::read(dir().join(format!("{case}.onnx"))).unwrap();
        let imported = cellc::onnx::import(&bytes).unwrap_or_else(|e| panic!("{case}: {e}"));
        let err = imported_error(case, &imported);
        assert!(err < TOLERANCE, "{case}: relative error {err:e}");
    }
}

/// Everything the importer does not understand is refused, naming the node,
/// op or attribute: layers after it, attributes of the wrong ONNX type,
/// initial states of the wrong type or length.
#[test]
fn graphs_the_importer_does_not_understand_are_refused() {
    let graphs = onnx_graphs();
    let refused = graphs["refused"].as_object().unwrap();
    assert!(refused.len() >= 10);
    for (case, expect) in refused {
        let expect = expect.as_str().unwrap();
        let bytes = std::fs::read(dir().join(format!("{case}.onnx"))).unwrap();
        let err = cellc::onnx::import(&bytes)
            .err()
            .unwrap_or_else(|| panic!("{case} was imported"))
            .to_string();
        assert!(err.contains(expect), "{case}: {err}");
        assert!(err.len() < 600, "{case}: a long message: {err}");
    }
}

/// ONNX networks (`gen_onnx_networks.py`): bidirectional nodes with
/// sequence_lens and initial states, and stacks of layers as torch.onnx.export
/// writes them, through the library (with the imported initial states) and
/// `cellc run`, against ONNX Runtime; and what the importer refuses.
#[test]
fn onnx_networks_match_onnx_runtime() {
    let graphs: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir().join("onnx_networks.json")).unwrap())
            .unwrap();
    let accepted = graphs["accepted"].as_array().unwrap();
    assert_eq!(accepted.len(), 5);
    for case in accepted {
        let case = case.as_str().unwrap();
        let path = dir().join(format!("{case}.onnx"));
        let imported = cellc::onnx::import(&std::fs::read(&path).unwrap())
            .unwrap_or_else(|e| panic!("{case}: {e}"));
        let err = imported_error(case, &imported);
        assert!(err < TOLERANCE, "{case}: relative error {err:e}");
        let out = common::cellc_run(&[
            path.to_str().unwrap(),
            "--inputs",
            &case_file(case, "inputs"),
        ]);
        let err = compare(case, &out, &load(case, "expected"));
        assert!(
            err < TOLERANCE,
            "{case} (cellc run): relative error {err:e}"
        );
    }
    for (case, expect) in graphs["refused"].as_object().unwrap() {
        let bytes = std::fs::read(dir().join(format!("{case}.onnx"))).unwrap();
        let err = cellc::onnx::import(&bytes)
            .err()
            .unwrap_or_else(|| panic!("{case} was imported"))
            .to_string();
        assert!(err.contains(expect.as_str().unwrap()), "{case}: {err}");
    }
    // A model that takes sequence_lens, run without lengths: an error, not
    // every row taken as full length.
    let full = load("onnxnet_lstm_bi_lens", "inputs");
    let mut no_lengths = Weights::new();
    for name in full.names() {
        let t = full.get(name).unwrap();
        no_lengths.insert(name, &t.shape, t.data.clone()).unwrap();
    }
    let tmp = common::temp_dir("nolens");
    let inputs = tmp.join("in.safetensors");
    std::fs::write(&inputs, no_lengths.to_safetensors_bytes().unwrap()).unwrap();
    let (code, _, err) = common::cellc(&[
        "run",
        dir().join("onnxnet_lstm_bi_lens.onnx").to_str().unwrap(),
        "--inputs",
        inputs.to_str().unwrap(),
        "-o",
        tmp.join("out.safetensors").to_str().unwrap(),
    ]);
    let _ = std::fs::remove_dir_all(&tmp);
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("sequence_lens") && err.contains("`lengths`"),
        "{err}"
    );
}

/// Models as the exporters save them at realistic sizes (`gen_onnx_exports.py`):
/// H = 256 with both exporters (external data beside the model, weights
/// computed by Slice/Concat of PyTorch's tensors, literal Reshapes),
/// batch-first modules, stacked modules called with `(h0, c0)` (given under
/// the model's own input names), and a row of length 0 (ONNX Runtime's zero
/// state); through the library and `cellc run`, against ONNX Runtime. Then
/// what must be refused, by name.
#[test]
fn exported_models_run_as_onnx_runtime_runs_them() {
    let exports = dir().join("exports");
    let cases: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir().join("onnx_exports.json")).unwrap())
            .unwrap();
    let accepted = cases["accepted"].as_array().unwrap();
    assert_eq!(accepted.len(), 7);
    let load = |case: &str, kind: &str| {
        Weights::from_safetensors(exports.join(format!("{case}.{kind}.safetensors"))).unwrap()
    };
    for case in accepted {
        let case = case.as_str().unwrap();
        let path = exports.join(format!("{case}.onnx"));
        let imported = cellc::onnx::import_file(&path).unwrap_or_else(|e| panic!("{case}: {e}"));
        let out = cellc::run::run_onnx(&imported, &load(case, "inputs"), &Options::default())
            .unwrap_or_else(|e| panic!("{case}: {e}"));
        let err = compare(case, &out, &load(case, "expected"));
        assert!(err < TOLERANCE, "{case}: relative error {err:e}");
        let out = common::cellc_run(&[
            path.to_str().unwrap(),
            "--inputs",
            exports
                .join(format!("{case}.inputs.safetensors"))
                .to_str()
                .unwrap(),
        ]);
        let err = compare(case, &out, &load(case, "expected"));
        assert!(
            err < TOLERANCE,
            "{case} (cellc run): relative error {err:e}"
        );
    }
    // Given as bytes, a model with external data cannot be read: the error
    // says where its data is and how to read it.
    let bytes = std::fs::read(exports.join("exp_h256_lstm_bi_dynamo.onnx")).unwrap();
    let e = cellc::onnx::import(&bytes).unwrap_err().to_string();
    assert!(
        e.contains("exp_h256_lstm_bi_dynamo.onnx.data") && e.contains("import_file"),
        "{e}"
    );
    for (case, says) in cases["refused"].as_object().unwrap() {
        let says = says.as_str().unwrap();
        let path = exports.join(format!("{case}.onnx"));
        let e = match cellc::onnx::import_file(&path) {
            Err(e) => e.to_string(),
            // Refused when run: the sizes its glue fixes.
            Ok(imported) => cellc::run::run_onnx(
                &imported,
                &load("exp_h256_lstm_bi_legacy", "inputs"),
                &Options::default(),
            )
            .map(|_| ())
            .unwrap_err()
            .to_string(),
        };
        assert!(e.contains(says), "{case}: {e}");
    }
    // A graph input the run does not give (initial_h of a one-node model) is
    // an error, as in ONNX Runtime; it used to run from zeros.
    let imported = cellc::onnx::import_file(&dir().join("onnx_lstm_peephole_tiny.onnx")).unwrap();
    let full = common::conformance::load("onnx_lstm_peephole_tiny", "inputs");
    let x = full.get("x").unwrap();
    let only_x = Weights::new().with("x", &x.shape, x.data.clone()).unwrap();
    let e = cellc::run::run_onnx(&imported, &only_x, &Options::default())
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("graph input `initial_h`") && e.contains("refuses"),
        "{e}"
    );
    // And a tensor the model does not take is refused, naming what it takes.
    let mut extra = full.clone();
    extra.insert("q", &[1], vec![0.0]).unwrap();
    let e = cellc::run::run_onnx(&imported, &extra, &Options::default())
        .unwrap_err()
        .to_string();
    assert!(e.contains("`q`") && e.contains("`initial_c` or `c`"), "{e}");
}

/// Runs an imported model on its case's inputs (with the initial states the
/// model stores) and returns the error against the expected outputs.
fn imported_error(case: &str, imported: &cellc::onnx::Imported) -> f64 {
    let cell = Cell::from_source(imported.cell_name, imported.cell_source).unwrap();
    let mut inputs = load(case, "inputs");
    for name in imported.initial.names() {
        let t = imported.initial.get(name).unwrap();
        inputs.insert(name, &t.shape, t.data.clone()).unwrap();
    }
    let out = cellc::run::run(&cell, &imported.weights, &inputs, &[], &Options::default())
        .unwrap_or_else(|e| panic!("{case}: {e}"));
    compare(case, &out, &load(case, "expected"))
}
