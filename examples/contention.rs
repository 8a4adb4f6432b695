//! How kernels behave on a busy machine: one kernel next to a busy loop, eight
//! kernels stepping at once, two hundred idle kernels, each against one
//! thread. Prints µs per step (median of 9 samples of 60 ms) and the
//! process's CPU time.
//!
//!   cargo run --release --example contention [H]
//!
//! The busy loop is another process (`sh -c 'while :; do :; done'`) that
//! keeps one core occupied. Figures are in docs/performance.md.

// A program: it prints.
#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::process::{Child, Command};
use std::time::{Duration, Instant};

use cellc::{Cell, Kernel, Options, Variant, Weights};

/// User + system CPU seconds of this process so far (Linux).
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let after = stat.rfind(')').map_or("", |i| &stat[i + 2..]);
    let f: Vec<&str> = after.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    (ticks(11) + ticks(12)) / 100.0
}

fn kernel(cell: &Cell, weights: &Weights, threads: usize, plan: Variant) -> Kernel {
    let opts = Options {
        threads: Some(threads),
        plan: Some(plan),
        ..Options::default()
    };
    cell.compile(weights, &opts).expect("compiles")
}

/// µs per step of `k` over sequences of `seq` steps (1: one `step` per call):
/// the median of 9 samples of about 60 ms (long enough for a pool to notice
/// that its workers lack cores, as it would in sustained use).
fn per_step(k: &Kernel, h: usize, seq: usize) -> f64 {
    let mut state = k.new_state(1).expect("state");
    let xs = vec![0.1f32; seq * h];
    let mut ys = vec![0.0f32; seq * h];
    let mut sample = || {
        let start = Instant::now();
        let mut steps = 0;
        while start.elapsed() < Duration::from_millis(60) {
            if seq == 1 {
                k.step(&xs, &mut state).expect("step");
            } else {
                k.run(&xs, &mut state, &mut ys).expect("run");
            }
            steps += seq;
        }
        start.elapsed().as_secs_f64() * 1e6 / steps as f64
    };
    sample();
    let mut s: Vec<f64> = (0..9).map(|_| sample()).collect();
    s.sort_by(f64::total_cmp);
    s[4]
}

fn busy_loop() -> Child {
    Command::new("sh")
        .args(["-c", "while :; do :; done"])
        .spawn()
        .expect("sh")
}

fn main() {
    let h: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(256);
    let cell = Cell::from_file(concat!(env!("CARGO_MANIFEST_DIR"), "/examples/lstm.rnn"))
        .and_then(|c| c.dims(&[("X", h as u64), ("H", h as u64)]))
        .expect("lstm");
    let weights = Weights::random(&cell.ir().expect("ir"), 1);
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    println!("LSTM X = H = {h}, batch 1, {cores} cores; µs per step, median of 9 samples of 60 ms");
    for (label, seq, plan) in [
        ("T = 100", 100, Variant::Hoisted),
        ("one step per call", 1, Variant::Streaming),
    ] {
        let one = kernel(&cell, &weights, 1, plan);
        let two = kernel(&cell, &weights, 2, plan);
        let quiet = (per_step(&one, h, seq), per_step(&two, h, seq));
        let mut busy = busy_loop();
        std::thread::sleep(Duration::from_millis(100));
        let loaded = (per_step(&one, h, seq), per_step(&two, h, seq));
        let _ = busy.kill();
        let _ = busy.wait();
        // The shared pool declines jobs for a while after finding its workers
        // without cores: let that pass before the next quiet measurement.
        std::thread::sleep(Duration::from_millis(500));
        println!(
            "{label:18} quiet: 1 thread {:8.2}, 2 threads {:8.2} | next to a busy loop: 1 thread {:8.2}, 2 threads {:8.2}",
            quiet.0, quiet.1, loaded.0, loaded.1
        );
    }
    // Eight kernels stepping at once, each on its own caller thread.
    for threads in [1, 2] {
        let kernels: Vec<Kernel> = (0..8)
            .map(|_| kernel(&cell, &weights, threads, Variant::Hoisted))
            .collect();
        let cpu0 = cpu_seconds();
        let start = Instant::now();
        let steps: Vec<f64> = std::thread::scope(|s| {
            let handles: Vec<_> = kernels
                .iter()
                .map(|k| {
                    s.spawn(move || {
                        let mut state = k.new_state(1).expect("state");
                        let xs = vec![0.1f32; 100 * h];
                        let mut ys = vec![0.0f32; 100 * h];
                        let mut n = 0.0;
                        while start.elapsed() < Duration::from_millis(1500) {
                            k.run(&xs, &mut state, &mut ys).expect("run");
                            n += 100.0;
                        }
                        n
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().expect("join"))
                .collect()
        });
        let wall = start.elapsed().as_secs_f64();
        let cpu = cpu_seconds() - cpu0;
        let total: f64 = steps.iter().sum();
        println!(
            "8 kernels at once, {threads} thread{} each: {:8.0} steps/s in all, CPU {:.2} s per wall second",
            if threads == 1 { "" } else { "s" },
            total / wall,
            cpu / wall
        );
    }
    // Idle kernels: 200 of them, each having run once on 2 threads.
    let kernels: Vec<Kernel> = (0..200)
        .map(|_| kernel(&cell, &weights, 2, Variant::Streaming))
        .collect();
    for k in &kernels {
        let mut state = k.new_state(1).expect("state");
        k.step(&vec![0.1f32; h], &mut state).expect("step");
    }
    let cpu0 = cpu_seconds();
    std::thread::sleep(Duration::from_secs(2));
    println!(
        "200 idle kernels: CPU {:.3} s over 2 s of wall time",
        cpu_seconds() - cpu0
    );
}
