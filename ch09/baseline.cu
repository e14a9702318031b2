// ch09 arithmetic intensity, tiling — baseline: one thread per output, no shared memory.
//
// What it shows: the first competent GEMM. Thread (m, n) walks the K dimension and keeps
// its one sum in a register. A warp spans 32 consecutive n, so each step's B load is one
// coalesced 128-byte line and its A load is one broadcast word; L1 and L2 catch the reuse
// (every A row is read by N/32 warps, every B line by M warps). But every FMA costs two
// load instructions: 2 FLOP per 8 bytes through the load path (0.25 FLOP/B), and the load
// units, not the FMA units, set the pace.
//
// Build and run:   make ch09 && ./ch09/baseline          (pair: scripts/pair.sh ch09)
//                  ./ch09/baseline --M=1000 --N=1000 --K=1000   (edges everywhere)
// Nsight Compute:  scripts/profile.sh ch09 baseline, or directly
//   ncu --clock-control none --nvtx --nvtx-include "gauntlet@ch09.baseline.timed]" -k regex:gemm
//       --metrics sm__inst_executed_pipe_lsu.avg.pct_of_peak_sustained_active,sm__pipe_fma_cycles_active.avg.pct_of_peak_sustained_active,l1tex__t_sector_hit_rate.pct
//       ./ch09/baseline --warmup=0 --iters=1
//   LSU busy, FMA pipe mostly idle, L1 hit rate high: the loads, not DRAM, are the limit.
// Book: arithmetic intensity and tiling — SIMT GEMM.
#include "gemm.cuh"

// Strategy: thread per output, warp along N, K loop through L1/L2. Limiter: two load
// instructions per FMA (load/store unit throughput).
__global__ void gemm_naive_kernel(const float *__restrict__ A, const float *__restrict__ B,
                                  float *__restrict__ C, int M, int N, int K) {
  const int n = blockIdx.x * blockDim.x + threadIdx.x;
  const int m = blockIdx.y * blockDim.y + threadIdx.y;
  if (m >= M || n >= N) return;
  const float *a = A + (size_t)m * K, *b = B + n;
  float acc = 0.0f;
  for (int k = 0; k < K; k++) acc = fmaf(a[k], b[(size_t)k * N], acc);
  C[(size_t)m * N + n] = acc;
}

void gemm_launch(const GemmProblem *p, cudaStream_t s) {
  const dim3 block(32, 8), grid((p->N + 31) / 32, (p->M + 7) / 8);
  gemm_naive_kernel<<<grid, block, 0, s>>>(p->d_A, p->d_B, p->d_C, p->M, p->N, p->K);
  GTL_LAUNCH();
}

int main(int argc, char **argv) {
  return gemm_main(argc, argv, "baseline", "thread per output, no shared memory");
}
