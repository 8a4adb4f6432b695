//! `cellc bench`: per-step time of a cell with random weights, fused and unfused
//! in the same run, with the figures that explain it (GFLOP/s, weight
//! bandwidth) and their ratio.
//!
//! Method: both kernels are compiled; the same random inputs are used. A call
//! is one `run` over the whole sequence when `seq > 1` (the whole input is
//! known: the schedule may hoist the input projection), one `step` when
//! `seq == 1` (streaming). A sample is calls back to back for about 5 ms, as
//! a stream of sequences or frames arrives (a call after an idle pause pays
//! for waking the pool's parked workers, tens of microseconds; a stream does
//! not). After 0.5 s of warm-up (caches, page faults, and the placement of
//! threads just started, which can share a core for tens of milliseconds),
//! `samples` samples are taken, alternating fused and unfused so that both
//! see the same machine; the median, min and max per-step times are
//! reported, with a warning when the samples spread too far to trust (the
//! middle 80 % of them wider than a quarter of the median: a busy machine),
//! and the floor says whether its rates are this machine's calibration or
//! the defaults. A caller may watch the run's progress
//! ([`bench_with_progress`]).

use std::time::Instant;

use serde_json::json;

use crate::{Cell, Error, Options, Result, Weights};

/// How long a sample's calls last, and the warm-up before the samples.
const SAMPLE_SECONDS: f64 = 5e-3;
const WARM_UP_SECONDS: f64 = 0.5;

mod network;
mod product;

pub use network::{bench_network, bench_network_with_progress, NetworkBenchResult};
pub use product::{GemmBench, ProductBench};

#[derive(Clone, Debug)]
pub struct BenchOptions {
    pub batch: usize,
    pub seq: usize,
    pub threads: Option<usize>,
    pub plan: Option<crate::codegen::schedule::Variant>,
    /// The kernels of the batched products (default: the widest).
    pub isa: Option<crate::Isa>,
    /// How every product's weights are stored (default: as the source says).
    pub precision: Option<crate::ir::Precision>,
    /// The arithmetic of the products (default: f32).
    pub compute: crate::Compute,
    pub samples: usize,
    /// Also measure the unfused pipeline.
    pub unfused: bool,
    /// A network's schedule (default: chosen per run).
    pub schedule: Option<crate::network::Schedule>,
    /// A network's rows of lengths drawn uniformly from `min..=max` (seeded),
    /// instead of all `seq` long.
    pub lengths: Option<(usize, usize)>,
}

impl Default for BenchOptions {
    fn default() -> BenchOptions {
        BenchOptions {
            batch: 1,
            seq: 100,
            threads: None,
            plan: None,
            isa: None,
            precision: None,
            compute: crate::Compute::F32,
            samples: 21,
            unfused: true,
            schedule: None,
            lengths: None,
        }
    }
}

/// Median, min and max of per-step times, in microseconds, and the 10th and
/// 90th percentiles.
#[derive(Clone, Copy, Debug)]
pub struct Times {
    pub median: f64,
    pub min: f64,
    pub max: f64,
    pub p10: f64,
    pub p90: f64,
}

/// How far the middle 80 % of the samples may spread, against the median,
/// before a run says its figures cannot be trusted.
pub const NOISY_SPREAD: f64 = 0.25;

impl Times {
    /// The middle 80 % of the samples' spread against the median.
    pub fn spread(&self) -> f64 {
        (self.p90 - self.p10) / self.median
    }

    pub fn noisy(&self) -> bool {
        self.spread() > NOISY_SPREAD
    }

    /// A warning line when the samples are too noisy to trust, else nothing.
    fn warning(&self, what: &str) -> String {
        if !self.noisy() {
            return String::new();
        }
        format!(
            "  warning: the {what} samples are noisy (10th-90th percentile {:.2}-{:.2} µs, {:.0} % \
             of the median): the machine is busy (`uptime`), or take more `--samples`\n",
            self.p10,
            self.p90,
            100.0 * self.spread()
        )
    }
}

/// Where a run's floor and prediction take their rates from, for the text.
fn rates_note() -> String {
    let host = crate::codegen::schedule::host();
    match &host.source {
        crate::HostSource::Calibrated(_) | crate::HostSource::Measured => String::new(),
        other => format!(
            "  note: the floor and the prediction use {}\n",
            other.describe()
        ),
    }
}

/// `"default"`, `"calibrated"` or `"measured"`: the rates the model used.
fn rates_kind() -> &'static str {
    match crate::codegen::schedule::host().source {
        crate::HostSource::Calibrated(_) => "calibrated",
        crate::HostSource::Measured => "measured",
        crate::HostSource::Defaults(_) => "default",
    }
}

/// A cell's sizes as a JSON object.
fn dims_json(dims: &[(String, u64)]) -> serde_json::Map<String, serde_json::Value> {
    dims.iter().map(|(n, v)| (n.clone(), json!(v))).collect()
}

fn times(mut v: Vec<f64>) -> Times {
    v.sort_by(f64::total_cmp);
    let at = |q: f64| v[((v.len() - 1) as f64 * q).round() as usize];
    Times {
        median: v[v.len() / 2],
        min: v[0],
        max: v[v.len() - 1],
        p10: at(0.1),
        p90: at(0.9),
    }
}

#[derive(Clone, Debug)]
pub struct BenchResult {
    pub cell: String,
    pub dims: Vec<(String, u64)>,
    pub batch: usize,
    pub seq: usize,
    pub threads: usize,
    pub flops_per_step: f64,
    pub weight_bytes_per_step: f64,
    pub fused: Times,
    pub unfused: Option<Times>,
    pub schedule: String,
    /// Whether the threads ran their own batch rows apart
    /// ([`crate::codegen::schedule::Choice::rows_apart`]).
    pub rows_apart: bool,
    /// The arithmetic of the products.
    pub compute: crate::Compute,
    /// The cost model for this plan and thread count: (predicted, floor)
    /// µs per step, and where the weights live.
    pub predicted_us: f64,
    pub floor_us: f64,
    pub weights_level: &'static str,
    /// The kernels of the batched products, and the FMA peak of the threads'
    /// cores at their width (GFLOP/s, measured in this run).
    pub isa: crate::Isa,
    pub fma_peak_gflops: f64,
    /// The width the peak was measured at: the widest the host has.
    pub peak_isa: crate::Isa,
}

impl BenchResult {
    pub fn gflops(&self, t: &Times) -> f64 {
        self.flops_per_step / t.median / 1e3
    }

    pub fn weight_gbps(&self, t: &Times) -> f64 {
        self.weight_bytes_per_step / t.median / 1e3
    }

    pub fn json(&self) -> serde_json::Value {
        let dims = dims_json(&self.dims);
        let mut j = json!({
            "cell": self.cell,
            "dims": dims,
            "batch": self.batch,
            "seq": self.seq,
            "threads": self.threads,
            "schedule": self.schedule,
            "rows_apart": self.rows_apart,
            "compute": self.compute.name(),
            "flops_per_step": self.flops_per_step,
            "weight_bytes_per_step": self.weight_bytes_per_step,
            "us_per_step_median": self.fused.median,
            "us_per_step_min": self.fused.min,
            "us_per_step_max": self.fused.max,
            "gflops": self.gflops(&self.fused),
            "weight_gbps": self.weight_gbps(&self.fused),
            "predicted_us_per_step": self.predicted_us,
            "floor_us_per_step": self.floor_us,
            "over_floor": self.fused.median / self.floor_us,
            "weights_level": self.weights_level,
            "isa": self.isa.name(),
            "fma_peak_gflops": self.fma_peak_gflops,
            "fma_peak_isa": self.peak_isa.name(),
            "of_fma_peak": self.gflops(&self.fused) / self.fma_peak_gflops,
            "rates": rates_kind(),
            "spread": self.fused.spread(),
            "noisy": self.fused.noisy() || self.unfused.is_some_and(|u| u.noisy()),
        });
        if let Some(u) = &self.unfused {
            j["unfused_us_per_step_median"] = json!(u.median);
            j["unfused_us_per_step_min"] = json!(u.min);
            j["unfused_us_per_step_max"] = json!(u.max);
            j["unfused_gflops"] = json!(self.gflops(u));
            j["unfused_over_fused"] = json!(u.median / self.fused.median);
        }
        j
    }

    pub fn text(&self) -> String {
        let dims: Vec<String> = self.dims.iter().map(|(n, v)| format!("{n}={v}")).collect();
        let mut s = format!(
            "{} ({}), batch {}, {} ({}), {} thread{}\n",
            self.cell,
            dims.join(", "),
            self.batch,
            if self.seq == 1 {
                "one step per call".to_string()
            } else {
                format!("sequences of {}", self.seq)
            },
            self.schedule,
            self.threads,
            match (self.threads, self.rows_apart) {
                (1, _) => "",
                (_, false) => "s",
                (_, true) => "s, each with its own batch rows",
            }
        );
        s.push_str(&format!(
            "  per step: {:.1} kFLOP, {:.1} KiB of weights\n",
            self.flops_per_step / 1e3,
            self.weight_bytes_per_step / 1024.0
        ));
        let line = |name: &str, t: &Times| {
            format!(
                "  {name:8} {:9.2} µs/step (min {:.2}, max {:.2})  {:6.1} GFLOP/s  {:6.1} GB/s of weights\n",
                t.median,
                t.min,
                t.max,
                self.gflops(t),
                self.weight_gbps(t)
            )
        };
        s.push_str(&line("fused", &self.fused));
        s.push_str(&format!(
            "  peak     {:9.1} GFLOP/s: the FMA peak of {} core{} at {} width (measured now); fused reaches {:.0} %{}\n",
            self.fma_peak_gflops,
            self.threads,
            if self.threads == 1 { "" } else { "s" },
            self.peak_isa.name(),
            100.0 * self.gflops(&self.fused) / self.fma_peak_gflops,
            if self.compute == crate::Compute::Int8 {
                " (integer products: the float32 FMA peak does not bound them)".to_string()
            } else if self.schedule.starts_with("gemm") {
                format!(" (batched products on the {} panel kernels)", self.isa.name())
            } else {
                " (products on the generated 128-bit kernels)".to_string()
            }
        ));
        s.push_str(&format!(
            "  floor    {:9.2} µs/step (weights in {}, FLOPs at the best product rate; `--emit schedule`): fused is {:.2}x the floor; model predicted {:.2}\n",
            self.floor_us,
            self.weights_level,
            self.fused.median / self.floor_us,
            self.predicted_us
        ));
        s.push_str(&rates_note());
        if let Some(u) = &self.unfused {
            s.push_str(&line("unfused", u));
            s.push_str(&format!(
                "  unfused / fused: {:.2}x\n",
                u.median / self.fused.median
            ));
        }
        s.push_str(&self.fused.warning("fused"));
        if let Some(u) = &self.unfused {
            s.push_str(&u.warning("unfused"));
        }
        s
    }
}

/// Benchmarks a cell whose sizes are bound.
pub fn bench(cell: &Cell, opts: &BenchOptions) -> Result<BenchResult> {
    bench_with_progress(cell, opts, &mut |_| {})
}

/// How far a run has come: samples taken of all, once warm.
#[derive(Clone, Copy, Debug)]
pub struct Progress {
    pub done: usize,
    pub of: usize,
}

/// [`bench()`], telling `progress` after the warm-up and after each sample
/// (the CLI shows it on runs longer than a few seconds).
pub fn bench_with_progress(
    cell: &Cell,
    opts: &BenchOptions,
    progress: &mut dyn FnMut(Progress),
) -> Result<BenchResult> {
    opts.check()?;
    let ir = cell.ir()?;
    let weights = Weights::random(&ir, 1);
    let stats = crate::ir::stats::stats(&ir);
    let fused_opts = opts.kernel_options();
    let fused = cell.compile(&weights, &fused_opts)?;
    let unfused = if opts.unfused {
        Some(cell.compile(
            &weights,
            &Options {
                optimize: false,
                ..fused_opts.clone()
            },
        )?)
    } else {
        None
    };
    let mut rng = crate::gen::Rng(7);
    let mut inputs: Vec<Vec<f32>> = Vec::new();
    for i in 0..ir.inputs.len() {
        let mut x = sequence_buffer(opts, fused.input_len(i))?;
        x.iter_mut().for_each(|v| *v = rng.unit() as f32);
        inputs.push(x);
    }
    let mut outputs: Vec<Vec<f32>> = (0..ir.outputs.len())
        .map(|o| sequence_buffer(opts, fused.output_len(o)))
        .collect::<Result<_>>()?;
    // One call: a `run` over the whole sequence, or one `step`.
    let call =
        |k: &crate::Kernel, state: &mut crate::State, outputs: &mut Vec<Vec<f32>>| -> Result<()> {
            let xs: Vec<&[f32]> = inputs.iter().map(Vec::as_slice).collect();
            if opts.seq > 1 {
                let mut ys: Vec<&mut [f32]> = outputs.iter_mut().map(Vec::as_mut_slice).collect();
                k.run_with(&xs, state, &mut ys)
            } else {
                k.step_inputs(&xs, state)
            }
        };
    // A sample: calls back to back, as a stream of sequences or frames
    // arrives, for about `SAMPLE_SECONDS` (a few calls estimate a call's
    // time first); µs per step.
    let sample = |k: &crate::Kernel, outputs: &mut Vec<Vec<f32>>| -> Result<f64> {
        let mut state = k.new_state(opts.batch)?;
        let probe = 4;
        let t = Instant::now();
        for _ in 0..probe {
            call(k, &mut state, outputs)?;
        }
        let one = (t.elapsed().as_secs_f64() / probe as f64).max(1e-8);
        let n = ((SAMPLE_SECONDS / one) as usize).clamp(1, 1_000_000);
        let t = Instant::now();
        for _ in 0..n {
            call(k, &mut state, outputs)?;
        }
        Ok(t.elapsed().as_secs_f64() * 1e6 / (n * opts.seq) as f64)
    };
    let (f, u) = measure(opts.samples, unfused.is_some(), progress, |second| {
        match (second, &unfused) {
            (true, Some(u)) => sample(u, &mut outputs),
            _ => sample(&fused, &mut outputs),
        }
    })?;
    let model = fused.choice(opts.batch, opts.seq);
    let widest = crate::Isa::detect();
    let fma_peak_gflops =
        crate::kernels::probe::fma_peak_gflops(widest, 0.05) * model.threads as f64;
    Ok(BenchResult {
        cell: ir.name.clone(),
        dims: ir.dims.clone(),
        batch: opts.batch,
        seq: opts.seq,
        threads: model.threads,
        flops_per_step: stats.flops_per_step as f64 * opts.batch as f64,
        // What the chosen plan reads per step (a hoisted plan leaves the input
        // weights to the projection).
        weight_bytes_per_step: model.bytes_per_step,
        fused: times(f),
        unfused: (!u.is_empty()).then(|| times(u)),
        schedule: model.variant.name().to_string(),
        rows_apart: model.rows_apart,
        compute: opts.compute,
        predicted_us: model.predicted_us,
        floor_us: model.floor_us,
        weights_level: model.level,
        isa: opts.isa.unwrap_or(widest),
        fma_peak_gflops,
        peak_isa: widest,
    })
}

impl BenchOptions {
    fn check(&self) -> Result<()> {
        if self.batch == 0 || self.seq == 0 || self.samples == 0 {
            return Err(Error::options(
                "batch, sequence length and samples must be at least 1",
            ));
        }
        Ok(())
    }

    /// The options the measured kernels are compiled with (optimized).
    fn kernel_options(&self) -> Options {
        Options {
            optimize: true,
            threads: self.threads,
            plan: self.plan,
            isa: self.isa,
            precision: self.precision,
            compute: self.compute,
        }
    }
}

/// The warm-up, then `samples` samples of `sample(false)` and, when
/// `alternate`, of `sample(true)` after each (so that both see the same
/// machine), telling `progress` before each pair and at the end.
fn measure(
    samples: usize,
    alternate: bool,
    progress: &mut dyn FnMut(Progress),
    mut sample: impl FnMut(bool) -> Result<f64>,
) -> Result<(Vec<f64>, Vec<f64>)> {
    // Warm-up: caches, page faults, thread start-up and placement (threads
    // just started can share a core for tens of milliseconds).
    let warm = Instant::now();
    while warm.elapsed().as_secs_f64() < WARM_UP_SECONDS {
        sample(false)?;
        if alternate {
            sample(true)?;
        }
    }
    let mut first = Vec::with_capacity(samples);
    let mut second = Vec::with_capacity(samples);
    for done in 0..samples {
        progress(Progress { done, of: samples });
        first.push(sample(false)?);
        if alternate {
            second.push(sample(true)?);
        }
    }
    progress(Progress {
        done: samples,
        of: samples,
    });
    Ok((first, second))
}

/// Zeros for `seq x batch` vectors of `len`, or an error when they do not fit
/// in memory (never an abort).
fn sequence_buffer(opts: &BenchOptions, len: usize) -> Result<Vec<f32>> {
    let n = opts
        .seq
        .checked_mul(opts.batch)
        .and_then(|n| n.checked_mul(len))
        .filter(|&n| n <= isize::MAX as usize / 4);
    let too_large = || {
        Error::too_large(format!(
            "a sequence of {} steps of {} rows of {len} floats does not fit in memory",
            opts.seq, opts.batch
        ))
    };
    let n = n.ok_or_else(too_large)?;
    let mut v = Vec::new();
    v.try_reserve_exact(n).map_err(|_| too_large())?;
    v.resize(n, 0.0);
    Ok(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Samples whose middle 80 % spread beyond a quarter of the median are
    /// called noisy, and the text says so; steady ones are not.
    #[test]
    fn noisy_samples_are_flagged() {
        let steady = times(vec![
            10.0, 10.1, 9.9, 10.2, 10.0, 9.8, 10.1, 10.0, 10.3, 9.9, 10.0,
        ]);
        assert!(!steady.noisy());
        assert_eq!(steady.warning("fused"), "");
        // The run: a peak that ranged 67-239 between samples.
        let noisy = times(vec![
            67.0, 239.0, 120.0, 80.0, 200.0, 150.0, 95.0, 230.0, 70.0, 180.0,
        ]);
        assert!(noisy.noisy(), "{}", noisy.spread());
        assert!(
            noisy.warning("fused").contains("noisy"),
            "{}",
            noisy.warning("fused")
        );
        // One outlier among many does not make a run noisy.
        let mut one_off = vec![10.0; 20];
        one_off[3] = 40.0;
        assert!(!times(one_off).noisy());
    }
}
