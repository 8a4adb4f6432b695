//! Semantic checks: names, shapes, definitions and dependencies of a parsed cell.
//!
//! [`check`] walks the whole file and collects every error it finds (not only the
//! first), plus warnings for unused parameters and values. Shapes are compared
//! symbolically ([`poly::Poly`]), so `[H, X] @ [H]` is an error whatever sizes are
//! chosen later. The result, a [`Checked`] cell, has every name resolved and its
//! equations in dependency order; [`bind_dims`] then turns its size variables into
//! numbers and refuses sizes that are zero, negative, or too large to allocate.

mod declare;
mod dims;
pub mod functions;
pub mod lower;
mod order;
pub mod poly;
mod shapes;

pub use dims::{bind_dims, infer_dims, Dims, SizeFact};

use std::collections::HashMap;

use crate::diag::{Diagnostic, Span};
use crate::syntax::ast::{self, DimExpr, DimKind, Expr, ExprKind, Ident, Item};
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
    pub precision: crate::ir::Precision,
    /// `circulant(k)`: its `k` and where it is written.
    pub circulant: Option<(usize, Span)>,
    pub binding: Vec<SourceInfo>,
    pub span: Span,
}

/// Where a parameter is found in a checkpoint, with sizes symbolic.
#[derive(Clone, Debug)]
pub struct SourceInfo {
    pub tensor: String,
    pub indices: Vec<IndexInfo>,
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

/// `[H]`, `[H, X]` or `a number`, for messages.
pub fn show_ty(t: &SymTy, names: &[String]) -> String {
    match t {
        SymTy::Scalar => "a number".into(),
        SymTy::Vector(n) => format!("[{}]", n.display(names)),
        SymTy::Matrix(r, c) => format!("[{}, {}]", r.display(names), c.display(names)),
    }
}

pub(crate) use crate::diag::suggest;
