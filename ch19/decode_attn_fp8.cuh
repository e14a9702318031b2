// decode_attn_fp8.cuh — ch19's split-KV flash-decoding over an FP8 E4M3 KV cache (kernels
// and launchers only: pointers, sizes, strides and a stream in; the lab may include it).
//
// The math is ch18's (ch18/decode_attn.cuh: GQA, head_dim 64, optional sinks and sliding
// window), with each cached key row k_j and value row v_j stored either in bf16 or as FP8
// E4M3 codes times one bf16 scale per (token, KV head): k_j = sk_j · k̂_j, v_j = sv_j · v̂_j
// (ch19/fp8_kv.h has the scale rule). Since the scale is per key,
//     s_j = scale · sk_j · (q · k̂_j)      out ∝ Σ_j (p_j · sv_j) v̂_j,
// so the MMAs run on the codes (E4M3 → bf16 is exact: 4 significant bits into 8) and the
// scales are one multiply per score column after Q·Kᵀ and one per p before P is packed
// into the A operand of P·V. The softmax denominator uses p_j, not p_j · sv_j.
//
// Page dtype: the block table's entries carry FP8KV_PAGE_FP8 for pages of the FP8 pool;
// other entries index the bf16 pool. One kernel reads both (a pool that starts writing
// FP8 when memory runs short keeps its older bf16 pages). Pools [pages][H_kv][P][64] (or a
// contiguous [B][H_kv][S][64] with an identity table); the scale words [pages][H_kv][P].
//
// Shared memory: FP8 rows are fetched with cp.async into the first half of their bf16
// slot and widened to bf16 in place by one thread per row before the MMAs; the tile then
// is exactly ch18's, read by ch18's ldmatrix code. That costs one extra barrier and 3 KB
// of shared-memory traffic per tile, where building mma fragments from FP8 bytes by hand
// would have needed new, untestable-on-the-host fragment maps for both K and Vᵀ.
#pragma once
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_fp8.h>
#include <stdint.h>

#include "../ch18/decode_attn.cuh"
#include "fp8_kv.h"

// Per stage: the K and V tiles (16 KB, as ch18), 64 scale words, 64 row flags.
#define ATTN8_STAGE_TILES (2 * ATTN_TILE * 128)
#define ATTN8_SMEM_BYTES (ATTN_STAGES * (ATTN8_STAGE_TILES + ATTN_TILE * 4 + ATTN_TILE))

// Where K and V live: two pools selected per page by the block-table flag.
typedef struct {
  const __nv_bfloat16 *k16, *v16;  // bf16 pool, 16-byte aligned
  const uint8_t *k8, *v8;          // FP8 E4M3 pool, 16-byte aligned
  const uint32_t *scales;          // scale words of the FP8 pool (K low, V high bf16)
  const int32_t *block_table;      // [B][table_stride]: page index | FP8KV_PAGE_FP8
  int32_t table_stride, page_shift;  // tokens per page = 1 << page_shift
  int64_t page_stride, head_stride;  // elements (= bytes for FP8), both pools; token stride 64
  int64_t scale_page_stride, scale_head_stride;  // scale words; token stride 1
  int32_t all_fp8;  // 1: every page the table references is FP8 (the register path runs)
} Attn8KvView;

typedef struct {
  const __nv_bfloat16 *q;   // [B][H][64], after RoPE
  __nv_bfloat16 *out;       // [B][H][64]
  Attn8KvView kv;
  const int32_t *seq_lens;  // [B] device
  const float *sinks;       // [H] or NULL
  int32_t B, H, H_kv, window;
  float scale;              // 1/sqrt(64)
} Attn8DecodeArgs;

#include "attn_fp8_direct.cuh"  // the register path for all-FP8 caches, and the shared epilogue

__device__ __forceinline__ void attn8_cp_async4(uint32_t dst, const void *src) {
  asm volatile("cp.async.ca.shared.global [%0], [%1], 4;\n" ::"r"(dst), "l"(src));
}

// 16 E4M3 codes → 16 bf16 (exact), lower dims in the lower halves.
__device__ __forceinline__ void attn8_widen16(uint4 in, uint4 &lo, uint4 &hi) {
  const uint32_t w[4] = {in.x, in.y, in.z, in.w};
  uint32_t o[8];
#pragma unroll
  for (int i = 0; i < 4; i++)
#pragma unroll
    for (int h = 0; h < 2; h++) {
      const __half2_raw r = __nv_cvt_fp8x2_to_halfraw2((__nv_fp8x2_storage_t)(w[i] >> (16 * h)), __NV_E4M3);
      const float2 f = __half22float2(__half2(r));
      o[i * 2 + h] = attn_pack_bf16(f.x, f.y);
    }
  lo = make_uint4(o[0], o[1], o[2], o[3]);
  hi = make_uint4(o[4], o[5], o[6], o[7]);
}

// Strategy: ch18's attn_splitkv_gqa_kernel (CTA per sequence, KV head, split; cp.async
// pipeline of 64-key tiles; warp w owns keys 16w..16w+15; bf16 MMAs; online softmax) with
// mixed-dtype tiles: per row, a bf16 page sends 128 B, an FP8 page 64 B + a 4-byte scale
// word; after the tile lands, FP8 rows are widened to bf16 in shared memory (thread t:
// row t % 64 of K for t < 64, of V otherwise). Limiter: DRAM read bandwidth, now at 132 B
// per (key, KV head) instead of 256 B.
template <bool kUpper>
__global__ void __launch_bounds__(ATTN_THREADS)
    attn_fp8_splitkv_kernel(const __grid_constant__ Attn8DecodeArgs a, int num_splits,
                            float *__restrict__ o_part, float *__restrict__ lse_part) {
  extern __shared__ __align__(128) unsigned char attn8_smem[];
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.launch_dependents;\n" ::);
#endif
  const int split = blockIdx.x, g = blockIdx.y, b = blockIdx.z;
  const int G = a.H / a.H_kv, warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const int qr = lane >> 2, qc = lane & 3;
  const int len = a.seq_lens[b], lo = attn_first_key(len, a.window);
  int chunk = (len - lo + num_splits - 1) / num_splits;
  chunk = (chunk + ATTN_TILE - 1) / ATTN_TILE * ATTN_TILE;
  const int start = lo + split * chunk, end = min(len, start + chunk);
  const int n_tiles = end > start ? (end - start + ATTN_TILE - 1) / ATTN_TILE : 0;
  const uint32_t smem = (uint32_t)__cvta_generic_to_shared(attn8_smem);
  uint32_t *sc_all = reinterpret_cast<uint32_t *>(attn8_smem + ATTN_STAGES * ATTN8_STAGE_TILES);
  uint8_t *fl_all = reinterpret_cast<uint8_t *>(sc_all + ATTN_STAGES * ATTN_TILE);

  uint32_t qa[4][4];  // Q as the A operand (ch18)
  {
    const uint32_t *q = reinterpret_cast<const uint32_t *>(a.q + ((int64_t)b * a.H + (int64_t)g * G) * ATTN_HEAD_DIM);
    for (int ks = 0; ks < 4; ks++) {
      const int c = ks * 8 + qc;
      qa[ks][0] = qr < G ? q[qr * 32 + c] : 0u;
      qa[ks][1] = qr + 8 < G ? q[(qr + 8) * 32 + c] : 0u;
      qa[ks][2] = qr < G ? q[qr * 32 + c + 4] : 0u;
      qa[ks][3] = qr + 8 < G ? q[(qr + 8) * 32 + c + 4] : 0u;
    }
  }

  // Tile t into stage st. Rows past `end` are zero-filled bf16 rows with scale 1.
  auto load_tile = [&](int st, int t) {
    const uint32_t ks = smem + st * ATTN8_STAGE_TILES, vs = ks + ATTN_TILE * 128;
    uint32_t *sc = sc_all + st * ATTN_TILE;
    uint8_t *fl = fl_all + st * ATTN_TILE;
#pragma unroll
    for (int i = 0; i < 4; i++) {
      const int idx = threadIdx.x + i * ATTN_THREADS, row = idx >> 3, c = idx & 7;
      const int j = start + t * ATTN_TILE + row;
      int32_t e = 0;
      int64_t off = 0;
      if (j < end) {
        e = __ldg(a.kv.block_table + (int64_t)b * a.kv.table_stride + (j >> a.kv.page_shift));
        const int tok = j & ((1 << a.kv.page_shift) - 1);
        off = (int64_t)(e & FP8KV_PAGE_MASK) * a.kv.page_stride + (int64_t)g * a.kv.head_stride +
              (int64_t)tok * ATTN_HEAD_DIM;
        if ((e & FP8KV_PAGE_FP8) && c == 0)
          attn8_cp_async4((uint32_t)__cvta_generic_to_shared(sc + row),
                          a.kv.scales + (int64_t)(e & FP8KV_PAGE_MASK) * a.kv.scale_page_stride +
                              (int64_t)g * a.kv.scale_head_stride + tok);
      }
      const bool f8 = j < end && (e & FP8KV_PAGE_FP8);
      if (c == 0) {
        fl[row] = f8;
        if (!f8) sc[row] = 0x3F803F80u;  // bf16 1.0, 1.0
      }
      if (f8) {
        if (c < 4) {
          attn_cp_async16(ks + fp8kv_tile_off(row, c), a.kv.k8 + off + c * 16, 16);
          attn_cp_async16(vs + fp8kv_tile_off(row, c), a.kv.v8 + off + c * 16, 16);
        }
      } else {
        attn_cp_async16(ks + fp8kv_tile_off(row, c), a.kv.k16 + off + c * 8, j < end ? 16 : 0);
        attn_cp_async16(vs + fp8kv_tile_off(row, c), a.kv.v16 + off + c * 8, j < end ? 16 : 0);
      }
    }
  };

  const float sl2 = a.scale * ATTN_LOG2E;
  float m_lo = -INFINITY, m_hi = -INFINITY, l_lo = 0.f, l_hi = 0.f, o[8][4];
#pragma unroll
  for (int n = 0; n < 8; n++) o[n][0] = o[n][1] = o[n][2] = o[n][3] = 0.f;

#pragma unroll
  for (int st = 0; st < ATTN_STAGES - 1; st++) {
    if (st < n_tiles) load_tile(st, st);
    attn_cp_async_commit();
  }
  for (int t = 0; t < n_tiles; t++) {
    attn_cp_async_wait<ATTN_STAGES - 2>();
    __syncthreads();  // tile t landed everywhere; stage (t-1) % STAGES is free
    if (t + ATTN_STAGES - 1 < n_tiles) load_tile((t + ATTN_STAGES - 1) % ATTN_STAGES, t + ATTN_STAGES - 1);
    attn_cp_async_commit();

    const int st = t % ATTN_STAGES;
    const uint32_t ks = smem + st * ATTN8_STAGE_TILES, vs = ks + ATTN_TILE * 128;
    const uint32_t *sc = sc_all + st * ATTN_TILE;
    {  // widen this thread's FP8 row (if it is one) to bf16, in place
      const int row = threadIdx.x & (ATTN_TILE - 1);
      if (fl_all[st * ATTN_TILE + row]) {
        unsigned char *base = attn8_smem + st * ATTN8_STAGE_TILES + (threadIdx.x >= ATTN_TILE ? ATTN_TILE * 128 : 0);
        uint4 in[4];
#pragma unroll
        for (int c = 0; c < 4; c++) in[c] = *reinterpret_cast<const uint4 *>(base + fp8kv_tile_off(row, c));
#pragma unroll
        for (int c = 0; c < 4; c++) {
          uint4 w0, w1;
          attn8_widen16(in[c], w0, w1);
          *reinterpret_cast<uint4 *>(base + fp8kv_tile_off(row, 2 * c)) = w0;
          *reinterpret_cast<uint4 *>(base + fp8kv_tile_off(row, 2 * c + 1)) = w1;
        }
      }
    }
    __syncthreads();  // every row of tile t is bf16 now

    float s[2][4];  // S = Q · K̂ᵀ (ch18)
#pragma unroll
    for (int nt = 0; nt < 2; nt++) {
      s[nt][0] = s[nt][1] = s[nt][2] = s[nt][3] = 0.f;
      const int row = warp * 16 + nt * 8 + (lane & 7);
#pragma unroll
      for (int half = 0; half < 2; half++) {
        uint32_t kb[4];
        attn_ldmatrix_x4(ks + fp8kv_tile_off(row, half * 4 + (lane >> 3)), kb);
        attn_mma_bf16(s[nt], qa[half * 2], kb[0], kb[1]);
        attn_mma_bf16(s[nt], qa[half * 2 + 1], kb[2], kb[3]);
      }
    }
    // Scale words of this lane's 4 key columns: K scale into the score, V scale into p.
    const int c0 = warp * 16 + 2 * qc, j0 = start + t * ATTN_TILE + c0;
    float vsc[2][2], use_lo, use_hi, al_lo, al_hi;
    attn8_scale_scores<kUpper>(s, sc, c0, j0, lo, end, start + t * ATTN_TILE + ATTN_TILE <= end, sl2, vsc, m_lo, m_hi,
                               use_lo, use_hi, al_lo, al_hi);
    uint32_t pa[4];  // P·diag(sv) as the A operand of P·V̂
    float sum_lo = 0.f, sum_hi = 0.f;
#pragma unroll
    for (int nt = 0; nt < 2; nt++) {
      const float p0 = exp2f(s[nt][0] - use_lo), p1 = exp2f(s[nt][1] - use_lo);
      sum_lo += p0 + p1;
      pa[nt * 2] = attn_pack_bf16(p0 * vsc[nt][0], p1 * vsc[nt][1]);
      pa[nt * 2 + 1] = 0u;
      if (kUpper) {
        const float p2 = exp2f(s[nt][2] - use_hi), p3 = exp2f(s[nt][3] - use_hi);
        sum_hi += p2 + p3;
        pa[nt * 2 + 1] = attn_pack_bf16(p2 * vsc[nt][0], p3 * vsc[nt][1]);
      }
    }
    l_lo = l_lo * al_lo + sum_lo;
    if (kUpper) l_hi = l_hi * al_hi + sum_hi;
#pragma unroll
    for (int np = 0; np < 4; np++) {  // O = O·alpha + P · V̂ (ch18)
      uint32_t vb[4];
      const int m = lane >> 3, row = warp * 16 + (m & 1) * 8 + (lane & 7);
      attn_ldmatrix_x4_trans(vs + fp8kv_tile_off(row, np * 2 + (m >> 1)), vb);
#pragma unroll
      for (int h = 0; h < 2; h++) {
        float *on = o[np * 2 + h];
        on[0] *= al_lo;
        on[1] *= al_lo;
        if (kUpper) {
          on[2] *= al_hi;
          on[3] *= al_hi;
        }
        attn_mma_bf16(on, pa, vb[h * 2], vb[h * 2 + 1]);
      }
    }
  }
  attn_cp_async_wait<0>();
  __syncthreads();

  // Merge the 4 warps and write (ch18's epilogue).
  float *so = attn8_stash_ml(attn8_smem, warp, qr, qc, m_lo, m_hi, l_lo, l_hi);
#pragma unroll
  for (int n = 0; n < 8; n++) {
    float *r0 = so + (warp * 16 + qr) * 64 + n * 8 + 2 * qc;
    r0[0] = o[n][0];
    r0[1] = o[n][1];
    r0[8 * 64] = o[n][2];
    r0[8 * 64 + 1] = o[n][3];
  }
  __syncthreads();
  attn8_merge_write(a, so, g, b, split, num_splits, o_part, lse_part);
}

// Strategy: one warp per (token, KV head) row pair of K and V: lane l quantizes dims 2l,
// 2l+1; the row's amax by a butterfly max; the scale rule of fp8_kv.h; RNE saturating
// conversion; lane 0 writes the scale word. This is the append-time quantizer (each new
// token's K/V rows are quantized once, never re-scaled later). Rows [n_rows][64] in and
// out, scales [n_rows]. Limiter: bandwidth (it touches each byte once).
__global__ void __launch_bounds__(256)
    attn_fp8_quantize_kernel(const __nv_bfloat16 *__restrict__ k, const __nv_bfloat16 *__restrict__ v,
                             uint8_t *__restrict__ k8, uint8_t *__restrict__ v8,
                             uint32_t *__restrict__ scales, int64_t n_rows) {
  const int64_t row = (int64_t)blockIdx.x * 8 + (threadIdx.x >> 5);
  const int lane = threadIdx.x & 31;
  if (row >= n_rows) return;
  uint16_t bits[2];
  for (int op = 0; op < 2; op++) {
    const __nv_bfloat16 *src = (op ? v : k) + row * ATTN_HEAD_DIM;
    const float2 x = __bfloat1622float2(reinterpret_cast<const __nv_bfloat162 *>(src)[lane]);
    float amax = fmaxf(fabsf(x.x), fabsf(x.y));
    for (int off = 16; off; off >>= 1) amax = fmaxf(amax, __shfl_xor_sync(0xffffffffu, amax, off));
    bits[op] = fp8kv_scale_bits(amax);
    const float s = fp8kv_bf16_bits_to_float(bits[op]);
    const __nv_fp8x2_storage_t qv =
        __nv_cvt_float2_to_fp8x2(make_float2(x.x / s, x.y / s), __NV_SATFINITE, __NV_E4M3);
    reinterpret_cast<__nv_fp8x2_storage_t *>((op ? v8 : k8) + row * ATTN_HEAD_DIM)[lane] = qv;
  }
  if (lane == 0) scales[row] = fp8kv_scale_pair(bits[0], bits[1]);
}

// Whether attn_fp8_splitkv_launch runs the register path (attn_fp8_direct_kernel) for a
// cache: every page FP8 and pages of at least 4 tokens (its loads take 4 rows per look-up).
static inline int attn_fp8_direct_ok(const Attn8KvView *kv) { return kv->all_fp8 && kv->page_shift >= 2; }

// Resident CTAs per SM of the kernel attn_fp8_splitkv_launch runs for a cache that is all
// FP8 (all_fp8 = attn_fp8_direct_ok: attn_fp8_direct_kernel) or not (attn_fp8_splitkv_kernel), the smaller
// count of its two instantiations; raises their dynamic shared-memory limits (above the
// 48 KB default for the widening kernel): call once before launching. Exits 3 through
// GTL_CUDA on a CUDA error.
static inline int attn_fp8_splitkv_ctas_per_sm(int all_fp8) {
  const void *k[2] = {all_fp8 ? (const void *)attn_fp8_direct_kernel<false, ATTN8D_SWAP_AB != 0>
                              : (const void *)attn_fp8_splitkv_kernel<false>,
                      all_fp8 ? (const void *)attn_fp8_direct_kernel<true> : (const void *)attn_fp8_splitkv_kernel<true>};
  const int smem = all_fp8 ? ATTN8D_SMEM_BYTES : ATTN8_SMEM_BYTES;
  int best = 1 << 30;
  for (int i = 0; i < 2; i++) {
    int n = 0;
    GTL_CUDA(cudaFuncSetAttribute(k[i], cudaFuncAttributeMaxDynamicSharedMemorySize, smem));
    GTL_CUDA(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&n, k[i], ATTN_THREADS, smem));
    if (n < best) best = n;
  }
  return best;
}

// Quantize n_rows K/V rows (bf16 [n_rows][64] each) into FP8 rows and scale words on
// stream s. Pointers 4-byte aligned. Exits 3 through GTL_LAUNCH on a launch error.
static inline void attn_fp8_quantize(const __nv_bfloat16 *k, const __nv_bfloat16 *v, uint8_t *k8,
                                     uint8_t *v8, uint32_t *scales, int64_t n_rows, cudaStream_t s) {
  if (n_rows <= 0) return;
  attn_fp8_quantize_kernel<<<(unsigned)((n_rows + 7) / 8), 256, 0, s>>>(k, v, k8, v8, scales, n_rows);
  GTL_LAUNCH();
}

// Enqueue one attention step on stream s: the split kernel (attn_fp8_direct_kernel when
// attn_fp8_direct_ok(&a->kv), else attn_fp8_splitkv_kernel, which reads bf16 and FP8 pages),
// then for num_splits > 1 ch18's attn_splitkv_combine_kernel (same partial format;
// programmatic dependent launch). Split count and workspace as ch18 (attn_splitkv_num_splits
// with attn_fp8_splitkv_ctas_per_sm(attn_fp8_direct_ok(&a->kv)), attn_splitkv_workspace_floats). Returns 0, or -1 with a
// message on stderr for arguments the kernel cannot take (group > 16, B > 65535, pools
// not 16-byte aligned, strides not multiples of 16 elements, scales not 4-byte aligned).
static inline int attn_fp8_splitkv_launch(const Attn8DecodeArgs *a, int num_splits, float *workspace,
                                          cudaStream_t s) {
  const int G = a->H_kv > 0 ? a->H / a->H_kv : 0;
  if (a->B < 1 || a->B > 65535 || G < 1 || a->H % a->H_kv || G > ATTN_MAX_GROUP || num_splits < 1 ||
      num_splits > 65535 || (num_splits > 1 && !workspace) ||
      (((uintptr_t)a->q | (uintptr_t)a->kv.k16 | (uintptr_t)a->kv.v16 | (uintptr_t)a->kv.k8 |
        (uintptr_t)a->kv.v8) % 16) || ((uintptr_t)a->kv.scales % 4) ||
      (a->kv.page_stride | a->kv.head_stride) % 16 || a->kv.page_shift < 0 || a->kv.page_shift > 30) {
    fprintf(stderr, "attn_fp8_splitkv_launch: unsupported arguments (B=%d H=%d H_kv=%d splits=%d)\n",
            a->B, a->H, a->H_kv, num_splits);
    return -1;
  }
  float *o_part = workspace;
  float *lse_part = workspace ? workspace + (size_t)a->B * a->H * num_splits * ATTN_HEAD_DIM : NULL;
  const dim3 grid(num_splits, a->H_kv, a->B);
  const int direct = attn_fp8_direct_ok(&a->kv);
  if (direct && G > 8)
    attn_fp8_direct_kernel<true><<<grid, ATTN_THREADS, ATTN8D_SMEM_BYTES, s>>>(*a, num_splits, o_part, lse_part);
  else if (direct)
    attn_fp8_direct_kernel<false, ATTN8D_SWAP_AB != 0>
        <<<grid, ATTN_THREADS, ATTN8D_SMEM_BYTES, s>>>(*a, num_splits, o_part, lse_part);
  else if (G > 8)
    attn_fp8_splitkv_kernel<true><<<grid, ATTN_THREADS, ATTN8_SMEM_BYTES, s>>>(*a, num_splits, o_part, lse_part);
  else
    attn_fp8_splitkv_kernel<false><<<grid, ATTN_THREADS, ATTN8_SMEM_BYTES, s>>>(*a, num_splits, o_part, lse_part);
  GTL_LAUNCH();
  if (num_splits > 1) attn_splitkv_combine_launch(o_part, lse_part, a->sinks, a->out, a->B, a->H, num_splits, s);
  return 0;
}
