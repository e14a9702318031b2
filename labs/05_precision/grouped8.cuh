// grouped8.cuh — layer 05's expert kernels on FP8 E4M3 weights (weights8.cuh's store: one
// byte per weight, one fp32 scale per output row, W[n][k] ≈ s[n]·q[n][k]) and the two
// stages lab05_ops() plugs in (lab05_expert_up, lab05_expert_down). Layer 03's kernels
// and work items, not a copy of them: 03's kernel bodies (labs/03_tiling/grouped.cuh:
// lab03_grouped_gemv_body, lab03_grouped_mma_body) take the weights' storage format as a
// template parameter, and this header gives them Lab05Fp8Weights:
//   lab05_grouped8_gemv_kernel  up to 8 tokens per expert: a warp per (expert, weight row),
//                               16-byte streaming loads holding 16 weights (twice bf16's
//                               per byte), decoded in registers (lab05_fp8x16_to_f32)
//   lab05_grouped8_mma_kernel   more tokens per expert: ch15's cp.async ring now copies
//                               64-byte fp8 row slices (half of bf16's), and each warp
//                               decodes the B fragments of its 16 columns from shared
//                               memory to bf16 in registers before ch15's mma.sync
// Both scale each output once: y[n] = s[n] · Σ_k q[n][k] · x[k] (the scale multiplies the
// fp32 dot product, never a weight), gate and up each by their own row's scale, before
// the epilogue (03's: biases, SwiGLU or gpt-oss's clamped one, the split store of h).
//
// Decisions:
// - Activations stay 03's split bf16 pairs (x = hi + lo, [hi | lo] rows), not fp32: the
//   same 4 bytes per activation, hi + lo carries 16 significant bits (relative error below
//   2^-16, against the weights' 2^-4), and the MMA path needs 16-bit A operands anyway;
//   so both paths, and h between up and down, keep one format and 03's bodies serve both.
// - E4M3 → fp32 in the GEMV: cvt.rn.f16x2.e4m3x2 (__nv_cvt_fp8x2_to_halfraw2, one
//   F2FP.F16.E4M3.UNPACK_B per two weights on sm_89+) then fp16 → fp32 (HADD2.F32): both
//   exact (every E4M3 value, subnormals included, is a normal fp16), the cheapest exact
//   path sm_90 has (it has no e4m3 → f32 or e4m3 → bf16 cvt).
// - E4M3 → bf16 for mma.sync in registers, not through a bf16 copy of the stage: a warp
//   converts exactly the 64 weights per lane its own fragments need (no extra barrier or
//   shared buffer). Two bytes per fragment register (k = 2t, 2t+1 of row g; PTX ISA,
//   "Matrix Fragments for mma.m16n8k16"), via fp16 and fp32: exact (3 mantissa bits fit
//   bf16's 7). The stage is XOR-swizzled by 16-byte chunk (chunk ^ (row / 2) % 4), so
//   those 2-byte reads of 8 rows × 4 lanes hit 16 distinct banks.
// - Measured first (H200, git 15d3089f8395, ncu): at batch 1 the GEMV kernels reached only
//   2.09 (gate+up, 31.8 us per layer) and 1.64 TB/s (down, 20.3 us) with 16 and 32 warps
//   per SM: a warp's rows are short (2880 B), so it waits for a row, computes it (twice
//   bf16's instructions per byte), and only then asks for the next. Hence kPrefetch: each
//   warp sends its next row to L2 right after this row's loads (prefetches hold no
//   registers), and 3 blocks per SM for batch 1's gate+up kernel. At batch 64 the MMA kernel
//   reached 2.16 TB/s (gate+up, BM 16) with 12 warps per SM, issue-bound on the B decode
//   (4 instructions per 2 weights): kStages16 = 3 (the fp8 stage is half as large) gives
//   5 gate+up blocks per SM (20 warps) instead of 3.
// - Measured again (H200, git 6d1eae036598, same ncu line): the 3-stage ring helped batch 64
//   (gate+up 247 -> 231 us, down 148 -> 137 us per layer), but the prefetch and the 3-block
//   bound made batch 1 SLOWER (gate+up 31.8 -> 36.7-39.9 us, down 20.3 -> 22.2-23.0 us; the
//   stage times 0.781 -> 0.882 and 0.519 -> 0.561 ms). So both are off by default again
//   (-DLAB05_X8_PREFETCH=1 -DLAB05_X8_GEMV_MINB=3 rebuild the measured tuning).
// Preconditions (checked by the launcher, exit 3): K a multiple of 16 (a 16-byte load
// never straddles two rows), N a multiple of 8, 1 <= E <= 1024. Kernels, launchers and the
// two stages (which read Lab05's state; host tests in plan_test.cpp).
#pragma once
#include <string.h>

#include "weights8.cuh"  // Lab05 state, lab05_w8 / lab05_wscale, lab05_fp8x16_to_f32; layers 03-04

// 16-byte weight loads in flight per lane and matrix in the GEMV kernel (-DLAB05_X8_ILP=N
// to try another). Why 6, not ch08's 4: an fp8 row of gpt-oss's 2880 is 180 loads, 5.6 per
// lane, so 6 fetch it in one round (4 take two, the second a third full). Little's law
// with 03's bf16 kernel as the yardstick (about 125 KB in flight per SM gave 3.3 TB/s, 75 KB
// gave 2.5): gate+up at R = 1 keeps ~138 KB per SM in flight at depth 6 (80 registers, 3
// blocks: 24 warps × 5.8 KB) against ~67 KB at 4 (74 registers: 24 warps × ~2.8 KB on
// average); down at R = 1, ~92 KB (64 registers: 32 warps × 2.9 KB) against ~56 KB.
// Batch 1's gate+up kernel no longer uses this depth: it takes 03's batch-1 path
// (grouped.cuh, lab03_gemv1_*: 3 loads deep, the next row's loads before this row's
// epilogue, the token's row staged in shared memory; 80 registers, 24 warps per SM), which
// measured 24.1-25.1 us per layer on the H200 against 32.0-32.4 us here (git 65b194b3c776).
#ifndef LAB05_X8_ILP
#define LAB05_X8_ILP 6
#endif
// The L2 prefetch of each warp's next row and the minimum blocks per SM of batch 1's
// gate+up GEMV kernel (0: the compiler's choice); both off by default (see above).
#ifndef LAB05_X8_PREFETCH
#define LAB05_X8_PREFETCH 0
#endif
#ifndef LAB05_X8_GEMV_MINB
#define LAB05_X8_GEMV_MINB 0
#endif
#ifndef LAB05_X8_GEMV_MINB_DOWN  // the same for batch 1's down kernel (R = 1, no GLU)
#define LAB05_X8_GEMV_MINB_DOWN 0
#endif

// Two E4M3 bytes (the low byte first) → a bf16x2 register (the low half first), exact.
__host__ __device__ __forceinline__ unsigned lab05_fp8x2_to_bf16x2(uint16_t v) {
  const __half2_raw h = __nv_cvt_fp8x2_to_halfraw2((__nv_fp8x2_storage_t)v, __NV_E4M3);
  const float2 f = __half22float2(__half2(h));
  const __nv_bfloat162 b = __floats2bfloat162_rn(f.x, f.y);
  unsigned r;
  memcpy(&r, &b, 4);
  return r;
}

// The FP8 storage format for 03's kernel bodies (grouped.cuh states the interface): 16
// weights per 16-byte load, stages of [rows][64] bytes, B fragments decoded from them, the
// scales of expert e's matrix g (0: gate or down, 1: up) at s0 / s1 + e·stride.
struct Lab05Fp8Weights {
  typedef __nv_fp8_storage_t T;
  static constexpr int kPerLoad = 16;
  static constexpr int kIlp = LAB05_X8_ILP;
  static constexpr bool kScaled = true;
  static constexpr int kStages16 = 3;      // BM = 16: 5 blocks per SM (gate+up), not 3; see above
  static constexpr bool kPrefetch = LAB05_X8_PREFETCH != 0;  // GEMV: the next row into L2 during this one
  static constexpr int kPack = 1;         // one weight per byte
  static constexpr int kScaleBytes = 0;   // per-row scales (kScaled), no block scales
  const float *s0, *s1;  // expert 0's row scales of matrix 0 and 1 (s1: NULL for down)
  int64_t stride;        // scales from expert x to expert x + 1 (weights8.cuh's scale_stride)
  __device__ static void unpack(uint4 v, float f[kPerLoad]) { lab05_fp8x16_to_f32(v, f); }
  /** Byte of 16-byte chunk `chunk` (0..3) of row `row` in a [rows][64] fp8 stage. */
  __host__ __device__ static int stage_offset(int row, int chunk) {
    return row * moe_grouped::BK + ((chunk ^ ((row >> 1) & 3)) << 4);
  }
  // Lane (g = lane / 4, t = lane % 4) of k-step kk (= chunk kk of every row): b0 holds
  // (k 2t, 2t + 1) and b1 (k 2t + 8, 2t + 9) of row g of the n8 tile.
  __host__ __device__ static void b_frags(unsigned b[4], const T *stage, int row0, int kk, int lane) {
    const int g = lane >> 2, t = lane & 3;
    for (int nt = 0; nt < 2; nt++) {  // constant trip counts: unrolled without a pragma
      const T *p = stage + stage_offset(row0 + nt * 8 + g, kk) + 2 * t;
      for (int h = 0; h < 2; h++) b[2 * nt + h] = lab05_fp8x2_to_bf16x2(*(const uint16_t *)(p + 8 * h));
    }
  }
  __device__ float scale(int g, int e, int n) const { return (g ? s1 : s0)[e * stride + n]; }
};

// ---- kernels --------------------------------------------------------------------------------
// 03's two kernels (grouped.cuh documents arguments, strategy and limiter) on FP8 weights:
// W0, W1 E4M3 [N][K] per expert at e·expert_stride bytes, fmt their scales.
// Batch 1's gate+up kernel (R = 1, GLU) may ask for LAB05_X8_GEMV_MINB blocks per SM (3
// was measured: 80 registers, one 4-byte spill per row, 24 warps in flight instead of 16,
// and slower); other shapes keep the compiler's choice.
template <int R, bool GLU>
__global__ void __launch_bounds__(kLab03GemvThreads, R == 1 ? (GLU ? LAB05_X8_GEMV_MINB : LAB05_X8_GEMV_MINB_DOWN) : 0)
    lab05_grouped8_gemv_kernel(const __nv_bfloat16 *__restrict__ A, const int32_t *__restrict__ a_token,
                               const __nv_fp8_storage_t *__restrict__ W0, const __nv_fp8_storage_t *__restrict__ W1,
                               int64_t expert_stride, const int32_t *__restrict__ offsets,
                               const int32_t *__restrict__ tile_start, int E, int N, int K,
                               __nv_bfloat16 *__restrict__ H, float *__restrict__ Y, Lab03Glu glu,
                               Lab05Fp8Weights fmt) {
  lab03_grouped_gemv_body<R, GLU>(A, a_token, W0, W1, expert_stride, offsets, tile_start, E, N, K, H, Y, glu, fmt);
}

template <int BM, bool GLU>
__global__ void __launch_bounds__(moe_grouped::THREADS)
    lab05_grouped8_mma_kernel(const __nv_bfloat16 *__restrict__ A, const int32_t *__restrict__ a_token,
                              const __nv_fp8_storage_t *__restrict__ W0, const __nv_fp8_storage_t *__restrict__ W1,
                              int64_t expert_stride, const int32_t *__restrict__ offsets,
                              const int32_t *__restrict__ tile_start, int E, int N, int K,
                              __nv_bfloat16 *__restrict__ H, float *__restrict__ Y, Lab03Glu glu,
                              Lab05Fp8Weights fmt) {
  lab03_grouped_mma_body<BM, GLU>(A, a_token, W0, W1, expert_stride, offsets, tile_start, E, N, K, H, Y, glu, fmt);
}

// ---- launchers ------------------------------------------------------------------------------
template <int R>
static inline void lab05_x8_gemv_grids(Lab03ExpertPlan *p, int sms) {
  p->grid_up = lab03_grid(lab05_grouped8_gemv_kernel<R, true>, kLab03GemvThreads, 0, sms);
  p->grid_down = lab03_grid(lab05_grouped8_gemv_kernel<R, false>, kLab03GemvThreads, 0, sms);
}
template <int BM>
static inline void lab05_x8_mma_grids(Lab03ExpertPlan *p, int sms) {
  p->grid_up = lab03_grid(lab05_grouped8_mma_kernel<BM, true>, moe_grouped::THREADS,
                          Lab03Smem<BM, true, Lab05Fp8Weights>::bytes, sms);
  p->grid_down = lab03_grid(lab05_grouped8_mma_kernel<BM, false>, moe_grouped::THREADS,
                            Lab03Smem<BM, false, Lab05Fp8Weights>::bytes, sms);
}

/** The fp8 kernels' plan for B tokens routed to top_k of E experts: 03's choice of kernel
 *  and rows per work item (lab03_expert_plan_rows: the dispatch's bm is 03's), the
 *  persistent grids and shared-memory opt-in of the fp8 kernels. Host, once per shape;
 *  exit 3 on a CUDA error. */
static inline Lab03ExpertPlan lab05_x8_plan(int B, int top_k, int E, int sms) {
  Lab03ExpertPlan p = lab03_expert_plan_rows(B, top_k, E);
  switch (p.gemv_rows) {
    case 1: lab05_x8_gemv_grids<1>(&p, sms); break;
    case 2: lab05_x8_gemv_grids<2>(&p, sms); break;
    case 4: lab05_x8_gemv_grids<4>(&p, sms); break;
    case 8: lab05_x8_gemv_grids<8>(&p, sms); break;
    default:
      if (p.bm == 16) lab05_x8_mma_grids<16>(&p, sms);
      else if (p.bm == 32) lab05_x8_mma_grids<32>(&p, sms);
      else lab05_x8_mma_grids<64>(&p, sms);
  }
  return p;
}

/** The shapes the fp8 kernels take: 0, or -1 with the reason in err (for a configure
 *  hook): hidden size and expert FFN size multiples of 16, 1 <= E <= 1024. Host. */
static inline int lab05_x8_fits(const MoeConfig *c, char *err, size_t n) {
  if (c->D % 16 || c->F % 16 || c->D < 16 || c->F < 16 || c->E < 1 || c->E > MOE_MAX_EXPERTS) {
    snprintf(err, n, "--weights=fp8: the fp8 expert kernels need hidden and expert FFN sizes multiples of 16 and "
             "1 <= E <= %d (model: D %d, F %d, E %d)", MOE_MAX_EXPERTS, c->D, c->F, c->E);
    return -1;
  }
  return 0;
}

/** One launch of the fp8 kernel the plan names: GLU (up) H [P][2N] split rows =
 *  split(lab03_glu_at(sg·(Wg·x), su·(Wu·x))), x = A[a_token[s]] [hi | lo] (2K bf16); else
 *  (down) Y [P][N] fp32 = sd · (Wd · A[s]). W0/W1 E4M3 [N][K] per expert at
 *  e·stride bytes, scales in fmt. Needs moe_dispatch_launch's tables with bm = p->bm. */
template <bool GLU>
static inline void lab05_grouped8_launch(const Lab03ExpertPlan *p, const __nv_bfloat16 *A, const int32_t *a_token,
                                         const __nv_fp8_storage_t *W0, const __nv_fp8_storage_t *W1, int64_t stride,
                                         const int32_t *offsets, const int32_t *tile_start, int E, int N, int K,
                                         __nv_bfloat16 *H, float *Y, const Lab03Glu &glu, const Lab05Fp8Weights &fmt,
                                         cudaStream_t s) {
  if (N % 8 || K % 16 || N < 8 || K < 16 || E < 1 || E > MOE_MAX_EXPERTS)
    moe_die("layer 05's fp8 expert kernels need N a multiple of 8, K of 16, and 1 <= E <= 1024");
  const int grid = GLU ? p->grid_up : p->grid_down, mt = moe_grouped::THREADS;
#define LAB05_X8_ARGS A, a_token, W0, W1, stride, offsets, tile_start, E, N, K, H, Y, glu, fmt
  switch (p->gemv_rows) {
    case 1: lab05_grouped8_gemv_kernel<1, GLU><<<grid, kLab03GemvThreads, 0, s>>>(LAB05_X8_ARGS); break;
    case 2: lab05_grouped8_gemv_kernel<2, GLU><<<grid, kLab03GemvThreads, 0, s>>>(LAB05_X8_ARGS); break;
    case 4: lab05_grouped8_gemv_kernel<4, GLU><<<grid, kLab03GemvThreads, 0, s>>>(LAB05_X8_ARGS); break;
    case 8: lab05_grouped8_gemv_kernel<8, GLU><<<grid, kLab03GemvThreads, 0, s>>>(LAB05_X8_ARGS); break;
    default:
      if (p->bm == 16)
        lab05_grouped8_mma_kernel<16, GLU><<<grid, mt, Lab03Smem<16, GLU, Lab05Fp8Weights>::bytes, s>>>(LAB05_X8_ARGS);
      else if (p->bm == 32)
        lab05_grouped8_mma_kernel<32, GLU><<<grid, mt, Lab03Smem<32, GLU, Lab05Fp8Weights>::bytes, s>>>(LAB05_X8_ARGS);
      else
        lab05_grouped8_mma_kernel<64, GLU><<<grid, mt, Lab03Smem<64, GLU, Lab05Fp8Weights>::bytes, s>>>(LAB05_X8_ARGS);
  }
#undef LAB05_X8_ARGS
  GTL_LAUNCH();
}

// ---- stages (weights8.cuh's contract: Lab05 state, 03's dispatch tables and buffers) ---------
// Lab05.x8: the fp8 kernels' plan (its rows and bm are 03's: 03's dispatch sorts for them).
static inline void lab05_x8_setup(Engine *e) {
  Lab05 *q = (Lab05 *)e->layer;
  const Lab03 *p = &q->base.base;
  char err[256];
  if (lab05_x8_fits(&e->cfg, err, sizeof err)) moe_die(err);
  Lab03ExpertPlan *x8 = (Lab03ExpertPlan *)malloc(sizeof(Lab03ExpertPlan));
  if (!x8) moe_die("out of host memory (layer 05 expert plan)");
  *x8 = lab05_x8_plan(e->B, e->cfg.top_k, e->cfg.E, p->sms);
  if (x8->bm != p->xp.bm || x8->gemv_rows != p->xp.gemv_rows) moe_die("layer 05's expert plan differs from 03's");
  q->x8 = x8;
}

static inline void lab05_x8_teardown(Engine *e) {
  Lab05 *q = (Lab05 *)e->layer;
  free(q->x8);
  q->x8 = NULL;
}

// gate, up (each row scaled), 03's epilogue (biases, SwiGLU or gpt-oss's clamped one) of
// every routed expert in one launch: 01's split rows (xb, the router stage's) gathered by
// token in, 03's split h out.
static inline void lab05_expert_up(Engine *e, int l, int) {
  const MoeConfig *c = &e->cfg;
  const Lab05 *q = (const Lab05 *)e->layer;
  const Lab03 *p = &q->base.base;
  const Lab03Glu glu = {lab00_w_opt(e, MOE_GATE_BIAS, l, 0), lab00_w_opt(e, MOE_UP_BIAS, l, 0), p->bias_stride,
                        c->act == MOE_ACT_SWIGLU_CLAMP, (float)c->swiglu_limit, (float)c->swiglu_alpha};
  const Lab05Fp8Weights fmt = {lab05_wscale(e, MOE_GATE, l, 0), lab05_wscale(e, MOE_UP, l, 0), q->w8.scale_stride};
  lab05_grouped8_launch<true>((const Lab03ExpertPlan *)q->x8, p->base.xb, p->sorted_token, lab05_w8(e, MOE_GATE, l, 0),
                              lab05_w8(e, MOE_UP, l, 0), q->w8.expert_stride, p->offsets, p->tile_start, c->E, c->F,
                              c->D, p->hs, nullptr, glu, fmt, e->s);
}

// y [P][D] fp32 = sd ⊙ (Wd · h) for every sorted row (03's ys, for 03's combine).
static inline void lab05_expert_down(Engine *e, int l, int) {
  const MoeConfig *c = &e->cfg;
  const Lab05 *q = (const Lab05 *)e->layer;
  const Lab03 *p = &q->base.base;
  const Lab03Glu none = {nullptr, nullptr, 0, 0, 0.f, 0.f};  // the down kernel has no epilogue terms
  const Lab05Fp8Weights fmt = {lab05_wscale(e, MOE_DOWN, l, 0), nullptr, q->w8.scale_stride};
  lab05_grouped8_launch<false>((const Lab03ExpertPlan *)q->x8, p->hs, nullptr, lab05_w8(e, MOE_DOWN, l, 0), nullptr,
                               q->w8.expert_stride, p->offsets, p->tile_start, c->E, c->D, c->F, nullptr, p->ys, none,
                               fmt, e->s);
}
