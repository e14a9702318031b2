// tune_points.cuh — ch20's two kinds of sweep point, included by autotune.cuh: each sets up
// seeded inputs, computes the chapter's CPU double reference (ch18's attn_cpu, ch15's
// moe_block_cpu), builds its configuration space with the hand-picked point first, runs
// tune_point, then times the winner with the program's settings and reports one row.
#pragma once

// ---- attention (ch18) -------------------------------------------------------------------------

typedef struct {
  GtlCtx *ctx;
  const int *skip;           // Tuner.skip_run: --inject-fault's broken candidate
  AttnDecodeArgs a;
  int splits, stages, fused; // fused: the combine inside the split kernel (ch20/fused.cuh)
  float *ws;                 // split partials, sized for the largest candidate
  unsigned *counters;        // [B][H_kv] tickets of the fused kernel, zero between launches
  const double *ref;         // [B][H][64]
  GtlGuarded *g_out;
} AttnPoint;

static void attn_pt_set(void *p, const int *cfg) {
  AttnPoint *q = (AttnPoint *)p;
  q->splits = cfg[0], q->stages = cfg[1], q->fused = cfg[2];
  if (q->fused) attn_tune_ctas_per_sm_fused(q->stages);  // the variant's shared-memory opt-in
  else attn_tune_ctas_per_sm(q->stages);
}
static void attn_pt_run(void *p, cudaStream_t s) {
  AttnPoint *q = (AttnPoint *)p;
  if (*q->skip) return;
  float *ws = q->splits > 1 ? q->ws : NULL;
  const int rc = q->fused ? attn_tune_launch_fused(&q->a, q->splits, q->stages, ws, q->counters, s)
                          : attn_tune_launch(&q->a, q->splits, q->stages, ws, s);
  if (rc) exit(GTL_EXIT_RUNTIME);
}
static void attn_pt_validate(void *p, GtlErr *err) {
  AttnPoint *q = (AttnPoint *)p;
  const size_t n = (size_t)q->a.B * q->a.H * ATTN_HEAD_DIM;
  gtl_poison(q->a.out, n * 2, q->ctx->stream);
  attn_pt_run(p, q->ctx->stream);
  GTL_CUDA(cudaStreamSynchronize(q->ctx->stream));
  uint16_t *raw = (uint16_t *)malloc(n * 2);
  float *out = (float *)malloc(n * 4);
  GTL_CUDA(cudaMemcpy(raw, q->a.out, n * 2, cudaMemcpyDeviceToHost));
  gtl_bf16_to_f32_array(raw, out, n);
  gtl_compare(out, q->ref, n, gtl_tol_for(GTL_BF16), err);
  const size_t bad_guard = gtl_guarded_check(q->g_out);
  if (bad_guard) {
    fprintf(stderr, "ch20: %zu guard bytes around the attention output were overwritten\n", bad_guard);
    err->pass = 0;
  }
  free(raw);
  free(out);
}

// Print the point's configuration line, time the winner, fill r. Shared by both kinds.
static int tune_finish_point(Tuner *t, const PointOps *ops, const TuneCand *cands, int n, int best,
                             int from_cache, const int *hand, const char *label, GtlResult *r) {
  GtlCtx *ctx = t->ctx;
  r->variant = label;
  r->ref = "cpu_double";
  if (best < 0) {  // nothing passed: report the hand-picked point's error
    r->validated = 1, r->err = cands[0].err;
    gtl_report_row(ctx, r);
    return GTL_EXIT_FAIL;
  }
  r->validated = ctx->args.verify, r->err = cands[best].err;
  ops->set(ops->pt, cands[best].cfg);
  gtl_bench(ctx, ops->run, ops->pt, &r->st);
  gtl_report_row(ctx, r);
  if (!ctx->args.json) {
    char w[192], h[192];
    tune_cfg_str(ops->kernel, cands[best].cfg, w, sizeof w);
    tune_cfg_str(ops->kernel, hand, h, sizeof h);
    if (t->tuning) printf("#   %s: %s (hand-picked %s)", label, w, h);
    else printf("#   %s: %s (hand-picked)", label, w);
    if (t->tuning) {
      if (from_cache) printf("; cache hit: search skipped\n");
      else {
        int failed = 0;
        for (int i = 0; i < n; i++) failed += !cands[i].ok;
        printf("; %d candidates, %d failed; cache miss; search: hand-picked %.4f ms, winner %.4f ms\n", n,
               failed, cands[0].search_ms, cands[best].search_ms);
      }
    } else {
      printf("\n");
    }
  }
  return 0;
}

static int tune_attn_point(Tuner *t, int B, int S, int ragged, GtlResult *r) {
  GtlCtx *ctx = t->ctx;
  const int H = ATTN_H, Hk = 8, D = ATTN_HEAD_DIM;
  const uint64_t seed = ctx->args.seed ^ ((uint64_t)B << 32 | (uint64_t)S) ^ ((uint64_t)ragged << 60);
  gtl_phase_push(GTL_PHASE_SETUP);
  const size_t n_q = (size_t)B * H * D, n_kv = (size_t)B * Hk * S * D;
  __nv_bfloat16 *d_q = (__nv_bfloat16 *)gtl_malloc(n_q * 2, "q [B][H][64] bf16");
  __nv_bfloat16 *d_k = (__nv_bfloat16 *)gtl_malloc(n_kv * 2, "K cache [B][H_kv][S][64] bf16");
  __nv_bfloat16 *d_v = (__nv_bfloat16 *)gtl_malloc(n_kv * 2, "V cache [B][H_kv][S][64] bf16");
  int32_t *d_ident = (int32_t *)gtl_malloc((size_t)B * 4, "identity table");
  int32_t *d_lens = (int32_t *)gtl_malloc((size_t)B * 4, "seq_lens");
  float *d_sinks = (float *)gtl_malloc(H * 4, "sinks [H] fp32");
  GtlGuarded g_out;
  __nv_bfloat16 *d_out = (__nv_bfloat16 *)gtl_guarded_alloc(&g_out, n_q * 2, "out [B][H][64] bf16");
  gtl_fill_uniform(d_q, GTL_BF16, n_q, seed, -2.0f, 2.0f, ctx->stream);
  gtl_fill_uniform(d_k, GTL_BF16, n_kv, seed + 1, -2.0f, 2.0f, ctx->stream);
  gtl_fill_uniform(d_v, GTL_BF16, n_kv, seed + 2, -1.0f, 1.0f, ctx->stream);
  int32_t *h_ident = (int32_t *)malloc(B * 4), *h_lens = (int32_t *)malloc(B * 4);
  float h_sinks[ATTN_H];
  for (int b = 0; b < B; b++) h_ident[b] = b, h_lens[b] = ragged ? S - (int)((379ll * b) % (S / 2 + 1)) : S;
  for (int h = 0; h < H; h++) h_sinks[h] = gtl_round_bf16(gtl_uniform(seed + 3, (uint64_t)h, 0.0f, 12.0f));
  GTL_CUDA(cudaMemcpy(d_ident, h_ident, B * 4, cudaMemcpyHostToDevice));
  GTL_CUDA(cudaMemcpy(d_lens, h_lens, B * 4, cudaMemcpyHostToDevice));
  GTL_CUDA(cudaMemcpy(d_sinks, h_sinks, H * 4, cudaMemcpyHostToDevice));
  GTL_CUDA(cudaStreamSynchronize(ctx->stream));
  AttnPoint p;
  memset(&p, 0, sizeof p);
  p.ctx = ctx, p.g_out = &g_out, p.skip = &t->skip_run;
  AttnDecodeArgs *a = &p.a;
  int cs = 0;
  while ((1ll << cs) < S) cs++;
  a->q = d_q, a->out = d_out, a->sinks = d_sinks, a->seq_lens = d_lens;
  a->B = B, a->H = H, a->H_kv = Hk, a->window = 0, a->scale = 1.0f / sqrtf((float)D);
  a->kv.k = d_k, a->kv.v = d_v, a->kv.block_table = d_ident, a->kv.table_stride = 1;
  a->kv.page_shift = cs, a->kv.page_stride = (int64_t)Hk * S * D;
  a->kv.head_stride = (int64_t)S * D, a->kv.token_stride = D;
  gtl_phase_pop();

  double *ref = NULL;
  if (ctx->args.verify) {
    gtl_phase_push(GTL_PHASE_REFERENCE);
    uint16_t *h_q = (uint16_t *)malloc(n_q * 2), *h_k = (uint16_t *)malloc(n_kv * 2),
             *h_v = (uint16_t *)malloc(n_kv * 2);
    ref = (double *)malloc(sizeof(double) * n_q);
    if (!h_q || !h_k || !h_v || !ref) {
      fprintf(stderr, "ch20: host out of memory for the attention reference (%.1f MB)\n", n_kv * 4 / 1e6);
      exit(GTL_EXIT_RUNTIME);
    }
    GTL_CUDA(cudaMemcpy(h_q, d_q, n_q * 2, cudaMemcpyDeviceToHost));
    GTL_CUDA(cudaMemcpy(h_k, d_k, n_kv * 2, cudaMemcpyDeviceToHost));
    GTL_CUDA(cudaMemcpy(h_v, d_v, n_kv * 2, cudaMemcpyDeviceToHost));
    attn_cpu(h_q, h_k, h_v, h_lens, h_sinks, B, H, Hk, S, 0, ref);
    free(h_q), free(h_k), free(h_v);
    gtl_phase_pop();
  }
  p.ref = ref;

  // Space: ch18's choice (wave-model split count, its own 3-stage kernel) first; then for
  // each pipeline depth the wave model's split count at that depth's occupancy and the
  // ladder of split counts; with the variants, each split count > 1 also with the combine
  // folded into the split kernel (fused = 1; one launch per step).
  const int hand[3] = {attn_splitkv_num_splits(B, Hk, S, ctx->dev.sms * attn_splitkv_ctas_per_sm()), ATTN_STAGES, 0};
  static int space[TUNE_ATTN_N_STAGES * TUNE_ATTN_MAX_CANDIDATES * 2 * 3];
  int n_space = 0, max_splits = 1;
  for (int d = 0; d < (t->variants ? TUNE_ATTN_N_STAGES : 1); d++) {
    const int st = attn_tune_stages[d];
    const int h = d == 0 ? hand[0] : attn_splitkv_num_splits(B, Hk, S, ctx->dev.sms * attn_tune_ctas_per_sm(st));
    int sp[TUNE_ATTN_MAX_CANDIDATES];
    const int ns = attn_tune_candidates(h, S, sp);
    for (int i = 0; i < ns; i++)
      for (int f = 0; f < (t->variants && sp[i] > 1 ? 2 : 1) && n_space < TUNE_MAX_CANDIDATES; f++) {
        space[3 * n_space] = sp[i], space[3 * n_space + 1] = st, space[3 * n_space + 2] = f, n_space++;
        max_splits = sp[i] > max_splits ? sp[i] : max_splits;
      }
  }
  const size_t n_ws = attn_splitkv_workspace_floats(B, H, max_splits);
  p.ws = n_ws ? (float *)gtl_malloc(n_ws * 4, "split-KV partials (fp32), largest candidate") : NULL;
  p.counters = (unsigned *)gtl_malloc((size_t)B * Hk * 4, "fused-combine tickets [B][H_kv]");
  GTL_CUDA(cudaMemset(p.counters, 0, (size_t)B * Hk * 4));

  char bucket[96], key[256], label[32];
  tune_bucket_attn(bucket, sizeof bucket, B, S, Hk, 0);
  if (ragged) strcat(bucket, "_ragged");
  if (tune_key(key, sizeof key, "attn", ctx->dev.name, ctx->dev.sms, ctx->dev.runtime_version, bucket))
    snprintf(key, sizeof key, "attn|unnamed|%s", bucket);
  snprintf(label, sizeof label, "attn %dx%d%s", B, S, ragged ? " ragged" : "");
  PointOps ops = {attn_pt_set, attn_pt_run, attn_pt_validate, &p, "attn", NULL, NULL};
  static TuneCand cands[TUNE_MAX_CANDIDATES];
  int n = 0, from_cache = 0;
  const int best = tune_point(t, &ops, hand, space, n_space, 3, key, cands, &n, &from_cache);

  char workload[96];
  snprintf(workload, sizeof workload, "attn_B%d_S%d_H%d_Hkv%d_d64%s", B, S, H, Hk, ragged ? "_ragged" : "");
  gtl_result_init(r, ctx, "bf16", workload);
  r->bytes = attn_bytes(h_lens, B, H, Hk, 0);
  r->flops = attn_flops(h_lens, B, H, 0);
  r->bound = GTL_BOUND_READ;
  static char labels[TUNE_MAX_POINTS][32];
  static int n_labels = 0;
  char *lab = labels[n_labels++ % TUNE_MAX_POINTS];
  snprintf(lab, 32, "%s", label);
  const int rc = tune_finish_point(t, &ops, cands, n, best, from_cache, hand, lab, r);

  free(ref), free(h_ident), free(h_lens);
  void *bufs[] = {d_q, d_k, d_v, d_ident, d_lens, d_sinks, p.ws, p.counters};
  for (int i = 0; i < 8; i++)
    if (bufs[i]) GTL_CUDA(cudaFree(bufs[i]));
  gtl_guarded_free(&g_out);
  return rc;
}

// ---- grouped GEMM (ch15) ----------------------------------------------------------------------

// One launch's options at one tile height: a kernel variant and a grid.
typedef struct {
  int bn, stages, grid;
} GemmLaunchOpt;
#define TUNE_GEMM_MAX_OPTS (TUNE_GEMM_MAX_VARIANTS * 9)

typedef struct {
  GtlCtx *ctx;
  const int *skip;       // Tuner.skip_run: --inject-fault's broken candidate
  MoeBlock *b;
  GemmTuneCfg cfg;
  MoeGroupedPlan hand;   // ch15's plan: run through ch15's own launchers when cfg equals it
  GtlGuarded *g_out;
  const int64_t *tok;
  int n_ref;
  const double *ref;
  // The space: tile heights bms[0..n_bm), and per height each launch's options.
  int n_bm, bms[TUNE_GEMM_N_BM];
  int n_up[TUNE_GEMM_N_BM], n_down[TUNE_GEMM_N_BM];
  int pdl_ok;            // sm_90+ and kernel variants searched
  int fused_ok;          // kernel variants searched and the routing fits the in-block sort
  GemmLaunchOpt up[TUNE_GEMM_N_BM][TUNE_GEMM_MAX_OPTS], down[TUNE_GEMM_N_BM][TUNE_GEMM_MAX_OPTS];
} GemmPoint;

static void gemm_pt_set(void *p, const int *cfg) {
  GemmPoint *q = (GemmPoint *)p;
  GemmTuneCfg *c = &q->cfg;
  c->bm = cfg[0], c->grid_up = cfg[1], c->grid_down = cfg[2];
  c->bn_up = cfg[3], c->stages_up = cfg[4], c->bn_down = cfg[5], c->stages_down = cfg[6], c->pdl = cfg[7];
  c->fused = cfg[8];
  if (c->fused) {  // shared-memory opt-in
    gemm_tune_selfsort_max_grid(true, c->bn_up, c->stages_up, q->ctx->dev.sms);
    gemm_tune_selfsort_max_grid(false, c->bn_down, c->stages_down, q->ctx->dev.sms);
  } else {
    gemm_tune_max_grid(c->bm, true, c->bn_up, c->stages_up, q->ctx->dev.sms);
    gemm_tune_max_grid(c->bm, false, c->bn_down, c->stages_down, q->ctx->dev.sms);
  }
}
// Whether a point may use programmatic dependent launch: bm 16 (decode, where the chain
// of kernels is most of the time) on sm_90 or newer, with the variants searched.
static int gemm_pdl_ok(const GemmPoint *q, int bm) { return q->pdl_ok && bm == 16; }
// Whether a point may drop the sort kernel (ch20/fused.cuh): bm 16 (every bm-16 variant has
// a self-sorting twin), the variants searched, T·top_k and E within the in-block tables.
static int gemm_fused_ok(const GemmPoint *q, int bm) { return q->fused_ok && bm == 16; }

// Round 1 (down options at the first round's height and gate+up) and round 2 (the winner
// with programmatic dependent launch of down after gate+up, with the sort folded into both
// launches, and with both: up to 3 candidates).
static int gemm_pt_refine(void *p, int round, const int *best, TuneCand *out, int max) {
  const GemmPoint *q = (const GemmPoint *)p;
  int n = 0;
  if (round == 1) {
    int i = 0;
    while (i < q->n_bm && q->bms[i] != best[0]) i++;
    for (int d = 0; i < q->n_bm && d < q->n_down[i] && n < max; d++) {
      const GemmLaunchOpt *o = &q->down[i][d];
      if (o->grid == best[2] && o->bn == best[5] && o->stages == best[6]) continue;  // tried
      int *c = out[n++].cfg;
      for (int k = 0; k < 9; k++) c[k] = best[k];
      c[2] = o->grid, c[5] = o->bn, c[6] = o->stages;
    }
  } else if (round == 2) {
    for (int pdl = 0; pdl < 2; pdl++)
      for (int fused = 0; fused < 2; fused++) {
        if ((pdl == best[7] && fused == best[8]) || n >= max) continue;  // the winner itself
        if ((pdl && !gemm_pdl_ok(q, best[0])) || (fused && !gemm_fused_ok(q, best[0]))) continue;
        for (int k = 0; k < 9; k++) out[n].cfg[k] = best[k];
        out[n].cfg[7] = pdl, out[n].cfg[8] = fused;
        n++;
      }
  }
  return n;
}
// Whether cfg is in the space (a cached entry from an older build may not be).
static int gemm_pt_allowed(void *p, const int *cfg) {
  const GemmPoint *q = (const GemmPoint *)p;
  for (int i = 0; i < q->n_bm; i++) {
    if (q->bms[i] != cfg[0]) continue;
    int u = 0, d = 0;
    for (int k = 0; k < q->n_up[i]; k++)
      u |= q->up[i][k].grid == cfg[1] && q->up[i][k].bn == cfg[3] && q->up[i][k].stages == cfg[4];
    for (int k = 0; k < q->n_down[i]; k++)
      d |= q->down[i][k].grid == cfg[2] && q->down[i][k].bn == cfg[5] && q->down[i][k].stages == cfg[6];
    return u && d && (cfg[7] == 0 || (cfg[7] == 1 && gemm_pdl_ok(q, cfg[0]))) &&
           (cfg[8] == 0 || (cfg[8] == 1 && gemm_fused_ok(q, cfg[0])));
  }
  return 0;
}
static void gemm_pt_run(void *p, cudaStream_t s) {
  const GemmPoint *q = (const GemmPoint *)p;
  if (*q->skip) return;
  MoeBlock *b = q->b;
  const int E = (int)b->E;
  const __nv_bfloat16 *w = b->d_w;
  const GemmTuneCfg *c = &q->cfg;
  const int own = q->hand.bm == 16 ? 6 : 4;
  const int hand = c->bm == q->hand.bm && c->grid_up == q->hand.grid_up && c->grid_down == q->hand.grid_down &&
                   c->bn_up == moe_grouped::BN && c->stages_up == own && c->bn_down == moe_grouped::BN &&
                   c->stages_down == own && !c->pdl && !c->fused;
  if (c->fused) {  // no sort kernel: each launch sorts the routing in-block (ch20/fused.cuh)
    const int P = (int)(b->T * b->top_k);
    gemm_tune_launch_selfsort<true>(c, b->d_x, b->d_topk_idx, P, (int)b->top_k, w, w + b->F * b->D, b->stride,
                                    E, b->F, b->D, b->d_h, b->d_pair_pos, s);
    gemm_tune_launch_selfsort<false>(c, b->d_h, b->d_topk_idx, P, (int)b->top_k, w + 2 * b->F * b->D, nullptr,
                                     b->stride, E, b->D, b->F, b->d_y, nullptr, s);
    moe_combine_dependent_launch(b->d_y, b->d_pair_pos, b->d_topk_w, b->T, (int)b->top_k, b->D, b->d_out, s);
    return;
  }
  moe_dispatch_launch(b->d_topk_idx, b->T, (int)b->top_k, E, c->bm, b->d_offsets, b->d_tile_start,
                      b->d_sorted_token, b->d_pair_pos, s);
  if (hand) {  // exactly ch15's step
    moe_expert_up_launch(&q->hand, b->d_x, b->d_sorted_token, w, w + b->F * b->D, b->stride,
                         b->d_offsets, b->d_tile_start, E, b->D, b->F, b->d_h, s);
    moe_expert_down_launch(&q->hand, b->d_h, w + 2 * b->F * b->D, b->stride, b->d_offsets,
                           b->d_tile_start, E, b->F, b->D, b->d_y, s);
  } else {
    gemm_tune_launch<true>(c, b->d_x, b->d_sorted_token, w, w + b->F * b->D, b->stride, b->d_offsets,
                           b->d_tile_start, E, b->F, b->D, b->d_h, s);
    gemm_tune_launch<false>(c, b->d_h, nullptr, w + 2 * b->F * b->D, nullptr, b->stride, b->d_offsets,
                            b->d_tile_start, E, b->D, b->F, b->d_y, s);
  }
  moe_combine_launch(b->d_y, b->d_pair_pos, b->d_topk_w, b->T, (int)b->top_k, b->D, b->d_out, s);
}
static void gemm_pt_validate(void *p, GtlErr *err) {
  GemmPoint *q = (GemmPoint *)p;
  moe_validate(q->ctx, q->b, q->g_out, gemm_pt_run, p, q->tok, q->n_ref, q->ref, err);
}

static int tune_gemm_point(Tuner *t, const GemmShape *g, int T, int skewed, GtlResult *r) {
  GtlCtx *ctx = t->ctx;
  MoeBlock b;
  memset(&b, 0, sizeof b);
  b.T = T, b.E = g->E, b.top_k = g->top_k, b.D = g->D, b.F = g->F, b.skew = skewed ? 1.2 : 0;
  b.stride = 3 * b.F * b.D;
  const int64_t P = b.T * b.top_k, D = b.D, F = b.F, E = b.E;
  const uint64_t seed = ctx->args.seed ^ ((uint64_t)T << 20 | (uint64_t)E) ^ ((uint64_t)skewed << 60);
  gtl_phase_push(GTL_PHASE_SETUP);
  __nv_bfloat16 *d_x = (__nv_bfloat16 *)gtl_malloc(T * D * 2, "x [T][D] bf16");
  __nv_bfloat16 *d_w = (__nv_bfloat16 *)gtl_malloc(E * b.stride * 2, "expert weights bf16");
  const float ru = sqrtf(3.0f / (float)D), rd = sqrtf(3.0f / (float)F);  // unit-variance outputs
  gtl_fill_uniform(d_x, GTL_BF16, T * D, seed, -1.0f, 1.0f, ctx->stream);
  for (int64_t e = 0; e < E; e++) {
    const uint64_t s = gtl_splitmix64(seed ^ (0xE0000ull + (uint64_t)e));
    gtl_fill_uniform(d_w + e * b.stride, GTL_BF16, 2 * F * D, s, -ru, ru, ctx->stream);
    gtl_fill_uniform(d_w + e * b.stride + 2 * F * D, GTL_BF16, D * F, s ^ 0xD0D0ull, -rd, rd, ctx->stream);
  }
  GTL_CUDA(cudaStreamSynchronize(ctx->stream));
  b.d_x = d_x, b.d_w = d_w;
  b.h_topk_idx = (int32_t *)malloc(P * 4);
  b.h_topk_w = (float *)malloc(P * 4);
  b.h_count = (int32_t *)malloc(E * 4);
  if (!b.h_topk_idx || !b.h_topk_w || !b.h_count) {
    fprintf(stderr, "ch20: host out of memory for the routing\n");
    exit(GTL_EXIT_RUNTIME);
  }
  moe_route(&b, seed);
  int32_t *d_idx = (int32_t *)gtl_malloc(P * 4, "top-k indices [T][top_k] int32");
  float *d_tw = (float *)gtl_malloc(P * 4, "top-k weights [T][top_k] fp32");
  GTL_CUDA(cudaMemcpy(d_idx, b.h_topk_idx, P * 4, cudaMemcpyHostToDevice));
  GTL_CUDA(cudaMemcpy(d_tw, b.h_topk_w, P * 4, cudaMemcpyHostToDevice));
  b.d_topk_idx = d_idx, b.d_topk_w = d_tw;
  GtlGuarded g_out;
  b.d_out = (__nv_bfloat16 *)gtl_guarded_alloc(&g_out, T * D * 2, "out [T][D] bf16");
  b.d_offsets = (int32_t *)gtl_malloc((E + 1) * 4, "expert offsets");
  b.d_tile_start = (int32_t *)gtl_malloc((E + 1) * 4, "tile table");
  b.d_sorted_token = (int32_t *)gtl_malloc(2 * P * 4, "sorted tokens | pair positions");
  b.d_pair_pos = b.d_sorted_token + P;
  b.d_h = (__nv_bfloat16 *)gtl_malloc(P * F * 2, "h [P][F]");
  b.d_y = (__nv_bfloat16 *)gtl_malloc(P * D * 2, "y [P][D]");
  gtl_phase_pop();

  static GemmPoint p;
  memset(&p, 0, sizeof p);
  p.ctx = ctx, p.b = &b, p.g_out = &g_out, p.skip = &t->skip_run;
  int64_t tok[MOE_REF_TOKENS];
  p.tok = tok;
  p.n_ref = moe_ref_tokens(&b, tok);
  double *ref = NULL;
  if (ctx->args.verify) {
    gtl_phase_push(GTL_PHASE_REFERENCE);
    ref = moe_block_cpu(&b, tok, p.n_ref);
    gtl_phase_pop();
  }
  p.ref = ref;

  // Space: ch15's plan first. Tile heights: every one up to the first that holds the
  // largest expert load in one tile (a taller one only multiplies zero rows), and ch15's.
  // Per height, each launch's kernel variants, each with every grid. First round: every
  // height with every gate+up option (down at ch15's choice); second round
  // (gemm_pt_refine): the winner's height and gate+up with every down option.
  p.hand = moe_grouped_plan(T, (int)b.top_k, (int)E, ctx->dev.sms);
  const int own_st = p.hand.bm == 16 ? 6 : 4;
  const int hand[9] = {p.hand.bm, p.hand.grid_up, p.hand.grid_down, moe_grouped::BN, own_st, moe_grouped::BN, own_st, 0, 0};
  p.pdl_ok = t->variants && ctx->dev.cc_major >= 9;
  p.fused_ok = t->variants && moe_selfsort_ok(P, E);
  int max_load = 0;
  for (int64_t e = 0; e < E; e++) max_load = b.h_count[e] > max_load ? b.h_count[e] : max_load;
  static int space[TUNE_MAX_CANDIDATES * 9];
  const int max_first = TUNE_MAX_CANDIDATES - TUNE_GEMM_MAX_OPTS - 1;  // room for the later rounds
  int n_space = 1;
  for (int k = 0; k < 9; k++) space[k] = hand[k];
  int covered = 0;
  for (int i = 0; i < TUNE_GEMM_N_BM; i++) {
    const int bm = gemm_tune_bms[i];
    if (covered && bm != hand[0]) continue;  // ch15's height is always in the space
    const int bi = p.n_bm++;
    p.bms[bi] = bm;
    covered |= bm >= max_load;
    int64_t mt = 0;
    for (int64_t e = 0; e < E; e++) mt += (b.h_count[e] + bm - 1) / bm;
    int var[TUNE_GEMM_MAX_VARIANTS][2];
    int nv = gemm_tune_variants(bm, var);  // var[0]: ch15's own kernel
    if (!t->variants) nv = 1;
    for (int v = 0; v < nv; v++)
      for (int glu = 1; glu >= 0; glu--) {
        const int64_t N = glu ? F : D;
        int g[9];
        const int ng = gemm_tune_grids(ctx->dev.sms, gemm_tune_max_grid(bm, glu, var[v][0], var[v][1], ctx->dev.sms),
                                       (int)(mt * ((N + var[v][0] - 1) / var[v][0])), g);
        for (int k = 0; k < ng; k++) {
          GemmLaunchOpt *o = glu ? &p.up[bi][p.n_up[bi]++] : &p.down[bi][p.n_down[bi]++];
          o->bn = var[v][0], o->stages = var[v][1], o->grid = g[k];
        }
      }
    const int down_grid = gemm_tune_max_grid(bm, false, moe_grouped::BN, bm == 16 ? 6 : 4, ctx->dev.sms);
    for (int u = 0; u < p.n_up[bi] && n_space < max_first; u++) {
      const GemmLaunchOpt *o = &p.up[bi][u];
      const int c[9] = {bm, o->grid, down_grid, o->bn, o->stages, moe_grouped::BN, bm == 16 ? 6 : 4, 0, 0};
      int same = 1;
      for (int k = 0; k < 9; k++) same &= c[k] == hand[k];
      if (same) continue;
      for (int k = 0; k < 9; k++) space[9 * n_space + k] = c[k];
      n_space++;
    }
  }

  char bucket[96], key[256], label[32];
  tune_bucket_gemm(bucket, sizeof bucket, T, E, b.top_k, D, F);
  if (skewed) strcat(bucket, "_zipf120");
  if (tune_key(key, sizeof key, "gemm", ctx->dev.name, ctx->dev.sms, ctx->dev.runtime_version, bucket))
    snprintf(key, sizeof key, "gemm|unnamed|%s", bucket);
  snprintf(label, sizeof label, "%s T=%d%s", g->name, T, skewed ? " zipf" : "");
  PointOps ops = {gemm_pt_set, gemm_pt_run, gemm_pt_validate, &p, "gemm", gemm_pt_refine, gemm_pt_allowed};
  static TuneCand cands[TUNE_MAX_CANDIDATES];
  int n = 0, from_cache = 0;
  const int best = tune_point(t, &ops, hand, space, n_space, 9, key, cands, &n, &from_cache);

  char workload[128];
  snprintf(workload, sizeof workload, "gemm_T%d_E%lld_k%lld_D%lld_F%lld%s", T, (long long)E,
           (long long)b.top_k, (long long)D, (long long)F, skewed ? "_zipf120" : "");
  gtl_result_init(r, ctx, "bf16", workload);
  r->bytes = moe_bytes(&b);
  r->flops = moe_flops(&b);
  const double ridge = ctx->ceil.bf16_tflops * 1e3 / ctx->ceil.read_gbps;
  r->bound = r->flops / r->bytes < ridge ? GTL_BOUND_READ : GTL_BOUND_BF16;
  static char labels[TUNE_MAX_POINTS][32];
  static int n_labels = 0;
  char *lab = labels[n_labels++ % TUNE_MAX_POINTS];
  snprintf(lab, 32, "%s", label);
  const int rc = tune_finish_point(t, &ops, cands, n, best, from_cache, hand, lab, r);

  free(ref), free(b.h_topk_idx), free(b.h_topk_w), free(b.h_count);
  void *dev[] = {d_x, d_w, d_idx, d_tw, b.d_offsets, b.d_tile_start, b.d_sorted_token, b.d_h, b.d_y};
  for (size_t i = 0; i < sizeof dev / sizeof dev[0]; i++) GTL_CUDA(cudaFree(dev[i]));
  gtl_guarded_free(&g_out);
  return rc;
}
