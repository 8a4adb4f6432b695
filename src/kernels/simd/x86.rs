//! [`Simd`] and [`SimdMath`] for x86-64: AVX-512F (16 lanes) and AVX2 + FMA
//! (8 lanes).

use super::{Simd, SimdMath};
use std::arch::x86_64::*;

/// AVX-512F, 16 lanes.
#[derive(Clone, Copy)]
pub(crate) struct Avx512;

/// AVX2 + FMA, 8 lanes.
#[derive(Clone, Copy)]
pub(crate) struct Avx2;

/// All-ones words then zeros: a window of 8 is the mask of 0..=8 lanes.
static WINDOW: [i32; 16] = [-1, -1, -1, -1, -1, -1, -1, -1, 0, 0, 0, 0, 0, 0, 0, 0];

/// The first `n` of 8 lanes (all of them from 8 on), as AVX's
/// `maskload`/`maskstore` take them.
///
/// # Safety
/// AVX available.
#[inline(always)]
pub(crate) unsafe fn lanes8(n: usize) -> __m256i {
    // SAFETY: `8 - min(n, 8)` is in 0..=8: the 8 words read are inside
    // the table; AVX as the caller guarantees.
    unsafe { _mm256_loadu_si256(WINDOW.as_ptr().add(8 - n.min(8)).cast()) }
}

/// Which of 8 lanes a partial AVX2 vector has: the mask `maskload` and
/// `maskstore` take, and whether it is all of them, so that a whole vector
/// moves by a plain load or store. A masked store is microcoded on AMD
/// before Zen 4: on Zen 3 (one core) the 12 ending each tile of the blocked
/// product (16 rows by 6 columns over 128 of `k`) took 17-19 % of its
/// samples, and plain stores took `benches/gemm` 6400x512x128 from 61-73
/// to 66-86 GFLOP/s (noisy host), the LSTM step at H = 128, batch 64 from
/// 295-310 to 252-260 µs.
#[derive(Clone, Copy)]
pub(crate) struct Tail8 {
    mask: __m256i,
    full: bool,
}

// SAFETY (every block below): the intrinsic needs AVX-512F, which the
// caller's function enables (trait contract); pointer arguments are
// valid for the lanes accessed, as the caller guarantees.
impl Simd for Avx512 {
    const LANES: usize = 16;
    type F = __m512;
    type Tail = __mmask16;

    #[inline(always)]
    unsafe fn tail(n: usize) -> __mmask16 {
        if n >= 16 {
            0xffff
        } else {
            ((1u32 << n) - 1) as __mmask16
        }
    }
    #[inline(always)]
    unsafe fn load(p: *const f32) -> __m512 {
        // SAFETY: see the impl.
        unsafe { _mm512_loadu_ps(p) }
    }
    #[inline(always)]
    unsafe fn load_tail(p: *const f32, t: __mmask16) -> __m512 {
        // SAFETY: see the impl; masked-off lanes are not read.
        unsafe { _mm512_maskz_loadu_ps(t, p) }
    }
    #[inline(always)]
    unsafe fn store(p: *mut f32, v: __m512) {
        // SAFETY: see the impl.
        unsafe { _mm512_storeu_ps(p, v) }
    }
    #[inline(always)]
    unsafe fn store_tail(p: *mut f32, v: __m512, t: __mmask16) {
        // SAFETY: see the impl; masked-off lanes are not written.
        unsafe { _mm512_mask_storeu_ps(p, t, v) }
    }
    #[inline(always)]
    unsafe fn splat(x: f32) -> __m512 {
        // SAFETY: see the impl.
        unsafe { _mm512_set1_ps(x) }
    }
    #[inline(always)]
    unsafe fn add(a: __m512, b: __m512) -> __m512 {
        // SAFETY: see the impl.
        unsafe { _mm512_add_ps(a, b) }
    }
    #[inline(always)]
    unsafe fn mul(a: __m512, b: __m512) -> __m512 {
        // SAFETY: see the impl.
        unsafe { _mm512_mul_ps(a, b) }
    }
    #[inline(always)]
    unsafe fn fma(a: __m512, b: __m512, c: __m512) -> __m512 {
        // SAFETY: see the impl.
        unsafe { _mm512_fmadd_ps(a, b, c) }
    }
    #[inline(always)]
    unsafe fn prefetch_l2(p: *const f32) {
        // SAFETY: a hint; it never faults.
        unsafe { _mm_prefetch::<_MM_HINT_T1>(p.cast()) }
    }
    #[inline(always)]
    unsafe fn widen_bf16_pairs(p: *const u8) -> (__m512, __m512) {
        // SAFETY: see the impl (64 bytes at `p`).
        unsafe {
            let v = _mm512_loadu_si512(p.cast());
            let high = _mm512_set1_epi32(0xffff_0000u32 as i32);
            (
                _mm512_castsi512_ps(_mm512_slli_epi32::<16>(v)),
                _mm512_castsi512_ps(_mm512_and_si512(v, high)),
            )
        }
    }
    #[inline(always)]
    unsafe fn widen_i8(p: *const u8) -> __m512 {
        // SAFETY: see the impl (16 bytes at `p`).
        unsafe { _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128(p.cast()))) }
    }
}

// SAFETY (every block below): as for `Simd`.
impl SimdMath for Avx512 {
    type I = __m512i;
    type C = __mmask16;

    #[inline(always)]
    unsafe fn splat_i(x: i32) -> __m512i {
        // SAFETY: see the impl.
        unsafe { _mm512_set1_epi32(x) }
    }
    #[inline(always)]
    unsafe fn sub(a: __m512, b: __m512) -> __m512 {
        // SAFETY: see the impl.
        unsafe { _mm512_sub_ps(a, b) }
    }
    #[inline(always)]
    unsafe fn div(a: __m512, b: __m512) -> __m512 {
        // SAFETY: see the impl.
        unsafe { _mm512_div_ps(a, b) }
    }
    #[inline(always)]
    unsafe fn sqrt(a: __m512) -> __m512 {
        // SAFETY: see the impl.
        unsafe { _mm512_sqrt_ps(a) }
    }
    #[inline(always)]
    unsafe fn min_lt(a: __m512, b: __m512) -> __m512 {
        // SAFETY: see the impl.
        unsafe { _mm512_min_ps(a, b) }
    }
    #[inline(always)]
    unsafe fn max_gt(a: __m512, b: __m512) -> __m512 {
        // SAFETY: see the impl.
        unsafe { _mm512_max_ps(a, b) }
    }
    #[inline(always)]
    unsafe fn lt(a: __m512, b: __m512) -> __mmask16 {
        // SAFETY: see the impl.
        unsafe { _mm512_cmp_ps_mask::<_CMP_LT_OQ>(a, b) }
    }
    #[inline(always)]
    unsafe fn eq(a: __m512, b: __m512) -> __mmask16 {
        // SAFETY: see the impl.
        unsafe { _mm512_cmp_ps_mask::<_CMP_EQ_OQ>(a, b) }
    }
    #[inline(always)]
    unsafe fn unordered(a: __m512, b: __m512) -> __mmask16 {
        // SAFETY: see the impl.
        unsafe { _mm512_cmp_ps_mask::<_CMP_UNORD_Q>(a, b) }
    }
    #[inline(always)]
    unsafe fn select(c: __mmask16, a: __m512, b: __m512) -> __m512 {
        // SAFETY: see the impl.
        unsafe { _mm512_mask_blend_ps(c, b, a) }
    }
    #[inline(always)]
    unsafe fn select_i(c: __mmask16, a: __m512i, b: __m512i) -> __m512i {
        // SAFETY: see the impl.
        unsafe { _mm512_mask_blend_epi32(c, b, a) }
    }
    #[inline(always)]
    unsafe fn bits(a: __m512) -> __m512i {
        // SAFETY: see the impl.
        unsafe { _mm512_castps_si512(a) }
    }
    #[inline(always)]
    unsafe fn from_bits(a: __m512i) -> __m512 {
        // SAFETY: see the impl.
        unsafe { _mm512_castsi512_ps(a) }
    }
    #[inline(always)]
    unsafe fn and_i(a: __m512i, b: __m512i) -> __m512i {
        // SAFETY: see the impl.
        unsafe { _mm512_and_si512(a, b) }
    }
    #[inline(always)]
    unsafe fn or_i(a: __m512i, b: __m512i) -> __m512i {
        // SAFETY: see the impl.
        unsafe { _mm512_or_si512(a, b) }
    }
    #[inline(always)]
    unsafe fn xor_i(a: __m512i, b: __m512i) -> __m512i {
        // SAFETY: see the impl.
        unsafe { _mm512_xor_si512(a, b) }
    }
    #[inline(always)]
    unsafe fn andnot_i(a: __m512i, b: __m512i) -> __m512i {
        // SAFETY: see the impl.
        unsafe { _mm512_andnot_si512(a, b) }
    }
    #[inline(always)]
    unsafe fn add_i(a: __m512i, b: __m512i) -> __m512i {
        // SAFETY: see the impl.
        unsafe { _mm512_add_epi32(a, b) }
    }
    #[inline(always)]
    unsafe fn sub_i(a: __m512i, b: __m512i) -> __m512i {
        // SAFETY: see the impl.
        unsafe { _mm512_sub_epi32(a, b) }
    }
    #[inline(always)]
    unsafe fn shl23(a: __m512i) -> __m512i {
        // SAFETY: see the impl.
        unsafe { _mm512_slli_epi32::<23>(a) }
    }
    #[inline(always)]
    unsafe fn shr23(a: __m512i) -> __m512i {
        // SAFETY: see the impl.
        unsafe { _mm512_srli_epi32::<23>(a) }
    }
    #[inline(always)]
    unsafe fn sar1(a: __m512i) -> __m512i {
        // SAFETY: see the impl.
        unsafe { _mm512_srai_epi32::<1>(a) }
    }
    #[inline(always)]
    unsafe fn to_float(a: __m512i) -> __m512 {
        // SAFETY: see the impl.
        unsafe { _mm512_cvtepi32_ps(a) }
    }
}

// SAFETY (every block below): the intrinsic needs AVX2 and FMA (or less),
// which the caller's function enables (trait contract); pointer arguments
// are valid for the lanes accessed, as the caller guarantees.
impl Simd for Avx2 {
    const LANES: usize = 8;
    type F = __m256;
    type Tail = Tail8;

    #[inline(always)]
    unsafe fn tail(n: usize) -> Tail8 {
        Tail8 {
            // SAFETY: see the impl (AVX enabled).
            mask: unsafe { lanes8(n) },
            full: n >= 8,
        }
    }
    #[inline(always)]
    unsafe fn load(p: *const f32) -> __m256 {
        // SAFETY: see the impl.
        unsafe { _mm256_loadu_ps(p) }
    }
    #[inline(always)]
    unsafe fn load_tail(p: *const f32, t: Tail8) -> __m256 {
        // SAFETY: see the impl; masked-off lanes are not read (a full tail
        // has none).
        unsafe {
            if t.full {
                _mm256_loadu_ps(p)
            } else {
                _mm256_maskload_ps(p, t.mask)
            }
        }
    }
    #[inline(always)]
    unsafe fn store(p: *mut f32, v: __m256) {
        // SAFETY: see the impl.
        unsafe { _mm256_storeu_ps(p, v) }
    }
    #[inline(always)]
    unsafe fn store_tail(p: *mut f32, v: __m256, t: Tail8) {
        // SAFETY: see the impl; masked-off lanes are not written (a full
        // tail has none).
        unsafe {
            if t.full {
                _mm256_storeu_ps(p, v)
            } else {
                _mm256_maskstore_ps(p, t.mask, v)
            }
        }
    }
    #[inline(always)]
    unsafe fn splat(x: f32) -> __m256 {
        // SAFETY: see the impl.
        unsafe { _mm256_set1_ps(x) }
    }
    #[inline(always)]
    unsafe fn add(a: __m256, b: __m256) -> __m256 {
        // SAFETY: see the impl.
        unsafe { _mm256_add_ps(a, b) }
    }
    #[inline(always)]
    unsafe fn mul(a: __m256, b: __m256) -> __m256 {
        // SAFETY: see the impl.
        unsafe { _mm256_mul_ps(a, b) }
    }
    #[inline(always)]
    unsafe fn fma(a: __m256, b: __m256, c: __m256) -> __m256 {
        // SAFETY: see the impl.
        unsafe { _mm256_fmadd_ps(a, b, c) }
    }
    #[inline(always)]
    unsafe fn prefetch_l2(p: *const f32) {
        // SAFETY: a hint; it never faults.
        unsafe { _mm_prefetch::<_MM_HINT_T1>(p.cast()) }
    }
    #[inline(always)]
    unsafe fn widen_bf16_pairs(p: *const u8) -> (__m256, __m256) {
        // SAFETY: see the impl (32 bytes at `p`).
        unsafe {
            let v = _mm256_loadu_si256(p.cast());
            let high = _mm256_set1_epi32(0xffff_0000u32 as i32);
            (
                _mm256_castsi256_ps(_mm256_slli_epi32::<16>(v)),
                _mm256_castsi256_ps(_mm256_and_si256(v, high)),
            )
        }
    }
    #[inline(always)]
    unsafe fn widen_i8(p: *const u8) -> __m256 {
        // SAFETY: see the impl (8 bytes at `p`).
        unsafe { _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64(p.cast()))) }
    }
}

// SAFETY (every block below): as for `Simd`.
impl SimdMath for Avx2 {
    type I = __m256i;
    type C = __m256;

    #[inline(always)]
    unsafe fn splat_i(x: i32) -> __m256i {
        // SAFETY: see the impl.
        unsafe { _mm256_set1_epi32(x) }
    }
    #[inline(always)]
    unsafe fn sub(a: __m256, b: __m256) -> __m256 {
        // SAFETY: see the impl.
        unsafe { _mm256_sub_ps(a, b) }
    }
    #[inline(always)]
    unsafe fn div(a: __m256, b: __m256) -> __m256 {
        // SAFETY: see the impl.
        unsafe { _mm256_div_ps(a, b) }
    }
    #[inline(always)]
    unsafe fn sqrt(a: __m256) -> __m256 {
        // SAFETY: see the impl.
        unsafe { _mm256_sqrt_ps(a) }
    }
    #[inline(always)]
    unsafe fn min_lt(a: __m256, b: __m256) -> __m256 {
        // SAFETY: see the impl.
        unsafe { _mm256_min_ps(a, b) }
    }
    #[inline(always)]
    unsafe fn max_gt(a: __m256, b: __m256) -> __m256 {
        // SAFETY: see the impl.
        unsafe { _mm256_max_ps(a, b) }
    }
    #[inline(always)]
    unsafe fn lt(a: __m256, b: __m256) -> __m256 {
        // SAFETY: see the impl.
        unsafe { _mm256_cmp_ps::<_CMP_LT_OQ>(a, b) }
    }
    #[inline(always)]
    unsafe fn eq(a: __m256, b: __m256) -> __m256 {
        // SAFETY: see the impl.
        unsafe { _mm256_cmp_ps::<_CMP_EQ_OQ>(a, b) }
    }
    #[inline(always)]
    unsafe fn unordered(a: __m256, b: __m256) -> __m256 {
        // SAFETY: see the impl.
        unsafe { _mm256_cmp_ps::<_CMP_UNORD_Q>(a, b) }
    }
    #[inline(always)]
    unsafe fn select(c: __m256, a: __m256, b: __m256) -> __m256 {
        // SAFETY: see the impl.
        unsafe { _mm256_blendv_ps(b, a, c) }
    }
    #[inline(always)]
    unsafe fn select_i(c: __m256, a: __m256i, b: __m256i) -> __m256i {
        // SAFETY: see the impl.
        unsafe {
            _mm256_castps_si256(_mm256_blendv_ps(
                _mm256_castsi256_ps(b),
                _mm256_castsi256_ps(a),
                c,
            ))
        }
    }
    #[inline(always)]
    unsafe fn bits(a: __m256) -> __m256i {
        // SAFETY: see the impl.
        unsafe { _mm256_castps_si256(a) }
    }
    #[inline(always)]
    unsafe fn from_bits(a: __m256i) -> __m256 {
        // SAFETY: see the impl.
        unsafe { _mm256_castsi256_ps(a) }
    }
    #[inline(always)]
    unsafe fn and_i(a: __m256i, b: __m256i) -> __m256i {
        // SAFETY: see the impl.
        unsafe { _mm256_and_si256(a, b) }
    }
    #[inline(always)]
    unsafe fn or_i(a: __m256i, b: __m256i) -> __m256i {
        // SAFETY: see the impl.
        unsafe { _mm256_or_si256(a, b) }
    }
    #[inline(always)]
    unsafe fn xor_i(a: __m256i, b: __m256i) -> __m256i {
        // SAFETY: see the impl.
        unsafe { _mm256_xor_si256(a, b) }
    }
    #[inline(always)]
    unsafe fn andnot_i(a: __m256i, b: __m256i) -> __m256i {
        // SAFETY: see the impl.
        unsafe { _mm256_andnot_si256(a, b) }
    }
    #[inline(always)]
    unsafe fn add_i(a: __m256i, b: __m256i) -> __m256i {
        // SAFETY: see the impl.
        unsafe { _mm256_add_epi32(a, b) }
    }
    #[inline(always)]
    unsafe fn sub_i(a: __m256i, b: __m256i) -> __m256i {
        // SAFETY: see the impl.
        unsafe { _mm256_sub_epi32(a, b) }
    }
    #[inline(always)]
    unsafe fn shl23(a: __m256i) -> __m256i {
        // SAFETY: see the impl.
        unsafe { _mm256_slli_epi32::<23>(a) }
    }
    #[inline(always)]
    unsafe fn shr23(a: __m256i) -> __m256i {
        // SAFETY: see the impl.
        unsafe { _mm256_srli_epi32::<23>(a) }
    }
    #[inline(always)]
    unsafe fn sar1(a: __m256i) -> __m256i {
        // SAFETY: see the impl.
        unsafe { _mm256_srai_epi32::<1>(a) }
    }
    #[inline(always)]
    unsafe fn to_float(a: __m256i) -> __m256 {
        // SAFETY: see the impl.
        unsafe { _mm256_cvtepi32_ps(a) }
    }
}
