// model.cuh — ch17's workload: the MoE model slice, its routing and its small kernels (the
// decode GEMVs are ch08's, ch08/gemv.cuh). The prefill's GEMMs, the two stages and the
// buffers are in stages.cuh; the CPU reference in reference.cuh; placements and timing in
// schedule.cuh; the driver in colocate.cuh.
//
// The model slice: L layers (default 2) of gpt-oss-20b's shapes — hidden D = 2880, 64 query
// and 8 key/value heads of 64, E = 32 experts, top_k = 4, expert FFN F = 2880 — with bf16
// weights (seeded; each linear scaled by sqrt(3/fan_in) so activations stay O(1)). One
// layer, for each token x:
//     xn = RMSNorm(x)·g1;  qkv = Wqkv xn;  a = attention stand-in;  x += Wo a
//     xn = RMSNorm(x)·g2;  x += Σ_j w_j · Wd_ej (silu(Wg_ej xn) ⊙ Wu_ej xn)     (SwiGLU)
// RMSNorm: Zhang & Sennrich 2019, eps 1e-5 (gpt-oss config). SwiGLU: Shazeer 2020. The
// attention stand-in gives each query head its kv head's v (what softmax attention returns
// over a single cached position): ch18 is the attention lesson; here the bytes and flops
// are the projections' and the experts'.
//
//   decode step   batch 1, activations fp32: per layer 8 small kernels (2 RMSNorms, the
//                 stand-in, SwiGLU, 4 warp-per-row GEMVs: ch08's gemv_warprow_f32_kernel) —
//                 16 launches at L = 2. The top_k experts of (step, layer) are drawn from
//                 the seed (ch06 is the router lesson). Bytes per step = the weights it
//                 touches, 504 MB at L = 2: far beyond the 60 MB L2, so every step streams
//                 them from HBM. Memory-bound; how much of HBM it gets is set by the bytes
//                 in flight per SM (2.3 TB/s on all 132 SMs of an H200, ~1 TB/s on 36).
//                 Step i starts from step i−1's residual stream (autoregressive).
//   prefill chunk T tokens (default 2048), bf16 activations: per layer 4 cuBLASLt GEMMs
//                 (QKV, O, then the 32 experts' gate+up and down as strided-batched GEMMs)
//                 and 5 small kernels. Routing is balanced (every expert gets R = T·top_k/E
//                 rows, the grouped GEMM's best case) so one batched GEMM covers the experts;
//                 at R = 256 the expert GEMMs do 256 FLOP per weight byte, above the H200's
//                 ridge (~206): bound by the tensor cores. 1.03 TFLOP per chunk at L = 2.
//
// The scenario (one timed iteration): S decode steps run back to back; a prefill chunk
// arrives every N decode steps (chunk c arrives when step c·N starts: C = ceil(S/N)
// chunks). Chunked prefill mixed with decode is how serving engines admit new prompts
// (Agrawal et al., "Sarathi-Serve", OSDI 2024); the cost to decode is the subject of
// disaggregation (Zhong et al., "DistServe", OSDI 2024). Measured per iteration:
//   TPOT_i     = time between the ends of decode steps i−1 and i (events on the decode
//                stream), so a step that waits behind a chunk carries the wait;
//   prefill    = tokens / the chunks' busy time (events around each chunk on its stream);
//   makespan   = start to the end of both stages.
// Placements (the driver's modes):
//   time_sliced  one stream, in arrival order: the baseline, a decode step behind a chunk waits
//   sequential   each stage alone with the whole GPU (the "100-100" reference): all steps,
//                then all chunks; its outputs are the ones every other mode must equal
//   streams, graph, split   the optimized program's modes (optimized.cu)
//
// Determinism: no atomics in any reduction, fixed orders everywhere, one cuBLASLt algorithm
// per GEMM chosen once (split-K excluded) — so every mode must reproduce the sequential
// outputs bit for bit, and does or fails.
//
// Validation of the sequential run against a CPU double reference: decode steps 0 and 1 in
// full (same bf16 weights; the GPU's only error is fp32 summation over K <= 4096 terms —
// Higham, "Accuracy and Stability of Numerical Algorithms", §3.1: |error| <= γ_K Σ|w||x|,
// γ_K ≈ K·2^-24 = 2.4e-4 worst case, ~√K·2^-24 typical — bound rel_l2 1e-4); three tokens
// of the first and of the last prefill chunk, rounded to bf16 where the GPU stores bf16
// (the project's bf16 tolerance, rel_l2 5e-3).
#pragma once
#include <cublasLt.h>  // before gauntlet.h, so that check.h defines GTL_CUBLAS
#include <cuda_bf16.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../ch08/gemv.cuh"  // gemv_warprow_f32_launch: the decode GEMVs
#include "../common/gauntlet.h"

// ---- shapes (gpt-oss-20b) --------------------------------------------------------------
enum {
  PD_D = 2880, PD_HEADS = 64, PD_KV_HEADS = 8, PD_HEAD_DIM = 64,
  PD_Q = PD_HEADS * PD_HEAD_DIM,      // 4096
  PD_KV = PD_KV_HEADS * PD_HEAD_DIM,  // 512
  PD_QKV = PD_Q + 2 * PD_KV,          // 5120: q, then k, then v
  PD_E = 32, PD_TOP_K = 4, PD_F = 2880,
  PD_MAX_LAYERS = 8,
  PD_SMLOG_WORDS = 32   // 1024 bits of %smid per stage
};
#define PD_EPS 1e-5f
#define PD_STAGE_DECODE 0
#define PD_STAGE_PREFILL 1
static_assert(PD_D % 8 == 0 && PD_Q % 8 == 0 && PD_F % 8 == 0, "GEMV rows are 16-byte pieces");

typedef struct {
  __nv_bfloat16 *qkv, *o, *gu, *down;  // [QKV][D], [D][Q], [E][2F][D], [E][D][F]
  float *attn_norm, *ffn_norm;         // [D]
} PdLayer;

typedef struct {
  cublasLtMatmulDesc_t op;
  cublasLtMatrixLayout_t a, b, c;
  cublasLtMatmulAlgo_t algo;
  int algo_id, m, n, k, batch;
} PdGemm;

typedef struct {
  int S, every, C, T, L;  // decode steps, steps per chunk arrival, chunks, tokens/chunk, layers
  uint64_t seed;
  PdLayer layer[PD_MAX_LAYERS];
  float *dec_x0;   // [D] the first step's input
  float *dec_out;  // [S][D] residual stream after each decode step (guarded)
  float *dec_xn, *dec_qkv, *dec_a, *dec_h, *dec_act;  // [D] [QKV] [Q] [top_k][2F] [top_k][F]
  __nv_bfloat16 *pre_in;  // [C][T][D] chunk inputs
  float *pre_out;         // [C][T][D] residual stream after each chunk (guarded)
  __nv_bfloat16 *pre_xn, *pre_qkv, *pre_a, *pre_y;  // [T][D] [T][QKV] [T][Q] [T][D]
  __nv_bfloat16 *pre_xe, *pre_he, *pre_ae, *pre_ye;  // [E·R][D] [E·R][2F] [E·R][F] [E·R][D]
  cublasLtHandle_t lt;
  void *lt_ws;
  size_t lt_ws_bytes;
  PdGemm g_qkv, g_o, g_gu, g_down;
} PdWork;

static int64_t pd_R(const PdWork *w) { return (int64_t)w->T * PD_TOP_K / PD_E; }

// Bytes one decode step must read (the weights it touches; activations are KB) and flops
// one prefill chunk must do.
static double pd_decode_bytes(const PdWork *w) {
  return 2.0 * w->L *
         ((double)PD_QKV * PD_D + (double)PD_D * PD_Q +
          PD_TOP_K * (2.0 * PD_F * PD_D + (double)PD_D * PD_F));
}
static double pd_prefill_flops(const PdWork *w) {
  return 2.0 * w->L * w->T *
         ((double)PD_QKV * PD_D + (double)PD_D * PD_Q +
          PD_TOP_K * (2.0 * PD_F * PD_D + (double)PD_D * PD_F));
}

// ---- routing (the same function on host and device) --------------------------------------
#define PD_SEED_DEC_EXPERT 0xD3C0DE01ull
#define PD_SEED_DEC_WEIGHT 0xD3C0DE02ull
#define PD_SEED_PRE_OFFSET 0x9EF111A1ull
#define PD_SEED_PRE_WEIGHT 0x9EF111A2ull

// Renormalized top_k weights: u_j ~ U[0.5, 1.5), w_j = u_j / Σu (sums to 1, like a router's).
__host__ __device__ inline void pd_route_weights(uint64_t seed, uint64_t base, float w[PD_TOP_K]) {
  float u[PD_TOP_K], s = 0.0f;
  for (int j = 0; j < PD_TOP_K; j++) {
    u[j] = gtl_uniform(seed, base * PD_TOP_K + j, 0.5f, 1.5f);
    s += u[j];
  }
  for (int j = 0; j < PD_TOP_K; j++) w[j] = u[j] / s;
}
// Prefill: pair i = t·top_k + j goes to expert (i + off) mod E, as row i / E of that expert's
// R rows: every expert gets exactly R = T·top_k/E rows, and a token's top_k are distinct.
__host__ __device__ inline int pd_slot(int t, int j, int T, int off) {
  const int i = t * PD_TOP_K + j;
  return ((i + off) % PD_E) * (T * PD_TOP_K / PD_E) + i / PD_E;
}
static int pd_prefill_offset(const PdWork *w, int c, int l) {
  return (int)gtl_uniform_u32(w->seed ^ PD_SEED_PRE_OFFSET, (uint64_t)c * PD_MAX_LAYERS + l, PD_E);
}
static uint64_t pd_prefill_wbase(const PdWork *w, int c, int l) {
  return ((uint64_t)c * PD_MAX_LAYERS + l) * (uint64_t)w->T;
}
// Decode step i, layer l: top_k distinct experts drawn from the seed, and their weights.
static void pd_decode_route(const PdWork *w, int i, int l, int e[PD_TOP_K], float wt[PD_TOP_K]) {
  const uint64_t base = (uint64_t)i * PD_MAX_LAYERS + l;
  uint64_t draw = 0;
  for (int j = 0; j < PD_TOP_K; j++) {
    int dup;
    do {
      e[j] = (int)gtl_uniform_u32(w->seed ^ PD_SEED_DEC_EXPERT, base * 1024 + draw++, PD_E);
      dup = 0;
      for (int q = 0; q < j; q++) dup |= e[q] == e[j];
    } while (dup);
  }
  pd_route_weights(w->seed ^ PD_SEED_DEC_WEIGHT, base, wt);
}

// ---- --check-sm: every block of our kernels notes its SM -------------------------------
// pd_smlog = [2][PD_SMLOG_WORDS] bitmaps of %smid (decode, prefill), or NULL (every timed
// run). Read at run time, so captured graphs log too. One atomicOr per block: a set union
// is order-independent, and it touches no output.
__device__ unsigned int *pd_smlog;
__device__ __forceinline__ void pd_note_sm(int stage) {
  unsigned int *log = pd_smlog;
  if (log != nullptr && threadIdx.x == 0) {
    unsigned int id;
    asm volatile("mov.u32 %0, %%smid;" : "=r"(id));
    if (id < 32u * PD_SMLOG_WORDS)
      atomicOr(&log[stage * PD_SMLOG_WORDS + id / 32], 1u << (id % 32));
  }
}

// ---- kernels ---------------------------------------------------------------------------
__device__ __forceinline__ float pd_f32(float v) { return v; }
__device__ __forceinline__ float pd_f32(__nv_bfloat16 v) { return __bfloat162float(v); }
template <typename T> __device__ __forceinline__ T pd_out(float v);
template <> __device__ __forceinline__ float pd_out<float>(float v) { return v; }
template <> __device__ __forceinline__ __nv_bfloat16 pd_out<__nv_bfloat16>(float v) {
  return __float2bfloat16_rn(v);
}
__device__ __forceinline__ float pd_warp_sum(float v) {
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}

enum { PD_SRC_NONE = 0, PD_SRC_COPY = 1, PD_SRC_ADD = 2 };

// Strategy: block per row; x = src (copy) or x += src (residual) first; sum of squares by a
// fixed tree (no atomics); out = x·rsqrt(mean x² + eps)·g, written to row t or, with
// dispatch_T > 0, to the token's top_k expert slots (MoE dispatch, ch07). Limiter: latency.
template <typename SrcT, typename OutT>
__global__ void __launch_bounds__(256)
    norm_rows_kernel(const SrcT *__restrict__ src, int src_mode, float *__restrict__ x,
                     const float *__restrict__ g, OutT *__restrict__ out, int dispatch_T,
                     int dispatch_off, int stage) {
  pd_note_sm(stage);
  __shared__ float red[8];
  const int t = blockIdx.x;
  float *xr = x + (size_t)t * PD_D;
  float ss = 0.0f;
  for (int d = threadIdx.x; d < PD_D; d += 256) {
    float v = xr[d];
    if (src_mode == PD_SRC_COPY) v = pd_f32(src[(size_t)t * PD_D + d]);
    if (src_mode == PD_SRC_ADD) v += pd_f32(src[(size_t)t * PD_D + d]);
    if (src_mode != PD_SRC_NONE) xr[d] = v;
    ss += v * v;
  }
  ss = pd_warp_sum(ss);
  if ((threadIdx.x & 31) == 0) red[threadIdx.x >> 5] = ss;
  __syncthreads();
  float tot = 0.0f;
#pragma unroll
  for (int i = 0; i < 8; i++) tot += red[i];
  const float inv = 1.0f / sqrtf(tot / PD_D + PD_EPS);
  for (int d = threadIdx.x; d < PD_D; d += 256) {  // each thread reads back its own writes
    const float y = xr[d] * inv * g[d];
    if (dispatch_T > 0) {
      for (int j = 0; j < PD_TOP_K; j++)
        out[(size_t)pd_slot(t, j, dispatch_T, dispatch_off) * PD_D + d] = pd_out<OutT>(y);
    } else {
      out[(size_t)t * PD_D + d] = pd_out<OutT>(y);
    }
  }
}

// Strategy: grid-stride copy, a[t][h·64 + d] = v[t][(h / 8)·64 + d]. Limiter: latency (decode),
// DRAM (prefill, ~25 MB).
template <typename T>
__global__ void __launch_bounds__(256)
    attn_standin_kernel(const T *__restrict__ qkv, T *__restrict__ a, int rows, int stage) {
  pd_note_sm(stage);
  const size_t n = (size_t)rows * PD_Q;
  for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n;
       i += (size_t)gridDim.x * blockDim.x) {
    const size_t t = i / PD_Q;
    const int q = (int)(i % PD_Q), h = q / PD_HEAD_DIM, d = q % PD_HEAD_DIM;
    a[i] = qkv[t * PD_QKV + PD_Q + PD_KV + (h / (PD_HEADS / PD_KV_HEADS)) * PD_HEAD_DIM + d];
  }
}

// Strategy: grid-stride, act[r][f] = silu(h[r][f])·h[r][F + f], fp32 math. Limiter: latency
// (decode), DRAM (prefill).
template <typename T>
__global__ void __launch_bounds__(256)
    swiglu_kernel(const T *__restrict__ h, T *__restrict__ act, int rows, int stage) {
  pd_note_sm(stage);
  const size_t n = (size_t)rows * PD_F;
  for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n;
       i += (size_t)gridDim.x * blockDim.x) {
    const size_t r = i / PD_F, f = i % PD_F;
    const float gt = pd_f32(h[r * 2 * PD_F + f]), up = pd_f32(h[r * 2 * PD_F + PD_F + f]);
    act[i] = pd_out<T>(gt / (1.0f + expf(-gt)) * up);
  }
}

// Strategy: block per token; x[t] += Σ_j w_j · ye[slot(t, j)] in j order (no atomics).
// Limiter: DRAM.
__global__ void __launch_bounds__(256)
    colocate_combine_kernel(const __nv_bfloat16 *__restrict__ ye, float *__restrict__ x, int T, int off,
                   uint64_t wseed, uint64_t wbase, int stage) {
  pd_note_sm(stage);
  const int t = blockIdx.x;
  float wt[PD_TOP_K];
  pd_route_weights(wseed, wbase + t, wt);
  int slot[PD_TOP_K];
  for (int j = 0; j < PD_TOP_K; j++) slot[j] = pd_slot(t, j, T, off);
  for (int d = threadIdx.x; d < PD_D; d += 256) {
    float acc = x[(size_t)t * PD_D + d];
    for (int j = 0; j < PD_TOP_K; j++)
      acc += wt[j] * __bfloat162float(ye[(size_t)slot[j] * PD_D + d]);
    x[(size_t)t * PD_D + d] = acc;
  }
}

// ---- launchers ---------------------------------------------------------------------------
// The decode GEMVs: ch08's fp32-activation GEMV (stacked or accumulate, GemvF32Batch), each
// block noting its SM for --check-sm like every other kernel here.
static void pd_gemv_launch(const GemvF32Batch *g, int stage, cudaStream_t s) {
  gemv_warprow_f32_launch<pd_note_sm>(g, s, stage);
}
static unsigned int pd_grid(size_t n) {  // grid-stride kernels: at most 32768 blocks of 256
  const size_t b = (n + 255) / 256;
  return (unsigned int)(b < 32768 ? b : 32768);
}
template <typename SrcT, typename OutT>
static void norm_rows_launch(int rows, const SrcT *src, int src_mode, float *x, const float *g,
                             OutT *out, int dispatch_T, int off, int stage, cudaStream_t s) {
  norm_rows_kernel<SrcT, OutT><<<rows, 256, 0, s>>>(src, src_mode, x, g, out, dispatch_T, off,
                                                    stage);
  GTL_LAUNCH();
}
template <typename T>
static void attn_standin_launch(const T *qkv, T *a, int rows, int stage, cudaStream_t s) {
  attn_standin_kernel<T><<<pd_grid((size_t)rows * PD_Q), 256, 0, s>>>(qkv, a, rows, stage);
  GTL_LAUNCH();
}
template <typename T>
static void swiglu_launch(const T *h, T *act, int rows, int stage, cudaStream_t s) {
  swiglu_kernel<T><<<pd_grid((size_t)rows * PD_F), 256, 0, s>>>(h, act, rows, stage);
  GTL_LAUNCH();
}

