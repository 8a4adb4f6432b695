"""cellc with NumPy alone: what a user without PyTorch has.

python/tests/run.py runs this module in an environment without torch (and
sets CELLC_EXPECT_NO_TORCH), then again with everything else; nothing here
imports torch.
"""

import os
import pickle

import numpy as np
import pytest

import cellc
from conftest import CASES, EXAMPLES, assert_close, load, manifest

NO_TORCH = bool(os.environ.get("CELLC_EXPECT_NO_TORCH"))


@pytest.mark.skipif(not NO_TORCH, reason="runs in the NumPy-only environment")
def test_torch_is_absent_here():
    with pytest.raises(ImportError):
        import torch  # noqa: F401


@pytest.mark.skipif(not NO_TORCH, reason="runs in the NumPy-only environment")
def test_torch_features_say_what_to_install():
    with pytest.raises(ImportError, match="pip install torch"):
        cellc.from_torch(object())


def sigmoid(v):
    return 1.0 / (1.0 + np.exp(-v))


def numpy_lstm(w, xs, h, c):
    """PyTorch's nn.LSTM layer 0, in float64 NumPy: (ys, h, c)."""
    ys = []
    for x in xs:
        gates = x @ w["weight_ih_l0"].T + w["bias_ih_l0"] + h @ w["weight_hh_l0"].T + w["bias_hh_l0"]
        i, f, g, o = np.split(gates, 4, axis=1)
        c = sigmoid(f) * c + sigmoid(i) * np.tanh(g)
        h = sigmoid(o) * np.tanh(c)
        ys.append(h)
    return np.stack(ys), h, c


def numpy_gru(w, xs, h):
    ys = []
    for x in xs:
        gi = x @ w["weight_ih_l0"].T + w["bias_ih_l0"]
        gh = h @ w["weight_hh_l0"].T + w["bias_hh_l0"]
        ir, iz, inn = np.split(gi, 3, axis=1)
        hr, hz, hn = np.split(gh, 3, axis=1)
        r, z = sigmoid(ir + hr), sigmoid(iz + hz)
        n = np.tanh(inn + r * hn)
        h = (1 - z) * n + z * h
        ys.append(h)
    return np.stack(ys), h


def random_weights(rng, gates, X, H):
    s = 1.0 / np.sqrt(H)
    return {
        "weight_ih_l0": rng.uniform(-s, s, (gates * H, X)).astype(np.float32),
        "weight_hh_l0": rng.uniform(-s, s, (gates * H, H)).astype(np.float32),
        "bias_ih_l0": rng.uniform(-s, s, gates * H).astype(np.float32),
        "bias_hh_l0": rng.uniform(-s, s, gates * H).astype(np.float32),
    }


@pytest.mark.parametrize("X,H,B,T", [(3, 5, 1, 4), (7, 11, 3, 6), (64, 128, 5, 9), (33, 70, 8, 3)])
@pytest.mark.parametrize("plan", [None, "streaming", "hoisted"])
def test_lstm_matches_a_numpy_reference(rng, X, H, B, T, plan):
    w = random_weights(rng, 4, X, H)
    xs = rng.standard_normal((T, B, X)).astype(np.float32)
    h0 = (rng.standard_normal((B, H)) * 0.5).astype(np.float32)
    c0 = (rng.standard_normal((B, H)) * 0.5).astype(np.float32)
    k = cellc.Cell(str(EXAMPLES / "lstm.rnn"), dims={"X": X, "H": H}).compile(w, plan=plan)
    state = k.new_state(B)
    state.set("h", h0)
    state.set("c", c0)
    ys = k.run(xs, state)
    want_ys, want_h, want_c = numpy_lstm({n: a.astype(np.float64) for n, a in w.items()}, xs, h0, c0)
    assert isinstance(ys, np.ndarray) and ys.dtype == np.float32
    assert_close(ys, want_ys, "y")
    assert_close(state.get("h"), want_h, "h")
    assert_close(state.get("c"), want_c, "c")
    assert state.steps == T


@pytest.mark.parametrize("X,H,B,T", [(7, 11, 3, 6), (40, 96, 2, 5)])
def test_gru_steps_match_a_numpy_reference(rng, X, H, B, T):
    """Step by step, reading `y` after each: the per-step path."""
    w = random_weights(rng, 3, X, H)
    xs = rng.standard_normal((T, B, X)).astype(np.float32)
    k = cellc.Cell(str(EXAMPLES / "gru.rnn")).compile(w)  # sizes from the weights
    state = k.new_state(B)
    got = []
    for x in xs:
        k.step(x, state)
        got.append(k.output(state, "y"))
        assert_close(k.output(state), got[-1], "output() is the only output")
    want_ys, want_h = numpy_gru({n: a.astype(np.float64) for n, a in w.items()}, xs, np.zeros((B, H)))
    assert_close(np.stack(got), want_ys, "y")
    assert_close(state.get("h"), want_h, "h")


@pytest.mark.parametrize("case", [c["case"] for c in manifest("manifest.json")["cases"]])
def test_example_cells_match_their_pytorch_references(case):
    """Every cell of examples/ against the PyTorch module it reproduces
    (tests/conformance/gen.py: nn.LSTM, nn.GRU, nn.RNN, their Cell forms,
    layer-norm LSTM and GRU, peephole LSTM, IndRNN, SRU...), from NumPy."""
    entry = next(c for c in manifest("manifest.json")["cases"] if c["case"] == case)
    weights, inputs, expected = load(case, "weights"), load(case, "inputs"), load(case, "expected")
    k = cellc.Cell(str(EXAMPLES / entry["cell"])).compile(weights)
    xs = inputs.pop("x")
    state = k.new_state(xs.shape[1])
    for name, value in inputs.items():
        state.set(name, value)
    out = k.run(xs, state)
    outs = out if isinstance(out, dict) else {k.output_names[0]: out}
    for name, want in expected.items():
        got = outs[name] if name in outs and want.ndim == 3 else state.get(name)
        assert_close(got, want, f"{case}: {name}")


def test_onnx_models_run_from_numpy():
    for entry in manifest("manifest.json")["onnx_cases"]:
        case = entry["case"]
        m = cellc.load_onnx(CASES / f"{case}.onnx")
        out = m.run(load(case, "inputs"))
        for name, want in load(case, "expected").items():
            assert isinstance(out[name], np.ndarray)
            assert_close(out[name], want, f"{case}: {name}")


def test_a_kernel_pickles_without_torch(rng):
    w = random_weights(rng, 3, 5, 6)
    k = cellc.Cell(str(EXAMPLES / "gru.rnn")).compile(w)
    k2 = pickle.loads(pickle.dumps(k))
    xs = rng.standard_normal((4, 2, 5)).astype(np.float32)
    a, b = k.new_state(2), k2.new_state(2)
    assert np.array_equal(k.run(xs, a), k2.run(xs, b))


def test_the_type_stubs_describe_the_extension():
    """python/cellc/_cellc.pyi names every public class, method and function
    of the extension, and nothing it lacks; everything public has a docstring."""
    import ast
    from pathlib import Path

    stub = ast.parse((Path(cellc.__file__).parent / "_cellc.pyi").read_text())
    declared = {}
    for node in stub.body:
        if isinstance(node, ast.ClassDef):
            declared[node.name] = {n.name for n in node.body if isinstance(n, ast.FunctionDef)}
        elif isinstance(node, ast.FunctionDef):
            declared[node.name] = None
    ext = cellc._cellc
    public = {n for n in dir(ext) if not n.startswith("__")}
    assert public - {"ArrayLike", "Array", "Inputs"} == set(declared) - {"ArrayLike", "Array", "Inputs"}
    for name, methods in declared.items():
        obj = getattr(ext, name)
        if not name.startswith("_"):
            assert obj.__doc__, f"{name} has no docstring"
        if methods is None:
            continue
        have = {m for m in dir(obj) if not m.startswith("_")}
        if not issubclass(obj, Exception):
            assert have == methods - {"__init__"}, f"{name}: {have ^ (methods - {'__init__'})}"
            for m in have:
                assert getattr(obj, m).__doc__, f"{name}.{m} has no docstring"
