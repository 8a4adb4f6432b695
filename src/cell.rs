//! The facade's cell: a `.rnn` file parsed and checked, its sizes bound, and
//! the one pipeline from it to the optimizer, the code generator, the JIT and
//! ahead-of-time objects (`Cell::kernel_ir`).

use std::path::Path;

use crate::diag::{self, Diagnostic, Source};
use crate::{aot, codegen, files, grad, ir, opt, sema, sizes, syntax};
use crate::{Error, ErrorKind, Isa, Kernel, Options, Result, Variant, Weights};

/// The sequence length [`Cell::compile_object`] chooses an object's plan for
/// (as `cellc bench` measures by default).
pub const OBJECT_SEQ: usize = 100;

/// A checked cell: parsed, with names and shapes verified, and (after
/// [`Cell::dims`]) its sizes bound.
///
/// ```
/// # fn main() -> cellc::Result<()> {
/// let cell = cellc::Cell::from_source("tiny.rnn", "
///     dim X = 3
///     dim H = 4
///     input x: [X]
///     state h: [H]
///     param W: [H, X]
///     output y: [H]
///     param U: [H, H]
///     h' = tanh(W @ x + U @ h)
///     y = h'
/// ")?;
/// // Sizes other than the file's defaults; weights by parameter name.
/// let cell = cell.dims(&[("H", 8)])?;
/// let weights = cellc::Weights::random(&cell.ir()?, 1);
/// let kernel = cell.compile(&weights, &cellc::Options::default())?;
/// assert_eq!(kernel.output_len(0), 8);
/// # Ok(())
/// # }
/// ```
#[derive(Clone, Debug)]
pub struct Cell {
    source: Source,
    ast: syntax::ast::File,
    checked: sema::Checked,
    warnings: Vec<Diagnostic>,
    given_dims: Vec<(String, u64)>,
    bound: Option<sema::Dims>,
}

/// Reads a source file as text, reporting bytes that are not UTF-8 with a span.
pub fn read_source(path: &Path) -> Result<Source> {
    let name = path.display().to_string();
    let bytes = files::read_bounded(path, syntax::MAX_SOURCE_BYTES as u64, "cell files");
    if let Err(e) = &bytes {
        if e.kind() != ErrorKind::TooLarge {
            return Err(bytes.unwrap_err());
        }
    }
    if bytes.is_err() {
        return Err(Error::Source {
            source: Box::new(Source::new(name, "")),
            diagnostics: vec![Diagnostic::error(
                "E0001",
                format!(
                    "source file too large (the limit is {} bytes)",
                    syntax::MAX_SOURCE_BYTES
                ),
            )
            .note("a cell is a few dozen lines; is this the right file?")],
        });
    }
    let bytes = bytes?;
    match String::from_utf8(bytes) {
        Ok(text) => Ok(Source::new(name, text)),
        Err(e) => {
            let at = e.utf8_error().valid_up_to();
            let text = String::from_utf8_lossy(e.as_bytes()).into_owned();
            // The lossy text has U+FFFD (3 bytes) where the bad byte was.
            let lossy_at = String::from_utf8_lossy(&e.as_bytes()[..at]).len();
            let d = Diagnostic::error("E0000", "the file is not valid UTF-8")
                .primary(
                    diag::Span::new(lossy_at, lossy_at + 3),
                    format!("invalid byte 0x{:02x} at offset {at}", e.as_bytes()[at]),
                )
                .note("cell files are UTF-8 text");
            Err(Error::Source {
                source: Box::new(Source::new(name, text)),
                diagnostics: vec![d],
            })
        }
    }
}

impl Cell {
    /// Reads, parses and checks a `.rnn` file.
    pub fn from_file(path: impl AsRef<Path>) -> Result<Cell> {
        let source = read_source(path.as_ref())?;
        Cell::from_parts(source)
    }

    /// Parses and checks source text; `name` is used in messages (a file name).
    pub fn from_source(name: &str, text: &str) -> Result<Cell> {
        Cell::from_parts(Source::new(name, text))
    }

    fn from_parts(source: Source) -> Result<Cell> {
        let (file, mut diags) = syntax::parse(&source.text);
        let Some(file) = file else {
            return Err(Error::Source {
                source: Box::new(source),
                diagnostics: diags,
            });
        };
        let stem = Path::new(&source.name)
            .file_stem()
            .map_or("cell".to_string(), |s| s.to_string_lossy().into_owned());
        let (checked, more) = sema::check(&file, &stem);
        diags.extend(more);
        match checked {
            Some(checked) if !diag::has_errors(&diags) => Ok(Cell {
                source,
                ast: file,
                checked,
                warnings: diags,
                given_dims: Vec::new(),
                bound: None,
            }),
            _ => Err(Error::Source {
                source: Box::new(source),
                diagnostics: diags,
            }),
        }
    }

    /// Binds size variables (overriding the file's defaults) and checks that every
    /// size is positive and the parameters fit in memory.
    pub fn dims(mut self, dims: &[(&str, u64)]) -> Result<Cell> {
        self.given_dims = dims.iter().map(|(n, v)| (n.to_string(), *v)).collect();
        let bound =
            sema::bind_dims(&self.checked, &self.given_dims).map_err(|d| Error::Source {
                source: Box::new(self.source.clone()),
                diagnostics: d,
            })?;
        self.bound = Some(bound);
        Ok(self)
    }

    /// Checks the sizes as [`Cell::ir`] would bind them (those given to
    /// [`Cell::dims`], else the file's defaults) when every size has a
    /// value: each length at least 1, nothing too large. A size without a
    /// value is checked when it gets one. (`cellc check`.)
    pub fn check_sizes(&self) -> Result<()> {
        let all_bound = self
            .checked
            .dims
            .iter()
            .all(|d| d.default.is_some() || self.given_dims.iter().any(|(n, _)| n == &d.name));
        if all_bound {
            self.bound_dims()?;
        }
        Ok(())
    }

    /// The cell's name (`cell NAME`, or the file stem).
    pub fn name(&self) -> &str {
        &self.checked.name
    }

    pub fn source(&self) -> &Source {
        &self.source
    }

    pub(crate) fn checked(&self) -> &sema::Checked {
        &self.checked
    }

    /// Warnings found while checking (unused parameters, values, inputs).
    pub fn warnings(&self) -> &[Diagnostic] {
        &self.warnings
    }

    /// The bound sizes: those given to [`Cell::dims`], else the file's defaults.
    pub(crate) fn bound_dims(&self) -> Result<sema::Dims> {
        match &self.bound {
            Some(d) => Ok(d.clone()),
            None => sema::bind_dims(&self.checked, &self.given_dims).map_err(|d| Error::Source {
                source: Box::new(self.source.clone()),
                diagnostics: d,
            }),
        }
    }

    /// The cell lowered to IR with its bound sizes, before any optimization.
    pub fn ir(&self) -> Result<ir::Cell> {
        let dims = self.bound_dims()?;
        let cell = sema::lower::lower(&self.checked, &dims)
            .map_err(|e| Error::internal(format!("lowering: {}", e.0)))?;
        ir::verify::verify(&cell)
            .map_err(|e| Error::internal(format!("lowering produced invalid IR: {e}")))?;
        Ok(cell)
    }
}

/// `ir` (optimized as `opts` says, or not) legalized, verified, its matrices
/// stored at `opts.precision` when it says (in bf16 under
/// [`crate::Compute::Bf16`], in int8 under [`crate::Compute::Int8`]): what
/// the code generator takes.
pub(crate) fn legal_ir(mut ir: ir::Cell, opts: &Options) -> Result<ir::Cell> {
    opt::legalize(&mut ir);
    ir::verify::verify(&ir).map_err(|e| Error::internal(format!("legalize: {e}")))?;
    if let Some(precision) = opts.precision {
        for p in &mut ir.params {
            if matches!(p.ty, ir::Type::Matrix(..)) {
                p.precision = precision;
            }
        }
    }
    if let Some(forced) = opts.compute.storage() {
        let compute = opts.compute;
        for p in &mut ir.params {
            if !matches!(p.ty, ir::Type::Matrix(..)) {
                continue;
            }
            if p.precision != forced && p.precision != ir::Precision::F32 {
                return Err(Error::options(format!(
                    "parameter `{}` is stored in {}; compute {compute} multiplies {forced} \
                     weights (store it in {forced} or f32, or compute in f32)",
                    p.name, p.precision
                )));
            }
            if let (ir::Precision::Int8, ir::Structure::Circulant(k)) = (forced, p.structure) {
                return Err(Error::options(format!(
                    "parameter `{}` is block-circulant (k = {k}); compute int8 multiplies \
                     dense matrices (compute it in f32 or bf16)",
                    p.name
                )));
            }
            p.precision = forced;
        }
    }
    Ok(ir)
}

/// A cell after the optimizer, with the remarks that explain it.
#[derive(Clone, Debug)]
pub struct Optimized {
    pub ir: ir::Cell,
    pub remarks: Vec<opt::Remark>,
}

impl Cell {
    /// The cell lowered and optimized with `opts` (all passes by default).
    pub fn optimized(&self, opts: &opt::Options) -> Result<Optimized> {
        self.optimized_with_dumps(opts, &mut |_, _| {})
    }

    /// Like [`Cell::optimized`], handing the IR to `dump` after lowering and
    /// after every pass.
    pub fn optimized_with_dumps(
        &self,
        opts: &opt::Options,
        dump: &mut dyn FnMut(&str, &ir::Cell),
    ) -> Result<Optimized> {
        let mut cell = self.ir()?;
        let mut ctx = opt::Ctx {
            source: Some(&self.source.text),
            remarks: Vec::new(),
        };
        if let Some(stop) = &opts.stop_after {
            if !opt::stage_names().contains(&stop.as_str()) {
                return Err(Error::options(format!(
                    "no stage `{stop}`; the stages are {}",
                    opt::stage_names().join(", ")
                )));
            }
        }
        opt::optimize(&mut cell, opts, &mut ctx, dump)
            .map_err(|e| Error::new(ErrorKind::Internal, e.to_string()))?;
        Ok(Optimized {
            ir: cell,
            remarks: ctx.remarks,
        })
    }

    /// The backward cell of one step ([`grad`]): the reverse mode of the IR
    /// as lowered, itself a cell whose state is the adjoint of this cell's.
    pub fn backward(&self) -> Result<grad::Backward> {
        grad::backward(&self.ir()?).map_err(|e| Error::internal(e.0))
    }

    /// The backward cell through the optimizer with `opts`, handing it to
    /// `dump` as derived (`grad`, with its `matvec_t`s; `opts.stop_after`
    /// `lower` stops there), with its input adjoints' products taken out of
    /// the step (`after-loop`, `grad::defer_input_products`: the trainer
    /// runs them after the loop) and after every pass, which see its
    /// transposed products as products of transposed parameters
    /// ([`grad::transpose_products`]).
    pub fn backward_optimized_with_dumps(
        &self,
        opts: &opt::Options,
        dump: &mut dyn FnMut(&str, &ir::Cell),
    ) -> Result<Optimized> {
        let bw = self.backward()?;
        let derived = &bw.cell;
        dump("grad", derived);
        if opts.stop_after.as_deref() == Some("lower") {
            return Ok(Optimized {
                ir: bw.cell,
                remarks: Vec::new(),
            });
        }
        let mut ctx = opt::Ctx {
            source: None,
            remarks: Vec::new(),
        };
        let after = grad::defer_input_products(&bw.cell, &bw.layout);
        for d in &after.deferred {
            let names: Vec<String> = (d.terms.iter())
                .map(|&(p, _)| format!("`{}`", derived.params[p.index()].name))
                .collect();
            ctx.remark(
                "after-loop",
                opt::RemarkKind::Applied,
                None,
                format!(
                    "the adjoint of input `{}`: {} transposed product{} ({}) after the loop, \
                     one product over all steps' rows each",
                    derived.inputs[d.input].name,
                    names.len(),
                    if names.len() == 1 { "" } else { "s" },
                    names.join(", ")
                ),
            );
        }
        dump("after-loop", &after.cell);
        let mut cell = grad::transpose_products(&after.cell).cell;
        opt::optimize(&mut cell, opts, &mut ctx, &mut |name, ir| {
            if name != "lower" {
                dump(name, ir)
            }
        })
        .map_err(|e| Error::new(ErrorKind::Internal, e.to_string()))?;
        Ok(Optimized {
            ir: cell,
            remarks: ctx.remarks,
        })
    }

    /// This cell at the sizes given to [`Cell::dims`], or else at the sizes
    /// the weights' tensors give (the file's defaults for the rest).
    pub(crate) fn sized_for(&self, weights: &Weights) -> Result<std::borrow::Cow<'_, Cell>> {
        if self.bound.is_some() {
            return Ok(std::borrow::Cow::Borrowed(self));
        }
        let dims = sizes::infer_sizes(&self.checked, weights, &[], &[])?;
        let dims: Vec<(&str, u64)> = dims.iter().map(|(n, v)| (n.as_str(), *v)).collect();
        Ok(std::borrow::Cow::Owned(self.clone().dims(&dims)?))
    }

    /// The IR the code generator takes: optimized (unless `opts` says not
    /// to), then legalized (only products and element-wise regions), verified.
    /// The one pipeline of the JIT and of ahead-of-time objects.
    pub fn kernel_ir(&self, opts: &Options) -> Result<ir::Cell> {
        let ir = if opts.optimize {
            self.optimized(&opt::Options::default())?.ir
        } else {
            self.ir()?
        };
        legal_ir(ir, opts)
    }

    /// The kernel IR and its streaming plan (what the generated code and
    /// objects are made of).
    pub(crate) fn streaming_plan(&self, opts: &Options) -> Result<(ir::Cell, codegen::plan::Plan)> {
        let ir = self.kernel_ir(opts)?;
        // Objects have no spectral kernels: their circulant matrices run on
        // the dense expansion.
        let plan = codegen::plan::plan_with(&ir, Variant::Streaming, opts.optimize, false)
            .map_err(|e| Error::too_large(e.0))?;
        Ok((ir, plan))
    }

    /// JIT-compiles the cell with its weights: optimizes (unless told not to),
    /// generates native code with Cranelift, and packs the weights.
    ///
    /// Sizes: those given to [`Cell::dims`]; without it, those the weights'
    /// tensors give (as `cellc run` reads them), the file's defaults for the
    /// rest. A tensor of another shape than the sizes make is an error that
    /// says where the sizes came from.
    pub fn compile(&self, weights: &Weights, opts: &Options) -> Result<Kernel> {
        let cell = self.sized_for(weights)?;
        let ir = cell.kernel_ir(opts)?;
        let params = weights.resolve(&ir).map_err(|e| {
            if !(e.0.contains(" but tensor `") || e.0.contains("out of range")) {
                return Error::from(e);
            }
            let sizes: Vec<String> = ir.dims.iter().map(|(n, v)| format!("{n}={v}")).collect();
            let from = if self.bound.is_some() {
                "as given to `Cell::dims`"
            } else {
                "read off the weights, the file's defaults for the rest"
            };
            Error::new(
                ErrorKind::Weights,
                format!(
                    "{}; the cell's sizes are {} ({from})",
                    e.0,
                    sizes.join(", ")
                ),
            )
        })?;
        Kernel::new(ir, params, opts)
    }

    /// Compiles the cell ahead of time into a relocatable object for `triple`
    /// (the host if `None`) and the C header that describes it, for batches of
    /// one row and sequences of [`OBJECT_SEQ`] steps: see
    /// [`Cell::compile_object_for`].
    pub fn compile_object(&self, opts: &Options, triple: Option<&str>) -> Result<aot::Aot> {
        self.compile_object_for(opts, triple, 1, OBJECT_SEQ)
    }

    /// Compiles the cell ahead of time, with the plan the cost model picks for
    /// `batch` rows and sequences of `seq` steps (this machine's rates): the
    /// `streaming` plan, or the `hoisted` one, whose `NAME_run` projects the
    /// inputs of 32 steps at once and whose `NAME_step` projects one step's
    /// (`seq = 1` is always streaming). `Options::plan` forces one of the two.
    /// Objects run on the caller's thread: the `gemm` plans (which need
    /// cellc's runtime) and a `threads` option other than 1 are errors, not
    /// ignored.
    pub fn compile_object_for(
        &self,
        opts: &Options,
        triple: Option<&str>,
        batch: usize,
        seq: usize,
    ) -> Result<aot::Aot> {
        if let Some(v) = opts.plan.filter(|v| v.uses_gemm()) {
            return Err(Error::options(format!(
                "an object runs the streaming or the hoisted plan; plan `{}` needs cellc's runtime (the JIT)",
                v.name()
            )));
        }
        if let Some(t) = opts.threads.filter(|&t| t != 1) {
            return Err(Error::options(format!(
                "an object runs on the caller's thread; {t} threads need cellc's runtime (the JIT)"
            )));
        }
        if batch == 0 || seq == 0 {
            return Err(Error::options(
                "an object's plan is chosen for a batch and a sequence length of at least 1",
            ));
        }
        if opts.compute != crate::Compute::F32 {
            return Err(Error::options(format!(
                "objects compute in f32; compute {} needs cellc's runtime (the JIT)",
                opts.compute
            )));
        }
        let ir = self.kernel_ir(opts)?;
        // The header's `NAME_pack` copies f32 parameters as they are: it
        // would compute with unrounded weights.
        if let Some(p) = ir.params.iter().find(|p| p.precision != ir::Precision::F32) {
            return Err(Error::options(format!(
                "parameter `{}` is stored in {}; objects take f32 parameters (bf16 and int8 storage needs cellc's runtime, the JIT)",
                p.name, p.precision
            )));
        }
        let variant = match opts.plan {
            Some(v) => v,
            None => {
                let work = codegen::schedule::work(
                    &ir,
                    opts.isa.unwrap_or_else(crate::kernels::Isa::detect),
                );
                codegen::schedule::choose_for_object(&work, codegen::schedule::host(), batch, seq)
                    .variant
            }
        };
        let plan = codegen::plan::plan_with(&ir, variant, opts.optimize, false)
            .map_err(|e| Error::too_large(e.0))?;
        aot::compile(&ir, &plan, triple)
    }

    /// The size variables' names, in declaration order.
    pub fn dim_names(&self) -> Vec<String> {
        self.checked.dim_names()
    }

    /// The syntax tree, as S-expressions (`--emit ast`).
    pub fn ast_text(&self) -> String {
        syntax::print::print(&self.ast)
    }

    /// Products, FLOPs, weight bytes and element-wise passes per step, before
    /// and after the optimizer, as JSON (`--emit stats`).
    pub fn stats_json(&self) -> Result<String> {
        let before = self.ir()?;
        let after = self.optimized(&opt::Options::default())?;
        let json = ir::stats::stats_json(&before, &after.ir);
        Ok(format!(
            "{}\n",
            serde_json::to_string_pretty(&json).unwrap_or_default()
        ))
    }

    /// The plans the cost model weighs for `batch` rows and sequences of `seq`
    /// steps (1: one step per call), with their predicted times and floors, and
    /// the one chosen (`--emit schedule`).
    pub fn schedule_text(&self, opts: &Options, batch: usize, seq: usize) -> Result<String> {
        let ir = self.kernel_ir(opts)?;
        Ok(codegen::schedule::describe(
            &ir,
            batch.max(1),
            seq.max(1),
            opts.threads,
            opts.plan,
            opts.isa.unwrap_or_else(Isa::detect),
        ))
    }

    /// The generated functions of the streaming plan for `triple` (the host
    /// if `None`): name, Cranelift IR, and disassembled machine code.
    pub fn generated_code(
        &self,
        opts: &Options,
        triple: Option<&str>,
    ) -> Result<Vec<GeneratedFunction>> {
        let (_, plan) = self.streaming_plan(opts)?;
        let isa = match triple {
            Some(t) => codegen::target_isa(t, false),
            None => codegen::host_isa(),
        }
        .map_err(|e| Error::options(e.0))?;
        let text = codegen::compile_text(&plan, &*isa).map_err(|e| Error::internal(e.0))?;
        Ok(text
            .into_iter()
            .map(|(name, clif, asm)| GeneratedFunction { name, clif, asm })
            .collect())
    }

    /// The remarks rendered against the source, without colour.
    pub fn render_remarks(&self, remarks: &[opt::Remark]) -> String {
        let diags: Vec<Diagnostic> = remarks.iter().map(opt::Remark::to_diagnostic).collect();
        diag::render_plain(&self.source, &diags)
    }
}

/// One generated function, as text.
#[derive(Clone, Debug)]
pub struct GeneratedFunction {
    pub name: String,
    /// Cranelift IR.
    pub clif: String,
    /// Disassembled machine code.
    pub asm: String,
}
