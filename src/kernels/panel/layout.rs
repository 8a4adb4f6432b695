//! The packed layout of a product's weights: float32 in panels of
//! [`PANEL`] rows, `k`-major; bf16 and int8 in groups of two panels, with
//! int8's row scales after them. Packed once, when a cell is compiled; the
//! tiles read nothing else.

use super::PANEL;
use crate::ir::Precision;

/// Floats the panels of an `[m, k]` matrix take.
pub fn panels_len(m: usize, k: usize) -> Option<usize> {
    m.div_ceil(PANEL).checked_mul(PANEL)?.checked_mul(k)
}

/// Weight rows per *group*, the unit of the narrow (bf16, int8) layout: two
/// panels side by side, so that a tile of two panels reads one stream of
/// memory (measured: two streams 16 KiB apart read at half the speed from
/// L3 on Zen 3). The `gemm` units of rows are whole groups.
pub const GROUP: usize = 2 * PANEL;

/// Floats of packed weights an `[m, k]` matrix takes when its values are
/// stored at `precision`: f32 in panels ([`panels_len`]); narrow, in groups
/// ([`group_bytes`], the whole rounded up to 64 bytes), then, for int8, one
/// scale per row ([`scales_at`]), padded to whole groups.
pub fn stored_len(m: usize, k: usize, precision: Precision) -> Option<usize> {
    match precision {
        Precision::F32 => panels_len(m, k),
        Precision::Bf16 => scales_at(m, k),
        Precision::Int8 => scales_at(m, k)?.checked_add(m.div_ceil(GROUP) * GROUP),
    }
}

/// Bytes of one group (32 rows, `k` columns) at a narrow `precision`,
/// column after column. An int8 column is its 32 rows' bytes. bf16 columns
/// go in pairs: for each pair `(c, c + 1)` (`c` even), 32 words, word `r`
/// holding row `r`'s value of column `c` in its low half and of column
/// `c + 1` in its high half (zero past `k`), so that one load gives both
/// columns, widened by a shift and a mask, with no shuffle.
pub fn group_bytes(k: usize, precision: Precision) -> Option<usize> {
    let columns = match precision {
        Precision::Bf16 => k.checked_next_multiple_of(2)?,
        _ => k,
    };
    GROUP.checked_mul(columns)?.checked_mul(precision.bytes())
}

/// Where a narrow matrix's row scales (int8) start, in floats from its
/// values: the groups' bytes rounded up to 64.
pub fn scales_at(m: usize, k: usize) -> Option<usize> {
    let bytes = m
        .div_ceil(GROUP)
        .checked_mul(group_bytes(k, Precision::Bf16)?.max(group_bytes(k, Precision::Int8)?))?;
    // (bf16's size bounds int8's: one size for both keeps this simple.)
    Some(bytes.div_ceil(64) * 16)
}

/// Packs the row-major `[m, k]` matrix `w` at `precision` ([`crate::quant`]
/// says how it is rounded) into `out` ([`stored_len`] floats): panels as
/// [`pack`] lays them out, each value in its precision's bytes (native byte
/// order), then int8's row scales.
pub fn pack_at(w: &[f32], m: usize, k: usize, precision: Precision, out: &mut [f32]) {
    assert_eq!(
        Some(out.len()),
        stored_len(m, k, precision),
        "panel::pack_at: output of the wrong size"
    );
    if precision == Precision::F32 {
        return pack(w, m, k, out);
    }
    assert_eq!(w.len(), m * k, "panel::pack_at: matrix of the wrong size");
    let group = group_bytes(k, precision).unwrap_or(0);
    let mut bytes = vec![0u8; m.div_ceil(GROUP) * group];
    let at = |r: usize, c: usize| r / GROUP * group + c * GROUP + r % GROUP;
    match precision {
        Precision::Bf16 => {
            for r in 0..m {
                for c in 0..k {
                    let b = crate::quant::bf16_bits(w[r * k + c]).to_ne_bytes();
                    let word = r / GROUP * group + (c / 2 * GROUP + r % GROUP) * 4;
                    let at = word
                        + if cfg!(target_endian = "little") {
                            2 * (c % 2)
                        } else {
                            2 - 2 * (c % 2)
                        };
                    bytes[at..at + 2].copy_from_slice(&b);
                }
            }
        }
        _ => {
            let (q, scales) = crate::quant::int8_rows(w, k);
            for r in 0..m {
                for c in 0..k {
                    bytes[at(r, c)] = q[r * k + c] as u8;
                }
            }
            let s0 = scales_at(m, k).unwrap_or(0);
            // (No rows of values when `k` is 0: their scales stay 0.)
            out[s0..s0 + scales.len()].copy_from_slice(&scales);
        }
    }
    for (f, b) in out.iter_mut().zip(bytes.chunks(4)) {
        let mut word = [0u8; 4];
        word[..b.len()].copy_from_slice(b);
        *f = f32::from_ne_bytes(word);
    }
}

/// Packs the row-major `[m, k]` matrix `w` into panels (`out` holds
/// [`panels_len`] floats).
pub fn pack(w: &[f32], m: usize, k: usize, out: &mut [f32]) {
    assert_eq!(w.len(), m * k, "panel::pack: matrix of the wrong size");
    assert_eq!(
        Some(out.len()),
        panels_len(m, k),
        "panel::pack: output of the wrong size"
    );
    out.fill(0.0);
    for r in 0..m {
        let (p, lane) = (r / PANEL, r % PANEL);
        for c in 0..k {
            out[(p * k + c) * PANEL + lane] = w[r * k + c];
        }
    }
}
