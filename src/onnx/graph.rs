//! The graph as the importer reads it: what a value's name is (an
//! initializer, a `Constant`, a graph input, a node's output), and the values
//! it knows: stored in the model or in external data beside it, or folded
//! from stored ones ([`super::fold`]), within bounds.

use std::collections::HashMap;
use std::path::Path;

use super::fold::{self, Known};
use super::proto::{self, err, short, Graph, Tensor};
use crate::weights::WeightsError;

/// A tensor's shape and values.
pub(super) type Values = (Vec<usize>, Vec<f32>);

/// What a tensor name is in the graph.
pub(super) enum Source<'g, 'a> {
    Initializer(&'g Tensor<'a>),
    /// The `value` of a `Constant` node (index).
    Constant(usize, &'g Tensor<'a>),
    GraphInput,
    /// An output of another node (index).
    Node(usize),
    Missing,
}

pub(super) struct Ctx<'g, 'a> {
    pub(super) g: &'g Graph<'a>,
    pub(super) producer: HashMap<&'a str, usize>,
    pub(super) initializer: HashMap<&'a str, &'g Tensor<'a>>,
    /// Nodes whose role is understood.
    pub(super) accepted: Vec<bool>,
    /// The model's folder, where its external data lives (`None`: a model
    /// given as bytes, whose external data cannot be found).
    pub(super) dir: Option<&'g Path>,
    /// Values folding may still produce (see [`Ctx::stored`]).
    pub(super) fold_budget: usize,
    /// How deep the folding of one value has gone.
    pub(super) fold_depth: usize,
    /// The graph input of the sequence goes through a `Transpose` [1, 0, 2]
    /// before the first layer (and `Y` through one after the last).
    pub(super) batch_first: bool,
    /// `(T, B)` as the glue's `Reshape`s fix them, if they do.
    pub(super) fixed: (Option<usize>, Option<usize>),
}

/// Most nested constant operations one value may be folded through.
pub(super) const MAX_FOLD_DEPTH: usize = 64;

/// Values folding may produce besides eight for each value it reads.
pub(super) const FOLD_ALLOWANCE: usize = 1 << 20;

impl<'g, 'a> Ctx<'g, 'a> {
    /// The context of graph `g` (a model read from folder `dir`, if known):
    /// each value's producer and each initializer, once (a name produced or
    /// defined twice makes no valid model), every node in a domain cellc
    /// reads, no sparse initializers.
    pub(super) fn new(
        g: &'g Graph<'a>,
        dir: Option<&'g Path>,
    ) -> Result<Ctx<'g, 'a>, WeightsError> {
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
        Ok(Ctx {
            g,
            producer,
            initializer,
            accepted: vec![false; g.nodes.len()],
            dir,
            fold_budget: FOLD_ALLOWANCE,
            fold_depth: 0,
            batch_first: false,
            fixed: (None, None),
        })
    }

    pub(super) fn source(&self, name: &str) -> Source<'g, 'a> {
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

    pub(super) fn node(&self, i: usize) -> String {
        self.g.nodes[i].describe(i)
    }

    /// The value of tensor `name`: stored in the model (an initializer, a
    /// `Constant` node, bytes in a file beside the model), or computed from
    /// such values by ops [`fold`] knows (as the default exporter leaves
    /// them), accepting the nodes. `None` for an absent optional input.
    /// Folding is bounded: at most [`MAX_FOLD_DEPTH`] ops deep, and no more
    /// values than eight for each stored value read, plus a
    /// [`FOLD_ALLOWANCE`].
    pub(super) fn stored(&mut self, name: &str, what: &str) -> Result<Option<Known>, WeightsError> {
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
    pub(super) fn decode(&mut self, t: &Tensor<'_>, what: &str) -> Result<Known, WeightsError> {
        let dir = self.dir;
        let (shape, values) = t.values(what, &|e, bytes| read_external(dir, e, bytes, what))?;
        self.fold_budget = self
            .fold_budget
            .saturating_add(values.len().saturating_mul(8));
        Ok(Known { shape, values })
    }

    /// An integer constant (a `Constant` node or an initializer), accepting the
    /// node that holds it.
    pub(super) fn int_constant(
        &mut self,
        name: &str,
        what: &str,
    ) -> Result<Vec<i64>, WeightsError> {
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
    pub(super) fn stored_floats(
        &mut self,
        name: &str,
        what: &str,
    ) -> Result<Option<Values>, WeightsError> {
        self.stored(name, what)?
            .map(|k| floats(k, what))
            .transpose()
    }
}

/// A known tensor as float32 (float, double and float16 convert; other
/// element types are refused, named).
pub(super) fn floats(k: Known, what: &str) -> Result<Values, WeightsError> {
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

/// An 8-bit tensor's values (int8 or uint8) as `i32`: quantized weights and
/// their zero points.
pub(super) fn int8s(k: Known, what: &str) -> Result<(Vec<usize>, Vec<i32>), WeightsError> {
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

/// Reads `bytes` bytes of external data `e` from the model's folder `dir`.
/// The file must be a regular file inside that folder (a relative path of
/// plain names, no `..`, and no link out of it), and hold the bytes at the
/// offset given; only they are read.
pub(super) fn read_external(
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
