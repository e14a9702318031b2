#!/usr/bin/env bash
# ch13 on the H200 (one device session): timing pairs, delayed/fast-accum rows, an M sweep,
# memcheck, ncu. Logs under $OUT/w, tarred into $OUT/ch13_h200.tgz. Run as
#   bash ch13/h200_run.sh        (binaries built here and carried: ch13/baseline, ch13/optimized)
# This is the script as it produced the recorded results (git d1feebebfb55). Its
# CUBLASLT_LOG_LEVEL=2 turned out to be cuBLASLt's trace level, not errors only (1): every
# cublasLtMatmul call printed a line, timed ones included. The M = 4096 baseline median
# was the same as in an earlier session without it (0.1742 ms); set it to 1 or drop it.
set -u
W=$OUT/w; mkdir -p "$W"
export CUBLASLT_LOG_LEVEL=2  # errors only: why cuBLASLt refuses, if it does
nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.max.sm,clocks.mem --format=csv > "$W/smi.txt" 2>&1
{
  NO_BUILD=1 RESULTS_DIR=$W/res scripts/pair.sh ch13; echo "pair rc=$?"
  NO_BUILD=1 RESULTS_DIR=$W/res64 scripts/pair.sh ch13 --M=64; echo "pair64 rc=$?"
  ./ch13/optimized --scaling=delayed; echo "rc=$?"
  ./ch13/optimized --scaling=delayed --M=64; echo "rc=$?"
  ./ch13/optimized --fast_accum; echo "rc=$?"
} > "$W/runs.log" 2>&1
grep -E "^(==|#.*(validate|step|reaches)|variant|baseline|optimized|fp8|quant|step|ch13:|pair|rc=)" "$W/runs.log" | cut -c1-200
for M in 256 1024; do
  for p in "baseline" "optimized"; do
    timeout 30 ./ch13/$p --M=$M --json; echo "rc=$? M=$M $p"
  done
done > "$W/sweep.jsonl" 2>&1
grep -c PASS "$W/sweep.jsonl"
for p in "baseline" "optimized" "optimized --scaling=delayed"; do
  echo "== memcheck $p"
  timeout 70 compute-sanitizer --tool memcheck --leak-check full ./ch13/$p --size=small --iters=2 --warmup=0 2>&1 | grep -vE "^(#|variant)" | tail -6
done > "$W/memcheck.log" 2>&1
cat "$W/memcheck.log"
M_="sm__pipe_tensor_op_hmma_cycles_active.avg.pct_of_peak_sustained_elapsed,sm__pipe_tensor_op_gmma_cycles_active.avg.pct_of_peak_sustained_active,sm__cycles_elapsed.avg.per_second,dram__throughput.avg.pct_of_peak_sustained_elapsed,gpu__time_duration.sum,sm__throughput.avg.pct_of_peak_sustained_elapsed,launch__grid_size"
i=0
for a in "optimized" "optimized --M=64" "baseline"; do
  v=${a%% *}; i=$((i+1))
  echo "== ncu $a" > "$W/ncu_$i.log"
  timeout 45 ncu --clock-control none --nvtx --nvtx-include "gauntlet@ch13.$v.timed]" --metrics "$M_" \
    ./ch13/$a --warmup=0 --iters=1 >> "$W/ncu_$i.log" 2>&1
  echo "== ncu $a rc=$?"; grep -E "^  [a-zA-Z_0-9]+.*\(" "$W/ncu_$i.log" | cut -c1-150 | sort | uniq -c
done
tar czf "$OUT/ch13_h200.tgz" -C "$OUT" w
