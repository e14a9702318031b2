#!/usr/bin/env bash
# sweep.sh — ch15 over the token count: baseline, optimized and cuBLAS's grouped GEMM at
# qwen3moe T = 1, 8, 64, 512, 4096, gptoss20b T = 1, 64, and qwen3moe T = 64 with Zipf-skewed
# routing; one table row per shape, from the programs' JSON lines.
#
#   ch15/sweep.sh                      # after make ch15
#   RESULTS_DIR=out ch15/sweep.sh      # also keep every program's log and JSON line there
#   ch15/sweep.sh --iters=20           # extra flags go to every program
# Exit: 0 when every program passed, else 1.
set -u
cd "$(dirname "$0")/.." || exit 3
out=${RESULTS_DIR:-$(mktemp -d)}
mkdir -p "$out"
configs="qwen3moe:1 qwen3moe:8 qwen3moe:64 qwen3moe:512 qwen3moe:4096 gptoss20b:1 gptoss20b:64 qwen3moe:64:zipf:1.2"
fail=0
for c in $configs; do
  preset=${c%%:*}; rest=${c#*:}; T=${rest%%:*}; skew=uniform
  [ "$rest" != "$T" ] && skew=${rest#*:}
  tag="${preset}_T${T}_${skew/:/}"
  for v in baseline optimized; do
    ./ch15/$v --preset="$preset" --T="$T" --skew="$skew" "$@" > "$out/$tag.$v.log" 2>&1 || fail=1
    grep '^{"schema":"gauntlet.v1"' "$out/$tag.$v.log" | tail -n 1 > "$out/$tag.$v.json"
  done
done
python3 - "$out" $configs <<'PY'
import json, sys, os
out = sys.argv[1]
print(f"{'preset':10s} {'T':>5s} {'skew':9s} {'load_max/mean':>13s} {'baseline_ms':>11s} "
      f"{'optimized_ms':>12s} {'cublas_grouped_ms':>17s} {'speedup':>7s} {'vs_cublas':>9s} "
      f"{'pct_of_ceiling':>14s} status")
def load(p):
    try:
        with open(p) as f:
            return json.loads(f.read().strip() or "null")
    except (OSError, ValueError):
        return None
for c in sys.argv[2:]:
    preset, T, *skew = c.split(":")
    skew = ":".join(skew) or "uniform"
    tag = f"{preset}_T{T}_{skew.replace(':', '', 1)}"
    b, o = load(f"{out}/{tag}.baseline.json"), load(f"{out}/{tag}.optimized.json")
    num = lambda d, k: d.get(k) if d and d.get(k) is not None else float("nan")
    bm, om, cm = num(b, "median_ms"), num(o, "median_ms"), num(o, "cublas_grouped_ms")
    imb = num(o, "load_max") / num(o, "load_mean") if o else float("nan")
    st = f"{(b or {}).get('status', 'none')}/{(o or {}).get('status', 'none')}"
    print(f"{preset:10s} {int(T):5d} {skew:9s} {imb:13.2f} {bm:11.4f} {om:12.4f} {cm:17.4f} "
          f"{bm / om:7.2f} {cm / om:9.2f} {num(o, 'pct_of_ceiling'):14.1f} {st}")
PY
exit $fail
