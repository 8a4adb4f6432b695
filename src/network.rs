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
//! reads the layout off those names, and [`layer_weights`] gives each layer and
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

use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet};

use crate::alloc;
use crate::run::PortLen;
use crate::weights::shape_str;
use crate::{Cell, Error, Kernel, Options, Result, Weights};

/// How many layers, and which directions.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Layout {
    pub layers: usize,
    pub bidirectional: bool,
    /// One direction, run from each row's last step to its first (an ONNX
    /// node with `direction = reverse`); not with `bidirectional`.
    pub reverse: bool,
}

/// Most layers a network may have.
pub const MAX_LAYERS: usize = 64;

impl Layout {
    /// One layer, forward: a cell on its own.
    pub const SINGLE: Layout = Layout {
        layers: 1,
        bidirectional: false,
        reverse: false,
    };

    /// 1 or 2.
    pub fn directions(self) -> usize {
        if self.bidirectional {
            2
        } else {
            1
        }
    }

    /// One layer in one direction, forward.
    pub fn is_single(self) -> bool {
        self == Layout::SINGLE
    }

    /// Whether each direction runs in reverse, in order.
    pub fn runs(self) -> &'static [bool] {
        match (self.bidirectional, self.reverse) {
            (true, _) => &[false, true],
            (false, true) => &[true],
            (false, false) => &[false],
        }
    }

    /// The layout of a PyTorch checkpoint, read off its tensor names (`_l<n>`
    /// for layer `n`, `_reverse` for the reverse direction); `None` when no
    /// name has a layer suffix (an `nn.LSTMCell`, a cell's own names). Every
    /// layer and direction must have the same tensors: a missing one is an
    /// error that names it.
    pub fn of_checkpoint(weights: &Weights) -> Result<Option<Layout>> {
        let groups = layer_groups(weights);
        let Some(&(last, _)) = groups.keys().max_by_key(|(l, _)| *l) else {
            return Ok(None);
        };
        let layers = last + 1;
        if layers > MAX_LAYERS {
            return Err(Error::shape(format!(
                "the weights name layer {last} (`_l{last}`); cellc runs at most {MAX_LAYERS} layers"
            )));
        }
        let forward = groups.keys().any(|(_, reverse)| !*reverse);
        let backward = groups.keys().any(|(_, reverse)| *reverse);
        let bidirectional = forward && backward;
        let layout = Layout {
            layers,
            bidirectional,
            reverse: !forward,
        };
        // Every layer and direction has the tensors of the forward layer 0.
        let all: BTreeSet<&str> = groups.values().flatten().copied().collect();
        for l in 0..layers {
            for &reverse in layout.runs() {
                let have = groups.get(&(l, reverse));
                for base in &all {
                    if !have.is_some_and(|h| h.contains(base)) {
                        let other = groups
                            .iter()
                            .find(|(_, h)| h.contains(base))
                            .map(|(&(ol, orev), _)| suffixed(base, ol, orev))
                            .unwrap_or_default();
                        return Err(Error::new(
                            crate::ErrorKind::Weights,
                            format!(
                                "the weights have `{other}` but no `{}`: every layer and direction \
                                 of a stacked{} module has the same tensors",
                                suffixed(base, l, reverse),
                                if bidirectional { " bidirectional" } else { "" }
                            ),
                        ));
                    }
                }
            }
        }
        Ok(Some(layout))
    }
}

impl std::fmt::Display for Layout {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} layer{}, {}",
            self.layers,
            if self.layers == 1 { "" } else { "s" },
            match (self.bidirectional, self.reverse) {
                (true, _) => "bidirectional",
                (false, true) => "reverse",
                (false, false) => "forward",
            }
        )
    }
}

/// `weight_ih_l1_reverse` -> (`weight_ih`, 1, true).
fn split_layer_name(name: &str) -> Option<(&str, usize, bool)> {
    let (rest, reverse) = match name.strip_suffix("_reverse") {
        Some(r) => (r, true),
        None => (name, false),
    };
    let at = rest.rfind("_l")?;
    let digits = &rest[at + 2..];
    // PyTorch writes `_l0`, `_l12`: no sign, no leading zero (`_l01` would
    // be a second name for layer 1).
    let canonical = digits == "0" || (!digits.starts_with('0') && digits.len() <= 4);
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) || !canonical {
        return None;
    }
    let base = &rest[..at];
    if base.is_empty() {
        return None;
    }
    Some((base, digits.parse().ok()?, reverse))
}

fn suffixed(base: &str, layer: usize, reverse: bool) -> String {
    format!("{base}_l{layer}{}", if reverse { "_reverse" } else { "" })
}

/// The layered tensors' base names, by (layer, reverse). A base counts as
/// layered only if layer 0 has it (`weight_ih_l0`, or `..._l0_reverse`): a cell's own
/// tensor that happens to end in `_l2` is not a third layer.
fn layer_groups(weights: &Weights) -> BTreeMap<(usize, bool), BTreeSet<&str>> {
    let mut groups: BTreeMap<(usize, bool), BTreeSet<&str>> = BTreeMap::new();
    for name in weights.names() {
        if let Some((base, l, rev)) = split_layer_name(name) {
            if has_layer_0(weights, base) {
                groups.entry((l, rev)).or_default().insert(base);
            }
        }
    }
    groups
}

/// Whether `name` is a layered tensor (see [`layer_groups`]).
fn layered(weights: &Weights, name: &str) -> Option<(String, usize, bool)> {
    let (base, l, rev) = split_layer_name(name)?;
    has_layer_0(weights, base).then(|| (base.to_string(), l, rev))
}

/// Whether layer 0 has tensor `base` in some direction.
fn has_layer_0(weights: &Weights, base: &str) -> bool {
    weights.get(&format!("{base}_l0")).is_some()
        || weights.get(&format!("{base}_l0_reverse")).is_some()
}

/// The tensors of one layer and direction of a layered checkpoint, under the
/// names of the forward layer 0 (`weight_ih_l1_reverse` -> `weight_ih_l0`).
/// A checkpoint of a module made with `bias=False` (PyTorch then saves no
/// `bias_*` tensors) gets zero `bias_ih_l0` and `bias_hh_l0`, as long as
/// `weight_ih_l0`/`weight_hh_l0`, whose rows they match; only when no tensor
/// of the checkpoint is a bias.
pub fn layer_weights(weights: &Weights, layer: usize, reverse: bool) -> Weights {
    let mut view = Weights::new();
    if weights.partial_reads_allowed() {
        view = view.allow_partial_reads();
    }
    for name in weights.names() {
        if let Some((base, l, rev)) = layered(weights, name) {
            if (l, rev) == (layer, reverse) {
                if let Some(t) = weights.get(name) {
                    // Names are unique in `weights`, so are their renamings.
                    let _ = view.insert(&format!("{base}_l0"), &t.shape, t.data.clone());
                }
            }
        }
    }
    // The rule: zero only when the checkpoint has no bias at all (a bias
    // under another name is refused by `unlayered`, not replaced by zeros).
    let has_bias = weights.names().any(|n| n.starts_with("bias"));
    if !has_bias {
        for (w, b) in [
            ("weight_ih_l0", "bias_ih_l0"),
            ("weight_hh_l0", "bias_hh_l0"),
        ] {
            if let Some(rows) = view.get(w).and_then(|t| t.shape.first().copied()) {
                let _ = view.insert(b, &[rows], vec![0.0; rows]);
            }
        }
    }
    view
}

/// A cell stacked into layers, in one direction or both.
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
            let dims = crate::run::infer_sizes(&self.cell, &Weights::new(), &[port], &given)?;
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
        let kernel_opts = opts.clone();
        let checked = self.cell.checked();
        let mut layers: Vec<Vec<Kernel>> = Vec::with_capacity(self.layout.layers);
        let mut below_out: Option<(usize, String)> = None;
        for l in 0..self.layout.layers {
            let mut dirs = Vec::with_capacity(2);
            // The IR of the last sizes compiled: both directions usually share it.
            let mut last_ir: Option<(Vec<(String, u64)>, crate::ir::Cell)> = None;
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
                let dims = crate::run::infer_sizes(&self.cell, &view, &lens, here)
                    .map_err(|e| in_layer(e, self.layout, l, reverse))?;
                let ir = match last_ir.take() {
                    Some((d, ir)) if d == dims => ir,
                    _ => self
                        .cell
                        .clone()
                        .dims(&as_refs(&dims))?
                        .kernel_ir(&kernel_opts)?,
                };
                last_ir = Some((dims, ir.clone()));
                let params = view
                    .resolve(&ir)
                    .map_err(|e| in_layer(e.into(), self.layout, l, reverse))?;
                let kernel = Kernel::new(ir, params, &kernel_opts)?;
                dirs.push(kernel);
            }
            let k = &dirs[0];
            if k.output_names().len() == 1 {
                below_out = Some((
                    self.layout.directions() * k.output_len(0),
                    format!(
                        "input `{}` of layer {} ({} x output `{}` of layer {l})",
                        k.input_names().first().map_or("", String::as_str),
                        l + 1,
                        self.layout.directions(),
                        k.output_names()[0]
                    ),
                ));
            }
            layers.push(dirs);
        }
        Ok(CompiledNetwork::new(self.layout, layers, opts))
    }
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

/// Each state's final value of one layer, `[B, len]` each.
type LayerStates = Vec<Vec<f32>>;

/// How a network's layers and directions share the threads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Schedule {
    /// Each layer and direction after the other, each kernel on every thread.
    LayerByLayer,
    /// The two directions of a layer at once, each on half the threads.
    DirectionsInParallel,
    /// Layers as a pipeline over chunks of steps: layer `l + 1` runs chunk `k`
    /// while layer `l` runs chunk `k + 1`, each kernel on one thread.
    Wavefront,
}

impl Schedule {
    pub const ALL: [Schedule; 3] = [
        Schedule::LayerByLayer,
        Schedule::DirectionsInParallel,
        Schedule::Wavefront,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Schedule::LayerByLayer => "layer-by-layer",
            Schedule::DirectionsInParallel => "directions-in-parallel",
            Schedule::Wavefront => "wavefront",
        }
    }

    /// The schedule named `name`.
    pub fn from_name(name: &str) -> Option<Schedule> {
        Schedule::ALL.into_iter().find(|s| s.name() == name)
    }

    /// Whether a network of `layout` can run this way over this batch.
    fn fits(self, layout: Layout, ragged: bool) -> bool {
        match self {
            Schedule::LayerByLayer => true,
            Schedule::DirectionsInParallel => layout.bidirectional,
            Schedule::Wavefront => layout.runs() == [false] && layout.layers > 1 && !ragged,
        }
    }
}

/// The threads a run may use: those the options give, or every core.
fn thread_budget(threads: Option<usize>) -> usize {
    threads.unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
}

/// The part of a core's L2 that a kernel's per-step weights may take and
/// mostly stay there from step to step: all of it (measured: a 2-core split
/// of a 4 MiB kernel, 2 MiB a core in 2 MiB L2s, ran 1.16x faster than each
/// core reading a whole 4 MiB kernel from L3).
const L2_SHARE: f64 = 1.0;

/// The schedule of a run (`ragged`: rows of different lengths) on `threads`
/// threads, given whether every layer's per-step
/// weights fit in one core's L2 (`whole_fits`) and whether a `threads`-way
/// share of them does (`share_fits`):
/// - the one forced, if it can run;
/// - both directions at once on a bidirectional network, unless a layer's
///   weights fit in L2 only when its kernel is split among the cores (then
///   layer by layer, each core keeping its share of every kernel in its L2:
///   measured 1.16-1.35x faster than directions at once for a 2-layer LSTM with
///   H = 512 on 2 cores of 2 MiB L2, where directions at once read 4 MiB per
///   step from L3);
/// - else layer by layer. The wavefront is never chosen by itself: measured on
///   2 cores (4-layer LSTM, batch 1, T = 100), layer by layer was as fast at H
///   = 64 and 128 and 1.36-1.58x faster at H = 256 and 512, where each layer's
///   kernel split among the cores keeps its share in L2 and a wavefront worker
///   holding whole layers does not (`docs/performance.md`, "Networks").
fn choose_schedule(
    layout: Layout,
    threads: usize,
    ragged: bool,
    forced: Option<Schedule>,
    whole_fits: bool,
    share_fits: bool,
) -> Schedule {
    if let Some(s) = forced.filter(|s| s.fits(layout, ragged)) {
        return s;
    }
    if threads >= 2 && layout.bidirectional && (whole_fits || !share_fits) {
        Schedule::DirectionsInParallel
    } else {
        Schedule::LayerByLayer
    }
}

/// The threads each kernel runs on under `schedule` (`None`: the cost
/// model's choice, within the options' `threads`).
fn kernel_threads(schedule: Schedule, threads: Option<usize>) -> Option<usize> {
    match schedule {
        Schedule::LayerByLayer => threads,
        Schedule::DirectionsInParallel => Some((thread_budget(threads) / 2).max(1)),
        Schedule::Wavefront => Some(1),
    }
}

/// How many chunks of steps a wavefront runs: about four per layer, so that
/// filling and draining the pipeline (one chunk each) costs little beside the
/// rest, each of at least 2 steps (a plan that hoists the input projection
/// runs one step without it, in another order of sums: the results would
/// differ from layer by layer's).
fn wave_chunks(steps: usize, layers: usize) -> usize {
    (steps / 2).clamp(1, 4 * layers)
}

/// The steps of chunk `c` of `chunks`: as equal as they can be.
fn wave_bounds(c: usize, chunks: usize, steps: usize) -> (usize, usize) {
    (c * steps / chunks, (c + 1) * steps / chunks)
}

/// A network's kernels: one per layer and direction.
pub struct CompiledNetwork {
    layout: Layout,
    /// `layers[l][d]`: layer `l`, direction `d` (0 forward, 1 reverse).
    layers: Vec<Vec<Kernel>>,
    /// The threads the options allow (`None`: the cost model's choice, up
    /// to every core).
    threads: Option<usize>,
    forced: Option<Schedule>,
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
        CompiledNetwork {
            layout,
            layers,
            threads: opts.threads,
            forced: None,
        }
    }

    /// Runs every batch it can this way (`None`: as
    /// [`CompiledNetwork::schedule`] chooses); a ragged batch, which cannot run
    /// as a wavefront, runs layer by layer (the same bits). A schedule the
    /// network cannot run at all is an error.
    pub fn force_schedule(&mut self, schedule: Option<Schedule>) -> Result<()> {
        if let Some(s) = schedule {
            if !s.fits(self.layout, false) {
                return Err(Error::options(format!(
                    "a network of {} cannot run {}",
                    self.layout,
                    s.name()
                )));
            }
        }
        self.forced = schedule;
        Ok(())
    }

    /// The threads a run may use: the options', or every core.
    fn thread_budget(&self) -> usize {
        thread_budget(self.threads)
    }

    /// How a run over `steps` steps of `batch` rows (`ragged`: of different
    /// lengths) shares the threads: the forced schedule if it can run, else
    /// as [`choose_schedule`] decides from where each layer's step weights fit.
    pub fn schedule(&self, batch: usize, steps: usize, ragged: bool) -> Schedule {
        let threads = self.thread_budget();
        let fit = |share: usize| {
            let l2 = crate::codegen::schedule::host().l2 as f64;
            self.layers.iter().all(|dirs| {
                let k = &dirs[0];
                let v = k.variant_for_any_threads(batch, steps);
                k.step_bytes(batch, steps, v) / share as f64 <= L2_SHARE * l2
            })
        };
        choose_schedule(
            self.layout,
            threads,
            ragged,
            self.forced,
            fit(1),
            fit(threads),
        )
    }

    /// The threads each kernel runs on under `schedule` (`None`: the cost
    /// model's choice, within the options').
    pub fn kernel_threads(&self, schedule: Schedule) -> Option<usize> {
        kernel_threads(schedule, self.threads)
    }

    /// The plan layer `layer` runs a batch of `batch` rows of `steps` steps
    /// with, under every schedule: the one the cost model picks for one
    /// thread (or the options'), so that the schedule does not change the
    /// results.
    pub fn layer_plan(&self, layer: usize, batch: usize, steps: usize) -> Option<crate::Variant> {
        let k = self.kernel(layer, 0)?;
        Some(k.variant_for_any_threads(batch, steps))
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

    /// Runs the network over a batch of sequences. `inputs[i]` is input `i` of
    /// layer 0, `[T, batch, len]`; `lengths`, if given, is each row's length
    /// (at most `T`; rows past their length are not read); `initial` gives
    /// some states' initial values by name, each `[D * L, batch, len]` (or
    /// `[batch, len]` for one layer in one direction); the others start at
    /// zero.
    pub fn run(
        &self,
        inputs: &[&[f32]],
        batch: usize,
        lengths: Option<&[usize]>,
        initial: &[(&str, &[f32])],
    ) -> Result<NetworkRun> {
        let first = self.first();
        if batch == 0 {
            return Err(Error::shape("the batch has no rows"));
        }
        // The kernels' own check that a batch fits in memory, before any
        // buffer of this function is sized by it.
        for dirs in &self.layers {
            dirs[0].new_state(batch)?;
        }
        if inputs.len() != first.input_names().len() {
            return Err(Error::shape(format!(
                "the network has {} input{}, {} given",
                first.input_names().len(),
                if first.input_names().len() == 1 {
                    ""
                } else {
                    "s"
                },
                inputs.len()
            )));
        }
        let steps = match inputs.first() {
            Some(x) => {
                let per = batch * first.input_len(0);
                if per == 0 || x.len() % per != 0 {
                    return Err(Error::shape(format!(
                        "input `{}` has {} values, not a whole number of steps of [{batch}, {}]",
                        first.input_names()[0],
                        x.len(),
                        first.input_len(0)
                    )));
                }
                x.len() / per
            }
            None => {
                return Err(Error::shape(format!(
                    "cell `{}` has no input, so there is no sequence to run",
                    first.name()
                )))
            }
        };
        for (i, x) in inputs.iter().enumerate() {
            let want = steps * batch * first.input_len(i);
            if x.len() != want {
                return Err(Error::shape(format!(
                    "input `{}`: expected {want} values ([{steps}, {batch}, {}]), got {}",
                    first.input_names()[i],
                    first.input_len(i),
                    x.len()
                )));
            }
        }
        if let Some(lens) = lengths {
            if lens.len() != batch {
                return Err(Error::shape(format!(
                    "`lengths` has {} values for a batch of {batch}",
                    lens.len()
                )));
            }
            if let Some((b, n)) = lens.iter().enumerate().find(|(_, &n)| n > steps) {
                return Err(Error::shape(format!(
                    "`lengths` gives row {b} {n} steps, but the sequence has {steps}"
                )));
            }
        }
        let d_count = self.layout.directions();
        let slots = d_count * self.layout.layers;
        let state_lens = self.state_lens();
        let mut inits: Vec<Option<&[f32]>> = vec![None; first.state_names().len()];
        for (name, values) in initial {
            let Some(s) = first.state_names().iter().position(|n| n == name) else {
                return Err(Error::shape(format!(
                    "no state named `{name}`; the states are {}",
                    first.state_names().join(", ")
                )));
            };
            if inits[s].is_some() {
                return Err(Error::shape(format!("state `{name}` is given twice")));
            }
            let want: usize = state_lens.iter().map(|l| l[s]).sum::<usize>() * d_count * batch;
            if values.len() != want {
                let shape = if state_lens.iter().all(|l| l[s] == state_lens[0][s]) {
                    shape_str(&[slots, batch, state_lens[0][s]])
                } else {
                    "each layer's [D, B, len] in turn".to_string()
                };
                return Err(Error::shape(format!(
                    "initial state `{name}`: expected {want} values ({shape}), got {}",
                    values.len()
                )));
            }
            inits[s] = Some(values);
        }
        // Final states, [D * L, B, len] for each state (layers may differ in len).
        let mut finals: Vec<Vec<f32>> = (0..first.state_names().len())
            .map(|s| {
                let per_row = state_lens.iter().map(|l| l[s]).sum::<usize>();
                alloc::zeros(
                    alloc::product(&[per_row, d_count, batch], "the final states")?,
                    "the final states",
                )
            })
            .collect::<Result<_>>()?;
        let state_offset = |s: usize, l: usize, d: usize| -> usize {
            let below: usize = state_lens[..l].iter().map(|x| x[s]).sum::<usize>() * d_count;
            (below + d * state_lens[l][s]) * batch
        };
        let init_of = |l: usize, d: usize| -> Result<Vec<Cow<'_, [f32]>>> {
            (0..self.layers[l][d].state_names().len())
                .map(|s| {
                    let n = batch * state_lens[l][s];
                    Ok(match inits[s] {
                        Some(v) => {
                            let at = state_offset(s, l, d);
                            Cow::Borrowed(&v[at..at + n])
                        }
                        None => Cow::Owned(alloc::zeros(n, "the initial states")?),
                    })
                })
                .collect()
        };
        let ragged = lengths.is_some_and(|lens| lens.iter().any(|&n| n != steps));
        // No step (T = 0) is the rule for rows of length 0 on every schedule:
        // no output, final states the initial ones. Layer by layer gives
        // that; a wavefront has no chunk to run.
        let schedule = if steps == 0 {
            Schedule::LayerByLayer
        } else {
            self.schedule(batch, steps, ragged)
        };
        let threads = self.kernel_threads(schedule);
        if schedule == Schedule::Wavefront {
            let init: Vec<Vec<Cow<'_, [f32]>>> = (0..self.layers.len())
                .map(|l| init_of(l, 0))
                .collect::<Result<_>>()?;
            let (output, states) = self.run_wavefront(inputs[0], steps, batch, &init)?;
            for (l, layer) in states.iter().enumerate() {
                for (s, values) in layer.iter().enumerate() {
                    let at = state_offset(s, l, 0);
                    finals[s][at..at + values.len()].copy_from_slice(values);
                }
            }
            return Ok(NetworkRun {
                outputs: vec![output],
                states: finals,
            });
        }
        let mut layer_in: Vec<Cow<'_, [f32]>> = inputs.iter().map(|x| Cow::Borrowed(*x)).collect();
        let mut outputs = Vec::new();
        for (l, dirs) in self.layers.iter().enumerate() {
            let ins: Vec<&[f32]> = layer_in.iter().map(|c| c.as_ref()).collect();
            let job = |d: usize| {
                let init = init_of(l, d)?;
                let init: Vec<&[f32]> = init.iter().map(|c| c.as_ref()).collect();
                let dir = Direction {
                    kernel: &dirs[d],
                    reverse: self.layout.runs()[d],
                    threads,
                };
                dir.run(&ins, steps, batch, lengths, &init)
            };
            let results: Vec<Directed> = match schedule {
                Schedule::DirectionsInParallel if dirs.len() == 2 => {
                    let (fwd, rev) = std::thread::scope(|scope| {
                        let rev = scope.spawn(|| job(1));
                        let fwd = job(0);
                        (fwd, rev.join())
                    });
                    let rev = rev
                        .map_err(|_| Error::internal("the reverse direction's thread panicked"))?;
                    vec![fwd?, rev?]
                }
                _ => (0..dirs.len()).map(job).collect::<Result<_>>()?,
            };
            for (d, r) in results.iter().enumerate() {
                for (s, values) in r.states.iter().enumerate() {
                    let at = state_offset(s, l, d);
                    finals[s][at..at + values.len()].copy_from_slice(values);
                }
            }
            let k = &dirs[0];
            let rows = steps * batch;
            let concat: Vec<Vec<f32>> = match <[Directed; 1]>::try_from(results) {
                // One direction: its outputs as they are.
                Ok([one]) => one.outputs,
                Err(both) => (0..k.output_names().len())
                    .map(|o| {
                        let parts: Vec<&[f32]> =
                            both.iter().map(|r| r.outputs[o].as_slice()).collect();
                        side_by_side(&parts, rows, k.output_len(o))
                    })
                    .collect::<Result<_>>()?,
            };
            if l + 1 < self.layers.len() {
                layer_in = concat.into_iter().map(Cow::Owned).collect();
            } else {
                outputs = concat;
            }
        }
        Ok(NetworkRun {
            outputs,
            states: finals,
        })
    }
}

impl CompiledNetwork {
    /// The layers of a one-direction network as a pipeline over chunks of
    /// steps ([`Schedule::Wavefront`]): a task is one layer over one chunk, on
    /// one thread; it can start when the layer below has finished that chunk
    /// and its own layer the chunk before. Each worker owns a contiguous run
    /// of layers (their weights stay in its caches) and takes the deepest of
    /// its tasks that can start (draining the pipeline first). Each layer's plan is the
    /// one it would run over the whole sequence, so the results are those of
    /// layer by layer, bit for bit. Returns the last layer's output and each
    /// layer's final states.
    fn run_wavefront(
        &self,
        x: &[f32],
        steps: usize,
        batch: usize,
        init: &[Vec<Cow<'_, [f32]>>],
    ) -> Result<(Vec<f32>, Vec<LayerStates>)> {
        use std::sync::{Condvar, Mutex, OnceLock};
        let layers: Vec<&Kernel> = self.layers.iter().map(|d| &d[0]).collect();
        let n = layers.len();
        let chunks = wave_chunks(steps, n);
        let mut states = Vec::with_capacity(n);
        let mut variants = Vec::with_capacity(n);
        for (k, init) in layers.iter().zip(init) {
            let mut state = k.new_state(batch)?;
            for (s, name) in k.state_names().iter().enumerate() {
                state.set(name, &init[s])?;
            }
            states.push(Mutex::new(state));
            variants.push(k.variant_for_any_threads(batch, steps));
        }
        let outs: Vec<Vec<OnceLock<Vec<f32>>>> = (0..n)
            .map(|_| (0..chunks).map(|_| OnceLock::new()).collect())
            .collect();
        struct Progress {
            next: Vec<usize>,
            done: Vec<usize>,
            busy: Vec<bool>,
            failed: Option<Error>,
        }
        let progress = Mutex::new(Progress {
            next: vec![0; n],
            done: vec![0; n],
            busy: vec![false; n],
            failed: None,
        });
        let wake = Condvar::new();
        let in_len = layers[0].input_len(0);
        // One task: layer `l` over chunk `c`.
        let task = |l: usize, c: usize| -> Result<()> {
            let (t0, t1) = wave_bounds(c, chunks, steps);
            let input: &[f32] = match l {
                0 => &x[t0 * batch * in_len..t1 * batch * in_len],
                _ => outs[l - 1][c]
                    .get()
                    .ok_or_else(|| Error::internal("wavefront: a chunk ran before its input"))?,
            };
            let k = layers[l];
            let what = "a layer's outputs";
            let mut out = alloc::zeros(
                alloc::product(&[t1 - t0, batch, k.output_len(0)], what)?,
                what,
            )?;
            let mut state = states[l]
                .lock()
                .map_err(|_| Error::internal("wavefront: a layer's state was poisoned"))?;
            k.run_planned(&[input], &mut state, &mut [&mut out], variants[l], Some(1))?;
            outs[l][c]
                .set(out)
                .map_err(|_| Error::internal("wavefront: a chunk ran twice"))
        };
        let workers = self.thread_budget().min(n);
        // Layer `l` runs on worker `l * workers / n`: each worker keeps its
        // layers' weights in its own caches.
        let owner = |l: usize| l * workers / n;
        let worker = |w: usize| loop {
            let (l, c) = {
                let Ok(mut p) = progress.lock() else { return };
                loop {
                    if p.failed.is_some() || p.done.iter().all(|&d| d == chunks) {
                        return;
                    }
                    let ready = (0..n).rev().find(|&l| {
                        owner(l) == w
                            && !p.busy[l]
                            && p.next[l] < chunks
                            && (l == 0 || p.done[l - 1] > p.next[l])
                    });
                    if let Some(l) = ready {
                        p.busy[l] = true;
                        p.next[l] += 1;
                        break (l, p.next[l] - 1);
                    }
                    let Ok(q) = wake.wait(p) else { return };
                    p = q;
                }
            };
            let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| task(l, c)))
                .unwrap_or_else(|_| Err(Error::internal("wavefront: a task panicked")));
            if let Ok(mut p) = progress.lock() {
                p.busy[l] = false;
                p.done[l] += 1;
                if let Err(e) = result {
                    p.failed.get_or_insert(e);
                }
            }
            wake.notify_all();
        };
        std::thread::scope(|scope| {
            for w in 1..workers {
                scope.spawn(move || worker(w));
            }
            worker(0);
        });
        let p = progress
            .into_inner()
            .map_err(|_| Error::internal("wavefront: the progress was poisoned"))?;
        if let Some(e) = p.failed {
            return Err(e);
        }
        let mut output = Vec::with_capacity(steps * batch * layers[n - 1].output_len(0));
        for c in outs.into_iter().last().unwrap_or_default() {
            output.extend_from_slice(
                &c.into_inner()
                    .ok_or_else(|| Error::internal("wavefront: a chunk did not run"))?,
            );
        }
        let mut finals = Vec::with_capacity(n);
        for (k, state) in layers.iter().zip(states) {
            let state = state
                .into_inner()
                .map_err(|_| Error::internal("wavefront: a layer's state was poisoned"))?;
            finals.push(
                k.state_names()
                    .iter()
                    .map(|name| state.get(name))
                    .collect::<Result<Vec<_>>>()?,
            );
        }
        Ok((output, finals))
    }
}

/// Rows of equal-length parts, side by side: `[rows, parts * len]`.
fn side_by_side(parts: &[&[f32]], rows: usize, len: usize) -> Result<Vec<f32>> {
    let what = "a layer's outputs";
    let mut out = alloc::with_capacity(alloc::product(&[rows, len, parts.len()], what)?, what)?;
    for r in 0..rows {
        for p in parts {
            out.extend_from_slice(&p[r * len..(r + 1) * len]);
        }
    }
    Ok(out)
}

/// One direction of one layer: each output `[T, B, len]`, each state's final
/// value `[B, len]`.
struct Directed {
    outputs: Vec<Vec<f32>>,
    states: Vec<Vec<f32>>,
}

/// One direction of one layer, and the threads its kernel runs on.
struct Direction<'a> {
    kernel: &'a Kernel,
    reverse: bool,
    threads: Option<usize>,
}

impl Direction<'_> {
    /// Runs over a batch of sequences of `lengths` (all `steps` if `None`), from
    /// the initial states `init` (`[B, len]` each).
    fn run(
        &self,
        xs: &[&[f32]],
        steps: usize,
        batch: usize,
        lengths: Option<&[usize]>,
        init: &[&[f32]],
    ) -> Result<Directed> {
        let (kernel, reverse) = (self.kernel, self.reverse);
        let out_lens: Vec<usize> = (0..kernel.output_names().len())
            .map(|o| kernel.output_len(o))
            .collect();
        let in_lens: Vec<usize> = (0..xs.len()).map(|i| kernel.input_len(i)).collect();
        let state_lens: Vec<usize> = (0..kernel.state_names().len())
            .map(|s| kernel.state_len(s))
            .collect();
        let full = vec![steps; batch];
        let lens = lengths.unwrap_or(&full);
        // Longest first (stable), so that the live rows are a prefix.
        let mut order: Vec<usize> = (0..batch).collect();
        order.sort_by_key(|&b| std::cmp::Reverse(lens[b]));
        let in_place = !reverse && lens.iter().all(|&n| n == steps);
        // Each input with its rows in `order`, each row's steps in the order they
        // run (reversed for the reverse direction).
        let arrange = |x: &[f32], len: usize| -> Result<Vec<f32>> {
            let what = "the inputs in running order";
            let mut v = alloc::zeros(alloc::product(&[steps, batch, len], what)?, what)?;
            for (r, &b) in order.iter().enumerate() {
                let n = lens[b];
                for s in 0..n {
                    let src = if reverse { n - 1 - s } else { s };
                    v[(s * batch + r) * len..][..len]
                        .copy_from_slice(&x[(src * batch + b) * len..][..len]);
                }
            }
            Ok(v)
        };
        let xp: Vec<Cow<'_, [f32]>> = xs
            .iter()
            .zip(&in_lens)
            .map(|(x, &len)| {
                Ok(if in_place {
                    Cow::Borrowed(*x)
                } else {
                    Cow::Owned(arrange(x, len)?)
                })
            })
            .collect::<Result<_>>()?;
        let what = "the outputs";
        let mut outp: Vec<Vec<f32>> = out_lens
            .iter()
            .map(|&len| alloc::zeros(alloc::product(&[steps, batch, len], what)?, what))
            .collect::<Result<_>>()?;
        // The states of the live rows, in `order`.
        let mut cur: Vec<Vec<f32>> = init
            .iter()
            .zip(&state_lens)
            .map(|(v, &len)| {
                let mut c = alloc::with_capacity(batch * len, "the states")?;
                for &b in &order {
                    c.extend_from_slice(&v[b * len..(b + 1) * len]);
                }
                Ok(c)
            })
            .collect::<Result<_>>()?;
        let mut finals: Vec<Vec<f32>> = init
            .iter()
            .map(|v| alloc::copy(v, "the final states"))
            .collect::<Result<_>>()?;
        let mut s0 = 0;
        let mut live = order.iter().take_while(|&&b| lens[b] > 0).count();
        while live > 0 {
            let s1 = lens[order[live - 1]];
            let k = s1 - s0;
            let mut state = kernel.new_state(live)?;
            for (s, name) in kernel.state_names().iter().enumerate() {
                state.set(name, &cur[s][..live * state_lens[s]])?;
            }
            let seg_in: Vec<Cow<'_, [f32]>> = xp
                .iter()
                .zip(&in_lens)
                .map(|(x, &len)| {
                    Ok(if live == batch {
                        Cow::Borrowed(&x[s0 * batch * len..s1 * batch * len])
                    } else {
                        let mut v = alloc::with_capacity(k * live * len, "the live rows' inputs")?;
                        for s in s0..s1 {
                            v.extend_from_slice(&x[s * batch * len..][..live * len]);
                        }
                        Cow::Owned(v)
                    })
                })
                .collect::<Result<_>>()?;
            let seg_in: Vec<&[f32]> = seg_in.iter().map(|c| c.as_ref()).collect();
            let variant = kernel.variant_for_any_threads(live, k);
            if live == batch {
                let mut views: Vec<&mut [f32]> = outp
                    .iter_mut()
                    .zip(&out_lens)
                    .map(|(o, &len)| &mut o[s0 * batch * len..s1 * batch * len])
                    .collect();
                kernel.run_planned(&seg_in, &mut state, &mut views, variant, self.threads)?;
            } else {
                let mut seg_out: Vec<Vec<f32>> = out_lens
                    .iter()
                    .map(|&len| alloc::zeros(k * live * len, "the live rows' outputs"))
                    .collect::<Result<_>>()?;
                {
                    let mut views: Vec<&mut [f32]> =
                        seg_out.iter_mut().map(Vec::as_mut_slice).collect();
                    kernel.run_planned(&seg_in, &mut state, &mut views, variant, self.threads)?;
                }
                for ((o, so), &len) in outp.iter_mut().zip(&seg_out).zip(&out_lens) {
                    for (j, s) in (s0..s1).enumerate() {
                        o[s * batch * len..][..live * len]
                            .copy_from_slice(&so[j * live * len..][..live * len]);
                    }
                }
            }
            for (s, name) in kernel.state_names().iter().enumerate() {
                let v = state.get(name)?;
                cur[s][..v.len()].copy_from_slice(&v);
            }
            let next = order[..live].iter().take_while(|&&b| lens[b] > s1).count();
            for (r, &b) in order.iter().enumerate().take(live).skip(next) {
                for (s, &len) in state_lens.iter().enumerate() {
                    finals[s][b * len..(b + 1) * len]
                        .copy_from_slice(&cur[s][r * len..(r + 1) * len]);
                }
            }
            s0 = s1;
            live = next;
        }
        let outputs = if in_place {
            outp
        } else {
            // Back to the caller's rows and steps.
            outp.iter()
                .zip(&out_lens)
                .map(|(o, &len)| {
                    let mut v = alloc::zeros(o.len(), what)?;
                    for (r, &b) in order.iter().enumerate() {
                        let n = lens[b];
                        for s in 0..n {
                            let dst = if reverse { n - 1 - s } else { s };
                            v[(dst * batch + b) * len..][..len]
                                .copy_from_slice(&o[(s * batch + r) * len..][..len]);
                        }
                    }
                    Ok(v)
                })
                .collect::<Result<_>>()?
        };
        Ok(Directed {
            outputs,
            states: finals,
        })
    }
}
