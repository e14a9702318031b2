// ch06 CUDA fundamentals, occupancy — optimized: warp-per-token router kernel.
//
// The one change: the router runs on the GPU, where its logits already are. One warp
// owns one token: each of its 32 lanes loads 4 of the 128 logits (one 16-byte load) into
// registers, the warp finds max and Σ exp with shuffles (__shfl_xor_sync, no shared
// memory), then picks the top 8 in 8 rounds of a shuffle argmax on (logit, index) with
// the tie rule, and lane 0 writes the 8 indices and weights. 4 tokens per block of 128
// threads. No copy, no synchronize, no host work: the step stays on the stream.
// The kernel lives in ch06/topk.cuh, which the lab includes.
//
// Build and run:   make ch06 && ./ch06/optimized         (pair: scripts/pair.sh ch06)
// Registers:       nvcc -std=c++17 -O3 -arch=sm_90 -Icommon -Ibuild -Xptxas -v
//                       -c ch06/optimized.cu -o /dev/null       (one line)
// Nsight Compute:  scripts/profile.sh ch06 optimized
//   launch__registers_per_thread, launch__occupancy_limit_registers / _warps / _blocks,
//   sm__maximum_warps_per_active_cycle_pct (theoretical occupancy),
//   sm__warps_active.avg.pct_of_peak_sustained_active (achieved), launch__grid_size,
//   gpu__time_duration.sum (a few µs: the grid is far smaller than one wave).
// Book: CUDA fundamentals — thread hierarchy, warps, occupancy.
#include "router.cuh"
#include "topk.cuh"

void router_launch(const RouterProblem *p, cudaStream_t s) {
  router_topk_launch<ROUTER_E, ROUTER_TOP_K>(p->d_logits, p->d_idx, p->d_w, p->T,
                                             p->norm_topk_prob, s);
}

// The occupancy the hardware grants this kernel: registers from the compiled function,
// resident blocks per SM from the occupancy calculator.
void router_explain(char *buf, size_t n) {
  cudaFuncAttributes a;
  GTL_CUDA(cudaFuncGetAttributes(&a, router_topk_kernel<ROUTER_E, ROUTER_TOP_K>));
  const int threads = kRouterWarpsPerBlock * 32;
  int blocks_per_sm = 0, dev = 0, max_threads = 0;
  GTL_CUDA(cudaOccupancyMaxActiveBlocksPerMultiprocessor(
      &blocks_per_sm, router_topk_kernel<ROUTER_E, ROUTER_TOP_K>, threads, 0));
  GTL_CUDA(cudaGetDevice(&dev));
  GTL_CUDA(cudaDeviceGetAttribute(&max_threads, cudaDevAttrMaxThreadsPerMultiProcessor, dev));
  const int warps = blocks_per_sm * threads / 32, max_warps = max_threads / 32;
  snprintf(buf, n,
           "kernel router_topk_kernel<%d,%d>: %d registers/thread, %zu B local, %zu B static "
           "smem; block %d threads = %d warps = %d tokens; grid ceil(T/%d)\n"
           "occupancy calculator: %d blocks/SM resident = %d of %d warps (%.0f%% theoretical "
           "occupancy)",
           ROUTER_E, ROUTER_TOP_K, a.numRegs, a.localSizeBytes, a.sharedSizeBytes, threads,
           kRouterWarpsPerBlock, kRouterWarpsPerBlock, kRouterWarpsPerBlock, blocks_per_sm,
           warps, max_warps, 100.0 * warps / max_warps);
}

int main(int argc, char **argv) {
  return router_main(argc, argv, "optimized", "warp per token on the GPU, shuffle softmax + top-k");
}
