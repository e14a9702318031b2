// host_staged.cuh — ch04's host-staged all-reduce (ar_host_staged): every GPU's partial
// copied to pinned host memory, summed by the host's threads, the sum copied back to every
// GPU. The baseline's method, and a row of optimized --sweep beside NCCL and the one-shot
// kernel, so it lives here rather than in baseline.cu.
#pragma once
#include "host_threads.h"
#include "team.cuh"

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
