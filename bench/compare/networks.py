"""Whole networks: cellc against PyTorch and ONNX Runtime, on this machine, in one run.

Cases (X = H, float32, random weights):

  bidir      2-layer bidirectional LSTM, H = 256 and 512, batch 1, T = 100, on 1 and 2
             threads (each system's best is kept)
  ragged     2-layer bidirectional LSTM, H = 256, batch 16, lengths drawn uniformly from
             10..100 (the same lengths for every system): PyTorch through
             pack_padded_sequence (packing included), ONNX Runtime through
             sequence_lens; time per real (unpadded) row-step
  scaling    cellc alone: a 4-layer LSTM, H = 512, batch 1, T = 100, 1 thread against
             2 threads

Each figure is the median of repeated runs after warm-up; the passes alternate the
systems, and the median of the passes is kept.

    cargo build --release
    python bench/compare/networks.py [--passes 3] [--quick]
"""

import argparse
import json
import os
import subprocess
import tempfile
import time

import numpy as np

from compare import median_time  # the same measurement as the single-cell table

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CELLC = os.path.join(ROOT, "target", "release", "cellc")


def lengths_for(batch, lo, hi):
    rng = np.random.default_rng(5)
    return rng.integers(lo, hi + 1, size=batch)


def cellc_run_us(h, layers, bidir, batch, seq, threads, lengths=None, schedule=None):
    """µs per whole run (all rows, all steps) from `cellc bench`."""
    cmd = [CELLC, "bench", os.path.join(ROOT, "examples", "lstm.rnn"), "--dims", f"X={h},H={h}",
           "--layers", str(layers), "--batch", str(batch), "--seq", str(seq),
           "--threads", str(threads), "--json", "--samples", "9"]
    if bidir:
        cmd.append("--bidirectional")
    if lengths is not None:
        cmd += ["--lengths", f"{lengths[0]}..{lengths[1]}"]
    if schedule:
        cmd += ["--schedule", schedule]
    r = json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout)
    return r["us_per_run_median"], r


def torch_run_us(h, layers, bidir, batch, seq, threads, lengths=None):
    import torch
    torch.set_num_threads(threads)
    m = torch.nn.LSTM(h, h, num_layers=layers, bidirectional=bidir)
    x = torch.randn(seq, batch, h)
    with torch.inference_mode():
        if lengths is None:
            return median_time(lambda: m(x), 1)
        lens = torch.tensor(lengths)

        def run():
            p = torch.nn.utils.rnn.pack_padded_sequence(x, lens, enforce_sorted=False)
            y, _ = m(p)
            torch.nn.utils.rnn.pad_packed_sequence(y, total_length=seq)
        return median_time(run, 1)


def onnx_network(h, layers, bidir, batch, seq, path, with_lengths):
    """A stack of ONNX LSTM nodes with the glue exporters write between them."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper
    rng = np.random.default_rng(0)
    d = 2 if bidir else 1
    nodes, inits = [], []
    inp = "X"
    for l in range(layers):
        xin = h if l == 0 else d * h
        s = 1 / np.sqrt(h)
        W = (rng.uniform(-s, s, (d, 4 * h, xin))).astype(np.float32)
        R = (rng.uniform(-s, s, (d, 4 * h, h))).astype(np.float32)
        B = (rng.uniform(-s, s, (d, 8 * h))).astype(np.float32)
        inits += [numpy_helper.from_array(W, f"W{l}"), numpy_helper.from_array(R, f"R{l}"),
                  numpy_helper.from_array(B, f"B{l}")]
        ins = [inp, f"W{l}", f"R{l}", f"B{l}"] + (["seq_lens"] if with_lengths else [])
        nodes.append(helper.make_node("LSTM", ins, [f"Y{l}"], hidden_size=h,
                                      direction="bidirectional" if bidir else "forward"))
        # Y [T, D, B, H] -> [T, B, D*H]
        nodes.append(helper.make_node("Transpose", [f"Y{l}"], [f"T{l}"], perm=[0, 2, 1, 3]))
        inits.append(numpy_helper.from_array(np.array([0, 0, -1], dtype=np.int64), f"shape{l}"))
        nodes.append(helper.make_node("Reshape", [f"T{l}", f"shape{l}"], [f"O{l}"]))
        inp = f"O{l}"
    inputs = [helper.make_tensor_value_info("X", TensorProto.FLOAT, [seq, batch, h])]
    if with_lengths:
        inputs.append(helper.make_tensor_value_info("seq_lens", TensorProto.INT32, [batch]))
    graph = helper.make_graph(nodes, "net", inputs,
                              [helper.make_tensor_value_info(inp, TensorProto.FLOAT, None)], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 14)])
    onnx.save(model, path)


def ort_run_us(h, layers, bidir, batch, seq, threads, lengths=None):
    import onnxruntime
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "m.onnx")
        onnx_network(h, layers, bidir, batch, seq, path, lengths is not None)
        o = onnxruntime.SessionOptions()
        o.intra_op_num_threads = threads
        o.inter_op_num_threads = 1
        sess = onnxruntime.InferenceSession(path, o, providers=["CPUExecutionProvider"])
    x = np.random.default_rng(1).standard_normal((seq, batch, h)).astype(np.float32)
    feed = {"X": x}
    if lengths is not None:
        feed["seq_lens"] = np.asarray(lengths, dtype=np.int32)
    return median_time(lambda: sess.run(None, feed), 1)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--passes", type=int, default=3)
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args()
    results = {}

    def add(key, v):
        results.setdefault(key, []).append(v)

    sizes = [256] if args.quick else [256, 512]
    ragged_lengths = (10, 100)
    for p in range(args.passes):
        for h in sizes:
            for t in (1, 2):
                add(("bidir", h, "cellc", t), cellc_run_us(h, 2, True, 1, 100, t)[0])
                add(("bidir", h, "pytorch", t), torch_run_us(h, 2, True, 1, 100, t))
                add(("bidir", h, "onnxruntime", t), ort_run_us(h, 2, True, 1, 100, t))
        # The ragged batch: cellc draws its lengths itself (seeded); the peers get
        # lengths from the same range. Compared per real row-step.
        for t in (1, 2):
            us, r = cellc_run_us(256, 2, True, 16, 100, t, lengths=ragged_lengths)
            add(("ragged", 256, "cellc", t), us / r["real_row_steps"])
            lens = lengths_for(16, *ragged_lengths)
            add(("ragged", 256, "pytorch", t), torch_run_us(256, 2, True, 16, 100, t, list(lens)) / lens.sum())
            add(("ragged", 256, "onnxruntime", t), ort_run_us(256, 2, True, 16, 100, t, list(lens)) / lens.sum())
        if not args.quick:
            for t in (1, 2):
                add(("scaling", 512, "cellc", t), cellc_run_us(512, 4, False, 1, 100, t)[0])
        print(f"pass {p + 1} done", flush=True)
    med = {k: float(np.median(v)) for k, v in results.items()}
    rows = []
    for (case, h, system, t), v in sorted(med.items()):
        rows.append({"case": case, "H": h, "system": system, "threads": t, "us": v})
    print(json.dumps(rows, indent=1))
    with open(os.path.join(os.path.dirname(os.path.abspath(__file__)), "networks.json"), "w") as f:
        json.dump({"passes": args.passes, "rows": rows}, f, indent=1)
        f.write("\n")
    print()
    print("| case | H | cellc | PyTorch | ONNX Runtime | fastest peer / cellc |")
    print("|---|---|---|---|---|---|")
    for case, h in sorted({(c, h) for (c, h, _, _) in med}):
        best = {s: min((v, t) for (c2, h2, s2, t), v in med.items() if (c2, h2, s2) == (case, h, s))
                for s in ("cellc", "pytorch", "onnxruntime") if any(k[:3] == (case, h, s) for k in med)}
        fmt = lambda s: f"{best[s][0]:.1f} ({best[s][1]} thr)" if s in best else "—"
        peers = [best[s][0] for s in ("pytorch", "onnxruntime") if s in best]
        ratio = f"{min(peers) / best['cellc'][0]:.2f}x" if peers else "—"
        print(f"| {case} | {h} | {fmt('cellc')} | {fmt('pytorch')} | {fmt('onnxruntime')} | {ratio} |")
    if ("scaling", 512, "cellc", 1) in med:
        print(f"\n4-layer LSTM H=512 batch 1 T=100: 2 threads are "
              f"{med[('scaling', 512, 'cellc', 1)] / med[('scaling', 512, 'cellc', 2)]:.2f}x one thread")


if __name__ == "__main__":
    main()
