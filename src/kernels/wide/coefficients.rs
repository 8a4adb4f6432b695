//! The constants of the vector math's approximations (exp, tanh, log and
//! their range reductions), shared by the code generator's 128-bit functions
//! (`codegen::vecmath`) and the wide kernels (`math`): one table, so the two
//! cannot drift apart and compute different bits.

/// Cephes' `logf` polynomial: log(1 + f) = f - f^2/2 + f^3 P(f) for f in
/// [sqrt(1/2) - 1, sqrt(2) - 1].
pub(crate) const LOG_POLY: [f32; 9] = [
    7.037_683_6e-2,
    -1.151_461e-1,
    1.167_699_9e-1,
    -1.242_014_1e-1,
    1.424_932_3e-1,
    -1.666_805_8e-1,
    2.000_071_4e-1,
    -2.499_999_4e-1,
    3.333_333e-1,
];
pub(crate) const TWO_TO_23: f32 = 8_388_608.0;
pub(crate) const MANTISSA_MASK: u32 = 0x007f_ffff;
/// The exponent bits of 0.5: a mantissa or'ed with them is in [0.5, 1).
pub(crate) const HALF_EXPONENT: u32 = 0x3f00_0000;

pub(crate) const LN2_HI: f32 = 0.693_359_4;
pub(crate) const LN2_LO: f32 = -2.121_944_4e-4;
/// 1.5 * 2^23: adding it to a float of magnitude below 2^22 rounds it to an
/// integer (to nearest, ties to even, like `nearest`) held in the low mantissa
/// bits, so one add gives both the rounded float (subtract it back) and, from
/// the bits, the integer.
pub(crate) const ROUND_MAGIC: f32 = 12_582_912.0;
pub(crate) const EXP_POLY: [f32; 6] = [
    1.987_569_1e-4,
    1.398_199_9e-3,
    8.333_452e-3,
    4.166_579_6e-2,
    1.666_666_5e-1,
    0.5,
];
pub(crate) const TANH_POLY: [f32; 5] = [
    -5.704_988_7e-3,
    2.063_909e-2,
    -5.373_971_6e-2,
    1.333_144_2e-1,
    -3.333_328e-1,
];
