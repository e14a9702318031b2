// fp8_quant.cuh — per-tensor FP8 E4M3 scaling: the amax and quantize kernels ch13 times in
// front of its cuBLASLt FP8 GEMM, kept here (kernels and launchers only) so that the lab's
// precision layer can include them too.
//
// Per-tensor scaling: one fp32 scale s per tensor maps its largest magnitude onto the
// largest finite E4M3 value, s = 448 / amax(|x|), and every element is stored as
// q = RNE_satfinite(x · s). The GEMM multiplies its fp32 accumulator by the inverses
// (cuBLASLt's A/B scale pointers), so C = (1/s_a)(1/s_b) · Σ q_a·q_b. An amax of 0 keeps
// s = 1. Two recipes, as NVIDIA Transformer Engine defines them (TE user guide, "FP8
// Current Scaling" and "FP8 Delayed Scaling";
// https://nvidia.github.io/TransformerEngine/features/low_precision_training/):
//   current — s comes from this tensor's own amax: one pass reads x for amax, a second
//             reads it again to quantize (fp8_tensor_amax_launch, fp8_tensor_quantize_launch).
//   delayed — s comes from the largest amax in a history of the last H steps (TE's
//             DelayedScaling with amax_compute_algo="max", margin 0): one pass quantizes
//             with the stored s and records this tensor's amax; the last block to finish
//             pushes it into the history and computes the next step's s
//             (fp8_tensor_quantize_delayed_launch). One read instead of two, at the risk
//             of saturating when the amax grows faster than the history follows.
//
// Data: x bf16 [n], q fp8 E4M3 [n] (one byte each, __nv_fp8_storage_t), both 16-byte
// aligned; n any size (a multiple of 8 goes entirely through 16-byte loads). The scale
// state is one Fp8TensorScale in device memory per tensor (plus, for delayed, a float
// history of H entries), set up once by fp8_tensor_scale_init_launch.
#pragma once
#include <cuda_bf16.h>
#include <cuda_fp8.h>
#include <stdint.h>
#include <stdio.h>

#include "../common/gauntlet.h"

#define FP8_E4M3_MAX 448.0f      // largest finite E4M3 value (OCP 8-bit FP spec v1.0)
#define FP8_QUANT_THREADS 256
#define FP8_QUANT_MAX_BLOCKS 1024  // one wave on an H100/H200 (8 blocks of 256 per SM)
#define FP8_QUANT_UNROLL 4         // independent 16-byte loads in flight per thread

// The scale state of one tensor, in device memory. The GEMM reads scale_inv.
// scale_inv comes first: a pointer to it is the GEMM's scale pointer, and at offset 0 it
// keeps cudaMalloc's 256-byte alignment.
typedef struct {
  float scale_inv;        // 1 / the scale the last quantization used: the GEMM's dequant factor
  float scale;            // quantize: q = RNE_satfinite(x · scale)
  float amax;             // max |x| seen by the last launch
  unsigned history_pos;   // delayed: next slot of the amax history ring
  unsigned blocks_done;   // grid-completion counter; every launch leaves it at 0
  unsigned partial[FP8_QUANT_MAX_BLOCKS];  // per-block amax (fp32 bits, see below)
} Fp8TensorScale;

// |x| of a non-negative float ordered as its bits: for x >= 0 (and +inf, NaN above it) the
// IEEE bit patterns sort like the values, so amax is an unsigned max on bits, and a NaN
// (0x7FC00000 and up) wins every max: it reaches the scale and the GEMM fails validation
// instead of being silently skipped as fmaxf would.
__device__ __forceinline__ unsigned fp8_absmax8_bits(uint4 v, unsigned m) {
  // Two bf16 per word: clear both sign bits, then a per-halfword unsigned max.
  m = __vmaxu2(m, v.x & 0x7FFF7FFFu);
  m = __vmaxu2(m, v.y & 0x7FFF7FFFu);
  m = __vmaxu2(m, v.z & 0x7FFF7FFFu);
  return __vmaxu2(m, v.w & 0x7FFF7FFFu);
}
// The larger bf16 half of a packed max, as fp32 bits (a bf16 is the top half of an fp32).
__device__ __forceinline__ unsigned fp8_halves_to_f32_bits(unsigned m) {
  return max(m >> 16, m & 0xFFFFu) << 16;
}

// Block-wide unsigned max; every thread gets the result. One redux per warp (sm_80+).
__device__ __forceinline__ unsigned fp8_block_max(unsigned v) {
  __shared__ unsigned warp_max[FP8_QUANT_THREADS / 32];
  v = __reduce_max_sync(0xFFFFFFFFu, v);
  if (threadIdx.x % 32 == 0) warp_max[threadIdx.x / 32] = v;
  __syncthreads();
  v = threadIdx.x < FP8_QUANT_THREADS / 32 ? warp_max[threadIdx.x] : 0u;
  v = __reduce_max_sync(0xFFFFFFFFu, v);
  __syncthreads();  // warp_max may be reused by the caller's next reduction
  return v;
}

// Grid-wide amax without a second launch (threadFenceReduction pattern, CUDA samples):
// each block publishes its amax, fences, and counts itself done; the block that counts
// last reads every partial and returns 1 with the tensor's amax bits in *amax_bits. Its
// caller finishes the scale and resets blocks_done.
__device__ __forceinline__ int fp8_grid_amax(Fp8TensorScale *st, unsigned block_bits,
                                             unsigned *amax_bits) {
  __shared__ int is_last;
  if (threadIdx.x == 0) {
    st->partial[blockIdx.x] = block_bits;
    __threadfence();  // the partial is visible device-wide before the count says so
    is_last = atomicAdd(&st->blocks_done, 1u) == gridDim.x - 1;
  }
  __syncthreads();
  if (!is_last) return 0;
  __threadfence();
  unsigned m = 0;
  for (unsigned b = threadIdx.x; b < gridDim.x; b += blockDim.x)
    m = max(m, __ldcg(&st->partial[b]));  // L2, not a stale L1 line
  *amax_bits = fp8_block_max(m);
  return 1;
}

// Strategy: grid-stride 16-byte loads, FP8_QUANT_UNROLL in flight, packed-bf16 max, one
// redux per warp, last block finishes. Limiter: HBM read bandwidth. Plain loads (not
// evict-first): pass 2 reads x again, from L2 when x fits there.
// Current scaling, pass 1: st->amax = max|x|, st->scale = 448 / amax, st->scale_inv = 1/scale.
__global__ void __launch_bounds__(FP8_QUANT_THREADS)
    fp8_tensor_amax_kernel(const __nv_bfloat16 *__restrict__ x, size_t n, Fp8TensorScale *st) {
  const uint4 *x8 = (const uint4 *)x;
  const size_t n8 = n / 8, stride = (size_t)gridDim.x * blockDim.x;
  size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
  unsigned m = 0;
  for (; i + (FP8_QUANT_UNROLL - 1) * stride < n8; i += FP8_QUANT_UNROLL * stride) {
    uint4 v[FP8_QUANT_UNROLL];
#pragma unroll
    for (int u = 0; u < FP8_QUANT_UNROLL; u++) v[u] = __ldg(x8 + i + u * stride);
#pragma unroll
    for (int u = 0; u < FP8_QUANT_UNROLL; u++) m = fp8_absmax8_bits(v[u], m);
  }
  for (; i < n8; i += stride) m = fp8_absmax8_bits(__ldg(x8 + i), m);
  unsigned bits = fp8_halves_to_f32_bits(m);
  const uint16_t *xs = (const uint16_t *)x;  // the tail past the last whole 16 bytes
  for (size_t t = n8 * 8 + (size_t)blockIdx.x * blockDim.x + threadIdx.x; t < n; t += stride)
    bits = max(bits, (unsigned)(xs[t] & 0x7FFFu) << 16);
  unsigned amax_bits;
  if (!fp8_grid_amax(st, fp8_block_max(bits), &amax_bits) || threadIdx.x != 0) return;
  const float amax = __uint_as_float(amax_bits);
  const float scale = amax == 0.0f ? 1.0f : FP8_E4M3_MAX / amax;  // NaN amax → NaN scale
  st->amax = amax;
  st->scale = scale;
  st->scale_inv = 1.0f / scale;
  st->blocks_done = 0;
}

// Eight bf16 scaled by s and rounded to E4M3 (RNE, saturating to ±448; NaN stays NaN),
// packed into 8 bytes. The product is one fp32 rounding (no FMA to contract), so the host
// reproduces it bit for bit with gtl_f32_to_fp8e4m3(x * s).
__device__ __forceinline__ uint2 fp8_quantize8(uint4 v, float s) {
  const unsigned w[4] = {v.x, v.y, v.z, v.w};
  unsigned short q[4];
#pragma unroll
  for (int j = 0; j < 4; j++) {
    const float2 f = make_float2(__fmul_rn(__uint_as_float(w[j] << 16), s),
                                 __fmul_rn(__uint_as_float(w[j] & 0xFFFF0000u), s));
    q[j] = __nv_cvt_float2_to_fp8x2(f, __NV_SATFINITE, __NV_E4M3);
  }
  return make_uint2(q[0] | ((unsigned)q[1] << 16), q[2] | ((unsigned)q[3] << 16));
}
__device__ __forceinline__ __nv_fp8_storage_t fp8_quantize1(uint16_t b, float s) {
  return __nv_cvt_float_to_fp8(__fmul_rn(__uint_as_float((unsigned)b << 16), s), __NV_SATFINITE,
                               __NV_E4M3);
}

// Strategy: as the amax kernel, plus an 8-byte store per 16-byte load; x is read for the
// last time (evict-first loads), q stays in L2 for the GEMM. Limiter: memory (reads x,
// writes q: 3 bytes per element).
// Current scaling, pass 2: q = RNE_satfinite(x · st->scale).
__global__ void __launch_bounds__(FP8_QUANT_THREADS)
    fp8_tensor_quantize_kernel(const __nv_bfloat16 *__restrict__ x, __nv_fp8_storage_t *__restrict__ q,
                               size_t n, const Fp8TensorScale *__restrict__ st) {
  const float s = st->scale;
  const uint4 *x8 = (const uint4 *)x;
  uint2 *q8 = (uint2 *)q;
  const size_t n8 = n / 8, stride = (size_t)gridDim.x * blockDim.x;
  size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
  for (; i + (FP8_QUANT_UNROLL - 1) * stride < n8; i += FP8_QUANT_UNROLL * stride) {
    uint4 v[FP8_QUANT_UNROLL];
#pragma unroll
    for (int u = 0; u < FP8_QUANT_UNROLL; u++) v[u] = __ldcs(x8 + i + u * stride);
#pragma unroll
    for (int u = 0; u < FP8_QUANT_UNROLL; u++) q8[i + u * stride] = fp8_quantize8(v[u], s);
  }
  for (; i < n8; i += stride) q8[i] = fp8_quantize8(__ldcs(x8 + i), s);
  const uint16_t *xs = (const uint16_t *)x;
  for (size_t t = n8 * 8 + (size_t)blockIdx.x * blockDim.x + threadIdx.x; t < n; t += stride)
    q[t] = fp8_quantize1(xs[t], s);
}

// Strategy: one pass: quantize with the stored scale and take the amax of the same
// registers; the last block updates the history and the next scale. Limiter: HBM.
// Delayed scaling: q = RNE_satfinite(x · st->scale); st->scale_inv = 1/that scale (for this
// step's GEMM); history[pos] = amax(x); st->scale = 448 / max(history) for the next step.
__global__ void __launch_bounds__(FP8_QUANT_THREADS)
    fp8_tensor_quantize_delayed_kernel(const __nv_bfloat16 *__restrict__ x,
                                       __nv_fp8_storage_t *__restrict__ q, size_t n,
                                       Fp8TensorScale *st, float *history, int history_len) {
  // Every block reads the scale before it counts itself done, and only the last block to
  // count writes the next one: no block can see the new scale in this launch.
  const float s = *(volatile float *)&st->scale;
  const uint4 *x8 = (const uint4 *)x;
  uint2 *q8 = (uint2 *)q;
  const size_t n8 = n / 8, stride = (size_t)gridDim.x * blockDim.x;
  size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
  unsigned m = 0;
  for (; i + (FP8_QUANT_UNROLL - 1) * stride < n8; i += FP8_QUANT_UNROLL * stride) {
    uint4 v[FP8_QUANT_UNROLL];
#pragma unroll
    for (int u = 0; u < FP8_QUANT_UNROLL; u++) v[u] = __ldcs(x8 + i + u * stride);
#pragma unroll
    for (int u = 0; u < FP8_QUANT_UNROLL; u++) {
      q8[i + u * stride] = fp8_quantize8(v[u], s);
      m = fp8_absmax8_bits(v[u], m);
    }
  }
  for (; i < n8; i += stride) {
    const uint4 v = __ldcs(x8 + i);
    q8[i] = fp8_quantize8(v, s);
    m = fp8_absmax8_bits(v, m);
  }
  unsigned bits = fp8_halves_to_f32_bits(m);
  const uint16_t *xs = (const uint16_t *)x;
  for (size_t t = n8 * 8 + (size_t)blockIdx.x * blockDim.x + threadIdx.x; t < n; t += stride) {
    q[t] = fp8_quantize1(xs[t], s);
    bits = max(bits, (unsigned)(xs[t] & 0x7FFFu) << 16);
  }
  unsigned amax_bits;
  if (!fp8_grid_amax(st, fp8_block_max(bits), &amax_bits)) return;
  __shared__ unsigned pos;
  if (threadIdx.x == 0) {
    pos = st->history_pos;
    history[pos] = __uint_as_float(amax_bits);
    st->history_pos = (pos + 1) % (unsigned)history_len;
    st->amax = __uint_as_float(amax_bits);
    st->scale_inv = 1.0f / s;
  }
  __syncthreads();
  unsigned h = 0;  // max over the window (entries never written are 0)
  for (int k = threadIdx.x; k < history_len; k += blockDim.x)
    h = max(h, k == (int)pos ? amax_bits : __float_as_uint(__ldcg(&history[k])));
  h = fp8_block_max(h);
  if (threadIdx.x == 0) {
    const float hmax = __uint_as_float(h);
    st->scale = hmax == 0.0f ? s : FP8_E4M3_MAX / hmax;  // no history yet: keep s
    st->blocks_done = 0;
  }
}

// Strategy: one thread per history entry. Sets scale = scale_inv = 1 (TE's initial scale),
// amax 0, an empty history and the counters to 0.
__global__ void fp8_tensor_scale_init_kernel(Fp8TensorScale *st, float *history, int history_len) {
  const int t = blockIdx.x * blockDim.x + threadIdx.x;
  if (t == 0) {
    st->scale = 1.0f;
    st->scale_inv = 1.0f;
    st->amax = 0.0f;
    st->history_pos = 0;
    st->blocks_done = 0;
  }
  if (history && t < history_len) history[t] = 0.0f;
}

// Blocks for n elements: enough for FP8_QUANT_UNROLL 16-byte chunks per thread, at most
// FP8_QUANT_MAX_BLOCKS (the size of the partial array, and one wave on Hopper).
static inline unsigned fp8_quant_blocks(size_t n) {
  const size_t per_block = (size_t)FP8_QUANT_THREADS * FP8_QUANT_UNROLL * 8;
  size_t b = (n + per_block - 1) / per_block;
  return (unsigned)(b < 1 ? 1 : b > FP8_QUANT_MAX_BLOCKS ? FP8_QUANT_MAX_BLOCKS : b);
}
static inline int fp8_quant_check(const char *who, const void *x, const void *q, size_t n) {
  if (n == 0 || ((uintptr_t)x | (uintptr_t)q) % 16) {
    fprintf(stderr, "%s: need n >= 1 and 16-byte aligned x and q (n=%zu)\n", who, n);
    return -1;
  }
  return 0;
}

/** Initialise the scale state of one tensor (and its amax history, history_len >= 1
 *  floats, or NULL with history_len 0 for current scaling). Stream-ordered. Returns 0. */
static inline int fp8_tensor_scale_init_launch(Fp8TensorScale *st, float *history,
                                               int history_len, cudaStream_t s) {
  const int n = history_len > 1 ? history_len : 1;
  fp8_tensor_scale_init_kernel<<<(n + 255) / 256, 256, 0, s>>>(st, history, history_len);
  GTL_LAUNCH();
  return 0;
}

/** Current scaling, pass 1: amax of x (bf16 [n], 16-byte aligned) into st, and from it
 *  st->scale = 448 / amax and st->scale_inv. Reads 2n bytes. Returns 0, or -1 (message on
 *  stderr) on a bad size or alignment. */
static inline int fp8_tensor_amax_launch(const __nv_bfloat16 *x, size_t n, Fp8TensorScale *st,
                                         cudaStream_t s) {
  if (fp8_quant_check("fp8_tensor_amax_launch", x, x, n)) return -1;
  fp8_tensor_amax_kernel<<<fp8_quant_blocks(n), FP8_QUANT_THREADS, 0, s>>>(x, n, st);
  GTL_LAUNCH();
  return 0;
}

/** Current scaling, pass 2: q[i] = E4M3(x[i] · st->scale), saturating. x bf16 [n], q fp8
 *  [n], both 16-byte aligned. Reads 2n bytes, writes n. Returns 0 or -1. */
static inline int fp8_tensor_quantize_launch(const __nv_bfloat16 *x, __nv_fp8_storage_t *q,
                                             size_t n, const Fp8TensorScale *st, cudaStream_t s) {
  if (fp8_quant_check("fp8_tensor_quantize_launch", x, q, n)) return -1;
  fp8_tensor_quantize_kernel<<<fp8_quant_blocks(n), FP8_QUANT_THREADS, 0, s>>>(x, q, n, st);
  GTL_LAUNCH();
  return 0;
}

/** Delayed scaling, one pass: q = E4M3(x · st->scale) with the scale from earlier steps,
 *  st->scale_inv = its inverse (this step's GEMM), amax(x) pushed into history
 *  (history_len floats, a ring), and st->scale = 448 / max(history) for the next call.
 *  Reads 2n bytes, writes n. Returns 0 or -1. */
static inline int fp8_tensor_quantize_delayed_launch(const __nv_bfloat16 *x, __nv_fp8_storage_t *q,
                                                     size_t n, Fp8TensorScale *st, float *history,
                                                     int history_len, cudaStream_t s) {
  if (fp8_quant_check("fp8_tensor_quantize_delayed_launch", x, q, n)) return -1;
  if (!history || history_len < 1) {
    fprintf(stderr, "fp8_tensor_quantize_delayed_launch: need an amax history (len >= 1)\n");
    return -1;
  }
  fp8_tensor_quantize_delayed_kernel<<<fp8_quant_blocks(n), FP8_QUANT_THREADS, 0, s>>>(
      x, q, n, st, history, history_len);
  GTL_LAUNCH();
  return 0;
}
