//! Matrix products on 8-bit integers with 32-bit integer sums: the first
//! step of integer arithmetic (issue 31, point 2; not yet a choice of
//! `Options`, reached through `bench::GemmBench::int8` and its tests).
//!
//! The weights are signed bytes with a float32 scale per row, symmetric, as
//! `--precision int8` stores them ([`crate::quant::int8_rows`]); the other
//! operand, the activations, is quantized column by column as it comes
//! ([`quantize`]): unsigned bytes with a scale and a zero point of their own
//! (asymmetric, so a column of positive values uses all 256 levels, as
//! ONNX Runtime's `DynamicQuantizeLSTM` quantizes). Element `(i, j)` of
//! `C (+)= A · B` is then
//!
//! ```text
//! t = sum_l qa[i][l] * qb[l][j] - zb[j] * sum_l qa[i][l]     (exact, i32)
//! c = (t as f32).mul_add(sa[i] * sb[j], start)                (f32, fused)
//! ```
//!
//! The integer sum is exact whatever the order its terms are added in (`k`
//! is at most [`MAX_K`], so no sum overflows), and the rest is the same
//! float32 operations on every path: every path ([`Dots`]) gives the same
//! bits, on any job split and thread count.
//!
//! `A` is packed once ([`pack`]): units of [`UNIT`] rows, each the *quads*
//! of `k` in order, a quad being the unit's 16 rows' four consecutive values
//! side by side (64 bytes: one AVX-512 vector of 16 lanes of four bytes, the
//! operand `vpdpbusd` multiplies by four bytes of the other broadcast to
//! every lane), `k` padded with zeros to a multiple of [`QUAD`] and the rows
//! to a multiple of two units; with each row's scale and the sum of its
//! values (for the zero point). `B` (float32, any strides) is quantized per
//! job into columns of `kp` bytes.
//!
//! Paths: AMX (`tdpbusd` on tiles: 16 columns by 16 rows by 64 of `k`,
//! 16 K multiply-adds per instruction; `k` padded to 64 for it), AVX512-VNNI
//! (`vpdpbusd` on 512-bit vectors: 64 products per instruction, four times
//! an AVX-512 FMA's 16; 32 rows by 12 columns in 24 registers), AVX-VNNI
//! (the same on 256-bit vectors: 16 rows by 6 columns), plain AVX2
//! (`vpmaddwd` on the values widened to 16 bits: each pair's sum exact in
//! 32 bits, so the same integer sums; 16 rows by 3 columns, about the
//! float32 kernels' rate), and a portable one (scalar i32). Plain AVX2 (`vpmaddubsw`,
//! whose 16-bit pair sums saturate unless a range is cut) is not written
//! yet: such hosts take the portable path.

#[cfg(target_arch = "x86_64")]
mod amx;
#[cfg(test)]
mod tests;
#[cfg(target_arch = "x86_64")]
mod x86;

use std::cell::RefCell;

use super::gemm::{fill, Blocked, From, Jobs, Right};

/// Rows of `A` per unit (an AVX-512 vector of 16 sums).
pub const UNIT: usize = 16;
/// Values of `k` per quad (four bytes: one lane of `vpdpbusd`).
pub const QUAD: usize = 4;
/// The longest `k`: its sums, and the zero point times a row's sum, stay
/// inside an i32 (`2 * 255 * 127 * k < 2^31`).
pub const MAX_K: usize = 32_768;
/// Values of `k` per AMX tile step (a tile row of 64 bytes).
const AMX_DEPTH: usize = 64;
/// Fewest columns a block runs on AMX tiles (a tile's 16): narrower ones
/// run on AVX512-VNNI (LSTM H = 256 at batch 1: 5.2 µs a step on AMX, 4.0
/// on AVX512-VNNI).
const AMX_MIN_COLUMNS: usize = 16;
/// Columns of `C` per job at most (a multiple of both kernels' columns).
const NC: usize = 240;
/// Rows of `C` per job when the columns are too few to share.
const MC: usize = 256;
/// Columns per tile of the AVX-512 kernel (the job's columns are a whole
/// number of them but for the last).
const TILE_COLUMNS: usize = 12;

/// Which instructions compute the dot products.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Dots {
    /// Scalar i32 sums, on any target.
    Portable,
    /// AVX-VNNI's `vpdpbusd` on 256-bit vectors (Intel from Alder Lake,
    /// AMD from Zen 5).
    AvxVnni,
    /// Plain AVX2's `vpmaddwd` on the bytes widened to 16 bits (every x86
    /// host since Haswell; `vpmaddubsw`'s 16-bit sums would saturate).
    Avx2,
    /// AVX512-VNNI's `vpdpbusd` (Intel from Cascade Lake, AMD from Zen 4).
    Avx512Vnni,
    /// AMX-INT8's `tdpbusd` on tiles (Intel from Sapphire Rapids; Linux
    /// grants the tile state when asked), the sums finished on AVX-512;
    /// blocks of fewer than 16 columns on AVX512-VNNI.
    Amx,
}

impl Dots {
    pub const ALL: [Dots; 5] = [
        Dots::Portable,
        Dots::Avx2,
        Dots::AvxVnni,
        Dots::Avx512Vnni,
        Dots::Amx,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Dots::Portable => "portable",
            Dots::AvxVnni => "avx-vnni",
            Dots::Avx2 => "avx2",
            Dots::Avx512Vnni => "avx512-vnni",
            Dots::Amx => "amx",
        }
    }

    /// Whether this host can run them.
    pub fn available(self) -> bool {
        match self {
            Dots::Portable => true,
            #[cfg(target_arch = "x86_64")]
            Dots::AvxVnni => {
                is_x86_feature_detected!("avx2")
                    && is_x86_feature_detected!("fma")
                    && is_x86_feature_detected!("avxvnni")
            }
            #[cfg(target_arch = "x86_64")]
            Dots::Avx2 => is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma"),
            #[cfg(target_arch = "x86_64")]
            Dots::Avx512Vnni => {
                is_x86_feature_detected!("avx512f") && is_x86_feature_detected!("avx512vnni")
            }
            #[cfg(target_arch = "x86_64")]
            Dots::Amx => Dots::Avx512Vnni.available() && amx::available(),
            #[cfg(not(target_arch = "x86_64"))]
            Dots::Avx2 | Dots::AvxVnni | Dots::Avx512Vnni | Dots::Amx => false,
        }
    }

    /// `k` padded as this path reads it: to whole quads, and for AMX to
    /// whole tiles of 64.
    pub fn padded_k(self, k: usize) -> usize {
        match self {
            Dots::Amx => k.next_multiple_of(AMX_DEPTH),
            _ => k.next_multiple_of(QUAD),
        }
    }

    /// The integer path that goes with the float kernels of `isa`: at
    /// AVX-512 width the fastest the host has, at AVX2's AVX-VNNI where the
    /// host has it, else plain AVX2; for the portable and NEON kernels the
    /// portable one. Forcing an ISA (`Options::isa`) so forces the integer
    /// path too: every path can be run, and tested, on a host that has it.
    pub fn for_isa(isa: super::Isa) -> Dots {
        let paths: &[Dots] = match isa {
            super::Isa::Avx512 => return Dots::best(),
            super::Isa::Avx2 => &[Dots::AvxVnni, Dots::Avx2],
            super::Isa::Scalar | super::Isa::Neon => &[],
        };
        paths
            .iter()
            .copied()
            .find(|d| d.available())
            .unwrap_or(Dots::Portable)
    }

    /// The fastest path this host has.
    pub fn best() -> Dots {
        [Dots::Amx, Dots::Avx512Vnni, Dots::AvxVnni, Dots::Avx2]
            .into_iter()
            .find(|d| d.available())
            .unwrap_or(Dots::Portable)
    }
}

/// A cache line of bytes: the packed weights start on one.
#[derive(Clone, Copy)]
#[repr(C, align(64))]
struct Line([i8; 64]);

/// A matrix `[m, k]` packed for [`Product`] ([`pack`]).
pub struct Packed {
    lines: Vec<Line>,
    /// Each row's scale, then zeros to the padded rows.
    scales: Vec<f32>,
    /// Each row's sum of values, then zeros to the padded rows.
    sums: Vec<i32>,
    pub m: usize,
    pub k: usize,
    /// `k` padded for the path it was packed for ([`Dots::padded_k`]).
    pub kp: usize,
}

impl std::fmt::Debug for Packed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Packed [{}, {}] in int8", self.m, self.k)
    }
}

/// Rows padded to two units (the AVX-512 kernel's tiles are two units).
fn padded_m(m: usize) -> usize {
    m.next_multiple_of(2 * UNIT)
}

/// Where `(row, col)` of a matrix packed with `kp` padded columns lives.
fn weight_index(row: usize, col: usize, kp: usize) -> usize {
    row / UNIT * UNIT * kp + col / QUAD * QUAD * UNIT + row % UNIT * QUAD + col % QUAD
}

/// Packs the row-major `[m, k]` matrix of values `q` with a scale per row
/// (as [`crate::quant::int8_rows`] gives them) for path `dots` (which pads
/// `k` its way). An error if the lengths differ from the sizes, a value is
/// -128 (symmetric: -127..=127), a scale is not finite, or `k` is over
/// [`MAX_K`].
pub fn pack(dots: Dots, q: &[i8], scales: &[f32], m: usize, k: usize) -> Result<Packed, String> {
    if q.len() != m * k || scales.len() != m {
        return Err(format!(
            "int8::pack: [{m}, {k}] needs {} values and {m} scales, got {} and {}",
            m * k,
            q.len(),
            scales.len()
        ));
    }
    if k > MAX_K {
        return Err(format!(
            "int8::pack: k = {k} is over {MAX_K}, past which the integer sums could overflow"
        ));
    }
    if q.contains(&i8::MIN) {
        return Err("int8::pack: -128 is outside the symmetric range -127..=127".to_string());
    }
    if let Some(r) = scales.iter().position(|s| !s.is_finite()) {
        return Err(format!("int8::pack: row {r}'s scale is {}", scales[r]));
    }
    let (kp, mp) = (dots.padded_k(k), padded_m(m));
    let mut lines = vec![Line([0; 64]); mp * kp / 64 + 1];
    // SAFETY: `lines` holds more than `mp * kp` bytes.
    let out: &mut [i8] =
        unsafe { std::slice::from_raw_parts_mut(lines.as_mut_ptr().cast(), mp * kp) };
    let mut sums = vec![0i32; mp];
    for r in 0..m {
        for c in 0..k {
            let v = q[r * k + c];
            out[weight_index(r, c, kp)] = v;
            sums[r] += i32::from(v);
        }
    }
    let mut padded_scales = scales.to_vec();
    padded_scales.resize(mp, 0.0);
    Ok(Packed {
        lines,
        scales: padded_scales,
        sums,
        m,
        k,
        kp,
    })
}

/// A column of activations quantized into `q` (as long, or longer: the rest
/// is zeroed): `q[l] = clamp(round(x[l] * (1 / scale)) + zero, 0, 255)`, the
/// rounding to nearest even, over the range from the smallest value (or 0)
/// to the largest (or 0) in 255 steps, so that 0 is exact. Returns `(scale,
/// zero)`; a column of zeros has scale 1. A column holding a value that is
/// not finite gets scale NaN (and zeros), so that every element it enters
/// is NaN, as in float32 arithmetic, never a number.
pub fn quantize(x: &[f32], q: &mut [u8]) -> (f32, i32) {
    assert!(
        q.len() >= x.len(),
        "int8::quantize: {} bytes for {} values",
        q.len(),
        x.len()
    );
    #[cfg(target_arch = "x86_64")]
    if is_x86_feature_detected!("avx512f") {
        // SAFETY: the host has AVX-512F.
        return unsafe { x86::quantize_avx512(x, q) };
    }
    #[cfg(target_arch = "x86_64")]
    if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") {
        // SAFETY: the host has AVX2 and FMA.
        return unsafe { x86::quantize_avx2(x, q) };
    }
    quantize_portable(x, q)
}

/// [`quantize`], one value at a time (every host's path, and the AVX-512
/// and AVX2 ones' reference).
fn quantize_portable(x: &[f32], q: &mut [u8]) -> (f32, i32) {
    let (mut lo, mut hi) = (0.0f32, 0.0f32);
    let mut finite = true;
    for &v in x {
        finite &= v.is_finite();
        lo = lo.min(v);
        hi = hi.max(v);
    }
    q.fill(0);
    if !finite {
        return (f32::NAN, 0);
    }
    if hi == lo {
        return (1.0, 0);
    }
    let scale = (hi - lo) / 255.0;
    let inv = 1.0 / scale;
    let zero = (-lo * inv).round_ties_even().clamp(0.0, 255.0);
    for (d, &v) in q.iter_mut().zip(x) {
        *d = ((v * inv).round_ties_even() + zero).clamp(0.0, 255.0) as u8;
    }
    (scale, zero as i32)
}

/// One product `C (+)= A B` (module docs), `A` packed by [`pack`]
/// (unchecked: the benches and [`product`] build it).
#[derive(Clone, Copy, Debug)]
pub struct Product {
    pub dots: Dots,
    pub m: usize,
    pub n: usize,
    pub k: usize,
    /// `k` as packed ([`Packed::kp`]).
    pub kp: usize,
    /// [`pack`]'s values, scales and sums for `[m, k]`.
    pub a: *const i8,
    pub scales: *const f32,
    pub sums: *const i32,
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

impl Product {
    /// The product of `a` (packed) by `b` into `c`, on `dots`.
    pub fn new(dots: Dots, a: &Packed, n: usize, b: Right, c: *mut f32, ldc: usize) -> Product {
        Product {
            dots,
            m: a.m,
            n,
            k: a.k,
            kp: a.kp,
            a: a.lines.as_ptr().cast(),
            scales: a.scales.as_ptr(),
            sums: a.sums.as_ptr(),
            b,
            c,
            ldc,
            from: From::Zero,
            split: 1,
        }
    }

    /// Rows `rows` of `C` for every one of its `n` columns, from columns
    /// quantized before (by [`Columns::quantize`], for this product's `k`
    /// and `kp` and columns `0..n`): products that multiply the same activations
    /// quantize them once.
    ///
    /// # Safety
    /// As [`Blocked::run_block`], for those rows and every column (`B` is not
    /// read); `rows.start` a multiple of 32 and `rows.end <= m`; `columns`
    /// quantized for `k` and `n` columns.
    pub unsafe fn run_rows(&self, rows: std::ops::Range<usize>, columns: &Columns) {
        assert!(
            columns.kp == self.kp && columns.scales.len() == self.n,
            "int8::Product::run_rows: columns quantized for another product"
        );
        if rows.start >= rows.end || self.n == 0 {
            return;
        }
        if self.k == 0 {
            // SAFETY: as the caller guarantees.
            unsafe { fill(self.c, self.ldc, self.from, rows, 0..self.n) };
            return;
        }
        // SAFETY: as the caller guarantees.
        unsafe { self.block(columns, rows, 0) };
    }

    /// Rows `rows` by the columns `columns` holds, from column `j0`, on the
    /// path's kernel.
    ///
    /// # Safety
    /// As [`Product::run_rows`], `k > 0`.
    unsafe fn block(&self, columns: &Columns, rows: std::ops::Range<usize>, j0: usize) {
        let block = Block {
            product: self,
            x: columns.quads.as_ptr().cast(),
            columns: &columns.scales,
            kp: columns.kp,
            i0: rows.start,
            i1: rows.end,
            j0,
            j1: j0 + columns.scales.len(),
        };
        // A tile of AMX sums is 16 columns: fewer go to AVX512-VNNI (its
        // tiles are 12 columns; any `kp` of whole quads suits it, and every
        // path gives the same bits).
        let dots = match self.dots {
            Dots::Amx if block.j1 - block.j0 < AMX_MIN_COLUMNS => Dots::Avx512Vnni,
            d => d,
        };
        // SAFETY: as the caller guarantees; the columns are quantized; the
        // host has AVX512-VNNI where it has AMX (`Dots::available`).
        unsafe {
            match dots {
                #[cfg(target_arch = "x86_64")]
                Dots::Avx512Vnni => x86::block_avx512(&block),
                #[cfg(target_arch = "x86_64")]
                Dots::AvxVnni => x86::block_avx2(&block),
                #[cfg(target_arch = "x86_64")]
                Dots::Avx2 => x86::block_madd(&block),
                #[cfg(target_arch = "x86_64")]
                Dots::Amx => amx::block(&block),
                _ => portable_block(&block),
            }
        }
    }
}

impl Blocked for Product {
    /// Blocks of whole tiles of columns, at most [`NC`], rows in blocks of
    /// [`MC`] for narrow products.
    fn grid(&self) -> Jobs {
        Jobs {
            m: self.m,
            n: self.n,
            split: self.split,
            nr: TILE_COLUMNS,
            nc: NC,
            mc: MC,
        }
    }

    fn destination(&self) -> (usize, *mut f32, usize, From) {
        (self.k, self.c, self.ldc, self.from)
    }

    /// The block's columns of `B` quantized, then each tile of rows and
    /// columns on the path's kernel.
    ///
    /// # Safety
    /// `A` packed by [`pack`] for `[m, k]` (values, scales, sums), `B`
    /// (every `(l, j)`) and `C` (every `(i, j)`, and for [`From::Row`] `m`
    /// floats) must be valid, `C` not overlapping the others and no other
    /// thread touching the block's elements of `C` meanwhile; the host must
    /// have `dots`.
    unsafe fn run_block(&self, rows: std::ops::Range<usize>, cols: std::ops::Range<usize>) {
        let j0 = cols.start;
        SCRATCH.with_borrow_mut(|columns| {
            // SAFETY: `(l, j)` of `B` is valid for the job's columns, as the
            // caller guarantees.
            unsafe { columns.quantize(self.b, self.k, self.kp, cols) };
            // SAFETY: as the caller guarantees; the job's columns are
            // quantized, from column `j0`.
            unsafe { self.block(columns, rows, j0) };
        });
    }
}

/// Columns of activations quantized ([`quantize`]) for the products that
/// multiply them: each column's `kp` bytes (`k` padded to whole quads, the
/// padding zero), scale and zero point. Kept between calls (its space is
/// reused).
#[derive(Default)]
pub struct Columns {
    /// The columns' bytes, four at a time (aligned for `u32` reads), and one
    /// more quad: the kernels read a column's quads as `u32`s.
    quads: Vec<u32>,
    /// Each column's scale and zero point.
    scales: Vec<(f32, i32)>,
    kp: usize,
    /// A column's values, gathered when they are not contiguous.
    values: Vec<f32>,
}

impl Columns {
    /// Quantizes columns `cols` of the `[k, n]` operand `b` (element `(l, j)`
    /// at `b.ptr[l * rs + j * cs]`) into `kp >= k` bytes each (for a product
    /// packed with that `kp`), replacing what it held. The bytes are kept
    /// for a whole number of 32 columns (the rest zero: AMX reads columns in
    /// tiles of 16).
    ///
    /// # Safety
    /// Every `(l, j)` for `l < k`, `j` in `cols` must be valid to read.
    pub unsafe fn quantize(&mut self, b: Right, k: usize, kp: usize, cols: std::ops::Range<usize>) {
        assert!(
            kp >= k && kp.is_multiple_of(QUAD),
            "int8::Columns::quantize: {kp} bytes a column for k = {k}"
        );
        let width = cols.len();
        self.kp = kp;
        self.quads.clear();
        self.quads
            .resize(width.next_multiple_of(2 * UNIT) * kp / QUAD + 1, 0);
        self.scales.clear();
        // SAFETY: `quads` holds more than `width * kp` bytes.
        let bytes: &mut [u8] =
            unsafe { std::slice::from_raw_parts_mut(self.quads.as_mut_ptr().cast(), width * kp) };
        let Right { ptr, rs, cs } = b;
        for (j, q) in cols.zip(bytes.chunks_exact_mut(kp.max(1))) {
            let column: &[f32] = if rs == 1 {
                // SAFETY: `(0..k, j)` is valid, as the caller guarantees, and
                // contiguous.
                unsafe { std::slice::from_raw_parts(ptr.wrapping_add(j * cs), k) }
            } else {
                self.values.resize(k, 0.0);
                for (l, v) in self.values.iter_mut().enumerate() {
                    // SAFETY: `(l, j)` is valid, as the caller guarantees.
                    *v = unsafe { *ptr.add(l * rs + j * cs) };
                }
                &self.values
            };
            self.scales.push(quantize(column, q));
        }
        if kp == 0 {
            self.scales.resize(width, (1.0, 0));
        }
    }
}

// A thread's quantized columns, kept between jobs.
thread_local! {
    static SCRATCH: RefCell<Columns> = RefCell::new(Columns::default());
}

/// One job's operands, for a path's kernel.
struct Block<'p> {
    product: &'p Product,
    /// The job's columns quantized: column `j0 + j` at `j * kp` bytes.
    x: *const u8,
    /// Column `j0 + j`'s scale and zero point at `j`.
    columns: &'p [(f32, i32)],
    kp: usize,
    i0: usize,
    i1: usize,
    j0: usize,
    j1: usize,
}

impl Block<'_> {
    /// Asks for the lines of the tile after rows `i..i + rows` by columns
    /// `j..j + w`, in tiles of up to `columns`
    /// ([`prefetch_next`](super::gemm::prefetch_next)).
    #[cfg(target_arch = "x86_64")]
    fn ahead(&self, i: usize, rows: usize, j: usize, w: usize, columns: usize) {
        let p = self.product;
        let block = (self.i1, self.j0, self.j1);
        super::gemm::prefetch_next(p.c, p.ldc, p.from, (i, j, w), block, (rows, columns));
    }

    /// Where row `i`'s unit starts in `A`.
    fn unit(&self, i: usize) -> *const i8 {
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

    /// Element `(i, j)` from its integer sum `acc` (module docs).
    ///
    /// # Safety
    /// As [`Block::start`]; `i` below the padded rows.
    unsafe fn finish(&self, i: usize, j: usize, acc: i32) -> f32 {
        let (sb, zb) = self.columns[j - self.j0];
        // SAFETY: the scales and sums hold the padded rows.
        let (sa, sum) = unsafe { (*self.product.scales.add(i), *self.product.sums.add(i)) };
        let t = acc.wrapping_sub(zb.wrapping_mul(sum)) as f32;
        // SAFETY: as the caller guarantees.
        t.mul_add(sa * sb, unsafe { self.start(i, j) })
    }
}

/// The portable path: each element's sum in i32, over `k` in order.
///
/// # Safety
/// As [`Blocked::run_block`], for the block's job.
unsafe fn portable_block(b: &Block) {
    for j in b.j0..b.j1 {
        // SAFETY: column `j - j0` holds `kp` bytes.
        let x = unsafe { std::slice::from_raw_parts(b.x.add((j - b.j0) * b.kp), b.kp) };
        for i in b.i0..b.i1 {
            let unit = b.unit(i);
            let mut acc = 0i32;
            for (l, &v) in x.iter().enumerate() {
                // SAFETY: the unit holds `kp` quads of 16 rows.
                let w = unsafe { *unit.add(weight_index(i % UNIT, l, b.kp)) };
                acc += i32::from(w) * i32::from(v);
            }
            // SAFETY: as the caller guarantees, for an element of the job.
            unsafe { *b.c(i, j) = b.finish(i, j, acc) };
        }
    }
}

/// `c (+)= a b` for `a` packed `[m, k]`, a row-major `b` `[k, n]` and `c`
/// `[m, n]` on `dots`, every length checked (the tests' entry).
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
            "int8::product: [{m}, {k}] x [{k}, {n}] needs {} and {} values, got {} and {}",
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
    let right = Right {
        ptr: b.as_ptr(),
        rs: n,
        cs: 1,
    };
    if a.kp != dots.padded_k(k) {
        return Err(format!(
            "int8::product: packed for another path than {}",
            dots.name()
        ));
    }
    let p = Product {
        from: if accumulate { From::Dst } else { From::Zero },
        split,
        ..Product::new(dots, a, n, right, cm.as_mut_ptr(), m.max(1))
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
