"""Writes the ONNX graphs that tests/conformance.rs uses to check what `cellc run
model.onnx` accepts and refuses, beside the node-level cases of gen.py.

Accepted, with ONNX Runtime's outputs to compare against:

  export_lstm_dynamo      torch.onnx.export(nn.LSTM) with the default (dynamo)
                          exporter: LSTM, then Transpose + Reshape of Y
  export_gru_legacy       torch.onnx.export(nn.GRU, dynamo=False): initial state
                          from Expand of zeros sized by Shape/Gather/..., Squeeze of Y

Refused (each must be an error naming the node, op or attribute; batch-first
exports are accepted now, gen_onnx_exports.py):

  refused_linear          an LSTM followed by a Linear layer (MatMul, Add)
  refused_attr_*          attributes of the wrong ONNX type
  refused_initial_h_*     an initial_h initializer of the wrong type or length

Run from this directory: `python gen_onnx.py` (requirements.txt pins the versions).
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
from safetensors.torch import save_file

warnings.filterwarnings("ignore")
logging.disable(logging.WARNING)
torch.manual_seed(3)
torch.set_num_threads(1)
OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "cases")
X, H, B, T = 5, 7, 3, 4


class Wrap(torch.nn.Module):
    def __init__(self, rnn, linear=False):
        super().__init__()
        self.rnn = rnn
        self.lin = torch.nn.Linear(H, 2) if linear else None

    def forward(self, x):
        y = self.rnn(x)[0]
        return self.lin(y) if self.lin is not None else y


def export(name, module, x, dynamo):
    path = os.path.join(OUT, f"{name}.onnx")
    torch.onnx.export(module, (x,), path, dynamo=dynamo)
    model = onnx.load(path)
    # One file: no external data.
    onnx.save(model, path, save_as_external_data=False)
    for extra in os.listdir(OUT):
        if extra.startswith(name) and extra.endswith(".data"):
            os.remove(os.path.join(OUT, extra))
    return path


def accepted(name, module, dynamo):
    x = torch.randn(T, B, X)
    path = export(name, module, x, dynamo)
    sess = onnxruntime.InferenceSession(path, providers=["CPUExecutionProvider"])
    feed = {sess.get_inputs()[0].name: x.numpy()}
    outs = sess.run(None, feed)
    # nn.LSTM returns (y, (h_n, c_n)), nn.GRU (y, h_n): h_n, c_n are [1, B, H].
    expected = {"y": torch.from_numpy(outs[0])}
    for state, value in zip(["h", "c"], outs[1:]):
        expected[state] = torch.from_numpy(value[0])
    save_file({"x": x.contiguous()}, os.path.join(OUT, f"{name}.inputs.safetensors"))
    save_file({k: v.contiguous() for k, v in expected.items()}, os.path.join(OUT, f"{name}.expected.safetensors"))
    return name


graphs = {"accepted": [], "refused": {}}
graphs["accepted"].append(accepted("export_lstm_dynamo", torch.nn.LSTM(X, H), True))
graphs["accepted"].append(accepted("export_gru_legacy", torch.nn.GRU(X, H), False))

export("refused_linear", Wrap(torch.nn.LSTM(X, H), linear=True), torch.randn(T, B, X), False)
graphs["refused"]["refused_linear"] = "(op `Add`)"


def node_model(name, op, attrs, gates, initial_h=None, expect=None):
    w = numpy_helper.from_array(np.zeros((1, gates * H, X), np.float32), "W")
    r = numpy_helper.from_array(np.zeros((1, gates * H, H), np.float32), "R")
    inits = [w, r]
    inputs = ["X", "W", "R"]
    if initial_h is not None:
        inits.append(initial_h)
        inputs += ["", "", "initial_h"]
    node = helper.make_node(op, inputs, ["Y"], name="the_rnn")
    node.attribute.extend(attrs)
    graph = helper.make_graph([node], name,
                              [helper.make_tensor_value_info("X", TensorProto.FLOAT, [T, B, X])],
                              [helper.make_tensor_value_info("Y", TensorProto.FLOAT, [T, 1, B, H])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 14)])
    onnx.save(model, os.path.join(OUT, f"{name}.onnx"))
    graphs["refused"][name] = expect


hs = helper.make_attribute("hidden_size", H)
node_model("refused_attr_direction_int", "LSTM", [hs, helper.make_attribute("direction", 0)], 4, expect="`direction`")
node_model("refused_attr_direction_strings", "LSTM", [hs, helper.make_attribute("direction", ["forward"])], 4,
           expect="`direction`")
node_model("refused_attr_clip_int", "LSTM", [hs, helper.make_attribute("clip", 3)], 4, expect="`clip`")
node_model("refused_attr_layout_float", "LSTM", [hs, helper.make_attribute("layout", 0.0)], 4, expect="`layout`")
node_model("refused_attr_input_forget_float", "LSTM", [hs, helper.make_attribute("input_forget", 0.0)], 4,
           expect="`input_forget`")
node_model("refused_attr_lbr_float", "GRU", [hs, helper.make_attribute("linear_before_reset", 1.0)], 3,
           expect="`linear_before_reset`")
node_model("refused_attr_hidden_size_huge", "GRU", [helper.make_attribute("hidden_size", 1 << 62)], 3,
           expect="hidden_size")
node_model("refused_initial_h_int64", "GRU", [hs], 3,
           initial_h=numpy_helper.from_array(np.zeros((1, B, H), np.int64), "initial_h"), expect="int64")
node_model("refused_initial_h_length", "GRU", [hs], 3,
           initial_h=numpy_helper.from_array(np.zeros((1, B, H + 1), np.float32), "initial_h"), expect="initial_h")

with open(os.path.join(OUT, "onnx_graphs.json"), "w") as f:
    json.dump({"torch": torch.__version__, "onnxruntime": onnxruntime.__version__, **graphs}, f, indent=1)
print(f"{len(graphs['accepted'])} accepted and {len(graphs['refused'])} refused graphs in {OUT}")
