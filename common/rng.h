/* rng.h — seeded, counter-based random inputs: value i of stream `seed` is a pure
 * function of (seed, i), so the host can recompute exactly what a device fill wrote and
 * a fill is the same whatever the launch shape. Never rand(), never constants or zeros.
 * Mixer: splitmix64 (Steele, Lea, Flood, "Fast splittable pseudorandom number
 * generators", OOPSLA 2014; constants from Vigna's public-domain reference). */
#pragma once
#include <stddef.h>
#include <stdint.h>

#if defined(__CUDACC__)
#define GTL_HD __host__ __device__ __forceinline__
#else
#define GTL_HD static inline
#endif

/** splitmix64 finalizer of x. */
GTL_HD uint64_t gtl_splitmix64(uint64_t x) {
  x += 0x9E3779B97F4A7C15ull;
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
  return x ^ (x >> 31);
}

/** Uniform float in [lo, hi) for element i of stream seed (24 random mantissa bits). */
GTL_HD float gtl_uniform(uint64_t seed, uint64_t i, float lo, float hi) {
  uint64_t h = gtl_splitmix64(gtl_splitmix64(seed) ^ (i * 0xD1B54A32D192ED03ull));
  float u = (float)(h >> 40) * (1.0f / 16777216.0f);
#if defined(__CUDA_ARCH__)
  // Explicit rounding: nvcc would contract a*b+c into one FMA on the device (one rounding
  // instead of two), and the device value would then differ from the host's in the last
  // bit for about 1 value in 2^16 — enough to change a bf16 rounding.
  return __fadd_rn(lo, __fmul_rn(hi - lo, u));
#else
  return lo + (hi - lo) * u;  // C11 and C++17 (ISO modes) do not contract across statements
#endif
}

/** Uniform integer in [0, n) for element i of stream seed (n >= 1). */
GTL_HD uint32_t gtl_uniform_u32(uint64_t seed, uint64_t i, uint32_t n) {
  uint64_t h = gtl_splitmix64(gtl_splitmix64(seed) ^ (i * 0xD1B54A32D192ED03ull));
  return (uint32_t)((h >> 32) % n);
}

#ifdef __cplusplus
extern "C" {
#endif
/** Host fill: out[i] = gtl_uniform(seed, i, lo, hi), i in [0, n). */
void gtl_fill_uniform_host(float *out, size_t n, uint64_t seed, float lo, float hi);
#ifdef __cplusplus
}
#endif
