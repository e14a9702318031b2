// attn_fp8_direct.cuh — ch19's register path: split-KV flash-decoding over an all-FP8 KV
// cache, the codes converted to fp16 in registers right before the MMAs (kernel only; the
// launcher in decode_attn_fp8.cuh picks it when every page is FP8).
//
// The widening kernel (attn_fp8_splitkv_kernel) turns each FP8 tile back into ch18's bf16
// tile in shared memory: per 64-key tile, 128 threads each convert a 64-dim row, store 128
// bytes and meet at one more barrier. That pass costs more instructions than the MMAs and
// leaves half of each 16 KB stage empty. Here a stage holds only the 16.5 KB the cache
// sends for 128 keys (3 stages in the 49.5 KB of ch18's three 64-key bf16 stages); each
// warp copies its own 32 keys' rows into it and builds its MMA operands from the FP8
// bytes itself:
// - K: ldmatrix on the 64-byte rows gives a lane 4 consecutive codes of one key; one
//   cvt.rn.f16x2.e4m3x2 per pair makes them fp16 B fragments. E4M3 → fp16 is exact (4
//   significant bits into 11, exponents 2^-9..2^8 inside fp16's range). Q is loaded once as
//   fp16 in the matching dim order (fp8kv_qk_dim).
// - V: ldmatrix.trans gives a lane 2 codes of each of 2 keys; a byte permute of two such
//   registers pairs the keys per dim, then one cvt per half. The output dims come out
//   permuted (fp8kv_pv_dim, fp8kv_swap_dim) and are put back in order when written.
// - Groups of <= 8 heads (the default build) swap the MMA operands: keys or dims as the
//   16 rows, heads as the 8 columns (see the kernel).
// - P·diag(sv) is packed as fp16. To keep it inside fp16's range whatever the scales, each
//   warp divides it by a power of two 2^E ≥ its largest V scale so far and rescales its
//   accumulators when E grows (with the softmax's alpha, at no extra cost); O is multiplied
//   by 2^E once, at the end. E never shrinks, so the rescale never enlarges.
// Limits: q entries must be finite fp16 (|q| < 65504) — bf16 q is converted once.
// Included by decode_attn_fp8.cuh after its argument structs (Attn8DecodeArgs).
#pragma once
#include <cuda_fp16.h>
#include <stdint.h>

// Keys per warp per tile: 32 (tiles of 128 keys), or 16 (tiles of 64 keys, ch18's split of
// the work) with -DATTN8D_KPW=16. Stages: 3 of 16.5 KB (or 6 of 8.25 KB), 49.5 KB either
// way, 4 CTAs per SM; -DATTN8D_STAGES=N to try another depth.
#ifndef ATTN8D_KPW
#define ATTN8D_KPW 32
#endif
static_assert(ATTN8D_KPW == 16 || ATTN8D_KPW == 32, "ATTN8D_KPW must be 16 or 32");
#define ATTN8D_TILE (4 * ATTN8D_KPW)
#ifndef ATTN8D_STAGES
#define ATTN8D_STAGES (ATTN8D_KPW == 32 ? 3 : 6)
#endif
// 1: for groups of <= 8 query heads, swap the MMA operands (K̂ and V̂ᵀ as the 16 rows, Qᵀ
// and Pᵀ as the 8 columns), so that no MMA row is a zero head: half the MMAs (see the
// kernel); 0: the heads are the MMA rows, as in ch18 (groups of 9..16 heads always are).
#ifndef ATTN8D_SWAP_AB
#define ATTN8D_SWAP_AB 1
#endif
// 1: each warp instruction of the tile loads copies 8 consecutive rows (whole 128-byte
// lines), one block-table look-up per row; 0: each thread copies 4 consecutive rows after
// one look-up (fp8kv_load_row): 8 half lines per instruction, measured 13% slower.
#ifndef ATTN8D_COALESCED
#define ATTN8D_COALESCED 1
#endif
// 1 (needs ATTN8D_COALESCED): with that map each warp loads exactly the rows and scale
// words of its own keys, so it waits for its tile with cp.async.wait_group + __syncwarp
// instead of a CTA barrier: the 4 warps no longer wait for the slowest at every tile.
#ifndef ATTN8D_WARP_SYNC
#define ATTN8D_WARP_SYNC 1
#endif
static_assert(!ATTN8D_WARP_SYNC || ATTN8D_COALESCED, "ATTN8D_WARP_SYNC needs ATTN8D_COALESCED");
// Resident CTAs per SM the register budget is sized for (__launch_bounds__): 4 → <= 128
// registers per thread; 6 → <= 80 (fits the swapped-operand path with 2 or 4 stages).
#ifndef ATTN8D_MIN_CTAS
#define ATTN8D_MIN_CTAS 4
#endif
#define ATTN8D_STAGE_BYTES (2 * ATTN8D_TILE * 64 + ATTN8D_TILE * 4)  // K, V codes, scale words
#define ATTN8D_SMEM_BYTES (ATTN8D_STAGES * ATTN8D_STAGE_BYTES)       // 49.5 KB: 4 CTAs per SM
static_assert(ATTN8D_STAGES >= 2 && ATTN8D_SMEM_BYTES >= (4 * 16 * 64 + 2 * 4 * 16) * 4, "epilogue does not fit");

#include "attn8_device.cuh"  // PTX wrappers, the shared epilogue, the per-tile scale/softmax step

// One tile of attn_fp8_direct_kernel with swapped operands (kSwap), for one warp: its
// MT · 16 keys at rows KPW·warp + 16mt + 0..15 of the stage (K codes at ks, V codes at vs,
// scale words sc), tile keys from key t0; qb: Qᵀ fragments; ot, mh, lh, E: the warp's Oᵀ,
// running maxima and sums of heads 2qc + e, and V-scale exponent (as the other path's).
template <int MT>
__device__ __forceinline__ void attn8d_swap_tile(uint32_t ks, uint32_t vs, const uint32_t *sc, int warp, int lane,
                                                 int t0, int lo, int end, bool full, float sl2,
                                                 const uint32_t (&qb)[4][2], float (&ot)[4][4], float (&mh)[2],
                                                 float (&lh)[2], int &E) {
  constexpr int KPW = 16 * MT;
  const int qr = lane >> 2;
  float st[MT][4];  // Sᵀ, m-tile mt: keys 16mt + qr (+ 8 in [2], [3]), heads 2qc, 2qc + 1
#pragma unroll
  for (int mt = 0; mt < MT; mt++) {
    st[mt][0] = st[mt][1] = st[mt][2] = st[mt][3] = 0.f;
#pragma unroll
    for (int h = 0; h < 2; h++) {
      uint32_t kr[4];  // matrix m: keys 16mt + 8(m & 1) + 0..7, dims of chunk 2h + (m >> 1)
      attn_ldmatrix_x4(ks + fp8kv_row_off(fp8kv_v_row(KPW, warp, mt, lane), fp8kv_v_chunk(h, lane)), kr);
#pragma unroll
      for (int hs = 0; hs < 2; hs++) {  // k-step 2h + hs: A = K̂ (rows: keys), B = Qᵀ
        const uint32_t ka[4] = {attn8d_cvt_lo(kr[2 * hs]), attn8d_cvt_lo(kr[2 * hs + 1]), attn8d_cvt_hi(kr[2 * hs]),
                                attn8d_cvt_hi(kr[2 * hs + 1])};
        attn8d_mma_f16(st[mt], ka, qb[2 * h + hs][0], qb[2 * h + hs][1]);
      }
    }
  }
  // Scale words of this lane's keys KPW·warp + 16mt + 8kh + qr: K scale (times scale·log2 e)
  // into both its scores, V scale into p; keys outside [lo, end) -inf.
  float vsc[MT][2], mx[2] = {-INFINITY, -INFINITY}, vmax = 0.f;
#pragma unroll
  for (int mt = 0; mt < MT; mt++)
#pragma unroll
    for (int kh = 0; kh < 2; kh++) {
      const uint32_t w = sc[KPW * warp + 16 * mt + 8 * kh + qr];
      const float ksc = fp8kv_bf16_bits_to_float((uint16_t)(w & 0xFFFFu)) * sl2;
      vsc[mt][kh] = fp8kv_bf16_bits_to_float((uint16_t)(w >> 16));
      vmax = fmaxf(vmax, vsc[mt][kh]);
      st[mt][2 * kh] *= ksc;
      st[mt][2 * kh + 1] *= ksc;
    }
  if (!full)
#pragma unroll
    for (int mt = 0; mt < MT; mt++)
#pragma unroll
      for (int kh = 0; kh < 2; kh++) {
        const int j = t0 + KPW * warp + 16 * mt + 8 * kh + qr;
        if (j < lo || j >= end) st[mt][2 * kh] = st[mt][2 * kh + 1] = -INFINITY;
      }
#pragma unroll
  for (int mt = 0; mt < MT; mt++)
#pragma unroll
    for (int kh = 0; kh < 2; kh++) mx[0] = fmaxf(mx[0], st[mt][2 * kh]), mx[1] = fmaxf(mx[1], st[mt][2 * kh + 1]);
  float use[2], al[2];
#pragma unroll
  for (int e = 0; e < 2; e++) {  // the maxima over the column's 8 lanes (all the warp's keys)
    for (int off = 4; off < 32; off <<= 1) mx[e] = fmaxf(mx[e], __shfl_xor_sync(0xffffffffu, mx[e], off));
    const float mn = fmaxf(mh[e], mx[e]);
    use[e] = mn == -INFINITY ? 0.f : mn;
    al[e] = attn8d_exp2(mh[e] - use[e]);
    mh[e] = mn;
  }
  for (int off = 4; off < 32; off <<= 1) vmax = fmaxf(vmax, __shfl_xor_sync(0xffffffffu, vmax, off));
  const int e_t = vmax > 0.f ? (int)((__float_as_uint(vmax) >> 23) & 0xFF) - 126 : E;
  const int E_new = min(max(E, e_t), 127);
  const float rescale = E_new > E ? attn8d_pow2(E - E_new < -126 ? -126 : E - E_new) : 1.f;
  const float inv = attn8d_pow2(-E_new < -126 ? -126 : -E_new);
  E = E_new;
  uint32_t pb[MT][2];  // Pᵀ·diag(sv)·2^-E as fp16 B fragments of k-step mt: keys 2qc.. (and 8 + 2qc..), head qr
  float sum[2] = {0.f, 0.f};
#pragma unroll
  for (int mt = 0; mt < MT; mt++)
#pragma unroll
    for (int kh = 0; kh < 2; kh++) {
      const float p0 = attn8d_exp2(st[mt][2 * kh] - use[0]), p1 = attn8d_exp2(st[mt][2 * kh + 1] - use[1]);
      sum[0] += p0, sum[1] += p1;
      const float f = vsc[mt][kh] * inv;
      pb[mt][kh] = attn8d_movmatrix_t(attn8d_pack_f16(p0 * f, p1 * f));  // key rows → head rows
    }
#pragma unroll
  for (int e = 0; e < 2; e++) {
    lh[e] = lh[e] * al[e] + sum[e];
    const float f = al[e] * rescale;
#pragma unroll
    for (int ch = 0; ch < 4; ch++) ot[ch][e] *= f, ot[ch][e + 2] *= f;
  }
#pragma unroll
  for (int kk = 0; kk < MT; kk++)
#pragma unroll
    for (int sg = 0; sg < 2; sg++) {  // Oᵀ += V̂ᵀ · Pᵀ: chunks 2sg, 2sg + 1 (16 dims each)
      uint32_t vr[4];  // matrix m: keys 16kk + 8(m & 1) + 0..7, dims of chunk 2sg + (m >> 1)
      attn_ldmatrix_x4_trans(vs + fp8kv_row_off(fp8kv_v_row(KPW, warp, kk, lane), fp8kv_v_chunk(sg, lane)), vr);
#pragma unroll
      for (int hs = 0; hs < 2; hs++) {  // rows qr / qr + 8: dims 2qr / 2qr + 1 of the chunk
        const uint32_t ve = __byte_perm(vr[2 * hs], vr[2 * hs + 1], FP8KV_V_SEL_EVEN);
        const uint32_t vo = __byte_perm(vr[2 * hs], vr[2 * hs + 1], FP8KV_V_SEL_ODD);
        const uint32_t va[4] = {attn8d_cvt_lo(ve), attn8d_cvt_lo(vo), attn8d_cvt_hi(ve), attn8d_cvt_hi(vo)};
        attn8d_mma_f16(ot[2 * sg + hs], va, pb[kk][0], pb[kk][1]);
      }
    }
}

// Strategy: ch18's CTA per (sequence, KV head, split) and cp.async tile pipeline, with
// tiles of ATTN8D_TILE keys and warp w owning keys w·KPW .. w·KPW + KPW − 1 of each, online
// softmax; operands built in registers from FP8 (see the top of this file); the epilogue is
// ch18's. Per tile a warp pays a fixed cost (cp.async wait, softmax max/exp/rescale of O,
// the V-scale exponent) on top of the per-key MMAs and conversions: with 32 keys per warp
// it is paid once per 32 keys instead of 16. With ATTN8D_COALESCED and ATTN8D_WARP_SYNC
// (default) each warp loads its own keys in whole 128-byte lines and waits only for them.
// Limiter: DRAM read at 132 B per (key, KV head), reached at 71% of peak on an H200 (ncu,
// 16 × 8192); the rest is each warp's dependent chain per tile. Arguments as
// attn_fp8_splitkv_kernel; every page must be FP8.
//
// kSwap (groups of <= 8 heads, ATTN8D_SWAP_AB): Sᵀ = K̂ · Qᵀ with 16 keys as the MMA rows and
// the 8 heads as its columns, then Oᵀ = V̂ᵀ · Pᵀ with 16 (renumbered) dims as the rows: every
// MMA row carries data, so a warp needs 2 MMAs per 16 keys and 16 dims instead of 4. S
// comes out with keys down the lanes, so each 8x8 block of P is transposed into the B
// layout by one movmatrix; the row maxima and sums run across the 8 lanes of a column.
template <bool kUpper, bool kSwap = false>
__global__ void __launch_bounds__(ATTN_THREADS, ATTN8D_MIN_CTAS)  // 4: <= 128 registers
    attn_fp8_direct_kernel(const __grid_constant__ Attn8DecodeArgs a, int num_splits,
                           float *__restrict__ o_part, float *__restrict__ lse_part) {
  static_assert(!(kUpper && kSwap), "the swapped operands take groups of <= 8 heads");
  constexpr int KPW = ATTN8D_KPW, TILE = ATTN8D_TILE, NT = KPW / 8, KK = KPW / 16, RPT = TILE / 32;
  extern __shared__ __align__(128) unsigned char attn8d_smem[];
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.launch_dependents;\n" ::);
#endif
  const int split = blockIdx.x, g = blockIdx.y, b = blockIdx.z;
  const int G = a.H / a.H_kv, warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const int qr = lane >> 2, qc = lane & 3;
  // Tiles sit at multiples of TILE in key positions: the chunks start at lo rounded down,
  // and keys before lo or at/after end read as zeros and are masked like keys past the end.
  const int len = a.seq_lens[b], lo = attn_first_key(len, a.window), lo_al = lo & ~(TILE - 1);
  int chunk = (len - lo_al + num_splits - 1) / num_splits;
  chunk = (chunk + TILE - 1) / TILE * TILE;
  const int start = lo_al + split * chunk, end = min(len, start + chunk);
  const int n_tiles = end > start ? (end - start + TILE - 1) / TILE : 0;
  const uint32_t smem = (uint32_t)__cvta_generic_to_shared(attn8d_smem);

  uint32_t qa[4][4];  // Q as fp16 A fragments, dims in fp8kv_qk_dim order
  {
    const __nv_bfloat162 *q =
        reinterpret_cast<const __nv_bfloat162 *>(a.q + ((int64_t)b * a.H + (int64_t)g * G) * ATTN_HEAD_DIM);
    for (int ks = 0; ks < 4; ks++)
      for (int i = 0; i < 4; i++) {
        const int r = qr + (i & 1) * 8, d = fp8kv_qk_dim(ks, qc, i >> 1);
        const float2 f = r < G ? __bfloat1622float2(q[(r * ATTN_HEAD_DIM + d) >> 1]) : make_float2(0.f, 0.f);
        qa[ks][i] = attn8d_pack_f16(f.x, f.y);
      }
  }
  uint32_t qb[4][2];  // kSwap: Qᵀ as fp16 B fragments, head qr, the k slots of fp8kv_qk_dim
  {
    const __nv_bfloat162 *q =
        reinterpret_cast<const __nv_bfloat162 *>(a.q + ((int64_t)b * a.H + (int64_t)g * G) * ATTN_HEAD_DIM);
    for (int ks = 0; ks < 4; ks++)
      for (int hi = 0; hi < 2; hi++) {
        const float2 f = qr < G ? __bfloat1622float2(q[(qr * ATTN_HEAD_DIM + fp8kv_qk_dim(ks, qc, hi)) >> 1])
                                : make_float2(0.f, 0.f);
        qb[ks][hi] = attn8d_pack_f16(f.x, f.y);
      }
  }

  // Tile t into stage st (fp8kv_load_row0): RPT consecutive rows, chunk lc of K and V each,
  // and one scale word. The RPT rows start at a multiple of RPT, so with pages of >= 4
  // tokens (the launcher's condition) they share a page and one block-table look-up.
  // Keys outside [lo, end) are zeros (codes and scales): source size 0, nothing is read
  // (their addresses stay inside the page of a key that exists, or at the pool's start).
  const int lc = threadIdx.x & 3, lr0 = fp8kv_load_row0(threadIdx.x, TILE);
  const int32_t *table = a.kv.block_table + (int64_t)b * a.kv.table_stride;
  const int pmask = (1 << a.kv.page_shift) - 1;
  const int64_t head_off = (int64_t)g * a.kv.head_stride, sc_head_off = (int64_t)g * a.kv.scale_head_stride;
  auto load_tile = [&](int st, int t) {
    const uint32_t ks = smem + st * ATTN8D_STAGE_BYTES, vs = ks + TILE * 64;
    if (ATTN8D_COALESCED) {  // fp8kv_load_row(.., 1): one look-up per row
#pragma unroll
      for (int i = 0; i < RPT; i++) {
        const int r = fp8kv_load_row(threadIdx.x, i, TILE, 1), j = start + t * TILE + r;
        const bool ok = j >= lo && j < end;
        int64_t off = 0;
        if (ok)
          off = (int64_t)(__ldg(table + (j >> a.kv.page_shift)) & FP8KV_PAGE_MASK) * a.kv.page_stride + head_off +
                (int64_t)(j & pmask) * ATTN_HEAD_DIM + lc * 16;
        attn_cp_async16(ks + fp8kv_row_off(r, lc), a.kv.k8 + off, ok ? 16 : 0);
        attn_cp_async16(vs + fp8kv_row_off(r, lc), a.kv.v8 + off, ok ? 16 : 0);
      }
      const int r = fp8kv_scale_row(threadIdx.x, TILE, 1), j = start + t * TILE + r;
      if (r >= 0) {
        const bool ok = j >= lo && j < end;
        int64_t soff = 0;
        if (ok)
          soff = (int64_t)(__ldg(table + (j >> a.kv.page_shift)) & FP8KV_PAGE_MASK) * a.kv.scale_page_stride +
                 sc_head_off + (j & pmask);
        attn8d_cp_async4(vs + TILE * 64 + r * 4, a.kv.scales + soff, ok ? 4 : 0);
      }
      return;
    }
    const int j0 = start + t * TILE + lr0;
    int64_t off0 = 0, soff0 = 0;
    if (j0 + RPT - 1 >= lo && j0 < end) {
      const int64_t e = __ldg(table + (j0 >> a.kv.page_shift)) & FP8KV_PAGE_MASK;
      off0 = e * a.kv.page_stride + head_off + (int64_t)(j0 & pmask) * ATTN_HEAD_DIM + lc * 16;
      soff0 = e * a.kv.scale_page_stride + sc_head_off + (j0 & pmask);
    }
    const uint8_t *kp = a.kv.k8 + off0, *vp = a.kv.v8 + off0;
#pragma unroll
    for (int i = 0; i < RPT; i++) {
      const int n = j0 + i >= lo && j0 + i < end ? 16 : 0;
      attn_cp_async16(ks + fp8kv_row_off(lr0 + i, lc), kp + i * ATTN_HEAD_DIM, n);
      attn_cp_async16(vs + fp8kv_row_off(lr0 + i, lc), vp + i * ATTN_HEAD_DIM, n);
    }
    if (lc < RPT)
      attn8d_cp_async4(vs + TILE * 64 + (lr0 + lc) * 4, a.kv.scales + soff0 + lc,
                       j0 + lc >= lo && j0 + lc < end ? 4 : 0);
  };

  const float sl2 = a.scale * ATTN_LOG2E;
  float m_lo = -INFINITY, m_hi = -INFINITY, l_lo = 0.f, l_hi = 0.f, o[8][4];
  int E = -126;  // this warp's P·V scale exponent: O (true) = o · 2^E
#pragma unroll
  for (int n = 0; n < 8; n++) o[n][0] = o[n][1] = o[n][2] = o[n][3] = 0.f;
  // kSwap: Oᵀ, dim chunk ch: rows qr, qr + 8 = dims 16ch + 2qr, + 1; heads 2qc, 2qc + 1; and
  // the running max and sum of heads 2qc + e
  float ot[4][4], mh[2] = {-INFINITY, -INFINITY}, lh[2] = {0.f, 0.f};
#pragma unroll
  for (int n = 0; n < 4; n++) ot[n][0] = ot[n][1] = ot[n][2] = ot[n][3] = 0.f;

#pragma unroll
  for (int st = 0; st < ATTN8D_STAGES - 1; st++) {
    if (st < n_tiles) load_tile(st, st);
    attn_cp_async_commit();
  }
  for (int t = 0; t < n_tiles; t++) {
    attn_cp_async_wait<ATTN8D_STAGES - 2>();
    if (ATTN8D_WARP_SYNC)
      __syncwarp();  // this warp's rows of tile t landed; its rows of stage (t-1) % STAGES are free
    else
      __syncthreads();  // tile t landed everywhere; stage (t-1) % STAGES is free
    if (t + ATTN8D_STAGES - 1 < n_tiles) load_tile((t + ATTN8D_STAGES - 1) % ATTN8D_STAGES, t + ATTN8D_STAGES - 1);
    attn_cp_async_commit();

    const int st = t % ATTN8D_STAGES;
    const uint32_t ks = smem + st * ATTN8D_STAGE_BYTES, vs = ks + TILE * 64;
    const uint32_t *sc = reinterpret_cast<const uint32_t *>(attn8d_smem + st * ATTN8D_STAGE_BYTES + 2 * TILE * 64);
    const bool full = start + t * TILE >= lo && start + t * TILE + TILE <= end;
    if constexpr (kSwap) {
      attn8d_swap_tile<KK>(ks, vs, sc, warp, lane, start + t * TILE, lo, end, full, sl2, qb, ot, mh, lh, E);
    } else {
      float s[NT][4];  // S = Q · K̂ᵀ: n-tile nt holds keys KPW·w + 8nt + 0..7
#pragma unroll
      for (int nt = 0; nt < NT; nt++) {
        s[nt][0] = s[nt][1] = s[nt][2] = s[nt][3] = 0.f;
        uint32_t kr[4];  // matrix m = dims 16m..16m+15 of this lane's key
        attn_ldmatrix_x4(ks + fp8kv_row_off(fp8kv_k_row(KPW, warp, nt, lane), lane >> 3), kr);
#pragma unroll
        for (int m = 0; m < 4; m++) attn8d_mma_f16(s[nt], qa[m], attn8d_cvt_lo(kr[m]), attn8d_cvt_hi(kr[m]));
      }
      // Scale words of this lane's 2·NT key columns: K scale into the score, V scale into p.
      const int c0 = warp * KPW + 2 * qc, j0 = start + t * TILE + c0;
      float vsc[NT][2], use_lo, use_hi, al_lo, al_hi;
      attn8_scale_scores<kUpper, NT>(s, sc, c0, j0, lo, end, full, sl2, vsc, m_lo, m_hi, use_lo, use_hi, al_lo, al_hi);
      float vmax = 0.f;
#pragma unroll
      for (int nt = 0; nt < NT; nt++) vmax = fmaxf(vmax, fmaxf(vsc[nt][0], vsc[nt][1]));
      vmax = fmaxf(vmax, __shfl_xor_sync(0xffffffffu, vmax, 1));
      vmax = fmaxf(vmax, __shfl_xor_sync(0xffffffffu, vmax, 2));  // the warp's KPW keys
      // 2^E_new >= vmax: E_new = max(E, exponent of vmax + 1); vmax 0 (no key) keeps E.
      const int e_t = vmax > 0.f ? (int)((__float_as_uint(vmax) >> 23) & 0xFF) - 126 : E;
      const int E_new = min(max(E, e_t), 127);
      const float rescale = E_new > E ? attn8d_pow2(E - E_new < -126 ? -126 : E - E_new) : 1.f;
      const float inv = attn8d_pow2(-E_new < -126 ? -126 : -E_new);
      E = E_new;
      uint32_t pa[KK][4];  // P·diag(sv)·2^-E as the fp16 A operands of P·V̂, 16 keys each
      float sum_lo = 0.f, sum_hi = 0.f;
#pragma unroll
      for (int nt = 0; nt < NT; nt++) {
        const float p0 = attn8d_exp2(s[nt][0] - use_lo), p1 = attn8d_exp2(s[nt][1] - use_lo);
        sum_lo += p0 + p1;
        pa[nt >> 1][(nt & 1) * 2] = attn8d_pack_f16(p0 * (vsc[nt][0] * inv), p1 * (vsc[nt][1] * inv));
        pa[nt >> 1][(nt & 1) * 2 + 1] = 0u;
        if (kUpper) {
          const float p2 = attn8d_exp2(s[nt][2] - use_hi), p3 = attn8d_exp2(s[nt][3] - use_hi);
          sum_hi += p2 + p3;
          pa[nt >> 1][(nt & 1) * 2 + 1] = attn8d_pack_f16(p2 * (vsc[nt][0] * inv), p3 * (vsc[nt][1] * inv));
        }
      }
      l_lo = l_lo * al_lo + sum_lo;
      if (kUpper) l_hi = l_hi * al_hi + sum_hi;
      const float f_lo = al_lo * rescale, f_hi = al_hi * rescale;
#pragma unroll
      for (int n = 0; n < 8; n++) {  // O = O·f first, then + P · V̂ for each k-step
        o[n][0] *= f_lo;
        o[n][1] *= f_lo;
        if (kUpper) {
          o[n][2] *= f_hi;
          o[n][3] *= f_hi;
        }
      }
#pragma unroll
      for (int kk = 0; kk < KK; kk++)
#pragma unroll
        for (int sg = 0; sg < 2; sg++) {  // 32 dims (2 slabs) per ldmatrix
          uint32_t vr[4];  // matrix m: keys 16kk + 8(m & 1) + 0..7, dims of slab 2sg + (m >> 1)
          attn_ldmatrix_x4_trans(vs + fp8kv_row_off(fp8kv_v_row(KPW, warp, kk, lane), fp8kv_v_chunk(sg, lane)), vr);
#pragma unroll
          for (int hs = 0; hs < 2; hs++)
#pragma unroll
            for (int par = 0; par < 2; par++) {  // even / odd dims of the slab
              const uint32_t v = __byte_perm(vr[2 * hs], vr[2 * hs + 1], par ? FP8KV_V_SEL_ODD : FP8KV_V_SEL_EVEN);
              attn8d_mma_f16(o[(2 * sg + hs) * 2 + par], pa[kk], attn8d_cvt_lo(v), attn8d_cvt_hi(v));
            }
        }
    }
  }
  attn_cp_async_wait<0>();
  __syncthreads();

  // Merge the 4 warps and write (ch18's epilogue; dims back in order, o times 2^E).
  float *so = reinterpret_cast<float *>(attn8d_smem);
  const float pe = ldexpf(1.f, E);
  if constexpr (kSwap) {  // head 2qc + e: sum over the 8 lanes of its column, then Oᵀ
    float *sm = so + 4 * 16 * 64, *sls = sm + 4 * 16;
#pragma unroll
    for (int e = 0; e < 2; e++) {
      for (int off = 4; off < 32; off <<= 1) lh[e] += __shfl_xor_sync(0xffffffffu, lh[e], off);
      if (qr == 0) sm[warp * 16 + 2 * qc + e] = mh[e], sls[warp * 16 + 2 * qc + e] = lh[e];
#pragma unroll
      for (int ch = 0; ch < 4; ch++) {
        float *r0 = so + (warp * 16 + 2 * qc + e) * 64;
        r0[fp8kv_swap_dim(ch, qr, 0)] = ot[ch][e] * pe;
        r0[fp8kv_swap_dim(ch, qr, 1)] = ot[ch][e + 2] * pe;
      }
    }
  } else {
    attn8_stash_ml(attn8d_smem, warp, qr, qc, m_lo, m_hi, l_lo, l_hi);
#pragma unroll
    for (int n = 0; n < 8; n++)
#pragma unroll
      for (int e = 0; e < 2; e++) {
        float *r0 = so + (warp * 16 + qr) * 64 + fp8kv_pv_dim(n, qc, e);
        r0[0] = o[n][e] * pe;
        r0[8 * 64] = o[n][e + 2] * pe;
      }
  }
  __syncthreads();
  attn8_merge_write(a, so, g, b, split, num_splits, o_part, lse_part);
}
