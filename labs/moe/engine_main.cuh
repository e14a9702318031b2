// engine_main.cuh — part of engine.cuh (included at its end): the generation loop (prompt,
// timed decode steps, instrumented steps, report) and engine_main, the program.
#pragma once
#include "engine.cuh"

typedef struct {
  int64_t prompt, gen, stage_steps;
  double temperature, top_p;
  const int *ids;  // the prompt of every sequence, or NULL: seeded ids
} EngineRun;

// ---- the step as a CUDA graph (LayerOps.graph) ------------------------------------------
// One decode step (every stage, the device sampler, the token advance) recorded on e->s
// into an executable graph; nothing runs. The stages must never synchronize and must read
// tokens and positions from a.d_tok / a.d_pos: the host's e->pos is baked in at capture
// and is only an NVTX label afterwards. The layer's graph_edit (if any) changes the graph
// before it is instantiated; *edited: the count it returned (0 without one). *nodes: the
// graph's node count. Errors exit 3.
static inline cudaGraphExec_t engine_graph_capture(Engine *e, EngineSampler *sm, size_t *nodes, int *edited) {
  cudaGraph_t g;
  cudaGraphExec_t x;
  GTL_CUDA(cudaStreamBeginCapture(e->s, cudaStreamCaptureModeThreadLocal));
  engine_step(e, 0);
  engine_sample(e, sm, -1);  // device sampler: the history index comes from a.d_pos
  GTL_CUDA(cudaStreamEndCapture(e->s, &g));
  GTL_CUDA(cudaGraphGetNodes(g, NULL, nodes));
  *edited = e->ops.graph_edit ? e->ops.graph_edit(e, g) : 0;
  GTL_CUDA(cudaGraphInstantiate(&x, g, 0));
  GTL_CUDA(cudaGraphUpload(x, e->s));
  GTL_CUDA(cudaGraphDestroy(g));
  return x;
}

// Replay against eager on the same step: from the same tokens and positions the step runs
// eagerly, then the graph replays it, the logits poisoned before each. Same kernels, same
// order, so they must agree bit for bit; a difference is a stage that read host state
// frozen at capture. Both write the same K/V row and history entry, and the tokens and
// positions are put back after each, so the run continues from the step as if unchecked.
// Returns how many of the B·V logits differ.
static inline size_t engine_graph_check(Engine *e, EngineSampler *sm, cudaGraphExec_t x) {
  const size_t n = (size_t)e->cfg.V * e->B, tb = sizeof(int32_t) * 2 * e->B;
  int32_t *saved = (int32_t *)gtl_malloc(tb, "tokens and positions (graph check)");
  float *eager = (float *)malloc(sizeof(float) * n);
  GTL_CUDA(cudaMemcpyAsync(saved, e->a.d_tok, tb, cudaMemcpyDeviceToDevice, e->s));
  for (int replay = 0; replay < 2; replay++) {
    gtl_poison(e->a.d_logits, sizeof(float) * n, e->s);
    if (replay) {
      GTL_CUDA(cudaGraphLaunch(x, e->s));
    } else {
      engine_step(e, 0);
      engine_sample(e, sm, -1);
    }
    GTL_CUDA(cudaMemcpyAsync(e->a.h_logits, e->a.d_logits, sizeof(float) * n, cudaMemcpyDeviceToHost, e->s));
    GTL_CUDA(cudaMemcpyAsync(e->a.d_tok, saved, tb, cudaMemcpyDeviceToDevice, e->s));
    GTL_CUDA(cudaStreamSynchronize(e->s));
    if (!replay) memcpy(eager, e->a.h_logits, sizeof(float) * n);
  }
  size_t diff = 0;
  for (size_t k = 0; k < n; k++) diff += memcmp(eager + k, e->a.h_logits + k, sizeof(float)) != 0;
  free(eager);
  GTL_CUDA(cudaFree(saved));
  return diff;
}

static inline int engine_generate(Engine *e, const EngineRun *run, GtlResult *r) {
  GtlCtx *ctx = &e->ctx;
  const MoeConfig *c = &e->cfg;
  const int V = c->V, B = e->B, warmup = ctx->args.warmup, P = (int)run->prompt, gen = (int)run->gen;
  const int n_steps = (int)(run->gen + run->stage_steps), timed = gen - 1 - warmup;
  const size_t stride = (size_t)n_steps + 1;
  int *prompt = (int *)malloc(sizeof(int) * B * P), *out = (int *)malloc(sizeof(int) * B * stride);
  EngineSampler sm = {run->temperature, run->top_p, ctx->args.seed ^ 0x5A3Dull, out, NULL, (int)stride,
                      (double *)malloc(sizeof(double) * V), P - 1};
  if (e->ops.sample) {  // poisoned (-1): the slots no step writes are copied back too, never read
    sm.d_hist = (int32_t *)gtl_malloc(sizeof(int32_t) * B * stride, "token history");
    GTL_CUDA(cudaMemsetAsync(sm.d_hist, 0xFF, sizeof(int32_t) * B * stride, e->s));
  }
  for (int b = 0; b < B; b++)
    for (int p = 0; p < P; p++)
      prompt[(size_t)b * P + p] =
          run->ids ? run->ids[p] : (int)gtl_uniform_u32(ctx->args.seed ^ 0x9807ull, (uint64_t)b * 65536 + p, (uint32_t)V);

  // Prompt: one untimed step per token; its last logits give the first generated token.
  struct timespec t0, t1;
  clock_gettime(CLOCK_MONOTONIC, &t0);
  for (int p = 0; p < P; p++) {
    engine_set_tokens(e, prompt + p, P, p);
    engine_step(e, 1);
  }
  engine_sample(e, &sm, 0);
  if (e->ops.sample) GTL_CUDA(cudaStreamSynchronize(e->s));  // prefill_s includes the GPU work (the host path waited in engine_sample)
  clock_gettime(CLOCK_MONOTONIC, &t1);
  const double prefill_s = (t1.tv_sec - t0.tv_sec) + 1e-9 * (t1.tv_nsec - t0.tv_nsec);

  // Graph layers: the step captured once for this batch and checked against an eager run
  // of the first decode step; every decode step up to gen replays it (warm-up included),
  // the instrumented steps run eagerly (their event pairs give the stage breakdown).
  cudaGraphExec_t gx = NULL;
  size_t g_nodes = 0;
  int g_edited = 0;
  if (e->ops.graph) {
    e->pos = P;
    gx = engine_graph_capture(e, &sm, &g_nodes, &g_edited);
    const size_t diff = engine_graph_check(e, &sm, gx);
    gtl_result_extra(r, "graph_nodes", (double)g_nodes);
    if (e->ops.graph_edit) gtl_result_extra(r, "graph_pdl_edges", (double)g_edited);
    if (diff) {
      fprintf(stderr, "error: the graph's replay and the eager step differ in %zu of %zu logits\n", diff,
              (size_t)V * B);
      r->err.pass = 0;
      gtl_report_row(ctx, r);
      GTL_CUDA(cudaGraphExecDestroy(gx));
      free(prompt);
      free(out);
      free(sm.scratch);
      GTL_CUDA(cudaFree(sm.d_hist));
      gtl_report_finish(ctx, r);
      return GTL_EXIT_FAIL;  // with --no-verify too
    }
  }

  // Decode: step i consumes token i-1 and yields token i. Timed: warmup < i < gen, one
  // event pair each (the second is recorded after the host has sampled: the stream is
  // idle then, so it is reached at once; a device sampler queues it behind the step).
  // Steps gen … gen+stage_steps-1 are instrumented.
  cudaEvent_t *ev = (cudaEvent_t *)malloc(sizeof(cudaEvent_t) * 2 * timed);
  for (int i = 0; i < 2 * timed; i++) GTL_CUDA(cudaEventCreate(&ev[i]));
  const int active = c->E < B * c->top_k ? c->E : B * c->top_k;
  e->cap_ev = 2 * (c->L * (6 + 4 * active) + 8);  // grows no further: stage_begin collects when full
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
    if (e->ops.sample) e->pos = P + i - 1;  // tokens and positions advanced on the device
    else engine_set_tokens(e, out + i - 1, stride, P + i - 1);
    if (is_timed) GTL_CUDA(cudaEventRecord(ev[2 * k], e->s));
    if (gx && !e->profile) {
      gtl_nvtx_push_payload(e->nv_step, e->pos);
      GTL_CUDA(cudaGraphLaunch(gx, e->s));
      gtl_nvtx_pop();
    } else {
      engine_step(e, !e->ops.sample);
      engine_sample(e, &sm, i);
    }
    if (is_timed) {
      GTL_CUDA(cudaEventRecord(ev[2 * k + 1], e->s));
      ctx_sum += e->pos;
    }
    if (i == gen - 1) e->experts_read = e->experts_read_n = 0;  // count the instrumented steps
  }
  if (n_steps == gen) gtl_phase_pop();
  stage_collect(e);
  if (sm.d_hist) GTL_CUDA(cudaMemcpy(out, sm.d_hist, sizeof(int32_t) * B * stride, cudaMemcpyDeviceToHost));
  float *ms = (float *)malloc(sizeof(float) * timed);
  for (int k = 0; k < timed; k++) GTL_CUDA(cudaEventElapsedTime(&ms[k], ev[2 * k], ev[2 * k + 1]));
  int rc = GTL_EXIT_PASS;
  if (gtl_stats_compute(ms, timed, &r->st)) {
    fprintf(stderr, "error: a step time was not finite\n");
    rc = GTL_EXIT_RUNTIME;
  }
  r->tokens_per_s = B * 1000.0 / r->st.median;
  r->ms_per_token = r->st.median;
  r->bytes = moe_step_bytes_fmt(c, B, ctx_sum / timed, e->ops.expert_fmt, e->ops.dense_fmt, e->ops.kv_bytes);
  const double model_experts = moe_expected_experts(c->E, c->top_k, B);
  if (rc == GTL_EXIT_PASS && !ctx->args.json) {
    printf("# prompt: %d tokens x %d sequences, one step per token, %.2f s (untimed)\n", P, B, prefill_s);
    printf("# decode: %d timed steps after %d warm-up; %.1f tokens/s (batch %d), ms/token p50 %.3f p95 %.3f "
           "p99 %.3f\n", timed, warmup, r->tokens_per_s, B, r->st.median, r->st.p95, r->st.p99);
    printf("# bytes per token %.4f GB (step %.4f GB: weights with E(1-(1-k/E)^B) = %.2f experts per layer, "
           "KV at %.0f positions); %.2f%% of the HBM roofline (%.0f GB/s read ceiling)\n",
           r->bytes / B / 1e9, r->bytes / 1e9, model_experts, ctx_sum / timed + 1, gtl_result_pct(r, &ctx->ceil),
           ctx->ceil.read_gbps);
    if (gx)
      printf("# graph: steps 1..%d replay one CUDA graph of the step (%zu nodes, captured once for batch %d%s; its "
             "logits equal the eager step's bit for bit); the instrumented steps run eagerly\n", gen - 1, g_nodes, B,
             e->ops.graph_edit ? (e->pdl ? ", programmatic edges: see below" : ", --pdl=0: full edges only") : "");
    if (gx && e->ops.graph_edit && e->pdl)
      printf("# graph: %d programmatic kernel-to-kernel edges (--pdl=%d: port %s; --pdl=0: RoPE's alone)\n", g_edited,
             e->pdl, e->pdl == 2 ? "launch completion" : "programmatic, each kernel's trigger");
    if (e->experts_read_n > 0)
      printf("# experts read per layer in the instrumented steps: %.2f (model %.2f)\n",
             e->experts_read / e->experts_read_n, model_experts);
    double sum = 0, bytes[ST_COUNT], bsum = 0;
    for (int s = 0; s < ST_COUNT; s++) sum += e->stage_ms[s];
    // the model's bytes at the instrumented steps' context, with the experts they read
    engine_stage_bytes(e, P + gen - 1 + (run->stage_steps - 1) / 2.0,
                       e->experts_read_n > 0 ? e->experts_read / e->experts_read_n : model_experts, bytes);
    if (run->stage_steps > 0) {
      printf("# stage breakdown: mean per step over %lld instrumented steps (CUDA event pairs; host work "
             "inside a stage counts); bytes: the roofline model's weights + KV\n", (long long)run->stage_steps);
      for (int s = 0; s < ST_COUNT; s++) {
        const double ms = e->stage_ms[s] / run->stage_steps;
        bsum += bytes[s];
        printf("#   %-16s %10.3f ms %6.1f%% %10.2f MB", stage_name[s], ms, 100 * e->stage_ms[s] / sum, bytes[s] / 1e6);
        if (bytes[s] > 0 && ms > 0) printf(" %8.1f GB/s\n", bytes[s] / ms / 1e6);
        else printf("\n");
      }
      printf("#   %-16s %10.3f ms (timed step median %.3f ms) %10.2f MB %8.1f GB/s\n", "sum", sum / run->stage_steps,
             r->st.median, bsum / 1e6, sum > 0 ? bsum / (sum / run->stage_steps) / 1e6 : 0.0);
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
  free(sm.scratch);
  if (sm.d_hist) GTL_CUDA(cudaFree(sm.d_hist));
  if (gx) GTL_CUDA(cudaGraphExecDestroy(gx));
  return rc;
}

// Allocate `bytes` on the device or exit 3 (gtl_malloc's message names `what`).
static inline void *engine_dev(size_t bytes, const char *what) { return gtl_malloc(bytes, what); }

// The engine's activations (EngineActs) for B sequences.
static inline void engine_acts_alloc(Engine *e) {
  const MoeConfig *c = &e->cfg;
  EngineActs *a = &e->a;
  const size_t B = (size_t)e->B, Q = (size_t)c->H * c->head_dim, KV = (size_t)c->H_kv * c->head_dim;
  a->d_tok = (int32_t *)engine_dev(B * 2 * 4, "tokens and positions");
  a->d_pos = a->d_tok + B;
  a->h_tok = (int32_t *)calloc(B * 2, sizeof(int32_t));
  const size_t ws_off = (B * 4 + 255) & ~(size_t)255;  // the sampler's scratch after the tokens, aligned
  a->d_next = (int32_t *)engine_dev(ws_off + B * kEngineSampleWs, "sampled tokens and the sampler's scratch");
  a->d_sample_ws = (char *)a->d_next + ws_off;
  GTL_CUDA(cudaMemset(a->d_sample_ws, 0, B * kEngineSampleWs));
  a->d_x = (float *)engine_dev(B * c->D * 4, "x");
  a->d_xn = (float *)engine_dev(B * c->D * 4, "xn");
  a->d_q = (float *)engine_dev(B * Q * 4, "q");
  a->d_att = (float *)engine_dev(B * Q * 4, "attention out");
  a->d_k = (float *)engine_dev(B * KV * 4, "k");
  a->d_v = (float *)engine_dev(B * KV * 4, "v");
  a->d_router = (float *)engine_dev(B * c->E * 4, "router logits");
  a->d_topk_idx = (int32_t *)engine_dev(B * c->top_k * 4, "top-k experts");
  a->d_topk_w = (float *)engine_dev(B * c->top_k * 4, "top-k weights");
  a->h_topk_idx = (int32_t *)gtl_malloc_pinned(B * c->top_k * 4, "top-k experts (host)");
  a->h_topk_w = (float *)gtl_malloc_pinned(B * c->top_k * 4, "top-k weights (host)");
  a->d_logits = (float *)gtl_guarded_alloc(&e->g_logits, sizeof(float) * c->V * B, "logits [B][V] fp32");
  a->h_logits = (float *)gtl_malloc_pinned(sizeof(float) * c->V * B, "logits on the host");
}

static inline void engine_acts_free(Engine *e) {
  EngineActs *a = &e->a;
  void *d[] = {a->d_tok, a->d_next, a->d_x, a->d_xn, a->d_q, a->d_att, a->d_k, a->d_v, a->d_router,
               a->d_topk_idx, a->d_topk_w};
  for (size_t i = 0; i < sizeof d / sizeof d[0]; i++) GTL_CUDA(cudaFree(d[i]));
  GTL_CUDA(cudaFreeHost(a->h_topk_idx));
  GTL_CUDA(cudaFreeHost(a->h_topk_w));
  GTL_CUDA(cudaFreeHost(a->h_logits));
  gtl_guarded_free(&e->g_logits);
  free(a->h_tok);
}

// The default KV cache: fp32, contiguous, engine_kv_len positions per sequence and layer.
static inline void engine_kv_alloc(Engine *e) {
  const MoeConfig *c = &e->cfg;
  const size_t n = engine_kv_layer(e, c->L);
  e->kv.dtype = KV_F32;
  e->kv.k = engine_dev(n * 4, "K cache (fp32, max length)");
  e->kv.v = engine_dev(n * 4, "V cache (fp32, max length)");
  e->kv.bytes = n * 8;
}

/** The lab program: parse the flags, build the model, validate the layer `ops` against the
 *  CPU reference, time its decode steps and report (docs/contract.md). Returns the exit
 *  code: 0 PASS, 1 validation FAIL, 2 usage, 3 runtime error, 77 no GPU. */
static inline int engine_main(int argc, char **argv, const LayerOps *ops) {
  const char *target = ops->target;
  const char *preset = NULL, *model = NULL, *write_dir = NULL, *ids_arg = NULL, *ids_file = NULL,
             *dump = NULL, *check_dir = NULL, *weights = NULL;
  int force = 0;
  static char preset_help[256];
  snprintf(preset_help, sizeof preset_help, "%s (default %s)", moe_config_preset_names(),
           ops->default_preset ? ops->default_preset : "gptoss20b");
  int64_t batch = 1, prompt = -1, gen = -1, check = -1, check_rows = -1, stage_steps = 4, pdl = INT64_MIN;  // pdl: not given
  double temperature = 0, top_p = 1;
  GtlOpt opts[] = {
      {"preset", GTL_OPT_STR, &preset, preset_help},
      {"model", GTL_OPT_STR, &model, "DIR: a Hugging Face checkpoint (Mixtral, Qwen3-MoE, gpt-oss) instead of a preset; only read"},
      {"check-model", GTL_OPT_STR, &check_dir, "DIR: check a checkpoint's config, index and every tensor's dtype, shape and bytes on the host (no GPU), exit"},
      {"write-checkpoint", GTL_OPT_STR, &write_dir, "DIR: write the preset's seeded checkpoint (HF layout) into a new or empty folder, exit"},
      {"force", GTL_OPT_FLAG, &force, "with --write-checkpoint: write into a folder that is not empty"},
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
      {"dump-logits", GTL_OPT_STR, &dump, "PATH: the checked logits of sequence 0, float32 [P][V]"},
      {"weights", GTL_OPT_STR, &weights, "bf16|fp8|mxfp4: weight storage, in a layer that offers a choice (labs/05_precision)"},
      {"pdl", GTL_OPT_INT, &pdl, "0|1|2: the replayed step's dependent kernels with full (0) or programmatic edges (1: "
                                 "after the previous kernel's trigger, 2: once it has launched; default: the layer's), "
                                 "in a layer that edits its graph (labs/04_graphs on)"}};
  const int n_opts = (int)(sizeof opts / sizeof opts[0]);
  Engine *e = (Engine *)calloc(1, sizeof(Engine));
  e->ops = *ops;
  GtlCtx *ctx = &e->ctx;
  gtl_parse(ctx, target, "decode", argc, argv, opts, n_opts, 2, 0, GTL_L2_WARM);
  if (ctx->args.iters != 0) gtl_usage_fail(ctx, "--iters: a lab times its --gen decode steps; use --gen");
  if (preset && model) gtl_usage_fail(ctx, "give --preset or --model, not both");
  if (weights && !ops->weight_fmts) gtl_usage_fail(ctx, "--weights: %s stores %s weights only", target, ops->dtype);
  e->weights = weights;
  if (pdl != INT64_MIN && !ops->graph_edit) gtl_usage_fail(ctx, "--pdl: %s does not edit a graph of its step", target);
  if (pdl != INT64_MIN && (pdl < 0 || pdl > 2)) gtl_usage_fail(ctx, "--pdl=%lld: need 0, 1 or 2", (long long)pdl);
  e->pdl = pdl == INT64_MIN ? -1 : (int)pdl;  // -1: the layer's default (its graph_edit stores the one it used)
  if (!preset) preset = ops->default_preset ? ops->default_preset : "gptoss20b";
  if (!model && moe_config_preset(preset, &e->cfg))
    gtl_usage_fail(ctx, "--preset=%s: not one of %s", preset, moe_config_preset_names());
  if (check_dir) {  // host only: the loader's own pass over the folder, no GPU needed
    if (model || write_dir) gtl_usage_fail(ctx, "--check-model stands alone: drop --model / --write-checkpoint");
    MoeCheckpoint ck;
    char cerr[2048];
    if (moe_ckpt_open(check_dir, &ck, cerr, sizeof cerr)) {
      fprintf(stderr, "error: %s\n", cerr);
      free(e);
      return GTL_EXIT_RUNTIME;
    }
    const MoeConfig *cc = &ck.lay.cfg;
    printf("%s: OK — %s, L=%d D=%d E=%d top_k=%d V=%d; %d file(s), %d tensors mapped (%d bf16, %d f16, "
           "%d f32, %d strided or MXFP4), %d unused; %llu parameters\n",
           check_dir, moe_arch_name(cc->arch), cc->L, cc->D, cc->E, cc->top_k, cc->V, ck.n_files,
           ck.lay.n, ck.n_bf16, ck.n_f16, ck.n_f32, ck.n_strided, ck.n_unused,
           (unsigned long long)moe_params_total(cc));
    moe_ckpt_close(&ck);
    free(e);
    return GTL_EXIT_PASS;
  }
  if (force && !write_dir) gtl_usage_fail(ctx, "--force goes with --write-checkpoint");
  if (write_dir) {  // host only: no GPU needed
    if (model) gtl_usage_fail(ctx, "--write-checkpoint writes a preset; drop --model");
    char err[1024];
    if (moe_ckpt_dir_writable(write_dir, force, err, sizeof err)) {
      fprintf(stderr, "error: %s\n", err);
      free(e);
      return GTL_EXIT_USAGE;
    }
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
  e->temperature = temperature;
  e->top_p = top_p;
  e->kv.max_len = (int)(prompt + gen + stage_steps > check ? prompt + gen + stage_steps : check);
  if (ops->configure && ops->configure(e, err, sizeof err)) gtl_usage_fail(ctx, "%s", err);
  ops = &e->ops;  // configure may pick the layer's weight formats, dtype and tolerances
  ctx->args.iters = (int)(gen - 1 - warmup);  // the timed decode steps, for the report

  gtl_open(ctx);
  e->s = (cudaStream_t)ctx->stream;
  if (e->ops.graph && !e->ops.sample) {  // the host sampler synchronizes every step (noted once a GPU is found)
    fprintf(stderr, "note: %s: no CUDA graph with the host sampler (--temperature > 0): every step runs eagerly\n",
            target);
    e->ops.graph = 0;
  }
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
  e->d_w = (__nv_bfloat16 *)gtl_malloc(e->lay.numel * 2, "weights (bf16)");
  if (ops->kv_alloc) ops->kv_alloc(e);
  else engine_kv_alloc(e);
  engine_acts_alloc(e);
  for (int i = 0; i < ST_COUNT; i++) e->nv_stage[i] = gtl_nvtx_name(stage_name[i]);
  e->nv_step = gtl_nvtx_name("decode.step");
  e->nv_layer = gtl_nvtx_name("layer");
  struct timespec t0, t1;
  clock_gettime(CLOCK_MONOTONIC, &t0);
  if (model) weights_load(e, &ck);
  else weights_synthetic(e, ctx->args.seed);
  clock_gettime(CLOCK_MONOTONIC, &t1);
  const double load_s = (t1.tv_sec - t0.tv_sec) + 1e-9 * (t1.tv_nsec - t0.tv_nsec);
  if (ops->setup) ops->setup(e);
  gtl_phase_pop();

  char workload[160], notes[2048], how[256];
  snprintf(workload, sizeof workload, "%s_B%d_P%lld_G%lld", model ? "hf" : c->name, e->B, (long long)prompt, (long long)gen);
  if (model)
    snprintf(how, sizeof how, "loaded through ch05's ring loader (%d file(s), %s experts%s; %d strided and %d "
             "MXFP4 tensors decoded on the host)", ck.n_files, ck.fused ? "fused v5" : "per-expert",
             ck.n_f32 || ck.n_f16 ? ", F16/F32 converted to bf16 on the GPU" : "", ck.n_strided, ck.n_mxfp4);
  else
    snprintf(how, sizeof how, "generated on the GPU from the seed (one fill kernel per tensor)");
  const double act = (double)moe_params_active(c), roof_b1 = ctx->ceil.read_gbps * 1e9 / moe_step_bytes_fmt(c, 1, 0, ops->expert_fmt, ops->dense_fmt, ops->kv_bytes);
  snprintf(notes, sizeof notes,
           "%s\nmodel %s%s: %s, L=%d D=%d H=%d/%d x %d E=%d top_k=%d F=%d V=%d%s%s%s; %.2fB params "
           "(%.1f GB bf16), %.2fB active per token\nweights %s in %.2f s; KV cache %s %s, %d positions, "
           "%.1f MB\nroofline: %s weights, %d-byte KV (moe_step_bytes_fmt); batch 1, weights only: %.0f tok/s "
           "at the read ceiling (%.0f GB/s)",
           ops->adds, model ? model : c->name, model ? "" : " (seeded, no disk round trip)",
           moe_arch_name(c->arch), c->L, c->D, c->H, c->H_kv, c->head_dim, c->E,
           c->top_k, c->F, c->V, c->qk_norm ? ", q/k norm" : "", c->norm_topk_prob ? ", top-k renormalized" : "",
           c->tie_embeddings ? ", tied lm_head" : "", moe_params_total(c) / 1e9, moe_params_total(c) * 2 / 1e9,
           act / 1e9, how, load_s, e->kv.dtype == KV_F32 ? "fp32" : e->kv.dtype == KV_BF16 ? "bf16" : "fp8 e4m3",
           e->kv.paged ? "paged" : "contiguous", e->kv.max_len, e->kv.bytes / 1e6, ops->dtype, ops->kv_bytes, roof_b1,
           ctx->ceil.read_gbps);
  gtl_report_header(ctx, workload, notes);

  GtlResult r;
  gtl_result_init(&r, ctx, ops->dtype, workload);
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

  if (ops->teardown) ops->teardown(e);
  GTL_CUDA(cudaFree(e->d_w));
  GTL_CUDA(cudaFree(e->kv.k));
  GTL_CUDA(cudaFree(e->kv.v));
  if (e->kv.d_block_table) GTL_CUDA(cudaFree(e->kv.d_block_table));
  engine_acts_free(e);
  if (model) moe_ckpt_close(&ck);
  moe_layout_free(&e->lay);
  free(ids);
  gtl_end(ctx);
  free(e);
  return rc;
}
