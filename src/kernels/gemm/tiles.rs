//! The micro-kernels of [`super`], written once over [`Simd`] and
//! instantiated per ISA inside `#[target_feature]` entry points, plus the
//! portable one whose chains they all follow.
//!
//! A tile is `NV` vectors of a unit's rows by `NR` columns of `C`, all in
//! registers; each step of `k` loads the unit's `NV` vectors once and
//! multiplies each into `NR` values of the strip, broadcast: `NV * NR`
//! fused multiply-adds for `NV` loads and `NR` broadcasts. AVX-512: the
//! whole unit (2 vectors) by 14 columns (28 accumulators of 32 registers,
//! two for the unit's vectors, one for the broadcast; measured from L1 on
//! one Xeon core: 88-90 % of the FMA peak, against 80-83 % for 12 columns);
//! AVX2: half a unit (2 of 8 lanes) by 6 (12 of 16 registers); NEON: half a
//! unit (4 of 4 lanes) by 6 (24 of 32). Units wider than a tile run as two
//! tiles over the same strip, which L1 holds. The loop over `k` runs two
//! steps per iteration (measured: 3-5 % faster than one).

use super::MR;
use crate::kernels::simd::Simd;
use crate::kernels::Isa;

#[cfg(target_arch = "aarch64")]
use crate::kernels::simd::Neon;
#[cfg(target_arch = "x86_64")]
use crate::kernels::simd::{Avx2, Avx512};

/// One unit's rows by one strip's columns of `C`.
pub(super) struct Tile {
    pub kc: usize,
    /// The unit's first column: `MR` floats, then the next column.
    pub a: *const f32,
    /// The strip: `width` values per step of `k`.
    pub b: *const f32,
    /// Element `(i, j)` of the tile at `c[i + j * ldc]`.
    pub c: *mut f32,
    pub ldc: usize,
    /// Rows of the unit that exist (at most [`MR`]); the others are neither
    /// read nor written in `C`.
    pub rows: usize,
    /// Column `j`'s starting values at `ptr + j * stride`, or zeros.
    pub start: Option<(*const f32, usize)>,
}

/// Columns per strip on `isa` (its tiles' `NR`).
pub(super) fn columns(isa: Isa) -> usize {
    match isa {
        Isa::Avx512 => 14,
        Isa::Avx2 | Isa::Neon => 6,
        Isa::Scalar => 4,
    }
}

/// `C[i][j] = start + sum_{l < kc} a[l][i] b[l][j]` for the tile's rows and
/// `width` columns, each one chain of fused multiply-adds in `l` order.
///
/// # Safety
/// `t.a` holds `kc` columns of `MR` floats; `t.b` `kc * width` floats;
/// `C` (and the start) the tile's `rows` by `width` elements, which nothing
/// else touches meanwhile; `width` at most [`columns`]; the host has `isa`.
#[inline(always)]
pub(super) unsafe fn tile(isa: Isa, width: usize, t: &Tile) {
    macro_rules! widths {
        ($entry:ident, $nv:literal: $($w:literal),*) => {
            match width {
                // SAFETY: as the caller guarantees.
                $($w => unsafe { $entry::<$nv, $w>(t) },)*
                _ => unreachable!("a strip of {width} columns on {}", isa.name()),
            }
        };
    }
    match isa {
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512 => widths!(tile_avx512, 2: 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14),
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 => widths!(tile_avx2, 2: 1, 2, 3, 4, 5, 6),
        #[cfg(target_arch = "aarch64")]
        Isa::Neon => widths!(tile_neon, 4: 1, 2, 3, 4, 5, 6),
        // SAFETY: as the caller guarantees.
        _ => unsafe { scalar(width, t) },
    }
}

/// The portable tile: the chains every ISA's tiles follow.
///
/// # Safety
/// As [`tile`].
unsafe fn scalar(width: usize, t: &Tile) {
    for j in 0..width {
        for i in 0..t.rows {
            // SAFETY: as the caller guarantees.
            unsafe {
                let mut s = match t.start {
                    Some((p, stride)) => *p.add(j * stride + i),
                    None => 0.0,
                };
                for l in 0..t.kc {
                    s = (*t.a.add(l * MR + i)).mul_add(*t.b.add(l * width + j), s);
                }
                *t.c.add(i + j * t.ldc) = s;
            }
        }
    }
}

/// Each ISA's entry point for tiles of `NV` vectors by `NR` columns.
macro_rules! entries {
    ($($(#[$cfg:meta])* $name:ident: $simd:ty, $features:literal;)*) => {$(
        $(#[$cfg])*
        #[target_feature(enable = $features)]
        /// # Safety
        /// As [`tile`]; the host has the entry's ISA.
        unsafe fn $name<const NV: usize, const NR: usize>(t: &Tile) {
            let per_tile = NV * <$simd as Simd>::LANES;
            let mut r0 = 0;
            while r0 < t.rows {
                // SAFETY: as the caller guarantees; compiled with the ISA's
                // features; rows `r0..` of the unit.
                unsafe { generic::<$simd, NV, NR>(t, r0) };
                r0 += per_tile;
            }
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

/// Rows `r0 .. r0 + NV * LANES` of the tile (those below `t.rows`) by `NR`
/// columns.
///
/// # Safety
/// As [`tile`], inside a function compiled with `S`'s features; `r0 +
/// NV * LANES <= MR`.
#[inline(always)]
#[allow(clippy::needless_range_loop)] // one index into several arrays
#[allow(unused_assignments)] // the last step's advance
unsafe fn generic<S: Simd, const NV: usize, const NR: usize>(t: &Tile, r0: usize) {
    // SAFETY: loads of `a` stay within the unit's `kc` columns, of `b`
    // within the strip; `C`'s loads and stores are limited to the tile's
    // rows by the tails, as the caller guarantees.
    unsafe {
        let mut tails = [S::tail(0); NV];
        for (v, tail) in tails.iter_mut().enumerate() {
            *tail = S::tail(t.rows.saturating_sub(r0 + v * S::LANES));
        }
        let mut acc = [[S::splat(0.0); NV]; NR];
        if let Some((p, stride)) = t.start {
            for j in 0..NR {
                for v in 0..NV {
                    acc[j][v] = S::load_tail(p.add(j * stride + r0 + v * S::LANES), tails[v]);
                }
            }
        }
        let mut a = t.a.add(r0);
        let mut b = t.b;
        // One step of `k`: the unit's vectors, each column broadcast into
        // them. Unrolled by a macro: a loop here may stay a loop, with the
        // accumulators on the stack.
        macro_rules! step {
            ($($j:literal)*) => {{
                let mut av = [S::splat(0.0); NV];
                for v in 0..NV {
                    av[v] = S::load(a.add(v * S::LANES));
                }
                $(
                    if $j < NR {
                        let x = S::splat(*b.add($j));
                        for v in 0..NV {
                            acc[$j][v] = S::fma(av[v], x, acc[$j][v]);
                        }
                    }
                )*
                a = a.add(MR);
                b = b.add(NR);
            }};
        }
        for _ in 0..t.kc / 2 {
            step!(0 1 2 3 4 5 6 7 8 9 10 11 12 13);
            step!(0 1 2 3 4 5 6 7 8 9 10 11 12 13);
        }
        if t.kc % 2 == 1 {
            step!(0 1 2 3 4 5 6 7 8 9 10 11 12 13);
        }
        for j in 0..NR {
            for v in 0..NV {
                S::store_tail(t.c.add(r0 + v * S::LANES + j * t.ldc), acc[j][v], tails[v]);
            }
        }
    }
}

/// Packs one strip of `w` columns of `B` whose columns are contiguous
/// (column `jj`'s `kc` values from `src + jj * cs`): `out[l * w + jj]`. On
/// AVX-512, 16 values of every column at a time, transposed in registers
/// (the scalar copy took 7 % of a projection); elsewhere one value at a
/// time. A copy: the same floats whichever way.
///
/// # Safety
/// The columns hold those values; `out` holds `kc * w` floats; `w <=
/// columns(isa)`; the host has `isa`.
pub(super) unsafe fn pack_columns(
    isa: Isa,
    src: *const f32,
    cs: usize,
    w: usize,
    kc: usize,
    out: *mut f32,
) {
    #[cfg(target_arch = "x86_64")]
    match isa {
        // SAFETY: as the caller guarantees (`w <= 14 < 16`).
        Isa::Avx512 => return unsafe { x86::pack_columns_avx512(src, cs, w, kc, out) },
        // SAFETY: as the caller guarantees (`w <= 6 < 8`).
        Isa::Avx2 => return unsafe { x86::pack_columns_avx2(src, cs, w, kc, out) },
        _ => {}
    }
    let _ = isa;
    for jj in 0..w {
        // SAFETY: as the caller guarantees.
        unsafe {
            let col = src.add(jj * cs);
            for l in 0..kc {
                *out.add(l * w + jj) = *col.add(l);
            }
        }
    }
}

/// Copies `count` runs of `len` floats, run `r` from `src + r * src_stride`
/// to `dst + r * dst_stride`, each padded with zeros to `pad` floats: the
/// packing of contiguous rows of `B` and columns of `A`. On AVX-512 with
/// masked moves (a call of `memmove` per run of 14 floats took a fifth of
/// training's backward pass); elsewhere one float at a time.
///
/// # Safety
/// The runs exist at both ends; `len <= pad <= 32`; the host has `isa`.
#[allow(clippy::too_many_arguments)]
pub(super) unsafe fn copy_runs(
    isa: Isa,
    src: *const f32,
    src_stride: usize,
    len: usize,
    count: usize,
    dst: *mut f32,
    dst_stride: usize,
    pad: usize,
) {
    #[cfg(target_arch = "x86_64")]
    if isa == Isa::Avx512 {
        // SAFETY: as the caller guarantees.
        return unsafe { x86::copy_runs_avx512(src, src_stride, len, count, dst, dst_stride, pad) };
    }
    let _ = isa;
    for r in 0..count {
        for i in 0..pad {
            // SAFETY: as the caller guarantees.
            unsafe {
                *dst.add(r * dst_stride + i) = if i < len {
                    *src.add(r * src_stride + i)
                } else {
                    0.0
                };
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    /// `copy_runs` on AVX-512: each run as two masked loads and stores.
    ///
    /// # Safety
    /// As `copy_runs`, with AVX-512F.
    #[target_feature(enable = "avx512f")]
    #[allow(clippy::too_many_arguments)]
    pub(super) unsafe fn copy_runs_avx512(
        src: *const f32,
        src_stride: usize,
        len: usize,
        count: usize,
        dst: *mut f32,
        dst_stride: usize,
        pad: usize,
    ) {
        let mask = |n: usize| ((1u64 << n.min(16)) - 1) as __mmask16;
        let (read0, read1) = (mask(len), mask(len.saturating_sub(16)));
        let (write0, write1) = (mask(pad), mask(pad.saturating_sub(16)));
        for r in 0..count {
            // SAFETY: as the caller guarantees: the masks keep to the runs.
            unsafe {
                let (s, d) = (src.add(r * src_stride), dst.add(r * dst_stride));
                let lo = _mm512_maskz_loadu_ps(read0, s);
                _mm512_mask_storeu_ps(d, write0, lo);
                if pad > 16 {
                    let hi = _mm512_maskz_loadu_ps(read1, s.wrapping_add(16));
                    _mm512_mask_storeu_ps(d.wrapping_add(16), write1, hi);
                }
            }
        }
    }

    /// `pack_columns` on AVX-512: blocks of 16 values of up to 16 columns,
    /// loaded as rows (the missing columns and values zero, never read),
    /// transposed by exchanging off-diagonal blocks of 8, 4, 2 and 1
    /// (`vpermt2ps`, which LLVM turns into cheaper shuffles where it can),
    /// and stored a value at a time: whole vectors, each overlapping the
    /// next value's floats, but near the end of `out` only `w` lanes.
    /// Measured on Zen 4 (strips of 14 columns, one core): 0.10-0.12 ns a
    /// float; a masked store per value 0.14-0.16; the rows in an array
    /// indexed by loop variables (kept on the stack) 0.43-0.55, slower
    /// than a scalar copy (0.28-0.36).
    ///
    /// # Safety
    /// As `pack_columns`, `w <= 16`, with AVX-512F.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn pack_columns_avx512(
        src: *const f32,
        cs: usize,
        w: usize,
        kc: usize,
        out: *mut f32,
    ) {
        // Exchange masks: for distance `d`, lane `j` of the new upper row
        // takes the upper row's `j` where bit `d` of `j` is clear, else the
        // lower row's `j - d`; the new lower row takes the upper's `j + d`
        // where clear, else its own `j` (indices of 16 and up: the second
        // operand).
        let index = |d: usize, upper: bool| {
            let mut idx = [0i32; 16];
            for (j, v) in idx.iter_mut().enumerate() {
                let clear = j & d == 0;
                *v = match (upper, clear) {
                    (true, true) => j as i32,
                    (true, false) => (16 + j - d) as i32,
                    (false, true) => (j + d) as i32,
                    (false, false) => (16 + j) as i32,
                };
            }
            // SAFETY: 16 integers.
            unsafe { _mm512_loadu_si512(idx.as_ptr().cast()) }
        };
        let stages = [
            (index(8, true), index(8, false)),
            (index(4, true), index(4, false)),
            (index(2, true), index(2, false)),
            (index(1, true), index(1, false)),
        ];
        let lanes: __mmask16 = ((1u32 << w) - 1) as __mmask16;
        let mut l = 0;
        while l < kc {
            let n = 16.min(kc - l);
            let values: __mmask16 = ((1u32 << n) - 1) as __mmask16;
            let mut rows = [_mm512_setzero_ps(); 16];
            // Sixteen tests of `jj < w` rather than a loop of `w` loads, and
            // constant indices in the stages: the rows stay in registers.
            for (jj, row) in rows.iter_mut().enumerate() {
                if jj < w {
                    // SAFETY: column `jj`'s values `l..l + n` (masked).
                    *row = unsafe { _mm512_maskz_loadu_ps(values, src.add(jj * cs + l)) };
                }
            }
            exchange::<8>(&mut rows, stages[0]);
            exchange::<4>(&mut rows, stages[1]);
            exchange::<2>(&mut rows, stages[2]);
            exchange::<1>(&mut rows, stages[3]);
            for (ll, row) in rows.iter().enumerate() {
                if ll >= n {
                    break;
                }
                let at = out.wrapping_add((l + ll) * w);
                if (kc - l - ll) * w >= 16 {
                    // Sixteen lanes: those past `w` (zeros) land on the
                    // next values' floats, which later stores write.
                    // SAFETY: `out` holds the `(kc - l - ll) * w` floats
                    // from value `l + ll` on, at least 16.
                    unsafe { _mm512_storeu_ps(at, *row) };
                } else {
                    // SAFETY: `out` holds value `l + ll`'s `w` floats.
                    unsafe { _mm512_mask_storeu_ps(at, lanes, *row) };
                }
            }
            l += n;
        }
    }

    /// `pack_columns` on AVX2: blocks of 8 values of up to 8 columns, loaded
    /// as rows (the missing columns zero), transposed by the usual three
    /// rounds of shuffles, and stored as `pack_columns_avx512` stores them
    /// (whole vectors overlapping the next values, masked only near the end
    /// of `out`: a masked store is microcoded on AMD before Zen 4).
    ///
    /// # Safety
    /// As `pack_columns`, `w <= 8`, with AVX2.
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn pack_columns_avx2(
        src: *const f32,
        cs: usize,
        w: usize,
        kc: usize,
        out: *mut f32,
    ) {
        use crate::kernels::simd::lanes8;
        // SAFETY: AVX, which this function has.
        let lanes = unsafe { lanes8(w) };
        let mut l = 0;
        while l < kc {
            let n = 8.min(kc - l);
            // SAFETY: AVX.
            let values = unsafe { lanes8(n) };
            let mut rows = [_mm256_setzero_ps(); 8];
            for (jj, row) in rows.iter_mut().enumerate() {
                if jj < w {
                    let at = src.wrapping_add(jj * cs + l);
                    // SAFETY: column `jj`'s values `l..l + n` (masked
                    // where fewer than 8).
                    *row = unsafe {
                        if n == 8 {
                            _mm256_loadu_ps(at)
                        } else {
                            _mm256_maskload_ps(at, values)
                        }
                    };
                }
            }
            let [r0, r1, r2, r3, r4, r5, r6, r7] = rows;
            // Pairs of columns interleaved, then quads, then the halves.
            let (t0, t1) = (_mm256_unpacklo_ps(r0, r1), _mm256_unpackhi_ps(r0, r1));
            let (t2, t3) = (_mm256_unpacklo_ps(r2, r3), _mm256_unpackhi_ps(r2, r3));
            let (t4, t5) = (_mm256_unpacklo_ps(r4, r5), _mm256_unpackhi_ps(r4, r5));
            let (t6, t7) = (_mm256_unpacklo_ps(r6, r7), _mm256_unpackhi_ps(r6, r7));
            let (s0, s1) = (
                _mm256_shuffle_ps::<0x44>(t0, t2),
                _mm256_shuffle_ps::<0xee>(t0, t2),
            );
            let (s2, s3) = (
                _mm256_shuffle_ps::<0x44>(t1, t3),
                _mm256_shuffle_ps::<0xee>(t1, t3),
            );
            let (s4, s5) = (
                _mm256_shuffle_ps::<0x44>(t4, t6),
                _mm256_shuffle_ps::<0xee>(t4, t6),
            );
            let (s6, s7) = (
                _mm256_shuffle_ps::<0x44>(t5, t7),
                _mm256_shuffle_ps::<0xee>(t5, t7),
            );
            // Row `ll` of the transposition: value `l + ll` of every column.
            let values_of = [
                _mm256_permute2f128_ps::<0x20>(s0, s4),
                _mm256_permute2f128_ps::<0x20>(s1, s5),
                _mm256_permute2f128_ps::<0x20>(s2, s6),
                _mm256_permute2f128_ps::<0x20>(s3, s7),
                _mm256_permute2f128_ps::<0x31>(s0, s4),
                _mm256_permute2f128_ps::<0x31>(s1, s5),
                _mm256_permute2f128_ps::<0x31>(s2, s6),
                _mm256_permute2f128_ps::<0x31>(s3, s7),
            ];
            for (ll, row) in values_of.iter().enumerate().take(n) {
                let at = out.wrapping_add((l + ll) * w);
                if (kc - l - ll) * w >= 8 {
                    // Eight lanes: those past `w` (zeros) land on the next
                    // values' floats, which later stores write.
                    // SAFETY: `out` holds the `(kc - l - ll) * w` floats
                    // from value `l + ll` on, at least 8.
                    unsafe { _mm256_storeu_ps(at, *row) };
                } else {
                    // SAFETY: `out` holds value `l + ll`'s `w` floats.
                    unsafe { _mm256_maskstore_ps(at, lanes, *row) };
                }
            }
            l += n;
        }
    }

    /// One stage of `pack_columns_avx512`'s transposition: rows `a` and `a +
    /// D` (bit `D` of `a` clear) exchange their off-diagonal blocks of `D`.
    /// `D` a constant, so that every index is one and the rows stay in
    /// registers.
    #[inline(always)]
    fn exchange<const D: usize>(rows: &mut [__m512; 16], (up, down): (__m512i, __m512i)) {
        for a in 0..16 {
            if a & D == 0 {
                let (x, y) = (rows[a], rows[a + D]);
                // SAFETY: register operations of AVX-512F, which the only
                // caller is compiled with.
                unsafe {
                    rows[a] = _mm512_permutex2var_ps(x, up, y);
                    rows[a + D] = _mm512_permutex2var_ps(x, down, y);
                }
            }
        }
    }
}
