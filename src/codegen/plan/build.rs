//! The planner: walks a legalized cell in stage order and decides slots,
//! tasks, the packed layout and every value's location (see the parent
//! module for what each means).

use super::*;
use crate::ir::{self, Type, Value};

/// What the planning of one product shares between its steps.
struct ProductPlan<'c> {
    inst: usize,
    product: &'c ir::Product,
    results: Vec<Value>,
    /// Where each input of the product lives.
    inputs: Vec<Loc>,
    /// Per input: the cell input it is, when its terms are hoisted out of the
    /// step (none are unless the plan hoists and some term reads a cell input).
    hoisted: Vec<Option<InputId>>,
}

pub(super) struct Planner<'a> {
    cell: &'a Cell,
    pub(super) plan: Plan,
    /// The scratch arena's slot, once one value needs it, and its row so far.
    scratch_slot: Option<usize>,
    scratch_row: usize,
    pub(super) opts: PlanOptions,
    /// Where each value lives, once known.
    loc: Vec<Option<Loc>>,
    /// Readers of each value, and whether a root reads it.
    users: Vec<Vec<ir::Inst>>,
}

impl<'a> Planner<'a> {
    pub(super) fn new(cell: &'a Cell) -> Planner<'a> {
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
            panels: Vec::new(),
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
                kind: SlotKind::Input(InputId::new(i)),
                stride: padded(p.len),
                name: p.name.clone(),
            });
        }
        for (i, p) in cell.states.iter().enumerate() {
            plan.state_cur.push(plan.slots.len());
            plan.slots.push(Slot {
                kind: SlotKind::StateCur(StateId::new(i)),
                stride: padded(p.len),
                name: p.name.clone(),
            });
            plan.state_next.push(plan.slots.len());
            plan.slots.push(Slot {
                kind: SlotKind::StateNext(StateId::new(i)),
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
    pub(super) fn finish(&mut self) {
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
                slot: self.plan.input_slots[i.index()],
                offset: 0,
                stride: padded(len),
                len,
            },
            Op::State(i) => Loc {
                slot: self.plan.state_cur[i.index()],
                offset: 0,
                stride: padded(len),
                len,
            },
            Op::Param(k) => {
                if !matches!(self.cell.ty(v), Type::Vector(_)) {
                    return Err(PlanError(format!(
                        "parameter `{}` is used as a vector but is not one",
                        self.cell.params[k.index()].name
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
        let with_log = self.cell.insts.iter().any(|inst| match &inst.op {
            Op::Fused(r) => r.body.iter().any(|b| {
                matches!(
                    b.op,
                    ir::EwOp::Unary(ir::UnaryOp::Log | ir::UnaryOp::Softplus)
                )
            }),
            _ => false,
        });
        let mut values: Vec<u32> = crate::codegen::vecmath::constants(with_log)
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
        if (self.cell.params.iter()).any(|p| p.precision == crate::ir::Precision::Bf16) {
            // Widens the odd `k` of a bf16 pair (`Segment`).
            values.push(crate::codegen::vecmath::BF16_HIGH_HALF);
        }
        values.sort_unstable();
        values.dedup();
        for bits in values {
            let off = self.alloc_weights(LANES);
            self.plan.consts.push((bits, off));
        }
    }

    pub(super) fn run(&mut self, fuse_epilogues: bool) -> Result<(), PlanError> {
        self.pool_constants();
        let cell = self.cell;
        let stage = crate::ir::analysis::stages(cell);
        // Order: by stage; at each stage the product(s) first, then the
        // reductions, then regions, each in IR order.
        const PRODUCT: u8 = 0;
        const REDUCE: u8 = 1;
        const REGION: u8 = 2;
        let mut order: Vec<(usize, u8, usize)> = Vec::new();
        for (i, inst) in cell.insts.iter().enumerate() {
            match &inst.op {
                Op::Product(_) => order.push((stage[inst.results[0].index()], PRODUCT, i)),
                Op::Reduce(..) => order.push((stage[inst.results[0].index()], REDUCE, i)),
                Op::Fused(_) => order.push((stage[inst.results[0].index()], REGION, i)),
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
                if kind != PRODUCT {
                    continue;
                }
                let results = &cell.insts[i].results;
                for &(s2, kind2, j) in &order {
                    if kind2 != REGION || s2 != s || fused_into[j].is_some() {
                        continue;
                    }
                    let Op::Fused(r) = &cell.insts[j].op else {
                        continue;
                    };
                    // The stage's reductions run after its product: a region
                    // that reads one cannot run inside the product.
                    let reads_reduction = r
                        .args
                        .iter()
                        .any(|a| matches!(cell.op_of(*a), Op::Reduce(..)) && stage[a.index()] == s);
                    if reads_reduction {
                        continue;
                    }
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
        let mut k = 0;
        while k < order.len() {
            let (s, kind, i) = order[k];
            if kind == REDUCE {
                // Every reduction of the stage, in one task.
                let mut reductions = Vec::new();
                while k < order.len() && order[k].0 == s && order[k].1 == REDUCE {
                    reductions.push(self.reduction(order[k].2)?);
                    k += 1;
                }
                self.plan
                    .tasks
                    .push(Task::Rows(vec![RowStep::Reduce(reductions)]));
                continue;
            }
            k += 1;
            if kind == PRODUCT {
                let epilogues: Vec<usize> = (0..cell.insts.len())
                    .filter(|&j| fused_into[j] == Some(i))
                    .collect();
                self.product_task(i, &epilogues)?;
            } else if fused_into[i].is_none() {
                let code = self.region_code(i, &[], None)?;
                self.plan.tasks.push(Task::Region(code));
            }
        }
        self.merge_row_tasks();
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

    /// Merges each run of consecutive standalone regions and reductions that
    /// holds a reduction into one [`Task::Rows`]: every step of it reads and
    /// writes only its own batch row, so the steps can run row by row, in
    /// order, with no meeting of the threads between them.
    fn merge_row_tasks(&mut self) {
        let tasks = std::mem::take(&mut self.plan.tasks);
        let mut run: Vec<Task> = Vec::new();
        let flush = |run: &mut Vec<Task>, out: &mut Vec<Task>| {
            if run.iter().any(|t| matches!(t, Task::Rows(_))) {
                let mut steps = Vec::new();
                for t in run.drain(..) {
                    match t {
                        Task::Region(r) => steps.push(RowStep::Region(r)),
                        Task::Rows(s) => steps.extend(s),
                        other => out.push(other),
                    }
                }
                out.push(Task::Rows(steps));
            } else {
                out.append(run);
            }
        };
        for task in tasks {
            match task {
                Task::Region(_) | Task::Rows(_) => run.push(task),
                other => {
                    flush(&mut run, &mut self.plan.tasks);
                    self.plan.tasks.push(other);
                }
            }
        }
        flush(&mut run, &mut self.plan.tasks);
    }

    /// Plans reduction instruction `i`: its operand is in memory by now.
    fn reduction(&mut self, i: usize) -> Result<Reduction, PlanError> {
        let Op::Reduce(op, a) = self.cell.insts[i].op else {
            return Err(PlanError("internal error: not a reduction".into()));
        };
        let src = self.mem(a)?;
        let dest = self.home(self.cell.insts[i].results[0]);
        Ok(Reduction { op, src, dest })
    }

    /// Whether a value is read by anything but `except` (an instruction), or is a root.
    fn read_elsewhere(&self, v: Value, except: Option<usize>) -> bool {
        self.cell.is_root(v)
            || self.users[v.index()]
                .iter()
                .any(|u| Some(u.index()) != except)
    }

    /// A row-major copy of a matrix parameter in the packed weights (for `gemm`).
    fn matrix_copy(&mut self, param: ParamId) -> usize {
        if let Some(m) = self.plan.matrices.iter().find(|m| m.param == param) {
            return m.offset;
        }
        let n = match self.cell.params[param.index()].ty {
            Type::Matrix(r, c) => r * c,
            _ => 0,
        };
        let offset = self.alloc_weights(padded(n));
        self.plan.matrices.push(PackVector { offset, param });
        offset
    }

    /// A copy of a matrix parameter packed in panels (for the batched
    /// products), at a 64-byte boundary of the packed weights.
    fn panel_copy(&mut self, param: ParamId) -> usize {
        if let Some(m) = self.plan.panels.iter().find(|m| m.param == param) {
            return m.offset;
        }
        let p = &self.cell.params[param.index()];
        let n = match p.ty {
            Type::Matrix(r, c) => crate::kernels::panel::stored_len(r, c, p.precision).unwrap_or(0),
            _ => 0,
        };
        let pad = self.plan.weights_len.next_multiple_of(16) - self.plan.weights_len;
        self.alloc_weights(pad);
        let offset = self.alloc_weights(n);
        self.plan.panels.push(PackVector { offset, param });
        offset
    }

    /// The sum of vector parameters, `len` floats in the packed weights.
    fn bias_sum(&mut self, params: Vec<ParamId>, len: usize) -> usize {
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

    fn param_of(&self, v: Value) -> Result<ParamId, PlanError> {
        match self.cell.op_of(v) {
            Op::Param(k) => Ok(*k),
            _ => Err(PlanError(
                "internal error: a weight or bias is not a parameter".into(),
            )),
        }
    }

    /// Plans product instruction `i`: its hoisted input projection (if the
    /// plan hoists), then either `gemm` blocks or micro-kernel groups with the
    /// epilogue regions `epilogues` fused into them.
    fn product_task(&mut self, i: usize, epilogues: &[usize]) -> Result<(), PlanError> {
        let cell = self.cell;
        let Op::Product(p) = &cell.insts[i].op else {
            return Err(PlanError("internal error: not a product".into()));
        };
        let inputs: Vec<Loc> = p
            .inputs
            .iter()
            .map(|&x| self.mem(x))
            .collect::<Result<_, _>>()?;
        // Terms that read a cell input leave the step when hoisting.
        let hoisted: Vec<Option<InputId>> = p
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
        let prod = ProductPlan {
            inst: i,
            product: p,
            results: cell.insts[i].results.clone(),
            inputs,
            hoisted: if any_hoisted {
                hoisted
            } else {
                vec![None; p.inputs.len()]
            },
        };
        let projection = if any_hoisted {
            self.hoisted_projection(&prod)?
        } else {
            Vec::new()
        };
        if self.opts.gemm_products {
            self.gemm_task(&prod, &projection)
        } else {
            self.micro_kernel_task(&prod, &projection, epilogues)
        }
    }

    /// The projection row of a product whose terms read cell inputs: every
    /// block at its offset, its biases folded in. Returns each block's place.
    fn hoisted_projection(&mut self, prod: &ProductPlan) -> Result<Vec<Loc>, PlanError> {
        let slot = self.plan.slots.len();
        let stride: usize = prod.results.iter().map(|&v| padded(self.len_of(v))).sum();
        self.plan.slots.push(Slot {
            kind: SlotKind::Projection(self.plan.hoists.len()),
            stride,
            name: "projection".into(),
        });
        let mut blocks = Vec::new();
        let mut projection = Vec::new();
        let mut offset = 0;
        for (r, &v) in prod.results.iter().enumerate() {
            let len = self.len_of(v);
            let row = &prod.product.rows[r];
            let bias = self.row_bias(&row.biases, len)?;
            let mut terms = Vec::new();
            for (j, w) in row.weights.iter().enumerate() {
                if let (Some(w), Some(input)) = (w, prod.hoisted[j]) {
                    let param = self.param_of(*w)?;
                    terms.push((input, prod.inputs[j].len, self.matrix_copy(param)));
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
        Ok(projection)
    }

    /// The product as `gemm` blocks, each starting from its bias or its
    /// hoisted projection.
    fn gemm_task(&mut self, prod: &ProductPlan, projection: &[Loc]) -> Result<(), PlanError> {
        let mut blocks = Vec::new();
        for (r, &v) in prod.results.iter().enumerate() {
            let row = &prod.product.rows[r];
            let len = self.len_of(v);
            let init = match projection.get(r) {
                Some(&l) => GemmInit::Projection(l),
                None => self
                    .row_bias(&row.biases, len)?
                    .map_or(GemmInit::Zero, GemmInit::Bias),
            };
            let mut terms = Vec::new();
            for (j, w) in row.weights.iter().enumerate() {
                if let (Some(w), None) = (w, prod.hoisted[j]) {
                    let param = self.param_of(*w)?;
                    terms.push(GemmTerm {
                        input: prod.inputs[j],
                        k: prod.inputs[j].len,
                        panels: self.panel_copy(param),
                        precision: self.cell.params[param.index()].precision,
                    });
                }
            }
            let dest = self.home(v);
            blocks.push(GemmBlock {
                len,
                dest,
                init,
                terms,
            });
        }
        self.plan.tasks.push(Task::Gemm(blocks));
        Ok(())
    }

    /// The product as generated micro-kernels: one group per block length,
    /// its tiles' panels laid out chunk by chunk, with the epilogue of that
    /// length fused.
    fn micro_kernel_task(
        &mut self,
        prod: &ProductPlan,
        projection: &[Loc],
        epilogues: &[usize],
    ) -> Result<(), PlanError> {
        let cell = self.cell;
        let results = &prod.results;
        let mut lens: Vec<usize> = results.iter().map(|&v| self.len_of(v)).collect();
        lens.sort_unstable();
        lens.dedup();
        let mut groups = Vec::new();
        for len in lens {
            let blocks: Vec<usize> = (0..results.len())
                .filter(|&r| cell.ty(results[r]) == Type::Vector(len))
                .collect();
            // The epilogue region of this length (`run` fused it only if one chunk
            // holds every block).
            let epilogue = epilogues
                .iter()
                .copied()
                .find(|&j| matches!(&cell.insts[j].op, Op::Fused(r) if r.len == len));
            if epilogue.is_some() && blocks.len() > MAX_CHUNK {
                return Err(PlanError(format!(
                    "internal error: a fused epilogue needs one chunk ({} blocks)",
                    blocks.len()
                )));
            }
            let (chunks, tile_stride) = self.tile_layout(prod, &blocks, projection)?;
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
                    Some(self.region_code(j, &block_values, Some(prod.inst))?)
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

    /// The layout of one tile of a group of row blocks (indices into the
    /// product's rows): its chunks of at most [`MAX_CHUNK`] blocks, each with
    /// its biases (unless a projection holds them) and one panel per input it
    /// reads. Returns the chunks and the tile's length in floats.
    fn tile_layout(
        &self,
        prod: &ProductPlan,
        blocks: &[usize],
        projection: &[Loc],
    ) -> Result<(Vec<Chunk>, usize), PlanError> {
        let cell = self.cell;
        let rows = &prod.product.rows;
        let hoisting = !projection.is_empty();
        let chunked: Vec<Vec<usize>> = (0..blocks.len())
            .collect::<Vec<_>>()
            .chunks(MAX_CHUNK)
            .map(<[usize]>::to_vec)
            .collect();
        let mut offset = 0;
        let mut chunks = Vec::new();
        for cb in &chunked {
            let has_bias = !hoisting && cb.iter().any(|&b| !rows[blocks[b]].biases.is_empty());
            let bias_offset = has_bias.then(|| {
                let o = offset;
                offset += cb.len() * LANES;
                o
            });
            let mut segments = Vec::new();
            for (j, input) in prod.inputs.iter().enumerate() {
                if prod.hoisted[j].is_some() {
                    continue;
                }
                let present: Vec<usize> = (0..cb.len())
                    .filter(|&c| rows[blocks[cb[c]]].weights[j].is_some())
                    .collect();
                if present.is_empty() {
                    continue;
                }
                let mut weights = Vec::new();
                for &c in &present {
                    match rows[blocks[cb[c]]].weights[j].map(|w| cell.op_of(w)) {
                        Some(Op::Param(k)) => weights.push(*k),
                        _ => {
                            return Err(PlanError(
                                "internal error: a weight is not a parameter".into(),
                            ))
                        }
                    }
                }
                let stored: Vec<Precision> = weights
                    .iter()
                    .map(|p| cell.params[p.index()].precision)
                    .collect();
                let precision = if stored.iter().all(|&p| p == stored[0]) {
                    stored[0]
                } else {
                    Precision::F32
                };
                let segment = Segment {
                    input_index: j,
                    input: *input,
                    k: input.len,
                    blocks: present.clone(),
                    weights,
                    precision,
                    offset,
                };
                offset += segment
                    .panel_floats()
                    .ok_or_else(|| PlanError("internal error: a panel's size overflows".into()))?;
                segments.push(segment);
            }
            let bias_params = if hoisting {
                vec![Vec::new(); cb.len()]
            } else {
                cb.iter()
                    .map(|&b| {
                        rows[blocks[b]]
                            .biases
                            .iter()
                            .filter_map(|v| match cell.op_of(*v) {
                                Op::Param(k) => Some(*k),
                                _ => None,
                            })
                            .collect()
                    })
                    .collect()
            };
            let init_projection = hoisting.then(|| {
                let base = Loc {
                    offset: 0,
                    ..projection[blocks[cb[0]]]
                };
                let offsets = cb.iter().map(|&c| projection[blocks[c]].offset).collect();
                (base, offsets)
            });
            chunks.push(Chunk {
                blocks: cb.clone(),
                bias_offset,
                bias_params,
                init_projection,
                segments,
            });
        }
        Ok((chunks, offset))
    }

    fn len_of(&self, v: Value) -> usize {
        self.cell.ty(v).vector_len().unwrap_or(0)
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
