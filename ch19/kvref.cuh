// kvref.cuh — ch19's host model of one row: the page dtypes (KvDtypes, kv_is_fp8), its
// roofline (kv_bytes, kv_flops: bytes and flops per step for a mix of bf16 and FP8 pages)
// and its references (kv_cpu: the attention in double from the values the kernel reads;
// kv_quant_mismatches: the host's E4M3 quantization of the same rows, code for code).
#pragma once
#include <math.h>
#include <stdint.h>
#include <stdlib.h>

#include "../common/gauntlet.h"
#include "decode_attn_fp8.cuh"

// Page dtype of a row: flags [B][n_pages] (1: FP8) for pages of 1 << shift tokens.
typedef struct {
  const uint8_t *fp8;
  int shift, n_pages;
} KvDtypes;
static inline int kv_is_fp8(const KvDtypes *t, int b, int j) {
  return t->fp8 && t->fp8[(int64_t)b * t->n_pages + (j >> t->shift)];
}

// Bytes one step reads and writes: 256 B per visible bf16 (key, KV head), 132 B per FP8
// one, q and out.
static double kv_bytes(const int32_t *lens, const KvDtypes *t, int B, int H, int H_kv, int window) {
  double n = 0;
  for (int b = 0; b < B; b++)
    for (int j = attn_first_key(lens[b], window); j < lens[b]; j++) n += kv_is_fp8(t, b, j) ? 132 : 256;
  return n * H_kv + 2.0 * B * H * ATTN_HEAD_DIM * 2;
}
static double kv_flops(const int32_t *lens, int B, int H, int window) {
  double n = 0;
  for (int b = 0; b < B; b++) n += lens[b] - attn_first_key(lens[b], window);
  return 4.0 * n * H * ATTN_HEAD_DIM;
}

// Reference in double. Key/value j of (b, KV head g) is the bf16 row (k16/v16) or, where
// t says FP8, the E4M3 codes times the scale (k8/v8, sc); logical layouts [B][H_kv][S][64]
// and [B][H_kv][S]. ref [B][H][64]. The math of ch18/decode_attn.cuh.
static void kv_cpu(const uint16_t *q, const uint16_t *k16, const uint16_t *v16, const uint8_t *k8,
                   const uint8_t *v8, const uint32_t *sc, const KvDtypes *t, const int32_t *lens,
                   const float *sinks, int B, int H, int H_kv, int S, int window, double *ref) {
  const int G = H / H_kv, D = ATTN_HEAD_DIM;
  double lut[256], qd[ATTN_HEAD_DIM], acc[ATTN_HEAD_DIM], row[ATTN_HEAD_DIM];
  for (int c = 0; c < 256; c++) lut[c] = gtl_fp8e4m3_to_f32((uint8_t)c);
  double *s = (double *)malloc(sizeof(double) * S);
  for (int b = 0; b < B; b++)
    for (int h = 0; h < H; h++) {
      const int lo = attn_first_key(lens[b], window), hi = lens[b];
      const int64_t base = ((int64_t)b * H_kv + h / G) * S;
      for (int d = 0; d < D; d++) qd[d] = gtl_bf16_to_f32(q[((int64_t)b * H + h) * D + d]);
      double m = sinks[h], l = 0;
      for (int op = 0; op < 2; op++) {
        for (int d = 0; d < D; d++) acc[d] = 0;
        for (int j = lo; j < hi; j++) {
          const int64_t r = base + j;
          if (kv_is_fp8(t, b, j)) {
            const double f = fp8kv_bf16_bits_to_float((uint16_t)(op ? sc[r] >> 16 : sc[r] & 0xFFFFu));
            for (int d = 0; d < D; d++) row[d] = lut[(op ? v8 : k8)[r * D + d]] * f;
          } else {
            for (int d = 0; d < D; d++) row[d] = gtl_bf16_to_f32((op ? v16 : k16)[r * D + d]);
          }
          if (op == 0) {
            double dot = 0;
            for (int d = 0; d < D; d++) dot += qd[d] * row[d];
            s[j] = dot / 8.0;  // 1/sqrt(64)
            m = fmax(m, s[j]);
          } else {
            const double p = exp(s[j] - m);
            l += p;
            for (int d = 0; d < D; d++) acc[d] += p * row[d];
          }
        }
      }
      l += exp(sinks[h] - m);
      for (int d = 0; d < D; d++) ref[((int64_t)b * H + h) * D + d] = acc[d] / l;
    }
  free(s);
}

// The host's quantization of the same rows (fp8_kv.h's rule, gtl_f32_to_fp8e4m3): the
// number of codes and scale words in k8/v8/sc that differ from it.
static int64_t kv_quant_mismatches(const uint16_t *k16, const uint16_t *v16, const uint8_t *k8,
                                   const uint8_t *v8, const uint32_t *sc, int64_t n_rows) {
  int64_t bad = 0;
  for (int64_t r = 0; r < n_rows; r++) {
    uint16_t bits[2];
    for (int op = 0; op < 2; op++) {
      const uint16_t *x = (op ? v16 : k16) + r * ATTN_HEAD_DIM;
      float amax = 0.f;
      for (int d = 0; d < ATTN_HEAD_DIM; d++) amax = fmaxf(amax, fabsf(gtl_bf16_to_f32(x[d])));
      bits[op] = fp8kv_scale_bits(amax);
      const float s = fp8kv_bf16_bits_to_float(bits[op]);
      for (int d = 0; d < ATTN_HEAD_DIM; d++)
        bad += gtl_f32_to_fp8e4m3(gtl_bf16_to_f32(x[d]) / s) != (op ? v8 : k8)[r * ATTN_HEAD_DIM + d];
    }
    bad += fp8kv_scale_pair(bits[0], bits[1]) != sc[r];
  }
  return bad;
}
