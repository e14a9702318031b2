// lt_gemm.cuh — ch13's problem, its cuBLASLt plan, the cuBLAS references and the helpers
// baseline.cu and optimized.cu share, so that the two files differ in what the GEMM reads.
//
// The problem: one expert's fused gate+up projection of gpt-oss-20b,
//     Y[M][N] = X[M][K] · W[N][K]^T          N = 2·2880 = 5760, K = 2880
// X: M tokens of activations (M = 4096: a prefill chunk; --M=64: a decode batch), row-major;
// W: the weight, stored like nn.Linear.weight (K contiguous); Y bf16, row-major, fp32
// accumulation. Inputs are seeded: X uniform in [-4, 4), W uniform in [-1/sqrt(K), 1/sqrt(K))
// (nn.Linear's default initialisation bound, PyTorch docs, torch.nn.Linear) — magnitudes
// far apart, as real activations and weights are, which is why each tensor gets its own
// scale.
//
// cuBLASLt is column-major: row-major Y[M][N] is column-major Y^T (N×M, ld N) = W·X^T, so
// its "A" is W (op T on the K×N column-major view), its "B" is X (op N, K×M), its D is Y.
// That is the "TN" layout, the one FP8 kernels on Hopper require (cuBLAS docs,
// cublasLtMatmul: "A must be transposed and B non-transposed"). Both operands are then
// K-contiguous, as they are in memory anyway.
#pragma once
#include <cublasLt.h>
#include <cublas_v2.h>  // before gauntlet.h: check.h defines GTL_CUBLAS when it sees it
#include <cuda_bf16.h>
#include <cuda_fp8.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../common/gauntlet.h"

#define LT_WORKSPACE_BYTES ((size_t)64 << 20)  // as ch02/ceilings gives cuBLASLt
#define LT_X_RANGE 4.0f                        // X uniform in [-4, 4)

typedef struct {
  int64_t M, N, K;
} LtShape;

static double lt_flops(const LtShape *s) { return 2.0 * s->M * s->N * s->K; }
// One GEMM's minimum traffic: X and W read once (in_bytes per element), Y (bf16) written once.
static double lt_gemm_bytes(const LtShape *s, int in_bytes) {
  return (double)(s->M * s->K + s->N * s->K) * in_bytes + 2.0 * s->M * s->N;
}
// The ceiling that binds: the compute ceiling when flops/bytes is right of the ridge point
// (compute ceiling / read ceiling), else the read bandwidth. At M = 4096 the GEMM is ~1000
// FLOP/B, far right of the ridge (~180 bf16, ~330 fp8 on an H200); at M = 64 it is
// ~64-128 FLOP/B, left of it: it streams the weight once and is bound by HBM.
static GtlBound lt_bound(const GtlCeilings *c, double flops, double bytes, GtlBound compute) {
  const double ridge = gtl_ceiling_of(c, compute) * 1e12 / (gtl_ceiling_of(c, GTL_BOUND_READ) * 1e9);
  return !(flops / bytes < ridge) ? compute : GTL_BOUND_READ;
}

// One planned cuBLASLt matmul Y = scale_w·scale_x · X·W^T (scales: device pointers, fp8 only).
typedef struct {
  cublasLtHandle_t lt;
  cublasLtMatmulDesc_t op;
  cublasLtMatrixLayout_t lw, lx, ly;
  cublasLtMatmulAlgo_t algo;
  const void *W, *X;  // W [N][K], X [M][K], both of the planned input type
  void *Y;            // [M][N] bf16
  const void *C;      // beta = 0: never read; NULL or Y, whichever the algorithm accepts
  void *ws;
  int n_timed;        // algorithms of the heuristic's list that ran and were timed
  int pick;           // rank of the kept one in the heuristic's list (0 = its first choice)
  float pick_us, first_us;  // median setup times (µs, L2 flushed) of the kept one and rank 0
} LtGemm;

static void lt_gemm_run(const LtGemm *g, cudaStream_t s) {
  const float alpha = 1.0f, beta = 0.0f;
  GTL_CUBLAS(cublasLtMatmul(g->lt, g->op, &alpha, g->W, g->lw, g->X, g->lx, &beta, g->C, g->ly,
                            g->Y, g->ly, &g->algo, g->ws, LT_WORKSPACE_BYTES, s));
}

// Plan Y = X·W^T for inputs of type `in` (CUDA_R_16BF or CUDA_R_8F_E4M3), fp32 compute and
// scale type, bf16 C/D. fp8: d_scale_w / d_scale_x are the dequantization factors (device
// fp32 scalars, read at every launch) and fast_accum picks CUBLASLT_MATMUL_DESC_FAST_ACCUM.
// Autotunes at setup, the same way for bf16 and fp8: asks cuBLASLt's heuristic for up to
// LT_ALGOS algorithms, keeps those that run on these buffers, times each LT_TUNE_SAMPLES
// times (one call between two events after an L2 flush, as the timed loop runs it; the
// candidates interleaved so that clock drift hits all alike) and keeps the lowest median,
// the heuristic's order breaking ties. The runs write Y, which the caller poisons before
// validating. Returns NULL, or why none runs (the program waives with it).
#define LT_ALGOS 32
#define LT_TUNE_SAMPLES 5
static int lt_cmp_float(const void *a, const void *b) {
  const float x = *(const float *)a, y = *(const float *)b;
  return (x > y) - (x < y);
}
static const char *lt_gemm_plan(LtGemm *g, GtlCtx *ctx, const LtShape *s, cudaDataType_t in,
                                const void *W, const void *X, void *Y, const float *d_scale_w,
                                const float *d_scale_x, int fast_accum) {
  static char why[256];
  cudaStream_t st = ctx->stream;
  memset(g, 0, sizeof *g);
  g->W = W;
  g->X = X;
  g->Y = Y;
  GTL_CUBLAS(cublasLtCreate(&g->lt));
  g->ws = gtl_malloc(LT_WORKSPACE_BYTES, "cuBLASLt workspace");
  const cublasOperation_t tw = CUBLAS_OP_T, tx = CUBLAS_OP_N;
  GTL_CUBLAS(cublasLtMatmulDescCreate(&g->op, CUBLAS_COMPUTE_32F, CUDA_R_32F));
  GTL_CUBLAS(cublasLtMatmulDescSetAttribute(g->op, CUBLASLT_MATMUL_DESC_TRANSA, &tw, sizeof tw));
  GTL_CUBLAS(cublasLtMatmulDescSetAttribute(g->op, CUBLASLT_MATMUL_DESC_TRANSB, &tx, sizeof tx));
  if (in == CUDA_R_8F_E4M3) {
    const int8_t fa = fast_accum ? 1 : 0;
    GTL_CUBLAS(cublasLtMatmulDescSetAttribute(g->op, CUBLASLT_MATMUL_DESC_A_SCALE_POINTER,
                                              &d_scale_w, sizeof d_scale_w));
    GTL_CUBLAS(cublasLtMatmulDescSetAttribute(g->op, CUBLASLT_MATMUL_DESC_B_SCALE_POINTER,
                                              &d_scale_x, sizeof d_scale_x));
    if (fa)  // default 0: partial sums are promoted to fp32 periodically (as ch02/ceilings ran)
      GTL_CUBLAS(cublasLtMatmulDescSetAttribute(g->op, CUBLASLT_MATMUL_DESC_FAST_ACCUM, &fa, sizeof fa));
  }
  GTL_CUBLAS(cublasLtMatrixLayoutCreate(&g->lw, in, s->K, s->N, s->K));
  GTL_CUBLAS(cublasLtMatrixLayoutCreate(&g->lx, in, s->K, s->M, s->K));
  GTL_CUBLAS(cublasLtMatrixLayoutCreate(&g->ly, CUDA_R_16BF, s->N, s->M, s->N));
  cublasLtMatmulPreference_t pref;
  GTL_CUBLAS(cublasLtMatmulPreferenceCreate(&pref));
  const uint64_t ws_max = LT_WORKSPACE_BYTES;
  GTL_CUBLAS(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES,
                                                  &ws_max, sizeof ws_max));
  cublasLtMatmulHeuristicResult_t heur[LT_ALGOS];
  int found = 0;
  cublasStatus_t hs = cublasLtMatmulAlgoGetHeuristic(g->lt, g->op, g->lw, g->lx, g->ly, g->ly,
                                                     pref, LT_ALGOS, heur, &found);
  GTL_CUBLAS(cublasLtMatmulPreferenceDestroy(pref));
  if (hs != CUBLAS_STATUS_SUCCESS) found = 0;
  // Which algorithms run here, each with the C it accepts: fp8 C = NULL first (as
  // PyTorch's scaled_mm passes it), then C = Y; bf16 the other way.
  const void *c_try[2] = {in == CUDA_R_8F_E4M3 ? NULL : Y, in == CUDA_R_8F_E4M3 ? Y : NULL};
  const float alpha = 1.0f, beta = 0.0f;
  cublasStatus_t refused = CUBLAS_STATUS_SUCCESS;
  int rank[LT_ALGOS], n = 0;
  const void *cand_c[LT_ALGOS];
  for (int k = 0; k < found; k++)
    for (int t = 0; t < 2; t++) {
      refused = cublasLtMatmul(g->lt, g->op, &alpha, W, g->lw, X, g->lx, &beta, c_try[t], g->ly, Y,
                               g->ly, &heur[k].algo, g->ws, LT_WORKSPACE_BYTES, st);
      if (refused == CUBLAS_STATUS_SUCCESS) {
        rank[n] = k;
        cand_c[n++] = c_try[t];
        break;
      }
    }
  if (n == 0) {
    snprintf(why, sizeof why, "cuBLASLt has no algorithm for this %s GEMM on this GPU (heuristic: %s, "
             "%d found; cublasLtMatmul: %s; CUBLASLT_LOG_LEVEL=1 prints why)",
             in == CUDA_R_8F_E4M3 ? "fp8 e4m3" : "bf16", cublasGetStatusName(hs), found,
             cublasGetStatusName(refused));
    return why;
  }
  cudaEvent_t ev[2 * LT_ALGOS];
  float ms[LT_ALGOS][LT_TUNE_SAMPLES], med[LT_ALGOS];
  for (int i = 0; i < 2 * n; i++) GTL_CUDA(cudaEventCreate(&ev[i]));
  for (int r = 0; r < LT_TUNE_SAMPLES; r++) {
    for (int i = 0; i < n; i++) {
      gtl_l2_flush(ctx, st);
      GTL_CUDA(cudaEventRecord(ev[2 * i], st));
      GTL_CUBLAS(cublasLtMatmul(g->lt, g->op, &alpha, W, g->lw, X, g->lx, &beta, cand_c[i], g->ly,
                                Y, g->ly, &heur[rank[i]].algo, g->ws, LT_WORKSPACE_BYTES, st));
      GTL_CUDA(cudaEventRecord(ev[2 * i + 1], st));
    }
    GTL_CUDA(cudaStreamSynchronize(st));
    for (int i = 0; i < n; i++) GTL_CUDA(cudaEventElapsedTime(&ms[i][r], ev[2 * i], ev[2 * i + 1]));
  }
  int best = 0;
  for (int i = 0; i < n; i++) {
    qsort(ms[i], LT_TUNE_SAMPLES, sizeof(float), lt_cmp_float);
    med[i] = ms[i][LT_TUNE_SAMPLES / 2];
    if (med[i] < med[best]) best = i;
  }
  for (int i = 0; i < 2 * n; i++) GTL_CUDA(cudaEventDestroy(ev[i]));
  g->algo = heur[rank[best]].algo;
  g->C = cand_c[best];
  g->n_timed = n;
  g->pick = rank[best];
  g->pick_us = med[best] * 1e3f;
  g->first_us = med[0] * 1e3f;
  return NULL;
}

// One line on the autotune's choice, for the report header: "fastest of N ...".
static void lt_gemm_describe(const LtGemm *g, char *buf, size_t size) {
  int algo_id = -1, tile = -1;
  size_t w = 0;
  cublasLtMatmulAlgoConfigGetAttribute(&g->algo, CUBLASLT_ALGO_CONFIG_ID, &algo_id, sizeof algo_id, &w);
  cublasLtMatmulAlgoConfigGetAttribute(&g->algo, CUBLASLT_ALGO_CONFIG_TILE_ID, &tile, sizeof tile, &w);
  snprintf(buf, size, "fastest of the %d algorithms cuBLASLt's heuristic offered that run here, "
           "timed at setup (median of %d, L2 flushed): rank %d (algo id %d, tile id %d), %.1f us; "
           "its first choice %.1f us", g->n_timed, LT_TUNE_SAMPLES, g->pick, algo_id, tile,
           g->pick_us, g->first_us);
}

static void lt_gemm_destroy(LtGemm *g) {
  GTL_CUBLAS(cublasLtMatrixLayoutDestroy(g->lw));
  GTL_CUBLAS(cublasLtMatrixLayoutDestroy(g->lx));
  GTL_CUBLAS(cublasLtMatrixLayoutDestroy(g->ly));
  GTL_CUBLAS(cublasLtMatmulDescDestroy(g->op));
  GTL_CUBLAS(cublasLtDestroy(g->lt));
  GTL_CUDA(cudaFree(g->ws));
}

// The reference: ref[m·N + n] = alpha · Σ_k X[m][k]·W[n][k] by cuBLAS with bf16 inputs,
// CUBLAS_COMPUTE_32F and an fp32 output, widened to double. bf16·bf16 products are exact
// in fp32, so only the fp32 summation rounds. h's stream is the caller's; synchronizes.
static void lt_reference(cublasHandle_t h, const LtShape *s, const __nv_bfloat16 *d_X,
                         const __nv_bfloat16 *d_W, float alpha, double *ref, cudaStream_t st) {
  const size_t nY = (size_t)s->M * s->N;
  float *d_ref = (float *)gtl_malloc(nY * 4, "reference Y [M][N] fp32");
  float *h_ref = (float *)malloc(nY * 4);
  if (!h_ref) {
    fprintf(stderr, "ch13: host out of memory for the %zu-element reference\n", nY);
    exit(GTL_EXIT_RUNTIME);
  }
  const float beta = 0.0f;
  GTL_CUBLAS(cublasGemmEx(h, CUBLAS_OP_T, CUBLAS_OP_N, (int)s->N, (int)s->M, (int)s->K, &alpha,
                          d_W, CUDA_R_16BF, (int)s->K, d_X, CUDA_R_16BF, (int)s->K, &beta, d_ref,
                          CUDA_R_32F, (int)s->N, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
  GTL_CUDA(cudaMemcpyAsync(h_ref, d_ref, nY * 4, cudaMemcpyDeviceToHost, st));
  GTL_CUDA(cudaStreamSynchronize(st));
  for (size_t i = 0; i < nY; i++) ref[i] = h_ref[i];
  free(h_ref);
  GTL_CUDA(cudaFree(d_ref));
}

// Y (bf16, device, already computed) against ref with tolerance tol; a guard band overwritten
// fails too. h_y: nY floats of scratch.
static void lt_check_y(const LtShape *s, const GtlGuarded *g_Y, const double *ref, GtlTol tol,
                       float *h_y, GtlErr *err) {
  const size_t nY = (size_t)s->M * s->N;
  uint16_t *h_bf = (uint16_t *)malloc(nY * 2);
  if (!h_bf) {
    fprintf(stderr, "ch13: host out of memory for %zu outputs\n", nY);
    exit(GTL_EXIT_RUNTIME);
  }
  GTL_CUDA(cudaMemcpy(h_bf, g_Y->ptr, nY * 2, cudaMemcpyDeviceToHost));
  gtl_bf16_to_f32_array(h_bf, h_y, nY);
  free(h_bf);
  gtl_compare(h_y, ref, nY, tol, err);
  const size_t bad_guard = gtl_guarded_check(g_Y);
  if (bad_guard) {
    fprintf(stderr, "ch13: %zu guard bytes around Y were overwritten\n", bad_guard);
    err->pass = 0;
  }
}

// The command line both programs share, checked before the GPU is touched. Presets:
// default M = 4096 (prefill), small = edges off every tile grid (quick under memcheck),
// large = a 16K-token prefill. cuBLASLt's fp8 kernels need 16-byte-aligned rows and
// leading dimensions: K and N multiples of 16.
static void lt_parse(GtlCtx *ctx, const char *program, int argc, char **argv, GtlOpt *opts,
                     int n_opts, int64_t *M, int64_t *N, int64_t *K) {
  gtl_parse(ctx, "ch13", program, argc, argv, opts, n_opts, 10, 100, GTL_L2_COLD);
  const int64_t pre[3][3] = {{4096, 5760, 2880}, {200, 1040, 528}, {16384, 5760, 2880}};
  const int p = ctx->args.size == GTL_SIZE_SMALL ? 1 : ctx->args.size == GTL_SIZE_LARGE ? 2 : 0;
  if (*M < 0) *M = pre[p][0];
  if (*N < 0) *N = pre[p][1];
  if (*K < 0) *K = pre[p][2];
  const int64_t lim = (int64_t)1 << 31;
  if (*M < 1 || *N < 16 || *K < 16 || *N % 16 || *K % 16 || *M * *K >= lim || *N * *K >= lim ||
      *M * *N >= lim)
    gtl_usage_fail(ctx, "need M >= 1, N and K multiples of 16, and M·K, N·K, M·N below 2^31 "
                        "(got M=%lld N=%lld K=%lld)", (long long)*M, (long long)*N, (long long)*K);
}

// Seeded inputs on the device (bf16) and their values on the host (bf16 bits).
static void lt_inputs(GtlCtx *ctx, const LtShape *s, __nv_bfloat16 *d_X, __nv_bfloat16 *d_W,
                      uint16_t *h_X, uint16_t *h_W) {
  const size_t nX = (size_t)s->M * s->K, nW = (size_t)s->N * s->K;
  const float w = 1.0f / sqrtf((float)s->K);
  gtl_fill_uniform(d_X, GTL_BF16, nX, ctx->args.seed, -LT_X_RANGE, LT_X_RANGE, ctx->stream);
  gtl_fill_uniform(d_W, GTL_BF16, nW, ctx->args.seed ^ 0xB0B0ull, -w, w, ctx->stream);
  GTL_CUDA(cudaMemcpyAsync(h_X, d_X, nX * 2, cudaMemcpyDeviceToHost, ctx->stream));
  GTL_CUDA(cudaMemcpyAsync(h_W, d_W, nW * 2, cudaMemcpyDeviceToHost, ctx->stream));
  GTL_CUDA(cudaStreamSynchronize(ctx->stream));
}

// --l2=rotate: n copies of a step's read-only inputs, copy i one region holding a (a_bytes)
// then b (b_bytes), each at a 256-byte boundary; n = gtl_rotate_copies_for(region bytes),
// so that n regions are at least 4x the L2 (common/bench.h says why).
typedef struct {
  int n;          // copies
  size_t stride;  // bytes of one region, a multiple of 256
  size_t b_off;   // offset of b in a region
  char *base;     // n regions back to back
} LtCopies;

static void lt_copies_setup(GtlCtx *ctx, LtCopies *c, const void *a, size_t a_bytes, const void *b,
                            size_t b_bytes) {
  c->b_off = (a_bytes + 255) / 256 * 256;
  c->stride = c->b_off + (b_bytes + 255) / 256 * 256;
  c->n = gtl_rotate_copies_for(ctx, c->stride);
  c->base = (char *)gtl_malloc(c->stride * c->n, "--l2=rotate input copies (>= 4x L2)");
  for (int i = 0; i < c->n; i++) {
    GTL_CUDA(cudaMemcpyAsync(c->base + c->stride * i, a, a_bytes, cudaMemcpyDeviceToDevice, ctx->stream));
    GTL_CUDA(cudaMemcpyAsync(c->base + c->stride * i + c->b_off, b, b_bytes, cudaMemcpyDeviceToDevice,
                             ctx->stream));
  }
  GTL_CUDA(cudaStreamSynchronize(ctx->stream));
}
static void *lt_copy_a(const LtCopies *c, int i) { return c->base + c->stride * i; }
static void *lt_copy_b(const LtCopies *c, int i) { return c->base + c->stride * i + c->b_off; }
static void lt_copies_free(LtCopies *c) {
  if (c->base) GTL_CUDA(cudaFree(c->base));
  memset(c, 0, sizeof *c);
}
