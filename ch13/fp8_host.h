// fp8_host.h — ch13/optimized's validation helpers on the host: the per-tensor E4M3
// quantization the device kernels must match bit for bit, and a byte comparison of a
// device tensor against the host's.
#pragma once
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include "../common/gauntlet.h"

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
