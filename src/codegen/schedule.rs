//! The cost model: which plan runs a step, on how many threads.
//!
//! Four plans (`Variant`) compute the same cell:
//!
//! - **streaming**: one fused product per stage, `[W_x W_h] @ [x; h]`, generated
//!   micro-kernels with the epilogue fused. Needs only this step's input: `step`
//!   always runs it.
//! - **hoisted**: when a whole sequence is known, every product term that reads a
//!   cell input (`W_x @ x`) leaves the step: it is computed for many steps at once
//!   as one large matrix product, blocked for the caches (`kernels::gemm`:
//!   compute-bound, reads `W_x` once), and each step runs only the recurrent
//!   products, starting from it.
//! - **gemm**, **gemm-hoisted**: for large batches, where a step is compute-bound,
//!   the per-step products run on the full-width panel kernels
//!   (`kernels::panel`, about twice the FLOP rate of Cranelift's 128-bit
//!   kernels), each unit of rows followed by its epilogue.
//!
//! For each, the model predicts a step's time from the bytes of weights it must
//! read (per thread: at L2's bandwidth where its share fits there; else, as the
//! steps sweep the weights back and forth, an L2's worth at L2's bandwidth and
//! the rest at L3's or DRAM's), its FLOPs
//! (at the measured rate of the kernels that do them), and the cost of meeting at
//! a barrier; it picks the plan and thread count with the least. The host's
//! figures come from `/sys` (cache sizes) and a small probe run once per process
//! (bandwidths, FLOP rates); `cellc compile --emit schedule` prints all of it.

pub use super::host::{host, Host};
pub use super::options::Variant;
use super::vecmath;
use crate::ir::{self, EwOp, Op, Type};

/// Vector instructions per nanosecond that generated element-wise code
/// sustains on one core (measured on the LSTM epilogue; the code is a long
/// chain of dependent 4-lane operations, so this is latency- more than
/// port-bound).
const ELEMENTWISE_VOPS_PER_NS: f64 = 3.4;

/// How much faster 256- and 512-bit loads read weights from L2 than the
/// probe's 128-bit ones (see `predict`).
const WIDE_L2_READS: f64 = 1.3;

/// The same from L3 and DRAM (see `predict`).
const WIDE_FAR_READS: f64 = 1.15;

/// What one bf16 and one int8 weight cost the generated kernels, in f32
/// weights' time when the FMAs bound a step (measured: LSTM H = 256, batch 1,
/// one step per call, one thread, streaming: f32 29.3 µs, bf16 39.7, int8
/// 94.0 on a Zen 4 core). The pair of bf16 takes a shift and an `and` more
/// than two f32; the pair of int8 a sign-extending load and four shuffles and
/// conversions.
const JIT_BF16_COST: f64 = 1.35;
const JIT_INT8_COST: f64 = 3.2;

/// Bytes and FLOPs of one step, split into what reads cell inputs (hoistable)
/// and the rest, and the kernels the batched products run on.
#[derive(Clone, Copy, Debug, Default)]
pub struct Work {
    /// The panel kernels' ISA (`Options::isa`, else the widest the host has):
    /// the gemm plans' rates, tiles and epilogue width follow it.
    pub isa: crate::kernels::Isa,
    /// Bytes of the weights in `f32` (what the hoisted projection's `gemm` reads).
    pub input_bytes: f64,
    pub recurrent_bytes: f64,
    /// Bytes as the weights are stored (what the kernels of a step read: bf16
    /// and int8 matrices in 2 and 1 bytes a value, plus int8's row scales).
    pub input_bytes_stored: f64,
    pub recurrent_bytes_stored: f64,
    /// Weights stored in bf16 and in int8 (counts, not bytes), split as the
    /// bytes are: every kernel widens each one per tile of batch rows.
    pub input_narrow: [f64; 2],
    pub recurrent_narrow: [f64; 2],
    pub input_flops: f64,
    pub recurrent_flops: f64,
    pub elementwise_flops: f64,
    /// Element-wise work in lane-instructions: per element, the vector
    /// instructions its operations generate (a sigmoid is ~40, an add 1).
    pub elementwise_cost: f64,
    /// Vector values a step writes and reads back (per batch row).
    pub activations: f64,
    /// Only the `gemm` plans compute this cell as asked (under
    /// [`crate::Compute::Int8`] their products are the integer kernels;
    /// the generated ones multiply in float32): `choose` picks among them.
    pub gemm_only: bool,
}

impl Work {
    /// The work of a kernel computing in `compute`: under
    /// [`crate::Compute::Int8`] only the `gemm` plans run it, and their
    /// integer kernels multiply the int8 weights as they are (none is
    /// widened).
    pub fn computing(self, compute: crate::Compute) -> Work {
        if compute != crate::Compute::Int8 {
            return self;
        }
        Work {
            gemm_only: true,
            input_narrow: [self.input_narrow[0], 0.0],
            recurrent_narrow: [self.recurrent_narrow[0], 0.0],
            ..self
        }
    }
}

/// The block size a block-circulant `m x k` matrix is multiplied through
/// spectra with (as the planner decides: `ir::Structure::spectral_k`).
fn spectral_k(ir: &ir::Cell, wt: ir::Value, m: usize, k: usize) -> Option<usize> {
    match ir.op_of(wt) {
        Op::Param(p) => ir.params[p.index()].structure.spectral_k(m, k),
        _ => None,
    }
}

pub fn work(ir: &ir::Cell, isa: crate::kernels::Isa) -> Work {
    let mut w = Work {
        isa,
        ..Work::default()
    };
    for inst in &ir.insts {
        match &inst.op {
            Op::Product(p) => {
                for (r, row) in p.rows.iter().enumerate() {
                    let rows = ir.ty(inst.results[r]).vector_len().unwrap_or(0) as f64;
                    w.activations += rows;
                    for (j, wt) in row.weights.iter().enumerate() {
                        let Some(wt) = wt else { continue };
                        let Type::Matrix(m, k) = ir.ty(*wt) else {
                            continue;
                        };
                        // Block-circulant matrices through their spectra:
                        // `k` floats and about `4 k` flops a block, every
                        // step (they are not hoisted).
                        if let Some(kc) = spectral_k(ir, *wt, m, k) {
                            let floats =
                                crate::kernels::spectral::weights_len(m, k, kc).unwrap_or(0) as f64;
                            let (m, k, kc) = (m as f64, k as f64, kc as f64);
                            w.recurrent_bytes += 4.0 * floats;
                            w.recurrent_bytes_stored += 4.0 * floats;
                            w.recurrent_flops += 4.0 * m * k / kc + 2.0 * kc * (m + k);
                            continue;
                        }
                        let (bytes, flops) = (4.0 * (m * k) as f64, 2.0 * (m * k) as f64);
                        let stored = stored_bytes(ir, *wt, m, k);
                        let narrow = narrow_index(ir, *wt);
                        if matches!(ir.op_of(p.inputs[j]), Op::Input(_)) {
                            w.input_bytes += bytes;
                            w.input_bytes_stored += stored;
                            w.input_flops += flops;
                            if let Some(i) = narrow {
                                w.input_narrow[i] += (m * k) as f64;
                            }
                        } else {
                            w.recurrent_bytes += bytes;
                            w.recurrent_bytes_stored += stored;
                            w.recurrent_flops += flops;
                            if let Some(i) = narrow {
                                w.recurrent_narrow[i] += (m * k) as f64;
                            }
                        }
                    }
                }
            }
            Op::MatVec { weight, .. } | Op::MatVecT { weight, .. } => {
                if let Type::Matrix(m, k) = ir.ty(*weight) {
                    w.recurrent_bytes += 4.0 * (m * k) as f64;
                    w.recurrent_bytes_stored += stored_bytes(ir, *weight, m, k);
                    w.recurrent_flops += 2.0 * (m * k) as f64;
                }
            }
            Op::Fused(r) => {
                w.elementwise_flops += r.body.len() as f64 * r.len as f64;
                let cost: f64 = r
                    .body
                    .iter()
                    .map(|i| match i.op {
                        EwOp::Const(_) => 0.0,
                        EwOp::Unary(u) => vecmath::unary_cost(u),
                        EwOp::Binary(o) => vecmath::binary_cost(o),
                    })
                    .sum();
                w.elementwise_cost += cost * r.len as f64;
            }
            Op::Unary(u, _) => {
                let len = ir.ty(inst.results[0]).vector_len().unwrap_or(0) as f64;
                w.elementwise_flops += len;
                // Unfused: the value also goes through memory.
                w.elementwise_cost += (vecmath::unary_cost(*u) + 2.0) * len;
            }
            Op::Binary(o, ..) => {
                let len = ir.ty(inst.results[0]).vector_len().unwrap_or(0) as f64;
                w.elementwise_flops += len;
                w.elementwise_cost += (vecmath::binary_cost(*o) + 3.0) * len;
            }
            _ => {}
        }
    }
    w
}

fn precision_of(ir: &ir::Cell, weight: ir::Value) -> ir::Precision {
    match ir.op_of(weight) {
        Op::Param(p) => ir.params[ir::EntityRef::index(*p)].precision,
        _ => ir::Precision::F32,
    }
}

/// 0 for bf16, 1 for int8, `None` for f32 (the index in `Work`'s narrow
/// counts).
fn narrow_index(ir: &ir::Cell, weight: ir::Value) -> Option<usize> {
    match precision_of(ir, weight) {
        ir::Precision::F32 => None,
        ir::Precision::Bf16 => Some(0),
        ir::Precision::Int8 => Some(1),
    }
}

/// Bytes of an `[m, k]` weight as its parameter is stored (f32 for a weight
/// that is not a parameter).
fn stored_bytes(ir: &ir::Cell, weight: ir::Value, m: usize, k: usize) -> f64 {
    let precision = precision_of(ir, weight);
    let scales = if precision == ir::Precision::Int8 {
        4 * m
    } else {
        0
    };
    (precision.bytes() * m * k + scales) as f64
}

/// A prediction for one plan on some threads.
#[derive(Clone, Debug)]
pub struct Choice {
    pub variant: Variant,
    pub threads: usize,
    /// Predicted microseconds per step.
    pub predicted_us: f64,
    /// The floor: the weights at their level's bandwidth, the FLOPs at the
    /// best product rate (`gemm` or the panel kernels), on these threads,
    /// nothing else.
    pub floor_us: f64,
    pub bytes_per_step: f64,
    pub flops_per_step: f64,
    /// Where the per-step weights are read from: `L2` (a thread's share fits
    /// in its L2), `L2+L3` or `L2+DRAM` (an L2's worth of it there, the rest
    /// further out).
    pub level: &'static str,
    /// The batch rows apart: each thread runs its own rows through every
    /// step, all of each step's work on them, and never waits for another
    /// (each reads all the weights, from its own L2). Otherwise the threads
    /// share each step's work and meet after every phase.
    pub rows_apart: bool,
}

/// The portable panel kernel's rate against the host's widest (`f32::mul_add`
/// one float at a time: 0.6 GFLOP/s against AVX-512's 143, LSTM X = H = 256,
/// batch 16, one thread, `cellc bench --plan gemm --isa scalar`, Intel Xeon,
/// 2026-12-06).
const SCALAR_PANEL_FRACTION: f64 = 0.005;

/// The panel kernels' rate at `isa`: the host's (measured or default, at its
/// widest ISA) scaled by the vector width (AVX2 measured 0.54 of AVX-512,
/// same run as [`SCALAR_PANEL_FRACTION`]).
fn panel_rate(host: &Host, isa: crate::kernels::Isa) -> f64 {
    let widest = crate::kernels::Isa::detect();
    match isa {
        crate::kernels::Isa::Scalar if widest != crate::kernels::Isa::Scalar => {
            host.panel_gflops * SCALAR_PANEL_FRACTION
        }
        _ => host.panel_gflops * (isa.lanes() as f64 / widest.lanes() as f64).min(1.0),
    }
}

/// Predicts a step of `variant` on `threads` threads.
pub fn predict(
    work: &Work,
    host: &Host,
    variant: Variant,
    threads: usize,
    batch: usize,
    seq: usize,
) -> Choice {
    let n = threads.max(1) as f64;
    let b = batch as f64;
    let hoist = variant.hoists() && seq > 1 && work.input_flops > 0.0;
    // Every kernel reads the weights as stored (the hoisted projection
    // reads f32 copies, counted apart below; a micro-kernel segment
    // whose blocks mix precisions reads f32 values, which this undercounts).
    let (recurrent_bytes, input_bytes) = (work.recurrent_bytes_stored, work.input_bytes_stored);
    let step_bytes = recurrent_bytes + if hoist { 0.0 } else { input_bytes };
    let narrow =
        |i: usize| work.recurrent_narrow[i] + if hoist { 0.0 } else { work.input_narrow[i] };
    let step_flops = (work.recurrent_flops + if hoist { 0.0 } else { work.input_flops }) * b;
    // Where a thread's share of the per-step weights lives.
    let share = step_bytes / n;
    // The panel kernels read the weights with the host's widest loads, which
    // from L2 go faster than the 128-bit loads the probe (and the generated
    // code) use: 1.35x measured here (LSTM H = 256, batch 1, one step per
    // call: 19.2-20.2 µs against 26.0-29.4), 1.3x on Zen 3. From L3 and
    // DRAM the width mattered less there (1.1x at H = 512), more on Zen 5
    // (batch 1, 2 threads, alternating, 2026-12-02: from L3 1.1-1.35x, GRU
    // H = 512 one step per call 37 µs against 47-52; from DRAM 2x, LSTM H =
    // 1024 one step per call 245-312 against 481-575).
    let wide = variant.uses_gemm() && work.isa.is_wide();
    let (near, far) = if wide {
        (WIDE_L2_READS, WIDE_FAR_READS)
    } else {
        (1.0, 1.0)
    };
    // A thread's share beyond its L2: the steps sweep the weights back and
    // forth (`jit::exec::Sweep`), so the part that fits is still there at
    // the next step and only the rest comes from further out (measured
    // here: LSTM X = 8, H = 512, batch 1, gemm-hoisted, 4 MiB of weights a
    // step, 1 thread 166 -> 114 µs a step, 2 threads 44-47 -> 33-37; this
    // model says 109 and 36 with the default rates).
    let in_l2 = host.l2 as f64 * 0.8;
    let (level, mem_us) = if share <= in_l2 {
        ("L2", share / (host.bw_l2 * near) / 1e3)
    } else {
        let near_us = in_l2 / (host.bw_l2 * near) / 1e3;
        let beyond = share - in_l2;
        if step_bytes <= host.l3 as f64 * 0.8 {
            ("L2+L3", near_us + beyond / (host.bw_l3 * far) / 1e3)
        } else {
            // DRAM is shared: more threads help less than they do from
            // private caches.
            let bw = host.bw_dram * far * n.min(2.0) * 0.95;
            ("L2+DRAM", near_us + beyond * n / bw / 1e3)
        }
    };
    let rate = if variant.uses_gemm() {
        panel_rate(host, work.isa)
    } else {
        host.jit_gflops
    };
    // Batch 1 streams weights: FLOPs hide under the loads unless batched.
    let mut compute_us = step_flops / (rate * n) / 1e3;
    if variant.uses_gemm() {
        // Narrow weights are widened once per tile of batch rows, at the
        // rate measured at batch 1 (which includes that row's FMAs).
        let tiles = batch.div_ceil(crate::kernels::panel::narrow_tile_shape(work.isa).1) as f64;
        let widen_us = (narrow(0) / host.bf16_gws + narrow(1) / host.int8_gws) * tiles / n / 1e3;
        compute_us = compute_us.max(widen_us);
    } else {
        // The generated kernels widen in 128-bit registers, with the FMAs:
        // each narrow weight costs that many f32 ones.
        let extra = narrow(0) * (JIT_BF16_COST - 1.0) + narrow(1) * (JIT_INT8_COST - 1.0);
        compute_us += 2.0 * extra * b / (rate * n) / 1e3;
    }
    // Four lanes per vector instruction, ~3.4 vector instructions per ns
    // (measured: the LSTM epilogue at batch 64, H = 128, one thread); the
    // gemm plans' standalone regions run at the host's full width
    // (`codegen::wide`: 4.4x fewer cycles than 4 lanes at 16, same measurement).
    let lanes = if variant.uses_gemm() {
        work.isa.lanes() as f64
    } else {
        4.0
    };
    let elementwise_us = work.elementwise_cost * b / (lanes * ELEMENTWISE_VOPS_PER_NS * n) / 1e3;
    let mut step_us = mem_us.max(compute_us) + elementwise_us;
    if variant.uses_gemm() {
        // gemm writes its products out and the epilogue reads them back.
        step_us += 2.0 * work.activations * b * 4.0 / (host.bw_l2 * n) / 1e3 + 0.5;
    }
    let hoist_us = if hoist {
        // One large product per chunk of steps, amortized over them.
        work.input_flops * b / (host.gemm_gflops * n) / 1e3
            + work.input_bytes / (host.bw_l3 * n) / 1e3 / seq as f64
    } else {
        0.0
    };
    let sync_us = if threads > 1 {
        host.barrier_us * 2.0
    } else {
        0.0
    };
    // The floor: the step's weights at their level's bandwidth or its FLOPs at
    // the best product rate, whichever is slower, plus the hoisted
    // projection's FLOPs (a phase of its own) at the same rate.
    let hoisted_flops = if hoist { work.input_flops * b } else { 0.0 };
    let best_rate = host.gemm_gflops.max(panel_rate(host, work.isa));
    let floor_us = (mem_us.max(step_flops / (best_rate * n) / 1e3)
        + hoisted_flops / (host.gemm_gflops * n) / 1e3)
        .max(1e-3);
    Choice {
        variant,
        threads,
        predicted_us: step_us + hoist_us + sync_us,
        floor_us,
        bytes_per_step: step_bytes,
        flops_per_step: step_flops + if hoist { work.input_flops * b } else { 0.0 },
        level,
        rows_apart: false,
    }
}

/// What threads sharing each step's work lose waiting for each other at its
/// phases' meetings beyond the barrier the model counts (the slowest share
/// sets each phase's end), as a factor on a prediction: measured on a
/// 2-vCPU Xeon, 2 threads, rows apart against shared (`--emit schedule`
/// predicted them within 2 %): LSTM X = H = 128 batch 64 65 against 85
/// µs per step, batch 16 16.7 against 19.9, batch 8 11.5 against 11.3; X = H
/// = 64 batch 64 18.8 against 29.4; GRU H = 128 batch 32 22.8 against 29.0,
/// H = 256 batch 64 161 against 178; LSTM H = 256 batch 16 61 against 63.
const SHARED_WAITS: f64 = 1.15;

/// Whether [`choose`] takes `c` over `b`: 3 % faster as predicted, a shared
/// step on several threads weighed against rows apart with the waits the
/// model does not see ([`SHARED_WAITS`]).
fn beats(c: &Choice, b: &Choice) -> bool {
    let shared = |x: &Choice| x.threads > 1 && !x.rows_apart;
    let weight = |x: &Choice, other: &Choice| {
        if shared(x) && other.rows_apart {
            x.predicted_us * SHARED_WAITS
        } else {
            x.predicted_us
        }
    };
    weight(c, b) < weight(b, c) * 0.97
}

/// `variant` on `threads` threads with the batch rows apart
/// ([`Choice::rows_apart`]): each thread's share predicted as one thread
/// running it alone. Only where one thread's weights stay in its L2 (every
/// thread reads them all) and every thread has two rows or more.
fn predict_apart(
    work: &Work,
    host: &Host,
    variant: Variant,
    threads: usize,
    batch: usize,
    seq: usize,
) -> Option<Choice> {
    // Every thread at least two rows (`jit::exec::apart_workers`).
    if threads < 2 || batch < 2 * threads {
        return None;
    }
    let alone = predict(work, host, variant, 1, batch.div_ceil(threads), seq);
    if alone.level != "L2" {
        return None;
    }
    Some(Choice {
        predicted_us: alone.predicted_us,
        rows_apart: true,
        ..predict(work, host, variant, threads, batch, seq)
    })
}

/// The best plan and thread count for a batch and a sequence length (`seq == 1`:
/// one step per call, so only the plans that hoist nothing, `streaming` and
/// `gemm`, apply). `threads` and `variant`, when given, are kept.
pub fn choose(
    work: &Work,
    host: &Host,
    batch: usize,
    seq: usize,
    threads: Option<usize>,
    variant: Option<Variant>,
) -> Choice {
    // No allocation: `Kernel::run` asks for every call.
    let forced;
    let variants: &[Variant] = match variant {
        Some(v) => {
            forced = [v.for_steps(seq)];
            &forced
        }
        None if work.gemm_only && seq == 1 => &[Variant::Gemm],
        None if work.gemm_only => &[Variant::Gemm, Variant::GemmHoisted],
        None if seq == 1 => &[Variant::Streaming, Variant::Gemm],
        None => &Variant::ALL,
    };
    let counts = match threads {
        Some(t) => t.max(1)..=t.max(1),
        None => 1..=host.cores.max(1),
    };
    let mut best: Option<Choice> = None;
    for &v in variants {
        for t in counts.clone() {
            let shared = predict(work, host, v, t, batch, seq);
            for c in std::iter::once(shared).chain(predict_apart(work, host, v, t, batch, seq)) {
                if best.as_ref().is_none_or(|b| beats(&c, b)) {
                    best = Some(c);
                }
            }
        }
    }
    best.unwrap_or_else(|| predict(work, host, Variant::Streaming, 1, batch, seq))
}

/// The plan an object file runs (`crate::aot`) for a batch and a sequence
/// length: `streaming` or `hoisted` (the others need cellc's runtime), on the
/// caller's thread, the hoisted projection on generated 128-bit kernels (at
/// the generated code's rate, not the blocked product's). `seq == 1` is always
/// streaming.
pub fn choose_for_object(work: &Work, host: &Host, batch: usize, seq: usize) -> Choice {
    let generated = Host {
        gemm_gflops: host.jit_gflops,
        ..host.clone()
    };
    let streaming = predict(work, &generated, Variant::Streaming, 1, batch, seq);
    if seq <= 1 {
        return streaming;
    }
    let hoisted = predict(work, &generated, Variant::Hoisted, 1, batch, seq);
    if hoisted.predicted_us < streaming.predicted_us * 0.97 {
        hoisted
    } else {
        streaming
    }
}

/// The `--emit schedule` text.
pub fn describe(
    ir: &ir::Cell,
    batch: usize,
    seq: usize,
    threads: Option<usize>,
    variant: Option<Variant>,
    isa: crate::kernels::Isa,
) -> String {
    let host = host();
    let w = work(ir, isa);
    let chosen = choose(&w, host, batch, seq, threads, variant);
    let mut s = String::new();
    let dims: Vec<String> = ir.dims.iter().map(|(n, v)| format!("{n}={v}")).collect();
    s.push_str(&format!(
        "cell {} ({}), batch {batch}, {}\n",
        ir.name,
        dims.join(", "),
        if seq == 1 {
            "one step per call".to_string()
        } else {
            format!("sequences of {seq}")
        }
    ));
    s.push_str(&format!("host: {}\n", host.source.describe()));
    s.push_str(&format!(
        "      {} cores; L1d {} KiB, L2 {} KiB, L3 {} MiB; one core reads {:.0} GB/s from L2, {:.0} from L3, {:.0} from DRAM; gemm {:.0} GFLOP/s, panel kernels {:.0}, generated kernels ~{:.0}\n",
        host.cores,
        host.l1 >> 10,
        host.l2 >> 10,
        host.l3 >> 20,
        host.bw_l2,
        host.bw_l3,
        host.bw_dram,
        host.gemm_gflops,
        host.panel_gflops,
        host.jit_gflops
    ));
    s.push_str(&format!(
        "per step: {:.1} KiB of weights read by products of cell inputs, {:.1} KiB by recurrent products; {:.1} kFLOP\n",
        w.input_bytes / 1024.0,
        w.recurrent_bytes / 1024.0,
        (w.input_flops + w.recurrent_flops + w.elementwise_flops) * batch as f64 / 1e3
    ));
    let narrow: Vec<String> = ir
        .params
        .iter()
        .filter(|p| p.precision != ir::Precision::F32)
        .map(|p| format!("{} {}", p.name, p.precision))
        .collect();
    if !narrow.is_empty() {
        s.push_str(&format!(
            "stored narrow: {}; every kernel reads them so, {:.1} KiB and {:.1} KiB per step, and widens them in registers (the hoisted projection's gemm reads f32 copies)\n",
            narrow.join(", "),
            w.input_bytes_stored / 1024.0,
            w.recurrent_bytes_stored / 1024.0,
        ));
    }
    s.push_str(&format!(
        "kernels: streaming and hoisted plans, generated 128-bit kernels (Cranelift); gemm plans, panel kernels over weights packed once, each unit of rows followed by its element-wise epilogue {} lanes wide ({}; this host's widest is {}: `--isa` to choose)\n",
        isa.lanes(),
        isa.name(),
        crate::kernels::Isa::detect().name()
    ));
    s.push_str("plan          threads  weights/step  level    predicted µs/step  floor µs/step\n");
    for v in Variant::ALL {
        if seq == 1 && v.for_steps(1) != v {
            continue;
        }
        for t in 1..=host.cores.max(1) {
            let shared = predict(&w, host, v, t, batch, seq);
            for c in std::iter::once(shared).chain(predict_apart(&w, host, v, t, batch, seq)) {
                let mark = if c.variant == chosen.variant
                    && c.threads == chosen.threads
                    && c.rows_apart == chosen.rows_apart
                {
                    "  <- chosen"
                } else {
                    ""
                };
                s.push_str(&format!(
                    "{:13} {:7}  {:9.1} KiB  {:7}  {:17.2}  {:13.2}{mark}\n",
                    v.name(),
                    if c.rows_apart {
                        format!("{t} apart")
                    } else {
                        t.to_string()
                    },
                    c.bytes_per_step / 1024.0,
                    c.level,
                    c.predicted_us,
                    c.floor_us
                ));
            }
        }
    }
    s.push_str(&format!(
        "chosen: {} on {} thread{}{}",
        chosen.variant.name(),
        chosen.threads,
        if chosen.threads == 1 { "" } else { "s" },
        if chosen.rows_apart {
            ", each with its own batch rows"
        } else {
            ""
        }
    ));
    if threads.is_some() || variant.is_some() {
        s.push_str(" (as forced)");
    }
    s.push('\n');
    s
}
