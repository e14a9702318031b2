#!/usr/bin/env bash
# sanitize.sh — NVIDIA compute-sanitizer over every program at small sizes, one table.
#
#   scripts/sanitize.sh [-j N] [-t memcheck,racecheck,synccheck,initcheck] [-o DIR] [PROGRAM ...]
#
# PROGRAM defaults to every built chapter program (chNN/*) and lab layer
# (labs/NN_*/decode). Chapter programs run with `--size=small --iters=2 --warmup=0`, lab
# layers with `--preset=mini --batch=2 --prompt=8 --gen=4 --check=8`. memcheck runs with
# --leak-check full. -j runs that many sanitizer processes at once (default 4: the
# sanitizers are CPU-heavy, the GPU work is small). Logs: DIR/<program>.<tool>.log
# (default results/sanitize-<UTC time>). The table: one row per program, one column per
# tool, each cell the error count the tool summarised (racecheck: hazards), or
# "waived" (exit 77: the GPU lacks the feature, e.g. ch04 on one GPU), "FAIL rc=N"
# (the program itself failed under the tool), "timeout" (600 s). Exit 0 when every
# cell is 0 or waived, 1 otherwise, 3 when compute-sanitizer is missing.
set -u
cd "$(dirname "$0")/.." || exit 3
jobs=4 tools=memcheck,racecheck,synccheck,initcheck out=""
while getopts "j:t:o:" o; do
  case $o in j) jobs=$OPTARG ;; t) tools=$OPTARG ;; o) out=$OPTARG ;;
    *) echo "usage: scripts/sanitize.sh [-j N] [-t tool,...] [-o DIR] [PROGRAM ...]" >&2; exit 2 ;; esac
done
shift $((OPTIND - 1))
command -v compute-sanitizer >/dev/null 2>&1 || { echo "sanitize.sh: compute-sanitizer not found (CUDA toolkit bin/)" >&2; exit 3; }
out=${out:-results/sanitize-$(date -u +%Y%m%dT%H%M%SZ)}
mkdir -p "$out"
progs=${*:-$(find ch[0-9][0-9] labs -maxdepth 2 -type f -perm -u+x ! -name '*.*' 2>/dev/null | sort)}
args_for() {
  case $1 in
    labs/*) echo "--preset=mini --batch=2 --prompt=8 --gen=4 --check=8" ;;
    *) echo "--size=small --iters=2 --warmup=0" ;;
  esac
}
one() {  # one PROGRAM TOOL: run it, write the log, print "PROGRAM TOOL CELL"
  local p=$1 t=$2 log extra="" rc n
  log="$out/$(echo "$p" | tr / _).$t.log"
  [ "$t" = memcheck ] && extra="--leak-check full"
  # shellcheck disable=SC2046
  timeout 600 compute-sanitizer --tool "$t" $extra "./$p" $(args_for "$p") > "$log" 2>&1
  rc=$?
  n=$(sed -n 's/.*\(ERROR\|RACECHECK\) SUMMARY: \([0-9]*\) \(error\|hazard\).*/\2/p' "$log" | tail -n 1)
  if [ "$rc" -eq 124 ]; then echo "$p $t timeout"
  elif [ "$rc" -eq 77 ]; then echo "$p $t waived"
  elif [ "$rc" -ne 0 ] && [ -z "$n" -o "${n:-0}" = 0 ]; then echo "$p $t FAIL_rc=$rc"
  else echo "$p $t ${n:-?}"; fi
}
export -f one args_for
export out
for p in $progs; do for t in ${tools//,/ }; do echo "$p $t"; done; done |
  xargs -P "$jobs" -n 2 bash -c 'one "$0" "$1"' > "$out/cells.txt"
{
  printf '%-28s' program; for t in ${tools//,/ }; do printf ' %-10s' "$t"; done; echo
  for p in $progs; do
    printf '%-28s' "$p"
    for t in ${tools//,/ }; do printf ' %-10s' "$(awk -v p="$p" -v t="$t" '$1 == p && $2 == t {print $3}' "$out/cells.txt")"; done
    echo
  done
} | tee "$out/table.txt"
bad=$(awk '$3 != "0" && $3 != "waived"' "$out/cells.txt" | wc -l)
echo "sanitize.sh: $(wc -l < "$out/cells.txt") runs, $bad not clean; logs in $out"
[ "$bad" -eq 0 ]
