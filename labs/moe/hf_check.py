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
4. gpt-oss (GptOssForCausalLM): layer 00's GPU decode (`decode --model=DIR`, at the
   layer's tolerance rel_l2 < 1e-2, top-1 >= 99%) and the CPU reference
   (tests/bin/test_lab_reference --model=DIR, the same flags and output as decode, at
   rel_l2 < 1e-4), each against transformers:
   (a) a random dense model saved by transformers: nonzero biases everywhere, sinks of
       1-4 (their share of the softmax is printed), gate/up weights wide enough that
       both SwiGLU clamps fire (the fraction is printed), gate and up statistically
       different so a swapped interleave shows, the real YaRN settings and window 128;
   (b) an MXFP4 checkpoint written by our writer (sharded, with an index), loaded by
       transformers with Mxfp4Config(dequantize=True); its dequantized experts are also
       compared bit for bit with a numpy decoding of the blocks/scales (low nibble first,
       times 2^(scale - 127), rows = outputs);
   (c) the tiny_gptoss fixture. Teacher-forced logits over 160 positions (the window edge
   127/128/129 is crossed) and 32 greedy tokens; the reference passes at rel_l2 < 1e-4.
5. --weights=fp8|mxfp4 (layer 05, labs/05_precision/decode): decode runs with that flag and
   every transformers model above has its weights replaced, in place, by the values the
   engine computes with (fp8: every matrix, E4M3 with one power-of-two scale per output
   row; mxfp4: the experts in MXFP4, 32 inputs per scale, the other matrices fp8; norms,
   biases and sinks unchanged). Both sides then compute the same function and the bf16
   bounds above apply (unquantized, the seeded models drift by rel_l2 0.08-0.22). The
   torch quantizers must first equal quant_ref.py bit for bit (step quantizer: its edge
   rows; each model: the first and last rows of up to 12 matrices). The fixtures' and the
   gpt-oss fixture's models are also decoded by the engine (their stored logits are bf16's);
   the CPU reference, bf16 only, is left out. gpt-oss's MXFP4 checkpoint with mxfp4: its
   experts already are MXFP4 values, left as loaded (the quantizer must return them unchanged).

usage: python3 labs/moe/hf_check.py [--decode labs/00_baseline/decode] [--ref tests/bin/test_lab_reference]
       [--work /tmp/hf_check] [--weights bf16|fp8|mxfp4]
       [--steps quantizer,fixtures,real_format,mini,gptoss_dense,gptoss_mxfp4,gptoss_fixture]
Prints one line per check and a summary; exits 1 if any check fails."""
import argparse
import json
import os
os.environ.setdefault("USE_HUB_KERNELS", "0")  # transformers 5.x: no hub kernels, eager experts
import re
import subprocess
import sys

import numpy as np
import torch
import transformers
from transformers import AutoModelForCausalLM

import hf_quant  # labs/moe/hf_quant.py and quant_ref.py, beside this file (the script's folder is on sys.path)
import quant_ref

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
    if WEIGHTS != "bf16" and decode != CPU_REF:  # the CPU reference has one format: bf16
        cmd.append("--weights=" + WEIGHTS)
    p = subprocess.run(cmd, capture_output=True, text=True)
    print(p.stdout + p.stderr, flush=True)
    m = re.search(r"^# generated\[0\]:(.*)$", p.stdout, re.M)
    toks = [int(t) for t in m.group(1).split()] if m else []
    logits = np.fromfile(dump, dtype=np.float32).reshape(len(ids), -1) if os.path.exists(dump) else None
    return p.returncode, toks, logits


# ---- layer 05's weight formats on the transformers side (--weights=fp8|mxfp4) -------------
# The engine (labs/05_precision) quantizes its bf16 weights at setup; hf_quant.py replaces
# each weight of the transformers model by the value the engine computes with, so both
# sides compute the same function and bf16's bounds apply.
WEIGHTS = "bf16"  # --weights: also passed to decode as --weights=... when not bf16
CPU_REF = None    # --ref: the CPU reference as a decoder (bf16 weights only)


def quantizer_check(decode, work):
    """The torch quantizers against quant_ref on its edge rows (every E4M3 value and tie,
    subnormals, scale boundaries, zero rows; every E2M1 tie, saturation, X clamped):
    equal bit for bit, or the comparisons below mean nothing."""
    rows = quant_ref.edge_rows()
    bad = [i for i, r in enumerate(rows) if not hf_quant.row_matches(torch.tensor(r, dtype=torch.float32), False)]
    record("quantizer.fp8_vs_quant_ref", not bad, rows=len(rows), elements=sum(map(len, rows)), mismatched_rows=bad)
    if WEIGHTS == "mxfp4":
        rows = quant_ref.mxfp4_edge_rows()
        bad = [i for i, r in enumerate(rows) if not hf_quant.row_matches(torch.tensor(r, dtype=torch.float32), True)]
        record("quantizer.mxfp4_vs_quant_ref", not bad, rows=len(rows), elements=sum(map(len, rows)),
               mismatched_rows=bad)


def as_engine(name, model, experts_are_mxfp4=False):
    """model as the engine under test computes it: quantized per --weights (unchanged for bf16)."""
    if WEIGHTS != "bf16":
        ok, facts = hf_quant.quantize_model(model, WEIGHTS, experts_are_mxfp4)
        record("quantize." + name, ok, **facts)
    return model


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


def compare(name, decode, model_dir, model, ids, gen=32, tol=1e-2, also=()):
    """decode (and each (suffix, binary, tol) of also, recorded as name + suffix) against
    transformers' teacher-forced logits of ids and its greedy continuation of gen tokens."""
    ref = hf_logits(model, ids)
    want, gap = hf_greedy(model, ids, gen)
    if WEIGHTS != "bf16":  # the CPU reference as a decoder computes the bf16 model only
        also = ()
    for suffix, binary, t in (("", decode, tol),) + tuple(also):
        check_decoder(name + suffix, binary, model_dir, ids, gen, t, ref, want, gap)


def check_decoder(name, decode, model_dir, ids, gen, tol, ref, want, gap):
    rc, toks, ours = run_decode(decode, model_dir, ids, gen, os.path.join(model_dir, "ours.bin"))
    if os.path.exists(os.path.join(model_dir, "ours.bin")):
        os.remove(os.path.join(model_dir, "ours.bin"))  # the next decoder must write its own
    if ours is None or rc != 0:
        record(name, False, rc=rc, why="decode failed")
        return
    e = rel_l2(ours, ref)
    top1 = float(np.mean(np.argmax(ours, 1) == np.argmax(ref, 1)))
    # per position around the window edge: the error must not jump when key 0 leaves the window
    edge = {p: rel_l2(ours[p], ref[p]) for p in (126, 127, 128, 129, 130) if p < len(ids)}
    record(name + ".logits", e < tol and top1 >= 0.99, rel_l2=e, top1=top1, positions=len(ids),
           **({"rel_l2_at": edge} if edge else {}))
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
        df = d + "_fused"
        try:  # transformers v5's own in-memory layout: fused gate_up_proj / down_proj
            model.save_pretrained(df, safe_serialization=True, save_original_format=False)
            print("saved %s: %s" % (df, sorted(os.listdir(df))), flush=True)
        except TypeError as ex:
            print("no fused layout in this transformers (%s)" % ex, flush=True)
            df = None
        as_engine("real_format." + name, model)  # after saving: the checkpoints stay bf16
        compare("real_format." + name, decode, d, model, ids)
        if df:
            compare("real_format." + name + "_fused", decode, df, model, ids, gen=8)


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
        if WEIGHTS != "bf16":  # the fixture's logits are the bf16 model's: the quantized engine on its own
            compare("fixture." + preset + "." + WEIGHTS, decode, d, as_engine("fixture." + preset, model),
                    fx["tokens"], gen=16)


def mini(decode, work):
    d = os.path.join(work, "mini")
    subprocess.run([decode, "--write-checkpoint=" + d, "--preset=mini", "--seed=42"], check=True)
    model = as_engine("synthetic.mini", AutoModelForCausalLM.from_pretrained(d, dtype=torch.float32,
                                                                             attn_implementation="eager").eval())
    ids = [int(t) for t in np.random.default_rng(3).integers(0, 2048, 32)]
    compare("synthetic.mini", decode, d, model, ids, gen=16)


def load_hf(d, **kw):
    for extra in ({"experts_implementation": "eager"}, {}):  # the choice exists in transformers 5.x only
        try:
            return AutoModelForCausalLM.from_pretrained(d, attn_implementation="eager", **extra, **kw).float().eval()
        except (TypeError, ValueError) as ex:
            if not extra:
                raise
            print("load without %s: %s" % (extra, ex), flush=True)


def experts_in_out(w, n_in):
    """An experts tensor as [E, in, out] (transformers 4.x stores it so; accept [E, out, in])."""
    return w if w.shape[1] == n_in else w.transpose(1, 2)


def gptoss_stats(model, ids):
    """Share of the softmax the sinks take (mean over heads and positions, per layer) and
    the fraction of expert gate / up pre-activations past the clamp, on this prompt."""
    seen = {}

    def grab(i):
        return lambda m, args, kwargs: seen.__setitem__(i, (args[0] if args else kwargs["hidden_states"]).detach())
    hooks = [l.mlp.register_forward_pre_hook(grab(i), with_kwargs=True) for i, l in enumerate(model.model.layers)]
    with torch.no_grad():
        out = model(torch.tensor([ids]), output_attentions=True)
    for h in hooks:
        h.remove()
    sink = [float(1 - a[0].sum(-1).mean()) for a in out.attentions]
    ex0 = model.model.layers[0].mlp.experts  # transformers 5.17 hard-codes the limit there (7.0)
    lim, D = getattr(ex0, "limit", None) or getattr(model.config, "swiglu_limit", 7.0), model.config.hidden_size
    gate_hi = up_out = n = 0
    for i, l in enumerate(model.model.layers):
        x = seen[i].reshape(-1, D).float()
        ex = l.mlp.experts
        gu = torch.einsum("td,edf->etf", x, experts_in_out(ex.gate_up_proj.float(), D)) + ex.gate_up_proj_bias.float()[:, None, :]
        gate_hi += int((gu[..., ::2] > lim).sum())
        up_out += int((gu[..., 1::2].abs() > lim).sum())
        n += gu[..., ::2].numel()
    return dict(sink_share=sink, gate_clamped=gate_hi / n, up_clamped=up_out / n)


def exercised(name, model, ids):
    """Record that sinks take a visible share and both clamps fire on this prompt."""
    try:
        st = gptoss_stats(model, ids)
    except Exception as ex:  # the statistics are a side check: keep going to the logits
        record(name + ".semantics_exercised", False, error=repr(ex))
        return
    record(name + ".semantics_exercised", min(st["sink_share"]) > 0.01 and st["gate_clamped"] > 0.001
           and st["up_clamped"] > 0.001, **st)


GPTOSS_IDS = [int(t) for t in np.random.default_rng(11).integers(0, 512, 160)]


def gptoss_dense(decode, work, ref):
    """(a) a random dense GptOssForCausalLM saved by transformers: layer 00 (GPU) and the
    CPU reference against it."""
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(5)
    ids = GPTOSS_IDS
    # (a) dense random model, D != 2F so a transposed layout cannot pass the shape check
    cfg = transformers.GptOssConfig(hidden_size=128, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4,
                                    num_key_value_heads=2, head_dim=32, num_local_experts=8, num_experts_per_tok=4,
                                    vocab_size=512, sliding_window=128, tie_word_embeddings=False,
                                    max_position_embeddings=131072)
    print(cfg, flush=True)
    model = AutoModelForCausalLM.from_config(cfg, attn_implementation="eager").float().eval()
    with torch.no_grad():
        for n, p in model.named_parameters():
            if "norm" in n:
                p.copy_(0.8 + 0.4 * torch.rand(p.shape, generator=g))
            elif n.endswith("sinks"):
                p.copy_(1.0 + 3.0 * torch.rand(p.shape, generator=g))
            elif "bias" in n:
                p.copy_(0.3 * torch.randn(p.shape, generator=g))
            elif n.endswith("experts.gate_up_proj"):  # [E, D, 2F]: gate columns wider than up columns
                w = experts_in_out(torch.randn(p.shape, generator=g) / cfg.hidden_size ** 0.5, cfg.hidden_size)
                w[..., 0::2] *= 4.0
                w[..., 1::2] *= 2.5
                p.copy_(experts_in_out(w, p.shape[1]))
            elif "experts" in n or "proj" in n or "router" in n:
                fan_in = p.shape[-2] if "experts" in n else p.shape[-1]
                p.copy_(torch.randn(p.shape, generator=g) / fan_in ** 0.5)
            else:
                p.copy_(torch.randn(p.shape, generator=g) * (1.0 if "embed" in n else 2 / cfg.hidden_size ** 0.5))
            p.copy_(p.to(torch.bfloat16).to(torch.float32))
    d = os.path.join(work, "gptoss_dense")
    model.save_pretrained(d, safe_serialization=True, max_shard_size="400KB")
    print("saved %s: %s" % (d, sorted(os.listdir(d))), flush=True)
    from safetensors import safe_open
    for f in sorted(os.listdir(d)):
        if f.endswith(".safetensors"):
            with safe_open(os.path.join(d, f), "np") as st:
                print(f, {k: list(st.get_slice(k).get_shape()) for k in st.keys() if "layers.0.mlp" in k}, flush=True)
    model = as_engine("gptoss.dense", load_hf(d))
    exercised("gptoss.dense", model, ids)
    compare("gptoss.dense", decode, d, model, ids, also=((".cpu_reference", ref, 1e-4),))


def gptoss_mxfp4(decode, work, ref):
    """(b) an MXFP4 checkpoint of our writer, dequantized by transformers: layer 00 (GPU,
    which decodes the MXFP4 experts to bf16 at load) and the CPU reference against it."""
    ids = [t % 128 for t in GPTOSS_IDS]
    d = os.path.join(work, "gptoss_mxfp4")
    subprocess.run([ref, "--write-checkpoint=" + d, "--preset=tiny_gptoss", "--mxfp4", "--seed=9",
                    "--shard-bytes=40000"], check=True)
    print("wrote %s: %s" % (d, sorted(os.listdir(d))), flush=True)
    model = load_hf(d, quantization_config=transformers.Mxfp4Config(dequantize=True))
    exact, nib, scl = True, set(), set()
    from safetensors import safe_open
    raw = {}  # the U8 blocks and scales only (numpy has no bfloat16)
    for f in sorted(os.listdir(d)):
        if f.endswith(".safetensors"):
            with safe_open(os.path.join(d, f), "np") as st:
                raw.update({k: st.get_tensor(k) for k in st.keys() if k.endswith(("_blocks", "_scales"))})
    lut = np.array([0, .5, 1, 1.5, 2, 3, 4, 6, -0., -.5, -1, -1.5, -2, -3, -4, -6], np.float64)
    for i, l in enumerate(model.model.layers):
        for name in ("gate_up_proj", "down_proj"):
            b, sc = raw["model.layers.%d.mlp.experts.%s_blocks" % (i, name)], raw["model.layers.%d.mlp.experts.%s_scales" % (i, name)]
            nib |= set(np.unique(b & 15).tolist()) | set(np.unique(b >> 4).tolist())
            scl |= set(np.unique(sc).tolist())
            v = np.empty(b.shape[:-1] + (32,))
            v[..., 0::2], v[..., 1::2] = lut[b & 15], lut[b >> 4]           # low nibble first
            v = (v * np.exp2(sc.astype(np.float64) - 127)[..., None]).reshape(b.shape[0], b.shape[1], -1)
            n_in = v.shape[2]
            got = experts_in_out(getattr(l.mlp.experts, name).detach().double(), n_in).numpy()  # [E, in, out]
            exact &= got.shape == v.transpose(0, 2, 1).shape and bool(np.array_equal(got, v.transpose(0, 2, 1)))
    record("gptoss.mxfp4.dequantized_weights", exact and len(nib) == 16 and len(scl) >= 4,
           nibbles=len(nib), scale_bytes=sorted(scl))
    as_engine("gptoss.mxfp4", model, experts_are_mxfp4=True)
    exercised("gptoss.mxfp4", model, ids)
    compare("gptoss.mxfp4", decode, d, model, ids, also=((".cpu_reference", ref, 1e-4),))


def gptoss_fixture(decode, work, ref):
    """(c) tests/fixtures/lab_tiny_gptoss.json's reference logits, recomputed by transformers."""
    fx = json.load(open(os.path.join(ROOT, "tests", "fixtures", "lab_tiny_gptoss.json")))
    d = os.path.join(work, "tiny_gptoss")
    subprocess.run([ref, "--write-checkpoint=" + d, "--preset=tiny_gptoss", "--seed=%d" % fx["seed"]], check=True)
    model = load_hf(d)
    got = hf_logits(model, fx["tokens"])[fx["positions"]]
    want = np.array(fx["logits"])
    e = rel_l2(got, want)
    record("fixture.tiny_gptoss", e < 1e-4 and (np.argmax(got, 1) == np.argmax(want, 1)).all(), rel_l2=e,
           max_abs=float(np.abs(got - want).max()))
    if WEIGHTS != "bf16":  # the quantized engine (GPU) against the quantized transformers model
        compare("fixture.tiny_gptoss." + WEIGHTS, decode, d, as_engine("fixture.tiny_gptoss", model),
                fx["tokens"], gen=16)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--decode", default=os.path.join(ROOT, "labs", "00_baseline", "decode"))
    ap.add_argument("--ref", default=os.path.join(ROOT, "tests", "bin", "test_lab_reference"),
                    help="the CPU reference as a decoder (gpt-oss checks)")
    ap.add_argument("--steps", default="quantizer,fixtures,real_format,mini,gptoss_dense,gptoss_mxfp4,gptoss_fixture")
    ap.add_argument("--weights", default="bf16", choices=("bf16", "fp8", "mxfp4"),
                    help="the engine's weight format (layer 05): passed to decode, and the transformers "
                         "model's weights replaced by the same dequantized values")
    ap.add_argument("--work", default="/tmp/hf_check")
    ap.add_argument("--summary", default=None, help="write the results as JSON here")
    a = ap.parse_args()
    global WEIGHTS, CPU_REF
    WEIGHTS, CPU_REF = a.weights, a.ref
    os.makedirs(a.work, exist_ok=True)
    print("torch %s, transformers %s" % (torch.__version__, transformers.__version__), flush=True)
    steps = dict(quantizer=quantizer_check, fixtures=fixtures, real_format=real_format, mini=mini,
                 gptoss_dense=gptoss_dense, gptoss_mxfp4=gptoss_mxfp4, gptoss_fixture=gptoss_fixture)
    for name in a.steps.split(","):
        if name == "quantizer" and WEIGHTS == "bf16":
            continue  # nothing is quantized
        step = steps[name]
        try:
            step(a.decode, a.work, *((a.ref,) if name.startswith("gptoss") else ()))
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
