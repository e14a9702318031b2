// layer.cuh — layer 01 of the lab: layer 00's stage table (lab00_ops()) with the stages
// chapters 01–06 improve replaced. decode.cu runs it; a later layer starts from
// lab01_ops() the same way.
//
// What it replaces (everything else is 00's: embed, RoPE + KV append, attention, the
// host sampler, the fp32 contiguous KV cache):
//   cuBLAS tensor-core projections   q, k, v, o, router and lm_head: one cublasGemmEx each,
//                                    bf16 weights, fp32 accumulation and output, the batch
//                                    as the GEMM's N (ch02), in place of 00's thread-per-
//                                    output GEMVs
//   GPU router                       softmax + top-k by ch06's router_topk_any_launch: no
//                                    copy to the host, no synchronize (ch06)
//   batched experts, no host sync    a one-block plan kernel groups the tokens by expert on
//                                    the device and writes the pointer arrays of three
//                                    cublasGemmBatchedEx calls (gate+up, down): one batched
//                                    GEMM over the routed experts (ch01's idea) where 00
//                                    looped over experts with a synchronize each
//   one device arena                 every scratch buffer of the layer and cuBLAS's
//                                    workspace in one allocation at setup: no cudaMalloc
//                                    in a step (ch03's point on allocation and staging)
// ch01's own launcher (ch01/batched_gemm.cuh, cublasGemmStridedBatchedEx) does not fit:
// it runs all E experts at one fixed stride, while a decode step must read only the
// experts its tokens picked, and which those are is known only on the device. The
// pointer-array form of the same batched GEMM takes its matrices from device memory.
//
// Groups: G = min(E, B·top_k) expert groups of capacity B tokens each (a token picks an
// expert at most once); a group's GEMM rows are its B hi rows, then its B lo rows. The routed experts fill groups 0 … n-1 in ascending expert
// order, their tokens in ascending order; groups n … G-1 (n < G happens only when
// batch·top_k tokens share experts) repeat the last routed expert with zero rows. So the
// GEMMs read G experts' weights per layer: exactly the routed ones at batch 1 (G = top_k)
// and at large batch (all E routed); in between, G - n extra reads.
// Split bf16 GEMM inputs: every fp32 activation row x goes to cuBLAS as two bf16 rows,
// hi = bf16(x) and lo = bf16(x - hi), in one GEMM of N = 2·rows (the weights are read
// once; at decode sizes the GEMM is bound by reading them, so the doubled N costs little);
// the consumer adds the two outputs in fp32. hi + lo carries 16 significant bits where
// bf16 alone carries 8. Why: with the CPU reference's products fed bf16(x) alone, mini's
// validation logits move by rel_l2 2.9e-2 (row 0) and 1.2e-1 (row 63 at batch 64; router
// choices flip), over the 1e-2 bound; fed hi + lo, by 7e-6 (split_check.sh, host only).
// bf16 weights, fp32 accumulation, residual, KV and softmax; Mixtral, Qwen3-MoE and
// gpt-oss semantics. gpt-oss's terms in the stages replaced here: the q/k/v, o and router
// biases are added where the hi and lo GEMM outputs are summed (lab01_sum_halves_kernel),
// so the router's bias is in the logits before the top-k; the expert gate/up biases and
// the clamped SwiGLU in lab01_swiglu_kernel (00's lab00_glu), the down bias in the
// combine, weighted with its expert's output as 00 does. The engine stores gate and up
// as two [F][D] matrices (the loader takes the checkpoint's interleaved rows apart), so
// the fused GEMM's output is [gate | up] here too. The rest (YaRN RoPE, sinks, sliding
// window and its KV ring) lives in 00's stages, which this layer keeps.
#pragma once
#include <cublas_v2.h>

#include "../00_baseline/layer.cuh"
#include "../../ch06/topk.cuh"
#include "kernels.cuh"  // the expert plan and the layer's kernels (kLab01* constants)

// ---- the layer's state: one device arena ---------------------------------------------------
// Lab00 first: 00's stages kept here (attention) find their scratch (d_scores) through it.
typedef struct {
  Lab00 base;                  // only base.d_scores is used (00's attend)
  cublasHandle_t blas;
  int G, cap, fused_gate_up;   // groups, tokens per group; gate and up adjacent in memory
  void *arena;                 // the one allocation; every pointer below lies inside it
  size_t arena_bytes;
  __nv_bfloat16 *xb;           // [2B][max(D, H·hd)] split bf16 GEMM input (hi rows, lo rows)
  float *s;                    // [2B][max(H·hd + 2·H_kv·hd, D, E, V)] dense GEMM outputs (hi, lo)
  const __nv_bfloat16 **wptr;  // [L][E][kLab01WPtrs] gate, up, down, their biases (uploaded at setup)
  int32_t *g_count, *g_tok, *slot;  // [G], [G][cap], [B][top_k]
  float *g_wt;                 // [G][cap]
  const void **p;              // [kLab01PtrArrays][G] the batched GEMMs' and biases' pointer arrays
  __nv_bfloat16 *xg, *hb;      // [G][2·cap][D] gathered rows, [G][2·cap][F] SwiGLU out
  float *gu, *yg;              // [G][2·cap][2F] gate|up, [G][2·cap][D] expert out
  void *ws;                    // cuBLAS workspace
} Lab01;

constexpr int kLab01Regions = 14;
constexpr size_t kLab01Workspace = (size_t)32 << 20;  // cuBLAS's recommended workspace on Hopper (cuBLAS docs, cublasSetWorkspace)

/** Bytes of each arena region for B sequences of model c with max_len positions, in the
 *  order of Lab01's fields from base.d_scores to ws. */
static inline void lab01_arena_sizes(const MoeConfig *c, int B, int max_len, size_t sz[kLab01Regions]) {
  const size_t Bz = (size_t)B, Q = (size_t)c->H * c->head_dim, KV = (size_t)c->H_kv * c->head_dim;
  const size_t D = (size_t)c->D, F = (size_t)c->F, E = (size_t)c->E, V = (size_t)c->V;
  const size_t G = (size_t)(c->E < B * c->top_k ? c->E : B * c->top_k), cap = Bz;
  size_t sw = Q + 2 * KV;  // the widest dense GEMM output
  if (D > sw) sw = D;
  if (E > sw) sw = E;
  if (V > sw) sw = V;
  const size_t v[kLab01Regions] = {Bz * c->H * max_len * 4,  // d_scores (00's attention)
                                   2 * Bz * (D > Q ? D : Q) * 2,  // xb
                                   2 * Bz * sw * 4,               // s
                                   (size_t)c->L * c->E * kLab01WPtrs * sizeof(void *),  // wptr
                                   G * 4, G * cap * 4, Bz * c->top_k * 4,     // g_count, g_tok, slot
                                   G * cap * 4,                    // g_wt
                                   kLab01PtrArrays * G * sizeof(void *),  // p
                                   G * 2 * cap * D * 2, G * 2 * cap * F * 2,      // xg, hb
                                   G * 2 * cap * 2 * F * 4, G * 2 * cap * D * 4,  // gu, yg
                                   kLab01Workspace};
  for (int i = 0; i < kLab01Regions; i++) sz[i] = v[i];
}

/** Byte offsets of the arena's regions (each 256-byte aligned, in lab01_arena_sizes'
 *  order); returns the total. Host-tested in plan_test.cpp. */
static inline size_t lab01_arena_layout(const MoeConfig *c, int B, int max_len, size_t off[kLab01Regions]) {
  size_t sz[kLab01Regions], at = 0;
  lab01_arena_sizes(c, B, max_len, sz);
  for (int i = 0; i < kLab01Regions; i++) {
    off[i] = at;
    at += (sz[i] + 255) / 256 * 256;
  }
  return at;
}

// Refuse what 00 refuses, and what ch06's router and the 16-byte alignment of the GEMM
// operands need (every preset passes; gpt-oss's sliding window gets 00's KV rings).
static inline int lab01_configure(Engine *e, char *err, size_t n) {
  if (lab00_configure(e, err, n)) return -1;
  const MoeConfig *c = &e->cfg;
  if (c->E > kLab01MaxExperts || c->top_k > 32) {
    snprintf(err, n, "routes at most %d experts, top_k <= 32 (ch06's GPU router; model: %d, %d)", kLab01MaxExperts,
             c->E, c->top_k);
    return -1;
  }
  if (c->D % 8 || c->F % 8 || (c->H * c->head_dim) % 8) {
    snprintf(err, n, "needs D, F and H*head_dim multiples of 8 (16-byte rows for the bf16 GEMMs; model: %d, %d, %d)",
             c->D, c->F, c->H * c->head_dim);
    return -1;
  }
  return 0;
}

static inline void lab01_setup(Engine *e) {
  const MoeConfig *c = &e->cfg;
  Lab01 *p = (Lab01 *)calloc(1, sizeof(Lab01));
  size_t off[kLab01Regions];
  p->G = c->E < e->B * c->top_k ? c->E : e->B * c->top_k;
  p->cap = e->B;
  p->arena_bytes = lab01_arena_layout(c, e->B, e->kv.max_len, off);
  p->arena = gtl_malloc(p->arena_bytes, "layer 01 arena (scratch + cuBLAS workspace)");
  char *a = (char *)p->arena;
  p->base.d_scores = (float *)(a + off[0]);
  p->xb = (__nv_bfloat16 *)(a + off[1]);
  p->s = (float *)(a + off[2]);
  p->wptr = (const __nv_bfloat16 **)(a + off[3]);
  p->g_count = (int32_t *)(a + off[4]);
  p->g_tok = (int32_t *)(a + off[5]);
  p->slot = (int32_t *)(a + off[6]);
  p->g_wt = (float *)(a + off[7]);
  p->p = (const void **)(a + off[8]);
  p->xg = (__nv_bfloat16 *)(a + off[9]);
  p->hb = (__nv_bfloat16 *)(a + off[10]);
  p->gu = (float *)(a + off[11]);
  p->yg = (float *)(a + off[12]);
  p->ws = a + off[13];
  // Every expert's weight pointers, once; gate and up fuse into one [2F][D] GEMM when
  // every expert's up follows its gate directly (the engine's layout pads to 64 elements).
  const size_t nw = (size_t)c->L * c->E * kLab01WPtrs;
  const __nv_bfloat16 **h = (const __nv_bfloat16 **)malloc(sizeof(void *) * nw);
  p->fused_gate_up = 1;
  for (int l = 0; l < c->L; l++)
    for (int x = 0; x < c->E; x++) {
      const __nv_bfloat16 **q = h + ((size_t)l * c->E + x) * kLab01WPtrs;
      q[0] = engine_w(e, MOE_GATE, l, x);
      q[1] = engine_w(e, MOE_UP, l, x);
      q[2] = engine_w(e, MOE_DOWN, l, x);
      q[3] = lab00_w_opt(e, MOE_GATE_BIAS, l, x);
      q[4] = lab00_w_opt(e, MOE_UP_BIAS, l, x);
      q[5] = lab00_w_opt(e, MOE_DOWN_BIAS, l, x);
      p->fused_gate_up &= q[1] == q[0] + (size_t)c->F * c->D;
    }
  GTL_CUDA(cudaMemcpy(p->wptr, h, sizeof(void *) * nw, cudaMemcpyHostToDevice));
  free(h);
  GTL_CUBLAS(cublasCreate(&p->blas));
  GTL_CUBLAS(cublasSetStream(p->blas, e->s));  // resets the workspace: set ours after it
  GTL_CUBLAS(cublasSetWorkspace(p->blas, p->ws, kLab01Workspace));
  e->layer = p;
}

static inline void lab01_teardown(Engine *e) {
  Lab01 *p = (Lab01 *)e->layer;
  GTL_CUBLAS(cublasDestroy(p->blas));
  GTL_CUDA(cudaFree(p->arena));
  free(p);
}

// ---- cuBLAS ------------------------------------------------------------------------------
// s[r][c0 + n] = W[n] · xb[r] for r < 2B (the hi rows, then the lo rows): W bf16 [N][K]
// (nn.Linear), xb bf16 [2B][K], s fp32 [2B][ld], fp32 accumulation. Column-major,
// s^T (N×2B, ld) = W (the K×N view, op T) · xb^T (K×2B, op N):
// cublasGemmEx(T, N, N, 2B, K, W, K, xb, K, s + c0, ld).
static inline void lab01_gemm(const Engine *e, const __nv_bfloat16 *W, int N, int K, int c0, int ld) {
  const Lab01 *p = (const Lab01 *)e->layer;
  const float alpha = 1.f, beta = 0.f;
  GTL_CUBLAS(cublasGemmEx(p->blas, CUBLAS_OP_T, CUBLAS_OP_N, N, 2 * e->B, K, &alpha, W, CUDA_R_16BF, K, p->xb,
                          CUDA_R_16BF, K, &beta, p->s + c0, CUDA_R_32F, ld, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
}

// The same per group g < G with matrices from the device pointer arrays A, Bm, C:
// C_g (m×2·cap, ldc) = A_g^T (A_g: [m][k] bf16) · B_g ([2·cap][k] bf16), fp32 out.
static inline void lab01_gemm_groups(const Engine *e, const void *const *A, const void *const *Bm, void *const *C,
                                     int m, int k, int ldc) {
  const Lab01 *p = (const Lab01 *)e->layer;
  const float alpha = 1.f, beta = 0.f;
  GTL_CUBLAS(cublasGemmBatchedEx(p->blas, CUBLAS_OP_T, CUBLAS_OP_N, m, 2 * p->cap, k, &alpha, A, CUDA_R_16BF, k, Bm,
                                 CUDA_R_16BF, k, &beta, C, CUDA_R_32F, ldc, p->G, CUBLAS_COMPUTE_32F,
                                 CUBLAS_GEMM_DEFAULT));
}

static inline unsigned lab01_blocks(size_t n, size_t most) {
  const size_t b = (n + kLab01Threads - 1) / kLab01Threads;
  return (unsigned)(b < most ? b : most);
}

// xb = the split of in [B][K] fp32 (hi rows, then lo rows).
static inline void lab01_split_rows(const Engine *e, const float *in, int K) {
  const size_t n = (size_t)e->B * K;
  lab01_split_bf16_kernel<<<lab01_blocks(n, 1024), kLab01Threads, 0, e->s>>>(in, ((Lab01 *)e->layer)->xb, n);
  GTL_LAUNCH();
}

// out_j (+)= hi + lo of s's columns [0, n0 + n1 + n2) (ld wide) + bias_j (bf16 [n_j] or
// NULL), into up to three outputs.
static inline void lab01_sum_halves(const Engine *e, int ld, float *o0, int n0, float *o1, int n1, float *o2, int n2,
                                    const __nv_bfloat16 *b0, const __nv_bfloat16 *b1, const __nv_bfloat16 *b2,
                                    int accumulate) {
  lab01_sum_halves_kernel<<<lab01_blocks((size_t)e->B * (n0 + n1 + n2), 4096), kLab01Threads, 0, e->s>>>(
      ((Lab01 *)e->layer)->s, ld, e->B, o0, n0, o1, n1, o2, n2, b0, b1, b2, accumulate);
  GTL_LAUNCH();
}

// ---- stages ------------------------------------------------------------------------------
// RMSNorm (00's kernel), the split, q, k and v as three GEMMs into one [2B][Q + 2KV]
// scratch, one kernel adding hi, lo and the biases (gpt-oss; before RoPE) into a.d_q,
// a.d_k, a.d_v.
static inline void lab01_qkv(Engine *e, int l) {
  const MoeConfig *c = &e->cfg;
  const int B = e->B, hd = c->head_dim, Q = c->H * hd, KV = c->H_kv * hd, ld = Q + 2 * KV;
  lab00_rmsnorm(e, e->a.d_x, engine_w(e, MOE_ATTN_NORM, l, 0), e->a.d_xn, B, c->D);
  lab01_split_rows(e, e->a.d_xn, c->D);
  lab01_gemm(e, engine_w(e, MOE_Q, l, 0), Q, c->D, 0, ld);
  lab01_gemm(e, engine_w(e, MOE_K, l, 0), KV, c->D, Q, ld);
  lab01_gemm(e, engine_w(e, MOE_V, l, 0), KV, c->D, Q + KV, ld);
  lab01_sum_halves(e, ld, e->a.d_q, Q, e->a.d_k, KV, e->a.d_v, KV, lab00_w_opt(e, MOE_Q_BIAS, l, 0),
                   lab00_w_opt(e, MOE_K_BIAS, l, 0), lab00_w_opt(e, MOE_V_BIAS, l, 0), 0);
  if (c->qk_norm) {  // Qwen3-MoE: each head normalized over head_dim before RoPE (00's kernel)
    lab00_rmsnorm(e, e->a.d_q, engine_w(e, MOE_Q_NORM, l, 0), e->a.d_q, B * c->H, hd);
    lab00_rmsnorm(e, e->a.d_k, engine_w(e, MOE_K_NORM, l, 0), e->a.d_k, B * c->H_kv, hd);
  }
}

static inline void lab01_out(Engine *e, int l) {  // x += Wo att (+ bo)
  const MoeConfig *c = &e->cfg;
  const int Q = c->H * c->head_dim;
  lab01_split_rows(e, e->a.d_att, Q);
  lab01_gemm(e, engine_w(e, MOE_O, l, 0), c->D, Q, 0, c->D);
  lab01_sum_halves(e, c->D, e->a.d_x, c->D, NULL, 0, NULL, 0, lab00_w_opt(e, MOE_O_BIAS, l, 0), NULL, NULL, 1);
}

// Router logits by cuBLAS (+ the router bias, gpt-oss: before the top-k); a.d_xn keeps
// the normalized rows for the experts' gather.
static inline void lab01_router(Engine *e, int l) {
  const MoeConfig *c = &e->cfg;
  lab00_rmsnorm(e, e->a.d_x, engine_w(e, MOE_FFN_NORM, l, 0), e->a.d_xn, e->B, c->D);
  lab01_split_rows(e, e->a.d_xn, c->D);
  lab01_gemm(e, engine_w(e, MOE_ROUTER, l, 0), c->E, c->D, 0, c->E);
  lab01_sum_halves(e, c->E, e->a.d_router, c->E, NULL, 0, NULL, 0, lab00_w_opt(e, MOE_ROUTER_BIAS, l, 0), NULL, NULL,
                   0);
}

// Softmax + top-k on the GPU (ch06): a.d_topk_idx/_w, nothing copied to the host.
// gpt-oss's router (softmax over the top-k logits only) is ch06's renormalized case
// (norm_topk_prob, which gpt-oss's config sets): e^(l_i)/Σ_all, divided by the sum of the
// selected ones, is e^(l_i)/Σ_selected e^(l_j), the same function (the full sum cancels).
static inline void lab01_topk(Engine *e, int) {
  const MoeConfig *c = &e->cfg;
  router_topk_any_launch(e->a.d_router, e->a.d_topk_idx, e->a.d_topk_w, e->B, c->E, c->top_k, c->norm_topk_prob, e->s);
}

// One group for the engine: the batched GEMMs run every routed expert at once. Counts
// the expert weights the GEMMs read (G per layer; see the file's head).
static inline int lab01_experts_plan(Engine *e, int) {
  e->experts_read += ((Lab01 *)e->layer)->G;
  e->experts_read_n += 1;
  return 1;
}

// The device plan (groups, rows, pointer arrays), then every group's rows gathered and split.
static inline void lab01_dispatch(Engine *e, int l, int) {
  const MoeConfig *c = &e->cfg;
  Lab01 *p = (Lab01 *)e->layer;
  lab01_expert_plan_kernel<<<1, kLab01PlanThreads, 0, e->s>>>(
      e->a.d_topk_idx, e->a.d_topk_w, e->B * c->top_k, c->top_k, c->E, p->G, p->cap,
      p->wptr + (size_t)l * c->E * kLab01WPtrs,
      p->g_count, p->g_tok, p->g_wt, p->slot, p->xg, p->gu, p->hb, p->yg, c->D, c->F, p->p);
  GTL_LAUNCH();
  const size_t rows = (size_t)p->G * p->cap;
  lab01_expert_gather_kernel<<<lab01_blocks(rows * c->D, 4096), kLab01Threads, 0, e->s>>>(
      e->a.d_xn, p->g_count, p->g_tok, p->xg, c->D, p->cap, rows);
  GTL_LAUNCH();
}

// gate|up = W_gate|up · rows (one GEMM of 2F rows when gate and up are adjacent, else
// two), then the biases and SwiGLU (gpt-oss: clamped), split into bf16 hi and lo rows for
// the down GEMM.
static inline void lab01_expert_up(Engine *e, int, int) {
  const MoeConfig *c = &e->cfg;
  Lab01 *p = (Lab01 *)e->layer;
  const int G = p->G, F = c->F;
  if (p->fused_gate_up) {
    lab01_gemm_groups(e, p->p + 0 * G, p->p + 3 * G, (void *const *)(p->p + 4 * G), 2 * F, c->D, 2 * F);
  } else {
    lab01_gemm_groups(e, p->p + 0 * G, p->p + 3 * G, (void *const *)(p->p + 4 * G), F, c->D, 2 * F);
    lab01_gemm_groups(e, p->p + 1 * G, p->p + 3 * G, (void *const *)(p->p + 5 * G), F, c->D, 2 * F);
  }
  const size_t rows = (size_t)G * p->cap;
  lab01_swiglu_kernel<<<(unsigned)((rows * F + kLab01Threads - 1) / kLab01Threads), kLab01Threads, 0, e->s>>>(
      p->gu, p->hb, F, p->cap, rows, (const __nv_bfloat16 *const *)(p->p + 8 * G),
      (const __nv_bfloat16 *const *)(p->p + 9 * G), c->act == MOE_ACT_SWIGLU_CLAMP, (float)c->swiglu_limit,
      (float)c->swiglu_alpha);
  GTL_LAUNCH();
}

static inline void lab01_expert_down(Engine *e, int, int) {
  const MoeConfig *c = &e->cfg;
  Lab01 *p = (Lab01 *)e->layer;
  lab01_gemm_groups(e, p->p + 2 * p->G, p->p + 6 * p->G, (void *const *)(p->p + 7 * p->G), c->D, c->F, c->D);
}

static inline void lab01_combine(Engine *e, int, int) {
  const MoeConfig *c = &e->cfg;
  Lab01 *p = (Lab01 *)e->layer;
  lab01_expert_combine_kernel<<<lab00_grid(c->D, e->B), kLab00Threads, 0, e->s>>>(
      p->yg, p->slot, e->a.d_topk_w, e->a.d_x, c->D, c->top_k, p->cap,
      (const __nv_bfloat16 *const *)(p->p + 10 * p->G));
  GTL_LAUNCH();
}

static inline void lab01_logits(Engine *e, int) {
  const MoeConfig *c = &e->cfg;
  lab00_rmsnorm(e, e->a.d_x, engine_w(e, MOE_FINAL_NORM, 0, 0), e->a.d_xn, e->B, c->D);
  lab01_split_rows(e, e->a.d_xn, c->D);
  lab01_gemm(e, engine_w(e, MOE_LM_HEAD, 0, 0), c->V, c->D, 0, c->V);
  lab01_sum_halves(e, c->V, e->a.d_logits, c->V, NULL, 0, NULL, 0, NULL, NULL, NULL, 0);
}

/** Layer 01's table: lab00_ops() with qkv, out, router, topk, the expert stages and
 *  logits replaced, its own setup/teardown (the arena, the cuBLAS handle) and configure;
 *  embed, rope, attend, the host sampler, the KV cache and the bf16 tolerances are 00's. */
static inline LayerOps lab01_ops(void) {
  LayerOps o = lab00_ops();  // start from the previous layer's table
  o.target = "labs/01_basics";
  o.adds = "adds: cuBLAS bf16 tensor-core projections (batch as N, activations split into bf16 hi + lo), "
           "ch06's GPU router, experts as batched cuBLAS GEMMs planned on the device (no host sync), one "
           "device arena";
  o.configure = lab01_configure;
  o.setup = lab01_setup;
  o.teardown = lab01_teardown;
  o.qkv = lab01_qkv;
  o.out = lab01_out;
  o.router = lab01_router;
  o.topk = lab01_topk;
  o.experts_plan = lab01_experts_plan;
  o.dispatch = lab01_dispatch;
  o.expert_up = lab01_expert_up;
  o.expert_down = lab01_expert_down;
  o.combine = lab01_combine;
  o.logits = lab01_logits;
  return o;
}
