#!/usr/bin/env bash
# gauntlet.sh — the "MoE Gauntlet" quest log, act by act.
#
#   scripts/gauntlet.sh act1|act2|act3|act4|finale|all   run the act's boss fights
#   scripts/gauntlet.sh scoreboard                       your last results beside expectations
#
# Each boss fight is one chapter: it states the metric to beat (the chapter's floor from
# expectations), runs scripts/pair.sh, and keeps the result card (JSON lines) under
# results/gauntlet/<act>/. Chapters not yet in this checkout are listed as "locked".
# NO_BUILD=1 runs binaries built elsewhere without calling make.
set -u
cd "$(dirname "$0")/.." || exit 3
act1="ch01 ch02 ch03 ch04 ch05 ch06"   # Act I — Router Rumble
act2="ch07 ch08 ch09 ch10"             # Act II — Expert Gauntlet
act3="ch11 ch12 ch13 ch14 ch15"        # Act III — Serving Olympics
act4="ch16 ch17 ch18 ch19 ch20"        # Act IV — Frontier Tricks
title() { case $1 in act1) echo "Act I — Router Rumble";; act2) echo "Act II — Expert Gauntlet";;
  act3) echo "Act III — Serving Olympics";; act4) echo "Act IV — Frontier Tricks";; esac; }
floor() { python3 scripts/check_expectations floor "$1"; }

# A fight is won only when both programs PASSed and the speedup met the floor (pair.sh
# exits 0); a waived program (77: no GPU, or the GPU lacks the feature) is "not played";
# anything else is lost. The act's exit status is 0 only when every fight present was won.
fight_act() {
  local act=$1 chapters=${!1} won=0 lost=0 unplayed=0 locked=0 rc
  echo "=================== $(title "$act") ==================="
  mkdir -p "results/gauntlet/$act"
  for ch in $chapters; do
    if [ ! -f "$ch/optimized.cu" ]; then echo "[locked] $ch — not in this checkout yet"; locked=$((locked + 1)); continue; fi
    echo "--- boss fight: $ch — beat the baseline by >= $(floor "$ch")x"
    RESULTS_DIR="results/gauntlet/$act" scripts/pair.sh "$ch" > "results/gauntlet/$act/$ch.pair.txt" 2>&1
    rc=$?
    grep -E '^(WAIVED|FAILED|pair.sh|'"$ch"':)' "results/gauntlet/$act/$ch.pair.txt" | tail -n 2
    case $rc in
      0) won=$((won + 1)); echo "[won] $ch" ;;
      77) unplayed=$((unplayed + 1)); echo "[not played] $ch — waived (log: results/gauntlet/$act/$ch.pair.txt)" ;;
      *) lost=$((lost + 1)); echo "[lost] $ch — exit $rc (log: results/gauntlet/$act/$ch.pair.txt)" ;;
    esac
  done
  echo "$(title "$act"): $won won, $lost lost, $unplayed not played, $locked locked"
  [ "$lost" -eq 0 ] && [ "$unplayed" -eq 0 ] && [ "$won" -gt 0 ]
}

case "${1:-}" in
  act1|act2|act3|act4) fight_act "$1" ;;
  all) rc=0; for a in act1 act2 act3 act4; do fight_act $a || rc=1; done; exit $rc ;;
  finale)  # each lab layer present: its mini run validated against the CPU reference
    echo "=================== Finale — the MoE decode engine ==================="
    [ "${NO_BUILD:-0}" = 1 ] || make --no-print-directory -s labs || exit 3
    won=0; lost=0; unplayed=0
    mkdir -p results/gauntlet/finale
    for d in labs/[0-9][0-9]_*/; do
      [ -x "$d/decode" ] || continue
      echo "--- ${d%/}: mini, validated against the CPU reference"
      log="results/gauntlet/finale/$(basename "$d").txt"
      "./$d/decode" --preset=mini --prompt=16 --gen=64 --check=64 > "$log" 2>&1
      rc=$?
      tail -n 3 "$log"
      case $rc in 0) won=$((won + 1)) ;; 77) unplayed=$((unplayed + 1)) ;; *) lost=$((lost + 1)) ;; esac
    done
    echo "Finale: $won won, $lost lost, $unplayed not played (layers 00 → 06 as they land)"
    [ "$lost" -eq 0 ] && [ "$unplayed" -eq 0 ] && [ "$won" -gt 0 ] ;;
  scoreboard) python3 scripts/check_expectations scoreboard results/gauntlet ;;
  *) echo "usage: scripts/gauntlet.sh act1|act2|act3|act4|finale|all|scoreboard" >&2; exit 2 ;;
esac
