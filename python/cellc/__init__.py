"""cellc: a compiler for recurrent-network cells, from Python.

A cell (an LSTM, a GRU, or one you write in cellc's small `.rnn` language)
is compiled to native code whose matrix products are fused and whose
element-wise epilogue is one pass; it runs on NumPy arrays and PyTorch CPU
tensors, with the GIL released.

Three ways in:

    import cellc
    net = cellc.from_torch(torch.nn.LSTM(64, 128, num_layers=2))  # a PyTorch module
    y, (h_n, c_n) = net(x)                                       # its own signature

    cell = cellc.Cell("examples/layernorm_lstm.rnn", dims={"X": 64, "H": 128})
    k = cell.compile(weights)                      # a dict of arrays, or a state_dict
    state = k.new_state(batch); k.step(x, state); y = k.output(state, "y")

    m = cellc.load_onnx("model.onnx")              # an ONNX LSTM or GRU stack
    y, h_n = m(x)

Errors are `cellc.Error` and its subclasses, one per kind. Compiled objects
pickle (unpickling compiles again), so they go to `multiprocessing` workers
and distributed engines such as Ray. `docs/python.md` has the whole story.
"""

from __future__ import annotations

from typing import Any, Optional

import numpy as np

from . import _cellc
from ._cellc import (
    Cell,
    Error,
    FileError,
    InternalError,
    Kernel,
    ModelError,
    OptionsError,
    ShapeError,
    SourceError,
    State,
    TooLargeError,
    WeightsError,
    copies,
    max_threads,
)

__version__ = _cellc.__version__

__all__ = [
    "Cell",
    "Kernel",
    "State",
    "Network",
    "OnnxNetwork",
    "from_torch",
    "load_onnx",
    "Error",
    "SourceError",
    "FileError",
    "WeightsError",
    "ModelError",
    "ShapeError",
    "TooLargeError",
    "OptionsError",
    "InternalError",
    "copies",
    "max_threads",
]


def __getattr__(name: str) -> Any:
    """`cellc.torch` (training cells from PyTorch) imports PyTorch: loaded
    on first use, so that `import cellc` works without it."""
    if name == "torch":
        import importlib
        return importlib.import_module(".torch", __name__)
    raise AttributeError(f"module 'cellc' has no attribute {name!r}")


def _torch():
    """PyTorch, or an error that says what to install."""
    try:
        import torch
    except ImportError as e:  # pragma: no cover - exercised without torch
        raise ImportError(
            "this needs PyTorch, which is not installed: `pip install torch` "
            "(or `pip install cellc[torch]`)"
        ) from e
    return torch


def _is_tensor(x: Any) -> bool:
    t = type(x)
    return t.__module__.startswith("torch") and t.__name__ == "Tensor"


def _is_packed(x: Any) -> bool:
    return type(x).__name__ == "PackedSequence" and type(x).__module__.startswith("torch")


class Network:
    """A PyTorch recurrent module (`nn.LSTM`, `nn.GRU`, `nn.RNN`) compiled by
    cellc, called as the module is: `y, h_n = net(x)`, `y, (h_n, c_n) =
    net(x, (h0, c0))` for an LSTM, with the module's shapes (`batch_first`,
    unbatched 2-D inputs, `PackedSequence` in and out). Tensors in give
    tensors out; NumPy arrays in give NumPy arrays out.

    Made by `cellc.from_torch(module)`. With the module in training mode
    (`module.train()`, a new module's mode) and grad mode on, it is
    differentiable with respect to the module's own parameters (their
    current values, dropout between layers applied), the input and `hx`, so
    that `model.rnn = cellc.from_torch(model.rnn)` trains with any optimizer
    (`cellc.torch`; `PackedSequence` in and out too). Otherwise
    (`module.eval()`, `torch.no_grad()`, nothing requiring a gradient) it
    runs the weights the module had when it was called (a later change is
    not seen: call it again), dropout ignored. The object is shared by any
    number of threads, and pickles.
    """

    def __init__(self, network: "_cellc.Network", kind: str, states: list[str],
                 batch_first: bool, hidden_size: int, proj_size: int, module: Any = None,
                 nonlinearity: str = "tanh", threads: Optional[int] = None):
        self._net = network
        self._module = module
        self._nonlinearity = nonlinearity
        self._threads = threads
        self._train = None
        self.kind = kind
        self.state_names = list(states)
        self.batch_first = batch_first
        self.hidden_size = hidden_size
        self.proj_size = proj_size
        self.num_layers, self.bidirectional = network.layout
        self.input_size = network.input_size

    def __repr__(self) -> str:
        return (f"cellc.Network({self.kind}, input_size={self.input_size}, "
                f"hidden_size={self.hidden_size}, num_layers={self.num_layers}, "
                f"bidirectional={self.bidirectional}, batch_first={self.batch_first})")

    def _directions(self) -> int:
        return 2 if self.bidirectional else 1

    def _hx(self, hx: Any) -> list:
        """The initial states given, one per state, or an error."""
        given = list(hx if isinstance(hx, (tuple, list)) else (hx,))
        if len(given) != len(self.state_names):
            raise ShapeError(
                f"hx: {len(given)} tensors; {self.kind} takes "
                f"{'(h_0, c_0)' if len(self.state_names) == 2 else 'h_0'}")
        return given

    def _finals(self, states: dict) -> Any:
        """The final states as the module returns them: `h_n`, or `(h_n, c_n)`."""
        finals = [states[n] for n in self.state_names]
        return (finals[0], finals[1]) if len(finals) == 2 else finals[0]

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state["_train"] = None  # compiled again when needed
        return state

    def _differentiable(self, x: Any, hx: Any) -> bool:
        """Whether this call must carry gradients: the module in training
        mode, grad mode on, and the module's parameters, the input or `hx`
        requiring them."""
        if self._module is None or not self._module.training:
            return False
        if not _is_tensor(x) and not _is_packed(x):
            return False
        torch = _torch()
        if not torch.is_grad_enabled():
            return False
        given = [] if hx is None else list(hx if isinstance(hx, (tuple, list)) else (hx,))
        tensors = list(self._module.parameters()) + [x if _is_tensor(x) else x.data] + given
        return any(getattr(t, "requires_grad", False) for t in tensors)

    def __call__(self, input: Any, hx: Any = None) -> tuple[Any, Any]:
        """Runs the network as the module's `forward(input, hx)` does."""
        if self._differentiable(input, hx):
            return self._call_training(input, hx)
        lengths = None
        packed = _is_packed(input)
        if packed:
            torch = _torch()
            pad = torch.nn.utils.rnn.pad_packed_sequence
            padded, lens = pad(input, batch_first=False)
            x = padded
            lengths = [int(n) for n in lens]
            batch_first = False
        else:
            x = input
            batch_first = self.batch_first
        tensor = _is_tensor(x)
        unbatched = len(x.shape) == 2
        if len(x.shape) not in (2, 3):
            raise ShapeError(
                f"input: shape {list(x.shape)}; expected "
                f"{'[B, T, X]' if batch_first else '[T, B, X]'} or [T, X] with X = {self.input_size}")
        if unbatched:
            x = x[:, None, :]
        elif batch_first:
            x = x.transpose(0, 1) if tensor else np.swapaxes(x, 0, 1)
        batch = x.shape[1]
        initial = None
        if hx is not None:
            given = self._hx(hx)
            initial = {}
            for name, h in zip(self.state_names, given):
                if unbatched:
                    if len(h.shape) != 2:
                        raise ShapeError(f"hx ({name}): shape {list(h.shape)}; an unbatched input takes [D*L, H]")
                    h = h[:, None, :]
                initial[name] = h
        y, states = self._net.run(x, lengths, initial)
        if unbatched:
            y = y[:, 0, :]
            states = {k: v[:, 0, :] for k, v in states.items()}
        elif batch_first:
            y = y.transpose(0, 1) if _is_tensor(y) else np.swapaxes(y, 0, 1)
        if packed:
            y = _repack(y, lengths, input)
        return y, self._finals(states)

    forward = __call__

    def _call_training(self, input: Any, hx: Any) -> tuple[Any, Any]:
        """The differentiable path (`cellc.torch`)."""
        from . import torch as ct
        torch = _torch()
        if self._train is None:
            self._train = ct._Layers(self._module, self.kind, self.proj_size,
                                     self._nonlinearity, self._threads)
        lengths = None
        packed = _is_packed(input)
        if packed:
            x, lens = torch.nn.utils.rnn.pad_packed_sequence(input, batch_first=False)
            lengths = [int(n) for n in lens]
        else:
            x = input
        unbatched = len(x.shape) == 2
        if len(x.shape) not in (2, 3):
            raise ShapeError(f"input: shape {list(x.shape)}; expected 3-D, or [T, X] unbatched")
        if unbatched:
            x = x[:, None, :]
        elif self.batch_first and not packed:
            x = x.transpose(0, 1)
        h0 = None
        if hx is not None:
            given = self._hx(hx)
            h0 = {n: (h[:, None, :] if unbatched else h).to(torch.float32)
                  for n, h in zip(self.state_names, given)}
        y, finals = self._train(x.to(torch.float32), h0, lengths)
        if packed:
            y = _repack(y, lengths, input)
        elif unbatched:
            y = y[:, 0, :]
            finals = {k: v[:, 0, :] for k, v in finals.items()}
        elif self.batch_first:
            y = y.transpose(0, 1)
        return y, self._finals(finals)


def _repack(y: Any, lengths: list[int], like: Any) -> Any:
    """`y` [T, B, ...] (rows in the caller's order) packed as `like` is: the
    same batch sizes and the same row order, so `y.data` lines up with the
    input's `data` as PyTorch's own output does."""
    torch = _torch()
    rnn = torch.nn.utils.rnn
    if not _is_tensor(y):
        y = torch.from_numpy(y)
    lens = torch.tensor(lengths, dtype=torch.int64)
    order = like.sorted_indices
    if order is not None:
        y = y.index_select(1, order.to(y.device))
        lens = lens.index_select(0, order.cpu())
    packed = rnn.pack_padded_sequence(y, lens, enforce_sorted=True)
    return rnn.PackedSequence(packed.data, packed.batch_sizes, like.sorted_indices,
                              like.unsorted_indices)


def _module_kind(module: Any) -> tuple[str, int, str]:
    torch = _torch()
    nn = torch.nn
    if isinstance(module, nn.LSTM):
        return "LSTM", int(getattr(module, "proj_size", 0) or 0), "tanh"
    if isinstance(module, nn.GRU):
        return "GRU", 0, "tanh"
    if isinstance(module, nn.RNN):
        return "RNN", 0, module.nonlinearity
    raise OptionsError(
        f"cellc.from_torch takes nn.LSTM, nn.GRU and nn.RNN, not {type(module).__name__}; "
        "for another cell, write it as a .rnn file and use cellc.Cell")


def from_torch(module: Any, precision: Optional[str] = None, threads: Optional[int] = None,
               plan: Optional[str] = None, compute: Optional[str] = None) -> Network:
    """Compiles a PyTorch `nn.LSTM`, `nn.GRU` or `nn.RNN` (any `num_layers`,
    `bidirectional`, `batch_first`, `proj_size`, `bias`) with its current
    weights; returns a `cellc.Network` called as the module is.

    `precision`: how the matrices are stored (`"f32"`, `"bf16"`, `"int8"`);
    `threads`: at most this many (default: chosen per call); `plan`: the
    sequence plan (default: chosen per call); `compute`: `"f32"` (default) or
    `"bf16"` (bf16 weights and inputs, float32 sums; AMX tiles for the input
    projection where the CPU has them; inference only).
    """
    kind, proj, nonlinearity = _module_kind(module)
    name, source, states = _cellc.torch_cell(kind, proj, nonlinearity)
    weights = {k: v.detach().cpu() for k, v in module.state_dict().items()}
    net = _cellc.Network.from_checkpoint(
        source, weights, name=name, precision=precision, threads=threads, plan=plan,
        compute=compute)
    return Network(net, kind, states, bool(module.batch_first), int(module.hidden_size), proj,
                   module=module, nonlinearity=nonlinearity, threads=threads)


class OnnxNetwork:
    """An ONNX model's LSTM or GRU stack (the models `cellc run` takes),
    called as a PyTorch module is: `y, h_n = m(x)`, `y, (h_n, c_n) = m(x,
    (h0, c0))`, with `lengths=` for a model that takes each row's length.
    Run as ONNX Runtime runs it (its own layout, every graph input required).
    """

    def __init__(self, model: "_cellc.OnnxModel"):
        self._model = model
        self.input_names = model.input_names
        self.state_names = model.state_names
        self.batch_first = model.batch_first

    def __repr__(self) -> str:
        return f"cellc.OnnxNetwork(inputs={self.input_names})"

    def run(self, inputs: dict) -> dict:
        """Runs the model on a dict of inputs by the model's names (or cellc's:
        `x`, `lengths`, `h`, `c`); returns `y` and the final states by name."""
        return self._model.run(inputs)

    def __call__(self, x: Any, hx: Any = None, lengths: Any = None) -> tuple[Any, Any]:
        inputs = {"x": x}
        if hx is not None:
            given = hx if isinstance(hx, (tuple, list)) else (hx,)
            for name, h in zip(self.state_names, given):
                inputs[name] = h
        if lengths is not None:
            inputs["lengths"] = lengths
        out = self._model.run(inputs)
        finals = [out[n] for n in self.state_names]
        if len(finals) == 2:
            return out["y"], (finals[0], finals[1])
        return out["y"], finals[0]

    forward = __call__


def load_onnx(path: str, precision: Optional[str] = None, threads: Optional[int] = None) -> OnnxNetwork:
    """Reads an ONNX model with an LSTM or GRU stack (and its external data
    beside it): an `OnnxNetwork`, called as a PyTorch module is."""
    return OnnxNetwork(_cellc.OnnxModel(str(path), precision=precision, threads=threads))
