/* convert.c — float <-> bf16 / fp16 / fp8 e4m3 on the host, round-to-nearest-even
 * (see convert.h for the formats and the CUDA intrinsics these match bit for bit). */
#include "convert.h"

#include <math.h>
#include <string.h>

static uint32_t f2u(float f) {
  uint32_t u;
  memcpy(&u, &f, 4);
  return u;
}
static float u2f(uint32_t u) {
  float f;
  memcpy(&f, &u, 4);
  return f;
}

/* Round the low `shift` bits of q·2^shift + rem away, to nearest, ties to even. */
static uint32_t rne_shift(uint32_t m, int shift) {
  uint32_t q = m >> shift, rem = m & ((1u << shift) - 1u), half = 1u << (shift - 1);
  if (rem > half || (rem == half && (q & 1u))) q++;
  return q;
}

uint16_t gtl_f32_to_bf16(float x) {
  uint32_t u = f2u(x);
  if ((u & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((u >> 16) | 0x40u); /* quiet NaN */
  u += 0x7fffu + ((u >> 16) & 1u);
  return (uint16_t)(u >> 16);
}
float gtl_bf16_to_f32(uint16_t h) { return u2f((uint32_t)h << 16); }

uint16_t gtl_f32_to_fp16(float x) {
  uint32_t u = f2u(x), sign = (u >> 16) & 0x8000u, ax = u & 0x7fffffffu;
  if (ax > 0x7f800000u) return (uint16_t)(sign | 0x7e00u);
  if (ax >= 0x477ff000u) return (uint16_t)(sign | 0x7c00u); /* >= 65520 rounds to inf */
  if (ax < 0x38800000u) {                                   /* below 2^-14: subnormal */
    if (ax <= 0x33000000u) return (uint16_t)sign;           /* <= 2^-25 rounds to 0 */
    int e = (int)(ax >> 23);
    uint32_t m = (ax & 0x7fffffu) | 0x800000u;
    return (uint16_t)(sign | rne_shift(m, 126 - e)); /* units of 2^-24 */
  }
  uint32_t e = (ax >> 23) - 127u + 15u, m = ax & 0x7fffffu;
  uint32_t h = (e << 10) | (m >> 13), rem = m & 0x1fffu;
  if (rem > 0x1000u || (rem == 0x1000u && (h & 1u))) h++; /* a carry moves into the exponent */
  return (uint16_t)(sign | h);
}

float gtl_fp16_to_f32(uint16_t h) {
  uint32_t sign = ((uint32_t)h & 0x8000u) << 16, e = (h >> 10) & 0x1fu, m = h & 0x3ffu;
  if (e == 0x1f) return u2f(sign | 0x7f800000u | (m << 13));
  if (e == 0) {
    float v = (float)m * 5.9604644775390625e-8f; /* m · 2^-24 */
    return sign ? -v : v;
  }
  return u2f(sign | ((e - 15u + 127u) << 23) | (m << 13));
}

uint8_t gtl_f32_to_fp8e4m3(float x) {
  uint32_t u = f2u(x), sign = (u >> 24) & 0x80u, ax = u & 0x7fffffffu;
  if (ax > 0x7f800000u) return 0x7f;
  if (ax >= 0x43e00000u) return (uint8_t)(sign | 0x7eu); /* >= 448 (and inf): saturate */
  if (ax < 0x3c800000u) {                                /* below 2^-6: subnormal */
    if (ax <= 0x3a800000u) return (uint8_t)sign;         /* <= 2^-10 rounds to 0 */
    int e = (int)(ax >> 23);
    uint32_t m = (ax & 0x7fffffu) | 0x800000u;
    return (uint8_t)(sign | rne_shift(m, 141 - e)); /* units of 2^-9 */
  }
  uint32_t e = (ax >> 23) - 127u + 7u, m = ax & 0x7fffffu;
  uint32_t h = (e << 3) | (m >> 20), rem = m & 0xfffffu;
  if (rem > 0x80000u || (rem == 0x80000u && (h & 1u))) h++;
  if (h > 0x7eu) h = 0x7eu;
  return (uint8_t)(sign | h);
}

float gtl_fp8e4m3_to_f32(uint8_t v) {
  int e = (v >> 3) & 0xf, m = v & 7;
  float s = (v & 0x80) ? -1.0f : 1.0f;
  if (e == 15 && m == 7) return NAN;
  if (e == 0) return s * (float)m * 0.001953125f; /* m · 2^-9 */
  return s * ldexpf(1.0f + (float)m / 8.0f, e - 7);
}

float gtl_round_bf16(float x) { return gtl_bf16_to_f32(gtl_f32_to_bf16(x)); }

void gtl_bf16_to_f32_array(const uint16_t *in, float *out, size_t n) {
  for (size_t i = 0; i < n; i++) out[i] = gtl_bf16_to_f32(in[i]);
}
void gtl_f32_to_bf16_array(const float *in, uint16_t *out, size_t n) {
  for (size_t i = 0; i < n; i++) out[i] = gtl_f32_to_bf16(in[i]);
}
