//! cellc: a compiler for recurrent-network cells.
//!
//! A `.rnn` file states a cell: its sizes, inputs, state, parameters and the
//! equations of one time step. The pipeline, front to back (each stage a
//! module; `docs/architecture.md` draws the layers):
//!
//! 1. the front end parses the text (pest grammar in `grammar/cell.pest`),
//!    checks names, shapes and dependencies, reporting every mistake as a
//!    [`Diagnostic`] with a span, binds the sizes and lowers the cell to the
//!    [`ir`], a typed SSA dataflow graph with a text form that parses back
//!    ([`ir::print`], [`ir::parse`]) and a verifier ([`ir::verify`]);
//! 2. [`opt`] rewrites the IR: sibling products concatenated, gates stacked,
//!    element-wise epilogues fused, each rewrite proved legal and explained;
//! 3. [`interp`] runs any IR in `f64`: the oracle for everything after it;
//! 4. the code generator plans memory and packed weights and lowers them to
//!    Cranelift; the runtime ([`Kernel`], [`State`]) runs the native code on
//!    one thread or a shared pool; [`Cell::compile_object`] writes an object
//!    and a C header instead.
//!
//! Around them: [`Weights`] (safetensors, bound to parameters by the names the
//! cell declares), [`onnx`] (an ONNX model's LSTM or GRU node), [`run`]
//! (`cellc run`), [`bench`](mod@bench) (`cellc bench`).
//!
//! ```
//! let cell = cellc::Cell::from_source("tiny.rnn", "
//!     dim H = 2
//!     input x: [H]
//!     state h: [H]
//!     param W: [H, H]
//!     h' = tanh(W @ h + x)
//! ").unwrap();
//! let ir = cell.ir().unwrap();
//! assert_eq!(ir.product_count(), 1);
//! ```

mod alloc;
pub mod aot;
pub mod bench;
mod cell;
mod codegen;
pub mod diag;
mod error;
/// Reading input files with a bound and writing outputs safely (for the command line).
#[doc(hidden)]
pub mod files;
/// The fuzz targets' bodies (`fuzz/`, `tests/fuzz_smoke.rs`).
#[doc(hidden)]
pub mod fuzzing;
/// Random well-typed cells (for differential tests and fuzzing).
#[doc(hidden)]
pub mod gen;
pub mod grad;
pub mod interp;
pub mod ir;
mod jit;
mod kernels;
pub mod network;
pub mod onnx;
pub mod opt;
pub mod quant;
pub mod run;
mod sema;
mod sizes;
mod syntax;
pub mod torch;
pub mod train;
mod weights;

pub use cell::{read_source, Cell, GeneratedFunction, Optimized, OBJECT_SEQ};
pub use codegen::host::HostSource;
pub use codegen::options::{max_threads, MAX_THREADS_VAR};
pub use codegen::schedule::Choice;
pub use codegen::{Compute, Isa, Options, Variant};
pub use diag::{Diagnostic, Source};
pub use jit::{Code, Kernel, State};
/// The functions a cell may call.
pub use sema::functions;
pub use syntax::MAX_SOURCE_BYTES;
pub use weights::{Tensor, Weights, WeightsError};

pub use error::{Error, ErrorKind, Result};

/// The README's Rust example, compiled by `cargo test` so that it stays true.
#[doc = include_str!("../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctests;

/// Measures this machine's caches and kernels (a second or two) and returns
/// the calibration as JSON, to save at [`calibration_path`] (`cellc
/// calibrate`): the cost model's rates then come from it instead of the fixed
/// defaults.
pub fn calibrate() -> String {
    codegen::host::to_json(&codegen::host::calibrate())
}

/// Where the cost model looks for a calibration (`$CELLC_HOST`, else the
/// user's cache folder); `None` when `CELLC_HOST=defaults` or there is no
/// cache folder.
pub fn calibration_path() -> Option<std::path::PathBuf> {
    codegen::host::calibration_path()
}
