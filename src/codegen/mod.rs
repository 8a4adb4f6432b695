//! Code generation: from an optimized cell to Cranelift functions.
//!
//! *What* is computed is the IR; *how* is the [`plan::Plan`] (memory slots, task
//! order, the packed weight layout), decided here once per compiled cell;
//! [`lower`] turns each task into a Cranelift function and [`vecmath`] supplies
//! the vector activations. [`pack`] fills the packed weights from the cell's
//! parameters. Nothing here runs generated code: that is `jit`'s job.

pub mod host;
pub mod lower;
pub mod options;
pub mod pack;
pub mod plan;
pub mod projection;
pub mod schedule;
pub mod vecmath;
pub mod wide;

use cranelift_codegen::ir::Function;
use cranelift_codegen::isa::{OwnedTargetIsa, TargetIsa};
use cranelift_codegen::settings::{self, Configurable};
use cranelift_frontend::FunctionBuilderContext;

use plan::{Plan, Task};

pub use options::{Compute, Isa, Options, Variant};

/// One generated function and the tiles it runs over.
pub struct TaskFunction {
    pub name: String,
    pub func: Function,
    pub tiles: usize,
    /// Threads split its batch rows (its tiles are not a unit of work).
    pub by_rows: bool,
}

/// The functions of a step, phase by phase (one phase per task of the plan, empty
/// for a `gemm` task): the functions of one phase are independent of each other
/// (they may run in any order, or in parallel); each phase needs the previous one
/// finished.
pub struct Functions {
    pub phases: Vec<Vec<TaskFunction>>,
}

pub fn functions(plan: &Plan, isa: &dyn TargetIsa) -> Functions {
    let call_conv = isa.default_call_conv();
    let config = isa.frontend_config();
    let mut fctx = FunctionBuilderContext::new();
    let mut phases = Vec::new();
    for (t, task) in plan.tasks.iter().enumerate() {
        let mut phase = Vec::new();
        match task {
            Task::Product(groups) => {
                for (g, group) in groups.iter().enumerate() {
                    phase.push(TaskFunction {
                        name: format!("task{t}_product{g}"),
                        func: lower::product_function(plan, group, call_conv, config, &mut fctx),
                        tiles: group.tiles,
                        by_rows: false,
                    });
                }
            }
            Task::Region(code) => phase.push(TaskFunction {
                name: format!("task{t}_region"),
                func: lower::region_function(plan, code, call_conv, config, &mut fctx),
                tiles: code.tiles,
                by_rows: false,
            }),
            Task::Rows(steps) => phase.push(TaskFunction {
                name: format!("task{t}_rows"),
                func: lower::rows_function(plan, steps, call_conv, config, &mut fctx),
                tiles: 1,
                by_rows: true,
            }),
            // Run by the panel and spectral kernels, not generated.
            Task::Gemm(_) | Task::Spectra(_) => {}
        }
        phases.push(phase);
    }
    Functions { phases }
}

/// Errors from Cranelift's setup.
#[derive(Debug)]
pub struct IsaError(pub String);

impl std::fmt::Display for IsaError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// The shared flags: optimize for speed, verify in debug builds and tests.
pub fn flags(pic: bool) -> settings::Flags {
    let mut b = settings::builder();
    let set = |b: &mut settings::Builder, k: &str, v: &str| {
        // These names are Cranelift's own; a failure here is a version mismatch.
        let _ = b.set(k, v);
    };
    set(&mut b, "opt_level", "none");
    set(
        &mut b,
        "enable_verifier",
        if cfg!(debug_assertions) {
            "true"
        } else {
            "false"
        },
    );
    set(&mut b, "is_pic", if pic { "true" } else { "false" });
    set(&mut b, "use_colocated_libcalls", "false");
    settings::Flags::new(b)
}

/// The host's ISA, with every feature the CPU has (on x86-64 this turns on
/// `has_fma`, without which `fma` becomes a call per lane).
pub fn host_isa() -> Result<OwnedTargetIsa, IsaError> {
    host_isa_with(false)
}

/// The host's ISA, position-independent or not (objects are).
pub fn host_isa_with(pic: bool) -> Result<OwnedTargetIsa, IsaError> {
    let builder =
        cranelift_native::builder().map_err(|e| IsaError(format!("unsupported host: {e}")))?;
    let isa = builder
        .finish(flags(pic))
        .map_err(|e| IsaError(format!("cannot configure Cranelift: {e}")))?;
    check_isa(&isa)?;
    Ok(isa)
}

/// The ISA for a target triple, with the CPU features spelled out rather than
/// detected: on x86-64, AVX2 and FMA (a Haswell-class CPU, as x86-64-v3, but with
/// `has_avx` set too: the `x86-64-v3` preset leaves it off, and then `fma`
/// becomes a call per lane); on aarch64, the base NEON set. The same triple
/// gives the same code on any host, so dumps can be snapshot-tested.
pub fn target_isa(triple: &str, pic: bool) -> Result<OwnedTargetIsa, IsaError> {
    use std::str::FromStr;
    let triple = target_lexicon::Triple::from_str(triple)
        .map_err(|e| IsaError(format!("`{triple}` is not a target triple: {e}")))?;
    let mut builder = cranelift_codegen::isa::lookup(triple.clone()).map_err(|e| {
        IsaError(format!(
            "Cranelift cannot generate code for `{triple}`: {e}"
        ))
    })?;
    if triple.architecture == target_lexicon::Architecture::X86_64 {
        for f in [
            "has_sse3",
            "has_ssse3",
            "has_sse41",
            "has_sse42",
            "has_popcnt",
            "has_avx",
            "has_avx2",
            "has_fma",
            "has_bmi1",
            "has_bmi2",
        ] {
            builder
                .enable(f)
                .map_err(|e| IsaError(format!("cannot enable {f}: {e}")))?;
        }
    }
    let isa = builder
        .finish(flags(pic))
        .map_err(|e| IsaError(format!("cannot configure Cranelift for `{triple}`: {e}")))?;
    check_isa(&isa)?;
    Ok(isa)
}

/// Compiles a plan's functions for `isa` without running them, and returns each
/// function's name, Cranelift IR and disassembly (`--emit clif`, `--emit asm`).
pub fn compile_text(
    plan: &Plan,
    isa: &dyn TargetIsa,
) -> Result<Vec<(String, String, String)>, IsaError> {
    let functions = functions(plan, isa);
    let cs = isa.to_capstone().ok();
    let mut out = Vec::new();
    let mut ctx = cranelift_codegen::Context::new();
    ctx.set_disasm(true);
    for tf in functions.phases.into_iter().flatten() {
        ctx.func = tf.func;
        let clif = ctx.func.display().to_string();
        let mut ctrl = cranelift_codegen::control::ControlPlane::default();
        ctx.compile(isa, &mut ctrl).map_err(|e| {
            IsaError(format!(
                "internal error: Cranelift rejected {}: {:?}",
                tf.name, e.inner
            ))
        })?;
        let asm = match (&cs, ctx.compiled_code()) {
            (Some(cs), Some(code)) => code
                .disassemble(Some(&ctx.func.params), cs)
                .unwrap_or_default(),
            _ => String::new(),
        };
        out.push((tf.name, clif, asm));
        ctx.clear();
        ctx.set_disasm(true);
    }
    Ok(out)
}

/// Refuses ISAs the kernels would run badly or wrongly on.
pub fn check_isa(isa: &OwnedTargetIsa) -> Result<(), IsaError> {
    if isa.pointer_bits() != 64 {
        return Err(IsaError(format!(
            "cellc generates code for 64-bit targets; {} has {}-bit pointers",
            isa.triple(),
            isa.pointer_bits()
        )));
    }
    if isa.triple().architecture == target_lexicon::Architecture::X86_64 {
        let has = |name: &str| {
            isa.isa_flags()
                .iter()
                .any(|f| f.name == name && f.as_bool() == Some(true))
        };
        if !has("has_fma") {
            return Err(IsaError(
                "this x86-64 CPU has no FMA: Cranelift would call `fmaf` for every lane".into(),
            ));
        }
        if !has("has_sse41") {
            return Err(IsaError(
                "this x86-64 CPU has no SSE4.1: vector rounding would be a call per lane".into(),
            ));
        }
    }
    Ok(())
}
