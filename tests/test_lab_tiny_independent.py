"""The lab's tiny-model fixtures against a second, independent forward pass.

tests/fixtures/lab_tiny_{mixtral,qwen3,gptoss}.json hold logits that the lab's own CPU reference
(labs/moe/reference.c) wrote; on the GPU machine labs/moe/hf_check.py compares them with
transformers. This test checks them here too, without that machine: it writes each
synthetic model as a Hugging Face checkpoint (tests/bin/test_lab_reference
--write-checkpoint, the same seeded weights), reads the safetensors file with its own
parser, and runs the model in plain Python (float64) as transformers' model definitions
describe it (modeling_mixtral.py, modeling_qwen3_moe.py: RMSNorm, rotate-half RoPE with
inv_freq = theta^(-2i/d), Qwen3's per-head q/k RMSNorm, GQA causal attention, softmax
router with top-k renormalized for Mixtral and not for Qwen3 (norm_topk_prob false),
SwiGLU experts with gate_up_proj = [gate; up], tied lm_head for Qwen3; modeling_gpt_oss.py:
biases, YaRN inverse frequencies and attention factor, per-head attention sinks, sliding
window on "sliding_attention" layers, router softmax over the top-k logits only, experts
with interleaved gate/up columns, clamped SwiGLU (alpha 1.702, limit 7) and up + 1). Nothing here
reads the C reference's code or its intermediate values: a mistake shared by the C
reference and this file would have to be made twice, independently.

Run: python3 -m unittest tests/test_lab_tiny_independent.py (after make tests/bin/test_lab_reference).
"""
import json
import math
import os
import struct
import subprocess
import tempfile
import unittest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WRITER = os.path.join(ROOT, "tests", "bin", "test_lab_reference")
REL_TOL = 1e-6  # both sides compute in double from the same bf16 weights


def read_safetensors(path):
    """{name: (shape, flat list of floats)} for BF16 / F32 tensors of a safetensors file."""
    with open(path, "rb") as f:
        blob = f.read()
    n = struct.unpack("<Q", blob[:8])[0]
    header = json.loads(blob[8:8 + n])
    data = blob[8 + n:]
    out = {}
    for name, t in header.items():
        if name == "__metadata__":
            continue
        a, b = t["data_offsets"]
        raw = data[a:b]
        if t["dtype"] == "BF16":
            vals = [struct.unpack("<f", b"\x00\x00" + raw[i:i + 2])[0] for i in range(0, len(raw), 2)]
        elif t["dtype"] == "F32":
            vals = list(struct.unpack("<%df" % (len(raw) // 4), raw))
        else:
            raise ValueError(f"{name}: dtype {t['dtype']} not handled here")
        out[name] = (t["shape"], vals)
    return out


def matrix(w, name):
    """Rows of a 2-D tensor [out][in]."""
    (rows, cols), v = w[name]
    return [v[r * cols:(r + 1) * cols] for r in range(rows)]


def linear(x, rows):
    return [sum(a * b for a, b in zip(r, x)) for r in rows]


def rmsnorm(x, weight, eps):
    s = 1.0 / math.sqrt(sum(v * v for v in x) / len(x) + eps)
    return [v * s * g for v, g in zip(x, weight)]


def rope(x, pos, theta):
    d = len(x)
    half = d // 2
    out = list(x)
    for i in range(half):
        ang = pos * theta ** (-2.0 * i / d)
        c, s = math.cos(ang), math.sin(ang)
        out[i] = x[i] * c - x[i + half] * s
        out[i + half] = x[i + half] * c + x[i] * s
    return out


def silu(v):
    return v / (1.0 + math.exp(-v))


def forward(cfg, w, tokens):
    """Logits [len(tokens)][V] of a Mixtral or Qwen3-MoE model (teacher forced)."""
    qwen = cfg["model_type"] == "qwen3_moe"
    D, H, Hkv = cfg["hidden_size"], cfg["num_attention_heads"], cfg["num_key_value_heads"]
    hd = cfg.get("head_dim") or D // H
    E = cfg["num_experts"] if qwen else cfg["num_local_experts"]
    F = cfg["moe_intermediate_size"] if qwen else cfg["intermediate_size"]
    k_top, eps, theta = cfg["num_experts_per_tok"], cfg["rms_norm_eps"], cfg["rope_theta"]
    renorm = cfg.get("norm_topk_prob", True) if qwen else True
    emb = matrix(w, "model.embed_tokens.weight")
    hs = [list(emb[t]) for t in tokens]
    for l in range(cfg["num_hidden_layers"]):
        p = f"model.layers.{l}."
        Wq, Wk, Wv, Wo = (matrix(w, p + f"self_attn.{n}_proj.weight") for n in "qkvo")
        Wg = matrix(w, p + "mlp.gate.weight")
        (_, two_f, _), gu = w[p + "mlp.experts.gate_up_proj"]
        (_, dout, fin), dn = w[p + "mlp.experts.down_proj"]
        ks, vs = [], []
        for t, h in enumerate(hs):  # attention, one position at a time (causal)
            x = rmsnorm(h, w[p + "input_layernorm.weight"][1], eps)
            q, kk, vv = linear(x, Wq), linear(x, Wk), linear(x, Wv)
            qh = [q[i * hd:(i + 1) * hd] for i in range(H)]
            kh = [kk[i * hd:(i + 1) * hd] for i in range(Hkv)]
            vh = [vv[i * hd:(i + 1) * hd] for i in range(Hkv)]
            if qwen:
                qh = [rmsnorm(v, w[p + "self_attn.q_norm.weight"][1], eps) for v in qh]
                kh = [rmsnorm(v, w[p + "self_attn.k_norm.weight"][1], eps) for v in kh]
            qh = [rope(v, t, theta) for v in qh]
            kh = [rope(v, t, theta) for v in kh]
            ks.append(kh)
            vs.append(vh)
            att = []
            for i in range(H):
                g = i // (H // Hkv)
                sc = [sum(a * b for a, b in zip(qh[i], ks[j][g])) / math.sqrt(hd) for j in range(t + 1)]
                m = max(sc)
                pr = [math.exp(s - m) for s in sc]
                z = sum(pr)
                att += [sum(pr[j] * vs[j][g][d] for j in range(t + 1)) / z for d in range(hd)]
            hs[t] = [a + b for a, b in zip(h, linear(att, Wo))]
        for t, h in enumerate(hs):  # the MoE block
            x = rmsnorm(h, w[p + "post_attention_layernorm.weight"][1], eps)
            logits = linear(x, Wg)
            m = max(logits)
            pr = [math.exp(v - m) for v in logits]
            z = sum(pr)
            pr = [v / z for v in pr]
            top = sorted(range(E), key=lambda e: -pr[e])[:k_top]
            wsum = sum(pr[e] for e in top) if renorm else 1.0
            y = [0.0] * D
            for e in top:
                base = e * two_f * D
                gate_up = [sum(gu[base + r * D + c] * x[c] for c in range(D)) for r in range(two_f)]
                act = [silu(gate_up[i]) * gate_up[F + i] for i in range(F)]
                dbase = e * dout * fin
                for r in range(D):
                    y[r] += pr[e] / wsum * sum(dn[dbase + r * fin + c] * act[c] for c in range(F))
            hs[t] = [a + b for a, b in zip(h, y)]
    head = matrix(w, "lm_head.weight") if "lm_head.weight" in w else emb
    return [linear(rmsnorm(h, w["model.norm.weight"][1], eps), head) for h in hs]


def yarn(cfg, hd):
    """(inv_freq list, attention factor) of YaRN RoPE as transformers computes them."""
    rs, base = cfg["rope_scaling"], cfg["rope_theta"]
    factor, fast, slow = rs["factor"], rs.get("beta_fast", 32), rs.get("beta_slow", 1)
    omax = rs["original_max_position_embeddings"]

    def corr_dim(rot):
        return hd * math.log(omax / (rot * 2 * math.pi)) / (2 * math.log(base))

    low, high = corr_dim(fast), corr_dim(slow)
    if rs.get("truncate", True):
        low, high = math.floor(low), math.ceil(high)
    low, high = max(low, 0), min(high, hd - 1)
    if low == high:
        high += 0.001
    inv = []
    for i in range(hd // 2):
        pos_freq = base ** (2.0 * i / hd)
        ramp = min(max((i - low) / (high - low), 0.0), 1.0)
        extra = 1.0 - ramp  # weight of extrapolation
        inv.append((1.0 / (factor * pos_freq)) * (1.0 - extra) + (1.0 / pos_freq) * extra)
    return inv, 0.1 * math.log(factor) + 1.0


def rope_inv(x, pos, inv, mscale):
    half = len(x) // 2
    out = list(x)
    for i in range(half):
        c, s = math.cos(pos * inv[i]) * mscale, math.sin(pos * inv[i]) * mscale
        out[i] = x[i] * c - x[i + half] * s
        out[i + half] = x[i + half] * c + x[i] * s
    return out


def forward_gptoss(cfg, w, tokens):
    """Logits [len(tokens)][V] of a gpt-oss model (teacher forced)."""
    D, H, Hkv, hd = cfg["hidden_size"], cfg["num_attention_heads"], cfg["num_key_value_heads"], cfg["head_dim"]
    F, k_top, eps = cfg["intermediate_size"], cfg["num_experts_per_tok"], cfg["rms_norm_eps"]
    alpha, limit = cfg.get("swiglu_alpha", 1.702), cfg["swiglu_limit"]
    inv, mscale = yarn(cfg, hd)
    emb = matrix(w, "model.embed_tokens.weight")
    hs = [list(emb[t]) for t in tokens]
    for l in range(cfg["num_hidden_layers"]):
        p = f"model.layers.{l}."
        window = cfg["sliding_window"] if cfg["layer_types"][l] == "sliding_attention" else None
        Wq, Wk, Wv, Wo = (matrix(w, p + f"self_attn.{n}_proj.weight") for n in "qkvo")
        bq, bk, bv, bo = (w[p + f"self_attn.{n}_proj.bias"][1] for n in "qkvo")
        sinks = w[p + "self_attn.sinks"][1]
        ks, vs = [], []
        for t, h in enumerate(hs):
            x = rmsnorm(h, w[p + "input_layernorm.weight"][1], eps)
            q = [a + b for a, b in zip(linear(x, Wq), bq)]
            kk = [a + b for a, b in zip(linear(x, Wk), bk)]
            vv = [a + b for a, b in zip(linear(x, Wv), bv)]
            qh = [rope_inv(q[i * hd:(i + 1) * hd], t, inv, mscale) for i in range(H)]
            ks.append([rope_inv(kk[i * hd:(i + 1) * hd], t, inv, mscale) for i in range(Hkv)])
            vs.append([vv[i * hd:(i + 1) * hd] for i in range(Hkv)])
            first = 0 if window is None else max(0, t - window + 1)
            att = []
            for i in range(H):
                g = i // (H // Hkv)
                sc = [sum(a * b for a, b in zip(qh[i], ks[j][g])) / math.sqrt(hd) for j in range(first, t + 1)]
                m = max(max(sc), sinks[i])
                pr = [math.exp(s - m) for s in sc]
                z = sum(pr) + math.exp(sinks[i] - m)  # the sink takes its share, adds no value
                att += [sum(pr[j - first] * vs[j][g][d] for j in range(first, t + 1)) / z for d in range(hd)]
            hs[t] = [a + b + c for a, b, c in zip(h, linear(att, Wo), bo)]
        Wr, br = matrix(w, p + "mlp.router.weight"), w[p + "mlp.router.bias"][1]
        (_, din, two_f), gu = w[p + "mlp.experts.gate_up_proj"]
        gub = w[p + "mlp.experts.gate_up_proj_bias"][1]
        (_, fin, dout), dn = w[p + "mlp.experts.down_proj"]
        dnb = w[p + "mlp.experts.down_proj_bias"][1]
        for t, h in enumerate(hs):
            x = rmsnorm(h, w[p + "post_attention_layernorm.weight"][1], eps)
            logits = [a + b for a, b in zip(linear(x, Wr), br)]
            top = sorted(range(len(logits)), key=lambda e: -logits[e])[:k_top]
            m = max(logits[e] for e in top)
            z = sum(math.exp(logits[e] - m) for e in top)
            y = [0.0] * D
            for e in top:
                wt = math.exp(logits[e] - m) / z
                base = e * din * two_f
                gate_up = [sum(x[c] * gu[base + c * two_f + r] for c in range(din)) + gub[e * two_f + r]
                           for r in range(two_f)]
                act = []
                for i in range(F):
                    gate = min(gate_up[2 * i], limit)
                    up = min(max(gate_up[2 * i + 1], -limit), limit)
                    act.append((up + 1.0) * gate / (1.0 + math.exp(-alpha * gate)))
                dbase = e * fin * dout
                for r in range(D):
                    y[r] += wt * (sum(act[c] * dn[dbase + c * dout + r] for c in range(fin)) + dnb[e * dout + r])
            hs[t] = [a + b for a, b in zip(h, y)]
    return [linear(rmsnorm(h, w["model.norm.weight"][1], eps), matrix(w, "lm_head.weight")) for h in hs]


class TinyFixturesMatchAnIndependentForward(unittest.TestCase):
    def check(self, preset):
        with open(os.path.join(ROOT, "tests", "fixtures", f"lab_{preset}.json")) as f:
            fx = json.load(f)
        self.assertEqual(fx["preset"], preset)
        with tempfile.TemporaryDirectory() as d:
            ck = os.path.join(d, "ckpt")
            r = subprocess.run([WRITER, f"--write-checkpoint={ck}", f"--preset={preset}",
                                f"--seed={fx['seed']}"], capture_output=True, text=True)
            self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
            with open(os.path.join(ck, "config.json")) as f:
                cfg = json.load(f)
            w = read_safetensors(os.path.join(ck, "model.safetensors"))
        logits = (forward_gptoss if cfg["model_type"] == "gpt_oss" else forward)(cfg, w, fx["tokens"])
        for i, pos in enumerate(fx["positions"]):
            want, got = fx["logits"][i], logits[pos]
            self.assertEqual(len(want), len(got))
            scale = max(abs(v) for v in got)
            worst = max(abs(a - b) for a, b in zip(want, got))
            self.assertLessEqual(worst, REL_TOL * scale + 1e-6,
                                 f"{preset} position {pos}: max |fixture - independent| = {worst:.3e}")
            self.assertEqual(max(range(len(got)), key=got.__getitem__),
                             max(range(len(want)), key=want.__getitem__))

    def test_tiny_mixtral(self):
        self.check("tiny_mixtral")

    def test_tiny_qwen3(self):
        self.check("tiny_qwen3")

    def test_tiny_gptoss(self):
        self.check("tiny_gptoss")


if __name__ == "__main__":
    unittest.main()
