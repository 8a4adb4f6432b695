//! `Kernel` (a compiled cell, shared by threads) and `State` (one caller's
//! values for one batch).

use std::sync::Arc;

use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList, PyTuple};

use crate::*;

/// A compiled cell: native code and packed weights. Shared by any number of
/// threads; each caller steps its own `State`.
#[pyclass(module = "cellc._cellc", name = "Kernel", frozen)]
pub(crate) struct Kernel {
    pub(crate) kernel: Arc<cellc::Kernel>,
    /// The cell's (name, source, dims), the weights and the options: what
    /// pickling keeps (unpickling compiles again).
    pub(crate) cell: (String, String, Vec<(String, u64)>),
    pub(crate) weights: Arc<cellc::Weights>,
    pub(crate) recipe: Recipe,
}

/// Each input has the shape `want(i)`; else an error naming it (`what`,
/// indexed when there are several) and its shape, then `expected(want)`.
fn check_shapes(
    inputs: &[Input<'_>],
    what: &str,
    want: impl Fn(usize) -> Vec<usize>,
    expected: impl Fn(&str) -> String,
) -> PyResult<()> {
    for (i, a) in inputs.iter().enumerate() {
        let want = want(i);
        if a.shape() != want.as_slice() {
            let index = if inputs.len() > 1 {
                format!("[{i}]")
            } else {
                String::new()
            };
            return Err(shape_err(format!(
                "{what}{index}: shape {}; {}",
                shape_text(a.shape()),
                expected(&shape_text(&want))
            )));
        }
    }
    Ok(())
}

impl Kernel {
    /// The inputs a call gives: one array for a cell of one input, else a
    /// dict by name or a list in input order.
    pub(crate) fn inputs<'py>(
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
    pub(crate) fn new_state(&self, batch: usize) -> PyResult<State> {
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
    pub(crate) fn step(
        &self,
        py: Python<'_>,
        x: &Bound<'_, PyAny>,
        mut state: PyRefMut<'_, State>,
    ) -> PyResult<()> {
        let inputs = self.inputs(x, "x", true)?;
        let batch = state.state.batch();
        check_shapes(
            &inputs,
            "x",
            |i| vec![batch, self.kernel.input_len(i)],
            |want| format!("the state is for {batch} rows, so [B, len] = {want}"),
        )?;
        state.torch = inputs.iter().any(|a| a.torch);
        let slices: Vec<&[f32]> = inputs.iter().map(Input::data).collect::<PyResult<_>>()?;
        let kernel = &self.kernel;
        let st = &mut state.state;
        py.detach(|| kernel.step_inputs(&slices, st)).map_err(err)
    }

    /// Output `name` (the only one by default) after the last step, `[batch,
    /// len]`, as the last step's input came (a tensor if it was one).
    #[pyo3(signature = (state, name=None))]
    pub(crate) fn output(
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
    pub(crate) fn run(
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
        check_shapes(
            &inputs,
            "xs",
            |i| vec![steps, batch, self.kernel.input_len(i)],
            |want| format!("expected [T, B, len] = {want} (the state is for {batch} rows)"),
        )?;
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
    pub(crate) fn name(&self) -> String {
        self.kernel.name().to_string()
    }

    /// The inputs' names, in declaration order.
    #[getter]
    pub(crate) fn input_names(&self) -> Vec<String> {
        self.kernel.input_names().to_vec()
    }

    /// The states' names, in declaration order.
    #[getter]
    pub(crate) fn state_names(&self) -> Vec<String> {
        self.kernel.state_names().to_vec()
    }

    /// The outputs' names, in declaration order.
    #[getter]
    pub(crate) fn output_names(&self) -> Vec<String> {
        self.kernel.output_names().to_vec()
    }

    /// Each input's length, by name.
    #[getter]
    pub(crate) fn input_lens(&self) -> Vec<(String, usize)> {
        let k = &self.kernel;
        named_lens(k.input_names(), |i| k.input_len(i))
    }

    /// Each state's length, by name.
    #[getter]
    pub(crate) fn state_lens(&self) -> Vec<(String, usize)> {
        let k = &self.kernel;
        named_lens(k.state_names(), |i| k.state_len(i))
    }

    /// Each output's length, by name.
    #[getter]
    pub(crate) fn output_lens(&self) -> Vec<(String, usize)> {
        let k = &self.kernel;
        named_lens(k.output_names(), |i| k.output_len(i))
    }

    /// The plan and threads the cost model picks for `batch` rows and
    /// sequences of `seq` steps: `(plan, threads, predicted µs per step)`.
    pub(crate) fn choice(&self, batch: usize, seq: usize) -> (String, usize, f64) {
        let c = self.kernel.choice(batch, seq);
        (c.variant.name().to_string(), c.threads, c.predicted_us)
    }

    pub(crate) fn __repr__(&self) -> String {
        format!("Kernel({:?})", self.kernel.name())
    }

    pub(crate) fn __reduce__<'py>(
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
pub(crate) fn _kernel(
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
        get("compute").map(|v| v.extract()).transpose()?,
    )
}

/// A kernel's state for one batch: each state's value per row. One caller's:
/// a thread that uses it while another does gets an error.
#[pyclass(module = "cellc._cellc", name = "State")]
pub(crate) struct State {
    pub(crate) state: cellc::State,
    pub(crate) kernel: Arc<cellc::Kernel>,
    /// The last input was a tensor: outputs go back as tensors.
    pub(crate) torch: bool,
}

#[pymethods]
impl State {
    /// The rows this state holds.
    #[getter]
    pub(crate) fn batch(&self) -> usize {
        self.state.batch()
    }

    /// Steps taken since the state was made.
    #[getter]
    pub(crate) fn steps(&self) -> u64 {
        self.state.steps()
    }

    /// The states' names.
    #[getter]
    pub(crate) fn names(&self) -> Vec<String> {
        self.kernel.state_names().to_vec()
    }

    /// State `name`'s value, `[batch, len]`.
    pub(crate) fn get(&self, py: Python<'_>, name: &str) -> PyResult<Py<PyAny>> {
        let v = self.state.get(name).map_err(err)?;
        let batch = self.state.batch();
        let len = v.len() / batch.max(1);
        output(py, v, &[batch, len], self.torch)
    }

    /// Sets state `name` to `value`, `[batch, len]`.
    pub(crate) fn set(&mut self, name: &str, value: &Bound<'_, PyAny>) -> PyResult<()> {
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

    pub(crate) fn __repr__(&self) -> String {
        format!(
            "State(kernel={:?}, batch={}, steps={})",
            self.kernel.name(),
            self.state.batch(),
            self.state.steps()
        )
    }
}

/// Names with their lengths (`len(i)` of the `i`-th), as the getters give them.
fn named_lens(names: &[String], len: impl Fn(usize) -> usize) -> Vec<(String, usize)> {
    names
        .iter()
        .enumerate()
        .map(|(i, n)| (n.clone(), len(i)))
        .collect()
}
