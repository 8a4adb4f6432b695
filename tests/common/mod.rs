//! Helpers shared by the integration tests.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

/// Every `.rnn` example, sorted by name.
pub fn examples() -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples");
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "rnn"))
        .collect();
    files.sort();
    files
}

pub fn stem(p: &Path) -> String {
    p.file_stem().unwrap().to_string_lossy().into_owned()
}

/// A small deterministic generator (SplitMix64), so tests need no seed files.
pub struct Rng(pub u64);

impl Rng {
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [-1, 1).
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 52) as f64 - 1.0
    }

    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }

    pub fn vec(&mut self, n: usize, scale: f64) -> Vec<f64> {
        (0..n).map(|_| self.unit() * scale).collect()
    }
}

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
