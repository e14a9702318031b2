#!/usr/bin/env bash
# fuzz.sh — build the libFuzzer harnesses of tests/fuzz/ and run each for a bounded time.
#
#   scripts/fuzz.sh [SECONDS] [NAME ...]     (default 30 s each, every harness)
#   make fuzz FUZZ_SECONDS=600               the same through make
#
# Harnesses: safetensors (gtl_st_parse), json (gtl_json_parse), hf_config
# (moe_config_from_hf + moe_config_check), ckpt_index (moe_ckpt_open on a sharded index).
# Built with clang -fsanitize=fuzzer,address,undefined (UB is fatal) from common/*.c and
# labs/moe/*.c into build/fuzz/. Each run starts from the committed seeds in
# tests/fuzz/corpus/NAME plus the repository's own JSON files, grows a scratch corpus
# under build/fuzz/corpus/NAME (never the committed one), and fails on any crash, leak,
# sanitizer report or timeout; the failing input is kept as build/fuzz/crash-NAME-*.
# A crash found here becomes a file in tests/fuzz/regressions/NAME/, which every run
# replays first. Prints one line per harness: executions, exec/s, corpus size, verdict.
# Exit: 0 all clean, 1 a harness failed, 3 clang/libFuzzer missing or a build failed.
set -u
cd "$(dirname "$0")/.." || exit 3
secs=${1:-30}; [ $# -gt 0 ] && shift
case "$secs" in ''|*[!0-9]*) echo "usage: scripts/fuzz.sh [SECONDS] [NAME ...]" >&2; exit 2 ;; esac
names=${*:-safetensors json hf_config ckpt_index}
CLANG=${CLANG:-$(command -v clang || command -v clang-14 || command -v clang-15 || command -v clang-16)}
[ -n "$CLANG" ] || { echo "fuzz.sh: clang not found (apt-get install clang)" >&2; exit 3; }
CUDA_HOME=${CUDA_HOME:-$(dirname "$(dirname "$(command -v nvcc 2>/dev/null || echo /usr/local/cuda/bin/nvcc)")")}
out=build/fuzz
mkdir -p "$out/obj"
[ -f build/version.h ] || make --no-print-directory -s build/version.h >/dev/null || exit 3
SAN="-fsanitize=address,undefined -fno-sanitize-recover=undefined -fno-omit-frame-pointer"
CFL="-std=c11 -g -O1 -D_GNU_SOURCE -Icommon -Ibuild -Ilabs/moe -I$CUDA_HOME/include $SAN"
# The library under test, instrumented for coverage (fuzzer-no-link) and sanitizers.
objs=""
for src in common/*.c labs/moe/*.c; do
  o="$out/obj/$(echo "${src%.c}" | tr / _).o"
  if [ ! -f "$o" ] || [ "$src" -nt "$o" ] || [ "$0" -nt "$o" ]; then
    "$CLANG" $CFL -fsanitize=fuzzer-no-link -c "$src" -o "$o" || { echo "fuzz.sh: build of $src failed" >&2; exit 3; }
  fi
  objs="$objs $o"
done
rc=0
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:allocator_may_return_null=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
for n in $names; do
  src=tests/fuzz/fuzz_$n.c
  [ -f "$src" ] || { echo "fuzz.sh: no harness $src" >&2; exit 2; }
  bin=$out/fuzz_$n
  "$CLANG" $CFL -fsanitize=fuzzer "$src" $objs -lm -lpthread -o "$bin" || { echo "fuzz.sh: link of $bin failed" >&2; exit 3; }
  corpus=$out/corpus/$n
  mkdir -p "$corpus"
  cp tests/fuzz/corpus/"$n"/* "$corpus"/ 2>/dev/null
  case $n in  # the repository's own files are good seeds too
    json) cp expectations/*.json tests/fixtures/*.json "$corpus"/ 2>/dev/null ;;
    hf_config) for f in tests/fixtures/*config*.json; do [ -f "$f" ] && cp "$f" "$corpus"/; done ;;
  esac
  if [ -d tests/fuzz/regressions/$n ] && ls tests/fuzz/regressions/$n/* >/dev/null 2>&1; then
    if ! "./$bin" tests/fuzz/regressions/$n/* > "$out/$n.regressions.log" 2>&1; then
      echo "fuzz $n: a regression input fails again (log: $out/$n.regressions.log)"; rc=1; continue
    fi
  fi
  log=$out/$n.log
  "./$bin" -max_total_time="$secs" -timeout=10 -rss_limit_mb=2048 -max_len=65536 \
    -artifact_prefix="$out/crash-$n-" -print_final_stats=1 "$corpus" > "$log" 2>&1
  r=$?
  execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n 1)
  eps=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -n 1)
  ncorp=$(find "$corpus" -type f | wc -l)
  if [ "$r" -eq 0 ]; then
    echo "fuzz $n: clean — ${execs:-?} executions in ${secs} s (${eps:-?}/s), corpus $ncorp files"
  else
    echo "fuzz $n: FAILED (exit $r) after ${execs:-?} executions — log $log, input $out/crash-$n-*"
    grep -m 3 -E 'ERROR: |runtime error|SUMMARY' "$log"
    rc=1
  fi
done
exit $rc
