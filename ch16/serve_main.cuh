// serve_main.cuh — ch16's validation and main(), shared by baseline.cu and optimized.cu
// (the trace, the step and the static scheduler are in serve.cuh).
//
// Validation, before anything is timed:
//   1. every generated token of every request is a valid token (the token history is
//      poisoned to -1 first, so a step that never ran is caught);
//   2. CPU reference in double (serve_model.cuh) for SERVE_REF_REQS requests, first
//      SERVE_REF_TOKENS tokens each, teacher-forced on the GPU's tokens: each GPU token's
//      reference logit must be within SERVE_MARGIN · rms(logits) of the reference maximum
//      (the GPU rounds the attention output to bf16, ~2e-3 · rms on a logit, so an exact
//      argmax match can flip on a near tie; a KV read from a wrong row cannot pass);
//   3. optimized: the static schedule is run first as the reference schedule, and every
//      token of every request must be identical (the model is deterministic under any
//      schedule); at step SERVE_CHECK_STEP the paged attention output must equal, bit for
//      bit, ch18's kernel over the same K/V gathered into a contiguous cache, and match
//      the CPU double attention within the bf16 tolerance.
#pragma once
#include "serve.cuh"

static void serve_tokens_of(const Server *sv, const int32_t *gen, int r, int upto, int32_t *toks) {
  const int P = sv->req[r].P;
  memcpy(toks, sv->h_prompt + (int64_t)r * sv->max_prompt, sizeof(int32_t) * P);
  memcpy(toks + P, gen + (int64_t)r * sv->max_out, sizeof(int32_t) * upto);
}

static void serve_ref_model(const Server *sv, ServeRefModel *m, float **W, float **sinks) {
  *W = (float *)malloc(sizeof(float) * SERVE_VOCAB * SERVE_HID);
  *sinks = (float *)malloc(sizeof(float) * SERVE_H);
  if (!*W || !*sinks) exit(GTL_EXIT_RUNTIME);
  const float rw = sqrtf(3.0f / SERVE_HID);
  for (int64_t i = 0; i < (int64_t)SERVE_VOCAB * SERVE_HID; i++)
    (*W)[i] = gtl_round_bf16(gtl_uniform(sv->seed ^ 0x57ull, (uint64_t)i, -rw, rw));
  GTL_CUDA(cudaMemcpy(*sinks, sv->d_sinks, sizeof(float) * SERVE_H, cudaMemcpyDeviceToHost));
  m->seed = sv->seed, m->W = *W, m->sinks = *sinks;
}

// Paged vs contiguous at one step (see the header). Synchronizes; off the timed path.
static void serve_check_attention(Server *sv, const ServeBatch *b, const AttnKvView *view) {
  cudaStream_t s = sv->ctx->stream;
  const int B = b->B;
  int L = 1, shift = 0;
  for (int i = 0; i < B; i++) L = b->seq_lens[i] > L ? b->seq_lens[i] : L;
  while ((1 << shift) < L) shift++;
  const size_t n_kv = (size_t)B * SERVE_H_KV * L * ATTN_HEAD_DIM, n_o = (size_t)B * SERVE_HID;
  __nv_bfloat16 *kc = (__nv_bfloat16 *)gtl_malloc(n_kv * 2, "contiguous K for the check");
  __nv_bfloat16 *vc = (__nv_bfloat16 *)gtl_malloc(n_kv * 2, "contiguous V for the check");
  __nv_bfloat16 *oc = (__nv_bfloat16 *)gtl_malloc(n_o * 2, "contiguous attention output");
  int32_t *ident = (int32_t *)gtl_malloc(sizeof(int32_t) * B, "identity table");
  int32_t *h_ident = (int32_t *)malloc(sizeof(int32_t) * B);
  for (int i = 0; i < B; i++) h_ident[i] = i;
  GTL_CUDA(cudaMemcpyAsync(ident, h_ident, sizeof(int32_t) * B, cudaMemcpyHostToDevice, s));
  paged_kv_gather_launch(view, sv->d_meta, B, SERVE_H_KV, L, kc, vc, s);
  AttnKvView cv;
  cv.k = kc, cv.v = vc, cv.block_table = ident, cv.table_stride = 1, cv.page_shift = shift;
  cv.page_stride = (int64_t)SERVE_H_KV * L * ATTN_HEAD_DIM, cv.head_stride = (int64_t)L * ATTN_HEAD_DIM;
  cv.token_stride = ATTN_HEAD_DIM;
  AttnDecodeArgs a = {sv->d_q, oc, cv, sv->d_meta, sv->d_sinks, B, SERVE_H, SERVE_H_KV, 0, 0.125f};
  if (attn_splitkv_launch(&a, 1, NULL, s) != 0) exit(GTL_EXIT_RUNTIME);
  GTL_CUDA(cudaStreamSynchronize(s));
  uint16_t *hp = (uint16_t *)malloc(n_o * 2), *hc = (uint16_t *)malloc(n_o * 2);
  int32_t *gen = (int32_t *)malloc(sizeof(int32_t) * sv->n_req * sv->max_out);
  int32_t *toks = (int32_t *)malloc(sizeof(int32_t) * (sv->max_prompt + sv->max_out));
  const int n_cpu = B < 4 ? B : 4;
  float *got = (float *)malloc(sizeof(float) * n_cpu * SERVE_HID);
  double *ref = (double *)malloc(sizeof(double) * n_cpu * SERVE_HID);
  if (!hp || !hc || !gen || !toks || !got || !ref) exit(GTL_EXIT_RUNTIME);
  GTL_CUDA(cudaMemcpy(hp, sv->d_attn, n_o * 2, cudaMemcpyDeviceToHost));
  GTL_CUDA(cudaMemcpy(hc, oc, n_o * 2, cudaMemcpyDeviceToHost));
  GTL_CUDA(cudaMemcpy(gen, sv->d_gen, sizeof(int32_t) * sv->n_req * sv->max_out, cudaMemcpyDeviceToHost));
  sv->check_exact_bad = 0;
  for (size_t i = 0; i < n_o; i++) sv->check_exact_bad += hp[i] != hc[i];
  ServeRefModel m;
  float *W, *sinks;
  serve_ref_model(sv, &m, &W, &sinks);
  for (int c = 0; c < n_cpu; c++) {  // rows spread over the batch
    const int i = n_cpu == 1 ? 0 : c * (B - 1) / (n_cpu - 1), r = b->req[i];
    serve_tokens_of(sv, gen, r, b->out_idx[i], toks);
    serve_attn_cpu(&m, toks, b->pos[i], ref + (size_t)c * SERVE_HID);
    gtl_bf16_to_f32_array(hp + (size_t)i * SERVE_HID, got + (size_t)c * SERVE_HID, SERVE_HID);
  }
  gtl_compare(got, ref, (size_t)n_cpu * SERVE_HID, gtl_tol_for(GTL_BF16), &sv->check_err);
  if (!sv->ctx->args.json) {
    printf("# check at step %lld (B=%d, longest %d keys): paged vs contiguous attention, %d of %zu "
           "bf16 outputs differ (want 0)\n", (long long)sv->steps, B, L, sv->check_exact_bad, n_o);
    gtl_err_print(stdout, &sv->check_err, "paged attention vs cpu_double (4 rows)");
  }
  sv->check_done = 1;
  free(W), free(sinks), free(hp), free(hc), free(gen), free(toks), free(got), free(ref), free(h_ident);
  void *d[] = {kc, vc, oc, ident};
  for (int i = 0; i < 4; i++) GTL_CUDA(cudaFree(d[i]));
}

// Token checks 1 and 2 of the header on gen [n_req][max_out]. Returns the failures.
static int64_t serve_check_tokens(const Server *sv, const int32_t *gen, int64_t *n_ref, int64_t *n_top1) {
  int64_t bad = 0;
  for (int r = 0; r < sv->n_req; r++)
    for (int i = 0; i < sv->req[r].n_out; i++) {
      const int32_t t = gen[(int64_t)r * sv->max_out + i];
      if (t < 0 || t >= SERVE_VOCAB) {
        if (bad < 3) fprintf(stderr, "ch16: request %d token %d is %d (never written or invalid)\n", r, i, t);
        bad++;
      }
    }
  if (bad) return bad;
  ServeRefModel m;
  float *W, *sinks;
  serve_ref_model(sv, &m, &W, &sinks);
  int32_t *toks = (int32_t *)malloc(sizeof(int32_t) * (sv->max_prompt + sv->max_out));
  double *o = (double *)malloc(sizeof(double) * SERVE_HID), logits[SERVE_VOCAB];
  const int nr = sv->n_req < SERVE_REF_REQS ? sv->n_req : SERVE_REF_REQS;
  *n_ref = *n_top1 = 0;
  for (int c = 0; c < nr; c++) {
    const int r = nr == 1 ? 0 : c * (sv->n_req - 1) / (nr - 1);
    const int n = sv->req[r].n_out < SERVE_REF_TOKENS ? sv->req[r].n_out : SERVE_REF_TOKENS;
    serve_tokens_of(sv, gen, r, n, toks);
    for (int i = 0; i < n; i++) {
      serve_attn_cpu(&m, toks, sv->req[r].P - 1 + i, o);
      serve_logits_cpu(&m, o, logits);
      double mx = -INFINITY, ss = 0;
      int am = 0;
      for (int v = 0; v < SERVE_VOCAB; v++) {
        ss += logits[v] * logits[v];
        if (logits[v] > mx) mx = logits[v], am = v;
      }
      const int t = toks[sv->req[r].P + i];
      const double gap = mx - logits[t], tol = SERVE_MARGIN * sqrt(ss / SERVE_VOCAB);
      (*n_ref)++;
      *n_top1 += t == am;
      if (!(gap <= tol)) {
        if (bad < 3)
          fprintf(stderr, "ch16: request %d token %d: GPU chose %d, reference argmax %d, logit gap %.3g > %.3g\n",
                  r, i, t, am, gap, tol);
        bad++;
      }
    }
  }
  free(W), free(sinks), free(toks), free(o);
  return bad;
}

// Build the trace (see serve.cuh's header).
static void serve_trace(Server *sv, int mean_out) {
  double t = 0;
  const double q = 1.0 - 1.0 / mean_out;
  for (int r = 0; r < sv->n_req; r++) {
    ServeReq *x = &sv->req[r];
    x->P = sv->shared_prefix + 64 + (int)gtl_uniform_u32(sv->seed ^ 0x9001ull, r, 385);
    const double u = gtl_uniform(sv->seed ^ 0x9002ull, r, 0.0f, 1.0f);
    const int n = 1 + (int)floor(log1p(-u) / log(q));  // Geometric(1/mean) on 1, 2, …
    x->n_out = n < sv->max_out ? n : sv->max_out;
    if (sv->rate > 0) t += -log1p(-(double)gtl_uniform(sv->seed ^ 0x9003ull, r, 0.0f, 1.0f)) / sv->rate;
    x->arrival_s = t;
    for (int j = 0; j < x->P; j++)  // the shared prefix is the same token stream for all
      sv->h_prompt[(int64_t)r * sv->max_prompt + j] =
          j < sv->shared_prefix ? (int32_t)gtl_uniform_u32(sv->seed ^ 0x9004ull, j, SERVE_VOCAB)
                                : (int32_t)gtl_uniform_u32(sv->seed ^ 0x9005ull, ((uint64_t)r << 20) + j, SERVE_VOCAB);
  }
}

static void serve_bench_fn(void *user, cudaStream_t s) {
  (void)s;  // the scheduler enqueues on ctx->stream, the stream gtl_bench times
  if (serve_run((Server *)user)) exit(GTL_EXIT_FAIL);
}

// Percentiles of the last run: TTFT (arrival → first token's step done) and TPOT (mean gap
// between a request's later tokens), in ms.
static void serve_latency(Server *sv, GtlStats *ttft, GtlStats *tpot) {
  GTL_CUDA(cudaStreamSynchronize(sv->ctx->stream));
  float *a = (float *)malloc(sizeof(float) * sv->n_req), *b = (float *)malloc(sizeof(float) * sv->n_req);
  int na = 0, nb = 0;
  for (int r = 0; r < sv->n_req; r++) {
    float t1, t2;
    GTL_CUDA(cudaEventElapsedTime(&t1, sv->ev_start, sv->ev[sv->first_step[r]]));
    a[na++] = t1 - (float)(sv->req[r].arrival_s * 1e3);
    if (sv->req[r].n_out < 2) continue;
    GTL_CUDA(cudaEventElapsedTime(&t2, sv->ev_start, sv->ev[sv->last_step[r]]));
    b[nb++] = (t2 - t1) / (sv->req[r].n_out - 1);
  }
  gtl_stats_compute(a, na, ttft);
  if (gtl_stats_compute(b, nb, tpot)) memset(tpot, 0, sizeof *tpot);
  free(a), free(b);
}

/** main() of both programs. run: the variant's scheduler (serve_run); the optimized one
 *  also checks itself against serve_run_static (reference_schedule = 1). */
static int serve_main(int argc, char **argv, const char *variant, const char *strategy, int reference_schedule) {
  int64_t n_req = -1, budget_mb = -1, shared = 0, max_out = -1, mean_out = -1;
  const char *arrival = NULL;
  GtlOpt opts[] = {{"requests", GTL_OPT_INT, &n_req, "requests in the trace, 1..4096 (default 512)"},
                   {"kv-budget-mb", GTL_OPT_INT, &budget_mb, "KV cache budget in MiB, the same for both (default 64)"},
                   {"shared-prefix", GTL_OPT_INT, &shared, "tokens of system prompt every request shares, 0..4096 (0)"},
                   {"max-out", GTL_OPT_INT, &max_out, "cap on generated tokens per request, 1..4096 (512)"},
                   {"mean-out", GTL_OPT_INT, &mean_out, "mean of the geometric output length, 2..4096 (128)"},
                   {"arrival", GTL_OPT_STR, &arrival, "all (default: every request at t=0) or poisson:RATE (req/s)"}};
  GtlCtx ctx;
  gtl_parse(&ctx, "ch16", variant, argc, argv, opts, 6, 1, 3, GTL_L2_WARM);
  const int small = ctx.args.size == GTL_SIZE_SMALL;
  // --size=small: a short trace for the sanitizers (every code path, a few hundred steps)
  if (n_req < 0) n_req = small ? 16 : 512;
  if (budget_mb < 0) budget_mb = small ? 2 : 64;
  if (max_out < 0) max_out = small ? 48 : 512;
  if (mean_out < 0) mean_out = small ? 8 : 128;
  double rate = 0;
  if (arrival && strcmp(arrival, "all")) {
    char *end = NULL;
    rate = strncmp(arrival, "poisson:", 8) ? -1 : strtod(arrival + 8, &end);
    if (!(rate > 0 && rate <= 1e7) || !end || *end)
      gtl_usage_fail(&ctx, "--arrival=%s: want all or poisson:RATE with 0 < RATE <= 1e7 requests/s", arrival);
  }
  if (n_req < 1 || n_req > 4096 || budget_mb < 1 || budget_mb > 65536 || shared < 0 || shared > 4096 ||
      max_out < 1 || max_out > 4096 || mean_out < 2 || mean_out > 4096)
    gtl_usage_fail(&ctx, "need 1 <= requests <= 4096, 1 <= kv-budget-mb <= 65536, 0 <= shared-prefix <= 4096, "
                         "1 <= max-out <= 4096, 2 <= mean-out <= 4096");
  Server sv;
  memset(&sv, 0, sizeof sv);
  sv.ctx = &ctx, sv.seed = ctx.args.seed, sv.n_req = (int)n_req, sv.max_out = (int)max_out;
  sv.shared_prefix = (int)shared, sv.rate = rate;
  sv.max_prompt = sv.shared_prefix + 448;
  sv.budget_bytes = (size_t)budget_mb << 20;
  sv.budget_tokens = (int64_t)(sv.budget_bytes / SERVE_KV_TOKEN_BYTES);
  if (sv.max_prompt + sv.max_out > sv.budget_tokens)
    gtl_usage_fail(&ctx, "--kv-budget-mb=%lld holds %lld tokens: too few for one request's worst case "
                         "(%d prompt + %d output)", (long long)budget_mb, (long long)sv.budget_tokens,
                   sv.max_prompt, sv.max_out);
  gtl_open(&ctx);
  gtl_require_cc(&ctx, 8, 0, "bf16 mma.sync and cp.async (ch18's attention)");

  gtl_phase_push(GTL_PHASE_SETUP);
  sv.req = (ServeReq *)malloc(sizeof(ServeReq) * sv.n_req);
  sv.h_prompt = (int32_t *)calloc((size_t)sv.n_req * sv.max_prompt, sizeof(int32_t));
  sv.first_step = (int64_t *)malloc(sizeof(int64_t) * sv.n_req);
  sv.last_step = (int64_t *)malloc(sizeof(int64_t) * sv.n_req);
  int32_t *h_len = (int32_t *)malloc(sizeof(int32_t) * sv.n_req);
  int32_t *gen = (int32_t *)malloc(sizeof(int32_t) * sv.n_req * sv.max_out);
  int32_t *gen_ref = (int32_t *)malloc(sizeof(int32_t) * sv.n_req * sv.max_out);
  if (!sv.req || !sv.h_prompt || !sv.first_step || !sv.last_step || !h_len || !gen || !gen_ref) {
    fprintf(stderr, "ch16: host out of memory for the trace\n");
    return GTL_EXIT_RUNTIME;
  }
  serve_trace(&sv, (int)mean_out);
  int64_t total_out = 0, sum_p = 0, longest = 0;
  for (int r = 0; r < sv.n_req; r++) {
    h_len[r] = sv.req[r].P, total_out += sv.req[r].n_out, sum_p += sv.req[r].P;
    longest = sv.req[r].n_out > longest ? sv.req[r].n_out : longest;
  }
  sv.max_table = kv_blocks_for(sv.max_prompt + sv.max_out);
  sv.d_kpool = (__nv_bfloat16 *)gtl_malloc(sv.budget_bytes / 2, "K cache (half the KV budget)");
  sv.d_vpool = (__nv_bfloat16 *)gtl_malloc(sv.budget_bytes / 2, "V cache (half the KV budget)");
  sv.d_W = (__nv_bfloat16 *)gtl_malloc((size_t)SERVE_VOCAB * SERVE_HID * 2, "W [1024][4096] bf16");
  sv.d_sinks = (float *)gtl_malloc(SERVE_H * 4, "sinks");
  const size_t rows = SERVE_MAX_BATCH;
  sv.d_q = (__nv_bfloat16 *)gtl_malloc(rows * SERVE_HID * 2, "q");
  sv.d_attn = (__nv_bfloat16 *)gtl_malloc(rows * SERVE_HID * 2, "attention out");
  sv.d_knew = (__nv_bfloat16 *)gtl_malloc(rows * SERVE_H_KV * ATTN_HEAD_DIM * 2, "new K rows");
  sv.d_vnew = (__nv_bfloat16 *)gtl_malloc(rows * SERVE_H_KV * ATTN_HEAD_DIM * 2, "new V rows");
  sv.d_logits = (float *)gtl_malloc(rows * SERVE_VOCAB * 4, "logits");
  const size_t meta = 8 * rows + 4 + (rows + 1) * sv.max_table;
  sv.d_meta = (int32_t *)gtl_malloc(meta * 4, "step metadata and block tables");
  for (int i = 0; i < SERVE_RING; i++) sv.h_meta[i] = (int32_t *)gtl_malloc_pinned(meta * 4, "staging");
  int32_t *d_prompt = (int32_t *)gtl_malloc((size_t)sv.n_req * sv.max_prompt * 4, "prompts");
  int32_t *d_plen = (int32_t *)gtl_malloc((size_t)sv.n_req * 4, "prompt lengths");
  sv.d_gen = (int32_t *)gtl_malloc((size_t)sv.n_req * sv.max_out * 4, "generated tokens");
  // On the timed stream (non-blocking: it does not wait for the legacy stream's copies).
  GTL_CUDA(cudaMemcpyAsync(d_prompt, sv.h_prompt, (size_t)sv.n_req * sv.max_prompt * 4, cudaMemcpyHostToDevice,
                           ctx.stream));
  GTL_CUDA(cudaMemcpyAsync(d_plen, h_len, (size_t)sv.n_req * 4, cudaMemcpyHostToDevice, ctx.stream));
  GTL_CUDA(cudaMemsetAsync(sv.d_attn, 0, rows * SERVE_HID * 2, ctx.stream));  // GEMV pad rows: finite zeros
  const float rw = sqrtf(3.0f / SERVE_HID);
  gtl_fill_uniform(sv.d_W, GTL_BF16, (size_t)SERVE_VOCAB * SERVE_HID, sv.seed ^ 0x57ull, -rw, rw, ctx.stream);
  gtl_fill_uniform(sv.d_sinks, GTL_FP32, SERVE_H, sv.seed ^ 0x5155ull, -1.0f, 1.0f, ctx.stream);
  sv.tok.seed = sv.seed, sv.tok.prompt = d_prompt, sv.tok.prompt_len = d_plen, sv.tok.gen = sv.d_gen;
  sv.tok.max_prompt = sv.max_prompt, sv.tok.max_out = sv.max_out;
  GTL_CUDA(cudaEventCreate(&sv.ev_start));
  GTL_CUDA(cudaStreamSynchronize(ctx.stream));  // h_prompt and h_len may be read again below
  sv.check_step = -1;
  gtl_phase_pop();

  char workload[160], notes[1024];
  char tag[48] = "";
  if (shared) snprintf(tag, sizeof tag, "_prefix%lld", (long long)shared);
  snprintf(workload, sizeof workload, "R%d_kv%lldMB_out%lld_%lld%s%s", sv.n_req, (long long)budget_mb,
           (long long)mean_out, (long long)max_out, tag, rate > 0 ? "_poisson" : "");
  snprintf(notes, sizeof notes,
           "scheduler: %s\n"
           "trace: %d requests, prompt %d + U{64..448} (mean %.0f), output min(%lld, 1 + Geometric(1/%lld)) "
           "(mean %.1f, longest %lld), %lld tokens to generate, arrival %s\n"
           "KV budget: %lld MiB = %lld tokens of %d B (K and V, 8 heads x 64, bf16); blocks of %d tokens\n"
           "model: 64q/8kv heads x 64, one layer of ch18 attention (1 split) + ch08 GEMV W[%d][%d] bf16 "
           "+ argmax; prefill by a fill kernel, the same in both programs\n"
           "timed: one whole trace per iteration (L2 warm); metric tokens/s = generated tokens / median",
           strategy, sv.n_req, sv.shared_prefix, (double)sum_p / sv.n_req, (long long)max_out, (long long)mean_out,
           (double)total_out / sv.n_req, (long long)longest, (long long)total_out, rate > 0 ? arrival : "all at t=0",
           (long long)budget_mb, (long long)sv.budget_tokens, SERVE_KV_TOKEN_BYTES, KV_BLOCK_TOKENS, SERVE_VOCAB,
           SERVE_HID);
  gtl_report_header(&ctx, workload, notes);

  GtlResult r;
  gtl_result_init(&r, &ctx, "bf16", workload);
  r.bound = GTL_BOUND_READ;
  r.ref = "cpu_double";
  if (ctx.args.verify) {
    gtl_phase_push(GTL_PHASE_VALIDATE);
    int64_t mismatch = 0, n_ref = 0, n_top1 = 0;
    if (reference_schedule) {  // the static schedule's tokens, every request
      gtl_poison(sv.d_gen, (size_t)sv.n_req * sv.max_out * 4, ctx.stream);
      if (serve_run_static(&sv)) return GTL_EXIT_RUNTIME;
      GTL_CUDA(cudaStreamSynchronize(ctx.stream));
      GTL_CUDA(cudaMemcpy(gen_ref, sv.d_gen, (size_t)sv.n_req * sv.max_out * 4, cudaMemcpyDeviceToHost));
      sv.check_step = longest - 1 < SERVE_CHECK_STEP ? (int)longest - 1 : SERVE_CHECK_STEP;
    }
    gtl_poison(sv.d_gen, (size_t)sv.n_req * sv.max_out * 4, ctx.stream);
    const int run_rc = serve_run(&sv);
    GTL_CUDA(cudaStreamSynchronize(ctx.stream));
    GTL_CUDA(cudaMemcpy(gen, sv.d_gen, (size_t)sv.n_req * sv.max_out * 4, cudaMemcpyDeviceToHost));
    if (reference_schedule)
      for (int q = 0; q < sv.n_req; q++)
        for (int i = 0; i < sv.req[q].n_out; i++) {
          const int64_t at = (int64_t)q * sv.max_out + i;
          if (gen[at] != gen_ref[at] && mismatch++ < 3)
            fprintf(stderr, "ch16: request %d token %d: %d, the static schedule made %d\n", q, i, gen[at], gen_ref[at]);
        }
    const int64_t bad = serve_check_tokens(&sv, gen, &n_ref, &n_top1);
    r.err = sv.check_err;  // the attention check (rel_l2, max_abs), when it ran
    if (!sv.check_done) memset(&r.err, 0, sizeof r.err), r.err.rel_l2 = r.err.max_abs = NAN;
    r.err.n_bad = (size_t)(bad + mismatch + sv.check_exact_bad);
    r.err.pass = run_rc == 0 && bad == 0 && mismatch == 0 && sv.check_exact_bad == 0 &&
                 (!sv.check_done || sv.check_err.pass) && (!reference_schedule || sv.check_done);
    r.validated = 1;
    if (!ctx.args.json) {
      printf("# validate tokens: %lld generated, %lld checked against cpu_double (%lld exact argmax, the rest "
             "within %.2f rms), %lld outside -> %s\n", (long long)total_out, (long long)n_ref, (long long)n_top1,
             SERVE_MARGIN, (long long)bad, bad ? "FAIL" : "PASS");
      if (reference_schedule)
        printf("# validate tokens vs the static schedule: %lld of %lld differ -> %s\n", (long long)mismatch,
               (long long)total_out, mismatch ? "FAIL" : "PASS");
      if (run_rc) printf("# the scheduler reported an allocator inconsistency -> FAIL\n");
    }
    sv.check_step = -1;
    gtl_phase_pop();
    if (!r.err.pass) {
      gtl_report_row(&ctx, &r);
      return gtl_report_finish(&ctx, &r);  // never time a wrong server
    }
  }
  gtl_bench(&ctx, serve_bench_fn, &sv, &r.st);

  GtlStats ttft, tpot;
  serve_latency(&sv, &ttft, &tpot);
  const double steps = (double)sv.steps, kvb = SERVE_KV_TOKEN_BYTES, wb = (double)SERVE_VOCAB * SERVE_HID * 2;
  r.bytes = sv.sum_kv_tokens * kvb + steps * wb + sv.prefill_tokens * kvb;
  r.flops = 4.0 * sv.sum_kv_tokens * SERVE_H * ATTN_HEAD_DIM + 2.0 * sv.tokens * SERVE_VOCAB * SERVE_HID;
  const double tps = sv.tokens / (r.st.median * 1e-3), bt = (double)sv.budget_tokens;
  gtl_result_extra(&r, "tokens_per_s", tps);
  gtl_result_extra(&r, "ttft_p50_ms", ttft.median);
  gtl_result_extra(&r, "ttft_p99_ms", ttft.p99);
  gtl_result_extra(&r, "tpot_p50_ms", tpot.median);
  gtl_result_extra(&r, "tpot_p99_ms", tpot.p99);
  gtl_result_extra(&r, "kv_used_pct", 100.0 * sv.sum_used / (steps * bt));
  gtl_result_extra(&r, "kv_committed_pct", 100.0 * sv.sum_alloc / (steps * bt));
  gtl_result_extra(&r, "peak_seqs", (double)sv.peak);
  gtl_result_extra(&r, "steps", steps);
  gtl_result_extra(&r, "preemptions", (double)sv.preemptions);
  gtl_result_extra(&r, "prefix_saved_mb", sv.peak_saved_tokens * kvb / (1 << 20));
  gtl_result_extra(&r, "tokens", (double)sv.tokens);
  if (!ctx.args.json) {
    printf("# served %lld tokens in %lld steps: %.0f tokens/s, peak %lld sequences, %.1f per step\n",
           (long long)sv.tokens, (long long)sv.steps, tps, (long long)sv.peak, sv.tokens / steps);
    printf("# KV: %.1f%% of the budget holds tokens, %.1f%% committed (mean over steps); preemptions %lld\n",
           100.0 * sv.sum_used / (steps * bt), 100.0 * sv.sum_alloc / (steps * bt), (long long)sv.preemptions);
    printf("# TTFT p50 %.2f / p99 %.2f ms, TPOT p50 %.3f / p99 %.3f ms (last timed run)\n", ttft.median, ttft.p99,
           tpot.median, tpot.p99);
    if (sv.shared_prefix)
      printf("# prefix caching: %.1f MiB saved at the peak (%.1f MiB mean over steps)\n",
             sv.peak_saved_tokens * kvb / (1 << 20), sv.sum_saved / steps * kvb / (1 << 20));
  }
  gtl_report_row(&ctx, &r);
  const int code = gtl_report_finish(&ctx, &r);

  for (int i = 0; i < sv.cap_ev; i++) GTL_CUDA(cudaEventDestroy(sv.ev[i]));
  GTL_CUDA(cudaEventDestroy(sv.ev_start));
  for (int i = 0; i < SERVE_RING; i++) GTL_CUDA(cudaFreeHost(sv.h_meta[i]));
  void *d[] = {sv.d_kpool, sv.d_vpool, sv.d_W, sv.d_sinks, sv.d_q, sv.d_attn, sv.d_knew, sv.d_vnew, sv.d_logits,
               sv.d_meta, d_prompt, d_plen, sv.d_gen};
  for (size_t i = 0; i < sizeof d / sizeof d[0]; i++) GTL_CUDA(cudaFree(d[i]));
  free(sv.ev), free(sv.req), free(sv.h_prompt), free(sv.first_step), free(sv.last_step), free(h_len), free(gen),
      free(gen_ref);
  gtl_end(&ctx);
  return code;
}
