// weights8.cuh — layer 05's FP8 E4M3 weight store: every weight matrix of the engine's
// bf16 arena quantized ON THE GPU at setup, one fp32 scale per output row, and the
// accessors, the quantize kernel and the dequant helper every fp8 kernel of the layer uses
// (layer.cuh's dense projections, grouped8.cuh's experts).
//
// THE CONTRACT (what grouped8.cuh and layer.cuh code against)
//   Format      A matrix W [N][K] (nn.Linear [out][in], MoeTensor rows × cols) is stored as
//               q [N][K] E4M3 bytes (__nv_fp8_storage_t) and s [N] fp32 with
//                   s[n] = pow2ceil(amax_n / 448),   amax_n = max_k |W[n][k]|
//                   q[n][k] = E4M3_satfinite_RNE(W[n][k] / s[n])     (exact: s a power of 2)
//               so W[n][k] ≈ s[n] · q[n][k]; the row's largest |W| lands in (224, 448]. 448
//               is the largest finite E4M3 value (OCP 8-bit Floating Point Specification
//               v1.0, 2023). A row of zeros gets s = 0, q = 0. The scale is amax/448 rounded
//               UP to a power of two (the MX formats' choice, OCP Microscaling Formats v1.0)
//               so that s·q, 4 significant bits times a power of two, is exactly a bf16:
//               the CPU reference then computes the fp8 model itself, exactly (layer.cuh's
//               lab05_ref_weights), and the engine's check needs no fp8 slack. Decoding
//               E4M3 is exact; the only rounding is the quantizer's (relative 2^-4 at most
//               for |q| >= 2^-6, absolute s·2^-10 below).
//   Where       q: lay.numel bytes, tensor i at byte lay.t[i].offset — the SAME element
//               offsets as the engine's bf16 arena (engine_w), so byte j of tensor i is its
//               element j. Vectors (norms, biases, sinks: cols == 0) are not quantized:
//               their bytes are zero and kernels read them from the bf16 arena (engine_w).
//               s: one array; tensor i's row r at row0[i] + r (row0 computed at setup, in
//               layout order over the matrices).
//   Accessors   lab05_w8(e, kind, layer, expert)      host: device pointer to q of a tensor
//               lab05_wscale(e, kind, layer, expert)  host: device pointer to its s
//               (NULL for a kind the model lacks or a vector). Experts exactly as layer 03
//               addresses its bf16 experts (grouped.cuh: base + e·stride): expert x's gate,
//               up, down of layer l at lab05_w8(e, kind, l, 0) + x·w8.expert_stride bytes,
//               their scales at lab05_wscale(e, kind, l, 0) + x·w8.scale_stride (both
//               pitches checked uniform over every layer and expert at setup, as 03 checks
//               its own). Also, for kernels that take pointer tables (01's style):
//               w8.d_wtab / w8.d_stab, device [L][E][3] (gate, up, down).
//   State       e->layer is a Lab05 (below): layer 04's state first (every earlier stage
//               still finds its fields), then the format, the store, and one pointer for
//               grouped8.cuh's own state (x8: its setup allocates it, its teardown frees it).
//   Experts     grouped8.cuh (fp8x) provides the two stages layer.cuh plugs into
//               lab05_ops(): lab05_expert_up(Engine *, int l, int g) and lab05_expert_down
//               (GroupFn), and lab05_x8_setup(Engine *) / lab05_x8_teardown(Engine *),
//               which lab05_setup / lab05_teardown call when fmt == LAB05_W_FP8 (after the
//               store is built / before it is freed). Inputs as layer 03's: 03's dispatch
//               tables (Lab03: offsets, tile_start, sorted_token, pair_pos, xp.bm), the
//               router's normalized rows both as fp32 (a.d_xn [B][D]) and as 01's split
//               rows (Lab01.xb, [B][hi | lo] bf16, 2D each); outputs into Lab03.ys [P][D]
//               fp32 for 03's combine (lab03_combine, kept).
//   Check       lab05_w8_check (at setup, exit 1 on a difference): four rows' bytes and
//               scales equal the host quantizer (lab05_quantize_row_host) bit for bit, and
//               their dequantization through lab05_fp8x16_to_f32 equals s · decode(q).
//   Dequant     lab05_fp8x16_to_f32(uint4, float[16]): 16 bytes of q → 16 floats, exact
//               (cvt e4m3x2 → f16x2 in hardware on sm_89+). The caller multiplies its fp32
//               dot product by s[n] once per output, never per element.
// MXFP4 (--weights=mxfp4, mxfp4.cuh): a second store beside this one for the experts only
// (E2M1 nibbles, one UE8M0 scale per 32 weights); the dense tensors stay in this fp8 store.
// Nothing in this header assumes one byte per weight outside the fp8 store itself.
#pragma once
#include <cuda_fp16.h>
#include <cuda_fp8.h>

#include "../04_graphs/layer.cuh"

#define LAB05_FP8_MAX 448.0f           // largest finite E4M3 value
constexpr int kLab05QuantThreads = 256;  // the quantize kernel: a warp per row, 8 per block

typedef enum { LAB05_W_BF16 = 0, LAB05_W_FP8 = 1, LAB05_W_MXFP4 = 2 } Lab05WeightFmt;  // --weights=bf16|fp8|mxfp4

// The fp8 store (see the contract above). Device memory unless said.
typedef struct {
  __nv_fp8_storage_t *q;   // [lay.numel] bytes: tensor i at byte lay.t[i].offset
  float *scale;            // [n_scale]: tensor i's row r at row0[i] + r
  int64_t *row0;           // host [lay.n]: first scale of tensor i; -1 for a vector
  int64_t n_scale;         // scales in all (the matrices' rows)
  int64_t expert_stride;   // bytes (= bf16 elements) from expert x's gate/up/down to x+1's
  int64_t scale_stride;    // scales from expert x's gate/up/down to x+1's
  const __nv_fp8_storage_t **d_wtab;  // [L][E][3]: gate, up, down of (layer, expert)
  const float **d_stab;               // [L][E][3]: their scales
  void *tabs;              // the allocation behind d_wtab and d_stab
  __nv_bfloat16 *ref;      // [lay.max_numel]: one tensor's s·q for the CPU reference
} Lab05W8;

// Layer 05's state. Lab04 first: every stage of 00–04 finds its fields through e->layer.
typedef struct {
  Lab04 base;
  Lab05WeightFmt fmt;      // LAB05_W_BF16: layer 04's stages, untouched; no store
  int dense_fp8;           // 1: the dense matrices are read as fp8 too; 0: the experts only
  Lab05W8 w8;
  void *x8;                // grouped8.cuh's state (allocated in its setup, freed in its teardown)
  void *mx4;               // mxfp4.cuh's state (--weights=mxfp4: the experts' MXFP4 store and plan)
  void *dense;             // layer.cuh's state of the dense projections
} Lab05;

/** The fp8 bytes of tensor (kind, layer, expert), device pointer; NULL when the model has
 *  no such tensor or it is a vector. Host only; e->layer must be a Lab05 with fmt = fp8. */
static inline const __nv_fp8_storage_t *lab05_w8(const Engine *e, MoeKind k, int layer, int expert) {
  const Lab05W8 *w = &((const Lab05 *)e->layer)->w8;
  const int i = moe_tensor_index(&e->lay, k, layer, expert);
  return i < 0 || w->row0[i] < 0 ? NULL : w->q + e->lay.t[i].offset;
}

/** The per-row scales of tensor (kind, layer, expert), [rows] fp32, device pointer; NULL
 *  as lab05_w8. Host only. */
static inline const float *lab05_wscale(const Engine *e, MoeKind k, int layer, int expert) {
  const Lab05W8 *w = &((const Lab05 *)e->layer)->w8;
  const int i = moe_tensor_index(&e->lay, k, layer, expert);
  return i < 0 || w->row0[i] < 0 ? NULL : w->scale + w->row0[i];
}

// ---- device helpers -----------------------------------------------------------------------
/** 16 E4M3 bytes (a 16-byte load, byte j = element j) → f[0..16), exact. */
__device__ __forceinline__ void lab05_fp8x16_to_f32(uint4 v, float f[16]) {
  const uint32_t w[4] = {v.x, v.y, v.z, v.w};
#pragma unroll
  for (int i = 0; i < 4; i++) {
    const __half2_raw lo = __nv_cvt_fp8x2_to_halfraw2((__nv_fp8x2_storage_t)(w[i] & 0xFFFFu), __NV_E4M3);
    const __half2_raw hi = __nv_cvt_fp8x2_to_halfraw2((__nv_fp8x2_storage_t)(w[i] >> 16), __NV_E4M3);
    const float2 a = __half22float2(*(const __half2 *)&lo), b = __half22float2(*(const __half2 *)&hi);
    f[4 * i] = a.x, f[4 * i + 1] = a.y, f[4 * i + 2] = b.x, f[4 * i + 3] = b.y;
  }
}

/** The row scale for amax = max |w|: the smallest power of two >= amax / 448 (0 for 0). */
__host__ __device__ __forceinline__ float lab05_row_scale(float amax) {
  const float t = amax / LAB05_FP8_MAX;
  if (!(t > 0.f)) return 0.f;
  int e;
  const float m = frexpf(t, &e);  // t = m · 2^e, m in [0.5, 1)
  return ldexpf(1.f, m == 0.5f ? e - 1 : e);
}

/** The quantizer of one element: E4M3_satfinite_RNE(w / s), s > 0 (s = 0: 0). */
__host__ __device__ __forceinline__ __nv_fp8_storage_t lab05_quantize1(float w, float s) {
#ifdef __CUDA_ARCH__
  const float y = s > 0.f ? __fdiv_rn(w, s) : 0.f;
#else
  const float y = s > 0.f ? w / s : 0.f;
#endif
  return __nv_cvt_float_to_fp8(y, __NV_SATFINITE, __NV_E4M3);
}

// ---- kernels ------------------------------------------------------------------------------
// q [rows][cols] E4M3 and s [rows] fp32 from w [rows][cols] bf16, per the contract:
// s[n] = lab05_row_scale(amax_n), q = E4M3_satfinite_RNE(w / s[n]). Strategy: a warp per row
// (grid-stride), 16-byte loads when cols % 8 == 0, amax by shuffle, the row read a second
// time (from L1/L2) to quantize. Runs once per tensor at setup. Limiter: DRAM bandwidth.
__global__ void __launch_bounds__(kLab05QuantThreads)
    lab05_quantize_rows_kernel(const __nv_bfloat16 *__restrict__ w, int64_t rows, int64_t cols,
                               __nv_fp8_storage_t *__restrict__ q, float *__restrict__ s) {
  const int lane = threadIdx.x & 31;
  const int64_t warps = ((int64_t)gridDim.x * blockDim.x) >> 5;
  const bool vec = (cols & 7) == 0;
  for (int64_t r = ((int64_t)blockIdx.x * blockDim.x + threadIdx.x) >> 5; r < rows; r += warps) {
    const __nv_bfloat16 *wr = w + r * cols;
    __nv_fp8_storage_t *qr = q + r * cols;
    float m = 0.f;
    if (vec) {
      for (int64_t c = lane; c < cols / 8; c += 32) {
        const uint4 v = ((const uint4 *)wr)[c];
        const __nv_bfloat16 *b = (const __nv_bfloat16 *)&v;
#pragma unroll
        for (int j = 0; j < 8; j++) m = fmaxf(m, fabsf(__bfloat162float(b[j])));
      }
    } else {
      for (int64_t c = lane; c < cols; c += 32) m = fmaxf(m, fabsf(__bfloat162float(wr[c])));
    }
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) m = fmaxf(m, __shfl_xor_sync(0xFFFFFFFFu, m, o));
    const float sc = lab05_row_scale(m);
    if (lane == 0) s[r] = sc;
    if (vec) {
      for (int64_t c = lane; c < cols / 8; c += 32) {
        const uint4 v = ((const uint4 *)wr)[c];
        const __nv_bfloat16 *b = (const __nv_bfloat16 *)&v;
        __align__(8) __nv_fp8_storage_t o[8];
#pragma unroll
        for (int j = 0; j < 8; j++) o[j] = lab05_quantize1(__bfloat162float(b[j]), sc);
        ((uint2 *)qr)[c] = *(const uint2 *)o;
      }
    } else {
      for (int64_t c = lane; c < cols; c += 32) qr[c] = lab05_quantize1(__bfloat162float(wr[c]), sc);
    }
  }
}

// out[k] = s · q[k] for k < cols (one row) through lab05_fp8x16_to_f32, the kernels'
// decoder, when cols % 16 == 0 (else the scalar cvt): the dequantized row
// the setup check compares with the host. Strategy: thread per 16 elements. Limiter:
// latency (a check of a few rows).
__global__ void lab05_dequant_row_kernel(const __nv_fp8_storage_t *q, const float *s, int64_t cols, float *out) {
  const int64_t c = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
  const float sc = *s;
  if (cols % 16) {  // rows not 16-byte aligned: every element through the scalar cvt
    for (int64_t k = c; k < cols; k += (int64_t)gridDim.x * blockDim.x)
      out[k] = sc * __half2float(__half(__nv_cvt_fp8_to_halfraw(q[k], __NV_E4M3)));
    return;
  }
  if (c >= cols / 16) return;
  float f[16];
  lab05_fp8x16_to_f32(((const uint4 *)q)[c], f);
#pragma unroll
  for (int j = 0; j < 16; j++) out[16 * c + j] = sc * f[j];
}

// out[r][k] = bf16(s[r] · q[r][k]) for rows × cols, exact (s a power of two, q 4
// significant bits): the fp8 weights as the CPU reference reads them. Strategy:
// grid-stride, thread per element. Limiter: DRAM bandwidth (validation only).
__global__ void lab05_dequant_bf16_kernel(const __nv_fp8_storage_t *q, const float *s, int64_t rows, int64_t cols,
                                          __nv_bfloat16 *out) {
  for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < rows * cols; i += (int64_t)gridDim.x * blockDim.x)
    out[i] = __float2bfloat16_rn(s[i / cols] * __half2float(__half(__nv_cvt_fp8_to_halfraw(q[i], __NV_E4M3))));
}

// ---- host: building the store ----------------------------------------------------------------
/** Row offsets of the scales: row0[i] = the rows of every matrix before tensor i in layout
 *  order, -1 for a vector; returns the total. Host-tested (plan_test.cpp). */
static inline int64_t lab05_scale_rows(const MoeLayout *lay, int64_t *row0) {
  int64_t n = 0;
  for (int i = 0; i < lay->n; i++) {
    row0[i] = lay->t[i].cols > 0 ? n : -1;
    if (lay->t[i].cols > 0) n += lay->t[i].rows;
  }
  return n;
}

/** Quantize every matrix of e's bf16 arena into w (allocations: lay.numel bytes of q, the
 *  scales, the pointer tables; exit 3 when the device is out of memory), check the
 *  experts' pitches (uniform, as layer 03 needs; exit 3 if not) and fill the tables.
 *  Enqueued on e->s and synchronized. */
static inline void lab05_w8_build(Engine *e, Lab05W8 *w) {
  const MoeLayout *lay = &e->lay;
  const MoeConfig *c = &e->cfg;
  memset(w, 0, sizeof *w);
  w->row0 = (int64_t *)malloc(sizeof(int64_t) * lay->n);
  w->n_scale = lab05_scale_rows(lay, w->row0);
  w->q = (__nv_fp8_storage_t *)gtl_malloc(lay->numel, "fp8 weights (one byte per bf16 element)");
  GTL_CUDA(cudaMemsetAsync(w->q, 0, lay->numel, e->s));
  w->scale = (float *)gtl_malloc(sizeof(float) * (w->n_scale > 0 ? w->n_scale : 1), "fp8 weight scales");
  int dev, sms;
  GTL_CUDA(cudaGetDevice(&dev));
  GTL_CUDA(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, dev));
  for (int i = 0; i < lay->n; i++) {
    const MoeTensor *t = &lay->t[i];
    if (t->cols <= 0) continue;
    const int64_t blocks = (t->rows + kLab05QuantThreads / 32 - 1) / (kLab05QuantThreads / 32);
    const unsigned grid = (unsigned)(blocks < 8 * sms ? blocks : 8 * sms);
    lab05_quantize_rows_kernel<<<grid, kLab05QuantThreads, 0, e->s>>>(e->d_w + t->offset, t->rows, t->cols,
                                                                       w->q + t->offset, w->scale + w->row0[i]);
    GTL_LAUNCH();
  }
  // the experts' pitches, in weight bytes and in scales (03's rule: one pitch everywhere)
  const MoeKind kinds[3] = {MOE_GATE, MOE_UP, MOE_DOWN};
  if (c->E > 1) {
    const int i0 = moe_tensor_index(lay, MOE_GATE, 0, 0), i1 = moe_tensor_index(lay, MOE_GATE, 0, 1);
    w->expert_stride = (int64_t)(lay->t[i1].offset - lay->t[i0].offset);
    w->scale_stride = w->row0[i1] - w->row0[i0];
  }
  const size_t n_tab = (size_t)c->L * c->E * 3;
  const void **h = (const void **)malloc(sizeof(void *) * 2 * n_tab);
  for (int l = 0; l < c->L; l++)
    for (int x = 0; x < c->E; x++)
      for (int k = 0; k < 3; k++) {
        const int i = moe_tensor_index(lay, kinds[k], l, x), i0 = moe_tensor_index(lay, kinds[k], l, 0);
        if ((int64_t)(lay->t[i].offset - lay->t[i0].offset) != x * w->expert_stride ||
            w->row0[i] - w->row0[i0] != x * w->scale_stride) {
          fprintf(stderr, "error: layer 05 needs the experts at one pitch (layer %d, expert %d is not)\n", l, x);
          exit(GTL_EXIT_RUNTIME);
        }
        const size_t at = ((size_t)l * c->E + x) * 3 + k;
        h[at] = w->q + lay->t[i].offset;
        h[n_tab + at] = w->scale + w->row0[i];
      }
  w->tabs = gtl_malloc(sizeof(void *) * 2 * n_tab, "fp8 expert pointer tables");
  w->ref = (__nv_bfloat16 *)gtl_malloc(lay->max_numel * 2, "one tensor's fp8 weights as bf16 (CPU reference)");
  w->d_wtab = (const __nv_fp8_storage_t **)w->tabs;
  w->d_stab = (const float **)((const void **)w->tabs + n_tab);
  GTL_CUDA(cudaMemcpyAsync(w->tabs, h, sizeof(void *) * 2 * n_tab, cudaMemcpyHostToDevice, e->s));
  GTL_CUDA(cudaStreamSynchronize(e->s));
  free(h);
}

static inline void lab05_w8_free(Lab05W8 *w) {
  void *d[] = {w->q, w->scale, w->tabs, w->ref};
  for (size_t i = 0; i < sizeof d / sizeof d[0]; i++)
    if (d[i]) GTL_CUDA(cudaFree(d[i]));
  free(w->row0);
  memset(w, 0, sizeof *w);
}

// ---- the check of the store ------------------------------------------------------------------
/** Host quantization of one row, the contract's arithmetic (lab05_quantize1's host path):
 *  s = lab05_row_scale(amax), q[k] = E4M3_satfinite_RNE(w[k] / s). w: bf16 bits. Returns s. */
static inline float lab05_quantize_row_host(const uint16_t *w, int64_t K, __nv_fp8_storage_t *q) {
  float m = 0.f;
  for (int64_t k = 0; k < K; k++) {
    const uint32_t b = (uint32_t)w[k] << 16;
    float f;
    memcpy(&f, &b, 4);
    m = fabsf(f) > m ? fabsf(f) : m;
  }
  const float s = lab05_row_scale(m);
  for (int64_t k = 0; k < K; k++) {
    const uint32_t b = (uint32_t)w[k] << 16;
    float f;
    memcpy(&f, &b, 4);
    q[k] = lab05_quantize1(f, s);
  }
  return s;
}

/** One row of tensor i against the host: the device's q bytes and scale equal the host
 *  quantization of the same bf16 row, the device dequantization (lab05_fp8x16_to_f32, the
 *  kernels' decoder) equals s · decode(q) exactly, and |s · q − w| stays within E4M3's
 *  rounding (2^-4 relative, s · 2^-10 absolute). Returns the number of bad elements. */
static inline size_t lab05_w8_check_row(Engine *e, int i, int64_t r) {
  const MoeTensor *t = &e->lay.t[i];
  const Lab05W8 *w = &((Lab05 *)e->layer)->w8;
  const int64_t K = t->cols;
  uint16_t *hw = (uint16_t *)malloc(K * 2);
  __nv_fp8_storage_t *hq = (__nv_fp8_storage_t *)malloc(K), *dq = (__nv_fp8_storage_t *)malloc(K);
  float *deq = (float *)malloc(K * 4), ds;
  float *d_deq = (float *)gtl_malloc(K * 4, "fp8 check row");
  GTL_CUDA(cudaMemcpy(hw, e->d_w + t->offset + r * K, K * 2, cudaMemcpyDeviceToHost));
  GTL_CUDA(cudaMemcpy(dq, w->q + t->offset + r * K, K, cudaMemcpyDeviceToHost));
  GTL_CUDA(cudaMemcpy(&ds, w->scale + w->row0[i] + r, 4, cudaMemcpyDeviceToHost));
  lab05_dequant_row_kernel<<<(unsigned)((K + 16 * 128 - 1) / (16 * 128)), 128, 0, e->s>>>(w->q + t->offset + r * K,
                                                                              w->scale + w->row0[i] + r, K, d_deq);
  GTL_LAUNCH();
  GTL_CUDA(cudaMemcpyAsync(deq, d_deq, K * 4, cudaMemcpyDeviceToHost, e->s));
  GTL_CUDA(cudaStreamSynchronize(e->s));
  const float hs = lab05_quantize_row_host(hw, K, hq);
  size_t bad = memcmp(&hs, &ds, 4) != 0;
  for (int64_t k = 0; k < K; k++) {
    const uint32_t b = (uint32_t)hw[k] << 16;
    float f;
    memcpy(&f, &b, 4);
    const __half_raw hr = __nv_cvt_fp8_to_halfraw(dq[k], __NV_E4M3);
    const float ref = ds * __half2float(__half(hr));
    bad += hq[k] != dq[k] || !(deq[k] == ref) || !(fabsf(ref - f) <= (fabsf(f) * 0.0625f + ds * 0x1p-10f) * 1.001f) ||
           __bfloat162float(__float2bfloat16_rn(ref)) != ref;  // exactly a bf16: what the reference reads
  }
  free(hw), free(hq), free(dq), free(deq);
  GTL_CUDA(cudaFree(d_deq));
  if (bad) fprintf(stderr, "error: fp8 store: %zu bad elements in row %lld of %s\n", bad, (long long)r, t->name);
  return bad;
}

// Rows checked at setup: the first row of q, the last of lm_head, the router's first, the
// last expert's last down row of the last layer (the end of the arena's experts).
static inline void lab05_w8_check(Engine *e) {
  const MoeConfig *c = &e->cfg;
  const MoeLayout *lay = &e->lay;
  const int idx[4] = {moe_tensor_index(lay, MOE_Q, 0, 0), moe_tensor_index(lay, MOE_LM_HEAD, 0, 0),
                      moe_tensor_index(lay, MOE_ROUTER, c->L - 1, 0), moe_tensor_index(lay, MOE_DOWN, c->L - 1, c->E - 1)};
  const int last[4] = {0, 1, 0, 1};
  size_t bad = 0;
  for (int j = 0; j < 4; j++) bad += lab05_w8_check_row(e, idx[j], last[j] ? lay->t[idx[j]].rows - 1 : 0);
  if (bad) exit(GTL_EXIT_FAIL);
}

/** LayerOps.ref_weights of layer 05 (fp8): rows [row0, row0 + n_rows) of a matrix as the
 *  exact bf16 values s·q its kernels compute with (lab05_dequant_bf16_kernel on the
 *  device, then copied into buf); vectors, and the dense matrices when the layer reads
 *  them as bf16 (dense_fp8 = 0), from the bf16 arena, as the engine's fetch. Synchronizes
 *  e->s. */
static inline const uint16_t *lab05_ref_weights(const Engine *e, int tensor, int64_t row0, int64_t n_rows,
                                                uint16_t *buf) {
  const Lab05 *p = (const Lab05 *)e->layer;
  const Lab05W8 *w = &p->w8;
  const MoeTensor *t = &e->lay.t[tensor];
  const int expert = t->kind == MOE_GATE || t->kind == MOE_UP || t->kind == MOE_DOWN;
  if (w->row0[tensor] < 0 || (!expert && !p->dense_fp8)) {  // a vector, or a dense matrix read as bf16
    const int64_t off = t->cols ? row0 * t->cols : 0, n = t->cols ? n_rows * t->cols : t->rows;
    GTL_CUDA(cudaMemcpyAsync(buf, e->d_w + t->offset + off, (size_t)n * 2, cudaMemcpyDeviceToHost, e->s));
  } else {
    const int64_t n = n_rows * t->cols;
    const int64_t blocks = (n + 255) / 256;
    lab05_dequant_bf16_kernel<<<(unsigned)(blocks < 4096 ? blocks : 4096), 256, 0, e->s>>>(
        w->q + t->offset + row0 * t->cols, w->scale + w->row0[tensor] + row0, n_rows, t->cols, w->ref);
    GTL_LAUNCH();
    GTL_CUDA(cudaMemcpyAsync(buf, w->ref, (size_t)n * 2, cudaMemcpyDeviceToHost, e->s));
  }
  GTL_CUDA(cudaStreamSynchronize(e->s));
  return buf;
}
