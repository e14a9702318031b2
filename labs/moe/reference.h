/* reference.h — the CPU reference decoder: the model of config.h computed in double from
 * the bf16 weight values (each weight is exactly its bf16 value; every sum, norm, softmax,
 * RoPE angle and activation is double), one token per sequence per step with its own KV
 * cache, the same semantics as the HF implementations (see config.h for the equations:
 * Mixtral, Qwen3-MoE, gpt-oss with its biases, sinks, sliding window, YaRN and clamped
 * SwiGLU).
 * Big matrix-vector products are split over pthreads by output rows; each output is
 * summed by one thread in index order, so results do not depend on the thread count.
 *
 * Weights come through a fetch callback, so one reference serves a host arena (tests,
 * mini), a checkpoint on disk, or the GPU engine's device arena (copied back per tensor):
 * the reference never needs the whole model in host memory. Unit-tested against stored
 * logits (tests/test_lab_reference.c, tests/fixtures/). */
#pragma once
#include <stdint.h>

#include "checkpoint.h"

#ifdef __cplusplus
extern "C" {
#endif

/** Rows [row0, row0 + n_rows) of layout tensor `tensor` as bf16 bits (a vector has one
 *  "row" of all its elements). The pointer stays valid until the next call. */
typedef const uint16_t *(*MoeFetchFn)(void *user, int tensor, int64_t row0, int64_t n_rows);

typedef struct {
  const MoeLayout *lay;
  MoeFetchFn fetch;
  void *user;
  int rows, max_len, threads;
  double min_parallel;             /* products of fewer multiply-adds run on one thread */
  double *kc, *vc;                 /* [rows][L][H_kv][max_len][head_dim] */
  double *x, *xn, *q, *k, *v, *att, *hg, *hu, *y, *router, *scores;
  int *topk;                       /* [rows][top_k] experts of the last layer computed */
  double *topw;                    /* [rows][top_k] their weights */
  double *inv_freq, rope_scale;    /* RoPE frequencies [head_dim/2], cos/sin factor */
} MoeRef;

/** Allocate for `rows` sequences of up to max_len positions; threads >= 1. 0, or -1 OOM. */
int moe_ref_init(MoeRef *r, const MoeLayout *lay, MoeFetchFn fetch, void *user, int rows,
                 int max_len, int threads);
/** One step: tokens[rows] at position pos (0 <= pos < max_len; positions 0..pos-1 were
 *  stepped before) → logits[rows][V]. */
void moe_ref_step(MoeRef *r, const int *tokens, int pos, double *logits);
void moe_ref_free(MoeRef *r);

/** A fetch over a host arena (lay->numel bf16, e.g. moe_synth_arena). */
typedef struct {
  const MoeLayout *lay;
  const uint16_t *arena;
} MoeArenaFetch;
const uint16_t *moe_ref_fetch_arena(void *user, int tensor, int64_t row0, int64_t n_rows);

/** Router of one token: probabilities p = softmax(logits[E]) in double, the top_k largest
 *  (lowest index first on ties, as the first maximum wins), their weights p renormalized
 *  to sum 1 when renorm. Used by the reference and by the GPU layers' host routers. */
void moe_route(const double *logits, int E, int top_k, int renorm, int *idx, double *w);

#ifdef __cplusplus
}
#endif
