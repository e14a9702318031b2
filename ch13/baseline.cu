// ch13 profiling, precision, memory — baseline: the expert GEMM in bf16 through cuBLASLt.
//
// What it shows: the gate+up projection of one gpt-oss-20b expert, Y = X·W^T (M×5760×2880),
// as a serving engine runs it before it thinks about precision: bf16 activations and
// weights, fp32 accumulation on the tensor cores, bf16 output, one cublasLtMatmul with the
// fastest of the algorithms cuBLASLt's heuristic offers, timed at setup (the optimized
// program tunes its fp8 GEMM the same way). At M = 4096 it is bound by the bf16 tensor-core
// rate (ch02 measured the ceiling the same way); at M = 64 (decode) by streaming the 33 MB
// weight from HBM. Both limits halve when each element takes one byte instead of two: that
// is optimized.cu.
//
// Build and run:   make ch13 && ./ch13/baseline           (pair: scripts/pair.sh ch13)
//                  ./ch13/baseline --M=64                  (decode-sized: memory-bound)
//                  ./ch13/baseline --l2=rotate             (back to back on rotated input copies)
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
// --l2=rotate: the step on input copy `copy` (user: one BaselineRun per copy).
static void baseline_rotate_step(void *user, int copy, cudaStream_t s) {
  lt_gemm_run(&((BaselineRun *)user)[copy].g, s);
}

int main(int argc, char **argv) {
  int64_t M = -1, N = -1, K = -1;
  GtlOpt opts[] = {{"M", GTL_OPT_INT, &M, "tokens: rows of X and Y (default 4096)"},
                   {"N", GTL_OPT_INT, &N, "rows of W, columns of Y, a multiple of 16 (default 5760)"},
                   {"K", GTL_OPT_INT, &K, "hidden size, a multiple of 16 (default 2880)"}};
  GtlCtx ctx;
  gtl_allow_rotate();  // keeps copies of X and W (LtCopies)
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
  const char *why = lt_gemm_plan(&run.g, &ctx, &sh, CUDA_R_16BF, d_W, d_X, d_Y, NULL, NULL, 0);
  gtl_require(&ctx, why == NULL, why);
  // Input copies for the rotated figure: beside the cold metric, or as the metric under
  // --l2=rotate; none under --l2=warm.
  const int rotate_all = ctx.args.l2 == GTL_L2_ROTATE, rotate_beside = ctx.args.l2 == GTL_L2_COLD;
  LtCopies cp;
  memset(&cp, 0, sizeof cp);
  BaselineRun *rot = NULL;
  if (rotate_all || rotate_beside) {
    lt_copies_setup(&ctx, &cp, d_X, nX * 2, d_W, nW * 2);
    rot = (BaselineRun *)malloc(sizeof(BaselineRun) * cp.n);
    if (!rot) {
      fprintf(stderr, "ch13: host out of memory for %d input copies\n", cp.n);
      return GTL_EXIT_RUNTIME;
    }
    for (int i = 0; i < cp.n; i++) {
      rot[i] = run;
      rot[i].g.X = lt_copy_a(&cp, i);
      rot[i].g.W = lt_copy_b(&cp, i);
    }
  }
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
  char tuned[320], notes[1280];
  lt_gemm_describe(&run.g, tuned, sizeof tuned);
  snprintf(notes, sizeof notes,
           "strategy: cuBLASLt bf16 GEMM (TN), fp32 compute, bf16 out; %s\n"
           "inputs: X uniform [-%.0f, %.0f), W uniform [-1/sqrt(K), 1/sqrt(K)), both bf16\n"
           "roofline: %.2f GFLOP, %.1f MB (X, W read once, Y written once) = %.0f FLOP/B: "
           "bound by %s\n"
           "reference: cuBLAS GemmEx on the same bf16 inputs, fp32 compute, fp32 out",
           tuned, LT_X_RANGE, LT_X_RANGE, r.flops / 1e9, r.bytes / 1e6, r.flops / r.bytes,
           gtl_bound_name(r.bound));
  gtl_report_header(&ctx, workload, notes);
  if (cp.n && !ctx.args.json)
    printf("# rotated figure: %d copies of X and W (%.1f MB each), %d GEMMs back to back per "
           "event pair, no flush\n", cp.n, cp.stride / 1e6, gtl_rotate_k(cp.n));

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
    if (!ctx.args.json) gtl_err_print(stdout, &r.err, "Y vs fp32 reference");
    if (r.err.pass && cp.n) {  // the last input copy: same values at other addresses
      GtlErr e;
      gtl_poison(d_Y, nY * 2, ctx.stream);
      baseline_step(&rot[cp.n - 1], ctx.stream);
      GTL_CUDA(cudaStreamSynchronize(ctx.stream));
      lt_check_y(&sh, &g_Y, ref, gtl_tol_for(GTL_BF16), h_y, &e);
      if (!ctx.args.json) gtl_err_print(stdout, &e, "Y from the last input copy (--l2=rotate)");
      if (!e.pass) r.err = e;
    }
    r.validated = 1;
    gtl_phase_pop();
    free(ref);
    free(h_y);
    if (!r.err.pass) {  // never time a wrong GEMM
      gtl_report_row(&ctx, &r);
      return gtl_report_finish(&ctx, &r);
    }
  }
  if (rotate_all) gtl_bench_rotate(&ctx, baseline_rotate_step, rot, cp.n, &r.st);
  else gtl_bench(&ctx, baseline_step, &run, &r.st);
  gtl_report_row(&ctx, &r);
  if (rotate_beside) {  // the rotated figure beside the cold metric
    GtlResult rr = r;
    rr.variant = "baseline_rotate";
    gtl_bench_rotate(&ctx, baseline_rotate_step, rot, cp.n, &rr.st);
    gtl_report_row(&ctx, &rr);
    gtl_result_extra(&r, "rotate_median_ms", rr.st.median);
    gtl_result_extra(&r, "rotate_p95_ms", rr.st.p95);
    gtl_result_extra(&r, "pct_of_ceiling_rotate", gtl_result_pct(&rr, &ctx.ceil));
  }
  gtl_result_extra(&r, "algo_rank", run.g.pick);
  gtl_result_extra(&r, "algos_timed", run.g.n_timed);
  const int code = gtl_report_finish(&ctx, &r);

  lt_gemm_destroy(&run.g);
  GTL_CUBLAS(cublasDestroy(h));
  GTL_CUDA(cudaFree(d_X));
  GTL_CUDA(cudaFree(d_W));
  gtl_guarded_free(&g_Y);
  lt_copies_free(&cp);
  free(rot);
  free(h_X);
  free(h_W);
  gtl_end(&ctx);
  return code;
}
