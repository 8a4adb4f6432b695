//! The blocked product of many rows (the hoisted input projection of a
//! sequence, `kernels::gemm`) alone, one thread, against the FMA peak:
//! `cargo bench --bench gemm`. The sizes: 6400 columns (T = 100 steps of
//! batch 64) by the 4H rows and X = H columns of an LSTM at H = 128, 256,
//! 512 and 1024. Criterion's "elem/s" are FLOP/s; the peak of each width,
//! measured in the same run, is printed beside it. `GEMM_SIZES=6400x512x128`
//! (columns x rows x k) measures other sizes. Then the same products on
//! bf16 operands (`kernels::bf16`) on every instruction set for them the
//! host has (AMX, AVX512-BF16), and on int8 operands (`kernels::int8`:
//! AVX512-VNNI, AVX-VNNI).

#![allow(clippy::print_stdout)]

use cellc::bench::GemmBench;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};

fn bench(c: &mut Criterion) {
    for isa in cellc::Isa::ALL.into_iter().filter(|i| i.available()) {
        if isa == cellc::Isa::Scalar {
            continue;
        }
        for (columns, rows, k) in sizes() {
            let Ok(mut p) = GemmBench::new(isa, columns, rows, k) else {
                continue;
            };
            println!(
                "{} FMA peak, one core: {:.1} GFLOP/s",
                isa.name(),
                p.peak_gflops()
            );
            let mut group = c.benchmark_group(format!("gemm/{}", isa.name()));
            group.throughput(Throughput::Elements(p.flops() as u64));
            group.sample_size(10);
            group.measurement_time(std::time::Duration::from_secs(3));
            group.bench_function(format!("{columns}x{rows}x{k}"), |b| b.iter(|| p.run()));
            group.finish();
        }
    }
    // The int8 products (`kernels::int8`), likewise; "elem/s" are the
    // multiply-adds' operations (2 per term), as for float32.
    for path in GemmBench::int8_paths()
        .into_iter()
        .filter(|&p| p != "portable")
    {
        for (columns, rows, k) in sizes() {
            let Ok(mut p) = GemmBench::int8(path, columns, rows, k) else {
                continue;
            };
            let mut group = c.benchmark_group(format!("gemm-int8/{path}"));
            group.throughput(Throughput::Elements(p.flops() as u64));
            group.sample_size(10);
            group.measurement_time(std::time::Duration::from_secs(3));
            group.bench_function(format!("{columns}x{rows}x{k}"), |b| b.iter(|| p.run()));
            group.finish();
        }
    }
    // The portable path (two chains per element, ~1 GFLOP/s) is the
    // kernels' reference, not a path products take.
    for path in GemmBench::bf16_paths()
        .into_iter()
        .filter(|&p| p != "portable")
    {
        for (columns, rows, k) in sizes() {
            let Ok(mut p) = GemmBench::bf16(path, columns, rows, k) else {
                continue;
            };
            let mut group = c.benchmark_group(format!("gemm-bf16/{path}"));
            group.throughput(Throughput::Elements(p.flops() as u64));
            group.sample_size(10);
            group.measurement_time(std::time::Duration::from_secs(3));
            group.bench_function(format!("{columns}x{rows}x{k}"), |b| b.iter(|| p.run()));
            group.finish();
        }
    }
}

/// The sizes to measure: `GEMM_SIZES`, or the LSTM projections.
fn sizes() -> Vec<(usize, usize, usize)> {
    let Ok(list) = std::env::var("GEMM_SIZES") else {
        return [128, 256, 512, 1024]
            .into_iter()
            .map(|h| (6400, 4 * h, h))
            .collect();
    };
    list.split(',')
        .map(|size| {
            let n: Vec<usize> = size
                .split('x')
                .map(|n| n.trim().parse().expect("GEMM_SIZES: columns x rows x k"))
                .collect();
            assert!(n.len() == 3, "GEMM_SIZES: columns x rows x k, not {size}");
            (n[0], n[1], n[2])
        })
        .collect()
}

criterion_group!(benches, bench);
criterion_main!(benches);
