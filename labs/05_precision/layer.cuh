// layer.cuh — layer 05 of the lab: layer 04's stage table (lab04_ops()) with every weight
// matrix stored in FP8 E4M3, one fp32 scale per output row, made on the GPU at setup from
// the engine's bf16 weights (weights8.cuh), and every projection reading those bytes.
// decode.cu runs it; --weights=bf16 runs layer 04's table unchanged (same program, same
// engine), --weights=fp8 (the default) this one.
//
// What it replaces (everything else is 04's: the CUDA graph of the step, RoPE with PDL,
// split-KV attention, ch15's counting-sort dispatch, 03's combine, the device sampler):
//   embed                  the token rows from the fp8 embedding (s · q): every matrix is
//                          fp8 here, so a tied lm_head and the embedding agree, and the
//                          reference (ref_weights) reads the same values
//   attn.qkv, moe.router,  one kernel each (lab05_gemv8_kernel): the RMSNorm of the rows
//   logits                 computed in the kernel's prologue into shared memory (ch14's
//                          fusion: the normalized rows never make a round trip to HBM for
//                          the projection), then fp8 weight rows × fp32 activations, fp32
//                          accumulation, the row's scale and bias in the epilogue; q, k and v
//                          in one launch. The router's launch also writes the normalized rows
//                          the experts read (fp32 and 01's split bf16 rows), from block 0.
//   attn.out               the same kernel without the norm; its epilogue adds into the
//                          residual stream (ch14's fused residual add)
//   moe.expert_up/down     grouped8.cuh's fp8 grouped kernels (03's work items)
// Why fp32 activations and not FP8 ones (ch13/ch14 quantize both operands for the tensor
// cores): at decode batch sizes a projection reads each weight once and does B
// multiply-adds with it, so time is the weight bytes over HBM bandwidth; the activations
// are a few KB that sit in shared memory. Quantizing them would save no HBM traffic and
// add a second rounding (an activation's 3-bit mantissa) on top of the weights' one; so
// the only loss against the bf16 layer is the weights' rounding, and the bytes are halved.
// Validation: the CPU reference computes the fp8 model itself (LayerOps.ref_weights: each
// matrix as s·q, exactly a bf16 because s is a power of two, weights8.cuh), so the check
// keeps bf16's bound (rel_l2 < 1e-2, top-1 >= 99%). Against the bf16 model the seeded
// models drift far more than FP8's rounding suggests: plan_test.cpp prints it for mini
// (the routers' near ties flip, and the random logits have near-tied maxima).
// Batches of more than kLab05GemvMaxRows rows keep 04's dense stages and bf16 dense
// weights (embed, q/k/v, o, router, lm_head: 02's cuBLAS on split rows); only the experts
// are fp8 there (dense_fmt bf16 in the roofline). Why: the GEMV reads every weight once per
// 8 rows, and grouped8.cuh's MMA kernel run as one expert holding every token has too few
// work items for a dense matrix (measured on the H200 at batch 64: q/k/v at 110 GB/s).
#pragma once
#include "weights8.cuh"
#include "grouped8.cuh"  // the fp8 expert stages (lab05_expert_up/down, lab05_x8_setup/teardown)

constexpr int kLab05GemvThreads = 512;  // 16 warps per block
constexpr int kLab05GemvMaxRows = 8;    // activation rows per launch (shared memory: 8·K fp32)
constexpr int kLab05RowsPerWarp = 2;    // weight rows a warp streams together (x read once for both)
constexpr int kLab05GemvIlp = 4;        // 16-byte weight loads in flight per row per lane
constexpr int kLab05PrologueLoads = 4;  // float4 pieces of a row per thread: K <= 4·4·512 = 8192

// Up to three projections of the same input in one launch (q, k, v): matrix m has n[m]
// fp8 rows of K at w[m], scales s[m], bias (bf16 [n[m]] or NULL), output out[m]
// [rows][n[m]] fp32.
typedef struct {
  int count;
  int n[3];
  const __nv_fp8_storage_t *w[3];
  const float *s[3];
  const __nv_bfloat16 *bias[3];
  float *out[3];
} Lab05Proj8;

/** Matrix and row of global row g of the concatenated rows of p (n[0] + n[1] + n[2]);
 *  -1 past the end. Host-tested. */
__host__ __device__ __forceinline__ int lab05_proj_row(const Lab05Proj8 &p, int g, int *row) {
  const int e0 = p.n[0], e1 = e0 + (p.count > 1 ? p.n[1] : 0), e2 = e1 + (p.count > 2 ? p.n[2] : 0);
  const int m = g < e0 ? 0 : g < e1 ? 1 : g < e2 ? 2 : -1;
  *row = g - (m == 1 ? e0 : m == 2 ? e1 : 0);
  return m;
}

// Member m of one of p's arrays without indexing the kernel's parameters by a variable
// (which would copy them to local memory).
template <typename T>
__host__ __device__ __forceinline__ T lab05_pick(const T (&a)[3], int m) {
  return m == 0 ? a[0] : m == 1 ? a[1] : a[2];
}

/** Index (in floats) of element k of row r in the kernel's shared activations: for each
 *  row, four planes of K/16 float4, plane j holding elements 4j..4j+3 of every 16-element
 *  chunk, so the 32 lanes of a warp (consecutive chunks) read consecutive float4s: no bank
 *  conflicts. Host-tested (a permutation of 0..R·K-1). */
__host__ __device__ __forceinline__ int lab05_xs_at(int r, int k, int K) {
  const int c = k >> 4, e = k & 15;
  return ((r * 4 + (e >> 2)) * (K >> 4) + c) * 4 + (e & 3);
}

// The fp8 GEMVs' prologue (lab05_gemv8_kernel, fused.cuh's kernels), row by row: rows [0, R) of x (zero past rows),
// normalized by norm_w when set, into xs (lab05_xs_at's layout); block 0 also writes them
// to xn and xb (01's split rows) when set. red: 16 floats, inv_s: 1 float, shared. Each row's
// float4 pieces (and the norm weight's) are loaded at once, 1/rms comes from a block reduction, and
// piece i4 of 4 elements is one float4 of lab05_xs_at's layout (chunk i4 / 4, plane i4 % 4).
template <int R>
__device__ __forceinline__ void lab05_stage_rows(const float *__restrict__ x, int rows, int K,
                                                      const __nv_bfloat16 *__restrict__ norm_w, float eps,
                                                      float *__restrict__ xn, __nv_bfloat16 *__restrict__ xb,
                                                      float *xs, float *red, float *inv_s) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, K16 = K >> 4, K4 = K >> 2;
  float4 *xs4w = (float4 *)xs;
  for (int r = 0; r < R; r++) {
    float4 xv[kLab05PrologueLoads];
    uint2 nv[kLab05PrologueLoads];
    float ss = 0.f;
#pragma unroll
    for (int j = 0; j < kLab05PrologueLoads; j++) {
      const int i4 = threadIdx.x + j * kLab05GemvThreads;
      xv[j] = make_float4(0.f, 0.f, 0.f, 0.f);
      nv[j] = make_uint2(0u, 0u);
      if (r < rows && i4 < K4) {
        xv[j] = ((const float4 *)(x + (size_t)r * K))[i4];
        if (norm_w) nv[j] = ((const uint2 *)norm_w)[i4];
      }
      ss = fmaf(xv[j].x, xv[j].x, fmaf(xv[j].y, xv[j].y, fmaf(xv[j].z, xv[j].z, fmaf(xv[j].w, xv[j].w, ss))));
    }
    if (norm_w) {
#pragma unroll
      for (int o = 16; o > 0; o >>= 1) ss += __shfl_xor_sync(0xFFFFFFFFu, ss, o);
      if (lane == 0) red[warp] = ss;
      __syncthreads();
      if (threadIdx.x == 0) {
        float t = 0.f;
        for (int i = 0; i < kLab05GemvThreads / 32; i++) t += red[i];
        inv_s[0] = rsqrtf(t / K + eps);
      }
      __syncthreads();
    }
    const float inv = norm_w ? inv_s[0] : 1.f;
#pragma unroll
    for (int j = 0; j < kLab05PrologueLoads; j++) {
      const int i4 = threadIdx.x + j * kLab05GemvThreads;
      if (i4 >= K4) break;
      float4 v = xv[j];
      if (norm_w) {  // 00's arithmetic: w · (x · inv)
        v.x = __uint_as_float(nv[j].x << 16) * (v.x * inv), v.y = __uint_as_float(nv[j].x & 0xFFFF0000u) * (v.y * inv);
        v.z = __uint_as_float(nv[j].y << 16) * (v.z * inv), v.w = __uint_as_float(nv[j].y & 0xFFFF0000u) * (v.w * inv);
      }
      xs4w[(r * 4 + (i4 & 3)) * K16 + (i4 >> 2)] = v;
      if (blockIdx.x == 0 && r < rows) {
        if (xn) ((float4 *)(xn + (size_t)r * K))[i4] = v;
        if (xb) {
          __nv_bfloat16 *hi = xb + (size_t)r * 2 * K + 4 * i4;
          lab01_split(v.x, hi, hi + K), lab01_split(v.y, hi + 1, hi + K + 1);
          lab01_split(v.z, hi + 2, hi + K + 2), lab01_split(v.w, hi + 3, hi + K + 3);
        }
      }
    }
    __syncthreads();
  }
}

// ---- kernel -------------------------------------------------------------------------------
// out_m[r][n] (+)= s_m[n] · Σ_k q_m[n][k] · xh[r][k] (+ bias_m[n]) for r < rows (<= R) and
// every row n of the (up to three) matrices of p, xh = norm_w ⊙ x[r] / sqrt(mean(x[r]²) +
// eps) when norm_w is set (00's arithmetic: w · (x · inv)), else x[r]. Block 0 also writes
// xh to xn ([rows][K] fp32) and to xb (02's split rows: [rows][hi | lo] bf16) when set.
// x fp32 [rows][K], K % 16 == 0; q E4M3 [n][K] (16-byte aligned rows), s fp32.
// Strategy: xh staged in shared memory once per block (lab05_xs_at's layout); persistent
// grid, a warp per kLab05RowsPerWarp weight rows, kLab05GemvIlp 16-byte streaming loads
// (16 weights each) in flight per row and lane, decoded exactly (lab05_fp8x16_to_f32) and
// used for every row r while in registers, shuffle reduction, the scale once per output.
// Limiter: DRAM read bandwidth (weight bytes) at small R.
template <int R>
__global__ void __launch_bounds__(kLab05GemvThreads)
    lab05_gemv8_kernel(const float *__restrict__ x, int rows, int K, const __nv_bfloat16 *__restrict__ norm_w,
                       float eps, float *__restrict__ xn, __nv_bfloat16 *__restrict__ xb, Lab05Proj8 p,
                       int accumulate) {
  extern __shared__ __align__(16) float lab05_xs[];
  __shared__ float red[kLab05GemvThreads / 32];
  __shared__ float inv_s[1];
  const int lane = threadIdx.x & 31, K16 = K >> 4;
  {  // PDL (layer 04's programmatic edges): the warp's first weight rows into L2, then the wait
    int n0;
    for (int i = 0; i < kLab05RowsPerWarp; i++) {
      const int m = lab05_proj_row(p, (int)((blockIdx.x * blockDim.x + threadIdx.x) >> 5) * kLab05RowsPerWarp + i, &n0);
      if (m >= 0)
        for (int b = lane * 128; b < K; b += 32 * 128) lab03_prefetch_l2(lab05_pick(p.w, m) + (size_t)n0 * K + b);
    }
  }
  pdl_wait_prior();  // x (and the residual out) come from earlier kernels of the step
  pdl_allow_next();
  // prologue: the rows normalized into shared memory (lab05_stage_rows)
  lab05_stage_rows<R>(x, rows, K, norm_w, eps, xn, xb, lab05_xs, red, inv_s);
  const float4 *xs4 = (const float4 *)lab05_xs;
  constexpr int NR = kLab05RowsPerWarp, ILP = kLab05GemvIlp;
  const int total = p.n[0] + (p.count > 1 ? p.n[1] : 0) + (p.count > 2 ? p.n[2] : 0);
  const int warps = (int)((gridDim.x * blockDim.x) >> 5);
  for (int g0 = (int)((blockIdx.x * blockDim.x + threadIdx.x) >> 5) * NR; g0 < total; g0 += warps * NR) {
    const uint4 *w[NR];
    int mat[NR], row[NR];
#pragma unroll
    for (int i = 0; i < NR; i++) {
      mat[i] = lab05_proj_row(p, g0 + i, &row[i]);
      w[i] = mat[i] < 0 ? nullptr : (const uint4 *)(lab05_pick(p.w, mat[i]) + (size_t)row[i] * K);
    }
    float acc[NR][R];
#pragma unroll
    for (int i = 0; i < NR; i++)
#pragma unroll
      for (int r = 0; r < R; r++) acc[i][r] = 0.f;
    for (int c0 = lane; c0 < K16; c0 += 32 * ILP) {
      uint4 wv[NR][ILP];
#pragma unroll
      for (int i = 0; i < NR; i++)
#pragma unroll
        for (int j = 0; j < ILP; j++)
          wv[i][j] = w[i] && c0 + 32 * j < K16 ? gemv_ld_stream(w[i] + c0 + 32 * j) : make_uint4(0, 0, 0, 0);
#pragma unroll
      for (int j = 0; j < ILP; j++) {
        const int c = c0 + 32 * j;
        if (c >= K16) break;
        float wf[NR][16];
#pragma unroll
        for (int i = 0; i < NR; i++) lab05_fp8x16_to_f32(wv[i][j], wf[i]);
#pragma unroll
        for (int r = 0; r < R; r++) {
          if (r >= rows) break;
#pragma unroll
          for (int pl = 0; pl < 4; pl++) {
            const float4 xv = xs4[(r * 4 + pl) * K16 + c];
#pragma unroll
            for (int i = 0; i < NR; i++) {
              acc[i][r] = fmaf(wf[i][4 * pl], xv.x, acc[i][r]);
              acc[i][r] = fmaf(wf[i][4 * pl + 1], xv.y, acc[i][r]);
              acc[i][r] = fmaf(wf[i][4 * pl + 2], xv.z, acc[i][r]);
              acc[i][r] = fmaf(wf[i][4 * pl + 3], xv.w, acc[i][r]);
            }
          }
        }
      }
    }
#pragma unroll
    for (int i = 0; i < NR; i++)
#pragma unroll
      for (int r = 0; r < R; r++)
#pragma unroll
        for (int o = 16; o > 0; o >>= 1) acc[i][r] += __shfl_xor_sync(0xFFFFFFFFu, acc[i][r], o);
#pragma unroll
    for (int i = 0; i < NR; i++)
#pragma unroll
      for (int r = 0; r < R; r++) {
        if (mat[i] < 0 || r >= rows || lane != i * R + r) continue;
        const int m = mat[i], n = row[i];
        const __nv_bfloat16 *bias = lab05_pick(p.bias, m);
        float v = acc[i][r] * lab05_pick(p.s, m)[n];
        if (bias) v += __bfloat162float(bias[n]);
        float *o = lab05_pick(p.out, m) + (size_t)r * lab05_pick(p.n, m) + n;
        *o = accumulate ? *o + v : v;
      }
  }
}

// ---- launchers ----------------------------------------------------------------------------
// The dense projections' plan, made at setup: the kernel's template rows and its grid.
typedef struct {
  int R;       // template rows: the power of two >= min(B, kLab05GemvMaxRows)
  int grid;    // blocks: SMs × resident blocks at the largest K
  int max_k;   // the largest K of a projection (shared memory: R·max_k fp32)
} Lab05Dense;

/** Rows per launch of lab05_gemv8_kernel for B sequences: 1, 2, 4 or 8. Host-tested. */
static inline int lab05_gemv_rows(int B) {
  const int b = B < kLab05GemvMaxRows ? B : kLab05GemvMaxRows;
  return b <= 1 ? 1 : b <= 2 ? 2 : b <= 4 ? 4 : 8;
}

template <int R>
static inline int lab05_gemv8_grid(int max_k, int sms) {
  const int smem = R * max_k * 4;
  if (smem > 48 * 1024)
    GTL_CUDA(cudaFuncSetAttribute(lab05_gemv8_kernel<R>, cudaFuncAttributeMaxDynamicSharedMemorySize, smem));
  int per_sm = 0;
  GTL_CUDA(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, lab05_gemv8_kernel<R>, kLab05GemvThreads, smem));
  if (per_sm < 1) {
    fprintf(stderr, "error: layer 05's fp8 GEMV does not fit on an SM (%d rows of K = %d in shared memory)\n", R, max_k);
    exit(GTL_EXIT_RUNTIME);
  }
  return sms * per_sm;
}

static inline Lab05Dense lab05_dense_plan(const Engine *e, int sms) {
  const MoeConfig *c = &e->cfg;
  Lab05Dense d;
  memset(&d, 0, sizeof d);
  d.R = lab05_gemv_rows(e->B);
  d.max_k = c->D > c->H * c->head_dim ? c->D : c->H * c->head_dim;
  switch (d.R) {
    case 1: d.grid = lab05_gemv8_grid<1>(d.max_k, sms); break;
    case 2: d.grid = lab05_gemv8_grid<2>(d.max_k, sms); break;
    case 4: d.grid = lab05_gemv8_grid<4>(d.max_k, sms); break;
    default: d.grid = lab05_gemv8_grid<8>(d.max_k, sms); break;
  }
  return d;
}

// out_m (+)= the projections p of x [B][K] (normalized by norm_w when set; xn, xb: the
// normalized rows' side outputs, or NULL), slices of d.R rows, one launch each.
static inline void lab05_project(const Engine *e, const float *x, int K, const __nv_bfloat16 *norm_w, float *xn,
                                 __nv_bfloat16 *xb, Lab05Proj8 p, int accumulate) {
  const Lab05Dense *d = (const Lab05Dense *)((const Lab05 *)e->layer)->dense;
  const size_t smem = (size_t)d->R * K * 4;
  const float eps = (float)e->cfg.rms_eps;
  const int per_block = kLab05RowsPerWarp * kLab05GemvThreads / 32;  // weight rows a block's warps take at once
  const int need = (p.n[0] + (p.count > 1 ? p.n[1] : 0) + (p.count > 2 ? p.n[2] : 0) + per_block - 1) / per_block;
  const int grid = need < d->grid ? need : d->grid;  // the router's E rows: one block, not a wave
  for (int b0 = 0; b0 < e->B; b0 += d->R) {
    const int rows = e->B - b0 < d->R ? e->B - b0 : d->R;
    Lab05Proj8 q = p;
    for (int m = 0; m < p.count; m++) q.out[m] = p.out[m] + (size_t)b0 * p.n[m];
    const float *xr = x + (size_t)b0 * K;
    float *xnr = xn ? xn + (size_t)b0 * K : NULL;
    __nv_bfloat16 *xbr = xb ? xb + (size_t)b0 * 2 * K : NULL;
    switch (d->R) {
      case 1: lab05_gemv8_kernel<1><<<grid, kLab05GemvThreads, smem, e->s>>>(xr, rows, K, norm_w, eps, xnr, xbr, q, accumulate); break;
      case 2: lab05_gemv8_kernel<2><<<grid, kLab05GemvThreads, smem, e->s>>>(xr, rows, K, norm_w, eps, xnr, xbr, q, accumulate); break;
      case 4: lab05_gemv8_kernel<4><<<grid, kLab05GemvThreads, smem, e->s>>>(xr, rows, K, norm_w, eps, xnr, xbr, q, accumulate); break;
      default: lab05_gemv8_kernel<8><<<grid, kLab05GemvThreads, smem, e->s>>>(xr, rows, K, norm_w, eps, xnr, xbr, q, accumulate); break;
    }
    GTL_LAUNCH();
  }
}

// One projection (kind, layer) appended to p: its fp8 rows, scales, bias (bf16 arena;
// MOE_KIND_COUNT or a kind the model lacks: none) and output.
static inline void lab05_proj_add(const Engine *e, Lab05Proj8 *p, MoeKind k, MoeKind bias, int l, int n, float *out) {
  const int m = p->count++;
  p->n[m] = n;
  p->w[m] = lab05_w8(e, k, l, 0);
  p->s[m] = lab05_wscale(e, k, l, 0);
  p->bias[m] = bias != MOE_KIND_COUNT && moe_tensor_index(&e->lay, bias, l, 0) >= 0 ? engine_w(e, bias, l, 0) : NULL;
  p->out[m] = out;
}

// x[b][d] = s[t] · q[t][d], t = tok[b]: the embedding row from the fp8 store (the same
// values lm_head reads when tied, and the CPU reference reads through ref_weights).
// Strategy: thread per element, grid (D / threads, B), as 00's. Limiter: launch latency.
__global__ void lab05_embed_kernel(const __nv_fp8_storage_t *__restrict__ q, const float *__restrict__ s,
                                   const int32_t *tok, float *x, int D) {
  const int d = blockIdx.x * blockDim.x + threadIdx.x;
  if (d >= D) return;
  const int64_t t = tok[blockIdx.y];
  x[(size_t)blockIdx.y * D + d] = s[t] * __half2float(__half(__nv_cvt_fp8_to_halfraw(q[t * D + d], __NV_E4M3)));
}

// ---- hooks and stages ---------------------------------------------------------------------------
static inline LayerOps lab05_ops(void);
static inline int lab05_fuse_configure(Engine *e, char *err, size_t n);  // fused.cuh

static inline int lab05_mx4_configure(Engine *e, char *err, size_t n);  // mxfp4.cuh

/** The --weights value: "fp8" (the default, NULL), "bf16" or "mxfp4"; -1 for anything else. */
static inline int lab05_weight_fmt(const char *w) {
  if (!w || !strcmp(w, "fp8")) return LAB05_W_FP8;
  return !strcmp(w, "bf16") ? LAB05_W_BF16 : !strcmp(w, "mxfp4") ? LAB05_W_MXFP4 : -1;
}

// --weights=bf16: layer 04's table as it is (its configure too), under this program's
// name. fp8: 04's configure, then the fp8 kernels' shapes: every K of a projection a
// multiple of 16 (one 16-byte load of weights), at most 8 rows of the largest K in shared
// memory, and what grouped8.cuh's expert kernels take. Above kLab05GemvMaxRows rows, 04's
// dense stages (bf16 weights) with the fp8 experts.
static inline int lab05_configure(Engine *e, char *err, size_t n) {
  const int fmt = lab05_weight_fmt(e->weights);
  if (fmt < 0) {
    snprintf(err, n, "--weights=%s: need bf16, fp8 or mxfp4", e->weights);
    return -1;
  }
  if (fmt == LAB05_W_BF16) {
    const LayerOps mine = e->ops;
    e->ops = lab04_ops();
    e->ops.target = mine.target;
    e->ops.weight_fmts = mine.weight_fmts;
    e->ops.adds = "--weights=bf16: layer 04's stages and bf16 weights, unchanged";
    return lab04_configure(e, err, n);
  }
  if (lab04_configure(e, err, n)) return -1;
  const MoeConfig *c = &e->cfg;
  const int Q = c->H * c->head_dim, K = c->D > Q ? c->D : Q;
  if (c->D % 16 || Q % 16) {
    snprintf(err, n, "--weights=fp8: the fp8 GEMV needs hidden size and H*head_dim multiples of 16 (model: %d, %d)",
             c->D, Q);
    return -1;
  }
  if ((size_t)kLab05GemvMaxRows * K * 4 > 227 * 1024) {
    snprintf(err, n, "--weights=fp8: %d rows of K = %d fp32 exceed an SM's shared memory", kLab05GemvMaxRows, K);
    return -1;
  }
  if (lab05_x8_fits(c, err, n)) return -1;  // the fp8 expert kernels' shapes (grouped8.cuh)
  if (e->B > kLab05GemvMaxRows) {  // 04's dense stages on bf16 weights; fp8 experts only
    const LayerOps o4 = lab04_ops();
    e->ops.embed = o4.embed, e->ops.qkv = o4.qkv, e->ops.out = o4.out, e->ops.router = o4.router;
    e->ops.logits = o4.logits;
    e->ops.dense_fmt = MOE_WF_BF16;
  }
  if (lab05_fuse_configure(e, err, n)) return -1;  // fused.cuh: the small stages fused at batch <= 8 (LAB05_FUSE)
  if (fmt == LAB05_W_MXFP4 && lab05_mx4_configure(e, err, n)) return -1;  // mxfp4.cuh, last: wraps the setup
  return 0;
}

// 04's setup; then its state grows into Lab05: the fp8 store (quantized on the GPU from
// the bf16 arena, checked on four rows), the dense plan, the experts' state (grouped8.cuh).
static inline void lab05_setup(Engine *e) {
  lab04_setup(e);
  Lab05 *p = (Lab05 *)realloc(e->layer, sizeof(Lab05));
  if (!p) {
    fprintf(stderr, "error: out of host memory (layer 05 state)\n");
    exit(GTL_EXIT_RUNTIME);
  }
  e->layer = p;
  memset((char *)p + sizeof(Lab04), 0, sizeof(Lab05) - sizeof(Lab04));
  p->fmt = LAB05_W_FP8;
  p->dense_fp8 = e->B <= kLab05GemvMaxRows;  // configure kept 04's dense stages above
  struct timespec t0, t1;
  clock_gettime(CLOCK_MONOTONIC, &t0);
  lab05_w8_build(e, &p->w8);
  clock_gettime(CLOCK_MONOTONIC, &t1);
  lab05_w8_check(e);
  fprintf(stderr, "note: %s: fp8 store: %.2f GB of E4M3 weights and %.1f MB of row scales quantized on the GPU in "
          "%.1f ms; 4 rows checked against the host quantizer (bytes, scales, dequantized values): equal\n",
          e->ops.target, e->lay.numel / 1e9, p->w8.n_scale * 4 / 1e6,
          1e3 * (t1.tv_sec - t0.tv_sec) + 1e-6 * (t1.tv_nsec - t0.tv_nsec));
  p->dense = malloc(sizeof(Lab05Dense));
  *(Lab05Dense *)p->dense = lab05_dense_plan(e, p->base.base.sms);
  lab05_x8_setup(e);
  const void *ready[] = {  // PDL-ready (layer 04's graph edit): each waits before its first dependent access
      (const void *)lab05_gemv8_kernel<1>, (const void *)lab05_gemv8_kernel<2>, (const void *)lab05_gemv8_kernel<4>,
      (const void *)lab05_gemv8_kernel<8>, (const void *)lab05_grouped8_gemv_kernel<1, true>,
      (const void *)lab05_grouped8_gemv_kernel<2, true>, (const void *)lab05_grouped8_gemv_kernel<4, true>,
      (const void *)lab05_grouped8_gemv_kernel<8, true>, (const void *)lab05_grouped8_gemv_kernel<1, false>,
      (const void *)lab05_grouped8_gemv_kernel<2, false>, (const void *)lab05_grouped8_gemv_kernel<4, false>,
      (const void *)lab05_grouped8_gemv_kernel<8, false>, (const void *)lab05_grouped8_mma_kernel<16, true>,
      (const void *)lab05_grouped8_mma_kernel<32, true>, (const void *)lab05_grouped8_mma_kernel<64, true>};
  // Not the down MMA kernels (lab05_grouped8_mma_kernel<BM, false>): with a programmatic edge into them
  // the batch-64 step took 13.33-13.35 ms against 11.66-11.67 without any edge and 11.70 with every edge
  // but theirs (H200, git 6e52d78fe361, LAB04_PDL_SKIP); batch 1 gains 3.7% (2.035 vs 2.110 ms).
  for (size_t i = 0; i < sizeof ready / sizeof ready[0]; i++) lab04_pdl_ready(e, ready[i]);
}

static inline void lab05_teardown(Engine *e) {
  Lab05 *p = (Lab05 *)e->layer;
  lab05_x8_teardown(e);
  lab05_w8_free(&p->w8);
  free(p->dense);
  lab03_teardown(e);  // frees 03's buffers, 01's arena and the state itself
}

// Token rows from the fp8 embedding (every matrix, the embedding too, is fp8 in this layer).
static inline void lab05_embed(Engine *e, int) {
  lab05_embed_kernel<<<lab00_grid(e->cfg.D, e->B), kLab00Threads, 0, e->s>>>(
      lab05_w8(e, MOE_EMBED, 0, 0), lab05_wscale(e, MOE_EMBED, 0, 0), e->a.d_tok, e->a.d_x, e->cfg.D);
  GTL_LAUNCH();
}

// RMSNorm (in the kernel), then q, k, v (+ gpt-oss biases) in one launch; a.d_xn keeps the
// normalized rows. Qwen3's q/k norm after it, 00's kernel (as 02).
static inline void lab05_qkv(Engine *e, int l) {
  const MoeConfig *c = &e->cfg;
  const int Q = c->H * c->head_dim, KV = c->H_kv * c->head_dim;
  Lab05Proj8 p;
  memset(&p, 0, sizeof p);
  lab05_proj_add(e, &p, MOE_Q, MOE_Q_BIAS, l, Q, e->a.d_q);
  lab05_proj_add(e, &p, MOE_K, MOE_K_BIAS, l, KV, e->a.d_k);
  lab05_proj_add(e, &p, MOE_V, MOE_V_BIAS, l, KV, e->a.d_v);
  lab05_project(e, e->a.d_x, c->D, engine_w(e, MOE_ATTN_NORM, l, 0), e->a.d_xn, NULL, p, 0);
  if (c->qk_norm) {
    lab00_rmsnorm(e, e->a.d_q, engine_w(e, MOE_Q_NORM, l, 0), e->a.d_q, e->B * c->H, c->head_dim);
    lab00_rmsnorm(e, e->a.d_k, engine_w(e, MOE_K_NORM, l, 0), e->a.d_k, e->B * c->H_kv, c->head_dim);
  }
}

// x += Wo · att (+ bo): the residual add in the projection's epilogue.
static inline void lab05_out(Engine *e, int l) {
  const MoeConfig *c = &e->cfg;
  Lab05Proj8 p;
  memset(&p, 0, sizeof p);
  lab05_proj_add(e, &p, MOE_O, MOE_O_BIAS, l, c->D, e->a.d_x);
  lab05_project(e, e->a.d_att, c->H * c->head_dim, NULL, NULL, NULL, p, 1);
}

// RMSNorm + router logits (+ bias); the launch also leaves the normalized rows in a.d_xn
// and 01's xb (split, [B][hi | lo]) for the dispatch and the experts.
static inline void lab05_router(Engine *e, int l) {
  const MoeConfig *c = &e->cfg;
  Lab05Proj8 p;
  memset(&p, 0, sizeof p);
  lab05_proj_add(e, &p, MOE_ROUTER, MOE_ROUTER_BIAS, l, c->E, e->a.d_router);
  lab05_project(e, e->a.d_x, c->D, engine_w(e, MOE_FFN_NORM, l, 0), e->a.d_xn, ((Lab01 *)e->layer)->xb, p, 0);
}

static inline void lab05_logits(Engine *e, int) {
  const MoeConfig *c = &e->cfg;
  Lab05Proj8 p;
  memset(&p, 0, sizeof p);
  lab05_proj_add(e, &p, MOE_LM_HEAD, MOE_KIND_COUNT, 0, c->V, e->a.d_logits);
  lab05_project(e, e->a.d_x, c->D, engine_w(e, MOE_FINAL_NORM, 0, 0), NULL, NULL, p, 0);
}

/** Layer 05's table: lab04_ops() (the graph, PDL RoPE, split-KV attention, device sort,
 *  combine, sampler) with qkv, out, router, logits on the fp8 GEMV, the experts on
 *  grouped8.cuh's fp8 kernels, configure/setup/teardown extended for the store, the CPU
 *  reference reading the fp8 weights (ref_weights: the same function, so bf16's bound,
 *  rel_l2 < 1e-2 and top-1 >= 99%), fp8 roofline bytes; --weights=bf16 swaps in 04's
 *  table at configure. */
static inline LayerOps lab05_ops(void) {
  LayerOps o = lab04_ops();  // start from the previous layer's table
  o.target = "labs/05_precision";
  o.adds = "adds: FP8 E4M3 weights with per-output-row scales, quantized on the GPU at setup (ch13); RMSNorm "
           "fused into the fp8 projections and the residual add into o_proj's epilogue (ch14); fp8 grouped "
           "experts";
  o.dtype = "fp8";
  o.tol_rel_l2 = 1e-2;  // the reference computes the fp8 model itself (ref_weights): bf16's bound
  o.tol_top1 = 0.99;
  o.dense_fmt = MOE_WF_FP8;
  o.expert_fmt = MOE_WF_FP8;
  o.weight_fmts = "bf16|fp8|mxfp4";
  o.ref_weights = lab05_ref_weights;
  o.configure = lab05_configure;
  o.setup = lab05_setup;
  o.teardown = lab05_teardown;
  o.embed = lab05_embed;
  o.qkv = lab05_qkv;
  o.out = lab05_out;
  o.router = lab05_router;
  o.logits = lab05_logits;
  o.expert_up = lab05_expert_up;
  o.expert_down = lab05_expert_down;
  return o;
}

#include "fused.cuh"  // the fused small stages (lab05_fuse_configure picks them)
#include "mxfp4.cuh"  // --weights=mxfp4: the experts' MXFP4 store and kernels (lab05_mx4_configure)
