//! Helpers shared by the integration tests.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

pub mod conformance;
pub mod sequences;

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

/// A shipped cell by its stem (`lstm`), with the file's default sizes.
pub fn cell(name: &str) -> cellc::Cell {
    cellc::Cell::from_file(example_path(name)).unwrap_or_else(|e| panic!("{name}: {e}"))
}

/// A shipped cell by its stem, at the sizes given.
pub fn cell_with(name: &str, dims: &[(&str, u64)]) -> cellc::Cell {
    cell(name)
        .dims(dims)
        .unwrap_or_else(|e| panic!("{name} {dims:?}: {e}"))
}

/// Runs the `cellc` binary from the crate's root: the exit code, stdout and
/// stderr. A panic in it fails the test.
pub fn cellc(args: &[&str]) -> (i32, String, String) {
    cellc_with_env(args, &[])
}

/// [`cellc`] with environment variables set.
pub fn cellc_with_env(args: &[&str], env: &[(&str, &str)]) -> (i32, String, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_cellc"))
        .args(args)
        .envs(env.iter().copied())
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("cellc runs");
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!err.contains("panicked"), "{args:?}: {err}");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        err,
    )
}

/// A fresh folder of this test process, named `name` (and numbered: tests
/// run at once in one process).
pub fn temp_dir(name: &str) -> PathBuf {
    static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let d = std::env::temp_dir().join(format!("cellc-{name}-{}-{n}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// `cellc run ARGS -o OUT` succeeds, and OUT's tensors come back.
pub fn cellc_run(args: &[&str]) -> cellc::Weights {
    let dir = temp_dir("run");
    let out = dir.join("out.safetensors");
    let mut all = vec!["run"];
    all.extend_from_slice(args);
    all.extend(["-o", out.to_str().unwrap()]);
    let (code, _, err) = cellc(&all);
    assert_eq!(code, 0, "{all:?}: {err}");
    let w = cellc::Weights::from_safetensors(&out).unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    w
}

/// The cell at `path` with `X = x`, `H = h` and a projection `P = h / 2`,
/// those of them it has (the sizes the differential tests sweep).
pub fn sized(path: &Path, x: u64, h: u64) -> cellc::Cell {
    let cell = cellc::Cell::from_file(path).unwrap();
    let dims: Vec<(&str, u64)> = [("X", x), ("H", h), ("P", (h / 2).max(1))]
        .into_iter()
        .filter(|(n, _)| cell.dim_names().iter().any(|d| d == n))
        .collect();
    cell.dims(&dims).unwrap()
}

/// Fails when the environment asks for an ISA (`CELLC_REQUIRE_ISAS`, names
/// separated by commas: `.ci/run` sets what the CPU advertises) that a per-ISA
/// test did not cover; otherwise says which it covered and which the host
/// lacks (a skipped ISA is said, never silent).
#[allow(clippy::print_stderr)] // says what the host let it test
pub fn check_isa_coverage(what: &str, covered: &[cellc::Isa]) {
    let lacks: Vec<&str> = cellc::Isa::ALL
        .into_iter()
        .filter(|i| !covered.contains(i))
        .map(|i| i.name())
        .collect();
    let names: Vec<&str> = covered.iter().map(|i| i.name()).collect();
    eprintln!("{what} covered: {names:?}; not covered here: {lacks:?}");
    if let Ok(required) = std::env::var("CELLC_REQUIRE_ISAS") {
        for name in required.split(',').map(str::trim).filter(|n| !n.is_empty()) {
            let isa = cellc::Isa::from_name(name)
                .unwrap_or_else(|| panic!("CELLC_REQUIRE_ISAS names `{name}`, no ISA"));
            assert!(
                covered.contains(&isa),
                "CELLC_REQUIRE_ISAS asks for {name}, which {what} did not cover here"
            );
        }
    }
}

/// The worst error over 6 steps of `cell` compiled with `opts` against the
/// interpreter (`cellc::fuzzing::differential`), on random weights from
/// `seed`: the interpreter given the weights the kernel computes with
/// (`rounded`: as the options' storage and arithmetic round them) or the
/// raw ones. With it, the arithmetic the kernel ran.
pub fn kernel_error(
    cell: &cellc::Cell,
    opts: &cellc::Options,
    batch: usize,
    seed: u64,
    rounded: bool,
) -> (f64, cellc::Compute) {
    let ir = cell.ir().unwrap();
    let weights = cellc::Weights::random(&ir, seed);
    let kernel_ir = cell.kernel_ir(opts).unwrap();
    let raw = weights.resolve(&kernel_ir).unwrap();
    let reference: Vec<Vec<f32>> = if rounded {
        cellc::quant::effective_params(&kernel_ir, &raw)
            .into_iter()
            .map(|v| v.into_owned())
            .collect()
    } else {
        raw
    };
    let kernel = cell
        .compile(&weights, opts)
        .unwrap_or_else(|e| panic!("{e}"));
    let d = cellc::fuzzing::differential(
        &kernel,
        &ir,
        &cellc::interp::ParamValues::from_f32(&reference),
        batch,
        6,
        seed,
        1.0,
    );
    (d.worst, kernel.compute())
}

/// The message of the error `cell` gives when compiled with random weights
/// under `options` (panics if it compiles).
pub fn compile_error(cell: &cellc::Cell, options: &cellc::Options) -> String {
    let weights = cellc::Weights::random(&cell.ir().unwrap(), 1);
    match cell.compile(&weights, options) {
        Ok(_) => panic!("compiled where an error was expected"),
        Err(e) => e.to_string(),
    }
}

/// A cell whose input matrix `W` is stored as `storage` (`int8`, `bf16`)
/// by an annotation in its source.
pub fn annotated(storage: &str) -> cellc::Cell {
    cellc::Cell::from_source(
        &format!("{storage}.rnn"),
        &format!(
            "dim X = 4\ndim H = 4\ninput x: [X]\nstate h: [H]\nparam W: {storage}[H, X]\n\
             param U: [H, H]\noutput y: [H]\nh' = tanh(W @ x + U @ h)\ny = h'\n"
        ),
    )
    .unwrap()
}

/// Training and AOT objects compute in float32: both refuse `options`
/// (whose arithmetic is narrower), each saying so.
pub fn assert_float32_faces_refuse(cell: &cellc::Cell, options: &cellc::Options) {
    let weights = cellc::Weights::random(&cell.ir().unwrap(), 1);
    let e = cell
        .compile_training(&weights, options)
        .err()
        .expect("training refused")
        .to_string();
    assert!(e.contains("training computes in f32"), "{e}");
    let object = cellc::Options {
        threads: Some(1),
        ..options.clone()
    };
    let e = cell
        .compile_object(&object, None)
        .err()
        .expect("an object refused")
        .to_string();
    assert!(e.contains("objects compute in f32"), "{e}");
}

/// `cellc bench` of the LSTM (X = H = 8, batch 4, 3 steps) under
/// `--compute compute`: its JSON report, the run having succeeded.
pub fn bench_json_with_compute(compute: &str) -> serde_json::Value {
    let (code, out, err) = cellc(&[
        "bench",
        "examples/lstm.rnn",
        "--dims",
        "X=8,H=8",
        "--batch",
        "4",
        "--seq",
        "3",
        "--compute",
        compute,
        "--samples",
        "1",
        "--no-unfused",
        "--json",
    ]);
    assert_eq!(code, 0, "{err}");
    serde_json::from_str(&out).unwrap()
}
