// colocate.cuh — ch17's workload (the prefill and the decode of a MoE model slice on one
// GPU), its references and the driver shared by baseline.cu and optimized.cu, so that the
// two files differ only in where the two stages run.
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
//                 stand-in, SwiGLU, 4 warp-per-row GEMVs) — 16 launches at L = 2. The top_k
//                 experts of (step, layer) are drawn from the seed (ch06 is the router
//                 lesson). Bytes per step = the weights it touches, 504 MB at L = 2: far
//                 beyond the 60 MB L2, so every step streams them from HBM. Memory-bound;
//                 how much of HBM it gets is set by the bytes in flight per SM (2.3 TB/s on
//                 all 132 SMs of an H200, ~1 TB/s on 36). Step i starts from step i−1's
//                 residual stream (autoregressive).
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

#include "../common/gauntlet.h"

// ---- shapes (gpt-oss-20b) --------------------------------------------------------------
enum {
  PD_D = 2880, PD_HEADS = 64, PD_KV_HEADS = 8, PD_HEAD_DIM = 64,
  PD_Q = PD_HEADS * PD_HEAD_DIM,      // 4096
  PD_KV = PD_KV_HEADS * PD_HEAD_DIM,  // 512
  PD_QKV = PD_Q + 2 * PD_KV,          // 5120: q, then k, then v
  PD_E = 32, PD_TOP_K = 4, PD_F = 2880,
  PD_MAX_LAYERS = 8,
  PD_SMLOG_WORDS = 32,  // 1024 bits of %smid per stage
  PD_GEMV_ILP = 4       // 16-byte weight loads per lane per round (ch08); see colocate_gemv_kernel
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

// Decode GEMV over up to top_k matrices of one shape [N][K] (bf16, K contiguous), x fp32:
//   stacked      y[m·N + n]  = W_m[n]·x_m                     (QKV; the experts' gate+up)
//   accumulate   y[n]       += Σ_m scale_m · W_m[n]·x_m       (O + residual; down + combine)
typedef struct {
  const __nv_bfloat16 *W[PD_TOP_K];
  const float *x[PD_TOP_K];
  float scale[PD_TOP_K];
  float *y;
  int n_mats, N, K, accumulate;
} GemvArgs;

__device__ __forceinline__ uint4 pd_ld_stream(const uint4 *p) {  // weights are read once
  uint4 v;
  asm("ld.global.nc.L1::no_allocate.v4.u32 {%0, %1, %2, %3}, [%4];"
      : "=r"(v.x), "=r"(v.y), "=r"(v.z), "=r"(v.w)
      : "l"(p));
  return v;
}

// Strategy: warp per output row (ch08): 16-byte weight loads, PD_GEMV_ILP per lane per round,
// x from L1 as float4, butterfly reduction; matrices of one row summed in a fixed order.
// The SASS shows ptxas placing each weight load (LDG.E.NA.128) beside its FMAs, so about one
// load per lane is in flight; 36 registers let 48 warps per SM carry the latency instead.
// Limiter: bytes in flight per SM (Little's law) — 2.3 TB/s on 132 SMs, ~1 TB/s on 36 (README).
__global__ void __launch_bounds__(256) colocate_gemv_kernel(const __grid_constant__ GemvArgs g, int stage) {
  pd_note_sm(stage);
  const int row = (int)((blockIdx.x * (size_t)blockDim.x + threadIdx.x) >> 5);
  const int lane = threadIdx.x & 31;
  const int rows = g.accumulate ? g.N : g.n_mats * g.N;
  if (row >= rows) return;  // whole warps leave: the shuffles stay full
  const int m0 = g.accumulate ? 0 : row / g.N, m1 = g.accumulate ? g.n_mats : m0 + 1;
  const int n = g.accumulate ? row : row % g.N, K8 = g.K >> 3;
  float out = 0.0f;
  for (int m = m0; m < m1; m++) {
    const uint4 *w = (const uint4 *)(g.W[m] + (size_t)n * g.K);
    const float4 *x = (const float4 *)g.x[m];
    float acc = 0.0f;
    for (int c0 = lane; c0 < K8; c0 += 32 * PD_GEMV_ILP) {
      uint4 wv[PD_GEMV_ILP];
#pragma unroll
      for (int j = 0; j < PD_GEMV_ILP; j++)
        wv[j] = c0 + 32 * j < K8 ? pd_ld_stream(w + c0 + 32 * j) : make_uint4(0, 0, 0, 0);
#pragma unroll
      for (int j = 0; j < PD_GEMV_ILP; j++) {
        const int c = c0 + 32 * j;
        if (c < K8) {
          const float4 xa = __ldg(x + 2 * c), xb = __ldg(x + 2 * c + 1);
          const float xf[8] = {xa.x, xa.y, xa.z, xa.w, xb.x, xb.y, xb.z, xb.w};
          const uint32_t wu[4] = {wv[j].x, wv[j].y, wv[j].z, wv[j].w};
#pragma unroll
          for (int e = 0; e < 4; e++) {  // a bf16 is the top half of an fp32
            acc = fmaf(__uint_as_float(wu[e] << 16), xf[2 * e], acc);
            acc = fmaf(__uint_as_float(wu[e] & 0xFFFF0000u), xf[2 * e + 1], acc);
          }
        }
      }
    }
    acc = pd_warp_sum(acc);
    out = g.accumulate ? out + g.scale[m] * acc : acc;
  }
  if (lane == 0) {
    if (g.accumulate) g.y[n] += out;
    else g.y[(size_t)m0 * g.N + n] = out;
  }
}

// ---- launchers ---------------------------------------------------------------------------
static void gemv_launch(const GemvArgs *g, int stage, cudaStream_t s) {
  const int rows = g->accumulate ? g->N : g->n_mats * g->N;
  colocate_gemv_kernel<<<(rows + 7) / 8, 256, 0, s>>>(*g, stage);
  GTL_LAUNCH();
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

// ---- cuBLASLt for the prefill GEMMs ------------------------------------------------------
// Row-major Y[n][m] = X[n][k] · W[m][k]^T is column-major Y^T = op_T(W) · X^T: transa = T on
// W's column-major [k][m] view, transb = N on X's [k][n] view ("TN", as ch10). Batched:
// `batch` such products at strides sa (W), sb (X), sc (Y) elements.
static void pd_gemm_init(PdWork *w, PdGemm *g, int m, int n, int k, int batch, int64_t sa,
                         int64_t sb, int64_t sc) {
  g->m = m;
  g->n = n;
  g->k = k;
  g->batch = batch;
  const cublasOperation_t ta = CUBLAS_OP_T, tb = CUBLAS_OP_N;
  GTL_CUBLAS(cublasLtMatmulDescCreate(&g->op, CUBLAS_COMPUTE_32F, CUDA_R_32F));
  GTL_CUBLAS(cublasLtMatmulDescSetAttribute(g->op, CUBLASLT_MATMUL_DESC_TRANSA, &ta, sizeof ta));
  GTL_CUBLAS(cublasLtMatmulDescSetAttribute(g->op, CUBLASLT_MATMUL_DESC_TRANSB, &tb, sizeof tb));
  GTL_CUBLAS(cublasLtMatrixLayoutCreate(&g->a, CUDA_R_16BF, k, m, k));
  GTL_CUBLAS(cublasLtMatrixLayoutCreate(&g->b, CUDA_R_16BF, k, n, k));
  GTL_CUBLAS(cublasLtMatrixLayoutCreate(&g->c, CUDA_R_16BF, m, n, m));
  if (batch > 1) {
    const int32_t bc = batch;
    const cublasLtMatrixLayout_t lay[3] = {g->a, g->b, g->c};
    const int64_t stride[3] = {sa, sb, sc};
    for (int i = 0; i < 3; i++) {
      GTL_CUBLAS(cublasLtMatrixLayoutSetAttribute(lay[i], CUBLASLT_MATRIX_LAYOUT_BATCH_COUNT, &bc,
                                                  sizeof bc));
      GTL_CUBLAS(cublasLtMatrixLayoutSetAttribute(
          lay[i], CUBLASLT_MATRIX_LAYOUT_STRIDED_BATCH_OFFSET, &stride[i], sizeof stride[i]));
    }
  }
  // One algorithm, chosen once for the whole GPU and used in every mode: the first heuristic
  // answer without split-K (split-K sums partial products in an order that depends on the
  // split, and the modes must agree bit for bit).
  cublasLtMatmulPreference_t pref;
  GTL_CUBLAS(cublasLtMatmulPreferenceCreate(&pref));
  const uint64_t ws = w->lt_ws_bytes;
  GTL_CUBLAS(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES,
                                                  &ws, sizeof ws));
  cublasLtMatmulHeuristicResult_t res[8];
  int found = 0, pick = -1;
  GTL_CUBLAS(cublasLtMatmulAlgoGetHeuristic(w->lt, g->op, g->a, g->b, g->c, g->c, pref, 8, res,
                                            &found));
  for (int i = 0; i < found && pick < 0; i++) {
    int32_t splitk = 1;
    size_t got = 0;
    if (res[i].state != CUBLAS_STATUS_SUCCESS) continue;
    cublasLtMatmulAlgoConfigGetAttribute(&res[i].algo, CUBLASLT_ALGO_CONFIG_SPLITK_NUM, &splitk,
                                         sizeof splitk, &got);
    if (splitk <= 1) pick = i;
  }
  GTL_CUBLAS(cublasLtMatmulPreferenceDestroy(pref));
  if (pick < 0) {
    fprintf(stderr, "error: cuBLASLt offers no split-K-free algorithm for %dx%dx%d (batch %d)\n",
            m, n, k, batch);
    exit(GTL_EXIT_RUNTIME);
  }
  g->algo = res[pick].algo;
  size_t got = 0;
  int32_t id = -1;
  cublasLtMatmulAlgoConfigGetAttribute(&g->algo, CUBLASLT_ALGO_CONFIG_ID, &id, sizeof id, &got);
  g->algo_id = id;
}

// CUBLASLT_MATMUL_DESC_SM_COUNT_TARGET: how many SMs cuBLASLt should size its grid for
// (0 = the device's count). A persistent GEMM sized for 132 SMs in a 96-SM partition runs a
// second, partial wave; told 96, it fills the partition once.
static void pd_gemm_sm_target(PdWork *w, int sms) {
  const int32_t v = sms;
  PdGemm *gs[4] = {&w->g_qkv, &w->g_o, &w->g_gu, &w->g_down};
  for (int i = 0; i < 4; i++)
    GTL_CUBLAS(cublasLtMatmulDescSetAttribute(gs[i]->op, CUBLASLT_MATMUL_DESC_SM_COUNT_TARGET, &v,
                                              sizeof v));
}

static void pd_gemm_run(const PdWork *w, const PdGemm *g, const __nv_bfloat16 *W,
                        const __nv_bfloat16 *X, __nv_bfloat16 *Y, cudaStream_t s) {
  const float alpha = 1.0f, beta = 0.0f;
  GTL_CUBLAS(cublasLtMatmul(w->lt, g->op, &alpha, W, g->a, X, g->b, &beta, Y, g->c, Y, g->c,
                            &g->algo, w->lt_ws, w->lt_ws_bytes, s));
}

// ---- the two stages ----------------------------------------------------------------------
// Decode step i on s: reads step i−1's residual stream (or x0), writes dec_out[i].
static void pd_decode_step(const PdWork *w, int i, cudaStream_t s) {
  float *x = w->dec_out + (size_t)i * PD_D;
  const float *prev = i ? x - PD_D : w->dec_x0;
  for (int l = 0; l < w->L; l++) {
    const PdLayer *ly = &w->layer[l];
    int e[PD_TOP_K];
    float wt[PD_TOP_K];
    pd_decode_route(w, i, l, e, wt);
    norm_rows_launch<float, float>(1, l == 0 ? prev : NULL, l == 0 ? PD_SRC_COPY : PD_SRC_NONE,
                                   x, ly->attn_norm, w->dec_xn, 0, 0, PD_STAGE_DECODE, s);
    GemvArgs g;
    memset(&g, 0, sizeof g);
    g.n_mats = 1, g.N = PD_QKV, g.K = PD_D, g.W[0] = ly->qkv, g.x[0] = w->dec_xn, g.y = w->dec_qkv;
    gemv_launch(&g, PD_STAGE_DECODE, s);
    attn_standin_launch<float>(w->dec_qkv, w->dec_a, 1, PD_STAGE_DECODE, s);
    g.N = PD_D, g.K = PD_Q, g.W[0] = ly->o, g.x[0] = w->dec_a, g.scale[0] = 1.0f, g.y = x;
    g.accumulate = 1;
    gemv_launch(&g, PD_STAGE_DECODE, s);
    norm_rows_launch<float, float>(1, NULL, PD_SRC_NONE, x, ly->ffn_norm, w->dec_xn, 0, 0,
                                   PD_STAGE_DECODE, s);
    g.n_mats = PD_TOP_K, g.N = 2 * PD_F, g.K = PD_D, g.y = w->dec_h, g.accumulate = 0;
    for (int j = 0; j < PD_TOP_K; j++)
      g.W[j] = ly->gu + (size_t)e[j] * 2 * PD_F * PD_D, g.x[j] = w->dec_xn;
    gemv_launch(&g, PD_STAGE_DECODE, s);
    swiglu_launch<float>(w->dec_h, w->dec_act, PD_TOP_K, PD_STAGE_DECODE, s);
    g.N = PD_D, g.K = PD_F, g.y = x, g.accumulate = 1;
    for (int j = 0; j < PD_TOP_K; j++)
      g.W[j] = ly->down + (size_t)e[j] * PD_D * PD_F, g.x[j] = w->dec_act + (size_t)j * PD_F,
      g.scale[j] = wt[j];
    gemv_launch(&g, PD_STAGE_DECODE, s);
  }
}

// Prefill chunk c on s: pre_in[c] through L layers into pre_out[c].
static void pd_prefill_chunk(const PdWork *w, int c, cudaStream_t s) {
  const int T = w->T, rows = T * PD_TOP_K;
  float *X = w->pre_out + (size_t)c * T * PD_D;
  const __nv_bfloat16 *Xin = w->pre_in + (size_t)c * T * PD_D;
  for (int l = 0; l < w->L; l++) {
    const PdLayer *ly = &w->layer[l];
    const int off = pd_prefill_offset(w, c, l);
    norm_rows_launch<__nv_bfloat16, __nv_bfloat16>(T, l == 0 ? Xin : NULL,
                                                   l == 0 ? PD_SRC_COPY : PD_SRC_NONE, X,
                                                   ly->attn_norm, w->pre_xn, 0, 0,
                                                   PD_STAGE_PREFILL, s);
    pd_gemm_run(w, &w->g_qkv, ly->qkv, w->pre_xn, w->pre_qkv, s);
    attn_standin_launch<__nv_bfloat16>(w->pre_qkv, w->pre_a, T, PD_STAGE_PREFILL, s);
    pd_gemm_run(w, &w->g_o, ly->o, w->pre_a, w->pre_y, s);
    norm_rows_launch<__nv_bfloat16, __nv_bfloat16>(T, w->pre_y, PD_SRC_ADD, X, ly->ffn_norm,
                                                   w->pre_xe, T, off, PD_STAGE_PREFILL, s);
    pd_gemm_run(w, &w->g_gu, ly->gu, w->pre_xe, w->pre_he, s);
    swiglu_launch<__nv_bfloat16>(w->pre_he, w->pre_ae, rows, PD_STAGE_PREFILL, s);
    pd_gemm_run(w, &w->g_down, ly->down, w->pre_ae, w->pre_ye, s);
    colocate_combine_kernel<<<T, 256, 0, s>>>(w->pre_ye, X, T, off, w->seed ^ PD_SEED_PRE_WEIGHT,
                                     pd_prefill_wbase(w, c, l), PD_STAGE_PREFILL);
    GTL_LAUNCH();
  }
}

// ---- set-up ------------------------------------------------------------------------------
static void pd_setup(PdWork *w, GtlCtx *ctx, GtlGuarded *g_dec, GtlGuarded *g_pre) {
  const cudaStream_t s = ctx->stream;
  const uint64_t seed = w->seed;
  const size_t D = PD_D, T = w->T, R = (size_t)pd_R(w), rows = T * PD_TOP_K;
  for (int l = 0; l < w->L; l++) {
    PdLayer *ly = &w->layer[l];
    const size_t n[4] = {(size_t)PD_QKV * D, D * PD_Q, (size_t)PD_E * 2 * PD_F * D,
                         (size_t)PD_E * D * PD_F};
    const int fan_in[4] = {PD_D, PD_Q, PD_D, PD_F};
    __nv_bfloat16 **dst[4] = {&ly->qkv, &ly->o, &ly->gu, &ly->down};
    const char *what[4] = {"Wqkv [5120][2880] bf16", "Wo [2880][4096] bf16",
                           "W gate+up [32][5760][2880] bf16", "W down [32][2880][2880] bf16"};
    for (int i = 0; i < 4; i++) {
      *dst[i] = (__nv_bfloat16 *)gtl_malloc(n[i] * 2, what[i]);
      const float a = sqrtf(3.0f / fan_in[i]);
      gtl_fill_uniform(*dst[i], GTL_BF16, n[i], seed + 101 * (uint64_t)(l * 8 + i + 1), -a, a, s);
    }
    ly->attn_norm = (float *)gtl_malloc(D * 4, "attn_norm [2880] fp32");
    ly->ffn_norm = (float *)gtl_malloc(D * 4, "ffn_norm [2880] fp32");
    gtl_fill_uniform(ly->attn_norm, GTL_FP32, D, seed + 101 * (uint64_t)(l * 8 + 5), 0.8f, 1.2f, s);
    gtl_fill_uniform(ly->ffn_norm, GTL_FP32, D, seed + 101 * (uint64_t)(l * 8 + 6), 0.8f, 1.2f, s);
  }
  w->dec_x0 = (float *)gtl_malloc(D * 4, "decode x0 [2880] fp32");
  gtl_fill_uniform(w->dec_x0, GTL_FP32, D, seed + 7, -1.0f, 1.0f, s);
  w->dec_out = (float *)gtl_guarded_alloc(g_dec, (size_t)w->S * D * 4, "decode out [S][2880] fp32");
  w->dec_xn = (float *)gtl_malloc(D * 4, "decode xn");
  w->dec_qkv = (float *)gtl_malloc(PD_QKV * 4, "decode qkv");
  w->dec_a = (float *)gtl_malloc(PD_Q * 4, "decode attention stand-in");
  w->dec_h = (float *)gtl_malloc((size_t)PD_TOP_K * 2 * PD_F * 4, "decode expert gate+up");
  w->dec_act = (float *)gtl_malloc((size_t)PD_TOP_K * PD_F * 4, "decode expert act");
  const size_t n_in = (size_t)w->C * T * D;
  w->pre_in = (__nv_bfloat16 *)gtl_malloc(n_in * 2, "prefill inputs [C][T][2880] bf16");
  gtl_fill_uniform(w->pre_in, GTL_BF16, n_in, seed + 9, -1.0f, 1.0f, s);
  w->pre_out = (float *)gtl_guarded_alloc(g_pre, n_in * 4, "prefill out [C][T][2880] fp32");
  w->pre_xn = (__nv_bfloat16 *)gtl_malloc(T * D * 2, "prefill xn");
  w->pre_qkv = (__nv_bfloat16 *)gtl_malloc(T * PD_QKV * 2, "prefill qkv");
  w->pre_a = (__nv_bfloat16 *)gtl_malloc(T * PD_Q * 2, "prefill attention stand-in");
  w->pre_y = (__nv_bfloat16 *)gtl_malloc(T * D * 2, "prefill o-proj out");
  w->pre_xe = (__nv_bfloat16 *)gtl_malloc(rows * D * 2, "prefill expert inputs");
  w->pre_he = (__nv_bfloat16 *)gtl_malloc(rows * 2 * PD_F * 2, "prefill expert gate+up");
  w->pre_ae = (__nv_bfloat16 *)gtl_malloc(rows * PD_F * 2, "prefill expert act");
  w->pre_ye = (__nv_bfloat16 *)gtl_malloc(rows * D * 2, "prefill expert out");
  GTL_CUBLAS(cublasLtCreate(&w->lt));
  w->lt_ws_bytes = (size_t)32 << 20;
  w->lt_ws = gtl_malloc(w->lt_ws_bytes, "cuBLASLt workspace");
  pd_gemm_init(w, &w->g_qkv, PD_QKV, (int)T, PD_D, 1, 0, 0, 0);
  pd_gemm_init(w, &w->g_o, PD_D, (int)T, PD_Q, 1, 0, 0, 0);
  pd_gemm_init(w, &w->g_gu, 2 * PD_F, (int)R, PD_D, PD_E, (int64_t)2 * PD_F * PD_D,
               (int64_t)R * PD_D, (int64_t)R * 2 * PD_F);
  pd_gemm_init(w, &w->g_down, PD_D, (int)R, PD_F, PD_E, (int64_t)PD_D * PD_F, (int64_t)R * PD_F,
               (int64_t)R * PD_D);
  GTL_CUDA(cudaStreamSynchronize(s));
}

static void pd_release(PdWork *w) {
  for (int l = 0; l < w->L; l++) {
    PdLayer *ly = &w->layer[l];
    void *p[6] = {ly->qkv, ly->o, ly->gu, ly->down, ly->attn_norm, ly->ffn_norm};
    for (int i = 0; i < 6; i++) GTL_CUDA(cudaFree(p[i]));
  }
  void *p[15] = {w->dec_x0, w->dec_xn, w->dec_qkv, w->dec_a, w->dec_h, w->dec_act, w->pre_in,
                 w->pre_xn, w->pre_qkv, w->pre_a, w->pre_y, w->pre_xe, w->pre_he, w->pre_ae,
                 w->lt_ws};
  for (int i = 0; i < 15; i++) GTL_CUDA(cudaFree(p[i]));
  GTL_CUDA(cudaFree(w->pre_ye));
  PdGemm *gs[4] = {&w->g_qkv, &w->g_o, &w->g_gu, &w->g_down};
  for (int i = 0; i < 4; i++) {
    GTL_CUBLAS(cublasLtMatmulDescDestroy(gs[i]->op));
    GTL_CUBLAS(cublasLtMatrixLayoutDestroy(gs[i]->a));
    GTL_CUBLAS(cublasLtMatrixLayoutDestroy(gs[i]->b));
    GTL_CUBLAS(cublasLtMatrixLayoutDestroy(gs[i]->c));
  }
  GTL_CUBLAS(cublasLtDestroy(w->lt));
}

// ---- CPU double reference ------------------------------------------------------------------
typedef struct {
  const PdWork *w;
  uint16_t *qkv[PD_MAX_LAYERS], *o[PD_MAX_LAYERS], *gu[PD_MAX_LAYERS][PD_E],
      *down[PD_MAX_LAYERS][PD_E];
  float g1[PD_MAX_LAYERS][PD_D], g2[PD_MAX_LAYERS][PD_D];
} PdHostW;

// A weight matrix on the host, copied from the device the first time it is needed.
static const uint16_t *ref_w(uint16_t **slot, const __nv_bfloat16 *d, size_t n) {
  if (!*slot) {
    *slot = (uint16_t *)malloc(n * 2);
    if (!*slot) {
      fprintf(stderr, "error: host out of memory for %zu reference weights\n", n);
      exit(GTL_EXIT_RUNTIME);
    }
    GTL_CUDA(cudaMemcpy(*slot, d, n * 2, cudaMemcpyDeviceToHost));
  }
  return *slot;
}
static inline double ref_bf(uint16_t v) {  // a bf16 is the top half of an fp32
  const uint32_t u = (uint32_t)v << 16;
  float f;
  memcpy(&f, &u, 4);
  return f;
}
static inline double ref_round(double v, int bf16) { return bf16 ? gtl_round_bf16((float)v) : v; }
// out[n] = W[n]·x for a [N][K] bf16 matrix, rounded to bf16 where the GPU stores bf16.
static void ref_gemv(const uint16_t *W, const double *x, double *out, int N, int K, int bf16) {
  for (int n = 0; n < N; n++) {
    const uint16_t *r = W + (size_t)n * K;
    double s = 0;
    for (int k = 0; k < K; k++) s += ref_bf(r[k]) * x[k];
    out[n] = ref_round(s, bf16);
  }
}
static void ref_rmsnorm(const double *x, const float *g, double *out, int bf16) {
  double ss = 0;
  for (int d = 0; d < PD_D; d++) ss += x[d] * x[d];
  const double inv = 1.0 / sqrt(ss / PD_D + (double)PD_EPS);
  for (int d = 0; d < PD_D; d++) out[d] = ref_round(x[d] * inv * g[d], bf16);
}

// One token through the L layers, in place on x[D]. Decode (bf16 = 0) passes its experts
// per layer; prefill (bf16 = 1) passes chunk and token and gets them from pd_slot.
static void ref_token(PdHostW *h, double *x, int bf16, int step, int chunk, int t) {
  const PdWork *w = h->w;
  double *xn = (double *)malloc(sizeof(double) * PD_D);
  double *qkv = (double *)malloc(sizeof(double) * PD_QKV);
  double *a = (double *)malloc(sizeof(double) * PD_Q), *y = (double *)malloc(sizeof(double) * PD_D);
  double *hh = (double *)malloc(sizeof(double) * 2 * PD_F);
  double *act = (double *)malloc(sizeof(double) * PD_F);
  for (int l = 0; l < w->L; l++) {
    const PdLayer *ly = &w->layer[l];
    const uint16_t *Wqkv = ref_w(&h->qkv[l], ly->qkv, (size_t)PD_QKV * PD_D);
    const uint16_t *Wo = ref_w(&h->o[l], ly->o, (size_t)PD_D * PD_Q);
    ref_rmsnorm(x, h->g1[l], xn, bf16);
    ref_gemv(Wqkv, xn, qkv, PD_QKV, PD_D, bf16);
    for (int q = 0; q < PD_Q; q++)
      a[q] = qkv[PD_Q + PD_KV + (q / PD_HEAD_DIM / (PD_HEADS / PD_KV_HEADS)) * PD_HEAD_DIM +
                 q % PD_HEAD_DIM];
    ref_gemv(Wo, a, y, PD_D, PD_Q, bf16);
    for (int d = 0; d < PD_D; d++) x[d] += y[d];
    ref_rmsnorm(x, h->g2[l], xn, bf16);
    int e[PD_TOP_K];
    float wt[PD_TOP_K];
    if (bf16) {
      const int off = pd_prefill_offset(w, chunk, l);
      for (int j = 0; j < PD_TOP_K; j++) e[j] = (t * PD_TOP_K + j + off) % PD_E;
      pd_route_weights(w->seed ^ PD_SEED_PRE_WEIGHT, pd_prefill_wbase(w, chunk, l) + t, wt);
    } else {
      pd_decode_route(w, step, l, e, wt);
    }
    double *sum = (double *)calloc(PD_D, sizeof(double));
    for (int j = 0; j < PD_TOP_K; j++) {
      const uint16_t *Wgu = ref_w(&h->gu[l][e[j]], ly->gu + (size_t)e[j] * 2 * PD_F * PD_D,
                                  (size_t)2 * PD_F * PD_D);
      const uint16_t *Wd = ref_w(&h->down[l][e[j]], ly->down + (size_t)e[j] * PD_D * PD_F,
                                 (size_t)PD_D * PD_F);
      ref_gemv(Wgu, xn, hh, 2 * PD_F, PD_D, bf16);
      for (int f = 0; f < PD_F; f++)
        act[f] = ref_round(hh[f] / (1.0 + exp(-hh[f])) * hh[PD_F + f], bf16);
      ref_gemv(Wd, act, y, PD_D, PD_F, bf16);
      for (int d = 0; d < PD_D; d++) sum[d] += (double)wt[j] * y[d];
    }
    for (int d = 0; d < PD_D; d++) x[d] += sum[d];
    free(sum);
  }
  free(xn), free(qkv), free(a), free(y), free(hh), free(act);
}

// Validate the sequential run's outputs (already on the host): decode steps 0..1 and tokens
// {0, T/2, T−1} of the first and last chunk. Returns pass of both; errors in e_dec, e_pre.
static int pd_validate(const PdWork *w, const float *h_dec, const float *h_pre, GtlErr *e_dec,
                       GtlErr *e_pre) {
  PdHostW *h = (PdHostW *)calloc(1, sizeof(PdHostW));
  h->w = w;
  for (int l = 0; l < w->L; l++) {
    GTL_CUDA(cudaMemcpy(h->g1[l], w->layer[l].attn_norm, PD_D * 4, cudaMemcpyDeviceToHost));
    GTL_CUDA(cudaMemcpy(h->g2[l], w->layer[l].ffn_norm, PD_D * 4, cudaMemcpyDeviceToHost));
  }
  const int V = w->S < 2 ? w->S : 2;
  double *x = (double *)malloc(sizeof(double) * PD_D);
  double *ref = (double *)malloc(sizeof(double) * PD_D * 6);
  float *out = (float *)malloc(sizeof(float) * PD_D * 6);
  float *x0 = (float *)malloc(sizeof(float) * PD_D);
  GTL_CUDA(cudaMemcpy(x0, w->dec_x0, PD_D * 4, cudaMemcpyDeviceToHost));
  for (int d = 0; d < PD_D; d++) x[d] = x0[d];
  for (int i = 0; i < V; i++) {  // the chain: step 1 starts from the reference's step 0
    ref_token(h, x, 0, i, 0, 0);
    memcpy(ref + (size_t)i * PD_D, x, sizeof(double) * PD_D);
    memcpy(out + (size_t)i * PD_D, h_dec + (size_t)i * PD_D, sizeof(float) * PD_D);
  }
  const GtlTol tol_dec = {1e-4, 1e-3, 1e-3};  // fp32 summation only (header comment)
  gtl_compare(out, ref, (size_t)V * PD_D, tol_dec, e_dec);
  const int chunks[2] = {0, w->C - 1}, toks[3] = {0, w->T / 2, w->T - 1};
  uint16_t *xin = (uint16_t *)malloc(2 * PD_D);
  int n = 0;
  for (int ci = 0; ci < 2; ci++)
    for (int ti = 0; ti < 3; ti++) {
      const int c = chunks[ci], t = toks[ti];
      if (ci == 1 && c == chunks[0]) continue;  // one chunk only
      const size_t row = ((size_t)c * w->T + t) * PD_D;
      GTL_CUDA(cudaMemcpy(xin, w->pre_in + row, 2 * PD_D, cudaMemcpyDeviceToHost));
      for (int d = 0; d < PD_D; d++) x[d] = ref_bf(xin[d]);
      ref_token(h, x, 1, 0, c, t);
      memcpy(ref + (size_t)n * PD_D, x, sizeof(double) * PD_D);
      memcpy(out + (size_t)n * PD_D, h_pre + row, sizeof(float) * PD_D);
      n++;
    }
  gtl_compare(out, ref, (size_t)n * PD_D, gtl_tol_for(GTL_BF16), e_pre);
  for (int l = 0; l < PD_MAX_LAYERS; l++) {
    free(h->qkv[l]), free(h->o[l]);
    for (int e = 0; e < PD_E; e++) free(h->gu[l][e]), free(h->down[l][e]);
  }
  free(h), free(x), free(ref), free(out), free(x0), free(xin);
  return e_dec->pass && e_pre->pass;
}

// ---- placements, the scenario and its timing ----------------------------------------------
typedef enum { PD_TIME_SLICED, PD_SEQUENTIAL, PD_STREAMS, PD_GRAPH, PD_SPLIT } PdKind;

typedef struct {
  PdKind kind;
  int split_p;    // PD_SPLIT: percent of the SMs for prefill (the rest for decode)
  int sm_target;  // PD_SPLIT: tell cuBLASLt the prefill partition's SM count
  char name[32];  // "time_sliced", "split_70_30", …
} PdMode;

typedef struct {
  cudaStream_t dec, pre;  // where each stage runs (equal: one stream, arrival order)
  int sequential;         // every decode step first, then every chunk
  int graphs;             // replay one CUDA graph per step and per chunk
  int sms_dec, sms_pre;   // SMs each stage may use; 0 = the whole GPU
  int cublas_sms;         // CUBLASLT_MATMUL_DESC_SM_COUNT_TARGET for the prefill GEMMs
  cudaGraphExec_t *g_dec, *g_pre;  // filled by the driver when graphs
} PdPlacement;

// What optimized.cu supplies: fill pl for mode m (pl == NULL: only say whether m can run
// here). Returns 0, or GTL_EXIT_WAIVED with why. unplace releases what place made.
typedef int (*PdPlaceFn)(const GtlCtx *ctx, const PdMode *m, PdPlacement *pl, char *why,
                         size_t n);
typedef void (*PdUnplaceFn)(PdPlacement *pl);

typedef struct {
  cudaEvent_t start, end, *dec, *pre0, *pre1;  // dec[S+1]: step boundaries; pre0/1[C]: chunks
} PdEvents;

static const void *pd_name_step, *pd_name_chunk;
// Per-step and per-chunk markers are NVTX start/end ranges (payload = index): they leave the
// push/pop stack alone, so "gauntlet@ch17.<variant>.timed]" still names the innermost range
// around every launch (scripts/profile.sh).

static void pd_chunk_enqueue(const PdWork *w, const PdPlacement *pl, const PdEvents *ev, int c) {
  const unsigned long long id = gtl_nvtx_start_payload(pd_name_chunk, c);
  GTL_CUDA(cudaEventRecord(ev->pre0[c], pl->pre));
  if (pl->graphs) GTL_CUDA(cudaGraphLaunch(pl->g_pre[c], pl->pre));
  else pd_prefill_chunk(w, c, pl->pre);
  GTL_CUDA(cudaEventRecord(ev->pre1[c], pl->pre));
  gtl_nvtx_end(id);
}

// One iteration of the scenario, forked from and joined back to `origin`.
static void pd_enqueue(const PdWork *w, const PdPlacement *pl, cudaStream_t origin,
                       const PdEvents *ev) {
  GTL_CUDA(cudaEventRecord(ev->start, origin));
  if (pl->dec != origin) GTL_CUDA(cudaStreamWaitEvent(pl->dec, ev->start, 0));
  if (pl->pre != origin && pl->pre != pl->dec) GTL_CUDA(cudaStreamWaitEvent(pl->pre, ev->start, 0));
  GTL_CUDA(cudaEventRecord(ev->dec[0], pl->dec));
  int c = 0;
  for (int i = 0; i < w->S; i++) {
    if (!pl->sequential && i % w->every == 0 && c < w->C) {  // chunk c arrives as step i starts
      if (pl->pre != pl->dec) GTL_CUDA(cudaStreamWaitEvent(pl->pre, ev->dec[i], 0));
      pd_chunk_enqueue(w, pl, ev, c++);
    }
    const unsigned long long id = gtl_nvtx_start_payload(pd_name_step, i);
    if (pl->graphs) GTL_CUDA(cudaGraphLaunch(pl->g_dec[i], pl->dec));
    else pd_decode_step(w, i, pl->dec);
    GTL_CUDA(cudaEventRecord(ev->dec[i + 1], pl->dec));
    gtl_nvtx_end(id);
  }
  if (pl->sequential) {
    if (pl->pre != pl->dec) GTL_CUDA(cudaStreamWaitEvent(pl->pre, ev->dec[w->S], 0));
    for (; c < w->C; c++) pd_chunk_enqueue(w, pl, ev, c);
  }
  if (pl->dec != origin) GTL_CUDA(cudaStreamWaitEvent(origin, ev->dec[w->S], 0));
  if (pl->pre != origin) GTL_CUDA(cudaStreamWaitEvent(origin, ev->pre1[w->C - 1], 0));
  GTL_CUDA(cudaEventRecord(ev->end, origin));
}

// Capture one graph per decode step (on pl->dec) and per chunk (on pl->pre).
static void pd_graphs_build(const PdWork *w, PdPlacement *pl) {
  pl->g_dec = (cudaGraphExec_t *)calloc(w->S, sizeof(cudaGraphExec_t));
  pl->g_pre = (cudaGraphExec_t *)calloc(w->C, sizeof(cudaGraphExec_t));
  for (int i = 0; i < w->S + w->C; i++) {
    const int is_dec = i < w->S;
    const cudaStream_t s = is_dec ? pl->dec : pl->pre;
    cudaGraph_t g;
    GTL_CUDA(cudaStreamBeginCapture(s, cudaStreamCaptureModeThreadLocal));
    if (is_dec) pd_decode_step(w, i, s);
    else pd_prefill_chunk(w, i - w->S, s);
    GTL_CUDA(cudaStreamEndCapture(s, &g));
    GTL_CUDA(cudaGraphInstantiate(is_dec ? &pl->g_dec[i] : &pl->g_pre[i - w->S], g, 0));
    GTL_CUDA(cudaGraphDestroy(g));
  }
}
static void pd_graphs_free(const PdWork *w, PdPlacement *pl) {
  for (int i = 0; pl->g_dec && i < w->S; i++) GTL_CUDA(cudaGraphExecDestroy(pl->g_dec[i]));
  for (int i = 0; pl->g_pre && i < w->C; i++) GTL_CUDA(cudaGraphExecDestroy(pl->g_pre[i]));
  free(pl->g_dec), free(pl->g_pre);
  pl->g_dec = pl->g_pre = NULL;
}

typedef struct {
  PdMode mode;
  int sms_dec, sms_pre;
  GtlStats tpot;  // ms, over iters × S steps
  double prefill_tok_s, prefill_tflops, makespan_ms;
  int ran, waived;
  char why[256];
  int equal;  // bitwise equal to the sequential run's outputs: 1, 0; -1 is that run; -2 unchecked
  int check;  // --check-sm: -1 not run, 1 PASS, 0 FAIL, 2 shown only (no partition)
  int seen_dec, seen_pre, seen_both;
} PdRow;

static int pd_popcount(const unsigned int *m) {
  int n = 0;
  for (int i = 0; i < PD_SMLOG_WORDS; i++) n += __builtin_popcount(m[i]);
  return n;
}

// Warm-up and timed iterations of one placement: TPOT per step, prefill busy time, makespan.
static void pd_time(GtlCtx *ctx, const PdWork *w, const PdPlacement *pl, const PdEvents *ev,
                    PdRow *row) {
  const int iters = ctx->args.iters;
  float *tpot = (float *)malloc(sizeof(float) * (size_t)iters * w->S);
  float *mk = (float *)malloc(sizeof(float) * iters);
  double busy_ms = 0;
  gtl_phase_push(GTL_PHASE_WARMUP);
  for (int it = 0; it < ctx->args.warmup; it++) pd_enqueue(w, pl, ctx->stream, ev);
  GTL_CUDA(cudaStreamSynchronize(ctx->stream));
  gtl_phase_pop();
  gtl_phase_push(GTL_PHASE_TIMED);
  for (int it = 0; it < iters; it++) {  // events are reused: read them before the next iteration
    pd_enqueue(w, pl, ctx->stream, ev);
    GTL_CUDA(cudaEventSynchronize(ev->end));
    for (int i = 0; i < w->S; i++)
      GTL_CUDA(cudaEventElapsedTime(&tpot[(size_t)it * w->S + i], ev->dec[i], ev->dec[i + 1]));
    for (int c = 0; c < w->C; c++) {
      float ms;
      GTL_CUDA(cudaEventElapsedTime(&ms, ev->pre0[c], ev->pre1[c]));
      busy_ms += ms;
    }
    GTL_CUDA(cudaEventElapsedTime(&mk[it], ev->start, ev->end));
  }
  gtl_phase_pop();
  GtlStats ms;
  if (gtl_stats_compute(tpot, iters * w->S, &row->tpot) || gtl_stats_compute(mk, iters, &ms)) {
    fprintf(stderr, "error: timing produced a non-finite sample\n");
    exit(GTL_EXIT_RUNTIME);
  }
  row->makespan_ms = ms.median;
  row->prefill_tok_s = (double)iters * w->C * w->T / (busy_ms * 1e-3);
  row->prefill_tflops = (double)iters * w->C * pd_prefill_flops(w) / (busy_ms * 1e-3) / 1e12;
  free(tpot), free(mk);
}

// One untimed run with %smid logging on: which SMs each stage's blocks ran on.
static void pd_check_sm(GtlCtx *ctx, const PdWork *w, const PdPlacement *pl, const PdEvents *ev,
                        PdRow *row) {
  unsigned int *d_log = (unsigned int *)gtl_malloc(2 * PD_SMLOG_WORDS * 4, "smid log");
  unsigned int h_log[2 * PD_SMLOG_WORDS], *none = NULL;
  GTL_CUDA(cudaMemset(d_log, 0, 2 * PD_SMLOG_WORDS * 4));
  GTL_CUDA(cudaMemcpyToSymbol(pd_smlog, &d_log, sizeof d_log));
  pd_enqueue(w, pl, ctx->stream, ev);
  GTL_CUDA(cudaStreamSynchronize(ctx->stream));
  GTL_CUDA(cudaMemcpyToSymbol(pd_smlog, &none, sizeof none));
  GTL_CUDA(cudaMemcpy(h_log, d_log, sizeof h_log, cudaMemcpyDeviceToHost));
  GTL_CUDA(cudaFree(d_log));
  unsigned int both[PD_SMLOG_WORDS];
  for (int i = 0; i < PD_SMLOG_WORDS; i++) both[i] = h_log[i] & h_log[PD_SMLOG_WORDS + i];
  row->seen_dec = pd_popcount(h_log);
  row->seen_pre = pd_popcount(h_log + PD_SMLOG_WORDS);
  row->seen_both = pd_popcount(both);
  if (pl->sms_dec > 0 && pl->sms_pre > 0)
    row->check =
        row->seen_both == 0 && row->seen_dec <= pl->sms_dec && row->seen_pre <= pl->sms_pre;
  else
    row->check = 2;
}

// First differing fp32 word of two host buffers, or -1.
static long long pd_first_diff(const float *a, const float *b, size_t n, size_t *n_diff) {
  long long first = -1;
  *n_diff = 0;
  const uint32_t *ua = (const uint32_t *)a, *ub = (const uint32_t *)b;
  for (size_t i = 0; i < n; i++)
    if (ua[i] != ub[i]) {
      if (first < 0) first = (long long)i;
      (*n_diff)++;
    }
  return first;
}

// ---- the driver ------------------------------------------------------------------------------
typedef struct {
  GtlCtx ctx;
  PdWork w;
  GtlGuarded g_dec, g_pre;
  PdEvents ev;
  float *h_ref_dec, *h_ref_pre, *h_dec, *h_pre;  // sequential outputs; the current mode's
  GtlErr e_dec, e_pre;
  int check_sm;
  PdPlaceFn place;
  PdUnplaceFn unplace;
} PdRun;

// Run one mode: place, (capture), validated run, bitwise check, timing, (--check-sm).
// Returns 0, GTL_EXIT_FAIL (a wrong output: reported, never timed) or GTL_EXIT_WAIVED.
static int pd_run_mode(PdRun *r, const PdMode *m, PdRow *row) {
  GtlCtx *ctx = &r->ctx;
  PdWork *w = &r->w;
  memset(row, 0, sizeof *row);
  row->mode = *m;
  row->check = -1;
  row->equal = -2;
  PdPlacement pl;
  memset(&pl, 0, sizeof pl);
  if (m->kind == PD_TIME_SLICED || m->kind == PD_SEQUENTIAL) {
    pl.dec = pl.pre = ctx->stream;
    pl.sequential = m->kind == PD_SEQUENTIAL;
  } else if (r->place(ctx, m, &pl, row->why, sizeof row->why) != 0) {
    row->waived = 1;
    return GTL_EXIT_WAIVED;
  }
  char nm[96];
  snprintf(nm, sizeof nm, "ch17.%s.mode.%s", ctx->variant, m->name);
  gtl_nvtx_push(gtl_nvtx_name(nm));
  row->sms_dec = pl.sms_dec;
  row->sms_pre = pl.sms_pre;
  pd_gemm_sm_target(w, pl.cublas_sms);
  if (pl.graphs) pd_graphs_build(w, &pl);
  const size_t n_dec = (size_t)w->S * PD_D, n_pre = (size_t)w->C * w->T * PD_D;
  int rc = 0;
  if (ctx->args.verify) {
    gtl_phase_push(GTL_PHASE_VALIDATE);
    gtl_poison(w->dec_out, n_dec * 4, ctx->stream);
    gtl_poison(w->pre_out, n_pre * 4, ctx->stream);
    pd_enqueue(w, &pl, ctx->stream, &r->ev);
    GTL_CUDA(cudaStreamSynchronize(ctx->stream));
    const int is_ref = m->kind == PD_SEQUENTIAL;
    float *hd = is_ref ? r->h_ref_dec : r->h_dec, *hp = is_ref ? r->h_ref_pre : r->h_pre;
    GTL_CUDA(cudaMemcpy(hd, w->dec_out, n_dec * 4, cudaMemcpyDeviceToHost));
    GTL_CUDA(cudaMemcpy(hp, w->pre_out, n_pre * 4, cudaMemcpyDeviceToHost));
    const size_t bad = gtl_guarded_check(&r->g_dec) + gtl_guarded_check(&r->g_pre);
    if (bad) fprintf(stderr, "ch17: %zu guard bytes around the outputs were overwritten\n", bad);
    if (is_ref) {
      gtl_phase_push(GTL_PHASE_REFERENCE);
      const int ok = pd_validate(w, hd, hp, &r->e_dec, &r->e_pre);
      gtl_phase_pop();
      if (!ctx->args.json) {
        gtl_err_print(stdout, &r->e_dec, "decode steps 0-1 vs CPU double");
        gtl_err_print(stdout, &r->e_pre,
                      "prefill tokens {0, T/2, T-1} of chunks 0, C-1 vs CPU double");
      }
      row->equal = -1;
      if (!ok || bad) rc = GTL_EXIT_FAIL;
    } else {
      size_t nd_dec, nd_pre;
      const long long f_dec = pd_first_diff(hd, r->h_ref_dec, n_dec, &nd_dec);
      const long long f_pre = pd_first_diff(hp, r->h_ref_pre, n_pre, &nd_pre);
      row->equal = f_dec < 0 && f_pre < 0 && !bad;
      if (!row->equal) {
        fprintf(stderr, "ch17 %s: outputs differ from the sequential run's: decode %zu words "
                        "(first %lld), prefill %zu words (first %lld)\n",
                m->name, nd_dec, f_dec, nd_pre, f_pre);
        rc = GTL_EXIT_FAIL;
      }
    }
    gtl_phase_pop();
  }
  if (rc == 0) {
    pd_time(ctx, w, &pl, &r->ev, row);
    row->ran = 1;
    if (r->check_sm && m->kind != PD_SEQUENTIAL) pd_check_sm(ctx, w, &pl, &r->ev, row);
    if (row->check == 0) rc = GTL_EXIT_FAIL;
  }
  GTL_CUDA(cudaDeviceSynchronize());
  if (pl.graphs) pd_graphs_free(w, &pl);
  pd_gemm_sm_target(w, 0);
  if (r->unplace && m->kind != PD_TIME_SLICED && m->kind != PD_SEQUENTIAL) r->unplace(&pl);
  gtl_nvtx_pop();
  return rc;
}

static void pd_table(const PdRun *r, const PdRow *rows, int n) {
  if (r->ctx.args.json) return;
  const PdRow *seq = NULL;
  for (int i = 0; i < n; i++)
    if (rows[i].mode.kind == PD_SEQUENTIAL && rows[i].ran) seq = &rows[i];
  printf("\n%-13s %-8s %8s %8s %8s %8s %8s %8s %12s %6s %10s %-7s %s\n", "mode", "SMs P+D",
         "mean_ms", "p50_ms", "p95_ms", "p99_ms", "min_ms", "max_ms", "prefill_tok/s", "%seq",
         "makespan", "outputs", "check_sm (decode, prefill, both)");
  for (int i = 0; i < n; i++) {
    const PdRow *q = &rows[i];
    char sms[24], chk[64];
    if (q->sms_pre) snprintf(sms, sizeof sms, "%d+%d", q->sms_pre, q->sms_dec);
    else snprintf(sms, sizeof sms, "%s", q->mode.kind == PD_SEQUENTIAL ? "all,alone" : "shared");
    if (q->waived) {
      printf("%-13s %-8s WAIVED: %s\n", q->mode.name, "-", q->why);
      continue;
    }
    if (!q->ran) {
      printf("%-13s %-8s not timed (validation failed)\n", q->mode.name, sms);
      continue;
    }
    if (q->check < 0) snprintf(chk, sizeof chk, "-");
    else
      snprintf(chk, sizeof chk, "%s %d, %d, %d",
               q->check == 1 ? "PASS" : q->check == 0 ? "FAIL" : "shared", q->seen_dec,
               q->seen_pre, q->seen_both);
    printf("%-13s %-8s %8.3f %8.3f %8.3f %8.3f %8.3f %8.3f %12.0f %6.1f %10.2f %-7s %s\n",
           q->mode.name, sms, q->tpot.mean, q->tpot.median, q->tpot.p95, q->tpot.p99, q->tpot.min,
           q->tpot.max, q->prefill_tok_s, seq ? 100.0 * q->prefill_tok_s / seq->prefill_tok_s : NAN,
           q->makespan_ms,
           q->equal == -1 ? "ref" : q->equal == -2 ? "-" : q->equal ? "equal" : "DIFFER", chk);
  }
}

// Index of the serving configuration (not the sequential reference) with the lowest decode
// p99, among those whose prefill keeps >= min_frac of the sequential tok/s (0: any).
static int pd_best(const PdRow *rows, int n, double seq_tok_s, double min_frac, int by_prefill) {
  int best = -1;
  for (int i = 0; i < n; i++) {
    const PdRow *q = &rows[i];
    if (!q->ran || q->mode.kind == PD_SEQUENTIAL) continue;
    if (min_frac > 0 && !(q->prefill_tok_s >= min_frac * seq_tok_s)) continue;
    if (best < 0 || (by_prefill ? q->prefill_tok_s > rows[best].prefill_tok_s
                                : q->tpot.p99 < rows[best].tpot.p99))
      best = i;
  }
  return best;
}

static int pd_parse_split(const char *s, int *p) {  // "P:D", integers 1..99, P + D = 100
  int a = -1, b = -1, used = 0;
  if (!s || sscanf(s, "%3d:%3d%n", &a, &b, &used) != 2 || s[used] != '\0') return -1;
  if (a < 1 || a > 99 || b < 1 || b > 99 || a + b != 100) return -1;
  for (const char *c = s; *c; c++)
    if (!(*c == ':' || (*c >= '0' && *c <= '9'))) return -1;
  *p = a;
  return 0;
}

static void pd_mode_init(PdMode *m, PdKind k, int p, int sm_target) {
  static const char *names[] = {"time_sliced", "sequential", "streams", "graph", "split"};
  memset(m, 0, sizeof *m);
  m->kind = k;
  m->split_p = p;
  m->sm_target = sm_target;
  if (k == PD_SPLIT) snprintf(m->name, sizeof m->name, "split_%d_%d", p, 100 - p);
  else snprintf(m->name, sizeof m->name, "%s", names[k]);
}

// main() of both programs. place == NULL (baseline): the time-sliced schedule only.
static int pd_main(int argc, char **argv, const char *variant, const char *strategy,
                   PdPlaceFn place, PdUnplaceFn unplace) {
  PdRun *r = (PdRun *)calloc(1, sizeof(PdRun));
  GtlCtx *ctx = &r->ctx;
  PdWork *w = &r->w;
  int64_t steps = -1, every = -1, chunk = -1, layers = -1, sm_target = 1;
  const char *mode_s = NULL, *split_s = NULL;
  int sweep = 0;
  GtlOpt opts[] = {
      {"steps", GTL_OPT_INT, &steps, "decode steps per scenario (default 128)"},
      {"every", GTL_OPT_INT, &every, "a prefill chunk arrives every N decode steps (default 8)"},
      {"chunk", GTL_OPT_INT, &chunk, "tokens per prefill chunk, a multiple of 8 (default 2048)"},
      {"layers", GTL_OPT_INT, &layers, "model layers per step and per chunk, 1..8 (default 2)"},
      {"mode", GTL_OPT_STR, &mode_s, "sequential|streams|graph|split (default split)"},
      {"split", GTL_OPT_STR, &split_s, "P:D percent of the SMs for prefill:decode (default 70:30)"},
      {"sweep", GTL_OPT_FLAG, &sweep, "every mode and the splits 50:50 70:30 30:70, one table"},
      {"check-sm", GTL_OPT_FLAG, &r->check_sm, "log %smid per block: each stage on its partition?"},
      {"sm_target", GTL_OPT_INT, &sm_target,
       "1: tell cuBLASLt the prefill partition's SMs (default)"}};
  const int n_opts = place ? 9 : 4;
  // size presets: small / default / large; explicit flags win
  gtl_parse(ctx, "ch17", variant, argc, argv, opts, n_opts, 1, 10, GTL_L2_WARM);
  const int z = ctx->args.size == GTL_SIZE_SMALL ? 0 : ctx->args.size == GTL_SIZE_LARGE ? 2 : 1;
  const int64_t p_steps[3] = {32, 128, 256}, p_every[3] = {4, 8, 8}, p_chunk[3] = {512, 2048, 4096},
                p_layers[3] = {1, 2, 2};
  if (steps < 0) steps = p_steps[z];
  if (every < 0) every = p_every[z];
  if (chunk < 0) chunk = p_chunk[z];
  if (layers < 0) layers = p_layers[z];
  if (steps < 1 || steps > 8192 || every < 1 || every > steps || chunk < 8 || chunk > 16384 ||
      chunk % 8 || layers < 1 || layers > PD_MAX_LAYERS)
    gtl_usage_fail(ctx, "need 1 <= steps <= 8192, 1 <= every <= steps, 8 <= chunk <= 16384 "
                        "with chunk a multiple of 8, 1 <= layers <= %d", PD_MAX_LAYERS);
  PdMode modes[8];
  int n_modes = 0, split_p = 70;
  if (split_s && pd_parse_split(split_s, &split_p) != 0)
    gtl_usage_fail(ctx, "--split wants P:D, two integers 1..99 that sum to 100 (e.g. 70:30); "
                        "got '%s'", split_s);
  if (sm_target != 0 && sm_target != 1) gtl_usage_fail(ctx, "--sm_target is 0 or 1");
  PdKind kind = place ? PD_SPLIT : PD_TIME_SLICED;
  if (mode_s) {
    const char *k[4] = {"sequential", "streams", "graph", "split"};
    const PdKind kk[4] = {PD_SEQUENTIAL, PD_STREAMS, PD_GRAPH, PD_SPLIT};
    int found = -1;
    for (int i = 0; i < 4; i++)
      if (!strcmp(mode_s, k[i])) found = i;
    if (found < 0)
      gtl_usage_fail(ctx, "--mode is sequential, streams, graph or split; got '%s'", mode_s);
    kind = kk[found];
  }
  if (sweep && (mode_s || split_s))
    gtl_usage_fail(ctx, "--sweep runs every mode: drop --mode/--split");
  if (split_s && kind != PD_SPLIT) gtl_usage_fail(ctx, "--split goes with --mode=split");
  if (sweep) {
    const PdKind ks[3] = {PD_TIME_SLICED, PD_STREAMS, PD_GRAPH};
    const int ps[3] = {50, 70, 30};
    for (int i = 0; i < 3; i++) pd_mode_init(&modes[n_modes++], ks[i], 0, (int)sm_target);
    for (int i = 0; i < 3; i++) pd_mode_init(&modes[n_modes++], PD_SPLIT, ps[i], (int)sm_target);
  } else if (kind != PD_SEQUENTIAL) {
    pd_mode_init(&modes[n_modes++], kind, split_p, (int)sm_target);
  }
  gtl_open(ctx);
  gtl_require_cc(ctx, 8, 0, "bf16 tensor-core GEMMs (cuBLASLt)");
  if (!sweep && kind != PD_SEQUENTIAL && kind != PD_TIME_SLICED) {  // feature check, early
    char why[256];
    if (place(ctx, &modes[0], NULL, why, sizeof why) != 0) gtl_require(ctx, 0, why);
  }
  r->place = place;
  r->unplace = unplace;
  w->S = (int)steps, w->every = (int)every, w->T = (int)chunk, w->L = (int)layers;
  w->C = (w->S + w->every - 1) / w->every;
  w->seed = ctx->args.seed;

  pd_name_step = gtl_nvtx_name("decode.step");
  pd_name_chunk = gtl_nvtx_name("prefill.chunk");
  gtl_phase_push(GTL_PHASE_SETUP);
  pd_setup(w, ctx, &r->g_dec, &r->g_pre);
  PdEvents *ev = &r->ev;
  ev->dec = (cudaEvent_t *)malloc(sizeof(cudaEvent_t) * (w->S + 1));
  ev->pre0 = (cudaEvent_t *)malloc(sizeof(cudaEvent_t) * w->C);
  ev->pre1 = (cudaEvent_t *)malloc(sizeof(cudaEvent_t) * w->C);
  GTL_CUDA(cudaEventCreate(&ev->start));
  GTL_CUDA(cudaEventCreate(&ev->end));
  for (int i = 0; i <= w->S; i++) GTL_CUDA(cudaEventCreate(&ev->dec[i]));
  for (int c = 0; c < w->C; c++) GTL_CUDA(cudaEventCreate(&ev->pre0[c]));
  for (int c = 0; c < w->C; c++) GTL_CUDA(cudaEventCreate(&ev->pre1[c]));
  const size_t n_dec = (size_t)w->S * PD_D, n_pre = (size_t)w->C * w->T * PD_D;
  r->h_ref_dec = (float *)malloc(n_dec * 4), r->h_dec = (float *)malloc(n_dec * 4);
  r->h_ref_pre = (float *)malloc(n_pre * 4), r->h_pre = (float *)malloc(n_pre * 4);
  if (!r->h_ref_dec || !r->h_dec || !r->h_ref_pre || !r->h_pre) {
    fprintf(stderr, "error: host out of memory for 2 x %.0f MB of outputs\n",
            (n_dec + n_pre) * 4 / 1e6);
    return GTL_EXIT_RUNTIME;
  }
  gtl_phase_pop();

  char workload[128], notes[1400];
  snprintf(workload, sizeof workload, "S%d_every%d_chunk%d_L%d", w->S, w->every, w->T, w->L);
  snprintf(notes, sizeof notes,
           "strategy: %s\n"
           "scenario: %d decode steps (batch 1) and %d prefill chunks of %d tokens, a chunk "
           "arriving every %d steps; %d layers of gpt-oss-20b shapes\n"
           "decode step: %d kernels, %.0f MB of weights (HBM-bound; L2 %s does not apply: "
           "weights are %.1f GB); prefill chunk: %.2f TFLOP in 4 cuBLASLt GEMMs per layer "
           "(algos %d %d %d %d, no split-K) + 5 kernels per layer\n"
           "TPOT = time between consecutive decode-step ends on the decode stream; prefill "
           "tok/s = tokens / chunk busy time; makespan = median over iterations",
           strategy, w->S, w->C, w->T, w->every, w->L, 8 * w->L, pd_decode_bytes(w) / 1e6,
           gtl_l2_name(ctx->args.l2), w->L * 1.65, pd_prefill_flops(w) / 1e12, w->g_qkv.algo_id,
           w->g_o.algo_id, w->g_gu.algo_id, w->g_down.algo_id);
  gtl_report_header(ctx, workload, notes);

  // The sequential run comes first: validated against the CPU, its outputs are the
  // reference every other mode must equal bit for bit, its timing the "100-100" reference.
  PdRow rows[9];
  int n_rows = 0, rc = 0;
  PdMode seq;
  pd_mode_init(&seq, PD_SEQUENTIAL, 0, 0);
  rc = pd_run_mode(r, &seq, &rows[n_rows++]);
  for (int i = 0; i < n_modes && rc == 0; i++) {
    const int mrc = pd_run_mode(r, &modes[i], &rows[n_rows++]);
    if (mrc == GTL_EXIT_WAIVED && !sweep) gtl_require(ctx, 0, rows[n_rows - 1].why);
    if (mrc == GTL_EXIT_FAIL) rc = mrc;
  }
  pd_table(r, rows, n_rows);

  // The row the JSON line reports: the program's mode, or with --sweep the configuration
  // with the lowest decode p99 that keeps prefill within 30% of sequential.
  const PdRow *sq = &rows[0];
  int pick = n_rows - 1;
  if (sweep && rc == 0) {
    const int b_p99 = pd_best(rows, n_rows, sq->prefill_tok_s, 0, 0);
    const int b_pre = pd_best(rows, n_rows, sq->prefill_tok_s, 0, 1);
    const int b_srv = pd_best(rows, n_rows, sq->prefill_tok_s, 0.7, 0);
    const PdRow *ts = &rows[1];  // time_sliced: the baseline's schedule
    if (!ctx->args.json && b_p99 >= 0 && b_pre >= 0) {
      printf("best decode p99:          %-12s %.3f ms (%.2fx better than time_sliced)\n",
             rows[b_p99].mode.name, rows[b_p99].tpot.p99, ts->tpot.p99 / rows[b_p99].tpot.p99);
      printf("best prefill throughput:  %-12s %.0f tok/s (%.0f%% of sequential)\n",
             rows[b_pre].mode.name, rows[b_pre].prefill_tok_s,
             100.0 * rows[b_pre].prefill_tok_s / sq->prefill_tok_s);
      if (b_srv >= 0)
        printf("best decode p99 with prefill >= 70%% of sequential: %s, p99 %.3f ms (%.2fx "
               "better than time_sliced), prefill %.0f%% of sequential\n",
               rows[b_srv].mode.name, rows[b_srv].tpot.p99, ts->tpot.p99 / rows[b_srv].tpot.p99,
               100.0 * rows[b_srv].prefill_tok_s / sq->prefill_tok_s);
      else
        printf("no configuration kept prefill within 30%% of sequential\n");
    }
    pick = b_srv >= 0 ? b_srv : b_p99 >= 0 ? b_p99 : 0;
  }
  const PdRow *p = &rows[pick];
  GtlResult res;
  gtl_result_init(&res, ctx, "bf16", workload);
  res.st = p->ran ? p->tpot : res.st;
  res.bytes = pd_decode_bytes(w);
  res.bound = GTL_BOUND_READ;
  res.ref = "cpu_double";
  res.validated = ctx->args.verify;
  res.err = r->e_dec;
  if (ctx->args.verify) res.err.pass = rc == 0 && r->e_dec.pass && r->e_pre.pass;
  gtl_result_extra(&res, "split_prefill_pct", p->mode.kind == PD_SPLIT ? p->mode.split_p : NAN);
  gtl_result_extra(&res, "sms_prefill", p->sms_pre ? p->sms_pre : ctx->dev.sms);
  gtl_result_extra(&res, "sms_decode", p->sms_dec ? p->sms_dec : ctx->dev.sms);
  gtl_result_extra(&res, "tpot_mean_ms", p->ran ? p->tpot.mean : NAN);
  gtl_result_extra(&res, "tpot_max_ms", p->ran ? p->tpot.max : NAN);
  gtl_result_extra(&res, "prefill_tok_s", p->ran ? p->prefill_tok_s : NAN);
  gtl_result_extra(&res, "prefill_pct_of_sequential",
                   p->ran && sq->ran ? 100.0 * p->prefill_tok_s / sq->prefill_tok_s : NAN);
  gtl_result_extra(&res, "makespan_ms", p->ran ? p->makespan_ms : NAN);
  gtl_result_extra(&res, "sequential_tpot_p99_ms", sq->ran ? sq->tpot.p99 : NAN);
  gtl_result_extra(&res, "prefill_rel_l2_err", r->e_pre.rel_l2);
  gtl_result_extra(&res, "check_sm", p->check == 1 ? 1 : p->check == 0 ? 0 : NAN);
  gtl_result_extra(&res, "bitwise_equal", p->equal == -2 ? NAN : p->equal == -1 ? 1 : p->equal);
  if (!ctx->args.json) printf("\n");
  res.variant = ctx->variant;
  gtl_report_row(ctx, &res);
  const int frc = gtl_report_finish(ctx, &res);

  for (int i = 0; i <= w->S; i++) GTL_CUDA(cudaEventDestroy(ev->dec[i]));
  for (int c = 0; c < w->C; c++) GTL_CUDA(cudaEventDestroy(ev->pre0[c]));
  for (int c = 0; c < w->C; c++) GTL_CUDA(cudaEventDestroy(ev->pre1[c]));
  GTL_CUDA(cudaEventDestroy(ev->start));
  GTL_CUDA(cudaEventDestroy(ev->end));
  free(ev->dec), free(ev->pre0), free(ev->pre1);
  free(r->h_ref_dec), free(r->h_dec), free(r->h_ref_pre), free(r->h_pre);
  pd_release(w);
  gtl_guarded_free(&r->g_dec);
  gtl_guarded_free(&r->g_pre);
  gtl_end(ctx);
  free(r);
  return rc ? rc : frc;
}
