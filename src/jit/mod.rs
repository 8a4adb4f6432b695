//! The runtime: compiles a legalized cell's plans with Cranelift, packs its
//! weights, and runs them safely, on one thread or on a pool of workers.
//!
//! [`Kernel`] owns the generated code and the packed weights of each plan
//! ([`Variant`]: streaming, hoisted, gemm, gemm-hoisted; the streaming one is
//! compiled at once, the others when a `run` first needs them). It is `Send +
//! Sync`: any number of threads may step it at once, each with its own
//! [`State`]; one of them at a time gets the shared worker pool (`pool`), the
//! others run on their own thread, with the same results bit for bit (each
//! output is computed by one worker, in a fixed order, whatever the thread
//! count).
//!
//! [`State`] owns every buffer a step touches for one batch size (inputs, the
//! states' current and next values, scratch), allocated once: `step` allocates
//! nothing. (A `run` with a hoisted or gemm plan allocates that plan's buffers
//! once, and each worker thread keeps the packing space of the hoisted
//! projection's blocked products, `kernels::gemm`.)
//!
//! The runtime takes IR and parameter values, not the facade's `Cell` or
//! `Weights`: `Cell::compile` resolves those and calls [`Kernel::new`].
//!
//! Safety: before any call into generated code every plan has been verified
//! (`codegen::plan::verify`: each location inside its slot's rows, each packed
//! range inside the packed weights), every buffer is sized from the plan, and
//! every length the caller gives is checked against the plan; the generated
//! code then touches only those buffers, at offsets the plan computed.

pub(crate) mod buffer;
mod code;
mod exec;
use exec::Time;
mod pool;
mod slots;
mod state;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;

use crate::codegen::plan::{self, Plan, Task};
use crate::codegen::schedule::{self, Choice};
use crate::codegen::{pack, wide, Options, Variant};
use crate::ir;
use crate::{Error, ErrorKind, Result};
use buffer::{count, AlignedBuf};
pub use code::Code;
use code::{compile_plan, Compiled};
/// The shared worker pools, for the network's schedules (its directions run
/// on them as a kernel's tiles do).
pub(crate) use pool::run_shared;
pub use state::State;

/// Most slots a plan may have (the slot table lives on each worker's stack).
const MAX_SLOTS: usize = 256;

static NEXT_KERNEL_ID: AtomicU64 = AtomicU64::new(1);

/// One unit of a phase.
#[derive(Clone, Copy)]
enum Work {
    /// A generated function over its tiles.
    Jit(Compiled),
    /// A `gemm` product (task index in the plan) over its row units.
    Gemm(usize, usize),
    /// The inputs' spectra for the block-circulant products of the next
    /// task (task index), unit by unit of batch rows and inputs.
    Spectra(usize),
    /// A standalone region at the host's full width (index in `Build::wide`).
    Wide(usize),
    /// A `gemm` product (task index) and the region after it, run unit of
    /// rows by unit of rows ([`plan::epilogue_by_rows`]): each unit's
    /// epilogue right after its products, while they are in cache, with no
    /// meeting between.
    GemmThen(usize, Epilogue),
}

/// The region a [`Work::GemmThen`] runs.
#[derive(Clone, Copy)]
enum Epilogue {
    Jit(code::Compiled),
    Wide(usize),
}

/// A plan, its code, its packed weights.
struct Build {
    plan: Plan,
    code: Code,
    weights: AlignedBuf,
    phases: Vec<Vec<Work>>,
    /// The kernels of its batched products and wide regions.
    isa: crate::kernels::Isa,
    /// Its standalone regions, compiled for the wide kernels.
    wide: Vec<crate::kernels::wide::Program>,
    /// Under `Compute::Bf16` where the host has the instructions: the
    /// hoisted projection's matrices packed for them (the offset of each
    /// one's unit-major copy in `weights`, and the copy in bf16).
    bf16: Option<Bf16Weights>,
    /// Under `Compute::Int8` (a `gemm` plan): its matrices for the integer
    /// kernels, which then take every product.
    int8: Option<Int8Weights>,
    /// Pieces its generated functions' tiles run in on a step swept backward
    /// (`exec::Sweep`): [`exec::SWEEP_PIECES`] where the packed weights are
    /// larger than half a core's L2 (a share of them may not fit in it),
    /// else 1 (they fit, read in any order).
    sweep_pieces: usize,
}

/// The hoisted projection's matrices packed for bf16 dot products.
struct Bf16Weights {
    dots: crate::kernels::bf16::Dots,
    matrices: Vec<(usize, crate::kernels::bf16::Packed)>,
}

impl Bf16Weights {
    /// For `plan`'s hoisted matrices, from the parameters' values (already
    /// bf16 values: the matrices are stored so under `Compute::Bf16`), on
    /// the fastest instructions the host has for them (AMX; AVX512-BF16's
    /// `vdpbf16ps` runs slower than the float32 kernels on the Intel hosts
    /// measured, so there the float32 kernels take the exact products).
    fn new(plan: &Plan, ir: &ir::Cell, params: &[Vec<f32>], opts: &Options) -> Option<Bf16Weights> {
        use crate::kernels::bf16::{self, Dots};
        if opts.compute != crate::Compute::Bf16 || plan.matrices.is_empty() {
            return None;
        }
        let dots = Some(Dots::Amx).filter(|d| d.available())?;
        let effective = crate::quant::effective_params(ir, params);
        let matrices = (plan.matrices.iter())
            .filter_map(|m| {
                let ir::Type::Matrix(r, c) = ir.params[m.param.index()].ty else {
                    return None;
                };
                Some((m.offset, bf16::pack(&effective[m.param.index()], r, c)))
            })
            .collect();
        Some(Bf16Weights { dots, matrices })
    }

    /// The bf16 copy of the matrix whose unit-major copy is at `offset`.
    fn matrix(&self, offset: usize) -> Option<&crate::kernels::bf16::Packed> {
        self.matrices.iter().find(|m| m.0 == offset).map(|m| &m.1)
    }
}

/// Under `Compute::Int8`: every matrix a `gemm` plan multiplies, packed for
/// the integer kernels (`kernels::int8`), by where the plan keeps its float
/// copy (a step's terms by their panels' offset, the hoisted projection's
/// matrices by their unit-major copy's).
struct Int8Weights {
    dots: crate::kernels::int8::Dots,
    panels: Vec<(usize, crate::kernels::int8::Packed)>,
    matrices: Vec<(usize, crate::kernels::int8::Packed)>,
}

impl Int8Weights {
    /// For plan `v` of a kernel computing in `opts.compute` (`None` unless
    /// it is int8 and `v` a `gemm` plan), from the parameters' values as
    /// given (quantized here as `--precision int8` stores them), on the
    /// integer path of the kernel's ISA (`Dots::for_isa`). An error names what the int8 kernels
    /// cannot multiply: a product the plan does not run on them (none
    /// should reach here: `cell::legal_ir` refuses block-circulant
    /// weights), or a matrix of more than `int8::MAX_K` columns.
    fn new(
        plan: &Plan,
        ir: &ir::Cell,
        params: &[Vec<f32>],
        opts: &Options,
        v: Variant,
    ) -> std::result::Result<Option<Int8Weights>, (ErrorKind, String)> {
        use crate::kernels::int8::{self, Dots};
        if opts.compute != crate::Compute::Int8 || !v.uses_gemm() {
            return Ok(None);
        }
        let dots = Dots::for_isa(opts.isa.unwrap_or_else(crate::kernels::Isa::detect));
        let pack = |m: &plan::PackVector| -> std::result::Result<_, (ErrorKind, String)> {
            let p = &ir.params[m.param.index()];
            let ir::Type::Matrix(r, c) = p.ty else {
                return Err((
                    ErrorKind::Internal,
                    format!("internal error: `{}` is packed as a matrix", p.name),
                ));
            };
            let (q, scales) = crate::quant::int8_rows(&params[m.param.index()], c);
            let packed = int8::pack(dots, &q, &scales, r, c).map_err(|e| {
                (
                    ErrorKind::Options,
                    format!("compute int8 cannot multiply parameter `{}`: {e}", p.name),
                )
            })?;
            Ok((m.offset, packed))
        };
        for task in &plan.tasks {
            let unsupported = match task {
                Task::Product(_) => Some("a product on generated kernels"),
                Task::Spectra(_) => Some("block-circulant products"),
                Task::Gemm(blocks) if blocks.iter().any(|b| b.spectral.is_some()) => {
                    Some("block-circulant products")
                }
                _ => None,
            };
            if let Some(what) = unsupported {
                return Err((
                    ErrorKind::Internal,
                    format!(
                        "internal error: plan {} of cell `{}` has {what}, which compute int8 \
                         does not run",
                        v.name(),
                        ir.name
                    ),
                ));
            }
        }
        let weights = Int8Weights {
            dots,
            panels: plan
                .panels
                .iter()
                .map(pack)
                .collect::<std::result::Result<_, _>>()?,
            matrices: plan
                .matrices
                .iter()
                .map(pack)
                .collect::<std::result::Result<_, _>>()?,
        };
        // Every product the plan runs finds its matrix, of its shape (the
        // runtime relies on it).
        let fits = |m: Option<&int8::Packed>, rows: usize, k: usize| {
            m.is_some_and(|m| (m.m, m.k) == (rows, k))
        };
        let steps = plan.tasks.iter().flat_map(|t| match t {
            Task::Gemm(blocks) => blocks.as_slice(),
            _ => &[],
        });
        let step_ok = steps
            .flat_map(|b| b.terms.iter().map(move |t| (b.len, t)))
            .all(|(len, t)| fits(weights.panels(t.panels), len, t.k));
        let hoist_ok = (plan.hoists.iter().flat_map(|h| &h.blocks))
            .flat_map(|b| b.terms.iter().map(move |t| (b.len, t)))
            .all(|(len, &(_, k, matrix))| fits(weights.matrix(matrix), len, k));
        if !step_ok || !hoist_ok {
            return Err((
                ErrorKind::Internal,
                format!(
                    "internal error: plan {} of cell `{}` multiplies a matrix compute int8 \
                     did not pack",
                    v.name(),
                    ir.name
                ),
            ));
        }
        Ok(Some(weights))
    }

    /// The matrix of a step's term whose panels are at `offset`.
    fn panels(&self, offset: usize) -> Option<&crate::kernels::int8::Packed> {
        self.panels.iter().find(|m| m.0 == offset).map(|m| &m.1)
    }

    /// The hoisted projection's matrix whose unit-major copy is at `offset`.
    fn matrix(&self, offset: usize) -> Option<&crate::kernels::int8::Packed> {
        self.matrices.iter().find(|m| m.0 == offset).map(|m| &m.1)
    }
}

/// A compiled cell with its packed weights: call [`Kernel::step`] or
/// [`Kernel::run`] with a [`State`] from [`Kernel::new_state`]. Every length
/// is checked before generated code runs; a kernel may be shared by threads,
/// each with its own states.
///
/// ```
/// # fn main() -> cellc::Result<()> {
/// let cell = cellc::Cell::from_source("tiny.rnn", "
///     dim X = 3
///     dim H = 4
///     input x: [X]
///     state h: [H]
///     param W: [H, X]
///     output y: [H]
///     param U: [H, H]
///     h' = tanh(W @ x + U @ h)
///     y = h'
/// ")?;
/// let kernel = cell.compile(&cellc::Weights::random(&cell.ir()?, 1), &cellc::Options::default())?;
/// let batch = 2;
/// let mut state = kernel.new_state(batch)?;
/// // One step: `x` is [batch, X].
/// kernel.step(&[0.5; 2 * 3], &mut state)?;
/// let y = kernel.output(&state, "y")?;
/// assert_eq!(y.len(), batch * 4);
/// // A sequence: [T, batch, X] in, [T, batch, H] out.
/// let steps = 5;
/// let mut ys = vec![0.0; steps * batch * 4];
/// kernel.run(&vec![0.1; steps * batch * 3], &mut state, &mut ys)?;
/// assert_eq!(state.steps(), 6);
/// // A short buffer is an error, never a read past its end.
/// assert!(kernel.step(&[0.5; 5], &mut state).is_err());
/// # Ok(())
/// # }
/// ```
pub struct Kernel {
    id: u64,
    name: String,
    opts: Options,
    /// The IR that was compiled (optimized, or not; legalized).
    ir: ir::Cell,
    /// The parameters, for plans compiled later.
    params: Vec<Vec<f32>>,
    streaming: Build,
    /// The other plans, built on first use (indexed by `Variant::index`).
    others: [OnceLock<std::result::Result<Build, (ErrorKind, String)>>; 4],
    /// Slots every plan lays out alike: the weights, inputs, states.
    shared_slots: usize,
    work: schedule::Work,
    /// The host's rates as the cost model sees them for this kernel's
    /// arithmetic ([`crate::codegen::host::Host::computing`]).
    host: crate::codegen::host::Host,
    state_names: Vec<String>,
    input_names: Vec<String>,
    output_names: Vec<String>,
    input_lens: Vec<usize>,
    state_lens: Vec<usize>,
    output_lens: Vec<usize>,
}

impl Kernel {
    /// Compiles a legalized cell (`opt::legalize`) with its parameters' values
    /// (in parameter order, row-major): the streaming plan now, the others when
    /// first needed.
    ///
    /// The IR is verified first ([`ir::verify::verify`]): an IR that does not
    /// verify (a parameter whose type disagrees with the products that read
    /// it, an operand that points forward) is an error, never packed.
    pub fn new(ir: ir::Cell, params: Vec<Vec<f32>>, opts: &Options) -> Result<Kernel> {
        opts.check().map_err(Error::options)?;
        ir::verify::verify(&ir).map_err(|e| {
            Error::internal(format!(
                "the IR of cell `{}` given to Kernel::new does not verify: {e}",
                ir.name
            ))
        })?;
        check_params(&ir, &params)?;
        let streaming = build(&ir, &params, opts, Variant::Streaming, None)
            .map_err(|(kind, m)| Error::new(kind, m))?;
        let p = &streaming.plan;
        let shared_slots = 1 + p.input_slots.len() + 2 * p.state_cur.len();
        Ok(Kernel {
            id: NEXT_KERNEL_ID.fetch_add(1, Ordering::Relaxed),
            name: ir.name.clone(),
            opts: opts.clone(),
            input_names: ir.inputs.iter().map(|p| p.name.clone()).collect(),
            state_names: ir.states.iter().map(|p| p.name.clone()).collect(),
            output_names: ir.outputs.iter().map(|p| p.name.clone()).collect(),
            input_lens: ir.inputs.iter().map(|p| p.len).collect(),
            state_lens: ir.states.iter().map(|p| p.len).collect(),
            output_lens: ir.outputs.iter().map(|p| p.len).collect(),
            work: schedule::work(&ir, opts.isa.unwrap_or_else(crate::kernels::Isa::detect))
                .computing(opts.compute),
            host: schedule::host().computing(opts.compute),
            ir,
            params,
            streaming,
            others: Default::default(),
            shared_slots,
        })
    }

    /// Replaces the parameters' values (in parameter order, row-major, as
    /// [`Kernel::new`] takes them), repacking every plan compiled so far: no
    /// code is generated again. The states made before stay valid.
    pub fn set_params(&mut self, params: Vec<Vec<f32>>) -> Result<()> {
        check_params(&self.ir, &params)?;
        pack::pack(
            &self.streaming.plan,
            &self.ir,
            &params,
            self.streaming.weights.as_mut_slice(),
        );
        for (i, b) in self.others.iter_mut().enumerate() {
            let Some(Ok(b)) = b.get_mut() else {
                continue;
            };
            let (ir, p) = plan_inputs(&self.ir, &params, &self.opts, Variant::ALL[i]);
            pack::pack(&b.plan, &ir, &p, b.weights.as_mut_slice());
            b.bf16 = Bf16Weights::new(&b.plan, &ir, &p, &self.opts);
            b.int8 = Int8Weights::new(&b.plan, &ir, &p, &self.opts, Variant::ALL[i])
                .map_err(|(kind, m)| Error::new(kind, m))?;
        }
        self.params = params;
        Ok(())
    }

    /// The plan `v`, compiled and packed (once).
    fn build(&self, v: Variant) -> Result<&Build> {
        if self.opts.compute == crate::Compute::Int8 && !v.uses_gemm() {
            return Err(Error::options(format!(
                "compute int8 runs the `gemm` and `gemm-hoisted` plans; plan `{}` multiplies \
                 in float32",
                v.name()
            )));
        }
        if v == Variant::Streaming {
            return Ok(&self.streaming);
        }
        self.others[v.index()]
            .get_or_init(|| {
                let (ir, params) = plan_inputs(&self.ir, &self.params, &self.opts, v);
                build(&ir, &params, &self.opts, v, Some(&self.streaming))
            })
            .as_ref()
            .map_err(|(kind, m)| Error::new(*kind, m.clone()))
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// The arithmetic of its products (its options').
    pub fn compute(&self) -> crate::Compute {
        self.opts.compute
    }

    /// The IR that was compiled.
    pub fn ir(&self) -> &ir::Cell {
        &self.ir
    }

    /// The streaming plan's code.
    pub fn code(&self) -> &Code {
        &self.streaming.code
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

    /// Length of input `i`'s vector (per batch row), `i` in the order of
    /// [`Kernel::input_names`].
    ///
    /// # Panics
    /// If `i` is not below the number of inputs, like indexing a slice
    /// (the lengths by name never panic: [`Kernel::output`], [`State::get`]).
    pub fn input_len(&self, i: usize) -> usize {
        self.input_lens[i]
    }

    /// Length of state `i`'s vector (per batch row), in the order of
    /// [`Kernel::state_names`].
    ///
    /// # Panics
    /// If `i` is not below the number of states.
    pub fn state_len(&self, i: usize) -> usize {
        self.state_lens[i]
    }

    /// Length of output `i`'s vector (per batch row), in the order of
    /// [`Kernel::output_names`].
    ///
    /// # Panics
    /// If `i` is not below the number of outputs.
    pub fn output_len(&self, i: usize) -> usize {
        self.output_lens[i]
    }

    /// The plan and threads the options (or the cost model) pick for a batch
    /// and a sequence length (1: one step per call), with the model's
    /// prediction and floor.
    pub fn choice(&self, batch: usize, seq: usize) -> Choice {
        self.choice_on(batch, seq, self.opts.threads)
    }

    /// [`Kernel::choice`] on `threads` threads (`None`: the cost model's
    /// count), as a network's schedule runs the kernel.
    pub(crate) fn choice_on(&self, batch: usize, seq: usize, threads: Option<usize>) -> Choice {
        let variant = self.opts.plan.map(|v| v.for_steps(seq));
        schedule::choose(&self.work, &self.host, batch, seq, threads, variant)
    }

    /// A state for `batch` rows, all zeros. A batch of 0, or one whose buffers
    /// do not fit in memory, is an error.
    pub fn new_state(&self, batch: usize) -> Result<State> {
        State::new(self, batch)
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
        let mut scratch = std::mem::take(&mut state.rounded);
        let rounded = self.round_inputs(inputs, &mut scratch);
        self.execute(
            build,
            v,
            state,
            rounded.as_deref().unwrap_or(inputs),
            0,
            1,
            0,
            Time::FORWARD,
            None,
            threads,
            state.step_rows_apart,
        );
        drop(rounded);
        state.rounded = scratch;
        Ok(())
    }

    /// Under [`crate::Compute::Bf16`], the inputs rounded to bf16 in
    /// `scratch` (the state's, kept between calls); `None` otherwise.
    fn round_inputs<'a>(
        &self,
        inputs: &[&[f32]],
        scratch: &'a mut Vec<f32>,
    ) -> Option<Vec<&'a [f32]>> {
        if self.opts.compute != crate::Compute::Bf16 {
            return None;
        }
        scratch.resize(inputs.iter().map(|x| x.len()).sum(), 0.0);
        let mut rest = &mut scratch[..];
        let mut parts = Vec::with_capacity(inputs.len());
        for x in inputs {
            let (part, tail) = std::mem::take(&mut rest).split_at_mut(x.len());
            crate::kernels::bf16::round_values(x, part);
            parts.push(&*part);
            rest = tail;
        }
        Some(parts)
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

    /// Copies output `name` of the last step into `out` (`[batch, len]`).
    pub fn copy_output(&self, state: &State, name: &str, out: &mut [f32]) -> Result<()> {
        self.check_state(state)?;
        let o = self.output_index(name)?;
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

    fn output_index(&self, name: &str) -> Result<usize> {
        self.output_names
            .iter()
            .position(|n| n == name)
            .ok_or_else(|| {
                Error::shape(format!(
                    "no output named `{name}`; the outputs are {}",
                    self.output_names.join(", ")
                ))
            })
    }

    /// Output `name` of the last step, `[batch, len]`.
    pub fn output(&self, state: &State, name: &str) -> Result<Vec<f32>> {
        let o = self.output_index(name)?;
        let mut out = vec![0.0; state.batch * self.output_lens[o]];
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
        self.run_choosing(inputs, state, outputs, false, |batch, steps| {
            self.choice(batch, steps)
        })
    }

    /// The plan the cost model picks for one thread (or the one the options
    /// force): a choice that does not depend on the thread count, for runs
    /// whose results must not either (plans differ in the order of their
    /// sums; thread counts do not).
    pub(crate) fn variant_for_any_threads(&self, batch: usize, seq: usize) -> Variant {
        match self.opts.plan {
            Some(v) => v.for_steps(seq),
            None => schedule::choose(&self.work, &self.host, batch, seq, Some(1), None).variant,
        }
    }

    /// The bytes of weights plan `variant` reads per step (its per-step
    /// products' weights), by the cost model.
    pub(crate) fn step_bytes(&self, batch: usize, seq: usize, variant: Variant) -> f64 {
        schedule::choose(&self.work, &self.host, batch, seq, Some(1), Some(variant)).bytes_per_step
    }

    /// [`Kernel::run_with`] on plan `variant`, on `threads` threads (the
    /// options' or the cost model's count if `None`).
    pub(crate) fn run_planned(
        &self,
        inputs: &[&[f32]],
        state: &mut State,
        outputs: &mut [&mut [f32]],
        variant: Variant,
        threads: Option<usize>,
    ) -> Result<()> {
        self.run_planned_in(inputs, state, outputs, variant, threads, false)
    }

    /// [`Kernel::run_planned`], from the sequence's last step to its first
    /// when `reversed`: step `t` reads and writes step `T - 1 - t` of the
    /// buffers, which stay in their own order.
    pub(crate) fn run_planned_in(
        &self,
        inputs: &[&[f32]],
        state: &mut State,
        outputs: &mut [&mut [f32]],
        variant: Variant,
        threads: Option<usize>,
        reversed: bool,
    ) -> Result<()> {
        let threads = threads.or(self.opts.threads);
        self.run_choosing(inputs, state, outputs, reversed, |batch, steps| {
            schedule::choose(&self.work, &self.host, batch, steps, threads, Some(variant))
        })
    }

    fn run_choosing(
        &self,
        inputs: &[&[f32]],
        state: &mut State,
        outputs: &mut [&mut [f32]],
        reversed: bool,
        choose: impl Fn(usize, usize) -> Choice,
    ) -> Result<()> {
        self.check_state(state)?;
        let batch = state.batch;
        let per_step = |len: usize| batch * len;
        let steps = match (inputs.first(), outputs.first()) {
            (Some(x), _) if !self.input_lens.is_empty() => x.len() / per_step(self.input_lens[0]),
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
        let choice = choose(batch, steps);
        let v = choice.variant;
        let build = self.build(v)?;
        state.ensure_side(build, v)?;
        let chunk = state.chunk(v).unwrap_or(steps);
        let time = Time {
            reversed: reversed.then_some(steps),
        };
        let mut scratch = std::mem::take(&mut state.rounded);
        let rounded = self.round_inputs(inputs, &mut scratch);
        let inputs = rounded.as_deref().unwrap_or(inputs);
        let mut t0 = 0;
        while t0 < steps {
            let t1 = (t0 + chunk).min(steps);
            // The chunk's steps where they are in the buffers: backwards
            // from `T - t0`, when reversed.
            let first = if reversed { steps - t1 } else { t0 };
            if !build.plan.hoists.is_empty() {
                let end = first + (t1 - t0);
                self.project(build, v, inputs, first, end, state, choice.threads);
            }
            self.execute(
                build,
                v,
                state,
                inputs,
                t0,
                t1,
                first,
                time,
                Some(&mut *outputs),
                choice.threads,
                choice.rows_apart,
            );
            t0 = t1;
        }
        drop(rounded);
        state.rounded = scratch;
        Ok(())
    }
}

/// The IR and the parameters' values plan `v` is built from: the kernel's,
/// except that under [`crate::Compute::Bf16`] the `gemm` plans store their
/// bf16 matrices as the float32 values they stand for (exactly: the same
/// products). Those plans serve batches, where every weight read is used
/// by many rows and widening bf16 panels costs more than their bytes save
/// (measured at batch 64: 1.14x the step's time); the streaming plans keep
/// them narrow, for the steps whose weights' bytes are their limit.
fn plan_inputs<'a>(
    ir: &'a ir::Cell,
    params: &'a [Vec<f32>],
    opts: &Options,
    v: Variant,
) -> (
    std::borrow::Cow<'a, ir::Cell>,
    std::borrow::Cow<'a, [Vec<f32>]>,
) {
    use std::borrow::Cow;
    let widen =
        |p: &ir::Param| p.precision == ir::Precision::Bf16 && matches!(p.ty, ir::Type::Matrix(..));
    if opts.compute != crate::Compute::Bf16 || !v.uses_gemm() || !ir.params.iter().any(widen) {
        return (Cow::Borrowed(ir), Cow::Borrowed(params));
    }
    let values: Vec<Vec<f32>> = crate::quant::effective_params(ir, params)
        .into_iter()
        .map(Cow::into_owned)
        .collect();
    let mut wide = ir.clone();
    for p in wide.params.iter_mut().filter(|p| widen(p)) {
        p.precision = ir::Precision::F32;
    }
    (Cow::Owned(wide), Cow::Owned(values))
}

/// One value per element of each parameter of `ir`, in order, and narrow
/// ones representable (`quant::check`).
fn check_params(ir: &ir::Cell, params: &[Vec<f32>]) -> Result<()> {
    for (k, p) in ir.params.iter().enumerate() {
        let want = match p.ty {
            ir::Type::Matrix(r, c) => r.checked_mul(c),
            ir::Type::Vector(n) => Some(n),
            ir::Type::Scalar => Some(1),
        };
        if params.get(k).map(Vec::len) != want {
            return Err(Error::shape(format!(
                "parameter `{}` needs {} values, {} given",
                p.name,
                want.map_or("too many".into(), |n| n.to_string()),
                params.get(k).map_or(0, Vec::len)
            )));
        }
    }
    if params.len() != ir.params.len() {
        return Err(Error::shape(format!(
            "cell `{}` has {} parameters, {} given",
            ir.name,
            ir.params.len(),
            params.len()
        )));
    }
    crate::quant::check(ir, params).map_err(|m| Error::new(ErrorKind::Weights, m))
}

/// Plans, verifies, compiles and packs plan `v` of a legalized cell. A plan
/// other than the streaming one must lay out the weights, inputs and states
/// as `streaming` does (a state's buffers serve every plan).
fn build(
    ir: &ir::Cell,
    params: &[Vec<f32>],
    opts: &Options,
    v: Variant,
    streaming: Option<&Build>,
) -> std::result::Result<Build, (ErrorKind, String)> {
    let plan = plan::plan(ir, v, opts.optimize).map_err(|e| {
        let kind = if e.0.starts_with("internal error") {
            ErrorKind::Internal
        } else {
            ErrorKind::TooLarge
        };
        (kind, e.0)
    })?;
    if plan.slots.len() > MAX_SLOTS || plan.outputs.len() > MAX_SLOTS {
        return Err((
            ErrorKind::TooLarge,
            format!(
                "cell `{}` has too many inputs, states and outputs: {} buffers (the limit is {MAX_SLOTS})",
                ir.name,
                plan.slots.len().max(plan.outputs.len())
            ),
        ));
    }
    if let Some(s) = streaming {
        let shared = 1 + plan.input_slots.len() + 2 * plan.state_cur.len();
        if plan.slots.get(..shared) != s.plan.slots.get(..shared) {
            return Err((
                ErrorKind::Internal,
                format!(
                    "internal error: plan {} lays out the inputs and states unlike the streaming plan",
                    v.name()
                ),
            ));
        }
    }
    let isa = opts.isa.unwrap_or_else(crate::kernels::Isa::detect);
    if !isa.available() {
        let have: Vec<&str> = crate::kernels::Isa::ALL
            .into_iter()
            .filter(|i| i.available())
            .map(|i| i.name())
            .collect();
        return Err((
            ErrorKind::Options,
            format!(
                "this CPU cannot run the {} kernels; it can run: {}",
                isa.name(),
                have.join(", ")
            ),
        ));
    }
    let code = compile_plan(&plan).map_err(|e| (e.kind(), e.to_string()))?;
    let mut weights =
        AlignedBuf::zeros(plan.weights_len.max(1)).map_err(|e| (e.kind(), e.to_string()))?;
    pack::pack(&plan, ir, params, weights.as_mut_slice());
    let mut wide = Vec::new();
    let mut phases: Vec<Vec<Work>> = Vec::new();
    let mut t = 0;
    while t < plan.tasks.len() {
        let fns = code.phases.get(t).cloned().unwrap_or_default();
        // A standalone region, at full width where the host has it.
        let mut region = |t: usize, fns: &[code::Compiled]| -> Option<Epilogue> {
            let Task::Region(rc) = &plan.tasks[t] else {
                return None;
            };
            if isa.has_region_kernels() {
                if let Some(p) = wide::program(rc) {
                    wide.push(p);
                    return Some(Epilogue::Wide(wide.len() - 1));
                }
            }
            match fns {
                [f] if !f.by_rows => Some(Epilogue::Jit(*f)),
                _ => None,
            }
        };
        match &plan.tasks[t] {
            Task::Gemm(blocks) => {
                let next = match plan.tasks.get(t + 1) {
                    Some(Task::Region(rc)) if plan::epilogue_by_rows(blocks, rc) => {
                        let next_fns = code.phases.get(t + 1).cloned().unwrap_or_default();
                        region(t + 1, &next_fns)
                    }
                    _ => None,
                };
                if let Some(e) = next {
                    phases.push(vec![Work::GemmThen(t, e)]);
                    t += 2;
                    continue;
                }
                phases.push(vec![Work::Gemm(t, plan::gemm_units(blocks).len())]);
            }
            Task::Spectra(_) => phases.push(vec![Work::Spectra(t)]),
            Task::Region(_) => match region(t, &fns) {
                Some(Epilogue::Wide(i)) => phases.push(vec![Work::Wide(i)]),
                _ => phases.push(fns.into_iter().map(Work::Jit).collect()),
            },
            _ => phases.push(fns.into_iter().map(Work::Jit).collect()),
        }
        t += 1;
    }
    let bf16 = Bf16Weights::new(&plan, ir, params, opts);
    let int8 = Int8Weights::new(&plan, ir, params, opts, v)?;
    let weight_bytes = weights.len() * std::mem::size_of::<f32>();
    let sweep_pieces = if weight_bytes > crate::codegen::schedule::host().l2 / 2 {
        exec::SWEEP_PIECES
    } else {
        1
    };
    Ok(Build {
        plan,
        code,
        weights,
        phases,
        isa,
        wide,
        bf16,
        int8,
        sweep_pieces,
    })
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Rows apart (each thread runs its own batch rows through every step)
    /// give the bits of the threads sharing each step, on every example,
    /// plan and ISA this host has: batches of one row (one thread idle),
    /// odd and even ones, shares that would leave a worker one row (which a
    /// generated product sums apart), over sequences (the hoisted
    /// projections) and one step; all outputs and final states.
    #[test]
    fn rows_apart_give_the_shared_steps_bits() {
        let mut examples: Vec<_> = std::fs::read_dir("examples")
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|e| e == "rnn"))
            .collect();
        examples.sort();
        for path in examples {
            let cell = crate::Cell::from_file(&path).unwrap();
            let dims: Vec<(&str, u64)> = [("X", 12), ("H", 20), ("P", 10)]
                .into_iter()
                .filter(|(n, _)| cell.dim_names().iter().any(|d| d == n))
                .collect();
            let cell = cell.dims(&dims).unwrap();
            let ir = cell.ir().unwrap();
            let weights = crate::Weights::random(&ir, 5);
            for isa in crate::Isa::ALL.into_iter().filter(|i| i.available()) {
                let opts = Options {
                    isa: Some(isa),
                    ..Options::default()
                };
                let kernel = cell.compile(&weights, &opts).unwrap();
                for (variant, batch, steps, threads) in Variant::ALL.into_iter().flat_map(|v| {
                    [
                        (v, 1, 7, 2),
                        (v, 5, 7, 2),
                        (v, 5, 7, 3),
                        (v, 7, 3, 4),
                        (v, 16, 40, 2),
                        (v, 6, 1, 3),
                    ]
                }) {
                    let mut rng = crate::gen::Rng(batch as u64);
                    let xs: Vec<Vec<f32>> = (0..kernel.input_names().len())
                        .map(|i| {
                            let n = steps * batch * kernel.input_len(i);
                            rng.vec(n, 1.0).into_iter().map(|v| v as f32).collect()
                        })
                        .collect();
                    let run = |rows_apart: bool| {
                        let mut state = kernel.new_state(batch).unwrap();
                        let mut ys: Vec<Vec<f32>> = (0..kernel.output_names().len())
                            .map(|o| vec![0.0; steps * batch * kernel.output_len(o)])
                            .collect();
                        let inputs: Vec<&[f32]> = xs.iter().map(Vec::as_slice).collect();
                        let mut outs: Vec<&mut [f32]> =
                            ys.iter_mut().map(Vec::as_mut_slice).collect();
                        kernel
                            .run_choosing(&inputs, &mut state, &mut outs, false, |b, s| Choice {
                                variant: variant.for_steps(s),
                                threads,
                                rows_apart,
                                ..kernel.choice(b, s)
                            })
                            .unwrap();
                        for name in kernel.state_names() {
                            ys.push(state.get(name).unwrap());
                        }
                        ys
                    };
                    let (shared, apart) = (run(false), run(true));
                    let same = shared
                        .iter()
                        .flatten()
                        .zip(apart.iter().flatten())
                        .all(|(a, b)| a.to_bits() == b.to_bits());
                    assert!(
                        same,
                        "{} {} {} batch {batch} T = {steps} on {threads} threads",
                        path.display(),
                        isa.name(),
                        variant.name()
                    );
                }
            }
        }
    }

    /// Weights larger than half a core's L2 are swept back and forth
    /// (`exec::Sweep`): on odd steps the products' units run last to first
    /// and the generated functions' tiles in pieces, last piece first. On
    /// every plan and ISA this host has, batch 1 and 3, 1 to 3 threads, one
    /// step per call and whole sequences, the kernel computes what the
    /// interpreter computes (a unit or piece skipped or run twice would be
    /// off by far more than the tolerance).
    #[test]
    fn steps_swept_backward_match_the_interpreter() {
        let l2 = crate::codegen::schedule::host().l2 as f64;
        // An LSTM's packed weights: 16 H (X + H) bytes, over half the L2.
        let h = ((l2 / 32.0).sqrt() * 1.25).ceil() as u64;
        // The layer-normalized LSTM's step has functions that run by rows
        // (reductions across tiles), which are never cut into pieces.
        for name in ["lstm", "gru", "layernorm_lstm"] {
            let cell = crate::Cell::from_file(format!("examples/{name}.rnn"))
                .and_then(|c| c.dims(&[("X", 8), ("H", h)]))
                .unwrap();
            let ir = cell.ir().unwrap();
            let weights = crate::Weights::random(&ir, 11);
            let reference = crate::interp::ParamValues::from_f32(&weights.resolve(&ir).unwrap());
            for isa in crate::Isa::ALL.into_iter().filter(|i| i.available()) {
                for variant in Variant::ALL {
                    for threads in [1, 2, 3] {
                        let opts = Options {
                            isa: Some(isa),
                            plan: Some(variant),
                            threads: Some(threads),
                            ..Options::default()
                        };
                        let kernel = cell.compile(&weights, &opts).unwrap();
                        let pieces = kernel.build(variant).unwrap().sweep_pieces;
                        assert_eq!(pieces, exec::SWEEP_PIECES, "{name} H = {h}");
                        for batch in [1, 3] {
                            let d = crate::fuzzing::differential(
                                &kernel, &ir, &reference, batch, 5, 7, 1.0,
                            );
                            assert!(
                                d.worst < 1e-4,
                                "{name} H = {h} {} {} batch {batch} on {threads} threads: \
                                 error {:e}",
                                isa.name(),
                                variant.name(),
                                d.worst
                            );
                        }
                    }
                }
            }
        }
    }

    /// A run from the last step to the first gives, bit for bit, what a run
    /// over a reversed copy of the sequence gives, reversed back: on every
    /// plan and ISA this host has, over several projection chunks (batch 64
    /// of an LSTM at H = 256 holds 32 steps per chunk) and over one step.
    #[test]
    fn reversed_runs_are_runs_of_the_reversed_sequence() {
        let cell = crate::Cell::from_file("examples/lstm.rnn")
            .and_then(|c| c.dims(&[("X", 16), ("H", 256)]))
            .unwrap();
        let ir = cell.ir().unwrap();
        let weights = crate::Weights::random(&ir, 3);
        let batch = 64;
        let flip = |v: &[f32], steps: usize| -> Vec<f32> {
            let n = v.len() / steps;
            v.chunks(n).rev().flatten().copied().collect()
        };
        for (isa, variant) in (crate::Isa::ALL.into_iter().filter(|i| i.available()))
            .flat_map(|isa| Variant::ALL.map(|v| (isa, v)))
        {
            let opts = Options {
                isa: Some(isa),
                ..Options::default()
            };
            let kernel = cell.compile(&weights, &opts).unwrap();
            for steps in [70, 1] {
                let mut rng = crate::gen::Rng(steps as u64);
                let x: Vec<f32> = (rng.vec(steps * batch * 16, 1.0).into_iter())
                    .map(|v| v as f32)
                    .collect();
                let out_len = steps * batch * kernel.output_len(0);
                let run = |x: &[f32], reversed: bool| {
                    let mut state = kernel.new_state(batch).unwrap();
                    let mut y = vec![0.0; out_len];
                    kernel
                        .run_planned_in(&[x], &mut state, &mut [&mut y], variant, Some(2), reversed)
                        .unwrap();
                    (y, state.get("c").unwrap())
                };
                let (y, c) = run(&x, true);
                let (y_flipped, c_flipped) = run(&flip(&x, steps), false);
                let what = format!("{} {} T = {steps}", isa.name(), variant.name());
                assert!(y == flip(&y_flipped, steps), "{what}: outputs");
                assert!(c == c_flipped, "{what}: final state");
            }
        }
    }
}
