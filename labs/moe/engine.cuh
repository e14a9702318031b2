// engine.cuh — the frame every lab layer (labs/NN_*/decode.cu) runs in: weights on the
// GPU, the KV cache, the validation against the CPU reference, the timed decode loop,
// the per-stage breakdown and the report. A layer supplies only its decode step:
//
//   void layer_setup(Engine *e);     its buffers (weights, KV cache, logits already exist)
//   void layer_step(Engine *e);      tokens e->h_tokens[B] at position e->pos, KV cache
//                                    positions < pos already written → e->d_logits [B][V]
//                                    fp32 on stream e->s; writes K/V of pos
//   void layer_teardown(Engine *e);
//
// and marks its stages with stage_begin/stage_end (NVTX ranges always; CUDA event pairs
// in instrumented steps). Stage names are DESIGN.md's: attn.qkv attn.rope attn.score
// attn.out moe.router moe.topk moe.dispatch moe.expert_up moe.expert_down moe.combine
// logits.
//
// Program flow (DESIGN.md section 2): parse → [--write-checkpoint: write, exit] → config
// (preset or --model's config.json) → device → weights (seeded fill on the GPU, or the HF
// checkpoint through ch05's pinned ring loader) → weights check → teacher-forced logits
// of --check positions vs the CPU reference (rel_l2 < 1e-2, top-1 agreement >= 99%;
// FAIL exits 1 untimed) → prompt (one step per token, untimed) → --gen tokens, the first
// --warmup decode steps untimed, every later one timed by a CUDA event pair → stage
// breakdown over --stage-steps extra instrumented steps → report.
//
// Model for the roofline: moe_step_bytes (labs/moe/config.h) with bf16 weights and a bf16
// KV cache — the model's bytes, the same for every layer, whatever a layer stores.
#pragma once
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "../../ch05/ring_loader.cuh"
#include "../../common/gauntlet.h"
#include "checkpoint.h"
#include "config.h"
#include "reference.h"
#include "sampler.h"

typedef enum {
  ST_ATTN_QKV, ST_ATTN_ROPE, ST_ATTN_SCORE, ST_ATTN_OUT, ST_MOE_ROUTER, ST_MOE_TOPK,
  ST_MOE_DISPATCH, ST_MOE_EXPERT_UP, ST_MOE_EXPERT_DOWN, ST_MOE_COMBINE, ST_LOGITS, ST_COUNT
} Stage;
static const char *stage_name[ST_COUNT] = {
    "attn.qkv", "attn.rope", "attn.score", "attn.out", "moe.router", "moe.topk",
    "moe.dispatch", "moe.expert_up", "moe.expert_down", "moe.combine", "logits"};
static const char *stage_key[ST_COUNT] = {  // JSON keys: ms per step
    "ms_attn_qkv", "ms_attn_rope", "ms_attn_score", "ms_attn_out", "ms_moe_router",
    "ms_moe_topk", "ms_moe_dispatch", "ms_moe_expert_up", "ms_moe_expert_down",
    "ms_moe_combine", "ms_logits"};

typedef struct Engine {
  GtlCtx ctx;
  MoeConfig cfg;
  MoeLayout lay;
  cudaStream_t s;
  __nv_bfloat16 *d_w;      // every weight, lay.numel bf16 (tensor i at lay.t[i].offset)
  int B, max_len, pos;     // sequences, KV positions, this step's position
  int *h_tokens;           // [B] this step's input tokens
  float *d_kc, *d_vc;      // [L][B][H_kv][max_len][head_dim] fp32, contiguous max-length
  float *d_logits;         // [B][V] (guarded)
  float *h_logits;         // [B][V] pinned
  GtlGuarded g_logits;
  // stages: NVTX names, event pairs of instrumented steps, totals in ms
  const void *nv_stage[ST_COUNT], *nv_step, *nv_layer;
  int profile, n_ev, cap_ev;
  cudaEvent_t *ev;
  int *ev_stage;
  double stage_ms[ST_COUNT];
  double experts_read, experts_read_n;  // distinct experts per layer, summed by the layer
  void *layer;             // the layer's own state
} Engine;

void layer_setup(Engine *e);
void layer_step(Engine *e);
void layer_teardown(Engine *e);

static inline const __nv_bfloat16 *engine_w(const Engine *e, MoeKind k, int layer, int expert) {
  return e->d_w + e->lay.t[moe_tensor_index(&e->lay, k, layer, expert)].offset;
}
// KV cache of layer l: [B][H_kv][max_len][head_dim]
static inline size_t engine_kv_layer(const Engine *e, int l) {
  return (size_t)l * e->B * e->cfg.H_kv * e->max_len * e->cfg.head_dim;
}

// ---- stages --------------------------------------------------------------------------
static void stage_collect(Engine *e) {
  GTL_CUDA(cudaStreamSynchronize(e->s));
  for (int i = 0; i + 1 < e->n_ev; i += 2) {
    float ms = 0;
    GTL_CUDA(cudaEventElapsedTime(&ms, e->ev[i], e->ev[i + 1]));
    e->stage_ms[e->ev_stage[i / 2]] += ms;
  }
  e->n_ev = 0;
}
static void stage_begin(Engine *e, Stage st) {
  gtl_nvtx_push(e->nv_stage[st]);
  if (!e->profile) return;
  if (e->n_ev + 2 > e->cap_ev) stage_collect(e);  // pairs are complete here
  e->ev_stage[e->n_ev / 2] = st;
  GTL_CUDA(cudaEventRecord(e->ev[e->n_ev++], e->s));
}
static void stage_end(Engine *e, Stage st) {
  (void)st;
  if (e->profile) GTL_CUDA(cudaEventRecord(e->ev[e->n_ev++], e->s));
  gtl_nvtx_pop();
}

// ---- weights ---------------------------------------------------------------------------
// Element i of tensor t is gtl_uniform(seed_t, i, lo_t, hi_t) rounded to bf16 — bit for
// bit what moe_synth_tensor (labs/moe/checkpoint.c) writes on the host (common/rng.h rounds
// the affine step explicitly on the device, so no FMA contraction separates the two).
static void weights_synthetic(Engine *e, uint64_t seed) {
  for (int i = 0; i < e->lay.n; i++) {
    float lo, hi;
    moe_synth_range(&e->lay, i, &lo, &hi);
    const size_t n = moe_tensor_numel(&e->lay.t[i]);
    gtl_fill_uniform(e->d_w + e->lay.t[i].offset, GTL_BF16, n, moe_synth_seed(seed, i), lo, hi, e->s);
  }
  GTL_CUDA(cudaStreamSynchronize(e->s));
}

// Strategy: thread per element. Used only for F16/F32 checkpoints.
__global__ void to_bf16_kernel(const void *in, int f32, __nv_bfloat16 *out, size_t n) {
  for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x)
    out[i] = __float2bfloat16_rn(f32 ? ((const float *)in)[i] : __half2float(((const __half *)in)[i]));
}

static int seg_by_offset(const void *a, const void *b) {
  const RingSegment *x = (const RingSegment *)a, *y = (const RingSegment *)b;
  return x->file_off < y->file_off ? -1 : x->file_off > y->file_off;
}

// BF16 tensors go straight from the file to their place in the arena through the ring;
// F16/F32 ones through a device staging buffer and a conversion kernel (RNE, as on the host).
static void weights_load(Engine *e, const MoeCheckpoint *ck) {
  RingLoader ring;
  ring_loader_init(&ring, 8, (size_t)16 << 20, 2, e->ctx.args.device);
  RingSegment *seg = (RingSegment *)malloc(sizeof(RingSegment) * (size_t)e->lay.n);
  char err[320];
  size_t stage_bytes = 0;
  for (int t = 0; t < e->lay.n; t++)
    if (ck->src[t].st->dtype != GTL_ST_BF16) {
      const size_t b = moe_tensor_numel(&e->lay.t[t]) * gtl_st_dtype_size(ck->src[t].st->dtype);
      stage_bytes = b > stage_bytes ? b : stage_bytes;
    }
  void *d_stage = stage_bytes ? gtl_malloc(stage_bytes, "F16/F32 tensor staging") : NULL;
  for (int f = 0; f < ck->n_files; f++) {
    size_t n = 0;
    for (int t = 0; t < e->lay.n; t++) {
      const MoeSource *s = &ck->src[t];
      const size_t numel = moe_tensor_numel(&e->lay.t[t]);
      if (s->file != f) continue;
      RingSegment g = {moe_ckpt_file_offset(ck, t), numel * gtl_st_dtype_size(s->st->dtype),
                       e->d_w + e->lay.t[t].offset};
      if (s->st->dtype == GTL_ST_BF16) {
        seg[n++] = g;
        continue;
      }
      g.d_dst = d_stage;
      if (ring_loader_load(&ring, ck->fd[f], &g, 1, e->s, err, sizeof err)) {
        fprintf(stderr, "error: %s: %s\n", ck->path[f], err);
        exit(GTL_EXIT_RUNTIME);
      }
      to_bf16_kernel<<<1024, 256, 0, e->s>>>(d_stage, s->st->dtype == GTL_ST_F32,
                                              e->d_w + e->lay.t[t].offset, numel);
      GTL_LAUNCH();
    }
    qsort(seg, n, sizeof *seg, seg_by_offset);  // file order: the ring merges neighbours
    if (n && ring_loader_load(&ring, ck->fd[f], seg, n, e->s, err, sizeof err)) {
      fprintf(stderr, "error: %s: %s\n", ck->path[f], err);
      exit(GTL_EXIT_RUNTIME);
    }
  }
  GTL_CUDA(cudaStreamSynchronize(e->s));
  if (d_stage) GTL_CUDA(cudaFree(d_stage));
  free(seg);
  ring_loader_destroy(&ring);
}

// Device weights bit for bit against the host's own copy (the seeded generator, or the
// checkpoint read on the host): every tensor of a small model, a sample of a big one.
static size_t weights_check(const Engine *e, const MoeCheckpoint *ck, uint64_t seed) {
  const MoeLayout *lay = &e->lay;
  const int L = e->cfg.L, E = e->cfg.E, all = lay->numel <= ((uint64_t)64 << 20);
  const int pick[] = {moe_tensor_index(lay, MOE_Q, 0, 0), moe_tensor_index(lay, MOE_K, 0, 0),
                      moe_tensor_index(lay, MOE_GATE, 0, 0), moe_tensor_index(lay, MOE_UP, 0, E - 1),
                      moe_tensor_index(lay, MOE_DOWN, L - 1, E - 1), moe_tensor_index(lay, MOE_ROUTER, L - 1, 0),
                      moe_tensor_index(lay, MOE_ATTN_NORM, L - 1, 0), moe_tensor_index(lay, MOE_FINAL_NORM, 0, 0)};
  const int n = all ? lay->n : (int)(sizeof pick / sizeof pick[0]);
  uint16_t *want = (uint16_t *)malloc(lay->max_numel * 2), *got = (uint16_t *)malloc(lay->max_numel * 2);
  size_t bad = 0;
  char err[320];
  for (int i = 0; i < n; i++) {
    const int t = all ? i : pick[i];
    const size_t numel = moe_tensor_numel(&lay->t[t]);
    if (ck) {
      if (moe_ckpt_read_bf16(ck, t, want, err, sizeof err)) {
        fprintf(stderr, "error: %s\n", err);
        exit(GTL_EXIT_RUNTIME);
      }
    } else {
      moe_synth_tensor(lay, t, seed, want);
    }
    GTL_CUDA(cudaMemcpy(got, e->d_w + lay->t[t].offset, numel * 2, cudaMemcpyDeviceToHost));
    if (memcmp(want, got, numel * 2)) {
      fprintf(stderr, "weights check: %s differs on the device\n", lay->t[t].name);
      bad++;
    }
  }
  free(want);
  free(got);
  return bad;
}

// ---- the CPU reference reads the device's weights, one tensor at a time -------------
typedef struct {
  const Engine *e;
  uint16_t *h_buf;  // pinned, lay.max_numel bf16
} DevFetch;

static const uint16_t *dev_fetch(void *user, int tensor, int64_t row0, int64_t n_rows) {
  DevFetch *f = (DevFetch *)user;
  const MoeTensor *t = &f->e->lay.t[tensor];
  const size_t off = t->cols ? (size_t)row0 * t->cols : 0, n = t->cols ? (size_t)n_rows * t->cols : (size_t)t->rows;
  GTL_CUDA(cudaMemcpy(f->h_buf, f->e->d_w + t->offset + off, n * 2, cudaMemcpyDeviceToHost));
  return f->h_buf;
}

// ---- steps -----------------------------------------------------------------------------
static void engine_step(Engine *e) {
  gtl_nvtx_push_payload(e->nv_step, e->pos);
  layer_step(e);
  gtl_nvtx_pop();
}

// Logits to the host and the next token of every row (the driver's part of "logits").
static void engine_sample(Engine *e, double temperature, double top_p, uint64_t seed,
                          uint64_t step, int *next, double *scratch) {
  stage_begin(e, ST_LOGITS);
  const size_t V = (size_t)e->cfg.V;
  GTL_CUDA(cudaMemcpyAsync(e->h_logits, e->d_logits, sizeof(float) * V * e->B, cudaMemcpyDeviceToHost, e->s));
  GTL_CUDA(cudaStreamSynchronize(e->s));
  for (int b = 0; b < e->B; b++)
    next[b] = moe_sample(e->h_logits + b * V, (int)V, temperature, top_p, seed, step * e->B + b, scratch);
  stage_end(e, ST_LOGITS);
}

static uint64_t fnv1a(const void *p, size_t n, uint64_t h) {
  for (size_t i = 0; i < n; i++) h = (h ^ ((const unsigned char *)p)[i]) * 0x100000001B3ull;
  return h;
}

// Teacher-forced logits of P positions at batch B (row b reads seq[b][p]) against the CPU
// reference for n_rows spread rows. Fills r->err; returns top-1 agreement.
static double engine_validate(Engine *e, const int *seq, int P, int n_rows, const char *dump,
                              GtlResult *r) {
  const size_t V = (size_t)e->cfg.V;
  int rows[64];
  for (int i = 0; i < n_rows; i++) rows[i] = n_rows == 1 ? 0 : (int)((int64_t)i * (e->B - 1) / (n_rows - 1));
  float *out = (float *)malloc(sizeof(float) * V * P * n_rows);
  double *ref = (double *)malloc(sizeof(double) * V * P * n_rows);
  gtl_phase_push(GTL_PHASE_VALIDATE);
  for (int p = 0; p < P; p++) {
    for (int b = 0; b < e->B; b++) e->h_tokens[b] = seq[(size_t)b * P + p];
    e->pos = p;
    gtl_poison(e->d_logits, sizeof(float) * V * e->B, e->s);
    engine_step(e);
    GTL_CUDA(cudaMemcpyAsync(e->h_logits, e->d_logits, sizeof(float) * V * e->B, cudaMemcpyDeviceToHost, e->s));
    GTL_CUDA(cudaStreamSynchronize(e->s));
    for (int i = 0; i < n_rows; i++)
      memcpy(out + ((size_t)p * n_rows + i) * V, e->h_logits + rows[i] * V, sizeof(float) * V);
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
  // DESIGN.md section 6: bf16 layers pass at rel_l2 < 1e-2 and top-1 agreement >= 99%. The
  // element bounds (10% of the RMS + 10% relative) only catch NaN and garbage.
  GtlTol tol = {1e-2, 0.1, 0.1};
  gtl_compare(out, ref, V * P * n_rows, tol, &r->err);
  int agree = 0;
  for (int k = 0; k < P * n_rows; k++) agree += moe_argmax_f(out + k * V, (int)V) == moe_argmax_d(ref + k * V, (int)V);
  const double top1 = (double)agree / (P * n_rows);
  const size_t bad_guard = gtl_guarded_check(&e->g_logits);
  if (bad_guard) fprintf(stderr, "%zu guard bytes around the logits were overwritten\n", bad_guard);
  r->err.pass = r->err.pass && top1 >= 0.99 && !bad_guard;
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

// ---- generation: prompt, timed decode steps, instrumented steps, report ----------------
typedef struct {
  int64_t prompt, gen, stage_steps;
  double temperature, top_p;
  const int *ids;  // the prompt of every sequence, or NULL: seeded ids
} EngineRun;

static int engine_generate(Engine *e, const EngineRun *run, GtlResult *r) {
  GtlCtx *ctx = &e->ctx;
  const MoeConfig *c = &e->cfg;
  const int V = c->V, B = e->B, warmup = ctx->args.warmup, P = (int)run->prompt, gen = (int)run->gen;
  const int n_steps = (int)(run->gen + run->stage_steps), timed = gen - 1 - warmup;
  const size_t stride = (size_t)n_steps + 1;
  int *prompt = (int *)malloc(sizeof(int) * B * P), *out = (int *)malloc(sizeof(int) * B * stride);
  int *next = (int *)malloc(sizeof(int) * B);
  double *scratch = (double *)malloc(sizeof(double) * V);
  for (int b = 0; b < B; b++)
    for (int p = 0; p < P; p++)
      prompt[(size_t)b * P + p] =
          run->ids ? run->ids[p] : (int)gtl_uniform_u32(ctx->args.seed ^ 0x9807ull, (uint64_t)b * 65536 + p, (uint32_t)V);
  const uint64_t sseed = ctx->args.seed ^ 0x5A3Dull;

  // Prompt: one untimed step per token; its last logits give the first generated token.
  struct timespec t0, t1;
  clock_gettime(CLOCK_MONOTONIC, &t0);
  for (int p = 0; p < P; p++) {
    for (int b = 0; b < B; b++) e->h_tokens[b] = prompt[(size_t)b * P + p];
    e->pos = p;
    engine_step(e);
  }
  engine_sample(e, run->temperature, run->top_p, sseed, 0, next, scratch);
  for (int b = 0; b < B; b++) out[(size_t)b * stride] = next[b];
  clock_gettime(CLOCK_MONOTONIC, &t1);
  const double prefill_s = (t1.tv_sec - t0.tv_sec) + 1e-9 * (t1.tv_nsec - t0.tv_nsec);

  // Decode: step i consumes token i-1 and yields token i. Timed: warmup < i < gen, one
  // event pair each (the second is recorded after the host has sampled: the stream is
  // idle then, so it is reached at once). Steps gen … gen+stage_steps-1 are instrumented.
  cudaEvent_t *ev = (cudaEvent_t *)malloc(sizeof(cudaEvent_t) * 2 * timed);
  for (int i = 0; i < 2 * timed; i++) GTL_CUDA(cudaEventCreate(&ev[i]));
  const int active = c->E < B * c->top_k ? c->E : B * c->top_k;
  e->cap_ev = 2 * (c->L * (6 + 4 * active) + 8);
  e->ev = (cudaEvent_t *)malloc(sizeof(cudaEvent_t) * e->cap_ev);
  e->ev_stage = (int *)malloc(sizeof(int) * (e->cap_ev / 2));
  for (int i = 0; i < e->cap_ev; i++) GTL_CUDA(cudaEventCreate(&e->ev[i]));
  double ctx_sum = 0;
  for (int i = 1; i < n_steps; i++) {
    const int k = i - 1 - warmup, is_timed = k >= 0 && i < gen;
    if (i == 1 + warmup) gtl_phase_push(GTL_PHASE_TIMED);
    if (i == gen) {
      gtl_phase_pop();
      e->profile = 1;
    }
    for (int b = 0; b < B; b++) e->h_tokens[b] = out[(size_t)b * stride + i - 1];
    e->pos = P + i - 1;
    if (is_timed) GTL_CUDA(cudaEventRecord(ev[2 * k], e->s));
    engine_step(e);
    engine_sample(e, run->temperature, run->top_p, sseed, (uint64_t)i, next, scratch);
    for (int b = 0; b < B; b++) out[(size_t)b * stride + i] = next[b];
    if (is_timed) {
      GTL_CUDA(cudaEventRecord(ev[2 * k + 1], e->s));
      ctx_sum += e->pos;
    }
    if (i == gen - 1) e->experts_read = e->experts_read_n = 0;  // count the instrumented steps
  }
  if (n_steps == gen) gtl_phase_pop();
  stage_collect(e);
  float *ms = (float *)malloc(sizeof(float) * timed);
  for (int k = 0; k < timed; k++) GTL_CUDA(cudaEventElapsedTime(&ms[k], ev[2 * k], ev[2 * k + 1]));
  int rc = GTL_EXIT_PASS;
  if (gtl_stats_compute(ms, timed, &r->st)) {
    fprintf(stderr, "error: a step time was not finite\n");
    rc = GTL_EXIT_RUNTIME;
  }
  r->tokens_per_s = B * 1000.0 / r->st.median;
  r->ms_per_token = r->st.median;
  r->bytes = moe_step_bytes(c, B, ctx_sum / timed, 2, 2);
  const double model_experts = moe_expected_experts(c->E, c->top_k, B);
  if (rc == GTL_EXIT_PASS && !ctx->args.json) {
    printf("# prompt: %d tokens x %d sequences, one step per token, %.2f s (untimed)\n", P, B, prefill_s);
    printf("# decode: %d timed steps after %d warm-up; %.1f tokens/s (batch %d), ms/token p50 %.3f p95 %.3f "
           "p99 %.3f\n", timed, warmup, r->tokens_per_s, B, r->st.median, r->st.p95, r->st.p99);
    printf("# bytes per token %.4f GB (step %.4f GB: weights with E(1-(1-k/E)^B) = %.2f experts per layer, "
           "KV at %.0f positions); %.2f%% of the HBM roofline (%.0f GB/s read ceiling)\n",
           r->bytes / B / 1e9, r->bytes / 1e9, model_experts, ctx_sum / timed + 1, gtl_result_pct(r, &ctx->ceil),
           ctx->ceil.read_gbps);
    if (e->experts_read_n > 0)
      printf("# experts read per layer in the instrumented steps: %.2f (model %.2f)\n",
             e->experts_read / e->experts_read_n, model_experts);
    double sum = 0;
    for (int s = 0; s < ST_COUNT; s++) sum += e->stage_ms[s];
    if (run->stage_steps > 0) {
      printf("# stage breakdown: mean ms per step over %lld instrumented steps (CUDA event pairs; host work "
             "inside a stage counts)\n", (long long)run->stage_steps);
      for (int s = 0; s < ST_COUNT; s++)
        printf("#   %-16s %10.3f ms %6.1f%%\n", stage_name[s], e->stage_ms[s] / run->stage_steps,
               100 * e->stage_ms[s] / sum);
      printf("#   %-16s %10.3f ms (timed step median %.3f ms)\n", "sum", sum / run->stage_steps, r->st.median);
    }
  }
  for (int s = 0; s < ST_COUNT; s++)
    gtl_result_extra(r, stage_key[s], run->stage_steps ? e->stage_ms[s] / run->stage_steps : NAN);
  if (rc == GTL_EXIT_PASS) {
    gtl_report_row(ctx, r);
    if (!ctx->args.json)
      for (int b = 0; b < (B < 4 ? B : 4); b++) {
        printf("# generated[%d]:", b);
        for (int i = 0; i < gen; i++) printf(" %d", out[(size_t)b * stride + i]);
        printf("\n");
      }
    rc = gtl_report_finish(ctx, r);
  }
  for (int i = 0; i < 2 * timed; i++) GTL_CUDA(cudaEventDestroy(ev[i]));
  for (int i = 0; i < e->cap_ev; i++) GTL_CUDA(cudaEventDestroy(e->ev[i]));
  free(e->ev);
  free(e->ev_stage);
  e->ev = NULL;
  e->cap_ev = 0;
  free(ev);
  free(ms);
  free(prompt);
  free(out);
  free(next);
  free(scratch);
  return rc;
}

// ---- main ------------------------------------------------------------------------------
static int engine_main(int argc, char **argv, const char *target, const char *adds) {
  const char *preset = NULL, *model = NULL, *write_dir = NULL, *ids_arg = NULL, *ids_file = NULL,
             *dump = NULL;
  int64_t batch = 1, prompt = -1, gen = -1, check = -1, check_rows = -1, stage_steps = 4;
  double temperature = 0, top_p = 1;
  GtlOpt opts[] = {
      {"preset", GTL_OPT_STR, &preset, "gptoss20b (default), qwen3moe, mini, tiny_mixtral, tiny_qwen3"},
      {"model", GTL_OPT_STR, &model, "DIR: a Hugging Face Mixtral/Qwen3-MoE checkpoint instead of a preset"},
      {"write-checkpoint", GTL_OPT_STR, &write_dir, "DIR: write the preset's seeded checkpoint (HF layout), exit"},
      {"batch", GTL_OPT_INT, &batch, "sequences decoded together (default 1)"},
      {"prompt", GTL_OPT_INT, &prompt, "prompt tokens per sequence, seeded ids (default 512)"},
      {"gen", GTL_OPT_INT, &gen, "tokens generated per sequence (default 128)"},
      {"prompt-ids", GTL_OPT_STR, &ids_arg, "1,2,3: the prompt as token ids (every sequence)"},
      {"prompt-file", GTL_OPT_STR, &ids_file, "PATH: the prompt's token ids, comma/space separated"},
      {"temperature", GTL_OPT_DOUBLE, &temperature, "0: greedy (default); > 0: sampled with --seed"},
      {"top-p", GTL_OPT_DOUBLE, &top_p, "nucleus mass in (0, 1] (default 1)"},
      {"check", GTL_OPT_INT, &check, "teacher-forced positions checked against the CPU reference"},
      {"check-rows", GTL_OPT_INT, &check_rows, "sequences of the batch checked (default min(2, --batch))"},
      {"stage-steps", GTL_OPT_INT, &stage_steps, "instrumented steps for the stage breakdown (default 4)"},
      {"dump-logits", GTL_OPT_STR, &dump, "PATH: the checked logits of sequence 0, float32 [P][V]"}};
  const int n_opts = (int)(sizeof opts / sizeof opts[0]);
  Engine *e = (Engine *)calloc(1, sizeof(Engine));
  GtlCtx *ctx = &e->ctx;
  gtl_parse(ctx, target, "decode", argc, argv, opts, n_opts, 2, 0, GTL_L2_WARM);
  if (ctx->args.iters != 0) gtl_usage_fail(ctx, "--iters: a lab times its --gen decode steps; use --gen");
  if (preset && model) gtl_usage_fail(ctx, "give --preset or --model, not both");
  if (!model && moe_config_preset(preset ? preset : "gptoss20b", &e->cfg))
    gtl_usage_fail(ctx, "--preset=%s: not one of %s", preset, moe_config_preset_names());
  if (write_dir) {  // host only: no GPU needed
    if (model) gtl_usage_fail(ctx, "--write-checkpoint writes a preset; drop --model");
    char err[1024];
    const MoeWriteOpts o = {GTL_ST_BF16, (uint64_t)4 << 30, 0};
    if (moe_ckpt_write_synthetic(write_dir, &e->cfg, ctx->args.seed, &o, err, sizeof err)) {
      fprintf(stderr, "error: %s\n", err);
      return GTL_EXIT_RUNTIME;
    }
    printf("wrote %s: %s, seed %llu, %.2f GB of bf16 weights\n", write_dir, e->cfg.name,
           (unsigned long long)ctx->args.seed, moe_params_total(&e->cfg) * 2 / 1e9);
    free(e);
    return GTL_EXIT_PASS;
  }
  if (model) {
    char path[1200], err[600];
    snprintf(path, sizeof path, "%s/config.json", model);
    if (moe_config_read(path, &e->cfg, err, sizeof err)) {
      fprintf(stderr, "error: %s\n", err);
      return GTL_EXIT_RUNTIME;
    }
  }
  const MoeConfig *c = &e->cfg;
  const int V = c->V, big = moe_params_total(c) > 2000000000ull;
  const int def_prompt = ctx->args.size == GTL_SIZE_SMALL ? 64 : ctx->args.size == GTL_SIZE_LARGE ? 2048 : 512;
  const int def_gen = ctx->args.size == GTL_SIZE_SMALL ? 32 : ctx->args.size == GTL_SIZE_LARGE ? 256 : 128;
  int *ids = (int *)malloc(sizeof(int) * 65536), n_ids = 0;
  char err[600];
  if (ids_arg && ids_file) gtl_usage_fail(ctx, "give --prompt-ids or --prompt-file, not both");
  if (ids_arg || ids_file) {
    n_ids = ids_arg ? moe_parse_ids(ids_arg, V, ids, 65536, err, sizeof err)
                    : moe_read_ids_file(ids_file, V, ids, 65536, err, sizeof err);
    if (n_ids < 0) gtl_usage_fail(ctx, "%s: %s", ids_arg ? "--prompt-ids" : "--prompt-file", err);
    if (prompt >= 0 && prompt != n_ids) gtl_usage_fail(ctx, "--prompt=%lld but %d prompt ids", (long long)prompt, n_ids);
    prompt = n_ids;
  }
  if (prompt < 0) prompt = def_prompt;
  if (gen < 0) gen = def_gen;
  if (n_ids && check >= 0 && check != n_ids) gtl_usage_fail(ctx, "--check: with --prompt-ids the prompt is what is checked");
  if (check < 0) check = n_ids ? n_ids : big ? 4 : 64;
  if (check_rows < 0) check_rows = batch < 2 ? batch : 2;
  const int warmup = ctx->args.warmup;
  if (batch < 1 || batch > 4096) gtl_usage_fail(ctx, "--batch=%lld: need 1..4096", (long long)batch);
  if (prompt < 1 || prompt > 65536) gtl_usage_fail(ctx, "--prompt=%lld: need 1..65536", (long long)prompt);
  if (gen < warmup + 2 || gen > 65536)
    gtl_usage_fail(ctx, "--gen=%lld: need --warmup + 2 (%d) .. 65536 (one timed step at least)", (long long)gen, warmup + 2);
  if (check < 1 || check > 4096) gtl_usage_fail(ctx, "--check=%lld: need 1..4096", (long long)check);
  if (check_rows < 1 || check_rows > 64 || check_rows > batch)
    gtl_usage_fail(ctx, "--check-rows=%lld: need 1..min(64, --batch)", (long long)check_rows);
  if (stage_steps < 0 || stage_steps > 256) gtl_usage_fail(ctx, "--stage-steps=%lld: need 0..256", (long long)stage_steps);
  if (!(temperature >= 0) || !(top_p > 0 && top_p <= 1))
    gtl_usage_fail(ctx, "need --temperature >= 0 and 0 < --top-p <= 1");
  e->B = (int)batch;
  e->max_len = (int)(prompt + gen + stage_steps > check ? prompt + gen + stage_steps : check);
  if (c->sliding_window && e->max_len > c->sliding_window)
    gtl_usage_fail(ctx, "context %d exceeds the model's sliding_window %lld (not supported)", e->max_len,
                   (long long)c->sliding_window);
  ctx->args.iters = (int)(gen - 1 - warmup);  // the timed decode steps, for the report

  gtl_open(ctx);
  e->s = (cudaStream_t)ctx->stream;
  gtl_phase_push(GTL_PHASE_SETUP);
  MoeCheckpoint ck;
  memset(&ck, 0, sizeof ck);
  if (model) {
    char cerr[2048];
    if (moe_ckpt_open(model, &ck, cerr, sizeof cerr)) {
      fprintf(stderr, "error: %s\n", cerr);
      return GTL_EXIT_RUNTIME;
    }
  }
  if (moe_layout_build(c, &e->lay)) return GTL_EXIT_RUNTIME;
  const size_t kv = (size_t)c->L * e->B * c->H_kv * e->max_len * c->head_dim;
  e->d_w = (__nv_bfloat16 *)gtl_malloc(e->lay.numel * 2, "weights (bf16)");
  e->d_kc = (float *)gtl_malloc(kv * 4, "K cache (fp32, max length)");
  e->d_vc = (float *)gtl_malloc(kv * 4, "V cache (fp32, max length)");
  e->d_logits = (float *)gtl_guarded_alloc(&e->g_logits, sizeof(float) * V * e->B, "logits [B][V] fp32");
  e->h_logits = (float *)gtl_malloc_pinned(sizeof(float) * V * e->B, "logits on the host");
  e->h_tokens = (int *)calloc((size_t)e->B, sizeof(int));
  for (int i = 0; i < ST_COUNT; i++) e->nv_stage[i] = gtl_nvtx_name(stage_name[i]);
  e->nv_step = gtl_nvtx_name("decode.step");
  e->nv_layer = gtl_nvtx_name("layer");
  struct timespec t0, t1;
  clock_gettime(CLOCK_MONOTONIC, &t0);
  if (model) weights_load(e, &ck);
  else weights_synthetic(e, ctx->args.seed);
  clock_gettime(CLOCK_MONOTONIC, &t1);
  const double load_s = (t1.tv_sec - t0.tv_sec) + 1e-9 * (t1.tv_nsec - t0.tv_nsec);
  layer_setup(e);
  gtl_phase_pop();

  char workload[160], notes[2048], how[160];
  snprintf(workload, sizeof workload, "%s_B%d_P%lld_G%lld", model ? "hf" : c->name, e->B, (long long)prompt, (long long)gen);
  if (model)
    snprintf(how, sizeof how, "loaded through ch05's ring loader (%d file(s), %s experts%s)", ck.n_files,
             ck.fused ? "fused v5" : "per-expert", ck.n_f32 || ck.n_f16 ? ", F16/F32 converted to bf16 on the GPU" : "");
  else
    snprintf(how, sizeof how, "generated on the GPU from the seed (one fill kernel per tensor)");
  const double act = (double)moe_params_active(c), roof_b1 = ctx->ceil.read_gbps * 1e9 / moe_step_bytes(c, 1, 0, 2, 2);
  snprintf(notes, sizeof notes,
           "%s\nmodel %s%s: %s, L=%d D=%d H=%d/%d x %d E=%d top_k=%d F=%d V=%d%s%s%s; %.2fB params "
           "(%.1f GB bf16), %.2fB active per token\nweights %s in %.2f s; KV cache fp32 [L][B][H_kv][%d][%d], "
           "%.1f MB\nroofline: bf16 weights + bf16 KV (moe_step_bytes); batch 1, weights only: %.0f tok/s "
           "at the read ceiling (%.0f GB/s)",
           adds, model ? model : c->name, model ? "" : " (seeded, no disk round trip)",
           c->arch == MOE_ARCH_QWEN3 ? "Qwen3-MoE" : "Mixtral", c->L, c->D, c->H, c->H_kv, c->head_dim, c->E,
           c->top_k, c->F, c->V, c->qk_norm ? ", q/k norm" : "", c->norm_topk_prob ? ", top-k renormalized" : "",
           c->tie_embeddings ? ", tied lm_head" : "", moe_params_total(c) / 1e9, moe_params_total(c) * 2 / 1e9,
           act / 1e9, how, load_s, e->max_len, c->head_dim, kv * 8 / 1e6, roof_b1, ctx->ceil.read_gbps);
  gtl_report_header(ctx, workload, notes);

  GtlResult r;
  gtl_result_init(&r, ctx, "bf16", workload);
  r.is_lab = 1;
  r.batch = e->B;
  r.ref = "cpu_double";
  r.bound = GTL_BOUND_READ;
  int rc = -1;
  double top1 = NAN;
  if (ctx->args.verify) {
    const size_t bad = weights_check(e, model ? &ck : NULL, ctx->args.seed);
    int *seq = (int *)malloc(sizeof(int) * e->B * check);
    for (int b = 0; b < e->B; b++)
      for (int p = 0; p < check; p++)
        seq[(size_t)b * check + p] = n_ids ? ids[p] : (int)gtl_uniform_u32(ctx->args.seed ^ 0xC4ECull, (uint64_t)b * 65536 + p, (uint32_t)V);
    top1 = engine_validate(e, seq, (int)check, (int)check_rows, dump, &r);
    free(seq);
    if (bad) r.err.pass = 0;
    if (!ctx->args.json)
      printf("# validate: %lld teacher-forced positions x %lld sequences vs CPU reference: rel_l2 %.2e, "
             "top-1 agreement %.1f%%, weights check %s -> %s\n",
             (long long)check, (long long)check_rows, r.err.rel_l2, 100 * top1, bad ? "FAILED" : "ok",
             r.err.pass ? "PASS" : "FAIL");
    if (!r.err.pass) {  // never time a wrong engine
      gtl_report_row(ctx, &r);
      rc = gtl_report_finish(ctx, &r);
    }
  }
  gtl_result_extra(&r, "top1_agreement", top1);
  if (rc < 0) {
    const EngineRun run = {prompt, gen, stage_steps, temperature, top_p, n_ids ? ids : NULL};
    rc = engine_generate(e, &run, &r);
  }

  layer_teardown(e);
  GTL_CUDA(cudaFree(e->d_w));
  GTL_CUDA(cudaFree(e->d_kc));
  GTL_CUDA(cudaFree(e->d_vc));
  GTL_CUDA(cudaFreeHost(e->h_logits));
  gtl_guarded_free(&e->g_logits);
  if (model) moe_ckpt_close(&ck);
  moe_layout_free(&e->lay);
  free(e->h_tokens);
  free(ids);
  gtl_end(ctx);
  free(e);
  return rc;
}
