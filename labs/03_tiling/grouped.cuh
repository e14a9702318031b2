// grouped.cuh — layer 03's expert kernels: ONE launch per projection per layer over every
// routed expert, on ch15's device counting sort and persistent work-item scheduler
// (ch15/dispatch.cuh, ch15/grouped.cuh, included as they are). Kernels and launchers only
// (pointers, sizes and a stream in).
//   lab03_grouped_gemv_kernel  up to kLab03GemvMaxRows tokens per expert (decode at small
//                              batch): a warp per work item (expert, weight row), ch08's
//                              16-byte streaming loads, the expert's few rows in registers
//   lab03_grouped_mma_kernel   more tokens per expert: ch15's kernel (cp.async ring across
//                              work items, ldmatrix, mma.sync m16n8k16), one change below
// Both are thin wrappers of device bodies (lab03_grouped_gemv_body, lab03_grouped_mma_body)
// that take the weights' storage format as a template parameter (Lab03Bf16Weights here;
// layer 05's FP8 E4M3 weights, labs/05_precision/grouped8.cuh, run the same bodies).
// Why not ch15's kernel itself: it rounds its input rows, h and y to bf16 (ch15's
// tolerance allows it). The lab checks the whole model's logits against the CPU reference,
// and a single bf16 rounding of the activations there moves them past 1e-2 (layer 01's
// README, split_check.sh). So every activation row enters as 01's split pair, hi =
// bf16(x) and lo = bf16(x − hi), stored as one [hi | lo] row of 2K (02's interleaved
// layout), and the kernels accumulate W·hi + W·lo into ONE fp32 sum: the weights are read
// once, the MMAs doubled (cheap: decode is bound by reading the weights). Outputs: h as a
// split row [hi | lo] of 2F (the down projection's input), y in fp32.
// Layouts (bf16 weights, nn.Linear [out][in]): expert e's gate and up [F][D] at
// w_gate / w_up + e·stride, its down [D][F] at w_down + e·stride. Rows in ch15's
// expert-sorted order: sorted row s has token sorted_token[s]; P = T·top_k rows.
// gpt-oss (Lab03Glu): the up epilogue adds expert e's gate and up biases ([F] at
// gate / up + e·bias stride) and applies the clamped SwiGLU (layer 00's lab00_glu; the
// engine keeps gate and up as two matrices, the checkpoint's interleaved rows taken
// apart at load); the down bias is the combine's (layer.cuh), weighted with the output.
#pragma once
#include "../../ch08/gemv.cuh"    // gemv_ld_stream, gemv_unpack8, GEMV_ILP
#include "../../ch15/grouped.cuh" // MoeTile, moe_tile_of, moe_swz, cp.async / ldmatrix / mma; dispatch.cuh
#include "../00_baseline/layer.cuh"  // lab00_glu: the expert activation (SwiGLU, gpt-oss's clamped one)
#include "../../ch12/launch.cuh"      // pdl_wait_prior, pdl_allow_next (layer 04's programmatic edges)
#include <type_traits>             // std::void_t (Lab03Gemv1Ok)

constexpr int kLab03GemvThreads = 256;  // 8 warps per block, as ch08's GEMV
constexpr int kLab03GemvMaxRows = 8;    // tokens per expert the GEMV kernel takes (registers)

// The up projection's epilogue terms, by value: expert e's gate and up biases at
// gate / up + e·stride (bf16 [F] each; NULL: none), and lab00_glu's clamp (0: silu(g)·u;
// 1: gpt-oss's clamped SwiGLU with limit lim and alpha).
typedef struct {
  const __nv_bfloat16 *gate, *up;
  int64_t stride;
  int clamp;
  float lim, alpha;
} Lab03Glu;

// The activation of gate g and up u at column n of expert e: the biases, then lab00_glu.
__device__ __forceinline__ float lab03_glu_at(const Lab03Glu &q, int e, int n, float g, float u) {
  if (q.gate) g += __bfloat162float(q.gate[e * q.stride + n]);
  if (q.up) u += __bfloat162float(q.up[e * q.stride + n]);
  return lab00_glu(g, u, q.clamp, q.lim, q.alpha);
}

// ch15's ring depth, one stage less at BM = 16: the split doubles the A tile, and 5 stages
// keep two gate+up blocks per SM (5 · (2·16 + 128) · 64 · 2 B = 100 KB each). A weight
// format may choose its depth at BM = 16 (WF::kStages16; bf16: 5).
template <int BM, class WF>
struct Lab03Stages {
  static constexpr int value = BM == 16 ? WF::kStages16 : 4;
};

// The expert weights' storage format, a template parameter of the kernel bodies: its
// element type T; kPerLoad weights per 16-byte load; kIlp such loads in flight per lane
// and matrix (the GEMV body); unpack: one load to kPerLoad fp32 (the GEMV body); stage_offset: where 16-byte chunk `chunk` of row `row` of a [rows][BK]
// weight slice sits in a shared-memory stage (elements of T); b_frags: the mma.sync
// m16n8k16 B fragments of k-step kk for the two n8 tiles at stage rows row0..row0+7 and
// row0+8..row0+15 (b[0], b[1]: b0, b1 of the first; b[2], b[3]: of the second), bf16
// pairs; kScaled: outputs of weight row n of expert e's matrix g (0: gate or down, 1: up)
// are multiplied by scale(g, e, n) before the epilogue (a per-output-channel scale);
// kStages16: the MMA ring's depth at BM = 16; kPrefetch: the GEMV body sends the warp's
// next work item's weight rows to L2 (prefetch.global.L2) while it computes this one;
// kPack: weights per element of T (1; 2 for 4-bit weights: row n of expert e starts at
// W + e·stride + n·K/kPack, stage rows hold BK/kPack elements); kScaleBytes: 0, or bytes
// of per-block scales per weight row and BK slice (a block-scaled format, e.g. MXFP4):
// the GEMV body loads fmt.block_scale(g, e, n, c) beside weight load c of the row and
// decodes with WF::unpack_scaled(v, scale, f); the MMA body copies each slice's scales
// of the tile's rows (fmt.slice_scales(g, e, n) + kt · fmt.slice_pitch, 16 bytes per
// 16 / kScaleBytes rows) into a scale stage and decodes with WF::b_frags_scaled.
// bf16: ch08's unpacking, ch15's swizzle and ldmatrix, no scale.
struct Lab03Bf16Weights {
  typedef __nv_bfloat16 T;
  static constexpr int kPerLoad = 8;
  static constexpr int kIlp = GEMV_ILP;  // ch08's depth
  static constexpr bool kScaled = false;
  static constexpr int kStages16 = 5;
  static constexpr bool kPrefetch = false;
  static constexpr int kPack = 1;
  static constexpr int kScaleBytes = 0;
  __device__ static void unpack(uint4 v, float f[kPerLoad]) { gemv_unpack8(v, f); }
  __host__ __device__ static int stage_offset(int row, int chunk) { return moe_swz(row, chunk); }
  __device__ static void b_frags(unsigned b[4], const T *stage, int row0, int kk, int lane) {
    moe_ldsm_x4(b, stage + moe_swz(row0 + (lane & 7) + ((lane >> 4) << 3), kk * 2 + ((lane >> 3) & 1)));
  }
  __device__ float scale(int, int, int) const { return 1.0f; }
};

template <int BM, bool GLU, class WF = Lab03Bf16Weights>
struct Lab03Smem {  // A stages (bf16 hi + lo rows), weight stages (WF::T), scale stages
  static constexpr int bytes = Lab03Stages<BM, WF>::value *
                               (moe_grouped::BK * (2 * BM * 2 + (GLU ? 2 : 1) * moe_grouped::BN *
                                                                    (int)sizeof(typename WF::T) / WF::kPack) +
                                (GLU ? 2 : 1) * moe_grouped::BN * WF::kScaleBytes);
};

/** The weight row of a GEMV work item: ch15's moe_tile_of numbers items expert by expert,
 *  n-tile major, and gives the tile's first column n0 = n-tile · BN. The GEMV kernel calls
 *  it with one "tile" per weight row (n_tiles = N), so its row is n0 / BN. Host-tested. */
__host__ __device__ __forceinline__ int lab03_gemv_row(const MoeTile &t) { return t.n0 / moe_grouped::BN; }

// A hint: the 128-byte line holding p into L2, no register written (PTX ISA, "prefetch").
__device__ __forceinline__ void lab03_prefetch_l2(const void *p) { asm volatile("prefetch.global.L2 [%0];" ::"l"(p)); }

// ---- batch 1 (R = 1): one row per work item, the warp's items as one stream of loads ------
// At batch 1 the up kernel (gate+up, GLU) takes this path, the down kernel the general body
// below. Measured on the H200 (gptoss20b_mixtral, batch 1, prompt 512, gen 128; ncu per
// launch; one session at git 65b194b3c776), against the general body for both kernels:
//   fp8 (layer 05) gate+up 32.0-32.4 us (2.05-2.08 TB/s, 100 registers, 16 warps per SM)
//     -> 24.1-25.1 us (2.65-2.76 TB/s, 80 registers, 24 warps); step 2.223 -> 2.016 ms;
//   bf16 (layer 03) gate+up 39.7 us (3.34 TB/s) -> 35.7 us (3.71 TB/s); step 3.219 -> 3.021
//     ms with proj.cuh's 256-thread projections (3.110 without them).
//   Alone, each change does less (fp8 steps): staging 2.096 ms, pipelining at depth 3 2.104,
//   pipelining at depth 6 (100 registers) 2.265. Down through this path: fp8 19.3-20.1 us
//   against 19.7-19.9 (no gain), bf16 28.7 us against 27.7 (a loss): LAB03_GEMV1_DOWN=1.
// The three changes (build flags; LAB03_GEMV1_PIPE=0 LAB03_GEMV1_DEPTH=0 LAB03_GEMV1_XS=0
// rebuild the general body for R = 1):
//   LAB03_GEMV1_PIPE   1: at a work item's last chunk, the warp's NEXT item is looked up
//                      and its first loads issued BEFORE this item's butterfly, scales and
//                      epilogue (the general body issues them after, so every row starts
//                      with a wait of a full DRAM latency plus the epilogue's reads); the
//                      item's row scales are read when it starts. No extra registers for
//                      weights: the buffer is free once the last chunk is widened;
//   LAB03_GEMV1_DEPTH  loads per lane and matrix in one chunk (0: WF::kIlp). 3: fewer
//                      registers (fp8 gate+up 80 instead of 100: 3 blocks per SM, not 2);
//   LAB03_GEMV1_XS     1: the up kernel's input row (one token at batch 1) staged ONCE per
//                      block in shared memory as fp32 (hi + lo, exact): the inner loop reads
//                      it with 16-byte shared loads instead of two bf16 loads, two unpacks and
//                      an add per 8 activations. Rows wider than kLab03Gemv1XsMax floats, or
//                      sorted rows of more than one token, keep the global reads.
//   LAB03_GEMV1_DOWN   1: the down kernel takes the path too (PIPE and DEPTH; XS is the up
//                      kernel's);
//   LAB03_GEMV1_MINB_UP, _DOWN  minimum resident blocks of layer 03's R = 1 kernels
//                      (__launch_bounds__; 0: the compiler's choice).
// Every lane sums the same products in the same order as the general body (chunks cover
// pieces lane, lane + 32, … in order): outputs are bit-identical to it (the H200 runs above:
// equal logits_hash and tokens).
#ifndef LAB03_GEMV1_PIPE
#define LAB03_GEMV1_PIPE 1
#endif
#ifndef LAB03_GEMV1_DEPTH
#define LAB03_GEMV1_DEPTH 3
#endif
#ifndef LAB03_GEMV1_XS
#define LAB03_GEMV1_XS 1
#endif
#ifndef LAB03_GEMV1_DOWN
#define LAB03_GEMV1_DOWN 0
#endif
#ifndef LAB03_GEMV1_MINB_UP
#define LAB03_GEMV1_MINB_UP 0
#endif
#ifndef LAB03_GEMV1_MINB_DOWN
#define LAB03_GEMV1_MINB_DOWN 0
#endif
#define LAB03_GEMV1(GLU) \
  (((GLU) || LAB03_GEMV1_DOWN) && (LAB03_GEMV1_PIPE || LAB03_GEMV1_DEPTH || (LAB03_GEMV1_XS && (GLU))))
constexpr int kLab03Gemv1XsMax = 4096;  // floats of the staged row (16 KB of static shared memory)

// 1 for formats the batch-1 path takes: one weight per element, no block scales, no L2
// prefetch (a format without kPack / kScaleBytes counts as 1 and 0).
template <class W, class = void>
struct Lab03Gemv1Ok {
  static constexpr bool value = !W::kPrefetch;
};
template <class W>
struct Lab03Gemv1Ok<W, std::void_t<decltype(W::kScaleBytes)>> {
  static constexpr bool value = !W::kPrefetch && W::kPack == 1 && W::kScaleBytes == 0;
};

/** Where the staged row keeps elements 4f … 4f + 3 (float4 units): float4 f % Q of weight
 *  load f / Q at (f % Q)·KC + f / Q (Q float4 per load, KC loads per row), so the lanes of a
 *  warp, reading loads c, c + 1, …, read consecutive float4. Host-tested (plan_test.cpp). */
__host__ __device__ __forceinline__ int lab03_gemv1_xs_at(int f, int Q, int KC) { return (f % Q) * KC + f / Q; }

// Where a warp's chunk comes from: the item's weight rows, its input row (global), its
// output row s and weight row n of expert e.
struct Lab03Gemv1Item {
  const uint4 *w0, *w1, *x;
  int64_t s;
  int e, n;
};

template <bool GLU, class WF, bool XS>
__device__ __forceinline__ Lab03Gemv1Item lab03_gemv1_item(int64_t w, const __nv_bfloat16 *A, const int32_t *a_token,
                                                           const typename WF::T *W0, const typename WF::T *W1,
                                                           int64_t expert_stride, const int32_t *s_off,
                                                           const int32_t *s_ts, int E, int N, int K) {
  const MoeTile t = moe_tile_of((int)w, s_off, s_ts, E, N, 1);
  Lab03Gemv1Item it;
  it.e = t.e, it.n = lab03_gemv_row(t), it.s = t.row0;
  it.w0 = (const uint4 *)(W0 + t.e * expert_stride + (int64_t)it.n * K);
  it.w1 = GLU ? (const uint4 *)(W1 + t.e * expert_stride + (int64_t)it.n * K) : it.w0;
  it.x = XS ? nullptr : (const uint4 *)(A + (int64_t)(GLU ? a_token[t.row0] : t.row0) * 2 * K);  // XS: staged
  return it;
}

// The body at R = 1 (lab03_grouped_gemv_body's arguments; s_off / s_ts its shared tables).
// XS: xs is the staged row (lab03_gemv1_xs_at's order); else the input rows come from
// global memory (through L1), as in the general body.
template <bool GLU, class WF, bool PIPE, int D, bool XS>
__device__ __forceinline__ void lab03_gemv1_run(const __nv_bfloat16 *__restrict__ A, const int32_t *__restrict__ a_token,
                                                const typename WF::T *__restrict__ W0,
                                                const typename WF::T *__restrict__ W1, int64_t expert_stride,
                                                const int32_t *s_off, const int32_t *s_ts, int E, int N, int K,
                                                __nv_bfloat16 *__restrict__ H, float *__restrict__ Y,
                                                const Lab03Glu &glu, const WF &fmt, const float4 *xs) {
  constexpr int XL = WF::kPerLoad / 8;
  const int lane = threadIdx.x & 31, K8 = K >> 3, KC = K / WF::kPerLoad, nch = (KC + 32 * D - 1) / (32 * D);
  const int64_t total = (int64_t)s_ts[E] * N, warps = ((int64_t)gridDim.x * blockDim.x) >> 5;
  int64_t w = ((int64_t)blockIdx.x * blockDim.x + threadIdx.x) >> 5;
  if (w >= total) return;
  uint4 wv[D], uv[D];
  auto load = [&](const Lab03Gemv1Item &it, int ch) {
#pragma unroll
    for (int j = 0; j < D; j++) {
      const int c = lane + 32 * (ch * D + j);
      const bool in = c < KC;
      wv[j] = in ? gemv_ld_stream(it.w0 + c) : make_uint4(0, 0, 0, 0);
      if (GLU) uv[j] = in ? gemv_ld_stream(it.w1 + c) : make_uint4(0, 0, 0, 0);
    }
  };
  auto scales = [&](const Lab03Gemv1Item &it, float *s0, float *s1) {  // the general body's factors
    *s0 = *s1 = 1.0f;
    if constexpr (WF::kScaled) *s0 = fmt.scale(0, it.e, it.n), *s1 = GLU ? fmt.scale(1, it.e, it.n) : 0.0f;
  };
  Lab03Gemv1Item cur = lab03_gemv1_item<GLU, WF, XS>(w, A, a_token, W0, W1, expert_stride, s_off, s_ts, E, N, K);
  load(cur, 0);
  float s0 = 1.0f, s1 = 1.0f;
  if (PIPE) scales(cur, &s0, &s1);
  float a0 = 0.0f, a1 = 0.0f;
  for (int ch = 0;;) {
#pragma unroll
    for (int j = 0; j < D; j++) {
      const int c = lane + 32 * (ch * D + j);
      if (c >= KC) break;
      float wf[WF::kPerLoad], uf[WF::kPerLoad];
      WF::unpack(wv[j], wf);
      if (GLU) WF::unpack(uv[j], uf);
#pragma unroll
      for (int h = 0; h < XL; h++) {
        float xf[8];
        if constexpr (XS) {
          const float4 p = xs[lab03_gemv1_xs_at(c * 2 * XL + 2 * h, 2 * XL, KC)],
                       q = xs[lab03_gemv1_xs_at(c * 2 * XL + 2 * h + 1, 2 * XL, KC)];
          xf[0] = p.x, xf[1] = p.y, xf[2] = p.z, xf[3] = p.w, xf[4] = q.x, xf[5] = q.y, xf[6] = q.z, xf[7] = q.w;
        } else {
          float hf[8], lf[8];
          gemv_unpack8(__ldg(cur.x + c * XL + h), hf);
          gemv_unpack8(__ldg(cur.x + K8 + c * XL + h), lf);
#pragma unroll
          for (int q = 0; q < 8; q++) xf[q] = hf[q] + lf[q];  // exact: lo holds the bits below hi's
        }
#pragma unroll
        for (int q = 0; q < 8; q++) {
          a0 = fmaf(wf[8 * h + q], xf[q], a0);
          if (GLU) a1 = fmaf(uf[8 * h + q], xf[q], a1);
        }
      }
    }
    if (ch + 1 < nch) {  // the row's next chunk
      load(cur, ++ch);
      continue;
    }
    // the item's last chunk: the next item (PIPE: its first loads now), then this one's outputs
    const bool more = w + warps < total;
    Lab03Gemv1Item nxt = cur;
    if (more) {
      nxt = lab03_gemv1_item<GLU, WF, XS>(w + warps, A, a_token, W0, W1, expert_stride, s_off, s_ts, E, N, K);
      if (PIPE) load(nxt, 0);
    }
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) {
      a0 += __shfl_xor_sync(0xFFFFFFFFu, a0, o);
      if (GLU) a1 += __shfl_xor_sync(0xFFFFFFFFu, a1, o);
    }
    if (!PIPE) scales(cur, &s0, &s1);
    if constexpr (WF::kScaled) a0 *= s0, a1 *= s1;
    if (lane == 0) {
      if (GLU) {
        const float v = lab03_glu_at(glu, cur.e, cur.n, a0, a1);
        const __nv_bfloat16 hi = __float2bfloat16(v);
        H[cur.s * 2 * N + cur.n] = hi;
        H[cur.s * 2 * N + N + cur.n] = __float2bfloat16(v - __bfloat162float(hi));
      } else {
        Y[cur.s * N + cur.n] = a0;
      }
    }
    if (!more) break;
    if (!PIPE) load(nxt, 0);  // the general body's order: the next row's loads after the epilogue
    else scales(nxt, &s0, &s1);
    a0 = a1 = 0.0f;
    w += warps, cur = nxt, ch = 0;
  }
}

// Batch 1's entry from lab03_grouped_gemv_body (after its tables are in shared memory):
// the staged row when LAB03_GEMV1_XS applies, then lab03_gemv1_run.
template <bool GLU, class WF>
__device__ __forceinline__ void lab03_gemv1_body(const __nv_bfloat16 *__restrict__ A, const int32_t *__restrict__ a_token,
                                                 const typename WF::T *__restrict__ W0,
                                                 const typename WF::T *__restrict__ W1, int64_t expert_stride,
                                                 const int32_t *s_off, const int32_t *s_ts, int E, int N, int K,
                                                 __nv_bfloat16 *__restrict__ H, float *__restrict__ Y,
                                                 const Lab03Glu &glu, const WF &fmt) {
  constexpr bool PIPE = LAB03_GEMV1_PIPE != 0;
  constexpr int D = LAB03_GEMV1_DEPTH > 0 ? LAB03_GEMV1_DEPTH : WF::kIlp;
  const float4 *xs = nullptr;
  if constexpr (GLU && LAB03_GEMV1_XS) {
    __shared__ float4 lab03_gemv1_xs[kLab03Gemv1XsMax / 4];
    const int P = s_off[E], KC = K / WF::kPerLoad, K4 = K >> 2;
    const int32_t tok = P > 0 ? a_token[0] : 0;
    int same = K <= kLab03Gemv1XsMax;
    for (int s = threadIdx.x; same && s < P; s += blockDim.x) same = a_token[s] == tok;
    if (__syncthreads_and(same) && P > 0) {  // block-uniform
      const uint2 *hi = (const uint2 *)(A + (int64_t)tok * 2 * K), *lo = (const uint2 *)(A + (int64_t)tok * 2 * K + K);
      for (int f = threadIdx.x; f < K4; f += blockDim.x) {  // elements 4f..4f+3
        const uint2 h = __ldg(hi + f), l = __ldg(lo + f);
        float4 v;
        v.x = __uint_as_float(h.x << 16) + __uint_as_float(l.x << 16);
        v.y = __uint_as_float(h.x & 0xFFFF0000u) + __uint_as_float(l.x & 0xFFFF0000u);
        v.z = __uint_as_float(h.y << 16) + __uint_as_float(l.y << 16);
        v.w = __uint_as_float(h.y & 0xFFFF0000u) + __uint_as_float(l.y & 0xFFFF0000u);
        lab03_gemv1_xs[lab03_gemv1_xs_at(f, WF::kPerLoad / 4, KC)] = v;
      }
      __syncthreads();
      xs = lab03_gemv1_xs;
    }
  }
  if (xs) lab03_gemv1_run<GLU, WF, PIPE, D, true>(A, a_token, W0, W1, expert_stride, s_off, s_ts, E, N, K, H, Y, glu, fmt, xs);
  else lab03_gemv1_run<GLU, WF, PIPE, D, false>(A, a_token, W0, W1, expert_stride, s_off, s_ts, E, N, K, H, Y, glu, fmt, xs);
}

// ---- kernels ----------------------------------------------------------------------------
// GLU (up): H[s] = split(lab03_glu_at(Wg_e · x, Wu_e · x)), x = A[a_token[s]] ([hi | lo], 2K
// bf16), H [P][2N] bf16 split rows; else (down): Y[s][n] = Wd_e[n] · A[s], Y [P][N] fp32.
// Work items (expert e, up to R sorted rows, weight row n) from ch15's tables (bm = R:
// one m-tile per expert when every expert has at most R tokens).
// Strategy: persistent grid, a warp per item, the tables in shared memory; per lane ILP
// 16-byte streaming weight loads (ch08), each weight used for the item's R rows (hi + lo
// added in fp32, exact), shuffle reduction. Limiter: DRAM read bandwidth.
// The body, for weights in format WF (K a multiple of WF::kPerLoad): a 16-byte load holds
// kPerLoad weights and meets kPerLoad / 8 16-byte loads of each activation half-row.
template <int R, bool GLU, class WF>
__device__ __forceinline__ void lab03_grouped_gemv_body(const __nv_bfloat16 *__restrict__ A,
                                                        const int32_t *__restrict__ a_token,
                                                        const typename WF::T *__restrict__ W0,
                                                        const typename WF::T *__restrict__ W1, int64_t expert_stride,
                                                        const int32_t *__restrict__ offsets,
                                                        const int32_t *__restrict__ tile_start, int E, int N, int K,
                                                        __nv_bfloat16 *__restrict__ H, float *__restrict__ Y,
                                                        const Lab03Glu &glu, const WF &fmt) {
  constexpr int XL = WF::kPerLoad / 8;  // activation loads (hi; lo the same) per weight load
  __shared__ int32_t s_off[MOE_MAX_EXPERTS + 1], s_ts[MOE_MAX_EXPERTS + 1];
  pdl_wait_prior();  // PDL (ch12): the tables (which weights) come from the sort kernel
  pdl_allow_next();
  for (int x = threadIdx.x; x <= E; x += blockDim.x) s_off[x] = offsets[x], s_ts[x] = tile_start[x];
  __syncthreads();
  if constexpr (R == 1 && LAB03_GEMV1(GLU) && Lab03Gemv1Ok<WF>::value) {  // batch 1's variants, above
    lab03_gemv1_body<GLU, WF>(A, a_token, W0, W1, expert_stride, s_off, s_ts, E, N, K, H, Y, glu, fmt);
    return;
  }
  const int lane = threadIdx.x & 31, K8 = K >> 3, KC = (int)((unsigned)K8 / XL);  // weight loads per row
  const int64_t total = (int64_t)s_ts[E] * N, warps = ((int64_t)gridDim.x * blockDim.x) >> 5;
  for (int64_t w = ((int64_t)blockIdx.x * blockDim.x + threadIdx.x) >> 5; w < total; w += warps) {
    const MoeTile t = moe_tile_of((int)w, s_off, s_ts, E, N, R);
    const int n = lab03_gemv_row(t);
    const uint4 *w0 = (const uint4 *)(W0 + t.e * expert_stride + (int64_t)n * K / WF::kPack);
    const uint4 *w1 = GLU ? (const uint4 *)(W1 + t.e * expert_stride + (int64_t)n * K / WF::kPack) : w0;
    const uint4 *x[R];
#pragma unroll
    for (int r = 0; r < R; r++)
      x[r] = r < t.rows ? (const uint4 *)(A + (int64_t)(GLU ? a_token[t.row0 + r] : t.row0 + r) * 2 * K) : nullptr;
    float a0[R], a1[R];
#pragma unroll
    for (int r = 0; r < R; r++) a0[r] = a1[r] = 0.0f;
    const char *pf0 = nullptr, *pf1 = nullptr;  // WF::kPrefetch: the warp's next item's rows
    if constexpr (WF::kPrefetch) {
      if (w + warps < total) {
        const MoeTile tn = moe_tile_of((int)(w + warps), s_off, s_ts, E, N, R);
        const int64_t at = tn.e * expert_stride + (int64_t)lab03_gemv_row(tn) * K / WF::kPack;
        pf0 = (const char *)(W0 + at);
        pf1 = (const char *)(W1 + at);
      }
    }
    for (int c0 = lane; c0 < KC; c0 += 32 * WF::kIlp) {
      uint4 wv[WF::kIlp], uv[WF::kIlp];
      unsigned sw[WF::kIlp], su[WF::kIlp];  // WF::kScaleBytes: the loads' block scales
#pragma unroll
      for (int j = 0; j < WF::kIlp; j++) {
        const bool in = c0 + 32 * j < KC;
        wv[j] = in ? gemv_ld_stream(w0 + c0 + 32 * j) : make_uint4(0, 0, 0, 0);
        if (GLU) uv[j] = in ? gemv_ld_stream(w1 + c0 + 32 * j) : make_uint4(0, 0, 0, 0);
        if constexpr (WF::kScaleBytes > 0) {
          sw[j] = in ? fmt.block_scale(0, t.e, n, c0 + 32 * j) : 0u;
          if (GLU) su[j] = in ? fmt.block_scale(1, t.e, n, c0 + 32 * j) : 0u;
        }
      }
      if constexpr (WF::kPrefetch) {  // after this row's first loads: the next row streams meanwhile
        if (c0 == lane && pf0)
#pragma unroll 1
          for (int b = lane * 128; b < K * (int)sizeof(typename WF::T) / WF::kPack; b += 32 * 128) {
            lab03_prefetch_l2(pf0 + b);
            if (GLU) lab03_prefetch_l2(pf1 + b);
          }
      }
#pragma unroll
      for (int j = 0; j < WF::kIlp; j++) {
        const int c = c0 + 32 * j;
        if (c >= KC) break;
        float wf[WF::kPerLoad], uf[WF::kPerLoad];
        if constexpr (WF::kScaleBytes > 0) {
          WF::unpack_scaled(wv[j], sw[j], wf);
          if (GLU) WF::unpack_scaled(uv[j], su[j], uf);
        } else {
          WF::unpack(wv[j], wf);
          if (GLU) WF::unpack(uv[j], uf);
        }
#pragma unroll
        for (int r = 0; r < R; r++) {
          if (r >= t.rows) break;
#pragma unroll
          for (int h = 0; h < XL; h++) {
            float hf[8], lf[8];
            gemv_unpack8(__ldg(x[r] + c * XL + h), hf);
            gemv_unpack8(__ldg(x[r] + K8 + c * XL + h), lf);
#pragma unroll
            for (int q = 0; q < 8; q++) {
              const float xf = hf[q] + lf[q];  // exact: lo holds the bits below hi's
              a0[r] = fmaf(wf[8 * h + q], xf, a0[r]);
              if (GLU) a1[r] = fmaf(uf[8 * h + q], xf, a1[r]);
            }
          }
        }
      }
    }
#pragma unroll
    for (int r = 0; r < R; r++)
#pragma unroll
      for (int o = 16; o > 0; o >>= 1) {
        a0[r] += __shfl_xor_sync(0xFFFFFFFFu, a0[r], o);
        if (GLU) a1[r] += __shfl_xor_sync(0xFFFFFFFFu, a1[r], o);
      }
    if constexpr (WF::kScaled) {  // the weight row's scale(s), once per output
      const float s0 = fmt.scale(0, t.e, n), s1 = GLU ? fmt.scale(1, t.e, n) : 0.0f;
#pragma unroll
      for (int r = 0; r < R; r++) a0[r] *= s0, a1[r] *= s1;
    }
#pragma unroll
    for (int r = 0; r < R; r++) {
      if (r >= t.rows || lane != r) continue;
      const int64_t s = t.row0 + r;
      if (GLU) {
        const float v = lab03_glu_at(glu, t.e, n, a0[r], a1[r]);
        const __nv_bfloat16 hi = __float2bfloat16(v);
        H[s * 2 * N + n] = hi;
        H[s * 2 * N + N + n] = __float2bfloat16(v - __bfloat162float(hi));
      } else {
        Y[s * N + n] = a0[r];
      }
    }
  }
}

template <int R, bool GLU>
__global__ void __launch_bounds__(kLab03GemvThreads, R == 1 ? (GLU ? LAB03_GEMV1_MINB_UP : LAB03_GEMV1_MINB_DOWN) : 0)
    lab03_grouped_gemv_kernel(const __nv_bfloat16 *__restrict__ A, const int32_t *__restrict__ a_token,
                              const __nv_bfloat16 *__restrict__ W0, const __nv_bfloat16 *__restrict__ W1,
                              int64_t expert_stride, const int32_t *__restrict__ offsets,
                              const int32_t *__restrict__ tile_start, int E, int N, int K,
                              __nv_bfloat16 *__restrict__ H, float *__restrict__ Y, Lab03Glu glu) {
  lab03_grouped_gemv_body<R, GLU>(A, a_token, W0, W1, expert_stride, offsets, tile_start, E, N, K, H, Y, glu,
                                  Lab03Bf16Weights());
}

// The same function as lab03_grouped_gemv_kernel for any number of rows per expert, as
// ch15's moe_grouped_gemm_kernel computes it (work items of BM rows × 64 columns), with the
// A stage holding the item's hi rows, then its lo rows: each k-step issues the MMA twice
// into the same accumulators. Strategy: ch15's (persistent grid, one cp.async ring across
// work items, XOR-swizzled shared stages, ldmatrix + mma.sync m16n8k16, SwiGLU in the
// epilogue, lab03_glu_at). Limiter: HBM (weights streamed once) at decode sizes.
// The body, for weights in format WF (K a multiple of WF::kPerLoad): a weight row's slice
// of BK is BCH 16-byte copies (8 for bf16), its stage laid out by WF::stage_offset, the B
// fragments from WF::b_frags, and the accumulators scaled per column (WF::kScaled) before
// the epilogue.
template <int BM, bool GLU, class WF>
__device__ __forceinline__ void lab03_grouped_mma_body(const __nv_bfloat16 *__restrict__ A,
                                                       const int32_t *__restrict__ a_token,
                                                       const typename WF::T *__restrict__ W0,
                                                       const typename WF::T *__restrict__ W1, int64_t expert_stride,
                                                       const int32_t *__restrict__ offsets,
                                                       const int32_t *__restrict__ tile_start, int E, int N, int K,
                                                       __nv_bfloat16 *__restrict__ H, float *__restrict__ Y,
                                                       const Lab03Glu &glu, const WF &fmt) {
  using namespace moe_grouped;
  typedef typename WF::T T;
  constexpr int STAGES = Lab03Stages<BM, WF>::value, MT = BM / 16, MATS = GLU ? 2 : 1;
  constexpr int AROWS = 2 * BM, BROWS = MATS * BN;  // A: hi rows 0..BM-1, lo rows BM..2BM-1
  constexpr int BCH = BK / WF::kPerLoad;            // 16-byte copies per weight row slice
  constexpr int A_COPIES = AROWS * 8 / THREADS, B_COPIES = BROWS * BCH / THREADS;
  static_assert(BM % 16 == 0 && AROWS * 8 % THREADS == 0 && BROWS * BCH % THREADS == 0, "tiling");
  extern __shared__ __align__(128) unsigned char lab03_smem[];
  __nv_bfloat16 *sA = (__nv_bfloat16 *)lab03_smem;  // [STAGES][2·BM][BK]
  T *sB = (T *)(sA + STAGES * AROWS * BK);          // [STAGES][BROWS][BK / kPack]
  unsigned char *sS = (unsigned char *)(sB + STAGES * BROWS * BK / WF::kPack);  // [STAGES][BROWS][kScaleBytes]
  constexpr int SCOPIES = BROWS * WF::kScaleBytes / 16;  // 16-byte copies of a slice's scales
  static_assert(SCOPIES == 0 || (SCOPIES % MATS == 0 && SCOPIES / MATS * 16 == BN * WF::kScaleBytes), "scales");
  const int tid = threadIdx.x, lane = tid % 32, warp = tid / 32;
  const int n_tiles = (N + BN - 1) / BN, KT = (K + BK - 1) / BK;
  pdl_wait_prior();  // PDL (ch12): the tables (which weights) come from the sort kernel
  pdl_allow_next();
  const int total = tile_start[E] * n_tiles;
  const int mine = total > (int)blockIdx.x ? (total - 1 - (int)blockIdx.x) / gridDim.x + 1 : 0;
  const int n_slices = mine * KT;

  const int ld_chunk = tid % 8, ld_row = tid / 8, b_chunk = tid % BCH, b_row = tid / BCH;
  const __nv_bfloat16 *a_src[A_COPIES];
  const T *b_src[B_COPIES];
  const unsigned char *s_src = nullptr;  // this thread's scale copy (tid < SCOPIES), slice 0
  int ld_item = -1;
  auto load_slice = [&](int j) {
    const int item = j / KT, kt = j - item * KT;
    if (item != ld_item) {
      ld_item = item;
      const MoeTile t = moe_tile_of((int)blockIdx.x + item * gridDim.x, offsets, tile_start, E, n_tiles, BM);
#pragma unroll
      for (int i = 0; i < A_COPIES; i++) {
        const int r = ld_row + i * (THREADS / 8), m = r % BM;
        a_src[i] = nullptr;
        if (m < t.rows) {
          const int64_t src = GLU ? a_token[t.row0 + m] : t.row0 + m;
          a_src[i] = A + src * 2 * K + (r >= BM ? K : 0);  // the hi half, or the lo half
        }
      }
#pragma unroll
      for (int i = 0; i < B_COPIES; i++) {
        const int r = b_row + i * (THREADS / BCH), n = t.n0 + r % BN;
        const T *W = (GLU && r >= BN) ? W1 : W0;
        b_src[i] = n < N ? W + t.e * expert_stride + (int64_t)n * K / WF::kPack : nullptr;
      }
      if constexpr (SCOPIES > 0) {
        const int g = tid / (SCOPIES / MATS), n = t.n0 + (tid % (SCOPIES / MATS)) * (16 / WF::kScaleBytes);
        s_src = tid < SCOPIES && n < N ? fmt.slice_scales(g, t.e, n) : nullptr;
      }
    }
    const int stage = j % STAGES, k = kt * BK + ld_chunk * 8, kb = kt * BK + b_chunk * WF::kPerLoad;
    __nv_bfloat16 *a = sA + stage * AROWS * BK;
    T *b = sB + stage * BROWS * BK / WF::kPack;
#pragma unroll
    for (int i = 0; i < A_COPIES; i++) {
      const int r = ld_row + i * (THREADS / 8);
      const bool ok = a_src[i] != nullptr && k < K;
      moe_cp_async16(a + moe_swz(r, ld_chunk), ok ? a_src[i] + k : A, ok);
    }
#pragma unroll
    for (int i = 0; i < B_COPIES; i++) {
      const int r = b_row + i * (THREADS / BCH);
      const bool ok = b_src[i] != nullptr && kb < K;
      moe_cp_async16(b + WF::stage_offset(r, b_chunk), ok ? b_src[i] + kb / WF::kPack : W0, ok);
    }
    if constexpr (SCOPIES > 0)
      if (tid < SCOPIES)
        moe_cp_async16(sS + (stage * BROWS + tid * (16 / WF::kScaleBytes)) * WF::kScaleBytes,
                       s_src ? s_src + (int64_t)kt * fmt.slice_pitch : (const unsigned char *)W0, s_src != nullptr);
  };

  float acc[MATS][MT][NT][4];
  auto zero_acc = [&]() {
#pragma unroll
    for (int g = 0; g < MATS; g++)
#pragma unroll
      for (int i = 0; i < MT; i++)
#pragma unroll
        for (int j = 0; j < NT; j++)
#pragma unroll
          for (int q = 0; q < 4; q++) acc[g][i][j][q] = 0.0f;
  };
  zero_acc();
#pragma unroll
  for (int s = 0; s < STAGES - 1; s++) {
    if (s < n_slices) load_slice(s);
    asm volatile("cp.async.commit_group;\n");
  }
  const int wn = warp * WN;
  for (int j = 0; j < n_slices; j++) {
    asm volatile("cp.async.wait_group %0;\n" ::"n"(STAGES - 2) : "memory");
    __syncthreads();
    if (j + STAGES - 1 < n_slices) load_slice(j + STAGES - 1);
    asm volatile("cp.async.commit_group;\n");
    const int stage = j % STAGES;
    const __nv_bfloat16 *a = sA + stage * AROWS * BK;
    const T *b = sB + stage * BROWS * BK / WF::kPack;
    const unsigned char *sc = sS + stage * BROWS * WF::kScaleBytes;
#pragma unroll
    for (int kk = 0; kk < KSTEPS; kk++) {
      unsigned ah[MT][4], al[MT][4], bf[MATS][4];
#pragma unroll
      for (int i = 0; i < MT; i++) {
        moe_ldsm_x4(ah[i], a + moe_swz(i * 16 + (lane & 15), kk * 2 + (lane >> 4)));
        moe_ldsm_x4(al[i], a + moe_swz(BM + i * 16 + (lane & 15), kk * 2 + (lane >> 4)));
      }
#pragma unroll
      for (int g = 0; g < MATS; g++) {
        if constexpr (WF::kScaleBytes > 0) WF::b_frags_scaled(bf[g], b, sc, g * BN + wn, kk, lane);
        else WF::b_frags(bf[g], b, g * BN + wn, kk, lane);
      }
#pragma unroll
      for (int g = 0; g < MATS; g++)
#pragma unroll
        for (int i = 0; i < MT; i++)
#pragma unroll
          for (int n = 0; n < NT; n++) {
            moe_mma_bf16(acc[g][i][n], ah[i], bf[g][2 * n], bf[g][2 * n + 1]);
            moe_mma_bf16(acc[g][i][n], al[i], bf[g][2 * n], bf[g][2 * n + 1]);
          }
    }
    if ((j + 1) % KT == 0) {  // the item's last slice: epilogue from registers
      const MoeTile t = moe_tile_of((int)blockIdx.x + (j / KT) * gridDim.x, offsets, tile_start, E, n_tiles, BM);
      if constexpr (WF::kScaled) {  // each column's weight-row scale, once per output
#pragma unroll
        for (int g = 0; g < MATS; g++)
#pragma unroll
          for (int n = 0; n < NT; n++) {
            const int col = t.n0 + wn + n * 8 + (lane % 4) * 2;
            const float s0 = col < N ? fmt.scale(g, t.e, col) : 0.0f, s1 = col < N ? fmt.scale(g, t.e, col + 1) : 0.0f;
#pragma unroll
            for (int i = 0; i < MT; i++)
#pragma unroll
              for (int h = 0; h < 2; h++) acc[g][i][n][2 * h] *= s0, acc[g][i][n][2 * h + 1] *= s1;
          }
      }
#pragma unroll
      for (int i = 0; i < MT; i++)
#pragma unroll
        for (int n = 0; n < NT; n++)
#pragma unroll
          for (int h = 0; h < 2; h++) {  // accumulator rows lane/4 and lane/4 + 8
            const int r = i * 16 + lane / 4 + h * 8, col = t.n0 + wn + n * 8 + (lane % 4) * 2;
            if (r >= t.rows || col >= N) continue;  // N % 8 == 0: col + 1 < N too
            const int64_t s = t.row0 + r;
            float v0 = acc[0][i][n][2 * h], v1 = acc[0][i][n][2 * h + 1];
            if (GLU) {
              v0 = lab03_glu_at(glu, t.e, col, v0, acc[MATS - 1][i][n][2 * h]);
              v1 = lab03_glu_at(glu, t.e, col + 1, v1, acc[MATS - 1][i][n][2 * h + 1]);
              const __nv_bfloat162 hi = __floats2bfloat162_rn(v0, v1);
              const float2 hf = __bfloat1622float2(hi);
              *(__nv_bfloat162 *)(H + s * 2 * N + col) = hi;
              *(__nv_bfloat162 *)(H + s * 2 * N + N + col) = __floats2bfloat162_rn(v0 - hf.x, v1 - hf.y);
            } else {
              *(float2 *)(Y + s * N + col) = make_float2(v0, v1);
            }
          }
      zero_acc();
    }
  }
  asm volatile("cp.async.wait_group 0;\n" ::: "memory");
}

template <int BM, bool GLU>
__global__ void __launch_bounds__(moe_grouped::THREADS)
    lab03_grouped_mma_kernel(const __nv_bfloat16 *__restrict__ A, const int32_t *__restrict__ a_token,
                             const __nv_bfloat16 *__restrict__ W0, const __nv_bfloat16 *__restrict__ W1,
                             int64_t expert_stride, const int32_t *__restrict__ offsets,
                             const int32_t *__restrict__ tile_start, int E, int N, int K,
                             __nv_bfloat16 *__restrict__ H, float *__restrict__ Y, Lab03Glu glu) {
  lab03_grouped_mma_body<BM, GLU>(A, a_token, W0, W1, expert_stride, offsets, tile_start, E, N, K, H, Y, glu,
                                  Lab03Bf16Weights());
}

// ---- launchers ----------------------------------------------------------------------------
// Once per shape: which kernel, its rows per work item (the sort's bm), persistent grids.
typedef struct {
  int gemv_rows;           // R of the GEMV kernel (1, 2, 4, 8), or 0: the MMA kernel
  int bm;                  // rows per work item: the counting sort's bm
  int grid_up, grid_down;  // blocks of the persistent launches
} Lab03ExpertPlan;

template <typename K>
static inline int lab03_grid(K kernel, int threads, int smem, int sms) {
  if (smem > 48 * 1024) GTL_CUDA(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, smem));
  int per_sm = 0;
  GTL_CUDA(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, kernel, threads, smem));
  if (per_sm < 1) moe_die("layer 03's grouped kernel does not fit on an SM");
  return sms * per_sm;
}

/** The kernel for B tokens per step, each routed to top_k of E experts: the GEMV kernel
 *  while an expert can get at most kLab03GemvMaxRows tokens (B <= 8: a token picks an
 *  expert once), R = the power of two >= B; else the MMA kernel with ch15's rule for BM
 *  (16, 32 or 64: the smallest that holds the mean load B·top_k/E). Host only. */
static inline Lab03ExpertPlan lab03_expert_plan_rows(int B, int top_k, int E) {
  Lab03ExpertPlan p = {0, 0, 0, 0};
  if (B <= kLab03GemvMaxRows) {
    p.gemv_rows = B <= 1 ? 1 : B <= 2 ? 2 : B <= 4 ? 4 : 8;
    p.bm = p.gemv_rows;
  } else {
    const double mean = (double)B * top_k / E;
    p.bm = mean <= 16 ? 16 : mean <= 32 ? 32 : 64;
  }
  return p;
}

#define LAB03_GEMV_GRIDS(R)                                                                              \
  case R:                                                                                                \
    p.grid_up = lab03_grid(lab03_grouped_gemv_kernel<R, true>, kLab03GemvThreads, 0, sms);               \
    p.grid_down = lab03_grid(lab03_grouped_gemv_kernel<R, false>, kLab03GemvThreads, 0, sms);            \
    break;
#define LAB03_MMA_GRIDS(BM)                                                                              \
  case BM:                                                                                               \
    p.grid_up = lab03_grid(lab03_grouped_mma_kernel<BM, true>, moe_grouped::THREADS, Lab03Smem<BM, true>::bytes, sms); \
    p.grid_down = lab03_grid(lab03_grouped_mma_kernel<BM, false>, moe_grouped::THREADS, Lab03Smem<BM, false>::bytes, sms); \
    break;

/** lab03_expert_plan_rows, plus the persistent grids (SMs × resident blocks) and the
 *  shared-memory opt-in of the chosen kernels. Once per shape, at setup; exit 3 on error. */
static inline Lab03ExpertPlan lab03_expert_plan(int B, int top_k, int E, int sms) {
  Lab03ExpertPlan p = lab03_expert_plan_rows(B, top_k, E);
  if (p.gemv_rows) {
    switch (p.gemv_rows) { LAB03_GEMV_GRIDS(1) LAB03_GEMV_GRIDS(2) LAB03_GEMV_GRIDS(4) LAB03_GEMV_GRIDS(8) }
  } else {
    switch (p.bm) { LAB03_MMA_GRIDS(16) LAB03_MMA_GRIDS(32) LAB03_MMA_GRIDS(64) }
  }
  return p;
}

#define LAB03_GEMV_CASE(R, GLU)                                                                          \
  case R:                                                                                                \
    lab03_grouped_gemv_kernel<R, GLU><<<grid, kLab03GemvThreads, 0, s>>>(A, a_token, W0, W1, stride,     \
                                                                        offsets, tile_start, E, N, K, H, Y, glu); \
    break;
#define LAB03_MMA_CASE(BM, GLU)                                                                          \
  case BM:                                                                                               \
    lab03_grouped_mma_kernel<BM, GLU><<<grid, moe_grouped::THREADS, Lab03Smem<BM, GLU>::bytes, s>>>(     \
        A, a_token, W0, W1, stride, offsets, tile_start, E, N, K, H, Y, glu);                            \
    break;

template <bool GLU>
static inline void lab03_grouped_launch(const Lab03ExpertPlan *p, const __nv_bfloat16 *A, const int32_t *a_token,
                                        const __nv_bfloat16 *W0, const __nv_bfloat16 *W1, int64_t stride,
                                        const int32_t *offsets, const int32_t *tile_start, int E, int N, int K,
                                        __nv_bfloat16 *H, float *Y, Lab03Glu glu, cudaStream_t s) {
  if (N % 8 || K % 8 || N < 8 || K < 8 || E < 1 || E > MOE_MAX_EXPERTS)
    moe_die("layer 03's grouped kernels need N, K multiples of 8 and 1 <= E <= 1024");
  const int grid = GLU ? p->grid_up : p->grid_down;
  if (p->gemv_rows) {
    switch (p->gemv_rows) { LAB03_GEMV_CASE(1, GLU) LAB03_GEMV_CASE(2, GLU) LAB03_GEMV_CASE(4, GLU) LAB03_GEMV_CASE(8, GLU) }
  } else {
    switch (p->bm) { LAB03_MMA_CASE(16, GLU) LAB03_MMA_CASE(32, GLU) LAB03_MMA_CASE(64, GLU) }
  }
  GTL_LAUNCH();
}

/** h [P][2F] bf16 split rows (hi, then lo) = split(act(x_t·Wg_eᵀ + bg_e, x_t·Wu_eᵀ + bu_e))
 *  for every sorted row s (token t = sorted_token[s], expert e by offsets), one launch;
 *  act and the biases from glu (lab03_glu_at: silu(g)·u, or gpt-oss's clamped SwiGLU).
 *  x [T][2D] bf16 split rows; gate/up of expert e at w_gate/w_up + e·stride, each [F][D].
 *  Needs moe_dispatch_launch's tables built with bm = p->bm. */
static inline void lab03_expert_up_launch(const Lab03ExpertPlan *p, const __nv_bfloat16 *x, const int32_t *sorted_token,
                                          const __nv_bfloat16 *w_gate, const __nv_bfloat16 *w_up, int64_t stride,
                                          const int32_t *offsets, const int32_t *tile_start, int E, int D, int F,
                                          const Lab03Glu *glu, __nv_bfloat16 *h, cudaStream_t s) {
  lab03_grouped_launch<true>(p, x, sorted_token, w_gate, w_up, stride, offsets, tile_start, E, F, D, h, nullptr, *glu,
                             s);
}

/** y [P][D] fp32 = h_s · Wd_eᵀ for every sorted row s, one launch; h [P][2F] split rows
 *  from lab03_expert_up_launch; down of expert e at w_down + e·stride, [D][F]. */
static inline void lab03_expert_down_launch(const Lab03ExpertPlan *p, const __nv_bfloat16 *h, const __nv_bfloat16 *w_down,
                                            int64_t stride, const int32_t *offsets, const int32_t *tile_start, int E,
                                            int F, int D, float *y, cudaStream_t s) {
  const Lab03Glu none = {nullptr, nullptr, 0, 0, 0.f, 0.f};  // the down kernel has no epilogue terms
  lab03_grouped_launch<false>(p, h, nullptr, w_down, nullptr, stride, offsets, tile_start, E, D, F, nullptr, y, none,
                              s);
}
