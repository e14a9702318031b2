// attn8_device.cuh — the device building blocks of ch19's two attention kernels: PTX
// wrappers (4-byte cp.async, E4M3x2 → fp16x2 cvt, ex2, fp16 m16n8k16 MMA, movmatrix), the
// epilogue both kernels share (attn8_stash_ml, attn8_merge_write: ch18's cross-warp merge
// and split output) and the per-tile scale and online-softmax step (attn8_scale_scores).
// Device functions only. Included by attn_fp8_direct.cuh after its ATTN8D_* settings (it
// needs decode_attn_fp8.cuh's Attn8DecodeArgs and ch18's ATTN_* constants before it).
#pragma once
#include <cuda_fp16.h>
#include <stdint.h>

// 1: exp2 as one ex2.approx.ftz.f32 (MUFU.EX2); 0: exp2f, which adds a range check and two
// multiplies around it to keep results below 2^-126 (flushed to 0 here: they are p values
// that would not register against the row's sum anyway).
#ifndef ATTN8D_FAST_EXP2
#define ATTN8D_FAST_EXP2 1
#endif
// cp.async of 4 bytes; src_bytes 0 writes zeros (a key past the chunk gets scale words 0).
__device__ __forceinline__ void attn8d_cp_async4(uint32_t dst, const void *src, int src_bytes) {
  asm volatile("cp.async.ca.shared.global [%0], [%1], 4, %2;\n" ::"r"(dst), "l"(src), "r"(src_bytes));
}
// The two E4M3 codes in the low (attn8d_cvt_lo) or high (attn8d_cvt_hi) 16 bits of x, the
// lower byte to the lower half, to fp16x2, exact (PTX cvt.rn.f16x2.e4m3x2, sm_89+). Taking
// the half with mov.b32 {lo, hi} lets ptxas read it in place (F2FP … R.H1): no shift.
__device__ __forceinline__ uint32_t attn8d_cvt_lo(uint32_t x) {
  uint32_t r;
  asm("{\n .reg .b16 lo, hi;\n mov.b32 {lo, hi}, %1;\n cvt.rn.f16x2.e4m3x2 %0, lo;\n}\n" : "=r"(r) : "r"(x));
  return r;
}
__device__ __forceinline__ uint32_t attn8d_cvt_hi(uint32_t x) {
  uint32_t r;
  asm("{\n .reg .b16 lo, hi;\n mov.b32 {lo, hi}, %1;\n cvt.rn.f16x2.e4m3x2 %0, hi;\n}\n" : "=r"(r) : "r"(x));
  return r;
}
// 2^x for the softmax (x <= 0 here): see ATTN8D_FAST_EXP2.
__device__ __forceinline__ float attn8d_exp2(float x) {
#if ATTN8D_FAST_EXP2
  float r;
  asm("ex2.approx.ftz.f32 %0, %1;\n" : "=f"(r) : "f"(x));
  return r;
#else
  return exp2f(x);
#endif
}
__device__ __forceinline__ uint32_t attn8d_pack_f16(float lo, float hi) {
  __half2 v = __floats2half2_rn(lo, hi);
  return *reinterpret_cast<uint32_t *>(&v);
}
// d += a (16×16 fp16, row) · b (16×8 fp16, col), fp32 accumulate.
__device__ __forceinline__ void attn8d_mma_f16(float d[4], const uint32_t a[4], uint32_t b0, uint32_t b1) {
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, "
      "{%8,%9}, {%0,%1,%2,%3};\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}
// The transpose of an 8x8 16-bit matrix held as one mma fragment (lane t: row t/4, columns
// 2(t%4), 2(t%4)+1) in the same fragment layout (PTX movmatrix, sm_75+).
__device__ __forceinline__ uint32_t attn8d_movmatrix_t(uint32_t x) {
  uint32_t r;
  asm volatile("movmatrix.sync.aligned.m8n8.trans.b16 %0, %1;\n" : "=r"(r) : "r"(x));
  return r;
}
// 2^e as a float for -126 <= e <= 127 (exact).
__device__ __forceinline__ float attn8d_pow2(int e) { return __uint_as_float((uint32_t)(e + 127) << 23); }

// ---- The epilogue both ch19 kernels share (ch18's): each warp holds (m, l) and o for
// its 16 keys' share of every query row of the group; they are merged across the 4 warps
// through shared memory (so [4][16][64] o rows, then [4][16] m, then [4][16] l, floats).
// attn8_stash_ml sums l over the lane quad, stores m and l and returns so, where the
// caller writes its o rows (true dim order), then __syncthreads, then attn8_merge_write:
// with one split it applies the sinks and writes out (bf16), else the split's o / l and
// log2-sum-exp (m + log2 l) for attn_splitkv_combine_kernel.
__device__ __forceinline__ float *attn8_stash_ml(unsigned char *smem, int warp, int qr, int qc, float m_lo,
                                                 float m_hi, float l_lo, float l_hi) {
  l_lo += __shfl_xor_sync(0xffffffffu, l_lo, 1);
  l_lo += __shfl_xor_sync(0xffffffffu, l_lo, 2);
  l_hi += __shfl_xor_sync(0xffffffffu, l_hi, 1);
  l_hi += __shfl_xor_sync(0xffffffffu, l_hi, 2);
  float *so = reinterpret_cast<float *>(smem);
  float *sm = so + 4 * 16 * 64, *sls = sm + 4 * 16;
  if (qc == 0) {
    sm[warp * 16 + qr] = m_lo;
    sls[warp * 16 + qr] = l_lo;
    sm[warp * 16 + qr + 8] = m_hi;
    sls[warp * 16 + qr + 8] = l_hi;
  }
  return so;
}
__device__ __forceinline__ void attn8_merge_write(const Attn8DecodeArgs &a, const float *so, int g, int b,
                                                  int split, int num_splits, float *o_part, float *lse_part) {
  const float *sm = so + 4 * 16 * 64, *sls = sm + 4 * 16;
  const int G = a.H / a.H_kv;
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
    if (num_splits == 1) {
      const float s2 = a.sinks ? a.sinks[h] * ATTN_LOG2E : -INFINITY, Mx = fmaxf(M, s2);
      const float f = exp2f(M - Mx), den = L * f + exp2f(s2 - Mx);
      a.out[bh * ATTN_HEAD_DIM + d] = __float2bfloat16_rn(O * f / den);
    } else {
      o_part[(bh * num_splits + split) * ATTN_HEAD_DIM + d] = L > 0.f ? O / L : 0.f;
      if (d == 0) lse_part[bh * num_splits + split] = L > 0.f ? M + log2f(L) : -INFINITY;
    }
  }
}

// The scale step both ch19 kernels share, per tile: this lane's 2·NT key columns (c0 + 8nt
// + e in the tile, key j0 + 8nt + e; c0 even) get their K scale (times scale · log2 e) on
// the scores, keys outside [lo, end) become -inf (unless the caller knows the tile is
// full), their V scales go to vsc, then ch18's online-softmax max update for the lower 8
// query rows (and the upper 8 when kUpper): the new maxima in m_*, the values to subtract
// in use_*, the factors for the old l and O in al_*.
template <bool kUpper, int NT = 2>
__device__ __forceinline__ void attn8_scale_scores(float (*s)[4], const uint32_t *sc, int c0, int j0, int lo,
                                                   int end, bool full, float sl2, float (*vsc)[2], float &m_lo,
                                                   float &m_hi, float &use_lo, float &use_hi, float &al_lo,
                                                   float &al_hi) {
  float mx_lo = -INFINITY, mx_hi = -INFINITY;
#pragma unroll
  for (int nt = 0; nt < NT; nt++) {
    const uint2 w2 = *reinterpret_cast<const uint2 *>(sc + c0 + nt * 8);  // columns e = 0, 1
#pragma unroll
    for (int e = 0; e < 2; e++) {
      const uint32_t w = e ? w2.y : w2.x;
      const float ksc = fp8kv_bf16_bits_to_float((uint16_t)(w & 0xFFFFu)) * sl2;
      vsc[nt][e] = fp8kv_bf16_bits_to_float((uint16_t)(w >> 16));
      s[nt][e] *= ksc;
      s[nt][e + 2] *= ksc;
    }
  }
  if (!full)
#pragma unroll
    for (int nt = 0; nt < NT; nt++)
#pragma unroll
      for (int e = 0; e < 2; e++)
        if (j0 + nt * 8 + e < lo || j0 + nt * 8 + e >= end) s[nt][e] = s[nt][e + 2] = -INFINITY;
#pragma unroll
  for (int nt = 0; nt < NT; nt++)
#pragma unroll
    for (int e = 0; e < 2; e++) {
      mx_lo = fmaxf(mx_lo, s[nt][e]);
      mx_hi = fmaxf(mx_hi, s[nt][e + 2]);
    }
  mx_lo = fmaxf(mx_lo, __shfl_xor_sync(0xffffffffu, mx_lo, 1));
  mx_lo = fmaxf(mx_lo, __shfl_xor_sync(0xffffffffu, mx_lo, 2));
  const float mn_lo = fmaxf(m_lo, mx_lo);
  use_lo = mn_lo == -INFINITY ? 0.f : mn_lo;
  al_lo = attn8d_exp2(m_lo - use_lo);
  m_lo = mn_lo;
  al_hi = 1.f, use_hi = 0.f;
  if (kUpper) {
    mx_hi = fmaxf(mx_hi, __shfl_xor_sync(0xffffffffu, mx_hi, 1));
    mx_hi = fmaxf(mx_hi, __shfl_xor_sync(0xffffffffu, mx_hi, 2));
    const float mn_hi = fmaxf(m_hi, mx_hi);
    use_hi = mn_hi == -INFINITY ? 0.f : mn_hi;
    al_hi = attn8d_exp2(m_hi - use_hi);
    m_hi = mn_hi;
  }
}
