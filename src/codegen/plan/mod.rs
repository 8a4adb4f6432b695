//! The plan: *how* a step of an optimized cell runs, decided once per compiled
//! cell, before any code is generated.
//!
//! The IR says what is computed; the plan says where every value lives in memory,
//! how the weights are packed, and which loops run in which order:
//!
//! - **Slots.** Generated code reads and writes memory through an array of base
//!   pointers, one per *slot*: slot 0 is the packed weights; then one buffer per
//!   input, two per state (the value at the start of the step, and the next one;
//!   they swap after each step), and one scratch buffer per intermediate value
//!   that must live in memory. A batch buffer holds `batch` rows of `stride`
//!   floats; `stride` is the vector length rounded up to [`LANES`], so that every
//!   vector load and store of a row stays inside its row.
//! - **Tasks**, in order: for each stage, its product (with its fused epilogue,
//!   when the epilogue reads the product's row blocks and has their length), then
//!   the regions of that stage that stand alone. A task runs over a range of batch
//!   rows and a range of *tiles* (groups of [`LANES`] lanes), so that threads can
//!   split it.
//! - **Panels** (the packed layout of a product's weights): see [`ProductGroup`].

mod build;
pub mod verify;

pub use super::options::Variant;
use crate::ir::{Cell, InputId, Op, Operand, ParamId, Precision, ReduceOp, RegionInst, StateId};
use build::Planner;

/// Floats per vector register (`f32x4`: the width Cranelift lowers on x86-64
/// and aarch64).
pub const LANES: usize = 4;
const _: () = assert!(LANES == crate::kernels::wide::TILE_LANES);
/// Most row blocks one micro-kernel accumulates at once (per batch row).
pub const MAX_CHUNK: usize = 6;

pub fn padded(n: usize) -> usize {
    n.div_ceil(LANES) * LANES
}

pub use crate::kernels::Loc;

#[derive(Clone, Debug, PartialEq)]
pub enum SlotKind {
    Weights,
    Input(InputId),
    StateCur(StateId),
    StateNext(StateId),
    Scratch,
    /// The hoisted input projection of one step (its pointer moves every step).
    Projection(usize),
}

#[derive(Clone, Debug, PartialEq)]
pub struct Slot {
    pub kind: SlotKind,
    /// Floats per batch row (0 for the weights).
    pub stride: usize,
    /// A name for dumps.
    pub name: String,
}

/// One product's row blocks of one length, and how their weights are packed.
///
/// The rows of every block are cut into tiles of [`LANES`] rows; tile `t` holds
/// rows `LANES*t ..` of *every* block of the group, so the micro-kernel that
/// computes a tile has every gate of the same hidden units in registers, and the
/// fused epilogue runs on them straight away. In the packed weights, the tiles
/// of a group follow each other at `tile_stride` floats, and tile `t` is laid out
/// chunk after chunk ([`Chunk`]): the chunk's folded biases (one vector per
/// block), then per input segment ([`Segment`]), for `k` in the input's length,
/// one vector of [`LANES`] rows for each block that reads that input. Reading a
/// tile is one forward sweep through memory; zero blocks take no space. Rows past
/// a block's length are zero.
///
/// A segment whose weights are all stored narrow ([`Segment::precision`]) holds
/// them narrow, `k` in pairs (the last pair of an odd `k` padded with zeros):
/// - **bf16**: per pair, per block, [`LANES`] 32-bit words, the odd `k`'s
///   bfloat16 in the high half and the even one's in the low half, so that a
///   shift left by 16 widens the even one and masking the low half the odd one;
/// - **int8**: first the blocks' row scales ([`LANES`] floats per block), then
///   per pair, per block, [`LANES`] bytes of the even `k` and [`LANES`] of the
///   odd one, which one 8-byte sign-extending load widens together.
#[derive(Clone, Debug, PartialEq)]
pub struct ProductGroup {
    /// Rows per block.
    pub len: usize,
    pub tiles: usize,
    /// Row blocks of the IR product in this group.
    pub blocks: Vec<usize>,
    pub chunks: Vec<Chunk>,
    /// Where the group's first tile starts in the packed weights (floats).
    pub weights_offset: usize,
    pub tile_stride: usize,
    /// Per block (in `blocks` order): where its result is stored, if anywhere.
    pub dest: Vec<Option<Loc>>,
    /// The element-wise region run on each tile, fused.
    pub epilogue: Option<RegionCode>,
}

/// Blocks that one micro-kernel accumulates together.
#[derive(Clone, Debug, PartialEq)]
pub struct Chunk {
    /// Indices into the group's `blocks`.
    pub blocks: Vec<usize>,
    /// Offset of the chunk's bias vectors in a tile (floats); `None` if no block
    /// of the chunk has a bias.
    pub bias_offset: Option<usize>,
    /// Per block of the chunk: the vector parameters summed into its bias.
    pub bias_params: Vec<Vec<ParamId>>,
    /// With a hoisted input projection: the accumulators start from it (it holds
    /// the biases) instead of from `bias_offset`. The location of the projection
    /// row, and the offset of each chunk block's rows in it.
    pub init_projection: Option<(Loc, Vec<usize>)>,
    pub segments: Vec<Segment>,
}

/// One input of the product, as one chunk reads it.
#[derive(Clone, Debug, PartialEq)]
pub struct Segment {
    /// Which input of the IR product.
    pub input_index: usize,
    pub input: Loc,
    /// The input's length: the `k` extent.
    pub k: usize,
    /// Indices into the chunk's `blocks` that have a weight for this input.
    pub blocks: Vec<usize>,
    /// The matrix parameter of each of those blocks.
    pub weights: Vec<ParamId>,
    /// How the panel stores the weights: the precision every one of them is
    /// stored in, or `F32` (their effective values) when they differ.
    pub precision: Precision,
    /// Offset of the segment's panel in a tile (floats).
    pub offset: usize,
}

impl Segment {
    /// Floats the segment's panel takes in a tile.
    pub fn panel_floats(&self) -> Option<usize> {
        segment_floats(self.k, self.blocks.len(), self.precision)
    }
}

/// Floats a segment's panel of `k` columns of `blocks` blocks takes in a tile
/// at `precision` (the layout of [`ProductGroup`]); `None` on overflow.
pub fn segment_floats(k: usize, blocks: usize, precision: Precision) -> Option<usize> {
    let vectors = blocks.checked_mul(LANES)?;
    match precision {
        Precision::F32 => k.checked_mul(vectors),
        Precision::Bf16 => k.div_ceil(2).checked_mul(vectors),
        // LANES bytes per k: LANES / 4 floats; the scales, one vector per block.
        Precision::Int8 => k.div_ceil(2).checked_mul(vectors / 2)?.checked_add(vectors),
    }
}

/// Where a region argument comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ArgSrc {
    /// A row block of the product this region is fused into (index in the group).
    Block(usize),
    Mem(Loc),
}

/// An element-wise region, ready to generate: its arguments' sources and its
/// yields' destinations.
#[derive(Clone, Debug, PartialEq)]
pub struct RegionCode {
    pub len: usize,
    pub tiles: usize,
    pub args: Vec<ArgSrc>,
    pub body: Vec<RegionInst>,
    pub yields: Vec<(Operand, Loc)>,
}

/// One step of a [`Task::Rows`].
#[derive(Clone, Debug, PartialEq)]
pub enum RowStep {
    Region(RegionCode),
    /// Reductions independent of each other.
    Reduce(Vec<Reduction>),
}

/// A vector reduced to one float per batch row: `dest[b][0] = op(src[b])`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Reduction {
    pub op: ReduceOp,
    pub src: Loc,
    pub dest: Loc,
}

#[derive(Clone, Debug, PartialEq)]
pub enum Task {
    Product(Vec<ProductGroup>),
    Region(RegionCode),
    /// Work that stays inside each batch row (regions and reductions, in
    /// order), run row after row: threads split the rows, not the lanes, so
    /// a row's reductions see the whole row with no meeting between the
    /// steps, and the row's values stay in cache from one step to the next.
    /// A thread computes a reduction of a row alone, in a fixed order: the
    /// result does not depend on the thread count.
    Rows(Vec<RowStep>),
    /// A product computed by the panel kernels (large batches) or, for
    /// block-circulant weights, through their spectra ([`Spectral`]).
    Gemm(Vec<GemmBlock>),
    /// The spectra of the inputs of the next task's block-circulant
    /// products ([`Transform`]).
    Spectra(Vec<Transform>),
}

/// The spectrum of every `k`-chunk of an input, for every batch row: chunk
/// `j`'s `k` floats ([`crate::kernels::spectral`]'s layout) at `dest`'s
/// offset `j * k`, computed by the panel kernels with the forward transform
/// (`k x k` in panels at `forward` in the packed weights).
#[derive(Clone, Debug, PartialEq)]
pub struct Transform {
    pub input: Loc,
    pub k: usize,
    pub dest: Loc,
    pub forward: usize,
}

/// The block-circulant part of a [`GemmBlock`]: its terms multiplied in
/// the frequency domain ([`crate::kernels::spectral::mac`]) into the
/// output chunks' spectra at `scratch`, then transformed back (`k x k`
/// inverse transform in panels at `inverse`) into the destination, from
/// the block's start (bias or projection). The block's other terms add to
/// the destination after.
#[derive(Clone, Debug, PartialEq)]
pub struct Spectral {
    pub k: usize,
    pub inverse: usize,
    /// The output chunks' spectra: `len` floats per batch row.
    pub scratch: Loc,
    pub terms: Vec<SpectralTerm>,
}

/// One block-circulant matrix of a [`Spectral`] product.
#[derive(Clone, Debug, PartialEq)]
pub struct SpectralTerm {
    /// The input's spectra (a [`Transform`]'s destination).
    pub spectrum: Loc,
    /// Its packed spectra ([`crate::kernels::spectral::pack_weights`]).
    pub weights: usize,
    pub param: ParamId,
}

/// Output rows per unit of a block-circulant product on `workers` threads:
/// a multiple of `k` and of the panel (so that the block's dense terms
/// start their panels on it), [`crate::kernels::spectral::GROUP`] chunks
/// when there are enough units for every thread, halved down to the
/// smallest multiple otherwise. Which chunks share a unit changes no result.
pub fn spectral_unit_rows(len: usize, k: usize, workers: usize) -> usize {
    let least = k.max(crate::kernels::panel::PANEL);
    let mut rows = (crate::kernels::spectral::GROUP * k).max(least);
    while rows > least && len.div_ceil(rows) < 2 * workers.max(1) {
        rows /= 2;
    }
    rows
}

/// The units of rows of the product `blocks` (all of one length, as a
/// product run with its epilogue needs) for `batch` rows on `workers` threads:
/// [`row_units`], or for block-circulant products units of
/// [`spectral_unit_rows`] of the largest `k`.
pub fn block_units(blocks: &[GemmBlock], batch: usize, workers: usize) -> Vec<(usize, usize)> {
    let len = blocks.first().map_or(0, |b| b.len);
    match blocks
        .iter()
        .filter_map(|b| b.spectral.as_ref())
        .map(|s| s.k)
        .max()
    {
        None => row_units(len, batch, workers),
        Some(k) => {
            let rows = spectral_unit_rows(len, k, workers);
            (0..len.div_ceil(rows))
                .map(|u| (u * rows, ((u + 1) * rows).min(len)))
                .collect()
        }
    }
}

/// Rows per `gemm` call: work is split among threads in units of this many rows of
/// one block, the same units whatever the thread count, so that every row is
/// computed by the same calls (bit-for-bit the same result).
pub const GEMM_ROWS: usize = 64;
const _: () = assert!(GEMM_ROWS.is_multiple_of(crate::kernels::panel::GROUP));

/// Where element `(row, col)` of a matrix of `cols` columns lives in its
/// unit-major copy (the hoisted projection's): the rows in units of
/// [`kernels::gemm::MR`](crate::kernels::gemm::MR), each unit column-major
/// (`MR` floats a column, the last unit padded with zero rows), the layout
/// the blocked product reads its left operand in without copying it.
pub fn unit_major(row: usize, col: usize, cols: usize) -> usize {
    crate::kernels::gemm::unit_index(row, col, cols)
}

/// Rows per unit of a unit-major copy ([`unit_major`]).
pub const UNIT_ROWS: usize = crate::kernels::gemm::MR;

/// Floats the unit-major copy of an `[rows, cols]` matrix takes.
pub fn unit_major_len(rows: usize, cols: usize) -> Option<usize> {
    crate::kernels::gemm::units_len(rows, cols)
}

/// The units of a `gemm` product: (block, first row, end row).
pub fn gemm_units(blocks: &[GemmBlock]) -> Vec<(usize, usize, usize)> {
    let mut units = Vec::new();
    for (i, b) in blocks.iter().enumerate() {
        let rows = match &b.spectral {
            Some(s) => spectral_unit_rows(b.len, s.k, 1),
            None => GEMM_ROWS,
        };
        let mut r = 0;
        while r < b.len {
            let end = (r + rows).min(b.len);
            units.push((i, r, end));
            r = end;
        }
    }
    units
}

/// Whether `region`, the task right after the `gemm` product `blocks`, can
/// run on each unit of rows ([`row_units`] of the region's length) as soon as
/// that unit's rows of every block are computed, in the same phase: every
/// block has the region's length; each argument is a block's result exactly
/// (lane `r` of the region reads row `r`) or memory no block writes; and no
/// yield touches memory a block reads or writes. Then a thread's units need
/// nothing another thread computes in that phase.
pub fn epilogue_by_rows(blocks: &[GemmBlock], region: &RegionCode) -> bool {
    if blocks.is_empty() || blocks.iter().any(|b| b.len != region.len) {
        return false;
    }
    let overlaps = Loc::may_overlap;
    for a in &region.args {
        let ArgSrc::Mem(l) = a else { return false };
        let own = blocks.iter().any(|b| b.dest == *l && l.len == b.len);
        if !own && blocks.iter().any(|b| overlaps(&b.dest, l)) {
            return false;
        }
    }
    region.yields.iter().all(|(_, y)| {
        blocks.iter().all(|b| {
            !overlaps(&b.dest, y)
                && !matches!(&b.init, GemmInit::Projection(l) if overlaps(l, y))
                && b.terms.iter().all(|t| !overlaps(&t.input, y))
        })
    })
}

/// Rows per unit of a product with its epilogue ([`epilogue_by_rows`]):
/// two panels, the widest kernel's tile. Smaller than [`GEMM_ROWS`], since
/// one unit now covers every block: H = 192 makes 6 units, which two threads
/// share evenly.
pub const EPILOGUE_ROWS: usize = 2 * crate::kernels::panel::PANEL;
const _: () = assert!(EPILOGUE_ROWS.is_multiple_of(crate::kernels::panel::GROUP));

/// Rows `0..len` in units for `batch` rows on `workers` threads: (first
/// row, end row). Units of [`EPILOGUE_ROWS`], or of twice that for a short
/// batch (one or two rows, whose tiles span up to four panels to keep the
/// FMAs busy: `panel::SHORT_PANELS`) when the workers still get as many
/// units each. Which rows share a unit changes no result.
pub fn row_units(len: usize, batch: usize, workers: usize) -> Vec<(usize, usize)> {
    use crate::kernels::panel::{PANEL, SHORT_PANELS, SHORT_ROWS};
    let wide = SHORT_PANELS * PANEL;
    let rows = if batch <= SHORT_ROWS && len.div_ceil(wide).is_multiple_of(workers.max(1)) {
        wide
    } else {
        EPILOGUE_ROWS
    };
    (0..len.div_ceil(rows))
        .map(|u| (u * rows, ((u + 1) * rows).min(len)))
        .collect()
}

/// One row block of a product computed with `gemm`: `dest[b] = init[b] + sum of
/// matrix @ input[b]` for every batch row `b`.
#[derive(Clone, Debug, PartialEq)]
pub struct GemmBlock {
    pub len: usize,
    pub dest: Loc,
    pub init: GemmInit,
    pub terms: Vec<GemmTerm>,
    /// Its block-circulant terms, multiplied through their spectra.
    pub spectral: Option<Spectral>,
}

#[derive(Clone, Debug, PartialEq)]
pub enum GemmInit {
    Zero,
    /// The folded bias, `len` floats in the packed weights.
    Bias(usize),
    /// The hoisted projection, which holds the biases.
    Projection(Loc),
}

/// A `[len, k]` matrix times `input`; the matrix is packed in panels
/// ([`crate::kernels::panel`]) at offset `panels` of the packed weights.
#[derive(Clone, Debug, PartialEq)]
pub struct GemmTerm {
    pub input: Loc,
    pub k: usize,
    pub panels: usize,
    /// How the matrix's values are stored (`panel::stored_len` floats).
    pub precision: crate::ir::Precision,
}

/// The input projection of one product, computed for many steps at once
/// before the recurrence: for every step `t` and batch row `b`, one row of
/// `stride` floats holding each block's `bias + sum of W @ x_t[b]` at its
/// offset.
#[derive(Clone, Debug, PartialEq)]
pub struct Hoist {
    pub slot: usize,
    pub stride: usize,
    pub blocks: Vec<HoistBlock>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct HoistBlock {
    pub offset: usize,
    pub len: usize,
    /// The folded bias, `len` floats in the packed weights.
    pub bias: Option<usize>,
    /// (input index, its length, offset of the row-major `[len, k]` matrix).
    pub terms: Vec<(InputId, usize, usize)>,
}

/// How the plan's products run, from the plan's [`Variant`] and whether
/// epilogues are fused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
struct PlanOptions {
    /// Run element-wise regions inside their product's tile loop.
    fuse_epilogues: bool,
    /// Take every product term that reads a cell input out of the step, into a
    /// projection computed for a whole sequence at once (`Plan::hoists`).
    hoist_inputs: bool,
    /// Compute the per-step products with the panel kernels rather than
    /// generated micro-kernels.
    gemm_products: bool,
    /// Multiply block-circulant matrices through their spectra where the
    /// cost model says it pays ([`crate::ir::Structure::spectral_k`]);
    /// otherwise they run on their dense expansion.
    spectral: bool,
}

/// A parameter vector copied whole into the packed weights (for regions, and
/// for products that read a parameter as their input), padded with zeros to a
/// whole number of vectors. Product panels are packed from [`ProductGroup`]s.
#[derive(Clone, Debug, PartialEq)]
pub struct PackVector {
    pub offset: usize,
    pub param: ParamId,
}

/// What a state's next value is after the tasks ran.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Update {
    /// A task wrote it into the state's next buffer.
    Written,
    /// Copy it from here (before the swap).
    Copy(Loc),
}

#[derive(Clone, Debug, PartialEq)]
pub struct Plan {
    pub slots: Vec<Slot>,
    pub tasks: Vec<Task>,
    /// Floats in the packed weights.
    pub weights_len: usize,
    /// Hoisted input projections, computed before the steps they serve.
    pub hoists: Vec<Hoist>,
    /// Copies of matrices for the hoisted projections (offset, parameter),
    /// laid out by [`unit_major`] ([`unit_major_len`] floats).
    pub matrices: Vec<PackVector>,
    /// Matrices packed in panels (offset, parameter), for the batched
    /// products of a step.
    pub panels: Vec<PackVector>,
    /// Packed spectra of block-circulant matrices: (offset, parameter, `k`).
    pub spectra: Vec<(usize, ParamId, usize)>,
    /// Transform matrices in panels: (offset, `k`, inverse or forward).
    pub transforms: Vec<(usize, usize, bool)>,
    /// Summed biases (offset, parameters, length), for `gemm` and projections.
    pub bias_sums: Vec<(usize, Vec<ParamId>, usize)>,
    /// Vector constants of the generated code: (f32 bits, offset in floats) of
    /// `LANES` copies each, at the start of the packed weights.
    pub consts: Vec<(u32, usize)>,
    pub vectors: Vec<PackVector>,
    pub input_slots: Vec<usize>,
    pub state_cur: Vec<usize>,
    pub state_next: Vec<usize>,
    pub updates: Vec<Update>,
    /// Where each output is after the tasks (before the swap).
    pub outputs: Vec<Loc>,
    /// Input, state and output lengths.
    pub input_lens: Vec<usize>,
    pub state_lens: Vec<usize>,
    pub output_lens: Vec<usize>,
}

/// Why a cell cannot be planned: an op the code generator does not handle.
#[derive(Clone, Debug, PartialEq)]
pub struct PlanError(pub String);

impl std::fmt::Display for PlanError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// Plans a legalized cell (only inputs, states, params, constants, products and
/// regions) for `variant`; `fuse_epilogues` runs regions inside their product's
/// tile loop (the generated micro-kernels only). The result is verified
/// ([`verify`]): a plan that does not verify is an internal error.
pub fn plan(cell: &Cell, variant: Variant, fuse_epilogues: bool) -> Result<Plan, PlanError> {
    plan_with(cell, variant, fuse_epilogues, true)
}

/// As [`plan`]; `spectral` off runs every block-circulant matrix on its
/// dense expansion (objects, whose generated code has no spectral kernels).
pub fn plan_with(
    cell: &Cell,
    variant: Variant,
    fuse_epilogues: bool,
    spectral: bool,
) -> Result<Plan, PlanError> {
    check_size(cell)?;
    let opts = PlanOptions {
        fuse_epilogues,
        hoist_inputs: variant.hoists(),
        gemm_products: variant.uses_gemm(),
        spectral,
    };
    let mut p = Planner::new(cell);
    p.opts = opts;
    p.run(opts.fuse_epilogues && !opts.gemm_products)?;
    p.finish();
    verify::verify(&p.plan, cell)
        .map_err(|e| PlanError(format!("internal error: the plan does not verify: {e}")))?;
    Ok(p.plan)
}

/// Most row blocks (matrix products) and element-wise operations one cell may
/// generate code for: far beyond any real cell, and small enough that Cranelift
/// compiles the result in seconds rather than minutes.
pub const MAX_ROW_BLOCKS: usize = 20_000;
pub const MAX_ELEMENTWISE_OPS: usize = 100_000;

fn check_size(cell: &Cell) -> Result<(), PlanError> {
    let mut blocks = 0;
    let mut ops = 0;
    for inst in &cell.insts {
        match &inst.op {
            Op::Product(p) => blocks += p.rows.len(),
            Op::MatVec { .. } | Op::MatVecT { .. } => blocks += 1,
            Op::Fused(r) => ops += r.body.len(),
            Op::Unary(..) | Op::Binary(..) | Op::Reduce(..) => ops += 1,
            _ => {}
        }
    }
    if blocks > MAX_ROW_BLOCKS || ops > MAX_ELEMENTWISE_OPS {
        return Err(PlanError(format!(
            "cell `{}` is too large to compile: {blocks} matrix products and {ops} element-wise operations per step (the limits are {MAX_ROW_BLOCKS} and {MAX_ELEMENTWISE_OPS})",
            cell.name
        )));
    }
    Ok(())
}

/// Visits every location a plan holds.
pub(crate) fn for_each_loc(plan: &mut Plan, mut f: impl FnMut(&mut Loc)) {
    let region = |r: &mut RegionCode, f: &mut dyn FnMut(&mut Loc)| {
        for a in &mut r.args {
            if let ArgSrc::Mem(l) = a {
                f(l);
            }
        }
        for (_, l) in &mut r.yields {
            f(l);
        }
    };
    for task in &mut plan.tasks {
        match task {
            Task::Product(groups) => {
                for g in groups {
                    for ch in &mut g.chunks {
                        for seg in &mut ch.segments {
                            f(&mut seg.input);
                        }
                        if let Some((l, _)) = &mut ch.init_projection {
                            f(l);
                        }
                    }
                    for l in g.dest.iter_mut().flatten() {
                        f(l);
                    }
                    if let Some(e) = &mut g.epilogue {
                        region(e, &mut f);
                    }
                }
            }
            Task::Region(r) => region(r, &mut f),
            Task::Rows(steps) => {
                for step in steps {
                    match step {
                        RowStep::Region(r) => region(r, &mut f),
                        RowStep::Reduce(rs) => {
                            for r in rs {
                                f(&mut r.src);
                                f(&mut r.dest);
                            }
                        }
                    }
                }
            }
            Task::Gemm(blocks) => {
                for b in blocks {
                    f(&mut b.dest);
                    if let GemmInit::Projection(l) = &mut b.init {
                        f(l);
                    }
                    for t in &mut b.terms {
                        f(&mut t.input);
                    }
                    if let Some(s) = &mut b.spectral {
                        f(&mut s.scratch);
                        for t in &mut s.terms {
                            f(&mut t.spectrum);
                        }
                    }
                }
            }
            Task::Spectra(transforms) => {
                for t in transforms {
                    f(&mut t.input);
                    f(&mut t.dest);
                }
            }
        }
    }
    for u in &mut plan.updates {
        if let Update::Copy(l) = u {
            f(l);
        }
    }
    for l in &mut plan.outputs {
        f(l);
    }
}
