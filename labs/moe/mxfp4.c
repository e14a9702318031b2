/* mxfp4.c — MXFP4 decoding and the writer's seeded bytes (see mxfp4.h). */
#include "mxfp4.h"

#include <math.h>

#include "convert.h"
#include "rng.h"

static const float e2m1[16] = {0.0f, 0.5f, 1.0f, 1.5f, 2.0f, 3.0f, 4.0f, 6.0f,
                               -0.0f, -0.5f, -1.0f, -1.5f, -2.0f, -3.0f, -4.0f, -6.0f};

float moe_e2m1(unsigned nibble) { return e2m1[nibble & 15u]; }

float moe_mxfp4_value(unsigned nibble, uint8_t scale) {
  return ldexpf(e2m1[nibble & 15u], (int)scale - 127);
}

void moe_mxfp4_decode_row(const uint8_t *blocks, const uint8_t *scales, int64_t n_in, uint16_t *out) {
  for (int64_t i = 0; i < n_in / 2; i++) {
    const uint8_t s = scales[i / (MOE_MXFP4_BLOCK / 2)], b = blocks[i];
    out[2 * i] = gtl_f32_to_bf16(moe_mxfp4_value(b & 15u, s));
    out[2 * i + 1] = gtl_f32_to_bf16(moe_mxfp4_value(b >> 4, s));
  }
}

uint8_t moe_mxfp4_synth_block(uint64_t seed, uint64_t i) { return (uint8_t)gtl_uniform_u32(seed, i, 256); }

uint8_t moe_mxfp4_synth_scale(uint64_t seed, uint64_t i, double rms) {
  /* RMS of E2M1 over uniform nibbles: sqrt(2·(0 + .25 + 1 + 2.25 + 4 + 9 + 16 + 36)/16) */
  const double e2m1_rms = sqrt(68.5 / 8.0);
  int base = 127 + (int)lround(log2(rms / e2m1_rms));
  base = base < 3 ? 3 : base > 250 ? 250 : base;
  return (uint8_t)(base - 2 + (int)gtl_uniform_u32(seed, i, 4));
}
