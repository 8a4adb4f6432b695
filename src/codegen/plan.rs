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

use crate::ir::{self, Cell, Op, Operand, RegionInst, Type, Value};

/// Floats per vector register (`f32x4`: the width Cranelift lowers on x86-64
/// and aarch64).
pub const LANES: usize = 4;
/// Most row blocks one micro-kernel accumulates at once (per batch row).
pub const MAX_CHUNK: usize = 6;

pub fn padded(n: usize) -> usize {
    n.div_ceil(LANES) * LANES
}

/// Where a vector lives: a slot, an offset in floats, and the distance in floats
/// between batch rows (0 for parameters, which the batch shares).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Loc {
    pub slot: usize,
    pub offset: usize,
    pub stride: usize,
    pub len: usize,
}

#[derive(Clone, Debug, PartialEq)]
pub enum SlotKind {
    Weights,
    Input(usize),
    StateCur(usize),
    StateNext(usize),
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
    pub bias_params: Vec<Vec<usize>>,
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
    pub weights: Vec<usize>,
    /// Offset of the segment's panel in a tile (floats).
    pub offset: usize,
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

#[derive(Clone, Debug, PartialEq)]
pub enum Task {
    Product(Vec<ProductGroup>),
    Region(RegionCode),
    /// A product computed by the `gemm` crate (large batches).
    Gemm(Vec<GemmBlock>),
}

/// Rows per `gemm` call: work is split among threads in units of this many rows of
/// one block, the same units whatever the thread count, so that every row is
/// computed by the same calls (bit-for-bit the same result).
pub const GEMM_ROWS: usize = 64;

/// The units of a `gemm` product: (block, first row, end row).
pub fn gemm_units(blocks: &[GemmBlock]) -> Vec<(usize, usize, usize)> {
    let mut units = Vec::new();
    for (i, b) in blocks.iter().enumerate() {
        let mut r = 0;
        while r < b.len {
            let end = (r + GEMM_ROWS).min(b.len);
            units.push((i, r, end));
            r = end;
        }
    }
    units
}

/// One row block of a product computed with `gemm`: `dest[b] = init[b] + sum of
/// matrix @ input[b]` for every batch row `b`.
#[derive(Clone, Debug, PartialEq)]
pub struct GemmBlock {
    pub len: usize,
    pub dest: Loc,
    pub init: GemmInit,
    pub terms: Vec<GemmTerm>,
}

#[derive(Clone, Debug, PartialEq)]
pub enum GemmInit {
    Zero,
    /// The folded bias, `len` floats in the packed weights.
    Bias(usize),
    /// The hoisted projection, which holds the biases.
    Projection(Loc),
}

/// `matrix` (row-major `[len, k]` at this offset in the packed weights) times `input`.
#[derive(Clone, Debug, PartialEq)]
pub struct GemmTerm {
    pub input: Loc,
    pub k: usize,
    pub matrix: usize,
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
    pub terms: Vec<(usize, usize, usize)>,
}

/// How the plan's products run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct PlanOptions {
    /// Run element-wise regions inside their product's tile loop.
    pub fuse_epilogues: bool,
    /// Take every product term that reads a cell input out of the step, into a
    /// projection computed for a whole sequence at once (`Plan::hoists`).
    pub hoist_inputs: bool,
    /// Compute products with the `gemm` crate rather than generated micro-kernels.
    pub gemm_products: bool,
}

impl Task {
    /// Tiles the task runs over (for a product, per group).
    pub fn tiles(&self) -> Vec<usize> {
        match self {
            Task::Product(groups) => groups.iter().map(|g| g.tiles).collect(),
            Task::Region(r) => vec![r.tiles],
            Task::Gemm(blocks) => vec![gemm_units(blocks).len()],
        }
    }
}

/// A parameter vector copied whole into the packed weights (for regions, and
/// for products that read a parameter as their input), padded with zeros to a
/// whole number of vectors. Product panels are packed from [`ProductGroup`]s.
#[derive(Clone, Debug, PartialEq)]
pub struct PackVector {
    pub offset: usize,
    pub param: usize,
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
    /// Row-major copies of matrices (offset, parameter), for `gemm`.
    pub matrices: Vec<PackVector>,
    /// Summed biases (offset, parameters, length), for `gemm` and projections.
    pub bias_sums: Vec<(usize, Vec<usize>, usize)>,
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
/// regions). `fuse_epilogues` runs regions inside their product's tile loop.
pub fn plan(cell: &Cell, opts: PlanOptions) -> Result<Plan, PlanError> {
    check_size(cell)?;
    let mut p = Planner::new(cell);
    p.opts = opts;
    p.run(opts.fuse_epilogues && !opts.gemm_products)?;
    p.finish();
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
            Op::MatVec { .. } => blocks += 1,
            Op::Fused(r) => ops += r.body.len(),
            Op::Unary(..) | Op::Binary(..) => ops += 1,
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
fn for_each_loc(plan: &mut Plan, mut f: impl FnMut(&mut Loc)) {
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
            Task::Gemm(blocks) => {
                for b in blocks {
                    f(&mut b.dest);
                    if let GemmInit::Projection(l) = &mut b.init {
                        f(l);
                    }
                    for t in &mut b.terms {
                        f(&mut t.input);
                    }
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

struct Planner<'a> {
    cell: &'a Cell,
    plan: Plan,
    /// The scratch arena's slot, once one value needs it, and its row so far.
    scratch_slot: Option<usize>,
    scratch_row: usize,
    opts: PlanOptions,
    /// Where each value lives, once known.
    loc: Vec<Option<Loc>>,
    /// Readers of each value, and whether a root reads it.
    users: Vec<Vec<ir::Inst>>,
}

impl<'a> Planner<'a> {
    fn new(cell: &'a Cell) -> Planner<'a> {
        let mut plan = Plan {
            slots: vec![Slot {
                kind: SlotKind::Weights,
                stride: 0,
                name: "weights".into(),
            }],
            tasks: Vec::new(),
            weights_len: 0,
            hoists: Vec::new(),
            matrices: Vec::new(),
            bias_sums: Vec::new(),
            consts: Vec::new(),
            vectors: Vec::new(),
            input_slots: Vec::new(),
            state_cur: Vec::new(),
            state_next: Vec::new(),
            updates: Vec::new(),
            outputs: Vec::new(),
            input_lens: cell.inputs.iter().map(|p| p.len).collect(),
            state_lens: cell.states.iter().map(|p| p.len).collect(),
            output_lens: cell.outputs.iter().map(|p| p.len).collect(),
        };
        for (i, p) in cell.inputs.iter().enumerate() {
            plan.input_slots.push(plan.slots.len());
            plan.slots.push(Slot {
                kind: SlotKind::Input(i),
                stride: padded(p.len),
                name: p.name.clone(),
            });
        }
        for (i, p) in cell.states.iter().enumerate() {
            plan.state_cur.push(plan.slots.len());
            plan.slots.push(Slot {
                kind: SlotKind::StateCur(i),
                stride: padded(p.len),
                name: p.name.clone(),
            });
            plan.state_next.push(plan.slots.len());
            plan.slots.push(Slot {
                kind: SlotKind::StateNext(i),
                stride: padded(p.len),
                name: format!("{}'", p.name),
            });
        }
        Planner {
            cell,
            plan,
            scratch_slot: None,
            scratch_row: 0,
            opts: PlanOptions::default(),
            loc: vec![None; cell.values.len()],
            users: cell.users(),
        }
    }

    fn alloc_weights(&mut self, floats: usize) -> usize {
        let at = self.plan.weights_len;
        self.plan.weights_len += floats;
        at
    }

    /// A place for `v` in the scratch arena: one slot whose every batch row holds
    /// every scratch value side by side, so a function needs one base pointer for
    /// all of them. The row's stride is known only at the end ([`finish`]), which
    /// patches it into every scratch location.
    fn scratch(&mut self, v: Value) -> Loc {
        let len = self.cell.ty(v).vector_len().unwrap_or(0);
        let slot = match self.scratch_slot {
            Some(s) => s,
            None => {
                let s = self.plan.slots.len();
                self.plan.slots.push(Slot {
                    kind: SlotKind::Scratch,
                    stride: 0,
                    name: "scratch".into(),
                });
                self.scratch_slot = Some(s);
                s
            }
        };
        let offset = self.scratch_row;
        self.scratch_row += padded(len);
        Loc {
            slot,
            offset,
            stride: 0,
            len,
        }
    }

    /// Sets the scratch arena's row stride everywhere.
    fn finish(&mut self) {
        let Some(slot) = self.scratch_slot else {
            return;
        };
        let stride = self.scratch_row;
        self.plan.slots[slot].stride = stride;
        let fix = |l: &mut Loc| {
            if l.slot == slot {
                l.stride = stride;
            }
        };
        for_each_loc(&mut self.plan, fix);
    }

    /// The state whose update this value is, if any (the first).
    fn updates_state(&self, v: Value) -> Option<usize> {
        self.cell.state_updates.iter().position(|&u| u == v)
    }

    /// Where a computed value is stored: the next buffer of the state it updates,
    /// else a scratch buffer.
    fn home(&mut self, v: Value) -> Loc {
        if let Some(l) = self.loc[v.index()] {
            return l;
        }
        let len = self.cell.ty(v).vector_len().unwrap_or(0);
        let l = match self.updates_state(v) {
            Some(s) => Loc {
                slot: self.plan.state_next[s],
                offset: 0,
                stride: padded(len),
                len,
            },
            None => self.scratch(v),
        };
        self.loc[v.index()] = Some(l);
        l
    }

    /// The location of a value that must already be in memory (or a leaf).
    fn mem(&mut self, v: Value) -> Result<Loc, PlanError> {
        if let Some(l) = self.loc[v.index()] {
            return Ok(l);
        }
        let len = self.cell.ty(v).vector_len().unwrap_or(0);
        let l = match self.cell.op_of(v) {
            Op::Input(i) => Loc {
                slot: self.plan.input_slots[*i],
                offset: 0,
                stride: padded(len),
                len,
            },
            Op::State(i) => Loc {
                slot: self.plan.state_cur[*i],
                offset: 0,
                stride: padded(len),
                len,
            },
            Op::Param(k) => {
                if !matches!(self.cell.ty(v), Type::Vector(_)) {
                    return Err(PlanError(format!(
                        "parameter `{}` is used as a vector but is not one",
                        self.cell.params[*k].name
                    )));
                }
                let offset = self.alloc_weights(padded(len));
                self.plan.vectors.push(PackVector { offset, param: *k });
                Loc {
                    slot: 0,
                    offset,
                    stride: 0,
                    len,
                }
            }
            other => {
                return Err(PlanError(format!(
                    "internal error: value `{}` ({other:?}) is read before it is stored",
                    self.cell.describe(v, None)
                )))
            }
        };
        self.loc[v.index()] = Some(l);
        Ok(l)
    }

    /// Pools every vector constant: those of the vector math, and those of the
    /// regions' bodies.
    fn pool_constants(&mut self) {
        let mut values: Vec<u32> = super::vecmath::constants()
            .iter()
            .map(|c| c.to_bits())
            .collect();
        for inst in &self.cell.insts {
            if let Op::Fused(r) = &inst.op {
                for b in &r.body {
                    if let ir::EwOp::Const(c) = b.op {
                        values.push((c as f32).to_bits());
                    }
                }
            }
        }
        values.sort_unstable();
        values.dedup();
        for bits in values {
            let off = self.alloc_weights(LANES);
            self.plan.consts.push((bits, off));
        }
    }

    fn run(&mut self, fuse_epilogues: bool) -> Result<(), PlanError> {
        self.pool_constants();
        let cell = self.cell;
        let stage = crate::ir::analysis::stages(cell);
        // Order: by stage; at each stage the product(s) first, then regions, each
        // in IR order.
        let mut order: Vec<(usize, u8, usize)> = Vec::new();
        for (i, inst) in cell.insts.iter().enumerate() {
            match &inst.op {
                Op::Product(_) => order.push((stage[inst.results[0].index()], 0, i)),
                Op::Fused(_) => order.push((stage[inst.results[0].index()], 1, i)),
                Op::Input(_) | Op::State(_) | Op::Param(_) | Op::Const(_) => {}
                other => {
                    return Err(PlanError(format!(
                        "internal error: codegen got an unlegalized instruction: {other:?}"
                    )))
                }
            }
        }
        order.sort();
        // Which region each product fuses, decided up front.
        let mut fused_into: Vec<Option<usize>> = vec![None; cell.insts.len()];
        if fuse_epilogues {
            for &(s, kind, i) in &order {
                if kind != 0 {
                    continue;
                }
                let results = &cell.insts[i].results;
                for &(s2, kind2, j) in &order {
                    if kind2 != 1 || s2 != s || fused_into[j].is_some() {
                        continue;
                    }
                    let Op::Fused(r) = &cell.insts[j].op else {
                        continue;
                    };
                    let reads_block = r.args.iter().any(|a| results.contains(a));
                    let same_len = r
                        .args
                        .iter()
                        .all(|a| !results.contains(a) || cell.ty(*a) == Type::Vector(r.len));
                    // The micro-kernel must hold every block of that length at once.
                    let blocks = results
                        .iter()
                        .filter(|v| cell.ty(**v) == Type::Vector(r.len))
                        .count();
                    if reads_block && same_len && blocks <= MAX_CHUNK {
                        fused_into[j] = Some(i);
                    }
                }
            }
        }
        for &(_, kind, i) in &order {
            if kind == 0 {
                let epilogues: Vec<usize> = (0..cell.insts.len())
                    .filter(|&j| fused_into[j] == Some(i))
                    .collect();
                self.product_task(i, &epilogues)?;
            } else if fused_into[i].is_none() {
                let code = self.region_code(i, &[], None)?;
                self.plan.tasks.push(Task::Region(code));
            }
        }
        // State updates and outputs.
        for (s, &v) in cell.state_updates.iter().enumerate() {
            let l = self.mem(v)?;
            self.plan
                .updates
                .push(if l.slot == self.plan.state_next[s] {
                    Update::Written
                } else {
                    Update::Copy(l)
                });
        }
        for &v in &cell.output_values {
            let l = self.mem(v)?;
            self.plan.outputs.push(l);
        }
        Ok(())
    }

    /// Whether a value is read by anything but `except` (an instruction), or is a root.
    fn read_elsewhere(&self, v: Value, except: Option<usize>) -> bool {
        self.cell.is_root(v)
            || self.users[v.index()]
                .iter()
                .any(|u| Some(u.index()) != except)
    }

    /// A row-major copy of a matrix parameter in the packed weights (for `gemm`).
    fn matrix_copy(&mut self, param: usize) -> usize {
        if let Some(m) = self.plan.matrices.iter().find(|m| m.param == param) {
            return m.offset;
        }
        let n = match self.cell.params[param].ty {
            Type::Matrix(r, c) => r * c,
            _ => 0,
        };
        let offset = self.alloc_weights(padded(n));
        self.plan.matrices.push(PackVector { offset, param });
        offset
    }

    /// The sum of vector parameters, `len` floats in the packed weights.
    fn bias_sum(&mut self, params: Vec<usize>, len: usize) -> usize {
        let offset = self.alloc_weights(padded(len));
        self.plan.bias_sums.push((offset, params, len));
        offset
    }

    /// A row block's biases summed into the packed weights (`len` floats), or
    /// `None` when it has none.
    fn row_bias(&mut self, biases: &[Value], len: usize) -> Result<Option<usize>, PlanError> {
        if biases.is_empty() {
            return Ok(None);
        }
        let params = biases
            .iter()
            .map(|b| self.param_of(*b))
            .collect::<Result<_, _>>()?;
        Ok(Some(self.bias_sum(params, len)))
    }

    fn param_of(&self, v: Value) -> Result<usize, PlanError> {
        match self.cell.op_of(v) {
            Op::Param(k) => Ok(*k),
            _ => Err(PlanError(
                "internal error: a weight or bias is not a parameter".into(),
            )),
        }
    }

    fn product_task(&mut self, i: usize, epilogues: &[usize]) -> Result<(), PlanError> {
        let cell = self.cell;
        let Op::Product(p) = &cell.insts[i].op else {
            return Err(PlanError("internal error: not a product".into()));
        };
        let results = cell.insts[i].results.clone();
        let inputs: Vec<Loc> = p
            .inputs
            .iter()
            .map(|&x| self.mem(x))
            .collect::<Result<_, _>>()?;
        let len_of = |v: Value| cell.ty(v).vector_len().unwrap_or(0);
        // Terms that read a cell input leave the step when hoisting.
        let hoisted: Vec<Option<usize>> = p
            .inputs
            .iter()
            .map(|&x| match cell.op_of(x) {
                Op::Input(k) if self.opts.hoist_inputs => Some(*k),
                _ => None,
            })
            .collect();
        let any_hoisted = p.rows.iter().any(|r| {
            r.weights
                .iter()
                .zip(&hoisted)
                .any(|(w, h)| w.is_some() && h.is_some())
        });
        let skip = |j: usize| any_hoisted && hoisted[j].is_some();
        // The projection row: every block at its offset, biases folded in.
        let mut projection: Vec<Loc> = Vec::new();
        if any_hoisted {
            let slot = self.plan.slots.len();
            let stride: usize = results.iter().map(|&v| padded(len_of(v))).sum();
            self.plan.slots.push(Slot {
                kind: SlotKind::Projection(self.plan.hoists.len()),
                stride,
                name: "projection".into(),
            });
            let mut blocks = Vec::new();
            let mut offset = 0;
            for (r, &v) in results.iter().enumerate() {
                let len = len_of(v);
                let row = &p.rows[r];
                let bias = self.row_bias(&row.biases, len)?;
                let mut terms = Vec::new();
                for (j, w) in row.weights.iter().enumerate() {
                    if let (Some(w), Some(input)) = (w, hoisted[j]) {
                        let param = self.param_of(*w)?;
                        terms.push((input, inputs[j].len, self.matrix_copy(param)));
                    }
                }
                blocks.push(HoistBlock {
                    offset,
                    len,
                    bias,
                    terms,
                });
                projection.push(Loc {
                    slot,
                    offset,
                    stride,
                    len,
                });
                offset += padded(len);
            }
            self.plan.hoists.push(Hoist {
                slot,
                stride,
                blocks,
            });
        }
        if self.opts.gemm_products {
            let mut blocks = Vec::new();
            for (r, &v) in results.iter().enumerate() {
                let row = &p.rows[r];
                let init = if any_hoisted {
                    GemmInit::Projection(projection[r])
                } else {
                    self.row_bias(&row.biases, len_of(v))?
                        .map_or(GemmInit::Zero, GemmInit::Bias)
                };
                let mut terms = Vec::new();
                for (j, w) in row.weights.iter().enumerate() {
                    if let (Some(w), false) = (w, skip(j)) {
                        let param = self.param_of(*w)?;
                        terms.push(GemmTerm {
                            input: inputs[j],
                            k: inputs[j].len,
                            matrix: self.matrix_copy(param),
                        });
                    }
                }
                let dest = self.home(v);
                blocks.push(GemmBlock {
                    len: len_of(v),
                    dest,
                    init,
                    terms,
                });
            }
            self.plan.tasks.push(Task::Gemm(blocks));
            return Ok(());
        }
        // Group row blocks by length.
        let mut lens: Vec<usize> = results.iter().map(|&v| len_of(v)).collect();
        lens.sort_unstable();
        lens.dedup();
        let mut groups = Vec::new();
        for len in lens {
            let blocks: Vec<usize> = (0..results.len())
                .filter(|&r| cell.ty(results[r]) == Type::Vector(len))
                .collect();
            let chunked: Vec<Vec<usize>> = (0..blocks.len())
                .collect::<Vec<_>>()
                .chunks(MAX_CHUNK)
                .map(<[usize]>::to_vec)
                .collect();
            // The epilogue region of this length (`run` fused it only if one chunk
            // holds every block).
            let epilogue = epilogues
                .iter()
                .copied()
                .find(|&j| matches!(&cell.insts[j].op, Op::Fused(r) if r.len == len));
            if epilogue.is_some() && chunked.len() != 1 {
                return Err(PlanError(format!(
                    "internal error: a fused epilogue needs one chunk ({} blocks)",
                    blocks.len()
                )));
            }
            // Layout of one tile.
            let mut offset = 0;
            let mut chunks = Vec::new();
            for cb in &chunked {
                let has_bias =
                    !any_hoisted && cb.iter().any(|&b| !p.rows[blocks[b]].biases.is_empty());
                let bias_offset = has_bias.then(|| {
                    let o = offset;
                    offset += cb.len() * LANES;
                    o
                });
                let mut segments = Vec::new();
                for (j, input) in inputs.iter().enumerate() {
                    if skip(j) {
                        continue;
                    }
                    let present: Vec<usize> = (0..cb.len())
                        .filter(|&c| p.rows[blocks[cb[c]]].weights[j].is_some())
                        .collect();
                    if present.is_empty() {
                        continue;
                    }
                    let mut weights = Vec::new();
                    for &c in &present {
                        match p.rows[blocks[cb[c]]].weights[j].map(|w| cell.op_of(w)) {
                            Some(Op::Param(k)) => weights.push(*k),
                            _ => {
                                return Err(PlanError(
                                    "internal error: a weight is not a parameter".into(),
                                ))
                            }
                        }
                    }
                    segments.push(Segment {
                        input_index: j,
                        input: *input,
                        k: input.len,
                        blocks: present.clone(),
                        weights,
                        offset,
                    });
                    offset += input.len * present.len() * LANES;
                }
                let bias_params = cb
                    .iter()
                    .map(|&b| {
                        p.rows[blocks[b]]
                            .biases
                            .iter()
                            .filter_map(|v| match cell.op_of(*v) {
                                Op::Param(k) => Some(*k),
                                _ => None,
                            })
                            .collect()
                    })
                    .collect();
                let init_projection = any_hoisted.then(|| {
                    let base = Loc {
                        offset: 0,
                        ..projection[blocks[cb[0]]]
                    };
                    let offsets = cb.iter().map(|&c| projection[blocks[c]].offset).collect();
                    (base, offsets)
                });
                let bias_params = if any_hoisted {
                    vec![Vec::new(); cb.len()]
                } else {
                    bias_params
                };
                chunks.push(Chunk {
                    blocks: cb.clone(),
                    bias_offset,
                    bias_params,
                    init_projection,
                    segments,
                });
            }
            let tile_stride = offset;
            let tiles = len.div_ceil(LANES);
            let weights_offset = self.alloc_weights(tile_stride * tiles);
            // Destinations of the blocks.
            let mut dest = Vec::new();
            for &b in &blocks {
                let v = results[b];
                let needed = self.read_elsewhere(v, epilogue);
                dest.push(if needed { Some(self.home(v)) } else { None });
            }
            let epilogue_code = match epilogue {
                Some(j) => {
                    let block_values: Vec<Value> = blocks.iter().map(|&b| results[b]).collect();
                    Some(self.region_code(j, &block_values, Some(i))?)
                }
                None => None,
            };
            groups.push(ProductGroup {
                len,
                tiles,
                blocks,
                chunks,
                weights_offset,
                tile_stride,
                dest,
                epilogue: epilogue_code,
            });
        }
        self.plan.tasks.push(Task::Product(groups));
        Ok(())
    }

    /// The code of region instruction `j`; `blocks` are values available in
    /// registers (the fused product's blocks of this group).
    fn region_code(
        &mut self,
        j: usize,
        blocks: &[Value],
        _product: Option<usize>,
    ) -> Result<RegionCode, PlanError> {
        let cell = self.cell;
        let Op::Fused(r) = &cell.insts[j].op else {
            return Err(PlanError("internal error: not a region".into()));
        };
        let mut args = Vec::new();
        for &a in &r.args {
            args.push(match blocks.iter().position(|&b| b == a) {
                Some(k) => ArgSrc::Block(k),
                None => ArgSrc::Mem(self.mem(a)?),
            });
        }
        let mut yields = Vec::new();
        for (y, &v) in r.yields.iter().zip(&cell.insts[j].results) {
            let l = self.home(v);
            yields.push((*y, l));
        }
        Ok(RegionCode {
            len: r.len,
            tiles: r.len.div_ceil(LANES),
            args,
            body: r.body.clone(),
            yields,
        })
    }
}
