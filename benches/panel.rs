//! The batched product's kernels alone, one thread, against the FMA peak:
//! `cargo bench --bench panel` (under a minute). The size: batch 64,
//! 2048 weight rows (an LSTM at H = 512), k = 512; and H = 128's 512 x 256.
//! Criterion's throughput is in FLOPs (its "elem/s" are FLOP/s); the peak of
//! each width, measured in the same run, is printed beside it.
//! `PANEL_SIZES=64x2048x512,64x512x512` (batch x rows x k) measures other
//! sizes.

#![allow(clippy::print_stdout)]

use cellc::bench::ProductBench;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};

fn bench(c: &mut Criterion) {
    for isa in cellc::Isa::ALL.into_iter().filter(|i| i.available()) {
        for (batch, rows, k) in sizes() {
            let Ok(mut p) = ProductBench::new(isa, batch, rows, k) else {
                continue;
            };
            if isa == cellc::Isa::Scalar && rows > 512 {
                continue;
            }
            println!(
                "{} FMA peak, one core: {:.1} GFLOP/s",
                isa.name(),
                p.peak_gflops()
            );
            let mut group = c.benchmark_group(format!("product/{}", isa.name()));
            group.throughput(Throughput::Elements(p.flops() as u64));
            group.sample_size(30);
            group.measurement_time(std::time::Duration::from_secs(3));
            group.bench_function(format!("{batch}x{rows}x{k}"), |b| b.iter(|| p.run()));
            group.finish();
        }
    }
}

/// The sizes to measure: `PANEL_SIZES`, or the two.
fn sizes() -> Vec<(usize, usize, usize)> {
    let Ok(list) = std::env::var("PANEL_SIZES") else {
        return vec![(64, 2048, 512), (64, 512, 256)];
    };
    list.split(',')
        .map(|size| {
            let n: Vec<usize> = size
                .split('x')
                .map(|n| n.trim().parse().expect("PANEL_SIZES: batch x rows x k"))
                .collect();
            assert!(n.len() == 3, "PANEL_SIZES: batch x rows x k, not {size}");
            (n[0], n[1], n[2])
        })
        .collect()
}

criterion_group!(benches, bench);
criterion_main!(benches);
