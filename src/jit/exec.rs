//! Running a plan: the steps of a sequence as one pool job, the hoisted input
//! projection, and the `gemm` products.
//!
//! Generated code reads the base pointer of every slot from a [`SlotTable`];
//! workers share the table, the caller's inputs and the output buffers
//! ([`Outputs`]) and write disjoint parts of them (their own tiles, rows or
//! elements), meeting at the pool's barrier between phases. Every length was
//! checked against the plan before this module runs, and the plan itself was
//! verified (`codegen::plan::verify`): the accesses here stay inside the
//! buffers the plan sized.

use super::code::Compiled;
use super::pool::{self, share};
use super::slots::{Inline, SlotTable};
use super::state::State;
use super::{Build, Epilogue, Kernel, Work, MAX_SLOTS};
use crate::codegen::plan::{self, GemmBlock, GemmInit, SlotKind, Task, Update};
use crate::codegen::Variant;
use crate::ir::Precision;
use crate::kernels::gemm::Blocked;
use crate::kernels::panel;
use crate::kernels::Isa;

/// Which way a step sweeps through the weights of its products: forward on
/// even steps, backward on odd ones (counted over the state's life), so that
/// each step starts on the weights the step before read last. Weights larger
/// than a core's L2 read in the same order every step miss on every line
/// (the lines needed next are always the ones evicted longest ago); swept
/// back and forth, about an L2's worth of them is still there when the next
/// step comes (measured: LSTM X = 8, H = 512, batch 1, 2 threads, 2 MiB of
/// recurrent weights per core, 44-47 -> 33-37 µs per step). The units of
/// work and each unit's arithmetic stay the same: the results are the same
/// bits either way.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(super) enum Sweep {
    Forward,
    Backward,
}

impl Sweep {
    /// The sweep of the state's step `step`.
    pub(super) fn of_step(step: u64) -> Sweep {
        if step.is_multiple_of(2) {
            Sweep::Forward
        } else {
            Sweep::Backward
        }
    }

    /// The `i`-th of `n` items in this sweep's order.
    fn nth(self, i: usize, n: usize) -> usize {
        match self {
            Sweep::Forward => i,
            Sweep::Backward => n - 1 - i,
        }
    }
}

/// Pieces a generated function's tiles are cut into when swept backward
/// (its code runs its tiles forward; the pieces run last to first). Only for
/// weights that do not fit a core's L2 comfortably ([`Build::sweep_pieces`]):
/// a call costs a few tens of nanoseconds.
pub(super) const SWEEP_PIECES: usize = 8;

/// Worker `w` of `n`'s share of one unit of a phase's work.
///
/// # Safety
/// `table` holds the plan's slots, sized for `batch` rows (a verified plan),
/// inputs in place only when their rows are `stride` floats; no other worker
/// touches this worker's tiles, rows or units until a barrier.
#[inline]
#[allow(clippy::too_many_arguments)]
unsafe fn run_work(
    build: &Build,
    work: Work,
    table: &SlotTable,
    batch: usize,
    w: usize,
    n: usize,
    sweep: Sweep,
) {
    let plan = &build.plan;
    match work {
        // SAFETY: the table holds the plan's slots (the
        // state's buffers sized for `batch` rows, inputs
        // in place only when their rows are `stride`
        // floats); workers own disjoint tiles.
        Work::Jit(f) => unsafe {
            let pieces = if sweep == Sweep::Backward {
                build.sweep_pieces
            } else {
                1
            };
            run_tiles(f, table, batch, w, n, pieces)
        },
        Work::Wide(i) => {
            let program = &build.wide[i];
            let (a, b) = share(program.tiles(), w, n);
            if a < b {
                // SAFETY: as for `Work::Jit`; the build checked
                // that the host has `isa`, a wide one.
                unsafe { program.run(build.isa, table.ptrs.as_ptr(), 0, batch, a, b) };
            }
        }
        Work::GemmThen(task, epilogue) => {
            let Task::Gemm(blocks) = &plan.tasks[task] else {
                unreachable!("GemmThen names task {task}, not a product")
            };
            let units = plan::block_units(blocks, batch, n);
            let (a, b) = share(units.len(), w, n);
            let mine = &units[a..b];
            if mine.is_empty() {
                return;
            }
            // SAFETY: as for `Work::Gemm`.
            unsafe { Int8Inputs::of(build, blocks, table, batch) };
            for i in 0..mine.len() {
                let (r0, r1) = mine[sweep.nth(i, mine.len())];
                for j in 0..blocks.len() {
                    let blk = &blocks[sweep.nth(j, blocks.len())];
                    // SAFETY: as for `Work::Gemm`; rows `r0..r1`
                    // of every block are this worker's own.
                    unsafe { gemm_rows(build, blk, r0, r1, table, batch) };
                }
                // The region's lanes `r0..r1` read only those rows
                // (`plan::epilogue_by_rows`); `r0` is a multiple of
                // the tile.
                let (t0, t1) = (r0 / plan::LANES, r1.div_ceil(plan::LANES));
                match epilogue {
                    // SAFETY: as for `Work::Wide`; tiles `t0..t1`
                    // are this worker's own.
                    Epilogue::Wide(i) => unsafe {
                        build.wide[i].run(build.isa, table.ptrs.as_ptr(), 0, batch, t0, t1)
                    },
                    // SAFETY: as for `Work::Jit`; tiles `t0..t1`
                    // are this worker's own.
                    Epilogue::Jit(f) => unsafe {
                        (f.ptr)(table.ptrs.as_ptr(), 0, batch as i64, t0 as i64, t1 as i64)
                    },
                }
            }
        }
        Work::Spectra(task) => {
            let Task::Spectra(transforms) = &plan.tasks[task] else {
                unreachable!("Spectra names task {task}, not transforms")
            };
            // Units: one batch row of one transform.
            let (a, b) = share(transforms.len() * batch, w, n);
            for u in a..b {
                // SAFETY: as for `Work::Gemm`; this unit's row of the
                // transform's destination is this worker's own.
                unsafe { transform_row(build.isa, &transforms[u / batch], u % batch, table) };
            }
        }
        Work::Gemm(task, units) => {
            let (a, b) = share(units, w, n);
            if let Task::Gemm(blocks) = &plan.tasks[task] {
                if a >= b {
                    return;
                }
                // SAFETY: the table holds the plan's slots, sized for
                // `batch` rows (verified plan), the terms' inputs
                // complete (a barrier before this phase).
                unsafe { Int8Inputs::of(build, blocks, table, batch) };
                // SAFETY: the table holds the plan's slots, sized
                // for `batch` rows (verified plan); units `a..b`
                // are this worker's own rows.
                unsafe { gemm_units(build, blocks, a, b, table, batch, sweep) };
            }
        }
    }
}

/// Copies the states whose next value is another value (`h' = y`), worker 0
/// alone.
///
/// # Safety
/// The table holds the plan's slots, sized for `batch` rows; no other thread
/// reads the states' next buffers until a barrier.
unsafe fn copy_updates(
    plan: &plan::Plan,
    table: &SlotTable,
    weights: &[f32],
    rows: std::ops::Range<usize>,
) {
    for (s, u) in plan.updates.iter().enumerate() {
        let Update::Copy(from) = *u else { continue };
        let to = table.ptrs[plan.state_next[s]];
        let to_stride = plan.slots[plan.state_next[s]].stride;
        for b in rows.clone() {
            let src = if from.slot == 0 {
                weights[from.offset..].as_ptr()
            } else {
                table.ptrs[from.slot]
                    .wrapping_add(from.offset + b * from.stride)
                    .cast_const()
            };
            // SAFETY: both locations are `from.len` floats inside buffers the
            // plan sized (the caller's contract).
            unsafe { std::ptr::copy(src, to.add(b * to_stride), from.len) };
        }
    }
}

/// Worker `w` of `n` copies its elements of step `t`'s outputs into the
/// caller's buffers.
///
/// # Safety
/// Each output buffer is `[T, batch, len]`, the table holds the plan's
/// complete slots, and each worker writes only its own elements of each row.
#[allow(clippy::too_many_arguments)]
unsafe fn copy_outputs(
    plan: &plan::Plan,
    outs: &Outputs,
    table: &SlotTable,
    weights: &[f32],
    t: usize,
    batch: usize,
    rows: std::ops::Range<usize>,
    w: usize,
    n: usize,
) {
    for (o, &(out, out_len)) in outs.bufs.iter().enumerate() {
        let loc = plan.outputs[o];
        let len = loc.len;
        let (a, b_end) = share(len, w, n);
        if a >= b_end {
            continue;
        }
        for b in rows.clone() {
            let src = if loc.slot == 0 {
                weights[loc.offset + a..].as_ptr()
            } else {
                table.ptrs[loc.slot]
                    .wrapping_add(loc.offset + b * loc.stride + a)
                    .cast_const()
            };
            let at = (t * batch + b) * len + a;
            debug_assert!(at + (b_end - a) <= out_len);
            // SAFETY: the caller's contract: elements `a..b_end` of row `b` of
            // step `t` are inside the buffer and this worker's own.
            unsafe { std::ptr::copy_nonoverlapping(src, out.add(at), b_end - a) };
        }
    }
}

/// Which step of the caller's `[T, batch, len]` buffers step `t` of a run
/// reads and writes: `t`, or `T - 1 - t` for a sequence run from its last
/// step to its first (a backward pass over a forward pass's tape, without
/// copying it reversed).
#[derive(Clone, Copy, Debug)]
pub(super) struct Time {
    /// `Some(T)` when reversed.
    pub reversed: Option<usize>,
}

impl Time {
    pub const FORWARD: Time = Time { reversed: None };

    fn at(self, t: usize) -> usize {
        match self.reversed {
            Some(steps) => steps - 1 - t,
            None => t,
        }
    }
}

/// The caller's output buffers of a `run`, `[T, batch, len]` each.
struct Outputs {
    bufs: Inline<(*mut f32, usize)>,
}

// SAFETY: the buffers are the caller's `&mut [f32]`, borrowed for the whole
// call; each worker writes only its own elements of each row (`share`).
unsafe impl Sync for Outputs {}

/// A buffer's base pointer, shared by the workers of one job.
#[derive(Clone, Copy)]
struct SharedPtr(*mut f32);

// SAFETY: the buffer is the caller's (held mutably for the whole call); each
// worker writes only its own rows of it.
unsafe impl Sync for SharedPtr {}

impl SharedPtr {
    /// The address `i` floats in (dereferenced only where the buffer has them).
    fn at(self, i: usize) -> *mut f32 {
        self.0.wrapping_add(i)
    }
}

/// A job for the pool: `job(worker, workers, barrier)`.
pub(super) type PoolJob<'a> = dyn Fn(usize, usize, &dyn Fn()) + Sync + 'a;

impl Kernel {
    /// Runs the pool job `job(worker, workers, barrier)` on `threads` workers
    /// (a free shared pool of that size, `pool::run_shared`), or alone when
    /// one thread is asked for or every pool is busy or backing off.
    pub(super) fn on_workers(&self, threads: usize, job: &PoolJob) {
        if threads > 1
            && pool::run_shared(threads, &|w, team| job(w, team.workers, &|| team.barrier()))
        {
            return;
        }
        job(0, 1, &|| {});
    }

    /// Runs steps `t0..t1` of a sequence (`inputs[i]` holds step `t` at
    /// `time.at(t) * batch * len`), writing each step's outputs to `outputs`
    /// (same layout) if given; the hoisted projections hold the steps from
    /// `chunk0` of the buffers on (`Kernel::project`). One pool job runs all of them: every worker keeps its
    /// own slot table, the states' current and next buffers alternate with the
    /// step's parity (no serial swap), inputs are read in place when their rows
    /// need no padding, and each worker copies its share of the outputs;
    /// workers meet once per phase of the plan (plus once more where a serial
    /// copy needs it). The caller checked every length.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn execute(
        &self,
        build: &Build,
        v: Variant,
        state: &mut State,
        inputs: &[&[f32]],
        t0: usize,
        t1: usize,
        chunk0: usize,
        time: Time,
        outputs: Option<&mut [&mut [f32]]>,
        threads: usize,
        apart: bool,
    ) {
        let plan = &build.plan;
        let batch = state.batch;
        // Slot tables for both parities (on the stack: a step allocates nothing).
        let even = state.slot_table(build, v);
        let mut odd = even.clone();
        for s in 0..plan.state_cur.len() {
            odd.ptrs.swap(plan.state_cur[s], plan.state_next[s]);
        }
        let tables = [even, odd];
        let in_place = plan
            .input_slots
            .iter()
            .enumerate()
            .all(|(i, &slot)| plan.slots[slot].stride == self.input_lens[i]);
        let copies = plan.updates.iter().any(|u| matches!(u, Update::Copy(_)));
        // An output that the next step may overwrite while a worker still copies
        // it needs one more meeting: anything but a state's next value (which
        // the next step only reads) and a parameter. A state's old value is the
        // buffer the next step writes its new value into; a scratch value is
        // rewritten; an input buffer is refilled.
        let out_barrier = plan
            .outputs
            .iter()
            .any(|l| !plan.state_next.contains(&l.slot) && l.slot != 0);
        let mut outs = Outputs {
            bufs: Inline::new(),
        };
        if let Some(o) = outputs {
            for b in o.iter_mut().take(MAX_SLOTS) {
                outs.bufs.push((b.as_mut_ptr(), b.len()));
            }
        }
        let outs = &outs;
        let mut proj_buf = [(0usize, 0usize); MAX_SLOTS];
        let mut nproj = 0;
        for (i, s) in plan.slots.iter().enumerate() {
            if matches!(s.kind, SlotKind::Projection(_)) {
                proj_buf[nproj] = (i, s.stride);
                nproj += 1;
            }
        }
        let proj = &proj_buf[..nproj];
        let weights = build.weights.as_slice();
        // The state's count of steps before these (each step's `Sweep`).
        let steps0 = state.steps;
        // Batch rows apart: each worker runs every step of its own rows, all
        // of each phase's work for them, and never waits for the others
        // (rows of a batch do not read each other).
        let apart = apart && threads > 1;
        let job = |w: usize, n: usize, barrier: &dyn Fn()| {
            if apart {
                // SAFETY: as below; this worker's rows are its own.
                unsafe {
                    self.rows_apart(
                        build,
                        &tables,
                        inputs,
                        proj,
                        in_place,
                        copies,
                        outs,
                        (t0, t1, chunk0),
                        steps0,
                        time,
                        batch,
                        w,
                        n,
                    )
                };
                return;
            }
            for t in t0..t1 {
                let mut table = tables[(t - t0) % 2].clone();
                let sweep = Sweep::of_step(steps0 + (t - t0) as u64);
                // Where step `t` is in the caller's buffers.
                let at_t = time.at(t);
                for &(slot, stride) in proj {
                    table.ptrs[slot] =
                        table.ptrs[slot].wrapping_add((at_t - chunk0) * batch * stride);
                }
                if in_place {
                    for (i, &slot) in plan.input_slots.iter().enumerate() {
                        let at = at_t * batch * self.input_lens[i];
                        table.ptrs[slot] = inputs[i][at..].as_ptr().cast_mut();
                    }
                } else {
                    if w == 0 {
                        // SAFETY: the table holds the plan's slots, sized for
                        // `batch` rows; only worker 0 writes, before the barrier.
                        unsafe { self.copy_inputs(plan, &table, inputs, at_t, batch, 0..batch) };
                    }
                    barrier();
                }
                for (p, phase) in build.phases.iter().enumerate() {
                    if p > 0 {
                        barrier();
                    }
                    for work in phase {
                        // SAFETY: the table holds the plan's slots (the state's
                        // buffers sized for `batch` rows, inputs in place only
                        // when their rows are `stride` floats); worker `w` of
                        // `n` does only its own share.
                        unsafe { run_work(build, *work, &table, batch, w, n, sweep) };
                    }
                }
                // After the last step, with nothing to copy, the end of the pool
                // job is the next meeting: one fewer per `step` call.
                if t + 1 < t1 || copies || !outs.bufs.is_empty() {
                    barrier();
                }
                if copies {
                    if w == 0 {
                        // SAFETY: only worker 0 writes; the barrier below orders
                        // it before the next step.
                        unsafe { copy_updates(plan, &table, weights, 0..batch) };
                    }
                    barrier();
                }
                // SAFETY: the output buffers are `[T, batch, len]` (checked by
                // `run_with`); the sources are complete (barrier above).
                unsafe { copy_outputs(plan, outs, &table, weights, at_t, batch, 0..batch, w, n) };
                if out_barrier && !outs.bufs.is_empty() {
                    barrier();
                }
            }
        };
        self.on_workers(threads, &job);
        self.after_steps(plan, state, inputs, in_place, t1 - t0, time.at(t1 - 1));
        state.last = v;
        state.steps += (t1 - t0) as u64;
    }

    /// Worker `w` of `n` runs steps `t0..t1` of its share of the batch rows
    /// alone: a slot table of its rows (every slot's rows from its first),
    /// every phase's whole work on them, its rows' inputs, updates and
    /// outputs copied by itself; no barrier.
    ///
    /// # Safety
    /// As [`Kernel::execute`]'s workers: the tables hold the plan's slots for
    /// the state's batch, the projections hold steps from `chunk0`; no other
    /// worker touches these rows.
    #[allow(clippy::too_many_arguments)]
    unsafe fn rows_apart(
        &self,
        build: &Build,
        tables: &[SlotTable; 2],
        inputs: &[&[f32]],
        proj: &[(usize, usize)],
        in_place: bool,
        copies: bool,
        outs: &Outputs,
        (t0, t1, chunk0): (usize, usize, usize),
        steps0: u64,
        time: Time,
        batch: usize,
        w: usize,
        n: usize,
    ) {
        let plan = &build.plan;
        let workers = apart_workers(batch, n);
        if w >= workers {
            return;
        }
        let (r0, r1) = share(batch, w, workers);
        if r0 >= r1 {
            return;
        }
        let weights = build.weights.as_slice();
        for t in t0..t1 {
            let mut table = tables[(t - t0) % 2].clone();
            let sweep = Sweep::of_step(steps0 + (t - t0) as u64);
            let at_t = time.at(t);
            for &(slot, stride) in proj {
                table.ptrs[slot] = table.ptrs[slot].wrapping_add((at_t - chunk0) * batch * stride);
            }
            if in_place {
                for (i, &slot) in plan.input_slots.iter().enumerate() {
                    let at = at_t * batch * self.input_lens[i];
                    table.ptrs[slot] = inputs[i][at..].as_ptr().cast_mut();
                }
            } else {
                // SAFETY: this worker's rows of the input slots.
                unsafe { self.copy_inputs(plan, &table, inputs, at_t, batch, r0..r1) };
            }
            // This worker's rows: every slot's pointer moved to row `r0`
            // (the weights, slot 0, have no rows).
            let mut mine = table.clone();
            for (s, slot) in plan.slots.iter().enumerate().skip(1) {
                mine.ptrs[s] = mine.ptrs[s].wrapping_add(r0 * slot.stride);
            }
            for phase in &build.phases {
                for work in phase {
                    // SAFETY: the table of this worker's rows, `r1 - r0`
                    // of them, inside the state's buffers.
                    unsafe { run_work(build, *work, &mine, r1 - r0, 0, 1, sweep) };
                }
            }
            if copies {
                // SAFETY: this worker's rows.
                unsafe { copy_updates(plan, &table, weights, r0..r1) };
            }
            // SAFETY: this worker's rows of the outputs, complete.
            unsafe { copy_outputs(plan, outs, &table, weights, at_t, batch, r0..r1, 0, 1) };
        }
    }

    /// A state after `count` steps, the last at step `last` of the caller's
    /// buffers: its buffers swapped once per step, the outputs' locations
    /// after the swap, and an output that is an input read in place kept in
    /// the state's own buffer.
    fn after_steps(
        &self,
        plan: &plan::Plan,
        state: &mut State,
        inputs: &[&[f32]],
        in_place: bool,
        count: usize,
        last: usize,
    ) {
        let batch = state.batch;
        // The states' buffers: swapped once per step.
        if count % 2 == 1 {
            for s in 0..plan.state_cur.len() {
                state.offsets.swap(plan.state_cur[s], plan.state_next[s]);
            }
        }
        // After the swap a state's new value is in its current buffer and its
        // old value (which an output may be: `y = h`) in its next buffer, until
        // the next step.
        for (o, loc) in plan.outputs.iter().enumerate() {
            let mut l = *loc;
            if let Some(s) = plan.state_next.iter().position(|&n| n == l.slot) {
                l.slot = plan.state_cur[s];
            } else if let Some(s) = plan.state_cur.iter().position(|&c| c == l.slot) {
                l.slot = plan.state_next[s];
            }
            state.outputs[o] = l;
        }
        // An output that is an input (`y = x`) read in place from the caller's
        // buffer: keep the last step's value in the state's own input buffer,
        // where `output` reads it.
        if in_place {
            for (i, &slot) in plan.input_slots.iter().enumerate() {
                if plan.outputs.iter().any(|l| l.slot == slot) {
                    let n = batch * self.input_lens[i];
                    state.write_rows(
                        slot,
                        self.input_lens[i],
                        &inputs[i][last * n..(last + 1) * n],
                    );
                }
            }
        }
    }

    /// Copies step `t`'s inputs into their slots (rows padded to the slot's
    /// stride).
    ///
    /// # Safety
    /// `table` holds the plan's slots, each input slot `batch` rows of
    /// `stride >= len` floats, and no other thread reads them until a barrier.
    unsafe fn copy_inputs(
        &self,
        plan: &plan::Plan,
        table: &SlotTable,
        inputs: &[&[f32]],
        t: usize,
        batch: usize,
        rows: std::ops::Range<usize>,
    ) {
        for (i, &slot) in plan.input_slots.iter().enumerate() {
            let len = self.input_lens[i];
            let stride = plan.slots[slot].stride;
            for b in rows.clone() {
                let src = &inputs[i][(t * batch + b) * len..(t * batch + b + 1) * len];
                // SAFETY: the caller's contract: the slot holds row `b` of
                // `stride >= len` floats.
                unsafe {
                    std::ptr::copy_nonoverlapping(
                        src.as_ptr(),
                        table.ptrs[slot].add(b * stride),
                        len,
                    )
                };
            }
        }
    }

    /// Computes the hoisted input projections of steps `t0..t1` on the pool:
    /// for every projection block, `bias + sum of W @ x_t[b]`, one blocked
    /// product (`kernels::gemm`) per term over all the chunk's columns. The
    /// products' jobs (blocks of columns, all of a block's terms each) go
    /// to whichever worker asks next: each element is the same chain of
    /// fused multiply-adds whoever computes it. The caller checked the
    /// inputs' lengths and made the plan's buffers (`State::ensure_side`).
    #[allow(clippy::too_many_arguments)]
    pub(super) fn project(
        &self,
        build: &Build,
        v: Variant,
        inputs: &[&[f32]],
        t0: usize,
        t1: usize,
        state: &mut State,
        threads: usize,
    ) {
        use crate::kernels::gemm::{From, Gemm, Left, Right};
        let batch = state.batch;
        let cols = (t1 - t0) * batch;
        let Some((base, offsets)) = state.side_buffer(v) else {
            return;
        };
        let base = SharedPtr(base);
        let weights = build.weights.as_slice().as_ptr();
        // One product per block and term; a job runs one job of each of
        // its block's products, in term order (the later terms continue
        // from the earlier ones' sums).
        let mut blocks: Vec<Vec<Projection>> = Vec::new();
        for hoist in &build.plan.hoists {
            for blk in &hoist.blocks {
                let dst = base.at(offsets[hoist.slot] + blk.offset);
                let start = match blk.bias {
                    Some(b) => From::Row(weights.wrapping_add(b)),
                    None => From::Zero,
                };
                let product = |k: usize, a: *const f32, x: *const f32, from: From| Gemm {
                    isa: build.isa,
                    m: blk.len,
                    n: cols,
                    k,
                    a: Left::Units(a),
                    b: Right {
                        ptr: x,
                        rs: 1,
                        cs: k,
                    },
                    c: dst,
                    ldc: hoist.stride,
                    from,
                    split: crate::kernels::gemm::SPLIT,
                };
                let mut products: Vec<Projection> = (blk.terms.iter().enumerate())
                    .map(|(t, &(input, k, matrix))| {
                        let x = inputs[input.index()][t0 * batch * k..].as_ptr();
                        let from = if t == 0 { start } else { From::Dst };
                        let g = product(k, weights.wrapping_add(matrix), x, from);
                        // Under `Compute::Bf16` the matrix and the inputs
                        // are bf16 values: where the host has bf16 dot
                        // products, its copy for them.
                        // Under `Compute::Int8`, on the integer kernels
                        // (`Int8Weights::new` packed every hoisted matrix).
                        if let Some(int8) = &build.int8 {
                            let Some(a) = int8.matrix(matrix) else {
                                unreachable!(
                                    "a hoisted matrix under compute int8 without its int8 copy"
                                )
                            };
                            return Projection::Int8(crate::kernels::int8::Product {
                                from: g.from,
                                split: g.split,
                                ..crate::kernels::int8::Product::new(
                                    int8.dots, a, g.n, g.b, g.c, g.ldc,
                                )
                            });
                        }
                        let packed = build
                            .bf16
                            .as_ref()
                            .and_then(|b| Some((b.dots, b.matrix(matrix)?)));
                        match packed {
                            Some((dots, p)) => Projection::Bf16(crate::kernels::bf16::Product {
                                dots,
                                m: g.m,
                                n: g.n,
                                k: g.k,
                                a: p.as_ptr(),
                                b: g.b,
                                c: g.c,
                                ldc: g.ldc,
                                from: g.from,
                                split: g.split,
                            }),
                            None => Projection::F32(g),
                        }
                    })
                    .collect();
                if products.is_empty() {
                    // A block of no terms (its products run through spectra
                    // in the step) is its bias: a product over no `k`.
                    products.push(Projection::F32(product(
                        0,
                        weights,
                        std::ptr::null(),
                        start,
                    )));
                }
                blocks.push(products);
            }
        }
        // (block, job), job by job: the blocks' jobs of the same columns
        // one after the other, so that the inputs each one packs (or
        // quantizes) are still in cache for the next (in block order they
        // came back from L3 for every block: LSTM H = 128, batch 64 on Zen
        // 3, the AVX2 pack was 16 % of the projection's time).
        let counts: Vec<usize> = blocks
            .iter()
            .map(|products| products.first().map_or(0, |g| g.product().jobs()))
            .collect();
        let most = counts.iter().copied().max().unwrap_or(0);
        let jobs: Vec<(usize, usize)> = (0..most)
            .flat_map(|j| {
                (counts.iter().enumerate())
                    .filter(move |&(_, &n)| j < n)
                    .map(move |(b, _)| (b, j))
            })
            .collect();
        let next = std::sync::atomic::AtomicUsize::new(0);
        let run = || loop {
            let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let Some(&(b, j)) = jobs.get(i) else {
                break;
            };
            for g in &blocks[b] {
                // SAFETY: the weights hold each matrix in units at
                // `matrix` (`plan::unit_major`, verified) and each bias's
                // `len` floats; `x` is `[T, batch, k]` (checked by
                // `run_with`), so its columns `t0*batch .. t1*batch` are `k`
                // floats apart inside it; the projection buffer holds `chunk
                // >= t1 - t0` steps of `batch` rows of `stride >= blk.offset
                // + blk.len` floats (`ensure_side`). Jobs share no element of
                // a block's rows, and blocks do not overlap; this job's
                // products run in order on this thread; the ISA is the
                // build's, which the host has, and so are the bf16
                // instructions (`Bf16Weights::new` checked them) whose
                // matrices have the same rows and columns as their unit-major
                // copies.
                unsafe { g.product().run_job(j) };
            }
        };
        self.on_workers(threads, &|_w, _n, _barrier| run());
    }
}

/// One product of the hoisted projection: on the float32 kernels, on bf16
/// dot products, or on the integer kernels. Every product of a block has the same rows and
/// columns, so the same jobs.
enum Projection {
    F32(crate::kernels::gemm::Gemm),
    Bf16(crate::kernels::bf16::Product),
    Int8(crate::kernels::int8::Product),
}

impl Projection {
    /// The product, whichever its arithmetic: its jobs and how they run.
    fn product(&self) -> &dyn Blocked {
        match self {
            Projection::F32(g) => g,
            Projection::Bf16(p) => p,
            Projection::Int8(p) => p,
        }
    }
}

/// How many of `n` workers take rows apart in a batch of `batch`: each at
/// least two rows (all on one for a batch of one). A generated product sums a
/// lone row differently (its `k` split over accumulators, for latency) from
/// rows that come with others, so a worker given a single row of a larger
/// batch would not give the shared steps' bits.
pub(super) fn apart_workers(batch: usize, n: usize) -> usize {
    (batch / 2).clamp(1, n.max(1))
}

/// Worker `w` of `n` runs its share of a generated function's tiles (or
/// of the batch rows, for a function split by rows).
///
/// # Safety
/// `table` must hold one base pointer per slot of the (verified) plan `f` was
/// generated from: the packed weights, and buffers of `batch` rows of each
/// slot's stride; no other thread may write tiles `share(f.tiles, w, n)`
/// meanwhile.
unsafe fn run_tiles(
    f: Compiled,
    table: &SlotTable,
    batch: usize,
    w: usize,
    n: usize,
    pieces: usize,
) {
    // A function split by rows runs all its tiles in one call (its tiles
    // are not a unit of work: it reduces across them).
    let ((r0, r1), (a, b), pieces) = if f.by_rows {
        (share(batch, w, n), (0, f.tiles), 1)
    } else {
        ((0, batch), share(f.tiles, w, n), pieces)
    };
    if r0 >= r1 || a >= b {
        return;
    }
    // Pieces `pieces - 1` down to 0 of tiles `a..b` (one piece, all of
    // them, when swept forward).
    let pieces = pieces.clamp(1, b - a);
    for p in (0..pieces).rev() {
        let (p0, p1) = share(b - a, p, pieces);
        // SAFETY: as the caller guarantees; the verified plan keeps every
        // access of batch rows `r0..r1 <= batch` and tiles `a + p0..a + p1
        // <= b <= tiles` inside those buffers, and no other worker writes
        // those rows (split by rows) or tiles (split by tiles) this phase.
        unsafe {
            (f.ptr)(
                table.ptrs.as_ptr(),
                r0 as i64,
                r1 as i64,
                (a + p0) as i64,
                (a + p1) as i64,
            )
        };
    }
}

/// An operand the integer kernels never read (their columns come
/// quantized).
const NO_RIGHT: crate::kernels::gemm::Right = crate::kernels::gemm::Right {
    ptr: std::ptr::null(),
    rs: 1,
    cs: 0,
};

/// Under `Compute::Int8`, a thread's quantized inputs of the `gemm` product
/// it runs units of: each distinct input of its terms (slot, offset, `k`),
/// every batch row a column (`kernels::int8::Columns`). Each thread that
/// runs units of a product quantizes all of them itself, from the same
/// floats into the same bytes: no meeting, and the same results on any
/// thread count. Kept between phases (the space is reused: a step
/// allocates nothing once warm).
#[derive(Default)]
struct Int8Inputs {
    used: usize,
    inputs: Vec<((usize, usize, usize), crate::kernels::int8::Columns)>,
}

thread_local! {
    static INT8_INPUTS: std::cell::RefCell<Int8Inputs> =
        std::cell::RefCell::new(Int8Inputs::default());
}

impl Int8Inputs {
    /// Quantizes the inputs of `blocks`' terms into this thread's
    /// [`INT8_INPUTS`] when `build` computes in int8 (else nothing).
    ///
    /// # Safety
    /// `table` holds the plan's slots, sized for `batch` rows; the terms'
    /// inputs are complete and no thread writes them meanwhile.
    unsafe fn of(build: &Build, blocks: &[GemmBlock], table: &SlotTable, batch: usize) {
        let Some(int8) = &build.int8 else {
            return;
        };
        INT8_INPUTS.with_borrow_mut(|q| {
            q.used = 0;
            for term in blocks.iter().flat_map(|b| &b.terms) {
                let key = (term.input.slot, term.input.offset, term.k);
                if q.inputs[..q.used].iter().any(|e| e.0 == key) {
                    continue;
                }
                if q.used == q.inputs.len() {
                    q.inputs.push((key, Default::default()));
                }
                let entry = &mut q.inputs[q.used];
                entry.0 = key;
                let right = crate::kernels::gemm::Right {
                    ptr: table.ptrs[term.input.slot]
                        .wrapping_add(term.input.offset)
                        .cast_const(),
                    rs: 1,
                    cs: term.input.stride,
                };
                // SAFETY: the input holds `batch` rows of `stride >= k`
                // floats from its offset (verified plan), as the caller
                // guarantees.
                unsafe {
                    entry
                        .1
                        .quantize(right, term.k, int8.dots.padded_k(term.k), 0..batch)
                };
                q.used += 1;
            }
        });
    }

    /// The quantized input of `term`.
    fn get(&self, term: &plan::GemmTerm) -> Option<&crate::kernels::int8::Columns> {
        let key = (term.input.slot, term.input.offset, term.k);
        self.inputs[..self.used]
            .iter()
            .find(|e| e.0 == key)
            .map(|e| &e.1)
    }
}

/// Runs units `u0..u1` of a `gemm` product for batch rows `0..batch`, in
/// `sweep`'s order.
///
/// # Safety
/// `slots` must hold the base pointers of the plan the blocks belong to, each
/// buffer sized for `batch` rows of its slot's stride (the plan verified), and
/// no other thread may touch rows `u0..u1`'s destinations meanwhile; the host
/// must have `isa`.
unsafe fn gemm_units(
    build: &Build,
    blocks: &[GemmBlock],
    u0: usize,
    u1: usize,
    slots: &SlotTable,
    batch: usize,
    sweep: Sweep,
) {
    let units = plan::gemm_units(blocks);
    let mine = &units[u0.min(units.len())..u1.min(units.len())];
    for i in 0..mine.len() {
        let (bi, r0, r1) = mine[sweep.nth(i, mine.len())];
        // SAFETY: as the caller guarantees, for this unit's rows.
        unsafe { gemm_rows(build, &blocks[bi], r0, r1, slots, batch) };
    }
}

/// Rows `r0..r1` of one block of a `gemm` product, for batch rows `0..batch`:
/// the initial values, then each term's product (on the integer kernels
/// under `Compute::Int8`, from this thread's [`Int8Inputs`]).
///
/// # Safety
/// As [`gemm_units`], for rows `r0..r1 <= blk.len`, `r0` a multiple of the
/// panel (and of 32: every unit of rows is); under `Compute::Int8` this
/// thread's [`Int8Inputs`] hold the block's inputs, quantized for `batch`
/// rows.
unsafe fn gemm_rows(
    build: &Build,
    blk: &GemmBlock,
    r0: usize,
    r1: usize,
    slots: &SlotTable,
    batch: usize,
) {
    let isa = build.isa;
    let weights = slots.ptrs[0].cast_const();
    let m = r1 - r0;
    let dst = slots.ptrs[blk.dest.slot].wrapping_add(blk.dest.offset + r0);
    // Where the sums start: the f32 kernels start their first term's tiles
    // there (no copy into `dst` first); the narrow ones add to `dst`. The
    // bias is in the packed weights and the projection in a slot of its own
    // (both verified), so neither overlaps `dst`.
    let mut start = match blk.init {
        GemmInit::Zero => panel::Start::Zero,
        GemmInit::Bias(o) => panel::Start::Rows {
            ptr: weights.wrapping_add(o + r0),
            stride: 0,
        },
        GemmInit::Projection(l) => panel::Start::Rows {
            ptr: slots.ptrs[l.slot].wrapping_add(l.offset + r0).cast_const(),
            stride: l.stride,
        },
    };
    if batch == 0 {
        return;
    }
    if let Some(int8) = &build.int8 {
        use crate::kernels::gemm::From;
        let c = slots.ptrs[blk.dest.slot].wrapping_add(blk.dest.offset);
        // The first term's sums start from the bias or the projection where
        // they are (no copy into `dst`), the others from `dst`.
        let mut from = match blk.init {
            GemmInit::Zero => From::Zero,
            GemmInit::Bias(o) => From::Row(weights.wrapping_add(o)),
            GemmInit::Projection(l) => From::Matrix {
                ptr: slots.ptrs[l.slot].wrapping_add(l.offset).cast_const(),
                ld: l.stride,
            },
        };
        if blk.terms.is_empty() {
            // SAFETY: as the caller guarantees.
            unsafe { start.fill(m, batch, dst, blk.dest.stride) };
        }
        INT8_INPUTS.with_borrow(|inputs| {
            for term in &blk.terms {
                // Both are there: `Int8Weights::new` packed every matrix of
                // the plan's panels, and `Int8Inputs::of` quantized every
                // term's input.
                let (Some(a), Some(x)) = (int8.panels(term.panels), inputs.get(term)) else {
                    unreachable!(
                        "a term of a gemm product under compute int8 without its matrix or inputs"
                    )
                };
                let product = crate::kernels::int8::Product {
                    from: std::mem::replace(&mut from, From::Dst),
                    ..crate::kernels::int8::Product::new(
                        int8.dots,
                        a,
                        batch,
                        NO_RIGHT,
                        c,
                        blk.dest.stride,
                    )
                };
                // SAFETY: `a` is the term's `[len, k]` matrix, `x` its input's
                // `batch` columns quantized; `C`'s element `(i, b)` is row `b`'s
                // element `i` of the destination, inside its slot (verified),
                // and so are the bias's and the projection's (verified; not
                // overlapping it); rows `r0..r1` are this unit's own, `r0` a
                // multiple of 32; the host has `dots` (`Dots::for_isa`).
                unsafe { product.run_rows(r0..r1, x) };
            }
        });
        return;
    }
    if let Some(s) = &blk.spectral {
        // SAFETY: as the caller guarantees; `r0` and `r1` are multiples of
        // `k` (`plan::spectral_unit_rows`, or the block's end).
        unsafe { spectral_rows(isa, blk, s, r0, r1, slots, batch, start) };
        start = panel::Start::Dst;
    }
    if blk
        .terms
        .first()
        .is_none_or(|t| t.precision != Precision::F32)
    {
        // SAFETY: the plan sized `dest` for `batch` rows of `stride >= offset
        // + len` floats, and the bias and projection likewise; rows `r0..r1`
        // are inside `len` and this unit's own.
        unsafe { start.fill(m, batch, dst, blk.dest.stride) };
        start = panel::Start::Dst;
    }
    for term in &blk.terms {
        let x = slots.ptrs[term.input.slot]
            .wrapping_add(term.input.offset)
            .cast_const();
        // SAFETY: the matrix is `[len, k]` in panels in the packed weights
        // (`panels_len(len, k)` floats, verified); rows `r0..r1` start at
        // panel `r0 / 16` (`r0` is a multiple of the panel), `r0 * k` floats
        // in; the input holds `batch` rows of `stride >= k` floats; `dst` as
        // above; the build checked `isa`.
        unsafe {
            if term.precision == Precision::F32 {
                panel::product_raw(
                    isa,
                    weights.add(term.panels + r0 * term.k),
                    m,
                    term.k,
                    x,
                    term.input.stride,
                    batch,
                    dst,
                    blk.dest.stride,
                    std::mem::replace(&mut start, panel::Start::Dst),
                )
            } else {
                // The narrow values from row `r0`, and the rows' scales
                // after all the values (`panel::stored_len`, verified).
                let start = weights.add(term.panels);
                let panels = panel::Panels {
                    values: start.cast::<u8>().add(
                        r0 / panel::GROUP * panel::group_bytes(term.k, term.precision).unwrap_or(0),
                    ),
                    precision: term.precision,
                    scales: start.add(panel::scales_at(blk.len, term.k).unwrap_or(0) + r0),
                };
                panel::product_narrow(
                    isa,
                    panels,
                    m,
                    term.k,
                    x,
                    term.input.stride,
                    batch,
                    dst,
                    blk.dest.stride,
                )
            }
        };
    }
}

/// Batch row `b` of an input's transform: each chunk's spectrum.
///
/// # Safety
/// `slots` holds the base pointers of the verified plan the transform
/// belongs to, sized for more than `b` rows; no other thread touches row
/// `b` of its destination meanwhile; the host has `isa`.
unsafe fn transform_row(isa: Isa, t: &plan::Transform, b: usize, slots: &SlotTable) {
    let weights = slots.ptrs[0].cast_const();
    let x = slots.ptrs[t.input.slot].wrapping_add(t.input.offset + b * t.input.stride);
    let dst = slots.ptrs[t.dest.slot].wrapping_add(t.dest.offset + b * t.dest.stride);
    // SAFETY: the verified plan: the `k x k` transform in panels at
    // `forward`; the input's row holds `len` floats, `len / k` chunks of `k`
    // read as rows `k` apart, and the destination's likewise, in another
    // slot.
    unsafe {
        panel::product_raw(
            isa,
            weights.add(t.forward),
            t.k,
            t.k,
            x.cast_const(),
            t.k,
            t.input.len / t.k,
            dst,
            t.k,
            panel::Start::Zero,
        )
    }
}

/// Rows `r0..r1` of a block's spectral part, for batch rows `0..batch`:
/// its output chunks' spectra, then their inverse transforms from `start`
/// into the destination.
///
/// # Safety
/// As [`gemm_rows`], `r0` and `r1` multiples of `s.k`; the terms' input
/// spectra computed (the task before).
#[allow(clippy::too_many_arguments)]
unsafe fn spectral_rows(
    isa: Isa,
    blk: &GemmBlock,
    s: &plan::Spectral,
    r0: usize,
    r1: usize,
    slots: &SlotTable,
    batch: usize,
    start: panel::Start,
) {
    let weights = slots.ptrs[0].cast_const();
    let k = s.k;
    let term = |t: &plan::SpectralTerm| crate::kernels::spectral::MacTerm {
        weights: weights.wrapping_add(t.weights),
        chunks: t.spectrum.len / k,
        x: slots.ptrs[t.spectrum.slot]
            .wrapping_add(t.spectrum.offset)
            .cast_const(),
        x_stride: t.spectrum.stride,
    };
    // On the stack for the products of a few inputs (a step allocates
    // nothing there).
    let mut few = [crate::kernels::spectral::MacTerm::default(); 8];
    let many: Vec<crate::kernels::spectral::MacTerm>;
    let terms: &[crate::kernels::spectral::MacTerm] = if s.terms.len() <= few.len() {
        for (f, t) in few.iter_mut().zip(&s.terms) {
            *f = term(t);
        }
        &few[..s.terms.len()]
    } else {
        many = s.terms.iter().map(term).collect();
        &many
    };
    let ys = slots.ptrs[s.scratch.slot].wrapping_add(s.scratch.offset);
    let (c0, c1) = (r0 / k, r1 / k);
    // SAFETY: the verified plan: each term's spectra packed for the
    // block's `len / k` output chunks and its input's chunks, its input's
    // spectra `batch` rows at their stride; the block's spectra buffer
    // `len` floats a row in a slot of its own, chunks `c0..c1` this unit's.
    unsafe { crate::kernels::spectral::mac(isa, k, terms, c0, c1, batch, ys, s.scratch.stride) };
    for b in 0..batch {
        let dst =
            slots.ptrs[blk.dest.slot].wrapping_add(blk.dest.offset + b * blk.dest.stride + r0);
        // The start of chunk `c` of row `b` is `k` floats after chunk `c - 1`'s.
        let from = match start {
            panel::Start::Rows { ptr, stride } => panel::Start::Rows {
                ptr: ptr.wrapping_add(b * stride),
                stride: k,
            },
            other => other,
        };
        // SAFETY: the `k x k` inverse in panels at `inverse`; the chunks'
        // spectra are rows `k` apart in the buffer, the destination's
        // chunks rows `k` apart in row `b` (another slot), the start's
        // likewise (the bias in the weights, the projection in its slot).
        unsafe {
            panel::product_raw(
                isa,
                weights.add(s.inverse),
                k,
                k,
                ys.wrapping_add(b * s.scratch.stride + r0).cast_const(),
                k,
                c1 - c0,
                dst,
                k,
                from,
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inline_copies_hold_what_was_pushed_and_are_independent() {
        let mut a: Inline<usize> = Inline::new();
        assert!(a.is_empty());
        for v in 0..MAX_SLOTS {
            a.push(v * 3);
        }
        let mut b = a.clone();
        b[7] = 1;
        b.swap(0, MAX_SLOTS - 1);
        assert_eq!(a.len(), MAX_SLOTS);
        assert!(a.iter().enumerate().all(|(i, &v)| v == i * 3));
        assert_eq!((b[0], b[7], b[MAX_SLOTS - 1]), (3 * (MAX_SLOTS - 1), 1, 0));
        let full = std::panic::catch_unwind(move || a.clone().push(0));
        assert!(full.is_err(), "a push beyond MAX_SLOTS must panic");
    }
}
