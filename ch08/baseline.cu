// ch08 occupancy, warp efficiency, ILP — baseline: block-per-row decode GEMV.
//
// What it shows: the GEMV most of us write first. One block of 256 threads owns one output
// (row n, token b) of the selected experts' matrices: thread t multiplies elements t,
// t+256, … of the row (2-byte loads, coalesced across the warp: 64 bytes per warp
// instruction), then the 256 partial sums meet in a shared-memory tree with a
// __syncthreads() per level. A 2880-long row gives each thread only 11-12 loads, so eight
// barrier-separated reduction steps follow every short burst of loads; each load carries
// 2 bytes, so keeping DRAM busy takes many warp instructions in flight. Tokens are the
// grid's y dimension, so at batch B every weight row is read B times (the per-token GEMV
// loop, done in one launch).
//
// Build and run:   make ch08 && ./ch08/baseline          (pair: scripts/pair.sh ch08)
// Nsight Compute:  scripts/profile.sh ch08 baseline, or directly
//   ncu --clock-control none --nvtx --nvtx-include "gauntlet@ch08.baseline.timed]" -k regex:gemv
//       --metrics sm__warps_active.avg.pct_of_peak_sustained_active,dram__throughput.avg.pct_of_peak_sustained_elapsed
//       ./ch08/baseline --warmup=0 --iters=1
//   ~70% of warps active, yet dram__throughput ~33%: occupancy is not the same thing as
//   bytes in flight.
// Book: occupancy, warp efficiency and ILP — decode GEMV.
#include "expert_gemv.cuh"

#define GEMV_BLOCK 256

// Strategy: block per (row, token), 2-byte strided loads, shared-memory tree reduction.
// Limiter: bytes in flight (2 B per load, 11 loads per thread) and barrier latency.
__global__ void __launch_bounds__(GEMV_BLOCK)
    gemv_blockrow_kernel(const __grid_constant__ GemvBatch g) {
  __shared__ float partial[GEMV_BLOCK];
  const int64_t row = blockIdx.x;
  const int b = blockIdx.y, t = threadIdx.x;
  int m = 0;
  while (row >= g.row_end[m]) m++;
  const int64_t n = row - (m ? g.row_end[m - 1] : 0);
  const int K = g.K[m];
  const __nv_bfloat16 *w = g.W[m] + n * K, *x = g.x[m] + (int64_t)b * K;
  float acc = 0.0f;
  for (int k = t; k < K; k += GEMV_BLOCK)
    acc = fmaf(__bfloat162float(w[k]), __bfloat162float(x[k]), acc);
  partial[t] = acc;
  for (int s = GEMV_BLOCK / 2; s > 0; s >>= 1) {
    __syncthreads();
    if (t < s) partial[t] += partial[t + s];
  }
  if (t == 0) g.y[m][(int64_t)b * g.N[m] + n] = partial[0];
}

void gemv_launch(const GemvBatch *g, cudaStream_t s) {
  const dim3 grid((unsigned)g->row_end[g->n_mats - 1], (unsigned)g->B);
  gemv_blockrow_kernel<<<grid, GEMV_BLOCK, 0, s>>>(*g);
  GTL_LAUNCH();
}

int main(int argc, char **argv) {
  return expert_gemv_main(argc, argv, "baseline",
                          "block of 256 per (row, token), 2-byte loads, shared-memory tree");
}
