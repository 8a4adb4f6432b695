//! Folding the constant subgraphs exporters leave in front of a recurrent
//! node: `torch.onnx.export`'s default (dynamo) exporter computes an LSTM's
//! `W` and `R` from PyTorch's tensors by `Slice` (one block of rows per
//! gate), `Concat` (ONNX's gate order), `Unsqueeze` (the direction axis) and
//! `Concat` again (both directions), and leaves that subgraph in the model
//! when its tensors are larger than its optimizer folds. ONNX Runtime runs it
//! once; cellc computes it at import, with ONNX's semantics for each op.
//!
//! What folds: `Identity`, `Cast` (to float, double, int64 or int32),
//! `Slice` (inputs or, before opset 10, attributes; negative indices and
//! steps), `Concat`, `Unsqueeze` and `Squeeze` (axes as an input or an
//! attribute), `Reshape` (`0` copies a dimension, `-1` infers one), and
//! `Transpose`. Every operand must be known (stored or folded); anything
//! else is refused by the caller with the node named. Results never grow
//! beyond their operands (no `Expand`, `Tile`), and the caller bounds the
//! total work.

use super::proto::{short, Node, Values};
use crate::weights::WeightsError;

/// A tensor whose values the importer knows.
#[derive(Clone, Debug, PartialEq)]
pub(super) struct Known {
    pub shape: Vec<usize>,
    pub values: Values,
}

fn err<T>(m: impl Into<String>) -> Result<T, WeightsError> {
    Err(WeightsError(m.into()))
}

/// Whether `op` is one [`fold`] computes.
pub(super) fn folds(op: &str) -> bool {
    matches!(
        op,
        "Identity"
            | "Cast"
            | "Slice"
            | "Concat"
            | "Unsqueeze"
            | "Squeeze"
            | "Reshape"
            | "Transpose"
    )
}

impl Values {
    /// The ONNX name of the element type.
    pub(super) fn type_name(&self) -> &'static str {
        match self {
            Values::F32(_) => "float",
            Values::F64(_) => "double",
            Values::F16(_) => "float16",
            Values::I64(_) => "int64",
            Values::I32(_) => "int32",
            Values::I8(_) => "int8",
            Values::U8(_) => "uint8",
        }
    }

    /// The values at offsets `idx`, in that order.
    fn gather(&self, idx: &[usize]) -> Values {
        fn pick<T: Copy>(v: &[T], idx: &[usize]) -> Vec<T> {
            idx.iter().map(|&i| v[i]).collect()
        }
        match self {
            Values::F32(v) => Values::F32(pick(v, idx)),
            Values::F64(v) => Values::F64(pick(v, idx)),
            Values::F16(v) => Values::F16(pick(v, idx)),
            Values::I64(v) => Values::I64(pick(v, idx)),
            Values::I32(v) => Values::I32(pick(v, idx)),
            Values::I8(v) => Values::I8(pick(v, idx)),
            Values::U8(v) => Values::U8(pick(v, idx)),
        }
    }

    /// Integer values (int64 or int32), for indices and shapes.
    pub(super) fn as_i64(&self) -> Option<Vec<i64>> {
        match self {
            Values::I64(v) => Some(v.clone()),
            Values::I32(v) => Some(v.iter().map(|&x| x as i64).collect()),
            _ => None,
        }
    }
}

/// Row-major strides.
fn strides(shape: &[usize]) -> Vec<usize> {
    let mut s = vec![1usize; shape.len()];
    for a in (0..shape.len().saturating_sub(1)).rev() {
        s[a] = s[a + 1] * shape[a + 1];
    }
    s
}

/// An axis attribute or input (`-r..r`) as an index below `rank`.
fn axis(a: i64, rank: usize, what: &str) -> Result<usize, WeightsError> {
    let r = rank as i64;
    if a < -r || a >= r {
        return err(format!("{what}: axis {a} is out of range for rank {rank}"));
    }
    Ok(if a < 0 { (a + r) as usize } else { a as usize })
}

/// The offsets of every element of the strided selection `(start, step, len)`
/// per axis, in row-major order of the result.
fn selection(shape: &[usize], sel: &[(i64, i64, usize)]) -> Vec<usize> {
    let st = strides(shape);
    let total: usize = sel.iter().map(|s| s.2).product();
    let mut out = Vec::with_capacity(total);
    let mut idx = vec![0usize; sel.len()];
    for _ in 0..total {
        let off: i64 = idx
            .iter()
            .zip(sel)
            .zip(&st)
            .map(|((&i, &(start, step, _)), &s)| (start + step * i as i64) * s as i64)
            .sum();
        out.push(off as usize);
        for a in (0..sel.len()).rev() {
            idx[a] += 1;
            if idx[a] < sel[a].2 {
                break;
            }
            idx[a] = 0;
        }
    }
    out
}

/// Computes node `n` (`desc` names it) from its known operands (`None` for
/// an absent optional input).
pub(super) fn fold(
    n: &Node,
    desc: &str,
    operands: Vec<Option<Known>>,
) -> Result<Known, WeightsError> {
    let op = Op { n, desc };
    let mut operands = operands.into_iter();
    let Some(Some(data)) = operands.next() else {
        return err(format!("{desc} has no data input"));
    };
    let rest: Vec<Option<Known>> = operands.collect();
    match n.op_type {
        "Identity" => Ok(data),
        "Cast" => cast(&op, data),
        "Slice" => slice(&op, data, rest),
        "Concat" => concat(&op, data, rest),
        "Unsqueeze" | "Squeeze" => squeeze(&op, data, rest),
        "Reshape" => reshape(&op, data, rest),
        "Transpose" => transpose(&op, data),
        other => err(format!("internal error: {} does not fold", short(other))),
    }
}

/// The node being folded, with its attributes and operands read as the
/// folds need them.
struct Op<'a> {
    n: &'a Node<'a>,
    desc: &'a str,
}

impl Op<'_> {
    fn int_attr(&self, name: &str) -> Option<i64> {
        self.n
            .attributes
            .iter()
            .find(|a| a.name == name)
            .and_then(|a| a.int)
    }

    fn ints_attr(&self, name: &str) -> Option<Vec<i64>> {
        self.n
            .attributes
            .iter()
            .find(|a| a.name == name)
            .map(|a| a.ints.clone())
    }

    /// An operand's values as integers (`what` names it in the error).
    fn ints_of(&self, k: &Option<Known>, what: &str) -> Result<Option<Vec<i64>>, WeightsError> {
        match k {
            None => Ok(None),
            Some(k) => k.values.as_i64().map(Some).ok_or_else(|| {
                WeightsError(format!(
                    "{}: its {what} are {}, not integers",
                    self.desc,
                    k.values.type_name()
                ))
            }),
        }
    }
}

/// Folds a `Cast` node.
fn cast(op: &Op<'_>, data: Known) -> Result<Known, WeightsError> {
    let desc = op.desc;
    let to = op
        .int_attr("to")
        .ok_or_else(|| WeightsError(format!("{desc} has no `to`")))?;
    let floats = |k: &Known| -> Vec<f64> {
        match &k.values {
            Values::F32(v) => v.iter().map(|&x| x as f64).collect(),
            Values::F64(v) => v.clone(),
            Values::F16(v) => v
                .iter()
                .map(|&b| half::f16::from_bits(b).to_f64())
                .collect(),
            Values::I64(v) => v.iter().map(|&x| x as f64).collect(),
            Values::I32(v) => v.iter().map(|&x| x as f64).collect(),
            Values::I8(v) => v.iter().map(|&x| x as f64).collect(),
            Values::U8(v) => v.iter().map(|&x| x as f64).collect(),
        }
    };
    let values = match (to, &data.values) {
        (1, _) => Values::F32(floats(&data).into_iter().map(|x| x as f32).collect()),
        (11, _) => Values::F64(floats(&data)),
        (7 | 6, v) => {
            let ints: Vec<i64> = match v.as_i64() {
                Some(i) => i,
                None => floats(&data)
                    .into_iter()
                    .map(|x| x.trunc() as i64)
                    .collect(),
            };
            if to == 7 {
                Values::I64(ints)
            } else {
                Values::I32(ints.into_iter().map(|x| x as i32).collect())
            }
        }
        _ => {
            return err(format!(
                "{desc} casts to ONNX element type {to}; cellc folds casts to float, \
                 double, int64 and int32"
            ))
        }
    };
    Ok(Known {
        shape: data.shape,
        values,
    })
}

/// Folds a `Slice` node.
fn slice(op: &Op<'_>, data: Known, rest: Vec<Option<Known>>) -> Result<Known, WeightsError> {
    let desc = op.desc;
    let rank = data.shape.len();
    let (starts, ends, axes, steps) = if rest.is_empty() {
        // Opset 1-9: attributes.
        (
            op.ints_attr("starts"),
            op.ints_attr("ends"),
            op.ints_attr("axes"),
            None,
        )
    } else {
        (
            op.ints_of(&rest[0], "starts")?,
            rest.get(1).map_or(Ok(None), |k| op.ints_of(k, "ends"))?,
            rest.get(2).map_or(Ok(None), |k| op.ints_of(k, "axes"))?,
            rest.get(3).map_or(Ok(None), |k| op.ints_of(k, "steps"))?,
        )
    };
    let (Some(starts), Some(ends)) = (starts, ends) else {
        return err(format!("{desc} has no starts or ends"));
    };
    let axes = axes.unwrap_or_else(|| (0..starts.len() as i64).collect());
    let steps = steps.unwrap_or_else(|| vec![1; starts.len()]);
    if ends.len() != starts.len() || axes.len() != starts.len() || steps.len() != starts.len() {
        return err(format!(
            "{desc}: starts, ends, axes and steps differ in length"
        ));
    }
    let mut sel: Vec<(i64, i64, usize)> = data.shape.iter().map(|&d| (0, 1, d)).collect();
    let mut seen = vec![false; rank];
    for k in 0..starts.len() {
        let a = axis(axes[k], rank, desc)?;
        if std::mem::replace(&mut seen[a], true) {
            return err(format!("{desc} slices axis {a} twice"));
        }
        let d = data.shape[a] as i64;
        let step = steps[k];
        if step == 0 {
            return err(format!("{desc} has a step of 0"));
        }
        let norm = |v: i64| if v < 0 { v.saturating_add(d) } else { v };
        // ONNX's clamping: [0, d] going forward, [-1, d - 1] back.
        let (start, len) = if step > 0 {
            let s = norm(starts[k]).clamp(0, d);
            let e = norm(ends[k]).clamp(0, d);
            (s, if e > s { (e - s + step - 1) / step } else { 0 })
        } else {
            let s = norm(starts[k]).clamp(-1, d - 1);
            let e = norm(ends[k]).clamp(-1, d - 1);
            (s, if s > e { (s - e - step - 1) / -step } else { 0 })
        };
        sel[a] = (start, step, len as usize);
    }
    let idx = selection(&data.shape, &sel);
    Ok(Known {
        shape: sel.iter().map(|s| s.2).collect(),
        values: data.values.gather(&idx),
    })
}

/// Folds a `Concat` node.
fn concat(op: &Op<'_>, data: Known, rest: Vec<Option<Known>>) -> Result<Known, WeightsError> {
    let desc = op.desc;
    let rank = data.shape.len();
    let a = axis(
        op.int_attr("axis")
            .ok_or_else(|| WeightsError(format!("{desc} has no axis")))?,
        rank,
        desc,
    )?;
    let mut parts = vec![data];
    for k in rest {
        let Some(k) = k else {
            return err(format!("{desc} has an empty input"));
        };
        parts.push(k);
    }
    let mut shape = parts[0].shape.clone();
    for p in &parts[1..] {
        let same_rest =
            p.shape.len() == rank && (0..rank).all(|i| i == a || p.shape[i] == parts[0].shape[i]);
        if !same_rest || p.values.type_name() != parts[0].values.type_name() {
            return err(format!(
                "{desc} joins {:?} ({}) and {:?} ({})",
                parts[0].shape,
                parts[0].values.type_name(),
                p.shape,
                p.values.type_name()
            ));
        }
        shape[a] += p.shape[a];
    }
    // Blocks of `inner` values, taken from each part in turn.
    let outer: usize = shape[..a].iter().product();
    let mut idx_of: Vec<(usize, usize)> = Vec::new(); // (part, offset)
    for o in 0..outer {
        for (pi, p) in parts.iter().enumerate() {
            let block: usize = p.shape[a..].iter().product();
            for i in 0..block {
                idx_of.push((pi, o * block + i));
            }
        }
    }
    macro_rules! join {
        ($variant:ident) => {{
            let srcs: Vec<&Vec<_>> = parts
                .iter()
                .map(|p| match &p.values {
                    Values::$variant(v) => v,
                    _ => unreachable!("checked to be one type"),
                })
                .collect();
            Values::$variant(idx_of.iter().map(|&(p, i)| srcs[p][i]).collect())
        }};
    }
    let values = match &parts[0].values {
        Values::F32(_) => join!(F32),
        Values::F64(_) => join!(F64),
        Values::F16(_) => join!(F16),
        Values::I64(_) => join!(I64),
        Values::I32(_) => join!(I32),
        Values::I8(_) => join!(I8),
        Values::U8(_) => join!(U8),
    };
    Ok(Known { shape, values })
}

/// Folds a `Unsqueeze` or `Squeeze` node.
fn squeeze(op: &Op<'_>, data: Known, rest: Vec<Option<Known>>) -> Result<Known, WeightsError> {
    let desc = op.desc;
    let rank = data.shape.len();
    let n = op.n;
    let axes = match rest.first() {
        Some(k) => op.ints_of(k, "axes")?,
        None => op.ints_attr("axes"),
    };
    let mut shape = data.shape.clone();
    if n.op_type == "Unsqueeze" {
        let axes = axes.ok_or_else(|| WeightsError(format!("{desc} has no axes")))?;
        let out_rank = rank + axes.len();
        let mut at: Vec<usize> = axes
            .iter()
            .map(|&x| axis(x, out_rank, desc))
            .collect::<Result<_, _>>()?;
        at.sort_unstable();
        at.dedup();
        if at.len() != axes.len() {
            return err(format!("{desc} repeats an axis"));
        }
        for a in at {
            shape.insert(a, 1);
        }
    } else {
        let at: Vec<usize> = match axes {
            Some(axes) => axes
                .iter()
                .map(|&x| axis(x, rank, desc))
                .collect::<Result<_, _>>()?,
            None => (0..rank).filter(|&a| shape[a] == 1).collect(),
        };
        if at.iter().any(|&a| shape[a] != 1) {
            return err(format!("{desc} squeezes an axis that is not 1 long"));
        }
        shape = shape
            .iter()
            .enumerate()
            .filter(|(a, _)| !at.contains(a))
            .map(|(_, &d)| d)
            .collect();
    }
    Ok(Known {
        shape,
        values: data.values,
    })
}

/// Folds a `Reshape` node.
fn reshape(op: &Op<'_>, data: Known, rest: Vec<Option<Known>>) -> Result<Known, WeightsError> {
    let desc = op.desc;
    let target = op
        .ints_of(rest.first().unwrap_or(&None), "shape")?
        .ok_or_else(|| WeightsError(format!("{desc} has no shape")))?;
    if op.int_attr("allowzero").is_some_and(|z| z != 0) {
        return err(format!("{desc} sets allowzero"));
    }
    let total = data.values.len();
    let mut shape = Vec::with_capacity(target.len());
    let mut infer = None;
    for (i, &d) in target.iter().enumerate() {
        match d {
            0 => shape.push(*data.shape.get(i).ok_or_else(|| {
                WeightsError(format!(
                    "{desc} copies dimension {i}, which its input lacks"
                ))
            })?),
            -1 if infer.is_none() => {
                infer = Some(i);
                shape.push(1);
            }
            d if d > 0 => shape.push(d as usize),
            _ => return err(format!("{desc} has target shape {target:?}")),
        }
    }
    let known: usize = shape.iter().product();
    if let Some(i) = infer {
        if known == 0 || !total.is_multiple_of(known) {
            return err(format!(
                "{desc} cannot reshape {:?} to {target:?}",
                data.shape
            ));
        }
        shape[i] = total / known;
    }
    if shape.iter().product::<usize>() != total {
        return err(format!(
            "{desc} cannot reshape {:?} to {target:?}",
            data.shape
        ));
    }
    Ok(Known {
        shape,
        values: data.values,
    })
}

/// Folds a `Transpose` node.
fn transpose(op: &Op<'_>, data: Known) -> Result<Known, WeightsError> {
    let desc = op.desc;
    let rank = data.shape.len();
    let perm: Vec<usize> = match op.ints_attr("perm") {
        Some(p) => p
            .iter()
            .map(|&x| axis(x, rank, desc))
            .collect::<Result<_, _>>()?,
        None => (0..rank).rev().collect(),
    };
    let mut sorted = perm.clone();
    sorted.sort_unstable();
    if sorted != (0..rank).collect::<Vec<_>>() {
        return err(format!("{desc} has perm {perm:?}, not a permutation"));
    }
    let st = strides(&data.shape);
    let sel: Vec<(i64, i64, usize)> = perm
        .iter()
        .map(|&p| (0, st[p] as i64, data.shape[p]))
        .collect();
    let total: usize = sel.iter().map(|s| s.2).product();
    let mut idx = Vec::with_capacity(total);
    let mut at = vec![0usize; rank];
    for _ in 0..total {
        idx.push(at.iter().zip(&sel).map(|(&i, s)| i * s.1 as usize).sum());
        for a in (0..rank).rev() {
            at[a] += 1;
            if at[a] < sel[a].2 {
                break;
            }
            at[a] = 0;
        }
    }
    Ok(Known {
        shape: perm.iter().map(|&p| data.shape[p]).collect(),
        values: data.values.gather(&idx),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node<'a>(op: &'a str, attrs: Vec<super::super::proto::Attribute<'a>>) -> Node<'a> {
        Node {
            op_type: op,
            attributes: attrs,
            ..Node::default()
        }
    }

    fn k(shape: &[usize], v: Vec<f32>) -> Option<Known> {
        Some(Known {
            shape: shape.to_vec(),
            values: Values::F32(v),
        })
    }

    fn ints(v: &[i64]) -> Option<Known> {
        Some(Known {
            shape: vec![v.len()],
            values: Values::I64(v.to_vec()),
        })
    }

    fn attr<'a>(
        name: &'a str,
        int: Option<i64>,
        list: Vec<i64>,
    ) -> super::super::proto::Attribute<'a> {
        super::super::proto::Attribute {
            name,
            ty: super::super::proto::AttrType::Int,
            float: None,
            int,
            string: None,
            tensor: None,
            floats: Vec::new(),
            ints: list,
            strings: Vec::new(),
            ref_attr: false,
        }
    }

    /// The exporter's pattern: gate blocks sliced out of a [4, 2] matrix,
    /// joined in another order, given a leading axis.
    #[test]
    fn slice_concat_unsqueeze_as_exporters_write_them() {
        let w = k(&[4, 2], (0..8).map(|v| v as f32).collect());
        let s = |a: i64, b: i64| {
            fold(
                &node("Slice", vec![]),
                "s",
                vec![w.clone(), ints(&[a]), ints(&[b]), ints(&[0])],
            )
            .unwrap()
        };
        let (g0, g1, g2, g3) = (s(0, 1), s(1, 2), s(2, 3), s(3, 4));
        assert_eq!(g1.shape, [1, 2]);
        let c = fold(
            &node("Concat", vec![attr("axis", Some(0), vec![])]),
            "c",
            vec![Some(g0), Some(g3), Some(g1), Some(g2)],
        )
        .unwrap();
        assert_eq!(c.values, Values::F32(vec![0., 1., 6., 7., 2., 3., 4., 5.]));
        let u = fold(&node("Unsqueeze", vec![]), "u", vec![Some(c), ints(&[0])]).unwrap();
        assert_eq!(u.shape, [1, 4, 2]);
        // Negative steps and indices, and Transpose.
        let r = fold(
            &node("Slice", vec![]),
            "r",
            vec![w.clone(), ints(&[-1]), ints(&[-5]), ints(&[0]), ints(&[-2])],
        )
        .unwrap();
        assert_eq!(r.values, Values::F32(vec![6., 7., 2., 3.]));
        let t = fold(
            &node("Transpose", vec![attr("perm", None, vec![1, 0])]),
            "t",
            vec![w],
        )
        .unwrap();
        assert_eq!(t.shape, [2, 4]);
        assert_eq!(t.values, Values::F32(vec![0., 2., 4., 6., 1., 3., 5., 7.]));
    }
}
