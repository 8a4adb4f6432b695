"""Writes the int8 models that tests/precision.rs imports: ONNX Runtime's
`DynamicQuantizeLSTM` (com.microsoft), as `onnxruntime.quantization.quantize_dynamic`
makes it from a float LSTM model.

  quant_lstm_channel   LSTM X=16, H=24, quantized per channel (symmetric int8, one
                       scale per output row of W and R)
  quant_lstm_tensor    the same LSTM quantized per tensor (one scale for W, one for R)
  quant_lstm_bi        a bidirectional LSTM with peepholes, quantized per channel
  quant_torch_lstm     PyTorch's dynamically quantized nn.LSTM (2 layers,
                       torch.ao.quantization.quantize_dynamic): its int8 weights
                       dequantized into a state_dict (`NAME.weights.safetensors`), the
                       float LSTM's outputs (`NAME.expected`) and the quantized module's
                       (`NAME.torch_int8`)

For each: `NAME.onnx` (the quantized model), `NAME.inputs.safetensors` (x in [-1, 1],
T=20, B=2), `NAME.expected.safetensors` (the float model's outputs, run by ONNX
Runtime: what int8 weights approximate), `NAME.ort_int8.safetensors` (ONNX
Runtime's outputs of the quantized model, which also quantizes the activations),
and `NAME.q.safetensors` (the model's int8 weights W and R, [D, K, 4H], as int64).

Run from this directory: `python gen_onnx_quantized.py` (requirements.txt pins the
versions).
"""

import json
import os
import tempfile

import numpy as np
import onnx
import onnxruntime
from onnx import TensorProto, helper, numpy_helper
from onnxruntime.quantization import QuantType, quantize_dynamic
from safetensors.numpy import save_file

rng = np.random.default_rng(15)
OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "cases")
X, H, B, T = 16, 24, 2, 20


def f32(*shape, scale):
    return (rng.uniform(-1, 1, shape) * scale).astype(np.float32)


def lstm_model(directions, peepholes):
    k = 1 / np.sqrt(H)
    inits = [
        numpy_helper.from_array(f32(directions, 4 * H, X, scale=k), "W"),
        numpy_helper.from_array(f32(directions, 4 * H, H, scale=k), "R"),
        numpy_helper.from_array(f32(directions, 8 * H, scale=k), "B"),
    ]
    inputs = ["x", "W", "R", "B", "", "", ""]
    if peepholes:
        inits.append(numpy_helper.from_array(f32(directions, 3 * H, scale=k), "P"))
        inputs.append("P")
    node = helper.make_node(
        "LSTM",
        inputs,
        ["Y", "Y_h", "Y_c"],
        hidden_size=H,
        direction="bidirectional" if directions == 2 else "forward",
    )
    graph = helper.make_graph(
        [node],
        "lstm",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [T, B, X])],
        [
            helper.make_tensor_value_info("Y", TensorProto.FLOAT, [T, directions, B, H]),
            helper.make_tensor_value_info("Y_h", TensorProto.FLOAT, [directions, B, H]),
            helper.make_tensor_value_info("Y_c", TensorProto.FLOAT, [directions, B, H]),
        ],
        inits,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 14)])


def run(path, x):
    s = onnxruntime.InferenceSession(path, providers=["CPUExecutionProvider"])
    y, yh, yc = s.run(None, {"x": x})
    t, d, b, h = y.shape
    y = np.ascontiguousarray(y.transpose(0, 2, 1, 3).reshape(t, b, d * h))
    if d == 1:
        return {"y": y, "h": yh[0], "c": yc[0]}
    return {"y": y, "h": yh, "c": yc}


cases = []
for name, directions, peepholes, per_channel in [
    ("quant_lstm_channel", 1, False, True),
    ("quant_lstm_tensor", 1, False, False),
    ("quant_lstm_bi", 2, True, True),
]:
    model = lstm_model(directions, peepholes)
    with tempfile.TemporaryDirectory() as tmp:
        fp = os.path.join(tmp, "f.onnx")
        qp = os.path.join(OUT, f"{name}.onnx")
        onnx.save(model, fp)
        quantize_dynamic(fp, qp, weight_type=QuantType.QInt8, per_channel=per_channel)
        x = f32(T, B, X, scale=1.0)
        save_file({"x": x}, os.path.join(OUT, f"{name}.inputs.safetensors"))
        save_file(run(fp, x), os.path.join(OUT, f"{name}.expected.safetensors"))
        save_file(run(qp, x), os.path.join(OUT, f"{name}.ort_int8.safetensors"))
        q = onnx.load(qp)
        ops = [n.op_type for n in q.graph.node]
        assert ops == ["DynamicQuantizeLSTM"], ops
        node = q.graph.node[0]
        stored = {i.name: numpy_helper.to_array(i) for i in q.graph.initializer}
        save_file(
            {
                "W": stored[node.input[1]].astype(np.int64),
                "R": stored[node.input[2]].astype(np.int64),
            },
            os.path.join(OUT, f"{name}.q.safetensors"),
        )
    cases.append({"case": name, "per_channel": per_channel, "directions": directions})

# PyTorch: the two lines docs/interop.md gives to get a quantized module's weights.
import torch  # noqa: E402

torch.manual_seed(15)


class Model(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.rnn = torch.nn.LSTM(X, H, num_layers=2)


model = Model().eval()
qmodel = torch.ao.quantization.quantize_dynamic(model, {torch.nn.LSTM}, dtype=torch.qint8)
w, b = qmodel.rnn.get_weight(), qmodel.rnn.get_bias()
state = {k: v.dequantize().contiguous() for k, v in w.items()} | {k: v.contiguous() for k, v in b.items()}
name = "quant_torch_lstm"
save_file({k: v.detach().numpy() for k, v in state.items()}, os.path.join(OUT, f"{name}.weights.safetensors"))
x = f32(T, B, X, scale=1.0)
save_file({"x": x}, os.path.join(OUT, f"{name}.inputs.safetensors"))
with torch.no_grad():
    for m, kind in [(model.rnn, "expected"), (qmodel.rnn, "torch_int8")]:
        y, (h, c) = m(torch.from_numpy(x))
        save_file({"y": y.numpy(), "h": h.numpy(), "c": c.numpy()}, os.path.join(OUT, f"{name}.{kind}.safetensors"))

with open(os.path.join(OUT, "quantized.json"), "w") as f:
    json.dump({"cases": cases, "torch_cases": [name]}, f, indent=1)
print("wrote", [c["case"] for c in cases])
