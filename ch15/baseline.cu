// ch15 MoE dispatch and grouped experts — baseline: a host loop over the experts.
//
// What it shows: the first MoE block most of us write, the shape of Hugging Face's eager
// expert loop, done competently: the top-k indices go to the host (one copy, one
// synchronization), the host counting-sorts the (token, expert) pairs and uploads the
// sorted rows in one pinned copy; one kernel gathers the tokens into expert order; then, for
// every expert that got tokens, one cuBLAS GEMM (gate and up fused, N = 2F) and, after one
// SwiGLU kernel over all rows, one cuBLAS GEMM for down; a combine kernel sums each token's
// top_k rows with their weights. Each GEMM is small (a handful of rows at decode) and the
// weights of one expert are too few to fill 132 SMs, so the GPU idles between ~2·E launches
// that the host issues one by one, behind a synchronization.
//
// Build and run:   make ch15 && ./ch15/baseline          (pair: scripts/pair.sh ch15)
//                  ./ch15/baseline --T=8 --preset=gptoss20b --skew=zipf:1.2
// Nsight Systems:  nsys profile -t cuda,nvtx ./ch15/baseline --iters=5: the D2H copy and
//   cudaStreamSynchronize, then a comb of small cuBLAS kernels with gaps between them.
// Nsight Compute:  scripts/profile.sh ch15 baseline
//   launch__grid_size (few blocks per GEMM at decode), gpu__time_duration.sum per kernel,
//   dram__throughput.avg.pct_of_peak_sustained_elapsed of each cuBLAS kernel.
// Book: MoE parallelism and routing (dispatch, grouped experts, load imbalance).
#include "moe.cuh"

void moe_prepare(MoeBlock *b, int sms) { (void)b, (void)sms; }  // nothing to plan

void moe_step(MoeBlock *b, cudaStream_t s) {
  const int64_t P = moe_pairs(b), E = b->E, D = b->D, F = b->F;
  // 1. The routing to the host: the loop below needs each expert's row count there.
  GTL_CUDA(cudaMemcpyAsync(b->hp_idx, b->d_topk_idx, P * 4, cudaMemcpyDeviceToHost, s));
  GTL_CUDA(cudaStreamSynchronize(s));
  // 2. Counting sort on the host: offsets, sorted tokens, and each pair's sorted row.
  int32_t *off = b->hp_off, cur[MOE_MAX_EXPERTS];
  memset(off, 0, (E + 1) * 4);
  for (int64_t p = 0; p < P; p++) off[b->hp_idx[p] + 1]++;
  for (int64_t e = 0; e < E; e++) off[e + 1] += off[e], cur[e] = off[e];
  for (int64_t p = 0; p < P; p++) {
    const int32_t slot = cur[b->hp_idx[p]]++;
    b->hp_sorted[slot] = (int32_t)(p / b->top_k);  // sorted_token
    b->hp_sorted[P + p] = slot;                    // pair_pos
  }
  GTL_CUDA(cudaMemcpyAsync(b->d_sorted_token, b->hp_sorted, 2 * P * 4, cudaMemcpyHostToDevice, s));
  // 3. Gather, then one GEMM per active expert: GU_e [m][2F] = X_e [m][D] · (gate|up)_e^T.
  moe_gather_launch(b, s);
  const float one = 1.0f, zero = 0.0f;
  for (int64_t e = 0; e < E; e++) {
    const int m = off[e + 1] - off[e];
    if (!m) continue;
    const __nv_bfloat16 *w = b->d_w + e * b->stride;
    GTL_CUBLAS(cublasGemmEx(b->cublas, CUBLAS_OP_T, CUBLAS_OP_N, (int)(2 * F), m, (int)D, &one,
                            w, CUDA_R_16BF, (int)D, b->d_xs + off[e] * D, CUDA_R_16BF, (int)D,
                            &zero, b->d_gu + off[e] * 2 * F, CUDA_R_16BF, (int)(2 * F),
                            CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
  }
  moe_swiglu_launch(b, s);
  for (int64_t e = 0; e < E; e++) {  // Y_e [m][D] = H_e [m][F] · down_e^T
    const int m = off[e + 1] - off[e];
    if (!m) continue;
    const __nv_bfloat16 *w = b->d_w + e * b->stride + 2 * F * D;
    GTL_CUBLAS(cublasGemmEx(b->cublas, CUBLAS_OP_T, CUBLAS_OP_N, (int)D, m, (int)F, &one, w,
                            CUDA_R_16BF, (int)F, b->d_h + off[e] * F, CUDA_R_16BF, (int)F,
                            &zero, b->d_y + off[e] * D, CUDA_R_16BF, (int)D,
                            CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
  }
  moe_combine_launch(b->d_y, b->d_pair_pos, b->d_topk_w, b->T, (int)b->top_k, D, b->d_out, s);
}

int main(int argc, char **argv) {
  return moe_main(argc, argv, "baseline",
                  "host sort after a D2H copy + sync, one cuBLAS GEMM per active expert "
                  "(gate+up, down), gather/SwiGLU/combine kernels",
                  NULL);
}
