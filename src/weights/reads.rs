//! The rule that every tensor a cell binds is read whole and each of its
//! rows once (unless partial reads are allowed): a checkpoint of another
//! cell, or a slice typo, is an error naming the tensor and the rows.

use super::*;

impl Weights {
    /// Checks that the parameters of `cell` read every tensor they bind
    /// whole, and that slices of one tensor do not overlap (see
    /// [`Weights::resolve`]).
    pub(super) fn check_reads(&self, cell: &Cell) -> Result<(), WeightsError> {
        // Tensor -> (parameter, the region it reads).
        // In the order the parameters first read them.
        let mut reads: Vec<(&str, Vec<(&str, Region)>)> = Vec::new();
        for p in &cell.params {
            let Some((tensor, indices)) = self.chosen(p) else {
                continue;
            };
            let t = &self.tensors[tensor];
            let Ok(region) = region(&t.shape, indices) else {
                continue; // `resolve_each` reported it.
            };
            match reads.iter_mut().find(|(n, _)| *n == tensor) {
                Some((_, r)) => r.push((&p.name, region)),
                None => reads.push((tensor, vec![(&p.name, region)])),
            }
        }
        // A tensor no parameter reads would be ignored: a projection saved
        // with `proj_size` run by a cell without one gives wrong numbers.
        if let Some((name, t)) = self
            .tensors
            .iter()
            .find(|(n, _)| !reads.iter().any(|(r, _)| r == n))
        {
            return err(format!(
                "tensor `{}` {} is read by no parameter of cell `{}`: the weights are of \
                 another module than the cell describes, or hold more than it (pass the \
                 cell's part with `--prefix`, `Weights::strip_prefix`; if the cell reads a part \
                 on purpose: `--allow-partial-reads`, `Weights::allow_partial_reads`)",
                crate::diag::short(name),
                shape_str(&t.shape),
                cell.name
            ) + if name.starts_with("weight_hr") {
                "; it is an LSTM's projection (`proj_size`): run examples/lstm_proj.rnn"
            } else {
                ""
            });
        }
        for (name, reads) in &reads {
            let t = &self.tensors[*name];
            let whole =
                |r: &[(usize, usize)]| r.iter().zip(&t.shape).all(|(&(s, n), &d)| s == 0 && n == d);
            if reads.iter().all(|(_, r)| whole(r)) {
                continue; // Read whole, by one parameter or tied ones.
            }
            let mut count: Vec<u8> = Vec::new();
            count
                .try_reserve_exact(t.data.len())
                .map_err(|_| WeightsError(format!("tensor `{name}` is too large to check")))?;
            count.resize(t.data.len(), 0);
            for (_, r) in reads {
                for_each_offset(&t.shape, r, |o| count[o] = count[o].saturating_add(1));
            }
            let mut problems = Vec::new();
            if count.contains(&0) {
                problems.push(format!(
                    "{} read by no parameter",
                    describe_where(&t.shape, |o| count[o] == 0)
                ));
            }
            if let Some(at) = count.iter().position(|&c| c > 1) {
                let by: Vec<&(&str, Region)> = reads
                    .iter()
                    .filter(|(_, r)| contains(&t.shape, r, at))
                    .collect();
                let both: Region = by[0]
                    .1
                    .iter()
                    .zip(&by[1].1)
                    .map(|(&(s0, n0), &(s1, n1))| {
                        let s = s0.max(s1);
                        (s, (s0 + n0).min(s1 + n1) - s)
                    })
                    .collect();
                problems.push(format!(
                    "{} read by both `{}` and `{}`",
                    describe_where(&t.shape, |o| contains(&t.shape, &both, o)),
                    by[0].0,
                    by[1].0
                ));
            }
            if !problems.is_empty() {
                return err(format!(
                    "tensor `{name}` {}: {} of cell `{}`; the weights are of another module \
                     than the cell describes, or a slice in the cell is wrong (if the cell \
                     reads part of the tensor on purpose: `--allow-partial-reads`, or \
                     `Weights::allow_partial_reads`)",
                    shape_str(&t.shape),
                    problems.join(", and "),
                    cell.name
                ));
            }
        }
        Ok(())
    }
}

/// Per axis, the `(start, len)` a binding reads of a tensor.
type Region = Vec<(usize, usize)>;

/// The region a binding's indices read of a tensor of `shape` (an axis
/// indexed at one position reads a length of 1).
pub(super) fn region(shape: &[usize], indices: &[BindIndex]) -> Result<Region, String> {
    if indices.len() > shape.len() {
        return Err(format!(
            "{} indices for a tensor of {} dimensions",
            indices.len(),
            shape.len()
        ));
    }
    shape
        .iter()
        .enumerate()
        .map(|(a, &dim)| match indices.get(a) {
            None => Ok((0, dim)),
            Some(BindIndex::At(i)) => {
                let i = usize::try_from(*i).unwrap_or(usize::MAX);
                if i >= dim {
                    return Err(format!(
                        "index {i} is out of range for axis {a} of length {dim}"
                    ));
                }
                Ok((i, 1))
            }
            Some(BindIndex::Range(s, e)) => {
                let s = s.map_or(0, |v| usize::try_from(v).unwrap_or(usize::MAX));
                let e = e.map_or(dim, |v| usize::try_from(v).unwrap_or(usize::MAX));
                if s > e || e > dim {
                    return Err(format!(
                        "range {s}..{e} is out of range for axis {a} of length {dim}"
                    ));
                }
                Ok((s, e - s))
            }
        })
        .collect()
}

/// Row-major strides of `shape`.
pub(super) fn strides(shape: &[usize]) -> Vec<usize> {
    let mut strides = vec![1usize; shape.len()];
    for a in (0..shape.len().saturating_sub(1)).rev() {
        strides[a] = strides[a + 1] * shape[a + 1];
    }
    strides
}

/// Calls `f` with the offset of every element of `region`, in row-major order.
pub(super) fn for_each_offset(
    shape: &[usize],
    region: &[(usize, usize)],
    mut f: impl FnMut(usize),
) {
    let total: usize = region.iter().map(|r| r.1).product();
    let strides = strides(shape);
    let mut idx = vec![0usize; region.len()];
    for _ in 0..total {
        f(idx
            .iter()
            .zip(region)
            .zip(&strides)
            .map(|((i, r), s)| (r.0 + i) * s)
            .sum());
        for a in (0..region.len()).rev() {
            idx[a] += 1;
            if idx[a] < region[a].1 {
                break;
            }
            idx[a] = 0;
        }
    }
}

/// Whether the element at `offset` lies in `region`.
pub(super) fn contains(shape: &[usize], region: &[(usize, usize)], offset: usize) -> bool {
    let strides = strides(shape);
    region
        .iter()
        .zip(shape)
        .zip(&strides)
        .all(|((&(s, n), &d), &st)| {
            let i = offset / st % d.max(1);
            i >= s && i < s + n
        })
}

/// Where in a tensor of `shape` the elements `hit` picks lie, for messages:
/// the rows (indices of the first axis) that hold one, as ranges, and, when
/// those rows hold others too, the columns (`rows 48..64`, `rows 0..16,
/// columns 8..12`, `elements 3..4`).
pub(super) fn describe_where(shape: &[usize], hit: impl Fn(usize) -> bool) -> String {
    let Some(&rows) = shape.first() else {
        return "its value is".to_string();
    };
    let per_row: usize = shape[1..].iter().product();
    let mut row_hit = vec![false; rows];
    let mut col_hit = vec![false; per_row];
    let mut whole_rows = true;
    for (r, row) in row_hit.iter_mut().enumerate() {
        let n = (0..per_row)
            .filter(|&c| hit(r * per_row + c))
            .inspect(|&c| col_hit[c] = true)
            .count();
        *row = n > 0;
        whole_rows &= n == 0 || n == per_row;
    }
    let ranges = |v: &[bool]| -> String {
        let mut out = Vec::new();
        let mut i = 0;
        while i < v.len() {
            if v[i] {
                let s = i;
                while i < v.len() && v[i] {
                    i += 1;
                }
                out.push(format!("{s}..{i}"));
            } else {
                i += 1;
            }
        }
        let more = out.len().saturating_sub(4);
        out.truncate(4);
        if more > 0 {
            out.push(format!("{more} more"));
        }
        out.join(", ")
    };
    let one_axis = shape.len() == 1;
    let what = if one_axis { "elements" } else { "rows" };
    if whole_rows || one_axis {
        format!("{what} {} are", ranges(&row_hit))
    } else {
        format!(
            "{what} {}, {} {}, are",
            ranges(&row_hit),
            if shape.len() == 2 {
                "columns"
            } else {
                "positions in the row"
            },
            ranges(&col_hit)
        )
    }
}
