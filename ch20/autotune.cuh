// autotune.cuh — ch20's driver, shared by baseline.cu and optimized.cu: the sweep, its
// inputs and references, the search loop (validate, time, keep the best, cache by hardware
// key), and the report. The two programs differ only in tune_search: the baseline times
// each kernel's hand-picked configuration, the optimized searches (or reads the cache).
//
// The sweep (default; --size=small is a tiny one for compute-sanitizer, large adds points):
//   attention  ch18's GQA split-KV decode attention, gpt-oss-20b heads (64 q / 8 KV, d 64,
//              sinks), contiguous cache, every sequence S keys:
//              B × S = 1 × 32768, 4 × 4096, 16 × 8192, 64 × 2048   (large: + 64 × 8192),
//              and 16 × 8192 ragged (len_b = S − (379·b mod (S/2+1)), ch18's paged-row lengths)
//   grouped    ch15's MoE expert block (device sort, grouped gate+up with SwiGLU, grouped
//   GEMM       down, combine), uniform routing, qwen3moe (E 128, top-8, D 2048, F 768) and
//              gptoss20b (E 32, top-4, D = F = 2880) at T = 1, 8, 64, 512   (large: + 4096),
//              and each at T = 64 with Zipf-skewed routing (exponent 1.2, ch15's --skew=zipf:1.2)
// The ragged and skewed points are the serving conditions the hand-picked rules do not
// model (ch18 sizes splits for the longest sequence, ch15 sizes tiles for the mean load).
// Each point is validated against ch18's / ch15's CPU double reference (their functions,
// included, not copied) and timed; the JSON line's median_ms is the GEOMETRIC MEAN of the
// points' medians, so baseline / optimized is the geomean speedup over the sweep.
// Per-point roofline (bytes, flops, % of ceiling) is in the table rows; see ch18 and ch15.
#pragma once
#include "../ch15/moe.cuh"        // first: it includes cuBLAS before gauntlet.h
#include "../ch18/attention.cuh"  // attn_cpu, attn_bytes, attn_flops
#include <sys/stat.h>
#include <time.h>

#include "tune_cache.h"
#include "tune_space.cuh"

#define TUNE_MAX_POINTS 24
#define TUNE_MAX_CANDIDATES 192
#define TUNE_SEARCH_WARMUP 1
#define TUNE_SEARCH_ITERS 10
#define TUNE_FINALISTS 4        // re-timed longer before a winner is kept (hand-picked point too)
#define TUNE_FINAL_ITERS 30
#define TUNE_MIN_GAIN 0.01      // a winner must beat the hand-picked point by 1% in the finals
#define TUNE_DEFAULT_CACHE "results/ch20_tune_cache.json"

typedef struct {
  const char *name;
  int64_t E, top_k, D, F;
} GemmShape;
static const GemmShape kQwen3 = {"qwen3moe", 128, 8, 2048, 768};
static const GemmShape kGptoss = {"gptoss20b", 32, 4, 2880, 2880};
static const GemmShape kTiny = {"tiny", 8, 2, 264, 136};  // off the tile grid (memcheck)

typedef struct {
  int is_attn;
  int B, S;              // attention
  const GemmShape *g;    // grouped GEMM
  int T;
  int uneven;            // attention: ragged lengths; GEMM: Zipf-skewed routing (1.2)
} SweepPoint;

// One candidate configuration and what the search learned of it: attention cfg = {splits,
// stages, fused}; GEMM cfg = {bm, grid_up, grid_down, bn_up, stages_up, bn_down,
// stages_down, pdl, fused} (tune_cfg_names).
typedef struct {
  int cfg[TUNE_MAX_CFG];
  int ok;            // passed validation (or --no-verify)
  GtlErr err;
  double search_ms;  // median during the search (NaN: not timed)
} TuneCand;

typedef struct {
  GtlCtx *ctx;
  const char *variant;
  const char *cache_path;
  int tuning;          // 1: the optimized program (searches, reads and writes the cache)
  int retune;          // --retune: search even on a hit, then overwrite the entry
  int inject;          // --inject-fault: candidate 1 of each search skips its launch
  int variants;        // 0 (--no-variants): the chapters' own kernels only
  int skip_run;        // set while that candidate is validated: the points' run returns early
  TuneCache *cache;
  int cache_dirty, hits, misses, tried, failed;
  double search_s;     // wall seconds spent searching (validation + timing of candidates)
} Tuner;

// What the search needs of a sweep point (tune_points.cuh): make a configuration current,
// run one step with it, validate it.
typedef struct {
  void (*set)(void *pt, const int *cfg);            // make cfg current (host calls only)
  void (*run)(void *pt, cudaStream_t s);            // one step with the current cfg
  void (*validate)(void *pt, GtlErr *err);          // poison, run, compare to the reference
  void *pt;
  const char *kernel;                               // "attn" / "gemm"
  // Optional further rounds of the search (NULL: none): given round `round`'s winner
  // (round 1 is the list from tune_candidates), write up to max further candidates' cfg to
  // out and return their count (0: no more rounds). The GEMM's two launches are
  // independent, so it searches the gate+up options first, then the down ones (the sum of
  // the two spaces, not their product), then programmatic dependent launch between them.
  int (*refine)(void *pt, int round, const int *best, TuneCand *out, int max);
  // Whether cfg is in the point's whole space (both rounds): a cached entry is used only
  // then. NULL: the first round's list is the whole space.
  int (*allowed)(void *pt, const int *cfg);
} PointOps;

/** The variant's choice of candidates (baseline.cu, optimized.cu): fill the cfg of
 *  cands[0..n) from the hand-picked configuration `hand` or from `space` (n_space
 *  configurations of n_cfg ints, hand-picked first) or the cache entry under `key`; set
 *  *from_cache; count the hit or miss in t; return n. */
int tune_candidates(Tuner *t, const PointOps *ops, const int *hand, const char *key,
                    const int *space, int n_space, int n_cfg, TuneCand *cands, int *from_cache);

static double tune_now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec + ts.tv_nsec * 1e-9;
}

// Time the current configuration with the search's short settings (at most `iters`
// iterations), under NVTX names ch20.search.* so that a profile of ch20.<variant>.timed
// sees only the final timings.
static double tune_time_short(Tuner *t, const PointOps *ops, int iters) {
  GtlCtx *ctx = t->ctx;
  const int w = ctx->args.warmup, it = ctx->args.iters;
  ctx->args.warmup = TUNE_SEARCH_WARMUP;
  ctx->args.iters = it < iters ? it : iters;
  gtl_nvtx_init("ch20", "search");
  GtlStats st;
  gtl_bench(ctx, ops->run, ops->pt, &st);
  gtl_nvtx_init("ch20", t->variant);
  ctx->args.warmup = w, ctx->args.iters = it;
  return st.median;
}

static void tune_cfg_str(const char *kernel, const int *cfg, char *out, size_t n) {
  int k = 0;
  const char *const *names = tune_cfg_names(kernel, &k);
  size_t used = 0;
  out[0] = 0;
  for (int i = 0; i < k && used < n; i++)
    used += snprintf(out + used, n - used, "%s%s=%d", i ? " " : "", names[i], cfg[i]);
}

// Store a searched winner under key (the optimized program, on a miss).
static void tune_remember(Tuner *t, const char *key, const char *kernel, const int *cfg, int n_cfg,
                          double ms);

// The search loop every kernel generator feeds: validate each candidate (a wrong one is
// discarded and reported, never timed), time the survivors, keep the fastest, cache it.
// A cached configuration that fails validation is reported and the point searched afresh.
// Returns the index of the winner in cands, or -1 when none passed.
static int tune_point(Tuner *t, const PointOps *ops, const int *hand, const int *space,
                      int n_space, int n_cfg, const char *key, TuneCand *cands, int *n_out,
                      int *from_cache) {
  const double t0 = tune_now();
  const int retune = t->retune;
  int n = tune_candidates(t, ops, hand, key, space, n_space, n_cfg, cands, from_cache);
  int best = -1, round = 1;
  for (int i = 0;; i++) {
    if (i == n) {  // end of a round: the point's next round, if it has one and we search
      if (!t->tuning || *from_cache || !ops->refine || best < 0) break;
      n += ops->refine(ops->pt, round++, cands[best].cfg, cands + n, TUNE_MAX_CANDIDATES - n);
      if (i == n) break;
    }
    TuneCand *c = &cands[i];
    ops->set(ops->pt, c->cfg);
    c->ok = 1, c->search_ms = NAN;
    if (t->ctx->args.verify) {
      gtl_phase_push(GTL_PHASE_VALIDATE);
      t->skip_run = t->inject && i == 1;  // a "generated kernel" that never writes its output
      ops->validate(ops->pt, &c->err);
      t->skip_run = 0;
      gtl_phase_pop();
      c->ok = c->err.pass;
    }
    t->tried++;
    if (!c->ok) {
      char s[192];
      tune_cfg_str(ops->kernel, c->cfg, s, sizeof s);
      fprintf(stderr, "ch20: candidate %s %s FAILED validation (rel_l2 %.3g, %zu bad): discarded\n",
              ops->kernel, s, c->err.rel_l2, c->err.n_bad);
      t->failed++;
      if (*from_cache && i == 0) {  // the cached winner is wrong here: search again
        fprintf(stderr, "ch20: cached entry %s failed validation: searching\n", key);
        t->hits--, t->retune = 1;
        n = tune_candidates(t, ops, hand, key, space, n_space, n_cfg, cands, from_cache);
        t->retune = retune;
        i = -1, best = -1, round = 1;
      }
      continue;
    }
    const int timed = n > 1 || (t->tuning && !*from_cache);
    if (timed) c->search_ms = tune_time_short(t, ops, TUNE_SEARCH_ITERS);
    if (best < 0 || (timed && c->search_ms < cands[best].search_ms)) best = i;
  }
  // Finals: the fastest few of a search and the hand-picked point, timed again three times
  // longer. The minimum of many 10-iteration medians is biased low (the luckiest candidate
  // wins); a longer second look decides between the ones that are really close.
  if (t->tuning && !*from_cache && best >= 0 && n > TUNE_FINALISTS) {
    int fin[TUNE_FINALISTS + 1], nf = 0;
    if (cands[0].ok) fin[nf++] = 0;
    for (int r = 0; r < TUNE_FINALISTS; r++) {  // the r-th fastest not yet picked
      int pick = -1;
      for (int i = 1; i < n; i++) {
        int taken = 0;
        for (int f = 0; f < nf; f++) taken |= fin[f] == i;
        if (!taken && cands[i].ok && !(cands[i].search_ms >= (pick < 0 ? INFINITY : cands[pick].search_ms)))
          pick = i;
      }
      if (pick >= 0) fin[nf++] = pick;
    }
    best = -1;
    for (int f = 0; f < nf; f++) {
      TuneCand *c = &cands[fin[f]];
      ops->set(ops->pt, c->cfg);
      c->search_ms = tune_time_short(t, ops, TUNE_FINAL_ITERS);
      if (best < 0 || c->search_ms < cands[best].search_ms) best = fin[f];
    }
    // Within 1% of the hand-picked point is noise, not a win (clocks drift more than that
    // between runs at the compute-heavier points): keep the hand-picked configuration.
    if (best != 0 && cands[0].ok && !(cands[best].search_ms < cands[0].search_ms * (1.0 - TUNE_MIN_GAIN)))
      best = 0;
  }
  if (!*from_cache) t->search_s += tune_now() - t0;
  if (t->tuning && !*from_cache && best >= 0)
    tune_remember(t, key, ops->kernel, cands[best].cfg, n_cfg, cands[best].search_ms);
  *n_out = n;
  return best;
}

static void tune_remember(Tuner *t, const char *key, const char *kernel, const int *cfg, int n_cfg,
                          double ms) {
  TuneEntry e;
  memset(&e, 0, sizeof e);
  snprintf(e.key, sizeof e.key, "%s", key);
  snprintf(e.kernel, sizeof e.kernel, "%s", kernel);
  for (int i = 0; i < n_cfg; i++) e.cfg[i] = cfg[i];
  e.n_cfg = n_cfg, e.us = ms * 1e3;
  if (tune_cache_put(t->cache, &e)) fprintf(stderr, "ch20: tune cache full, %s not kept\n", key);
  else t->cache_dirty = 1;
}

#include "tune_points.cuh"  // the two kinds of sweep point: attention and grouped GEMM

// Print the JSON line of r with "cache" added (hit / miss / null); exit code as
// gtl_report_finish: 0 PASS/UNVERIFIED, 1 FAIL.
static int tune_report_finish(const GtlCtx *ctx, const GtlResult *r, const char *cache) {
  char *buf = NULL;
  size_t len = 0;
  FILE *m = open_memstream(&buf, &len);
  if (!m) return gtl_report_finish(ctx, r);
  gtl_report_json(m, ctx, r);
  fclose(m);
  char *end = strrchr(buf, '}');
  if (r->validated && !r->err.pass) gtl_err_print(stderr, &r->err, "FAILED");
  if (!end) fputs(buf, stdout);
  else printf("%.*s,\"cache\":%s%s", (int)(end - buf), buf, cache, end);
  fflush(stdout);
  free(buf);
  return (r->validated && !r->err.pass) ? 1 : 0;
}

static int tune_main(int argc, char **argv, const char *variant, const char *strategy) {
  const char *cache_path = NULL;
  int retune = 0, inject = 0, no_variants = 0;
  GtlOpt opts[] = {{"cache", GTL_OPT_STR, &cache_path, "tuning cache file (default " TUNE_DEFAULT_CACHE ", written atomically; optimized only)"},
                   {"retune", GTL_OPT_FLAG, &retune, "search even where the cache has an entry, and replace it (optimized only)"},
                   {"inject-fault", GTL_OPT_FLAG, &inject, "the second candidate of each search skips its launch, to show it fail validation and be discarded (optimized only)"},
                   {"no-variants", GTL_OPT_FLAG, &no_variants, "search the launch parameters with the chapters' own kernels only, no kernel variants (optimized only)"}};
  GtlCtx ctx;
  gtl_parse(&ctx, "ch20", variant, argc, argv, opts, 4, 5, 50, GTL_L2_COLD);
  if (cache_path && (!*cache_path || strlen(cache_path) > 1000))
    gtl_usage_fail(&ctx, "--cache needs a path of 1..1000 characters");
  if (!cache_path) cache_path = TUNE_DEFAULT_CACHE;
  gtl_open(&ctx);
  gtl_require_cc(&ctx, 8, 0, "bf16 mma.sync and cp.async");
  const double t_start = tune_now();

  SweepPoint pts[TUNE_MAX_POINTS];
  int np = 0;
  if (ctx.args.size == GTL_SIZE_SMALL) {
    pts[np++] = SweepPoint{1, 1, 300, NULL, 0, 0};
    pts[np++] = SweepPoint{1, 3, 1000, NULL, 0, 1};
    pts[np++] = SweepPoint{0, 0, 0, &kTiny, 1, 0};
    pts[np++] = SweepPoint{0, 0, 0, &kTiny, 37, 1};
  } else {
    const int ab[4][2] = {{1, 32768}, {4, 4096}, {16, 8192}, {64, 2048}};
    for (int i = 0; i < 4; i++) pts[np++] = SweepPoint{1, ab[i][0], ab[i][1], NULL, 0, 0};
    if (ctx.args.size == GTL_SIZE_LARGE) pts[np++] = SweepPoint{1, 64, 8192, NULL, 0, 0};
    pts[np++] = SweepPoint{1, 16, 8192, NULL, 0, 1};  // a ragged batch, as serving sees it
    const int Ts[5] = {1, 8, 64, 512, 4096};
    const int nT = ctx.args.size == GTL_SIZE_LARGE ? 5 : 4;
    for (int s = 0; s < 2; s++) {
      for (int i = 0; i < nT; i++) pts[np++] = SweepPoint{0, 0, 0, s ? &kGptoss : &kQwen3, Ts[i], 0};
      pts[np++] = SweepPoint{0, 0, 0, s ? &kGptoss : &kQwen3, 64, 1};  // skewed routing
    }
  }
  const int tuning = !strcmp(variant, "optimized");
  static TuneCache cache;
  Tuner t;
  memset(&t, 0, sizeof t);
  t.ctx = &ctx, t.variant = variant, t.cache_path = cache_path, t.retune = retune, t.cache = &cache;
  t.tuning = tuning, t.inject = inject, t.variants = !no_variants;
  int loaded = 0;
  if (tuning) {
    loaded = tune_cache_load(&cache, cache_path, stderr) == 0;
    if (cache.skipped) fprintf(stderr, "ch20: %d malformed cache entries ignored\n", cache.skipped);
  }

  char workload[160], notes[1536];
  int na = 0;
  for (int i = 0; i < np; i++) na += pts[i].is_attn;
  snprintf(workload, sizeof workload, "sweep_attn%d_gemm%d%s", na, np - na,
           ctx.args.size == GTL_SIZE_SMALL ? "_small" : ctx.args.size == GTL_SIZE_LARGE ? "_large" : "");
  snprintf(notes, sizeof notes,
           "strategy: %s\n"
           "space: %s\n"
           "sweep: %d attention points (ch18 split-KV, gpt-oss heads 64q/8kv d64, sinks) and %d "
           "grouped-GEMM points (ch15 MoE block; uniform routing, Zipf 1.2 at T=64); each validated against the "
           "chapters' CPU double reference\n"
           "metric: median_ms = geometric mean of the points' medians (baseline / optimized = geomean speedup)\n"
           "cache: %s (%s, %d entries; key = kernel | GPU name | SM count | CUDA runtime %d | shape bucket)",
           strategy,
           !tuning ? "none (hand-picked)"
           : t.variants ? "launch parameters (splits; bm, grids) x kernel variants (attention: 2/3/4/6/8 stages; "
                          "GEMM per launch: 16/32/64/128 columns = 1/2/4/8 warps, ring depth; at bm 16 programmatic "
                          "dependent launch of down); the variant is part of each cached configuration"
                        : "launch parameters only, the chapters' own kernels (--no-variants)",
           na, np - na, cache_path,
           !tuning ? "not used by the baseline" : loaded ? (cache.n ? "read" : "empty or absent") : "ignored",
           cache.n, ctx.dev.runtime_version);
  gtl_report_header(&ctx, workload, notes);

  GtlResult rows[TUNE_MAX_POINTS], head;
  gtl_result_init(&head, &ctx, "bf16", workload);
  head.variant = variant;
  head.ref = "cpu_double";
  head.validated = ctx.args.verify;
  head.err.pass = 1, head.err.rel_l2 = 0, head.err.max_abs = 0;
  double lmed = 0, lp95 = 0, lp99 = 0, lmin = 0, lmean = 0, lpct = 0, la = 0, lg = 0;
  int rc = 0, done = 0, n_pct = 0;
  for (int i = 0; i < np && rc == 0; i++, done++) {
    GtlResult *r = &rows[i];
    rc = pts[i].is_attn ? tune_attn_point(&t, pts[i].B, pts[i].S, pts[i].uneven, r)
                        : tune_gemm_point(&t, pts[i].g, pts[i].T, pts[i].uneven, r);
    if (r->validated) {
      head.err.pass &= r->err.pass;
      if (!(r->err.rel_l2 <= head.err.rel_l2)) head.err.rel_l2 = r->err.rel_l2, head.err.tol_rel_l2 = r->err.tol_rel_l2;
      if (!(r->err.max_abs <= head.err.max_abs)) head.err.max_abs = r->err.max_abs;
      head.err.n_bad += r->err.n_bad, head.err.n_nan += r->err.n_nan;
    }
    if (rc) break;
    lmed += log(r->st.median), lp95 += log(r->st.p95), lp99 += log(r->st.p99);
    lmin += log(r->st.min), lmean += log(r->st.mean);
    (pts[i].is_attn ? la : lg) += log(r->st.median);
    const double pct = gtl_result_pct(r, &ctx.ceil);
    if (pct > 0) lpct += log(pct), n_pct++;
  }
  if (rc == 0) {
    head.st = rows[0].st;
    head.st.median = exp(lmed / np), head.st.p95 = exp(lp95 / np), head.st.p99 = exp(lp99 / np);
    head.st.min = exp(lmin / np), head.st.mean = exp(lmean / np), head.st.stddev = NAN;
    head.st.max = NAN;
    gtl_result_extra(&head, "points", np);
    gtl_result_extra(&head, "us_attn_geomean", exp(la / na) * 1e3);
    gtl_result_extra(&head, "us_gemm_geomean", exp(lg / (np - na)) * 1e3);
    if (n_pct) gtl_result_extra(&head, "pct_of_ceiling_geomean", exp(lpct / n_pct));
    if (tuning) {
      gtl_result_extra(&head, "cache_hits", t.hits);
      gtl_result_extra(&head, "cache_misses", t.misses);
      gtl_result_extra(&head, "candidates_tried", t.tried);
      gtl_result_extra(&head, "candidates_failed", t.failed);
      gtl_result_extra(&head, "search_s", t.search_s);
      gtl_result_extra(&head, "kernel_variants", t.variants);
    }
    gtl_result_extra(&head, "total_s", tune_now() - t_start);
  }
  if (tuning && t.cache_dirty) {
    char err[512] = "";
    if (!strcmp(cache_path, TUNE_DEFAULT_CACHE)) mkdir("results", 0777);  // the default's folder
    if (tune_cache_save(&cache, cache_path, err, sizeof err))
      fprintf(stderr, "ch20: tuning cache not written: %s\n", err);
    else if (!ctx.args.json)
      printf("# tuning cache: %d entries written to %s (atomically: temporary file + rename)\n", cache.n, cache_path);
  }
  if (!ctx.args.json) {
    printf("# geomean over %d points: %.4f ms", rc ? done : np, head.st.median);
    if (tuning) printf("; search %.1f s, %d candidates validated, %d failed; cache %d hits, %d misses",
                       t.search_s, t.tried, t.failed, t.hits, t.misses);
    printf("; total %.1f s\n", tune_now() - t_start);
  }
  const char *cache_json = !tuning ? "null" : t.misses ? "\"miss\"" : "\"hit\"";
  if (rc) head.st.n = 0;
  rc = tune_report_finish(&ctx, &head, cache_json);
  gtl_end(&ctx);
  return rc;
}
