#!/usr/bin/env bash
# run_device.sh — layer 03 on a GPU, inside a time budget, binaries built beforehand
# (make labs; carry labs/02_memory/decode and labs/03_tiling/decode):
#   mini      03 on mini (head_dim 32): batch 1 and 5 (the GEMV expert kernel, R = 1 and 8),
#             64 (the MMA kernel, bm 16, experts with two m-tiles), 100 (bm 32); tiny_qwen3
#             (F = 48: partial tiles); tiny_mixtral at batch 1 and 12 (head_dim 16: 00's
#             attention, so a failure there is the experts'); mini with --temperature (the
#             host sampler)
#   attn      the fp32 split-KV attention on gptoss20b_mixtral, 40 positions checked (from 33
#             keys on, two chunks merged by the combine kernel; mini_b1 does the same on mini)
#   memcheck  compute-sanitizer memcheck with leak check on mini: batch 3 (GEMV) and 64 (MMA)
#   memattn   the same on gptoss20b_mixtral, batch 3, prompt 70 (ch18: two tiles, split),
#             --no-verify (the CPU reference is not under test)
#   hf        labs/moe/hf_check.py with 03's decode: the Mixtral/Qwen3 fixtures, transformers-saved
#             checkpoints (per-expert, fused, sharded) and mini, against transformers
#   b1        03 then 02, gptoss20b_mixtral, batch 1, prompt $B1_PROMPT (512), gen $B1_GEN (32)
#   b64       03 then 02, batch 64, prompt 32, gen 8 (03 checked on 4 positions of row 0)
# Logs, and each run's JSON line as NAME.json, go to $OUT (default results/labs_03).
# VERIFY_02=0 runs 02's points with --no-verify (02 is validated by its own runs).
#   labs/03_tiling/run_device.sh [budget_seconds, default 540] [parts, default "mini b1 b64 memcheck hf attn memattn"]
set -u
cd "$(dirname "$0")/../.." || exit 3
out=${OUT:-results/labs_03}
mkdir -p "$out"
budget=${1:-540}
parts=${2:-mini b1 b64 memcheck hf attn memattn}
p1=${B1_PROMPT:-512}
g1=${B1_GEN:-32}
nv02=; [ "${VERIFY_02:-1}" = 0 ] && nv02=--no-verify
d2=labs/02_memory/decode
d3=labs/03_tiling/decode
. labs/run_lib.sh  # run, breakdown, lab_start
lab_start "$d2" "$d3"
m=--preset=gptoss20b_mixtral
for part in $parts; do
  case $part in
    mini)
      run 03_mini_b1 40 "$d3" --preset=mini --check=64
      run 03_mini_b5 40 "$d3" --preset=mini --batch=5 --prompt=32 --gen=16 --check=32 --check-rows=5
      run 03_mini_b64 40 "$d3" --preset=mini --batch=64 --prompt=32 --gen=16 --check=32 --check-rows=4
      run 03_mini_b100 40 "$d3" --preset=mini --batch=100 --prompt=16 --gen=8 --check=16 --check-rows=3
      run 03_tiny_qwen3 40 "$d3" --preset=tiny_qwen3 --batch=12 --prompt=64 --gen=16 --check=64 --check-rows=2
      run 03_tiny_mixtral_b1 40 "$d3" --preset=tiny_mixtral --prompt=32 --gen=8 --check=32
      run 03_tiny_mixtral_b12 40 "$d3" --preset=tiny_mixtral --batch=12 --prompt=32 --gen=8 --check=32 --check-rows=3
      run 03_mini_temp 40 "$d3" --preset=mini --batch=2 --prompt=16 --gen=8 --check=16 --temperature=0.8 --top-p=0.9 ;;
    attn)
      run 03_attn_p40 120 "$d3" $m --batch=1 --prompt=40 --gen=8 --check=40 ;;
    memcheck)
      run 03_memcheck_b3 60 compute-sanitizer --tool memcheck --leak-check full "$d3" --preset=mini --batch=3 \
        --prompt=12 --gen=6 --check=12 --check-rows=3 --stage-steps=2
      run 03_memcheck_b64 60 compute-sanitizer --tool memcheck --leak-check full "$d3" --preset=mini --batch=64 \
        --prompt=8 --gen=4 --check=8 --check-rows=2 --stage-steps=1 ;;
    hf)
      run 03_hf_check 60 python3 labs/moe/hf_check.py --decode "$d3" --work /tmp/lab03_hf --steps fixtures,real_format,mini ;;
    memattn)
      run 03_memcheck_attn 150 compute-sanitizer --tool memcheck --leak-check full "$d3" $m --batch=3 --prompt=70 \
        --gen=4 --no-verify --stage-steps=1 ;;
    b1)
      run 03_b1 200 "$d3" $m --batch=1 --prompt="$p1" --gen="$g1"
      breakdown 03_b1
      run 02_b1 200 "$d2" $m --batch=1 --prompt="$p1" --gen="$g1" $nv02
      breakdown 02_b1 ;;
    b64)
      run 03_b64 200 "$d3" $m --batch=64 --prompt=32 --gen=8 --check=4 --check-rows=1
      breakdown 03_b64
      run 02_b64 200 "$d2" $m --batch=64 --prompt=32 --gen=8 $nv02
      breakdown 02_b64 ;;
    *) echo "run_device.sh: unknown part '$part' (mini attn memcheck memattn hf b1 b64)"; exit 2 ;;
  esac
done
echo "run_device.sh: done in ${SECONDS}s"
