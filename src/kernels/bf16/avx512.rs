//! AVX512-BF16: `vdpbf16ps` tiles of 32 rows by [`COLUMNS`] columns (24
//! accumulators; each pair of `k` a load of both units' pairs and one
//! broadcast per column), and the rounding of float32 rows to bf16 with
//! AVX-512F.

use std::arch::x86_64::*;

use super::{Block, UNIT};
use crate::kernels::gemm::{prefetch_next, From};

/// Columns per tile.
pub(super) const COLUMNS: usize = 12;

/// `src` rounded to bf16, as [`crate::quant::bf16_bits`] rounds (to
/// nearest, ties to even; a NaN stays a quiet NaN).
///
/// # Safety
/// The host has AVX-512F.
#[target_feature(enable = "avx512f")]
pub(super) unsafe fn round_row(src: &[f32], dst: &mut [u16]) {
    let n = src.len().min(dst.len());
    let mut l = 0;
    while l + 16 <= n {
        // SAFETY: 16 values from `l` in both.
        unsafe {
            let out = round16(_mm512_loadu_ps(src.as_ptr().add(l)));
            _mm256_storeu_si256(dst.as_mut_ptr().add(l).cast(), _mm512_cvtepi32_epi16(out));
        }
        l += 16;
    }
    for (d, &s) in dst[l..n].iter_mut().zip(&src[l..n]) {
        *d = crate::quant::bf16_bits(s);
    }
}

/// The bf16 nearest to each of 16 floats ([`crate::quant::bf16_bits`]), in
/// the low half of each lane.
#[target_feature(enable = "avx512f")]
fn round16(v: __m512) -> __m512i {
    let bits = _mm512_castps_si512(v);
    let high = _mm512_srli_epi32::<16>(bits);
    let lsb = _mm512_and_si512(high, _mm512_set1_epi32(1));
    let round = _mm512_add_epi32(lsb, _mm512_set1_epi32(0x7fff));
    let rounded = _mm512_srli_epi32::<16>(_mm512_add_epi32(bits, round));
    let nan = _mm512_cmp_ps_mask::<_CMP_UNORD_Q>(v, v);
    let quiet = _mm512_or_si512(high, _mm512_set1_epi32(0x40));
    _mm512_mask_blend_epi32(nan, rounded, quiet)
}

/// `src` rounded to bf16 and widened back ([`crate::quant::round_bf16`]).
///
/// # Safety
/// The host has AVX-512F.
#[target_feature(enable = "avx512f")]
pub(super) unsafe fn round_values(src: &[f32], dst: &mut [f32]) {
    let n = src.len().min(dst.len());
    let mut l = 0;
    while l + 16 <= n {
        // SAFETY: 16 values from `l` in both.
        unsafe {
            let b = round16(_mm512_loadu_ps(src.as_ptr().add(l)));
            let v = _mm512_castsi512_ps(_mm512_slli_epi32::<16>(b));
            _mm512_storeu_ps(dst.as_mut_ptr().add(l), v);
        }
        l += 16;
    }
    for (d, &s) in dst[l..n].iter_mut().zip(&src[l..n]) {
        *d = crate::quant::round_bf16(s);
    }
}

/// The block's rows in 32s by its columns in tiles of [`COLUMNS`].
///
/// # Safety
/// As [`crate::kernels::gemm::Blocked::run_block`], for the block's job; the host has
/// AVX-512F and AVX512-BF16.
#[target_feature(enable = "avx512f,avx512bf16")]
pub(super) unsafe fn block(b: &Block) {
    for i in (b.i0..b.i1).step_by(2 * UNIT) {
        let mut j = b.j0;
        while j < b.j1 {
            let width = COLUMNS.min(b.j1 - j);
            let p = b.product;
            let block = (b.i1, b.j0, b.j1);
            let at = (i, j, width);
            prefetch_next(p.c, p.ldc, p.from, at, block, (2 * UNIT, COLUMNS));
            // SAFETY: as the caller guarantees; the scratch holds
            // `COLUMNS` columns from `j` (its slack).
            unsafe { tile(b, i, j, width) };
            j += width;
        }
    }
}

/// Rows `i .. i + 32` (those before `i1`) by columns `j .. j + width`.
///
/// # Safety
/// As [`block`].
#[target_feature(enable = "avx512f,avx512bf16")]
unsafe fn tile(b: &Block, i: usize, j: usize, width: usize) {
    let valid = (b.i1 - i).min(2 * UNIT);
    let mask = |n: usize| -> __mmask16 { ((1u32 << n.min(UNIT)) - 1) as __mmask16 };
    let masks = [mask(valid), mask(valid.saturating_sub(UNIT))];
    let (w0, w1) = (b.unit(i), b.unit(i + UNIT));
    let mut acc = [[_mm512_setzero_ps(); 2]; COLUMNS];
    for (jj, a) in acc.iter_mut().enumerate().take(width) {
        for (h, v) in a.iter_mut().enumerate() {
            let row = i + h * UNIT;
            // SAFETY: the masked lanes are the job's rows (and bias rows).
            *v = unsafe {
                match b.product.from {
                    From::Zero => _mm512_setzero_ps(),
                    From::Dst => _mm512_maskz_loadu_ps(masks[h], b.c(row, j + jj)),
                    From::Row(r) => _mm512_maskz_loadu_ps(masks[h], r.add(row)),
                    From::Matrix { ptr, ld } => {
                        _mm512_maskz_loadu_ps(masks[h], ptr.add(row + (j + jj) * ld))
                    }
                }
            };
        }
    }
    let x = b.x.wrapping_add((j - b.j0) * b.kp);
    for p in 0..b.kp / 2 {
        // SAFETY: both units hold `kp / 2` pairs of 16 rows; the scratch
        // holds `COLUMNS` rows of `kp` values from `x`.
        unsafe {
            let a0: __m512bh = std::mem::transmute(_mm512_loadu_ps(w0.add(p * 32).cast()));
            let a1: __m512bh = std::mem::transmute(_mm512_loadu_ps(w1.add(p * 32).cast()));
            for (jj, a) in acc.iter_mut().enumerate() {
                let pair = x.add(jj * b.kp + 2 * p).cast::<i32>().read_unaligned();
                let v: __m512bh = std::mem::transmute(_mm512_set1_epi32(pair));
                a[0] = _mm512_dpbf16_ps(a[0], a0, v);
                a[1] = _mm512_dpbf16_ps(a[1], a1, v);
            }
        }
    }
    for (jj, a) in acc.iter().enumerate().take(width) {
        for (h, &v) in a.iter().enumerate() {
            // SAFETY: the masked lanes are the job's elements.
            unsafe { _mm512_mask_storeu_ps(b.c(i + h * UNIT, j + jj), masks[h], v) };
        }
    }
}
