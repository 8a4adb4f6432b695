"""Block-circulant weights: cellc's FFT products against its own dense float32
step, on this machine, in one run.

Times, per step over sequences of T = 100 (`cellc bench --json`, the median of
its samples; each configuration at its better of 1 and 2 threads, passes
alternating the cells, the median of the passes kept):

  lstm        an LSTM, X = H, every matrix circulant in blocks of k
              (k = 8 and 16), against examples/lstm.rnn at the same sizes
  clstm       the C-LSTM paper's Google LSTM (examples/circulant/clstm.rnn,
              k = 16, and clstm_k8.rnn), against examples/lstmp.rnn at its
              sizes (X = 512, H = 1024, P = 512)

at batch 1 and 64, and for the circulant cells fused against unfused (the
optimizer off, every product and element-wise operation its own pass) in the
same run. Reports the weight bytes each step reads and the floor the cost
model gives. Writes circulant.json and prints a markdown table.

    cargo build --release
    python3 bench/compare/circulant.py [--passes 3] [--sizes 1024,2048] [--batches 1,64]
"""

import argparse
import json
import os
import platform
import statistics
import subprocess
import tempfile

OUT = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(OUT))
CELLC = os.path.join(ROOT, "target", "release", "cellc")


def circulant_lstm(k):
    """examples/lstm.rnn with every matrix circulant in blocks of k."""
    out = []
    with open(os.path.join(ROOT, "examples", "lstm.rnn")) as f:
        for line in f:
            if line.startswith("param ") and ", " in line.split("=")[0]:
                line = line.split(" = ")[0].rstrip() + "\n"
                line = line.replace(": [", f": circulant({k})[", 1)
            out.append(line)
    return "".join(out)


def bench(path, dims, batch, threads, unfused):
    cmd = [CELLC, "bench", path, "--seq", "100", "--batch", str(batch), "--threads", str(threads),
           "--json", "--samples", "7" if batch > 1 else "15"]
    if dims:
        cmd += ["--dims", dims]
    if not unfused:
        cmd.append("--no-unfused")
    return json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout)


def best(path, dims, batch, unfused=False):
    """The better of 1 and 2 threads."""
    runs = [bench(path, dims, batch, t, unfused) for t in (1, 2)]
    return min(runs, key=lambda r: r["us_per_step_median"])


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--passes", type=int, default=3)
    ap.add_argument("--sizes", default="1024,2048")
    ap.add_argument("--batches", default="1,64")
    args = ap.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    batches = [int(b) for b in args.batches.split(",")]
    tmp = tempfile.mkdtemp()
    files = {}
    for k in (8, 16):
        files[k] = os.path.join(tmp, f"clstm{k}.rnn")
        with open(files[k], "w") as f:
            f.write(circulant_lstm(k))
    dense_lstm = os.path.join(ROOT, "examples", "lstm.rnn")
    cases = []
    for h in sizes:
        for b in batches:
            dims = f"X={h},H={h}"
            cases.append((f"lstm H={h}", "dense", dense_lstm, dims, b))
            for k in (16, 8):
                cases.append((f"lstm H={h}", f"k={k}", files[k], dims, b))
    for b in batches:
        cases.append(("clstm (LSTMP 1024/512, X=512)", "dense", os.path.join(ROOT, "examples", "lstmp.rnn"),
                      "X=512,H=1024,P=512", b))
        for k, name in ((16, "clstm.rnn"), (8, "clstm_k8.rnn")):
            cases.append(("clstm (LSTMP 1024/512, X=512)", f"k={k}",
                          os.path.join(ROOT, "examples", "circulant", name), "", b))
    runs = {i: [] for i in range(len(cases))}
    for p in range(args.passes):
        for i, (_, kind, path, dims, b) in enumerate(cases):
            r = best(path, dims, b, unfused=(kind != "dense" and p == 0))
            runs[i].append(r)
            print(f"pass {p + 1}: {cases[i][0]} {kind} batch {b}: {r['us_per_step_median']:.1f} us/step "
                  f"({r['threads']} threads, {r['schedule']})", flush=True)
    rows = []
    for i, (cell, kind, _, _, b) in enumerate(cases):
        rs = runs[i]
        us = statistics.median(r["us_per_step_median"] for r in rs)
        first = rs[0]
        rows.append({
            "cell": cell, "weights": kind, "batch": b, "us_per_step": us,
            "threads": first["threads"], "schedule": first["schedule"],
            "weight_bytes_per_step": first["weight_bytes_per_step"],
            "flops_per_step": first["flops_per_step"],
            "floor_us_per_step": first["floor_us_per_step"],
            "weights_level": first["weights_level"],
            "unfused_over_fused": first.get("unfused_over_fused"),
            "passes": [r["us_per_step_median"] for r in rs],
        })
    dense = {(r["cell"], r["batch"]): r["us_per_step"] for r in rows if r["weights"] == "dense"}
    for r in rows:
        r["dense_over_this"] = dense[(r["cell"], r["batch"])] / r["us_per_step"]
    machine = {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count()}
    try:
        with open("/proc/cpuinfo") as f:
            machine["cpu"] = next(l.split(":", 1)[1].strip() for l in f if l.startswith("model name"))
    except (OSError, StopIteration):
        pass
    with open(os.path.join(OUT, "circulant.json"), "w") as f:
        json.dump({"machine": machine, "rows": rows}, f, indent=1)
    print(f"\n{machine['cpu']}, {machine['cores']} cores; T = 100; medians of {args.passes} passes\n")
    print("| cell | weights | batch | µs/step | dense / this | weight MB/step | floor µs | unfused / fused |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        uf = r["unfused_over_fused"]
        print(f"| {r['cell']} | {r['weights']} | {r['batch']} | {r['us_per_step']:.1f} | "
              f"{r['dense_over_this']:.2f} | {r['weight_bytes_per_step'] / 1e6:.2f} | "
              f"{r['floor_us_per_step']:.1f} | {'' if uf is None else f'{uf:.2f}'} |")


if __name__ == "__main__":
    main()
