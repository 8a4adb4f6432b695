//! Matrix products over weights packed once, at the host's full vector width.
//!
//! The batched products of a step (`Task::Gemm`) compute, for a block of
//! weight rows and every batch row `b`, `dst[b][r] += sum_k W[r][k] x[b][k]`.
//! The `gemm` crate repacked `W` on every call (39 % of an LSTM step at H =
//! 512, batch 64); here `W` is packed once, when the cell is compiled, into
//! *panels* of [`PANEL`] rows: panel `p` holds rows `16p .. 16p + 16`, stored
//! `k`-major (the 16 weights of column `k` side by side), the last panel
//! padded with zero rows. A micro-kernel keeps a tile of `dst` (some batch
//! rows by one or two panels of weight rows) in vector registers, sweeps `k`
//! once, broadcasting `x[b][k]` and multiplying it into the panel's vectors
//! with fused multiply-adds, starting from where the product says
//! ([`Start`]: `dst`'s values, zero, the bias row itself, or the projected
//! inputs, so that no copy into `dst` comes first), and stores the tile back.
//! `k` runs in blocks of [`KC`] columns, each swept by every group of batch
//! rows while its weights are in L1; a tile's chains continue from block to
//! block.
//!
//! Kernels (`tiles`, written once over `kernels::simd`): AVX-512F (up to 12
//! batch rows by 32 weight rows: 24 accumulators), AVX2 + FMA and NEON (up
//! to 6 by 16), and portable scalar code (`scalar`); [`Isa::detect`] picks
//! the widest the host has. One or two batch rows by
//! one or two panels are too few chains to hide the FMA latency (two chains
//! of a 4-cycle FMA keep one of two FMA units a quarter busy), so such short
//! tiles span up to [`SHORT_PANELS`] panels. The batch rows are shared
//! evenly among the tiles, and each row count is a kernel of its own (its
//! accumulators stay in registers). Every kernel computes each result with
//! one chain of fused multiply-adds in `k` order, from its start: the same
//! operations whatever the tile shape, so the result of an
//! element does not depend on which batch rows or threads share its tile (but
//! does depend on the kernel: the scalar one rounds like the vector ones only
//! where the target has a fused multiply-add, which `f32::mul_add` gives).

mod layout;
mod scalar;
mod tiles;

pub use layout::{group_bytes, pack, pack_at, panels_len, scales_at, stored_len, GROUP};

use crate::ir::Precision;
use crate::kernels::Isa;

/// Weight rows per panel.
pub const PANEL: usize = 16;

/// Panels of weight rows stored at some precision: the first panel's first
/// value, and for int8 the first row's scale.
#[derive(Clone, Copy, Debug)]
pub struct Panels {
    pub values: *const u8,
    pub precision: Precision,
    /// Int8 only (then `m` floats, one per row).
    pub scales: *const f32,
}

/// As [`product`], the matrix stored at `precision` by [`pack_at`]
/// (`stored` holds [`stored_len`] floats). Each result is one chain of fused
/// multiply-adds per block of [`KC`] columns: for bf16 continuing from
/// `dst` as f32 does; for int8 from zero, the block's sum times the row's
/// scale then added to `dst` with one fused multiply-add. Checks every
/// bound.
#[allow(clippy::too_many_arguments)]
pub fn product_at(
    isa: Isa,
    precision: Precision,
    stored: &[f32],
    m: usize,
    k: usize,
    x: &[f32],
    x_stride: usize,
    batch: usize,
    dst: &mut [f32],
    dst_stride: usize,
) {
    assert!(
        stored_len(m, k, precision).is_some_and(|n| n <= stored.len()),
        "panel::product_at: panels too short"
    );
    if precision == Precision::F32 {
        return product(isa, stored, m, k, x, x_stride, batch, dst, dst_stride);
    }
    assert!(
        isa.available(),
        "panel::product_at: {} is not available",
        isa.name()
    );
    if m == 0 || batch == 0 {
        return;
    }
    let last = |rows: usize, stride: usize, len: usize| {
        (rows - 1)
            .checked_mul(stride)
            .and_then(|a| a.checked_add(len))
    };
    assert!(
        k == 0 || last(batch, x_stride, k).is_some_and(|n| n <= x.len()),
        "panel::product_at: x too short"
    );
    assert!(
        last(batch, dst_stride, m).is_some_and(|n| n <= dst.len()),
        "panel::product_at: dst too short"
    );
    let panels = Panels {
        values: stored.as_ptr().cast(),
        precision,
        scales: stored.as_ptr().wrapping_add(scales_at(m, k).unwrap_or(0)),
    };
    // SAFETY: the asserts above bound every access, as `product` does; the
    // scales follow the values as `pack_at` put them.
    unsafe {
        product_narrow(
            isa,
            panels,
            m,
            k,
            x.as_ptr(),
            x_stride,
            batch,
            dst.as_mut_ptr(),
            dst_stride,
        )
    }
}

/// Most groups a narrow tile holds.
const NARROW_GROUPS: usize = 2;

/// What a narrow tile reads where its matrix has no group: zeros, enough for
/// a block of [`KC`] columns of any narrow precision.
static ZEROS: [u32; KC * GROUP / 2] = [0; KC * GROUP / 2];

/// Groups and batch rows per narrow tile on `isa`: at batch 1 a tile's
/// vectors of rows (two chains each) are its independent chains of fused
/// multiply-adds, which must be enough to hide their latency behind the
/// widening. (NEON: one group by one row, 16 rows at a time.)
pub fn narrow_tile_shape(isa: Isa) -> (usize, usize) {
    match isa {
        Isa::Avx512 => (2, 4),
        Isa::Avx2 => (1, 2),
        Isa::Scalar | Isa::Neon => (1, 1),
    }
}

/// As [`product_raw`], the matrix in narrow groups (bf16 or int8).
///
/// # Safety
/// As [`product_raw`]: `panels.values` holds the groups of `m` rows and `k`
/// columns at `panels.precision` (`m.div_ceil(GROUP)` of [`group_bytes`]),
/// and for int8 `panels.scales` holds `m` floats.
#[allow(clippy::too_many_arguments)]
pub unsafe fn product_narrow(
    isa: Isa,
    panels: Panels,
    m: usize,
    k: usize,
    x: *const f32,
    x_stride: usize,
    batch: usize,
    dst: *mut f32,
    dst_stride: usize,
) {
    let (ng, mr) = narrow_tile_shape(isa);
    let bytes = panels.precision.bytes();
    let group = group_bytes(k, panels.precision).unwrap_or(0);
    let total = m.div_ceil(GROUP);
    let mut p = 0;
    while p < total {
        let width = ng.min(total - p);
        let rows = (m - p * GROUP).min(width * GROUP);
        let mut k0 = 0;
        while k0 < k {
            let kc = (k - k0).min(KC);
            let mut w = [ZEROS.as_ptr().cast::<u8>(); NARROW_GROUPS];
            for (q, w) in w.iter_mut().enumerate().take(width) {
                // (`k0` is a multiple of `KC`, even: a whole bf16 pair.)
                *w = panels
                    .values
                    .wrapping_add((p + q) * group + k0 * GROUP * bytes);
            }
            let mut b = 0;
            while b < batch {
                let nb = (batch - b).min(mr);
                let tile = Tile {
                    ptr: dst.wrapping_add(b * dst_stride + p * GROUP),
                    stride: dst_stride,
                    rows,
                    from: Start::Dst.at(b, p * GROUP, dst, dst_stride),
                };
                // SAFETY: groups `p..p + width` exist with columns `k0..k0 +
                // kc`; the others read `ZEROS` (`KC` columns); rows `b..b +
                // nb` of `x` and of the tile, as the caller guarantees.
                unsafe {
                    tiles::narrow(
                        isa,
                        panels.precision,
                        w,
                        panels.scales.wrapping_add(p * GROUP),
                        kc,
                        x.wrapping_add(b * x_stride + k0),
                        x_stride,
                        nb,
                        &tile,
                    )
                };
                b += nb;
            }
            k0 += kc;
        }
        p += width;
    }
}

/// `dst[b * dst_stride + r] += sum_c W[r][c] * x[b * x_stride + c]` (one
/// chain of fused multiply-adds from `dst`'s value, in `c` order) for weight
/// rows `r < m` and batch rows `b < batch`, `W` packed by [`pack`]. Checks
/// every bound, and that `isa` is available.
#[allow(clippy::too_many_arguments)]
pub fn product(
    isa: Isa,
    panels: &[f32],
    m: usize,
    k: usize,
    x: &[f32],
    x_stride: usize,
    batch: usize,
    dst: &mut [f32],
    dst_stride: usize,
) {
    assert!(
        isa.available(),
        "panel::product: {} is not available",
        isa.name()
    );
    if m == 0 || batch == 0 {
        return;
    }
    let last = |rows: usize, stride: usize, len: usize| {
        (rows - 1)
            .checked_mul(stride)
            .and_then(|a| a.checked_add(len))
    };
    assert!(
        panels_len(m, k).is_some_and(|n| n <= panels.len()),
        "panel::product: panels too short"
    );
    assert!(
        k == 0 || last(batch, x_stride, k).is_some_and(|n| n <= x.len()),
        "panel::product: x too short"
    );
    assert!(
        last(batch, dst_stride, m).is_some_and(|n| n <= dst.len()),
        "panel::product: dst too short"
    );
    // SAFETY: the asserts above bound every access: panel floats below
    // `panels_len(m, k)`, `x[b * x_stride + c]` for `c < k`, and
    // `dst[b * dst_stride + r]` for `r < m`, `b < batch`; `isa` is available.
    unsafe {
        product_raw(
            isa,
            panels.as_ptr(),
            m,
            k,
            x.as_ptr(),
            x_stride,
            batch,
            dst.as_mut_ptr(),
            dst_stride,
            Start::Dst,
        )
    }
}

/// As [`product`], unchecked, the sums starting from `start` (`product`
/// starts from `dst`).
///
/// # Safety
/// `panels` must hold `panels_len(m, k)` floats; `x`, `batch` rows of
/// `x_stride` floats of which the first `k` are read; `dst`, `batch` rows of
/// `dst_stride` floats of which the first `m` are read and written, not
/// overlapping the others; for [`Start::Rows`], `batch` rows of `m` floats at
/// its stride, not overlapping `dst` unless they are `dst` itself; the host
/// must have `isa`.
#[allow(clippy::too_many_arguments)]
pub unsafe fn product_raw(
    isa: Isa,
    panels: *const f32,
    m: usize,
    k: usize,
    x: *const f32,
    x_stride: usize,
    batch: usize,
    dst: *mut f32,
    dst_stride: usize,
    start: Start,
) {
    if k == 0 {
        // SAFETY: as the caller guarantees.
        unsafe { start.fill(m, batch, dst, dst_stride) };
        return;
    }
    let mr = if isa == Isa::Avx512 { MR_AVX512 } else { MR };
    let short = batch <= SHORT_ROWS && isa != Isa::Scalar;
    let count = m.div_ceil(PANEL);
    let mut p = 0;
    while p < count {
        // Panels per tile: up to four for short tiles, two where the
        // AVX-512 kernel takes them, else one.
        let np = if short {
            // Two AVX2 rows by four panels would be all 16 registers in
            // accumulators; NEON keeps to 16 of its 32, as AVX2 does.
            let most = if matches!(isa, Isa::Avx2 | Isa::Neon) && batch == 2 {
                2
            } else {
                SHORT_PANELS
            };
            (count - p).min(most)
        } else if isa == Isa::Avx512 && p + 2 <= count {
            2
        } else {
            1
        };
        let width = np * PANEL;
        let rows = (m - p * PANEL).min(width);
        let w = panels.wrapping_add(p * PANEL * k);
        // `k` in blocks whose weights stay in L1 while every group of batch
        // rows sweeps them. A tile's accumulators start from `start` in the
        // first block and go back to `dst` after each block, so the chains
        // continue from block to block as in one sweep.
        let mut k0 = 0;
        while k0 < k {
            let kc = (k - k0).min(KC);
            let mut b = 0;
            while b < batch {
                let nb = group_rows(batch - b, mr);
                let first = if k0 == 0 { start } else { Start::Dst };
                let tile = Tile {
                    ptr: dst.wrapping_add(b * dst_stride + p * PANEL),
                    stride: dst_stride,
                    rows,
                    from: first.at(b, p * PANEL, dst, dst_stride),
                };
                // SAFETY: as the caller guarantees: the panels `p..p + width
                // / PANEL` exist (`width` rows from row `16p`, padded), with
                // columns `k0..k0 + kc < k` from `k0 * PANEL` floats in; rows
                // `b..b + nb` of `x` exist, columns `k0..k0 + kc`; the tile's
                // rows `b..b + nb` of `dst`, columns `16p..16p + rows <= m`.
                unsafe {
                    tiles::tile(
                        isa,
                        w.wrapping_add(k0 * PANEL),
                        k,
                        kc,
                        np,
                        x.wrapping_add(b * x_stride + k0),
                        x_stride,
                        nb,
                        &tile,
                    )
                };
                b += nb;
            }
            k0 += kc;
        }
        p += np;
    }
}

/// The part of `dst` one micro-kernel accumulates into: batch rows
/// `stride` floats apart, of which the first `rows` floats (at most the
/// kernel's one or two panels) are read and written.
#[derive(Clone, Copy)]
struct Tile {
    ptr: *mut f32,
    stride: usize,
    rows: usize,
    /// Where the sums start: batch row `i` at `from + i * from_stride` (the
    /// tile itself, a bias row with stride 0, another buffer), or zero.
    from: Option<(*const f32, usize)>,
}

impl Tile {
    /// Batch row `i`'s starting values, `None` for zeros.
    fn start(&self, i: usize) -> Option<*const f32> {
        self.from.map(|(p, s)| p.wrapping_add(i * s))
    }
}

/// Where a product's sums start (the tiles of its first block of `k`; the
/// later blocks continue from the destination).
#[derive(Clone, Copy, Debug)]
pub enum Start {
    /// The destination's values: a bias copied there, or the terms before.
    Dst,
    /// Zero.
    Zero,
    /// Batch row `b` at `ptr + b * stride`, the product's first row at
    /// `ptr`; stride 0 starts every batch row from the same row (a bias).
    Rows { ptr: *const f32, stride: usize },
}

impl Start {
    /// The tile source for the destination rows from batch row `b` and
    /// column `col` on (`dst` at `dst + b * dst_stride + col`).
    fn at(
        self,
        b: usize,
        col: usize,
        dst: *mut f32,
        dst_stride: usize,
    ) -> Option<(*const f32, usize)> {
        match self {
            Start::Dst => Some((
                dst.wrapping_add(b * dst_stride + col).cast_const(),
                dst_stride,
            )),
            Start::Zero => None,
            Start::Rows { ptr, stride } => Some((ptr.wrapping_add(b * stride + col), stride)),
        }
    }

    /// Writes the starting values into `m` columns of `batch` rows of `dst`
    /// (for a product with no columns, which has no tiles).
    ///
    /// # Safety
    /// `dst` as for [`product_raw`]; for `Rows`, `batch` rows of `m` floats
    /// at `ptr` with `stride`.
    pub unsafe fn fill(self, m: usize, batch: usize, dst: *mut f32, dst_stride: usize) {
        for b in 0..batch {
            let row = dst.wrapping_add(b * dst_stride);
            // SAFETY: as the caller guarantees (`copy`: the rows may overlap).
            unsafe {
                match self {
                    Start::Dst => {}
                    Start::Zero => std::ptr::write_bytes(row, 0, m),
                    Start::Rows { ptr, stride } => std::ptr::copy(ptr.add(b * stride), row, m),
                }
            }
        }
    }
}

/// The batch rows of the next tile when `left` rows remain and a tile takes
/// at most `mr`: the groups that remain share the rows evenly (64 rows in
/// tiles of 12 are 11, 11, 11, 11, 10, 10, not five of 12 and one of 4, whose
/// 8 accumulators cannot hide the FMA latency). Which rows share a tile does
/// not change any sum: each is one chain in `k` order.
fn group_rows(left: usize, mr: usize) -> usize {
    left.div_ceil(left.div_ceil(mr))
}

/// Columns of `k` per block: 32 weight rows of 256 columns are 32 KiB, which
/// an L1 data cache of 48 KiB holds beside the batch rows' 6 KiB.
const KC: usize = 256;

/// Batch rows per tile.
const MR: usize = 6;

/// Batches of at most this many rows are *short*: their tiles span up to
/// [`SHORT_PANELS`] panels.
pub const SHORT_ROWS: usize = 2;

/// Panels per tile of a short batch: one batch row by four panels is four
/// AVX-512 chains (eight AVX2 ones), enough to read weights at L2 speed.
pub const SHORT_PANELS: usize = 4;

/// Batch rows per tile of the AVX-512 kernel: 12 rows by 32 weight rows are
/// 24 of its 32 registers, two weight loads and 12 broadcasts per 24 FMAs.
/// Against 6 rows (12 accumulators), alternating in one process (`ProductBench`,
/// 25 rounds, medians): 5–16 % faster at every size tried (64 x 2048 x 512,
/// 64 x 512 x 256, 64 x 1024 x 256, 64 x 32 x 512, 64 x 128 x 1024).
const MR_AVX512: usize = 12;

#[cfg(test)]
mod tests {
    use super::*;

    /// Fails when the environment asks for an ISA (`CELLC_REQUIRE_ISAS`,
    /// names separated by commas: `.ci/run` sets what the CPU advertises)
    /// that this run did not test; otherwise says which it tested.
    #[allow(clippy::print_stderr)] // says which kernels the host let it test
    fn check_coverage(what: &str, tested: &[Isa]) {
        let skipped: Vec<Isa> = Isa::ALL
            .into_iter()
            .filter(|i| !tested.contains(i))
            .collect();
        eprintln!("{what} tested: {tested:?}; not available here: {skipped:?}");
        if let Ok(required) = std::env::var("CELLC_REQUIRE_ISAS") {
            for name in required.split(',').map(str::trim).filter(|n| !n.is_empty()) {
                let isa = Isa::from_name(name)
                    .unwrap_or_else(|| panic!("CELLC_REQUIRE_ISAS names `{name}`, no ISA"));
                assert!(
                    tested.contains(&isa),
                    "CELLC_REQUIRE_ISAS asks for {name}, which {what} did not test here"
                );
            }
        }
    }

    fn reference(w: &[f32], m: usize, k: usize, x: &[f32], xs: usize, batch: usize) -> Vec<f64> {
        let mut out = vec![0.0; batch * m];
        for b in 0..batch {
            for r in 0..m {
                out[b * m + r] = (0..k)
                    .map(|c| w[r * k + c] as f64 * x[b * xs + c] as f64)
                    .sum();
            }
        }
        out
    }

    /// Every available kernel against f64 on edge shapes (rows not a
    /// multiple of 16 or 32; batches giving tiles of every row count up to
    /// the 6 and 12 rows of the kernels, and short batches of 1 and 2 rows,
    /// whose tiles span 1 to 4 panels; `k` of 0, 1, and across a block of
    /// [`KC`]), and every kernel agrees with the scalar one to the bit.
    #[test]
    fn kernels_match_the_reference_and_each_other() {
        let mut rng = crate::gen::Rng(7);
        let isas: Vec<Isa> = Isa::ALL.into_iter().filter(|i| i.available()).collect();
        for m in [1, 15, 16, 17, 31, 32, 33, 64, 100] {
            for k in [0, 1, 3, 16, 37, 300] {
                for batch in [1, 2, 3, 4, 5, 6, 7, 8, 11, 12, 13, 25, 65] {
                    let w: Vec<f32> = rng.vec(m * k, 1.0).iter().map(|&v| v as f32).collect();
                    let xs = k + 3;
                    let x: Vec<f32> = rng.vec(batch * xs, 1.0).iter().map(|&v| v as f32).collect();
                    let mut panels = vec![0.0; panels_len(m, k).unwrap()];
                    pack(&w, m, k, &mut panels);
                    let want = reference(&w, m, k, &x, xs, batch);
                    let ds = m + 5;
                    let mut results = Vec::new();
                    for &isa in &isas {
                        let mut dst = vec![0.5f32; batch * ds];
                        product(isa, &panels, m, k, &x, xs, batch, &mut dst, ds);
                        for b in 0..batch {
                            for r in 0..m {
                                let got = dst[b * ds + r] as f64 - 0.5;
                                let e = (got - want[b * m + r]).abs();
                                assert!(
                                    e < 1e-5 * (k as f64 + 1.0),
                                    "{isa:?} m={m} k={k} b={batch}: {e}"
                                );
                            }
                            // Past `m`: untouched.
                            assert!(dst[b * ds + m..(b + 1) * ds].iter().all(|&v| v == 0.5));
                        }
                        results.push(dst);
                    }
                    for (i, r) in results.iter().enumerate().skip(1) {
                        assert_eq!(r, &results[0], "{:?} differs from scalar", isas[i]);
                    }
                }
            }
        }
        check_coverage("panel kernels", &isas);
    }

    /// Every way a product's sums start (the destination, zero, a bias row
    /// for every batch row, rows of another buffer), on every available
    /// kernel, with `k` across a block of [`KC`] so that the later blocks
    /// continue from the destination; and with no columns at all.
    #[test]
    fn products_start_from_dst_zero_a_bias_or_rows() {
        let mut rng = crate::gen::Rng(11);
        let isas: Vec<Isa> = Isa::ALL.into_iter().filter(|i| i.available()).collect();
        for (m, k, batch) in [(33, 300, 13), (16, 5, 7), (40, 0, 3), (7, 17, 1)] {
            let w: Vec<f32> = rng.vec(m * k, 1.0).iter().map(|&v| v as f32).collect();
            let x: Vec<f32> = rng
                .vec(batch * k.max(1), 1.0)
                .iter()
                .map(|&v| v as f32)
                .collect();
            let bias: Vec<f32> = rng.vec(m, 1.0).iter().map(|&v| v as f32).collect();
            let rs = m + 2;
            let rows: Vec<f32> = rng.vec(batch * rs, 1.0).iter().map(|&v| v as f32).collect();
            let mut panels = vec![0.0; panels_len(m, k).unwrap()];
            pack(&w, m, k, &mut panels);
            let want = reference(&w, m, k, &x, k.max(1), batch);
            let ds = m + 5;
            for &isa in &isas {
                for case in 0..4 {
                    let mut dst = vec![0.25f32; batch * ds];
                    let start = match case {
                        0 => Start::Dst,
                        1 => Start::Zero,
                        2 => Start::Rows {
                            ptr: bias.as_ptr(),
                            stride: 0,
                        },
                        _ => Start::Rows {
                            ptr: rows.as_ptr(),
                            stride: rs,
                        },
                    };
                    // SAFETY: every buffer holds what `product_raw` reads and
                    // writes for these sizes; the ISA is available.
                    unsafe {
                        product_raw(
                            isa,
                            panels.as_ptr(),
                            m,
                            k,
                            x.as_ptr(),
                            k.max(1),
                            batch,
                            dst.as_mut_ptr(),
                            ds,
                            start,
                        )
                    };
                    for b in 0..batch {
                        for r in 0..m {
                            let from = match case {
                                0 => 0.25,
                                1 => 0.0,
                                2 => bias[r] as f64,
                                _ => rows[b * rs + r] as f64,
                            };
                            let e = (dst[b * ds + r] as f64 - from - want[b * m + r]).abs();
                            assert!(
                                e < 1e-5 * (k as f64 + 1.0),
                                "{isa:?} {start:?} m={m} k={k}: {e}"
                            );
                        }
                        assert!(dst[b * ds + m..(b + 1) * ds].iter().all(|&v| v == 0.25));
                    }
                }
            }
        }
    }

    /// The narrow kernels (bf16, int8) of every available ISA against f64
    /// over the rounded weights ([`crate::quant::effective`]), on edge shapes
    /// (rows around the 16-row panels and the 4-panel tiles, `k` across a
    /// block of [`KC`], batches around the 2- and 6-row tiles), and to the
    /// bit against the scalar kernel.
    #[test]
    fn narrow_kernels_match_the_reference_and_each_other() {
        let mut rng = crate::gen::Rng(11);
        let isas: Vec<Isa> = Isa::ALL.into_iter().filter(|i| i.available()).collect();
        for precision in [Precision::Bf16, Precision::Int8] {
            for m in [1, 15, 17, 48, 64, 65, 100] {
                for k in [0, 1, 5, 37, 300] {
                    for batch in [1, 2, 3, 6, 7, 13] {
                        let w: Vec<f32> = rng.vec(m * k, 1.0).iter().map(|&v| v as f32).collect();
                        let eff =
                            crate::quant::effective(&w, crate::ir::Type::Matrix(m, k), precision);
                        let xs = k + 2;
                        let x: Vec<f32> =
                            rng.vec(batch * xs, 1.0).iter().map(|&v| v as f32).collect();
                        let mut stored = vec![0.0; stored_len(m, k, precision).unwrap()];
                        pack_at(&w, m, k, precision, &mut stored);
                        let want = reference(&eff, m, k, &x, xs, batch);
                        let ds = m + 3;
                        let mut results = Vec::new();
                        for &isa in &isas {
                            let mut dst = vec![0.5f32; batch * ds];
                            product_at(isa, precision, &stored, m, k, &x, xs, batch, &mut dst, ds);
                            for b in 0..batch {
                                for r in 0..m {
                                    let got = dst[b * ds + r] as f64 - 0.5;
                                    let e = (got - want[b * m + r]).abs();
                                    assert!(
                                        e < 1e-5 * (k as f64 + 1.0),
                                        "{isa:?} {precision} m={m} k={k} b={batch}: {e}"
                                    );
                                }
                                assert!(dst[b * ds + m..(b + 1) * ds].iter().all(|&v| v == 0.5));
                            }
                            results.push(dst);
                        }
                        for (i, r) in results.iter().enumerate().skip(1) {
                            assert_eq!(
                                r, &results[0],
                                "{:?} {precision} differs from scalar",
                                isas[i]
                            );
                        }
                    }
                }
            }
        }
        check_coverage("narrow panel kernels", &isas);
    }

    #[test]
    #[should_panic(expected = "dst too short")]
    fn short_buffers_are_refused() {
        let panels = vec![0.0; panels_len(3, 2).unwrap()];
        let mut dst = vec![0.0; 5];
        product(Isa::Scalar, &panels, 3, 2, &[1.0; 4], 2, 2, &mut dst, 3);
    }
}
