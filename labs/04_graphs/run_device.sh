#!/usr/bin/env bash
# run_device.sh — layer 04 on a GPU, inside a time budget, binaries built beforehand
# (make labs; carry labs/03_tiling/decode and labs/04_graphs/decode). Every 04 run with the
# device sampler captures the step, replays it once against an eager run of the same step
# and exits 1 unless the logits are equal bit for bit ("# graph: ..." in the log).
#   mini      04 on mini (head_dim 32), each validated against the CPU reference: batch 1,
#             5 (GEMV experts), 64 (MMA experts), 100; tiny_qwen3 (head_dim 32, F = 48);
#             tiny_mixtral (head_dim 16: 00's attention, so every step eager, one note);
#             mini with --temperature (host sampler: eager, one note); mini batch 3 with
#             --warmup=0 --stage-steps=0 (every decode step a replay, none eager), its
#             validation logits and replayed tokens equal to 03's eager run of the same
#   graph     the bitwise lines of the mini runs, then 04 against 03 on gptoss20b_mixtral
#             at batch 1, prompt 40 (two chunks merged): the same kernels on the same split,
#             so the validation's logits_hash and the generated tokens must be 03's
#   memcheck  compute-sanitizer memcheck with leak check on mini: batch 3 and 64, the graph
#             captured, checked and replayed under the tool
#   hf        labs/moe/hf_check.py with 04's decode against transformers (as 03's)
#   b1        04 then 03, gptoss20b_mixtral, batch 1, prompt $B1_PROMPT (512), gen $B1_GEN (128)
#   b64       04 then 03, batch 64, prompt 32, gen 8 (checked on 4 positions of row 0)
# b1 and b64 print each stage table (04's instrumented steps run eagerly, so they show
# the stages' own time; the timed median is the replayed graph) and a 03-vs-04 table.
# Logs, and each run's JSON line as NAME.json, go to $OUT (default results/labs_04).
# VERIFY_03=0 runs 03's points with --no-verify (03 is validated by its own runs).
#   labs/04_graphs/run_device.sh [budget_seconds, default 600] [parts, default "mini graph memcheck b1 b64 hf"]
set -u
cd "$(dirname "$0")/../.." || exit 3
out=${OUT:-results/labs_04}
mkdir -p "$out"
budget=${1:-600}
parts=${2:-mini graph memcheck b1 b64 hf}
p1=${B1_PROMPT:-512}
g1=${B1_GEN:-128}
nv03=; [ "${VERIFY_03:-1}" = 0 ] && nv03=--no-verify
d3=labs/03_tiling/decode
d4=labs/04_graphs/decode
. labs/run_lib.sh  # run, breakdown, lab_start, same
lab_start "$d3" "$d4"
m=--preset=gptoss20b_mixtral
graph_lines() {  # the graph line (or the eager note) of each named run
  local n l
  for n in "$@"; do
    l=$(grep -hE '^# graph:|^note:|graph.s replay' "$out/$n.log" 2>/dev/null | head -n 1 | cut -c1-160)
    printf '%-22s %s\n' "$n:" "${l:-(no graph line: see the log)}"
  done
}
table() {  # table NAME03 NAME04: the stage table, 03 beside 04
  python3 labs/03_tiling/side_by_side.py "$out/$1.log" "$out/$2.log" | sed '1s/03 GB\/s/04 GB\/s/; 1s/| 02 ms | 03 ms |/| 03 ms | 04 ms |/'
}
for part in $parts; do
  case $part in
    mini)
      run 04_mini_b1 40 "$d4" --preset=mini --check=64
      run 04_mini_b5 40 "$d4" --preset=mini --batch=5 --prompt=32 --gen=16 --check=32 --check-rows=5
      run 04_mini_b64 40 "$d4" --preset=mini --batch=64 --prompt=32 --gen=16 --check=32 --check-rows=4
      run 04_mini_b100 40 "$d4" --preset=mini --batch=100 --prompt=16 --gen=8 --check=16 --check-rows=3
      run 04_tiny_qwen3 40 "$d4" --preset=tiny_qwen3 --batch=12 --prompt=64 --gen=16 --check=64 --check-rows=2
      run 04_tiny_mixtral 40 "$d4" --preset=tiny_mixtral --batch=12 --prompt=32 --gen=8 --check=32 --check-rows=3
      run 04_mini_temp 40 "$d4" --preset=mini --batch=2 --prompt=16 --gen=8 --check=16 --temperature=0.8 --top-p=0.9
      run 04_mini_allgraph 40 "$d4" --preset=mini --batch=3 --prompt=16 --gen=12 --check=16 --warmup=0 --stage-steps=0
      run 03_mini_allgraph 40 "$d3" --preset=mini --batch=3 --prompt=16 --gen=12 --check=16 --warmup=0 --stage-steps=0
      same 03_mini_allgraph 04_mini_allgraph ;;
    graph)
      graph_lines 04_mini_b1 04_mini_b5 04_mini_b64 04_mini_b100 04_tiny_qwen3 04_tiny_mixtral 04_mini_temp 04_mini_allgraph
      run 04_attn_p40 120 "$d4" $m --batch=1 --prompt=40 --gen=8 --check=40
      run 03_attn_p40 120 "$d3" $m --batch=1 --prompt=40 --gen=8 --check=40
      same 03_attn_p40 04_attn_p40 ;;
    memcheck)
      run 04_memcheck_b3 60 compute-sanitizer --tool memcheck --leak-check full "$d4" --preset=mini --batch=3 \
        --prompt=12 --gen=6 --check=12 --check-rows=3 --stage-steps=2
      run 04_memcheck_b64 60 compute-sanitizer --tool memcheck --leak-check full "$d4" --preset=mini --batch=64 \
        --prompt=8 --gen=4 --check=8 --check-rows=2 --stage-steps=1 ;;
    hf)
      run 04_hf_check 60 python3 labs/moe/hf_check.py --decode "$d4" --work /tmp/lab04_hf --steps fixtures,real_format,mini ;;
    b1)
      run 04_b1 200 "$d4" $m --batch=1 --prompt="$p1" --gen="$g1"
      breakdown 04_b1
      run 03_b1 200 "$d3" $m --batch=1 --prompt="$p1" --gen="$g1" $nv03
      table 03_b1 04_b1
      [ -z "$nv03" ] && same 03_b1 04_b1 ;;
    b64)
      run 04_b64 200 "$d4" $m --batch=64 --prompt=32 --gen=8 --check=4 --check-rows=1
      breakdown 04_b64
      run 03_b64 200 "$d3" $m --batch=64 --prompt=32 --gen=8 --check=4 --check-rows=1 $nv03
      table 03_b64 04_b64
      [ -z "$nv03" ] && same 03_b64 04_b64 ;;
    *) echo "run_device.sh: unknown part '$part' (mini graph memcheck hf b1 b64)"; exit 2 ;;
  esac
done
echo "run_device.sh: done in ${SECONDS}s"
