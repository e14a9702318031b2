// mxfp4.cuh — --weights=mxfp4: layer 05 with the experts' gate, up and down matrices in
// MXFP4 (gpt-oss's storage of its experts, 4.25 bits per weight) and every other matrix in
// layer 05's FP8 store (weights8.cuh): the step reads the fewest bytes.
// FORMAT (OCP Microscaling Formats (MX) v1.0, 2023: §5.3.3 E2M1, §5.4 UE8M0, §6.3 conversion)
//   W [N][K], K % 32 == 0, in blocks of 32 inputs of a row: block (n, c) is one UE8M0 byte
//   s = X + 127 (factor 2^X) and 32 E2M1 elements (±{0, .5, 1, 1.5, 2, 3, 4, 6}), byte b of
//   the block's 16 holding input 32c + 2b in its LOW nibble (gpt-oss; labs/moe/mxfp4.h).
//   Quantizer (§6.3): X = floor(log2 amax) − 2 (E2M1's largest exponent), elements W / 2^X
//   to nearest E2M1, ties to even, saturating at ±6; X clamped to [−127, 113] (UE8M0 has no
//   2^-128; 113 keeps the decoder's 2^(X+14) a normal fp32), a zero block X = −127.
//   Exact on gpt-oss as released: the loader decodes the released blocks to bf16 exactly,
//   and re-quantizing such a block (amax = e · 2^X0, e in {.5 … 6}) picks X <= X0 with
//   amax / 2^X in [4, 8): every element times 2^(X0 − X) is again on the E2M1 grid, so the
//   values come back bit for bit (the scale byte may differ). mxfp4_test.cpp tests it.
// STORE (on the GPU at setup from the bf16 arena, expert matrices only; one pitch per array)
//   q   nibbles [N][K/2] per matrix; s   scales [N][K/32], row-major (gpt-oss's _scales);
//   st  the same scales slice-major, [ceil(K/64)][N][2]: the GEMV's lanes walk one row's
//   blocks (row-major), the MMA loader copies one 64-wide slice of 64 rows (128 contiguous
//   bytes). Each kernel reads one copy, so the step still reads 4.25 bits per weight.
// DECODER (Lab05Mx4Weights for 03's kernel bodies, labs/03_tiling/grouped.cuh): sm_90 has no
//   E2M1 conversion (cvt ... e2m1x2 is sm_100+), so a byte becomes an f16x2 by moving bits
//   (sign to bit 15, exponent and mantissa to bits 9-11: exactly E2M1 · 2^-14, the subnormal
//   0.5 included), f16 → fp32 is exact, one multiply by 2^(X+14) gives E2M1 · 2^X. GEMV
//   (batch <= 8): 32 weights per 16-byte streaming load, its scale byte loaded beside it;
//   MMA (batch > 8): 32-byte nibble slices and a scale stage in the cp.async ring, B
//   fragments decoded to bf16 in registers (exact down to 2^-133).
// The CPU reference reads these same values (lab05_mx4_ref_weights): bf16's bounds hold.
#pragma once
#include "../moe/mxfp4.h"  // moe_mxfp4_value: the loader's (independent) decoder, for the check

#ifndef LAB05_MX4_ILP
#define LAB05_MX4_ILP 3  // 16-byte loads in flight per lane and matrix: gpt-oss's 90 per row in one round
#endif
constexpr int kLab05Mx4Threads = 256;

// ---- the element format ------------------------------------------------------------------------
/** One byte (low nibble = the first input) → f16x2 bits (low half first) of E2M1 · 2^-14. */
__host__ __device__ __forceinline__ uint32_t lab05_mx4_f16x2(uint32_t x) {
  return ((x & 0x8u) << 12) | ((x & 0x7u) << 9) | ((x & 0x80u) << 24) | ((x & 0x70u) << 21);
}
/** 2^(X+14) for scale byte s = X + 127 in [0, 240]: the factor after lab05_mx4_f16x2. */
__host__ __device__ __forceinline__ float lab05_mx4_factor(unsigned s) {
  const uint32_t b = (s + 14u) << 23;
  float f;
  memcpy(&f, &b, 4);
  return f;
}
/** f16x2 bits → two floats, exact. */
__host__ __device__ __forceinline__ float2 lab05_mx4_h2f(uint32_t h) {
  __half2_raw r;
  r.x = (unsigned short)(h & 0xFFFFu), r.y = (unsigned short)(h >> 16);
  return __half22float2(__half2(r));
}
/** One byte of nibbles and its block's scale byte → bf16x2 (low half: the low nibble), exact. */
__host__ __device__ __forceinline__ unsigned lab05_mx4_bf16x2(uint32_t x, float factor) {
  const float2 f = lab05_mx4_h2f(lab05_mx4_f16x2(x));
  const __nv_bfloat162 b = __floats2bfloat162_rn(f.x * factor, f.y * factor);
  unsigned r;
  memcpy(&r, &b, 4);
  return r;
}
/** 16 bytes (one block: 32 nibbles, byte b = inputs 2b (low), 2b + 1) with scale byte s →
 *  f[0..32) = E2M1 · 2^(s − 127), exact. Word q's nibble i pairs with nibble i + 4 in one
 *  f16x2 (one shift), so each pair costs a shift, two masks and a convert. */
__host__ __device__ __forceinline__ void lab05_mx4_unpack32(uint4 v, unsigned s, float f[32]) {
  const float m = lab05_mx4_factor(s);
  const uint32_t w[4] = {v.x, v.y, v.z, v.w};
  for (int q = 0; q < 4; q++)  // constant trip counts: unrolled without a pragma (host code too)
    for (int i = 0; i < 4; i++) {
      const uint32_t t = w[q] >> (4 * i);
      const float2 p = lab05_mx4_h2f(((t & 0x00080008u) << 12) | ((t & 0x00070007u) << 9));
      f[8 * q + i] = p.x * m, f[8 * q + i + 4] = p.y * m;
    }
}
/** The block exponent X of §6.3 for amax = max |w| of the block: floor(log2 amax) − 2,
 *  clamped to [−127, 113] (zero, subnormal amax: −127; inf or NaN: 113). Host and device. */
__host__ __device__ __forceinline__ int lab05_mx4_exp(float amax) {
  uint32_t b;
  memcpy(&b, &amax, 4);
  const int x = (int)((b >> 23) & 0xFFu) - 127 - 2;  // the exponent field is floor(log2) + 127
  return x < -127 ? -127 : x > 113 ? 113 : x;
}
/** y rounded to nearest E2M1, ties to even, saturating at ±6 (NaN: ±6): the nibble. */
__host__ __device__ __forceinline__ unsigned lab05_mx4_e2m1(float y) {
  const float a = fabsf(y);
  const unsigned m = a <= 0.25f ? 0 : a < 0.75f ? 1 : a <= 1.25f ? 2 : a < 1.75f ? 3 : a <= 2.5f ? 4 : a < 3.5f ? 5
                   : a <= 5.0f ? 6 : 7;
  return m | (signbit(y) ? 8u : 0u);
}
/** One block of 32 bf16 values (bits) → 16 nibble bytes and the scale byte (returned). */
__host__ __device__ __forceinline__ unsigned lab05_mx4_quantize_block(const uint16_t w[32], uint8_t q[16]) {
  float f[32], amax = 0.f;
  for (int k = 0; k < 32; k++) {
    const uint32_t b = (uint32_t)w[k] << 16;
    memcpy(&f[k], &b, 4);
    amax = fmaxf(amax, fabsf(f[k]));
  }
  const int x = lab05_mx4_exp(amax);
  const uint32_t ib = (uint32_t)(127 - x) << 23;  // 2^-X, a normal fp32 for X in [-127, 113]
  float inv;
  memcpy(&inv, &ib, 4);
  for (int b = 0; b < 16; b++) q[b] = (uint8_t)(lab05_mx4_e2m1(f[2 * b] * inv) | lab05_mx4_e2m1(f[2 * b + 1] * inv) << 4);
  return (unsigned)(x + 127);
}

// ---- the format for 03's kernel bodies --------------------------------------------------------
struct Lab05Mx4Weights {
  typedef uint8_t T;                      // two E2M1 nibbles
  static constexpr int kPerLoad = 32;     // one block per 16-byte load
  static constexpr int kIlp = LAB05_MX4_ILP;
  static constexpr bool kScaled = false;  // no per-row scale: per-block scales instead
  static constexpr int kStages16 = 4;     // BM = 16: 4 · 33.8 KB stages (gate+up)
  static constexpr bool kPrefetch = false;
  static constexpr int kPack = 2;         // weights per byte
  static constexpr int kScaleBytes = moe_grouped::BK / 32;  // 2 blocks per 64-wide slice
  const uint8_t *s0, *s1;    // row-major scales of expert 0's matrix 0 and 1 (s1: NULL for down)
  const uint8_t *t0, *t1;    // slice-major scales of the same
  int64_t s_stride, t_stride;  // bytes from expert x's scales to x + 1's, each layout
  int64_t slice_pitch;       // slice-major: bytes from slice kt to kt + 1 (2N)
  int kb;                    // blocks per row (K / 32)
  __device__ unsigned block_scale(int g, int e, int n, int c) const {
    return __ldg((g ? s1 : s0) + e * s_stride + (int64_t)n * kb + c);
  }
  __device__ const unsigned char *slice_scales(int g, int e, int n) const { return (g ? t1 : t0) + e * t_stride + 2 * n; }
  __device__ static void unpack_scaled(uint4 v, unsigned s, float f[kPerLoad]) { lab05_mx4_unpack32(v, s, f); }
  /** Byte of 16-byte chunk `chunk` (one block, 0..1) of row `row` in a [rows][32] stage:
   *  rows 4-7 of every 8 swap their two chunks, so the fragment reads of 8 rows hit 16
   *  distinct banks. */
  __host__ __device__ static int stage_offset(int row, int chunk) {
    return row * (moe_grouped::BK / 2) + ((chunk ^ ((row >> 2) & 1)) << 4);
  }
  // Lane (g = lane / 4, t = lane % 4) of k-step kk: b0 holds (k 2t, 2t + 1) of row g of the
  // n8 tile, i.e. byte 8kk + t of the row's slice, b1 byte 8kk + t + 4 (PTX ISA, "Matrix
  // Fragments for mma.m16n8k16"); one 8-byte read gives both, the block scale from sc.
  __host__ __device__ static void b_frags_scaled(unsigned b[4], const T *stage, const unsigned char *sc, int row0, int kk,
                                                 int lane) {
    const int g = lane >> 2, t = lane & 3;
    for (int nt = 0; nt < 2; nt++) {
      const int row = row0 + nt * 8 + g;
      const uint2 v = *(const uint2 *)(stage + stage_offset(row, kk >> 1) + (kk & 1) * 8);
      const float m = lab05_mx4_factor(sc[row * kScaleBytes + (kk >> 1)]);
      b[2 * nt] = lab05_mx4_bf16x2((v.x >> (8 * t)) & 0xFFu, m);
      b[2 * nt + 1] = lab05_mx4_bf16x2((v.y >> (8 * t)) & 0xFFu, m);
    }
  }
  __device__ float scale(int, int, int) const { return 1.0f; }
};

// ---- kernels --------------------------------------------------------------------------------
// 03's two kernels (grouped.cuh documents arguments, strategy and limiter) on MXFP4 weights:
// W0, W1 nibbles [N][K/2] per expert at e·expert_stride bytes, fmt their block scales.
template <int R, bool GLU>
__global__ void __launch_bounds__(kLab03GemvThreads)
    lab05_mx4_gemv_kernel(const __nv_bfloat16 *__restrict__ A, const int32_t *__restrict__ a_token,
                          const uint8_t *__restrict__ W0, const uint8_t *__restrict__ W1, int64_t expert_stride,
                          const int32_t *__restrict__ offsets, const int32_t *__restrict__ tile_start, int E, int N,
                          int K, __nv_bfloat16 *__restrict__ H, float *__restrict__ Y, Lab03Glu glu, Lab05Mx4Weights fmt) {
  lab03_grouped_gemv_body<R, GLU>(A, a_token, W0, W1, expert_stride, offsets, tile_start, E, N, K, H, Y, glu, fmt);
}

template <int BM, bool GLU>
__global__ void __launch_bounds__(moe_grouped::THREADS)
    lab05_mx4_mma_kernel(const __nv_bfloat16 *__restrict__ A, const int32_t *__restrict__ a_token,
                         const uint8_t *__restrict__ W0, const uint8_t *__restrict__ W1, int64_t expert_stride,
                         const int32_t *__restrict__ offsets, const int32_t *__restrict__ tile_start, int E, int N,
                         int K, __nv_bfloat16 *__restrict__ H, float *__restrict__ Y, Lab03Glu glu, Lab05Mx4Weights fmt) {
  lab03_grouped_mma_body<BM, GLU>(A, a_token, W0, W1, expert_stride, offsets, tile_start, E, N, K, H, Y, glu, fmt);
}

// q, s, st of a [rows][cols] matrix from w bf16 (the contract above). Strategy: a thread per
// block of 32 (four 16-byte loads, one 16-byte store), grid-stride. Limiter: DRAM bandwidth
// (once per matrix at setup).
__global__ void __launch_bounds__(kLab05Mx4Threads)
    lab05_mx4_quantize_kernel(const __nv_bfloat16 *__restrict__ w, int64_t rows, int64_t cols, uint8_t *__restrict__ q,
                              uint8_t *__restrict__ s, uint8_t *__restrict__ st) {
  const int64_t kb = cols / 32, n_blk = rows * kb;
  for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < n_blk; i += (int64_t)gridDim.x * blockDim.x) {
    const int64_t r = i / kb, c = i - r * kb;
    __align__(16) uint16_t wb[32];
    __align__(16) uint8_t qb[16];
#pragma unroll
    for (int j = 0; j < 4; j++) ((uint4 *)wb)[j] = ((const uint4 *)(w + i * 32))[j];
    const unsigned sc = lab05_mx4_quantize_block(wb, qb);
    ((uint4 *)q)[i] = *(const uint4 *)qb;
    s[i] = (uint8_t)sc;
    st[(c >> 1) * rows * 2 + r * 2 + (c & 1)] = (uint8_t)sc;
  }
}

// out [rows][cols] = the stored values, through the kernels' decoder (lab05_mx4_unpack32):
// as fp32 (outf) and/or bf16 (outb, exact). Strategy: a thread per block. Limiter: DRAM
// (validation and the setup check only).
__global__ void lab05_mx4_dequant_kernel(const uint8_t *q, const uint8_t *s, int64_t rows, int64_t cols, float *outf,
                                         __nv_bfloat16 *outb) {
  const int64_t n_blk = rows * (cols / 32);
  for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < n_blk; i += (int64_t)gridDim.x * blockDim.x) {
    float f[32];
    lab05_mx4_unpack32(((const uint4 *)q)[i], s[i], f);
    for (int k = 0; k < 32; k++) {
      if (outf) outf[i * 32 + k] = f[k];
      if (outb) outb[i * 32 + k] = __float2bfloat16_rn(f[k]);
    }
  }
}

// ---- the store ---------------------------------------------------------------------------------
typedef struct {
  uint8_t *q, *s, *st;           // device: nibbles, row-major scales, slice-major scales
  int64_t *qo, *so, *to;         // host [lay.n]: each expert matrix's offset in q, s, st; -1 otherwise
  int64_t q_bytes, s_bytes, t_bytes;
  int64_t q_pitch, s_pitch, t_pitch;  // bytes from expert x's matrix to x + 1's, each array
  __nv_bfloat16 *ref;            // [lay.max_numel]: one tensor's values for the CPU reference
  Lab03ExpertPlan plan;          // the MXFP4 kernels' plan (03's rows and bm)
} Lab05Mx4;

static inline int lab05_mx4_is_expert(MoeKind k) { return k == MOE_GATE || k == MOE_UP || k == MOE_DOWN; }

/** Offsets of every expert matrix in the three arrays, layout order; -1 for other tensors.
 *  Sizes: rows·cols/2, rows·cols/32, ceil(cols/64)·rows·2 (16-byte multiples when rows % 8
 *  == 0 and cols % 32 == 0). Returns the three totals. Host-tested (mxfp4_test.cpp). */
static inline void lab05_mx4_offsets(const MoeLayout *lay, int64_t *qo, int64_t *so, int64_t *to, int64_t tot[3]) {
  tot[0] = tot[1] = tot[2] = 0;
  for (int i = 0; i < lay->n; i++) {
    const MoeTensor *t = &lay->t[i];
    qo[i] = so[i] = to[i] = -1;
    if (!lab05_mx4_is_expert(t->kind) || t->cols <= 0) continue;
    qo[i] = tot[0], so[i] = tot[1], to[i] = tot[2];
    tot[0] += t->rows * t->cols / 2, tot[1] += t->rows * t->cols / 32, tot[2] += (t->cols + 63) / 64 * t->rows * 2;
  }
}

static inline Lab05Mx4 *lab05_mx4(const Engine *e) { return (Lab05Mx4 *)((const Lab05 *)e->layer)->mx4; }

/** Expert 0's pointers of (kind, layer) into the store's three arrays (host; device pointers). */
static inline void lab05_mx4_at(const Engine *e, MoeKind k, int l, const uint8_t **q, const uint8_t **s,
                                const uint8_t **st) {
  const Lab05Mx4 *m = lab05_mx4(e);
  const int i = moe_tensor_index(&e->lay, k, l, 0);
  *q = m->q + m->qo[i], *s = m->s + m->so[i], *st = m->st + m->to[i];
}

/** Quantize every expert matrix of e's bf16 arena into m (exit 3 when the device is out of
 *  memory or the experts do not sit at one pitch in each array). Enqueued on e->s and
 *  synchronized. */
static inline void lab05_mx4_build(Engine *e, Lab05Mx4 *m) {
  const MoeLayout *lay = &e->lay;
  const MoeConfig *c = &e->cfg;
  int64_t tot[3];
  m->qo = (int64_t *)malloc(sizeof(int64_t) * 3 * lay->n);
  if (!m->qo) moe_die("out of host memory (MXFP4 store offsets)");
  m->so = m->qo + lay->n, m->to = m->so + lay->n;
  lab05_mx4_offsets(lay, m->qo, m->so, m->to, tot);
  m->q_bytes = tot[0], m->s_bytes = tot[1], m->t_bytes = tot[2];
  m->q = (uint8_t *)gtl_malloc(m->q_bytes, "MXFP4 expert weights (E2M1 nibbles)");
  m->s = (uint8_t *)gtl_malloc(m->s_bytes, "MXFP4 block scales (row-major)");
  m->st = (uint8_t *)gtl_malloc(m->t_bytes, "MXFP4 block scales (slice-major)");
  GTL_CUDA(cudaMemsetAsync(m->st, 0, m->t_bytes, e->s));  // the pad byte of an odd block count
  m->ref = (__nv_bfloat16 *)gtl_malloc(lay->max_numel * 2, "one tensor's MXFP4 weights as bf16 (CPU reference)");
  int dev, sms;
  GTL_CUDA(cudaGetDevice(&dev));
  GTL_CUDA(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, dev));
  for (int i = 0; i < lay->n; i++) {
    const MoeTensor *t = &lay->t[i];
    if (m->qo[i] < 0) continue;
    const int64_t blocks = (t->rows * t->cols / 32 + kLab05Mx4Threads - 1) / kLab05Mx4Threads;
    lab05_mx4_quantize_kernel<<<(unsigned)(blocks < 16 * sms ? blocks : 16 * sms), kLab05Mx4Threads, 0, e->s>>>(
        e->d_w + t->offset, t->rows, t->cols, m->q + m->qo[i], m->s + m->so[i], m->st + m->to[i]);
    GTL_LAUNCH();
  }
  const MoeKind kinds[3] = {MOE_GATE, MOE_UP, MOE_DOWN};
  if (c->E > 1) {
    const int i0 = moe_tensor_index(lay, MOE_GATE, 0, 0), i1 = moe_tensor_index(lay, MOE_GATE, 0, 1);
    m->q_pitch = m->qo[i1] - m->qo[i0], m->s_pitch = m->so[i1] - m->so[i0], m->t_pitch = m->to[i1] - m->to[i0];
  }
  for (int l = 0; l < c->L; l++)
    for (int x = 0; x < c->E; x++)
      for (int k = 0; k < 3; k++) {
        const int i = moe_tensor_index(lay, kinds[k], l, x), i0 = moe_tensor_index(lay, kinds[k], l, 0);
        if (m->qo[i] - m->qo[i0] != x * m->q_pitch || m->so[i] - m->so[i0] != x * m->s_pitch ||
            m->to[i] - m->to[i0] != x * m->t_pitch) {
          fprintf(stderr, "error: the MXFP4 store needs the experts at one pitch (layer %d, expert %d is not)\n", l, x);
          exit(GTL_EXIT_RUNTIME);
        }
      }
  GTL_CUDA(cudaStreamSynchronize(e->s));
}

static inline void lab05_mx4_free(Lab05Mx4 *m) {
  void *d[] = {m->q, m->s, m->st, m->ref};
  for (size_t i = 0; i < sizeof d / sizeof d[0]; i++)
    if (d[i]) GTL_CUDA(cudaFree(d[i]));
  free(m->qo);
  memset(m, 0, sizeof *m);
}

/** Host quantization of one row of K bf16 values (bits; K % 32 == 0): q [K/2] nibble bytes
 *  and s [K/32] scale bytes, the device kernel's arithmetic (the same functions). */
static inline void lab05_mx4_quantize_row_host(const uint16_t *w, int64_t K, uint8_t *q, uint8_t *s) {
  for (int64_t c = 0; c < K / 32; c++) s[c] = (uint8_t)lab05_mx4_quantize_block(w + 32 * c, q + 16 * c);
}

/** Row r of expert matrix i against the host: nibbles and both scale layouts equal the host
 *  quantizer's bit for bit; the kernels' decoder (on the device) equals the loader's
 *  independent one (moe_mxfp4_value) and is exactly a bf16; |value − w| <= 2^(X+1) (E2M1's
 *  half step at the top of the block, or the clip of (6, 8) · 2^X to 6 · 2^X). Returns the
 *  number of bad elements and scales. */
static inline size_t lab05_mx4_check_row(Engine *e, int i, int64_t r) {
  const MoeTensor *t = &e->lay.t[i];
  const Lab05Mx4 *m = lab05_mx4(e);
  const int64_t K = t->cols, KB = K / 32, N = t->rows;
  uint16_t *hw = (uint16_t *)malloc(K * 2);
  uint8_t *hq = (uint8_t *)malloc(K), *dq = hq + K / 2, *hs = (uint8_t *)malloc(3 * KB), *ds = hs + KB, *dt = ds + KB;
  float *deq = (float *)malloc(K * 4);
  float *d_deq = (float *)gtl_malloc(K * 4, "MXFP4 check row");
  GTL_CUDA(cudaMemcpy(hw, e->d_w + t->offset + r * K, K * 2, cudaMemcpyDeviceToHost));
  GTL_CUDA(cudaMemcpy(dq, m->q + m->qo[i] + r * K / 2, K / 2, cudaMemcpyDeviceToHost));
  GTL_CUDA(cudaMemcpy(ds, m->s + m->so[i] + r * KB, KB, cudaMemcpyDeviceToHost));
  for (int64_t c = 0; c < KB; c++)
    GTL_CUDA(cudaMemcpy(dt + c, m->st + m->to[i] + (c / 2) * N * 2 + r * 2 + c % 2, 1, cudaMemcpyDeviceToHost));
  lab05_mx4_dequant_kernel<<<(unsigned)((KB + 127) / 128), 128, 0, e->s>>>(m->q + m->qo[i] + r * K / 2,
                                                                          m->s + m->so[i] + r * KB, 1, K, d_deq, NULL);
  GTL_LAUNCH();
  GTL_CUDA(cudaMemcpyAsync(deq, d_deq, K * 4, cudaMemcpyDeviceToHost, e->s));
  GTL_CUDA(cudaStreamSynchronize(e->s));
  lab05_mx4_quantize_row_host(hw, K, hq, hs);
  size_t bad = (size_t)(memcmp(hq, dq, K / 2) != 0);
  for (int64_t c = 0; c < KB; c++) bad += hs[c] != ds[c] || ds[c] != dt[c];
  for (int64_t k = 0; k < K; k++) {
    const uint32_t b = (uint32_t)hw[k] << 16;
    float w;
    memcpy(&w, &b, 4);
    const uint8_t s = ds[k / 32];
    const float ref = moe_mxfp4_value(dq[k / 2] >> (4 * (k % 2)), s);
    bad += !(deq[k] == ref) || __bfloat162float(__float2bfloat16_rn(ref)) != ref ||
           !(fabsf(ref - w) <= ldexpf(1.f, (int)s - 127 + 1));
  }
  free(hw), free(hq), free(hs), free(deq);
  GTL_CUDA(cudaFree(d_deq));
  if (bad) fprintf(stderr, "error: MXFP4 store: %zu bad elements or scales in row %lld of %s\n", bad, (long long)r, t->name);
  return bad;
}

// Rows checked at setup: layer 0 expert 0's first gate row and up row, the last layer's last
// expert's last down row (the end of the store), and a middle expert's middle up row.
static inline void lab05_mx4_check(Engine *e) {
  const MoeConfig *c = &e->cfg;
  const MoeLayout *lay = &e->lay;
  const int idx[4] = {moe_tensor_index(lay, MOE_GATE, 0, 0), moe_tensor_index(lay, MOE_UP, 0, 0),
                      moe_tensor_index(lay, MOE_DOWN, c->L - 1, c->E - 1), moe_tensor_index(lay, MOE_UP, c->L / 2, c->E / 2)};
  const int64_t rows[4] = {0, 0, lay->t[idx[2]].rows - 1, lay->t[idx[3]].rows / 2};
  size_t bad = 0;
  for (int j = 0; j < 4; j++) bad += lab05_mx4_check_row(e, idx[j], rows[j]);
  if (bad) exit(GTL_EXIT_FAIL);
}

/** LayerOps.ref_weights with --weights=mxfp4: an expert matrix's rows as the exact values
 *  the MXFP4 kernels compute with (the kernels' decoder on the device, then copied into
 *  buf); every other tensor as layer 05's fp8 hook gives it. Synchronizes e->s. */
static inline const uint16_t *lab05_mx4_ref_weights(const Engine *e, int tensor, int64_t row0, int64_t n_rows,
                                                    uint16_t *buf) {
  const Lab05Mx4 *m = lab05_mx4(e);
  if (m->qo[tensor] < 0) return lab05_ref_weights(e, tensor, row0, n_rows, buf);
  const int64_t K = e->lay.t[tensor].cols, blocks = (n_rows * K / 32 + 255) / 256;
  lab05_mx4_dequant_kernel<<<(unsigned)(blocks < 4096 ? blocks : 4096), 256, 0, e->s>>>(
      m->q + m->qo[tensor] + row0 * K / 2, m->s + m->so[tensor] + row0 * K / 32, n_rows, K, NULL, m->ref);
  GTL_LAUNCH();
  GTL_CUDA(cudaMemcpyAsync(buf, m->ref, (size_t)(n_rows * K) * 2, cudaMemcpyDeviceToHost, e->s));
  GTL_CUDA(cudaStreamSynchronize(e->s));
  return buf;
}

// ---- launchers ------------------------------------------------------------------------------
template <int R>
static inline void lab05_mx4_gemv_grids(Lab03ExpertPlan *p, int sms) {
  p->grid_up = lab03_grid(lab05_mx4_gemv_kernel<R, true>, kLab03GemvThreads, 0, sms);
  p->grid_down = lab03_grid(lab05_mx4_gemv_kernel<R, false>, kLab03GemvThreads, 0, sms);
}
template <int BM>
static inline void lab05_mx4_mma_grids(Lab03ExpertPlan *p, int sms) {
  p->grid_up = lab03_grid(lab05_mx4_mma_kernel<BM, true>, moe_grouped::THREADS, Lab03Smem<BM, true, Lab05Mx4Weights>::bytes,
                          sms);
  p->grid_down = lab03_grid(lab05_mx4_mma_kernel<BM, false>, moe_grouped::THREADS,
                            Lab03Smem<BM, false, Lab05Mx4Weights>::bytes, sms);
}

/** The MXFP4 kernels' plan for B tokens routed to top_k of E experts: 03's kernel choice and
 *  rows per work item (so 03's dispatch serves it), the MXFP4 kernels' persistent grids. */
static inline Lab03ExpertPlan lab05_mx4_plan(int B, int top_k, int E, int sms) {
  Lab03ExpertPlan p = lab03_expert_plan_rows(B, top_k, E);
  switch (p.gemv_rows) {
    case 1: lab05_mx4_gemv_grids<1>(&p, sms); break;
    case 2: lab05_mx4_gemv_grids<2>(&p, sms); break;
    case 4: lab05_mx4_gemv_grids<4>(&p, sms); break;
    case 8: lab05_mx4_gemv_grids<8>(&p, sms); break;
    default:
      if (p.bm == 16) lab05_mx4_mma_grids<16>(&p, sms);
      else if (p.bm == 32) lab05_mx4_mma_grids<32>(&p, sms);
      else lab05_mx4_mma_grids<64>(&p, sms);
  }
  return p;
}

/** One launch of the MXFP4 kernel the plan names: GLU (up) H [P][2N] split rows =
 *  split(lab03_glu_at(Wg·x, Wu·x)), x = A[a_token[s]]; else (down) Y [P][N] fp32 = Wd·A[s].
 *  W0/W1 nibbles [N][K/2] per expert at e·stride bytes, scales in fmt. Needs
 *  moe_dispatch_launch's tables with bm = p->bm. Exit 3 on a shape the kernels do not take. */
template <bool GLU>
static inline void lab05_mx4_launch(const Lab03ExpertPlan *p, const __nv_bfloat16 *A, const int32_t *a_token,
                                    const uint8_t *W0, const uint8_t *W1, int64_t stride, const int32_t *offsets,
                                    const int32_t *tile_start, int E, int N, int K, __nv_bfloat16 *H, float *Y,
                                    const Lab03Glu &glu, const Lab05Mx4Weights &fmt, cudaStream_t s) {
  if (N % 8 || K % 32 || N < 8 || E < 1 || E > MOE_MAX_EXPERTS)
    moe_die("layer 05's MXFP4 expert kernels need N a multiple of 8, K of 32, and 1 <= E <= 1024");
  const int grid = GLU ? p->grid_up : p->grid_down, mt = moe_grouped::THREADS;
#define LAB05_MX4_ARGS A, a_token, W0, W1, stride, offsets, tile_start, E, N, K, H, Y, glu, fmt
  switch (p->gemv_rows) {
    case 1: lab05_mx4_gemv_kernel<1, GLU><<<grid, kLab03GemvThreads, 0, s>>>(LAB05_MX4_ARGS); break;
    case 2: lab05_mx4_gemv_kernel<2, GLU><<<grid, kLab03GemvThreads, 0, s>>>(LAB05_MX4_ARGS); break;
    case 4: lab05_mx4_gemv_kernel<4, GLU><<<grid, kLab03GemvThreads, 0, s>>>(LAB05_MX4_ARGS); break;
    case 8: lab05_mx4_gemv_kernel<8, GLU><<<grid, kLab03GemvThreads, 0, s>>>(LAB05_MX4_ARGS); break;
    default:
      if (p->bm == 16)
        lab05_mx4_mma_kernel<16, GLU><<<grid, mt, Lab03Smem<16, GLU, Lab05Mx4Weights>::bytes, s>>>(LAB05_MX4_ARGS);
      else if (p->bm == 32)
        lab05_mx4_mma_kernel<32, GLU><<<grid, mt, Lab03Smem<32, GLU, Lab05Mx4Weights>::bytes, s>>>(LAB05_MX4_ARGS);
      else
        lab05_mx4_mma_kernel<64, GLU><<<grid, mt, Lab03Smem<64, GLU, Lab05Mx4Weights>::bytes, s>>>(LAB05_MX4_ARGS);
  }
#undef LAB05_MX4_ARGS
  GTL_LAUNCH();
}

// ---- hooks and stages -----------------------------------------------------------------------
// The format of (kind 0, kind 1) of layer l (kind 1: MOE_KIND_COUNT for down).
static inline Lab05Mx4Weights lab05_mx4_fmt(const Engine *e, MoeKind k0, MoeKind k1, int l, int K, int N,
                                            const uint8_t **w0, const uint8_t **w1) {
  const Lab05Mx4 *m = lab05_mx4(e);
  Lab05Mx4Weights f;
  memset(&f, 0, sizeof f);
  lab05_mx4_at(e, k0, l, w0, &f.s0, &f.t0);
  *w1 = NULL;
  if (k1 != MOE_KIND_COUNT) lab05_mx4_at(e, k1, l, w1, &f.s1, &f.t1);
  f.s_stride = m->s_pitch, f.t_stride = m->t_pitch, f.slice_pitch = (int64_t)2 * N, f.kb = K / 32;
  return f;
}

// gate, up, 03's epilogue (biases, SwiGLU or gpt-oss's clamped one) of every routed expert
// in one launch, as lab05_expert_up, on the MXFP4 store.
static inline void lab05_mx4_expert_up(Engine *e, int l, int) {
  const MoeConfig *c = &e->cfg;
  const Lab03 *p = &((const Lab05 *)e->layer)->base.base;
  const Lab03Glu glu = {lab00_w_opt(e, MOE_GATE_BIAS, l, 0), lab00_w_opt(e, MOE_UP_BIAS, l, 0), p->bias_stride,
                        c->act == MOE_ACT_SWIGLU_CLAMP, (float)c->swiglu_limit, (float)c->swiglu_alpha};
  const uint8_t *wg, *wu;
  const Lab05Mx4Weights f = lab05_mx4_fmt(e, MOE_GATE, MOE_UP, l, c->D, c->F, &wg, &wu);
  lab05_mx4_launch<true>(&lab05_mx4(e)->plan, p->base.xb, p->sorted_token, wg, wu, lab05_mx4(e)->q_pitch, p->offsets,
                         p->tile_start, c->E, c->F, c->D, p->hs, nullptr, glu, f, e->s);
}

// y [P][D] fp32 = Wd · h for every sorted row (03's ys, for 03's combine), MXFP4 store.
static inline void lab05_mx4_expert_down(Engine *e, int l, int) {
  const MoeConfig *c = &e->cfg;
  const Lab03 *p = &((const Lab05 *)e->layer)->base.base;
  const Lab03Glu none = {nullptr, nullptr, 0, 0, 0.f, 0.f};
  const uint8_t *wd, *unused;
  const Lab05Mx4Weights f = lab05_mx4_fmt(e, MOE_DOWN, MOE_KIND_COUNT, l, c->F, c->D, &wd, &unused);
  lab05_mx4_launch<false>(&lab05_mx4(e)->plan, p->hs, nullptr, wd, nullptr, lab05_mx4(e)->q_pitch, p->offsets,
                          p->tile_start, c->E, c->D, c->F, nullptr, p->ys, none, f, e->s);
}

// The setup configure chose before lab05_mx4_configure (fused.cuh's when it fused a small
// stage, which runs lab05_setup itself; else lab05_setup: the fp8 store, the dense plan,
// the fp8 experts' plan), then the MXFP4 store of the experts, its check (exit 1 on a
// difference) and plan.
static inline void lab05_mx4_setup(Engine *e) {
  if (e->ops.qkv == lab05_fuse_qkv || e->ops.router == lab05_fuse_router) lab05_fuse_setup(e);  // fused.cuh's rule
  else lab05_setup(e);
  Lab05 *p = (Lab05 *)e->layer;
  p->fmt = LAB05_W_MXFP4;
  Lab05Mx4 *m = (Lab05Mx4 *)calloc(1, sizeof(Lab05Mx4));
  if (!m) moe_die("out of host memory (MXFP4 state)");
  p->mx4 = m;
  struct timespec t0, t1;
  clock_gettime(CLOCK_MONOTONIC, &t0);
  lab05_mx4_build(e, m);
  clock_gettime(CLOCK_MONOTONIC, &t1);
  lab05_mx4_check(e);
  m->plan = lab05_mx4_plan(e->B, e->cfg.top_k, e->cfg.E, p->base.base.sms);
  if (m->plan.bm != p->base.base.xp.bm || m->plan.gemv_rows != p->base.base.xp.gemv_rows)
    moe_die("layer 05's MXFP4 expert plan differs from 03's");
  fprintf(stderr, "note: %s: MXFP4 store: %.3f GB of E2M1 expert weights + 2 x %.1f MB of UE8M0 block scales "
          "quantized on the GPU in %.1f ms; 4 rows checked against the host quantizer and the loader's decoder: "
          "equal\n", e->ops.target, m->q_bytes / 1e9, m->s_bytes / 1e6,
          1e3 * (t1.tv_sec - t0.tv_sec) + 1e-6 * (t1.tv_nsec - t0.tv_nsec));
}

static inline void lab05_mx4_teardown(Engine *e) {
  Lab05 *p = (Lab05 *)e->layer;
  if (p->mx4) lab05_mx4_free((Lab05Mx4 *)p->mx4);
  free(p->mx4);
  p->mx4 = NULL;
  lab05_teardown(e);
}

/** --weights=mxfp4, the last step of layer 05's configure (after fused.cuh's): the experts'
 *  stages, setup (wrapping the one chosen so far), teardown, reference weights and roofline
 *  format switch to the MXFP4 store. Refuses (usage error) hidden or expert FFN sizes that
 *  are not multiples of 32 (one block). */
static inline int lab05_mx4_configure(Engine *e, char *err, size_t n) {
  const MoeConfig *c = &e->cfg;
  if (c->D % 32 || c->F % 32) {
    snprintf(err, n, "--weights=mxfp4: MXFP4 blocks need hidden and expert FFN sizes multiples of 32 (model: D %d, F %d)",
             c->D, c->F);
    return -1;
  }
  e->ops.adds = "adds: MXFP4 experts (E2M1 + UE8M0 per 32, OCP MX v1.0; gpt-oss's format), FP8 E4M3 dense weights "
                "with per-row scales (ch13), RMSNorm fused into the fp8 projections (ch14)";
  e->ops.dtype = "mxfp4";
  e->ops.expert_fmt = MOE_WF_MXFP4;
  e->ops.ref_weights = lab05_mx4_ref_weights;
  e->ops.setup = lab05_mx4_setup;
  e->ops.teardown = lab05_mx4_teardown;
  e->ops.expert_up = lab05_mx4_expert_up;
  e->ops.expert_down = lab05_mx4_expert_down;
  return 0;
}
