"""Writes the ONNX networks that tests/conformance.rs runs through `cellc run
model.onnx` and compares with ONNX Runtime: recurrent nodes of both directions,
with sequence_lens, and stacks of them as torch.onnx.export writes them.

Accepted, with ONNX Runtime's outputs (y as [T, B, D*H], the directions side by
side; final states [D*L, B, H]):

  onnxnet_lstm_bi_lens       one bidirectional LSTM node with peepholes,
                             sequence_lens, initial_h and initial_c graph inputs;
                             Y, Y_h, Y_c graph outputs
  onnxnet_gru_bi_stored      one bidirectional GRU node (linear_before_reset 1) with
                             a stored non-zero initial_h
  onnxnet_export_lstm_l2_bi  torch.onnx.export of nn.LSTM(num_layers=2,
                             bidirectional=True), default (dynamo) exporter
  onnxnet_export_gru_l3      torch.onnx.export of nn.GRU(num_layers=3), dynamo=False

  onnxnet_gru_rev_lens       one GRU node with direction `reverse`, sequence_lens and
                             initial_h

Refused (the message must name it):

  onnxnet_refused_mixed      two stacked nodes of different hidden sizes

Run from this directory: `python gen_onnx_networks.py` (requirements.txt pins the
versions).
"""

import json
import logging
import os
import warnings

import numpy as np
import onnx
import onnxruntime
import torch
from onnx import TensorProto, helper, numpy_helper
from safetensors.numpy import save_file

warnings.filterwarnings("ignore")
logging.disable(logging.WARNING)
torch.manual_seed(4)
rng = np.random.default_rng(4)
OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "cases")
X, H, B, T = 5, 7, 3, 6


def f32(*shape, scale=0.5):
    return (rng.uniform(-1, 1, shape) * scale).astype(np.float32)


def ort(path, feed):
    s = onnxruntime.InferenceSession(path, providers=["CPUExecutionProvider"])
    return s.run(None, feed)


def side_by_side(y):
    """ONNX Y [T, D, B, H] -> [T, B, D*H]."""
    t, d, b, h = y.shape
    return np.ascontiguousarray(y.transpose(0, 2, 1, 3).reshape(t, b, d * h))


def node_model(name, op, direction, with_lens, initial, stored_h=None, hidden=H, peep=False,
               extra_nodes=()):
    d = 2 if direction == "bidirectional" else 1
    g = 4 if op == "LSTM" else 3
    inits = [numpy_helper.from_array(f32(d, g * hidden, X), "W"),
             numpy_helper.from_array(f32(d, g * hidden, hidden), "R"),
             numpy_helper.from_array(f32(d, 2 * g * hidden), "B")]
    ins = ["X", "W", "R", "B", "seq_lens" if with_lens else ""]
    graph_inputs = [helper.make_tensor_value_info("X", TensorProto.FLOAT, [T, B, X])]
    if with_lens:
        graph_inputs.append(helper.make_tensor_value_info("seq_lens", TensorProto.INT32, [B]))
    if initial:
        ins += ["h0"] + (["c0"] if op == "LSTM" else [])
        graph_inputs.append(helper.make_tensor_value_info("h0", TensorProto.FLOAT, [d, B, hidden]))
        if op == "LSTM":
            graph_inputs.append(helper.make_tensor_value_info("c0", TensorProto.FLOAT, [d, B, hidden]))
    elif stored_h is not None:
        ins += ["h0"]
        inits.append(numpy_helper.from_array(stored_h, "h0"))
    if peep:
        while len(ins) < 7:
            ins.append("")
        ins.append("P")
        inits.append(numpy_helper.from_array(f32(d, 3 * hidden), "P"))
    attrs = dict(hidden_size=hidden, direction=direction)
    if op == "GRU":
        attrs["linear_before_reset"] = 1
    outs = ["Y", "Y_h"] + (["Y_c"] if op == "LSTM" else [])
    node = helper.make_node(op, ins, outs, **attrs)
    graph = helper.make_graph([node, *extra_nodes], name, graph_inputs,
                              [helper.make_tensor_value_info(o, TensorProto.FLOAT, None) for o in outs],
                              inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 14)])
    path = os.path.join(OUT, f"{name}.onnx")
    onnx.save(model, path)
    return path, d


accepted = []

# One bidirectional LSTM node with lengths and initial states given as inputs.
path, d = node_model("onnxnet_lstm_bi_lens", "LSTM", "bidirectional", True, True, peep=True)
x = f32(T, B, X, scale=1.0)
lens = np.array([T, 2, 4], dtype=np.int32)
h0, c0 = f32(d, B, H), f32(d, B, H)
y, yh, yc = ort(path, {"X": x, "seq_lens": lens, "h0": h0, "c0": c0})
save_file({"x": x, "h": h0, "c": c0, "lengths": lens.astype(np.int64)},
          os.path.join(OUT, "onnxnet_lstm_bi_lens.inputs.safetensors"))
save_file({"y": side_by_side(y), "h": yh, "c": yc},
          os.path.join(OUT, "onnxnet_lstm_bi_lens.expected.safetensors"))
accepted.append("onnxnet_lstm_bi_lens")

# One bidirectional GRU node with a stored, non-zero initial state.
h0 = f32(2, B, H)
path, d = node_model("onnxnet_gru_bi_stored", "GRU", "bidirectional", False, False, stored_h=h0)
y, yh = ort(path, {"X": x})
save_file({"x": x}, os.path.join(OUT, "onnxnet_gru_bi_stored.inputs.safetensors"))
save_file({"y": side_by_side(y), "h": yh},
          os.path.join(OUT, "onnxnet_gru_bi_stored.expected.safetensors"))
accepted.append("onnxnet_gru_bi_stored")


def exported(name, module, dynamo, names):
    xt = torch.randn(T, B, X)
    path = os.path.join(OUT, f"{name}.onnx")
    torch.onnx.export(module, (xt,), path, dynamo=dynamo)
    # One file: no external data.
    onnx.save(onnx.load(path), path, save_as_external_data=False)
    if os.path.exists(path + ".data"):
        os.remove(path + ".data")
    outs = ort(path, {onnx.load(path).graph.input[0].name: xt.numpy()})
    save_file({"x": xt.numpy()}, os.path.join(OUT, f"{name}.inputs.safetensors"))
    save_file({n: np.ascontiguousarray(o) for n, o in zip(names, outs)},
              os.path.join(OUT, f"{name}.expected.safetensors"))
    accepted.append(name)


exported("onnxnet_export_lstm_l2_bi", torch.nn.LSTM(X, H, num_layers=2, bidirectional=True), True,
         ["y", "h", "c"])
exported("onnxnet_export_gru_l3", torch.nn.GRU(X, H, num_layers=3), False, ["y", "h"])

# One reverse GRU node (linear_before_reset 1) with lengths and an initial state.
path, d = node_model("onnxnet_gru_rev_lens", "GRU", "reverse", True, True)
h0 = f32(d, B, H)
lens = np.array([3, T, 1], dtype=np.int32)
y, yh = ort(path, {"X": x, "seq_lens": lens, "h0": h0})
save_file({"x": x, "h": h0, "lengths": lens.astype(np.int64)},
          os.path.join(OUT, "onnxnet_gru_rev_lens.inputs.safetensors"))
save_file({"y": side_by_side(y), "h": yh}, os.path.join(OUT, "onnxnet_gru_rev_lens.expected.safetensors"))
accepted.append("onnxnet_gru_rev_lens")

refused = {}

# Two LSTM nodes of different hidden sizes, the second reading the first.
d = 1
n1 = helper.make_node("LSTM", ["X", "W1", "R1", "B1"], ["Y1"], hidden_size=H)
sq = helper.make_node("Squeeze", ["Y1", "axes"], ["S1"])
n2 = helper.make_node("LSTM", ["S1", "W2", "R2", "B2"], ["Y"], hidden_size=H + 1)
inits = [numpy_helper.from_array(f32(1, 4 * H, X), "W1"), numpy_helper.from_array(f32(1, 4 * H, H), "R1"),
         numpy_helper.from_array(f32(1, 8 * H), "B1"), numpy_helper.from_array(np.array([1], np.int64), "axes"),
         numpy_helper.from_array(f32(1, 4 * (H + 1), H), "W2"),
         numpy_helper.from_array(f32(1, 4 * (H + 1), H + 1), "R2"),
         numpy_helper.from_array(f32(1, 8 * (H + 1)), "B2")]
graph = helper.make_graph([n1, sq, n2], "mixed", [helper.make_tensor_value_info("X", TensorProto.FLOAT, [T, B, X])],
                          [helper.make_tensor_value_info("Y", TensorProto.FLOAT, None)], inits)
onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 14)]),
          os.path.join(OUT, "onnxnet_refused_mixed.onnx"))
refused["onnxnet_refused_mixed"] = "differ"

with open(os.path.join(OUT, "onnx_networks.json"), "w") as f:
    json.dump({"torch": torch.__version__, "onnxruntime": onnxruntime.__version__,
               "accepted": accepted, "refused": refused}, f, indent=1)
    f.write("\n")
