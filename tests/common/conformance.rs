//! The PyTorch and ONNX Runtime reference cases (`tests/conformance/`):
//! where they are, how to load one, and the error against its outputs.

use std::path::{Path, PathBuf};

use cellc::Weights;

/// max |cellc - reference| <= TOLERANCE * max |reference| per tensor
/// (`tests/conformance.rs` explains it).
pub const TOLERANCE: f64 = 1e-5;

pub fn dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/conformance/cases")
}

pub fn cases() -> Vec<(String, String)> {
    let manifest: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir().join("manifest.json")).unwrap())
            .unwrap();
    manifest["cases"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["case"].as_str().unwrap().to_string(),
                c["cell"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

/// A case's safetensors file, as a path string.
pub fn case_file(case: &str, kind: &str) -> String {
    dir()
        .join(format!("{case}.{kind}.safetensors"))
        .to_string_lossy()
        .into_owned()
}

pub fn load(case: &str, kind: &str) -> Weights {
    Weights::from_safetensors(dir().join(format!("{case}.{kind}.safetensors"))).unwrap()
}

/// The largest error of every expected tensor, relative to that tensor's largest magnitude.
pub fn compare(case: &str, got: &Weights, expected: &Weights) -> f64 {
    let mut worst = 0.0f64;
    for name in expected.names() {
        let want = expected.get(name).unwrap();
        let have = got
            .get(name)
            .unwrap_or_else(|| panic!("{case}: no `{name}` in the output"));
        assert_eq!(have.shape, want.shape, "{case}: `{name}`");
        let scale = want.data.iter().fold(0.0f64, |m, v| m.max(v.abs() as f64));
        let err = have
            .data
            .iter()
            .zip(&want.data)
            .fold(0.0f64, |m, (a, b)| m.max((*a as f64 - *b as f64).abs()));
        worst = worst.max(err / scale.max(1e-30));
    }
    worst
}
