//! Semantic checks: names, shapes, definitions and dependencies of a parsed cell.
//!
//! [`check`] walks the whole file and collects every error it finds (not only the
//! first), plus warnings for unused parameters and values. Shapes are compared
//! symbolically ([`poly::Poly`]), so `[H, X] @ [H]` is an error whatever sizes are
//! chosen later. The result, a [`Checked`] cell, has every name resolved and its
//! equations in dependency order; [`bind_dims`] then turns its size variables into
//! numbers and refuses sizes that are zero, negative, or too large to allocate.

pub mod lower;
pub mod poly;

use std::collections::HashMap;

use crate::diag::{Diagnostic, Span};
use crate::ir::UnaryOp;
use crate::syntax::ast::{self, AddOp, DimExpr, DimKind, Expr, ExprKind, Ident, Item};
use poly::Poly;

/// The type of a value, with sizes still symbolic.
#[derive(Clone, Debug, PartialEq)]
pub enum SymTy {
    /// A literal number; broadcasts over vectors.
    Scalar,
    /// A vector of the given length (per batch row, for step values).
    Vector(Poly),
    /// A matrix `[rows, cols]`; only parameters are matrices.
    Matrix(Poly, Poly),
}

#[derive(Clone, Debug)]
pub struct DimInfo {
    pub name: String,
    pub default: Option<u64>,
    pub span: Span,
}

#[derive(Clone, Debug)]
pub struct PortInfo {
    pub name: String,
    pub len: Poly,
    pub span: Span,
}

#[derive(Clone, Debug)]
pub struct ParamInfo {
    pub name: String,
    pub ty: SymTy,
    pub binding: Vec<SourceInfo>,
    pub span: Span,
}

/// Where a parameter is found in a checkpoint, with sizes symbolic.
#[derive(Clone, Debug)]
pub struct SourceInfo {
    pub tensor: String,
    pub indices: Vec<IndexInfo>,
    pub span: Span,
}

#[derive(Clone, Debug)]
pub enum IndexInfo {
    Range(Option<Poly>, Option<Poly>),
    At(Poly),
}

/// What a name refers to inside an equation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Ref {
    Input(usize),
    /// The state's value at the start of the step.
    State(usize),
    /// The state's value at the end of the step (`h'`).
    NextState(usize),
    Param(usize),
    Let(usize),
    Output(usize),
}

/// What an equation defines.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Target {
    Let(usize),
    State(usize),
    Output(usize),
}

#[derive(Clone, Debug)]
pub struct LetInfo {
    pub name: String,
    pub span: Span,
}

#[derive(Clone, Debug)]
pub struct Equation {
    pub target: Target,
    pub value: Expr,
    pub lhs_span: Span,
}

/// A cell whose names resolve, whose shapes agree, and whose equations are in an
/// order where every value is defined before it is used.
#[derive(Clone, Debug)]
pub struct Checked {
    pub name: String,
    pub dims: Vec<DimInfo>,
    pub inputs: Vec<PortInfo>,
    pub states: Vec<PortInfo>,
    pub outputs: Vec<PortInfo>,
    pub params: Vec<ParamInfo>,
    pub lets: Vec<LetInfo>,
    /// In dependency order.
    pub equations: Vec<Equation>,
    scope: HashMap<String, Ref>,
}

impl Checked {
    /// What an unprimed name refers to.
    pub fn resolve(&self, name: &str) -> Option<Ref> {
        self.scope.get(name).copied()
    }

    pub fn dim_names(&self) -> Vec<String> {
        self.dims.iter().map(|d| d.name.clone()).collect()
    }
}

/// Checks a parsed file. Returns the checked cell when there is no error, and
/// every diagnostic (errors and warnings) either way.
pub fn check(file: &ast::File, default_name: &str) -> (Option<Checked>, Vec<Diagnostic>) {
    let mut cx = Checker::default();
    cx.declare(file);
    cx.check_equations(file);
    cx.check_definitions();
    if cx.states.is_empty() && cx.outputs.is_empty() && !cx.diags.iter().any(Diagnostic::is_error) {
        cx.diags.push(
            Diagnostic::error(
                "E0057",
                "the cell computes nothing: it has no state and no output",
            )
            .primary(Span::new(0, 0), "in this file")
            .note("a cell needs at least `state h: [H]` and an equation `h' = ...`"),
        );
    }
    let order = cx.order_equations();
    cx.type_equations(&order);
    cx.warn_unused();
    let errors = cx.diags.iter().any(Diagnostic::is_error);
    let mut diags = std::mem::take(&mut cx.diags);
    diags.sort_by_key(|d| (d.labels.first().map(|l| l.span.start), d.severity));
    if errors {
        return (None, diags);
    }
    let equations = order
        .into_iter()
        .filter_map(|i| cx.equations[i].take())
        .collect();
    let checked = Checked {
        name: file
            .name
            .as_ref()
            .map_or_else(|| default_name.to_string(), |n| n.name.clone()),
        dims: cx.dims,
        inputs: cx.inputs,
        states: cx.states,
        outputs: cx.outputs,
        params: cx.params,
        lets: cx.lets,
        equations,
        scope: cx.scope,
    };
    (Some(checked), diags)
}

#[derive(Default)]
struct Checker {
    diags: Vec<Diagnostic>,
    dims: Vec<DimInfo>,
    dim_index: HashMap<String, usize>,
    inputs: Vec<PortInfo>,
    states: Vec<PortInfo>,
    outputs: Vec<PortInfo>,
    params: Vec<ParamInfo>,
    lets: Vec<LetInfo>,
    let_types: Vec<Option<SymTy>>,
    scope: HashMap<String, Ref>,
    /// Where each name was declared, for "first defined here" labels.
    decl_span: HashMap<String, Span>,
    /// Equations as written (taken out once ordered), with their dependencies.
    equations: Vec<Option<Equation>>,
    deps: Vec<Vec<(usize, Span)>>,
    /// Which equation defines a let, a state's next value, an output.
    let_def: Vec<Option<usize>>,
    state_def: Vec<Option<usize>>,
    output_def: Vec<Option<usize>>,
    used_params: Vec<bool>,
    used_lets: Vec<bool>,
    used_inputs: Vec<bool>,
    /// Names whose declaration was already reported as wrong: their uses are
    /// not reported again.
    poisoned: std::collections::HashSet<String>,
}

fn dup_error(name: &str, span: Span, first: Span) -> Diagnostic {
    Diagnostic::error("E0010", format!("`{name}` is defined more than once"))
        .primary(span, "defined again here")
        .secondary(first, "first defined here")
        .note("every name in a cell must be unique; rename one of them")
}

impl Checker {
    fn declare(&mut self, file: &ast::File) {
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

    fn bind_name(&mut self, name: &Ident, r: Ref) -> bool {
        if UnaryOp::function(&name.name).is_some() {
            self.diags.push(
                Diagnostic::error(
                    "E0012",
                    format!("`{}` is the name of a function", name.name),
                )
                .primary(name.span, "this name would hide the function")
                .note(format!(
                    "the functions are {}; choose another name",
                    UnaryOp::function_names()
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

    fn port_len(&mut self, p: &ast::Port) -> Option<Poly> {
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

    fn declare_param(&mut self, p: &ast::ParamDecl) {
        let dims: Vec<Option<Poly>> = p.shape.dims.iter().map(|d| self.dim_poly(d)).collect();
        let ty = match dims.as_slice() {
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
                    .note("write `[rows, cols]` for a matrix or `[len]` for a vector"),
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
        let idx = self.params.len();
        if self.bind_name(&p.name, Ref::Param(idx)) {
            self.params.push(ParamInfo {
                name: p.name.name.clone(),
                ty,
                binding,
                span: p.name.span,
            });
        }
    }

    /// Checks that a slice of a checkpoint tensor has the parameter's shape, where
    /// that is knowable before the checkpoint is read.
    fn check_source(&mut self, param: &str, ty: &SymTy, s: &ast::Source) -> Option<SourceInfo> {
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
            span: s.span,
        })
    }

    fn dim_names(&self) -> Vec<String> {
        self.dims.iter().map(|d| d.name.clone()).collect()
    }

    fn dim_poly(&mut self, e: &DimExpr) -> Option<Poly> {
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

    fn check_equations(&mut self, file: &ast::File) {
        // What each equation defines, so that uses may come before definitions.
        for item in &file.items {
            let Item::Equation(eq) = item else { continue };
            let idx = self.equations.len();
            let target = self.equation_target(eq, idx);
            self.equations.push(target.map(|t| Equation {
                target: t,
                value: eq.value.clone(),
                lhs_span: eq.lhs_span,
            }));
        }
        self.used_lets = vec![false; self.lets.len()];
        self.let_types = vec![None; self.lets.len()];
        self.deps = (0..self.equations.len())
            .map(|i| {
                let mut deps = Vec::new();
                if let Some(eq) = self.equations[i].clone() {
                    self.collect_deps(&eq.value, &mut deps);
                }
                deps
            })
            .collect();
    }

    /// The equations an expression reads (by index), and marks what it uses.
    fn collect_deps(&mut self, e: &Expr, deps: &mut Vec<(usize, Span)>) {
        match &e.kind {
            ExprKind::Number(_) => {}
            ExprKind::Var { name, primed } => {
                let def = match (self.scope.get(&name.name).copied(), primed) {
                    (Some(Ref::State(s)), true) => self.state_def[s],
                    (Some(Ref::Let(l)), false) => {
                        self.used_lets[l] = true;
                        self.let_def[l]
                    }
                    (Some(Ref::Output(o)), false) => self.output_def[o],
                    (Some(Ref::Param(p)), false) => {
                        self.used_params[p] = true;
                        None
                    }
                    (Some(Ref::Input(i)), false) => {
                        self.used_inputs[i] = true;
                        None
                    }
                    _ => None,
                };
                if let Some(d) = def {
                    deps.push((d, e.span));
                }
            }
            ExprKind::Call { args, .. } => {
                for a in args {
                    self.collect_deps(a, deps);
                }
            }
            ExprKind::Neg(inner) => self.collect_deps(inner, deps),
            ExprKind::Sum(terms) => {
                for (_, t) in terms {
                    self.collect_deps(t, deps);
                }
            }
            ExprKind::Product(factors) => {
                for (_, f) in factors {
                    self.collect_deps(f, deps);
                }
            }
            ExprKind::MatVec { matrices, vector } => {
                for m in matrices {
                    if let Some(Ref::Param(p)) = self.scope.get(&m.name) {
                        self.used_params[*p] = true;
                    }
                }
                self.collect_deps(vector, deps);
            }
        }
    }

    /// Types the equations in dependency order, so every value read is typed first.
    fn type_equations(&mut self, order: &[usize]) {
        for &i in order {
            self.type_equation(i);
        }
    }

    fn equation_target(&mut self, eq: &ast::Equation, idx: usize) -> Option<Target> {
        let name = &eq.name;
        let found = self.scope.get(&name.name).copied();
        if found.is_none() && self.poisoned.contains(&name.name) {
            return None;
        }
        if eq.primed {
            return match found {
                Some(Ref::State(s)) => {
                    if let Some(prev) = self.state_def[s] {
                        let first = self.equations[prev]
                            .as_ref()
                            .map_or(name.span, |e| e.lhs_span);
                        self.diags.push(
                            Diagnostic::error(
                                "E0051",
                                format!("state `{}` is updated more than once", name.name),
                            )
                            .primary(eq.lhs_span, "updated again here")
                            .secondary(first, "first updated here")
                            .note("a state takes exactly one next value per step"),
                        );
                        return None;
                    }
                    self.state_def[s] = Some(idx);
                    Some(Target::State(s))
                }
                _ => {
                    let d = Diagnostic::error(
                        "E0052",
                        format!(
                            "`{}'` names the next value of a state, but `{}` is not a state",
                            name.name, name.name
                        ),
                    )
                    .primary(eq.lhs_span, "not a state");
                    self.diags.push(match found {
                        None => d.note(format!(
                            "declare it: `state {}: [H]`, or drop the `'`",
                            name.name
                        )),
                        Some(_) => {
                            d.note("only states declared with `state` take a primed equation")
                        }
                    });
                    None
                }
            };
        }
        match found {
            Some(Ref::Output(o)) => {
                if let Some(prev) = self.output_def[o] {
                    let first = self.equations[prev]
                        .as_ref()
                        .map_or(name.span, |e| e.lhs_span);
                    self.diags.push(
                        Diagnostic::error(
                            "E0010",
                            format!("output `{}` is defined more than once", name.name),
                        )
                        .primary(eq.lhs_span, "defined again here")
                        .secondary(first, "first defined here"),
                    );
                    return None;
                }
                self.output_def[o] = Some(idx);
                Some(Target::Output(o))
            }
            Some(Ref::State(_)) => {
                self.diags.push(
                    Diagnostic::error(
                        "E0053",
                        format!(
                            "`{}` is a state; its next value is `{}'`",
                            name.name, name.name
                        ),
                    )
                    .primary(eq.lhs_span, "assigns the state itself")
                    .note(format!("write `{}' = ...`", name.name)),
                );
                None
            }
            Some(Ref::Input(_)) | Some(Ref::Param(_)) => {
                let what = if matches!(found, Some(Ref::Input(_))) {
                    "an input"
                } else {
                    "a parameter"
                };
                self.diags.push(
                    Diagnostic::error(
                        "E0054",
                        format!("cannot assign to `{}`: it is {what}", name.name),
                    )
                    .primary(eq.lhs_span, "assigned here")
                    .secondary(self.decl_span[&name.name], "declared here")
                    .note("inputs and parameters are given, not computed; choose a new name"),
                );
                None
            }
            Some(Ref::Let(_)) | Some(Ref::NextState(_)) => {
                let first = self.decl_span.get(&name.name).copied().unwrap_or(name.span);
                self.diags.push(dup_error(&name.name, name.span, first));
                None
            }
            None => {
                let l = self.lets.len();
                if !self.bind_name(name, Ref::Let(l)) {
                    return None;
                }
                self.lets.push(LetInfo {
                    name: name.name.clone(),
                    span: name.span,
                });
                self.let_def.push(Some(idx));
                Some(Target::Let(l))
            }
        }
    }

    fn type_equation(&mut self, i: usize) {
        let Some(eq) = self.equations[i].clone() else {
            return;
        };
        let ty = self.type_expr(&eq.value);
        let names = self.dim_names();
        let (expect, what) = match eq.target {
            Target::Let(l) => {
                self.let_types[l] = ty;
                return;
            }
            Target::State(s) => (&self.states[s], "state"),
            Target::Output(o) => (&self.outputs[o], "output"),
        };
        let want = SymTy::Vector(expect.len.clone());
        match &ty {
            Some(t) if *t != want => {
                let d = Diagnostic::error(
                    "E0032",
                    format!("{what} `{}` has the wrong shape", expect.name),
                )
                .primary(eq.value.span, format!("this is {}", show_ty(t, &names)))
                .secondary(expect.span, format!("declared {}", show_ty(&want, &names)));
                self.diags.push(d);
            }
            _ => {}
        }
    }

    fn type_expr(&mut self, e: &Expr) -> Option<SymTy> {
        match &e.kind {
            ExprKind::Number(v) => {
                if !v.is_finite() {
                    self.diags.push(
                        Diagnostic::error("E0022", "number out of range")
                            .primary(e.span, "too large for a float"),
                    );
                }
                Some(SymTy::Scalar)
            }
            ExprKind::Var { name, primed } => self.type_var(name, *primed, e.span),
            ExprKind::Call { func, args } => {
                let arg_tys: Vec<Option<SymTy>> = args.iter().map(|a| self.type_expr(a)).collect();
                if UnaryOp::function(&func.name).is_none() {
                    let mut d =
                        Diagnostic::error("E0060", format!("unknown function `{}`", func.name))
                            .primary(func.span, "not a function of the language");
                    let names = UnaryOp::FUNCTIONS.iter().map(|o| o.name());
                    d = match suggest(&func.name, names) {
                        Some(s) => d.note(format!("did you mean `{s}`?")),
                        None => d.note(format!("the functions are {}", UnaryOp::function_names())),
                    };
                    self.diags.push(d);
                    return None;
                }
                if args.len() != 1 {
                    self.diags.push(
                        Diagnostic::error(
                            "E0061",
                            format!(
                                "`{}` takes 1 argument but {} were given",
                                func.name,
                                args.len()
                            ),
                        )
                        .primary(e.span, "wrong number of arguments")
                        .note(format!("write `{}(v)`", func.name)),
                    );
                    return None;
                }
                arg_tys.into_iter().next().flatten()
            }
            ExprKind::Neg(inner) => self.type_expr(inner),
            ExprKind::Sum(terms) => {
                let items: Vec<(Span, Option<SymTy>)> = terms
                    .iter()
                    .map(|(_, t)| (t.span, self.type_expr(t)))
                    .collect();
                self.elementwise(&items, "+")
            }
            ExprKind::Product(factors) => {
                let items: Vec<(Span, Option<SymTy>)> = factors
                    .iter()
                    .map(|(_, f)| (f.span, self.type_expr(f)))
                    .collect();
                self.elementwise(&items, "*")
            }
            ExprKind::MatVec { matrices, vector } => {
                let mut ty = self.type_expr(vector)?;
                let mut operand_span = vector.span;
                for m in matrices.iter().rev() {
                    let names = self.dim_names();
                    let (rows, cols) = match self.scope.get(&m.name).copied() {
                        Some(Ref::Param(p)) => match &self.params[p].ty {
                            SymTy::Matrix(r, c) => (r.clone(), c.clone()),
                            other => {
                                self.diags.push(
                                        Diagnostic::error(
                                            "E0033",
                                            format!("`{}` is not a matrix", m.name),
                                        )
                                        .primary(m.span, format!("this is {}", show_ty(other, &names)))
                                        .secondary(self.params[p].span, "declared here")
                                        .note("`@` multiplies a matrix `[rows, cols]` by a vector `[cols]`; use `*` for element-wise products"),
                                    );
                                return None;
                            }
                        },
                        Some(_) => {
                            self.diags.push(
                                Diagnostic::error(
                                    "E0033",
                                    format!("`{}` is not a matrix parameter", m.name),
                                )
                                .primary(m.span, "only parameters can be matrices")
                                .note("declare it: `param W: [rows, cols]`"),
                            );
                            return None;
                        }
                        None => {
                            self.undefined(m);
                            return None;
                        }
                    };
                    match &ty {
                        SymTy::Vector(n) if *n == cols => {}
                        other => {
                            let shown = show_ty(other, &names);
                            self.diags.push(
                                Diagnostic::error(
                                    "E0031",
                                    format!(
                                        "shape mismatch in `{} @ ...`: `{}` is [{}, {}] and the vector is {}",
                                        m.name,
                                        m.name,
                                        rows.display(&names),
                                        cols.display(&names),
                                        shown
                                    ),
                                )
                                .primary(operand_span, format!("this is {shown}"))
                                .secondary(
                                    m.span,
                                    format!("expects a vector of length {}", cols.display(&names)),
                                )
                                .note("the number of columns of the matrix must equal the length of the vector"),
                            );
                            return None;
                        }
                    }
                    ty = SymTy::Vector(rows);
                    operand_span = m.span.to(operand_span);
                }
                Some(ty)
            }
        }
    }

    fn type_var(&mut self, name: &Ident, primed: bool, span: Span) -> Option<SymTy> {
        let found = self.scope.get(&name.name).copied();
        let names = self.dim_names();
        if primed {
            return match found {
                Some(Ref::State(s)) => Some(SymTy::Vector(self.states[s].len.clone())),
                Some(_) => {
                    self.diags.push(
                        Diagnostic::error(
                            "E0052",
                            format!(
                                "`{}` is not a state, so `{}'` means nothing",
                                name.name, name.name
                            ),
                        )
                        .primary(span, "only states have a next value"),
                    );
                    None
                }
                None => {
                    self.undefined(name);
                    None
                }
            };
        }
        match found {
            None => {
                self.undefined(name);
                None
            }
            Some(Ref::Input(i)) => Some(SymTy::Vector(self.inputs[i].len.clone())),
            Some(Ref::State(s)) => Some(SymTy::Vector(self.states[s].len.clone())),
            Some(Ref::Param(p)) => match &self.params[p].ty {
                SymTy::Matrix(r, c) => {
                    self.diags.push(
                        Diagnostic::error(
                            "E0021",
                            format!("matrix `{}` used as a vector", name.name),
                        )
                        .primary(
                            span,
                            format!(
                                "this is a [{}, {}] matrix",
                                r.display(&names),
                                c.display(&names)
                            ),
                        )
                        .note(format!("apply it to a vector with `{} @ v`", name.name)),
                    );
                    None
                }
                t => Some(t.clone()),
            },
            Some(Ref::Let(l)) => self.let_types[l].clone(),
            Some(Ref::Output(o)) => Some(SymTy::Vector(self.outputs[o].len.clone())),
            Some(Ref::NextState(_)) => None,
        }
    }

    fn undefined(&mut self, name: &Ident) {
        if self.poisoned.contains(&name.name) {
            return;
        }
        let candidates: Vec<&str> = self.scope.keys().map(String::as_str).collect();
        let mut d = Diagnostic::error("E0011", format!("undefined name `{}`", name.name))
            .primary(name.span, "not declared or defined anywhere in this cell");
        d = match suggest(&name.name, candidates.into_iter()) {
            Some(s) => d.note(format!("did you mean `{s}`?")),
            None => {
                d.note("declare it with `input`, `state` or `param`, or define it with an equation")
            }
        };
        self.diags.push(d);
    }

    /// The type of an element-wise combination: scalars broadcast, vectors must agree.
    fn elementwise(&mut self, items: &[(Span, Option<SymTy>)], op: &str) -> Option<SymTy> {
        let mut result: Option<(Span, SymTy)> = None;
        let mut ok = true;
        for (span, ty) in items {
            let Some(ty) = ty else {
                ok = false;
                continue;
            };
            match (&result, ty) {
                (_, SymTy::Scalar) => {}
                (None, t) => result = Some((*span, t.clone())),
                (Some((_, SymTy::Scalar)), t) => result = Some((*span, t.clone())),
                (Some((first_span, first)), t) => {
                    if first != t {
                        let names = self.dim_names();
                        self.diags.push(
                            Diagnostic::error(
                                "E0030",
                                format!("element-wise `{op}` of vectors of different lengths"),
                            )
                            .primary(*span, format!("this is {}", show_ty(t, &names)))
                            .secondary(*first_span, format!("this is {}", show_ty(first, &names)))
                            .note(
                                "element-wise operations need vectors of one length (or a number)",
                            ),
                        );
                        ok = false;
                    }
                }
            }
        }
        if !ok {
            return None;
        }
        Some(result.map_or(SymTy::Scalar, |(_, t)| t))
    }

    fn check_definitions(&mut self) {
        for (s, def) in self.state_def.clone().into_iter().enumerate() {
            if def.is_none() {
                let st = &self.states[s];
                self.diags.push(
                    Diagnostic::error("E0050", format!("state `{}` is never updated", st.name))
                        .primary(
                            st.span,
                            "declared here, but no equation gives its next value",
                        )
                        .note(format!(
                            "write `{}' = ...` (or `{}' = {}` to keep it unchanged)",
                            st.name, st.name, st.name
                        )),
                );
            }
        }
        for (o, def) in self.output_def.clone().into_iter().enumerate() {
            if def.is_none() {
                let out = &self.outputs[o];
                self.diags.push(
                    Diagnostic::error("E0055", format!("output `{}` is never defined", out.name))
                        .primary(out.span, "declared here, but no equation defines it")
                        .note(format!("write `{} = ...`", out.name)),
                );
            }
        }
    }

    /// Orders the equations so that each comes after those it reads; reports cycles.
    fn order_equations(&mut self) -> Vec<usize> {
        let n = self.equations.len();
        let mut indegree = vec![0usize; n];
        let mut users: Vec<Vec<usize>> = vec![Vec::new(); n];
        for (i, deps) in self.deps.iter().enumerate() {
            let mut seen = std::collections::HashSet::new();
            for &(d, _) in deps {
                if seen.insert(d) {
                    indegree[i] += 1;
                    users[d].push(i);
                }
            }
        }
        // Kahn's algorithm, taking the earliest ready equation in source order.
        let mut ready: std::collections::BTreeSet<usize> =
            (0..n).filter(|&i| indegree[i] == 0).collect();
        let mut order = Vec::with_capacity(n);
        while let Some(i) = ready.pop_first() {
            order.push(i);
            for &u in &users[i] {
                indegree[u] -= 1;
                if indegree[u] == 0 {
                    ready.insert(u);
                }
            }
        }
        if order.len() < n {
            self.report_cycles(&indegree);
        }
        order
    }

    fn report_cycles(&mut self, indegree: &[usize]) {
        // Every equation left with a positive in-degree is on a cycle or reads one.
        // For each not yet reported, look for a path from it back to itself (breadth
        // first, so the cycle shown is a shortest one); equations that only read a
        // cycle have none.
        let n = indegree.len();
        let mut reported = vec![false; n];
        for start in 0..n {
            if indegree[start] == 0 || reported[start] {
                continue;
            }
            let mut parent: Vec<Option<(usize, Span)>> = vec![None; n];
            let mut queue = std::collections::VecDeque::from([start]);
            let mut seen = vec![false; n];
            let mut closing: Option<(usize, Span)> = None;
            'search: while let Some(cur) = queue.pop_front() {
                for &(next, span) in &self.deps[cur] {
                    if indegree[next] == 0 {
                        continue;
                    }
                    if next == start {
                        closing = Some((cur, span));
                        break 'search;
                    }
                    if !seen[next] {
                        seen[next] = true;
                        parent[next] = Some((cur, span));
                        queue.push_back(next);
                    }
                }
            }
            let Some((last, last_span)) = closing else {
                continue;
            };
            // Walk back from `last` to `start`: the cycle is start -> ... -> last -> start,
            // each step with the span where the value is read.
            let mut cycle: Vec<(usize, Span)> = vec![(last, last_span)];
            let mut cur = last;
            while cur != start {
                let Some((prev, span)) = parent[cur] else {
                    break;
                };
                cycle.push((prev, span));
                cur = prev;
            }
            cycle.reverse();
            for (i, _) in &cycle {
                reported[*i] = true;
            }
            self.push_cycle(&cycle);
        }
    }

    /// Reports one cycle: `cycle[k]` is an equation and the span where it reads the next.
    fn push_cycle(&mut self, cycle: &[(usize, Span)]) {
        let name_of = |i: usize| -> String {
            match self.equations[i].as_ref().map(|e| e.target) {
                Some(Target::Let(l)) => self.lets[l].name.clone(),
                Some(Target::State(s)) => format!("{}'", self.states[s].name),
                Some(Target::Output(o)) => self.outputs[o].name.clone(),
                None => "?".into(),
            }
        };
        let first = cycle[0].0;
        let chain: Vec<String> = cycle
            .iter()
            .map(|(i, _)| format!("`{}`", name_of(*i)))
            .chain(std::iter::once(format!("`{}`", name_of(first))))
            .collect();
        let head = self.equations[first]
            .as_ref()
            .map_or(Span::default(), |e| e.lhs_span);
        let last = cycle[cycle.len() - 1];
        let mut d = Diagnostic::error(
            "E0056",
            format!("`{}` depends on itself within one step", name_of(first)),
        )
        .primary(last.1, format!("`{}` is read here", name_of(first)))
        .secondary(head, "defined here");
        for k in 0..cycle.len() - 1 {
            let (i, span) = cycle[k];
            d = d.secondary(
                span,
                format!("`{}` reads `{}`", name_of(i), name_of(cycle[k + 1].0)),
            );
        }
        d = d.note(format!("the cycle: {}", chain.join(" -> ")));
        d = d.note("to use a value from the previous step, make it a state and read it unprimed");
        self.diags.push(d);
    }

    fn warn_unused(&mut self) {
        for (p, used) in self.used_params.iter().enumerate() {
            if !used {
                let param = &self.params[p];
                self.diags.push(
                    Diagnostic::warning(
                        "W0001",
                        format!("parameter `{}` is never used", param.name),
                    )
                    .primary(param.span, "declared here")
                    .note("remove it, or use it in an equation"),
                );
            }
        }
        for (l, used) in self.used_lets.iter().enumerate() {
            if !used {
                let v = &self.lets[l];
                self.diags.push(
                    Diagnostic::warning("W0002", format!("value `{}` is never used", v.name))
                        .primary(v.span, "defined here")
                        .note("it does not reach any state or output"),
                );
            }
        }
        for (i, used) in self.used_inputs.iter().enumerate() {
            if !used {
                let v = &self.inputs[i];
                self.diags.push(
                    Diagnostic::warning("W0003", format!("input `{}` is never used", v.name))
                        .primary(v.span, "declared here"),
                );
            }
        }
    }
}

/// `[H]`, `[H, X]` or `a number`, for messages.
pub fn show_ty(t: &SymTy, names: &[String]) -> String {
    match t {
        SymTy::Scalar => "a number".into(),
        SymTy::Vector(n) => format!("[{}]", n.display(names)),
        SymTy::Matrix(r, c) => format!("[{}, {}]", r.display(names), c.display(names)),
    }
}

/// The closest candidate by edit distance, if it is close enough to be a typo.
pub fn suggest<'a>(name: &str, candidates: impl Iterator<Item = &'a str>) -> Option<&'a str> {
    // Short names are too alike to guess at, unless only the case differs.
    let limit = name.chars().count() / 3;
    candidates
        .filter(|c| *c != name)
        .map(|c| {
            let d = if c.eq_ignore_ascii_case(name) {
                0
            } else {
                edit_distance(name, c)
            };
            (d, c)
        })
        .filter(|(d, _)| *d <= limit)
        .min()
        .map(|(_, c)| c)
}

fn edit_distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    if a.len().abs_diff(b.len()) > 3 {
        return usize::MAX;
    }
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.iter().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            let sub = prev[j] + usize::from(ca != cb);
            cur[j + 1] = sub.min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
}

/// Concrete sizes for a checked cell: defaults from the file, overridden by the
/// caller's values, each at least 1.
#[derive(Clone, Debug, PartialEq)]
pub struct Dims {
    pub names: Vec<String>,
    pub values: Vec<u64>,
}

impl Dims {
    pub fn get(&self, name: &str) -> Option<u64> {
        self.names
            .iter()
            .position(|n| n == name)
            .map(|i| self.values[i])
    }

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

/// Binds every size variable; reports unbound, unknown, zero and oversized ones.
pub fn bind_dims(checked: &Checked, given: &[(String, u64)]) -> Result<Dims, Vec<Diagnostic>> {
    let mut diags = Vec::new();
    let mut values = Vec::with_capacity(checked.dims.len());
    for (name, _) in given {
        if !checked.dims.iter().any(|d| &d.name == name) {
            let mut d = Diagnostic::error(
                "E0044",
                format!("`{name}` is not a size variable of cell `{}`", checked.name),
            );
            d = match suggest(name, checked.dims.iter().map(|d| d.name.as_str())) {
                Some(s) => d.note(format!("did you mean `{s}`?")),
                None => d.note(format!(
                    "its size variables are: {}",
                    if checked.dims.is_empty() {
                        "(none)".to_string()
                    } else {
                        checked.dim_names().join(", ")
                    }
                )),
            };
            diags.push(d);
        }
    }
    for d in &checked.dims {
        let v = given
            .iter()
            .rev()
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
fn check_sizes(checked: &Checked, dims: &Dims) -> Result<(), Vec<Diagnostic>> {
    let mut diags = Vec::new();
    let mut total: u128 = 0;
    let check =
        |what: &str, name: &str, span: Span, p: &Poly, diags: &mut Vec<Diagnostic>| -> u128 {
            match dims.eval(p) {
                Some(v) if v >= 1 && v <= MAX_DIM as i128 * MAX_DIM as i128 => v as u128,
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
            SymTy::Matrix(r, c) => check("parameter", &p.name, p.span, r, &mut diags)
                .saturating_mul(check("parameter", &p.name, p.span, c, &mut diags)),
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

/// Turns the `AddOp` of a sum term into a sign (true for minus).
pub fn is_sub(op: AddOp) -> bool {
    op == AddOp::Sub
}
