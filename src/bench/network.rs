//! `cellc bench --layers`: a whole network, its chosen schedule beside
//! layer-by-layer.

use std::time::Instant;

use serde_json::json;

use super::{
    dims_json, measure, rates_kind, rates_note, sequence_buffer, times, BenchOptions, Progress,
    Times, SAMPLE_SECONDS,
};
use crate::network::Schedule;
use crate::{Error, Result};

/// What `cellc bench --layers` measures: a whole network, with its schedule
/// and, for a bidirectional one on two or more threads, layer-by-layer beside
/// it (samples alternating), µs per time step (every layer and direction).
#[derive(Clone, Debug)]
pub struct NetworkBenchResult {
    pub cell: String,
    pub dims: Vec<(String, u64)>,
    pub layout: crate::network::Layout,
    pub batch: usize,
    pub seq: usize,
    pub threads: usize,
    pub schedule: &'static str,
    /// Row-steps that run: `batch * seq`, or the sum of the rows' lengths.
    pub real_steps: usize,
    pub chosen: Times,
    /// Layer by layer, each kernel on every thread, when that is not the
    /// chosen schedule.
    pub layer_by_layer: Option<Times>,
    /// FLOPs of a time step: every layer and direction, every row.
    pub flops_per_step: f64,
    /// The floor of a time step under the chosen schedule: each kernel's
    /// floor (its weights at their level's bandwidth, its FLOPs at the best
    /// product rate, on the threads the schedule gives it), the directions
    /// that run at once counted once.
    pub floor_us: f64,
}

impl NetworkBenchResult {
    pub fn text(&self) -> String {
        let dims: Vec<String> = self.dims.iter().map(|(n, v)| format!("{n}={v}")).collect();
        let mut s = format!(
            "{} ({}) x {}: batch {}, sequences of {}, {} thread{}\n",
            self.cell,
            dims.join(", "),
            self.layout,
            self.batch,
            self.seq,
            self.threads,
            if self.threads == 1 { "" } else { "s" }
        );
        let line = |name: &str, t: &Times| {
            format!(
                "  {name:24} {:9.2} µs/step (min {:.2}, max {:.2})\n",
                t.median, t.min, t.max
            )
        };
        s.push_str(&line(self.schedule, &self.chosen));
        s.push_str(&format!(
            "  per step: {:.1} kFLOP, {:.1} GFLOP/s; floor {:.2} µs/step (each kernel's, \
             `--emit schedule`): {:.2}x the floor\n",
            self.flops_per_step / 1e3,
            self.flops_per_step / self.chosen.median / 1e3,
            self.floor_us,
            self.chosen.median / self.floor_us
        ));
        s.push_str(&rates_note());
        if self.real_steps != self.batch * self.seq {
            s.push_str(&format!(
                "  rows of different lengths: {} of {} row-steps run; {:.2} µs per real row-step\n",
                self.real_steps,
                self.batch * self.seq,
                self.chosen.median * self.seq as f64 / self.real_steps as f64
            ));
        }
        if let Some(l) = &self.layer_by_layer {
            s.push_str(&line("layer-by-layer", l));
            s.push_str(&format!(
                "  layer-by-layer / {}: {:.2}x\n",
                self.schedule,
                l.median / self.chosen.median
            ));
        }
        s.push_str(&self.chosen.warning(self.schedule));
        if let Some(l) = &self.layer_by_layer {
            s.push_str(&l.warning("layer-by-layer"));
        }
        s
    }

    pub fn json(&self) -> serde_json::Value {
        let dims = dims_json(&self.dims);
        let mut j = json!({
            "cell": self.cell,
            "dims": dims,
            "layers": self.layout.layers,
            "bidirectional": self.layout.bidirectional,
            "batch": self.batch,
            "seq": self.seq,
            "threads": self.threads,
            "schedule": self.schedule,
            "us_per_step_median": self.chosen.median,
            "us_per_step_min": self.chosen.min,
            "us_per_step_max": self.chosen.max,
            "real_row_steps": self.real_steps,
            "us_per_run_median": self.chosen.median * self.seq as f64,
            "us_per_real_row_step_median": self.chosen.median * self.seq as f64 / self.real_steps as f64,
            "flops_per_step": self.flops_per_step,
            "gflops": self.flops_per_step / self.chosen.median / 1e3,
            "floor_us_per_step": self.floor_us,
            "over_floor": self.chosen.median / self.floor_us,
            "rates": rates_kind(),
            "spread": self.chosen.spread(),
            "noisy": self.chosen.noisy() || self.layer_by_layer.is_some_and(|l| l.noisy()),
        });
        if let Some(l) = &self.layer_by_layer {
            j["layer_by_layer_us_per_step_median"] = json!(l.median);
            j["layer_by_layer_over_chosen"] = json!(l.median / self.chosen.median);
        }
        j
    }
}

/// Benchmarks a network with random weights: one call is one run over a
/// batch of full-length sequences.
pub fn bench_network(
    net: &crate::network::Network,
    opts: &BenchOptions,
) -> Result<NetworkBenchResult> {
    bench_network_with_progress(net, opts, &mut |_| {})
}

/// [`bench_network`], telling `progress` as [`super::bench_with_progress`] does.
pub fn bench_network_with_progress(
    net: &crate::network::Network,
    opts: &BenchOptions,
    progress: &mut dyn FnMut(Progress),
) -> Result<NetworkBenchResult> {
    opts.check()?;
    let kernel_opts = opts.kernel_options();
    let lengths = random_lengths(opts)?;
    let ragged = lengths
        .as_ref()
        .is_some_and(|l| l.iter().any(|&n| n != opts.seq));
    let mut chosen = net.compile_random(1, &kernel_opts)?;
    chosen.force_schedule(opts.schedule)?;
    let schedule = chosen.schedule(opts.batch, opts.seq, ragged);
    let other = if schedule == Schedule::LayerByLayer {
        None
    } else {
        let mut other = net.compile_random(1, &kernel_opts)?;
        other.force_schedule(Some(Schedule::LayerByLayer))?;
        Some(other)
    };
    let mut rng = crate::gen::Rng(7);
    let inputs: Vec<Vec<f32>> = chosen
        .input_lens()
        .iter()
        .map(|&len| {
            let mut x = sequence_buffer(opts, len)?;
            x.iter_mut().for_each(|v| *v = rng.unit() as f32);
            Ok(x)
        })
        .collect::<Result<_>>()?;
    let xs: Vec<&[f32]> = inputs.iter().map(Vec::as_slice).collect();
    let lens = lengths.as_deref();
    let sample = |n: &crate::network::CompiledNetwork| -> Result<f64> {
        let t = Instant::now();
        n.run(&xs, opts.batch, lens, &[])?;
        let one = t.elapsed().as_secs_f64().max(1e-8);
        let calls = ((SAMPLE_SECONDS / one) as usize).clamp(1, 1_000_000);
        let t = Instant::now();
        for _ in 0..calls {
            n.run(&xs, opts.batch, lens, &[])?;
        }
        Ok(t.elapsed().as_secs_f64() * 1e6 / (calls * opts.seq) as f64)
    };
    let (c, l) = measure(opts.samples, other.is_some(), progress, |second| {
        match (second, &other) {
            (true, Some(o)) => sample(o),
            _ => sample(&chosen),
        }
    })?;
    let ir = net.cell().ir()?;
    let threads = opts
        .threads
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    let (flops, floor) = step_figures(net, &chosen, schedule, opts, threads)?;
    Ok(NetworkBenchResult {
        cell: ir.name.clone(),
        dims: ir.dims.clone(),
        layout: net.layout(),
        batch: opts.batch,
        seq: opts.seq,
        threads,
        schedule: schedule.name(),
        real_steps: lengths.map_or(opts.batch * opts.seq, |l| l.iter().sum()),
        chosen: times(c),
        layer_by_layer: (!l.is_empty()).then(|| times(l)),
        flops_per_step: flops,
        floor_us: floor,
    })
}

/// Random row lengths in `opts.lengths`' range (`None` without one).
fn random_lengths(opts: &BenchOptions) -> Result<Option<Vec<usize>>> {
    let Some((lo, hi)) = opts.lengths else {
        return Ok(None);
    };
    if lo > hi || hi > opts.seq {
        return Err(Error::options(format!(
            "lengths {lo}..{hi}: they must run from at most the top to at most --seq {}",
            opts.seq
        )));
    }
    let mut rng = crate::gen::Rng(3);
    let mut lengths = crate::alloc::with_capacity(opts.batch, "the rows' lengths")?;
    lengths.extend(
        (0..opts.batch)
            .map(|_| lo + (rng.unit().abs() * (hi - lo + 1) as f64) as usize % (hi - lo + 1)),
    );
    Ok(Some(lengths))
}

/// The FLOPs and the floor (µs) of a time step under `schedule`.
fn step_figures(
    net: &crate::network::Network,
    chosen: &crate::network::CompiledNetwork,
    schedule: Schedule,
    opts: &BenchOptions,
    threads: usize,
) -> Result<(f64, f64)> {
    // The floor and FLOPs of a time step: every kernel under the schedule's
    // threads; directions that run at once count once (the slower).
    let kernel_threads = chosen.kernel_threads(schedule);
    let (mut flops, mut floor, mut longest) = (0.0, 0.0, 0.0f64);
    for layer in 0..net.layout().layers {
        let mut dirs = Vec::new();
        for d in 0..net.layout().directions() {
            let k = chosen
                .kernel(layer, d)
                .ok_or_else(|| Error::internal("a network without its kernel"))?;
            let c = k.choice_on(opts.batch, opts.seq, kernel_threads);
            flops += c.flops_per_step;
            dirs.push(c.floor_us);
        }
        let slowest = dirs.iter().copied().fold(0.0, f64::max);
        longest = longest.max(slowest);
        floor += if schedule == Schedule::DirectionsInParallel {
            slowest
        } else {
            dirs.iter().sum()
        };
    }
    // A wavefront runs its layers at once, one thread each.
    if schedule == Schedule::Wavefront {
        let workers = threads.min(net.layout().layers).max(1);
        floor = (floor / workers as f64).max(longest);
    }
    Ok((flops, floor))
}
