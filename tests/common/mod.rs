//! Helpers shared by the integration tests.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

/// Every `.rnn` cell the project ships, sorted by name: the examples and the
/// cells the ONNX importer uses (`src/onnx/cells/`).
pub fn examples() -> Vec<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files: Vec<PathBuf> = ["examples", "src/onnx/cells"]
        .iter()
        .flat_map(|d| std::fs::read_dir(root.join(d)).unwrap())
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "rnn"))
        .collect();
    files.sort_by_key(|p| stem(p));
    files
}

pub fn stem(p: &Path) -> String {
    p.file_stem().unwrap().to_string_lossy().into_owned()
}

/// The crate's generator (SplitMix64), so tests need no seed files.
pub use cellc::gen::Rng;

/// Random parameters for a cell, scaled like a trained network's (about 1/sqrt(fan-in)).
pub fn random_params(cell: &cellc::ir::Cell, rng: &mut Rng) -> cellc::interp::ParamValues {
    cellc::interp::ParamValues(
        cell.params
            .iter()
            .map(|p| match p.ty {
                cellc::ir::Type::Matrix(r, c) => rng.vec(r * c, 1.0 / (c as f64).sqrt()),
                cellc::ir::Type::Vector(n) => rng.vec(n, 0.5),
                cellc::ir::Type::Scalar => rng.vec(1, 0.5),
            })
            .collect(),
    )
}

/// The path of a shipped cell by its stem (see [`examples`]).
pub fn example_path(name: &str) -> PathBuf {
    examples()
        .into_iter()
        .find(|p| stem(p) == name)
        .unwrap_or_else(|| panic!("no cell named `{name}`"))
}
