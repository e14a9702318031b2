// permute_driver.cuh — ch07's problem, reference and driver, shared by baseline.cu and
// optimized.cu so that the two files differ only in their kernel and its launch. The
// optimized kernels themselves are in permute.cuh (kernels and launchers, for the lab).
//
// The problem: MoE dispatch. T tokens of hidden size D (bf16) each chose top_k of E
// experts. Grouped-GEMM experts want their input rows contiguous per expert, so the
// dispatch step permutes x into out[T·top_k][D], rows sorted by expert:
//     out[p][:] = x[src[p]][:]           for p in [0, T·top_k)      (gather form)
//     out[dst[t·k + j]][:] = x[t][:]     for t < T, j < top_k       (scatter form)
// src[] (the token behind each permuted row) and its inverse dst[] come from a counting
// sort by expert, done on the host here (ch15 does it on the device).
//
// Roofline: each x row is needed top_k times, but DRAM need only see it once:
//     bytes = T·D·2 (read x) + T·k·D·2 (write out) + T·k·4 (read src or dst);  flops = 0.
// Bound by the copy ceiling (bytes read + written per second, measured by ch02/ceilings).
//
// Two figures (common/bench.h): the metric is --l2=cold, one dispatch alone between two
// events after an L2 flush; beside it every kernel also gets a --l2=rotate row: dispatches
// back to back, each on the next of N copies of the inputs (x, src, dst; N × bytes >= 4 ×
// L2), as the kernel runs inside a decode step. --l2=rotate makes the rotated figure the
// metric; --l2=warm times neither copies nor flushes.
#pragma once
#include <cuda_bf16.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../common/gauntlet.h"

typedef struct {
  int64_t T, top_k, E, D;      // tokens, experts per token, experts, hidden size
  const __nv_bfloat16 *d_x;    // [T][D] tokens
  const int32_t *d_src;        // [T·top_k] token index of each permuted row
  const int32_t *d_dst;        // [T·top_k] permuted row of token t's j-th expert (t·k + j)
  __nv_bfloat16 *d_out;        // [T·top_k][D] rows grouped by expert
} PermuteProblem;

// One kernel a program offers. permute_main times every variant this GPU can run, in
// table order, one row each; the first one's result is the JSON line. --variant=NAME
// (offered when a program lists more than one) runs only that one, or waives (77) when
// the GPU lacks what it needs.
#define PERMUTE_MAX_VARIANTS 8  // kernels one program may list

typedef struct {
  const char *name;      // row label; the JSON "variant" when the program has several
  const char *strategy;  // one line of the report header
  int min_cc;            // compute capability the kernel needs, major·10 + minor (0: any)
  void (*launch)(const PermuteProblem *p, cudaStream_t s);  // enqueue one dispatch on s
} PermuteVariant;

static double permute_bytes(const PermuteProblem *p) {
  return (double)p->T * p->D * 2 + (double)p->T * p->top_k * p->D * 2 +
         (double)p->T * p->top_k * 4;
}

// Routing: token t picks top_k distinct experts (seeded), then a stable counting sort by
// expert gives src[] and its inverse dst[]. Writes the per-expert counts into counts[E].
static void permute_route(int64_t T, int64_t top_k, int64_t E, uint64_t seed, int32_t *src,
                          int32_t *dst, int32_t *counts) {
  int32_t *expert = (int32_t *)malloc(sizeof(int32_t) * T * top_k);
  for (int64_t t = 0; t < T; t++)
    for (int64_t j = 0; j < top_k; j++) {
      int32_t e;
      int dup;
      uint64_t draw = 0;
      do {  // redraw until distinct from the token's earlier choices
        e = (int32_t)gtl_uniform_u32(seed ^ 0x5EEDull, (uint64_t)(t * 64 + j) * 1024 + draw++,
                                     (uint32_t)E);
        dup = 0;
        for (int64_t i = 0; i < j; i++) dup |= expert[t * top_k + i] == e;
      } while (dup);
      expert[t * top_k + j] = e;
    }
  memset(counts, 0, sizeof(int32_t) * E);
  for (int64_t i = 0; i < T * top_k; i++) counts[expert[i]]++;
  int64_t *offset = (int64_t *)calloc((size_t)E + 1, sizeof(int64_t));
  for (int64_t e = 0; e < E; e++) offset[e + 1] = offset[e] + counts[e];
  for (int64_t i = 0; i < T * top_k; i++) {
    int64_t p = offset[expert[i]]++;
    src[p] = (int32_t)(i / top_k);
    dst[i] = (int32_t)p;
  }
  free(offset);
  free(expert);
}

typedef struct {
  const PermuteProblem *p;
  const PermuteVariant *v;
} PermuteRun;

static void permute_run(void *user, cudaStream_t s) {
  const PermuteRun *r = (const PermuteRun *)user;
  r->v->launch(r->p, s);
}

// --l2=rotate: n copies of the read-only inputs, copy i one region holding x, src, dst;
// every copy writes the same out.
typedef struct {
  int n;                   // copies: gtl_rotate_copies_for(bytes of one region)
  void *base;              // n regions back to back
  PermuteProblem *p;       // [n] problems, p[i] reading region i
  const PermuteVariant *v; // the kernel being timed
} PermuteRotate;

static void permute_rotate_setup(GtlCtx *ctx, const PermuteProblem *p, PermuteRotate *rot) {
  const size_t x_bytes = (size_t)p->T * p->D * 2, i_bytes = (size_t)p->T * p->top_k * 4;
  const size_t x_pad = (x_bytes + 255) / 256 * 256, i_pad = (i_bytes + 255) / 256 * 256;
  const size_t stride = x_pad + 2 * i_pad;
  rot->n = gtl_rotate_copies_for(ctx, stride);
  rot->base = gtl_malloc(stride * rot->n, "--l2=rotate input copies (>= 4x L2)");
  rot->p = (PermuteProblem *)malloc(sizeof(PermuteProblem) * rot->n);
  if (!rot->p) {
    fprintf(stderr, "ch07: host out of memory for %d input copies\n", rot->n);
    exit(GTL_EXIT_RUNTIME);
  }
  for (int c = 0; c < rot->n; c++) {
    char *r = (char *)rot->base + stride * c;
    GTL_CUDA(cudaMemcpyAsync(r, p->d_x, x_bytes, cudaMemcpyDeviceToDevice, ctx->stream));
    GTL_CUDA(cudaMemcpyAsync(r + x_pad, p->d_src, i_bytes, cudaMemcpyDeviceToDevice,
                             ctx->stream));
    GTL_CUDA(cudaMemcpyAsync(r + x_pad + i_pad, p->d_dst, i_bytes, cudaMemcpyDeviceToDevice,
                             ctx->stream));
    rot->p[c] = *p;
    rot->p[c].d_x = (const __nv_bfloat16 *)r;
    rot->p[c].d_src = (const int32_t *)(r + x_pad);
    rot->p[c].d_dst = (const int32_t *)(r + x_pad + i_pad);
  }
  GTL_CUDA(cudaStreamSynchronize(ctx->stream));
}

static void permute_rotate_run(void *user, int copy, cudaStream_t s) {
  const PermuteRotate *r = (const PermuteRotate *)user;
  r->v->launch(&r->p[copy], s);
}

// Poison out, run the kernel once on problem q, compare with the reference (exact: a copy
// must be bit for bit) and check the guard bytes around out.
static void permute_check(const PermuteProblem *q, const PermuteVariant *v, GtlGuarded *g_out,
                          uint16_t *h_out, float *out, const double *ref, cudaStream_t s,
                          GtlErr *err) {
  const size_t n_out = (size_t)q->T * q->top_k * q->D;
  gtl_poison(q->d_out, n_out * 2, s);
  v->launch(q, s);
  GTL_CUDA(cudaStreamSynchronize(s));
  GTL_CUDA(cudaMemcpy(h_out, q->d_out, n_out * 2, cudaMemcpyDeviceToHost));
  gtl_bf16_to_f32_array(h_out, out, n_out);
  GtlTol exact = {0, 0, 0};  // a copy is exact: every bit must match
  gtl_compare(out, ref, n_out, exact, err);
  size_t bad_guard = gtl_guarded_check(g_out);
  if (bad_guard) {
    fprintf(stderr, "ch07: %s: %zu guard bytes around out were overwritten\n", v->name,
            bad_guard);
    err->pass = 0;
  }
}

// The --variant help line, naming the kernels this program offers ("…: bulk, warp").
#define PERMUTE_VARIANT_HELP "run only this kernel of the program: "
static const char *permute_variant_help(const PermuteVariant *v, int n) {
  static char buf[256];
  size_t o = (size_t)snprintf(buf, sizeof buf, "%s", PERMUTE_VARIANT_HELP);
  for (int i = 0; i < n && o < sizeof buf; i++)
    o += (size_t)snprintf(buf + o, sizeof buf - o, "%s%s", i ? ", " : "", v[i].name);
  return buf;
}

// main() of both programs: parse, device, inputs, reference; then per variant: poison,
// validated run, validate (exact: a copy must be bit for bit), time, report row.
static int permute_main(int argc, char **argv, const char *program,
                        const PermuteVariant *variants, int n_variants) {
  int64_t T = 4096, top_k = 4, E = 32, D = 2880;
  const char *vname = NULL;  // NULL: every variant this GPU can run
  GtlOpt opts[] = {{"T", GTL_OPT_INT, &T, "tokens (default 4096)"},
                   {"top_k", GTL_OPT_INT, &top_k, "experts per token (default 4)"},
                   {"E", GTL_OPT_INT, &E, "experts (default 32)"},
                   {"D", GTL_OPT_INT, &D, "hidden size, a multiple of 8 (default 2880)"},
                   {"variant", GTL_OPT_STR, &vname, permute_variant_help(variants, n_variants)}};
  GtlCtx ctx;
  gtl_allow_rotate();  // this driver keeps input copies (PermuteRotate)
  gtl_parse(&ctx, "ch07", program, argc, argv, opts, n_variants > 1 ? 5 : 4, 10, 200,
            GTL_L2_COLD);
  const PermuteVariant *only = NULL;
  for (int i = 0; vname && i < n_variants; i++)
    if (!strcmp(variants[i].name, vname)) only = &variants[i];
  if (vname && !only)
    gtl_usage_fail(&ctx, "unknown --variant=%s (this program has: %s)", vname,
                   permute_variant_help(variants, n_variants) + strlen(PERMUTE_VARIANT_HELP));
  if (ctx.args.size == GTL_SIZE_SMALL) T = 256;
  if (ctx.args.size == GTL_SIZE_LARGE) T = 16384;
  if (T < 1 || T > (1 << 22) || top_k < 1 || E < top_k || E > 4096 || D < 8 || D % 8 ||
      D > (1 << 16))
    gtl_usage_fail(&ctx, "need 1 <= T <= 4194304, 1 <= top_k <= E <= 4096, "
                         "8 <= D <= 65536 with D a multiple of 8");
  gtl_open(&ctx);
  const int cc = ctx.dev.cc_major * 10 + ctx.dev.cc_minor;
  const PermuteVariant *run_v[PERMUTE_MAX_VARIANTS];
  int n_run = 0;
  char why[512] = "";
  for (int i = 0; i < n_variants && n_run < PERMUTE_MAX_VARIANTS; i++) {
    const PermuteVariant *v = &variants[i];
    if (only && v != only) continue;
    if (cc >= v->min_cc) {
      run_v[n_run++] = v;
    } else if (!why[0]) {
      snprintf(why, sizeof why, "variant %s needs compute capability %d.%d or newer; found %s, "
               "CC %d.%d", v->name, v->min_cc / 10, v->min_cc % 10, ctx.dev.name,
               ctx.dev.cc_major, ctx.dev.cc_minor);
    }
  }
  gtl_require(&ctx, n_run > 0, why);
  char workload[128];
  snprintf(workload, sizeof workload, "T%lld_k%lld_E%lld_D%lld", (long long)T,
           (long long)top_k, (long long)E, (long long)D);

  PermuteProblem p = {T, top_k, E, D, NULL, NULL, NULL, NULL};
  const size_t n_in = (size_t)T * D, rows = (size_t)T * top_k, n_out = rows * D;
  gtl_phase_push(GTL_PHASE_SETUP);
  __nv_bfloat16 *d_x = (__nv_bfloat16 *)gtl_malloc(n_in * 2, "x [T][D] bf16");
  int32_t *d_src = (int32_t *)gtl_malloc(rows * 4, "src [T*top_k] int32");
  int32_t *d_dst = (int32_t *)gtl_malloc(rows * 4, "dst [T*top_k] int32");
  GtlGuarded g_out;
  p.d_out = (__nv_bfloat16 *)gtl_guarded_alloc(&g_out, n_out * 2, "out [T*top_k][D] bf16");
  gtl_fill_uniform(d_x, GTL_BF16, n_in, ctx.args.seed, -1.0f, 1.0f, ctx.stream);
  int32_t *h_src = (int32_t *)malloc(rows * 4), *h_dst = (int32_t *)malloc(rows * 4);
  int32_t *counts = (int32_t *)malloc(E * 4);
  permute_route(T, top_k, E, ctx.args.seed, h_src, h_dst, counts);
  GTL_CUDA(cudaMemcpy(d_src, h_src, rows * 4, cudaMemcpyHostToDevice));
  GTL_CUDA(cudaMemcpy(d_dst, h_dst, rows * 4, cudaMemcpyHostToDevice));
  p.d_x = d_x;
  p.d_src = d_src;
  p.d_dst = d_dst;
  gtl_phase_pop();

  int32_t cmin = counts[0], cmax = counts[0];
  for (int64_t e = 1; e < E; e++) {
    cmin = counts[e] < cmin ? counts[e] : cmin;
    cmax = counts[e] > cmax ? counts[e] : cmax;
  }
  char notes[1024];
  int o = 0;
  for (int i = 0; i < n_run; i++)
    o += snprintf(notes + o, sizeof notes - o, "%s%s: %s\n", n_variants > 1 ? "kernel " : "",
                  n_variants > 1 ? run_v[i]->name : "strategy", run_v[i]->strategy);
  snprintf(notes + o, sizeof notes - o,
           "rows per expert: min %d, max %d (uniform routing)\n"
           "roofline: %.1f MB per iteration (x once + out + one index array), 0 flops; "
           "bound by copy",
           cmin, cmax, permute_bytes(&p) / 1e6);
  gtl_report_header(&ctx, workload, notes);

  // Reference: the gather on the host from the same bf16 values (exact).
  double *ref = NULL;
  uint16_t *h_out = NULL;
  float *out = NULL;
  if (ctx.args.verify) {
    gtl_phase_push(GTL_PHASE_REFERENCE);
    uint16_t *h_x = (uint16_t *)malloc(n_in * 2);
    h_out = (uint16_t *)malloc(n_out * 2);
    out = (float *)malloc(n_out * sizeof(float));
    ref = (double *)malloc(n_out * sizeof(double));
    GTL_CUDA(cudaStreamSynchronize(ctx.stream));  // x is filled on the (non-blocking) stream
    GTL_CUDA(cudaMemcpy(h_x, d_x, n_in * 2, cudaMemcpyDeviceToHost));
    for (size_t row = 0; row < rows; row++)
      for (int64_t d = 0; d < D; d++)
        ref[row * D + d] = gtl_bf16_to_f32(h_x[(size_t)h_src[row] * D + d]);
    free(h_x);
    gtl_phase_pop();
  }

  // Input copies for the rotated figure: a row beside each cold one, or the metric under
  // --l2=rotate; none under --l2=warm.
  const int rotate_only = ctx.args.l2 == GTL_L2_ROTATE, rotate_too = ctx.args.l2 == GTL_L2_COLD;
  PermuteRotate rot;
  memset(&rot, 0, sizeof rot);
  if (rotate_only || rotate_too) {
    gtl_phase_push(GTL_PHASE_SETUP);
    permute_rotate_setup(&ctx, &p, &rot);
    gtl_phase_pop();
  }

  GtlResult res[PERMUTE_MAX_VARIANTS];
  GtlStats rot_st[PERMUTE_MAX_VARIANTS];
  memset(rot_st, 0, sizeof rot_st);
  int rc = 0;
  for (int i = 0; i < n_run; i++) {
    GtlResult *r = &res[i];
    gtl_result_init(r, &ctx, "bf16", workload);
    if (n_variants > 1) r->variant = run_v[i]->name;
    r->bytes = permute_bytes(&p);
    r->flops = 0;
    r->bound = GTL_BOUND_COPY;
    r->ref = "host_gather";
    PermuteRun pr = {&p, run_v[i]};
    rot.v = run_v[i];
    if (ctx.args.verify) {
      gtl_phase_push(GTL_PHASE_VALIDATE);
      permute_check(&p, run_v[i], &g_out, h_out, out, ref, ctx.stream, &r->err);
      if (r->err.pass && rot.n)  // the last input copy: same values, other addresses
        permute_check(&rot.p[rot.n - 1], run_v[i], &g_out, h_out, out, ref, ctx.stream,
                      &r->err);
      r->validated = 1;
      gtl_phase_pop();
      if (!r->err.pass) {  // never time a wrong kernel
        gtl_report_row(&ctx, r);
        rc = gtl_report_finish(&ctx, r);
        break;
      }
    }
    if (rotate_only) gtl_bench_rotate(&ctx, permute_rotate_run, &rot, rot.n, &r->st);
    else gtl_bench(&ctx, permute_run, &pr, &r->st);
    gtl_report_row(&ctx, r);
    if (rotate_too) {  // the rotated row beside the cold one
      GtlResult rr = *r;
      char name[64];
      snprintf(name, sizeof name, "%s_rotate", n_variants > 1 ? run_v[i]->name : program);
      rr.variant = name;
      gtl_bench_rotate(&ctx, permute_rotate_run, &rot, rot.n, &rr.st);
      gtl_report_row(&ctx, &rr);
      rot_st[i] = rr.st;
      if (i == 0) {
        gtl_result_extra(r, "rotate_median_ms", rr.st.median);
        gtl_result_extra(r, "rotate_p95_ms", rr.st.p95);
        gtl_result_extra(r, "pct_of_ceiling_rotate", gtl_result_pct(&rr, &ctx.ceil));
      }
    }
  }
  if (rc == 0 && rotate_too && !ctx.args.json)
    for (int i = 0; i < n_run; i++)
      printf("# %s: %.4f ms alone (L2 flushed), %.4f ms back to back on rotated inputs (%d "
             "copies, %d launches per event pair)\n",
             run_v[i]->name, res[i].st.median, rot_st[i].median, rot.n, gtl_rotate_k(rot.n));
  if (rc == 0) rc = gtl_report_finish(&ctx, &res[0]);
  free(out);
  free(ref);
  free(h_out);

  free(h_src);
  free(h_dst);
  free(counts);
  GTL_CUDA(cudaFree(d_x));
  GTL_CUDA(cudaFree(d_src));
  GTL_CUDA(cudaFree(d_dst));
  gtl_guarded_free(&g_out);
  if (rot.base) GTL_CUDA(cudaFree(rot.base));
  free(rot.p);
  gtl_end(&ctx);
  return rc;
}
