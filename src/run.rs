//! `cellc run`: a cell, its weights and an input sequence from safetensors files,
//! the output sequence and final states back into one.
//!
//! The inputs are time-major, `[T, B, len]`, under the cell's input names
//! (PyTorch's default layout); initial states, `[B, len]` under the state names,
//! are optional (zeros). Sizes are read off the tensors: each input's length,
//! each given state's, and each parameter's checkpoint tensor (an axis taken
//! whole must have the parameter's length) give equations over the size
//! variables, which `sema::infer_dims` solves. A disagreement is an error that
//! names both tensors. The result holds each output as `[T, B, len]` under its
//! name, and each state's final value as `[B, len]` under its name.

use crate::alloc;
use crate::network::{Layout, Network, Schedule};
use crate::sema;
use crate::sizes::PortLen;
use crate::weights::{shape_str, Weights};
use crate::{Cell, Error, Options, Result};

/// Runs a cell, or the network a layered checkpoint describes
/// ([`Network::for_checkpoint`]), over the sequences in `inputs`. `given` sizes
/// override nothing: they must agree with the tensors.
pub fn run(
    cell: &Cell,
    weights: &Weights,
    inputs: &Weights,
    given: &[(String, u64)],
    opts: &Options,
) -> Result<Weights> {
    run_network(
        cell,
        weights,
        inputs,
        given,
        opts,
        &NetworkOptions::default(),
    )
}

/// How [`run_network`] runs beyond the kernels' [`Options`].
#[derive(Clone, Copy, Debug, Default)]
pub struct NetworkOptions {
    /// The network's layout (the weights must hold it); by default read off
    /// the weights' names.
    pub layout: Option<Layout>,
    /// Inputs and outputs are `[B, T, len]` (PyTorch's `batch_first=True`).
    pub batch_first: bool,
    /// The schedule (default: chosen per run; one the run cannot take is
    /// an error).
    pub schedule: Option<Schedule>,
}

/// [`run`], with the network's options.
pub fn run_network(
    cell: &Cell,
    weights: &Weights,
    inputs: &Weights,
    given: &[(String, u64)],
    opts: &Options,
    net_opts: &NetworkOptions,
) -> Result<Weights> {
    let NetworkOptions {
        layout,
        batch_first,
        schedule,
    } = *net_opts;
    let net = match layout {
        Some(layout) => Network::new(cell.clone(), layout)?,
        None => Network::for_checkpoint(cell.clone(), weights)?,
    };
    let layout = net.layout();
    let checked = cell.checked();
    if checked.inputs.is_empty() {
        return Err(Error::shape(format!(
            "cell `{}` has no input, so there is no sequence to run",
            checked.name
        )));
    }
    let axes = Axes::new(layout, batch_first);
    refuse_unknown(checked, inputs, &axes)?;
    let read = RunInputs::read(checked, inputs, &axes)?;
    let (steps, batch) = (read.steps, read.batch);
    let mut compiled = net.compile_with(weights, &read.ports, given, opts)?;
    compiled.force_schedule(schedule)?;
    if let Some(s) = schedule {
        let ragged = read
            .lengths
            .as_ref()
            .is_some_and(|l| l.iter().any(|&n| n != steps));
        if compiled.schedule(batch, steps, ragged) != s {
            return Err(Error::options(format!(
                "`{}` cannot run this batch (its rows have different lengths)",
                s.name()
            )));
        }
    }
    let state_lens = compiled.state_lens();
    for (s, name) in compiled.state_names().iter().enumerate() {
        if state_lens.iter().any(|l| l[s] != state_lens[0][s]) {
            return Err(Error::shape(format!(
                "state `{name}` has length {} in layer 0 but {} in another layer; \
                 [D * L, B, len] needs one length",
                state_lens[0][s],
                state_lens.iter().map(|l| l[s]).max().unwrap_or(0)
            )));
        }
    }
    let xs: Vec<Vec<f32>> = compiled
        .input_names()
        .iter()
        .map(|n| {
            let t = inputs.get(n).map_or(&[][..], |t| t.data.as_slice());
            if batch_first {
                swap_leading(t, batch, steps)
            } else {
                alloc::copy(t, "the inputs")
            }
        })
        .collect::<Result<_>>()?;
    let xs: Vec<&[f32]> = xs.iter().map(Vec::as_slice).collect();
    let initial: Vec<(&str, &[f32])> = read
        .initial
        .iter()
        .map(|(n, v)| (n.as_str(), v.as_slice()))
        .collect();
    let out = compiled.run(&xs, batch, read.lengths.as_deref(), &initial)?;
    let mut result = Weights::new();
    for (o, name) in compiled.output_names().iter().enumerate() {
        let len = compiled.output_lens()[o];
        let (shape, data) = if batch_first {
            (
                vec![batch, steps, len],
                swap_leading(&out.outputs[o], steps, batch)?,
            )
        } else {
            (vec![steps, batch, len], out.outputs[o].clone())
        };
        result
            .insert(name, &shape, data)
            .map_err(|e| Error::internal(e.0))?;
    }
    for (s, name) in compiled.state_names().iter().enumerate() {
        let len = state_lens[0][s];
        // One layer forward: `[B, len]` as a cell's state; any other network,
        // PyTorch's and ONNX's `[D*L, B, len]`.
        let shape = if layout.is_single() {
            vec![batch, len]
        } else {
            vec![axes.slots, batch, len]
        };
        result
            .insert(name, &shape, out.states[s].clone())
            .map_err(|e| Error::internal(e.0))?;
    }
    Ok(result)
}

/// How a run's tensors are laid out, for reading them and for messages.
struct Axes {
    layout: Layout,
    batch_first: bool,
    /// Layers times directions: the first axis of a network's states.
    slots: usize,
    /// `[T, B, len]` or `[B, T, len]`.
    seq: &'static str,
    /// `[B, len]`, or `[D*L, B, len]` for a network.
    state: String,
}

impl Axes {
    fn new(layout: Layout, batch_first: bool) -> Axes {
        let slots = layout.directions() * layout.layers;
        Axes {
            layout,
            batch_first,
            slots,
            seq: if batch_first {
                "[B, T, len]"
            } else {
                "[T, B, len]"
            },
            state: if slots == 1 {
                "[B, len]".to_string()
            } else {
                format!("[{slots}, B, len]")
            },
        }
    }
}

/// A tensor the cell does not read would be silently ignored (an initial
/// state saved under another name would start from zeros): refused, with
/// what the cell reads and the closest name.
fn refuse_unknown(checked: &sema::Checked, inputs: &Weights, axes: &Axes) -> Result<()> {
    for name in inputs.names().chain(inputs.integer_names()) {
        let known = name == LENGTHS
            || checked.inputs.iter().any(|p| p.name == name)
            || checked.states.iter().any(|p| p.name == name);
        if known {
            continue;
        }
        let reads: Vec<String> = checked
            .inputs
            .iter()
            .map(|p| format!("`{}` (input, {})", p.name, axes.seq))
            .chain(
                checked
                    .states
                    .iter()
                    .map(|p| format!("`{}` (initial state, {})", p.name, axes.state)),
            )
            .chain([format!("`{LENGTHS}` (each row's length, [B], integers)")])
            .collect();
        let hint = sema::suggest(
            name,
            checked
                .inputs
                .iter()
                .chain(&checked.states)
                .map(|p| p.name.as_str())
                .chain([LENGTHS]),
        )
        .map_or(String::new(), |s| format!(" (did you mean `{s}`?)"));
        return Err(Error::shape(format!(
            "the inputs have tensor `{name}`, which cell `{}` does not read{hint}; it reads {}",
            checked.name,
            reads.join(", ")
        )));
    }
    Ok(())
}

/// What a run's inputs say: the sequences' steps and rows, each port's
/// length (for size inference), the rows' lengths and the initial states
/// given, each checked against the others.
struct RunInputs {
    ports: Vec<PortLen>,
    steps: usize,
    batch: usize,
    lengths: Option<Vec<usize>>,
    initial: Vec<(String, Vec<f32>)>,
}

impl RunInputs {
    fn read(checked: &sema::Checked, inputs: &Weights, axes: &Axes) -> Result<RunInputs> {
        let (mut ports, steps, batch, first) = read_sequences(checked, inputs, axes)?;
        let lengths = read_lengths(inputs, steps, batch, &first)?;
        let mut initial: Vec<(String, Vec<f32>)> = Vec::new();
        for port in &checked.states {
            if inputs.integers(&port.name).is_some() {
                return Err(Error::shape(format!(
                    "initial state `{}` holds integers; states are floating-point",
                    port.name
                )));
            }
            let Some(t) = inputs.get(&port.name) else {
                continue;
            };
            let (b, len) = match t.shape[..] {
                [n, b, len] if n == axes.slots => (b, len),
                [b, len] if axes.slots == 1 => (b, len),
                _ => {
                    return Err(Error::shape(format!(
                        "initial state `{}` is {}; expected {} for {}",
                        port.name,
                        shape_str(&t.shape),
                        axes.state,
                        axes.layout
                    )))
                }
            };
            if b != batch {
                return Err(Error::shape(format!(
                    "initial state `{}` is {} but input `{first}` has B = {batch}",
                    port.name,
                    shape_str(&t.shape)
                )));
            }
            ports.push(PortLen {
                name: port.name.clone(),
                len,
                what: format!("initial state `{}` {}", port.name, shape_str(&t.shape)),
            });
            initial.push((port.name.clone(), t.data.clone()));
        }
        Ok(RunInputs {
            ports,
            steps,
            batch,
            lengths,
            initial,
        })
    }
}

/// The cell's inputs as sequences: each one's length, and the steps and rows
/// they all share (with the first input's name, for messages).
fn read_sequences(
    checked: &sema::Checked,
    inputs: &Weights,
    axes: &Axes,
) -> Result<(Vec<PortLen>, usize, usize, String)> {
    let mut ports = Vec::new();
    let mut seq: Option<(usize, usize, String)> = None;
    for port in &checked.inputs {
        if inputs.integers(&port.name).is_some() {
            return Err(Error::shape(format!(
                "input `{}` holds integers; inputs are floating-point",
                port.name
            )));
        }
        let t = inputs.get(&port.name).ok_or_else(|| {
            Error::shape(format!(
                "the inputs have no tensor `{}` (the cell's input, {}); they have: {}",
                port.name,
                axes.seq,
                inputs.names().collect::<Vec<_>>().join(", ")
            ))
        })?;
        let [a, b, len] = t.shape[..] else {
            return Err(Error::shape(format!(
                "input `{}` is {}; expected {} ({})",
                port.name,
                shape_str(&t.shape),
                axes.seq,
                if axes.batch_first {
                    "batch-first"
                } else {
                    "time-major"
                }
            )));
        };
        let (steps, batch) = if axes.batch_first { (b, a) } else { (a, b) };
        if let Some((s, b, first)) = &seq {
            if (*s, *b) != (steps, batch) {
                return Err(Error::shape(format!(
                    "input `{}` is {} but input `{first}` has T = {s}, B = {b}",
                    port.name,
                    shape_str(&t.shape)
                )));
            }
        } else {
            seq = Some((steps, batch, port.name.clone()));
        }
        ports.push(PortLen {
            name: port.name.clone(),
            len,
            what: format!("input `{}` {}", port.name, shape_str(&t.shape)),
        });
    }
    let (steps, batch, first) = seq.unwrap_or_default();
    if batch == 0 {
        return Err(Error::shape(format!(
            "input `{first}` has a batch of 0 rows"
        )));
    }
    Ok((ports, steps, batch, first))
}

/// Each row's length, when given: `[batch]` integers from 0 to `steps`.
fn read_lengths(
    inputs: &Weights,
    steps: usize,
    batch: usize,
    first: &str,
) -> Result<Option<Vec<usize>>> {
    match (inputs.integers(LENGTHS), inputs.get(LENGTHS)) {
        (_, Some(_)) => Err(Error::shape(format!(
            "`{LENGTHS}` holds floating-point values; sequence lengths are integers (i64 or i32)"
        ))),
        (Some((shape, values)), None) => {
            if shape != [batch] {
                return Err(Error::shape(format!(
                    "`{LENGTHS}` is {}; expected [{batch}] (one length per row of input `{first}`)",
                    shape_str(shape)
                )));
            }
            let lens = values
                .iter()
                .enumerate()
                .map(|(b, &n)| {
                    usize::try_from(n)
                        .ok()
                        .filter(|&n| n <= steps)
                        .ok_or_else(|| {
                            Error::shape(format!(
                                "`{LENGTHS}` gives row {b} length {n}; lengths are 0 to T = {steps}"
                            ))
                        })
                })
                .collect::<Result<Vec<usize>>>()?;
            Ok(Some(lens))
        }
        (None, None) => Ok(None),
    }
}

/// The name of the per-row sequence lengths among a run's inputs.
pub const LENGTHS: &str = "lengths";

/// `[a, b, len]` -> `[b, a, len]`.
fn swap_leading(v: &[f32], a: usize, b: usize) -> Result<Vec<f32>> {
    let len = v.len().checked_div(a * b).unwrap_or(0);
    let mut out = alloc::zeros(v.len(), "the batch-first tensors")?;
    for i in 0..a {
        for j in 0..b {
            out[(j * a + i) * len..][..len].copy_from_slice(&v[(i * b + j) * len..][..len]);
        }
    }
    Ok(out)
}

/// Runs an imported ONNX model ([`crate::onnx::import_file`]) over `inputs`
/// as ONNX Runtime runs it:
/// - each input under its graph input's name or cellc's: the sequence (`x`),
///   the rows' lengths (`lengths`), the initial states that are graph inputs
///   (`h`, `c`); every graph input the model has must be given (ONNX Runtime
///   refuses a run without one), and nothing else;
/// - in the model's layout: a batch-first model reads `[B, T, X]` and writes
///   `y` as `[B, T, D*H]`;
/// - at the sizes its glue fixes, if it fixes them;
/// - a row of length 0 ends with zero states (ONNX Runtime's rule; cellc's
///   own networks keep such a row's initial state).
///
/// The result holds `y` and each state's final value (`h`, `c`), `[D*L, B,
/// H]`.
pub fn run_onnx(
    imported: &crate::onnx::Imported,
    inputs: &Weights,
    opts: &Options,
) -> Result<Weights> {
    let cell = Cell::from_source(imported.cell_name, imported.cell_source)?;
    let x = onnx_inputs(imported, inputs)?;
    let mut out = run_network(
        &cell,
        &imported.weights,
        &x,
        &[],
        opts,
        &NetworkOptions {
            layout: None,
            batch_first: imported.batch_first,
            schedule: None,
        },
    )?;
    zero_empty_rows(&cell, &x, &mut out, imported.batch_first)?;
    Ok(out)
}

/// The network's inputs from the model's: each under cellc's name, every
/// graph input given once, the model's stored initial states added, the
/// sizes its glue fixes checked.
fn onnx_inputs(imported: &crate::onnx::Imported, inputs: &Weights) -> Result<Weights> {
    let seq = if imported.batch_first {
        "[B, T, X]"
    } else {
        "[T, B, X]"
    };
    // Each input the model takes: (cellc's name, graph input, what it is).
    let mut takes: Vec<(&str, &str, String)> = vec![(
        "x",
        imported.input_name.as_str(),
        format!("the sequence, {seq}"),
    )];
    if let Some(l) = &imported.lengths_input {
        takes.push((
            LENGTHS,
            l.as_str(),
            "each row's length, [B], integers".into(),
        ));
    }
    for (state, input) in &imported.state_inputs {
        takes.push((
            state.as_str(),
            input.as_str(),
            format!("the initial `{state}`, [D*L, B, H]"),
        ));
    }
    let listed = || {
        takes
            .iter()
            .map(|(ours, theirs, what)| {
                if ours == theirs {
                    format!("`{ours}` ({what})")
                } else {
                    format!("`{theirs}` or `{ours}` ({what})")
                }
            })
            .collect::<Vec<_>>()
            .join(", ")
    };
    let mut x = Weights::new();
    for name in inputs.names().chain(inputs.integer_names()) {
        let Some((ours, _, _)) = takes
            .iter()
            .find(|(ours, theirs, _)| name == *ours || name == *theirs)
        else {
            let stored = imported.initial.get(name).is_some();
            return Err(Error::shape(format!(
                "the inputs have tensor `{name}`, which the model does not take{}; it takes {}",
                if stored {
                    " (it stores that initial state)"
                } else {
                    ""
                },
                listed()
            )));
        };
        let given_twice = x.get(ours).is_some() || x.integers(ours).is_some();
        if given_twice {
            return Err(Error::shape(format!(
                "the inputs give `{ours}` twice (under the model's name and cellc's)"
            )));
        }
        match (inputs.get(name), inputs.integers(name)) {
            (Some(t), _) => x.insert(ours, &t.shape, alloc::copy(&t.data, "the inputs")?)?,
            (None, Some((shape, values))) => x.insert_integers(ours, shape, values.to_vec())?,
            (None, None) => {}
        }
    }
    for (ours, theirs, what) in &takes {
        if x.get(ours).is_none() && x.integers(ours).is_none() {
            return Err(Error::shape(format!(
                "the model takes graph input `{theirs}` ({what}{}); give it with the inputs \
                 (as `{theirs}` or `{ours}`): ONNX Runtime refuses to run the model without it",
                if *ours == LENGTHS {
                    ", sequence_lens"
                } else {
                    ""
                }
            )));
        }
    }
    for name in imported.initial.names() {
        let t = imported
            .initial
            .get(name)
            .ok_or_else(|| Error::internal("lost a state"))?;
        x.insert(name, &t.shape, t.data.clone())?;
    }
    // The sizes the model's glue fixes.
    if let Some(t) = x.get("x") {
        if let [a, b, _] = t.shape[..] {
            let (steps, batch) = if imported.batch_first { (b, a) } else { (a, b) };
            for (fixed, have, what) in [
                (imported.fixed_sizes.0, steps, "T"),
                (imported.fixed_sizes.1, batch, "B"),
            ] {
                if let Some(f) = fixed.filter(|&f| f != have) {
                    return Err(Error::shape(format!(
                        "the model fixes {what} = {f} (a Reshape in its graph, written when it \
                         was exported), but the sequence has {what} = {have}; ONNX Runtime \
                         refuses other sizes too: export with dynamic axes"
                    )));
                }
            }
        }
    }
    Ok(x)
}

/// ONNX Runtime's final state of a row of length 0 is zero (every row,
/// when the sequence has no step): `out`'s final states made so.
fn zero_empty_rows(cell: &Cell, x: &Weights, out: &mut Weights, batch_first: bool) -> Result<()> {
    let steps_of = |t: &crate::Tensor| t.shape.get(usize::from(batch_first)).copied();
    let no_steps = x.get("x").and_then(steps_of) == Some(0);
    let empty = |b: usize, lengths: Option<&[i64]>| no_steps || lengths.is_some_and(|l| l[b] == 0);
    let lengths = x.integers(LENGTHS).map(|(_, l)| l);
    for state in &cell.checked().states {
        let Some(t) = out.get(&state.name) else {
            continue;
        };
        let (shape, mut data) = (t.shape.clone(), t.data.clone());
        // `[D*L, B, H]`, or `[B, H]` for one layer forward.
        let (batch, len) = match shape[..] {
            [_, b, n] | [b, n] => (b, n),
            _ => {
                return Err(Error::internal(
                    "a network's final state is not [D*L, B, H]",
                ))
            }
        };
        if !(0..batch).any(|b| empty(b, lengths)) {
            continue;
        }
        for slot in data.chunks_mut(batch * len) {
            for b in (0..batch).filter(|&b| empty(b, lengths)) {
                slot[b * len..(b + 1) * len].fill(0.0);
            }
        }
        out.remove(&state.name);
        out.insert(&state.name, &shape, data)?;
    }
    Ok(())
}
