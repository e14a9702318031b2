// timing.cuh — how ch04 times a method, bus bytes and size labels for the report.
//
// Timing: one method per message size, the same for every method that can use it.
//   graph      (messages <= 4 MiB; nccl and oneshot): K = 100 back-to-back all-reduces
//              are captured into one CUDA graph per GPU (each GPU's stream captured on
//              its own, the NCCL calls inside ncclGroupStart/End as usual: the pattern
//              of NCCL-tests' -G option). Every sample replays each GPU's graph on that
//              GPU's stream between two events of that GPU; the sample's latency is the
//              slowest GPU's replay time / K, and the row is the median over samples.
//              The host enqueues nothing per all-reduce, so a small message measures the
//              all-reduce, not the host's launches.
//   fork/join  (larger messages; host_staged at every size, since its host sum cannot be
//              captured): each sample records an event on GPU 0's stream, every other
//              GPU's stream waits on it (fork), each rank's work is enqueued, and GPU 0's
//              stream waits on an event from every other GPU (join), so the event pair
//              spans the slowest rank. It includes the host's enqueue cost (~15 us per
//              all-reduce here), which only matters for small messages.
#pragma once
#include "check.cuh"

// Whether m is graph-timed at this size (see the top of this file). --l2=cold needs a
// flush between all-reduces, which a graph of K back-to-back ones cannot have.
static int ar_graph_timed(const GtlCtx *ctx, const ArMethod *m, size_t bytes) {
  return m->graph && bytes <= AR_GRAPH_MAX_BYTES && ctx->args.l2 != GTL_L2_COLD;
}

// The timing column of a row of size bytes: "graph" when any of the n methods (those with
// ok[i]) is graph-timed there, else "fork".
static const char *ar_timing_name(const GtlCtx *ctx, const ArMethod *const *m, const int *ok,
                                  int n, size_t bytes) {
  for (int i = 0; i < n; i++)
    if (ok[i] && ar_graph_timed(ctx, m[i], bytes)) return "graph";
  return "fork";
}

// Graph timing: capture t->graph_k all-reduces per GPU, replay (warm-up, one untimed
// lead-in so every GPU is already busy and in step when the first sample starts, then
// ctx->args.iters samples), st = per-all-reduce ms (slowest GPU of each sample / K).
// The outputs are poisoned first and checked after the replays (with verify), so the
// graph's results are validated too. Returns 0 when that check failed.
static int ar_time_graph(ArCheck *c, const ArMethod *m, size_t count, GtlStats *st) {
  GtlCtx *ctx = c->ctx;
  ArTeam *t = c->t;
  const int n = ctx->args.iters, nl = t->n_local;
  cudaGraph_t g[AR_MAX_GPUS];
  cudaGraphExec_t ge[AR_MAX_GPUS];
  cudaEvent_t *ev = (cudaEvent_t *)malloc(sizeof(cudaEvent_t) * 2 * (size_t)n * nl);
  float *ms = (float *)malloc(sizeof(float) * (size_t)n);
  if (!ev || !ms) {
    fprintf(stderr, "error: host out of memory for %d timing samples\n", n);
    ar_exit(GTL_EXIT_RUNTIME);
  }
  if (ctx->args.verify) ar_poison_outputs(t);
  // Thread-local capture mode, as NCCL-tests uses: NCCL's own threads may still call
  // cudaMalloc while this thread captures. While any of this thread's streams captures,
  // calls such as cudaGraphInstantiate or cudaEventCreate are refused (error 900), so
  // every capture ends before the first of them.
  for (int r = 0; r < nl; r++) {
    GTL_CUDA(cudaSetDevice(t->dev[r]));
    GTL_CUDA(cudaStreamBeginCapture(t->stream[r], cudaStreamCaptureModeThreadLocal));
  }
  for (int k = 0; k < t->graph_k; k++) m->launch(t, count);
  for (int r = 0; r < nl; r++) {
    GTL_CUDA(cudaSetDevice(t->dev[r]));
    GTL_CUDA(cudaStreamEndCapture(t->stream[r], &g[r]));
  }
  for (int r = 0; r < nl; r++) {
    GTL_CUDA(cudaSetDevice(t->dev[r]));
    GTL_CUDA(cudaGraphInstantiate(&ge[r], g[r], 0));
    for (int i = 0; i < 2 * n; i++) GTL_CUDA(cudaEventCreate(&ev[(size_t)r * 2 * n + i]));
  }
  gtl_phase_push(GTL_PHASE_WARMUP);
  for (int w = 0; w < ctx->args.warmup; w++)
    for (int r = 0; r < nl; r++) {
      GTL_CUDA(cudaSetDevice(t->dev[r]));
      GTL_CUDA(cudaGraphLaunch(ge[r], t->stream[r]));
    }
  for (int r = 0; r < nl; r++) {
    GTL_CUDA(cudaSetDevice(t->dev[r]));
    GTL_CUDA(cudaStreamSynchronize(t->stream[r]));
  }
  gtl_phase_pop();
#ifdef GTL_MPI
  MPI_Barrier(MPI_COMM_WORLD);
#endif
  gtl_phase_push(GTL_PHASE_TIMED);
  for (int i = -1; i < n; i++)  // i = -1: the untimed lead-in
    for (int r = 0; r < nl; r++) {
      GTL_CUDA(cudaSetDevice(t->dev[r]));
      cudaEvent_t *e = &ev[(size_t)r * 2 * n + 2 * (size_t)(i < 0 ? 0 : i)];
      if (i >= 0) GTL_CUDA(cudaEventRecord(e[0], t->stream[r]));
      GTL_CUDA(cudaGraphLaunch(ge[r], t->stream[r]));
      if (i >= 0) GTL_CUDA(cudaEventRecord(e[1], t->stream[r]));
    }
  for (int r = 0; r < nl; r++) {
    GTL_CUDA(cudaSetDevice(t->dev[r]));
    GTL_CUDA(cudaStreamSynchronize(t->stream[r]));
  }
  gtl_phase_pop();
  for (int i = 0; i < n; i++) ms[i] = 0;
  for (int r = 0; r < nl; r++) {  // ms[i] = the slowest GPU's replay i, per all-reduce
    GTL_CUDA(cudaSetDevice(t->dev[r]));
    for (int i = 0; i < n; i++) {
      float x;
      const cudaEvent_t *e = &ev[(size_t)r * 2 * n + 2 * (size_t)i];
      GTL_CUDA(cudaEventElapsedTime(&x, e[0], e[1]));
      if (x / t->graph_k > ms[i]) ms[i] = x / t->graph_k;
    }
  }
#ifdef GTL_MPI
  MPI_Allreduce(MPI_IN_PLACE, ms, n, MPI_FLOAT, MPI_MAX, MPI_COMM_WORLD);
#endif
  for (int r = 0; r < nl; r++) {
    GTL_CUDA(cudaSetDevice(t->dev[r]));
    for (int i = 0; i < 2 * n; i++) GTL_CUDA(cudaEventDestroy(ev[(size_t)r * 2 * n + i]));
    GTL_CUDA(cudaGraphExecDestroy(ge[r]));
    GTL_CUDA(cudaGraphDestroy(g[r]));
  }
  GTL_CUDA(cudaSetDevice(t->dev[0]));
  if (gtl_stats_compute(ms, n, st) != 0) {
    fprintf(stderr, "error: timing produced a non-finite sample\n");
    ar_exit(GTL_EXIT_RUNTIME);
  }
  free(ev);
  free(ms);
  int pass = 1;
  if (ctx->args.verify) {
    char when[64];
    GtlErr e;
    snprintf(when, sizeof when, ", after %d graph replays", ctx->args.warmup + 1 + n);
    gtl_phase_push(GTL_PHASE_VALIDATE);
    pass = ar_check(c, m, count, when, &e);
    gtl_phase_pop();
  }
  return pass;
}

// Time m on count elements (median in st, ms per all-reduce): graph-timed when
// ar_graph_timed says so, else fork/join with gtl_bench. Returns 0 when the check after
// the graph replays, or the method's own error check after the fork/join runs, failed
// (st is then not to be reported).
static int ar_time(ArCheck *c, const ArMethod *m, size_t count, GtlStats *st) {
  if (ar_graph_timed(c->ctx, m, count * sizeof(__nv_bfloat16))) return ar_time_graph(c, m, count, st);
#ifdef GTL_MPI
  MPI_Barrier(MPI_COMM_WORLD);
#endif
  ArRun run = {c->t, m, count};
  gtl_bench(c->ctx, ar_run, &run, st);
  char why[256];
  if (m->check && m->check(c->t, why, sizeof why)) {  // e.g. a barrier timed out meanwhile
    fprintf(stderr, "ch04 %s: %zu bytes, during the timed runs: %s\n", m->name,
            count * sizeof(__nv_bfloat16), why);
    c->any_fail = 1;
    c->fail_err.pass = 0;
    return 0;
  }
  return 1;
}

static double ar_bus_bytes(int n_ranks, size_t bytes) {
  return 2.0 * (n_ranks - 1) / n_ranks * (double)bytes;
}

static void ar_fmt_bytes(char *b, size_t n, size_t bytes) {
  if (bytes >= (1u << 20) && bytes % (1u << 20) == 0) snprintf(b, n, "%zu MiB", bytes >> 20);
  else if (bytes >= 1024 && bytes % 1024 == 0) snprintf(b, n, "%zu KiB", bytes >> 10);
  else snprintf(b, n, "%zu B", bytes);
}

