//! Vectorized element-wise math in the generated code: `exp`, `sigmoid`, `tanh`,
//! `relu` on `f32x4`, built from adds, multiplies, one division, compares and
//! bit tricks, with no call into libm.
//!
//! Error bounds, measured against f64 over a dense sweep of [-30, 30] (every
//! 1e-4) and at ±1e4, ±inf, NaN by `tests/vecmath.rs` (which asserts them):
//!
//! | function | bound (absolute, except exp) |
//! |---|---|
//! | `exp`     | 2.5e-7 relative (Cephes `expf` polynomial, Cody-Waite reduction) |
//! | `sigmoid` | 1.2e-7 absolute; in [0, 1]; monotone on the sweep |
//! | `tanh`    | 2.4e-7 absolute (and 5e-7 relative for \|x\| < 0.625); in [-1, 1]; monotone |
//!
//! Contracts: NaN in, NaN out (clamps are written `x > hi ? hi : x`, which keeps
//! NaN); `exp(+inf) = +inf`, `exp(-inf) = 0`, `sigmoid(±inf) = 1, 0`,
//! `tanh(±inf) = ±1`; no NaN from a finite input; results overflow to `inf`
//! only where the true result exceeds `f32::MAX`.

use cranelift_codegen::ir::condcodes::FloatCC;
use cranelift_codegen::ir::types::{F32X4, I32X4};
use cranelift_codegen::ir::{Endianness, InstBuilder, MemFlagsData, Value};
use cranelift_frontend::FunctionBuilder;

use crate::ir::{BinaryOp, UnaryOp};

pub fn splat(b: &mut FunctionBuilder<'_>, c: f32) -> Value {
    let s = b.ins().f32const(c);
    b.ins().splat(F32X4, s)
}

fn lanes_flags() -> MemFlagsData {
    MemFlagsData::new().with_endianness(Endianness::Little)
}

/// `cond ? a : b`, lane by lane, for a mask from `fcmp`.
fn choose(b: &mut FunctionBuilder<'_>, mask: Value, a: Value, c: Value) -> Value {
    let m = b.ins().bitcast(F32X4, lanes_flags(), mask);
    b.ins().bitselect(m, a, c)
}

/// `x > hi ? hi : x`: keeps NaN.
fn clamp_hi(b: &mut FunctionBuilder<'_>, x: Value, hi: f32) -> Value {
    let h = splat(b, hi);
    let gt = b.ins().fcmp(FloatCC::GreaterThan, x, h);
    choose(b, gt, h, x)
}

/// `x < lo ? lo : x`: keeps NaN.
fn clamp_lo(b: &mut FunctionBuilder<'_>, x: Value, lo: f32) -> Value {
    let l = splat(b, lo);
    let lt = b.ins().fcmp(FloatCC::LessThan, x, l);
    choose(b, lt, l, x)
}

/// Horner's rule, highest coefficient first.
fn poly(b: &mut FunctionBuilder<'_>, x: Value, coeffs: &[f32]) -> Value {
    let mut acc = splat(b, coeffs[0]);
    for &c in &coeffs[1..] {
        let m = b.ins().fmul(acc, x);
        let k = splat(b, c);
        acc = b.ins().fadd(m, k);
    }
    acc
}

/// 2^n for integer lanes n in [-75, 65] (as f32 bits).
fn pow2(b: &mut FunctionBuilder<'_>, n: Value) -> Value {
    let bias = b.ins().iconst(cranelift_codegen::ir::types::I32, 127);
    let bias = b.ins().splat(I32X4, bias);
    let e = b.ins().iadd(n, bias);
    let bits = b.ins().ishl_imm_s(e, 23);
    b.ins().bitcast(F32X4, lanes_flags(), bits)
}

/// e^x. The input is clamped to [-104, 89]: below, the result is 0 in f32 (2^-150
/// rounds to zero); above, it is +inf. Then x = n ln2 + r with |r| <= ln2/2
/// (ln2 split in a short high part, so that `n * LN2_HI` is exact), e^r from
/// Cephes' degree-6 polynomial, and 2^n applied as two factors 2^(n>>1) and
/// 2^(n - n>>1), each a normal float, so that the product over- and underflows
/// exactly where the true result does.
pub fn exp(b: &mut FunctionBuilder<'_>, x: Value) -> Value {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    let x = clamp_hi(b, x, 89.0);
    let x = clamp_lo(b, x, -104.0);
    let l2e = splat(b, LOG2E);
    let t = b.ins().fmul(x, l2e);
    let n = b.ins().nearest(t);
    let hi = splat(b, LN2_HI);
    let lo = splat(b, LN2_LO);
    let nh = b.ins().fmul(n, hi);
    let r = b.ins().fsub(x, nh);
    let nl = b.ins().fmul(n, lo);
    let r = b.ins().fsub(r, nl);
    // e^r = 1 + r + r^2 * P(r)
    let p = poly(
        b,
        r,
        &[
            1.987_569_1e-4,
            1.398_199_9e-3,
            8.333_452e-3,
            4.166_579_6e-2,
            1.666_666_5e-1,
            5.000_000_1e-1,
        ],
    );
    let r2 = b.ins().fmul(r, r);
    let pr2 = b.ins().fmul(p, r2);
    let one = splat(b, 1.0);
    let s = b.ins().fadd(pr2, r);
    let e = b.ins().fadd(s, one);
    let ni = b.ins().fcvt_to_sint_sat(I32X4, n);
    let n1 = b.ins().sshr_imm_s(ni, 1);
    let n2 = b.ins().isub(ni, n1);
    let s1 = pow2(b, n1);
    let s2 = pow2(b, n2);
    let e = b.ins().fmul(e, s1);
    b.ins().fmul(e, s2)
}

/// 1 / (1 + e^-x). Its error is that of `exp`, scaled down by the division.
pub fn sigmoid(b: &mut FunctionBuilder<'_>, x: Value) -> Value {
    let nx = b.ins().fneg(x);
    let e = exp(b, nx);
    let one = splat(b, 1.0);
    let d = b.ins().fadd(one, e);
    b.ins().fdiv(one, d)
}

/// tanh: for |x| < 0.625, Cephes' odd polynomial x + x^3 P(x^2) (accurate
/// relative to tiny results); above, 1 - 2 / (e^(2|x|) + 1) with x's sign.
pub fn tanh(b: &mut FunctionBuilder<'_>, x: Value) -> Value {
    let ax = b.ins().fabs(x);
    // Large branch.
    let two = splat(b, 2.0);
    let one = splat(b, 1.0);
    let a2 = b.ins().fmul(ax, two);
    let e = exp(b, a2);
    let d = b.ins().fadd(e, one);
    let q = b.ins().fdiv(two, d);
    let big = b.ins().fsub(one, q);
    // Put x's sign on it: sign bit from x, the rest from `big`.
    let sign_mask = {
        let s = b.ins().f32const(-0.0);
        b.ins().splat(F32X4, s)
    };
    let big = b.ins().bitselect(sign_mask, x, big);
    // Small branch.
    let z = b.ins().fmul(x, x);
    let p = poly(
        b,
        z,
        &[
            -5.704_988_7e-3,
            2.063_908_9e-2,
            -5.373_971_6e-2,
            1.333_144_2e-1,
            -3.333_328_2e-1,
        ],
    );
    let pz = b.ins().fmul(p, z);
    let pzx = b.ins().fmul(pz, x);
    let small = b.ins().fadd(pzx, x);
    let limit = splat(b, 0.625);
    let is_small = b.ins().fcmp(FloatCC::LessThan, ax, limit);
    choose(b, is_small, small, big)
}

/// max(x, 0), keeping NaN.
pub fn relu(b: &mut FunctionBuilder<'_>, x: Value) -> Value {
    let zero = splat(b, 0.0);
    let neg = b.ins().fcmp(FloatCC::LessThan, x, zero);
    choose(b, neg, zero, x)
}

pub fn unary(b: &mut FunctionBuilder<'_>, op: UnaryOp, x: Value) -> Value {
    match op {
        UnaryOp::Neg => b.ins().fneg(x),
        UnaryOp::Sigmoid => sigmoid(b, x),
        UnaryOp::Tanh => tanh(b, x),
        UnaryOp::Relu => relu(b, x),
        UnaryOp::Exp => exp(b, x),
    }
}

pub fn binary(b: &mut FunctionBuilder<'_>, op: BinaryOp, x: Value, y: Value) -> Value {
    match op {
        BinaryOp::Add => b.ins().fadd(x, y),
        BinaryOp::Sub => b.ins().fsub(x, y),
        BinaryOp::Mul => b.ins().fmul(x, y),
        BinaryOp::Div => b.ins().fdiv(x, y),
    }
}

/// A scalar constant for a region body.
pub fn constant(b: &mut FunctionBuilder<'_>, c: f64) -> Value {
    splat(b, c as f32)
}
