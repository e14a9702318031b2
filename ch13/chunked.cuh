// chunked.cuh — ch13's overlapped step (--chunks=N): X quantized in row chunks, the GEMM of
// chunk i on a second stream while chunk i+1 is quantized. Host driver for optimized.cu
// (plans, streams, events); the kernel is fp8_delayed.cuh's
// fp8_tensor_quantize_delayed_chunk_kernel, the row math chunks.h's.
//
// Only delayed scaling allows this: its scale comes from the amax history of earlier steps,
// so every chunk is quantized with it before the rest of X has been read (NVIDIA Transformer
// Engine's DelayedScaling). Current scaling needs this X's amax first: a barrier before any
// chunk could be written.
//
// One step, on the timing stream s and a second stream gs:
//   s:  Q0 →e0  Q1 →e1 … Q(n-1) →e(n-1)            wait(done) [end event]
//   gs:      wait(e0) G0  wait(e1) G1 … G(n-1) →done
// --chunk_priority=gemm creates gs at the device's highest stream priority; =quant moves the
// Q launches to a third stream qs at that priority (forked from s, joined through gs).
// Q c: fp8_tensor_quantize_delayed_chunk_kernel over chunk c's rows (Q0 also sets this
// step's scale_inv for the GEMMs, Q(n-1) pushes the step's one amax into the history);
// G c: cuBLASLt FP8 GEMM of chunk c's rows of Xq against all of W into chunk c's rows of Y.
// s waits for gs before the caller's end event, so the timed region is the whole step.
// serial = 1 runs the same launches all on s (no overlap): the figure the overlap is
// measured against.
#pragma once
#include "chunks.h"
#include "fp8_delayed.cuh"
#include "lt_gemm.cuh"

typedef struct {
  int n;             // chunks with rows (x_chunk_count); 1: no chunked plan is made
  int asked;         // --chunks
  int64_t M, N, K;
  int shapes;        // distinct chunk shapes: 1, or 2 when the last chunk is shorter
  int64_t rows[2];   // rows of shape 0 (every chunk but maybe the last) and of shape 1
  int unroll[2];     // the chunk kernel's 16-byte chunks per thread, per shape (timed)
  float unroll_us[2][3];  // setup medians of u = 2, 4, 8 per shape, µs
  LtGemm g[2];       // the GEMM planned and autotuned for each shape
  int priority;      // X_CHUNK_PRIO_*
  cudaStream_t gs;   // the GEMMs' stream
  cudaStream_t qs;   // the quantize launches' own stream (X_CHUNK_PRIO_QUANT only)
  cudaEvent_t quantized[X_CHUNKS_MAX], done, start;
} XChunkPlan;

// Pointers of one step (the program's buffers, or one --l2=rotate copy of X and Wq).
typedef struct {
  const __nv_bfloat16 *X;
  __nv_fp8_storage_t *Xq;
  const void *Wq;
  void *Y;  // [M][N] bf16
  Fp8TensorScale *st;
  float *history;
  int history_len;
} XChunkStep;

/** Issue one chunked step on stream s (see the header comment): p planned by
 *  x_chunk_plan (p->n >= 2), t the step's buffers. serial: every launch on s. Exits on a
 *  launch error. */
static void x_chunk_step(const XChunkPlan *p, const XChunkStep *t, int serial, cudaStream_t s) {
  const int own_q = !serial && p->priority == X_CHUNK_PRIO_QUANT;
  const cudaStream_t gs = serial ? s : p->gs, qs = own_q ? p->qs : s;
  if (own_q) {  // qs starts after everything issued on s so far
    GTL_CUDA(cudaEventRecord(p->start, s));
    GTL_CUDA(cudaStreamWaitEvent(qs, p->start, 0));
  }
  for (int c = 0; c < p->n; c++) {
    int64_t r0, rows;
    x_chunk_range(p->M, p->asked, c, &r0, &rows);
    const int sh = rows == p->rows[0] ? 0 : 1;
    const size_t off = (size_t)r0 * p->K, n = (size_t)rows * p->K;
    const int part = (c == 0 ? FP8_CHUNK_FIRST : 0) | (c == p->n - 1 ? FP8_CHUNK_LAST : 0);
    if (fp8_tensor_quantize_delayed_chunk_launch(t->X + off, t->Xq + off, n, t->st, t->history,
                                                 t->history_len, p->unroll[sh], part, qs))
      exit(GTL_EXIT_RUNTIME);
    LtGemm g = p->g[sh];  // the shape's plan on this chunk's rows
    g.W = t->Wq;
    g.X = t->Xq + off;
    g.Y = (__nv_bfloat16 *)t->Y + (size_t)r0 * p->N;
    g.C = g.C ? g.Y : NULL;
    if (!serial) {
      GTL_CUDA(cudaEventRecord(p->quantized[c], qs));
      GTL_CUDA(cudaStreamWaitEvent(gs, p->quantized[c], 0));
    }
    lt_gemm_run(&g, gs);
  }
  if (!serial) {  // gs (after every Q too) joins back: the caller's end event follows it all
    GTL_CUDA(cudaEventRecord(p->done, gs));
    GTL_CUDA(cudaStreamWaitEvent(s, p->done, 0));
  }
}

// Setup medians (µs) of fn over `k` candidates: each run LT_TUNE_SAMPLES times after an L2
// flush on ctx->stream, the candidates interleaved; fn(u, i, s) issues candidate i.
typedef void (*XChunkCandFn)(void *u, int i, cudaStream_t s);
static void x_chunk_time(GtlCtx *ctx, XChunkCandFn fn, void *u, int k, float *us) {
  float ms[8][LT_TUNE_SAMPLES];
  cudaEvent_t e[16];
  for (int i = 0; i < 2 * k; i++) GTL_CUDA(cudaEventCreate(&e[i]));
  for (int r = 0; r < LT_TUNE_SAMPLES; r++) {
    for (int i = 0; i < k; i++) {
      gtl_l2_flush(ctx, ctx->stream);
      GTL_CUDA(cudaEventRecord(e[2 * i], ctx->stream));
      fn(u, i, ctx->stream);
      GTL_CUDA(cudaEventRecord(e[2 * i + 1], ctx->stream));
    }
    GTL_CUDA(cudaStreamSynchronize(ctx->stream));
    for (int i = 0; i < k; i++) GTL_CUDA(cudaEventElapsedTime(&ms[i][r], e[2 * i], e[2 * i + 1]));
  }
  for (int i = 0; i < k; i++) {
    qsort(ms[i], LT_TUNE_SAMPLES, sizeof(float), lt_cmp_float);
    us[i] = ms[i][LT_TUNE_SAMPLES / 2] * 1e3f;
  }
  for (int i = 0; i < 2 * k; i++) GTL_CUDA(cudaEventDestroy(e[i]));
}

typedef struct {  // one chunk shape's quantize, for x_chunk_time
  const XChunkStep *t;
  size_t n;
} XChunkQuantCand;
static void x_chunk_quant_cand(void *u, int i, cudaStream_t s) {
  const XChunkQuantCand *c = (const XChunkQuantCand *)u;  // part 0: amax_acc only, no push
  if (fp8_tensor_quantize_delayed_chunk_launch(c->t->X, c->t->Xq, c->n, c->t->st, c->t->history,
                                               c->t->history_len, 2 << i, 0, s))
    exit(GTL_EXIT_RUNTIME);
}

/** Plan the chunked step for M×N×K with at most `chunks` chunks (1 to X_CHUNKS_MAX), its
 *  streams at `priority` (X_CHUNK_PRIO_*): per
 *  chunk shape, the GEMM autotuned as the whole one is (lt_gemm_plan on the shape's rows of
 *  t's Xq and Y, scale pointers d_scale_w / d_scale_x) and the chunk kernel's 16-byte
 *  chunks per thread (2, 4 or 8) timed alone, fastest kept; one stream (non-blocking) and
 *  the events. p->n = 1 when M gives one chunk: nothing is planned (the one-launch step
 *  runs). The setup runs write t's Xq and Y, and leave st's scale and history as they
 *  found them. Returns NULL, or why cuBLASLt cannot. */
static const char *x_chunk_plan(XChunkPlan *p, GtlCtx *ctx, int64_t M, int64_t N, int64_t K, int chunks,
                                int priority, const XChunkStep *t, const float *d_scale_w,
                                const float *d_scale_x, int fast_accum) {
  memset(p, 0, sizeof *p);
  p->priority = priority;
  p->asked = chunks;
  p->M = M, p->N = N, p->K = K;
  p->n = x_chunk_count(M, chunks);
  if (p->n < 2) return NULL;
  int64_t r0;
  x_chunk_range(M, chunks, 0, &r0, &p->rows[0]);
  x_chunk_range(M, chunks, p->n - 1, &r0, &p->rows[1]);
  p->shapes = p->rows[1] == p->rows[0] ? 1 : 2;
  for (int sh = 0; sh < p->shapes; sh++) {
    const LtShape s = {p->rows[sh], N, K};
    const char *why = lt_gemm_plan(&p->g[sh], ctx, &s, CUDA_R_8F_E4M3, t->Wq, t->Xq, t->Y, d_scale_w,
                                   d_scale_x, fast_accum);
    if (why) return why;
    XChunkQuantCand c = {t, (size_t)p->rows[sh] * K};
    x_chunk_time(ctx, x_chunk_quant_cand, &c, 3, p->unroll_us[sh]);
    int best = 0;
    for (int i = 1; i < 3; i++)
      if (p->unroll_us[sh][i] < p->unroll_us[sh][best]) best = i;
    p->unroll[sh] = 2 << best;
  }
  // the timing runs (part 0) left their amax in st->amax_acc: clear it, as every step leaves it
  GTL_CUDA(cudaMemsetAsync(&t->st->amax_acc, 0, sizeof t->st->amax_acc, ctx->stream));
  int least = 0, greatest = 0;
  GTL_CUDA(cudaDeviceGetStreamPriorityRange(&least, &greatest));
  GTL_CUDA(cudaStreamCreateWithPriority(&p->gs, cudaStreamNonBlocking,
                                        priority == X_CHUNK_PRIO_GEMM ? greatest : least));
  if (priority == X_CHUNK_PRIO_QUANT)
    GTL_CUDA(cudaStreamCreateWithPriority(&p->qs, cudaStreamNonBlocking, greatest));
  GTL_CUDA(cudaEventCreateWithFlags(&p->start, cudaEventDisableTiming));
  for (int c = 0; c < p->n; c++) GTL_CUDA(cudaEventCreateWithFlags(&p->quantized[c], cudaEventDisableTiming));
  GTL_CUDA(cudaEventCreateWithFlags(&p->done, cudaEventDisableTiming));
  return NULL;
}

/** One line for the report header: the --chunks value `asked`, us[4] (auto only, else NULL:
 *  the setup medians of 1, 2, 4 and 8 chunks, µs) and the plan kept (NULL: one launch). */
static void x_chunk_describe(const XChunkPlan *p, const char *asked, const float *us, char *buf,
                             size_t size) {
  int o = snprintf(buf, size, "--chunks=%s", asked);
  if (us)
    o += snprintf(buf + o, size - o, " timed at setup (the step, median of %d, L2 flushed): 1 %.1f us, "
                  "2 %.1f us, 4 %.1f us, 8 %.1f us; kept", LT_TUNE_SAMPLES, us[0], us[1], us[2], us[3]);
  if (!p || p->n < 2) {
    snprintf(buf + o, size - o, " 1 chunk (the one-launch step)");
    return;
  }
  static const char *const prio[3] = {"none", "gemm", "quant"};
  o += snprintf(buf + o, size - o, " %d chunks of %lld rows, --chunk_priority=%s", p->n,
                (long long)p->rows[0], prio[p->priority]);
  for (int sh = 0; sh < p->shapes && o < (int)size; sh++) {
    char tuned[320];
    lt_gemm_describe(&p->g[sh], tuned, sizeof tuned);
    o += snprintf(buf + o, size - o, "%s; %lld rows: fp8_tensor_quantize_delayed_chunk_kernel<%d> "
                  "(u = 2, 4, 8 alone: %.1f, %.1f, %.1f us), GEMM %s", sh ? " (the last)" : "",
                  (long long)p->rows[sh], p->unroll[sh], p->unroll_us[sh][0], p->unroll_us[sh][1],
                  p->unroll_us[sh][2], tuned);
  }
}

static void x_chunk_destroy(XChunkPlan *p) {
  if (p->n < 2) return;
  for (int sh = 0; sh < p->shapes; sh++) lt_gemm_destroy(&p->g[sh]);
  for (int c = 0; c < p->n; c++) GTL_CUDA(cudaEventDestroy(p->quantized[c]));
  GTL_CUDA(cudaEventDestroy(p->done));
  GTL_CUDA(cudaEventDestroy(p->start));
  GTL_CUDA(cudaStreamDestroy(p->gs));
  if (p->qs) GTL_CUDA(cudaStreamDestroy(p->qs));
  memset(p, 0, sizeof *p);
}

typedef void (*XChunkStepFn)(void *u, const XChunkPlan *p, cudaStream_t s);
typedef struct {  // the auto candidates, for x_chunk_time
  XChunkStepFn fn;
  void *u;
  const XChunkPlan *p[4];
} XChunkAuto;
static void x_chunk_auto_cand(void *u, int i, cudaStream_t s) {
  const XChunkAuto *a = (const XChunkAuto *)u;
  a->fn(a->u, a->p[i], s);
}

/** --chunks at setup (streams at `priority`, X_CHUNK_PRIO_*): chunks 1 to X_CHUNKS_MAX
 *  plans p[0] for that count (x_chunk_plan);
 *  chunks 0 (auto) plans p[0], p[1], p[2] for 2, 4 and 8, times the step (fn(u, plan, s)
 *  issues one; plan NULL: the one-launch step) with 1, 2, 4 and 8 chunks, us[4] their
 *  medians (µs; a count that gives one chunk is not kept), and keeps the fastest, ties to
 *  fewer chunks. *kept: the plan the step runs (NULL: one launch). us is NaN but under auto.
 *  Destroy p with x_chunk_destroy. Returns NULL, or why cuBLASLt cannot. */
static const char *x_chunk_setup(XChunkPlan p[3], GtlCtx *ctx, const LtShape *sh, int chunks,
                                 int priority, const XChunkStep *t, const float *d_scale_w, const float *d_scale_x,
                                 int fast_accum, XChunkStepFn fn, void *u, float us[4],
                                 const XChunkPlan **kept) {
  for (int i = 0; i < 4; i++) us[i] = NAN;
  XChunkAuto a = {fn, u, {NULL, NULL, NULL, NULL}};
  for (int i = 0; i < 3; i++) {
    const int want = chunks == 0 ? 2 << i : i == 0 ? chunks : 1;
    const char *why = x_chunk_plan(&p[i], ctx, sh->M, sh->N, sh->K, want, priority, t, d_scale_w,
                                   d_scale_x, fast_accum);
    if (why) return why;
    a.p[i + 1] = p[i].n > 1 ? &p[i] : NULL;
  }
  *kept = a.p[1];
  if (chunks) return NULL;
  int best = 0;
  x_chunk_time(ctx, x_chunk_auto_cand, &a, 4, us);
  for (int i = 1; i < 4; i++)
    if (a.p[i] && us[i] < us[best]) best = i;
  *kept = a.p[best];
  return NULL;
}
