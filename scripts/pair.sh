#!/usr/bin/env bash
# pair.sh — run a chapter's baseline then optimized with the same arguments, print both
# rows, the speedup (baseline median / optimized median) and the verdict against
# expectations/<hardware_key>.json.
#
#   scripts/pair.sh ch10                  # default workload
#   scripts/pair.sh ch10 --size=small     # any program flags are passed to both
#   RESULTS_DIR=out/ scripts/pair.sh ch07 # where the JSON result lines go
#                                         # (default results/<UTC timestamp>/)
#   NO_BUILD=1 scripts/pair.sh ch07       # run the binaries as they are (built elsewhere)
# Exit: 0 both PASS, 1 a validation FAIL, 77 waived (no GPU), else the failing program's.
set -u
here=$(cd "$(dirname "$0")/.." && pwd)
cd "$here" || exit 3
if [ $# -lt 1 ] || [[ ! "$1" =~ ^ch[0-9][0-9]$ ]]; then
  echo "usage: scripts/pair.sh chNN [program flags...]" >&2
  exit 2
fi
ch=$1; shift
[ -d "$ch" ] || { echo "pair.sh: no chapter folder $ch" >&2; exit 2; }
if [ "${NO_BUILD:-0}" != 1 ]; then
  make --no-print-directory -s "$ch" >&2 || { echo "pair.sh: build of $ch failed" >&2; exit 3; }
fi
out=${RESULTS_DIR:-results/$(date -u +%Y%m%dT%H%M%SZ)}
mkdir -p "$out"

for v in baseline optimized; do
  echo "== $ch/$v $*"
  "./$ch/$v" "$@" | tee "$out/$ch.$v.log"
  rc=${PIPESTATUS[0]}
  grep '^{"schema":"gauntlet.v1"' "$out/$ch.$v.log" | tail -n 1 > "$out/$ch.$v.json"
  if [ "$rc" -ne 0 ]; then
    echo "pair.sh: $ch/$v exited $rc" >&2
    exit "$rc"
  fi
done
python3 scripts/check_expectations pair --target "$ch" \
  --baseline "$out/$ch.baseline.json" --optimized "$out/$ch.optimized.json"
