"""Narrow weights: cellc in float32, bfloat16 and int8 against the peers' float32
and int8, on this machine, in one run.

Times an LSTM and a GRU (X = H, batch 1 unless --batch says) per step, T = 100 (a
sequence) and T = 1 (one step per call), as the median of repeated runs after
warm-up, with:

  cellc f32 / bf16 / int8   `cellc bench --precision P --json` (float32 arithmetic)
  cellc int8-compute        `cellc bench --compute int8 --json` (integer arithmetic:
                            activations quantized per batch row)
  onnxruntime f32           an ONNX LSTM / GRU node (as compare.py)
  onnxruntime int8          that model through onnxruntime.quantization.quantize_dynamic
                            (per channel, int8 weights): a DynamicQuantizeLSTM node
                            (LSTM only: ONNX Runtime quantizes no GRU)
  pytorch int8              torch.ao.quantization.quantize_dynamic of nn.LSTM / nn.GRU
                            (T = 100) and nn.LSTMCell / nn.GRUCell (T = 1)

at H in {256, 512, 1024}, on 1 and 2 threads (each system's best is kept), in
passes that alternate the systems; the median of the passes is kept. Writes
precision.json and prints a markdown table.

    cargo build --release
    python bench/compare/precision.py [--passes 3] [--sizes 256,512,1024] [--cells lstm,gru]
"""

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import warnings

import numpy as np

from compare import CELLC, ROOT, bench_ort, median_time, onnx_model

OUT = os.path.dirname(os.path.abspath(__file__))
warnings.filterwarnings("ignore")


def cellc_us(cell, h, batch, seq, threads, precision):
    arithmetic = ["--compute", "int8"] if precision == "int8-compute" else ["--precision", precision]
    cmd = [CELLC, "bench", os.path.join(ROOT, "examples", f"{cell}.rnn"), "--dims", f"X={h},H={h}",
           "--batch", str(batch), "--seq", str(seq), "--threads", str(threads), *arithmetic, "--json",
           "--no-unfused", "--samples", "9" if seq > 1 else "21"]
    r = json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout)
    return r["us_per_step_median"], r.get("schedule")


def quantized_onnx(model, path):
    from onnxruntime.quantization import QuantType, quantize_dynamic
    quantize_dynamic(model, path, weight_type=QuantType.QInt8, per_channel=True)


def torch_int8_us(cell, h, batch, seq, threads):
    import torch
    torch.set_num_threads(threads)

    class Wrap(torch.nn.Module):
        def __init__(self, m):
            super().__init__()
            self.m = m

    if seq > 1:
        m = torch.nn.LSTM(h, h) if cell == "lstm" else torch.nn.GRU(h, h)
    else:
        m = torch.nn.LSTMCell(h, h) if cell == "lstm" else torch.nn.GRUCell(h, h)
    kind = type(m)
    q = torch.ao.quantization.quantize_dynamic(Wrap(m), {kind}, dtype=torch.qint8).m
    x = torch.randn(seq, batch, h)
    with torch.inference_mode():
        if seq > 1:
            return median_time(lambda: q(x), seq)
        steps = 50
        xt = x[0]

        def run():
            s = (torch.zeros(batch, h), torch.zeros(batch, h)) if cell == "lstm" else torch.zeros(batch, h)
            for _ in range(steps):
                s = q(xt, s)
        return median_time(run, steps)


SYSTEMS = ["cellc f32", "cellc bf16", "cellc int8", "cellc int8-compute", "onnxruntime f32", "onnxruntime int8",
           "pytorch int8"]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--cells", default="lstm,gru")
    ap.add_argument("--sizes", default="256,512,1024")
    ap.add_argument("--passes", type=int, default=3)
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--seqs", default="100,1")
    ap.add_argument("--systems", default=",".join(SYSTEMS), help="a comma-separated subset of: " + ", ".join(SYSTEMS))
    args = ap.parse_args()
    systems = [s for s in SYSTEMS if s in args.systems.split(",")]
    batch = args.batch
    tmp = tempfile.mkdtemp()
    results = []
    for cell in args.cells.split(","):
        for h in [int(s) for s in args.sizes.split(",")]:
            for seq in [int(t) for t in args.seqs.split(",")]:
                model = os.path.join(tmp, f"{cell}_{h}_{seq}.onnx")
                onnx_model(cell, h, batch, seq, model)
                qmodel = None
                if cell == "lstm":
                    qmodel = os.path.join(tmp, f"{cell}_{h}_{seq}.int8.onnx")
                    quantized_onnx(model, qmodel)
                samples, plans = {}, {}
                for _ in range(args.passes):
                    for system in systems:
                        for threads in [1, 2]:
                            try:
                                if system.startswith("cellc"):
                                    us, plan = cellc_us(cell, h, batch, seq, threads, system.split()[1])
                                    plans.setdefault(system, {})[threads] = plan
                                elif system == "onnxruntime f32":
                                    us = bench_ort(cell, h, batch, seq, threads, model)
                                elif system == "onnxruntime int8":
                                    if qmodel is None:
                                        continue
                                    us = bench_ort(cell, h, batch, seq, threads, qmodel)
                                else:
                                    us = torch_int8_us(cell, h, batch, seq, threads)
                            except Exception as e:  # a peer that cannot run a case
                                print(f"  {system} failed on {cell} H={h} T={seq}: {e}", file=sys.stderr)
                                continue
                            samples.setdefault(system, {}).setdefault(threads, []).append(us)
                row = {"cell": cell, "H": h, "seq": seq, "us": {}, "threads": {}, "plans": plans}
                for system, by_threads in samples.items():
                    med = {t: float(np.median(v)) for t, v in by_threads.items()}
                    t = min(med, key=med.get)
                    row["us"][system], row["threads"][system] = med[t], t
                results.append(row)
                line = "  ".join(f"{s} {row['us'][s]:.1f}" for s in row["us"])
                print(f"{cell} H={h} T={seq}: {line}", file=sys.stderr, flush=True)
    machine = {
        "cpu": next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")),
                    platform.processor()),
        "cores": os.cpu_count(),
        "passes": args.passes,
        "batch": batch,
    }
    with open(os.path.join(OUT, "precision.json"), "w") as f:
        json.dump({"machine": machine, "results": results}, f, indent=1)
    print(table(results, machine))


def table(results, machine):
    systems = [s for s in SYSTEMS if any(s in r["us"] for r in results)]
    lines = [f"{machine['cpu']}, {machine['cores']} cores; µs per step, batch {machine.get('batch', 1)}, "
             f"median of {machine['passes']} passes (each system's best of 1 and 2 threads)", "",
             "| cell | H | T | " + " | ".join(systems)
             + " | bf16 / f32 | int8 / f32 | int8-compute / f32 | fastest int8 peer / int8 | / int8-compute |",
             "|---|---|---|" + "---|" * (len(systems) + 5)]
    for r in results:
        us = r["us"]
        cells = [f"{us[s]:.1f}" if s in us else "-" for s in systems]
        f32 = us.get("cellc f32")
        ratio = lambda s: f"{f32 / us[s]:.2f}x" if f32 and s in us else "-"
        peers = [us[s] for s in ("onnxruntime int8", "pytorch int8") if s in us]
        vs = lambda s: f"{min(peers) / us[s]:.2f}x" if peers and s in us else "-"
        lines.append(f"| {r['cell']} | {r['H']} | {r['seq']} | " + " | ".join(cells)
                     + f" | {ratio('cellc bf16')} | {ratio('cellc int8')} | {ratio('cellc int8-compute')}"
                     + f" | {vs('cellc int8')} | {vs('cellc int8-compute')} |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
