//! `Trainer` and `Tape`: a cell compiled for training (`cellc::train`), for
//! the `cellc.torch` module's autograd function. Arrays in are NumPy arrays
//! or CPU tensors, arrays out NumPy arrays; every compiled call releases the
//! GIL.

use pyo3::prelude::*;

use crate::*;

/// A cell compiled for training: `forward` keeps a tape, `backward` gives
/// the gradients through time; `set_params` takes new parameter values
/// without compiling again.
#[pyclass(module = "cellc._cellc", name = "Trainer")]
pub(crate) struct Trainer {
    trainer: cellc::train::Trainer,
}

/// What `Trainer.forward` keeps for `Trainer.backward`.
#[pyclass(module = "cellc._cellc", name = "Tape", frozen)]
pub(crate) struct Tape {
    tape: cellc::train::Tape,
}

/// Arrays of the lengths `want` (per array: the expected shape's text and
/// number of values), read in place or converted once.
fn arrays<'py>(
    list: &[Bound<'py, PyAny>],
    what: &str,
    names: &[String],
    want: &[(String, usize)],
) -> PyResult<Vec<Input<'py>>> {
    if list.len() != want.len() {
        return Err(shape_err(format!(
            "{what}: {} arrays given, the cell has {} ({})",
            list.len(),
            want.len(),
            names.join(", ")
        )));
    }
    let mut out = Vec::with_capacity(list.len());
    for ((a, (shape, n)), name) in list.iter().zip(want).zip(names) {
        let inp = input(a, &format!("{what} `{name}`"), shape)?;
        if inp.data()?.len() != *n {
            return Err(shape_err(format!(
                "{what} `{name}`: shape {}; expected {shape}",
                shape_text(inp.shape())
            )));
        }
        out.push(inp);
    }
    Ok(out)
}

/// Python objects: the arrays one call returns per port.
type Arrays = Vec<Py<PyAny>>;

fn ports(ports: &[cellc::ir::Port]) -> (Vec<String>, Vec<usize>) {
    (
        ports.iter().map(|p| p.name.clone()).collect(),
        ports.iter().map(|p| p.len).collect(),
    )
}

#[pymethods]
impl Trainer {
    /// Compiles `cell` (at its sizes: those given, or the file's) for
    /// training with `params`, one array per parameter in the cell's order
    /// (zeros when `None`).
    ///
    /// `ragged=True`: for batches of rows of different lengths, the cell
    /// takes one more input, `mask` (`[T, B, 1]`: 1 while a row lasts, then
    /// 0), which holds a row's states once it ends and zeroes its outputs.
    #[new]
    #[pyo3(signature = (cell, params=None, threads=None, ragged=false))]
    pub(crate) fn new(
        py: Python<'_>,
        cell: &Cell,
        params: Option<Vec<Bound<'_, PyAny>>>,
        threads: Option<usize>,
        ragged: bool,
    ) -> PyResult<Trainer> {
        let ir = cell.cell.ir().map_err(err)?;
        let shapes: Vec<usize> = (ir.params.iter())
            .map(|p| match p.ty {
                cellc::ir::Type::Matrix(r, c) => p.structure.stored_len(r, c),
                cellc::ir::Type::Vector(n) => n,
                cellc::ir::Type::Scalar => 1,
            })
            .collect();
        let values: Vec<Vec<f32>> = match params {
            None => shapes.iter().map(|&n| vec![0.0; n]).collect(),
            Some(list) => {
                let names: Vec<String> = ir.params.iter().map(|p| p.name.clone()).collect();
                let want: Vec<(String, usize)> =
                    shapes.iter().map(|&n| (format!("{n} values"), n)).collect();
                let inputs = arrays(&list, "params", &names, &want)?;
                inputs
                    .iter()
                    .map(|a| a.data().map(<[f32]>::to_vec))
                    .collect::<PyResult<_>>()?
            }
        };
        let opts = cellc::Options {
            threads,
            ..cellc::Options::default()
        };
        let c = &cell.cell;
        let trainer = py
            .detach(|| {
                if ragged {
                    c.compile_training_ragged(values, &opts)
                } else {
                    c.compile_training_params(values, &opts)
                }
            })
            .map_err(err)?;
        Ok(Trainer { trainer })
    }

    /// Each parameter's name, in order.
    #[getter]
    pub(crate) fn param_names(&self) -> Vec<String> {
        self.trainer
            .param_shapes()
            .into_iter()
            .map(|p| p.0)
            .collect()
    }

    /// Each parameter's shape, in order.
    #[getter]
    pub(crate) fn param_shapes(&self) -> Vec<Vec<usize>> {
        self.trainer
            .param_shapes()
            .into_iter()
            .map(|p| p.1)
            .collect()
    }

    /// `(names, lengths)` of the inputs.
    #[getter]
    pub(crate) fn inputs(&self) -> (Vec<String>, Vec<usize>) {
        ports(&self.trainer.ir().inputs)
    }

    /// `(names, lengths)` of the states.
    #[getter]
    pub(crate) fn states(&self) -> (Vec<String>, Vec<usize>) {
        ports(&self.trainer.ir().states)
    }

    /// `(names, lengths)` of the outputs.
    #[getter]
    pub(crate) fn outputs(&self) -> (Vec<String>, Vec<usize>) {
        ports(&self.trainer.ir().outputs)
    }

    /// New parameter values, one array per parameter in order; tapes made
    /// before are refused afterwards.
    pub(crate) fn set_params(
        &mut self,
        py: Python<'_>,
        params: Vec<Bound<'_, PyAny>>,
    ) -> PyResult<()> {
        let shapes = self.trainer.param_shapes();
        let names: Vec<String> = shapes.iter().map(|p| p.0.clone()).collect();
        let want: Vec<(String, usize)> = (shapes.iter())
            .map(|(_, s)| (shape_text(s), s.iter().product()))
            .collect();
        let inputs = arrays(&params, "params", &names, &want)?;
        let values: Vec<Vec<f32>> = inputs
            .iter()
            .map(|a| a.data().map(<[f32]>::to_vec))
            .collect::<PyResult<_>>()?;
        let t = &mut self.trainer;
        py.detach(|| t.set_params(values)).map_err(err)
    }

    /// Runs `steps` steps over `batch` rows: `xs` one array per input
    /// `[T, B, len]`, `h0` one per state `[B, len]`. Returns `(outputs,
    /// final_states, tape)`: lists of NumPy arrays `[T, B, len]` and `[B,
    /// len]`.
    pub(crate) fn forward(
        &self,
        py: Python<'_>,
        xs: Vec<Bound<'_, PyAny>>,
        h0: Vec<Bound<'_, PyAny>>,
        steps: usize,
        batch: usize,
    ) -> PyResult<(Arrays, Arrays, Tape)> {
        let ir = self.trainer.ir();
        let (in_names, in_lens) = ports(&ir.inputs);
        let (st_names, st_lens) = ports(&ir.states);
        let seq = |n: usize| (format!("[{steps}, {batch}, {n}]"), steps * batch * n);
        let row = |n: usize| (format!("[{batch}, {n}]"), batch * n);
        let xs = arrays(
            &xs,
            "x",
            &in_names,
            &in_lens.iter().map(|&n| seq(n)).collect::<Vec<_>>(),
        )?;
        let h0 = arrays(
            &h0,
            "state",
            &st_names,
            &st_lens.iter().map(|&n| row(n)).collect::<Vec<_>>(),
        )?;
        let xr: Vec<&[f32]> = xs.iter().map(Input::data).collect::<PyResult<_>>()?;
        let hr: Vec<&[f32]> = h0.iter().map(Input::data).collect::<PyResult<_>>()?;
        let t = &self.trainer;
        let f = py
            .detach(|| t.forward(&xr, &hr, steps, batch))
            .map_err(err)?;
        let out_lens = ports(&ir.outputs).1;
        let outputs = (f.outputs.into_iter().zip(out_lens))
            .map(|(v, n)| output(py, v, &[steps, batch, n], false))
            .collect::<PyResult<_>>()?;
        let finals = (f.final_states.into_iter().zip(st_lens))
            .map(|(v, n)| output(py, v, &[batch, n], false))
            .collect::<PyResult<_>>()?;
        Ok((outputs, finals, Tape { tape: f.tape }))
    }

    /// The gradients through time for the forward pass that made `tape`,
    /// given the adjoints of its outputs (one array per output `[T, B,
    /// len]`) and of its final states (one per state `[B, len]`). Returns
    /// `(param_grads, d_inputs, d_initial_states)`: lists of NumPy arrays in
    /// the parameters' shapes, `[T, B, len]` and `[B, len]`. With `inputs =
    /// False` the inputs' adjoints are not computed (their products after
    /// the loop skipped) and `d_inputs` is empty.
    #[pyo3(signature = (tape, d_outputs, d_final, inputs=true))]
    pub(crate) fn backward(
        &self,
        py: Python<'_>,
        tape: &Tape,
        d_outputs: Vec<Bound<'_, PyAny>>,
        d_final: Vec<Bound<'_, PyAny>>,
        inputs: bool,
    ) -> PyResult<(Arrays, Arrays, Arrays)> {
        let ir = self.trainer.ir();
        let (steps, batch) = (tape.tape.steps(), tape.tape.batch());
        let (out_names, out_lens) = ports(&ir.outputs);
        let (st_names, st_lens) = ports(&ir.states);
        let seq = |n: usize| (format!("[{steps}, {batch}, {n}]"), steps * batch * n);
        let row = |n: usize| (format!("[{batch}, {n}]"), batch * n);
        let dy = arrays(
            &d_outputs,
            "the adjoint of output",
            &out_names,
            &out_lens.iter().map(|&n| seq(n)).collect::<Vec<_>>(),
        )?;
        let dh = arrays(
            &d_final,
            "the adjoint of state",
            &st_names,
            &st_lens.iter().map(|&n| row(n)).collect::<Vec<_>>(),
        )?;
        let dyr: Vec<&[f32]> = dy.iter().map(Input::data).collect::<PyResult<_>>()?;
        let dhr: Vec<&[f32]> = dh.iter().map(Input::data).collect::<PyResult<_>>()?;
        let t = &self.trainer;
        let g = py
            .detach(|| match inputs {
                true => t.backward(&tape.tape, &dyr, &dhr),
                false => t.backward_without_inputs(&tape.tape, &dyr, &dhr),
            })
            .map_err(err)?;
        let params = (g.params.into_iter())
            .map(|p| output(py, p.values, &p.shape, false))
            .collect::<PyResult<_>>()?;
        let in_lens = ports(&ir.inputs).1;
        let inputs = (g.inputs.into_iter().zip(in_lens))
            .map(|(v, n)| output(py, v, &[steps, batch, n], false))
            .collect::<PyResult<_>>()?;
        let states = (g.initial_states.into_iter().zip(st_lens))
            .map(|(v, n)| output(py, v, &[batch, n], false))
            .collect::<PyResult<_>>()?;
        Ok((params, inputs, states))
    }
}

#[pymethods]
impl Tape {
    /// The steps of the forward pass that made it.
    #[getter]
    pub(crate) fn steps(&self) -> usize {
        self.tape.steps()
    }

    /// The batch rows of the forward pass that made it.
    #[getter]
    pub(crate) fn batch(&self) -> usize {
        self.tape.batch()
    }
}
