// topk.cuh — the MoE router as a GPU kernel: one warp per token computes the softmax
// over E experts and picks the top_k, with no trip to the host. Included by
// ch06/optimized.cu and by the lab (labs/01_basics onwards), so it depends on nothing in
// ch06 but this file and common/check.h.
//
// Semantics (Hugging Face modeling_qwen3_moe, Qwen3MoeSparseMoeBlock.forward):
//     p = softmax(logits[t][:E]) in fp32;  (w, idx) = topk(p, top_k)
//     if norm_topk_prob: w /= sum(w)
// Order: descending probability; equal probabilities → lower expert index first. The
// kernel ranks by logit, not by probability: softmax is monotonic, so the two orders
// agree exactly, while two different logits can round to one fp32 probability.
//
// Layout: lane l of the warp holds experts [l·E/32, (l+1)·E/32) of its token in
// registers (E=128: 4 floats, one 16-byte load per lane, 512 contiguous bytes per warp).
// router_topk_kernel (E and top_k fixed at compile time) is what ch06 times; for any E
// and top_k at run time, router_topk_any_launch at the end of this file.
// Preconditions, checked by router_topk_launch: E a multiple of 32 (<= 1024),
// 1 <= top_k <= min(E, 32); d_logits 16-byte aligned when E/32 % 4 == 0, d_idx and d_w
// 16-byte aligned when top_k % 4 == 0 (cudaMalloc'd buffers are).
#pragma once
#include <cuda_runtime.h>
#include <limits.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include "../common/check.h"
#include "../ch12/launch.cuh"  // pdl_wait_prior, pdl_allow_next (no-ops unless launched with PDL)

// Tokens per block: one warp each. 4 warps = 128 threads; see README "occupancy".
constexpr int kRouterWarpsPerBlock = 4;

// The router's order on (logit, expert): larger logit first, equal logits → lower index.
// A strict total order on distinct experts, so every lane of a butterfly agrees.
__device__ __forceinline__ bool router_before(float va, int ia, float vb, int ib) {
  return va > vb || (va == vb && ia < ib);
}

// The warp's best (value, index) under router_before, left in every lane: each lane
// offers its candidate, 5 xor-butterfly steps carry the (value, index) pairs.
__device__ __forceinline__ void router_warp_best(float &bv, int &bi) {
#pragma unroll
  for (int off = 16; off > 0; off >>= 1) {
    const float ov = __shfl_xor_sync(0xffffffffu, bv, off);
    const int oi = __shfl_xor_sync(0xffffffffu, bi, off);
    if (router_before(ov, oi, bv, bi)) {
      bv = ov;
      bi = oi;
    }
  }
}

// Strategy: warp per token, logits in registers, shuffle max/sum, top_k rounds of a
// shuffle argmax. Limiter: latency (launch, one DRAM/L2 load, a chain of dependent
// shuffles), not bandwidth: 32 KB in at T=64.
template <int E, int TOP_K>
__global__ void __launch_bounds__(kRouterWarpsPerBlock * 32)
    router_topk_kernel(const float *__restrict__ logits, int32_t *__restrict__ idx_out,
                       float *__restrict__ w_out, int T, int norm_topk_prob) {
  static_assert(E % 32 == 0 && E <= 1024, "E must be a multiple of 32, at most 1024");
  static_assert(TOP_K >= 1 && TOP_K <= 32 && TOP_K <= E, "1 <= top_k <= min(E, 32)");
  constexpr int V = E / 32;  // logits per lane
  const unsigned full = 0xffffffffu;
  const int lane = threadIdx.x & 31;
  const int t = blockIdx.x * kRouterWarpsPerBlock + (threadIdx.x >> 5);
  if (t >= T) return;  // t is the same for all 32 lanes: whole warps leave together

  const float *row = logits + (int64_t)t * E + lane * V;
  float x[V];
  if constexpr (V % 4 == 0) {
#pragma unroll
    for (int i = 0; i < V / 4; i++) {
      const float4 q = reinterpret_cast<const float4 *>(row)[i];
      x[4 * i] = q.x;
      x[4 * i + 1] = q.y;
      x[4 * i + 2] = q.z;
      x[4 * i + 3] = q.w;
    }
  } else {
#pragma unroll
    for (int i = 0; i < V; i++) x[i] = row[i];
  }

  // Softmax statistics: max, then sum of exp(x - max). The xor butterfly leaves the
  // result in every lane after log2(32) = 5 steps.
  float m = x[0];
#pragma unroll
  for (int i = 1; i < V; i++) m = fmaxf(m, x[i]);
#pragma unroll
  for (int off = 16; off > 0; off >>= 1) m = fmaxf(m, __shfl_xor_sync(full, m, off));
  float sum = 0.0f;
#pragma unroll
  for (int i = 0; i < V; i++) sum += expf(x[i] - m);
#pragma unroll
  for (int off = 16; off > 0; off >>= 1) sum += __shfl_xor_sync(full, sum, off);

  // Top-k: TOP_K rounds of a warp argmax over the experts not yet taken. Each lane
  // offers its best candidate; the butterfly carries (value, index) pairs.
  unsigned taken = 0;  // bit i: this lane's x[i] is already chosen
  float sel_v[TOP_K];
  int sel_i[TOP_K];
#pragma unroll
  for (int j = 0; j < TOP_K; j++) {
    float bv = -INFINITY;
    int bi = INT_MAX;  // "no candidate": loses every comparison, even against -inf
#pragma unroll
    for (int i = 0; i < V; i++)
      if (!((taken >> i) & 1u) && router_before(x[i], lane * V + i, bv, bi)) {
        bv = x[i];
        bi = lane * V + i;
      }
    router_warp_best(bv, bi);
    sel_v[j] = bv;
    sel_i[j] = bi;
    if (bi / V == lane) taken |= 1u << (bi - lane * V);
  }

  // Lane 0 holds all TOP_K winners (every lane does); it turns them into weights the
  // way HF does in fp32: p = exp(x - max) / sum, then p / sum(p over the top_k).
  if (lane == 0) {
    float p[TOP_K], top_sum = 0.0f;
#pragma unroll
    for (int j = 0; j < TOP_K; j++) {
      p[j] = expf(sel_v[j] - m) / sum;
      top_sum += p[j];
    }
#pragma unroll
    for (int j = 0; j < TOP_K; j++) p[j] = norm_topk_prob ? p[j] / top_sum : p[j];
    int32_t *io = idx_out + (int64_t)t * TOP_K;
    float *wo = w_out + (int64_t)t * TOP_K;
    if constexpr (TOP_K % 4 == 0) {  // 16-byte stores: rows of TOP_K·4 bytes stay aligned
#pragma unroll
      for (int j = 0; j < TOP_K; j += 4) {
        reinterpret_cast<int4 *>(io)[j / 4] =
            make_int4(sel_i[j], sel_i[j + 1], sel_i[j + 2], sel_i[j + 3]);
        reinterpret_cast<float4 *>(wo)[j / 4] = make_float4(p[j], p[j + 1], p[j + 2], p[j + 3]);
      }
    } else {
#pragma unroll
      for (int j = 0; j < TOP_K; j++) {
        io[j] = sel_i[j];
        wo[j] = p[j];
      }
    }
  }
}

// Enqueue the router for T tokens on s: ceil(T / kRouterWarpsPerBlock) blocks of
// kRouterWarpsPerBlock warps. d_logits [T][E] fp32 in; d_idx [T][TOP_K] int32 and
// d_w [T][TOP_K] fp32 out. Exits 3 on a broken precondition (see the file's head).
template <int E, int TOP_K>
void router_topk_launch(const float *d_logits, int32_t *d_idx, float *d_w, int64_t T,
                        int norm_topk_prob, cudaStream_t s) {
  const int64_t blocks = (T + kRouterWarpsPerBlock - 1) / kRouterWarpsPerBlock;
  const int vec_in = (E / 32) % 4 == 0, vec_out = TOP_K % 4 == 0;
  if (T < 1 || T > INT_MAX ||
      (vec_in && ((uintptr_t)d_logits & 15)) ||
      (vec_out && (((uintptr_t)d_idx & 15) || ((uintptr_t)d_w & 15)))) {
    fprintf(stderr, "router_topk_launch: need 1 <= T <= %lld and 16-byte aligned buffers "
            "(T=%lld, logits %p, idx %p, w %p)\n",
            (long long)INT_MAX, (long long)T, (const void *)d_logits, (void *)d_idx,
            (void *)d_w);
    exit(GTL_EXIT_RUNTIME);
  }
  router_topk_kernel<E, TOP_K><<<(unsigned)blocks, kRouterWarpsPerBlock * 32, 0, s>>>(
      d_logits, d_idx, d_w, (int)T, norm_topk_prob);
  GTL_LAUNCH();
}

// ---- any E and top_k at run time (the lab: mini has E = 8) ---------------------------
// The same router for 1 <= E <= 1024 and 1 <= top_k <= min(E, 32) given at run time.
// Lane l holds experts l, l+32, l+64, … (a strided layout: any E, coalesced loads);
// VMAX = ceil(E/32) rounded up to a power of two bounds the registers. Winner j is kept
// by lane j, so the weights are written by top_k lanes at once. Same semantics and tie
// rule as router_topk_kernel; the top-k sum is a butterfly (the templated kernel sums in
// order), so weights may differ from it in the last bit.
// Strategy: warp per token, shuffle softmax and top_k shuffle-argmax rounds. Limiter:
// latency.
template <int VMAX>
__global__ void __launch_bounds__(kRouterWarpsPerBlock * 32)
    router_topk_any_kernel(const float *__restrict__ logits, int32_t *__restrict__ idx_out,
                           float *__restrict__ w_out, int T, int E, int top_k, int norm_topk_prob) {
  const unsigned full = 0xffffffffu;
  const int lane = threadIdx.x & 31;
  const int t = blockIdx.x * kRouterWarpsPerBlock + (threadIdx.x >> 5);
  pdl_wait_prior();  // PDL (the lab's graph, ch12): the logits come from the previous kernel
  pdl_allow_next();
  if (t >= T) return;  // whole warps leave together
  const float *row = logits + (int64_t)t * E;
  float x[VMAX];
  float m = -INFINITY;
#pragma unroll
  for (int i = 0; i < VMAX; i++) {
    const int ex = lane + 32 * i;
    x[i] = ex < E ? row[ex] : -INFINITY;
    m = fmaxf(m, x[i]);
  }
#pragma unroll
  for (int off = 16; off > 0; off >>= 1) m = fmaxf(m, __shfl_xor_sync(full, m, off));
  float sum = 0.0f;
#pragma unroll
  for (int i = 0; i < VMAX; i++)
    if (lane + 32 * i < E) sum += expf(x[i] - m);
#pragma unroll
  for (int off = 16; off > 0; off >>= 1) sum += __shfl_xor_sync(full, sum, off);

  unsigned taken = 0;  // bit i: expert lane + 32 i is already chosen
  int my_i = 0;        // lane j < top_k keeps winner j
  float my_p = 0.0f;
  for (int j = 0; j < top_k; j++) {
    float bv = -INFINITY;
    int bi = INT_MAX;
#pragma unroll
    for (int i = 0; i < VMAX; i++) {
      const int ex = lane + 32 * i;
      if (ex < E && !((taken >> i) & 1u) && router_before(x[i], ex, bv, bi)) {
        bv = x[i];
        bi = ex;
      }
    }
    router_warp_best(bv, bi);
    if ((bi & 31) == lane) taken |= 1u << (bi >> 5);
    if (lane == j) {
      my_i = bi;
      my_p = expf(bv - m) / sum;
    }
  }
  float top_sum = lane < top_k ? my_p : 0.0f;
#pragma unroll
  for (int off = 16; off > 0; off >>= 1) top_sum += __shfl_xor_sync(full, top_sum, off);
  if (lane < top_k) {
    idx_out[(int64_t)t * top_k + lane] = my_i;
    w_out[(int64_t)t * top_k + lane] = norm_topk_prob ? my_p / top_sum : my_p;
  }
}

// Enqueue router_topk_any_kernel for T tokens on s: d_logits [T][E] fp32 in; d_idx
// [T][top_k] int32 and d_w [T][top_k] fp32 out (no alignment needed). Exits 3 unless
// 1 <= T <= INT_MAX, 1 <= E <= 1024 and 1 <= top_k <= min(E, 32).
static inline void router_topk_any_launch(const float *d_logits, int32_t *d_idx, float *d_w, int64_t T,
                                          int E, int top_k, int norm_topk_prob, cudaStream_t s) {
  if (T < 1 || T > INT_MAX || E < 1 || E > 1024 || top_k < 1 || top_k > 32 || top_k > E) {
    fprintf(stderr, "router_topk_any_launch: need 1 <= T, 1 <= E <= 1024, 1 <= top_k <= min(E, 32) "
            "(T=%lld E=%d top_k=%d)\n", (long long)T, E, top_k);
    exit(GTL_EXIT_RUNTIME);
  }
  const unsigned blocks = (unsigned)((T + kRouterWarpsPerBlock - 1) / kRouterWarpsPerBlock);
  const unsigned threads = kRouterWarpsPerBlock * 32;
  const int v = (E + 31) / 32;
  if (v <= 1) router_topk_any_kernel<1><<<blocks, threads, 0, s>>>(d_logits, d_idx, d_w, (int)T, E, top_k, norm_topk_prob);
  else if (v <= 2) router_topk_any_kernel<2><<<blocks, threads, 0, s>>>(d_logits, d_idx, d_w, (int)T, E, top_k, norm_topk_prob);
  else if (v <= 4) router_topk_any_kernel<4><<<blocks, threads, 0, s>>>(d_logits, d_idx, d_w, (int)T, E, top_k, norm_topk_prob);
  else if (v <= 8) router_topk_any_kernel<8><<<blocks, threads, 0, s>>>(d_logits, d_idx, d_w, (int)T, E, top_k, norm_topk_prob);
  else if (v <= 16) router_topk_any_kernel<16><<<blocks, threads, 0, s>>>(d_logits, d_idx, d_w, (int)T, E, top_k, norm_topk_prob);
  else router_topk_any_kernel<32><<<blocks, threads, 0, s>>>(d_logits, d_idx, d_w, (int)T, E, top_k, norm_topk_prob);
  GTL_LAUNCH();
}
