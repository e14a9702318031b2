// ch16 production inference, PagedAttention — optimized: paged KV + continuous batching.
//
// The one change: the KV budget is cut into blocks of 16 tokens (ch16/kv_alloc.h: a free
// list, reference counts, a block table per sequence) that a sequence takes as it grows,
// and the batch is re-formed at every step: a finished sequence leaves and its blocks go
// back at once; waiting requests join as soon as their blocks fit. PagedAttention (Kwon,
// Li, Zhuang, Sheng, Zheng, Yu, Gonzalez, Zhang, Stoica, "Efficient Memory Management for
// Large Language Model Serving with PagedAttention", SOSP 2023) for the memory; iteration-
// level scheduling, "continuous batching" (Yu, Jeong, Kim, Kim, Chun, "Orca: A Distributed
// Serving System for Transformer-Based Generative Models", OSDI 2022) for the batch.
// The same budget then holds ~3x the sequences, and no step waits for a batch's longest.
// With --shared-prefix=N the N-token system prompt's full blocks are filled once and
// mapped by every sequence (reference counted: prefix caching). When growth needs more
// blocks than are free, the most recently admitted sequence is preempted: its blocks are
// freed and it re-joins later, its KV recomputed by the prefill kernel (vLLM's
// "recompute"). The attention kernel is ch18's, reading K/V through the block tables.
//
// Build and run:   make ch16 && ./ch16/optimized        (pair: scripts/pair.sh ch16)
//   ./ch16/optimized --shared-prefix=256                  prefix caching, memory saved
//   ./ch16/optimized --arrival=poisson:2000               requests arriving over time
// Nsight Systems: nsys profile -t cuda,nvtx ./ch16/optimized --iters=1 — the steps of one
//   trace, ~3x fewer than the baseline's, each with a fuller batch.
// Nsight Compute (a trace launches thousands of kernels: profile 20 of them), directly
//   ncu --clock-control none --nvtx --nvtx-include "gauntlet@ch16.optimized.timed]" -k regex:attn_splitkv
//       -c 20 --metrics gpu__time_duration.sum,dram__bytes_read.sum,launch__grid_size ./ch16/optimized --warmup=0 --iters=1
//   launch__grid_size = 8 x batch: the attention grid of a full continuous batch.
// Book: production inference — PagedAttention, continuous batching, prefix caching.
#include "serve_main.cuh"

// A double-ended queue of waiting requests: arrivals at the back, preempted at the front.
typedef struct {
  int32_t *a;
  int cap, head, n;
} ServeQueue;
static void queue_push_back(ServeQueue *q, int r) { q->a[(q->head + q->n++) % q->cap] = r; }
static void queue_push_front(ServeQueue *q, int r) {
  q->head = (q->head + q->cap - 1) % q->cap;
  q->a[q->head] = r;
  q->n++;
}
static int queue_pop_front(ServeQueue *q) {
  const int r = q->a[q->head];
  q->head = (q->head + 1) % q->cap;
  q->n--;
  return r;
}

int serve_run(Server *sv) {
  const int n = sv->n_req, TS = sv->max_table, M = SERVE_MAX_BATCH;
  serve_run_begin(sv, TS);
  const AttnKvView view = paged_kv_view(sv->d_kpool, sv->d_vpool, NULL, TS, SERVE_H_KV);
  const int64_t block_bytes = (int64_t)KV_BLOCK_TOKENS * SERVE_KV_TOKEN_BYTES;
  KvPool pool;
  KvSeq *seq = (KvSeq *)calloc(n, sizeof(KvSeq));
  int32_t *done = (int32_t *)calloc(n, sizeof(int32_t)), *running = (int32_t *)malloc(sizeof(int32_t) * M);
  uint8_t *joined = (uint8_t *)calloc(n, 1);
  ServeQueue wq = {(int32_t *)malloc(sizeof(int32_t) * n), n, 0, 0};
  if (!seq || !done || !running || !joined || !wq.a || kv_pool_init(&pool, (int32_t)(sv->budget_bytes / block_bytes)))
    return -1;
  for (int r = 0; r < n; r++)
    if (kv_seq_init(&seq[r], TS)) return -1;
  // The shared prefix's full blocks: taken once, held by the cache for the whole run.
  const int nsh = sv->shared_prefix / KV_BLOCK_TOKENS;
  int32_t prefix[4096 / KV_BLOCK_TOKENS];
  for (int i = 0; i < nsh; i++) prefix[i] = kv_pool_alloc(&pool);
  int prefix_filled = nsh == 0, n_run = 0, next = 0, rc = 0;

  while (next < n || wq.n || n_run) {
    while (next < n && serve_arrived(sv, next)) queue_push_back(&wq, next++);
    if (!n_run && !wq.n) {  // idle until the next arrival
      serve_wait_until(sv, sv->req[next].arrival_s);
      continue;
    }
    // 1. Grow the running sequences by the block their next token needs; preempt the
    //    youngest while the free list cannot cover them.
    for (;;) {
      int32_t need = 0;
      for (int i = 0; i < n_run; i++) {
        const int r = running[i];
        need += kv_seq_blocks_needed(&seq[r], sv->req[r].P + done[r]);
      }
      if (need <= pool.n_free) break;
      const int v = running[--n_run];
      if (kv_seq_release(&pool, &seq[v]) < 0) rc = -1;
      queue_push_front(&wq, v);
      sv->preemptions++;
    }
    for (int i = 0; i < n_run; i++)
      if (kv_seq_grow(&pool, &seq[running[i]], sv->req[running[i]].P + done[running[i]])) rc = -1;
    // 2. Admit waiting requests (FIFO) while their blocks fit, keeping one free block per
    //    running sequence for its next growth.
    while (wq.n && n_run < M) {
      const int r = wq.a[wq.head];
      const int64_t len = sv->req[r].P + done[r];  // KV after this step's append
      const int32_t own = kv_blocks_for(len) - nsh;
      if (own + n_run > pool.n_free) break;
      if ((nsh && kv_seq_share(&pool, &seq[r], prefix, nsh)) || kv_seq_grow(&pool, &seq[r], len)) rc = -1;
      queue_pop_front(&wq);
      running[n_run++] = r;
      joined[r] = 1;
    }
    if (!n_run) {  // nothing fits (cannot happen: one request always fits the budget)
      rc = -1;
      break;
    }
    // 3. The step: every running sequence decodes one token; joiners are prefilled first.
    ServeBatch b = serve_batch_begin(sv);
    double used = prefix_filled ? nsh * KV_BLOCK_TOKENS : 0;
    for (int i = 0; i < n_run; i++) {
      const int r = running[i], row = serve_batch_add(sv, &b, r, done[r], seq[r].blocks, seq[r].n_blocks);
      if (joined[r]) serve_batch_prefill(sv, &b, row, r, nsh * KV_BLOCK_TOKENS, sv->req[r].P - 1 + done[r]);
      joined[r] = 0;
      used += sv->req[r].P + done[r] - nsh * KV_BLOCK_TOKENS;
    }
    if (!prefix_filled) {  // the first step fills the shared blocks once
      serve_batch_prefill(sv, &b, serve_batch_table_row(sv, &b, prefix, nsh), running[0], 0, nsh * KV_BLOCK_TOKENS);
      prefix_filled = 1;
      used += nsh * KV_BLOCK_TOKENS;
    }
    const double alloc = (double)(pool.n_blocks - pool.n_free) * KV_BLOCK_TOKENS;
    serve_step(sv, &b, view, used, alloc, nsh ? (double)nsh * KV_BLOCK_TOKENS * (n_run - 1) : 0);
    // 4. Advance; finished sequences leave and free their blocks now.
    int kept = 0;
    for (int i = 0; i < n_run; i++) {
      const int r = running[i];
      if (++done[r] < sv->req[r].n_out) running[kept++] = r;
      else if (kv_seq_release(&pool, &seq[r]) < 0) rc = -1;
    }
    n_run = kept;
  }
  for (int i = 0; i < nsh; i++)
    if (kv_pool_release(&pool, prefix[i]) != 0) rc = -1;  // the cache's reference was the last
  if (pool.n_free != pool.n_blocks) {
    fprintf(stderr, "ch16: %d of %d KV blocks still in use after the trace (a leak)\n",
            pool.n_blocks - pool.n_free, pool.n_blocks);
    rc = -1;
  }
  for (int r = 0; r < n; r++) kv_seq_destroy(&seq[r]);
  kv_pool_destroy(&pool);
  free(seq), free(done), free(running), free(joined), free(wq.a);
  return rc;
}

int main(int argc, char **argv) {
  return serve_main(argc, argv, "optimized",
                    "paged KV (16-token blocks, free list, refcounts) + continuous batching (join/leave every step)",
                    1);
}
