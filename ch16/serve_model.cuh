// serve_model.cuh — ch16's stand-in model: a small deterministic "LLM" whose decode step is
// real GPU work of decode's shape, and its CPU reference in double. Shared by both programs.
//
// One layer of gpt-oss-20b attention shapes (64 query heads, 8 KV heads, head_dim 64, one
// sink logit per query head, score scale 1/8) and a fixed per-token GEMV for "the rest of
// the model". Decode step for a sequence whose input token x sits at position p:
//   q [64][64], k, v [8][64]  = seeded functions of (x, p), rounded to bf16   (the "embedding")
//   append k, v at position p of the sequence's KV cache
//   o [64·64] = decode attention over keys 0 … p (ch18's split-KV kernel), bf16
//   logits [1024] = W · o, W [1024][4096] bf16, fp32 accumulation (ch08's GEMV kernel)
//   next token = argmax(logits), ties to the smaller index (greedy)
// So every generated token depends on every cached key and value: a KV row written to the
// wrong place or read from the wrong block changes the tokens. K and V of a position
// depend only on (token, position), so sequences whose prompts start alike have the same
// prefix KV (what prefix caching relies on; a real model's KV depends on the whole prefix,
// which prompts that start alike also share).
// Prefill (the same in both programs): a fill kernel writes the prompt's K and V from the
// same functions, every byte a real write to the cache.
#pragma once
#include <cuda_bf16.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "../common/gauntlet.h"
#include "../ch08/gemv.cuh"
#include "paged_kv.cuh"

#define SERVE_H 64                           // query heads
#define SERVE_H_KV 8                         // KV heads
#define SERVE_HID (SERVE_H * ATTN_HEAD_DIM)  // 4096: attention output per token
#define SERVE_VOCAB 1024                     // GEMV rows: next-token logits
#define SERVE_KV_TOKEN_BYTES (2 * SERVE_H_KV * ATTN_HEAD_DIM * 2)  // K and V, bf16: 2 KB
#define SERVE_MAX_BATCH 256                  // sequences per step
#define SERVE_POS_BITS 20                    // positions < 2^20
#define SERVE_SALT_K 0x4B4B4Bull
#define SERVE_SALT_V 0x565656ull
#define SERVE_SALT_Q 0x515151ull

// Value d of K (or V) head g for token tok at position pos, before rounding to bf16.
__host__ __device__ __forceinline__ float serve_kv_value(uint64_t seed, uint64_t salt, int tok, int pos,
                                                         int g, int d) {
  const uint64_t tp = ((uint64_t)tok << SERVE_POS_BITS) | (uint64_t)pos;
  return gtl_uniform(seed ^ salt, (tp * SERVE_H_KV + g) * ATTN_HEAD_DIM + d, -1.0f, 1.0f);
}
// Value d of query head h. Range ±3: scores of std ~1, a softmax that picks keys out.
__host__ __device__ __forceinline__ float serve_q_value(uint64_t seed, int tok, int pos, int h, int d) {
  const uint64_t tp = ((uint64_t)tok << SERVE_POS_BITS) | (uint64_t)pos;
  return gtl_uniform(seed ^ SERVE_SALT_Q, (tp * SERVE_H + h) * ATTN_HEAD_DIM + d, -3.0f, 3.0f);
}

// The token at position j of request r: its prompt, then what it generated.
__device__ __forceinline__ int serve_token_at(const int32_t *prompt, int max_prompt, const int32_t *gen,
                                              int max_out, const int32_t *prompt_len, int r, int j) {
  const int P = prompt_len[r];
  return j < P ? prompt[(int64_t)r * max_prompt + j] : gen[(int64_t)r * max_out + (j - P)];
}

// Device tensors of the model and the trace.
typedef struct {
  uint64_t seed;
  const int32_t *prompt;      // [n_req][max_prompt]
  const int32_t *prompt_len;  // [n_req]
  int32_t *gen;               // [n_req][max_out] generated tokens
  int max_prompt, max_out;
} ServeTokens;

// Strategy: 128 threads per position (K|V × 8 heads × 8 chunks of 16 bytes), two positions
// per block, blockIdx.y = prefill entry (row, request, from, to). Limiter: DRAM writes.
__global__ void __launch_bounds__(256)
    serve_prefill_kernel(const __grid_constant__ AttnKvView kv, __nv_bfloat16 *__restrict__ k_pool,
                         __nv_bfloat16 *__restrict__ v_pool, const int32_t *__restrict__ entries,
                         const __grid_constant__ ServeTokens t) {
  const int32_t *e = entries + 4 * blockIdx.y;
  const int row = e[0], r = e[1], j = e[2] + blockIdx.x * 2 + (threadIdx.x >> 7);
  if (j >= e[3]) return;
  const int u = threadIdx.x & 127, is_v = u >> 6, g = (u >> 3) & 7, c = u & 7;
  const int tok = serve_token_at(t.prompt, t.max_prompt, t.gen, t.max_out, t.prompt_len, r, j);
  uint32_t w[4];
#pragma unroll
  for (int i = 0; i < 4; i++) {
    const float lo = serve_kv_value(t.seed, is_v ? SERVE_SALT_V : SERVE_SALT_K, tok, j, g, c * 8 + 2 * i);
    const float hi = serve_kv_value(t.seed, is_v ? SERVE_SALT_V : SERVE_SALT_K, tok, j, g, c * 8 + 2 * i + 1);
    w[i] = attn_pack_bf16(lo, hi);
  }
  const int64_t off = attn_kv_offset(kv, row, g, j) + c * 8;
  *reinterpret_cast<uint4 *>((is_v ? v_pool : k_pool) + off) = make_uint4(w[0], w[1], w[2], w[3]);
}

// Strategy: one block per sequence computes its q (64 heads) and its new K and V rows from
// (input token, position); bf16x2 stores. Limiter: launch latency (it is tiny).
__global__ void __launch_bounds__(256)
    serve_embed_kernel(const int32_t *__restrict__ req, const int32_t *__restrict__ pos,
                       const int32_t *__restrict__ out_idx, const __grid_constant__ ServeTokens t,
                       __nv_bfloat16 *__restrict__ q, __nv_bfloat16 *__restrict__ k_new,
                       __nv_bfloat16 *__restrict__ v_new) {
  const int b = blockIdx.x, r = req[b], p = pos[b], i = out_idx[b];
  const int P = t.prompt_len[r];
  const int x = i == 0 ? t.prompt[(int64_t)r * t.max_prompt + P - 1] : t.gen[(int64_t)r * t.max_out + i - 1];
  __nv_bfloat162 *qb = reinterpret_cast<__nv_bfloat162 *>(q + (int64_t)b * SERVE_HID);
  for (int e = threadIdx.x; e < SERVE_HID / 2; e += blockDim.x) {
    const int h = (2 * e) / ATTN_HEAD_DIM, d = (2 * e) % ATTN_HEAD_DIM;
    qb[e] = __floats2bfloat162_rn(serve_q_value(t.seed, x, p, h, d), serve_q_value(t.seed, x, p, h, d + 1));
  }
  for (int e = threadIdx.x; e < SERVE_H_KV * ATTN_HEAD_DIM / 2; e += blockDim.x) {
    const int g = (2 * e) / ATTN_HEAD_DIM, d = (2 * e) % ATTN_HEAD_DIM;
    const int64_t o = (int64_t)b * SERVE_H_KV * ATTN_HEAD_DIM / 2 + e;
    reinterpret_cast<__nv_bfloat162 *>(k_new)[o] = __floats2bfloat162_rn(
        serve_kv_value(t.seed, SERVE_SALT_K, x, p, g, d), serve_kv_value(t.seed, SERVE_SALT_K, x, p, g, d + 1));
    reinterpret_cast<__nv_bfloat162 *>(v_new)[o] = __floats2bfloat162_rn(
        serve_kv_value(t.seed, SERVE_SALT_V, x, p, g, d), serve_kv_value(t.seed, SERVE_SALT_V, x, p, g, d + 1));
  }
}

// Strategy: one block per sequence, 4 logits per thread, (value, index) reduced by warp
// shuffles then shared memory; ties go to the smaller index, a non-finite logit to -1 (an
// invalid token the validation rejects). Limiter: latency.
__global__ void __launch_bounds__(256)
    serve_argmax_kernel(const float *__restrict__ logits, const int32_t *__restrict__ req,
                        const int32_t *__restrict__ out_idx, int32_t *__restrict__ gen, int max_out) {
  __shared__ float sv[8];
  __shared__ int si[8];
  __shared__ int bad;
  const int b = blockIdx.x;
  const float *l = logits + (int64_t)b * SERVE_VOCAB;
  if (threadIdx.x == 0) bad = 0;
  __syncthreads();
  float best = -INFINITY;
  int bi = SERVE_VOCAB;
  for (int n = threadIdx.x; n < SERVE_VOCAB; n += blockDim.x) {
    const float v = l[n];
    if (!isfinite(v)) bad = 1;
    if (v > best || (v == best && n < bi)) best = v, bi = n;
  }
  for (int o = 16; o; o >>= 1) {
    const float ov = __shfl_xor_sync(0xffffffffu, best, o);
    const int oi = __shfl_xor_sync(0xffffffffu, bi, o);
    if (ov > best || (ov == best && oi < bi)) best = ov, bi = oi;
  }
  if ((threadIdx.x & 31) == 0) sv[threadIdx.x >> 5] = best, si[threadIdx.x >> 5] = bi;
  __syncthreads();
  if (threadIdx.x == 0) {
    for (int w = 1; w < (int)(blockDim.x >> 5); w++)
      if (sv[w] > best || (sv[w] == best && si[w] < bi)) best = sv[w], bi = si[w];
    gen[(int64_t)req[b] * max_out + out_idx[b]] = bad || bi >= SERVE_VOCAB ? -1 : bi;
  }
}

// ---- CPU reference (double) -------------------------------------------------------------

// Host copy of what the reference needs: W as floats (exact bf16 values), sinks.
typedef struct {
  uint64_t seed;
  const float *W;      // [SERVE_VOCAB][SERVE_HID]
  const float *sinks;  // [SERVE_H]
} ServeRefModel;

static inline double serve_bf16d(float x) { return (double)gtl_round_bf16(x); }

/** Attention output o [SERVE_HID] (double) of one decode step: input token x at position
 *  p, keys 0 … p whose tokens are toks[0 … p] (toks[p] == x). The math of ch18's kernels
 *  (sink in the denominator only), from the same bf16 values, in double. */
static void serve_attn_cpu(const ServeRefModel *m, const int32_t *toks, int p, double *o) {
  const int D = ATTN_HEAD_DIM, G = SERVE_H / SERVE_H_KV;
  double *s = (double *)malloc(sizeof(double) * (size_t)(p + 1) * G);
  double *kd = (double *)malloc(sizeof(double) * (size_t)(p + 1) * D);
  double *vd = (double *)malloc(sizeof(double) * (size_t)(p + 1) * D);
  if (!s || !kd || !vd) {
    fprintf(stderr, "ch16: host out of memory for the reference\n");
    exit(GTL_EXIT_RUNTIME);
  }
  for (int g = 0; g < SERVE_H_KV; g++) {
    for (int j = 0; j <= p; j++)
      for (int d = 0; d < D; d++) {
        kd[(int64_t)j * D + d] = serve_bf16d(serve_kv_value(m->seed, SERVE_SALT_K, toks[j], j, g, d));
        vd[(int64_t)j * D + d] = serve_bf16d(serve_kv_value(m->seed, SERVE_SALT_V, toks[j], j, g, d));
      }
    for (int hh = 0; hh < G; hh++) {
      const int h = g * G + hh;
      double qd[ATTN_HEAD_DIM], mx = m->sinks[h];
      for (int d = 0; d < D; d++) qd[d] = serve_bf16d(serve_q_value(m->seed, toks[p], p, h, d));
      for (int j = 0; j <= p; j++) {
        double dot = 0;
        for (int d = 0; d < D; d++) dot += qd[d] * kd[(int64_t)j * D + d];
        s[(int64_t)j * G + hh] = dot / 8.0;
        mx = fmax(mx, dot / 8.0);
      }
      double den = exp(m->sinks[h] - mx);
      for (int d = 0; d < D; d++) o[h * D + d] = 0;
      for (int j = 0; j <= p; j++) den += (s[(int64_t)j * G + hh] = exp(s[(int64_t)j * G + hh] - mx));
      for (int j = 0; j <= p; j++) {
        const double w = s[(int64_t)j * G + hh] / den;
        for (int d = 0; d < D; d++) o[h * D + d] += w * vd[(int64_t)j * D + d];
      }
    }
  }
  free(s);
  free(kd);
  free(vd);
}

/** Logits [SERVE_VOCAB] = W · o in double. */
static void serve_logits_cpu(const ServeRefModel *m, const double *o, double *logits) {
  for (int n = 0; n < SERVE_VOCAB; n++) {
    double acc = 0;
    const float *w = m->W + (int64_t)n * SERVE_HID;
    for (int k = 0; k < SERVE_HID; k++) acc += (double)w[k] * o[k];
    logits[n] = acc;
  }
}
