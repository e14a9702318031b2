// ch15 MoE dispatch and grouped experts — optimized: device dispatch + one grouped GEMM each.
//
// The one change: the host loop over experts becomes four launches with no synchronization.
// A one-block counting sort on the device (histogram, prefix sum, scatter) orders the
// (token, expert) pairs by expert and writes the table of work items; ONE persistent
// grouped GEMM then runs every (expert, 64-column tile) of gate+up for all experts — rows
// gathered straight from x by token, SwiGLU in the epilogue, so the 2F-wide gate|up never
// touches memory — and ONE more runs down; the combine sums each token's rows. Every SM
// streams a different weight tile at once (cp.async ring of 4-6 slices that keeps running
// across work items), where the baseline fed the GPU one expert at a time. The kernels are
// in ch15/grouped.cuh, which the lab includes; this file only chains them.
// cuBLAS's grouped GEMM (cublasGemmGroupedBatchedEx) is timed in the same run as the library
// reference, with the per-expert sizes given to it on the host for free.
//
// Build and run:   make ch15 && ./ch15/optimized         (pair: scripts/pair.sh ch15)
//                  ./ch15/optimized --T=1 --preset=gptoss20b ; ./ch15/optimized --skew=zipf:1.2
//                  ch15/sweep.sh                          (T = 1 … 4096, both presets)
// SASS check: cuobjdump --dump-sass ch15/optimized | grep -oE 'LDGSTS|LDSM|HMMA' | sort | uniq -c
// Nsight Compute:  scripts/profile.sh ch15 optimized
//   dram__throughput.avg.pct_of_peak_sustained_elapsed (the grouped GEMMs at decode: HBM
//   busy), sm__pipe_tensor_op_hmma_cycles_active.avg.pct_of_peak_sustained_elapsed (large
//   T), launch__grid_size (= SMs x blocks per SM: persistent), gpu__time_duration.sum.
// Book: MoE parallelism and routing (dispatch, grouped experts, load imbalance).
#include "grouped.cuh"         // the lab-reusable kernels: dispatch, grouped GEMMs, combine
#include "cublas_grouped.cuh"  // the driver (moe.cuh) and the library row

void moe_prepare(MoeBlock *b, int sms) {
  static MoeGroupedPlan plan;  // one block per process
  plan = moe_grouped_plan(b->T, (int)b->top_k, (int)b->E, sms);
  b->plan = &plan;
}

void moe_step(MoeBlock *b, cudaStream_t s) {
  const MoeGroupedPlan *p = (const MoeGroupedPlan *)b->plan;
  const int E = (int)b->E;
  const __nv_bfloat16 *w = b->d_w;
  moe_dispatch_launch(b->d_topk_idx, b->T, (int)b->top_k, E, p->bm, b->d_offsets,
                      b->d_tile_start, b->d_sorted_token, b->d_pair_pos, s);
  moe_expert_up_launch(p, b->d_x, b->d_sorted_token, w, w + b->F * b->D, b->stride,
                       b->d_offsets, b->d_tile_start, E, b->D, b->F, b->d_h, s);
  moe_expert_down_launch(p, b->d_h, w + 2 * b->F * b->D, b->stride, b->d_offsets,
                         b->d_tile_start, E, b->F, b->D, b->d_y, s);
  moe_combine_launch(b->d_y, b->d_pair_pos, b->d_topk_w, b->T, (int)b->top_k, b->D, b->d_out,
                     s);
}

int main(int argc, char **argv) {
  return moe_main(argc, argv, "optimized",
                  "device counting sort, persistent grouped GEMM (cp.async + mma.sync, SwiGLU "
                  "epilogue) for gate+up and for down, combine; no host sync",
                  MOE_REF_ROW);
}
