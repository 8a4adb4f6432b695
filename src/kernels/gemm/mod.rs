//! Matrix products of many rows, blocked for the caches: the hoisted input
//! projection of a sequence (`T·B` columns at once), the weight gradients
//! and input adjoints of training, and the host calibration's probe.
//!
//! `C += A · B` with `C` `[m, n]` stored column by column (element `(i, j)`
//! at `c[i + j * ldc]`: the rows of one column side by side, as a
//! projection buffer holds a step's rows), `A` `[m, k]`, `B` `[k, n]`. The
//! layout is BLIS's, as MLAS and the `gemm` crate have it: `A` in *units*
//! of [`MR`] rows stored `k`-major (column `l` of a unit is its 32 rows side
//! by side; the projection's weights are packed so once, when the cell is
//! compiled, [`pack_units`]; any other `A` is packed per block as it is
//! used); `B` copied per block into *strips* of a kernel's `NR` columns,
//! also `k`-major, so that a micro-kernel reads one stream of each and
//! broadcasts `B`'s values from one cache line. A micro-kernel keeps a
//! unit's rows (or half of them) by `NR` columns of `C` in registers and
//! sweeps a block of [`KC`] columns of `k`.
//!
//! The blocks: a job is up to [`NC`] columns of `C` and all its rows (or
//! [`MC`] rows, when the columns make too few jobs to share); jobs share no element
//! of `C`, so threads take them in any order. Within a job, `k` runs in
//! blocks of `KC`: that block's strips of `B` are packed once (`KC x NC`,
//! kept in L2), then the rows in blocks of `MC` (`MC x KC` of `A`, in L2),
//! and for each strip (in L1) every unit of the block's rows.
//!
//! Every element is one chain of fused multiply-adds in `k` order, starting
//! from where the product says ([`From`]); a block of `k` continues the
//! chain from `C`. The blocking, the job split and the ISA change which
//! operations run together, never that order: every ISA gives the portable
//! kernel's bits, on any number of threads.

#[cfg(test)]
mod tests;
mod tiles;

use std::cell::RefCell;

use crate::kernels::Isa;

/// Rows of `A` per unit.
pub const MR: usize = 32;
/// Columns of `k` per block: a strip of 14 columns is 14 KiB of L1.
pub const KC: usize = 256;
/// Rows of `C` per job: `MC x KC` of `A` is 256 KiB of L2.
pub const MC: usize = 256;
/// Columns of `C` per job (a multiple of every kernel's `NR`): `KC x NC`
/// of `B` is 420 KiB of L2.
pub const NC: usize = 420;
/// Jobs a product of the hoisted projection is split into where its
/// columns allow ([`Gemm::split`]): two per thread of a two-core host.
pub const SPLIT: usize = 4;

/// Floats the units of an `[m, k]` matrix take (the last unit padded with
/// zero rows).
pub fn units_len(m: usize, k: usize) -> Option<usize> {
    m.div_ceil(MR).checked_mul(MR)?.checked_mul(k)
}

/// Where element `(row, col)` of a matrix of `k` columns lives in its units.
pub fn unit_index(row: usize, col: usize, k: usize) -> usize {
    row / MR * MR * k + col * MR + row % MR
}

/// Packs the row-major `[m, k]` matrix `a` into units ([`units_len`]
/// floats; the padding rows zero).
pub fn pack_units(a: &[f32], m: usize, k: usize, out: &mut [f32]) {
    assert_eq!(a.len(), m * k, "gemm::pack_units: matrix of the wrong size");
    assert_eq!(
        Some(out.len()),
        units_len(m, k),
        "gemm::pack_units: output of the wrong size"
    );
    out.fill(0.0);
    for r in 0..m {
        for c in 0..k {
            out[unit_index(r, c, k)] = a[r * k + c];
        }
    }
}

/// The left operand.
#[derive(Clone, Copy, Debug)]
pub enum Left {
    /// Packed in units ([`unit_index`]) of `k` columns.
    Units(*const f32),
    /// Element `(i, l)` at `ptr[i * rs + l * cs]`.
    Strided {
        ptr: *const f32,
        rs: usize,
        cs: usize,
    },
}

/// The right operand: element `(l, j)` at `ptr[l * rs + j * cs]`.
#[derive(Clone, Copy, Debug)]
pub struct Right {
    pub ptr: *const f32,
    pub rs: usize,
    pub cs: usize,
}

/// Where each element's chain starts.
#[derive(Clone, Copy, Debug)]
pub enum From {
    /// Zero.
    Zero,
    /// `C`'s value (`C += A B`).
    Dst,
    /// `row[i]` for every column (a bias).
    Row(*const f32),
    /// Element `(i, j)` of another matrix laid out as `C` is: `ptr[i + j *
    /// ld]` (a hoisted projection's rows).
    Matrix { ptr: *const f32, ld: usize },
}

impl From {
    /// Where element `(i, j)` of `C` (at `ldc`) starts, read.
    ///
    /// # Safety
    /// That element, and for [`From::Row`] and [`From::Matrix`] theirs, are
    /// valid to read.
    #[inline]
    pub(crate) unsafe fn start(self, c: *const f32, ldc: usize, i: usize, j: usize) -> f32 {
        // SAFETY: as the caller guarantees.
        unsafe {
            match self {
                From::Zero => 0.0,
                From::Dst => *c.add(i + j * ldc),
                From::Row(r) => *r.add(i),
                From::Matrix { ptr, ld } => *ptr.add(i + j * ld),
            }
        }
    }
}

/// One product `C (+)= A B` (see the module's docs), unchecked: the safe
/// entry points ([`accumulate`]) and the JIT's projection (whose plan was
/// verified) build it.
#[derive(Clone, Copy, Debug)]
pub struct Gemm {
    pub isa: Isa,
    pub m: usize,
    pub n: usize,
    pub k: usize,
    pub a: Left,
    pub b: Right,
    pub c: *mut f32,
    pub ldc: usize,
    pub from: From,
    /// Jobs wanted, for threads to share: the columns are split into at
    /// least this many blocks where there are strips for them, and the rows
    /// too where there are not (1: blocks of [`NC`] columns, rows whole).
    pub split: usize,
}

// SAFETY: a `Gemm` is a description; its pointers are dereferenced only by
// its `unsafe` methods, whose callers guarantee that the operands are valid
// and that no two threads run jobs writing the same elements.
unsafe impl Send for Gemm {}
// SAFETY: as for `Send`.
unsafe impl Sync for Gemm {}

thread_local! {
    /// Each thread's packed blocks, kept between calls (a fresh allocation
    /// of this size is a fresh mapping on every call).
    static SCRATCH: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
}

/// Floats of alignment slack in the scratch (64 bytes).
const ALIGN: usize = 16;

/// How a product of `m` rows by `n` columns is cut into jobs that share no
/// element of `C`: blocks of columns, each of all the rows when there are
/// enough blocks to share among threads, else of `mc` rows.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Jobs {
    pub m: usize,
    pub n: usize,
    /// Jobs wanted ([`Gemm::split`]).
    pub split: usize,
    /// Columns a block is a whole number of (a kernel's strip).
    pub nr: usize,
    /// Columns per block at most.
    pub nc: usize,
    /// Rows per block when rows are split.
    pub mc: usize,
}

impl Jobs {
    pub fn count(&self) -> usize {
        self.n.div_ceil(self.columns_per_job()) * self.row_groups()
    }

    /// Columns per job: at most `nc`, and few enough for `split` jobs where
    /// there are columns for them (a whole number of `nr` each, the blocks
    /// as even as that allows), so that rows are split (and the blocks of
    /// `B` packed once per row group) only for narrow products.
    fn columns_per_job(&self) -> usize {
        let blocks = (self.n.div_ceil(self.nc)).max(self.split.min(self.n.div_ceil(self.nr)));
        self.n
            .div_ceil(blocks.max(1))
            .next_multiple_of(self.nr)
            .min(self.nc)
    }

    /// Row groups per column block: one (each block of `B` packed once),
    /// unless the columns make fewer than `split` jobs.
    fn row_groups(&self) -> usize {
        if self.n.div_ceil(self.columns_per_job()) >= self.split {
            1
        } else {
            self.m.div_ceil(self.mc).max(1)
        }
    }

    /// The rows and the columns of job `job` (empty past the last).
    pub fn block(&self, job: usize) -> (std::ops::Range<usize>, std::ops::Range<usize>) {
        let groups = self.row_groups();
        let (cb, rg) = (job / groups, job % groups);
        let rows = if groups == 1 { self.m } else { self.mc };
        let cols = self.columns_per_job();
        (
            (rg * rows).min(self.m)..((rg + 1) * rows).min(self.m),
            (cb * cols).min(self.n)..((cb + 1) * cols).min(self.n),
        )
    }
}

/// `C = start` for rows `i0..i1` and columns `j0..j1`, element `(i, j)` at
/// `c[i + j * ldc]` (a product over no `k`).
///
/// # Safety
/// Those elements of `C` (and for [`From::Row`] the rows' values) are
/// valid and no other thread touches them meanwhile.
pub(crate) unsafe fn fill(
    c: *mut f32,
    ldc: usize,
    from: From,
    rows: std::ops::Range<usize>,
    cols: std::ops::Range<usize>,
) {
    for j in cols {
        for i in rows.clone() {
            // SAFETY: as the caller guarantees.
            unsafe {
                let c = c.add(i + j * ldc);
                match from {
                    From::Zero => *c = 0.0,
                    From::Dst => {}
                    From::Row(r) => *c = *r.add(i),
                    From::Matrix { ptr, ld } => *c = *ptr.add(i + j * ld),
                }
            }
        }
    }
}

/// Asks for the lines of a tile of `C` (rows `i..i + rows`, columns `j..j +
/// width`) and of its start where that is a matrix, into L2, while the tile
/// before it runs. A projection's `C` (`T·B` columns), and the projection a
/// step's product starts from, are far larger than L2: stores that waited
/// for their lines filled the store buffer and stalled the next tile
/// (`benches/gemm`, Zen 4, one core: 6400x512x128 83-87 -> 95-99 GFLOP/s
/// with the B pack's change of the same commit). A hint never faults, so
/// the pointers need not point into anything; a no-op off x86.
pub(crate) fn prefetch_tile(
    c: *const f32,
    ldc: usize,
    from: From,
    i: usize,
    j: usize,
    rows: usize,
    width: usize,
) {
    #[cfg(target_arch = "x86_64")]
    {
        let lines = |p: *const f32, stride: usize| {
            for col in 0..width {
                for line in (0..rows).step_by(16) {
                    let at = p.wrapping_add(col * stride + line);
                    // SAFETY: a hint (SSE, which every x86-64 has); it
                    // reads nothing.
                    unsafe {
                        use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T1};
                        _mm_prefetch::<_MM_HINT_T1>(at.cast())
                    };
                }
            }
        };
        lines(c.wrapping_add(i + j * ldc), ldc);
        // (A start in `C` itself, `From::Dst`, is those lines.)
        if let From::Matrix { ptr, ld } = from {
            lines(ptr.wrapping_add(i + j * ld), ld);
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = (c, ldc, from, i, j, rows, width);
}

/// [`prefetch_tile`] for the tile after rows `i..i + rows` by columns
/// `j..j + w` of a block of rows `..i1` and columns `j0..j1`, swept in tiles
/// of `rows` rows by up to `columns` columns, columns inner (the int8 and
/// bf16 paths' blocks).
#[cfg(target_arch = "x86_64")]
pub(crate) fn prefetch_next(
    c: *const f32,
    ldc: usize,
    from: From,
    (i, j, w): (usize, usize, usize),
    (i1, j0, j1): (usize, usize, usize),
    (rows, columns): (usize, usize),
) {
    let (i, j) = if j + w < j1 {
        (i, j + w)
    } else {
        (i + rows, j0)
    };
    if i < i1 {
        prefetch_tile(c, ldc, from, i, j, rows, columns.min(j1 - j));
    }
}

/// A product `C (+)= A B` cut into [`Jobs`] that threads share: blocks of
/// `C` that no two jobs write, each run whole by one thread. The three
/// products (float32 [`Gemm`], [`bf16::Product`](super::bf16::Product),
/// [`int8::Product`](super::int8::Product)) differ in their blocks only.
pub(crate) trait Blocked {
    /// How its jobs are cut.
    fn grid(&self) -> Jobs;

    /// Its depth `k` and where its sums go: `C`, its column stride and
    /// where each element's sum starts.
    fn destination(&self) -> (usize, *mut f32, usize, From);

    /// Rows `rows` by columns `cols` of `C` (a job's block, neither empty),
    /// for `k > 0`.
    ///
    /// # Safety
    /// As [`Blocked::run_job`], for that block.
    unsafe fn run_block(&self, rows: std::ops::Range<usize>, cols: std::ops::Range<usize>);

    /// Jobs: blocks of columns, each of all the rows unless the columns
    /// make fewer than the split wanted ([`Jobs`]).
    fn jobs(&self) -> usize {
        self.grid().count()
    }

    /// Runs job `job` (< [`Blocked::jobs`]; an empty block past the last):
    /// its block of `C`, or over no `k` the block filled from its start.
    ///
    /// # Safety
    /// The product's operands (as each product's type says) must be valid,
    /// `C` not overlapping the others and no other thread touching the
    /// job's elements of `C` meanwhile; the host must have the product's
    /// instructions.
    unsafe fn run_job(&self, job: usize) {
        let (rows, cols) = self.grid().block(job);
        if rows.is_empty() || cols.is_empty() {
            return;
        }
        let (k, c, ldc, from) = self.destination();
        if k == 0 {
            // SAFETY: as the caller guarantees.
            unsafe { fill(c, ldc, from, rows, cols) };
        } else {
            // SAFETY: as the caller guarantees; the block is not empty.
            unsafe { self.run_block(rows, cols) };
        }
    }

    /// Runs every job on this thread.
    ///
    /// # Safety
    /// As [`Blocked::run_job`], for every job.
    unsafe fn run(&self) {
        for j in 0..self.jobs() {
            // SAFETY: as the caller guarantees.
            unsafe { self.run_job(j) };
        }
    }
}

impl Blocked for Gemm {
    /// Blocks of [`NC`] columns at most, rows in blocks of [`MC`] for
    /// narrow products.
    fn grid(&self) -> Jobs {
        Jobs {
            m: self.m,
            n: self.n,
            split: self.split,
            nr: tiles::columns(self.isa),
            nc: NC,
            mc: MC,
        }
    }

    fn destination(&self) -> (usize, *mut f32, usize, From) {
        (self.k, self.c, self.ldc, self.from)
    }

    /// For each block of `k`, the block's strips of `B` packed once, then
    /// the rows in blocks of [`MC`].
    ///
    /// # Safety
    /// `A` (units: [`units_len`] floats; strided: every `(i, l)` for `i <
    /// m`, `l < k`), `B` (every `(l, j)`) and `C` (every `(i, j)`, and for
    /// [`From::Row`] `m` floats) must be valid, `C` not overlapping the
    /// others and no other thread touching the block's elements of `C`
    /// meanwhile; the host must have `isa`.
    unsafe fn run_block(&self, rows: std::ops::Range<usize>, cols: std::ops::Range<usize>) {
        let (i0, i1, j0, j1) = (rows.start, rows.end, cols.start, cols.end);
        let nr = tiles::columns(self.isa);
        let b_len = KC * (j1 - j0).next_multiple_of(nr);
        let a_len = match self.a {
            Left::Units(_) => 0,
            Left::Strided { .. } => KC * MC,
        };
        SCRATCH.with_borrow_mut(|scratch| {
            if scratch.len() < a_len + b_len + 2 * ALIGN {
                scratch.resize(a_len + b_len + 2 * ALIGN, 0.0);
            }
            let base = scratch.as_mut_ptr();
            let skip = base.align_offset(64).min(ALIGN);
            // SAFETY: `skip + b_len + ALIGN + a_len` floats fit (resized
            // above): the strips first, then `A`'s units.
            let (packed_b, packed_a) = unsafe {
                let b = base.add(skip);
                (b, b.add(b_len.next_multiple_of(ALIGN)))
            };
            let mut l0 = 0;
            while l0 < self.k {
                let kc = KC.min(self.k - l0);
                // SAFETY: as the caller guarantees; the scratch holds the
                // block's strips.
                unsafe { pack_strips(self.isa, self.b, l0, kc, j0, j1, nr, packed_b) };
                let from = if l0 == 0 { self.from } else { From::Dst };
                let mut r0 = i0;
                while r0 < i1 {
                    let r1 = (r0 + MC).min(i1);
                    let units = (r1 - r0).div_ceil(MR);
                    if let Left::Strided { ptr, rs, cs } = self.a {
                        // SAFETY: as the caller guarantees; the scratch
                        // holds `MC` rows of the block.
                        unsafe {
                            pack_block(self.isa, ptr, rs, cs, self.m, r0, units, l0, kc, packed_a)
                        };
                    }
                    // SAFETY: the strips and units are packed; rows `r0..r1`
                    // and columns `j0..j1` of `C` are the job's.
                    unsafe { self.block(packed_a, packed_b, l0, kc, r0, units, j0, j1, nr, from) };
                    r0 = r1;
                }
                l0 += kc;
            }
        });
    }
}

impl Gemm {
    /// One block of `kc` columns of `k` from `l0`, `units` units of rows
    /// from `r0`, columns `j0..j1`: every strip (in L1) by every unit.
    ///
    /// # Safety
    /// As [`Blocked::run_block`]; the strips of those columns are at `packed_b`,
    /// and for a strided `A` the units at `packed_a`.
    #[allow(clippy::too_many_arguments)]
    unsafe fn block(
        &self,
        packed_a: *const f32,
        packed_b: *const f32,
        l0: usize,
        kc: usize,
        r0: usize,
        units: usize,
        j0: usize,
        j1: usize,
        nr: usize,
        from: From,
    ) {
        let mut j = j0;
        let mut strip = packed_b;
        while j < j1 {
            let width = nr.min(j1 - j);
            for u in 0..units {
                let i = r0 + u * MR;
                let a = match self.a {
                    Left::Units(p) => p.wrapping_add(i * self.k + l0 * MR),
                    Left::Strided { .. } => packed_a.wrapping_add(u * kc * MR),
                };
                let c = self.c.wrapping_add(i + j * self.ldc);
                let start = match from {
                    From::Zero => None,
                    From::Dst => Some((c.cast_const(), self.ldc)),
                    From::Row(r) => Some((r.wrapping_add(i), 0)),
                    From::Matrix { ptr, ld } => Some((ptr.wrapping_add(i + j * ld), ld)),
                };
                // The next tile's lines, while this one runs.
                let (next_u, next_j) = if u + 1 < units {
                    (u + 1, j)
                } else {
                    (0, j + width)
                };
                if next_j < j1 {
                    let next_i = r0 + next_u * MR;
                    let next_width = nr.min(j1 - next_j);
                    prefetch_tile(self.c, self.ldc, from, next_i, next_j, MR, next_width);
                }
                let tile = tiles::Tile {
                    kc,
                    a,
                    b: strip,
                    c,
                    ldc: self.ldc,
                    rows: MR.min(self.m - i),
                    start,
                };
                // SAFETY: the unit's `kc` columns (padded rows included)
                // and the strip's `kc x width` values are there; the tile's
                // `rows x width` elements of `C` are the job's, as the
                // caller guarantees.
                unsafe { tiles::tile(self.isa, width, &tile) };
            }
            strip = strip.wrapping_add(kc * width);
            j += width;
        }
    }
}

/// Copies rows `l0..l0 + kc` of columns `j0..j1` of `B` into strips of `nr`
/// columns (the last one narrower), each `k`-major: strip `s` of width `w`
/// starts `s * kc * nr` floats in, value `(l, j)` at `l * w + j`.
///
/// # Safety
/// `B` holds those values; `out` holds `kc * (j1 - j0)` floats; `nr` is
/// `isa`'s; the host has `isa`.
#[allow(clippy::too_many_arguments)]
unsafe fn pack_strips(
    isa: Isa,
    b: Right,
    l0: usize,
    kc: usize,
    j0: usize,
    j1: usize,
    nr: usize,
    out: *mut f32,
) {
    let mut j = j0;
    let mut out = out;
    while j < j1 {
        let w = nr.min(j1 - j);
        // SAFETY: as the caller guarantees.
        unsafe {
            if b.rs == 1 {
                tiles::pack_columns(isa, b.ptr.add(j * b.cs + l0), b.cs, w, kc, out);
            } else if b.cs == 1 {
                // Each row of `B` is contiguous: the strip's values of one
                // row side by side already.
                let src = b.ptr.add(l0 * b.rs + j);
                tiles::copy_runs(isa, src, b.rs, w, kc, out, w, w);
            } else {
                for l in 0..kc {
                    let src = b.ptr.add((l0 + l) * b.rs + j * b.cs);
                    for jj in 0..w {
                        *out.add(l * w + jj) = *src.add(jj * b.cs);
                    }
                }
            }
            out = out.add(kc * w);
        }
        j += w;
    }
}

/// Copies columns `l0..l0 + kc` of `units` units of `A` from row `i0` into
/// units of `kc` columns (rows past `m` zero).
///
/// # Safety
/// `A` holds `(i, l)` at `ptr[i * rs + l * cs]` for `i < m`; `out` holds
/// `units * MR * kc` floats; the host has `isa`.
#[allow(clippy::too_many_arguments)]
unsafe fn pack_block(
    isa: Isa,
    ptr: *const f32,
    rs: usize,
    cs: usize,
    m: usize,
    i0: usize,
    units: usize,
    l0: usize,
    kc: usize,
    out: *mut f32,
) {
    for u in 0..units {
        let dst = out.wrapping_add(u * MR * kc);
        let r0 = i0 + u * MR;
        let rows = MR.min(m - r0);
        // SAFETY: as the caller guarantees.
        unsafe {
            if cs == 1 {
                for ii in 0..MR {
                    if ii < rows {
                        let src = ptr.add((r0 + ii) * rs + l0);
                        for l in 0..kc {
                            *dst.add(l * MR + ii) = *src.add(l);
                        }
                    } else {
                        for l in 0..kc {
                            *dst.add(l * MR + ii) = 0.0;
                        }
                    }
                }
            } else if rs == 1 {
                // Each column of `A` is contiguous: the unit's rows of one
                // column side by side already.
                tiles::copy_runs(isa, ptr.add(r0 + l0 * cs), cs, rows, kc, dst, MR, MR);
            } else {
                for l in 0..kc {
                    let src = ptr.add(r0 * rs + (l0 + l) * cs);
                    for ii in 0..MR {
                        *dst.add(l * MR + ii) = if ii < rows { *src.add(ii * rs) } else { 0.0 };
                    }
                }
            }
        }
    }
}

/// `out += A B` for `out` `[m, n]` row-major (element `(i, j)` at `out[i *
/// n + j]`), `A` with element `(i, l)` at `a[i * a_rs + l * a_cs]` and `B`
/// `[k, n]` row-major, on this thread at the host's widest ISA. Checks every
/// bound.
pub(crate) fn accumulate(
    m: usize,
    n: usize,
    k: usize,
    a: (&[f32], usize, usize),
    b: &[f32],
    out: &mut [f32],
) {
    if let Some(g) = accumulation(m, n, k, a, b, out) {
        // SAFETY: `accumulation` checked every bound; `out` is borrowed
        // mutably for the call, and the ISA is the host's.
        unsafe { g.run() }
    }
}

/// The product of [`accumulate`] as jobs to share among threads, its bounds
/// checked (`None`: nothing to add). Its jobs may run on any threads while
/// the slices stay borrowed as here (`out` by nothing else).
pub(crate) fn accumulation(
    m: usize,
    n: usize,
    k: usize,
    (a, a_rs, a_cs): (&[f32], usize, usize),
    b: &[f32],
    out: &mut [f32],
) -> Option<Gemm> {
    if m == 0 || n == 0 || k == 0 {
        return None;
    }
    let size = |x: usize, y: usize| x.checked_mul(y).expect("gemm: sizes overflow");
    let a_last = size(m - 1, a_rs).checked_add(size(k - 1, a_cs));
    assert!(a_last.is_some_and(|l| l < a.len()), "gemm: a too short");
    assert!(b.len() >= size(k, n), "gemm: b too short");
    assert!(out.len() >= size(m, n), "gemm: out too short");
    // `out` row-major is `outᵀ` column by column: `outᵀ = Bᵀ Aᵀ`, whose left
    // operand is `B` read across and right operand `A` read down.
    Some(Gemm {
        isa: Isa::detect(),
        m: n,
        n: m,
        k,
        a: Left::Strided {
            ptr: b.as_ptr(),
            rs: 1,
            cs: n,
        },
        b: Right {
            ptr: a.as_ptr(),
            rs: a_cs,
            cs: a_rs,
        },
        c: out.as_mut_ptr(),
        ldc: n,
        from: From::Dst,
        // Training shares the jobs of several products among the threads.
        split: 1,
    })
}

/// `dw[i*c + j] += sum_n z[n*r + i] * v[n*c + j]`: the sum over `n` rows of
/// the outer products of `z`'s and `v`'s rows (`zᵀ v`, `[r, c]` row-major),
/// as jobs to share among threads ([`accumulation`]). Checks every bound.
pub(crate) fn outer_sum_jobs(
    r: usize,
    c: usize,
    n: usize,
    z: &[f32],
    v: &[f32],
    dw: &mut [f32],
) -> Option<Gemm> {
    accumulation(r, c, n, (z, 1, r), v, dw)
}

/// `out[i*c + j] += sum_k z[i*r + k] * w[k*c + j]`: `out += z w` for `n`
/// rows of `z` (`[n, r]`) and `w` (`[r, c]`), all row-major, on this
/// thread. Checks every bound.
pub(crate) fn product_sum(n: usize, r: usize, c: usize, z: &[f32], w: &[f32], out: &mut [f32]) {
    accumulate(n, c, r, (z, r, 1), w, out);
}
