// gemm.cuh — ch10's problem, cuBLAS reference and timing, and the driver shared by
// baseline.cu and optimized.cu, so that the two files differ only in their kernel. The
// optimized kernels are in mma.cuh and wgmma.cuh (kernels and launchers, for the lab).
//
// The problem: one expert's gate+up projection of gpt-oss-20b at prefill,
//     C[M][N] = A[M][K] · B[N][K]^T        (bf16 in, fp32 accumulate, bf16 out)
// A holds M = 4096 tokens of hidden size K = 2880 (row-major, K contiguous); B is the
// fused gate+up weight, N = 2·2880 = 5760 rows of K, stored like nn.Linear.weight (K
// contiguous, "TN" in BLAS terms); C is row-major. Every program also runs at any
// --M/--N/--K (K a multiple of 8: rows must be whole 16-byte chunks), edges included.
//
// Roofline: flops = 2·M·N·K (135.9 GFLOP at the default size); bytes = A and B read
// once and C written once = 2·(M·K + N·K + M·N) (104.0 MB). That is ~1300 FLOP per byte,
// six times the H200's bf16 ridge point (~990 TFLOP/s / 4.8 TB/s ≈ 206 FLOP/B): bound by
// the tensor cores, reported against the measured bf16 GEMM ceiling.
//
// Reference: cuBLAS cublasGemmEx on the same bf16 inputs with CUBLAS_COMPUTE_32F and an
// fp32 output (the project's reference for GEMM-sized work: cuBLAS with FP32 compute), so
// only the kernel's bf16 output rounding and its summation order differ. cuBLAS with a
// bf16 output — the library's answer to the same problem — is timed in the same run:
// its median is ref_median_ms and pct_of_cublas = 100 · cuBLAS median / kernel median.
#pragma once
#include <cublas_v2.h>
#include <cuda_bf16.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../common/gauntlet.h"

typedef struct {
  int64_t M, N, K;
  const __nv_bfloat16 *d_A;  // [M][K] activations, row-major
  const __nv_bfloat16 *d_B;  // [N][K] weights, K contiguous (nn.Linear layout)
  __nv_bfloat16 *d_C;        // [M][N] row-major
} GemmProblem;

// One kernel a program offers. The driver runs variants[0]; a program that lists more
// than one (a Hopper TMA + wgmma kernel beside the mma.sync one, say) gets a
// --variant=NAME flag from gemm_main with no other change.
typedef struct {
  const char *name;      // row label and JSON "variant"
  const char *strategy;  // one line for the header
  void (*launch)(const GemmProblem *p, cudaStream_t s);
  int cc_major, cc_minor;  // the oldest GPU it runs on
  int smem_bytes;          // dynamic shared memory per block (0: static only, <= 48 KB)
  // NULL, or a check for what the compute capability alone does not say (sm_90a code
  // runs on CC 9.0 only, and only if the binary carries it): returns NULL when the
  // kernel runs on this device, else one line saying why not (the program waives).
  const char *(*unsupported)(const GtlDevice *dev);
} GemmVariant;

static double gemm_flops(const GemmProblem *p) { return 2.0 * p->M * p->N * p->K; }
static double gemm_bytes(const GemmProblem *p) {
  return 2.0 * ((double)p->M * p->K + (double)p->N * p->K + (double)p->M * p->N);
}

// C = A·B^T through cuBLAS, which is column-major: row-major C[M][N] is column-major
// C^T[N][M] = B·A^T, i.e. op(B) = T on the column-major [K][N] view of B and op(A) = N on
// the column-major [K][M] view of A. c_type CUDA_R_32F gives the reference,
// CUDA_R_16BF the timed competitor.
static void gemm_cublas(cublasHandle_t h, const GemmProblem *p, void *d_C,
                        cudaDataType_t c_type) {
  const float alpha = 1.0f, beta = 0.0f;
  GTL_CUBLAS(cublasGemmEx(h, CUBLAS_OP_T, CUBLAS_OP_N, (int)p->N, (int)p->M, (int)p->K,
                          &alpha, p->d_B, CUDA_R_16BF, (int)p->K, p->d_A, CUDA_R_16BF,
                          (int)p->K, &beta, d_C, c_type, (int)p->N, CUBLAS_COMPUTE_32F,
                          CUBLAS_GEMM_DEFAULT));
}

typedef struct {
  const GemmVariant *v;
  const GemmProblem *p;
  cublasHandle_t h;  // cuBLAS runs only
} GemmRun;

static void gemm_run_kernel(void *user, cudaStream_t s) {
  const GemmRun *r = (const GemmRun *)user;
  r->v->launch(r->p, s);
}
static void gemm_run_cublas(void *user, cudaStream_t s) {
  const GemmRun *r = (const GemmRun *)user;
  (void)s;  // the handle is bound to ctx.stream, the stream gtl_bench times
  gemm_cublas(r->h, r->p, r->p->d_C, CUDA_R_16BF);
}

// Poison C, run once, compare C (bf16) against ref and check C's guard bands.
static void gemm_validate(GtlCtx *ctx, const GemmProblem *p, GtlGuarded *g_C,
                          void (*run)(void *, cudaStream_t), void *user, const double *ref,
                          float *h_out, uint16_t *h_bf, GtlResult *r) {
  const size_t n = (size_t)p->M * p->N;
  gtl_poison(p->d_C, n * 2, ctx->stream);
  run(user, ctx->stream);
  GTL_CUDA(cudaStreamSynchronize(ctx->stream));
  GTL_CUDA(cudaMemcpy(h_bf, p->d_C, n * 2, cudaMemcpyDeviceToHost));
  gtl_bf16_to_f32_array(h_bf, h_out, n);
  gtl_compare(h_out, ref, n, gtl_tol_for(GTL_BF16), &r->err);
  size_t bad_guard = gtl_guarded_check(g_C);
  if (bad_guard) {
    fprintf(stderr, "ch10: %zu guard bytes around C were overwritten\n", bad_guard);
    r->err.pass = 0;
  }
  r->validated = 1;
}

// Why variant v cannot run on this GPU, or NULL when it can (CC, shared memory, and the
// variant's own check). buf holds the message.
static const char *gemm_variant_unfit(const GtlCtx *ctx, const GemmVariant *v, char *buf,
                                      size_t n) {
  const GtlDevice *d = &ctx->dev;
  if (d->cc_major < v->cc_major || (d->cc_major == v->cc_major && d->cc_minor < v->cc_minor)) {
    snprintf(buf, n, "variant %s needs compute capability %d.%d or newer; found %s, CC %d.%d",
             v->name, v->cc_major, v->cc_minor, d->name, d->cc_major, d->cc_minor);
    return buf;
  }
  if ((size_t)v->smem_bytes > d->smem_optin) {
    snprintf(buf, n, "variant %s needs %d bytes of shared memory per block; %s allows %zu",
             v->name, v->smem_bytes, d->name, d->smem_optin);
    return buf;
  }
  const char *reason = v->unsupported ? v->unsupported(d) : NULL;
  if (reason) snprintf(buf, n, "%s", reason);
  return reason ? buf : NULL;
}

// main() of every ch10 program: parse, device, feature check, inputs, reference, poison,
// validated run, validate, time the kernel, validate and time cuBLAS bf16, report.
// The --variant help line, naming the kernels this program offers ("…: wgmma, mma").
#define GEMM_VARIANT_HELP "which kernel of this program to run: "
static const char *gemm_variant_help(const GemmVariant *v, int n) {
  static char buf[256];
  size_t o = (size_t)snprintf(buf, sizeof buf, "%s", GEMM_VARIANT_HELP);
  for (int i = 0; i < n && o < sizeof buf; i++)
    o += (size_t)snprintf(buf + o, sizeof buf - o, "%s%s", i ? ", " : "", v[i].name);
  return buf;
}

static int gemm_main(int argc, char **argv, const char *program, const GemmVariant *variants,
                     int n_variants) {
  int64_t M = -1, N = -1, K = -1;  // -1: take the --size preset
  const char *vname = NULL;  // NULL: the first variant of the table this GPU can run
  GtlOpt opts[] = {{"M", GTL_OPT_INT, &M, "rows of A and C: tokens (default 4096)"},
                   {"N", GTL_OPT_INT, &N, "rows of B, columns of C (default 5760)"},
                   {"K", GTL_OPT_INT, &K, "reduction length, a multiple of 8 (default 2880)"},
                   {"variant", GTL_OPT_STR, &vname, gemm_variant_help(variants, n_variants)}};
  GtlCtx ctx;
  gtl_parse(&ctx, "ch10", program, argc, argv, opts, n_variants > 1 ? 4 : 3, 10, 100,
            GTL_L2_COLD);
  const GemmVariant *v = vname ? NULL : &variants[0];
  for (int i = 0; vname && i < n_variants; i++)
    if (!strcmp(variants[i].name, vname)) v = &variants[i];
  if (!v)
    gtl_usage_fail(&ctx, "unknown --variant=%s (this program has: %s)", vname,
                   gemm_variant_help(variants, n_variants) + strlen(GEMM_VARIANT_HELP));
  // Presets: small = every dimension off the tile grid (edges, quick under memcheck);
  // large = a 16K-token prefill through the same expert.
  const int64_t pre[3][3] = {{4096, 5760, 2880}, {1000, 1000, 1000}, {16384, 5760, 2880}};
  const int preset = ctx.args.size == GTL_SIZE_SMALL ? 1 : ctx.args.size == GTL_SIZE_LARGE ? 2 : 0;
  const int64_t *d = pre[preset];
  if (M < 0) M = d[0];
  if (N < 0) N = d[1];
  if (K < 0) K = d[2];
  // Kernels index elements with 32-bit offsets, and M / 128 blocks must fit grid.y.
  const int64_t lim = (int64_t)1 << 31;
  if (M < 1 || N < 1 || K < 8 || K % 8 || M > (1 << 22) || M * K >= lim || N * K >= lim ||
      M * N >= lim)
    gtl_usage_fail(&ctx, "need 1 <= M <= 2^22, N >= 1, K >= 8 a multiple of 8, and M·K, "
                         "N·K, M·N below 2^31 (got M=%lld N=%lld K=%lld)",
                   (long long)M, (long long)N, (long long)K);
  gtl_open(&ctx);
  // An explicit --variant runs that kernel or waives; by default the first variant the GPU
  // can run is taken (wgmma on Hopper, mma.sync on Ampere and newer), and said so.
  char why[384], first_why[384];
  const char *unfit = gemm_variant_unfit(&ctx, v, first_why, sizeof first_why);
  for (int i = 1; unfit && !vname && i < n_variants; i++)
    if (!gemm_variant_unfit(&ctx, &variants[i], why, sizeof why)) {
      if (!ctx.args.json)
        printf("# variant %s chosen: %s\n", variants[i].name, first_why);
      v = &variants[i];
      unfit = NULL;
    }
  gtl_require(&ctx, unfit == NULL, first_why);

  char workload[128];
  snprintf(workload, sizeof workload, "M%lld_N%lld_K%lld", (long long)M, (long long)N,
           (long long)K);
  GemmProblem p = {M, N, K, NULL, NULL, NULL};
  const size_t nA = (size_t)M * K, nB = (size_t)N * K, nC = (size_t)M * N;
  gtl_phase_push(GTL_PHASE_SETUP);
  __nv_bfloat16 *d_A = (__nv_bfloat16 *)gtl_malloc(nA * 2, "A [M][K] bf16");
  __nv_bfloat16 *d_B = (__nv_bfloat16 *)gtl_malloc(nB * 2, "B [N][K] bf16");
  GtlGuarded g_C;
  p.d_C = (__nv_bfloat16 *)gtl_guarded_alloc(&g_C, nC * 2, "C [M][N] bf16");
  gtl_fill_uniform(d_A, GTL_BF16, nA, ctx.args.seed, -1.0f, 1.0f, ctx.stream);
  gtl_fill_uniform(d_B, GTL_BF16, nB, ctx.args.seed ^ 0xB0B0ull, -1.0f, 1.0f, ctx.stream);
  p.d_A = d_A;
  p.d_B = d_B;
  cublasHandle_t h;
  GTL_CUBLAS(cublasCreate(&h));
  GTL_CUBLAS(cublasSetStream(h, ctx.stream));
  gtl_phase_pop();

  char notes[768];
  snprintf(notes, sizeof notes,
           "kernel %s: %s\n"
           "layout: A [M][K] row-major, B [N][K] K-contiguous (nn.Linear), C [M][N]; "
           "bf16 in/out, fp32 accumulate\n"
           "roofline: %.1f GFLOP, %.1f MB (A, B read once, C written once) = %.0f FLOP/B: "
           "bound by bf16 tensor cores\n"
           "reference: cuBLAS GemmEx bf16 in, fp32 compute, fp32 out; cuBLAS with bf16 out "
           "timed in the same run",
           v->name, v->strategy, gemm_flops(&p) / 1e9, gemm_bytes(&p) / 1e6,
           gemm_flops(&p) / gemm_bytes(&p));
  gtl_report_header(&ctx, workload, notes);

  GtlResult r, rc;  // the kernel, and cuBLAS bf16
  gtl_result_init(&r, &ctx, "bf16", workload);
  r.variant = v->name;
  r.bytes = gemm_bytes(&p);
  r.flops = gemm_flops(&p);
  r.bound = GTL_BOUND_BF16;
  r.ref = "cublas_fp32";
  rc = r;
  rc.variant = "cublas_bf16";
  GemmRun run = {v, &p, h};

  double *ref = NULL;
  float *h_out = NULL;
  uint16_t *h_bf = NULL;
  if (ctx.args.verify) {
    gtl_phase_push(GTL_PHASE_REFERENCE);
    float *d_ref = (float *)gtl_malloc(nC * 4, "reference C [M][N] fp32");
    gemm_cublas(h, &p, d_ref, CUDA_R_32F);
    h_out = (float *)malloc(nC * sizeof(float));
    h_bf = (uint16_t *)malloc(nC * 2);
    ref = (double *)malloc(nC * sizeof(double));
    if (!h_out || !h_bf || !ref) {
      fprintf(stderr, "ch10: host out of memory for %zu-element validation buffers\n", nC);
      return GTL_EXIT_RUNTIME;
    }
    GTL_CUDA(cudaMemcpyAsync(h_out, d_ref, nC * 4, cudaMemcpyDeviceToHost, ctx.stream));
    GTL_CUDA(cudaStreamSynchronize(ctx.stream));
    for (size_t i = 0; i < nC; i++) ref[i] = h_out[i];
    GTL_CUDA(cudaFree(d_ref));
    gtl_phase_pop();

    gtl_phase_push(GTL_PHASE_VALIDATE);
    gemm_validate(&ctx, &p, &g_C, gemm_run_kernel, &run, ref, h_out, h_bf, &r);
    gtl_phase_pop();
    if (!r.err.pass) {
      gtl_report_row(&ctx, &r);
      return gtl_report_finish(&ctx, &r);  // never time a wrong kernel
    }
  }
  gtl_bench(&ctx, gemm_run_kernel, &run, &r.st);

  // cuBLAS bf16 under its own NVTX names (ch10.cublas.*), so that the profile filter on
  // ch10.<program>.timed sees only this program's kernel.
  gtl_nvtx_init("ch10", "cublas");
  if (ctx.args.verify) {
    gtl_phase_push(GTL_PHASE_VALIDATE);
    gemm_validate(&ctx, &p, &g_C, gemm_run_cublas, &run, ref, h_out, h_bf, &rc);
    gtl_phase_pop();
  }
  gtl_bench(&ctx, gemm_run_cublas, &run, &rc.st);

  r.ref_median_ms = rc.st.median;
  const double pct = 100.0 * rc.st.median / r.st.median;  // = kernel TFLOP/s / cuBLAS TFLOP/s
  gtl_result_extra(&r, "pct_of_cublas", pct);
  gtl_result_extra(&r, "cublas_tflops", gtl_result_tflops(&rc));
  gtl_report_row(&ctx, &r);
  gtl_report_row(&ctx, &rc);
  if (!ctx.args.json)
    printf("# %s reaches %.1f%% of cuBLAS bf16 (%.1f vs %.1f TFLOP/s)\n", v->name, pct,
           gtl_result_tflops(&r), gtl_result_tflops(&rc));
  int code = gtl_report_finish(&ctx, &r);

  free(ref);
  free(h_out);
  free(h_bf);
  GTL_CUBLAS(cublasDestroy(h));
  GTL_CUDA(cudaFree(d_A));
  GTL_CUDA(cudaFree(d_B));
  gtl_guarded_free(&g_C);
  gtl_end(&ctx);
  return code;
}
