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

use std::fmt::Write;

use cranelift_codegen::ir::condcodes::IntCC;
use cranelift_codegen::ir::types::{F32, I64};
use cranelift_codegen::ir::{
    AbiParam, InstBuilder, MemFlagsData, Signature, StackSlotData, StackSlotKind, Value,
};
use cranelift_frontend::{FunctionBuilder, FunctionBuilderContext};
use cranelift_module::{default_libcall_names, FuncId, Linkage, Module};
use cranelift_object::{ObjectBuilder, ObjectModule};

use crate::codegen::plan::{Loc, Plan, Slot, SlotKind, Task, Update, GEMM_ROWS, LANES};
use crate::codegen::{self, lower, projection};
use crate::ir::{self, Type};
use crate::{Error, Result};

/// An object file and the header that describes it.
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

/// Compiles a legalized cell's streaming plan to an object for `triple` (the
/// host if `None`), with its header.
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
    let mut module = ObjectModule::new(builder);
    let internal = |e: cranelift_module::ModuleError| Error::internal(format!("{e:?}"));
    let mut ctx = cranelift_codegen::Context::new();
    // The task functions, in phase order.
    let mut tasks: Vec<(FuncId, usize)> = Vec::new();
    for tf in functions.phases.into_iter().flatten() {
        let id = module
            .declare_function(
                &format!("{prefix}_{}", tf.name),
                Linkage::Local,
                &lower::signature(call_conv),
            )
            .map_err(internal)?;
        ctx.func = tf.func;
        ctx.func.name = cranelift_codegen::ir::UserFuncName::user(0, id.as_u32());
        module.define_function(id, &mut ctx).map_err(internal)?;
        module.clear_context(&mut ctx);
        tasks.push((id, tf.tiles));
    }
    // The header first: the object exports its hash (`NAME_abi`), so that a C
    // program can check that the two belong together.
    let header = header(ir, plan, &prefix, &triple_name)?;
    let abi = fnv1a(header.as_bytes());
    let abi_id = begin_export_returning(
        &mut module,
        &mut ctx,
        &format!("{prefix}_abi"),
        0,
        1,
        call_conv,
    )?;
    {
        let mut fctx = FunctionBuilderContext::new();
        let mut b = FunctionBuilder::new(&mut ctx.func, &mut fctx);
        let entry = b.create_block();
        b.switch_to_block(entry);
        let v = b.ins().iconst(I64, abi as i64);
        b.ins().return_(&[v]);
        b.seal_all_blocks();
        b.finalize(module.target_config());
    }
    module.define_function(abi_id, &mut ctx).map_err(internal)?;
    module.clear_context(&mut ctx);
    let header = with_abi(header, &prefix, abi);
    let (n_in, n_out) = (ir.inputs.len(), ir.outputs.len());
    let mut fctx = FunctionBuilderContext::new();
    // The hoisted projection, when the plan hoists (see `codegen::projection`).
    let project = if plan.hoists.is_empty() {
        None
    } else {
        let id = module
            .declare_function(
                &format!("{prefix}_project"),
                Linkage::Local,
                &projection::signature(call_conv, plan.hoists.len(), n_in),
            )
            .map_err(internal)?;
        ctx.func = projection::function(
            plan,
            &plan.input_lens,
            call_conv,
            module.target_config(),
            &mut fctx,
        );
        ctx.func.name = cranelift_codegen::ir::UserFuncName::user(0, id.as_u32());
        module.define_function(id, &mut ctx).map_err(internal)?;
        module.clear_context(&mut ctx);
        Some(id)
    };
    // inner(weights, workspace, batch, column, inputs..., outputs...): one
    // step whose projection is at `column` of the projection buffers.
    let mut inner_sig = Signature::new(call_conv);
    inner_sig
        .params
        .extend((0..4 + n_in + n_out).map(|_| AbiParam::new(I64)));
    let inner_id = module
        .declare_function(&format!("{prefix}_inner"), Linkage::Local, &inner_sig)
        .map_err(internal)?;
    ctx.func = cranelift_codegen::ir::Function::with_name_signature(
        cranelift_codegen::ir::UserFuncName::user(0, inner_id.as_u32()),
        inner_sig,
    );
    {
        let mut b = FunctionBuilder::new(&mut ctx.func, &mut fctx);
        let task_refs: Vec<(cranelift_codegen::ir::FuncRef, usize)> = tasks
            .iter()
            .map(|(id, tiles)| (module.declare_func_in_func(*id, b.func), *tiles))
            .collect();
        build_inner(&mut b, plan, &task_refs, n_in, n_out);
        b.seal_all_blocks();
        b.finalize(module.target_config());
    }
    module
        .define_function(inner_id, &mut ctx)
        .map_err(internal)?;
    module.clear_context(&mut ctx);
    // step(weights, workspace, batch, inputs..., outputs...)
    let step_id = begin_export(
        &mut module,
        &mut ctx,
        &format!("{prefix}_step"),
        3 + n_in + n_out,
        call_conv,
    )?;
    {
        let mut b = FunctionBuilder::new(&mut ctx.func, &mut fctx);
        let inner = module.declare_func_in_func(inner_id, b.func);
        let project = project.map(|id| module.declare_func_in_func(id, b.func));
        build_step(&mut b, plan, inner, project, n_in, n_out);
        b.seal_all_blocks();
        b.finalize(module.target_config());
    }
    module
        .define_function(step_id, &mut ctx)
        .map_err(internal)?;
    module.clear_context(&mut ctx);
    // run(weights, workspace, batch, steps, inputs..., outputs...)
    let run_id = begin_export(
        &mut module,
        &mut ctx,
        &format!("{prefix}_run"),
        4 + n_in + n_out,
        call_conv,
    )?;
    {
        let mut b = FunctionBuilder::new(&mut ctx.func, &mut fctx);
        let inner = module.declare_func_in_func(inner_id, b.func);
        let project = project.map(|id| module.declare_func_in_func(id, b.func));
        build_run(&mut b, plan, inner, project, n_in, n_out);
        b.seal_all_blocks();
        b.finalize(module.target_config());
    }
    module.define_function(run_id, &mut ctx).map_err(internal)?;
    module.clear_context(&mut ctx);
    let object = module
        .finish()
        .emit()
        .map_err(|e| Error::internal(format!("cannot write the object: {e}")))?;
    Ok(Aot {
        object,
        header,
        prefix,
    })
}

/// Declares an exported function `name` of `params` 64-bit arguments and makes
/// it `ctx`'s function, empty, to be built.
fn begin_export(
    module: &mut ObjectModule,
    ctx: &mut cranelift_codegen::Context,
    name: &str,
    params: usize,
    call_conv: cranelift_codegen::isa::CallConv,
) -> Result<FuncId> {
    begin_export_returning(module, ctx, name, params, 0, call_conv)
}

/// As [`begin_export`], for a function that returns `returns` 64-bit values.
fn begin_export_returning(
    module: &mut ObjectModule,
    ctx: &mut cranelift_codegen::Context,
    name: &str,
    params: usize,
    returns: usize,
    call_conv: cranelift_codegen::isa::CallConv,
) -> Result<FuncId> {
    let mut sig = Signature::new(call_conv);
    sig.params.extend((0..params).map(|_| AbiParam::new(I64)));
    sig.returns.extend((0..returns).map(|_| AbiParam::new(I64)));
    let id = module
        .declare_function(name, Linkage::Export, &sig)
        .map_err(|e| Error::internal(format!("{e:?}")))?;
    ctx.func = cranelift_codegen::ir::Function::with_name_signature(
        cranelift_codegen::ir::UserFuncName::user(0, id.as_u32()),
        sig,
    );
    Ok(id)
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
    let i = b.declare_var(I64);
    b.def_var(i, zero);
    let head = b.create_block();
    let body_block = b.create_block();
    let exit = b.create_block();
    b.ins().jump(head, &[]);
    b.switch_to_block(head);
    let iv = b.use_var(i);
    let done = b.ins().icmp(IntCC::SignedGreaterThanOrEqual, iv, n);
    b.ins().brif(done, exit, &[], body_block, &[]);
    b.switch_to_block(body_block);
    body(b, iv);
    let iv = b.use_var(i);
    let next = b.ins().iadd_imm_s(iv, 1);
    b.def_var(i, next);
    b.ins().jump(head, &[]);
    b.switch_to_block(exit);
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

fn f32_lit(v: f32) -> String {
    if v.is_nan() {
        "NAN".into()
    } else if v.is_infinite() {
        if v > 0.0 { "INFINITY" } else { "-INFINITY" }.into()
    } else {
        format!("{v:.9e}f")
    }
}

/// The C header: sizes, the entry points, the parameters in packing order, the
/// packed layout, the packing function, the workspace and state helpers.
fn header(ir: &ir::Cell, plan: &Plan, p: &str, triple: &str) -> Result<String> {
    let up = p.to_uppercase();
    check_names(ir, p, &up)?;
    let mut h = String::new();
    let _ = writeln!(
        h,
        "/* Generated by cellc {} for `{}` on {triple}. */",
        env!("CARGO_PKG_VERSION"),
        c_comment_safe(&ir.name)
    );
    let _ = writeln!(
        h,
        "/* Plan: {}. */",
        if plan.hoists.is_empty() {
            "streaming (every step's products read its inputs)".to_string()
        } else {
            format!(
                "hoisted (`{p}_run` computes the input projection of {CHUNK} steps at once, `{p}_step` of one)"
            )
        }
    );
    let _ = writeln!(h, "#ifndef CELLC_{up}_H\n#define CELLC_{up}_H\n");
    h.push_str("#include <stdint.h>\n#include <stddef.h>\n#include <math.h>\n\n#ifdef __cplusplus\nextern \"C\" {\n#endif\n\n");
    for (n, v) in &ir.dims {
        let _ = writeln!(h, "#define {up}_{} {v}", c_name(n));
    }
    for (i, port) in ir.inputs.iter().enumerate() {
        let _ = writeln!(
            h,
            "#define {up}_INPUT_{}_LEN {} /* input {i} */",
            c_name(&port.name).to_uppercase(),
            port.len
        );
    }
    for (i, port) in ir.outputs.iter().enumerate() {
        let _ = writeln!(
            h,
            "#define {up}_OUTPUT_{}_LEN {} /* output {i} */",
            c_name(&port.name).to_uppercase(),
            port.len
        );
    }
    for port in &ir.states {
        let _ = writeln!(
            h,
            "#define {up}_STATE_{}_LEN {}",
            c_name(&port.name).to_uppercase(),
            port.len
        );
    }
    let _ = writeln!(
        h,
        "#define {up}_WEIGHTS_LEN {} /* floats in the packed weights */",
        plan.weights_len.max(1)
    );
    let _ = writeln!(h, "#define {up}_PARAM_COUNT {}\n", ir.params.len());

    // Entry points.
    let ins: Vec<String> = ir
        .inputs
        .iter()
        .map(|x| format!("const float *in_{}", c_name(&x.name)))
        .collect();
    let outs: Vec<String> = ir
        .outputs
        .iter()
        .map(|y| format!("float *out_{}", c_name(&y.name)))
        .collect();
    let ports: Vec<String> = ins.iter().chain(&outs).cloned().collect();
    let sep = if ports.is_empty() { "" } else { ", " };
    h.push_str("/* One step: inputs [batch, len] -> outputs [batch, len]; states stay in the workspace. */\n");
    let _ = writeln!(
        h,
        "void {p}_step(const float *weights, float *workspace, int64_t batch{sep}{});",
        ports.join(", ")
    );
    h.push_str("/* A sequence: inputs [steps, batch, len] -> outputs [steps, batch, len]. */\n");
    let _ = writeln!(h, "void {p}_run(const float *weights, float *workspace, int64_t batch, int64_t steps{sep}{});\n", ports.join(", "));

    // Parameters.
    h.push_str("/* Parameters, in the order of the array NAME_pack takes (each row-major),\n");
    h.push_str(" * and the checkpoint tensor (and its rows or slice) each is read from: the\n");
    h.push_str(" * first of the alternatives a checkpoint has, else the parameter's own name.\n");
    for (k, prm) in ir.params.iter().enumerate() {
        let shape = match prm.ty {
            Type::Matrix(r, c) => format!("[{r}, {c}]"),
            Type::Vector(n) => format!("[{n}]"),
            Type::Scalar => "[1]".into(),
        };
        let from = ir::print::binding_text(prm).unwrap_or_else(|| prm.name.clone());
        let _ = writeln!(
            h,
            " *   {k:3}: {} {shape} <- {}",
            prm.name,
            c_comment_safe(&from)
        );
    }
    h.push_str(" */\n");
    let sizes: Vec<String> = ir
        .params
        .iter()
        .map(|prm| match prm.ty {
            Type::Matrix(r, c) => (r * c).to_string(),
            Type::Vector(n) => n.to_string(),
            Type::Scalar => "1".into(),
        })
        .collect();
    let _ = writeln!(
        h,
        "static const size_t {up}_PARAM_SIZES[{}] = {{{}}};\n",
        ir.params.len().max(1),
        if sizes.is_empty() {
            "0".into()
        } else {
            sizes.join(", ")
        }
    );

    // Packing.
    h.push_str("/* Packs the parameters into the layout the kernels read (once, not per step):\n");
    h.push_str(
        " * a pool of vector constants; parameter vectors read element-wise; then for each\n",
    );
    h.push_str(
        " * product, tile after tile of 4 rows of every gate: the tile's folded biases, then\n",
    );
    h.push_str(" * for each input k = 0..len, 4 rows of column k of each gate's matrix. */\n");
    let _ = writeln!(
        h,
        "static inline void {p}_pack(const float *const *params, float *packed) {{"
    );
    let _ = writeln!(
        h,
        "    for (size_t i = 0; i < {up}_WEIGHTS_LEN; i++) packed[i] = 0.0f;"
    );
    for &(bits, off) in &plan.consts {
        let _ = writeln!(
            h,
            "    for (int l = 0; l < {LANES}; l++) packed[{off} + l] = {};",
            f32_lit(f32::from_bits(bits))
        );
    }
    for v in &plan.vectors {
        let n = match ir.params[v.param.index()].ty {
            Type::Vector(n) => n,
            _ => 0,
        };
        let _ = writeln!(
            h,
            "    for (int i = 0; i < {n}; i++) packed[{} + i] = params[{}][i];",
            v.offset,
            v.param.index()
        );
    }
    for task in &plan.tasks {
        let Task::Product(groups) = task else {
            continue;
        };
        for g in groups {
            let _ = writeln!(h, "    for (int64_t t = 0; t < {}; t++) {{", g.tiles);
            let _ = writeln!(
                h,
                "        float *tile = packed + {} + t * {};",
                g.weights_offset, g.tile_stride
            );
            let _ = writeln!(h, "        for (int l = 0; l < {LANES}; l++) {{");
            let _ = writeln!(
                h,
                "            int64_t row = t * {LANES} + l;\n            if (row >= {}) break;",
                g.len
            );
            for ch in &g.chunks {
                if let Some(bo) = ch.bias_offset {
                    for (c, ps) in ch.bias_params.iter().enumerate() {
                        if ps.is_empty() {
                            continue;
                        }
                        let sum: Vec<String> = ps
                            .iter()
                            .map(|k| format!("(double)params[{}][row]", k.index()))
                            .collect();
                        let _ = writeln!(
                            h,
                            "            tile[{} + l] = (float)({});",
                            bo + c * LANES,
                            sum.join(" + ")
                        );
                    }
                }
                for seg in &ch.segments {
                    let np = seg.weights.len();
                    for (pi, &param) in seg.weights.iter().enumerate() {
                        let cols = match ir.params[param.index()].ty {
                            Type::Matrix(_, c) => c,
                            _ => 1,
                        };
                        let _ = writeln!(
                            h,
                            "            for (int64_t k = 0; k < {}; k++) tile[{} + (k * {np} + {pi}) * {LANES} + l] = params[{}][row * {cols} + k];",
                            seg.k,
                            seg.offset,
                            param.index()
                        );
                    }
                }
            }
            h.push_str("        }\n    }\n");
        }
    }
    // The hoisted projection's matrices, in units of up to GEMM_ROWS rows,
    // each column-major (`plan::unit_major`), and its summed biases.
    for v in &plan.matrices {
        let (rows, cols) = match ir.params[v.param.index()].ty {
            Type::Matrix(r, c) => (r, c),
            _ => (1, 1),
        };
        let _ = writeln!(
            h,
            "    for (int64_t r = 0; r < {rows}; r++) {{\n        int64_t r0 = r / {GEMM_ROWS} * {GEMM_ROWS}, m = {rows} - r0 < {GEMM_ROWS} ? {rows} - r0 : {GEMM_ROWS};\n        for (int64_t k = 0; k < {cols}; k++) packed[{} + r0 * {cols} + k * m + (r - r0)] = params[{}][r * {cols} + k];\n    }}",
            v.offset,
            v.param.index()
        );
    }
    for (offset, ps, len) in &plan.bias_sums {
        let sum: Vec<String> = ps
            .iter()
            .map(|k| format!("(double)params[{}][i]", k.index()))
            .collect();
        let _ = writeln!(
            h,
            "    for (int64_t i = 0; i < {len}; i++) packed[{offset} + i] = (float)({});",
            if sum.is_empty() {
                "0.0".into()
            } else {
                sum.join(" + ")
            }
        );
    }
    h.push_str("}\n\n");

    // Workspace.
    let strides: Vec<String> = plan
        .slots
        .iter()
        .skip(1)
        .map(|s| layout_stride(s).to_string())
        .collect();
    let _ = writeln!(
        h,
        "/* Slot row strides (floats): inputs, each state's current and next value, scratch{}. */",
        if plan.hoists.is_empty() {
            String::new()
        } else {
            format!(", then the input projection ({CHUNK} steps of it)")
        }
    );
    let _ = writeln!(
        h,
        "static const int64_t {up}_SLOT_STRIDES[{}] = {{{}}};",
        strides.len().max(1),
        if strides.is_empty() {
            "0".into()
        } else {
            strides.join(", ")
        }
    );
    let _ = writeln!(
        h,
        "/* Floats of workspace for `batch` rows; zero it before the first step. A\n * workspace is laid out for the batch it was sized for: pass that batch to\n * every call that uses it (another batch reads and writes the wrong rows). */"
    );
    let _ = writeln!(h, "static inline size_t {p}_workspace_len(int64_t batch) {{\n    size_t n = 0;\n    for (int s = 0; s < {}; s++) n += ((size_t)(batch * {up}_SLOT_STRIDES[s]) + 15) & ~(size_t)15;\n    return n;\n}}", strides.len());
    let _ = writeln!(h, "static inline float *{p}_slot(float *workspace, int64_t batch, int slot) {{\n    size_t n = 0;\n    for (int s = 1; s < slot; s++) n += ((size_t)(batch * {up}_SLOT_STRIDES[s - 1]) + 15) & ~(size_t)15;\n    return workspace + n;\n}}");
    for (s, port) in ir.states.iter().enumerate() {
        let cur = plan.state_cur[s];
        let stride = plan.slots[cur].stride;
        let sn = c_name(&port.name);
        let _ = writeln!(
            h,
            "/* State `{}`, [batch, {}] (rows {stride} floats apart in the workspace). */",
            port.name, port.len
        );
        let _ = writeln!(h, "static inline void {p}_set_state_{sn}(float *workspace, int64_t batch, const float *v) {{\n    float *d = {p}_slot(workspace, batch, {cur});\n    for (int64_t b = 0; b < batch; b++) for (int i = 0; i < {}; i++) d[b * {stride} + i] = v[b * {} + i];\n}}", port.len, port.len);
        let _ = writeln!(h, "static inline void {p}_get_state_{sn}(float *workspace, int64_t batch, float *v) {{\n    const float *d = {p}_slot(workspace, batch, {cur});\n    for (int64_t b = 0; b < batch; b++) for (int i = 0; i < {}; i++) v[b * {} + i] = d[b * {stride} + i];\n}}", port.len, port.len);
    }
    h.push_str("\n#ifdef __cplusplus\n}\n#endif\n\n#endif\n");
    Ok(h)
}

/// Every name the header defines, from the cell's names: two that come out
/// the same (inputs `x` and `X` both make `NAME_INPUT_X_LEN`; a size named
/// `WEIGHTS_LEN`) would define one thing twice, so they are refused, naming
/// both.
fn check_names(ir: &ir::Cell, p: &str, up: &str) -> Result<()> {
    let mut names: Vec<(String, String)> = Vec::new();
    for fixed in [
        "WEIGHTS_LEN",
        "PARAM_COUNT",
        "PARAM_SIZES",
        "SLOT_STRIDES",
        "ABI_HASH",
    ] {
        names.push((format!("{up}_{fixed}"), "cellc's own definitions".into()));
    }
    for f in [
        "step",
        "run",
        "pack",
        "workspace_len",
        "slot",
        "abi",
        "check",
    ] {
        names.push((format!("{p}_{f}"), "cellc's own functions".into()));
    }
    for (n, _) in &ir.dims {
        names.push((format!("{up}_{}", c_name(n)), format!("size `{n}`")));
    }
    let ports = [
        ("INPUT", "input", &ir.inputs),
        ("OUTPUT", "output", &ir.outputs),
        ("STATE", "state", &ir.states),
    ];
    for (macro_kind, kind, list) in ports {
        for port in list {
            names.push((
                format!(
                    "{up}_{macro_kind}_{}_LEN",
                    c_name(&port.name).to_uppercase()
                ),
                format!("{kind} `{}`", port.name),
            ));
        }
    }
    for port in &ir.states {
        for f in ["set_state", "get_state"] {
            names.push((
                format!("{p}_{f}_{}", c_name(&port.name)),
                format!("state `{}`", port.name),
            ));
        }
    }
    names.push((format!("CELLC_{up}_H"), "the header's include guard".into()));
    let mut seen: std::collections::HashMap<&str, &str> = std::collections::HashMap::new();
    for (name, from) in &names {
        if let Some(why) = reserved_in_c(name) {
            let rename = if from.contains('`') {
                format!("the cell or {from}")
            } else {
                "the cell".to_string()
            };
            return Err(Error::options(format!(
                "the C header would define `{name}` (for {from}), which {why}; rename {rename}"
            )));
        }
        if let Some(first) = seen.insert(name, from) {
            return Err(Error::options(format!(
                "the C header would define `{name}` twice, for {first} and for {from}; \
                 rename one (C names are made from the cell's names, in upper case for macros)"
            )));
        }
    }
    Ok(())
}

/// The macros of the headers the generated header includes (`<stdint.h>`,
/// `<stddef.h>`, `<math.h>`, with POSIX's constants), and of `<limits.h>`,
/// that a cell's names could spell (`CELL_SIZE`: an upper-case name with an
/// underscore).
const C_STANDARD_NAMES: &[&str] = &[
    "SIZE_MAX",
    "PTRDIFF_MIN",
    "PTRDIFF_MAX",
    "SIG_ATOMIC_MIN",
    "SIG_ATOMIC_MAX",
    "WCHAR_MIN",
    "WCHAR_MAX",
    "WINT_MIN",
    "WINT_MAX",
    "NULL",
    "NAN",
    "INFINITY",
    "HUGE_VAL",
    "HUGE_VALF",
    "HUGE_VALL",
    "MATH_ERRNO",
    "MATH_ERREXCEPT",
    "M_E",
    "M_LOG2E",
    "M_LOG10E",
    "M_LN2",
    "M_LN10",
    "M_PI",
    "M_PI_2",
    "M_PI_4",
    "M_1_PI",
    "M_2_PI",
    "M_2_SQRTPI",
    "M_SQRT2",
    "M_SQRT1_2",
    "DECIMAL_DIG",
    "FLT_EVAL_METHOD",
    "FP_NAN",
    "FP_INFINITE",
    "FP_ZERO",
    "FP_SUBNORMAL",
    "FP_NORMAL",
    "FP_ILOGB0",
    "FP_ILOGBNAN",
    "FP_FAST_FMA",
    "FP_FAST_FMAF",
    "FP_FAST_FMAL",
    // <limits.h>, which programs include beside it.
    "CHAR_BIT",
    "SCHAR_MIN",
    "SCHAR_MAX",
    "UCHAR_MAX",
    "CHAR_MIN",
    "CHAR_MAX",
    "SHRT_MIN",
    "SHRT_MAX",
    "USHRT_MAX",
    "LONG_MIN",
    "LONG_MAX",
    "ULONG_MAX",
    "LLONG_MIN",
    "LLONG_MAX",
    "ULLONG_MAX",
    "MB_LEN_MAX",
];

/// Why `name` may not be defined by a C header, if it may not: reserved for
/// the implementation (a leading underscore; two underscores anywhere, which
/// C++ reserves), or a name the included standard headers define or reserve
/// (`INT8_MAX`, `UINT16_C`, `FP_NAN`, `M_PI`, `SIZE_MAX`, `INT_MAX`).
fn reserved_in_c(name: &str) -> Option<&'static str> {
    if name.starts_with('_') {
        return Some("C reserves (names beginning with an underscore)");
    }
    if name.contains("__") {
        return Some("C++ reserves (names with two underscores in a row)");
    }
    let int_family = (name.starts_with("INT") || name.starts_with("UINT"))
        && (name.ends_with("_MAX") || name.ends_with("_MIN") || name.ends_with("_C"));
    if int_family {
        return Some("<stdint.h> defines or reserves");
    }
    if C_STANDARD_NAMES.contains(&name) {
        return Some("a standard header the generated header includes defines");
    }
    None
}

/// Text that may stand inside a C comment: no `*/` to end it early, no
/// control characters (a tensor name may hold anything).
fn c_comment_safe(text: &str) -> String {
    text.replace("*/", "* /")
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
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
