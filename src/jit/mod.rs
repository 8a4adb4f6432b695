//! The JIT: compiles a cell to native code with Cranelift, packs its weights, and
//! runs it safely, on one thread or on a pool of workers.
//!
//! [`Kernel`] owns the generated code and the packed weights of each plan
//! (`codegen::schedule::Variant`: streaming, hoisted, gemm, gemm-hoisted; the
//! streaming one is compiled at once, the others when a `run` first needs them),
//! and a persistent worker pool (`pool`). It is `Send + Sync`: any number of
//! threads may step it at once, each with its own [`State`]; one of them at a
//! time gets the pool, the others run on their own thread, with the same
//! results bit for bit (each output is computed by one worker, in a fixed order,
//! whatever the thread count).
//!
//! [`State`] owns every buffer a step touches for one batch size (inputs, the
//! states' current and next values, scratch), allocated once: `step` allocates
//! nothing. (A `run` with a hoisted or gemm plan allocates that plan's buffers
//! once, and the `gemm` crate allocates its packing space.)
//!
//! All of cellc's `unsafe` is in this module and `pool`: calling generated code
//! and `gemm`, and viewing the aligned buffers as float slices. Before any call,
//! every length is checked against the plan; the generated code then touches only
//! the buffers the plan sized, at offsets the plan computed.

mod pool;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::Instant;

use cranelift_codegen::Context;
use cranelift_jit::{JITBuilder, JITModule};
use cranelift_module::{default_libcall_names, Linkage, Module};

use crate::codegen::plan::{
    self, GemmBlock, GemmInit, Loc, Plan, PlanOptions, SlotKind, Task, Update,
};
use crate::codegen::schedule::{self, Variant};
use crate::codegen::{self, pack};
use crate::ir;
use crate::weights::Weights;
use crate::{Cell, Error, Result};
use pool::share;

/// How to compile and run a cell.
#[derive(Clone, Debug)]
pub struct Options {
    /// Run the optimizer (concatenation, stacking, fused epilogues). Off, every
    /// product and every element-wise operation is its own pass: the baseline.
    pub optimize: bool,
    /// Threads to run on (the caller's included). `None`: the cost model picks per
    /// batch and sequence length, up to the number of cores.
    pub threads: Option<usize>,
    /// The plan for `run` (`step` always streams). `None`: the cost model picks.
    pub plan: Option<Variant>,
}

impl Default for Options {
    fn default() -> Options {
        Options {
            optimize: true,
            threads: None,
            plan: None,
        }
    }
}

/// The IR a kernel runs (optimized unless told otherwise, then legalized: only
/// products and regions) and its streaming plan.
pub fn plan_cell(cell: &Cell, opts: &Options) -> Result<(ir::Cell, Plan)> {
    let ir = kernel_ir(cell, opts)?;
    let plan = plan::plan(&ir, plan_options(opts, Variant::Streaming))
        .map_err(|e| Error::too_large(e.0))?;
    Ok((ir, plan))
}

fn kernel_ir(cell: &Cell, opts: &Options) -> Result<ir::Cell> {
    let mut ir = if opts.optimize {
        cell.optimized(&crate::opt::Options::default())?.ir
    } else {
        cell.ir()?
    };
    crate::opt::legalize(&mut ir);
    ir::verify::verify(&ir).map_err(|e| Error::internal(e.to_string()))?;
    Ok(ir)
}

fn plan_options(opts: &Options, v: Variant) -> PlanOptions {
    PlanOptions {
        fuse_epilogues: opts.optimize,
        hoist_inputs: v.hoists(),
        gemm_products: v.uses_gemm(),
    }
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
    let isa = codegen::host_isa().map_err(|e| Error::internal(e.0))?;
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
                .map_err(|e| Error::internal(e.to_string()))?;
            ctx.func = tf.func;
            ctx.func.name = cranelift_codegen::ir::UserFuncName::user(0, id.as_u32());
            module
                .define_function(id, &mut ctx)
                .map_err(|e| Error::internal(format!("Cranelift rejected {}: {e:?}", tf.name)))?;
            code_bytes += ctx.compiled_code().map_or(0, |c| c.code_buffer().len());
            count += 1;
            module.clear_context(&mut ctx);
            ids_phase.push((id, tf.tiles));
        }
        ids.push(ids_phase);
    }
    module
        .finalize_definitions()
        .map_err(|e| Error::internal(e.to_string()))?;
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
    /// `len` zeros, or an error if the memory cannot be had (never an abort).
    fn zeros(len: usize) -> Result<AlignedBuf> {
        let blocks = len.div_ceil(16);
        let mut v = Vec::new();
        v.try_reserve_exact(blocks).map_err(|_| {
            Error::too_large(format!(
                "cannot allocate {} for the kernel's buffers",
                byte_size(len)
            ))
        })?;
        v.resize(blocks, Align64([0.0; 16]));
        Ok(AlignedBuf { blocks: v, len })
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

/// `dst[i + j*dst_cs] (+)= sum_k lhs[i*lhs_rs + k] * rhs[k + j*rhs_cs]` for an
/// `m x n` result, with the `gemm` crate on one thread. Checks every bound.
#[allow(clippy::too_many_arguments)]
pub fn sgemm(
    m: usize,
    n: usize,
    k: usize,
    dst: &mut [f32],
    dst_cs: usize,
    lhs: &[f32],
    lhs_rs: usize,
    rhs: &[f32],
    rhs_cs: usize,
    accumulate: bool,
) {
    if m == 0 || n == 0 {
        return;
    }
    // The last element each operand reaches, computed without wrapping.
    let last = |rows: usize, rs: usize, cols: usize, cs: usize| {
        (rows - 1)
            .checked_mul(rs)
            .and_then(|a| (cols - 1).checked_mul(cs).and_then(|b| a.checked_add(b)))
    };
    let fits = |len: usize, last: Option<usize>| last.is_some_and(|l| l < len);
    assert!(
        fits(dst.len(), last(m, 1, n, dst_cs)),
        "sgemm: dst too short"
    );
    if k > 0 {
        assert!(
            fits(lhs.len(), last(m, lhs_rs, k, 1)),
            "sgemm: lhs too short"
        );
        assert!(
            fits(rhs.len(), last(k, 1, n, rhs_cs)),
            "sgemm: rhs too short"
        );
    }
    // SAFETY: the asserts above keep every access of the `m x k` by `k x n`
    // product and the `m x n` result inside the slices.
    unsafe {
        gemm_raw(
            m,
            n,
            k,
            dst.as_mut_ptr(),
            dst_cs,
            lhs.as_ptr(),
            lhs_rs,
            rhs.as_ptr(),
            rhs_cs,
            accumulate,
        )
    }
}

/// The sum of `v`'s floats (only whole groups of 32 are read): the memory probe's
/// read loop, eight independent 128-bit sums as the generated kernels load
/// weights, so that it runs at the memory's pace. (A plain Rust loop reaches
/// only about two thirds of that: LLVM keeps fewer chains in flight.)
pub fn sum_floats(v: &[f32]) -> f32 {
    let n = v.len() / 32 * 32;
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::{__m128, _mm_add_ps, _mm_loadu_ps, _mm_setzero_ps, _mm_storeu_ps};
        let mut out = [0.0f32; 4];
        // SAFETY: SSE is part of x86-64; every load reads floats
        // `i + 4j .. i + 4j + 4` with `i + 32 <= n <= v.len()`.
        unsafe {
            let p = v.as_ptr();
            let mut acc: [__m128; 8] = [_mm_setzero_ps(); 8];
            let mut i = 0;
            while i < n {
                for (j, a) in acc.iter_mut().enumerate() {
                    *a = _mm_add_ps(*a, _mm_loadu_ps(p.add(i + 4 * j)));
                }
                i += 32;
            }
            let mut s = _mm_setzero_ps();
            for a in acc {
                s = _mm_add_ps(s, a);
            }
            _mm_storeu_ps(out.as_mut_ptr(), s);
        }
        out.iter().sum()
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let mut acc = [[0.0f32; 4]; 8];
        for c in v[..n].chunks_exact(32) {
            for (j, a) in acc.iter_mut().enumerate() {
                for (l, x) in a.iter_mut().enumerate() {
                    *x += c[4 * j + l];
                }
            }
        }
        acc.iter().flatten().sum()
    }
}

/// # Safety
/// The `m x n` result at `dst` (columns `dst_cs` floats apart), the `m x k`
/// matrix at `lhs` (rows `lhs_rs` apart) and the `k x n` matrix at `rhs`
/// (columns `rhs_cs` apart) must be valid; `dst` must not overlap the others.
#[allow(clippy::too_many_arguments)]
unsafe fn gemm_raw(
    m: usize,
    n: usize,
    k: usize,
    dst: *mut f32,
    dst_cs: usize,
    lhs: *const f32,
    lhs_rs: usize,
    rhs: *const f32,
    rhs_cs: usize,
    accumulate: bool,
) {
    if k == 0 {
        return;
    }
    // SAFETY: as the caller guarantees.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst,
            dst_cs as isize,
            1,
            accumulate,
            lhs,
            1,
            lhs_rs as isize,
            rhs,
            rhs_cs as isize,
            1,
            1.0,
            1.0,
            false,
            false,
            false,
            gemm::Parallelism::None,
        )
    }
}

/// The product of sizes, or `None` if it overflows.
fn count(sizes: &[usize]) -> Option<usize> {
    sizes.iter().try_fold(1usize, |a, &b| a.checked_mul(b))
}

/// `floats` as a size a person reads.
fn byte_size(floats: usize) -> String {
    let bytes = floats as f64 * 4.0;
    if bytes >= (1u64 << 30) as f64 {
        format!("{:.1} GiB", bytes / (1u64 << 30) as f64)
    } else {
        format!("{:.1} MiB", bytes / (1u64 << 20) as f64)
    }
}

fn too_large(batch: usize) -> Error {
    Error::too_large(format!(
        "a batch of {batch} rows is too large: its buffers do not fit in memory"
    ))
}

static NEXT_KERNEL_ID: AtomicU64 = AtomicU64::new(1);

/// A job for the pool: `job(worker, workers, barrier)`.
type PoolJob<'a> = dyn Fn(usize, usize, &dyn Fn()) + Sync + 'a;

/// Most slots a plan may have (the slot table lives on each worker's stack).
const MAX_SLOTS: usize = 256;

/// One unit of a phase.
#[derive(Clone, Copy)]
enum Work {
    /// A generated function over its tiles.
    Jit(Compiled),
    /// A `gemm` product (task index in the plan) over its row units.
    Gemm(usize, usize),
}

/// A plan, its code, its packed weights.
struct Build {
    plan: Plan,
    code: Code,
    weights: AlignedBuf,
    phases: Vec<Vec<Work>>,
}

/// A compiled cell with its packed weights: call [`Kernel::step`] or
/// [`Kernel::run`] with a [`State`] from [`Kernel::new_state`].
pub struct Kernel {
    id: u64,
    name: String,
    opts: Options,
    /// The IR that was compiled (optimized, or not; legalized).
    ir: ir::Cell,
    /// The parameters, for plans compiled later.
    params: Vec<Vec<f32>>,
    builds: [OnceLock<std::result::Result<Build, String>>; 4],
    work: schedule::Work,
    input_names: Vec<String>,
    state_names: Vec<String>,
    output_names: Vec<String>,
    input_lens: Vec<usize>,
    state_lens: Vec<usize>,
    output_lens: Vec<usize>,
}

/// A plan's buffers that a state does not share with the others: its scratch
/// and its projections.
struct Side {
    buf: AlignedBuf,
    /// Offset of each of the plan's own slots in `buf` (`usize::MAX` for shared ones).
    offsets: Vec<usize>,
    /// Steps one projection buffer holds.
    chunk: usize,
}

/// Everything one caller's steps read and write, for one batch size.
pub struct State {
    kernel: u64,
    batch: usize,
    /// The streaming plan's buffers (inputs, states, scratch).
    buf: AlignedBuf,
    /// Offset (floats) of each streaming slot's buffer in `buf`; the states'
    /// current and next slots swap after each step.
    offsets: Vec<usize>,
    strides: Vec<usize>,
    /// Slots shared by every plan: inputs and states.
    shared: usize,
    /// Other plans' buffers, made on first use.
    side: [Option<Side>; 4],
    /// The slot base pointers handed to generated code, rebuilt before each call.
    ptrs: Vec<usize>,
    state_lens: Vec<usize>,
    cur_slots: Vec<usize>,
    names: Vec<String>,
    /// Where each output of the last step is, and which plan ran it.
    outputs: Vec<Loc>,
    last: Variant,
    /// The plan and threads of one `step` at this batch: streaming, or `gemm`
    /// products for large batches.
    step_plan: Variant,
    step_threads: usize,
    steps: u64,
}

impl Kernel {
    /// Compiles `cell` with `weights` (the streaming plan now, the others when
    /// first needed).
    pub fn compile(cell: &Cell, weights: &Weights, opts: &Options) -> Result<Kernel> {
        if opts.threads == Some(0) {
            return Err(Error::options("threads must be at least 1"));
        }
        let ir = kernel_ir(cell, opts)?;
        let params = weights.resolve(&ir)?;
        let kernel = Kernel {
            id: NEXT_KERNEL_ID.fetch_add(1, Ordering::Relaxed),
            name: ir.name.clone(),
            opts: opts.clone(),
            input_names: ir.inputs.iter().map(|p| p.name.clone()).collect(),
            state_names: ir.states.iter().map(|p| p.name.clone()).collect(),
            output_names: ir.outputs.iter().map(|p| p.name.clone()).collect(),
            input_lens: ir.inputs.iter().map(|p| p.len).collect(),
            state_lens: ir.states.iter().map(|p| p.len).collect(),
            output_lens: ir.outputs.iter().map(|p| p.len).collect(),
            work: schedule::work(&ir),
            ir,
            params,
            builds: Default::default(),
        };
        kernel.build(Variant::Streaming)?;
        Ok(kernel)
    }

    /// The plan `v`, compiled and packed (once).
    fn build(&self, v: Variant) -> Result<&Build> {
        self.builds[v.index()]
            .get_or_init(|| {
                let plan = plan::plan(&self.ir, plan_options(&self.opts, v)).map_err(|e| e.0)?;
                if plan.slots.len() > MAX_SLOTS || plan.outputs.len() > MAX_SLOTS {
                    return Err(format!(
                        "cell `{}` has too many inputs and states: {} buffers (the limit is {MAX_SLOTS})",
                        self.name,
                        plan.slots.len()
                    ));
                }
                let code = compile_plan(&plan).map_err(|e| e.to_string())?;
                let mut weights =
                    AlignedBuf::zeros(plan.weights_len.max(1)).map_err(|e| e.to_string())?;
                pack::pack(&plan, &self.ir, &self.params, weights.as_mut_slice());
                let mut jit = code.phases.iter();
                let phases = plan
                    .tasks
                    .iter()
                    .enumerate()
                    .map(|(t, task)| {
                        let fns = jit.next().cloned().unwrap_or_default();
                        match task {
                            Task::Gemm(blocks) => {
                                vec![Work::Gemm(t, plan::gemm_units(blocks).len())]
                            }
                            _ => fns.into_iter().map(Work::Jit).collect(),
                        }
                    })
                    .collect();
                Ok(Build {
                    plan,
                    code,
                    weights,
                    phases,
                })
            })
            .as_ref()
            .map_err(|e| Error::shape(e.clone()))
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// The IR that was compiled.
    pub fn ir(&self) -> &ir::Cell {
        &self.ir
    }

    /// The streaming plan.
    pub fn plan(&self) -> &Plan {
        match self.build(Variant::Streaming) {
            Ok(b) => &b.plan,
            Err(_) => unreachable!("the streaming plan is built by `compile`"),
        }
    }

    /// The streaming plan's code.
    pub fn code(&self) -> &Code {
        match self.build(Variant::Streaming) {
            Ok(b) => &b.code,
            Err(_) => unreachable!("the streaming plan is built by `compile`"),
        }
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
        self.input_lens[i]
    }

    pub fn state_len(&self, i: usize) -> usize {
        self.state_lens[i]
    }

    pub fn output_len(&self, i: usize) -> usize {
        self.output_lens[i]
    }

    /// The plan and threads the cost model (or the options) pick for a batch and
    /// a sequence length (1: one step per call).
    pub fn choice(&self, batch: usize, seq: usize) -> schedule::Choice {
        let variant = self.opts.plan.map(|v| v.for_steps(seq));
        match (self.opts.threads, variant) {
            // Nothing to choose: skip the host probe.
            (Some(t), Some(v)) => schedule::Choice {
                variant: v,
                threads: t,
                predicted_us: f64::NAN,
                floor_us: f64::NAN,
                bytes_per_step: f64::NAN,
                flops_per_step: f64::NAN,
                level: "?",
            },
            (t, v) => schedule::choose(&self.work, schedule::host(), batch, seq, t, v),
        }
    }

    /// The cost model's prediction and floor for the plan and threads this
    /// kernel runs `batch` x `seq` with (probing the host if need be).
    pub fn prediction(&self, batch: usize, seq: usize) -> schedule::Choice {
        let c = self.choice(batch, seq);
        schedule::predict(
            &self.work,
            schedule::host(),
            c.variant,
            c.threads,
            batch,
            seq,
        )
    }

    pub fn threads_for(&self, batch: usize, seq: usize) -> usize {
        self.choice(batch, seq).threads
    }

    pub fn schedule_name(&self, batch: usize, seq: usize) -> String {
        self.choice(batch, seq).variant.name().to_string()
    }

    /// A state for `batch` rows, all zeros. A batch of 0, or one whose buffers
    /// do not fit in memory, is an error.
    pub fn new_state(&self, batch: usize) -> Result<State> {
        if batch == 0 {
            return Err(Error::shape("the batch must have at least one row"));
        }
        let plan = self.plan();
        let mut offsets = Vec::with_capacity(plan.slots.len());
        let mut total = 0usize;
        let mut strides = Vec::with_capacity(plan.slots.len());
        for slot in &plan.slots {
            offsets.push(total);
            strides.push(slot.stride);
            if slot.kind != SlotKind::Weights {
                // Each buffer starts on a cache line.
                total = batch
                    .checked_mul(slot.stride)
                    .and_then(|n| n.checked_next_multiple_of(16))
                    .and_then(|n| total.checked_add(n))
                    .ok_or_else(|| too_large(batch))?;
            }
        }
        let buf = AlignedBuf::zeros(total.max(16))?;
        let step = self.choice(batch, 1);
        let shared = 1 + plan.input_slots.len() + 2 * plan.state_cur.len();
        Ok(State {
            kernel: self.id,
            batch,
            buf,
            ptrs: vec![0; plan.slots.len()],
            offsets,
            strides,
            shared,
            side: Default::default(),
            state_lens: plan.state_lens.clone(),
            cur_slots: plan.state_cur.clone(),
            names: self.state_names.clone(),
            outputs: plan.outputs.clone(),
            last: Variant::Streaming,
            step_plan: step.variant,
            step_threads: step.threads,
            steps: 0,
        })
    }

    fn check_state(&self, state: &State) -> Result<()> {
        if state.kernel != self.id {
            return Err(Error::shape(format!(
                "this state was made by another kernel; use `new_state` of kernel `{}`",
                self.name
            )));
        }
        Ok(())
    }

    /// One step with one input (the common case: `x`).
    pub fn step(&self, x: &[f32], state: &mut State) -> Result<()> {
        if self.input_names.len() != 1 {
            return Err(Error::shape(format!(
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
        let v = state.step_plan;
        let build = self.build(v)?;
        state.ensure_side(build, v)?;
        let threads = state.step_threads;
        self.execute(build, v, state, inputs, 0, 1, 0, None, threads);
        Ok(())
    }

    fn check_inputs(&self, inputs: &[&[f32]], batch: usize, steps: usize) -> Result<()> {
        if inputs.len() != self.input_names.len() {
            return Err(Error::shape(format!(
                "cell `{}` has {} input{}, {} given",
                self.name,
                self.input_names.len(),
                if self.input_names.len() == 1 { "" } else { "s" },
                inputs.len()
            )));
        }
        for (i, x) in inputs.iter().enumerate() {
            let want = count(&[steps, batch, self.input_lens[i]]);
            if Some(x.len()) != want {
                return Err(Error::shape(format!(
                    "input `{}`: expected {} values ([{}{batch}, {}]), got {}",
                    self.input_names[i],
                    want.map_or("too many".to_string(), |n| n.to_string()),
                    if steps > 1 {
                        format!("{steps}, ")
                    } else {
                        String::new()
                    },
                    self.input_lens[i],
                    x.len()
                )));
            }
        }
        Ok(())
    }

    /// Runs the pool job `job(worker, workers, barrier)` on `threads` workers
    /// (the process's shared pool of that size), or alone when one thread is
    /// asked for or the pool is busy or backing off (`pool`).
    fn on_workers(&self, threads: usize, job: &PoolJob) {
        if threads > 1 {
            if let Some(pool) = pool::shared(threads) {
                if pool.try_run(&|w, team| job(w, team.workers, &|| team.barrier())) {
                    return;
                }
            }
        }
        job(0, 1, &|| {});
    }

    /// Runs steps `t0..t1` of a sequence (`inputs[i]` holds step `t` at
    /// `t * batch * len`), writing each step's outputs to `outputs` (same layout)
    /// if given. One pool job runs all of them: every worker keeps its own slot
    /// table, the states' current and next buffers alternate with the step's
    /// parity (no serial swap), inputs are read in place when their rows need no
    /// padding, and each worker copies its share of the outputs; workers meet
    /// once per phase of the plan (plus once more where a serial copy needs it).
    #[allow(clippy::too_many_arguments)]
    fn execute(
        &self,
        build: &Build,
        v: Variant,
        state: &mut State,
        inputs: &[&[f32]],
        t0: usize,
        t1: usize,
        chunk0: usize,
        outputs: Option<&mut [&mut [f32]]>,
        threads: usize,
    ) {
        let plan = &build.plan;
        let batch = state.batch;
        // Slot tables for both parities (on the stack: a step allocates nothing).
        state.set_ptrs(build, v);
        let nslots = plan.slots.len();
        let mut tables = [[0usize; MAX_SLOTS]; 2];
        tables[0][..nslots].copy_from_slice(&state.ptrs[..nslots]);
        tables[1][..nslots].copy_from_slice(&state.ptrs[..nslots]);
        for s in 0..plan.state_cur.len() {
            tables[1].swap(plan.state_cur[s], plan.state_next[s]);
        }
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
        let mut outs_buf = [(0usize, 0usize); MAX_SLOTS];
        let mut nouts = 0;
        if let Some(o) = outputs {
            for b in o.iter_mut().take(MAX_SLOTS) {
                outs_buf[nouts] = (b.as_mut_ptr() as usize, b.len());
                nouts += 1;
            }
        }
        let outs = &outs_buf[..nouts];
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
        let job = |w: usize, n: usize, barrier: &dyn Fn()| {
            for t in t0..t1 {
                let parity = (t - t0) % 2;
                let mut ptrs = tables[parity];
                let ptrs = &mut ptrs[..nslots];
                for &(slot, stride) in proj {
                    ptrs[slot] += (t - chunk0) * batch * stride * 4;
                }
                if in_place {
                    for (i, &slot) in plan.input_slots.iter().enumerate() {
                        ptrs[slot] = inputs[i][t * batch * self.input_lens[i]..].as_ptr() as usize;
                    }
                } else {
                    if w == 0 {
                        for (i, &slot) in plan.input_slots.iter().enumerate() {
                            let len = self.input_lens[i];
                            let stride = plan.slots[slot].stride;
                            for b in 0..batch {
                                let src =
                                    &inputs[i][(t * batch + b) * len..(t * batch + b + 1) * len];
                                // SAFETY: the slot holds `batch` rows of `stride >= len`
                                // floats; only worker 0 writes it, before the barrier
                                // that lets the others read it.
                                unsafe {
                                    std::ptr::copy_nonoverlapping(
                                        src.as_ptr(),
                                        (ptrs[slot] as *mut f32).add(b * stride),
                                        len,
                                    )
                                };
                            }
                        }
                    }
                    barrier();
                }
                for (p, phase) in build.phases.iter().enumerate() {
                    if p > 0 {
                        barrier();
                    }
                    for work in phase {
                        match *work {
                            Work::Jit(f) => {
                                let (a, b) = share(f.tiles, w, n);
                                if a < b {
                                    // SAFETY: `ptrs` holds one base pointer per slot of
                                    // the plan this code was generated from (the packed
                                    // weights; the state's buffers of `batch * stride`
                                    // floats; inputs read in place only when their rows
                                    // are `stride` floats); the code accesses batch rows
                                    // `0..batch` and tiles `a..b <= tiles`, inside those
                                    // buffers by construction of the plan. Workers write
                                    // disjoint tiles.
                                    unsafe {
                                        (f.ptr)(ptrs.as_ptr(), 0, batch as i64, a as i64, b as i64)
                                    };
                                }
                            }
                            Work::Gemm(task, units) => {
                                let (a, b) = share(units, w, n);
                                if let Task::Gemm(blocks) = &plan.tasks[task] {
                                    gemm_units(blocks, a, b, ptrs, batch);
                                }
                            }
                        }
                    }
                }
                // After the last step, with nothing to copy, the pool's own
                // closing barrier is the next meeting: one fewer per `step` call.
                if t + 1 < t1 || copies || !outs.is_empty() {
                    barrier();
                }
                if copies {
                    if w == 0 {
                        for (s, u) in plan.updates.iter().enumerate() {
                            let Update::Copy(from) = *u else { continue };
                            let to = ptrs[plan.state_next[s]] as *mut f32;
                            let to_stride = plan.slots[plan.state_next[s]].stride;
                            for b in 0..batch {
                                let src = if from.slot == 0 {
                                    weights[from.offset..].as_ptr()
                                } else {
                                    (ptrs[from.slot] as *const f32)
                                        .wrapping_add(from.offset + b * from.stride)
                                };
                                // SAFETY: both locations are `from.len` floats inside
                                // buffers the plan sized; only worker 0 writes, and the
                                // barrier below orders it before the next step.
                                unsafe { std::ptr::copy(src, to.add(b * to_stride), from.len) };
                            }
                        }
                    }
                    barrier();
                }
                for (o, &(out, out_len)) in outs.iter().enumerate() {
                    let loc = plan.outputs[o];
                    let len = loc.len;
                    let (a, b_end) = share(len, w, n);
                    if a >= b_end {
                        continue;
                    }
                    for b in 0..batch {
                        let src = if loc.slot == 0 {
                            weights[loc.offset + a..].as_ptr()
                        } else {
                            (ptrs[loc.slot] as *const f32)
                                .wrapping_add(loc.offset + b * loc.stride + a)
                        };
                        let at = (t * batch + b) * len + a;
                        debug_assert!(at + (b_end - a) <= out_len);
                        // SAFETY: the output buffer is `[T, batch, len]` (checked by
                        // `run_with`), and each worker writes only its elements
                        // `a..b_end` of each row; the source is complete (barrier).
                        unsafe {
                            std::ptr::copy_nonoverlapping(src, (out as *mut f32).add(at), b_end - a)
                        };
                    }
                }
                if out_barrier && !outs.is_empty() {
                    barrier();
                }
            }
        };
        self.on_workers(threads, &job);
        // The states' buffers: swapped once per step.
        if (t1 - t0) % 2 == 1 {
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
                if !plan.outputs.iter().any(|l| l.slot == slot) {
                    continue;
                }
                let len = self.input_lens[i];
                let stride = state.strides[slot];
                let off = state.offsets[slot];
                let buf = state.buf.as_mut_slice();
                for b in 0..batch {
                    let src = ((t1 - 1) * batch + b) * len;
                    buf[off + b * stride..off + b * stride + len]
                        .copy_from_slice(&inputs[i][src..src + len]);
                }
            }
        }
        state.last = v;
        state.steps += (t1 - t0) as u64;
    }

    /// Copies output `name` of the last step into `out` (`[batch, len]`).
    pub fn copy_output(&self, state: &State, name: &str, out: &mut [f32]) -> Result<()> {
        self.check_state(state)?;
        let o = self
            .output_names
            .iter()
            .position(|n| n == name)
            .ok_or_else(|| {
                Error::shape(format!(
                    "no output named `{name}`; the outputs are {}",
                    self.output_names.join(", ")
                ))
            })?;
        let want = state.batch * self.output_lens[o];
        if out.len() != want {
            return Err(Error::shape(format!(
                "output `{name}`: the buffer has {} values, the output {want}",
                out.len()
            )));
        }
        let build = self.build(state.last)?;
        state.read_loc(build, state.last, state.outputs[o], out);
        Ok(())
    }

    /// Output `name` of the last step, `[batch, len]`.
    pub fn output(&self, state: &State, name: &str) -> Result<Vec<f32>> {
        let o = self.output_names.iter().position(|n| n == name);
        let len = o.map_or(0, |o| state.batch * self.output_lens[o]);
        let mut out = vec![0.0; len];
        self.copy_output(state, name, &mut out)?;
        Ok(out)
    }

    /// Runs a whole sequence for a cell with one input and one output:
    /// `xs` is `[T, batch, X]`, `out` receives `[T, batch, Y]`.
    pub fn run(&self, xs: &[f32], state: &mut State, out: &mut [f32]) -> Result<()> {
        if self.input_names.len() != 1 || self.output_names.len() != 1 {
            return Err(Error::shape(format!(
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
    /// if the cell has no input). The plan and thread count come from the options,
    /// or the cost model.
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
            (Some(x), _) if per_step(self.input_lens[0]) > 0 => {
                x.len() / per_step(self.input_lens[0])
            }
            (_, Some(y)) if !self.output_lens.is_empty() => y.len() / per_step(self.output_lens[0]),
            _ => 0,
        };
        self.check_inputs(inputs, batch, steps.max(1))?;
        if outputs.len() != self.output_names.len() {
            return Err(Error::shape(format!(
                "cell `{}` has {} outputs, {} buffers given",
                self.name,
                self.output_names.len(),
                outputs.len()
            )));
        }
        for (o, y) in outputs.iter().enumerate() {
            let want = count(&[steps, batch, self.output_lens[o]]);
            if Some(y.len()) != want {
                return Err(Error::shape(format!(
                    "output `{}`: expected {} values ([{steps}, {batch}, {}]), got {}",
                    self.output_names[o],
                    want.map_or("too many".to_string(), |n| n.to_string()),
                    self.output_lens[o],
                    y.len()
                )));
            }
        }
        if steps == 0 {
            return Ok(());
        }
        let choice = self.choice(batch, steps);
        let v = choice.variant;
        let build = self.build(v)?;
        state.ensure_side(build, v)?;
        let chunk = state.side[v.index()]
            .as_ref()
            .map_or(steps, |s| s.chunk.max(1));
        let mut t0 = 0;
        while t0 < steps {
            let t1 = (t0 + chunk).min(steps);
            if !build.plan.hoists.is_empty() {
                self.project(build, v, inputs, t0, t1, state, choice.threads);
            }
            self.execute(
                build,
                v,
                state,
                inputs,
                t0,
                t1,
                t0,
                Some(&mut *outputs),
                choice.threads,
            );
            t0 = t1;
        }
        Ok(())
    }

    /// Computes the hoisted input projections of steps `t0..t1` with `gemm`, on
    /// the pool: for every projection block, `bias + sum of W @ x_t[b]`.
    #[allow(clippy::too_many_arguments)]
    fn project(
        &self,
        build: &Build,
        v: Variant,
        inputs: &[&[f32]],
        t0: usize,
        t1: usize,
        state: &mut State,
        threads: usize,
    ) {
        let batch = state.batch;
        let cols = (t1 - t0) * batch;
        let Some(side) = state.side[v.index()].as_mut() else {
            return;
        };
        let base = side.buf.addr();
        let weights = build.weights.as_slice();
        // Units: (hoist, block, first row, end row), the same whatever the threads.
        let mut units = Vec::new();
        for (h, hoist) in build.plan.hoists.iter().enumerate() {
            for (bi, blk) in hoist.blocks.iter().enumerate() {
                let mut r = 0;
                while r < blk.len {
                    let end = (r + plan::GEMM_ROWS).min(blk.len);
                    units.push((h, bi, r, end));
                    r = end;
                }
            }
        }
        let offsets = &side.offsets;
        let job = |w: usize, n: usize| {
            let (u0, u1) = share(units.len(), w, n);
            for &(h, bi, r0, r1) in &units[u0..u1] {
                let hoist = &build.plan.hoists[h];
                let blk = &hoist.blocks[bi];
                let m = r1 - r0;
                // The block's rows, for columns (t, b) `stride` floats apart.
                let dst = (base + (offsets[hoist.slot] + blk.offset + r0) * 4) as *mut f32;
                let zeros = [0.0f32; plan::GEMM_ROWS];
                let init = match blk.bias {
                    Some(b) => &weights[b + r0..b + r1],
                    None => &zeros[..m],
                };
                for c in 0..cols {
                    // SAFETY: the projection buffer holds `chunk >= t1 - t0` steps
                    // of `batch` rows of `stride >= blk.offset + blk.len` floats
                    // (`ensure_side`), so column `c < cols`, rows `r0..r1 <=
                    // blk.len` are inside it, and `init` is `m` floats. Each unit
                    // writes only its own rows.
                    unsafe {
                        std::ptr::copy_nonoverlapping(init.as_ptr(), dst.add(c * hoist.stride), m)
                    };
                }
                for &(input, k, matrix) in &blk.terms {
                    let x = inputs[input];
                    // SAFETY: `x` is `[T, batch, k]` (checked by `run_with`), so its
                    // columns `t0*batch .. t1*batch` are `k` floats apart and inside
                    // it; the matrix is `[len, k]` row-major in the packed weights;
                    // `dst` is as above. The unit's rows do not overlap another's.
                    unsafe {
                        gemm_raw(
                            m,
                            cols,
                            k,
                            dst,
                            hoist.stride,
                            weights[matrix + r0 * k..].as_ptr(),
                            k,
                            x[t0 * batch * k..].as_ptr(),
                            k,
                            true,
                        )
                    };
                }
            }
        };
        self.on_workers(threads, &|w, n, _barrier| job(w, n));
    }
}

/// Runs units `u0..u1` of a `gemm` product for batch rows `0..batch`.
fn gemm_units(blocks: &[GemmBlock], u0: usize, u1: usize, ptrs: &[usize], batch: usize) {
    let units = plan::gemm_units(blocks);
    let weights = ptrs[0] as *const f32;
    for &(bi, r0, r1) in &units[u0..u1.min(units.len())] {
        let blk = &blocks[bi];
        let m = r1 - r0;
        let dst = (ptrs[blk.dest.slot] as *mut f32).wrapping_add(blk.dest.offset + r0);
        for b in 0..batch {
            for r in 0..m {
                // SAFETY: the plan sized `dest` for `batch` rows of `stride >= offset +
                // len` floats, and the bias and projection likewise; rows `r0..r1` are
                // inside `len` and this unit's own.
                unsafe {
                    let value = match blk.init {
                        GemmInit::Zero => 0.0,
                        GemmInit::Bias(o) => *weights.add(o + r0 + r),
                        GemmInit::Projection(l) => {
                            *(ptrs[l.slot] as *const f32).add(l.offset + b * l.stride + r0 + r)
                        }
                    };
                    *dst.add(b * blk.dest.stride + r) = value;
                }
            }
        }
        for term in &blk.terms {
            let x = (ptrs[term.input.slot] as *const f32).wrapping_add(term.input.offset);
            // SAFETY: the matrix is `[len, k]` row-major in the packed weights; the
            // input holds `batch` rows of `stride >= k` floats; `dst` as above.
            unsafe {
                gemm_raw(
                    m,
                    batch,
                    term.k,
                    dst,
                    blk.dest.stride,
                    weights.add(term.matrix + r0 * term.k),
                    term.k,
                    x,
                    term.input.stride,
                    true,
                )
            };
        }
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

    /// Makes the buffers plan `v` does not share with the streaming plan.
    fn ensure_side(&mut self, build: &Build, v: Variant) -> Result<()> {
        if v == Variant::Streaming || self.side[v.index()].is_some() {
            return Ok(());
        }
        let plan = &build.plan;
        // Steps per projection buffer: about 8 MiB of them, 1 to 256.
        let row: usize = plan.hoists.iter().map(|h| h.stride).sum::<usize>().max(1);
        let chunk =
            ((8usize << 20) / self.batch.saturating_mul(row).saturating_mul(4)).clamp(1, 256);
        let mut offsets = vec![usize::MAX; plan.slots.len()];
        let mut total = 0usize;
        for (s, slot) in plan.slots.iter().enumerate().skip(self.shared) {
            offsets[s] = total;
            let rows = match slot.kind {
                SlotKind::Projection(_) => chunk.checked_mul(self.batch),
                _ => Some(self.batch),
            };
            total = rows
                .and_then(|r| r.checked_mul(slot.stride))
                .and_then(|n| n.checked_next_multiple_of(16))
                .and_then(|n| total.checked_add(n))
                .ok_or_else(|| too_large(self.batch))?;
        }
        let buf = AlignedBuf::zeros(total.max(16))?;
        if self.ptrs.len() < plan.slots.len() {
            self.ptrs.resize(plan.slots.len(), 0);
        }
        self.side[v.index()] = Some(Side {
            buf,
            offsets,
            chunk,
        });
        Ok(())
    }

    fn set_ptrs(&mut self, build: &Build, v: Variant) {
        let base = self.buf.addr();
        let side = self.side[v.index()].as_ref();
        for s in 0..build.plan.slots.len() {
            self.ptrs[s] = if s == 0 {
                build.weights.addr()
            } else if s < self.shared || v == Variant::Streaming {
                base + self.offsets[s] * 4
            } else {
                match side {
                    Some(side) => side.buf.addr() + side.offsets[s] * 4,
                    None => base,
                }
            };
        }
    }

    fn state_index(&self, name: &str) -> Result<usize> {
        self.names.iter().position(|n| n == name).ok_or_else(|| {
            Error::shape(format!(
                "no state named `{name}`; the states are {}",
                self.names.join(", ")
            ))
        })
    }

    /// Reads a location of plan `v` into `dst` (`batch * len` values).
    fn read_loc(&self, build: &Build, v: Variant, loc: Loc, dst: &mut [f32]) {
        let (buf, base) = if loc.slot == 0 {
            (build.weights.as_slice(), 0)
        } else if loc.slot < self.shared || v == Variant::Streaming {
            (self.buf.as_slice(), self.offsets[loc.slot])
        } else {
            match &self.side[v.index()] {
                Some(side) => (side.buf.as_slice(), side.offsets[loc.slot]),
                None => return,
            }
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
            return Err(Error::shape(format!(
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
            return Err(Error::shape(format!(
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
