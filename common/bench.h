/* bench.h — program start-up and timing (docs/contract.md, "Timing").
 * gtl_begin: parse → device init (waive 77 without a GPU) → ceilings → stream → NVTX.
 * gtl_bench: untimed warm-up, then per-iteration CUDA events recorded into preallocated
 * arrays on the dedicated stream, one synchronize at the end; with --l2=cold the L2 is
 * flushed before every iteration by a kernel that reads a 2×L2 buffer (clean lines, no
 * write-backs left for the timed kernel), outside the event pair.
 * gtl_bench_rotate: the --l2=rotate policy (below): K iterations back to back between one
 * event pair, each reading the next of N copies of the step's inputs. */
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
 *  Pushes the NVTX phases warmup and timed. Flushes L2 before each timed call under
 *  --l2=cold and --l2=rotate (fn has no copies to rotate), not under --l2=warm. */
void gtl_bench(GtlCtx *ctx, GtlLaunchFn fn, void *user, GtlStats *st);
/** The same on a stream of the caller's choosing (fn must enqueue its work on s). */
void gtl_bench_on(GtlCtx *ctx, cudaStream_t s, GtlLaunchFn fn, void *user, GtlStats *st);

/* --l2=rotate — a kernel as it runs inside a decode step.
 *
 * What it measures: the time of one iteration (ms, like every GtlStats field) when
 * iterations run back to back, each reading input data that is not in L2. A decode step
 * is a chain of consecutive kernels on one stream: each is already queued when the one
 * before it ends, so no launch latency shows, only the previous kernel's drain and its
 * own ramp-up; and the weights, KV or activations it reads were last touched a whole step
 * ago, many L2-fulls of other data before. --l2=cold times one kernel alone
 * between two events — launch, ramp and drain included, L2 emptied by the flush — which
 * for a kernel of tens of microseconds is a different and larger number; --l2=warm
 * repeats the kernel on the same inputs, which may then be served from L2.
 *
 * How: the program keeps N copies of the step's read-only inputs (weights, KV,
 * activations the step reads; not the outputs it writes) with
 *     N = gtl_rotate_copies(bytes of one copy, L2 size) = max(2, ceil(4 · L2 / bytes)),
 * so N × bytes >= 4 × L2 (the 4× rule; L2 from cudaDeviceProp::l2CacheSize, 60 MiB on an
 * H200): by the time copy i comes round again, at least 2 × L2 (3 × L2 when one copy
 * fits in L2) of other copies has been read through the L2, so no iteration finds its
 * inputs there. Each sample is one event pair around K = gtl_rotate_k(N) iterations (the
 * smallest multiple of N >= 16, every copy used equally), iteration j reading copy j mod
 * N; the sample is the pair's time / K. There are gtl_rotate_pairs(iters, K) samples
 * (about iters iterations in all, at least min(iters, 10) pairs), so median, p95, p99,
 * min, mean and stddev are over pairs, each already an average of K iterations. Before
 * each pair, outside it, a one-thread kernel spins for 10 µs × K (capped at 2 ms) while
 * the host enqueues the pair, so that host launch overhead never shows as gaps between
 * the K kernels. Nothing is flushed.
 *
 * NVTX: under --l2=rotate the pairs are the program's "timed" phase (what
 * scripts/profile.sh selects); when a program measures the rotated figure beside its
 * --l2=cold metric, they run in a range "<target>.<variant>.rotate" instead, so a profile
 * of "timed]" still holds only the flushed iterations. The spin kernel sits in a nested
 * range "rotate_spin".
 *
 * Which programs: those that call gtl_allow_rotate() before gtl_parse/gtl_begin; in every
 * other program --l2=rotate is a usage error (exit 2, before any CUDA call). Under
 * --l2=rotate, gtl_bench (a step with no copies, e.g. a ceiling probe) flushes as
 * --l2=cold does. */

/* Iteration `copy` (0 <= copy < the N given to gtl_bench_rotate) of the work being timed,
 * reading only copy `copy` of its read-only inputs, enqueued on stream s (no
 * synchronization). It may write the same outputs every time. */
typedef void (*GtlRotateFn)(void *user, int copy, cudaStream_t s);

/** Declare that this program supports --l2=rotate (it calls gtl_bench_rotate). Call it
 *  before gtl_parse or gtl_begin; without it they reject --l2=rotate with exit 2. */
void gtl_allow_rotate(void);

/** N for --l2=rotate on this device: gtl_rotate_copies(bytes_per_copy, L2 bytes, 0)
 *  (args.h) with the L2 size of ctx's device (64 MiB if it reports none). Exits 3 with a
 *  message when the rule has no answer (bytes_per_copy 0 or >= 2^60). */
int gtl_rotate_copies_for(const GtlCtx *ctx, size_t bytes_per_copy);

/** Time fn under --l2=rotate: max(warmup, n_copies) untimed iterations rotating through
 *  the copies, then gtl_rotate_pairs(iters, K) event pairs of K = gtl_rotate_k(n_copies)
 *  back-to-back iterations each (above). st in ms per iteration (pair time / K). Any
 *  --l2 value: the caller decides when to call it (a program may time both figures). */
void gtl_bench_rotate(GtlCtx *ctx, GtlRotateFn fn, void *user, int n_copies, GtlStats *st);
/** The same on a stream of the caller's choosing (fn must enqueue its work on s). */
void gtl_bench_rotate_on(GtlCtx *ctx, cudaStream_t s, GtlRotateFn fn, void *user,
                         int n_copies, GtlStats *st);

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
