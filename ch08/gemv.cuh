// gemv.cuh — ch08's decode GEMV: the kernel ch08/optimized.cu times and the lab reuses
// for its expert matrices (labs/README.md: a chapter kernel the lab needs lives in a
// header of its own chapter).
//
// One launch computes, for every matrix m of a GemvBatch (a MoE layer's selected experts:
// gate+up and down),
//     y_m[b][n] = sum_k W_m[n][k] · x_m[b][k]        b < B tokens, n < N_m, k < K_m
// W_m bf16 [N_m][K_m] row-major (K contiguous), x_m bf16 [B][K_m], y_m fp32 [B][N_m],
// fp32 accumulation. bf16·bf16 products are exact in fp32 (8+8 significant bits <= 24),
// so the only rounding is the fp32 summation.
//
// The kernel: one warp per output row; lane l reads 16-byte pieces l, l+32, l+64, … of the
// row (one warp instruction = 512 contiguous bytes, 4 full 128-byte lines); GEMV_ILP such
// loads are issued before the first is used; each weight is multiplied by all B tokens
// while it sits in registers (multi-RHS: the weights cross DRAM once whatever B is); the
// 32 lane partial sums meet through 5 butterfly shuffles, no shared memory, no barrier.
// The grid is one wave (blocks per SM from the occupancy calculator × SMs) and each warp
// strides over rows, so warps carry equal work to the end instead of short-lived blocks
// being launched and retired thousands of times.
#pragma once
#include <cuda_bf16.h>
#include <stdint.h>

#include "../common/gauntlet.h"
#include "../ch12/launch.cuh"  // pdl_wait_prior, pdl_allow_next (no-ops unless launched with PDL)

#define GEMV_MAX_MATS 16  // top_k · 2 matrices per launch: top_k <= 8
#define GEMV_MAX_BATCH 8  // tokens per launch: the accumulators live in registers
// Independent 16-byte weight loads in flight per lane. Build with -DGEMV_ILP=N (1..12) to
// try another depth (README, exercise 1).
#ifndef GEMV_ILP
#define GEMV_ILP 4
#endif

typedef struct {
  int n_mats;  // matrices in this launch, 1..GEMV_MAX_MATS
  int B;       // tokens, 1..GEMV_MAX_BATCH
  const __nv_bfloat16 *W[GEMV_MAX_MATS];  // [N_m][K_m], 16-byte aligned
  const __nv_bfloat16 *x[GEMV_MAX_MATS];  // [B][K_m], 16-byte aligned
  float *y[GEMV_MAX_MATS];                // [B][N_m]
  int32_t N[GEMV_MAX_MATS], K[GEMV_MAX_MATS];  // K_m % 8 == 0 (whole 16-byte pieces)
  int64_t row_end[GEMV_MAX_MATS];  // N_0 + … + N_m: matrix m owns the rows before this
} GemvBatch;

// Append matrix (W, x, y, N, K) to g. Returns 0, or -1 (with a message on stderr) when
// the batch is full or the shape or alignment would break the 16-byte loads.
static inline int gemv_batch_add(GemvBatch *g, const __nv_bfloat16 *W, const __nv_bfloat16 *x,
                                 float *y, int64_t N, int64_t K) {
  const int m = g->n_mats;
  if (m >= GEMV_MAX_MATS || N < 1 || N > INT32_MAX || K < 8 || K % 8 || K > INT32_MAX ||
      ((uintptr_t)W | (uintptr_t)x) % 16) {
    fprintf(stderr, "gemv_batch_add: matrix %d rejected (N=%lld K=%lld; need K %% 8 == 0, "
                    "16-byte aligned W and x, at most %d matrices)\n",
            m, (long long)N, (long long)K, GEMV_MAX_MATS);
    return -1;
  }
  g->W[m] = W;
  g->x[m] = x;
  g->y[m] = y;
  g->N[m] = (int32_t)N;
  g->K[m] = (int32_t)K;
  g->row_end[m] = (m ? g->row_end[m - 1] : 0) + N;
  g->n_mats = m + 1;
  return 0;
}

// 16-byte streaming load through the read-only path; L1::no_allocate keeps the weights,
// each used once, from evicting the x vectors that every row of the SM re-reads from L1
// (PTX ISA, "ld": .nc and eviction-priority qualifiers).
__device__ __forceinline__ uint4 gemv_ld_stream(const uint4 *p) {
  uint4 v;
  asm("ld.global.nc.L1::no_allocate.v4.u32 {%0, %1, %2, %3}, [%4];"
      : "=r"(v.x), "=r"(v.y), "=r"(v.z), "=r"(v.w)
      : "l"(p));
  return v;
}

// Eight bf16 (little-endian pairs in four 32-bit words) to fp32: a bf16 is the top half
// of an fp32, so a shift or a mask converts it exactly.
__device__ __forceinline__ void gemv_unpack8(uint4 v, float f[8]) {
  const uint32_t w[4] = {v.x, v.y, v.z, v.w};
#pragma unroll
  for (int i = 0; i < 4; i++) {
    f[2 * i] = __uint_as_float(w[i] << 16);
    f[2 * i + 1] = __uint_as_float(w[i] & 0xFFFF0000u);
  }
}

// One warp's dot products of a bf16 weight row w (K8 16-byte pieces) with B bf16 rows of
// x (row b at x + b·K8): ILP 16-byte loads in flight per lane, each weight used for all B
// rows while in registers, fp32 accumulation, then a butterfly after which every lane
// holds every sum in acc[b]. gemv_warprow_kernel's inner loop; layer 02 of the lab runs
// its expert GEMV on it too.
template <int B, int ILP>
__device__ __forceinline__ void gemv_warp_dot(const uint4 *w, const uint4 *x, int K8, int lane, float acc[B]) {
#pragma unroll
  for (int b = 0; b < B; b++) acc[b] = 0.0f;
  for (int c0 = lane; c0 < K8; c0 += 32 * ILP) {
    uint4 wv[ILP];
#pragma unroll
    for (int j = 0; j < ILP; j++)  // all ILP loads issued before the first use
      wv[j] = c0 + 32 * j < K8 ? gemv_ld_stream(w + c0 + 32 * j) : make_uint4(0, 0, 0, 0);
#pragma unroll
    for (int j = 0; j < ILP; j++) {
      const int c = c0 + 32 * j;
      if (c >= K8) break;
      float wf[8];
      gemv_unpack8(wv[j], wf);
#pragma unroll
      for (int b = 0; b < B; b++) {  // multi-RHS: this weight serves every row of x
        float xf[8];
        gemv_unpack8(__ldg(x + (int64_t)b * K8 + c), xf);
#pragma unroll
        for (int e = 0; e < 8; e++) acc[b] = fmaf(wf[e], xf[e], acc[b]);
      }
    }
  }
#pragma unroll
  for (int b = 0; b < B; b++)
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) acc[b] += __shfl_xor_sync(0xFFFFFFFFu, acc[b], o);
}

// Strategy: warp per row (grid-stride over rows: a persistent grid of one wave), 16-byte
// loads, ILP loads in flight per lane, each weight used for all B tokens, shuffle
// reduction. Limiter: DRAM read bandwidth at B <= 4; instruction issue and L1 (the x
// vectors) at B = 8.
template <int B, int ILP>
__global__ void __launch_bounds__(256)
    gemv_warprow_kernel(const __grid_constant__ GemvBatch g) {
  const int lane = threadIdx.x & 31;
  pdl_wait_prior();  // PDL (the lab's graph, ch12): x comes from the previous kernel
  pdl_allow_next();
  const int64_t rows = g.row_end[g.n_mats - 1], warps = ((int64_t)gridDim.x * blockDim.x) >> 5;
  // Whole warps take the same rows and leave together, so the shuffles stay full.
  for (int64_t row = ((int64_t)blockIdx.x * blockDim.x + threadIdx.x) >> 5; row < rows;
       row += warps) {
    int m = 0;
    while (row >= g.row_end[m]) m++;
    const int64_t n = row - (m ? g.row_end[m - 1] : 0);
    const int K8 = g.K[m] >> 3;  // 16-byte pieces per row
    const uint4 *w = (const uint4 *)g.W[m] + n * K8;
    const uint4 *x = (const uint4 *)g.x[m];

    float acc[B];
    gemv_warp_dot<B, ILP>(w, x, K8, lane, acc);
    float *y = g.y[m];
#pragma unroll
    for (int b = 0; b < B; b++)  // after the butterfly every lane holds every sum
      if (lane == b) y[(int64_t)b * g.N[m] + n] = acc[b];
  }
}

// One wave: as many blocks as fit on the GPU at once (the occupancy calculator, asked once
// per kernel and cached, so no host call sits between the timing events and the launch).
template <int B, int ILP>
static void gemv_warprow_launch_b(const GemvBatch *g, int64_t rows, cudaStream_t s) {
  const int threads = 256;
  static int wave = 0;
  if (!wave) {
    int dev, sms, per_sm;
    GTL_CUDA(cudaGetDevice(&dev));
    GTL_CUDA(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, dev));
    GTL_CUDA(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, gemv_warprow_kernel<B, ILP>,
                                                           threads, 0));
    wave = sms * (per_sm > 0 ? per_sm : 1);
  }
  const int64_t need = (rows + threads / 32 - 1) / (threads / 32);
  gemv_warprow_kernel<B, ILP><<<(unsigned)(need < wave ? need : wave), threads, 0, s>>>(*g);
}

template <int ILP>
static void gemv_warprow_launch_ilp(const GemvBatch *g, cudaStream_t s) {
  const int64_t rows = g->row_end[g->n_mats - 1];
  switch (g->B) {
    case 1: gemv_warprow_launch_b<1, ILP>(g, rows, s); break;
    case 2: gemv_warprow_launch_b<2, ILP>(g, rows, s); break;
    case 3: gemv_warprow_launch_b<3, ILP>(g, rows, s); break;
    case 4: gemv_warprow_launch_b<4, ILP>(g, rows, s); break;
    case 5: gemv_warprow_launch_b<5, ILP>(g, rows, s); break;
    case 6: gemv_warprow_launch_b<6, ILP>(g, rows, s); break;
    case 7: gemv_warprow_launch_b<7, ILP>(g, rows, s); break;
    case 8: gemv_warprow_launch_b<8, ILP>(g, rows, s); break;
    default:
      fprintf(stderr, "gemv_warprow_launch: B=%d outside 1..%d\n", g->B, GEMV_MAX_BATCH);
      exit(GTL_EXIT_USAGE);
  }
  GTL_LAUNCH();
}

// Enqueue y_m = W_m · x_m for every matrix of g on stream s (preconditions: built with
// gemv_batch_add, 1 <= B <= GEMV_MAX_BATCH).
static inline void gemv_warprow_launch(const GemvBatch *g, cudaStream_t s) {
  gemv_warprow_launch_ilp<GEMV_ILP>(g, s);
}

// ---- fp32 activations, one token: the decode chain of ch17 (and of a lab layer that keeps
// its activations in fp32) ---------------------------------------------------------------
// One launch over up to GEMV_MAX_MATS matrices of one shape W_m bf16 [N][K] (K contiguous),
// x_m fp32 [K], one token, fp32 accumulation, in one of two modes:
//   stacked      y[m·N + n]  = W_m[n] · x_m                    (QKV; the experts' gate+up)
//   accumulate   y[n]       += Σ_m scale_m · (W_m[n] · x_m)    (O + residual; down + combine)
// In accumulate mode one warp owns row n of every matrix and adds them in m order, so the
// result does not depend on the launch (no atomics). The products and their order are
// those of gemv_warprow_kernel at B = 1 (same loads, same unpack, same FMA chain); only x is
// read as fp32 (two float4 per 16-byte weight piece, from L1 via __ldg).
typedef struct {
  int n_mats;      // matrices, 1..GEMV_MAX_MATS
  int N, K;        // every matrix [N][K]; K % 8 == 0
  int accumulate;  // 0: stacked, 1: accumulate (see above)
  const __nv_bfloat16 *W[GEMV_MAX_MATS];  // 16-byte aligned
  const float *x[GEMV_MAX_MATS];          // [K], 16-byte aligned
  float scale[GEMV_MAX_MATS];             // accumulate mode only
  float *y;  // stacked: [n_mats][N]; accumulate: [N], read and written
} GemvF32Batch;

// A per-block hook the kernel calls first with the launcher's `tag` (ch17 logs each block's
// SM with it); gemv_no_hook does nothing.
__device__ __forceinline__ void gemv_no_hook(int tag) { (void)tag; }

// Strategy: warp per output row (a block of 8 rows, no grid-stride: a decode launch has a
// few thousand rows, and short blocks let the SMs' warp slots hide the load latency),
// 16-byte streaming weight loads, ILP per lane in flight, butterfly reduction. Limiter:
// DRAM read bandwidth, through the bytes in flight per SM.
template <int ILP, void (*Hook)(int)>
__global__ void __launch_bounds__(256)
    gemv_warprow_f32_kernel(const __grid_constant__ GemvF32Batch g, int tag) {
  Hook(tag);
  const int row = (int)(((int64_t)blockIdx.x * blockDim.x + threadIdx.x) >> 5);
  const int lane = threadIdx.x & 31;
  const int rows = g.accumulate ? g.N : g.n_mats * g.N;
  if (row >= rows) return;  // whole warps leave: the shuffles stay full
  const int m0 = g.accumulate ? 0 : row / g.N, m1 = g.accumulate ? g.n_mats : m0 + 1;
  const int n = g.accumulate ? row : row % g.N, K8 = g.K >> 3;  // 16-byte pieces per row
  float out = 0.0f;
  for (int m = m0; m < m1; m++) {
    const uint4 *w = (const uint4 *)g.W[m] + (int64_t)n * K8;
    const float4 *x = (const float4 *)g.x[m];
    float acc = 0.0f;
    for (int c0 = lane; c0 < K8; c0 += 32 * ILP) {
      uint4 wv[ILP];
#pragma unroll
      for (int j = 0; j < ILP; j++)  // all ILP loads issued before the first use
        wv[j] = c0 + 32 * j < K8 ? gemv_ld_stream(w + c0 + 32 * j) : make_uint4(0, 0, 0, 0);
#pragma unroll
      for (int j = 0; j < ILP; j++) {
        const int c = c0 + 32 * j;
        if (c < K8) {
          float wf[8];
          gemv_unpack8(wv[j], wf);
          const float4 xa = __ldg(x + 2 * c), xb = __ldg(x + 2 * c + 1);
          const float xf[8] = {xa.x, xa.y, xa.z, xa.w, xb.x, xb.y, xb.z, xb.w};
#pragma unroll
          for (int e = 0; e < 8; e++) acc = fmaf(wf[e], xf[e], acc);
        }
      }
    }
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) acc += __shfl_xor_sync(0xFFFFFFFFu, acc, o);
    out = g.accumulate ? out + g.scale[m] * acc : acc;
  }
  if (lane == 0) {
    if (g.accumulate) g.y[n] += out;
    else g.y[(int64_t)m0 * g.N + n] = out;
  }
}

// Enqueue g on stream s; every block first calls Hook(tag) (default: nothing). Exits with
// GTL_EXIT_RUNTIME (message on stderr) when g breaks the kernel's preconditions: 1 <=
// n_mats <= GEMV_MAX_MATS, N >= 1, K >= 8 and K % 8 == 0, W and x 16-byte aligned.
// A template, so that a program that never calls it carries none of its kernels.
template <void (*Hook)(int) = gemv_no_hook>
static void gemv_warprow_f32_launch(const GemvF32Batch *g, cudaStream_t s, int tag = 0) {
  int bad = g->n_mats < 1 || g->n_mats > GEMV_MAX_MATS || g->N < 1 || g->K < 8 || g->K % 8;
  for (int m = 0; !bad && m < g->n_mats; m++)
    bad = ((uintptr_t)g->W[m] | (uintptr_t)g->x[m]) % 16 != 0;
  if (bad) {
    fprintf(stderr, "gemv_warprow_f32_launch: rejected (n_mats=%d N=%d K=%d; need K %% 8 == 0, "
                    "16-byte aligned W and x, 1..%d matrices)\n",
            g->n_mats, g->N, g->K, GEMV_MAX_MATS);
    exit(GTL_EXIT_RUNTIME);
  }
  const int64_t rows = g->accumulate ? g->N : (int64_t)g->n_mats * g->N;
  gemv_warprow_f32_kernel<GEMV_ILP, Hook><<<(unsigned)((rows + 7) / 8), 256, 0, s>>>(*g, tag);
  GTL_LAUNCH();
}
