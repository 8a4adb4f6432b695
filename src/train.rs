//! Training a cell: a forward pass that keeps a tape, and the backward pass
//! through time, both JIT-compiled from the same `.rnn` source.
//!
//! The forward kernel is the cell with more outputs, the tape: each state's
//! value at the start of each step, and each sum of products where it leaves
//! the sum (a gate's pre-activation: `grad::taped_values`). With the inputs,
//! that is all the backward pass needs: it recomputes the element-wise work
//! of a step, no product. The backward kernel is the cell's backward cell
//! ([`crate::grad`]) with its transposed products as products of transposed
//! copies of the weights, through the optimizer like any cell: for an LSTM,
//! per step one fused region of the element-wise adjoints and one product of
//! `[Uᵀ]` with the stacked gate adjoints, giving `dh`. It runs from the last
//! step to the first, reading the tape where the forward pass left it, its
//! state the adjoint of the cell's. After the loop, each weight's gradient is
//! one product over all `T·B` rows (`dW = Σ dz vᵀ`, the adjoints of its
//! product's result against its operand), each vector parameter's a sum, and
//! the inputs' adjoints one product per weight that reads them (`dx += Z W`,
//! `grad::defer_input_products`).
//!
//! Results do not depend on the thread count: both kernels run the plan the
//! cost model picks for one thread, and each sum after the loop is one
//! thread's.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use crate::grad::{self, ParamSource};
use crate::ir::{self, Type};
use crate::kernels::gemm::Blocked;
use crate::{opt, Cell, Error, Kernel, Options, Result, Weights};

static NEXT_TRAINER: AtomicU64 = AtomicU64::new(1);

/// A cell compiled for training: [`Trainer::forward`] and
/// [`Trainer::backward`].
pub struct Trainer {
    id: u64,
    /// The cell as lowered: its ports and parameters.
    ir: ir::Cell,
    forward: Kernel,
    backward: Kernel,
    layout: grad::Layout,
    /// Where each of the backward kernel's parameters comes from.
    sources: Vec<ParamSource>,
    /// The input adjoints' products run after the loop.
    deferred: Vec<grad::DeferredInput>,
    /// The values of the weights those products read, by parameter.
    deferred_weights: Vec<Option<Vec<f32>>>,
    /// Per input, the backward kernel's output holding the step's share
    /// of its adjoint, if any.
    input_outputs: Vec<Option<usize>>,
    /// Threads for the weight gradients.
    threads: usize,
    /// The backward pass's buffers, kept between calls.
    workspace: Mutex<Workspace>,
    /// Dropped tapes' buffers.
    spare: Arc<Spare>,
}

/// The backward kernel's outputs.
#[derive(Default)]
struct Workspace {
    outputs: Vec<Vec<f32>>,
}

/// What [`Trainer::forward`] keeps for [`Trainer::backward`]: the inputs,
/// each step's old states and the taped values. Its buffers go back to the
/// trainer when it is dropped, for the next forward pass (a fresh buffer
/// takes a page fault per 4 KiB on first touch).
#[derive(Debug)]
pub struct Tape {
    trainer: u64,
    batch: usize,
    steps: usize,
    inputs: Vec<Vec<f32>>,
    states: Vec<Vec<f32>>,
    /// The taped values (`grad::taped_values`), `[T, B, len]` each.
    taped: Vec<Vec<f32>>,
    spare: Arc<Spare>,
}

/// Buffers of dropped tapes, for the next ones.
#[derive(Debug, Default)]
struct Spare(Mutex<Vec<Vec<f32>>>);

impl Spare {
    /// A buffer of `n` values (its contents unspecified), reused when one
    /// is large enough.
    fn take(&self, n: usize, what: &str) -> Result<Vec<f32>> {
        let reused = self.0.lock().ok().and_then(|mut bufs| {
            let k = bufs.iter().position(|b| b.capacity() >= n)?;
            Some(bufs.swap_remove(k))
        });
        match reused {
            Some(mut b) => {
                b.resize(n, 0.0);
                b.truncate(n);
                Ok(b)
            }
            None => crate::alloc::zeros(n, what),
        }
    }
}

impl Drop for Tape {
    fn drop(&mut self) {
        if let Ok(mut bufs) = self.spare.0.lock() {
            // At most one tape's worth kept: what a training loop reuses.
            let n = self.inputs.len() + self.states.len() + self.taped.len();
            let keep = n.saturating_sub(bufs.len());
            let all = (self.inputs.drain(..))
                .chain(self.states.drain(..))
                .chain(self.taped.drain(..));
            bufs.extend(all.take(keep));
        }
    }
}

impl Tape {
    pub fn batch(&self) -> usize {
        self.batch
    }

    pub fn steps(&self) -> usize {
        self.steps
    }
}

/// A forward pass: each output at every step (`[T, B, len]`), each state's
/// final value (`[B, len]`), and the tape.
#[derive(Debug)]
pub struct Forward {
    pub outputs: Vec<Vec<f32>>,
    pub final_states: Vec<Vec<f32>>,
    pub tape: Tape,
}

/// A parameter's gradient, in its shape (`[R, C]` row-major or `[n]`; a
/// block-circulant matrix's as its blocks' vectors', `[R/k, C/k, k]`).
#[derive(Clone, Debug, PartialEq)]
pub struct ParamGrad {
    pub name: String,
    pub shape: Vec<usize>,
    pub values: Vec<f32>,
}

/// What [`Trainer::backward`] returns: every parameter's gradient (in the
/// cell's order), each input's adjoint (`[T, B, len]`) and each initial
/// state's (`[B, len]`).
#[derive(Clone, Debug, PartialEq)]
pub struct Gradients {
    pub params: Vec<ParamGrad>,
    pub inputs: Vec<Vec<f32>>,
    pub initial_states: Vec<Vec<f32>>,
}

impl Gradients {
    /// The gradient of the parameter called `name`.
    pub fn param(&self, name: &str) -> Option<&ParamGrad> {
        self.params.iter().find(|p| p.name == name)
    }
}

impl Cell {
    /// Compiles the cell for training with `weights`: the forward kernel
    /// with its tape and the backward kernel ([`Trainer`]). Sizes as
    /// [`Cell::compile`] takes them: those given to [`Cell::dims`], else
    /// the weights'.
    pub fn compile_training(&self, weights: &Weights, opts: &Options) -> Result<Trainer> {
        let cell = self.sized_for(weights)?;
        let params = weights.resolve_stored(&cell.ir()?)?;
        cell.compile_training_params(params, opts)
    }

    /// [`Cell::compile_training`] with the parameters' values given in the
    /// cell's parameter order (row-major; a block-circulant matrix as its
    /// blocks' vectors `[R/k, C/k, k]`, as [`Weights::resolve_stored`]
    /// gives them), at the sizes given to [`Cell::dims`] or the file's
    /// defaults.
    pub fn compile_training_params(
        &self,
        params: Vec<Vec<f32>>,
        opts: &Options,
    ) -> Result<Trainer> {
        compile_lowered(self.ir()?, params, opts)
    }

    /// [`Cell::compile_training_params`] for batches of rows of different
    /// lengths: the cell takes one more input, `mask` (`[T, B, 1]`: 1 while a
    /// row lasts, then 0), which holds a row's states once it has ended and
    /// zeroes its outputs ([`grad::masked`]).
    pub fn compile_training_ragged(
        &self,
        params: Vec<Vec<f32>>,
        opts: &Options,
    ) -> Result<Trainer> {
        compile_lowered(grad::masked(&self.ir()?), params, opts)
    }
}

/// The trainer of a lowered cell.
fn compile_lowered(lowered: ir::Cell, params: Vec<Vec<f32>>, opts: &Options) -> Result<Trainer> {
    if opts.compute != crate::Compute::F32 {
        return Err(Error::options(format!(
            "training computes in f32; compute {} is for inference (compile the trained weights)",
            opts.compute
        )));
    }
    if params.len() != lowered.params.len() {
        return Err(Error::shape(format!(
            "cell `{}` has {} parameters, {} given",
            lowered.name,
            lowered.params.len(),
            params.len()
        )));
    }
    let params = expanded(&lowered, params)?;
    let bw = grad::backward(&lowered).map_err(|e| Error::internal(e.0))?;
    let forward = grad::training_forward(&lowered, &bw.layout);
    let forward = Kernel::new(kernel_ir(forward, opts)?, params.clone(), opts)?;
    let after = grad::defer_input_products(&bw.cell, &bw.layout);
    let t = grad::transpose_products(&after.cell);
    let bparams = backward_params(&lowered, &t.sources, &params);
    let backward = Kernel::new(kernel_ir(t.cell, opts)?, bparams, opts)?;
    Ok(Trainer {
        id: NEXT_TRAINER.fetch_add(1, Ordering::Relaxed),
        deferred_weights: deferred_weights(&after.deferred, params),
        ir: lowered,
        forward,
        backward,
        layout: after.layout,
        sources: t.sources,
        deferred: after.deferred,
        input_outputs: after.input_outputs,
        threads: opts.threads.unwrap_or_else(crate::max_threads),
        workspace: Default::default(),
        spare: Default::default(),
    })
}

/// Optimized (unless `opts` says not to), legalized and verified, as
/// [`Cell::kernel_ir`] makes a cell's.
fn kernel_ir(mut cell: ir::Cell, opts: &Options) -> Result<ir::Cell> {
    if opts.optimize {
        let mut ctx = opt::Ctx {
            source: None,
            remarks: Vec::new(),
        };
        opt::optimize(
            &mut cell,
            &opt::Options::default(),
            &mut ctx,
            &mut |_, _| {},
        )
        .map_err(|e| Error::internal(e.to_string()))?;
    }
    crate::cell::legal_ir(cell, opts)
}

/// The parameters' values as the kernels take them from the values a
/// trainer is given: a block-circulant matrix's blocks' vectors expanded
/// to the matrix (checked first), the others as they are.
fn expanded(cell: &ir::Cell, params: Vec<Vec<f32>>) -> Result<Vec<Vec<f32>>> {
    (cell.params.iter().zip(params))
        .map(|(p, v)| match (p.ty, p.structure) {
            (Type::Matrix(r, c), s @ ir::Structure::Circulant(k)) => {
                let n = s.stored_len(r, c);
                if !s.fits(r, c) {
                    return Err(Error::shape(format!(
                        "parameter `{}` ([{r}, {c}]) cannot have circulant blocks of {k}",
                        p.name
                    )));
                }
                if v.len() != n {
                    return Err(Error::shape(format!(
                        "parameter `{}` (circulant({k})[{r}, {c}]) needs {n} values, its blocks' \
                         vectors [{}, {}, {k}]; {} given",
                        p.name,
                        r / k,
                        c / k,
                        v.len()
                    )));
                }
                s.expand(r, c, &v)
                    .ok_or_else(|| Error::internal("a checked circulant matrix did not expand"))
            }
            _ => Ok(v),
        })
        .collect()
}

/// The values of the weights `deferred` reads, by parameter.
fn deferred_weights(
    deferred: &[grad::DeferredInput],
    params: Vec<Vec<f32>>,
) -> Vec<Option<Vec<f32>>> {
    let read: std::collections::HashSet<ir::ParamId> = (deferred.iter())
        .flat_map(|d| d.terms.iter().map(|&(p, _)| p))
        .collect();
    (params.into_iter().enumerate())
        .map(|(k, v)| read.contains(&ir::ParamId::new(k)).then_some(v))
        .collect()
}

/// The backward kernel's parameters from the cell's.
fn backward_params(cell: &ir::Cell, sources: &[ParamSource], params: &[Vec<f32>]) -> Vec<Vec<f32>> {
    (sources.iter())
        .map(|s| match *s {
            ParamSource::Same(p) => params[p.index()].clone(),
            ParamSource::Transposed(p) => transposed(cell, p, &params[p.index()]),
        })
        .collect()
}

/// A matrix parameter's values transposed (`[C, R]` from `[R, C]`).
fn transposed(cell: &ir::Cell, p: ir::ParamId, w: &[f32]) -> Vec<f32> {
    let Type::Matrix(r, c) = cell.params[p.index()].ty else {
        return w.to_vec();
    };
    (0..c * r).map(|k| w[(k % r) * c + k / r]).collect()
}

pub(crate) fn check_len(what: impl Fn() -> String, got: usize, want: usize) -> Result<()> {
    if got == want {
        Ok(())
    } else {
        Err(Error::shape(format!(
            "{} has {got} values, expected {want}",
            what()
        )))
    }
}

fn check_count(what: &str, got: usize, want: usize) -> Result<()> {
    if got == want {
        Ok(())
    } else {
        Err(Error::shape(format!(
            "{got} {what} given, the cell has {want}"
        )))
    }
}

impl Trainer {
    /// The cell's input, state and output ports, and parameters, as lowered.
    pub fn ir(&self) -> &ir::Cell {
        &self.ir
    }

    /// Each parameter's name and shape (`[R, C]` or `[n]`), in order.
    pub fn param_shapes(&self) -> Vec<(String, Vec<usize>)> {
        (self.ir.params.iter())
            .map(|p| {
                let shape = match p.ty {
                    Type::Matrix(r, c) => p.structure.stored_shape(r, c),
                    Type::Vector(n) => vec![n],
                    Type::Scalar => vec![1],
                };
                (p.name.clone(), shape)
            })
            .collect()
    }

    /// Replaces the parameters' values (in the cell's parameter order,
    /// row-major; `Weights::resolve_stored` gives them: a block-circulant matrix as its
    /// blocks' vectors), as an optimizer's step
    /// does: both kernels are repacked, nothing is compiled again. Tapes
    /// made before belong to the old values: use them no more.
    pub fn set_params(&mut self, params: Vec<Vec<f32>>) -> Result<()> {
        if params.len() != self.ir.params.len() {
            return Err(Error::shape(format!(
                "cell `{}` has {} parameters, {} given",
                self.ir.name,
                self.ir.params.len(),
                params.len()
            )));
        }
        let params = expanded(&self.ir, params)?;
        let bparams = if params.len() == self.ir.params.len()
            && (self.ir.params.iter().zip(&params)).all(|(p, v)| match p.ty {
                Type::Matrix(r, c) => r.checked_mul(c) == Some(v.len()),
                _ => true,
            }) {
            backward_params(&self.ir, &self.sources, &params)
        } else {
            Vec::new()
        };
        self.forward.set_params(params.clone())?;
        self.backward.set_params(bparams)?;
        self.deferred_weights = deferred_weights(&self.deferred, params);
        self.id = NEXT_TRAINER.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    /// Runs `steps` steps over `batch` rows from inputs `xs` (per input
    /// `[T, B, len]`) and initial states `h0` (per state `[B, len]`),
    /// keeping the tape.
    pub fn forward(
        &self,
        xs: &[&[f32]],
        h0: &[&[f32]],
        steps: usize,
        batch: usize,
    ) -> Result<Forward> {
        let cell = &self.ir;
        check_count("inputs", xs.len(), cell.inputs.len())?;
        check_count("initial states", h0.len(), cell.states.len())?;
        let rows = |len: usize| {
            batch
                .checked_mul(len)
                .and_then(|n| n.checked_mul(steps))
                .ok_or_else(|| Error::too_large("a sequence's size overflows"))
        };
        for (p, x) in cell.inputs.iter().zip(xs) {
            check_len(|| format!("input `{}`", p.name), x.len(), rows(p.len)?)?;
        }
        for (p, h) in cell.states.iter().zip(h0) {
            check_len(
                || format!("initial state `{}`", p.name),
                h.len(),
                batch * p.len,
            )?;
        }
        let mut state = self.forward.new_state(batch)?;
        for (p, h) in cell.states.iter().zip(h0) {
            state.set(&p.name, h)?;
        }
        let n_out = cell.outputs.len();
        // The outputs fresh (they are the caller's); the tape's from spares.
        let mut outs: Vec<Vec<f32>> = (0..self.forward.output_names().len())
            .map(|o| {
                let n = rows(self.forward.output_len(o))?;
                if o < n_out {
                    crate::alloc::zeros(n, "the outputs")
                } else {
                    self.spare.take(n, "the tape")
                }
            })
            .collect::<Result<_>>()?;
        if steps > 0 {
            let mut refs: Vec<&mut [f32]> = outs.iter_mut().map(Vec::as_mut_slice).collect();
            let variant = self.forward.variant_for_any_threads(batch, steps);
            self.forward
                .run_planned(xs, &mut state, &mut refs, variant, None)?;
        }
        let mut states = outs.split_off(n_out);
        let taped = states.split_off(cell.states.len());
        let final_states = (cell.states.iter())
            .map(|p| state.get(&p.name))
            .collect::<Result<_>>()?;
        Ok(Forward {
            outputs: outs,
            final_states,
            tape: Tape {
                trainer: self.id,
                batch,
                steps,
                inputs: (xs.iter())
                    .map(|x| {
                        let mut b = self.spare.take(x.len(), "the tape")?;
                        b.copy_from_slice(x);
                        Ok(b)
                    })
                    .collect::<Result<_>>()?,
                states,
                taped,
                spare: Arc::clone(&self.spare),
            },
        })
    }

    /// Each matrix's gradient: the sum over the sequence's `rows` of its
    /// products' `z vᵀ` (the backward cell's outputs and inputs, row for
    /// row), one product over all rows per weight. Products are
    /// dealt to the threads whole, so each weight's sum is one call's
    /// whatever the thread count.
    fn weight_gradients(
        &self,
        inputs: &[&[f32]],
        outs: &[Vec<f32>],
        rows: usize,
        params: &mut [ParamGrad],
    ) -> Result<()> {
        use std::sync::atomic::{AtomicUsize, Ordering};
        let products = &self.layout.products;
        let mut sums: Vec<Vec<f32>> = (products.iter())
            .map(|g| {
                let shape = &params[g.weight.index()].shape;
                crate::alloc::zeros(shape[0] * shape[1], "a gradient")
            })
            .collect::<Result<_>>()?;
        // Every product's jobs, shared by the threads as they come: each
        // element of a gradient is one chain of fused multiply-adds over the
        // rows in order, whichever thread runs its job.
        let gemms: Vec<crate::kernels::gemm::Gemm> = (products.iter().zip(sums.iter_mut()))
            .filter_map(|(g, dw)| {
                let v = match g.v {
                    grad::Operand::Input(i) => inputs[i],
                    grad::Operand::Output(o) => &outs[o],
                };
                let shape = &params[g.weight.index()].shape;
                crate::kernels::gemm::outer_sum_jobs(shape[0], shape[1], rows, &outs[g.z], v, dw)
            })
            .collect();
        let jobs: Vec<(usize, usize)> = (gemms.iter().enumerate())
            .flat_map(|(p, g)| (0..g.jobs()).map(move |j| (p, j)))
            .collect();
        let next = AtomicUsize::new(0);
        let work = || {
            while let Some(&(p, j)) = jobs.get(next.fetch_add(1, Ordering::Relaxed)) {
                // SAFETY: `outer_sum_jobs` checked the operands' bounds; they
                // and the gradients stay borrowed until the work is done; each
                // job is claimed once, and jobs write disjoint elements.
                unsafe { gemms[p].run_job(j) };
            }
        };
        let workers = self.threads.min(jobs.len()).max(1);
        if !(workers > 1 && crate::jit::run_shared(workers, &|_, _| work())) {
            work();
        }
        // Summed in the products' order: the same bits on any thread count.
        for (g, sum) in products.iter().zip(sums) {
            for (d, s) in params[g.weight.index()].values.iter_mut().zip(sum) {
                *d += s;
            }
        }
        Ok(())
    }

    /// Each vector parameter's gradient: the sum over all rows of the
    /// output holding its share of a step, in `f64`, once per output (the
    /// two biases of a gate share one), the outputs dealt to the threads
    /// whole (the same bits on any thread count).
    fn vector_gradients(&self, outs: &[Vec<f32>], params: &mut [ParamGrad]) -> Result<()> {
        let mut distinct: Vec<usize> = self.layout.vectors.iter().map(|&(_, o)| o).collect();
        distinct.sort_unstable();
        distinct.dedup();
        let sums: Vec<Mutex<Vec<f32>>> = distinct.iter().map(|_| Mutex::default()).collect();
        let len = |o: usize| self.backward.output_len(o);
        let work = |w: usize, workers: usize| {
            for (k, &o) in distinct.iter().enumerate().skip(w).step_by(workers) {
                let n = len(o);
                let mut sum = vec![0.0f64; n];
                for row in outs[o].chunks_exact(n.max(1)) {
                    for (s, &x) in sum.iter_mut().zip(row) {
                        *s += f64::from(x);
                    }
                }
                if let Ok(mut slot) = sums[k].lock() {
                    *slot = sum.into_iter().map(|s| s as f32).collect();
                }
            }
        };
        let workers = self.threads.min(distinct.len()).max(1);
        if !(workers > 1 && crate::jit::run_shared(workers, &|w, _| work(w, workers))) {
            work(0, 1);
        }
        for &(p, o) in &self.layout.vectors {
            let sum = (distinct.binary_search(&o).ok())
                .and_then(|k| sums[k].lock().ok())
                .filter(|sum| sum.len() == params[p.index()].values.len())
                .ok_or_else(|| {
                    Error::internal(format!(
                        "the gradient of parameter `{}` was not summed",
                        params[p.index()].name
                    ))
                })?;
            params[p.index()].values.copy_from_slice(&sum);
        }
        Ok(())
    }

    /// Adds the input adjoints' products to the backward kernel's outputs
    /// (`dx += Σ z W` over all `rows`, `grad::defer_input_products`). The
    /// rows are cut into blocks of a fixed size, dealt to the threads: each
    /// block's sums are one call's whatever the thread count.
    fn deferred_inputs(&self, dx: &mut [Vec<f32>], outs: &[Vec<f32>], rows: usize) -> Result<()> {
        const BLOCK: usize = 256;
        if self.deferred.is_empty() || rows == 0 {
            return Ok(());
        }
        // Each deferred input's terms: the weight's shape and values, and
        // the output holding `z` (all there by construction: checked).
        type Term<'a> = (usize, usize, &'a [f32], usize);
        let terms: Vec<Vec<Term<'_>>> = (self.deferred.iter())
            .map(|def| {
                (def.terms.iter())
                    .map(|&(p, z)| match (self.ir.params[p.index()].ty, &self.deferred_weights[p.index()]) {
                        (Type::Matrix(r, c), Some(w)) if w.len() == r * c && outs[z].len() >= rows * r => {
                            Ok((r, c, w.as_slice(), z))
                        }
                        _ => Err(Error::internal(format!(
                            "the product after the loop of parameter `{}` has no weights or no adjoint",
                            self.ir.params[p.index()].name
                        ))),
                    })
                    .collect()
            })
            .collect::<Result<_>>()?;
        // Each deferred input's blocks of rows, with the block's first row.
        let mut blocks: Vec<(usize, usize, Mutex<&mut [f32]>)> = Vec::new();
        for (i, dx) in dx.iter_mut().enumerate() {
            let Some(d) = self.deferred.iter().position(|def| def.input == i) else {
                continue;
            };
            let c = self.ir.inputs[i].len.max(1);
            for (k, chunk) in dx.chunks_mut(BLOCK * c).enumerate() {
                blocks.push((d, k * BLOCK, Mutex::new(chunk)));
            }
        }
        let work = |w: usize, workers: usize| {
            for (d, first, chunk) in blocks.iter().skip(w).step_by(workers) {
                // A lock is poisoned only by a panic, which the pool reports.
                let Ok(mut out) = chunk.lock() else { continue };
                for &(r, c, weight, z) in &terms[*d] {
                    let n = out.len() / c.max(1);
                    let z = &outs[z][first * r..];
                    crate::kernels::gemm::product_sum(n, r, c, z, weight, &mut out);
                }
            }
        };
        let workers = self.threads.min(blocks.len()).max(1);
        if !(workers > 1 && crate::jit::run_shared(workers, &|w, _| work(w, workers))) {
            work(0, 1);
        }
        Ok(())
    }

    /// The gradients through time of `L = Σ <d_outputs, outputs> + Σ
    /// <d_final, final states>` for the forward pass that made `tape`:
    /// `d_outputs` per output `[T, B, len]`, `d_final` per state `[B, len]`
    /// (the adjoints of what the forward pass returned).
    pub fn backward(
        &self,
        tape: &Tape,
        d_outputs: &[&[f32]],
        d_final: &[&[f32]],
    ) -> Result<Gradients> {
        self.backward_for(tape, d_outputs, d_final, true)
    }

    /// [`Trainer::backward`] without the inputs' adjoints
    /// ([`Gradients::inputs`] empty), for inputs that need none (a first
    /// layer's data): their products after the loop are skipped.
    pub fn backward_without_inputs(
        &self,
        tape: &Tape,
        d_outputs: &[&[f32]],
        d_final: &[&[f32]],
    ) -> Result<Gradients> {
        self.backward_for(tape, d_outputs, d_final, false)
    }

    fn backward_for(
        &self,
        tape: &Tape,
        d_outputs: &[&[f32]],
        d_final: &[&[f32]],
        want_inputs: bool,
    ) -> Result<Gradients> {
        if tape.trainer != self.id {
            return Err(Error::shape(
                "this tape was made by another trainer's forward pass, or before its parameters changed",
            ));
        }
        let cell = &self.ir;
        let (steps, batch) = (tape.steps, tape.batch);
        check_count("output adjoints", d_outputs.len(), cell.outputs.len())?;
        check_count("final state adjoints", d_final.len(), cell.states.len())?;
        for (p, d) in cell.outputs.iter().zip(d_outputs) {
            check_len(
                || format!("the adjoint of output `{}`", p.name),
                d.len(),
                steps * batch * p.len,
            )?;
        }
        for (p, d) in cell.states.iter().zip(d_final) {
            check_len(
                || format!("the adjoint of final state `{}`", p.name),
                d.len(),
                batch * p.len,
            )?;
        }
        // The backward kernel from the last step to the first, reading the
        // tape where it is; its outputs in buffers kept from the last call
        // (another thread's call meanwhile gets its own).
        let mut kept = self.workspace.try_lock().ok();
        let mut fresh = Workspace::default();
        let ws: &mut Workspace = kept.as_deref_mut().unwrap_or(&mut fresh);
        let inputs: Vec<&[f32]> = (tape.inputs.iter())
            .chain(&tape.states)
            .map(Vec::as_slice)
            .chain(d_outputs.iter().copied())
            .chain(tape.taped.iter().map(Vec::as_slice))
            .collect();
        let mut adjoint = self.backward.new_state(batch)?;
        for (name, d) in self.backward.state_names().iter().zip(d_final) {
            adjoint.set(name, d)?;
        }
        let n_out = self.backward.output_names().len();
        ws.outputs.resize_with(n_out, Vec::new);
        for (o, buf) in ws.outputs.iter_mut().enumerate() {
            let n = steps * batch * self.backward.output_len(o);
            buf.clear();
            crate::alloc::reserve(buf, n, "adjoints")?;
            buf.resize(n, 0.0);
        }
        let outs = &mut ws.outputs;
        if steps > 0 {
            let mut out_refs: Vec<&mut [f32]> = outs.iter_mut().map(Vec::as_mut_slice).collect();
            let variant = self.backward.variant_for_any_threads(batch, steps);
            (self.backward).run_planned_in(
                &inputs,
                &mut adjoint,
                &mut out_refs,
                variant,
                None,
                true,
            )?;
        }
        let mut params: Vec<ParamGrad> = (cell.params.iter())
            .map(|p| {
                let shape = match p.ty {
                    Type::Matrix(r, c) => vec![r, c],
                    Type::Vector(n) => vec![n],
                    Type::Scalar => vec![1],
                };
                let n = shape.iter().product();
                crate::alloc::zeros(n, "a gradient").map(|values| ParamGrad {
                    name: p.name.clone(),
                    shape,
                    values,
                })
            })
            .collect::<Result<_>>()?;
        self.weight_gradients(&inputs, outs, steps * batch, &mut params)?;
        let mut d_inputs: Vec<Vec<f32>> = (self.input_outputs.iter().zip(&cell.inputs))
            .filter(|_| want_inputs)
            .map(|(o, p)| match o {
                Some(o) => Ok(outs[*o].clone()),
                None => crate::alloc::zeros(steps * batch * p.len, "adjoints"),
            })
            .collect::<Result<_>>()?;
        if want_inputs {
            self.deferred_inputs(&mut d_inputs, outs, steps * batch)?;
        }
        self.vector_gradients(outs, &mut params)?;
        // A block-circulant matrix's gradient as its blocks' vectors'.
        for (g, p) in params.iter_mut().zip(&cell.params) {
            if let (Type::Matrix(r, c), ir::Structure::Circulant(_)) = (p.ty, p.structure) {
                g.values = p.structure.fold(r, c, &g.values);
                g.shape = p.structure.stored_shape(r, c);
            }
        }
        let initial_states = (self.backward.state_names().iter())
            .map(|name| adjoint.get(name))
            .collect::<Result<_>>()?;
        Ok(Gradients {
            params,
            inputs: d_inputs,
            initial_states,
        })
    }
}
