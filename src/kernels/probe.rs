//! Probes of the host's speed: the fused multiply-add peak one core reaches
//! at an ISA's width, and the read loop the memory probe times.

use super::simd;
use super::Isa;

/// The fused multiply-add peak of one core at `isa`'s width, in GFLOP/s:
/// twelve independent chains of vector FMAs for about `seconds` (the
/// ceiling `cellc bench` compares the products with).
pub fn fma_peak_gflops(isa: Isa, seconds: f64) -> f64 {
    assert!(
        isa.available(),
        "fma_peak_gflops: {} is not available",
        isa.name()
    );
    let start = std::time::Instant::now();
    let mut rounds = 0u64;
    let mut sink = 0.0f32;
    let per_call = 100_000usize;
    while start.elapsed().as_secs_f64() < seconds {
        // SAFETY: `isa` is available. (`black_box`: the call is pure, and
        // would be made once for the whole loop.)
        sink += unsafe { fma_chains(isa, std::hint::black_box(per_call)) };
        rounds += 1;
    }
    std::hint::black_box(sink);
    let lanes = if isa == Isa::Scalar {
        1.0
    } else {
        isa.lanes() as f64
    };
    let flops = rounds as f64 * per_call as f64 * 12.0 * lanes * 2.0;
    flops / start.elapsed().as_secs_f64() / 1e9
}

/// # Safety
/// The host has `isa`.
unsafe fn fma_chains(isa: Isa, n: usize) -> f32 {
    match isa {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: as the caller guarantees.
        Isa::Avx512 => unsafe { chains_avx512(n) },
        #[cfg(target_arch = "x86_64")]
        // SAFETY: as the caller guarantees.
        Isa::Avx2 => unsafe { chains_avx2(n) },
        #[cfg(target_arch = "aarch64")]
        // SAFETY: Advanced SIMD is always there on aarch64.
        Isa::Neon => unsafe { simd::fma_chains::<simd::Neon>(n) },
        _ => {
            let mut acc = [0.0f32; 12];
            for _ in 0..n {
                for a in acc.iter_mut() {
                    *a = std::hint::black_box(1.000_000_1f32).mul_add(*a, 0.999_999_9);
                }
            }
            acc.iter().sum()
        }
    }
}

/// # Safety
/// AVX-512F available.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn chains_avx512(n: usize) -> f32 {
    // SAFETY: compiled with AVX-512F.
    unsafe { simd::fma_chains::<simd::Avx512>(n) }
}

/// # Safety
/// AVX2 and FMA available.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn chains_avx2(n: usize) -> f32 {
    // SAFETY: compiled with AVX2 and FMA.
    unsafe { simd::fma_chains::<simd::Avx2>(n) }
}

/// The sum of `v`'s floats (only whole groups of 32 are read): the memory probe's
/// read loop, eight independent 128-bit sums as the generated kernels load
/// weights, so that it runs at the memory's pace. (A plain Rust loop reaches
/// only about two thirds of that: LLVM keeps fewer chains in flight.)
pub fn sum_floats(v: &[f32]) -> f32 {
    let n = v.len() / 32 * 32;
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::{__m128, _mm_add_ps, _mm_loadu_ps, _mm_setzero_ps, _mm_storeu_ps};
        let mut out = [0.0f32; 4];
        // SAFETY: SSE is part of x86-64; every load reads floats
        // `i + 4j .. i + 4j + 4` with `i + 32 <= n <= v.len()`.
        unsafe {
            let p = v.as_ptr();
            let mut acc: [__m128; 8] = [_mm_setzero_ps(); 8];
            let mut i = 0;
            while i < n {
                for (j, a) in acc.iter_mut().enumerate() {
                    *a = _mm_add_ps(*a, _mm_loadu_ps(p.add(i + 4 * j)));
                }
                i += 32;
            }
            let mut s = _mm_setzero_ps();
            for a in acc {
                s = _mm_add_ps(s, a);
            }
            _mm_storeu_ps(out.as_mut_ptr(), s);
        }
        out.iter().sum()
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let mut acc = [[0.0f32; 4]; 8];
        for c in v[..n].chunks_exact(32) {
            for (j, a) in acc.iter_mut().enumerate() {
                for (l, x) in a.iter_mut().enumerate() {
                    *x += c[4 * j + l];
                }
            }
        }
        acc.iter().flatten().sum()
    }
}
