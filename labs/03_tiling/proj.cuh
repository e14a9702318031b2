// proj.cuh — layer 03's dense projections (attn.qkv, attn.out, moe.router): the weights
// read once, at the speed of the bytes, in as few launches as the data allow. Kernels,
// launchers and the three stage functions that lab03_ops() plugs in.
//
// Small batch (B <= kLab03ProjGemvMaxBatch): ONE launch per stage, lab03_proj_gemv_kernel.
//   - the activations stay fp32: every block stages its token rows in shared memory (fp32)
//     and the bf16 weights are widened in registers (ch08's gemv_unpack8); a bf16 weight
//     times an fp32 activation in fp32 is at least as accurate as 02's hi + lo pair of bf16
//     rows, and needs no split rows and no kernel adding hi and lo;
//   - RMSNorm folded in: each block recomputes 1/rms of its rows from x (layer 00's
//     lab00_row_rms_inv; a row of D fp32 comes from L2) and stages w ⊙ x · inv;
//   - q, k and v as one launch over their concatenated rows; attn.out adds into the
//     residual in the epilogue (x += Wo·att + bo); the router spreads each of its E rows
//     over 4 warps, two rows per block (its grid would otherwise be E warps);
//   - gpt-oss's q/k/v/o and router biases added in the epilogue (NULL: none);
//   - the router's blocks also write the normalized rows (a.d_xn, fp32) and their split
//     (01's xb, [B][hi | lo] bf16: the expert kernels' input), each block a slice.
// Large batch (qkv, out): 02's stages as they are (fused RMSNorm + split, cuBLAS on the
// split rows, hi + lo + bias added by a third kernel): a GEMM reads each weight once for
// all tokens, where this kernel would read it once per token group. The router keeps the
// GEMV kernel at every batch, in token groups of kLab03ProjMaxRows (blockIdx.y): its
// weights are E rows, and 02's three launches cost more than the bytes.
// Qwen3-MoE's q/k norm stays 00's kernel after the projection, as in 02.
#pragma once
#include "../02_memory/layer.cuh"
#include "../../ch08/gemv.cuh"  // gemv_ld_stream, gemv_unpack8, GEMV_ILP
#include "../../ch12/launch.cuh"  // pdl_wait_prior, pdl_allow_next (layer 04's programmatic edges)

// Threads per block: 256, so that every block stages its rows (and sums 1/rms) for 8 weight
// rows, not 4: half the blocks, half the staging reads from L2. 1/rms is still summed by
// the first 128 threads in lab00_row_rms_inv's order (lab03_proj_rms_inv): bit-identical.
// Measured on the H200 (gptoss20b_mixtral, batch 1, ncu, git 65b194b3c776), 128 -> 256:
// q/k/v 19.2 -> 16.8 us, o 13.6 -> 11.9 us, router 6.5 -> 5.7 us per layer. Build with
// -DLAB03_PROJ_THREADS=128 for the 128-thread blocks (a multiple of 128).
#ifndef LAB03_PROJ_THREADS
#define LAB03_PROJ_THREADS 256
#endif
constexpr int kLab03ProjThreads = LAB03_PROJ_THREADS;
static_assert(kLab03ProjThreads % kLab00Threads == 0, "the norm's sum uses lab00_row_rms_inv's 128 threads");
constexpr int kLab03ProjWarps = kLab03ProjThreads / 32;
constexpr int kLab03ProjMaxRows = 4;              // token rows per block (fp32 in shared memory)
constexpr int kLab03ProjGemvMaxBatch = kLab03ProjMaxRows;  // qkv and out as GEMV up to this batch
constexpr int kLab03ProjMaxSmem = 200 * 1024;     // staged rows + norm weights: R·K·4 + K·2 bytes at most
constexpr int kLab03ProjStageLoads = 4;           // 16-byte row loads per thread in flight while staging
// Blocks per SM the batch-1 GEMV (R = 1, a warp per row) is register-bounded to: 1,280
// threads per SM (at most 48 registers: 10 blocks of 128 or 5 of 256) hold gptoss20b's
// 5,120 q/k/v rows as one row per warp on 132 SMs; with fewer, some warps would take two
// rows and the launch would last twice as long. Build with -DLAB03_PROJ_MIN_BLOCKS=1 to
// let the compiler choose (no spills, 56 registers).
#ifndef LAB03_PROJ_MIN_BLOCKS
#define LAB03_PROJ_MIN_BLOCKS (1280 / LAB03_PROJ_THREADS)
#endif
constexpr int kLab03ProjMinBlocks = LAB03_PROJ_MIN_BLOCKS;
// Independent 16-byte weight loads in flight per lane: ch08's depth unless built with
// -DLAB03_PROJ_ILP=N (1..12) to try another.
#ifndef LAB03_PROJ_ILP
#define LAB03_PROJ_ILP GEMV_ILP
#endif

// One launch's matrices (by value in the kernel's parameters): up to three weights over
// the same input rows, their rows concatenated (row r of matrix m when row_end[m-1] <= r <
// row_end[m]).
typedef struct {
  const float *x;              // [B][K] fp32 input rows
  const __nv_bfloat16 *norm;   // [K] RMSNorm weight: rows staged as norm ⊙ x / rms(x); NULL: x as is
  float eps;
  int B, K;                    // tokens; K % 8 == 0
  int n_mats;                  // 1..3
  const __nv_bfloat16 *W[3];   // [N_m][K], 16-byte aligned rows
  const __nv_bfloat16 *bias[3];  // [N_m] or NULL
  float *y[3];                 // [B][N_m] fp32
  int row_end[3];              // N_0, N_0 + N_1, N_0 + N_1 + N_2
  int accumulate;              // 1: y += W·x + bias (the residual), 0: y = W·x + bias
  float *xn;                   // [B][K] the staged rows (fp32), or NULL
  __nv_bfloat16 *xb;           // [B][2K] their split, [hi | lo] per token (02's layout), or NULL
} Lab03Proj;

// ---- index math (host-tested in plan_test.cpp) --------------------------------------------
/** Matrix of concatenated row r (< row_end[n-1]); *n = its row inside that matrix. */
__host__ __device__ __forceinline__ int lab03_proj_mat(const int *row_end, int r, int *n) {
  const int m = r < row_end[0] ? 0 : r < row_end[1] ? 1 : 2;
  *n = r - (m ? row_end[m - 1] : 0);
  return m;
}

/** Float index in a staged row of element k (K8 = K / 8 pieces): the row is stored as two
 *  planes of K8 float4, element 8c + 4h + q at (h·K8 + c)·4 + q, so that the 32 lanes of
 *  a warp reading pieces c, c+1, … read 512 contiguous bytes per plane (no bank conflict;
 *  a plain [K] row would put lanes l and l + 4 on the same banks). */
__host__ __device__ __forceinline__ int lab03_proj_xs_at(int k, int K8) {
  const int c = k >> 3, h = (k >> 2) & 1, q = k & 3;
  return (h * K8 + c) * 4 + q;
}

/** The same order in 16-byte units: float4 f of a row (elements 4f … 4f + 3, f = 2c + h)
 *  is staged at float4 h·K8 + c. Host-tested with lab03_proj_xs_at. */
__host__ __device__ __forceinline__ int lab03_proj_xs4_at(int f, int K8) { return (f & 1) * K8 + (f >> 1); }

/** The slice [*k0, *k1) of a K-row that block bx of gx writes into xn/xb. */
__host__ __device__ __forceinline__ void lab03_proj_slice(int K, int bx, int gx, int *k0, int *k1) {
  const int s = (K + gx - 1) / gx;
  *k0 = bx * s < K ? bx * s : K;
  *k1 = *k0 + s < K ? *k0 + s : K;
}

// 1 / rms of the staged row xr (n floats): lab00_row_rms_inv's sums in its order (threads
// 0..kLab00Threads-1 of the block, the others idle), so the result is bit-identical at any
// block size; every thread must call it (barriers). red: kLab03ProjThreads floats.
__device__ __forceinline__ float lab03_proj_rms_inv(const float *xr, int n, float eps, float *red) {
  if (kLab03ProjThreads == kLab00Threads) return lab00_row_rms_inv(xr, n, eps, red);
  const int t = threadIdx.x;
  if (t < kLab00Threads) {
    float ss = 0.f;
    for (int i = t; i < n; i += kLab00Threads) ss += xr[i] * xr[i];
    red[t] = ss;
  }
  __syncthreads();
  for (int s = kLab00Threads / 2; s > 0; s >>= 1) {
    if (t < s) red[t] += red[t + s];
    __syncthreads();
  }
  return rsqrtf(red[0] / n + eps);
}

// ---- kernels ------------------------------------------------------------------------------
// y_m[b][n] (+)= Σ_k W_m[n][k] · xs[b][k] (+ bias_m[n]) for the R token rows b0 = blockIdx.y·R
// … b0 + R − 1 (those < B), xs = the staged rows (fp32, normalized when g.norm is set), every
// row n of the n_mats matrices. WPR warps share one weight row (1: a warp per row; 4: each
// 4 warps of the block split K, partial sums added in warp order through shared memory).
// Strategy: the first weight loads issued before the rows are staged (their latency hides
// the staging); the rows and the norm's weights staged in shared memory with 16-byte loads,
// kLab03ProjStageLoads in flight per thread, in lab03_proj_xs_at's order; 1/rms by layer 00's
// lab00_row_rms_inv over the staged row (shared memory), applied in place; grid-stride over
// weight rows, ch08's 16-byte streaming loads (LAB03_PROJ_ILP in flight per lane), each weight
// widened to fp32 once and used for the R rows, butterfly reduction, bias and residual in
// the epilogue. Limiter: DRAM read bandwidth at R <= 2; shared-memory reads near R = 4
// (8·R bank cycles per 512-byte weight piece of a warp).
template <int R, int WPR>
__global__ void __launch_bounds__(kLab03ProjThreads, R == 1 && WPR == 1 ? kLab03ProjMinBlocks : 1)
    lab03_proj_gemv_kernel(const __grid_constant__ Lab03Proj g) {
  extern __shared__ __align__(16) float lab03_proj_xs[];  // [R][K], lab03_proj_xs_at order
  __shared__ float red[kLab03ProjThreads];
  constexpr int UNITS = kLab03ProjWarps / WPR;  // weight rows a block works on at once
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, sub = warp % WPR;
  const int K = g.K, K8 = K >> 3, b0 = blockIdx.y * R, nb = g.B - b0 < R ? g.B - b0 : R;
  const int rows = g.row_end[g.n_mats - 1], stride = gridDim.x * UNITS, step = 32 * WPR;
  int row = blockIdx.x * UNITS + warp / WPR;

  // the first row's first loads, in flight while the rows are staged
  uint4 wv[LAB03_PROJ_ILP];
  const uint4 *w = nullptr;
  if (row < rows) {
    int n;
    const int m = lab03_proj_mat(g.row_end, row, &n);
    w = (const uint4 *)(g.W[m] + (int64_t)n * K);
#pragma unroll
    for (int j = 0; j < LAB03_PROJ_ILP; j++) {
      const int c = lane + 32 * sub + step * j;  // the main loop's pieces, below
      wv[j] = c < K8 ? gemv_ld_stream(w + c) : make_uint4(0, 0, 0, 0);
    }
  }

  pdl_wait_prior();  // PDL (ch12): the weight loads above overlap the previous kernel; x after it
  pdl_allow_next();

  // the rows (and the norm's weights) into shared memory: 16-byte loads, kLab03ProjStageLoads
  // per thread in flight before the first store (one or two L2 round trips per block)
  const int K4 = K >> 2, n4 = nb * K4;
  const float4 *x4 = (const float4 *)(g.x + (size_t)b0 * K);
  float4 *xs4 = (float4 *)lab03_proj_xs;
  uint2 *ns = (uint2 *)(lab03_proj_xs + (size_t)R * K);  // [K/4] the norm's bf16 weights, 4 per entry
  const int n_all = n4 + (g.norm ? K4 : 0);
  for (int i0 = threadIdx.x; i0 < n_all; i0 += kLab03ProjStageLoads * kLab03ProjThreads) {
    float4 v[kLab03ProjStageLoads];
#pragma unroll
    for (int u = 0; u < kLab03ProjStageLoads; u++) {
      const int i = i0 + u * kLab03ProjThreads;
      v[u] = make_float4(0.f, 0.f, 0.f, 0.f);
      if (i < n4) v[u] = x4[i];
      else if (i < n_all) {
        const uint2 nw = ((const uint2 *)g.norm)[i - n4];
        v[u] = make_float4(__uint_as_float(nw.x), __uint_as_float(nw.y), 0.f, 0.f);
      }
    }
#pragma unroll
    for (int u = 0; u < kLab03ProjStageLoads; u++) {
      const int i = i0 + u * kLab03ProjThreads;
      if (i < n4) xs4[(i / K4) * K4 + lab03_proj_xs4_at(i % K4, K8)] = v[u];
      else if (i < n_all) ns[i - n4] = make_uint2(__float_as_uint(v[u].x), __float_as_uint(v[u].y));
    }
  }
  for (int i = n4 + threadIdx.x; i < R * K4; i += kLab03ProjThreads) xs4[i] = make_float4(0.f, 0.f, 0.f, 0.f);
  __syncthreads();
  if (g.norm) {  // xs = w ⊙ x / rms(x), row by row: 00's lab00_row_rms_inv over the staged row
    __shared__ float inv[kLab03ProjMaxRows];
    for (int r = 0; r < nb; r++) {  // block-uniform: every thread reaches the barriers
      const float v = lab03_proj_rms_inv(lab03_proj_xs + (size_t)r * K, K, g.eps, red);
      if (threadIdx.x == 0) inv[r] = v;
      __syncthreads();  // red is read by every thread before the next row reuses it
    }
    for (int i = threadIdx.x; i < n4; i += kLab03ProjThreads) {
      const int r = i / K4, j = i % K4, f = j < K8 ? 2 * j : 2 * (j - K8) + 1;  // slot j holds x's float4 f
      const uint2 nw = ns[f];
      float4 a = xs4[i];
      const float iv = inv[r];
      a.x = __uint_as_float(nw.x << 16) * (a.x * iv);
      a.y = __uint_as_float(nw.x & 0xFFFF0000u) * (a.y * iv);
      a.z = __uint_as_float(nw.y << 16) * (a.z * iv);
      a.w = __uint_as_float(nw.y & 0xFFFF0000u) * (a.w * iv);
      xs4[i] = a;
    }
    __syncthreads();
  }
  if (g.xn || g.xb) {  // this block's slice of the staged rows, for the stages after this one
    int k0, k1;
    lab03_proj_slice(K, blockIdx.x, gridDim.x, &k0, &k1);
    for (int r = 0; r < nb; r++)
      for (int k = k0 + threadIdx.x; k < k1; k += kLab03ProjThreads) {
        const float v = lab03_proj_xs[(size_t)r * K + lab03_proj_xs_at(k, K8)];
        const size_t b = (size_t)(b0 + r);
        if (g.xn) g.xn[b * K + k] = v;
        if (g.xb) lab01_split(v, &g.xb[lab02_hi_row(b) * K + k], &g.xb[lab02_hi_row(b) * K + K + k]);
      }
  }

  bool loaded = true;  // wv holds the first row's first pieces
  for (; row < rows; row += stride) {  // WPR = 4: block-uniform (one row per block)
    int n;
    const int m = lab03_proj_mat(g.row_end, row, &n);
    if (!loaded) w = (const uint4 *)(g.W[m] + (int64_t)n * K);
    float acc[R];
#pragma unroll
    for (int r = 0; r < R; r++) acc[r] = 0.f;
    for (int c0 = lane + 32 * sub; c0 < K8; c0 += step * LAB03_PROJ_ILP) {
      if (!loaded) {
#pragma unroll
        for (int j = 0; j < LAB03_PROJ_ILP; j++)  // all loads issued before the first use
          wv[j] = c0 + step * j < K8 ? gemv_ld_stream(w + c0 + step * j) : make_uint4(0, 0, 0, 0);
      }
      loaded = false;
#pragma unroll
      for (int j = 0; j < LAB03_PROJ_ILP; j++) {
        const int c = c0 + step * j;
        if (c >= K8) break;
        float wf[8];
        gemv_unpack8(wv[j], wf);
#pragma unroll
        for (int r = 0; r < R; r++) {  // each widened weight serves the R rows
          const float4 *xs = (const float4 *)(lab03_proj_xs + (size_t)r * K);
          const float4 a = xs[c], b = xs[K8 + c];
          acc[r] = fmaf(wf[0], a.x, acc[r]);
          acc[r] = fmaf(wf[1], a.y, acc[r]);
          acc[r] = fmaf(wf[2], a.z, acc[r]);
          acc[r] = fmaf(wf[3], a.w, acc[r]);
          acc[r] = fmaf(wf[4], b.x, acc[r]);
          acc[r] = fmaf(wf[5], b.y, acc[r]);
          acc[r] = fmaf(wf[6], b.z, acc[r]);
          acc[r] = fmaf(wf[7], b.w, acc[r]);
        }
      }
    }
    loaded = false;
#pragma unroll
    for (int r = 0; r < R; r++)
#pragma unroll
      for (int o = 16; o > 0; o >>= 1) acc[r] += __shfl_xor_sync(0xFFFFFFFFu, acc[r], o);
    if (WPR > 1) {  // the block's warps hold partial sums of the same row
#pragma unroll
      for (int r = 0; r < R; r++)
        if (lane == r) red[warp * R + r] = acc[r];
      __syncthreads();
      if (sub == 0) {  // the unit's first warp sums its WPR partials in warp order
#pragma unroll
        for (int r = 0; r < R; r++) {
          float s = 0.f;
          for (int i = 0; i < WPR; i++) s += red[(warp + i) * R + r];
          acc[r] = s;
        }
      }
      __syncthreads();
      if (sub != 0) continue;
    }
    const float bias = g.bias[m] ? __bfloat162float(g.bias[m][n]) : 0.f;
    const int N = g.row_end[m] - (m ? g.row_end[m - 1] : 0);
#pragma unroll
    for (int r = 0; r < R; r++)  // after the butterfly every lane holds every sum
      if (lane == r && r < nb) {
        float *y = g.y[m] + (size_t)(b0 + r) * N + n;
        const float v = acc[r] + bias;
        *y = g.accumulate ? *y + v : v;
      }
  }
}

// ---- launchers ------------------------------------------------------------------------------
/** Dynamic shared memory of a launch: R staged fp32 rows of K, and the norm's K bf16 weights. */
static inline int lab03_proj_smem(int R, int K, int norm) { return R * K * 4 + (norm ? K * 2 : 0); }

/** 1 when a launch of kLab03ProjMaxRows token rows of K (K % 8 == 0) fits the kernel's
 *  shared memory. */
static inline int lab03_proj_gemv_fits(int K) {
  return K % 8 == 0 && K > 0 && K <= (kLab03ProjMaxSmem - 4096) / (kLab03ProjMaxRows * 4 + 2);
}

// Blocks of lab03_proj_gemv_kernel<R, WPR> resident per SM with `smem` dynamic bytes,
// times the SMs (asked once per shape and cached: no host call between a stage's
// launches once warm; the shared-memory opt-in is set the first time too).
template <int R, int WPR>
static int lab03_proj_wave(int smem) {
  static int cached_smem[4] = {-1, -1, -1, -1}, cached_wave[4];
  for (int i = 0; i < 4; i++)
    if (cached_smem[i] == smem) return cached_wave[i];
  int dev, sms, per_sm = 0;
  GTL_CUDA(cudaGetDevice(&dev));
  GTL_CUDA(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, dev));
  if (smem > 48 * 1024)
    GTL_CUDA(cudaFuncSetAttribute(lab03_proj_gemv_kernel<R, WPR>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                  kLab03ProjMaxSmem));
  GTL_CUDA(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, lab03_proj_gemv_kernel<R, WPR>, kLab03ProjThreads,
                                                         smem));
  const int wave = sms * (per_sm > 0 ? per_sm : 1);
  for (int i = 0; i < 4; i++)
    if (cached_smem[i] < 0) {
      cached_smem[i] = smem, cached_wave[i] = wave;
      break;
    }
  return wave;
}

/** Grid of a launch over `rows` weight rows and B tokens, R per block, wpr warps per row,
 *  `wave` resident blocks: y = ceil(B / R) token groups, x = enough blocks for every row
 *  once, at most the wave's share per group (then the warps stride). Host-tested. */
static inline dim3 lab03_proj_grid(int rows, int B, int R, int wpr, int wave) {
  const int groups = (B + R - 1) / R, units = kLab03ProjWarps / wpr, need = (rows + units - 1) / units;
  const int per_group = wave / groups > 1 ? wave / groups : 1;
  return dim3((unsigned)(need < per_group ? need : per_group), (unsigned)groups);
}

template <int R, int WPR>
static void lab03_proj_gemv_r(const Lab03Proj *g, cudaStream_t s) {
  const int smem = lab03_proj_smem(R, g->K, g->norm != NULL);
  const dim3 grid = lab03_proj_grid(g->row_end[g->n_mats - 1], g->B, R, WPR, lab03_proj_wave<R, WPR>(smem));
  lab03_proj_gemv_kernel<R, WPR><<<grid, kLab03ProjThreads, smem, s>>>(*g);
  GTL_LAUNCH();
}

/** Enqueue one lab03_proj_gemv_kernel launch for g on stream s: R = min(B, 4) rows per
 *  block, ceil(B / R) token groups; wpr 1 (a warp per weight row) or 4 (4 warps per row; a
 *  warp per row when the rows do not fill the block's groups of 4 warps).
 *  Exits 1 (GTL_EXIT_RUNTIME) when g breaks the preconditions: 1 <= n_mats <= 3, K % 8 == 0
 *  and lab03_proj_gemv_fits, 16-byte aligned weights. */
static inline void lab03_proj_gemv_launch(const Lab03Proj *g, int wpr, cudaStream_t s) {
  int bad = g->n_mats < 1 || g->n_mats > 3 || g->B < 1 || !lab03_proj_gemv_fits(g->K) || (wpr != 1 && wpr != 4);
  // wpr 4 puts kLab03ProjWarps / 4 rows in a block, whose units must all run the rows loop
  // the same number of times (its barriers): rows that do not fill the units take a warp each
  if (wpr == 4 && g->row_end[g->n_mats - 1] % (kLab03ProjWarps / 4) != 0) wpr = 1;
  for (int m = 0; !bad && m < g->n_mats; m++) bad = (uintptr_t)g->W[m] % 16 != 0;
  if (bad) {
    fprintf(stderr, "lab03_proj_gemv_launch: rejected (n_mats=%d B=%d K=%d wpr=%d)\n", g->n_mats, g->B, g->K, wpr);
    exit(GTL_EXIT_RUNTIME);
  }
  const int R = g->B < kLab03ProjMaxRows ? g->B : kLab03ProjMaxRows;
#define LAB03_PROJ_CASE(RR)                                              \
  case RR:                                                               \
    if (wpr == 1) lab03_proj_gemv_r<RR, 1>(g, s);                        \
    else lab03_proj_gemv_r<RR, 4>(g, s);                                 \
    break;
  switch (R) { LAB03_PROJ_CASE(1) LAB03_PROJ_CASE(2) LAB03_PROJ_CASE(3) LAB03_PROJ_CASE(4) }
#undef LAB03_PROJ_CASE
}

/** One lab03_proj_gemv_kernel launch (a warp per weight row) for the small-batch stages:
 *  n (1..3) matrices W_j [N_j][K] with biases (NULL: none) over x [B][K] fp32, normalized
 *  by norm (NULL: none; the staged rows also into xn unless NULL), into out_j [B][N_j]
 *  (accumulate: +=). */
static inline void lab03_project(const Engine *e, const float *x, const __nv_bfloat16 *norm, float *xn, int n,
                                 const __nv_bfloat16 *const *W, const __nv_bfloat16 *const *bias, const int *N, int K,
                                 float *const *out, int accumulate) {
  Lab03Proj g;
  memset(&g, 0, sizeof g);
  g.x = x, g.norm = norm, g.eps = (float)e->cfg.rms_eps, g.B = e->B, g.K = K, g.n_mats = n;
  g.accumulate = accumulate, g.xn = xn;
  for (int j = 0; j < n; j++) {
    g.W[j] = W[j], g.bias[j] = bias[j], g.y[j] = out[j];
    g.row_end[j] = (j ? g.row_end[j - 1] : 0) + N[j];
  }
  lab03_proj_gemv_launch(&g, 1, e->s);
}

/** 1 when a stage of B tokens over rows of K runs as one GEMV launch. */
static inline int lab03_proj_use_gemv(int B, int K) { return B <= kLab03ProjGemvMaxBatch && lab03_proj_gemv_fits(K); }

// ---- stages -------------------------------------------------------------------------------
/** attn.qkv: a.d_xn = RMSNorm(a.d_x), then q, k, v (+ gpt-oss's biases) into a.d_q/k/v.
 *  Small batch: ONE launch (the norm folded in, a.d_xn written a slice per block), then
 *  Qwen3-MoE's q/k norm as in 02; large batch: 02's stage (cuBLAS on the split rows). */
static inline void lab03_qkv(Engine *e, int l) {
  const MoeConfig *c = &e->cfg;
  if (!lab03_proj_use_gemv(e->B, c->D)) {
    lab02_qkv(e, l);
    return;
  }
  const int B = e->B, hd = c->head_dim, Q = c->H * hd, KV = c->H_kv * hd;
  const __nv_bfloat16 *W[3] = {engine_w(e, MOE_Q, l, 0), engine_w(e, MOE_K, l, 0), engine_w(e, MOE_V, l, 0)};
  const __nv_bfloat16 *bias[3] = {lab00_w_opt(e, MOE_Q_BIAS, l, 0), lab00_w_opt(e, MOE_K_BIAS, l, 0),
                                  lab00_w_opt(e, MOE_V_BIAS, l, 0)};
  const int N[3] = {Q, KV, KV};
  float *const out[3] = {e->a.d_q, e->a.d_k, e->a.d_v};
  lab03_project(e, e->a.d_x, engine_w(e, MOE_ATTN_NORM, l, 0), e->a.d_xn, 3, W, bias, N, c->D, out, 0);
  if (c->qk_norm) {  // Qwen3-MoE: each head normalized over head_dim before RoPE (00's kernel)
    lab00_rmsnorm(e, e->a.d_q, engine_w(e, MOE_Q_NORM, l, 0), e->a.d_q, B * c->H, hd);
    lab00_rmsnorm(e, e->a.d_k, engine_w(e, MOE_K_NORM, l, 0), e->a.d_k, B * c->H_kv, hd);
  }
}

/** attn.out: x += Wo · att (+ bo). Small batch: one launch, the residual added in the
 *  epilogue (each output element owned by one warp: no atomics); large batch: 02's stage. */
static inline void lab03_out(Engine *e, int l) {
  const MoeConfig *c = &e->cfg;
  const int Q = c->H * c->head_dim;
  if (!lab03_proj_use_gemv(e->B, Q)) {
    lab02_out(e, l);
    return;
  }
  const __nv_bfloat16 *W[1] = {engine_w(e, MOE_O, l, 0)};
  const __nv_bfloat16 *bias[1] = {lab00_w_opt(e, MOE_O_BIAS, l, 0)};
  float *const out[1] = {e->a.d_x};
  lab03_project(e, e->a.d_att, NULL, NULL, 1, W, bias, &c->D, Q, out, 1);
}

/** moe.router: a.d_router = Wr · RMSNorm(x) (+ br) at every batch in ONE launch (4 warps
 *  per router row and token group of up to 4), which also writes the normalized rows into
 *  a.d_xn and their split into 01's xb (the expert kernels' input), a slice per block. */
static inline void lab03_router(Engine *e, int l) {
  const MoeConfig *c = &e->cfg;
  if (!lab03_proj_gemv_fits(c->D)) {  // a row too wide to stage: 02's three launches
    lab02_router(e, l);
    return;
  }
  Lab03Proj g;
  memset(&g, 0, sizeof g);
  g.x = e->a.d_x, g.norm = engine_w(e, MOE_FFN_NORM, l, 0), g.eps = (float)c->rms_eps, g.B = e->B, g.K = c->D;
  g.n_mats = 1, g.W[0] = engine_w(e, MOE_ROUTER, l, 0), g.bias[0] = lab00_w_opt(e, MOE_ROUTER_BIAS, l, 0);
  g.y[0] = e->a.d_router, g.row_end[0] = c->E;
  g.xn = e->a.d_xn, g.xb = ((Lab01 *)e->layer)->xb;
  lab03_proj_gemv_launch(&g, 4, e->s);
}
