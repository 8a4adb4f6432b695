//! Arrays in and out: NumPy arrays and PyTorch CPU tensors read in place
//! when they can be, converted once (and counted) when not, refused with the
//! argument's name and expected shape when they cannot; outputs in the
//! caller's kind.

use std::sync::atomic::{AtomicU64, Ordering};

use numpy::{PyArrayDyn, PyArrayMethods, PyReadonlyArrayDyn, PyUntypedArrayMethods};
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::types::PyDict;

use crate::*;

/// Inputs converted rather than read in place, since the module was loaded.
pub(crate) static COPIES: AtomicU64 = AtomicU64::new(0);

/// How many array arguments were converted (copied) rather than read in
/// place, since the module was loaded: a float32 C-contiguous array adds
/// nothing. (For tests that check that the fast path is taken.)
#[pyfunction]
pub(crate) fn copies() -> u64 {
    COPIES.load(Ordering::Relaxed)
}

/// An array argument, read in place or converted once, and whether it came
/// as a PyTorch tensor (outputs then go back as tensors).
pub(crate) struct Input<'py> {
    pub(crate) values: Values<'py>,
    pub(crate) torch: bool,
}

/// Where an argument's float32 values are.
pub(crate) enum Values<'py> {
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
    pub(crate) fn shape(&self) -> &[usize] {
        match &self.values {
            Values::Array(a) => a.shape(),
            Values::Tensor { shape, .. } => shape,
        }
    }

    pub(crate) fn data(&self) -> PyResult<&[f32]> {
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
pub(crate) struct TorchTypes {
    pub(crate) tensor: Py<PyAny>,
    pub(crate) float32: Py<PyAny>,
    pub(crate) from_numpy: Py<PyAny>,
}

pub(crate) static TORCH: pyo3::sync::PyOnceLock<TorchTypes> = pyo3::sync::PyOnceLock::new();

pub(crate) fn torch_types(py: Python<'_>) -> PyResult<Option<&TorchTypes>> {
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

pub(crate) fn is_tensor(obj: &Bound<'_, PyAny>) -> PyResult<bool> {
    match torch_types(obj.py())? {
        Some(t) => obj.is_instance(t.tensor.bind(obj.py())),
        None => Ok(false),
    }
}

/// A tensor's values in place, if it is float32, on the CPU, contiguous,
/// not lazily negated and aligned (checked, in that order, by attributes
/// that cost tens of nanoseconds: the tensor's own memory, without going
/// through `Tensor.numpy()`).
pub(crate) fn tensor_in_place<'py>(
    t: &Bound<'py, PyAny>,
    types: &TorchTypes,
) -> PyResult<Option<Input<'py>>> {
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
pub(crate) fn input<'py>(
    obj: &Bound<'py, PyAny>,
    what: &str,
    expect: &str,
) -> PyResult<Input<'py>> {
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
pub(crate) fn output(
    py: Python<'_>,
    data: Vec<f32>,
    shape: &[usize],
    torch: bool,
) -> PyResult<Py<PyAny>> {
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

pub(crate) fn shape_text(s: &[usize]) -> String {
    let parts: Vec<String> = s.iter().map(usize::to_string).collect();
    format!("[{}]", parts.join(", "))
}
