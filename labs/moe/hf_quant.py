"""hf_quant.py — layer 05's weight formats applied to a transformers model, for hf_check.py
(--weights=fp8|mxfp4): each weight replaced in place by the value the engine
(labs/05_precision) computes with, so the engine and transformers compute the same function.
Which matrices: every one the engine stores (weights8.cuh: the embedding, a tied lm_head
once, q/k/v/o, router, lm_head, experts); norms, biases and sinks stay bf16. The rules are
quant_ref.py's (element-wise, plain Python): these vectorized torch versions must equal it
bit for bit (row_matches), checked on every run by hf_check.py. Needs torch."""
import torch

import quant_ref


def pow2(x):
    """2^x as fp32 for an int32 tensor x in [-149, 127], built from its bits (exact: no pow
    or ldexp whose vectorized versions may round): normal 2^x has exponent field x + 127;
    below 2^-126, the subnormal with one mantissa bit, 2^(x + 149) * 2^-149."""
    x = x.to(torch.int32)
    bits = torch.where(x >= -126, (x + 127) << 23, torch.ones_like(x) << (x + 149).clamp(0, 22))
    return bits.view(torch.float32)


def fp8_rows(w):
    """w [N, K] fp32 holding bf16 values -> (q [N, K] torch.float8_e4m3fn, s [N] fp32,
    s * q [N, K] fp32): s = the smallest power of two >= fp32(amax / 448) (0 for a zero
    row), q = E4M3(w / s) round to nearest even, saturating (weights8.cuh's rule).
    torch's float8_e4m3fn cast rounds to nearest even but gives NaN past 464, so the
    quotient is clamped to +-448 first (it is <= 448 by construction; the clamp mirrors
    __NV_SATFINITE). frexp gives t = m * 2^e, m in [0.5, 1): s = 2^e, or t itself when
    m == 0.5 (a power of two)."""
    t = w.abs().amax(dim=1) / 448.0
    m, e = torch.frexp(t)
    s = torch.where(t > 0, pow2(torch.where(m == 0.5, e - 1, e).clamp(-149, 127)), torch.zeros_like(t))
    y = torch.where(s[:, None] > 0, w / torch.where(s > 0, s, torch.ones_like(s))[:, None], torch.zeros_like(w))
    q = y.clamp(-448.0, 448.0).to(torch.float8_e4m3fn)
    return q, s, q.float() * s[:, None]


def mxfp4_rows(w):
    """w [N, K] fp32 (bf16 values, K a multiple of 32) -> (X [N, K/32] int shared
    exponents, v [N, K] the E2M1 values (signed, before the scale), v * 2^X [N, K]).
    X = floor(log2(block amax)) - 2 clamped to [-127, 113] (-127 for a zero block; layer
    05's range, labs/05_precision/mxfp4.cuh); E2M1 round to nearest even, saturating at 6
    (OCP Microscaling Formats v1.0, section 6.3). The grid's
    step is .5 below 2, 1 below 4, 2 above: rounding |w| / 2^X / step to nearest even
    is rounding to the even code, because the codes count up by one step in each range."""
    N, K = w.shape
    if K % 32:
        raise ValueError("MXFP4: %d inputs per row are not whole 32-input blocks (layer 05 refuses the model too)" % K)
    b = w.reshape(N, K // 32, 32)
    amax = b.abs().amax(dim=-1)
    _, e = torch.frexp(amax)  # amax = m * 2^e, m in [0.5, 1): floor(log2(amax)) = e - 1
    x = torch.where(amax > 0, e - 3, torch.full_like(e, -127)).clamp(-127, 113)
    sc = pow2(x)[..., None]
    y = b / sc
    a = y.abs()
    step = torch.where(a < 2, torch.full_like(a, 0.5), torch.where(a < 4, torch.ones_like(a), torch.full_like(a, 2.0)))
    v = torch.copysign((torch.round(a / step) * step).clamp(max=6.0), y)
    return x, v.reshape(N, K), (v * sc).reshape(N, K)


def weight_matrices(model):
    """Every weight matrix of model as (name, view [..., out, in], is_expert): views of the
    parameters (writing them writes the model). nn.Linear and the embedding are [out, in];
    fused experts are [E, in, out] in gpt-oss ([E, D, 2F] gate_up, [E, F, D] down) and
    [E, out, in] in Mixtral / Qwen3-MoE (transformers 5.x): the side whose size is the
    input (D for gate_up, F for down) decides, the model type where both sizes are equal."""
    cfg = model.config
    D, F = cfg.hidden_size, getattr(cfg, "moe_intermediate_size", None) or cfg.intermediate_size
    in_out_first = cfg.model_type == "gpt_oss"
    out = []
    for n, p in model.named_parameters():  # a tied lm_head is listed once (the embedding)
        if p.dim() < 2 or n.endswith(("bias", "sinks")) or "norm" in n:
            continue  # norms, biases ([E, 2F] for gpt-oss's experts), sinks: bf16 in the engine too
        expert = ".experts." in n
        if p.dim() == 2:
            out.append((n, p.data, expert))
            continue
        n_in, n_out = (D, 2 * F) if "gate_up" in n else (F, D)
        if p.dim() != 3 or {p.shape[1], p.shape[2]} != {n_in, n_out}:
            raise ValueError("%s: shape %s is not [E, %d, %d] either way round" % (n, list(p.shape), n_in, n_out))
        transposed = p.shape[1] == n_in if n_in != n_out else in_out_first
        out.append((n, p.data.transpose(1, 2) if transposed else p.data, True))
    return out


def quantize_model(model, fmt, experts_are_mxfp4=False):
    """Replace model's weights in place by the engine's dequantized fp8 (every matrix) or,
    with fmt mxfp4, MXFP4 experts + fp8 for the rest; experts_are_mxfp4 (a checkpoint whose
    experts already are MXFP4 values): the experts are left as loaded and the MXFP4
    quantizer must return them unchanged. The first and last rows of up to 12 matrices are
    checked against quant_ref (bit for bit). Returns (ok, facts): ok when every checked row
    matched (and, with experts_are_mxfp4, no expert weight changed)."""
    mats = weight_matrices(model)
    sample = set(range(0, len(mats), max(1, len(mats) // 12)))
    bad, changed, total, idem_bad, checked = [], 0, 0, 0, 0
    with torch.no_grad():
        for i, (n, view, expert) in enumerate(mats):
            w = view.reshape(-1, view.shape[-1]).float().to(torch.bfloat16).float()  # the engine's bf16 arena
            mx = fmt == "mxfp4" and expert
            deq = mxfp4_rows(w)[2] if mx else fp8_rows(w)[2]
            if mx and experts_are_mxfp4:
                idem_bad += int((deq != w).sum())
                continue
            if i in sample:
                for r in (0, w.shape[0] - 1):
                    checked += 1
                    if not row_matches(w[r], mx):
                        bad.append("%s row %d" % (n, r))
            changed += int((deq != view.reshape(deq.shape)).sum())
            total += deq.numel()
            view.copy_(deq.reshape(view.shape))
    facts = dict(fmt=fmt, matrices=len(mats), elements=total, changed_fraction=changed / max(total, 1),
                 rows_vs_quant_ref=checked, mismatched=bad[:4])
    if experts_are_mxfp4 and fmt == "mxfp4":  # (with fp8 they are quantized like every matrix)
        facts["mxfp4_expert_elements_changed"] = idem_bad
    return not bad and total > 0 and idem_bad == 0, facts


def row_matches(w, mx):
    """One row (torch fp32 [K]) through the torch quantizer and quant_ref: equal bit for bit
    (fp8: codes, scale bits, s*q values; mxfp4: exponents, signed E2M1 values, products)."""
    vals = [float(v) for v in w.tolist()]
    if mx:
        x, v, d = mxfp4_rows(w[None])
        rx, rn, rd = quant_ref.mxfp4_quantize_row(vals)
        rv = [(-1.0 if c & 8 else 1.0) * quant_ref.E2M1_MAG[c & 7] for c in rn]
        return (x[0].tolist() == rx and v[0].tolist() == rv and torch.signbit(v[0]).tolist() == [c >= 8 for c in rn]
                and d[0].tolist() == rd)
    q, s, d = fp8_rows(w[None])
    rs, rc, rd = quant_ref.fp8_quantize_row(vals)
    return (q.view(torch.uint8)[0].tolist() == rc and quant_ref.fp32_bits(float(s[0])) == quant_ref.fp32_bits(rs)
            and d[0].tolist() == rd and bool((d.to(torch.bfloat16).float() == d).all()))
