// ch02 GPU architecture, tensor cores — baseline: FP32 SGEMM on the SIMT cores.
//
// What it shows: a 4096×5760×2880 GEMM as cuBLAS runs it when told to stay in IEEE fp32
// (CUBLAS_PEDANTIC_MATH, CUBLAS_COMPUTE_32F_PEDANTIC): no tensor cores, no reduced
// precision. Every multiply-add is an FFMA on one of the 128 FP32 lanes of each SM, so the
// ceiling is 2 flops × 128 lanes × 132 SMs × ~1.98 GHz ≈ 67 TFLOP/s — and a good SGEMM
// reaches most of it. It is a competent GEMM on the wrong units.
//
// Build and run:   make ch02 && ./ch02/baseline        (pair: scripts/pair.sh ch02)
// Ceilings:        ./ch02/ceilings  (measures the fp32, tf32, bf16 and fp8 rates used here)
// Nsight Compute:  scripts/profile.sh ch02 baseline
//   sm__inst_executed_pipe_fma.avg.pct_of_peak_sustained_active (high: FFMA-bound),
//   sm__pipe_tensor_cycles_active.avg.pct_of_peak_sustained_active (zero),
//   sm__throughput.avg.pct_of_peak_sustained_elapsed.
// Book: GPU architecture — SMs, SIMT cores and tensor cores.
#include "gemm_cublas.cuh"

// Strategy: cuBLAS SGEMM, fp32 in/out, pedantic fp32 compute. Limiter: FP32 FFMA issue rate.
static const GemmVariant variants[] = {
    {"fp32_pedantic", GTL_FP32, CUDA_R_32F, CUDA_R_32F, CUBLAS_COMPUTE_32F_PEDANTIC,
     CUBLAS_PEDANTIC_MATH, GTL_BOUND_FP32},
};

int main(int argc, char **argv) {
  return gemm_main(argc, argv, "baseline", variants, 1, "cuBLAS SGEMM, pedantic fp32 (SIMT FFMA)");
}
