//! `OnnxModel`: an ONNX model's recurrent stack, imported and compiled.

use std::sync::Arc;

use pyo3::prelude::*;
use pyo3::types::{PyDict, PyTuple};

use crate::*;

/// An ONNX model with an LSTM or GRU stack, imported.
#[pyclass(module = "cellc._cellc", name = "OnnxModel", frozen)]
pub(crate) struct OnnxModel {
    pub(crate) imported: Arc<cellc::onnx::Imported>,
    pub(crate) recipe: Recipe,
}

#[pymethods]
impl OnnxModel {
    /// Reads the model at `path` (with its external data beside it).
    #[new]
    #[pyo3(signature = (path, precision=None, threads=None, isa=None))]
    pub(crate) fn new(
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
            compute: None,
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
    pub(crate) fn input_names(&self) -> Vec<String> {
        let i = &self.imported;
        let mut v = vec![i.input_name.clone()];
        v.extend(i.lengths_input.iter().cloned());
        v.extend(i.state_inputs.iter().map(|(_, g)| g.clone()));
        v
    }

    /// Whether the model reads and writes `[B, T, ...]`.
    #[getter]
    pub(crate) fn batch_first(&self) -> bool {
        self.imported.batch_first
    }

    /// The states (`h`, and `c` for an LSTM).
    #[getter]
    pub(crate) fn state_names(&self) -> Vec<String> {
        if self.imported.cell_name == "onnx_lstm.rnn" {
            vec!["h".into(), "c".into()]
        } else {
            vec!["h".into()]
        }
    }

    /// Runs the model on `inputs` (a dict by the model's input names, or
    /// cellc's: `x`, `lengths`, `h`, `c`), as ONNX Runtime runs it. Returns a
    /// dict: `y` and each final state, as the sequence came.
    pub(crate) fn run(&self, py: Python<'_>, inputs: &Bound<'_, PyDict>) -> PyResult<Py<PyDict>> {
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
    pub(crate) fn __reduce__<'py>(
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
pub(crate) fn _onnx_model(
    parts: &Bound<'_, PyDict>,
    options: &Bound<'_, PyDict>,
) -> PyResult<OnnxModel> {
    pub(crate) fn item<'py, T: FromPyObjectOwned<'py>>(
        d: &Bound<'py, PyDict>,
        k: &str,
    ) -> PyResult<T> {
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
        compute: None,
    };
    recipe.options()?;
    Ok(OnnxModel {
        imported: Arc::new(imported),
        recipe,
    })
}
