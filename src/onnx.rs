//! Importing an ONNX model's `LSTM` or `GRU` node: the cell that computes it (one
//! of the examples, in ONNX's gate order) and its weights under the names that
//! cell binds.
//!
//! An ONNX file is a protobuf message; cellc reads the few fields it needs with a
//! small wire-format reader (no protobuf compiler, no generated code): the graph's
//! nodes (`op_type`, `input`, `attribute`) and initializers (`name`, `dims`,
//! `data_type`, `float_data` or `raw_data`). What is supported:
//!
//! - one `LSTM` node (gate order i, o, f, c; optional `B`; optional peepholes `P`)
//!   or one `GRU` node (gate order z, r, h; `linear_before_reset` 0 or 1);
//! - `direction = forward`, default activations, no `clip`, `input_forget = 0`,
//!   `layout = 0`; float32 (or float64/float16, converted) initializers.
//!
//! Everything else is refused with a message that says what and why.

use crate::weights::{Weights, WeightsError};

/// The source of the cells an import may produce.
pub const ONNX_LSTM: &str = include_str!("../examples/onnx_lstm.rnn");
pub const ONNX_GRU: &str = include_str!("../examples/onnx_gru.rnn");
pub const GRU_RESET_BEFORE: &str = include_str!("../examples/gru_reset_before.rnn");

/// A model, imported.
#[derive(Clone, Debug)]
pub struct Imported {
    /// `onnx_lstm.rnn`, `onnx_gru.rnn` or `gru_reset_before.rnn`.
    pub cell_name: &'static str,
    pub cell_source: &'static str,
    /// `W`, `R`, `B` (and `P` for an LSTM), missing ones filled with zeros.
    pub weights: Weights,
    pub hidden_size: usize,
    pub input_size: usize,
    /// Initial states the model stores as initializers (`initial_h`, `initial_c`),
    /// as `[B, H]` under the cell's state names.
    pub initial: Weights,
}

fn err<T>(m: impl Into<String>) -> Result<T, WeightsError> {
    Err(WeightsError(m.into()))
}

/// A cursor over protobuf wire format.
struct Reader<'a> {
    buf: &'a [u8],
}

enum Field<'a> {
    Varint(u64),
    Fixed64(u64),
    Bytes(&'a [u8]),
    Fixed32(u32),
}

impl<'a> Reader<'a> {
    fn varint(&mut self) -> Result<u64, WeightsError> {
        let mut v: u64 = 0;
        for i in 0..10 {
            let Some((&b, rest)) = self.buf.split_first() else {
                return err("not an ONNX model: a number runs past the end of the file");
            };
            self.buf = rest;
            v |= ((b & 0x7f) as u64) << (7 * i);
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        err("not an ONNX model: a number is longer than 10 bytes")
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], WeightsError> {
        if n > self.buf.len() {
            return err("not an ONNX model: a field runs past the end of the file");
        }
        let (a, b) = self.buf.split_at(n);
        self.buf = b;
        Ok(a)
    }

    fn next(&mut self) -> Result<Option<(u64, Field<'a>)>, WeightsError> {
        if self.buf.is_empty() {
            return Ok(None);
        }
        let key = self.varint()?;
        let (number, wire) = (key >> 3, key & 7);
        let field = match wire {
            0 => Field::Varint(self.varint()?),
            1 => {
                let b = self.take(8)?;
                Field::Fixed64(u64::from_le_bytes(b.try_into().unwrap_or([0; 8])))
            }
            2 => {
                let n = self.varint()?;
                let n = usize::try_from(n)
                    .map_err(|_| WeightsError("not an ONNX model: a field is too long".into()))?;
                Field::Bytes(self.take(n)?)
            }
            5 => {
                let b = self.take(4)?;
                Field::Fixed32(u32::from_le_bytes(b.try_into().unwrap_or([0; 4])))
            }
            _ => return err(format!("not an ONNX model: unknown wire type {wire}")),
        };
        Ok(Some((number, field)))
    }
}

fn fields(buf: &[u8]) -> Result<Vec<(u64, Field<'_>)>, WeightsError> {
    let mut r = Reader { buf };
    let mut out = Vec::new();
    while let Some(f) = r.next()? {
        out.push(f);
    }
    Ok(out)
}

fn string(f: &Field<'_>) -> String {
    match f {
        Field::Bytes(b) => String::from_utf8_lossy(b).into_owned(),
        _ => String::new(),
    }
}

/// Repeated int64s, packed or not.
fn ints(f: &Field<'_>, out: &mut Vec<i64>) -> Result<(), WeightsError> {
    match f {
        Field::Varint(v) => out.push(*v as i64),
        Field::Bytes(b) => {
            let mut r = Reader { buf: b };
            while !r.buf.is_empty() {
                out.push(r.varint()? as i64);
            }
        }
        _ => return err("not an ONNX model: a list of integers has the wrong encoding"),
    }
    Ok(())
}

#[derive(Default)]
struct Node {
    op_type: String,
    inputs: Vec<String>,
    attributes: Vec<(String, Attr)>,
}

#[derive(Clone, Debug)]
enum Attr {
    Int(i64),
    Float(f32),
    Str(String),
    Strings(Vec<String>),
    Other,
}

struct Tensor {
    name: String,
    dims: Vec<i64>,
    data_type: i64,
    floats: Vec<f32>,
    raw: Vec<u8>,
    doubles: Vec<f64>,
    external: bool,
}

fn node(buf: &[u8]) -> Result<Node, WeightsError> {
    let mut n = Node::default();
    for (num, f) in fields(buf)? {
        match num {
            1 => n.inputs.push(string(&f)),
            4 => n.op_type = string(&f),
            5 => {
                if let Field::Bytes(b) = f {
                    n.attributes.push(attribute(b)?);
                }
            }
            _ => {}
        }
    }
    Ok(n)
}

fn attribute(buf: &[u8]) -> Result<(String, Attr), WeightsError> {
    let mut name = String::new();
    let mut value = Attr::Other;
    let mut strings = Vec::new();
    for (num, f) in fields(buf)? {
        match (num, &f) {
            (1, _) => name = string(&f),
            (2, Field::Fixed32(v)) => value = Attr::Float(f32::from_bits(*v)),
            (3, Field::Varint(v)) => value = Attr::Int(*v as i64),
            (4, Field::Bytes(_)) => value = Attr::Str(string(&f)),
            (9, Field::Bytes(_)) => strings.push(string(&f)),
            _ => {}
        }
    }
    if !strings.is_empty() {
        value = Attr::Strings(strings);
    }
    Ok((name, value))
}

fn tensor(buf: &[u8]) -> Result<Tensor, WeightsError> {
    let mut t = Tensor {
        name: String::new(),
        dims: Vec::new(),
        data_type: 0,
        floats: Vec::new(),
        raw: Vec::new(),
        doubles: Vec::new(),
        external: false,
    };
    for (num, f) in fields(buf)? {
        match (num, &f) {
            (1, _) => ints(&f, &mut t.dims)?,
            (2, Field::Varint(v)) => t.data_type = *v as i64,
            (4, Field::Fixed32(v)) => t.floats.push(f32::from_bits(*v)),
            (4, Field::Bytes(b)) => t.floats.extend(
                b.chunks_exact(4)
                    .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])),
            ),
            (8, _) => t.name = string(&f),
            (9, Field::Bytes(b)) => t.raw = b.to_vec(),
            (10, Field::Fixed64(v)) => t.doubles.push(f64::from_bits(*v)),
            (10, Field::Bytes(b)) => t.doubles.extend(
                b.chunks_exact(8)
                    .map(|c| f64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]])),
            ),
            (13, _) => t.external = true,
            (14, Field::Varint(1)) => t.external = true,
            _ => {}
        }
    }
    Ok(t)
}

/// An initializer's shape and values.
type Values = (Vec<usize>, Vec<f32>);

/// The values of an initializer as f32, with its shape.
fn values(t: &Tensor) -> Result<Values, WeightsError> {
    if t.external {
        return err(format!(
            "initializer `{}` is stored outside the model file; cellc reads single-file models",
            t.name
        ));
    }
    let shape: Vec<usize> = t
        .dims
        .iter()
        .map(|&d| {
            usize::try_from(d).map_err(|_| {
                WeightsError(format!("initializer `{}` has a negative dimension", t.name))
            })
        })
        .collect::<Result<_, _>>()?;
    let n = shape
        .iter()
        .try_fold(1usize, |a, &d| a.checked_mul(d))
        .ok_or_else(|| WeightsError(format!("initializer `{}` is too large", t.name)))?;
    let data: Vec<f32> = match t.data_type {
        1 if !t.raw.is_empty() => t
            .raw
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect(),
        1 => t.floats.clone(),
        11 if !t.raw.is_empty() => t
            .raw
            .chunks_exact(8)
            .map(|c| f64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]) as f32)
            .collect(),
        11 => t.doubles.iter().map(|&v| v as f32).collect(),
        10 => t
            .raw
            .chunks_exact(2)
            .map(|c| half::f16::from_le_bytes([c[0], c[1]]).to_f32())
            .collect(),
        other => {
            return err(format!(
            "initializer `{}` has ONNX element type {other}; cellc reads float, double and float16",
            t.name
        ))
        }
    };
    if data.len() != n {
        return err(format!(
            "initializer `{}` has {} values for its shape {:?}",
            t.name,
            data.len(),
            shape
        ));
    }
    Ok((shape, data))
}

/// Reads an ONNX model and imports its single LSTM or GRU node.
pub fn import(bytes: &[u8]) -> Result<Imported, WeightsError> {
    let mut graph: Option<&[u8]> = None;
    for (num, f) in fields(bytes)? {
        if let (7, Field::Bytes(b)) = (num, f) {
            graph = Some(b);
        }
    }
    let Some(graph) = graph else {
        return err("not an ONNX model: it has no graph");
    };
    let mut nodes = Vec::new();
    let mut inits = Vec::new();
    for (num, f) in fields(graph)? {
        match (num, f) {
            (1, Field::Bytes(b)) => nodes.push(node(b)?),
            (5, Field::Bytes(b)) => inits.push(tensor(b)?),
            _ => {}
        }
    }
    let rnn: Vec<&Node> = nodes
        .iter()
        .filter(|n| n.op_type == "LSTM" || n.op_type == "GRU")
        .collect();
    let n = match rnn.as_slice() {
        [n] => *n,
        [] => {
            let ops: Vec<&str> = nodes.iter().map(|n| n.op_type.as_str()).collect();
            return err(format!(
                "the model has no LSTM or GRU node (its nodes: {})",
                ops.join(", ")
            ));
        }
        many => {
            return err(format!(
            "the model has {} LSTM/GRU nodes; cellc imports one (stacked models are a later step)",
            many.len()
        ))
        }
    };
    let attr = |name: &str| {
        n.attributes
            .iter()
            .find(|(a, _)| a == name)
            .map(|(_, v)| v.clone())
    };
    let hidden = match attr("hidden_size") {
        Some(Attr::Int(h)) if h > 0 => h as usize,
        _ => return err(format!("the {} node has no hidden_size", n.op_type)),
    };
    if let Some(Attr::Str(d)) = attr("direction") {
        if d != "forward" {
            return err(format!("the {} node runs direction `{d}`; cellc imports forward nodes (bidirectional models are a later step)", n.op_type));
        }
    }
    if let Some(a) = attr("activations") {
        let default: &[&str] = if n.op_type == "LSTM" {
            &["Sigmoid", "Tanh", "Tanh"]
        } else {
            &["Sigmoid", "Tanh"]
        };
        let given = match a {
            Attr::Strings(s) => s,
            _ => Vec::new(),
        };
        if given.iter().map(String::as_str).ne(default.iter().copied()) {
            return err(format!("the {} node uses activations {given:?}; cellc imports the default ones {default:?}", n.op_type));
        }
    }
    if let Some(Attr::Float(c)) = attr("clip") {
        return err(format!(
            "the {} node clips its cell at {c}; cellc does not import `clip`",
            n.op_type
        ));
    }
    if let Some(Attr::Int(v)) = attr("input_forget") {
        if v != 0 {
            return err("the LSTM node couples its input and forget gates (input_forget = 1); see examples/cifg.rnn for such a cell");
        }
    }
    if let Some(Attr::Int(v)) = attr("layout") {
        if v != 0 {
            return err("the node uses layout = 1 (batch-major); cellc imports layout = 0");
        }
    }
    let lbr = matches!(attr("linear_before_reset"), Some(Attr::Int(v)) if v != 0);
    let init = |i: usize| -> Result<Option<Values>, WeightsError> {
        let Some(name) = n.inputs.get(i).filter(|s| !s.is_empty()) else {
            return Ok(None);
        };
        match inits.iter().find(|t| &t.name == name) {
            Some(t) => values(t).map(Some),
            None => err(format!("input {i} (`{name}`) of the {} node is not an initializer; cellc needs the weights in the model", n.op_type)),
        }
    };
    let (gates, cell_name, cell_source) = match (n.op_type.as_str(), lbr) {
        ("LSTM", _) => (4, "onnx_lstm.rnn", ONNX_LSTM),
        (_, true) => (3, "onnx_gru.rnn", ONNX_GRU),
        (_, false) => (3, "gru_reset_before.rnn", GRU_RESET_BEFORE),
    };
    let Some((w_shape, w)) = init(1)? else {
        return err("the node has no W");
    };
    let Some((r_shape, r)) = init(2)? else {
        return err("the node has no R");
    };
    if w_shape.len() != 3 || w_shape[0] != 1 || w_shape[1] != gates * hidden {
        return err(format!(
            "W is {w_shape:?}; expected [1, {}, input_size]",
            gates * hidden
        ));
    }
    if r_shape != [1, gates * hidden, hidden] {
        return err(format!(
            "R is {r_shape:?}; expected [1, {}, {hidden}]",
            gates * hidden
        ));
    }
    if n.inputs.get(4).is_some_and(|s| !s.is_empty()) {
        return err("the node takes sequence_lens; cellc runs whole sequences");
    }
    let input_size = w_shape[2];
    let mut weights = Weights::new();
    weights.insert("W", &w_shape, w)?;
    weights.insert("R", &r_shape, r)?;
    match init(3)? {
        Some((s, b)) => weights.insert("B", &s, b)?,
        None => weights.insert("B", &[1, 2 * gates * hidden], vec![0.0; 2 * gates * hidden])?,
    }
    if n.op_type == "LSTM" {
        match init(7)? {
            Some((s, p)) => weights.insert("P", &s, p)?,
            None => weights.insert("P", &[1, 3 * hidden], vec![0.0; 3 * hidden])?,
        }
    }
    let mut initial = Weights::new();
    for (i, state) in [(5, "h"), (6, "c")] {
        if let Some((shape, data)) = init(i).ok().flatten() {
            match shape.as_slice() {
                [1, b, h] if *h == hidden => initial.insert(state, &[*b, *h], data)?,
                _ => {
                    return err(format!(
                        "initial state `{state}` is {shape:?}; expected [1, B, {hidden}]"
                    ))
                }
            }
        }
    }
    Ok(Imported {
        cell_name,
        cell_source,
        weights,
        hidden_size: hidden,
        input_size,
        initial,
    })
}
