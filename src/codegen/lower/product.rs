//! The function of a product group: tiles of every block's rows, batch rows
//! a few at a time, each (tile, rows) a micro-kernel of vector accumulators
//! swept over the input segments' `k` (float32, bf16 pairs or int8 pairs
//! with a scale per row), then the blocks stored and the fused epilogue run
//! on the sums.

use cranelift_codegen::ir::condcodes::IntCC;
use cranelift_codegen::ir::types::{F32, F32X4, I32X4, I64};
use cranelift_codegen::ir::{Function, InstBuilder, Value};
use cranelift_codegen::isa::{CallConv, TargetFrontendConfig};
use cranelift_frontend::{FunctionBuilderContext, Variable};

use super::{
    data_flags, region_slots, task_function, weight_flags, Emitter, MAX_ACCUMULATORS, UNROLL,
};
use crate::codegen::plan::{Chunk, Loc, Plan, ProductGroup, Segment, LANES};
use crate::codegen::vecmath;
use crate::ir::Precision;

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

/// A micro-kernel's accumulators, `[k split][block][batch row]`.
type Accumulators = Vec<Vec<Vec<Variable>>>;

/// Where one micro-kernel works: its batch rows, its tile and the tile's
/// weights.
struct At {
    rows: Vec<Value>,
    tile: Value,
    wt: Value,
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
    let at = At { rows, tile, wt };
    for (ci, chunk) in group.chunks.iter().enumerate() {
        let acc = accumulators(e, chunk, &at, k_splits(chunk, split_k));
        for seg in &chunk.segments {
            match seg.precision {
                Precision::F32 => f32_segment(e, seg, &at, &acc),
                Precision::Bf16 => bf16_segment(e, seg, &at, &acc),
                Precision::Int8 => int8_segment(e, seg, &at, &acc),
            }
        }
        finish_chunk(e, group, ci, chunk, &at, &acc);
    }
}

/// How many accumulators split a chunk's `k` sum.
fn k_splits(chunk: &Chunk, split_k: bool) -> usize {
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
    if narrow && split_k && nblk == 1 {
        2
    } else if narrow {
        1
    } else {
        ks
    }
}

/// The chunk's accumulators, the first split of each starting from the
/// step's hoisted projection (which holds the biases) or the biases.
fn accumulators(e: &mut Emitter<'_, '_>, chunk: &Chunk, at: &At, ks: usize) -> Accumulators {
    let zero = {
        let k = e.consts();
        vecmath::splat(&mut e.b, k, 0.0)
    };
    let mut acc: Accumulators = Vec::with_capacity(ks);
    for s in 0..ks {
        let mut per_block = Vec::with_capacity(chunk.blocks.len());
        for blk in 0..chunk.blocks.len() {
            let mut cols = Vec::with_capacity(at.rows.len());
            for &r in &at.rows {
                let init = match (s, chunk.bias_offset, &chunk.init_projection) {
                    (0, _, Some((loc, offsets))) => {
                        let l = Loc {
                            offset: offsets[blk],
                            ..*loc
                        };
                        let a = e.addr(l, r, Some(at.tile));
                        e.b.ins().load(F32X4, data_flags(), a, 0)
                    }
                    (0, Some(bo), None) => e.b.ins().load(
                        F32X4,
                        weight_flags(),
                        at.wt,
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
    acc
}

/// The input rows' addresses of a segment and the segment's weights.
fn segment_bases(e: &mut Emitter<'_, '_>, seg: &Segment, at: &At) -> (Vec<Value>, Value) {
    let xrows: Vec<Value> = (at.rows.iter())
        .map(|&r| e.addr(seg.input, r, None))
        .collect();
    let wseg = e.b.ins().iadd_imm_s(at.wt, (seg.offset * 4) as i64);
    (xrows, wseg)
}

/// Loads x[k] of every row, splatted, for `k` at byte offset `xk` from `xo`.
fn splat_x(e: &mut Emitter<'_, '_>, xrows: &[Value], xo: Value, xk: i32) -> Vec<Value> {
    xrows
        .iter()
        .map(|&xr| {
            let a = e.b.ins().iadd(xr, xo);
            let x = e.b.ins().load(F32, data_flags(), a, xk);
            e.b.ins().splat(F32X4, x)
        })
        .collect()
}

/// A float32 segment: `acc[k % splits][blk][c] += w * x[c]`, every row `c`.
fn f32_segment(e: &mut Emitter<'_, '_>, seg: &Segment, at: &At, acc: &Accumulators) {
    let (xrows, wseg) = segment_bases(e, seg, at);
    let w_bytes = seg.blocks.len() * LANES * 4;
    let units = Sweep {
        units: seg.k,
        unroll: UNROLL,
        x_bytes: 4,
        w_bytes,
    };
    units.emit(e, wseg, |e, xo, xk, wp, wk, k| {
        let xs = splat_x(e, &xrows, xo, xk);
        for (pi, &blk) in seg.blocks.iter().enumerate() {
            let w =
                e.b.ins()
                    .load(F32X4, weight_flags(), wp, wk + (pi * LANES * 4) as i32);
            let split = &acc[k % acc.len()][blk];
            for (c, &x) in xs.iter().enumerate() {
                let a = e.b.use_var(split[c]);
                let r = e.b.ins().fma(w, x, a);
                e.b.def_var(split[c], r);
            }
        }
    });
}

/// A bf16 segment: pairs of `k`, the even one in each word's low half.
fn bf16_segment(e: &mut Emitter<'_, '_>, seg: &Segment, at: &At, acc: &Accumulators) {
    let (xrows, wseg) = segment_bases(e, seg, at);
    let pair = |e: &mut Emitter<'_, '_>, xo, xk, wp, wk: i32, p: usize, both| {
        let xe = splat_x(e, &xrows, xo, xk);
        let xodd = if both {
            splat_x(e, &xrows, xo, xk + 4)
        } else {
            Vec::new()
        };
        for (pi, &blk) in seg.blocks.iter().enumerate() {
            let words =
                e.b.ins()
                    .load(I32X4, weight_flags(), wp, wk + (pi * LANES * 4) as i32);
            let even = e.b.ins().ishl_imm_u(words, 16);
            let even = e.b.ins().bitcast(F32X4, vecmath::lanes_flags(), even);
            let odd = both.then(|| {
                // Loaded at each use, where it folds into the
                // `and` and keeps a register free.
                let k = e.consts();
                let mask = vecmath::splat_bits(&mut e.b, k, vecmath::BF16_HIGH_HALF, I32X4);
                let odd = e.b.ins().band(words, mask);
                e.b.ins().bitcast(F32X4, vecmath::lanes_flags(), odd)
            });
            add_pair(e, &acc[p % acc.len()][blk], even, odd, &xe, &xodd);
        }
    };
    let w_bytes = seg.blocks.len() * LANES * 4;
    sweep_pairs(e, seg.k, w_bytes, wseg, pair);
}

/// An int8 segment: sums from zero, in accumulators of their own, times
/// each row's scale at the end.
fn int8_segment(e: &mut Emitter<'_, '_>, seg: &Segment, at: &At, acc: &Accumulators) {
    let (xrows, wseg) = segment_bases(e, seg, at);
    let np = seg.blocks.len();
    let zero = {
        let k = e.consts();
        vecmath::splat(&mut e.b, k, 0.0)
    };
    let sums: Accumulators = (0..acc.len())
        .map(|_| {
            (0..np)
                .map(|_| at.rows.iter().map(|_| e.var(F32X4, zero)).collect())
                .collect()
        })
        .collect();
    let values = e.b.ins().iadd_imm_s(wseg, (np * LANES * 4) as i64);
    let pair = |e: &mut Emitter<'_, '_>, xo, xk, wp, wk: i32, p: usize, both| {
        let xe = splat_x(e, &xrows, xo, xk);
        let xodd = if both {
            splat_x(e, &xrows, xo, xk + 4)
        } else {
            Vec::new()
        };
        for (pi, sum) in sums[p % sums.len()].iter().enumerate() {
            // LANES bytes of the even k, then LANES of the odd one.
            let bytes =
                e.b.ins()
                    .sload8x8(weight_flags(), wp, wk + (pi * 2 * LANES) as i32);
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
        for c in 0..at.rows.len() {
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

/// The chunk's `k` splits summed, the blocks read elsewhere stored, and
/// the fused epilogue run on the sums (the plan fuses only single-chunk
/// groups).
fn finish_chunk(
    e: &mut Emitter<'_, '_>,
    group: &ProductGroup,
    ci: usize,
    chunk: &Chunk,
    at: &At,
    acc: &Accumulators,
) {
    let nb = at.rows.len();
    let mut totals: Vec<Vec<Value>> = Vec::with_capacity(chunk.blocks.len());
    for blk in 0..chunk.blocks.len() {
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
    for (blk, &gb) in chunk.blocks.iter().enumerate() {
        if let Some(loc) = group.dest[gb] {
            for (c, &r) in at.rows.iter().enumerate() {
                let a = e.addr(loc, r, Some(at.tile));
                e.b.ins().store(data_flags(), totals[blk][c], a, 0);
            }
        }
    }
    if let (Some(ep), 0) = (&group.epilogue, ci) {
        for (c, &r) in at.rows.iter().enumerate() {
            let blocks: Vec<Value> = (0..chunk.blocks.len()).map(|blk| totals[blk][c]).collect();
            e.region_vector(ep, r, at.tile, &blocks);
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
