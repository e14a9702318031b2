// ceilings_rows.cuh — ch02/ceilings' measurements: the timed jobs (GtlLaunchFn), the
// validate-then-time helpers, the cuBLASLt GEMM rows (gemm_measure: validated against double
// on 256 seeded outputs) and the launch rows (launch_measure: eager and CUDA graph). Each
// returns the row's rate, NaN when its check failed. Kernels in ceilings_kernels.cuh.
#pragma once
#include <cublasLt.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>

#include "../common/gauntlet.h"
#include "ceilings_kernels.cuh"

#define LAUNCHES 1000   // empty kernels per timed sample

// ---- timed jobs (GtlLaunchFn) ------------------------------------------------------------
typedef struct {
  const uint4 *src;
  uint4 *dst;
  size_t n16;
  unsigned *sum;
  int blocks;
} StreamJob;
static void copy_run(void *u, cudaStream_t s) {
  const StreamJob *j = (const StreamJob *)u;
  copy_kernel<<<j->blocks, THREADS, 0, s>>>(j->src, j->dst, j->n16);
  GTL_LAUNCH();
}
static void memcpy_d2d_run(void *u, cudaStream_t s) {
  const StreamJob *j = (const StreamJob *)u;
  GTL_CUDA(cudaMemcpyAsync(j->dst, j->src, j->n16 * 16, cudaMemcpyDeviceToDevice, s));
}
static void read_run(void *u, cudaStream_t s) {
  const StreamJob *j = (const StreamJob *)u;
  read_kernel<<<j->blocks, THREADS, 0, s>>>(j->src, j->n16, j->sum);
  GTL_LAUNCH();
}

typedef struct {
  void *dst;
  const void *src;
  size_t bytes;
  cudaMemcpyKind kind;
} XferJob;
static void xfer_run(void *u, cudaStream_t s) {
  const XferJob *j = (const XferJob *)u;
  GTL_CUDA(cudaMemcpyAsync(j->dst, j->src, j->bytes, j->kind, s));
}

typedef struct {
  cublasLtHandle_t lt;
  cublasLtMatmulDesc_t op;
  cublasLtMatrixLayout_t la, lb, ld;
  cublasLtMatmulAlgo_t algo;
  const void *a, *b, *c;  // c: never read (beta = 0); NULL for fp8, as PyTorch's scaled_mm does
  void *d, *ws;
  size_t ws_bytes;
} LtJob;
static cublasStatus_t lt_try(const LtJob *j, cudaStream_t s) {
  const float alpha = 1.0f, beta = 0.0f;
  return cublasLtMatmul(j->lt, j->op, &alpha, j->a, j->la, j->b, j->lb, &beta, j->c, j->ld,
                        j->d, j->ld, &j->algo, j->ws, j->ws_bytes, s);
}
static void lt_run(void *u, cudaStream_t s) { GTL_CUBLAS(lt_try((const LtJob *)u, s)); }

typedef struct {
  float *out;
  int blocks, iters;
  float mul, add;
} FfmaJob;
static void ffma_run(void *u, cudaStream_t s) {
  const FfmaJob *j = (const FfmaJob *)u;
  ffma_kernel<<<j->blocks, THREADS, 0, s>>>(j->out, j->iters, j->mul, j->add);
  GTL_LAUNCH();
}

typedef struct {
  int *count;
  cudaGraphExec_t exec;
} LaunchJob;
static void eager_run(void *u, cudaStream_t s) {
  const LaunchJob *j = (const LaunchJob *)u;
  for (int i = 0; i < LAUNCHES; i++) empty_kernel<<<1, 1, 0, s>>>(j->count);
  GTL_LAUNCH();  // once per batch: a per-launch check would add host time to what is measured
}
static void graph_run(void *u, cudaStream_t s) {
  GTL_CUDA(cudaGraphLaunch(((const LaunchJob *)u)->exec, s));
}

// ---- helpers -------------------------------------------------------------------------------
static void check_exact(GtlResult *r, unsigned long long bad, double n) {
  r->validated = 1;
  r->err.rel_l2 = bad / n;  // fraction of words that differ
  r->err.max_abs = bad ? NAN : 0;
  r->err.n_bad = (size_t)bad;
  r->err.tol_rel_l2 = 0;
  r->err.pass = bad == 0;
}

// Time job unless its validation failed; print the row; return its rate (GB/s when it
// moves bytes, else TFLOP/s), NaN when it failed validation.
static double time_row(GtlCtx *ctx, GtlResult *r, GtlLaunchFn fn, void *job, int *ok) {
  if (r->validated && !r->err.pass) {
    *ok = 0;
    gtl_report_row(ctx, r);
    return NAN;
  }
  gtl_bench(ctx, fn, job, &r->st);
  gtl_report_row(ctx, r);
  return r->flops == r->flops ? gtl_result_tflops(r) : gtl_result_gbps(r);
}

static unsigned long long count_mismatch(const uint4 *a, const uint4 *b, size_t n16,
                                         unsigned long long *d_bad, const GtlCtx *ctx) {
  unsigned long long bad = 0;
  GTL_CUDA(cudaMemsetAsync(d_bad, 0, sizeof bad, ctx->stream));
  mismatch_kernel<<<ctx->dev.sms * 8, THREADS, 0, ctx->stream>>>(a, b, n16, d_bad);
  GTL_LAUNCH();
  GTL_CUDA(cudaMemcpyAsync(&bad, d_bad, sizeof bad, cudaMemcpyDeviceToHost, ctx->stream));
  GTL_CUDA(cudaStreamSynchronize(ctx->stream));
  return bad;
}

// ---- the measurements ----------------------------------------------------------------------
typedef struct {
  const char *name;
  GtlDtype dt;
  cudaDataType_t ab, d;
  cublasComputeType_t compute;
  GtlBound bound;
  float a_scale, b_scale;  // per-tensor scales, device-side (fp8); 0: none
} GemmSpec;

static float elem_to_f32(const GemmSpec *g, const unsigned char *p, size_t i) {
  if (g->ab == CUDA_R_16BF) return gtl_bf16_to_f32(((const uint16_t *)p)[i]);
  if (g->ab == CUDA_R_8F_E4M3) return gtl_fp8e4m3_to_f32(p[i]);
  return ((const float *)p)[i];
}
static size_t type_bytes(cudaDataType_t t) {
  return t == CUDA_R_32F ? 4 : t == CUDA_R_16BF ? 2 : 1;
}

// D[n×n] = scale_a·scale_b · A^T·B through cuBLASLt ("TN": A and B both K-contiguous, the
// layout fp8 requires on Hopper). Validates 256 seeded outputs against double, then times.
static double gemm_measure(GtlCtx *ctx, const GemmSpec *g, int64_t n, cublasLtHandle_t lt,
                           void *ws, size_t ws_bytes, int *ok) {
  const size_t nn = (size_t)n * n, ab = type_bytes(g->ab), db = type_bytes(g->d);
  LtJob j = {lt, NULL, NULL, NULL, NULL, {}, NULL, NULL, NULL, NULL, ws, ws_bytes};
  void *d_a = gtl_malloc(nn * ab, "GEMM A"), *d_b = gtl_malloc(nn * ab, "GEMM B");
  GtlGuarded g_d;
  j.d = gtl_guarded_alloc(&g_d, nn * db, "GEMM D");
  j.a = d_a;
  j.b = d_b;
  GtlDtype fill = g->dt == GTL_TF32 ? GTL_FP32 : g->dt;
  gtl_fill_uniform(d_a, fill, nn, ctx->args.seed + 11, -1.0f, 1.0f, ctx->stream);
  gtl_fill_uniform(d_b, fill, nn, ctx->args.seed + 12, -1.0f, 1.0f, ctx->stream);
  if (g->dt == GTL_TF32) {  // tf32 values: the reference then sees exactly what the GPU reads
    round_tf32_kernel<<<ctx->dev.sms * 8, THREADS, 0, ctx->stream>>>((unsigned *)d_a, nn);
    GTL_LAUNCH();
    round_tf32_kernel<<<ctx->dev.sms * 8, THREADS, 0, ctx->stream>>>((unsigned *)d_b, nn);
    GTL_LAUNCH();
  }
  float *d_scale[2];  // one allocation each: every scale pointer 256-byte aligned
  const float scales[2] = {g->a_scale, g->b_scale};
  for (int k = 0; k < 2; k++) {
    d_scale[k] = (float *)gtl_malloc(sizeof(float), "GEMM scale");
    GTL_CUDA(cudaMemcpy(d_scale[k], &scales[k], sizeof(float), cudaMemcpyHostToDevice));
  }

  const cublasOperation_t ta = CUBLAS_OP_T, tb = CUBLAS_OP_N;
  GTL_CUBLAS(cublasLtMatmulDescCreate(&j.op, g->compute, CUDA_R_32F));
  GTL_CUBLAS(cublasLtMatmulDescSetAttribute(j.op, CUBLASLT_MATMUL_DESC_TRANSA, &ta, sizeof ta));
  GTL_CUBLAS(cublasLtMatmulDescSetAttribute(j.op, CUBLASLT_MATMUL_DESC_TRANSB, &tb, sizeof tb));
  if (g->a_scale != 0) {
    float *pa = d_scale[0], *pb = d_scale[1];
    GTL_CUBLAS(cublasLtMatmulDescSetAttribute(j.op, CUBLASLT_MATMUL_DESC_A_SCALE_POINTER, &pa,
                                              sizeof pa));
    GTL_CUBLAS(cublasLtMatmulDescSetAttribute(j.op, CUBLASLT_MATMUL_DESC_B_SCALE_POINTER, &pb,
                                              sizeof pb));
  }
  GTL_CUBLAS(cublasLtMatrixLayoutCreate(&j.la, g->ab, n, n, n));
  GTL_CUBLAS(cublasLtMatrixLayoutCreate(&j.lb, g->ab, n, n, n));
  GTL_CUBLAS(cublasLtMatrixLayoutCreate(&j.ld, g->d, n, n, n));
  cublasLtMatmulPreference_t pref;
  GTL_CUBLAS(cublasLtMatmulPreferenceCreate(&pref));
  const uint64_t ws_max = ws_bytes;
  GTL_CUBLAS(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES,
                                                  &ws_max, sizeof ws_max));
  enum { ALGOS = 8 };
  cublasLtMatmulHeuristicResult_t heur[ALGOS];
  int found = 0, chosen = -1;
  cublasStatus_t st = cublasLtMatmulAlgoGetHeuristic(lt, j.op, j.la, j.lb, j.ld, j.ld, pref, ALGOS,
                                                     heur, &found);
  // The heuristic ranks algorithms without seeing the pointers; the first one cuBLASLt
  // accepts runs (the poisoned output of that run is the one validated below). C is never
  // read (beta = 0): tried first as NULL for fp8 (as PyTorch's scaled_mm passes it) and as
  // D otherwise, then the other way round.
  const void *c_try[2] = {g->a_scale != 0 ? NULL : j.d, g->a_scale != 0 ? j.d : NULL};
  cublasStatus_t refused = CUBLAS_STATUS_SUCCESS;
  for (int t = 0; t < 2 && chosen < 0; t++)
    for (int k = 0; st == CUBLAS_STATUS_SUCCESS && k < found && chosen < 0; k++) {
      j.algo = heur[k].algo;
      j.c = c_try[t];
      gtl_poison(j.d, nn * db, ctx->stream);
      cublasStatus_t run = lt_try(&j, ctx->stream);
      if (run == CUBLAS_STATUS_SUCCESS) chosen = k;
      else refused = run;
    }
  if (chosen > 0 || (chosen == 0 && refused != CUBLAS_STATUS_SUCCESS)) {
    if (!ctx->args.json)
      printf("# %s: runs with heuristic algorithm %d, C %s (earlier ones refused: %s)\n",
             g->name, chosen, j.c ? "= D" : "= NULL", cublasGetStatusName(refused));
  }
  double rate = NAN;
  if (chosen < 0) {
    if (!ctx->args.json)
      printf("# %s: no cuBLASLt algorithm runs it on this GPU (heuristic: %s, %d found): null\n",
             g->name, cublasGetStatusName(st), found);
  } else {
    GtlResult r;
    gtl_result_init(&r, ctx, gtl_dtype_name(g->dt), "");
    r.variant = g->name;
    r.flops = 2.0 * n * n * n;
    r.bytes = NAN;
    r.bound = g->bound;
    r.ref = "cpu_double_sampled";
    if (ctx->args.verify) {
      enum { S = 256 };
      GTL_CUDA(cudaStreamSynchronize(ctx->stream));
      unsigned char *h_d = (unsigned char *)malloc(nn * db);
      unsigned char *ra = (unsigned char *)malloc(n * ab), *rb = (unsigned char *)malloc(n * ab);
      GTL_CUDA(cudaMemcpy(h_d, j.d, nn * db, cudaMemcpyDeviceToHost));
      size_t non_finite = 0;
      for (size_t i = 0; i < nn; i++)
        non_finite += !isfinite(db == 4 ? ((const float *)h_d)[i]
                                        : gtl_bf16_to_f32(((const uint16_t *)h_d)[i]));
      float out[S];
      double ref[S];
      const double scale = g->a_scale != 0 ? (double)g->a_scale * g->b_scale : 1.0;
      for (int s = 0; s < S; s++) {
        int64_t row = gtl_uniform_u32(ctx->args.seed ^ 0xCE11ull, 2 * s, (uint32_t)n);
        int64_t col = gtl_uniform_u32(ctx->args.seed ^ 0xCE11ull, 2 * s + 1, (uint32_t)n);
        GTL_CUDA(cudaMemcpy(ra, (const unsigned char *)d_a + row * n * ab, n * ab,
                            cudaMemcpyDeviceToHost));
        GTL_CUDA(cudaMemcpy(rb, (const unsigned char *)d_b + col * n * ab, n * ab,
                            cudaMemcpyDeviceToHost));
        double acc = 0;
        for (int64_t k = 0; k < n; k++)
          acc += (double)elem_to_f32(g, ra, k) * elem_to_f32(g, rb, k);
        ref[s] = scale * acc;
        size_t i = (size_t)row + (size_t)col * n;  // D is column-major, ld n
        out[s] = db == 4 ? ((const float *)h_d)[i] : gtl_bf16_to_f32(((const uint16_t *)h_d)[i]);
      }
      gtl_compare(out, ref, S, gtl_tol_for(g->dt), &r.err);
      r.err.pass = r.err.pass && non_finite == 0 && gtl_guarded_check(&g_d) == 0;
      r.validated = 1;
      if (!ctx->args.json) gtl_err_print(stdout, &r.err, g->name);
      free(h_d);
      free(ra);
      free(rb);
    }
    rate = time_row(ctx, &r, lt_run, &j, ok);
  }
  GTL_CUBLAS(cublasLtMatmulPreferenceDestroy(pref));
  GTL_CUBLAS(cublasLtMatrixLayoutDestroy(j.la));
  GTL_CUBLAS(cublasLtMatrixLayoutDestroy(j.lb));
  GTL_CUBLAS(cublasLtMatrixLayoutDestroy(j.ld));
  GTL_CUBLAS(cublasLtMatmulDescDestroy(j.op));
  GTL_CUDA(cudaFree(d_a));
  GTL_CUDA(cudaFree(d_b));
  GTL_CUDA(cudaFree(d_scale[0]));
  GTL_CUDA(cudaFree(d_scale[1]));
  gtl_guarded_free(&g_d);
  return rate;
}

static cudaGraphExec_t launch_graph(int *count, cudaStream_t s) {
  cudaGraph_t graph;
  cudaGraphExec_t exec;
  GTL_CUDA(cudaStreamBeginCapture(s, cudaStreamCaptureModeThreadLocal));
  for (int i = 0; i < LAUNCHES; i++) empty_kernel<<<1, 1, 0, s>>>(count);
  GTL_LAUNCH();
  GTL_CUDA(cudaStreamEndCapture(s, &graph));
  size_t nodes = 0;
  GTL_CUDA(cudaGraphGetNodes(graph, NULL, &nodes));
  if (nodes != LAUNCHES) {
    fprintf(stderr, "ch02/ceilings: captured %zu graph nodes, expected %d\n", nodes, LAUNCHES);
    exit(GTL_EXIT_RUNTIME);
  }
  GTL_CUDA(cudaGraphInstantiate(&exec, graph, 0));
  GTL_CUDA(cudaGraphDestroy(graph));
  return exec;
}

// Launch rows: the validated run counts LAUNCHES kernels; timed in batches of LAUNCHES,
// reported per launch (eager) or per node (graph).
static double launch_measure(GtlCtx *ctx, const char *name, int graph, int *d_count, int *ok) {
  LaunchJob j = {d_count, NULL};
  GtlResult r;
  gtl_result_init(&r, ctx, "none", "");
  r.variant = name;
  if (ctx->args.verify) {
    int count = 0;
    GTL_CUDA(cudaMemsetAsync(d_count, 0, sizeof count, ctx->stream));
    if (graph) j.exec = launch_graph(d_count, ctx->stream);
    (graph ? graph_run : eager_run)(&j, ctx->stream);
    GTL_CUDA(cudaMemcpyAsync(&count, d_count, sizeof count, cudaMemcpyDeviceToHost, ctx->stream));
    GTL_CUDA(cudaStreamSynchronize(ctx->stream));
    check_exact(&r, count == LAUNCHES ? 0 : 1, 1);
    if (graph) GTL_CUDA(cudaGraphExecDestroy(j.exec));
  }
  if (r.validated && !r.err.pass) {
    *ok = 0;
    gtl_report_row(ctx, &r);
    return NAN;
  }
  j.count = NULL;
  if (graph) j.exec = launch_graph(NULL, ctx->stream);
  gtl_bench(ctx, graph ? graph_run : eager_run, &j, &r.st);
  if (graph) GTL_CUDA(cudaGraphExecDestroy(j.exec));
  GtlStats *st = &r.st;  // per batch of LAUNCHES → per launch
  st->median /= LAUNCHES, st->p95 /= LAUNCHES, st->p99 /= LAUNCHES, st->min /= LAUNCHES;
  st->max /= LAUNCHES, st->mean /= LAUNCHES, st->stddev /= LAUNCHES;
  gtl_report_row(ctx, &r);
  return st->median * 1e3;  // µs per launch
}
