//! `Cell`: a `.rnn` source parsed and checked, its sizes bound.

use std::sync::Arc;

use pyo3::prelude::*;
use pyo3::types::{PyDict, PyTuple};

use crate::*;

/// A cell: a `.rnn` file (or source text) parsed and checked, its sizes
/// bound.
///
/// `Cell(path, dims={"X": 64, "H": 128})`, or `Cell.from_source(text, dims)`.
/// Sizes not given come from the file's defaults, or, when compiled, from
/// the weights' shapes. A mistake in the source raises `SourceError` with
/// the file, line and column and a caret under the culprit.
#[pyclass(module = "cellc._cellc", name = "Cell", frozen)]
pub(crate) struct Cell {
    pub(crate) cell: cellc::Cell,
    pub(crate) name: String,
    pub(crate) source: String,
    pub(crate) dims: Vec<(String, u64)>,
}

impl Cell {
    pub(crate) fn build(name: &str, source: &str, dims: Vec<(String, u64)>) -> PyResult<Cell> {
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
    pub(crate) fn new(
        path: std::path::PathBuf,
        dims: Option<&Bound<'_, PyDict>>,
    ) -> PyResult<Cell> {
        let source = cellc::read_source(&path).map_err(err)?;
        Cell::build(&source.name, &source.text, dims_of(dims)?)
    }

    /// A cell from source text; `name` is used in messages (a file name).
    #[staticmethod]
    #[pyo3(signature = (text, dims=None, name="cell.rnn"))]
    pub(crate) fn from_source(
        text: &str,
        dims: Option<&Bound<'_, PyDict>>,
        name: &str,
    ) -> PyResult<Cell> {
        Cell::build(name, text, dims_of(dims)?)
    }

    /// The cell's name (`cell NAME`, or the file's stem).
    #[getter]
    pub(crate) fn name(&self) -> String {
        self.cell.name().to_string()
    }

    /// The sizes given (the others come from the file or the weights).
    #[getter]
    pub(crate) fn dims<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let d = PyDict::new(py);
        for (n, v) in &self.dims {
            d.set_item(n, v)?;
        }
        Ok(d)
    }

    /// The size variables' names, in declaration order.
    pub(crate) fn dim_names(&self) -> Vec<String> {
        self.cell.dim_names()
    }

    /// The IR as lowered (`optimized=True`: after the optimizer), as text.
    #[pyo3(signature = (optimized=false))]
    pub(crate) fn ir(&self, optimized: bool) -> PyResult<String> {
        let ir = if optimized {
            self.cell.optimized(&Default::default()).map_err(err)?.ir
        } else {
            self.cell.ir().map_err(err)?
        };
        Ok(cellc::ir::print::print(&ir))
    }

    /// Each parameter's values read from `weights` (a dict of arrays or
    /// tensors, a `state_dict`) as the cell's bindings read them, in the
    /// cell's parameter order, shaped as the parameters are (a
    /// block-circulant matrix as its blocks' vectors, `[R/k, C/k, k]`, as
    /// stored and trained): a checkpoint's weights (or gradients) in the
    /// cell's terms.
    pub(crate) fn params_of(
        &self,
        py: Python<'_>,
        weights: &Bound<'_, PyAny>,
    ) -> PyResult<Vec<Py<PyAny>>> {
        let w = weights_of(weights)?;
        let ir = self.cell.ir().map_err(err)?;
        let values = w.resolve_stored(&ir).map_err(|e| err(e.into()))?;
        (values.into_iter().zip(&ir.params))
            .map(|(v, p)| {
                let shape = match p.ty {
                    cellc::ir::Type::Matrix(r, c) => p.structure.stored_shape(r, c),
                    cellc::ir::Type::Vector(n) => vec![n],
                    cellc::ir::Type::Scalar => vec![1],
                };
                output(py, v, &shape, false)
            })
            .collect()
    }

    /// Warnings found while checking, rendered.
    pub(crate) fn warnings(&self) -> String {
        cellc::diag::render_plain(self.cell.source(), self.cell.warnings())
    }

    /// JIT-compiles the cell with `weights` (a dict of arrays or tensors, a
    /// `state_dict`): a `Kernel`. `precision`: how the matrices are stored
    /// (`"f32"`, `"bf16"`, `"int8"`); `threads`: at most this many (`None`:
    /// the cost model's choice); `plan`: `"streaming"`, `"hoisted"`, `"gemm"`
    /// or `"gemm-hoisted"` (`None`: chosen per call); `compute`: `"f32"`,
    /// `"bf16"` (bf16 operands, float32 sums) or `"int8"` (int8 weights,
    /// activations quantized per batch row, integer sums: `cellc::Compute`).
    #[pyo3(signature = (weights, precision=None, threads=None, plan=None, isa=None, optimize=true, compute=None))]
    #[allow(clippy::too_many_arguments)] // Python keywords
    pub(crate) fn compile(
        &self,
        py: Python<'_>,
        weights: &Bound<'_, PyAny>,
        precision: Option<String>,
        threads: Option<usize>,
        plan: Option<String>,
        isa: Option<String>,
        optimize: bool,
        compute: Option<String>,
    ) -> PyResult<Kernel> {
        let w = weights_of(weights)?;
        let recipe = Recipe {
            precision,
            threads,
            plan,
            isa,
            optimize,
            compute,
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

    pub(crate) fn __repr__(&self) -> String {
        let dims: Vec<String> = self.dims.iter().map(|(n, v)| format!("{n}={v}")).collect();
        format!("Cell({:?}, dims={{{}}})", self.cell.name(), dims.join(", "))
    }

    pub(crate) fn __reduce__<'py>(
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
