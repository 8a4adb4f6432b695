//! The JIT: compiles a cell to native code with Cranelift, packs its weights, and
//! runs it safely.
//!
//! [`Kernel`] owns the generated code and the packed weights; it is `Send + Sync`,
//! and any number of threads may step it at once, each with its own [`State`].
//! [`State`] owns every buffer a step touches for one batch size (inputs, the
//! states' current and next values, scratch), allocated once: `step` allocates
//! nothing.
//!
//! All of cellc's `unsafe` is in this module: calling generated code, and viewing
//! the aligned buffers as float slices. Before any call, every length is checked
//! against the plan; the generated code then touches only the buffers the plan
//! sized, at offsets the plan computed.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Instant;

use cranelift_codegen::Context;
use cranelift_jit::{JITBuilder, JITModule};
use cranelift_module::{default_libcall_names, Linkage, Module};

use crate::codegen::plan::{Loc, Plan, SlotKind, Update};
use crate::codegen::{self, pack, plan};
use crate::ir;
use crate::weights::Weights;
use crate::{Cell, Error, Result};

/// How to compile a cell.
#[derive(Clone, Debug)]
pub struct Options {
    /// Run the optimizer (concatenation, stacking, fused epilogues). Off, every
    /// product and every element-wise operation is its own pass: the baseline.
    pub optimize: bool,
}

impl Default for Options {
    fn default() -> Options {
        Options { optimize: true }
    }
}

/// The IR a kernel runs (optimized unless told otherwise, then legalized: only
/// products and regions) and its plan.
pub fn plan_cell(cell: &Cell, opts: &Options) -> Result<(ir::Cell, Plan)> {
    let mut ir = if opts.optimize {
        cell.optimized(&crate::opt::Options::default())?.ir
    } else {
        cell.ir()?
    };
    plan::legalize(&mut ir);
    ir::verify::verify(&ir).map_err(|e| Error::msg(format!("internal error: {e}")))?;
    let plan = plan::plan(&ir, opts.optimize).map_err(|e| Error::msg(e.0))?;
    Ok((ir, plan))
}

type TaskFn = unsafe extern "C" fn(*const usize, i64, i64, i64, i64);

/// A generated function, callable from any thread.
#[derive(Clone, Copy)]
struct Compiled {
    ptr: TaskFn,
    tiles: usize,
}

/// The code of a compiled cell, without weights.
pub struct Code {
    module: Mutex<Option<JITModule>>,
    phases: Vec<Vec<Compiled>>,
    pub functions: usize,
    pub code_bytes: usize,
    pub compile_ms: f64,
}

// SAFETY: the generated code is immutable once finalized and reads only through
// the pointers it is given; `JITModule` (which is `Send`) is only touched on drop,
// behind a mutex.
unsafe impl Send for Code {}
// SAFETY: as above; the function pointers are plain code addresses.
unsafe impl Sync for Code {}

impl Drop for Code {
    fn drop(&mut self) {
        if let Ok(mut m) = self.module.lock() {
            if let Some(module) = m.take() {
                // SAFETY: the code is owned by this `Code`; every kernel that could
                // call it holds `Code` by value, so no pointer outlives it.
                unsafe { module.free_memory() };
            }
        }
    }
}

/// Compiles a plan's functions for the host.
pub fn compile_plan(plan: &Plan) -> Result<Code> {
    let start = Instant::now();
    let isa = codegen::host_isa().map_err(|e| Error::msg(e.0))?;
    let call_conv = isa.default_call_conv();
    let functions = codegen::functions(plan, &*isa);
    let mut module = JITModule::new(JITBuilder::with_isa(isa, default_libcall_names()));
    let mut ctx = Context::new();
    let mut ids = Vec::new();
    let mut count = 0;
    let mut code_bytes = 0;
    for phase in functions.phases {
        let mut ids_phase = Vec::new();
        for tf in phase {
            let sig = codegen::lower::signature(call_conv);
            let id = module
                .declare_function(&tf.name, Linkage::Local, &sig)
                .map_err(|e| Error::msg(format!("internal error: {e}")))?;
            ctx.func = tf.func;
            ctx.func.name = cranelift_codegen::ir::UserFuncName::user(0, id.as_u32());
            module.define_function(id, &mut ctx).map_err(|e| {
                Error::msg(format!(
                    "internal error: Cranelift rejected {}: {e:?}",
                    tf.name
                ))
            })?;
            code_bytes += ctx.compiled_code().map_or(0, |c| c.code_buffer().len());
            count += 1;
            module.clear_context(&mut ctx);
            ids_phase.push((id, tf.tiles));
        }
        ids.push(ids_phase);
    }
    module
        .finalize_definitions()
        .map_err(|e| Error::msg(format!("internal error: {e}")))?;
    let phases = ids
        .into_iter()
        .map(|phase| {
            phase
                .into_iter()
                .map(|(id, tiles)| {
                    let raw = module.get_finalized_function(id);
                    // SAFETY: `raw` is the finalized code of a function declared with
                    // `lower::signature`: five 64-bit integer arguments, no return,
                    // the platform's C calling convention.
                    let ptr = unsafe { std::mem::transmute::<*const u8, TaskFn>(raw) };
                    Compiled { ptr, tiles }
                })
                .collect()
        })
        .collect();
    Ok(Code {
        module: Mutex::new(Some(module)),
        phases,
        functions: count,
        code_bytes,
        compile_ms: start.elapsed().as_secs_f64() * 1e3,
    })
}

/// A float buffer aligned to 64 bytes (a cache line), so vector accesses never
/// straddle one.
#[derive(Clone)]
struct AlignedBuf {
    blocks: Vec<Align64>,
    len: usize,
}

#[derive(Clone, Copy)]
#[repr(C, align(64))]
struct Align64([f32; 16]);

impl AlignedBuf {
    fn zeros(len: usize) -> AlignedBuf {
        AlignedBuf {
            blocks: vec![Align64([0.0; 16]); len.div_ceil(16)],
            len,
        }
    }

    fn as_slice(&self) -> &[f32] {
        // SAFETY: `blocks` holds `16 * blocks.len() >= len` contiguous, initialized
        // f32 values (`Align64` is `repr(C)` over `[f32; 16]`).
        unsafe { std::slice::from_raw_parts(self.blocks.as_ptr().cast::<f32>(), self.len) }
    }

    fn as_mut_slice(&mut self) -> &mut [f32] {
        // SAFETY: as in `as_slice`, and `&mut self` makes the view unique.
        unsafe { std::slice::from_raw_parts_mut(self.blocks.as_mut_ptr().cast::<f32>(), self.len) }
    }

    fn addr(&self) -> usize {
        self.blocks.as_ptr() as usize
    }
}

static NEXT_KERNEL_ID: AtomicU64 = AtomicU64::new(1);

/// A compiled cell with its packed weights: call [`Kernel::step`] or
/// [`Kernel::run`] with a [`State`] from [`Kernel::new_state`].
pub struct Kernel {
    id: u64,
    name: String,
    plan: Plan,
    code: Code,
    weights: AlignedBuf,
    /// The IR that was compiled (optimized, or not).
    ir: ir::Cell,
    input_names: Vec<String>,
    state_names: Vec<String>,
    output_names: Vec<String>,
}

/// Everything one caller's steps read and write, for one batch size.
pub struct State {
    kernel: u64,
    batch: usize,
    buf: AlignedBuf,
    /// Offset (floats) of each slot's buffer in `buf`; the weights slot is 0.
    offsets: Vec<usize>,
    /// The slot base pointers handed to generated code, rebuilt before each call.
    ptrs: Vec<usize>,
    state_lens: Vec<usize>,
    /// The slot of each state's current value.
    cur_slots: Vec<usize>,
    strides: Vec<usize>,
    names: Vec<String>,
    /// Where each output of the last step is.
    outputs: Vec<Loc>,
    steps: u64,
}

impl Kernel {
    /// Compiles `cell` with `weights`.
    pub fn compile(cell: &Cell, weights: &Weights, opts: &Options) -> Result<Kernel> {
        let (ir, plan) = plan_cell(cell, opts)?;
        let params = weights.resolve(&ir).map_err(|e| Error::msg(e.0))?;
        let code = compile_plan(&plan)?;
        let mut packed = AlignedBuf::zeros(plan.weights_len.max(1));
        pack::pack(&plan, &ir, &params, packed.as_mut_slice());
        Ok(Kernel {
            id: NEXT_KERNEL_ID.fetch_add(1, Ordering::Relaxed),
            name: ir.name.clone(),
            input_names: ir.inputs.iter().map(|p| p.name.clone()).collect(),
            state_names: ir.states.iter().map(|p| p.name.clone()).collect(),
            output_names: ir.outputs.iter().map(|p| p.name.clone()).collect(),
            plan,
            code,
            weights: packed,
            ir,
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// The IR that was compiled.
    pub fn ir(&self) -> &ir::Cell {
        &self.ir
    }

    pub fn plan(&self) -> &Plan {
        &self.plan
    }

    pub fn code(&self) -> &Code {
        &self.code
    }

    pub fn input_names(&self) -> &[String] {
        &self.input_names
    }

    pub fn state_names(&self) -> &[String] {
        &self.state_names
    }

    pub fn output_names(&self) -> &[String] {
        &self.output_names
    }

    /// Length of each input, state and output vector (per batch row).
    pub fn input_len(&self, i: usize) -> usize {
        self.plan.input_lens[i]
    }

    pub fn state_len(&self, i: usize) -> usize {
        self.plan.state_lens[i]
    }

    pub fn output_len(&self, i: usize) -> usize {
        self.plan.output_lens[i]
    }

    /// A state for `batch` rows, all zeros.
    pub fn new_state(&self, batch: usize) -> State {
        let batch = batch.max(1);
        let mut offsets = Vec::with_capacity(self.plan.slots.len());
        let mut total = 0usize;
        let mut strides = Vec::with_capacity(self.plan.slots.len());
        for slot in &self.plan.slots {
            offsets.push(total);
            strides.push(slot.stride);
            if slot.kind != SlotKind::Weights {
                // Each buffer starts on a cache line.
                total += (batch * slot.stride).div_ceil(16) * 16;
            }
        }
        State {
            kernel: self.id,
            batch,
            buf: AlignedBuf::zeros(total.max(16)),
            ptrs: vec![0; self.plan.slots.len()],
            offsets,
            state_lens: self.plan.state_lens.clone(),
            cur_slots: self.plan.state_cur.clone(),
            strides,
            names: self.state_names.clone(),
            outputs: self.plan.outputs.clone(),
            steps: 0,
        }
    }

    fn check_state(&self, state: &State) -> Result<()> {
        if state.kernel != self.id {
            return Err(Error::msg(format!(
                "this state was made by another kernel; use `new_state` of kernel `{}`",
                self.name
            )));
        }
        Ok(())
    }

    /// One step with one input (the common case: `x`).
    pub fn step(&self, x: &[f32], state: &mut State) -> Result<()> {
        if self.input_names.len() != 1 {
            return Err(Error::msg(format!(
                "cell `{}` has {} inputs; use `step_inputs`",
                self.name,
                self.input_names.len()
            )));
        }
        self.step_inputs(&[x], state)
    }

    /// One step: `inputs[i]` is input `i` for every batch row (`batch * len`
    /// values, row after row).
    pub fn step_inputs(&self, inputs: &[&[f32]], state: &mut State) -> Result<()> {
        self.check_state(state)?;
        self.check_inputs(inputs, state.batch, 1)?;
        self.step_unchecked(inputs, 0, state);
        Ok(())
    }

    fn check_inputs(&self, inputs: &[&[f32]], batch: usize, steps: usize) -> Result<()> {
        if inputs.len() != self.input_names.len() {
            return Err(Error::msg(format!(
                "cell `{}` has {} input{}, {} given",
                self.name,
                self.input_names.len(),
                if self.input_names.len() == 1 { "" } else { "s" },
                inputs.len()
            )));
        }
        for (i, x) in inputs.iter().enumerate() {
            let want = steps * batch * self.plan.input_lens[i];
            if x.len() != want {
                return Err(Error::msg(format!(
                    "input `{}`: expected {} values ([{}{batch}, {}]), got {}",
                    self.input_names[i],
                    want,
                    if steps > 1 {
                        format!("{steps}, ")
                    } else {
                        String::new()
                    },
                    self.plan.input_lens[i],
                    x.len()
                )));
            }
        }
        Ok(())
    }

    /// A step whose lengths were checked: copies inputs of time step `t`, runs the
    /// phases, applies the state updates, swaps.
    fn step_unchecked(&self, inputs: &[&[f32]], t: usize, state: &mut State) {
        let batch = state.batch;
        for (i, x) in inputs.iter().enumerate() {
            let slot = self.plan.input_slots[i];
            let len = self.plan.input_lens[i];
            let stride = state.strides[slot];
            let off = state.offsets[slot];
            let step_base = t * batch * len;
            let buf = state.buf.as_mut_slice();
            for b in 0..batch {
                let src = &x[step_base + b * len..step_base + (b + 1) * len];
                buf[off + b * stride..off + b * stride + len].copy_from_slice(src);
            }
        }
        state.set_ptrs(self.weights.addr());
        for phase in &self.code.phases {
            for f in phase {
                // SAFETY: `ptrs` holds one base pointer per slot of the plan this code
                // was generated from: the packed weights (`plan.weights_len` floats)
                // and this state's buffers, each `batch * stride` floats (checked:
                // the state was made by this kernel for `batch` rows). The code
                // accesses batch rows `0..batch` and tiles `0..tiles`, which stay
                // inside those buffers by construction of the plan (strides are
                // padded to whole vectors).
                unsafe { (f.ptr)(state.ptrs.as_ptr(), 0, batch as i64, 0, f.tiles as i64) };
            }
        }
        // State updates that no task wrote in place.
        for (s, u) in self.plan.updates.iter().enumerate() {
            if let Update::Copy(from) = *u {
                let next = self.plan.state_next[s];
                let (to_off, to_stride) = (state.offsets[next], state.strides[next]);
                let (src_buf_is_weights, from_off) = if from.slot == 0 {
                    (true, from.offset)
                } else {
                    (false, state.offsets[from.slot] + from.offset)
                };
                for b in 0..state.batch {
                    let dst = to_off + b * to_stride;
                    let src = from_off + b * from.stride;
                    if src_buf_is_weights {
                        let w = &self.weights.as_slice()[src..src + from.len];
                        state.buf.as_mut_slice()[dst..dst + from.len].copy_from_slice(w);
                    } else {
                        state
                            .buf
                            .as_mut_slice()
                            .copy_within(src..src + from.len, dst);
                    }
                }
            }
        }
        // Swap current and next.
        for s in 0..self.plan.state_cur.len() {
            state
                .offsets
                .swap(self.plan.state_cur[s], self.plan.state_next[s]);
        }
        // Outputs in a next buffer are now in the current one.
        for (o, loc) in self.plan.outputs.iter().enumerate() {
            let mut l = *loc;
            if let Some(s) = self.plan.state_next.iter().position(|&n| n == l.slot) {
                l.slot = self.plan.state_cur[s];
            }
            state.outputs[o] = l;
        }
        state.steps += 1;
    }

    /// Copies output `name` of the last step into `out` (`[batch, len]`).
    pub fn copy_output(&self, state: &State, name: &str, out: &mut [f32]) -> Result<()> {
        self.check_state(state)?;
        let o = self
            .output_names
            .iter()
            .position(|n| n == name)
            .ok_or_else(|| {
                Error::msg(format!(
                    "no output named `{name}`; the outputs are {}",
                    self.output_names.join(", ")
                ))
            })?;
        let want = state.batch * self.plan.output_lens[o];
        if out.len() != want {
            return Err(Error::msg(format!(
                "output `{name}`: the buffer has {} values, the output {want}",
                out.len()
            )));
        }
        state.read_loc(self.weights.as_slice(), state.outputs[o], out);
        Ok(())
    }

    /// Output `name` of the last step, `[batch, len]`.
    pub fn output(&self, state: &State, name: &str) -> Result<Vec<f32>> {
        let o = self.output_names.iter().position(|n| n == name);
        let len = o.map_or(0, |o| state.batch * self.plan.output_lens[o]);
        let mut out = vec![0.0; len];
        self.copy_output(state, name, &mut out)?;
        Ok(out)
    }

    /// Runs a whole sequence for a cell with one input and one output:
    /// `xs` is `[T, batch, X]`, `out` receives `[T, batch, Y]`.
    pub fn run(&self, xs: &[f32], state: &mut State, out: &mut [f32]) -> Result<()> {
        if self.input_names.len() != 1 || self.output_names.len() != 1 {
            return Err(Error::msg(format!(
                "cell `{}` has {} inputs and {} outputs; use `run_with`",
                self.name,
                self.input_names.len(),
                self.output_names.len()
            )));
        }
        self.run_with(&[xs], state, &mut [out])
    }

    /// Runs a sequence: `inputs[i]` is `[T, batch, len_i]`; `outputs[o]` receives
    /// `[T, batch, len_o]`. T is inferred from the first input (or the first output
    /// if the cell has no input).
    pub fn run_with(
        &self,
        inputs: &[&[f32]],
        state: &mut State,
        outputs: &mut [&mut [f32]],
    ) -> Result<()> {
        self.check_state(state)?;
        let batch = state.batch;
        let per_step = |len: usize| batch * len;
        let steps = match (inputs.first(), outputs.first()) {
            (Some(x), _) if per_step(self.plan.input_lens[0]) > 0 => {
                x.len() / per_step(self.plan.input_lens[0])
            }
            (_, Some(y)) if !self.plan.output_lens.is_empty() => {
                y.len() / per_step(self.plan.output_lens[0])
            }
            _ => 0,
        };
        self.check_inputs(inputs, batch, steps.max(1))?;
        if outputs.len() != self.output_names.len() {
            return Err(Error::msg(format!(
                "cell `{}` has {} outputs, {} buffers given",
                self.name,
                self.output_names.len(),
                outputs.len()
            )));
        }
        for (o, y) in outputs.iter().enumerate() {
            let want = steps * per_step(self.plan.output_lens[o]);
            if y.len() != want {
                return Err(Error::msg(format!(
                    "output `{}`: expected {want} values ([{steps}, {batch}, {}]), got {}",
                    self.output_names[o],
                    self.plan.output_lens[o],
                    y.len()
                )));
            }
        }
        for t in 0..steps {
            self.step_unchecked(inputs, t, state);
            for (o, y) in outputs.iter_mut().enumerate() {
                let len = self.plan.output_lens[o];
                let dst = &mut y[t * batch * len..(t + 1) * batch * len];
                state.read_loc(self.weights.as_slice(), state.outputs[o], dst);
            }
        }
        Ok(())
    }
}

impl State {
    pub fn batch(&self) -> usize {
        self.batch
    }

    /// Steps run with this state.
    pub fn steps(&self) -> u64 {
        self.steps
    }

    fn set_ptrs(&mut self, weights: usize) {
        let base = self.buf.addr();
        for (s, p) in self.ptrs.iter_mut().enumerate() {
            *p = if s == 0 {
                weights
            } else {
                base + self.offsets[s] * 4
            };
        }
    }

    fn state_index(&self, name: &str) -> Result<usize> {
        self.names.iter().position(|n| n == name).ok_or_else(|| {
            Error::msg(format!(
                "no state named `{name}`; the states are {}",
                self.names.join(", ")
            ))
        })
    }

    /// Reads a location into `dst` (`batch * len` values); `weights` is the
    /// kernel's packed weights, for parameter locations (shared by all rows).
    fn read_loc(&self, weights: &[f32], loc: Loc, dst: &mut [f32]) {
        let buf = if loc.slot == 0 {
            weights
        } else {
            self.buf.as_slice()
        };
        let base = if loc.slot == 0 {
            0
        } else {
            self.offsets[loc.slot]
        };
        for b in 0..self.batch {
            let src = base + loc.offset + b * loc.stride;
            dst[b * loc.len..(b + 1) * loc.len].copy_from_slice(&buf[src..src + loc.len]);
        }
    }

    /// The current value of a state, `[batch, len]`.
    pub fn get(&self, name: &str) -> Result<Vec<f32>> {
        let s = self.state_index(name)?;
        let mut out = vec![0.0; self.batch * self.state_lens[s]];
        self.read_state(s, &mut out);
        Ok(out)
    }

    fn read_state(&self, s: usize, out: &mut [f32]) {
        let len = self.state_lens[s];
        let cur = self.cur_slots[s];
        let stride = self.strides[cur];
        let buf = self.buf.as_slice();
        for b in 0..self.batch {
            let src = self.offsets[cur] + b * stride;
            out[b * len..(b + 1) * len].copy_from_slice(&buf[src..src + len]);
        }
    }

    /// Copies a state's current value into `out` (`[batch, len]`), allocating nothing.
    pub fn copy_state(&self, name: &str, out: &mut [f32]) -> Result<()> {
        let s = self.state_index(name)?;
        let want = self.batch * self.state_lens[s];
        if out.len() != want {
            return Err(Error::msg(format!(
                "state `{name}`: the buffer has {} values, the state {want}",
                out.len()
            )));
        }
        self.read_state(s, out);
        Ok(())
    }

    /// Sets a state's current value from `[batch, len]` values.
    pub fn set(&mut self, name: &str, values: &[f32]) -> Result<()> {
        let s = self.state_index(name)?;
        let len = self.state_lens[s];
        if values.len() != self.batch * len {
            return Err(Error::msg(format!(
                "state `{name}`: expected {} values ([{}, {len}]), got {}",
                self.batch * len,
                self.batch,
                values.len()
            )));
        }
        let cur = self.cur_slots[s];
        let stride = self.strides[cur];
        let off = self.offsets[cur];
        let buf = self.buf.as_mut_slice();
        for b in 0..self.batch {
            buf[off + b * stride..off + b * stride + len]
                .copy_from_slice(&values[b * len..(b + 1) * len]);
        }
        Ok(())
    }
}

impl std::fmt::Debug for Kernel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Kernel")
            .field("cell", &self.name)
            .field("inputs", &self.input_names)
            .field("states", &self.state_names)
            .field("outputs", &self.output_names)
            .field("weights", &self.plan.weights_len)
            .field("code_bytes", &self.code.code_bytes)
            .finish()
    }
}

impl std::fmt::Debug for State {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("State")
            .field("batch", &self.batch)
            .field("states", &self.names)
            .field("steps", &self.steps)
            .finish()
    }
}
