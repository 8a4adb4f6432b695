"""`cellc.load_onnx` against ONNX Runtime, run here on the same inputs: the
one-node models (LSTM with and without peepholes, GRU both ways round),
stacked and bidirectional graphs with sequence lengths, the models both
PyTorch exporters write (external data, batch-first, (h0, c0) inputs, a row
of length 0), and a dynamically quantized model; then what is refused."""

import pickle

import numpy as np
import onnxruntime as ort
import pytest
import torch

import cellc
from conftest import CASES, assert_close, load, manifest
from safetensors.numpy import load_file

EXPORTS = CASES / "exports"


def models():
    out = [(CASES, c["case"]) for c in manifest("manifest.json")["onnx_cases"]]
    out += [(CASES, c) for c in manifest("onnx_networks.json")["accepted"]]
    out += [(EXPORTS, c) for c in manifest("onnx_exports.json")["accepted"]]
    return out


def feeds(session, model, inputs):
    """ONNX Runtime's inputs: each graph input, from the case's tensors under
    the model's name or cellc's (`x`, `lengths`, `h`, `c`)."""
    x = inputs.get(model.input_names[0], inputs.get("x"))
    batch = x.shape[0] if model.batch_first else x.shape[1]
    states = iter(model.state_names)
    out = {}
    for i, arg in enumerate(session.get_inputs()):
        if arg.name in inputs:
            v = inputs[arg.name]
        elif i == 0:
            v = x
        elif "int" in arg.type:
            v = inputs["lengths"]
        else:
            v = inputs[next(states)]
            v = v.reshape(-1, batch, v.shape[-1])  # [B, H] -> [1, B, H]
        if "int32" in arg.type:
            v = v.astype(np.int32)
        elif "int64" in arg.type:
            v = v.astype(np.int64)
        out[arg.name] = v
    return out


def as_cellc(ort_out, like):
    """ONNX Runtime's output in cellc's layout: Y [T, D, B, H] -> [T, B, D*H];
    states reshaped."""
    if ort_out.shape == like.shape:
        return ort_out
    if ort_out.ndim == 4:
        t, d, b, h = ort_out.shape
        return ort_out.transpose(0, 2, 1, 3).reshape(t, b, d * h)
    return ort_out.reshape(like.shape)


@pytest.mark.parametrize("where,case", models(), ids=[c for _, c in models()])
def test_models_match_onnx_runtime(where, case):
    path = where / f"{case}.onnx"
    inputs = load_file(str(where / f"{case}.inputs.safetensors"))
    m = cellc.load_onnx(path)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    want = session.run(None, feeds(session, m, inputs))
    got = m.run(inputs)
    names = ["y"] + m.state_names
    for name, w in zip(names, want):
        assert_close(got[name], as_cellc(w, got[name]), f"{case}: {name}")
    # The committed outputs (ONNX Runtime's when the case was made) agree too.
    for name, w in load_file(str(where / f"{case}.expected.safetensors")).items():
        assert_close(got[name], w, f"{case}: {name} (committed)")


def test_the_module_signature_and_tensors():
    case = "onnxnet_lstm_bi_lens"
    inputs = load(case, "inputs")
    m = cellc.load_onnx(CASES / f"{case}.onnx")
    assert m.state_names == ["h", "c"]
    y, (h, c) = m(inputs["x"], (inputs["h"], inputs["c"]), lengths=inputs["lengths"])
    want = load(case, "expected")
    assert_close(y, want["y"], "y")
    assert_close(h, want["h"], "h")
    assert_close(c, want["c"], "c")
    ty, (th, tc) = m(torch.from_numpy(inputs["x"]),
                     (torch.from_numpy(inputs["h"]), torch.from_numpy(inputs["c"])),
                     lengths=torch.from_numpy(inputs["lengths"]))
    assert isinstance(ty, torch.Tensor) and isinstance(tc, torch.Tensor)
    assert np.array_equal(ty.numpy(), y)


def test_an_onnx_model_pickles_without_its_file(tmp_path):
    import shutil
    case = "exp_h256_lstm_bi_dynamo"  # with external data beside it
    for f in EXPORTS.glob(f"{case}.onnx*"):
        shutil.copy(f, tmp_path / f.name)
    m = cellc.load_onnx(tmp_path / f"{case}.onnx")
    blob = pickle.dumps(m)
    for f in tmp_path.iterdir():
        f.unlink()
    m2 = pickle.loads(blob)
    inputs = load_file(str(EXPORTS / f"{case}.inputs.safetensors"))
    a, b = m.run(inputs), m2.run(inputs)
    assert a.keys() == b.keys()
    for k in a:
        assert np.array_equal(a[k], b[k])


def test_a_quantized_model_runs_in_int8():
    """DynamicQuantizeLSTM: within the int8 bound of the float model (as
    tests/precision.rs), and not the float model's exact outputs."""
    for c in manifest("quantized.json")["cases"]:
        case = c["case"]
        m = cellc.load_onnx(CASES / f"{case}.onnx")
        got = m.run(load(case, "inputs"))
        for name, want in load(case, "expected").items():
            err = np.abs(got[name] - want).max()
            assert err < 5e-2, f"{case} {name}: {err}"
        f32 = cellc.load_onnx(CASES / f"{case}.onnx", precision="f32").run(load(case, "inputs"))
        assert not np.array_equal(f32["y"], got["y"])


def test_models_cellc_does_not_understand_are_refused_by_name():
    refused = manifest("onnx_networks.json")["refused"]
    for case, says in refused.items():
        with pytest.raises(cellc.ModelError, match=says):
            cellc.load_onnx(CASES / f"{case}.onnx")
    for case, says in manifest("onnx_exports.json")["refused"].items():
        with pytest.raises(cellc.Error) as e:
            m = cellc.load_onnx(EXPORTS / f"{case}.onnx")
            m.run(load_file(str(EXPORTS / "exp_h256_lstm_bi_legacy.inputs.safetensors")))
        assert says in str(e.value), f"{case}: {e.value}"
    with pytest.raises(cellc.FileError, match="nothing.onnx"):
        cellc.load_onnx(CASES / "nothing.onnx")
    m = cellc.load_onnx(CASES / "onnx_lstm_peephole_tiny.onnx")
    x = load("onnx_lstm_peephole_tiny", "inputs")["x"]
    with pytest.raises(cellc.Error, match="graph input `initial_h`"):
        m.run({"x": x})
    with pytest.raises(cellc.Error, match="`q`"):
        m.run({**load("onnx_lstm_peephole_tiny", "inputs"), "q": np.zeros(1, np.float32)})
