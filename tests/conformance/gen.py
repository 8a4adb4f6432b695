"""Writes the PyTorch reference cases that tests/conformance.rs checks cellc against.

For every module cellc loads (nn.LSTM, nn.LSTM with proj_size, nn.GRU, nn.RNN,
nn.LSTMCell, nn.GRUCell, nn.RNNCell), at a tiny and a medium size, with seeded
weights, a seeded input sequence and non-zero initial states:

  cases/NAME.weights.safetensors   the module's state_dict, as PyTorch names it
  cases/NAME.inputs.safetensors    x [T, B, X] and the initial states [B, len]
  cases/NAME.expected.safetensors  PyTorch's outputs: y [T, B, len], final states
  cases/manifest.json              which .rnn file runs which case

Run from this directory: `python gen.py` (requirements.txt pins the versions).
"""

import json
import os

import torch
from safetensors.torch import save_file

torch.manual_seed(0)
torch.set_num_threads(1)
OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "cases")
os.makedirs(OUT, exist_ok=True)

SIZES = {
    "tiny": dict(X=7, H=11, P=5, B=3, T=5),
    "medium": dict(X=64, H=96, P=48, B=4, T=20),
}


def save(name, kind, tensors):
    save_file({k: v.detach().contiguous().float() for k, v in tensors.items()},
              os.path.join(OUT, f"{name}.{kind}.safetensors"))


def state_dict(module):
    return {k: v for k, v in module.state_dict().items()}


def sequence(module, x, states, step):
    """Steps a Cell module over x [T, B, X]; returns outputs [T, B, len], final states."""
    ys = []
    for t in range(x.shape[0]):
        states = step(module, x[t], states)
        ys.append(states[0] if isinstance(states, tuple) else states)
    return torch.stack(ys), states


manifest = []
with torch.no_grad():
    for size, d in SIZES.items():
        X, H, P, B, T = d["X"], d["H"], d["P"], d["B"], d["T"]
        x = torch.randn(T, B, X)
        h0 = torch.randn(B, H) * 0.5
        c0 = torch.randn(B, H) * 0.5
        hp0 = torch.randn(B, P) * 0.5

        m = torch.nn.LSTM(X, H)
        y, (h, c) = m(x, (h0[None], c0[None]))
        name = f"lstm_{size}"
        save(name, "weights", state_dict(m))
        save(name, "inputs", {"x": x, "h": h0, "c": c0})
        save(name, "expected", {"y": y, "h": h[0], "c": c[0]})
        manifest.append({"case": name, "cell": "lstm.rnn", "module": "nn.LSTM"})

        m = torch.nn.LSTM(X, H, proj_size=P)
        y, (h, c) = m(x, (hp0[None], c0[None]))
        name = f"lstm_proj_{size}"
        save(name, "weights", state_dict(m))
        save(name, "inputs", {"x": x, "h": hp0, "c": c0})
        save(name, "expected", {"y": y, "h": h[0], "c": c[0]})
        manifest.append({"case": name, "cell": "lstm_proj.rnn", "module": "nn.LSTM(proj_size)"})

        m = torch.nn.GRU(X, H)
        y, h = m(x, h0[None])
        name = f"gru_{size}"
        save(name, "weights", state_dict(m))
        save(name, "inputs", {"x": x, "h": h0})
        save(name, "expected", {"y": y, "h": h[0]})
        manifest.append({"case": name, "cell": "gru.rnn", "module": "nn.GRU"})

        m = torch.nn.RNN(X, H, nonlinearity="tanh")
        y, h = m(x, h0[None])
        name = f"rnn_{size}"
        save(name, "weights", state_dict(m))
        save(name, "inputs", {"x": x, "h": h0})
        save(name, "expected", {"y": y, "h": h[0]})
        manifest.append({"case": name, "cell": "rnn_tanh.rnn", "module": "nn.RNN"})

        m = torch.nn.LSTMCell(X, H)
        y, (h, c) = sequence(m, x, (h0, c0), lambda m, xt, s: m(xt, s))
        name = f"lstmcell_{size}"
        save(name, "weights", state_dict(m))
        save(name, "inputs", {"x": x, "h": h0, "c": c0})
        save(name, "expected", {"y": y, "h": h, "c": c})
        manifest.append({"case": name, "cell": "lstm.rnn", "module": "nn.LSTMCell"})

        m = torch.nn.GRUCell(X, H)
        y, h = sequence(m, x, h0, lambda m, xt, s: m(xt, s))
        name = f"grucell_{size}"
        save(name, "weights", state_dict(m))
        save(name, "inputs", {"x": x, "h": h0})
        save(name, "expected", {"y": y, "h": h})
        manifest.append({"case": name, "cell": "gru.rnn", "module": "nn.GRUCell"})

        m = torch.nn.RNNCell(X, H, nonlinearity="tanh")
        y, h = sequence(m, x, h0, lambda m, xt, s: m(xt, s))
        name = f"rnncell_{size}"
        save(name, "weights", state_dict(m))
        save(name, "inputs", {"x": x, "h": h0})
        save(name, "expected", {"y": y, "h": h})
        manifest.append({"case": name, "cell": "rnn_tanh.rnn", "module": "nn.RNNCell"})

# Cells from the literature that no torch module implements, written from
# their papers as the reference for the examples of the same names.
from references import (HardSigmoidGRUCell, IndRNNCell, LayerNormGRUCell,  # noqa: E402
                        LayerNormLSTMCell, PeepholeLSTMCell, SRUCell)


# With their own seed, so that the cases above and below stay as they were.
with torch.random.fork_rng(), torch.no_grad():
    torch.manual_seed(1)
    for size, d in SIZES.items():
        X, H, B, T = d["X"], d["H"], d["B"], d["T"]
        x = torch.randn(T, B, X)
        h0 = torch.randn(B, H) * 0.5
        c0 = torch.randn(B, H) * 0.5

        for name, module in [("layernorm_lstm", LayerNormLSTMCell(X, H)),
                             ("peephole_lstm", PeepholeLSTMCell(X, H))]:
            h, c = h0, c0
            ys = []
            for t in range(T):
                h, c = module(x[t], (h, c))
                ys.append(h)
            case = f"{name}_{size}"
            save(case, "weights", state_dict(module))
            save(case, "inputs", {"x": x, "h": h0, "c": c0})
            save(case, "expected", {"y": torch.stack(ys), "h": h, "c": c})
            manifest.append({"case": case, "cell": f"{name}.rnn", "module": type(module).__name__})

        for name, module in [("layernorm_gru", LayerNormGRUCell(X, H)),
                             ("indrnn", IndRNNCell(X, H)),
                             ("hard_sigmoid_gru", HardSigmoidGRUCell(X, H))]:
            h = h0
            ys = []
            for t in range(T):
                h = module(x[t], h)
                ys.append(h)
            case = f"{name}_{size}"
            save(case, "weights", state_dict(module))
            save(case, "inputs", {"x": x, "h": h0})
            save(case, "expected", {"y": torch.stack(ys), "h": h})
            manifest.append({"case": case, "cell": f"{name}.rnn", "module": type(module).__name__})

        module = SRUCell(H)
        xs = torch.randn(T, B, H)
        c = c0
        ys = []
        for t in range(T):
            y, c = module(xs[t], c)
            ys.append(y)
        case = f"sru_{size}"
        save(case, "weights", state_dict(module))
        save(case, "inputs", {"x": xs, "c": c0})
        save(case, "expected", {"h": torch.stack(ys), "c": c})
        manifest.append({"case": case, "cell": "sru.rnn", "module": "SRUCell"})

with torch.no_grad():
    # Modules cellc refuses, clearly: two layers, and two directions.
    save("lstm2layers_tiny", "weights", state_dict(torch.nn.LSTM(7, 11, num_layers=2)))
    save("grubidir_tiny", "weights", state_dict(torch.nn.GRU(7, 11, bidirectional=True)))

# ONNX LSTM and GRU nodes, run by ONNX Runtime: for `cellc run model.onnx`.
import numpy as np
import onnx
import onnxruntime
from onnx import TensorProto, helper, numpy_helper

rng = np.random.default_rng(1)
onnx_cases = []


def onnx_case(name, op, attrs, gates, with_p, size):
    X, H, B, T = size["X"], size["H"], size["B"], size["T"]
    s = 1 / np.sqrt(H)
    inits = {
        "W": rng.uniform(-s, s, (1, gates * H, X)).astype(np.float32),
        "R": rng.uniform(-s, s, (1, gates * H, H)).astype(np.float32),
        "B": rng.uniform(-s, s, (1, 2 * gates * H)).astype(np.float32),
    }
    if with_p:
        inits["P"] = rng.uniform(-s, s, (1, 3 * H)).astype(np.float32)
    inputs = ["X", "W", "R", "B", "", "initial_h"] + (["initial_c", "P" if with_p else ""] if op == "LSTM" else [])
    outputs = ["Y", "Y_h"] + (["Y_c"] if op == "LSTM" else [])
    node = helper.make_node(op, inputs, outputs, hidden_size=H, **attrs)
    graph_inputs = [
        helper.make_tensor_value_info("X", TensorProto.FLOAT, [T, B, X]),
        helper.make_tensor_value_info("initial_h", TensorProto.FLOAT, [1, B, H]),
    ] + ([helper.make_tensor_value_info("initial_c", TensorProto.FLOAT, [1, B, H])] if op == "LSTM" else [])
    out_shapes = {"Y": [T, 1, B, H], "Y_h": [1, B, H], "Y_c": [1, B, H]}
    graph_outputs = [helper.make_tensor_value_info(o, TensorProto.FLOAT, out_shapes[o]) for o in outputs]
    graph = helper.make_graph([node], name, graph_inputs, graph_outputs,
                              [numpy_helper.from_array(v, k) for k, v in inits.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 14)])
    onnx.checker.check_model(model)
    onnx.save(model, os.path.join(OUT, f"{name}.onnx"))
    x = rng.standard_normal((T, B, X)).astype(np.float32)
    h0 = (rng.standard_normal((1, B, H)) * 0.5).astype(np.float32)
    c0 = (rng.standard_normal((1, B, H)) * 0.5).astype(np.float32)
    feed = {"X": x, "initial_h": h0}
    if op == "LSTM":
        feed["initial_c"] = c0
    sess = onnxruntime.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    res = dict(zip(outputs, sess.run(outputs, feed)))
    ins = {"x": torch.from_numpy(x), "h": torch.from_numpy(h0[0])}
    exp = {"y": torch.from_numpy(res["Y"][:, 0]), "h": torch.from_numpy(res["Y_h"][0])}
    if op == "LSTM":
        ins["c"] = torch.from_numpy(c0[0])
        exp["c"] = torch.from_numpy(res["Y_c"][0])
    save(name, "inputs", ins)
    save(name, "expected", exp)
    onnx_cases.append({"case": name, "op": op, "attributes": {k: v for k, v in attrs.items()}})


# Tiny sizes only (and one medium GRU), to keep the committed cases under 2 MB.
tiny = SIZES["tiny"]
onnx_case("onnx_lstm_peephole_tiny", "LSTM", {}, 4, True, tiny)
onnx_case("onnx_lstm_nopeephole_tiny", "LSTM", {}, 4, False, tiny)
onnx_case("onnx_gru_lbr1_tiny", "GRU", {"linear_before_reset": 1}, 3, False, tiny)
onnx_case("onnx_gru_lbr0_tiny", "GRU", {}, 3, False, tiny)
onnx_case("onnx_gru_lbr1_medium", "GRU", {"linear_before_reset": 1}, 3, False, SIZES["medium"])

# Models cellc refuses, clearly.
def refused(name, op, attrs, gates, dirs):
    H, X = 3, 2
    inits = [numpy_helper.from_array(np.zeros((dirs, gates * H, X), np.float32), "W"),
             numpy_helper.from_array(np.zeros((dirs, gates * H, H), np.float32), "R")]
    node = helper.make_node(op, ["X", "W", "R"], ["Y"], hidden_size=H, **attrs)
    graph = helper.make_graph([node], name,
                              [helper.make_tensor_value_info("X", TensorProto.FLOAT, [1, 1, X])],
                              [helper.make_tensor_value_info("Y", TensorProto.FLOAT, [1, dirs, 1, H])], inits)
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 14)]),
              os.path.join(OUT, f"{name}.onnx"))


refused("refused_bidirectional", "GRU", {"direction": "bidirectional"}, 3, 2)
refused("refused_clip", "LSTM", {"clip": 3.0}, 4, 1)
refused("refused_activations", "GRU", {"activations": ["Relu", "Tanh"]}, 3, 1)

with open(os.path.join(OUT, "manifest.json"), "w") as f:
    json.dump({"torch": torch.__version__, "onnxruntime": onnxruntime.__version__,
               "cases": manifest, "onnx_cases": onnx_cases}, f, indent=1)
print(f"{len(manifest)} cases in {OUT}")
