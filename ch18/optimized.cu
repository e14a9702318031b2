// ch18 advanced decode attention — optimized: GQA-shared split-KV flash-decoding.
//
// The one change: the unit of work becomes (sequence, KV head, split of the keys) instead
// of (sequence, query head). One CTA reads its chunk of K and V once, through a 3-stage
// cp.async pipeline of 64-key tiles, and serves all 8 query heads of the group from that
// one read: the 8 heads are the rows of a 16×8×16 bf16 tensor-core MMA (S = Q·K^T, then
// O += P·V with P kept in registers), under an online softmax in fp32. Enough splits are
// cut that every SM holds CTAs for one wave of equal work (attn_splitkv_num_splits), and a
// second kernel merges the splits' partial outputs by their log-sum-exp, adding the sink.
// The cache bytes cross DRAM once per KV head instead of once per query head. The kernels
// live in ch18/decode_attn.cuh (the lab includes it); this file points the driver at them.
//
// Build and run:   make ch18 && ./ch18/optimized               (pair: scripts/pair.sh ch18)
// Nsight Compute:  scripts/profile.sh ch18 optimized, or directly
//   ncu --clock-control none --nvtx --nvtx-include "gauntlet@ch18.optimized.timed]" -k regex:attn
//       --metrics dram__bytes_read.sum,lts__t_bytes.sum,gpu__time_duration.sum,dram__throughput.avg.pct_of_peak_sustained_elapsed,sm__pipe_tensor_op_hmma_cycles_active.avg.pct_of_peak_sustained_active
//       ./ch18/optimized --warmup=0 --iters=1
//   dram__bytes_read.sum ≈ the 268 MB of the roofline (once per KV head) and the tensor
//   pipe ~10% busy: the MMAs only take the arithmetic out of the way of the loads.
// Book: advanced decode attention — split-KV flash-decoding.
#include "attention.cuh"

void attn_plan(const GtlCtx *ctx, const AttnDecodeArgs *a, int max_keys, AttnPlan *p) {
  const int per_sm = attn_splitkv_ctas_per_sm();
  p->num_splits = attn_splitkv_num_splits(a->B, a->H_kv, max_keys, ctx->dev.sms * per_sm);
  const size_t n = attn_splitkv_workspace_floats(a->B, a->H, p->num_splits);
  p->workspace = n ? (float *)gtl_malloc(n * 4, "split-KV partials (fp32)") : NULL;
  snprintf(p->what, sizeof p->what,
           "attn_splitkv_gqa_kernel grid (%d splits, H_kv=%d, B=%d) x %d threads, %d KB smem, "
           "%d CTAs/SM; %s",
           p->num_splits, a->H_kv, a->B, ATTN_THREADS, ATTN_SMEM_BYTES / 1024, per_sm,
           p->num_splits > 1 ? "+ attn_splitkv_combine_kernel" : "no combine (one split)");
}

void attn_launch(const AttnDecodeArgs *a, const AttnPlan *p, cudaStream_t s) {
  if (attn_splitkv_launch(a, p->num_splits, p->workspace, s) != 0) exit(GTL_EXIT_RUNTIME);
}

void attn_plan_free(AttnPlan *p) {
  if (p->workspace) GTL_CUDA(cudaFree(p->workspace));
  p->workspace = NULL;
}

int main(int argc, char **argv) {
  return attn_main(argc, argv, "optimized",
                   "CTA per (sequence, KV head, split): K/V read once for the 8 query heads, "
                   "mma.sync bf16, online softmax, log-sum-exp combine");
}
