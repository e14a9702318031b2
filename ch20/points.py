#!/usr/bin/env python3
"""points.py — ch20's per-point table from a pair run's logs.

  python3 ch20/points.py [--plain] RESULTS_DIR   (the folder of scripts/pair.sh:
                                                 ch20.baseline.log, ch20.optimized.log)

Prints one row per sweep point: the baseline's (hand-picked) median, the optimized
(searched) median, their ratio, both % of the point's ceiling, and the winning
configuration as the optimized program printed it. Markdown by default; --plain writes a
whitespace-separated table (point names with '_') for `check_expectations attach-table
--first-col point,hand_ms --columns point,hand_ms,searched_ms,speedup,pct_hand,pct_searched,winner`.
Python 3 standard library only."""
import math
import re
import sys


def rows(path):
    """{point label: (median_ms, pct_of_ceiling, config line or '')} from one log."""
    out, order = {}, []
    with open(path, encoding="utf-8", errors="replace") as f:
        for line in f:
            m = re.match(r"#   (.+?): (.*)$", line)
            if m and m.group(1) in out:
                med, pct, _ = out[m.group(1)]
                out[m.group(1)] = (med, pct, m.group(2).split(" (hand-picked")[0])
                continue
            if line.startswith(("attn ", "qwen3moe ", "gptoss20b ", "tiny ")) and len(line) > 23:
                label, fields = line[:22].strip(), line[22:].split()
                try:
                    med = float(fields[0])
                except (ValueError, IndexError):
                    continue
                pct = fields[5] if len(fields) > 5 else "–"
                out[label] = (med, pct, "")
                order.append(label)
    return out, order


def main(argv):
    plain = "--plain" in argv[1:]
    args = [a for a in argv[1:] if a != "--plain"]
    if len(args) != 1:
        print(__doc__.strip().splitlines()[2], file=sys.stderr)
        return 2
    base, order = rows(f"{args[0]}/ch20.baseline.log")
    opt, _ = rows(f"{args[0]}/ch20.optimized.log")
    if plain:
        print("point hand_ms searched_ms speedup pct_hand pct_searched winner")
    else:
        print("| point | hand-picked ms | searched ms | speedup | % of ceiling | winner |")
        print("|---|---:|---:|---:|---:|---|")
    logs = []
    for p in order:
        if p not in opt:
            continue
        b, o = base[p], opt[p]
        logs.append(math.log(b[0] / o[0]))
        if plain:
            print(f"{p.replace(' ', '_')} {b[0]:.4f} {o[0]:.4f} {b[0] / o[0]:.3f} {b[1]} {o[1]} {o[2] or '-'}")
        else:
            print(f"| {p} | {b[0]:.4f} | {o[0]:.4f} | {b[0] / o[0]:.2f}x | {b[1]} → {o[1]} | {o[2]} |")
    if logs and not plain:
        print(f"\ngeomean over {len(logs)} points: {math.exp(sum(logs) / len(logs)):.3f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
