//! The optimizer: a fixed pipeline of small passes, each a function from IR to IR.
//!
//! | pass       | what it does |
//! |------------|--------------|
//! | `simplify` | merges identical instructions (so a product read twice becomes one), folds constants and identities (`x * 1`, `--x`) |
//! | `concat`   | sibling concatenation: in one sum, `W_a @ a + W_b @ b + b_1 + b_2` becomes one product of `[W_a W_b]` with `[a; b]`, biases folded |
//! | `stack`    | gate stacking: products with no path between them become one product with stacked row blocks |
//! | `fuse`     | epilogue fusion: the element-wise work between products becomes one region per stage and length |
//! | `dce`      | drops what nothing reads |
//!
//! The driver ([`optimize`]) runs them in that order, verifies the IR after each
//! (the verifier is cheap next to compilation), hands each stage to a dump hook
//! (the CLI's `--emit stages`, the snapshot tests), and can stop after any pass to
//! bisect a miscompile. Passes explain their decisions as [`Remark`]s.
//!
//! Architecture invariant: the optimizer never changes what a cell computes, up to
//! f64 rounding (tested against the interpreter on random cells), and running it
//! twice changes nothing.

mod concat;
mod fuse;
mod legalize;
mod simplify;
mod stack;

pub use legalize::legalize;

use std::fmt;

use crate::diag::{Diagnostic, Span};
use crate::ir::{verify, Cell, Op};

/// A decision a pass made, or declined, with where in the source it applies.
#[derive(Clone, Debug, PartialEq)]
pub struct Remark {
    pub pass: &'static str,
    pub kind: RemarkKind,
    pub span: Option<Span>,
    pub message: String,
    /// Other places involved, with a label each.
    pub related: Vec<(Span, String)>,
    pub notes: Vec<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RemarkKind {
    /// A rewrite was done.
    Applied,
    /// A rewrite was possible in form but not legal, or not done: says why.
    Missed,
}

impl Remark {
    /// The remark as a note-level diagnostic, to render against the source.
    pub fn to_diagnostic(&self) -> Diagnostic {
        let code = match self.kind {
            RemarkKind::Applied => "R-fused",
            RemarkKind::Missed => "R-not-fused",
        };
        let mut d = Diagnostic::note_at(code, format!("[{}] {}", self.pass, self.message));
        if let Some(s) = self.span {
            d = d.primary(s, "");
        }
        for (s, l) in &self.related {
            d = d.secondary(*s, l.clone());
        }
        for n in &self.notes {
            d = d.note(n.clone());
        }
        d
    }
}

/// What passes share: the source text (for naming values in remarks) and the
/// remarks collected so far.
#[derive(Default)]
pub struct Ctx<'a> {
    pub source: Option<&'a str>,
    pub remarks: Vec<Remark>,
}

impl Ctx<'_> {
    pub fn remark(
        &mut self,
        pass: &'static str,
        kind: RemarkKind,
        span: Option<Span>,
        message: String,
    ) -> &mut Remark {
        self.remarks.push(Remark {
            pass,
            kind,
            span,
            message,
            related: Vec::new(),
            notes: Vec::new(),
        });
        let last = self.remarks.len() - 1;
        &mut self.remarks[last]
    }
}

/// What a pass returns: whether it changed the IR, or an internal error (a
/// case the pass's rules say cannot happen: a bug, reported with the pass).
pub type PassResult = Result<bool, String>;

/// A pass: a name (for `--after`, dumps and remarks) and a function that says
/// whether it changed anything.
pub(crate) struct Pass {
    pub name: &'static str,
    pub run: fn(&mut Cell, &mut Ctx<'_>) -> PassResult,
}

/// The pipeline, in order.
pub(crate) const PASSES: &[Pass] = &[
    Pass {
        name: "simplify",
        run: simplify::simplify,
    },
    Pass {
        name: "concat",
        run: concat::concat_siblings,
    },
    Pass {
        name: "stack",
        run: stack::stack_gates,
    },
    Pass {
        name: "fuse",
        run: fuse::fuse_epilogue,
    },
    Pass {
        name: "dce",
        run: dce,
    },
];

/// The names accepted by `--after`: `lower` (before any pass) and each pass.
pub fn stage_names() -> Vec<&'static str> {
    std::iter::once("lower")
        .chain(PASSES.iter().map(|p| p.name))
        .collect()
}

#[derive(Clone, Debug)]
pub struct Options {
    /// Stop after this pass (`lower` stops before the first).
    pub stop_after: Option<String>,
    /// Verify after every pass.
    pub verify: bool,
}

impl Default for Options {
    fn default() -> Options {
        Options {
            stop_after: None,
            verify: true,
        }
    }
}

/// A pass left the IR invalid: a compiler bug, reported with the pass and the IR.
#[derive(Clone, Debug)]
pub struct OptError {
    pub pass: String,
    pub error: verify::VerifyError,
    pub ir: String,
}

impl fmt::Display for OptError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "internal error: the IR is invalid after pass `{}`: {}\n{}",
            self.pass, self.error, self.ir
        )
    }
}

impl std::error::Error for OptError {}

/// Runs the pipeline. `dump` sees the IR before the first pass (`lower`) and
/// after each pass that ran. Returns the passes that changed the IR (none,
/// on an IR the pipeline already optimized: `tests/opt.rs`).
pub fn optimize(
    cell: &mut Cell,
    opts: &Options,
    ctx: &mut Ctx<'_>,
    dump: &mut dyn FnMut(&str, &Cell),
) -> Result<Vec<&'static str>, OptError> {
    if let Some(stop) = &opts.stop_after {
        if !stage_names().contains(&stop.as_str()) {
            return Err(OptError {
                pass: stop.clone(),
                error: verify::VerifyError {
                    inst: None,
                    message: format!("no such pass; the stages are {}", stage_names().join(", ")),
                },
                ir: String::new(),
            });
        }
    }
    dump("lower", cell);
    let mut changed = Vec::new();
    if opts.stop_after.as_deref() == Some("lower") {
        return Ok(changed);
    }
    // Block-circulant matrices take part in every rule as the matrices they
    // are; what their products run on is said once here.
    for p in &cell.params {
        if let (crate::ir::Structure::Circulant(k), crate::ir::Type::Matrix(r, c)) =
            (p.structure, p.ty)
        {
            let (kind, message) = if p.structure.spectral_k(r, c).is_some() {
                (
                    RemarkKind::Applied,
                    format!(
                        "parameter `{}` is block-circulant (blocks of {k}): its products run \
                         through spectra (FFT products, {} floats a block instead of {}; \
                         objects from `-o` run it on the dense expansion)",
                        p.name,
                        k,
                        k * k
                    ),
                )
            } else if !crate::ir::Structure::spectral_block(k) {
                (
                    RemarkKind::Missed,
                    format!(
                        "parameter `{}` is block-circulant (blocks of {k}): its products run on \
                         the dense expansion (FFT products take blocks of 4, 8, 16, 32 or 64)",
                        p.name
                    ),
                )
            } else {
                (
                    RemarkKind::Missed,
                    format!(
                        "parameter `{}` is block-circulant (blocks of {k}): its products run on \
                         the dense expansion (at {r} x {c} the transforms would cost more than \
                         the blocks save)",
                        p.name
                    ),
                )
            };
            ctx.remark("circulant", kind, None, message);
        }
    }
    for pass in PASSES {
        let changed_ir = (pass.run)(cell, ctx).map_err(|message| OptError {
            pass: pass.name.to_string(),
            error: verify::VerifyError {
                inst: None,
                message,
            },
            ir: crate::ir::print::print(cell),
        })?;
        if changed_ir {
            changed.push(pass.name);
        }
        if opts.verify {
            verify::verify(cell).map_err(|error| OptError {
                pass: pass.name.to_string(),
                error,
                ir: crate::ir::print::print(cell),
            })?;
        }
        dump(pass.name, cell);
        if opts.stop_after.as_deref() == Some(pass.name) {
            return Ok(changed);
        }
    }
    mixed_block_sizes(cell, ctx);
    Ok(changed)
}

/// Says which block-circulant matrices share a row block of a product with
/// matrices of another block size that take its FFT products: one block size
/// per row block runs through spectra, the others on their dense expansion.
fn mixed_block_sizes(cell: &Cell, ctx: &mut Ctx<'_>) {
    for inst in &cell.insts {
        let Op::Product(p) = &inst.op else { continue };
        for (r, row) in p.rows.iter().enumerate() {
            let len = cell.ty(inst.results[r]).vector_len().unwrap_or(0);
            let Some(k) = p.spectral_k(cell, r, len) else {
                continue;
            };
            for (j, w) in row.weights.iter().enumerate() {
                let Some(Op::Param(q)) = w.map(|w| cell.op_of(w)) else {
                    continue;
                };
                let param = &cell.params[q.index()];
                let cols = cell.ty(p.inputs[j]).vector_len().unwrap_or(0);
                if let Some(other) = param.structure.spectral_k(len, cols).filter(|&o| o != k) {
                    ctx.remark(
                        "circulant",
                        RemarkKind::Missed,
                        None,
                        format!(
                            "parameter `{}` (blocks of {other}) runs on the dense expansion: its \
                             product's row block runs its FFT products in blocks of {k}, and a \
                             row block takes one block size",
                            param.name
                        ),
                    );
                }
            }
        }
    }
}

/// Drops instructions that nothing reads and renumbers.
fn dce(cell: &mut Cell, _ctx: &mut Ctx<'_>) -> PassResult {
    let before = cell.insts.len();
    cell.compact();
    Ok(cell.insts.len() != before)
}
