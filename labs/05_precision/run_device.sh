#!/usr/bin/env bash
# run_device.sh — layer 05 on a GPU, inside a time budget, binaries built beforehand (make
# labs; carry labs/05_precision/decode, and labs/04_graphs/decode for the runs of 04
# itself, skipped without it). Every fp8 run quantizes
# the weights on the GPU at setup and checks four rows against the host quantizer (exit 1
# if one differs), then validates the logits against the CPU reference (fp8: rel_l2 <
# 6e-2, top-1 >= 95%; bf16: 1e-2, 99%).
#   mini      --check=64 at batch 1, 3 and 64, each with --weights=fp8 and --weights=bf16
#             (MINI_WEIGHTS="fp8": fp8 only);
#             tiny_gptoss (gpt-oss semantics: biases, sinks, window, clamped SwiGLU) in fp8
#             at batch 3 (the fp8 GEMV) and 12 (04's dense stages with the fp8 MMA experts);
#             05 --weights=bf16 against 04 on mini batch 3 (with 04's binary): the same
#             table, so the validation logits_hash and the generated tokens must be 04's
#   memcheck  compute-sanitizer memcheck with leak check, mini batch 3, fp8 (the store's
#             build and check, the graph captured and replayed under the tool)
#   b1        05 fp8 then 05 --weights=bf16 (layer 04's table, same build), gptoss20b_mixtral,
#             batch 1, prompt $B1_PROMPT (512), gen $B1_GEN (32), both validated (4
#             positions); the stage table bf16 beside fp8
#   b64       05 fp8, batch 64, prompt 32, gen 8 (4 positions of row 0 checked)
# Logs, and each run's JSON line as NAME.json, go to $OUT (default results/labs_05).
#   labs/05_precision/run_device.sh [budget_seconds, default 120] [parts, default "mini b1 b64 memcheck"]
set -u
cd "$(dirname "$0")/../.." || exit 3
out=${OUT:-results/labs_05}
mkdir -p "$out"
budget=${1:-120}
parts=${2:-mini b1 b64 memcheck}
p1=${B1_PROMPT:-512}
g1=${B1_GEN:-32}
d4=${D4:-labs/04_graphs/decode}     # D4, D5: other binaries (e.g. a copy built with the same tree)
d5=${D5:-labs/05_precision/decode}
. labs/run_lib.sh  # run, breakdown, lab_start, same
lab_start "$d5"
m=--preset=gptoss20b_mixtral
table() {  # table NAME04 NAME05: the stage table, 04 (bf16) beside 05 (fp8)
  python3 labs/03_tiling/side_by_side.py "$out/$1.log" "$out/$2.log" |
    sed '1s/03 GB\/s/05 GB\/s/; 1s/| 02 ms | 03 ms |/| 04 ms | 05 ms |/'
}
for part in $parts; do
  case $part in
    mini)
      for w in ${MINI_WEIGHTS:-fp8 bf16}; do
        run 05_mini_b1_$w 30 "$d5" --weights=$w --preset=mini --prompt=64 --gen=32 --check=64
        run 05_mini_b3_$w 30 "$d5" --weights=$w --preset=mini --batch=3 --prompt=64 --gen=32 --check=64 --check-rows=3
        run 05_mini_b64_$w 30 "$d5" --weights=$w --preset=mini --batch=64 --prompt=32 --gen=16 --check=64 --check-rows=4
      done
      run 05_tiny_gptoss 30 "$d5" --preset=tiny_gptoss --batch=3 --prompt=48 --gen=16 --check=48 --check-rows=3
      run 05_tiny_gptoss_b12 30 "$d5" --preset=tiny_gptoss --batch=12 --prompt=32 --gen=8 --check=32 --check-rows=3
      if [ -x "$d4" ]; then
        run 04_mini_b3 30 "$d4" --preset=mini --batch=3 --prompt=64 --gen=32 --check=64 --check-rows=3
        same 04_mini_b3 05_mini_b3_bf16
      fi ;;
    memcheck)
      run 05_memcheck_b3 45 compute-sanitizer --tool memcheck --leak-check full "$d5" --preset=mini --batch=3 \
        --prompt=12 --gen=6 --check=12 --check-rows=3 --stage-steps=2 ;;
    b1)
      run 05_b1 60 "$d5" $m --weights=fp8 --batch=1 --prompt="$p1" --gen="$g1"
      breakdown 05_b1
      run 05_b1_bf16 60 "$d5" $m --weights=bf16 --batch=1 --prompt="$p1" --gen="$g1"
      table 05_b1_bf16 05_b1 ;;
    b64)
      run 05_b64 60 "$d5" $m --weights=fp8 --batch=64 --prompt=32 --gen=8 --check=4 --check-rows=1
      breakdown 05_b64 ;;
    *) echo "run_device.sh: unknown part '$part' (mini memcheck b1 b64)"; exit 2 ;;
  esac
done
echo "run_device.sh: done in ${SECONDS}s"
