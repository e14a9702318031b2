// ch02 GPU architecture — ceilings: measure this GPU's roofline ceilings.
//
// What it does: every chapter reports "% of ceiling" against the numbers this program
// measures, not against a datasheet. It measures, validating each result before it
// trusts the number (a failed check prints FAIL and writes null):
//   copy_kernel   16-byte-vector copy over a buffer >= 8x L2 (bytes read + written)
//   memcpy_d2d    cudaMemcpyAsync device-to-device, same buffers: must agree within 10%
//   read_kernel   streaming read-and-sum (a reduction): the ceiling of weight-reading code
//   gemm_bf16/fp8/tf32   cuBLASLt n×n×n dense GEMM (n = 8192; fp8 e4m3 with per-tensor
//                 scales, null where the GPU has no fp8 tensor cores)
//   ffma_fp32     an FFMA-bound kernel: the SIMT fp32 rate
//   h2d/d2h_pinned   256 MB cudaMemcpyAsync from/to page-locked host memory
//   launch_eager / launch_graph   an empty kernel, µs per launch eager and per graph node
// then prints one JSON line (schema gauntlet.ceilings.v1) that scripts/check_expectations
// merges into expectations/<hardware_key>.json. Exit 0 when every check passed, 1 when one
// failed (under compute-sanitizer the instrumented copy kernel misses the 10% agreement
// with cudaMemcpy, so 1 is expected there).
//
// Build and run:   make ch02 && ./ch02/ceilings      (--json: only the JSON line)
// Nsight Compute:  ncu --clock-control none --nvtx --nvtx-include "gauntlet@ch02.ceilings.timed]"
//   ./ch02/ceilings --iters=3   — dram__throughput.avg.pct_of_peak_sustained_elapsed for the
//   copy/read kernels, sm__pipe_fma_cycles_active.avg.pct_of_peak_sustained_active for FFMA,
//   sm__pipe_tensor_cycles_active.avg.pct_of_peak_sustained_active for the GEMMs.
// Book: GPU architecture — the hardware's ceilings; performance basics — the roofline.
#include <cublasLt.h>
#include <cublas_v2.h>  // before gauntlet.h: check.h defines GTL_CUBLAS when it sees it
#include <cuda_bf16.h>
#include <cuda_fp8.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../common/gauntlet.h"
#include "version.h"  // GTL_GIT_SHA

#define THREADS 256
#define FFMA_CHAINS 16  // independent FMA chains per thread: hides the 4-cycle FMA latency
#define LAUNCHES 1000   // empty kernels per timed sample

// Strategy: grid-stride, 4 independent 16-byte loads in flight before the 4 stores.
// Limiter: HBM bandwidth.
__global__ void copy_kernel(const uint4 *__restrict__ src, uint4 *__restrict__ dst, size_t n) {
  const size_t stride = (size_t)gridDim.x * blockDim.x;
  size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x;
  for (; i + 3 * stride < n; i += 4 * stride) {
    uint4 a = src[i], b = src[i + stride], c = src[i + 2 * stride], d = src[i + 3 * stride];
    dst[i] = a;
    dst[i + stride] = b;
    dst[i + 2 * stride] = c;
    dst[i + 3 * stride] = d;
  }
  for (; i < n; i += stride) dst[i] = src[i];
}

__host__ __device__ unsigned words_sum(uint4 v) { return v.x + v.y + v.z + v.w; }

// Strategy: the same loads, summed as wrapping uint32 (exact in any order, so checkable),
// a warp shuffle reduction and one atomic per warp. Limiter: HBM read bandwidth.
__global__ void read_kernel(const uint4 *__restrict__ src, size_t n, unsigned *sum) {
  const size_t stride = (size_t)gridDim.x * blockDim.x;
  size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x;
  unsigned s = 0;
  for (; i + 3 * stride < n; i += 4 * stride) {
    uint4 a = src[i], b = src[i + stride], c = src[i + 2 * stride], d = src[i + 3 * stride];
    s += words_sum(a) + words_sum(b) + words_sum(c) + words_sum(d);
  }
  for (; i < n; i += stride) s += words_sum(src[i]);
  for (int o = 16; o > 0; o >>= 1) s += __shfl_xor_sync(0xffffffffu, s, o);
  if ((threadIdx.x & 31) == 0) atomicAdd(sum, s);
}

// Strategy: grid-stride compare, one atomic per thread that saw a difference. Validation only.
__global__ void mismatch_kernel(const uint4 *a, const uint4 *b, size_t n, unsigned long long *bad) {
  unsigned long long c = 0;
  for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n;
       i += (size_t)gridDim.x * blockDim.x) {
    uint4 x = a[i], y = b[i];
    c += (x.x != y.x) | (x.y != y.y) | (x.z != y.z) | (x.w != y.w);
  }
  if (c) atomicAdd(bad, c);
}

// Round fp32 to tf32 in place (nearest even), the host gemm_round_tf32's device twin.
__global__ void round_tf32_kernel(unsigned *x, size_t n) {
  for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n;
       i += (size_t)gridDim.x * blockDim.x) {
    unsigned u = x[i];
    if ((u & 0x7f800000u) != 0x7f800000u) x[i] = (u + 0xfffu + ((u >> 13) & 1u)) & 0xffffe000u;
  }
}

#ifdef __CUDA_ARCH__  // the host compiler of the __host__ twin does not know #pragma unroll
#define DEVICE_UNROLL _Pragma("unroll")
#else
#define DEVICE_UNROLL
#endif

// The FFMA chains both sides compute: x = fma(x, mul, add), 16 chains, then their sum.
// fmaf is correctly rounded on host and device, so the host result is bit-exact.
__host__ __device__ float ffma_chains(unsigned t, int iters, float mul, float add) {
  float x[FFMA_CHAINS];
DEVICE_UNROLL
  for (int j = 0; j < FFMA_CHAINS; j++) x[j] = (float)((t & 1023u) * FFMA_CHAINS + j) * 0x1p-14f;
  for (int it = 0; it < iters; it += 8) {
DEVICE_UNROLL
    for (int u = 0; u < 8; u++)
DEVICE_UNROLL
      for (int j = 0; j < FFMA_CHAINS; j++) x[j] = fmaf(x[j], mul, add);
  }
  float s = 0.0f;
  for (int j = 0; j < FFMA_CHAINS; j++) s += x[j];
  return s;
}

// Strategy: 16 independent FFMA chains per thread, 128 FFMAs per loop trip, full occupancy.
// Limiter: the FP32 pipe (128 FMA lanes per SM).
__global__ void ffma_kernel(float *out, int iters, float mul, float add) {
  const unsigned t = blockIdx.x * blockDim.x + threadIdx.x;
  out[t] = ffma_chains(t, iters, mul, add);
}

// Strategy: nothing (count is NULL when timed; the validated run counts launches).
__global__ void empty_kernel(int *count) {
  if (count) atomicAdd(count, 1);
}

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

static void json_num(const char *key, double v, int first) {
  printf("%s\"%s\":", first ? "" : ",", key);
  if (v == v && isfinite(v)) printf("%.3f", v);
  else printf("null");
}

int main(int argc, char **argv) {
  int64_t gemm_n = 8192;
  GtlOpt opts[] = {
      {"gemm_n", GTL_OPT_INT, &gemm_n, "GEMM size n×n×n, a multiple of 16 (default 8192)"}};
  GtlCtx ctx;
  gtl_begin(&ctx, "ch02", "ceilings", argc, argv, opts, 1, 5, 50, GTL_L2_WARM);
  if (ctx.args.size == GTL_SIZE_SMALL) gemm_n = 2048;
  if (gemm_n < 16 || gemm_n % 16 || gemm_n > 32768) {
    fprintf(stderr, "ch02/ceilings: --gemm_n must be a multiple of 16 in [16, 32768]\n");
    return GTL_EXIT_USAGE;
  }
  const size_t l2 = ctx.dev.l2_bytes ? ctx.dev.l2_bytes : ((size_t)64 << 20);
  const size_t mib = (size_t)1 << 20, gib = (size_t)1 << 30;
  const size_t bw_bytes = 8 * l2 > gib ? (8 * l2 + mib - 1) / mib * mib : gib;
  const size_t xfer_bytes = (size_t)256 << 20;
  char workload[128], notes[640];
  snprintf(workload, sizeof workload, "copy%zuMiB_gemm%lld_xfer256MiB", bw_bytes / mib,
           (long long)gemm_n);
  snprintf(notes, sizeof notes,
           "bandwidth buffers %zu MiB (%.1fx L2): every pass streams from HBM, no flush needed\n"
           "GEMMs %lld^3 through cuBLASLt (TN); fp32 SIMT by an FFMA kernel; launches in "
           "batches of %d\n%%ceil: against the ceilings named above (what programs use today)",
           bw_bytes / mib, (double)bw_bytes / l2, (long long)gemm_n, LAUNCHES);
  gtl_report_header(&ctx, workload, notes);

  int ok = 1;
  GtlCeilings c;
  memset(&c, 0, sizeof c);

  // -- HBM: copy kernel, cudaMemcpy D2D, read kernel -------------------------------------
  StreamJob sj = {NULL, NULL, bw_bytes / 16, NULL, ctx.dev.sms * 8};
  uint4 *d_src = (uint4 *)gtl_malloc(bw_bytes, "copy source");
  uint4 *d_dst = (uint4 *)gtl_malloc(bw_bytes, "copy destination");
  unsigned long long *d_bad = (unsigned long long *)gtl_malloc(sizeof *d_bad, "mismatch count");
  sj.src = d_src;
  sj.dst = d_dst;
  sj.sum = (unsigned *)gtl_malloc(sizeof(unsigned), "read sum");
  gtl_fill_uniform(d_src, GTL_FP32, bw_bytes / 4, ctx.args.seed, -1.0f, 1.0f, ctx.stream);
  GtlLaunchFn copy_fns[2] = {copy_run, memcpy_d2d_run};
  const char *copy_names[2] = {"copy_kernel", "memcpy_d2d"};
  double copy_rate[2];
  for (int k = 0; k < 2; k++) {
    GtlResult r;
    gtl_result_init(&r, &ctx, "fp32", workload);
    r.variant = copy_names[k];
    r.bytes = 2.0 * bw_bytes;  // read + written
    r.bound = GTL_BOUND_COPY;
    r.ref = "source_buffer";
    if (ctx.args.verify) {
      gtl_poison(d_dst, bw_bytes, ctx.stream);
      copy_fns[k](&sj, ctx.stream);
      check_exact(&r, count_mismatch(d_src, d_dst, sj.n16, d_bad, &ctx), (double)sj.n16);
    }
    copy_rate[k] = time_row(&ctx, &r, copy_fns[k], &sj, &ok);
  }
  // A ceiling is the best this GPU was seen to do: the better of the two copies.
  c.copy_gbps = copy_rate[0] > copy_rate[1] ? copy_rate[0] : copy_rate[1];
  {
    GtlResult r;
    gtl_result_init(&r, &ctx, "fp32", workload);
    r.variant = "read_kernel";
    r.bytes = (double)bw_bytes;
    r.bound = GTL_BOUND_READ;
    r.ref = "host_sum";
    if (ctx.args.verify) {  // the wrapping word sum of the buffer, on the host
      unsigned got = 0, want = 0;
      GTL_CUDA(cudaMemsetAsync(sj.sum, 0, sizeof got, ctx.stream));
      read_run(&sj, ctx.stream);
      GTL_CUDA(cudaMemcpyAsync(&got, sj.sum, sizeof got, cudaMemcpyDeviceToHost, ctx.stream));
      uint4 *h = (uint4 *)malloc(bw_bytes);
      GTL_CUDA(cudaMemcpy(h, d_src, bw_bytes, cudaMemcpyDeviceToHost));
      for (size_t i = 0; i < sj.n16; i++) want += words_sum(h[i]);
      free(h);
      check_exact(&r, got != want, 1);
    }
    c.read_gbps = time_row(&ctx, &r, read_run, &sj, &ok);
  }
  GTL_CUDA(cudaFree(d_src));
  GTL_CUDA(cudaFree(d_dst));
  GTL_CUDA(cudaFree(sj.sum));
  GTL_CUDA(cudaFree(d_bad));
  const double copy_ratio = copy_rate[0] / copy_rate[1];

  // -- tensor cores and SIMT: cuBLASLt GEMMs, FFMA kernel ---------------------------------
  cublasLtHandle_t lt;
  GTL_CUBLAS(cublasLtCreate(&lt));
  const size_t ws_bytes = (size_t)64 << 20;
  void *ws = gtl_malloc(ws_bytes, "cuBLASLt workspace");
  const GemmSpec bf16 = {"gemm_bf16", GTL_BF16, CUDA_R_16BF, CUDA_R_16BF, CUBLAS_COMPUTE_32F,
                         GTL_BOUND_BF16, 0, 0};
  const GemmSpec fp8 = {"gemm_fp8e4m3", GTL_FP8E4M3, CUDA_R_8F_E4M3, CUDA_R_16BF,
                        CUBLAS_COMPUTE_32F, GTL_BOUND_FP8, 0.5f, 0.25f};
  const GemmSpec tf32 = {"gemm_tf32", GTL_TF32, CUDA_R_32F, CUDA_R_32F,
                         CUBLAS_COMPUTE_32F_FAST_TF32, GTL_BOUND_TF32, 0, 0};
  c.bf16_tflops = gemm_measure(&ctx, &bf16, gemm_n, lt, ws, ws_bytes, &ok);
  const int has_fp8 = ctx.dev.cc_major > 8 || (ctx.dev.cc_major == 8 && ctx.dev.cc_minor >= 9);
  c.fp8_tflops = NAN;
  if (has_fp8) c.fp8_tflops = gemm_measure(&ctx, &fp8, gemm_n, lt, ws, ws_bytes, &ok);
  else if (!ctx.args.json) printf("# gemm_fp8e4m3: needs CC 8.9+ (fp8 tensor cores): null\n");
  c.tf32_tflops = gemm_measure(&ctx, &tf32, gemm_n, lt, ws, ws_bytes, &ok);
  GTL_CUDA(cudaFree(ws));
  GTL_CUBLAS(cublasLtDestroy(lt));
  {
    FfmaJob fj = {NULL, ctx.dev.sms * 8, ctx.args.size == GTL_SIZE_SMALL ? 4096 : 32768,
                  0.9999f, 1e-4f};
    const unsigned threads = (unsigned)fj.blocks * THREADS;
    fj.out = (float *)gtl_malloc(threads * sizeof(float), "FFMA outputs");
    GtlResult r;
    gtl_result_init(&r, &ctx, "fp32", workload);
    r.variant = "ffma_fp32";
    r.flops = 2.0 * threads * FFMA_CHAINS * fj.iters;
    r.bound = GTL_BOUND_FP32;
    r.ref = "host_fmaf";
    if (ctx.args.verify) {  // 32 threads recomputed on the host, bit for bit
      float *h = (float *)malloc(threads * sizeof(float));
      gtl_poison(fj.out, threads * sizeof(float), ctx.stream);
      ffma_run(&fj, ctx.stream);
      GTL_CUDA(cudaStreamSynchronize(ctx.stream));
      GTL_CUDA(cudaMemcpy(h, fj.out, threads * sizeof(float), cudaMemcpyDeviceToHost));
      unsigned long long bad = 0;
      for (int s = 0; s < 32; s++) {
        unsigned t = s == 0 ? 0 : s == 1 ? threads - 1 : gtl_uniform_u32(ctx.args.seed, s, threads);
        float want = ffma_chains(t, fj.iters, fj.mul, fj.add);
        bad += memcmp(&want, &h[t], sizeof want) != 0;
      }
      free(h);
      check_exact(&r, bad, 32);
    }
    c.fp32_tflops = time_row(&ctx, &r, ffma_run, &fj, &ok);
    GTL_CUDA(cudaFree(fj.out));
  }

  // -- host link: pinned H2D and D2H ------------------------------------------------------
  {
    float *h_src = (float *)gtl_malloc_pinned(xfer_bytes, "pinned H2D source");
    float *h_dst = (float *)gtl_malloc_pinned(xfer_bytes, "pinned D2H destination");
    void *d_buf = gtl_malloc(xfer_bytes, "transfer buffer");
    gtl_fill_uniform_host(h_src, xfer_bytes / 4, ctx.args.seed + 7, -1.0f, 1.0f);
    XferJob h2d = {d_buf, h_src, xfer_bytes, cudaMemcpyHostToDevice};
    XferJob d2h = {h_dst, d_buf, xfer_bytes, cudaMemcpyDeviceToHost};
    unsigned long long bad = 0;
    if (ctx.args.verify) {  // a round trip must return the source bit for bit
      memset(h_dst, 0xFF, xfer_bytes);
      xfer_run(&h2d, ctx.stream);
      xfer_run(&d2h, ctx.stream);
      GTL_CUDA(cudaStreamSynchronize(ctx.stream));
      for (size_t i = 0; i < xfer_bytes / 4; i++) bad += memcmp(&h_src[i], &h_dst[i], 4) != 0;
    }
    XferJob *jobs[2] = {&h2d, &d2h};
    const char *names[2] = {"h2d_pinned", "d2h_pinned"};
    double rate[2];
    for (int k = 0; k < 2; k++) {
      GtlResult r;
      gtl_result_init(&r, &ctx, "fp32", workload);
      r.variant = names[k];
      r.bytes = (double)xfer_bytes;
      r.bound = k == 0 ? GTL_BOUND_H2D : GTL_BOUND_D2H;
      r.ref = "round_trip";
      if (ctx.args.verify) check_exact(&r, bad, xfer_bytes / 4.0);
      rate[k] = time_row(&ctx, &r, xfer_run, jobs[k], &ok);
    }
    c.h2d_gbps = rate[0];
    c.d2h_gbps = rate[1];
    GTL_CUDA(cudaFreeHost(h_src));
    GTL_CUDA(cudaFreeHost(h_dst));
    GTL_CUDA(cudaFree(d_buf));
  }

  // -- launch latency: eager and per graph node -------------------------------------------
  int *d_count = (int *)gtl_malloc(sizeof(int), "launch count");
  c.launch_us = launch_measure(&ctx, "launch_eager", 0, d_count, &ok);
  c.graph_launch_us = launch_measure(&ctx, "launch_graph", 1, d_count, &ok);
  GTL_CUDA(cudaFree(d_count));

  // -- summary and the JSON line ----------------------------------------------------------
  const int copy_agree = fabs(copy_ratio - 1.0) <= 0.10;
  if (!copy_agree) ok = 0;
  if (!ctx.args.json) {
    const double clock_fp32 = 2.0 * 128 * ctx.dev.sms * ctx.dev.sm_clock_khz * 1e3 / 1e12;
    printf("# copy: kernel %.1f GB/s vs cudaMemcpy D2D %.1f GB/s, ratio %.3f -> %s (must agree "
           "within 10%%)\n",
           copy_rate[0], copy_rate[1], copy_ratio, copy_agree ? "OK" : "DISAGREE");
    printf("# read %.1f GB/s; ridge points (flop per byte read): bf16 %.0f, fp8 %.0f, tf32 %.0f, "
           "fp32 %.1f\n", c.read_gbps, c.bf16_tflops * 1e3 / c.read_gbps,
           c.fp8_tflops * 1e3 / c.read_gbps, c.tf32_tflops * 1e3 / c.read_gbps,
           c.fp32_tflops * 1e3 / c.read_gbps);
    printf("# fp32 SIMT %.1f TFLOP/s = %.1f%% of 2 x 128 lanes x %d SMs x %d MHz = %.1f TFLOP/s\n",
           c.fp32_tflops, 100 * c.fp32_tflops / clock_fp32, ctx.dev.sms,
           ctx.dev.sm_clock_khz / 1000, clock_fp32);
    printf("# launch: %.2f us per eager launch, %.2f us per graph node; pinned H2D %.1f GB/s, "
           "D2H %.1f GB/s\n", c.launch_us, c.graph_launch_us, c.h2d_gbps, c.d2h_gbps);
  }
  printf("{\"schema\":\"gauntlet.ceilings.v1\",\"hardware_key\":");
  gtl_json_write_str(stdout, ctx.dev.hardware_key);
  printf(",\"gpu\":");
  gtl_json_write_str(stdout, ctx.dev.name);
  printf(",\"ceilings\":{");
  json_num("copy_gbps", c.copy_gbps, 1);
  json_num("memcpy_d2d_gbps", copy_rate[1], 0);
  json_num("read_gbps", c.read_gbps, 0);
  json_num("bf16_tflops", c.bf16_tflops, 0);
  json_num("fp8_tflops", c.fp8_tflops, 0);
  json_num("tf32_tflops", c.tf32_tflops, 0);
  json_num("fp32_tflops", c.fp32_tflops, 0);
  json_num("h2d_gbps", c.h2d_gbps, 0);
  json_num("d2h_gbps", c.d2h_gbps, 0);
  json_num("launch_us", c.launch_us, 0);
  json_num("graph_launch_us", c.graph_launch_us, 0);
  printf("},\"git\":");
  gtl_json_write_str(stdout, GTL_GIT_SHA);
  printf("}\n");
  fflush(stdout);
  gtl_end(&ctx);
  if (!ok) fprintf(stderr, "ch02/ceilings: a check failed (see FAIL rows / DISAGREE): exit 1\n");
  return ok ? GTL_EXIT_PASS : GTL_EXIT_FAIL;
}
