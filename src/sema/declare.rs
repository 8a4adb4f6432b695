//! Declarations: sizes, inputs, states, outputs and parameters, each name
//! bound once, and each parameter's binding to checkpoint tensors checked.

use super::*;
use crate::ir::Precision;

impl Checker {
    pub(super) fn declare(&mut self, file: &ast::File) {
        // Size variables first: shapes anywhere may use them.
        for item in &file.items {
            if let Item::Dim(d) = item {
                if let Some(&i) = self.dim_index.get(&d.name.name) {
                    let first = self.dims[i].span;
                    self.diags.push(
                        Diagnostic::error(
                            "E0010",
                            format!("size variable `{}` is declared more than once", d.name.name),
                        )
                        .primary(d.name.span, "declared again here")
                        .secondary(first, "first declared here"),
                    );
                    continue;
                }
                if let Some((0, span)) = d.default {
                    self.diags.push(
                        Diagnostic::error("E0041", format!("size `{}` is zero", d.name.name))
                            .primary(span, "sizes must be at least 1"),
                    );
                }
                self.dim_index.insert(d.name.name.clone(), self.dims.len());
                self.dims.push(DimInfo {
                    name: d.name.name.clone(),
                    default: d.default.map(|(v, _)| v),
                    span: d.name.span,
                });
            }
        }
        for item in &file.items {
            match item {
                Item::Dim(_) | Item::Equation(_) => {}
                Item::Input(p) | Item::State(p) | Item::Output(p) => {
                    let Some(len) = self.port_len(p) else {
                        self.poisoned.insert(p.name.name.clone());
                        continue;
                    };
                    let info = PortInfo {
                        name: p.name.name.clone(),
                        len,
                        span: p.name.span,
                    };
                    let r = match item {
                        Item::Input(_) => {
                            self.inputs.push(info);
                            Ref::Input(self.inputs.len() - 1)
                        }
                        Item::State(_) => {
                            self.states.push(info);
                            Ref::State(self.states.len() - 1)
                        }
                        _ => {
                            self.outputs.push(info);
                            Ref::Output(self.outputs.len() - 1)
                        }
                    };
                    self.bind_name(&p.name, r);
                }
                Item::Param(p) => self.declare_param(p),
            }
        }
        self.used_params = vec![false; self.params.len()];
        self.used_inputs = vec![false; self.inputs.len()];
        self.state_def = vec![None; self.states.len()];
        self.output_def = vec![None; self.outputs.len()];
    }

    pub(super) fn bind_name(&mut self, name: &Ident, r: Ref) -> bool {
        if super::functions::lookup(&name.name).is_some() {
            self.diags.push(
                Diagnostic::error(
                    "E0012",
                    format!("`{}` is the name of a function", name.name),
                )
                .primary(name.span, "this name would hide the function")
                .note(format!(
                    "the functions are {}; choose another name",
                    super::functions::names()
                )),
            );
            // Bound anyway, so that its uses do not cascade into more errors.
        }
        if let Some(&first) = self.decl_span.get(&name.name) {
            self.diags.push(dup_error(&name.name, name.span, first));
            return false;
        }
        self.decl_span.insert(name.name.clone(), name.span);
        self.scope.insert(name.name.clone(), r);
        true
    }

    pub(super) fn port_len(&mut self, p: &ast::Port) -> Option<Poly> {
        let dims: Vec<Option<Poly>> = p.shape.dims.iter().map(|d| self.dim_poly(d)).collect();
        if dims.len() != 1 {
            self.diags.push(
                Diagnostic::error("E0042", format!("`{}` must be a vector", p.name.name))
                    .primary(
                        p.shape.span,
                        format!("this shape has {} dimensions", dims.len()),
                    )
                    .note(
                        "inputs, states and outputs are vectors, like `[H]`; the batch is implicit",
                    ),
            );
            return None;
        }
        dims.into_iter().next().flatten()
    }

    pub(super) fn declare_param(&mut self, p: &ast::ParamDecl) {
        let dims: Vec<Option<Poly>> = p.shape.dims.iter().map(|d| self.dim_poly(d)).collect();
        let ty = match dims.as_slice() {
            // A scalar parameter (`[]`) is a vector of one, which broadcasts.
            [] => SymTy::Vector(Poly::constant(1)),
            [Some(n)] => SymTy::Vector(n.clone()),
            [Some(r), Some(c)] => SymTy::Matrix(r.clone(), c.clone()),
            [_] | [_, _] => {
                self.poisoned.insert(p.name.name.clone());
                return;
            }
            _ => {
                self.diags.push(
                    Diagnostic::error(
                        "E0042",
                        format!("parameter `{}` must be a vector or a matrix", p.name.name),
                    )
                    .primary(
                        p.shape.span,
                        format!("this shape has {} dimensions", dims.len()),
                    )
                    .note("write `[rows, cols]` for a matrix, `[len]` for a vector or `[]` for a number"),
                );
                self.poisoned.insert(p.name.name.clone());
                return;
            }
        };
        let binding = p
            .binding
            .iter()
            .filter_map(|s| self.check_source(&p.name.name, &ty, s))
            .collect();
        let precision = match &p.precision {
            None => Precision::F32,
            Some(q) => match Precision::from_name(&q.name) {
                Some(known) => known,
                None => {
                    self.diags.push(
                        Diagnostic::error(
                            "E0048",
                            format!("unknown precision `{}` for parameter `{}`", q.name, p.name.name),
                        )
                        .primary(q.span, "not a storage precision")
                        .note(if q.name == "circulant" {
                            "a block-circulant matrix names its block size: `param W: circulant(8)[H, X]`"
                        } else {
                            "write `f32` (the default), `bf16` or `int8` before the shape, as in `param W: bf16[H, X]`"
                        }),
                    );
                    self.poisoned.insert(p.name.name.clone());
                    return;
                }
            },
        };
        let circulant = match p.circulant {
            None => None,
            Some((k, span)) => {
                let problem = match (&ty, k) {
                    (SymTy::Matrix(..), 0) => Some("a block size of 0"),
                    (SymTy::Matrix(..), k) if k > super::dims::MAX_DIM => {
                        Some("a block larger than a size can be")
                    }
                    (SymTy::Matrix(..), _) => None,
                    _ => Some("only a matrix has circulant blocks"),
                };
                if let Some(problem) = problem {
                    self.diags.push(
                        Diagnostic::error(
                            "E0063",
                            format!("parameter `{}` cannot be `circulant({k})`", p.name.name),
                        )
                        .primary(span, problem)
                        .note(
                            "`param W: circulant(k)[R, C]` is a matrix of k x k circulant \
                             blocks (k at least 1, dividing R and C), stored as [R/k, C/k, k]",
                        ),
                    );
                    self.poisoned.insert(p.name.name.clone());
                    return;
                }
                Some((k as usize, span))
            }
        };
        let idx = self.params.len();
        if self.bind_name(&p.name, Ref::Param(idx)) {
            self.params.push(ParamInfo {
                name: p.name.name.clone(),
                ty,
                precision,
                circulant,
                binding,
                span: p.name.span,
            });
        }
    }

    /// Checks that a slice of a checkpoint tensor has the parameter's shape, where
    /// that is knowable before the checkpoint is read.
    pub(super) fn check_source(
        &mut self,
        param: &str,
        ty: &SymTy,
        s: &ast::Source,
    ) -> Option<SourceInfo> {
        let axes: Vec<Poly> = match ty {
            SymTy::Vector(n) => vec![n.clone()],
            SymTy::Matrix(r, c) => vec![r.clone(), c.clone()],
            SymTy::Scalar => vec![],
        };
        let mut indices = Vec::new();
        let mut ranges = 0;
        let mut ok = true;
        for ix in &s.indices {
            match ix {
                ast::Index::At(e) => indices.push(IndexInfo::At(self.dim_poly(e)?)),
                ast::Index::Range { start, end, span } => {
                    let start_p = match start {
                        Some(e) => Some(self.dim_poly(e)?),
                        None => None,
                    };
                    let end_p = match end {
                        Some(e) => Some(self.dim_poly(e)?),
                        None => None,
                    };
                    if let (Some(axis), Some(a), Some(b)) = (axes.get(ranges), &start_p, &end_p) {
                        let len = b.sub(a);
                        if &len != axis {
                            let names = self.dim_names();
                            self.diags.push(
                                Diagnostic::error(
                                    "E0043",
                                    format!("slice does not match the shape of `{param}`"),
                                )
                                .primary(
                                    *span,
                                    format!("this range has length {}", len.display(&names)),
                                )
                                .note(format!(
                                    "axis {ranges} of `{param}` has length {}",
                                    axis.display(&names)
                                )),
                            );
                            ok = false;
                        }
                    }
                    ranges += 1;
                    indices.push(IndexInfo::Range(start_p, end_p));
                }
            }
        }
        if ranges > axes.len() {
            self.diags.push(
                Diagnostic::error("E0043", format!("too many ranges for `{param}`"))
                    .primary(
                        s.span,
                        format!(
                            "{ranges} ranges select a {ranges}-dimensional slice, but `{param}` has {} dimensions",
                            axes.len()
                        ),
                    )
                    .note("index the leading axes with a single position (`w[0, 0..H]`) to drop them"),
            );
            ok = false;
        }
        ok.then(|| SourceInfo {
            tensor: s.tensor.clone(),
            indices,
        })
    }

    pub(super) fn dim_names(&self) -> Vec<String> {
        self.dims.iter().map(|d| d.name.clone()).collect()
    }

    pub(super) fn dim_poly(&mut self, e: &DimExpr) -> Option<Poly> {
        match &e.kind {
            DimKind::Int(n) => Some(Poly::constant(i64::try_from(*n).unwrap_or(i64::MAX))),
            DimKind::Var(v) => match self.dim_index.get(v) {
                Some(&i) => Some(Poly::var(i as u32)),
                None => {
                    let mut d = Diagnostic::error("E0040", format!("unknown size variable `{v}`"))
                        .primary(e.span, "not declared with `dim`");
                    d = match suggest(v, self.dims.iter().map(|d| d.name.as_str())) {
                        Some(s) => d.note(format!("did you mean `{s}`?")),
                        None => d.note(format!("declare it: `dim {v}`")),
                    };
                    self.diags.push(d);
                    None
                }
            },
            DimKind::Sum(terms) => {
                let mut acc = Poly::default();
                let mut ok = true;
                for (neg, t) in terms {
                    match self.dim_poly(t) {
                        Some(p) if *neg => acc = acc.sub(&p),
                        Some(p) => acc = acc.add(&p),
                        None => ok = false,
                    }
                }
                ok.then_some(acc)
            }
            DimKind::Product(factors) => {
                let mut acc = Poly::constant(1);
                let mut ok = true;
                for f in factors {
                    match self.dim_poly(f) {
                        Some(p) => acc = acc.mul(&p),
                        None => ok = false,
                    }
                }
                ok.then_some(acc)
            }
        }
    }
}
