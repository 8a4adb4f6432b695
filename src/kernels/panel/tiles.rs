//! The tiles of the panel products, written once over [`Simd`] and
//! instantiated per ISA inside its `#[target_feature]` entry points.
//!
//! A float32 tile is `R` batch rows by `NP` panels: `R * NP * (16 / LANES)`
//! accumulators (AVX-512: up to 12 rows by 2 panels, 24 of 32 registers;
//! AVX2 and NEON: up to 6 rows by one panel, 12 and 24; short tiles of one or
//! two rows by up to four panels). A narrow tile is `R` rows by `NV` vectors
//! of a tile's one or two groups, `V` vectors at a time, two chains each.
//! Each sum is the scalar kernel's chain of fused multiply-adds in `k` order
//! (`scalar`), so every ISA gives its bits. Which shape a product takes per
//! ISA is decided here ([`tile`], [`narrow`]) from what the drivers pass.

use super::{Tile, GROUP, NARROW_GROUPS, PANEL};
use crate::ir::Precision;
use crate::kernels::simd::Simd;
use crate::kernels::Isa;

#[cfg(target_arch = "aarch64")]
use crate::kernels::simd::Neon;
#[cfg(target_arch = "x86_64")]
use crate::kernels::simd::{Avx2, Avx512};

/// Columns of `k` the regular tiles ask for their weights ahead of use, into
/// L2: one line of each panel per column, a block of `k` ahead, so the first
/// tile of each block (the one that brings its weights into L1) finds them in
/// L2 even when a large product's weights come from L3 or DRAM. A hint that
/// never faults, so past the panels' end too. Measured (`benches/panel`,
/// AVX-512, one core, Zen 5, alternating builds): 64 x 3072 x 2048 (24 MiB
/// of weights) 84-89 % of the FMA peak against 70-75 % without; 64 x 2048 x
/// 512 and 64 x 512 x 256 within the noise (92-97 %). 24 columns ahead gained
/// nothing, 96 half of it; into L1 it cost the L2-resident sizes 3 %. Short
/// tiles (one or two rows by three or four panels) do not ask: they were not
/// measured with it.
const PREFETCH: usize = 256;

/// One tile: `tile[i][r] += sum_{c < kc} w[c][r] x[i][c]` for `i < nb`, `r`
/// below `tile.rows` (at most `16 np`), each sum one chain of fused
/// multiply-adds continuing from the tile's start, in `c` order.
///
/// # Safety
/// `w` holds `kc` columns of 16 weights, and each of the next `np - 1`
/// panels its `kc` columns `16 k` floats further than the one before; `np`
/// is 1, 2 (only for AVX-512), or up to [`super::SHORT_PANELS`] when `nb <=
/// SHORT_ROWS`; `x` holds `nb` rows (at most the kernel's:
/// [`super::MR_AVX512`] for AVX-512, [`super::MR`] for the others) of
/// `x_stride` floats of which `kc` are read; the tile holds `nb` rows of
/// which the first `tile.rows` floats are read and written, and nothing else
/// touches them meanwhile; the host has `isa`.
#[allow(clippy::too_many_arguments)]
#[inline(always)] // into the driver's loop over tiles
pub(super) unsafe fn tile(
    isa: Isa,
    w: *const f32,
    k: usize,
    kc: usize,
    np: usize,
    x: *const f32,
    x_stride: usize,
    nb: usize,
    tile: &Tile,
) {
    let at = &Panel {
        w,
        stride: PANEL * k,
        kc,
        x,
        x_stride,
        tile,
    };
    // (`nb`, `np`) to the kernel for that shape; `true` asks for weights ahead.
    macro_rules! shapes {
        ($entry:ident: $(($r:literal, $p:literal, $ahead:literal)),* $(,)?) => {
            match (nb, np) {
                // SAFETY: as the caller guarantees.
                $(($r, $p) => unsafe { $entry::<$r, $p, $ahead>(at) },)*
                _ => unreachable!("a tile of {nb} rows by {np} panels on {}", isa.name()),
            }
        };
    }
    match isa {
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512 => shapes!(tile_avx512:
            (1, 1, true), (2, 1, true), (3, 1, true), (4, 1, true), (5, 1, true), (6, 1, true),
            (7, 1, true), (8, 1, true), (9, 1, true), (10, 1, true), (11, 1, true), (12, 1, true),
            (1, 2, true), (2, 2, true), (3, 2, true), (4, 2, true), (5, 2, true), (6, 2, true),
            (7, 2, true), (8, 2, true), (9, 2, true), (10, 2, true), (11, 2, true), (12, 2, true),
            (1, 3, false), (1, 4, false), (2, 3, false), (2, 4, false),
        ),
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 => shapes!(tile_avx2:
            (1, 1, true), (2, 1, true), (3, 1, true), (4, 1, true), (5, 1, true), (6, 1, true),
            (1, 2, false), (1, 3, false), (1, 4, false), (2, 2, false),
        ),
        #[cfg(target_arch = "aarch64")]
        Isa::Neon => shapes!(tile_neon:
            (1, 1, false), (2, 1, false), (3, 1, false), (4, 1, false), (5, 1, false), (6, 1, false),
            (1, 2, false), (1, 3, false), (1, 4, false), (2, 2, false),
        ),
        _ => {
            let mut panels = [w; super::SHORT_PANELS];
            for (q, p) in panels.iter_mut().enumerate() {
                *p = w.wrapping_add(q * PANEL * k);
            }
            // SAFETY: as the caller guarantees.
            unsafe { super::scalar::tile(&panels[..np], kc, x, x_stride, nb, *tile) }
        }
    }
}

/// The operands of one float32 tile. Passed by reference, and the tile too:
/// a copy of the driver's freshly written `Tile` took 16-byte loads of
/// 8-byte stores, which the store buffer cannot forward (measured: 2.7 % of
/// a batch-64 product, AVX-512, 64 x 512 x 256).
struct Panel<'a> {
    /// The first panel's first column.
    w: *const f32,
    /// Floats from one panel to the next.
    stride: usize,
    kc: usize,
    x: *const f32,
    x_stride: usize,
    tile: &'a Tile,
}

/// Each ISA's entry point for the tile of `R` rows by `NP` panels.
macro_rules! entries {
    ($($(#[$cfg:meta])* $name:ident: $simd:ty, $features:literal;)*) => {$(
        $(#[$cfg])*
        #[target_feature(enable = $features)]
        /// # Safety
        /// As [`tile`]; the host has the entry's ISA.
        unsafe fn $name<const R: usize, const NP: usize, const AHEAD: bool>(at: &Panel<'_>) {
            // SAFETY: as the caller guarantees; compiled with the ISA's features.
            unsafe { generic::<$simd, R, NP, AHEAD>(at) }
        }
    )*};
}

entries! {
    #[cfg(target_arch = "x86_64")]
    tile_avx512: Avx512, "avx512f";
    #[cfg(target_arch = "x86_64")]
    tile_avx2: Avx2, "avx2,fma";
    #[cfg(target_arch = "aarch64")]
    tile_neon: Neon, "neon";
}

/// One `k` step of a tile's rows below `$r`, in threes from the base
/// pointers (`$row!(base, row, offset)` for rows `3j + o` from base `j`,
/// offset `o`), then each base in use advanced by a column and made opaque
/// (see [`opaque`]).
macro_rules! rows_in_threes {
    ($r:ident, $row:ident, $($b:ident),+) => {
        rows_in_threes!(@rows $row, 0, $($b),+);
        rows_in_threes!(@advance $r, 0, $($b),+);
    };
    (@rows $row:ident, $j:expr, $b:ident $(, $rest:ident)*) => {
        $row!($b, { 3 * $j }, 0);
        $row!($b, { 3 * $j + 1 }, 1);
        $row!($b, { 3 * $j + 2 }, 2);
        rows_in_threes!(@rows $row, $j + 1 $(, $rest)*);
    };
    (@rows $row:ident, $j:expr) => {};
    (@advance $r:ident, $j:expr, $b:ident $(, $rest:ident)*) => {
        if $r > 3 * $j {
            $b = opaque($b.wrapping_add(1));
        }
        rows_in_threes!(@advance $r, $j + 1 $(, $rest)*);
    };
    (@advance $r:ident, $j:expr) => {};
}

/// Vectors per panel: 16 rows at the ISA's width (at most 4, NEON's).
const fn per_panel<S: Simd>() -> usize {
    PANEL / S::LANES
}

/// The tile of `R` batch rows (at most 12) by `NP` panels (at most 4) at
/// `S`'s width; `AHEAD` asks for the weights [`PREFETCH`] columns ahead.
///
/// # Safety
/// As [`tile`], inside a function compiled with `S`'s features.
#[inline(always)]
#[allow(clippy::needless_range_loop)] // one index into several arrays
unsafe fn generic<S: Simd, const R: usize, const NP: usize, const AHEAD: bool>(at: &Panel<'_>) {
    let vp = per_panel::<S>();
    let tile = at.tile;
    // SAFETY: loads of `w` stay within the panels, of `x` within rows `< R`,
    // as the caller guarantees; the tile's loads and stores are limited to
    // its `rows` columns by the tails.
    unsafe {
        let mut tails = [[S::tail(0); 4]; NP];
        let mut p = [at.w; NP];
        for q in 0..NP {
            for v in 0..vp {
                tails[q][v] = S::tail(tile.rows.saturating_sub(q * PANEL + v * S::LANES));
            }
            p[q] = at.w.add(q * at.stride);
        }
        let mut acc = [[[S::splat(0.0); 4]; NP]; R];
        for (i, a) in acc.iter_mut().enumerate() {
            if let Some(d) = tile.start(i) {
                for q in 0..NP {
                    for v in 0..vp {
                        a[q][v] = S::load_tail(d.add(q * PANEL + v * S::LANES), tails[q][v]);
                    }
                }
            }
        }
        // Batch rows in threes from a base pointer each, so every broadcast
        // addresses `[base + stride * {0, 1, 2}]` and the loop adds only to
        // the bases: the integer work would otherwise take issue slots from
        // the FMAs (measured: 3–4 % of the AVX-512 kernel).
        let stride = at.x_stride * 4;
        let mut b0 = at.x;
        let mut b1 = at.x.wrapping_add(3 * at.x_stride);
        let mut b2 = at.x.wrapping_add(6 * at.x_stride);
        let mut b3 = at.x.wrapping_add(9 * at.x_stride);
        for _ in 0..at.kc {
            let mut wv = [[S::splat(0.0); 4]; NP];
            for q in 0..NP {
                if AHEAD {
                    S::prefetch_l2(p[q].wrapping_add(PREFETCH * PANEL));
                }
                for v in 0..vp {
                    wv[q][v] = S::load(p[q].add(v * S::LANES));
                }
            }
            // Unrolled by a macro: LLVM keeps a loop over the rows here,
            // with the accumulators on the stack.
            macro_rules! row {
                ($b:ident, $i:expr, $o:literal) => {
                    if $i < R {
                        let xb = S::splat(*$b.byte_add($o * stride));
                        for q in 0..NP {
                            for v in 0..vp {
                                acc[$i][q][v] = S::fma(wv[q][v], xb, acc[$i][q][v]);
                            }
                        }
                    }
                };
            }
            rows_in_threes!(R, row, b0, b1, b2, b3);
            for pq in p.iter_mut() {
                *pq = pq.add(PANEL);
            }
        }
        for (i, a) in acc.iter().enumerate() {
            let d = tile.ptr.add(i * tile.stride);
            for q in 0..NP {
                for v in 0..vp {
                    S::store_tail(d.add(q * PANEL + v * S::LANES), a[q][v], tails[q][v]);
                }
            }
        }
    }
}

/// `p`, which the optimiser may no longer derive from other pointers: it
/// would recompute the four row bases of [`generic`] from one pointer with
/// a chain of adds in every iteration.
#[inline(always)]
#[allow(clippy::pointers_in_nomem_asm_block)] // the asm reads nothing
fn opaque(mut p: *const f32) -> *const f32 {
    // SAFETY: an empty template; the register keeps its value.
    unsafe {
        std::arch::asm!("/* {0} */", inout(reg) p, options(pure, nomem, nostack, preserves_flags))
    };
    p
}

/// One narrow tile: for each group `q` of `w` (32 rows, `kc` columns), rows
/// `i < nb` of `x`: bf16 `tile[i][32q + r] += sum_c w_q[c][r] x[i][c]`
/// (the even columns' chain from the tile's value, the odd columns' from
/// zero: `scalar::narrow`); int8 the sum from zero, then
/// `tile = sum * scale + tile`.
///
/// # Safety
/// Each `w[q]` holds `kc` columns of a group at `precision`; for int8
/// `scales` holds `tile.rows` floats; `x` holds `nb` rows (at most the ISA's
/// tile rows, [`super::narrow_tile_shape`]) of `kc` floats at `x_stride`;
/// the tile `nb` rows of which the first `tile.rows` floats are read and
/// written; the host has `isa`.
#[allow(clippy::too_many_arguments)]
#[inline(always)] // into the driver's loop over tiles
pub(super) unsafe fn narrow(
    isa: Isa,
    precision: Precision,
    w: [*const u8; NARROW_GROUPS],
    scales: *const f32,
    kc: usize,
    x: *const f32,
    x_stride: usize,
    nb: usize,
    tile: &Tile,
) {
    let at = &Groups {
        w,
        scales,
        kc,
        x,
        x_stride,
        tile,
    };
    let int8 = precision == Precision::Int8;
    // (`nb`, int8, two groups) to the kernel of `NV` vectors, `V` at a time.
    macro_rules! shapes {
        ($entry:ident: $(($r:literal, $two:literal, $nv:literal, $v:literal)),* $(,)?) => {
            match (nb, int8, tile.rows > GROUP) {
                // SAFETY: as the caller guarantees.
                $(($r, false, $two) => unsafe { $entry::<$r, false, $nv, $v>(at) },
                  // SAFETY: as the caller guarantees.
                  ($r, true, $two) => unsafe { $entry::<$r, true, $nv, $v>(at) },)*
                _ => unreachable!("a narrow tile of {nb} rows on {}", isa.name()),
            }
        };
    }
    match isa {
        // Vectors of 16 rows: two per group, and a tile of one group (a unit
        // of 32 rows) computes no second one of zeros. Four vectors at a time
        // for one or two rows, two for three or four (at most 16
        // accumulators of the 32 registers).
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512 => shapes!(narrow_avx512:
            (1, false, 2, 2), (2, false, 2, 2), (3, false, 2, 2), (4, false, 2, 2),
            (1, true, 4, 4), (2, true, 4, 4), (3, true, 4, 2), (4, true, 4, 2),
        ),
        // A group's four vectors of 8 rows at a time for one row, two at a
        // time for two (eight accumulators of the 16 registers).
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 => shapes!(narrow_avx2:
            (1, false, 4, 4), (2, false, 4, 2), (1, true, 4, 4), (2, true, 4, 2),
        ),
        // One row by one group, four vectors of 4 rows at a time.
        #[cfg(target_arch = "aarch64")]
        Isa::Neon => shapes!(narrow_neon: (1, false, 8, 4), (1, true, 8, 4)),
        // SAFETY: as the caller guarantees.
        _ => unsafe { super::scalar::narrow(precision, w[0], scales, kc, x, x_stride, nb, *tile) },
    }
}

/// The operands of one narrow tile (by reference, as [`Panel`]).
struct Groups<'a> {
    w: [*const u8; NARROW_GROUPS],
    /// Int8: the tile's rows' scales.
    scales: *const f32,
    kc: usize,
    x: *const f32,
    x_stride: usize,
    tile: &'a Tile,
}

/// Each ISA's entry point for the narrow tile of `R` rows, `NV` vectors, `V`
/// at a time.
macro_rules! narrow_entries {
    ($($(#[$cfg:meta])* $name:ident: $simd:ty, $features:literal;)*) => {$(
        $(#[$cfg])*
        #[target_feature(enable = $features)]
        /// # Safety
        /// As [`narrow`]; the host has the entry's ISA.
        unsafe fn $name<const R: usize, const INT8: bool, const NV: usize, const V: usize>(
            at: &Groups<'_>,
        ) {
            // SAFETY: as the caller guarantees; compiled with the ISA's features.
            unsafe { narrow_generic::<$simd, R, INT8, NV, V>(at) }
        }
    )*};
}

narrow_entries! {
    #[cfg(target_arch = "x86_64")]
    narrow_avx512: Avx512, "avx512f";
    #[cfg(target_arch = "x86_64")]
    narrow_avx2: Avx2, "avx2,fma";
    #[cfg(target_arch = "aarch64")]
    narrow_neon: Neon, "neon";
}

/// The widened columns `c` and, unless `ALONE`, `c + 1` of vector `q`
/// (`LANES` rows) of a narrow tile. bf16: one load holds both columns (an odd
/// last column's pair has zeros for its high halves); int8: `LANES` bytes a
/// column.
///
/// # Safety
/// The vector's group holds columns `c` and (unless `ALONE`) `c + 1`.
#[inline(always)]
unsafe fn columns<S: Simd, const INT8: bool, const ALONE: bool>(
    w: [*const u8; NARROW_GROUPS],
    q: usize,
    c: usize,
) -> (S::F, S::F) {
    let g = w[q * S::LANES / GROUP];
    let r0 = q * S::LANES % GROUP;
    // SAFETY: as the caller guarantees (the layout of `group_bytes`).
    unsafe {
        if INT8 {
            let col = |c: usize| S::widen_i8(g.add(c * GROUP + r0));
            let next = if ALONE { S::splat(0.0) } else { col(c + 1) };
            (col(c), next)
        } else {
            S::widen_bf16_pairs(g.add(c * GROUP * 2 + r0 * 4))
        }
    }
}

/// The narrow tile of `R` rows by `NV` vectors of `S`'s width, `V` at a time
/// (each holds two chains per row: `R * V * 2` accumulators), summed in
/// `scalar::narrow`'s order.
///
/// # Safety
/// As [`narrow`], inside a function compiled with `S`'s features.
#[inline(always)]
#[allow(clippy::needless_range_loop)] // one index into several arrays
unsafe fn narrow_generic<
    S: Simd,
    const R: usize,
    const INT8: bool,
    const NV: usize,
    const V: usize,
>(
    at: &Groups<'_>,
) {
    let &Groups {
        w,
        scales,
        kc,
        x,
        x_stride,
        tile,
    } = at;
    // SAFETY: as the caller guarantees; the tile's loads and stores, and the
    // scales', are limited to its `rows` columns by the tails.
    unsafe {
        let mut s = 0;
        while s < NV {
            let mut tail = [S::tail(0); V];
            for (j, t) in tail.iter_mut().enumerate() {
                *t = S::tail(tile.rows.saturating_sub((s + j) * S::LANES));
            }
            // The two chains of `scalar::narrow`, per row and vector.
            let mut even = [[S::splat(0.0); V]; R];
            let mut odd = [[S::splat(0.0); V]; R];
            if !INT8 {
                for (i, e) in even.iter_mut().enumerate() {
                    if let Some(d) = tile.start(i) {
                        for j in 0..V {
                            e[j] = S::load_tail(d.add((s + j) * S::LANES), tail[j]);
                        }
                    }
                }
            }
            let mut c = 0;
            while c + 1 < kc {
                let mut x0 = [S::splat(0.0); R];
                let mut x1 = [S::splat(0.0); R];
                for i in 0..R {
                    x0[i] = S::splat(*x.add(i * x_stride + c));
                    x1[i] = S::splat(*x.add(i * x_stride + c + 1));
                }
                for j in 0..V {
                    let (lo, hi) = columns::<S, INT8, false>(w, s + j, c);
                    for i in 0..R {
                        even[i][j] = S::fma(lo, x0[i], even[i][j]);
                        odd[i][j] = S::fma(hi, x1[i], odd[i][j]);
                    }
                }
                c += 2;
            }
            if c < kc {
                for j in 0..V {
                    let (lo, _) = columns::<S, INT8, true>(w, s + j, c);
                    for (i, e) in even.iter_mut().enumerate() {
                        e[j] = S::fma(lo, S::splat(*x.add(i * x_stride + c)), e[j]);
                    }
                }
            }
            for i in 0..R {
                let d = tile.ptr.add(i * tile.stride);
                for j in 0..V {
                    let sum = S::add(even[i][j], odd[i][j]);
                    let at = (s + j) * S::LANES;
                    let out = if INT8 {
                        let scale = S::load_tail(scales.add(at), tail[j]);
                        let old = match tile.start(i) {
                            Some(o) => S::load_tail(o.add(at), tail[j]),
                            None => S::splat(0.0),
                        };
                        S::fma(sum, scale, old)
                    } else {
                        sum
                    };
                    S::store_tail(d.add(at), out, tail[j]);
                }
            }
            s += V;
        }
    }
}
