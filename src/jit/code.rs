//! Generated code, compiled for the host and owned by a kernel.

use std::sync::Mutex;
use std::time::Instant;

use cranelift_codegen::Context;
use cranelift_jit::{JITBuilder, JITModule};
use cranelift_module::{default_libcall_names, Linkage, Module};

use crate::codegen::{self, plan::Plan};
use crate::{Error, Result};

/// Every generated function's type: the slot table, batch rows `b0..b1`, tiles
/// `t0..t1` (`codegen::lower::signature`).
pub(super) type TaskFn = unsafe extern "C" fn(*const *mut f32, i64, i64, i64, i64);

/// A generated function, callable from any thread.
#[derive(Clone, Copy)]
pub(super) struct Compiled {
    pub(super) ptr: TaskFn,
    pub(super) tiles: usize,
    /// Threads split the batch rows rather than the tiles.
    pub(super) by_rows: bool,
}

/// The code of a compiled plan.
pub struct Code {
    module: Mutex<Option<JITModule>>,
    pub(super) phases: Vec<Vec<Compiled>>,
    functions: usize,
    code_bytes: usize,
    compile_ms: f64,
}

impl Code {
    /// Generated functions.
    pub fn functions(&self) -> usize {
        self.functions
    }

    /// Bytes of machine code.
    pub fn code_bytes(&self) -> usize {
        self.code_bytes
    }

    /// Milliseconds Cranelift took.
    pub fn compile_ms(&self) -> f64 {
        self.compile_ms
    }
}

// SAFETY: the generated code is immutable once finalized and reads only through
// the pointers it is given; `JITModule` (which is `Send`) is only touched on drop,
// behind a mutex.
unsafe impl Send for Code {}
// SAFETY: as above; the function pointers are plain code addresses.
unsafe impl Sync for Code {}

impl Drop for Code {
    fn drop(&mut self) {
        if let Ok(mut m) = self.module.lock() {
            if let Some(module) = m.take() {
                // SAFETY: the code is owned by this `Code`; every kernel that could
                // call it holds `Code` by value, so no pointer outlives it.
                unsafe { module.free_memory() };
            }
        }
    }
}

/// Compiles a plan's functions for the host.
pub(super) fn compile_plan(plan: &Plan) -> Result<Code> {
    let start = Instant::now();
    let isa = codegen::host_isa().map_err(|e| Error::internal(e.0))?;
    let call_conv = isa.default_call_conv();
    let functions = codegen::functions(plan, &*isa);
    let mut module = JITModule::new(JITBuilder::with_isa(isa, default_libcall_names()));
    let mut ctx = Context::new();
    let mut ids = Vec::new();
    let mut count = 0;
    let mut code_bytes = 0;
    for phase in functions.phases {
        let mut ids_phase = Vec::new();
        for tf in phase {
            let sig = codegen::lower::signature(call_conv);
            let id = module
                .declare_function(&tf.name, Linkage::Local, &sig)
                .map_err(|e| Error::internal(e.to_string()))?;
            ctx.func = tf.func;
            ctx.func.name = cranelift_codegen::ir::UserFuncName::user(0, id.as_u32());
            module
                .define_function(id, &mut ctx)
                .map_err(|e| Error::internal(format!("Cranelift rejected {}: {e:?}", tf.name)))?;
            code_bytes += ctx.compiled_code().map_or(0, |c| c.code_buffer().len());
            count += 1;
            module.clear_context(&mut ctx);
            ids_phase.push((id, tf.tiles, tf.by_rows));
        }
        ids.push(ids_phase);
    }
    module
        .finalize_definitions()
        .map_err(|e| Error::internal(e.to_string()))?;
    let phases = ids
        .into_iter()
        .map(|phase| {
            phase
                .into_iter()
                .map(|(id, tiles, by_rows)| {
                    let raw = module.get_finalized_function(id);
                    // SAFETY: `raw` is the finalized code of a function declared with
                    // `lower::signature`: five 64-bit arguments (a pointer and four
                    // integers), no return, the platform's C calling convention.
                    let ptr = unsafe { std::mem::transmute::<*const u8, TaskFn>(raw) };
                    Compiled {
                        ptr,
                        tiles,
                        by_rows,
                    }
                })
                .collect()
        })
        .collect();
    Ok(Code {
        module: Mutex::new(Some(module)),
        phases,
        functions: count,
        code_bytes,
        compile_ms: start.elapsed().as_secs_f64() * 1e3,
    })
}
