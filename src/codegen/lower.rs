//! Lowering a [`Plan`]'s tasks to Cranelift functions.
//!
//! Every generated function has the signature
//! `fn(slots: *const *mut f32, b0: i64, b1: i64, t0: i64, t1: i64)`: it runs its
//! task over batch rows `b0..b1` and tiles `t0..t1`, reading the base pointer of
//! each slot it touches from `slots`. Sizes, strides and offsets are constants
//! baked into the code; only the ranges are run-time values.
//!
//! A product group's function loops over tiles, then over batch rows; for each
//! (tile, batch rows) it runs a micro-kernel: `LANES` rows of every block of a
//! chunk in vector accumulators, for `nb` batch rows at once, swept over each
//! input segment with a 4-way unrolled `k` loop that broadcasts one input
//! element per batch row and multiplies it into one weight vector per block
//! (`fma`). At batch 1 the accumulators are split over `k` (up to 4 ways) so that
//! independent `fma` chains hide their latency. Then each block is stored where
//! the plan says, and the fused epilogue runs on the accumulators.

use cranelift_codegen::ir::condcodes::IntCC;
use cranelift_codegen::ir::types::{F32, F32X4, I32X4, I64};
use cranelift_codegen::ir::{
    AbiParam, Function, InstBuilder, MemFlagsData, Signature, UserFuncName, Value,
};
use cranelift_codegen::isa::{CallConv, TargetFrontendConfig};
use cranelift_frontend::{FunctionBuilder, FunctionBuilderContext, Variable};

use super::plan::{ArgSrc, Loc, Plan, ProductGroup, Reduction, RegionCode, RowStep, LANES};
use super::vecmath;
use crate::ir::{EwOp, Operand, Precision, ReduceOp};

/// Loop unrolling of the `k` loop.
const UNROLL: usize = 4;
/// Vector accumulators a micro-kernel may keep (of 16 registers on x86-64).
const MAX_ACCUMULATORS: usize = 10;

/// The signature of every task function.
pub fn signature(call_conv: CallConv) -> Signature {
    let mut sig = Signature::new(call_conv);
    for _ in 0..5 {
        sig.params.push(AbiParam::new(I64));
    }
    sig
}

fn data_flags() -> MemFlagsData {
    MemFlagsData::trusted()
}

/// Weights are read-only; they are not marked `can_move`, so that Cranelift does
/// not hoist per-tile loads (biases) out of the batch loop, where they would spill.
fn weight_flags() -> MemFlagsData {
    MemFlagsData::trusted().with_readonly()
}

/// Shared state while building one function.
struct Emitter<'a, 'b> {
    b: FunctionBuilder<'a>,
    plan: &'b Plan,
    /// The packed weights' base pointer (loaded at entry).
    weights: Option<Value>,
    /// Base pointer of each slot, loaded at entry (`None` if unused).
    bases: Vec<Option<Value>>,
    slots_ptr: Value,
}

impl<'b> Emitter<'_, 'b> {
    /// The constant pool; borrows the plan, not the emitter.
    fn consts(&self) -> vecmath::Consts<'b> {
        let plan: &'b Plan = self.plan;
        vecmath::Consts {
            base: self.weights.unwrap_or(self.slots_ptr),
            pool: &plan.consts,
        }
    }

    fn base(&mut self, slot: usize) -> Value {
        if let Some(v) = self.bases[slot] {
            return v;
        }
        // Loaded in the entry block (see `load_bases`); this path only runs for
        // slots discovered late, which `load_bases` prevents.
        let v = self.b.ins().load(
            I64,
            data_flags().with_readonly(),
            self.slots_ptr,
            (slot * 8) as i32,
        );
        self.bases[slot] = Some(v);
        v
    }

    /// Loads every slot base pointer the function will need, in the entry block.
    fn load_bases(&mut self, slots: impl IntoIterator<Item = usize>) {
        for s in slots {
            if self.bases[s].is_none() {
                let v = self.b.ins().load(
                    I64,
                    data_flags().with_readonly(),
                    self.slots_ptr,
                    (s * 8) as i32,
                );
                self.bases[s] = Some(v);
            }
        }
    }

    /// The address of element `lane0` of batch row `row` of `loc`, where
    /// `lane0` is `LANES * tile`.
    fn addr(&mut self, loc: Loc, row: Value, tile: Option<Value>) -> Value {
        let base = self.base(loc.slot);
        let mut a = base;
        if loc.stride != 0 {
            let off = self.b.ins().imul_imm_s(row, (loc.stride * 4) as i64);
            a = self.b.ins().iadd(a, off);
        }
        if let Some(t) = tile {
            let off = self.b.ins().imul_imm_s(t, (LANES * 4) as i64);
            a = self.b.ins().iadd(a, off);
        }
        if loc.offset != 0 {
            a = self.b.ins().iadd_imm_s(a, (loc.offset * 4) as i64);
        }
        a
    }

    fn var(&mut self, ty: cranelift_codegen::ir::Type, init: Value) -> Variable {
        let v = self.b.declare_var(ty);
        self.b.def_var(v, init);
        v
    }

    /// A counted loop `for i in lo..hi` (i64, step 1) around `body`.
    fn for_range(&mut self, lo: Value, hi: Value, body: impl FnOnce(&mut Self, Value)) {
        let i = self.var(I64, lo);
        let header = self.b.create_block();
        let body_block = self.b.create_block();
        let exit = self.b.create_block();
        self.b.ins().jump(header, &[]);
        self.b.switch_to_block(header);
        let iv = self.b.use_var(i);
        let done = self.b.ins().icmp(IntCC::SignedGreaterThanOrEqual, iv, hi);
        self.b.ins().brif(done, exit, &[], body_block, &[]);
        self.b.switch_to_block(body_block);
        body(self, iv);
        let iv = self.b.use_var(i);
        let next = self.b.ins().iadd_imm_s(iv, 1);
        self.b.def_var(i, next);
        self.b.ins().jump(header, &[]);
        self.b.switch_to_block(exit);
    }

    /// Runs a region on one vector: evaluates the body and stores the yields.
    /// `blocks` are the fused product's accumulators; memory arguments are
    /// loaded where first used.
    ///
    /// The body is evaluated in depth-first post-order from the yields (each
    /// value right before its first reader needs it), so a long chain like
    /// `g0 + g1 + ... + g9999` keeps a couple of vectors live, not ten thousand;
    /// values no yield reads are not computed.
    fn region_vector(&mut self, code: &RegionCode, row: Value, tile: Value, blocks: &[Value]) {
        let mut args: Vec<Option<Value>> = vec![None; code.args.len()];
        let mut vals: Vec<Option<Value>> = vec![None; code.body.len()];
        for (y, loc) in &code.yields {
            let v = self.operand(code, *y, row, tile, blocks, &mut args, &mut vals);
            let addr = self.addr(*loc, row, Some(tile));
            self.b.ins().store(data_flags(), v, addr, 0);
        }
    }

    fn arg(
        &mut self,
        code: &RegionCode,
        a: usize,
        row: Value,
        tile: Value,
        blocks: &[Value],
        args: &mut [Option<Value>],
    ) -> Value {
        if let Some(v) = args[a] {
            return v;
        }
        let v = match code.args[a] {
            ArgSrc::Block(i) => blocks[i],
            // One float per row (a reduction, a scalar parameter) broadcasts.
            ArgSrc::Mem(loc) if loc.len == 1 && code.len > 1 => {
                let addr = self.addr(loc, row, None);
                let x = self.b.ins().load(F32, data_flags(), addr, 0);
                self.b.ins().splat(F32X4, x)
            }
            ArgSrc::Mem(loc) => {
                let addr = self.addr(loc, row, Some(tile));
                self.b.ins().load(F32X4, data_flags(), addr, 0)
            }
        };
        args[a] = Some(v);
        v
    }

    /// The value of an operand, computing what it needs first (iteratively: a
    /// body may be ten thousand instructions deep).
    #[allow(clippy::too_many_arguments)]
    fn operand(
        &mut self,
        code: &RegionCode,
        o: Operand,
        row: Value,
        tile: Value,
        blocks: &[Value],
        args: &mut [Option<Value>],
        vals: &mut [Option<Value>],
    ) -> Value {
        let root = match o {
            Operand::Arg(a) => return self.arg(code, a as usize, row, tile, blocks, args),
            Operand::Inst(e) => e as usize,
        };
        let mut stack: Vec<(usize, bool)> = vec![(root, false)];
        while let Some((e, expanded)) = stack.pop() {
            if vals[e].is_some() {
                continue;
            }
            let ri = &code.body[e];
            if !expanded {
                stack.push((e, true));
                // Operands pushed last-first, so the first is computed first.
                for o in ri.args.iter().rev() {
                    if let Operand::Inst(d) = *o {
                        if vals[d as usize].is_none() {
                            stack.push((d as usize, false));
                        }
                    }
                }
                continue;
            }
            let mut ops = Vec::with_capacity(2);
            for o in &ri.args {
                ops.push(match *o {
                    Operand::Arg(a) => self.arg(code, a as usize, row, tile, blocks, args),
                    Operand::Inst(d) => vals[d as usize].unwrap_or_else(|| {
                        unreachable!("operands are computed before their readers")
                    }),
                });
            }
            let k = self.consts();
            let v = match ri.op {
                EwOp::Const(c) => vecmath::constant(&mut self.b, k, c),
                EwOp::Unary(op) => vecmath::unary(&mut self.b, k, op, ops[0]),
                EwOp::Binary(op) => vecmath::binary(&mut self.b, op, ops[0], ops[1]),
            };
            vals[e] = Some(v);
        }
        vals[root].unwrap_or_else(|| unreachable!("the root was just computed"))
    }
}

fn new_function(name: &str, call_conv: CallConv) -> Function {
    let _ = name;
    Function::with_name_signature(UserFuncName::user(0, 0), signature(call_conv))
}

/// The slots a region reads or writes.
fn region_slots(code: &RegionCode) -> Vec<usize> {
    let mut s: Vec<usize> = code
        .args
        .iter()
        .filter_map(|a| match a {
            ArgSrc::Mem(l) => Some(l.slot),
            ArgSrc::Block(_) => None,
        })
        .chain(code.yields.iter().map(|(_, l)| l.slot))
        .collect();
    s.sort_unstable();
    s.dedup();
    s
}

/// A task function whose body reads the slots `slots` (their base pointers
/// loaded at entry, in that order; slot 0 is the weights): `body` gets the
/// emitter and the function's parameters (slot table, `b0`, `b1`, `t0`, `t1`).
fn task_function(
    plan: &Plan,
    name: &str,
    slots: Vec<usize>,
    call_conv: CallConv,
    config: TargetFrontendConfig,
    fctx: &mut FunctionBuilderContext,
    body: impl FnOnce(&mut Emitter<'_, '_>, &[Value]),
) -> Function {
    let mut func = new_function(name, call_conv);
    {
        let mut b = FunctionBuilder::new(&mut func, fctx);
        let entry = b.create_block();
        b.append_block_params_for_function_params(entry);
        b.switch_to_block(entry);
        let p = b.block_params(entry).to_vec();
        let mut e = Emitter {
            b,
            plan,
            weights: None,
            bases: vec![None; plan.slots.len()],
            slots_ptr: p[0],
        };
        e.load_bases(slots);
        e.weights = e.bases[0];
        body(&mut e, &p);
        e.b.ins().return_(&[]);
        e.b.seal_all_blocks();
        e.b.finalize(config);
    }
    func
}

/// Builds the function of a standalone region.
pub fn region_function(
    plan: &Plan,
    code: &RegionCode,
    call_conv: CallConv,
    config: TargetFrontendConfig,
    fctx: &mut FunctionBuilderContext,
) -> Function {
    let mut slots = region_slots(code);
    slots.push(0);
    task_function(plan, "region", slots, call_conv, config, fctx, |e, p| {
        let (b0, b1, t0, t1) = (p[1], p[2], p[3], p[4]);
        e.for_range(b0, b1, |e, row| {
            e.for_range(t0, t1, |e, tile| {
                e.region_vector(code, row, tile, &[]);
            });
        });
    })
}

/// Accumulators of a reduction's vector loop: independent `fadd` chains.
const REDUCE_ACCUMULATORS: usize = 4;

impl Emitter<'_, '_> {
    /// One row of a reduction: the full vectors of the source summed in
    /// [`REDUCE_ACCUMULATORS`] interleaved vector accumulators, combined
    /// pairwise, then across lanes, then the tail floats one by one; a fixed
    /// order, the same for every row and thread count.
    fn reduce_row(&mut self, r: &Reduction, row: Value) {
        let full = r.src.len / LANES;
        let src = self.addr(r.src, row, None);
        let zero = self.b.ins().f32const(0.0);
        let zero = self.b.ins().splat(F32X4, zero);
        let accs: Vec<Variable> = (0..REDUCE_ACCUMULATORS)
            .map(|_| self.var(F32X4, zero))
            .collect();
        let rounds = full / REDUCE_ACCUMULATORS;
        if rounds > 0 {
            let lo = self.b.ins().iconst(I64, 0);
            let hi = self.b.ins().iconst(I64, rounds as i64);
            self.for_range(lo, hi, |e, k| {
                let off =
                    e.b.ins()
                        .imul_imm_s(k, (REDUCE_ACCUMULATORS * LANES * 4) as i64);
                let at = e.b.ins().iadd(src, off);
                for (j, acc) in accs.iter().enumerate() {
                    let x =
                        e.b.ins()
                            .load(F32X4, data_flags(), at, (j * LANES * 4) as i32);
                    let a = e.b.use_var(*acc);
                    let sum = e.b.ins().fadd(a, x);
                    e.b.def_var(*acc, sum);
                }
            });
        }
        for (j, t) in (rounds * REDUCE_ACCUMULATORS..full).enumerate() {
            let x = self
                .b
                .ins()
                .load(F32X4, data_flags(), src, (t * LANES * 4) as i32);
            let a = self.b.use_var(accs[j]);
            let sum = self.b.ins().fadd(a, x);
            self.b.def_var(accs[j], sum);
        }
        let vals: Vec<Value> = accs.iter().map(|a| self.b.use_var(*a)).collect();
        let v01 = self.b.ins().fadd(vals[0], vals[1]);
        let v23 = self.b.ins().fadd(vals[2], vals[3]);
        let v = self.b.ins().fadd(v01, v23);
        let lanes: Vec<Value> = (0..LANES as u8)
            .map(|l| self.b.ins().extractlane(v, l))
            .collect();
        let s01 = self.b.ins().fadd(lanes[0], lanes[1]);
        let s23 = self.b.ins().fadd(lanes[2], lanes[3]);
        let mut sum = self.b.ins().fadd(s01, s23);
        for t in full * LANES..r.src.len {
            let x = self.b.ins().load(F32, data_flags(), src, (t * 4) as i32);
            sum = self.b.ins().fadd(sum, x);
        }
        let result = match r.op {
            ReduceOp::Sum => sum,
            ReduceOp::Mean => {
                let n = self.b.ins().f32const(r.src.len as f32);
                self.b.ins().fdiv(sum, n)
            }
        };
        let dest = self.addr(r.dest, row, None);
        self.b.ins().store(data_flags(), result, dest, 0);
    }
}

/// Builds the function of a [`Task::Rows`](super::plan::Task::Rows): for each
/// batch row in `b0..b1`, every step over the whole row, in order (the tile
/// range is not used: a row is never split).
pub fn rows_function(
    plan: &Plan,
    steps: &[RowStep],
    call_conv: CallConv,
    config: TargetFrontendConfig,
    fctx: &mut FunctionBuilderContext,
) -> Function {
    let mut slots: Vec<usize> = vec![0];
    for step in steps {
        match step {
            RowStep::Region(code) => slots.extend(region_slots(code)),
            RowStep::Reduce(rs) => slots.extend(rs.iter().flat_map(|r| [r.src.slot, r.dest.slot])),
        }
    }
    slots.sort_unstable();
    slots.dedup();
    task_function(plan, "rows", slots, call_conv, config, fctx, |e, p| {
        let (b0, b1) = (p[1], p[2]);
        e.for_range(b0, b1, |e, row| {
            for step in steps {
                match step {
                    RowStep::Region(code) => {
                        let lo = e.b.ins().iconst(I64, 0);
                        let hi = e.b.ins().iconst(I64, code.tiles as i64);
                        e.for_range(lo, hi, |e, tile| e.region_vector(code, row, tile, &[]));
                    }
                    RowStep::Reduce(rs) => {
                        for r in rs {
                            e.reduce_row(r, row);
                        }
                    }
                }
            }
        });
    })
}

/// Builds the function of one product group (with its fused epilogue).
pub fn product_function(
    plan: &Plan,
    group: &ProductGroup,
    call_conv: CallConv,
    config: TargetFrontendConfig,
    fctx: &mut FunctionBuilderContext,
) -> Function {
    let mut slots: Vec<usize> = vec![0];
    for ch in &group.chunks {
        slots.extend(ch.segments.iter().map(|s| s.input.slot));
        slots.extend(ch.init_projection.iter().map(|(l, _)| l.slot));
    }
    slots.extend(group.dest.iter().flatten().map(|l| l.slot));
    if let Some(ep) = &group.epilogue {
        slots.extend(region_slots(ep));
    }
    slots.sort_unstable();
    slots.dedup();
    task_function(plan, "product", slots, call_conv, config, fctx, |e, p| {
        let (b0, b1, t0, t1) = (p[1], p[2], p[3], p[4]);
        let widest = group
            .chunks
            .iter()
            .map(|c| c.blocks.len())
            .max()
            .unwrap_or(1);
        // int8 segments sum in accumulators of their own: twice as many.
        let int8 = (group.chunks.iter())
            .any(|c| c.segments.iter().any(|s| s.precision == Precision::Int8));
        let nb = (MAX_ACCUMULATORS / (widest * if int8 { 2 } else { 1 })).clamp(1, 4);
        e.for_range(t0, t1, |e, tile| {
            let wbase = e.base(0);
            let toff = e.b.ins().imul_imm_s(tile, (group.tile_stride * 4) as i64);
            let wt = e.b.ins().iadd(wbase, toff);
            let wt = e.b.ins().iadd_imm_s(wt, (group.weights_offset * 4) as i64);
            // Batch rows nb at a time, then one at a time.
            let row = e.var(I64, b0);
            if nb > 1 {
                let header = e.b.create_block();
                let body = e.b.create_block();
                let exit = e.b.create_block();
                e.b.ins().jump(header, &[]);
                e.b.switch_to_block(header);
                let r = e.b.use_var(row);
                let end = e.b.ins().iadd_imm_s(r, nb as i64);
                let done = e.b.ins().icmp(IntCC::SignedGreaterThan, end, b1);
                e.b.ins().brif(done, exit, &[], body, &[]);
                e.b.switch_to_block(body);
                let r = e.b.use_var(row);
                micro_kernel(e, group, wt, r, tile, nb, false);
                let next = e.b.ins().iadd_imm_s(r, nb as i64);
                e.b.def_var(row, next);
                e.b.ins().jump(header, &[]);
                e.b.switch_to_block(exit);
            }
            // The rows left over. At batch 1 the `k` sum is split over several
            // accumulators (latency); in a larger batch it is not, so that every
            // row of a batch sums in the same order as the rows of the nb-wide
            // kernel: equal inputs give equal results wherever they sit.
            let r = e.b.use_var(row);
            if nb > 1 {
                let rows = e.b.ins().isub(b1, b0);
                let single = e.b.ins().icmp_imm_s(IntCC::Equal, rows, 1);
                let split = e.b.create_block();
                let plain = e.b.create_block();
                let done = e.b.create_block();
                e.b.ins().brif(single, split, &[], plain, &[]);
                e.b.switch_to_block(split);
                micro_kernel(e, group, wt, r, tile, 1, true);
                e.b.ins().jump(done, &[]);
                e.b.switch_to_block(plain);
                e.for_range(r, b1, |e, r| {
                    micro_kernel(e, group, wt, r, tile, 1, false);
                });
                e.b.ins().jump(done, &[]);
                e.b.switch_to_block(done);
            } else {
                e.for_range(r, b1, |e, r| {
                    micro_kernel(e, group, wt, r, tile, 1, true);
                });
            }
        });
    })
}

/// One tile of `LANES` rows of every block, for batch rows `row..row+nb`;
/// `split_k` (for one row alone) sums `k` over several accumulators.
fn micro_kernel(
    e: &mut Emitter<'_, '_>,
    group: &ProductGroup,
    wt: Value,
    row: Value,
    tile: Value,
    nb: usize,
    split_k: bool,
) {
    let rows: Vec<Value> = (0..nb)
        .map(|c| {
            if c == 0 {
                row
            } else {
                e.b.ins().iadd_imm_s(row, c as i64)
            }
        })
        .collect();
    for (ci, chunk) in group.chunks.iter().enumerate() {
        let nblk = chunk.blocks.len();
        // Split k over independent accumulators for a row alone.
        let ks = if split_k { (8 / nblk).clamp(1, 4) } else { 1 };
        let ks = if UNROLL.is_multiple_of(ks) { ks } else { 1 };
        // Narrow weights come in pairs of `k`, each pair summed apart and
        // added to one accumulator (`add_pair`): the chain is one add per
        // pair, so fewer splits hide its latency, and fewer registers hold
        // them (more would spill). An int8 segment sums in accumulators of its
        // own, which double the count.
        let narrow = (chunk.segments.iter()).any(|s| s.precision != Precision::F32);
        let ks = if narrow && split_k && nblk == 1 {
            2
        } else if narrow {
            1
        } else {
            ks
        };
        // acc[s][block][col]
        let mut acc: Vec<Vec<Vec<Variable>>> = Vec::with_capacity(ks);
        let zero = {
            let k = e.consts();
            vecmath::splat(&mut e.b, k, 0.0)
        };
        for s in 0..ks {
            let mut per_block = Vec::with_capacity(nblk);
            for blk in 0..nblk {
                let mut cols = Vec::with_capacity(nb);
                for &r in rows.iter().take(nb) {
                    let init = match (s, chunk.bias_offset, &chunk.init_projection) {
                        // The hoisted projection of this step, which holds the biases.
                        (0, _, Some((loc, offsets))) => {
                            let l = Loc {
                                offset: offsets[blk],
                                ..*loc
                            };
                            let a = e.addr(l, r, Some(tile));
                            e.b.ins().load(F32X4, data_flags(), a, 0)
                        }
                        (0, Some(bo), None) => e.b.ins().load(
                            F32X4,
                            weight_flags(),
                            wt,
                            ((bo + blk * LANES) * 4) as i32,
                        ),
                        _ => zero,
                    };
                    cols.push(e.var(F32X4, init));
                }
                per_block.push(cols);
            }
            acc.push(per_block);
        }
        for seg in &chunk.segments {
            let xrows: Vec<Value> = rows.iter().map(|&r| e.addr(seg.input, r, None)).collect();
            let np = seg.blocks.len();
            let wseg = e.b.ins().iadd_imm_s(wt, (seg.offset * 4) as i64);
            // Loads x[k] of every row, splatted, for `k` at byte offset `xk`
            // from `xo`.
            let splat_x = |e: &mut Emitter<'_, '_>, xo: Value, xk: i32| -> Vec<Value> {
                xrows
                    .iter()
                    .map(|&xr| {
                        let a = e.b.ins().iadd(xr, xo);
                        let x = e.b.ins().load(F32, data_flags(), a, xk);
                        e.b.ins().splat(F32X4, x)
                    })
                    .collect()
            };
            // acc[k % splits][blk][c] += w * x[c], for every row c.
            let accumulate = |e: &mut Emitter<'_, '_>,
                              acc: &[Vec<Vec<Variable>>],
                              blk: usize,
                              k: usize,
                              w: Value,
                              xs: &[Value]| {
                let split = &acc[k % acc.len()][blk];
                for (c, &x) in xs.iter().enumerate() {
                    let a = e.b.use_var(split[c]);
                    let r = e.b.ins().fma(w, x, a);
                    e.b.def_var(split[c], r);
                }
            };
            match seg.precision {
                Precision::F32 => {
                    let w_bytes = np * LANES * 4;
                    let units = Sweep {
                        units: seg.k,
                        unroll: UNROLL,
                        x_bytes: 4,
                        w_bytes,
                    };
                    units.emit(e, wseg, |e, xo, xk, wp, wk, k| {
                        let xs = splat_x(e, xo, xk);
                        for (pi, &blk) in seg.blocks.iter().enumerate() {
                            let w = e.b.ins().load(
                                F32X4,
                                weight_flags(),
                                wp,
                                wk + (pi * LANES * 4) as i32,
                            );
                            accumulate(e, &acc, blk, k, w, &xs);
                        }
                    });
                }
                Precision::Bf16 => {
                    // A pair of k: the even one in each word's low half.
                    let pair = |e: &mut Emitter<'_, '_>, xo, xk, wp, wk: i32, p: usize, both| {
                        let xe = splat_x(e, xo, xk);
                        let xodd = if both {
                            splat_x(e, xo, xk + 4)
                        } else {
                            Vec::new()
                        };
                        for (pi, &blk) in seg.blocks.iter().enumerate() {
                            let words = e.b.ins().load(
                                I32X4,
                                weight_flags(),
                                wp,
                                wk + (pi * LANES * 4) as i32,
                            );
                            let even = e.b.ins().ishl_imm_u(words, 16);
                            let even = e.b.ins().bitcast(F32X4, vecmath::lanes_flags(), even);
                            let odd = both.then(|| {
                                // Loaded at each use, where it folds into the
                                // `and` and keeps a register free.
                                let k = e.consts();
                                let mask = vecmath::splat_bits(
                                    &mut e.b,
                                    k,
                                    vecmath::BF16_HIGH_HALF,
                                    I32X4,
                                );
                                let odd = e.b.ins().band(words, mask);
                                e.b.ins().bitcast(F32X4, vecmath::lanes_flags(), odd)
                            });
                            add_pair(e, &acc[p % acc.len()][blk], even, odd, &xe, &xodd);
                        }
                    };
                    let w_bytes = np * LANES * 4;
                    sweep_pairs(e, seg.k, w_bytes, wseg, pair);
                }
                Precision::Int8 => {
                    // Sums from zero, in accumulators of their own, times
                    // each row's scale at the end.
                    let zero = {
                        let k = e.consts();
                        vecmath::splat(&mut e.b, k, 0.0)
                    };
                    let sums: Vec<Vec<Vec<Variable>>> = (0..acc.len())
                        .map(|_| {
                            (0..np)
                                .map(|_| (0..nb).map(|_| e.var(F32X4, zero)).collect())
                                .collect()
                        })
                        .collect();
                    let values = e.b.ins().iadd_imm_s(wseg, (np * LANES * 4) as i64);
                    let pair = |e: &mut Emitter<'_, '_>, xo, xk, wp, wk: i32, p: usize, both| {
                        let xe = splat_x(e, xo, xk);
                        let xodd = if both {
                            splat_x(e, xo, xk + 4)
                        } else {
                            Vec::new()
                        };
                        for (pi, sum) in sums[p % sums.len()].iter().enumerate() {
                            // LANES bytes of the even k, then LANES of the odd one.
                            let bytes = e.b.ins().sload8x8(
                                weight_flags(),
                                wp,
                                wk + (pi * 2 * LANES) as i32,
                            );
                            let even = e.b.ins().swiden_low(bytes);
                            let even = e.b.ins().fcvt_from_sint(F32X4, even);
                            let odd = both.then(|| {
                                let odd = e.b.ins().swiden_high(bytes);
                                e.b.ins().fcvt_from_sint(F32X4, odd)
                            });
                            add_pair(e, sum, even, odd, &xe, &xodd);
                        }
                    };
                    let w_bytes = np * 2 * LANES;
                    sweep_pairs(e, seg.k, w_bytes, values, pair);
                    for (pi, &blk) in seg.blocks.iter().enumerate() {
                        let scale =
                            e.b.ins()
                                .load(F32X4, weight_flags(), wseg, (pi * LANES * 4) as i32);
                        for c in 0..nb {
                            let mut sum = e.b.use_var(sums[0][pi][c]);
                            for split in sums.iter().skip(1) {
                                let v = e.b.use_var(split[pi][c]);
                                sum = e.b.ins().fadd(sum, v);
                            }
                            let a = e.b.use_var(acc[0][blk][c]);
                            let r = e.b.ins().fma(sum, scale, a);
                            e.b.def_var(acc[0][blk][c], r);
                        }
                    }
                }
            }
        }
        // Sum the k-splits.
        let mut totals: Vec<Vec<Value>> = Vec::with_capacity(nblk);
        for blk in 0..nblk {
            let mut cols = Vec::with_capacity(nb);
            for c in 0..nb {
                let mut v = e.b.use_var(acc[0][blk][c]);
                for split in acc.iter().skip(1) {
                    let w = e.b.use_var(split[blk][c]);
                    v = e.b.ins().fadd(v, w);
                }
                cols.push(v);
            }
            totals.push(cols);
        }
        // Store the blocks that are read elsewhere.
        for (blk, &gb) in chunk.blocks.iter().enumerate() {
            if let Some(loc) = group.dest[gb] {
                for (c, &r) in rows.iter().enumerate() {
                    let a = e.addr(loc, r, Some(tile));
                    e.b.ins().store(data_flags(), totals[blk][c], a, 0);
                }
            }
        }
        // The fused epilogue (the plan fuses only single-chunk groups).
        if let (Some(ep), 0) = (&group.epilogue, ci) {
            for (c, &r) in rows.iter().enumerate() {
                let blocks: Vec<Value> = (0..nblk).map(|blk| totals[blk][c]).collect();
                e.region_vector(ep, r, tile, &blocks);
            }
        }
    }
}

/// Adds one pair of `k` of one block to its accumulators (one per row):
/// `acc[c] += even * xe[c] + odd * xo[c]`, the pair summed first, so that
/// the accumulator's chain is one add per pair; `odd` is `None` for the
/// last `k` of an odd length.
fn add_pair(
    e: &mut Emitter<'_, '_>,
    acc: &[Variable],
    even: Value,
    odd: Option<Value>,
    xe: &[Value],
    xo: &[Value],
) {
    for (c, &x) in xe.iter().enumerate() {
        let a = e.b.use_var(acc[c]);
        let r = match odd {
            Some(odd) => {
                let t = e.b.ins().fmul(odd, xo[c]);
                let t = e.b.ins().fma(even, x, t);
                e.b.ins().fadd(a, t)
            }
            None => e.b.ins().fma(even, x, a),
        };
        e.b.def_var(acc[c], r);
    }
}

/// Emits `pair(e, xo, xk, wp, wk, p, both)` for every pair `p` of a narrow
/// segment of `k` columns whose pairs start at `base`, `w_bytes` apart
/// ([`Sweep`]); the last column of an odd `k` comes alone (`both` false).
fn sweep_pairs(
    e: &mut Emitter<'_, '_>,
    k: usize,
    w_bytes: usize,
    base: Value,
    pair: impl Fn(&mut Emitter<'_, '_>, Value, i32, Value, i32, usize, bool),
) {
    let pairs = Sweep {
        units: k / 2,
        unroll: UNROLL / 2,
        x_bytes: 8,
        w_bytes,
    };
    pairs.emit(e, base, |e, xo, xk, wp, wk, p| {
        pair(e, xo, xk, wp, wk, p, true)
    });
    if k % 2 == 1 {
        let (z, p) = (zero_i64(e), k / 2);
        pair(
            e,
            z,
            (2 * p * 4) as i32,
            base,
            (p * w_bytes) as i32,
            p,
            false,
        );
    }
}

/// A sweep over a segment's `k` in units (one `k`, or a pair): a loop of
/// `unroll` units per iteration, then the units left over, straight.
struct Sweep {
    units: usize,
    unroll: usize,
    /// Bytes of `x` and of the panel per unit.
    x_bytes: usize,
    w_bytes: usize,
}

impl Sweep {
    /// Emits `body(e, xo, xk, wp, wk, unit)` for every unit: `x` at byte
    /// offset `xo + xk` of each row, the unit's weights at `wp + wk`, and
    /// `unit` its index modulo `unroll` inside the loop (the loop starts at
    /// multiples of `unroll`), its index after it.
    fn emit(
        &self,
        e: &mut Emitter<'_, '_>,
        wseg: Value,
        mut body: impl FnMut(&mut Emitter<'_, '_>, Value, i32, Value, i32, usize),
    ) {
        let full = self.units / self.unroll * self.unroll;
        if full > 0 {
            let z = zero_i64(e);
            let xo = e.var(I64, z);
            let wp = e.var(I64, wseg);
            let header = e.b.create_block();
            let lbody = e.b.create_block();
            let exit = e.b.create_block();
            e.b.ins().jump(header, &[]);
            e.b.switch_to_block(header);
            let xov = e.b.use_var(xo);
            let end = (full * self.x_bytes) as i64;
            let done =
                e.b.ins()
                    .icmp_imm_s(IntCC::SignedGreaterThanOrEqual, xov, end);
            e.b.ins().brif(done, exit, &[], lbody, &[]);
            e.b.switch_to_block(lbody);
            let xov = e.b.use_var(xo);
            let wpv = e.b.use_var(wp);
            for u in 0..self.unroll {
                let (xk, wk) = (u * self.x_bytes, u * self.w_bytes);
                body(e, xov, xk as i32, wpv, wk as i32, u);
            }
            let nx =
                e.b.ins()
                    .iadd_imm_s(xov, (self.unroll * self.x_bytes) as i64);
            e.b.def_var(xo, nx);
            let nw =
                e.b.ins()
                    .iadd_imm_s(wpv, (self.unroll * self.w_bytes) as i64);
            e.b.def_var(wp, nw);
            e.b.ins().jump(header, &[]);
            e.b.switch_to_block(exit);
        }
        let z = zero_i64(e);
        for u in full..self.units {
            let (xk, wk) = (u * self.x_bytes, u * self.w_bytes);
            body(e, z, xk as i32, wseg, wk as i32, u);
        }
    }
}

fn zero_i64(e: &mut Emitter<'_, '_>) -> Value {
    e.b.ins().iconst(I64, 0)
}
