//! ONNX Runtime's `DynamicQuantizeLSTM`: its int8 or uint8 matrices, scales and
//! zero points, dequantized into the `LSTM`'s layout.

use super::graph::{int8s, Ctx, Values};
use super::proto::err;
use crate::weights::WeightsError;

/// A `DynamicQuantizeLSTM` matrix (`W` or `R`): int8 or uint8 values
/// `[D, K, 4H]` (transposed against `LSTM`'s), a scale per direction `[D]`
/// or per output row `[D, 4H]`, and a zero point of the same shape (zero if
/// absent); as `LSTM` stores it, `[D, 4H, K]`, each value `(q - zero_point)
/// * scale`.
pub(super) fn dequantized(
    cx: &mut Ctx,
    values: &str,
    scale: &str,
    zero_point: &str,
    what: &str,
    desc: &str,
    directions: usize,
) -> Result<Option<Values>, WeightsError> {
    let name = format!("{what} of {desc}");
    let Some(k) = cx.stored(values, &name)? else {
        return Ok(None);
    };
    let (shape, q) = int8s(k, &name)?;
    let &[d, k, rows] = shape.as_slice() else {
        return err(format!(
            "{name} is {shape:?}; expected [{directions}, K, 4*hidden_size]"
        ));
    };
    let scale_name = format!("{what}_scale of {desc}");
    let Some((s_shape, s)) = cx.stored_floats(scale, &scale_name)? else {
        return err(format!("{desc} has no {what}_scale"));
    };
    let per_row = if s_shape == [d, rows] {
        true
    } else if s_shape == [d] || (d == 1 && s.len() == 1 && s_shape.len() <= 1) {
        false
    } else {
        return err(format!(
            "{scale_name} is {s_shape:?}; expected [{d}] or [{d}, {rows}]"
        ));
    };
    if let Some(bad) = s.iter().find(|v| !v.is_finite() || **v < 0.0) {
        return err(format!(
            "{scale_name} holds {bad}; a scale is finite and not negative"
        ));
    }
    let zp_name = format!("{what}_zero_point of {desc}");
    let zp = match cx.stored(zero_point, &zp_name)? {
        None => vec![0; s.len()],
        Some(zt) => {
            let (z_shape, z) = int8s(zt, &zp_name)?;
            if z.len() != s.len() {
                return err(format!(
                    "{zp_name} is {z_shape:?}; expected the shape of {what}_scale, {s_shape:?}"
                ));
            }
            z
        }
    };
    let mut out = vec![0.0f32; d * rows * k];
    for dd in 0..d {
        for j in 0..rows {
            let at = if per_row { dd * rows + j } else { dd };
            for i in 0..k {
                let v = q[(dd * k + i) * rows + j] - zp[at];
                out[(dd * rows + j) * k + i] = v as f32 * s[at];
            }
        }
    }
    Ok(Some((vec![d, rows, k], out)))
}
