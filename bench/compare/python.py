"""cellc from Python against cellc from Rust and against PyTorch, in one process, in one run.

What it measures (X = H, float32, random weights), each figure the median of
repeated calls after warm-up; the passes alternate the systems and the median
of the passes is kept:

  call cost   `Kernel.step` at batch 1, LSTM H = 128, from Python, against the
              same step from Rust (`cellc bench --seq 1`): the difference is
              what a Python call costs (target: within 1.5 µs).
  network     a 2-layer bidirectional LSTM, H = 256, T = 100, batch 1, through
              `cellc.from_torch`, against the same network from Rust
              (`cellc bench --layers 2 --bidirectional`, the run `cellc run`
              makes) (target: within 5 %).
  table       LSTM and GRU at H in {128, 256, 512}, batch 1 and 64, T = 100
              (`Kernel.run`, and `from_torch` for the module) and T = 1 (one
              `Kernel.step` per call), each system at its better of 1 and 2
              threads: PyTorch (`torch.no_grad()`, nn.LSTM / nn.GRU over the
              sequence, nn.LSTMCell / nn.GRUCell per step) over cellc from
              Python, beside the same ratio with cellc from Rust (`cellc
              bench`, as the README's table): the two ratios should agree
              within 5 %.

Needs the `cellc` package installed (`pip install ./python`), torch and a
release build of the binary:

    cargo build --release
    python bench/compare/python.py [--passes 3] [--quick]
"""

import argparse
import json
import os
import platform
import subprocess
import sys
import time

import numpy as np
import torch

import cellc

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CELLC = os.path.join(ROOT, "target", "release", "cellc")
EXAMPLES = os.path.join(ROOT, "examples")


def median_time(f, steps, budget=1.0, min_samples=7, max_samples=41, warm=0.5):
    """Median µs per step of f() (which runs `steps` steps), after `warm`
    seconds of calls: the steady state, as `cellc bench` measures it (a
    thread pool that saw the machine disturbed, by the subprocess that ran
    before, say, runs alone for a while)."""
    start = time.perf_counter()
    f()
    while time.perf_counter() - start < warm:
        f()
    samples = []
    start = time.perf_counter()
    while len(samples) < max_samples and (len(samples) < min_samples or time.perf_counter() - start < budget):
        t = time.perf_counter()
        f()
        samples.append((time.perf_counter() - t) * 1e6 / steps)
    return float(np.median(samples))


def rust_bench(cell, h, batch, seq, threads, extra=()):
    cmd = [CELLC, "bench", os.path.join(EXAMPLES, f"{cell}.rnn"), "--dims", f"X={h},H={h}",
           "--batch", str(batch), "--seq", str(seq), "--threads", str(threads), "--json",
           "--no-unfused", "--samples", "15", *extra]
    return json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout)


def module(cell, h, **kw):
    torch.manual_seed(0)
    return (torch.nn.LSTM if cell == "lstm" else torch.nn.GRU)(h, h, **kw).eval()


def kernel(cell, h, threads):
    m = module(cell, h)
    return cellc.Cell(os.path.join(EXAMPLES, f"{cell}.rnn"), dims={"X": h, "H": h}).compile(
        m.state_dict(), threads=threads)


def py_step_us(cell, h, batch, threads, steps=200):
    k = kernel(cell, h, threads)
    state = k.new_state(batch)
    x = np.random.default_rng(1).standard_normal((batch, h)).astype(np.float32)
    step = k.step

    def run():
        for _ in range(steps):
            step(x, state)
    return median_time(run, steps)


def py_run_us(cell, h, batch, seq, threads):
    k = kernel(cell, h, threads)
    state = k.new_state(batch)
    xs = np.random.default_rng(1).standard_normal((seq, batch, h)).astype(np.float32)
    return median_time(lambda: k.run(xs, state), seq)


def py_module_us(cell, h, batch, seq, threads, **kw):
    net = cellc.from_torch(module(cell, h, **kw), threads=threads)
    x = torch.randn(seq, batch, h)
    return median_time(lambda: net(x), seq)


def torch_us(cell, h, batch, seq, threads):
    torch.set_num_threads(threads)
    x = torch.randn(seq, batch, h)
    with torch.no_grad():
        if seq > 1:
            m = module(cell, h)
            return median_time(lambda: m(x), seq)
        m = (torch.nn.LSTMCell if cell == "lstm" else torch.nn.GRUCell)(h, h)
        xt, steps = x[0], 50

        def run():
            s = (torch.zeros(batch, h), torch.zeros(batch, h)) if cell == "lstm" else torch.zeros(batch, h)
            for _ in range(steps):
                s = m(xt, s)
        return median_time(run, steps)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--passes", type=int, default=3)
    ap.add_argument("--quick", action="store_true", help="H = 128 and 256 only, batch 1 and 64")
    args = ap.parse_args()
    if not os.path.exists(CELLC):
        sys.exit("build the binary first: cargo build --release")
    sizes = [128, 256] if args.quick else [128, 256, 512]
    results = {}

    def add(key, v):
        results.setdefault(key, []).append(v)

    started = time.strftime("%Y-%m-%d %H:%M")
    for p in range(args.passes):
        print(f"pass {p + 1} of {args.passes}", file=sys.stderr, flush=True)
        for t in (1, 2):
            add(("call", "python", t), py_step_us("lstm", 128, 1, t))
            add(("call", "rust", t), rust_bench("lstm", 128, 1, 1, t)["us_per_step_median"])
            add(("net", "python", t), py_module_us("lstm", 256, 1, 100, t, num_layers=2,
                                                   bidirectional=True) * 100)
            add(("net", "rust", t), rust_bench("lstm", 256, 1, 100, t, ["--layers", "2", "--bidirectional"])
                ["us_per_run_median"])
        for cell in ("lstm", "gru"):
            for h in sizes:
                for batch in (1, 64):
                    for seq in (100, 1):
                        for t in (1, 2):
                            key = (cell, h, batch, seq, t)
                            add(key + ("rust",), rust_bench(cell, h, batch, seq, t)["us_per_step_median"])
                            if seq > 1:
                                add(key + ("python",), py_run_us(cell, h, batch, seq, t))
                                add(key + ("module",), py_module_us(cell, h, batch, seq, t))
                            else:
                                add(key + ("python",), py_step_us(cell, h, batch, t, 200 if batch == 1 else 20))
                            add(key + ("pytorch",), torch_us(cell, h, batch, seq, t))
    med = {k: float(np.median(v)) for k, v in results.items()}

    def best(prefix):
        return min(med[prefix + (t,)] for t in (1, 2))

    cpu = next((ln.split(":", 1)[1].strip() for ln in open("/proc/cpuinfo") if ln.startswith("model name")),
               platform.processor())
    print(f"\n{cpu}, {os.cpu_count()} CPUs; torch {torch.__version__}, cellc {cellc.__version__}; "
          f"{started}, medians of {args.passes} passes\n")
    call_py, call_rs = best(("call", "python")), best(("call", "rust"))
    print(f"call cost: Kernel.step, LSTM H = 128, batch 1: Python {call_py:.2f} µs, Rust {call_rs:.2f} µs, "
          f"difference {call_py - call_rs:+.2f} µs (target within 1.5)")
    net_py, net_rs = best(("net", "python")), best(("net", "rust"))
    print(f"network: 2-layer bidirectional LSTM, H = 256, T = 100, batch 1: from_torch {net_py:,.0f} µs, "
          f"Rust {net_rs:,.0f} µs, ratio {net_py / net_rs:.3f} (target within 1.05)\n")
    print("| cell | H | B | T | cellc Rust | cellc Python | from_torch | PyTorch | PyTorch / Rust | "
          "PyTorch / Python | agreement |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for cell in ("lstm", "gru"):
        for h in sizes:
            for batch in (1, 64):
                for seq in (100, 1):
                    k = (cell, h, batch, seq)
                    rs = min(med[k + (t, "rust")] for t in (1, 2))
                    py = min(med[k + (t, "python")] for t in (1, 2))
                    tc = min(med[k + (t, "pytorch")] for t in (1, 2))
                    mod = f"{min(med[k + (t, 'module')] for t in (1, 2)):.1f}" if seq > 1 else "-"
                    r_rs, r_py = tc / rs, tc / py
                    print(f"| {cell} | {h} | {batch} | {seq} | {rs:.1f} | {py:.1f} | {mod} | {tc:.1f} | "
                          f"{r_rs:.2f} | {r_py:.2f} | {r_py / r_rs:.3f} |")
    with open(os.path.join(os.path.dirname(os.path.abspath(__file__)), "python.json"), "w") as f:
        json.dump({"machine": cpu, "started": started, "passes": args.passes,
                   "medians": {"/".join(map(str, k)): v for k, v in med.items()}}, f, indent=1)


if __name__ == "__main__":
    main()
