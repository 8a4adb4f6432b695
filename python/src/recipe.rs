//! What a compile is made of, from its Python spellings: sizes, weights
//! (a `state_dict`), options; kept as a recipe so that pickling can compile
//! again.

use pyo3::prelude::*;
use pyo3::types::PyDict;

use crate::*;

/// Sizes from a Python dict (`{"X": 64, "H": 128}`).
pub(crate) fn dims_of(dims: Option<&Bound<'_, PyDict>>) -> PyResult<Vec<(String, u64)>> {
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
pub(crate) fn weights_of(weights: &Bound<'_, PyAny>) -> PyResult<cellc::Weights> {
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
pub(crate) fn options(
    precision: Option<&str>,
    threads: Option<usize>,
    plan: Option<&str>,
    isa: Option<&str>,
    optimize: bool,
    compute: Option<&str>,
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
        compute: compute
            .map(|c| {
                cellc::Compute::from_name(c).ok_or_else(|| {
                    OptionsError::new_err(format!(
                        "compute `{c}`: the arithmetics are f32, bf16 and int8"
                    ))
                })
            })
            .transpose()?
            .unwrap_or_default(),
    })
}

/// The options of a compile, as given (for pickling: unpickling compiles
/// again with them).
#[derive(Clone)]
pub(crate) struct Recipe {
    pub(crate) precision: Option<String>,
    pub(crate) threads: Option<usize>,
    pub(crate) plan: Option<String>,
    pub(crate) isa: Option<String>,
    pub(crate) optimize: bool,
    pub(crate) compute: Option<String>,
}

impl Recipe {
    pub(crate) fn options(&self) -> PyResult<cellc::Options> {
        options(
            self.precision.as_deref(),
            self.threads,
            self.plan.as_deref(),
            self.isa.as_deref(),
            self.optimize,
            self.compute.as_deref(),
        )
    }

    pub(crate) fn to_dict<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let d = PyDict::new(py);
        d.set_item("precision", self.precision.clone())?;
        d.set_item("threads", self.threads)?;
        d.set_item("plan", self.plan.clone())?;
        d.set_item("isa", self.isa.clone())?;
        d.set_item("optimize", self.optimize)?;
        d.set_item("compute", self.compute.clone())?;
        Ok(d)
    }
}

/// Weights as a dict of NumPy arrays (for pickling).
pub(crate) fn weights_dict<'py>(
    py: Python<'py>,
    w: &cellc::Weights,
) -> PyResult<Bound<'py, PyDict>> {
    let d = PyDict::new(py);
    for name in w.names() {
        if let Some(t) = w.get(name) {
            d.set_item(name, output(py, t.data.clone(), &t.shape, false)?)?;
        }
    }
    Ok(d)
}
