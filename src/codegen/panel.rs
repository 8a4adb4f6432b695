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
//! with fused multiply-adds, starting from `dst`'s values (the bias, or the
//! terms summed before), and stores the tile back. `k` runs in blocks
//! of [`KC`] columns, each swept by every group of batch rows while its
//! weights are in L1; a tile's chains continue from block to block.
//!
//! Kernels: AVX-512F (12 batch rows by 32 weight rows: 24 accumulators),
//! AVX2 + FMA (6 by 16), and portable scalar code; [`Isa::detect`] picks the
//! widest the host has. Every kernel computes each result with one chain of
//! fused multiply-adds in `k` order, starting from `dst`'s value: the same
//! operations whatever the tile shape, so the result of an
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

    /// Whether it has kernels for element-wise regions (`codegen::wide`);
    /// with [`Isa::Scalar`], regions run the generated 128-bit code.
    pub fn is_wide(self) -> bool {
        self != Isa::Scalar
    }

    /// Floats per vector of its kernels (the generated code's 4 for
    /// [`Isa::Scalar`], whose regions it runs).
    pub fn lanes(self) -> usize {
        match self {
            Isa::Scalar => 4,
            Isa::Avx2 => 8,
            Isa::Avx512 => 16,
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

/// `dst[b * dst_stride + r] += sum_c W[r][c] * x[b * x_stride + c]` (one
/// chain of fused multiply-adds from `dst`'s value, in `c` order) for weight
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
    let mr = if isa == Isa::Avx512 { MR_AVX512 } else { MR };
    let mut p = 0;
    while p * PANEL < m {
        // Two panels at once where the kernel takes them.
        let two = isa == Isa::Avx512 && (p + 2) * PANEL <= m.div_ceil(PANEL) * PANEL;
        let width = if two { 2 * PANEL } else { PANEL };
        let rows = (m - p * PANEL).min(width);
        let w = panels.wrapping_add(p * PANEL * k);
        // `k` in blocks whose weights stay in L1 while every group of batch
        // rows sweeps them. A tile's accumulators start from `dst` (the
        // bias, or the terms before) and go back to it after each block, so
        // the chains continue from block to block as in one sweep.
        let mut k0 = 0;
        while k0 < k {
            let kc = (k - k0).min(KC);
            let mut b = 0;
            while b < batch {
                let nb = (batch - b).min(mr);
                let tile = Tile {
                    ptr: dst.wrapping_add(b * dst_stride + p * PANEL),
                    stride: dst_stride,
                    rows,
                };
                // SAFETY: as the caller guarantees: the panels `p..p + width
                // / PANEL` exist (`width` rows from row `16p`, padded), with
                // columns `k0..k0 + kc < k` from `k0 * PANEL` floats in; rows
                // `b..b + nb` of `x` exist, columns `k0..k0 + kc`; the tile's
                // rows `b..b + nb` of `dst`, columns `16p..16p + rows <= m`.
                unsafe {
                    tile_kernel(
                        isa,
                        w.wrapping_add(k0 * PANEL),
                        k,
                        kc,
                        two,
                        x.wrapping_add(b * x_stride + k0),
                        x_stride,
                        nb,
                        tile,
                    )
                };
                b += nb;
            }
            k0 += kc;
        }
        p += width / PANEL;
    }
}

/// The part of `dst` one micro-kernel accumulates into: batch rows
/// `stride` floats apart, of which the first `rows` floats (at most the
/// kernel's one or two panels) are read and written.
#[derive(Clone, Copy)]
struct Tile {
    ptr: *mut f32,
    stride: usize,
    rows: usize,
}

/// Columns of `k` per block: 32 weight rows of 256 columns are 32 KiB, which
/// an L1 data cache of 48 KiB holds beside the batch rows' 6 KiB.
const KC: usize = 256;

/// Batch rows per tile.
const MR: usize = 6;

/// Batch rows per tile of the AVX-512 kernel: 12 rows by 32 weight rows are
/// 24 of its 32 registers, two weight loads and 12 broadcasts per 24 FMAs.
/// Against 6 rows (12 accumulators), alternating in one process (`ProductBench`,
/// 25 rounds, medians): 5–16 % faster at every size tried (64 x 2048 x 512,
/// 64 x 512 x 256, 64 x 1024 x 256, 64 x 32 x 512, 64 x 128 x 1024).
const MR_AVX512: usize = 12;

/// One tile: `tile[i][r] += sum_{c < kc} w[c][r] x[i][c]` for `i < nb`, `r`
/// below `tile.rows` (at most 16, or 32 when `two`), each sum one chain of
/// fused multiply-adds continuing from the tile's value, in `c` order.
///
/// # Safety
/// `w` holds `kc` columns of 16 weights (and, when `two`, the next panel's
/// `kc` columns at `16 k` floats further); `x` holds `nb` rows (at most the
/// kernel's: [`MR_AVX512`] for AVX-512, [`MR`] for the others) of
/// `x_stride` floats of which `kc` are read; the tile holds `nb` rows of
/// which the first `tile.rows` floats are read and written, and nothing else
/// touches them meanwhile; the host has `isa`.
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
    tile: Tile,
) {
    let w1 = w.wrapping_add(PANEL * k);
    match isa {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: as the caller guarantees (AVX-512F is available).
        Isa::Avx512 => unsafe {
            x86::tile_avx512::<MR_AVX512>(w, w1, kc, two, x, x_stride, nb, tile)
        },
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
    tile: Tile,
) {
    for i in 0..nb {
        for (q, &w) in panels.iter().enumerate() {
            for lane in 0..PANEL.min(tile.rows.saturating_sub(q * PANEL)) {
                let d = tile.ptr.wrapping_add(i * tile.stride + q * PANEL + lane);
                // SAFETY: row `i < nb`, column `q * 16 + lane < rows` of the
                // tile, as the caller guarantees.
                let mut acc = unsafe { *d };
                for c in 0..kc {
                    // SAFETY: column `c < kc` of the panel, row `i` of `x`, in
                    // bounds as the caller guarantees.
                    let (wv, xv) = unsafe { (*w.add(c * PANEL + lane), *x.add(i * x_stride + c)) };
                    acc = wv.mul_add(xv, acc);
                }
                // SAFETY: as above.
                unsafe { *d = acc };
            }
        }
    }
}

/// The first `n` of 8 lanes, as AVX's `maskload`/`maskstore` take them (also
/// the wide regions' tails).
#[cfg(target_arch = "x86_64")]
pub(crate) use x86::lanes8;

#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::{Tile, MR, PANEL};
    use std::arch::x86_64::*;

    /// The first `n` of 16 lanes (all of them from 16 on).
    #[inline(always)]
    fn lanes16(n: usize) -> __mmask16 {
        if n >= 16 {
            0xffff
        } else {
            ((1u32 << n) - 1) as __mmask16
        }
    }

    /// All-ones words then zeros: a window of 8 is the mask of 0..=8 lanes.
    static WINDOW: [i32; 16] = [-1, -1, -1, -1, -1, -1, -1, -1, 0, 0, 0, 0, 0, 0, 0, 0];

    /// The first `n` of 8 lanes (all of them from 8 on), for `maskload`.
    ///
    /// # Safety
    /// AVX available.
    #[inline(always)]
    pub(crate) unsafe fn lanes8(n: usize) -> __m256i {
        // SAFETY: `8 - min(n, 8)` is in 0..=8: the 8 words read are inside
        // the table; AVX as the caller guarantees.
        unsafe { _mm256_loadu_si256(WINDOW.as_ptr().add(8 - n.min(8)).cast()) }
    }

    /// # Safety
    /// As `tile_kernel`; AVX-512F available.
    #[target_feature(enable = "avx512f")]
    #[allow(clippy::too_many_arguments)]
    pub(super) unsafe fn tile_avx512<const R: usize>(
        w: *const f32,
        w1: *const f32,
        k: usize,
        two: bool,
        x: *const f32,
        x_stride: usize,
        nb: usize,
        tile: Tile,
    ) {
        // SAFETY: loads of `w` stay within the panels, of `x` within rows
        // `< nb`, as the caller guarantees; the tile's loads and stores are
        // masked to its `rows` columns.
        unsafe {
            let m0 = lanes16(tile.rows);
            let m1 = lanes16(tile.rows.saturating_sub(PANEL));
            let mut a0 = [_mm512_setzero_ps(); R];
            let mut a1 = [_mm512_setzero_ps(); R];
            for i in 0..nb {
                let d = tile.ptr.add(i * tile.stride);
                a0[i] = _mm512_maskz_loadu_ps(m0, d);
                a1[i] = _mm512_maskz_loadu_ps(m1, d.add(PANEL));
            }
            if two && nb == R {
                for c in 0..k {
                    let v0 = _mm512_loadu_ps(w.add(c * PANEL));
                    let v1 = _mm512_loadu_ps(w1.add(c * PANEL));
                    for i in 0..R {
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
                let d = tile.ptr.add(i * tile.stride);
                _mm512_mask_storeu_ps(d, m0, a0[i]);
                _mm512_mask_storeu_ps(d.add(PANEL), m1, a1[i]);
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
        tile: Tile,
    ) {
        // SAFETY: as in `tile_avx512`.
        unsafe {
            let m0 = lanes8(tile.rows);
            let m1 = lanes8(tile.rows.saturating_sub(8));
            let mut a0 = [_mm256_setzero_ps(); MR];
            let mut a1 = [_mm256_setzero_ps(); MR];
            for i in 0..nb {
                let d = tile.ptr.add(i * tile.stride);
                a0[i] = _mm256_maskload_ps(d, m0);
                a1[i] = _mm256_maskload_ps(d.add(8), m1);
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
                let d = tile.ptr.add(i * tile.stride);
                _mm256_maskstore_ps(d, m0, a0[i]);
                _mm256_maskstore_ps(d.add(8), m1, a1[i]);
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
    /// multiple of 16 or 32, batches around the tiles' 6 and 12 rows, k of 0
    /// and 1), and
    /// every kernel agrees with the scalar one to the bit.
    #[test]
    #[allow(clippy::print_stderr)] // says which kernels the host let it test
    fn kernels_match_the_reference_and_each_other() {
        let mut rng = crate::gen::Rng(7);
        let isas: Vec<Isa> = Isa::ALL.into_iter().filter(|i| i.available()).collect();
        for m in [1, 15, 16, 17, 31, 32, 33, 64, 100] {
            for k in [0, 1, 3, 16, 37] {
                for batch in [1, 3, 5, 6, 7, 11, 12, 13, 25, 65] {
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
