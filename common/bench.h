/* bench.h — program start-up and timing (docs/contract.md, "Timing").
 * gtl_begin: parse → device init (waive 77 without a GPU) → ceilings → stream → NVTX.
 * gtl_bench: untimed warm-up, then per-iteration CUDA events recorded into preallocated
 * arrays on the dedicated stream, one synchronize at the end; with --l2=cold the L2 is
 * flushed before every iteration by a kernel that reads a 2×L2 buffer (clean lines, no
 * write-backs left for the timed kernel), outside the event pair. */
#pragma once
#include <cuda_runtime.h>
#include "report.h"

/* One iteration of the work being timed, enqueued on stream s (no synchronization). */
typedef void (*GtlLaunchFn)(void *user, cudaStream_t s);

#ifdef __cplusplus
extern "C" {
#endif

/** Parse arguments (exit 2 / help 0), pick and describe the device (exit 77 with one line
 *  when there is none), load ceilings (expectations/<key>.json, else datasheet), create
 *  the non-blocking stream, register NVTX names. `warmup`, `iters`, `l2` are this
 *  program's defaults. */
void gtl_begin(GtlCtx *ctx, const char *target, const char *variant, int argc, char **argv,
               const GtlOpt *extra, int n_extra, int warmup, int iters, GtlL2 l2);

/** The two halves of gtl_begin, for programs that check their own option values:
 *  gtl_parse (arguments only, no CUDA call), then the program's checks — a bad value
 *  goes to gtl_usage_fail, exit 2, before any device is touched — then gtl_open (device,
 *  ceilings, stream, NVTX; waives with 77 when there is no GPU). */
void gtl_parse(GtlCtx *ctx, const char *target, const char *variant, int argc, char **argv,
               const GtlOpt *extra, int n_extra, int warmup, int iters, GtlL2 l2);
void gtl_open(GtlCtx *ctx);
/** Print "<target>/<variant>: <message>" and the usage line on stderr, exit 2. */
void gtl_usage_fail(const GtlCtx *ctx, const char *fmt, ...);

/** Waive (exit 77, one line) unless the device has compute capability >= major.minor. */
void gtl_require_cc(const GtlCtx *ctx, int major, int minor, const char *feature);
/** Waive (exit 77, one line) with `what` when `ok` is 0: for features found at run time. */
void gtl_require(const GtlCtx *ctx, int ok, const char *what);

/** Time fn: ctx->args.warmup untimed calls, then ctx->args.iters timed ones; stats in ms.
 *  Pushes the NVTX phases warmup and timed. */
void gtl_bench(GtlCtx *ctx, GtlLaunchFn fn, void *user, GtlStats *st);
/** The same on a stream of the caller's choosing (fn must enqueue its work on s). */
void gtl_bench_on(GtlCtx *ctx, cudaStream_t s, GtlLaunchFn fn, void *user, GtlStats *st);

/** Enqueue an L2 flush on s: a kernel reads 2× L2 bytes, leaving only clean lines. */
void gtl_l2_flush(GtlCtx *ctx, cudaStream_t s);

/** cudaMalloc or exit 3 with "out of memory allocating <what>: asked N MiB, free M of T MiB". */
void *gtl_malloc(size_t bytes, const char *what);
/** cudaMallocHost (pinned) or exit 3 with the size asked. */
void *gtl_malloc_pinned(size_t bytes, const char *what);

/** Fill n device elements of dtype d with gtl_uniform(seed, i, lo, hi) rounded to d
 *  (fp32, bf16, fp16, fp8 e4m3). The host recomputes the same values with
 *  gtl_uniform + the matching gtl_f32_to_* conversion. */
void gtl_fill_uniform(void *d, GtlDtype dt, size_t n, uint64_t seed, float lo, float hi,
                      cudaStream_t s);

/** Release the stream and flush buffer. */
void gtl_end(GtlCtx *ctx);

#ifdef __cplusplus
}
#endif
