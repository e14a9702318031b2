// decode_attn.cuh — ch18's GQA split-KV flash-decoding attention: the kernels
// ch18/optimized.cu times and the lab's attention stage reuses (kernels and launchers only:
// pointers, sizes, strides and a stream in).
//
// One decode step of attention for B sequences, H query heads sharing H_kv KV heads
// (GQA: query head h reads KV head h / G, G = H / H_kv, G <= 16), head_dim 64:
//     s_j   = scale · q_h · k_j                     keys j visible to the query
//     out_h = Σ_j exp(s_j − m) v_j / (Σ_j exp(s_j − m) + exp(sink_h − m)),
//     m     = max(max_j s_j, sink_h)
// q, K, V bf16; scores, softmax and sums fp32; out bf16 [B][H][64]. The query of sequence
// b sits at position len_b − 1 and its own key is already cached, so the visible keys are
// 0 … len_b − 1, or with a sliding window W > 0 those with len_b − 1 − W < j ≤ len_b − 1.
// Sinks (gpt-oss, one logit per query head, not scaled, no value vector) are optional.
//
// The KV cache is read through a block table, so one kernel serves a paged pool and a
// contiguous cache: key j of sequence b, KV head g lives at
//     pool + table[b][j >> page_shift]·page_stride + g·head_stride + (j & (P−1))·token_stride
// (P = 1 << page_shift tokens per page; head_dim contiguous, 16-byte aligned rows).
// Paged pool [pages][H_kv][P][64]: page_stride = H_kv·P·64, head_stride = P·64,
// token_stride = 64. Contiguous cache [B][H_kv][max_len][64]: the identity table
// table[b][0] = b, P = any power of two >= max_len, page_stride = H_kv·max_len·64,
// head_stride = max_len·64, token_stride = 64.
//
// Flash-decoding (Dao, Haziza, Massa, Sizov, "Flash-Decoding for long-context inference",
// PyTorch blog, 2023): the visible keys of each (sequence, KV head) are cut into
// num_splits chunks; one CTA per (sequence, KV head, split) reads its chunk of K and V
// once and serves all G query heads of the group from it with tensor-core MMAs and an
// online softmax (Milakov & Gimelshein, "Online normalizer calculation for softmax",
// arXiv:1805.02867, 2018); a second kernel merges the splits by their log-sum-exp.
#pragma once
#include <cuda_bf16.h>
#include <math.h>
#include <stdint.h>

#include "../common/gauntlet.h"

#define ATTN_HEAD_DIM 64
#define ATTN_TILE 64      // keys per pipeline stage: 4 warps × 16 keys
// cp.async stages of 16 KB (K and V tiles); STAGES − 1 tiles are in flight per CTA. 3
// stages = 48 KB of shared memory = 4 CTAs per SM (528 slots on an H200), which measured
// as fast as 4 or 6 stages at 16 × 8192 and lets batch 64 × 2048 run as one wave without
// splitting. Build with -DATTN_STAGES=N (2..8) to try another depth (README, exercise 1).
#ifndef ATTN_STAGES
#define ATTN_STAGES 3
#endif
// 0, or 64/128/256: the .L2::NB prefetch-size hint on every cp.async (-DATTN_L2_PREFETCH=N).
#ifndef ATTN_L2_PREFETCH
#define ATTN_L2_PREFETCH 0
#endif
#define ATTN_THREADS 128  // 4 warps
#define ATTN_MAX_GROUP 16 // query heads per KV head: the 16 rows of one mma tile
#define ATTN_SMEM_BYTES (ATTN_STAGES * 2 * ATTN_TILE * ATTN_HEAD_DIM * 2)  // 48 KB at 3 stages
static_assert(ATTN_STAGES >= 2 && ATTN_STAGES <= 8, "ATTN_STAGES must be 2..8");
// The epilogue reuses the pipeline's shared memory for the 4 warps' O, m and l.
static_assert(ATTN_SMEM_BYTES >= (4 * 16 * ATTN_HEAD_DIM + 2 * 4 * 16) * 4, "epilogue does not fit");
#define ATTN_LOG2E 1.4426950408889634f

// Where the K and V of the cache live (see the file header). K and V share the table and
// the strides (elements of bf16).
typedef struct {
  const __nv_bfloat16 *k, *v;  // pools, 16-byte aligned
  const int32_t *block_table;  // [B][table_stride] physical page of each logical page
  int32_t table_stride;        // entries per table row
  int32_t page_shift;          // tokens per page = 1 << page_shift
  int64_t page_stride, head_stride, token_stride;  // elements
} AttnKvView;

// One decode attention step.
typedef struct {
  const __nv_bfloat16 *q;   // [B][H][64], after RoPE
  __nv_bfloat16 *out;       // [B][H][64]
  AttnKvView kv;
  const int32_t *seq_lens;  // [B] device: keys cached per sequence (>= 1)
  const float *sinks;       // [H] attention-sink logits, or NULL (no sink)
  int32_t B, H, H_kv;       // H % H_kv == 0, H / H_kv <= ATTN_MAX_GROUP
  int32_t window;           // 0: every cached key; W > 0: the last W keys
  float scale;              // score scale, 1/sqrt(64)
} AttnDecodeArgs;

// First visible key of a sequence of len cached keys.
__host__ __device__ __forceinline__ int attn_first_key(int len, int window) {
  return window > 0 && len > window ? len - window : 0;
}

// Element offset of key j's row (K and V alike) for sequence b, KV head g.
__device__ __forceinline__ int64_t attn_kv_offset(const AttnKvView &kv, int b, int g, int j) {
  const int32_t page = __ldg(kv.block_table + (int64_t)b * kv.table_stride + (j >> kv.page_shift));
  return (int64_t)page * kv.page_stride + (int64_t)g * kv.head_stride +
         (int64_t)(j & ((1 << kv.page_shift) - 1)) * kv.token_stride;
}

// ---- PTX helpers: cp.async, ldmatrix, mma.sync (PTX ISA 8.x, sections "cp.async",
// "ldmatrix", "mma.m16n8k16") ---------------------------------------------------------
__device__ __forceinline__ void attn_cp_async16(uint32_t dst, const void *src, int src_bytes) {
  // src_bytes 0 writes 16 zero bytes: keys past the chunk read as 0, never as garbage
#if ATTN_L2_PREFETCH == 256
  asm volatile("cp.async.cg.shared.global.L2::256B [%0], [%1], 16, %2;\n" ::"r"(dst), "l"(src), "r"(src_bytes));
#elif ATTN_L2_PREFETCH == 128
  asm volatile("cp.async.cg.shared.global.L2::128B [%0], [%1], 16, %2;\n" ::"r"(dst), "l"(src), "r"(src_bytes));
#elif ATTN_L2_PREFETCH == 64
  asm volatile("cp.async.cg.shared.global.L2::64B [%0], [%1], 16, %2;\n" ::"r"(dst), "l"(src), "r"(src_bytes));
#else
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(dst), "l"(src), "r"(src_bytes));
#endif
}
__device__ __forceinline__ void attn_cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::); }
template <int N>
__device__ __forceinline__ void attn_cp_async_wait() { asm volatile("cp.async.wait_group %0;\n" ::"n"(N)); }

__device__ __forceinline__ void attn_ldmatrix_x4(uint32_t addr, uint32_t r[4]) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3]) : "r"(addr));
}
__device__ __forceinline__ void attn_ldmatrix_x4_trans(uint32_t addr, uint32_t r[4]) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3]) : "r"(addr));
}
// d += a (16×16 bf16, row) · b (16×8 bf16, col), fp32 accumulate.
__device__ __forceinline__ void attn_mma_bf16(float d[4], const uint32_t a[4], uint32_t b0, uint32_t b1) {
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, "
      "{%8,%9}, {%0,%1,%2,%3};\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}
__device__ __forceinline__ uint32_t attn_pack_bf16(float lo, float hi) {
  __nv_bfloat162 v = __floats2bfloat162_rn(lo, hi);  // lo in the low half: the lower column
  return *reinterpret_cast<uint32_t *>(&v);
}

// A tile is [ATTN_TILE keys][64 dims] bf16 = 64 rows of 128 bytes. The 16-byte chunk c of
// row r is stored at chunk c ^ (r & 7): the 8 rows an ldmatrix reads then hit 8 different
// bank groups instead of one (no conflicts).
__device__ __forceinline__ uint32_t attn_tile_addr(uint32_t base, int row, int chunk) {
  return base + row * 128 + ((chunk ^ (row & 7)) << 4);
}

// Strategy: CTA per (sequence b, KV head g, split); ATTN_STAGES-deep cp.async pipeline of
// 64-key K/V tiles; warp w owns keys 16w..16w+15 of each tile. S = Q·K^T with the G query
// heads as the 16 mma rows (rows >= G are zero), P stays in registers as the A operand of
// O += P·V (V through ldmatrix.trans); online softmax per warp, the 4 warps merged at the
// end. kUpper: G > 8, so rows 8..15 carry heads too. Limiter: DRAM read bandwidth (each K/V
// byte is read once per KV head; 16 MMAs per warp per tile leave the tensor cores ~90% idle).
// The body takes the pipeline depth as a template parameter: ch18's kernel below runs it at
// ATTN_STAGES, attn_splitkv_gqa_var_kernel at other depths (autotuners, e.g. ch20).
template <bool kUpper, int STAGES>
__device__ __forceinline__ void attn_splitkv_gqa_body(const AttnDecodeArgs &a, int num_splits,
                                                      float *__restrict__ o_part,
                                                      float *__restrict__ lse_part) {
  static_assert(STAGES >= 2 && STAGES <= 8, "pipeline depth 2..8");
  extern __shared__ __align__(128) unsigned char attn_smem[];
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  // Let the combine kernel (launched with programmatic stream serialization) be scheduled
  // now: its blocks wait in griddepcontrol.wait until this grid has finished and flushed.
  asm volatile("griddepcontrol.launch_dependents;\n" ::);
#endif
  const int split = blockIdx.x, g = blockIdx.y, b = blockIdx.z;
  const int G = a.H / a.H_kv, warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const int qr = lane >> 2, qc = lane & 3;  // mma fragment row (0..7) and column pair
  const int len = a.seq_lens[b], lo = attn_first_key(len, a.window);
  int chunk = (len - lo + num_splits - 1) / num_splits;
  chunk = (chunk + ATTN_TILE - 1) / ATTN_TILE * ATTN_TILE;
  const int start = lo + split * chunk, end = min(len, start + chunk);
  const int n_tiles = end > start ? (end - start + ATTN_TILE - 1) / ATTN_TILE : 0;
  const uint32_t smem = (uint32_t)__cvta_generic_to_shared(attn_smem);

  // Q as the A operand: 4 k-steps of 16 dims; a[0]/a[2] rows qr, a[1]/a[3] rows qr + 8.
  uint32_t qa[4][4];
  {
    const uint32_t *q = reinterpret_cast<const uint32_t *>(a.q + ((int64_t)b * a.H + (int64_t)g * G) * ATTN_HEAD_DIM);
    for (int ks = 0; ks < 4; ks++) {
      const int c = ks * 8 + qc;  // uint32 (bf16 pair) column
      qa[ks][0] = qr < G ? q[qr * 32 + c] : 0u;
      qa[ks][1] = qr + 8 < G ? q[(qr + 8) * 32 + c] : 0u;
      qa[ks][2] = qr < G ? q[qr * 32 + c + 4] : 0u;
      qa[ks][3] = qr + 8 < G ? q[(qr + 8) * 32 + c + 4] : 0u;
    }
  }

  // Issue the cp.async of tile t into stage st: 512 chunks of 16 B per operand, 4 each.
  auto load_tile = [&](int st, int t) {
    const uint32_t ks = smem + st * (2 * ATTN_TILE * 128), vs = ks + ATTN_TILE * 128;
#pragma unroll
    for (int i = 0; i < 4; i++) {
      const int idx = threadIdx.x + i * ATTN_THREADS, row = idx >> 3, c = idx & 7;
      const int j = start + t * ATTN_TILE + row;
      const int64_t off = j < end ? attn_kv_offset(a.kv, b, g, j) + c * 8 : 0;
      attn_cp_async16(attn_tile_addr(ks, row, c), a.kv.k + off, j < end ? 16 : 0);
      attn_cp_async16(attn_tile_addr(vs, row, c), a.kv.v + off, j < end ? 16 : 0);
    }
  };

  const float sl2 = a.scale * ATTN_LOG2E;  // scores in base-2 units: exp(x) = exp2(x·log2 e)
  float m_lo = -INFINITY, m_hi = -INFINITY, l_lo = 0.f, l_hi = 0.f, o[8][4];
#pragma unroll
  for (int n = 0; n < 8; n++) o[n][0] = o[n][1] = o[n][2] = o[n][3] = 0.f;

#pragma unroll
  for (int st = 0; st < STAGES - 1; st++) {
    if (st < n_tiles) load_tile(st, st);
    attn_cp_async_commit();
  }
  for (int t = 0; t < n_tiles; t++) {
    attn_cp_async_wait<STAGES - 2>();
    __syncthreads();  // tile t landed for every thread; stage (t-1) % STAGES is free again
    if (t + STAGES - 1 < n_tiles) load_tile((t + STAGES - 1) % STAGES, t + STAGES - 1);
    attn_cp_async_commit();

    const uint32_t ks = smem + (t % STAGES) * (2 * ATTN_TILE * 128), vs = ks + ATTN_TILE * 128;
    // S = Q · K^T for this warp's 16 keys: two n-tiles of 8 keys, 4 k-steps of 16 dims.
    float s[2][4];
#pragma unroll
    for (int nt = 0; nt < 2; nt++) {
      s[nt][0] = s[nt][1] = s[nt][2] = s[nt][3] = 0.f;
      const int row = warp * 16 + nt * 8 + (lane & 7);
#pragma unroll
      for (int half = 0; half < 2; half++) {  // dims 0..31, 32..63
        uint32_t kb[4];
        attn_ldmatrix_x4(attn_tile_addr(ks, row, half * 4 + (lane >> 3)), kb);
        attn_mma_bf16(s[nt], qa[half * 2], kb[0], kb[1]);
        attn_mma_bf16(s[nt], qa[half * 2 + 1], kb[2], kb[3]);
      }
    }
    // Online softmax over the 16 keys (per row: 4 values in this lane, 4 lanes per row).
    const int j0 = start + t * ATTN_TILE + warp * 16 + 2 * qc;
    float mx_lo = -INFINITY, mx_hi = -INFINITY;
#pragma unroll
    for (int nt = 0; nt < 2; nt++)
#pragma unroll
      for (int e = 0; e < 2; e++) {
        const bool ok = j0 + nt * 8 + e < end;
        s[nt][e] = ok ? s[nt][e] * sl2 : -INFINITY;
        s[nt][e + 2] = ok ? s[nt][e + 2] * sl2 : -INFINITY;
        mx_lo = fmaxf(mx_lo, s[nt][e]);
        mx_hi = fmaxf(mx_hi, s[nt][e + 2]);
      }
    mx_lo = fmaxf(mx_lo, __shfl_xor_sync(0xffffffffu, mx_lo, 1));
    mx_lo = fmaxf(mx_lo, __shfl_xor_sync(0xffffffffu, mx_lo, 2));
    const float mn_lo = fmaxf(m_lo, mx_lo), use_lo = mn_lo == -INFINITY ? 0.f : mn_lo;
    const float al_lo = exp2f(m_lo - use_lo);
    m_lo = mn_lo;
    float al_hi = 1.f, use_hi = 0.f;
    if (kUpper) {
      mx_hi = fmaxf(mx_hi, __shfl_xor_sync(0xffffffffu, mx_hi, 1));
      mx_hi = fmaxf(mx_hi, __shfl_xor_sync(0xffffffffu, mx_hi, 2));
      const float mn_hi = fmaxf(m_hi, mx_hi);
      use_hi = mn_hi == -INFINITY ? 0.f : mn_hi;
      al_hi = exp2f(m_hi - use_hi);
      m_hi = mn_hi;
    }
    uint32_t pa[4];  // P as the A operand of P·V: keys 0..7 in pa[0]/pa[1], 8..15 in pa[2]/pa[3]
    float sum_lo = 0.f, sum_hi = 0.f;
#pragma unroll
    for (int nt = 0; nt < 2; nt++) {
      const float p0 = exp2f(s[nt][0] - use_lo), p1 = exp2f(s[nt][1] - use_lo);
      sum_lo += p0 + p1;
      pa[nt * 2] = attn_pack_bf16(p0, p1);
      pa[nt * 2 + 1] = 0u;
      if (kUpper) {
        const float p2 = exp2f(s[nt][2] - use_hi), p3 = exp2f(s[nt][3] - use_hi);
        sum_hi += p2 + p3;
        pa[nt * 2 + 1] = attn_pack_bf16(p2, p3);
      }
    }
    l_lo = l_lo * al_lo + sum_lo;
    if (kUpper) l_hi = l_hi * al_hi + sum_hi;
    // O = O·alpha + P · V: 8 n-tiles of 8 dims; ldmatrix.trans turns V's rows into columns.
#pragma unroll
    for (int np = 0; np < 4; np++) {
      uint32_t vb[4];
      const int m = lane >> 3, row = warp * 16 + (m & 1) * 8 + (lane & 7);
      attn_ldmatrix_x4_trans(attn_tile_addr(vs, row, np * 2 + (m >> 1)), vb);
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
  __syncthreads();  // the pipeline's shared memory is reused below

  // Merge the 4 warps: each leaves (m, l, O) per row; row sums l were per lane until now.
  l_lo += __shfl_xor_sync(0xffffffffu, l_lo, 1);
  l_lo += __shfl_xor_sync(0xffffffffu, l_lo, 2);
  l_hi += __shfl_xor_sync(0xffffffffu, l_hi, 1);
  l_hi += __shfl_xor_sync(0xffffffffu, l_hi, 2);
  float *so = reinterpret_cast<float *>(attn_smem);  // [4 warps][16 rows][64] then m, l
  float *sm = so + 4 * 16 * 64, *sls = sm + 4 * 16;
  if (qc == 0) {
    sm[warp * 16 + qr] = m_lo;
    sls[warp * 16 + qr] = l_lo;
    sm[warp * 16 + qr + 8] = m_hi;
    sls[warp * 16 + qr + 8] = l_hi;
  }
#pragma unroll
  for (int n = 0; n < 8; n++) {
    float *r0 = so + (warp * 16 + qr) * 64 + n * 8 + 2 * qc;
    r0[0] = o[n][0];
    r0[1] = o[n][1];
    r0[8 * 64] = o[n][2];
    r0[8 * 64 + 1] = o[n][3];
  }
  __syncthreads();
  for (int idx = threadIdx.x; idx < G * ATTN_HEAD_DIM; idx += ATTN_THREADS) {
    const int r = idx >> 6, d = idx & 63, h = g * G + r;
    float M = -INFINITY, L = 0.f, O = 0.f;
    for (int w = 0; w < 4; w++) M = fmaxf(M, sm[w * 16 + r]);
    for (int w = 0; w < 4; w++) {
      const float mw = sm[w * 16 + r], f = mw == -INFINITY ? 0.f : exp2f(mw - M);
      L += sls[w * 16 + r] * f;
      O += so[(w * 16 + r) * 64 + d] * f;
    }
    const int64_t bh = (int64_t)b * a.H + h;
    if (num_splits == 1) {  // the only split: normalize here, sink included
      const float s2 = a.sinks ? a.sinks[h] * ATTN_LOG2E : -INFINITY, Mx = fmaxf(M, s2);
      const float f = exp2f(M - Mx), den = L * f + exp2f(s2 - Mx);
      a.out[bh * ATTN_HEAD_DIM + d] = __float2bfloat16_rn(O * f / den);
    } else {  // partial: normalized output and log2-sum-exp of this chunk
      o_part[(bh * num_splits + split) * ATTN_HEAD_DIM + d] = L > 0.f ? O / L : 0.f;
      if (d == 0) lse_part[bh * num_splits + split] = L > 0.f ? M + log2f(L) : -INFINITY;
    }
  }
}

template <bool kUpper>
__global__ void __launch_bounds__(ATTN_THREADS)
    attn_splitkv_gqa_kernel(const __grid_constant__ AttnDecodeArgs a, int num_splits,
                            float *__restrict__ o_part, float *__restrict__ lse_part) {
  attn_splitkv_gqa_body<kUpper, ATTN_STAGES>(a, num_splits, o_part, lse_part);
}

// The same kernel at another pipeline depth STAGES (2..8), for autotuners: launch with
// attn_splitkv_smem_bytes(STAGES) bytes of dynamic shared memory (attn_splitkv_launch_stages).
template <bool kUpper, int STAGES>
__global__ void __launch_bounds__(ATTN_THREADS)
    attn_splitkv_gqa_var_kernel(const __grid_constant__ AttnDecodeArgs a, int num_splits,
                                float *__restrict__ o_part, float *__restrict__ lse_part) {
  attn_splitkv_gqa_body<kUpper, STAGES>(a, num_splits, o_part, lse_part);
}

// Strategy: one warp per (sequence, query head); the lanes hold the splits' log2-sum-exp
// values (32 at a time) and their weights w_s = exp2(lse_s − M), lane l accumulates dims 2l,
// 2l+1 of Σ w_s·o_s with 8 partial loads in flight; the sink adds to the denominator only.
// Launched with PDL: it waits for the split kernel in griddepcontrol.wait. Limiter: latency.
__global__ void __launch_bounds__(128)
    attn_splitkv_combine_kernel(const float *__restrict__ o_part, const float *__restrict__ lse_part,
                                const float *__restrict__ sinks, __nv_bfloat16 *__restrict__ out,
                                int BH, int H, int num_splits) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.wait;\n" ::: "memory");
#endif
  const int bh = blockIdx.x * 4 + (threadIdx.x >> 5), lane = threadIdx.x & 31;
  if (bh >= BH) return;
  const float *lse = lse_part + (int64_t)bh * num_splits;
  const float s2 = sinks ? sinks[bh % H] * ATTN_LOG2E : -INFINITY;
  float M = s2, wsum = 0.f;
  for (int s = lane; s < num_splits; s += 32) M = fmaxf(M, lse[s]);
  for (int off = 16; off; off >>= 1) M = fmaxf(M, __shfl_xor_sync(0xffffffffu, M, off));
  for (int s = lane; s < num_splits; s += 32) wsum += exp2f(lse[s] - M);
  for (int off = 16; off; off >>= 1) wsum += __shfl_xor_sync(0xffffffffu, wsum, off);
  const float den = wsum + exp2f(s2 - M);
  const float2 *op = reinterpret_cast<const float2 *>(o_part + (int64_t)bh * num_splits * ATTN_HEAD_DIM) + lane;
  float acc0 = 0.f, acc1 = 0.f;
  for (int base = 0; base < num_splits; base += 32) {
    const int n = min(32, num_splits - base);
    const float w = lane < n ? exp2f(lse[base + lane] - M) : 0.f;
#pragma unroll 8
    for (int i = 0; i < n; i++) {
      const float wi = __shfl_sync(0xffffffffu, w, i);
      const float2 v = op[(base + i) * (ATTN_HEAD_DIM / 2)];
      acc0 = fmaf(wi, v.x, acc0);
      acc1 = fmaf(wi, v.y, acc1);
    }
  }
  reinterpret_cast<__nv_bfloat162 *>(out + (int64_t)bh * ATTN_HEAD_DIM)[lane] =
      __floats2bfloat162_rn(acc0 / den, acc1 / den);
}

// CTAs of attn_splitkv_gqa_kernel resident per SM, from the occupancy calculator. It also
// raises the kernels' dynamic shared-memory limit to ATTN_SMEM_BYTES: call it once before
// the first launch (needed when ATTN_STAGES > 3, i.e. more than the default 48 KB).
// Exits 3 through GTL_CUDA on a CUDA error.
static inline int attn_splitkv_ctas_per_sm(void) {
  int n0 = 0, n1 = 0;
  GTL_CUDA(cudaFuncSetAttribute(attn_splitkv_gqa_kernel<false>,
                                cudaFuncAttributeMaxDynamicSharedMemorySize, ATTN_SMEM_BYTES));
  GTL_CUDA(cudaFuncSetAttribute(attn_splitkv_gqa_kernel<true>,
                                cudaFuncAttributeMaxDynamicSharedMemorySize, ATTN_SMEM_BYTES));
  GTL_CUDA(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&n0, attn_splitkv_gqa_kernel<false>,
                                                         ATTN_THREADS, ATTN_SMEM_BYTES));
  GTL_CUDA(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&n1, attn_splitkv_gqa_kernel<true>,
                                                         ATTN_THREADS, ATTN_SMEM_BYTES));
  return n0 < n1 ? n0 : n1;
}

// Splits per (sequence, KV head) for B·H_kv pairs of at most max_keys visible keys on
// `slots` resident CTAs (SMs × attn_splitkv_ctas_per_sm()). All CTAs carry about the same
// work, so the time is waves × (tiles per CTA + about one tile of pipeline fill and
// epilogue): pick the split count that minimizes ceil(B·H_kv·s / slots) · (ceil(tiles / s)
// + 1), the smaller s on ties (fewer partials to write and merge); 1 <= s <= min(tiles, 256).
// The model assumes every sequence has about max_keys keys; shorter ones leave CTAs idle.
static inline int attn_splitkv_num_splits(int B, int H_kv, int max_keys, int slots) {
  if (slots < 1) slots = 1;
  const int64_t pairs = (int64_t)B * H_kv, tiles = (max_keys + ATTN_TILE - 1) / ATTN_TILE;
  int best = 1;
  int64_t best_cost = INT64_MAX;
  for (int s = 1; s <= tiles && s <= 256; s++) {
    const int64_t cost = ((pairs * s + slots - 1) / slots) * ((tiles + s - 1) / s + 1);
    if (cost < best_cost) best_cost = cost, best = s;
  }
  return best;
}

// Floats of workspace a launch with num_splits > 1 needs: partial outputs and their lse.
static inline size_t attn_splitkv_workspace_floats(int B, int H, int num_splits) {
  return num_splits > 1 ? (size_t)B * H * num_splits * (ATTN_HEAD_DIM + 1) : 0;
}

// Enqueue attn_splitkv_combine_kernel on stream s as a programmatic dependent launch (it is
// scheduled while the split kernel before it still runs): o_part [B*H][num_splits][64] and
// lse_part [B*H][num_splits] fp32 from the split kernel, sinks [H] fp32 or NULL, out
// [B*H][64] bf16. Exits 3 through GTL_CUDA on a launch error.
static inline void attn_splitkv_combine_launch(const float *o_part, const float *lse_part, const float *sinks,
                                               __nv_bfloat16 *out, int B, int H, int num_splits, cudaStream_t s) {
  int BH = B * H;
  cudaLaunchConfig_t cfg = {};
  cudaLaunchAttribute attr = {};
  attr.id = cudaLaunchAttributeProgrammaticStreamSerialization;
  attr.val.programmaticStreamSerializationAllowed = 1;
  cfg.gridDim = dim3((BH + 3) / 4);
  cfg.blockDim = dim3(128);
  cfg.stream = s;
  cfg.attrs = &attr;
  cfg.numAttrs = 1;
  GTL_CUDA(cudaLaunchKernelEx(&cfg, attn_splitkv_combine_kernel, o_part, lse_part, sinks, out, BH, H, num_splits));
}

// 1 when attn_splitkv_gqa_kernel can take these arguments, else 0 with a message on stderr.
static inline int attn_splitkv_args_ok(const AttnDecodeArgs *a, int num_splits, const float *workspace) {
  const int G = a->H_kv > 0 ? a->H / a->H_kv : 0;
  if (a->B < 1 || a->B > 65535 || G < 1 || a->H % a->H_kv || G > ATTN_MAX_GROUP || num_splits < 1 ||
      num_splits > 65535 || (num_splits > 1 && !workspace) ||
      (((uintptr_t)a->q | (uintptr_t)a->kv.k | (uintptr_t)a->kv.v) % 16) ||
      (a->kv.page_stride | a->kv.head_stride | a->kv.token_stride) % 8 ||
      a->kv.page_shift < 0 || a->kv.page_shift > 30) {
    fprintf(stderr, "attn_splitkv_launch: unsupported arguments (B=%d H=%d H_kv=%d splits=%d)\n",
            a->B, a->H, a->H_kv, num_splits);
    return 0;
  }
  return 1;
}

// Enqueue one attention step on stream s: the split kernel, then (num_splits > 1) the
// combine. workspace: attn_splitkv_workspace_floats(B, H, num_splits) floats (NULL when
// num_splits == 1). Returns 0, or -1 with a message on stderr for arguments the kernel
// cannot take (group > 16, B > 65535, unaligned pointers or strides, num_splits out of
// range). Shapes: see AttnDecodeArgs; head_dim is ATTN_HEAD_DIM (64).
static inline int attn_splitkv_launch(const AttnDecodeArgs *a, int num_splits, float *workspace,
                                      cudaStream_t s) {
  if (!attn_splitkv_args_ok(a, num_splits, workspace)) return -1;
  const int G = a->H / a->H_kv;
  float *o_part = workspace;
  float *lse_part = workspace ? workspace + (size_t)a->B * a->H * num_splits * ATTN_HEAD_DIM : NULL;
  const dim3 grid(num_splits, a->H_kv, a->B);
  if (G > 8)
    attn_splitkv_gqa_kernel<true><<<grid, ATTN_THREADS, ATTN_SMEM_BYTES, s>>>(*a, num_splits, o_part, lse_part);
  else
    attn_splitkv_gqa_kernel<false><<<grid, ATTN_THREADS, ATTN_SMEM_BYTES, s>>>(*a, num_splits, o_part, lse_part);
  GTL_LAUNCH();
  if (num_splits > 1) attn_splitkv_combine_launch(o_part, lse_part, a->sinks, a->out, a->B, a->H, num_splits, s);
  return 0;
}

// ---- other pipeline depths (autotuners, e.g. ch20; ch18 itself runs ATTN_STAGES) ----------

// Dynamic shared memory of the split kernel at `stages` cp.async stages (K and V tiles).
static inline int attn_splitkv_smem_bytes(int stages) { return stages * 2 * ATTN_TILE * ATTN_HEAD_DIM * 2; }

// attn_splitkv_ctas_per_sm for attn_splitkv_gqa_var_kernel<*, STAGES> (also raises its
// shared-memory limit: call it before the first launch). Exits 3 on a CUDA error.
template <int STAGES>
static inline int attn_splitkv_ctas_per_sm_stages(void) {
  const int smem = attn_splitkv_smem_bytes(STAGES);
  int n0 = 0, n1 = 0;
  GTL_CUDA(cudaFuncSetAttribute(attn_splitkv_gqa_var_kernel<false, STAGES>,
                                cudaFuncAttributeMaxDynamicSharedMemorySize, smem));
  GTL_CUDA(cudaFuncSetAttribute(attn_splitkv_gqa_var_kernel<true, STAGES>,
                                cudaFuncAttributeMaxDynamicSharedMemorySize, smem));
  GTL_CUDA(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&n0, attn_splitkv_gqa_var_kernel<false, STAGES>,
                                                         ATTN_THREADS, smem));
  GTL_CUDA(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&n1, attn_splitkv_gqa_var_kernel<true, STAGES>,
                                                         ATTN_THREADS, smem));
  return n0 < n1 ? n0 : n1;
}

// attn_splitkv_launch with the split kernel at STAGES pipeline stages (same arguments,
// workspace and return values; attn_splitkv_ctas_per_sm_stages<STAGES>() first).
template <int STAGES>
static inline int attn_splitkv_launch_stages(const AttnDecodeArgs *a, int num_splits, float *workspace,
                                             cudaStream_t s) {
  if (!attn_splitkv_args_ok(a, num_splits, workspace)) return -1;
  float *o_part = workspace;
  float *lse_part = workspace ? workspace + (size_t)a->B * a->H * num_splits * ATTN_HEAD_DIM : NULL;
  const dim3 grid(num_splits, a->H_kv, a->B);
  const int smem = attn_splitkv_smem_bytes(STAGES);
  if (a->H / a->H_kv > 8)
    attn_splitkv_gqa_var_kernel<true, STAGES><<<grid, ATTN_THREADS, smem, s>>>(*a, num_splits, o_part, lse_part);
  else
    attn_splitkv_gqa_var_kernel<false, STAGES><<<grid, ATTN_THREADS, smem, s>>>(*a, num_splits, o_part, lse_part);
  GTL_LAUNCH();
  if (num_splits > 1) attn_splitkv_combine_launch(o_part, lse_part, a->sinks, a->out, a->B, a->H, num_splits, s);
  return 0;
}
