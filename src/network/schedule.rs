//! How a network's layers and directions share the threads: the schedules,
//! the policy that picks one, and the threads each kernel then runs on.

use super::{CompiledNetwork, Layout};
use crate::{Error, Result};

/// Each state's final value of one layer, `[B, len]` each.
pub(super) type LayerStates = Vec<Vec<f32>>;

/// How a network's layers and directions share the threads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Schedule {
    /// Each layer and direction after the other, each kernel on every thread.
    LayerByLayer,
    /// The two directions of a layer at once, each on half the threads.
    DirectionsInParallel,
    /// Layers as a pipeline over chunks of steps: layer `l + 1` runs chunk `k`
    /// while layer `l` runs chunk `k + 1`, each kernel on one thread.
    Wavefront,
}

impl Schedule {
    pub const ALL: [Schedule; 3] = [
        Schedule::LayerByLayer,
        Schedule::DirectionsInParallel,
        Schedule::Wavefront,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Schedule::LayerByLayer => "layer-by-layer",
            Schedule::DirectionsInParallel => "directions-in-parallel",
            Schedule::Wavefront => "wavefront",
        }
    }

    /// The schedule named `name`.
    pub fn from_name(name: &str) -> Option<Schedule> {
        Schedule::ALL.into_iter().find(|s| s.name() == name)
    }

    /// Whether a network of `layout` can run this way over this batch.
    fn fits(self, layout: Layout, ragged: bool) -> bool {
        match self {
            Schedule::LayerByLayer => true,
            Schedule::DirectionsInParallel => layout.bidirectional,
            Schedule::Wavefront => layout.runs() == [false] && layout.layers > 1 && !ragged,
        }
    }
}

/// The threads a run may use: those the options give, or every core.
pub(super) fn thread_budget(threads: Option<usize>) -> usize {
    threads.unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
}

/// The part of a core's L2 that a kernel's per-step weights may take and
/// mostly stay there from step to step: all of it (measured: a 2-core split
/// of a 4 MiB kernel, 2 MiB a core in 2 MiB L2s, ran 1.16x faster than each
/// core reading a whole 4 MiB kernel from L3).
pub(super) const L2_SHARE: f64 = 1.0;

/// The schedule of a run (`ragged`: rows of different lengths) on `threads`
/// threads, given whether every layer's per-step
/// weights fit in one core's L2 (`whole_fits`) and whether a `threads`-way
/// share of them does (`share_fits`):
/// - the one forced, if it can run;
/// - both directions at once on a bidirectional network, unless a layer's
///   weights fit in L2 only when its kernel is split among the cores (then
///   layer by layer, each core keeping its share of every kernel in its L2:
///   measured 1.16-1.35x faster than directions at once for a 2-layer LSTM with
///   H = 512 on 2 cores of 2 MiB L2, where directions at once read 4 MiB per
///   step from L3);
/// - else layer by layer. The wavefront is never chosen by itself: measured on
///   2 cores (4-layer LSTM, batch 1, T = 100), layer by layer was as fast at H
///   = 64 and 128 and 1.36-1.58x faster at H = 256 and 512, where each layer's
///   kernel split among the cores keeps its share in L2 and a wavefront worker
///   holding whole layers does not (`docs/performance.md`, "Networks").
pub(super) fn choose_schedule(
    layout: Layout,
    threads: usize,
    ragged: bool,
    forced: Option<Schedule>,
    whole_fits: bool,
    share_fits: bool,
) -> Schedule {
    if let Some(s) = forced.filter(|s| s.fits(layout, ragged)) {
        return s;
    }
    if threads >= 2 && layout.bidirectional && (whole_fits || !share_fits) {
        Schedule::DirectionsInParallel
    } else {
        Schedule::LayerByLayer
    }
}

/// The threads each kernel runs on under `schedule` (`None`: the cost
/// model's choice, within the options' `threads`).
pub(super) fn kernel_threads(schedule: Schedule, threads: Option<usize>) -> Option<usize> {
    match schedule {
        Schedule::LayerByLayer => threads,
        Schedule::DirectionsInParallel => Some((thread_budget(threads) / 2).max(1)),
        Schedule::Wavefront => Some(1),
    }
}

impl CompiledNetwork {
    /// Runs every batch it can this way (`None`: as
    /// [`CompiledNetwork::schedule`] chooses); a ragged batch, which cannot run
    /// as a wavefront, runs layer by layer (the same bits). A schedule the
    /// network cannot run at all is an error.
    pub fn force_schedule(&mut self, schedule: Option<Schedule>) -> Result<()> {
        if let Some(s) = schedule {
            if !s.fits(self.layout, false) {
                return Err(Error::options(format!(
                    "a network of {} cannot run {}",
                    self.layout,
                    s.name()
                )));
            }
        }
        self.forced = schedule;
        Ok(())
    }

    /// The threads a run may use: the options', or every core.
    pub(super) fn thread_budget(&self) -> usize {
        thread_budget(self.threads)
    }

    /// How a run over `steps` steps of `batch` rows (`ragged`: of different
    /// lengths) shares the threads: the forced schedule if it can run, else
    /// as `choose_schedule` decides from where each layer's step weights fit.
    pub fn schedule(&self, batch: usize, steps: usize, ragged: bool) -> Schedule {
        let threads = self.thread_budget();
        let fit = |share: usize| {
            let l2 = crate::codegen::schedule::host().l2 as f64;
            self.layers.iter().all(|dirs| {
                let k = &dirs[0];
                let v = k.variant_for_any_threads(batch, steps);
                k.step_bytes(batch, steps, v) / share as f64 <= L2_SHARE * l2
            })
        };
        choose_schedule(
            self.layout,
            threads,
            ragged,
            self.forced,
            fit(1),
            fit(threads),
        )
    }

    /// The threads each kernel runs on under `schedule` (`None`: the cost
    /// model's choice, within the options').
    pub fn kernel_threads(&self, schedule: Schedule) -> Option<usize> {
        kernel_threads(schedule, self.threads)
    }

    /// The plan layer `layer` runs a batch of `batch` rows of `steps` steps
    /// with, under every schedule: the one the cost model picks for one
    /// thread (or the options'), so that the schedule does not change the
    /// results.
    pub fn layer_plan(&self, layer: usize, batch: usize, steps: usize) -> Option<crate::Variant> {
        let k = self.kernel(layer, 0)?;
        Some(k.variant_for_any_threads(batch, steps))
    }
}
