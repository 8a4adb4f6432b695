//! The hoisted input projection as generated code.
//!
//! A plan that hoists ([`Variant::Hoisted`](super::Variant)) takes every
//! product term that reads a cell input out of the step: for many steps at
//! once, each block's `bias + Σ W @ x_t[b]` is computed into a projection
//! buffer ([`Plan::hoists`]), and each step's products start from it. The JIT
//! computes that projection with `kernels::gemm` (`jit::exec`); an object
//! file (`crate::aot`) carries no runtime, so this module generates it: one
//! function over `cols` columns (a column is one batch row of one step).
//!
//! The matrices are packed by [`unit_major`](super::plan::unit_major): units
//! of [`MR`] rows, each column-major (the last padded), so that `LANES` rows of
//! one column are one vector load. The kernel keeps [`GROUP`] vectors of rows
//! for two columns in registers (8 accumulators, 2 broadcast inputs, one
//! weight vector: 11 of the 16 registers x86-64 has without AVX-512's), and
//! shares each weight load between the two columns; the rows past a unit's
//! last whole vector run one lane at a time, so that no load or store
//! touches a float of another unit or block.
//!
//! The sum runs in a fixed order (bias, then each term's `k` in order), the
//! same for every column: the result does not depend on how the columns are
//! split.

use cranelift_codegen::ir::condcodes::IntCC;
use cranelift_codegen::ir::types::{F32, F32X4, I64};
use cranelift_codegen::ir::{AbiParam, Function, InstBuilder, MemFlagsData, Signature, Value};
use cranelift_codegen::isa::{CallConv, TargetFrontendConfig};
use cranelift_frontend::{FunctionBuilder, FunctionBuilderContext};

use super::plan::{HoistBlock, Plan, LANES};
use crate::kernels::gemm::MR;

/// Vectors of rows one pass of the kernel keeps per column.
const GROUP: usize = 4;

/// `project(weights, dst_0, ..., dst_{H-1}, cols, x_0, ..., x_{I-1})`: one
/// destination per hoist of the plan (its buffer: column `c` at `c *
/// stride` floats), then the number of columns, then one pointer per cell
/// input (column `c` at `c * len` floats: the caller's `[steps, batch,
/// len]`).
pub fn signature(call_conv: CallConv, hoists: usize, inputs: usize) -> Signature {
    let mut sig = Signature::new(call_conv);
    for _ in 0..hoists + 2 + inputs {
        sig.params.push(AbiParam::new(I64));
    }
    sig
}

fn flags() -> MemFlagsData {
    MemFlagsData::trusted()
}

/// The projection function of `plan` (see [`signature`]); `input_lens` are
/// the cell inputs' lengths.
pub fn function(
    plan: &Plan,
    input_lens: &[usize],
    call_conv: CallConv,
    config: TargetFrontendConfig,
    fctx: &mut FunctionBuilderContext,
) -> Function {
    let sig = signature(call_conv, plan.hoists.len(), input_lens.len());
    let mut func = Function::with_name_signature(Default::default(), sig);
    let mut b = FunctionBuilder::new(&mut func, fctx);
    let entry = b.create_block();
    b.append_block_params_for_function_params(entry);
    b.switch_to_block(entry);
    let p = b.block_params(entry).to_vec();
    let h = plan.hoists.len();
    let args = Args {
        weights: p[0],
        dsts: p[1..1 + h].to_vec(),
        cols: p[1 + h],
        xs: p[2 + h..].to_vec(),
        input_lens: input_lens.to_vec(),
    };
    for (hi, hoist) in plan.hoists.iter().enumerate() {
        for blk in &hoist.blocks {
            let mut r0 = 0;
            while r0 < blk.len {
                let m = MR.min(blk.len - r0);
                let unit = Unit {
                    dst: args.dsts[hi],
                    stride: hoist.stride,
                    blk,
                    r0,
                };
                let whole = m / LANES;
                let mut g = 0;
                while g < whole {
                    let n = GROUP.min(whole - g);
                    // Two columns at a time, then the odd one.
                    let pairs = b.ins().ushr_imm_u(args.cols, 1);
                    counted(&mut b, pairs, &mut |b, i| {
                        let c = b.ins().ishl_imm_u(i, 1);
                        vectors(b, &args, &unit, g, n, c, 2);
                    });
                    let odd = b.ins().band_imm_u(args.cols, 1);
                    let last = b.ins().isub(args.cols, odd);
                    counted_from(&mut b, last, args.cols, &mut |b, c| {
                        vectors(b, &args, &unit, g, n, c, 1);
                    });
                    g += n;
                }
                for r in whole * LANES..m {
                    counted(&mut b, args.cols, &mut |b, c| lane(b, &args, &unit, r, c));
                }
                r0 += m;
            }
        }
    }
    b.ins().return_(&[]);
    b.seal_all_blocks();
    b.finalize(config);
    func
}

struct Args {
    weights: Value,
    dsts: Vec<Value>,
    cols: Value,
    xs: Vec<Value>,
    input_lens: Vec<usize>,
}

/// The unit of rows from `r0` (up to [`MR`]) of block `blk`, written into
/// buffer `dst`.
struct Unit<'a> {
    dst: Value,
    stride: usize,
    blk: &'a HoistBlock,
    r0: usize,
}

/// Vectors `g .. g + n` of the unit's rows, for columns `c .. c + nc`.
fn vectors(
    b: &mut FunctionBuilder<'_>,
    a: &Args,
    u: &Unit<'_>,
    g: usize,
    n: usize,
    c: Value,
    nc: usize,
) {
    let mut acc: Vec<Vec<Value>> = Vec::with_capacity(nc);
    for _ in 0..nc {
        let row: Vec<Value> = (0..n)
            .map(|v| match u.blk.bias {
                Some(bias) => {
                    let at = b
                        .ins()
                        .iadd_imm_s(a.weights, 4 * (bias + u.r0 + (g + v) * LANES) as i64);
                    b.ins().load(F32X4, flags(), at, 0)
                }
                None => {
                    let zero = b.ins().f32const(0.0);
                    b.ins().splat(F32X4, zero)
                }
            })
            .collect();
        acc.push(row);
    }
    for &(input, k, matrix) in &u.blk.terms {
        let len = a.input_lens[input.index()];
        let x0 = column(b, a.xs[input.index()], c, len);
        // The unit's matrix: column `kk` of its rows at `kk * MR`.
        let w0 = b
            .ins()
            .iadd_imm_s(a.weights, 4 * (matrix + u.r0 * k + g * LANES) as i64);
        let kv = b.ins().iconst(I64, k as i64);
        let vars: Vec<Vec<_>> = acc
            .iter()
            .map(|row| {
                row.iter()
                    .map(|&v| {
                        let var = b.declare_var(F32X4);
                        b.def_var(var, v);
                        var
                    })
                    .collect()
            })
            .collect();
        counted(b, kv, &mut |b, kk| {
            let wo = b.ins().imul_imm_s(kk, 4 * MR as i64);
            let w = b.ins().iadd(w0, wo);
            let xo = b.ins().imul_imm_s(kk, 4);
            let xs: Vec<Value> = (0..nc)
                .map(|ci| {
                    let xa = b.ins().iadd(x0, xo);
                    let x = b.ins().load(F32, flags(), xa, 4 * (ci * len) as i32);
                    b.ins().splat(F32X4, x)
                })
                .collect();
            for v in 0..n {
                let wv = b.ins().load(F32X4, flags(), w, 4 * (v * LANES) as i32);
                for (column, &x) in vars.iter().zip(&xs) {
                    let s = b.use_var(column[v]);
                    let s = b.ins().fma(wv, x, s);
                    b.def_var(column[v], s);
                }
            }
        });
        for (ci, row) in acc.iter_mut().enumerate() {
            for (v, slot) in row.iter_mut().enumerate() {
                *slot = b.use_var(vars[ci][v]);
            }
        }
    }
    let d0 = column(b, u.dst, c, u.stride);
    let d0 = b
        .ins()
        .iadd_imm_s(d0, 4 * (u.blk.offset + u.r0 + g * LANES) as i64);
    for (ci, row) in acc.iter().enumerate() {
        for (v, &s) in row.iter().enumerate() {
            b.ins()
                .store(flags(), s, d0, 4 * (ci * u.stride + v * LANES) as i32);
        }
    }
}

/// Row `r` of the unit (one lane), for column `c`.
fn lane(b: &mut FunctionBuilder<'_>, a: &Args, u: &Unit<'_>, r: usize, c: Value) {
    let mut s = match u.blk.bias {
        Some(bias) => {
            let at = b.ins().iadd_imm_s(a.weights, 4 * (bias + u.r0 + r) as i64);
            b.ins().load(F32, flags(), at, 0)
        }
        None => b.ins().f32const(0.0),
    };
    for &(input, k, matrix) in &u.blk.terms {
        let len = a.input_lens[input.index()];
        let x0 = column(b, a.xs[input.index()], c, len);
        let w0 = b
            .ins()
            .iadd_imm_s(a.weights, 4 * (matrix + u.r0 * k + r) as i64);
        let var = b.declare_var(F32);
        b.def_var(var, s);
        let kv = b.ins().iconst(I64, k as i64);
        counted(b, kv, &mut |b, kk| {
            let wo = b.ins().imul_imm_s(kk, 4 * MR as i64);
            let w = b.ins().iadd(w0, wo);
            let wv = b.ins().load(F32, flags(), w, 0);
            let xo = b.ins().imul_imm_s(kk, 4);
            let xa = b.ins().iadd(x0, xo);
            let x = b.ins().load(F32, flags(), xa, 0);
            let acc = b.use_var(var);
            let acc = b.ins().fma(wv, x, acc);
            b.def_var(var, acc);
        });
        s = b.use_var(var);
    }
    let d0 = column(b, u.dst, c, u.stride);
    let at = b.ins().iadd_imm_s(d0, 4 * (u.blk.offset + u.r0 + r) as i64);
    b.ins().store(flags(), s, at, 0);
}

/// The address of column `c` of a buffer whose columns are `len` floats apart.
fn column(b: &mut FunctionBuilder<'_>, base: Value, c: Value, len: usize) -> Value {
    let off = b.ins().imul_imm_s(c, 4 * len as i64);
    b.ins().iadd(base, off)
}

/// `for i in 0..n { body(i) }`.
fn counted(
    b: &mut FunctionBuilder<'_>,
    n: Value,
    body: &mut dyn FnMut(&mut FunctionBuilder<'_>, Value),
) {
    let zero = b.ins().iconst(I64, 0);
    counted_from(b, zero, n, body);
}

/// `for i in from..to { body(i) }` (an i64 counter; also the AOT entry
/// points' loops).
pub(crate) fn counted_from(
    b: &mut FunctionBuilder<'_>,
    from: Value,
    to: Value,
    body: &mut dyn FnMut(&mut FunctionBuilder<'_>, Value),
) {
    let i = b.declare_var(I64);
    b.def_var(i, from);
    let head = b.create_block();
    let body_block = b.create_block();
    let exit = b.create_block();
    b.ins().jump(head, &[]);
    b.switch_to_block(head);
    let iv = b.use_var(i);
    let done = b.ins().icmp(IntCC::SignedGreaterThanOrEqual, iv, to);
    b.ins().brif(done, exit, &[], body_block, &[]);
    b.switch_to_block(body_block);
    body(b, iv);
    let iv = b.use_var(i);
    let next = b.ins().iadd_imm_s(iv, 1);
    b.def_var(i, next);
    b.ins().jump(head, &[]);
    b.switch_to_block(exit);
}
