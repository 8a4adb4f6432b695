//! `cellc._cellc`: the compiler, the kernels and the networks of the `cellc`
//! crate for Python. A thin skin: Rust does the work, this module adapts
//! arrays and errors; the `cellc` package (`cellc/__init__.py`) adapts
//! PyTorch modules, tensors and packed sequences on top.
//!
//! Arrays in: NumPy arrays and PyTorch CPU tensors. A float32 C-contiguous
//! array (or a CPU float32 contiguous tensor: its own memory, as
//! `Tensor.numpy()` would share it) is read in place; anything else is converted once
//! (counted: [`copies`]); what cannot be (a CUDA tensor, complex values, a
//! wrong rank) is an error naming the argument and the shape expected.
//! Arrays out: NumPy arrays, or tensors when the input was a tensor.
//!
//! Every compiled call runs with the GIL released. A `Kernel` or `Network` is
//! shared by any number of Python threads; a `State` is one caller's (a
//! second thread using it at once gets an error, never a race).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use numpy::{PyArrayDyn, PyArrayMethods, PyReadonlyArrayDyn, PyUntypedArrayMethods};
use pyo3::create_exception;
use pyo3::exceptions::PyException;
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList, PyTuple};

create_exception!(
    _cellc,
    Error,
    PyException,
    "Every error cellc raises: a subclass per kind, with the rendered message (file, line, column and a caret under the culprit for a `.rnn` source)."
);
create_exception!(_cellc, SourceError, Error, "A `.rnn` source with mistakes.");
create_exception!(
    _cellc,
    FileError,
    Error,
    "A file that cannot be read or written."
);
create_exception!(
    _cellc,
    WeightsError,
    Error,
    "A weight that is missing, of the wrong shape or type, or a checkpoint of another module."
);
create_exception!(
    _cellc,
    ModelError,
    Error,
    "An ONNX model cellc does not understand."
);
create_exception!(
    _cellc,
    ShapeError,
    Error,
    "An input, output or state of the wrong shape, type or kind; a state of another kernel."
);
create_exception!(
    _cellc,
    TooLargeError,
    Error,
    "Sizes that do not fit in memory or exceed cellc's limits."
);
create_exception!(_cellc, OptionsError, Error, "Options that cannot hold.");
create_exception!(
    _cellc,
    InternalError,
    Error,
    "A bug in cellc: please report it."
);

/// A cellc error as the Python exception of its kind.
fn err(e: cellc::Error) -> PyErr {
    use cellc::ErrorKind as K;
    let m = e.render().trim_end().to_string();
    match e.kind() {
        K::Source => SourceError::new_err(m),
        K::Io => FileError::new_err(m),
        K::Weights => WeightsError::new_err(m),
        K::Model => ModelError::new_err(m),
        K::Shape => ShapeError::new_err(m),
        K::TooLarge => TooLargeError::new_err(m),
        K::Options => OptionsError::new_err(m),
        K::Internal => InternalError::new_err(m),
        _ => Error::new_err(m),
    }
}

fn shape_err(m: impl Into<String>) -> PyErr {
    ShapeError::new_err(m.into())
}

/// Inputs converted rather than read in place, since the module was loaded.
static COPIES: AtomicU64 = AtomicU64::new(0);

/// How many array arguments were converted (copied) rather than read in
/// place, since the module was loaded: a float32 C-contiguous array adds
/// nothing. (For tests that check that the fast path is taken.)
#[pyfunction]
fn copies() -> u64 {
    COPIES.load(Ordering::Relaxed)
}

/// An array argument, read in place or converted once, and whether it came
/// as a PyTorch tensor (outputs then go back as tensors).
struct Input<'py> {
    values: Values<'py>,
    torch: bool,
}

/// Where an argument's float32 values are.
enum Values<'py> {
    /// A NumPy array, borrowed (shared) for the call.
    Array(PyReadonlyArrayDyn<'py, f32>),
    /// A float32, contiguous CPU tensor's own memory: `len` values at `ptr`,
    /// valid while `_tensor` (held) lives, as `Tensor.numpy()`'s would be.
    Tensor {
        _tensor: Bound<'py, PyAny>,
        ptr: *const f32,
        len: usize,
        shape: Vec<usize>,
    },
}

impl Input<'_> {
    fn shape(&self) -> &[usize] {
        match &self.values {
            Values::Array(a) => a.shape(),
            Values::Tensor { shape, .. } => shape,
        }
    }

    fn data(&self) -> PyResult<&[f32]> {
        match &self.values {
            Values::Array(a) => a
                .as_slice()
                .map_err(|_| InternalError::new_err("a converted array is not contiguous")),
            Values::Tensor { len: 0, .. } => Ok(&[]),
            Values::Tensor { ptr, len, .. } => {
                // SAFETY: `tensor_in_place` checked that the tensor is
                // float32, on the CPU, contiguous and without a lazy
                // negation, and that `ptr` is aligned; its storage holds
                // `len` values from `ptr` and lives while the tensor does,
                // which `_tensor` keeps alive for as long as this borrow.
                let values = unsafe { std::slice::from_raw_parts(*ptr, *len) };
                Ok(values)
            }
        }
    }
}

/// PyTorch's `Tensor` class and `float32` dtype, once torch is imported (a
/// tensor cannot exist before).
struct TorchTypes {
    tensor: Py<PyAny>,
    float32: Py<PyAny>,
    from_numpy: Py<PyAny>,
}

static TORCH: pyo3::sync::PyOnceLock<TorchTypes> = pyo3::sync::PyOnceLock::new();

fn torch_types(py: Python<'_>) -> PyResult<Option<&TorchTypes>> {
    if let Some(t) = TORCH.get(py) {
        return Ok(Some(t));
    }
    let modules = PyModule::import(py, "sys")?.getattr("modules")?;
    let Ok(torch) = modules.get_item("torch") else {
        return Ok(None);
    };
    let types = TorchTypes {
        tensor: torch.getattr("Tensor")?.unbind(),
        float32: torch.getattr("float32")?.unbind(),
        from_numpy: torch.getattr("from_numpy")?.unbind(),
    };
    Ok(Some(TORCH.get_or_init(py, || types)))
}

fn is_tensor(obj: &Bound<'_, PyAny>) -> PyResult<bool> {
    match torch_types(obj.py())? {
        Some(t) => obj.is_instance(t.tensor.bind(obj.py())),
        None => Ok(false),
    }
}

/// A tensor's values in place, if it is float32, on the CPU, contiguous,
/// not lazily negated and aligned (checked, in that order, by attributes
/// that cost tens of nanoseconds: the tensor's own memory, without going
/// through `Tensor.numpy()`).
fn tensor_in_place<'py>(t: &Bound<'py, PyAny>, types: &TorchTypes) -> PyResult<Option<Input<'py>>> {
    let py = t.py();
    let plain = t.getattr(intern!(py, "is_cpu"))?.extract::<bool>()?
        && t.getattr(intern!(py, "dtype"))?.is(types.float32.bind(py))
        && t.call_method0(intern!(py, "is_contiguous"))?
            .extract::<bool>()?
        && !t.call_method0(intern!(py, "is_neg"))?.extract::<bool>()?;
    if !plain {
        return Ok(None);
    }
    let shape: Vec<usize> = t.getattr(intern!(py, "shape"))?.extract()?;
    let len = shape.iter().product();
    let addr: usize = t.call_method0(intern!(py, "data_ptr"))?.extract()?;
    if len > 0 && (addr == 0 || !addr.is_multiple_of(std::mem::align_of::<f32>())) {
        return Ok(None);
    }
    Ok(Some(Input {
        values: Values::Tensor {
            _tensor: t.clone(),
            ptr: addr as *const f32,
            len,
            shape,
        },
        torch: true,
    }))
}

/// `obj` (argument `what`, expected `expect`) as float32 values.
fn input<'py>(obj: &Bound<'py, PyAny>, what: &str, expect: &str) -> PyResult<Input<'py>> {
    let py = obj.py();
    // The common case first: a float32 C-contiguous NumPy array, in place.
    if let Ok(a) = obj.cast::<PyArrayDyn<f32>>() {
        if a.is_c_contiguous() {
            let array = a
                .try_readonly()
                .map_err(|e| shape_err(format!("{what}: {e}")))?;
            return Ok(Input {
                values: Values::Array(array),
                torch: false,
            });
        }
    }
    let mut obj = obj.clone();
    let torch = match torch_types(py)? {
        Some(types) if obj.is_instance(types.tensor.bind(py))? => {
            if let Some(inp) = tensor_in_place(&obj, types)? {
                return Ok(inp);
            }
            let device: String = obj.getattr("device")?.getattr("type")?.extract()?;
            if device != "cpu" {
                return Err(shape_err(format!(
                    "{what} is a tensor on `{device}`; cellc runs on the CPU: pass `{what}.cpu()` ({expect})"
                )));
            }
            if obj.call_method0("is_complex")?.extract::<bool>()? {
                return Err(shape_err(format!(
                    "{what} holds complex values; cellc takes real ones ({expect})"
                )));
            }
            // Converted: to float32 (resolving a lazy negation), as a
            // contiguous NumPy array.
            let t = obj
                .call_method0("detach")?
                .call_method1("to", (types.float32.bind(py),))?
                .call_method0("resolve_neg")?
                .call_method0("contiguous")?;
            obj = t.call_method0("numpy")?;
            true
        }
        _ => false,
    };
    let np = PyModule::import(py, "numpy")?;
    // Complex values would lose their imaginary part in the conversion.
    if let Ok(kind) = obj.getattr("dtype").and_then(|d| d.getattr("kind")) {
        if kind.extract::<String>().is_ok_and(|k| k == "c") {
            return Err(shape_err(format!(
                "{what} holds complex values; cellc takes real ones ({expect})"
            )));
        }
    }
    let converted = np
        .call_method1("ascontiguousarray", (obj,))
        .and_then(|a| {
            let kind: String = a.getattr("dtype")?.getattr("kind")?.extract()?;
            if !matches!(kind.as_str(), "f" | "i" | "u" | "b") {
                return Err(shape_err(format!("holds values of NumPy kind `{kind}`")));
            }
            let no_copy = PyDict::new(py);
            no_copy.set_item("copy", false)?;
            a.call_method("astype", (np.getattr("float32")?,), Some(&no_copy))
        })
        .map_err(|e| shape_err(format!("{what} is not an array of numbers ({expect}): {e}")))?;
    COPIES.fetch_add(1, Ordering::Relaxed);
    let a = converted
        .cast::<PyArrayDyn<f32>>()
        .map_err(|_| InternalError::new_err("numpy.ascontiguousarray gave no float32 array"))?;
    let array = a
        .try_readonly()
        .map_err(|e| shape_err(format!("{what}: {e}")))?;
    Ok(Input {
        values: Values::Array(array),
        torch,
    })
}

/// `data` as an array of `shape`: a NumPy array, or a tensor sharing its
/// memory when `torch`.
fn output(py: Python<'_>, data: Vec<f32>, shape: &[usize], torch: bool) -> PyResult<Py<PyAny>> {
    let array = numpy::ndarray::ArrayD::from_shape_vec(numpy::ndarray::IxDyn(shape), data)
        .map_err(|e| InternalError::new_err(format!("an output of shape {shape:?}: {e}")))?;
    let shaped = numpy::IntoPyArray::into_pyarray(array, py);
    if torch {
        let types = torch_types(py)?
            .ok_or_else(|| InternalError::new_err("a tensor came in, yet torch is not imported"))?;
        return Ok(types.from_numpy.bind(py).call1((shaped,))?.unbind());
    }
    Ok(shaped.into_any().unbind())
}

fn shape_text(s: &[usize]) -> String {
    let parts: Vec<String> = s.iter().map(usize::to_string).collect();
    format!("[{}]", parts.join(", "))
}

/// Sizes from a Python dict (`{"X": 64, "H": 128}`).
fn dims_of(dims: Option<&Bound<'_, PyDict>>) -> PyResult<Vec<(String, u64)>> {
    let mut out = Vec::new();
    if let Some(d) = dims {
        for (k, v) in d.iter() {
            let name: String = k
                .extract()
                .map_err(|_| OptionsError::new_err("dims: every key is a size's name (a str)"))?;
            let value: i64 = v.extract().map_err(|_| {
                OptionsError::new_err(format!("dims: the size of `{name}` is not an integer"))
            })?;
            let value = u64::try_from(value).map_err(|_| {
                OptionsError::new_err(format!(
                    "dims: the size of `{name}` is {value}; sizes are at least 1"
                ))
            })?;
            out.push((name, value));
        }
    }
    Ok(out)
}

/// Weights from a dict of arrays or tensors (a `state_dict`).
fn weights_of(weights: &Bound<'_, PyAny>) -> PyResult<cellc::Weights> {
    let d = weights.cast::<PyDict>().map_err(|_| {
        WeightsError::new_err("weights: a dict of arrays (a state_dict, or name -> NumPy array)")
    })?;
    let mut w = cellc::Weights::new();
    for (k, v) in d.iter() {
        let name: String = k
            .extract()
            .map_err(|_| WeightsError::new_err("weights: every key is a tensor's name (a str)"))?;
        let a = input(&v, &format!("weights[{name:?}]"), "an array of floats")?;
        w.insert(&name, a.shape(), a.data()?.to_vec())
            .map_err(|e| err(e.into()))?;
    }
    Ok(w)
}

/// Kernel options from their Python spellings.
fn options(
    precision: Option<&str>,
    threads: Option<usize>,
    plan: Option<&str>,
    isa: Option<&str>,
    optimize: bool,
) -> PyResult<cellc::Options> {
    Ok(cellc::Options {
        optimize,
        threads,
        plan: plan
            .map(|p| {
                cellc::Variant::from_name(p).ok_or_else(|| {
                    OptionsError::new_err(format!(
                        "plan `{p}`: the plans are streaming, hoisted, gemm and gemm-hoisted"
                    ))
                })
            })
            .transpose()?,
        isa: isa
            .map(|i| {
                cellc::Isa::from_name(i).ok_or_else(|| {
                    OptionsError::new_err(format!(
                        "isa `{i}`: the ISAs are avx512, avx2, neon and scalar"
                    ))
                })
            })
            .transpose()?,
        precision: precision
            .map(|p| {
                cellc::ir::Precision::from_name(p).ok_or_else(|| {
                    OptionsError::new_err(format!(
                        "precision `{p}`: the precisions are f32, bf16 and int8"
                    ))
                })
            })
            .transpose()?,
    })
}

/// The options of a compile, as given (for pickling: unpickling compiles
/// again with them).
#[derive(Clone)]
struct Recipe {
    precision: Option<String>,
    threads: Option<usize>,
    plan: Option<String>,
    isa: Option<String>,
    optimize: bool,
}

impl Recipe {
    fn options(&self) -> PyResult<cellc::Options> {
        options(
            self.precision.as_deref(),
            self.threads,
            self.plan.as_deref(),
            self.isa.as_deref(),
            self.optimize,
        )
    }

    fn to_dict<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let d = PyDict::new(py);
        d.set_item("precision", self.precision.clone())?;
        d.set_item("threads", self.threads)?;
        d.set_item("plan", self.plan.clone())?;
        d.set_item("isa", self.isa.clone())?;
        d.set_item("optimize", self.optimize)?;
        Ok(d)
    }
}

/// Weights as a dict of NumPy arrays (for pickling).
fn weights_dict<'py>(py: Python<'py>, w: &cellc::Weights) -> PyResult<Bound<'py, PyDict>> {
    let d = PyDict::new(py);
    for name in w.names() {
        if let Some(t) = w.get(name) {
            d.set_item(name, output(py, t.data.clone(), &t.shape, false)?)?;
        }
    }
    Ok(d)
}

/// A cell: a `.rnn` file (or source text) parsed and checked, its sizes
/// bound.
///
/// `Cell(path, dims={"X": 64, "H": 128})`, or `Cell.from_source(text, dims)`.
/// Sizes not given come from the file's defaults, or, when compiled, from
/// the weights' shapes. A mistake in the source raises `SourceError` with
/// the file, line and column and a caret under the culprit.
#[pyclass(module = "cellc._cellc", name = "Cell", frozen)]
struct Cell {
    cell: cellc::Cell,
    name: String,
    source: String,
    dims: Vec<(String, u64)>,
}

impl Cell {
    fn build(name: &str, source: &str, dims: Vec<(String, u64)>) -> PyResult<Cell> {
        let mut cell = cellc::Cell::from_source(name, source).map_err(err)?;
        if !dims.is_empty() {
            let d: Vec<(&str, u64)> = dims.iter().map(|(n, v)| (n.as_str(), *v)).collect();
            cell = cell.dims(&d).map_err(err)?;
        }
        Ok(Cell {
            cell,
            name: name.to_string(),
            source: source.to_string(),
            dims,
        })
    }
}

#[pymethods]
impl Cell {
    #[new]
    #[pyo3(signature = (path, dims=None))]
    fn new(path: std::path::PathBuf, dims: Option<&Bound<'_, PyDict>>) -> PyResult<Cell> {
        let source = cellc::read_source(&path).map_err(err)?;
        Cell::build(&source.name, &source.text, dims_of(dims)?)
    }

    /// A cell from source text; `name` is used in messages (a file name).
    #[staticmethod]
    #[pyo3(signature = (text, dims=None, name="cell.rnn"))]
    fn from_source(text: &str, dims: Option<&Bound<'_, PyDict>>, name: &str) -> PyResult<Cell> {
        Cell::build(name, text, dims_of(dims)?)
    }

    /// The cell's name (`cell NAME`, or the file's stem).
    #[getter]
    fn name(&self) -> String {
        self.cell.name().to_string()
    }

    /// The sizes given (the others come from the file or the weights).
    #[getter]
    fn dims<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let d = PyDict::new(py);
        for (n, v) in &self.dims {
            d.set_item(n, v)?;
        }
        Ok(d)
    }

    /// The size variables' names, in declaration order.
    fn dim_names(&self) -> Vec<String> {
        self.cell.dim_names()
    }

    /// The IR as lowered (`optimized=True`: after the optimizer), as text.
    #[pyo3(signature = (optimized=false))]
    fn ir(&self, optimized: bool) -> PyResult<String> {
        let ir = if optimized {
            self.cell.optimized(&Default::default()).map_err(err)?.ir
        } else {
            self.cell.ir().map_err(err)?
        };
        Ok(cellc::ir::print::print(&ir))
    }

    /// Warnings found while checking, rendered.
    fn warnings(&self) -> String {
        cellc::diag::render_plain(self.cell.source(), self.cell.warnings())
    }

    /// JIT-compiles the cell with `weights` (a dict of arrays or tensors, a
    /// `state_dict`): a `Kernel`. `precision`: how the matrices are stored
    /// (`"f32"`, `"bf16"`, `"int8"`); `threads`: at most this many (`None`:
    /// the cost model's choice); `plan`: `"streaming"`, `"hoisted"`, `"gemm"`
    /// or `"gemm-hoisted"` (`None`: chosen per call).
    #[pyo3(signature = (weights, precision=None, threads=None, plan=None, isa=None, optimize=true))]
    #[allow(clippy::too_many_arguments)] // Python keywords
    fn compile(
        &self,
        py: Python<'_>,
        weights: &Bound<'_, PyAny>,
        precision: Option<String>,
        threads: Option<usize>,
        plan: Option<String>,
        isa: Option<String>,
        optimize: bool,
    ) -> PyResult<Kernel> {
        let w = weights_of(weights)?;
        let recipe = Recipe {
            precision,
            threads,
            plan,
            isa,
            optimize,
        };
        let opts = recipe.options()?;
        let kernel = py.detach(|| self.cell.compile(&w, &opts)).map_err(err)?;
        Ok(Kernel {
            kernel: Arc::new(kernel),
            cell: (self.name.clone(), self.source.clone(), self.dims.clone()),
            weights: Arc::new(w),
            recipe,
        })
    }

    fn __repr__(&self) -> String {
        let dims: Vec<String> = self.dims.iter().map(|(n, v)| format!("{n}={v}")).collect();
        format!("Cell({:?}, dims={{{}}})", self.cell.name(), dims.join(", "))
    }

    fn __reduce__<'py>(
        slf: &Bound<'py, Self>,
    ) -> PyResult<(Bound<'py, PyAny>, Bound<'py, PyTuple>)> {
        let py = slf.py();
        let me = slf.get();
        let f = slf.get_type().getattr("from_source")?;
        let args = PyTuple::new(
            py,
            [
                me.source.clone().into_pyobject(py)?.into_any(),
                slf.getattr("dims")?,
                me.name.clone().into_pyobject(py)?.into_any(),
            ],
        )?;
        Ok((f, args))
    }
}

/// A compiled cell: native code and packed weights. Shared by any number of
/// threads; each caller steps its own `State`.
#[pyclass(module = "cellc._cellc", name = "Kernel", frozen)]
struct Kernel {
    kernel: Arc<cellc::Kernel>,
    /// The cell's (name, source, dims), the weights and the options: what
    /// pickling keeps (unpickling compiles again).
    cell: (String, String, Vec<(String, u64)>),
    weights: Arc<cellc::Weights>,
    recipe: Recipe,
}

impl Kernel {
    /// The inputs a call gives: one array for a cell of one input, else a
    /// dict by name or a list in input order.
    fn inputs<'py>(
        &self,
        xs: &Bound<'py, PyAny>,
        what: &str,
        per_row: bool,
    ) -> PyResult<Vec<Input<'py>>> {
        let k = &self.kernel;
        let names = k.input_names();
        let axes = if per_row { "[B, len]" } else { "[T, B, len]" };
        let expect = |i: usize| format!("{axes} with len = {}", k.input_len(i));
        if let Ok(d) = xs.cast::<PyDict>() {
            for key in d.keys() {
                let key: String = key.extract()?;
                if !names.contains(&key) {
                    return Err(shape_err(format!(
                        "{what} names `{key}`, which is not an input of cell `{}`; its inputs are {}",
                        k.name(),
                        names.join(", ")
                    )));
                }
            }
            return names
                .iter()
                .enumerate()
                .map(|(i, n)| {
                    let v = d
                        .get_item(n)?
                        .ok_or_else(|| shape_err(format!("{what} has no `{n}` ({})", expect(i))))?;
                    input(&v, &format!("{what}[{n:?}]"), &expect(i))
                })
                .collect();
        }
        if names.len() == 1 {
            return Ok(vec![input(xs, what, &expect(0))?]);
        }
        let list = xs
            .cast::<PyList>()
            .map(|l| l.as_sequence().clone())
            .or_else(|_| xs.cast::<PyTuple>().map(|t| t.as_sequence().clone()));
        let Ok(seq) = list else {
            return Err(shape_err(format!(
                "cell `{}` has {} inputs ({}): give {what} as a dict by name or a list in that order",
                k.name(),
                names.len(),
                names.join(", ")
            )));
        };
        if seq.len()? != names.len() {
            return Err(shape_err(format!(
                "{what} has {} arrays; cell `{}` has {} inputs ({})",
                seq.len()?,
                k.name(),
                names.len(),
                names.join(", ")
            )));
        }
        (0..names.len())
            .map(|i| input(&seq.get_item(i)?, &format!("{what}[{i}]"), &expect(i)))
            .collect()
    }
}

#[pymethods]
impl Kernel {
    /// A state for `batch` rows, all zeros.
    fn new_state(&self, batch: usize) -> PyResult<State> {
        let state = self.kernel.new_state(batch).map_err(err)?;
        Ok(State {
            state,
            kernel: self.kernel.clone(),
            torch: false,
        })
    }

    /// One step: `x` is `[batch, len]` (one array for a cell of one input,
    /// else a dict by name or a list); the state advances in place. The GIL
    /// is released while it runs.
    fn step(
        &self,
        py: Python<'_>,
        x: &Bound<'_, PyAny>,
        mut state: PyRefMut<'_, State>,
    ) -> PyResult<()> {
        let inputs = self.inputs(x, "x", true)?;
        let batch = state.state.batch();
        for (i, a) in inputs.iter().enumerate() {
            let want = [batch, self.kernel.input_len(i)];
            if a.shape() != want {
                return Err(shape_err(format!(
                    "x{}: shape {}; the state is for {batch} rows, so [B, len] = {}",
                    if inputs.len() > 1 {
                        format!("[{i}]")
                    } else {
                        String::new()
                    },
                    shape_text(a.shape()),
                    shape_text(&want)
                )));
            }
        }
        state.torch = inputs.iter().any(|a| a.torch);
        let slices: Vec<&[f32]> = inputs.iter().map(Input::data).collect::<PyResult<_>>()?;
        let kernel = &self.kernel;
        let st = &mut state.state;
        py.detach(|| kernel.step_inputs(&slices, st)).map_err(err)
    }

    /// Output `name` (the only one by default) after the last step, `[batch,
    /// len]`, as the last step's input came (a tensor if it was one).
    #[pyo3(signature = (state, name=None))]
    fn output(
        &self,
        py: Python<'_>,
        state: PyRef<'_, State>,
        name: Option<&str>,
    ) -> PyResult<Py<PyAny>> {
        let names = self.kernel.output_names();
        let name = match name {
            Some(n) => n.to_string(),
            None if names.len() == 1 => names[0].clone(),
            None => {
                return Err(shape_err(format!(
                    "cell `{}` has {} outputs ({}): name the one you want",
                    self.kernel.name(),
                    names.len(),
                    names.join(", ")
                )))
            }
        };
        let values = self.kernel.output(&state.state, &name).map_err(err)?;
        let batch = state.state.batch();
        let len = values.len() / batch.max(1);
        output(py, values, &[batch, len], state.torch)
    }

    /// A sequence: `xs` is `[T, batch, len]` (one array, or a dict by name or
    /// a list for several inputs); returns each output `[T, batch, len]` (one
    /// array, or a dict by name when the cell has several), as the input
    /// came. The state advances by `T` steps. The GIL is released while it
    /// runs.
    fn run(
        &self,
        py: Python<'_>,
        xs: &Bound<'_, PyAny>,
        mut state: PyRefMut<'_, State>,
    ) -> PyResult<Py<PyAny>> {
        let inputs = self.inputs(xs, "xs", false)?;
        let batch = state.state.batch();
        let steps = inputs
            .first()
            .map_or(0, |a| a.shape().first().copied().unwrap_or(0));
        for (i, a) in inputs.iter().enumerate() {
            let want = [steps, batch, self.kernel.input_len(i)];
            if a.shape() != want {
                return Err(shape_err(format!(
                    "xs{}: shape {}; expected [T, B, len] = {} (the state is for {batch} rows)",
                    if inputs.len() > 1 {
                        format!("[{i}]")
                    } else {
                        String::new()
                    },
                    shape_text(a.shape()),
                    shape_text(&want)
                )));
            }
        }
        let torch = inputs.iter().any(|a| a.torch);
        state.torch = torch;
        let slices: Vec<&[f32]> = inputs.iter().map(Input::data).collect::<PyResult<_>>()?;
        let k = &self.kernel;
        let n_out = k.output_names().len();
        let mut outs: Vec<Vec<f32>> = (0..n_out)
            .map(|o| vec![0.0f32; steps * batch * k.output_len(o)])
            .collect();
        {
            let st = &mut state.state;
            let mut views: Vec<&mut [f32]> = outs.iter_mut().map(Vec::as_mut_slice).collect();
            py.detach(|| k.run_with(&slices, st, &mut views))
                .map_err(err)?;
        }
        let mut arrays = Vec::with_capacity(n_out);
        for (o, v) in outs.into_iter().enumerate() {
            arrays.push(output(py, v, &[steps, batch, k.output_len(o)], torch)?);
        }
        if n_out == 1 {
            return Ok(arrays.remove(0));
        }
        let d = PyDict::new(py);
        for (name, a) in k.output_names().iter().zip(arrays) {
            d.set_item(name, a)?;
        }
        Ok(d.into_any().unbind())
    }

    /// The cell's name.
    #[getter]
    fn name(&self) -> String {
        self.kernel.name().to_string()
    }

    /// The inputs' names, in declaration order.
    #[getter]
    fn input_names(&self) -> Vec<String> {
        self.kernel.input_names().to_vec()
    }

    /// The states' names, in declaration order.
    #[getter]
    fn state_names(&self) -> Vec<String> {
        self.kernel.state_names().to_vec()
    }

    /// The outputs' names, in declaration order.
    #[getter]
    fn output_names(&self) -> Vec<String> {
        self.kernel.output_names().to_vec()
    }

    /// Each input's length, by name.
    #[getter]
    fn input_lens(&self) -> Vec<(String, usize)> {
        let k = &self.kernel;
        (0..k.input_names().len())
            .map(|i| (k.input_names()[i].clone(), k.input_len(i)))
            .collect()
    }

    /// Each state's length, by name.
    #[getter]
    fn state_lens(&self) -> Vec<(String, usize)> {
        let k = &self.kernel;
        (0..k.state_names().len())
            .map(|i| (k.state_names()[i].clone(), k.state_len(i)))
            .collect()
    }

    /// Each output's length, by name.
    #[getter]
    fn output_lens(&self) -> Vec<(String, usize)> {
        let k = &self.kernel;
        (0..k.output_names().len())
            .map(|i| (k.output_names()[i].clone(), k.output_len(i)))
            .collect()
    }

    /// The plan and threads the cost model picks for `batch` rows and
    /// sequences of `seq` steps: `(plan, threads, predicted µs per step)`.
    fn choice(&self, batch: usize, seq: usize) -> (String, usize, f64) {
        let c = self.kernel.choice(batch, seq);
        (c.variant.name().to_string(), c.threads, c.predicted_us)
    }

    fn __repr__(&self) -> String {
        format!("Kernel({:?})", self.kernel.name())
    }

    fn __reduce__<'py>(
        slf: &Bound<'py, Self>,
    ) -> PyResult<(Bound<'py, PyAny>, Bound<'py, PyTuple>)> {
        let py = slf.py();
        let me = slf.get();
        let (name, source, dims) = &me.cell;
        let d = PyDict::new(py);
        for (n, v) in dims {
            d.set_item(n, v)?;
        }
        let f = PyModule::import(py, "cellc._cellc")?.getattr("_kernel")?;
        let args = PyTuple::new(
            py,
            [
                name.clone().into_pyobject(py)?.into_any(),
                source.clone().into_pyobject(py)?.into_any(),
                d.into_any(),
                weights_dict(py, &me.weights)?.into_any(),
                me.recipe.to_dict(py)?.into_any(),
            ],
        )?;
        Ok((f, args))
    }
}

/// Unpickles a kernel: compiles it again.
#[pyfunction]
fn _kernel(
    py: Python<'_>,
    name: &str,
    source: &str,
    dims: &Bound<'_, PyDict>,
    weights: &Bound<'_, PyAny>,
    options: &Bound<'_, PyDict>,
) -> PyResult<Kernel> {
    let cell = Cell::build(name, source, dims_of(Some(dims))?)?;
    let get = |k: &str| options.get_item(k).ok().flatten().filter(|v| !v.is_none());
    cell.compile(
        py,
        weights,
        get("precision").map(|v| v.extract()).transpose()?,
        get("threads").map(|v| v.extract()).transpose()?,
        get("plan").map(|v| v.extract()).transpose()?,
        get("isa").map(|v| v.extract()).transpose()?,
        get("optimize")
            .map(|v| v.extract())
            .transpose()?
            .unwrap_or(true),
    )
}

/// A kernel's state for one batch: each state's value per row. One caller's:
/// a thread that uses it while another does gets an error.
#[pyclass(module = "cellc._cellc", name = "State")]
struct State {
    state: cellc::State,
    kernel: Arc<cellc::Kernel>,
    /// The last input was a tensor: outputs go back as tensors.
    torch: bool,
}

#[pymethods]
impl State {
    /// The rows this state holds.
    #[getter]
    fn batch(&self) -> usize {
        self.state.batch()
    }

    /// Steps taken since the state was made.
    #[getter]
    fn steps(&self) -> u64 {
        self.state.steps()
    }

    /// The states' names.
    #[getter]
    fn names(&self) -> Vec<String> {
        self.kernel.state_names().to_vec()
    }

    /// State `name`'s value, `[batch, len]`.
    fn get(&self, py: Python<'_>, name: &str) -> PyResult<Py<PyAny>> {
        let v = self.state.get(name).map_err(err)?;
        let batch = self.state.batch();
        let len = v.len() / batch.max(1);
        output(py, v, &[batch, len], self.torch)
    }

    /// Sets state `name` to `value`, `[batch, len]`.
    fn set(&mut self, name: &str, value: &Bound<'_, PyAny>) -> PyResult<()> {
        let Some(s) = self.kernel.state_names().iter().position(|n| n == name) else {
            return Err(shape_err(format!(
                "no state named `{name}`; the states are {}",
                self.kernel.state_names().join(", ")
            )));
        };
        let want = [self.state.batch(), self.kernel.state_len(s)];
        let a = input(
            value,
            &format!("state `{name}`"),
            &format!("[B, len] = {}", shape_text(&want)),
        )?;
        if a.shape() != want {
            return Err(shape_err(format!(
                "state `{name}`: shape {}; expected [B, len] = {}",
                shape_text(a.shape()),
                shape_text(&want)
            )));
        }
        self.state.set(name, a.data()?).map_err(err)
    }

    fn __repr__(&self) -> String {
        format!(
            "State(kernel={:?}, batch={}, steps={})",
            self.kernel.name(),
            self.state.batch(),
            self.state.steps()
        )
    }
}

/// A network of a cell: layers, one direction or both, compiled from a
/// checkpoint (`Network.from_checkpoint`). The `cellc` package wraps it as a
/// PyTorch-shaped module (`cellc.from_torch`).
#[pyclass(module = "cellc._cellc", name = "Network", frozen)]
struct Network {
    net: Arc<cellc::network::CompiledNetwork>,
    cell: (String, String),
    weights: Arc<cellc::Weights>,
    recipe: Recipe,
}

#[pymethods]
impl Network {
    /// The network a checkpoint holds for a cell (its layers and directions
    /// read off PyTorch's names: `weight_ih_l1_reverse`), compiled.
    #[staticmethod]
    #[pyo3(signature = (source, weights, name="cell.rnn", precision=None, threads=None, plan=None, isa=None, optimize=true))]
    #[allow(clippy::too_many_arguments)] // Python keywords
    fn from_checkpoint(
        py: Python<'_>,
        source: &str,
        weights: &Bound<'_, PyAny>,
        name: &str,
        precision: Option<String>,
        threads: Option<usize>,
        plan: Option<String>,
        isa: Option<String>,
        optimize: bool,
    ) -> PyResult<Network> {
        let cell = cellc::Cell::from_source(name, source).map_err(err)?;
        let w = weights_of(weights)?;
        let recipe = Recipe {
            precision,
            threads,
            plan,
            isa,
            optimize,
        };
        let opts = recipe.options()?;
        let net = py
            .detach(|| {
                let net = cellc::network::Network::for_checkpoint(cell, &w)?;
                net.compile(&w, &opts)
            })
            .map_err(err)?;
        Ok(Network {
            net: Arc::new(net),
            cell: (name.to_string(), source.to_string()),
            weights: Arc::new(w),
            recipe,
        })
    }

    /// `(layers, bidirectional)`.
    #[getter]
    fn layout(&self) -> (usize, bool) {
        let l = self.net.layout();
        (l.layers, l.bidirectional)
    }

    /// The length of the first layer's input (`X`).
    #[getter]
    fn input_size(&self) -> usize {
        self.net.input_lens().first().copied().unwrap_or(0)
    }

    /// The length of one direction's output in the last layer.
    #[getter]
    fn output_size(&self) -> usize {
        self.net.output_lens().first().copied().unwrap_or(0)
    }

    /// The cell's states' names.
    #[getter]
    fn state_names(&self) -> Vec<String> {
        self.net.state_names().to_vec()
    }

    /// Each state's length per layer, `[layer][state]`.
    #[getter]
    fn state_lens(&self) -> Vec<Vec<usize>> {
        self.net.state_lens()
    }

    /// Runs the network over `x`, `[T, B, X]` (time-major; NumPy or a tensor).
    /// `lengths`: each row's length (`[B]` integers; rows past their length
    /// are not read, their outputs are zero, their states stop). `initial`: a
    /// dict of initial states by name, each `[D*L, B, len]`. Returns `(y,
    /// states)`: `y` `[T, B, D*len]`, and a dict of final states `[D*L, B,
    /// len]`, as the input came. The GIL is released while it runs.
    #[pyo3(signature = (x, lengths=None, initial=None))]
    fn run(
        &self,
        py: Python<'_>,
        x: &Bound<'_, PyAny>,
        lengths: Option<Vec<i64>>,
        initial: Option<&Bound<'_, PyDict>>,
    ) -> PyResult<(Py<PyAny>, Py<PyDict>)> {
        let net = &self.net;
        let in_len = self.input_size();
        let xa = input(x, "x", &format!("[T, B, X] with X = {in_len}"))?;
        let [steps, batch, len] = xa.shape()[..] else {
            return Err(shape_err(format!(
                "x: shape {}; expected [T, B, X] with X = {in_len}",
                shape_text(xa.shape())
            )));
        };
        if len != in_len {
            return Err(shape_err(format!(
                "x: shape {}; expected [T, B, X] with X = {in_len}",
                shape_text(xa.shape())
            )));
        }
        let lengths: Option<Vec<usize>> = lengths
            .map(|l| {
                l.iter()
                    .enumerate()
                    .map(|(b, &n)| {
                        usize::try_from(n).ok().filter(|&n| n <= steps).ok_or_else(|| {
                            shape_err(format!("lengths gives row {b} length {n}; lengths are 0 to T = {steps}"))
                        })
                    })
                    .collect::<PyResult<Vec<usize>>>()
            })
            .transpose()?;
        let layout = net.layout();
        let slots = layout.layers * layout.directions();
        let lens = net.state_lens();
        let mut inits: Vec<(String, Input<'_>)> = Vec::new();
        if let Some(d) = initial {
            for (k, v) in d.iter() {
                let name: String = k.extract()?;
                let Some(s) = net.state_names().iter().position(|n| *n == name) else {
                    return Err(shape_err(format!(
                        "initial names `{name}`, which is not a state; the states are {}",
                        net.state_names().join(", ")
                    )));
                };
                let want = [slots, batch, lens.first().map_or(0, |l| l[s])];
                let expect = format!("[D*L, B, len] = {}", shape_text(&want));
                let a = input(&v, &format!("initial[{name:?}]"), &expect)?;
                if a.shape() != want {
                    return Err(shape_err(format!(
                        "initial[{name:?}]: shape {}; expected {expect}",
                        shape_text(a.shape())
                    )));
                }
                inits.push((name, a));
            }
        }
        let init_slices: Vec<(String, &[f32])> = inits
            .iter()
            .map(|(n, a)| Ok((n.clone(), a.data()?)))
            .collect::<PyResult<_>>()?;
        let init_refs: Vec<(&str, &[f32])> =
            init_slices.iter().map(|(n, v)| (n.as_str(), *v)).collect();
        let data = xa.data()?;
        let out = py
            .detach(|| net.run(&[data], batch, lengths.as_deref(), &init_refs))
            .map_err(err)?;
        let torch = xa.torch;
        let out_len = self.output_size();
        let mut outputs = out.outputs;
        let y = output(py, outputs.swap_remove(0), &[steps, batch, out_len], torch)?;
        let states = PyDict::new(py);
        for (s, (name, values)) in net.state_names().iter().zip(out.states).enumerate() {
            let len = lens.first().map_or(0, |l| l[s]);
            states.set_item(name, output(py, values, &[slots, batch, len], torch)?)?;
        }
        Ok((y, states.unbind()))
    }

    fn __reduce__<'py>(
        slf: &Bound<'py, Self>,
    ) -> PyResult<(Bound<'py, PyAny>, Bound<'py, PyTuple>)> {
        let py = slf.py();
        let me = slf.get();
        let f = PyModule::import(py, "cellc._cellc")?.getattr("_network")?;
        let args = PyTuple::new(
            py,
            [
                me.cell.1.clone().into_pyobject(py)?.into_any(),
                weights_dict(py, &me.weights)?.into_any(),
                me.cell.0.clone().into_pyobject(py)?.into_any(),
                me.recipe.to_dict(py)?.into_any(),
            ],
        )?;
        Ok((f, args))
    }
}

/// Unpickles a network: compiles it again.
#[pyfunction]
fn _network(
    py: Python<'_>,
    source: &str,
    weights: &Bound<'_, PyAny>,
    name: &str,
    options: &Bound<'_, PyDict>,
) -> PyResult<Network> {
    let get = |k: &str| options.get_item(k).ok().flatten().filter(|v| !v.is_none());
    Network::from_checkpoint(
        py,
        source,
        weights,
        name,
        get("precision").map(|v| v.extract()).transpose()?,
        get("threads").map(|v| v.extract()).transpose()?,
        get("plan").map(|v| v.extract()).transpose()?,
        get("isa").map(|v| v.extract()).transpose()?,
        get("optimize")
            .map(|v| v.extract())
            .transpose()?
            .unwrap_or(true),
    )
}

/// The cell of a PyTorch recurrent module: `(file name, source, states)` for
/// class `LSTM`, `GRU` or `RNN` (with its `proj_size` and `nonlinearity`).
#[pyfunction]
#[pyo3(signature = (class_name, proj_size=0, nonlinearity="tanh"))]
fn torch_cell(
    class_name: &str,
    proj_size: usize,
    nonlinearity: &str,
) -> PyResult<(String, String, Vec<String>)> {
    let m = cellc::torch::Module::of(class_name, proj_size, nonlinearity).ok_or_else(|| {
        OptionsError::new_err(format!(
            "cellc runs nn.LSTM, nn.GRU and nn.RNN (tanh or relu), not `{class_name}` \
             (nonlinearity `{nonlinearity}`); write the cell as a .rnn file for others"
        ))
    })?;
    let (name, source) = m.cell();
    Ok((
        name.to_string(),
        source.to_string(),
        m.states().iter().map(|s| s.to_string()).collect(),
    ))
}

/// An ONNX model with an LSTM or GRU stack, imported.
#[pyclass(module = "cellc._cellc", name = "OnnxModel", frozen)]
struct OnnxModel {
    imported: Arc<cellc::onnx::Imported>,
    recipe: Recipe,
}

#[pymethods]
impl OnnxModel {
    /// Reads the model at `path` (with its external data beside it).
    #[new]
    #[pyo3(signature = (path, precision=None, threads=None, isa=None))]
    fn new(
        path: std::path::PathBuf,
        precision: Option<String>,
        threads: Option<usize>,
        isa: Option<String>,
    ) -> PyResult<OnnxModel> {
        if let Err(e) = std::fs::metadata(&path) {
            return Err(FileError::new_err(format!("{}: {e}", path.display())));
        }
        let imported = cellc::onnx::import_file(&path)
            .map_err(|e| ModelError::new_err(format!("{}: {}", path.display(), e.0)))?;
        let recipe = Recipe {
            precision,
            threads,
            plan: None,
            isa,
            optimize: true,
        };
        recipe.options()?;
        Ok(OnnxModel {
            imported: Arc::new(imported),
            recipe,
        })
    }

    /// The graph inputs the model takes: the sequence, the rows' lengths if
    /// it takes them, the initial states that are graph inputs.
    #[getter]
    fn input_names(&self) -> Vec<String> {
        let i = &self.imported;
        let mut v = vec![i.input_name.clone()];
        v.extend(i.lengths_input.iter().cloned());
        v.extend(i.state_inputs.iter().map(|(_, g)| g.clone()));
        v
    }

    /// Whether the model reads and writes `[B, T, ...]`.
    #[getter]
    fn batch_first(&self) -> bool {
        self.imported.batch_first
    }

    /// The states (`h`, and `c` for an LSTM).
    #[getter]
    fn state_names(&self) -> Vec<String> {
        if self.imported.cell_name == "onnx_lstm.rnn" {
            vec!["h".into(), "c".into()]
        } else {
            vec!["h".into()]
        }
    }

    /// Runs the model on `inputs` (a dict by the model's input names, or
    /// cellc's: `x`, `lengths`, `h`, `c`), as ONNX Runtime runs it. Returns a
    /// dict: `y` and each final state, as the sequence came.
    fn run(&self, py: Python<'_>, inputs: &Bound<'_, PyDict>) -> PyResult<Py<PyDict>> {
        let mut w = cellc::Weights::new();
        let mut torch = false;
        for (k, v) in inputs.iter() {
            let name: String = k.extract()?;
            let is_lengths =
                Some(&name) == self.imported.lengths_input.as_ref() || name == cellc::run::LENGTHS;
            if is_lengths {
                let np = PyModule::import(py, "numpy")?;
                let a = if is_tensor(&v)? {
                    v.call_method0("cpu")?.call_method0("numpy")?
                } else {
                    v
                };
                let ints = np.call_method1("asarray", (a, np.getattr("int64")?))?;
                let shape: Vec<usize> = ints.getattr("shape")?.extract()?;
                let values: Vec<i64> = ints
                    .call_method0("ravel")?
                    .call_method0("tolist")?
                    .extract()?;
                w.insert_integers(&name, &shape, values)
                    .map_err(|e| err(e.into()))?;
                continue;
            }
            let a = input(&v, &format!("inputs[{name:?}]"), "an array of floats")?;
            torch |= a.torch;
            w.insert(&name, a.shape(), a.data()?.to_vec())
                .map_err(|e| err(e.into()))?;
        }
        let mut opts = self.recipe.options()?;
        // A quantized model runs in its own precision unless told (as `cellc run`).
        opts.precision = opts.precision.or(self.imported.precision);
        let imported = &self.imported;
        let out = py
            .detach(|| cellc::run::run_onnx(imported, &w, &opts))
            .map_err(err)?;
        let d = PyDict::new(py);
        for name in out.names() {
            if let Some(t) = out.get(name) {
                d.set_item(name, output(py, t.data.clone(), &t.shape, torch)?)?;
            }
        }
        Ok(d.unbind())
    }

    /// Pickles the imported model (its cell, weights, stored initial states
    /// and how its graph inputs map), not the file: it unpickles where the
    /// file is not.
    fn __reduce__<'py>(
        slf: &Bound<'py, Self>,
    ) -> PyResult<(Bound<'py, PyAny>, Bound<'py, PyTuple>)> {
        let py = slf.py();
        let i = &slf.get().imported;
        let parts = PyDict::new(py);
        parts.set_item("cell_name", i.cell_name)?;
        parts.set_item("precision", i.precision.map(|p| p.name()))?;
        parts.set_item("weights", weights_dict(py, &i.weights)?)?;
        parts.set_item("initial", weights_dict(py, &i.initial)?)?;
        parts.set_item("hidden_size", i.hidden_size)?;
        parts.set_item("input_size", i.input_size)?;
        parts.set_item("layers", i.layers)?;
        parts.set_item("bidirectional", i.bidirectional)?;
        parts.set_item("lengths_input", i.lengths_input.clone())?;
        parts.set_item("input_name", i.input_name.clone())?;
        parts.set_item("state_inputs", i.state_inputs.clone())?;
        parts.set_item("batch_first", i.batch_first)?;
        parts.set_item("fixed_sizes", i.fixed_sizes)?;
        let f = PyModule::import(py, "cellc._cellc")?.getattr("_onnx_model")?;
        let args = PyTuple::new(
            py,
            [parts.into_any(), slf.get().recipe.to_dict(py)?.into_any()],
        )?;
        Ok((f, args))
    }
}

/// Unpickles an ONNX model from its parts (see `OnnxModel.__reduce__`).
#[pyfunction]
fn _onnx_model(parts: &Bound<'_, PyDict>, options: &Bound<'_, PyDict>) -> PyResult<OnnxModel> {
    fn item<'py, T: FromPyObjectOwned<'py>>(d: &Bound<'py, PyDict>, k: &str) -> PyResult<T> {
        d.get_item(k)?
            .ok_or_else(|| Error::new_err(format!("a pickled OnnxModel without `{k}`")))?
            .extract()
            .map_err(Into::into)
    }
    let cell_name: String = item(parts, "cell_name")?;
    let (cell_name, cell_source) = cellc::onnx::cell_named(&cell_name)
        .ok_or_else(|| Error::new_err(format!("a pickled OnnxModel of cell `{cell_name}`")))?;
    let precision: Option<String> = item(parts, "precision")?;
    let precision = precision
        .map(|p| {
            cellc::ir::Precision::from_name(&p)
                .ok_or_else(|| Error::new_err(format!("a pickled OnnxModel in `{p}`")))
        })
        .transpose()?;
    let imported = cellc::onnx::Imported {
        cell_name,
        cell_source,
        precision,
        weights: weights_of(&item::<Bound<'_, PyAny>>(parts, "weights")?)?,
        initial: weights_of(&item::<Bound<'_, PyAny>>(parts, "initial")?)?,
        hidden_size: item(parts, "hidden_size")?,
        input_size: item(parts, "input_size")?,
        layers: item(parts, "layers")?,
        bidirectional: item(parts, "bidirectional")?,
        lengths_input: item(parts, "lengths_input")?,
        input_name: item(parts, "input_name")?,
        state_inputs: item(parts, "state_inputs")?,
        batch_first: item(parts, "batch_first")?,
        fixed_sizes: item(parts, "fixed_sizes")?,
    };
    let get = |k: &str| options.get_item(k).ok().flatten().filter(|v| !v.is_none());
    let recipe = Recipe {
        precision: get("precision").map(|v| v.extract()).transpose()?,
        threads: get("threads").map(|v| v.extract()).transpose()?,
        plan: None,
        isa: get("isa").map(|v| v.extract()).transpose()?,
        optimize: true,
    };
    recipe.options()?;
    Ok(OnnxModel {
        imported: Arc::new(imported),
        recipe,
    })
}

/// The most threads `threads=` may ask for here.
#[pyfunction]
fn max_threads() -> usize {
    cellc::max_threads()
}

#[pymodule]
fn _cellc(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = m.py();
    m.add_class::<Cell>()?;
    m.add_class::<Kernel>()?;
    m.add_class::<State>()?;
    m.add_class::<Network>()?;
    m.add_class::<OnnxModel>()?;
    m.add_function(wrap_pyfunction!(copies, m)?)?;
    m.add_function(wrap_pyfunction!(torch_cell, m)?)?;
    m.add_function(wrap_pyfunction!(max_threads, m)?)?;
    m.add_function(wrap_pyfunction!(_kernel, m)?)?;
    m.add_function(wrap_pyfunction!(_network, m)?)?;
    m.add_function(wrap_pyfunction!(_onnx_model, m)?)?;
    m.add("Error", py.get_type::<Error>())?;
    m.add("SourceError", py.get_type::<SourceError>())?;
    m.add("FileError", py.get_type::<FileError>())?;
    m.add("WeightsError", py.get_type::<WeightsError>())?;
    m.add("ModelError", py.get_type::<ModelError>())?;
    m.add("ShapeError", py.get_type::<ShapeError>())?;
    m.add("TooLargeError", py.get_type::<TooLargeError>())?;
    m.add("OptionsError", py.get_type::<OptionsError>())?;
    m.add("InternalError", py.get_type::<InternalError>())?;
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    Ok(())
}
