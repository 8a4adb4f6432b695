//! Ahead-of-time compilation: a relocatable object (`cranelift-object`) and a C
//! header, so that a C or C++ program can link a compiled cell.
//!
//! The object holds the plan's task functions (local) and two exported entry
//! points, for a cell `NAME` (its name made a C identifier):
//!
//! ```c
//! void NAME_step(const float *weights, float *workspace, int64_t batch,
//!                const float *x, ..., float *y, ...);
//! void NAME_run(const float *weights, float *workspace, int64_t batch, int64_t steps,
//!               const float *xs, ..., float *ys, ...);
//! ```
//!
//! `weights` are the packed weights (`NAME_WEIGHTS_LEN` floats, filled once by
//! the header's `NAME_pack` from the parameters), `workspace` holds the states and
//! scratch (`NAME_workspace_len(batch)` floats, zeroed: zero initial states); each
//! input is `[batch, len]` (`[steps, batch, len]` for `run`), each output likewise.
//! States persist in the workspace between calls; the header's `NAME_set_state_S`
//! and `NAME_get_state_S` read and write them.
//!
//! Workspace layout: slot after slot (inputs, then each state's current and next
//! value, then the scratch arena), each `batch * stride` floats rounded up to a
//! multiple of 16 (64 bytes), `stride` being the slot's padded row length. The
//! entry points copy inputs in, run the tasks, write the outputs, then copy each
//! state's next value over its current one.

use cranelift_codegen::ir::condcodes::IntCC;
use cranelift_codegen::ir::types::{F32, I64};
use cranelift_codegen::ir::{
    AbiParam, InstBuilder, MemFlagsData, Signature, StackSlotData, StackSlotKind, Value,
};
use cranelift_codegen::isa::CallConv;
use cranelift_frontend::{FunctionBuilder, FunctionBuilderContext};
use cranelift_module::{default_libcall_names, FuncId, Linkage, Module};
use cranelift_object::{ObjectBuilder, ObjectModule};

use crate::codegen::plan::{Loc, Plan, Slot, SlotKind, Update};
use crate::codegen::{self, lower, projection};
use crate::ir;
use crate::{Error, Result};

mod header;
use header::header;

/// An object file and the header that describes it: `NAME_step` and
/// `NAME_run` over a workspace the caller allocates, the parameters' packing
/// (`NAME_pack`) and their checkpoint names, and the plan the cost model
/// chose for the sizes given.
///
/// ```
/// # fn main() -> cellc::Result<()> {
/// let cell = cellc::Cell::from_file("examples/lstm.rnn")?.dims(&[("X", 8), ("H", 16)])?;
/// let opts = cellc::Options { threads: Some(1), ..cellc::Options::default() };
/// // For batch 1 over sequences of 100 steps, on this host's target.
/// let aot = cell.compile_object_for(&opts, None, 1, 100)?;
/// assert!(aot.header.contains("void lstm_run("));
/// assert!(aot.header.contains("weight_ih_l0[0..16]"));
/// std::fs::write(std::env::temp_dir().join("lstm.o"), &aot.object).unwrap();
/// # Ok(())
/// # }
/// ```
pub struct Aot {
    pub object: Vec<u8>,
    pub header: String,
    /// The C identifier prefix of the exported symbols.
    pub prefix: String,
}

/// The cell's name as a C identifier.
pub(crate) fn c_name(name: &str) -> String {
    let mut s: String = name
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect();
    // Not `_`: a leading underscore is reserved in C.
    if s.is_empty() || s.as_bytes()[0].is_ascii_digit() {
        s.insert_str(0, "cell_");
    }
    s
}

/// Compiles a legalized cell's plan (streaming or hoisted) to an object for
/// `triple` (the host if `None`), with its header.
pub(crate) fn compile(ir: &ir::Cell, plan: &Plan, triple: Option<&str>) -> Result<Aot> {
    let isa = match triple {
        Some(t) => codegen::target_isa(t, true),
        None => codegen::host_isa_with(true),
    }
    .map_err(|e| Error::options(e.0))?;
    let triple_name = isa.triple().to_string();
    let prefix = c_name(&ir.name);
    let call_conv = isa.default_call_conv();
    let functions = codegen::functions(plan, &*isa);
    let builder = ObjectBuilder::new(isa, prefix.clone(), default_libcall_names())
        .map_err(|e| Error::options(format!("cannot build an object: {e}")))?;
    let mut o = Object {
        module: ObjectModule::new(builder),
        ctx: cranelift_codegen::Context::new(),
        fctx: FunctionBuilderContext::new(),
    };
    // The task functions, in phase order.
    let mut tasks: Vec<(FuncId, usize)> = Vec::new();
    for tf in functions.phases.into_iter().flatten() {
        let sig = lower::signature(call_conv);
        let id = o.define(
            &format!("{prefix}_{}", tf.name),
            Linkage::Local,
            &sig,
            |ctx, _, _| {
                ctx.func = tf.func;
            },
        )?;
        tasks.push((id, tf.tiles));
    }
    // The header first: the object exports its hash (`NAME_abi`), so that a C
    // program can check that the two belong together.
    let header = header(ir, plan, &prefix, &triple_name)?;
    let abi = fnv1a(header.as_bytes());
    o.abi_function(&prefix, call_conv, abi)?;
    let header = with_abi(header, &prefix, abi);
    let (n_in, n_out) = (ir.inputs.len(), ir.outputs.len());
    let project = o.projection_function(plan, &prefix, call_conv)?;
    // inner(weights, workspace, batch, column, inputs..., outputs...): one
    // step whose projection is at `column` of the projection buffers.
    let inner = o.define(
        &format!("{prefix}_inner"),
        Linkage::Local,
        &i64_signature(call_conv, 4 + n_in + n_out),
        |ctx, fctx, module| {
            let mut b = FunctionBuilder::new(&mut ctx.func, fctx);
            let task_refs: Vec<(cranelift_codegen::ir::FuncRef, usize)> = tasks
                .iter()
                .map(|(id, tiles)| (module.declare_func_in_func(*id, b.func), *tiles))
                .collect();
            build_inner(&mut b, plan, &task_refs, n_in, n_out);
            b.seal_all_blocks();
            b.finalize(module.target_config());
        },
    )?;
    // step(weights, workspace, batch, inputs..., outputs...) and
    // run(weights, workspace, batch, steps, inputs..., outputs...).
    for (name, params) in [("step", 3), ("run", 4)] {
        let sig = i64_signature(call_conv, params + n_in + n_out);
        o.define(
            &format!("{prefix}_{name}"),
            Linkage::Export,
            &sig,
            |ctx, fctx, module| {
                let mut b = FunctionBuilder::new(&mut ctx.func, fctx);
                let inner = module.declare_func_in_func(inner, b.func);
                let project = project.map(|id| module.declare_func_in_func(id, b.func));
                if name == "step" {
                    build_step(&mut b, plan, inner, project, n_in, n_out);
                } else {
                    build_run(&mut b, plan, inner, project, n_in, n_out);
                }
                b.seal_all_blocks();
                b.finalize(module.target_config());
            },
        )?;
    }
    let object = o
        .module
        .finish()
        .emit()
        .map_err(|e| Error::internal(format!("cannot write the object: {e}")))?;
    Ok(Aot {
        object,
        header,
        prefix,
    })
}

impl Object {
    /// `NAME_abi`: returns the header's hash, so that a C program can check
    /// that the object and the header belong together.
    fn abi_function(&mut self, prefix: &str, call_conv: CallConv, abi: u64) -> Result<()> {
        let mut abi_sig = Signature::new(call_conv);
        abi_sig.returns.push(AbiParam::new(I64));
        self.define(
            &format!("{prefix}_abi"),
            Linkage::Export,
            &abi_sig,
            |ctx, fctx, module| {
                let mut b = FunctionBuilder::new(&mut ctx.func, fctx);
                let entry = b.create_block();
                b.switch_to_block(entry);
                let v = b.ins().iconst(I64, abi as i64);
                b.ins().return_(&[v]);
                b.seal_all_blocks();
                b.finalize(module.target_config());
            },
        )?;
        Ok(())
    }

    /// `NAME_project`, the hoisted projection, when the plan hoists (see
    /// `codegen::projection`).
    fn projection_function(
        &mut self,
        plan: &Plan,
        prefix: &str,
        call_conv: CallConv,
    ) -> Result<Option<FuncId>> {
        Ok(if plan.hoists.is_empty() {
            None
        } else {
            let sig = projection::signature(call_conv, plan.hoists.len(), plan.input_lens.len());
            Some(self.define(
                &format!("{prefix}_project"),
                Linkage::Local,
                &sig,
                |ctx, fctx, module| {
                    ctx.func = projection::function(
                        plan,
                        &plan.input_lens,
                        call_conv,
                        module.target_config(),
                        fctx,
                    );
                },
            )?)
        })
    }
}

/// An object being built, with the contexts its functions are built in.
struct Object {
    module: ObjectModule,
    ctx: cranelift_codegen::Context,
    fctx: FunctionBuilderContext,
}

impl Object {
    /// Declares `name` with `sig` and `linkage`, and defines it with the
    /// function `build` leaves in the context (which starts as an empty
    /// function of that name and signature).
    fn define(
        &mut self,
        name: &str,
        linkage: Linkage,
        sig: &Signature,
        build: impl FnOnce(
            &mut cranelift_codegen::Context,
            &mut FunctionBuilderContext,
            &mut ObjectModule,
        ),
    ) -> Result<FuncId> {
        let internal = |e: cranelift_module::ModuleError| Error::internal(format!("{e:?}"));
        let id = self
            .module
            .declare_function(name, linkage, sig)
            .map_err(internal)?;
        self.ctx.func = cranelift_codegen::ir::Function::with_name_signature(
            cranelift_codegen::ir::UserFuncName::user(0, id.as_u32()),
            sig.clone(),
        );
        build(&mut self.ctx, &mut self.fctx, &mut self.module);
        self.ctx.func.name = cranelift_codegen::ir::UserFuncName::user(0, id.as_u32());
        self.module
            .define_function(id, &mut self.ctx)
            .map_err(internal)?;
        self.module.clear_context(&mut self.ctx);
        Ok(id)
    }
}

/// A signature of `params` 64-bit arguments (pointers and counts) and no
/// result.
fn i64_signature(call_conv: cranelift_codegen::isa::CallConv, params: usize) -> Signature {
    let mut sig = Signature::new(call_conv);
    sig.params.extend((0..params).map(|_| AbiParam::new(I64)));
    sig
}

fn flags() -> MemFlagsData {
    MemFlagsData::trusted()
}

/// `for i in 0..n { body(i) }` with an i64 counter.
fn counted(
    b: &mut FunctionBuilder<'_>,
    n: Value,
    body: &mut dyn FnMut(&mut FunctionBuilder<'_>, Value),
) {
    let zero = b.ins().iconst(I64, 0);
    projection::counted_from(b, zero, n, body);
}

/// Copies `rows` rows of `len` floats from `src` (rows `src_stride` floats apart;
/// 0 repeats one row) to `dst` (rows `dst_stride` apart).
fn copy_rows(
    b: &mut FunctionBuilder<'_>,
    src: Value,
    src_stride: usize,
    dst: Value,
    dst_stride: usize,
    rows: Value,
    len: usize,
) {
    let len_v = b.ins().iconst(I64, len as i64);
    counted(b, rows, &mut |b, r| {
        let so = b.ins().imul_imm_s(r, (src_stride * 4) as i64);
        let s_row = b.ins().iadd(src, so);
        let d_off = b.ins().imul_imm_s(r, (dst_stride * 4) as i64);
        let d_row = b.ins().iadd(dst, d_off);
        counted(b, len_v, &mut |b, i| {
            let off = b.ins().imul_imm_s(i, 4);
            let sa = b.ins().iadd(s_row, off);
            let da = b.ins().iadd(d_row, off);
            let v = b.ins().load(F32, flags(), sa, 0);
            b.ins().store(flags(), v, da, 0);
        });
    });
}

/// Floats per batch row a slot takes in the workspace: its stride, and for a
/// hoisted projection [`CHUNK`] steps of it.
fn layout_stride(slot: &Slot) -> usize {
    match slot.kind {
        SlotKind::Projection(_) => CHUNK * slot.stride,
        _ => slot.stride,
    }
}

/// Steps whose input projection a hoisted object computes at once (the
/// workspace holds that many steps of it).
pub(crate) const CHUNK: usize = 32;

/// The slot base pointers for a workspace: slot after slot, each
/// `align16(batch * layout_stride)` floats.
fn slot_pointers(
    b: &mut FunctionBuilder<'_>,
    plan: &Plan,
    weights: Value,
    ws: Value,
    batch: Value,
) -> Vec<Value> {
    let mut ptrs = vec![weights];
    let mut off = b.ins().iconst(I64, 0);
    for slot in plan.slots.iter().skip(1) {
        let bytes = b.ins().imul_imm_s(off, 4);
        ptrs.push(b.ins().iadd(ws, bytes));
        let n = b.ins().imul_imm_s(batch, layout_stride(slot) as i64);
        let n = b.ins().iadd_imm_s(n, 15);
        let n = b.ins().band_imm_s(n, !15i64);
        off = b.ins().iadd(off, n);
    }
    ptrs
}

fn loc_addr(b: &mut FunctionBuilder<'_>, ptrs: &[Value], loc: Loc) -> Value {
    b.ins().iadd_imm_s(ptrs[loc.slot], (loc.offset * 4) as i64)
}

/// The body of one step (`NAME_inner`): copies the inputs into their slots,
/// runs the tasks (a hoisted plan's projection slots at `column`, set by the
/// caller), writes the outputs, moves the states on.
fn build_inner(
    b: &mut FunctionBuilder<'_>,
    plan: &Plan,
    tasks: &[(cranelift_codegen::ir::FuncRef, usize)],
    n_in: usize,
    n_out: usize,
) {
    let entry = b.create_block();
    b.append_block_params_for_function_params(entry);
    b.switch_to_block(entry);
    let p = b.block_params(entry).to_vec();
    let (weights, ws, batch, column) = (p[0], p[1], p[2], p[3]);
    let inputs = &p[4..4 + n_in];
    let outputs = &p[4 + n_in..4 + n_in + n_out];
    let mut ptrs = slot_pointers(b, plan, weights, ws, batch);
    for (s, slot) in plan.slots.iter().enumerate() {
        if let SlotKind::Projection(_) = slot.kind {
            let off = b.ins().imul_imm_s(column, (slot.stride * 4) as i64);
            ptrs[s] = b.ins().iadd(ptrs[s], off);
        }
    }
    let ss = b.create_sized_stack_slot(StackSlotData::new(
        StackSlotKind::ExplicitSlot,
        (ptrs.len() * 8) as u32,
        3,
    ));
    let table = b.ins().stack_addr(I64, ss, 0);
    for (s, &ptr) in ptrs.iter().enumerate() {
        b.ins().store(flags(), ptr, table, (s * 8) as i32);
    }
    for (i, &x) in inputs.iter().enumerate() {
        let slot = plan.input_slots[i];
        copy_rows(
            b,
            x,
            plan.input_lens[i],
            ptrs[slot],
            plan.slots[slot].stride,
            batch,
            plan.input_lens[i],
        );
    }
    let zero = b.ins().iconst(I64, 0);
    for &(f, tiles) in tasks {
        let t = b.ins().iconst(I64, tiles as i64);
        b.ins().call(f, &[table, zero, batch, zero, t]);
    }
    for (s, u) in plan.updates.iter().enumerate() {
        if let Update::Copy(from) = *u {
            let src = loc_addr(b, &ptrs, from);
            let next = plan.state_next[s];
            copy_rows(
                b,
                src,
                from.stride,
                ptrs[next],
                plan.slots[next].stride,
                batch,
                from.len,
            );
        }
    }
    // Outputs before the states move: an output may be a state's old value.
    for (o, &y) in outputs.iter().enumerate() {
        let loc = plan.outputs[o];
        let src = loc_addr(b, &ptrs, loc);
        copy_rows(b, src, loc.stride, y, plan.output_lens[o], batch, loc.len);
    }
    for s in 0..plan.state_cur.len() {
        let (cur, next) = (plan.state_cur[s], plan.state_next[s]);
        let stride = plan.slots[cur].stride;
        copy_rows(b, ptrs[next], stride, ptrs[cur], stride, batch, stride);
    }
    b.ins().return_(&[]);
}

/// Calls the projection over `cols` columns of the inputs at `inputs` into
/// the workspace's projection buffers (from column 0).
fn call_project(
    b: &mut FunctionBuilder<'_>,
    plan: &Plan,
    project: cranelift_codegen::ir::FuncRef,
    (weights, ws, batch): (Value, Value, Value),
    cols: Value,
    inputs: &[Value],
) {
    let ptrs = slot_pointers(b, plan, weights, ws, batch);
    let mut args = vec![weights];
    args.extend(plan.hoists.iter().map(|h| ptrs[h.slot]));
    args.push(cols);
    args.extend_from_slice(inputs);
    b.ins().call(project, &args);
}

/// `NAME_step`: the projection of this step's inputs (a hoisted plan), then
/// the step.
fn build_step(
    b: &mut FunctionBuilder<'_>,
    plan: &Plan,
    inner: cranelift_codegen::ir::FuncRef,
    project: Option<cranelift_codegen::ir::FuncRef>,
    n_in: usize,
    n_out: usize,
) {
    let entry = b.create_block();
    b.append_block_params_for_function_params(entry);
    b.switch_to_block(entry);
    let p = b.block_params(entry).to_vec();
    let (weights, ws, batch) = (p[0], p[1], p[2]);
    if let Some(project) = project {
        call_project(
            b,
            plan,
            project,
            (weights, ws, batch),
            batch,
            &p[3..3 + n_in],
        );
    }
    let zero = b.ins().iconst(I64, 0);
    let mut args = vec![weights, ws, batch, zero];
    args.extend_from_slice(&p[3..3 + n_in + n_out]);
    b.ins().call(inner, &args);
    b.ins().return_(&[]);
}

/// `NAME_run`: step after step; a hoisted plan first projects [`CHUNK`]
/// steps of inputs at once, then runs them.
fn build_run(
    b: &mut FunctionBuilder<'_>,
    plan: &Plan,
    inner: cranelift_codegen::ir::FuncRef,
    project: Option<cranelift_codegen::ir::FuncRef>,
    n_in: usize,
    n_out: usize,
) {
    let entry = b.create_block();
    b.append_block_params_for_function_params(entry);
    b.switch_to_block(entry);
    let p = b.block_params(entry).to_vec();
    let (weights, ws, batch, steps) = (p[0], p[1], p[2], p[3]);
    let ports: Vec<(Value, usize)> = p[4..4 + n_in]
        .iter()
        .zip(&plan.input_lens)
        .chain(p[4 + n_in..4 + n_in + n_out].iter().zip(&plan.output_lens))
        .map(|(&v, &len)| (v, len))
        .collect();
    // The ports advanced to step `t`.
    let at_step = |b: &mut FunctionBuilder<'_>, t: Value| -> Vec<Value> {
        ports
            .iter()
            .map(|&(base, len)| {
                let per = b.ins().imul(t, batch);
                let off = b.ins().imul_imm_s(per, (len * 4) as i64);
                b.ins().iadd(base, off)
            })
            .collect()
    };
    match project {
        None => {
            counted(b, steps, &mut |b, t| {
                let zero = b.ins().iconst(I64, 0);
                let mut args = vec![weights, ws, batch, zero];
                args.extend(at_step(b, t));
                b.ins().call(inner, &args);
            });
        }
        Some(project) => {
            // Chunks of CHUNK steps: ceil(steps / CHUNK) of them.
            let chunks = b.ins().iadd_imm_s(steps, (CHUNK - 1) as i64);
            let chunks = b.ins().sdiv_imm_s(chunks, CHUNK as i64);
            counted(b, chunks, &mut |b, ci| {
                let t0 = b.ins().imul_imm_s(ci, CHUNK as i64);
                let left = b.ins().isub(steps, t0);
                let full = b.ins().iconst(I64, CHUNK as i64);
                let short = b.ins().icmp(IntCC::SignedLessThan, left, full);
                let n = b.ins().select(short, left, full);
                let cols = b.ins().imul(n, batch);
                let at = at_step(b, t0);
                call_project(b, plan, project, (weights, ws, batch), cols, &at[..n_in]);
                counted(b, n, &mut |b, j| {
                    let t = b.ins().iadd(t0, j);
                    let column = b.ins().imul(j, batch);
                    let mut args = vec![weights, ws, batch, column];
                    args.extend(at_step(b, t));
                    b.ins().call(inner, &args);
                });
            });
        }
    }
    b.ins().return_(&[]);
}

/// FNV-1a, 64 bits: the header's fingerprint.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, &b| {
        (h ^ b as u64).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// Adds the fingerprint of `header` (computed before this addition) and the
/// check a program runs at start-up, before the header's last lines.
fn with_abi(header: String, p: &str, abi: u64) -> String {
    let up = p.to_uppercase();
    let tail = "\n#ifdef __cplusplus\n}\n#endif\n\n#endif\n";
    let body = header.strip_suffix(tail).unwrap_or(&header);
    format!(
        "{body}\n/* The fingerprint of this header; the object returns it from {p}_abi(). A\n * program calls {p}_check() once: 0 means the object and the header were not\n * made together (link the object made with this header). */\n#define {up}_ABI_HASH 0x{abi:016x}ull\nuint64_t {p}_abi(void);\nstatic inline int {p}_check(void) {{ return {p}_abi() == {up}_ABI_HASH; }}\n{tail}"
    )
}
