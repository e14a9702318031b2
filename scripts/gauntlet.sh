#!/usr/bin/env bash
# gauntlet.sh — the "MoE Gauntlet" quest log, act by act.
#
#   scripts/gauntlet.sh act1|act2|act3|act4|finale|all   run the act's boss fights
#   scripts/gauntlet.sh scoreboard                       your last results beside expectations
#
# Each boss fight is one chapter: it states the metric to beat (the chapter's floor from
# expectations), runs scripts/pair.sh, and keeps the result card (JSON lines) under
# results/gauntlet/<act>/. Chapters not yet in this checkout are listed as "locked".
set -u
cd "$(dirname "$0")/.." || exit 3
act1="ch01 ch02 ch03 ch04 ch05 ch06"   # Act I — Router Rumble
act2="ch07 ch08 ch09 ch10"             # Act II — Expert Gauntlet
act3="ch11 ch12 ch13 ch14 ch15"        # Act III — Serving Olympics
act4="ch16 ch17 ch18 ch19 ch20"        # Act IV — Frontier Tricks
title() { case $1 in act1) echo "Act I — Router Rumble";; act2) echo "Act II — Expert Gauntlet";;
  act3) echo "Act III — Serving Olympics";; act4) echo "Act IV — Frontier Tricks";; esac; }
floor() { python3 scripts/check_expectations floor "$1"; }

fight_act() {
  local act=$1 chapters=${!1} won=0 lost=0 locked=0
  echo "=================== $(title "$act") ==================="
  for ch in $chapters; do
    if [ ! -f "$ch/optimized.cu" ]; then echo "[locked] $ch — not in this checkout yet"; locked=$((locked + 1)); continue; fi
    echo "--- boss fight: $ch — beat the baseline by >= $(floor "$ch")x"
    if RESULTS_DIR="results/gauntlet/$act" scripts/pair.sh "$ch" | tail -n 1; then won=$((won + 1)); else lost=$((lost + 1)); fi
  done
  echo "$(title "$act"): $won won, $lost lost, $locked locked"
  [ "$lost" -eq 0 ]
}

case "${1:-}" in
  act1|act2|act3|act4) fight_act "$1" ;;
  all) rc=0; for a in act1 act2 act3 act4; do fight_act $a || rc=1; done; exit $rc ;;
  finale)  # each lab layer present: its mini run validated against the CPU reference
    echo "=================== Finale — the MoE decode engine ==================="
    make --no-print-directory -s labs || exit 3
    rc=0; n=0
    for d in labs/[0-9][0-9]_*/; do
      [ -x "$d/decode" ] || continue; n=$((n + 1))
      echo "--- ${d%/}: mini, validated against the CPU reference"
      "./$d/decode" --preset=mini --prompt=16 --gen=64 --check=64 | tail -n 3 || rc=1
    done
    echo "layers run: $n (00 → 06 as they land)"; exit $rc ;;
  scoreboard) python3 scripts/check_expectations check results/gauntlet ;;
  *) echo "usage: scripts/gauntlet.sh act1|act2|act3|act4|finale|all|scoreboard" >&2; exit 2 ;;
esac
