//! Training a network: each layer and direction a [`Trainer`] of the cell,
//! composed as [`CompiledNetwork::run`](super::CompiledNetwork::run) composes
//! kernels: the reverse direction over each row reversed within its length,
//! both directions' outputs side by side as the next layer's input, rows of
//! different lengths through the masked cell ([`crate::grad::masked`]). The
//! backward pass runs the layers from the last to the first, each layer's
//! input adjoints (both directions' summed) the adjoints of the outputs of
//! the layer below; each layer's parameter gradients go back to the
//! checkpoint's tensors by the positions its bindings read
//! ([`Weights::read_offsets`]), so they come out by the checkpoint's names
//! and in its shapes (`weight_ih_l1_reverse`).

use std::borrow::Cow;
use std::sync::{Arc, Mutex};

use super::run::{side_by_side, Ports};
use super::{in_layer, Layout, Network};
use crate::train::{check_len, ParamGrad, Tape, Trainer};
use crate::{alloc, Cell, Error, Options, Result, Weights};

/// A network compiled for training: [`NetworkTrainer::forward`] and
/// [`NetworkTrainer::backward`].
///
/// ```
/// # fn main() -> cellc::Result<()> {
/// use cellc::network::{Layout, Network};
/// let cell = cellc::Cell::from_file("examples/gru.rnn")?;
/// let (x, h) = (3, 4);
/// // A 2-layer bidirectional `nn.GRU(3, 4)`'s state_dict.
/// let mut weights = cellc::Weights::new();
/// for l in 0..2 {
///     for dir in ["", "_reverse"] {
///         let input = if l == 0 { x } else { 2 * h };
///         for (name, shape) in [("weight_ih", vec![3 * h, input]), ("weight_hh", vec![3 * h, h]),
///                               ("bias_ih", vec![3 * h]), ("bias_hh", vec![3 * h])] {
///             let n = shape.iter().product();
///             weights.insert(&format!("{name}_l{l}{dir}"), &shape, vec![0.1; n])?;
///         }
///     }
/// }
/// let layout = Layout { layers: 2, bidirectional: true, reverse: false };
/// let net = Network::new(cell, layout)?;
/// let trainer = net.compile_training(&weights, &cellc::Options::default())?;
/// let (steps, batch) = (5, 2);
/// let xs = vec![0.5; steps * batch * x];
/// // Row 1 is 3 steps long.
/// let fwd = trainer.forward(&[&xs], batch, Some(&[5, 3]), &[])?;
/// let dy = vec![1.0; fwd.outputs[0].len()];
/// let dh = vec![0.0; fwd.states[0].len()];
/// let grads = trainer.backward(&fwd.tape, &[&dy], &[&dh])?;
/// assert_eq!(grads.tensor("weight_hh_l1_reverse").unwrap().shape, [3 * h, h]);
/// assert_eq!(grads.inputs[0].len(), xs.len());
/// # Ok(())
/// # }
/// ```
pub struct NetworkTrainer {
    network: Network,
    /// `layers[l][d]`: layer `l`, direction `d` (0 forward, 1 reverse).
    layers: Vec<Vec<Part<Trainer>>>,
    /// Layer 0's inputs' names and each state's (the plain cell's ports).
    input_names: Vec<String>,
    state_names: Vec<String>,
    /// The checkpoint's tensors, by name and shape: what gradients come
    /// back as.
    tensors: Vec<(String, Vec<usize>)>,
    opts: Options,
    /// The trainers of the masked cells, for rows of different lengths:
    /// compiled on the first such batch.
    ragged: Mutex<Option<Arc<Vec<Vec<Trainer>>>>>,
}

/// One layer and direction: its trainer (`T`) and what it was made of.
struct Part<T> {
    trainer: T,
    /// The cell at this layer's sizes, for its masked trainer.
    cell: Cell,
    /// The parameters' values, likewise.
    params: Vec<Vec<f32>>,
    /// Per parameter of the cell: the checkpoint tensor it reads (an index
    /// into `tensors`) and the offset of each of its elements there; `None`
    /// for what no tensor gives (a module made with `bias=False` has zero
    /// biases).
    reads: Vec<Option<(usize, Vec<usize>)>>,
}

/// What [`NetworkTrainer::forward`] keeps for the backward pass: each layer
/// and direction's tape.
#[derive(Debug)]
pub struct NetworkTape {
    tapes: Vec<Vec<Tape>>,
    steps: usize,
    batch: usize,
    /// Each row's length, when they differ.
    lengths: Option<Vec<usize>>,
}

/// A training forward pass: each output of the last layer `[T, B, D * len]`
/// and each state's final value `[D * L, B, len]`, as
/// [`CompiledNetwork::run`](super::CompiledNetwork::run) gives them, and the
/// tape.
#[derive(Debug)]
pub struct NetworkForward {
    pub outputs: Vec<Vec<f32>>,
    pub states: Vec<Vec<f32>>,
    pub tape: NetworkTape,
}

/// What [`NetworkTrainer::backward`] returns: the gradient of every tensor
/// of the checkpoint, by its name and in its shape (in the weights' order),
/// each input's adjoint (`[T, B, len]`, zero past a row's length) and each
/// initial state's (`[D * L, B, len]`).
#[derive(Clone, Debug, PartialEq)]
pub struct NetworkGradients {
    pub tensors: Vec<ParamGrad>,
    pub inputs: Vec<Vec<f32>>,
    pub initial_states: Vec<Vec<f32>>,
}

impl NetworkGradients {
    /// The gradient of the checkpoint's tensor `name`.
    pub fn tensor(&self, name: &str) -> Option<&ParamGrad> {
        self.tensors.iter().find(|p| p.name == name)
    }
}

impl Network {
    /// Compiles every layer and direction for training with the weights of
    /// a layered checkpoint (or, for one layer forward, any weights the cell
    /// binds), at the sizes they give, as [`Network::compile`] does.
    pub fn compile_training(&self, weights: &Weights, opts: &Options) -> Result<NetworkTrainer> {
        opts.check().map_err(Error::options)?;
        let (layers, tensors) = self.training_parts(weights, |part, params| {
            part.cell.compile_training_params(params.to_vec(), opts)
        })?;
        let first = layers[0][0].trainer.ir();
        let names = |ports: &[crate::ir::Port]| ports.iter().map(|p| p.name.clone()).collect();
        Ok(NetworkTrainer {
            network: self.clone(),
            input_names: names(&first.inputs),
            state_names: names(&first.states),
            layers,
            tensors,
            opts: opts.clone(),
            ragged: Mutex::new(None),
        })
    }

    /// Each layer and direction's [`Part`], its trainer from `make`, and
    /// the checkpoint's tensors.
    #[allow(clippy::type_complexity)]
    fn training_parts<T>(
        &self,
        weights: &Weights,
        mut make: impl FnMut(&super::LayerPart<'_>, &[Vec<f32>]) -> Result<T>,
    ) -> Result<(Vec<Vec<Part<T>>>, Vec<(String, Vec<usize>)>)> {
        let names: Vec<&str> = weights.names().collect();
        let tensors: Vec<(String, Vec<usize>)> = (names.iter())
            .filter_map(|&n| weights.get(n).map(|t| (n.to_string(), t.shape.clone())))
            .collect();
        let layered = Layout::of_checkpoint(weights)?.is_some();
        let layers = self.per_layer(weights, &[], &[], |part| {
            let lowered = part.cell.ir()?;
            let params = (part.weights.resolve_stored(&lowered))
                .map_err(|e| in_layer(e.into(), self.layout, part.layer, part.reverse))?;
            // The one tensor a view has that the checkpoint lacks: the zero
            // biases of a module made with `bias=False` (`layer_weights`),
            // which no gradient goes back to. Anything else is a bug.
            let no_bias = !names.iter().any(|n| n.starts_with("bias"));
            let reads = (part.weights.read_offsets(&lowered).into_iter())
                .zip(&lowered.params)
                .map(|(read, p)| {
                    let lost = || {
                        Error::internal(format!(
                            "parameter `{}` reads no tensor of the checkpoint",
                            p.name
                        ))
                    };
                    let (name, offsets) = read.ok_or_else(lost)?;
                    let original = match layered {
                        true => checkpoint_name(&name, part.layer, part.reverse),
                        false => name.clone(),
                    };
                    match tensors.iter().position(|(n, _)| *n == original) {
                        Some(t) => Ok(Some((t, offsets))),
                        None if no_bias && name.starts_with("bias") => Ok(None),
                        None => Err(lost()),
                    }
                })
                .collect::<Result<_>>()?;
            let trainer = make(&part, &params)?;
            Ok(Part {
                trainer,
                cell: part.cell,
                params,
                reads,
            })
        })?;
        Ok((layers, tensors))
    }
}

/// `weight_ih_l0` of layer 1's reverse direction -> `weight_ih_l1_reverse`.
fn checkpoint_name(view_name: &str, layer: usize, reverse: bool) -> String {
    let base = view_name.strip_suffix("_l0").unwrap_or(view_name);
    super::layout::suffixed(base, layer, reverse)
}

/// `x` (`[T, B, len]`) as a direction reads it: rows reversed within their
/// lengths when `reverse`, and zero past each row's length (`lens`, when
/// the rows differ); `x` itself when that is what it is. Its own inverse.
fn arrange<'a>(
    x: Cow<'a, [f32]>,
    steps: usize,
    batch: usize,
    lens: Option<&[usize]>,
    reverse: bool,
) -> Result<Cow<'a, [f32]>> {
    if !reverse && lens.is_none() {
        return Ok(x);
    }
    let what = "a direction's sequence";
    let mut out = alloc::zeros(x.len(), what)?;
    if steps == 0 || batch == 0 {
        return Ok(Cow::Owned(out));
    }
    let len = x.len() / (steps * batch);
    for b in 0..batch {
        let n = lens.map_or(steps, |l| l[b]);
        for t in 0..n {
            let from = if reverse { n - 1 - t } else { t };
            let (src, dst) = ((from * batch + b) * len, (t * batch + b) * len);
            out[dst..dst + len].copy_from_slice(&x[src..src + len]);
        }
    }
    Ok(Cow::Owned(out))
}

/// `[T, B, 1]`: 1 while a row lasts, then 0 (the masked cell's input).
fn mask_of(lens: &[usize], steps: usize) -> Result<Vec<f32>> {
    let batch = lens.len();
    let mut mask = alloc::zeros(alloc::product(&[steps, batch], "a mask")?, "a mask")?;
    for (b, &n) in lens.iter().enumerate() {
        for t in 0..n {
            mask[t * batch + b] = 1.0;
        }
    }
    Ok(mask)
}

/// Direction `d`'s columns of `[rows, D * len]` data: `[rows, len]`.
fn columns(x: &[f32], rows: usize, directions: usize, len: usize, d: usize) -> Vec<f32> {
    let mut out = Vec::with_capacity(rows * len);
    for r in 0..rows {
        let at = (r * directions + d) * len;
        out.extend_from_slice(&x[at..at + len]);
    }
    out
}

impl NetworkTrainer {
    pub fn layout(&self) -> Layout {
        self.network.layout
    }

    /// The checkpoint's tensors, by name and shape, in the weights' order.
    pub fn tensor_shapes(&self) -> &[(String, Vec<usize>)] {
        &self.tensors
    }

    /// The trainer of layer `l`, direction `d` (for rows of one length).
    pub fn trainer(&self, layer: usize, direction: usize) -> Option<&Trainer> {
        Some(&self.layers.get(layer)?.get(direction)?.trainer)
    }

    /// Replaces the weights' values (an optimizer's step): each layer and
    /// direction repacked, nothing compiled again. The weights must be of
    /// the network as compiled: the same layout and sizes. Tapes made
    /// before belong to the old values: use them no more.
    pub fn set_weights(&mut self, weights: &Weights) -> Result<()> {
        let (parts, tensors) = self.network.training_parts(weights, |_, _| Ok(()))?;
        // Every layer checked before any changes.
        for (l, (now, before)) in parts.iter().zip(&self.layers).enumerate() {
            for (d, (now, before)) in now.iter().zip(before).enumerate() {
                let (now, before) = (now.cell.ir()?.dims, before.cell.ir()?.dims);
                if now != before {
                    return Err(in_layer(
                        Error::shape(format!(
                            "the weights' sizes {now:?} differ from the network's {before:?}: \
                             compile it again for them"
                        )),
                        self.network.layout,
                        l,
                        self.network.layout.runs()[d],
                    ));
                }
            }
        }
        for (now, before) in parts
            .into_iter()
            .flatten()
            .zip(self.layers.iter_mut().flatten())
        {
            before.trainer.set_params(now.params.clone())?;
            before.params = now.params;
            before.reads = now.reads;
        }
        self.tensors = tensors;
        // The masked trainers are compiled again when next needed.
        if let Ok(mut ragged) = self.ragged.lock() {
            *ragged = None;
        }
        Ok(())
    }

    fn ports(&self) -> Ports<'_> {
        let first = self.layers[0][0].trainer.ir();
        Ports {
            layout: self.network.layout,
            cell: &first.name,
            input_names: &self.input_names,
            input_lens: first.inputs.iter().map(|p| p.len).collect(),
            state_names: &self.state_names,
            state_lens: (self.layers.iter())
                .map(|dirs| dirs[0].trainer.ir().states.iter().map(|p| p.len).collect())
                .collect(),
        }
    }

    /// The masked cells' trainers (for rows of different lengths), compiled
    /// on first use.
    fn ragged_trainers(&self) -> Result<Arc<Vec<Vec<Trainer>>>> {
        let mut slot = (self.ragged.lock())
            .map_err(|_| Error::internal("the masked trainers' lock was poisoned"))?;
        if let Some(t) = &*slot {
            return Ok(Arc::clone(t));
        }
        let trainers: Vec<Vec<Trainer>> = (self.layers.iter())
            .map(|dirs| {
                (dirs.iter())
                    .map(|p| p.cell.compile_training_ragged(p.params.clone(), &self.opts))
                    .collect()
            })
            .collect::<Result<_>>()?;
        let trainers = Arc::new(trainers);
        *slot = Some(Arc::clone(&trainers));
        Ok(trainers)
    }

    /// Runs the network over a batch of sequences as
    /// [`CompiledNetwork::run`](super::CompiledNetwork::run) does (the same
    /// arguments), keeping the tape.
    pub fn forward(
        &self,
        inputs: &[&[f32]],
        batch: usize,
        lengths: Option<&[usize]>,
        initial: &[(&str, &[f32])],
    ) -> Result<NetworkForward> {
        let ports = self.ports();
        let steps = ports.check_inputs(inputs, batch, lengths)?;
        let inits = ports.initial_states(initial, batch)?;
        let lens: Option<Vec<usize>> = lengths
            .filter(|l| l.iter().any(|&n| n != steps))
            .map(<[usize]>::to_vec);
        let ragged = match lens {
            Some(_) => Some(self.ragged_trainers()?),
            None => None,
        };
        let mask = lens.as_deref().map(|l| mask_of(l, steps)).transpose()?;
        let layout = self.network.layout;
        let directions = layout.directions();
        let mut finals = self.zero_states(&ports, batch)?;
        let mut layer_in: Vec<Cow<'_, [f32]>> = inputs.iter().map(|x| Cow::Borrowed(*x)).collect();
        let mut tapes = Vec::with_capacity(self.layers.len());
        for (l, dirs) in self.layers.iter().enumerate() {
            let mut outs: Vec<Vec<Vec<f32>>> = Vec::with_capacity(directions);
            let mut layer_tapes = Vec::with_capacity(directions);
            for (d, part) in dirs.iter().enumerate() {
                let reverse = layout.runs()[d];
                let trainer = ragged.as_ref().map_or(&part.trainer, |r| &r[l][d]);
                let seqs: Vec<Cow<'_, [f32]>> = (layer_in.iter())
                    .map(|x| arrange(Cow::Borrowed(x), steps, batch, lens.as_deref(), reverse))
                    .collect::<Result<_>>()?;
                let mut refs: Vec<&[f32]> = seqs.iter().map(|c| c.as_ref()).collect();
                refs.extend(mask.as_deref());
                let init: Vec<Cow<'_, [f32]>> = (0..inits.len())
                    .map(|s| {
                        let n = batch * ports.state_lens[l][s];
                        Ok(match inits[s] {
                            Some(v) => {
                                let at = ports.state_offset(s, l, d, batch);
                                Cow::Borrowed(&v[at..at + n])
                            }
                            None => Cow::Owned(alloc::zeros(n, "the initial states")?),
                        })
                    })
                    .collect::<Result<_>>()?;
                let init: Vec<&[f32]> = init.iter().map(|c| c.as_ref()).collect();
                let fwd = trainer.forward(&refs, &init, steps, batch)?;
                for (s, v) in fwd.final_states.iter().enumerate() {
                    let at = ports.state_offset(s, l, d, batch);
                    finals[s][at..at + v.len()].copy_from_slice(v);
                }
                let ys = (fwd.outputs.into_iter())
                    .map(|y| arrange(Cow::Owned(y), steps, batch, lens.as_deref(), reverse))
                    .map(|y| y.map(Cow::into_owned))
                    .collect::<Result<_>>()?;
                outs.push(ys);
                layer_tapes.push(fwd.tape);
            }
            tapes.push(layer_tapes);
            let rows = steps * batch;
            layer_in = match <[Vec<Vec<f32>>; 1]>::try_from(outs) {
                Ok([one]) => one.into_iter().map(Cow::Owned).collect(),
                Err(both) => (0..both[0].len())
                    .map(|o| {
                        let parts: Vec<&[f32]> = both.iter().map(|r| r[o].as_slice()).collect();
                        let len = both[0][o].len() / rows.max(1);
                        side_by_side(&parts, rows, len).map(Cow::Owned)
                    })
                    .collect::<Result<_>>()?,
            };
        }
        Ok(NetworkForward {
            outputs: layer_in.into_iter().map(Cow::into_owned).collect(),
            states: finals,
            tape: NetworkTape {
                tapes,
                steps,
                batch,
                lengths: lens,
            },
        })
    }

    /// Each state's `[D * L, batch, len]`, zero.
    fn zero_states(&self, ports: &Ports<'_>, batch: usize) -> Result<Vec<Vec<f32>>> {
        let what = "the states";
        (0..ports.state_names.len())
            .map(|s| {
                let per_row = ports.state_lens.iter().map(|l| l[s]).sum::<usize>();
                let dirs = ports.layout.directions();
                alloc::zeros(alloc::product(&[per_row, dirs, batch], what)?, what)
            })
            .collect()
    }

    /// The gradients of `L = Σ <d_outputs, outputs> + Σ <d_states, final
    /// states>` for the forward pass that made `tape`: `d_outputs` per
    /// output `[T, B, D * len]`, `d_states` per state `[D * L, B, len]`
    /// (the adjoints of what [`NetworkTrainer::forward`] returned).
    pub fn backward(
        &self,
        tape: &NetworkTape,
        d_outputs: &[&[f32]],
        d_states: &[&[f32]],
    ) -> Result<NetworkGradients> {
        let layout = self.network.layout;
        let directions = layout.directions();
        let another = || {
            Error::shape(
                "this tape was made by another network's forward pass, or before its weights \
                 changed",
            )
        };
        if tape.tapes.len() != self.layers.len() || tape.tapes.iter().any(|t| t.len() != directions)
        {
            return Err(another());
        }
        let (steps, batch) = (tape.steps, tape.batch);
        let ports = self.ports();
        let last = self.layers[self.layers.len() - 1][0].trainer.ir();
        if d_outputs.len() != last.outputs.len() {
            return Err(Error::shape(format!(
                "{} output adjoints given, the network has {} outputs",
                d_outputs.len(),
                last.outputs.len()
            )));
        }
        for (p, d) in last.outputs.iter().zip(d_outputs) {
            let want = alloc::product(&[steps, batch, directions, p.len], "an adjoint")?;
            check_len(
                || format!("the adjoint of output `{}`", p.name),
                d.len(),
                want,
            )?;
        }
        let mut d_init = self.zero_states(&ports, batch)?;
        if d_states.len() != d_init.len() {
            return Err(Error::shape(format!(
                "{} final state adjoints given, the network has {} states",
                d_states.len(),
                d_init.len()
            )));
        }
        for ((name, d), want) in ports.state_names.iter().zip(d_states).zip(&d_init) {
            check_len(
                || format!("the adjoint of final state `{name}`"),
                d.len(),
                want.len(),
            )?;
        }
        let ragged = match tape.lengths {
            Some(_) => Some(
                (self.ragged.lock().ok())
                    .and_then(|r| r.clone())
                    .ok_or_else(another)?,
            ),
            None => None,
        };
        let lens = tape.lengths.as_deref();
        let mut tensors: Vec<ParamGrad> = (self.tensors.iter())
            .map(|(name, shape)| {
                let n = alloc::product(shape, "a gradient")?;
                Ok(ParamGrad {
                    name: name.clone(),
                    shape: shape.clone(),
                    values: alloc::zeros(n, "a gradient")?,
                })
            })
            .collect::<Result<_>>()?;
        let rows = steps * batch;
        let mut d_y: Vec<Cow<'_, [f32]>> = d_outputs.iter().map(|d| Cow::Borrowed(*d)).collect();
        for l in (0..self.layers.len()).rev() {
            let ir = self.layers[l][0].trainer.ir();
            let mut d_in: Vec<Vec<f32>> = (ir.inputs.iter())
                .map(|p| alloc::zeros(alloc::product(&[rows, p.len], "adjoints")?, "adjoints"))
                .collect::<Result<_>>()?;
            for (d, part) in self.layers[l].iter().enumerate() {
                let reverse = layout.runs()[d];
                let trainer = ragged.as_ref().map_or(&part.trainer, |r| &r[l][d]);
                let dys: Vec<Cow<'_, [f32]>> = (d_y.iter().zip(&ir.outputs))
                    .map(|(dy, p)| {
                        let own = match directions {
                            1 => Cow::Borrowed(dy.as_ref()),
                            _ => Cow::Owned(columns(dy, rows, directions, p.len, d)),
                        };
                        arrange(own, steps, batch, lens, reverse)
                    })
                    .collect::<Result<_>>()?;
                let dys: Vec<&[f32]> = dys.iter().map(|c| c.as_ref()).collect();
                let finals: Vec<&[f32]> = (d_states.iter().enumerate())
                    .map(|(s, v)| {
                        let at = ports.state_offset(s, l, d, batch);
                        &v[at..at + batch * ports.state_lens[l][s]]
                    })
                    .collect();
                let g = trainer.backward(&tape.tapes[l][d], &dys, &finals)?;
                for (read, grad) in part.reads.iter().zip(&g.params) {
                    if let Some((t, offsets)) = read {
                        let sum = &mut tensors[*t].values;
                        for (&o, &v) in offsets.iter().zip(&grad.values) {
                            sum[o] += v;
                        }
                    }
                }
                for (s, v) in g.initial_states.iter().enumerate() {
                    let at = ports.state_offset(s, l, d, batch);
                    d_init[s][at..at + v.len()].copy_from_slice(v);
                }
                // The mask's adjoint (the last input of a masked cell) is
                // no one's.
                for (sum, dx) in d_in.iter_mut().zip(g.inputs) {
                    let dx = arrange(Cow::Owned(dx), steps, batch, lens, reverse)?;
                    for (s, v) in sum.iter_mut().zip(dx.iter()) {
                        *s += v;
                    }
                }
            }
            d_y = d_in.into_iter().map(Cow::Owned).collect();
        }
        Ok(NetworkGradients {
            tensors,
            inputs: d_y.into_iter().map(Cow::into_owned).collect(),
            initial_states: d_init,
        })
    }
}
