//! Running a compiled network over a batch of sequences: layer after layer,
//! each direction of a layer ([`Direction`]) over rows of different lengths as
//! PyTorch's packed sequences run them, the directions side by side.

use std::borrow::Cow;

use super::schedule::Schedule;
use super::{CompiledNetwork, NetworkRun};
use crate::alloc;
use crate::weights::shape_str;
use crate::{Error, Kernel, Result};

impl CompiledNetwork {
    /// Runs the network over a batch of sequences. `inputs[i]` is input `i` of
    /// layer 0, `[T, batch, len]`; `lengths`, if given, is each row's length
    /// (at most `T`; rows past their length are not read); `initial` gives
    /// some states' initial values by name, each `[D * L, batch, len]` (or
    /// `[batch, len]` for one layer in one direction); the others start at
    /// zero.
    pub fn run(
        &self,
        inputs: &[&[f32]],
        batch: usize,
        lengths: Option<&[usize]>,
        initial: &[(&str, &[f32])],
    ) -> Result<NetworkRun> {
        let first = self.first();
        let steps = self.check_inputs(inputs, batch, lengths)?;
        let d_count = self.layout.directions();
        let state_lens = self.state_lens();
        let inits = self.initial_states(initial, batch)?;
        // Final states, [D * L, B, len] for each state (layers may differ in len).
        let mut finals: Vec<Vec<f32>> = (0..first.state_names().len())
            .map(|s| {
                let per_row = state_lens.iter().map(|l| l[s]).sum::<usize>();
                alloc::zeros(
                    alloc::product(&[per_row, d_count, batch], "the final states")?,
                    "the final states",
                )
            })
            .collect::<Result<_>>()?;
        let ports = self.ports();
        let state_offset = |s: usize, l: usize, d: usize| ports.state_offset(s, l, d, batch);
        let init_of = |l: usize, d: usize| -> Result<Vec<Cow<'_, [f32]>>> {
            (0..self.layers[l][d].state_names().len())
                .map(|s| {
                    let n = batch * state_lens[l][s];
                    Ok(match inits[s] {
                        Some(v) => {
                            let at = state_offset(s, l, d);
                            Cow::Borrowed(&v[at..at + n])
                        }
                        None => Cow::Owned(alloc::zeros(n, "the initial states")?),
                    })
                })
                .collect()
        };
        let ragged = lengths.is_some_and(|lens| lens.iter().any(|&n| n != steps));
        // No step (T = 0) is the rule for rows of length 0 on every schedule:
        // no output, final states the initial ones. Layer by layer gives
        // that; a wavefront has no chunk to run.
        let schedule = if steps == 0 {
            Schedule::LayerByLayer
        } else {
            self.schedule(batch, steps, ragged)
        };
        let threads = self.kernel_threads(schedule);
        if schedule == Schedule::Wavefront {
            let init: Vec<Vec<Cow<'_, [f32]>>> = (0..self.layers.len())
                .map(|l| init_of(l, 0))
                .collect::<Result<_>>()?;
            let (output, states) = self.run_wavefront(inputs[0], steps, batch, &init)?;
            for (l, layer) in states.iter().enumerate() {
                for (s, values) in layer.iter().enumerate() {
                    let at = state_offset(s, l, 0);
                    finals[s][at..at + values.len()].copy_from_slice(values);
                }
            }
            return Ok(NetworkRun {
                outputs: vec![output],
                states: finals,
            });
        }
        let mut layer_in: Vec<Cow<'_, [f32]>> = inputs.iter().map(|x| Cow::Borrowed(*x)).collect();
        let mut outputs = Vec::new();
        for (l, dirs) in self.layers.iter().enumerate() {
            let ins: Vec<&[f32]> = layer_in.iter().map(|c| c.as_ref()).collect();
            let job = |d: usize| {
                let init = init_of(l, d)?;
                let init: Vec<&[f32]> = init.iter().map(|c| c.as_ref()).collect();
                let dir = Direction {
                    kernel: &dirs[d],
                    reverse: self.layout.runs()[d],
                    threads,
                    spare: &self.spare[l][d],
                };
                dir.run(&ins, steps, batch, lengths, &init)
            };
            let results = run_directions(schedule, dirs.len(), &job)?;
            for (d, r) in results.iter().enumerate() {
                for (s, values) in r.states.iter().enumerate() {
                    let at = state_offset(s, l, d);
                    finals[s][at..at + values.len()].copy_from_slice(values);
                }
            }
            let k = &dirs[0];
            let rows = steps * batch;
            let concat: Vec<Vec<f32>> = match <[Directed; 1]>::try_from(results) {
                // One direction: its outputs as they are.
                Ok([one]) => one.outputs,
                Err(both) => (0..k.output_names().len())
                    .map(|o| {
                        let parts: Vec<&[f32]> =
                            both.iter().map(|r| r.outputs[o].as_slice()).collect();
                        side_by_side(&parts, rows, k.output_len(o))
                    })
                    .collect::<Result<_>>()?,
            };
            if l + 1 < self.layers.len() {
                layer_in = concat.into_iter().map(Cow::Owned).collect();
            } else {
                outputs = concat;
            }
        }
        Ok(NetworkRun {
            outputs,
            states: finals,
        })
    }

    /// Checks the inputs of a run (see [`Ports::check_inputs`]) and that a
    /// batch fits each kernel's memory; returns `T`.
    fn check_inputs(
        &self,
        inputs: &[&[f32]],
        batch: usize,
        lengths: Option<&[usize]>,
    ) -> Result<usize> {
        if batch == 0 {
            return Err(Error::shape("the batch has no rows"));
        }
        // The kernels' own check that a batch fits in memory, before any
        // buffer of this function is sized by it.
        for dirs in &self.layers {
            dirs[0].new_state(batch)?;
        }
        self.ports().check_inputs(inputs, batch, lengths)
    }

    fn initial_states<'a>(
        &self,
        initial: &[(&str, &'a [f32])],
        batch: usize,
    ) -> Result<Vec<Option<&'a [f32]>>> {
        self.ports().initial_states(initial, batch)
    }

    fn ports(&self) -> Ports<'_> {
        let first = self.first();
        Ports {
            layout: self.layout,
            cell: first.name(),
            input_names: first.input_names(),
            input_lens: self.input_lens(),
            state_names: first.state_names(),
            state_lens: self.state_lens(),
        }
    }
}

/// A network's ports, for the checks of what a run is given: layer 0's
/// inputs, each layer's states.
pub(super) struct Ports<'a> {
    pub layout: super::Layout,
    /// The cell's name.
    pub cell: &'a str,
    pub input_names: &'a [String],
    pub input_lens: Vec<usize>,
    pub state_names: &'a [String],
    /// `[layer][state]`.
    pub state_lens: Vec<Vec<usize>>,
}

impl Ports<'_> {
    /// Checks the inputs of a run (`[T, batch, len]` each, as many as layer
    /// 0 has) and the rows' lengths (at most `T` each); returns `T`.
    pub fn check_inputs(
        &self,
        inputs: &[&[f32]],
        batch: usize,
        lengths: Option<&[usize]>,
    ) -> Result<usize> {
        if batch == 0 {
            return Err(Error::shape("the batch has no rows"));
        }
        let names = self.input_names;
        if inputs.len() != names.len() {
            return Err(Error::shape(format!(
                "the network has {} input{}, {} given",
                names.len(),
                if names.len() == 1 { "" } else { "s" },
                inputs.len()
            )));
        }
        let steps = match inputs.first() {
            Some(x) => {
                let per = batch * self.input_lens[0];
                if per == 0 || x.len() % per != 0 {
                    return Err(Error::shape(format!(
                        "input `{}` has {} values, not a whole number of steps of [{batch}, {}]",
                        names[0],
                        x.len(),
                        self.input_lens[0]
                    )));
                }
                x.len() / per
            }
            None => {
                return Err(Error::shape(format!(
                    "cell `{}` has no input, so there is no sequence to run",
                    self.cell
                )))
            }
        };
        for (i, x) in inputs.iter().enumerate() {
            let want = steps * batch * self.input_lens[i];
            if x.len() != want {
                return Err(Error::shape(format!(
                    "input `{}`: expected {want} values ([{steps}, {batch}, {}]), got {}",
                    names[i],
                    self.input_lens[i],
                    x.len()
                )));
            }
        }
        if let Some(lens) = lengths {
            if lens.len() != batch {
                return Err(Error::shape(format!(
                    "`lengths` has {} values for a batch of {batch}",
                    lens.len()
                )));
            }
            if let Some((b, n)) = lens.iter().enumerate().find(|(_, &n)| n > steps) {
                return Err(Error::shape(format!(
                    "`lengths` gives row {b} {n} steps, but the sequence has {steps}"
                )));
            }
        }
        Ok(steps)
    }

    /// Where layer `l`, direction `d` starts in state `s`'s `[D * L, batch,
    /// len]` (layer by layer, each layer's directions in turn).
    pub fn state_offset(&self, s: usize, l: usize, d: usize, batch: usize) -> usize {
        let lens = &self.state_lens;
        let below: usize = lens[..l].iter().map(|x| x[s]).sum::<usize>() * self.layout.directions();
        (below + d * lens[l][s]) * batch
    }

    /// The initial values given by state name, checked: each
    /// `[D * L, batch, len]`, no state twice, no unknown name.
    pub fn initial_states<'a>(
        &self,
        initial: &[(&str, &'a [f32])],
        batch: usize,
    ) -> Result<Vec<Option<&'a [f32]>>> {
        let d_count = self.layout.directions();
        let slots = d_count * self.layout.layers;
        let state_lens = &self.state_lens;
        let names = self.state_names;
        let mut inits: Vec<Option<&[f32]>> = vec![None; names.len()];
        for (name, values) in initial {
            let Some(s) = names.iter().position(|n| n == name) else {
                return Err(Error::shape(format!(
                    "no state named `{name}`; the states are {}",
                    names.join(", ")
                )));
            };
            if inits[s].is_some() {
                return Err(Error::shape(format!("state `{name}` is given twice")));
            }
            let want: usize = state_lens.iter().map(|l| l[s]).sum::<usize>() * d_count * batch;
            if values.len() != want {
                let shape = if state_lens.iter().all(|l| l[s] == state_lens[0][s]) {
                    shape_str(&[slots, batch, state_lens[0][s]])
                } else {
                    "each layer's [D, B, len] in turn".to_string()
                };
                return Err(Error::shape(format!(
                    "initial state `{name}`: expected {want} values ({shape}), got {}",
                    values.len()
                )));
            }
            inits[s] = Some(values);
        }
        Ok(inits)
    }
}

/// Runs a layer's `count` directions (`job(d)`): on a shared pool's two
/// threads for [`Schedule::DirectionsInParallel`] (started once and kept on
/// their own cores, where a thread started per call may first share its
/// caller's); when no pool is free, or otherwise, one after the other (the
/// same bits).
fn run_directions(
    schedule: Schedule,
    count: usize,
    job: &(dyn Fn(usize) -> Result<Directed> + Sync),
) -> Result<Vec<Directed>> {
    if schedule == Schedule::DirectionsInParallel && count == 2 {
        let done: [std::sync::Mutex<Option<Result<Directed>>>; 2] = Default::default();
        crate::jit::run_shared(2, &|w, _| {
            let r = job(w);
            if let Ok(mut slot) = done[w].lock() {
                *slot = Some(r);
            }
        });
        let mut both = Vec::with_capacity(2);
        for (d, slot) in done.into_iter().enumerate() {
            let ran = slot.into_inner().ok().flatten();
            both.push(ran.unwrap_or_else(|| job(d))?);
        }
        return Ok(both);
    }
    (0..count).map(job).collect()
}

/// Rows of equal-length parts, side by side: `[rows, parts * len]`.
pub(super) fn side_by_side(parts: &[&[f32]], rows: usize, len: usize) -> Result<Vec<f32>> {
    let what = "a layer's outputs";
    let mut out = alloc::with_capacity(alloc::product(&[rows, len, parts.len()], what)?, what)?;
    for r in 0..rows {
        for p in parts {
            out.extend_from_slice(&p[r * len..(r + 1) * len]);
        }
    }
    Ok(out)
}

/// One direction of one layer: each output `[T, B, len]`, each state's final
/// value `[B, len]`.
struct Directed {
    outputs: Vec<Vec<f32>>,
    states: Vec<Vec<f32>>,
}

/// One direction of one layer, the threads its kernel runs on, and the
/// state its last run left (`CompiledNetwork::spare`).
struct Direction<'a> {
    kernel: &'a Kernel,
    reverse: bool,
    threads: Option<usize>,
    spare: &'a std::sync::Mutex<Option<crate::State>>,
}

impl Direction<'_> {
    /// Runs over a batch of sequences of `lengths` (all `steps` if `None`), from
    /// the initial states `init` (`[B, len]` each).
    fn run(
        &self,
        xs: &[&[f32]],
        steps: usize,
        batch: usize,
        lengths: Option<&[usize]>,
        init: &[&[f32]],
    ) -> Result<Directed> {
        let (kernel, reverse) = (self.kernel, self.reverse);
        let out_lens: Vec<usize> = (0..kernel.output_names().len())
            .map(|o| kernel.output_len(o))
            .collect();
        let in_lens: Vec<usize> = (0..xs.len()).map(|i| kernel.input_len(i)).collect();
        let state_lens: Vec<usize> = (0..kernel.state_names().len())
            .map(|s| kernel.state_len(s))
            .collect();
        let full = vec![steps; batch];
        let lens = lengths.unwrap_or(&full);
        // Longest first (stable), so that the live rows are a prefix.
        let mut order: Vec<usize> = (0..batch).collect();
        order.sort_by_key(|&b| std::cmp::Reverse(lens[b]));
        let in_place = !reverse && lens.iter().all(|&n| n == steps);
        // Each input with its rows in `order`, each row's steps in the order they
        // run (reversed for the reverse direction).
        let arrange = |x: &[f32], len: usize| -> Result<Vec<f32>> {
            let what = "the inputs in running order";
            let mut v = alloc::zeros(alloc::product(&[steps, batch, len], what)?, what)?;
            for (r, &b) in order.iter().enumerate() {
                let n = lens[b];
                for s in 0..n {
                    let src = if reverse { n - 1 - s } else { s };
                    v[(s * batch + r) * len..][..len]
                        .copy_from_slice(&x[(src * batch + b) * len..][..len]);
                }
            }
            Ok(v)
        };
        let xp: Vec<Cow<'_, [f32]>> = xs
            .iter()
            .zip(&in_lens)
            .map(|(x, &len)| {
                Ok(if in_place {
                    Cow::Borrowed(*x)
                } else {
                    Cow::Owned(arrange(x, len)?)
                })
            })
            .collect::<Result<_>>()?;
        let what = "the outputs";
        let mut outp: Vec<Vec<f32>> = out_lens
            .iter()
            .map(|&len| alloc::zeros(alloc::product(&[steps, batch, len], what)?, what))
            .collect::<Result<_>>()?;
        // The states of the live rows, in `order`.
        let mut cur: Vec<Vec<f32>> = init
            .iter()
            .zip(&state_lens)
            .map(|(v, &len)| {
                let mut c = alloc::with_capacity(batch * len, "the states")?;
                for &b in &order {
                    c.extend_from_slice(&v[b * len..(b + 1) * len]);
                }
                Ok(c)
            })
            .collect::<Result<_>>()?;
        let mut finals: Vec<Vec<f32>> = init
            .iter()
            .map(|v| alloc::copy(v, "the final states"))
            .collect::<Result<_>>()?;
        let mut s0 = 0;
        let mut live = order.iter().take_while(|&&b| lens[b] > 0).count();
        while live > 0 {
            let s1 = lens[order[live - 1]];
            let shapes = Shapes {
                batch,
                in_lens: &in_lens,
                out_lens: &out_lens,
                state_lens: &state_lens,
            };
            self.run_segment(&shapes, &xp, live, (s0, s1), &mut outp, &mut cur)?;
            let next = order[..live].iter().take_while(|&&b| lens[b] > s1).count();
            for (r, &b) in order.iter().enumerate().take(live).skip(next) {
                for (s, &len) in state_lens.iter().enumerate() {
                    finals[s][b * len..(b + 1) * len]
                        .copy_from_slice(&cur[s][r * len..(r + 1) * len]);
                }
            }
            s0 = s1;
            live = next;
        }
        let outputs = if in_place {
            outp
        } else {
            // Back to the caller's rows and steps.
            outp.iter()
                .zip(&out_lens)
                .map(|(o, &len)| {
                    let mut v = alloc::zeros(o.len(), what)?;
                    for (r, &b) in order.iter().enumerate() {
                        let n = lens[b];
                        for s in 0..n {
                            let dst = if reverse { n - 1 - s } else { s };
                            v[(dst * batch + b) * len..][..len]
                                .copy_from_slice(&o[(s * batch + r) * len..][..len]);
                        }
                    }
                    Ok(v)
                })
                .collect::<Result<_>>()?
        };
        Ok(Directed {
            outputs,
            states: finals,
        })
    }

    /// Runs steps `s0..s1` of the first `live` rows (in running order):
    /// their states from `cur`, their inputs from `xp`, their outputs into
    /// `outp`, their new states back into `cur`.
    fn run_segment(
        &self,
        shapes: &Shapes<'_>,
        xp: &[Cow<'_, [f32]>],
        live: usize,
        (s0, s1): (usize, usize),
        outp: &mut [Vec<f32>],
        cur: &mut [Vec<f32>],
    ) -> Result<()> {
        let kernel = self.kernel;
        let Shapes {
            batch,
            in_lens,
            out_lens,
            state_lens,
        } = *shapes;
        let k = s1 - s0;
        // The last run's state if it has this many rows (a run that panicked
        // holding the lock left nothing worth keeping).
        let kept = (self.spare.lock().ok())
            .and_then(|mut s| s.take())
            .filter(|s| s.batch() == live);
        let mut state = match kept {
            Some(s) => s,
            None => kernel.new_state(live)?,
        };
        for (s, name) in kernel.state_names().iter().enumerate() {
            state.set(name, &cur[s][..live * state_lens[s]])?;
        }
        let seg_in: Vec<Cow<'_, [f32]>> = xp
            .iter()
            .zip(in_lens)
            .map(|(x, &len)| {
                Ok(if live == batch {
                    Cow::Borrowed(&x[s0 * batch * len..s1 * batch * len])
                } else {
                    let mut v = alloc::with_capacity(k * live * len, "the live rows' inputs")?;
                    for s in s0..s1 {
                        v.extend_from_slice(&x[s * batch * len..][..live * len]);
                    }
                    Cow::Owned(v)
                })
            })
            .collect::<Result<_>>()?;
        let seg_in: Vec<&[f32]> = seg_in.iter().map(|c| c.as_ref()).collect();
        let variant = kernel.variant_for_any_threads(live, k);
        if live == batch {
            let mut views: Vec<&mut [f32]> = outp
                .iter_mut()
                .zip(out_lens)
                .map(|(o, &len)| &mut o[s0 * batch * len..s1 * batch * len])
                .collect();
            kernel.run_planned(&seg_in, &mut state, &mut views, variant, self.threads)?;
        } else {
            let mut seg_out: Vec<Vec<f32>> = out_lens
                .iter()
                .map(|&len| alloc::zeros(k * live * len, "the live rows' outputs"))
                .collect::<Result<_>>()?;
            {
                let mut views: Vec<&mut [f32]> =
                    seg_out.iter_mut().map(Vec::as_mut_slice).collect();
                kernel.run_planned(&seg_in, &mut state, &mut views, variant, self.threads)?;
            }
            for ((o, so), &len) in outp.iter_mut().zip(&seg_out).zip(out_lens) {
                for (j, s) in (s0..s1).enumerate() {
                    o[s * batch * len..][..live * len]
                        .copy_from_slice(&so[j * live * len..][..live * len]);
                }
            }
        }
        for (s, name) in kernel.state_names().iter().enumerate() {
            let v = state.get(name)?;
            cur[s][..v.len()].copy_from_slice(&v);
        }
        if let Ok(mut spare) = self.spare.lock() {
            *spare = Some(state);
        }
        Ok(())
    }
}

/// The sizes a direction's segments share.
#[derive(Clone, Copy)]
struct Shapes<'a> {
    batch: usize,
    in_lens: &'a [usize],
    out_lens: &'a [usize],
    state_lens: &'a [usize],
}
