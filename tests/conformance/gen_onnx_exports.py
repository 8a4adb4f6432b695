"""Writes the ONNX models that tests/conformance.rs runs as the exporters write
them at realistic sizes (`cellc run model.onnx` against ONNX Runtime), and the
models it must refuse, by name (the issue 26 cases: trust in what is read).

Accepted, with ONNX Runtime's outputs (y in the model's own layout; final
states [D*L, B, H], or [B, H] for one layer forward):

  exp_h256_lstm_bi_dynamo   nn.LSTM(8, 256, bidirectional=True), the default
                            (dynamo) exporter as it saves it: the weights in
                            an external-data file beside the model, W and R
                            computed by Slice/Concat/Unsqueeze of PyTorch's
                            tensors, a Reshape to the literal [T, B, 2H]
  exp_h256_lstm_bi_legacy   the same module, dynamo=False
  exp_h256_gru_bf_dynamo    nn.GRU(8, 256, batch_first=True), dynamo: a
                            Transpose of the input before the node and of Y after
  exp_h256_lstm_bf_legacy   nn.LSTM(8, 256, batch_first=True), dynamo=False
  exp_l2_h0_legacy          a 2-layer nn.LSTM called with (x, (h0, c0)) graph
  exp_l2_h0_dynamo          inputs, each layer's initial state a Slice of them
  node_lstm_len0            one LSTM node whose row 1 has length 0 and a
                            non-zero initial state: ONNX Runtime returns zeros

Refused (`refused` in onnx_exports.json: file -> words the error must hold):

  bad_reshape_bt            a legacy 2-layer bidirectional export with its glue
                            Reshape made [B, T, 2H] (literal): a run at T != B
                            is refused (the next layer would read it as [T, B])
  bad_dup_initializer       an initializer defined twice
  bad_dup_attribute         a node with attribute `hidden_size` twice
  bad_fourth_output         an LSTM node with four outputs
  bad_two_graphs            the model's `graph` field twice
  bad_dup_input             a graph input declared twice
  bad_external_escape       external data at `../outside.data`

Run from this directory: `python gen_onnx_exports.py` (requirements.txt pins
the versions).
"""

import json
import logging
import os
import shutil
import warnings

import numpy as np
import onnx
import onnxruntime
import torch
from onnx import TensorProto, helper, numpy_helper
from safetensors.numpy import save_file

warnings.filterwarnings("ignore")
logging.disable(logging.WARNING)
torch.manual_seed(26)
torch.set_num_threads(1)
rng = np.random.default_rng(26)
OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "cases")
EXP = os.path.join(OUT, "exports")
T, B = 5, 3


def ort(path, feed):
    s = onnxruntime.InferenceSession(path, providers=["CPUExecutionProvider"])
    return s.run(None, feed)


def clean(name):
    for f in os.listdir(EXP):
        if f.startswith(name + "."):
            os.remove(os.path.join(EXP, f))


def export(name, module, args, dynamo, input_names, output_names):
    """Exports as the exporter saves (external data and all), returns the path."""
    clean(name)
    path = os.path.join(EXP, f"{name}.onnx")
    torch.onnx.export(module, args, path, dynamo=dynamo, input_names=input_names,
                      output_names=output_names)
    return path


class WithState(torch.nn.Module):
    def __init__(self, rnn):
        super().__init__()
        self.rnn = rnn

    def forward(self, x, h0, c0):
        return self.rnn(x, (h0, c0))


os.makedirs(EXP, exist_ok=True)
cases = {"accepted": [], "refused": {}}


def accept(name, path, feed, inputs, outs):
    got = ort(path, feed)
    save_file(inputs, os.path.join(EXP, f"{name}.inputs.safetensors"))
    save_file({n: np.ascontiguousarray(o) for n, o in zip(outs, got)},
              os.path.join(EXP, f"{name}.expected.safetensors"))
    cases["accepted"].append(name)


for dynamo in (True, False):
    tag = "dynamo" if dynamo else "legacy"
    m = torch.nn.LSTM(8, 256, bidirectional=True)
    x = torch.randn(T, B, 8)
    path = export(f"exp_h256_lstm_bi_{tag}", m, (x,), dynamo, ["x"], ["y", "h", "c"])
    accept(f"exp_h256_lstm_bi_{tag}", path, {"x": x.numpy()}, {"x": x.numpy()}, ["y", "h", "c"])

m = torch.nn.GRU(8, 256, batch_first=True)
x = torch.randn(B, T, 8)
path = export("exp_h256_gru_bf_dynamo", m, (x,), True, ["x"], ["y", "h"])
got = ort(path, {"x": x.numpy()})
save_file({"x": x.numpy()}, os.path.join(EXP, "exp_h256_gru_bf_dynamo.inputs.safetensors"))
# One layer forward: cellc writes the final state as [B, H].
save_file({"y": got[0], "h": np.ascontiguousarray(got[1][0])},
          os.path.join(EXP, "exp_h256_gru_bf_dynamo.expected.safetensors"))
cases["accepted"].append("exp_h256_gru_bf_dynamo")

m = torch.nn.LSTM(8, 256, batch_first=True)
x = torch.randn(B, T, 8)
path = export("exp_h256_lstm_bf_legacy", m, (x,), False, ["x"], ["y", "h", "c"])
got = ort(path, {"x": x.numpy()})
save_file({"x": x.numpy()}, os.path.join(EXP, "exp_h256_lstm_bf_legacy.inputs.safetensors"))
save_file({"y": got[0], "h": np.ascontiguousarray(got[1][0]), "c": np.ascontiguousarray(got[2][0])},
          os.path.join(EXP, "exp_h256_lstm_bf_legacy.expected.safetensors"))
cases["accepted"].append("exp_h256_lstm_bf_legacy")

for dynamo in (False, True):
    tag = "dynamo" if dynamo else "legacy"
    m = WithState(torch.nn.LSTM(5, 7, num_layers=2))
    x, h0, c0 = torch.randn(T, B, 5), torch.randn(2, B, 7), torch.randn(2, B, 7)
    name = f"exp_l2_h0_{tag}"
    path = export(name, m, (x, h0, c0), dynamo, ["x", "h0", "c0"], ["y", "h", "c"])
    feed = {"x": x.numpy(), "h0": h0.numpy(), "c0": c0.numpy()}
    # Given under the model's own input names.
    accept(name, path, feed, feed, ["y", "h", "c"])

# One LSTM node, a row of length 0 with a non-zero initial state.
W = numpy_helper.from_array(rng.uniform(-0.5, 0.5, (1, 16, 4)).astype(np.float32), "W")
R = numpy_helper.from_array(rng.uniform(-0.5, 0.5, (1, 16, 4)).astype(np.float32), "R")
node = helper.make_node("LSTM", ["X", "W", "R", "", "L", "h0", "c0"], ["Y", "Y_h", "Y_c"], hidden_size=4)
graph = helper.make_graph(
    [node], "len0",
    [helper.make_tensor_value_info("X", TensorProto.FLOAT, [T, B, 4]),
     helper.make_tensor_value_info("L", TensorProto.INT32, [B]),
     helper.make_tensor_value_info("h0", TensorProto.FLOAT, [1, B, 4]),
     helper.make_tensor_value_info("c0", TensorProto.FLOAT, [1, B, 4])],
    [helper.make_tensor_value_info(o, TensorProto.FLOAT, None) for o in ["Y", "Y_h", "Y_c"]], [W, R])
path = os.path.join(EXP, "node_lstm_len0.onnx")
onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 14)]), path)
x = rng.uniform(-1, 1, (T, B, 4)).astype(np.float32)
lens = np.array([T, 0, 2], np.int32)
h0, c0 = np.ones((1, B, 4), np.float32), np.ones((1, B, 4), np.float32)
y, yh, yc = ort(path, {"X": x, "L": lens, "h0": h0, "c0": c0})
save_file({"X": x, "L": lens.astype(np.int64), "h0": h0, "c0": c0},
          os.path.join(EXP, "node_lstm_len0.inputs.safetensors"))
save_file({"y": np.ascontiguousarray(y[:, 0]), "h": np.ascontiguousarray(yh[0]),
           "c": np.ascontiguousarray(yc[0])},
          os.path.join(EXP, "node_lstm_len0.expected.safetensors"))
cases["accepted"].append("node_lstm_len0")

# Refused: a legacy 2-layer bidirectional export with its glue Reshape to a
# literal [B, T, w].
m = torch.nn.LSTM(5, 7, num_layers=2, bidirectional=True)
path = export("bad_reshape_bt", m, (torch.randn(T, B, 5),), False, ["x"], ["y", "h", "c"])
base = onnx.load(path)
assert any(n.op_type == "Reshape" for n in base.graph.node)
for n in base.graph.node:
    if n.op_type == "Reshape":
        shape_name = n.input[1]
        for c in base.graph.node:
            if c.op_type == "Constant" and c.output[0] == shape_name:
                c.attribute[0].t.CopyFrom(numpy_helper.from_array(np.array([B, T, -1], np.int64)))
        for i in base.graph.initializer:
            if i.name == shape_name:
                i.CopyFrom(numpy_helper.from_array(np.array([B, T, -1], np.int64), shape_name))
onnx.save(base, os.path.join(EXP, "bad_reshape_bt.onnx"))
cases["refused"]["bad_reshape_bt"] = "fixes T = 3"


def small_lstm(name, fourth_output=False, dup_attribute=False, dup_initializer=False):
    W = numpy_helper.from_array(np.zeros((1, 16, 4), np.float32), "W")
    R = numpy_helper.from_array(np.zeros((1, 16, 4), np.float32), "R")
    outs = ["Y", "Y_h", "Y_c"] + (["Y_extra"] if fourth_output else [])
    node = helper.make_node("LSTM", ["X", "W", "R"], outs, hidden_size=4)
    if dup_attribute:
        node.attribute.append(helper.make_attribute("hidden_size", 4))
    inits = [W, R] + ([numpy_helper.from_array(np.ones((1, 16, 4), np.float32), "W")] if dup_initializer else [])
    graph = helper.make_graph([node], name, [helper.make_tensor_value_info("X", TensorProto.FLOAT, [T, B, 4])],
                              [helper.make_tensor_value_info("Y", TensorProto.FLOAT, None)], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 14)])


def save_raw(model, name):
    with open(os.path.join(EXP, f"{name}.onnx"), "wb") as f:
        f.write(model.SerializeToString())


save_raw(small_lstm("d", dup_initializer=True), "bad_dup_initializer")
cases["refused"]["bad_dup_initializer"] = "initializer `W` is defined twice"
save_raw(small_lstm("a", dup_attribute=True), "bad_dup_attribute")
cases["refused"]["bad_dup_attribute"] = "attribute `hidden_size` twice"
save_raw(small_lstm("o", fourth_output=True), "bad_fourth_output")
cases["refused"]["bad_fourth_output"] = "4 outputs"
# The model's graph field (7) twice: protobuf would merge them.
model = small_lstm("g")
g = model.graph.SerializeToString()
extra = bytes([7 << 3 | 2])
n = len(g)
while n >= 0x80:
    extra += bytes([(n & 0x7F) | 0x80])
    n >>= 7
extra += bytes([n]) + g
with open(os.path.join(EXP, "bad_two_graphs.onnx"), "wb") as f:
    f.write(model.SerializeToString() + extra)
cases["refused"]["bad_two_graphs"] = "two graphs"
# A graph input declared twice.
model = small_lstm("i")
model.graph.input.append(helper.make_tensor_value_info("X", TensorProto.FLOAT, [T, B, 4]))
save_raw(model, "bad_dup_input")
cases["refused"]["bad_dup_input"] = "graph input `X` is declared twice"
# External data that leads out of the model's folder.
model = small_lstm("e")
for t in model.graph.initializer:
    t.data_location = TensorProto.EXTERNAL
    t.ClearField("raw_data")
    t.ClearField("float_data")
    e = t.external_data.add()
    e.key, e.value = "location", "../outside.data"
save_raw(model, "bad_external_escape")
cases["refused"]["bad_external_escape"] = "not a plain relative path"

with open(os.path.join(OUT, "onnx_exports.json"), "w") as f:
    json.dump({"torch": torch.__version__, "onnxruntime": onnxruntime.__version__, **cases}, f, indent=1)
    f.write("\n")
print(f"{len(cases['accepted'])} accepted and {len(cases['refused'])} refused models in {EXP}")
