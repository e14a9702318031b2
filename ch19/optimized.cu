// ch19 FP8 KV cache — optimized: the same split-KV kernel reading FP8 E4M3 K/V.
//
// The one change: K and V are stored as FP8 E4M3 codes with one bf16 scale per (token, KV
// head) row, 64 + 64 + 4 = 132 B per (key, KV head) instead of 256 B. The scale is chosen
// once, when the token is appended (amax / 448, rounded up to bf16; attn_fp8_quantize), so
// no old token is ever re-scaled, and it costs 2 B per 64-byte row (3%). The scales are
// applied where they are per key: K's to its score column after Q·Kᵀ, V's to p before P is
// packed for P·V. When every page is FP8, attn_fp8_direct_kernel (ch19/attn_fp8_direct.cuh)
// keeps the tiles as FP8 in shared memory and converts the codes to fp16 in registers as
// it builds each MMA operand. Each block-table entry also says whether its page is bf16 or
// FP8, so a pool that switches to FP8 under memory pressure (--pressure) keeps its older
// bf16 pages readable: for such a mix, attn_fp8_splitkv_kernel widens FP8 rows to bf16 in
// shared memory and runs ch18's MMAs unchanged.
// Build and run:   make ch19 && ./ch19/optimized               (pair: scripts/pair.sh ch19)
// Nsight Compute:  scripts/profile.sh ch19 optimized, or directly
//   ncu --clock-control none --nvtx --nvtx-include "gauntlet@ch19.optimized.timed]" -k regex:attn
//       --metrics dram__bytes_read.sum,gpu__time_duration.sum,dram__throughput.avg.pct_of_peak_sustained_elapsed,smsp__inst_executed_op_shared_st.sum
//       ./ch19/optimized --warmup=0 --iters=1
//   dram__bytes_read.sum should be about 132/256 of the baseline's.
// Book: advanced decode attention — quantized KV cache.
#include "kvcache.cuh"

void kv_plan(const GtlCtx *ctx, const KvRowArgs *a, int max_keys, KvPlan *p) {
  const int direct = attn_fp8_direct_ok(&a->f8.kv), per_sm = attn_fp8_splitkv_ctas_per_sm(direct);
  p->num_splits = attn_splitkv_num_splits(a->f8.B, a->f8.H_kv, max_keys, ctx->dev.sms * per_sm);
  const size_t n = attn_splitkv_workspace_floats(a->f8.B, a->f8.H, p->num_splits);
  p->workspace = n ? (float *)gtl_malloc(n * 4, "split-KV partials (fp32)") : NULL;
  snprintf(p->what, sizeof p->what, "%s, %d splits, %d CTAs/SM, %d B smem%s",
           direct ? "attn_fp8_direct_kernel" : "attn_fp8_splitkv_kernel (bf16 + FP8 pages)",
           p->num_splits, per_sm, direct ? ATTN8D_SMEM_BYTES : ATTN8_SMEM_BYTES,
           p->num_splits > 1 ? " + attn_splitkv_combine_kernel" : "");
}

void kv_launch(const KvRowArgs *a, const KvPlan *p, cudaStream_t s) {
  if (attn_fp8_splitkv_launch(&a->f8, p->num_splits, p->workspace, s) != 0) exit(GTL_EXIT_RUNTIME);
}

void kv_plan_free(KvPlan *p) {
  if (p->workspace) GTL_CUDA(cudaFree(p->workspace));
  p->workspace = NULL;
}

int main(int argc, char **argv) {
  return kv_main(argc, argv, "optimized",
                 "split-KV GQA flash-decoding on FP8 E4M3 K/V + bf16 scale per (token, KV head), "
                 "converted to fp16 in registers (mixed pages: widened to bf16 in shared memory); "
                 "scales on score columns and p", 1);
}
