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
    // The products on bf16 and int8 operands (`kernels::bf16`,
    // `kernels::int8`) on every path the host has for them; "elem/s" count
    // two operations per multiply-add, as for float32. The portable paths
    // (scalar) are the kernels' references, not paths products take.
    type Make = fn(&str, usize, usize, usize) -> Result<GemmBench, String>;
    let narrow: [(&str, Vec<&str>, Make); 2] = [
        ("bf16", GemmBench::bf16_paths(), GemmBench::bf16),
        ("int8", GemmBench::int8_paths(), GemmBench::int8),
    ];
    for (kind, paths, make) in narrow {
        for path in paths.into_iter().filter(|&p| p != "portable") {
            for (columns, rows, k) in sizes() {
                let Ok(mut p) = make(path, columns, rows, k) else {
                    continue;
                };
                let mut group = c.benchmark_group(format!("gemm-{kind}/{path}"));
                group.throughput(Throughput::Elements(p.flops() as u64));
                group.sample_size(10);
                group.measurement_time(std::time::Duration::from_secs(3));
                group.bench_function(format!("{columns}x{rows}x{k}"), |b| b.iter(|| p.run()));
                group.finish();
            }
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
