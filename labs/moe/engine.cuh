// engine.cuh — the frame every lab layer runs in. The engine owns the data and the decode
// step; a layer (labs/NN_*/layer.cuh) is a table of stage functions (frame.cuh, LayerOps)
// and its decode.cu is one line:  return engine_main(argc, argv, &ops);
//
// The engine owns: the weights (seeded fill on the GPU, or a Hugging Face checkpoint
// through ch05's pinned ring loader), the activations (EngineActs), the KV cache
// (EngineKV; a layer may allocate its own layout), the token and position of every
// sequence on the device, the validation against the CPU reference, the timed decode
// loop, the per-stage marks and breakdown, and the report.
//
// Program flow (docs/contract.md): parse → [--write-checkpoint: write, exit] → config
// (preset or --model's config.json) → LayerOps.configure → device → weights → weights
// check → teacher-forced logits of --check positions vs the CPU reference (rel_l2 <
// tol_rel_l2, top-1 agreement >= tol_top1; FAIL exits 1 untimed) → prompt (one step per
// token, untimed) → [LayerOps.graph: the step captured as a CUDA graph, one replay checked
// bit for bit against an eager run] → --gen tokens, the first --warmup decode steps
// untimed, every later one timed by a CUDA event pair (a graph layer replays them) → stage
// breakdown over --stage-steps instrumented steps (always eager).
//
// Roofline: moe_step_bytes_fmt (labs/moe/config.h) in the layer's weight formats and KV
// bytes per element; the breakdown splits the same model per stage (weights and KV only).
#pragma once
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "frame.cuh"
#include "reference.h"
#include "sampler.h"
#include "weights.cuh"

static const char *stage_name[ST_COUNT] = {
    "embed", "attn.qkv", "attn.rope", "attn.score", "attn.out", "moe.router", "moe.topk",
    "moe.dispatch", "moe.expert_up", "moe.expert_down", "moe.combine", "logits", "sample"};
static const char *stage_key[ST_COUNT] = {  // JSON keys: ms per step
    "ms_embed", "ms_attn_qkv", "ms_attn_rope", "ms_attn_score", "ms_attn_out", "ms_moe_router",
    "ms_moe_topk", "ms_moe_dispatch", "ms_moe_expert_up", "ms_moe_expert_down", "ms_moe_combine",
    "ms_logits", "ms_sample"};

// ---- stage marks -----------------------------------------------------------------------
static inline void stage_collect(Engine *e) {
  GTL_CUDA(cudaStreamSynchronize(e->s));
  for (int i = 0; i + 1 < e->n_ev; i += 2) {
    float ms = 0;
    GTL_CUDA(cudaEventElapsedTime(&ms, e->ev[i], e->ev[i + 1]));
    e->stage_ms[e->ev_stage[i / 2]] += ms;
  }
  e->n_ev = 0;
}
static inline void stage_begin(Engine *e, Stage st) {
  gtl_nvtx_push(e->nv_stage[st]);
  if (!e->profile) return;
  if (e->n_ev + 2 > e->cap_ev) stage_collect(e);  // pairs are complete here
  e->ev_stage[e->n_ev / 2] = st;
  GTL_CUDA(cudaEventRecord(e->ev[e->n_ev++], e->s));
}
static inline void stage_end(Engine *e) {
  if (e->profile) GTL_CUDA(cudaEventRecord(e->ev[e->n_ev++], e->s));
  gtl_nvtx_pop();
}
static inline void stage_run(Engine *e, Stage st, StageFn fn, int l) {
  if (!fn) return;
  stage_begin(e, st);
  fn(e, l);
  stage_end(e);
}
static inline void stage_run_group(Engine *e, Stage st, GroupFn fn, int l, int g) {
  if (!fn) return;
  stage_begin(e, st);
  fn(e, l, g);
  stage_end(e);
}

// Bytes of the roofline model per stage and step (weights in the layer's formats, K/V at
// kv_bytes per element, attention over moe_kv_positions' keys: ctx + 1, a sliding-window
// layer at most its window, `experts` distinct experts per layer); their sum is
// moe_step_bytes_fmt.
static inline void engine_stage_bytes(const Engine *e, double ctx, double experts, double *b) {
  const MoeConfig *c = &e->cfg;
  const double db = moe_weight_bits(e->ops.dense_fmt) / 8, eb = moe_weight_bits(e->ops.expert_fmt) / 8;
  const double Q = (double)c->H * c->head_dim, kv_row = 2.0 * c->H_kv * c->head_dim;
  const double o = Q * c->D, attn = (double)moe_params_attn(c), fd = (double)c->F * c->D;
  const double bias = (double)moe_params_expert(c) - 3 * fd;  // gpt-oss expert biases
  for (int s = 0; s < ST_COUNT; s++) b[s] = 0;
  b[ST_EMBED] = (double)e->B * c->D * db;
  b[ST_ATTN_QKV] = c->L * (attn - o) * db;
  b[ST_ATTN_OUT] = c->L * o * db;
  b[ST_ATTN_ROPE] = 0;  // the step's own K/V row is counted in attn.score (ctx + 1)
  b[ST_ATTN_SCORE] = (double)e->B * kv_row * moe_kv_positions(c, ctx) * e->ops.kv_bytes;
  b[ST_MOE_ROUTER] = c->L * ((double)c->E * c->D + (c->router_bias ? c->E : 0)) * db;
  b[ST_MOE_EXPERT_UP] = c->L * experts * 2 * fd * eb;
  b[ST_MOE_EXPERT_DOWN] = c->L * experts * fd * eb;
  b[ST_MOE_COMBINE] = c->L * experts * bias * db;
  b[ST_LOGITS] = ((double)c->V * c->D + c->D) * db;
}

// ---- the step ----------------------------------------------------------------------------
// Tokens a.h_tok[0..B) at positions a.h_tok[B..2B) (upload = 1; else already on the
// device) → a.d_logits, K/V of the step appended.
static inline void engine_step(Engine *e, int upload) {
  const LayerOps *o = &e->ops;
  gtl_nvtx_push_payload(e->nv_step, e->pos);
  stage_begin(e, ST_EMBED);
  if (upload)
    GTL_CUDA(cudaMemcpyAsync(e->a.d_tok, e->a.h_tok, sizeof(int32_t) * 2 * e->B, cudaMemcpyHostToDevice, e->s));
  o->embed(e, -1);
  stage_end(e);
  for (int l = 0; l < e->cfg.L; l++) {
    gtl_nvtx_push_payload(e->nv_layer, l);
    stage_run(e, ST_ATTN_QKV, o->qkv, l);
    stage_run(e, ST_ATTN_ROPE, o->rope, l);
    stage_run(e, ST_ATTN_SCORE, o->attend, l);
    stage_run(e, ST_ATTN_OUT, o->out, l);
    stage_run(e, ST_MOE_ROUTER, o->router, l);
    stage_run(e, ST_MOE_TOPK, o->topk, l);
    const int groups = o->experts_plan ? o->experts_plan(e, l) : 1;
    for (int g = 0; g < groups; g++) {
      stage_run_group(e, ST_MOE_DISPATCH, o->dispatch, l, g);
      stage_run_group(e, ST_MOE_EXPERT_UP, o->expert_up, l, g);
      stage_run_group(e, ST_MOE_EXPERT_DOWN, o->expert_down, l, g);
      stage_run_group(e, ST_MOE_COMBINE, o->combine, l, g);
    }
    gtl_nvtx_pop();
  }
  stage_run(e, ST_LOGITS, o->logits, -1);
  gtl_nvtx_pop();
}

static inline void engine_set_tokens(Engine *e, const int *tok, size_t stride, int pos) {
  for (int b = 0; b < e->B; b++) {
    e->a.h_tok[b] = tok[(size_t)b * stride];
    e->a.h_tok[e->B + b] = pos;
  }
  e->pos = pos;
}

// After a device sampler: the sampled token is the next step's input, positions advance,
// and the token joins the device history hist[b][i], i = pos[b] − pos0 (the step at
// position pos0 + i yields token i; read on the device, so a replayed CUDA graph of the
// step writes the right entry). Thread per sequence.
__global__ void engine_advance_kernel(const int32_t *next, int32_t *tok, int32_t *pos, int32_t *hist,
                                      int B, int stride, int pos0) {
  const int b = blockIdx.x * blockDim.x + threadIdx.x;
  if (b >= B) return;
  tok[b] = next[b];
  hist[(size_t)b * stride + (pos[b] - pos0)] = next[b];
  pos[b] += 1;
}

typedef struct {
  double temperature, top_p;
  uint64_t seed;
  int *hist;         // host history [B][stride]
  int32_t *d_hist;   // device history (device sampler)
  int stride;
  double *scratch;   // [V]
  int pos0;          // position of the step that yields token 0 (the prompt's last)
} EngineSampler;

// Next token of every row as token i of the history: the host sampler (logits to the
// host, moe_sample), or the layer's device sampler (no host sync).
static inline void engine_sample(Engine *e, EngineSampler *sm, int i) {
  stage_begin(e, ST_SAMPLE);
  if (e->ops.sample) {
    e->ops.sample(e, -1);
    engine_advance_kernel<<<(e->B + 127) / 128, 128, 0, e->s>>>(e->a.d_next, e->a.d_tok, e->a.d_pos, sm->d_hist,
                                                                e->B, sm->stride, sm->pos0);
    GTL_LAUNCH();
  } else {
    const size_t V = (size_t)e->cfg.V;
    GTL_CUDA(cudaMemcpyAsync(e->a.h_logits, e->a.d_logits, sizeof(float) * V * e->B, cudaMemcpyDeviceToHost, e->s));
    GTL_CUDA(cudaStreamSynchronize(e->s));
    for (int b = 0; b < e->B; b++)
      sm->hist[(size_t)b * sm->stride + i] = moe_sample(e->a.h_logits + b * V, (int)V, sm->temperature, sm->top_p,
                                                        sm->seed, (uint64_t)i * e->B + b, sm->scratch);
  }
  stage_end(e);
}

// ---- validation --------------------------------------------------------------------------
static inline uint64_t fnv1a(const void *p, size_t n, uint64_t h) {
  for (size_t i = 0; i < n; i++) h = (h ^ ((const unsigned char *)p)[i]) * 0x100000001B3ull;
  return h;
}

// Teacher-forced logits of P positions at batch B (row b reads seq[b][p]) against the CPU
// reference for n_rows spread rows. Fills r->err; returns top-1 agreement.
static inline double engine_validate(Engine *e, const int *seq, int P, int n_rows, const char *dump,
                              GtlResult *r) {
  const size_t V = (size_t)e->cfg.V;
  int rows[64];
  for (int i = 0; i < n_rows; i++) rows[i] = n_rows == 1 ? 0 : (int)((int64_t)i * (e->B - 1) / (n_rows - 1));
  float *out = (float *)malloc(sizeof(float) * V * P * n_rows);
  double *ref = (double *)malloc(sizeof(double) * V * P * n_rows);
  gtl_phase_push(GTL_PHASE_VALIDATE);
  for (int p = 0; p < P; p++) {
    engine_set_tokens(e, seq + p, P, p);
    gtl_poison(e->a.d_logits, sizeof(float) * V * e->B, e->s);
    engine_step(e, 1);
    GTL_CUDA(cudaMemcpyAsync(e->a.h_logits, e->a.d_logits, sizeof(float) * V * e->B, cudaMemcpyDeviceToHost, e->s));
    GTL_CUDA(cudaStreamSynchronize(e->s));
    for (int i = 0; i < n_rows; i++)
      memcpy(out + ((size_t)p * n_rows + i) * V, e->a.h_logits + rows[i] * V, sizeof(float) * V);
  }
  gtl_phase_pop();
  gtl_phase_push(GTL_PHASE_REFERENCE);
  DevFetch f = {e, (uint16_t *)gtl_malloc_pinned(e->lay.max_numel * 2, "reference weight buffer")};
  MoeRef ref_dec;
  long cpus = sysconf(_SC_NPROCESSORS_ONLN);
  if (moe_ref_init(&ref_dec, &e->lay, dev_fetch, &f, n_rows, P, (int)(cpus < 1 ? 1 : cpus > 32 ? 32 : cpus))) {
    fprintf(stderr, "error: host out of memory for the CPU reference\n");
    exit(GTL_EXIT_RUNTIME);
  }
  int tok[64];
  for (int p = 0; p < P; p++) {
    for (int i = 0; i < n_rows; i++) tok[i] = seq[(size_t)rows[i] * P + p];
    moe_ref_step(&ref_dec, tok, p, ref + (size_t)p * n_rows * V);
  }
  moe_ref_free(&ref_dec);
  GTL_CUDA(cudaFreeHost(f.h_buf));
  gtl_phase_pop();
  // The layer's tolerances: bf16 layers pass at rel_l2 < 1e-2 and top-1 agreement >= 99%,
  // fp8 layers at 6e-2 and 95%. The element bounds (10% of the RMS + 10% relative) only
  // catch NaN and garbage.
  GtlTol tol = {e->ops.tol_rel_l2, 0.1, 0.1};
  gtl_compare(out, ref, V * P * n_rows, tol, &r->err);
  int agree = 0;
  for (int k = 0; k < P * n_rows; k++) agree += moe_argmax_f(out + k * V, (int)V) == moe_argmax_d(ref + k * V, (int)V);
  const double top1 = (double)agree / (P * n_rows);
  const size_t bad_guard = gtl_guarded_check(&e->g_logits);
  if (bad_guard) fprintf(stderr, "%zu guard bytes around the logits were overwritten\n", bad_guard);
  r->err.pass = r->err.pass && top1 >= e->ops.tol_top1 && !bad_guard;
  r->validated = 1;
  r->logits_hash = 0xCBF29CE484222325ull;
  for (int p = 0; p < P; p++) r->logits_hash = fnv1a(out + (size_t)p * n_rows * V, sizeof(float) * V, r->logits_hash);
  if (dump) {  // row 0's logits, float32 [P][V], for labs/moe/hf_check.py
    FILE *fd = fopen(dump, "wb");
    for (int p = 0; fd && p < P; p++) fwrite(out + (size_t)p * n_rows * V, sizeof(float), V, fd);
    if (!fd || fclose(fd)) fprintf(stderr, "warning: could not write %s\n", dump);
  }
  free(out);
  free(ref);
  return top1;
}


// Generation (prompt, timed decode, instrumented steps, report) and engine_main.
#include "engine_main.cuh"
