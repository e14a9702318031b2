#!/usr/bin/env python3
"""plots.py — draw the README's pictures from expectations/<key>.json.

  scripts/plots.py [--key h200] [--out docs/plots]      (make plots)
  scripts/plots.py --check                               exit 1 when the pictures are stale

Pictures (PNG, committed under docs/plots/):
  speedups.png  each chapter's measured speedup against its floor (the teaching claim)
  roofline.png  every chapter program, baseline and optimized, on the GPU's measured
                roofline: arithmetic intensity (flops / bytes) against attained TFLOP/s,
                under the ceilings stored in the file (read GB/s, fp8, bf16 and fp32 TFLOP/s).
                Programs that do no arithmetic (copies, loads) sit at the left edge, their
                attained GB/s turned into the TFLOP/s the read ceiling's slope gives there.
  lab_ladder.png  tokens/s of each lab layer at batch 1 against the bf16 weight roofline
                (ceiling read GB/s / bytes per token of the recorded run)
docs/plots/SOURCE.sha256 holds the SHA-256 of the expectations file drawn; --check
compares it with the file now (the test suite runs it), so a change to expectations/
without redrawn pictures fails the tests. matplotlib is needed only to draw: `make plots`
installs it into build/tools/py when python3 lacks it."""
import argparse
import hashlib
import json
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def sha(path):
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def chapter_entries(exp):
    return {k: e for k, e in exp["entries"].items() if k.startswith("ch")}


def draw(exp, out):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    gpu = exp.get("gpu", exp["hardware_key"])
    ch = chapter_entries(exp)
    names = sorted(ch)
    # 1. speedups against floors
    fig, ax = plt.subplots(figsize=(10, 4.2))
    sp = [ch[n]["speedup"] for n in names]
    fl = [ch[n]["min_speedup"] for n in names]
    colors = ["tab:green" if s >= f else "tab:red" for s, f in zip(sp, fl)]
    ax.bar(names, [v - 1 for v in sp], bottom=1, color=colors, label="measured speedup (red: under its floor)")
    ax.scatter(names, fl, marker="_", s=600, color="black", zorder=3, label="floor (the chapter's claim)")
    for i, s in enumerate(sp):
        ax.text(i, s * 1.05, f"{s:.1f}x", ha="center", fontsize=8)
    ax.set_yscale("log")
    ax.set_ylim(1, max(sp + fl) * 1.6)
    ticks = [t for t in (1, 1.5, 2, 3, 5, 10, 20, 50, 100, 200) if t <= max(sp + fl) * 1.6]
    ax.set_yticks(ticks)
    ax.set_yticklabels([f"{t:g}x" for t in ticks])
    ax.minorticks_off()
    ax.set_ylabel("baseline / optimized (log)")
    ax.set_title(f"Speedup of each chapter's optimized program over its baseline — {gpu}")
    ax.legend(loc="upper right", fontsize=8)
    fig.tight_layout()
    fig.savefig(os.path.join(out, "speedups.png"), dpi=110)
    plt.close(fig)

    # 2. roofline
    c = exp.get("ceilings", {})
    read, bf16, fp32 = c.get("read_gbps"), c.get("bf16_tflops"), c.get("fp32_tflops")
    fig, ax = plt.subplots(figsize=(9, 5.5))
    ai = [10 ** (x / 20.0) for x in range(-60, 81)]  # 1e-3 … 1e4 flop/byte
    if read and bf16:
        ax.plot(ai, [min(bf16, read * a / 1e3) for a in ai], color="tab:blue",
                label=f"bf16 tensor cores {bf16:.0f} TFLOP/s, read {read:.0f} GB/s")
    fp8 = c.get("fp8_tflops")
    if read and fp8:
        ax.plot(ai, [min(fp8, read * a / 1e3) for a in ai], color="tab:red", ls=":",
                label=f"fp8 tensor cores {fp8:.0f} TFLOP/s")
    if read and fp32:
        ax.plot(ai, [min(fp32, read * a / 1e3) for a in ai], color="tab:gray", ls="--",
                label=f"fp32 SIMT {fp32:.0f} TFLOP/s")
    edge = 1e-3
    for n in names:
        for variant, marker in (("baseline", "o"), ("optimized", "*")):
            r = ch[n].get(variant) or {}
            g, t = r.get("gbps"), r.get("tflops")
            if not g:
                continue
            x = (t * 1e3 / g) if t else edge
            y = t if t else read * edge / 1e3 * (g / read) if read else None
            if not y:
                continue
            x = max(x, edge)
            ax.scatter([x], [y], marker=marker, s=60 if marker == "*" else 25,
                       color="tab:orange" if variant == "optimized" else "tab:purple", zorder=3)
            if variant == "optimized":
                ax.annotate(n, (x, y), textcoords="offset points", xytext=(4, 3), fontsize=7)
    ax.scatter([], [], marker="o", color="tab:purple", label="baseline")
    ax.scatter([], [], marker="*", color="tab:orange", label="optimized")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("arithmetic intensity (flop / byte); no-arithmetic programs at the left edge")
    ax.set_ylabel("attained TFLOP/s")
    ax.set_title(f"Every chapter program on the measured roofline — {gpu}")
    ax.legend(fontsize=8, loc="lower right")
    ax.grid(True, which="major", alpha=0.3)
    fig.tight_layout()
    fig.savefig(os.path.join(out, "roofline.png"), dpi=110)
    plt.close(fig)

    # 3. lab ladder at batch 1
    labs = {k: e for k, e in exp["entries"].items() if k.startswith("labs/")}
    fig, ax = plt.subplots(figsize=(8, 4))
    lnames, tps, roof = [], [], None
    # One model for the whole ladder: the one most layers measured at batch 1 (a layer may
    # also hold points of another model, e.g. layer 00's gpt-oss semantics).
    def model_of(w):
        return w.split("_B1_")[0] if "_B1_" in w else None
    models = [model_of(w) for e in labs.values() for w, p in e.get("operating_points", {}).items()
              if p.get("batch") == 1 and model_of(w)]
    model = max(set(models), key=models.count) if models else None
    for k in sorted(labs):
        pts = labs[k].get("operating_points", {})
        b1 = [p for w, p in pts.items() if p.get("batch") == 1 and model_of(w) == model] or \
             [p for p in pts.values() if p.get("batch") == 1]
        if not b1:
            continue
        lnames.append(k.split("/")[1])
        tps.append(b1[0]["tokens_per_s"])
        if read and b1[0].get("bytes") and b1[0].get("median_ms"):
            per_tok = b1[0]["bytes"] / max(1.0, b1[0]["tokens_per_s"] * b1[0]["median_ms"] / 1e3)
            roof = read * 1e9 / per_tok
    ax.bar(lnames, tps, color="tab:green", width=0.5)
    ax.set_xlim(-0.75, max(len(lnames), 3) - 0.25)
    for i, v in enumerate(tps):
        ax.text(i, v * 1.05, f"{v:.1f}", ha="center", fontsize=8)
    if roof:
        ax.axhline(roof, color="tab:blue", ls="--", label=f"bf16 roofline ≈ {roof:.0f} tok/s (bytes of the recorded step)")
        ax.legend(fontsize=8)
    ax.set_yscale("log")
    ax.set_ylabel("tokens/s at batch 1 (log)")
    ax.set_title(f"The MoE decode engine, layer by layer — {model or 'gptoss20b'}, {gpu}")
    fig.tight_layout()
    fig.savefig(os.path.join(out, "lab_ladder.png"), dpi=110)
    plt.close(fig)


def main(argv):
    ap = argparse.ArgumentParser(prog="plots.py")
    ap.add_argument("--key", default="h200")
    ap.add_argument("--out", default=os.path.join(ROOT, "docs", "plots"))
    ap.add_argument("--check", action="store_true")
    a = ap.parse_args(argv)
    src = os.path.join(ROOT, "expectations", f"{a.key}.json")
    stamp = os.path.join(a.out, "SOURCE.sha256")
    if a.check:
        want = sha(src)
        try:
            with open(stamp) as f:
                have = f.read().split()[0]
        except (OSError, IndexError):
            have = None
        pngs = all(os.path.exists(os.path.join(a.out, p)) for p in ("speedups.png", "roofline.png", "lab_ladder.png"))
        if have != want or not pngs:
            print(f"plots.py: docs/plots is stale for expectations/{a.key}.json: run `make plots`")
            return 1
        print(f"plots.py: docs/plots drawn from the current expectations/{a.key}.json")
        return 0
    with open(src) as f:
        exp = json.load(f)
    os.makedirs(a.out, exist_ok=True)
    draw(exp, a.out)
    with open(stamp, "w") as f:
        f.write(f"{sha(src)}  expectations/{a.key}.json\n")
    print(f"plots.py: drew speedups.png, roofline.png, lab_ladder.png into {os.path.relpath(a.out, ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
