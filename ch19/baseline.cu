// ch19 FP8 KV cache — baseline: ch18's split-KV flash-decoding on a bf16 KV cache.
//
// What it shows: the best kernel of the previous chapter, unchanged (it is included from
// ch18/decode_attn.cuh, not copied): CTA per (sequence, KV head, split), K/V tiles through
// a cp.async pipeline, the 8 query heads of a KV head as the rows of bf16 tensor-core MMAs,
// log-sum-exp combine. It already reads every cache byte once per KV head at ~80% of the
// read ceiling, so the only way left to go faster is to read fewer bytes: every (key, KV
// head) costs 256 B (64 dims of K and of V in bf16). The driver (kvcache.cuh) is shared
// with the optimized program; here every page is bf16 and --pressure changes nothing.
//
// Build and run:   make ch19 && ./ch19/baseline                (pair: scripts/pair.sh ch19)
// Nsight Compute:  scripts/profile.sh ch19 baseline, or directly
//   ncu --clock-control none --nvtx --nvtx-include "gauntlet@ch19.baseline.timed]" -k regex:attn
//       --metrics dram__bytes_read.sum,gpu__time_duration.sum,dram__throughput.avg.pct_of_peak_sustained_elapsed
//       ./ch19/baseline --warmup=0 --iters=1
// Book: advanced decode attention — quantized KV cache.
#include "kvcache.cuh"

void kv_plan(const GtlCtx *ctx, const KvRowArgs *a, int max_keys, KvPlan *p) {
  const int per_sm = attn_splitkv_ctas_per_sm();
  p->num_splits = attn_splitkv_num_splits(a->bf.B, a->bf.H_kv, max_keys, ctx->dev.sms * per_sm);
  const size_t n = attn_splitkv_workspace_floats(a->bf.B, a->bf.H, p->num_splits);
  p->workspace = n ? (float *)gtl_malloc(n * 4, "split-KV partials (fp32)") : NULL;
  snprintf(p->what, sizeof p->what, "ch18 attn_splitkv_gqa_kernel, %d splits, %d CTAs/SM, bf16 pages",
           p->num_splits, per_sm);
}

void kv_launch(const KvRowArgs *a, const KvPlan *p, cudaStream_t s) {
  if (attn_splitkv_launch(&a->bf, p->num_splits, p->workspace, s) != 0) exit(GTL_EXIT_RUNTIME);
}

void kv_plan_free(KvPlan *p) {
  if (p->workspace) GTL_CUDA(cudaFree(p->workspace));
  p->workspace = NULL;
}

int main(int argc, char **argv) {
  return kv_main(argc, argv, "baseline",
                 "ch18's split-KV GQA flash-decoding on bf16 K/V (256 B per key and KV head)", 0);
}
