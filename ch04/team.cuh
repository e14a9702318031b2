// team.cuh — ch04's problem and its GPU team: the limits, the team of local GPUs (ArTeam),
// the method interface (ArMethod), opening and closing the team, and the fork/join that
// times one all-reduce across every local GPU. The host-staged method is in host_staged.cuh,
// the reference and checks in check.cuh, the timing in timing.cuh (its rules are there), the
// driver in allreduce.cuh (included by baseline.cu and optimized.cu).
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
#pragma once
#include <cuda_bf16.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#ifdef GTL_MPI
#define OMPI_SKIP_MPICXX 1   // the C API only (the C++ bindings are deprecated and warn)
#define MPICH_SKIP_MPICXX 1
#include <mpi.h>
#endif

#include "../common/gauntlet.h"

#define AR_MAX_GPUS 8
#define AR_HIDDEN 2880          // gptoss20b hidden size: one decode token's hidden state
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

