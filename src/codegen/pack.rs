//! Weight packing: fills the packed weights of a [`Plan`] from the cell's
//! parameters, once per compiled kernel (never per step). The layout is
//! documented on [`ProductGroup`]: tile after tile, chunk after chunk, folded
//! biases then one forward sweep per input segment.

use super::plan::{Plan, ProductGroup, LANES};
use crate::ir::ParamId;
use crate::ir::{Cell, Precision, Type};

/// Writes the packed weights into `out` (`plan.weights_len` floats, zeroed by the
/// caller). `params[k]` holds parameter `k` row-major, with the length its type
/// says (the caller checked).
///
/// Parameters stored narrow ([`crate::ir::Precision`]) are packed as the
/// kernels read them: the panels of the micro-kernels and of the panel
/// kernels in their narrow form, every other copy (a segment that mixes
/// precisions, the hoisted projection's matrices, biases) as the `f32` values
/// the narrow form stands for ([`crate::quant::effective`]), so that every
/// plan computes with the same weights.
pub fn pack(plan: &Plan, cell: &Cell, raw: &[Vec<f32>], out: &mut [f32]) {
    let effective = crate::quant::effective_params(cell, raw);
    let params = effective.as_slice();
    let mut narrow = NarrowParams {
        raw,
        cache: vec![None; raw.len()],
    };
    for &(bits, off) in &plan.consts {
        out[off..off + LANES].fill(f32::from_bits(bits));
    }
    for task in &plan.tasks {
        if let super::plan::Task::Product(groups) = task {
            for g in groups {
                pack_group(g, cell, params, &mut narrow, out);
            }
        }
    }
    for v in &plan.vectors {
        let data = &params[v.param.index()];
        out[v.offset..v.offset + data.len()].copy_from_slice(data);
    }
    for v in &plan.matrices {
        let data = &params[v.param.index()];
        let (rows, cols) = match cell.params[v.param.index()].ty {
            Type::Matrix(r, c) => (r, c),
            _ => (data.len(), 1),
        };
        for r in 0..rows {
            for c in 0..cols {
                out[v.offset + super::plan::unit_major(r, c, cols)] = data[r * cols + c];
            }
        }
    }
    for v in &plan.panels {
        let p = &cell.params[v.param.index()];
        if let Type::Matrix(m, k) = p.ty {
            let n = crate::kernels::panel::stored_len(m, k, p.precision).unwrap_or(0);
            crate::kernels::panel::pack_at(
                &raw[v.param.index()],
                m,
                k,
                p.precision,
                &mut out[v.offset..v.offset + n],
            );
        }
    }
    for &(offset, param, k) in &plan.spectra {
        if let Type::Matrix(r, c) = cell.params[param.index()].ty {
            let n = crate::kernels::spectral::weights_len(r, c, k).unwrap_or(0);
            crate::kernels::spectral::pack_weights(
                &params[param.index()],
                r,
                c,
                k,
                &mut out[offset..offset + n],
            );
        }
    }
    for &(offset, k, inverse) in &plan.transforms {
        let m = if inverse {
            crate::kernels::spectral::inverse_matrix(k)
        } else {
            crate::kernels::spectral::forward_matrix(k)
        };
        let n = crate::kernels::panel::stored_len(k, k, Precision::F32).unwrap_or(0);
        crate::kernels::panel::pack(&m, k, k, &mut out[offset..offset + n]);
    }
    for (offset, ps, len) in &plan.bias_sums {
        for row in 0..*len {
            let sum: f64 = ps.iter().map(|&p| params[p.index()][row] as f64).sum();
            out[offset + row] = sum as f32;
        }
    }
}

fn cols(cell: &Cell, param: ParamId) -> usize {
    match cell.params[param.index()].ty {
        Type::Matrix(_, c) => c,
        _ => 1,
    }
}

/// A parameter's narrow values, as the micro-kernels' panels hold them.
#[derive(Clone)]
enum Narrow {
    Bf16(Vec<u16>),
    /// The values and each row's scale.
    Int8(Vec<i8>, Vec<f32>),
}

/// The narrow form of each parameter a panel asks for, computed once.
struct NarrowParams<'a> {
    raw: &'a [Vec<f32>],
    cache: Vec<Option<Narrow>>,
}

impl NarrowParams<'_> {
    fn get(&mut self, cell: &Cell, param: ParamId, precision: Precision) -> &Narrow {
        let i = param.index();
        let raw = &self.raw[i];
        self.cache[i].get_or_insert_with(|| match precision {
            Precision::Int8 => {
                let (q, scales) = crate::quant::int8_rows(raw, cols(cell, param));
                Narrow::Int8(q, scales)
            }
            Precision::Bf16 => {
                Narrow::Bf16(raw.iter().map(|&v| crate::quant::bf16_bits(v)).collect())
            }
            // `pack_group` packs f32 segments from the effective values.
            Precision::F32 => unreachable!("no narrow form of an f32 parameter"),
        })
    }
}

/// Writes `byte` at byte `at` of `out` (in memory order, as the kernels'
/// byte loads read it).
fn put_byte(out: &mut [f32], at: usize, byte: u8) {
    let mut word = out[at / 4].to_ne_bytes();
    word[at % 4] = byte;
    out[at / 4] = f32::from_ne_bytes(word);
}

fn pack_group(
    g: &ProductGroup,
    cell: &Cell,
    params: &[std::borrow::Cow<'_, [f32]>],
    narrow: &mut NarrowParams<'_>,
    out: &mut [f32],
) {
    for t in 0..g.tiles {
        let base = g.weights_offset + t * g.tile_stride;
        let rows = (t * LANES)..((t + 1) * LANES).min(g.len);
        for ch in &g.chunks {
            if let Some(bo) = ch.bias_offset {
                for (c, ps) in ch.bias_params.iter().enumerate() {
                    for (lane, row) in rows.clone().enumerate() {
                        // Summed in f64, rounded once.
                        let sum: f64 = ps.iter().map(|&p| params[p.index()][row] as f64).sum();
                        out[base + bo + c * LANES + lane] = sum as f32;
                    }
                }
            }
            for seg in &ch.segments {
                let np = seg.weights.len();
                let start = base + seg.offset;
                for (pi, &param) in seg.weights.iter().enumerate() {
                    let ncols = cols(cell, param);
                    if seg.precision == Precision::F32 {
                        let w = &params[param.index()];
                        for k in 0..seg.k {
                            let at = start + (k * np + pi) * LANES;
                            for (lane, row) in rows.clone().enumerate() {
                                out[at + lane] = w[row * ncols + k];
                            }
                        }
                        continue;
                    }
                    match narrow.get(cell, param, seg.precision) {
                        Narrow::Bf16(w) => {
                            for k in 0..seg.k {
                                let at = start + (k / 2 * np + pi) * LANES;
                                for (lane, row) in rows.clone().enumerate() {
                                    let half = (w[row * ncols + k] as u32) << (16 * (k % 2));
                                    let word = out[at + lane].to_bits() | half;
                                    out[at + lane] = f32::from_bits(word);
                                }
                            }
                        }
                        Narrow::Int8(q, scales) => {
                            for (lane, row) in rows.clone().enumerate() {
                                out[start + pi * LANES + lane] = scales[row];
                            }
                            let values = (start + np * LANES) * 4;
                            for k in 0..seg.k {
                                let at = values + (k / 2 * np + pi) * 2 * LANES + k % 2 * LANES;
                                for (lane, row) in rows.clone().enumerate() {
                                    put_byte(out, at + lane, q[row * ncols + k] as u8);
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}
