// layer.cuh — layer 00 of the lab: the MoE decode step built from every chapter's
// baseline, as a stage table (labs/moe/frame.cuh) with its kernels. decode.cu runs it;
// a later layer starts from lab00_ops() and replaces the stages its chapters improve.
//
// What it is: a correct, simple GPU decode step — the map every later layer changes.
//   thread-per-output GEMVs     every GEMV (q/k/v/o, router, experts, lm_head) gives one
//                               thread one output row and loops it over K: the naive
//                               starting point before ch08 (whose own baseline is already
//                               a block per row); adjacent threads read adjacent rows
//   router on the host          router logits are copied back each layer, softmax + top-k
//                               run on the CPU (ch06's baseline)
//   per-expert loop, host sync  the host walks the experts that got tokens: copy the
//                               expert's token list over and wait, gather its rows, run
//                               gate/up, down, scatter-add (ch07's and ch15's baselines)
//   contiguous KV cache         the engine's default: per layer [B][H_kv][len][head_dim]
//                               fp32, reserved up front at the maximum length (ch16's
//                               baseline), a sliding-window layer at its window (a ring)
//   eager launches              12 kernels per layer (14 with q/k norm) plus 4 per active
//                               expert (ch12's baseline)
//   bf16 weights, fp32 activations and accumulation. Mixtral, Qwen3-MoE and gpt-oss
//   semantics: gpt-oss's q/k/v/o, router and expert biases ride in the GEMV's bias
//   argument, YaRN is the RoPE kernel's frequency table and cos/sin factor, the sinks
//   join the softmax, the clamped SwiGLU is a flag of the expert kernel, and a sliding
//   window of w keys is the first key the attention reads plus a ring of w slots: its
//   layers keep only the window's K/V (key t in slot t mod w), full layers max_len.
#pragma once
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../moe/frame.cuh"
#include "../moe/reference.h"
#include "kernels.cuh"  // the layer's kernels and their device helpers (kLab00Threads, Lab00Rope)

// The layer's own buffers (the engine owns the activations and the KV cache).
typedef struct {
  float *d_scores;            // [B][H][max_len] attention probabilities
  float *h_router;            // [B][E] router logits, pinned
  int *d_idx, *h_idx;         // [E][B] each expert's token list (device, pinned host)
  float *d_wt, *h_wt;         // [E][B] each token's weight for that expert
  int *h_cnt;                 // [E] tokens per expert
  int *active, n_active;      // experts with tokens, ascending: the plan's groups
  float *d_xs, *d_h, *d_ys;   // [B][D] gathered rows, [B][F] expert hidden, [B][D] expert out
} Lab00;

static inline dim3 lab00_grid(int n, int rows) {
  return dim3((unsigned)((n + kLab00Threads - 1) / kLab00Threads), (unsigned)rows);
}

// out[b][n] (+)= W[n] · in[b] (+ bias[n]) for b < rows, W bf16 [N][K], bias bf16 [N] or
// NULL, in/out fp32 (one thread per row).
static inline void lab00_gemv(const Engine *e, const __nv_bfloat16 *W, const __nv_bfloat16 *bias, const float *in,
                              float *out, int N, int K, int rows, int accumulate) {
  gemv_threadrow_kernel<<<lab00_grid(N, rows), kLab00Threads, 0, e->s>>>(W, bias, in, out, N, K, accumulate);
  GTL_LAUNCH();
}

// Tensor of kind k in the arena, or NULL when the model has none (a bias or the sinks
// outside gpt-oss).
static inline const __nv_bfloat16 *lab00_w_opt(const Engine *e, MoeKind k, int layer, int expert) {
  const int i = moe_tensor_index(&e->lay, k, layer, expert);
  return i < 0 ? NULL : e->d_w + e->lay.t[i].offset;
}

static inline void lab00_rmsnorm(const Engine *e, const float *x, const __nv_bfloat16 *w, float *out, int rows, int n) {
  rmsnorm_blockrow_kernel<<<rows, kLab00Threads, 0, e->s>>>(x, w, out, n, (float)e->cfg.rms_eps);
  GTL_LAUNCH();
}

/** The KV ring of layer l: the positions a sliding-window layer keeps, kv.window_len (key
 *  t in slot t mod ring, lab00_kv_slot), or 0 on a full layer and whenever the cache
 *  keeps max_len everywhere (key t in row t). */
static inline int lab00_kv_ring(const Engine *e, int l) {
  return e->kv.window_len > 0 && moe_layer_window(&e->cfg, l) > 0 ? e->kv.window_len : 0;
}

// Refuse what this layer does not compute (the frame's configure hook): every
// architecture of labs/moe/config.h runs; only sizes past its fixed arrays are refused.
// A model with a sliding window gets the engine's KV cache with rings of
// min(window, max_len) positions on its sliding layers (kv.window_len); every layer built
// on 00 reads its KV through engine_kv_len, lab00_kv_slot and lab00_first_key.
static inline int lab00_configure(Engine *e, char *err, size_t n) {
  const MoeConfig *c = &e->cfg;
  if (c->E > 4096 || c->top_k > 64) {  // lab00_topk's stack arrays
    snprintf(err, n, "routes at most 4096 experts, top_k <= 64 (model: %d, %d)", c->E, c->top_k);
    return -1;
  }
  if (c->head_dim / 2 > kLab00MaxHalf) {  // Lab00Rope's table
    snprintf(err, n, "RoPE of head_dim <= %d (model: %d)", 2 * kLab00MaxHalf, c->head_dim);
    return -1;
  }
  e->kv.window_len = 0;
  for (int l = 0; l < c->L; l++) {
    const int64_t w = moe_layer_window(c, l);
    if (w > 0) e->kv.window_len = w < e->kv.max_len ? (int)w : e->kv.max_len;
  }
  return 0;
}

static inline void lab00_setup(Engine *e) {
  const MoeConfig *c = &e->cfg;
  const size_t B = (size_t)e->B;
  Lab00 *p = (Lab00 *)calloc(1, sizeof(Lab00));
  p->d_scores = (float *)gtl_malloc(B * c->H * e->kv.max_len * 4, "attention scores");
  p->h_router = (float *)gtl_malloc_pinned(B * c->E * 4, "router logits (host)");
  p->d_idx = (int *)gtl_malloc(B * c->E * 4, "expert token lists");
  p->h_idx = (int *)gtl_malloc_pinned(B * c->E * 4, "expert token lists (host)");
  p->d_wt = (float *)gtl_malloc(B * c->E * 4, "expert weights");
  p->h_wt = (float *)gtl_malloc_pinned(B * c->E * 4, "expert weights (host)");
  p->h_cnt = (int *)calloc((size_t)c->E, sizeof(int));
  p->active = (int *)calloc((size_t)c->E, sizeof(int));
  p->d_xs = (float *)gtl_malloc(B * c->D * 4, "gathered rows");
  p->d_h = (float *)gtl_malloc(B * c->F * 4, "expert hidden");
  p->d_ys = (float *)gtl_malloc(B * c->D * 4, "expert out");
  e->layer = p;
}

static inline void lab00_teardown(Engine *e) {
  Lab00 *p = (Lab00 *)e->layer;
  void *d[] = {p->d_scores, p->d_idx, p->d_wt, p->d_xs, p->d_h, p->d_ys};
  for (size_t i = 0; i < sizeof d / sizeof d[0]; i++) GTL_CUDA(cudaFree(d[i]));
  GTL_CUDA(cudaFreeHost(p->h_router));
  GTL_CUDA(cudaFreeHost(p->h_idx));
  GTL_CUDA(cudaFreeHost(p->h_wt));
  free(p->h_cnt);
  free(p->active);
  free(p);
}

// ---- stages ------------------------------------------------------------------------------
static inline void lab00_embed(Engine *e, int) {
  embed_rows_kernel<<<lab00_grid(e->cfg.D, e->B), kLab00Threads, 0, e->s>>>(engine_w(e, MOE_EMBED, 0, 0),
                                                                            e->a.d_tok, e->a.d_x, e->cfg.D);
  GTL_LAUNCH();
}

static inline void lab00_qkv(Engine *e, int l) {
  const MoeConfig *c = &e->cfg;
  const int B = e->B, hd = c->head_dim;
  lab00_rmsnorm(e, e->a.d_x, engine_w(e, MOE_ATTN_NORM, l, 0), e->a.d_xn, B, c->D);
  // gpt-oss: q, k and v biases (before RoPE)
  lab00_gemv(e, engine_w(e, MOE_Q, l, 0), lab00_w_opt(e, MOE_Q_BIAS, l, 0), e->a.d_xn, e->a.d_q, c->H * hd, c->D, B, 0);
  lab00_gemv(e, engine_w(e, MOE_K, l, 0), lab00_w_opt(e, MOE_K_BIAS, l, 0), e->a.d_xn, e->a.d_k, c->H_kv * hd, c->D,
             B, 0);
  lab00_gemv(e, engine_w(e, MOE_V, l, 0), lab00_w_opt(e, MOE_V_BIAS, l, 0), e->a.d_xn, e->a.d_v, c->H_kv * hd, c->D,
             B, 0);
  if (c->qk_norm) {  // Qwen3-MoE: each head normalized over head_dim before RoPE
    lab00_rmsnorm(e, e->a.d_q, engine_w(e, MOE_Q_NORM, l, 0), e->a.d_q, B * c->H, hd);
    lab00_rmsnorm(e, e->a.d_k, engine_w(e, MOE_K_NORM, l, 0), e->a.d_k, B * c->H_kv, hd);
  }
}

/** The RoPE table of model c (c->head_dim <= 2·kLab00MaxHalf, which lab00_configure
 *  checks): moe_rope_inv_freq's frequencies (the CPU reference's: θ^(−2i/hd), or YaRN's)
 *  and cos/sin factor (1, or YaRN's 0.1·ln(factor) + 1). */
static inline Lab00Rope lab00_rope_table(const MoeConfig *c) {
  Lab00Rope r;
  memset(&r, 0, sizeof r);
  r.scale = moe_rope_inv_freq(c, r.inv_freq, NULL, NULL);
  return r;
}

/** The first key position the query at pos reads in layer l: 0, or on a sliding-window
 *  layer (moe_layer_window w > 0) pos − w + 1 once pos >= w — key k is visible iff
 *  pos − w < k <= pos, w keys including the query's own. */
static inline int lab00_first_key(const MoeConfig *c, int l, int pos) {
  return lab00_window_first(pos, moe_layer_window(c, l));
}

// The table is rebuilt per call (head_dim/2 pow()s on the host), nothing kept between
// steps: layers 01-03 reuse this stage with their own state. K/V go to row pos, or on a
// sliding-window layer to ring slot pos mod window (over the key that left the window).
static inline void lab00_rope(Engine *e, int l) {
  const MoeConfig *c = &e->cfg;
  float *kc = (float *)e->kv.k + engine_kv_layer(e, l), *vc = (float *)e->kv.v + engine_kv_layer(e, l);
  const Lab00Rope rope = lab00_rope_table(c);
  rope_kv_append_kernel<<<lab00_grid((c->H + c->H_kv) * c->head_dim / 2, e->B), kLab00Threads, 0, e->s>>>(
      e->a.d_q, e->a.d_k, e->a.d_v, kc, vc, c->H, c->H_kv, c->head_dim, e->pos,
      lab00_kv_slot(e->pos, lab00_kv_ring(e, l)), engine_kv_len(e, l), rope);
  GTL_LAUNCH();
}

// Keys t0..pos (lab00_first_key): all of them, or on a sliding-window layer the window's
// last w, read from its ring (lab00_kv_slot). gpt-oss's sinks (one logit per query head)
// join the softmax.
static inline void lab00_attend(Engine *e, int l) {
  const MoeConfig *c = &e->cfg;
  Lab00 *p = (Lab00 *)e->layer;
  const int B = e->B, hd = c->head_dim, pos = e->pos, max_len = e->kv.max_len, t0 = lab00_first_key(c, l, pos);
  const int kv_len = engine_kv_len(e, l), ring = lab00_kv_ring(e, l);
  const float *kc = (const float *)e->kv.k + engine_kv_layer(e, l), *vc = (const float *)e->kv.v + engine_kv_layer(e, l);
  attn_score_kernel<<<lab00_grid(pos + 1 - t0, B * c->H), kLab00Threads, 0, e->s>>>(e->a.d_q, kc, p->d_scores, c->H,
                                                                                   c->H_kv, hd, t0, pos, max_len,
                                                                                   kv_len, ring);
  GTL_LAUNCH();
  attn_softmax_kernel<<<(B * c->H + kLab00Threads - 1) / kLab00Threads, kLab00Threads, 0, e->s>>>(
      p->d_scores, lab00_w_opt(e, MOE_SINKS, l, 0), B * c->H, c->H, t0, pos, max_len);
  GTL_LAUNCH();
  attn_av_kernel<<<lab00_grid(c->H * hd, B), kLab00Threads, 0, e->s>>>(p->d_scores, vc, e->a.d_att, c->H, c->H_kv,
                                                                       hd, t0, pos, max_len, kv_len, ring);
  GTL_LAUNCH();
}

static inline void lab00_out(Engine *e, int l) {  // x += Wo att (+ bo)
  const MoeConfig *c = &e->cfg;
  lab00_gemv(e, engine_w(e, MOE_O, l, 0), lab00_w_opt(e, MOE_O_BIAS, l, 0), e->a.d_att, e->a.d_x, c->D,
             c->H * c->head_dim, e->B, 1);
}

static inline void lab00_router(Engine *e, int l) {  // logits = Wr RMSNorm(x) (+ br)
  const MoeConfig *c = &e->cfg;
  lab00_rmsnorm(e, e->a.d_x, engine_w(e, MOE_FFN_NORM, l, 0), e->a.d_xn, e->B, c->D);
  lab00_gemv(e, engine_w(e, MOE_ROUTER, l, 0), lab00_w_opt(e, MOE_ROUTER_BIAS, l, 0), e->a.d_xn, e->a.d_router,
             c->E, c->D, e->B, 0);
}

/** Each expert's token list on the host (Lab00.h_idx/h_wt/h_cnt/active) from the per-token
 *  top-k on the host (EngineActs.h_topk_idx/_w [B][top_k]), tokens in order. For a layer
 *  that keeps 00's per-expert loop but routes its own way. */
static inline void lab00_expert_lists(Engine *e) {
  const MoeConfig *c = &e->cfg;
  Lab00 *p = (Lab00 *)e->layer;
  memset(p->h_cnt, 0, sizeof(int) * c->E);
  for (int b = 0; b < e->B; b++)
    for (int j = 0; j < c->top_k; j++) {
      const int x = e->a.h_topk_idx[(size_t)b * c->top_k + j], n = p->h_cnt[x]++;
      p->h_idx[(size_t)x * e->B + n] = b;
      p->h_wt[(size_t)x * e->B + n] = e->a.h_topk_w[(size_t)b * c->top_k + j];
    }
  p->n_active = 0;
  for (int x = 0; x < c->E; x++)
    if (p->h_cnt[x]) p->active[p->n_active++] = x;
}

// The router on the host: logits back (a synchronize), softmax + top-k per token in
// double (moe_route, the CPU reference's), then each expert's token list. gpt-oss's
// softmax over the top-k logits only is the renormalized case (norm_topk_prob).
static inline void lab00_topk(Engine *e, int) {
  const MoeConfig *c = &e->cfg;
  Lab00 *p = (Lab00 *)e->layer;
  GTL_CUDA(cudaMemcpyAsync(p->h_router, e->a.d_router, sizeof(float) * e->B * c->E, cudaMemcpyDeviceToHost, e->s));
  GTL_CUDA(cudaStreamSynchronize(e->s));
  double logits[4096], w[64];
  int idx[64];
  for (int b = 0; b < e->B; b++) {
    for (int x = 0; x < c->E; x++) logits[x] = p->h_router[(size_t)b * c->E + x];
    moe_route(logits, c->E, c->top_k, c->norm_topk_prob, idx, w);
    for (int j = 0; j < c->top_k; j++) {
      e->a.h_topk_idx[(size_t)b * c->top_k + j] = idx[j];
      e->a.h_topk_w[(size_t)b * c->top_k + j] = (float)w[j];
    }
  }
  lab00_expert_lists(e);
}

// One group per expert with tokens (the host loop); counts the experts read.
static inline int lab00_experts_plan(Engine *e, int) {
  Lab00 *p = (Lab00 *)e->layer;
  e->experts_read += p->n_active;
  e->experts_read_n += 1;
  return p->n_active;
}

// Expert active[g]'s token list over, a synchronize (the per-expert host sync), its rows gathered.
static inline void lab00_dispatch(Engine *e, int, int g) {
  Lab00 *p = (Lab00 *)e->layer;
  const int x = p->active[g], n = p->h_cnt[x];
  GTL_CUDA(cudaMemcpyAsync(p->d_idx + (size_t)x * e->B, p->h_idx + (size_t)x * e->B, sizeof(int) * n,
                           cudaMemcpyHostToDevice, e->s));
  GTL_CUDA(cudaMemcpyAsync(p->d_wt + (size_t)x * e->B, p->h_wt + (size_t)x * e->B, sizeof(float) * n,
                           cudaMemcpyHostToDevice, e->s));
  GTL_CUDA(cudaStreamSynchronize(e->s));
  expert_gather_kernel<<<lab00_grid(e->cfg.D, n), kLab00Threads, 0, e->s>>>(e->a.d_xn, p->d_idx + (size_t)x * e->B,
                                                                            p->d_xs, e->cfg.D);
  GTL_LAUNCH();
}

static inline void lab00_expert_up(Engine *e, int l, int g) {
  const MoeConfig *c = &e->cfg;
  Lab00 *p = (Lab00 *)e->layer;
  const int x = p->active[g];
  expert_swiglu_up_kernel<<<lab00_grid(c->F, p->h_cnt[x]), kLab00Threads, 0, e->s>>>(
      engine_w(e, MOE_GATE, l, x), engine_w(e, MOE_UP, l, x), lab00_w_opt(e, MOE_GATE_BIAS, l, x),
      lab00_w_opt(e, MOE_UP_BIAS, l, x), p->d_xs, p->d_h, c->F, c->D, c->act == MOE_ACT_SWIGLU_CLAMP,
      (float)c->swiglu_limit, (float)c->swiglu_alpha);
  GTL_LAUNCH();
}

static inline void lab00_expert_down(Engine *e, int l, int g) {
  const MoeConfig *c = &e->cfg;
  Lab00 *p = (Lab00 *)e->layer;
  const int x = p->active[g];
  // gpt-oss's down bias is part of the expert's output, so it is weighted in combine
  lab00_gemv(e, engine_w(e, MOE_DOWN, l, x), lab00_w_opt(e, MOE_DOWN_BIAS, l, x), p->d_h, p->d_ys, c->D, c->F,
             p->h_cnt[x], 0);
}

static inline void lab00_combine(Engine *e, int, int g) {
  Lab00 *p = (Lab00 *)e->layer;
  const int x = p->active[g];
  expert_combine_kernel<<<lab00_grid(e->cfg.D, p->h_cnt[x]), kLab00Threads, 0, e->s>>>(
      p->d_ys, p->d_idx + (size_t)x * e->B, p->d_wt + (size_t)x * e->B, e->a.d_x, e->cfg.D);
  GTL_LAUNCH();
}

static inline void lab00_logits(Engine *e, int) {
  const MoeConfig *c = &e->cfg;
  lab00_rmsnorm(e, e->a.d_x, engine_w(e, MOE_FINAL_NORM, 0, 0), e->a.d_xn, e->B, c->D);
  lab00_gemv(e, engine_w(e, MOE_LM_HEAD, 0, 0), NULL, e->a.d_xn, e->a.d_logits, c->V, c->D, e->B, 0);
}

/** Layer 00's table: every stage above, the host sampler, the engine's default fp32
 *  contiguous KV cache (rings on sliding-window layers), bf16 tolerances (rel_l2 < 1e-2,
 *  top-1 >= 99%), eager. */
static inline LayerOps lab00_ops(void) {
  LayerOps o;
  memset(&o, 0, sizeof o);
  o.target = "labs/00_baseline";
  o.adds = "adds: every chapter's baseline (thread-per-output GEMVs, host router, per-expert host loop with a "
           "sync, contiguous fp32 KV, eager launches)";
  o.default_preset = "gptoss20b_mixtral";
  o.dtype = "bf16";
  o.tol_rel_l2 = 1e-2;
  o.tol_top1 = 0.99;
  o.expert_fmt = o.dense_fmt = MOE_WF_BF16;
  o.kv_bytes = 2;  // the model's bf16 KV, whatever this layer stores (the same bytes for every layer)
  o.configure = lab00_configure;
  o.setup = lab00_setup;
  o.teardown = lab00_teardown;
  o.embed = lab00_embed;
  o.qkv = lab00_qkv;
  o.rope = lab00_rope;
  o.attend = lab00_attend;
  o.out = lab00_out;
  o.router = lab00_router;
  o.topk = lab00_topk;
  o.experts_plan = lab00_experts_plan;
  o.dispatch = lab00_dispatch;
  o.expert_up = lab00_expert_up;
  o.expert_down = lab00_expert_down;
  o.combine = lab00_combine;
  o.logits = lab00_logits;
  return o;
}
