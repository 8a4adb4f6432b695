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

use pyo3::prelude::*;

mod arrays;
mod cell;
mod errors;
mod kernel;
mod network;
mod onnx;
mod recipe;
mod train;

pub(crate) use arrays::*;
pub(crate) use cell::*;
pub(crate) use errors::*;
pub(crate) use kernel::*;
pub(crate) use network::*;
pub(crate) use onnx::*;
pub(crate) use recipe::*;
pub(crate) use train::*;

/// The most threads `threads=` may ask for here.
#[pyfunction]
pub(crate) fn max_threads() -> usize {
    cellc::max_threads()
}

#[pymodule]
pub(crate) fn _cellc(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = m.py();
    m.add_class::<Cell>()?;
    m.add_class::<Kernel>()?;
    m.add_class::<State>()?;
    m.add_class::<Network>()?;
    m.add_class::<OnnxModel>()?;
    m.add_class::<Trainer>()?;
    m.add_class::<Tape>()?;
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
