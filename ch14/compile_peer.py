#!/usr/bin/env python3
"""ch14 compile peer: residual add + RMSNorm + FP8 quantize in PyTorch, eager and compiled.

The same three ops as ch14/baseline.cu and ch14/optimized.cu, same shapes, same
definitions (h = bf16(x + residual); y = bf16(h * rsqrt(mean(h^2) + eps) * w), fp32 math;
scale = amax|y| / 448; q = E4M3(y * 448 / amax)), run two ways on the same GPU:

  torch_eager    one CUDA kernel (or more) per PyTorch op, as a framework runs them
  torch_compile  torch.compile (TorchInductor), which fuses the ops into generated Triton
                 kernels: the compiler's answer to the fusion ch14/optimized.cu does by hand
  torch_compile_graphs  the same, mode="reduce-overhead": replayed as a CUDA graph, so the
                 host's per-call Python and launch overhead leaves the timed region (inputs
                 marked static, so the graph reads them in place instead of copying them)

Each variant is validated against a float64 reference on the GPU (h within half a bf16
step, scales at bf16 tolerance, every fp8 code within one E4M3 step of the reference's,
as the C programs check), then timed with CUDA events: untimed warm-up, one event pair
per iteration, median reported. With --l2=cold (the default, like the C programs) a
2x-L2 buffer is read before every iteration, outside the event pair. GB/s uses the C
programs' byte count (read x, residual, w; write h, q, scales), so the numbers compare.

  python3 ch14/compile_peer.py                # T=4096, D=2880
  python3 ch14/compile_peer.py --T=64         # a decode batch
  python3 ch14/compile_peer.py --emulate-precision-casts   # Inductor rounds y to bf16 as eager does

Prints '#' lines and one JSON line per variant. Exit: 0 all PASS, 1 a validation
failure, 2 bad arguments, 77 no CUDA device or no PyTorch.
"""
import argparse
import json
import os
import re
import statistics
import sys

FP8_MAX = 448.0
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def norm_quant(x, residual, w, eps: float):
    """The three ops as a PyTorch user writes them. x, residual [T][D] bf16, w [D] bf16.
    Returns h [T][D] bf16, q [T][D] float8_e4m3fn, scale [T] fp32."""
    import torch
    h = x + residual
    hf = h.float()
    y = (hf * torch.rsqrt(hf.pow(2).mean(-1, keepdim=True) + eps) * w.float()).to(torch.bfloat16)
    amax = y.float().abs().amax(-1, keepdim=True)
    inv = torch.where(amax > 0, FP8_MAX / amax, torch.zeros_like(amax))
    q = (y.float() * inv).clamp(-FP8_MAX, FP8_MAX).to(torch.float8_e4m3fn)
    return h, q, (amax / FP8_MAX).squeeze(-1)


def reference(x, residual, w, eps):
    """float64 reference: h exact; the norm reads h as stored (bf16); y kept in float64;
    the reference's fp8 codes are the round-to-nearest-even of y * 448 / amax."""
    import torch
    h_ref = x.double() + residual.double()
    hb = (x.float() + residual.float()).to(torch.bfloat16).double()
    y = hb * torch.rsqrt(hb.pow(2).mean(-1, keepdim=True) + eps) * w.double()
    amax = y.abs().amax(-1, keepdim=True)
    codes = torch.where(amax > 0, y * FP8_MAX / amax, torch.zeros_like(y)).float()
    return h_ref, amax.squeeze(-1) / FP8_MAX, codes.to(torch.float8_e4m3fn)


def check(out, ref):
    """(pass, one_off, detail): h within half a bf16 step (one rounding of an exact sum),
    scales within 2^-7 relative (bf16 tolerance), fp8 codes within one E4M3 step."""
    import torch
    h, q, scale = out
    h_ref, scale_ref, code_ref = ref
    h_err = ((h.double() - h_ref).abs() <= h_ref.abs() * 2.0 ** -8).all().item()
    s_err = ((scale.double() - scale_ref).abs() <= scale_ref.abs() * 2.0 ** -7).all().item()

    def ordinal(c):  # sign-magnitude code -> position on the number line
        c = c.view(torch.uint8).int()
        return torch.where(c >= 128, -(c - 128), c)
    qb = q.view(torch.uint8)
    nan = ((qb & 0x7F) == 0x7F).sum().item()
    dist = (ordinal(q) - ordinal(code_ref)).abs()
    one_off, far = (dist == 1).sum().item(), (dist > 1).sum().item()
    ok = bool(h_err and s_err and far == 0 and nan == 0)
    return ok, one_off, f"h {'ok' if h_err else 'BAD'}, scales {'ok' if s_err else 'BAD'}, " \
                        f"fp8 codes >1 step off {far}, NaN {nan}, 1 step off {one_off}"


def kernel_names(fn, args):
    """The CUDA kernels one call launches (torch.profiler), in order; None if unavailable."""
    import torch
    try:
        from torch.profiler import ProfilerActivity, profile
        with profile(activities=[ProfilerActivity.CUDA]) as prof:
            fn(*args)
            torch.cuda.synchronize()
        return [e.name for e in prof.events() if e.device_type == torch.autograd.DeviceType.CUDA]
    except Exception as ex:  # profiler missing or CUPTI busy: report, do not fail
        print(f"# kernel count unavailable: {ex}")
        return None


def time_it(fn, args, warmup, iters, flush):
    """Per-iteration CUDA-event times in ms (flush read outside the event pair)."""
    import torch
    for _ in range(warmup):
        if flush is not None:
            flush.sum()
        fn(*args)
    torch.cuda.synchronize()
    ev = [(torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True))
          for _ in range(iters)]
    for a, b in ev:
        if flush is not None:
            flush.sum()
        a.record()
        fn(*args)
        b.record()
    torch.cuda.synchronize()
    return [a.elapsed_time(b) for a, b in ev]


def copy_ceiling(gpu_name):
    """ceilings.copy_gbps of expectations/<key>.json ("NVIDIA H200" -> h200), else None."""
    words = gpu_name.lower().replace("nvidia", "").split()
    key = re.sub(r"[^a-z0-9]", "", words[0]) if words else ""
    try:
        with open(os.path.join(ROOT, "expectations", f"{key}.json")) as f:
            return float(json.load(f)["ceilings"]["copy_gbps"])
    except (OSError, KeyError, ValueError, TypeError):
        return None


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--T", type=int, default=4096, help="tokens (default 4096)")
    ap.add_argument("--D", type=int, default=2880, help="hidden size (default 2880)")
    ap.add_argument("--warmup", type=int, default=10)
    ap.add_argument("--iters", type=int, default=200)
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--l2", choices=("cold", "warm"), default="cold")
    ap.add_argument("--emulate-precision-casts", action="store_true",
                    help="torch._inductor.config.emulate_precision_casts = True: keep the "
                         "bf16 roundings of intermediates that Inductor otherwise drops")
    a = ap.parse_args()  # exits 2 with usage on a bad flag
    if a.T < 1 or a.D < 8 or a.D % 8 or a.iters < 1 or a.warmup < 0:
        ap.error("need T >= 1, D >= 8 a multiple of 8, iters >= 1, warmup >= 0")
    try:
        import torch
    except ImportError:
        print("WAIVED: ch14/compile_peer.py needs PyTorch; not installed")
        return 77
    if not torch.cuda.is_available():
        print("WAIVED: ch14/compile_peer.py needs a CUDA GPU; none found")
        return 77

    dev = torch.device("cuda")
    props = torch.cuda.get_device_properties(dev)
    g = torch.Generator(device=dev).manual_seed(a.seed)
    T, D, eps = a.T, a.D, 1e-5
    x = (torch.rand(T, D, generator=g, device=dev) * 2 - 1).to(torch.bfloat16)
    res = (torch.rand(T, D, generator=g, device=dev) * 8 - 4).to(torch.bfloat16)
    w = (torch.rand(D, generator=g, device=dev) * 1.75 + 0.25).to(torch.bfloat16)
    args = (x, res, w, eps)
    nbytes = 7 * T * D + 2 * D + 4 * T
    flush = None
    if a.l2 == "cold":
        flush = torch.ones(2 * props.L2_cache_size // 4, dtype=torch.float32, device=dev)
    ceiling = copy_ceiling(props.name)
    try:
        import triton
        triton_v = triton.__version__
    except ImportError:
        triton_v = None
    print(f"# ch14 compile peer: {props.name}, torch {torch.__version__}, triton {triton_v}, "
          f"CUDA {torch.version.cuda}; T={T} D={D}; L2 {a.l2}; warm-up {a.warmup}, "
          f"iters {a.iters}; {nbytes / 1e6:.1f} MB per iteration (the C programs' count)")
    ref = reference(x, res, w, eps)

    if a.emulate_precision_casts:
        import torch._inductor.config as inductor_config
        inductor_config.emulate_precision_casts = True
    sfx = "_emulate" if a.emulate_precision_casts else ""
    variants = [] if a.emulate_precision_casts else [("torch_eager", norm_quant)]
    variants.append(("torch_compile" + sfx,
                     torch.compile(norm_quant, fullgraph=True, dynamic=False)))
    for t in (x, res, w):  # the CUDA graph reads the inputs where they are
        torch._dynamo.mark_static_address(t)
    variants.append(("torch_compile_graphs" + sfx, torch.compile(
        norm_quant, fullgraph=True, dynamic=False, mode="reduce-overhead")))
    rc = 0
    for name, fn in variants:
        line = {"target": "ch14", "variant": name, "gpu": props.name, "torch": torch.__version__,
                "triton": triton_v, "workload": f"T{T}_D{D}", "l2": a.l2, "warmup": a.warmup,
                "iters": a.iters, "bytes": nbytes}
        try:
            for _ in range(2):  # the first call compiles; a CUDA graph is recorded on the second
                fn(*args)
            ok, one_off, detail = check(fn(*args), ref)
        except Exception as ex:
            print(f"# {name}: failed to run: {type(ex).__name__}: {ex}")
            line.update(status="ERROR", error=f"{type(ex).__name__}")
            print(json.dumps(line))
            rc = 1
            continue
        print(f"# validate {name}: {detail} -> {'PASS' if ok else 'FAIL'}")
        line.update(status="PASS" if ok else "FAIL", fp8_codes_one_off=one_off)
        if not ok:  # never time a wrong result
            print(json.dumps(line))
            rc = 1
            continue
        names = kernel_names(fn, args)
        if names is not None:
            print(f"# {name}: {len(names)} kernels per call: " + ", ".join(n[:60] for n in names))
        ms = sorted(time_it(fn, args, a.warmup, a.iters, flush))
        med = statistics.median(ms)
        gbps = nbytes / (med * 1e-3) / 1e9
        line.update(kernels_per_iter=len(names) if names is not None else None,
                    median_ms=round(med, 6), p95_ms=round(ms[int(0.95 * (len(ms) - 1))], 6),
                    min_ms=round(ms[0], 6), gbps=round(gbps, 1),
                    pct_of_copy=round(100 * gbps / ceiling, 2) if ceiling else None)
        print(f"# {name}: median {med * 1e3:.2f} us, {gbps:.0f} GB/s"
              + (f" = {100 * gbps / ceiling:.1f}% of the copy ceiling ({ceiling:.0f} GB/s)"
                 if ceiling else ""))
        print(json.dumps(line))
    return rc


if __name__ == "__main__":
    sys.exit(main())
