// fused_norm.cuh — ch14's fused residual add + RMSNorm + FP8 E4M3 per-token quantize: the
// kernel ch14/optimized.cu times and the lab reuses in front of its FP8 GEMMs, plus the
// device helpers ch14/baseline.cu's three kernels share with it (so the pair computes
// the same function, rounding for rounding).
//
// For every token row t < T of hidden size D (bf16 in and out, fp32 math):
//     h[t]     = bf16(x[t] + residual[t])                      the new residual stream
//     y[t]     = bf16(h[t] · w · rsqrt(mean(h[t]²) + eps))     RMSNorm (gpt-oss: eps 1e-5,
//                                                              no +1 on the weight)
//     scale[t] = amax(|y[t]|) / 448                            fp32, one per row
//     q[t]     = fp8_e4m3_satfinite(y[t] · (448 / amax))       round to nearest even
// 448 is the largest finite E4M3 value (OCP 8-bit Floating Point Specification v1.0,
// 2023), so the row's largest element lands on ±448 and q · scale ≈ y. A row of zeros
// gets scale 0 and q 0. y is rounded to bf16 before it is quantized, as the unfused
// pipeline stores it; the fused kernel never writes y.
//
// Layout: row-major [T][D], D % 8 == 0 (every row is whole 16-byte pieces of 8 bf16),
// base pointers 16-byte aligned (cudaMalloc's are 256). h may be the same buffer as
// residual (an in-place residual update): each element is read, then written, by the
// one thread that owns it, so x, residual and h are not declared __restrict__. (The
// chapter's programs use separate buffers; the in-place case is not exercised there.)
#pragma once
#include <cuda_bf16.h>
#include <cuda_fp8.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include "../common/gauntlet.h"

#define FNORM_FP8_MAX 448.0f  // largest finite E4M3 value
#define FNORM_MAX_CPT 4       // 16-byte pieces per thread, at most (registers, see the kernel)
// Threads a row is spread over, before rounding up to whole warps. Build with
// -DFNORM_ROW_THREADS=N to try another (README, exercise 1).
#ifndef FNORM_ROW_THREADS
#define FNORM_ROW_THREADS 128
#endif

// Eight bf16 (four 32-bit words, low half first) to fp32: a bf16 is the top half of an
// fp32, so a shift or a mask converts exactly.
__device__ __forceinline__ void fnorm_unpack8(uint4 v, float f[8]) {
  const uint32_t w[4] = {v.x, v.y, v.z, v.w};
#pragma unroll
  for (int i = 0; i < 4; i++) {
    f[2 * i] = __uint_as_float(w[i] << 16);
    f[2 * i + 1] = __uint_as_float(w[i] & 0xFFFF0000u);
  }
}

// Eight fp32 to bf16, round to nearest even (cvt.rn.bf16x2.f32: one instruction per pair).
__device__ __forceinline__ uint4 fnorm_pack8(const float f[8]) {
  uint32_t w[4];
#pragma unroll
  for (int i = 0; i < 4; i++) {
    __nv_bfloat162 p = __floats2bfloat162_rn(f[2 * i], f[2 * i + 1]);  // .x = low half
    w[i] = *reinterpret_cast<uint32_t *>(&p);
  }
  return make_uint4(w[0], w[1], w[2], w[3]);
}

// Eight fp32 · s to E4M3, saturating to ±448, round to nearest even; byte i = element i.
// __nv_cvt_float2_to_fp8x2 converts a pair in one instruction on sm_89+ (F2FP).
__device__ __forceinline__ uint2 fnorm_fp8x8(const float f[8], float s) {
  uint32_t w[2];
#pragma unroll
  for (int i = 0; i < 2; i++) {
    const uint32_t lo = __nv_cvt_float2_to_fp8x2(make_float2(f[4 * i] * s, f[4 * i + 1] * s),
                                                 __NV_SATFINITE, __NV_E4M3);
    const uint32_t hi = __nv_cvt_float2_to_fp8x2(
        make_float2(f[4 * i + 2] * s, f[4 * i + 3] * s), __NV_SATFINITE, __NV_E4M3);
    w[i] = lo | (hi << 16);
  }
  return make_uint2(w[0], w[1]);
}

// Sum (MAX = false) or maximum (MAX = true) of one float per thread over the block:
// 5 xor-shuffle steps per warp, the warps' results through shared memory, then every
// thread folds them in the same order, so all threads return the same bits. `part` must
// hold blockDim.x / 32 floats; one __syncthreads() before (reuse) and one after.
template <bool MAX>
__device__ __forceinline__ float fnorm_block_reduce(float v, float *part) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) {
    const float u = __shfl_xor_sync(0xFFFFFFFFu, v, o);
    v = MAX ? fmaxf(v, u) : v + u;
  }
  const int warps = blockDim.x >> 5;
  __syncthreads();  // a previous reduction may still be reading part[]
  if ((threadIdx.x & 31) == 0) part[threadIdx.x >> 5] = v;
  __syncthreads();
  float r = part[0];
  for (int i = 1; i < warps; i++) r = MAX ? fmaxf(r, part[i]) : r + part[i];
  return r;
}

// Strategy: block per token row, CPT 16-byte pieces of x, residual and w per thread, all
// loads in flight before the first use; h rounded to bf16 and written; the row stays in
// registers through both block reductions (sum of squares, then amax); one fp8 row and one
// scale written. DRAM sees x and residual once and h, q, scale once. Limiter: DRAM.
// Registers: the loads hold 12·CPT words of data at the peak, then h and y live packed
// as bf16 in xv (4·CPT words): CPT <= 4 keeps a 1024-thread block within 64 per thread.
template <int CPT>
__global__ void __launch_bounds__(1024)
    fused_add_rmsnorm_fp8_kernel(const uint4 *x, const uint4 *residual,
                                 const uint4 *__restrict__ w, uint4 *h, uint2 *__restrict__ q,
                                 float *__restrict__ scale, int D8, float inv_D, float eps) {
  __shared__ float part_ss[32], part_max[32];
  const int64_t row = blockIdx.x;
  const int nt = blockDim.x, tid = threadIdx.x;
  const uint4 *xr = x + row * D8, *rr = residual + row * D8;
  uint4 xv[CPT], rv[CPT], wv[CPT];
#pragma unroll
  for (int i = 0; i < CPT; i++) {  // 3·CPT independent 16-byte loads
    const int c = tid + i * nt;
    if (c < D8) {
      xv[i] = xr[c];
      rv[i] = rr[c];
      wv[i] = __ldg(w + c);  // the same D weights for every row: L2/L1 hits after the first
    }
  }
  float ss = 0.0f;
#pragma unroll
  for (int i = 0; i < CPT; i++) {  // h = x + residual; xv[i] holds h (bf16) from here on
    const int c = tid + i * nt;
    if (c >= D8) continue;
    float a[8], b[8];
    fnorm_unpack8(xv[i], a);
    fnorm_unpack8(rv[i], b);
#pragma unroll
    for (int e = 0; e < 8; e++) a[e] += b[e];
    xv[i] = fnorm_pack8(a);
    h[row * D8 + c] = xv[i];
    fnorm_unpack8(xv[i], a);  // the norm reads the residual as stored (bf16)
#pragma unroll
    for (int e = 0; e < 8; e++) ss = fmaf(a[e], a[e], ss);
  }
  const float rinv = rsqrtf(fnorm_block_reduce<false>(ss, part_ss) * inv_D + eps);
  float amax = 0.0f;
#pragma unroll
  for (int i = 0; i < CPT; i++) {  // y = h · rinv · w; xv[i] holds y (bf16) from here on
    if (tid + i * nt >= D8) continue;
    float a[8], wf[8];
    fnorm_unpack8(xv[i], a);
    fnorm_unpack8(wv[i], wf);
#pragma unroll
    for (int e = 0; e < 8; e++) a[e] = a[e] * rinv * wf[e];
    xv[i] = fnorm_pack8(a);  // y as the unfused pipeline stores it
    fnorm_unpack8(xv[i], a);
#pragma unroll
    for (int e = 0; e < 8; e++) amax = fmaxf(amax, fabsf(a[e]));
  }
  amax = fnorm_block_reduce<true>(amax, part_max);
  const float s = amax > 0.0f ? FNORM_FP8_MAX / amax : 0.0f;
#pragma unroll
  for (int i = 0; i < CPT; i++) {
    const int c = tid + i * nt;
    if (c >= D8) continue;
    float a[8];
    fnorm_unpack8(xv[i], a);
    q[row * D8 + c] = fnorm_fp8x8(a, s);
  }
  if (tid == 0) scale[row] = amax / FNORM_FP8_MAX;
}

// The launch shape for rows of D8 16-byte pieces: CPT pieces per thread so that about
// FNORM_ROW_THREADS threads cover a row, at most FNORM_MAX_CPT (then up to 1024 threads);
// threads rounded up to whole warps. Returns 0, or -1 when D8 is outside 1..8192.
static inline int fnorm_shape(int64_t D8, int *cpt, int *threads) {
  if (D8 < 1 || D8 > 1024 * FNORM_MAX_CPT) return -1;
  int64_t c = (D8 + FNORM_ROW_THREADS - 1) / FNORM_ROW_THREADS;
  if (c > FNORM_MAX_CPT) c = FNORM_MAX_CPT;
  const int64_t t = (D8 + c - 1) / c;
  *cpt = (int)c;
  *threads = (int)((t + 31) / 32 * 32);
  return 0;
}

// The per-thread arrays need a compile-time size to live in registers, so each launch
// switches over the CPT chosen at run time: FNORM_CPT_SWITCH(cpt, LAUNCH) expands
// LAUNCH(1) … LAUNCH(FNORM_MAX_CPT), one case each.
#define FNORM_CPT_SWITCH(cpt, LAUNCH) \
  switch (cpt) {                      \
    case 1: LAUNCH(1); break;         \
    case 2: LAUNCH(2); break;         \
    case 3: LAUNCH(3); break;         \
    default: LAUNCH(4); break;        \
  }

// Enqueue on stream s, for T rows of D:
//   h = bf16(x + residual); y = bf16(RMSNorm(h) · w); scale = amax|y| / 448 (fp32, [T]);
//   q = E4M3(y / scale) ([T][D] bytes).
// x, residual, h: bf16 [T][D]; w: bf16 [D]; q: fp8 e4m3 [T][D]; scale: fp32 [T].
// Preconditions (checked; exit 2 with a message when broken): 1 <= T < 2^31,
// 8 <= D <= 32768, D % 8 == 0, all pointers 16-byte aligned (scale: 4). h may equal
// residual. Launch errors exit 3 through GTL_LAUNCH.
static inline void fused_add_rmsnorm_fp8_launch(const __nv_bfloat16 *x,
                                                const __nv_bfloat16 *residual,
                                                const __nv_bfloat16 *w, __nv_bfloat16 *h,
                                                uint8_t *q, float *scale, int64_t T,
                                                int64_t D, float eps, cudaStream_t s) {
  int cpt, threads;
  if (T < 1 || T > INT32_MAX || D % 8 || fnorm_shape(D / 8, &cpt, &threads) ||
      ((uintptr_t)x | (uintptr_t)residual | (uintptr_t)w | (uintptr_t)h | (uintptr_t)q) % 16) {
    fprintf(stderr, "fused_add_rmsnorm_fp8_launch: T=%lld D=%lld rejected (need T >= 1, "
                    "8 <= D <= 32768, D %% 8 == 0, 16-byte aligned rows)\n",
            (long long)T, (long long)D);
    exit(GTL_EXIT_USAGE);
  }
  const int D8 = (int)(D / 8);
#define FNORM_FUSED(C)                                                                      \
  fused_add_rmsnorm_fp8_kernel<C><<<(unsigned)T, threads, 0, s>>>(                          \
      (const uint4 *)x, (const uint4 *)residual, (const uint4 *)w, (uint4 *)h, (uint2 *)q, \
      scale, D8, 1.0f / (float)D, eps)
  FNORM_CPT_SWITCH(cpt, FNORM_FUSED);
#undef FNORM_FUSED
  GTL_LAUNCH();
}
