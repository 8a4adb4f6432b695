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

    # Modules cellc refuses, clearly: two layers, and two directions.
    save("lstm2layers_tiny", "weights", state_dict(torch.nn.LSTM(7, 11, num_layers=2)))
    save("grubidir_tiny", "weights", state_dict(torch.nn.GRU(7, 11, bidirectional=True)))

with open(os.path.join(OUT, "manifest.json"), "w") as f:
    json.dump({"torch": torch.__version__, "cases": manifest}, f, indent=1)
print(f"{len(manifest)} cases in {OUT}")
