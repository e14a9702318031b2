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
#include "batched_gemm.cuh"  // the launcher the lab reuses
#include "experts.cuh"

void experts_launch(const ExpertsProblem *p, cudaStream_t s) {
  experts_gemm_batched(p->handle, p->d_x, p->d_w, p->d_y, p->E, p->T, p->D, 2 * p->F, s);
}

int main(int argc, char **argv) {
  return experts_main(argc, argv, "optimized", "one cublasGemmStridedBatchedEx over all experts");
}
