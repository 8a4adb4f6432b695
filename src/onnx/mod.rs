//! Importing an ONNX model's `LSTM` or `GRU` node: the cell that computes it (in
//! ONNX's gate order) and its weights under the names that cell binds.
//!
//! An ONNX file is a protobuf message; [`proto`] reads the few fields the
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
//!   computed from stored tensors by the constant ops [`fold`] computes;
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
pub mod proto;

use std::collections::HashMap;
use std::path::Path;

use crate::weights::{Weights, WeightsError};
use fold::Known;

/// Most recurrent nodes (layers) a model may stack.
const MAX_LAYERS: usize = 64;
use proto::{err, short, AttrType, Graph, Node, Tensor};

/// The source of the cells an import may produce.
pub const ONNX_LSTM: &str = include_str!("cells/onnx_lstm.rnn");
pub const ONNX_GRU: &str = include_str!("cells/onnx_gru.rnn");
pub const GRU_RESET_BEFORE: &str = include_str!("cells/gru_reset_before.rnn");

/// A model, imported.
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

/// A tensor's shape and values.
type Values = (Vec<usize>, Vec<f32>);

/// The largest `hidden_size` (that of any size variable, `sema::MAX_DIM`).
const MAX_HIDDEN: i64 = 1 << 24;

/// What a tensor name is in the graph.
enum Source<'g, 'a> {
    Initializer(&'g Tensor<'a>),
    /// The `value` of a `Constant` node (index).
    Constant(usize, &'g Tensor<'a>),
    GraphInput,
    /// An output of another node (index).
    Node(usize),
    Missing,
}

struct Ctx<'g, 'a> {
    g: &'g Graph<'a>,
    producer: HashMap<&'a str, usize>,
    initializer: HashMap<&'a str, &'g Tensor<'a>>,
    /// Nodes whose role is understood.
    accepted: Vec<bool>,
    /// The model's folder, where its external data lives (`None`: a model
    /// given as bytes, whose external data cannot be found).
    dir: Option<&'g Path>,
    /// Values folding may still produce (see [`Ctx::stored`]).
    fold_budget: usize,
    /// How deep the folding of one value has gone.
    fold_depth: usize,
    /// The graph input of the sequence goes through a `Transpose` [1, 0, 2]
    /// before the first layer (and `Y` through one after the last).
    batch_first: bool,
    /// `(T, B)` as the glue's `Reshape`s fix them, if they do.
    fixed: (Option<usize>, Option<usize>),
}

/// Most nested constant operations one value may be folded through.
const MAX_FOLD_DEPTH: usize = 64;

/// Values folding may produce besides eight for each value it reads.
const FOLD_ALLOWANCE: usize = 1 << 20;

impl<'g, 'a> Ctx<'g, 'a> {
    fn source(&self, name: &str) -> Source<'g, 'a> {
        if let Some(t) = self.initializer.get(name) {
            return Source::Initializer(t);
        }
        if let Some(&i) = self.producer.get(name) {
            let n = &self.g.nodes[i];
            if n.op_type == "Constant" && n.domain.is_empty() {
                if let Some(t) = n
                    .attributes
                    .iter()
                    .find(|a| a.name == "value")
                    .and_then(|a| a.tensor.as_ref())
                {
                    return Source::Constant(i, t);
                }
            }
            return Source::Node(i);
        }
        if self.g.inputs.contains(&name) {
            return Source::GraphInput;
        }
        Source::Missing
    }

    fn node(&self, i: usize) -> String {
        self.g.nodes[i].describe(i)
    }

    /// The value of tensor `name`: stored in the model (an initializer, a
    /// `Constant` node, bytes in a file beside the model), or computed from
    /// such values by ops [`fold`] knows (as the default exporter leaves
    /// them), accepting the nodes. `None` for an absent optional input.
    /// Folding is bounded: at most [`MAX_FOLD_DEPTH`] ops deep, and no more
    /// values than eight for each stored value read, plus a
    /// [`FOLD_ALLOWANCE`].
    fn stored(&mut self, name: &str, what: &str) -> Result<Option<Known>, WeightsError> {
        if name.is_empty() {
            return Ok(None);
        }
        match self.source(name) {
            Source::Initializer(t) => self.decode(t, what).map(Some),
            Source::Constant(i, t) => {
                self.accepted[i] = true;
                self.decode(t, what).map(Some)
            }
            Source::GraphInput => err(format!(
                "{what} (`{}`) is a graph input; cellc needs it stored in the model \
                 (export with the parameters: `torch.onnx.export(..., export_params=True)`)",
                short(name)
            )),
            Source::Node(i) if fold::folds(self.g.nodes[i].op_type) => {
                if self.fold_depth >= MAX_FOLD_DEPTH {
                    return err(format!(
                        "{what} (`{}`) is computed through more than {MAX_FOLD_DEPTH} \
                         constant operations; cellc folds shallower graphs",
                        short(name)
                    ));
                }
                let n = &self.g.nodes[i];
                let desc = n.describe(i);
                self.fold_depth += 1;
                let operands: Result<Vec<Option<Known>>, WeightsError> = n
                    .inputs
                    .iter()
                    .map(|input| self.stored(input, &format!("an input of {desc}")))
                    .collect();
                self.fold_depth -= 1;
                let folded = fold::fold(n, &desc, operands?)?;
                let len = folded.values.len();
                if len > self.fold_budget {
                    return err(format!(
                        "{what} (`{}`): folding the constants that compute it would make \
                         more values than the model holds",
                        short(name)
                    ));
                }
                self.fold_budget -= len;
                self.accepted[i] = true;
                Ok(Some(folded))
            }
            Source::Node(i) => err(format!(
                "{what} (`{}`) is computed by {} rather than stored in the model; cellc \
                 folds {} of stored tensors, not this op",
                short(name),
                self.node(i),
                "Identity, Cast, Slice, Concat, Unsqueeze, Squeeze, Reshape and Transpose"
            )),
            Source::Missing => err(format!(
                "{what} (`{}`) is not defined anywhere in the graph",
                short(name)
            )),
        }
    }

    /// A stored tensor's values (external ones read from the model's
    /// folder); each value read allows folding eight more.
    fn decode(&mut self, t: &Tensor<'_>, what: &str) -> Result<Known, WeightsError> {
        let dir = self.dir;
        let (shape, values) = t.values(what, &|e, bytes| read_external(dir, e, bytes, what))?;
        self.fold_budget = self
            .fold_budget
            .saturating_add(values.len().saturating_mul(8));
        Ok(Known { shape, values })
    }

    /// An integer constant (a `Constant` node or an initializer), accepting the
    /// node that holds it.
    fn int_constant(&mut self, name: &str, what: &str) -> Result<Vec<i64>, WeightsError> {
        let k = self
            .stored(name, what)?
            .ok_or_else(|| WeightsError(format!("{what} is missing")))?;
        k.values.as_i64().ok_or_else(|| {
            WeightsError(format!(
                "{what} has ONNX element type {}; an integer tensor was expected",
                k.values.type_name()
            ))
        })
    }

    /// The value of `name` as float32 (from float, double or float16).
    fn stored_floats(&mut self, name: &str, what: &str) -> Result<Option<Values>, WeightsError> {
        self.stored(name, what)?
            .map(|k| floats(k, what))
            .transpose()
    }
}

/// A known tensor as float32 (float, double and float16 convert; other
/// element types are refused, named).
fn floats(k: Known, what: &str) -> Result<Values, WeightsError> {
    let data = match k.values {
        proto::Values::F32(v) => v,
        proto::Values::F64(v) => v.into_iter().map(|x| x as f32).collect(),
        proto::Values::F16(v) => v
            .into_iter()
            .map(|b| half::f16::from_bits(b).to_f32())
            .collect(),
        other => {
            return err(format!(
                "{what} has ONNX element type {}; cellc reads float, double and float16 here",
                other.type_name()
            ))
        }
    };
    Ok((k.shape, data))
}

/// Reads `bytes` bytes of external data `e` from the model's folder `dir`.
/// The file must be a regular file inside that folder (a relative path of
/// plain names, no `..`, and no link out of it), and hold the bytes at the
/// offset given; only they are read.
fn read_external(
    dir: Option<&Path>,
    e: &proto::External<'_>,
    bytes: usize,
    what: &str,
) -> Result<Vec<u8>, WeightsError> {
    use std::io::{Read, Seek, SeekFrom};
    let Some(dir) = dir else {
        return err(format!(
            "{what} is stored outside the model, in `{}`; read the model from its file \
             (`cellc run model.onnx`, `onnx::import_file`) so that cellc finds it beside the model",
            short(e.location)
        ));
    };
    let rel = Path::new(e.location);
    let plain = rel
        .components()
        .all(|c| matches!(c, std::path::Component::Normal(_)));
    if !plain {
        return err(format!(
            "{what} is stored in `{}`, which is not a plain relative path in the model's folder",
            short(e.location)
        ));
    }
    if let Some(len) = e.length {
        if len != bytes as u64 {
            return err(format!(
                "{what}: its external data is {len} bytes long, its shape needs {bytes}"
            ));
        }
    }
    let fail = |m: String| {
        WeightsError(format!(
            "{what}: external data `{}`: {m}",
            short(e.location)
        ))
    };
    let base = std::fs::canonicalize(dir).map_err(|x| fail(x.to_string()))?;
    let path = std::fs::canonicalize(dir.join(rel)).map_err(|x| fail(x.to_string()))?;
    if !path.starts_with(&base) {
        return Err(fail("it leads out of the model's folder".into()));
    }
    let mut file = std::fs::File::open(&path).map_err(|x| fail(x.to_string()))?;
    let meta = file.metadata().map_err(|x| fail(x.to_string()))?;
    if !meta.is_file() {
        return Err(fail("it is not a regular file".into()));
    }
    let end = e.offset.checked_add(bytes as u64);
    if end.is_none_or(|end| end > meta.len()) {
        return Err(fail(format!(
            "{bytes} bytes at offset {} run past its end ({} bytes)",
            e.offset,
            meta.len()
        )));
    }
    file.seek(SeekFrom::Start(e.offset))
        .map_err(|x| fail(x.to_string()))?;
    let mut out =
        crate::alloc::with_capacity(bytes, "external data").map_err(|x| fail(x.to_string()))?;
    out.resize(bytes, 0);
    file.read_exact(&mut out).map_err(|x| fail(x.to_string()))?;
    Ok(out)
}

/// The attribute `name` of a node, checked to have ONNX's type for it.
fn attribute<'n, 'a>(
    n: &'n Node<'a>,
    desc: &str,
    name: &str,
    want: AttrType,
) -> Result<Option<&'n proto::Attribute<'a>>, WeightsError> {
    let Some(a) = n.attributes.iter().find(|a| a.name == name) else {
        return Ok(None);
    };
    match a.checked_type() {
        Ok(t) if t == want => Ok(Some(a)),
        Ok(t) => err(format!(
            "attribute `{name}` of {desc} is {}; ONNX defines it as {}",
            t.name(),
            want.name()
        )),
        Err(why) => err(format!("attribute `{name}` of {desc} {why}")),
    }
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
    if g.sparse_initializers > 0 {
        return err("the model has sparse initializers; cellc reads dense ones");
    }
    let mut producer = HashMap::new();
    for (i, n) in g.nodes.iter().enumerate() {
        for &o in &n.outputs {
            if !o.is_empty() && producer.insert(o, i).is_some() {
                return err(format!(
                    "not a valid ONNX model: value `{}` is produced twice",
                    short(o)
                ));
            }
        }
    }
    let mut initializer = HashMap::new();
    for t in &g.initializers {
        if initializer.insert(t.name, t).is_some() {
            return err(format!(
                "not a valid ONNX model: initializer `{}` is defined twice",
                short(t.name)
            ));
        }
    }
    let mut cx = Ctx {
        g: &g,
        producer,
        initializer,
        accepted: vec![false; g.nodes.len()],
        dir,
        fold_budget: FOLD_ALLOWANCE,
        fold_depth: 0,
        batch_first: false,
        fixed: (None, None),
    };
    for (i, n) in g.nodes.iter().enumerate() {
        let quantized_lstm = n.domain == "com.microsoft" && n.op_type == "DynamicQuantizeLSTM";
        if !(n.domain.is_empty() || n.domain == "ai.onnx" || quantized_lstm) {
            return err(format!(
                "{} is in domain `{}`; cellc imports the standard ONNX operators",
                n.describe(i),
                short(n.domain)
            ));
        }
    }
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
    // Every node on its own: attributes, then the chain they make.
    let mut configs = Vec::with_capacity(rnn.len());
    for &r in &rnn {
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
    for (k, c) in configs.iter().enumerate().skip(1) {
        let (a, b) = (
            g.nodes[rnn[0]].describe(rnn[0]),
            g.nodes[rnn[k]].describe(rnn[k]),
        );
        if (
            c.lstm,
            c.lbr,
            c.directions,
            c.reverse,
            c.hidden,
            c.quantized,
        ) != (
            first.lstm,
            first.lbr,
            first.directions,
            first.reverse,
            first.hidden,
            first.quantized,
        ) {
            return err(format!(
                "{a} and {b} differ (op, hidden_size, direction or linear_before_reset); \
                 cellc imports a stack of layers of one cell"
            ));
        }
    }
    let chain = order_chain(&mut cx, &rnn, first.directions * first.hidden)?;
    // The sequence's graph input (before the batch-first model's Transpose).
    let x0 = g.nodes[chain[0]].inputs.first().copied().unwrap_or("");
    let input_name = match cx.source(x0) {
        Source::Node(i) => g.nodes[i].inputs[0],
        _ => x0,
    }
    .to_string();
    let Config {
        lstm,
        lbr,
        hidden,
        directions,
        reverse,
        quantized,
    } = first;
    let gates: usize = if lstm { 4 } else { 3 };
    let (cell_name, cell_source) = match (lstm, lbr) {
        (true, _) => ("onnx_lstm.rnn", ONNX_LSTM),
        (false, true) => ("onnx_gru.rnn", ONNX_GRU),
        (false, false) => ("gru_reset_before.rnn", GRU_RESET_BEFORE),
    };
    let gh = gates
        .checked_mul(hidden)
        .ok_or_else(|| WeightsError("hidden_size is too large".into()))?;
    let suffixes: &[&str] = match (directions, reverse) {
        (2, _) => &["", "_reverse"],
        (_, true) => &["_reverse"],
        _ => &[""],
    };
    let mut weights = Weights::new();
    let mut input_size = 0;
    // Initial states of each layer: (state, ONNX input index, ONNX name).
    let states: &[(&str, usize, &str)] = if lstm {
        &[("h", 5, "initial_h"), ("c", 6, "initial_c")]
    } else {
        &[("h", 5, "initial_h")]
    };
    let mut stored_initial: Vec<Vec<Initial>> = vec![Vec::new(); states.len()];
    let mut lengths_input: Option<&str> = None;
    for (layer, &r) in chain.iter().enumerate() {
        let n = &g.nodes[r];
        let desc = n.describe(r);
        let max_inputs = match (lstm, quantized) {
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
        let input = |i: usize| n.inputs.get(i).copied().unwrap_or("");
        let weight = |cx: &mut Ctx, i: usize, what: &str| -> Result<Option<Values>, WeightsError> {
            cx.stored_floats(input(i), what)
        };
        let (w_found, r_found) = if quantized {
            let w = dequantized(
                &mut cx,
                input(1),
                input(8),
                input(9),
                "W",
                &desc,
                directions,
            )?;
            let r = dequantized(
                &mut cx,
                input(2),
                input(10),
                input(11),
                "R",
                &desc,
                directions,
            )?;
            (w, r)
        } else {
            (
                weight(&mut cx, 1, &format!("W of {desc}"))?,
                weight(&mut cx, 2, &format!("R of {desc}"))?,
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
        if layer == 0 {
            input_size = w_shape[2];
        } else if w_shape[2] != directions * hidden {
            return err(format!(
                "W of {desc} is {w_shape:?}: its input is {} wide, but the layer below gives {}",
                w_shape[2],
                directions * hidden
            ));
        }
        let b = match weight(&mut cx, 3, &format!("B of {desc}"))? {
            Some((s, b)) if s == [directions, 2 * gh] => b,
            Some((s, _)) => {
                return err(format!(
                    "B of {desc} is {s:?}; expected [{directions}, {}]",
                    2 * gh
                ))
            }
            None => vec![0.0; directions * 2 * gh],
        };
        let p = if lstm {
            Some(match weight(&mut cx, 7, &format!("P of {desc}"))? {
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
        // Each direction's slice under its layer's name (`W_l1_reverse`).
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
        // Sequence lengths: the same graph input for every layer.
        let lens = input(4);
        let here = match cx.source(lens) {
            Source::Missing if lens.is_empty() => None,
            Source::GraphInput => Some(lens),
            _ => {
                return err(format!(
                    "sequence_lens of {desc} (`{}`) is not a graph input; cellc takes each \
                     row's length as `lengths` with the inputs",
                    short(lens)
                ))
            }
        };
        if layer == 0 {
            lengths_input = here;
        } else if here != lengths_input {
            return err(format!(
                "{desc} takes other sequence lengths than the layer below; cellc runs every \
                 layer on the same lengths"
            ));
        }
        // Initial states.
        for (si, &(_, i, onnx_name)) in states.iter().enumerate() {
            let name = input(i);
            let what = format!("{onnx_name} of {desc}");
            let value = if name.is_empty() {
                Initial::Zero
            } else {
                match cx.source(name) {
                    Source::GraphInput if chain.len() == 1 => Initial::Input(name),
                    Source::GraphInput => {
                        return err(format!(
                            "{what} is graph input `{}`, one of its own for this layer: cellc \
                             takes the initial states of a stack of layers as one \
                             [D*L, B, H] graph input (as torch.onnx.export writes it, sliced \
                             per layer), or stored in the model",
                            short(name)
                        ))
                    }
                    Source::Node(e) if zero_expand(&mut cx, e)? => Initial::Zero,
                    Source::Node(e) => match layer_slice(&mut cx, e, layer, directions) {
                        Some(input) => Initial::Input(input),
                        None => stored_state(&mut cx, name, &what, directions, hidden)?,
                    },
                    _ => stored_state(&mut cx, name, &what, directions, hidden)?,
                }
            };
            stored_initial[si].push(value);
        }
    }
    // Initial states that are graph inputs: every layer's from one input
    // ([D*L, B, H], each layer its slice), or none.
    let mut state_inputs = Vec::new();
    for (si, &(state, _, onnx_name)) in states.iter().enumerate() {
        let inputs: Vec<&str> = stored_initial[si]
            .iter()
            .filter_map(|v| match v {
                Initial::Input(n) => Some(*n),
                _ => None,
            })
            .collect();
        match inputs.first() {
            None => {}
            Some(&first) if inputs.len() == chain.len() && inputs.iter().all(|&n| n == first) => {
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
    // Stored initial states, as [D*L, B, H] (zeros for the layers without).
    let mut initial = Weights::new();
    for (si, &(state, _, _)) in states.iter().enumerate() {
        let layers = &stored_initial[si];
        let Some(batch) = layers.iter().find_map(|v| match v {
            Initial::Stored((s, _)) => Some(s[1]),
            _ => None,
        }) else {
            continue;
        };
        let mut data = Vec::with_capacity(chain.len() * directions * batch * hidden);
        for (layer, v) in layers.iter().enumerate() {
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
        let shape = [chain.len() * directions, batch, hidden];
        initial.insert(state, &shape, data)?;
    }
    // Graph outputs: the last layer's Y through glue that puts its directions
    // side by side, and the layers' final states (one layer's, or all of
    // them concatenated in layer order).
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
            && (concat_of(&mut cx, out, &states_of(1)) || concat_of(&mut cx, out, &states_of(2)))
        {
            continue;
        }
        glue_output(&mut cx, out, y, directions * hidden, &desc)?;
    }
    if let Some(i) = cx.accepted.iter().position(|a| !a) {
        let more = cx.accepted.iter().filter(|a| !**a).count() - 1;
        return err(format!(
            "{} is not part of what cellc imports ({} node{} and the glue exporters put \
             around and between them){}",
            cx.node(i),
            g.nodes[last].op_type,
            if chain.len() == 1 { "" } else { "s" },
            if more > 0 {
                format!(
                    "; {more} more such node{}",
                    if more == 1 { "" } else { "s" }
                )
            } else {
                String::new()
            }
        ));
    }
    Ok(Imported {
        cell_name,
        cell_source,
        weights,
        hidden_size: hidden,
        input_size,
        initial,
        layers: chain.len(),
        bidirectional: directions == 2,
        lengths_input: lengths_input.map(str::to_string),
        precision: quantized.then_some(crate::ir::Precision::Int8),
        input_name,
        state_inputs,
        batch_first: cx.batch_first,
        fixed_sizes: cx.fixed,
    })
}

/// A `DynamicQuantizeLSTM` matrix (`W` or `R`): int8 or uint8 values
/// `[D, K, 4H]` (transposed against `LSTM`'s), a scale per direction `[D]`
/// or per output row `[D, 4H]`, and a zero point of the same shape (zero if
/// absent); as `LSTM` stores it, `[D, 4H, K]`, each value `(q - zero_point)
/// * scale`.
fn dequantized(
    cx: &mut Ctx,
    values: &str,
    scale: &str,
    zero_point: &str,
    what: &str,
    desc: &str,
    directions: usize,
) -> Result<Option<Values>, WeightsError> {
    let name = format!("{what} of {desc}");
    let Some(k) = cx.stored(values, &name)? else {
        return Ok(None);
    };
    let (shape, q) = int8s(k, &name)?;
    let &[d, k, rows] = shape.as_slice() else {
        return err(format!(
            "{name} is {shape:?}; expected [{directions}, K, 4*hidden_size]"
        ));
    };
    let scale_name = format!("{what}_scale of {desc}");
    let Some((s_shape, s)) = cx.stored_floats(scale, &scale_name)? else {
        return err(format!("{desc} has no {what}_scale"));
    };
    let per_row = if s_shape == [d, rows] {
        true
    } else if s_shape == [d] || (d == 1 && s.len() == 1 && s_shape.len() <= 1) {
        false
    } else {
        return err(format!(
            "{scale_name} is {s_shape:?}; expected [{d}] or [{d}, {rows}]"
        ));
    };
    if let Some(bad) = s.iter().find(|v| !v.is_finite() || **v < 0.0) {
        return err(format!(
            "{scale_name} holds {bad}; a scale is finite and not negative"
        ));
    }
    let zp_name = format!("{what}_zero_point of {desc}");
    let zp = match cx.stored(zero_point, &zp_name)? {
        None => vec![0; s.len()],
        Some(zt) => {
            let (z_shape, z) = int8s(zt, &zp_name)?;
            if z.len() != s.len() {
                return err(format!(
                    "{zp_name} is {z_shape:?}; expected the shape of {what}_scale, {s_shape:?}"
                ));
            }
            z
        }
    };
    let mut out = vec![0.0f32; d * rows * k];
    for dd in 0..d {
        for j in 0..rows {
            let at = if per_row { dd * rows + j } else { dd };
            for i in 0..k {
                let v = q[(dd * k + i) * rows + j] - zp[at];
                out[(dd * rows + j) * k + i] = v as f32 * s[at];
            }
        }
    }
    Ok(Some((vec![d, rows, k], out)))
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

/// Whether node `e` is layer `layer`'s slice of a graph input of all the
/// layers' initial states (`Slice` of rows `layer*D .. (layer+1)*D` on axis
/// 0, as `torch.onnx.export` writes a stacked module's `h0`): the input's
/// name, the node and its constants accepted.
fn layer_slice<'a>(
    cx: &mut Ctx<'_, 'a>,
    e: usize,
    layer: usize,
    directions: usize,
) -> Option<&'a str> {
    let n = &cx.g.nodes[e];
    if n.op_type != "Slice" || !(3..=5).contains(&n.inputs.len()) {
        return None;
    }
    let data = n.inputs[0];
    if !matches!(cx.source(data), Source::GraphInput) {
        return None;
    }
    let inputs = n.inputs.clone();
    let starts = cx.int_constant(inputs[1], "the starts of a Slice").ok()?;
    let ends = cx.int_constant(inputs[2], "the ends of a Slice").ok()?;
    let axes = match inputs.get(3) {
        Some(a) if !a.is_empty() => cx.int_constant(a, "the axes of a Slice").ok()?,
        _ => vec![0],
    };
    let steps_one = match inputs.get(4) {
        Some(st) if !st.is_empty() => cx.int_constant(st, "the steps of a Slice").ok()? == [1],
        _ => true,
    };
    let (lo, hi) = (
        (layer * directions) as i64,
        ((layer + 1) * directions) as i64,
    );
    if starts == [lo] && ends == [hi] && axes == [0] && steps_one {
        cx.accepted[e] = true;
        Some(data)
    } else {
        None
    }
}

/// An 8-bit tensor's values (int8 or uint8) as `i32`: quantized weights and
/// their zero points.
fn int8s(k: Known, what: &str) -> Result<(Vec<usize>, Vec<i32>), WeightsError> {
    let data = match k.values {
        proto::Values::I8(v) => v.into_iter().map(i32::from).collect(),
        proto::Values::U8(v) => v.into_iter().map(i32::from).collect(),
        other => {
            return err(format!(
                "{what} has ONNX element type {}; int8 or uint8 was expected",
                other.type_name()
            ))
        }
    };
    Ok((k.shape, data))
}

/// What one recurrent node computes.
#[derive(Clone, Copy)]
struct Config {
    lstm: bool,
    /// GRU's `linear_before_reset`.
    lbr: bool,
    hidden: usize,
    /// 1 (forward or reverse) or 2 (bidirectional).
    directions: usize,
    /// One direction, backwards.
    reverse: bool,
    /// ONNX Runtime's `DynamicQuantizeLSTM`: int8 weights with scales.
    quantized: bool,
}

/// Checks a recurrent node's op and attributes (each of its ONNX type,
/// nothing unknown, nothing cellc does not compute).
fn node_config(n: &Node, index: &usize) -> Result<Config, WeightsError> {
    let desc = n.describe(*index);
    if n.op_type == "RNN" {
        return err(format!(
            "{desc}: cellc imports LSTM and GRU nodes; for a plain RNN, run \
             `examples/rnn_tanh.rnn` with the weights"
        ));
    }
    let quantized = n.op_type == "DynamicQuantizeLSTM";
    let lstm = n.op_type == "LSTM" || quantized;
    let known: &[&str] = if lstm {
        &[
            "hidden_size",
            "direction",
            "activations",
            "activation_alpha",
            "activation_beta",
            "clip",
            "input_forget",
            "layout",
        ]
    } else {
        &[
            "hidden_size",
            "direction",
            "activations",
            "activation_alpha",
            "activation_beta",
            "clip",
            "linear_before_reset",
            "layout",
        ]
    };
    for a in &n.attributes {
        if !known.contains(&a.name) {
            return err(format!(
                "{desc} has attribute `{}`, which cellc does not know",
                short(a.name)
            ));
        }
    }
    let hidden = match attribute(n, &desc, "hidden_size", AttrType::Int)? {
        Some(a) => match a.int {
            Some(h) if (1..=MAX_HIDDEN).contains(&h) => h as usize,
            Some(h) => {
                return err(format!(
                    "{desc} has hidden_size {h}; it must be between 1 and {MAX_HIDDEN}"
                ))
            }
            None => unreachable_attr()?,
        },
        None => return err(format!("{desc} has no hidden_size")),
    };
    let mut directions = 1;
    let mut reverse = false;
    if let Some(a) = attribute(n, &desc, "direction", AttrType::String)? {
        let d = String::from_utf8_lossy(a.string.unwrap_or_default());
        match d.as_ref() {
            "forward" => {}
            "reverse" => reverse = true,
            "bidirectional" => directions = 2,
            _ => {
                return err(format!(
                    "{desc} runs direction `{}`; ONNX's directions are forward, reverse and \
                     bidirectional",
                    short(&d)
                ))
            }
        }
    }
    let activations: usize = if lstm { 3 } else { 2 };
    if let Some(a) = attribute(n, &desc, "activations", AttrType::Strings)? {
        let default: &[&str] = if lstm {
            &["Sigmoid", "Tanh", "Tanh"]
        } else {
            &["Sigmoid", "Tanh"]
        };
        let given: Vec<String> = a
            .strings
            .iter()
            .map(|s| short(&String::from_utf8_lossy(s)))
            .collect();
        // One list per direction.
        let expected = default
            .iter()
            .copied()
            .cycle()
            .take(activations * directions);
        if given.iter().map(String::as_str).ne(expected) {
            return err(format!(
                "{desc} uses activations {given:?}; cellc imports the default ones {default:?}"
            ));
        }
    }
    for name in ["activation_alpha", "activation_beta"] {
        if attribute(n, &desc, name, AttrType::Floats)?.is_some() {
            return err(format!(
                "{desc} sets `{name}`, which only parameterised activations read; cellc \
                 imports the default activations"
            ));
        }
    }
    if let Some(a) = attribute(n, &desc, "clip", AttrType::Float)? {
        return err(format!(
            "{desc} clips its cell at {}; cellc does not import `clip`",
            a.float.unwrap_or_default()
        ));
    }
    if let Some(a) = attribute(n, &desc, "input_forget", AttrType::Int)? {
        if a.int != Some(0) {
            return err(format!(
                "{desc} couples its input and forget gates (input_forget = {}); see \
                 examples/cifg.rnn for such a cell",
                a.int.unwrap_or_default()
            ));
        }
    }
    if let Some(a) = attribute(n, &desc, "layout", AttrType::Int)? {
        if a.int != Some(0) {
            return err(format!(
                "{desc} uses layout = {} (batch-major); cellc imports layout = 0 (time-major)",
                a.int.unwrap_or_default()
            ));
        }
    }
    let lbr = match attribute(n, &desc, "linear_before_reset", AttrType::Int)? {
        None => false,
        Some(a) => match a.int {
            Some(0) => false,
            Some(1) => true,
            v => {
                return err(format!(
                    "{desc} has linear_before_reset = {}; ONNX allows 0 or 1",
                    v.unwrap_or_default()
                ))
            }
        },
    };
    Ok(Config {
        lstm,
        lbr,
        hidden,
        directions,
        reverse,
        quantized,
    })
}

/// The recurrent nodes in layer order: the first reads a graph input, each
/// next one the output of the one before through glue that puts its
/// directions side by side (`width` = directions x hidden). Accepts the glue.
fn order_chain(cx: &mut Ctx, rnn: &[usize], width: usize) -> Result<Vec<usize>, WeightsError> {
    let g = cx.g;
    let x_of = |r: usize| g.nodes[r].inputs.first().copied().unwrap_or("");
    let mut firsts = Vec::new();
    for &r in rnn {
        match cx.source(x_of(r)) {
            Source::GraphInput => firsts.push(r),
            // A batch-first model: `[B, T, X]` transposed to `[T, B, X]`.
            Source::Node(i) if transposes_a_graph_input(cx, i) => {
                cx.accepted[i] = true;
                cx.batch_first = true;
                firsts.push(r);
            }
            Source::Node(_) => {}
            Source::Initializer(_) | Source::Constant(..) => {
                return err(format!(
                    "the sequence input of {} is a constant; cellc imports recurrent nodes \
                     whose input `X` is a graph input",
                    cx.node(r)
                ))
            }
            Source::Missing => return err(format!("{} has no sequence input `X`", cx.node(r))),
        }
    }
    let [first] = firsts[..] else {
        if firsts.is_empty() {
            // No layer reads a graph input: say what the first one reads.
            let r = rnn[0];
            if let Source::Node(i) = cx.source(x_of(r)) {
                return err(format!(
                    "the sequence input of {} is computed by {}; cellc imports recurrent \
                     nodes whose input `X` is a graph input or the layer below's output",
                    cx.node(r),
                    cx.node(i)
                ));
            }
        }
        return err(format!(
            "{} recurrent nodes read graph inputs; cellc imports one stack of layers",
            firsts.len()
        ));
    };
    let mut chain = vec![first];
    while chain.len() < rnn.len() {
        let y = g.nodes[chain[chain.len() - 1]]
            .outputs
            .first()
            .copied()
            .unwrap_or("");
        let next = rnn
            .iter()
            .copied()
            .find(|&r| !chain.contains(&r) && matches!(cx.source(x_of(r)), Source::Node(_)));
        let Some(next) = next.filter(|&r| glue_between(cx, y, x_of(r), width)) else {
            let r = rnn
                .iter()
                .copied()
                .find(|r| !chain.contains(r))
                .unwrap_or(first);
            return err(format!(
                "the sequence input of {} is not the output of {} with its directions side \
                 by side (a Transpose [0, 2, 1, 3] and a Reshape to [T, B, {width}], or a \
                 Squeeze of axis 1); cellc imports a stack of layers",
                cx.node(r),
                cx.node(chain[chain.len() - 1])
            ));
        };
        chain.push(next);
    }
    Ok(chain)
}

/// Whether node `i` is a `Transpose` [1, 0, 2] of a graph input (a
/// batch-first model's `[B, T, X]` made `[T, B, X]`).
fn transposes_a_graph_input(cx: &Ctx, i: usize) -> bool {
    let n = &cx.g.nodes[i];
    n.op_type == "Transpose"
        && n.inputs.len() == 1
        && matches!(cx.source(n.inputs[0]), Source::GraphInput)
        && n.attributes
            .iter()
            .any(|a| a.name == "perm" && a.ints == [1, 0, 2])
}

/// Checks a glue `Reshape`'s target `[T', B', w]` against the layout
/// `[T, B, w]` it must keep: `0` copies an axis; a literal fixes it (the
/// default exporter writes the sizes it was exported at), which a run must
/// then have. A literal that disagrees with another `Reshape`'s is an error.
fn fix_sizes(cx: &mut Ctx, shape: &[i64], desc: &str) -> Result<(), WeightsError> {
    for (axis, &d) in shape.iter().take(2).enumerate() {
        if d <= 0 {
            continue;
        }
        let slot = if axis == 0 {
            &mut cx.fixed.0
        } else {
            &mut cx.fixed.1
        };
        match *slot {
            Some(v) if v != d as usize => {
                return err(format!(
                    "{desc} reshapes to {shape:?}, but another Reshape fixes {} = {v}; the \
                     layers would read their inputs in another order",
                    if axis == 0 { "T" } else { "B" }
                ))
            }
            _ => *slot = Some(d as usize),
        }
    }
    Ok(())
}

/// Whether `x` is `y` ([T, D, B, H]) with its directions side by side
/// ([T, B, D*H] = `width`): a Transpose [0, 2, 1, 3] then a Reshape to
/// three axes ending in `width` (or -1), or (one direction) a Squeeze of axis
/// 1. Accepts those nodes.
fn glue_between(cx: &mut Ctx, y: &str, x: &str, width: usize) -> bool {
    let Some(&last) = cx.producer.get(x) else {
        return false;
    };
    let ln = &cx.g.nodes[last];
    match ln.op_type {
        "Reshape" if ln.inputs.len() == 2 => {
            let Some(&t) = cx.producer.get(ln.inputs[0]) else {
                return false;
            };
            let tn = &cx.g.nodes[t];
            if !(tn.op_type == "Transpose" && tn.inputs.first() == Some(&y) && drops_direction(tn))
                || ln
                    .attributes
                    .iter()
                    .any(|a| a.name == "allowzero" && a.int != Some(0))
            {
                return false;
            }
            let Ok(shape) = cx.int_constant(ln.inputs[1], "the shape of a Reshape") else {
                return false;
            };
            let ok = shape.len() == 3
                && (shape[2] == width as i64 || shape[2] == -1)
                && shape[..2].iter().all(|&d| d >= 0)
                && fix_sizes(cx, &shape, &cx.node(last)).is_ok();
            if ok {
                cx.accepted[last] = true;
                cx.accepted[t] = true;
            }
            ok
        }
        "Squeeze" if ln.inputs.first() == Some(&y) => {
            let axes = match (
                ln.inputs.get(1),
                ln.attributes.iter().find(|a| a.name == "axes"),
            ) {
                (Some(name), None) if ln.inputs.len() == 2 => cx
                    .int_constant(name, "the axes of a Squeeze")
                    .unwrap_or_default(),
                (None, Some(a)) => a.ints.clone(),
                _ => return false,
            };
            // Only one direction can be squeezed away.
            let d = cx.g.nodes.iter().find(|n| n.outputs.first() == Some(&y));
            let one = d.is_some_and(|n| {
                n.attributes.iter().all(|a| {
                    a.name != "direction" || a.string.unwrap_or_default() != b"bidirectional"
                })
            });
            if axes == [1] && one {
                cx.accepted[last] = true;
                true
            } else {
                false
            }
        }
        _ => false,
    }
}

/// Whether graph output `out` is a Concat along axis 0 of exactly `parts`
/// (the layers' final states, in layer order). Accepts it.
fn concat_of(cx: &mut Ctx, out: &str, parts: &[&str]) -> bool {
    let Some(&c) = cx.producer.get(out) else {
        return false;
    };
    let n = &cx.g.nodes[c];
    let axis0 = n
        .attributes
        .iter()
        .any(|a| a.name == "axis" && a.int == Some(0));
    if n.op_type == "Concat" && axis0 && n.inputs == parts && parts.iter().all(|p| !p.is_empty()) {
        cx.accepted[c] = true;
        return true;
    }
    false
}

fn unreachable_attr<T>() -> Result<T, WeightsError> {
    err("internal error: an attribute checked to hold a value holds none")
}

/// Whether node `e` is an `Expand` of stored zeros (whatever the shape it
/// expands to, the result is zeros); accepts it and the shape computation
/// feeding it.
fn zero_expand(cx: &mut Ctx, e: usize) -> Result<bool, WeightsError> {
    let n = &cx.g.nodes[e];
    if n.op_type != "Expand" || n.inputs.len() != 2 {
        return Ok(false);
    }
    let zeros = match cx.source(n.inputs[0]) {
        Source::Initializer(_) | Source::Constant(..) => cx
            .stored_floats(n.inputs[0], "the value an initial state expands")
            .is_ok_and(|v| v.is_some_and(|(_, v)| v.iter().all(|&x| x == 0.0))),
        _ => false,
    };
    if !zeros {
        return Ok(false);
    }
    if let Source::Constant(c, _) = cx.source(n.inputs[0]) {
        cx.accepted[c] = true;
    }
    cx.accepted[e] = true;
    // The shape: any computation over shapes and constants.
    let mut stack = vec![n.inputs[1]];
    while let Some(name) = stack.pop() {
        let Some(&p) = cx.producer.get(name) else {
            continue;
        };
        if cx.accepted[p] {
            continue;
        }
        let pn = &cx.g.nodes[p];
        match pn.op_type {
            "Shape" => cx.accepted[p] = true,
            "Constant" | "Gather" | "Unsqueeze" | "Squeeze" | "Concat" | "Cast" | "Slice" => {
                cx.accepted[p] = true;
                stack.extend(pn.inputs.iter().copied());
            }
            _ => return Ok(false),
        }
    }
    Ok(true)
}

/// Accepts the nodes between the recurrent node's `Y` and graph output `out`
/// when they only drop the direction axis, or says what is there instead.
fn glue_output(
    cx: &mut Ctx,
    out: &str,
    y: &str,
    hidden: usize,
    desc: &str,
) -> Result<(), WeightsError> {
    let back_to_batch_first = |cx: &Ctx, i: usize| {
        let n = &cx.g.nodes[i];
        n.op_type == "Transpose"
            && n.inputs.len() == 1
            && n.attributes
                .iter()
                .any(|a| a.name == "perm" && a.ints == [1, 0, 2])
    };
    if cx.batch_first {
        // `[T, B, D*H]` back to `[B, T, D*H]`, as the input came.
        return match cx.producer.get(out) {
            Some(&t) if back_to_batch_first(cx, t) => {
                cx.accepted[t] = true;
                let inner = cx.g.nodes[t].inputs[0];
                glue_output_time_major(cx, out, inner, y, hidden, desc)
            }
            _ => err(format!(
                "graph output `{}` is not {desc}'s Y transposed back to [B, T, ...]: the \
                 model reads its sequence batch-first and would write Y time-major; cellc \
                 runs a model in one layout",
                short(out)
            )),
        };
    }
    glue_output_time_major(cx, out, out, y, hidden, desc)
}

/// [`glue_output`] of a time-major graph output `out`: its value `inner`
/// (the output itself, or what a batch-first model transposes into it).
fn glue_output_time_major(
    cx: &mut Ctx,
    out: &str,
    inner: &str,
    y: &str,
    hidden: usize,
    desc: &str,
) -> Result<(), WeightsError> {
    let refuse = |cx: &Ctx, i: usize| -> Result<(), WeightsError> {
        let n = &cx.g.nodes[i];
        let perm = n.attributes.iter().find(|a| a.name == "perm");
        if n.op_type == "Transpose" && perm.is_some_and(|a| a.ints == [1, 0, 2]) {
            return err(format!(
                "{} makes graph output `{}` batch-first, but the model reads its sequence \
                 time-major ([T, B, X]); cellc runs a model in one layout",
                cx.node(i),
                short(out)
            ));
        }
        err(format!(
            "graph output `{}` is computed by {} from the output of {desc}; cellc runs the \
             recurrent node alone, not the layers around it",
            short(out),
            cx.node(i)
        ))
    };
    let Some(&last) = cx.producer.get(inner) else {
        return err(format!(
            "graph output `{}` is not an output of {desc}",
            short(out)
        ));
    };
    let ln = &cx.g.nodes[last];
    let only = |n: &Node, k: usize| n.inputs.len() == k;
    match ln.op_type {
        "Squeeze" if ln.inputs.first() == Some(&y) => {
            let axes = match (
                ln.inputs.get(1),
                ln.attributes.iter().find(|a| a.name == "axes"),
            ) {
                (Some(name), None) if only(ln, 2) => {
                    cx.int_constant(name, "the axes of a Squeeze")?
                }
                (None, Some(a)) => a.ints.clone(),
                _ => return refuse(cx, last),
            };
            if axes != [1] {
                return refuse(cx, last);
            }
            cx.accepted[last] = true;
            Ok(())
        }
        "Transpose" if ln.inputs.first() == Some(&y) && drops_direction(ln) => {
            cx.accepted[last] = true;
            Ok(())
        }
        "Reshape" if only(ln, 2) => {
            let Some(&t) = cx.producer.get(ln.inputs[0]) else {
                return refuse(cx, last);
            };
            let tn = &cx.g.nodes[t];
            if !(tn.op_type == "Transpose" && tn.inputs.first() == Some(&y) && drops_direction(tn))
            {
                return refuse(cx, last);
            }
            if ln
                .attributes
                .iter()
                .any(|a| a.name == "allowzero" && a.int != Some(0))
            {
                return refuse(cx, last);
            }
            let shape = cx.int_constant(ln.inputs[1], "the shape of a Reshape")?;
            // [T, B, 1, H] -> three axes ending in H: the values keep their order.
            let ok = shape.len() == 3
                && (shape[2] == hidden as i64 || shape[2] == -1)
                && shape[..2].iter().all(|&d| d >= 0);
            if !ok {
                return refuse(cx, last);
            }
            fix_sizes(cx, &shape, &cx.node(last))?;
            cx.accepted[last] = true;
            cx.accepted[t] = true;
            Ok(())
        }
        _ => refuse(cx, last),
    }
}

/// A `Transpose` with perm [0, 2, 1, 3]: `[T, 1, B, H]` to `[T, B, 1, H]`.
fn drops_direction(n: &Node) -> bool {
    n.inputs.len() == 1
        && n.attributes
            .iter()
            .any(|a| a.name == "perm" && a.ints == [0, 2, 1, 3])
}
