//! The cost model: which plan runs a step, on how many threads.
//!
//! Four plans (`Variant`) compute the same cell:
//!
//! - **streaming**: one fused product per stage, `[W_x W_h] @ [x; h]`, generated
//!   micro-kernels with the epilogue fused. Needs only this step's input: `step`
//!   always runs it.
//! - **hoisted**: when a whole sequence is known, every product term that reads a
//!   cell input (`W_x @ x`) leaves the step: it is computed for many steps at once
//!   as one large matrix product by the `gemm` crate (compute-bound, reads `W_x`
//!   once), and each step runs only the recurrent products, starting from it.
//! - **gemm**, **gemm-hoisted**: for large batches, where a step is compute-bound,
//!   the per-step products go to `gemm` too (about twice the FLOP rate of
//!   Cranelift's 128-bit kernels), and the epilogue runs as its own fused pass.
//!
//! For each, the model predicts a step's time from the bytes of weights it must
//! read (at the bandwidth of the cache level they fit in, per thread), its FLOPs
//! (at the measured rate of the kernels that do them), and the cost of meeting at
//! a barrier; it picks the plan and thread count with the least. The host's
//! figures come from `/sys` (cache sizes) and a small probe run once per process
//! (bandwidths, FLOP rates); `cellc compile --emit schedule` prints all of it.

use std::sync::OnceLock;
use std::time::Instant;

use super::vecmath;
use crate::ir::{self, EwOp, Op, Type};

/// Vector instructions per nanosecond that generated element-wise code
/// sustains on one core (measured on the LSTM epilogue; the code is a long
/// chain of dependent 4-lane operations, so this is latency- more than
/// port-bound).
const ELEMENTWISE_VOPS_PER_NS: f64 = 3.4;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Variant {
    Streaming,
    Hoisted,
    Gemm,
    GemmHoisted,
}

impl Variant {
    pub const ALL: [Variant; 4] = [
        Variant::Streaming,
        Variant::Hoisted,
        Variant::Gemm,
        Variant::GemmHoisted,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Variant::Streaming => "streaming",
            Variant::Hoisted => "hoisted",
            Variant::Gemm => "gemm",
            Variant::GemmHoisted => "gemm-hoisted",
        }
    }

    /// The plan that runs `seq` steps when this one is asked for: one step at a
    /// time has no input projection to hoist.
    pub fn for_steps(self, seq: usize) -> Variant {
        match self {
            Variant::Hoisted if seq == 1 => Variant::Streaming,
            Variant::GemmHoisted if seq == 1 => Variant::Gemm,
            v => v,
        }
    }

    pub fn from_name(s: &str) -> Option<Variant> {
        Variant::ALL.into_iter().find(|v| v.name() == s)
    }

    pub fn index(self) -> usize {
        self as usize
    }

    pub fn hoists(self) -> bool {
        matches!(self, Variant::Hoisted | Variant::GemmHoisted)
    }

    pub fn uses_gemm(self) -> bool {
        matches!(self, Variant::Gemm | Variant::GemmHoisted)
    }
}

/// What the host can do, measured once per process.
#[derive(Clone, Debug)]
pub struct Host {
    pub cores: usize,
    /// Data cache sizes in bytes (per core for L1/L2; the shared L3).
    pub l1: usize,
    pub l2: usize,
    pub l3: usize,
    /// Read bandwidth of one core, GB/s, from data that fits in L2, in L3, and
    /// from DRAM.
    pub bw_l2: f64,
    pub bw_l3: f64,
    pub bw_dram: f64,
    /// FLOP rates of one core, GFLOP/s: the `gemm` crate on a large product, and
    /// the generated kernels (128-bit vectors) on a batched product.
    pub gemm_gflops: f64,
    pub jit_gflops: f64,
    /// Cost of one barrier among the cores, microseconds.
    pub barrier_us: f64,
}

fn read_cache_sizes() -> (usize, usize, usize) {
    let mut l1 = 32 << 10;
    let mut l2 = 512 << 10;
    let mut l3 = 8 << 20;
    for i in 0..8 {
        let base = format!("/sys/devices/system/cpu/cpu0/cache/index{i}");
        let read = |f: &str| std::fs::read_to_string(format!("{base}/{f}")).ok();
        let (Some(level), Some(size), Some(kind)) = (read("level"), read("size"), read("type"))
        else {
            continue;
        };
        let size = size.trim();
        let bytes = if let Some(k) = size.strip_suffix('K') {
            k.parse::<usize>().ok().map(|v| v << 10)
        } else if let Some(m) = size.strip_suffix('M') {
            m.parse::<usize>().ok().map(|v| v << 20)
        } else {
            size.parse().ok()
        };
        let Some(bytes) = bytes else { continue };
        match (level.trim(), kind.trim()) {
            ("1", "Data") => l1 = bytes,
            ("2", _) => l2 = bytes,
            ("3", _) => l3 = bytes,
            _ => {}
        }
    }
    (l1, l2, l3)
}

/// GB/s of summing `bytes` of floats, best of a few passes (after one to warm).
fn read_bandwidth(bytes: usize, budget_passes: usize) -> f64 {
    let v = vec![1.0f32; bytes / 4];
    let mut best = f64::MAX;
    let mut sink = 0.0f32;
    for pass in 0..=budget_passes {
        let t = Instant::now();
        sink += crate::jit::sum_floats(&v);
        let dt = t.elapsed().as_secs_f64();
        if pass > 0 {
            best = best.min(dt);
        }
    }
    std::hint::black_box(sink);
    bytes as f64 / best / 1e9
}

fn gemm_rate() -> f64 {
    let (m, n, k) = (256, 96, 256);
    let a = vec![0.5f32; m * k];
    let b = vec![0.25f32; k * n];
    let mut c = vec![0.0f32; m * n];
    let mut best = f64::MAX;
    for _ in 0..4 {
        let t = Instant::now();
        crate::jit::sgemm(m, n, k, &mut c, n, &a, k, &b, k, false);
        best = best.min(t.elapsed().as_secs_f64());
    }
    2.0 * (m * n * k) as f64 / best / 1e9
}

fn probe() -> Host {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let (l1, l2, l3) = read_cache_sizes();
    // Sizes within each level (capped: a virtual machine's share of a large L3
    // is smaller than what /sys reports, and a probe must stay quick).
    let bw_l2 = read_bandwidth((l2 / 2).clamp(64 << 10, 1 << 20), 20);
    let bw_l3 = read_bandwidth((l3 / 4).clamp(l2 * 2, 8 << 20), 6);
    let bw_dram = read_bandwidth((l3 * 2).clamp(64 << 20, 96 << 20), 1);
    let gemm_gflops = gemm_rate();
    Host {
        cores,
        l1,
        l2,
        l3,
        bw_l2,
        bw_l3,
        bw_dram,
        gemm_gflops,
        // Generated kernels reach about 40% of `gemm` on batched products
        // (docs/codegen.md: ~30 against ~75 GFLOP/s per core).
        jit_gflops: gemm_gflops * 0.4,
        barrier_us: 1.0,
    }
}

/// The host's figures (probed on first use, then cached).
pub fn host() -> &'static Host {
    static HOST: OnceLock<Host> = OnceLock::new();
    HOST.get_or_init(probe)
}

/// Bytes and FLOPs of one step, split into what reads cell inputs (hoistable)
/// and the rest.
#[derive(Clone, Copy, Debug, Default)]
pub struct Work {
    pub input_bytes: f64,
    pub recurrent_bytes: f64,
    pub input_flops: f64,
    pub recurrent_flops: f64,
    pub elementwise_flops: f64,
    /// Element-wise work in lane-instructions: per element, the vector
    /// instructions its operations generate (a sigmoid is ~40, an add 1).
    pub elementwise_cost: f64,
    /// Vector values a step writes and reads back (per batch row).
    pub activations: f64,
}

pub fn work(ir: &ir::Cell) -> Work {
    let mut w = Work::default();
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
                        let (bytes, flops) = (4.0 * (m * k) as f64, 2.0 * (m * k) as f64);
                        if matches!(ir.op_of(p.inputs[j]), Op::Input(_)) {
                            w.input_bytes += bytes;
                            w.input_flops += flops;
                        } else {
                            w.recurrent_bytes += bytes;
                            w.recurrent_flops += flops;
                        }
                    }
                }
            }
            Op::MatVec { weight, .. } => {
                if let Type::Matrix(m, k) = ir.ty(*weight) {
                    w.recurrent_bytes += 4.0 * (m * k) as f64;
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

/// A prediction for one plan on some threads.
#[derive(Clone, Debug)]
pub struct Choice {
    pub variant: Variant,
    pub threads: usize,
    /// Predicted microseconds per step.
    pub predicted_us: f64,
    /// The floor: the weights at their level's bandwidth, the FLOPs at `gemm`'s
    /// rate, on these threads, nothing else.
    pub floor_us: f64,
    pub bytes_per_step: f64,
    pub flops_per_step: f64,
    /// Where the per-step weights live.
    pub level: &'static str,
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
    let step_bytes = work.recurrent_bytes + if hoist { 0.0 } else { work.input_bytes };
    let step_flops = (work.recurrent_flops + if hoist { 0.0 } else { work.input_flops }) * b;
    // Where a thread's share of the per-step weights lives.
    let share = step_bytes / n;
    let (level, bw) = if share <= host.l2 as f64 * 0.8 {
        ("L2", host.bw_l2)
    } else if step_bytes <= host.l3 as f64 * 0.8 {
        ("L3", host.bw_l3)
    } else {
        ("DRAM", host.bw_dram)
    };
    // DRAM is shared: more threads help less than they do from private caches.
    let mem_us = if level == "DRAM" {
        step_bytes / (bw * n.min(2.0) * 0.95) / 1e3
    } else {
        share / bw / 1e3
    };
    let rate = if variant.uses_gemm() {
        host.gemm_gflops
    } else {
        host.jit_gflops
    };
    // Batch 1 streams weights: FLOPs hide under the loads unless batched.
    let compute_us = step_flops / (rate * n) / 1e3;
    // Four lanes per vector instruction, ~3.4 vector instructions per ns
    // (measured: the LSTM epilogue at batch 64, H = 128, one thread).
    let elementwise_us = work.elementwise_cost * b / (4.0 * ELEMENTWISE_VOPS_PER_NS * n) / 1e3;
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
    // the gemm rate, whichever is slower, plus the hoisted projection's FLOPs
    // (a phase of its own) at the gemm rate.
    let hoisted_flops = if hoist { work.input_flops * b } else { 0.0 };
    let floor_us = (mem_us.max(step_flops / (host.gemm_gflops * n) / 1e3)
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
    }
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
    let variants: Vec<Variant> = match variant {
        Some(v) => vec![v.for_steps(seq)],
        None if seq == 1 => vec![Variant::Streaming, Variant::Gemm],
        None => Variant::ALL.to_vec(),
    };
    let counts: Vec<usize> = match threads {
        Some(t) => vec![t.max(1)],
        None => (1..=host.cores.max(1)).collect(),
    };
    let mut best: Option<Choice> = None;
    for &v in &variants {
        for &t in &counts {
            let c = predict(work, host, v, t, batch, seq);
            if best
                .as_ref()
                .is_none_or(|b| c.predicted_us < b.predicted_us * 0.97)
            {
                best = Some(c);
            }
        }
    }
    best.unwrap_or_else(|| predict(work, host, Variant::Streaming, 1, batch, seq))
}

/// The `--emit schedule` text.
pub fn describe(
    ir: &ir::Cell,
    batch: usize,
    seq: usize,
    threads: Option<usize>,
    variant: Option<Variant>,
) -> String {
    let host = host();
    let w = work(ir);
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
    s.push_str(&format!(
        "host: {} cores; L1d {} KiB, L2 {} KiB, L3 {} MiB; one core reads {:.0} GB/s from L2, {:.0} from L3, {:.0} from DRAM; gemm {:.0} GFLOP/s, generated kernels ~{:.0}\n",
        host.cores,
        host.l1 >> 10,
        host.l2 >> 10,
        host.l3 >> 20,
        host.bw_l2,
        host.bw_l3,
        host.bw_dram,
        host.gemm_gflops,
        host.jit_gflops
    ));
    s.push_str(&format!(
        "per step: {:.1} KiB of weights read by products of cell inputs, {:.1} KiB by recurrent products; {:.1} kFLOP\n",
        w.input_bytes / 1024.0,
        w.recurrent_bytes / 1024.0,
        (w.input_flops + w.recurrent_flops + w.elementwise_flops) * batch as f64 / 1e3
    ));
    s.push_str("plan          threads  weights/step  level  predicted µs/step  floor µs/step\n");
    for v in Variant::ALL {
        if seq == 1 && v.for_steps(1) != v {
            continue;
        }
        for t in 1..=host.cores.max(1) {
            let c = predict(&w, host, v, t, batch, seq);
            let mark = if c.variant == chosen.variant && c.threads == chosen.threads {
                "  <- chosen"
            } else {
                ""
            };
            s.push_str(&format!(
                "{:13} {:7}  {:9.1} KiB  {:5}  {:17.2}  {:13.2}{mark}\n",
                v.name(),
                t,
                c.bytes_per_step / 1024.0,
                c.level,
                c.predicted_us,
                c.floor_us
            ));
        }
    }
    s.push_str(&format!(
        "chosen: {} on {} thread{}",
        chosen.variant.name(),
        chosen.threads,
        if chosen.threads == 1 { "" } else { "s" }
    ));
    if threads.is_some() || variant.is_some() {
        s.push_str(" (as forced)");
    }
    s.push('\n');
    s
}
