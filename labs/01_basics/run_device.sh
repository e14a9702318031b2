#!/usr/bin/env bash
# run_device.sh — layer 01's first GPU session, inside a time budget, binaries built
# beforehand (make labs; carry labs/00_baseline/decode and labs/01_basics/decode):
#   mini    01 on mini against the CPU reference (--check=64), batch 1 and 64; tiny_qwen3
#           (q/k norm, top-k not renormalized) the same way
#   memcheck  compute-sanitizer memcheck with leak check, 01 on mini (batch 3)
#   b1      00 then 01, gptoss20b_mixtral, batch 1, prompt 512, gen 128
#   b64     00 then 01, gptoss20b_mixtral, batch 64, prompt 32, gen 8 (00's stored point)
# Logs, and each run's JSON line as NAME.json, go to $OUT (default results/labs_01).
#   labs/01_basics/run_device.sh [budget_seconds, default 540] [parts, default "mini memcheck b1 b64"]
set -u
cd "$(dirname "$0")/../.." || exit 3
out=${OUT:-results/labs_01}
mkdir -p "$out"
budget=${1:-540}
parts=${2:-mini memcheck b1 b64}
d0=labs/00_baseline/decode
d1=labs/01_basics/decode
. labs/run_lib.sh  # run, breakdown, lab_start
lab_start "$d0" "$d1"
for part in $parts; do
  case $part in
    mini)
      run 01_mini_b1 60 "$d1" --preset=mini --check=64
      run 01_mini_b64 60 "$d1" --preset=mini --batch=64 --prompt=64 --gen=32 --check=64
      run 01_tiny_qwen3 60 "$d1" --preset=tiny_qwen3 --check=64 ;;
    memcheck)
      run 01_memcheck 120 compute-sanitizer --tool memcheck --leak-check full "$d1" --preset=mini --batch=3 \
        --prompt=12 --gen=6 --check=12 --check-rows=3 --stage-steps=2 ;;
    b1)
      run 00_b1 200 "$d0" --preset=gptoss20b_mixtral --batch=1 --prompt=512 --gen=128
      run 01_b1 200 "$d1" --preset=gptoss20b_mixtral --batch=1 --prompt=512 --gen=128 ;;
    b64)
      run 00_b64 200 "$d0" --preset=gptoss20b_mixtral --batch=64 --prompt=32 --gen=8
      run 01_b64 200 "$d1" --preset=gptoss20b_mixtral --batch=64 --prompt=32 --gen=8 ;;
    *) echo "run_device.sh: unknown part '$part' (mini memcheck b1 b64)"; exit 2 ;;
  esac
done
echo "run_device.sh: done in ${SECONDS}s"
