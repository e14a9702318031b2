// reference.cuh — ch12's CPU reference: the lab's decoder (labs/moe/reference.h, the model of
// labs/moe/config.h in double from the bf16 weight values) run for one step on ch12's
// weights and KV cache, with the routing of every layer recorded for the router check.
#pragma once
#include <math.h>
#include <stdio.h>
#include <stdlib.h>

#include "../labs/moe/reference.h"
#include "model.cuh"

// The lab's reference reads weights through a fetch callback by layout tensor; this one
// serves them from a host copy of d_w in ch12's storage order (StepProblem.off). When the
// reference asks for layer l's first expert weight it has routed layer l (its topk and
// router logits hold that layer's), so the callback records the routing then.
typedef struct {
  const StepProblem *p;
  const MoeLayout *lay;
  const uint16_t *w;  // host copy of d_w: bf16 bits, p->n_w elements
  const MoeRef *ref;
  int32_t *idx;       // [L][top_k] experts the reference chose, layer by layer
  double min_gap;     // smallest gap between the top_k-th and the next router probability
  int routed;         // layers whose routing is recorded
} StepRefFetch;

static void step_ref_note_routing(StepRefFetch *f, int l) {
  if (l != f->routed) return;  // recorded already (a later expert of the same layer)
  const int E = STEP_E, k = STEP_TOP_K;
  for (int j = 0; j < k; j++) f->idx[l * k + j] = f->ref->topk[j];
  // The gap, in probabilities (softmax of the logits): the k-th largest minus the next.
  double p[STEP_E], mx = -INFINITY, sum = 0, kth = INFINITY, next = -INFINITY;
  for (int e = 0; e < E; e++) mx = fmax(mx, f->ref->router[e]);
  for (int e = 0; e < E; e++) sum += (p[e] = exp(f->ref->router[e] - mx));
  for (int j = 0; j < k; j++) kth = fmin(kth, p[f->ref->topk[j]] / sum);
  for (int e = 0; e < E; e++) {
    int taken = 0;
    for (int j = 0; j < k; j++) taken |= f->ref->topk[j] == e;
    if (!taken) next = fmax(next, p[e] / sum);
  }
  if (k < E) f->min_gap = fmin(f->min_gap, kth - next);
  f->routed = l + 1;
}

static const uint16_t *step_ref_fetch(void *user, int tensor, int64_t row0, int64_t n_rows) {
  (void)n_rows;
  StepRefFetch *f = (StepRefFetch *)user;
  const StepProblem *p = f->p;
  const MoeTensor *t = &f->lay->t[tensor];
  const int l = t->layer, e = t->expert;
  size_t off;
  switch (t->kind) {
    case MOE_EMBED: off = p->off_embed; break;
    case MOE_FINAL_NORM: off = p->off_final_norm; break;
    case MOE_LM_HEAD: off = p->off_lm_head; break;
    case MOE_ATTN_NORM: off = p->off[l][W_ATTN_NORM]; break;
    case MOE_Q: off = p->off[l][W_Q]; break;
    case MOE_K: off = p->off[l][W_K]; break;
    case MOE_V: off = p->off[l][W_V]; break;
    case MOE_O: off = p->off[l][W_O]; break;
    case MOE_FFN_NORM: off = p->off[l][W_FFN_NORM]; break;
    case MOE_ROUTER: off = p->off[l][W_ROUTER]; break;
    case MOE_GATE:
      step_ref_note_routing(f, l);
      off = p->off[l][W_GATE] + (size_t)e * STEP_F * STEP_D;
      break;
    case MOE_UP: off = p->off[l][W_UP] + (size_t)e * STEP_F * STEP_D; break;
    case MOE_DOWN: off = p->off[l][W_DOWN] + (size_t)e * STEP_D * STEP_F; break;
    default:
      fprintf(stderr, "ch12: the reference asked for %s, which the mini model does not have\n",
              t->name);
      exit(GTL_EXIT_RUNTIME);
  }
  return f->w + off + (size_t)row0 * (size_t)(t->cols > 0 ? t->cols : 0);
}

// The step in double on the host: model c (step_config) on the bf16 weights h_w (ch12's
// storage order) and the fp32 cache h_kc, h_vc ([L][H_kv][P+1][head_dim], rows < P used; the
// step writes row P). Writes logits[V], the experts each layer chose idx[L][top_k] and the
// smallest top_k-th-to-next router probability gap over the layers (a near-tie could flip a
// choice). Exits with GTL_EXIT_RUNTIME when the host is out of memory.
static void step_reference(const StepProblem *p, const MoeConfig *c, const uint16_t *h_w,
                           const float *h_kc, const float *h_vc, double *logits, int32_t *idx,
                           double *min_gap) {
  MoeLayout lay;
  MoeRef ref;
  StepRefFetch f = {p, &lay, h_w, &ref, idx, INFINITY, 0};
  if (moe_layout_build(c, &lay) != 0 || moe_ref_init(&ref, &lay, step_ref_fetch, &f, 1,
                                                     p->P + 1, 4) != 0) {
    fprintf(stderr, "ch12: host out of memory for the reference\n");
    exit(GTL_EXIT_RUNTIME);
  }
  // The reference's cache [rows = 1][L][H_kv][max_len = P+1][head_dim] is ch12's layout.
  const size_t n_kv = (size_t)p->L * STEP_KV * (p->P + 1);
  for (size_t i = 0; i < n_kv; i++) ref.kc[i] = h_kc[i], ref.vc[i] = h_vc[i];
  moe_ref_step(&ref, &p->token, p->P, logits);
  if (f.routed != p->L) {
    fprintf(stderr, "ch12: the reference routed %d of %d layers\n", f.routed, p->L);
    exit(GTL_EXIT_RUNTIME);
  }
  *min_gap = f.min_gap;
  moe_ref_free(&ref);
  moe_layout_free(&lay);
}
