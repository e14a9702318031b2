#!/usr/bin/env bash
# run_tests.sh — the whole host-side test suite (what `make test` and CI run):
#   1. cmocka unit tests of common/ and labs/moe (tests/bin/test_*), then the same tests
#      built with AddressSanitizer + UBSan ($SAN_TESTS, tests/bin-san/test_*)
#   1b. the libFuzzer harnesses of tests/fuzz, $FUZZ_TEST_SECONDS (20) s each (scripts/fuzz.sh)
#   2. python unittest of scripts/check_expectations, the quest-log scripts, book_refs.md,
#      and the lab's tiny-model fixtures against an independent forward pass
#   2b. the lab's headers alone and together with the lab frame, -Werror (tests/lab_headers.sh)
#   2c. lab layers' host tests (labs/NN_*/*_test.cpp)
#   3. every GPU program: exit 2 with a usage line on a bad flag (and on the bad values of
#      tests/usage_checks.txt); without a GPU, exit 77 with exactly one line
#   4. disassembly checks of tests/sass_checks.txt (cuobjdump)
#   5. docs/plots drawn from the current expectations/h200.json (scripts/plots.py --check)
#   6. expectations/*.json against their schema
# Ends with one line "tests: N passed, M failed[, K skipped]"; exits 1 if anything failed.
set -u
cd "$(dirname "$0")/.." || exit 3
pass=0; fail=0; skip=0
ok()   { pass=$((pass + 1)); }
bad()  { fail=$((fail + 1)); echo "FAILED: $*"; }

run_cmocka() {  # each cmocka binary: count its PASSED/FAILED lines; a crash or a
  for t in "$@"; do  # sanitizer report (non-zero exit, no FAILED line) is a failure
    out=$("./$t" 2>&1); rc=$?
    n_ok=$(printf '%s\n' "$out" | sed -n 's/^\[  PASSED  \] \([0-9]*\) test.*/\1/p')
    n_bad=$(printf '%s\n' "$out" | sed -n 's/^\[  FAILED  \] \([0-9]*\) test.*/\1/p' | head -n1)
    printf '%s\n' "$out" | grep -E '^\[(  PASSED  |  FAILED  |  ERROR   )\]|^\[ +FAILED +\] [a-z]' || true
    pass=$((pass + ${n_ok:-0})); fail=$((fail + ${n_bad:-0}))
    if [ "$rc" -ne 0 ] && [ -z "${n_bad}" ]; then bad "$t exited $rc"; printf '%s\n' "$out" | grep -m 5 -E 'ERROR|runtime error|SUMMARY' || printf '%s\n' "$out" | tail -n 5; fi
  done
}
echo "== unit tests (cmocka)"
run_cmocka "$@"
if [ -n "${SAN_TESTS:-}" ]; then
  echo "== unit tests under AddressSanitizer + UndefinedBehaviorSanitizer"
  ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1} run_cmocka $SAN_TESTS
fi

echo "== fuzzing (libFuzzer, ${FUZZ_TEST_SECONDS:-20} s per harness)"
if [ "${FUZZ_TEST_SECONDS:-20}" = 0 ]; then echo "FUZZ_TEST_SECONDS=0: fuzzing skipped"; skip=$((skip + 1))
else
  fz=$(scripts/fuzz.sh "${FUZZ_TEST_SECONDS:-20}" 2>&1); rc=$?
  printf '%s\n' "$fz"
  n_clean=$(printf '%s\n' "$fz" | grep -c '^fuzz .*: clean')
  n_failed=$(printf '%s\n' "$fz" | grep -c '^fuzz .*: FAILED\|regression input fails')
  pass=$((pass + n_clean)); fail=$((fail + n_failed))
  if [ "$rc" -ne 0 ] && [ "$n_failed" -eq 0 ]; then bad "scripts/fuzz.sh exited $rc"; fi
fi

echo "== scripts: check_expectations and the quest-log scripts (python unittest)"
out=$(python3 -m unittest tests/test_check_expectations.py tests/test_scripts.py tests/test_book_refs.py \
  tests/test_lab_tiny_independent.py tests/test_lab05_quant_ref.py 2>&1); rc=$?
n=$(printf '%s\n' "$out" | sed -n 's/^Ran \([0-9]*\) test.*/\1/p')
if [ "$rc" -eq 0 ]; then pass=$((pass + ${n:-0})); echo "[  PASSED  ] ${n:-0} test(s)."
else printf '%s\n' "$out" | tail -n 30; n_f=$(printf '%s\n' "$out" | sed -n 's/.*failures=\([0-9]*\).*/\1/p'); n_e=$(printf '%s\n' "$out" | sed -n 's/.*errors=\([0-9]*\).*/\1/p')
  fail=$((fail + ${n_f:-0} + ${n_e:-0})); [ $(( ${n_f:-0} + ${n_e:-0} )) -gt 0 ] || bad "python tests exited $rc"; fi

echo "== lab headers: alone and together with the lab frame, -Werror (tests/lab_headers.sh)"
out=$(tests/lab_headers.sh 2>&1); rc=$?
printf '%s\n' "$out" | grep -v '^ok: '
n_ok=$(printf '%s\n' "$out" | grep -c '^ok: '); n_bad=$(printf '%s\n' "$out" | grep -c '^FAILED: ')
pass=$((pass + n_ok)); fail=$((fail + n_bad))
if [ "$rc" -ne 0 ] && [ "$n_bad" -eq 0 ]; then bad "tests/lab_headers.sh exited $rc"; fi

echo "== lab layer host tests (labs/NN_*/*_test.cpp: the kernels' own host/device index code)"
for t in labs/[0-9][0-9]_*/*_test.cpp; do
  [ -f "$t" ] || continue
  bin=tests/bin/$(basename "$(dirname "$t")")_$(basename "$t" .cpp)
  if nvcc -std=c++17 -arch=sm_90 -Icommon -Ibuild -o "$bin" -x cu "$t" -Lbuild -lmoe -lcommon -lcublas > "$bin.build.log" 2>&1; then
    out=$("./$bin" 2>&1); rc=$?
    n_ok=$(printf '%s\n' "$out" | grep -c '^ok: '); n_bad=$(printf '%s\n' "$out" | grep -c '^FAILED: ')
    printf '%s\n' "$out" | grep -v '^ok: '
    pass=$((pass + n_ok)); fail=$((fail + n_bad))
    if [ "$rc" -ne 0 ] && [ "$n_bad" -eq 0 ]; then bad "$bin exited $rc"; fi
  else
    bad "$t does not build"; tail -n 5 "$bin.build.log"
  fi
done

echo "== GPU programs: usage errors and waiving without a GPU"
progs=$(find ch[0-9][0-9] labs -maxdepth 2 -type f -perm -u+x ! -name '*.*' 2>/dev/null | sort)
gpu=0
command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1 && gpu=1
for p in $progs; do
  out=$(timeout 60 "./$p" --no-such-flag 2>&1); rc=$?
  if [ "$rc" -eq 2 ] && printf '%s' "$out" | grep -q '^usage:'; then ok; else bad "$p --no-such-flag: exit $rc (want 2 and a usage line)"; fi
  if [ "$gpu" -eq 1 ]; then skip=$((skip + 1)); continue; fi
  out=$(timeout 60 "./$p" 2>&1); rc=$?
  lines=$(printf '%s\n' "$out" | grep -c .)
  if [ "$rc" -eq 77 ] && [ "$lines" -eq 1 ] && printf '%s' "$out" | grep -q '^WAIVED: '; then ok
  else bad "$p without a GPU: exit $rc, $lines line(s) (want 77 and one WAIVED line)"; printf '%s\n' "$out" | head -n 5; fi
done
[ "$gpu" -eq 1 ] && echo "(a GPU is present: the no-GPU waive checks were skipped)"
echo "checked $(printf '%s\n' $progs | grep -c .) programs"
while read -r prog args; do  # bad option values: exit 2 before the device is touched
  case "$prog" in ''|\#*) continue ;; esac
  out=$(timeout 60 "./$prog" $args 2>&1); rc=$?
  if [ "$rc" -eq 2 ] && printf '%s' "$out" | grep -q '^usage:'; then ok; else bad "$prog $args: exit $rc (want 2 and a usage line)"; fi
done < tests/usage_checks.txt

echo "== disassembly (tests/sass_checks.txt)"
cuda_bin=$(dirname "$(command -v nvcc 2>/dev/null || echo /usr/local/cuda/bin/nvcc)")
PATH="$PATH:$cuda_bin:$PWD/build/tools/nvidia/cu13/bin"
if command -v cuobjdump >/dev/null 2>&1; then
  while read -r prog instrs; do
    case "$prog" in ''|\#*) continue ;; esac
    if [ ! -x "$prog" ]; then bad "$prog: not built"; continue; fi
    # shellcheck disable=SC2086
    out=$(python3 scripts/sass_check.py "$prog" $instrs 2>&1); rc=$?
    printf '%s\n' "$out"
    n_ok=$(printf '%s\n' "$out" | grep -c ': .* \(found\|absent, as claimed\)')
    pass=$((pass + n_ok))
    if [ "$rc" -ne 0 ]; then bad "$prog $instrs"; fi
  done < tests/sass_checks.txt
else
  echo "cuobjdump not found: disassembly checks skipped"; skip=$((skip + 1))
fi

echo "== README pictures (docs/plots) drawn from the current expectations"
if python3 scripts/plots.py --check; then ok; else bad "docs/plots is stale: make plots"; fi

echo "== expectations schema"
if ls expectations/*.json >/dev/null 2>&1; then
  for f in expectations/*.json; do
    if python3 scripts/check_expectations schema "$f"; then ok; else bad "$f"; fi
  done
fi

if [ "$skip" -gt 0 ]; then echo "tests: $pass passed, $fail failed, $skip skipped"
else echo "tests: $pass passed, $fail failed"; fi
[ "$fail" -eq 0 ]
