// gemm.cuh — ch09's problem, references, cuBLAS comparison and driver, shared by
// baseline.cu and optimized.cu so that the two differ only in their kernel and its launch.
//
// The problem: fp32 GEMM on the SIMT cores (no tensor cores), C[M][N] = A[M][K] · B[K][N],
// all row-major. Default 4096 x 2880 x 2880: 4096 tokens through a 2880 x 2880 expert
// matrix of gpt-oss-20b (D = F = 2880); N = 2880 is not a multiple of the 128-wide tile.
//
// Roofline: 2·M·N·K = 67.9 GFLOP against at least 4·(M·K + K·N + M·N) = 127 MB of DRAM
// traffic: 533 FLOP/B, far above the H200's fp32 balance point (66.9 TFLOP/s / 4.8 TB/s
// = 14 FLOP/B), so the bound is fp32 FMA throughput, and the question of this chapter is
// how much on-chip traffic each FMA costs (README: arithmetic intensity per tiling level).
//
// Validation (two checks, both must pass):
//  1. CPU double on sampled rows and columns (32 whole rows, 32 whole columns: every tile
//     row and column position is crossed), inputs exactly the fp32 values the GPU read.
//  2. Every output against cuBLAS with FP32 compute, pedantic (CUBLAS_COMPUTE_32F_PEDANTIC:
//     no TF32, no reduced-precision shortcuts); it catches an unwritten or misplaced
//     element anywhere (poisoned outputs are NaN). That reference is itself an fp32 sum,
//     so its bounds are twice those of check 1.
// Tolerance (gemm_tol): each output is a length-K fp32 sum, accumulated one term after
// another here. The worst-case bound is |error| <= gamma_K·sum|a||b| with gamma_K =
// K·u/(1 - K·u), u = 2^-24 (Higham, Accuracy and Stability of Numerical Algorithms, 2nd
// ed., 2002, §3.1): 1.7e-4 relative to sum|a||b| at K = 2880. Rounding errors of random
// sign grow like sqrt(K)·u instead (Higham & Mary, SIAM J. Sci. Comput. 41(5), 2019):
// measured rel_l2 on this data is 5.7e-7 at K = 1000 and 9.6e-7 at K = 2880, so
// common/'s fp32 bound (1e-6) is too tight for an honest kernel at K = 2880. The chapter
// uses rel_l2 <= max(1e-6, 2·sqrt(K)·u) (6.4e-6 at K = 2880) and per element
// |out - ref| <= 10·that·rms(ref) + 1e-5·|ref|: still far below gamma_K, and an indexing
// error (relative error ~1) fails it by orders of magnitude.
#pragma once
#include <cublas_v2.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../common/gauntlet.h"

typedef struct {
  int M, N, K;
  const float *d_A;  // [M][K]
  const float *d_B;  // [K][N]
  float *d_C;        // [M][N]
} GemmProblem;

// Launcher each variant defines: enqueue C = A·B on stream s.
void gemm_launch(const GemmProblem *p, cudaStream_t s);

static double gemm_flops(const GemmProblem *p) { return 2.0 * p->M * p->N * p->K; }
static double gemm_bytes(const GemmProblem *p) {  // each matrix crosses DRAM once
  return 4.0 * ((double)p->M * p->K + (double)p->K * p->N + (double)p->M * p->N);
}

#define GEMM_SAMPLES 32

// fp32 tolerance for length-K sums (see the header comment); `refs` fp32 results compared.
static GtlTol gemm_tol(int K, int refs) {
  GtlTol t = gtl_tol_for_sum(GTL_FP32, K);  // rel_l2 max(1e-6, 2·sqrt(K)·u), see validate.h
  t.rel_l2 *= refs;  // against pedantic cuBLAS both sides carry rounding error
  t.atol *= refs;
  return t;
}

// Row-major C = A·B through cuBLAS's column-major API: C^T = B^T·A^T, where a row-major
// [R][C] matrix is a column-major [C][R] one with the same leading dimension C.
static void gemm_ref_cublas_pedantic(cublasHandle_t h, const GemmProblem *p, float *d_ref) {
  const float one = 1.0f, zero = 0.0f;
  GTL_CUBLAS(cublasGemmEx(h, CUBLAS_OP_N, CUBLAS_OP_N, p->N, p->M, p->K, &one, p->d_B,
                          CUDA_R_32F, p->N, p->d_A, CUDA_R_32F, p->K, &zero, d_ref, CUDA_R_32F,
                          p->N, CUBLAS_COMPUTE_32F_PEDANTIC, CUBLAS_GEMM_DEFAULT));
}

typedef struct {
  cublasHandle_t h;
  const GemmProblem *p;
  float *d_out;
} CublasRun;

// cuBLAS SGEMM in its default math mode (FP32 FMA; TF32 only if NVIDIA_TF32_OVERRIDE=1).
static void gemm_cublas_run(void *user, cudaStream_t s) {
  const CublasRun *c = (const CublasRun *)user;
  const float one = 1.0f, zero = 0.0f;
  GTL_CUBLAS(cublasSetStream(c->h, s));
  GTL_CUBLAS(cublasSgemm(c->h, CUBLAS_OP_N, CUBLAS_OP_N, c->p->N, c->p->M, c->p->K, &one,
                         c->p->d_B, c->p->N, c->p->d_A, c->p->K, &zero, c->d_out, c->p->N));
}

static void gemm_run(void *user, cudaStream_t s) { gemm_launch((const GemmProblem *)user, s); }

// Sampled positions 0 … n-1, evenly spread, first and last included.
static int gemm_sample(int i, int n) {
  return GEMM_SAMPLES > 1 ? (int)((int64_t)i * (n - 1) / (GEMM_SAMPLES - 1)) : 0;
}

// CPU double reference for GEMM_SAMPLES whole rows, then GEMM_SAMPLES whole columns:
// ref[s·N + n] = C[row_s][n], then ref[S·N + m·S + j] = C[m][col_j]; out likewise from C.
static void gemm_cpu_sampled(const GemmProblem *p, const float *A, const float *B,
                             const float *C, double *ref, float *out) {
  const int M = p->M, N = p->N, K = p->K, S = GEMM_SAMPLES;
  double *row = (double *)malloc(sizeof(double) * N), *bt = (double *)malloc(sizeof(double) * S * K);
  for (int s = 0; s < S; s++) {
    const int m = gemm_sample(s, M);
    for (int n = 0; n < N; n++) row[n] = 0;
    for (int k = 0; k < K; k++) {
      const double a = A[(size_t)m * K + k];
      const float *b = B + (size_t)k * N;
      for (int n = 0; n < N; n++) row[n] += a * b[n];
    }
    for (int n = 0; n < N; n++) {
      ref[(size_t)s * N + n] = row[n];
      out[(size_t)s * N + n] = C[(size_t)m * N + n];
    }
  }
  for (int k = 0; k < K; k++)  // bt[k][j]: the sampled columns of B, side by side
    for (int j = 0; j < S; j++) bt[(size_t)k * S + j] = B[(size_t)k * N + gemm_sample(j, N)];
  const size_t base = (size_t)S * N;
  for (int m = 0; m < M; m++) {
    double acc[GEMM_SAMPLES] = {0};
    for (int k = 0; k < K; k++) {
      const double a = A[(size_t)m * K + k];
      for (int j = 0; j < S; j++) acc[j] += a * bt[(size_t)k * S + j];
    }
    for (int j = 0; j < S; j++) {
      ref[base + (size_t)m * S + j] = acc[j];
      out[base + (size_t)m * S + j] = C[(size_t)m * N + gemm_sample(j, N)];
    }
  }
  free(row);
  free(bt);
}

// main() of both variants: parse, device, inputs, references, poison, validated run,
// validate, timed runs (kernel, then cuBLAS SGEMM in the same process), report.
static int gemm_main(int argc, char **argv, const char *variant, const char *strategy) {
  int64_t M = 4096, N = 2880, K = 2880;
  GtlOpt opts[] = {{"M", GTL_OPT_INT, &M, "rows of A and C (default 4096)"},
                   {"N", GTL_OPT_INT, &N, "columns of B and C (default 2880)"},
                   {"K", GTL_OPT_INT, &K, "columns of A, rows of B (default 2880)"}};
  GtlCtx ctx;
  gtl_parse(&ctx, "ch09", variant, argc, argv, opts, 3, 5, 30, GTL_L2_COLD);
  if (ctx.args.size == GTL_SIZE_SMALL) M = N = K = 1000;  // not a multiple of any tile
  if (ctx.args.size == GTL_SIZE_LARGE) M = 16384;
  if (M < 1 || N < 1 || K < 1 || M > 65536 || N > 65536 || K > 65536)
    gtl_usage_fail(&ctx, "need 1 <= M, N, K <= 65536");
  gtl_open(&ctx);
  char workload[128];
  snprintf(workload, sizeof workload, "M%lld_N%lld_K%lld", (long long)M, (long long)N,
           (long long)K);
  GemmProblem p = {(int)M, (int)N, (int)K, NULL, NULL, NULL};
  const size_t nA = (size_t)M * K, nB = (size_t)K * N, nC = (size_t)M * N;

  gtl_phase_push(GTL_PHASE_SETUP);
  float *d_A = (float *)gtl_malloc(nA * 4, "A [M][K] fp32");
  float *d_B = (float *)gtl_malloc(nB * 4, "B [K][N] fp32");
  float *d_ref = (float *)gtl_malloc(nC * 4, "C reference / cuBLAS output [M][N] fp32");
  GtlGuarded g_C;
  p.d_C = (float *)gtl_guarded_alloc(&g_C, nC * 4, "C [M][N] fp32");
  gtl_fill_uniform(d_A, GTL_FP32, nA, ctx.args.seed, -1.0f, 1.0f, ctx.stream);
  gtl_fill_uniform(d_B, GTL_FP32, nB, ctx.args.seed + 1, -1.0f, 1.0f, ctx.stream);
  GTL_CUDA(cudaStreamSynchronize(ctx.stream));
  p.d_A = d_A, p.d_B = d_B;
  cublasHandle_t h;
  GTL_CUBLAS(cublasCreate(&h));
  GTL_CUBLAS(cublasSetStream(h, ctx.stream));
  gtl_phase_pop();

  char notes[768];
  snprintf(notes, sizeof notes,
           "strategy: %s\n"
           "roofline: %.2f GFLOP, at least %.1f MB of DRAM traffic (%.0f FLOP/B): bound by "
           "fp32 FMA throughput\n"
           "second row: cuBLAS SGEMM (default math mode, FP32) timed in this process",
           strategy, gemm_flops(&p) / 1e9, gemm_bytes(&p) / 1e6, gemm_flops(&p) / gemm_bytes(&p));
  gtl_report_header(&ctx, workload, notes);

  GtlResult r;
  gtl_result_init(&r, &ctx, "fp32", workload);
  r.flops = gemm_flops(&p);
  r.bytes = gemm_bytes(&p);
  r.bound = GTL_BOUND_FP32;
  r.ref = "cpu_double_sampled+cublas_fp32_pedantic";

  if (ctx.args.verify) {
    gtl_phase_push(GTL_PHASE_REFERENCE);
    gemm_ref_cublas_pedantic(h, &p, d_ref);
    GTL_CUDA(cudaStreamSynchronize(ctx.stream));
    gtl_phase_pop();

    gtl_phase_push(GTL_PHASE_VALIDATE);
    gtl_poison(p.d_C, nC * 4, ctx.stream);
    gemm_launch(&p, ctx.stream);
    GTL_CUDA(cudaStreamSynchronize(ctx.stream));
    float *hA = (float *)malloc(nA * 4), *hB = (float *)malloc(nB * 4),
          *hC = (float *)malloc(nC * 4), *hR = (float *)malloc(nC * 4);
    const size_t ns = (size_t)GEMM_SAMPLES * (N + M);
    double *ref_s = (double *)malloc(ns * sizeof(double)), *ref_full = (double *)malloc(nC * 8);
    float *out_s = (float *)malloc(ns * 4);
    if (!hA || !hB || !hC || !hR || !ref_s || !ref_full || !out_s) {
      fprintf(stderr, "ch09: host out of memory for validation\n");
      return GTL_EXIT_RUNTIME;
    }
    GTL_CUDA(cudaMemcpy(hA, d_A, nA * 4, cudaMemcpyDeviceToHost));
    GTL_CUDA(cudaMemcpy(hB, d_B, nB * 4, cudaMemcpyDeviceToHost));
    GTL_CUDA(cudaMemcpy(hC, p.d_C, nC * 4, cudaMemcpyDeviceToHost));
    GTL_CUDA(cudaMemcpy(hR, d_ref, nC * 4, cudaMemcpyDeviceToHost));
    gemm_cpu_sampled(&p, hA, hB, hC, ref_s, out_s);
    gtl_compare(out_s, ref_s, ns, gemm_tol(p.K, 1), &r.err);
    for (size_t i = 0; i < nC; i++) ref_full[i] = hR[i];
    GtlErr e_full;
    gtl_compare(hC, ref_full, nC, gemm_tol(p.K, 2), &e_full);
    if (!ctx.args.json) {
      gtl_err_print(stdout, &r.err, "vs cpu_double, 32 rows + 32 columns");
      gtl_err_print(stdout, &e_full, "vs cublas_fp32_pedantic, every element");
    }
    size_t bad_guard = gtl_guarded_check(&g_C);
    if (bad_guard) fprintf(stderr, "ch09: %zu guard bytes around C were overwritten\n", bad_guard);
    r.err.pass = r.err.pass && e_full.pass && bad_guard == 0;
    r.validated = 1;
    gtl_phase_pop();
    free(hA), free(hB), free(hC), free(hR), free(ref_s), free(ref_full), free(out_s);
    if (!r.err.pass) {
      gtl_report_row(&ctx, &r);
      return gtl_report_finish(&ctx, &r);  // never time a wrong kernel
    }
  }

  gtl_bench(&ctx, gemm_run, &p, &r.st);
  gtl_report_row(&ctx, &r);

  GtlResult rc_blas;
  gtl_result_init(&rc_blas, &ctx, "fp32", workload);
  rc_blas.variant = "cublas_sgemm";
  rc_blas.flops = r.flops;
  rc_blas.bytes = r.bytes;
  rc_blas.bound = GTL_BOUND_FP32;
  CublasRun cr = {h, &p, d_ref};
  gtl_bench(&ctx, gemm_cublas_run, &cr, &rc_blas.st);
  gtl_report_row(&ctx, &rc_blas);
  r.ref_median_ms = rc_blas.st.median;
  gtl_result_extra(&r, "pct_of_cublas", 100.0 * rc_blas.st.median / r.st.median);
  gtl_result_extra(&r, "cublas_tflops", gtl_result_tflops(&rc_blas));
  int rc = gtl_report_finish(&ctx, &r);

  GTL_CUBLAS(cublasDestroy(h));
  GTL_CUDA(cudaFree(d_A));
  GTL_CUDA(cudaFree(d_B));
  GTL_CUDA(cudaFree(d_ref));
  gtl_guarded_free(&g_C);
  gtl_end(&ctx);
  return rc;
}
