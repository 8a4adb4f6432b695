//! `Network`: a cell's layers and directions, compiled from a checkpoint
//! (what `cellc.from_torch` wraps), and the cells of PyTorch's modules.

use std::sync::Arc;

use pyo3::prelude::*;
use pyo3::types::{PyDict, PyTuple};

use crate::*;

/// A network of a cell: layers, one direction or both, compiled from a
/// checkpoint (`Network.from_checkpoint`). The `cellc` package wraps it as a
/// PyTorch-shaped module (`cellc.from_torch`).
#[pyclass(module = "cellc._cellc", name = "Network", frozen)]
pub(crate) struct Network {
    pub(crate) net: Arc<cellc::network::CompiledNetwork>,
    pub(crate) cell: (String, String),
    pub(crate) weights: Arc<cellc::Weights>,
    pub(crate) recipe: Recipe,
}

#[pymethods]
impl Network {
    /// The network a checkpoint holds for a cell (its layers and directions
    /// read off PyTorch's names: `weight_ih_l1_reverse`), compiled.
    #[staticmethod]
    #[pyo3(signature = (source, weights, name="cell.rnn", precision=None, threads=None, plan=None, isa=None, optimize=true, compute=None))]
    #[allow(clippy::too_many_arguments)] // Python keywords
    pub(crate) fn from_checkpoint(
        py: Python<'_>,
        source: &str,
        weights: &Bound<'_, PyAny>,
        name: &str,
        precision: Option<String>,
        threads: Option<usize>,
        plan: Option<String>,
        isa: Option<String>,
        optimize: bool,
        compute: Option<String>,
    ) -> PyResult<Network> {
        let cell = cellc::Cell::from_source(name, source).map_err(err)?;
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
    pub(crate) fn layout(&self) -> (usize, bool) {
        let l = self.net.layout();
        (l.layers, l.bidirectional)
    }

    /// The length of the first layer's input (`X`).
    #[getter]
    pub(crate) fn input_size(&self) -> usize {
        self.net.input_lens().first().copied().unwrap_or(0)
    }

    /// The length of one direction's output in the last layer.
    #[getter]
    pub(crate) fn output_size(&self) -> usize {
        self.net.output_lens().first().copied().unwrap_or(0)
    }

    /// The cell's states' names.
    #[getter]
    pub(crate) fn state_names(&self) -> Vec<String> {
        self.net.state_names().to_vec()
    }

    /// Each state's length per layer, `[layer][state]`.
    #[getter]
    pub(crate) fn state_lens(&self) -> Vec<Vec<usize>> {
        self.net.state_lens()
    }

    /// Runs the network over `x`, `[T, B, X]` (time-major; NumPy or a tensor).
    /// `lengths`: each row's length (`[B]` integers; rows past their length
    /// are not read, their outputs are zero, their states stop). `initial`: a
    /// dict of initial states by name, each `[D*L, B, len]`. Returns `(y,
    /// states)`: `y` `[T, B, D*len]`, and a dict of final states `[D*L, B,
    /// len]`, as the input came. The GIL is released while it runs.
    #[pyo3(signature = (x, lengths=None, initial=None))]
    pub(crate) fn run(
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

    pub(crate) fn __reduce__<'py>(
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
pub(crate) fn _network(
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
        get("compute").map(|v| v.extract()).transpose()?,
    )
}

/// The cell of a PyTorch recurrent module: `(file name, source, states)` for
/// class `LSTM`, `GRU` or `RNN` (with its `proj_size` and `nonlinearity`).
#[pyfunction]
#[pyo3(signature = (class_name, proj_size=0, nonlinearity="tanh"))]
pub(crate) fn torch_cell(
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
