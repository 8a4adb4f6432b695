"""Training any cell from PyTorch: `cellc.torch.Cell` is an `nn.Module`
whose forward and backward passes are compiled by cellc from the cell's
`.rnn` source.

    import cellc.torch
    m = cellc.torch.Cell("examples/layernorm_lstm.rnn", dims={"X": 32, "H": 64})
    y, states = m(x)                 # x [T, B, X]; states {"h": [B, H], "c": [B, H]}
    loss = y.pow(2).mean(); loss.backward()
    torch.optim.Adam(m.parameters()).step()

One `nn.Parameter` per `param` of the cell, as an attribute of the same
name (`m.W_i`), initialised as PyTorch initialises `nn.LSTM`: uniform in
[-1/sqrt(H), 1/sqrt(H)], H the length of the cell's first state. The
gradients are those of the cell's backward cell (reverse mode of its IR,
`cellc compile --emit grad`), run over the reversed sequence; see
`docs/training.md`.

The autograd node is a `torch.autograd.Function`, not a
`torch.library.custom_op`: it carries the compiled trainer and the tape of
one call (Python objects a custom op's schema does not take), and cellc runs
on the CPU only, where a custom op's other services (tracing by
`torch.compile`, device dispatch) have nothing to add yet.
"""

from __future__ import annotations

import math
import os
from typing import Any, Optional, Union

import numpy as np
import torch

from . import _cellc

__all__ = ["Cell"]


def _arrays(tensors):
    """CPU float32 contiguous NumPy views of tensors (detached)."""
    return [t.detach().to(torch.float32).contiguous().cpu().numpy() for t in tensors]


class _Steps(torch.autograd.Function):
    """The sequence through the trainer: inputs, initial states and
    parameters in; outputs and final states out."""

    @staticmethod
    def forward(ctx, module: "Cell", steps: int, batch: int, *tensors):
        trainer = module._trainer
        n_in = len(module.input_names)
        n_st = len(module.state_names)
        xs = tensors[:n_in]
        h0 = tensors[n_in:n_in + n_st]
        module._sync(tensors[n_in + n_st:])
        outs, finals, tape = trainer.forward(_arrays(xs), _arrays(h0), steps, batch)
        ctx.module = module
        ctx.tape = tape
        ctx.n_out = len(outs)
        return tuple(torch.from_numpy(a) for a in outs) + tuple(torch.from_numpy(a) for a in finals)

    @staticmethod
    def backward(ctx, *grads):
        module = ctx.module
        tape = ctx.tape
        shapes_out = [(tape.steps, tape.batch, n) for n in module._outputs[1]]
        shapes_st = [(tape.batch, n) for n in module._states[1]]
        given = []
        for g, shape in zip(grads, shapes_out + shapes_st):
            given.append(np.zeros(shape, np.float32) if g is None else
                         g.detach().to(torch.float32).contiguous().cpu().numpy())
        d_out = given[:ctx.n_out]
        d_final = given[ctx.n_out:]
        # The inputs' adjoints only when autograd wants one (a first
        # layer's data needs none: their products after the loop are skipped).
        n_in = len(module.input_names)
        want = any(ctx.needs_input_grad[3:3 + n_in])
        params, d_inputs, d_h0 = module._trainer.backward(tape, d_out, d_final, inputs=want)
        d_inputs = [torch.from_numpy(a) for a in d_inputs] if want else [None] * n_in
        return ((None, None, None)
                + tuple(d_inputs)
                + tuple(torch.from_numpy(a) for a in d_h0)
                + tuple(torch.from_numpy(a) for a in params))


class Cell(torch.nn.Module):
    """A cell of cellc's language as a trainable `nn.Module`.

    `Cell(path_or_source, dims=None, threads=None)`: a `.rnn` file's path,
    or the source text itself; `dims` the sizes (`{"X": 64, "H": 128}`), the
    file's defaults for the rest. `m(x, states=None)` takes `x` `[T, B, X]`
    (a dict by input name when the cell has several inputs) and the initial
    states as a dict by state name (each `[B, n]`; zeros when absent), and
    returns `(y, states)`: the outputs `[T, B, n]` (a dict when several) and
    the final states as a dict by name. Every argument is differentiable.
    """

    def __init__(self, path_or_source: Union[str, os.PathLike], dims: Optional[dict] = None,
                 threads: Optional[int] = None):
        super().__init__()
        text = str(path_or_source)
        if os.path.exists(text) or (text.endswith(".rnn") and "\n" not in text):
            cell = _cellc.Cell(text, dims=dims)
        else:
            cell = _cellc.Cell.from_source(text, dims=dims)
        trainer = _cellc.Trainer(cell, threads=threads)
        object.__setattr__(self, "_trainer", trainer)
        self._cell = cell
        self._inputs = trainer.inputs
        self._states = trainer.states
        self._outputs = trainer.outputs
        self.input_names = list(self._inputs[0])
        self.state_names = list(self._states[0])
        self.output_names = list(self._outputs[0])
        self.param_names = list(trainer.param_names)
        hidden = self._states[1][0] if self._states[1] else max(1, self._outputs[1][0])
        bound = 1.0 / math.sqrt(hidden)
        for name, shape in zip(self.param_names, trainer.param_shapes):
            p = torch.nn.Parameter(torch.empty(*shape, dtype=torch.float32))
            torch.nn.init.uniform_(p, -bound, bound)
            self.register_parameter(name, p)
        self._synced = None

    def extra_repr(self) -> str:
        return (f"{self._cell.name}, inputs={self.input_names}, states={self.state_names}, "
                f"outputs={self.output_names}")

    def load_checkpoint(self, weights: dict) -> None:
        """Sets the parameters from a checkpoint (a `state_dict`, or a dict
        of arrays) as the cell's bindings read it (`param W_ii: [H, X] =
        weight_ih_l0[0..H]`): a trained `nn.LSTM`'s weights into
        `examples/lstm.rnn`, say."""
        values = self._cell.params_of({k: v.detach().cpu() if isinstance(v, torch.Tensor) else v
                                       for k, v in weights.items()})
        with torch.no_grad():
            for name, v in zip(self.param_names, values):
                getattr(self, name).copy_(torch.from_numpy(v))

    def _params(self) -> list:
        return [getattr(self, n) for n in self.param_names]

    def _sync_key(self, params) -> tuple:
        """What identifies the parameters' values: each tensor and its
        version (an in-place update bumps it)."""
        return tuple((id(p), p._version, p.data_ptr()) for p in params)

    def _sync(self, params) -> None:
        """Hands the parameters' current values to the trainer when they
        changed since the last call (an optimizer's step, a load)."""
        key = self._sync_key(params)
        if key != self._synced:
            self._trainer.set_params(_arrays(params))
            self._synced = key

    def forward(self, x: Any, states: Optional[dict] = None):
        if isinstance(x, dict):
            missing = [n for n in self.input_names if n not in x]
            unknown = [n for n in x if n not in self.input_names]
            if missing or unknown:
                raise _cellc.ShapeError(
                    f"x: the cell's inputs are {self.input_names}; "
                    f"missing {missing}, unknown {unknown}")
            xs = [x[n] for n in self.input_names]
        else:
            if len(self.input_names) != 1:
                raise _cellc.ShapeError(
                    f"x: the cell has inputs {self.input_names}: pass a dict by name")
            xs = [x]
        xs = [torch.as_tensor(v, dtype=torch.float32) for v in xs]
        for name, v, n in zip(self.input_names, xs, self._inputs[1]):
            if v.dim() != 3 or v.shape[2] != n:
                raise _cellc.ShapeError(f"x `{name}`: shape {list(v.shape)}; expected [T, B, {n}]")
        steps, batch = int(xs[0].shape[0]), int(xs[0].shape[1])
        states = dict(states or {})
        unknown = [n for n in states if n not in self.state_names]
        if unknown:
            raise _cellc.ShapeError(f"states: {unknown} are not states of the cell ({self.state_names})")
        h0 = []
        for name, n in zip(self.state_names, self._states[1]):
            h = states.get(name)
            h0.append(torch.zeros(batch, n) if h is None else torch.as_tensor(h, dtype=torch.float32))
        out = _Steps.apply(self, steps, batch, *xs, *h0, *self._params())
        ys = out[:len(self.output_names)]
        finals = dict(zip(self.state_names, out[len(self.output_names):]))
        y = ys[0] if len(ys) == 1 else dict(zip(self.output_names, ys))
        return y, finals


class _Layers:
    """The training path of `cellc.from_torch(module)`: each layer and
    direction a compiled trainer of the module's cell, composed with torch
    operations (reversal, concatenation, dropout between layers), so that
    autograd carries the gradients to the module's own parameters.

    Each cell parameter is a differentiable gather from the module's
    parameters: the indices come from the cell's own bindings, read off a
    state_dict whose tensors hold their elements' positions (`params_of`),
    so whatever slices the bindings take, the gradients land where PyTorch
    keeps them."""

    def __init__(self, module, kind: str, proj: int, nonlinearity: str, threads):
        self.module = module
        self.spec = (kind, proj, nonlinearity, threads)
        self.cells = self._compile(ragged=False)
        self.ragged_cells = None

    def _compile(self, ragged: bool):
        module = self.module
        kind, proj, nonlinearity, threads = self.spec
        name, source, states = _cellc.torch_cell(kind, proj, nonlinearity)
        self.states = list(states)
        self.layers = int(module.num_layers)
        self.directions = 2 if module.bidirectional else 1
        self.names = [n for n, _ in module.named_parameters()]
        sizes = [p.numel() for _, p in module.named_parameters()]
        offsets = np.cumsum([0] + sizes)
        H = int(module.hidden_size)
        out = proj or H
        cells = []
        for layer in range(self.layers):
            X = int(module.input_size) if layer == 0 else out * self.directions
            row = []
            for d in range(self.directions):
                suffix = f"_l{layer}" + ("_reverse" if d else "")
                dims = {"X": X, "H": H}
                if proj:
                    dims["P"] = proj
                cell = _cellc.Cell.from_source(source, dims=dims, name=name)
                m = Cell.__new__(Cell)
                torch.nn.Module.__init__(m)
                trainer = _cellc.Trainer(cell, threads=threads, ragged=ragged)
                object.__setattr__(m, "_trainer", trainer)
                m._cell = cell
                m._inputs, m._states, m._outputs = trainer.inputs, trainer.states, trainer.outputs
                m.input_names, m.state_names = list(m._inputs[0]), list(m._states[0])
                m.output_names, m.param_names = list(m._outputs[0]), list(trainer.param_names)
                m._synced = None
                # The gathered tensors are new each call: the module's
                # parameters say whether their values changed.
                m._sync_key = lambda _params, mod=module: tuple(
                    (id(p), p._version, p.data_ptr()) for p in mod.parameters())
                # Each element's position + 1 (0: no tensor; a bias the
                # module lacks is zero), in two exact float32 halves.
                hi, lo = {}, {}
                for (pname, p), off in zip(module.named_parameters(), offsets):
                    if not pname.endswith(suffix):
                        continue
                    local = pname[: -len(suffix)] + "_l0"
                    pos = np.arange(off, off + p.numel(), dtype=np.int64).reshape(p.shape) + 1
                    hi[local] = (pos // 4096).astype(np.float32)
                    lo[local] = (pos % 4096).astype(np.float32)
                if "bias_ih_l0" not in hi:
                    # bias=False: zeros, position 0 (no tensor: no gradient).
                    rows = hi["weight_ih_l0"].shape[0]
                    for b in ("bias_ih_l0", "bias_hh_l0"):
                        hi[b] = lo[b] = np.zeros(rows, np.float32)
                index = [(h.astype(np.int64) * 4096 + l.astype(np.int64)) for h, l in
                         zip(cell.params_of(hi), cell.params_of(lo))]
                row.append((m, [torch.from_numpy(i) for i in index]))
            cells.append(row)
        return cells

    def params(self, index):
        flat = torch.cat([p.reshape(-1) for p in self.module.parameters()] + [
            next(self.module.parameters()).new_zeros(1)])
        # Position 0 (no tensor) reads the zero appended last.
        last = flat.shape[0] - 1
        return [flat[torch.where(i > 0, i - 1, torch.full_like(i, last))] for i in index]

    def __call__(self, x, h0, lengths=None):
        """`x` [T, B, X]; `h0` per state [D*L, B, n] or None; `lengths`
        each row's (None: all T). Returns `y` [T, B, D*out] (zeros past a
        row's length) and per state [D*L, B, n]."""
        T, B = int(x.shape[0]), int(x.shape[1])
        finals = {s: [] for s in self.states}
        cells = self.cells
        extra = []
        if lengths is not None:
            if self.ragged_cells is None:
                self.ragged_cells = self._compile(ragged=True)
            cells = self.ragged_cells
            lens = torch.as_tensor(lengths, dtype=torch.int64)
            t = torch.arange(T)[:, None]
            extra = [(t < lens[None, :]).to(torch.float32)[:, :, None]]
            # Each row reversed within its length (the reverse direction).
            order = torch.where(t < lens[None, :], lens[None, :] - 1 - t, t)
        inp = x
        for layer, row in enumerate(cells):
            outs = []
            for d, (m, index) in enumerate(row):
                k = layer * self.directions + d
                if d == 0:
                    seq = inp
                elif lengths is None:
                    seq = torch.flip(inp, [0])
                else:
                    seq = inp.gather(0, order[:, :, None].expand(-1, -1, inp.shape[2]))
                init = [h0[s][k] if h0 is not None else
                        torch.zeros(B, n) for s, n in zip(self.states, m._states[1])]
                res = _Steps.apply(m, T, B, seq, *extra, *init, *self.params(index))
                y = res[0]
                if d == 1:
                    y = (torch.flip(y, [0]) if lengths is None else
                         y.gather(0, order[:, :, None].expand(-1, -1, y.shape[2])))
                outs.append(y)
                for s, f in zip(self.states, res[1:]):
                    finals[s].append(f)
            inp = outs[0] if len(outs) == 1 else torch.cat(outs, dim=2)
            p = float(getattr(self.module, "dropout", 0.0) or 0.0)
            if p > 0 and layer + 1 < self.layers and self.module.training:
                inp = torch.nn.functional.dropout(inp, p, training=True)
        return inp, {s: torch.stack(v) for s, v in finals.items()}
