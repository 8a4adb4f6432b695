#!/usr/bin/env bash
# An LSTM object's time per step, streaming and hoisted plans, beside the
# JIT's on one thread (`cellc bench --threads 1`), in one run.
#   bench/aot/compare.sh [H ...]      (default: 128 256 512; X = H, batch 1, T = 100)
set -euo pipefail
cd "$(dirname "$0")/../.."
cargo build --release -q
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
for h in "${@:-128 256 512}"; do
  for h1 in $h; do
    for plan in streaming hoisted; do
      target/release/cellc compile examples/lstm.rnn --dims "X=$h1,H=$h1" --plan "$plan" -o "$out/cell.o"
      cc -O2 -I"$out" bench/aot/lstm_bench.c "$out/cell.o" -lm -o "$out/bench"
      echo "H=$h1 object $plan: $("$out/bench" 1 100 | tr '\n' ' ')"
    done
    chosen=$(target/release/cellc compile examples/lstm.rnn --dims "X=$h1,H=$h1" -o "$out/cell.o" && grep -o 'Plan: [a-z]*' "$out/cell.h")
    jit=$(target/release/cellc bench examples/lstm.rnn --dims "X=$h1,H=$h1" --threads 1 --seq 100 --json --no-unfused \
      | python3 -c "import json,sys; d=json.load(sys.stdin); print(f\"{d['us_per_step_median']:.3f} us/step ({d['schedule']})\")")
    echo "H=$h1 object default: $chosen; JIT 1 thread T=100: $jit"
  done
done
