// dispatch.cuh — ch15's routing kernels around the expert GEMMs, with no host
// synchronization: the counting sort that orders the (token, expert) pairs by expert before
// the GEMMs, and the weighted combine after them. Kernels and launchers only (pointers, sizes
// and a stream in; no main, no globals): the lab includes this header, and grouped.cuh
// builds its work items from the sort's tables. Layouts: top-k indices int32 [T][top_k]
// (values in [0, E)), weights fp32 [T][top_k]; y [P][D] bf16 in expert-sorted row order,
// out [T][D] bf16; P = T·top_k.
#pragma once
#include <cuda_bf16.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include "../common/check.h"
#include "../ch12/launch.cuh"  // pdl_wait_prior, pdl_allow_next (no-ops unless launched with PDL)

#define MOE_MAX_EXPERTS 1024

static inline void moe_die(const char *what) {
  fprintf(stderr, "ch15: %s\n", what);
  exit(GTL_EXIT_RUNTIME);
}

// ---- dispatch: counting sort by expert --------------------------------------------------

// Strategy: one block of 1024 threads (E <= 1024 experts, one per thread in the scan):
// shared-memory histogram with atomics, a two-level warp-shuffle prefix sum, then a
// scatter through per-expert cursors. Limiter: latency (a few microseconds); the order of
// the pairs inside one expert is whatever the atomics give, which changes no result (rows
// are independent and the combine finds each pair through pair_pos).
__global__ void __launch_bounds__(1024)
    moe_dispatch_sort_kernel(const int32_t *__restrict__ topk_idx, int P, int top_k, int E,
                             int bm, int32_t *__restrict__ offsets,
                             int32_t *__restrict__ tile_start,
                             int32_t *__restrict__ sorted_token, int32_t *__restrict__ pair_pos) {
  __shared__ int32_t s_cnt[MOE_MAX_EXPERTS];
  __shared__ int32_t s_sum[2][32];
  const int tid = threadIdx.x, lane = tid % 32, warp = tid / 32;
  pdl_wait_prior();  // PDL (the lab's graph, ch12): topk_idx comes from the previous kernel
  pdl_allow_next();
  for (int e = tid; e < E; e += blockDim.x) s_cnt[e] = 0;
  __syncthreads();
  for (int p = tid; p < P; p += blockDim.x) atomicAdd(&s_cnt[topk_idx[p]], 1);
  __syncthreads();
  // Exclusive prefix sums of the counts and of the m-tiles (ceil(count / bm)) per expert.
  const int c = tid < E ? s_cnt[tid] : 0, m = (c + bm - 1) / bm;
  int ci = c, mi = m;
#pragma unroll
  for (int o = 1; o < 32; o <<= 1) {
    const int a = __shfl_up_sync(0xffffffffu, ci, o), b = __shfl_up_sync(0xffffffffu, mi, o);
    if (lane >= o) ci += a, mi += b;
  }
  if (lane == 31) s_sum[0][warp] = ci, s_sum[1][warp] = mi;
  __syncthreads();
  if (warp == 0) {
    int a = s_sum[0][lane], b = s_sum[1][lane];
#pragma unroll
    for (int o = 1; o < 32; o <<= 1) {
      const int x = __shfl_up_sync(0xffffffffu, a, o), y = __shfl_up_sync(0xffffffffu, b, o);
      if (lane >= o) a += x, b += y;
    }
    s_sum[0][lane] = a, s_sum[1][lane] = b;
  }
  __syncthreads();
  const int c_ex = ci - c + (warp ? s_sum[0][warp - 1] : 0);
  const int m_ex = mi - m + (warp ? s_sum[1][warp - 1] : 0);
  if (tid < E) {
    offsets[tid] = c_ex;
    tile_start[tid] = m_ex;
    s_cnt[tid] = c_ex;  // becomes the expert's write cursor
  }
  if (tid == E - 1) offsets[E] = c_ex + c, tile_start[E] = m_ex + m;
  __syncthreads();
  for (int p = tid; p < P; p += blockDim.x) {
    const int slot = atomicAdd(&s_cnt[topk_idx[p]], 1);
    sorted_token[slot] = p / top_k;
    pair_pos[p] = slot;
  }
}

// ---- combine ------------------------------------------------------------------------------

// Strategy: one block per token, 16-byte loads of its top_k expert rows, fp32 weighted sum in
// the routing order (deterministic), one bf16 rounding. Limiter: latency (P·D·2 bytes read).
__global__ void __launch_bounds__(256)
    moe_combine_topk_kernel(const __nv_bfloat16 *__restrict__ y,
                            const int32_t *__restrict__ pair_pos,
                            const float *__restrict__ topk_w, int top_k, int D,
                            __nv_bfloat16 *__restrict__ out) {
  const int t = blockIdx.x;
  for (int c = threadIdx.x; c < D / 8; c += blockDim.x) {
    float s[8] = {0, 0, 0, 0, 0, 0, 0, 0};
    for (int j = 0; j < top_k; j++) {
      const float w = topk_w[(int64_t)t * top_k + j];
      const uint4 v = *(const uint4 *)(y + (int64_t)pair_pos[(int64_t)t * top_k + j] * D + c * 8);
      const __nv_bfloat162 *h = (const __nv_bfloat162 *)&v;
#pragma unroll
      for (int q = 0; q < 4; q++) {
        const float2 f = __bfloat1622float2(h[q]);
        s[2 * q] += w * f.x;
        s[2 * q + 1] += w * f.y;
      }
    }
    uint4 o;
    __nv_bfloat162 *oh = (__nv_bfloat162 *)&o;
#pragma unroll
    for (int q = 0; q < 4; q++) oh[q] = __floats2bfloat162_rn(s[2 * q], s[2 * q + 1]);
    *(uint4 *)(out + (int64_t)t * D + c * 8) = o;
  }
}

// ---- launchers ----------------------------------------------------------------------------

/** Sort the P = T·top_k pairs by expert. topk_idx int32 [T][top_k] (values in [0, E)).
 *  Writes offsets [E+1] (first sorted row of each expert; offsets[E] = P), tile_start [E+1]
 *  (prefix sum of ceil(count_e / bm)), sorted_token [P] (token of each sorted row) and
 *  pair_pos [P] (sorted row of pair t·top_k + j). One block; E <= 1024. */
static inline void moe_dispatch_launch(const int32_t *topk_idx, int64_t T, int top_k, int E,
                                       int bm, int32_t *offsets, int32_t *tile_start,
                                       int32_t *sorted_token, int32_t *pair_pos,
                                       cudaStream_t s) {
  if (E < 1 || E > MOE_MAX_EXPERTS || top_k < 1 || T < 1 || T * top_k >= (1ll << 31))
    moe_die("dispatch needs 1 <= E <= 1024, top_k >= 1, T·top_k < 2^31");
  moe_dispatch_sort_kernel<<<1, 1024, 0, s>>>(topk_idx, (int)(T * top_k), top_k, E, bm,
                                              offsets, tile_start, sorted_token, pair_pos);
  GTL_LAUNCH();
}

/** out [T][D] bf16 = sum_j topk_w[t][j] · y[pair_pos[t·top_k + j]] (fp32 sum, j in order). */
static inline void moe_combine_launch(const __nv_bfloat16 *y, const int32_t *pair_pos,
                                      const float *topk_w, int64_t T, int top_k, int64_t D,
                                      __nv_bfloat16 *out, cudaStream_t s) {
  if (D % 8 || T < 1 || T > (1ll << 31) - 1) moe_die("combine needs D % 8 == 0");
  moe_combine_topk_kernel<<<(unsigned)T, 256, 0, s>>>(y, pair_pos, topk_w, top_k, (int)D, out);
  GTL_LAUNCH();
}
