"""What goes wrong from Python: every error is a `cellc.Error` of its kind
with the rendered message, and nothing reachable crashes the interpreter
(wrong shapes, a state of another kernel or batch, huge sizes, NaN, arrays
of the wrong kind)."""

import numpy as np
import pytest
import torch

import cellc
from conftest import EXAMPLES

LSTM = str(EXAMPLES / "lstm.rnn")


def lstm_weights(X, H, rng):
    return {
        "weight_ih_l0": rng.standard_normal((4 * H, X)).astype(np.float32) * 0.1,
        "weight_hh_l0": rng.standard_normal((4 * H, H)).astype(np.float32) * 0.1,
        "bias_ih_l0": np.zeros(4 * H, np.float32),
        "bias_hh_l0": np.zeros(4 * H, np.float32),
    }


@pytest.fixture
def kernel(rng):
    return cellc.Cell(LSTM, dims={"X": 3, "H": 4}).compile(lstm_weights(3, 4, rng))


def test_every_kind_is_a_subclass_of_error():
    kinds = [cellc.SourceError, cellc.FileError, cellc.WeightsError, cellc.ModelError,
             cellc.ShapeError, cellc.TooLargeError, cellc.OptionsError, cellc.InternalError]
    for k in kinds:
        assert issubclass(k, cellc.Error) and issubclass(k, Exception)
        assert k.__doc__
    assert len(set(kinds)) == len(kinds)


def test_a_source_error_has_the_place_a_caret_and_a_hint():
    src = "cell bad\ndim X = 4\ninput x: [X]\nstate h: [X]\noutput y: [X]\nh' = tanh(x + q)\ny = h'\n"
    with pytest.raises(cellc.SourceError) as e:
        cellc.Cell.from_source(src, name="bad.rnn")
    text = str(e.value)
    assert "bad.rnn:6:" in text, text
    assert "^" in text and "`q`" in text, text
    with pytest.raises(cellc.SourceError, match="help|hint|did you mean"):
        cellc.Cell.from_source(src.replace("tanh", "tahn"), name="bad.rnn")


def test_files_weights_shapes_and_options(kernel, rng, tmp_path):
    with pytest.raises(cellc.FileError, match="missing.rnn"):
        cellc.Cell(str(tmp_path / "missing.rnn"))
    cell = cellc.Cell(LSTM, dims={"X": 3, "H": 4})
    w = lstm_weights(3, 4, rng)
    with pytest.raises(cellc.WeightsError, match="bias_hh_l0"):
        cell.compile({k: v for k, v in w.items() if k != "bias_hh_l0"})
    with pytest.raises(cellc.WeightsError, match="weight_hh_l0"):
        cell.compile({**w, "weight_hh_l0": np.zeros((16, 5), np.float32)})
    with pytest.raises(cellc.WeightsError):
        cell.compile([1, 2, 3])
    with pytest.raises(cellc.OptionsError, match="precision `f16`"):
        cell.compile(w, precision="f16")
    with pytest.raises(cellc.OptionsError, match="plan `fast`"):
        cell.compile(w, plan="fast")
    with pytest.raises(cellc.OptionsError, match="isa `sse9`"):
        cell.compile(w, isa="sse9")
    with pytest.raises(cellc.OptionsError, match="`X` is -1"):
        cellc.Cell(LSTM, dims={"X": -1})
    with pytest.raises(cellc.Error, match="threads"):
        cell.compile(w, threads=cellc.max_threads() + 1)
    state = kernel.new_state(2)
    with pytest.raises(cellc.ShapeError, match=r"shape \[2, 5\]"):
        kernel.step(np.zeros((2, 5), np.float32), state)
    with pytest.raises(cellc.ShapeError, match=r"\[2, 3\]"):
        kernel.step(np.zeros((3, 3), np.float32), state)  # batch 3, state for 2
    with pytest.raises(cellc.ShapeError, match=r"\[T, B, len\]"):
        kernel.run(np.zeros((2, 3), np.float32), state)
    with pytest.raises(cellc.ShapeError, match="no state named `z`"):
        state.set("z", np.zeros((2, 4), np.float32))
    with pytest.raises(cellc.ShapeError, match=r"state `h`: shape \[2, 3\]"):
        state.set("h", np.zeros((2, 3), np.float32))
    with pytest.raises(cellc.ShapeError, match="not an input"):
        kernel.step({"q": np.zeros((2, 3), np.float32)}, state)
    with pytest.raises(cellc.Error, match="no output"):
        kernel.output(state, "q")
    assert state.steps == 0  # nothing above ran a step


def test_arrays_that_cannot_be_read_name_the_argument(kernel):
    state = kernel.new_state(2)
    with pytest.raises(cellc.ShapeError, match="complex"):
        kernel.step(np.zeros((2, 3), np.complex64), state)
    with pytest.raises(cellc.ShapeError, match="complex"):
        kernel.step(torch.zeros(2, 3, dtype=torch.complex64), state)
    with pytest.raises(cellc.ShapeError, match="x is not an array of numbers"):
        kernel.step([["a", "b", "c"], ["d", "e", "f"]], state)
    with pytest.raises(cellc.ShapeError, match="x is not an array of numbers"):
        kernel.step(object(), state)
    with pytest.raises(cellc.ShapeError, match="tensor on `meta`"):
        kernel.step(torch.zeros(2, 3, device="meta"), state)
    with pytest.raises(cellc.ShapeError, match=r"\[B, len\]"):
        kernel.step(np.float32(1.0), state)  # rank 0
    # Lists of numbers and integers are converted.
    kernel.step([[1, 2, 3], [4, 5, 6]], state)
    assert state.steps == 1


def test_states_of_another_kernel_or_batch_are_refused(kernel, rng):
    other = cellc.Cell(LSTM, dims={"X": 3, "H": 4}).compile(lstm_weights(3, 4, rng))
    theirs = other.new_state(2)
    with pytest.raises(cellc.ShapeError, match="another kernel|other kernel"):
        kernel.step(np.zeros((2, 3), np.float32), theirs)
    with pytest.raises(cellc.Error):
        kernel.output(theirs, "y")
    with pytest.raises(TypeError):
        kernel.step(np.zeros((2, 3), np.float32), "not a state")


def test_huge_sizes_are_errors_not_crashes(kernel, rng):
    with pytest.raises(cellc.TooLargeError):
        kernel.new_state(1 << 60)
    with pytest.raises(cellc.TooLargeError):
        kernel.new_state(1 << 40)
    with pytest.raises((cellc.TooLargeError, cellc.SourceError)):
        cellc.Cell(LSTM, dims={"X": 1 << 40, "H": 1 << 40})
    with pytest.raises(OverflowError):
        kernel.new_state(-1)
    with pytest.raises(cellc.Error):
        kernel.new_state(0)


def test_nan_and_infinity_flow_through_and_do_not_crash(kernel):
    state = kernel.new_state(2)
    x = np.array([[np.nan, 0, 0], [np.inf, -np.inf, 1]], np.float32)
    kernel.step(x, state)
    y = kernel.output(state, "y")
    assert np.isnan(y[0]).all()
    kernel.step(np.zeros((2, 3), np.float32), state)
    assert np.isnan(kernel.output(state, "y")[0]).all()  # the state carries it


def test_network_errors():
    net = cellc.from_torch(torch.nn.GRU(4, 5, num_layers=2))
    with pytest.raises(cellc.ShapeError, match="input: shape"):
        net(np.zeros((2, 4), np.float32)[None, None])
    with pytest.raises(cellc.ShapeError):
        net(np.zeros((3, 2, 4), np.float32), np.zeros((1, 2, 5), np.float32))  # 1 of 2 layers
    with pytest.raises(cellc.WeightsError):
        cellc._cellc.Network.from_checkpoint(
            open(EXAMPLES / "gru.rnn").read(), {"weight_ih_l0": np.zeros((15, 4), np.float32)})
