// schedule.cuh — ch17's scenario on a placement: where each stage runs (PdPlacement, filled
// by the driver or by optimized.cu's place()), the enqueue of one iteration (decode steps,
// chunks arriving every N steps), the per-step and per-chunk graphs, the timing (TPOT,
// prefill busy time, makespan) and the --check-sm run.
#pragma once
#include "stages.cuh"

// ---- placements, the scenario and its timing ----------------------------------------------
typedef enum { PD_TIME_SLICED, PD_SEQUENTIAL, PD_STREAMS, PD_GRAPH, PD_SPLIT } PdKind;

typedef struct {
  PdKind kind;
  int split_p;    // PD_SPLIT: percent of the SMs for prefill (the rest for decode)
  int sm_target;  // PD_SPLIT: tell cuBLASLt the prefill partition's SM count
  char name[32];  // "time_sliced", "split_70_30", …
} PdMode;

typedef struct {
  cudaStream_t dec, pre;  // where each stage runs (equal: one stream, arrival order)
  int sequential;         // every decode step first, then every chunk
  int graphs;             // replay one CUDA graph per step and per chunk
  int sms_dec, sms_pre;   // SMs each stage may use; 0 = the whole GPU
  int cublas_sms;         // CUBLASLT_MATMUL_DESC_SM_COUNT_TARGET for the prefill GEMMs
  cudaGraphExec_t *g_dec, *g_pre;  // filled by the driver when graphs
} PdPlacement;

// What optimized.cu supplies: fill pl for mode m (pl == NULL: only say whether m can run
// here). Returns 0, or GTL_EXIT_WAIVED with why. unplace releases what place made.
typedef int (*PdPlaceFn)(const GtlCtx *ctx, const PdMode *m, PdPlacement *pl, char *why,
                         size_t n);
typedef void (*PdUnplaceFn)(PdPlacement *pl);

typedef struct {
  cudaEvent_t start, end, *dec, *pre0, *pre1;  // dec[S+1]: step boundaries; pre0/1[C]: chunks
} PdEvents;

static const void *pd_name_step, *pd_name_chunk;
// Per-step and per-chunk markers are NVTX start/end ranges (payload = index): they leave the
// push/pop stack alone, so "gauntlet@ch17.<variant>.timed]" still names the innermost range
// around every launch (scripts/profile.sh).

static void pd_chunk_enqueue(const PdWork *w, const PdPlacement *pl, const PdEvents *ev, int c) {
  const unsigned long long id = gtl_nvtx_start_payload(pd_name_chunk, c);
  GTL_CUDA(cudaEventRecord(ev->pre0[c], pl->pre));
  if (pl->graphs) GTL_CUDA(cudaGraphLaunch(pl->g_pre[c], pl->pre));
  else pd_prefill_chunk(w, c, pl->pre);
  GTL_CUDA(cudaEventRecord(ev->pre1[c], pl->pre));
  gtl_nvtx_end(id);
}

// One iteration of the scenario, forked from and joined back to `origin`.
static void pd_enqueue(const PdWork *w, const PdPlacement *pl, cudaStream_t origin,
                       const PdEvents *ev) {
  GTL_CUDA(cudaEventRecord(ev->start, origin));
  if (pl->dec != origin) GTL_CUDA(cudaStreamWaitEvent(pl->dec, ev->start, 0));
  if (pl->pre != origin && pl->pre != pl->dec) GTL_CUDA(cudaStreamWaitEvent(pl->pre, ev->start, 0));
  GTL_CUDA(cudaEventRecord(ev->dec[0], pl->dec));
  int c = 0;
  for (int i = 0; i < w->S; i++) {
    if (!pl->sequential && i % w->every == 0 && c < w->C) {  // chunk c arrives as step i starts
      if (pl->pre != pl->dec) GTL_CUDA(cudaStreamWaitEvent(pl->pre, ev->dec[i], 0));
      pd_chunk_enqueue(w, pl, ev, c++);
    }
    const unsigned long long id = gtl_nvtx_start_payload(pd_name_step, i);
    if (pl->graphs) GTL_CUDA(cudaGraphLaunch(pl->g_dec[i], pl->dec));
    else pd_decode_step(w, i, pl->dec);
    GTL_CUDA(cudaEventRecord(ev->dec[i + 1], pl->dec));
    gtl_nvtx_end(id);
  }
  if (pl->sequential) {
    if (pl->pre != pl->dec) GTL_CUDA(cudaStreamWaitEvent(pl->pre, ev->dec[w->S], 0));
    for (; c < w->C; c++) pd_chunk_enqueue(w, pl, ev, c);
  }
  if (pl->dec != origin) GTL_CUDA(cudaStreamWaitEvent(origin, ev->dec[w->S], 0));
  if (pl->pre != origin) GTL_CUDA(cudaStreamWaitEvent(origin, ev->pre1[w->C - 1], 0));
  GTL_CUDA(cudaEventRecord(ev->end, origin));
}

// Capture one graph per decode step (on pl->dec) and per chunk (on pl->pre).
static void pd_graphs_build(const PdWork *w, PdPlacement *pl) {
  pl->g_dec = (cudaGraphExec_t *)calloc(w->S, sizeof(cudaGraphExec_t));
  pl->g_pre = (cudaGraphExec_t *)calloc(w->C, sizeof(cudaGraphExec_t));
  for (int i = 0; i < w->S + w->C; i++) {
    const int is_dec = i < w->S;
    const cudaStream_t s = is_dec ? pl->dec : pl->pre;
    cudaGraph_t g;
    GTL_CUDA(cudaStreamBeginCapture(s, cudaStreamCaptureModeThreadLocal));
    if (is_dec) pd_decode_step(w, i, s);
    else pd_prefill_chunk(w, i - w->S, s);
    GTL_CUDA(cudaStreamEndCapture(s, &g));
    GTL_CUDA(cudaGraphInstantiate(is_dec ? &pl->g_dec[i] : &pl->g_pre[i - w->S], g, 0));
    GTL_CUDA(cudaGraphDestroy(g));
  }
}
static void pd_graphs_free(const PdWork *w, PdPlacement *pl) {
  for (int i = 0; pl->g_dec && i < w->S; i++) GTL_CUDA(cudaGraphExecDestroy(pl->g_dec[i]));
  for (int i = 0; pl->g_pre && i < w->C; i++) GTL_CUDA(cudaGraphExecDestroy(pl->g_pre[i]));
  free(pl->g_dec), free(pl->g_pre);
  pl->g_dec = pl->g_pre = NULL;
}

typedef struct {
  PdMode mode;
  int sms_dec, sms_pre;
  GtlStats tpot;  // ms, over iters × S steps
  double prefill_tok_s, prefill_tflops, makespan_ms;
  int ran, waived;
  char why[256];
  int equal;  // bitwise equal to the sequential run's outputs: 1, 0; -1 is that run; -2 unchecked
  int check;  // --check-sm: -1 not run, 1 PASS, 0 FAIL, 2 shown only (no partition)
  int seen_dec, seen_pre, seen_both;
} PdRow;

static int pd_popcount(const unsigned int *m) {
  int n = 0;
  for (int i = 0; i < PD_SMLOG_WORDS; i++) n += __builtin_popcount(m[i]);
  return n;
}

// Warm-up and timed iterations of one placement: TPOT per step, prefill busy time, makespan.
static void pd_time(GtlCtx *ctx, const PdWork *w, const PdPlacement *pl, const PdEvents *ev,
                    PdRow *row) {
  const int iters = ctx->args.iters;
  float *tpot = (float *)malloc(sizeof(float) * (size_t)iters * w->S);
  float *mk = (float *)malloc(sizeof(float) * iters);
  double busy_ms = 0;
  gtl_phase_push(GTL_PHASE_WARMUP);
  for (int it = 0; it < ctx->args.warmup; it++) pd_enqueue(w, pl, ctx->stream, ev);
  GTL_CUDA(cudaStreamSynchronize(ctx->stream));
  gtl_phase_pop();
  gtl_phase_push(GTL_PHASE_TIMED);
  for (int it = 0; it < iters; it++) {  // events are reused: read them before the next iteration
    pd_enqueue(w, pl, ctx->stream, ev);
    GTL_CUDA(cudaEventSynchronize(ev->end));
    for (int i = 0; i < w->S; i++)
      GTL_CUDA(cudaEventElapsedTime(&tpot[(size_t)it * w->S + i], ev->dec[i], ev->dec[i + 1]));
    for (int c = 0; c < w->C; c++) {
      float ms;
      GTL_CUDA(cudaEventElapsedTime(&ms, ev->pre0[c], ev->pre1[c]));
      busy_ms += ms;
    }
    GTL_CUDA(cudaEventElapsedTime(&mk[it], ev->start, ev->end));
  }
  gtl_phase_pop();
  GtlStats ms;
  if (gtl_stats_compute(tpot, iters * w->S, &row->tpot) || gtl_stats_compute(mk, iters, &ms)) {
    fprintf(stderr, "error: timing produced a non-finite sample\n");
    exit(GTL_EXIT_RUNTIME);
  }
  row->makespan_ms = ms.median;
  row->prefill_tok_s = (double)iters * w->C * w->T / (busy_ms * 1e-3);
  row->prefill_tflops = (double)iters * w->C * pd_prefill_flops(w) / (busy_ms * 1e-3) / 1e12;
  free(tpot), free(mk);
}

// One untimed run with %smid logging on: which SMs each stage's blocks ran on.
static void pd_check_sm(GtlCtx *ctx, const PdWork *w, const PdPlacement *pl, const PdEvents *ev,
                        PdRow *row) {
  unsigned int *d_log = (unsigned int *)gtl_malloc(2 * PD_SMLOG_WORDS * 4, "smid log");
  unsigned int h_log[2 * PD_SMLOG_WORDS], *none = NULL;
  GTL_CUDA(cudaMemset(d_log, 0, 2 * PD_SMLOG_WORDS * 4));
  GTL_CUDA(cudaMemcpyToSymbol(pd_smlog, &d_log, sizeof d_log));
  pd_enqueue(w, pl, ctx->stream, ev);
  GTL_CUDA(cudaStreamSynchronize(ctx->stream));
  GTL_CUDA(cudaMemcpyToSymbol(pd_smlog, &none, sizeof none));
  GTL_CUDA(cudaMemcpy(h_log, d_log, sizeof h_log, cudaMemcpyDeviceToHost));
  GTL_CUDA(cudaFree(d_log));
  unsigned int both[PD_SMLOG_WORDS];
  for (int i = 0; i < PD_SMLOG_WORDS; i++) both[i] = h_log[i] & h_log[PD_SMLOG_WORDS + i];
  row->seen_dec = pd_popcount(h_log);
  row->seen_pre = pd_popcount(h_log + PD_SMLOG_WORDS);
  row->seen_both = pd_popcount(both);
  if (pl->sms_dec > 0 && pl->sms_pre > 0)
    row->check =
        row->seen_both == 0 && row->seen_dec <= pl->sms_dec && row->seen_pre <= pl->sms_pre;
  else
    row->check = 2;
}

// First differing fp32 word of two host buffers, or -1.
static long long pd_first_diff(const float *a, const float *b, size_t n, size_t *n_diff) {
  long long first = -1;
  *n_diff = 0;
  const uint32_t *ua = (const uint32_t *)a, *ub = (const uint32_t *)b;
  for (size_t i = 0; i < n; i++)
    if (ua[i] != ub[i]) {
      if (first < 0) first = (long long)i;
      (*n_diff)++;
    }
  return first;
}

