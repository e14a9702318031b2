"""labs/moe/quant_ref.py (layer 05's fp8 and MXFP4 quantizers, element by element) against
the formats' definitions and against a second encoder written differently.

quant_ref.py is the reference that labs/moe/hf_check.py's torch quantizers must equal bit
for bit before hf_check compares layer 05 with transformers (torch is not here; hf_check
runs that comparison itself on the GPU machine). Here, without torch: quant_ref's E4M3
encoder (nearest value by search, ties to the even code) against an arithmetic one
(round(|x| / ulp) to nearest even, ulp = 2^(floor(log2|x|) - 3), subnormal ulp 2^-9) on
every code, every tie and 20,000 seeded values; the row scale's rule; the MXFP4 ties,
saturation, clamped exponents, and the round trip of values that already are MXFP4 (the
property that makes gpt-oss's released experts survive the engine's quantizer).

Run: python3 -m unittest tests/test_lab05_quant_ref.py
"""
import math
import os
import random
import sys
import unittest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "labs", "moe"))
import quant_ref as qr  # noqa: E402

# every finite E4M3 value -> its code (OFP8 v1.0: S.EEEE.MMM, bias 7, S.1111.111 NaN)
CODE_OF = {}
for _c in range(256):
    _v = qr.e4m3_decode(_c)
    if not math.isnan(_v) and not (_v == 0 and _c == 0x80):
        CODE_OF[_v] = _c


def e4m3_arith(x):
    """A second E4M3 encoder, by arithmetic: the value round(|x| / ulp) * ulp (Python's
    round is to nearest even, exact here: ulp is a power of two), saturated at 448."""
    a = abs(x)
    ulp = 2.0 ** -9 if a < 2.0 ** -6 else 2.0 ** (math.frexp(a)[1] - 1 - 3)
    v = min(round(a / ulp) * ulp, 448.0)
    c = CODE_OF[v]
    return c | 0x80 if math.copysign(1.0, x) < 0 else c


class TestE4M3(unittest.TestCase):
    def test_decode_table(self):
        self.assertEqual(qr.e4m3_decode(0x7E), 448.0)
        self.assertEqual(qr.e4m3_decode(0x01), 2.0 ** -9)
        self.assertEqual(qr.e4m3_decode(0x08), 2.0 ** -6)
        self.assertEqual(qr.e4m3_decode(0x77), 240.0)
        self.assertTrue(math.isnan(qr.e4m3_decode(0x7F)) and math.isnan(qr.e4m3_decode(0xFF)))
        pos = [qr.e4m3_decode(c) for c in range(0x7F)]
        self.assertEqual(pos, sorted(pos))
        self.assertEqual(len(set(pos)), 127)

    def test_every_code_round_trips(self):
        for c in list(range(0x7F)) + list(range(0x81, 0xFF)):
            self.assertEqual(qr.e4m3_encode(qr.e4m3_decode(c)), c, hex(c))
        self.assertEqual(qr.e4m3_encode(-0.0), 0x80)

    def test_ties_go_to_the_even_code(self):
        pos = [qr.e4m3_decode(c) for c in range(0x7F)]
        for c in range(0x7E):
            mid = (pos[c] + pos[c + 1]) / 2
            even = c if c % 2 == 0 else c + 1
            self.assertEqual(qr.e4m3_encode(mid), even, mid)
            self.assertEqual(qr.e4m3_encode(-mid), 0x80 | even, mid)
            self.assertEqual(qr.e4m3_encode(math.nextafter(mid, 0)), c, mid)
            self.assertEqual(qr.e4m3_encode(math.nextafter(mid, 1e9)), c + 1, mid)

    def test_saturation(self):
        for x in (448.0, 449.0, 463.9, 464.0, 480.0, 1e6, 3.4e38):
            self.assertEqual(qr.e4m3_encode(x), 0x7E, x)
            self.assertEqual(qr.e4m3_encode(-x), 0xFE, x)
        self.assertEqual(qr.e4m3_encode(2.0 ** -10), 0x00)  # the tie between 0 and 2^-9: even, 0
        self.assertEqual(qr.e4m3_encode(3 * 2.0 ** -10), 0x02)  # between 2^-9 (odd) and 2^-8: 2^-8

    def test_against_the_arithmetic_encoder(self):
        rnd = random.Random(17)
        for _ in range(20000):
            x = qr.fp32(rnd.choice((-1, 1)) * 2.0 ** rnd.uniform(-14, 10))
            self.assertEqual(qr.e4m3_encode(x), e4m3_arith(x), repr(x))


class TestFp8Rows(unittest.TestCase):
    def test_scale_rule(self):
        self.assertEqual(qr.fp8_row_scale(448.0), 1.0)
        self.assertEqual(qr.fp8_row_scale(56.0), 0.125)  # amax / 448 exactly 2^-3
        self.assertEqual(qr.fp8_row_scale(56.25), 0.25)
        self.assertEqual(qr.fp8_row_scale(450.0), 2.0)
        self.assertEqual(qr.fp8_row_scale(0.0), 0.0)
        rnd = random.Random(5)
        for _ in range(5000):
            amax = qr.bf16(2.0 ** rnd.uniform(-30, 20))
            s = qr.fp8_row_scale(amax)
            self.assertEqual(math.frexp(s)[0], 0.5, s)  # a power of two
            self.assertTrue(s >= qr.fp32(amax / 448) > s / 2, (amax, s))

    def test_rows(self):
        rnd = random.Random(9)
        for _ in range(200):
            k = rnd.choice((16, 33, 128))
            sd = 2.0 ** rnd.uniform(-12, 4)
            row = [qr.bf16(rnd.gauss(0, sd)) for _ in range(k)]
            s, codes, deq = qr.fp8_quantize_row(row)
            self.assertTrue(224 < max(abs(v) for v in row) / s <= 448)  # the row's amax in (224, 448]
            self.assertGreaterEqual(max(abs(qr.e4m3_decode(c)) for c in codes), 224)
            for w, c, d in zip(row, codes, deq):
                self.assertEqual(d, s * qr.e4m3_decode(c))
                self.assertEqual(qr.bf16(d), d)  # exactly a bf16: what the engine's reference reads
                self.assertLessEqual(abs(d - w), abs(w) * 2.0 ** -4 + s * 2.0 ** -10)
        s, codes, deq = qr.fp8_quantize_row([0.0, -0.0, 0.0])
        self.assertEqual((s, codes, deq), (0.0, [0, 0, 0], [0.0, 0.0, 0.0]))

    def test_edge_rows_are_bf16_and_reach_the_ties(self):
        rows = qr.edge_rows()
        self.assertTrue(all(qr.bf16(v) == v for r in rows for v in r))
        scales = {qr.fp8_quantize_row(r)[0] for r in rows}
        self.assertGreaterEqual(len(scales), 6)
        codes = {c for r in rows for c in qr.fp8_quantize_row(r)[1]}
        self.assertEqual(len(codes), 254)  # every finite code, -0 (0x80) included
        pos = [qr.e4m3_decode(c) for c in range(0x7F)]
        mids = {(a + b) / 2 for a, b in zip(pos, pos[1:])}
        self.assertTrue(mids <= set(rows[3]))  # the second base row at scale 1 (three scales per base row)


class TestMxfp4(unittest.TestCase):
    def test_ties_saturation_and_exponents(self):
        blk = [4.0, 0.25, 0.75, 1.25, 1.75, 2.5, 3.5, 5.0, 6.5, -0.75] + [0.0] * 22
        x, nib, deq = qr.mxfp4_quantize_row([v * 8 for v in blk])  # amax 32 + ...: X = 5 - 2 = 3
        self.assertEqual(x, [3])
        self.assertEqual(deq[:10], [v * 8 for v in (4.0, 0.0, 1.0, 1.0, 2.0, 2.0, 4.0, 4.0, 6.0, -1.0)])
        x, nib, deq = qr.mxfp4_quantize_row([7.75] + [0.0] * 31)  # amax < 8 * 2^X: saturates at 6
        self.assertEqual((x, deq[0]), ([0], 6.0))
        x, nib, deq = qr.mxfp4_quantize_row([0.0] * 32)
        self.assertEqual((x, set(deq)), ([-127], {0.0}))
        x, nib, deq = qr.mxfp4_quantize_row([2.0 ** -130] + [0.0] * 31)  # X clamped at -127
        self.assertEqual((x, deq[0]), ([-127], 0.0))
        with self.assertRaises(ValueError):
            qr.mxfp4_quantize_row([1.0] * 48)

    def test_mxfp4_values_round_trip(self):
        """Values that already are MXFP4 (any nibbles, any exponent) come back unchanged,
        though the exponent may change (a block whose largest code is 3 gets X - 1)."""
        rnd = random.Random(3)
        for _ in range(2000):
            x0 = rnd.randint(-20, 5)
            blk = [qr.E2M1_MAG[rnd.randint(0, 7)] * rnd.choice((-1, 1)) * 2.0 ** x0 for _ in range(32)]
            if rnd.random() < 0.3:
                blk = [v / 4 if abs(v) > 1 else v for v in blk]  # smaller largest codes
            _, _, deq = qr.mxfp4_quantize_row(blk)
            self.assertEqual(deq, blk)

    def test_edge_rows(self):
        rows = qr.mxfp4_edge_rows()
        self.assertTrue(all(qr.bf16(v) == v and len(r) % 32 == 0 for r in rows for v in r))
        xs = set(qr.mxfp4_quantize_row(rows[0])[0])
        self.assertTrue({-127, 0, 3, -6} <= xs, xs)


if __name__ == "__main__":
    unittest.main()
