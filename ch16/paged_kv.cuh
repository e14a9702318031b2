// paged_kv.cuh — ch16's paged KV cache on the device: the view of a block pool that ch18's
// attention kernels read, the kernel that appends one decode step's K/V rows through the
// block tables, and the kernel that gathers a paged cache back into a contiguous one
// (kernels and launchers only: pointers, sizes and a stream in; the lab includes it).
//
// Layout (PagedAttention: Kwon et al., SOSP 2023): a pool of blocks, each [H_kv][16][64]
// bf16 for K and the same for V (head_dim 64 contiguous, 128-byte rows). Token j of
// sequence b, KV head g lives in block table[b][j >> 4], row g·16 + (j & 15). The same
// AttnKvView (ch18/decode_attn.cuh) also describes a contiguous cache, so one append
// kernel and one attention kernel serve both; the host-side bookkeeping (free list,
// reference counts, tables) is ch16/kv_alloc.h.
#pragma once
#include <cuda_bf16.h>
#include <stdint.h>

#include "../ch18/decode_attn.cuh"
#include "kv_alloc.h"

/** The view of a block pool (K and V pools of n_blocks · H_kv · 16 · 64 bf16 each) with
 *  block tables [B][table_stride] on the device. */
static inline AttnKvView paged_kv_view(const __nv_bfloat16 *k_pool, const __nv_bfloat16 *v_pool,
                                       const int32_t *d_tables, int32_t table_stride, int H_kv) {
  AttnKvView v;
  v.k = k_pool;
  v.v = v_pool;
  v.block_table = d_tables;
  v.table_stride = table_stride;
  v.page_shift = KV_BLOCK_SHIFT;
  v.page_stride = (int64_t)H_kv * KV_BLOCK_TOKENS * ATTN_HEAD_DIM;
  v.head_stride = (int64_t)KV_BLOCK_TOKENS * ATTN_HEAD_DIM;
  v.token_stride = ATTN_HEAD_DIM;
  return v;
}

// Strategy: one warp per (sequence, KV head); each lane moves 16 bytes of the K row and 16
// of the V row (8 lanes per 128-byte row). Limiter: launch latency (B·H_kv·256 bytes).
__global__ void __launch_bounds__(256)
    paged_kv_append_kernel(const __grid_constant__ AttnKvView kv, __nv_bfloat16 *__restrict__ k_pool,
                           __nv_bfloat16 *__restrict__ v_pool, const int32_t *__restrict__ pos,
                           const __nv_bfloat16 *__restrict__ k_new, const __nv_bfloat16 *__restrict__ v_new,
                           int B, int H_kv) {
  const int w = (blockIdx.x * blockDim.x + threadIdx.x) >> 5, lane = threadIdx.x & 31;
  if (w >= B * H_kv) return;
  const int b = w / H_kv, g = w % H_kv, c = lane & 7;
  const int64_t dst = attn_kv_offset(kv, b, g, pos[b]) + c * 8;
  const int64_t src = ((int64_t)b * H_kv + g) * ATTN_HEAD_DIM + c * 8;
  if (lane < 8)
    *reinterpret_cast<uint4 *>(k_pool + dst) = *reinterpret_cast<const uint4 *>(k_new + src);
  else if (lane < 16)
    *reinterpret_cast<uint4 *>(v_pool + dst) = *reinterpret_cast<const uint4 *>(v_new + src);
}

/** Enqueue the append of one decode step: for each sequence b < B, the K and V rows
 *  k_new/v_new [B][H_kv][64] bf16 go to position pos[b] (device) of its cache, found
 *  through kv (whose k/v point at k_pool/v_pool). The table entries for pos[b] must be
 *  mapped (kv_seq_grow) before the launch. Pools and rows 16-byte aligned. */
static inline void paged_kv_append_launch(const AttnKvView *kv, __nv_bfloat16 *k_pool,
                                          __nv_bfloat16 *v_pool, const int32_t *pos,
                                          const __nv_bfloat16 *k_new, const __nv_bfloat16 *v_new,
                                          int B, int H_kv, cudaStream_t s) {
  if (B < 1) return;
  const int warps = B * H_kv;
  paged_kv_append_kernel<<<(warps + 7) / 8, 256, 0, s>>>(*kv, k_pool, v_pool, pos, k_new, v_new, B, H_kv);
  GTL_LAUNCH();
}

// Strategy: grid-stride over 16-byte chunks of the destination [B][H_kv][L][64]; a chunk
// past a sequence's length is written as zeros. Limiter: DRAM bandwidth.
__global__ void __launch_bounds__(256)
    paged_kv_gather_kernel(const __grid_constant__ AttnKvView kv, const int32_t *__restrict__ seq_lens,
                           int B, int H_kv, int L, __nv_bfloat16 *__restrict__ k_out,
                           __nv_bfloat16 *__restrict__ v_out) {
  const int64_t n = (int64_t)B * H_kv * L * 8;
  for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < n;
       i += (int64_t)gridDim.x * blockDim.x) {
    const int c = (int)(i & 7);
    const int64_t row = i >> 3;
    const int j = (int)(row % L), g = (int)((row / L) % H_kv), b = (int)(row / ((int64_t)L * H_kv));
    uint4 kk = make_uint4(0, 0, 0, 0), vv = kk;
    if (j < seq_lens[b]) {
      const int64_t off = attn_kv_offset(kv, b, g, j) + c * 8;
      kk = *reinterpret_cast<const uint4 *>(kv.k + off);
      vv = *reinterpret_cast<const uint4 *>(kv.v + off);
    }
    reinterpret_cast<uint4 *>(k_out)[i] = kk;
    reinterpret_cast<uint4 *>(v_out)[i] = vv;
  }
}

/** Enqueue a copy of B sequences' caches (seq_lens[b] <= L tokens each, device) from the
 *  view kv into contiguous k_out/v_out [B][H_kv][L][64] bf16 (zeros past each length):
 *  swap-out, debugging, or checking that paged and contiguous attention agree. */
static inline void paged_kv_gather_launch(const AttnKvView *kv, const int32_t *seq_lens, int B,
                                          int H_kv, int L, __nv_bfloat16 *k_out,
                                          __nv_bfloat16 *v_out, cudaStream_t s) {
  const int64_t n = (int64_t)B * H_kv * L * 8;
  const int64_t blocks = (n + 255) / 256;
  paged_kv_gather_kernel<<<(unsigned)(blocks < 4096 ? blocks : 4096), 256, 0, s>>>(*kv, seq_lens, B, H_kv, L,
                                                                                   k_out, v_out);
  GTL_LAUNCH();
}
