#!/usr/bin/env python3
"""fp8_exact.py — make a bf16 checkpoint that layer 05's FP8 E4M3 store holds EXACTLY, so the
engine's check of --weights=fp8 against the CPU reference measures the fp8 kernels alone.

Layer 05 quantizes every weight row with s = amax / 448 and q = E4M3(w / s) (weights8.cuh),
and the CPU reference reads the bf16 weights: its check (rel_l2 < 6e-2) mostly measures the
quantization. This script rewrites, in place, every tensor of two or more dimensions of a
checkpoint written by `decode --write-checkpoint` (rows = the last dimension) so that each
row r becomes w'[k] = s_r · q[k], with s_r = 2^ceil(log2(amax_r / 448)) a power of two,
q[k] = E4M3 round-to-nearest-even(w[k] / s_r), and the row's largest |w| set to 448 · s_r.
Then layer 05's own quantizer finds s = amax / 448 = s_r exactly and q exactly (every s·q is
a bf16: 4 significant bits times a power of two), the fp8 store decodes to the very bf16
weights the reference reads, and a correct layer 05 agrees with the reference the way a bf16
layer does (layers 03/04: rel_l2 ~1e-5). A wrong scale, fragment or tile shows as ~1e-2+.
Vectors (norms, biases) are left alone. Standard library only; fine for the tiny presets
(tiny_qwen3, tiny_mixtral: about a second), slow for mini (14M weights in Python).

usage: python3 labs/05_precision/fp8_exact.py DIR     (DIR: from decode --write-checkpoint)
Prints one summary line; exit 0, or 1 on a checkpoint it cannot read (not BF16, no files)."""
import bisect
import glob
import json
import math
import os
import struct
import sys


def e4m3_values():
    """The non-negative finite E4M3 values (OCP 8-bit FP spec v1.0: bias 7, 3 mantissa bits,
    no infinities, S.1111.111 NaN), ascending, with their codes (the code's parity is the
    mantissa's last bit: ties go to the even code)."""
    vals = []
    for code in range(0x7F):  # 0x7F is NaN
        e, m = code >> 3, code & 7
        v = m / 8.0 * 2.0 ** -6 if e == 0 else (1 + m / 8.0) * 2.0 ** (e - 7)
        vals.append((v, code))
    return vals


E4M3 = e4m3_values()
E4M3_V = [v for v, _ in E4M3]


def e4m3_rne(y):
    """y (|y| <= 448) to the nearest E4M3 value, ties to the even code."""
    a = abs(y)
    i = bisect.bisect_left(E4M3_V, a)
    if i == len(E4M3_V):
        i -= 1
    elif i > 0 and E4M3_V[i] != a:
        lo, hi = E4M3[i - 1], E4M3[i]
        d_lo, d_hi = a - lo[0], hi[0] - a
        i = i - 1 if d_lo < d_hi or (d_lo == d_hi and lo[1] % 2 == 0) else i
    return math.copysign(E4M3_V[i], y)


def bf16_to_f(h):
    return struct.unpack('<f', struct.pack('<I', h << 16))[0]


def f_to_bf16_exact(f):
    b = struct.unpack('<I', struct.pack('<f', f))[0]
    assert b & 0xFFFF == 0, "not a bf16 value: %r" % f
    return b >> 16


def pow2_scale(amax):
    """2^ceil(log2(amax / 448)), exactly."""
    m, e = math.frexp(amax / 448.0)  # amax / 448 = m · 2^e, m in [0.5, 1)
    return math.ldexp(1.0, e - 1 if m == 0.5 else e)


def fix_row(w):
    """One row of bf16 bits → the row s·q (bf16 bits), amax = 448·s."""
    f = [bf16_to_f(h) for h in w]
    amax = max(abs(x) for x in f)
    if amax == 0.0:
        return w
    s = pow2_scale(amax)
    q = [e4m3_rne(x / s) for x in f]
    at = max(range(len(f)), key=lambda k: abs(f[k]))
    q[at] = math.copysign(448.0, f[at])
    return [f_to_bf16_exact(s * v) for v in q]


def main():
    if len(sys.argv) != 2:
        print(__doc__.split("usage: ")[1].split("\n")[0], file=sys.stderr)
        return 2
    files = sorted(glob.glob(os.path.join(sys.argv[1], "*.safetensors")))
    if not files:
        print("fp8_exact.py: no .safetensors in %s" % sys.argv[1], file=sys.stderr)
        return 1
    n_rows = n_tensors = 0
    for path in files:
        data = bytearray(open(path, "rb").read())
        n = struct.unpack("<Q", data[:8])[0]
        header = json.loads(data[8:8 + n])
        for name, t in header.items():
            if name == "__metadata__" or len(t["shape"]) < 2:
                continue
            if t["dtype"] != "BF16":
                print("fp8_exact.py: %s is %s, not BF16" % (name, t["dtype"]), file=sys.stderr)
                return 1
            cols = t["shape"][-1]
            b0, b1 = t["data_offsets"]
            at = 8 + n + b0
            count = (b1 - b0) // 2
            vals = list(struct.unpack("<%dH" % count, data[at:at + 2 * count]))
            for r in range(count // cols):
                vals[r * cols:(r + 1) * cols] = fix_row(vals[r * cols:(r + 1) * cols])
            data[at:at + 2 * count] = struct.pack("<%dH" % count, *vals)
            n_rows += count // cols
            n_tensors += 1
        open(path, "wb").write(bytes(data))
    print("fp8_exact.py: %d tensors, %d rows rewritten as power-of-two-scaled E4M3 values (amax = 448 s)"
          % (n_tensors, n_rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
