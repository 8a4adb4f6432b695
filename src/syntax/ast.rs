//! The abstract syntax tree of a `.rnn` file, with a span on every node.
//!
//! Sums, products and matrix chains are n-ary lists, not nested binary nodes, so
//! that a long sum does not make a deep tree: the depth of an expression is bounded
//! by its parentheses and calls, which the parser limits.

use crate::diag::Span;

#[derive(Clone, Debug, PartialEq)]
pub struct Ident {
    pub name: String,
    pub span: Span,
}

/// A whole file: an optional `cell NAME` header and the items in source order.
#[derive(Clone, Debug, PartialEq)]
pub struct File {
    pub name: Option<Ident>,
    pub items: Vec<Item>,
}

#[derive(Clone, Debug, PartialEq)]
pub enum Item {
    Dim(DimDecl),
    Input(Port),
    State(Port),
    Output(Port),
    Param(ParamDecl),
    Equation(Equation),
}

/// `dim H` or `dim H = 128` (a default the command line may override).
#[derive(Clone, Debug, PartialEq)]
pub struct DimDecl {
    pub name: Ident,
    pub default: Option<(u64, Span)>,
}

/// `x: [X]`, as declared by `input`, `state` or `output`.
#[derive(Clone, Debug, PartialEq)]
pub struct Port {
    pub name: Ident,
    pub shape: Shape,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Shape {
    pub dims: Vec<DimExpr>,
    pub span: Span,
}

/// `param W: [H, X] = weight_ih_l0[0..H] | weight_ih[0..H]`.
#[derive(Clone, Debug, PartialEq)]
pub struct ParamDecl {
    pub name: Ident,
    /// The storage written before the shape (`bf16[H, X]`), if any.
    pub precision: Option<Ident>,
    /// `circulant(k)` before the shape, if written: `k` (0 when it does not
    /// fit in 64 bits, which the parser reports) and where.
    pub circulant: Option<(u64, Span)>,
    pub shape: Shape,
    /// Where the parameter lives in a checkpoint; empty means "under its own name".
    pub binding: Vec<Source>,
}

/// One place a parameter may be found: a tensor, optionally indexed and sliced.
#[derive(Clone, Debug, PartialEq)]
pub struct Source {
    pub tensor: String,
    pub tensor_span: Span,
    pub indices: Vec<Index>,
    pub span: Span,
}

#[derive(Clone, Debug, PartialEq)]
pub enum Index {
    /// `a..b`; a missing bound is the start or the end of the axis.
    Range {
        start: Option<DimExpr>,
        end: Option<DimExpr>,
        span: Span,
    },
    /// A single position: the axis is dropped.
    At(DimExpr),
}

/// A size expression over size variables.
#[derive(Clone, Debug, PartialEq)]
pub struct DimExpr {
    pub kind: DimKind,
    pub span: Span,
}

#[derive(Clone, Debug, PartialEq)]
pub enum DimKind {
    Int(u64),
    Var(String),
    /// Terms with their signs (`true` for minus).
    Sum(Vec<(bool, DimExpr)>),
    Product(Vec<DimExpr>),
}

/// `name = expr` or `name' = expr`.
#[derive(Clone, Debug, PartialEq)]
pub struct Equation {
    pub name: Ident,
    pub primed: bool,
    pub value: Expr,
    /// The left-hand side, `c'` included.
    pub lhs_span: Span,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Expr {
    pub kind: ExprKind,
    pub span: Span,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AddOp {
    Add,
    Sub,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MulOp {
    Mul,
    Div,
}

#[derive(Clone, Debug, PartialEq)]
pub enum ExprKind {
    Number(f64),
    /// A name; `primed` reads the value a state takes at the end of this step.
    Var {
        name: Ident,
        primed: bool,
    },
    Call {
        func: Ident,
        args: Vec<Expr>,
    },
    Neg(Box<Expr>),
    /// `a + b - c`: the first operator is always `Add`.
    Sum(Vec<(AddOp, Expr)>),
    /// `a * b / c`: the first operator is always `Mul`.
    Product(Vec<(MulOp, Expr)>),
    /// `W @ U @ v`, meaning `W @ (U @ v)`: matrices outermost first.
    MatVec {
        matrices: Vec<Ident>,
        vector: Box<Expr>,
    },
}
