//! Matrix products over weights packed once, at the host's full vector width.
//!
//! The batched products of a step (`Task::Gemm`) compute, for a block of
//! weight rows and every batch row `b`, `dst[b][r] += sum_k W[r][k] x[b][k]`.
//! The `gemm` crate repacked `W` on every call (39 % of an LSTM step at H =
//! 512, batch 64); here `W` is packed once, when the cell is compiled, into
//! *panels* of [`PANEL`] rows: panel `p` holds rows `16p .. 16p + 16`, stored
//! `k`-major (the 16 weights of column `k` side by side), the last panel
//! padded with zero rows. A micro-kernel keeps a tile of `dst` (some batch
//! rows by one or two panels of weight rows) in vector registers, sweeps `k`
//! once, broadcasting `x[b][k]` and multiplying it into the panel's vectors
//! with fused multiply-adds, and adds the tile to `dst`. `k` runs in blocks
//! of [`KC`] columns, each swept by every group of batch rows while its
//! weights are in L1; a tile's chains continue from block to block.
//!
//! Kernels: AVX-512F (6 batch rows by 32 weight rows: 12 accumulators),
//! AVX2 + FMA (6 by 16), and portable scalar code; [`Isa::detect`] picks the
//! widest the host has. Every kernel computes each result with one chain of
//! fused multiply-adds in `k` order, starting from zero, then adds it to
//! `dst`: the same operations whatever the tile shape, so the result of an
//! element does not depend on which batch rows or threads share its tile (but
//! does depend on the kernel: the scalar one rounds like the vector ones only
//! where the target has a fused multiply-add, which `f32::mul_add` gives).

/// Weight rows per panel.
pub const PANEL: usize = 16;

/// Which kernel runs the products.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Isa {
    /// Portable Rust (`f32::mul_add`), on any target.
    Scalar,
    /// x86-64 with AVX2 and FMA: 256-bit vectors.
    Avx2,
    /// x86-64 with AVX-512F: 512-bit vectors.
    Avx512,
}

impl Isa {
    pub const ALL: [Isa; 3] = [Isa::Scalar, Isa::Avx2, Isa::Avx512];

    pub fn name(self) -> &'static str {
        match self {
            Isa::Scalar => "scalar",
            Isa::Avx2 => "avx2",
            Isa::Avx512 => "avx512",
        }
    }

    pub fn from_name(s: &str) -> Option<Isa> {
        Isa::ALL.into_iter().find(|i| i.name() == s)
    }

    /// Whether this host can run the kernel.
    pub fn available(self) -> bool {
        match self {
            Isa::Scalar => true,
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2 => is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma"),
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512 => is_x86_feature_detected!("avx512f"),
            #[cfg(not(target_arch = "x86_64"))]
            Isa::Avx2 | Isa::Avx512 => false,
        }
    }

    /// The widest kernel the host has.
    pub fn detect() -> Isa {
        [Isa::Avx512, Isa::Avx2]
            .into_iter()
            .find(|i| i.available())
            .unwrap_or(Isa::Scalar)
    }
}

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
    let lanes = match isa {
        Isa::Avx512 => 16.0,
        Isa::Avx2 => 8.0,
        Isa::Scalar => 1.0,
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
        Isa::Avx512 => unsafe { x86::chains_avx512(n) },
        #[cfg(target_arch = "x86_64")]
        // SAFETY: as the caller guarantees.
        Isa::Avx2 => unsafe { x86::chains_avx2(n) },
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

/// Floats the panels of an `[m, k]` matrix take.
pub fn panels_len(m: usize, k: usize) -> Option<usize> {
    m.div_ceil(PANEL).checked_mul(PANEL)?.checked_mul(k)
}

/// Packs the row-major `[m, k]` matrix `w` into panels (`out` holds
/// [`panels_len`] floats).
pub fn pack(w: &[f32], m: usize, k: usize, out: &mut [f32]) {
    assert_eq!(w.len(), m * k, "panel::pack: matrix of the wrong size");
    assert_eq!(
        Some(out.len()),
        panels_len(m, k),
        "panel::pack: output of the wrong size"
    );
    out.fill(0.0);
    for r in 0..m {
        let (p, lane) = (r / PANEL, r % PANEL);
        for c in 0..k {
            out[(p * k + c) * PANEL + lane] = w[r * k + c];
        }
    }
}

/// `dst[b * dst_stride + r] += sum_c W[r][c] * x[b * x_stride + c]` for weight
/// rows `r < m` and batch rows `b < batch`, `W` packed by [`pack`]. Checks
/// every bound, and that `isa` is available.
#[allow(clippy::too_many_arguments)]
pub fn product(
    isa: Isa,
    panels: &[f32],
    m: usize,
    k: usize,
    x: &[f32],
    x_stride: usize,
    batch: usize,
    dst: &mut [f32],
    dst_stride: usize,
) {
    assert!(
        isa.available(),
        "panel::product: {} is not available",
        isa.name()
    );
    if m == 0 || batch == 0 {
        return;
    }
    let last = |rows: usize, stride: usize, len: usize| {
        (rows - 1)
            .checked_mul(stride)
            .and_then(|a| a.checked_add(len))
    };
    assert!(
        panels_len(m, k).is_some_and(|n| n <= panels.len()),
        "panel::product: panels too short"
    );
    assert!(
        k == 0 || last(batch, x_stride, k).is_some_and(|n| n <= x.len()),
        "panel::product: x too short"
    );
    assert!(
        last(batch, dst_stride, m).is_some_and(|n| n <= dst.len()),
        "panel::product: dst too short"
    );
    // SAFETY: the asserts above bound every access: panel floats below
    // `panels_len(m, k)`, `x[b * x_stride + c]` for `c < k`, and
    // `dst[b * dst_stride + r]` for `r < m`, `b < batch`; `isa` is available.
    unsafe {
        product_raw(
            isa,
            panels.as_ptr(),
            m,
            k,
            x.as_ptr(),
            x_stride,
            batch,
            dst.as_mut_ptr(),
            dst_stride,
        )
    }
}

/// As [`product`], unchecked.
///
/// # Safety
/// `panels` must hold `panels_len(m, k)` floats; `x`, `batch` rows of
/// `x_stride` floats of which the first `k` are read; `dst`, `batch` rows of
/// `dst_stride` floats of which the first `m` are read and written, not
/// overlapping the others; the host must have `isa`.
#[allow(clippy::too_many_arguments)]
pub unsafe fn product_raw(
    isa: Isa,
    panels: *const f32,
    m: usize,
    k: usize,
    x: *const f32,
    x_stride: usize,
    batch: usize,
    dst: *mut f32,
    dst_stride: usize,
) {
    // One accumulator tile per group of batch rows, kept across the blocks
    // of `k`.
    let mut tiles = vec![[[0.0f32; 2 * PANEL]; MR]; batch.div_ceil(MR)];
    let mut p = 0;
    while p * PANEL < m {
        // Two panels at once where the kernel takes them.
        let two = isa == Isa::Avx512 && (p + 2) * PANEL <= m.div_ceil(PANEL) * PANEL;
        let width = if two { 2 * PANEL } else { PANEL };
        let rows = (m - p * PANEL).min(width);
        let w = panels.wrapping_add(p * PANEL * k);
        tiles.iter_mut().for_each(|t| *t = [[0.0; 2 * PANEL]; MR]);
        // `k` in blocks whose weights stay in L1 while every group of batch
        // rows sweeps them; each tile's chains continue from one block to
        // the next, so the sums are the same as in one sweep.
        let mut k0 = 0;
        while k0 < k {
            let kc = (k - k0).min(KC);
            for (t, tile) in tiles.iter_mut().enumerate() {
                let b = t * MR;
                let nb = (batch - b).min(MR);
                let xb = x.wrapping_add(b * x_stride + k0);
                // SAFETY: as the caller guarantees: the panels `p..p + width
                // / PANEL` exist (`width` rows from row `16p`, padded), with
                // columns `k0..k0 + kc < k` from `k0 * PANEL` floats in; rows
                // `b..b + nb` of `x` exist, columns `k0..k0 + kc`; the tile is
                // local.
                unsafe {
                    tile_kernel(
                        isa,
                        w.wrapping_add(k0 * PANEL),
                        k,
                        kc,
                        two,
                        xb,
                        x_stride,
                        nb,
                        tile,
                    )
                };
            }
            k0 += kc;
        }
        for (t, tile) in tiles.iter().enumerate() {
            let b = t * MR;
            for (i, row) in tile.iter().enumerate().take((batch - b).min(MR)) {
                let d = dst.wrapping_add((b + i) * dst_stride + p * PANEL);
                for (r, v) in row.iter().enumerate().take(rows) {
                    // SAFETY: row `b + i < batch`, column `16p + r < m`.
                    unsafe { *d.add(r) += *v };
                }
            }
        }
        p += width / PANEL;
    }
}

/// Columns of `k` per block: 32 weight rows of 256 columns are 32 KiB, which
/// an L1 data cache of 48 KiB holds beside the batch rows' 6 KiB.
const KC: usize = 256;

/// Batch rows per tile.
const MR: usize = 6;

/// One tile: `tile[i][r] += sum_{c < kc} w[c][r] x[i][c]` for `i < nb`, `r`
/// below 16 (or 32 when `two`), each sum one chain of fused multiply-adds
/// continuing from the tile's value, in `c` order.
///
/// # Safety
/// `w` holds `kc` columns of 16 weights (and, when `two`, the next panel's
/// `kc` columns at `16 k` floats further); `x` holds `nb <= MR` rows of
/// `x_stride` floats of which `kc` are read; the host has `isa`.
#[allow(clippy::too_many_arguments)]
unsafe fn tile_kernel(
    isa: Isa,
    w: *const f32,
    k: usize,
    kc: usize,
    two: bool,
    x: *const f32,
    x_stride: usize,
    nb: usize,
    tile: &mut [[f32; 2 * PANEL]; MR],
) {
    let w1 = w.wrapping_add(PANEL * k);
    match isa {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: as the caller guarantees (AVX-512F is available).
        Isa::Avx512 => unsafe { x86::tile_avx512(w, w1, kc, two, x, x_stride, nb, tile) },
        #[cfg(target_arch = "x86_64")]
        // SAFETY: as the caller guarantees (AVX2 and FMA are available).
        Isa::Avx2 => unsafe { x86::tile_avx2(w, kc, x, x_stride, nb, tile) },
        // SAFETY: as the caller guarantees.
        _ => unsafe {
            let panels: &[*const f32] = if two { &[w, w1] } else { &[w] };
            tile_scalar(panels, kc, x, x_stride, nb, tile)
        },
    }
}

/// # Safety
/// As [`tile_kernel`], the panels' first columns at `panels`.
unsafe fn tile_scalar(
    panels: &[*const f32],
    kc: usize,
    x: *const f32,
    x_stride: usize,
    nb: usize,
    tile: &mut [[f32; 2 * PANEL]; MR],
) {
    for (i, t) in tile.iter_mut().enumerate().take(nb) {
        for (q, &w) in panels.iter().enumerate() {
            for lane in 0..PANEL {
                let mut acc = t[q * PANEL + lane];
                for c in 0..kc {
                    // SAFETY: column `c < kc` of the panel, row `i` of `x`, in
                    // bounds as the caller guarantees.
                    let (wv, xv) = unsafe { (*w.add(c * PANEL + lane), *x.add(i * x_stride + c)) };
                    acc = wv.mul_add(xv, acc);
                }
                t[q * PANEL + lane] = acc;
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::{MR, PANEL};
    use std::arch::x86_64::*;

    /// # Safety
    /// As `tile_kernel`; AVX-512F available.
    #[target_feature(enable = "avx512f")]
    #[allow(clippy::too_many_arguments)]
    pub(super) unsafe fn tile_avx512(
        w: *const f32,
        w1: *const f32,
        k: usize,
        two: bool,
        x: *const f32,
        x_stride: usize,
        nb: usize,
        tile: &mut [[f32; 2 * PANEL]; MR],
    ) {
        // SAFETY: loads of `w` stay within the panels, of `x` within rows
        // `< nb`, as the caller guarantees; stores go to `tile`.
        unsafe {
            let mut a0 = [_mm512_setzero_ps(); MR];
            let mut a1 = [_mm512_setzero_ps(); MR];
            for i in 0..nb {
                a0[i] = _mm512_loadu_ps(tile[i].as_ptr());
                a1[i] = _mm512_loadu_ps(tile[i].as_ptr().add(PANEL));
            }
            if two && nb == MR {
                for c in 0..k {
                    let v0 = _mm512_loadu_ps(w.add(c * PANEL));
                    let v1 = _mm512_loadu_ps(w1.add(c * PANEL));
                    for i in 0..MR {
                        let xb = _mm512_set1_ps(*x.add(i * x_stride + c));
                        a0[i] = _mm512_fmadd_ps(v0, xb, a0[i]);
                        a1[i] = _mm512_fmadd_ps(v1, xb, a1[i]);
                    }
                }
            } else if two {
                for c in 0..k {
                    let v0 = _mm512_loadu_ps(w.add(c * PANEL));
                    let v1 = _mm512_loadu_ps(w1.add(c * PANEL));
                    for i in 0..nb {
                        let xb = _mm512_set1_ps(*x.add(i * x_stride + c));
                        a0[i] = _mm512_fmadd_ps(v0, xb, a0[i]);
                        a1[i] = _mm512_fmadd_ps(v1, xb, a1[i]);
                    }
                }
            } else {
                // One panel: the second half of the tile is not read.
                for c in 0..k {
                    let v0 = _mm512_loadu_ps(w.add(c * PANEL));
                    for (i, a) in a0.iter_mut().enumerate().take(nb) {
                        let xb = _mm512_set1_ps(*x.add(i * x_stride + c));
                        *a = _mm512_fmadd_ps(v0, xb, *a);
                    }
                }
            }
            for i in 0..nb {
                _mm512_storeu_ps(tile[i].as_mut_ptr(), a0[i]);
                _mm512_storeu_ps(tile[i].as_mut_ptr().add(PANEL), a1[i]);
            }
        }
    }

    /// Twelve chains of `n` dependent FMAs each, 16 lanes wide.
    ///
    /// # Safety
    /// AVX-512F available.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn chains_avx512(n: usize) -> f32 {
        let mut acc = [_mm512_setzero_ps(); 12];
        let a = _mm512_set1_ps(1.000_000_1);
        let b = _mm512_set1_ps(0.999_999_9);
        for _ in 0..n {
            for x in acc.iter_mut() {
                *x = _mm512_fmadd_ps(*x, a, b);
            }
        }
        let mut s = _mm512_setzero_ps();
        for x in acc {
            s = _mm512_add_ps(s, x);
        }
        _mm512_reduce_add_ps(s)
    }

    /// Twelve chains of `n` dependent FMAs each, 8 lanes wide.
    ///
    /// # Safety
    /// AVX2 and FMA available.
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn chains_avx2(n: usize) -> f32 {
        let mut acc = [_mm256_setzero_ps(); 12];
        let a = _mm256_set1_ps(1.000_000_1);
        let b = _mm256_set1_ps(0.999_999_9);
        for _ in 0..n {
            for x in acc.iter_mut() {
                *x = _mm256_fmadd_ps(*x, a, b);
            }
        }
        let mut s = _mm256_setzero_ps();
        for x in acc {
            s = _mm256_add_ps(s, x);
        }
        let mut out = [0.0f32; 8];
        // SAFETY: `out` holds 8 floats.
        unsafe { _mm256_storeu_ps(out.as_mut_ptr(), s) };
        out.iter().sum()
    }

    /// # Safety
    /// As `tile_kernel` (one panel); AVX2 and FMA available.
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn tile_avx2(
        w: *const f32,
        k: usize,
        x: *const f32,
        x_stride: usize,
        nb: usize,
        tile: &mut [[f32; 2 * PANEL]; MR],
    ) {
        // SAFETY: as in `tile_avx512`.
        unsafe {
            let mut a0 = [_mm256_setzero_ps(); MR];
            let mut a1 = [_mm256_setzero_ps(); MR];
            for i in 0..nb {
                a0[i] = _mm256_loadu_ps(tile[i].as_ptr());
                a1[i] = _mm256_loadu_ps(tile[i].as_ptr().add(8));
            }
            if nb == MR {
                for c in 0..k {
                    let v0 = _mm256_loadu_ps(w.add(c * PANEL));
                    let v1 = _mm256_loadu_ps(w.add(c * PANEL + 8));
                    for i in 0..MR {
                        let xb = _mm256_set1_ps(*x.add(i * x_stride + c));
                        a0[i] = _mm256_fmadd_ps(v0, xb, a0[i]);
                        a1[i] = _mm256_fmadd_ps(v1, xb, a1[i]);
                    }
                }
            } else {
                for c in 0..k {
                    let v0 = _mm256_loadu_ps(w.add(c * PANEL));
                    let v1 = _mm256_loadu_ps(w.add(c * PANEL + 8));
                    for i in 0..nb {
                        let xb = _mm256_set1_ps(*x.add(i * x_stride + c));
                        a0[i] = _mm256_fmadd_ps(v0, xb, a0[i]);
                        a1[i] = _mm256_fmadd_ps(v1, xb, a1[i]);
                    }
                }
            }
            for i in 0..nb {
                _mm256_storeu_ps(tile[i].as_mut_ptr(), a0[i]);
                _mm256_storeu_ps(tile[i].as_mut_ptr().add(8), a1[i]);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reference(w: &[f32], m: usize, k: usize, x: &[f32], xs: usize, batch: usize) -> Vec<f64> {
        let mut out = vec![0.0; batch * m];
        for b in 0..batch {
            for r in 0..m {
                out[b * m + r] = (0..k)
                    .map(|c| w[r * k + c] as f64 * x[b * xs + c] as f64)
                    .sum();
            }
        }
        out
    }

    /// Every available kernel against f64 on edge shapes (rows not a
    /// multiple of 16 or 32, batches around the tile's 6, k of 0 and 1), and
    /// every kernel agrees with the scalar one to the bit.
    #[test]
    #[allow(clippy::print_stderr)] // says which kernels the host let it test
    fn kernels_match_the_reference_and_each_other() {
        let mut rng = crate::gen::Rng(7);
        let isas: Vec<Isa> = Isa::ALL.into_iter().filter(|i| i.available()).collect();
        for m in [1, 15, 16, 17, 31, 32, 33, 64, 100] {
            for k in [0, 1, 3, 16, 37] {
                for batch in [1, 3, 5, 6, 7, 13, 65] {
                    let w: Vec<f32> = rng.vec(m * k, 1.0).iter().map(|&v| v as f32).collect();
                    let xs = k + 3;
                    let x: Vec<f32> = rng.vec(batch * xs, 1.0).iter().map(|&v| v as f32).collect();
                    let mut panels = vec![0.0; panels_len(m, k).unwrap()];
                    pack(&w, m, k, &mut panels);
                    let want = reference(&w, m, k, &x, xs, batch);
                    let ds = m + 5;
                    let mut results = Vec::new();
                    for &isa in &isas {
                        let mut dst = vec![0.5f32; batch * ds];
                        product(isa, &panels, m, k, &x, xs, batch, &mut dst, ds);
                        for b in 0..batch {
                            for r in 0..m {
                                let got = dst[b * ds + r] as f64 - 0.5;
                                let e = (got - want[b * m + r]).abs();
                                assert!(
                                    e < 1e-5 * (k as f64 + 1.0),
                                    "{isa:?} m={m} k={k} b={batch}: {e}"
                                );
                            }
                            // Past `m`: untouched.
                            assert!(dst[b * ds + m..(b + 1) * ds].iter().all(|&v| v == 0.5));
                        }
                        results.push(dst);
                    }
                    for (i, r) in results.iter().enumerate().skip(1) {
                        assert_eq!(r, &results[0], "{:?} differs from scalar", isas[i]);
                    }
                }
            }
        }
        eprintln!(
            "panel kernels tested: {isas:?}; not available here: {:?}",
            Isa::ALL
                .into_iter()
                .filter(|i| !i.available())
                .collect::<Vec<_>>()
        );
    }

    #[test]
    #[should_panic(expected = "dst too short")]
    fn short_buffers_are_refused() {
        let panels = vec![0.0; panels_len(3, 2).unwrap()];
        let mut dst = vec![0.0; 5];
        product(Isa::Scalar, &panels, 3, 2, &[1.0; 4], 2, 2, &mut dst, 3);
    }
}
