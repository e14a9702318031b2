/* fp8_kv.h — the FP8 KV-cache rules of chapter 19 that host and device share: the scale
 * rule, the block-table dtype flag, the memory-pressure policy and the shared-memory tile
 * offsets. Plain C (the host test tests/test_ch19_fp8.c includes it) and CUDA (__host__
 * __device__ under nvcc): one definition for the kernel and the test.
 *
 * Quantization: each cached K (or V) row, one token of one KV head (64 dims), is stored as
 * 64 FP8 E4M3 values (OCP 8-bit FP spec v1.0, 2023: 1-4-3, bias 7, max finite 448, no
 * infinities) and one scale, s = amax(|row|) / 448 rounded UP to bf16, so that row / s
 * never exceeds 448 by more than an fp32 rounding (saturated to 448). q = RNE(x / s)
 * saturating (__nv_cvt_float_to_fp8(…, __NV_SATFINITE, __NV_E4M3) on the device,
 * gtl_f32_to_fp8e4m3 on the host). The K and V scales of one (token, KV head) are stored
 * as one 32-bit word, K scale in the low 16 bits: 4 bytes per 128 bytes of FP8 K and V,
 * 2 bytes per 64-byte row (3%). */
#pragma once
#include <stdint.h>
#include <string.h>

#ifdef __CUDACC__
#define FP8KV_HD __host__ __device__ __forceinline__
#else
#define FP8KV_HD static inline
#endif

#define FP8KV_MAX 448.0f           /* largest finite E4M3 */
#define FP8KV_PAGE_FP8 0x40000000  /* block-table entry flag: the page is in the FP8 pool */
#define FP8KV_PAGE_MASK 0x3FFFFFFF /* the page's index in its pool */

/* bf16 bits of the scale of a row whose largest magnitude is amax (>= 0): amax / 448
 * rounded up to the next bf16 (truncating the fp32 bits and adding one bf16 ulp when any
 * were cut). amax 0 (an all-zero row) or not finite gives 1.0 (0x3F80): the row still
 * quantizes to exact zeros, and a NaN row stays NaN. */
FP8KV_HD uint16_t fp8kv_scale_bits(float amax) {
  if (!(amax > 0.0f) || !(amax <= 3.40282347e38f)) return 0x3F80; /* 0, NaN, inf */
  const float f = amax / FP8KV_MAX;
  uint32_t u;
  memcpy(&u, &f, 4);
  if (u & 0xFFFFu) u += 0x10000u; /* f > 0: a carry into the exponent is still correct */
  return (uint16_t)(u >> 16);
}

/* The bf16 bits as a float (exact). */
FP8KV_HD float fp8kv_bf16_bits_to_float(uint16_t h) {
  const uint32_t u = (uint32_t)h << 16;
  float f;
  memcpy(&f, &u, 4);
  return f;
}

/* One (token, KV head)'s scale word: K scale bits low, V scale bits high. */
FP8KV_HD uint32_t fp8kv_scale_pair(uint16_t k_bits, uint16_t v_bits) {
  return (uint32_t)k_bits | ((uint32_t)v_bits << 16);
}

/* Memory-pressure policy. Pages are allocated in time order (the decode steps append to
 * every sequence together: logical page j of each sequence before page j + 1 of any); a
 * page allocated while the pool already holds >= pressure_pct % of its capacity
 * (pool_pages) is written in FP8, older pages stay bf16. pressure_pct 0: every page FP8;
 * 100: every page bf16. `allocated` counts the pages allocated before this one. */
FP8KV_HD int fp8kv_page_is_fp8(int64_t allocated, int64_t pool_pages, int pressure_pct) {
  return allocated * 100 >= (int64_t)pressure_pct * pool_pages;
}

/* Byte offset of 16-byte chunk `chunk` (0..7) of row `row` in a 64-row × 128-byte tile of
 * shared memory: chunk c of row r is stored at c ^ (r & 7), so the 8 rows one ldmatrix
 * phase reads fall in 8 different 16-byte bank groups (the swizzle of ch18's tiles). */
FP8KV_HD uint32_t fp8kv_tile_off(int row, int chunk) {
  return (uint32_t)(row * 128 + ((chunk ^ (row & 7)) << 4));
}

/* An FP8 row arrives (cp.async) as 4 chunks of 16 values: FP8 chunk c (dims 16c..16c+15)
 * lands where bf16 chunk c of the row goes, fp8kv_tile_off(row, c). The conversion
 * (one thread per row) reads those 4 chunks into registers, then writes bf16 chunk 2c
 * (dims 16c..16c+7) and 2c + 1 (dims 16c+8..16c+15): same row, so no other thread's data
 * is touched. Dim d of an FP8 row therefore arrives at byte
 * fp8kv_tile_off(row, d / 16) + d % 16 and ends at fp8kv_tile_off(row, d / 8) + 2·(d % 8). */
FP8KV_HD uint32_t fp8kv_staged_byte(int row, int d) { return fp8kv_tile_off(row, d >> 4) + (d & 15); }
FP8KV_HD uint32_t fp8kv_bf16_byte(int row, int d) { return fp8kv_tile_off(row, d >> 3) + 2 * (d & 7); }

/* ---- The register path (attn_fp8_direct_kernel, all-FP8 caches) ----------------------
 * FP8 rows stay 64 bytes in shared memory (4 chunks of 16 dims); chunk c of row r sits at
 * c ^ ((r >> 1) & 3): the 8 rows of one ldmatrix phase, 64 bytes apart, then cover all 32
 * banks. */
FP8KV_HD uint32_t fp8kv_row_off(int row, int chunk) {
  return (uint32_t)(row * 64 + ((chunk ^ ((row >> 1) & 3)) << 4));
}

/* ldmatrix (b16) on FP8 rows hands a lane 4 consecutive codes of one key (K) or 2 codes of
 * 2 keys (V, .trans). The MMAs' k and n orders are free to permute, as long as Q and K
 * agree on the head-dim order (Q·Kᵀ sums over it) and the output is written back in true
 * dim order, so the kernel renumbers dims instead of moving bytes:
 * - Q·Kᵀ, k-step ks, lane column qc: k slots 2qc, 2qc+1 are dims
 *   fp8kv_qk_dim(ks, qc, 0) + {0, 1}, slots 2qc+8, 2qc+9 are fp8kv_qk_dim(ks, qc, 1) + {0, 1};
 * - P·V, n-tile n (0..7), accumulator column 2qc + e (e = 0, 1): dim fp8kv_pv_dim(n, qc, e). */
FP8KV_HD int fp8kv_qk_dim(int ks, int qc, int hi) { return 16 * ks + 4 * qc + 2 * hi; }
FP8KV_HD int fp8kv_pv_dim(int n, int qc, int e) { return 16 * (n >> 1) + 4 * qc + 2 * e + (n & 1); }

/* Who reads what in the register path, for a tile of 4·kpw rows (kpw keys per warp, 16 or
 * 32; 128 threads, 4 warps):
 * - cp.async: thread tid copies chunk tid & 3 of the rows/32 consecutive rows from
 *   fp8kv_load_row0(tid, rows) (one block-table look-up serves them all when they share a
 *   page), of K and of V, and the scale word of row fp8kv_load_row0 + (tid & 3) when
 *   tid & 3 < rows/32;
 * - Q·Kᵀ: ldmatrix x4 of n-tile nt (8 keys): lane gives row fp8kv_k_row(..), chunk lane >> 3
 *   (matrix m = dims 16m..16m+15 of the lane's key);
 * - P·V: ldmatrix.trans x4 of k-step kk (16 keys) and slab pair sg (32 dims): lane gives
 *   row fp8kv_v_row(..), chunk fp8kv_v_chunk(sg, lane) (matrix m: keys 8(m & 1)..+7 of the
 *   k-step, slab 2sg + (m >> 1)); the B fragments of the two key halves of slab 2sg + hs
 *   are one byte permute of registers 2hs and 2hs + 1 with FP8KV_V_SEL_EVEN (even dims of
 *   the slab) or FP8KV_V_SEL_ODD (odd dims): keys 0..7 in the low half, 8..15 in the high
 *   half, each half one cvt to fp16x2. */
FP8KV_HD int fp8kv_load_row0(int tid, int rows) { return (tid >> 2) * (rows >> 5); }
/* Row of copy i (0 <= i < rows/32) of thread tid: the map above (coalesced 0), or, with
 * coalesced 1 (ATTN8D_COALESCED), warp w's copy i covers the 8 consecutive rows
 * w·rows/4 + 8i + 0..7 (512 contiguous bytes of a contiguous cache, 4 whole 128-byte lines
 * per warp instruction) and each row takes its own block-table look-up. The scale word of
 * row fp8kv_scale_row (-1: none) goes with thread tid. With coalesced 1 and rows = 4·kpw,
 * warp w copies exactly rows w·kpw .. w·kpw + kpw − 1, the keys it computes on. */
FP8KV_HD int fp8kv_load_row(int tid, int i, int rows, int coalesced) {
  return coalesced ? (tid >> 5) * (rows >> 2) + 8 * i + ((tid & 31) >> 2) : fp8kv_load_row0(tid, rows) + i;
}
FP8KV_HD int fp8kv_scale_row(int tid, int rows, int coalesced) {
  if (coalesced) return (tid & 31) < (rows >> 2) ? (tid >> 5) * (rows >> 2) + (tid & 31) : -1;
  return (tid & 3) < (rows >> 5) ? fp8kv_load_row0(tid, rows) + (tid & 3) : -1;
}
FP8KV_HD int fp8kv_k_row(int kpw, int warp, int nt, int lane) { return warp * kpw + 8 * nt + (lane & 7); }
FP8KV_HD int fp8kv_v_row(int kpw, int warp, int kk, int lane) {
  return warp * kpw + 16 * kk + 8 * ((lane >> 3) & 1) + (lane & 7);
}
FP8KV_HD int fp8kv_v_chunk(int sg, int lane) { return 2 * sg + (lane >> 4); }
/* With swapped operands (ATTN8D_SWAP_AB) the K̂ tiles are read with the V pattern (16 keys ×
 * 2 chunks per ldmatrix, not transposed): matrix m's lane holds 4 codes of key 8(m & 1) +
 * lane/4 whose two halves are the k slots of fp8kv_qk_dim; Oᵀ's MMA row r of dim chunk ch is
 * dim fp8kv_swap_dim(ch, r & 7, r >> 3) (rows 0..7 the even dims of the chunk, 8..15 the
 * odd ones: the two byte permutes of V). */
FP8KV_HD int fp8kv_swap_dim(int ch, int qr, int odd) { return 16 * ch + 2 * qr + odd; }
#define FP8KV_V_SEL_EVEN 0x6420u /* __byte_perm(x, y, s): bytes x0 x2 y0 y2 */
#define FP8KV_V_SEL_ODD 0x7531u  /* bytes x1 x3 y1 y3 */
