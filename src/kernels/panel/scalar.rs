//! The portable kernels, on any target: the order of operations every ISA's
//! tiles follow, so that they give these bits (`f32::mul_add` rounds once
//! where the target has a fused multiply-add).

use super::{Tile, GROUP, PANEL};
use crate::ir::Precision;

/// The widened value of row `lane` and column `c` of a narrow group at `w`
/// (the layout of [`super::group_bytes`]).
///
/// # Safety
/// `w` holds the group's column `c` at `precision`.
#[inline(always)]
unsafe fn widen(w: *const u8, c: usize, lane: usize, precision: Precision) -> f32 {
    // SAFETY: as the caller guarantees.
    unsafe {
        match precision {
            Precision::Bf16 => {
                // The pair's word, low or high half.
                let word = w
                    .add((c / 2 * GROUP + lane) * 4)
                    .cast::<u32>()
                    .read_unaligned();
                let half = if c.is_multiple_of(2) {
                    word << 16
                } else {
                    word & 0xffff_0000
                };
                f32::from_bits(half)
            }
            Precision::Int8 => *w.add(c * GROUP + lane).cast::<i8>() as f32,
            Precision::F32 => w.add(4 * (c * GROUP + lane)).cast::<f32>().read_unaligned(),
        }
    }
}

/// The order every narrow panel kernel sums a block of `kc` columns in, so
/// that the ISAs give the same bits: two chains of fused multiply-adds, the
/// even columns' from the block's start (bf16: the tile's value; int8: zero)
/// and the odd columns' from zero, added at the end of the block. One chain
/// per pair (`acc + (w0 * x0 + w1 * x1)`, three operations per pair) was the
/// order until 2026-12-02; two chains take two, and measured 1.15-1.2x
/// faster on a Zen 5 core from L1 and L2 (the widened halves of a bf16 pair
/// go straight to their chains). The generated kernels still pair columns
/// the other way: within the interpreter's tolerance, not the same bits.
///
/// # Safety
/// As `tiles::narrow`, one group (`tile.rows <= 32`).
#[allow(clippy::too_many_arguments)]
pub(super) unsafe fn narrow(
    precision: Precision,
    w: *const u8,
    scales: *const f32,
    kc: usize,
    x: *const f32,
    x_stride: usize,
    nb: usize,
    tile: Tile,
) {
    for i in 0..nb {
        for lane in 0..GROUP.min(tile.rows) {
            let d = tile.ptr.wrapping_add(i * tile.stride + lane);
            // SAFETY: row `i < nb`, column `lane < rows` of the tile; column
            // `c < kc` of the panel and row `i` of `x`, as the caller
            // guarantees.
            unsafe {
                let int8 = precision == Precision::Int8;
                let old = tile.start(i).map_or(0.0, |p| *p.add(lane));
                let mut even = if int8 { 0.0 } else { old };
                let mut odd = 0.0f32;
                let xr = x.add(i * x_stride);
                let mut c = 0;
                while c + 1 < kc {
                    even = widen(w, c, lane, precision).mul_add(*xr.add(c), even);
                    odd = widen(w, c + 1, lane, precision).mul_add(*xr.add(c + 1), odd);
                    c += 2;
                }
                if c < kc {
                    even = widen(w, c, lane, precision).mul_add(*xr.add(c), even);
                }
                let sum = even + odd;
                *d = if int8 {
                    sum.mul_add(*scales.add(lane), old)
                } else {
                    sum
                };
            }
        }
    }
}

/// # Safety
/// As `tiles::tile`, the panels' first columns at `panels`.
pub(super) unsafe fn tile(
    panels: &[*const f32],
    kc: usize,
    x: *const f32,
    x_stride: usize,
    nb: usize,
    tile: Tile,
) {
    for i in 0..nb {
        for (q, &w) in panels.iter().enumerate() {
            for lane in 0..PANEL.min(tile.rows.saturating_sub(q * PANEL)) {
                let d = tile.ptr.wrapping_add(i * tile.stride + q * PANEL + lane);
                // SAFETY: row `i < nb`, column `q * 16 + lane < rows` of the
                // tile's start, as the caller guarantees.
                let mut acc = tile
                    .start(i)
                    .map_or(0.0, |p| unsafe { *p.add(q * PANEL + lane) });
                for c in 0..kc {
                    // SAFETY: column `c < kc` of the panel, row `i` of `x`, in
                    // bounds as the caller guarantees.
                    let (wv, xv) = unsafe { (*w.add(c * PANEL + lane), *x.add(i * x_stride + c)) };
                    acc = wv.mul_add(xv, acc);
                }
                // SAFETY: as above.
                unsafe { *d = acc };
            }
        }
    }
}
