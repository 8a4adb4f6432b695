//! Whole recurrent networks: `L` layers of one cell, in one direction or in
//! both, each layer reading the one below (both directions' outputs side by
//! side), over batches of sequences of different lengths.
//!
//! A network is a [`Network`]: a cell and a [`Layout`] (layers, directions).
//! The sizes of layer 0 come from its weights and inputs as for one cell; the
//! input of layer `l >= 1` is `D * len(y)` of layer `l - 1` (`D` = 2 for both
//! directions), and the rest of its sizes come from its own weights. PyTorch's
//! `nn.LSTM`/`nn.GRU`/`nn.RNN` checkpoints name each layer's tensors with a
//! suffix (`weight_ih_l1`, `weight_ih_l1_reverse`): [`Layout::of_checkpoint`]
//! reads the layout off those names, and `layer_weights` gives each layer and
//! direction its tensors under the names of layer 0, which is what a cell's
//! bindings (`weight_ih_l0[0..H]`) read.
//!
//! Running follows PyTorch's packed sequences: a row of length `n` takes `n`
//! steps; its state stops changing after its last step; its outputs past the end
//! are zero; the reverse direction starts at the row's own last step. Rows are
//! ordered longest first, so that at every step the live rows are a prefix of
//! the batch: the steps between two consecutive lengths run as one sequence on
//! that prefix, and rows that have ended cost nothing.
//!
//! Schedules ([`Schedule`]): layer by layer (each kernel on every thread), the
//! two directions of a layer at once (each on half the threads), or the layers
//! of a one-direction stack as a wavefront over chunks of steps. The cost model
//! picks between the first two by where a layer's step weights fit (one core's
//! L2, or only a share of them); the wavefront runs only when asked for. Each
//! layer runs the plan the model picks for one thread over the whole sequence
//! under every schedule, and a kernel's results do not depend on its thread
//! count: the network's results are the same bits under every schedule and
//! thread count.

mod layout;
mod run;
mod schedule;
mod train;
mod wavefront;

pub(crate) use layout::layer_weights;
use layout::layered;
pub use layout::{Layout, MAX_LAYERS};
pub use schedule::Schedule;
pub use train::{NetworkForward, NetworkGradients, NetworkTape, NetworkTrainer};

use std::borrow::Cow;
use std::collections::BTreeSet;

use crate::sizes::PortLen;
use crate::{Cell, Error, Kernel, Options, Result, Weights};

/// A cell stacked into layers, in one direction or both, run over batches
/// of sequences of different lengths as PyTorch's `nn.LSTM` runs them.
///
/// ```
/// # fn main() -> cellc::Result<()> {
/// use cellc::network::{Layout, Network};
/// let cell = cellc::Cell::from_file("examples/gru.rnn")?.dims(&[("X", 3), ("H", 4)])?;
/// let layout = Layout { layers: 2, bidirectional: true, reverse: false };
/// let net = Network::new(cell, layout)?.compile_random(7, &cellc::Options::default())?;
/// let (steps, batch) = (5, 2);
/// let x = vec![0.5; steps * batch * 3];
/// // Row 1 is 3 steps long: its steps 3 and 4 are not read.
/// let out = net.run(&[&x], batch, Some(&[5, 3]), &[])?;
/// // Both directions side by side: [T, batch, 2 * H].
/// assert_eq!(out.outputs[0].len(), steps * batch * 2 * 4);
/// // Each state's final value: [layers * directions, batch, H].
/// assert_eq!(out.states[0].len(), 2 * 2 * batch * 4);
/// # Ok(())
/// # }
/// ```
#[derive(Clone, Debug)]
pub struct Network {
    cell: Cell,
    layout: Layout,
}

impl Network {
    /// A network of `layout.layers` layers of `cell`. More than one layer needs
    /// a cell with one input and one output (each layer reads the output of the
    /// one below).
    pub fn new(cell: Cell, layout: Layout) -> Result<Network> {
        if layout.layers == 0 || layout.layers > MAX_LAYERS {
            return Err(Error::options(format!(
                "a network has 1 to {MAX_LAYERS} layers, not {}",
                layout.layers
            )));
        }
        if layout.bidirectional && layout.reverse {
            return Err(Error::options(
                "a layout is bidirectional or reverse (one direction, backwards), not both",
            ));
        }
        let checked = cell.checked();
        if layout.layers > 1 && (checked.inputs.len() != 1 || checked.outputs.len() != 1) {
            return Err(Error::shape(format!(
                "cell `{}` has {} input{} and {} output{}; stacking layers needs one of each \
                 (each layer reads the output of the layer below)",
                checked.name,
                checked.inputs.len(),
                if checked.inputs.len() == 1 { "" } else { "s" },
                checked.outputs.len(),
                if checked.outputs.len() == 1 { "" } else { "s" },
            )));
        }
        if !layout.is_single() && checked.inputs.is_empty() {
            return Err(Error::shape(format!(
                "cell `{}` has no input: there is no sequence to run in reverse or to stack on",
                checked.name
            )));
        }
        Ok(Network { cell, layout })
    }

    /// The network a checkpoint describes: its layers and directions read off
    /// the tensor names ([`Layout::of_checkpoint`]), one layer forward if the
    /// names have no layer suffix.
    pub fn for_checkpoint(cell: Cell, weights: &Weights) -> Result<Network> {
        let layout = Layout::of_checkpoint(weights)?.unwrap_or(Layout::SINGLE);
        Network::new(cell, layout)
    }

    pub fn cell(&self) -> &Cell {
        &self.cell
    }

    pub fn layout(&self) -> Layout {
        self.layout
    }

    /// Each layer's cell with its sizes bound, without weights: layer 0 with
    /// the cell's sizes (the file's, or those given to [`Cell::dims`]), each
    /// layer above with its input `D * len(y)` of the layer below and its
    /// other sizes as layer 0's. For dumps (`cellc compile --layers`).
    pub fn layer_cells(&self) -> Result<Vec<Cell>> {
        let mut cells = vec![self.cell.clone()];
        let checked = self.cell.checked();
        let Some(input) = checked.inputs.first() else {
            return Ok(cells);
        };
        // The size variables the input's length is written in are free.
        let free: BTreeSet<u32> = input
            .len
            .terms()
            .flat_map(|(vars, _)| vars.iter().copied())
            .collect();
        let names = checked.dim_names();
        for l in 1..self.layout.layers {
            let below = cells[l - 1].ir()?;
            let given: Vec<(String, u64)> = below
                .dims
                .iter()
                .filter(|(n, _)| {
                    names
                        .iter()
                        .position(|m| m == n)
                        .is_none_or(|i| !free.contains(&(i as u32)))
                })
                .cloned()
                .collect();
            let len = self.layout.directions() * below.outputs[0].len;
            let port = PortLen {
                name: input.name.clone(),
                len,
                what: format!(
                    "input `{}` of layer {l} ({} x output `{}` of layer {})",
                    input.name,
                    self.layout.directions(),
                    below.outputs[0].name,
                    l - 1
                ),
            };
            let dims =
                crate::sizes::infer_sizes(self.cell.checked(), &Weights::new(), &[port], &given)?;
            cells.push(self.cell.clone().dims(&as_refs(&dims))?);
        }
        Ok(cells)
    }

    /// Compiles every layer and direction with random weights (as
    /// [`Weights::random`]), at the sizes of [`Network::layer_cells`]: for
    /// benchmarks.
    pub fn compile_random(&self, seed: u64, opts: &Options) -> Result<CompiledNetwork> {
        opts.check().map_err(Error::options)?;
        let kernel_opts = opts.clone();
        let mut layers = Vec::with_capacity(self.layout.layers);
        for (l, cell) in self.layer_cells()?.iter().enumerate() {
            let lowered = cell.ir()?;
            // Both directions are the same cell at the same sizes.
            let ir = cell.kernel_ir(&kernel_opts)?;
            let mut dirs = Vec::with_capacity(2);
            for d in 0..self.layout.directions() {
                let seed = seed.wrapping_add((l * 2 + d) as u64);
                let params = Weights::random(&lowered, seed).resolve(&ir)?;
                dirs.push(Kernel::new(ir.clone(), params, &kernel_opts)?);
            }
            layers.push(dirs);
        }
        Ok(CompiledNetwork::new(self.layout, layers, opts))
    }

    /// Compiles every layer and direction with the weights of a layered
    /// checkpoint (or, for one layer forward, any weights the cell binds).
    /// Sizes come from the weights; `ports` adds what the inputs and initial
    /// states say (layer 0's input, each state's length) and `given` sizes
    /// for layer 0 (they must agree with the tensors).
    pub fn compile(&self, weights: &Weights, opts: &Options) -> Result<CompiledNetwork> {
        self.compile_with(weights, &[], &[], opts)
    }

    pub(crate) fn compile_with(
        &self,
        weights: &Weights,
        ports: &[PortLen],
        given: &[(String, u64)],
        opts: &Options,
    ) -> Result<CompiledNetwork> {
        opts.check().map_err(Error::options)?;
        let kernel_opts = opts.clone();
        // The IR of the last sizes compiled: both directions usually share it.
        let mut last_ir: Option<(Vec<(String, u64)>, crate::ir::Cell)> = None;
        let layers = self.per_layer(weights, ports, given, |part| {
            let ir = match last_ir.take() {
                Some((d, ir)) if d == part.dims => ir,
                _ => part.cell.kernel_ir(&kernel_opts)?,
            };
            last_ir = Some((part.dims.clone(), ir.clone()));
            let params = (part.weights.resolve(&ir))
                .map_err(|e| in_layer(e.into(), self.layout, part.layer, part.reverse))?;
            Kernel::new(ir, params, &kernel_opts)
        })?;
        Ok(CompiledNetwork::new(self.layout, layers, opts))
    }

    /// Calls `make` with each layer's and direction's [`LayerPart`], layer
    /// 0 first, after checking that the weights hold this network; the
    /// results by layer and direction. Sizes come from the weights; `ports`
    /// adds what the inputs and initial states say (layer 0's input, each
    /// state's length) and `given` sizes for layer 0.
    pub(crate) fn per_layer<T>(
        &self,
        weights: &Weights,
        ports: &[PortLen],
        given: &[(String, u64)],
        mut make: impl FnMut(LayerPart<'_>) -> Result<T>,
    ) -> Result<Vec<Vec<T>>> {
        let layered = Layout::of_checkpoint(weights)?;
        match layered {
            Some(found) if found != self.layout => {
                return Err(Error::shape(format!(
                    "the network is {} but the weights hold {found}",
                    self.layout
                )))
            }
            None if !self.layout.is_single() => {
                return Err(Error::shape(format!(
                    "the network is {} but no weight names a layer (`weight_ih_l0`, \
                     `weight_ih_l0_reverse`, ...): cellc reads each layer's and direction's \
                     weights under PyTorch's names; the weights have {}",
                    self.layout,
                    weights.some_names()
                )))
            }
            _ => {}
        }
        if layered.is_some() {
            unlayered(weights)?;
        }
        let checked = self.cell.checked();
        let mut layers: Vec<Vec<T>> = Vec::with_capacity(self.layout.layers);
        let mut below_out: Option<(usize, String)> = None;
        for l in 0..self.layout.layers {
            let mut dirs = Vec::with_capacity(2);
            let mut out_len = None;
            for reverse in self.layout.runs().iter().copied() {
                // Every tensor of the layer must be read (`Weights::resolve`).
                let view = match layered {
                    Some(_) => Cow::Owned(layer_weights(weights, l, reverse)),
                    None => Cow::Borrowed(weights),
                };
                // Layer 0's input lengths from the caller, a layer above's from
                // the layer below; every layer's state lengths from the caller.
                let mut lens: Vec<PortLen> = Vec::new();
                if l == 0 {
                    lens.extend(
                        ports
                            .iter()
                            .filter(|p| checked.inputs.iter().any(|i| i.name == p.name))
                            .cloned(),
                    );
                } else if let (Some((len, what)), Some(input)) =
                    (&below_out, checked.inputs.first())
                {
                    lens.push(PortLen {
                        name: input.name.clone(),
                        len: *len,
                        what: what.clone(),
                    });
                }
                lens.extend(
                    ports
                        .iter()
                        .filter(|p| checked.states.iter().any(|s| s.name == p.name))
                        .cloned(),
                );
                let here = if l == 0 { given } else { &[][..] };
                let dims = crate::sizes::infer_sizes(self.cell.checked(), &view, &lens, here)
                    .map_err(|e| in_layer(e, self.layout, l, reverse))?;
                let cell = self.cell.clone().dims(&as_refs(&dims))?;
                if out_len.is_none() {
                    let lowered = cell.ir()?;
                    out_len = Some(match &lowered.outputs[..] {
                        [one] => Some((one.len, one.name.clone())),
                        _ => None,
                    });
                }
                dirs.push(make(LayerPart {
                    layer: l,
                    reverse,
                    dims,
                    cell,
                    weights: &view,
                })?);
            }
            if let (Some(Some((len, output))), Some(input)) = (out_len, checked.inputs.first()) {
                below_out = Some((
                    self.layout.directions() * len,
                    format!(
                        "input `{}` of layer {} ({} x output `{output}` of layer {l})",
                        input.name,
                        l + 1,
                        self.layout.directions(),
                    ),
                ));
            }
            layers.push(dirs);
        }
        Ok(layers)
    }
}

/// One layer and direction of a network, as [`Network::per_layer`] gives
/// it: its cell at its sizes and its weights under layer 0's names.
pub(crate) struct LayerPart<'a> {
    pub layer: usize,
    pub reverse: bool,
    /// The sizes the cell was given.
    pub dims: Vec<(String, u64)>,
    pub cell: Cell,
    pub weights: &'a Weights,
}

fn as_refs(dims: &[(String, u64)]) -> Vec<(&str, u64)> {
    dims.iter().map(|(n, v)| (n.as_str(), *v)).collect()
}

/// Says which layer an error came from, when there is more than one.
fn in_layer(e: Error, layout: Layout, layer: usize, reverse: bool) -> Error {
    if layout.is_single() {
        return e;
    }
    let kind = e.kind();
    let dir = if reverse { ", reverse" } else { "" };
    match e {
        Error::Other { message, .. } => Error::new(kind, format!("layer {layer}{dir}: {message}")),
        other => other,
    }
}

/// Refuses a tensor without a layer suffix in a layered checkpoint: no layer
/// would read it (a `bias_ih` beside `weight_ih_l0` would leave the layers
/// without their bias).
fn unlayered(weights: &Weights) -> Result<()> {
    let Some(name) = weights.names().find(|n| layered(weights, n).is_none()) else {
        return Ok(());
    };
    let example = weights
        .names()
        .find(|n| layered(weights, n).is_some())
        .unwrap_or_default();
    Err(Error::new(
        crate::ErrorKind::Weights,
        format!(
            "tensor `{}` has no layer suffix, but the checkpoint names its layers (`{}`): \
             no layer reads it; PyTorch names each layer's tensors `NAME_l<layer>` \
             (`{}_l0` for layer 0)",
            crate::diag::short(name),
            crate::diag::short(example),
            crate::diag::short(name)
        ),
    ))
}

/// A network's kernels: one per layer and direction. Between runs it keeps
/// each kernel's last state (its buffers, up to about 8 MiB each for the
/// hoisted projection) for the next run of the same batch; a run may be
/// called from several threads at once (each takes a kept state or makes
/// its own).
pub struct CompiledNetwork {
    layout: Layout,
    /// `layers[l][d]`: layer `l`, direction `d` (0 forward, 1 reverse).
    layers: Vec<Vec<Kernel>>,
    /// The threads the options allow (`None`: the cost model's choice, up
    /// to every core).
    threads: Option<usize>,
    forced: Option<Schedule>,
    /// `spare[l][d]`: the state the last run of layer `l`, direction `d`
    /// left, kept for the next run of the same batch: a new state's buffers
    /// (the hoisted projection's: up to 8 MiB) cost page faults and zeroing
    /// on every run (0.27-0.38 ms a kernel, 5 % of a 2-layer bidirectional
    /// LSTM at H = 512, batch 1, T = 100). A run sets every state before its
    /// steps, and the steps write every other buffer before reading it.
    spare: Vec<Vec<std::sync::Mutex<Option<crate::State>>>>,
}

/// What a network run gives: each output of the last layer `[T, B, D * len]`
/// (both directions side by side, forward first) and each state's final value
/// `[D * L, B, len]` (layer `l`, direction `d` at `l * D + d`, as PyTorch).
#[derive(Clone, Debug, PartialEq)]
pub struct NetworkRun {
    pub outputs: Vec<Vec<f32>>,
    pub states: Vec<Vec<f32>>,
}

impl std::fmt::Debug for CompiledNetwork {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CompiledNetwork")
            .field("layout", &self.layout)
            .field("forced", &self.forced)
            .field("layers", &self.layers)
            .finish()
    }
}

impl CompiledNetwork {
    pub fn layout(&self) -> Layout {
        self.layout
    }

    fn new(layout: Layout, layers: Vec<Vec<Kernel>>, opts: &Options) -> CompiledNetwork {
        let spare = (layers.iter())
            .map(|dirs| dirs.iter().map(|_| std::sync::Mutex::new(None)).collect())
            .collect();
        CompiledNetwork {
            layout,
            layers,
            threads: opts.threads,
            forced: None,
            spare,
        }
    }

    /// The kernel of layer `l`, direction `d`.
    pub fn kernel(&self, layer: usize, direction: usize) -> Option<&Kernel> {
        self.layers.get(layer)?.get(direction)
    }

    fn first(&self) -> &Kernel {
        &self.layers[0][0]
    }

    fn last(&self) -> &Kernel {
        &self.layers[self.layers.len() - 1][0]
    }

    pub fn input_names(&self) -> &[String] {
        self.first().input_names()
    }

    /// The length of each input of layer 0.
    pub fn input_lens(&self) -> Vec<usize> {
        (0..self.first().input_names().len())
            .map(|i| self.first().input_len(i))
            .collect()
    }

    pub fn output_names(&self) -> &[String] {
        self.last().output_names()
    }

    /// The length of each output, both directions together (`D * len`).
    pub fn output_lens(&self) -> Vec<usize> {
        let k = self.last();
        (0..k.output_names().len())
            .map(|o| self.layout.directions() * k.output_len(o))
            .collect()
    }

    pub fn state_names(&self) -> &[String] {
        self.first().state_names()
    }

    /// The length of each state in each layer, `[layer][state]`.
    pub fn state_lens(&self) -> Vec<Vec<usize>> {
        self.layers
            .iter()
            .map(|dirs| {
                (0..dirs[0].state_names().len())
                    .map(|s| dirs[0].state_len(s))
                    .collect()
            })
            .collect()
    }
}
