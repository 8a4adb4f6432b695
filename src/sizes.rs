//! Sizes read off tensors: the length of each input and state a run is given,
//! and each checkpoint tensor a parameter reads, as equations over the size
//! variables, solved by `sema::infer_dims`. Below both the runs of `run` and
//! the networks of `network`, which give each layer its sizes.

use crate::sema::{self, poly::Poly, IndexInfo, SizeFact, SymTy};
use crate::weights::{shape_str, Weights};
use crate::{Error, Result};

/// A port's length as a run reads it off a tensor, for size inference.
#[derive(Clone)]
pub(crate) struct PortLen {
    pub name: String,
    pub len: usize,
    /// Where the length comes from, for messages (`input `x` [20, 4, 64]`).
    pub what: String,
}

/// Infers the cell's sizes from the lengths of its inputs and states (ports
/// the cell does not have are skipped: the caller checks names) and from the
/// weights' tensors, on top of the `given` sizes.
pub(crate) fn infer_sizes(
    checked: &sema::Checked,
    weights: &Weights,
    ports: &[PortLen],
    given: &[(String, u64)],
) -> Result<Vec<(String, u64)>> {
    let mut facts = Vec::new();
    for port in checked.inputs.iter().chain(&checked.states) {
        for p in ports.iter().filter(|p| p.name == port.name) {
            facts.push(SizeFact {
                what: p.what.clone(),
                poly: port.len.clone(),
                value: p.len as i128,
            });
        }
    }
    for p in &checked.params {
        let axes: Vec<&Poly> = match &p.ty {
            SymTy::Vector(n) => vec![n],
            SymTy::Matrix(r, c) => vec![r, c],
            SymTy::Scalar => vec![],
        };
        let found = p
            .binding
            .iter()
            .find(|b| weights.get(&b.tensor).is_some())
            .map(|b| (b.tensor.clone(), b.indices.clone()))
            .or_else(|| weights.get(&p.name).map(|_| (p.name.clone(), Vec::new())));
        let Some((tensor, indices)) = found else {
            continue; // Reported, with every name tried, when the weights bind.
        };
        let Some(t) = weights.get(&tensor) else {
            continue;
        };
        // A circulant matrix's tensor is `[R/k, C/k, k]`: its first two
        // axes give `R` and `C` times `k` (when read whole).
        if let Some((block, _)) = p.circulant {
            if indices.is_empty() {
                for (a, (&dim, poly)) in t.shape.iter().zip(&axes).enumerate() {
                    facts.push(SizeFact {
                        what: format!(
                            "axis {a} of tensor `{tensor}` {} (parameter `{}`, blocks of {block})",
                            shape_str(&t.shape),
                            p.name
                        ),
                        poly: (*poly).clone(),
                        value: dim as i128 * block as i128,
                    });
                }
            }
            continue;
        }
        let mut k = 0;
        for (a, &dim) in t.shape.iter().enumerate() {
            let what = format!(
                "axis {a} of tensor `{tensor}` {} (parameter `{}`)",
                shape_str(&t.shape),
                p.name
            );
            let axis = match indices.get(a) {
                None => Some(axes.get(k).map(|&x| x.clone())),
                Some(IndexInfo::Range(start, None)) => Some(axes.get(k).map(|&x| match start {
                    Some(s) => x.add(s),
                    None => x.clone(),
                })),
                Some(IndexInfo::Range(_, Some(_))) => None,
                Some(IndexInfo::At(_)) => {
                    continue;
                }
            };
            if let Some(Some(poly)) = axis {
                facts.push(SizeFact {
                    what,
                    poly,
                    value: dim as i128,
                });
            }
            k += 1;
        }
    }
    sema::infer_dims(checked, &facts, given).map_err(Error::shape)
}
