// ch13 profiling, precision, memory — baseline: the expert GEMM in bf16 through cuBLASLt.
//
// What it shows: the gate+up projection of one gpt-oss-20b expert, Y = X·W^T (M×5760×2880),
// as a serving engine runs it before it thinks about precision: bf16 activations and
// weights, fp32 accumulation on the tensor cores, bf16 output, one cublasLtMatmul with the
// first algorithm of cuBLASLt's heuristic. At M = 4096 it is bound by the bf16 tensor-core
// rate (ch02 measured the ceiling the same way); at M = 64 (decode) by streaming the 33 MB
// weight from HBM. Both limits halve when each element takes one byte instead of two: that
// is optimized.cu.
//
// Build and run:   make ch13 && ./ch13/baseline           (pair: scripts/pair.sh ch13)
//                  ./ch13/baseline --M=64                  (decode-sized: memory-bound)
// Nsight Compute:  scripts/profile.sh ch13 baseline
//   the kernel name cuBLASLt picked (nvjet_… / sm90_xmma_gemm_bf16…),
//   sm__pipe_tensor_op_gmma_cycles_active.avg.pct_of_peak_sustained_active (M = 4096),
//   dram__throughput.avg.pct_of_peak_sustained_elapsed (M = 64).
// Book: profiling, precision and memory — lower precision as a bandwidth and compute lever.
#include "lt_gemm.cuh"

typedef struct {
  LtGemm g;
} BaselineRun;

// Strategy: cuBLASLt bf16 GEMM, fp32 accumulate. Limiter: bf16 tensor cores (M = 4096) or
// HBM (M = 64).
static void baseline_step(void *user, cudaStream_t s) { lt_gemm_run(&((BaselineRun *)user)->g, s); }

int main(int argc, char **argv) {
  int64_t M = -1, N = -1, K = -1;
  GtlOpt opts[] = {{"M", GTL_OPT_INT, &M, "tokens: rows of X and Y (default 4096)"},
                   {"N", GTL_OPT_INT, &N, "rows of W, columns of Y, a multiple of 16 (default 5760)"},
                   {"K", GTL_OPT_INT, &K, "hidden size, a multiple of 16 (default 2880)"}};
  GtlCtx ctx;
  lt_parse(&ctx, "baseline", argc, argv, opts, 3, &M, &N, &K);
  gtl_open(&ctx);
  const LtShape sh = {M, N, K};
  const size_t nX = (size_t)M * K, nW = (size_t)N * K, nY = (size_t)M * N;
  char workload[128];
  snprintf(workload, sizeof workload, "M%lld_N%lld_K%lld", (long long)M, (long long)N, (long long)K);

  gtl_phase_push(GTL_PHASE_SETUP);
  __nv_bfloat16 *d_X = (__nv_bfloat16 *)gtl_malloc(nX * 2, "X [M][K] bf16");
  __nv_bfloat16 *d_W = (__nv_bfloat16 *)gtl_malloc(nW * 2, "W [N][K] bf16");
  GtlGuarded g_Y;
  void *d_Y = gtl_guarded_alloc(&g_Y, nY * 2, "Y [M][N] bf16");
  uint16_t *h_X = (uint16_t *)malloc(nX * 2), *h_W = (uint16_t *)malloc(nW * 2);
  if (!h_X || !h_W) {
    fprintf(stderr, "ch13: host out of memory for the inputs\n");
    return GTL_EXIT_RUNTIME;
  }
  lt_inputs(&ctx, &sh, d_X, d_W, h_X, h_W);
  BaselineRun run;
  const char *why = lt_gemm_plan(&run.g, &sh, CUDA_R_16BF, d_W, d_X, d_Y, NULL, NULL, 0, ctx.stream);
  gtl_require(&ctx, why == NULL, why);
  cublasHandle_t h;
  GTL_CUBLAS(cublasCreate(&h));
  GTL_CUBLAS(cublasSetStream(h, ctx.stream));
  gtl_phase_pop();

  GtlResult r;
  gtl_result_init(&r, &ctx, "bf16", workload);
  r.flops = lt_flops(&sh);
  r.bytes = lt_gemm_bytes(&sh, 2);
  r.bound = lt_bound(&ctx.ceil, r.flops, r.bytes, GTL_BOUND_BF16);
  r.ref = "cublas_fp32";
  char notes[768];
  snprintf(notes, sizeof notes,
           "strategy: cuBLASLt bf16 GEMM (TN), fp32 compute, bf16 out; heuristic's first algorithm\n"
           "inputs: X uniform [-%.0f, %.0f), W uniform [-1/sqrt(K), 1/sqrt(K)), both bf16\n"
           "roofline: %.2f GFLOP, %.1f MB (X, W read once, Y written once) = %.0f FLOP/B: "
           "bound by %s\n"
           "reference: cuBLAS GemmEx on the same bf16 inputs, fp32 compute, fp32 out",
           LT_X_RANGE, LT_X_RANGE, r.flops / 1e9, r.bytes / 1e6, r.flops / r.bytes,
           gtl_bound_name(r.bound));
  gtl_report_header(&ctx, workload, notes);

  if (ctx.args.verify) {
    double *ref = (double *)malloc(nY * sizeof(double));
    float *h_y = (float *)malloc(nY * sizeof(float));
    if (!ref || !h_y) {
      fprintf(stderr, "ch13: host out of memory for %zu-element validation buffers\n", nY);
      return GTL_EXIT_RUNTIME;
    }
    gtl_phase_push(GTL_PHASE_REFERENCE);
    lt_reference(h, &sh, d_X, d_W, 1.0f, ref, ctx.stream);
    gtl_phase_pop();
    gtl_phase_push(GTL_PHASE_VALIDATE);
    gtl_poison(d_Y, nY * 2, ctx.stream);
    baseline_step(&run, ctx.stream);
    GTL_CUDA(cudaStreamSynchronize(ctx.stream));
    lt_check_y(&sh, &g_Y, ref, gtl_tol_for(GTL_BF16), h_y, &r.err);
    r.validated = 1;
    gtl_phase_pop();
    if (!ctx.args.json) gtl_err_print(stdout, &r.err, "Y vs fp32 reference");
    free(ref);
    free(h_y);
    if (!r.err.pass) {  // never time a wrong GEMM
      gtl_report_row(&ctx, &r);
      return gtl_report_finish(&ctx, &r);
    }
  }
  gtl_bench(&ctx, baseline_step, &run, &r.st);
  gtl_report_row(&ctx, &r);
  const int code = gtl_report_finish(&ctx, &r);

  lt_gemm_destroy(&run.g);
  GTL_CUBLAS(cublasDestroy(h));
  GTL_CUDA(cudaFree(d_X));
  GTL_CUDA(cudaFree(d_W));
  gtl_guarded_free(&g_Y);
  free(h_X);
  free(h_W);
  gtl_end(&ctx);
  return code;
}
