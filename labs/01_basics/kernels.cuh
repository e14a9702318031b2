// kernels.cuh — layer 01's device side: the expert plan's host/device functions (the host
// test, plan_test.cpp, runs them) and the layer's kernels: the one-block expert plan
// (lab01_expert_plan_kernel: tokens grouped by expert, the batched GEMMs' pointer arrays),
// the hi/lo bf16 split of activation rows and the sum of the two GEMM halves (+ bias), the
// SwiGLU between the expert GEMMs and the weighted combine. No launches; layer.cuh holds
// the arena, the cuBLAS calls and the stages.
#pragma once
#include <cuda_bf16.h>
#include <stdint.h>

#include "../00_baseline/kernels.cuh"  // lab00_glu: the expert activation (gpt-oss's clamped SwiGLU)

constexpr int kLab01Threads = 128;      // element-wise kernels: blocks of 128 threads
constexpr int kLab01PlanThreads = 256;  // the plan kernel: one block
constexpr int kLab01MaxExperts = 1024;  // ch06's router_topk_any_launch bound (and the plan's shared counts)
constexpr int kLab01WPtrs = 6;          // pointers per expert: gate, up, down, their biases (NULL: none)
constexpr int kLab01PtrArrays = 11;     // the plan's pointer arrays per group (lab01_expert_plan_kernel)

// ---- the expert plan: host/device functions (the host test, plan_test.cpp, runs them) ----
// The routing of a step is the frame's top-k: idx[b·top_k + j] (expert of token b's j-th
// choice), n = B·top_k entries. A group g holds one expert's rows: tokens tok[g·cap + t]
// for t < count[g]; entry i of the top-k sits in row slot[i] = g·cap + t.

/** Tokens routed to expert x: entries of idx[0..n) equal to x. */
__host__ __device__ inline int lab01_plan_count(const int32_t *idx, int n, int x) {
  int c = 0;
  for (int i = 0; i < n; i++) c += idx[i] == x;
  return c;
}

/** Fill group g with expert x's rows, in entry order (ascending token): tok, wt [cap]
 *  (entry i's token i / top_k and weight w[i]), and slot[i] = g·cap + t for those
 *  entries. Returns the rows written. */
__host__ __device__ inline int lab01_plan_fill(const int32_t *idx, const float *w, int n, int top_k, int x, int g,
                                               int cap, int32_t *tok, float *wt, int32_t *slot) {
  int t = 0;
  for (int i = 0; i < n; i++)
    if (idx[i] == x) {
      tok[(size_t)g * cap + t] = i / top_k;
      wt[(size_t)g * cap + t] = w[i];
      slot[i] = g * cap + t;
      t++;
    }
  return t;
}

/** The group of routed expert x: how many routed experts (count > 0) precede it. */
__host__ __device__ inline int lab01_plan_rank(const int *count, int x) {
  int r = 0;
  for (int y = 0; y < x; y++) r += count[y] > 0;
  return r;
}

/** The expert whose weights group g reads: the g-th routed expert, or for a padding group
 *  (g >= n_routed) the last routed one, whose rows are zero and whose output is ignored. */
__host__ __device__ inline int lab01_plan_group_expert(const int *expert, int n_routed, int g) {
  return g < n_routed ? expert[g] : expert[n_routed - 1];
}

// ---- kernels ----------------------------------------------------------------------------
// Row index of a logical expert row s = g·cap + t among the groups' GEMM rows ([G][2·cap]:
// the hi rows 0 … cap-1, then the lo rows); its lo row is cap further.
__host__ __device__ inline size_t lab01_hi_row(size_t s, int cap) { return s + s / cap * cap; }

// The split of x into two bf16 parts: hi = bf16(x), lo = bf16(x - hi).
__device__ __forceinline__ void lab01_split(float x, __nv_bfloat16 *hi, __nv_bfloat16 *lo) {
  const __nv_bfloat16 h = __float2bfloat16(x);
  *hi = h;
  *lo = __float2bfloat16(x - __bfloat162float(h));
}

// in [rows][K] fp32 (n = rows·K) → out [2·rows][K] bf16: hi rows, then lo rows.
// Strategy: grid-stride, thread per element. Limiter: latency.
__global__ void lab01_split_bf16_kernel(const float *in, __nv_bfloat16 *out, size_t n) {
  for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x)
    lab01_split(in[i], &out[i], &out[n + i]);
}

// out_j[b][c] (+)= s[b][c0 + c] + s[rows + b][c0 + c] (+ bias_j[c]): the hi and lo GEMM
// outputs added, for up to three column ranges of s ([2·rows][ld] fp32) into out0/1/2
// ([rows][n_j]), with each range's bias (bf16 [n_j], or NULL: none).
// Strategy: grid-stride, thread per output. Limiter: latency.
__global__ void lab01_sum_halves_kernel(const float *s, int ld, int rows, float *out0, int n0, float *out1, int n1,
                                        float *out2, int n2, const __nv_bfloat16 *bias0, const __nv_bfloat16 *bias1,
                                        const __nv_bfloat16 *bias2, int accumulate) {
  const int n = n0 + n1 + n2;
  for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < (size_t)rows * n;
       i += (size_t)gridDim.x * blockDim.x) {
    const int b = (int)(i / n), c = (int)(i % n);
    float v = s[(size_t)b * ld + c] + s[((size_t)rows + b) * ld + c];
    const int j = c < n0 ? 0 : c < n0 + n1 ? 1 : 2, cj = j == 0 ? c : j == 1 ? c - n0 : c - n0 - n1;
    const __nv_bfloat16 *bias = j == 0 ? bias0 : j == 1 ? bias1 : bias2;
    if (bias) v += __bfloat162float(bias[cj]);
    float *o = (j == 0 ? out0 + (size_t)b * n0 : j == 1 ? out1 + (size_t)b * n1 : out2 + (size_t)b * n2) + cj;
    *o = accumulate ? *o + v : v;
  }
}

// The device plan of one layer: groups (expert, rows, tokens, weights), every top-k
// entry's row, and the batched GEMMs' pointer arrays (wl: the layer's [E][kLab01WPtrs]
// gate, up, down weight pointers, then their biases, NULL outside gpt-oss). Strategy: one block; thread per expert for counts, ranks and
// fills (serial scans of the B·top_k entries), thread per group for the pointers.
// Limiter: latency (one block, O(E·B·top_k / threads) work: small at decode batches).
__global__ void __launch_bounds__(kLab01PlanThreads)
    lab01_expert_plan_kernel(const int32_t *idx, const float *w, int n, int top_k, int E, int G, int cap,
                             const __nv_bfloat16 *const *wl, int32_t *g_count, int32_t *g_tok, float *g_wt,
                             int32_t *slot, const __nv_bfloat16 *xg, float *gu, const __nv_bfloat16 *hb, float *yg,
                             int D, int F, const void **p) {
  __shared__ int count[kLab01MaxExperts], expert[kLab01MaxExperts], n_routed;
  if (threadIdx.x == 0) n_routed = 0;
  for (int x = threadIdx.x; x < E; x += blockDim.x) count[x] = lab01_plan_count(idx, n, x);
  __syncthreads();
  for (int x = threadIdx.x; x < E; x += blockDim.x)
    if (count[x]) {
      const int g = lab01_plan_rank(count, x);
      expert[g] = x;
      g_count[g] = lab01_plan_fill(idx, w, n, top_k, x, g, cap, g_tok, g_wt, slot);
      atomicAdd(&n_routed, 1);
    }
  __syncthreads();
  for (int g = threadIdx.x; g < G; g += blockDim.x) {
    const int x = lab01_plan_group_expert(expert, n_routed, g);
    if (g >= n_routed) g_count[g] = 0;  // a padding group: zero rows, output ignored
    const size_t r = (size_t)g * 2 * cap;  // the group's first GEMM row
    const __nv_bfloat16 *const *wx = wl + (size_t)kLab01WPtrs * x;
    p[0 * G + g] = wx[0];                // A: gate (fused gate+up when contiguous)
    p[1 * G + g] = wx[1];                // A: up
    p[2 * G + g] = wx[2];                // A: down
    p[3 * G + g] = xg + r * D;           // B of gate/up: the group's rows, bf16 [2·cap][D]
    p[4 * G + g] = gu + r * 2 * F;       // C of gate: [2·cap][2F] fp32, gate in [0, F)
    p[5 * G + g] = gu + r * 2 * F + F;   // C of up: in [F, 2F)
    p[6 * G + g] = hb + r * F;           // B of down: SwiGLU rows, bf16 [2·cap][F]
    p[7 * G + g] = yg + r * D;           // C of down: [2·cap][D] fp32
    p[8 * G + g] = wx[3];                // gate bias [F] (or NULL)
    p[9 * G + g] = wx[4];                // up bias [F]
    p[10 * G + g] = wx[5];               // down bias [D]
  }
}

// The groups' GEMM rows from the normalized rows xn [B][D] fp32: logical row g·cap + t
// is token g_tok's row split into hi and lo, zero past count[g]. Strategy: grid-stride,
// thread per element of the logical rows (G·cap·D). Limiter: latency.
__global__ void lab01_expert_gather_kernel(const float *xn, const int32_t *g_count, const int32_t *g_tok,
                                           __nv_bfloat16 *xg, int D, int cap, size_t rows) {
  for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < rows * D; i += (size_t)gridDim.x * blockDim.x) {
    const size_t s = i / D, d = i % D, hi = lab01_hi_row(s, cap);
    const float x = (int)(s % cap) < g_count[s / cap] ? xn[(size_t)g_tok[s] * D + d] : 0.f;
    lab01_split(x, &xg[hi * D + d], &xg[(hi + cap) * D + d]);
  }
}

// h = lab00_glu(gate, up) (silu(gate) · up, or gpt-oss's clamped SwiGLU) with gate and up
// the sums of the hi and lo outputs plus the group's biases (bg, bu: the plan's per-group
// pointer arrays, entries NULL outside gpt-oss), split again into hb's hi and lo rows for
// the down GEMM. gu [G][2·cap][2F], hb [G][2·cap][F]; rows = G·cap logical rows.
// Strategy: thread per element. Limiter: latency.
__global__ void lab01_swiglu_kernel(const float *gu, __nv_bfloat16 *hb, int F, int cap, size_t rows,
                                    const __nv_bfloat16 *const *bg, const __nv_bfloat16 *const *bu, int clamp,
                                    float lim, float alpha) {
  const size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
  if (i >= rows * F) return;
  const size_t hi = lab01_hi_row(i / F, cap), lo = hi + cap, f = i % F, g = i / F / cap;
  float a = gu[hi * 2 * F + f] + gu[lo * 2 * F + f], c = gu[hi * 2 * F + F + f] + gu[lo * 2 * F + F + f];
  if (bg[g]) a += __bfloat162float(bg[g][f]);
  if (bu[g]) c += __bfloat162float(bu[g][f]);
  lab01_split(lab00_glu(a, c, clamp, lim, alpha), &hb[hi * F + f], &hb[lo * F + f]);
}

// x[b][d] += Σ_j w[b][j] · (y[slot[b][j]][d] + bd_g[d]), y the sum of the hi and lo rows
// of yg ([G][2·cap][D]), bd_g the down bias of the slot's group g = slot / cap (the plan's
// pointer array, entries NULL outside gpt-oss): the bias is part of the expert's output,
// so it is weighted with it (00's order). Each token gathers its top_k expert rows (no
// scatter, no atomics, the same order every step). Strategy: thread per element, grid
// (D, B). Limiter: latency.
__global__ void lab01_expert_combine_kernel(const float *yg, const int32_t *slot, const float *w, float *x, int D,
                                            int top_k, int cap, const __nv_bfloat16 *const *bd) {
  const int d = blockIdx.x * blockDim.x + threadIdx.x, b = blockIdx.y;
  if (d >= D) return;
  float acc = 0.f;
  for (int j = 0; j < top_k; j++) {
    const int s = slot[(size_t)b * top_k + j];
    const size_t hi = lab01_hi_row((size_t)s, cap);
    const __nv_bfloat16 *bias = bd[s / cap];
    acc += w[(size_t)b * top_k + j] *
           (yg[hi * D + d] + yg[(hi + cap) * D + d] + (bias ? __bfloat162float(bias[d]) : 0.f));
  }
  x[(size_t)b * D + d] += acc;
}
