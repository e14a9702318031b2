#!/usr/bin/env bash
# run_device.sh — layer 02 on a GPU, inside a time budget, binaries built beforehand
# (make labs; carry labs/01_basics/decode and labs/02_memory/decode):
#   mini      02 on mini against the CPU reference (--check=64): batch 1 and 4 (the GEMV
#             path), 5 and 64 (cuBLAS); tiny_qwen3 (q/k norm, top-k not renormalized)
#   memcheck  compute-sanitizer memcheck with leak check, 02 on mini (batch 3: GEMV path,
#             padding groups)
#   b1        02 then 01, gptoss20b_mixtral, batch 1, prompt $B1_PROMPT (512), gen $B1_GEN (128)
#   b64       02 then 01, gptoss20b_mixtral, batch 64, prompt 32, gen 8 (the cuBLAS path)
# Logs, and each run's JSON line as NAME.json, go to $OUT (default results/labs_02).
# VERIFY_01=0 runs 01's gptoss20b_mixtral points with --no-verify (01 is validated by its
# own runs; the CPU reference takes most of a gptoss run's wall time); VERIFY_B64=0 the
# same for 02's batch-64 point (its path is checked on mini at batches 5 and 64).
#   labs/02_memory/run_device.sh [budget_seconds, default 540] [parts, default "mini memcheck b1 b64"]
set -u
cd "$(dirname "$0")/../.." || exit 3
out=${OUT:-results/labs_02}
mkdir -p "$out"
budget=${1:-540}
parts=${2:-mini memcheck b1 b64}
p1=${B1_PROMPT:-512}
g1=${B1_GEN:-128}
nv01=; [ "${VERIFY_01:-1}" = 0 ] && nv01=--no-verify
nv64=; [ "${VERIFY_B64:-1}" = 0 ] && nv64=--no-verify
d1=labs/01_basics/decode
d2=labs/02_memory/decode
. labs/run_lib.sh  # run, breakdown, lab_start
lab_start "$d1" "$d2"
for part in $parts; do
  case $part in
    mini)
      run 02_mini_b1 40 "$d2" --preset=mini --check=64
      run 02_mini_b4 40 "$d2" --preset=mini --batch=4 --prompt=32 --gen=16 --check=32 --check-rows=4
      run 02_mini_b5 40 "$d2" --preset=mini --batch=5 --prompt=32 --gen=16 --check=32 --check-rows=5
      run 02_mini_b64 40 "$d2" --preset=mini --batch=64 --prompt=64 --gen=32 --check=64
      run 02_tiny_qwen3 40 "$d2" --preset=tiny_qwen3 --check=64 ;;
    memcheck)
      run 02_memcheck 90 compute-sanitizer --tool memcheck --leak-check full "$d2" --preset=mini --batch=3 \
        --prompt=12 --gen=6 --check=12 --check-rows=3 --stage-steps=2 ;;
    b1)
      run 02_b1 200 "$d2" --preset=gptoss20b_mixtral --batch=1 --prompt="$p1" --gen="$g1"
      breakdown 02_b1
      run 01_b1 200 "$d1" --preset=gptoss20b_mixtral --batch=1 --prompt="$p1" --gen="$g1" $nv01
      breakdown 01_b1 ;;
    b64)
      run 02_b64 200 "$d2" --preset=gptoss20b_mixtral --batch=64 --prompt=32 --gen=8 $nv64
      run 01_b64 200 "$d1" --preset=gptoss20b_mixtral --batch=64 --prompt=32 --gen=8 $nv01 ;;
    *) echo "run_device.sh: unknown part '$part' (mini memcheck b1 b64)"; exit 2 ;;
  esac
done
echo "run_device.sh: done in ${SECONDS}s"
