//! The wavefront schedule: the layers of a one-direction stack as a pipeline
//! over chunks of steps, each layer on one thread.

use std::borrow::Cow;

use super::schedule::LayerStates;
use super::CompiledNetwork;
use crate::alloc;
use crate::{Error, Kernel, Result};

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
        use std::sync::{Condvar, Mutex, OnceLock};
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
        let outs: Vec<Vec<OnceLock<Vec<f32>>>> = (0..n)
            .map(|_| (0..chunks).map(|_| OnceLock::new()).collect())
            .collect();
        struct Progress {
            next: Vec<usize>,
            done: Vec<usize>,
            busy: Vec<bool>,
            failed: Option<Error>,
        }
        let progress = Mutex::new(Progress {
            next: vec![0; n],
            done: vec![0; n],
            busy: vec![false; n],
            failed: None,
        });
        let wake = Condvar::new();
        let in_len = layers[0].input_len(0);
        // One task: layer `l` over chunk `c`.
        let task = |l: usize, c: usize| -> Result<()> {
            let (t0, t1) = wave_bounds(c, chunks, steps);
            let input: &[f32] = match l {
                0 => &x[t0 * batch * in_len..t1 * batch * in_len],
                _ => outs[l - 1][c]
                    .get()
                    .ok_or_else(|| Error::internal("wavefront: a chunk ran before its input"))?,
            };
            let k = layers[l];
            let what = "a layer's outputs";
            let mut out = alloc::zeros(
                alloc::product(&[t1 - t0, batch, k.output_len(0)], what)?,
                what,
            )?;
            let mut state = states[l]
                .lock()
                .map_err(|_| Error::internal("wavefront: a layer's state was poisoned"))?;
            k.run_planned(&[input], &mut state, &mut [&mut out], variants[l], Some(1))?;
            outs[l][c]
                .set(out)
                .map_err(|_| Error::internal("wavefront: a chunk ran twice"))
        };
        let workers = self.thread_budget().min(n);
        // Layer `l` runs on worker `l * workers / n`: each worker keeps its
        // layers' weights in its own caches.
        let owner = |l: usize, workers: usize| l * workers / n;
        // Worker `w` of `workers`: runs its layers' chunks as they become ready.
        let worker = |w: usize, workers: usize| loop {
            let (l, c) = {
                let Ok(mut p) = progress.lock() else { return };
                loop {
                    if p.failed.is_some() || p.done.iter().all(|&d| d == chunks) {
                        return;
                    }
                    let ready = (0..n).rev().find(|&l| {
                        owner(l, workers) == w
                            && !p.busy[l]
                            && p.next[l] < chunks
                            && (l == 0 || p.done[l - 1] > p.next[l])
                    });
                    if let Some(l) = ready {
                        p.busy[l] = true;
                        p.next[l] += 1;
                        break (l, p.next[l] - 1);
                    }
                    let Ok(q) = wake.wait(p) else { return };
                    p = q;
                }
            };
            let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| task(l, c)))
                .unwrap_or_else(|_| Err(Error::internal("wavefront: a task panicked")));
            if let Ok(mut p) = progress.lock() {
                p.busy[l] = false;
                p.done[l] += 1;
                if let Err(e) = result {
                    p.failed.get_or_insert(e);
                }
            }
            wake.notify_all();
        };
        // On a shared pool (threads started once, kept on their own cores);
        // when none is free, the caller alone owns every layer (the same bits).
        let ran = workers > 1 && crate::jit::run_shared(workers, &|w, _| worker(w, workers));
        if !ran {
            worker(0, 1);
        }
        let p = progress
            .into_inner()
            .map_err(|_| Error::internal("wavefront: the progress was poisoned"))?;
        if let Some(e) = p.failed {
            return Err(e);
        }
        let mut output = Vec::with_capacity(steps * batch * layers[n - 1].output_len(0));
        for c in outs.into_iter().last().unwrap_or_default() {
            output.extend_from_slice(
                &c.into_inner()
                    .ok_or_else(|| Error::internal("wavefront: a chunk did not run"))?,
            );
        }
        let mut finals = Vec::with_capacity(n);
        for (k, state) in layers.iter().zip(states) {
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
