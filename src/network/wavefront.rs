//! The wavefront schedule: the layers of a one-direction stack as a pipeline
//! over chunks of steps, each layer on one thread.

use std::borrow::Cow;
use std::sync::{Condvar, Mutex, OnceLock};

use super::schedule::LayerStates;
use super::CompiledNetwork;
use crate::alloc;
use crate::{Error, Kernel, Result, State, Variant};

/// How many chunks of steps a wavefront runs: about four per layer, so that
/// filling and draining the pipeline (one chunk each) costs little beside the
/// rest, each of at least 2 steps (a plan that hoists the input projection
/// runs one step without it, in another order of sums: the results would
/// differ from layer by layer's).
pub(super) fn wave_chunks(steps: usize, layers: usize) -> usize {
    (steps / 2).clamp(1, 4 * layers)
}

/// The steps of chunk `c` of `chunks`: as equal as they can be.
pub(super) fn wave_bounds(c: usize, chunks: usize, steps: usize) -> (usize, usize) {
    (c * steps / chunks, (c + 1) * steps / chunks)
}

impl CompiledNetwork {
    /// The layers of a one-direction network as a pipeline over chunks of
    /// steps ([`Schedule::Wavefront`]): a task is one layer over one chunk, on
    /// one thread; it can start when the layer below has finished that chunk
    /// and its own layer the chunk before. Each worker owns a contiguous run
    /// of layers (their weights stay in its caches) and takes the deepest of
    /// its tasks that can start (draining the pipeline first). Each layer's plan is the
    /// one it would run over the whole sequence, so the results are those of
    /// layer by layer, bit for bit. Returns the last layer's output and each
    /// layer's final states.
    pub(super) fn run_wavefront(
        &self,
        x: &[f32],
        steps: usize,
        batch: usize,
        init: &[Vec<Cow<'_, [f32]>>],
    ) -> Result<(Vec<f32>, Vec<LayerStates>)> {
        let layers: Vec<&Kernel> = self.layers.iter().map(|d| &d[0]).collect();
        let n = layers.len();
        let chunks = wave_chunks(steps, n);
        let mut states = Vec::with_capacity(n);
        let mut variants = Vec::with_capacity(n);
        for (k, init) in layers.iter().zip(init) {
            let mut state = k.new_state(batch)?;
            for (s, name) in k.state_names().iter().enumerate() {
                state.set(name, &init[s])?;
            }
            states.push(Mutex::new(state));
            variants.push(k.variant_for_any_threads(batch, steps));
        }
        let wave = Wave {
            outs: (0..n)
                .map(|_| (0..chunks).map(|_| OnceLock::new()).collect())
                .collect(),
            progress: Mutex::new(Progress {
                next: vec![0; n],
                done: vec![0; n],
                busy: vec![false; n],
                failed: None,
            }),
            wake: Condvar::new(),
            layers,
            x,
            steps,
            batch,
            chunks,
            states,
            variants,
        };
        let workers = self.thread_budget().min(n);
        // On a shared pool (threads started once, kept on their own cores);
        // when none is free, the caller alone owns every layer (the same bits).
        let ran = workers > 1 && crate::jit::run_shared(workers, &|w, _| wave.work(w, workers));
        if !ran {
            wave.work(0, 1);
        }
        wave.finish()
    }
}

/// Which tasks each layer has started and finished, shared by the workers.
struct Progress {
    next: Vec<usize>,
    done: Vec<usize>,
    busy: Vec<bool>,
    failed: Option<Error>,
}

/// One wavefront run: its layers, input, sizes, each layer's state and plan,
/// each (layer, chunk)'s output once it ran, and the progress.
struct Wave<'a> {
    layers: Vec<&'a Kernel>,
    x: &'a [f32],
    steps: usize,
    batch: usize,
    chunks: usize,
    states: Vec<Mutex<State>>,
    variants: Vec<Variant>,
    outs: Vec<Vec<OnceLock<Vec<f32>>>>,
    progress: Mutex<Progress>,
    wake: Condvar,
}

impl Wave<'_> {
    /// One task: layer `l` over chunk `c`.
    fn task(&self, l: usize, c: usize) -> Result<()> {
        let (batch, chunks) = (self.batch, self.chunks);
        let (t0, t1) = wave_bounds(c, chunks, self.steps);
        let in_len = self.layers[0].input_len(0);
        let input: &[f32] = match l {
            0 => &self.x[t0 * batch * in_len..t1 * batch * in_len],
            _ => self.outs[l - 1][c]
                .get()
                .ok_or_else(|| Error::internal("wavefront: a chunk ran before its input"))?,
        };
        let k = self.layers[l];
        let what = "a layer's outputs";
        let mut out = alloc::zeros(
            alloc::product(&[t1 - t0, batch, k.output_len(0)], what)?,
            what,
        )?;
        let mut state = self.states[l]
            .lock()
            .map_err(|_| Error::internal("wavefront: a layer's state was poisoned"))?;
        k.run_planned(
            &[input],
            &mut state,
            &mut [&mut out],
            self.variants[l],
            Some(1),
        )?;
        self.outs[l][c]
            .set(out)
            .map_err(|_| Error::internal("wavefront: a chunk ran twice"))
    }

    /// The next task of worker `w` of `workers`, waiting until one is ready;
    /// `None` when every chunk ran or a task failed. Layer `l` runs on worker
    /// `l * workers / n`: each worker keeps its layers' weights in its own
    /// caches; it takes the deepest ready layer first.
    fn next_task(&self, w: usize, workers: usize) -> Option<(usize, usize)> {
        let (n, chunks) = (self.layers.len(), self.chunks);
        let mut p = self.progress.lock().ok()?;
        loop {
            if p.failed.is_some() || p.done.iter().all(|&d| d == chunks) {
                return None;
            }
            let ready = (0..n).rev().find(|&l| {
                l * workers / n == w
                    && !p.busy[l]
                    && p.next[l] < chunks
                    && (l == 0 || p.done[l - 1] > p.next[l])
            });
            if let Some(l) = ready {
                p.busy[l] = true;
                p.next[l] += 1;
                return Some((l, p.next[l] - 1));
            }
            p = self.wake.wait(p).ok()?;
        }
    }

    /// Worker `w` of `workers`: runs its layers' chunks as they become ready.
    fn work(&self, w: usize, workers: usize) {
        while let Some((l, c)) = self.next_task(w, workers) {
            let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.task(l, c)))
                .unwrap_or_else(|_| Err(Error::internal("wavefront: a task panicked")));
            if let Ok(mut p) = self.progress.lock() {
                p.busy[l] = false;
                p.done[l] += 1;
                if let Err(e) = result {
                    p.failed.get_or_insert(e);
                }
            }
            self.wake.notify_all();
        }
    }

    /// The last layer's output and each layer's final states, or the first
    /// failure.
    fn finish(self) -> Result<(Vec<f32>, Vec<LayerStates>)> {
        let p = self
            .progress
            .into_inner()
            .map_err(|_| Error::internal("wavefront: the progress was poisoned"))?;
        if let Some(e) = p.failed {
            return Err(e);
        }
        let last = self.layers[self.layers.len() - 1];
        let mut output = Vec::with_capacity(self.steps * self.batch * last.output_len(0));
        for c in self.outs.into_iter().last().unwrap_or_default() {
            output.extend_from_slice(
                &c.into_inner()
                    .ok_or_else(|| Error::internal("wavefront: a chunk did not run"))?,
            );
        }
        let mut finals = Vec::with_capacity(self.layers.len());
        for (k, state) in self.layers.iter().zip(self.states) {
            let state = state
                .into_inner()
                .map_err(|_| Error::internal("wavefront: a layer's state was poisoned"))?;
            finals.push(
                k.state_names()
                    .iter()
                    .map(|name| state.get(name))
                    .collect::<Result<Vec<_>>>()?,
            );
        }
        Ok((output, finals))
    }
}
