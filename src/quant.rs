//! Narrow weights: how a parameter stored in bfloat16 or int8 is rounded.
//!
//! A batch-1 step reads every weight once and does two FLOPs with it, so it
//! runs at the speed of the memory the weights come from; storing them in
//! fewer bytes is the only way past that floor. Arithmetic stays `f32`: the
//! kernels widen each weight in registers. This module is the one definition of
//! the rounding, used by the packer (which stores the narrow values) and by
//! every reader that wants the values the kernels compute with
//! ([`effective_params`]: the interpreter, the hoisted projection's `f32`
//! copies, biases), so that the JIT and the interpreter see the same numbers.
//!
//! - **bf16**: the top 16 bits of the `f32`, rounded to nearest, ties to even
//!   (NaN stays NaN). Widening is exact.
//! - **int8**: per row (a matrix's output row; a vector is one row), the scale
//!   `s = max |w| / 127` and `q = round(w / s)` in `-127..=127` (symmetric, no
//!   zero point). The kernels multiply each row's `sum q x` by `s`; the
//!   effective weight is `q * s`. A row of zeros has scale 0.

use std::borrow::Cow;

use crate::ir::{Cell, Precision, Type};

/// The bfloat16 nearest to `v` (ties to even), as its bits.
pub(crate) fn bf16_bits(v: f32) -> u16 {
    let bits = v.to_bits();
    if v.is_nan() {
        // Keep it a NaN whatever its payload: set the quiet bit.
        return ((bits >> 16) | 0x40) as u16;
    }
    let round = 0x7fff + ((bits >> 16) & 1);
    (bits.wrapping_add(round) >> 16) as u16
}

/// The `f32` a bfloat16 stands for (exact).
pub(crate) fn from_bf16(b: u16) -> f32 {
    f32::from_bits((b as u32) << 16)
}

/// `v` rounded to bfloat16 and widened back.
pub fn round_bf16(v: f32) -> f32 {
    from_bf16(bf16_bits(v))
}

/// A row's int8 scale: `max |w| / 127`, or `None` when a value is not finite
/// (NaN or infinite: no scale represents it).
pub(crate) fn int8_scale(row: &[f32]) -> Option<f32> {
    let mut max = 0.0f32;
    for &v in row {
        if !v.is_finite() {
            return None;
        }
        max = max.max(v.abs());
    }
    Some(max / 127.0)
}

/// `v` quantized with `scale` (0 for a zero scale).
pub(crate) fn int8_value(v: f32, scale: f32) -> i8 {
    if scale == 0.0 {
        0
    } else {
        (v / scale).round().clamp(-127.0, 127.0) as i8
    }
}

/// The rows (of `cols` values) of `w` in int8, and each row's scale. Call
/// `check` first: a row with a value that is not finite gets scale 0.
pub fn int8_rows(w: &[f32], cols: usize) -> (Vec<i8>, Vec<f32>) {
    let cols = cols.max(1);
    let mut q = Vec::with_capacity(w.len());
    let mut scales = Vec::with_capacity(w.len() / cols);
    for row in w.chunks(cols) {
        let s = int8_scale(row).unwrap_or(0.0);
        scales.push(s);
        q.extend(row.iter().map(|&v| int8_value(v, s)));
    }
    (q, scales)
}

/// Values per row of a parameter of type `ty` for int8 scales: a matrix's
/// columns; a vector (or number) is one row.
pub(crate) fn row_len(ty: Type, len: usize) -> usize {
    match ty {
        Type::Matrix(_, c) => c,
        _ => len,
    }
}

/// The values the kernels compute with for a parameter stored at `precision`.
pub(crate) fn effective(values: &[f32], ty: Type, precision: Precision) -> Cow<'_, [f32]> {
    match precision {
        Precision::F32 => Cow::Borrowed(values),
        Precision::Bf16 => Cow::Owned(values.iter().map(|&v| round_bf16(v)).collect()),
        Precision::Int8 => {
            let cols = row_len(ty, values.len());
            let (q, scales) = int8_rows(values, cols);
            Cow::Owned(
                q.iter()
                    .enumerate()
                    .map(|(i, &q)| q as f32 * scales[i / cols.max(1)])
                    .collect(),
            )
        }
    }
}

/// Every parameter of `cell` as the kernels compute with it (`params[k]`
/// holds parameter `k`): what the interpreter must be given to check a
/// kernel with narrow weights.
pub fn effective_params<'a>(cell: &Cell, params: &'a [Vec<f32>]) -> Vec<Cow<'a, [f32]>> {
    cell.params
        .iter()
        .zip(params)
        .map(|(p, v)| effective(v, p.ty, p.precision))
        .collect()
}

/// Refuses a parameter that its precision cannot store: an int8 row holding
/// NaN or an infinity, a finite value beyond bf16's range (which would round
/// to an infinity: a different number, not a rounded one). The message names
/// the parameter and the row or element.
pub(crate) fn check(cell: &Cell, params: &[Vec<f32>]) -> Result<(), String> {
    for (p, v) in cell.params.iter().zip(params) {
        if p.precision == Precision::Bf16 {
            if let Some(i) =
                (0..v.len()).find(|&i| v[i].is_finite() && round_bf16(v[i]).is_infinite())
            {
                return Err(format!(
                    "parameter `{}` is stored in bf16, but its element {i} ({:e}) is beyond bf16's range (about ±3.39e38) and would become infinite",
                    p.name, v[i]
                ));
            }
            continue;
        }
        if p.precision != Precision::Int8 {
            continue;
        }
        let cols = row_len(p.ty, v.len()).max(1);
        for (r, row) in v.chunks(cols).enumerate() {
            let Some(scale) = int8_scale(row) else {
                return Err(format!(
                    "parameter `{}` is stored in int8, but its row {r} holds a value that is not finite (NaN or infinite), which no int8 scale represents",
                    p.name
                ));
            };
            // The row's largest value comes back as 127 * scale, which may
            // round beyond f32's range (f32::MAX does): an infinity where
            // the checkpoint has a number.
            if (127.0 * scale).is_infinite() {
                let max = row.iter().fold(0.0f32, |m, v| m.max(v.abs()));
                return Err(format!(
                    "parameter `{}` is stored in int8, but its row {r} holds {max:e}, whose int8 value would come back infinite",
                    p.name
                ));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bf16_rounds_to_nearest_even() {
        assert_eq!(round_bf16(1.0), 1.0);
        // 1 + 2^-8 is halfway between 1 and 1 + 2^-7: ties to even (1.0).
        assert_eq!(round_bf16(1.0 + 1.0 / 256.0), 1.0);
        // 1 + 3 * 2^-8 is halfway between 1 + 2^-7 and 1 + 2^-6: even is 1 + 2^-6.
        assert_eq!(round_bf16(1.0 + 3.0 / 256.0), 1.0 + 1.0 / 64.0);
        assert_eq!(round_bf16(1.0 + 1.0 / 256.0 + 1e-6), 1.0 + 1.0 / 128.0);
        assert_eq!(round_bf16(-2.5), -2.5);
        assert!(round_bf16(f32::NAN).is_nan());
        assert_eq!(round_bf16(f32::INFINITY), f32::INFINITY);
        assert_eq!(round_bf16(f32::MAX), f32::INFINITY);
        for v in [0.1f32, -3.7, 1e-30, 123456.0] {
            assert!((round_bf16(v) - v).abs() <= v.abs() / 256.0, "{v}");
        }
    }

    #[test]
    fn int8_rows_are_symmetric_per_row() {
        let w = [1.0f32, -0.5, 0.25, 0.0, 0.0, 0.0, -2.0, 1.0, 0.01];
        let (q, s) = int8_rows(&w, 3);
        assert_eq!(s, vec![1.0 / 127.0, 0.0, 2.0 / 127.0]);
        assert_eq!(&q[..3], &[127, -64, 32]);
        assert_eq!(&q[3..6], &[0, 0, 0]);
        assert_eq!(&q[6..], &[-127, 64, 1]);
        let e = effective(&w, Type::Matrix(3, 3), Precision::Int8);
        for (a, b) in e.iter().zip(&w) {
            assert!((a - b).abs() <= 2.0 / 127.0 / 2.0 + 1e-7, "{a} {b}");
        }
    }
}
