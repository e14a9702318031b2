"""quant_ref.py — layer 05's weight quantizers written a second time, in plain Python
(standard library only), element by element from the formats' definitions: the reference
that hf_check.py's vectorized torch quantizers must equal bit for bit, and that
tests/test_lab05_quant_ref.py checks in CI (where torch is absent).

FP8 E4M3, one scale per output row (labs/05_precision/weights8.cuh):
    s = the smallest power of two >= fp32(amax / 448)   (0 when amax == 0)
    q = E4M3(w / s), round to nearest, ties to the even code, saturating to +-448
E4M3: sign, 4 exponent bits (bias 7), 3 mantissa bits; exponent field 0 is subnormal
(m/8 * 2^-6); S.1111.111 is NaN, so 448 = 1.75 * 2^8 is the largest finite value (OCP
8-bit Floating Point Specification (OFP8) v1.0, 2023: E4M3 has no infinities).

MXFP4, one scale per 32 consecutive inputs of a row (OCP Microscaling Formats (MX) v1.0,
2023, section 6.3): shared exponent X = floor(log2(amax of the block)) - 2 (2 = emax of
E2M1), clamped to [-127, 113] as layer 05 does (labs/05_precision/mxfp4.cuh: UE8M0 has no
2^-128; 113 keeps its decoder's factor 2^(X+14) a normal fp32); elements E2M1(w / 2^X)
round to nearest, ties to the even code, saturating to +-6. E2M1: sign, 2 exponent bits (bias 1), 1 mantissa
bit: magnitudes 0, .5, 1, 1.5, 2, 3, 4, 6 (codes 0-7). A block of zeros gets X = -127.

Every value here is a Python float (a double); the inputs are bf16 or fp32 values, every
code value is dyadic, so the differences compared below are exact (fractions.Fraction
where a double could round)."""
import math
import struct
from bisect import bisect_left
from fractions import Fraction

E4M3_MAX = 448.0
E2M1_MAG = (0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0)  # code c (0-7) -> magnitude


def fp32(x):
    """x rounded to the nearest fp32 value (round to nearest even), as a float."""
    return struct.unpack("<f", struct.pack("<f", x))[0]


def fp32_bits(x):
    """The 32-bit pattern of fp32(x)."""
    return struct.unpack("<I", struct.pack("<f", x))[0]


def e4m3_decode(code):
    """The value of an E4M3 byte (0-255); NaN for 0x7F and 0xFF."""
    sign = -1.0 if code & 0x80 else 1.0
    exp, man = (code >> 3) & 15, code & 7
    if exp == 15 and man == 7:
        return math.nan
    if exp == 0:
        return sign * man / 8.0 * 2.0 ** -6
    return sign * (1 + man / 8.0) * 2.0 ** (exp - 7)


# the 127 finite non-negative codes in increasing value (0x00 .. 0x7E are monotonic)
_POS = [e4m3_decode(c) for c in range(0x7F)]


def e4m3_encode(x):
    """E4M3 byte of x: nearest finite value, ties to the even code (mantissa bit 0 clear),
    |x| >= 448 saturates to +-448 (0x7E / 0xFE); NaN gives 0x7F; the sign of a zero kept."""
    if math.isnan(x):
        return 0x7F
    sign = 0x80 if math.copysign(1.0, x) < 0 else 0
    a = abs(x)
    if a >= E4M3_MAX:
        return sign | 0x7E
    i = bisect_left(_POS, a)  # _POS[i-1] < a <= _POS[i]
    if _POS[i] == a:
        return sign | i
    lo, hi = i - 1, i
    d_lo, d_hi = Fraction(a) - Fraction(_POS[lo]), Fraction(_POS[hi]) - Fraction(a)
    c = lo if d_lo < d_hi else hi if d_hi < d_lo else (lo if lo % 2 == 0 else hi)
    return sign | c


def fp8_row_scale(amax):
    """The row scale: the smallest power of two >= fp32(amax / 448), 0.0 for amax == 0.
    The quotient is rounded to fp32 first, as the engine divides in fp32 (a double
    quotient rounded to fp32 is the fp32 quotient: 53 >= 2*24 + 2 bits)."""
    t = fp32(amax / E4M3_MAX)
    if not t > 0:
        return 0.0
    s = 2.0 ** math.ceil(math.log2(t))  # then correct log2's rounding, exactly
    while s / 2 >= t:
        s /= 2
    while s < t:
        s *= 2
    return s


def fp8_quantize_row(row):
    """One row (bf16/fp32 values) -> (s, codes [bytes 0-255], dequantized s * E4M3(code))."""
    amax = max((abs(v) for v in row), default=0.0)
    s = fp8_row_scale(amax)
    codes = [e4m3_encode(v / s) if s > 0 else 0 for v in row]  # s = 0: +0 (the engine's 0.f)
    return s, codes, [s * e4m3_decode(c) for c in codes]


def e2m1_encode(x):
    """E2M1 nibble of x (bit 3 the sign): nearest of E2M1_MAG, ties to the even code,
    saturating at 6."""
    sign = 8 if math.copysign(1.0, x) < 0 else 0
    a = abs(x)
    if a >= 6.0:
        return sign | 7
    best = 0
    for c in range(1, 8):
        d_best, d_c = abs(Fraction(a) - Fraction(E2M1_MAG[best])), abs(Fraction(a) - Fraction(E2M1_MAG[c]))
        if d_c < d_best or (d_c == d_best and c % 2 == 0 and best % 2 == 1):
            best = c
    return sign | best


def mxfp4_quantize_row(row):
    """One row (length a multiple of 32) -> (shared exponents X per block, nibbles,
    dequantized E2M1(nibble) * 2^X)."""
    if len(row) % 32:
        raise ValueError("MXFP4: a row of %d inputs is not a whole number of 32-input blocks" % len(row))
    xs, nib, deq = [], [], []
    for g in range(0, len(row), 32):
        blk = row[g:g + 32]
        amax = max(abs(v) for v in blk)
        x = math.frexp(amax)[1] - 1 - 2 if amax > 0 else -127  # frexp: amax = m 2^e, m in [0.5, 1)
        x = max(-127, min(113, x))
        xs.append(x)
        for v in blk:
            n = e2m1_encode(v / 2.0 ** x)
            nib.append(n)
            deq.append((-1.0 if n & 8 else 1.0) * E2M1_MAG[n & 7] * 2.0 ** x)
    return xs, nib, deq


def edge_rows():
    """Rows (lists of bf16-exact floats) that reach every branch of both quantizers:
    every finite E4M3 value (the row's amax exactly 448, scale 1), every midpoint between
    neighbouring E4M3 values (the ties) with its bf16 neighbours on both sides, the
    subnormal range and below it, a row whose amax / 448 is a power of two and one just
    past it, a zero row, negatives; each also scaled by 2^-9 and 2^5 (other scales)."""
    pos = list(_POS)
    mids = [(a + b) / 2 for a, b in zip(pos, pos[1:])]
    rows = [pos + [-v for v in pos],                                   # every code, amax 448
            [448.0] + mids + [-m for m in mids],                       # ties, scale 1
            [448.0] + [bf16_next(m, +1) for m in mids] + [bf16_next(m, -1) for m in mids],
            [448.0, 2.0 ** -7, 2.0 ** -9, 3 * 2.0 ** -10, 2.0 ** -10, 2.0 ** -11, -2.0 ** -10, 1.5 * 2.0 ** -9],
            [0.0] * 32,
            [0.75 * 2.0 ** 10] + [1.0] * 31,                          # amax / 448 not a power of two
            [448.0 * 2.0 ** -3, -1.0, 0.3125, 0.34375],                # amax / 448 exactly 2^-3
            [bf16_next(448.0 * 2.0 ** -3, +1), -1.0, 0.3125, 0.34375]]
    out = []
    for r in rows:
        for k in (1.0, 2.0 ** -9, 2.0 ** 5):
            out.append([bf16(v * k) for v in r])
    return out


def bf16(x):
    """x rounded to the nearest bf16 value (round to nearest even)."""
    b = fp32_bits(x)
    b = (b + 0x7FFF + ((b >> 16) & 1)) & 0xFFFF0000
    return struct.unpack("<f", struct.pack("<I", b))[0]


def bf16_next(x, direction):
    """The bf16 value next to bf16(x) > 0: one step up (direction +1) or down (-1)."""
    if not x > 0:
        raise ValueError("bf16_next: positive values only")
    b = (fp32_bits(bf16(x)) >> 16) + direction
    return struct.unpack("<f", struct.pack("<I", b << 16))[0]


def mxfp4_edge_rows():
    """Rows of whole 32-input blocks for the MXFP4 quantizer: every E2M1 tie (.25, .75,
    1.25, 1.75, 2.5, 3.5, 5) and its bf16 neighbours, magnitudes past 6 (saturation, the
    block's amax just under 8 * 2^X), a zero block, blocks so small that X clamps at -127,
    and negatives; each block with a different amax (other shared exponents)."""
    ties = [0.25, 0.75, 1.25, 1.75, 2.5, 3.5, 5.0]
    b1 = [4.0] + ties + [-t for t in ties] + [bf16_next(t, +1) for t in ties] + [bf16_next(t, -1) for t in ties]
    b1 += [0.0] * (32 - len(b1))
    b2 = [bf16_next(8.0, -1), 6.5, 7.0, -6.25, 6.0, 5.5, -5.0, 0.125] + [0.0] * 24
    b3 = [0.0] * 32
    b4 = [2.0 ** -130, -2.0 ** -131, 3 * 2.0 ** -133] + [0.0] * 29
    b5 = [bf16(0.37 * (i - 15.5) / 16) for i in range(32)]
    row = []
    for k, b in ((1.0, b1), (1.0, b2), (1.0, b3), (1.0, b4), (2.0 ** -6, b1), (2.0 ** 3, b2), (1.0, b5)):
        row += [bf16(v * k) for v in b]
    return [row, [-v for v in row]]
