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
//! Kernels: AVX-512F (up to 12 batch rows by 32 weight rows: 24
//! accumulators), AVX2 + FMA (up to 6 by 16), and portable scalar code;
//! [`Isa::detect`] picks the widest the host has. One or two batch rows by
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

use crate::ir::Precision;

/// Weight rows per panel.
pub const PANEL: usize = 16;

/// Which kernel runs the products.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Isa {
    /// Portable Rust (`f32::mul_add`), on any target.
    #[default]
    Scalar,
    /// x86-64 with AVX2 and FMA: 256-bit vectors.
    Avx2,
    /// x86-64 with AVX-512F: 512-bit vectors.
    Avx512,
    /// aarch64's Advanced SIMD: 128-bit vectors.
    Neon,
}

impl Isa {
    pub const ALL: [Isa; 4] = [Isa::Scalar, Isa::Avx2, Isa::Avx512, Isa::Neon];

    pub fn name(self) -> &'static str {
        match self {
            Isa::Scalar => "scalar",
            Isa::Avx2 => "avx2",
            Isa::Avx512 => "avx512",
            Isa::Neon => "neon",
        }
    }

    pub fn from_name(s: &str) -> Option<Isa> {
        Isa::ALL.into_iter().find(|i| i.name() == s)
    }

    /// Whether this host can run the kernel.
    pub fn available(self) -> bool {
        match self {
            Isa::Scalar => true,
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2 => is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma"),
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512 => is_x86_feature_detected!("avx512f"),
            #[cfg(not(target_arch = "x86_64"))]
            Isa::Avx2 | Isa::Avx512 => false,
            // Advanced SIMD is part of every aarch64 Linux target.
            Isa::Neon => cfg!(target_arch = "aarch64"),
        }
    }

    /// Whether it has kernels for element-wise regions (`codegen::wide`);
    /// with [`Isa::Scalar`] and [`Isa::Neon`], regions run the generated
    /// 128-bit code.
    pub fn is_wide(self) -> bool {
        matches!(self, Isa::Avx2 | Isa::Avx512)
    }

    /// Floats per vector of its kernels (the generated code's 4 for
    /// [`Isa::Scalar`], whose regions it runs).
    pub fn lanes(self) -> usize {
        match self {
            Isa::Scalar | Isa::Neon => 4,
            Isa::Avx2 => 8,
            Isa::Avx512 => 16,
        }
    }

    /// The widest kernel the host has.
    pub fn detect() -> Isa {
        [Isa::Avx512, Isa::Avx2, Isa::Neon]
            .into_iter()
            .find(|i| i.available())
            .unwrap_or(Isa::Scalar)
    }
}

/// The fused multiply-add peak of one core at `isa`'s width, in GFLOP/s:
/// twelve independent chains of vector FMAs for about `seconds` (the
/// ceiling `cellc bench` compares the products with).
pub fn fma_peak_gflops(isa: Isa, seconds: f64) -> f64 {
    assert!(
        isa.available(),
        "fma_peak_gflops: {} is not available",
        isa.name()
    );
    let start = std::time::Instant::now();
    let mut rounds = 0u64;
    let mut sink = 0.0f32;
    let per_call = 100_000usize;
    while start.elapsed().as_secs_f64() < seconds {
        // SAFETY: `isa` is available. (`black_box`: the call is pure, and
        // would be made once for the whole loop.)
        sink += unsafe { fma_chains(isa, std::hint::black_box(per_call)) };
        rounds += 1;
    }
    std::hint::black_box(sink);
    let lanes = match isa {
        Isa::Avx512 => 16.0,
        Isa::Avx2 => 8.0,
        Isa::Neon => 4.0,
        Isa::Scalar => 1.0,
    };
    let flops = rounds as f64 * per_call as f64 * 12.0 * lanes * 2.0;
    flops / start.elapsed().as_secs_f64() / 1e9
}

/// # Safety
/// The host has `isa`.
unsafe fn fma_chains(isa: Isa, n: usize) -> f32 {
    match isa {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: as the caller guarantees.
        Isa::Avx512 => unsafe { x86::chains_avx512(n) },
        #[cfg(target_arch = "x86_64")]
        // SAFETY: as the caller guarantees.
        Isa::Avx2 => unsafe { x86::chains_avx2(n) },
        #[cfg(target_arch = "aarch64")]
        // SAFETY: Advanced SIMD is always there on aarch64.
        Isa::Neon => unsafe { neon::chains(n) },
        _ => {
            let mut acc = [0.0f32; 12];
            for _ in 0..n {
                for a in acc.iter_mut() {
                    *a = std::hint::black_box(1.000_000_1f32).mul_add(*a, 0.999_999_9);
                }
            }
            acc.iter().sum()
        }
    }
}

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
                    narrow_tile(
                        isa,
                        panels.precision,
                        w,
                        panels.scales.wrapping_add(p * GROUP),
                        kc,
                        x.wrapping_add(b * x_stride + k0),
                        x_stride,
                        nb,
                        tile,
                    )
                };
                b += nb;
            }
            k0 += kc;
        }
        p += width;
    }
}

/// One narrow tile: for each group `q` of `w` (32 rows, `kc` columns), rows
/// `i < nb` of `x`: bf16 `tile[i][32q + r] += sum_c w_q[c][r] x[i][c]`
/// (the even columns' chain from the tile's value, the odd columns' from
/// zero: `narrow_scalar`); int8 the sum from zero, then
/// `tile = sum * scale + tile`.
///
/// # Safety
/// Each `w[q]` holds `kc` columns of a group at `precision`; for int8
/// `scales` holds `tile.rows` floats; `x` holds `nb` rows (at most the ISA's
/// tile rows) of `kc` floats at `x_stride`; the tile `nb` rows of which the
/// first `tile.rows` floats are read and written; the host has `isa`.
#[allow(clippy::too_many_arguments)]
unsafe fn narrow_tile(
    isa: Isa,
    precision: Precision,
    w: [*const u8; NARROW_GROUPS],
    scales: *const f32,
    kc: usize,
    x: *const f32,
    x_stride: usize,
    nb: usize,
    tile: Tile,
) {
    #[cfg(target_arch = "x86_64")]
    let int8 = precision == Precision::Int8;
    match isa {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: as the caller guarantees (AVX-512F is available).
        Isa::Avx512 => unsafe {
            // Vectors of 16 rows: two per group, and a tile of one group
            // (a unit of 32 rows) computes no second one of zeros. Two
            // chains per row and vector: four vectors at a time for one or
            // two rows, two for three or four (at most 16 accumulators).
            let two = tile.rows > GROUP;
            macro_rules! rows {
                ($(($n:literal, $v:literal))*) => {
                    match (nb, int8, two) {
                        $(($n, false, false) => x86::narrow_avx512::<$n, false, 2, 2>(w, scales, kc, x, x_stride, tile),
                          ($n, true, false) => x86::narrow_avx512::<$n, true, 2, 2>(w, scales, kc, x, x_stride, tile),
                          ($n, false, true) => x86::narrow_avx512::<$n, false, 4, $v>(w, scales, kc, x, x_stride, tile),
                          ($n, true, true) => x86::narrow_avx512::<$n, true, 4, $v>(w, scales, kc, x, x_stride, tile),)*
                        _ => unreachable!("narrow_tile: {nb} rows"),
                    }
                };
            }
            rows!((1, 4)(2, 4)(3, 2)(4, 2))
        },
        #[cfg(target_arch = "x86_64")]
        // SAFETY: as the caller guarantees (AVX2 and FMA are available).
        Isa::Avx2 => unsafe {
            // A group's four vectors of 8 rows at a time for one row, two
            // at a time for two (eight accumulators of the 16 registers).
            match (nb, int8) {
                (1, false) => x86::narrow_avx2::<1, false, 4>(w, scales, kc, x, x_stride, tile),
                (1, true) => x86::narrow_avx2::<1, true, 4>(w, scales, kc, x, x_stride, tile),
                (2, false) => x86::narrow_avx2::<2, false, 2>(w, scales, kc, x, x_stride, tile),
                (2, true) => x86::narrow_avx2::<2, true, 2>(w, scales, kc, x, x_stride, tile),
                _ => unreachable!("narrow_tile: {nb} rows"),
            }
        },
        #[cfg(target_arch = "aarch64")]
        // SAFETY: as the caller guarantees (`product_narrow` gives NEON one
        // group and one row per tile).
        Isa::Neon => unsafe {
            debug_assert_eq!(nb, 1);
            if precision == Precision::Int8 {
                neon::narrow::<true>(w[0], scales, kc, x, tile)
            } else {
                neon::narrow::<false>(w[0], scales, kc, x, tile)
            }
        },
        // SAFETY: as the caller guarantees.
        _ => unsafe { narrow_scalar(precision, w[0], scales, kc, x, x_stride, nb, tile) },
    }
}

/// The widened value of row `lane` and column `c` of a narrow group at `w`
/// (the layout of [`group_bytes`]).
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
/// As [`narrow_tile`], one group (`tile.rows <= 32`).
#[allow(clippy::too_many_arguments)]
unsafe fn narrow_scalar(
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
                    tile_kernel(
                        isa,
                        w.wrapping_add(k0 * PANEL),
                        k,
                        kc,
                        np,
                        x.wrapping_add(b * x_stride + k0),
                        x_stride,
                        nb,
                        tile,
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

/// One tile: `tile[i][r] += sum_{c < kc} w[c][r] x[i][c]` for `i < nb`, `r`
/// below `tile.rows` (at most `16 np`), each sum one chain of fused
/// multiply-adds continuing from the tile's value, in `c` order.
///
/// # Safety
/// `w` holds `kc` columns of 16 weights, and each of the next `np - 1`
/// panels its `kc` columns `16 k` floats further than the one before; `np`
/// is 1, 2 (only for AVX-512), or up to [`SHORT_PANELS`] when `nb <=
/// SHORT_ROWS`; `x` holds `nb` rows (at most the kernel's: [`MR_AVX512`]
/// for AVX-512, [`MR`] for the others) of `x_stride` floats of which `kc`
/// are read; the tile holds `nb` rows of which the first `tile.rows` floats
/// are read and written, and nothing else touches them meanwhile; the host
/// has `isa`.
#[allow(clippy::too_many_arguments)]
unsafe fn tile_kernel(
    isa: Isa,
    w: *const f32,
    k: usize,
    kc: usize,
    np: usize,
    x: *const f32,
    x_stride: usize,
    nb: usize,
    tile: Tile,
) {
    #[cfg(target_arch = "x86_64")]
    let w1 = w.wrapping_add(PANEL * k);
    match isa {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: as the caller guarantees (AVX-512F is available).
        Isa::Avx512 if np > 2 => unsafe {
            x86::short_avx512(w, PANEL * k, kc, np, x, x_stride, nb, tile)
        },
        #[cfg(target_arch = "x86_64")]
        // SAFETY: as the caller guarantees (AVX-512F is available).
        Isa::Avx512 => unsafe { x86::tile_avx512_rows(w, w1, kc, np == 2, x, x_stride, nb, tile) },
        #[cfg(target_arch = "x86_64")]
        // SAFETY: as the caller guarantees (AVX2 and FMA are available).
        Isa::Avx2 if np > 1 => unsafe {
            x86::short_avx2(w, PANEL * k, kc, np, x, x_stride, nb, tile)
        },
        #[cfg(target_arch = "x86_64")]
        // SAFETY: as the caller guarantees (AVX2 and FMA are available).
        Isa::Avx2 => unsafe { x86::tile_avx2_rows(w, kc, x, x_stride, nb, tile) },
        #[cfg(target_arch = "aarch64")]
        // SAFETY: as the caller guarantees (`product_raw` gives NEON short
        // tiles of one row by up to four panels or two by two).
        Isa::Neon if np > 1 => unsafe {
            match (nb, np) {
                (1, 2) => neon::short::<1, 2>(w, PANEL * k, kc, x, x_stride, tile),
                (1, 3) => neon::short::<1, 3>(w, PANEL * k, kc, x, x_stride, tile),
                (1, 4) => neon::short::<1, 4>(w, PANEL * k, kc, x, x_stride, tile),
                (2, 2) => neon::short::<2, 2>(w, PANEL * k, kc, x, x_stride, tile),
                _ => unreachable!("tile_kernel: {nb} rows by {np} panels"),
            }
        },
        #[cfg(target_arch = "aarch64")]
        // SAFETY: as above (one panel by up to `MR` rows).
        Isa::Neon => unsafe {
            match nb {
                1 => neon::tile::<1>(w, kc, x, x_stride, tile),
                2 => neon::tile::<2>(w, kc, x, x_stride, tile),
                3 => neon::tile::<3>(w, kc, x, x_stride, tile),
                4 => neon::tile::<4>(w, kc, x, x_stride, tile),
                5 => neon::tile::<5>(w, kc, x, x_stride, tile),
                6 => neon::tile::<6>(w, kc, x, x_stride, tile),
                _ => unreachable!("tile_kernel: {nb} rows"),
            }
        },
        // SAFETY: as the caller guarantees.
        _ => unsafe {
            let mut panels = [w; SHORT_PANELS];
            for (q, p) in panels.iter_mut().enumerate() {
                *p = w.wrapping_add(q * PANEL * k);
            }
            tile_scalar(&panels[..np], kc, x, x_stride, nb, tile)
        },
    }
}

/// # Safety
/// As [`tile_kernel`], the panels' first columns at `panels`.
unsafe fn tile_scalar(
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

/// The first `n` of 8 lanes, as AVX's `maskload`/`maskstore` take them (also
/// the wide regions' tails).
#[cfg(target_arch = "x86_64")]
pub(crate) use x86::lanes8;

/// The Advanced SIMD kernels: a tile of one panel (four vectors of 4 rows)
/// by up to [`MR`] batch rows, 24 of the 32 registers in accumulators, or
/// for one or two batch rows a short tile of up to four panels, each sum one
/// chain of fused multiply-adds in `k` order (`vfmaq`); narrow
/// groups one batch row at a time, in `narrow_scalar`'s two chains. Both
/// give the scalar kernels' bits. Partial panels and groups go through
/// buffers: the ISA has no masked loads or stores.
#[cfg(target_arch = "aarch64")]
mod neon {
    use super::{Tile, GROUP, PANEL};
    use std::arch::aarch64::*;

    /// # Safety
    /// As `tile_kernel`, one panel and `R` rows.
    pub(super) unsafe fn tile<const R: usize>(
        w: *const f32,
        kc: usize,
        x: *const f32,
        x_stride: usize,
        tile: Tile,
    ) {
        let rows = tile.rows.min(PANEL);
        // SAFETY: as the caller guarantees: the panel holds `kc` columns of
        // 16 floats (padded); rows `i < R` of `x` hold `kc` floats; the
        // tile's rows `i < R` hold `rows` floats, and so do its starts.
        unsafe {
            let mut acc = [[vdupq_n_f32(0.0); 4]; R];
            for (i, a) in acc.iter_mut().enumerate() {
                if let Some(d) = tile.start(i) {
                    let mut buf = [0.0f32; PANEL];
                    std::ptr::copy_nonoverlapping(d, buf.as_mut_ptr(), rows);
                    for (v, a) in a.iter_mut().enumerate() {
                        *a = vld1q_f32(buf.as_ptr().add(4 * v));
                    }
                }
            }
            for c in 0..kc {
                let p = w.add(c * PANEL);
                let wv = [
                    vld1q_f32(p),
                    vld1q_f32(p.add(4)),
                    vld1q_f32(p.add(8)),
                    vld1q_f32(p.add(12)),
                ];
                for (i, a) in acc.iter_mut().enumerate() {
                    let xv = *x.add(i * x_stride + c);
                    for v in 0..4 {
                        a[v] = vfmaq_n_f32(a[v], wv[v], xv);
                    }
                }
            }
            for (i, a) in acc.iter().enumerate() {
                let mut buf = [0.0f32; PANEL];
                for (v, a) in a.iter().enumerate() {
                    vst1q_f32(buf.as_mut_ptr().add(4 * v), *a);
                }
                std::ptr::copy_nonoverlapping(buf.as_ptr(), tile.ptr.add(i * tile.stride), rows);
            }
        }
    }

    /// A short tile: `R` batch rows (one or two) by `NP` panels (`R * NP <=
    /// 4`: at most 16 accumulators), so that a batch of one row still keeps
    /// 8 to 16 chains of fused multiply-adds in flight. Each sum is one
    /// chain in `k` order, as in `tile`.
    ///
    /// # Safety
    /// As `tile_kernel`: `NP` panels `panel_stride` floats apart, `R` rows.
    #[allow(clippy::needless_range_loop)] // one index into three arrays
    pub(super) unsafe fn short<const R: usize, const NP: usize>(
        w: *const f32,
        panel_stride: usize,
        kc: usize,
        x: *const f32,
        x_stride: usize,
        tile: Tile,
    ) {
        let rows = tile.rows.min(NP * PANEL);
        // SAFETY: as the caller guarantees: each of the `NP` panels holds
        // `kc` columns of 16 floats; rows `i < R` of `x` hold `kc` floats;
        // the tile's rows and their starts hold `rows` floats, copied
        // through buffers of 64.
        unsafe {
            let mut acc = [[[vdupq_n_f32(0.0); 4]; NP]; R];
            for (i, a) in acc.iter_mut().enumerate() {
                if let Some(d) = tile.start(i) {
                    let mut buf = [0.0f32; 4 * PANEL];
                    std::ptr::copy_nonoverlapping(d, buf.as_mut_ptr(), rows);
                    for (q, a) in a.iter_mut().enumerate() {
                        for (v, a) in a.iter_mut().enumerate() {
                            *a = vld1q_f32(buf.as_ptr().add(q * PANEL + 4 * v));
                        }
                    }
                }
            }
            for c in 0..kc {
                let mut xv = [0.0f32; R];
                for (i, v) in xv.iter_mut().enumerate() {
                    *v = *x.add(i * x_stride + c);
                }
                for q in 0..NP {
                    let p = w.add(q * panel_stride + c * PANEL);
                    for v in 0..4 {
                        let wv = vld1q_f32(p.add(4 * v));
                        for i in 0..R {
                            acc[i][q][v] = vfmaq_n_f32(acc[i][q][v], wv, xv[i]);
                        }
                    }
                }
            }
            for (i, a) in acc.iter().enumerate() {
                let mut buf = [0.0f32; 4 * PANEL];
                for (q, a) in a.iter().enumerate() {
                    for (v, a) in a.iter().enumerate() {
                        vst1q_f32(buf.as_mut_ptr().add(q * PANEL + 4 * v), *a);
                    }
                }
                std::ptr::copy_nonoverlapping(buf.as_ptr(), tile.ptr.add(i * tile.stride), rows);
            }
        }
    }

    /// Sixteen rows of a narrow group (`panel::group_bytes`) widened, four
    /// vectors of columns `c` and, unless `alone`, `c + 1`: bf16 by a shift
    /// and a mask of the pair's words, int8 by two sign extensions and a
    /// conversion of the column's 16 bytes.
    ///
    /// # Safety
    /// The group at `g` holds columns `c` and (unless `alone`) `c + 1`.
    #[inline(always)]
    unsafe fn columns<const INT8: bool>(
        g: *const u8,
        half: usize,
        c: usize,
        alone: bool,
    ) -> ([float32x4_t; 4], [float32x4_t; 4]) {
        // SAFETY: as the caller guarantees.
        unsafe {
            if INT8 {
                let col = |c: usize| {
                    let b = vld1q_s8(g.add(c * GROUP + half * PANEL).cast());
                    let (lo, hi) = (vmovl_s8(vget_low_s8(b)), vmovl_high_s8(b));
                    [
                        vcvtq_f32_s32(vmovl_s16(vget_low_s16(lo))),
                        vcvtq_f32_s32(vmovl_high_s16(lo)),
                        vcvtq_f32_s32(vmovl_s16(vget_low_s16(hi))),
                        vcvtq_f32_s32(vmovl_high_s16(hi)),
                    ]
                };
                let next = if alone {
                    [vdupq_n_f32(0.0); 4]
                } else {
                    col(c + 1)
                };
                (col(c), next)
            } else {
                let p = g.add(c * GROUP * 2 + half * PANEL * 4).cast::<u32>();
                let high = vdupq_n_u32(0xffff_0000);
                let mut lo = [vdupq_n_f32(0.0); 4];
                let mut hi = [vdupq_n_f32(0.0); 4];
                for j in 0..4 {
                    let v = vld1q_u32(p.add(4 * j));
                    lo[j] = vreinterpretq_f32_u32(vshlq_n_u32::<16>(v));
                    hi[j] = vreinterpretq_f32_u32(vandq_u32(v, high));
                }
                (lo, hi)
            }
        }
    }

    /// One batch row by one narrow group (32 rows), sixteen rows at a time,
    /// summed in `narrow_scalar`'s order (two chains per row, `vfmaq`).
    ///
    /// # Safety
    /// As `narrow_tile`, one row (`nb == 1`), the group at `w`.
    pub(super) unsafe fn narrow<const INT8: bool>(
        w: *const u8,
        scales: *const f32,
        kc: usize,
        x: *const f32,
        tile: Tile,
    ) {
        let rows = tile.rows.min(GROUP);
        // SAFETY: as the caller guarantees: the group holds `kc` columns;
        // `x` holds `kc` floats; the tile, its start and (int8) `scales`
        // hold `rows` floats, copied through buffers of 32.
        unsafe {
            let mut old = [0.0f32; GROUP];
            if let Some(d) = tile.start(0) {
                std::ptr::copy_nonoverlapping(d, old.as_mut_ptr(), rows);
            }
            let mut scale = [0.0f32; GROUP];
            if INT8 {
                std::ptr::copy_nonoverlapping(scales, scale.as_mut_ptr(), rows);
            }
            let mut out = [0.0f32; GROUP];
            for half in 0..2 {
                let at = |j: usize| half * PANEL + 4 * j;
                let mut even = [vdupq_n_f32(0.0); 4];
                let mut odd = [vdupq_n_f32(0.0); 4];
                if !INT8 {
                    for (j, e) in even.iter_mut().enumerate() {
                        *e = vld1q_f32(old.as_ptr().add(at(j)));
                    }
                }
                let mut c = 0;
                while c + 1 < kc {
                    let (x0, x1) = (*x.add(c), *x.add(c + 1));
                    let (lo, hi) = columns::<INT8>(w, half, c, false);
                    for j in 0..4 {
                        even[j] = vfmaq_n_f32(even[j], lo[j], x0);
                        odd[j] = vfmaq_n_f32(odd[j], hi[j], x1);
                    }
                    c += 2;
                }
                if c < kc {
                    let (lo, _) = columns::<INT8>(w, half, c, true);
                    for j in 0..4 {
                        even[j] = vfmaq_n_f32(even[j], lo[j], *x.add(c));
                    }
                }
                for j in 0..4 {
                    let sum = vaddq_f32(even[j], odd[j]);
                    let v = if INT8 {
                        vfmaq_f32(
                            vld1q_f32(old.as_ptr().add(at(j))),
                            sum,
                            vld1q_f32(scale.as_ptr().add(at(j))),
                        )
                    } else {
                        sum
                    };
                    vst1q_f32(out.as_mut_ptr().add(at(j)), v);
                }
            }
            std::ptr::copy_nonoverlapping(out.as_ptr(), tile.ptr, rows);
        }
    }

    /// Twelve independent chains of vector fused multiply-adds, `n` rounds
    /// (`fma_peak_gflops`).
    ///
    /// # Safety
    /// None beyond the target's: Advanced SIMD is always there.
    pub(super) unsafe fn chains(n: usize) -> f32 {
        // SAFETY: register arithmetic only.
        unsafe {
            let a = vdupq_n_f32(std::hint::black_box(1.000_000_1f32));
            let b = vdupq_n_f32(0.999_999_9);
            let mut acc = [vdupq_n_f32(0.0); 12];
            for _ in 0..n {
                for v in acc.iter_mut() {
                    *v = vfmaq_f32(b, a, *v);
                }
            }
            let mut sum = vdupq_n_f32(0.0);
            for v in acc {
                sum = vaddq_f32(sum, v);
            }
            vaddvq_f32(sum)
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::{Tile, GROUP, MR, MR_AVX512, NARROW_GROUPS, PANEL};
    use std::arch::x86_64::*;

    /// One `k` step of a tile's rows below `$r`, in threes from the base
    /// pointers (`$row!(base, row, offset)` for rows `3j + o` from base `j`,
    /// offset `o`), then each base in use advanced by a column and made
    /// opaque (see [`opaque`]).
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

    /// # Safety
    /// As `narrow_tile`, `R` rows, `NV` vectors of 16 rows (2: the first
    /// group of `w`; 4: both), `V` of them at a time (each vector holds two
    /// chains per row: `R * V * 2` accumulators); AVX-512F available.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn narrow_avx512<
        const R: usize,
        const INT8: bool,
        const NV: usize,
        const V: usize,
    >(
        w: [*const u8; NARROW_GROUPS],
        scales: *const f32,
        kc: usize,
        x: *const f32,
        x_stride: usize,
        tile: Tile,
    ) {
        // The widened columns `c` and, unless `ALONE`, `c + 1` of vector
        // `q` (16 rows). bf16: one load holds both columns (an odd last
        // column's pair has zeros for its high halves); int8: 16 bytes a
        // column.
        #[inline(always)]
        unsafe fn columns<const INT8: bool, const ALONE: bool>(
            w: [*const u8; NARROW_GROUPS],
            q: usize,
            c: usize,
        ) -> (__m512, __m512) {
            // SAFETY: as `narrow_avx512`'s caller guarantees.
            unsafe {
                let g = w[q / 2];
                if INT8 {
                    let col = |c: usize| {
                        _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128(
                            g.add(c * GROUP + (q % 2) * PANEL).cast(),
                        )))
                    };
                    let next = if ALONE {
                        _mm512_setzero_ps()
                    } else {
                        col(c + 1)
                    };
                    (col(c), next)
                } else {
                    let v = _mm512_loadu_si512(g.add(c * GROUP * 2 + (q % 2) * 64).cast());
                    let high = _mm512_set1_epi32(0xffff_0000u32 as i32);
                    (
                        _mm512_castsi512_ps(_mm512_slli_epi32::<16>(v)),
                        _mm512_castsi512_ps(_mm512_and_si512(v, high)),
                    )
                }
            }
        }
        // SAFETY: as the caller guarantees; the tile's loads and stores, and
        // the scales', are masked to its `rows` columns.
        unsafe {
            let mut s = 0;
            while s < NV {
                let mut mask = [0 as __mmask16; V];
                for (j, m) in mask.iter_mut().enumerate() {
                    *m = lanes16(tile.rows.saturating_sub((s + j) * PANEL));
                }
                // The two chains of `narrow_scalar`, per row and vector.
                let mut even = [[_mm512_setzero_ps(); V]; R];
                let mut odd = [[_mm512_setzero_ps(); V]; R];
                if !INT8 {
                    for (i, e) in even.iter_mut().enumerate() {
                        if let Some(d) = tile.start(i) {
                            for j in 0..V {
                                e[j] = _mm512_maskz_loadu_ps(mask[j], d.add((s + j) * PANEL));
                            }
                        }
                    }
                }
                let mut c = 0;
                while c + 1 < kc {
                    let mut x0 = [_mm512_setzero_ps(); R];
                    let mut x1 = [_mm512_setzero_ps(); R];
                    for i in 0..R {
                        x0[i] = _mm512_set1_ps(*x.add(i * x_stride + c));
                        x1[i] = _mm512_set1_ps(*x.add(i * x_stride + c + 1));
                    }
                    for j in 0..V {
                        let (lo, hi) = columns::<INT8, false>(w, s + j, c);
                        for i in 0..R {
                            even[i][j] = _mm512_fmadd_ps(lo, x0[i], even[i][j]);
                            odd[i][j] = _mm512_fmadd_ps(hi, x1[i], odd[i][j]);
                        }
                    }
                    c += 2;
                }
                if c < kc {
                    for j in 0..V {
                        let (lo, _) = columns::<INT8, true>(w, s + j, c);
                        for (i, e) in even.iter_mut().enumerate() {
                            e[j] =
                                _mm512_fmadd_ps(lo, _mm512_set1_ps(*x.add(i * x_stride + c)), e[j]);
                        }
                    }
                }
                for i in 0..R {
                    let d = tile.ptr.add(i * tile.stride);
                    for j in 0..V {
                        let sum = _mm512_add_ps(even[i][j], odd[i][j]);
                        let at = (s + j) * PANEL;
                        let out = if INT8 {
                            let scale = _mm512_maskz_loadu_ps(mask[j], scales.add(at));
                            let old = match tile.start(i) {
                                Some(o) => _mm512_maskz_loadu_ps(mask[j], o.add(at)),
                                None => _mm512_setzero_ps(),
                            };
                            _mm512_fmadd_ps(sum, scale, old)
                        } else {
                            sum
                        };
                        _mm512_mask_storeu_ps(d.add(at), mask[j], out);
                    }
                }
                s += V;
            }
        }
    }

    /// # Safety
    /// As `narrow_tile`, `R` rows, the first group of `w` (four vectors of
    /// 8 rows), `V` vectors at a time (`R * V * 2` accumulators of the 16
    /// registers); AVX2 and FMA available.
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn narrow_avx2<const R: usize, const INT8: bool, const V: usize>(
        w: [*const u8; NARROW_GROUPS],
        scales: *const f32,
        kc: usize,
        x: *const f32,
        x_stride: usize,
        tile: Tile,
    ) {
        const NV: usize = 4;
        // The widened columns `c` and, unless `ALONE`, `c + 1` of vector
        // `h` (8 rows), as in `narrow_avx512` (int8: 8 bytes a column).
        #[inline(always)]
        unsafe fn columns<const INT8: bool, const ALONE: bool>(
            g: *const u8,
            h: usize,
            c: usize,
        ) -> (__m256, __m256) {
            // SAFETY: as `narrow_avx2`'s caller guarantees.
            unsafe {
                if INT8 {
                    let col = |c: usize| {
                        _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64(
                            g.add(c * GROUP + h * 8).cast(),
                        )))
                    };
                    let next = if ALONE {
                        _mm256_setzero_ps()
                    } else {
                        col(c + 1)
                    };
                    (col(c), next)
                } else {
                    let v = _mm256_loadu_si256(g.add(c * GROUP * 2 + h * 32).cast());
                    let high = _mm256_set1_epi32(0xffff_0000u32 as i32);
                    (
                        _mm256_castsi256_ps(_mm256_slli_epi32::<16>(v)),
                        _mm256_castsi256_ps(_mm256_and_si256(v, high)),
                    )
                }
            }
        }
        // SAFETY: as in `narrow_avx512`.
        unsafe {
            let mut s = 0;
            while s < NV {
                let mut mask = [_mm256_setzero_si256(); V];
                for (j, m) in mask.iter_mut().enumerate() {
                    *m = lanes8(tile.rows.saturating_sub((s + j) * 8));
                }
                let mut even = [[_mm256_setzero_ps(); V]; R];
                let mut odd = [[_mm256_setzero_ps(); V]; R];
                if !INT8 {
                    for (i, e) in even.iter_mut().enumerate() {
                        if let Some(d) = tile.start(i) {
                            for j in 0..V {
                                e[j] = _mm256_maskload_ps(d.add((s + j) * 8), mask[j]);
                            }
                        }
                    }
                }
                let mut c = 0;
                while c + 1 < kc {
                    let mut x0 = [_mm256_setzero_ps(); R];
                    let mut x1 = [_mm256_setzero_ps(); R];
                    for i in 0..R {
                        x0[i] = _mm256_set1_ps(*x.add(i * x_stride + c));
                        x1[i] = _mm256_set1_ps(*x.add(i * x_stride + c + 1));
                    }
                    for j in 0..V {
                        let (lo, hi) = columns::<INT8, false>(w[0], s + j, c);
                        for i in 0..R {
                            even[i][j] = _mm256_fmadd_ps(lo, x0[i], even[i][j]);
                            odd[i][j] = _mm256_fmadd_ps(hi, x1[i], odd[i][j]);
                        }
                    }
                    c += 2;
                }
                if c < kc {
                    for j in 0..V {
                        let (lo, _) = columns::<INT8, true>(w[0], s + j, c);
                        for (i, e) in even.iter_mut().enumerate() {
                            e[j] =
                                _mm256_fmadd_ps(lo, _mm256_set1_ps(*x.add(i * x_stride + c)), e[j]);
                        }
                    }
                }
                for i in 0..R {
                    let d = tile.ptr.add(i * tile.stride);
                    for j in 0..V {
                        let sum = _mm256_add_ps(even[i][j], odd[i][j]);
                        let at = (s + j) * 8;
                        let out = if INT8 {
                            let scale = _mm256_maskload_ps(scales.add(at), mask[j]);
                            let old = match tile.start(i) {
                                Some(o) => _mm256_maskload_ps(o.add(at), mask[j]),
                                None => _mm256_setzero_ps(),
                            };
                            _mm256_fmadd_ps(sum, scale, old)
                        } else {
                            sum
                        };
                        _mm256_maskstore_ps(d.add(at), mask[j], out);
                    }
                }
                s += V;
            }
        }
    }

    /// The first `n` of 16 lanes (all of them from 16 on).
    #[inline(always)]
    fn lanes16(n: usize) -> __mmask16 {
        if n >= 16 {
            0xffff
        } else {
            ((1u32 << n) - 1) as __mmask16
        }
    }

    /// All-ones words then zeros: a window of 8 is the mask of 0..=8 lanes.
    static WINDOW: [i32; 16] = [-1, -1, -1, -1, -1, -1, -1, -1, 0, 0, 0, 0, 0, 0, 0, 0];

    /// The first `n` of 8 lanes (all of them from 8 on), for `maskload`.
    ///
    /// # Safety
    /// AVX available.
    #[inline(always)]
    pub(crate) unsafe fn lanes8(n: usize) -> __m256i {
        // SAFETY: `8 - min(n, 8)` is in 0..=8: the 8 words read are inside
        // the table; AVX as the caller guarantees.
        unsafe { _mm256_loadu_si256(WINDOW.as_ptr().add(8 - n.min(8)).cast()) }
    }

    /// [`tile_avx512`] for a tile of `nb` batch rows: the rows are a
    /// constant in each kernel, so its accumulators stay in registers.
    ///
    /// # Safety
    /// As `tile_kernel`, `nb <= MR_AVX512`; AVX-512F available.
    #[allow(clippy::too_many_arguments)]
    pub(super) unsafe fn tile_avx512_rows(
        w: *const f32,
        w1: *const f32,
        k: usize,
        two: bool,
        x: *const f32,
        x_stride: usize,
        nb: usize,
        tile: Tile,
    ) {
        macro_rules! rows {
            ($($n:literal)*) => {
                match nb {
                    // SAFETY: as the caller guarantees.
                    $($n if two => unsafe { tile_avx512::<$n, true>(w, w1, k, x, x_stride, tile) },)*
                    // SAFETY: as the caller guarantees.
                    $($n => unsafe { tile_avx512::<$n, false>(w, w1, k, x, x_stride, tile) },)*
                    _ => unreachable!("a tile of {nb} batch rows"),
                }
            };
        }
        const _: () = assert!(MR_AVX512 == 12);
        rows!(1 2 3 4 5 6 7 8 9 10 11 12)
    }

    /// # Safety
    /// As `tile_kernel`, `R` batch rows, two panels if `TWO`; AVX-512F
    /// available.
    #[target_feature(enable = "avx512f")]
    #[allow(clippy::too_many_arguments)]
    unsafe fn tile_avx512<const R: usize, const TWO: bool>(
        w: *const f32,
        w1: *const f32,
        k: usize,
        x: *const f32,
        x_stride: usize,
        tile: Tile,
    ) {
        // SAFETY: loads of `w` stay within the panels, of `x` within rows
        // `< R`, as the caller guarantees; the tile's loads and stores are
        // masked to its `rows` columns.
        unsafe {
            let m0 = lanes16(tile.rows);
            let m1 = lanes16(tile.rows.saturating_sub(PANEL));
            let mut a0 = [_mm512_setzero_ps(); R];
            let mut a1 = [_mm512_setzero_ps(); R];
            for i in 0..R {
                if let Some(d) = tile.start(i) {
                    a0[i] = _mm512_maskz_loadu_ps(m0, d);
                    a1[i] = _mm512_maskz_loadu_ps(m1, d.add(PANEL));
                }
            }
            // Batch rows in threes from a base pointer each, so every
            // broadcast addresses `[base + stride * {0, 1, 2}]` and the loop
            // adds only to the bases: the integer work would otherwise take
            // issue slots from the FMAs (measured: 3–4 % of the kernel).
            let stride = x_stride * 4;
            let mut b0 = x;
            let mut b1 = x.wrapping_add(3 * x_stride);
            let mut b2 = x.wrapping_add(6 * x_stride);
            let mut b3 = x.wrapping_add(9 * x_stride);
            let (mut p0, mut p1) = (w, w1);
            for _ in 0..k {
                // The weights `PREFETCH` columns ahead (see there).
                _mm_prefetch::<_MM_HINT_T1>(p0.wrapping_add(PREFETCH * super::PANEL).cast());
                if TWO {
                    _mm_prefetch::<_MM_HINT_T1>(p1.wrapping_add(PREFETCH * super::PANEL).cast());
                }
                let v0 = _mm512_loadu_ps(p0);
                // One panel: the second half of the tile is not read.
                let v1 = if TWO { _mm512_loadu_ps(p1) } else { v0 };
                // Unrolled by hand: LLVM keeps a loop over the rows here,
                // with the accumulators on the stack.
                macro_rules! row {
                    ($b:ident, $i:expr, $o:literal) => {
                        if $i < R {
                            let xb = _mm512_set1_ps(*$b.byte_add($o * stride));
                            a0[$i] = _mm512_fmadd_ps(v0, xb, a0[$i]);
                            if TWO {
                                a1[$i] = _mm512_fmadd_ps(v1, xb, a1[$i]);
                            }
                        }
                    };
                }
                rows_in_threes!(R, row, b0, b1, b2, b3);
                p0 = p0.add(PANEL);
                if TWO {
                    p1 = p1.add(PANEL);
                }
            }
            for i in 0..R {
                let d = tile.ptr.add(i * tile.stride);
                _mm512_mask_storeu_ps(d, m0, a0[i]);
                _mm512_mask_storeu_ps(d.add(PANEL), m1, a1[i]);
            }
        }
    }

    /// Columns of `k` the tile kernels ask for their weights ahead of use,
    /// into L2: one line of each panel per column, a block of `k` ahead, so
    /// the first tile of each block (the one that brings its weights into
    /// L1) finds them in L2 even when a large product's weights come from L3
    /// or DRAM. A hint that never faults, so past the panels' end too.
    /// Measured (`benches/panel`, AVX-512, one core, Zen 5, alternating
    /// builds): 64 x 3072 x 2048 (24 MiB of weights) 84-89 % of the FMA peak
    /// against 70-75 % without; 64 x 2048 x 512 and 64 x 512 x 256 within the
    /// noise (92-97 %). 24 columns ahead gained nothing, 96 half of it; into
    /// L1 it cost the L2-resident sizes 3 %.
    const PREFETCH: usize = 256;

    /// `p`, which the optimiser may no longer derive from other pointers:
    /// it would recompute the four row bases of `tile_avx512` from one
    /// pointer with a chain of adds in every iteration.
    #[inline(always)]
    #[allow(clippy::pointers_in_nomem_asm_block)] // the asm reads nothing
    fn opaque(mut p: *const f32) -> *const f32 {
        // SAFETY: an empty template; the register keeps its value.
        unsafe {
            std::arch::asm!("/* {0} */", inout(reg) p, options(pure, nomem, nostack, preserves_flags))
        };
        p
    }

    /// Twelve chains of `n` dependent FMAs each, 16 lanes wide.
    ///
    /// # Safety
    /// AVX-512F available.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn chains_avx512(n: usize) -> f32 {
        let mut acc = [_mm512_setzero_ps(); 12];
        let a = _mm512_set1_ps(1.000_000_1);
        let b = _mm512_set1_ps(0.999_999_9);
        for _ in 0..n {
            for x in acc.iter_mut() {
                *x = _mm512_fmadd_ps(*x, a, b);
            }
        }
        let mut s = _mm512_setzero_ps();
        for x in acc {
            s = _mm512_add_ps(s, x);
        }
        _mm512_reduce_add_ps(s)
    }

    /// Twelve chains of `n` dependent FMAs each, 8 lanes wide.
    ///
    /// # Safety
    /// AVX2 and FMA available.
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn chains_avx2(n: usize) -> f32 {
        let mut acc = [_mm256_setzero_ps(); 12];
        let a = _mm256_set1_ps(1.000_000_1);
        let b = _mm256_set1_ps(0.999_999_9);
        for _ in 0..n {
            for x in acc.iter_mut() {
                *x = _mm256_fmadd_ps(*x, a, b);
            }
        }
        let mut s = _mm256_setzero_ps();
        for x in acc {
            s = _mm256_add_ps(s, x);
        }
        let mut out = [0.0f32; 8];
        // SAFETY: `out` holds 8 floats.
        unsafe { _mm256_storeu_ps(out.as_mut_ptr(), s) };
        out.iter().sum()
    }

    /// [`tile_avx2`] for a tile of `nb` batch rows, as [`tile_avx512_rows`].
    ///
    /// # Safety
    /// As `tile_kernel` (one panel), `nb <= MR`; AVX2 and FMA available.
    pub(super) unsafe fn tile_avx2_rows(
        w: *const f32,
        k: usize,
        x: *const f32,
        x_stride: usize,
        nb: usize,
        tile: Tile,
    ) {
        macro_rules! rows {
            ($($n:literal)*) => {
                match nb {
                    // SAFETY: as the caller guarantees.
                    $($n => unsafe { tile_avx2::<$n>(w, k, x, x_stride, tile) },)*
                    _ => unreachable!("a tile of {nb} batch rows"),
                }
            };
        }
        const _: () = assert!(MR == 6);
        rows!(1 2 3 4 5 6)
    }

    /// A short tile ([`super::SHORT_ROWS`] batch rows at most) of `np`
    /// panels (3 or 4), `panel` floats apart.
    ///
    /// # Safety
    /// As `tile_kernel`; AVX-512F available.
    #[allow(clippy::too_many_arguments)]
    pub(super) unsafe fn short_avx512(
        w: *const f32,
        panel: usize,
        k: usize,
        np: usize,
        x: *const f32,
        x_stride: usize,
        nb: usize,
        tile: Tile,
    ) {
        const _: () = assert!(super::SHORT_ROWS == 2 && super::SHORT_PANELS == 4);
        // SAFETY: as the caller guarantees.
        unsafe {
            match (nb, np) {
                (1, 3) => short_avx512_tile::<1, 3>(w, panel, k, x, x_stride, tile),
                (1, 4) => short_avx512_tile::<1, 4>(w, panel, k, x, x_stride, tile),
                (2, 3) => short_avx512_tile::<2, 3>(w, panel, k, x, x_stride, tile),
                (2, 4) => short_avx512_tile::<2, 4>(w, panel, k, x, x_stride, tile),
                _ => unreachable!("a short tile of {nb} rows by {np} panels"),
            }
        }
    }

    /// # Safety
    /// As `tile_kernel`, `R` batch rows, `NP` panels `panel` floats apart;
    /// AVX-512F available.
    #[target_feature(enable = "avx512f")]
    unsafe fn short_avx512_tile<const R: usize, const NP: usize>(
        w: *const f32,
        panel: usize,
        k: usize,
        x: *const f32,
        x_stride: usize,
        tile: Tile,
    ) {
        // SAFETY: as in `tile_avx512`, for `NP` panels.
        unsafe {
            let mut m = [0 as __mmask16; NP];
            let mut p = [w; NP];
            for q in 0..NP {
                m[q] = lanes16(tile.rows.saturating_sub(q * PANEL));
                p[q] = w.add(q * panel);
            }
            let mut a = [[_mm512_setzero_ps(); NP]; R];
            for (i, a) in a.iter_mut().enumerate() {
                if let Some(d) = tile.start(i) {
                    for q in 0..NP {
                        a[q] = _mm512_maskz_loadu_ps(m[q], d.add(q * PANEL));
                    }
                }
            }
            for c in 0..k {
                let mut v = [_mm512_setzero_ps(); NP];
                for q in 0..NP {
                    v[q] = _mm512_loadu_ps(p[q].add(c * PANEL));
                }
                for (i, a) in a.iter_mut().enumerate() {
                    let xb = _mm512_set1_ps(*x.add(i * x_stride + c));
                    for q in 0..NP {
                        a[q] = _mm512_fmadd_ps(v[q], xb, a[q]);
                    }
                }
            }
            for (i, a) in a.iter().enumerate() {
                let d = tile.ptr.add(i * tile.stride);
                for q in 0..NP {
                    _mm512_mask_storeu_ps(d.add(q * PANEL), m[q], a[q]);
                }
            }
        }
    }

    /// As [`short_avx512`], for AVX2: `np` panels (2 to 4 for one batch
    /// row, 2 for two).
    ///
    /// # Safety
    /// As `tile_kernel`; AVX2 and FMA available.
    #[allow(clippy::too_many_arguments)]
    pub(super) unsafe fn short_avx2(
        w: *const f32,
        panel: usize,
        k: usize,
        np: usize,
        x: *const f32,
        x_stride: usize,
        nb: usize,
        tile: Tile,
    ) {
        // SAFETY: as the caller guarantees.
        unsafe {
            match (nb, np) {
                (1, 2) => short_avx2_tile::<1, 2>(w, panel, k, x, x_stride, tile),
                (1, 3) => short_avx2_tile::<1, 3>(w, panel, k, x, x_stride, tile),
                (1, 4) => short_avx2_tile::<1, 4>(w, panel, k, x, x_stride, tile),
                (2, 2) => short_avx2_tile::<2, 2>(w, panel, k, x, x_stride, tile),
                _ => unreachable!("a short tile of {nb} rows by {np} panels"),
            }
        }
    }

    /// # Safety
    /// As `tile_kernel`, `R` batch rows, `NP` panels `panel` floats apart;
    /// AVX2 and FMA available.
    #[target_feature(enable = "avx2,fma")]
    unsafe fn short_avx2_tile<const R: usize, const NP: usize>(
        w: *const f32,
        panel: usize,
        k: usize,
        x: *const f32,
        x_stride: usize,
        tile: Tile,
    ) {
        // SAFETY: as in `tile_avx2`, for `NP` panels of two vectors.
        unsafe {
            let mut m = [_mm256_setzero_si256(); NP];
            let mut m1 = [_mm256_setzero_si256(); NP];
            let mut p = [w; NP];
            for q in 0..NP {
                m[q] = lanes8(tile.rows.saturating_sub(q * PANEL));
                m1[q] = lanes8(tile.rows.saturating_sub(q * PANEL + 8));
                p[q] = w.add(q * panel);
            }
            let mut a = [[[_mm256_setzero_ps(); 2]; NP]; R];
            for (i, a) in a.iter_mut().enumerate() {
                if let Some(d) = tile.start(i) {
                    for q in 0..NP {
                        a[q][0] = _mm256_maskload_ps(d.add(q * PANEL), m[q]);
                        a[q][1] = _mm256_maskload_ps(d.add(q * PANEL + 8), m1[q]);
                    }
                }
            }
            for c in 0..k {
                let mut v = [[_mm256_setzero_ps(); 2]; NP];
                for q in 0..NP {
                    v[q][0] = _mm256_loadu_ps(p[q].add(c * PANEL));
                    v[q][1] = _mm256_loadu_ps(p[q].add(c * PANEL + 8));
                }
                for (i, a) in a.iter_mut().enumerate() {
                    let xb = _mm256_set1_ps(*x.add(i * x_stride + c));
                    for q in 0..NP {
                        a[q][0] = _mm256_fmadd_ps(v[q][0], xb, a[q][0]);
                        a[q][1] = _mm256_fmadd_ps(v[q][1], xb, a[q][1]);
                    }
                }
            }
            for (i, a) in a.iter().enumerate() {
                let d = tile.ptr.add(i * tile.stride);
                for q in 0..NP {
                    _mm256_maskstore_ps(d.add(q * PANEL), m[q], a[q][0]);
                    _mm256_maskstore_ps(d.add(q * PANEL + 8), m1[q], a[q][1]);
                }
            }
        }
    }

    /// # Safety
    /// As `tile_kernel` (one panel), `R` batch rows; AVX2 and FMA available.
    #[target_feature(enable = "avx2,fma")]
    unsafe fn tile_avx2<const R: usize>(
        w: *const f32,
        k: usize,
        x: *const f32,
        x_stride: usize,
        tile: Tile,
    ) {
        // SAFETY: as in `tile_avx512`.
        unsafe {
            let m0 = lanes8(tile.rows);
            let m1 = lanes8(tile.rows.saturating_sub(8));
            let mut a0 = [_mm256_setzero_ps(); R];
            let mut a1 = [_mm256_setzero_ps(); R];
            for i in 0..R {
                if let Some(d) = tile.start(i) {
                    a0[i] = _mm256_maskload_ps(d, m0);
                    a1[i] = _mm256_maskload_ps(d.add(8), m1);
                }
            }
            // Rows in threes from opaque bases, as in `tile_avx512`.
            let stride = x_stride * 4;
            let mut b0 = x;
            let mut b1 = x.wrapping_add(3 * x_stride);
            let mut p = w;
            for _ in 0..k {
                // The weights ahead, as in `tile_avx512`.
                _mm_prefetch::<_MM_HINT_T1>(p.wrapping_add(PREFETCH * PANEL).cast());
                let v0 = _mm256_loadu_ps(p);
                let v1 = _mm256_loadu_ps(p.add(8));
                macro_rules! row {
                    ($b:ident, $i:expr, $o:literal) => {
                        if $i < R {
                            let xb = _mm256_set1_ps(*$b.byte_add($o * stride));
                            a0[$i] = _mm256_fmadd_ps(v0, xb, a0[$i]);
                            a1[$i] = _mm256_fmadd_ps(v1, xb, a1[$i]);
                        }
                    };
                }
                rows_in_threes!(R, row, b0, b1);
                p = p.add(PANEL);
            }
            for i in 0..R {
                let d = tile.ptr.add(i * tile.stride);
                _mm256_maskstore_ps(d, m0, a0[i]);
                _mm256_maskstore_ps(d.add(8), m1, a1[i]);
            }
        }
    }
}

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
