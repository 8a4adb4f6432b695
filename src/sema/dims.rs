//! Sizes: binding the size variables to numbers (the file's defaults, the
//! caller's values, or sizes inferred from tensors), and checking that every
//! shape is positive and the parameters fit in memory.

use super::*;

/// Concrete sizes for a checked cell: defaults from the file, overridden by the
/// caller's values, each at least 1.
#[derive(Clone, Debug, PartialEq)]
pub struct Dims {
    pub names: Vec<String>,
    pub values: Vec<u64>,
}

impl Dims {
    pub fn eval(&self, p: &Poly) -> Option<i128> {
        p.eval(&self.values)
    }
}

/// A size read off a tensor: `poly` (over the cell's size variables) must equal
/// `value`; `what` says where it comes from, for messages.
#[derive(Clone, Debug)]
pub struct SizeFact {
    pub what: String,
    pub poly: Poly,
    pub value: i128,
}

/// Infers size variables from facts (`input x` is 64 long, `weight_hh_l0` has
/// 128 columns), on top of the sizes given. Returns every size it could infer;
/// an inconsistency is an error naming both sides.
pub fn infer_dims(
    checked: &Checked,
    facts: &[SizeFact],
    given: &[(String, u64)],
) -> Result<Vec<(String, u64)>, String> {
    let wrong = check_given(checked, given);
    if !wrong.is_empty() {
        return Err(wrong
            .iter()
            .map(Diagnostic::one_line)
            .collect::<Vec<_>>()
            .join("; "));
    }
    let names = checked.dim_names();
    let mut known: Vec<Option<u64>> = vec![None; names.len()];
    let mut source: Vec<String> = vec![String::new(); names.len()];
    for (n, v) in given {
        if let Some(i) = names.iter().position(|m| m == n) {
            known[i] = Some(*v);
            source[i] = format!("--dims {n}={v}");
        }
    }
    // Solve until nothing changes; then every fact must hold.
    loop {
        let mut changed = false;
        for f in facts {
            match f.poly.solve(&known, f.value) {
                Some(Ok((v, value))) => {
                    let v = v as usize;
                    if value < 1 || value > MAX_DIM as i128 {
                        return Err(format!(
                            "{} gives {} = {value}, which is not a valid size",
                            f.what, names[v]
                        ));
                    }
                    known[v] = Some(value as u64);
                    source[v] = f.what.clone();
                    changed = true;
                }
                Some(Err(())) => {
                    return Err(format!(
                        "{} is {}, which no whole size makes equal to {}",
                        f.what,
                        f.value,
                        f.poly.display(&names)
                    ))
                }
                None => {}
            }
        }
        if !changed {
            break;
        }
    }
    for f in facts {
        // Check each fact whose variables are all known.
        let all_known = f
            .poly
            .terms()
            .all(|(m, _)| m.iter().all(|&v| known[v as usize].is_some()));
        if !all_known {
            continue;
        }
        let vals: Vec<u64> = known.iter().map(|k| k.unwrap_or(0)).collect();
        let Some(have) = f.poly.eval(&vals) else {
            continue;
        };
        if have != f.value {
            let mut vars: Vec<usize> = f
                .poly
                .terms()
                .flat_map(|(m, _)| m.iter().map(|&v| v as usize).collect::<Vec<_>>())
                .collect();
            vars.sort_unstable();
            vars.dedup();
            let why: Vec<String> = vars
                .iter()
                .map(|&v| format!("{} = {} from {}", names[v], vals[v], source[v]))
                .collect();
            let expr = f.poly.display(&names).to_string();
            let expected = if vars.len() == 1 && expr == names[vars[0]] {
                expr.clone()
            } else {
                format!("{expr} = {have}")
            };
            return Err(format!(
                "{} should be {expected} ({}), but it is {}",
                f.what,
                why.join(", "),
                f.value
            ));
        }
    }
    Ok(names
        .into_iter()
        .zip(known)
        .filter_map(|(n, k)| k.map(|k| (n, k)))
        .collect())
}

/// Largest size accepted for any one axis.
pub const MAX_DIM: u64 = 1 << 24;
/// Largest total of parameter elements accepted (4 bytes each: 8 GiB).
pub const MAX_PARAM_ELEMENTS: u64 = 1 << 31;

/// The sizes a caller gives (`--dims`, [`crate::Cell::dims`], a run's sizes):
/// each names a size variable of the cell, once. The one rule of every
/// subcommand and of the API; a mistake is an error, never ignored.
pub fn check_given(checked: &Checked, given: &[(String, u64)]) -> Vec<Diagnostic> {
    let mut diags = Vec::new();
    for (k, (name, value)) in given.iter().enumerate() {
        if let Some((_, first)) = given[..k].iter().find(|(n, _)| n == name) {
            diags.push(
                Diagnostic::error("E0049", format!("size `{name}` is given twice")).note(format!(
                    "first as {name}={first}, then as {name}={value}; give each size once"
                )),
            );
            continue;
        }
        if !checked.dims.iter().any(|d| &d.name == name) {
            let d = Diagnostic::error(
                "E0044",
                format!("`{name}` is not a size variable of cell `{}`", checked.name),
            );
            diags.push(
                match suggest(name, checked.dims.iter().map(|d| d.name.as_str())) {
                    Some(s) => d.note(format!("did you mean `{s}`?")),
                    None => d.note(format!(
                        "its size variables are: {}",
                        if checked.dims.is_empty() {
                            "(none)".to_string()
                        } else {
                            checked.dim_names().join(", ")
                        }
                    )),
                },
            );
        }
    }
    diags
}

/// Binds every size variable; reports unbound, unknown, repeated, zero and
/// oversized ones.
pub fn bind_dims(checked: &Checked, given: &[(String, u64)]) -> Result<Dims, Vec<Diagnostic>> {
    let mut diags = check_given(checked, given);
    let mut values = Vec::with_capacity(checked.dims.len());
    for d in &checked.dims {
        let v = given
            .iter()
            .find(|(n, _)| n == &d.name)
            .map(|(_, v)| *v)
            .or(d.default);
        match v {
            None => diags.push(
                Diagnostic::error("E0045", format!("size `{}` is not bound", d.name))
                    .primary(d.span, "declared without a default")
                    .note(format!(
                        "give it on the command line (`--dims {}=128`) or in the file (`dim {} = 128`)",
                        d.name, d.name
                    )),
            ),
            Some(0) => diags.push(
                Diagnostic::error("E0041", format!("size `{}` is zero", d.name))
                    .primary(d.span, "sizes must be at least 1"),
            ),
            Some(v) if v > MAX_DIM => diags.push(
                Diagnostic::error("E0046", format!("size `{}` = {v} is too large", d.name))
                    .primary(d.span, format!("the limit for one size is {MAX_DIM}")),
            ),
            Some(_) => {}
        }
        values.push(v.unwrap_or(0));
    }
    if !diags.is_empty() {
        return Err(diags);
    }
    let dims = Dims {
        names: checked.dim_names(),
        values,
    };
    check_sizes(checked, &dims)?;
    Ok(dims)
}

/// Every shape evaluates to a positive length, and the parameters fit in memory.
pub(super) fn check_sizes(checked: &Checked, dims: &Dims) -> Result<(), Vec<Diagnostic>> {
    let mut diags = Vec::new();
    let mut total: u128 = 0;
    let check =
        |what: &str, name: &str, span: Span, p: &Poly, diags: &mut Vec<Diagnostic>| -> u128 {
            match dims.eval(p) {
                Some(v) if v >= 1 && v <= MAX_DIM as i128 * MAX_DIM as i128 => v as u128,
                Some(v) if v >= 1 => {
                    diags.push(
                        Diagnostic::error("E0046", format!("{what} `{name}` is too large"))
                            .primary(span, format!("{} = {v}", p.display(&dims.names)))
                            .note(format!("the limit for one length is {MAX_DIM}")),
                    );
                    0
                }
                Some(v) => {
                    diags.push(
                        Diagnostic::error(
                            "E0047",
                            format!("{what} `{name}` has a size of {v} with these sizes"),
                        )
                        .primary(span, format!("{} = {v}", p.display(&dims.names)))
                        .note("every length must be at least 1"),
                    );
                    0
                }
                None => {
                    diags.push(
                        Diagnostic::error("E0046", format!("{what} `{name}` is too large"))
                            .primary(span, "its size overflows"),
                    );
                    0
                }
            }
        };
    for (what, ports) in [
        ("input", &checked.inputs),
        ("state", &checked.states),
        ("output", &checked.outputs),
    ] {
        for p in ports {
            let n = check(what, &p.name, p.span, &p.len, &mut diags);
            if n > MAX_DIM as u128 {
                diags.push(
                    Diagnostic::error("E0046", format!("{what} `{}` is too large", p.name))
                        .primary(p.span, format!("{n} elements; the limit is {MAX_DIM}")),
                );
            }
        }
    }
    for p in &checked.params {
        let elems = match &p.ty {
            SymTy::Vector(n) => check("parameter", &p.name, p.span, n, &mut diags),
            SymTy::Matrix(r, c) => {
                let rows = check("parameter", &p.name, p.span, r, &mut diags);
                let cols = check("parameter", &p.name, p.span, c, &mut diags);
                if let Some((k, span)) = p.circulant {
                    let k = k as u128;
                    if rows > 0 && cols > 0 && (rows % k != 0 || cols % k != 0) {
                        diags.push(
                            Diagnostic::error(
                                "E0064",
                                format!(
                                    "parameter `{}` is {rows} x {cols}: its circulant blocks of \
                                     {k} do not divide it",
                                    p.name
                                ),
                            )
                            .primary(span, format!("blocks of {k} x {k}"))
                            .secondary(
                                p.span,
                                format!(
                                    "[{}, {}] = [{rows}, {cols}] with these sizes",
                                    r.display(&dims.names),
                                    c.display(&dims.names)
                                ),
                            )
                            .note("k must divide both the rows and the columns"),
                        );
                    }
                }
                rows.saturating_mul(cols)
            }
            SymTy::Scalar => 1,
        };
        total = total.saturating_add(elems);
    }
    if diags.is_empty() && total > MAX_PARAM_ELEMENTS as u128 {
        diags.push(
            Diagnostic::error(
                "E0046",
                format!(
                    "the parameters of `{}` would take {} GiB with these sizes",
                    checked.name,
                    (total * 4) >> 30
                ),
            )
            .note(format!(
                "the limit is {} GiB of float32 parameters",
                (MAX_PARAM_ELEMENTS * 4) >> 30
            )),
        );
    }
    if diags.is_empty() {
        Ok(())
    } else {
        Err(diags)
    }
}
