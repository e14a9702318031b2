#!/usr/bin/env bash
# record.sh — one full measuring run on a GPU, for expectations/<hardware_key>.json.
#
#   scripts/record.sh OUTDIR [chNN ...]      (default: every chapter with a pair)
#   MEMCHECK=0 scripts/record.sh …           skip step 4 (memcheck is slow)
#   LAB=0 …                                   skip the lab's mini validation (step 3b)
#
# 1. builds everything; 2. measures the ceilings (ch02/ceilings) and merges them into
# expectations/<key>.json first, so every later program reports % of measured ceilings;
# 3. runs scripts/pair.sh for each chapter (JSON lines under OUTDIR/results); 4. runs
# compute-sanitizer memcheck on every program at --size=small --iters=2; 5. packs OUTDIR
# into OUTDIR.tgz. Afterwards, on any machine:
#   scripts/check_expectations set-ceilings OUTDIR/ceilings.txt --command "scripts/record.sh …"
#   scripts/check_expectations update OUTDIR/results --command "scripts/record.sh …"
#   scripts/check_expectations readme
set -u
cd "$(dirname "$0")/.." || exit 3
[ $# -ge 1 ] || { echo "usage: scripts/record.sh OUTDIR [chNN ...]" >&2; exit 2; }
out=$1; shift
mkdir -p "$out/results"
chapters=${*:-$(for d in ch[0-9][0-9]; do [ -f "$d/baseline.cu" ] && [ -f "$d/optimized.cu" ] && echo "$d"; done)}
log() { echo "$@" | tee -a "$out/summary.txt"; }
nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.max.sm,clocks.mem,temperature.gpu,power.draw \
  --format=csv > "$out/gpu.txt" 2>&1
make -j"$(nproc)" all > "$out/build.txt" 2>&1 || { log "build failed"; tail -n 30 "$out/build.txt"; }

if [ -x ch02/ceilings ]; then
  ./ch02/ceilings > "$out/ceilings.txt" 2>&1; rc=$?
  log "ch02/ceilings rc=$rc"
  [ "$rc" -eq 0 ] && python3 scripts/check_expectations set-ceilings "$out/ceilings.txt" \
    --command "scripts/record.sh (ch02/ceilings)" >> "$out/summary.txt"
fi
for ch in $chapters; do
  RESULTS_DIR="$out/results" timeout 600 scripts/pair.sh "$ch" > "$out/results/$ch.pair.txt" 2>&1
  log "$ch pair rc=$? :: $(tail -n 1 "$out/results/$ch.pair.txt")"
done
if [ "${LAB:-1}" = 1 ] && [ -x labs/00_baseline/decode ]; then
  timeout 300 ./labs/00_baseline/decode --preset=mini --batch=1 --prompt=16 --gen=64 --check=64 \
    > "$out/results/labs_00_mini.log" 2>&1
  log "labs/00_baseline mini rc=$? :: $(grep -h '^labs\|top-1\|rel_l2' "$out/results/labs_00_mini.log" | tail -n 2 | tr '\n' ' ')"
fi
[ "${MEMCHECK:-1}" = 1 ] || chapters=""
for ch in $chapters; do
  for p in "$ch"/baseline "$ch"/optimized; do
    [ -x "$p" ] || continue
    timeout 600 compute-sanitizer --tool memcheck "./$p" --size=small --iters=2 --warmup=0 \
      > "$out/results/$(echo "$p" | tr / _).memcheck.txt" 2>&1
    log "memcheck $p rc=$? :: $(grep -h 'ERROR SUMMARY' "$out/results/$(echo "$p" | tr / _).memcheck.txt" | tail -n 1)"
  done
done
tar czf "$out.tgz" -C "$(dirname "$out")" "$(basename "$out")"
cat "$out/summary.txt"
