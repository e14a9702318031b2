// batched_gemm.cuh — ch01's optimized launcher: every expert's gate+up projection in one
// strided-batched cuBLAS GEMM. Launcher only (no driver): ch01/optimized.cu and the lab
// include it.
//
//     y_e[t][n] = sum_d x_e[t][d] · W_e[n][d]      e < E, t < T, n < N, d < D
// x [E][T][D], W [E][N][D] (nn.Linear layout: D contiguous), y [E][T][N]; bf16 in and out,
// fp32 accumulation (CUBLAS_COMPUTE_32F). cuBLAS is column-major: row-major y_e [T][N] is
// column-major y_e^T [N][T] = W_e · x_e^T, i.e. op(W) = T on the column-major [D][N] view
// of W_e and op(x) = N on the [D][T] view of x_e (cuBLAS documentation,
// cublasGemmStridedBatchedEx).
#pragma once
#include <cublas_v2.h>
#include <cuda_bf16.h>
#include <stdint.h>

#include "../common/check.h"

// Strategy: one strided-batched GEMM over all experts, bf16 in/out, fp32 accumulate.
// Limiter: HBM read bandwidth (the weights) at decode-sized T.
// Enqueue y = x · W^T for all E experts on stream s through handle h (its stream is set
// to s). Sizes must fit in int; cuBLAS errors exit 3.
static inline void experts_gemm_batched(cublasHandle_t h, const __nv_bfloat16 *d_x, const __nv_bfloat16 *d_w,
                                        __nv_bfloat16 *d_y, int64_t E, int64_t T, int64_t D, int64_t N,
                                        cudaStream_t s) {
  const float alpha = 1.0f, beta = 0.0f;
  GTL_CUBLAS(cublasSetStream(h, s));
  GTL_CUBLAS(cublasGemmStridedBatchedEx(h, CUBLAS_OP_T, CUBLAS_OP_N, (int)N, (int)T, (int)D, &alpha, d_w,
                                        CUDA_R_16BF, (int)D, N * D, d_x, CUDA_R_16BF, (int)D, T * D, &beta, d_y,
                                        CUDA_R_16BF, (int)N, T * N, (int)E, CUBLAS_COMPUTE_32F,
                                        CUBLAS_GEMM_DEFAULT));
}
