// serve.cuh — ch16's request trace, decode step, static-batching scheduler and the driver
// shared by baseline.cu and optimized.cu, so that the two differ only in their scheduler
// and KV layout.
//
// The trace (seeded, --seed): --requests (512) requests; prompt length P = shared prefix
// + U{64 … 448} tokens; output length n = min(cap, 1 + Geometric(1/mean)) with mean 128
// and cap 512 (--mean-out, --max-out): a long tail, so a request's worst case is ~4x its
// typical length. All arrive at t = 0, or with --arrival=poisson:RATE as a Poisson process
// of RATE requests/s. With --shared-prefix=N every prompt starts with the same N tokens.
// The KV budget (--kv-budget-mb, 64 MiB = 32768 tokens of 2 KB) is the same for both.
//
// One decode step for B sequences (serve_step, serve_model.cuh's model): upload the step's
// metadata (one copy), prefill the sequences that join (fill kernel), embed, append K/V,
// ch18's attention (1 split: the keys of a sequence are cut the same way whatever the
// batch, so its output is bit-identical under any schedule), ch08's GEMV, argmax. The host
// never waits for a step's tokens: output lengths come from the trace (no stop token), and
// a ring of SERVE_RING staging buffers lets it run up to SERVE_RING steps ahead.
//
// Timed: one whole trace served (median over --iters). Metric: generated tokens / s.
#pragma once
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "serve_model.cuh"

#define SERVE_RING 4         // staging buffers: how far the host may run ahead
#define SERVE_REF_REQS 6     // requests the CPU reference follows
#define SERVE_REF_TOKENS 16  // tokens of each it checks
#define SERVE_MARGIN 0.02    // a token passes when its reference logit >= max - this · rms
#define SERVE_CHECK_STEP 24  // the step whose attention output is compared with contiguous

typedef struct {
  int32_t P, n_out;  // prompt tokens, tokens to generate
  double arrival_s;
} ServeReq;

typedef struct {  // one step's metadata, host side (a pinned ring slot)
  int B, n_pf, rows, span;  // sequences, prefill entries, table rows used, longest prefill
  int32_t *seq_lens, *req, *pos, *out_idx, *pf, *tables;
} ServeBatch;

typedef struct Server {
  GtlCtx *ctx;
  uint64_t seed;
  int n_req, max_prompt, max_out, shared_prefix;
  double rate;                    // requests/s, 0: all at t = 0
  ServeReq *req;
  int32_t *h_prompt;              // [n_req][max_prompt]
  size_t budget_bytes;
  int64_t budget_tokens;
  int table_stride, max_table;    // this run's table width; the widest a run may use
  __nv_bfloat16 *d_kpool, *d_vpool, *d_W, *d_q, *d_attn, *d_knew, *d_vnew;
  float *d_sinks, *d_logits;
  int32_t *d_meta, *h_meta[SERVE_RING], *d_gen;
  ServeTokens tok;
  cudaEvent_t ev_start, *ev;
  int cap_ev;
  double t0;                      // host clock at ev_start, seconds
  // per run
  int64_t steps, peak, preemptions, tokens, prefill_tokens;
  double sum_used, sum_alloc, sum_kv_tokens, peak_saved_tokens, sum_saved;
  int64_t *first_step, *last_step;  // [n_req]
  // validation hook: compare paged and contiguous attention at this step (-1: off)
  int check_step, check_done, check_exact_bad;
  GtlErr check_err;
} Server;

typedef int (*ServeRunFn)(Server *sv);
/** The variant's scheduler: serve the whole trace once on sv->ctx->stream (the step's
 *  work enqueued, not waited for). Returns 0, or -1 on an allocator inconsistency. */
int serve_run(Server *sv);

static double serve_clock(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec + ts.tv_nsec * 1e-9;
}
static double serve_now(const Server *sv) { return serve_clock() - sv->t0; }
static void serve_wait_until(const Server *sv, double t) {
  while (serve_now(sv) < t) {}
}
static int serve_arrived(const Server *sv, int r) { return sv->req[r].arrival_s <= serve_now(sv); }

// Start a run: table width, counters, the start event the step times are measured from.
static void serve_run_begin(Server *sv, int table_stride) {
  sv->table_stride = table_stride;
  sv->steps = sv->peak = sv->preemptions = sv->tokens = sv->prefill_tokens = 0;
  sv->sum_used = sv->sum_alloc = sv->sum_kv_tokens = sv->peak_saved_tokens = sv->sum_saved = 0;
  for (int r = 0; r < sv->n_req; r++) sv->first_step[r] = sv->last_step[r] = -1;
  GTL_CUDA(cudaEventRecord(sv->ev_start, sv->ctx->stream));
  GTL_CUDA(cudaEventSynchronize(sv->ev_start));
  sv->t0 = serve_clock();
}

// The host slot of the next step (waits until the GPU is done with its last use).
static ServeBatch serve_batch_begin(Server *sv) {
  const int64_t k = sv->steps;
  if (k >= SERVE_RING) GTL_CUDA(cudaEventSynchronize(sv->ev[k - SERVE_RING]));
  int32_t *m = sv->h_meta[k % SERVE_RING];
  const int M = SERVE_MAX_BATCH;
  ServeBatch b = {0, 0, 0, 0, m, m + M, m + 2 * M, m + 3 * M, m + 4 * M, m + 8 * M + 4};
  return b;
}
// Add sequence r producing its token out_idx; table: its blocks (or region). Returns the row.
static int serve_batch_add(Server *sv, ServeBatch *b, int r, int out_idx, const int32_t *table, int n) {
  const int row = b->B++;
  b->req[row] = r;
  b->out_idx[row] = out_idx;
  b->pos[row] = sv->req[r].P - 1 + out_idx;
  b->seq_lens[row] = b->pos[row] + 1;
  memcpy(b->tables + (int64_t)row * sv->table_stride, table, sizeof(int32_t) * n);
  b->rows = b->B;
  return row;
}
// A table-only row after the sequences (e.g. a shared prefix being filled). Returns it.
static inline int serve_batch_table_row(Server *sv, ServeBatch *b, const int32_t *table, int n) {
  const int row = b->rows++;
  memcpy(b->tables + (int64_t)row * sv->table_stride, table, sizeof(int32_t) * n);
  return row;
}
// Fill positions [from, to) of table row `row` with request r's KV (prefill).
static void serve_batch_prefill(Server *sv, ServeBatch *b, int row, int r, int from, int to) {
  if (to <= from) return;
  int32_t *e = b->pf + 4 * b->n_pf++;
  e[0] = row, e[1] = r, e[2] = from, e[3] = to;
  b->span = to - from > b->span ? to - from : b->span;
  sv->prefill_tokens += to - from;
}

static void serve_check_attention(Server *sv, const ServeBatch *b, const AttnKvView *view);

/** Enqueue one decode step for batch b whose cache is described by view (its block_table
 *  is replaced by the step's device tables). used/alloc/saved: KV tokens in use, committed
 *  and saved by sharing, for the utilization figures. */
static void serve_step(Server *sv, ServeBatch *b, AttnKvView view, double used, double alloc, double saved) {
  cudaStream_t s = sv->ctx->stream;
  const int M = SERVE_MAX_BATCH, B = b->B, k = (int)sv->steps;
  const size_t n = 8 * (size_t)M + 4 + (size_t)b->rows * sv->table_stride;
  GTL_CUDA(cudaMemcpyAsync(sv->d_meta, b->seq_lens, n * 4, cudaMemcpyHostToDevice, s));
  const int32_t *d_lens = sv->d_meta, *d_req = d_lens + M, *d_pos = d_lens + 2 * M, *d_oi = d_lens + 3 * M;
  view.block_table = sv->d_meta + 8 * M + 4;
  view.table_stride = sv->table_stride;
  if (b->n_pf) {
    serve_prefill_kernel<<<dim3((b->span + 1) / 2, b->n_pf), 256, 0, s>>>(view, sv->d_kpool, sv->d_vpool,
                                                                        sv->d_meta + 4 * M, sv->tok);
    GTL_LAUNCH();
  }
  serve_embed_kernel<<<B, 256, 0, s>>>(d_req, d_pos, d_oi, sv->tok, sv->d_q, sv->d_knew, sv->d_vnew);
  GTL_LAUNCH();
  paged_kv_append_launch(&view, sv->d_kpool, sv->d_vpool, d_pos, sv->d_knew, sv->d_vnew, B, SERVE_H_KV, s);
  AttnDecodeArgs a = {sv->d_q, sv->d_attn, view, d_lens, sv->d_sinks, B, SERVE_H, SERVE_H_KV, 0, 0.125f};
  if (attn_splitkv_launch(&a, 1, NULL, s) != 0) exit(GTL_EXIT_RUNTIME);
  for (int b0 = 0; b0 < B; b0 += 8 * GEMV_MAX_MATS) {  // 8 tokens per matrix, 16 per launch
    GemvBatch g;
    memset(&g, 0, sizeof g);
    g.B = 8;  // rows past B are scratch (the buffers hold SERVE_MAX_BATCH rows)
    for (int t = b0; t < B && t < b0 + 8 * GEMV_MAX_MATS; t += 8)
      if (gemv_batch_add(&g, sv->d_W, sv->d_attn + (int64_t)t * SERVE_HID, sv->d_logits + (int64_t)t * SERVE_VOCAB,
                         SERVE_VOCAB, SERVE_HID))
        exit(GTL_EXIT_RUNTIME);
    gemv_warprow_launch(&g, s);
  }
  serve_argmax_kernel<<<B, 256, 0, s>>>(sv->d_logits, d_req, d_oi, sv->d_gen, sv->max_out);
  GTL_LAUNCH();
  if (k >= sv->cap_ev) {  // one completion event per step: TTFT and TPOT come from them
    const int cap = sv->cap_ev ? 2 * sv->cap_ev : 1024;
    sv->ev = (cudaEvent_t *)realloc(sv->ev, sizeof(cudaEvent_t) * cap);
    if (!sv->ev) exit(GTL_EXIT_RUNTIME);
    for (int i = sv->cap_ev; i < cap; i++) GTL_CUDA(cudaEventCreate(&sv->ev[i]));
    sv->cap_ev = cap;
  }
  GTL_CUDA(cudaEventRecord(sv->ev[k], s));
  if (sv->check_step >= 0 && !sv->check_done && k >= sv->check_step) serve_check_attention(sv, b, &view);
  for (int i = 0; i < B; i++) {
    const int r = b->req[i];
    if (b->out_idx[i] == 0 && sv->first_step[r] < 0) sv->first_step[r] = k;
    if (b->out_idx[i] == sv->req[r].n_out - 1) sv->last_step[r] = k;
    sv->sum_kv_tokens += b->seq_lens[i];
  }
  sv->tokens += B;
  sv->peak = B > sv->peak ? B : sv->peak;
  sv->sum_used += used, sv->sum_alloc += alloc, sv->sum_saved += saved;
  sv->peak_saved_tokens = saved > sv->peak_saved_tokens ? saved : sv->peak_saved_tokens;
  sv->steps++;
}

// ---- the baseline's scheduler: static batches over contiguous max-length regions ----------

/** Static batching: take the waiting requests in arrival order while their reservations
 *  (P + max_out tokens each, a contiguous region of the KV budget) fit; prefill them all,
 *  decode the batch until its longest request is done (finished ones leave the step, their
 *  regions stay reserved), then form the next batch. Cache layout: token-major regions
 *  [token][H_kv][64]; the one table entry per sequence is its region's first token. */
static int serve_run_static(Server *sv) {
  serve_run_begin(sv, 1);
  AttnKvView view;
  view.k = sv->d_kpool, view.v = sv->d_vpool, view.block_table = NULL, view.table_stride = 1;
  view.page_shift = SERVE_POS_BITS;  // one "page" spans any sequence
  view.page_stride = view.token_stride = (int64_t)SERVE_H_KV * ATTN_HEAD_DIM;
  view.head_stride = ATTN_HEAD_DIM;
  int32_t *region = (int32_t *)malloc(sizeof(int32_t) * sv->n_req);
  if (!region) return -1;
  for (int i = 0; i < sv->n_req;) {
    serve_wait_until(sv, sv->req[i].arrival_s);
    int64_t off = 0;
    int j = i, L = 0;
    while (j < sv->n_req && j - i < SERVE_MAX_BATCH && serve_arrived(sv, j) &&
           off + sv->req[j].P + sv->max_out <= sv->budget_tokens) {
      region[j] = (int32_t)off;
      off += sv->req[j].P + sv->max_out;
      L = sv->req[j].n_out > L ? sv->req[j].n_out : L;
      j++;
    }
    for (int k = 0; k < L; k++) {
      ServeBatch b = serve_batch_begin(sv);
      double used = 0;
      for (int r = i; r < j; r++) {
        if (sv->req[r].n_out <= k) continue;
        const int row = serve_batch_add(sv, &b, r, k, &region[r], 1);
        if (k == 0) serve_batch_prefill(sv, &b, row, r, 0, sv->req[r].P - 1);
        used += sv->req[r].P + k;
      }
      serve_step(sv, &b, view, used, (double)off, 0);
    }
    i = j;
  }
  free(region);
  return 0;
}
