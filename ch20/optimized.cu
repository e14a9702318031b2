// ch20 autotuning — optimized: search the configurations, validate each, cache the winner.
//
// The one change: where the baseline takes each kernel's hand-picked configuration, this
// program measures. For every sweep point it builds the kernel's configuration space
// (ch20/tune_space.cuh: ch18's split count and pipeline depth; ch15's m-tile height, the
// persistent grids of its two launches and each launch's kernel variant — column tile,
// warps, pipeline depth — instantiated here from the chapters' templates; and two mechanisms,
// ch20/fused.cuh: the attention combine and the MoE sort folded into the next kernel), validates every
// candidate against the CPU double reference (a wrong one is reported and discarded, never
// timed), times the survivors briefly under their own NVTX names (ch20.search.*), keeps the
// fastest, and times it like the baseline. Winners go to a JSON cache (--cache=PATH,
// default results/ch20_tune_cache.json) keyed by GPU name, SM count, CUDA runtime version
// and shape bucket (ch20/tune_cache.h); the next run reads it, skips the search, and says so
// ("cache hit: search skipped", "cache":"hit" in the JSON line). --retune searches anyway;
// --inject-fault breaks one candidate per search, to show it discarded.
//
// Build and run:   make ch20 && ./ch20/optimized               (pair: scripts/pair.sh ch20)
//                  ./ch20/optimized --cache=/tmp/c.json ; ./ch20/optimized --cache=/tmp/c.json
// Nsight Compute:  scripts/profile.sh ch20 optimized (the final timings only), or directly
//   ncu --clock-control none --nvtx --nvtx-include "gauntlet@ch20.optimized.timed]"
//       --metrics gpu__time_duration.sum,launch__grid_size,dram__throughput.avg.pct_of_peak_sustained_elapsed
//       ./ch20/optimized --warmup=0 --iters=1
// Book: AI-assisted optimization — searching kernel configurations (autotuning).
#include "autotune.cuh"

// On a cache hit whose configuration is still in today's space (kernel variant included):
// that one candidate. Otherwise (miss, --retune, or a stale entry): the first round of the
// space, hand-picked point first (tune_point runs the point's second round, if any).
int tune_candidates(Tuner *t, const PointOps *ops, const int *hand, const char *key,
                    const int *space, int n_space, int n_cfg, TuneCand *cands, int *from_cache) {
  (void)hand;
  const TuneEntry *e = t->retune ? NULL : tune_cache_find(t->cache, key);
  int in_space = 0;
  if (e && e->n_cfg == n_cfg && ops->allowed) in_space = ops->allowed(ops->pt, e->cfg);
  for (int i = 0; e && !ops->allowed && !in_space && i < n_space; i++) {
    int same = e->n_cfg == n_cfg;
    for (int k = 0; same && k < n_cfg; k++) same = e->cfg[k] == space[i * n_cfg + k];
    in_space = same;
  }
  if (in_space) {
    for (int k = 0; k < n_cfg; k++) cands[0].cfg[k] = e->cfg[k];
    *from_cache = 1;
    t->hits++;
    return 1;
  }
  if (e) fprintf(stderr, "ch20: cached entry %s is not in this build's space: searching\n", key);
  const int n = n_space < TUNE_MAX_CANDIDATES ? n_space : TUNE_MAX_CANDIDATES;
  for (int i = 0; i < n; i++)
    for (int k = 0; k < n_cfg; k++) cands[i].cfg[k] = space[i * n_cfg + k];
  *from_cache = 0;
  t->misses++;
  return n;
}

int main(int argc, char **argv) {
  return tune_main(argc, argv, "optimized",
                   "autotuned: every candidate validated, then timed; winner cached by GPU, "
                   "SM count, CUDA version and shape bucket");
}
