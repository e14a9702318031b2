// kernels.cuh — ch12's kernels: one small kernel per op of the mini model's decode step
// (model.cuh has the step, the order of launches and the shapes' source), shared by both
// programs.
//
// Kernels: one small kernel per op, the way an eager framework runs a decode step, so
// one step is 13·L + 4 launches (56 for the default 4 layers). The router's top-k runs
// on the device: nothing inside a step waits for the host. Every kernel has the same
// shape, ready for programmatic dependent launch (PDL):
//     prologue    loads that no earlier kernel of the step writes (weights, past KV rows)
//     pdl_wait_prior()    cudaGridDependencySynchronize
//     pdl_allow_next()    cudaTriggerProgrammaticLaunchCompletion
//     body        reads and writes activations
// Launched plainly (baseline) both calls return at once: the stream already ordered the
// kernels. Launched with PDL (optimized) the next kernel starts while this one runs, does
// its prologue, and waits in pdl_wait_prior() until this one has completed and its
// writes are visible (PTX ISA, griddepcontrol). Every thread reaches the wait before any
// activation access or early exit, so "kernel N completed" implies "N−1 completed".
#pragma once
#include <cuda_bf16.h>
#include <math.h>

#include "../common/gauntlet.h"
#include "launch.cuh"  // the PDL pair (pdl_wait_prior, pdl_allow_next)

// ---- the mini model's shapes, as the kernels are compiled for them ---------------------
// The lab's `mini` preset (labs/moe/config.c) is the source of these numbers: the kernels
// need them at compile time (block sizes, register arrays, unrolled loops), and
// step_config (model.cuh) refuses to run when the preset and these differ.
enum {
  STEP_D = 256,        // hidden size
  STEP_H = 8,          // query heads
  STEP_H_KV = 2,       // key/value heads (GQA: 4 query heads per kv head)
  STEP_HEAD_DIM = 32,  // = one warp: attention puts one lane on each dimension
  STEP_E = 8,          // experts
  STEP_TOP_K = 2,      // experts per token
  STEP_F = 512,        // expert FFN size
  STEP_V = 2048,       // vocabulary
  STEP_MAX_L = 64,
  STEP_MAX_P = 4096,
  STEP_Q = STEP_H * STEP_HEAD_DIM,      // 256
  STEP_KV = STEP_H_KV * STEP_HEAD_DIM,  // 64
  STEP_ROWS_PER_BLOCK = 8               // GEMV: one warp per output row, 8 warps a block
};
#define STEP_EPS 1e-6f          // RMSNorm epsilon (Mixtral/Qwen3 config rms_norm_eps)
#define STEP_ROPE_THETA 10000.0 // RoPE base (rope_theta)
static_assert(STEP_D % 256 == 0 && STEP_F % 256 == 0, "GEMV lanes move 8 bf16 (16 B) each");
static_assert(STEP_HEAD_DIM == 32 && STEP_H % STEP_H_KV == 0, "attention: lane = head dim");
static_assert(STEP_E <= 32 && STEP_TOP_K <= STEP_E, "router top-k: one warp, lane = expert");

// ---- device helpers ------------------------------------------------------------------
__device__ __forceinline__ float warp_sum(float v) {
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}
__device__ __forceinline__ float warp_max(float v) {
  for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
  return v;
}
// Sum over a block of NW warps; red[NW] in shared memory; every thread gets the result.
template <int NW>
__device__ __forceinline__ float block_sum(float v, float *red) {
  v = warp_sum(v);
  if ((threadIdx.x & 31) == 0) red[threadIdx.x >> 5] = v;
  __syncthreads();
  float s = 0.f;
#pragma unroll
  for (int w = 0; w < NW; w++) s += red[w];
  return s;
}

// Dot of one weight row (KC chunks of 256 bf16, this lane's 16 B of each already in w[])
// with an fp32 vector, summed over the warp. Activations are read with plain loads, not
// the read-only (ld.global.nc) path: under PDL the previous grid writes them while this
// grid is already alive, which the non-coherent path does not allow.
template <int KC>
__device__ __forceinline__ float warp_dot_row(const uint4 (&w)[KC], const float *in) {
  const int lane = threadIdx.x & 31;
  float acc = 0.f;
#pragma unroll
  for (int c = 0; c < KC; c++) {
    const float4 *x = (const float4 *)(in + (c * 32 + lane) * 8);
    const float4 a = x[0], b = x[1];
    const __nv_bfloat162 *h = (const __nv_bfloat162 *)&w[c];
    const float2 w0 = __bfloat1622float2(h[0]), w1 = __bfloat1622float2(h[1]);
    const float2 w2 = __bfloat1622float2(h[2]), w3 = __bfloat1622float2(h[3]);
    acc += w0.x * a.x + w0.y * a.y + w1.x * a.z + w1.y * a.w;
    acc += w2.x * b.x + w2.y * b.y + w3.x * b.z + w3.y * b.w;
  }
  return warp_sum(acc);
}
template <int KC>
__device__ __forceinline__ void load_row(uint4 (&w)[KC], const __nv_bfloat16 *row) {
  const int lane = threadIdx.x & 31;
#pragma unroll
  for (int c = 0; c < KC; c++) w[c] = __ldg((const uint4 *)row + c * 32 + lane);
}

// ---- kernels (shared by both programs) -------------------------------------------------
// Strategy: one thread per element, block of D. Limiter: launch latency.
__global__ void __launch_bounds__(STEP_D) step_embed_kernel(const __nv_bfloat16 *__restrict__ emb,
                                                       const int *token, float *x) {
  pdl_wait_prior();  // the token may come from the previous step's argmax
  pdl_allow_next();
  x[threadIdx.x] = __bfloat162float(emb[(size_t)*token * STEP_D + threadIdx.x]);
}

// Strategy: one block of D threads, norm weight loaded before the wait. Limiter: latency.
__global__ void __launch_bounds__(STEP_D) step_rmsnorm_kernel(const float *x,
                                                         const __nv_bfloat16 *__restrict__ w,
                                                         float *out) {
  __shared__ float red[STEP_D / 32];
  const float wv = __bfloat162float(w[threadIdx.x]);
  pdl_wait_prior();
  pdl_allow_next();
  const float v = x[threadIdx.x];
  const float ss = block_sum<STEP_D / 32>(v * v, red);
  out[threadIdx.x] = v * rsqrtf(ss / STEP_D + STEP_EPS) * wv;
}

// out[N] = W[N][K] · in[K] (+ res), K = 256·KC. Strategy: warp per row, each lane's
// 16-byte weight slices loaded before the wait. Limiter: launch + L2 latency. out may
// alias res (x += Wo·a): each element is read and written by the same lane.
template <int KC>
__global__ void __launch_bounds__(256) step_gemv_kernel(const __nv_bfloat16 *__restrict__ W,
                                                   const float *in, const float *res,
                                                   float *out, int N) {
  const int row = blockIdx.x * STEP_ROWS_PER_BLOCK + (threadIdx.x >> 5);
  uint4 w[KC];
  if (row < N) load_row<KC>(w, W + (size_t)row * KC * 256);
  pdl_wait_prior();
  pdl_allow_next();
  if (row >= N) return;
  const float acc = warp_dot_row<KC>(w, in);
  if ((threadIdx.x & 31) == 0) out[row] = acc + (res ? res[row] : 0.f);
}

// RoPE (rotate-half: x' = x·cos + rotate_half(x)·sin, HF apply_rotary_pos_emb) on q in
// place and on k, then k and v appended to this layer's cache at position pos.
// Strategy: one thread per rotated pair (q, then k) and per copied v element; cos/sin
// computed before the wait. Limiter: launch latency.
__global__ void __launch_bounds__(256) step_rope_kv_kernel(float *q, const float *k, const float *v,
                                                      float *kc, float *vc, int pos,
                                                      int s_max) {
  const int t = threadIdx.x, half = STEP_HEAD_DIM / 2, i = t % half;
  const float inv_freq = powf((float)STEP_ROPE_THETA, -(float)(2 * i) / STEP_HEAD_DIM);
  float sn, cs;
  sincosf((float)pos * inv_freq, &sn, &cs);
  pdl_wait_prior();
  pdl_allow_next();
  if (t < STEP_Q / 2) {
    float *qh = q + (t / half) * STEP_HEAD_DIM;
    const float a = qh[i], b = qh[i + half];
    qh[i] = a * cs - b * sn;
    qh[i + half] = b * cs + a * sn;
  } else if (t < (STEP_Q + STEP_KV) / 2) {
    const int h = (t - STEP_Q / 2) / half;
    const float a = k[h * STEP_HEAD_DIM + i], b = k[h * STEP_HEAD_DIM + i + half];
    float *dst = kc + ((size_t)h * s_max + pos) * STEP_HEAD_DIM;
    dst[i] = a * cs - b * sn;
    dst[i + half] = b * cs + a * sn;
  } else if (t < (STEP_Q + STEP_KV) / 2 + STEP_KV) {
    const int u = t - (STEP_Q + STEP_KV) / 2, h = u / STEP_HEAD_DIM;
    vc[((size_t)h * s_max + pos) * STEP_HEAD_DIM + u % STEP_HEAD_DIM] = v[u];
  }
}

// One query head per block over S = pos+1 positions: scores, softmax, Σ p·V.
// Strategy: thread per position for scores (its past key row loaded before the wait:
// the cache below pos is not written by the step), warp per position stripe with lane =
// dimension for P·V. Limiter: latency of the dependent reduction chain.
__global__ void __launch_bounds__(128) step_attention_kernel(const float *q, const float *kc,
                                                        const float *vc, float *out, int S,
                                                        int s_max) {
  extern __shared__ float p_sm[];  // [S] scores, then probabilities
  __shared__ float q_sm[STEP_HEAD_DIM], red_max[4], red_sum[4];
  __shared__ float o_red[4][STEP_HEAD_DIM];
  const int h = blockIdx.x, t = threadIdx.x, lane = t & 31, warp = t >> 5;
  const int kvh = h / (STEP_H / STEP_H_KV);  // HF repeat_kv: q head h reads kv head h/n_rep
  const float *K = kc + (size_t)kvh * s_max * STEP_HEAD_DIM;
  const float *V = vc + (size_t)kvh * s_max * STEP_HEAD_DIM;
  float4 kr[STEP_HEAD_DIM / 4];  // this thread's first key row, if it is a past one
  if (t < S - 1) {
#pragma unroll
    for (int c = 0; c < STEP_HEAD_DIM / 4; c++)
      kr[c] = __ldg((const float4 *)(K + (size_t)t * STEP_HEAD_DIM) + c);
  }
  pdl_wait_prior();
  pdl_allow_next();
  if (t < STEP_HEAD_DIM) q_sm[t] = q[h * STEP_HEAD_DIM + t] * rsqrtf((float)STEP_HEAD_DIM);
  __syncthreads();
  float m = -INFINITY;
  for (int tt = t; tt < S; tt += 128) {
    if (tt != t || tt == S - 1) {  // not prefetched: a later row, or the new one (rope_kv's)
#pragma unroll
      for (int c = 0; c < STEP_HEAD_DIM / 4; c++)
        kr[c] = ((const float4 *)(K + (size_t)tt * STEP_HEAD_DIM))[c];
    }
    float s = 0.f;
#pragma unroll
    for (int c = 0; c < STEP_HEAD_DIM / 4; c++)
      s += q_sm[4 * c] * kr[c].x + q_sm[4 * c + 1] * kr[c].y + q_sm[4 * c + 2] * kr[c].z +
           q_sm[4 * c + 3] * kr[c].w;
    p_sm[tt] = s;
    m = fmaxf(m, s);
  }
  m = warp_max(m);
  if (lane == 0) red_max[warp] = m;
  __syncthreads();
  m = fmaxf(fmaxf(red_max[0], red_max[1]), fmaxf(red_max[2], red_max[3]));
  float l = 0.f;
  for (int tt = t; tt < S; tt += 128) {
    const float e = expf(p_sm[tt] - m);
    p_sm[tt] = e;
    l += e;
  }
  l = block_sum<4>(l, red_sum);  // its __syncthreads also publishes p_sm
  float acc = 0.f;
#pragma unroll 4
  for (int tt = warp; tt < S; tt += 4) acc += p_sm[tt] * V[(size_t)tt * STEP_HEAD_DIM + lane];
  o_red[warp][lane] = acc;
  __syncthreads();
  if (t < STEP_HEAD_DIM)
    out[h * STEP_HEAD_DIM + t] = (o_red[0][t] + o_red[1][t] + o_red[2][t] + o_red[3][t]) / l;
}

// Router: softmax over E logits, top_k (ties to the lower index), weights renormalized to
// sum 1 (HF Mixtral; Qwen3-MoE norm_topk_prob=true). Strategy: one warp, lane = expert.
// Limiter: launch latency.
__global__ void __launch_bounds__(32) step_router_topk_kernel(const float *logits, int *idx,
                                                         float *w) {
  pdl_wait_prior();
  pdl_allow_next();
  const int lane = threadIdx.x;
  const float z = lane < STEP_E ? logits[lane] : -INFINITY;
  const float m = warp_max(z);
  float p = lane < STEP_E ? expf(z - m) : 0.f;
  p /= warp_sum(p);
  float cand = lane < STEP_E ? p : -1.f, val[STEP_TOP_K], sum = 0.f;
  int id[STEP_TOP_K];
#pragma unroll
  for (int j = 0; j < STEP_TOP_K; j++) {
    float bv = cand;
    int bi = lane;
    for (int o = 16; o > 0; o >>= 1) {
      const float ov = __shfl_xor_sync(0xffffffffu, bv, o);
      const int oi = __shfl_xor_sync(0xffffffffu, bi, o);
      if (ov > bv || (ov == bv && oi < bi)) bv = ov, bi = oi;
    }
    val[j] = bv;
    id[j] = bi;
    sum += bv;
    if (lane == bi) cand = -1.f;
  }
  if (lane < STEP_TOP_K) {
#pragma unroll
    for (int j = 0; j < STEP_TOP_K; j++)
      if (j == lane) idx[j] = id[j], w[j] = val[j] / sum;
  }
}

// act[j][f] = silu(Wg_e[f]·h) · (Wu_e[f]·h) for the j-th chosen expert e.
// Strategy: warp per (f, j); weights loaded after the wait (the expert is known only
// then). Limiter: launch + L2 latency.
__global__ void __launch_bounds__(256) step_expert_gate_up_kernel(
    const __nv_bfloat16 *__restrict__ Wg, const __nv_bfloat16 *__restrict__ Wu,
    const float *h, const int *idx, float *act) {
  const int f = blockIdx.x * STEP_ROWS_PER_BLOCK + (threadIdx.x >> 5), j = blockIdx.y;
  pdl_wait_prior();
  pdl_allow_next();
  const size_t row = ((size_t)idx[j] * STEP_F + f) * STEP_D;
  uint4 wg[STEP_D / 256], wu[STEP_D / 256];
  load_row<STEP_D / 256>(wg, Wg + row);
  load_row<STEP_D / 256>(wu, Wu + row);
  const float g = warp_dot_row<STEP_D / 256>(wg, h);
  const float u = warp_dot_row<STEP_D / 256>(wu, h);
  if ((threadIdx.x & 31) == 0) act[j * STEP_F + f] = g / (1.f + expf(-g)) * u;
}

// ys[j][d] = Wd_e[d] · act[j]. Strategy: warp per (d, j), K = F. Limiter: as above.
__global__ void __launch_bounds__(256) step_expert_down_kernel(const __nv_bfloat16 *__restrict__ Wd,
                                                          const float *act, const int *idx,
                                                          float *ys) {
  const int d = blockIdx.x * STEP_ROWS_PER_BLOCK + (threadIdx.x >> 5), j = blockIdx.y;
  pdl_wait_prior();
  pdl_allow_next();
  uint4 w[STEP_F / 256];
  load_row<STEP_F / 256>(w, Wd + ((size_t)idx[j] * STEP_D + d) * STEP_F);
  const float y = warp_dot_row<STEP_F / 256>(w, act + j * STEP_F);
  if ((threadIdx.x & 31) == 0) ys[j * STEP_D + d] = y;
}

// x += Σ_j w_j · ys[j] (fixed order: deterministic, no atomics). Strategy: thread per
// element. Limiter: launch latency.
__global__ void __launch_bounds__(STEP_D) step_moe_combine_kernel(const float *ys, const float *w,
                                                             float *x) {
  pdl_wait_prior();
  pdl_allow_next();
  float acc = 0.f;
#pragma unroll
  for (int j = 0; j < STEP_TOP_K; j++) acc += w[j] * ys[j * STEP_D + threadIdx.x];
  x[threadIdx.x] = x[threadIdx.x] + acc;
}

// Greedy next token: argmax of n logits, ties to the lower index. Strategy: one block of
// 1024 threads, strided scan then (value, index) tree. Limiter: launch latency.
__global__ void __launch_bounds__(1024) step_argmax_kernel(const float *logits, int n, int *out) {
  __shared__ float bv_sm[32];
  __shared__ int bi_sm[32];
  pdl_wait_prior();
  pdl_allow_next();
  float bv = -INFINITY;
  int bi = 0x7fffffff;
  for (int i = threadIdx.x; i < n; i += blockDim.x)
    if (logits[i] > bv) bv = logits[i], bi = i;
  for (int pass = 0; pass < 2; pass++) {
    for (int o = 16; o > 0; o >>= 1) {
      const float ov = __shfl_xor_sync(0xffffffffu, bv, o);
      const int oi = __shfl_xor_sync(0xffffffffu, bi, o);
      if (ov > bv || (ov == bv && oi < bi)) bv = ov, bi = oi;
    }
    if (pass == 1) break;
    if ((threadIdx.x & 31) == 0) bv_sm[threadIdx.x >> 5] = bv, bi_sm[threadIdx.x >> 5] = bi;
    __syncthreads();
    const int nw = blockDim.x >> 5;
    bv = threadIdx.x < nw ? bv_sm[threadIdx.x] : -INFINITY;
    bi = threadIdx.x < nw ? bi_sm[threadIdx.x] : 0x7fffffff;
  }
  if (threadIdx.x == 0) *out = bi;
}

