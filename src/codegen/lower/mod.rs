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
use cranelift_codegen::ir::types::{F32, F32X4, I64};
use cranelift_codegen::ir::{
    AbiParam, Function, InstBuilder, MemFlagsData, Signature, UserFuncName, Value,
};
use cranelift_codegen::isa::{CallConv, TargetFrontendConfig};
use cranelift_frontend::{FunctionBuilder, FunctionBuilderContext, Variable};

use super::plan::{ArgSrc, Loc, Plan, Reduction, RegionCode, RowStep, LANES};
use super::vecmath;
use crate::ir::{EwOp, Operand, ReduceOp};

mod product;

pub use product::product_function;

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
