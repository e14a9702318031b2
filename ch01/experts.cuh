// experts.cuh — ch01's problem, roofline model, reference and driver, shared by
// baseline.cu and optimized.cu so that the two differ only in how they call cuBLAS.
//
// The problem: the gate+up projection of every expert of one qwen3moe MoE layer in
// decode. Each of E = 128 experts received T = 8 tokens (batch 128, top-8 routing, spread
// evenly); a token row has hidden size D = 2048; an expert's fused gate+up weight W_e is
// [2F][D] with F = 768, row-major as a checkpoint stores nn.Linear weights:
//     Y_e[T][2F] = X_e[T][D] · W_e^T          for every expert e in [0, E)
// bf16 inputs and outputs, fp32 accumulation (CUBLAS_COMPUTE_32F).
//
// Roofline (the minimum per iteration; each byte read or written once):
//     bytes = E·2F·D·2 (weights) + E·T·D·2 (X) + E·T·2F·2 (Y)   = 812.6 MB by default
//     flops = 2·E·T·2F·D                                           = 6.44 GFLOP
//     arithmetic intensity = flops / bytes ≈ 2·T flops per 2-byte weight = 7.9 flop/B
// The H200's ridge point (bf16 ceiling / read ceiling) is 174 flop/B as measured by
// ch02/ceilings (206 by the datasheet), so this work sits 22x left of the ridge: it is
// bound by reading the weights, and the ceiling that matters is the read bandwidth
// (Williams, Waterman, Patterson, "Roofline: an insightful visual performance model",
// CACM 52(4), 2009).
//
// cuBLAS is column-major. A row-major [R][C] matrix is a column-major C×R one, so
//     Y_e^T (2F×T, ld 2F) = W_e (col-major D×2F, op T) · X_e^T (col-major D×T, op N)
// which is cublasGemmEx(OP_T, OP_N, m = 2F, n = T, k = D, W_e, ld D, X_e, ld D, Y_e, ld 2F).
#pragma once
#include <cublas_v2.h>
#include <cuda_bf16.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>

#include "../common/gauntlet.h"

typedef struct {
  int64_t E, T, D, F;          // experts, tokens per expert, hidden size, expert FFN size
  const __nv_bfloat16 *d_x;    // [E][T][D] tokens, grouped by expert
  const __nv_bfloat16 *d_w;    // [E][2F][D] fused gate+up weights
  __nv_bfloat16 *d_y;          // [E][T][2F] gate+up activations
  cublasHandle_t handle;
} ExpertsProblem;

// Launcher each variant defines: enqueue the gate+up projection of all E experts on s.
void experts_launch(const ExpertsProblem *p, cudaStream_t s);

static double experts_weight_bytes(const ExpertsProblem *p) {
  return (double)p->E * 2 * p->F * p->D * 2;
}
static double experts_bytes(const ExpertsProblem *p) {
  return experts_weight_bytes(p) + (double)p->E * p->T * p->D * 2 +
         (double)p->E * p->T * 2 * p->F * 2;
}
static double experts_flops(const ExpertsProblem *p) {
  return 2.0 * p->E * p->T * 2 * p->F * p->D;
}

// Reference: every output in double from the same bf16 values the GPU reads. Four
// partial sums per dot product keep the host's add latency off the critical path
// (the order of a double sum is irrelevant at bf16 tolerances).
static void experts_cpu(const uint16_t *h_x, const uint16_t *h_w, const ExpertsProblem *p,
                        double *ref) {
  const int64_t N = 2 * p->F, D = p->D, T = p->T;
  float *w = (float *)malloc(sizeof(float) * N * D), *x = (float *)malloc(sizeof(float) * T * D);
  for (int64_t e = 0; e < p->E; e++) {
    gtl_bf16_to_f32_array(h_w + e * N * D, w, (size_t)(N * D));
    gtl_bf16_to_f32_array(h_x + e * T * D, x, (size_t)(T * D));
    for (int64_t t = 0; t < T; t++)
      for (int64_t n = 0; n < N; n++) {
        const float *xr = x + t * D, *wr = w + n * D;
        double s0 = 0, s1 = 0, s2 = 0, s3 = 0;
        for (int64_t d = 0; d < D; d += 4) {
          s0 += (double)xr[d] * wr[d];
          s1 += (double)xr[d + 1] * wr[d + 1];
          s2 += (double)xr[d + 2] * wr[d + 2];
          s3 += (double)xr[d + 3] * wr[d + 3];
        }
        ref[(e * T + t) * N + n] = (s0 + s1) + (s2 + s3);
      }
  }
  free(w);
  free(x);
}

static void experts_run(void *user, cudaStream_t s) {
  experts_launch((const ExpertsProblem *)user, s);
}

// The roofline position of a timed run: where it sits against both ceilings.
static void experts_print_roofline(const GtlCtx *ctx, const ExpertsProblem *p,
                                   const GtlResult *r) {
  const double us = r->st.median * 1e3, ai = experts_flops(p) / experts_bytes(p);
  const double read = ctx->ceil.read_gbps, bf16 = ctx->ceil.bf16_tflops;
  const double ridge = bf16 * 1e12 / (read * 1e9);
  const double gbps = gtl_result_gbps(r), tflops = gtl_result_tflops(r);
  printf("# roofline: intensity %.2f flop/B vs ridge %.0f flop/B (bf16 %.0f TFLOP/s / read "
         "%.0f GB/s) -> %s-bound\n", ai, ridge, bf16, read, ai < ridge ? "memory" : "compute");
  printf("# attained: %.1f us, %.1f GB/s = %.1f%% of read ceiling, %.2f TFLOP/s = %.2f%% of "
         "bf16 ceiling; weight GB/s %.1f\n", us, gbps, 100 * gbps / read, tflops,
         100 * tflops / bf16, experts_weight_bytes(p) / (r->st.median * 1e-3) / 1e9);
}

// main() of both variants: parse, device, inputs, reference, poison, validated run,
// validate, time, report (with the roofline position).
static int experts_main(int argc, char **argv, const char *variant, const char *strategy) {
  int64_t E = 128, T = 8, D = 2048, F = 768;
  GtlOpt opts[] = {{"E", GTL_OPT_INT, &E, "experts (default 128)"},
                   {"T", GTL_OPT_INT, &T, "tokens per expert (default 8)"},
                   {"D", GTL_OPT_INT, &D, "hidden size, a multiple of 8 (default 2048)"},
                   {"F", GTL_OPT_INT, &F, "expert FFN size; W_e is [2F][D] (default 768)"}};
  GtlCtx ctx;
  gtl_begin(&ctx, "ch01", variant, argc, argv, opts, 4, 10, 100, GTL_L2_COLD);
  if (ctx.args.size == GTL_SIZE_SMALL) E = 16;
  if (ctx.args.size == GTL_SIZE_LARGE) T = 32;
  if (E < 1 || E > 4096 || T < 1 || T > 4096 || D < 8 || D % 8 || D > 65536 || F < 1 ||
      F > 65536) {
    fprintf(stderr, "ch01: need 1 <= E, T <= 4096, D a multiple of 8 in [8, 65536], "
                    "1 <= F <= 65536\n");
    return GTL_EXIT_USAGE;
  }
  char workload[128];
  snprintf(workload, sizeof workload, "E%lld_T%lld_D%lld_F%lld", (long long)E, (long long)T,
           (long long)D, (long long)F);

  ExpertsProblem p = {E, T, D, F, NULL, NULL, NULL, NULL};
  const size_t n_x = (size_t)E * T * D, n_w = (size_t)E * 2 * F * D, n_y = (size_t)E * T * 2 * F;
  gtl_phase_push(GTL_PHASE_SETUP);
  __nv_bfloat16 *d_x = (__nv_bfloat16 *)gtl_malloc(n_x * 2, "X [E][T][D] bf16");
  __nv_bfloat16 *d_w = (__nv_bfloat16 *)gtl_malloc(n_w * 2, "W [E][2F][D] bf16");
  GtlGuarded g_y;
  p.d_y = (__nv_bfloat16 *)gtl_guarded_alloc(&g_y, n_y * 2, "Y [E][T][2F] bf16");
  // Activations in [-1, 1); weights at a trained layer's scale (about 1/sqrt(D)).
  gtl_fill_uniform(d_x, GTL_BF16, n_x, ctx.args.seed, -1.0f, 1.0f, ctx.stream);
  gtl_fill_uniform(d_w, GTL_BF16, n_w, ctx.args.seed + 1, -0.05f, 0.05f, ctx.stream);
  p.d_x = d_x;
  p.d_w = d_w;
  GTL_CUBLAS(cublasCreate(&p.handle));
  GTL_CUBLAS(cublasSetStream(p.handle, ctx.stream));
  GTL_CUDA(cudaStreamSynchronize(ctx.stream));
  gtl_phase_pop();

  const double ai = experts_flops(&p) / experts_bytes(&p);
  const double ridge = ctx.ceil.bf16_tflops * 1e3 / ctx.ceil.read_gbps;
  char notes[640];
  snprintf(notes, sizeof notes,
           "strategy: %s\n"
           "roofline: %.1f MB per iteration (weights %.1f MB + X + Y), %.3f GFLOP; intensity "
           "%.2f flop/B, ridge %.0f flop/B -> bound by read bandwidth",
           strategy, experts_bytes(&p) / 1e6, experts_weight_bytes(&p) / 1e6,
           experts_flops(&p) / 1e9, ai, ridge);
  gtl_report_header(&ctx, workload, notes);

  GtlResult r;
  gtl_result_init(&r, &ctx, "bf16", workload);
  r.bytes = experts_bytes(&p);
  r.flops = experts_flops(&p);
  r.bound = GTL_BOUND_READ;
  r.ref = "cpu_double";

  if (ctx.args.verify) {
    gtl_phase_push(GTL_PHASE_REFERENCE);
    uint16_t *h_x = (uint16_t *)malloc(n_x * 2), *h_w = (uint16_t *)malloc(n_w * 2),
             *h_y = (uint16_t *)malloc(n_y * 2);
    double *ref = (double *)malloc(n_y * sizeof(double));
    float *out = (float *)malloc(n_y * sizeof(float));
    if (!h_x || !h_w || !h_y || !ref || !out) {
      fprintf(stderr, "ch01: host out of memory for the reference (%.1f MB)\n",
              (n_x * 2 + n_w * 2 + n_y * 14) / 1e6);
      return GTL_EXIT_RUNTIME;
    }
    GTL_CUDA(cudaMemcpy(h_x, d_x, n_x * 2, cudaMemcpyDeviceToHost));
    GTL_CUDA(cudaMemcpy(h_w, d_w, n_w * 2, cudaMemcpyDeviceToHost));
    experts_cpu(h_x, h_w, &p, ref);
    gtl_phase_pop();

    gtl_phase_push(GTL_PHASE_VALIDATE);
    gtl_poison(p.d_y, n_y * 2, ctx.stream);
    experts_launch(&p, ctx.stream);
    GTL_CUDA(cudaStreamSynchronize(ctx.stream));
    GTL_CUDA(cudaMemcpy(h_y, p.d_y, n_y * 2, cudaMemcpyDeviceToHost));
    gtl_bf16_to_f32_array(h_y, out, n_y);
    gtl_compare(out, ref, n_y, gtl_tol_for(GTL_BF16), &r.err);
    size_t bad_guard = gtl_guarded_check(&g_y);
    if (bad_guard) {
      fprintf(stderr, "ch01: %zu guard bytes around Y were overwritten\n", bad_guard);
      r.err.pass = 0;
    }
    r.validated = 1;
    gtl_phase_pop();
    if (!ctx.args.json) gtl_err_print(stdout, &r.err, "Y vs cpu_double");
    free(h_x);
    free(h_w);
    free(h_y);
    free(ref);
    free(out);
    if (!r.err.pass) {
      gtl_report_row(&ctx, &r);
      return gtl_report_finish(&ctx, &r);  // never time a wrong kernel
    }
  }

  gtl_bench(&ctx, experts_run, &p, &r.st);
  gtl_result_extra(&r, "median_us", r.st.median * 1e3);
  gtl_result_extra(&r, "weight_gbps", experts_weight_bytes(&p) / (r.st.median * 1e-3) / 1e9);
  gtl_result_extra(&r, "intensity_flop_per_byte", ai);
  gtl_result_extra(&r, "ridge_flop_per_byte", ridge);
  gtl_report_row(&ctx, &r);
  if (!ctx.args.json) experts_print_roofline(&ctx, &p, &r);
  int rc = gtl_report_finish(&ctx, &r);

  GTL_CUBLAS(cublasDestroy(p.handle));
  GTL_CUDA(cudaFree(d_x));
  GTL_CUDA(cudaFree(d_w));
  gtl_guarded_free(&g_y);
  gtl_end(&ctx);
  return rc;
}
