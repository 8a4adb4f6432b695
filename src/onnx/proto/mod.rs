//! The few ONNX protobuf messages cellc reads, decoded from the wire format
//! with bounded cost.
//!
//! ONNX files are protobuf messages (`onnx.proto`). Only the fields the importer
//! needs are decoded: the model's graph; the graph's nodes, initializers,
//! inputs and outputs; a node's inputs, outputs, name, op type, domain and
//! attributes; an attribute's name, declared type and value; a tensor's dims,
//! element type, name and data. Unknown fields are skipped, as protobuf allows.
//!
//! Cost is bounded by the input: names and tensor bytes are borrowed from the
//! file rather than copied, and counts (nodes, node inputs, attributes,
//! initializers, names' lengths) have limits far beyond any real recurrent
//! model, so that a hostile file of tiny fields cannot make the reader hold
//! many times its size. Every error names what was wrong and stays short.

use crate::weights::WeightsError;

mod values;

pub use values::Values;

/// Limits on what one model may hold.
pub const MAX_NODES: usize = 10_000;
pub const MAX_NODE_VALUES: usize = 100_000;
pub const MAX_ATTRIBUTES: usize = 10_000;
pub const MAX_INITIALIZERS: usize = 10_000;
pub const MAX_GRAPH_VALUES: usize = 10_000;
pub const MAX_NAME_BYTES: usize = 4096;
pub const MAX_DIMS: usize = 8;

pub fn err<T>(m: impl Into<String>) -> Result<T, WeightsError> {
    Err(WeightsError(m.into()))
}

pub(crate) use crate::diag::short;

/// A cursor over protobuf wire format.
struct Reader<'a> {
    buf: &'a [u8],
}

#[derive(Clone, Copy)]
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

    fn next_field(&mut self) -> Result<Option<(u64, Field<'a>)>, WeightsError> {
        if self.buf.is_empty() {
            return Ok(None);
        }
        let key = self.varint()?;
        let (number, wire) = (key >> 3, key & 7);
        let field = match wire {
            0 => Field::Varint(self.varint()?),
            1 => {
                let b = self.take(8)?;
                let mut a = [0u8; 8];
                a.copy_from_slice(b);
                Field::Fixed64(u64::from_le_bytes(a))
            }
            2 => {
                let n = self.varint()?;
                let n = usize::try_from(n).unwrap_or(usize::MAX);
                Field::Bytes(self.take(n)?)
            }
            5 => {
                let b = self.take(4)?;
                let mut a = [0u8; 4];
                a.copy_from_slice(b);
                Field::Fixed32(u32::from_le_bytes(a))
            }
            _ => return err(format!("not an ONNX model: unknown wire type {wire}")),
        };
        Ok(Some((number, field)))
    }
}

/// Calls `f` on every field of a message, in order, without collecting them.
fn for_each_field<'a>(
    buf: &'a [u8],
    mut f: impl FnMut(u64, Field<'a>) -> Result<(), WeightsError>,
) -> Result<(), WeightsError> {
    let mut r = Reader { buf };
    while let Some((n, field)) = r.next_field()? {
        f(n, field)?;
    }
    Ok(())
}

fn text<'a>(f: Field<'a>, what: &str) -> Result<&'a str, WeightsError> {
    let Field::Bytes(b) = f else {
        return err(format!("not an ONNX model: {what} is not a string"));
    };
    if b.len() > MAX_NAME_BYTES {
        return err(format!(
            "{what} is {} bytes long (the limit is {MAX_NAME_BYTES})",
            b.len()
        ));
    }
    std::str::from_utf8(b).map_err(|_| WeightsError(format!("{what} is not UTF-8")))
}

fn push_bounded<T>(v: &mut Vec<T>, item: T, limit: usize, what: &str) -> Result<(), WeightsError> {
    if v.len() >= limit {
        return err(format!(
            "the model has more than {limit} {what}; cellc reads recurrent models far smaller"
        ));
    }
    v.push(item);
    Ok(())
}

/// Repeated int64s, packed or not.
fn ints(f: Field<'_>, out: &mut Vec<i64>, limit: usize, what: &str) -> Result<(), WeightsError> {
    match f {
        Field::Varint(v) => push_bounded(out, v as i64, limit, what)?,
        Field::Bytes(b) => {
            let mut r = Reader { buf: b };
            while !r.buf.is_empty() {
                let v = r.varint()?;
                push_bounded(out, v as i64, limit, what)?;
            }
        }
        _ => return err(format!("not an ONNX model: {what} has the wrong encoding")),
    }
    Ok(())
}

/// An attribute's declared type (`AttributeProto.AttributeType`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AttrType {
    Undefined,
    Float,
    Int,
    String,
    Tensor,
    Graph,
    Floats,
    Ints,
    Strings,
    Other(u64),
}

impl AttrType {
    fn from_code(c: u64) -> AttrType {
        match c {
            0 => AttrType::Undefined,
            1 => AttrType::Float,
            2 => AttrType::Int,
            3 => AttrType::String,
            4 => AttrType::Tensor,
            5 => AttrType::Graph,
            6 => AttrType::Floats,
            7 => AttrType::Ints,
            8 => AttrType::Strings,
            o => AttrType::Other(o),
        }
    }

    pub fn name(self) -> String {
        match self {
            AttrType::Undefined => "UNDEFINED".into(),
            AttrType::Float => "FLOAT".into(),
            AttrType::Int => "INT".into(),
            AttrType::String => "STRING".into(),
            AttrType::Tensor => "TENSOR".into(),
            AttrType::Graph => "GRAPH".into(),
            AttrType::Floats => "FLOATS".into(),
            AttrType::Ints => "INTS".into(),
            AttrType::Strings => "STRINGS".into(),
            AttrType::Other(c) => format!("type {c}"),
        }
    }
}

#[derive(Clone, Debug)]
pub struct Attribute<'a> {
    pub name: &'a str,
    pub ty: AttrType,
    pub float: Option<f32>,
    pub int: Option<i64>,
    pub string: Option<&'a [u8]>,
    pub tensor: Option<Tensor<'a>>,
    pub floats: Vec<f32>,
    pub ints: Vec<i64>,
    pub strings: Vec<&'a [u8]>,
    /// A reference to an attribute of an enclosing function.
    pub ref_attr: bool,
}

impl Attribute<'_> {
    /// Whether more than one kind of value is set, or none: such an attribute's
    /// meaning is not clear, whatever its declared type.
    fn value_kinds(&self) -> usize {
        [
            self.float.is_some(),
            self.int.is_some(),
            self.string.is_some(),
            self.tensor.is_some(),
            !self.floats.is_empty(),
            !self.ints.is_empty(),
            !self.strings.is_empty(),
        ]
        .iter()
        .filter(|b| **b)
        .count()
    }

    /// The attribute's type: the declared one, which must agree with the value
    /// that is set (an empty list is allowed for list types).
    pub fn checked_type(&self) -> Result<AttrType, String> {
        let kinds = self.value_kinds();
        let agrees = match self.ty {
            AttrType::Float => self.float.is_some() && kinds == 1,
            AttrType::Int => self.int.is_some() && kinds == 1,
            AttrType::String => self.string.is_some() && kinds == 1,
            AttrType::Tensor => self.tensor.is_some() && kinds == 1,
            AttrType::Floats => kinds == usize::from(!self.floats.is_empty()),
            AttrType::Ints => kinds == usize::from(!self.ints.is_empty()),
            AttrType::Strings => kinds == usize::from(!self.strings.is_empty()),
            _ => false,
        };
        if self.ref_attr {
            return Err("refers to an attribute of an enclosing function".into());
        }
        if agrees {
            Ok(self.ty)
        } else {
            Err(format!(
                "is declared {} but holds {} value{}",
                self.ty.name(),
                kinds,
                if kinds == 1 { " of another type" } else { "s" }
            ))
        }
    }
}

#[derive(Clone, Debug, Default)]
pub struct Node<'a> {
    pub name: &'a str,
    pub op_type: &'a str,
    pub domain: &'a str,
    pub inputs: Vec<&'a str>,
    pub outputs: Vec<&'a str>,
    pub attributes: Vec<Attribute<'a>>,
}

impl Node<'_> {
    /// How a message names the node: its name, or its op and position.
    pub fn describe(&self, index: usize) -> String {
        if self.name.is_empty() {
            format!("node {index} (op `{}`)", short(self.op_type))
        } else {
            format!("node `{}` (op `{}`)", short(self.name), short(self.op_type))
        }
    }
}

/// An initializer or a `Constant` node's tensor, its data still in the file:
/// its typed value fields (`float_data`, `int32_data`, `int64_data`,
/// `double_data`) are decoded only when asked for ([`Tensor::values`]), and
/// never beyond the values its shape holds, so that a tensor that claims
/// more than it has, or has more than it claims, costs nothing to hold.
#[derive(Clone, Debug, Default)]
pub struct Tensor<'a> {
    pub name: &'a str,
    pub dims: Vec<i64>,
    pub data_type: i64,
    pub raw: Option<&'a [u8]>,
    /// The message itself, for its typed value fields.
    body: &'a [u8],
    /// Where its bytes are when they are outside the model file.
    pub external: Option<External<'a>>,
    pub segmented: bool,
}

/// A tensor's bytes in a file beside the model (`data_location = EXTERNAL`).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct External<'a> {
    /// A path relative to the model's folder.
    pub location: &'a str,
    pub offset: u64,
    pub length: Option<u64>,
}

/// The parts of a graph cellc reads.
#[derive(Clone, Debug, Default)]
pub struct Graph<'a> {
    pub nodes: Vec<Node<'a>>,
    pub initializers: Vec<Tensor<'a>>,
    pub inputs: Vec<&'a str>,
    pub outputs: Vec<&'a str>,
    pub sparse_initializers: usize,
}

/// Most values in the list attributes of a whole graph.
pub const MAX_ATTRIBUTE_LIST_VALUES: usize = 100_000;

/// Counts shared by a whole graph, against the limits.
#[derive(Default)]
struct Budget {
    node_values: usize,
    attributes: usize,
    attribute_values: usize,
}

impl Budget {
    fn value(&mut self) -> Result<(), WeightsError> {
        self.node_values += 1;
        if self.node_values > MAX_NODE_VALUES {
            return err(format!(
                "the model's nodes have more than {MAX_NODE_VALUES} inputs and outputs in all; \
                 cellc reads recurrent models far smaller"
            ));
        }
        Ok(())
    }

    fn attribute_values(&mut self, n: usize) -> Result<(), WeightsError> {
        self.attribute_values += n;
        if self.attribute_values > MAX_ATTRIBUTE_LIST_VALUES {
            return err(format!(
                "the model's attributes hold more than {MAX_ATTRIBUTE_LIST_VALUES} list values \
                 in all; cellc reads recurrent models far smaller"
            ));
        }
        Ok(())
    }

    fn attribute(&mut self) -> Result<(), WeightsError> {
        self.attributes += 1;
        if self.attributes > MAX_ATTRIBUTES {
            return err(format!(
                "the model has more than {MAX_ATTRIBUTES} attributes; cellc reads recurrent \
                 models far smaller"
            ));
        }
        Ok(())
    }
}

/// Reads a model's graph.
pub fn read_model(bytes: &[u8]) -> Result<Graph<'_>, WeightsError> {
    let mut graph: Option<&[u8]> = None;
    let mut functions = 0usize;
    for_each_field(bytes, |num, f| {
        match (num, f) {
            (7, Field::Bytes(_)) if graph.is_some() => {
                return err("not a valid ONNX model: it has two graphs (field `graph` twice)")
            }
            (7, Field::Bytes(b)) => graph = Some(b),
            (7, _) => return err("not an ONNX model: its graph is not a message"),
            (25, _) => functions += 1,
            _ => {}
        }
        Ok(())
    })?;
    let Some(graph) = graph else {
        return err("not an ONNX model: it has no graph");
    };
    let _ = functions;
    read_graph(graph)
}

fn read_graph(buf: &[u8]) -> Result<Graph<'_>, WeightsError> {
    let mut g = Graph::default();
    let mut budget = Budget::default();
    for_each_field(buf, |num, f| {
        match (num, f) {
            (1, Field::Bytes(b)) => {
                let n = read_node(b, &mut budget)?;
                push_bounded(&mut g.nodes, n, MAX_NODES, "nodes")?;
            }
            (5, Field::Bytes(b)) => {
                let t = read_tensor(b)?;
                push_bounded(&mut g.initializers, t, MAX_INITIALIZERS, "initializers")?;
            }
            (11, Field::Bytes(b)) => {
                let name = value_info_name(b)?;
                push_bounded(&mut g.inputs, name, MAX_GRAPH_VALUES, "graph inputs")?;
            }
            (12, Field::Bytes(b)) => {
                let name = value_info_name(b)?;
                push_bounded(&mut g.outputs, name, MAX_GRAPH_VALUES, "graph outputs")?;
            }
            (15, _) => g.sparse_initializers += 1,
            (1 | 5 | 11 | 12, _) => {
                return err(format!(
                    "not an ONNX model: graph field {num} is not a message"
                ))
            }
            _ => {}
        }
        Ok(())
    })?;
    for (what, names) in [("input", &g.inputs), ("output", &g.outputs)] {
        let mut seen = std::collections::HashSet::new();
        if let Some(twice) = names.iter().find(|n| !seen.insert(**n)) {
            return err(format!(
                "not a valid ONNX model: graph {what} `{}` is declared twice",
                short(twice)
            ));
        }
    }
    Ok(g)
}

fn value_info_name(buf: &[u8]) -> Result<&str, WeightsError> {
    let mut name = "";
    for_each_field(buf, |num, f| {
        if num == 1 {
            name = text(f, "a graph input's or output's name")?;
        }
        Ok(())
    })?;
    Ok(name)
}

fn read_node<'a>(buf: &'a [u8], budget: &mut Budget) -> Result<Node<'a>, WeightsError> {
    let mut n = Node::default();
    for_each_field(buf, |num, f| {
        match num {
            1 => {
                budget.value()?;
                n.inputs.push(text(f, "a node input's name")?);
            }
            2 => {
                budget.value()?;
                n.outputs.push(text(f, "a node output's name")?);
            }
            3 => n.name = text(f, "a node's name")?,
            4 => n.op_type = text(f, "a node's op type")?,
            7 => n.domain = text(f, "a node's domain")?,
            5 => {
                budget.attribute()?;
                let Field::Bytes(b) = f else {
                    return err("not an ONNX model: a node attribute is not a message");
                };
                let a = read_attribute(b)?;
                budget.attribute_values(a.floats.len() + a.ints.len() + a.strings.len())?;
                if n.attributes.iter().any(|o| o.name == a.name) {
                    return err(format!(
                        "not a valid ONNX model: a node has attribute `{}` twice",
                        short(a.name)
                    ));
                }
                n.attributes.push(a);
            }
            _ => {}
        }
        Ok(())
    })?;
    Ok(n)
}

/// Most values in one attribute list (activations, perm, axes: a handful).
const MAX_ATTRIBUTE_VALUES: usize = 1024;

fn read_attribute(buf: &[u8]) -> Result<Attribute<'_>, WeightsError> {
    let mut a = Attribute {
        name: "",
        ty: AttrType::Undefined,
        float: None,
        int: None,
        string: None,
        tensor: None,
        floats: Vec::new(),
        ints: Vec::new(),
        strings: Vec::new(),
        ref_attr: false,
    };
    for_each_field(buf, |num, f| {
        match (num, f) {
            (1, _) => a.name = text(f, "an attribute's name")?,
            (2, Field::Fixed32(v)) => a.float = Some(f32::from_bits(v)),
            (3, Field::Varint(v)) => a.int = Some(v as i64),
            (4, Field::Bytes(b)) => {
                if b.len() > MAX_NAME_BYTES {
                    return err(format!(
                        "a string attribute is {} bytes long (the limit is {MAX_NAME_BYTES})",
                        b.len()
                    ));
                }
                a.string = Some(b);
            }
            (5, Field::Bytes(b)) => a.tensor = Some(read_tensor(b)?),
            (7, Field::Fixed32(v)) => push_bounded(
                &mut a.floats,
                f32::from_bits(v),
                MAX_ATTRIBUTE_VALUES,
                "values in one attribute",
            )?,
            (7, Field::Bytes(b)) => {
                if b.len() / 4 > MAX_ATTRIBUTE_VALUES {
                    return err(format!(
                        "an attribute holds {} floats (the limit is {MAX_ATTRIBUTE_VALUES})",
                        b.len() / 4
                    ));
                }
                a.floats.extend(
                    b.chunks_exact(4)
                        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])),
                );
            }
            (8, _) => ints(
                f,
                &mut a.ints,
                MAX_ATTRIBUTE_VALUES,
                "values in one attribute",
            )?,
            (9, Field::Bytes(b)) => {
                if b.len() > MAX_NAME_BYTES {
                    return err("a string in an attribute is too long");
                }
                push_bounded(
                    &mut a.strings,
                    b,
                    MAX_ATTRIBUTE_VALUES,
                    "values in one attribute",
                )?
            }
            (20, Field::Varint(v)) => a.ty = AttrType::from_code(v),
            (21, _) => a.ref_attr = true,
            (6 | 10 | 11 | 13 | 14 | 22 | 23, _) => {
                // Graphs, tensors lists, sparse tensors, type protos: nothing a
                // recurrent node's attribute holds; the declared type says so.
            }
            (2 | 3 | 4 | 5 | 7 | 9 | 20, _) => {
                return err(format!(
                    "not an ONNX model: attribute field {num} has the wrong encoding"
                ))
            }
            _ => {}
        }
        Ok(())
    })?;
    Ok(a)
}

fn read_tensor(buf: &[u8]) -> Result<Tensor<'_>, WeightsError> {
    let mut t = Tensor {
        body: buf,
        ..Tensor::default()
    };
    let mut external_entries: Vec<(&str, &str)> = Vec::new();
    let mut located_outside = false;
    for_each_field(buf, |num, f| {
        match (num, f) {
            (1, _) => ints(f, &mut t.dims, MAX_DIMS, "dimensions in one tensor")?,
            (2, Field::Varint(v)) => t.data_type = v as i64,
            (3, _) => t.segmented = true,
            (8, _) => t.name = text(f, "a tensor's name")?,
            (9, Field::Bytes(b)) => t.raw = Some(b),
            (13, Field::Bytes(b)) => {
                let (mut key, mut value) = ("", "");
                for_each_field(b, |n, f| {
                    match n {
                        1 => key = text(f, "an external data key")?,
                        2 => value = text(f, "an external data value")?,
                        _ => {}
                    }
                    Ok(())
                })?;
                push_bounded(
                    &mut external_entries,
                    (key, value),
                    16,
                    "external data entries",
                )?;
            }
            (13, _) => return err("not an ONNX model: external data is not a message"),
            (14, Field::Varint(v)) => located_outside = v == 1,
            (2 | 9 | 14, _) => {
                return err(format!(
                    "not an ONNX model: tensor field {num} has the wrong encoding"
                ))
            }
            _ => {}
        }
        Ok(())
    })?;
    if located_outside || !external_entries.is_empty() {
        let mut e = External::default();
        for (key, value) in external_entries {
            let number = || {
                value.parse::<u64>().map_err(|_| {
                    WeightsError(format!(
                        "tensor `{}`: external data {key} `{}` is not a number",
                        short(t.name),
                        short(value)
                    ))
                })
            };
            match key {
                "location" => e.location = value,
                "offset" => e.offset = number()?,
                "length" => e.length = Some(number()?),
                "checksum" => {}
                other => {
                    return err(format!(
                        "tensor `{}` has external data entry `{}`, which cellc does not know",
                        short(t.name),
                        short(other)
                    ))
                }
            }
        }
        if e.location.is_empty() {
            return err(format!(
                "tensor `{}` is stored outside the model but names no file",
                short(t.name)
            ));
        }
        t.external = Some(e);
    }
    Ok(t)
}
