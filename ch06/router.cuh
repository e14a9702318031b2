// router.cuh — ch06's problem, reference and driver, shared by baseline.cu and
// optimized.cu so that the two files differ only in where the router runs.
//
// The problem: the MoE router of qwen3moe (E = 128 experts, top_k = 8). The router GEMM
// leaves logits [T][E] fp32 on the device; for every token the step needs, on the
// device (where the expert kernels read them), the top_k expert indices (int32) and
// their weights: softmax over all E experts, the top_k probabilities, renormalized to
// sum to 1 (norm_topk_prob = true). Semantics of Hugging Face transformers,
// models/qwen3_moe/modeling_qwen3_moe.py (Qwen3MoeSparseMoeBlock.forward); order by
// descending probability, ties to the lower expert index.
//
// Roofline: bytes = T·E·4 (logits in) + T·top_k·8 (indices and weights out): 36.9 KB at
// T=64, under 0.01 µs at 4.3 TB/s; flops ≈ 3·T·E (subtract, exp, add). Neither limits a
// router step: it is latency-bound (a launch, one load, a chain of shuffles — or, on the
// host, two PCIe transfers around a synchronize and the CPU's work), hence µs per step.
#pragma once
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../common/gauntlet.h"

#define ROUTER_E 128    // qwen3moe num_experts
#define ROUTER_TOP_K 8  // qwen3moe num_experts_per_tok

typedef struct {
  int64_t T, E, top_k;   // tokens, experts, experts per token
  int norm_topk_prob;    // 1: weights renormalized over the top_k (Qwen3-MoE)
  const float *d_logits; // [T][E] router logits
  int32_t *d_idx;        // [T][top_k] chosen experts, best first
  float *d_w;            // [T][top_k] their weights
  float *h_logits;       // pinned host staging [T][E]: used by the host router only
  int32_t *h_idx;        // pinned [T][top_k]
  float *h_w;            // pinned [T][top_k]
} RouterProblem;

// What each variant defines: enqueue one router step of p on stream s (the host router
// synchronizes inside, as it must), and describe its machinery for the header.
void router_launch(const RouterProblem *p, cudaStream_t s);
void router_explain(char *buf, size_t n);

static double router_bytes(const RouterProblem *p) {
  return (double)p->T * p->E * 4 + (double)p->T * p->top_k * (4 + 4);
}
static double router_flops(const RouterProblem *p) { return 3.0 * p->T * p->E; }

// The first n experts of one token in router order (larger logit first, equal logits →
// lower index): n rounds of a scan for the best expert not yet taken. Needs n <= E <= 1024.
static void router_select(const float *row, int64_t E, int64_t n, int32_t *out) {
  unsigned char taken[1024];
  memset(taken, 0, (size_t)E);
  for (int64_t j = 0; j < n; j++) {
    int64_t best = -1;
    for (int64_t e = 0; e < E; e++)  // e ascending with a strict '>': ties go to lower e
      if (!taken[e] && (best < 0 || row[e] > row[best])) best = e;
    taken[best] = 1;
    out[j] = (int32_t)best;
  }
}

// Seeded logits in [-4, 4), with exact ties planted by token kind (t % 4):
//   0: a three-way tie across the k-th place (places k, k+1, k+2 equal) and a tie for the
//      maximum: the set rule and the softmax max both meet ties;
//   1: values on a grid of 0.5: 17 levels for 128 experts, ties everywhere;
//   2: untouched (24-bit draws: ties only by chance);
//   3: a tie inside the top_k (places k/2 and k/2+1) and one between two fixed experts.
// Token t depends only on (seed, t), so the rows for T = 8 are a prefix of those for 256.
static void router_fill_logits(float *x, int64_t T, int64_t E, int64_t k, uint64_t seed) {
  int32_t order[40];
  for (int64_t t = 0; t < T; t++) {
    float *row = x + t * E;
    for (int64_t e = 0; e < E; e++) row[e] = gtl_uniform(seed, (uint64_t)(t * E + e), -4.0f, 4.0f);
    switch (t % 4) {
      case 0:
        router_select(row, E, k + 2, order);
        row[order[k]] = row[order[k + 1]] = row[order[k - 1]];
        row[order[1]] = row[order[0]];
        break;
      case 1:
        for (int64_t e = 0; e < E; e++) row[e] = rintf(row[e] * 2.0f) * 0.5f;
        break;
      case 3:
        row[(t * 7) % E] = row[(t * 7 + E / 2) % E];
        if (k >= 2) {
          router_select(row, E, k, order);
          row[order[k / 2]] = row[order[k / 2 - 1]];
        }
        break;
      default: break;
    }
  }
}

// Reference, in double from the same fp32 logits: m = max, S = Σ exp(x − m),
// p = exp(x − m) / S; top_k by router_select (ranking by logit equals ranking by exact
// probability); w = p / Σ_top_k p when norm_topk_prob.
static void router_cpu(const float *x, int64_t T, int64_t E, int64_t k, int norm,
                       int32_t *idx, double *w) {
  for (int64_t t = 0; t < T; t++) {
    const float *row = x + t * E;
    double m = -INFINITY, S = 0, top = 0, p[32];
    for (int64_t e = 0; e < E; e++) m = fmax(m, (double)row[e]);
    for (int64_t e = 0; e < E; e++) S += exp((double)row[e] - m);
    router_select(row, E, k, idx + t * k);
    for (int64_t j = 0; j < k; j++) {
      p[j] = exp((double)row[idx[t * k + j]] - m) / S;
      top += p[j];
    }
    for (int64_t j = 0; j < k; j++) w[t * k + j] = norm ? p[j] / top : p[j];
  }
}

// Count tokens whose k-th place ties with an expert left out (the set rule decides),
// and tokens with two equal logits inside their top_k (the order rule decides).
static void router_ties(const float *x, const int32_t *ref_idx, int64_t T, int64_t E,
                        int64_t k, int64_t *n_boundary, int64_t *n_inside) {
  *n_boundary = *n_inside = 0;
  unsigned char chosen[1024];
  for (int64_t t = 0; t < T; t++) {
    const float *row = x + t * E;
    const int32_t *ri = ref_idx + t * k;
    int inside = 0, boundary = 0;
    memset(chosen, 0, (size_t)E);
    for (int64_t j = 0; j < k; j++) chosen[ri[j]] = 1;
    for (int64_t j = 0; j + 1 < k; j++) inside |= row[ri[j]] == row[ri[j + 1]];
    for (int64_t e = 0; e < E; e++) boundary |= !chosen[e] && row[e] == row[ri[k - 1]];
    *n_inside += inside;
    *n_boundary += boundary;
  }
}

// Indices: exact against the reference, except that among exactly equal logits (hence
// exactly equal probabilities) any member of the tie set is accepted at that place
// (the project's rule for indices: exact, with ties compared as sets). An output index is
// accepted at place j when it is an expert, not already output at an earlier place of
// the same token, and its logit equals that of the reference's j-th expert; *n_tie_alt
// counts places where such an alternative (not the lower index) was output.
// Weights: the project's fp32 tolerance (gtl_tol_for(GTL_FP32): rel_l2 1e-6, element
// rtol 1e-5) against the double reference; a tie alternative has the same weight.
static void router_validate(const float *x, int64_t T, int64_t E, int64_t k,
                            const int32_t *ref_idx, const double *ref_w, const int32_t *out_idx,
                            const float *out_w, GtlErr *e_idx, GtlErr *e_w, int64_t *n_tie_alt) {
  const size_t n = (size_t)(T * k);
  int32_t *resolved = (int32_t *)malloc(n * sizeof(int32_t));
  *n_tie_alt = 0;
  for (int64_t t = 0; t < T; t++)
    for (int64_t j = 0; j < k; j++) {
      const size_t i = (size_t)(t * k + j);
      const int32_t o = out_idx[i], r = ref_idx[i];
      resolved[i] = r;
      if (o == r || o < 0 || o >= E || x[t * E + o] != x[t * E + r]) continue;
      int dup = 0;
      for (int64_t jj = 0; jj < j; jj++) dup |= out_idx[t * k + jj] == o;
      if (!dup) {
        resolved[i] = o;
        (*n_tie_alt)++;
      }
    }
  gtl_compare_i32(out_idx, resolved, n, e_idx);
  gtl_compare(out_w, ref_w, n, gtl_tol_for(GTL_FP32), e_w);
  free(resolved);
}

static void router_run(void *user, cudaStream_t s) {
  router_launch((const RouterProblem *)user, s);
}

// One table row: the first T tokens of the seeded set. Device buffers are sized to T
// exactly (guard bands and memcheck see any overrun). Returns 0, or 1 on FAIL (the row is
// printed, nothing timed).
static int router_case(GtlCtx *ctx, int64_t T, int norm, const float *h_x,
                       const int32_t *ref_idx, const double *ref_w, char *label,
                       size_t label_n, GtlResult *r) {
  const int64_t E = ROUTER_E, k = ROUTER_TOP_K;
  const size_t n_in = (size_t)(T * E), n_out = (size_t)(T * k);
  RouterProblem p;
  memset(&p, 0, sizeof p);
  p.T = T;
  p.E = E;
  p.top_k = k;
  p.norm_topk_prob = norm;

  gtl_phase_push(GTL_PHASE_SETUP);
  float *d_logits = (float *)gtl_malloc(n_in * 4, "logits [T][E] fp32");
  GTL_CUDA(cudaMemcpy(d_logits, h_x, n_in * 4, cudaMemcpyHostToDevice));
  p.d_logits = d_logits;
  GtlGuarded g_idx, g_w;
  p.d_idx = (int32_t *)gtl_guarded_alloc(&g_idx, n_out * 4, "indices [T][top_k] int32");
  p.d_w = (float *)gtl_guarded_alloc(&g_w, n_out * 4, "weights [T][top_k] fp32");
  p.h_logits = (float *)gtl_malloc_pinned(n_in * 4, "host staging logits");
  p.h_idx = (int32_t *)gtl_malloc_pinned(n_out * 4, "host staging indices");
  p.h_w = (float *)gtl_malloc_pinned(n_out * 4, "host staging weights");
  gtl_phase_pop();

  char workload[64];
  snprintf(workload, sizeof workload, "T%lld_E%lld_k%lld%s", (long long)T, (long long)E,
           (long long)k, norm ? "" : "_raw");
  gtl_result_init(r, ctx, "fp32", workload);
  snprintf(label, label_n, "%s T=%lld", ctx->variant, (long long)T);
  r->variant = label;
  r->bytes = router_bytes(&p);
  r->flops = router_flops(&p);
  r->bound = GTL_BOUND_READ;
  r->ref = "cpu_double";
  gtl_result_extra(r, "tokens", (double)T);
  gtl_result_extra(r, "norm_topk_prob", norm);

  int rc = 0;
  if (ctx->args.verify) {
    gtl_phase_push(GTL_PHASE_VALIDATE);
    gtl_poison(p.d_idx, n_out * 4, ctx->stream);  // int32 -1 and fp32 NaN
    gtl_poison(p.d_w, n_out * 4, ctx->stream);
    router_launch(&p, ctx->stream);
    GTL_CUDA(cudaStreamSynchronize(ctx->stream));
    int32_t *out_idx = (int32_t *)malloc(n_out * 4);
    float *out_w = (float *)malloc(n_out * 4);
    GTL_CUDA(cudaMemcpy(out_idx, p.d_idx, n_out * 4, cudaMemcpyDeviceToHost));
    GTL_CUDA(cudaMemcpy(out_w, p.d_w, n_out * 4, cudaMemcpyDeviceToHost));
    GtlErr e_idx;
    int64_t n_tie_alt = 0;
    router_validate(h_x, T, E, k, ref_idx, ref_w, out_idx, out_w, &e_idx, &r->err, &n_tie_alt);
    const size_t bad_guard = gtl_guarded_check(&g_idx) + gtl_guarded_check(&g_w);
    r->validated = 1;
    gtl_result_extra(r, "tie_set_alternatives", (double)n_tie_alt);
    if (!e_idx.pass || bad_guard) {
      gtl_err_print(stderr, &e_idx, "indices (exact up to tie sets)");
      if (bad_guard) fprintf(stderr, "ch06: %zu guard bytes around the outputs were overwritten\n", bad_guard);
      r->err.pass = 0;
    }
    if (!r->err.pass) rc = GTL_EXIT_FAIL;  // never time a wrong router
    free(out_idx);
    free(out_w);
    gtl_phase_pop();
  }
  if (rc == 0) {
    gtl_bench(ctx, router_run, &p, &r->st);
    gtl_result_extra(r, "us_per_step", r->st.median * 1e3);
  }
  gtl_report_row(ctx, r);

  GTL_CUDA(cudaFree(d_logits));
  gtl_guarded_free(&g_idx);
  gtl_guarded_free(&g_w);
  GTL_CUDA(cudaFreeHost(p.h_logits));
  GTL_CUDA(cudaFreeHost(p.h_idx));
  GTL_CUDA(cudaFreeHost(p.h_w));
  return rc;
}

// main() of both variants: parse, device, seeded inputs (all tokens at once), reference,
// then per T: poison, validated run, validate, time, row; the JSON line for the headline T.
static int router_main(int argc, char **argv, const char *variant, const char *strategy) {
  int64_t T = -1, norm = 1;
  GtlOpt opts[] = {
      {"T", GTL_OPT_INT, &T, "tokens per step, 1..1048576 (default: rows for 1, 8, 64, 256; "
                             "JSON line for 64)"},
      {"norm_topk_prob", GTL_OPT_INT, &norm,
       "1: renormalize the top_k weights (Qwen3-MoE, default); 0: raw softmax probabilities"}};
  GtlCtx ctx;
  gtl_parse(&ctx, "ch06", variant, argc, argv, opts, 2, 20, 500, GTL_L2_WARM);
  if (T != -1 && (T < 1 || T > (1 << 20)))
    gtl_usage_fail(&ctx, "--T needs 1..1048576, got %lld", (long long)T);
  if (norm != 0 && norm != 1)
    gtl_usage_fail(&ctx, "--norm_topk_prob needs 0 or 1, got %lld", (long long)norm);
  gtl_open(&ctx);
  int64_t Ts[4] = {1, 8, 64, 256}, T_head = 64;
  int n_T = 4;
  if (T != -1 || ctx.args.size != GTL_SIZE_DEFAULT) {
    T_head = T != -1 ? T : ctx.args.size == GTL_SIZE_SMALL ? 8 : 4096;
    Ts[0] = T_head;
    n_T = 1;
  }
  int64_t T_max = 0;
  for (int i = 0; i < n_T; i++) T_max = Ts[i] > T_max ? Ts[i] : T_max;
  const int64_t E = ROUTER_E, k = ROUTER_TOP_K;

  gtl_phase_push(GTL_PHASE_SETUP);
  float *h_x = (float *)malloc(sizeof(float) * (size_t)(T_max * E));
  int32_t *ref_idx = (int32_t *)malloc(sizeof(int32_t) * (size_t)(T_max * k));
  double *ref_w = (double *)malloc(sizeof(double) * (size_t)(T_max * k));
  router_fill_logits(h_x, T_max, E, k, ctx.args.seed);
  gtl_phase_pop();
  gtl_phase_push(GTL_PHASE_REFERENCE);
  router_cpu(h_x, T_max, E, k, (int)norm, ref_idx, ref_w);
  gtl_phase_pop();
  int64_t n_boundary, n_inside;
  router_ties(h_x, ref_idx, T_max, E, k, &n_boundary, &n_inside);

  char explain[768], notes[1536], rows[64] = "", workload[64];
  router_explain(explain, sizeof explain);
  for (int i = 0; i < n_T; i++)
    snprintf(rows + strlen(rows), sizeof rows - strlen(rows), "%s%lld", i ? ", " : "",
             (long long)Ts[i]);
  snprintf(workload, sizeof workload, "T%lld_E%lld_k%lld%s", (long long)T_head, (long long)E,
           (long long)k, norm ? "" : "_raw");
  RouterProblem head = {T_head, E, k, (int)norm, NULL, NULL, NULL, NULL, NULL, NULL};
  snprintf(notes, sizeof notes,
           "strategy: %s\n%s\n"
           "rows: T = %s (the first T tokens of one seeded set, logits U[-4,4) fp32); "
           "JSON line: T=%lld\n"
           "ties planted (exact fp32): in %lld of %lld tokens the k-th place ties with an "
           "expert left out; %lld have a tie inside the top_k\n"
           "roofline at T=%lld: %.1f KB, %.0f flops: %.3f us at the read ceiling; "
           "latency-bound, so the metric is us per step",
           strategy, explain, rows, (long long)T_head, (long long)n_boundary,
           (long long)T_max, (long long)n_inside, (long long)T_head, router_bytes(&head) / 1e3,
           router_flops(&head), router_bytes(&head) / (ctx.ceil.read_gbps * 1e3));
  gtl_report_header(&ctx, workload, notes);

  GtlResult r, r_head;
  gtl_result_init(&r_head, &ctx, "fp32", workload);
  char labels[4][32];
  double us[4] = {NAN, NAN, NAN, NAN};
  int rc = 0;
  for (int i = 0; i < n_T && rc == 0; i++) {
    rc = router_case(&ctx, Ts[i], (int)norm, h_x, ref_idx, ref_w, labels[i], sizeof labels[i], &r);
    if (rc == 0) us[i] = r.st.median * 1e3;
    if (rc != 0 || Ts[i] == T_head) r_head = r;
  }
  r_head.variant = ctx.variant;
  if (rc == 0 && n_T > 1) {
    static const char *keys[4] = {"us_per_step_t1", "us_per_step_t8", "us_per_step_t64",
                                  "us_per_step_t256"};
    for (int i = 0; i < n_T; i++) gtl_result_extra(&r_head, keys[i], us[i]);
  }
  if (rc == 0 && !ctx.args.json) {
    printf("# us per step (median):");
    for (int i = 0; i < n_T; i++) printf("%s T=%lld %.2f", i ? "," : "", (long long)Ts[i], us[i]);
    printf("\n");
  }
  rc = gtl_report_finish(&ctx, &r_head);

  free(h_x);
  free(ref_idx);
  free(ref_w);
  gtl_end(&ctx);
  return rc;
}
