// fp8_host.h — ch13/optimized's host helpers: the per-tensor E4M3 quantization the device
// kernels must match bit for bit, a byte comparison of a device tensor against the host's
// (validation), and the report's description of the delayed pass's launch.
#pragma once
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include "../common/gauntlet.h"
#include "fp8_delayed.cuh"

// The host's own per-tensor quantization of x (bf16 bits, n): q = E4M3(x · 448/amax),
// bit-exact with the device's; deq = the fp8 values as bf16 (exact: 4 significant bits,
// exponents well inside bf16's). Returns the dequantization factor 1/scale.
static float host_quantize(const uint16_t *x, size_t n, uint8_t *q, uint16_t *deq) {
  float amax = 0.0f;
  for (size_t i = 0; i < n; i++) amax = fmaxf(amax, fabsf(gtl_bf16_to_f32(x[i])));
  const float scale = amax == 0.0f ? 1.0f : 448.0f / amax;
  for (size_t i = 0; i < n; i++) {
    q[i] = gtl_f32_to_fp8e4m3(gtl_bf16_to_f32(x[i]) * scale);
    deq[i] = gtl_f32_to_bf16(gtl_fp8e4m3_to_f32(q[i]));
  }
  return 1.0f / scale;
}

// Bytes of the device tensor d that differ from the host's h (n bytes).
static size_t bytes_differ(const void *d, const uint8_t *h, size_t n) {
  uint8_t *t = (uint8_t *)malloc(n);
  if (!t) {
    fprintf(stderr, "ch13: host out of memory (%zu bytes)\n", n);
    exit(GTL_EXIT_RUNTIME);
  }
  GTL_CUDA(cudaMemcpy(t, d, n, cudaMemcpyDeviceToHost));
  size_t bad = 0;
  for (size_t i = 0; i < n; i++) bad += t[i] != h[i];
  free(t);
  return bad;
}

// The delayed pass's kernel as plan p launches it (capped: --quant_ctas was given), into buf.
// Returns the characters written (snprintf's count).
static int fp8_delayed_describe(const Fp8QuantPlan *p, int capped, char *buf, size_t size) {
  if (p->delayed_wave) {
    const int w = p->delayed_wave;
    return snprintf(buf, size,
                    "fp8_tensor_quantize_delayed_wave_kernel<%d,%d> (one wave: %u blocks x %d threads, "
                    "%d resident per SM%s, %d 16-byte chunks per thread per iteration, the next "
                    "iteration's loads before this one's stores; quantize + amax + history update)",
                    fp8_wave_threads(w), fp8_wave_vec(w), fp8_wave_blocks(p, w), fp8_wave_threads(w),
                    p->wave_per_sm[w - 1], capped ? ", capped by --quant_ctas" : "", fp8_wave_vec(w));
  }
  const size_t tile = (size_t)FP8_QUANT_THREADS * p->delayed_unroll, tiles = (p->n / 8 + tile - 1) / tile;
  return snprintf(buf, size,
                  "fp8_tensor_quantize_delayed_kernel<%d> (%zu blocks x %d threads, %d 16-byte chunks per "
                  "thread; quantize + amax + history update)",
                  p->delayed_unroll, tiles < FP8_DELAYED_MAX_BLOCKS ? tiles : (size_t)FP8_DELAYED_MAX_BLOCKS,
                  FP8_QUANT_THREADS, p->delayed_unroll);
}
