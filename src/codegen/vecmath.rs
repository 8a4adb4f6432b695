//! Vectorized element-wise math in the generated code: `exp`, `sigmoid`, `tanh`,
//! `relu`, `log`, `softplus` on `f32x4` (and `abs`, `sqrt`, `min`, `max`, which
//! are single instructions), built from adds, multiplies, fused multiply-adds, one
//! division, compares and bit tricks, with no call into libm.
//!
//! Error bounds, measured against f64 over a dense sweep of [-30, 30] (every
//! 1e-4) and at ±1e4, ±inf, NaN by `tests/vecmath.rs` (which asserts them):
//!
//! | function | measured max error | asserted bound |
//! |---|---|---|
//! | `exp`     | 8.3e-8 relative (results in the normal range), monotone | 1e-7 relative |
//! | `sigmoid` | 8.9e-8 absolute; in [0, 1]; monotone | 1e-7 absolute |
//! | `tanh`    | 7.6e-8 absolute, 7.1e-8 relative for \|x\| < 0.625; in [-1, 1]; monotone | 1e-7 |
//! | `log`     | 7.8e-8 relative over every binade, subnormals included; monotone | 1e-7 relative |
//! | `softplus`| 2.1e-7 relative over [-100, 30] (results above 1e-37); monotone | 3e-7 relative |
//!
//! (An f32 ulp at 1.0 is 1.2e-7; these are within one rounding of the true value.)
//! The results are bit-for-bit the same on every target: only IEEE-exact
//! operations are used (add, mul, fma, div, integer bit tricks); every target we
//! generate for has a fused multiply-add (x86-64 without FMA is refused).
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
use crate::kernels::wide::coefficients::{
    EXP_POLY, HALF_EXPONENT, LN2_HI, LN2_LO, LOG_POLY, MANTISSA_MASK, ROUND_MAGIC, TANH_POLY,
    TWO_TO_23,
};

/// Where vector constants come from: a pool of splatted constants in the packed
/// weights, loaded where they are used (Cranelift hoists `splat`s of constants to
/// the function entry, where two dozen of them would spill; a load at the use
/// folds into the arithmetic and keeps registers free).
#[derive(Clone, Copy)]
pub struct Consts<'a> {
    /// The packed weights' base pointer.
    pub base: Value,
    /// (f32 bits, offset in floats) of each pooled constant.
    pub pool: &'a [(u32, usize)],
}

/// Every constant the functions below use, for the pool: those of `log` and
/// `softplus` only when `with_log` (a cell that uses neither keeps the pool,
/// and so its code, as it was before they existed).
pub fn constants(with_log: bool) -> Vec<f32> {
    let mut v = vec![
        0.0,
        -0.0,
        1.0,
        2.0,
        0.625,
        89.0,
        -104.0,
        -87.0,
        std::f32::consts::LOG2_E,
        -LN2_HI,
        -LN2_LO,
        ROUND_MAGIC,
        f32::from_bits(127),
    ];
    v.extend_from_slice(&EXP_POLY);
    v.extend_from_slice(&TANH_POLY);
    if !with_log {
        return v;
    }
    v.extend_from_slice(&LOG_POLY);
    v.extend_from_slice(&[
        -0.5,
        std::f32::consts::FRAC_1_SQRT_2,
        LN2_HI,
        LN2_LO,
        f32::MIN_POSITIVE,
        TWO_TO_23,
        f32::INFINITY,
        f32::NEG_INFINITY,
        f32::NAN,
        f32::from_bits(MANTISSA_MASK),
        f32::from_bits(HALF_EXPONENT),
        f32::from_bits(126),
        f32::from_bits(126 + 23),
    ]);
    v
}

fn pool_flags() -> MemFlagsData {
    MemFlagsData::trusted().with_readonly()
}

/// The bits of a 32-bit word that hold its high bfloat16: masking a word of
/// two bfloat16 with them widens the high one to `f32`.
pub const BF16_HIGH_HALF: u32 = 0xffff_0000;

/// A vector of `c` in every lane: from the pool if it is there.
pub fn splat(b: &mut FunctionBuilder<'_>, k: Consts<'_>, c: f32) -> Value {
    splat_bits(b, k, c.to_bits(), F32X4)
}

/// A vector of `bits` in every lane, as `ty`: from the pool if it is there.
pub fn splat_bits(
    b: &mut FunctionBuilder<'_>,
    k: Consts<'_>,
    bits: u32,
    ty: cranelift_codegen::ir::Type,
) -> Value {
    if let Some(&(_, off)) = k.pool.iter().find(|(bb, _)| *bb == bits) {
        return b.ins().load(ty, pool_flags(), k.base, (off * 4) as i32);
    }
    let s = b.ins().f32const(f32::from_bits(bits));
    let v = b.ins().splat(F32X4, s);
    if ty == F32X4 {
        v
    } else {
        b.ins().bitcast(ty, lanes_flags(), v)
    }
}

pub(crate) fn lanes_flags() -> MemFlagsData {
    MemFlagsData::new().with_endianness(Endianness::Little)
}

/// `cond ? a : b`, lane by lane, for a mask from `fcmp`.
fn choose(b: &mut FunctionBuilder<'_>, mask: Value, a: Value, c: Value) -> Value {
    let m = b.ins().bitcast(F32X4, lanes_flags(), mask);
    b.ins().bitselect(m, a, c)
}

/// `hi < x ? hi : x`: keeps NaN. (Written so that x86 matches it to `minps`.)
fn clamp_hi(b: &mut FunctionBuilder<'_>, k: Consts<'_>, x: Value, hi: f32) -> Value {
    let h = splat(b, k, hi);
    let gt = b.ins().fcmp(FloatCC::LessThan, h, x);
    choose(b, gt, h, x)
}

/// `x < lo ? lo : x`: keeps NaN.
fn clamp_lo(b: &mut FunctionBuilder<'_>, k: Consts<'_>, x: Value, lo: f32) -> Value {
    let l = splat(b, k, lo);
    let lt = b.ins().fcmp(FloatCC::LessThan, x, l);
    choose(b, lt, l, x)
}

/// Horner's rule, highest coefficient first, one fused multiply-add a term.
fn poly(b: &mut FunctionBuilder<'_>, k: Consts<'_>, x: Value, coeffs: &[f32]) -> Value {
    let mut acc = splat(b, k, coeffs[0]);
    for &c in &coeffs[1..] {
        let kc = splat(b, k, c);
        acc = b.ins().fma(acc, x, kc);
    }
    acc
}

/// 2^n for integer lanes n in [-126, 128] (as f32 bits; 128 gives +inf).
fn pow2(b: &mut FunctionBuilder<'_>, k: Consts<'_>, n: Value) -> Value {
    let bias = splat_bits(b, k, 127, I32X4);
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
pub fn exp(b: &mut FunctionBuilder<'_>, k: Consts<'_>, x: Value) -> Value {
    exp_in(b, k, x, true)
}

/// e^x as `sigmoid` and `tanh` use it, where only its value in the normal range
/// matters (`1 / (1 + e^x)` is 0 whether e^x is 2^128 or infinite): the input is
/// clamped to [-87, 89] and 2^n applied as one factor (n in [-126, 128]; 2^128
/// comes out as the bits of +inf). Six instructions fewer than `exp`.
fn exp_normal(b: &mut FunctionBuilder<'_>, k: Consts<'_>, x: Value) -> Value {
    exp_in(b, k, x, false)
}

fn exp_in(b: &mut FunctionBuilder<'_>, k: Consts<'_>, x: Value, subnormals: bool) -> Value {
    let x = clamp_hi(b, k, x, 89.0);
    let x = clamp_lo(b, k, x, if subnormals { -104.0 } else { -87.0 });
    let l2e = splat(b, k, std::f32::consts::LOG2_E);
    let t = b.ins().fmul(x, l2e);
    // n = nearest(t), as a float and as an integer (|t| < 151).
    let magic = splat(b, k, ROUND_MAGIC);
    let tm = b.ins().fadd(t, magic);
    let n = b.ins().fsub(tm, magic);
    let tm_bits = b.ins().bitcast(I32X4, lanes_flags(), tm);
    let magic_bits = splat_bits(b, k, ROUND_MAGIC.to_bits(), I32X4);
    let ni = b.ins().isub(tm_bits, magic_bits);
    // r = x - n ln2, in two parts (n * LN2_HI is exact).
    let neg_hi = splat(b, k, -LN2_HI);
    let neg_lo = splat(b, k, -LN2_LO);
    let r = b.ins().fma(n, neg_hi, x);
    let r = b.ins().fma(n, neg_lo, r);
    // e^r = 1 + r + r^2 * P(r)
    let p = poly(b, k, r, &EXP_POLY);
    let r2 = b.ins().fmul(r, r);
    let one = splat(b, k, 1.0);
    let s = b.ins().fma(p, r2, r);
    let e = b.ins().fadd(s, one);
    if !subnormals {
        let scale = pow2(b, k, ni);
        return b.ins().fmul(e, scale);
    }
    let n1 = b.ins().sshr_imm_s(ni, 1);
    let n2 = b.ins().isub(ni, n1);
    let s1 = pow2(b, k, n1);
    let s2 = pow2(b, k, n2);
    let e = b.ins().fmul(e, s1);
    b.ins().fmul(e, s2)
}

/// 1 / (1 + e^-x). Its error is that of `exp`, scaled down by the division.
pub fn sigmoid(b: &mut FunctionBuilder<'_>, k: Consts<'_>, x: Value) -> Value {
    let nx = b.ins().fneg(x);
    let e = exp_normal(b, k, nx);
    let one = splat(b, k, 1.0);
    let d = b.ins().fadd(one, e);
    b.ins().fdiv(one, d)
}

/// tanh: for |x| < 0.625, Cephes' odd polynomial x + x^3 P(x^2) (accurate
/// relative to tiny results); above, 1 - 2 / (e^(2|x|) + 1) with x's sign.
pub fn tanh(b: &mut FunctionBuilder<'_>, k: Consts<'_>, x: Value) -> Value {
    let ax = b.ins().fabs(x);
    // Large branch.
    let two = splat(b, k, 2.0);
    let one = splat(b, k, 1.0);
    let a2 = b.ins().fmul(ax, two);
    let e = exp_normal(b, k, a2);
    let d = b.ins().fadd(e, one);
    let q = b.ins().fdiv(two, d);
    let big = b.ins().fsub(one, q);
    // Put x's sign on it: sign bit from x, the rest from `big`.
    let sign_mask = splat(b, k, -0.0);
    let big = b.ins().bitselect(sign_mask, x, big);
    // Small branch.
    let z = b.ins().fmul(x, x);
    let p = poly(b, k, z, &TANH_POLY);
    let pz = b.ins().fmul(p, z);
    let small = b.ins().fma(pz, x, x);
    let limit = splat(b, k, 0.625);
    let is_small = b.ins().fcmp(FloatCC::LessThan, ax, limit);
    choose(b, is_small, small, big)
}

/// max(x, 0), keeping NaN.
pub fn relu(b: &mut FunctionBuilder<'_>, k: Consts<'_>, x: Value) -> Value {
    let zero = splat(b, k, 0.0);
    let neg = b.ins().fcmp(FloatCC::LessThan, x, zero);
    choose(b, neg, zero, x)
}

/// 1 where `0 < x`, else 0 (NaN gives 0).
pub fn step(b: &mut FunctionBuilder<'_>, k: Consts<'_>, x: Value) -> Value {
    let zero = splat(b, k, 0.0);
    let one = splat(b, k, 1.0);
    let pos = b.ins().fcmp(FloatCC::LessThan, zero, x);
    choose(b, pos, one, zero)
}

/// The natural logarithm. x = m 2^e with m in [sqrt(1/2), sqrt(2)), then
/// log(m) from Cephes' polynomial in f = m - 1, and e ln2 added in two parts
/// (ln2's short high part times e is exact). Subnormal inputs are scaled by
/// 2^23 first. `log(0) = -inf`, `log(+inf) = +inf`; a negative input or NaN
/// gives NaN.
pub fn log(b: &mut FunctionBuilder<'_>, k: Consts<'_>, x: Value) -> Value {
    // Subnormals: scale into the normal range, and take 23 off the exponent.
    let tiny = splat(b, k, f32::MIN_POSITIVE);
    let is_tiny = b.ins().fcmp(FloatCC::LessThan, x, tiny);
    let scale = splat(b, k, TWO_TO_23);
    let scaled = b.ins().fmul(x, scale);
    let xs = choose(b, is_tiny, scaled, x);
    let bias = splat_bits(b, k, 126, I32X4);
    let bias_tiny = splat_bits(b, k, 126 + 23, I32X4);
    let mask_tiny = b.ins().bitcast(I32X4, lanes_flags(), is_tiny);
    let bias = b.ins().bitselect(mask_tiny, bias_tiny, bias);
    let bits = b.ins().bitcast(I32X4, lanes_flags(), xs);
    let biased = b.ins().ushr_imm_s(bits, 23);
    let e = b.ins().isub(biased, bias);
    let e = b.ins().fcvt_from_sint(F32X4, e);
    // m in [0.5, 1).
    let mantissa = splat_bits(b, k, MANTISSA_MASK, I32X4);
    let half = splat_bits(b, k, HALF_EXPONENT, I32X4);
    let m = b.ins().band(bits, mantissa);
    let m = b.ins().bor(m, half);
    let m = b.ins().bitcast(F32X4, lanes_flags(), m);
    // Below sqrt(1/2): f = 2m - 1 and e - 1; else f = m - 1.
    let one = splat(b, k, 1.0);
    let sqrt_half = splat(b, k, std::f32::consts::FRAC_1_SQRT_2);
    let low = b.ins().fcmp(FloatCC::LessThan, m, sqrt_half);
    let m2 = b.ins().fadd(m, m);
    let m = choose(b, low, m2, m);
    let f = b.ins().fsub(m, one);
    let e1 = b.ins().fsub(e, one);
    let e = choose(b, low, e1, e);
    // log(1 + f) = f - f^2/2 + f^3 P(f), plus e ln2.
    let z = b.ins().fmul(f, f);
    let p = poly(b, k, f, &LOG_POLY);
    let fz = b.ins().fmul(f, z);
    let y = b.ins().fmul(p, fz);
    let lo = splat(b, k, LN2_LO);
    let y = b.ins().fma(e, lo, y);
    let neg_half = splat(b, k, -0.5);
    let y = b.ins().fma(z, neg_half, y);
    let r = b.ins().fadd(f, y);
    let hi = splat(b, k, LN2_HI);
    let r = b.ins().fma(e, hi, r);
    // The special cases.
    let inf = splat(b, k, f32::INFINITY);
    let is_inf = b.ins().fcmp(FloatCC::Equal, x, inf);
    let r = choose(b, is_inf, inf, r);
    let zero = splat(b, k, 0.0);
    let is_zero = b.ins().fcmp(FloatCC::Equal, x, zero);
    let neg_inf = splat(b, k, f32::NEG_INFINITY);
    let r = choose(b, is_zero, neg_inf, r);
    let nan = splat(b, k, f32::NAN);
    let negative = b.ins().fcmp(FloatCC::LessThan, x, zero);
    let r = choose(b, negative, nan, r);
    let unordered = b.ins().fcmp(FloatCC::Unordered, x, x);
    choose(b, unordered, x, r)
}

/// log(1 + e^x), as max(x, 0) + log1p(e^-|x|); log1p(u) for u in (0, 1] is
/// log(w) * u / (w - 1) with w = 1 + u rounded (exact where w = 1: then it is
/// u), which cancels the rounding of w, so tiny results keep their relative
/// accuracy.
pub fn softplus(b: &mut FunctionBuilder<'_>, k: Consts<'_>, x: Value) -> Value {
    let ax = b.ins().fabs(x);
    let nax = b.ins().fneg(ax);
    let u = exp(b, k, nax);
    let one = splat(b, k, 1.0);
    let w = b.ins().fadd(one, u);
    let lw = log(b, k, w);
    let wm1 = b.ins().fsub(w, one);
    let ratio = b.ins().fdiv(u, wm1);
    let l = b.ins().fmul(lw, ratio);
    let exact = b.ins().fcmp(FloatCC::Equal, w, one);
    let l = choose(b, exact, u, l);
    let pos = relu(b, k, x);
    b.ins().fadd(pos, l)
}

/// Vector instructions the functions above emit for `op` (counted from their
/// bodies, constant loads included): the cost model's unit of element-wise work.
pub fn unary_cost(op: UnaryOp) -> f64 {
    match op {
        UnaryOp::Neg => 1.0,
        UnaryOp::Relu => 4.0,
        // 2 clamps (3 each), 24 for the reduction, polynomial and scaling.
        UnaryOp::Exp => 32.0,
        // exp_normal (26) + negate, add, divide (a division costs several slots).
        UnaryOp::Sigmoid => 34.0,
        // exp_normal + the large branch (7) + the small branch (14) + the select.
        UnaryOp::Tanh => 52.0,
        UnaryOp::Abs => 1.0,
        // A square root occupies the divider, like a division.
        UnaryOp::Sqrt => 4.0,
        // Scaling (6), decomposition (12), polynomial (12), specials (12).
        UnaryOp::Log => 44.0,
        // exp + log + a division and the selects.
        UnaryOp::Softplus => 86.0,
        // A compare, a constant and a select.
        UnaryOp::Step => 3.0,
    }
}

/// As [`unary_cost`], for a binary operation (a division costs several slots).
pub fn binary_cost(op: BinaryOp) -> f64 {
    match op {
        BinaryOp::Div => 4.0,
        // NaN-propagating min and max take a few instructions on x86-64.
        BinaryOp::Min | BinaryOp::Max => 4.0,
        _ => 1.0,
    }
}

pub fn unary(b: &mut FunctionBuilder<'_>, k: Consts<'_>, op: UnaryOp, x: Value) -> Value {
    match op {
        UnaryOp::Neg => b.ins().fneg(x),
        UnaryOp::Sigmoid => sigmoid(b, k, x),
        UnaryOp::Tanh => tanh(b, k, x),
        UnaryOp::Relu => relu(b, k, x),
        UnaryOp::Exp => exp(b, k, x),
        UnaryOp::Abs => b.ins().fabs(x),
        UnaryOp::Sqrt => b.ins().sqrt(x),
        UnaryOp::Log => log(b, k, x),
        UnaryOp::Softplus => softplus(b, k, x),
        UnaryOp::Step => step(b, k, x),
    }
}

pub fn binary(b: &mut FunctionBuilder<'_>, op: BinaryOp, x: Value, y: Value) -> Value {
    match op {
        BinaryOp::Add => b.ins().fadd(x, y),
        BinaryOp::Sub => b.ins().fsub(x, y),
        BinaryOp::Mul => b.ins().fmul(x, y),
        BinaryOp::Div => b.ins().fdiv(x, y),
        BinaryOp::Min => b.ins().fmin(x, y),
        BinaryOp::Max => b.ins().fmax(x, y),
    }
}

/// A scalar constant for a region body.
pub fn constant(b: &mut FunctionBuilder<'_>, k: Consts<'_>, c: f64) -> Value {
    splat(b, k, c as f32)
}
