// ch02 GPU architecture, tensor cores — optimized: the same GEMM on the tensor cores.
//
// The one change: the data type and compute type cuBLAS is given. Two rows:
//   tf32 — the same fp32 arrays, CUBLAS_COMPUTE_32F_FAST_TF32: the tensor cores read each
//          fp32 input with a 10-bit mantissa (tf32) and accumulate in fp32.
//   bf16 — bf16 inputs (half the bytes), fp32 accumulation, bf16 output: the format
//          models are served in, on the tensor cores at twice the tf32 rate. The headline.
// A Hopper SM's four tensor cores each do a small matrix multiply-accumulate per
// instruction: dense, 2048 bf16 or 1024 tf32 FMAs per SM per clock, against 128 FP32 FMAs
// on its SIMT lanes (H100/H200 whitepaper rates), so the same 135.9 GFLOP take a fraction
// of the time. The kernels cuBLAS picks issue wgmma (HGMMA in SASS) instead of FFMA.
//
// Build and run:   make ch02 && ./ch02/optimized       (pair: scripts/pair.sh ch02)
// Ceilings:        ./ch02/ceilings  (measures the fp32, tf32, bf16 and fp8 rates used here)
// Nsight Compute:  scripts/profile.sh ch02 optimized
//   sm__pipe_tensor_op_gmma_cycles_active.avg.pct_of_peak_sustained_active (high: wgmma),
//   sm__inst_executed_pipe_fma.avg.pct_of_peak_sustained_active (low),
//   dram__throughput.avg.pct_of_peak_sustained_elapsed (low: compute-bound either way).
// Book: GPU architecture — SMs, SIMT cores and tensor cores.
#include "gemm_cublas.cuh"

// Strategy: cuBLAS on tensor cores, tf32 then bf16, fp32 accumulate. Limiter: tensor-core rate.
static const GemmVariant variants[] = {
    {"tf32", GTL_TF32, CUDA_R_32F, CUDA_R_32F, CUBLAS_COMPUTE_32F_FAST_TF32,
     CUBLAS_DEFAULT_MATH, GTL_BOUND_TF32},
    {"bf16", GTL_BF16, CUDA_R_16BF, CUDA_R_16BF, CUBLAS_COMPUTE_32F, CUBLAS_DEFAULT_MATH,
     GTL_BOUND_BF16},
};

int main(int argc, char **argv) {
  return gemm_main(argc, argv, "optimized", variants, 2, "cuBLAS on tensor cores: tf32, bf16");
}
