//! The vector operations the wide element-wise code is written in, one
//! implementation per x86-64 width (AVX-512F: 16 lanes, AVX2 + FMA: 8 lanes).
//!
//! Each operation is one IEEE-exact instruction or an integer/bit trick, the
//! same as the `f32x4` instruction Cranelift emits for the matching CLIF
//! operation, so that code written in them rounds exactly as the generated
//! code does (see `math`).
//!
//! Every method is `unsafe`: the caller runs in a function compiled with the
//! implementation's target features (`#[target_feature]`), after checking
//! that the host has them; pointers must be valid for the lanes accessed.

/// One vector width's operations.
pub(super) trait Simd: Copy {
    /// Floats per vector.
    const LANES: usize;
    /// A vector of floats.
    type F: Copy;
    /// A vector of 32-bit integers.
    type I: Copy;
    /// The result of a lane-wise comparison.
    type C: Copy;
    /// Which lanes of a partial vector exist.
    type Tail: Copy;

    /// The first `n < LANES` lanes.
    unsafe fn tail(n: usize) -> Self::Tail;
    unsafe fn load(p: *const f32) -> Self::F;
    /// Reads only the tail's lanes (the others are zero).
    unsafe fn load_tail(p: *const f32, t: Self::Tail) -> Self::F;
    unsafe fn store(p: *mut f32, v: Self::F);
    /// Writes only the tail's lanes.
    unsafe fn store_tail(p: *mut f32, v: Self::F, t: Self::Tail);
    unsafe fn splat(x: f32) -> Self::F;
    unsafe fn splat_i(x: i32) -> Self::I;

    unsafe fn add(a: Self::F, b: Self::F) -> Self::F;
    unsafe fn sub(a: Self::F, b: Self::F) -> Self::F;
    unsafe fn mul(a: Self::F, b: Self::F) -> Self::F;
    unsafe fn div(a: Self::F, b: Self::F) -> Self::F;
    /// `a * b + c`, rounded once.
    unsafe fn fma(a: Self::F, b: Self::F, c: Self::F) -> Self::F;
    unsafe fn sqrt(a: Self::F) -> Self::F;
    /// x86's `minps`: `a < b ? a : b` (so `b` when either is NaN).
    unsafe fn min_x86(a: Self::F, b: Self::F) -> Self::F;
    /// x86's `maxps`: `a > b ? a : b`.
    unsafe fn max_x86(a: Self::F, b: Self::F) -> Self::F;

    /// `a < b` (false for NaN).
    unsafe fn lt(a: Self::F, b: Self::F) -> Self::C;
    /// `a == b` (false for NaN).
    unsafe fn eq(a: Self::F, b: Self::F) -> Self::C;
    /// Either is NaN.
    unsafe fn unordered(a: Self::F, b: Self::F) -> Self::C;
    /// `c ? a : b`, lane by lane.
    unsafe fn select(c: Self::C, a: Self::F, b: Self::F) -> Self::F;
    unsafe fn select_i(c: Self::C, a: Self::I, b: Self::I) -> Self::I;

    unsafe fn bits(a: Self::F) -> Self::I;
    unsafe fn from_bits(a: Self::I) -> Self::F;
    unsafe fn and_i(a: Self::I, b: Self::I) -> Self::I;
    unsafe fn or_i(a: Self::I, b: Self::I) -> Self::I;
    unsafe fn xor_i(a: Self::I, b: Self::I) -> Self::I;
    /// `!a & b`.
    unsafe fn andnot_i(a: Self::I, b: Self::I) -> Self::I;
    unsafe fn add_i(a: Self::I, b: Self::I) -> Self::I;
    unsafe fn sub_i(a: Self::I, b: Self::I) -> Self::I;
    unsafe fn shl23(a: Self::I) -> Self::I;
    /// Logical shift right by 23.
    unsafe fn shr23(a: Self::I) -> Self::I;
    /// Arithmetic shift right by 1.
    unsafe fn sar1(a: Self::I) -> Self::I;
    /// Integer to float (exact for the small integers used here).
    unsafe fn to_float(a: Self::I) -> Self::F;
}

#[cfg(target_arch = "x86_64")]
pub(super) use x86::{Avx2, Avx512};

#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::Simd;
    use std::arch::x86_64::*;

    /// AVX-512F, 16 lanes.
    #[derive(Clone, Copy)]
    pub(in crate::codegen::wide) struct Avx512;

    /// AVX2 + FMA, 8 lanes.
    #[derive(Clone, Copy)]
    pub(in crate::codegen::wide) struct Avx2;

    // SAFETY (every block below): the intrinsic needs AVX-512F, which the
    // caller's function enables (trait contract); pointer arguments are
    // valid for the lanes accessed, as the caller guarantees.
    impl Simd for Avx512 {
        const LANES: usize = 16;
        type F = __m512;
        type I = __m512i;
        type C = __mmask16;
        type Tail = __mmask16;

        #[inline(always)]
        unsafe fn tail(n: usize) -> __mmask16 {
            ((1u32 << n) - 1) as __mmask16
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
        unsafe fn splat_i(x: i32) -> __m512i {
            // SAFETY: see the impl.
            unsafe { _mm512_set1_epi32(x) }
        }
        #[inline(always)]
        unsafe fn add(a: __m512, b: __m512) -> __m512 {
            // SAFETY: see the impl.
            unsafe { _mm512_add_ps(a, b) }
        }
        #[inline(always)]
        unsafe fn sub(a: __m512, b: __m512) -> __m512 {
            // SAFETY: see the impl.
            unsafe { _mm512_sub_ps(a, b) }
        }
        #[inline(always)]
        unsafe fn mul(a: __m512, b: __m512) -> __m512 {
            // SAFETY: see the impl.
            unsafe { _mm512_mul_ps(a, b) }
        }
        #[inline(always)]
        unsafe fn div(a: __m512, b: __m512) -> __m512 {
            // SAFETY: see the impl.
            unsafe { _mm512_div_ps(a, b) }
        }
        #[inline(always)]
        unsafe fn fma(a: __m512, b: __m512, c: __m512) -> __m512 {
            // SAFETY: see the impl.
            unsafe { _mm512_fmadd_ps(a, b, c) }
        }
        #[inline(always)]
        unsafe fn sqrt(a: __m512) -> __m512 {
            // SAFETY: see the impl.
            unsafe { _mm512_sqrt_ps(a) }
        }
        #[inline(always)]
        unsafe fn min_x86(a: __m512, b: __m512) -> __m512 {
            // SAFETY: see the impl.
            unsafe { _mm512_min_ps(a, b) }
        }
        #[inline(always)]
        unsafe fn max_x86(a: __m512, b: __m512) -> __m512 {
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
        type I = __m256i;
        type C = __m256;
        type Tail = __m256i;

        #[inline(always)]
        unsafe fn tail(n: usize) -> __m256i {
            // SAFETY: see the impl (AVX enabled).
            unsafe { crate::codegen::panel::lanes8(n) }
        }
        #[inline(always)]
        unsafe fn load(p: *const f32) -> __m256 {
            // SAFETY: see the impl.
            unsafe { _mm256_loadu_ps(p) }
        }
        #[inline(always)]
        unsafe fn load_tail(p: *const f32, t: __m256i) -> __m256 {
            // SAFETY: see the impl; masked-off lanes are not read.
            unsafe { _mm256_maskload_ps(p, t) }
        }
        #[inline(always)]
        unsafe fn store(p: *mut f32, v: __m256) {
            // SAFETY: see the impl.
            unsafe { _mm256_storeu_ps(p, v) }
        }
        #[inline(always)]
        unsafe fn store_tail(p: *mut f32, v: __m256, t: __m256i) {
            // SAFETY: see the impl; masked-off lanes are not written.
            unsafe { _mm256_maskstore_ps(p, t, v) }
        }
        #[inline(always)]
        unsafe fn splat(x: f32) -> __m256 {
            // SAFETY: see the impl.
            unsafe { _mm256_set1_ps(x) }
        }
        #[inline(always)]
        unsafe fn splat_i(x: i32) -> __m256i {
            // SAFETY: see the impl.
            unsafe { _mm256_set1_epi32(x) }
        }
        #[inline(always)]
        unsafe fn add(a: __m256, b: __m256) -> __m256 {
            // SAFETY: see the impl.
            unsafe { _mm256_add_ps(a, b) }
        }
        #[inline(always)]
        unsafe fn sub(a: __m256, b: __m256) -> __m256 {
            // SAFETY: see the impl.
            unsafe { _mm256_sub_ps(a, b) }
        }
        #[inline(always)]
        unsafe fn mul(a: __m256, b: __m256) -> __m256 {
            // SAFETY: see the impl.
            unsafe { _mm256_mul_ps(a, b) }
        }
        #[inline(always)]
        unsafe fn div(a: __m256, b: __m256) -> __m256 {
            // SAFETY: see the impl.
            unsafe { _mm256_div_ps(a, b) }
        }
        #[inline(always)]
        unsafe fn fma(a: __m256, b: __m256, c: __m256) -> __m256 {
            // SAFETY: see the impl.
            unsafe { _mm256_fmadd_ps(a, b, c) }
        }
        #[inline(always)]
        unsafe fn sqrt(a: __m256) -> __m256 {
            // SAFETY: see the impl.
            unsafe { _mm256_sqrt_ps(a) }
        }
        #[inline(always)]
        unsafe fn min_x86(a: __m256, b: __m256) -> __m256 {
            // SAFETY: see the impl.
            unsafe { _mm256_min_ps(a, b) }
        }
        #[inline(always)]
        unsafe fn max_x86(a: __m256, b: __m256) -> __m256 {
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
}
