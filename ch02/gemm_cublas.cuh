// gemm_cublas.cuh — ch02's problem, roofline model, reference and driver, shared by
// baseline.cu and optimized.cu. The two programs differ only in their table of GEMM
// variants: which data type cuBLAS reads and which compute type it may use — that is,
// whether the GEMM runs on the SIMT FP32 cores or on the tensor cores.
//
// The problem: C[M][N] = A[M][K] · B[N][K]^T, M = 4096 tokens (a prefill chunk),
// N = 5760 = 2·2880 (gpt-oss-20b's fused gate+up width), K = 2880 (its hidden size).
// B is stored [N][K] like an nn.Linear weight. Per iteration (each byte once):
//     flops = 2·M·N·K = 135.9 GFLOP
//     bytes = (M·K + N·K)·sizeof(in) + M·N·sizeof(out)   (207 MB fp32, 104 MB bf16)
// Intensity is ~650 flop/B in fp32 and ~1300 in bf16, far right of every ridge point:
// each variant is bound by its arithmetic ceiling (fp32 SIMT, tf32 or bf16 tensor core).
//
// cuBLAS is column-major: row-major C[M][N] is column-major C^T (N×M, ld N), and
//     C^T = B (col-major K×N, op T) · A^T (col-major K×M, op N)
// so every variant is cublasGemmEx(OP_T, OP_N, m = N, n = M, k = K, B, ld K, A, ld K, C, ld N).
//
// Validation: the host draws fp32 inputs, rounds them to the variant's input type (fp32,
// tf32 = 10 mantissa bits, bf16), and both the GPU and the reference read those rounded
// values. 4096 seeded (row, col) samples are computed in double; every output element
// must also be finite (the poisoned output is NaN until written).
#pragma once
#include <cublas_v2.h>  // before gauntlet.h: check.h defines GTL_CUBLAS when it sees it
#include <cuda_bf16.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../common/gauntlet.h"

typedef struct {
  const char *name;             // table row label
  GtlDtype dtype;               // the input precision the math units see
  cudaDataType_t ab_type;       // A and B in memory
  cudaDataType_t c_type;        // C in memory
  cublasComputeType_t compute;  // what cuBLAS may do with them
  cublasMath_t math;            // the handle's math mode
  GtlBound bound;               // the ceiling this variant is held to
} GemmVariant;

typedef struct {
  int64_t M, N, K;
  const GemmVariant *v;
  const void *d_a, *d_b;  // A [M][K], B [N][K], in v->ab_type
  void *d_c;              // C [M][N], in v->c_type
  cublasHandle_t handle;
} GemmProblem;

static size_t gemm_type_bytes(cudaDataType_t t) { return t == CUDA_R_32F ? 4 : 2; }
static double gemm_flops(const GemmProblem *p) { return 2.0 * p->M * p->N * p->K; }
static double gemm_bytes(const GemmProblem *p) {
  return (double)(p->M + p->N) * p->K * gemm_type_bytes(p->v->ab_type) +
         (double)p->M * p->N * gemm_type_bytes(p->v->c_type);
}

// The one cuBLAS call; the variant decides the types, compute type and math mode.
static void gemm_launch(const GemmProblem *p, cudaStream_t s) {
  const float alpha = 1.0f, beta = 0.0f;
  GTL_CUBLAS(cublasSetStream(p->handle, s));
  GTL_CUBLAS(cublasSetMathMode(p->handle, p->v->math));
  GTL_CUBLAS(cublasGemmEx(p->handle, CUBLAS_OP_T, CUBLAS_OP_N, (int)p->N, (int)p->M,
                          (int)p->K, &alpha, p->d_b, p->v->ab_type, (int)p->K, p->d_a,
                          p->v->ab_type, (int)p->K, &beta, p->d_c, p->v->c_type, (int)p->N,
                          p->v->compute, CUBLAS_GEMM_DEFAULT));
}

static void gemm_run(void *user, cudaStream_t s) { gemm_launch((const GemmProblem *)user, s); }

// Round to tf32 (8-bit exponent, 10-bit mantissa) to nearest even, as cvt.rn.tf32.f32.
static float gemm_round_tf32(float x) {
  uint32_t u;
  memcpy(&u, &x, 4);
  if ((u & 0x7f800000u) != 0x7f800000u) u = (u + 0xfffu + ((u >> 13) & 1u)) & 0xffffe000u;
  memcpy(&x, &u, 4);
  return x;
}

// The value the math units read for x in the variant's input type.
static float gemm_round(GtlDtype d, float x) {
  if (d == GTL_TF32) return gemm_round_tf32(x);
  if (d == GTL_BF16) return gtl_round_bf16(x);
  return x;
}


#define GEMM_SAMPLES 4096

// Validate variant v on inputs a[M][K], b[N][K] (fp32, already rounded to v's type).
static void gemm_validate(GtlCtx *ctx, GemmProblem *p, const GtlGuarded *g_c, const float *a,
                          const float *b, GtlErr *err) {
  const int64_t M = p->M, N = p->N, K = p->K;
  const size_t n_c = (size_t)M * N, cb = gemm_type_bytes(p->v->c_type);
  double *ref = (double *)malloc(sizeof(double) * GEMM_SAMPLES);
  float *out = (float *)malloc(sizeof(float) * GEMM_SAMPLES);
  unsigned char *h_c = (unsigned char *)malloc(n_c * cb);
  int64_t *row = (int64_t *)malloc(sizeof(int64_t) * GEMM_SAMPLES * 2), *col = row + GEMM_SAMPLES;
  const uint64_t seed = ctx->args.seed ^ 0xC0FFEEull;
  gtl_phase_push(GTL_PHASE_REFERENCE);
  for (int s = 0; s < GEMM_SAMPLES; s++) {  // seeded samples; first and last corner always
    row[s] = s == 0 ? 0 : s == 1 ? M - 1 : gtl_uniform_u32(seed, 2 * s, (uint32_t)M);
    col[s] = s == 0 ? 0 : s == 1 ? N - 1 : gtl_uniform_u32(seed, 2 * s + 1, (uint32_t)N);
    double acc = 0;
    for (int64_t k = 0; k < K; k++) acc += (double)a[row[s] * K + k] * b[col[s] * K + k];
    ref[s] = acc;
  }
  gtl_phase_pop();

  gtl_phase_push(GTL_PHASE_VALIDATE);
  gtl_poison(p->d_c, n_c * cb, ctx->stream);
  gemm_launch(p, ctx->stream);
  GTL_CUDA(cudaStreamSynchronize(ctx->stream));
  GTL_CUDA(cudaMemcpy(h_c, p->d_c, n_c * cb, cudaMemcpyDeviceToHost));
  size_t non_finite = 0;
  for (size_t i = 0; i < n_c; i++) {
    float v = cb == 4 ? ((const float *)h_c)[i] : gtl_bf16_to_f32(((const uint16_t *)h_c)[i]);
    non_finite += !isfinite(v);
  }
  for (int s = 0; s < GEMM_SAMPLES; s++) {
    size_t i = (size_t)row[s] * N + col[s];
    out[s] = cb == 4 ? ((const float *)h_c)[i] : gtl_bf16_to_f32(((const uint16_t *)h_c)[i]);
  }
  gtl_compare(out, ref, GEMM_SAMPLES, gtl_tol_for_sum(p->v->dtype, K)  /* sqrt(K)-aware fp32 bound, validate.h */, err);
  if (non_finite) {
    fprintf(stderr, "ch02: %s: %zu of %zu outputs are not finite (unwritten or overflow)\n",
            p->v->name, non_finite, n_c);
    err->pass = 0;
  }
  size_t bad_guard = gtl_guarded_check(g_c);
  if (bad_guard) {
    fprintf(stderr, "ch02: %s: %zu guard bytes around C were overwritten\n", p->v->name, bad_guard);
    err->pass = 0;
  }
  gtl_phase_pop();
  free(ref);
  free(out);
  free(h_c);
  free(row);
}

// main() of both variants: every variant of the table is validated and timed and gets a
// row; the last one is the headline (the JSON line), the others ride along in it.
static int gemm_main(int argc, char **argv, const char *variant, const GemmVariant *vs, int n_v,
                     const char *strategy) {
  int64_t M = 4096, N = 5760, K = 2880;
  GtlOpt opts[] = {{"M", GTL_OPT_INT, &M, "rows of A and C (default 4096)"},
                   {"N", GTL_OPT_INT, &N, "rows of B, columns of C (default 5760)"},
                   {"K", GTL_OPT_INT, &K, "reduction length (default 2880)"}};
  GtlCtx ctx;
  gtl_begin(&ctx, "ch02", variant, argc, argv, opts, 3, 10, 100, GTL_L2_COLD);
  if (ctx.args.size == GTL_SIZE_SMALL) M = 1024, N = 1440, K = 720;
  if (ctx.args.size == GTL_SIZE_LARGE) M = 8192, N = 11520, K = 5760;
  if (M < 1 || N < 1 || K < 1 || M > 65536 || N > 65536 || K > 65536) {
    fprintf(stderr, "ch02: need 1 <= M, N, K <= 65536\n");
    return GTL_EXIT_USAGE;
  }
  char workload[128];
  snprintf(workload, sizeof workload, "M%lld_N%lld_K%lld", (long long)M, (long long)N,
           (long long)K);

  gtl_phase_push(GTL_PHASE_SETUP);
  float *a = (float *)malloc(sizeof(float) * M * K), *b = (float *)malloc(sizeof(float) * N * K);
  float *ar = (float *)malloc(sizeof(float) * M * K), *br = (float *)malloc(sizeof(float) * N * K);
  uint16_t *a16 = (uint16_t *)malloc(2 * M * K), *b16 = (uint16_t *)malloc(2 * N * K);
  if (!a || !b || !ar || !br || !a16 || !b16) {
    fprintf(stderr, "ch02: host out of memory for the inputs\n");
    return GTL_EXIT_RUNTIME;
  }
  gtl_fill_uniform_host(a, (size_t)(M * K), ctx.args.seed, -1.0f, 1.0f);
  gtl_fill_uniform_host(b, (size_t)(N * K), ctx.args.seed + 1, -1.0f, 1.0f);
  cublasHandle_t handle;
  GTL_CUBLAS(cublasCreate(&handle));
  gtl_phase_pop();

  GemmProblem p0 = {M, N, K, &vs[n_v - 1], NULL, NULL, NULL, handle};
  char notes[768];
  int w = snprintf(notes, sizeof notes,
                   "strategy: %s\nroofline: %.1f GFLOP per iteration; reference: double on "
                   "%d sampled outputs, inputs rounded to each variant's type",
                   strategy, gemm_flops(&p0) / 1e9, GEMM_SAMPLES);
  for (int v = 0; v < n_v && w > 0 && (size_t)w < sizeof notes; v++) {
    p0.v = &vs[v];
    w += snprintf(notes + w, sizeof notes - w,
                  "\n%s: %.1f MB, intensity %.0f flop/B, bound by %s (%.1f TFLOP/s)", vs[v].name,
                  gemm_bytes(&p0) / 1e6, gemm_flops(&p0) / gemm_bytes(&p0),
                  gtl_bound_name(vs[v].bound), gtl_ceiling_of(&ctx.ceil, vs[v].bound));
  }
  gtl_report_header(&ctx, workload, notes);

  static char keys[GTL_MAX_EXTRA][40];  // JSON keys of the non-headline rows ("tf32_tflops", …)
  const char *ex_key[GTL_MAX_EXTRA];
  double ex_val[GTL_MAX_EXTRA];
  int n_ex = 0, rc = 0;
  GtlResult head;
  for (int v = 0; v < n_v && rc == 0; v++) {
    GemmProblem p = {M, N, K, &vs[v], NULL, NULL, NULL, handle};
    const size_t ab = gemm_type_bytes(vs[v].ab_type), cb = gemm_type_bytes(vs[v].c_type);
    void *d_a = gtl_malloc((size_t)M * K * ab, "A [M][K]");
    void *d_b = gtl_malloc((size_t)N * K * ab, "B [N][K]");
    GtlGuarded g_c;
    p.d_c = gtl_guarded_alloc(&g_c, (size_t)M * N * cb, "C [M][N]");
    for (int64_t i = 0; i < M * K; i++) ar[i] = gemm_round(vs[v].dtype, a[i]);
    for (int64_t i = 0; i < N * K; i++) br[i] = gemm_round(vs[v].dtype, b[i]);
    if (ab == 2) {
      gtl_f32_to_bf16_array(ar, a16, (size_t)(M * K));
      gtl_f32_to_bf16_array(br, b16, (size_t)(N * K));
    }
    const void *h_a = ab == 2 ? (const void *)a16 : ar, *h_b = ab == 2 ? (const void *)b16 : br;
    GTL_CUDA(cudaMemcpy(d_a, h_a, M * K * ab, cudaMemcpyHostToDevice));
    GTL_CUDA(cudaMemcpy(d_b, h_b, N * K * ab, cudaMemcpyHostToDevice));
    p.d_a = d_a;
    p.d_b = d_b;

    GtlResult r;
    gtl_result_init(&r, &ctx, gtl_dtype_name(vs[v].dtype), workload);
    r.variant = vs[v].name;
    r.bytes = gemm_bytes(&p);
    r.flops = gemm_flops(&p);
    r.bound = vs[v].bound;
    r.ref = "cpu_double_sampled";
    if (ctx.args.verify) {
      gemm_validate(&ctx, &p, &g_c, ar, br, &r.err);
      r.validated = 1;
      if (!ctx.args.json) gtl_err_print(stdout, &r.err, vs[v].name);
    }
    if (r.validated && !r.err.pass) rc = GTL_EXIT_FAIL;  // never time a wrong GEMM
    else gtl_bench(&ctx, gemm_run, &p, &r.st);
    gtl_report_row(&ctx, &r);
    head = r;
    if (v < n_v - 1 && n_ex + 3 <= GTL_MAX_EXTRA) {  // earlier rows ride in the JSON line
      const char *what[3] = {"median_ms", "tflops", "rel_l2"};
      double val[3] = {r.st.n ? r.st.median : NAN, gtl_result_tflops(&r),
                       r.validated ? r.err.rel_l2 : NAN};
      for (int j = 0; j < 3; j++, n_ex++) {
        snprintf(keys[n_ex], sizeof keys[n_ex], "%s_%s", vs[v].name, what[j]);
        ex_key[n_ex] = keys[n_ex];
        ex_val[n_ex] = val[j];
      }
    }
    GTL_CUDA(cudaFree(d_a));
    GTL_CUDA(cudaFree(d_b));
    gtl_guarded_free(&g_c);
  }
  for (int i = 0; i < n_ex; i++) gtl_result_extra(&head, ex_key[i], ex_val[i]);
  head.variant = ctx.variant;  // the JSON line speaks for the program ("optimized")
  int fin = gtl_report_finish(&ctx, &head);

  GTL_CUBLAS(cublasDestroy(handle));
  free(a);
  free(b);
  free(ar);
  free(br);
  free(a16);
  free(b16);
  gtl_end(&ctx);
  return rc ? rc : fin;
}
