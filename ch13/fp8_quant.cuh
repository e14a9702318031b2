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
//   current — s comes from this tensor's own amax, so every element must be read before
//             the first one can be written. fp8_tensor_current_launch reads x from HBM
//             once: each block copies its slice of x into shared memory (cp.async), the
//             blocks publish their amax and meet at a grid barrier (a cooperative launch),
//             then each block quantizes its slice out of shared memory. That needs x to fit
//             in the shared memory of one block per SM (132 × 227 KiB = 29 MiB on an H200:
//             M = 4096 tokens of K = 2880 is 22.5 MiB). Larger tensors take two passes,
//             the second reading x again: fp8_tensor_amax_launch, fp8_tensor_quantize_launch.
//   delayed — s comes from the largest amax in a history of the last H steps (TE's
//             DelayedScaling with amax_compute_algo="max", margin 0): one pass quantizes
//             with the stored s and records this tensor's amax; the last block to finish
//             pushes it into the history and computes the next step's s
//             (fp8_delayed.cuh: fp8_tensor_quantize_delayed_launch). A streaming pass
//             with no barrier in it, at the risk of saturating when the amax grows faster
//             than the history follows.
//
// Data: x bf16 [n], q fp8 E4M3 [n] (one byte each, __nv_fp8_storage_t), both 16-byte
// aligned; n any size (a multiple of 8 goes entirely through 16-byte loads). The scale
// state is one Fp8TensorScale in device memory per tensor (plus, for delayed, a float
// history of H entries), set up once by fp8_tensor_scale_init_launch. The launch shapes
// (blocks, shared memory) are device queries made once per tensor size, at setup:
// fp8_quant_plan, whose Fp8QuantPlan every launcher takes.
#pragma once
#include <cooperative_groups.h>
#include <cuda_bf16.h>
#include <cuda_fp8.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "../common/gauntlet.h"

#define FP8_E4M3_MAX 448.0f      // largest finite E4M3 value (OCP 8-bit FP spec v1.0)
#define FP8_QUANT_THREADS 256
#define FP8_QUANT_MAX_BLOCKS 2048  // size of the partial array; one wave of 256-thread blocks
                                   // is at most 8 × SMs (1,056 on an H200)
#define FP8_DELAYED_MAX_BLOCKS 8192  // the delayed pass's grid (one block per tile) at most
#define FP8_WAVE_SHAPES 5           // the one-wave delayed kernel's shapes (fp8_wave_threads)
// Independent 16-byte loads issued per thread before the first is used (the two-pass kernels).
#define FP8_QUANT_UNROLL 8
#define FP8_STAGE_THREADS 1024      // the one-pass kernel: one block per SM
#define FP8_STAGE_MIN_CHUNKS 1024   // ... and at least this many 16-byte chunks per block

// The scale state of one tensor, in device memory. The GEMM reads scale_inv.
// scale_inv comes first: a pointer to it is the GEMM's scale pointer, and at offset 0 it
// keeps cudaMalloc's 256-byte alignment.
typedef struct {
  float scale_inv;        // 1 / the scale the last quantization used: the GEMM's dequant factor
  float scale;            // quantize: q = RNE_satfinite(x · scale)
  float amax;             // max |x| seen by the last launch
  unsigned history_pos;   // delayed: next slot of the amax history ring
  unsigned blocks_done;   // grid-completion counter; every launch leaves it at 0
  unsigned amax_acc;      // delayed: the launch's amax bits (atomic max); every launch leaves 0
  unsigned history_max;   // delayed: max of the amax history (bits), kept as entries come and go
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

// Block-wide unsigned max (blockDim.x a multiple of 32, at most 1024); every thread gets
// the result. One redux per warp (sm_80+).
__device__ __forceinline__ unsigned fp8_block_max(unsigned v) {
  __shared__ unsigned warp_max[32];
  v = __reduce_max_sync(0xFFFFFFFFu, v);
  if (threadIdx.x % 32 == 0) warp_max[threadIdx.x / 32] = v;
  __syncthreads();
  v = threadIdx.x % 32 < blockDim.x / 32 ? warp_max[threadIdx.x % 32] : 0u;  // every warp
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

// Strategy: FP8_QUANT_UNROLL 16-byte loads issued per thread before the first is used (a
// grid sized to the tensor covers it in one round when it fits one wave), packed-bf16 max,
// one redux per warp, last block finishes. Limiter: HBM read bandwidth. Plain loads (not
// evict-first): pass 2 reads x again, from L2 when x fits there.
// Current scaling, pass 1: st->amax = max|x|, st->scale = 448 / amax, st->scale_inv = 1/scale.
__global__ void __launch_bounds__(FP8_QUANT_THREADS)
    fp8_tensor_amax_kernel(const __nv_bfloat16 *__restrict__ x, size_t n, Fp8TensorScale *st) {
  const uint4 *x8 = (const uint4 *)x;
  const size_t n8 = n / 8, stride = (size_t)gridDim.x * blockDim.x;
  unsigned m = 0;
  for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < n8;
       i += FP8_QUANT_UNROLL * stride) {
    uint4 v[FP8_QUANT_UNROLL];
#pragma unroll
    for (int u = 0; u < FP8_QUANT_UNROLL; u++)  // zeros past the end change no max
      v[u] = i + u * stride < n8 ? __ldg(x8 + i + u * stride) : make_uint4(0, 0, 0, 0);
#pragma unroll
    for (int u = 0; u < FP8_QUANT_UNROLL; u++) m = fp8_absmax8_bits(v[u], m);
  }
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
  for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < n8;
       i += FP8_QUANT_UNROLL * stride) {
    uint4 v[FP8_QUANT_UNROLL];
#pragma unroll
    for (int u = 0; u < FP8_QUANT_UNROLL; u++)
      if (i + u * stride < n8) v[u] = __ldcs(x8 + i + u * stride);
#pragma unroll
    for (int u = 0; u < FP8_QUANT_UNROLL; u++)
      if (i + u * stride < n8) q8[i + u * stride] = fp8_quantize8(v[u], s);
  }
  const uint16_t *xs = (const uint16_t *)x;
  for (size_t t = n8 * 8 + (size_t)blockIdx.x * blockDim.x + threadIdx.x; t < n; t += stride)
    q[t] = fp8_quantize1(xs[t], s);
}

// 16 bytes global -> shared without a register (cp.async.cg: L2 only, SASS LDGSTS), and the
// wait for all of this thread's copies, which makes them visible to this thread (PTX ISA,
// "cp.async"). Each thread below reads back only the chunks it copied itself.
__device__ __forceinline__ void fp8_cp_async16(uint4 *smem, const uint4 *gmem) {
  const unsigned a = (unsigned)__cvta_generic_to_shared(smem);
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16;\n" ::"r"(a), "l"(gmem) : "memory");
}
__device__ __forceinline__ void fp8_cp_async_wait_all() {
  asm volatile("cp.async.commit_group;\ncp.async.wait_group 0;\n" ::: "memory");
}

// Strategy: one read of x from HBM. Block b copies the b-th contiguous slice of x into its
// shared memory (every copy in flight at once), takes the slice's amax there and publishes
// it; after a grid barrier (cooperative launch: all blocks resident) every block reduces the
// grid's partials to the same amax and scale, then quantizes its slice out of shared memory
// with 8-byte stores. Limiter: HBM read of x, then the barrier and the writes of q (to L2).
// Current scaling, one pass: st->amax, st->scale, st->scale_inv as fp8_tensor_amax_kernel
// leaves them, q as fp8_tensor_quantize_kernel writes it. Dynamic shared memory:
// ceil(n/8 / gridDim.x) × 16 bytes; gridDim.x <= FP8_STAGE_THREADS.
__global__ void __launch_bounds__(FP8_STAGE_THREADS, 1)
    fp8_tensor_amax_quantize_staged_kernel(const __nv_bfloat16 *__restrict__ x,
                                           __nv_fp8_storage_t *__restrict__ q, size_t n,
                                           Fp8TensorScale *st) {
  extern __shared__ uint4 fp8_stage[];  // this block's slice of x, 8 bf16 per entry
  const size_t n8 = n / 8, per = (n8 + gridDim.x - 1) / gridDim.x;
  const size_t c0 = min((size_t)blockIdx.x * per, n8);
  const int cnt = (int)(min(c0 + per, n8) - c0);
  const uint4 *x8 = (const uint4 *)x + c0;
  for (int j = threadIdx.x; j < cnt; j += blockDim.x) fp8_cp_async16(&fp8_stage[j], x8 + j);
  fp8_cp_async_wait_all();
  unsigned m = 0;
  for (int j = threadIdx.x; j < cnt; j += blockDim.x) m = fp8_absmax8_bits(fp8_stage[j], m);
  unsigned bits = fp8_halves_to_f32_bits(m);
  // The n % 8 elements past the last whole 16 bytes: one per thread of block 0.
  const size_t t = n8 * 8 + (size_t)blockIdx.x * blockDim.x + threadIdx.x;
  const uint16_t xt = t < n ? ((const uint16_t *)x)[t] : (uint16_t)0;
  bits = max(bits, (unsigned)(xt & 0x7FFFu) << 16);
  bits = fp8_block_max(bits);
  if (threadIdx.x == 0) st->partial[blockIdx.x] = bits;
  cooperative_groups::this_grid().sync();  // orders the partials' writes before the reads
  bits = fp8_block_max(threadIdx.x < gridDim.x ? __ldcg(&st->partial[threadIdx.x]) : 0u);
  const float amax = __uint_as_float(bits);
  const float s = amax == 0.0f ? 1.0f : FP8_E4M3_MAX / amax;  // NaN amax → NaN scale
  if (blockIdx.x == 0 && threadIdx.x == 0) {
    st->amax = amax;
    st->scale = s;
    st->scale_inv = 1.0f / s;
  }
  uint2 *q8 = (uint2 *)q + c0;
  for (int j = threadIdx.x; j < cnt; j += blockDim.x) q8[j] = fp8_quantize8(fp8_stage[j], s);
  if (t < n) q[t] = fp8_quantize1(xt, s);
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
    st->amax_acc = 0;
    st->history_max = 0;
  }
  if (history && t < history_len) history[t] = 0.0f;
}

// Blocks for one of the FP8_QUANT_THREADS kernels over n elements: one round of
// FP8_QUANT_UNROLL 16-byte chunks per thread covers the tensor, capped at the blocks of
// that kernel resident at once on this GPU (one wave) and at FP8_QUANT_MAX_BLOCKS (the
// partial array); past the cap each thread loops over rounds.
static inline unsigned fp8_quant_blocks(const void *kernel, size_t n, int sms) {
  int per_sm = 0;
  GTL_CUDA(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, kernel, FP8_QUANT_THREADS, 0));
  const size_t per_block = (size_t)FP8_QUANT_THREADS * FP8_QUANT_UNROLL * 8;
  const size_t wave = (size_t)sms * (per_sm < 1 ? 1 : per_sm);
  size_t b = (n + per_block - 1) / per_block;
  b = b > wave ? wave : b;
  return (unsigned)(b < 1 ? 1 : b > FP8_QUANT_MAX_BLOCKS ? FP8_QUANT_MAX_BLOCKS : b);
}

// Launch shapes of the kernels above for one tensor size on the current device: device
// queries, made once (fp8_quant_plan), not on every step.
typedef struct {
  size_t n;                 // bf16 elements of the tensor planned for
  unsigned staged_blocks;   // one-pass kernel: grid (one block per SM or fewer); 0 = x does
                            // not fit in shared memory, or no cooperative launch: two passes
  size_t staged_smem;       // one-pass kernel: dynamic shared memory per block, bytes
  unsigned amax_blocks, quant_blocks;  // the two-pass kernels (FP8_QUANT_THREADS each)
  int delayed_unroll;       // delayed pass: 16-byte chunks per thread per tile, 2, 4 or 8
                            // (4 unless the caller picks another, e.g. by timing each)
  int delayed_wave;         // delayed pass: 0 = the tiled kernel (delayed_unroll), 1 to
                            // FP8_WAVE_SHAPES = the one-wave kernel of that shape
  int wave_ctas_per_sm;     // one-wave kernel: blocks per SM at most (0 = all that fit)
  int sms;                  // the device's SMs
  int wave_per_sm[FP8_WAVE_SHAPES];  // one-wave kernel: blocks of each shape resident per
                                     // SM (fp8_delayed_plan; 0 until it runs)
} Fp8QuantPlan;

/** Plan the launches for a tensor of n >= 1 bf16 elements on the current device: the
 *  one-pass kernel (fp8_tensor_amax_quantize_staged_kernel) gets one block per SM, fewer
 *  for small tensors (>= FP8_STAGE_MIN_CHUNKS 16-byte chunks each), when the device has
 *  cooperative launch and x fits in that grid's shared memory (the opt-in limit per
 *  block); it then also allows the kernel that much dynamic shared memory (raising, never
 *  lowering, the kernel's limit). The two-pass kernels get one wave at most; the delayed
 *  pass (fp8_delayed.cuh) the tiled kernel, 4 chunks per thread (delayed_wave 0);
 *  fp8_delayed_plan adds what its one-wave kernel needs.
 *  Host only; CUDA errors exit. Returns 0. */
static inline int fp8_quant_plan(size_t n, Fp8QuantPlan *p) {
  int dev = 0, sms = 0, coop = 0, optin = 0, per_sm = 0;
  GTL_CUDA(cudaGetDevice(&dev));
  GTL_CUDA(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, dev));
  GTL_CUDA(cudaDeviceGetAttribute(&coop, cudaDevAttrCooperativeLaunch, dev));
  GTL_CUDA(cudaDeviceGetAttribute(&optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, dev));
  memset(p, 0, sizeof *p);
  p->n = n;
  p->amax_blocks = fp8_quant_blocks((const void *)fp8_tensor_amax_kernel, n, sms);
  p->quant_blocks = fp8_quant_blocks((const void *)fp8_tensor_quantize_kernel, n, sms);
  p->delayed_unroll = 4;
  p->sms = sms;
  const size_t n8 = n / 8;
  size_t b = (n8 + FP8_STAGE_MIN_CHUNKS - 1) / FP8_STAGE_MIN_CHUNKS;
  b = b < 1 ? 1 : b > (size_t)sms ? (size_t)sms : b;
  const size_t per = (n8 + b - 1) / b, smem = per * 16;
  cudaFuncAttributes fa;
  GTL_CUDA(cudaFuncGetAttributes(&fa, fp8_tensor_amax_quantize_staged_kernel));
  if (!coop || smem + fa.sharedSizeBytes > (size_t)optin) return 0;
  if ((int)smem > fa.maxDynamicSharedSizeBytes)  // only ever raised: other plans stay valid
    GTL_CUDA(cudaFuncSetAttribute(fp8_tensor_amax_quantize_staged_kernel,
                                  cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem));
  GTL_CUDA(cudaOccupancyMaxActiveBlocksPerMultiprocessor(
      &per_sm, fp8_tensor_amax_quantize_staged_kernel, FP8_STAGE_THREADS, smem));
  if ((size_t)per_sm * sms < b) return 0;  // a cooperative grid must be resident at once
  p->staged_blocks = (unsigned)b;
  p->staged_smem = smem;
  return 0;
}
static inline int fp8_quant_check(const char *who, const void *x, const void *q, size_t n,
                                  const Fp8QuantPlan *p) {
  if (n == 0 || ((uintptr_t)x | (uintptr_t)q) % 16 || !p || p->n != n) {
    fprintf(stderr, "%s: need n >= 1, 16-byte aligned x and q and a plan for n (n=%zu, plan %zu)\n",
            who, n, p ? p->n : (size_t)0);
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
 *  st->scale = 448 / amax and st->scale_inv. p: fp8_quant_plan(n). Reads 2n bytes.
 *  Returns 0, or -1 (message on stderr) on a bad size, alignment or plan. */
static inline int fp8_tensor_amax_launch(const __nv_bfloat16 *x, size_t n, Fp8TensorScale *st,
                                         const Fp8QuantPlan *p, cudaStream_t s) {
  if (fp8_quant_check("fp8_tensor_amax_launch", x, x, n, p)) return -1;
  fp8_tensor_amax_kernel<<<p->amax_blocks, FP8_QUANT_THREADS, 0, s>>>(x, n, st);
  GTL_LAUNCH();
  return 0;
}

/** Current scaling, pass 2: q[i] = E4M3(x[i] · st->scale), saturating. x bf16 [n], q fp8
 *  [n], both 16-byte aligned; p: fp8_quant_plan(n). Reads 2n bytes, writes n. Returns 0
 *  or -1. */
static inline int fp8_tensor_quantize_launch(const __nv_bfloat16 *x, __nv_fp8_storage_t *q,
                                             size_t n, const Fp8TensorScale *st,
                                             const Fp8QuantPlan *p, cudaStream_t s) {
  if (fp8_quant_check("fp8_tensor_quantize_launch", x, q, n, p)) return -1;
  fp8_tensor_quantize_kernel<<<p->quant_blocks, FP8_QUANT_THREADS, 0, s>>>(x, q, n, st);
  GTL_LAUNCH();
  return 0;
}

/** Current scaling, the whole of it: st->amax = max|x|, st->scale = 448 / amax,
 *  st->scale_inv = 1/scale, and q[i] = E4M3(x[i] · scale), saturating. x bf16 [n], q fp8
 *  [n], both 16-byte aligned; p: fp8_quant_plan(n). One cooperative launch that reads x
 *  once (2n bytes, writes n) when p->staged_blocks is nonzero; otherwise
 *  fp8_tensor_amax_launch then fp8_tensor_quantize_launch (reads 4n bytes, writes n).
 *  Returns 0 or -1. */
static inline int fp8_tensor_current_launch(const __nv_bfloat16 *x, __nv_fp8_storage_t *q, size_t n,
                                            Fp8TensorScale *st, const Fp8QuantPlan *p,
                                            cudaStream_t s) {
  if (fp8_quant_check("fp8_tensor_current_launch", x, q, n, p)) return -1;
  if (!p->staged_blocks)
    return fp8_tensor_amax_launch(x, n, st, p, s) || fp8_tensor_quantize_launch(x, q, n, st, p, s);
  void *args[] = {(void *)&x, (void *)&q, (void *)&n, (void *)&st};
  GTL_CUDA(cudaLaunchCooperativeKernel((const void *)fp8_tensor_amax_quantize_staged_kernel,
                                       dim3(p->staged_blocks), dim3(FP8_STAGE_THREADS), args,
                                       p->staged_smem, s));
  return 0;
}
