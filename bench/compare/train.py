"""One training step (forward and backward through a sequence), cellc
(`cellc.torch.Cell`) against PyTorch, in one process, in one run.

What it measures (X = H, T = 100, float32, random weights; the loss is the
sum of the outputs times fixed random weights, so both systems get the same
adjoints): the time of `y, _ = m(x); (y * w).sum().backward()` for

  lstm       examples/lstm.rnn against nn.LSTM (oneDNN's fused training path
             on the CPU);
  gru        examples/gru.rnn against nn.GRU;
  ln-lstm    examples/layernorm_lstm.rnn against the same cell written in
             PyTorch (eager, a Python loop over the steps);

at H in {256, 512} and batch in {32, 64} (--quick: H = 256, batch 32),
each system at its better of 1 and 2 threads (torch.set_num_threads;
cellc's `threads=`). Each figure is the median of the timed calls of a pass
after a warm-up call; passes alternate the systems and the median of the
passes is kept. The ratio is PyTorch's time over cellc's (above 1: cellc is
faster). Also printed for the LSTM: the tape cellc keeps (the inputs, each
step's h and c, and the four gates' pre-activations: X + 6H floats per step
and row) beside what oneDNN's training workspace holds for the same step
(the four gates, c and h: 6H, plus the input it is given back: X).

Needs the `cellc` package installed (`pip install ./python`) and torch:

    python bench/compare/train.py [--passes 3] [--quick]
"""

import argparse
import json
import os
import platform
import time

import numpy as np
import torch

import cellc.torch

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


class LayerNormLSTM(torch.nn.Module):
    """examples/layernorm_lstm.rnn in PyTorch: the same gates, gains and shifts."""

    def __init__(self, X, H):
        super().__init__()
        self.W = torch.nn.Linear(X, 4 * H, bias=False)
        self.U = torch.nn.Linear(H, 4 * H, bias=False)
        self.ln = torch.nn.ModuleList(torch.nn.LayerNorm(H) for _ in range(5))
        self.H = H

    def forward(self, x):
        T, B, _ = x.shape
        h = x.new_zeros(B, self.H)
        c = x.new_zeros(B, self.H)
        ys = []
        wx = self.W(x)
        for t in range(T):
            g = (wx[t] + self.U(h)).chunk(4, dim=1)
            i = torch.sigmoid(self.ln[0](g[0]))
            f = torch.sigmoid(self.ln[1](g[1]) + 1.0)
            gg = torch.tanh(self.ln[2](g[2]))
            o = torch.sigmoid(self.ln[3](g[3]))
            c = self.ln[4](f * c + i * gg)
            h = o * torch.tanh(c)
            ys.append(h)
        return torch.stack(ys), None


def make(kind, H, threads):
    X = H
    if kind == "lstm":
        ref = torch.nn.LSTM(X, H)
        ours = cellc.torch.Cell(os.path.join(ROOT, "examples/lstm.rnn"), dims={"X": X, "H": H}, threads=threads)
    elif kind == "gru":
        ref = torch.nn.GRU(X, H)
        ours = cellc.torch.Cell(os.path.join(ROOT, "examples/gru.rnn"), dims={"X": X, "H": H}, threads=threads)
    else:
        ref = LayerNormLSTM(X, H)
        ours = cellc.torch.Cell(os.path.join(ROOT, "examples/layernorm_lstm.rnn"), dims={"X": X, "H": H},
                                threads=threads)
    return ref, ours


def step_time(m, x, w, calls):
    """Median seconds of `calls` training steps (after one warm-up)."""
    def one():
        for p in m.parameters():
            p.grad = None
        y, _ = m(x)
        (y * w).sum().backward()
    one()
    times = []
    for _ in range(calls):
        t = time.perf_counter()
        one()
        times.append(time.perf_counter() - t)
    return float(np.median(times))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--passes", type=int, default=3)
    ap.add_argument("--calls", type=int, default=5)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "train.json"))
    args = ap.parse_args()
    T = 100
    sizes = [(256, 32)] if args.quick else [(256, 32), (256, 64), (512, 32), (512, 64)]
    kinds = ["lstm", "gru", "ln-lstm"]
    rows = []
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs; T = {T}, X = H")
    for kind in kinds:
        for H, B in sizes:
            torch.manual_seed(0)
            x = torch.randn(T, B, H)
            w = torch.randn(T, B, H)
            best = {}
            for threads in (1, 2):
                torch.set_num_threads(threads)
                ref, ours = make(kind, H, threads)
                passes = {"torch": [], "cellc": []}
                for _ in range(args.passes):
                    passes["torch"].append(step_time(ref, x, w, args.calls))
                    passes["cellc"].append(step_time(ours, x, w, args.calls))
                for k, v in passes.items():
                    med = float(np.median(v))
                    if k not in best or med < best[k][0]:
                        best[k] = (med, threads)
            ratio = best["torch"][0] / best["cellc"][0]
            row = {"cell": kind, "H": H, "batch": B, "T": T,
                   "torch_ms": best["torch"][0] * 1e3, "torch_threads": best["torch"][1],
                   "cellc_ms": best["cellc"][0] * 1e3, "cellc_threads": best["cellc"][1],
                   "torch_over_cellc": ratio}
            if kind == "lstm":
                X = H
                row["tape_mb"] = 4 * T * B * (X + 6 * H) / 1e6
                row["onednn_activations_mb"] = 4 * T * B * (X + 6 * H) / 1e6
            rows.append(row)
            print(f"{kind:8} H={H:4} B={B:3}: torch {row['torch_ms']:9.2f} ms ({row['torch_threads']}t)  "
                  f"cellc {row['cellc_ms']:9.2f} ms ({row['cellc_threads']}t)  torch/cellc {ratio:5.2f}"
                  + (f"  tape {row['tape_mb']:.1f} MB vs {row['onednn_activations_mb']:.1f} MB"
                     if "tape_mb" in row else ""), flush=True)
    with open(args.out, "w") as f:
        json.dump({"machine": platform.processor() or platform.machine(), "rows": rows}, f, indent=1)


if __name__ == "__main__":
    main()
