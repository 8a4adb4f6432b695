//! The Rust API: no allocation per step, thread safety, and every wrong length
//! or shape an error rather than a crash.

// Tests and programs print what they measure.
#![allow(clippy::print_stdout, clippy::print_stderr)]

mod common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell as StdCell;

use cellc::{Cell, Kernel, Options, State, Weights};

/// Counts allocations made by the current thread.
struct Counting;

thread_local! {
    static ALLOCATIONS: StdCell<usize> = const { StdCell::new(0) };
}

// SAFETY: every call forwards to the system allocator with the same
// arguments; the counting is atomic or thread-local.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.with(|c| c.set(c.get() + 1));
        // SAFETY: the caller's contract, passed on unchanged.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: the caller's contract, passed on unchanged.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCATIONS.with(|c| c.set(c.get() + 1));
        // SAFETY: the caller's contract, passed on unchanged.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn allocations() -> usize {
    ALLOCATIONS.with(|c| c.get())
}

fn lstm(x: u64, h: u64) -> (Cell, Kernel) {
    let cell = common::cell("lstm").dims(&[("X", x), ("H", h)]).unwrap();
    let weights = Weights::random(&cell.ir().unwrap(), 1);
    let kernel = cell.compile(&weights, &Options::default()).unwrap();
    (cell, kernel)
}

/// `step` allocates nothing, on one thread or on the pool, and neither does a
/// streaming `run` (a hoisted or gemm `run` allocates its plan's buffers once,
/// and `gemm` its packing space).
#[test]
fn step_and_run_allocate_nothing() {
    for threads in [1, 2] {
        let cell = common::cell("lstm").dims(&[("X", 8), ("H", 12)]).unwrap();
        let weights = Weights::random(&cell.ir().unwrap(), 1);
        let opts = Options {
            threads: Some(threads),
            plan: Some(cellc::Variant::Streaming),
            ..Options::default()
        };
        let kernel = cell.compile(&weights, &opts).unwrap();
        let mut state = kernel.new_state(3).unwrap();
        let x = vec![0.5f32; 3 * 8];
        let xs = vec![0.25f32; 5 * 3 * 8];
        let mut out = vec![0.0f32; 5 * 3 * 12];
        // The first calls start the pool.
        kernel.step(&x, &mut state).unwrap();
        kernel.run(&xs, &mut state, &mut out).unwrap();
        let before = allocations();
        for _ in 0..10 {
            kernel.step(&x, &mut state).unwrap();
        }
        assert_eq!(
            allocations() - before,
            0,
            "step must not allocate ({threads} threads)"
        );
        kernel.run(&xs, &mut state, &mut out).unwrap();
        assert_eq!(
            allocations() - before,
            0,
            "a streaming run must not allocate ({threads} threads)"
        );
    }
    let (_, kernel) = lstm(8, 12);
    let mut state = kernel.new_state(3).unwrap();
    let mut out = vec![0.0f32; 5 * 3 * 12];
    kernel
        .run(&vec![0.25f32; 5 * 3 * 8], &mut state, &mut out)
        .unwrap();
    let mut h = vec![0.0f32; 3 * 12];
    let before = allocations();
    state.copy_state("h", &mut h).unwrap();
    kernel.copy_output(&state, "y", &mut h).unwrap();
    assert_eq!(allocations() - before, 0, "copies must not allocate");
    assert!(out.iter().any(|&v| v != 0.0));
}

#[test]
fn kernels_are_send_and_sync() {
    fn send_sync<T: Send + Sync>() {}
    fn send<T: Send>() {}
    send_sync::<Kernel>();
    send::<State>();
}

/// Eight threads step one kernel with their own states; each matches the same
/// inputs stepped alone, bit for bit.
#[test]
fn one_kernel_many_threads() {
    let (_, kernel) = lstm(16, 24);
    let inputs: Vec<Vec<f32>> = (0..8)
        .map(|t| {
            (0..2 * 16)
                .map(|i| ((i * 7 + t * 13) % 17) as f32 / 17.0 - 0.5)
                .collect()
        })
        .collect();
    let expected: Vec<Vec<f32>> = inputs
        .iter()
        .map(|x| {
            let mut s = kernel.new_state(2).unwrap();
            for _ in 0..50 {
                kernel.step(x, &mut s).unwrap();
            }
            s.get("h").unwrap()
        })
        .collect();
    std::thread::scope(|scope| {
        let handles: Vec<_> = inputs
            .iter()
            .map(|x| {
                let kernel = &kernel;
                scope.spawn(move || {
                    let mut s = kernel.new_state(2).unwrap();
                    for _ in 0..50 {
                        kernel.step(x, &mut s).unwrap();
                    }
                    s.get("h").unwrap()
                })
            })
            .collect();
        for (h, want) in handles.into_iter().zip(&expected) {
            assert_eq!(&h.join().unwrap(), want);
        }
    });
}

#[test]
fn wrong_lengths_are_errors() {
    let (_, kernel) = lstm(8, 12);
    let mut state = kernel.new_state(2).unwrap();
    let err = kernel.step(&[0.0; 15], &mut state).unwrap_err().to_string();
    assert!(
        err.contains("input `x`") && err.contains("16") && err.contains("15"),
        "{err}"
    );
    let err = state.set("h", &[0.0; 5]).unwrap_err().to_string();
    assert!(err.contains("state `h`") && err.contains("24"), "{err}");
    let err = state.set("q", &[0.0; 24]).unwrap_err().to_string();
    assert!(err.contains("no state named `q`"), "{err}");
    let mut out = vec![0.0; 10];
    let err = kernel
        .run(&[0.0; 3 * 16], &mut state, &mut out)
        .unwrap_err()
        .to_string();
    assert!(err.contains("output `y`") && err.contains("72"), "{err}");
    // A sequence whose length is not a whole number of steps.
    let mut out = vec![0.0; 3 * 24];
    let err = kernel
        .run(&[0.0; 3 * 16 + 1], &mut state, &mut out)
        .unwrap_err()
        .to_string();
    assert!(err.contains("input `x`"), "{err}");
    // A state from another kernel.
    let (_, other) = lstm(8, 12);
    let mut foreign = other.new_state(2).unwrap();
    assert!(kernel.step(&[0.0; 16], &mut foreign).is_err());
    // Outputs and states by name.
    assert!(kernel.output(&state, "nope").is_err());
    let mut short = vec![0.0; 3];
    assert!(kernel.copy_output(&state, "y", &mut short).is_err());
    assert!(state.copy_state("c", &mut short).is_err());
    // Multi-input API on a one-input cell.
    assert!(kernel
        .step_inputs(&[&[0.0; 16], &[0.0; 16]], &mut state)
        .is_err());
}

#[test]
fn missing_and_misshapen_weights_are_errors() {
    let cell = common::cell("rnn_tanh")
        .dims(&[("X", 3), ("H", 4)])
        .unwrap();
    let full = Weights::new()
        .with("weight_ih_l0", &[4, 3], vec![0.1; 12])
        .unwrap()
        .with("weight_hh_l0", &[4, 4], vec![0.1; 16])
        .unwrap()
        .with("bias_ih_l0", &[4], vec![0.0; 4])
        .unwrap()
        .with("bias_hh_l0", &[4], vec![0.0; 4])
        .unwrap();
    assert!(cell.compile(&full, &Options::default()).is_ok());
    // Missing: names the parameter and every tensor name tried.
    let missing = Weights::new()
        .with("weight_ih_l0", &[4, 3], vec![0.1; 12])
        .unwrap();
    let err = cell
        .compile(&missing, &Options::default())
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("`W_hh`") && err.contains("`weight_hh_l0`") && err.contains("`weight_hh`"),
        "{err}"
    );
    // Wrong shape: names both shapes.
    let wrong = Weights::new()
        .with("weight_ih_l0", &[4, 5], vec![0.1; 20])
        .unwrap()
        .with("weight_hh_l0", &[4, 4], vec![0.1; 16])
        .unwrap()
        .with("bias_ih_l0", &[4], vec![0.0; 4])
        .unwrap()
        .with("bias_hh_l0", &[4], vec![0.0; 4])
        .unwrap();
    let err = cell
        .compile(&wrong, &Options::default())
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("`W_ih` is [4, 3]") && err.contains("[4, 5]"),
        "{err}"
    );
    // Data that does not fill its shape.
    assert!(Weights::new().with("w", &[2, 2], vec![0.0; 3]).is_err());
}

/// Batch is a run-time argument.
#[test]
fn any_batch() {
    let (_, kernel) = lstm(4, 8);
    for batch in [1, 7, 64, 1000] {
        let mut s = kernel.new_state(batch).unwrap();
        kernel.step(&vec![0.3; batch * 4], &mut s).unwrap();
        let h = s.get("h").unwrap();
        assert_eq!(h.len(), batch * 8);
        // Every batch row saw the same input: every row is the same.
        for b in 1..batch {
            assert_eq!(h[b * 8..(b + 1) * 8], h[..8], "batch {batch} row {b}");
        }
    }
}

/// Threads are bounded: a count beyond what may run here (the cores, or
/// `CELLC_MAX_THREADS`) is an error that says so; it used to start that many
/// threads and never free them.
#[test]
fn thread_counts_are_bounded() {
    let cell = common::cell("gru").dims(&[("X", 8), ("H", 8)]).unwrap();
    let weights = Weights::random(&cell.ir().unwrap(), 1);
    for threads in [cellc::max_threads() + 1, 10_000] {
        let opts = Options {
            threads: Some(threads),
            ..Options::default()
        };
        let e = cell.compile(&weights, &opts).unwrap_err().to_string();
        assert!(
            e.contains(&format!(
                "{threads} threads asked for; at most {}",
                cellc::max_threads()
            )),
            "{e}"
        );
        let net =
            cellc::network::Network::new(cell.clone(), cellc::network::Layout::SINGLE).unwrap();
        assert!(net.compile_random(1, &opts).is_err());
    }
    let opts = Options {
        threads: Some(cellc::max_threads()),
        ..Options::default()
    };
    cell.compile(&weights, &opts).unwrap();
}

/// `Kernel::new` verifies the IR it is given: one whose parameter type
/// disagrees with the product that reads it used to be packed (wrong
/// weights, or a panic in packing); now it is an error naming the problem.
#[test]
fn kernel_new_refuses_an_ir_that_does_not_verify() {
    let cell = common::cell("lstm").dims(&[("X", 4), ("H", 4)]).unwrap();
    let mut ir = cell.kernel_ir(&Options::default()).unwrap();
    let p = ir
        .params
        .iter_mut()
        .find(|p| matches!(p.ty, cellc::ir::Type::Matrix(..)))
        .unwrap();
    let cellc::ir::Type::Matrix(r, c) = p.ty else {
        unreachable!()
    };
    p.ty = cellc::ir::Type::Matrix(r + 1, c);
    let params: Vec<Vec<f32>> = ir
        .params
        .iter()
        .map(|p| match p.ty {
            cellc::ir::Type::Matrix(r, c) => vec![0.1; r * c],
            cellc::ir::Type::Vector(n) => vec![0.1; n],
            cellc::ir::Type::Scalar => vec![0.1],
        })
        .collect();
    let e = Kernel::new(ir, params, &Options::default())
        .unwrap_err()
        .to_string();
    assert!(e.contains("does not verify"), "{e}");
}
