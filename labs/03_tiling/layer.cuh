// layer.cuh — layer 03 of the lab: layer 02's stage table (lab02_ops()) with the
// attention, the expert stages and the sampler replaced. decode.cu runs it; a later layer
// starts from lab03_ops() the same way.
//
// What it replaces (everything else is 02's: ch08's GEMVs for q/k/v/o, router and lm_head,
// the fused RMSNorm + split; 01's GPU top-k, arena and cuBLAS; 00's embed, RoPE + K/V
// append and fp32 KV cache):
//   attn.score          split-KV flash decoding (ch18's idea) in fp32: one CTA per
//                       (sequence, KV head, chunk of keys) stages its K/V tiles in shared
//                       memory once and serves all H / H_kv query heads of the group (a
//                       warp per head, a key per lane, online softmax); the chunks merged by
//                       their log-sum-exp in a second kernel. 00's attention re-read K/V
//                       per query head with a thread per score.
//   moe.dispatch        ch15's counting sort on the device (moe_dispatch_launch): the
//                       B·top_k (token, expert) pairs ordered by expert, offsets by prefix
//                       sum, the work-item table; replaces 01's one-block plan and 02's
//                       permute (the rows are gathered by token inside the up kernel)
//   moe.expert_up/down  ONE launch per projection over every routed expert (grouped.cuh):
//                       a GEMV-style grouped kernel while an expert gets at most 8 tokens,
//                       ch15's persistent mma.sync kernel above; SwiGLU in the up epilogue
//   moe.combine         each token gathers its top_k fp32 expert rows (ch15's combine)
//   sample              greedy argmax on the device: tokens and positions stay on the GPU
//                       (the engine's device path), nothing is read back inside the run
// No host synchronization is left inside a step: the expert counts stay on the device (the
// persistent grids do not depend on them) and the host reads the sampled tokens after the
// run. --temperature > 0 keeps the engine's host sampler (configure).
// Why fp32 attention and not ch18's bf16 kernel: rounding q, K, V, P or the output to bf16
// moves the logits of these random-weight models by 1–3e-3, and that flips some top-k
// routing decisions (near-ties), after which rel_l2 exceeds 1e-2 (bf16_attn_check.sh
// --terms; on an H200 ch18's path failed the check at 1.1–3.8e-2). The K/V bytes at decode
// lengths are a small part of a step, so the fp32 cache costs little.
// Head_dim 32, 64 or 128 with at most 16 query heads per KV head (lab03_attn_fits); other
// models keep 00's attention. The experts keep 02's split bf16 activations (hi + lo) and
// fp32 accumulation (grouped.cuh says why).
// gpt-oss in the stages replaced here: the attention reads a sliding-window layer's keys
// from 00's first key (lab00_window_first) through its KV ring (lab00_kv_slot), and each
// query head's sink joins the softmax as one more logit with no value, where the chunks
// are merged (or at the end of the only chunk); the up kernel adds the gate/up biases and
// applies the clamped SwiGLU (grouped.cuh's Lab03Glu); the combine adds each expert's
// down bias to its output before the routing weight. The biases of q/k/v, o and the
// router are the projections' (proj.cuh at small batch, 02's above); YaRN is 00's RoPE.
#pragma once
#include "../02_memory/layer.cuh"
#include "grouped.cuh"  // ch15's counting sort and work items; the grouped expert kernels
#include "proj.cuh"     // q/k/v, o and the router: one launch each at small batch

constexpr int kLab03AttnThreads = 256;  // 8 warps: a query head each (two when the group is 16)
constexpr int kLab03AttnTile = 32;      // keys per shared-memory tile: one per lane
constexpr int kLab03AttnMaxGroup = 16;  // query heads per KV head

// ---- the layer's state: 01's, plus the attention's and the experts' buffers --------------
// Lab01 first: every stage of 01 and 02 finds its state through ((Lab01 *)e->layer).
typedef struct {
  Lab01 base;
  int sms;                   // SMs of the device (the attention's chunk rule)
  int max_chunks;            // chunks per (sequence, KV head) the workspace holds
  float *ws;                 // [B·H][max_chunks][head_dim + 2] partial outputs, max, sum
  // the experts (ch15's tables, P = B·top_k sorted rows)
  Lab03ExpertPlan xp;        // GEMV or MMA kernel, rows per work item, grids
  int64_t expert_stride;     // elements from one expert's gate (up, down) to the next's
  int64_t bias_stride;       // the same for the expert biases (gpt-oss; 0 without them)
  void *xarena;              // one allocation for the six buffers below
  int32_t *offsets, *tile_start;        // [E + 1] each (moe_dispatch_launch)
  int32_t *sorted_token, *pair_pos;     // [P] each
  __nv_bfloat16 *hs;         // [P][2F] SwiGLU rows, split (hi | lo)
  float *ys;                 // [P][D] expert outputs, fp32
} Lab03;

/** 1 when the fp32 split-KV attention takes model c: head_dim 32, 64 or 128, H a multiple
 *  of H_kv with at most kLab03AttnMaxGroup query heads per KV head. Host-tested. */
static inline int lab03_attn_fits(const MoeConfig *c) {
  return (c->head_dim == 32 || c->head_dim == 64 || c->head_dim == 128) && c->H_kv > 0 && c->H % c->H_kv == 0 &&
         c->H / c->H_kv <= kLab03AttnMaxGroup;
}

/** Chunks the workspace needs: about two CTAs per SM over the B·H_kv (sequence, KV head)
 *  pairs, and no more than max_len's tiles. */
static inline int lab03_attn_max_chunks(int B, int H_kv, int max_len, int sms) {
  const int pairs = B * H_kv, want = (2 * sms + pairs - 1) / pairs, tiles = (max_len + kLab03AttnTile - 1) / kLab03AttnTile;
  const int n = want < tiles ? want : tiles;
  return n > 1 ? n : 1;
}

/** Keys per chunk for n_keys keys: a multiple of the tile, so that ceil(n_keys / len)
 *  chunks never exceed max_chunks. Host-tested in plan_test.cpp. */
static inline int lab03_attn_chunk_len(int n_keys, int max_chunks) {
  const int len = (n_keys + max_chunks - 1) / max_chunks;
  return (len + kLab03AttnTile - 1) / kLab03AttnTile * kLab03AttnTile;
}

// ---- kernels ----------------------------------------------------------------------------
// The softmax's normalization with a sink logit (gpt-oss: one per query head, no value
// vector) joined to keys whose max is m, sum of e^(s − m) is l: out = o · f.x / f.y with
// f = (e^(m − M), l·e^(m − M) + e^(sink − M)), M = max(m, sink); sink = −inf: f = (1, l),
// out = o / l exactly as without sinks.
__host__ __device__ inline float2 lab03_sink_norm(float m, float l, float sink) {
  if (sink == -INFINITY) return make_float2(1.f, l);
  const float M = fmaxf(m, sink), sc = m == -INFINITY ? 0.f : expf(m - M);
  return make_float2(sc, l * sc + expf(sink - M));
}

// Keys [c0, c1) of chunk blockIdx.x for sequence b = blockIdx.z and KV head g = blockIdx.y
// (keys t_first … d_pos[b], t_first = lab00_window_first(d_pos[b], window): 0, or a sliding
// window's first key; chunk c starts at t_first + c·chunk_len, the last takes the rest):
// for each of the group's G query heads h, m = max score, l = Σ exp(score − m),
// o = Σ exp(score − m) · V[t], score = q_h·K[t] / sqrt(HD). One chunk: out = o / l, or with
// sinks (bf16 [H] or NULL) lab03_sink_norm's; else o, m, l into the workspace
// (lab03_attn_combine). q [B][H][HD], out [B][H][HD], caches [B][H_kv][kv_len][HD] (this
// layer's), key t in row lab00_kv_slot(t, ring) (ring 0: row t), fp32.
// Strategy: the K/V tile (32 keys) staged in shared memory once per CTA (float4 loads;
// K padded by one float: lane = key reads a column without bank conflicts), a warp per
// query head, a key per lane for the scores, the online-softmax rescale, then P·V with a
// lane per dimension (p broadcast by shuffle). Limiter: latency at decode lengths (a few
// tiles per CTA), DRAM read bandwidth at long contexts.
template <int HD>
__global__ void __launch_bounds__(kLab03AttnThreads)
    lab03_attn_split_kernel(const float *__restrict__ q, const float *__restrict__ kc, const float *__restrict__ vc,
                            const int32_t *__restrict__ d_pos, int H, int H_kv, int kv_len, int ring,
                            int window, int chunk_len, float scale, const __nv_bfloat16 *__restrict__ sinks,
                            float *__restrict__ ws, float *__restrict__ out) {
  constexpr int DL = HD / 32, HPW = kLab03AttnMaxGroup / (kLab03AttnThreads / 32);  // dims per lane, heads per warp
  __shared__ float ks[kLab03AttnTile][HD + 1];
  __shared__ __align__(16) float vs[kLab03AttnTile][HD];
  __shared__ float qs[kLab03AttnMaxGroup][HD];
  const int chunk = blockIdx.x, g = blockIdx.y, b = blockIdx.z, G = H / H_kv, n_chunks = gridDim.x;
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  pdl_wait_prior();  // PDL (ch12): what earlier kernels of the step wrote is visible after this
  pdl_allow_next();
  const int n_keys = d_pos[b] + 1, c0 = lab00_window_first(d_pos[b], window) + chunk * chunk_len;
  const int c1 = chunk == n_chunks - 1 ? n_keys : (c0 + chunk_len < n_keys ? c0 + chunk_len : n_keys);
  const size_t head0 = (size_t)b * H + (size_t)g * G;  // the group's first query head
  for (int i = threadIdx.x; i < G * HD; i += blockDim.x) qs[i / HD][i % HD] = q[head0 * HD + i];
  const float *kb = kc + ((size_t)b * H_kv + g) * kv_len * HD, *vb = vc + ((size_t)b * H_kv + g) * kv_len * HD;
  float m[HPW], l[HPW], o[HPW][DL];
#pragma unroll
  for (int j = 0; j < HPW; j++) {
    m[j] = -INFINITY, l[j] = 0.f;
#pragma unroll
    for (int i = 0; i < DL; i++) o[j][i] = 0.f;
  }
  for (int t0 = c0; t0 < c1; t0 += kLab03AttnTile) {
    const int nt = c1 - t0 < kLab03AttnTile ? c1 - t0 : kLab03AttnTile;
    __syncthreads();  // the previous tile is consumed (and qs written, the first time)
    for (int i = threadIdx.x; i < kLab03AttnTile * HD / 4; i += blockDim.x) {
      const int r = i / (HD / 4), c4 = i % (HD / 4);
      const float4 zero = make_float4(0.f, 0.f, 0.f, 0.f);
      const size_t row = (size_t)lab00_kv_slot(t0 + r, ring) * HD;
      const float4 kv = r < nt ? ((const float4 *)(kb + row))[c4] : zero;
      const float4 vv = r < nt ? ((const float4 *)(vb + row))[c4] : zero;
      ks[r][4 * c4] = kv.x, ks[r][4 * c4 + 1] = kv.y, ks[r][4 * c4 + 2] = kv.z, ks[r][4 * c4 + 3] = kv.w;
      *(float4 *)&vs[r][4 * c4] = vv;
    }
    __syncthreads();
#pragma unroll
    for (int j = 0; j < HPW; j++) {
      const int h = warp + j * (kLab03AttnThreads / 32);
      if (h >= G) break;  // warp-uniform
      float s = -INFINITY;
      if (lane < nt) {
        float d = 0.f;
#pragma unroll 16
        for (int i = 0; i < HD; i++) d = fmaf(qs[h][i], ks[lane][i], d);
        s = d * scale;
      }
      float mt = s;
#pragma unroll
      for (int x = 16; x > 0; x >>= 1) mt = fmaxf(mt, __shfl_xor_sync(0xFFFFFFFFu, mt, x));
      const float mn = fmaxf(m[j], mt);  // finite: the tile holds a key
      const float p = lane < nt ? expf(s - mn) : 0.f, corr = expf(m[j] - mn);
      float ps = p;
#pragma unroll
      for (int x = 16; x > 0; x >>= 1) ps += __shfl_xor_sync(0xFFFFFFFFu, ps, x);
      l[j] = l[j] * corr + ps;
      m[j] = mn;
#pragma unroll
      for (int i = 0; i < DL; i++) o[j][i] *= corr;
      for (int t = 0; t < nt; t++) {
        const float pt = __shfl_sync(0xFFFFFFFFu, p, t);
#pragma unroll
        for (int i = 0; i < DL; i++) o[j][i] = fmaf(pt, vs[t][lane + 32 * i], o[j][i]);
      }
    }
  }
#pragma unroll
  for (int j = 0; j < HPW; j++) {
    const int h = warp + j * (kLab03AttnThreads / 32);
    if (h >= G) break;
    const size_t bh = head0 + h;
    if (n_chunks == 1) {
      const float2 f = lab03_sink_norm(m[j], l[j], sinks ? __bfloat162float(sinks[g * G + h]) : -INFINITY);
#pragma unroll
      for (int i = 0; i < DL; i++) out[bh * HD + lane + 32 * i] = o[j][i] * f.x / f.y;
      continue;
    }
    float *w = ws + (bh * n_chunks + chunk) * (HD + 2);
#pragma unroll
    for (int i = 0; i < DL; i++) w[lane + 32 * i] = o[j][i];
    if (lane == 0) w[HD] = m[j], w[HD + 1] = l[j];
  }
}

// out[bh] = Σ_c exp(m_c − M) · o_c / (Σ_c exp(m_c − M) · l_c + exp(sink − M)) over the
// chunks c of each (sequence, query head) bh < BH, M = max(max_c m_c, sink) (flash-
// decoding's merge; the sink, gpt-oss's per-head logit sinks[bh mod H], joins as one more
// logit with no value; sinks NULL: none). Strategy: a warp per bh, a lane per HD/32
// dimensions. Limiter: latency.
template <int HD>
__global__ void __launch_bounds__(128) lab03_attn_combine_kernel(const float *__restrict__ ws, int n_chunks, int BH,
                                                                 const __nv_bfloat16 *__restrict__ sinks, int H,
                                                                 float *__restrict__ out) {
  constexpr int DL = HD / 32;
  const int bh = (blockIdx.x * blockDim.x + threadIdx.x) >> 5, lane = threadIdx.x & 31;
  pdl_wait_prior();  // PDL (ch12): what earlier kernels of the step wrote is visible after this
  pdl_allow_next();
  if (bh >= BH) return;
  const float *w = ws + (size_t)bh * n_chunks * (HD + 2);
  float M = -INFINITY, L = 0.f, o[DL];
  for (int c = 0; c < n_chunks; c++) M = fmaxf(M, w[(size_t)c * (HD + 2) + HD]);
#pragma unroll
  for (int i = 0; i < DL; i++) o[i] = 0.f;
  for (int c = 0; c < n_chunks; c++) {
    const float *wc = w + (size_t)c * (HD + 2), mc = wc[HD];
    const float sc = mc == -INFINITY ? 0.f : expf(mc - M);  // a chunk without keys adds nothing
    L += sc * wc[HD + 1];
#pragma unroll
    for (int i = 0; i < DL; i++) o[i] = fmaf(sc, wc[lane + 32 * i], o[i]);
  }
  const float2 f = lab03_sink_norm(M, L, sinks ? __bfloat162float(sinks[bh % H]) : -INFINITY);
#pragma unroll
  for (int i = 0; i < DL; i++) out[(size_t)bh * HD + lane + 32 * i] = o[i] * f.x / f.y;
}

// x[t][d] += Σ_j w[t][j] · (y[pair_pos[t·top_k + j]][d] + bd_e[d]): each token gathers its
// top_k rows of the expert-sorted y [P][D] fp32 (ch15's combine, in fp32 and accumulating
// into the residual; the routing order, so the same sums every step); bd_e, expert
// e = idx[t·top_k + j]'s down bias at bd + e·bias_stride (gpt-oss; bd NULL: none), is part
// of the expert's output, so it is weighted with it (00's order). Strategy: thread per 4
// elements (float4), grid (D/4 / threads, T). Limiter: latency at decode sizes.
__global__ void lab03_combine_kernel(const float *y, const int32_t *pair_pos, const float *w, float *x, int D,
                                     int top_k, const int32_t *idx, const __nv_bfloat16 *bd, int64_t bias_stride) {
  const int d4 = blockIdx.x * blockDim.x + threadIdx.x, t = blockIdx.y;
  pdl_wait_prior();  // PDL (ch12): what earlier kernels of the step wrote is visible after this
  pdl_allow_next();
  if (d4 >= D / 4) return;
  float4 acc = make_float4(0.f, 0.f, 0.f, 0.f);
  for (int j = 0; j < top_k; j++) {
    float4 v = ((const float4 *)(y + (size_t)pair_pos[(size_t)t * top_k + j] * D))[d4];
    if (bd) {
      const __nv_bfloat16 *bb = bd + idx[(size_t)t * top_k + j] * bias_stride + 4 * d4;
      v.x += __bfloat162float(bb[0]), v.y += __bfloat162float(bb[1]);
      v.z += __bfloat162float(bb[2]), v.w += __bfloat162float(bb[3]);
    }
    const float wj = w[(size_t)t * top_k + j];
    acc.x += wj * v.x, acc.y += wj * v.y, acc.z += wj * v.z, acc.w += wj * v.w;
  }
  float4 *xo = (float4 *)(x + (size_t)t * D) + d4;
  float4 o = *xo;
  o.x += acc.x, o.y += acc.y, o.z += acc.z, o.w += acc.w;
  *xo = o;
}

// next[b] = argmax_v logits[b][v], the host sampler's greedy rule (moe_argmax_f): the lowest
// index among equal maxima, NaN never wins (0 if the row is all NaN). (value, index) pairs
// are ordered by value, then by the lower index, a total order, so any reduction order
// gives the same winner. Strategy: grid (kLab03ArgmaxBlocks, B); block x scans slice x of
// row b (float4 loads when V is a multiple of 4), reduces with warp shuffles and writes
// its partial; the row's last block to finish (an atomic ticket after __threadfence, the
// CUDA C++ Programming Guide's "last block" pattern) reduces the partials, writes next[b]
// and resets the ticket for the next step. Limiter: one pass over B·V fp32 (from L2:
// lm_head has just written them); a single block per row took ~65 µs at V = 201088.
constexpr int kLab03ArgmaxBlocks = 64;
__device__ __forceinline__ void lab03_argmax_take(float &bv, int &bi, float ov, int oi) {
  if (oi >= 0 && (bi < 0 || ov > bv || (ov == bv && oi < bi))) bv = ov, bi = oi;
}
// The block's best (value, index) into every thread's (bv, bi) (blockDim.x = kLab00Threads).
__device__ __forceinline__ void lab03_argmax_block(float &bv, int &bi) {
  __shared__ float sv[kLab00Threads / 32];
  __shared__ int si[kLab00Threads / 32];
  for (int o = 16; o > 0; o >>= 1)
    lab03_argmax_take(bv, bi, __shfl_xor_sync(0xffffffffu, bv, o), __shfl_xor_sync(0xffffffffu, bi, o));
  if ((threadIdx.x & 31) == 0) sv[threadIdx.x >> 5] = bv, si[threadIdx.x >> 5] = bi;
  __syncthreads();
  bv = sv[0], bi = si[0];
  for (int w = 1; w < kLab00Threads / 32; w++) lab03_argmax_take(bv, bi, sv[w], si[w]);
}
// ws: the engine's a.d_sample_ws, kEngineSampleWs bytes per row b: gridDim.x partial values,
// then as many indices, then the ticket (zero before the first launch; the merge resets it).
static_assert(kLab03ArgmaxBlocks * 8 + 4 <= kEngineSampleWs, "the argmax partials fit the sampler's scratch");
__global__ void __launch_bounds__(kLab00Threads) lab03_argmax_kernel(const float *logits, int V, int32_t *next, char *ws) {
  const int b = blockIdx.y, nb = gridDim.x;
  float *part_v = (float *)(ws + (size_t)b * kEngineSampleWs);
  int *part_i = (int *)(part_v + nb);
  unsigned *ticket = (unsigned *)(part_i + nb);
  const float *row = logits + (size_t)b * V;
  const int per = ((V + nb - 1) / nb + 3) & ~3, v0 = blockIdx.x * per, v1 = min(V, v0 + per);  // slices of 4k
  float bv = 0.f;
  int bi = -1;
  if (V % 4 == 0) {  // 16-byte aligned rows and slices
    for (int v = v0 + 4 * threadIdx.x; v < v1; v += 4 * kLab00Threads) {
      const float4 x = *(const float4 *)(row + v);
      lab03_argmax_take(bv, bi, x.x, x.x == x.x ? v : -1);
      lab03_argmax_take(bv, bi, x.y, x.y == x.y ? v + 1 : -1);
      lab03_argmax_take(bv, bi, x.z, x.z == x.z ? v + 2 : -1);
      lab03_argmax_take(bv, bi, x.w, x.w == x.w ? v + 3 : -1);
    }
  } else {
    for (int v = v0 + threadIdx.x; v < v1; v += kLab00Threads) lab03_argmax_take(bv, bi, row[v], row[v] == row[v] ? v : -1);
  }
  lab03_argmax_block(bv, bi);
  __shared__ unsigned last;
  if (threadIdx.x == 0) {
    part_v[blockIdx.x] = bv, part_i[blockIdx.x] = bi;
    __threadfence();
    last = atomicAdd(ticket, 1u) == (unsigned)nb - 1;
  }
  __syncthreads();
  if (!last) return;
  __threadfence();
  bv = 0.f, bi = -1;
  for (int x = threadIdx.x; x < nb; x += kLab00Threads) lab03_argmax_take(bv, bi, __ldcg(part_v + x), __ldcg(part_i + x));
  __syncthreads();  // the shared slots of the first reduction are reused
  lab03_argmax_block(bv, bi);
  if (threadIdx.x == 0) next[b] = bi < 0 ? 0 : bi, *ticket = 0;
}

// ---- hooks and stages --------------------------------------------------------------------
// 01's configure (what 00 and 01 refuse; every preset passes), then the attention: the
// fp32 split-KV kernels when the model fits them, else 00's. Greedy decoding samples on
// the device; --temperature > 0 keeps the engine's host sampler (moe_sample's nucleus draw
// has no device version here).
static inline int lab03_configure(Engine *e, char *err, size_t n) {
  if (lab01_configure(e, err, n)) return -1;
  if (!lab03_attn_fits(&e->cfg)) e->ops.attend = lab00_attend;
  if (e->temperature > 0) e->ops.sample = NULL;
  return 0;
}

// The pitch from expert 0's tensor of kind k[0] to expert 1's (0 with one expert), checked
// to hold for kinds k[0..2] of every expert in every layer (ch15's kernels take one pitch);
// exits 3 naming the first layer and expert where it does not.
static inline int64_t lab03_expert_pitch(const Engine *e, const MoeKind k[3], const char *what) {
  const MoeConfig *c = &e->cfg;
  const int64_t pitch = c->E > 1 ? lab00_w_opt(e, k[0], 0, 1) - lab00_w_opt(e, k[0], 0, 0) : 0;
  for (int l = 0; l < c->L; l++)
    for (int x = 0; x < c->E; x++)
      for (int j = 0; j < 3; j++)
        if (lab00_w_opt(e, k[j], l, x) != lab00_w_opt(e, k[j], l, 0) + (int64_t)x * pitch) {
          fprintf(stderr, "error: layer 03 needs the %s at one pitch (layer %d, expert %d is not)\n", what, l, x);
          exit(GTL_EXIT_RUNTIME);
        }
  return pitch;
}

// The experts' plan (lab03_expert_plan), their stride (checked uniform: one pitch for
// every expert's gate, up and down in every layer, as ch15's kernels take; the same for
// gpt-oss's expert biases), and one allocation for the sort's tables, h and y.
static inline void lab03_expert_setup(Engine *e, Lab03 *p, int sms) {
  const MoeConfig *c = &e->cfg;
  const size_t P = (size_t)e->B * c->top_k;
  p->xp = lab03_expert_plan(e->B, c->top_k, c->E, sms);
  const MoeKind w[3] = {MOE_GATE, MOE_UP, MOE_DOWN}, b[3] = {MOE_GATE_BIAS, MOE_UP_BIAS, MOE_DOWN_BIAS};
  p->expert_stride = lab03_expert_pitch(e, w, "experts");
  p->bias_stride = lab00_w_opt(e, MOE_GATE_BIAS, 0, 0) ? lab03_expert_pitch(e, b, "expert biases") : 0;
  const size_t sz[6] = {(size_t)(c->E + 1) * 4, (size_t)(c->E + 1) * 4, P * 4, P * 4, P * 2 * c->F * 2, P * c->D * 4};
  size_t off[6], at = 0;
  for (int i = 0; i < 6; i++) {
    off[i] = at;
    at += (sz[i] + 255) / 256 * 256;
  }
  char *a = (char *)gtl_malloc(at, "layer 03 experts (sort tables, h, y)");
  p->xarena = a;
  p->offsets = (int32_t *)(a + off[0]);
  p->tile_start = (int32_t *)(a + off[1]);
  p->sorted_token = (int32_t *)(a + off[2]);
  p->pair_pos = (int32_t *)(a + off[3]);
  p->hs = (__nv_bfloat16 *)(a + off[4]);
  p->ys = (float *)(a + off[5]);
}

// 02's setup; then 01's state grows into Lab03 (Lab01 is its first member, so every
// earlier stage still finds its fields) with the experts' and the attention's buffers.
static inline void lab03_setup(Engine *e) {
  lab02_setup(e);
  Lab03 *p = (Lab03 *)realloc(e->layer, sizeof(Lab03));
  if (!p) {
    fprintf(stderr, "error: out of host memory (layer 03 state)\n");
    exit(GTL_EXIT_RUNTIME);
  }
  e->layer = p;
  memset((char *)p + sizeof(Lab01), 0, sizeof(Lab03) - sizeof(Lab01));
  const MoeConfig *c = &e->cfg;
  int dev;
  GTL_CUDA(cudaGetDevice(&dev));
  GTL_CUDA(cudaDeviceGetAttribute(&p->sms, cudaDevAttrMultiProcessorCount, dev));
  lab03_expert_setup(e, p, p->sms);
  p->max_chunks = lab03_attn_max_chunks(e->B, c->H_kv, e->kv.max_len, p->sms);
  if (lab03_attn_fits(c) && p->max_chunks > 1)
    p->ws = (float *)gtl_malloc((size_t)e->B * c->H * p->max_chunks * (c->head_dim + 2) * 4,
                                "split-KV partials (outputs, max, sum)");
}

static inline void lab03_teardown(Engine *e) {
  Lab03 *p = (Lab03 *)e->layer;
  void *d[] = {p->ws, p->xarena};
  for (size_t i = 0; i < sizeof d / sizeof d[0]; i++)
    if (d[i]) GTL_CUDA(cudaFree(d[i]));
  lab01_teardown(e);  // frees the arena, the cuBLAS handle and the state itself
}

template <int HD>
static inline void lab03_attend_hd(Engine *e, int l, int n_chunks, int chunk_len) {
  const MoeConfig *c = &e->cfg;
  Lab03 *p = (Lab03 *)e->layer;
  const size_t at = engine_kv_layer(e, l);
  const dim3 grid((unsigned)n_chunks, (unsigned)c->H_kv, (unsigned)e->B);
  const __nv_bfloat16 *sinks = lab00_w_opt(e, MOE_SINKS, l, 0);
  lab03_attn_split_kernel<HD><<<grid, kLab03AttnThreads, 0, e->s>>>(
      e->a.d_q, (const float *)e->kv.k + at, (const float *)e->kv.v + at, e->a.d_pos, c->H, c->H_kv,
      engine_kv_len(e, l), lab00_kv_ring(e, l), (int)moe_layer_window(c, l), chunk_len,
      (float)(1.0 / sqrt((double)HD)), sinks, p->ws, e->a.d_att);
  GTL_LAUNCH();
  if (n_chunks == 1) return;
  const int BH = e->B * c->H;
  lab03_attn_combine_kernel<HD><<<(BH * 32 + 127) / 128, 128, 0, e->s>>>(p->ws, n_chunks, BH, sinks, c->H,
                                                                         e->a.d_att);
  GTL_LAUNCH();
}

// The rotated queries (00's RoPE, a.d_q) against each sequence's keys in the fp32 cache:
// 0 … a.d_pos[b], or on a sliding-window layer the window's (00's lab00_first_key, read
// through the ring); the chunk count comes from the host's e->pos (all sequences alike),
// the last chunk reads up to the device's position.
static inline void lab03_attend(Engine *e, int l) {
  const MoeConfig *c = &e->cfg;
  const Lab03 *p = (const Lab03 *)e->layer;
  const int n_keys = e->pos + 1 - lab00_first_key(c, l, e->pos), len = lab03_attn_chunk_len(n_keys, p->max_chunks);
  const int n_chunks = (n_keys + len - 1) / len;
  switch (c->head_dim) {
    case 32: lab03_attend_hd<32>(e, l, n_chunks, len); break;
    case 64: lab03_attend_hd<64>(e, l, n_chunks, len); break;
    default: lab03_attend_hd<128>(e, l, n_chunks, len); break;  // lab03_attn_fits: 128
  }
}

// ch15's counting sort on the device: the B·top_k (token, expert) pairs ordered by expert,
// each expert's first row (prefix sum), its work items, each pair's row. No host sync.
static inline void lab03_dispatch(Engine *e, int, int) {
  const MoeConfig *c = &e->cfg;
  Lab03 *p = (Lab03 *)e->layer;
  moe_dispatch_launch(e->a.d_topk_idx, e->B, c->top_k, c->E, p->xp.bm, p->offsets, p->tile_start, p->sorted_token,
                      p->pair_pos, e->s);
}

// gate, up and SwiGLU (gpt-oss: the biases and the clamped SwiGLU) of every routed expert
// in one launch; the rows are the router's split rows (02's xb, [B][hi | lo]) gathered by
// token on the way in.
static inline void lab03_expert_up(Engine *e, int l, int) {
  const MoeConfig *c = &e->cfg;
  Lab03 *p = (Lab03 *)e->layer;
  const Lab03Glu glu = {lab00_w_opt(e, MOE_GATE_BIAS, l, 0), lab00_w_opt(e, MOE_UP_BIAS, l, 0), p->bias_stride,
                        c->act == MOE_ACT_SWIGLU_CLAMP, (float)c->swiglu_limit, (float)c->swiglu_alpha};
  lab03_expert_up_launch(&p->xp, p->base.xb, p->sorted_token, engine_w(e, MOE_GATE, l, 0), engine_w(e, MOE_UP, l, 0),
                         p->expert_stride, p->offsets, p->tile_start, c->E, c->D, c->F, &glu, p->hs, e->s);
}

static inline void lab03_expert_down(Engine *e, int l, int) {
  const MoeConfig *c = &e->cfg;
  Lab03 *p = (Lab03 *)e->layer;
  lab03_expert_down_launch(&p->xp, p->hs, engine_w(e, MOE_DOWN, l, 0), p->expert_stride, p->offsets, p->tile_start,
                           c->E, c->F, c->D, p->ys, e->s);
}

static inline void lab03_combine(Engine *e, int l, int) {
  const MoeConfig *c = &e->cfg;
  Lab03 *p = (Lab03 *)e->layer;
  lab03_combine_kernel<<<lab00_grid(c->D / 4, e->B), kLab00Threads, 0, e->s>>>(
      p->ys, p->pair_pos, e->a.d_topk_w, e->a.d_x, c->D, c->top_k, e->a.d_topk_idx,
      lab00_w_opt(e, MOE_DOWN_BIAS, l, 0), p->bias_stride);
  GTL_LAUNCH();
}

// Greedy next tokens on the device (a.d_next); the engine advances tokens and positions
// on the device and reads the tokens back once, after the run.
static inline void lab03_sample(Engine *e, int) {
  lab03_argmax_kernel<<<dim3(kLab03ArgmaxBlocks, e->B), kLab00Threads, 0, e->s>>>(e->a.d_logits, e->cfg.V, e->a.d_next,
                                                                                  (char *)e->a.d_sample_ws);
  GTL_LAUNCH();
}

/** Layer 03's table: lab02_ops() with attend replaced (split-KV flash decoding in fp32),
 *  the expert stages replaced (ch15's device counting sort, one grouped kernel per
 *  projection, an fp32 combine; no expert plan), a greedy device sampler, and
 *  configure/setup/teardown extended for them; qkv, out, router, topk, logits are 02's
 *  (and through it 01's), embed, rope and the fp32 KV cache 00's. */
static inline LayerOps lab03_ops(void) {
  LayerOps o = lab02_ops();  // start from the previous layer's table
  o.target = "labs/03_tiling";
  o.adds = "adds: split-KV flash-decoding attention in fp32 (ch18's idea), ch15's device counting-sort "
           "dispatch with one grouped expert kernel per projection (GEMV-style at batch <= 8, mma.sync tiles "
           "above), a greedy device sampler (no host sync in a step)";
  o.configure = lab03_configure;
  o.setup = lab03_setup;
  o.teardown = lab03_teardown;
  o.attend = lab03_attend;
  o.qkv = lab03_qkv;
  o.out = lab03_out;
  o.router = lab03_router;
  o.experts_plan = NULL;  // one group: the grouped kernels take every routed expert
  o.dispatch = lab03_dispatch;
  o.expert_up = lab03_expert_up;
  o.expert_down = lab03_expert_down;
  o.combine = lab03_combine;
  o.sample = lab03_sample;
  return o;
}
