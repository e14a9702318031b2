// ch01 performance basics, roofline, goodput — optimized: one strided-batched GEMM.
//
// The one change: the E per-expert GEMMs become ONE cublasGemmStridedBatchedEx call.
// The experts' weights, tokens and outputs already sit at a fixed stride from each other
// (W_e = W + e·2F·D, X_e = X + e·T·D, Y_e = Y + e·T·2F), so cuBLAS can launch a single
// kernel whose grid covers every expert's tiles: one launch instead of 128, all 132 SMs
// busy from the first to the last byte, and 805 MB of weights streamed in one sweep. The
// math, the bytes and the flops are identical: only the time changes, and with it the
// point's position on the roofline — it moves straight up towards the read ceiling.
//
// Build and run:   make ch01 && ./ch01/optimized       (pair: scripts/pair.sh ch01)
// Nsight Systems:  nsys profile -t cuda,nvtx ./ch01/optimized  — one kernel per iteration.
// Nsight Compute:  scripts/profile.sh ch01 optimized
//   dram__throughput.avg.pct_of_peak_sustained_elapsed (near its peak: weight streaming),
//   dram__bytes_read.sum (≈ 805 MB: each weight read once), launch__grid_size (E times the
//   per-expert grid), sm__pipe_tensor_cycles_active.avg.pct_of_peak_sustained_active
//   (low: the tensor cores wait on memory, as the roofline predicts).
// Book: performance basics — the roofline model, arithmetic intensity, goodput.
#include "experts.cuh"

// Strategy: one strided-batched GEMM over all experts, bf16 in/out, fp32 accumulate.
// Limiter: HBM read bandwidth (the weights), as the roofline predicts.
void experts_launch(const ExpertsProblem *p, cudaStream_t s) {
  const float alpha = 1.0f, beta = 0.0f;
  const int64_t N = 2 * p->F;
  GTL_CUBLAS(cublasSetStream(p->handle, s));
  GTL_CUBLAS(cublasGemmStridedBatchedEx(
      p->handle, CUBLAS_OP_T, CUBLAS_OP_N, (int)N, (int)p->T, (int)p->D, &alpha, p->d_w,
      CUDA_R_16BF, (int)p->D, N * p->D, p->d_x, CUDA_R_16BF, (int)p->D, p->T * p->D, &beta,
      p->d_y, CUDA_R_16BF, (int)N, p->T * N, (int)p->E, CUBLAS_COMPUTE_32F,
      CUBLAS_GEMM_DEFAULT));
}

int main(int argc, char **argv) {
  return experts_main(argc, argv, "optimized", "one cublasGemmStridedBatchedEx over all experts");
}
