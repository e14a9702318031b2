// ch08 occupancy, warp efficiency, ILP — optimized: warp-per-row multi-RHS decode GEMV.
//
// The one change: a warp (not a block) owns a row, and it owns the row for every token.
// Each lane issues GEMV_ILP (4) independent 16-byte loads (8 bf16 each) before it uses the
// first, so a warp keeps 2 KB of its row in flight instead of 64 bytes; the 32 partial
// sums meet through 5 __shfl_xor_sync steps (no shared memory, no barrier); and each
// weight, once in registers, is multiplied by all B tokens, so the weights cross DRAM once
// whatever the batch. The grid is one wave sized by cudaOccupancyMaxActiveBlocksPerMultiprocessor,
// each warp striding over rows. The kernel is gemv_warprow_kernel in ch08/gemv.cuh (the
// lab includes it); this file only points the chapter's driver at it.
//
// Build and run:   make ch08 && ./ch08/optimized         (pair: scripts/pair.sh ch08)
// Nsight Compute:  scripts/profile.sh ch08 optimized, or directly
//   ncu --clock-control none --nvtx --nvtx-include "gauntlet@ch08.optimized.timed]" -k regex:gemv
//       --metrics sm__warps_active.avg.pct_of_peak_sustained_active,dram__throughput.avg.pct_of_peak_sustained_elapsed,launch__registers_per_thread
//       ./ch08/optimized --warmup=0 --iters=1
//   at B=1 the same occupancy as the baseline (40 registers, ~69% of warps active) but
//   dram__throughput 78% instead of 33%: bytes in flight per warp (ILP x 16 B x 32 lanes)
//   matter more than warps. At B=8, registers cut occupancy to 25% (README).
// Book: occupancy, warp efficiency and ILP — decode GEMV.
#include "expert_gemv.cuh"

void gemv_launch(const GemvBatch *g, cudaStream_t s) { gemv_warprow_launch(g, s); }

int main(int argc, char **argv) {
  return expert_gemv_main(argc, argv, "optimized",
                          "warp per row, 16-byte loads, ILP 4, shuffle reduction, multi-RHS");
}
