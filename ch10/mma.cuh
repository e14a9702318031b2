// mma.cuh — ch10's portable tensor-core GEMM (--variant=mma of ch10/optimized, sm_80+):
// a multi-stage cp.async ring in swizzled shared memory, ldmatrix, mma.sync m16n8k16.
// Kernel and launcher only (no driver: the lab includes this file; ch10/gemm.cuh is the
// chapter's driver). Everything sits in namespace ampere, so its tile constants and PTX
// helpers meet no other header's.
//     C[M][N] = A[M][K] · B[N][K]^T     bf16 in, fp32 accumulate, bf16 out
#pragma once
#include <cuda_bf16.h>
#include <stdint.h>

#include "../common/check.h"
#include "gemm_epilogue.cuh"

namespace ampere {
constexpr int BM = 128, BN = 128, BK = 64;  // block tile; K slice per stage
constexpr int STAGES = 3;                   // shared-memory ring: STAGES-1 slices in flight
constexpr int WARPS_M = 2, WARPS_N = 2;     // 4 warps
constexpr int MIN_BLOCKS = 2;               // resident blocks per SM (caps registers)
constexpr int THREADS = 32 * WARPS_M * WARPS_N;
constexpr int WM = BM / WARPS_M, WN = BN / WARPS_N;  // 64 x 64 per warp
constexpr int MT = WM / 16, NT = WN / 8;    // 4 x 8 mma tiles of m16n8
constexpr int KSTEPS = BK / 16;             // mma k-steps per slice: 4
constexpr int CHUNKS = BK / 8;              // 16-byte chunks per shared row: 8
constexpr int A_COPIES = BM * CHUNKS / THREADS, B_COPIES = BN * CHUNKS / THREADS;
constexpr int SMEM_BYTES = STAGES * (BM + BN) * BK * 2;  // 96 KB: needs the opt-in
static_assert(CHUNKS == 8, "the swizzle below is written for 128-byte rows");
static_assert((BM * CHUNKS) % THREADS == 0 && (BN * CHUNKS) % THREADS == 0, "whole rows");

// Element offset of 16-byte chunk `chunk` of row `row` in a [rows][64] bf16 tile. A row is
// 128 B = all 32 banks; XOR-ing the chunk index with row % 8 puts the same logical chunk
// of 8 consecutive rows (what one ldmatrix 8x8 matrix reads) in 8 different bank groups.
__device__ __forceinline__ int swz(int row, int chunk) {
  return row * BK + ((chunk ^ (row & 7)) * 8);
}

__device__ __forceinline__ void cp_async_16(void *smem, const void *gmem, bool in_range) {
  const unsigned dst = (unsigned)__cvta_generic_to_shared(smem);
  const int src_bytes = in_range ? 16 : 0;  // 0: read nothing, fill 16 zero bytes
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(dst), "l"(gmem),
               "r"(src_bytes));
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n"); }
template <int N>
__device__ __forceinline__ void cp_async_wait() {  // until at most N groups are pending
  asm volatile("cp.async.wait_group %0;\n" ::"n"(N) : "memory");
}
// Four 8x8 b16 matrices; lane i gives the address of row i % 8 of matrix i / 8, and gets
// elements (lane / 4, 2·(lane % 4) + {0,1}) of each — exactly an mma operand fragment.
__device__ __forceinline__ void ldmatrix_x4(unsigned r[4], const void *smem) {
  const unsigned a = (unsigned)__cvta_generic_to_shared(smem);
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(a));
}
// D[16x8] += A[16x16] · B[16x8], bf16 in, fp32 accumulate (PTX ISA, "mma.m16n8k16").
__device__ __forceinline__ void mma_bf16_16816(float d[4], const unsigned a[4],
                                               const unsigned b[2]) {
  asm("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, "
      "{%8,%9}, {%0,%1,%2,%3};\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
}

// Strategy: STAGES-deep cp.async ring + ldmatrix + mma.sync m16n8k16, 64x64 warp tiles.
// Limiter: the mma.sync (HMMA) path itself; Hopper's full tensor rate needs wgmma.
__global__ void __launch_bounds__(THREADS, MIN_BLOCKS)
    gemm_mma_pipelined_kernel(const __nv_bfloat16 *__restrict__ A,
                              const __nv_bfloat16 *__restrict__ B,
                              __nv_bfloat16 *__restrict__ C, int M, int N, int K) {
  extern __shared__ __align__(128) unsigned char smem[];
  __nv_bfloat16 *sA = (__nv_bfloat16 *)smem;  // [STAGES][BM][BK], swizzled rows
  __nv_bfloat16 *sB = sA + STAGES * BM * BK;  // [STAGES][BN][BK], B's [n][k] layout
  const int tid = threadIdx.x, warp = tid / 32, lane = tid % 32;
  const int m0 = blockIdx.y * BM, n0 = blockIdx.x * BN;
  const int wm = (warp / WARPS_N) * WM, wn = (warp % WARPS_N) * WN;
  const int KT = (K + BK - 1) / BK;

  // Copy roles: thread t moves chunk t % 8 of rows t / 8, t / 8 + THREADS / 8, ... — a warp
  // covers 4 whole 128-byte rows per instruction, coalesced in global, conflict-free in
  // shared. A slice's copies are issued in KSTEPS parts, one per mma k-step, so that they
  // interleave with the tensor-core work instead of stalling it in one burst.
  const int ld_row = tid / CHUNKS, ld_chunk = tid % CHUNKS;
  auto copy_slice_part = [&](int stage, int kt, int part) {
    const int k = kt * BK + ld_chunk * 8;
    __nv_bfloat16 *a = sA + stage * BM * BK, *b = sB + stage * BN * BK;
#pragma unroll
    for (int i = part; i < A_COPIES; i += KSTEPS) {  // copy i goes with k-step i % KSTEPS
      const int r = ld_row + i * (THREADS / CHUNKS);
      const bool ok = m0 + r < M && k < K;
      cp_async_16(a + swz(r, ld_chunk), ok ? A + (m0 + r) * K + k : A, ok);
    }
#pragma unroll
    for (int i = part; i < B_COPIES; i += KSTEPS) {
      const int r = ld_row + i * (THREADS / CHUNKS);
      const bool ok = n0 + r < N && k < K;
      cp_async_16(b + swz(r, ld_chunk), ok ? B + (n0 + r) * K + k : B, ok);
    }
  };
  // Fragments of k-step kk of a slice. A 16x16: matrices (rows 0-7 | 8-15) x (k 0-7 | 8-15)
  // from lanes 0-7, 8-15, 16-23, 24-31 are a0..a3 in the order mma expects. B: each [n][k]
  // row is a column of B^T, so the plain (non-.trans) ldmatrix gives the "col" operand:
  // matrices (n 0-7, k 0-7), (n 0-7, k 8-15), (n 8-15, k 0-7), (n 8-15, k 8-15) are b0, b1
  // of tile j and b0, b1 of tile j+1.
  auto load_fragments = [&](unsigned (&af)[MT][4], unsigned (&bf)[NT][2], int stage, int kk) {
    const __nv_bfloat16 *a = sA + stage * BM * BK, *b = sB + stage * BN * BK;
#pragma unroll
    for (int i = 0; i < MT; i++)
      ldmatrix_x4(af[i], a + swz(wm + i * 16 + (lane & 15), kk * 2 + (lane >> 4)));
#pragma unroll
    for (int j = 0; j < NT; j += 2) {
      unsigned t[4];
      ldmatrix_x4(t, b + swz(wn + j * 8 + (lane & 7) + ((lane >> 4) << 3),
                             kk * 2 + ((lane >> 3) & 1)));
      bf[j][0] = t[0];
      bf[j][1] = t[1];
      bf[j + 1][0] = t[2];
      bf[j + 1][1] = t[3];
    }
  };

  float acc[MT][NT][4];
#pragma unroll
  for (int i = 0; i < MT; i++)
#pragma unroll
    for (int j = 0; j < NT; j++)
#pragma unroll
      for (int e = 0; e < 4; e++) acc[i][j][e] = 0.0f;

  // Prologue: put STAGES-1 slices in flight, one commit group each; wait for slice 0 and
  // load its first fragments.
#pragma unroll
  for (int s = 0; s < STAGES - 1; s++) {
    if (s < KT)
#pragma unroll
      for (int part = 0; part < KSTEPS; part++) copy_slice_part(s, s, part);
    cp_async_commit();
  }
  cp_async_wait<STAGES - 2>();
  __syncthreads();
  unsigned af[2][MT][4], bf[2][NT][2];  // fragments double-buffered across k-steps
  load_fragments(af[0], bf[0], 0, 0);

  int rd = 0, wr = STAGES - 1;  // the stage being multiplied, the stage being refilled
  for (int kt = 0; kt < KT; kt++) {
#pragma unroll
    for (int kk = 0; kk < KSTEPS; kk++) {
      // Part kk of the refill of stage wr (freed by the last barrier) with slice kt+STAGES-1.
      if (kt + STAGES - 1 < KT) copy_slice_part(wr, kt + STAGES - 1, kk);
      if (kk == KSTEPS - 1) {
        // Close the refill's commit group (empty past the end, which keeps the count), then
        // wait until slice kt+1 has landed for every thread. The barrier also tells the
        // next slice's refill that slice kt is fully read (its last fragments are already
        // in registers). The mma.syncs issued just before keep the tensor cores busy while
        // the warps meet here.
        cp_async_commit();
        cp_async_wait<STAGES - 2>();
        __syncthreads();
        rd = (rd + 1) % STAGES;
      }
      // Fragments for the next k-step (the next slice's first one after the barrier) load
      // while this k-step's 32 mma.syncs run.
      load_fragments(af[(kk + 1) % 2], bf[(kk + 1) % 2], rd, (kk + 1) % KSTEPS);
#pragma unroll
      for (int i = 0; i < MT; i++)
#pragma unroll
        for (int j = 0; j < NT; j++) mma_bf16_16816(acc[i][j], af[kk % 2][i], bf[kk % 2][j]);
    }
    wr = (wr + 1) % STAGES;
  }

  // Epilogue: accumulator e of tile (i, j) sits at row lane/4 (+8 for e >= 2), column
  // 2·(lane%4) + (e & 1) of the 16x8 tile: two neighbours per store.
#pragma unroll
  for (int i = 0; i < MT; i++)
#pragma unroll
    for (int j = 0; j < NT; j++) {
      const int row = m0 + wm + i * 16 + lane / 4, col = n0 + wn + j * 8 + (lane % 4) * 2;
      gemm_store_pair(C, M, N, row, col, acc[i][j][0], acc[i][j][1]);
      gemm_store_pair(C, M, N, row + 8, col, acc[i][j][2], acc[i][j][3]);
    }
}

// Enqueue C = A·B^T on s: A [M][K], B [N][K] (K contiguous), C [M][N] row-major, bf16 in
// and out, fp32 accumulation; K % 8 == 0 and 16-byte aligned bases (cp.async of 16 bytes).
static inline void gemm_mma_launch(const __nv_bfloat16 *A, const __nv_bfloat16 *B, __nv_bfloat16 *C, int64_t M,
                                   int64_t N, int64_t K, cudaStream_t s) {
  static int configured = 0;  // the opt-in above 48 KB, once per process
  if (!configured) {
    GTL_CUDA(cudaFuncSetAttribute(gemm_mma_pipelined_kernel,
                                  cudaFuncAttributeMaxDynamicSharedMemorySize, SMEM_BYTES));
    configured = 1;
  }
  const dim3 grid((unsigned)((N + BN - 1) / BN), (unsigned)((M + BM - 1) / BM));
  gemm_mma_pipelined_kernel<<<grid, THREADS, SMEM_BYTES, s>>>(A, B, C, (int)M, (int)N, (int)K);
  GTL_LAUNCH();
}
}  // namespace ampere
