// gemm_epilogue.cuh — the store helper ch10's optimized kernels (mma.cuh, wgmma.cuh)
// share: device code only.
#pragma once
#include <cuda_bf16.h>

// Epilogue helper of the optimized kernels: store two neighbouring outputs (row, col),
// (row, col+1) as bf16, skipping any past M or N.
__device__ __forceinline__ void gemm_store_pair(__nv_bfloat16 *C, int M, int N, int row,
                                                int col, float v0, float v1) {
  if (row >= M) return;
  __nv_bfloat16 *dst = C + (size_t)row * N + col;
  if (N % 2 == 0 && col + 1 < N) {  // 4-byte aligned and both in range
    *(__nv_bfloat162 *)dst = __floats2bfloat162_rn(v0, v1);
  } else {
    if (col < N) dst[0] = __float2bfloat16_rn(v0);
    if (col + 1 < N) dst[1] = __float2bfloat16_rn(v1);
  }
}
