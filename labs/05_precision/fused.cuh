// fused.cuh — layer 05's fused small stages (ch14's idea applied to the stages of a decode
// step that read no weights): at batch <= kLab05GemvMaxRows, three launches per layer fewer.
//   attn.qkv + attn.rope   lab05_qkv_rope_kernel: the fp8 q/k/v GEMV (lab05_gemv8_kernel's
//                          prologue and loop) whose warps own the two rows j and j + hd/2 of
//                          a head, so the epilogue rotates q and k with the position read on
//                          the device (04's table, 00's arithmetic) and writes q, and k and v
//                          straight into the KV cache row (the sliding window's ring slot,
//                          lab00_kv_slot). The rope stage becomes empty (NULL in the table).
//   moe.router + moe.topk  lab05_router_topk_kernel: one block computes all E router logits
//                          of every row (as lab05_router's launch already did for E <= 32)
//                          into shared memory, then one warp per row selects the top-k with
//                          ch06's rule (router_topk_any_kernel: softmax over all E, top-k by
//                          logit, ties to the lower index, renormalized when norm_topk_prob),
//                          and then (level 2) ch15's counting sort of the pairs by expert:
//                          moe.dispatch becomes empty too.
// Both compute exactly what the unfused stages compute, in the same order of operations, so
// the CPU reference bound and the graph's replay-vs-eager check apply unchanged.
// Kept unfused: Qwen3's q/k RMSNorm (it needs a whole head before the rotation), models
// whose RoPE is not 04's, E > kLab05FuseMaxExperts, batches above kLab05GemvMaxRows (04's
// dense stages). LAB05_FUSE in the environment picks them, to measure them against each
// other with one binary: 0 05's separate stages (the default, kLab05FuseDefault), 1 q/k/v +
// RoPE and router + top-k, 2 also the dispatch sort, or letters (lab05_fuse_parts).
// Included at the end of layer.cuh (it uses that file's GEMV layout and plan).
#pragma once
#include <stdlib.h>

constexpr int kLab05FuseMaxExperts = 256;  // router logits per row kept in shared memory (8 per lane)

/** Global row of the concatenated q|k|v rows that pair t's first row is: pair t is
 *  (head t / (hd/2), j = t mod hd/2), rows head·hd + j and that + hd/2. Every row of
 *  (H + 2·H_kv)·hd is covered once by t < (H + 2·H_kv)·hd/2. Host-tested. */
__host__ __device__ __forceinline__ int lab05_fuse_pair_row(int t, int hd) {
  const int half = hd >> 1;
  return (t / half) * hd + t % half;
}

// ---- device pieces ------------------------------------------------------------------------
// acc[i][r] = Σ_k q_i[k] · xs[r][k] for the two fp8 rows w0, w1 (w1 NULL: 0) and r < rows,
// the full sum in every lane: lab05_gemv8_kernel's loop and shuffle reduction, unchanged.
// mid() runs once per thread, right after its first weight loads are issued (so work that
// does not need the sum, such as RoPE's cos/sin, overlaps their latency), or at the end.
template <int R, typename Mid>
__device__ __forceinline__ void lab05_fuse_dot2(const uint4 *w0, const uint4 *w1, int K16, int rows,
                                                const float4 *xs4, float (&acc)[2][R], Mid mid) {
  constexpr int ILP = kLab05GemvIlp;
  const int lane = threadIdx.x & 31;
  const uint4 *w[2] = {w0, w1};
  bool done = false;
#pragma unroll
  for (int i = 0; i < 2; i++)
#pragma unroll
    for (int r = 0; r < R; r++) acc[i][r] = 0.f;
  for (int c0 = lane; c0 < K16; c0 += 32 * ILP) {
    uint4 wv[2][ILP];
#pragma unroll
    for (int i = 0; i < 2; i++)
#pragma unroll
      for (int j = 0; j < ILP; j++)
        wv[i][j] = w[i] && c0 + 32 * j < K16 ? gemv_ld_stream(w[i] + c0 + 32 * j) : make_uint4(0, 0, 0, 0);
    if (!done) mid(), done = true;
#pragma unroll
    for (int j = 0; j < ILP; j++) {
      const int c = c0 + 32 * j;
      if (c >= K16) break;
      float wf[2][16];
#pragma unroll
      for (int i = 0; i < 2; i++) lab05_fp8x16_to_f32(wv[i][j], wf[i]);
#pragma unroll
      for (int r = 0; r < R; r++) {
        if (r >= rows) break;
#pragma unroll
        for (int pl = 0; pl < 4; pl++) {
          const float4 xv = xs4[(r * 4 + pl) * K16 + c];
#pragma unroll
          for (int i = 0; i < 2; i++) {
            acc[i][r] = fmaf(wf[i][4 * pl], xv.x, acc[i][r]);
            acc[i][r] = fmaf(wf[i][4 * pl + 1], xv.y, acc[i][r]);
            acc[i][r] = fmaf(wf[i][4 * pl + 2], xv.z, acc[i][r]);
            acc[i][r] = fmaf(wf[i][4 * pl + 3], xv.w, acc[i][r]);
          }
        }
      }
    }
  }
  if (!done) mid();
#pragma unroll
  for (int i = 0; i < 2; i++)
#pragma unroll
    for (int r = 0; r < R; r++)
#pragma unroll
      for (int o = 16; o > 0; o >>= 1) acc[i][r] += __shfl_xor_sync(0xFFFFFFFFu, acc[i][r], o);
}

// acc[0][r], acc[1][r] of r = lane (registers, no local memory); 0 past R.
template <int R>
__device__ __forceinline__ void lab05_fuse_lane_pair(const float (&acc)[2][R], int lane, float *a0, float *a1) {
  *a0 = 0.f, *a1 = 0.f;
#pragma unroll
  for (int r = 0; r < R; r++)
    if (r == lane) *a0 = acc[0][r], *a1 = acc[1][r];
}

// ch06's router_topk_any_kernel on one token's E logits (row, shared memory), by one warp:
// the same operations in the same order (softmax over all E, top_k rounds of a shuffle
// argmax by logit, ties to the lower index, renormalized when norm_topk_prob). idx, w:
// [top_k] global; s_idx: [top_k] the experts again, for the sort.
__device__ __forceinline__ void lab05_fuse_topk_row(const float *row, int E, int top_k, int norm_topk_prob,
                                                    int32_t *idx_out, float *w_out, int32_t *s_idx) {
  constexpr int VMAX = kLab05FuseMaxExperts / 32;
  const int lane = threadIdx.x & 31;
  float xv[VMAX];
  float mx = -INFINITY;
#pragma unroll
  for (int i = 0; i < VMAX; i++) {
    const int ex = lane + 32 * i;
    xv[i] = ex < E ? row[ex] : -INFINITY;
    mx = fmaxf(mx, xv[i]);
  }
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) mx = fmaxf(mx, __shfl_xor_sync(0xFFFFFFFFu, mx, o));
  float sum = 0.f;
#pragma unroll
  for (int i = 0; i < VMAX; i++)
    if (lane + 32 * i < E) sum += expf(xv[i] - mx);
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) sum += __shfl_xor_sync(0xFFFFFFFFu, sum, o);
  unsigned taken = 0;
  int my_i = 0;
  float my_p = 0.f;
  for (int j = 0; j < top_k; j++) {
    float bv = -INFINITY;
    int bi = INT_MAX;
#pragma unroll
    for (int i = 0; i < VMAX; i++) {
      const int ex = lane + 32 * i;
      if (ex < E && !((taken >> i) & 1u) && router_before(xv[i], ex, bv, bi)) bv = xv[i], bi = ex;
    }
    router_warp_best(bv, bi);
    if ((bi & 31) == lane) taken |= 1u << (bi >> 5);
    if (lane == j) my_i = bi, my_p = expf(bv - mx) / sum;
  }
  float top_sum = lane < top_k ? my_p : 0.f;
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) top_sum += __shfl_xor_sync(0xFFFFFFFFu, top_sum, o);
  if (lane < top_k) {
    idx_out[lane] = my_i;
    w_out[lane] = norm_topk_prob ? my_p / top_sum : my_p;
    s_idx[lane] = my_i;
  }
}

// ch15's counting sort of the P = rows·top_k (token, expert) pairs s_idx (shared) by expert,
// by the block: offsets [E+1], tile_start [E+1] (prefix sums of counts and of ceil(count /
// bm)), sorted_token [P], pair_pos [P], as moe_dispatch_sort_kernel writes them. Inside one
// expert the pairs keep their order (ch15's atomics leave it arbitrary; no result depends
// on it). E <= kLab05FuseMaxExperts (8 per lane of warp 0), P <= blockDim.x. s_cnt: [E].
__device__ __forceinline__ void lab05_fuse_sort(const int32_t *s_idx, int P, int top_k, int E, int bm, int32_t *s_cnt,
                                                int32_t *offsets, int32_t *tile_start, int32_t *sorted_token,
                                                int32_t *pair_pos) {
  constexpr int PER = kLab05FuseMaxExperts / 32;
  const int tid = threadIdx.x, lane = tid & 31;
  if (tid < E) {
    int c = 0;
    for (int q = 0; q < P; q++) c += s_idx[q] == tid;
    s_cnt[tid] = c;
  }
  __syncthreads();
  if (tid < 32) {  // exclusive prefix sums over the experts: lane holds experts PER·lane … PER·lane + PER − 1
    int c[PER], cs = 0, ms = 0;
#pragma unroll
    for (int i = 0; i < PER; i++) {
      const int e = lane * PER + i;
      c[i] = e < E ? s_cnt[e] : 0;
      cs += c[i], ms += (c[i] + bm - 1) / bm;
    }
    int ci = cs, mi = ms;
#pragma unroll
    for (int o = 1; o < 32; o <<= 1) {
      const int a = __shfl_up_sync(0xFFFFFFFFu, ci, o), b = __shfl_up_sync(0xFFFFFFFFu, mi, o);
      if (lane >= o) ci += a, mi += b;
    }
    int co = ci - cs, mo = mi - ms;
    __syncwarp();
#pragma unroll
    for (int i = 0; i < PER; i++) {
      const int e = lane * PER + i;
      if (e < E) {
        offsets[e] = co, tile_start[e] = mo;
        s_cnt[e] = co;  // the expert's first sorted row
      }
      co += c[i], mo += (c[i] + bm - 1) / bm;
    }
    if (lane == 31) offsets[E] = co, tile_start[E] = mo;
  }
  __syncthreads();
  if (tid < P) {
    const int e = s_idx[tid];
    int r = 0;
    for (int q = 0; q < tid; q++) r += s_idx[q] == e;
    const int slot = s_cnt[e] + r;
    sorted_token[slot] = tid / top_k;
    pair_pos[tid] = slot;
  }
}

// ---- kernels ------------------------------------------------------------------------------
// q, k, v of rows r < rows (<= R) as lab05_gemv8_kernel computes them (p: q, k, v in this
// order, xh = RMSNorm(x) by norm_w, written to xn), then 04's RoPE and K/V append in the
// epilogue: q[r] rotated (p.out[0], [rows][H·hd]); k[r] rotated and v[r] into row
// lab00_kv_slot(pos[r], ring) of the layer's caches kc, vc ([rows][H_kv][kv_len][hd] fp32).
// p.out[1], p.out[2] are not written. hd even, every matrix's rows a multiple of hd.
// Strategy: lab05_gemv8_kernel's (shared-memory rows, persistent warps, 16-byte streaming
// fp8 loads), each warp taking the rows j, j + hd/2 of one head (lab05_fuse_pair_row), lane
// r finishing row r: scale, bias, cos/sin of pos[r]·inv_freq[j] in double (00's), the
// rotated pair stored. PDL: waits before its first read of x. Limiter: DRAM read bandwidth.
template <int R>
__global__ void __launch_bounds__(kLab05GemvThreads, R == 1 ? 2 : 1)  // R = 1: two blocks per SM, as the GEMV
    lab05_qkv_rope_kernel(const float *__restrict__ x, int rows, int K, const __nv_bfloat16 *__restrict__ norm_w,
                          float eps, float *__restrict__ xn, Lab05Proj8 p, const int32_t *__restrict__ pos,
                          float *__restrict__ kc, float *__restrict__ vc, int H_kv, int hd, int kv_len, int ring,
                          Lab00Rope rope) {
  extern __shared__ __align__(16) float lab05_fuse_xs[];
  __shared__ float red[kLab05GemvThreads / 32];
  __shared__ float inv_s[1];
  const int lane = threadIdx.x & 31, K16 = K >> 4, half = hd >> 1;
  const int pairs = (p.n[0] + p.n[1] + p.n[2]) >> 1;
  const int warps = (int)((gridDim.x * blockDim.x) >> 5);
  {  // PDL (layer 04's programmatic edges): the warp's first pair of weight rows into L2, then the wait
    const int t = (int)((blockIdx.x * blockDim.x + threadIdx.x) >> 5);
    int n0;
    const int m = t < pairs ? lab05_proj_row(p, lab05_fuse_pair_row(t, hd), &n0) : -1;
    if (m >= 0)
      for (int i = 0; i < 2; i++)
        for (int b = lane * 128; b < K; b += 32 * 128)
          lab03_prefetch_l2(lab05_pick(p.w, m) + (size_t)(n0 + i * half) * K + b);
  }
  pdl_wait_prior();  // x (the previous stage's residual) and pos are written by earlier kernels
  pdl_allow_next();
  lab05_stage_rows<R>(x, rows, K, norm_w, eps, xn, NULL, lab05_fuse_xs, red, inv_s);
  const float4 *xs4 = (const float4 *)lab05_fuse_xs;
  for (int t = (int)((blockIdx.x * blockDim.x + threadIdx.x) >> 5); t < pairs; t += warps) {
    int row;
    const int m = lab05_proj_row(p, lab05_fuse_pair_row(t, hd), &row);
    const __nv_fp8_storage_t *wm = lab05_pick(p.w, m);
    const int b = lane, j = row % hd;  // j < half: the pair's first row
    const float *s = lab05_pick(p.s, m);
    const __nv_bfloat16 *bias = lab05_pick(p.bias, m);
    // what the epilogue reads, loaded before the sum (in flight with the first weight loads)
    const int ps = b < rows ? pos[b] : 0;
    const float s0 = b < rows ? s[row] : 0.f, s1 = b < rows ? s[row + half] : 0.f;
    const float b0 = b < rows && bias ? __bfloat162float(bias[row]) : 0.f;
    const float b1 = b < rows && bias ? __bfloat162float(bias[row + half]) : 0.f;
    float c = 0.f, sv = 0.f;
    auto cos_sin = [&]() {  // 00's angle pos·inv_freq[j] in double, cos and sin times rope.scale
      if (b >= rows || m == 2) return;
      double sn, cs;
      sincos(ps * rope.inv_freq[j], &sn, &cs);
      c = (float)(rope.scale * cs), sv = (float)(rope.scale * sn);
    };
    float acc[2][R];
    // with the first weight loads in flight; R = 1 after the sum (its 64-register bound
    // would spill the double-precision temporaries beside the loads)
    if constexpr (R == 1) {
      lab05_fuse_dot2<R>((const uint4 *)(wm + (size_t)row * K), (const uint4 *)(wm + (size_t)(row + half) * K), K16,
                         rows, xs4, acc, [] {});
      cos_sin();
    } else {
      lab05_fuse_dot2<R>((const uint4 *)(wm + (size_t)row * K), (const uint4 *)(wm + (size_t)(row + half) * K), K16,
                         rows, xs4, acc, cos_sin);
    }
    float a0, a1;
    lab05_fuse_lane_pair<R>(acc, lane, &a0, &a1);
    if (lane >= rows) continue;
    float x0 = a0 * s0, x1 = a1 * s1;
    if (bias) x0 += b0, x1 += b1;
    const size_t at = (((size_t)b * H_kv + row / hd) * kv_len + lab00_kv_slot(ps, ring)) * hd;
    if (m == 2) {  // v: copied into the cache row
      vc[at + j] = x0;
      vc[at + j + half] = x1;
      continue;
    }
    // 00's x0·c − x1·s and x1·c + x0·s, the second with the one rounding nvcc gives 00's
    // kernel (its PTX: q fma(x0, s, x1·c), k fma(x1, c, x0·s)), so the fused values are the
    // unfused ones bit for bit
    const float r0 = x0 * c - x1 * sv;
    if (m == 0) {
      float *q = p.out[0] + (size_t)b * p.n[0] + row;
      q[0] = r0;
      q[half] = __fmaf_rn(x0, sv, __fmul_rn(x1, c));
    } else {
      kc[at + j] = r0;
      kc[at + j + half] = __fmaf_rn(x1, c, __fmul_rn(x0, sv));
    }
  }
}

// The router (p: one matrix of E rows, bias optional; xh = RMSNorm(x) by norm_w, written to
// xn and xb as lab05_router's launch does) of rows r < rows (<= R): logits to p.out[0]
// ([rows][E]) and to shared memory; then warp r selects row r's top_k experts by ch06's
// router_topk_any_kernel rule (same operations, same order): idx [rows][top_k] int32,
// w [rows][top_k] fp32; with offsets set, then ch15's dispatch tables of those pairs
// (lab05_fuse_sort; bm: rows per expert work item). One block. E <= kLab05FuseMaxExperts,
// top_k <= min(E, 32). Strategy: lab05_gemv8_kernel's loop over the E rows (two per warp),
// the logits in shared memory, one warp per row for the selection, the block for the sort.
// PDL: waits before its first read of x. Limiter: latency (one block reads E·K fp8 bytes).
template <int R>
__global__ void __launch_bounds__(kLab05GemvThreads)
    lab05_router_topk_kernel(const float *__restrict__ x, int rows, int K, const __nv_bfloat16 *__restrict__ norm_w,
                             float eps, float *__restrict__ xn, __nv_bfloat16 *__restrict__ xb, Lab05Proj8 p,
                             int top_k, int norm_topk_prob, int32_t *__restrict__ idx_out, float *__restrict__ w_out,
                             int bm, int32_t *__restrict__ offsets, int32_t *__restrict__ tile_start,
                             int32_t *__restrict__ sorted_token, int32_t *__restrict__ pair_pos) {
  extern __shared__ __align__(16) float lab05_fuse_xs[];
  __shared__ float red[kLab05GemvThreads / 32];
  __shared__ float inv_s[1];
  __shared__ float lg[R * kLab05FuseMaxExperts];
  __shared__ int32_t s_idx[R * 32], s_cnt[kLab05FuseMaxExperts];
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, K16 = K >> 4, E = p.n[0];
  for (int g = warp * 2; g < E && g < warp * 2 + 2; g++)  // PDL: the warp's first two rows into L2
    for (int b = lane * 128; b < K; b += 32 * 128) lab03_prefetch_l2(p.w[0] + (size_t)g * K + b);
  pdl_wait_prior();  // x is the attention's residual, written by the previous kernel
  pdl_allow_next();
  lab05_stage_rows<R>(x, rows, K, norm_w, eps, xn, xb, lab05_fuse_xs, red, inv_s);
  const float4 *xs4 = (const float4 *)lab05_fuse_xs;
  const float *sc = p.s[0];
  const __nv_bfloat16 *bias = p.bias[0];
  for (int g = warp * 2; g < E; g += kLab05GemvThreads / 16) {
    float acc[2][R], sg[2], bg[2];
#pragma unroll
    for (int i = 0; i < 2; i++) {  // scales and biases loaded before the sum
      const bool on = lane < rows && g + i < E;
      sg[i] = on ? sc[g + i] : 0.f;
      bg[i] = on && bias ? __bfloat162float(bias[g + i]) : 0.f;
    }
    const uint4 *w1 = g + 1 < E ? (const uint4 *)(p.w[0] + (size_t)(g + 1) * K) : nullptr;
    lab05_fuse_dot2<R>((const uint4 *)(p.w[0] + (size_t)g * K), w1, K16, rows, xs4, acc, [] {});
    float a0, a1;
    lab05_fuse_lane_pair<R>(acc, lane, &a0, &a1);
    if (lane >= rows) continue;
#pragma unroll
    for (int i = 0; i < 2; i++) {
      if (g + i >= E) break;
      float v = __fmul_rn(i ? a1 : a0, sg[i]);  // scale, then bias: two roundings, as the GEMV
      if (bias) v = __fadd_rn(v, bg[i]);
      p.out[0][(size_t)lane * E + g + i] = v;
      lg[lane * kLab05FuseMaxExperts + g + i] = v;
    }
  }
  __syncthreads();
  if (warp < rows)
    lab05_fuse_topk_row(lg + warp * kLab05FuseMaxExperts, E, top_k, norm_topk_prob, idx_out + (size_t)warp * top_k,
                        w_out + (size_t)warp * top_k, s_idx + warp * top_k);
  if (!offsets) return;
  __syncthreads();
  lab05_fuse_sort(s_idx, rows * top_k, top_k, E, bm, s_cnt, offsets, tile_start, sorted_token, pair_pos);
}

// ---- stages -------------------------------------------------------------------------------
// Launch kernel<R> (R = the dense plan's rows: k1, k2, k4 or k8) on the step's stream. A
// plain launch: layer 04's graph edit gives the captured node its programmatic edge
// (lab05_fuse_setup registers the kernels as PDL-ready).
static inline void lab05_fuse_launch(const Engine *e, const void *k1, const void *k2, const void *k4, const void *k8,
                                     int grid, size_t smem, void **args) {
  const Lab05Dense *d = (const Lab05Dense *)((const Lab05 *)e->layer)->dense;
  const void *k = d->R == 1 ? k1 : d->R == 2 ? k2 : d->R == 4 ? k4 : k8;
  GTL_CUDA(cudaLaunchKernel(k, dim3(grid), dim3(kLab05GemvThreads), args, smem, e->s));
}

// attn.qkv with attn.rope's work (the table's rope is NULL): RMSNorm, q/k/v (+ biases), q
// rotated in a.d_q, k rotated and v into layer l's cache row of this step.
static inline void lab05_fuse_qkv(Engine *e, int l) {
  const MoeConfig *c = &e->cfg;
  const Lab05Dense *d = (const Lab05Dense *)((const Lab05 *)e->layer)->dense;
  const int Q = c->H * c->head_dim, KV = c->H_kv * c->head_dim;
  Lab05Proj8 p;
  memset(&p, 0, sizeof p);
  lab05_proj_add(e, &p, MOE_Q, MOE_Q_BIAS, l, Q, e->a.d_q);
  lab05_proj_add(e, &p, MOE_K, MOE_K_BIAS, l, KV, e->a.d_k);
  lab05_proj_add(e, &p, MOE_V, MOE_V_BIAS, l, KV, e->a.d_v);
  const float *x = e->a.d_x;
  int rows = e->B, K = c->D, H_kv = c->H_kv, hd = c->head_dim, kv_len = engine_kv_len(e, l), ring = lab00_kv_ring(e, l);
  const __nv_bfloat16 *nw = engine_w(e, MOE_ATTN_NORM, l, 0);
  float eps = (float)c->rms_eps, *xn = e->a.d_xn;
  float *kc = (float *)e->kv.k + engine_kv_layer(e, l), *vc = (float *)e->kv.v + engine_kv_layer(e, l);
  const int32_t *pos = e->a.d_pos;
  Lab00Rope *rope = &((Lab04 *)e->layer)->rope;
  void *args[] = {&x, &rows, &K, &nw, &eps, &xn, &p, &pos, &kc, &vc, &H_kv, &hd, &kv_len, &ring, rope};
  const int per_block = kLab05GemvThreads / 32;                          // a warp per pair of rows
  const int need = ((Q + 2 * KV) / 2 + per_block - 1) / per_block;
  lab05_fuse_launch(e, (const void *)lab05_qkv_rope_kernel<1>, (const void *)lab05_qkv_rope_kernel<2>,
                    (const void *)lab05_qkv_rope_kernel<4>, (const void *)lab05_qkv_rope_kernel<8>,
                    need < d->grid ? need : d->grid, (size_t)d->R * K * 4, args);
}

// moe.router with moe.topk's work (the table's topk is NULL): RMSNorm (a.d_xn and 01's split
// rows for the experts), router logits (+ bias) in a.d_router, top-k in a.d_topk_idx/_w;
// and moe.dispatch's when the table's dispatch is NULL: 03's sort tables.
static inline void lab05_fuse_router(Engine *e, int l) {
  const MoeConfig *c = &e->cfg;
  const Lab05Dense *d = (const Lab05Dense *)((const Lab05 *)e->layer)->dense;
  Lab05Proj8 p;
  memset(&p, 0, sizeof p);
  lab05_proj_add(e, &p, MOE_ROUTER, MOE_ROUTER_BIAS, l, c->E, e->a.d_router);
  const float *x = e->a.d_x;
  int rows = e->B, K = c->D, top_k = c->top_k, norm = c->norm_topk_prob;
  const __nv_bfloat16 *nw = engine_w(e, MOE_FFN_NORM, l, 0);
  float eps = (float)c->rms_eps, *xn = e->a.d_xn, *w = e->a.d_topk_w;
  __nv_bfloat16 *xb = ((Lab01 *)e->layer)->xb;
  int32_t *idx = e->a.d_topk_idx;
  Lab03 *t = (Lab03 *)e->layer;
  const int sort = e->ops.dispatch == NULL;
  int bm = t->xp.bm;
  int32_t *off = sort ? t->offsets : NULL, *tile = t->tile_start, *st = t->sorted_token, *pp = t->pair_pos;
  void *args[] = {&x, &rows, &K, &nw, &eps, &xn, &xb, &p, &top_k, &norm, &idx, &w, &bm, &off, &tile, &st, &pp};
  lab05_fuse_launch(e, (const void *)lab05_router_topk_kernel<1>, (const void *)lab05_router_topk_kernel<2>,
                    (const void *)lab05_router_topk_kernel<4>, (const void *)lab05_router_topk_kernel<8>, 1,
                    (size_t)d->R * K * 4, args);
}

// lab05_setup; then the fused kernels' shared memory (d.R rows of the largest K) allowed,
// and every instance registered as PDL-ready (each prefetches weights, waits, allows the
// next before its first dependent access: layer 04's contract).
static inline void lab05_fuse_setup(Engine *e) {
  lab05_setup(e);
  const Lab05Dense *d = (const Lab05Dense *)((const Lab05 *)e->layer)->dense;
  const int smem = d->R * d->max_k * 4;
  const void *k[] = {(const void *)lab05_qkv_rope_kernel<1>,    (const void *)lab05_qkv_rope_kernel<2>,
                     (const void *)lab05_qkv_rope_kernel<4>,    (const void *)lab05_qkv_rope_kernel<8>,
                     (const void *)lab05_router_topk_kernel<1>, (const void *)lab05_router_topk_kernel<2>,
                     (const void *)lab05_router_topk_kernel<4>, (const void *)lab05_router_topk_kernel<8>};
  for (int i = 0; i < 8; i++) {
    lab04_pdl_ready(e, k[i]);
    if ((1 << (i & 3)) == d->R) GTL_CUDA(cudaFuncSetAttribute(k[i], cudaFuncAttributeMaxDynamicSharedMemorySize, smem));
  }
  fprintf(stderr, "note: %s: fused stages (LAB05_FUSE=0|1|2|qts): q/k/v + RoPE + K/V append %s, router + top-k %s, "
          "+ dispatch sort %s\n", e->ops.target, e->ops.qkv == lab05_fuse_qkv ? "on" : "off",
          e->ops.router == lab05_fuse_router ? "on" : "off", e->ops.dispatch ? "off" : "on");
}

// The fusions, as bits of LAB05_FUSE's value (lab05_fuse_parts).
enum { LAB05_FUSE_QKV = 1, LAB05_FUSE_TOPK = 2, LAB05_FUSE_SORT = 4 };
// LAB05_FUSE unset: none. On the H200 (gptoss20b_mixtral B1 P512 G128, p50 ms, two rounds) all
// three won without programmatic edges (--pdl=0, commit 127fdba2865d: none 2.112/2.113, q
// 2.098/2.101, t 2.103/2.102, s 2.086/2.086, all 2.071/2.065) but lost with them, layer 05's
// default (--pdl=1, commit 28aeba629e89: all 2.083/2.085, none 2.037/2.037): PDL already hides
// most of what the separate small kernels cost, and the fused GEMVs run longer. Logits are bit
// for bit the same either way.
constexpr int kLab05FuseDefault = 0;

/** The fusions named by LAB05_FUSE's value f: "0" none, "1" q/k/v + RoPE and router +
 *  top-k, "2" those and the dispatch sort, or letters of "qts" (q: q/k/v + RoPE, t: router
 *  + top-k, s: router + top-k + sort); NULL (unset): kLab05FuseDefault; -1 for anything
 *  else. A mask of LAB05_FUSE_*. Host-tested. */
static inline int lab05_fuse_parts(const char *f) {
  if (!f) return kLab05FuseDefault;
  if (!strcmp(f, "0")) return 0;
  if (!strcmp(f, "1")) return LAB05_FUSE_QKV | LAB05_FUSE_TOPK;
  if (!strcmp(f, "2")) return LAB05_FUSE_QKV | LAB05_FUSE_TOPK | LAB05_FUSE_SORT;
  int m = 0;
  for (const char *c = f; *c; c++) {
    if (*c == 'q') m |= LAB05_FUSE_QKV;
    else if (*c == 't') m |= LAB05_FUSE_TOPK;
    else if (*c == 's') m |= LAB05_FUSE_TOPK | LAB05_FUSE_SORT;
    else return -1;
  }
  return m ? m : -1;
}

/** Called by lab05_configure on the fp8 path: at batch <= kLab05GemvMaxRows, the fusions
 *  LAB05_FUSE names (lab05_fuse_parts; another value: -1 with the reason in err): qkv takes
 *  rope's work (no q/k norm, 04's RoPE), router takes topk's (E <= kLab05FuseMaxExperts,
 *  01's top-k) and with the sort dispatch's too (03's sort, one expert group). The emptied
 *  stages become NULL (the engine skips them; the breakdown shows 0). */
static inline int lab05_fuse_configure(Engine *e, char *err, size_t n) {
  const MoeConfig *c = &e->cfg;
  const int parts = lab05_fuse_parts(getenv("LAB05_FUSE"));
  if (parts < 0) {
    snprintf(err, n, "LAB05_FUSE=%s in the environment: need 0, 1, 2 or letters of qts", getenv("LAB05_FUSE"));
    return -1;
  }
  if (e->B > kLab05GemvMaxRows || parts == 0) return 0;
  const int qkv = (parts & LAB05_FUSE_QKV) && !c->qk_norm && e->ops.qkv == lab05_qkv && e->ops.rope == lab04_rope;
  const int router = (parts & LAB05_FUSE_TOPK) && c->E <= kLab05FuseMaxExperts && c->top_k <= 32 &&
                     e->ops.router == lab05_router && e->ops.topk == lab01_topk;
  const int sort = router && (parts & LAB05_FUSE_SORT) && e->ops.dispatch == lab03_dispatch && !e->ops.experts_plan;
  if (qkv) e->ops.qkv = lab05_fuse_qkv, e->ops.rope = NULL;
  if (router) e->ops.router = lab05_fuse_router, e->ops.topk = NULL;
  if (sort) e->ops.dispatch = NULL;
  if (qkv || router) e->ops.setup = lab05_fuse_setup;
  return 0;
}
