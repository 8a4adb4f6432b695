//! The vector operations every kernel of this layer is written in, one
//! implementation per ISA: [`Simd`] for the products (loads, stores, tails,
//! fused multiply-adds, the widening of narrow weights, prefetches) and
//! [`SimdMath`] beside it for the element-wise regions (comparisons, bit
//! tricks, the operations `wide::math` builds its functions from).
//!
//! A kernel is a generic function over the trait, `#[inline(always)]`, and
//! each ISA instantiates it inside a `#[target_feature]` entry point (rten's
//! `rten-simd` and pulp's `Arch::dispatch` do the same): the intrinsics are
//! inlined into a function compiled with their features, so one source gives
//! every ISA's machine code.
//!
//! Each operation is one IEEE-exact instruction or an integer/bit trick (the
//! `f32x4` instruction Cranelift emits for the matching CLIF operation, for
//! the math), so code written in them rounds the same on every ISA: the
//! kernels give the scalar kernel's bits, the wide regions the generated
//! code's.
//!
//! Every method is `unsafe`: the caller runs in a function compiled with the
//! implementation's target features (`#[target_feature]`), after checking
//! that the host has them; pointers must be valid for the lanes accessed.

#[cfg(target_arch = "aarch64")]
mod neon;
#[cfg(target_arch = "x86_64")]
mod x86;

#[cfg(target_arch = "aarch64")]
pub(crate) use neon::Neon;
#[cfg(target_arch = "x86_64")]
pub(crate) use x86::{lanes8, Avx2, Avx512};

/// One vector width's operations for the products.
pub(crate) trait Simd: Copy {
    /// Floats per vector.
    const LANES: usize;
    /// A vector of floats.
    type F: Copy;
    /// Which lanes of a partial vector exist.
    type Tail: Copy;

    /// The first `min(n, LANES)` lanes.
    unsafe fn tail(n: usize) -> Self::Tail;
    unsafe fn load(p: *const f32) -> Self::F;
    /// Reads only the tail's lanes (the others are zero).
    unsafe fn load_tail(p: *const f32, t: Self::Tail) -> Self::F;
    unsafe fn store(p: *mut f32, v: Self::F);
    /// Writes only the tail's lanes.
    unsafe fn store_tail(p: *mut f32, v: Self::F, t: Self::Tail);
    unsafe fn splat(x: f32) -> Self::F;
    unsafe fn add(a: Self::F, b: Self::F) -> Self::F;
    unsafe fn mul(a: Self::F, b: Self::F) -> Self::F;
    /// `a * b + c`, rounded once.
    unsafe fn fma(a: Self::F, b: Self::F, c: Self::F) -> Self::F;
    /// A hint to bring the line at `p` into L2 (it never faults, so `p` may
    /// be past an allocation's end). A no-op where no kernel measured a gain.
    unsafe fn prefetch_l2(p: *const f32);
    /// `LANES` 32-bit words at `p`, each a pair of bf16 values: the low
    /// halves widened (`word << 16`) and the high ones (`word & 0xffff0000`).
    unsafe fn widen_bf16_pairs(p: *const u8) -> (Self::F, Self::F);
    /// `LANES` signed bytes at `p`, converted to floats (exactly).
    unsafe fn widen_i8(p: *const u8) -> Self::F;
}

/// The further operations of the element-wise regions (`kernels::wide`).
pub(crate) trait SimdMath: Simd {
    /// A vector of 32-bit integers.
    type I: Copy;
    /// The result of a lane-wise comparison.
    type C: Copy;

    unsafe fn splat_i(x: i32) -> Self::I;
    unsafe fn sub(a: Self::F, b: Self::F) -> Self::F;
    unsafe fn div(a: Self::F, b: Self::F) -> Self::F;
    unsafe fn sqrt(a: Self::F) -> Self::F;
    /// `a < b ? a : b` (so `b` when either is NaN): x86's `minps`.
    unsafe fn min_lt(a: Self::F, b: Self::F) -> Self::F;
    /// `a > b ? a : b` (so `b` when either is NaN): x86's `maxps`.
    unsafe fn max_gt(a: Self::F, b: Self::F) -> Self::F;

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

    /// CLIF's `fmin` as Cranelift lowers it for this ISA: NaN if either is
    /// NaN, `-0` from `+0` and `-0`. The default is x86's sequence (two
    /// `minps`, or-ed, the canonical negative quiet NaN where unordered).
    #[inline(always)]
    unsafe fn fmin(x: Self::F, y: Self::F) -> Self::F {
        // SAFETY: the caller upholds the trait's contract.
        unsafe {
            let m1 = Self::min_lt(x, y);
            let m2 = Self::min_lt(y, x);
            let or = Self::from_bits(Self::or_i(Self::bits(m1), Self::bits(m2)));
            let nan = Self::from_bits(Self::splat_i(!NAN_FRACTION));
            Self::select(Self::unordered(or, m2), nan, or)
        }
    }

    /// CLIF's `fmax` as Cranelift lowers it for this ISA: NaN if either is
    /// NaN, `+0` from `+0` and `-0`. The default is x86's sequence.
    #[inline(always)]
    unsafe fn fmax(x: Self::F, y: Self::F) -> Self::F {
        // SAFETY: the caller upholds the trait's contract.
        unsafe {
            let m1 = Self::bits(Self::max_gt(x, y));
            let m2 = Self::bits(Self::max_gt(y, x));
            let xor = Self::xor_i(m1, m2);
            let blended = Self::from_bits(Self::or_i(m1, xor));
            let pos = Self::sub(blended, Self::from_bits(xor));
            let quiet =
                Self::from_bits(Self::andnot_i(Self::splat_i(NAN_FRACTION), Self::bits(pos)));
            Self::select(Self::unordered(blended, blended), quiet, pos)
        }
    }
}

/// What CLIF's x86 `fmin` leaves of a NaN lane: sign, exponent and quiet bit.
const NAN_FRACTION: i32 = 0x003f_ffff;

/// Twelve independent chains of `n` dependent fused multiply-adds each
/// (the probe of `probe::fma_peak_gflops`), summed.
///
/// # Safety
/// Inside a function compiled with `S`'s target features.
#[inline(always)]
pub(crate) unsafe fn fma_chains<S: Simd>(n: usize) -> f32 {
    // SAFETY: register arithmetic, and a store into a buffer of 16 floats
    // (no ISA has more lanes).
    unsafe {
        let a = S::splat(std::hint::black_box(1.000_000_1f32));
        let b = S::splat(0.999_999_9);
        let mut acc = [S::splat(0.0); 12];
        for _ in 0..n {
            for x in acc.iter_mut() {
                *x = S::fma(*x, a, b);
            }
        }
        let mut s = S::splat(0.0);
        for x in acc {
            s = S::add(s, x);
        }
        let mut out = [0.0f32; 16];
        S::store(out.as_mut_ptr(), s);
        out[..S::LANES].iter().sum()
    }
}
