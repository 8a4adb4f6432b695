"""Type stubs of cellc's compiled extension (python/src/lib.rs). Users import
these names from `cellc`; `Network` and `OnnxModel` here are the raw forms
that `cellc.from_torch` and `cellc.load_onnx` wrap."""

from os import PathLike
from typing import Any, Mapping, Optional, Sequence, Union

__version__: str

# Anything cellc reads as float32 values: a NumPy array (read in place when
# float32 and C-contiguous, converted once otherwise), a torch CPU tensor,
# or nested sequences of numbers.
ArrayLike = Any
# What cellc returns: a NumPy float32 array, or a torch tensor when the
# input came as one.
Array = Any
Inputs = Union[ArrayLike, Mapping[str, ArrayLike], Sequence[ArrayLike]]

class Error(Exception):
    """Every error cellc raises: a subclass per kind, with the rendered message."""

class SourceError(Error):
    """A `.rnn` source with mistakes."""

class FileError(Error):
    """A file that cannot be read or written."""

class WeightsError(Error):
    """A weight that is missing, of the wrong shape or type, or a checkpoint of another module."""

class ModelError(Error):
    """An ONNX model cellc does not understand."""

class ShapeError(Error):
    """An input, output or state of the wrong shape, type or kind; a state of another kernel."""

class TooLargeError(Error):
    """Sizes that do not fit in memory or exceed cellc's limits."""

class OptionsError(Error):
    """Options that cannot hold."""

class InternalError(Error):
    """A bug in cellc: please report it."""

class Cell:
    """A `.rnn` cell, parsed and checked, its sizes bound."""

    def __init__(self, path: Union[str, PathLike[str]], dims: Optional[Mapping[str, int]] = None) -> None: ...
    @staticmethod
    def from_source(text: str, dims: Optional[Mapping[str, int]] = None, name: str = "cell.rnn") -> Cell: ...
    @property
    def name(self) -> str: ...
    @property
    def dims(self) -> dict[str, int]: ...
    def dim_names(self) -> list[str]: ...
    def ir(self, optimized: bool = False) -> str: ...
    def params_of(self, weights: Mapping[str, ArrayLike]) -> list[Array]: ...
    def warnings(self) -> str: ...
    def compile(
        self,
        weights: Mapping[str, ArrayLike],
        precision: Optional[str] = None,
        threads: Optional[int] = None,
        plan: Optional[str] = None,
        isa: Optional[str] = None,
        optimize: bool = True,
        compute: Optional[str] = None,
    ) -> Kernel: ...

class Kernel:
    """A compiled cell: native code and packed weights, shared by any number of threads."""

    def new_state(self, batch: int) -> State: ...
    def step(self, x: Inputs, state: State) -> None: ...
    def output(self, state: State, name: Optional[str] = None) -> Array: ...
    def run(self, xs: Inputs, state: State) -> Union[Array, dict[str, Array]]: ...
    @property
    def name(self) -> str: ...
    @property
    def input_names(self) -> list[str]: ...
    @property
    def state_names(self) -> list[str]: ...
    @property
    def output_names(self) -> list[str]: ...
    @property
    def input_lens(self) -> list[tuple[str, int]]: ...
    @property
    def state_lens(self) -> list[tuple[str, int]]: ...
    @property
    def output_lens(self) -> list[tuple[str, int]]: ...
    def choice(self, batch: int, seq: int) -> tuple[str, int, float]: ...

class State:
    """One caller's state of a kernel, for `batch` rows."""

    @property
    def batch(self) -> int: ...
    @property
    def steps(self) -> int: ...
    @property
    def names(self) -> list[str]: ...
    def get(self, name: str) -> Array: ...
    def set(self, name: str, value: ArrayLike) -> None: ...

class Network:
    """A network of a cell (layers, one direction or both) compiled from a checkpoint."""

    @staticmethod
    def from_checkpoint(
        source: str,
        weights: Mapping[str, ArrayLike],
        name: str = "cell.rnn",
        precision: Optional[str] = None,
        threads: Optional[int] = None,
        plan: Optional[str] = None,
        isa: Optional[str] = None,
        optimize: bool = True,
        compute: Optional[str] = None,
    ) -> Network: ...
    @property
    def layout(self) -> tuple[int, bool]: ...
    @property
    def input_size(self) -> int: ...
    @property
    def output_size(self) -> int: ...
    @property
    def state_names(self) -> list[str]: ...
    @property
    def state_lens(self) -> list[list[int]]: ...
    def run(
        self,
        x: ArrayLike,
        lengths: Optional[Sequence[int]] = None,
        initial: Optional[Mapping[str, ArrayLike]] = None,
    ) -> tuple[Array, dict[str, Array]]: ...

class OnnxModel:
    """An ONNX model's LSTM or GRU stack, imported."""

    def __init__(
        self,
        path: Union[str, PathLike[str]],
        precision: Optional[str] = None,
        threads: Optional[int] = None,
        isa: Optional[str] = None,
    ) -> None: ...
    @property
    def input_names(self) -> list[str]: ...
    @property
    def batch_first(self) -> bool: ...
    @property
    def state_names(self) -> list[str]: ...
    def run(self, inputs: Mapping[str, ArrayLike]) -> dict[str, Array]: ...

class Trainer:
    """A cell compiled for training: the forward pass with its tape, the backward pass through time."""

    def __init__(
        self,
        cell: Cell,
        params: Optional[Sequence[ArrayLike]] = None,
        threads: Optional[int] = None,
        ragged: bool = False,
    ) -> None: ...
    @property
    def param_names(self) -> list[str]: ...
    @property
    def param_shapes(self) -> list[list[int]]: ...
    @property
    def inputs(self) -> tuple[list[str], list[int]]: ...
    @property
    def states(self) -> tuple[list[str], list[int]]: ...
    @property
    def outputs(self) -> tuple[list[str], list[int]]: ...
    def set_params(self, params: Sequence[ArrayLike]) -> None: ...
    def forward(
        self, xs: Sequence[ArrayLike], h0: Sequence[ArrayLike], steps: int, batch: int
    ) -> tuple[list[Array], list[Array], Tape]: ...
    def backward(
        self,
        tape: Tape,
        d_outputs: Sequence[ArrayLike],
        d_final: Sequence[ArrayLike],
        inputs: bool = True,
    ) -> tuple[list[Array], list[Array], list[Array]]: ...

class Tape:
    """What `Trainer.forward` keeps for `Trainer.backward`."""

    @property
    def steps(self) -> int: ...
    @property
    def batch(self) -> int: ...

def copies() -> int: ...
def max_threads() -> int: ...
def torch_cell(class_name: str, proj_size: int = 0, nonlinearity: str = "tanh") -> tuple[str, str, list[str]]: ...
def _kernel(*args: Any) -> Kernel: ...
def _network(*args: Any) -> Network: ...
def _onnx_model(*args: Any) -> OnnxModel: ...
