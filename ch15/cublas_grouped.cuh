// cublas_grouped.cuh — ch15's library reference: the same MoE block with cuBLAS's grouped
// GEMM (cublasGemmGroupedBatchedEx, cuBLAS 12.5+) in place of ours. Included by moe.cuh after
// MoeBlock; optimized.cu passes it to moe_main, which times it as a third row.
#pragma once
// ---- cuBLAS grouped GEMM (cublasGemmGroupedBatchedEx, cuBLAS 12.5+) ------------------------
// The library's grouped GEMM takes each group's m, n, k from HOST arrays, so it cannot follow
// a device-side sort without a sync. The row is timed with every advantage: the per-expert
// sizes and pointer arrays are built in setup from the host routing (untimed); the timed
// step is our dispatch, a gather (cuBLAS cannot gather rows), grouped gate+up (one GEMM of
// N = 2F per active expert), SwiGLU, grouped down, our combine.
#include "moe.cuh"

#if CUBLAS_VERSION >= 120500
// Build the per-expert sizes and pointer arrays. Returns 0, or -1 with the reason in why
// (a cuBLAS older than 12.5 at run time).
static int moe_cublas_grouped_setup(MoeBlock *b, char *why, size_t n_why) {
  int ver = 0;
  GTL_CUBLAS(cublasGetVersion(b->cublas, &ver));
  if (ver < 120500) {
    snprintf(why, n_why, "cuBLAS %d lacks cublasGemmGroupedBatchedEx (12.5+)", ver);
    return -1;
  }
  int64_t *off = (int64_t *)malloc(sizeof(int64_t) * (b->E + 1));
  off[0] = 0;
  for (int64_t e = 0; e < b->E; e++) off[e + 1] = off[e] + b->h_count[e];
  const int n = b->n_active = (int)moe_active(b);
  int **ints[] = {&b->g_m, &b->g_n_up, &b->g_n_down, &b->g_k_up, &b->g_k_down, &b->g_ld_up,
                  &b->g_ld_down, &b->g_ldc_up, &b->g_one};
  for (size_t i = 0; i < sizeof ints / sizeof ints[0]; i++) *ints[i] = (int *)malloc(4 * n);
  b->g_ta = (cublasOperation_t *)malloc(sizeof(cublasOperation_t) * n);
  b->g_tb = (cublasOperation_t *)malloc(sizeof(cublasOperation_t) * n);
  b->g_alpha = (float *)malloc(4 * n);
  b->g_beta = (float *)malloc(4 * n);
  const void **hp = (const void **)malloc(sizeof(void *) * 6 * n);
  int a = 0;
  for (int64_t e = 0; e < b->E; e++) {
    if (!b->h_count[e]) continue;
    // Row-major C[m][N] = X[m][K] · W[N][K]^T is column-major C^T = W^T(op T) · X^T(op N).
    b->g_m[a] = b->h_count[e];
    b->g_n_up[a] = (int)(2 * b->F), b->g_k_up[a] = (int)b->D, b->g_ld_up[a] = (int)b->D;
    b->g_n_down[a] = (int)b->D, b->g_k_down[a] = (int)b->F, b->g_ld_down[a] = (int)b->F;
    b->g_ldc_up[a] = (int)(2 * b->F);
    b->g_one[a] = 1;
    b->g_ta[a] = CUBLAS_OP_T, b->g_tb[a] = CUBLAS_OP_N;
    b->g_alpha[a] = 1.0f, b->g_beta[a] = 0.0f;
    const __nv_bfloat16 *w = b->d_w + e * b->stride;
    hp[0 * n + a] = w;                                  // gate | up [2F][D]
    hp[1 * n + a] = b->d_xs + off[e] * b->D;            // X_e [m][D]
    hp[2 * n + a] = b->d_gu + off[e] * 2 * b->F;        // GU_e [m][2F]
    hp[3 * n + a] = w + 2 * b->F * b->D;                // down [D][F]
    hp[4 * n + a] = b->d_h + off[e] * b->F;             // H_e [m][F]
    hp[5 * n + a] = b->d_y + off[e] * b->D;             // Y_e [m][D]
    a++;
  }
  b->d_ptr = (const void **)gtl_malloc(sizeof(void *) * 6 * n, "cuBLAS pointer arrays");
  GTL_CUDA(cudaMemcpy(b->d_ptr, hp, sizeof(void *) * 6 * n, cudaMemcpyHostToDevice));
  free(hp);
  free(off);
  return 0;
}
static void moe_cublas_grouped_step(void *user, cudaStream_t s) {
  MoeBlock *b = (MoeBlock *)user;
  const int n = b->n_active;
  void *const *p = (void *const *)b->d_ptr;
  // The dispatch's tile table (bm = 16) goes unused here; its offsets, sorted tokens and
  // pair positions feed the gather and the combine.
  moe_dispatch_launch(b->d_topk_idx, b->T, (int)b->top_k, (int)b->E, 16, b->d_offsets,
                      b->d_tile_start, b->d_sorted_token, b->d_pair_pos, s);
  moe_gather_launch(b, s);
  // A status other than success (a cuBLAS without this type combination) is kept, not
  // fatal: the driver then reports the row as missing and our result still stands.
  cublasStatus_t st = cublasGemmGroupedBatchedEx(
      b->cublas, b->g_ta, b->g_tb, b->g_n_up, b->g_m, b->g_k_up, b->g_alpha, p, CUDA_R_16BF,
      b->g_ld_up, p + n, CUDA_R_16BF, b->g_ld_up, b->g_beta, p + 2 * n, CUDA_R_16BF,
      b->g_ldc_up, n, b->g_one, CUBLAS_COMPUTE_32F);
  if (st != CUBLAS_STATUS_SUCCESS && !b->ref_status) b->ref_status = (int)st;
  moe_swiglu_launch(b, s);
  st = cublasGemmGroupedBatchedEx(
      b->cublas, b->g_ta, b->g_tb, b->g_n_down, b->g_m, b->g_k_down, b->g_alpha, p + 3 * n,
      CUDA_R_16BF, b->g_ld_down, p + 4 * n, CUDA_R_16BF, b->g_ld_down, b->g_beta, p + 5 * n,
      CUDA_R_16BF, b->g_n_down, n, b->g_one, CUBLAS_COMPUTE_32F);
  if (st != CUBLAS_STATUS_SUCCESS && !b->ref_status) b->ref_status = (int)st;
  moe_combine_launch(b->d_y, b->d_pair_pos, b->d_topk_w, b->T, (int)b->top_k, b->D, b->d_out,
                     s);
}
static const MoeRefRow moe_cublas_grouped = {"cublas_grouped", moe_cublas_grouped_setup,
                                             moe_cublas_grouped_step};
#define MOE_REF_ROW (&moe_cublas_grouped)
#else
#define MOE_REF_ROW NULL  // a toolkit older than 12.5: no library row
#endif
