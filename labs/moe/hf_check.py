#!/usr/bin/env python3
"""hf_check.py — the lab's model against Hugging Face transformers (needs torch +
transformers; run on a machine with a GPU for the decode binary).

1. Real format: small random MixtralForCausalLM and Qwen3MoeForCausalLM models, saved by
   transformers (save_pretrained, fp32; Qwen3 sharded with an index; where this
   transformers offers it, also its fused v5 expert layout, save_original_format=False).
   Their weights are first rounded to bf16 values (kept in fp32 storage), so the engine,
   which converts every weight to bf16 on load, computes with exactly transformers'
   weights: what is compared is the model's semantics, not weight rounding.
   `decode --model=DIR` must reproduce transformers' teacher-forced logits
   (rel_l2 < 1e-2, top-1 agreement >= 99%) and its greedy continuation of 32 tokens.
2. Fixtures: tests/fixtures/lab_tiny_*.json hold CPU-reference logits; each model is
   written by `decode --write-checkpoint` and its logits are recomputed by transformers.
3. The seeded mini checkpoint written by `decode --write-checkpoint`, read by transformers,
   against the engine's logits for the same prompt.

usage: python3 labs/moe/hf_check.py [--decode labs/00_baseline/decode] [--work /tmp/hf_check]
Prints one line per check and a summary; exits 1 if any check fails."""
import argparse
import json
import os
import re
import subprocess
import sys

import numpy as np
import torch
import transformers
from transformers import AutoModelForCausalLM

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
results = []


def record(name, ok, **kw):
    results.append(dict(check=name, ok=bool(ok), **kw))
    print(("PASS " if ok else "FAIL ") + name + " " + json.dumps(kw), flush=True)


def rel_l2(a, b):
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


def run_decode(decode, model_dir, ids, gen, dump):
    cmd = [decode, "--model=" + model_dir, "--prompt-ids=" + ",".join(map(str, ids)),
           "--gen=%d" % gen, "--warmup=0", "--stage-steps=0", "--dump-logits=" + dump]
    p = subprocess.run(cmd, capture_output=True, text=True)
    print(p.stdout + p.stderr, flush=True)
    m = re.search(r"^# generated\[0\]:(.*)$", p.stdout, re.M)
    toks = [int(t) for t in m.group(1).split()] if m else []
    logits = np.fromfile(dump, dtype=np.float32).reshape(len(ids), -1) if os.path.exists(dump) else None
    return p.returncode, toks, logits


def hf_logits(model, ids):
    with torch.no_grad():
        return model(torch.tensor([ids])).logits[0].float().numpy()


def hf_greedy(model, ids, n):
    seq, gaps = list(ids), []
    for _ in range(n):
        last = hf_logits(model, seq)[-1]
        top2 = np.sort(last)[-2:]
        gaps.append(float(top2[1] - top2[0]))
        seq.append(int(np.argmax(last)))
    return seq[len(ids):], min(gaps)


def compare(name, decode, model_dir, model, ids, gen=32):
    ref = hf_logits(model, ids)
    want, gap = hf_greedy(model, ids, gen)
    rc, toks, ours = run_decode(decode, model_dir, ids, gen, os.path.join(model_dir, "ours.bin"))
    if ours is None or rc != 0:
        record(name, False, rc=rc, why="decode failed")
        return
    e = rel_l2(ours, ref)
    top1 = float(np.mean(np.argmax(ours, 1) == np.argmax(ref, 1)))
    record(name + ".logits", e < 1e-2 and top1 >= 0.99, rel_l2=e, top1=top1, positions=len(ids))
    record(name + ".greedy%d" % gen, toks == want, ours=toks, transformers=want, min_top2_gap=gap)


def randomize(model):
    """Norm weights in [0.8, 1.2] (HF initializes them to 1), then every weight rounded
    to its bf16 value."""
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for n, p in model.named_parameters():
            if "norm" in n:
                p.copy_(0.8 + 0.4 * torch.rand(p.shape, generator=g))
            p.copy_(p.to(torch.bfloat16).to(torch.float32))
    return model


def real_format(decode, work):
    torch.manual_seed(0)
    rng = np.random.default_rng(7)
    common = dict(hidden_size=128, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                  vocab_size=512, rms_norm_eps=1e-5, initializer_range=0.05, tie_word_embeddings=False,
                  max_position_embeddings=256)
    cfgs = {
        "mixtral": transformers.MixtralConfig(intermediate_size=256, num_local_experts=8,
                                              num_experts_per_tok=2, head_dim=32, **common),
        "qwen3moe": transformers.Qwen3MoeConfig(moe_intermediate_size=96, num_experts=8, num_experts_per_tok=3,
                                                norm_topk_prob=False, head_dim=64, decoder_sparse_step=1,
                                                mlp_only_layers=[], **common),
    }
    for name, cfg in cfgs.items():
        model = randomize(AutoModelForCausalLM.from_config(cfg, attn_implementation="eager").float().eval())
        d = os.path.join(work, name)
        shard = "300KB" if name == "qwen3moe" else "5GB"
        model.save_pretrained(d, safe_serialization=True, max_shard_size=shard)
        print("saved %s: %s" % (d, sorted(os.listdir(d))), flush=True)
        print(open(os.path.join(d, "config.json")).read(), flush=True)
        ids = [int(t) for t in rng.integers(0, cfg.vocab_size, 24)]
        compare("real_format." + name, decode, d, model, ids)
        try:  # transformers v5's own in-memory layout: fused gate_up_proj / down_proj
            df = d + "_fused"
            model.save_pretrained(df, safe_serialization=True, save_original_format=False)
            print("saved %s: %s" % (df, sorted(os.listdir(df))), flush=True)
            compare("real_format." + name + "_fused", decode, df, model, ids, gen=8)
        except TypeError as ex:
            print("no fused layout in this transformers (%s)" % ex, flush=True)


def fixtures(decode, work):
    for preset in ("tiny_mixtral", "tiny_qwen3"):
        fx = json.load(open(os.path.join(ROOT, "tests", "fixtures", "lab_%s.json" % preset)))
        d = os.path.join(work, preset)
        subprocess.run([decode, "--write-checkpoint=" + d, "--preset=" + preset, "--seed=%d" % fx["seed"]],
                       check=True)
        model = AutoModelForCausalLM.from_pretrained(d, dtype=torch.float32, attn_implementation="eager").eval()
        got = hf_logits(model, fx["tokens"])[fx["positions"]]
        want = np.array(fx["logits"])
        e = rel_l2(got, want)
        record("fixture." + preset, e < 1e-4 and (np.argmax(got, 1) == np.argmax(want, 1)).all(), rel_l2=e,
               max_abs=float(np.abs(got - want).max()))


def mini(decode, work):
    d = os.path.join(work, "mini")
    subprocess.run([decode, "--write-checkpoint=" + d, "--preset=mini", "--seed=42"], check=True)
    model = AutoModelForCausalLM.from_pretrained(d, dtype=torch.float32, attn_implementation="eager").eval()
    ids = [int(t) for t in np.random.default_rng(3).integers(0, 2048, 32)]
    compare("synthetic.mini", decode, d, model, ids, gen=16)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--decode", default=os.path.join(ROOT, "labs", "00_baseline", "decode"))
    ap.add_argument("--work", default="/tmp/hf_check")
    ap.add_argument("--summary", default=None, help="write the results as JSON here")
    a = ap.parse_args()
    os.makedirs(a.work, exist_ok=True)
    print("torch %s, transformers %s" % (torch.__version__, transformers.__version__), flush=True)
    for step in (fixtures, real_format, mini):
        try:
            step(a.decode, a.work)
        except Exception as ex:  # record and go on: one broken step must not hide the others
            import traceback
            traceback.print_exc()
            record(step.__name__, False, error=repr(ex))
    if a.summary:
        json.dump(dict(torch=torch.__version__, transformers=transformers.__version__, results=results),
                  open(a.summary, "w"), indent=1)
    bad = [r["check"] for r in results if not r["ok"]]
    print("hf_check: %d passed, %d failed %s" % (len(results) - len(bad), len(bad), bad))
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
