#!/usr/bin/env bash
# run_all.sh — every chapter pair in one run, then the verdict of each against
# expectations/<hardware_key>.json. Results: results/<UTC timestamp>/ (or $RESULTS_DIR).
#   scripts/run_all.sh [program flags passed to every program...]
set -u
cd "$(dirname "$0")/.." || exit 3
export RESULTS_DIR=${RESULTS_DIR:-results/$(date -u +%Y%m%dT%H%M%SZ)}
rc=0
for d in ch[0-9][0-9]; do
  [ -f "$d/baseline.cu" ] && [ -f "$d/optimized.cu" ] || continue
  scripts/pair.sh "$d" "$@" || rc=1
done
python3 scripts/check_expectations check "$RESULTS_DIR" || rc=1
exit $rc
