// check.cuh — ch04's reference (Σ of every rank's seeded input in double, on the host's
// threads), its tolerance, and the check of every local rank's output after a run.
#pragma once
#include "host_threads.h"
#include "team.cuh"

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

