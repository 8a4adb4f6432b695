//! Products with block-circulant weights, through discrete Fourier transforms
//! (the C-LSTM paper's products): `y = W x` where `W` is made of `k x k`
//! circulant blocks, block `(i, j)` the matrix whose first column is
//! `w[i, j, :]`.
//!
//! A circulant block times a chunk of `x` is a circular convolution, so in
//! the frequency domain it is an element-wise product: `Y_i[s] = sum_j
//! W_ij[s] X_j[s]` for every frequency `s`, and `y_i` is the inverse
//! transform of `Y_i`. A real chunk of `k` values has `k/2 + 1` frequencies,
//! of which the first and the last are real: its *spectrum* is exactly `k`
//! floats, laid out in `k/2` *slots* of two floats: slot 0 holds the two
//! real frequencies (`X[0]`, `X[k/2]`), slot `s > 0` the real and imaginary
//! parts of `X[s]`. Slot 0 multiplies component by component, the others as
//! complex numbers.
//!
//! A step's product then runs in three parts: each input chunk's spectrum,
//! once per step ([`forward_matrix`], applied by the panel kernels); the
//! multiply-accumulate over the spectra ([`mac`], this module's kernel,
//! vectorized across output chunks, the weights' spectra precomputed
//! when the cell is compiled by [`pack_weights`]); and each output chunk's
//! inverse transform ([`inverse_matrix`], the panel kernels again, starting
//! from the bias). The transforms are `k x k` real matrices rather than
//! butterflies: for `k <= 64` a transform is a few hundred fused
//! multiply-adds at the full vector width, and each is shared by every block
//! of its row (or column) of blocks, so the multiply-accumulate, `4 k` per
//! block against the dense block's `2 k^2`, is most of the work.
//!
//! Per block and batch row the product touches `k` floats of weights, `k`
//! times fewer than the dense block, and does about `4 k` flops, `k / 2`
//! times fewer.

use super::Isa;

/// Block sizes with an FFT product: powers of two from 4 to 64
/// ([`crate::ir::Structure::spectral_k`] says which matrices take it).
pub fn supported(k: usize) -> bool {
    crate::ir::Structure::spectral_block(k)
}

/// Output chunks per group of the packed weights' spectra: the lanes of the
/// widest vector, so that any ISA's vectors of chunks stay inside a group.
pub const GROUP: usize = 16;

/// The forward transform, `k x k` row-major: row `2s` and `2s + 1` of the
/// spectrum layout (the module's slots) from the chunk's `k` values.
pub fn forward_matrix(k: usize) -> Vec<f32> {
    let mut m = vec![0.0f32; k * k];
    for (row, out) in m.chunks_mut(k).enumerate() {
        for (a, v) in out.iter_mut().enumerate() {
            *v = forward_coefficient(k, row, a) as f32;
        }
    }
    m
}

/// Coefficient of value `a` in spectrum float `row`, in f64.
fn forward_coefficient(k: usize, row: usize, a: usize) -> f64 {
    let (s, imag) = (row / 2, row % 2 == 1);
    if s == 0 {
        // X[0] = sum x; X[k/2] = sum (-1)^a x.
        return if imag && a % 2 == 1 { -1.0 } else { 1.0 };
    }
    let angle = angle(k, s * a);
    if imag {
        -angle.sin()
    } else {
        angle.cos()
    }
}

/// `2 pi n / k`, with `n` reduced modulo `k` first (exact angles).
fn angle(k: usize, n: usize) -> f64 {
    2.0 * std::f64::consts::PI * ((n % k) as f64) / k as f64
}

/// The inverse transform, `k x k` row-major: value `a` of the chunk from
/// the `k` floats of its spectrum, the `1/k` folded in.
pub fn inverse_matrix(k: usize) -> Vec<f32> {
    let n = k as f64;
    let mut m = vec![0.0f32; k * k];
    for (a, out) in m.chunks_mut(k).enumerate() {
        for (col, v) in out.iter_mut().enumerate() {
            let (s, imag) = (col / 2, col % 2 == 1);
            let c = if s == 0 {
                if imag && a % 2 == 1 {
                    -1.0
                } else {
                    1.0
                }
            } else if imag {
                -2.0 * angle(k, s * a).sin()
            } else {
                2.0 * angle(k, s * a).cos()
            };
            *v = (c / n) as f32;
        }
    }
    m
}

/// The spectrum (the module's layout) of `k` values, in f64.
fn spectrum(w: &[f64]) -> Vec<f64> {
    let k = w.len();
    (0..k)
        .map(|row| (0..k).map(|a| forward_coefficient(k, row, a) * w[a]).sum())
        .collect()
}

/// Floats of one matrix's packed spectra: groups of [`GROUP`] output
/// chunks, each `in_chunks * k * GROUP` floats; `None` on overflow.
pub fn weights_len(rows: usize, cols: usize, k: usize) -> Option<usize> {
    (rows / k)
        .div_ceil(GROUP)
        .checked_mul(GROUP)?
        .checked_mul(cols / k)?
        .checked_mul(k)
}

/// Packs the spectra of a `rows x cols` block-circulant matrix given dense
/// (row-major; block `(i, j)`'s first column is its defining vector) into
/// `out` ([`weights_len`] floats): per group `g` of [`GROUP`] output chunks,
/// per input chunk `j`, per slot `s`, the real parts of chunks `16 g ..`
/// side by side, then their imaginary parts (slot 0: `W[0]`, then
/// `W[k/2]`). Chunks past the last are zero.
pub fn pack_weights(dense: &[f32], rows: usize, cols: usize, k: usize, out: &mut [f32]) {
    let (ni, nj) = (rows / k, cols / k);
    out.fill(0.0);
    for i in 0..ni {
        let (g, lane) = (i / GROUP, i % GROUP);
        for j in 0..nj {
            let w: Vec<f64> = (0..k)
                .map(|a| f64::from(dense[(i * k + a) * cols + j * k]))
                .collect();
            let spec = spectrum(&w);
            for s in 0..k / 2 {
                let base = ((g * nj + j) * (k / 2) + s) * 2 * GROUP + lane;
                out[base] = spec[2 * s] as f32;
                out[base + GROUP] = spec[2 * s + 1] as f32;
            }
        }
    }
}

/// One matrix of a multiply-accumulate and the spectra of its input.
#[derive(Clone, Copy, Debug)]
pub struct MacTerm {
    /// Its packed spectra ([`pack_weights`]).
    pub weights: *const f32,
    /// Input chunks (its columns / `k`).
    pub chunks: usize,
    /// Batch row `b`'s spectra: `chunks` spectra of `k` floats at `x + b *
    /// x_stride`.
    pub x: *const f32,
    pub x_stride: usize,
}

impl Default for MacTerm {
    /// No matrix (null pointers, no chunks): a placeholder.
    fn default() -> MacTerm {
        MacTerm {
            weights: std::ptr::null(),
            chunks: 0,
            x: std::ptr::null(),
            x_stride: 0,
        }
    }
}

/// The spectra of output chunks `c0..c1` for batch rows `0..batch`: `ys[b *
/// ys_stride + c * k ..][..k]` = the sum over `terms` and their input
/// chunks `j` of `W[c, j] X[b, j]` slot by slot (written, not added to).
/// Each float is one chain of fused multiply-adds, terms then `j` in order
/// (the real part: `wr xr`, then `-wi xi`; the imaginary part: `wr xi`,
/// then `wi xr`; slot 0 one product each), the same on every ISA and
/// whichever chunks share a vector.
///
/// # Safety
/// Every term's weights hold the packed spectra of a matrix of at least
/// `c1` output chunks and `chunks` input chunks; its `x`, `batch` rows of
/// `chunks * k` floats at `x_stride`; `ys`, `batch` rows of `c1 * k` floats
/// at `ys_stride`, not overlapping the others, and no other thread touches
/// chunks `c0..c1` of them meanwhile; the host has `isa`; `k` is even.
#[allow(clippy::too_many_arguments)]
pub unsafe fn mac(
    isa: Isa,
    k: usize,
    terms: &[MacTerm],
    c0: usize,
    c1: usize,
    batch: usize,
    ys: *mut f32,
    ys_stride: usize,
) {
    let at = Mac {
        k,
        terms,
        c0,
        c1,
        batch,
        ys,
        ys_stride,
    };
    // SAFETY: as the caller guarantees; each entry runs on its own ISA.
    unsafe {
        match isa {
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512 => mac_avx512(&at),
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2 => mac_avx2(&at),
            #[cfg(target_arch = "aarch64")]
            Isa::Neon => mac_neon(&at),
            _ => mac_scalar(&at),
        }
    }
}

/// The operands of [`mac`].
struct Mac<'a> {
    k: usize,
    terms: &'a [MacTerm],
    c0: usize,
    c1: usize,
    batch: usize,
    ys: *mut f32,
    ys_stride: usize,
}

/// The portable kernel: each float's chain as [`mac`] says, with
/// `f32::mul_add`.
///
/// # Safety
/// As [`mac`].
unsafe fn mac_scalar(at: &Mac<'_>) {
    let k = at.k;
    for b in 0..at.batch {
        for c in at.c0..at.c1 {
            let (g, lane) = (c / GROUP, c % GROUP);
            for s in 0..k / 2 {
                let (mut re, mut im) = (0.0f32, 0.0f32);
                for t in at.terms {
                    for j in 0..t.chunks {
                        // SAFETY: inside the term's spectra and input (as the
                        // caller guarantees).
                        unsafe {
                            let w = t
                                .weights
                                .add(((g * t.chunks + j) * (k / 2) + s) * 2 * GROUP + lane);
                            let (wr, wi) = (*w, *w.add(GROUP));
                            let x = t.x.add(b * t.x_stride + j * k + 2 * s);
                            let (xr, xi) = (*x, *x.add(1));
                            if s == 0 {
                                re = wr.mul_add(xr, re);
                                im = wi.mul_add(xi, im);
                            } else {
                                re = wr.mul_add(xr, re);
                                re = wi.mul_add(-xi, re);
                                im = wr.mul_add(xi, im);
                                im = wi.mul_add(xr, im);
                            }
                        }
                    }
                }
                // SAFETY: chunk `c < c1` of row `b` (as the caller guarantees).
                unsafe {
                    let y = at.ys.add(b * at.ys_stride + c * k + 2 * s);
                    *y = re;
                    *y.add(1) = im;
                }
            }
        }
    }
}

#[cfg(target_arch = "aarch64")]
use super::simd::Neon;
use super::simd::Simd;
#[cfg(target_arch = "x86_64")]
use super::simd::{Avx2, Avx512};

/// Each ISA's entry point.
macro_rules! entries {
    ($($(#[$cfg:meta])* $name:ident: $simd:ty, $features:literal, $accumulators:literal;)*) => {$(
        $(#[$cfg])*
        #[target_feature(enable = $features)]
        /// # Safety
        /// As [`mac`]; the host has the entry's ISA.
        unsafe fn $name(at: &Mac<'_>) {
            // SAFETY: as the caller guarantees; compiled with the ISA's features.
            unsafe { generic::<$simd>(at, $accumulators) }
        }
    )*};
}

entries! {
    #[cfg(target_arch = "x86_64")]
    mac_avx512: Avx512, "avx512f", 24;
    #[cfg(target_arch = "x86_64")]
    mac_avx2: Avx2, "avx2,fma", 8;
    #[cfg(target_arch = "aarch64")]
    mac_neon: Neon, "neon", 16;
}

/// The vector kernel: vectors of `S::LANES` output chunks (inside one
/// group), tiles of up to six batch rows by two to eight slots held in
/// `accumulators` registers at most.
///
/// # Safety
/// As [`mac`], inside a function compiled with `S`'s features.
#[inline(always)]
unsafe fn generic<S: Simd>(at: &Mac<'_>, accumulators: usize) {
    let slots = at.k / 2;
    // Slots per tile: a power of two dividing `k/2` (itself one).
    let most_slots = if at.batch == 1 { 8 } else { 2 };
    let fb = slots.min(most_slots).min((accumulators / 2).max(2));
    let rb_most = (accumulators / (2 * fb)).clamp(1, 6);
    let first = at.c0 / S::LANES * S::LANES;
    let mut cv = first;
    while cv < at.c1 {
        let mut b = 0;
        while b < at.batch {
            let rb = (at.batch - b).min(rb_most);
            let mut s0 = 0;
            while s0 < slots {
                let at_tile = Tile { cv, b0: b, s0 };
                macro_rules! shapes {
                    ($(($r:literal, $f:literal)),* $(,)?) => {
                        match (rb, fb) {
                            // SAFETY: as the caller guarantees.
                            $(($r, $f) => unsafe { tile::<S, $r, $f>(at, &at_tile) },)*
                            _ => unreachable!("a spectral tile of {rb} rows by {fb} slots"),
                        }
                    };
                }
                shapes!(
                    (1, 2),
                    (2, 2),
                    (3, 2),
                    (4, 2),
                    (5, 2),
                    (6, 2),
                    (1, 4),
                    (1, 8),
                );
                s0 += fb;
            }
            b += rb;
        }
        cv += S::LANES;
    }
}

/// Where a tile is: its vector of chunks from `cv`, first batch row, first
/// slot.
struct Tile {
    cv: usize,
    b0: usize,
    s0: usize,
}

/// One tile of `R` batch rows by `F` slots: its chains over every term and
/// input chunk, then the lanes of chunks `c0..c1` stored.
///
/// # Safety
/// As [`mac`]; `tile.cv` a multiple of `S::LANES` (so its lanes stay in one
/// group), rows `b0..b0 + R <= batch`, slots `s0..s0 + F <= k/2`.
#[inline(always)]
unsafe fn tile<S: Simd, const R: usize, const F: usize>(at: &Mac<'_>, tile: &Tile) {
    let k = at.k;
    let (g, lane) = (tile.cv / GROUP, tile.cv % GROUP);
    // SAFETY: register arithmetic; loads and stores inside the buffers as
    // the caller guarantees (the group's spectra are padded to whole
    // groups, so every lane of the vector exists).
    unsafe {
        let zero = S::splat(0.0);
        let mut re = [[zero; F]; R];
        let mut im = [[zero; F]; R];
        for t in at.terms {
            let slot0 = tile.s0 == 0;
            for j in 0..t.chunks {
                let w = t
                    .weights
                    .add(((g * t.chunks + j) * (k / 2) + tile.s0) * 2 * GROUP + lane);
                let x = t.x.add(tile.b0 * t.x_stride + j * k + 2 * tile.s0);
                for f in 0..F {
                    let wr = S::load(w.add(f * 2 * GROUP));
                    let wi = S::load(w.add(f * 2 * GROUP + GROUP));
                    for r in 0..R {
                        let xp = x.add(r * t.x_stride + 2 * f);
                        let (xr, xi) = (*xp, *xp.add(1));
                        if slot0 && f == 0 {
                            re[r][f] = S::fma(wr, S::splat(xr), re[r][f]);
                            im[r][f] = S::fma(wi, S::splat(xi), im[r][f]);
                        } else {
                            re[r][f] = S::fma(wr, S::splat(xr), re[r][f]);
                            re[r][f] = S::fma(wi, S::splat(-xi), re[r][f]);
                            im[r][f] = S::fma(wr, S::splat(xi), im[r][f]);
                            im[r][f] = S::fma(wi, S::splat(xr), im[r][f]);
                        }
                    }
                }
            }
        }
        let lo = at.c0.max(tile.cv);
        let hi = at.c1.min(tile.cv + S::LANES);
        let mut lanes = [0.0f32; 16];
        for r in 0..R {
            let row = at.ys.add((tile.b0 + r) * at.ys_stride);
            for f in 0..F {
                let s = tile.s0 + f;
                S::store(lanes.as_mut_ptr(), re[r][f]);
                for c in lo..hi {
                    *row.add(c * k + 2 * s) = lanes[c - tile.cv];
                }
                S::store(lanes.as_mut_ptr(), im[r][f]);
                for c in lo..hi {
                    *row.add(c * k + 2 * s + 1) = lanes[c - tile.cv];
                }
            }
        }
    }
}

#[cfg(test)]
mod tests;
