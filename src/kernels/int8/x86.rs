//! The x86 kernels of [`super`]: `vpdpbusd` on 512-bit vectors (AVX512-VNNI)
//! and on 256-bit ones (AVX-VNNI), and `vpmaddwd` on plain AVX2. Each keeps
//! a tile of sums in registers, adds a quad of `k` per instruction (four
//! bytes of a column broadcast to every lane, by a quad of 16 or 8 rows; on
//! plain AVX2 widened to 16 bits first, by four rows), then finishes each
//! element as the portable path does ([`super::Block::finish`]: the same
//! operations, so the same bits).

use std::arch::x86_64::*;

use super::{Block, QUAD, TILE_COLUMNS, UNIT};
use crate::kernels::gemm::{fill, From};
use crate::kernels::simd::{Avx2, Simd};

/// Columns per tile of the 256-bit kernel (12 sums, two weight vectors and
/// a broadcast in 16 registers).
const COLUMNS_256: usize = 6;

/// The quad `q` of column `c` (of the block's) as one `i32`.
///
/// # Safety
/// Column `c` holds `kp > 4 q` bytes.
#[inline(always)]
unsafe fn quad(b: &Block, c: usize, q: usize) -> i32 {
    // SAFETY: as the caller guarantees.
    unsafe { b.x.add(c * b.kp + q * QUAD).cast::<i32>().read_unaligned() }
}

/// The block on AVX512-VNNI: tiles of 32 rows (two units) by up to
/// [`TILE_COLUMNS`] columns.
///
/// # Safety
/// As `Product::run_block`, for the block's job; `i0` a multiple of 32; the
/// host has AVX512F and AVX512-VNNI.
#[target_feature(enable = "avx512f,avx512vnni")]
pub(super) unsafe fn block_avx512(b: &Block) {
    let mut i = b.i0;
    while i < b.i1 {
        let rows = (b.i1 - i).min(2 * UNIT);
        let mut j = b.j0;
        while j < b.j1 {
            let w = (b.j1 - j).min(TILE_COLUMNS);
            b.ahead(i, 2 * UNIT, j, w, TILE_COLUMNS);
            // SAFETY: as the caller guarantees; rows `i..i + rows` and
            // columns `j..j + w` are the block's.
            unsafe {
                match w {
                    1 => tile_512::<1>(b, i, rows, j),
                    2 => tile_512::<2>(b, i, rows, j),
                    3 => tile_512::<3>(b, i, rows, j),
                    4 => tile_512::<4>(b, i, rows, j),
                    5 => tile_512::<5>(b, i, rows, j),
                    6 => tile_512::<6>(b, i, rows, j),
                    7 => tile_512::<7>(b, i, rows, j),
                    8 => tile_512::<8>(b, i, rows, j),
                    9 => tile_512::<9>(b, i, rows, j),
                    10 => tile_512::<10>(b, i, rows, j),
                    11 => tile_512::<11>(b, i, rows, j),
                    _ => tile_512::<12>(b, i, rows, j),
                }
            }
            j += w;
        }
        i += 2 * UNIT;
    }
}

/// Rows `i..i + rows` (at most 32, `i` a multiple of 32) by columns `j..j +
/// W`.
///
/// # Safety
/// As [`block_avx512`], for that tile of the block.
#[target_feature(enable = "avx512f,avx512vnni")]
#[inline]
unsafe fn tile_512<const W: usize>(b: &Block, i: usize, rows: usize, j: usize) {
    let units = [b.unit(i), b.unit(i + UNIT)];
    let c0 = j - b.j0;
    let mut acc = [[_mm512_setzero_si512(); 2]; W];
    let quads = b.kp / QUAD;
    if quads == 0 {
        // A product over no `k` is its start (`Blocked::run_job` fills such
        // a product before any tile; so here, should one come). Said before
        // the loop: where the loop might not run, LLVM kept the wide tiles'
        // sums in a stack array zeroed by a call of `memset` per tile (2-3 %
        // of an int8 LSTM step at batch 64).
        let p = b.product;
        // SAFETY: as the caller guarantees, the tile's elements.
        unsafe { fill(p.c, p.ldc, p.from, i..i + rows, j..j + W) };
        return;
    }
    for q in 0..quads {
        // SAFETY: the packed weights hold two units of `kp / 4` quads of
        // 64 bytes from row `i` (the rows are padded to 32).
        let (wa, wb) = unsafe {
            (
                _mm512_loadu_si512(units[0].add(q * 64).cast()),
                _mm512_loadu_si512(units[1].add(q * 64).cast()),
            )
        };
        for (c, sums) in acc.iter_mut().enumerate() {
            // SAFETY: column `c0 + c` of the block holds `kp` bytes.
            let x = _mm512_set1_epi32(unsafe { quad(b, c0 + c, q) });
            sums[0] = _mm512_dpbusd_epi32(sums[0], x, wa);
            sums[1] = _mm512_dpbusd_epi32(sums[1], x, wb);
        }
    }
    for (c, sums) in acc.iter().enumerate() {
        for (h, &sum) in sums.iter().enumerate() {
            let r0 = i + h * UNIT;
            if h * UNIT >= rows {
                break;
            }
            let valid = (rows - h * UNIT).min(UNIT);
            let mask: __mmask16 = if valid == UNIT {
                u16::MAX
            } else {
                (1u16 << valid) - 1
            };
            // SAFETY: the scales and sums hold the padded rows, 16 from
            // `r0`; the tile's rows `r0..r0 + valid` of column `j + c` are
            // the block's, as the caller guarantees.
            unsafe { finish_512(b, r0, j + c, mask, sum) };
        }
    }
}

/// Rows `r0..r0 + 16` (those `mask` keeps) of column `col` of `C` from
/// their integer sums, as [`super::Block::finish`] does: the
/// AVX512-VNNI tiles' and the AMX tiles' finish, so the same bits.
///
/// # Safety
/// As `Product::run_block`, for those elements of the block; the scales
/// and sums hold 16 rows from `r0`; the host has AVX-512F.
#[target_feature(enable = "avx512f")]
#[inline]
pub(super) unsafe fn finish_512(b: &Block, r0: usize, col: usize, mask: __mmask16, sum: __m512i) {
    let (sb, zb) = b.columns[col - b.j0];
    let dst = b.c(r0, col);
    // SAFETY: as the caller guarantees; the masked loads and the store
    // touch only the tile's elements of `C` (and of the bias row).
    unsafe {
        let row_sums = _mm512_loadu_si512(b.product.sums.add(r0).cast());
        let t = _mm512_sub_epi32(sum, _mm512_mullo_epi32(_mm512_set1_epi32(zb), row_sums));
        let scale = _mm512_mul_ps(
            _mm512_loadu_ps(b.product.scales.add(r0)),
            _mm512_set1_ps(sb),
        );
        let start = match b.product.from {
            From::Zero => _mm512_setzero_ps(),
            From::Dst => _mm512_maskz_loadu_ps(mask, dst),
            From::Row(r) => _mm512_maskz_loadu_ps(mask, r.add(r0)),
            From::Matrix { ptr, ld } => _mm512_maskz_loadu_ps(mask, ptr.add(r0 + col * ld)),
        };
        let v = _mm512_fmadd_ps(_mm512_cvtepi32_ps(t), scale, start);
        _mm512_mask_storeu_ps(dst, mask, v);
    }
}

/// The block on AVX-VNNI: tiles of 16 rows (a unit) by up to
/// [`COLUMNS_256`] columns.
///
/// # Safety
/// As `Product::run_block`, for the block's job; `i0` a multiple of 16; the
/// host has AVX2, FMA and AVX-VNNI.
#[target_feature(enable = "avx2,fma,avxvnni")]
pub(super) unsafe fn block_avx2(b: &Block) {
    let mut i = b.i0;
    while i < b.i1 {
        let rows = (b.i1 - i).min(UNIT);
        let mut j = b.j0;
        while j < b.j1 {
            let w = (b.j1 - j).min(COLUMNS_256);
            b.ahead(i, UNIT, j, w, COLUMNS_256);
            // SAFETY: as the caller guarantees; rows `i..i + rows` and
            // columns `j..j + w` are the block's.
            unsafe {
                match w {
                    1 => tile_256::<1>(b, i, rows, j),
                    2 => tile_256::<2>(b, i, rows, j),
                    3 => tile_256::<3>(b, i, rows, j),
                    4 => tile_256::<4>(b, i, rows, j),
                    5 => tile_256::<5>(b, i, rows, j),
                    _ => tile_256::<6>(b, i, rows, j),
                }
            }
            j += w;
        }
        i += UNIT;
    }
}

/// Rows `i..i + rows` (at most 16, `i` a multiple of 16) by columns `j..j +
/// W`.
///
/// # Safety
/// As [`block_avx2`], for that tile of the block.
#[target_feature(enable = "avx2,fma,avxvnni")]
#[inline]
unsafe fn tile_256<const W: usize>(b: &Block, i: usize, rows: usize, j: usize) {
    let unit = b.unit(i);
    let c0 = j - b.j0;
    let mut acc = [[_mm256_setzero_si256(); 2]; W];
    for q in 0..b.kp / QUAD {
        // SAFETY: the unit holds `kp / 4` quads of 64 bytes.
        let (wa, wb) = unsafe {
            (
                _mm256_loadu_si256(unit.add(q * 64).cast()),
                _mm256_loadu_si256(unit.add(q * 64 + 32).cast()),
            )
        };
        for (c, sums) in acc.iter_mut().enumerate() {
            // SAFETY: column `c0 + c` of the block holds `kp` bytes.
            let x = _mm256_set1_epi32(unsafe { quad(b, c0 + c, q) });
            sums[0] = _mm256_dpbusd_avx_epi32(sums[0], x, wa);
            sums[1] = _mm256_dpbusd_avx_epi32(sums[1], x, wb);
        }
    }
    const HALF: usize = UNIT / 2;
    for (c, sums) in acc.iter().enumerate() {
        for (h, &sum) in sums.iter().enumerate() {
            if h * HALF >= rows {
                break;
            }
            // SAFETY: as the caller guarantees, for these rows of the tile.
            unsafe { finish_256(b, i + h * HALF, (rows - h * HALF).min(HALF), j + c, sum) };
        }
    }
}

/// Rows `r0..r0 + valid` (at most 8) of column `col` of `C` from their
/// integer sums, on 256-bit vectors (the same operations as the AVX-512
/// finish, so the same bits).
///
/// # Safety
/// As `Product::run_block`, for those elements of the block; the scales and
/// sums hold 8 rows from `r0`; the host has AVX2 and FMA.
#[target_feature(enable = "avx2,fma")]
#[inline]
unsafe fn finish_256(b: &Block, r0: usize, valid: usize, col: usize, sum: __m256i) {
    let (sb, zb) = b.columns[col - b.j0];
    let dst = b.c(r0, col);
    // SAFETY: as the caller guarantees: the tail's loads and store touch
    // only those elements of `C` (and of the start); AVX2 (the `Simd`
    // tail moves whole vectors plainly, as a masked store is slow on AMD
    // before Zen 4).
    unsafe {
        let tail = Avx2::tail(valid);
        let row_sums = _mm256_loadu_si256(b.product.sums.add(r0).cast());
        let t = _mm256_sub_epi32(sum, _mm256_mullo_epi32(_mm256_set1_epi32(zb), row_sums));
        let scale = _mm256_mul_ps(
            _mm256_loadu_ps(b.product.scales.add(r0)),
            _mm256_set1_ps(sb),
        );
        let start = match b.product.from {
            From::Zero => _mm256_setzero_ps(),
            From::Dst => Avx2::load_tail(dst, tail),
            From::Row(r) => Avx2::load_tail(r.add(r0), tail),
            From::Matrix { ptr, ld } => Avx2::load_tail(ptr.add(r0 + col * ld), tail),
        };
        let v = _mm256_fmadd_ps(_mm256_cvtepi32_ps(t), scale, start);
        Avx2::store_tail(dst, v, tail);
    }
}

/// Columns per tile of the plain AVX2 kernel (eight sums a column, the
/// columns' quads and a weight vector in 16 registers).
const COLUMNS_MADD: usize = 3;

/// The block on plain AVX2 (no VNNI): tiles of 16 rows (a unit) by up to
/// [`COLUMNS_MADD`] columns. Each quad of four rows' four values is widened
/// to 16-bit (`vpmovsxbw`) and multiplied by the column's quad widened and
/// repeated (`vpmaddwd`: two products summed exactly into each 32-bit lane,
/// at most 2 x 127 x 255): the same integer sums as `vpdpbusd`, two lanes
/// per row, added pairwise at the end.
///
/// # Safety
/// As `Product::run_block`, for the block's job; `i0` a multiple of 16; the
/// host has AVX2 and FMA.
#[target_feature(enable = "avx2,fma")]
pub(super) unsafe fn block_madd(b: &Block) {
    let mut i = b.i0;
    while i < b.i1 {
        let rows = (b.i1 - i).min(UNIT);
        let mut j = b.j0;
        while j < b.j1 {
            let w = (b.j1 - j).min(COLUMNS_MADD);
            b.ahead(i, UNIT, j, w, COLUMNS_MADD);
            // SAFETY: as the caller guarantees; rows `i..i + rows` and
            // columns `j..j + w` are the block's.
            unsafe {
                match w {
                    1 => tile_madd::<1>(b, i, rows, j),
                    2 => tile_madd::<2>(b, i, rows, j),
                    _ => tile_madd::<3>(b, i, rows, j),
                }
            }
            j += w;
        }
        i += UNIT;
    }
}

/// Rows `i..i + rows` (at most 16, `i` a multiple of 16) by columns `j..j +
/// W` on plain AVX2.
///
/// # Safety
/// As [`block_madd`], for that tile of the block.
#[target_feature(enable = "avx2,fma")]
#[inline]
unsafe fn tile_madd<const W: usize>(b: &Block, i: usize, rows: usize, j: usize) {
    let unit = b.unit(i);
    let c0 = j - b.j0;
    // `acc[g][c]`: column `c`'s rows `4g..4g + 4`, row `r`'s two partial
    // sums in lanes `2 (r % 4)` and `2 (r % 4) + 1`.
    let mut acc = [[_mm256_setzero_si256(); W]; 4];
    for q in 0..b.kp / QUAD {
        let mut xs = [_mm256_setzero_si256(); W];
        for (c, x) in xs.iter_mut().enumerate() {
            // SAFETY: column `c0 + c` of the block holds `kp` bytes.
            let quad = unsafe { quad(b, c0 + c, q) };
            // Its four bytes as four 16-bit values, in every 64 bits.
            *x = _mm256_cvtepu8_epi16(_mm_set1_epi32(quad));
        }
        for (g, sums) in acc.iter_mut().enumerate() {
            // SAFETY: the unit holds `kp / 4` quads of 64 bytes.
            let w =
                _mm256_cvtepi8_epi16(unsafe { _mm_loadu_si128(unit.add(q * 64 + g * 16).cast()) });
            for (s, x) in sums.iter_mut().zip(&xs) {
                *s = _mm256_add_epi32(*s, _mm256_madd_epi16(w, *x));
            }
        }
    }
    // `hadd` of groups `a`, `b` gives rows a0 a1 b0 b1 a2 a3 b2 b3: back in order.
    let order = _mm256_setr_epi32(0, 1, 4, 5, 2, 3, 6, 7);
    let rows_of =
        |a: __m256i, b: __m256i| _mm256_permutevar8x32_epi32(_mm256_hadd_epi32(a, b), order);
    const HALF: usize = UNIT / 2;
    let [g0, g1, g2, g3] = acc;
    for (c, ((&a0, &a1), (&a2, &a3))) in g0.iter().zip(&g1).zip(g2.iter().zip(&g3)).enumerate() {
        let halves = [rows_of(a0, a1), rows_of(a2, a3)];
        for (h, &sum) in halves.iter().enumerate() {
            if h * HALF >= rows {
                break;
            }
            // SAFETY: as the caller guarantees, for these rows of the tile.
            unsafe { finish_256(b, i + h * HALF, (rows - h * HALF).min(HALF), j + c, sum) };
        }
    }
}

/// [`super::quantize`] on AVX2, 8 values at a time: as
/// [`quantize_avx512`], the same range, scale, zero point and bytes (the
/// portable path calls `rintf` per value: 43 % of a product of 6400
/// columns by 512 rows over 128 of `k` on Zen 3).
///
/// # Safety
/// The host has AVX2 and FMA; `q` is at least as long as `x`.
#[target_feature(enable = "avx2,fma")]
pub(super) unsafe fn quantize_avx2(x: &[f32], q: &mut [u8]) -> (f32, i32) {
    use crate::kernels::simd::lanes8;
    let n = x.len();
    // The vector from `at`: whole, or the values left (the other lanes 0,
    // which the range holds anyway).
    let load = |at: usize| {
        // SAFETY: the mask keeps the load inside `x`; AVX2, which this
        // function has.
        unsafe {
            if n - at >= 8 {
                _mm256_loadu_ps(x.as_ptr().add(at))
            } else {
                _mm256_maskload_ps(x.as_ptr().add(at), lanes8(n - at))
            }
        }
    };
    let (mut lo, mut hi) = (_mm256_setzero_ps(), _mm256_setzero_ps());
    let mut ordered = _mm256_castsi256_ps(_mm256_set1_epi32(-1));
    for at in (0..n).step_by(8) {
        let v = load(at);
        // `v - v` is NaN exactly where `v` is not finite.
        let d = _mm256_sub_ps(v, v);
        ordered = _mm256_and_ps(ordered, _mm256_cmp_ps::<_CMP_ORD_Q>(d, d));
        lo = _mm256_min_ps(lo, v);
        hi = _mm256_max_ps(hi, v);
    }
    q.fill(0);
    if _mm256_movemask_ps(ordered) != 0xff {
        return (f32::NAN, 0);
    }
    let (mut los, mut his) = ([0.0f32; 8], [0.0f32; 8]);
    // SAFETY: eight floats each.
    unsafe {
        _mm256_storeu_ps(los.as_mut_ptr(), lo);
        _mm256_storeu_ps(his.as_mut_ptr(), hi);
    }
    let lo = los.into_iter().fold(0.0f32, f32::min);
    let hi = his.into_iter().fold(0.0f32, f32::max);
    if hi == lo {
        return (1.0, 0);
    }
    let scale = (hi - lo) / 255.0;
    let inv = 1.0 / scale;
    let zero = (-lo * inv).round_ties_even().clamp(0.0, 255.0) as i32;
    let (vinv, vzero) = (_mm256_set1_ps(inv), _mm256_set1_epi32(zero));
    let (floor, ceil) = (_mm256_setzero_si256(), _mm256_set1_epi32(255));
    for at in (0..n).step_by(8) {
        let r = _mm256_add_epi32(_mm256_cvtps_epi32(_mm256_mul_ps(load(at), vinv)), vzero);
        let r = _mm256_min_epi32(_mm256_max_epi32(r, floor), ceil);
        // In 0..=255: the packs (saturating) keep every value.
        let words = _mm_packus_epi32(_mm256_castsi256_si128(r), _mm256_extracti128_si256::<1>(r));
        let bytes = _mm_packus_epi16(words, words);
        if n - at >= 8 {
            // SAFETY: `q` holds 8 bytes from `at` (as long as `x`).
            unsafe { _mm_storel_epi64(q.as_mut_ptr().add(at).cast(), bytes) };
        } else {
            let mut last = [0u8; 16];
            // SAFETY: 16 bytes.
            unsafe { _mm_storeu_si128(last.as_mut_ptr().cast(), bytes) };
            q[at..n].copy_from_slice(&last[..n - at]);
        }
    }
    (scale, zero)
}

/// [`super::quantize`] on AVX-512, 16 values at a time: the same range,
/// scale and zero point (min and max are exact in any order), and each
/// value's `round(x * (1 / scale))` by `vcvtps2dq` under the default
/// rounding (to nearest, ties to even), so the same bytes.
///
/// # Safety
/// The host has AVX512F; `q` is at least as long as `x`.
#[target_feature(enable = "avx512f")]
pub(super) unsafe fn quantize_avx512(x: &[f32], q: &mut [u8]) -> (f32, i32) {
    let n = x.len();
    let (mut lo, mut hi) = (_mm512_setzero_ps(), _mm512_setzero_ps());
    let mut finite = true;
    for at in (0..n).step_by(16) {
        let mask: __mmask16 = if n - at >= 16 {
            u16::MAX
        } else {
            (1u16 << (n - at)) - 1
        };
        // SAFETY: the mask keeps the loads inside `x` (the other lanes 0,
        // which the range holds anyway).
        let v = unsafe { _mm512_maskz_loadu_ps(mask, x.as_ptr().add(at)) };
        // `v - v` is NaN exactly where `v` is not finite.
        let d = _mm512_sub_ps(v, v);
        finite &= _mm512_cmp_ps_mask::<_CMP_ORD_Q>(d, d) == u16::MAX;
        lo = _mm512_min_ps(lo, v);
        hi = _mm512_max_ps(hi, v);
    }
    q.fill(0);
    if !finite {
        return (f32::NAN, 0);
    }
    let (lo, hi) = (_mm512_reduce_min_ps(lo), _mm512_reduce_max_ps(hi));
    if hi == lo {
        return (1.0, 0);
    }
    let scale = (hi - lo) / 255.0;
    let inv = 1.0 / scale;
    let zero = (-lo * inv).round_ties_even().clamp(0.0, 255.0) as i32;
    let (vinv, vzero) = (_mm512_set1_ps(inv), _mm512_set1_epi32(zero));
    let (floor, ceil) = (_mm512_setzero_si512(), _mm512_set1_epi32(255));
    for at in (0..n).step_by(16) {
        let mask: __mmask16 = if n - at >= 16 {
            u16::MAX
        } else {
            (1u16 << (n - at)) - 1
        };
        // SAFETY: the mask keeps the load and the store inside `x` and `q`
        // (as long, as the caller guarantees).
        unsafe {
            let v = _mm512_maskz_loadu_ps(mask, x.as_ptr().add(at));
            let r = _mm512_add_epi32(_mm512_cvtps_epi32(_mm512_mul_ps(v, vinv)), vzero);
            let r = _mm512_min_epi32(_mm512_max_epi32(r, floor), ceil);
            _mm512_mask_cvtepi32_storeu_epi8(q.as_mut_ptr().add(at).cast(), mask, r);
        }
    }
    (scale, zero)
}
