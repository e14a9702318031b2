// layer.cuh — layer 02 of the lab: layer 01's stage table (lab01_ops()) with the stages
// chapters 07–08 improve replaced. decode.cu runs it; a later layer starts from
// lab02_ops() the same way.
//
// What it replaces (everything else is 01's: ch06's GPU top-k, the device expert plan,
// the arena, the cuBLAS handle; and 00's: embed, RoPE + KV append, attention, the host
// sampler, the fp32 contiguous KV cache):
//   bandwidth-bound GEMV at small batch  q, k, v, o, router and lm_head through ch08's
//                                    gemv_warprow_launch (ch08/gemv.cuh): a warp per
//                                    weight row, 16-byte streaming loads, every weight used
//                                    for all the batch's rows while in registers; the
//                                    experts through lab02_expert_gemv_kernel, the same
//                                    strategy on ch08's load and unpack helpers, with the
//                                    matrices read from 01's device plan (below). At batch
//                                    > kLab02GemvMaxBatch, 01's cuBLAS calls as before (ch08)
//   coalesced dispatch               the normalized rows, already split to bf16 by the
//                                    router, scattered to their expert groups by ch07's
//                                    permute_warptoken_launch (warp per token, 16 bytes per
//                                    lane, row read once, written top_k times) in place of
//                                    01's thread-per-element gather (ch07)
//   coalesced combine                each token gathers its top_k expert rows with 16-byte
//                                    (float4) loads and stores (ch07)
//   fused RMSNorm + split            the row read once, written as fp32 and as bf16 hi + lo
//                                    in one kernel where 01 ran two (ch07: read once)
// Why the experts need their own GEMV kernel: ch08's launcher takes its matrices by value
// from the host (a GemvBatch in the kernel's parameters), but which experts a step reads
// is known only on the GPU (01's plan kernel writes them, with no host synchronize).
//
// Split rows, interleaved. Every fp32 activation row x still enters as two bf16 rows,
// hi = bf16(x) and lo = bf16(x - hi) (01's lab01_split; why: 01's layer.cuh), but here a
// token's two rows are adjacent: row r of [R][K] fp32 becomes rows 2r (hi) and 2r + 1
// (lo) of [2R][K] bf16, i.e. one [hi | lo] row of 2K. That makes the dispatch one ch07
// permute of 2K-wide rows into 01's groups: logical expert row s = g·cap + t (01's slot)
// lands at rows 2s and 2s + 1 of xg. The same order holds in gu, hb and yg, at every batch
// (the cuBLAS path too: a GEMM's output columns do not care about their order).
// ch08's kernel takes at most GEMV_MAX_BATCH (8) rows: 2 per token, so the GEMV path
// serves batches up to 4. Each projection writes its outputs packed ([2B][N_m] per
// matrix, one after the other in 01's scratch s), and one kernel adds hi and lo.
// bf16 weights, fp32 accumulation, residual, KV and softmax; Mixtral, Qwen3-MoE and
// gpt-oss semantics: the q/k/v, o and router biases join where hi and lo are summed
// (lab02_sum_split_kernel), the expert biases and the clamped SwiGLU in
// lab02_swiglu_kernel (00's lab00_glu), the down bias weighted in the combine, from the
// bias pointers of 01's plan; 00's stages kept here carry the rest (YaRN, sinks, window).
#pragma once
#include "../01_basics/layer.cuh"
#include "../../ch07/permute.cuh"
#include "../../ch08/gemv.cuh"
#include "../../ch12/launch.cuh"  // pdl_wait_prior, pdl_allow_next (layer 04's programmatic edges)

constexpr int kLab02GemvMaxBatch = GEMV_MAX_BATCH / 2;  // tokens per GEMV: hi + lo rows each
constexpr int kLab02GemvThreads = 256;                  // the expert GEMV: 8 warps per block, as ch08's

/** 1 when a batch of B tokens runs its projections as GEMVs (ch08), 0 for cuBLAS (01). */
__host__ __device__ inline int lab02_use_gemv(int B) { return B <= kLab02GemvMaxBatch; }

/** The hi row of logical row s in the interleaved split layout; its lo row is the next. */
__host__ __device__ inline size_t lab02_hi_row(size_t s) { return 2 * s; }

/** Offset of matrix j (0..2) in the packed scratch: 2·rows rows of n0, then of n1. */
__host__ __device__ inline size_t lab02_packed_base(int j, int rows, int n0, int n1) {
  return (size_t)2 * rows * (j == 0 ? 0 : j == 1 ? n0 : n0 + n1);
}

/** Output (b, c) of up to three projections packed in one scratch (matrix j's outputs
 *  [2·rows][n_j] after matrix j-1's): the matrix j holding column c of the concatenated
 *  n0 + n1 + n2 columns; *hi = offset in the scratch of its hi value (the lo value is n_j
 *  further), *o = offset in out_j ([rows][n_j]). Host-tested in plan_test.cpp. */
__host__ __device__ inline int lab02_packed_at(int b, int c, int rows, int n0, int n1, int n2, size_t *hi,
                                               size_t *o) {
  const int j = c < n0 ? 0 : c < n0 + n1 ? 1 : 2;
  const int nj = j == 0 ? n0 : j == 1 ? n1 : n2, cj = j == 0 ? c : j == 1 ? c - n0 : c - n0 - n1;
  *hi = lab02_packed_base(j, rows, n0, n1) + lab02_hi_row(b) * nj + cj;
  *o = (size_t)b * nj + cj;
  return j;
}

// ---- kernels ----------------------------------------------------------------------------
// out[row] = w ⊙ x[row] / sqrt(mean(x[row]²) + eps) (00's rmsnorm_blockrow_kernel, the
// same arithmetic in the same order), written as fp32 into xn (may be NULL) and as the
// interleaved split into xb ([2·rows][n] bf16). Strategy: block per row of kLab00Threads,
// shared-memory tree sum, the row read from global memory once per pass. Limiter: latency.
__global__ void lab02_rmsnorm_split_kernel(const float *x, const __nv_bfloat16 *__restrict__ w, float *xn,
                                           __nv_bfloat16 *xb, int n, float eps) {
  __shared__ float red[kLab00Threads];
  pdl_wait_prior();  // PDL (ch12): what earlier kernels of the step wrote is visible after this
  pdl_allow_next();
  const float *xr = x + (size_t)blockIdx.x * n;
  const float inv = lab00_row_rms_inv(xr, n, eps, red);  // 00's arithmetic, same order
  __nv_bfloat16 *hi = xb + lab02_hi_row(blockIdx.x) * n;
  for (int i = threadIdx.x; i < n; i += kLab00Threads) {
    const float v = __bfloat162float(w[i]) * (xr[i] * inv);
    if (xn) xn[(size_t)blockIdx.x * n + i] = v;
    lab01_split(v, &hi[i], &hi[n + i]);
  }
}

// in [rows][K] fp32 (n = rows·K) → out [2·rows][K] bf16, interleaved (hi, lo per row).
// Strategy: grid-stride, thread per element. Limiter: latency.
__global__ void lab02_split_kernel(const float *in, __nv_bfloat16 *out, int K, size_t n) {
  pdl_wait_prior();  // PDL (ch12): what earlier kernels of the step wrote is visible after this
  pdl_allow_next();
  for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x) {
    const size_t hi = lab02_hi_row(i / K) * K + i % K;
    lab01_split(in[i], &out[hi], &out[hi + K]);
  }
}

// out_j[b][c] (+)= s_j[2b][c] + s_j[2b + 1][c] (+ bias_j[c]) for up to three matrices'
// outputs packed in s: s_0 = s ([2·rows][n0]), s_1 right after it ([2·rows][n1]), then
// s_2; bias_j bf16 [n_j] or NULL (none). Strategy: grid-stride, thread per output.
// Limiter: latency.
__global__ void lab02_sum_split_kernel(const float *s, int rows, float *out0, int n0, float *out1, int n1,
                                       float *out2, int n2, const __nv_bfloat16 *bias0, const __nv_bfloat16 *bias1,
                                       const __nv_bfloat16 *bias2, int accumulate) {
  pdl_wait_prior();  // PDL (ch12): what earlier kernels of the step wrote is visible after this
  pdl_allow_next();
  const int n = n0 + n1 + n2;
  for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < (size_t)rows * n;
       i += (size_t)gridDim.x * blockDim.x) {
    size_t hi, at;
    const int j = lab02_packed_at((int)(i / n), (int)(i % n), rows, n0, n1, n2, &hi, &at);
    const int nj = j == 0 ? n0 : j == 1 ? n1 : n2;
    const __nv_bfloat16 *bias = j == 0 ? bias0 : j == 1 ? bias1 : bias2;
    const float v = s[hi] + s[hi + nj] + (bias ? __bfloat162float(bias[at % nj]) : 0.f);
    float *p = (j == 0 ? out0 : j == 1 ? out1 : out2) + at;
    *p = accumulate ? *p + v : v;
  }
}

// y_g[r][n] = Σ_k W_g[n][k] · x_g[r][k] for every expert group g < G with count[g] > 0,
// r < R rows (2·cap: the group's hi and lo rows), n < N: rows n < Na of W_g from Wa[g],
// rows n >= Na from Wb[g] (gate, then up; for down Na = N). W bf16 [rows][K], x_g bf16
// [R][K], y_g fp32 rows of ldy; the pointer arrays are 01's plan's (device memory).
// Strategy: ch08's (gemv_warprow_kernel): warp per output row over a one-wave grid,
// 16-byte streaming loads (gemv_ld_stream), ILP loads in flight per lane, each weight used
// for all R rows, shuffle reduction; padding groups (count 0) read nothing.
// Limiter: DRAM read bandwidth.
template <int R, int ILP>
__global__ void __launch_bounds__(kLab02GemvThreads)
    lab02_expert_gemv_kernel(const void *const *Wa, const void *const *Wb, int Na, int N, int K,
                             const void *const *X, void *const *Y, int ldy, const int32_t *g_count, int G) {
  const int lane = threadIdx.x & 31, K8 = K >> 3;
  const int64_t rows = (int64_t)G * N, warps = ((int64_t)gridDim.x * blockDim.x) >> 5;
  for (int64_t row = ((int64_t)blockIdx.x * blockDim.x + threadIdx.x) >> 5; row < rows; row += warps) {
    const int g = (int)(row / N), n = (int)(row % N);
    if (g_count[g] == 0) continue;  // the whole warp skips: its output is never read
    const uint4 *w = n < Na ? (const uint4 *)Wa[g] + (int64_t)n * K8 : (const uint4 *)Wb[g] + (int64_t)(n - Na) * K8;
    const uint4 *x = (const uint4 *)X[g];
    float acc[R];
    gemv_warp_dot<R, ILP>(w, x, K8, lane, acc);  // ch08's inner loop
    float *y = (float *)Y[g];
#pragma unroll
    for (int b = 0; b < R; b++)
      if (lane == b) y[(int64_t)b * ldy + n] = acc[b];
  }
}

// h = lab00_glu(gate, up) (silu(gate) · up, or gpt-oss's clamped SwiGLU), gate and up the
// sums of a logical row's hi and lo outputs plus its group's biases (bg, bu: 01's plan
// pointer arrays, entries NULL outside gpt-oss; group = row / cap), split again into hb's
// hi and lo rows. gu [2·rows][2F] (gate in [0, F), up in [F, 2F)), hb [2·rows][F],
// interleaved; rows = G·cap. Strategy: thread per element. Limiter: latency.
__global__ void lab02_swiglu_kernel(const float *gu, __nv_bfloat16 *hb, int F, int cap, size_t rows,
                                    const __nv_bfloat16 *const *bg, const __nv_bfloat16 *const *bu, int clamp,
                                    float lim, float alpha) {
  const size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
  if (i >= rows * F) return;
  const size_t hi = lab02_hi_row(i / F), lo = hi + 1, f = i % F, g = i / F / cap;
  float a = gu[hi * 2 * F + f] + gu[lo * 2 * F + f], c = gu[hi * 2 * F + F + f] + gu[lo * 2 * F + F + f];
  if (bg[g]) a += __bfloat162float(bg[g][f]);
  if (bu[g]) c += __bfloat162float(bu[g][f]);
  lab01_split(lab00_glu(a, c, clamp, lim, alpha), &hb[hi * F + f], &hb[lo * F + f]);
}

// x[b][d] += Σ_j w[b][j] · (y[2s][d] + y[2s + 1][d] + bd_g[d]), s = slot[b][j], y = yg
// [2·G·cap][D], bd_g the down bias of s's group g = s / cap (01's plan pointer array,
// entries NULL outside gpt-oss; weighted with its expert's output, as 00 does): each
// token gathers its top_k expert rows (01's order: no atomics, the same sums every step).
// Strategy: thread per 4 elements (float4: 16 bytes per lane, a warp moves 512
// contiguous bytes per row), grid (D/4 / threads, B). Limiter: latency at decode sizes.
__global__ void lab02_combine_kernel(const float *yg, const int32_t *slot, const float *w, float *x, int D,
                                     int top_k, int cap, const __nv_bfloat16 *const *bd) {
  const int d4 = blockIdx.x * blockDim.x + threadIdx.x, b = blockIdx.y, D4 = D / 4;
  if (d4 >= D4) return;
  float4 acc = make_float4(0.f, 0.f, 0.f, 0.f);
  for (int j = 0; j < top_k; j++) {
    const int s = slot[(size_t)b * top_k + j];
    const size_t hi = lab02_hi_row((size_t)s);
    const float4 h = ((const float4 *)(yg + hi * D))[d4], l = ((const float4 *)(yg + (hi + 1) * D))[d4];
    const __nv_bfloat16 *bias = bd[s / cap];
    float4 bv = make_float4(0.f, 0.f, 0.f, 0.f);
    if (bias) {
      const __nv_bfloat16 *bb = bias + 4 * d4;
      bv = make_float4(__bfloat162float(bb[0]), __bfloat162float(bb[1]), __bfloat162float(bb[2]),
                       __bfloat162float(bb[3]));
    }
    const float wj = w[(size_t)b * top_k + j];
    acc.x += wj * (h.x + l.x + bv.x);
    acc.y += wj * (h.y + l.y + bv.y);
    acc.z += wj * (h.z + l.z + bv.z);
    acc.w += wj * (h.w + l.w + bv.w);
  }
  float4 *xo = (float4 *)(x + (size_t)b * D) + d4;
  float4 v = *xo;
  v.x += acc.x, v.y += acc.y, v.z += acc.z, v.w += acc.w;
  *xo = v;
}

// ---- launchers ----------------------------------------------------------------------------
// RMSNorm of x [B][n] with weight w into xn (fp32, may be NULL) and 01's xb (split).
static inline void lab02_rmsnorm_split(const Engine *e, const float *x, const __nv_bfloat16 *w, float *xn, int n) {
  lab02_rmsnorm_split_kernel<<<e->B, kLab00Threads, 0, e->s>>>(x, w, xn, ((Lab01 *)e->layer)->xb, n,
                                                               (float)e->cfg.rms_eps);
  GTL_LAUNCH();
}

// out_j (+)= W_j · in + bias_j for n (1..3) matrices W_j bf16 [N_j][K] on the split rows
// in 01's xb, bias_j bf16 [N_j] or NULL (bias itself NULL: none at all): ch08's GEMV (one
// launch, 2B rows) at small batch, else one cublasGemmEx each (01's lab01_gemm); the
// outputs packed in 01's s, then one kernel adds hi, lo and the bias into out_j.
static inline void lab02_project(const Engine *e, int n, const __nv_bfloat16 *const *W, const int *N, int K,
                                 const __nv_bfloat16 *const *bias, float *const *out, int accumulate) {
  const Lab01 *p = (const Lab01 *)e->layer;
  const int B = e->B;
  int nn[3] = {0, 0, 0};
  for (int j = 0; j < n; j++) nn[j] = N[j];
  if (lab02_use_gemv(B)) {
    GemvBatch g;
    memset(&g, 0, sizeof g);
    g.B = 2 * B;
    for (int j = 0; j < n; j++)
      if (gemv_batch_add(&g, W[j], p->xb, p->s + lab02_packed_base(j, B, nn[0], nn[1]), N[j], K)) exit(GTL_EXIT_RUNTIME);
    gemv_warprow_launch(&g, e->s);
  } else {
    for (int j = 0; j < n; j++) lab01_gemm(e, W[j], N[j], K, (int)lab02_packed_base(j, B, nn[0], nn[1]), N[j]);
  }
  lab02_sum_split_kernel<<<lab01_blocks((size_t)B * (nn[0] + nn[1] + nn[2]), 4096), kLab01Threads, 0, e->s>>>(
      p->s, B, out[0], nn[0], n > 1 ? out[1] : NULL, nn[1], n > 2 ? out[2] : NULL, nn[2], bias ? bias[0] : NULL,
      bias && n > 1 ? bias[1] : NULL, bias && n > 2 ? bias[2] : NULL, accumulate);
  GTL_LAUNCH();
}

// One wave of lab02_expert_gemv_kernel<R> over the G groups' N rows (ch08's grid rule).
template <int R>
static void lab02_expert_gemv_r(const Lab01 *p, const void *const *Wa, const void *const *Wb, int Na, int N, int K,
                                const void *const *X, void *const *Y, int ldy, cudaStream_t s) {
  static int wave = 0;
  if (!wave) {
    int dev, sms, per_sm;
    GTL_CUDA(cudaGetDevice(&dev));
    GTL_CUDA(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, dev));
    GTL_CUDA(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, lab02_expert_gemv_kernel<R, GEMV_ILP>,
                                                           kLab02GemvThreads, 0));
    wave = sms * (per_sm > 0 ? per_sm : 1);
  }
  const int64_t need = ((int64_t)p->G * N + kLab02GemvThreads / 32 - 1) / (kLab02GemvThreads / 32);
  lab02_expert_gemv_kernel<R, GEMV_ILP><<<(unsigned)(need < wave ? need : wave), kLab02GemvThreads, 0, s>>>(
      Wa, Wb, Na, N, K, X, Y, ldy, p->g_count, p->G);
  GTL_LAUNCH();
}

// The expert GEMV for 2·cap rows per group (cap = B <= kLab02GemvMaxBatch).
static inline void lab02_expert_gemv(const Engine *e, const void *const *Wa, const void *const *Wb, int Na, int N,
                                     int K, const void *const *X, void *const *Y, int ldy) {
  const Lab01 *p = (const Lab01 *)e->layer;
  switch (2 * p->cap) {
    case 2: lab02_expert_gemv_r<2>(p, Wa, Wb, Na, N, K, X, Y, ldy, e->s); break;
    case 4: lab02_expert_gemv_r<4>(p, Wa, Wb, Na, N, K, X, Y, ldy, e->s); break;
    case 6: lab02_expert_gemv_r<6>(p, Wa, Wb, Na, N, K, X, Y, ldy, e->s); break;
    case 8: lab02_expert_gemv_r<8>(p, Wa, Wb, Na, N, K, X, Y, ldy, e->s); break;
    default:
      fprintf(stderr, "lab02_expert_gemv: %d rows per group outside 2..%d\n", 2 * p->cap, GEMV_MAX_BATCH);
      exit(GTL_EXIT_RUNTIME);
  }
}

// ---- stages ------------------------------------------------------------------------------
// 01's setup (arena, weight pointers, cuBLAS), then the expert rows zeroed once (xg, hb,
// gu, yg: adjacent in the arena, before the cuBLAS workspace; the weight pointers 01
// uploaded lie before them): rows of the groups that no token fills in a step (padding,
// or past a group's count) keep finite values, so the ignored outputs are finite too.
static inline void lab02_setup(Engine *e) {
  lab01_setup(e);
  const Lab01 *p = (const Lab01 *)e->layer;
  const size_t bytes = (size_t)((const char *)p->ws - (const char *)p->xg);
  GTL_CUDA(cudaMemsetAsync(p->xg, 0, bytes, e->s));  // ordered before the steps on e->s
}

// Fused RMSNorm + split, then q, k, v in one projection, hi + lo (+ the biases, gpt-oss:
// before RoPE) added into a.d_q/k/v.
static inline void lab02_qkv(Engine *e, int l) {
  const MoeConfig *c = &e->cfg;
  const int B = e->B, hd = c->head_dim, Q = c->H * hd, KV = c->H_kv * hd;
  lab02_rmsnorm_split(e, e->a.d_x, engine_w(e, MOE_ATTN_NORM, l, 0), e->a.d_xn, c->D);
  const __nv_bfloat16 *W[3] = {engine_w(e, MOE_Q, l, 0), engine_w(e, MOE_K, l, 0), engine_w(e, MOE_V, l, 0)};
  const int N[3] = {Q, KV, KV};
  const __nv_bfloat16 *bias[3] = {lab00_w_opt(e, MOE_Q_BIAS, l, 0), lab00_w_opt(e, MOE_K_BIAS, l, 0),
                                  lab00_w_opt(e, MOE_V_BIAS, l, 0)};
  float *const out[3] = {e->a.d_q, e->a.d_k, e->a.d_v};
  lab02_project(e, 3, W, N, c->D, bias, out, 0);
  if (c->qk_norm) {  // Qwen3-MoE: each head normalized over head_dim before RoPE (00's kernel)
    lab00_rmsnorm(e, e->a.d_q, engine_w(e, MOE_Q_NORM, l, 0), e->a.d_q, B * c->H, hd);
    lab00_rmsnorm(e, e->a.d_k, engine_w(e, MOE_K_NORM, l, 0), e->a.d_k, B * c->H_kv, hd);
  }
}

static inline void lab02_out(Engine *e, int l) {  // x += Wo att (+ bo)
  const MoeConfig *c = &e->cfg;
  const int Q = c->H * c->head_dim;
  const size_t n = (size_t)e->B * Q;
  lab02_split_kernel<<<lab01_blocks(n, 1024), kLab01Threads, 0, e->s>>>(e->a.d_att, ((Lab01 *)e->layer)->xb, Q, n);
  GTL_LAUNCH();
  const __nv_bfloat16 *W[1] = {engine_w(e, MOE_O, l, 0)}, *bias[1] = {lab00_w_opt(e, MOE_O_BIAS, l, 0)};
  float *const out[1] = {e->a.d_x};
  lab02_project(e, 1, W, &c->D, Q, bias, out, 1);
}

// Router logits (+ the router bias, gpt-oss: before the top-k); a.d_xn keeps the
// normalized rows, and 01's xb their split, which the dispatch of this layer permutes
// (the top-k in between does not touch xb).
static inline void lab02_router(Engine *e, int l) {
  const MoeConfig *c = &e->cfg;
  lab02_rmsnorm_split(e, e->a.d_x, engine_w(e, MOE_FFN_NORM, l, 0), e->a.d_xn, c->D);
  const __nv_bfloat16 *W[1] = {engine_w(e, MOE_ROUTER, l, 0)}, *bias[1] = {lab00_w_opt(e, MOE_ROUTER_BIAS, l, 0)};
  float *const out[1] = {e->a.d_router};
  lab02_project(e, 1, W, &c->E, c->D, bias, out, 0);
}

// 01's device plan (groups, slots, pointer arrays), then ch07's permute: token b's split
// row [hi | lo] (2D bf16, from the router) to its top_k slots, rows 2s and 2s + 1 of xg.
static inline void lab02_dispatch(Engine *e, int l, int) {
  const MoeConfig *c = &e->cfg;
  Lab01 *p = (Lab01 *)e->layer;
  lab01_expert_plan_kernel<<<1, kLab01PlanThreads, 0, e->s>>>(
      e->a.d_topk_idx, e->a.d_topk_w, e->B * c->top_k, c->top_k, c->E, p->G, p->cap,
      p->wptr + (size_t)l * c->E * kLab01WPtrs,
      p->g_count, p->g_tok, p->g_wt, p->slot, p->xg, p->gu, p->hb, p->yg, c->D, c->F, p->p);
  GTL_LAUNCH();
  permute_warptoken_launch(p->xb, p->slot, p->xg, e->B, c->top_k, 2 * (int64_t)c->D, e->s);
}

// gate|up = W_gate|up · rows: the expert GEMV at small batch, else 01's batched GEMMs;
// then the biases and SwiGLU (gpt-oss: clamped), split into hb's interleaved hi and lo rows.
static inline void lab02_expert_up(Engine *e, int, int) {
  const MoeConfig *c = &e->cfg;
  Lab01 *p = (Lab01 *)e->layer;
  const int G = p->G, F = c->F;
  if (lab02_use_gemv(e->B)) {
    lab02_expert_gemv(e, p->p + 0 * G, p->p + 1 * G, F, 2 * F, c->D, p->p + 3 * G, (void *const *)(p->p + 4 * G),
                      2 * F);
  } else if (p->fused_gate_up) {
    lab01_gemm_groups(e, p->p + 0 * G, p->p + 3 * G, (void *const *)(p->p + 4 * G), 2 * F, c->D, 2 * F);
  } else {
    lab01_gemm_groups(e, p->p + 0 * G, p->p + 3 * G, (void *const *)(p->p + 4 * G), F, c->D, 2 * F);
    lab01_gemm_groups(e, p->p + 1 * G, p->p + 3 * G, (void *const *)(p->p + 5 * G), F, c->D, 2 * F);
  }
  const size_t rows = (size_t)G * p->cap;
  lab02_swiglu_kernel<<<(unsigned)((rows * F + kLab01Threads - 1) / kLab01Threads), kLab01Threads, 0, e->s>>>(
      p->gu, p->hb, F, p->cap, rows, (const __nv_bfloat16 *const *)(p->p + 8 * G),
      (const __nv_bfloat16 *const *)(p->p + 9 * G), c->act == MOE_ACT_SWIGLU_CLAMP, (float)c->swiglu_limit,
      (float)c->swiglu_alpha);
  GTL_LAUNCH();
}

static inline void lab02_expert_down(Engine *e, int l, int g) {
  const MoeConfig *c = &e->cfg;
  Lab01 *p = (Lab01 *)e->layer;
  if (!lab02_use_gemv(e->B)) {
    lab01_expert_down(e, l, g);  // 01's batched GEMM (the row order does not matter to it)
    return;
  }
  lab02_expert_gemv(e, p->p + 2 * p->G, p->p + 2 * p->G, c->D, c->D, c->F, p->p + 6 * p->G,
                    (void *const *)(p->p + 7 * p->G), c->D);
}

static inline void lab02_combine(Engine *e, int, int) {
  const MoeConfig *c = &e->cfg;
  Lab01 *p = (Lab01 *)e->layer;
  lab02_combine_kernel<<<lab00_grid(c->D / 4, e->B), kLab00Threads, 0, e->s>>>(
      p->yg, p->slot, e->a.d_topk_w, e->a.d_x, c->D, c->top_k, p->cap,
      (const __nv_bfloat16 *const *)(p->p + 10 * p->G));
  GTL_LAUNCH();
}

static inline void lab02_logits(Engine *e, int) {
  const MoeConfig *c = &e->cfg;
  lab02_rmsnorm_split(e, e->a.d_x, engine_w(e, MOE_FINAL_NORM, 0, 0), e->a.d_xn, c->D);
  const __nv_bfloat16 *W[1] = {engine_w(e, MOE_LM_HEAD, 0, 0)};
  float *const out[1] = {e->a.d_logits};
  lab02_project(e, 1, W, &c->V, c->D, NULL, out, 0);
}

/** Layer 02's table: lab01_ops() with qkv, out, router, the expert stages (dispatch, up,
 *  down, combine) and logits replaced, and setup (01's, plus the expert rows zeroed once);
 *  configure, teardown, topk, the expert plan, the arena and the tolerances are 01's;
 *  embed, rope, attend, the host sampler and the KV cache are 00's. */
static inline LayerOps lab02_ops(void) {
  LayerOps o = lab01_ops();  // start from the previous layer's table
  o.target = "labs/02_memory";
  o.adds = "adds: ch08's bandwidth-bound GEMV for every projection and the experts at batch <= 4 (cuBLAS "
           "above), ch07's coalesced permute for the dispatch and a float4 combine, fused RMSNorm + split";
  o.setup = lab02_setup;
  o.qkv = lab02_qkv;
  o.out = lab02_out;
  o.router = lab02_router;
  o.dispatch = lab02_dispatch;
  o.expert_up = lab02_expert_up;
  o.expert_down = lab02_expert_down;
  o.combine = lab02_combine;
  o.logits = lab02_logits;
  return o;
}
