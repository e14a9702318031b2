#!/usr/bin/env bash
# profile.sh — Nsight Compute on the timed NVTX range of one program only.
#
#   scripts/profile.sh ch10 optimized [program flags...]
#
# Filters to "gauntlet@chNN.<variant>.timed]" (domain@range; "]" = innermost pushed
# range), so set-up, reference, validation and warm-up kernels are not profiled. Clocks
# are left as they are (--clock-control none): this project never changes GPU clocks.
# Report: results/profile/<chNN>.<variant>.ncu-rep (open it in the Nsight Compute GUI).
# Uses nsys as well when it is installed (timeline of the whole run).
set -u
cd "$(dirname "$0")/.." || exit 3
if [ $# -lt 2 ] || [[ ! "$1" =~ ^ch[0-9][0-9]$ ]]; then
  echo "usage: scripts/profile.sh chNN baseline|optimized [program flags...]" >&2
  exit 2
fi
ch=$1 v=$2; shift 2
make --no-print-directory -s "$ch" || exit 3
[ -x "$ch/$v" ] || { echo "profile.sh: no program $ch/$v" >&2; exit 2; }
command -v ncu >/dev/null 2>&1 || { echo "profile.sh: ncu (Nsight Compute) not found on PATH" >&2; exit 77; }
out=${PROFILE_DIR:-results/profile}
mkdir -p "$out"
iters=${ITERS:-3}
ncu --clock-control none --nvtx --nvtx-include "gauntlet@$ch.$v.timed]" \
    --set ${NCU_SET:-full} -f -o "$out/$ch.$v" \
    "./$ch/$v" --warmup=1 --iters="$iters" "$@" || exit $?
ncu --import "$out/$ch.$v.ncu-rep" --page details --print-summary per-kernel | head -n 60
if command -v nsys >/dev/null 2>&1; then
  nsys profile -t cuda,nvtx -f true -o "$out/$ch.$v" "./$ch/$v" --iters="$iters" "$@" >/dev/null
  echo "nsys timeline: $out/$ch.$v.nsys-rep"
fi
