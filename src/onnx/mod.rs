//! Importing an ONNX model's `LSTM` or `GRU` node: the cell that computes it (in
//! ONNX's gate order) and its weights under the names that cell binds.
//!
//! An ONNX file is a protobuf message; `proto` reads the few fields the
//! importer needs. What is understood (`docs/interop.md` says it for users):
//!
//! - one `LSTM` node (gate order i, o, f, c; optional `B`; optional peepholes
//!   `P`) or one `GRU` node (gate order z, r, h; `linear_before_reset` 0 or 1),
//!   or a stack of them, in any direction, default activations, no `clip`,
//!   `input_forget = 0`, `layout = 0`, every attribute of its ONNX type;
//! - its sequence `X` a graph input, or a batch-first model's `Transpose` of
//!   one (the model then reads and writes `[B, T, ...]`);
//! - its weights stored in the model (initializers or `Constant` nodes, in the
//!   file or in external data beside it; float, double or float16), or
//!   computed from stored tensors by the constant ops `fold` computes;
//! - initial states absent, graph inputs (one per model, each layer slicing
//!   its rows), stored in the model, or an `Expand` of stored zeros (as
//!   `torch.onnx.export` writes them, with the `Shape`/`Gather`/`Unsqueeze`/
//!   `Concat` nodes that size them);
//! - graph outputs `Y`, `Y_h`, `Y_c`, or `Y` through the glue exporters put
//!   after it that only drops its direction axis: `Squeeze` of axis 1, or
//!   `Transpose` [0, 2, 1, 3] then `Reshape` to `[T, B, H]` (the values stay in
//!   the same order; a literal T or B there is a size the run must have).
//!
//! Every other node, attribute, type or use is refused with a message that
//! names it: a model is imported exactly or not at all. How the import runs
//! is [`crate::run::run_onnx`]'s: ONNX Runtime's rules.

mod fold;
mod glue;
mod graph;
mod node;
pub(crate) mod proto;
mod quantized;

use std::path::Path;

use crate::weights::{Weights, WeightsError};
use glue::{concat_of, glue_output, layer_slice, order_chain, zero_expand};
use graph::{Ctx, Source, Values};
use node::{node_config, Config};
use quantized::dequantized;

/// Most recurrent nodes (layers) a model may stack.
const MAX_LAYERS: usize = 64;
use proto::{err, short};

/// The source of the cells an import may produce.
pub const ONNX_LSTM: &str = include_str!("cells/onnx_lstm.rnn");
pub const ONNX_GRU: &str = include_str!("cells/onnx_gru.rnn");
pub const GRU_RESET_BEFORE: &str = include_str!("cells/gru_reset_before.rnn");

/// The cell an import names ([`Imported::cell_name`]) and its source: for
/// rebuilding an [`Imported`] from its parts (the Python package pickles one
/// that way).
pub fn cell_named(name: &str) -> Option<(&'static str, &'static str)> {
    [
        ("onnx_lstm.rnn", ONNX_LSTM),
        ("onnx_gru.rnn", ONNX_GRU),
        ("gru_reset_before.rnn", GRU_RESET_BEFORE),
    ]
    .into_iter()
    .find(|(n, _)| *n == name)
}

/// A model, imported: the cell its recurrent node runs, the weights under
/// that cell's names, and how the graph around it lays out the data.
///
/// ```
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let path = std::path::Path::new("tests/conformance/cases/onnx_gru_lbr1_tiny.onnx");
/// let model = cellc::onnx::import_file(path)?;
/// assert_eq!(model.layers, 1);
/// // The cell the node runs, at the model's sizes, compiled with its weights.
/// let cell = cellc::Cell::from_source(model.cell_name, model.cell_source)?.dims(&[
///     ("X", model.input_size as u64),
///     ("H", model.hidden_size as u64),
/// ])?;
/// let network = cellc::network::Network::for_checkpoint(cell, &model.weights)?;
/// let compiled = network.compile(&model.weights, &cellc::Options::default())?;
/// assert_eq!(compiled.output_lens(), vec![model.hidden_size]);
/// # Ok(())
/// # }
/// ```
#[derive(Clone, Debug)]
pub struct Imported {
    /// `onnx_lstm.rnn`, `onnx_gru.rnn` or `gru_reset_before.rnn`.
    pub cell_name: &'static str,
    pub cell_source: &'static str,
    /// How the model stores its matrices, when not in float: `Some(Int8)`
    /// for ONNX Runtime's `DynamicQuantizeLSTM` (com.microsoft), whose int8
    /// weights arrive here dequantized (`(q - zero_point) * scale`) and are
    /// to be run with `Options::precision` set to it (the CLI does), which
    /// stores them in int8 again, one scale per row: the model's own values
    /// when it was quantized per channel and symmetric (the quantizer's
    /// `per_channel=True`), within half a step of them otherwise.
    pub precision: Option<crate::ir::Precision>,
    /// Each layer's and direction's `W`, `R`, `B` (and `P` for an LSTM),
    /// `[1, ...]`, under PyTorch-style layer names (`W_l0`, `W_l1_reverse`),
    /// missing ones filled with zeros.
    pub weights: Weights,
    pub hidden_size: usize,
    pub input_size: usize,
    /// Initial states the model stores (`initial_h`, `initial_c` of each
    /// layer, not all zeros), as `[D*L, B, H]` under the cell's state names.
    pub initial: Weights,
    /// The stack: one layer per recurrent node, one direction or both.
    pub layers: usize,
    pub bidirectional: bool,
    /// The graph input that holds each row's length (`sequence_lens`), if any:
    /// give it as `lengths` with the inputs.
    pub lengths_input: Option<String>,
    /// The graph input that holds the sequence (`X` of the first layer).
    pub input_name: String,
    /// The graph inputs that hold initial states, `(state, graph input)`:
    /// `[D*L, B, H]` each. A run must be given each (under either name), as
    /// ONNX Runtime must.
    pub state_inputs: Vec<(String, String)>,
    /// The model reads its sequence and writes `Y` as `[B, T, ...]`: a
    /// `Transpose` of the graph input before the first layer and of `Y`
    /// after the last (`torch.onnx.export` of a `batch_first=True` module).
    pub batch_first: bool,
    /// Sizes the model's glue fixes (a `Reshape` to a literal `[T, B, ...]`,
    /// as the default exporter writes one): `(T, B)`, each if fixed. A run
    /// of other sizes is an error, as in ONNX Runtime.
    pub fixed_sizes: (Option<usize>, Option<usize>),
}

/// Reads an ONNX model and imports its LSTM or GRU node (see the module doc).
/// A model whose tensors are stored in files beside it needs
/// [`import_file`], which knows where it is.
pub fn import(bytes: &[u8]) -> Result<Imported, WeightsError> {
    import_from(bytes, None)
}

/// Most bytes a model file may have (the graph; its external data is read
/// tensor by tensor, only what the import uses).
pub const MAX_MODEL_BYTES: u64 = 4 << 30;

/// [`import`] of the model file at `path`, reading tensors stored outside it
/// (`onnx.save(..., save_as_external_data=True)`, as `torch.onnx.export`
/// writes large models) from files in its folder.
pub fn import_file(path: &Path) -> Result<Imported, WeightsError> {
    let bytes = crate::files::read_bounded(path, MAX_MODEL_BYTES, "ONNX models")
        .map_err(|e| WeightsError(e.message()))?;
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    import_from(&bytes, Some(dir))
}

fn import_from(bytes: &[u8], dir: Option<&Path>) -> Result<Imported, WeightsError> {
    let g = proto::read_model(bytes)?;
    let mut cx = Ctx::new(&g, dir)?;
    let rnn = recurrent_nodes(&g)?;
    let first = stack_config(&mut cx, &rnn)?;
    let chain = order_chain(&mut cx, &rnn, first.directions * first.hidden)?;
    // The sequence's graph input (before the batch-first model's Transpose).
    let x0 = g.nodes[chain[0]].inputs.first().copied().unwrap_or("");
    let input_name = match cx.source(x0) {
        Source::Node(i) => g.nodes[i].inputs[0],
        _ => x0,
    }
    .to_string();
    let (cell_name, cell_source) = match (first.lstm, first.lbr) {
        (true, _) => ("onnx_lstm.rnn", ONNX_LSTM),
        (false, true) => ("onnx_gru.rnn", ONNX_GRU),
        (false, false) => ("gru_reset_before.rnn", GRU_RESET_BEFORE),
    };
    let states = state_inputs_of(first);
    let mut weights = Weights::new();
    let mut input_size = 0;
    let mut initials: Vec<Vec<Initial>> = vec![Vec::new(); states.len()];
    let mut lengths_input: Option<&str> = None;
    for (layer, &r) in chain.iter().enumerate() {
        let width = layer_weights(&mut cx, r, layer, first, &mut weights)?;
        if layer == 0 {
            input_size = width;
        }
        let here = lengths_of(&cx, r)?;
        if layer == 0 {
            lengths_input = here;
        } else if here != lengths_input {
            return err(format!(
                "{} takes other sequence lengths than the layer below; cellc runs every \
                 layer on the same lengths",
                g.nodes[r].describe(r)
            ));
        }
        for (si, &(_, i, onnx_name)) in states.iter().enumerate() {
            let value = layer_initial(&mut cx, r, layer, chain.len(), i, onnx_name, first)?;
            initials[si].push(value);
        }
    }
    let (initial, state_inputs) = initial_states(states, &initials, chain.len(), first)?;
    check_outputs(&mut cx, &chain, first.directions * first.hidden)?;
    check_all_accepted(&cx, &chain)?;
    Ok(Imported {
        cell_name,
        cell_source,
        weights,
        hidden_size: first.hidden,
        input_size,
        initial,
        layers: chain.len(),
        bidirectional: first.directions == 2,
        lengths_input: lengths_input.map(str::to_string),
        precision: first.quantized.then_some(crate::ir::Precision::Int8),
        input_name,
        state_inputs,
        batch_first: cx.batch_first,
        fixed_sizes: cx.fixed,
    })
}

/// The recurrent nodes of the graph (at least one, at most [`MAX_LAYERS`]).
fn recurrent_nodes(g: &proto::Graph<'_>) -> Result<Vec<usize>, WeightsError> {
    let rnn: Vec<usize> = (0..g.nodes.len())
        .filter(|&i| {
            matches!(
                g.nodes[i].op_type,
                "LSTM" | "GRU" | "RNN" | "DynamicQuantizeLSTM"
            )
        })
        .collect();
    if rnn.is_empty() {
        let mut ops: Vec<&str> = g.nodes.iter().map(|n| n.op_type).collect();
        ops.sort_unstable();
        ops.dedup();
        let shown: Vec<String> = ops.iter().take(12).map(|o| short(o)).collect();
        return err(format!(
            "the model has no LSTM or GRU node (its ops: {}{})",
            shown.join(", "),
            if ops.len() > 12 { ", ..." } else { "" }
        ));
    }
    if rnn.len() > MAX_LAYERS {
        return err(format!(
            "the model has {} recurrent nodes; cellc imports at most {MAX_LAYERS} layers",
            rnn.len()
        ));
    }
    Ok(rnn)
}

/// Every recurrent node on its own (attributes, outputs), accepted; they
/// must all compute the same cell. The first one's configuration.
fn stack_config(cx: &mut Ctx, rnn: &[usize]) -> Result<Config, WeightsError> {
    let g = cx.g;
    let mut configs = Vec::with_capacity(rnn.len());
    for &r in rnn {
        cx.accepted[r] = true;
        let c = node_config(&g.nodes[r], &r)?;
        let outputs = if c.lstm { 3 } else { 2 };
        if g.nodes[r].outputs.len() > outputs {
            return err(format!(
                "{} has {} outputs; ONNX defines {outputs} (Y, Y_h{})",
                g.nodes[r].describe(r),
                g.nodes[r].outputs.len(),
                if c.lstm { ", Y_c" } else { "" }
            ));
        }
        configs.push(c);
    }
    let first = configs[0];
    let key = |c: &Config| {
        (
            c.lstm,
            c.lbr,
            c.directions,
            c.reverse,
            c.hidden,
            c.quantized,
        )
    };
    if let Some(k) = configs.iter().position(|c| key(c) != key(&first)) {
        return err(format!(
            "{} and {} differ (op, hidden_size, direction or linear_before_reset); \
             cellc imports a stack of layers of one cell",
            g.nodes[rnn[0]].describe(rnn[0]),
            g.nodes[rnn[k]].describe(rnn[k])
        ));
    }
    Ok(first)
}

/// The initial states of a layer: (cellc's state, the node's input index,
/// ONNX's name).
fn state_inputs_of(c: Config) -> &'static [(&'static str, usize, &'static str)] {
    if c.lstm {
        &[("h", 5, "initial_h"), ("c", 6, "initial_c")]
    } else {
        &[("h", 5, "initial_h")]
    }
}

/// Layer `layer`'s (node `r`'s) `W`, `R`, `B` and `P`, each direction's
/// slice under its layer's name (`W_l1_reverse`), into `weights`. Returns
/// the layer's input width, checked against the layer below's output.
fn layer_weights(
    cx: &mut Ctx,
    r: usize,
    layer: usize,
    c: Config,
    weights: &mut Weights,
) -> Result<usize, WeightsError> {
    let n = &cx.g.nodes[r];
    let desc = n.describe(r);
    let (directions, hidden) = (c.directions, c.hidden);
    let gates: usize = if c.lstm { 4 } else { 3 };
    let gh = gates
        .checked_mul(hidden)
        .ok_or_else(|| WeightsError("hidden_size is too large".into()))?;
    let max_inputs = match (c.lstm, c.quantized) {
        (_, true) => 12,
        (true, false) => 8,
        (false, false) => 6,
    };
    if n.inputs.len() > max_inputs {
        return err(format!(
            "{desc} has {} inputs; ONNX defines {max_inputs}",
            n.inputs.len()
        ));
    }
    let inputs = n.inputs.clone();
    let input = |i: usize| inputs.get(i).copied().unwrap_or("");
    let (w_found, r_found) = if c.quantized {
        let w = dequantized(cx, input(1), input(8), input(9), "W", &desc, directions)?;
        let r = dequantized(cx, input(2), input(10), input(11), "R", &desc, directions)?;
        (w, r)
    } else {
        (
            cx.stored_floats(input(1), &format!("W of {desc}"))?,
            cx.stored_floats(input(2), &format!("R of {desc}"))?,
        )
    };
    let Some((w_shape, w)) = w_found else {
        return err(format!("{desc} has no W"));
    };
    let Some((r_shape, r_data)) = r_found else {
        return err(format!("{desc} has no R"));
    };
    if w_shape.len() != 3 || w_shape[0] != directions || w_shape[1] != gh || w_shape[2] == 0 {
        return err(format!(
            "W of {desc} is {w_shape:?}; expected [{directions}, {gh}, input_size]"
        ));
    }
    if r_shape != [directions, gh, hidden] {
        return err(format!(
            "R of {desc} is {r_shape:?}; expected [{directions}, {gh}, {hidden}]"
        ));
    }
    if layer > 0 && w_shape[2] != directions * hidden {
        return err(format!(
            "W of {desc} is {w_shape:?}: its input is {} wide, but the layer below gives {}",
            w_shape[2],
            directions * hidden
        ));
    }
    let b = match cx.stored_floats(input(3), &format!("B of {desc}"))? {
        Some((s, b)) if s == [directions, 2 * gh] => b,
        Some((s, _)) => {
            return err(format!(
                "B of {desc} is {s:?}; expected [{directions}, {}]",
                2 * gh
            ))
        }
        None => vec![0.0; directions * 2 * gh],
    };
    let p = if c.lstm {
        Some(match cx.stored_floats(input(7), &format!("P of {desc}"))? {
            Some((s, p)) if s == [directions, 3 * hidden] => p,
            Some((s, _)) => {
                return err(format!(
                    "P of {desc} is {s:?}; expected [{directions}, {}]",
                    3 * hidden
                ))
            }
            None => vec![0.0; directions * 3 * hidden],
        })
    } else {
        None
    };
    let suffixes: &[&str] = match (directions, c.reverse) {
        (2, _) => &["", "_reverse"],
        (_, true) => &["_reverse"],
        _ => &[""],
    };
    for (d, suffix) in suffixes.iter().enumerate() {
        let name = |base: &str| format!("{base}_l{layer}{suffix}");
        let part = |v: &[f32], len: usize| v[d * len..(d + 1) * len].to_vec();
        let wl = gh * w_shape[2];
        weights.insert(&name("W"), &[1, gh, w_shape[2]], part(&w, wl))?;
        weights.insert(&name("R"), &[1, gh, hidden], part(&r_data, gh * hidden))?;
        weights.insert(&name("B"), &[1, 2 * gh], part(&b, 2 * gh))?;
        if let Some(p) = &p {
            weights.insert(&name("P"), &[1, 3 * hidden], part(p, 3 * hidden))?;
        }
    }
    Ok(w_shape[2])
}

/// Node `r`'s sequence lengths: absent, or a graph input.
fn lengths_of<'a>(cx: &Ctx<'_, 'a>, r: usize) -> Result<Option<&'a str>, WeightsError> {
    let n = &cx.g.nodes[r];
    let lens = n.inputs.get(4).copied().unwrap_or("");
    match cx.source(lens) {
        Source::Missing if lens.is_empty() => Ok(None),
        Source::GraphInput => Ok(Some(lens)),
        _ => err(format!(
            "sequence_lens of {} (`{}`) is not a graph input; cellc takes each row's length \
             as `lengths` with the inputs",
            n.describe(r),
            short(lens)
        )),
    }
}

/// Where layer `layer`'s (node `r`'s) initial state at input `i` comes from.
fn layer_initial<'a>(
    cx: &mut Ctx<'_, 'a>,
    r: usize,
    layer: usize,
    layers: usize,
    i: usize,
    onnx_name: &str,
    c: Config,
) -> Result<Initial<'a>, WeightsError> {
    let n = &cx.g.nodes[r];
    let name = n.inputs.get(i).copied().unwrap_or("");
    let what = format!("{onnx_name} of {}", n.describe(r));
    if name.is_empty() {
        return Ok(Initial::Zero);
    }
    Ok(match cx.source(name) {
        Source::GraphInput if layers == 1 => Initial::Input(name),
        Source::GraphInput => {
            return err(format!(
                "{what} is graph input `{}`, one of its own for this layer: cellc takes the \
                 initial states of a stack of layers as one [D*L, B, H] graph input (as \
                 torch.onnx.export writes it, sliced per layer), or stored in the model",
                short(name)
            ))
        }
        Source::Node(e) if zero_expand(cx, e)? => Initial::Zero,
        Source::Node(e) => match layer_slice(cx, e, layer, c.directions) {
            Some(input) => Initial::Input(input),
            None => stored_state(cx, name, &what, c.directions, c.hidden)?,
        },
        _ => stored_state(cx, name, &what, c.directions, c.hidden)?,
    })
}

/// The model's initial states from every layer's: those stored, as one
/// `[D*L, B, H]` tensor per state (zeros for the layers without), and those
/// that are a graph input (every layer's from one, or none), `(state, graph
/// input)`.
fn initial_states(
    states: &[(&str, usize, &str)],
    initials: &[Vec<Initial>],
    layers: usize,
    c: Config,
) -> Result<(Weights, Vec<(String, String)>), WeightsError> {
    let (directions, hidden) = (c.directions, c.hidden);
    let mut state_inputs = Vec::new();
    for (si, &(state, _, onnx_name)) in states.iter().enumerate() {
        let inputs: Vec<&str> = initials[si]
            .iter()
            .filter_map(|v| match v {
                Initial::Input(n) => Some(*n),
                _ => None,
            })
            .collect();
        match inputs.first() {
            None => {}
            Some(&first) if inputs.len() == layers && inputs.iter().all(|&n| n == first) => {
                state_inputs.push((state.to_string(), first.to_string()));
            }
            Some(_) => {
                return err(format!(
                    "the layers take their {onnx_name} from different places (some from a \
                     graph input, others stored or from other inputs); cellc takes one \
                     [D*L, B, H] graph input for every layer, or stored values"
                ))
            }
        }
    }
    let mut initial = Weights::new();
    for (si, &(state, _, _)) in states.iter().enumerate() {
        let per_layer = &initials[si];
        let Some(batch) = per_layer.iter().find_map(|v| match v {
            Initial::Stored((s, _)) => Some(s[1]),
            _ => None,
        }) else {
            continue;
        };
        let mut data = Vec::with_capacity(layers * directions * batch * hidden);
        for (layer, v) in per_layer.iter().enumerate() {
            match v {
                Initial::Stored((s, d)) if s[1] == batch => data.extend_from_slice(d),
                Initial::Stored((s, _)) => {
                    return err(format!(
                        "the initial `{state}` of layer {layer} is {s:?}, but another layer's has B = {batch}"
                    ))
                }
                Initial::Zero | Initial::Input(_) => {
                    data.extend(std::iter::repeat_n(0.0, directions * batch * hidden))
                }
            }
        }
        let shape = [layers * directions, batch, hidden];
        initial.insert(state, &shape, data)?;
    }
    Ok((initial, state_inputs))
}

/// The graph outputs: the last layer's `Y` through glue that puts its
/// directions side by side (`width` = D*H), and the layers' final states
/// (one layer's, or all of them concatenated in layer order). Accepts the
/// glue.
fn check_outputs(cx: &mut Ctx, chain: &[usize], width: usize) -> Result<(), WeightsError> {
    let g = cx.g;
    let node_out = |r: usize, i: usize| g.nodes[r].outputs.get(i).copied().unwrap_or("");
    let last = chain[chain.len() - 1];
    let y = node_out(last, 0);
    let desc = g.nodes[last].describe(last);
    for &out in &g.outputs {
        if out.is_empty() {
            continue;
        }
        // Y itself: cellc's `y` holds it with the directions side by side,
        // [T, B, D*H] (for one direction, the same values as [T, 1, B, H]).
        if out == y {
            if cx.batch_first {
                return err(format!(
                    "graph output `{}` is {desc}'s Y as it is ([T, D, B, H]), but the model \
                     reads its sequence batch-first; cellc runs a model in one layout",
                    short(out)
                ));
            }
            continue;
        }
        if chain.len() == 1 && (out == node_out(last, 1) || out == node_out(last, 2)) {
            continue;
        }
        let states_of = |i: usize| -> Vec<&str> { chain.iter().map(|&r| node_out(r, i)).collect() };
        if chain.len() > 1
            && (concat_of(cx, out, &states_of(1)) || concat_of(cx, out, &states_of(2)))
        {
            continue;
        }
        glue_output(cx, out, y, width, &desc)?;
    }
    Ok(())
}

/// Every node must be understood: a recurrent node, or glue around them.
fn check_all_accepted(cx: &Ctx, chain: &[usize]) -> Result<(), WeightsError> {
    let Some(i) = cx.accepted.iter().position(|a| !a) else {
        return Ok(());
    };
    let more = cx.accepted.iter().filter(|a| !**a).count() - 1;
    let last = chain[chain.len() - 1];
    err(format!(
        "{} is not part of what cellc imports ({} node{} and the glue exporters put around \
         and between them){}",
        cx.node(i),
        cx.g.nodes[last].op_type,
        if chain.len() == 1 { "" } else { "s" },
        if more > 0 {
            format!(
                "; {more} more such node{}",
                if more == 1 { "" } else { "s" }
            )
        } else {
            String::new()
        }
    ))
}

/// Where a layer's initial state comes from.
#[derive(Clone)]
enum Initial<'a> {
    /// Absent, an `Expand` of zeros, or stored zeros.
    Zero,
    /// Stored in the model, `[D, B, H]`.
    Stored(Values),
    /// A graph input (`[D*L, B, H]`, the layer's slice of it).
    Input(&'a str),
}

/// A layer's initial state stored in the model, `[D, B, H]`; all zeros is no
/// state (zeros at any batch).
fn stored_state<'a>(
    cx: &mut Ctx,
    name: &str,
    what: &str,
    directions: usize,
    hidden: usize,
) -> Result<Initial<'a>, WeightsError> {
    match cx.stored_floats(name, what)? {
        None => Ok(Initial::Zero),
        Some((shape, data)) => match shape.as_slice() {
            [dd, b, h] if *h == hidden && *b > 0 && *dd == directions => {
                Ok(if data.iter().all(|&v| v == 0.0) {
                    Initial::Zero
                } else {
                    Initial::Stored((shape, data))
                })
            }
            _ => err(format!(
                "{what} is {shape:?}; expected [{directions}, B, {hidden}]"
            )),
        },
    }
}
