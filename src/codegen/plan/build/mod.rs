//! The planner: walks a legalized cell in stage order and decides slots,
//! tasks, the packed layout and every value's location (see the parent
//! module for what each means).

use super::*;
use crate::ir::{self, Type, Value};

mod products;

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
            spectra: Vec::new(),
            transforms: Vec::new(),
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
                Op::MatVecT { .. } => {
                    return Err(PlanError(
                        "transposed products (`matvec_t`, in backward cells) are run by the \
                         interpreter only: the code generator does not compile them yet"
                            .into(),
                    ))
                }
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
                // Products through spectra run as panel-kernel tasks, whose
                // epilogue is the region after them.
                if kind != PRODUCT || self.spectral_blocks(i).iter().any(Option::is_some) {
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
