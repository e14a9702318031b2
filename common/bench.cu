// bench.cu — start-up, L2 flush, and event timing (see bench.h).
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>

#include "gauntlet.h"

void gtl_device_open(GtlCtx *ctx);  // device.cu

static const char *g_prog = "program";
static const GtlOpt *g_extra = NULL;
static int g_n_extra = 0;
static int g_allow_rotate = 0;  // set by gtl_allow_rotate(): the program rotates copies

void gtl_allow_rotate(void) {
  g_allow_rotate = 1;
  gtl_args_offer_rotate(1);  // the usage line offers it too
}

void gtl_parse(GtlCtx *ctx, const char *target, const char *variant, int argc, char **argv,
               const GtlOpt *extra, int n_extra, int warmup, int iters, GtlL2 l2) {
  memset(ctx, 0, sizeof *ctx);
  ctx->target = target;
  ctx->variant = variant;
  g_prog = argc > 0 ? argv[0] : target;
  g_extra = extra;
  g_n_extra = n_extra;
  gtl_args_defaults(&ctx->args, warmup, iters, l2);
  gtl_args_parse_or_exit(&ctx->args, argc, argv, extra, n_extra);
  if (ctx->args.l2 == GTL_L2_ROTATE && !g_allow_rotate)
    gtl_usage_fail(ctx, "--l2=rotate is not supported by this program (it keeps no copies "
                        "of its inputs to rotate); use --l2=cold or --l2=warm");
}

void gtl_usage_fail(const GtlCtx *ctx, const char *fmt, ...) {
  fflush(stdout);
  fprintf(stderr, "%s/%s: ", ctx->target, ctx->variant);
  va_list ap;
  va_start(ap, fmt);
  vfprintf(stderr, fmt, ap);
  va_end(ap);
  fprintf(stderr, "\n");
  gtl_args_usage(stderr, g_prog, g_extra, g_n_extra);
  exit(GTL_EXIT_USAGE);
}

void gtl_begin(GtlCtx *ctx, const char *target, const char *variant, int argc, char **argv,
               const GtlOpt *extra, int n_extra, int warmup, int iters, GtlL2 l2) {
  gtl_parse(ctx, target, variant, argc, argv, extra, n_extra, warmup, iters, l2);
  gtl_open(ctx);
}

void gtl_open(GtlCtx *ctx) {
  gtl_device_open(ctx);
  char dir[4096], err[512];
  if (gtl_find_expectations_dir(dir, sizeof dir) != 0 ||
      gtl_ceilings_read(dir, ctx->dev.hardware_key, &ctx->ceil, err, sizeof err) != 0)
    gtl_ceilings_datasheet(ctx->dev.hardware_key, ctx->dev.peak_gbps, &ctx->ceil);
  cudaStream_t s;
  GTL_CUDA(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking));
  ctx->stream = s;
  gtl_nvtx_init(ctx->target, ctx->variant);
}

void gtl_end(GtlCtx *ctx) {
  if (ctx->l2_flush) GTL_CUDA(cudaFree(ctx->l2_flush));
  ctx->l2_flush = NULL;
  if (ctx->stream) GTL_CUDA(cudaStreamDestroy(ctx->stream));
  ctx->stream = NULL;
}

// Reads every line of the 2xL2 buffer so the L2 ends up holding only clean lines of it.
// A memset would work as a flush too, but it leaves the L2 full of dirty lines whose
// write-back then lands inside the next timed kernel and taxes its DRAM bandwidth.
__global__ void l2_flush_kernel(const int4 *__restrict__ buf, size_t n, int *sink) {
  int acc = 0;
  for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n;
       i += (size_t)gridDim.x * blockDim.x) {
    int4 v = buf[i];
    acc ^= v.x ^ v.y ^ v.z ^ v.w;
  }
  if (acc == 0x7fffffff) *sink = acc;  // keeps the loads alive; the buffer makes it false
}

void gtl_l2_flush(GtlCtx *ctx, cudaStream_t s) {
  if (!ctx->l2_flush) {
    ctx->l2_flush_bytes = 2 * (ctx->dev.l2_bytes ? ctx->dev.l2_bytes : ((size_t)64 << 20));
    ctx->l2_flush = gtl_malloc(ctx->l2_flush_bytes + 256, "L2 flush buffer (2x L2)");
    GTL_CUDA(cudaMemset(ctx->l2_flush, 0, ctx->l2_flush_bytes + 256));  // XOR of zeros is 0
  }
  const size_t n = ctx->l2_flush_bytes / sizeof(int4);
  l2_flush_kernel<<<ctx->dev.sms * 8, 256, 0, s>>>(
      (const int4 *)ctx->l2_flush, n, (int *)((char *)ctx->l2_flush + ctx->l2_flush_bytes));
  GTL_LAUNCH();
}

void gtl_bench_on(GtlCtx *ctx, cudaStream_t s, GtlLaunchFn fn, void *user, GtlStats *st) {
  const int n = ctx->args.iters;
  const int cold = ctx->args.l2 != GTL_L2_WARM;  // rotate: no copies here, so flush
  cudaEvent_t *ev = (cudaEvent_t *)malloc(sizeof(cudaEvent_t) * 2 * (size_t)n);
  float *ms = (float *)malloc(sizeof(float) * (size_t)n);
  if (!ev || !ms) {
    fprintf(stderr, "error: host out of memory for %d timing samples\n", n);
    exit(GTL_EXIT_RUNTIME);
  }
  for (int i = 0; i < 2 * n; i++) GTL_CUDA(cudaEventCreate(&ev[i]));

  gtl_phase_push(GTL_PHASE_WARMUP);
  for (int i = 0; i < ctx->args.warmup; i++) {
    if (cold) gtl_l2_flush(ctx, s);
    fn(user, s);
  }
  GTL_CUDA(cudaStreamSynchronize(s));
  gtl_phase_pop();

  // The flush gets a nested NVTX range of its own, so a profiler filtering on the
  // innermost range "<target>.<variant>.timed]" sees only the timed kernels.
  static const void *flush_name = NULL;
  if (cold && !flush_name) flush_name = gtl_nvtx_name("l2_flush");
  gtl_phase_push(GTL_PHASE_TIMED);
  for (int i = 0; i < n; i++) {
    if (cold) {  // outside the event pair
      gtl_nvtx_push(flush_name);
      gtl_l2_flush(ctx, s);
      gtl_nvtx_pop();
    }
    GTL_CUDA(cudaEventRecord(ev[2 * i], s));
    fn(user, s);
    GTL_CUDA(cudaEventRecord(ev[2 * i + 1], s));
  }
  GTL_CUDA(cudaStreamSynchronize(s));  // the one synchronize
  gtl_phase_pop();

  for (int i = 0; i < n; i++) GTL_CUDA(cudaEventElapsedTime(&ms[i], ev[2 * i], ev[2 * i + 1]));
  for (int i = 0; i < 2 * n; i++) GTL_CUDA(cudaEventDestroy(ev[i]));
  if (gtl_stats_compute(ms, n, st) != 0) {
    fprintf(stderr, "error: timing produced a non-finite sample\n");
    exit(GTL_EXIT_RUNTIME);
  }
  free(ev);
  free(ms);
}

void gtl_bench(GtlCtx *ctx, GtlLaunchFn fn, void *user, GtlStats *st) {
  gtl_bench_on(ctx, ctx->stream, fn, user, st);
}

int gtl_rotate_copies_for(const GtlCtx *ctx, size_t bytes_per_copy) {
  const size_t l2 = ctx->dev.l2_bytes ? ctx->dev.l2_bytes : ((size_t)64 << 20);
  const int n = gtl_rotate_copies(bytes_per_copy, l2, 0);
  if (n < 0) {
    fprintf(stderr, "%s/%s: --l2=rotate: no copy count for %zu bytes per copy\n",
            ctx->target, ctx->variant, bytes_per_copy);
    exit(GTL_EXIT_RUNTIME);
  }
  return n;
}

// One thread waits `ns` nanoseconds of %globaltimer, so that the host can enqueue the
// next event pair and its K launches behind it before the pair starts.
__global__ void rotate_spin_kernel(unsigned long long ns) {
  unsigned long long t0, t;
  asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(t0));
  do {
    asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(t));
  } while (t - t0 < ns);
}

void gtl_bench_rotate_on(GtlCtx *ctx, cudaStream_t s, GtlRotateFn fn, void *user,
                         int n_copies, GtlStats *st) {
  const int k = gtl_rotate_k(n_copies);
  if (k < 0) {
    fprintf(stderr, "%s/%s: --l2=rotate needs at least 1 input copy, got %d\n", ctx->target,
            ctx->variant, n_copies);
    exit(GTL_EXIT_RUNTIME);
  }
  const int pairs = gtl_rotate_pairs(ctx->args.iters, k);
  cudaEvent_t *ev = (cudaEvent_t *)malloc(sizeof(cudaEvent_t) * 2 * (size_t)pairs);
  float *ms = (float *)malloc(sizeof(float) * (size_t)pairs);
  if (!ev || !ms) {
    fprintf(stderr, "error: host out of memory for %d timing samples\n", pairs);
    exit(GTL_EXIT_RUNTIME);
  }
  for (int i = 0; i < 2 * pairs; i++) GTL_CUDA(cudaEventCreate(&ev[i]));
  const unsigned long long spin_ns = k * 10000ull < 2000000ull ? k * 10000ull : 2000000ull;

  gtl_phase_push(GTL_PHASE_WARMUP);
  const int warm = ctx->args.warmup > n_copies ? ctx->args.warmup : n_copies;
  for (int i = 0; i < warm; i++) fn(user, i % n_copies, s);
  GTL_CUDA(cudaStreamSynchronize(s));
  gtl_phase_pop();

  // The metric itself under --l2=rotate; otherwise a range of its own (bench.h, NVTX).
  static const void *spin_name = NULL;
  if (!spin_name) spin_name = gtl_nvtx_name("rotate_spin");
  const int own_range = ctx->args.l2 != GTL_L2_ROTATE;
  if (own_range) {
    char name[160];
    snprintf(name, sizeof name, "%s.%s.rotate", ctx->target, ctx->variant);
    for (char *c = name; *c; c++)  // NVTX names here use [a-z0-9_.] (nvtx.h)
      if (*c == '/' || *c == '@' || *c == ']') *c = '_';
    gtl_nvtx_push(gtl_nvtx_name(name));
  } else {
    gtl_phase_push(GTL_PHASE_TIMED);
  }
  for (int p = 0; p < pairs; p++) {
    gtl_nvtx_push(spin_name);  // outside the event pair
    rotate_spin_kernel<<<1, 1, 0, s>>>(spin_ns);
    GTL_LAUNCH();
    gtl_nvtx_pop();
    GTL_CUDA(cudaEventRecord(ev[2 * p], s));
    for (int j = 0; j < k; j++) fn(user, j % n_copies, s);
    GTL_CUDA(cudaEventRecord(ev[2 * p + 1], s));
  }
  GTL_CUDA(cudaStreamSynchronize(s));  // the one synchronize
  if (own_range) gtl_nvtx_pop();
  else gtl_phase_pop();

  for (int p = 0; p < pairs; p++) {
    GTL_CUDA(cudaEventElapsedTime(&ms[p], ev[2 * p], ev[2 * p + 1]));
    ms[p] /= (float)k;
  }
  for (int i = 0; i < 2 * pairs; i++) GTL_CUDA(cudaEventDestroy(ev[i]));
  if (gtl_stats_compute(ms, pairs, st) != 0) {
    fprintf(stderr, "error: timing produced a non-finite sample\n");
    exit(GTL_EXIT_RUNTIME);
  }
  free(ev);
  free(ms);
}

void gtl_bench_rotate(GtlCtx *ctx, GtlRotateFn fn, void *user, int n_copies, GtlStats *st) {
  gtl_bench_rotate_on(ctx, ctx->stream, fn, user, n_copies, st);
}
