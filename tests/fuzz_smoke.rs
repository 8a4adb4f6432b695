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
    // Printed IR of every example, and mutations of it.
    for name in ["lstm", "gru", "lstmp"] {
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
