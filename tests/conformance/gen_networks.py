"""Writes the PyTorch reference cases of whole networks that tests/conformance.rs
checks `cellc run` against: stacked and bidirectional nn.LSTM (with and without
proj_size and biases), nn.GRU and nn.RNN (tanh and relu), batch-first inputs,
non-zero initial states, and batches of sequences of different lengths run
through pack_padded_sequence.

  cases/net_NAME.weights.safetensors   the module's state_dict, as PyTorch names it
  cases/net_NAME.inputs.safetensors    x [T, B, X] (or [B, T, X] batch-first), the
                                       initial states [D*L, B, len], `lengths` [B] (int64)
  cases/net_NAME.expected.safetensors  PyTorch's outputs: y [T, B, D*len] (padded
                                       with zeros past each row's end), final states
  cases/networks.json                  which .rnn file runs which case

Run from this directory: `python gen_networks.py` (requirements.txt pins the versions).
"""

import json
import os

import torch
from safetensors.torch import save_file
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

torch.manual_seed(1)
torch.set_num_threads(1)
OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "cases")
os.makedirs(OUT, exist_ok=True)


def save(name, kind, tensors):
    save_file({k: (v.detach().contiguous() if v.dtype in (torch.int64, torch.int32)
                   else v.detach().contiguous().float()) for k, v in tensors.items()},
              os.path.join(OUT, f"net_{name}.{kind}.safetensors"))


manifest = []


def case(name, cell, module, X, H, T, B, layers, bidirectional, ragged=False,
         batch_first=False, proj=0, bias=True, initial=True, lengths_dtype=torch.int64):
    D = 2 if bidirectional else 1
    kw = dict(num_layers=layers, bidirectional=bidirectional, bias=bias, batch_first=batch_first)
    if module == "LSTM":
        m = torch.nn.LSTM(X, H, proj_size=proj, **kw)
    elif module == "GRU":
        m = torch.nn.GRU(X, H, **kw)
    else:
        m = torch.nn.RNN(X, H, nonlinearity=module.split("_")[1], **kw)
    x = torch.randn(B, T, X) if batch_first else torch.randn(T, B, X)
    Hout = proj if proj else H
    h0 = torch.randn(D * layers, B, Hout) * 0.5
    c0 = torch.randn(D * layers, B, H) * 0.5
    state = (h0, c0) if module == "LSTM" else h0
    inputs = {"x": x}
    if initial:
        inputs["h"] = h0
        if module == "LSTM":
            inputs["c"] = c0
    else:
        state = None
    if ragged:
        lengths = torch.randint(1, T + 1, (B,))
        lengths[torch.randint(0, B, (1,))] = T
        inputs["lengths"] = lengths.to(lengths_dtype)
        packed = pack_padded_sequence(x, lengths, batch_first=batch_first, enforce_sorted=False)
        y, s = m(packed, state)
        y, _ = pad_packed_sequence(y, batch_first=batch_first, total_length=T)
    else:
        y, s = m(x, state)
    expected = {"y": y}
    if module == "LSTM":
        expected["h"], expected["c"] = s
    else:
        expected["h"] = s
    save(name, "weights", m.state_dict())
    save(name, "inputs", inputs)
    save(name, "expected", expected)
    manifest.append({"case": f"net_{name}", "cell": cell, "batch_first": batch_first,
                     "module": f"nn.{module.split('_')[0]}({', '.join(f'{k}={v}' for k, v in kw.items())}"
                               f"{', proj_size=' + str(proj) if proj else ''})"
                               f"{' packed' if ragged else ''}"})


with torch.no_grad():
    case("lstm_l2_bi", "lstm.rnn", "LSTM", 7, 11, 5, 3, 2, True)
    case("lstm_l3", "lstm.rnn", "LSTM", 7, 11, 6, 2, 3, False)
    case("lstm_l2_bi_ragged", "lstm.rnn", "LSTM", 7, 11, 6, 4, 2, True, ragged=True)
    case("lstm_l2_bi_proj", "lstm_proj.rnn", "LSTM", 7, 11, 5, 3, 2, True, proj=5)
    case("lstm_l2_nobias", "lstm.rnn", "LSTM", 7, 11, 5, 3, 2, False, bias=False)
    case("lstm_l1_bi_batch_first_ragged", "lstm.rnn", "LSTM", 7, 11, 5, 3, 1, True,
         ragged=True, batch_first=True, lengths_dtype=torch.int32)
    case("gru_l2_bi", "gru.rnn", "GRU", 7, 11, 5, 3, 2, True)
    case("gru_l3_ragged_zero_state", "gru.rnn", "GRU", 7, 11, 7, 5, 3, False, ragged=True,
         initial=False)
    case("gru_l2_bi_batch_first", "gru.rnn", "GRU", 7, 11, 5, 3, 2, True, batch_first=True)
    case("rnn_tanh_l2_bi_ragged", "rnn_tanh.rnn", "RNN_tanh", 7, 11, 5, 3, 2, True, ragged=True)
    case("rnn_relu_l2", "rnn_relu.rnn", "RNN_relu", 7, 11, 5, 3, 2, False)
    case("lstm_medium_l2_bi_ragged", "lstm.rnn", "LSTM", 64, 96, 20, 6, 2, True, ragged=True)

with open(os.path.join(OUT, "networks.json"), "w") as f:
    json.dump({"torch": torch.__version__, "cases": manifest}, f, indent=1)
    f.write("\n")
