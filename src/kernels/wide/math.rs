//! The element-wise functions of `codegen::vecmath`, written once
//! over [`Simd`] for every width.
//!
//! Each function is the same sequence of IEEE-exact operations as its
//! Cranelift counterpart (same constants, same order of additions, the same
//! fused multiply-adds, compare-and-select where the generated code selects),
//! so a lane computes bit for bit what the generated `f32x4` code computes,
//! and `tests/vecmath.rs`' accuracy contract holds at every width. CLIF's
//! NaN-propagating `fmin`/`fmax` are each ISA's lowering of them
//! ([`Simd::fmin`]: x86's sequence, canonical NaNs included, or aarch64's
//! one instruction).

use super::coefficients::{
    EXP_POLY, HALF_EXPONENT, LN2_HI, LN2_LO, LOG_POLY, MANTISSA_MASK, ROUND_MAGIC, TANH_POLY,
    TWO_TO_23,
};
use crate::ir::{BinaryOp, UnaryOp};
use crate::kernels::simd::SimdMath as Simd;

const SIGN: i32 = i32::MIN;

// SAFETY (every function below): the caller upholds `Simd`'s contract (its
// target features enabled); no function here touches memory.

#[inline(always)]
unsafe fn neg<S: Simd>(x: S::F) -> S::F {
    // SAFETY: see above.
    unsafe { S::from_bits(S::xor_i(S::bits(x), S::splat_i(SIGN))) }
}

#[inline(always)]
unsafe fn abs<S: Simd>(x: S::F) -> S::F {
    // SAFETY: see above.
    unsafe { S::from_bits(S::andnot_i(S::splat_i(SIGN), S::bits(x))) }
}

/// `hi < x ? hi : x` (keeps NaN).
#[inline(always)]
unsafe fn clamp_hi<S: Simd>(x: S::F, hi: f32) -> S::F {
    // SAFETY: see above.
    unsafe { S::min_lt(S::splat(hi), x) }
}

/// `x < lo ? lo : x` (keeps NaN).
#[inline(always)]
unsafe fn clamp_lo<S: Simd>(x: S::F, lo: f32) -> S::F {
    // SAFETY: see above.
    unsafe { S::max_gt(S::splat(lo), x) }
}

#[inline(always)]
unsafe fn poly<S: Simd>(x: S::F, coeffs: &[f32]) -> S::F {
    // SAFETY: see above.
    unsafe {
        let mut acc = S::splat(coeffs[0]);
        for &c in &coeffs[1..] {
            acc = S::fma(acc, x, S::splat(c));
        }
        acc
    }
}

#[inline(always)]
unsafe fn pow2<S: Simd>(n: S::I) -> S::F {
    // SAFETY: see above.
    unsafe { S::from_bits(S::shl23(S::add_i(n, S::splat_i(127)))) }
}

#[inline(always)]
unsafe fn exp_in<S: Simd>(x: S::F, subnormals: bool) -> S::F {
    // SAFETY: see above.
    unsafe {
        let x = clamp_hi::<S>(x, 89.0);
        let x = clamp_lo::<S>(x, if subnormals { -104.0 } else { -87.0 });
        let t = S::mul(x, S::splat(std::f32::consts::LOG2_E));
        let magic = S::splat(ROUND_MAGIC);
        let tm = S::add(t, magic);
        let n = S::sub(tm, magic);
        let ni = S::sub_i(S::bits(tm), S::splat_i(ROUND_MAGIC.to_bits() as i32));
        let r = S::fma(n, S::splat(-LN2_HI), x);
        let r = S::fma(n, S::splat(-LN2_LO), r);
        let p = poly::<S>(r, &EXP_POLY);
        let r2 = S::mul(r, r);
        let s = S::fma(p, r2, r);
        let e = S::add(s, S::splat(1.0));
        if !subnormals {
            return S::mul(e, pow2::<S>(ni));
        }
        let n1 = S::sar1(ni);
        let n2 = S::sub_i(ni, n1);
        let e = S::mul(e, pow2::<S>(n1));
        S::mul(e, pow2::<S>(n2))
    }
}

#[inline(always)]
pub(super) unsafe fn exp<S: Simd>(x: S::F) -> S::F {
    // SAFETY: see above.
    unsafe { exp_in::<S>(x, true) }
}

#[inline(always)]
pub(super) unsafe fn sigmoid<S: Simd>(x: S::F) -> S::F {
    // SAFETY: see above.
    unsafe {
        let e = exp_in::<S>(neg::<S>(x), false);
        let one = S::splat(1.0);
        S::div(one, S::add(one, e))
    }
}

#[inline(always)]
pub(super) unsafe fn tanh<S: Simd>(x: S::F) -> S::F {
    // SAFETY: see above.
    unsafe {
        let ax = abs::<S>(x);
        let two = S::splat(2.0);
        let one = S::splat(1.0);
        let e = exp_in::<S>(S::mul(ax, two), false);
        let q = S::div(two, S::add(e, one));
        let big = S::sub(one, q);
        let sign = S::splat_i(SIGN);
        let big = S::from_bits(S::or_i(
            S::and_i(sign, S::bits(x)),
            S::andnot_i(sign, S::bits(big)),
        ));
        let z = S::mul(x, x);
        let p = poly::<S>(z, &TANH_POLY);
        let pz = S::mul(p, z);
        let small = S::fma(pz, x, x);
        S::select(S::lt(ax, S::splat(0.625)), small, big)
    }
}

#[inline(always)]
pub(super) unsafe fn relu<S: Simd>(x: S::F) -> S::F {
    // SAFETY: see above.
    unsafe { S::max_gt(S::splat(0.0), x) }
}

#[inline(always)]
pub(super) unsafe fn log<S: Simd>(x: S::F) -> S::F {
    // SAFETY: see above.
    unsafe {
        let is_tiny = S::lt(x, S::splat(f32::MIN_POSITIVE));
        let xs = S::select(is_tiny, S::mul(x, S::splat(TWO_TO_23)), x);
        let bias = S::select_i(is_tiny, S::splat_i(126 + 23), S::splat_i(126));
        let bits = S::bits(xs);
        let e = S::to_float(S::sub_i(S::shr23(bits), bias));
        let m = S::or_i(
            S::and_i(bits, S::splat_i(MANTISSA_MASK as i32)),
            S::splat_i(HALF_EXPONENT as i32),
        );
        let m = S::from_bits(m);
        let one = S::splat(1.0);
        let low = S::lt(m, S::splat(std::f32::consts::FRAC_1_SQRT_2));
        let m = S::select(low, S::add(m, m), m);
        let f = S::sub(m, one);
        let e = S::select(low, S::sub(e, one), e);
        let z = S::mul(f, f);
        let p = poly::<S>(f, &LOG_POLY);
        let fz = S::mul(f, z);
        let y = S::mul(p, fz);
        let y = S::fma(e, S::splat(LN2_LO), y);
        let y = S::fma(z, S::splat(-0.5), y);
        let r = S::add(f, y);
        let r = S::fma(e, S::splat(LN2_HI), r);
        let inf = S::splat(f32::INFINITY);
        let r = S::select(S::eq(x, inf), inf, r);
        let zero = S::splat(0.0);
        let r = S::select(S::eq(x, zero), S::splat(f32::NEG_INFINITY), r);
        let r = S::select(S::lt(x, zero), S::splat(f32::NAN), r);
        S::select(S::unordered(x, x), x, r)
    }
}

#[inline(always)]
pub(super) unsafe fn softplus<S: Simd>(x: S::F) -> S::F {
    // SAFETY: see above.
    unsafe {
        let u = exp::<S>(neg::<S>(abs::<S>(x)));
        let one = S::splat(1.0);
        let w = S::add(one, u);
        let lw = log::<S>(w);
        let ratio = S::div(u, S::sub(w, one));
        let l = S::select(S::eq(w, one), u, S::mul(lw, ratio));
        S::add(relu::<S>(x), l)
    }
}

#[inline(always)]
pub(super) unsafe fn unary<S: Simd>(op: UnaryOp, x: S::F) -> S::F {
    // SAFETY: see above.
    unsafe {
        match op {
            UnaryOp::Neg => neg::<S>(x),
            UnaryOp::Sigmoid => sigmoid::<S>(x),
            UnaryOp::Tanh => tanh::<S>(x),
            UnaryOp::Relu => relu::<S>(x),
            UnaryOp::Exp => exp::<S>(x),
            UnaryOp::Abs => abs::<S>(x),
            UnaryOp::Sqrt => S::sqrt(x),
            UnaryOp::Log => log::<S>(x),
            UnaryOp::Softplus => softplus::<S>(x),
            UnaryOp::Step => S::select(S::lt(S::splat(0.0), x), S::splat(1.0), S::splat(0.0)),
        }
    }
}

#[inline(always)]
pub(super) unsafe fn binary<S: Simd>(op: BinaryOp, x: S::F, y: S::F) -> S::F {
    // SAFETY: see above.
    unsafe {
        match op {
            BinaryOp::Add => S::add(x, y),
            BinaryOp::Sub => S::sub(x, y),
            BinaryOp::Mul => S::mul(x, y),
            BinaryOp::Div => S::div(x, y),
            BinaryOp::Min => S::fmin(x, y),
            BinaryOp::Max => S::fmax(x, y),
        }
    }
}
