// ch10 tensor cores, intra-kernel pipelining — baseline: single-buffered WMMA GEMM.
//
// What it shows: the first tensor-core GEMM most of us write, and a competent one
// (ch09's shared-memory tiling with the inner product moved onto the tensor cores).
// A 128x128 block tile, 8 warps of 64x32 each, 16-byte global loads, a padded
// shared-memory layout, nvcuda::wmma bf16 fragments with fp32 accumulators. Its loop is
// strictly serial: load the next 32-wide K slice global → registers → shared,
// __syncthreads, multiply it, __syncthreads, repeat. While a block waits ~1 µs for its
// loads from HBM/L2 its tensor cores idle, and only the few other blocks resident on the
// SM (2 here, by registers) can fill that gap. WMMA also hides the fragment layout, so the
// shared-memory → register path is whatever the compiler picks.
//
// Build and run:   make ch10 && ./ch10/baseline          (pair: scripts/pair.sh ch10)
//                  ./ch10/baseline --M=4000 --N=5000 --K=2000   (edges off the tile grid)
// Nsight Compute:  scripts/profile.sh ch10 baseline
//   sm__pipe_tensor_op_hmma_cycles_active.avg.pct_of_peak_sustained_elapsed (tensor pipe
//   busy), smsp__average_warp_latency_issue_stalled_barrier / _long_scoreboard (warps
//   parked at __syncthreads and on global loads), sm__throughput.avg.pct_of_peak_sustained_elapsed
// Book: tensor cores (WMMA, mma.sync) and intra-kernel pipelining.
#include <mma.h>

#include "gemm.cuh"

using namespace nvcuda;

namespace {
constexpr int BM = 128, BN = 128, BK = 32;  // block tile; K slice per step
constexpr int THREADS = 256;                // 8 warps: 2 along M x 4 along N
constexpr int WM = BM / 2, WN = BN / 4;     // 64 x 32 per warp
constexpr int FM = WM / 16, FN = WN / 16;   // 4 x 2 accumulator fragments of 16x16
// Row stride 40 bf16 = 80 B: the 8 rows a fragment load touches start 20 words apart, so
// their 16-byte pieces fall in 8 different groups of 4 banks (no conflicts).
constexpr int LDS = BK + 8;
}  // namespace

// Strategy: single-buffered smem tiles + WMMA 16x16x16. Limiter: load latency exposed
// between barriers (tensor pipe idle while each K slice arrives).
__global__ void __launch_bounds__(THREADS)
    gemm_wmma_kernel(const __nv_bfloat16 *__restrict__ A, const __nv_bfloat16 *__restrict__ B,
                     __nv_bfloat16 *__restrict__ C, int M, int N, int K) {
  __shared__ __align__(128) __nv_bfloat16 sA[BM][LDS];
  __shared__ __align__(128) __nv_bfloat16 sB[BN][LDS];  // B tile as [n][k], like B
  __shared__ __align__(128) float sOut[THREADS / 32][16][16];  // per-warp epilogue staging
  const int tid = threadIdx.x, warp = tid / 32, lane = tid % 32;
  const int m0 = blockIdx.y * BM, n0 = blockIdx.x * BN;
  const int wm = (warp / 4) * WM, wn = (warp % 4) * WN;

  wmma::fragment<wmma::accumulator, 16, 16, 16, float> acc[FM][FN];
#pragma unroll
  for (int i = 0; i < FM; i++)
#pragma unroll
    for (int j = 0; j < FN; j++) wmma::fill_fragment(acc[i][j], 0.0f);

  for (int k0 = 0; k0 < K; k0 += BK) {
    // 128 rows x 4 chunks of 8 bf16 per operand = 512 chunks: 2 per thread, 16 B each.
    // Out-of-range rows or K columns load zeros, which add nothing to the sums.
#pragma unroll
    for (int i = 0; i < 2; i++) {
      const int c = tid + i * THREADS, row = c / 4, col = (c % 4) * 8;
      uint4 va = make_uint4(0, 0, 0, 0), vb = va;
      if (m0 + row < M && k0 + col < K)
        va = *(const uint4 *)(A + (size_t)(m0 + row) * K + k0 + col);
      if (n0 + row < N && k0 + col < K)
        vb = *(const uint4 *)(B + (size_t)(n0 + row) * K + k0 + col);
      *(uint4 *)&sA[row][col] = va;
      *(uint4 *)&sB[row][col] = vb;
    }
    __syncthreads();  // the slice is in shared memory
#pragma unroll
    for (int kk = 0; kk < BK; kk += 16) {
      wmma::fragment<wmma::matrix_a, 16, 16, 16, __nv_bfloat16, wmma::row_major> fa[FM];
      // B^T's column n is B's row n: a col_major 16x16 operand read straight from [n][k].
      wmma::fragment<wmma::matrix_b, 16, 16, 16, __nv_bfloat16, wmma::col_major> fb[FN];
#pragma unroll
      for (int i = 0; i < FM; i++) wmma::load_matrix_sync(fa[i], &sA[wm + i * 16][kk], LDS);
#pragma unroll
      for (int j = 0; j < FN; j++) wmma::load_matrix_sync(fb[j], &sB[wn + j * 16][kk], LDS);
#pragma unroll
      for (int i = 0; i < FM; i++)
#pragma unroll
        for (int j = 0; j < FN; j++) wmma::mma_sync(acc[i][j], fa[i], fb[j], acc[i][j]);
    }
    __syncthreads();  // everyone is done reading before the next slice overwrites it
  }

  // Epilogue: the accumulator layout is opaque, so each 16x16 fragment goes through a
  // per-warp fp32 staging tile; each lane then converts 8 neighbours and stores 16 bytes.
  const int r = lane / 2, c = (lane % 2) * 8;
#pragma unroll
  for (int i = 0; i < FM; i++)
#pragma unroll
    for (int j = 0; j < FN; j++) {
      wmma::store_matrix_sync(&sOut[warp][0][0], acc[i][j], 16, wmma::mem_row_major);
      __syncwarp();
      const int row = m0 + wm + i * 16 + r, col = n0 + wn + j * 16 + c;
      if (row < M) {
        __nv_bfloat16 *dst = C + (size_t)row * N + col;
        if (N % 8 == 0 && col + 8 <= N) {  // 16-byte aligned and in range
          __align__(16) __nv_bfloat16 v[8];
#pragma unroll
          for (int e = 0; e < 8; e++) v[e] = __float2bfloat16_rn(sOut[warp][r][c + e]);
          *(uint4 *)dst = *(const uint4 *)v;
        } else {
          for (int e = 0; e < 8 && col + e < N; e++)
            dst[e] = __float2bfloat16_rn(sOut[warp][r][c + e]);
        }
      }
      __syncwarp();  // staging tile is reused by the next fragment
    }
}

void gemm_wmma_launch(const GemmProblem *p, cudaStream_t s) {
  const dim3 grid((unsigned)((p->N + BN - 1) / BN), (unsigned)((p->M + BM - 1) / BM));
  gemm_wmma_kernel<<<grid, THREADS, 0, s>>>(p->d_A, p->d_B, p->d_C, (int)p->M, (int)p->N,
                                            (int)p->K);
  GTL_LAUNCH();
}

static const GemmVariant variants[] = {
    {"baseline", "single-buffered smem tiles, WMMA 16x16x16, 128x128 block tile",
     gemm_wmma_launch, 8, 0, 0, NULL}};

int main(int argc, char **argv) { return gemm_main(argc, argv, "baseline", variants, 1); }
