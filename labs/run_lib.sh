# run_lib.sh — what the lab layers' run_device.sh scripts share; sourced by them, not run.
# The sourcing script sets $out (the folder for logs and JSON lines, created) and $budget
# (seconds for the whole script; bash's SECONDS counts from the script's start).

# run NAME CAP_SECONDS cmd...: run cmd under `timeout`, capped by what is left of the
# budget (skipped below 10 s); log to $out/NAME.log, its last JSON line to $out/NAME.json;
# print the validation, decode and sanitizer summary lines.
run() {
  local name=$1 cap=$2 t=$((budget - SECONDS)); shift 2
  [ "$t" -lt "$cap" ] && cap=$t
  if [ "$cap" -lt 10 ]; then echo "== $name: skipped, budget spent" | tee -a "$out/$name.log"; return; fi
  echo "== $name (cap ${cap}s): $*" | tee -a "$out/$name.log"
  timeout "$cap" "$@" >> "$out/$name.log" 2>&1
  echo "== $name: exit $? after ${SECONDS}s" | tee -a "$out/$name.log"
  grep '^{"schema"' "$out/$name.log" | tail -n 1 > "$out/$name.json"
  grep -E '^# (validate|decode|bytes per token|experts read|KV)|^decode |ERROR SUMMARY' "$out/$name.log" | tail -n 5
}

# breakdown NAME: the stage breakdown of a finished run's log.
breakdown() {
  [ -f "$out/$1.log" ] && sed -n '/# stage breakdown/,/#   sum/p' "$out/$1.log"
}

# lab_start BIN...: write $out/env.log (GPU, driver, nvcc, commit); exit 3 unless every
# decode binary named is built.
lab_start() {
  { nvidia-smi --query-gpu=name,driver_version --format=csv; nvcc --version | tail -n 2; git rev-parse --short=12 HEAD; } \
    > "$out/env.log" 2>&1
  local b
  for b in "$@"; do
    [ -x "$b" ] || { echo "run_device.sh: build first (make labs) and carry the decode binaries ($*)"; exit 3; }
  done
}

# same A B: the validation logits_hash and the generated tokens of runs A and B (their
# $out/NAME.json and .log), equal or not: PASS, FAIL or SKIP lines.
same() {
  local ha hb ga gb
  ha=$(grep -o '"logits_hash": *"[0-9a-f]*"' "$out/$1.json" 2>/dev/null)
  hb=$(grep -o '"logits_hash": *"[0-9a-f]*"' "$out/$2.json" 2>/dev/null)
  ga=$(grep '^# generated' "$out/$1.log" 2>/dev/null); gb=$(grep '^# generated' "$out/$2.log" 2>/dev/null)
  if [ -z "$ha" ] || [ -z "$hb" ]; then echo "SKIP: $1 vs $2: a run left no JSON line"; return; fi
  if [ "$ha" = "$hb" ]; then echo "PASS: $1 vs $2: validation logits_hash equal ($ha)"
  else echo "FAIL: $1 vs $2: validation logits_hash differ ('$ha' vs '$hb')"; fi
  if [ -n "$ga" ] && [ "$ga" = "$gb" ]; then echo "PASS: $1 vs $2: generated tokens equal"
  else echo "FAIL: $1 vs $2: generated tokens differ"; fi
}
