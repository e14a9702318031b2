// allreduce.cuh — ch04's problem, the GPU team, the host-staged all-reduce, the reference
// and the driver, shared by baseline.cu and optimized.cu (which add only their methods).
//
// The problem: tensor-parallel decode ends every attention and MoE block with an
// all-reduce of the hidden state. Each of n GPUs (ranks) holds a partial result
// x_r[count] in bf16, and every rank needs out = Σ_r x_r. One TP MoE layer at decode
// reduces batch × 2880 bf16 (gptoss20b's hidden size): 5.6 KB at batch 1, 360 KB at
// batch 64. The sweep runs 4 KB … 256 MB.
//
// Roofline, as "bus bandwidth" (NCCL-tests, doc/PERFORMANCE.md): a ring all-reduce makes
// every rank send, and receive, 2(n−1)/n · S bytes for a message of S bytes, whatever n is:
//     bus bytes = 2(n−1)/n · S per rank,   bus GB/s = bus bytes / time,
// so the bus bandwidth of a good all-reduce approaches one GPU's link bandwidth in each
// direction. That link figure is measured in the same run by a peer copy: every GPU
// copies S bytes to the next one at once (cudaMemcpyPeerAsync), so every link is busy in
// both directions, as in the all-reduce.
//
// The host-staged all-reduce lives here, not in baseline.cu, because optimized --sweep
// times it beside NCCL and the one-shot kernel.
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
#include <cuda_bf16.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#ifdef GTL_MPI
#define OMPI_SKIP_MPICXX 1   // the C API only (the C++ bindings are deprecated and warn)
#define MPICH_SKIP_MPICXX 1
#include <mpi.h>
#endif

#include "../common/gauntlet.h"

#define AR_MAX_GPUS 8
#define AR_HIDDEN 2880          // gptoss20b hidden size: one decode token's hidden state
#define AR_MAX_THREADS 16       // host threads for the host-staged sum and the reference
#define AR_MAX_BYTES (512ull << 20)
#define AR_MAX_METHODS 4      // host_staged + a program's methods
#define AR_GRAPH_K 100        // all-reduces per graph-timed sample (default of --graph_k)
#define AR_GRAPH_MAX_BYTES (4ull << 20)  // messages up to this size are graph-timed

typedef struct {
  int n_ranks;                         // GPUs in the all-reduce (every process)
  int n_local;                         // GPUs this process drives: n_ranks, or 1 with MPI
  int rank0;                           // global rank of this process's first GPU
  int dev[AR_MAX_GPUS];                // CUDA device of each local rank
  cudaStream_t stream[AR_MAX_GPUS];    // stream[0] is ctx->stream (GPU 0's timed stream)
  cudaEvent_t fork, join[AR_MAX_GPUS];
  size_t max_count;                    // bf16 elements allocated per buffer
  __nv_bfloat16 *d_in[AR_MAX_GPUS];    // [max_count] each rank's partial sums (never written)
  __nv_bfloat16 *d_out[AR_MAX_GPUS];   // [max_count] each rank's result, guarded
  GtlGuarded g_out[AR_MAX_GPUS];
  __nv_bfloat16 *h_stage[AR_MAX_GPUS]; // pinned [max_count]: host-staged copies of d_in
  __nv_bfloat16 *h_sum;                // pinned [max_count]: the host's sum, copied back
  float *h_acc;                        // [max_count] fp32 partial sums (MPI only)
  int peer_ok;                         // every local GPU may read every other's memory
  int sms;                             // SMs per GPU
  int graph_k;                         // all-reduces captured per graph-timed sample
} ArTeam;

// A way to all-reduce. setup returns 0 when the method can run (why may then hold a note
// for the header, e.g. a library version), else -1 with the reason in why; launch
// enqueues one out-of-place all-reduce of count elements of every local rank on
// t->stream[r] (it may block the host: the host-staged method does). check, when not
// NULL, returns nonzero (reason in why) when the GPUs flagged an error of the method's
// own, e.g. a barrier that timed out; graph says launch enqueues stream work only, so it
// can be captured into a CUDA graph.
typedef struct {
  const char *name;      // [a-z_]: "host_staged", "nccl", "oneshot"
  const char *strategy;  // one line for the header
  int (*setup)(ArTeam *t, char *why, size_t n);
  void (*launch)(ArTeam *t, size_t count);
  void (*teardown)(ArTeam *t);
  int (*check)(ArTeam *t, char *why, size_t n);
  int graph;
} ArMethod;

static void ar_exit(int code) {
  fflush(stdout);
#ifdef GTL_MPI
  MPI_Finalize();
#endif
  exit(code);
}

// One WAIVED line (docs/contract.md), exit 77.
static void ar_waive(const GtlCtx *ctx, const char *what) {
  printf("WAIVED: %s/%s %s\n", ctx->target, ctx->variant, what);
  ar_exit(GTL_EXIT_WAIVED);
}

// Seed of global rank g's input: a different stream of the counter-based generator per rank.
static uint64_t ar_seed(uint64_t seed, int g) { return gtl_splitmix64(seed ^ (0xA11ED0ull + g)); }

// ---- host threads --------------------------------------------------------------------
typedef void (*ArRangeFn)(void *arg, size_t lo, size_t hi);
typedef struct {
  ArRangeFn fn;
  void *arg;
  size_t lo, hi;
} ArSlice;

static void *ar_slice_main(void *p) {
  ArSlice *s = (ArSlice *)p;
  s->fn(s->arg, s->lo, s->hi);
  return NULL;
}

// fn over [0, n) split across up to AR_MAX_THREADS host threads, at least min_per_thread
// items each (a small range runs on the calling thread alone: a thread start costs ~20 µs).
static void ar_parallel_for(size_t n, size_t min_per_thread, ArRangeFn fn, void *arg) {
  long cpus = sysconf(_SC_NPROCESSORS_ONLN);
  size_t threads = n / (min_per_thread ? min_per_thread : 1);
  if (threads > AR_MAX_THREADS) threads = AR_MAX_THREADS;
  if (cpus > 0 && threads > (size_t)cpus) threads = (size_t)cpus;
  if (threads < 1) threads = 1;
  const size_t chunk = ((n + threads - 1) / threads + 7) & ~(size_t)7;
  ArSlice slice[AR_MAX_THREADS];
  pthread_t tid[AR_MAX_THREADS];
  int started[AR_MAX_THREADS] = {0};
  for (size_t i = 0; i < threads; i++) {
    size_t lo = i * chunk < n ? i * chunk : n, hi = lo + chunk < n ? lo + chunk : n;
    slice[i].fn = fn;
    slice[i].arg = arg;
    slice[i].lo = lo;
    slice[i].hi = hi;
    if (i > 0) started[i] = pthread_create(&tid[i], NULL, ar_slice_main, &slice[i]) == 0;
  }
  for (size_t i = 0; i < threads; i++)  // slice 0, and any thread that failed to start
    if (i == 0 || !started[i]) ar_slice_main(&slice[i]);
  for (size_t i = 1; i < threads; i++)
    if (started[i]) pthread_join(tid[i], NULL);
}

// ---- the host-staged all-reduce (the baseline; also a row of optimized --sweep) -------
typedef struct {
  const __nv_bfloat16 *const *in;
  int n_in;
  __nv_bfloat16 *out;  // bf16 result, or NULL
  float *acc;          // fp32 partial sums (MPI), when out is NULL
} ArHostSum;

// out[i] = Σ_r in[r][i], accumulated in fp32 in rank order, rounded once to bf16 (RNE):
// the same order and rounding as the one-shot kernel, so the two agree bit for bit.
static void ar_host_sum_range(void *p, size_t lo, size_t hi) {
  const ArHostSum *a = (const ArHostSum *)p;
  for (size_t i = lo; i < hi; i++) {
    float acc = __bfloat162float(a->in[0][i]);
    for (int r = 1; r < a->n_in; r++) acc += __bfloat162float(a->in[r][i]);
    if (a->out) a->out[i] = __float2bfloat16_rn(acc);
    else a->acc[i] = acc;
  }
}

#ifdef GTL_MPI
typedef struct {
  const float *acc;
  __nv_bfloat16 *out;
} ArRound;
static void ar_round_range(void *p, size_t lo, size_t hi) {
  const ArRound *a = (const ArRound *)p;
  for (size_t i = lo; i < hi; i++) a->out[i] = __float2bfloat16_rn(a->acc[i]);
}
#endif

static int ar_host_staged_setup(ArTeam *t, char *why, size_t n) {
  (void)why;
  (void)n;
  const size_t bytes = t->max_count * sizeof(__nv_bfloat16);
  for (int r = 0; r < t->n_local; r++)
    t->h_stage[r] = (__nv_bfloat16 *)gtl_malloc_pinned(bytes, "host staging [count] bf16");
  t->h_sum = (__nv_bfloat16 *)gtl_malloc_pinned(bytes, "host sum [count] bf16");
#ifdef GTL_MPI
  t->h_acc = (float *)malloc(t->max_count * sizeof(float));
  if (!t->h_acc) {
    fprintf(stderr, "error: host out of memory for %zu fp32 partial sums\n", t->max_count);
    ar_exit(GTL_EXIT_RUNTIME);
  }
#endif
  return 0;
}

// Copy every rank's buffer to pinned host memory (all GPUs at once), wait, sum on the
// host's cores, copy the sum back to every GPU (all at once). With MPI, the processes'
// fp32 partial sums meet in MPI_Allreduce between the sum and the copy back.
static void ar_host_staged_launch(ArTeam *t, size_t count) {
  const size_t bytes = count * sizeof(__nv_bfloat16);
  for (int r = 0; r < t->n_local; r++) {
    GTL_CUDA(cudaSetDevice(t->dev[r]));
    GTL_CUDA(cudaMemcpyAsync(t->h_stage[r], t->d_in[r], bytes, cudaMemcpyDeviceToHost,
                             t->stream[r]));
  }
  for (int r = 0; r < t->n_local; r++) GTL_CUDA(cudaStreamSynchronize(t->stream[r]));
#ifdef GTL_MPI
  ArHostSum a = {(const __nv_bfloat16 *const *)t->h_stage, t->n_local, NULL, t->h_acc};
  ar_parallel_for(count, 1 << 16, ar_host_sum_range, &a);
  MPI_Allreduce(MPI_IN_PLACE, t->h_acc, (int)count, MPI_FLOAT, MPI_SUM, MPI_COMM_WORLD);
  ArRound rd = {t->h_acc, t->h_sum};
  ar_parallel_for(count, 1 << 16, ar_round_range, &rd);
#else
  ArHostSum a = {(const __nv_bfloat16 *const *)t->h_stage, t->n_local, t->h_sum, NULL};
  ar_parallel_for(count, 1 << 16, ar_host_sum_range, &a);
#endif
  for (int r = 0; r < t->n_local; r++) {
    GTL_CUDA(cudaSetDevice(t->dev[r]));
    GTL_CUDA(cudaMemcpyAsync(t->d_out[r], t->h_sum, bytes, cudaMemcpyHostToDevice,
                             t->stream[r]));
  }
  GTL_CUDA(cudaSetDevice(t->dev[0]));
}

static void ar_host_staged_teardown(ArTeam *t) {
  for (int r = 0; r < t->n_local; r++) GTL_CUDA(cudaFreeHost(t->h_stage[r]));
  GTL_CUDA(cudaFreeHost(t->h_sum));
  free(t->h_acc);
}

static const ArMethod ar_host_staged = {
    "host_staged",
    "host-staged: D2H every rank (pinned, all GPUs at once), sum on the host's cores in fp32, "
    "H2D the sum to every rank",
    ar_host_staged_setup, ar_host_staged_launch, ar_host_staged_teardown, NULL, 0};

// ---- fork / join: one all-reduce spanning every local GPU, timed on GPU 0's stream ----
typedef struct {
  ArTeam *t;
  const ArMethod *m;
  size_t count;
} ArRun;

static void ar_fork(ArTeam *t, cudaStream_t s) {
  GTL_CUDA(cudaEventRecord(t->fork, s));
  for (int r = 1; r < t->n_local; r++) GTL_CUDA(cudaStreamWaitEvent(t->stream[r], t->fork, 0));
}

static void ar_join(ArTeam *t, cudaStream_t s) {
  for (int r = 1; r < t->n_local; r++) {
    GTL_CUDA(cudaEventRecord(t->join[r], t->stream[r]));
    GTL_CUDA(cudaStreamWaitEvent(s, t->join[r], 0));
  }
}

static void ar_run(void *user, cudaStream_t s) {
  ArRun *run = (ArRun *)user;
  ar_fork(run->t, s);
  run->m->launch(run->t, run->count);
  ar_join(run->t, s);
}

// Peer copy: every GPU copies `count` elements to the next GPU at once (the link figure).
static void ar_peer_copy(void *user, cudaStream_t s) {
  ArRun *run = (ArRun *)user;
  ArTeam *t = run->t;
  ar_fork(t, s);
  for (int r = 0; r < t->n_local; r++) {
    int to = (r + 1) % t->n_local;
    GTL_CUDA(cudaMemcpyPeerAsync(t->d_out[to], t->dev[to], t->d_in[r], t->dev[r],
                                 run->count * sizeof(__nv_bfloat16), t->stream[r]));
  }
  ar_join(t, s);
}

// ---- the reference --------------------------------------------------------------------
typedef struct {
  double *ref;
  uint64_t seed;
  int n_ranks;
} ArRef;

// ref[i] = Σ_g x_g[i] in double, from the same bf16 values gtl_fill_uniform wrote on
// every rank (the generator is counter-based, so no data leaves the GPUs for this).
static void ar_ref_range(void *p, size_t lo, size_t hi) {
  const ArRef *a = (const ArRef *)p;
  for (size_t i = lo; i < hi; i++) {
    double s = 0;
    for (int g = 0; g < a->n_ranks; g++)
      s += gtl_round_bf16(gtl_uniform(ar_seed(a->seed, g), i, -1.0f, 1.0f));
    a->ref[i] = s;
  }
}

// bf16 tolerance (docs/contract.md) widened for n > 2: NCCL's ring rounds each partial sum to
// bf16 once per hop, so up to n−1 roundings stack up. Recursive summation's error bound
// grows as (n−1)·u·Σ|x_i| (Higham, Accuracy and Stability of Numerical Algorithms, 2nd ed.,
// 2002, §4.2); the rel_l2 of independent roundings grows as sqrt(n−1).
static GtlTol ar_tol(int n_ranks) {
  GtlTol t = gtl_tol_for(GTL_BF16);
  const double hops = n_ranks > 2 ? n_ranks - 1 : 1;
  t.rel_l2 *= sqrt(hops);
  t.rtol *= hops;
  t.atol *= hops;
  return t;
}

typedef struct {
  GtlCtx *ctx;
  ArTeam *t;
  double *ref;     // [max_count]
  uint16_t *bits;  // [max_count] host copy of one rank's output
  float *outf;     // [max_count]
  int any_fail;    // a validation failed somewhere: the program exits 1
  GtlErr fail_err;
} ArCheck;

static void ar_poison_outputs(ArTeam *t) {
  for (int r = 0; r < t->n_local; r++) {
    GTL_CUDA(cudaSetDevice(t->dev[r]));
    gtl_poison(t->d_out[r], t->max_count * sizeof(__nv_bfloat16), t->stream[r]);
  }
  GTL_CUDA(cudaSetDevice(t->dev[0]));
}

// Compare every local rank's output (after the caller synchronized) with the reference,
// and, with MPI, combine the verdict of all processes. Also checks the guard bands, that
// the 256 bytes past count are still poison, and the method's own error flags (check).
// Returns pass; e receives the worst rank's comparison; `when` names the run in a FAIL.
static int ar_check(ArCheck *c, const ArMethod *m, size_t count, const char *when, GtlErr *e) {
  ArTeam *t = c->t;
  const size_t max_bytes = t->max_count * sizeof(__nv_bfloat16);
  const size_t bytes = count * sizeof(__nv_bfloat16);
  const size_t tail = max_bytes - bytes < 256 ? max_bytes - bytes : 256;
  int pass = 1;
  memset(e, 0, sizeof *e);
  for (int r = 0; r < t->n_local; r++) {
    GTL_CUDA(cudaSetDevice(t->dev[r]));
    GTL_CUDA(cudaMemcpy(c->bits, t->d_out[r], bytes + tail, cudaMemcpyDeviceToHost));
    size_t bad_tail = 0;
    for (size_t b = 0; b < tail; b++) bad_tail += ((const unsigned char *)c->bits)[bytes + b] != 0xFF;
    gtl_bf16_to_f32_array(c->bits, c->outf, count);
    GtlErr er;
    gtl_compare(c->outf, c->ref, count, ar_tol(t->n_ranks), &er);
    size_t bad_guard = gtl_guarded_check(&t->g_out[r]);
    if (bad_tail || bad_guard) {
      fprintf(stderr, "ch04 %s: rank %d wrote %zu bytes past its %zu-byte result and %zu guard "
                      "bytes\n", m->name, t->rank0 + r, bad_tail, bytes, bad_guard);
      er.pass = 0;
    }
    if (r == 0 || !er.pass || (pass && er.rel_l2 > e->rel_l2)) *e = er;
    pass &= er.pass;
  }
  GTL_CUDA(cudaSetDevice(t->dev[0]));
  char why[256];
  if (m->check && m->check(t, why, sizeof why)) {
    fprintf(stderr, "ch04 %s: %s\n", m->name, why);
    pass = 0;
  }
#ifdef GTL_MPI
  double rl = e->rel_l2;
  MPI_Allreduce(MPI_IN_PLACE, &pass, 1, MPI_INT, MPI_MIN, MPI_COMM_WORLD);
  MPI_Allreduce(MPI_IN_PLACE, &rl, 1, MPI_DOUBLE, MPI_MAX, MPI_COMM_WORLD);
  e->rel_l2 = rl;
#endif
  e->pass = pass;
  if (!pass) {
    c->any_fail = 1;
    c->fail_err = *e;
    char what[128];
    snprintf(what, sizeof what, "%s %zu bytes%s", m->name, bytes, when);
    gtl_err_print(stderr, e, what);
  }
  return pass;
}

// Poison every rank's output, run one all-reduce of count elements (fork/join), check it.
static int ar_validate(ArCheck *c, const ArMethod *m, size_t count, GtlErr *e) {
  ArTeam *t = c->t;
  gtl_phase_push(GTL_PHASE_VALIDATE);
  ar_poison_outputs(t);
  ArRun run = {t, m, count};
  ar_run(&run, c->ctx->stream);
  GTL_CUDA(cudaStreamSynchronize(c->ctx->stream));
  const int pass = ar_check(c, m, count, "", e);
  gtl_phase_pop();
  return pass;
}

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

// ---- set-up -----------------------------------------------------------------------------
static void ar_team_open(GtlCtx *ctx, ArTeam *t, size_t max_count) {
  t->max_count = max_count;
  t->sms = ctx->dev.sms;
  const size_t bytes = max_count * sizeof(__nv_bfloat16);
  for (int r = 0; r < t->n_local; r++) {
    GTL_CUDA(cudaSetDevice(t->dev[r]));
    if (r == 0) t->stream[r] = ctx->stream;
    else GTL_CUDA(cudaStreamCreateWithFlags(&t->stream[r], cudaStreamNonBlocking));
    GTL_CUDA(cudaEventCreateWithFlags(&t->join[r], cudaEventDisableTiming));
    t->d_in[r] = (__nv_bfloat16 *)gtl_malloc(bytes, "x [count] bf16 (one rank)");
    t->d_out[r] = (__nv_bfloat16 *)gtl_guarded_alloc(&t->g_out[r], bytes, "out [count] bf16");
    gtl_fill_uniform(t->d_in[r], GTL_BF16, max_count, ar_seed(ctx->args.seed, t->rank0 + r),
                     -1.0f, 1.0f, t->stream[r]);
  }
  // Peer access: GPU i may load from and store to GPU j's memory (NVLink where there is one).
  t->peer_ok = t->n_local == t->n_ranks;
  for (int i = 0; i < t->n_local; i++)
    for (int j = 0; j < t->n_local; j++) {
      if (i == j) continue;
      int ok = 0;
      GTL_CUDA(cudaDeviceCanAccessPeer(&ok, t->dev[i], t->dev[j]));
      t->peer_ok &= ok;
    }
  for (int i = 0; t->peer_ok && i < t->n_local; i++) {
    GTL_CUDA(cudaSetDevice(t->dev[i]));
    for (int j = 0; j < t->n_local; j++) {
      if (i == j) continue;
      cudaError_t e = cudaDeviceEnablePeerAccess(t->dev[j], 0);
      if (e == cudaErrorPeerAccessAlreadyEnabled) cudaGetLastError();
      else GTL_CUDA(e);
    }
  }
  for (int r = 0; r < t->n_local; r++) {
    GTL_CUDA(cudaSetDevice(t->dev[r]));
    GTL_CUDA(cudaStreamSynchronize(t->stream[r]));
  }
  GTL_CUDA(cudaSetDevice(t->dev[0]));
  GTL_CUDA(cudaEventCreateWithFlags(&t->fork, cudaEventDisableTiming));
}

static void ar_team_close(ArTeam *t) {
  for (int r = 0; r < t->n_local; r++) {
    GTL_CUDA(cudaSetDevice(t->dev[r]));
    GTL_CUDA(cudaFree(t->d_in[r]));
    gtl_guarded_free(&t->g_out[r]);
    GTL_CUDA(cudaEventDestroy(t->join[r]));
    if (r > 0) GTL_CUDA(cudaStreamDestroy(t->stream[r]));
  }
  GTL_CUDA(cudaSetDevice(t->dev[0]));
  GTL_CUDA(cudaEventDestroy(t->fork));
}

// Say how GPU i reaches GPU j (CUDA's P2P attributes), one line per pair, into b.
static void ar_describe_links(const ArTeam *t, char *b, size_t n) {
  size_t o = 0;
  b[0] = 0;
  for (int i = 0; i < t->n_local && o < n; i++)
    for (int j = i + 1; j < t->n_local && o < n; j++) {
      int access = 0, rank = -1, atomics = 0;
      cudaDeviceGetP2PAttribute(&access, cudaDevP2PAttrAccessSupported, t->dev[i], t->dev[j]);
      cudaDeviceGetP2PAttribute(&rank, cudaDevP2PAttrPerformanceRank, t->dev[i], t->dev[j]);
      cudaDeviceGetP2PAttribute(&atomics, cudaDevP2PAttrNativeAtomicSupported, t->dev[i],
                                t->dev[j]);
      o += (size_t)snprintf(b + o, n - o, "%speer %d<->%d: access %s, performance rank %d, "
                            "native atomics %s", o ? "\n" : "", t->dev[i], t->dev[j],
                            access ? "yes" : "no", rank, atomics ? "yes" : "no");
    }
}

// ---- the driver -------------------------------------------------------------------------
#define AR_N_DECODE 7
static const int ar_decode_batch[AR_N_DECODE] = {1, 2, 4, 8, 16, 32, 64};
#define AR_SWEEP_MIN (4ull << 10)
#define AR_SWEEP_MAX (256ull << 20)

// Key storage for gtl_result_extra, which keeps the pointer.
static char ar_keys[GTL_MAX_EXTRA][48];
static const char *ar_key(int i, const char *fmt, const char *name) {
  snprintf(ar_keys[i], sizeof ar_keys[i], fmt, name);
  return ar_keys[i];
}

// main() of both programs. methods[0] is the headline (its JSON line); the others get a
// row each at the same size, a column in the decode table and in the sweep. The sweep
// adds host_staged in front when the program does not already hold it.
static int ar_main(int argc, char **argv, const char *variant, const ArMethod *const *methods,
                   int n_methods) {
  int64_t bytes_opt = 0, gpus = 0, graph_k = AR_GRAPH_K;
  int sweep = 0;
  const char *only = NULL;
  GtlOpt opts[] = {
      {"bytes", GTL_OPT_INT, &bytes_opt,
       "message per GPU in bytes, a multiple of 16 (default 64 MiB; small 1 MiB, large 256 MiB)"},
      {"gpus", GTL_OPT_INT, &gpus, "GPUs in the all-reduce, 2..8 (default: every visible one)"},
      {"method", GTL_OPT_STR, &only, "run only this method (host_staged, nccl, oneshot)"},
      {"graph_k", GTL_OPT_INT, &graph_k,
       "all-reduces per graph-timed sample, 1..1000 (default 100; 1 under compute-sanitizer)"},
      {"sweep", GTL_OPT_FLAG, &sweep, "also time every method from 4 KiB to 256 MiB"}};
  GtlCtx ctx;
  gtl_parse(&ctx, "ch04", variant, argc, argv, opts, 5, 5, 100, GTL_L2_WARM);
  size_t bytes = ctx.args.size == GTL_SIZE_SMALL ? (1u << 20)
                 : ctx.args.size == GTL_SIZE_LARGE ? (256u << 20) : (64u << 20);
  if (bytes_opt) bytes = (size_t)bytes_opt;
  if (bytes_opt < 0 || bytes < 16 || bytes % 16 || bytes > AR_MAX_BYTES)
    gtl_usage_fail(&ctx, "need 16 <= --bytes <= %llu, a multiple of 16 (8 bf16 per 16-byte "
                         "vector)", AR_MAX_BYTES);
  if (graph_k < 1 || graph_k > 1000) gtl_usage_fail(&ctx, "need 1 <= --graph_k <= 1000");
  if (gpus != 0 && (gpus < 2 || gpus > AR_MAX_GPUS))
    gtl_usage_fail(&ctx, "need 2 <= --gpus <= %d", AR_MAX_GPUS);
  if (ctx.args.device != 0)
    gtl_usage_fail(&ctx, "--device is not used: rank r runs on device r (choose the GPUs with "
                         "CUDA_VISIBLE_DEVICES)");
  const ArMethod *run_m[AR_MAX_METHODS];
  int n_run = 0;
  for (int i = 0; i < n_methods; i++)
    if (!only || strcmp(only, methods[i]->name) == 0) run_m[n_run++] = methods[i];
  if (!n_run) {
    char names[128] = "";
    for (int i = 0; i < n_methods; i++)
      snprintf(names + strlen(names), sizeof names - strlen(names), "%s%s", i ? ", " : "",
               methods[i]->name);
    gtl_usage_fail(&ctx, "--method=%s: this program runs %s", only, names);
  }

  ArTeam team;
  memset(&team, 0, sizeof team);
  team.graph_k = (int)graph_k;
  int n_dev = 0;
  cudaError_t ce = cudaGetDeviceCount(&n_dev);
  if (ce != cudaSuccess) n_dev = 0;
#ifdef GTL_MPI
  MPI_Init(&argc, &argv);
  int world = 1, me = 0, local = 0;
  MPI_Comm_size(MPI_COMM_WORLD, &world);
  MPI_Comm_rank(MPI_COMM_WORLD, &me);
  MPI_Comm node;
  MPI_Comm_split_type(MPI_COMM_WORLD, MPI_COMM_TYPE_SHARED, me, MPI_INFO_NULL, &node);
  MPI_Comm_rank(node, &local);
  MPI_Comm_free(&node);
  if (me != 0 && !freopen("/dev/null", "w", stdout)) ar_exit(GTL_EXIT_RUNTIME);
  if (gpus && gpus != world) gtl_usage_fail(&ctx, "with MPI, --gpus must equal the processes (%d)", world);
  if (world < 2 || n_dev < 1) {
    char msg[256];
    snprintf(msg, sizeof msg, "needs 2 or more MPI processes with a CUDA GPU each; found %d "
             "process(es), %d GPU(s) on this node%s%s", world, n_dev,
             ce != cudaSuccess ? " (cudaGetDeviceCount: " : "",
             ce != cudaSuccess ? cudaGetErrorName(ce) : "");
    if (ce != cudaSuccess) strncat(msg, ")", sizeof msg - strlen(msg) - 1);
    ar_waive(&ctx, msg);
  }
  team.n_ranks = world;
  team.n_local = 1;
  team.rank0 = me;
  team.dev[0] = local % n_dev;
  ctx.args.device = team.dev[0];
#else
  const int want = gpus ? (int)gpus : 2;
  if (n_dev < want) {
    char msg[256];
    snprintf(msg, sizeof msg, "needs %d CUDA GPUs for an all-reduce; found %d%s%s%s", want, n_dev,
             ce != cudaSuccess ? " (cudaGetDeviceCount: " : "",
             ce != cudaSuccess ? cudaGetErrorName(ce) : "", ce != cudaSuccess ? ")" : "");
    ar_waive(&ctx, msg);
  }
  team.n_ranks = team.n_local = gpus ? (int)gpus : (n_dev < AR_MAX_GPUS ? n_dev : AR_MAX_GPUS);
  for (int r = 0; r < team.n_local; r++) team.dev[r] = r;
#endif
  gtl_open(&ctx);
  // Results of n GPUs are kept under "<n>x_<key>" (expectations/2x_h200.json, 4x_h200.json, …).
  char key1[48];
  snprintf(key1, sizeof key1, "%.40s", ctx.dev.hardware_key);
  snprintf(ctx.dev.hardware_key, sizeof ctx.dev.hardware_key, "%dx_%s", team.n_ranks, key1);
  int mixed = 0;
  for (int r = 1; r < team.n_local; r++) {
    cudaDeviceProp p;
    GTL_CUDA(cudaGetDeviceProperties(&p, team.dev[r]));
    mixed |= strcmp(p.name, ctx.dev.name) != 0;
  }

  // The methods this run times: the program's, and host_staged first in a sweep.
  const ArMethod *sw[AR_MAX_METHODS];
  int n_sw = 0;
  int has_host = 0;
  for (int i = 0; i < n_run; i++) has_host |= run_m[i] == &ar_host_staged;
  if (sweep && !has_host && !only) sw[n_sw++] = &ar_host_staged;
  for (int i = 0; i < n_run; i++) sw[n_sw++] = run_m[i];
  int ok_m[AR_MAX_METHODS];
  char why[AR_MAX_METHODS][256];
  size_t max_count = (sweep && AR_SWEEP_MAX > bytes ? AR_SWEEP_MAX : bytes) / 2;
  if (max_count < (size_t)64 * AR_HIDDEN) max_count = (size_t)64 * AR_HIDDEN;

  gtl_phase_push(GTL_PHASE_SETUP);
  ar_team_open(&ctx, &team, max_count);
  for (int i = 0; i < n_sw; i++) {
    why[i][0] = 0;
    ok_m[i] = sw[i]->setup(&team, why[i], sizeof why[i]) == 0;
  }
  gtl_phase_pop();
  const int head = sw[0] == &ar_host_staged && !has_host ? 1 : 0;  // index of run_m[0] in sw
  if (!ok_m[head]) ar_waive(&ctx, why[head]);

  ArCheck chk;
  memset(&chk, 0, sizeof chk);
  chk.ctx = &ctx;
  chk.t = &team;
  gtl_phase_push(GTL_PHASE_REFERENCE);
  chk.ref = (double *)malloc(max_count * sizeof(double));
  chk.bits = (uint16_t *)malloc(max_count * sizeof(uint16_t));
  chk.outf = (float *)malloc(max_count * sizeof(float));
  if (!chk.ref || !chk.bits || !chk.outf) {
    fprintf(stderr, "error: host out of memory for the reference (%zu elements)\n", max_count);
    ar_exit(GTL_EXIT_RUNTIME);
  }
  if (ctx.args.verify) {
    ArRef ra = {chk.ref, ctx.args.seed, team.n_ranks};
    ar_parallel_for(max_count, 1 << 16, ar_ref_range, &ra);
  }
  gtl_phase_pop();

  // The link figure: every GPU copies the largest message to the next one at once.
  double peer_gbps = NAN;
  size_t peer_bytes = max_count * sizeof(__nv_bfloat16);
  if (team.n_local == team.n_ranks) {
    ArRun pc = {&team, NULL, max_count};
    GtlStats st;
    gtl_bench(&ctx, ar_peer_copy, &pc, &st);
    peer_gbps = peer_bytes / (st.median * 1e-3) / 1e9;
  }

  char workload[96], notes[4096], links[1024], sz[32];
  snprintf(workload, sizeof workload, "bytes%zu_bf16_gpus%d", bytes, team.n_ranks);
  ar_describe_links(&team, links, sizeof links);
  ar_fmt_bytes(sz, sizeof sz, peer_bytes);
  size_t o = 0;
  o += (size_t)snprintf(notes + o, sizeof notes - o,
                        "all-reduce (sum) of %zu bf16 per GPU across %d GPUs (%s), %s; hardware "
                        "key %s%s\n", bytes / 2, team.n_ranks,
#ifdef GTL_MPI
                        "one per MPI process",
#else
                        "one process",
#endif
                        ctx.dev.name, ctx.dev.hardware_key, mixed ? " (MIXED GPU models)" : "");
  for (int i = 0; i < n_sw; i++)
    o += (size_t)snprintf(notes + o, sizeof notes - o, "%s: %s%s%s\n", sw[i]->name,
                          ok_m[i] ? sw[i]->strategy : "NOT RUN: ", ok_m[i] && why[i][0] ? "; " : "",
                          why[i]);
  if (links[0]) o += (size_t)snprintf(notes + o, sizeof notes - o, "%s\n", links);
  if (peer_gbps == peer_gbps)
    o += (size_t)snprintf(notes + o, sizeof notes - o,
                          "peer copy (every GPU copies %s to the next at once, "
                          "cudaMemcpyPeerAsync): %.1f GB/s per GPU per direction%s\n", sz,
                          peer_gbps, team.peer_ok ? "" : " (no peer access: through the host)");
  const char *nvls = getenv("NCCL_NVLS_ENABLE"), *algo = getenv("NCCL_ALGO"),
             *proto = getenv("NCCL_PROTO");
  o += (size_t)snprintf(notes + o, sizeof notes - o,
                        "env: NCCL_NVLS_ENABLE=%s NCCL_ALGO=%s NCCL_PROTO=%s\n"
                        "GB/s column = bus bandwidth: 2(n-1)/n x message bytes / time per GPU "
                        "(NCCL-tests convention)\n"
                        "timing, one method per size (the timing column says which):\n"
                        "  graph (messages <= %llu KiB; nccl, oneshot): %d back-to-back "
                        "all-reduces captured in one CUDA graph per GPU, replayed on each GPU's "
                        "stream between that GPU's events; us = slowest GPU's replay / %d, "
                        "median over samples\n"
                        "  fork (larger messages, and host_staged at every size): GPU 0's stream "
                        "forks to every GPU's stream by event and joins them back, one "
                        "all-reduce per sample, host enqueue included\n"
                        "headline (%zu bytes): %s timing",
                        nvls ? nvls : "(unset)", algo ? algo : "(unset)", proto ? proto : "(unset)",
                        AR_GRAPH_MAX_BYTES >> 10, team.graph_k, team.graph_k, bytes,
                        ar_timing_name(&ctx, sw + head, ok_m + head, n_sw - head, bytes));
  gtl_report_header(&ctx, workload, notes);

  // Headline: every method this program runs, at --bytes; the JSON line is run_m[0]'s.
  GtlResult r;
  GtlResult rows[AR_MAX_METHODS];
  int n_rows = 0;
  for (int i = head; i < n_sw; i++) {
    if (!ok_m[i]) continue;
    GtlResult *x = &rows[n_rows++];
    gtl_result_init(x, &ctx, "bf16", workload);
    x->variant = sw[i]->name;
    x->bytes = ar_bus_bytes(team.n_ranks, bytes);
    x->flops = (double)(team.n_ranks - 1) * (bytes / 2);  // adds per rank's result
    x->bound = GTL_BOUND_NONE;
    x->ref = "cpu_double";
    if (ctx.args.verify) {
      x->validated = 1;
      if (!ar_validate(&chk, sw[i], bytes / 2, &x->err)) {
        gtl_report_row(&ctx, x);
        continue;  // never time a wrong result
      }
    }
    const GtlStats untimed = x->st;
    if (!ar_time(&chk, sw[i], bytes / 2, &x->st)) {
      x->validated = 1;
      x->err = chk.fail_err;
      x->st = untimed;  // the replays gave a wrong result: their time is not reported
    }
    gtl_report_row(&ctx, x);
  }
  r = rows[0];
  r.variant = variant;
  int ek = 0;
  gtl_result_extra(&r, "gpus", team.n_ranks);
  gtl_result_extra(&r, "peer_copy_gbps", peer_gbps);
  gtl_result_extra(&r, "pct_of_peer_copy", 100.0 * gtl_result_gbps(&rows[0]) / peer_gbps);
  for (int i = 1; i < n_rows; i++)
    gtl_result_extra(&r, ar_key(ek++, "%s_ms", rows[i].variant),
                     rows[i].st.n ? rows[i].st.median : NAN);

  // Decode-shaped messages: batch × 2880 bf16, one TP MoE layer's all-reduce.
  if (!ctx.args.json) {
    printf("decode all-reduce: batch x %d bf16 per GPU (one tensor-parallel MoE layer), "
           "median us\n%-8s %8s %10s %6s", AR_HIDDEN, "decode", "batch", "bytes", "timing");
    for (int i = head; i < n_sw; i++)
      if (ok_m[i]) printf(" %12s", sw[i]->name);
    printf("  fastest\n");
  }
  double dus[AR_N_DECODE][AR_MAX_METHODS];
  for (int b = 0; b < AR_N_DECODE; b++) {
    const size_t count = (size_t)ar_decode_batch[b] * AR_HIDDEN;
    double *us = dus[b];
    int best = -1;
    for (int i = head; i < n_sw; i++) {
      us[i] = NAN;
      if (!ok_m[i]) continue;
      GtlErr e;
      if (ctx.args.verify && !ar_validate(&chk, sw[i], count, &e)) continue;
      GtlStats st;
      if (!ar_time(&chk, sw[i], count, &st)) continue;
      us[i] = st.median * 1e3;
      if (best < 0 || us[i] < us[best]) best = i;
      if (ar_decode_batch[b] == 1 || ar_decode_batch[b] == 64) {
        char fmt[32];
        snprintf(fmt, sizeof fmt, "decode_b%d_%%s_us", ar_decode_batch[b]);
        gtl_result_extra(&r, ar_key(ek++, fmt, sw[i]->name), us[i]);
      }
    }
    if (ctx.args.json) continue;
    printf("%-8s %8d %10zu %6s", "decode", ar_decode_batch[b], count * 2,
           ar_timing_name(&ctx, sw + head, ok_m + head, n_sw - head, count * 2));
    for (int i = head; i < n_sw; i++)
      if (ok_m[i]) printf(" %12.2f", us[i]);
    printf("  %s\n", best >= 0 ? sw[best]->name : "-");
    fflush(stdout);
  }
  // Decode: the largest message up to which the program's second method (the one-shot
  // kernel) beats its first (NCCL) at every batch; 0 when it loses at batch 1.
  if (head + 1 < n_sw && ok_m[head] && ok_m[head + 1]) {
    size_t upto = 0;
    for (int b = 0; b < AR_N_DECODE && dus[b][head + 1] < dus[b][head]; b++)
      upto = (size_t)ar_decode_batch[b] * AR_HIDDEN * 2;
    gtl_result_extra(&r, ar_key(ek++, "decode_%s_wins_upto_bytes", sw[head + 1]->name),
                     (double)upto);
    if (!ctx.args.json)
      printf("# decode: %s faster than %s at every batch up to %zu bytes%s\n",
             sw[head + 1]->name, sw[head]->name, upto, upto ? "" : " (slower at batch 1)");
  }
  for (int i = head; i < n_sw; i++)
    if (ok_m[i] && ar_graph_timed(&ctx, sw[i], (size_t)AR_HIDDEN * 2)) {
      gtl_result_extra(&r, "graph_k", team.graph_k);  // decode rows are graph-timed
      break;
    }

  // The sweep: 4 KiB … 256 MiB, every method, latency and bus bandwidth.
  if (sweep) {
    int n_sizes = 0;
    size_t sizes[32];
    double sus[32][AR_MAX_METHODS];
    for (size_t s = AR_SWEEP_MIN; s <= AR_SWEEP_MAX; s *= 2) sizes[n_sizes++] = s;
    if (!ctx.args.json) {
      printf("sweep: median us and bus GB/s per method (host_staged: fork timing at every "
             "size)\n%-6s %10s %6s", "sweep", "bytes", "timing");
      for (int i = 0; i < n_sw; i++)
        if (ok_m[i]) printf(" %14s_us %8s", sw[i]->name, "bus_GB/s");
      printf("  fastest\n");
    }
    for (int k = 0; k < n_sizes; k++) {
      int best = -1;
      for (int i = 0; i < n_sw; i++) {
        sus[k][i] = NAN;
        if (!ok_m[i]) continue;
        GtlErr e;
        if (ctx.args.verify && !ar_validate(&chk, sw[i], sizes[k] / 2, &e)) continue;
        GtlStats st;
        if (!ar_time(&chk, sw[i], sizes[k] / 2, &st)) continue;
        sus[k][i] = st.median * 1e3;
        if (best < 0 || sus[k][i] < sus[k][best]) best = i;
      }
      if (ctx.args.json) continue;
      printf("%-6s %10zu %6s", "sweep", sizes[k],
             ar_timing_name(&ctx, sw + head, ok_m + head, n_sw - head, sizes[k]));
      for (int i = 0; i < n_sw; i++)
        if (ok_m[i])
          printf(" %17.2f %8.1f", sus[k][i],
                 ar_bus_bytes(team.n_ranks, sizes[k]) / (sus[k][i] * 1e-6) / 1e9);
      printf("  %s\n", best >= 0 ? sw[best]->name : "-");
      fflush(stdout);
    }
    // Where the second of the program's methods (the one-shot kernel) stops beating the first.
    const int a = head, b2 = head + 1;
    if (b2 < n_sw && ok_m[a] && ok_m[b2]) {
      size_t upto = 0, from = 0;  // b2 faster at every size up to `upto`; first slower at `from`
      int wins = 0;
      for (int k = 0; k < n_sizes; k++) {
        const int win = sus[k][b2] < sus[k][a];
        wins += win;
        if (win && !from) upto = sizes[k];
        if (!win && !from) from = sizes[k];
      }
      char s1[32], s2[32];
      ar_fmt_bytes(s1, sizeof s1, upto);
      ar_fmt_bytes(s2, sizeof s2, from);
      if (!ctx.args.json) {
        printf("# crossover: %s faster than %s at %d of %d sizes; ", sw[b2]->name, sw[a]->name,
               wins, n_sizes);
        if (!from) printf("at every size from 4 KiB to 256 MiB\n");
        else if (!upto) printf("already slower at 4 KiB\n");
        else printf("at every size from 4 KiB up to %s, first slower at %s\n", s1, s2);
        printf("# %s faster than %s at:", sw[b2]->name, sw[a]->name);
        for (int k = 0; k < n_sizes; k++)
          if (sus[k][b2] < sus[k][a]) {
            ar_fmt_bytes(s1, sizeof s1, sizes[k]);
            printf(" %s", s1);
          }
        printf("%s\n", wins ? "" : " none");
      }
      gtl_result_extra(&r, ar_key(ek++, "%s_wins_upto_bytes", sw[b2]->name), (double)upto);
    }
    const int top = n_sizes - 1;
    const double top_bus = ar_bus_bytes(team.n_ranks, sizes[top]) / (sus[top][a] * 1e-6) / 1e9;
    if (!ctx.args.json) {
      printf("# %s at 256 MiB: %.1f GB/s bus = %.0f%% of the peer copy (%.1f GB/s per GPU per "
             "direction, same run)\n", sw[a]->name, top_bus, 100.0 * top_bus / peer_gbps, peer_gbps);
      if (!has_host && ok_m[0])
        for (int k = 0; k < n_sizes; k++)
          if (sizes[k] == (64u << 20))
            printf("# %s vs host_staged at 64 MiB: %.1fx\n", sw[a]->name, sus[k][0] / sus[k][a]);
    }
    gtl_result_extra(&r, ar_key(ek++, "sweep_256mib_%s_bus_gbps", sw[a]->name), top_bus);
  }

  if (chk.any_fail && r.err.pass) {
    r.err = chk.fail_err;
    r.validated = 1;
  }
  int rc = gtl_report_finish(&ctx, &r);
  for (int i = 0; i < n_sw; i++)
    if (ok_m[i] && sw[i]->teardown) sw[i]->teardown(&team);
  free(chk.ref);
  free(chk.bits);
  free(chk.outf);
  ar_team_close(&team);
  gtl_end(&ctx);
  ar_exit(rc);
  return rc;
}
