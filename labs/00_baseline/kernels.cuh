// kernels.cuh — layer 00's kernels (the chapters' baselines): embedding rows, block-per-row
// RMSNorm, the thread-per-output-row GEMV, RoPE + KV append (contiguous or a sliding-window
// ring), attention as three kernels (scores, softmax with sinks, A·V), and the expert
// path (gather, SwiGLU up with gpt-oss's clamp, down, combine), with their device helpers
// (lab00_row_rms_inv, lab00_glu, lab00_kv_slot, …) that later layers reuse. Kernels only,
// no launches; the stages that launch them are in layer.cuh.
#pragma once
#include <cuda_bf16.h>
#include <math.h>
#include <stdint.h>

constexpr int kLab00Threads = 128;  // every kernel of the layer: blocks of 128 threads
constexpr int kLab00MaxHalf = 128;  // RoPE pairs per head the kernel's table holds (head_dim <= 256)

// RoPE of one layer, passed by value: the inverse frequency of each pair (θ^(−2i/hd), or
// YaRN's; moe_rope_inv_freq) and the factor on cos and sin (1, or YaRN's mscale).
typedef struct {
  double inv_freq[kLab00MaxHalf];
  double scale;
} Lab00Rope;


// Strategy: thread per element. Limiter: launch latency.
__global__ void embed_rows_kernel(const __nv_bfloat16 *__restrict__ emb, const int *tok, float *x, int D) {
  const int d = blockIdx.x * blockDim.x + threadIdx.x;
  if (d < D) x[(size_t)blockIdx.y * D + d] = __bfloat162float(emb[(size_t)tok[blockIdx.y] * D + d]);
}

// 1 / sqrt(mean(xr²) + eps) of one row of n, by a block of kLab00Threads: strided sum of
// squares, shared-memory tree (red: kLab00Threads floats). Shared with layer 02's fused norm.
__device__ __forceinline__ float lab00_row_rms_inv(const float *xr, int n, float eps, float *red) {
  float ss = 0.f;
  for (int i = threadIdx.x; i < n; i += kLab00Threads) ss += xr[i] * xr[i];
  red[threadIdx.x] = ss;
  __syncthreads();
  for (int s = kLab00Threads / 2; s > 0; s >>= 1) {
    if (threadIdx.x < s) red[threadIdx.x] += red[threadIdx.x + s];
    __syncthreads();
  }
  return rsqrtf(red[0] / n + eps);
}

// out[row] = w ⊙ x[row] / sqrt(mean(x[row]²) + eps), rows of n (in place allowed).
// Strategy: block per row, strided loop, shared-memory tree sum. Limiter: latency.
__global__ void rmsnorm_blockrow_kernel(const float *x, const __nv_bfloat16 *__restrict__ w, float *out, int n, float eps) {
  __shared__ float red[kLab00Threads];
  const float *xr = x + (size_t)blockIdx.x * n;
  const float inv = lab00_row_rms_inv(xr, n, eps, red);
  for (int i = threadIdx.x; i < n; i += kLab00Threads)
    out[(size_t)blockIdx.x * n + i] = __bfloat162float(w[i]) * (xr[i] * inv);
}

// out[b][n] (+)= Σ_k W[n][k] · in[b][k] (+ bias[n] when bias is not NULL). Strategy:
// thread per output, serial loop over K (adjacent threads read adjacent rows: 32 rows
// per warp load). Limiter: uncoalesced weight reads, and for N of a few thousand too few
// threads to fill the GPU.
__global__ void gemv_threadrow_kernel(const __nv_bfloat16 *__restrict__ W, const __nv_bfloat16 *__restrict__ bias,
                                      const float *in, float *out, int N, int K, int accumulate) {
  const int n = blockIdx.x * blockDim.x + threadIdx.x;
  if (n >= N) return;
  const __nv_bfloat16 *w = W + (size_t)n * K;
  const float *x = in + (size_t)blockIdx.y * K;
  float acc = 0.f;
  for (int k = 0; k < K; k++) acc += __bfloat162float(w[k]) * x[k];
  if (bias) acc += __bfloat162float(bias[n]);
  float *o = out + (size_t)blockIdx.y * N + n;
  *o = accumulate ? *o + acc : acc;
}

/** Row of key t in a layer's KV cache: t, or on a sliding-window layer (ring > 0: the
 *  layer keeps ring positions) slot t mod ring. The window's keys pos − ring < t <= pos
 *  land in distinct slots, and the step's own key overwrites the one that left it. */
__host__ __device__ inline int lab00_kv_slot(int t, int ring) { return ring > 0 ? t % ring : t; }

/** The first key the query at pos reads under a sliding window of w keys (w <= 0: none):
 *  pos − w + 1 once pos >= w, else 0 (key k visible iff pos − w < k <= pos). On the host
 *  through lab00_first_key; on the device where the position lives there. */
__host__ __device__ inline int lab00_window_first(int pos, int64_t w) {
  return w > 0 && pos - w + 1 > 0 ? (int)(pos - w + 1) : 0;
}

// Rotate-half RoPE of q (in place) and k, then K and V of position pos into row `slot`
// of the layer's cache [B][H_kv][kv_len][hd]. Angle pos·inv_freq[i] in double, cos and
// sin times rope.scale. Strategy: thread per (row, head, pair i / i + hd/2). Limiter:
// latency.
// One (row b, head, pair j / j + hd/2) of RoPE + append, element i of the row's
// (H + H_kv)·hd/2: rotate q in place, or rotate k into the cache row `slot` of kv_len and
// copy v beside it. Shared by this kernel and layer 04's (which reads pos on the device).
__device__ __forceinline__ void lab00_rope_append_one(float *q, const float *k, const float *v, float *kc, float *vc,
                                                      int H, int H_kv, int hd, int b, int i, int pos, int slot,
                                                      int kv_len, const Lab00Rope &rope) {
  const int half = hd / 2, head = i / half, j = i % half;
  double sn, cs;
  sincos(pos * rope.inv_freq[j], &sn, &cs);
  const float c = (float)(rope.scale * cs), s = (float)(rope.scale * sn);
  if (head < H) {
    float *h = q + ((size_t)b * H + head) * hd;
    const float x0 = h[j], x1 = h[j + half];
    h[j] = x0 * c - x1 * s;
    h[j + half] = x1 * c + x0 * s;
    return;
  }
  const int kh = head - H;
  const float *kk = k + ((size_t)b * H_kv + kh) * hd, *vv = v + ((size_t)b * H_kv + kh) * hd;
  const size_t at = (((size_t)b * H_kv + kh) * kv_len + slot) * hd;
  kc[at + j] = kk[j] * c - kk[j + half] * s;
  kc[at + j + half] = kk[j + half] * c + kk[j] * s;
  vc[at + j] = vv[j];
  vc[at + j + half] = vv[j + half];
}

__global__ void rope_kv_append_kernel(float *q, const float *k, const float *v, float *kc, float *vc, int H, int H_kv,
                               int hd, int pos, int slot, int kv_len, Lab00Rope rope) {
  const int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i >= (H + H_kv) * (hd / 2)) return;
  lab00_rope_append_one(q, k, v, kc, vc, H, H_kv, hd, blockIdx.y, i, pos, slot, kv_len, rope);
}

// scores[b][h][t] = q·K[t] / sqrt(hd), t0 <= t <= pos (t0 > 0: a sliding window's first
// key); scores rows of max_len, K[t] in row lab00_kv_slot(t, ring) of the layer's cache
// [B][H_kv][kv_len][hd]. Strategy: thread per score. Limiter: latency.
__global__ void attn_score_kernel(const float *q, const float *kc, float *scores, int H, int H_kv, int hd,
                                  int t0, int pos, int max_len, int kv_len, int ring) {
  const int t = t0 + blockIdx.x * blockDim.x + threadIdx.x, bh = blockIdx.y, b = bh / H, h = bh % H;
  if (t > pos) return;
  const float *qq = q + (size_t)bh * hd;
  const float *kk = kc + (((size_t)b * H_kv + h / (H / H_kv)) * kv_len + lab00_kv_slot(t, ring)) * hd;
  float s = 0.f;
  for (int d = 0; d < hd; d++) s += qq[d] * kk[d];
  scores[(size_t)bh * max_len + t] = s * rsqrtf((float)hd);
}

// Softmax over t0 <= t <= pos of each (b, h) row; with sinks (gpt-oss), head h's sink
// logit joins the softmax and is dropped (no value): p_t = e^(s_t − m) / (Σ e^(s − m) +
// e^(sink − m)), m the max over the scores and the sink. Strategy: thread per row, three
// serial passes.
__global__ void attn_softmax_kernel(float *scores, const __nv_bfloat16 *__restrict__ sinks, int rows, int H, int t0,
                                    int pos, int max_len) {
  const int r = blockIdx.x * blockDim.x + threadIdx.x;
  if (r >= rows) return;
  float *s = scores + (size_t)r * max_len, mx = -INFINITY, sum = 0.f;
  const float sink = sinks ? __bfloat162float(sinks[r % H]) : -INFINITY;
  for (int t = t0; t <= pos; t++) mx = fmaxf(mx, s[t]);
  mx = fmaxf(mx, sink);
  for (int t = t0; t <= pos; t++) sum += (s[t] = __expf(s[t] - mx));
  if (sinks) sum += __expf(sink - mx);
  for (int t = t0; t <= pos; t++) s[t] /= sum;
}

// att[b][h][d] = Σ_{t0 <= t <= pos} p[t] · V[t][d], V[t] in row lab00_kv_slot(t, ring) of
// the layer's cache [B][H_kv][kv_len][hd]. Strategy: thread per output, serial loop over t.
__global__ void attn_av_kernel(const float *scores, const float *vc, float *att, int H, int H_kv, int hd,
                               int t0, int pos, int max_len, int kv_len, int ring) {
  const int i = blockIdx.x * blockDim.x + threadIdx.x, b = blockIdx.y;
  if (i >= H * hd) return;
  const int h = i / hd, d = i % hd;
  const float *p = scores + ((size_t)b * H + h) * max_len;
  const float *vv = vc + (((size_t)b * H_kv + h / (H / H_kv)) * kv_len) * hd + d;
  float acc = 0.f;
  for (int t = t0; t <= pos; t++) acc += p[t] * vv[(size_t)lab00_kv_slot(t, ring) * hd];
  att[(size_t)b * H * hd + i] = acc;
}

// xs[i] = xn[idx[i]]. Strategy: thread per element. Limiter: latency.
__global__ void expert_gather_kernel(const float *xn, const int *idx, float *xs, int D) {
  const int d = blockIdx.x * blockDim.x + threadIdx.x;
  if (d < D) xs[(size_t)blockIdx.y * D + d] = xn[(size_t)idx[blockIdx.y] * D + d];
}

/** The expert activation of gate g and up u (biases already added): silu(g) · u, or with
 *  clamp (gpt-oss's clamped SwiGLU): g' = min(g, lim), u' = clamp(u, −lim, lim),
 *  (u' + 1) · g' · sigmoid(alpha · g'). Shared by every layer's expert kernels. */
__device__ __forceinline__ float lab00_glu(float g, float u, int clamp, float lim, float alpha) {
  if (!clamp) return g / (1.f + __expf(-g)) * u;
  g = fminf(g, lim);
  u = fminf(fmaxf(u, -lim), lim);
  return (u + 1.f) * g / (1.f + __expf(-alpha * g));
}

// g = Wg[f]·xs[i] (+ bg[f]), u = Wu[f]·xs[i] (+ bu[f]); h[i][f] = lab00_glu(g, u).
// Strategy: thread per output, two serial dots.
__global__ void expert_swiglu_up_kernel(const __nv_bfloat16 *__restrict__ Wg, const __nv_bfloat16 *__restrict__ Wu,
                                        const __nv_bfloat16 *__restrict__ bg, const __nv_bfloat16 *__restrict__ bu,
                                        const float *xs, float *h, int F, int D, int clamp, float lim, float alpha) {
  const int f = blockIdx.x * blockDim.x + threadIdx.x;
  if (f >= F) return;
  const __nv_bfloat16 *g = Wg + (size_t)f * D, *u = Wu + (size_t)f * D;
  const float *x = xs + (size_t)blockIdx.y * D;
  float a = 0.f, c = 0.f;
  for (int k = 0; k < D; k++) {
    a += __bfloat162float(g[k]) * x[k];
    c += __bfloat162float(u[k]) * x[k];
  }
  if (bg) {
    a += __bfloat162float(bg[f]);
    c += __bfloat162float(bu[f]);
  }
  h[(size_t)blockIdx.y * F + f] = lab00_glu(a, c, clamp, lim, alpha);
}

// x[idx[i]] += wt[i] · ys[i] (a token appears once per expert: no races). Thread per element.
__global__ void expert_combine_kernel(const float *ys, const int *idx, const float *wt, float *x, int D) {
  const int d = blockIdx.x * blockDim.x + threadIdx.x;
  if (d < D) x[(size_t)idx[blockIdx.y] * D + d] += wt[blockIdx.y] * ys[(size_t)blockIdx.y * D + d];
}
