// ch20 autotuning — baseline: every kernel at its hand-picked configuration.
//
// What it shows: how fast ch18's GQA split-KV decode attention and ch15's persistent grouped
// GEMM run over a sweep of shapes when each keeps the configuration its author chose by
// reasoning: ch18's split count from a wave model (attn_splitkv_num_splits: one wave of
// equal CTAs, plus one tile of fill), ch15's m-tile height from the mean expert load and a
// grid that fills every SM (moe_grouped_plan). Those rules are good, and they are models:
// each point of the sweep is validated against the chapter's CPU double reference and
// timed with exactly that configuration. The JSON line's median_ms is the geometric mean
// of the points' medians.
//
// Build and run:   make ch20 && ./ch20/baseline                (pair: scripts/pair.sh ch20)
// Nsight Compute:  scripts/profile.sh ch20 baseline, or directly
//   ncu --clock-control none --nvtx --nvtx-include "gauntlet@ch20.baseline.timed]"
//       --metrics gpu__time_duration.sum,launch__grid_size,dram__throughput.avg.pct_of_peak_sustained_elapsed
//       ./ch20/baseline --warmup=0 --iters=1
//   launch__grid_size of attn_splitkv_gqa_kernel (splits × 8 × B) and moe_grouped_gemm_kernel
//   (SMs × blocks per SM) per point, against the optimized program's choices.
// Book: AI-assisted optimization — searching kernel configurations (autotuning).
#include "autotune.cuh"

// The hand-picked configuration only: no search, no cache.
int tune_candidates(Tuner *t, const PointOps *ops, const int *hand, const char *key,
                    const int *space, int n_space, int n_cfg, TuneCand *cands, int *from_cache) {
  (void)t, (void)ops, (void)key, (void)space, (void)n_space;
  for (int k = 0; k < n_cfg; k++) cands[0].cfg[k] = hand[k];
  *from_cache = 0;
  return 1;
}

int main(int argc, char **argv) {
  return tune_main(argc, argv, "baseline",
                   "each kernel's hand-picked configuration (ch18: wave-model split count; "
                   "ch15: m-tile by mean expert load, every SM full)");
}
