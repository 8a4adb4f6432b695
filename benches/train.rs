//! A training step's two halves on their own, from Rust (no Python in the
//! way): the forward pass with its tape, and the backward pass over a kept
//! tape, for the LSTM, the GRU and the layer-normalised LSTM of `examples/`,
//! X = H, T = 100. `cargo bench --bench train` (a few minutes);
//! `TRAIN_SIZES=256x32,512x64` (H x batch) measures other sizes,
//! `TRAIN_CELLS=lstm` fewer cells, `TRAIN_THREADS=1` one thread (default:
//! every core). Throughput is in FLOPs of the products (criterion's
//! "elem/s"): `2 · 4H · (X + H) · B · T` per pass for the LSTM, 3H for the
//! GRU, which is what the FMA peak bounds.

use cellc::{Cell, Options};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};

const STEPS: usize = 100;

fn bench(c: &mut Criterion) {
    // Every core by default, not `cellc::max_threads()`: `.cargo/config.toml`
    // raises that bound for the tests' thread counts.
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let threads = Some(
        std::env::var("TRAIN_THREADS")
            .map_or(cores, |t| t.parse().expect("TRAIN_THREADS: a number")),
    );
    let opts = Options {
        threads,
        ..Options::default()
    };
    for cell in cells() {
        let gates = if cell == "gru" { 3 } else { 4 };
        for (h, batch) in sizes() {
            let source = Cell::from_file(format!("examples/{cell}.rnn"))
                .and_then(|c| c.dims(&[("X", h as u64), ("H", h as u64)]))
                .expect("the example cell");
            let ir = source.ir().expect("lowered");
            let params = cellc::Weights::random(&ir, 1).resolve(&ir).expect("params");
            let params: Vec<Vec<f32>> = params.into_iter().map(|p| scaled(p, h)).collect();
            let trainer = source
                .compile_training_params(params, &opts)
                .expect("a trainer");
            let xs: Vec<Vec<f32>> = (ir.inputs.iter())
                .map(|p| wave(STEPS * batch * p.len, 0.5))
                .collect();
            let h0: Vec<Vec<f32>> = ir.states.iter().map(|p| wave(batch * p.len, 0.1)).collect();
            let dy: Vec<Vec<f32>> = (ir.outputs.iter())
                .map(|p| wave(STEPS * batch * p.len, 1.0))
                .collect();
            let dh: Vec<Vec<f32>> = ir.states.iter().map(|p| vec![0.0; batch * p.len]).collect();
            let xs: Vec<&[f32]> = xs.iter().map(Vec::as_slice).collect();
            let h0: Vec<&[f32]> = h0.iter().map(Vec::as_slice).collect();
            let dy: Vec<&[f32]> = dy.iter().map(Vec::as_slice).collect();
            let dh: Vec<&[f32]> = dh.iter().map(Vec::as_slice).collect();
            let flops = 2 * gates * h * 2 * h * batch * STEPS;
            let mut group = c.benchmark_group(format!("train/{cell}/H{h}xB{batch}"));
            group.throughput(Throughput::Elements(flops as u64));
            group.sample_size(10);
            group.measurement_time(std::time::Duration::from_secs(4));
            group.bench_function("forward", |b| {
                b.iter(|| trainer.forward(&xs, &h0, STEPS, batch).expect("forward"))
            });
            let tape = trainer
                .forward(&xs, &h0, STEPS, batch)
                .expect("forward")
                .tape;
            group.bench_function("backward", |b| {
                b.iter(|| trainer.backward(&tape, &dy, &dh).expect("backward"))
            });
            group.finish();
        }
    }
}

/// Weights of PyTorch's scale (uniform in ±1/√H), so that the gates are
/// neither saturated nor flat.
fn scaled(p: Vec<f32>, h: usize) -> Vec<f32> {
    let s = 1.0 / (h as f32).sqrt();
    p.into_iter().map(|v| v * s).collect()
}

/// `n` deterministic values in ±`scale`.
fn wave(n: usize, scale: f32) -> Vec<f32> {
    (0..n).map(|i| scale * ((i as f32) * 0.618).sin()).collect()
}

fn cells() -> Vec<String> {
    let list = std::env::var("TRAIN_CELLS").unwrap_or_else(|_| "lstm,gru,layernorm_lstm".into());
    list.split(',').map(|s| s.trim().to_string()).collect()
}

/// `TRAIN_SIZES` (H x batch), or H = 256, batch 32.
fn sizes() -> Vec<(usize, usize)> {
    let Ok(list) = std::env::var("TRAIN_SIZES") else {
        return vec![(256, 32)];
    };
    list.split(',')
        .map(|size| {
            let n: Vec<usize> = (size.split('x'))
                .map(|n| n.trim().parse().expect("TRAIN_SIZES: H x batch"))
                .collect();
            assert!(n.len() == 2, "TRAIN_SIZES: H x batch, not {size}");
            (n[0], n[1])
        })
        .collect()
}

criterion_group!(benches, bench);
criterion_main!(benches);
