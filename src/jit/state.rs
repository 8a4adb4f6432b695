//! A caller's buffers for one batch size: the inputs, each state's current and
//! next value, and every plan's scratch, allocated once.

use super::buffer::{count, too_large, AlignedBuf};
use super::slots::{Inline, SlotTable};
use super::{Build, Kernel, MAX_SLOTS};
use crate::codegen::plan::{Loc, SlotKind};
use crate::codegen::Variant;
use crate::{Error, Result};

/// A plan's buffers that a state does not share with the others: its scratch
/// and its projections.
struct Side {
    buf: AlignedBuf,
    /// Offset of each of the plan's own slots in `buf` (`usize::MAX` for shared ones).
    offsets: Vec<usize>,
    /// Steps one projection buffer holds.
    chunk: usize,
}

/// Everything one caller's steps read and write, for one batch size: the
/// cell's states (read and set by name, `[batch, len]`) and its outputs.
///
/// ```
/// # fn main() -> cellc::Result<()> {
/// let cell = cellc::Cell::from_source("tiny.rnn", "
///     dim X = 3
///     dim H = 4
///     input x: [X]
///     state h: [H]
///     param W: [H, X]
///     output y: [H]
///     param U: [H, H]
///     h' = tanh(W @ x + U @ h)
///     y = h'
/// ")?;
/// let kernel = cell.compile(&cellc::Weights::random(&cell.ir()?, 1), &cellc::Options::default())?;
/// let mut state = kernel.new_state(1)?;
/// state.set("h", &[0.25; 4])?;
/// kernel.step(&[1.0; 3], &mut state)?;
/// assert_eq!(state.get("h")?, kernel.output(&state, "y")?);
/// assert!(state.set("c", &[0.0; 4]).is_err()); // no state `c`
/// # Ok(())
/// # }
/// ```
pub struct State {
    pub(super) kernel: u64,
    pub(super) batch: usize,
    /// The streaming plan's buffers (inputs, states, scratch).
    pub(super) buf: AlignedBuf,
    /// Offset (floats) of each streaming slot's buffer in `buf`; the states'
    /// current and next slots swap after each step.
    pub(super) offsets: Vec<usize>,
    pub(super) strides: Vec<usize>,
    /// Slots shared by every plan: the weights, inputs and states.
    shared: usize,
    /// Other plans' buffers, made on first use.
    side: [Option<Side>; 4],
    state_lens: Vec<usize>,
    cur_slots: Vec<usize>,
    names: Vec<String>,
    /// Where each output of the last step is, and which plan ran it.
    pub(super) outputs: Vec<Loc>,
    pub(super) last: Variant,
    /// The plan and threads of one `step` at this batch: streaming, or `gemm`
    /// products for large batches.
    pub(super) step_plan: Variant,
    pub(super) step_threads: usize,
    /// Whether one `step` at this batch runs the rows apart
    /// ([`crate::codegen::schedule::Choice::rows_apart`]).
    pub(super) step_rows_apart: bool,
    pub(super) steps: u64,
    /// The inputs rounded to bf16 under `Compute::Bf16`, grown as needed.
    pub(super) rounded: Vec<f32>,
}

impl State {
    /// A state for `batch` rows of `kernel`, all zeros.
    pub(super) fn new(kernel: &Kernel, batch: usize) -> Result<State> {
        if batch == 0 {
            return Err(Error::shape("the batch must have at least one row"));
        }
        let plan = &kernel.streaming.plan;
        let mut offsets = Vec::with_capacity(plan.slots.len());
        let mut total = 0usize;
        let mut strides = Vec::with_capacity(plan.slots.len());
        for slot in &plan.slots {
            offsets.push(total);
            strides.push(slot.stride);
            if slot.kind != SlotKind::Weights {
                // Each buffer starts on a cache line.
                total = count(&[batch, slot.stride])
                    .and_then(|n| n.checked_next_multiple_of(16))
                    .and_then(|n| total.checked_add(n))
                    .ok_or_else(|| too_large(batch))?;
            }
        }
        let buf = AlignedBuf::zeros(total.max(16))?;
        let step = kernel.choice(batch, 1);
        Ok(State {
            kernel: kernel.id,
            batch,
            buf,
            offsets,
            strides,
            shared: kernel.shared_slots,
            side: Default::default(),
            state_lens: plan.state_lens.clone(),
            cur_slots: plan.state_cur.clone(),
            names: kernel.state_names.clone(),
            outputs: plan.outputs.clone(),
            last: Variant::Streaming,
            step_plan: step.variant,
            step_threads: step.threads,
            step_rows_apart: step.rows_apart,
            steps: 0,
            rounded: Vec::new(),
        })
    }

    pub fn batch(&self) -> usize {
        self.batch
    }

    /// Steps run with this state.
    pub fn steps(&self) -> u64 {
        self.steps
    }

    /// Makes the buffers plan `v` does not share with the streaming plan.
    pub(super) fn ensure_side(&mut self, build: &Build, v: Variant) -> Result<()> {
        if v == Variant::Streaming || self.side[v.index()].is_some() {
            return Ok(());
        }
        let plan = &build.plan;
        // Steps per projection buffer: about 8 MiB of them, 1 to 256.
        let row: usize = plan.hoists.iter().map(|h| h.stride).sum::<usize>().max(1);
        let chunk =
            ((8usize << 20) / self.batch.saturating_mul(row).saturating_mul(4)).clamp(1, 256);
        let mut offsets = vec![usize::MAX; plan.slots.len()];
        let mut total = 0usize;
        for (s, slot) in plan.slots.iter().enumerate().skip(self.shared) {
            offsets[s] = total;
            let rows = match slot.kind {
                SlotKind::Projection(_) => chunk.checked_mul(self.batch),
                _ => Some(self.batch),
            };
            total = rows
                .and_then(|r| r.checked_mul(slot.stride))
                .and_then(|n| n.checked_next_multiple_of(16))
                .and_then(|n| total.checked_add(n))
                .ok_or_else(|| too_large(self.batch))?;
        }
        let buf = AlignedBuf::zeros(total.max(16))?;
        self.side[v.index()] = Some(Side {
            buf,
            offsets,
            chunk,
        });
        Ok(())
    }

    /// Steps one projection buffer of plan `v` holds (`ensure_side` first).
    pub(super) fn chunk(&self, v: Variant) -> Option<usize> {
        self.side[v.index()].as_ref().map(|s| s.chunk.max(1))
    }

    /// The base pointer of every slot of plan `v` (`ensure_side` first): the
    /// packed weights, this state's buffers, the plan's own buffers. Each
    /// buffer holds `batch` rows of its slot's stride (projections: `chunk`
    /// steps of them), as the plan verifier assumes.
    pub(super) fn slot_table(&mut self, build: &Build, v: Variant) -> SlotTable {
        let mut t = SlotTable {
            ptrs: Inline::new(),
        };
        let n = build.plan.slots.len().min(MAX_SLOTS);
        let weights = build.weights.ptr().cast_mut();
        let base = self.buf.ptr_mut();
        let side = self.side[v.index()].as_mut();
        let side_base = side.map(|s| (s.buf.ptr_mut(), &s.offsets));
        for s in 0..n {
            t.ptrs.push(if s == 0 {
                weights
            } else if s < self.shared || v == Variant::Streaming {
                base.wrapping_add(self.offsets[s])
            } else {
                match &side_base {
                    Some((b, offsets)) => b.wrapping_add(offsets[s]),
                    None => base,
                }
            });
        }
        t
    }

    /// The projection buffer of plan `v` (`ensure_side` first), with its offsets.
    pub(super) fn side_buffer(&mut self, v: Variant) -> Option<(*mut f32, &[usize])> {
        self.side[v.index()]
            .as_mut()
            .map(|s| (s.buf.ptr_mut(), s.offsets.as_slice()))
    }

    fn state_index(&self, name: &str) -> Result<usize> {
        self.names.iter().position(|n| n == name).ok_or_else(|| {
            Error::shape(format!(
                "no state named `{name}`; the states are {}",
                self.names.join(", ")
            ))
        })
    }

    /// Reads a location of plan `v` into `dst` (`batch * len` values).
    pub(super) fn read_loc(&self, build: &Build, v: Variant, loc: Loc, dst: &mut [f32]) {
        let (buf, base) = if loc.slot == 0 {
            (build.weights.as_slice(), 0)
        } else if loc.slot < self.shared || v == Variant::Streaming {
            (self.buf.as_slice(), self.offsets[loc.slot])
        } else {
            match &self.side[v.index()] {
                Some(side) => (side.buf.as_slice(), side.offsets[loc.slot]),
                None => return,
            }
        };
        for b in 0..self.batch {
            let src = base + loc.offset + b * loc.stride;
            dst[b * loc.len..(b + 1) * loc.len].copy_from_slice(&buf[src..src + loc.len]);
        }
    }

    /// Writes `batch` rows of `len` floats into slot `slot` of the streaming
    /// buffers (a state's value; an input's, for `output` to read).
    pub(super) fn write_rows(&mut self, slot: usize, len: usize, rows: &[f32]) {
        let stride = self.strides[slot];
        let off = self.offsets[slot];
        let buf = self.buf.as_mut_slice();
        for b in 0..self.batch {
            buf[off + b * stride..off + b * stride + len]
                .copy_from_slice(&rows[b * len..(b + 1) * len]);
        }
    }

    /// The current value of a state, `[batch, len]`.
    pub fn get(&self, name: &str) -> Result<Vec<f32>> {
        let s = self.state_index(name)?;
        let mut out = vec![0.0; self.batch * self.state_lens[s]];
        self.read_state(s, &mut out);
        Ok(out)
    }

    fn read_state(&self, s: usize, out: &mut [f32]) {
        let len = self.state_lens[s];
        let cur = self.cur_slots[s];
        let stride = self.strides[cur];
        let buf = self.buf.as_slice();
        for b in 0..self.batch {
            let src = self.offsets[cur] + b * stride;
            out[b * len..(b + 1) * len].copy_from_slice(&buf[src..src + len]);
        }
    }

    /// Copies a state's current value into `out` (`[batch, len]`), allocating nothing.
    pub fn copy_state(&self, name: &str, out: &mut [f32]) -> Result<()> {
        let s = self.state_index(name)?;
        let want = self.batch * self.state_lens[s];
        if out.len() != want {
            return Err(Error::shape(format!(
                "state `{name}`: the buffer has {} values, the state {want}",
                out.len()
            )));
        }
        self.read_state(s, out);
        Ok(())
    }

    /// Sets a state's current value from `[batch, len]` values.
    pub fn set(&mut self, name: &str, values: &[f32]) -> Result<()> {
        let s = self.state_index(name)?;
        let len = self.state_lens[s];
        if values.len() != self.batch * len {
            return Err(Error::shape(format!(
                "state `{name}`: expected {} values ([{}, {len}]), got {}",
                self.batch * len,
                self.batch,
                values.len()
            )));
        }
        let cur = self.cur_slots[s];
        self.write_rows(cur, len, values);
        Ok(())
    }
}

impl std::fmt::Debug for State {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("State")
            .field("batch", &self.batch)
            .field("states", &self.names)
            .field("steps", &self.steps)
            .finish()
    }
}
