// norm_quant.cuh — ch14's problem, reference, validation and driver, shared by baseline.cu
// and optimized.cu so that the two differ only in their kernels and their launch.
//
// The problem: the seam between two sublayers of a transformer block feeding an FP8 GEMM.
// For T tokens of hidden size D (gpt-oss-20b: D = 2880, RMSNorm eps 1e-5):
//     h = x + residual            (bf16, the new residual stream, written out)
//     y = RMSNorm(h) · w          (fp32 math, bf16 rows)
//     q, scale = per-token FP8 E4M3 quantization of y (scale = amax / 448, one per row)
// exactly as ch14/fused_norm.cuh defines them.
//
// Roofline (the same byte count for both programs, so their GB/s compare as times do):
// the least any implementation must move is read x, residual and w, write h, q and scale:
//     bytes = 2·T·D (x) + 2·T·D (residual) + 2·D (w) + 2·T·D (h) + T·D (q) + 4·T (scale)
//           = 82.6 MB at T = 4096, D = 2880;
//     flops ~ 6·T·D (add, square-accumulate, two multiplies for the norm, one to quantize).
// 0.9 FLOP per byte: bound by bandwidth, reported against the copy ceiling (bytes read +
// written per second). The unfused pipeline moves 13 bytes per element instead of 7 (h
// read back, y written and read back), L2 hits aside.
#pragma once
#include <cuda_bf16.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../common/gauntlet.h"
#include "fused_norm.cuh"

typedef struct {
  int64_t T, D;                // tokens, hidden size (D % 8 == 0)
  float eps;                   // RMSNorm epsilon
  const __nv_bfloat16 *d_x;    // [T][D] sublayer output
  const __nv_bfloat16 *d_res;  // [T][D] residual stream in
  const __nv_bfloat16 *d_w;    // [D] RMSNorm weight
  __nv_bfloat16 *d_h;          // [T][D] residual stream out (x + residual)
  uint8_t *d_q;                // [T][D] fp8 e4m3 rows
  float *d_scale;              // [T] fp32 per-token scales
  __nv_bfloat16 *d_y;          // [T][D] normalized rows (the unfused pipeline's scratch; NULL when unused)
} NormQuantProblem;

// Launcher each program defines: enqueue the whole add + RMSNorm + quantize on stream s.
void norm_quant_launch(const NormQuantProblem *p, cudaStream_t s);

static double norm_quant_bytes(const NormQuantProblem *p) {
  return 7.0 * p->T * p->D + 2.0 * p->D + 4.0 * p->T;
}
static double norm_quant_flops(const NormQuantProblem *p) { return 6.0 * p->T * p->D; }

// Reference in double from the same bf16 inputs (h_x, h_res [T][D], h_w [D]):
//   h_ref = x + residual (exact in double); the norm reads h as stored, bf16 (the residual
//   stream's dtype), and keeps y in double; scale_ref = amax|y| / 448; the fp8 codes the
//   reference would write: E4M3 round-to-nearest-even of y / scale_ref (code_ref).
static void norm_quant_cpu(const uint16_t *h_x, const uint16_t *h_res, const uint16_t *h_w,
                           int64_t T, int64_t D, double eps, double *h_ref, double *scale_ref,
                           uint8_t *code_ref, double *y_ref) {
  for (int64_t t = 0; t < T; t++) {
    const size_t o = (size_t)t * D;
    double ss = 0, amax = 0;
    for (int64_t d = 0; d < D; d++) {
      const float a = gtl_bf16_to_f32(h_x[o + d]), b = gtl_bf16_to_f32(h_res[o + d]);
      h_ref[o + d] = (double)a + (double)b;
      const double hb = gtl_bf16_to_f32(gtl_f32_to_bf16(a + b));  // fp32 sum, then bf16
      y_ref[o + d] = hb;
      ss += hb * hb;
    }
    const double rinv = 1.0 / sqrt(ss / (double)D + eps);
    for (int64_t d = 0; d < D; d++) {
      y_ref[o + d] *= rinv * gtl_bf16_to_f32(h_w[d]);
      amax = fmax(amax, fabs(y_ref[o + d]));
    }
    scale_ref[t] = amax / 448.0;
    for (int64_t d = 0; d < D; d++)
      code_ref[o + d] = gtl_f32_to_fp8e4m3(amax > 0 ? (float)(y_ref[o + d] * 448.0 / amax) : 0.0f);
  }
}

// Position of an E4M3 code on the number line: codes of one sign are ordered like their
// magnitudes, so two codes one apart are neighbouring fp8 values (±0 both map to 0).
static int fp8_ordinal(uint8_t c) { return (c & 0x80) ? -(int)(c & 0x7F) : (int)c; }

// The fp8 rule: every code within one E4M3 step of code_ref, none NaN (0x7F/0xFF, which
// the 0xFF poison leaves behind). One step is allowed because the kernel quantizes y
// after rounding it to bf16 (relative error <= 2^-9) with an fp32 scale, while the
// reference divides the double y: a value within 2^-9 of a rounding midpoint between two
// E4M3 neighbours (spacing 2^-3 relative) may land on either side. e->rel_l2 compares the
// decoded codes with the decoded code_ref; n_bad counts codes further than one step;
// *one_off counts codes exactly one step away.
static int fp8_codes_check(const uint8_t *out, const uint8_t *code_ref, size_t n, GtlErr *e,
                           size_t *one_off) {
  memset(e, 0, sizeof *e);
  e->tol_rel_l2 = gtl_tol_for(GTL_FP8E4M3).rel_l2;
  double num = 0, den = 0;
  int worst = -1;
  *one_off = 0;
  for (size_t i = 0; i < n; i++) {
    const double o = gtl_fp8e4m3_to_f32(out[i]), r = gtl_fp8e4m3_to_f32(code_ref[i]);
    const int nan = (out[i] & 0x7F) == 0x7F;
    int dist = abs(fp8_ordinal(out[i]) - fp8_ordinal(code_ref[i]));
    if (nan) dist = 1 << 20, e->n_nan++;
    if (dist == 1) (*one_off)++;
    if (dist > 1) e->n_bad++;
    if (dist > worst) worst = dist, e->worst = i, e->worst_out = o, e->worst_ref = r;
    num += (o - r) * (o - r);
    den += r * r;
    if (nan || fabs(o - r) > e->max_abs) e->max_abs = nan ? NAN : fabs(o - r);
  }
  e->rel_l2 = e->n_nan ? NAN : (den > 0 ? sqrt(num / den) : (num > 0 ? INFINITY : 0));
  e->pass = n > 0 && e->n_bad == 0 && e->n_nan == 0 && e->rel_l2 <= e->tol_rel_l2;
  return e->pass;
}

typedef struct {
  const NormQuantProblem *p;
} NormQuantRun;

static void norm_quant_run(void *user, cudaStream_t s) {
  norm_quant_launch(((const NormQuantRun *)user)->p, s);
}

// --l2=rotate: n copies of the read-only inputs x, residual and w, copy i one region of
// `stride` bytes (n = gtl_rotate_copies_for(stride): n regions are >= 4x the L2), and one
// problem per copy reading its region; the outputs h, q, scale (and y) are shared.
typedef struct {
  int n;
  size_t stride;
  char *base;
  NormQuantProblem *p;  // [n]
} NormQuantCopies;

static void norm_quant_copies_setup(GtlCtx *ctx, const NormQuantProblem *p, NormQuantCopies *c) {
  const size_t xb = (size_t)p->T * p->D * 2, xa = (xb + 255) / 256 * 256, wb = (size_t)p->D * 2;
  c->stride = 2 * xa + (wb + 255) / 256 * 256;
  c->n = gtl_rotate_copies_for(ctx, c->stride);
  c->base = (char *)gtl_malloc(c->stride * c->n, "--l2=rotate input copies (>= 4x L2)");
  c->p = (NormQuantProblem *)malloc(sizeof(NormQuantProblem) * c->n);
  if (!c->p) {
    fprintf(stderr, "ch14: host out of memory for %d input copies\n", c->n);
    exit(GTL_EXIT_RUNTIME);
  }
  for (int i = 0; i < c->n; i++) {
    char *r = c->base + c->stride * i;
    GTL_CUDA(cudaMemcpyAsync(r, p->d_x, xb, cudaMemcpyDeviceToDevice, ctx->stream));
    GTL_CUDA(cudaMemcpyAsync(r + xa, p->d_res, xb, cudaMemcpyDeviceToDevice, ctx->stream));
    GTL_CUDA(cudaMemcpyAsync(r + 2 * xa, p->d_w, wb, cudaMemcpyDeviceToDevice, ctx->stream));
    c->p[i] = *p;
    c->p[i].d_x = (const __nv_bfloat16 *)r;
    c->p[i].d_res = (const __nv_bfloat16 *)(r + xa);
    c->p[i].d_w = (const __nv_bfloat16 *)(r + 2 * xa);
  }
  GTL_CUDA(cudaStreamSynchronize(ctx->stream));
}
static void norm_quant_rotate_run(void *user, int copy, cudaStream_t s) {
  norm_quant_launch(&((const NormQuantCopies *)user)->p[copy], s);
}
static void norm_quant_copies_free(NormQuantCopies *c) {
  if (c->base) GTL_CUDA(cudaFree(c->base));
  free(c->p);
  memset(c, 0, sizeof *c);
}

// main() of both programs: parse, device, inputs, reference, poison, one validated run
// (h, scales and fp8 codes checked), timed runs, report. n_kernels: kernels per iteration
// (for the header); needs_y: allocate the normalized-row scratch d_y.
static int norm_quant_main(int argc, char **argv, const char *program, const char *strategy,
                           int n_kernels, int needs_y) {
  int64_t T = 4096, D = 2880;
  GtlOpt opts[] = {{"T", GTL_OPT_INT, &T, "tokens (default 4096; 64 is a decode batch)"},
                   {"D", GTL_OPT_INT, &D, "hidden size, a multiple of 8 (default 2880)"}};
  GtlCtx ctx;
  gtl_allow_rotate();  // keeps copies of x, residual and w (NormQuantCopies)
  gtl_parse(&ctx, "ch14", program, argc, argv, opts, 2, 10, 200, GTL_L2_COLD);
  if (ctx.args.size == GTL_SIZE_SMALL) T = 64;
  if (ctx.args.size == GTL_SIZE_LARGE) T = 16384;
  if (T < 1 || T > (1 << 20) || D < 8 || D % 8 || D > 32768)
    gtl_usage_fail(&ctx, "need 1 <= T <= 1048576 and 8 <= D <= 32768 with D a multiple of 8");
  gtl_open(&ctx);
  char workload[128];
  snprintf(workload, sizeof workload, "T%lld_D%lld", (long long)T, (long long)D);

  NormQuantProblem p;
  memset(&p, 0, sizeof p);
  p.T = T, p.D = D, p.eps = 1e-5f;
  const size_t n = (size_t)T * D;
  gtl_phase_push(GTL_PHASE_SETUP);
  __nv_bfloat16 *d_x = (__nv_bfloat16 *)gtl_malloc(n * 2, "x [T][D] bf16");
  __nv_bfloat16 *d_res = (__nv_bfloat16 *)gtl_malloc(n * 2, "residual [T][D] bf16");
  __nv_bfloat16 *d_w = (__nv_bfloat16 *)gtl_malloc(D * 2, "w [D] bf16");
  GtlGuarded g_h, g_q, g_scale;
  p.d_h = (__nv_bfloat16 *)gtl_guarded_alloc(&g_h, n * 2, "h [T][D] bf16");
  p.d_q = (uint8_t *)gtl_guarded_alloc(&g_q, n, "q [T][D] fp8");
  p.d_scale = (float *)gtl_guarded_alloc(&g_scale, T * 4, "scale [T] fp32");
  if (needs_y) p.d_y = (__nv_bfloat16 *)gtl_malloc(n * 2, "y [T][D] bf16 (scratch)");
  // A sublayer output near unit scale, a residual stream a few times larger, a weight
  // around 1: every row has its own RMS and its own amax.
  gtl_fill_uniform(d_x, GTL_BF16, n, ctx.args.seed, -1.0f, 1.0f, ctx.stream);
  gtl_fill_uniform(d_res, GTL_BF16, n, ctx.args.seed + 1, -4.0f, 4.0f, ctx.stream);
  gtl_fill_uniform(d_w, GTL_BF16, D, ctx.args.seed + 2, 0.25f, 2.0f, ctx.stream);
  GTL_CUDA(cudaStreamSynchronize(ctx.stream));
  p.d_x = d_x, p.d_res = d_res, p.d_w = d_w;
  // Input copies for the rotated figure: beside the cold metric, or as the metric under
  // --l2=rotate; none under --l2=warm.
  const int rotate_all = ctx.args.l2 == GTL_L2_ROTATE, rotate_beside = ctx.args.l2 == GTL_L2_COLD;
  NormQuantCopies cp;
  memset(&cp, 0, sizeof cp);
  if (rotate_all || rotate_beside) norm_quant_copies_setup(&ctx, &p, &cp);
  gtl_phase_pop();

  char notes[1024];
  snprintf(notes, sizeof notes,
           "strategy: %s (%d kernel%s per iteration)\n"
           "h = x + residual (bf16), y = RMSNorm(h) * w (eps %.0e, fp32 math), fp8 e4m3 per "
           "token: scale = amax/448\n"
           "roofline: %.1f MB per iteration (read x, residual, w; write h, q, scales: the "
           "fused minimum, used for both programs), %.1f MFLOP; bound by copy",
           strategy, n_kernels, n_kernels > 1 ? "s" : "", (double)p.eps,
           norm_quant_bytes(&p) / 1e6, norm_quant_flops(&p) / 1e6);
  gtl_report_header(&ctx, workload, notes);
  if (cp.n && !ctx.args.json)
    printf("# rotated figure: %d copies of x, residual and w (%.1f MB each), %d iterations back "
           "to back per event pair, no flush\n", cp.n, cp.stride / 1e6, gtl_rotate_k(cp.n));

  GtlResult r;
  gtl_result_init(&r, &ctx, "bf16", workload);
  r.bytes = norm_quant_bytes(&p);
  r.flops = norm_quant_flops(&p);
  r.bound = GTL_BOUND_COPY;
  r.ref = "cpu_double";
  if (ctx.args.verify) {
    gtl_phase_push(GTL_PHASE_REFERENCE);
    uint16_t *h_x = (uint16_t *)malloc(n * 2), *h_res = (uint16_t *)malloc(n * 2),
             *h_w = (uint16_t *)malloc(D * 2), *h_h = (uint16_t *)malloc(n * 2);
    double *h_ref = (double *)malloc(n * sizeof(double)), *y_ref = (double *)malloc(n * 8);
    double *scale_ref = (double *)malloc(T * sizeof(double));
    uint8_t *code_ref = (uint8_t *)malloc(n), *h_q = (uint8_t *)malloc(n);
    float *out = (float *)malloc(n * sizeof(float));
    if (!h_x || !h_res || !h_w || !h_h || !h_ref || !y_ref || !scale_ref || !code_ref ||
        !h_q || !out) {
      fprintf(stderr, "ch14: host out of memory for the reference (T=%lld, D=%lld)\n",
              (long long)T, (long long)D);
      exit(GTL_EXIT_RUNTIME);
    }
    GTL_CUDA(cudaMemcpy(h_x, d_x, n * 2, cudaMemcpyDeviceToHost));
    GTL_CUDA(cudaMemcpy(h_res, d_res, n * 2, cudaMemcpyDeviceToHost));
    GTL_CUDA(cudaMemcpy(h_w, d_w, D * 2, cudaMemcpyDeviceToHost));
    norm_quant_cpu(h_x, h_res, h_w, T, D, p.eps, h_ref, scale_ref, code_ref, y_ref);
    gtl_phase_pop();

    gtl_phase_push(GTL_PHASE_VALIDATE);
    gtl_poison(p.d_h, n * 2, ctx.stream);
    gtl_poison(p.d_q, n, ctx.stream);
    gtl_poison(p.d_scale, T * 4, ctx.stream);
    if (p.d_y) gtl_poison(p.d_y, n * 2, ctx.stream);
    norm_quant_launch(&p, ctx.stream);
    GTL_CUDA(cudaStreamSynchronize(ctx.stream));
    GTL_CUDA(cudaMemcpy(h_h, p.d_h, n * 2, cudaMemcpyDeviceToHost));
    GTL_CUDA(cudaMemcpy(h_q, p.d_q, n, cudaMemcpyDeviceToHost));
    float *h_scale = (float *)malloc(T * 4);
    GTL_CUDA(cudaMemcpy(h_scale, p.d_scale, T * 4, cudaMemcpyDeviceToHost));

    // h: one bf16 rounding of an exact sum; scales: amax of bf16-rounded y over 448 (the
    // bf16 rounding of y moves amax by at most 2^-9 relative) — both at bf16 tolerance.
    GtlErr e_h, e_s, e_q, e_dq;
    gtl_bf16_to_f32_array(h_h, out, n);
    gtl_compare(out, h_ref, n, gtl_tol_for(GTL_BF16), &e_h);
    gtl_compare(h_scale, scale_ref, (size_t)T, gtl_tol_for(GTL_BF16), &e_s);
    size_t one_off = 0;
    fp8_codes_check(h_q, code_ref, n, &e_q, &one_off);
    // Informative: how far q · scale (the dequantized rows) is from the double y.
    for (size_t i = 0; i < n; i++)
      out[i] = gtl_fp8e4m3_to_f32(h_q[i]) * h_scale[i / (size_t)D];
    gtl_compare(out, y_ref, n, gtl_tol_for(GTL_FP8E4M3), &e_dq);
    const size_t bad_guard =
        gtl_guarded_check(&g_h) + gtl_guarded_check(&g_q) + gtl_guarded_check(&g_scale);
    if (!ctx.args.json) {
      gtl_err_print(stdout, &e_h, "h (residual out, bf16)");
      gtl_err_print(stdout, &e_s, "scale (fp32, bf16 tolerance)");
      gtl_err_print(stdout, &e_q, "q (fp8 codes, within one step of the reference's)");
      printf("# fp8 codes one step from the reference's: %zu of %zu (%.4f%%); q*scale vs "
             "double y: rel_l2 %.3e (the quantization error itself, not a check)\n",
             one_off, n, 100.0 * one_off / n, e_dq.rel_l2);
    }
    if (bad_guard) fprintf(stderr, "ch14: %zu guard bytes around h, q or scale overwritten\n",
                           bad_guard);
    r.err = e_q;  // the row's error columns: the fp8 output, the one the next GEMM reads
    r.err.pass = e_h.pass && e_s.pass && e_q.pass && !bad_guard;
    if (r.err.pass && cp.n) {  // the last input copy must give the same bytes
      uint16_t *c_h = (uint16_t *)malloc(n * 2);
      uint8_t *c_q = (uint8_t *)malloc(n);
      float *c_s = (float *)malloc(T * 4);
      if (!c_h || !c_q || !c_s) {
        fprintf(stderr, "ch14: host out of memory for the copy check\n");
        exit(GTL_EXIT_RUNTIME);
      }
      gtl_poison(p.d_h, n * 2, ctx.stream);
      gtl_poison(p.d_q, n, ctx.stream);
      gtl_poison(p.d_scale, T * 4, ctx.stream);
      norm_quant_launch(&cp.p[cp.n - 1], ctx.stream);
      GTL_CUDA(cudaStreamSynchronize(ctx.stream));
      GTL_CUDA(cudaMemcpy(c_h, p.d_h, n * 2, cudaMemcpyDeviceToHost));
      GTL_CUDA(cudaMemcpy(c_q, p.d_q, n, cudaMemcpyDeviceToHost));
      GTL_CUDA(cudaMemcpy(c_s, p.d_scale, T * 4, cudaMemcpyDeviceToHost));
      const int same = !memcmp(c_h, h_h, n * 2) && !memcmp(c_q, h_q, n) &&
                       !memcmp(c_s, h_scale, T * 4) && !gtl_guarded_check(&g_h) &&
                       !gtl_guarded_check(&g_q) && !gtl_guarded_check(&g_scale);
      if (!ctx.args.json)
        printf("# validate the last input copy (--l2=rotate): h, q and scales %s\n",
               same ? "identical -> PASS" : "differ -> FAIL");
      if (!same) r.err.pass = 0;
      free(c_h), free(c_q), free(c_s);
    }
    r.validated = 1;
    gtl_result_extra(&r, "h_rel_l2", e_h.rel_l2);
    gtl_result_extra(&r, "scale_rel_l2", e_s.rel_l2);
    gtl_result_extra(&r, "fp8_codes_one_off", (double)one_off);
    gtl_result_extra(&r, "dequant_rel_l2", e_dq.rel_l2);
    free(h_x), free(h_res), free(h_w), free(h_h), free(h_ref), free(y_ref);
    free(scale_ref), free(code_ref), free(h_q), free(out), free(h_scale);
    gtl_phase_pop();
  }
  gtl_result_extra(&r, "kernels_per_iter", n_kernels);
  int rc;
  if (r.validated && !r.err.pass) {  // never time a wrong kernel
    gtl_report_row(&ctx, &r);
    rc = gtl_report_finish(&ctx, &r);
  } else {
    NormQuantRun run = {&p};
    if (rotate_all) gtl_bench_rotate(&ctx, norm_quant_rotate_run, &cp, cp.n, &r.st);
    else gtl_bench(&ctx, norm_quant_run, &run, &r.st);
    gtl_report_row(&ctx, &r);
    if (rotate_beside) {  // the rotated figure beside the cold metric
      GtlResult rr = r;
      char name[48];
      snprintf(name, sizeof name, "%s_rotate", program);
      rr.variant = name;
      gtl_bench_rotate(&ctx, norm_quant_rotate_run, &cp, cp.n, &rr.st);
      gtl_report_row(&ctx, &rr);
      gtl_result_extra(&r, "rotate_median_ms", rr.st.median);
      gtl_result_extra(&r, "rotate_p95_ms", rr.st.p95);
      gtl_result_extra(&r, "pct_of_ceiling_rotate", gtl_result_pct(&rr, &ctx.ceil));
      if (!ctx.args.json)
        printf("# rotated: %.2f us per iteration (median over event pairs), %.1f%% of the copy "
               "ceiling\n", rr.st.median * 1e3, gtl_result_pct(&rr, &ctx.ceil));
    }
    if (!ctx.args.json)
      printf("# %.2f us per iteration (median), %.1f GB/s effective = %.1f%% of the copy "
             "ceiling (%.0f GB/s, %s)\n",
             r.st.median * 1e3, gtl_result_gbps(&r), gtl_result_pct(&r, &ctx.ceil),
             ctx.ceil.copy_gbps, ctx.ceil.measured ? "measured" : "datasheet");
    rc = gtl_report_finish(&ctx, &r);
  }

  GTL_CUDA(cudaFree(d_x));
  GTL_CUDA(cudaFree(d_res));
  GTL_CUDA(cudaFree(d_w));
  if (p.d_y) GTL_CUDA(cudaFree(p.d_y));
  gtl_guarded_free(&g_h);
  gtl_guarded_free(&g_q);
  gtl_guarded_free(&g_scale);
  norm_quant_copies_free(&cp);
  gtl_end(&ctx);
  return rc;
}
