#!/usr/bin/env python3
"""side_by_side.py — the README's stage table from two runs' logs (run_device.sh writes
them): each stage's mean time per step in layer 02 and layer 03, the roofline model's bytes
(layer 03's) and layer 03's GB/s, then the step, tokens/s and % of the read ceiling.
    python3 labs/03_tiling/side_by_side.py results/labs_03/02_b1.log results/labs_03/03_b1.log
Prints a Markdown table; exit 1 if a log lacks its breakdown."""
import re
import sys


def read(path):
    stages, head = {}, {}
    for line in open(path):
        m = re.match(r"#\s+(\S+)\s+([0-9.]+) ms\s+[0-9.]+%\s+([0-9.]+) MB", line)
        if m and m.group(1) != "sum":
            stages[m.group(1)] = (float(m.group(2)), float(m.group(3)))
        m = re.search(r"([0-9.]+) tokens/s \(batch (\d+)\), ms/token p50 ([0-9.]+)", line)
        if m:
            head["tok"], head["batch"], head["p50"] = m.group(1), m.group(2), m.group(3)
        m = re.search(r"([0-9.]+)% of the HBM roofline", line)
        if m:
            head["pct"] = m.group(1)
    return stages, head


def main(argv):
    if len(argv) != 3:
        print(__doc__, file=sys.stderr)
        return 2
    (s2, h2), (s3, h3) = read(argv[1]), read(argv[2])
    if not s2 or not s3 or "p50" not in h2 or "p50" not in h3:
        print("side_by_side.py: a log without its stage breakdown or decode line", file=sys.stderr)
        return 1
    print("| stage | 02 ms | 03 ms | MB (model) | 03 GB/s |")
    print("|---|---:|---:|---:|---:|")
    for name, (ms3, mb) in s3.items():
        ms2 = s2.get(name, (float("nan"), 0))[0]
        gbs = "%.0f" % (mb / ms3) if mb >= 0.05 and ms3 > 0 else ""
        print("| `%s` | %.3f | %.3f | %.1f | %s |" % (name, ms2, ms3, mb, gbs))
    print("| step (timed median) | %s | %s | | |" % (h2["p50"], h3["p50"]))
    print("| tokens/s (batch %s) | %s | %s | | |" % (h3["batch"], h2["tok"], h3["tok"]))
    print("| %% of the read ceiling | %s | %s | | |" % (h2.get("pct", "?"), h3.get("pct", "?")))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
