//! [`Simd`] for aarch64's Advanced SIMD (4 lanes). The ISA has no masked
//! loads or stores: a tail goes through a buffer of one vector.

use super::{Simd, SimdMath};
use std::arch::aarch64::*;

/// Advanced SIMD, 4 lanes (part of every aarch64 target).
#[derive(Clone, Copy)]
pub(crate) struct Neon;

// SAFETY (every block below): Advanced SIMD is always there on aarch64;
// pointer arguments are valid for the lanes accessed, as the caller
// guarantees.
impl Simd for Neon {
    const LANES: usize = 4;
    type F = float32x4_t;
    type Tail = usize;

    #[inline(always)]
    unsafe fn tail(n: usize) -> usize {
        n.min(4)
    }
    #[inline(always)]
    unsafe fn load(p: *const f32) -> float32x4_t {
        // SAFETY: see the impl.
        unsafe { vld1q_f32(p) }
    }
    #[inline(always)]
    unsafe fn load_tail(p: *const f32, t: usize) -> float32x4_t {
        let mut buf = [0.0f32; 4];
        // SAFETY: see the impl; `t <= 4` floats are read.
        unsafe {
            std::ptr::copy_nonoverlapping(p, buf.as_mut_ptr(), t);
            vld1q_f32(buf.as_ptr())
        }
    }
    #[inline(always)]
    unsafe fn store(p: *mut f32, v: float32x4_t) {
        // SAFETY: see the impl.
        unsafe { vst1q_f32(p, v) }
    }
    #[inline(always)]
    unsafe fn store_tail(p: *mut f32, v: float32x4_t, t: usize) {
        let mut buf = [0.0f32; 4];
        // SAFETY: see the impl; `t <= 4` floats are written.
        unsafe {
            vst1q_f32(buf.as_mut_ptr(), v);
            std::ptr::copy_nonoverlapping(buf.as_ptr(), p, t);
        }
    }
    #[inline(always)]
    unsafe fn splat(x: f32) -> float32x4_t {
        // SAFETY: see the impl.
        unsafe { vdupq_n_f32(x) }
    }
    #[inline(always)]
    unsafe fn add(a: float32x4_t, b: float32x4_t) -> float32x4_t {
        // SAFETY: see the impl.
        unsafe { vaddq_f32(a, b) }
    }
    #[inline(always)]
    unsafe fn mul(a: float32x4_t, b: float32x4_t) -> float32x4_t {
        // SAFETY: see the impl.
        unsafe { vmulq_f32(a, b) }
    }
    #[inline(always)]
    unsafe fn fma(a: float32x4_t, b: float32x4_t, c: float32x4_t) -> float32x4_t {
        // SAFETY: see the impl (`vfmaq_f32(c, a, b)` is `c + a * b`, rounded once).
        unsafe { vfmaq_f32(c, a, b) }
    }
    #[inline(always)]
    unsafe fn prefetch_l2(_p: *const f32) {
        // Not measured on aarch64 hardware: no hint until a benchmark shows
        // one pays.
    }
    #[inline(always)]
    unsafe fn widen_bf16_pairs(p: *const u8) -> (float32x4_t, float32x4_t) {
        // SAFETY: see the impl (16 bytes at `p`).
        unsafe {
            let v = vld1q_u32(p.cast());
            (
                vreinterpretq_f32_u32(vshlq_n_u32::<16>(v)),
                vreinterpretq_f32_u32(vandq_u32(v, vdupq_n_u32(0xffff_0000))),
            )
        }
    }
    #[inline(always)]
    unsafe fn widen_i8(p: *const u8) -> float32x4_t {
        // SAFETY: see the impl (4 bytes at `p`).
        unsafe {
            let word = p.cast::<i32>().read_unaligned();
            let bytes = vreinterpret_s8_s32(vdup_n_s32(word));
            vcvtq_f32_s32(vmovl_s16(vget_low_s16(vmovl_s8(bytes))))
        }
    }
}

/// Wraps each intrinsic call in the block the impl's SAFETY note covers.
macro_rules! neon {
    ($($name:ident($($a:ident: $t:ty),*) -> $r:ty { $($body:tt)* })*) => {$(
        #[inline(always)]
        unsafe fn $name($($a: $t),*) -> $r {
            // SAFETY: see the impl.
            unsafe { $($body)* }
        }
    )*};
}

// SAFETY (every block below): as for `Simd`; no method touches memory.
impl SimdMath for Neon {
    type I = int32x4_t;
    type C = uint32x4_t;

    neon! {
        splat_i(x: i32) -> int32x4_t { vdupq_n_s32(x) }
        sub(a: float32x4_t, b: float32x4_t) -> float32x4_t { vsubq_f32(a, b) }
        div(a: float32x4_t, b: float32x4_t) -> float32x4_t { vdivq_f32(a, b) }
        sqrt(a: float32x4_t) -> float32x4_t { vsqrtq_f32(a) }
        // x86's operand rule as compare-and-select (what Cranelift emits
        // for the generated code's clamps on aarch64).
        min_lt(a: float32x4_t, b: float32x4_t) -> float32x4_t { vbslq_f32(vcltq_f32(a, b), a, b) }
        max_gt(a: float32x4_t, b: float32x4_t) -> float32x4_t { vbslq_f32(vcltq_f32(b, a), a, b) }
        // Cranelift lowers CLIF's `fmin`/`fmax` on aarch64 to these very
        // instructions (NaN if either is NaN, -0 below +0).
        fmin(a: float32x4_t, b: float32x4_t) -> float32x4_t { vminq_f32(a, b) }
        fmax(a: float32x4_t, b: float32x4_t) -> float32x4_t { vmaxq_f32(a, b) }
        lt(a: float32x4_t, b: float32x4_t) -> uint32x4_t { vcltq_f32(a, b) }
        eq(a: float32x4_t, b: float32x4_t) -> uint32x4_t { vceqq_f32(a, b) }
        unordered(a: float32x4_t, b: float32x4_t) -> uint32x4_t {
            vmvnq_u32(vandq_u32(vceqq_f32(a, a), vceqq_f32(b, b)))
        }
        select(c: uint32x4_t, a: float32x4_t, b: float32x4_t) -> float32x4_t { vbslq_f32(c, a, b) }
        select_i(c: uint32x4_t, a: int32x4_t, b: int32x4_t) -> int32x4_t { vbslq_s32(c, a, b) }
        bits(a: float32x4_t) -> int32x4_t { vreinterpretq_s32_f32(a) }
        from_bits(a: int32x4_t) -> float32x4_t { vreinterpretq_f32_s32(a) }
        and_i(a: int32x4_t, b: int32x4_t) -> int32x4_t { vandq_s32(a, b) }
        or_i(a: int32x4_t, b: int32x4_t) -> int32x4_t { vorrq_s32(a, b) }
        xor_i(a: int32x4_t, b: int32x4_t) -> int32x4_t { veorq_s32(a, b) }
        // `vbicq(b, a)` is `b & !a`.
        andnot_i(a: int32x4_t, b: int32x4_t) -> int32x4_t { vbicq_s32(b, a) }
        add_i(a: int32x4_t, b: int32x4_t) -> int32x4_t { vaddq_s32(a, b) }
        sub_i(a: int32x4_t, b: int32x4_t) -> int32x4_t { vsubq_s32(a, b) }
        shl23(a: int32x4_t) -> int32x4_t { vshlq_n_s32::<23>(a) }
        shr23(a: int32x4_t) -> int32x4_t {
            vreinterpretq_s32_u32(vshrq_n_u32::<23>(vreinterpretq_u32_s32(a)))
        }
        sar1(a: int32x4_t) -> int32x4_t { vshrq_n_s32::<1>(a) }
        to_float(a: int32x4_t) -> float32x4_t { vcvtq_f32_s32(a) }
    }
}
