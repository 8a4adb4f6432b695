"""cellc against the peers, on this machine, in one run.

Times an LSTM and a GRU (X = H, float32) per step, as the median of repeated
runs after warm-up, with:

  cellc          `cellc bench --json` (the plan and threads as given)
  pytorch        nn.LSTM / nn.GRU over a sequence (T = 100); nn.LSTMCell /
                 nn.GRUCell stepped one call at a time (T = 1)
  onnxruntime    an ONNX LSTM / GRU node (T = 100, or T = 1 called again and again)
  tract, candle  bench/peers (tract-onnx on the same ONNX model, candle-nn's
                 LSTM / GRU `seq` and `step`)

at H in {128, 256, 512, 1024}, batch 1 and 64, T = 1 and 100, on 1 and 2
threads, in three passes (every system once per pass, so that load on a shared
machine hits all of them alike); the median of the passes is kept, and each
system's best thread count. Prints a markdown table with
the ratio of the fastest peer to cellc, writes results.json and a plot
(plot.svg, plot.png) of µs/step against H.

    cargo build --release                         # cellc
    (cd bench/peers && cargo build --release)     # tract and candle
    python bench/compare/compare.py [--quick] [--cells lstm,gru] [--sizes 128,256] [--passes 3]
"""

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CELLC = os.path.join(ROOT, "target", "release", "cellc")
PEERS = os.path.join(ROOT, "bench", "peers", "target", "release", "cellc-peers")
OUT = os.path.dirname(os.path.abspath(__file__))


def median_time(f, steps, budget=1.5, min_samples=5, max_samples=21):
    """Median µs per step of f() (which runs `steps` steps), after warm-up."""
    for _ in range(2):
        f()
    samples = []
    start = time.perf_counter()
    while len(samples) < max_samples and (len(samples) < min_samples or time.perf_counter() - start < budget):
        t = time.perf_counter()
        f()
        samples.append((time.perf_counter() - t) * 1e6 / steps)
    return float(np.median(samples))


def onnx_model(cell, h, batch, seq, path):
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    gates = 4 if cell == "lstm" else 3
    rng = np.random.default_rng(0)
    s = 1 / np.sqrt(h)
    inits = [
        numpy_helper.from_array(rng.uniform(-s, s, (1, gates * h, h)).astype(np.float32), "W"),
        numpy_helper.from_array(rng.uniform(-s, s, (1, gates * h, h)).astype(np.float32), "R"),
        numpy_helper.from_array(rng.uniform(-s, s, (1, 2 * gates * h)).astype(np.float32), "B"),
    ]
    op = "LSTM" if cell == "lstm" else "GRU"
    attrs = {} if cell == "lstm" else {"linear_before_reset": 1}
    node = helper.make_node(op, ["X", "W", "R", "B"], ["Y"], hidden_size=h, **attrs)
    graph = helper.make_graph([node], "rnn", [helper.make_tensor_value_info("X", TensorProto.FLOAT, [seq, batch, h])],
                              [helper.make_tensor_value_info("Y", TensorProto.FLOAT, [seq, 1, batch, h])], inits)
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 14)]), path)


def bench_cellc(cell, h, batch, seq, threads):
    cmd = [CELLC, "bench", os.path.join(ROOT, "examples", f"{cell}.rnn"), "--dims", f"X={h},H={h}",
           "--batch", str(batch), "--seq", str(seq), "--threads", str(threads), "--json", "--no-unfused",
           "--samples", "7" if batch * h >= 64 * 512 else "15"]
    r = json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout)
    return r["us_per_step_median"], r


def bench_torch(cell, h, batch, seq, threads):
    import torch
    torch.set_num_threads(threads)
    x = torch.randn(seq, batch, h)
    with torch.inference_mode():
        if seq > 1:
            m = torch.nn.LSTM(h, h) if cell == "lstm" else torch.nn.GRU(h, h)
            return median_time(lambda: m(x), seq)
        m = torch.nn.LSTMCell(h, h) if cell == "lstm" else torch.nn.GRUCell(h, h)
        xt = x[0]
        steps = 50

        def run():
            s = (torch.zeros(batch, h), torch.zeros(batch, h)) if cell == "lstm" else torch.zeros(batch, h)
            for _ in range(steps):
                s = m(xt, s)
        return median_time(run, steps)


def bench_ort(cell, h, batch, seq, threads, model):
    import onnxruntime
    o = onnxruntime.SessionOptions()
    o.intra_op_num_threads = threads
    o.inter_op_num_threads = 1
    sess = onnxruntime.InferenceSession(model, o, providers=["CPUExecutionProvider"])
    x = np.random.default_rng(1).standard_normal((seq, batch, h)).astype(np.float32)
    if seq > 1:
        return median_time(lambda: sess.run(None, {"X": x}), seq)
    steps = 50

    def run():
        for _ in range(steps):
            sess.run(None, {"X": x})
    return median_time(run, steps)


def bench_peer(system, cell, h, batch, seq, threads, model):
    env = dict(os.environ, RAYON_NUM_THREADS=str(threads), OMP_NUM_THREADS=str(threads))
    r = subprocess.run([PEERS, system, cell, str(h), str(batch), str(seq), model], check=True,
                       capture_output=True, text=True, env=env)
    return json.loads(r.stdout)["us_per_step_median"]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="H in {128, 512}, fewer configurations")
    ap.add_argument("--cells", default="lstm,gru")
    ap.add_argument("--sizes", default="128,256,512,1024")
    ap.add_argument("--systems", default="cellc,pytorch,onnxruntime,tract,candle")
    ap.add_argument("--passes", type=int, default=3,
                    help="measure every system this many times, in rotation, and keep the median")
    ap.add_argument("--replot", action="store_true",
                    help="measure nothing: print the table and redraw the plot from results.json")
    args = ap.parse_args()
    if args.replot:
        with open(os.path.join(OUT, "results.json")) as f:
            saved = json.load(f)
        print(table(saved["results"], saved["machine"]))
        plot(saved["results"])
        return
    cells = args.cells.split(",")
    sizes = [128, 512] if args.quick else [int(s) for s in args.sizes.split(",")]
    systems = args.systems.split(",")
    if "tract" in systems or "candle" in systems:
        if not os.path.exists(PEERS):
            print(f"note: {PEERS} is not built; skipping tract and candle", file=sys.stderr)
            systems = [s for s in systems if s not in ("tract", "candle")]
    results = []
    tmp = tempfile.mkdtemp()
    for cell in cells:
        for h in sizes:
            for batch in [1, 64]:
                for seq in [100, 1]:
                    model = os.path.join(tmp, f"{cell}_{h}_{batch}_{seq}.onnx")
                    onnx_model(cell, h, batch, seq, model)
                    row = {"cell": cell, "H": h, "batch": batch, "seq": seq, "us": {}, "threads": {}}
                    # Every pass measures every system and thread count once, so
                    # a burst of load on the shared machine hits them alike; the
                    # median over passes is kept.
                    samples = {}
                    for _ in range(args.passes):
                        for system in systems:
                            # tract runs on one thread; the others on 1 and 2.
                            for threads in ([1] if system == "tract" else [1, 2]):
                                try:
                                    if system == "cellc":
                                        us, full = bench_cellc(cell, h, batch, seq, threads)
                                        row.setdefault("schedule", {})[threads] = full.get("schedule")
                                        row.setdefault("cellc_bench", {}).setdefault(threads, []).append(full)
                                    elif system == "pytorch":
                                        us = bench_torch(cell, h, batch, seq, threads)
                                    elif system == "onnxruntime":
                                        us = bench_ort(cell, h, batch, seq, threads, model)
                                    else:
                                        us = bench_peer(system, cell, h, batch, seq, threads, model)
                                except Exception as e:  # a peer that cannot run a case
                                    print(f"  {system} failed on {cell} H={h} B={batch} T={seq}: {e}", file=sys.stderr)
                                    continue
                                samples.setdefault(system, {}).setdefault(threads, []).append(us)
                    for system, by_threads in samples.items():
                        med = {t: float(np.median(v)) for t, v in by_threads.items()}
                        row.setdefault("by_threads", {})[system] = med
                        t = min(med, key=med.get)
                        row["us"][system], row["threads"][system] = med[t], t
                    results.append(row)
                    line = "  ".join(f"{s} {row['us'][s]:.1f}" for s in row["us"])
                    print(f"{cell} H={h} B={batch} T={seq}: {line}", file=sys.stderr, flush=True)
    machine = {
        "cpu": next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), platform.processor()),
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "passes": args.passes,
    }
    with open(os.path.join(OUT, "results.json"), "w") as f:
        json.dump({"machine": machine, "results": results}, f, indent=1)
    print(table(results, machine))
    plot(results)


def table(results, machine):
    peers = ["pytorch", "onnxruntime", "tract", "candle"]
    lines = [f"Machine: {machine['cpu']}, {machine['cores']} cores. µs per step (median of {machine.get('passes', 1)} passes), each system at its best of 1 or 2 threads.", "",
             "| cell | H | B | T | cellc | pytorch | onnxruntime | tract | candle | best peer / cellc |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        us = r["us"]
        cells = [f"{us[s]:.1f}" if s in us else "" for s in ["cellc"] + peers]
        best = min((us[s] for s in peers if s in us), default=None)
        ratio = f"{best / us['cellc']:.2f}" if best and "cellc" in us else ""
        lines.append(f"| {r['cell']} | {r['H']} | {r['batch']} | {r['seq']} | " + " | ".join(cells) + f" | {ratio} |")
    return "\n".join(lines)


def plot(results):
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("note: no matplotlib; no plot", file=sys.stderr)
        return
    cells = sorted({r["cell"] for r in results}, key=lambda c: (c != "lstm", c))
    cases = sorted({(r["batch"], -r["seq"]) for r in results})
    fig, axes = plt.subplots(len(cells), len(cases), figsize=(3.6 * len(cases), 3.2 * len(cells)), squeeze=False)
    for ax, (cell, (batch, nseq)) in zip(axes.flat, [(c, k) for c in cells for k in cases]):
        seq = -nseq
        rows = [r for r in results if (r["cell"], r["batch"], r["seq"]) == (cell, batch, seq)]
        systems = sorted({s for r in rows for s in r["us"]}, key=lambda s: (s != "cellc", s))
        for s in systems:
            pts = [(r["H"], r["us"][s]) for r in rows if s in r["us"]]
            ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=s, linewidth=2.5 if s == "cellc" else 1.2)
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_title(f"{cell}, batch {batch}, " + ("T = 100" if seq > 1 else "one step per call"), fontsize=9)
        ax.set_xlabel("H (= X)")
        ax.set_ylabel("µs per step")
        ax.grid(True, which="both", alpha=0.3)
    axes[0][0].legend(fontsize=7)
    fig.tight_layout()
    for ext in ("svg", "png"):
        fig.savefig(os.path.join(OUT, f"plot.{ext}"))


if __name__ == "__main__":
    main()
