/* kv_alloc.h — ch16's KV block allocator (host, plain C): a pool of fixed-size blocks, a
 * free list, a reference count per block and a block table per sequence. The bookkeeping
 * of PagedAttention (Kwon et al., "Efficient Memory Management for Large Language Model
 * Serving with PagedAttention", SOSP 2023): a sequence's KV lives in blocks of
 * KV_BLOCK_TOKENS tokens taken from the pool as it grows, found through its block table,
 * so memory is committed per block actually written instead of per maximum length.
 * Reference counts let several sequences map the same physical block (a shared system
 * prompt: prefix caching); a block returns to the free list when its last reference goes.
 * The device side (ch16/paged_kv.cuh, ch18/decode_attn.cuh) only ever sees the tables.
 * Unit-tested without a GPU: tests/test_ch16_kv_alloc.c. */
#pragma once
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define KV_BLOCK_SHIFT 4
#define KV_BLOCK_TOKENS (1 << KV_BLOCK_SHIFT) /* 16 tokens per block, vLLM's default */

/* The pool: blocks 0 … n_blocks−1. free_list[0 … n_free−1] holds the free ones (a stack:
 * the block freed last is reused first, still warm in L2); refcount[b] is 0 exactly for
 * free blocks. */
typedef struct {
  int32_t n_blocks, n_free;
  int32_t *free_list; /* [n_blocks] */
  int32_t *refcount;  /* [n_blocks] */
} KvPool;

/* One sequence's block table: blocks[i] holds tokens i·16 … i·16+15. */
typedef struct {
  int32_t n_blocks; /* blocks mapped */
  int32_t cap;      /* entries of blocks[] */
  int32_t *blocks;
} KvSeq;

/** Blocks that hold n_tokens tokens (ceil(n_tokens / 16)); 0 for n_tokens <= 0. */
static inline int32_t kv_blocks_for(int64_t n_tokens) {
  return n_tokens <= 0 ? 0 : (int32_t)((n_tokens + KV_BLOCK_TOKENS - 1) >> KV_BLOCK_SHIFT);
}

/** Initialize a pool of n_blocks (>= 1) free blocks. Returns 0, or -1 (out of host memory,
 *  or n_blocks < 1). */
static inline int kv_pool_init(KvPool *p, int32_t n_blocks) {
  memset(p, 0, sizeof *p);
  if (n_blocks < 1) return -1;
  p->free_list = (int32_t *)malloc(sizeof(int32_t) * (size_t)n_blocks);
  p->refcount = (int32_t *)calloc((size_t)n_blocks, sizeof(int32_t));
  if (!p->free_list || !p->refcount) {
    free(p->free_list);
    free(p->refcount);
    memset(p, 0, sizeof *p);
    return -1;
  }
  p->n_blocks = n_blocks;
  p->n_free = n_blocks;
  /* block 0 on top: a fresh pool hands blocks out in order 0, 1, 2, … */
  for (int32_t i = 0; i < n_blocks; i++) p->free_list[i] = n_blocks - 1 - i;
  return 0;
}

/** Every block free again (between two runs of a trace). */
static inline void kv_pool_reset(KvPool *p) {
  for (int32_t i = 0; i < p->n_blocks; i++) p->free_list[i] = p->n_blocks - 1 - i;
  memset(p->refcount, 0, sizeof(int32_t) * (size_t)p->n_blocks);
  p->n_free = p->n_blocks;
}

static inline void kv_pool_destroy(KvPool *p) {
  free(p->free_list);
  free(p->refcount);
  memset(p, 0, sizeof *p);
}

/** Take a free block (reference count 1). Returns its index, or -1 when none is free. */
static inline int32_t kv_pool_alloc(KvPool *p) {
  if (p->n_free == 0) return -1;
  const int32_t b = p->free_list[--p->n_free];
  p->refcount[b] = 1;
  return b;
}

/** One more reference to a block in use (a second sequence maps it). Returns the new
 *  count, or -1 when b is out of range or free (a bug in the caller). */
static inline int32_t kv_pool_ref(KvPool *p, int32_t b) {
  if (b < 0 || b >= p->n_blocks || p->refcount[b] <= 0) return -1;
  return ++p->refcount[b];
}

/** Drop one reference; the block goes back on the free list when none is left. Returns
 *  the remaining count, or -1 when b is out of range or already free (a double free). */
static inline int32_t kv_pool_release(KvPool *p, int32_t b) {
  if (b < 0 || b >= p->n_blocks || p->refcount[b] <= 0) return -1;
  if (--p->refcount[b] == 0) p->free_list[p->n_free++] = b;
  return p->refcount[b];
}

/** An empty table with room for cap blocks (the longest sequence's). Returns 0 or -1. */
static inline int kv_seq_init(KvSeq *s, int32_t cap) {
  s->n_blocks = 0;
  s->cap = cap;
  s->blocks = (int32_t *)malloc(sizeof(int32_t) * (size_t)(cap > 0 ? cap : 1));
  return s->blocks ? 0 : -1;
}

static inline void kv_seq_destroy(KvSeq *s) {
  free(s->blocks);
  memset(s, 0, sizeof *s);
}

/** Map n shared blocks (already in use, e.g. a cached prefix) at the start of an empty
 *  table, taking one reference to each. Returns 0, or -1 (table not empty, too small, or
 *  a block not in use). */
static inline int kv_seq_share(KvPool *p, KvSeq *s, const int32_t *shared, int32_t n) {
  if (s->n_blocks != 0 || n > s->cap) return -1;
  for (int32_t i = 0; i < n; i++) {
    if (kv_pool_ref(p, shared[i]) < 0) {
      while (i-- > 0) kv_pool_release(p, shared[i]);
      return -1;
    }
    s->blocks[i] = shared[i];
  }
  s->n_blocks = n;
  return 0;
}

/** Blocks that growing s to n_tokens would take from the pool (0 when it is long enough). */
static inline int32_t kv_seq_blocks_needed(const KvSeq *s, int64_t n_tokens) {
  const int32_t want = kv_blocks_for(n_tokens);
  return want > s->n_blocks ? want - s->n_blocks : 0;
}

/** Map blocks on demand until s holds n_tokens tokens. All or nothing: returns 0, or -1
 *  with s and the pool unchanged when the pool runs dry or the table is full. */
static inline int kv_seq_grow(KvPool *p, KvSeq *s, int64_t n_tokens) {
  const int32_t want = kv_blocks_for(n_tokens), need = kv_seq_blocks_needed(s, n_tokens);
  if (want > s->cap || need > p->n_free) return -1;
  for (int32_t i = s->n_blocks; i < want; i++) s->blocks[i] = kv_pool_alloc(p);
  s->n_blocks = want > s->n_blocks ? want : s->n_blocks;
  return 0;
}

/** Drop the sequence's reference to each of its blocks (finished, or preempted) and empty
 *  its table. Returns how many blocks went back to the free list, or -1 on a block that
 *  was already free (a double free: the pool is then inconsistent). */
static inline int32_t kv_seq_release(KvPool *p, KvSeq *s) {
  int32_t freed = 0;
  for (int32_t i = 0; i < s->n_blocks; i++) {
    const int32_t left = kv_pool_release(p, s->blocks[i]);
    if (left < 0) return -1;
    freed += left == 0;
  }
  s->n_blocks = 0;
  return freed;
}
