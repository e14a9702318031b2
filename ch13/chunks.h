// chunks.h — ch13's row chunks of X for the overlapped step (--chunks=N): which rows each
// chunk quantizes and multiplies. Plain C (host only), so tests/test_ch13_chunks.c checks
// it without a GPU.
//
// M rows split into at most `chunks` chunks of `base` rows, base = ceil(M / chunks) rounded
// up to a multiple of X_CHUNK_ALIGN (cuBLASLt's GEMM tiles are 64 to 256 rows tall: an
// aligned chunk adds no partial tile row but the last), the last chunk taking what is
// left. Small M gives fewer chunks than asked (M = 200, 4 asked: 128 + 72 rows).
#pragma once
#include <stdint.h>
#include <string.h>

#define X_CHUNK_ALIGN 128  // rows of a chunk but the last: a multiple of this
#define X_CHUNKS_MAX 8     // chunks at most (--chunks)

/** Rows of every chunk but the last, for M >= 1 rows in at most chunks >= 1 chunks. */
static inline int64_t x_chunk_base(int64_t M, int chunks) {
  if (chunks < 1) chunks = 1;
  const int64_t per = (M + chunks - 1) / chunks;
  return (per + X_CHUNK_ALIGN - 1) / X_CHUNK_ALIGN * X_CHUNK_ALIGN;
}

/** Chunks that hold rows (1 to chunks): ceil(M / base). */
static inline int x_chunk_count(int64_t M, int chunks) {
  const int64_t b = x_chunk_base(M, chunks);
  return (int)((M + b - 1) / b);
}

/** Chunk c (0 <= c < x_chunk_count) of M rows: its first row *r0 and its rows *rows (>= 1).
 *  The chunks tile [0, M) in order, without gaps or overlap. */
static inline void x_chunk_range(int64_t M, int chunks, int c, int64_t *r0, int64_t *rows) {
  const int64_t b = x_chunk_base(M, chunks), start = b * c;
  *r0 = start < M ? start : M;
  *rows = M - *r0 < b ? M - *r0 : b;
}

// --chunk_priority: which of the two streams the block scheduler serves first when both have
// work waiting (CUDA stream priorities): none (both default), gemm, quant.
#define X_CHUNK_PRIO_NONE 0
#define X_CHUNK_PRIO_GEMM 1
#define X_CHUNK_PRIO_QUANT 2
/** The --chunk_priority value: "none", "gemm", "quant" → X_CHUNK_PRIO_*, else -1. */
static inline int x_chunk_priority_parse(const char *s) {
  return !strcmp(s, "none") ? X_CHUNK_PRIO_NONE : !strcmp(s, "gemm") ? X_CHUNK_PRIO_GEMM
         : !strcmp(s, "quant") ? X_CHUNK_PRIO_QUANT : -1;
}

/** The --chunks value: "auto" → 0, "1" … "8" → that count, anything else → -1. */
static inline int x_chunks_parse(const char *s) {
  if (!strcmp(s, "auto")) return 0;
  if (s[0] < '1' || s[0] > '0' + X_CHUNKS_MAX || s[1]) return -1;
  return s[0] - '0';
}
