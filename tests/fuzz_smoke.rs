//! A short run of each fuzz target's body on deterministic inputs, so the normal
//! test suite keeps them working. The long runs: see docs/testing.md.

use cellc::fuzzing;

fn bytes(seed: u64, len: usize) -> Vec<u8> {
    let mut rng = cellc::gen::Rng(seed);
    (0..len).map(|_| rng.next_u64() as u8).collect()
}

#[test]
fn parse_check_smoke() {
    for seed in 0..500 {
        fuzzing::parse_check(&bytes(seed, (seed % 300) as usize));
    }
    // And mutations of a real cell.
    let lstm = std::fs::read(concat!(env!("CARGO_MANIFEST_DIR"), "/examples/lstm.rnn")).unwrap();
    for seed in 0..300u64 {
        let mut m = lstm.clone();
        let mut rng = cellc::gen::Rng(seed);
        for _ in 0..3 {
            let i = rng.below(m.len());
            m[i] = rng.next_u64() as u8;
        }
        fuzzing::parse_check(&m);
    }
}

#[test]
fn jit_vs_interp_smoke() {
    for seed in 0..40 {
        fuzzing::jit_vs_interp(&bytes(seed, 16));
    }
}

#[test]
fn ir_text_smoke() {
    for seed in 0..500 {
        fuzzing::ir_text(&bytes(seed, (seed % 200) as usize));
    }
    // Found by the fuzzer: a parameter declared twice, the second never read
    // and of 6.7e18 floats (the harness allocated it; the verifier now
    // refuses the duplicate name).
    let twice = "cell b\nparam v0:[2]=c\nparam v0:[6666666666666666662]\n";
    fuzzing::ir_text(twice.as_bytes());
    let err = cellc::ir::parse::parse(twice)
        .map_err(|e| e.to_string())
        .and_then(|c| cellc::ir::verify::verify(&c).map_err(|e| e.to_string()));
    assert!(
        err.as_ref()
            .is_err_and(|e| e.contains("two parameters are named `v0`")),
        "{err:?}"
    );
    // Printed IR of every example, and mutations of it (with reductions).
    for name in ["lstm", "gru", "lstmp", "layernorm_lstm"] {
        let cell = cellc::Cell::from_file(format!(
            "{}/examples/{name}.rnn",
            env!("CARGO_MANIFEST_DIR")
        ))
        .unwrap()
        .dims(&[("X", 3), ("H", 4)])
        .or_else(|_| {
            cellc::Cell::from_file(format!(
                "{}/examples/{name}.rnn",
                env!("CARGO_MANIFEST_DIR")
            ))
            .unwrap()
            .dims(&[("X", 3), ("H", 4), ("P", 2)])
        })
        .unwrap();
        for ir in [
            cell.ir().unwrap(),
            cell.optimized(&Default::default()).unwrap().ir,
        ] {
            let text = cellc::ir::print::print(&ir).into_bytes();
            fuzzing::ir_text(&text);
            for seed in 0..200u64 {
                let mut m = text.clone();
                let mut rng = cellc::gen::Rng(seed);
                let i = rng.below(m.len());
                m[i] = b"0123456789v,[]_ae+"[rng.below(18)];
                fuzzing::ir_text(&m);
            }
        }
    }
}

/// Mutations of every committed file of a kind (ONNX models, safetensors).
fn mutations(ext: &str, per_file: u64, run: fn(&[u8])) {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/conformance/cases");
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.to_string_lossy().ends_with(ext))
        .collect();
    files.sort();
    assert!(!files.is_empty());
    for (f, path) in files.iter().enumerate() {
        let good = std::fs::read(path).unwrap();
        run(&good);
        for seed in 0..per_file {
            let mut m = good.clone();
            let mut rng = cellc::gen::Rng(seed * 1000 + f as u64);
            for _ in 0..1 + rng.below(4) {
                let i = rng.below(m.len());
                m[i] = rng.next_u64() as u8;
            }
            if rng.below(4) == 0 {
                m.truncate(rng.below(m.len() + 1));
            }
            run(&m);
        }
    }
}

#[test]
fn onnx_import_smoke() {
    for seed in 0..300 {
        fuzzing::onnx_import(&bytes(seed, (seed % 400) as usize));
    }
    mutations(".onnx", 40, fuzzing::onnx_import);
}

/// Models with external data and constant subgraphs to fold (the exports of
/// `gen_onnx_exports.py`): mutations of the model, of its data file, and
/// both, through the reader that finds data beside the model.
#[test]
fn onnx_external_smoke() {
    let dir =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/conformance/cases/exports");
    let mut models: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.to_string_lossy().ends_with(".onnx"))
        .collect();
    models.sort();
    let mut with_data = 0;
    for (f, path) in models.iter().enumerate() {
        let model = std::fs::read(path).unwrap();
        let data = std::fs::read(path.with_extension("onnx.data")).unwrap_or_default();
        with_data += usize::from(!data.is_empty());
        fuzzing::onnx_with_data(&model, &data);
        for seed in 0..12u64 {
            let mut rng = cellc::gen::Rng(seed * 1000 + f as u64);
            let (mut m, mut d) = (model.clone(), data.clone());
            let target = rng.below(3);
            for _ in 0..1 + rng.below(4) {
                if target != 1 && !m.is_empty() {
                    let i = rng.below(m.len());
                    m[i] = rng.next_u64() as u8;
                }
                if target != 0 && !d.is_empty() {
                    let i = rng.below(d.len());
                    d[i] = rng.next_u64() as u8;
                }
            }
            if rng.below(4) == 0 {
                d.truncate(rng.below(d.len() + 1));
            }
            fuzzing::onnx_with_data(&m, &d);
        }
    }
    assert!(with_data >= 3, "{with_data} models with external data");
    for seed in 0..100 {
        fuzzing::onnx_external(&bytes(seed, (seed % 400) as usize));
    }
}

#[test]
fn safetensors_smoke() {
    for seed in 0..300 {
        fuzzing::safetensors(&bytes(seed, (seed % 300) as usize));
    }
    mutations(".safetensors", 10, fuzzing::safetensors);
}

#[test]
fn run_shapes_smoke() {
    for seed in 0..400 {
        fuzzing::run_shapes(&bytes(seed, 64));
    }
}

#[test]
fn sequences_smoke() {
    for seed in 0..24 {
        fuzzing::sequences(&bytes(seed, 24));
    }
}
