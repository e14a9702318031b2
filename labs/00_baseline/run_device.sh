#!/usr/bin/env bash
# run_device.sh — everything layer 00 shows, in one GPU session, inside a time budget:
#   build; mini (validated against the CPU reference) at batch 1 and 64; tiny_gptoss
#   (gpt-oss semantics, 160 checked positions: past the 128-key window, whose layers keep
#   a ring of 128 slots; and 300 positions: the ring wrapped twice); compute-sanitizer
#   memcheck on mini and tiny_gptoss; transformers checks (labs/moe/hf_check.py);
#   gptoss20b_mixtral at batch 1 (prompt 512, generate 128) and batch 64 (prompt 32,
#   generate 8: the baseline is slow); gptoss20b (gpt-oss semantics) at the same points.
# Logs and the JSON lines (results.jsonl) go to $OUT (default results/labs_00).
#   labs/00_baseline/run_device.sh [budget_seconds, default 700]
set -u
cd "$(dirname "$0")/../.." || exit 3
out=${OUT:-results/labs_00}
mkdir -p "$out"
budget=${1:-700}
d=labs/00_baseline/decode
left() { echo $((budget - SECONDS)); }
run() {  # run NAME CAP_SECONDS cmd...: log to $out/NAME.log (appended), JSON lines collected
  local name=$1 cap=$2; shift 2
  local t; t=$(left); [ "$t" -lt "$cap" ] && cap=$t
  if [ "$cap" -lt 10 ]; then echo "== $name: skipped, budget spent" | tee -a "$out/$name.log"; return; fi
  echo "== $name (cap ${cap}s): $*" | tee -a "$out/$name.log"
  timeout "$cap" "$@" >> "$out/$name.log" 2>&1
  echo "== $name: exit $? after ${SECONDS}s" | tee -a "$out/$name.log"
  grep '^{"schema"' "$out/$name.log" | tail -n 1 >> "$out/results.jsonl"
}
{ nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.mem --format=csv; nvcc --version | tail -n 2
  make -j16 labs 2>&1 | tail -n 5; } > "$out/build.log" 2>&1
[ -x "$d" ] || { cat "$out/build.log"; exit 3; }
run mini 40 "$d" --preset=mini
run mini 40 "$d" --preset=mini --batch=64 --prompt=64 --gen=32
# the host writer and the GPU fill must give the same weights: same validation logits
"$d" --write-checkpoint=/tmp/mini_ckpt --preset=mini --seed=42 > /dev/null
run mini 40 "$d" --model=/tmp/mini_ckpt --prompt=16 --gen=4
h=$(grep -o '"logits_hash":"[0-9a-f]*"' "$out/mini.log" | sed -n '1p;3p' | sort -u | wc -l)
echo "== mini: --preset=mini and --model=<written mini> logits_hash: $([ "$h" = 1 ] && echo same || echo DIFFERENT)" | tee -a "$out/mini.log"
run tiny_gptoss 40 "$d" --preset=tiny_gptoss --batch=3 --prompt=140 --gen=24 --check=160 --check-rows=3
run tiny_gptoss 40 "$d" --preset=tiny_gptoss --batch=2 --prompt=290 --gen=24 --check=300 --check-rows=2
run memcheck 90 compute-sanitizer --tool memcheck --leak-check full "$d" --preset=mini --batch=3 --prompt=12 --gen=6 --check=12 --check-rows=3 --stage-steps=2
run memcheck 90 compute-sanitizer --tool memcheck --leak-check full "$d" --preset=tiny_gptoss --batch=2 --prompt=132 --gen=4 --check=8 --check-rows=2 --stage-steps=1
run gptoss_b1 150 "$d" --preset=gptoss20b_mixtral
run gptoss_b64 150 "$d" --preset=gptoss20b_mixtral --batch=64 --prompt=32 --gen=8
run hf_check 150 python3 labs/moe/hf_check.py --decode "$d" --summary "$out/hf_check.json"
run gptoss_true_b1 100 "$d" --preset=gptoss20b --prompt=512 --gen=32
run gptoss_true_b64 120 "$d" --preset=gptoss20b --batch=64 --prompt=32 --gen=8
echo "run_device.sh: done in ${SECONDS}s"
