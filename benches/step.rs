//! Per-step time of the JIT-compiled LSTM and GRU, fused (optimizer on) and
//! unfused (every product and element-wise operation its own pass), at
//! H in {128, 256, 512, 1024} (X = H), batch 1 and 64.
//!
//! `cargo bench --bench step` (about three minutes); one group per cell, size and
//! batch, so criterion's report puts fused and unfused side by side.

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};

use cellc::{Cell, Options, Weights};

fn bench(c: &mut Criterion) {
    for cell_name in ["lstm", "gru"] {
        for h in [128u64, 256, 512, 1024] {
            for batch in [1usize, 64] {
                let cell = Cell::from_file(format!(
                    "{}/examples/{cell_name}.rnn",
                    env!("CARGO_MANIFEST_DIR")
                ))
                .unwrap()
                .dims(&[("X", h), ("H", h)])
                .unwrap();
                let ir = cell.ir().unwrap();
                let weights = Weights::random(&ir, 1);
                let flops = cellc::ir::stats::stats(&ir).flops_per_step * batch as u64;
                let mut group = c.benchmark_group(format!("{cell_name}/H={h}/B={batch}"));
                group.throughput(Throughput::Elements(flops));
                group.sample_size(20);
                group.warm_up_time(std::time::Duration::from_millis(500));
                group.measurement_time(std::time::Duration::from_secs(2));
                for (label, optimize) in [("fused", true), ("unfused", false)] {
                    let kernel = cell
                        .compile(
                            &weights,
                            &Options {
                                optimize,
                                ..Options::default()
                            },
                        )
                        .unwrap();
                    let mut state = kernel.new_state(batch).unwrap();
                    let x = vec![0.1f32; batch * h as usize];
                    group.bench_function(BenchmarkId::from_parameter(label), |b| {
                        b.iter(|| kernel.step(&x, &mut state).unwrap())
                    });
                }
                group.finish();
            }
        }
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
