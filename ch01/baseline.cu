// ch01 performance basics, roofline, goodput — baseline: one cuBLAS GEMM per expert.
//
// What it shows: the expert loop most MoE code starts with (a Python `for e in experts`
// turned into C). Each expert is its own cublasGemmEx: m = 2F = 1536, n = T = 8, k = D =
// 2048, a 6.3 MB weight read per call. At 4.2 TB/s that read takes 1.5 µs, less than the
// host needs to issue one cuBLAS call and launch its kernel (an empty kernel alone costs
// ~3.9 µs per eager launch on an H200, ch02/ceilings), so the host loop sets the pace: the
// GPU runs short kernels with idle gaps between them, and each short kernel spends much
// of its life ramping up and draining. The roofline point lands far below the read
// ceiling although the work and the bytes are exactly those of the optimized program.
//
// Build and run:   make ch01 && ./ch01/baseline        (pair: scripts/pair.sh ch01)
// Nsight Systems:  nsys profile -t cuda,nvtx ./ch01/baseline   — 128 short kernels per
//   iteration in ch01.baseline.timed, separated by launch gaps.
// Nsight Compute:  scripts/profile.sh ch01 baseline
//   per kernel: gpu__time_duration.sum, launch__grid_size (blocks per expert GEMM, against
//   132 SMs), dram__throughput.avg.pct_of_peak_sustained_elapsed (low: short kernels
//   never reach steady-state streaming).
// Book: performance basics — the roofline model, arithmetic intensity, goodput.
#include "experts.cuh"

// Strategy: E cublasGemmEx calls in a host loop, bf16 in/out, fp32 accumulate.
// Limiter: per-call launch and ramp-up/tail time; each GEMM too small to fill the GPU.
void experts_launch(const ExpertsProblem *p, cudaStream_t s) {
  const float alpha = 1.0f, beta = 0.0f;
  const int64_t N = 2 * p->F;
  GTL_CUBLAS(cublasSetStream(p->handle, s));
  for (int64_t e = 0; e < p->E; e++)
    GTL_CUBLAS(cublasGemmEx(p->handle, CUBLAS_OP_T, CUBLAS_OP_N, (int)N, (int)p->T, (int)p->D,
                            &alpha, p->d_w + e * N * p->D, CUDA_R_16BF, (int)p->D,
                            p->d_x + e * p->T * p->D, CUDA_R_16BF, (int)p->D, &beta,
                            p->d_y + e * p->T * N, CUDA_R_16BF, (int)N, CUBLAS_COMPUTE_32F,
                            CUBLAS_GEMM_DEFAULT));
}

int main(int argc, char **argv) {
  return experts_main(argc, argv, "baseline", "one cublasGemmEx per expert, host loop");
}
