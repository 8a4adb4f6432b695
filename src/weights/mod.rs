//! Weights: named tensors (from a safetensors file, or from slices), and their
//! binding to a cell's parameters through the slices its `.rnn` file declares.
//!
//! A parameter `param W_ii: [H, X] = weight_ih_l0[0..H] | weight_ih[0..H]` takes
//! the first alternative whose tensor exists, indexes it (`a..b` keeps an axis,
//! a single position drops it, missing trailing indices keep whole axes), and
//! must come out with exactly the parameter's shape. Every mismatch is an error
//! that names the parameter, the tensor, and both shapes.
//!
//! Element types: f32 is used as it is; f64, f16 and bf16 are converted to f32
//! (f64 rounds to nearest; f16 and bf16 convert exactly). Integer and 8-bit
//! float tensors are refused as weights. Integer tensors (i64, i32) are kept
//! apart, for what is a count rather than a value: the `lengths` of a batch of
//! sequences ([`Weights::integers`]).

use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;

use crate::ir::{BindIndex, Cell, Type};

mod prefix;
mod reads;

use reads::{for_each_offset, region};

/// A dense tensor of f32, row-major.
#[derive(Clone, Debug, PartialEq)]
pub struct Tensor {
    pub shape: Vec<usize>,
    pub data: Vec<f32>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct WeightsError(pub String);

impl fmt::Display for WeightsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for WeightsError {}

impl From<WeightsError> for crate::Error {
    fn from(e: WeightsError) -> crate::Error {
        crate::Error::new(crate::ErrorKind::Weights, e.0)
    }
}

fn err<T>(m: impl Into<String>) -> Result<T, WeightsError> {
    Err(WeightsError(m.into()))
}

pub fn shape_str(s: &[usize]) -> String {
    let parts: Vec<String> = s.iter().map(usize::to_string).collect();
    format!("[{}]", parts.join(", "))
}

/// Named tensors: a checkpoint (safetensors, a PyTorch `state_dict` saved
/// with `safetensors.torch.save_file`) or values built in code. A cell binds
/// its parameters to them by name ([`Weights::resolve`]); a tensor, or rows
/// of one, that no parameter reads is an error, not ignored.
///
/// ```
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let cell = cellc::Cell::from_source("tiny.rnn", "
///     dim H = 2
///     input x: [H]
///     state h: [H]
///     param W: [H, H]
///     h' = tanh(W @ h + x)
/// ")?;
/// let mut weights = cellc::Weights::new();
/// weights.insert("W", &[2, 2], vec![1.0, 0.0, 0.0, 1.0])?;
/// let ir = cell.ir()?;
/// assert_eq!(weights.resolve(&ir)?, vec![vec![1.0, 0.0, 0.0, 1.0]]);
/// // Round trip through the safetensors format.
/// let bytes = weights.to_safetensors_bytes()?;
/// assert_eq!(cellc::Weights::from_safetensors_bytes(&bytes)?, weights);
/// // A tensor the cell does not read is refused by name.
/// weights.insert("V", &[2], vec![0.0; 2])?;
/// assert!(weights.resolve(&ir).unwrap_err().to_string().contains("`V`"));
/// # Ok(())
/// # }
/// ```
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Weights {
    tensors: BTreeMap<String, Tensor>,
    /// Integer tensors (i64 or i32 in the file), never bound to a parameter.
    integers: BTreeMap<String, (Vec<usize>, Vec<i64>)>,
    /// Parameters may leave parts of the tensors they read unread, or read
    /// parts twice ([`Weights::allow_partial_reads`]).
    partial_reads: bool,
}

impl Weights {
    pub fn new() -> Weights {
        Weights::default()
    }

    /// Allows what binding otherwise refuses ([`Weights::resolve`]): a
    /// tensor that parameters read only in part (rows or columns no
    /// parameter reads), or in overlapping slices. For a cell that uses a
    /// part of a checkpoint on purpose (`cellc run --allow-partial-reads`).
    pub fn allow_partial_reads(mut self) -> Weights {
        self.partial_reads = true;
        self
    }

    /// Whether [`Weights::allow_partial_reads`] was called.
    pub fn partial_reads_allowed(&self) -> bool {
        self.partial_reads
    }

    /// Checks that a tensor `name` of `shape` with `len` values can be added:
    /// the shape holds exactly `len` values, and no tensor has the name.
    fn check_new(&self, name: &str, shape: &[usize], len: usize) -> Result<(), WeightsError> {
        let n = shape.iter().try_fold(1usize, |a, &d| a.checked_mul(d));
        if n != Some(len) {
            return err(format!(
                "tensor `{name}`: shape {} needs {} values, {len} given",
                shape_str(shape),
                n.map_or("too many".to_string(), |n| n.to_string()),
            ));
        }
        if self.tensors.contains_key(name) || self.integers.contains_key(name) {
            return err(format!("tensor `{name}` is given twice"));
        }
        Ok(())
    }

    /// Adds a tensor; its data must have as many values as its shape says.
    pub fn insert(
        &mut self,
        name: &str,
        shape: &[usize],
        data: Vec<f32>,
    ) -> Result<(), WeightsError> {
        self.check_new(name, shape, data.len())?;
        self.tensors.insert(
            name.to_string(),
            Tensor {
                shape: shape.to_vec(),
                data,
            },
        );
        Ok(())
    }

    /// `insert`, by value, for chaining.
    pub fn with(
        mut self,
        name: &str,
        shape: &[usize],
        data: Vec<f32>,
    ) -> Result<Weights, WeightsError> {
        self.insert(name, shape, data)?;
        Ok(self)
    }

    pub fn get(&self, name: &str) -> Option<&Tensor> {
        self.tensors.get(name)
    }

    /// An integer tensor: its shape and values.
    pub fn integers(&self, name: &str) -> Option<(&[usize], &[i64])> {
        self.integers
            .get(name)
            .map(|(s, v)| (s.as_slice(), v.as_slice()))
    }

    /// Adds an integer tensor (`lengths`); its values must fill its shape.
    pub fn insert_integers(
        &mut self,
        name: &str,
        shape: &[usize],
        data: Vec<i64>,
    ) -> Result<(), WeightsError> {
        self.check_new(name, shape, data.len())?;
        self.integers
            .insert(name.to_string(), (shape.to_vec(), data));
        Ok(())
    }

    /// The names of the integer tensors.
    pub fn integer_names(&self) -> impl Iterator<Item = &str> {
        self.integers.keys().map(String::as_str)
    }

    /// Removes a tensor (float or integer), if there is one.
    pub fn remove(&mut self, name: &str) {
        self.tensors.remove(name);
        self.integers.remove(name);
    }

    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.tensors.keys().map(String::as_str)
    }

    pub fn from_safetensors(path: impl AsRef<Path>) -> Result<Weights, WeightsError> {
        let path = path.as_ref();
        let bytes = crate::files::read_bounded(path, MAX_SAFETENSORS_BYTES, "safetensors files")
            .map_err(|e| WeightsError(e.message()))?;
        Weights::from_safetensors_bytes(&bytes)
            .map_err(|e| WeightsError(format!("`{}`: {}", path.display(), e.0)))
    }

    /// Reads a safetensors file's bytes. The header is checked for duplicate
    /// names (which the format's JSON would otherwise silently collapse).
    pub fn from_safetensors_bytes(bytes: &[u8]) -> Result<Weights, WeightsError> {
        if let Some(what) = other_format(bytes) {
            return err(format!(
                "this is {what}, not a safetensors file; save the weights with safetensors: \
                 `from safetensors.torch import save_file; save_file(module.state_dict(), \
                 \"w.safetensors\")`"
            ));
        }
        check_header(bytes)?;
        let st = safetensors::SafeTensors::deserialize(bytes)
            .map_err(|e| WeightsError(format!("not a valid safetensors file: {e}")))?;
        let mut w = Weights::new();
        let mut tensors = st.tensors();
        tensors.sort_by(|a, b| a.0.cmp(&b.0));
        for (name, view) in tensors {
            if let Some(ints) = to_i64(view.dtype(), view.data()) {
                w.insert_integers(&name, view.shape(), ints)?;
                continue;
            }
            let data = to_f32(&name, view.dtype(), view.data())?;
            w.insert(&name, view.shape(), data)?;
        }
        Ok(w)
    }

    /// Writes the tensors as a safetensors file (f32; integer tensors as i64).
    pub fn to_safetensors_bytes(&self) -> Result<Vec<u8>, WeightsError> {
        use safetensors::Dtype;
        let floats = self.tensors.iter().map(|(n, t)| {
            (
                n.clone(),
                Dtype::F32,
                t.shape.clone(),
                t.data.iter().flat_map(|v| v.to_le_bytes()).collect(),
            )
        });
        let integers = self.integers.iter().map(|(n, (shape, data))| {
            (
                n.clone(),
                Dtype::I64,
                shape.clone(),
                data.iter().flat_map(|v| v.to_le_bytes()).collect(),
            )
        });
        let bytes: Vec<(String, Dtype, Vec<usize>, Vec<u8>)> = floats.chain(integers).collect();
        let views: Vec<(String, safetensors::tensor::TensorView<'_>)> = bytes
            .iter()
            .map(|(n, dtype, s, b)| {
                safetensors::tensor::TensorView::new(*dtype, s.clone(), b)
                    .map(|v| (n.clone(), v))
                    .map_err(|e| WeightsError(format!("tensor `{n}`: {e}")))
            })
            .collect::<Result<_, _>>()?;
        safetensors::serialize(views, &None).map_err(|e| WeightsError(e.to_string()))
    }

    /// Random weights for a cell, scaled like a trained network's (uniform in
    /// ±1/sqrt(fan-in) for matrices, ±0.5 for vectors), under the parameters'
    /// own names. For benchmarks and tests.
    pub fn random(cell: &Cell, seed: u64) -> Weights {
        let mut rng = crate::gen::Rng(seed);
        let mut w = Weights::new();
        for p in &cell.params {
            let (shape, scale) = match p.ty {
                Type::Matrix(r, c) => (p.structure.stored_shape(r, c), 1.0 / (c as f64).sqrt()),
                Type::Vector(n) => (vec![n], 0.5),
                Type::Scalar => (vec![1], 0.5),
            };
            let n: usize = shape.iter().product();
            let data = (0..n).map(|_| (rng.unit() * scale) as f32).collect();
            let _ = w.insert(&p.name, &shape, data);
        }
        w
    }

    /// The tensors the parameters of `cell` read (the first alternative of
    /// each binding that the weights have, else the parameter's own name).
    pub fn read_by(&self, cell: &Cell) -> std::collections::BTreeSet<String> {
        cell.params
            .iter()
            .filter_map(|p| self.chosen(p).map(|(tensor, _)| tensor.to_string()))
            .collect()
    }

    /// The tensor parameter `p` reads, and the indices it applies: the first
    /// alternative of its binding that the weights have, else a tensor under
    /// the parameter's own name (taken whole). The one rule of [`resolve`]
    /// and [`read_by`].
    ///
    /// [`resolve`]: Weights::resolve
    /// [`read_by`]: Weights::read_by
    fn chosen<'p>(&self, p: &'p crate::ir::Param) -> Option<(&'p str, &'p [BindIndex])> {
        p.binding
            .iter()
            .find(|b| self.tensors.contains_key(&b.tensor))
            .map(|b| (b.tensor.as_str(), b.indices.as_slice()))
            .or_else(|| {
                self.tensors
                    .contains_key(&p.name)
                    .then_some((p.name.as_str(), &[][..]))
            })
    }

    /// The values of every parameter of `cell`, row-major, in parameter order.
    ///
    /// Every tensor a parameter reads must be read whole by the parameters
    /// together, and slices of it may not overlap (several parameters may
    /// read one tensor whole: tied weights): rows that no parameter reads
    /// mean the checkpoint is of another module than the cell (an LSTM's
    /// state_dict run by a GRU cell reads three of its four gates), or a
    /// slice of the cell is wrong. Either is an error naming the tensor and
    /// the rows, unless [`Weights::allow_partial_reads`].
    pub fn resolve(&self, cell: &Cell) -> Result<Vec<Vec<f32>>, WeightsError> {
        let values = self.resolve_each(cell, true)?;
        if !self.partial_reads {
            self.check_reads(cell)?;
        }
        Ok(values)
    }

    /// [`Weights::resolve`] with each parameter's values as its tensor
    /// stores them: a block-circulant matrix's blocks' vectors (`[R/k,
    /// C/k, k]`, what a trainer trains), every other parameter as
    /// `resolve` gives it.
    pub fn resolve_stored(&self, cell: &Cell) -> Result<Vec<Vec<f32>>, WeightsError> {
        let values = self.resolve_each(cell, false)?;
        if !self.partial_reads {
            self.check_reads(cell)?;
        }
        Ok(values)
    }

    /// Where each parameter of `cell` reads its values, as
    /// [`Weights::resolve_stored`] reads them: the tensor's name and the
    /// offset in it of each of the parameter's stored values (row-major; a
    /// circulant matrix's blocks' vectors); `None` for a parameter that no
    /// tensor gives or whose slice does not fit. A trainer sends gradients
    /// back to a checkpoint's tensors by it.
    pub(crate) fn read_offsets(&self, cell: &Cell) -> Vec<Option<(String, Vec<usize>)>> {
        (cell.params.iter())
            .map(|p| {
                let (tensor, indices) = self.chosen(p)?;
                let shape = &self.tensors[tensor].shape;
                let region = region(shape, indices).ok()?;
                let mut offsets = Vec::new();
                for_each_offset(shape, &region, |o| offsets.push(o));
                Some((tensor.to_string(), offsets))
            })
            .collect()
    }

    fn resolve_each(&self, cell: &Cell, expand: bool) -> Result<Vec<Vec<f32>>, WeightsError> {
        let mut out = Vec::with_capacity(cell.params.len());
        for p in &cell.params {
            // A circulant matrix's tensor holds its blocks' defining vectors.
            let want: Vec<usize> = match p.ty {
                Type::Matrix(r, c) => p.structure.stored_shape(r, c),
                Type::Vector(n) => vec![n],
                Type::Scalar => vec![1],
            };
            // By the parameter's own name first when it has no binding.
            let own = [crate::ir::Binding {
                tensor: p.name.clone(),
                indices: Vec::new(),
            }];
            let alternatives: &[crate::ir::Binding] = if p.binding.is_empty() {
                &own
            } else {
                &p.binding
            };
            // A binding's tensor may also be given under the parameter's name.
            let Some((tensor, indices)) = self.chosen(p) else {
                if let Some(b) = alternatives
                    .iter()
                    .find(|b| self.integers.contains_key(&b.tensor))
                {
                    return err(format!(
                        "parameter `{}`: tensor `{}` holds integers; a parameter needs \
                         floating-point values (f32, f64, f16 or bf16)",
                        p.name, b.tensor
                    ));
                }
                let tried: Vec<String> = alternatives
                    .iter()
                    .map(|b| format!("`{}`", b.tensor))
                    .collect();
                let mut m = format!(
                    "missing weight for parameter `{}` {}: no tensor named {}",
                    p.name,
                    shape_str(&want),
                    tried.join(" or ")
                );
                let prefixes = self.prefixed(alternatives);
                if let [(prefix, name)] = &prefixes[..] {
                    m.push_str(&format!(
                        "; the weights have `{prefix}{name}`: they were saved from a module \
                         that holds the cell under `{prefix}` (pass `--prefix {prefix}`, or \
                         `Weights::strip_prefix(\"{prefix}\")`)"
                    ));
                } else if let [(_, name), ..] = &prefixes[..] {
                    let listed: Vec<String> =
                        prefixes.iter().map(|(p, _)| format!("`{p}`")).collect();
                    m.push_str(&format!(
                        "; the weights hold `{name}` under {} prefixes, {}: they were saved \
                         from a module with several recurrent modules; pass the one to run \
                         with `--prefix` (or `Weights::strip_prefix`)",
                        prefixes.len(),
                        list(listed.into_iter())
                    ));
                } else {
                    m.push_str(&format!("; the weights have {}", self.some_names()));
                }
                return err(m);
            };
            self.check_one_layer(tensor)?;
            let t = &self.tensors[tensor];
            let data = slice(t, indices).map_err(|m| {
                WeightsError(format!(
                    "parameter `{}`: tensor `{}` {}: {m}",
                    p.name,
                    tensor,
                    shape_str(&t.shape)
                ))
            })?;
            // A number (a 0-d tensor, as PyTorch saves a scalar parameter) is
            // a vector of one.
            let scalar_for_one = data.0.is_empty() && want == [1];
            if data.0 != want && !scalar_for_one {
                let is = match (p.ty, p.structure) {
                    (Type::Matrix(r, c), crate::ir::Structure::Circulant(k)) => format!(
                        "[{r}, {c}] of circulant blocks of {k}, stored as {} (one k-vector \
                         per block)",
                        shape_str(&want)
                    ),
                    _ => shape_str(&want),
                };
                return err(format!(
                    "parameter `{}` is {is} but tensor `{}`{} is {}",
                    p.name,
                    tensor,
                    fmt_indices(indices),
                    shape_str(&data.0)
                ));
            }
            out.push(match p.ty {
                Type::Matrix(r, c) if expand => match p.structure.expand(r, c, &data.1) {
                    Some(dense) => dense,
                    None => {
                        return err(format!(
                            "parameter `{}` ([{r}, {c}]) cannot have {:?} blocks",
                            p.name, p.structure
                        ))
                    }
                },
                _ => data.1,
            });
        }
        Ok(out)
    }
}

/// `a, b, c`.
fn list(items: impl Iterator<Item = String>) -> String {
    items.collect::<Vec<_>>().join(", ")
}

fn fmt_indices(ix: &[BindIndex]) -> String {
    if ix.is_empty() {
        return String::new();
    }
    let parts: Vec<String> = ix
        .iter()
        .map(|i| match i {
            BindIndex::At(n) => n.to_string(),
            BindIndex::Range(a, b) => format!(
                "{}..{}",
                a.map_or(String::new(), |v| v.to_string()),
                b.map_or(String::new(), |v| v.to_string())
            ),
        })
        .collect();
    format!("[{}]", parts.join(", "))
}

/// Applies indices to a tensor: the selected shape and values.
fn slice(t: &Tensor, indices: &[BindIndex]) -> Result<(Vec<usize>, Vec<f32>), String> {
    let region = region(&t.shape, indices)?;
    // An axis indexed at one position is dropped.
    let shape: Vec<usize> = region
        .iter()
        .enumerate()
        .filter(|(a, _)| !matches!(indices.get(*a), Some(BindIndex::At(_))))
        .map(|(_, r)| r.1)
        .collect();
    let mut data = Vec::with_capacity(region.iter().map(|r| r.1).product());
    for_each_offset(&t.shape, &region, |o| data.push(t.data[o]));
    Ok((shape, data))
}

/// The values of an i64 or i32 tensor; `None` for any other element type.
fn to_i64(dtype: safetensors::Dtype, bytes: &[u8]) -> Option<Vec<i64>> {
    use safetensors::Dtype;
    match dtype {
        Dtype::I64 => Some(
            bytes
                .chunks_exact(8)
                .map(|b| i64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]))
                .collect(),
        ),
        Dtype::I32 => Some(
            bytes
                .chunks_exact(4)
                .map(|b| i64::from(i32::from_le_bytes([b[0], b[1], b[2], b[3]])))
                .collect(),
        ),
        _ => None,
    }
}

fn to_f32(name: &str, dtype: safetensors::Dtype, bytes: &[u8]) -> Result<Vec<f32>, WeightsError> {
    use safetensors::Dtype;
    let chunks = |n: usize| bytes.chunks_exact(n);
    Ok(match dtype {
        Dtype::F32 => chunks(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect(),
        Dtype::F64 => chunks(8)
            .map(|b| f64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]) as f32)
            .collect(),
        Dtype::F16 => chunks(2)
            .map(|b| half::f16::from_le_bytes([b[0], b[1]]).to_f32())
            .collect(),
        Dtype::BF16 => chunks(2)
            .map(|b| half::bf16::from_le_bytes([b[0], b[1]]).to_f32())
            .collect(),
        other => {
            return err(format!(
                "tensor `{name}` has element type {other:?}; cellc reads f32, f64, f16 and bf16 (and i64 or i32 for sequence lengths)"
            ))
        }
    })
}

/// What a file that is not safetensors is, when its first bytes say: the
/// formats a PyTorch user is likely to hand over instead.
fn other_format(bytes: &[u8]) -> Option<&'static str> {
    // A safetensors file: an 8-byte length, then its JSON header. (Its
    // length's first bytes can look like any magic number.)
    if bytes.get(8) == Some(&b'{') {
        return None;
    }
    if bytes.starts_with(b"PK\x03\x04") {
        Some("a zip archive (what `torch.save` writes)")
    } else if bytes.len() >= 2 && bytes[0] == 0x80 && (2..=5).contains(&bytes[1]) {
        Some("a Python pickle (what older `torch.save` writes)")
    } else if bytes.starts_with(b"\x89HDF") {
        Some("an HDF5 file (Keras)")
    } else if bytes.starts_with(b"\x08") && bytes.len() > 16 && bytes[1..].contains(&0x3a) {
        // An ONNX ModelProto starts with ir_version (field 1, varint).
        Some("probably an ONNX model (run it as `cellc run model.onnx`)")
    } else {
        None
    }
}

/// The largest safetensors file read (a file that is not a regular file, a
/// pipe or `/dev/zero`, is read up to this).
pub const MAX_SAFETENSORS_BYTES: u64 = 64 << 30;

/// Most tensors one safetensors file may hold (a whole language model's
/// checkpoint has a few thousand; a recurrent network's, a few dozen).
const MAX_TENSORS: usize = 65_536;

/// Checks the JSON header for duplicate tensor names before the safetensors
/// crate reads it (its map would keep only the last).
fn check_header(bytes: &[u8]) -> Result<(), WeightsError> {
    if bytes.len() < 8 {
        return err("not a valid safetensors file: shorter than its 8-byte header length");
    }
    let mut len = [0u8; 8];
    len.copy_from_slice(&bytes[..8]);
    let n = u64::from_le_bytes(len);
    let Some(header) = usize::try_from(n)
        .ok()
        .and_then(|n| bytes.get(8..8usize.checked_add(n)?))
    else {
        return err(format!(
            "not a valid safetensors file: its header claims {n} bytes, the file has {}",
            bytes.len() - 8
        ));
    };
    let text = std::str::from_utf8(header).map_err(|_| {
        WeightsError("not a valid safetensors file: the header is not UTF-8".into())
    })?;
    // Top-level keys of the JSON object, found with a small scanner.
    let mut seen = std::collections::HashSet::new();
    let b = text.as_bytes();
    let mut depth = 0i32;
    let mut i = 0;
    let mut expect_key = false;
    while i < b.len() {
        match b[i] {
            b'{' | b'[' => {
                depth += 1;
                expect_key = depth == 1 && b[i] == b'{';
            }
            b'}' | b']' => depth -= 1,
            b',' if depth == 1 => expect_key = true,
            b'"' => {
                let start = i + 1;
                i += 1;
                while i < b.len() && b[i] != b'"' {
                    if b[i] == b'\\' {
                        i += 1;
                    }
                    i += 1;
                }
                if depth == 1 && expect_key {
                    // Compared decoded: `"x"` and `"\u0078"` name one tensor.
                    let raw = text.get(start - 1..(i + 1).min(b.len())).unwrap_or("");
                    let key: String = serde_json::from_str(raw).map_err(|_| {
                        WeightsError(format!(
                            "not a valid safetensors file: tensor name {} is not a JSON string",
                            crate::diag::short(raw)
                        ))
                    })?;
                    if seen.len() >= MAX_TENSORS {
                        return err(format!(
                            "the file holds more than {MAX_TENSORS} tensors; cellc reads checkpoints far smaller"
                        ));
                    }
                    if !seen.insert(key.clone()) {
                        return err(format!(
                            "the file names tensor `{}` twice",
                            crate::diag::short(&key)
                        ));
                    }
                    expect_key = false;
                }
            }
            _ => {}
        }
        i += 1;
    }
    Ok(())
}
