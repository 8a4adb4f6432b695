//! Matrix products on bfloat16 operands with float32 sums: the products of
//! many rows under `Compute::Bf16` (the hoisted input projection of a
//! sequence).
//!
//! A bfloat16 is the top half of a float32, so the product of two is exact in
//! float32, and the x86 dot-product instructions do twice (AVX512-BF16's
//! `vdpbf16ps`: 32 products per instruction) or sixteen times (AMX's
//! `tdpbf16ps`: a 16 x 16 tile of sums of 32 products) the work of an
//! AVX-512 fused multiply-add per instruction. Both read their operands in
//! *pairs*: two consecutive values of `k` side by side.
//!
//! `C (+)= A · B` as [`gemm`](super::gemm) has it (`C` column by column,
//! element `(i, j)` at `c[i + j * ldc]`), `A` `[m, k]` packed once into
//! bf16 by [`pack`]: units of [`UNIT`] rows, each the pairs of `k` in order,
//! a pair being the unit's 16 rows' two values side by side (64 bytes: one
//! AMX tile row, one AVX-512 vector), `k` padded with zeros to a multiple of
//! [`DEPTH`] and the rows to a multiple of two units. `B` (float32, any
//! strides) is rounded to bf16 per job into rows of `k` per column (the
//! layout of an AMX tile's left operand, from which `vdpbf16ps` broadcasts
//! one pair at a time).
//!
//! Paths ([`Dots`]): AMX tiles (2 x 2 tiles of 16 columns by 16 rows, 32 of
//! `k` per step), AVX512-BF16 (32 rows by 12 columns in 24 registers), and a
//! portable one (the same pairs, widened, through `f32::mul_add`). Each
//! computes an element in one order whatever the job split or thread count,
//! so a product is the same bits on any number of threads; the paths differ
//! from each other in how a pair's two products are added (and AMX and
//! `vdpbf16ps` treat bf16 subnormals as zero), so their results differ by a
//! rounding per pair, not more.

#[cfg(target_arch = "x86_64")]
pub(crate) mod amx;
#[cfg(target_arch = "x86_64")]
mod avx512;
#[cfg(test)]
mod tests;

use std::cell::RefCell;

use super::gemm::{Blocked, From, Jobs, Right};

/// Rows of `A` per unit (an AMX tile's 16 columns of sums).
pub const UNIT: usize = 16;
/// Values of `k` per step (an AMX tile row: 64 bytes of bf16); `k` is padded
/// to a multiple of it.
pub const DEPTH: usize = 32;
/// Columns of `C` per job at most (a multiple of 32: two AMX tiles).
const NC: usize = 256;
/// Rows of `C` per job when the columns are too few to share.
const MC: usize = 256;

/// Which instructions compute the dot products.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Dots {
    /// Widened to float32, `f32::mul_add`, on any target.
    Portable,
    /// AVX512-BF16's `vdpbf16ps` (Zen 4 and 5, Intel from Cooper Lake).
    Avx512Bf16,
    /// AMX tiles, `tdpbf16ps` (Intel from Sapphire Rapids; Linux grants a
    /// process their state on request).
    Amx,
}

impl Dots {
    pub const ALL: [Dots; 3] = [Dots::Portable, Dots::Avx512Bf16, Dots::Amx];

    pub fn name(self) -> &'static str {
        match self {
            Dots::Portable => "portable",
            Dots::Avx512Bf16 => "avx512-bf16",
            Dots::Amx => "amx",
        }
    }

    /// Whether this host (and for AMX, this process) can run them.
    pub fn available(self) -> bool {
        match self {
            Dots::Portable => true,
            #[cfg(target_arch = "x86_64")]
            Dots::Avx512Bf16 => {
                is_x86_feature_detected!("avx512f") && is_x86_feature_detected!("avx512bf16")
            }
            #[cfg(target_arch = "x86_64")]
            Dots::Amx => amx::available(),
            #[cfg(not(target_arch = "x86_64"))]
            Dots::Avx512Bf16 | Dots::Amx => false,
        }
    }
}

/// A cache line of bf16 values: the packed operands start on one.
#[derive(Clone, Copy)]
#[repr(C, align(64))]
struct Line([u16; 32]);

/// A matrix `[m, k]` packed for [`Product`] ([`pack`]).
pub struct Packed {
    lines: Vec<Line>,
    pub m: usize,
    pub k: usize,
}

impl Packed {
    pub fn as_ptr(&self) -> *const u16 {
        self.lines.as_ptr().cast()
    }
}

impl std::fmt::Debug for Packed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Packed [{}, {}] in bf16", self.m, self.k)
    }
}

/// `k` padded to whole steps.
fn padded_k(k: usize) -> usize {
    k.next_multiple_of(DEPTH)
}

/// Rows padded to two units (the AMX kernel's tiles come in pairs).
fn padded_m(m: usize) -> usize {
    m.next_multiple_of(2 * UNIT)
}

/// Packs the row-major `[m, k]` matrix `a`, each value rounded to the
/// nearest bf16 (ties to even, [`crate::quant::bf16_bits`]).
pub fn pack(a: &[f32], m: usize, k: usize) -> Packed {
    assert_eq!(a.len(), m * k, "bf16::pack: matrix of the wrong size");
    let kp = padded_k(k);
    let values = padded_m(m) * kp;
    let mut lines = vec![Line([0; 32]); values / 32];
    // SAFETY: `lines` holds `values` u16s.
    let out: &mut [u16] =
        unsafe { std::slice::from_raw_parts_mut(lines.as_mut_ptr().cast(), values) };
    for r in 0..m {
        for c in 0..k {
            out[weight_index(r, c, kp)] = crate::quant::bf16_bits(a[r * k + c]);
        }
    }
    Packed { lines, m, k }
}

/// Where `(row, col)` of a matrix packed with `kp` padded columns lives.
fn weight_index(row: usize, col: usize, kp: usize) -> usize {
    row / UNIT * UNIT * kp + col / 2 * 2 * UNIT + row % UNIT * 2 + col % 2
}

/// One product `C (+)= A B`, `A` packed by [`pack`] (unchecked: the JIT's
/// projection and [`product`] build it).
#[derive(Clone, Copy, Debug)]
pub struct Product {
    pub dots: Dots,
    pub m: usize,
    pub n: usize,
    pub k: usize,
    /// [`pack`]'s values for `[m, k]`.
    pub a: *const u16,
    pub b: Right,
    pub c: *mut f32,
    pub ldc: usize,
    pub from: From,
    /// Jobs wanted, for threads to share (as [`gemm::Gemm::split`](super::gemm::Gemm)).
    pub split: usize,
}

// SAFETY: a `Product` is a description; its pointers are dereferenced only
// by its `unsafe` methods, whose callers guarantee that the operands are
// valid and that no two threads run jobs writing the same elements.
unsafe impl Send for Product {}
// SAFETY: as for `Send`.
unsafe impl Sync for Product {}

thread_local! {
    /// Each thread's rounded columns of `B`, kept between calls.
    static SCRATCH: RefCell<Vec<Line>> = const { RefCell::new(Vec::new()) };
}

/// Extra zero columns after a job's packed columns: the AVX-512 kernel's
/// last tile reads whole tiles of [`avx512::COLUMNS`].
const SLACK_COLUMNS: usize = 16;

impl Blocked for Product {
    /// Blocks of a multiple of 32 columns, at most [`NC`], rows in blocks
    /// of [`MC`] for narrow products.
    fn grid(&self) -> Jobs {
        Jobs {
            m: self.m,
            n: self.n,
            split: self.split,
            nr: 2 * UNIT,
            nc: NC,
            mc: MC,
        }
    }

    fn destination(&self) -> (usize, *mut f32, usize, From) {
        (self.k, self.c, self.ldc, self.from)
    }

    /// The block's columns of `B` rounded to bf16 once, then every pair of
    /// units of its rows by every 32 columns.
    ///
    /// # Safety
    /// `A` ([`pack`]'s values of `[m, k]`), `B` (every `(l, j)`) and `C`
    /// (every `(i, j)`, and for [`From::Row`] `m` floats) must be valid, `C`
    /// not overlapping the others and no other thread touching the block's
    /// elements of `C` meanwhile; the host must have `dots`.
    unsafe fn run_block(&self, rows: std::ops::Range<usize>, cols: std::ops::Range<usize>) {
        let (i0, i1, j0, j1) = (rows.start, rows.end, cols.start, cols.end);
        let kp = padded_k(self.k);
        let width = (j1 - j0).next_multiple_of(32) + SLACK_COLUMNS;
        SCRATCH.with_borrow_mut(|scratch| {
            let lines = width * kp / 32;
            if scratch.len() < lines {
                scratch.resize(lines, Line([0; 32]));
            }
            let x: *mut u16 = scratch.as_mut_ptr().cast();
            // SAFETY: the scratch holds `width` rows of `kp` values; `B`'s
            // columns `j0..j1` are valid, as the caller guarantees.
            unsafe { self.round_columns(j0, j1, width, kp, x) };
            let block = Block {
                product: self,
                x,
                kp,
                i0,
                i1,
                j0,
                j1,
            };
            // SAFETY: as the caller guarantees; the columns are rounded.
            unsafe {
                match self.dots {
                    #[cfg(target_arch = "x86_64")]
                    Dots::Amx => amx::block(&block),
                    #[cfg(target_arch = "x86_64")]
                    Dots::Avx512Bf16 => avx512::block(&block),
                    _ => portable_block(&block),
                }
            }
        });
    }
}

impl Product {
    /// Columns `j0..j1` of `B` rounded to bf16 into rows of `kp` at `x`
    /// (`width` rows: those after `j1 - j0`, and each row's values after
    /// `k`, zero).
    ///
    /// # Safety
    /// As [`Blocked::run_block`]; `x` holds `width * kp` values.
    unsafe fn round_columns(&self, j0: usize, j1: usize, width: usize, kp: usize, x: *mut u16) {
        let Right { ptr, rs, cs } = self.b;
        for j in 0..width {
            // SAFETY: row `j` of `width` is inside the scratch.
            let row = unsafe { std::slice::from_raw_parts_mut(x.add(j * kp), kp) };
            if j0 + j >= j1 {
                row.fill(0);
                continue;
            }
            let col = ptr.wrapping_add((j0 + j) * cs);
            if rs == 1 {
                // SAFETY: column `j0 + j`'s `k` values are contiguous.
                let src = unsafe { std::slice::from_raw_parts(col, self.k) };
                round_row(src, &mut row[..self.k]);
            } else {
                for (l, v) in row[..self.k].iter_mut().enumerate() {
                    // SAFETY: `(l, j0 + j)` is valid.
                    *v = crate::quant::bf16_bits(unsafe { *col.add(l * rs) });
                }
            }
            row[self.k..].fill(0);
        }
    }
}

/// `src` rounded to bf16 ([`crate::quant::bf16_bits`]'s bits), 16 at a time
/// where the host has AVX-512.
fn round_row(src: &[f32], dst: &mut [u16]) {
    #[cfg(target_arch = "x86_64")]
    if is_x86_feature_detected!("avx512f") {
        // SAFETY: the host has AVX-512F; the slices are as long.
        unsafe { avx512::round_row(src, dst) };
        return;
    }
    for (d, &s) in dst.iter_mut().zip(src) {
        *d = crate::quant::bf16_bits(s);
    }
}

/// `src` rounded to the nearest bf16 values, as float32s
/// ([`crate::quant::round_bf16`]), 16 at a time where the host has AVX-512.
pub fn round_values(src: &[f32], dst: &mut [f32]) {
    assert_eq!(src.len(), dst.len(), "bf16::round_values: lengths differ");
    #[cfg(target_arch = "x86_64")]
    if is_x86_feature_detected!("avx512f") {
        // SAFETY: the host has AVX-512F; the slices are as long.
        unsafe { avx512::round_values(src, dst) };
        return;
    }
    for (d, &s) in dst.iter_mut().zip(src) {
        *d = crate::quant::round_bf16(s);
    }
}

/// One job's operands, for a path's kernel.
struct Block<'p> {
    product: &'p Product,
    /// The job's columns in bf16: row `j` (of `kp` values) is column `j0 + j`.
    x: *const u16,
    kp: usize,
    i0: usize,
    i1: usize,
    j0: usize,
    j1: usize,
}

impl Block<'_> {
    /// Where row `i`'s unit starts in `A`.
    fn unit(&self, i: usize) -> *const u16 {
        self.product.a.wrapping_add(i / UNIT * UNIT * self.kp)
    }

    /// Element `(i, j)` of `C`.
    fn c(&self, i: usize, j: usize) -> *mut f32 {
        self.product.c.wrapping_add(i + j * self.product.ldc)
    }

    /// Where element `(i, j)`'s sum starts.
    ///
    /// # Safety
    /// As [`Blocked::run_block`], for an element of the job.
    unsafe fn start(&self, i: usize, j: usize) -> f32 {
        let p = self.product;
        // SAFETY: as the caller guarantees.
        unsafe { p.from.start(p.c, p.ldc, i, j) }
    }
}

/// The portable path: each element a chain of `f32::mul_add` over `k` in
/// order (the pairs' values widened exactly).
///
/// # Safety
/// As [`Blocked::run_block`], for the block's job.
unsafe fn portable_block(b: &Block) {
    let widen = |v: u16| crate::quant::from_bf16(v);
    for j in b.j0..b.j1 {
        // SAFETY: row `j - j0` of the rounded columns holds `kp` values.
        let x = unsafe { std::slice::from_raw_parts(b.x.add((j - b.j0) * b.kp), b.kp) };
        for i in b.i0..b.i1 {
            // SAFETY: as the caller guarantees.
            let mut acc = unsafe { b.start(i, j) };
            let unit = b.unit(i);
            for (p, pair) in x.chunks_exact(2).enumerate() {
                // SAFETY: the unit holds `kp / 2` pairs of 16 rows.
                let w = unsafe { unit.add(p * 2 * UNIT + i % UNIT * 2) };
                // SAFETY: as above.
                let (w0, w1) = unsafe { (*w, *w.add(1)) };
                acc = widen(w0).mul_add(widen(pair[0]), acc);
                acc = widen(w1).mul_add(widen(pair[1]), acc);
            }
            // SAFETY: as the caller guarantees.
            unsafe { *b.c(i, j) = acc };
        }
    }
}

/// `c (+)= a b` for a row-major `a` `[m, k]`, `b` `[k, n]` and `c` `[m, n]`
/// on `dots`, every length checked (the tests' entry).
#[cfg(test)]
pub fn product(
    dots: Dots,
    a: &Packed,
    b: &[f32],
    n: usize,
    c: &mut [f32],
    accumulate: bool,
    split: usize,
) -> Result<(), String> {
    let (m, k) = (a.m, a.k);
    if !dots.available() {
        return Err(format!("{} is not available on this host", dots.name()));
    }
    if b.len() != k * n || c.len() != m * n {
        return Err(format!(
            "bf16::product: [{m}, {k}] x [{k}, {n}] needs {} and {} values, got {} and {}",
            k * n,
            m * n,
            b.len(),
            c.len()
        ));
    }
    // The product's `C` is column by column: through a copy.
    let mut cm = vec![0.0f32; m * n];
    if accumulate {
        for i in 0..m {
            for j in 0..n {
                cm[i + j * m] = c[i * n + j];
            }
        }
    }
    let p = Product {
        dots,
        m,
        n,
        k,
        a: a.as_ptr(),
        b: Right {
            ptr: b.as_ptr(),
            rs: n,
            cs: 1,
        },
        c: cm.as_mut_ptr(),
        ldc: m.max(1),
        from: if accumulate { From::Dst } else { From::Zero },
        split,
    };
    // SAFETY: every operand's length is checked above; `cm` is ours.
    unsafe { p.run() };
    for i in 0..m {
        for j in 0..n {
            c[i * n + j] = cm[i + j * m];
        }
    }
    Ok(())
}
